//! `vigil bench`: its subcommands' arguments and what each runs.

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(super) enum BenchCmd {
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
    Fleet(FleetArgs),
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
    /// Run two real agents (`vigil agent`, their own processes) on an
    /// embedded broker, one scraping an exporter of SERIES counters every
    /// INTERVAL seconds and one scraping nothing, and report their CPU, the
    /// series sent and the scrape's duration, and the median time to parse
    /// and convert one scrape.
    Scrape {
        /// Series the exporter serves.
        #[arg(long, default_value_t = 5000)]
        series: usize,
        /// Seconds between scrapes.
        #[arg(long, default_value_t = 1.0)]
        interval_secs: f64,
        /// Seconds measured, after 10 s of warm-up.
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
    /// Send a real edge node (`vigil edge`, its own process, pinned to CPU
    /// 0) Prometheus remote-write requests as fast as it takes them, then a
    /// bare HTTP sink the same requests, and report the samples a second
    /// each took and its CPU.
    RemoteWrite {
        /// Series in all.
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Samples per request (Prometheus's max_samples_per_send).
        #[arg(long, default_value_t = 2000)]
        per: usize,
        /// Requests in flight at once (Prometheus's shards).
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Seconds measured per target, after 5 s of warm-up.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// The bare HTTP sink of `vigil bench remote-write` (reads each body,
    /// answers 204).
    #[command(hide = true)]
    Sink {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
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

/// `vigil bench fleet`'s arguments.
#[derive(clap::Args)]
pub(super) struct FleetArgs {
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
    /// Every this many batches each edge also sends an anomaly event and
    /// an audit record; the report then counts them in Parquet and in
    /// every aggregator's API (0: none).
    #[arg(long, default_value_t = 0)]
    events_every: u64,
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
}

impl FleetArgs {
    /// What to simulate, and where to write the report as JSON.
    fn options(self) -> (crate::fleet::FleetOptions, Option<PathBuf>) {
        let opts = crate::fleet::FleetOptions {
            edges: self.edges,
            series: self.series,
            rate: self.rate,
            secs: self.secs,
            warmup_secs: self.warmup_secs,
            drain_secs: self.drain_secs,
            connections: self.connections,
            roll_secs: self.roll_secs,
            crash_at_secs: self.crash_at_secs,
            resend_secs: self.resend_secs,
            events_every: self.events_every,
            keep: self.keep,
            store: self.store,
            s3: vigil_cloud::config::S3Settings {
                endpoint: self.s3_endpoint,
                ..Default::default()
            },
            aggregators: self.aggregators,
            etcd: self.etcd,
            ..Default::default()
        };
        (opts, self.json)
    }
}

/// `vigil bench …`: runs one benchmark and prints its report.
pub(super) async fn run(command: BenchCmd) -> anyhow::Result<()> {
    let report = match command {
        BenchCmd::Train {
            samples,
            series,
            runs,
        } => {
            tokio::task::spawn_blocking(move || crate::bench::train(samples, series, runs))
                .await??
        }
        BenchCmd::Fleet(args) => {
            let (opts, json) = args.options();
            let report = crate::fleet::run(&opts).await?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
            }
            report.to_string()
        }
        BenchCmd::Scrape {
            series,
            interval_secs,
            secs,
        } => {
            let o = crate::scrape_bench::ScrapeOptions {
                series,
                interval_secs,
                secs,
            };
            crate::scrape_bench::run(o).await?
        }
        BenchCmd::RemoteWrite {
            series,
            per,
            clients,
            secs,
        } => {
            let o = crate::remote_write_bench::WriteOptions {
                series,
                per,
                clients,
                secs,
            };
            crate::remote_write_bench::run(o).await?
        }
        BenchCmd::Sink { listen } => {
            crate::remote_write_bench::sink(&listen).await?;
            String::new()
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
