//! `vigil-agent`: the host agent as its own binary.

use clap::Parser;
use std::path::PathBuf;
use vigil_agent::AgentConfig;
use vigil_core::config::prepare;

/// Vigil host agent: publishes host and service metrics (CPU, memory, disk,
/// network, load; per service: process alive, CPU, RSS, HTTP health and
/// latency) to the site's edge node over MQTT every interval, and runs
/// remediation commands that name an action in the local action catalog,
/// never a shell command.
///
/// Every setting has a default (docs/configuration.md); `--print-config`
/// shows the effective settings as YAML. Example: config/agent.example.yaml.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Agent config file (YAML). Without it, defaults are used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Action catalog file (YAML); overrides `catalog` in the config.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    vigil_core::runtime::build()?.block_on(agent())
}

async fn agent() -> anyhow::Result<()> {
    let args = Args::parse();
    vigil_core::telemetry::init_tracing("info");
    let overrides =
        |c: &mut AgentConfig| c.catalog = args.catalog.clone().unwrap_or(c.catalog.clone());
    let Some(config) = prepare(
        args.config.as_deref(),
        AgentConfig::validate,
        overrides,
        args.print_config,
    ) else {
        return Ok(());
    };
    vigil_agent::serve(config).await
}
