//! What `vigil bench fleet` reports, and its progress bars.

use super::link::Totals;
use super::{FleetOptions, Snapshot};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::sync::atomic::Ordering;

/// One run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Simulated edges.
    pub edges: usize,
    /// Series per edge.
    pub series: usize,
    /// Samples per series per second.
    pub rate: f64,
    /// Samples made per second over the measured window.
    pub offered: f64,
    /// Samples stored per second over the measured window: receipted, so
    /// durable in the aggregator's log.
    pub stored: f64,
    /// Samples per second the bare subscriber received (its messages times
    /// the samples per message).
    pub bare: f64,
    /// MB per second the bare subscriber received.
    pub bare_mb_s: f64,
    /// `stored / bare`.
    pub ratio: f64,
    /// Receipt latency, first send to receipt, seconds.
    pub receipt_p50_s: Option<f64>,
    /// Its 99th percentile.
    pub receipt_p99_s: Option<f64>,
    /// The aggregator's CPU over the window, % of one core.
    pub aggregator_cpu: f64,
    /// Its largest resident set, MB.
    pub aggregator_peak_rss_mb: f64,
    /// Mosquitto's CPU, % of one core.
    pub broker_cpu: f64,
    /// This process's (the simulated edges and the bare subscriber), %.
    pub simulator_cpu: f64,
    /// Samples made and not yet receipted, at the start and end of the window.
    pub backlog: (u64, u64),
    /// Whether it kept up: it stored 95% of what was offered and the
    /// backlog grew by under 5% of it.
    pub kept_up: bool,
    /// After the load: whether every sample made was receipted and the
    /// aggregator stopped cleanly.
    pub drained: bool,
    /// Samples made in the whole run.
    pub made: u64,
    /// Rows in the Parquet parts afterwards.
    pub rows: u64,
    /// Messages sent again.
    pub resent: u64,
    /// Parquet files of samples written.
    pub files: usize,
    /// Seconds of load (warm-up and window), for files per site and time.
    pub load_secs: u64,
    /// After a crash: the messages the aggregator read back from its log.
    pub replayed: Option<u64>,
    /// Parquet rolls that failed (and were written later), e.g. in a store
    /// outage.
    pub failed_rolls: Option<u64>,
    /// In a cluster, after cloud-1 was killed: seconds until the others
    /// owned every site.
    pub takeover_s: Option<f64>,
    /// In a cluster: each live aggregator and whether it leads.
    pub leaders: Vec<(String, bool)>,
    /// In a cluster, just before cloud-1 was killed: sites per owner.
    pub owners_at_crash: Vec<(String, usize)>,
    /// In an etcd outage: each aggregator and whether it still said etcd
    /// was up at the end of it.
    pub etcd_up_in_outage: Vec<(String, bool)>,
    /// Anomaly events and audit records made (as many of each).
    pub events: u64,
    /// Rows of anomaly events and of audit records in the Parquet parts.
    pub events_stored: (u64, u64),
    /// What each live aggregator's API lists (with `events_every`).
    pub listed: Vec<super::Listed>,
}

impl Report {
    pub(super) fn new(
        opts: &FleetOptions,
        (a, b): (&Snapshot, &Snapshot),
        backlog_start: u64,
        (p50, p99): (Option<f64>, Option<f64>),
        peak_rss: f64,
        (drained, (rows, files), totals): (bool, (u64, usize), &Totals),
    ) -> Self {
        let secs = match (a.at, b.at) {
            (Some(x), Some(y)) => (y - x).as_secs_f64().max(1e-9),
            _ => f64::NAN,
        };
        let per_sec = |x: f64, y: f64| (y - x) / secs;
        let pct = |i: usize| 100.0 * per_sec(a.cpu[i], b.cpu[i]);
        let sent = totals.sent.load(Ordering::Relaxed);
        let made = totals.made.load(Ordering::Relaxed);
        let scores_sent = sent.saturating_sub(totals.events_made.load(Ordering::Relaxed));
        let per_message = made as f64 / scores_sent.max(1) as f64;
        let offered = per_sec(a.made as f64, b.made as f64);
        let stored = per_sec(a.receipted as f64, b.receipted as f64);
        let bare = per_sec(a.bare_messages as f64, b.bare_messages as f64) * per_message;
        let backlog_end = b.made - b.receipted;
        let growth = backlog_end.saturating_sub(backlog_start) as f64;
        Self {
            edges: opts.edges,
            series: opts.series,
            rate: opts.rate,
            offered,
            stored,
            bare,
            bare_mb_s: per_sec(a.bare_bytes as f64, b.bare_bytes as f64) / 1e6,
            ratio: stored / bare,
            receipt_p50_s: p50,
            receipt_p99_s: p99,
            aggregator_cpu: pct(0),
            aggregator_peak_rss_mb: peak_rss,
            broker_cpu: pct(1),
            simulator_cpu: pct(2),
            backlog: (backlog_start, backlog_end),
            kept_up: stored >= 0.95 * offered && growth <= 0.05 * offered * secs,
            drained,
            made,
            rows,
            resent: totals.resent.load(Ordering::Relaxed),
            files,
            load_secs: opts.warmup_secs + opts.secs,
            replayed: None,
            failed_rolls: None,
            takeover_s: None,
            leaders: Vec::new(),
            owners_at_crash: Vec::new(),
            etcd_up_in_outage: Vec::new(),
            events: totals.events_made.load(Ordering::Relaxed),
            events_stored: (0, 0),
            listed: Vec::new(),
        }
    }

