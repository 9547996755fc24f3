//! The agent's main loop: starts the collect loop ([`crate::collect`]) and
//! the scrape targets, handles commands, serves `/metrics` and `/healthz`,
//! stops cleanly.

use crate::backlog::EdgeSeen;
use crate::catalog::Catalog;
use crate::collect::CollectLoop;
use crate::config::AgentConfig;
use crate::executor::Executor;
use crate::ledger::Ledger;
use crate::metrics::AgentMetrics;
use crate::scrape;
use crate::supervisor::Supervisor;

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil_core::clock::now_ms;
use vigil_core::message::{Command, Presence, PresenceState};
use vigil_core::mqtt::{self, LinkSpec, PresenceSpec, Publisher};
use vigil_core::role::Role;
use vigil_core::watch::FileWatch;
use vigil_core::{decode, encode, topic};

/// Runs an agent with `config` until SIGINT or SIGTERM, with its catalog
/// (a catalog with problems ends the process with them), listener and
/// metrics (`vigil-agent` and `vigil agent`).
pub async fn serve(config: AgentConfig) -> anyhow::Result<()> {
    let catalog = if config.catalog.as_os_str().is_empty() {
        Catalog::default()
    } else {
        Catalog::load(&config.catalog).unwrap_or_else(|p| vigil_core::config::exit_with(&p))
    };
    let listener = vigil_core::telemetry::bind(&config.listen).await?;
    let metrics = AgentMetrics::new()?;
    run(
        config,
        catalog,
        listener,
        metrics,
        vigil_core::shutdown::on_signal(),
    )
    .await
}

/// Runs the agent until `shutdown` is cancelled, then stops its supervised
/// services and disconnects. `listener` serves `/metrics` and `/healthz`.
pub async fn run(
    config: AgentConfig,
    catalog: Catalog,
    listener: TcpListener,
    metrics: AgentMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let host = config.host_name();
    let site = config.site.clone();
    // Pid files let a restarted agent adopt the services it left running.
    let supervisor = Arc::new(Mutex::new(
        Supervisor::new(&config.services).with_state_dir(config.data_dir.join("services")),
    ));
    let problems = catalog.validate(&supervisor.lock().await.names());
    anyhow::ensure!(
        problems.is_empty(),
        "action catalog: {}",
        problems.join("; ")
    );
    for e in supervisor.lock().await.start_all() {
        warn!(error = %e, "Could not start supervised service.");
    }

    // Announced with presence, so the edge can check its policies.
    let actions: Vec<String> = catalog.actions.keys().cloned().collect();
    let spec = link_spec(&config, &host, actions);
    let (role, inbox) = Role::start("agent", spec, (64, 4 << 20), metrics.link.clone())?;
    let publisher = role.publisher.clone();
    let api = services_api(supervisor.clone());
    role.serve(listener, &metrics.registry, api, &shutdown);
    let executor = executor(&config, &host, catalog, supervisor.clone())?;
    let catalog_watch = FileWatch::started_with(&config.catalog);
    let edge = Arc::new(EdgeSeen::default());
    let commands = CommandLoop {
        edge: edge.clone(),
        executor,
        publisher: publisher.clone(),
        metrics: metrics.clone(),
        site: site.clone(),
        host: host.clone(),
        max_bytes: config.max_command_bytes,
        catalog_watch,
        services: supervisor.lock().await.names(),
        reload: Duration::from_secs_f64(config.reload_secs),
        ratelog: Default::default(),
        recent: Default::default(),
    };
    role.tracker
        .spawn(commands.run(inbox, shutdown.child_token()));
    let scraped = Arc::new(std::sync::Mutex::new(scrape::Pending::default()));
    let scrapers = scrape::start(
        &config.scrape,
        &host,
        scraped.clone(),
        metrics.scrape.clone(),
        &shutdown,
    )?;
    let collect = CollectLoop::new(
        &config,
        host.clone(),
        supervisor.clone(),
        publisher,
        metrics,
    )?
    .with_backlog(config.buffer_batches, edge)
    .with_scraped(scraped);
    info!(%site, %host, services = config.services.len(), scrape_targets = config.scrape.len(), "Agent running.");
    collect.run(shutdown.clone()).await;
    for s in scrapers {
        let _ = s.await;
    }

    supervisor.lock().await.stop_all().await;
    role.drain().await;
    info!("Agent stopped.");
    Ok(())
}

