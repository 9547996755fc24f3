//! `vigil`: the umbrella command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil::stack::{run_injector, BrokerChoice, Stack, StackOptions};

/// Vigil: edge-to-cloud AI-ops. Agents collect metrics and carry out repairs,
/// edge nodes score every series with a small LSTM and decide what to repair
/// under policy, the cloud stores the fleet's data.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole stack in one process: embedded MQTT broker, cloud
    /// aggregator, edge node, agent, and a demo web service (a child process)
    /// that gets a fault injected every interval (latency, hang, crash,
    /// memory growth) for Vigil to detect and heal. A simulated temperature
    /// sensor drifts now and then. Shows a live summary; Ctrl-C stops it all.
    Up(UpArgs),
    /// Validate policy files and action catalogs; prints every problem with
    /// file and line and exits non-zero if there is any.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
    /// Evaluate the detector on a labelled benchmark.
    Eval {
        #[command(subcommand)]
        command: EvalCmd,
    },
    /// The demo web service (started by `vigil up` through the agent).
    #[command(hide = true)]
    DemoService {
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Check policy and catalog files.
    Check {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EvalCmd {
    /// Stream the detector over every series of a Numenta Anomaly Benchmark
    /// corpus (causally, one setting for all series, no labels), write NAB's
    /// result files to OUT/NAME/<category>/NAME_<file>.csv, and print the
    /// normalised standard, low-FP and low-FN scores. Same seed, same result.
    Nab {
        /// NAB data folder (<category>/<file>.csv).
        #[arg(long)]
        data: PathBuf,
        /// NAB labels file (combined_windows.json).
        #[arg(long)]
        labels: PathBuf,
        /// Where the result files go.
        #[arg(long)]
        out: PathBuf,
        /// Detector name in result paths.
        #[arg(long, default_value = "vigil")]
        detector: String,
        /// NAB cost profiles (default: profiles.json beside the labels folder).
        #[arg(long)]
        profiles: Option<PathBuf>,
    },
    /// Server Machine Dataset: for every <machine>_train.parquet /
    /// <machine>_test.parquet pair, a fresh detector learns from the training
    /// rows, fixes its alarm threshold from its training scores (no labels),
    /// and scores the test rows. Prints per-machine and overall event-level
    /// precision/recall/F1 without point-adjust, the point-adjusted figures
    /// beside them (only for comparison with papers), and how often the
    /// reported root-cause metric is one that moved most in the anomaly.
    Smd {
        /// Folder with the machines' Parquet files.
        #[arg(long)]
        data: PathBuf,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct UpArgs {
    /// MQTT port of the embedded broker on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
    /// Use this broker (host:port, e.g. a running Mosquitto) instead of the embedded one.
    #[arg(long)]
    broker: Option<std::net::SocketAddr>,
    /// Agent HTTP port (/metrics, /healthz); 0: any free port.
    #[arg(long, default_value_t = 9101)]
    agent_port: u16,
    /// Edge HTTP port (API, /metrics); 0: any free port.
    #[arg(long, default_value_t = 9102)]
    edge_port: u16,
    /// Cloud HTTP port (API, /metrics); 0: any free port.
    #[arg(long, default_value_t = 9103)]
    cloud_port: u16,
    /// Seconds between injected faults.
    #[arg(long, default_value_t = 60)]
    fault_interval_secs: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// On exit, write a JSON summary of every injected fault here.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Where the audit log, Parquet files and the log go.
    #[arg(long, default_value = "vigil-data")]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Up(args) => up(args).await,
        Cmd::DemoService { port } => vigil::demo::service::run(port).await,
        Cmd::Eval {
            command: EvalCmd::Smd { data, json },
        } => {
            let started = Instant::now();
            let cfg = vigil_models::DetectorConfig::default();
            let machines =
                tokio::task::spawn_blocking(move || vigil::eval::smd(&data, &cfg)).await??;
            print!("{}", vigil::eval::smd_table(&machines));
            println!("({:.1} s)", started.elapsed().as_secs_f64());
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&machines)?)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            }
            Ok(())
        }
        Cmd::Eval {
            command:
                EvalCmd::Nab {
                    data,
                    labels,
                    out,
                    detector,
                    profiles,
                },
        } => {
            let args = vigil::eval::NabArgs {
                data,
                labels,
                profiles,
                out,
                detector,
            };
            let started = Instant::now();
            let cfg = vigil_models::DetectorConfig::default();
            let scores =
                tokio::task::spawn_blocking(move || vigil::eval::nab(&args, &cfg)).await??;
            println!("NAB scores ({:.1} s):", started.elapsed().as_secs_f64());
            for (profile, s) in &scores {
                println!(
                    "  {profile:<20} {:6.2}   (threshold {:.4})",
                    s.normalised, s.threshold
                );
            }
            Ok(())
        }
        Cmd::Policy {
            command: PolicyCmd::Check { files },
        } => {
            let problems = vigil::policy_check::check(&files);
            if problems.is_empty() {
                println!("{} file(s) OK", files.len());
                Ok(())
            } else {
                vigil_core::config::exit_with(&problems)
            }
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let log = args.data_dir.join("vigil-up.log");
    vigil_core::telemetry::init_tracing_to_file("info,rumqttd=warn", &log)?;
    let exe = std::env::current_exe().context("finding the vigil executable")?;
    let mut opts = StackOptions::demo(
        args.data_dir.clone(),
        vec![exe.display().to_string(), "demo-service".into()],
    );
    opts.broker = match args.broker {
        Some(addr) => BrokerChoice::External(addr),
        None => BrokerChoice::Embedded(args.mqtt_port),
    };
    (opts.agent_port, opts.edge_port, opts.cloud_port) =
        (args.agent_port, args.edge_port, args.cloud_port);
    let shutdown = vigil_core::shutdown::on_signal();
    let stack = Arc::new(Stack::start(opts).await?);
    let injector = tokio::spawn(run_injector(
        stack.clone(),
        Duration::from_secs(args.fault_interval_secs.max(5)),
    ));

    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(if tty { 1 } else { 10 }));
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs(d));
    let log_name = log.display().to_string();
    println!("Vigil is starting; logs go to {log_name}.");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = tick.tick() => {
                let text = vigil::console::render(&stack, started.elapsed(), &log_name);
                if tty { print!("\x1b[H\x1b[2J{text}") } else { println!("{text}") }
            }
        }
    }
    println!("\nStopping…");
    injector.abort();
    // An aborted task drops its Arc only once it has really stopped.
    let _ = injector.await;
    let report = stack.tracker.lock().map(|t| t.report()).unwrap_or_default();
    let errors = stack.errors();
    let stack =
        Arc::try_unwrap(stack).map_err(|_| anyhow::anyhow!("stack still in use at shutdown"))?;
    let workload = stack.workload.snapshot();
    let broker = stack.broker;
    let clean = stack.stop(Duration::from_secs(4)).await;
    if let Some(path) = &args.summary {
        let summary = serde_json::json!({
            "duration_secs": started.elapsed().as_secs_f64(),
            "broker": broker.to_string(),
            "faults": report,
            "workload": workload,
            "errors": errors,
            "clean_shutdown": clean,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("Summary written to {}.", path.display());
    }
    for f in &report {
        match (f.heal_secs, &f.why_not) {
            (Some(h), _) => println!(
                "  {:<14} healed in {h:.1} s ({})",
                f.kind.as_str(),
                f.action.clone().unwrap_or_default()
            ),
            (None, Some(w)) => println!("  {:<14} not healed: {w}", f.kind.as_str()),
            _ => {}
        }
    }
    if !clean {
        eprintln!("Some parts did not stop within 4 s.");
    }
    Ok(())
}
