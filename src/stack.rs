//! The whole stack in one process: embedded broker (or an external one),
//! cloud aggregator, edge node, agent supervising the demo service, the demo
//! workload and sensor, and the fault tracker. `vigil up` and the
//! end-to-end tests both start it through [`Stack::start`].

use crate::demo::injector::Tracker;
use crate::demo::sensor::{self, Drift};
use crate::demo::workload::{self, WorkloadStats};
use crate::demo::FaultKind;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use vigil_agent::AgentMetrics;
use vigil_cloud::CloudMetrics;
use vigil_core::clock::now_ms;
use vigil_core::message::{AnomalyEvent, AuditRecord};
use vigil_core::mqtt::{self, LinkMetrics, LinkSpec, MqttSettings};
use vigil_core::topic::UplinkKind;
use vigil_core::{decode, topic, EntityId};
use vigil_edge::EdgeMetrics;

mod roles;

/// The demo's policy file.
pub const DEMO_POLICY: &str = include_str!("../config/demo/policy.yaml");
/// The demo's action catalog.
pub const DEMO_CATALOG: &str = include_str!("../config/demo/catalog.yaml");
/// Name of the demo service.
pub const SERVICE: &str = "demo-web";
/// Name of the demo sensor.
pub const SENSOR: &str = "temp-1";
/// Packet limit used on the broker and every client: 1 MiB, deliberately
/// above rumqttc's 10 KiB default so a full sample batch fits.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Which broker to use.
#[derive(Clone, Debug)]
pub enum BrokerChoice {
    /// Start rumqttd in this process on this port (0: a free one).
    Embedded(u16),
    /// Use a broker that is already running (e.g. Mosquitto).
    External(SocketAddr),
}

/// How to start the stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Broker to use.
    pub broker: BrokerChoice,
    /// HTTP ports for agent, edge and cloud (0: free ones).
    pub agent_port: u16,
    /// Edge HTTP port.
    pub edge_port: u16,
    /// Cloud HTTP port.
    pub cloud_port: u16,
    /// Where audit logs and Parquet go.
    pub data_dir: PathBuf,
    /// Program and leading arguments that run the demo service; `--port N` is appended.
    pub service_command: Vec<String>,
    /// Site name.
    pub site: String,
    /// Host name of the agent.
    pub host: String,
    /// Edge scoring tick, ms.
    pub tick_ms: u64,
    /// Agent collection interval, seconds.
    pub interval_secs: f64,
    /// Demo requests per second.
    pub workload_rate: u32,
    /// Policy file text.
    pub policy: String,
    /// Catalog file text.
    pub catalog: String,
    /// Prometheus endpoints the agent scrapes besides the demo service's.
    pub extra_scrape: Vec<vigil_agent::scrape::ScrapeConfig>,
    /// Alertmanager's URL, where the edge posts its anomalies (none: off).
    pub alertmanager: Option<String>,
}

impl StackOptions {
    /// The demo defaults: embedded broker on 1883, HTTP on 9101-9103.
    pub fn demo(data_dir: PathBuf, service_command: Vec<String>) -> Self {
        Self {
            broker: BrokerChoice::Embedded(1883),
            agent_port: 9101,
            edge_port: 9102,
            cloud_port: 9103,
            data_dir,
            service_command,
            site: "demo".into(),
            host: "demo-host".into(),
            tick_ms: 1000,
            interval_secs: 1.0,
            workload_rate: 20,
            policy: DEMO_POLICY.into(),
            catalog: DEMO_CATALOG.into(),
            extra_scrape: Vec::new(),
            alertmanager: None,
        }
    }
}

/// A running stack.
pub struct Stack {
    /// Broker address.
    pub broker: SocketAddr,
    /// Agent base URL (`/metrics`, `/healthz`).
    pub agent_url: String,
    /// Edge base URL (API and metrics).
    pub edge_url: String,
    /// Cloud base URL (API and metrics).
    pub cloud_url: String,
    /// Demo service base URL.
    pub service_url: String,
    /// Agent metrics.
    pub agent_metrics: AgentMetrics,
    /// Edge metrics.
    pub edge_metrics: EdgeMetrics,
    /// Cloud metrics.
    pub cloud_metrics: CloudMetrics,
    /// What happened to every injected fault.
    pub tracker: Arc<Mutex<Tracker>>,
    /// Demo request counts.
    pub workload: Arc<WorkloadStats>,
    /// The demo service entity.
    pub target: EntityId,
    /// The sensor entity.
    pub sensor_target: EntityId,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Bearer token of the edge's and the cloud's API writes (kept in
    /// `<data_dir>/api-token`).
    pub api_token: String,
    drift: Drift,
    http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    errors: Arc<Mutex<Vec<String>>>,
}

async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port} (in use? pick another port)"))
}

