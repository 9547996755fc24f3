//! The collect loop: each interval the host's and the services' samples,
//! and what the scrape targets took since the last time, go out in metric
//! batches, held in a small backlog while the broker or the edge is away.

use crate::backlog::{Backlog, EdgeSeen};
use crate::collector::{service, HostCollector, ServiceChecker};
use crate::config::AgentConfig;
use crate::metrics::AgentMetrics;
use crate::scrape;
use crate::supervisor::Supervisor;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use vigil_core::clock::now_ms;
use vigil_core::message::MetricBatch;
use vigil_core::mqtt::Publisher;
use vigil_core::topic;

/// Most samples in one metric batch, so that one stays well under the
/// broker's and the edge's message limit (1 MiB) with long scraped names.
const SAMPLES_PER_BATCH: usize = 2000;

pub(crate) struct CollectLoop {
    host: String,
    interval: Duration,
    services: Vec<crate::config::ServiceConfig>,
    collector: Arc<std::sync::Mutex<HostCollector>>,
    checker: ServiceChecker,
    supervisor: Arc<Mutex<Supervisor>>,
    publisher: Publisher,
    metrics: AgentMetrics,
    topic: String,
    seq: u64,
    backlog: Backlog,
    edge: Arc<EdgeSeen>,
    /// Samples the scrape targets took since the last batch.
    scraped: Arc<std::sync::Mutex<scrape::Pending>>,
}

impl CollectLoop {
    pub(crate) fn new(
        config: &AgentConfig,
        host: String,
        supervisor: Arc<Mutex<Supervisor>>,
        publisher: Publisher,
        metrics: AgentMetrics,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            topic: topic::metrics(&config.site, &host),
            host,
            interval: Duration::from_secs_f64(config.interval_secs),
            services: config.services.clone(),
            collector: Arc::new(std::sync::Mutex::new(HostCollector::new(
                config.disks.clone(),
            ))),
            checker: ServiceChecker::new().context("building HTTP client")?,
            supervisor,
            publisher,
            metrics,
            seq: 0,
            backlog: Backlog::new(0),
            edge: Arc::new(EdgeSeen::default()),
            scraped: Default::default(),
        })
    }

    pub(crate) fn with_scraped(mut self, scraped: Arc<std::sync::Mutex<scrape::Pending>>) -> Self {
        self.scraped = scraped;
        self
    }

    pub(crate) fn with_backlog(mut self, max: usize, edge: Arc<EdgeSeen>) -> Self {
        self.backlog = Backlog::new(max);
        self.edge = edge;
        self
    }

    /// Sends held batches oldest first, then `batch`; holds everything
    /// while the broker or the edge is away.
    async fn deliver(&mut self, batch: MetricBatch) {
        let dropped = self.backlog.hold(batch);
        self.metrics.backlog_dropped.inc_by(dropped);
        if dropped > 0 {
            warn!(dropped, "Metric backlog full; dropped the oldest batches.");
        }
        while self.publisher.is_connected() && self.edge.listening(self.publisher.connections()) {
            let Some(b) = self.backlog.take_oldest() else {
                break;
            };
            if !self.publisher.send(&self.topic, &b, false).await {
                self.backlog.put_back(b);
                break;
            }
        }
        self.metrics.backlog.set(self.backlog.len() as i64);
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            for batch in self.collect().await {
                self.metrics.collections.inc();
                self.deliver(batch).await;
            }
        }
    }

    /// This interval's batches: the host's and services' samples and what
    /// was scraped since the last one, at most [`SAMPLES_PER_BATCH`] a batch.
    async fn collect(&mut self) -> Vec<MetricBatch> {
        let ts = now_ms();
        let mut pids = Vec::with_capacity(self.services.len());
        for s in &self.services {
            let pid = match &s.pid_file {
                Some(p) => std::fs::read_to_string(p)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok()),
                None => self.supervisor.lock().await.pid(&s.name),
            };
            pids.push(pid);
        }
        let host = self.host.clone();
        let collector = self.collector.clone();
        let pid_list = pids.clone();
        // /proc reads are blocking; keep them off the async workers.
        let gathered = tokio::task::spawn_blocking(move || {
            let mut c = collector.lock().unwrap_or_else(|p| p.into_inner());
            let host_samples = c.collect(&host, ts);
            let procs: Vec<_> = pid_list
                .iter()
                .map(|p| p.and_then(|pid| c.process(pid)))
                .collect();
            (host_samples, procs)
        })
        .await;
        let (mut samples, procs) = gathered.unwrap_or_else(|e| {
            warn!(error = %e, "Host collection failed.");
            (Vec::new(), vec![None; pids.len()])
        });
        let mut probes = futures_probe(&self.checker, &self.services).await;
        {
            // A service still starting is not judged on its health check.
            let sup = self.supervisor.lock().await;
            let now = std::time::Instant::now();
            for (probe, s) in probes.iter_mut().zip(&self.services) {
                if sup.in_grace(&s.name, now) {
                    *probe = None;
                }
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            let alive = procs[i].is_some();
            self.metrics
                .service_up
                .with_label_values(&[s.name.as_str()])
                .set(alive as i64);
            let collected = service::samples(&self.host, &s.name, ts, alive, procs[i], probes[i]);
            let gauge = &self.metrics.service_metric;
            // A dead process has no RSS: its last reading must not linger.
            for m in service::METRICS {
                if !collected.iter().any(|c| c.metric == m) {
                    let _ = gauge.remove_label_values(&[s.name.as_str(), m]);
                }
            }
            for c in &collected {
                gauge
                    .with_label_values(&[s.name.as_str(), c.metric.as_str()])
                    .set(c.value);
            }
            samples.extend(collected);
        }
        if let Ok(mut s) = self.scraped.lock() {
            samples.extend(s.take());
        }
        let mut batches = Vec::new();
        let mut rest = samples;
        loop {
            let tail = rest.split_off(rest.len().min(SAMPLES_PER_BATCH));
            self.seq += 1;
            batches.push(MetricBatch {
                host: self.host.clone(),
                seq: self.seq,
                samples: rest,
            });
            if tail.is_empty() {
                return batches;
            }
            rest = tail;
        }
    }
}

