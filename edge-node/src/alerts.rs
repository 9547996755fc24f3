//! Anomalies to Alertmanager (`alerts.url`): each anomaly the edge opens
//! (a detector episode or a liveness condition) is posted to Alertmanager's
//! v2 API as a firing alert labelled with its site, entity and top metric,
//! annotated with its score and what the policies decided about it
//! (updated as audit records come: sent, held back, verified); it is
//! posted again every `resend_secs` while it lasts (Alertmanager resolves
//! an alert it stops hearing about) and once more with `endsAt` when the
//! episode closes. A failed post is logged (rate-limited) and counted; the
//! next one carries everything again, so nothing waits on Alertmanager.

mod metrics;

pub use metrics::AlertMetrics;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use vigil_core::clock::rfc3339;
use vigil_core::message::{AnomalyEvent, AuditRecord};
use vigil_core::ratelog::RateLog;

/// Most alerts followed at once; beyond it new anomalies are not alerted.
pub const MAX_ALERTS: usize = 10_000;
/// A resolved alert whose post failed is tried this many times.
const RESOLVED_TRIES: u32 = 5;

/// Where alerts go (`alerts:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`; empty: off.
    pub url: String,
    /// Seconds between posts of the alerts still firing.
    pub resend_secs: u64,
    /// Give up on a post after this long, milliseconds.
    pub timeout_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            resend_secs: 60,
            timeout_ms: 5000,
        }
    }
}

impl AlertsConfig {
    /// Every problem.
    pub fn validate(&self, e: &mut Vec<String>) {
        let http = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !(self.url.is_empty() || http) {
            e.push(format!(
                "alerts.url: {:?} must start with http:// or https://",
                self.url
            ));
        }
        if !(1..=3600).contains(&self.resend_secs) {
            e.push(format!(
                "alerts.resend_secs: {} is outside 1..=3600",
                self.resend_secs
            ));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            e.push(format!(
                "alerts.timeout_ms: {} is outside 1..=60000",
                self.timeout_ms
            ));
        }
    }
}

/// What the run loop tells the poster.
#[derive(Debug)]
pub enum Note {
    /// An anomaly opened.
    Opened(AnomalyEvent),
    /// The policies decided something about anomaly `id`.
    Decided(String, String),
    /// These anomalies closed, at this time.
    Resolved(Vec<String>, i64),
}

/// The run loop's side: which anomalies it alerted, to tell which closed.
#[derive(Debug)]
pub struct Alerts {
    tx: mpsc::Sender<Note>,
    open: HashSet<String>,
    metrics: AlertMetrics,
}

impl Alerts {
    /// Starts posting to `config.url` until `stop`.
    pub fn start(
        config: &AlertsConfig,
        site: &str,
        metrics: AlertMetrics,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(1024);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()?;
        let poster = Poster {
            url: format!("{}/api/v2/alerts", config.url.trim_end_matches('/')),
            site: site.to_string(),
            client,
            firing: HashMap::new(),
            resolved: Vec::new(),
            metrics: metrics.clone(),
            ratelog: RateLog::default(),
        };
        tokio::spawn(poster.run(rx, Duration::from_secs(config.resend_secs), stop));
        Ok(Self {
            tx,
            open: HashSet::new(),
            metrics,
        })
    }

    fn send(&self, note: Note) {
        if self.tx.try_send(note).is_err() {
            self.metrics.dropped.inc();
        }
    }

    /// An anomaly opened.
    pub fn opened(&mut self, ev: &AnomalyEvent) {
        if self.open.len() < MAX_ALERTS && self.open.insert(ev.id.clone()) {
            self.send(Note::Opened(ev.clone()));
        }
    }

    /// An audit record: what was decided about its anomaly.
    pub fn decided(&self, rec: &AuditRecord) {
        let Some(id) = rec.anomaly_id.as_ref().filter(|id| self.open.contains(*id)) else {
            return;
        };
        let mut text = format!(
            "{} {} (policy {}",
            rec.kind.as_str(),
            rec.action,
            rec.policy
        );
        if let Some(rail) = &rec.rail {
            text.push_str(&format!(", held by {rail}"));
        }
        text.push(')');
        self.send(Note::Decided(id.clone(), text));
    }

    /// The anomalies open now: every other one alerted has closed.
    pub fn still_open(&mut self, open: &HashSet<String>, now: i64) {
        let closed: Vec<String> = self.open.difference(open).cloned().collect();
        if closed.is_empty() {
            return;
        }
        for id in &closed {
            self.open.remove(id);
        }
        self.send(Note::Resolved(closed, now));
    }
}

/// One alert as Alertmanager's v2 API takes it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, String>,
    starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
}

struct Poster {
    url: String,
    site: String,
    client: reqwest::Client,
    firing: HashMap<String, Alert>,
    resolved: Vec<(Alert, u32)>,
    metrics: AlertMetrics,
    ratelog: RateLog,
}

impl Poster {
    async fn run(mut self, mut rx: mpsc::Receiver<Note>, every: Duration, stop: CancellationToken) {
        let mut resend = tokio::time::interval(every);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                n = rx.recv() => match n {
                    Some(n) => self.note(n),
                    None => break,
                },
                _ = resend.tick() => {}
            }
            // Notes that came together go in one post.
            while let Ok(n) = rx.try_recv() {
                self.note(n);
            }
            self.post().await;
        }
    }

    fn note(&mut self, n: Note) {
        match n {
            Note::Opened(ev) => {
                let alert = Alert {
                    labels: BTreeMap::from([
                        ("alertname", "VigilAnomaly".to_string()),
                        ("site", self.site.clone()),
                        ("entity", ev.entity.to_string()),
                        ("top_metric", ev.top_metric.clone()),
                    ]),
                    annotations: BTreeMap::from([
                        (
                            "summary",
                            format!("{} is anomalous; top metric {}", ev.entity, ev.top_metric),
                        ),
                        ("score", format!("{:.3}", ev.score)),
                        ("decision", "no policy has acted yet".to_string()),
                        ("anomaly_id", ev.id.clone()),
                    ]),
                    starts_at: rfc3339(ev.ts_ms),
                    ends_at: None,
                };
                self.firing.insert(ev.id, alert);
            }
            Note::Decided(id, text) => {
                if let Some(a) = self.firing.get_mut(&id) {
                    a.annotations.insert("decision", text);
                }
            }
            Note::Resolved(ids, at) => {
                for id in ids {
                    if let Some(mut a) = self.firing.remove(&id) {
                        a.ends_at = Some(rfc3339(at));
                        self.resolved.push((a, 0));
                    }
                }
            }
        }
        self.metrics.firing.set(self.firing.len() as i64);
    }

    /// Posts every firing alert and the resolved ones not yet delivered.
    async fn post(&mut self) {
        if self.firing.is_empty() && self.resolved.is_empty() {
            return;
        }
        let body: Vec<&Alert> = self
            .firing
            .values()
            .chain(self.resolved.iter().map(|(a, _)| a))
            .collect();
        let sent = self.client.post(&self.url).json(&body).send().await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                self.metrics.posts.with_label_values(&["ok"]).inc();
                self.resolved.clear();
            }
            Some(why) => {
                self.metrics.posts.with_label_values(&["failed"]).inc();
                if let Some(skipped) = self.ratelog.allow("post") {
                    warn!(url = %self.url, error = %why, skipped, "Could not post alerts to Alertmanager; they go again with the next post.");
                }
                for (_, tries) in &mut self.resolved {
                    *tries += 1;
                }
                self.resolved.retain(|(_, t)| *t < RESOLVED_TRIES);
            }
        }
    }
}
