//! One simulated edge node's uplink, as `vigil-edge` runs it but without a
//! detector or a disk: every `batch_secs` its series' samples become
//! `scores` messages (at most [`SAMPLES_PER_MESSAGE`] samples each),
//! numbered in its stream; each is kept until the cloud's receipt; the first
//! `window` kept ones are out at a time, and one out without a receipt for
//! `resend_ms` is sent again. Payloads are made again from their number on
//! every send, so a long backlog costs a few words per message, not its bytes.
//! Every `events_every` batches an edge also sends an anomaly event and an
//! audit record (numbered in the same stream, as the edge's spool does).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use vigil_core::envelope::{with_seq, Seq, SCHEMA_VERSION};
use vigil_core::message::{AnomalyEvent, AuditKind, AuditRecord, SampleBatch};
use vigil_core::series::EntityId;
use vigil_core::topic::{self, UplinkKind};
use vigil_core::Payload;
use vigil_edge::uplink::SAMPLES_PER_MESSAGE;

/// Entity and metric of each series of an edge, made once for all edges.
pub type Names = Arc<Vec<(String, String)>>;

/// Series `j` of every edge is metric `m{j % 10}` of host `h{j / 10}`.
pub fn names(series: usize) -> Names {
    Arc::new(
        (0..series)
            .map(|j| (format!("host/h{:03}", j / 10), format!("m{}", j % 10)))
            .collect(),
    )
}

/// What every simulated edge sends.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Series per edge.
    pub series: usize,
    /// Samples per series per second.
    pub rate: f64,
    /// Seconds between uplink batches (the edge's `uplink_every_ticks` at 1 Hz).
    pub batch_secs: u64,
    /// Every this many batches, an anomaly event and an audit record too
    /// (0: none).
    pub events_every: u64,
}

impl Shape {
    /// Samples in one batch of one edge.
    pub fn samples_per_batch(&self) -> usize {
        (self.series as f64 * self.rate * self.batch_secs as f64).round() as usize
    }

    fn batch_ms(&self) -> i64 {
        self.batch_secs as i64 * 1000
    }
}

/// A message kept until its receipt.
#[derive(Clone, Debug)]
struct Kept {
    /// `Scores`, `Anomaly` or `Audit`.
    kind: UplinkKind,
    /// End of the batch it belongs to.
    batch_ms: i64,
    /// Its first sample's index in the batch.
    first: usize,
    samples: usize,
    first_sent_ms: Option<i64>,
    last_sent_ms: i64,
}

/// One publish to make.
#[derive(Debug)]
pub struct Send {
    /// The uplink topic.
    pub topic: String,
    /// The envelope with its sequence.
    pub payload: Vec<u8>,
    /// Whether it went out before.
    pub resend: bool,
}

/// What was made, or what a receipt settled.
#[derive(Debug, Default, PartialEq)]
pub struct Settled {
    /// Messages received for the first time.
    pub messages: u64,
    /// Their samples.
    pub samples: u64,
    /// Anomaly events and audit records among them.
    pub events: u64,
    /// Milliseconds from each one's first send to its receipt.
    pub latencies_ms: Vec<f64>,
}

/// One simulated edge.
#[derive(Debug)]
pub struct SimEdge {
    /// Its site.
    pub site: String,
    names: Names,
    stream: String,
    next_seq: u64,
    next_batch_ms: i64,
    batches: u64,
    kept: BTreeMap<u64, Kept>,
}

impl SimEdge {
    /// Edge `index` of a run named `run`; its first batch is due at `first_ms`.
    pub fn new(index: usize, run: &str, first_ms: i64, names: Names) -> Self {
        Self {
            site: site(index),
            names,
            stream: format!("{run}-{index}"),
            next_seq: 1,
            next_batch_ms: first_ms,
            batches: 0,
            kept: BTreeMap::new(),
        }
    }

    /// Makes the batches due by `now_ms`; returns what was made.
    pub fn make(&mut self, shape: &Shape, now_ms: i64) -> Settled {
        let mut made = Settled::default();
        let total = shape.samples_per_batch();
        while self.next_batch_ms <= now_ms {
            for first in (0..total).step_by(SAMPLES_PER_MESSAGE) {
                let samples = SAMPLES_PER_MESSAGE.min(total - first);
                self.keep(UplinkKind::Scores, first, samples);
                made.samples += samples as u64;
                made.messages += 1;
            }
            self.batches += 1;
            if shape.events_every > 0 && self.batches % shape.events_every == 0 {
                self.keep(UplinkKind::Anomaly, 0, 0);
                self.keep(UplinkKind::Audit, 0, 0);
                made.events += 2;
                made.messages += 2;
            }
            self.next_batch_ms += shape.batch_ms();
        }
        made
    }

    fn keep(&mut self, kind: UplinkKind, first: usize, samples: usize) {
        let kept = Kept {
            kind,
            batch_ms: self.next_batch_ms,
            first,
            samples,
            first_sent_ms: None,
            last_sent_ms: 0,
        };
        self.kept.insert(self.next_seq, kept);
        self.next_seq += 1;
    }