/// Probes every service's health URL concurrently.
async fn futures_probe(
    checker: &ServiceChecker,
    services: &[crate::config::ServiceConfig],
) -> Vec<Option<service::Probe>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, s) in services.iter().enumerate() {
        if let Some(url) = s.health_url.clone() {
            let c = checker.clone();
            let t = Duration::from_millis(s.health_timeout_ms);
            set.spawn(async move { (i, c.probe(&url, t).await) });
        }
    }
    let mut out = vec![None; services.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((i, p)) = r {
            out[i] = Some(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceConfig;

    /// The label sets of `vigil_agent_service_metric` now.
    fn gauges(metrics: &AgentMetrics) -> Vec<String> {
        metrics
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == "vigil_agent_service_metric")
            .flat_map(|f| f.get_metric().iter())
            .map(|m| {
                m.get_label()
                    .iter()
                    .map(|l| format!("{}={}", l.name(), l.value()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[tokio::test]
    async fn a_dead_service_stops_reporting_its_process_gauges() {
        let config = AgentConfig {
            services: vec![ServiceConfig {
                name: "s".into(),
                argv: vec!["sleep".into(), "30".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let sup = Arc::new(Mutex::new(Supervisor::new(&config.services)));
        assert!(sup.lock().await.start_all().is_empty());
        let metrics = AgentMetrics::new().unwrap();
        let (tx, _rx) = vigil_core::mqtt::inbox(4, 1 << 20);
        let spec = vigil_core::mqtt::LinkSpec {
            settings: config.mqtt.clone(),
            default_client_id: "t".into(),
            subscriptions: vec![],
            presence: None,
        };
        // Never connected: the batches are only built here.
        let (publisher, _link) = vigil_core::mqtt::open(spec, tx, metrics.link.clone()).unwrap();
        let mut c =
            CollectLoop::new(&config, "h".into(), sup.clone(), publisher, metrics.clone()).unwrap();
        c.collect().await;
        assert!(
            gauges(&metrics).iter().any(|g| g.contains("rss_bytes")),
            "{:?}",
            gauges(&metrics)
        );
        let pid = sup.lock().await.pid("s").unwrap();
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        // Reaped by the next look at it.
        for _ in 0..50 {
            if sup.lock().await.pid("s").is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.collect().await;
        assert_eq!(gauges(&metrics), ["metric=up,service=s"]);
        sup.lock().await.stop_all().await;
    }
}
