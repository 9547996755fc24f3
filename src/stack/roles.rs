//! The stack's three roles: the broker they share, their config files and
//! keys on disk, their configs, and each run as a task whose error is kept.

use super::{BrokerChoice, StackOptions, MAX_PACKET_BYTES, SERVICE};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tracing::warn;
use vigil_agent::config::ServiceConfig;
use vigil_agent::scrape::ScrapeConfig;
use vigil_agent::{AgentConfig, Catalog};
use vigil_cloud::CloudConfig;
use vigil_core::mqtt::MqttSettings;
use vigil_edge::{EdgeConfig, PolicySet};

/// The broker's address: the embedded one started here, or an external one
/// that answers within 3 s.
pub(super) async fn broker(choice: &BrokerChoice) -> anyhow::Result<SocketAddr> {
    match *choice {
        BrokerChoice::Embedded(port) => crate::broker::start(port, MAX_PACKET_BYTES),
        BrokerChoice::External(addr) => {
            // Fail now and say why, rather than run a stack that cannot talk.
            let reach = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_secs(3), reach).await {
                Ok(Ok(_)) => Ok(addr),
                Ok(Err(e)) => anyhow::bail!(
                    "cannot reach the MQTT broker at {addr}: {e} (start it, or leave out --broker to use the embedded one)"
                ),
                Err(_) => anyhow::bail!(
                    "cannot reach the MQTT broker at {addr}: no answer within 3 s"
                ),
            }
        }
    }
}

/// What the roles read from `data_dir`: the policy and catalog files (as
/// given), the model release key pair (made on the first run) and the API
/// token.
pub(super) struct Files {
    pub policy_path: PathBuf,
    pub catalog_path: PathBuf,
    pub policies: PolicySet,
    pub catalog: Catalog,
    pub keys: PathBuf,
    pub api_token: String,
}

impl Files {
    /// Writes the policy and catalog, loads them, and makes what is missing.
    pub fn write(opts: &StackOptions) -> anyhow::Result<Self> {
        let dir = &opts.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let policy_path = dir.join("policy.yaml");
        let catalog_path = dir.join("catalog.yaml");
        std::fs::write(&policy_path, &opts.policy).context("writing policy file")?;
        std::fs::write(&catalog_path, &opts.catalog).context("writing catalog file")?;
        let policies = PolicySet::load(&policy_path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
        let catalog = Catalog::load(&catalog_path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
        let keys = dir.join("keys");
        if !keys.join("vigil.key").exists() {
            crate::model_tool::keygen(&keys, "vigil", true)?;
        }
        let api_token = api_token(&dir.join("api-token"))?;
        Ok(Self {
            policy_path,
            catalog_path,
            policies,
            catalog,
            keys,
            api_token,
        })
    }
}

/// The cloud's config: signs releases with the stack's key.
pub(super) fn cloud(opts: &StackOptions, mqtt: &MqttSettings, files: &Files) -> CloudConfig {
    let mut cloud = CloudConfig {
        mqtt: MqttSettings {
            max_packet_bytes: MAX_PACKET_BYTES,
            ..mqtt.clone()
        },
        data_dir: opts.data_dir.join("cloud"),
        // A demo wants its data in Parquet soon, not in five-minute parts.
        roll_secs: 10,
        max_message_bytes: MAX_PACKET_BYTES,
        api_token: Some(files.api_token.clone()),
        ..CloudConfig::default()
    };
    cloud.models.signing_key = Some(files.keys.join("vigil.key"));
    // The demo fleet is one edge: retrain every ten minutes on what it
    // saw, so the whole loop (train, gate, canary, promote or roll back)
    // shows within a demo run.
    cloud.models.train_every_secs = 600;
    cloud
}

/// The edge's config, trusting the stack's release key, and its command
/// key (made when missing): the agent runs only what the edge signed.
pub(super) fn edge(
    opts: &StackOptions,
    mqtt: &MqttSettings,
    files: &Files,
) -> anyhow::Result<(EdgeConfig, PathBuf)> {
    let mut edge = EdgeConfig {
        site: opts.site.clone(),
        mqtt: mqtt.clone(),
        tick_ms: opts.tick_ms,
        data_dir: opts.data_dir.join("edge"),
        policy: files.policy_path.clone(),
        max_message_bytes: MAX_PACKET_BYTES,
        api_token: Some(files.api_token.clone()),
        ..EdgeConfig::default()
    };
    edge.model.trusted_keys = vec![files.keys.join("vigil.pub").display().to_string()];
    // An existing Prometheus may remote-write to the edge, with the token.
    edge.remote_write.enabled = true;
    edge.alerts.url = opts.alertmanager.clone().unwrap_or_default();
    let command_key = edge.command_key_path();
    vigil_core::signing::SecretKey::read_or_create(&command_key)
        .map_err(|e| anyhow::anyhow!("edge command key: {e}"))?;
    Ok((edge, command_key))
}

/// The agent's config: supervises the demo service on `service_port` and
/// trusts the edge's command key.
pub(super) fn agent(
    opts: &StackOptions,
    mqtt: &MqttSettings,
    files: &Files,
    service_port: u16,
    command_key: &Path,
) -> anyhow::Result<AgentConfig> {
    let mut argv = opts.service_command.clone();
    argv.extend(["--port".to_string(), service_port.to_string()]);
    let agent = AgentConfig {
        site: opts.site.clone(),
        host: opts.host.clone(),
        interval_secs: opts.interval_secs,
        mqtt: mqtt.clone(),
        catalog: files.catalog_path.clone(),
        data_dir: opts.data_dir.join("agent"),
        services: vec![ServiceConfig {
            name: SERVICE.into(),
            argv,
            env: vec![],
            pid_file: None,
            health_url: Some(format!("http://127.0.0.1:{service_port}/healthz")),
            health_timeout_ms: 800,
            ..Default::default()
        }],
        // The service's own metrics, as a real one exports them.
        scrape: vec![ScrapeConfig {
            name: "demo-web".into(),
            url: format!("http://127.0.0.1:{service_port}/metrics"),
            service: Some(SERVICE.into()),
            interval_secs: opts.interval_secs.max(0.5),
            timeout_ms: 800,
            include: vec!["demo_.*".into()],
            exclude: vec![],
            max_series: 100,
            quantile: 0.99,
        }]
        .into_iter()
        .chain(opts.extra_scrape.iter().cloned())
        .collect(),
        trusted_edge_keys: vec![command_key.with_extension("pub").display().to_string()],
        ..AgentConfig::default()
    };
    let problems = agent.validate();
    anyhow::ensure!(problems.is_empty(), "agent config: {}", problems.join("; "));
    Ok(agent)
}

/// Runs one role as a task; an error stops only it, and is logged and kept.
pub(super) fn spawn(
    tasks: &TaskTracker,
    errors: &Arc<Mutex<Vec<String>>>,
    role: &'static str,
    fut: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) {
    let errors = errors.clone();
    tasks.spawn(async move {
        if let Err(e) = fut.await {
            warn!(role, error = %format!("{e:#}"), "Role stopped with an error.");
            if let Ok(mut v) = errors.lock() {
                v.push(format!("{role}: {e:#}"));
            }
        }
    });
}

/// The API token kept at `path`, made (random, readable only by its owner)
/// on the first run.
fn api_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        if t.trim().len() >= 16 {
            return Ok(t.trim().to_string());
        }
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut f = std::fs::OpenOptions::new();
    f.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
    let mut file = f
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())?;
    Ok(token)
}
