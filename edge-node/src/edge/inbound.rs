//! What arrives from the broker: each message decoded, counted and handed
//! to the part that owns it.

use super::*;
use vigil_core::message::{CommandResult, MetricBatch, Sample, SignedRelease};

/// The intake sender every sensor reading counts under.
const SENSORS: &str = "sensors";

impl Node {
    /// Hands each message to the handler of its kind; a refused one is
    /// counted and logged (rate-limited) by its kind and reason.
    /// `arrived`: when the link took it off the wire (Unix ms); a message
    /// that waited behind others is judged by it, not by when it is read.
    pub(super) fn on_message(&mut self, m: &Publish, arrived: i64) {
        let now = now_ms();
        let arrived = arrived.min(now);
        if !self.within_intake(&m.topic, m.payload.len(), now) {
            return;
        }
        let max = self.config.max_message_bytes;
        let inbound = match classify(&self.config.site, &m.topic, &m.payload, max, now) {
            Ok(i) => i,
            Err((kind, e)) => return self.metrics.link.refused(&m.topic, kind, &e),
        };
        match inbound {
            Inbound::Batch { batch, sent_ms } => self.on_batch(batch, sent_ms, arrived, now),
            Inbound::Sensor { name, ts_ms, value } => {
                self.on_sensor(&name, ts_ms, value, arrived, now)
            }
            Inbound::Result(r) => self.on_result(&r, now),
            Inbound::AgentPresence {
                host,
                online,
                actions,
            } => self.on_agent_presence(host, online, actions),
            Inbound::Ack(ack) => {
                self.metrics.link.count("uplink_ack");
                self.uplink.ack(ack);
            }
            Inbound::Release { family, signed } if family == self.models.family() => {
                self.on_release(&signed, now)
            }
            Inbound::Chunk {
                family,
                version,
                index,
                bytes,
            } if family == self.models.family() => {
                self.metrics.link.count("chunk");
                let next = self.models.on_chunk(version, index, &bytes, now);
                self.count_chunks();
                self.model_next(next);
            }
            Inbound::Release { .. } | Inbound::Chunk { .. } | Inbound::Ignored => {}
        }
    }

    /// Whether the sender of a metric batch or sensor reading on `topic` is
    /// within its byte rate; past it the message is dropped unread,
    /// counted and logged (rate-limited) with the sender.
    fn within_intake(&mut self, topic: &str, bytes: usize, now: i64) -> bool {
        let sender = match topic::parse(topic) {
            Some(topic::Route::Metrics { host, .. }) => host,
            // Sensors share one bucket: a new sensor name is no way around it.
            Some(topic::Route::Sensor { .. }) => SENSORS,
            _ => return true,
        };
        if self.intake.on_message(sender, bytes, now) {
            return true;
        }
        self.metrics.intake_limited.inc();
        if let Some(skipped) = self.ratelog.allow(&format!("bytes {sender}")) {
            warn!(%sender, bytes, skipped, "Sender over its intake.max_bytes_per_sec; message dropped unread.");
        }
        false
    }

    /// Samples a Prometheus remote-wrote ([`crate::remote_write`]), placed
    /// by their own times like any sender's.
    pub(super) fn on_remote_write(&mut self, handoff: crate::remote_write::Handoff) {
        // Their bytes stay counted until they are in the cache.
        let (samples, _held) = handoff.take();
        let now = now_ms();
        self.cache_samples("remote_write", samples, 0, now, now);
    }

    /// Takes `sender`'s samples into the cache, each placed by its own time
    /// moved by `shift` (a sender's clock offset) against their arrival,
    /// then acts on them.
    fn cache_samples(
        &mut self,
        sender: &str,
        samples: Vec<Sample>,
        shift: i64,
        arrived: i64,
        now: i64,
    ) {
        let timing = self.config.timing();
        let shared = self.shared.clone();
        let mut cache = shared.lock_cache();
        for s in samples {
            let placed = timing.place(s.ts_ms.saturating_add(shift), arrived);
            let id = SeriesId::new(s.entity, s.metric);
            self.accept(&mut cache, sender, &id, placed, s.value, now);
        }
        self.metrics.cache.series.set(cache.len() as i64);
        drop(cache);
        self.after_samples(now);
    }