/// What the agent listens to (its commands, its edge's presence), and its
/// retained presence with the catalog's action names.
fn link_spec(config: &AgentConfig, host: &str, actions: Vec<String>) -> LinkSpec {
    let site = &config.site;
    let presence = |state| presence(host, state, actions.clone());
    LinkSpec {
        settings: config.mqtt.clone(),
        default_client_id: format!("vigil-agent-{site}-{host}"),
        subscriptions: vec![topic::commands(site, host), topic::edge_presence(site)],
        presence: Some(PresenceSpec {
            topic: topic::agent_presence(site, host),
            online: presence(PresenceState::Online),
            offline: presence(PresenceState::Offline),
        }),
    }
}

/// The agent's presence, with the action names its catalog has: the edge
/// checks its policies against them.
fn presence(host: &str, state: PresenceState, actions: Vec<String>) -> Vec<u8> {
    encode(&Presence {
        node: host.to_string(),
        role: "agent".into(),
        state,
        ts_ms: now_ms(),
        actions,
    })
}

/// `GET /api/v1/services`: the supervised services' state.
fn services_api(supervisor: Arc<Mutex<Supervisor>>) -> axum::Router {
    let services = axum::routing::get(move || {
        let sup = supervisor.clone();
        async move { axum::Json(sup.lock().await.status()) }
    });
    axum::Router::new().route("/api/v1/services", services)
}

/// The executor: the ledger of commands that ran (on disk), the catalog,
/// and the edges trusted to command this agent.
fn executor(
    config: &AgentConfig,
    host: &str,
    catalog: Catalog,
    supervisor: Arc<Mutex<Supervisor>>,
) -> anyhow::Result<Executor> {
    let ledger_path = config.data_dir.join("ledger.json");
    let ledger = Ledger::open(&ledger_path).map_err(anyhow::Error::msg)?;
    let keys = vigil_core::signing::Keyring::load(&config.trusted_edge_keys)
        .map_err(|e| anyhow::anyhow!("trusted_edge_keys: {}", e.join("; ")))?;
    if config.allow_unsigned_commands {
        warn!("allow_unsigned_commands is set: any client that may publish on this agent's command topic can run its catalog actions.");
    } else if keys.is_empty() {
        warn!("No edge key is trusted (trusted_edge_keys): every command will be refused.");
    }
    Ok(Executor::new(
        host.to_string(),
        catalog,
        supervisor,
        Duration::from_secs(config.max_action_secs),
        ledger,
        config.breaker.clone(),
    )
    .with_trust(crate::executor::Trust {
        keys,
        allow_unsigned: config.allow_unsigned_commands,
    }))
}

struct CommandLoop {
    edge: Arc<EdgeSeen>,
    executor: Executor,
    publisher: Publisher,
    metrics: AgentMetrics,
    site: String,
    host: String,
    max_bytes: usize,
    catalog_watch: Option<FileWatch>,
    services: Vec<String>,
    reload: Duration,
    ratelog: vigil_core::ratelog::RateLog,
    recent: std::collections::VecDeque<(tokio::time::Instant, vigil_core::message::CommandResult)>,
}

