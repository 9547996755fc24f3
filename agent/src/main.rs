//! `vigil-agent`: the host agent as its own binary.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use vigil_agent::{AgentConfig, AgentMetrics, Catalog};

/// Vigil host agent: publishes host and service metrics to the site's edge
/// node over MQTT every interval, and runs remediation commands that name an
/// action in the local action catalog (never a shell command).
///
/// Every setting has a default (see docs/configuration.md); `--print-config`
/// shows them as YAML.
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    vigil_core::telemetry::init_tracing("info");
    let mut config = match &args.config {
        Some(p) => AgentConfig::load(p).map_err(anyhow::Error::msg)?,
        None => AgentConfig::default(),
    };
    if let Some(c) = args.catalog {
        config.catalog = c;
    }
    if args.print_config {
        print!("{}", serde_yaml_ng_print(&config)?);
        return Ok(());
    }
    let problems = config.validate();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {}: {p}", args.config.as_deref().map(|p| p.display().to_string()).unwrap_or("config".into()));
        }
        std::process::exit(2);
    }
    let catalog = if config.catalog.as_os_str().is_empty() {
        Catalog::default()
    } else {
        Catalog::load(&config.catalog).map_err(|e| anyhow::anyhow!(e.join("\n")))?
    };
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let metrics = AgentMetrics::new()?;
    let shutdown = vigil_core::shutdown::on_signal();
    vigil_agent::run(config, catalog, listener, metrics, shutdown).await
}

fn serde_yaml_ng_print(c: &AgentConfig) -> anyhow::Result<String> {
    serde_yaml_ng::to_string(c).context("rendering config")
}