    /// An agent's metrics: a sender whose clock is off has its batch shifted
    /// onto the edge's clock by the envelope's send time, against the time
    /// the batch arrived (not when it is read: a backlog is not the
    /// sender's fault).
    fn on_batch(&mut self, batch: MetricBatch, sent_ms: Option<i64>, arrived: i64, now: i64) {
        self.metrics.link.count("metrics");
        let missing = self.gaps.observe(&batch.host, batch.seq);
        if missing > 0 {
            if let Some(skipped) = self.ratelog.allow(&format!("missing {}", batch.host)) {
                warn!(sender = %batch.host, missing, skipped, "Metric batches from this agent never arrived: the broker dropped them for this edge (its queue for the edge was full) or a connection was lost.");
            }
        }
        let timing = self.config.timing();
        let shift = timing.batch_shift(sent_ms, arrived);
        if shift != 0 {
            self.metrics
                .timing
                .restamped
                .with_label_values(&[Restamp::SenderClock.as_str()])
                .inc_by(batch.samples.len() as u64);
            if let Some(skipped) = self.ratelog.allow(&format!("clock {}", batch.host)) {
                warn!(sender = %batch.host, off_secs = -shift as f64 / 1000.0, skipped, "Sender's clock is off; judging its samples by their arrival time.");
            }
        }
        self.cache_samples(&batch.host, batch.samples, shift, arrived, now);
    }

    /// One sensor reading: a skewed stamp takes the arrival time.
    fn on_sensor(&mut self, name: &str, ts_ms: i64, value: f64, arrived: i64, now: i64) {
        self.metrics.link.count("sensor");
        let placed = self.config.timing().place_sensor(ts_ms, arrived);
        let id = SeriesId::new(EntityId::sensor(name), "value");
        let shared = self.shared.clone();
        let mut cache = shared.lock_cache();
        self.accept(&mut cache, SENSORS, &id, placed, value, now);
        self.metrics.cache.series.set(cache.len() as i64);
        drop(cache);
        self.after_samples(now);
    }

    /// An agent's result: to the engine, or audited as unexpected when no
    /// command of this edge is waiting for it.
    fn on_result(&mut self, r: &CommandResult, now: i64) {
        self.metrics.link.count("result");
        let model = self.model_version();
        match self.engine.on_result(r, now, &model) {
            Some(d) => {
                self.metrics
                    .remediation
                    .action_results
                    .with_label_values(&[r.outcome.as_str()])
                    .inc();
                self.apply(d)
            }
            None => self.unexpected_result(r, &model),
        }
    }

    /// An agent came or went; its catalog is checked against the policies.
    fn on_agent_presence(&mut self, host: String, online: bool, actions: Vec<String>) {
        self.metrics.link.count("presence");
        info!(%host, online, actions = actions.len(), "Agent presence.");
        // Announced on every start, reconnect and catalog change.
        if online && self.engine.set_agent_actions(&host, actions) {
            self.catalogs_changed();
        }
        if let Ok(mut a) = self.shared.agents.lock() {
            a.insert(host, online);
        }
    }

    /// A model release of this edge's family.
    fn on_release(&mut self, signed: &SignedRelease, now: i64) {
        self.metrics.link.count("release");
        match self.models.on_release(signed, now) {
            Ok(next) => self.model_next(next),
            Err(r) => {
                self.refused(r.reason());
                warn!(reason = r.reason(), error = %r, "Model release refused; the running model keeps scoring.");
            }
        }
    }

    /// Caches one sample placed on the edge's clock; every refusal and
    /// restamp is counted, and logged (rate-limited) with its sender.
    pub(super) fn accept(
        &mut self,
        cache: &mut Cache,
        sender: &str,
        id: &SeriesId,
        placed: Result<(i64, Option<Restamp>), Refusal>,
        value: f64,
        now: i64,
    ) {
        let pushed = placed.and_then(|(ts, restamp)| {
            // A sender's new series come at its own pace: a flood of new
            // names is refused here, before any slot is looked for.
            if cache.get(id).is_none() && !self.intake.on_new_series(sender, now) {
                return Err(Refusal::NewSeriesRate);
            }
            let max_future = self.config.max_future_secs as i64 * 1000;
            let displaced = cache.push_admit(id, ts, value, now, max_future)?;
            if displaced {
                self.metrics
                    .cache.series_evicted
                    .with_label_values(&["room"])
                    .inc();
                if let Some(skipped) = self.ratelog.allow("room") {
                    info!(%sender, series = %id, skipped, "Cache full: a new series took the slot of the stalest one that was not live.");
                }
            }
            Ok(restamp)
        });
        match pushed {
            Ok(restamp) => {
                self.metrics.cache.samples.inc();
                if let Some(r) = restamp.filter(|r| *r == Restamp::Ahead) {
                    self.metrics
                        .timing
                        .restamped
                        .with_label_values(&[r.as_str()])
                        .inc();
                    if let Some(skipped) = self.ratelog.allow(&format!("ahead {sender}")) {
                        warn!(%sender, series = %id, skipped, "Sample stamped ahead of the edge's clock; placed at its arrival time.");
                    }
                }
            }
            Err(r) => {
                self.metrics
                    .cache
                    .samples_refused
                    .with_label_values(&[r.as_str()])
                    .inc();
                self.health.h.refused += 1;
                if let Some(skipped) = self.ratelog.allow(&format!("{} {sender}", r.as_str())) {
                    warn!(%sender, series = %id, reason = r.as_str(), %value, skipped, "Sample refused.");
                }
            }
        }
    }
}
