//! The `vigil` command line: its arguments (clap) and what each subcommand
//! runs. `main` only parses and calls [`run`].

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

mod bench;
mod up;

/// Vigil: edge-to-cloud AI-ops. Agents collect metrics and carry out repairs,
/// edge nodes score every series with a small LSTM and decide what to repair
/// under policy, the cloud stores the fleet's data.
#[derive(Parser)]
#[command(version)]
pub struct Cli {
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
    /// Run the cloud aggregator alone, as `vigil-cloud` does (the same
    /// config file; `vigil bench fleet` starts its aggregators this way).
    Cloud {
        /// Cloud config file (YAML). Without it, defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the effective configuration and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Run a host agent alone, as `vigil-agent` does (the same config file;
    /// `vigil bench scrape` starts its agents this way).
    Agent {
        /// Agent config file (YAML). Without it, defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the effective configuration and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Run an edge node alone, as `vigil-edge` does (the same config file;
    /// `vigil bench edge-intake` starts its edge this way).
    Edge {
        /// Edge config file (YAML). Without it, defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the effective configuration and exit.
        #[arg(long)]
        print_config: bool,
    },
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
    /// Make an ed25519 key pair for signing model releases: NAME.key (secret,
    /// for the cloud's `models.signing_key`) and NAME.pub (for every edge's
    /// `model.trusted_keys`). Keep several public keys trusted while rotating.
    Keygen {
        /// Folder for the two files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// File name stem.
        #[arg(long, default_value = "vigil")]
        name: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Work on model bundle files offline.
    Model {
        #[command(subcommand)]
        command: ModelCmd,
    },
    /// Measure the model lifecycle: retraining time, and how long a fleet
    /// of edge nodes takes to receive and load a release.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCmd,
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
enum ModelCmd {
    /// Show a bundle's manifest, files and signer; checks every file's hash.
    Inspect {
        /// Bundle file.
        file: PathBuf,
    },
    /// Check a bundle's files and signature against trusted public keys;
    /// exits non-zero when refused.
    Verify {
        /// Bundle file.
        file: PathBuf,
        /// A public key (text or key file); repeat for several.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Sign a bundle (its files must match its manifest).
    Sign {
        /// Bundle file.
        file: PathBuf,
        /// Secret key file (from `vigil keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Write the signed bundle here instead of in place.
        #[arg(long)]
        out: Option<PathBuf>,
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
        /// NAB cost profiles (default: profiles.json beside the labels
        /// folder, or config/profiles.json in a NAB checkout).
        #[arg(long)]
        profiles: Option<PathBuf>,
        /// Seed for the LSTM's weights and training windows.
        #[arg(long, default_value_t = vigil_models::DetectorConfig::default().seed)]
        seed: u64,
        /// Measure the detector with one part replaced or switched off:
        /// full, persistence, seasonal-naive (the value a day earlier),
        /// untrained, no-range, no-smoothed-range,
        /// no-forecast-record, no-sustained, no-season, no-refractory,
        /// no-line-gate, or `all` for the whole table (same data, same
        /// seed). Repeatable or comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "full")]
        ablate: Vec<String>,
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
        /// `entity` (default): all of a machine's metrics scored at once by
        /// the entity model, its threshold from peaks over threshold on its
        /// training scores; `series`: every metric scored alone by the
        /// edge's detector, the machine's score the highest. The others are
        /// ablations: the entity model without its forecast or subspace
        /// error, or with the kind's LSTM forecast in place of persistence.
        #[arg(long, value_enum, default_value_t = crate::eval::SmdModel::Entity)]
        model: crate::eval::SmdModel,
        /// The entity model's risk: the probability that a normal row's
        /// score exceeds the threshold (peaks over threshold).
        #[arg(long, default_value_t = vigil_models::entity::EntityConfig::default().pot.risk)]
        risk: f64,
    },
}

#[derive(clap::Args)]
// `vigil up`'s options (a plain comment: clap would show a doc comment as help).
pub(crate) struct UpArgs {
    /// MQTT port of the embedded broker on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 1883)]
    pub(crate) mqtt_port: u16,
    /// Use this broker (host:port, e.g. a running Mosquitto) instead of the embedded one.
    #[arg(long)]
    pub(crate) broker: Option<std::net::SocketAddr>,
    /// Agent HTTP port (/metrics, /healthz); 0: any free port.
    #[arg(long, default_value_t = 9101)]
    pub(crate) agent_port: u16,
    /// Edge HTTP port (API, /metrics); 0: any free port.
    #[arg(long, default_value_t = 9102)]
    pub(crate) edge_port: u16,
    /// Cloud HTTP port (API, /metrics); 0: any free port.
    #[arg(long, default_value_t = 9103)]
    pub(crate) cloud_port: u16,
    /// Seconds between injected faults.
    #[arg(long, default_value_t = 60)]
    pub(crate) fault_interval_secs: u64,
    /// No fault before this many seconds: the detector learns what normal
    /// looks like first (50 samples at 1 Hz).
    #[arg(long, default_value_t = 60)]
    pub(crate) warmup_secs: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub(crate) duration: Option<u64>,
    /// On exit, write a JSON summary of every injected fault here.
    #[arg(long)]
    pub(crate) summary: Option<PathBuf>,
    /// Where the audit log, Parquet files and the log go.
    #[arg(long, default_value = "vigil-data")]
    pub(crate) data_dir: PathBuf,
}

/// `--ablate` values: names, or `all` for every ablation.
fn parse_ablations(names: &[String]) -> anyhow::Result<Vec<vigil_models::Ablation>> {
    if names.iter().any(|n| n == "all") {
        return Ok(vigil_models::Ablation::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            n.parse()
                .map_err(|e: String| anyhow::anyhow!("--ablate: {e}"))
        })
        .collect()
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Up(args) => up::run(args).await,
        Cmd::DemoService { port } => crate::demo::service::run(port).await,
        Cmd::Eval {
            command:
                EvalCmd::Smd {
                    data,
                    json,
                    model,
                    risk,
                },
        } => eval_smd(data, json, model, risk).await,
        Cmd::Eval {
            command:
                EvalCmd::Nab {
                    data,
                    labels,
                    out,
                    detector,
                    profiles,
                    seed,
                    ablate,
                },
        } => {
            let args = crate::eval::NabArgs {
                data,
                labels,
                profiles,
                out,
                detector,
            };
            eval_nab(args, seed, &ablate).await
        }
        Cmd::Keygen { out, name, force } => {
            let id = crate::model_tool::keygen(&out, &name, force)?;
            println!(
                "wrote {0}/{name}.key (secret) and {0}/{name}.pub; key id {id}",
                out.display()
            );
            Ok(())
        }
        Cmd::Model { command } => model(command),
        Cmd::Edge {
            config,
            print_config,
        } => {
            use vigil_core::config::{exit_with, prepare};
            vigil_core::telemetry::init_tracing("info");
            let validate = vigil_edge::EdgeConfig::validate;
            let Some(config) = prepare(config.as_deref(), validate, |_| {}, print_config) else {
                return Ok(());
            };
            let policies = if config.policy.as_os_str().is_empty() {
                vigil_edge::PolicySet::default()
            } else {
                vigil_edge::PolicySet::load(&config.policy).unwrap_or_else(|p| exit_with(&p))
            };
            vigil_edge::serve(config, policies).await
        }
        Cmd::Agent {
            config,
            print_config,
        } => {
            vigil_core::telemetry::init_tracing("info");
            let validate = vigil_agent::AgentConfig::validate;
            match vigil_core::config::prepare(config.as_deref(), validate, |_| {}, print_config) {
                Some(config) => vigil_agent::serve(config).await,
                None => Ok(()),
            }
        }
        Cmd::Cloud {
            config,
            print_config,
        } => {
            vigil_core::telemetry::init_tracing("info");
            let validate = vigil_cloud::CloudConfig::validate;
            match vigil_core::config::prepare(config.as_deref(), validate, |_| {}, print_config) {
                Some(config) => vigil_cloud::serve(config).await,
                None => Ok(()),
            }
        }
        Cmd::Bench { command } => bench::run(command).await,
        Cmd::Policy {
            command: PolicyCmd::Check { files },
        } => {
            let (problems, actions_checked) = crate::policy_check::checked(&files);
            if problems.is_empty() {
                println!("{} file(s) OK", files.len());
                if !actions_checked {
                    println!("Note: {}.", crate::policy_check::ACTIONS_UNCHECKED);
                }
                Ok(())
            } else {
                vigil_core::config::exit_with(&problems)
            }
        }
    }
}

/// `vigil eval smd`.
async fn eval_smd(
    data: PathBuf,
    json: Option<PathBuf>,
    model: crate::eval::SmdModel,
    risk: f64,
) -> anyhow::Result<()> {
    anyhow::ensure!(risk > 0.0 && risk < 1.0, "--risk {risk} is outside (0, 1)");
    let started = Instant::now();
    let machines =
        tokio::task::spawn_blocking(move || crate::eval::smd(&data, model, risk)).await??;
    print!("{}", crate::eval::smd_table(&machines));
    println!("{}", model.threshold_rule(risk));
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&machines)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `vigil eval nab`: one run per ablation asked for, then their table.
async fn eval_nab(args: crate::eval::NabArgs, seed: u64, ablate: &[String]) -> anyhow::Result<()> {
    let ablations = parse_ablations(ablate)?;
    let cfg = vigil_models::DetectorConfig {
        seed,
        ..vigil_models::DetectorConfig::default()
    };
    let mut rows = Vec::new();
    for ablation in ablations {
        let started = Instant::now();
        let (a, c) = (args.clone(), cfg.clone());
        let run = tokio::task::spawn_blocking(move || crate::eval::nab(&a, &c, ablation)).await??;
        println!(
            "NAB scores, {ablation} ({}), seed {seed} ({:.1} s):",
            ablation.describe(),
            started.elapsed().as_secs_f64()
        );
        for (profile, s) in &run.scores {
            println!(
                "  {profile:<20} {:6.2}   (threshold {:.4})",
                s.normalised, s.threshold
            );
        }
        println!("Events (an alarm: the written score crossing the level upwards):");
        println!("  {:<28} caught / all  false/day   P / R / F1", "");
        println!(
            "{}",
            vigil_models::eval::events::row("at the shipped threshold", &run.shipped)
        );
        println!(
            "{}",
            vigil_models::eval::events::row("best level (label-chosen)", &run.best)
        );
        rows.push((ablation, run));
    }
    if rows.len() > 1 {
        print!("{}", crate::eval::ablation_table(&rows));
    }
    Ok(())
}

/// `vigil model inspect|verify|sign`.
fn model(command: ModelCmd) -> anyhow::Result<()> {
    let text = match command {
        ModelCmd::Inspect { file } => crate::model_tool::inspect(&file)?,
        ModelCmd::Verify { file, keys } => {
            let keys: Vec<String> = keys.iter().map(|k| k.display().to_string()).collect();
            crate::model_tool::verify(&file, &keys)?
        }
        ModelCmd::Sign { file, key, out } => crate::model_tool::sign(&file, &key, out.as_deref())?,
    };
    println!("{}", text.trim_end());
    Ok(())
}
