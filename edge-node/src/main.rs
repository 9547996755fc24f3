//! `vigil-edge`: the edge node as its own binary.

use clap::Parser;
use std::path::PathBuf;
use vigil_core::config::{exit_with, prepare};
use vigil_edge::{EdgeConfig, PolicySet};

/// Vigil edge node: ingests agent metric batches and sensor readings for one
/// site over MQTT, keeps a bounded per-series cache, scores every series each
/// tick with a batched LSTM, turns anomalies into remediation commands under
/// the policy file, verifies recovery, and forwards samples, anomalies,
/// heartbeats and the audit trail to the cloud.
///
/// Serves /metrics, /healthz and a JSON API (/api/v1/status, /series,
/// /series/points?id=…, /entities, /anomalies, /audit). Every setting has a
/// default (docs/configuration.md); `--print-config` shows them.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Edge config file (YAML). Without it, defaults are used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Policy file (YAML); overrides `policy` in the config.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    vigil_core::runtime::build()?.block_on(edge())
}

async fn edge() -> anyhow::Result<()> {
    let args = Args::parse();
    vigil_core::telemetry::init_tracing("info");
    let overrides = |c: &mut EdgeConfig| c.policy = args.policy.clone().unwrap_or(c.policy.clone());
    let Some(config) = prepare(
        args.config.as_deref(),
        EdgeConfig::validate,
        overrides,
        args.print_config,
    ) else {
        return Ok(());
    };
    let policies = if config.policy.as_os_str().is_empty() {
        PolicySet::default()
    } else {
        PolicySet::load(&config.policy).unwrap_or_else(|p| exit_with(&p))
    };
    vigil_edge::serve(config, policies).await
}