    /// Whether the store holds each sample made exactly once.
    pub fn exactly_once(&self) -> bool {
        self.drained && self.rows == self.made
    }

    /// Parquet files per site per five minutes of load.
    pub fn files_per_site_per_5_min(&self) -> f64 {
        self.files as f64 / self.edges.max(1) as f64 / (self.load_secs.max(1) as f64 / 300.0)
    }
}

fn opt_s(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2} s"))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "| edges × series, rate | offered samples/s | stored (receipted) samples/s | bare subscriber samples/s (MB/s) | stored / bare | receipt p50 / p99 | aggregator CPU | aggregator peak RSS | broker CPU | simulator CPU | backlog start → end | kept up |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
        writeln!(
            f,
            "| {} × {}, {} Hz | {:.0} | {:.0} | {:.0} ({:.1}) | {:.2} | {} / {} | {:.0} % | {:.0} MB | {:.0} % | {:.0} % | {} → {} | {} |",
            self.edges,
            self.series,
            self.rate,
            self.offered,
            self.stored,
            self.bare,
            self.bare_mb_s,
            self.ratio,
            opt_s(self.receipt_p50_s),
            opt_s(self.receipt_p99_s),
            self.aggregator_cpu,
            self.aggregator_peak_rss_mb,
            self.broker_cpu,
            self.simulator_cpu,
            self.backlog.0,
            self.backlog.1,
            if self.kept_up { "yes" } else { "no" }
        )?;
        write!(
            f,
            "\nafter the load: {} (made {}, rows in Parquet {}, {} messages sent again); {} Parquet files of samples ({:.3} per site per 5 minutes)",
            match (self.drained, self.exactly_once()) {
                (true, true) => "every sample receipted and stored exactly once".to_string(),
                (true, false) => format!("every sample receipted, but the Parquet parts hold {} rows", self.rows),
                (false, _) => "NOT every sample was receipted in time (or the aggregator did not stop cleanly)".to_string(),
            },
            self.made,
            self.rows,
            self.resent,
            self.files,
            self.files_per_site_per_5_min()
        )?;
        if let Some(n) = self.replayed {
            write!(
                f,
                "\nafter the crash, the aggregator read back {n} messages from its log"
            )?;
        }
        if !self.owners_at_crash.is_empty() {
            let o: Vec<String> = self
                .owners_at_crash
                .iter()
                .map(|(n, c)| format!("{n} {c}"))
                .collect();
            write!(f, "\nsites owned before the crash: {}", o.join(", "))?;
        }
        if let Some(t) = self.takeover_s {
            write!(
                f,
                "\nafter cloud-1 was killed, the others owned every site in {t:.1} s"
            )?;
        }
        if self.leaders.len() > 1 || self.takeover_s.is_some() {
            let lead: Vec<&str> = self
                .leaders
                .iter()
                .filter(|(_, l)| *l)
                .map(|(n, _)| n.as_str())
                .collect();
            write!(f, "\nleader at the end: {}", lead.join(", "))?;
        }
        if self.events > 0 {
            let each = self.events / 2;
            write!(
                f,
                "\nanomaly events and audit records: {each} of each made, {} and {} in Parquet",
                self.events_stored.0, self.events_stored.1
            )?;
            for l in &self.listed {
                write!(
                    f,
                    "; {} lists {} and {} ({} twice)",
                    l.name, l.anomalies, l.audit, l.twice
                )?;
            }
        }
        if let Some(n) = self.failed_rolls.filter(|n| *n > 0) {
            write!(
                f,
                "\n{n} Parquet rolls failed and were written later (their rows stayed in the log)"
            )?;
        }
        Ok(())
    }
}

/// The bar over the load's seconds.
pub(super) fn bar(secs: u64) -> ProgressBar {
    let bar = ProgressBar::new(secs);
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// A spinner with a message.
pub(super) fn spinner(msg: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(msg.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The progress line between two readings a second apart.
pub(super) fn progress(a: &Snapshot, b: &Snapshot) -> String {
    let secs = match (a.at, b.at) {
        (Some(x), Some(y)) => (y - x).as_secs_f64().max(1e-9),
        _ => 1.0,
    };
    format!(
        "stored {:.0} samples/s, offered {:.0}/s, backlog {} samples, aggregator {:.0} % CPU",
        (b.receipted - a.receipted) as f64 / secs,
        (b.made - a.made) as f64 / secs,
        b.made - b.receipted,
        100.0 * (b.cpu[0] - a.cpu[0]) / secs
    )
}