    /// The publishes due now: among the first `window` kept messages, those
    /// never sent and those out for `resend_ms` without a receipt.
    pub fn due(&mut self, shape: &Shape, now_ms: i64, window: usize, resend_ms: i64) -> Vec<Send> {
        let floor = self.floor();
        let mut sends = Vec::new();
        for (&n, k) in self.kept.iter_mut().take(window) {
            let resend = k.first_sent_ms.is_some();
            if resend && now_ms - k.last_sent_ms < resend_ms {
                continue;
            }
            k.first_sent_ms.get_or_insert(now_ms);
            k.last_sent_ms = now_ms;
            let seq = Seq {
                stream: self.stream.clone(),
                n,
                floor,
            };
            let body = match k.kind {
                UplinkKind::Anomaly => vigil_core::encode(&anomaly(&self.site, &seq)),
                UplinkKind::Audit => vigil_core::encode(&audit(&self.site, &seq)),
                _ => encode(&self.site, &self.names, shape, k),
            };
            sends.push(Send {
                topic: topic::uplink(&self.site, k.kind),
                payload: with_seq(&body, &seq),
                resend,
            });
        }
        sends
    }

    /// Everything out is sent again at the next [`SimEdge::due`] (after a
    /// reconnect, as the edge does).
    pub fn resend_all(&mut self) {
        for k in self.kept.values_mut() {
            k.last_sent_ms = i64::MIN / 2;
        }
    }

    /// Applies a receipt for `seqs` of `stream`.
    pub fn receipt(&mut self, stream: &str, seqs: &[u64], now_ms: i64) -> Settled {
        let mut s = Settled::default();
        if stream != self.stream {
            return s;
        }
        for n in seqs {
            if let Some(k) = self.kept.remove(n) {
                s.messages += 1;
                s.samples += k.samples as u64;
                s.events += u64::from(k.kind != UplinkKind::Scores);
                let sent = k.first_sent_ms.unwrap_or(now_ms);
                s.latencies_ms.push((now_ms - sent) as f64);
            }
        }
        s
    }

    /// Messages and samples kept (made and not yet receipted).
    pub fn backlog(&self) -> (u64, u64) {
        let samples = self.kept.values().map(|k| k.samples as u64).sum();
        (self.kept.len() as u64, samples)
    }

    /// Every number below it is receipted.
    fn floor(&self) -> u64 {
        self.kept.keys().next().copied().unwrap_or(self.next_seq)
    }
}

/// The site of edge `index`.
pub fn site(index: usize) -> String {
    format!("fleet-{index:05}")
}

/// The anomaly event sent as message `seq`: its id names the message.
pub fn anomaly(site: &str, seq: &Seq) -> AnomalyEvent {
    AnomalyEvent {
        id: format!("{}-{}", seq.stream, seq.n),
        site: site.to_string(),
        entity: EntityId::host("h000"),
        score: 0.99,
        top_metric: "m0".into(),
        contributors: vec![],
        ts_ms: vigil_core::clock::now_ms(),
        model_version: "sim".into(),
        entity_score: None,
        root_cause: vec![],
    }
}

/// The audit record sent as message `seq` (a policy held back by its
/// cooldown, for the anomaly just before it).
fn audit(site: &str, seq: &Seq) -> AuditRecord {
    AuditRecord {
        ts_ms: vigil_core::clock::now_ms(),
        site: site.to_string(),
        kind: AuditKind::HeldBack,
        policy: "sim".into(),
        policy_version: "sim".into(),
        target: EntityId::host("h000"),
        action: "restart".into(),
        command_id: None,
        anomaly_id: Some(format!("{}-{}", seq.stream, seq.n - 1)),
        model_version: "sim".into(),
        score: Some(0.99),
        top_metric: "m0".into(),
        mode: "auto".into(),
        lease_token: None,
        outcome: None,
        rail: Some("cooldown".into()),
        detail: "simulated".into(),
        root_cause: vec![],
    }
}

/// One sample as `vigil-edge` writes it (a `ScoredSample`), borrowing its
/// names so a batch costs no allocation per sample.
#[derive(Serialize)]
struct Out<'a> {
    entity: &'a str,
    metric: &'a str,
    ts_ms: i64,
    value: f64,
    score: f64,
}

#[derive(Serialize)]
struct Body<'a> {
    site: &'a str,
    samples: Vec<Out<'a>>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u32,
    kind: &'static str,
    sent_ms: i64,
    body: Body<'a>,
}