fn url(l: &TcpListener) -> anyhow::Result<String> {
    Ok(format!("http://{}", l.local_addr()?))
}

impl Stack {
    /// Starts everything and returns once all parts are launched.
    pub async fn start(opts: StackOptions) -> anyhow::Result<Stack> {
        let broker = roles::broker(&opts.broker).await?;
        let mqtt = MqttSettings {
            host: broker.ip().to_string(),
            port: broker.port(),
            max_packet_bytes: MAX_PACKET_BYTES,
            ..MqttSettings::default()
        };
        let files = roles::Files::write(&opts)?;
        let (agent_l, edge_l, cloud_l) = (
            bind(opts.agent_port).await?,
            bind(opts.edge_port).await?,
            bind(opts.cloud_port).await?,
        );
        let (agent_url, edge_url, cloud_url) = (url(&agent_l)?, url(&edge_l)?, url(&cloud_l)?);
        let service_port = crate::broker::free_port()?;
        let service_url = format!("http://127.0.0.1:{service_port}");

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (agent_metrics, edge_metrics, cloud_metrics) = (
            AgentMetrics::new()?,
            EdgeMetrics::new()?,
            CloudMetrics::new()?,
        );
        let cloud = roles::cloud(&opts, &mqtt, &files);
        let cloud = vigil_cloud::run(
            cloud,
            cloud_l,
            cloud_metrics.clone(),
            shutdown.child_token(),
        );
        roles::spawn(&tasks, &errors, "cloud", cloud);
        let (edge, command_key) = roles::edge(&opts, &mqtt, &files)?;
        let agent = roles::agent(&opts, &mqtt, &files, service_port, &command_key)?;
        let (policies, catalog) = (files.policies, files.catalog);
        let edge = vigil_edge::run(
            edge,
            policies,
            edge_l,
            edge_metrics.clone(),
            shutdown.child_token(),
        );
        roles::spawn(&tasks, &errors, "edge", edge);
        let agent = vigil_agent::run(
            agent,
            catalog,
            agent_l,
            agent_metrics.clone(),
            shutdown.child_token(),
        );
        roles::spawn(&tasks, &errors, "agent", agent);

        let (workload, tracker, drift) = start_demo(&tasks, &opts, mqtt, &service_url, &shutdown)?;
        info!(%broker, %edge_url, %cloud_url, %agent_url, "Stack started.");
        Ok(Stack {
            broker,
            agent_url,
            edge_url,
            cloud_url,
            service_url,
            agent_metrics,
            edge_metrics,
            cloud_metrics,
            tracker,
            workload,
            target: EntityId::service(&opts.host, SERVICE),
            sensor_target: EntityId::sensor(SENSOR),
            data_dir: opts.data_dir,
            api_token: files.api_token,
            drift,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()?,
            shutdown,
            tasks,
            errors,
        })
    }

    /// Injects one fault now and starts following it.
    pub async fn inject(&self, kind: FaultKind) -> anyhow::Result<()> {
        let at = now_ms();
        match kind {
            FaultKind::SensorDrift => {
                self.drift.start();
                self.lock_tracker()
                    .injected(kind, self.sensor_target.clone(), at);
            }
            _ => {
                self.lock_tracker().injected(kind, self.target.clone(), at);
                let url = format!("{}/fault/{}", self.service_url, kind.as_str());
                let r = self
                    .http
                    .post(&url)
                    .send()
                    .await
                    .with_context(|| format!("injecting {} fault", kind.as_str()))?;
                anyhow::ensure!(
                    r.status().is_success(),
                    "service refused the {} fault: {}",
                    kind.as_str(),
                    r.status()
                );
            }
        }
        info!(fault = kind.as_str(), "Fault injected.");
        Ok(())
    }

    /// Ends a sensor drift.
    pub fn stop_drift(&self) {
        self.drift.stop();
    }