impl CommandLoop {
    async fn run(mut self, mut inbox: mqtt::Inbox, shutdown: CancellationToken) {
        let mut reload = tokio::time::interval(self.reload);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = reload.tick() => { self.reload_catalog(); continue }
                m = inbox.recv() => match m { Some(m) => m, None => break },
            };
            if let Some(topic::Route::EdgePresence { .. }) = topic::parse(&msg.topic) {
                self.on_edge_presence(&msg.payload).await;
                continue;
            }
            self.metrics.link.count("command");
            let cmd: Command = match decode(&msg.payload, self.max_bytes) {
                Ok(c) => c,
                Err(e) => {
                    warn!(topic = %msg.topic, error = %e, "Dropped malformed command.");
                    self.metrics
                        .link
                        .malformed
                        .with_label_values(&[e.reason()])
                        .inc();
                    continue;
                }
            };
            let result = match self.executor.authenticate(&cmd) {
                Ok(()) => {
                    let timer = self.metrics.action_seconds.start_timer();
                    let result = self.executor.handle(&cmd).await;
                    timer.observe_duration();
                    result
                }
                Err((reason, detail)) => {
                    self.metrics
                        .commands_refused
                        .with_label_values(&[reason])
                        .inc();
                    if let Some(skipped) = self.ratelog.allow(reason) {
                        warn!(id = %cmd.id, action = %cmd.action, holder = %cmd.holder, reason, %detail, skipped, "Command refused unrun.");
                    }
                    self.executor.refused(&cmd, detail)
                }
            };
            self.metrics
                .actions
                .with_label_values(&[result.outcome.as_str()])
                .inc();
            self.publisher
                .send(&topic::results(&self.site, &result.host), &result, false)
                .await;
            if self.recent.len() >= RECENT_RESULTS {
                self.recent.pop_front();
            }
            self.recent.push_back((tokio::time::Instant::now(), result));
        }
    }
}

/// Results kept to send again when the edge comes back (an edge killed
/// right after sending a command never saw its result).
const RECENT_RESULTS: usize = 64;
/// ...for this long.
const RECENT_RESULTS_FOR: Duration = Duration::from_secs(600);

impl CommandLoop {
    async fn on_edge_presence(&mut self, payload: &[u8]) {
        self.metrics.link.count("presence");
        match decode::<Presence>(payload, self.max_bytes) {
            Ok(p) => {
                let online = p.state == PresenceState::Online;
                if self.edge.heard(online, self.publisher.connections()) {
                    info!(edge = %p.node, online, "Edge presence changed.");
                    if online {
                        self.resend_results().await;
                    }
                }
            }
            Err(e) => {
                self.metrics
                    .link
                    .malformed
                    .with_label_values(&[e.reason()])
                    .inc();
            }
        }
    }

    /// Sends the recent results again for an edge that has just come (back)
    /// online: one that restarted mid-action closes its record with them.
    async fn resend_results(&mut self) {
        let now = tokio::time::Instant::now();
        self.recent
            .retain(|(at, _)| now.duration_since(*at) < RECENT_RESULTS_FOR);
        for (_, r) in &self.recent {
            self.publisher
                .send(&topic::results(&self.site, &r.host), r, false)
                .await;
        }
        if !self.recent.is_empty() {
            info!(
                results = self.recent.len(),
                "Sent recent results again for the edge."
            );
        }
    }

    /// Takes an edited catalog; a broken edit is refused with every error and
    /// counted, and the catalog in force stays.
    fn reload_catalog(&mut self) {
        let Some(watch) = &mut self.catalog_watch else {
            return;
        };
        let services = &self.services;
        match watch.reload(|text, path| Catalog::parse(text, path, services)) {
            None => {}
            Some(Ok(c)) => {
                info!(path = %watch.path().display(), actions = c.actions.len(), "Catalog reloaded.");
                self.metrics
                    .catalog_reloads
                    .with_label_values(&["ok"])
                    .inc();
                // Announced now and on every reconnect, so the edge never
                // sends an action this catalog no longer has.
                let names = c.actions.keys().cloned().collect();
                let online = presence(&self.host, PresenceState::Online, names);
                if !self.publisher.announce(online) {
                    info!("Catalog announced on the next connect.");
                }
                self.executor.set_catalog(c);
            }
            Some(Err(errors)) => {
                self.metrics
                    .catalog_reloads
                    .with_label_values(&["failed"])
                    .inc();
                warn!(errors = %errors.join("\n"), "Catalog edit refused; the catalog in force stays.");
            }
        }
    }
}