/// The envelope of one kept message: its samples are noisy waves, scored
/// as the edge scores them (the tests read it back with the real decoder).
fn encode(site: &str, names: &Names, shape: &Shape, k: &Kept) -> Vec<u8> {
    let series = shape.series.max(1);
    let step_ms = 1000.0 / shape.rate;
    let start = k.batch_ms - shape.batch_ms();
    let samples = (k.first..k.first + k.samples)
        .map(|i| {
            let (t, j) = (i / series, i % series);
            let ts_ms = start + (t as f64 * step_ms) as i64;
            let x = ts_ms as f64 / 60_000.0 + j as f64;
            let (entity, metric) = names.get(j).map_or(("", ""), |(e, m)| (e, m));
            Out {
                entity,
                metric,
                ts_ms,
                value: 50.0 + 10.0 * x.sin() + (x * 7.3).sin(),
                score: 0.1,
            }
        })
        .collect();
    let env = Envelope {
        v: SCHEMA_VERSION,
        kind: SampleBatch::KIND,
        sent_ms: vigil_core::clock::now_ms(),
        body: Body { site, samples },
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::envelope::decode_seq;

    const SHAPE: Shape = Shape {
        series: 900,
        rate: 1.0,
        batch_secs: 5,
        events_every: 0,
    };

    fn decoded(s: &Send) -> (SampleBatch, Seq) {
        let (b, seq) = decode_seq::<SampleBatch>(&s.payload, 1 << 24).unwrap();
        (b, seq.unwrap())
    }

    #[test]
    fn batches_split_into_bounded_messages_with_every_sample_once() {
        let mut e = SimEdge::new(3, "run", 10_000, names(900));
        assert_eq!(e.make(&SHAPE, 9_999), Settled::default());
        assert_eq!(e.make(&SHAPE, 10_000).samples, 4500);
        let sends = e.due(&SHAPE, 10_000, 100, 30_000);
        let sizes: Vec<usize> = sends.iter().map(|s| decoded(s).0.samples.len()).collect();
        assert_eq!(sizes, [2000, 2000, 500]);
        let mut keys = std::collections::BTreeSet::new();
        for s in &sends {
            assert_eq!(s.topic, "vigil/v1/fleet-00003/uplink/scores");
            let (b, seq) = decoded(s);
            assert_eq!((seq.stream.as_str(), seq.floor), ("run-3", 1));
            for x in b.samples {
                assert!((5_000..10_000).contains(&x.ts_ms));
                assert_eq!(x.score, Some(0.1));
                assert!(keys.insert((x.entity.to_string(), x.metric, x.ts_ms)));
            }
        }
        assert_eq!(keys.len(), 4500, "900 series × 5 s, each once");
    }

    #[test]
    fn keeps_a_window_resends_late_ones_and_settles_receipts_once() {
        let mut e = SimEdge::new(0, "r", 0, names(10));
        let shape = Shape {
            series: 10,
            ..SHAPE
        };
        e.make(&shape, 20_000); // five batches: seqs 1..=5
        let first: Vec<u64> = e
            .due(&shape, 20_000, 2, 30_000)
            .iter()
            .map(|s| decoded(s).1.n)
            .collect();
        assert_eq!(first, [1, 2]);
        assert!(e.due(&shape, 21_000, 2, 30_000).is_empty(), "window full");
        let settled = e.receipt("r-0", &[1, 1, 9], 21_500);
        assert_eq!(settled.messages, 1);
        assert_eq!(settled.samples, 50);
        assert_eq!(settled.latencies_ms, [1500.0]);
        assert_eq!(e.receipt("other", &[2], 21_500), Settled::default());
        let next = e.due(&shape, 22_000, 2, 30_000);
        assert_eq!(decoded(&next[0]).1.n, 3);
        assert_eq!(decoded(&next[0]).1.floor, 2);
        let late = e.due(&shape, 50_000, 2, 30_000);
        assert!(late.iter().all(|s| s.resend));
        assert_eq!(late.len(), 1, "only 2 was due again");
        e.resend_all();
        assert_eq!(e.due(&shape, 50_001, 2, 30_000).len(), 2);
        assert_eq!(e.backlog(), (4, 200));
    }

    #[test]
    fn every_so_many_batches_an_anomaly_and_an_audit_record_in_the_same_stream() {
        let shape = Shape {
            series: 10,
            events_every: 2,
            ..SHAPE
        };
        let mut e = SimEdge::new(1, "r", 0, names(10));
        let made = e.make(&shape, 15_000); // four batches
        assert_eq!((made.samples, made.messages, made.events), (200, 8, 4));
        let sends = e.due(&shape, 15_000, 100, 30_000);
        let topics: Vec<&str> = sends
            .iter()
            .map(|s| s.topic.rsplit('/').next().unwrap_or(""))
            .collect();
        let want = ["scores", "scores", "anomaly", "audit"];
        assert_eq!(topics, [want, want].concat());
        let (a, seq) = decode_seq::<AnomalyEvent>(&sends[2].payload, 1 << 20).unwrap();
        assert_eq!((a.id.as_str(), a.site.as_str()), ("r-1-3", "fleet-00001"));
        assert_eq!(seq.unwrap().n, 3);
        let (r, _) = decode_seq::<AuditRecord>(&sends[3].payload, 1 << 20).unwrap();
        assert_eq!(r.anomaly_id.as_deref(), Some("r-1-3"));
        let settled = e.receipt("r-1", &[3, 4, 5], 16_000);
        assert_eq!(
            (settled.messages, settled.samples, settled.events),
            (3, 50, 2)
        );
    }
}
