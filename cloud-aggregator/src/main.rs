//! `vigil-cloud`: the cloud aggregator as its own binary.

use clap::Parser;
use std::path::PathBuf;
use vigil_cloud::CloudConfig;
use vigil_core::config::prepare;

/// Vigil cloud aggregator: subscribes to every site's uplink over MQTT,
/// writes samples, anomalies and the audit trail as Parquet partitioned by
/// site and hour, tracks the fleet from heartbeats and retained presence,
/// retrains the model, canaries signed releases to the edges, and serves a
/// JSON API: /api/v1/nodes, /api/v1/anomalies, /api/v1/audit (each with
/// ?site= and ?limit=), /api/v1/models, plus /metrics and /healthz.
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
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Retrain now on the store in `data_dir` (with a progress bar), judge
    /// the candidate at the gate against the stable release, and write it as
    /// a signed bundle when it passes. A running aggregator trains through
    /// `POST /api/v1/models/train` instead; a bundle written here is
    /// published with `POST /api/v1/models/bundles`.
    Train {
        /// Where to write the bundle (default: data_dir/models/FAMILY/candidate-vN.vmb).
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
    if let Some(Cmd::Train { out }) = args.command {
        return tokio::task::spawn_blocking(move || {
            vigil_cloud::lifecycle::cli::train(&config, out)
        })
        .await?;
    }
    vigil_cloud::serve(config).await
}
