//! `vigil-cloud`: the cloud aggregator as its own binary.

use clap::Parser;
use std::path::PathBuf;
use vigil_cloud::{CloudConfig, CloudMetrics};
use vigil_core::config::prepare;

/// Vigil cloud aggregator: subscribes to every site's uplink over MQTT,
/// writes samples, anomalies and the audit trail as Parquet partitioned by
/// site and hour, tracks the fleet from heartbeats and retained presence,
/// and serves a JSON API: /api/v1/nodes, /api/v1/anomalies, /api/v1/audit
/// (each with ?site= and ?limit=), plus /metrics and /healthz.
///
/// Every setting has a default (docs/configuration.md); `--print-config`
/// shows them.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Cloud config file (YAML). Without it, defaults are used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    vigil_core::telemetry::init_tracing("info");
    let Some(config) = prepare(
        args.config.as_deref(),
        CloudConfig::validate,
        |_| {},
        args.print_config,
    ) else {
        return Ok(());
    };
    let listener = vigil_core::telemetry::bind(&config.listen).await?;
    let metrics = CloudMetrics::new()?;
    let shutdown = vigil_core::shutdown::on_signal();
    vigil_cloud::run(config, listener, metrics, shutdown).await
}
