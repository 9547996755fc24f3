//! The `vigil` command line: its arguments (clap) and what each subcommand
//! runs. `main` only parses and calls [`run`].

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

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
        command: BenchCmd,
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
enum BenchCmd {
    /// Retrain on a synthetic fleet store of SAMPLES samples (written as
    /// Parquet first, like the aggregator writes it) and time each phase.
    Train {
        /// Samples in the store.
        #[arg(long, default_value_t = 1_000_000)]
        samples: usize,
        /// Series they are spread over.
        #[arg(long, default_value_t = 200)]
        series: usize,
        /// Repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Write and drain the edge's on-disk uplink buffer and report its
    /// sustained rates and what a durable commit (fsync) costs.
    Spool {
        /// Messages written.
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        /// Messages per commit (a tick's uplink).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 300)]
        bytes: usize,
    },
    /// Run the real vigil-edge binary under a mid-size site's load (SERIES
    /// series at 1 Hz from simulated agents on an embedded broker) for
    /// MINUTES per phase, with the cloud up and then away, and report its
    /// resident memory: peak, and the mean and slope over the last 20
    /// minutes. Needs vigil-edge beside vigil (cargo build --release --workspace).
    EdgeMemory {
        /// Series in all.
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Minutes per phase.
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Phases, in order: up (a cloud takes the uplink), away (none does).
        #[arg(long, value_delimiter = ',', default_value = "up,away")]
        phases: Vec<String>,
        /// Also write every reading as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Drive a real aggregator (`vigil cloud`, its own process) through a
    /// real Mosquitto (apt install mosquitto) with EDGES simulated edge nodes,
    /// each sending SERIES series at RATE Hz as vigil-edge does (the same
    /// envelopes, sequences, window and resends), beside a bare subscriber to
    /// the same stream. Reports stored rows/s against what was offered and
    /// what the bare subscriber got, receipt latency, the aggregator's CPU
    /// and memory, the edges' backlog, and afterwards whether every sample
    /// was stored exactly once.
    Fleet {
        /// Simulated edge nodes, one site each.
        #[arg(long, default_value_t = 1000)]
        edges: usize,
        /// Series per edge.
        #[arg(long, default_value_t = 100)]
        series: usize,
        /// Samples per series per second.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Seconds measured (after the warm-up).
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 20)]
        warmup_secs: u64,
        /// Most seconds to wait for the last receipts after the load.
        #[arg(long, default_value_t = 120)]
        drain_secs: u64,
        /// MQTT connections the simulated edges share.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds between the aggregator's Parquet rolls (default: its own, 300).
        #[arg(long)]
        roll_secs: Option<u64>,
        /// Kill the aggregator (SIGKILL) this many seconds into the load and
        /// start it again; the exactly-once check then covers the crash.
        #[arg(long)]
        crash_at_secs: Option<u64>,
        /// Seconds before a simulated edge sends a message without a receipt
        /// again (vigil-edge's default: 30).
        #[arg(long, default_value_t = 30)]
        resend_secs: u64,
        /// Keep the run's folder (store, configs, logs) here.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// The aggregator's Parquet on S3 instead of its folder:
        /// s3://bucket/prefix (the bucket must exist).
        #[arg(long)]
        store: Option<String>,
        /// Aggregators sharing the fleet through etcd (a cluster when more
        /// than one; with --crash-at-secs, cloud-1 is killed for good and
        /// the others take its sites).
        #[arg(long, default_value_t = 1)]
        aggregators: usize,
        /// etcd's endpoint for --aggregators above 1 (default: start a
        /// local etcd; apt install etcd-server).
        #[arg(long)]
        etcd: Option<String>,
        /// The S3 endpoint for --store (else AWS_ENDPOINT or AWS itself);
        /// credentials and region come from the usual AWS variables.
        #[arg(long)]
        s3_endpoint: Option<String>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Offer a real edge node (`vigil edge`, its own process) RATE samples a second from
    /// simulated agents through a real Mosquitto, in batches of PER samples
    /// at QoS 1 as vigil-agent sends them, and report what the edge took
    /// beside the broker's own count of dropped messages ($SYS) and the
    /// edge's count of batches that never arrived.
    EdgeIntake {
        /// Samples per second in all.
        #[arg(long, default_value_t = 300_000)]
        rate: u64,
        /// Samples per message.
        #[arg(long, default_value_t = 16)]
        per: usize,
        /// Hosts publishing.
        #[arg(long, default_value_t = 100)]
        hosts: usize,
        /// Series in all.
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Seconds measured, after 10 s of warm-up.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// Start an embedded broker, a cloud and EDGES edge nodes in this
    /// process, publish a release to all of them, and time until every one
    /// scores with it.
    Rollout {
        /// Edge nodes.
        #[arg(long, default_value_t = 100)]
        edges: usize,
        /// Hidden units of the released model (16: 9 KB; 256: 1.1 MB in 5 chunks).
        #[arg(long, default_value_t = 16)]
        hidden: usize,
        /// Repetitions (a new release each; the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
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
        /// full, persistence, untrained, no-range, no-smoothed-range,
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
        Cmd::Bench { command } => bench(command).await,
        Cmd::Policy {
            command: PolicyCmd::Check { files },
        } => {
            let problems = crate::policy_check::check(&files);
            if problems.is_empty() {
                println!("{} file(s) OK", files.len());
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
        let scores =
            tokio::task::spawn_blocking(move || crate::eval::nab(&a, &c, ablation)).await??;
        println!(
            "NAB scores, {ablation} ({}), seed {seed} ({:.1} s):",
            ablation.describe(),
            started.elapsed().as_secs_f64()
        );
        for (profile, s) in &scores {
            println!(
                "  {profile:<20} {:6.2}   (threshold {:.4})",
                s.normalised, s.threshold
            );
        }
        rows.push((ablation, scores));
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

/// `vigil bench train|rollout|spool|edge-memory`.
async fn bench(command: BenchCmd) -> anyhow::Result<()> {
    let report = match command {
        BenchCmd::Train {
            samples,
            series,
            runs,
        } => {
            tokio::task::spawn_blocking(move || crate::bench::train(samples, series, runs))
                .await??
        }
        BenchCmd::Fleet {
            edges,
            series,
            rate,
            secs,
            warmup_secs,
            drain_secs,
            connections,
            roll_secs,
            crash_at_secs,
            resend_secs,
            keep,
            store,
            s3_endpoint,
            aggregators,
            etcd,
            json,
        } => {
            let s3 = vigil_cloud::config::S3Settings {
                endpoint: s3_endpoint,
                ..Default::default()
            };
            let opts = crate::fleet::FleetOptions {
                store,
                s3,
                aggregators,
                etcd,
                edges,
                series,
                rate,
                secs,
                warmup_secs,
                drain_secs,
                connections,
                roll_secs,
                crash_at_secs,
                resend_secs,
                keep,
                ..Default::default()
            };
            let report = crate::fleet::run(&opts).await?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
            }
            report.to_string()
        }
        BenchCmd::Rollout {
            edges,
            hidden,
            runs,
        } => crate::bench::rollout(edges, hidden, runs).await?,
        BenchCmd::EdgeIntake {
            rate,
            per,
            hosts,
            series,
            secs,
        } => {
            let o = crate::intake_bench::IntakeOptions {
                rate,
                per,
                hosts,
                series,
                secs,
            };
            crate::intake_bench::run(o).await?
        }
        BenchCmd::Spool {
            messages,
            batch,
            bytes,
        } => {
            tokio::task::spawn_blocking(move || crate::bench::spool(messages, batch, bytes))
                .await??
        }
        BenchCmd::EdgeMemory {
            series,
            minutes,
            phases,
            json,
        } => crate::memory_bench::edge_memory(series, minutes, &phases, json.as_deref()).await?,
    };
    println!("{report}");
    Ok(())
}