    fn lock_tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Errors from roles that stopped on their own.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// A token cancelled when the stack stops.
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops everything (the agent stops the demo service); false if some
    /// part was still running after `deadline`.
    pub async fn stop(self, deadline: Duration) -> bool {
        self.shutdown.cancel();
        vigil_core::shutdown::drain(&self.tasks, deadline).await
    }
}

/// The demo's parts beside the roles: the workload on the service, the
/// fault tracker following the uplink, and the drifting sensor.
fn start_demo(
    tasks: &TaskTracker,
    opts: &StackOptions,
    mqtt: MqttSettings,
    service_url: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<WorkloadStats>, Arc<Mutex<Tracker>>, Drift)> {
    let workload = Arc::new(WorkloadStats::default());
    tasks.spawn(workload::run(
        format!("{service_url}/work"),
        opts.workload_rate,
        workload.clone(),
        shutdown.child_token(),
    ));
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let drift = Drift::default();
    let demo_link = start_demo_link(
        tasks,
        &opts.site,
        mqtt,
        tracker.clone(),
        shutdown.child_token(),
    )?;
    tasks.spawn(sensor::run(
        demo_link,
        topic::sensor(&opts.site, SENSOR),
        drift.clone(),
        shutdown.child_token(),
    ));
    Ok((workload, tracker, drift))
}

/// The demo's own MQTT client: publishes sensor readings and follows the
/// uplink's anomalies and audit records into the tracker.
fn start_demo_link(
    tasks: &TaskTracker,
    site: &str,
    settings: MqttSettings,
    tracker: Arc<Mutex<Tracker>>,
    shutdown: CancellationToken,
) -> anyhow::Result<vigil_core::mqtt::Publisher> {
    let spec = LinkSpec {
        settings,
        default_client_id: format!("vigil-demo-{site}-{}", std::process::id()),
        subscriptions: vec![
            topic::uplink(site, UplinkKind::Anomaly),
            topic::uplink(site, UplinkKind::Audit),
        ],
        presence: None,
    };
    let (tx, mut rx) = mqtt::inbox(256, 4 << 20);
    let metrics = LinkMetrics::new(&prometheus::Registry::new())?;
    let (publisher, link) = mqtt::open(spec, tx, metrics)?;
    tasks.spawn(link.run(shutdown.clone()));
    tasks.spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = rx.recv() => match m { Some(m) => m, None => break },
            };
            let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
            if msg.topic.ends_with("/anomaly") {
                if let Ok(ev) = decode::<AnomalyEvent>(&msg.payload, MAX_PACKET_BYTES) {
                    t.anomaly(&ev);
                }
            } else if let Ok(rec) = decode::<AuditRecord>(&msg.payload, MAX_PACKET_BYTES) {
                t.audit(&rec);
            }
        }
    });
    Ok(publisher)
}

/// Injects a service fault every `interval`, in turn, and lets the sensor
/// drift for 30 s once every four faults (first at 2.5 intervals), until the
/// stack stops. Nothing is injected during the first `warmup` (the detector
/// learns what normal looks like first).
pub async fn run_injector(stack: Arc<Stack>, interval: Duration, warmup: Duration) {
    let shutdown = stack.token();
    let start = tokio::time::Instant::now() + warmup.saturating_sub(interval);
    let mut next_fault = start + interval;
    let mut next_drift = start + interval.mul_f64(2.5);
    let mut drift_end: Option<tokio::time::Instant> = None;
    let mut i = 0usize;
    loop {
        let wake = drift_end.map_or(next_fault.min(next_drift), |e| {
            e.min(next_fault).min(next_drift)
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        if drift_end.is_some_and(|e| now >= e) {
            stack.stop_drift();
            drift_end = None;
        }
        if now >= next_drift {
            if let Err(e) = stack.inject(FaultKind::SensorDrift).await {
                warn!(error = %e, "Could not start the sensor drift.");
            }
            drift_end = Some(now + Duration::from_secs(30));
            next_drift += interval * 4;
        }
        if now >= next_fault {
            let kind = FaultKind::SERVICE_CYCLE[i % FaultKind::SERVICE_CYCLE.len()];
            if let Err(e) = stack.inject(kind).await {
                warn!(error = %format!("{e:#}"), "Could not inject fault.");
            }
            i += 1;
            next_fault += interval;
        }
    }
}
