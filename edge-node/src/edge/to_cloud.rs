//! What goes to the cloud: samples and scores (shaped by
//! `uplink::sample_messages`), anomaly events and audit records, and the
//! heartbeat.

use super::*;

impl Node {
    /// Adds a message for the cloud to this turn's batch.
    pub(super) fn for_cloud<P: vigil_core::Payload>(
        &mut self,
        priority: Priority,
        kind: UplinkKind,
        body: &P,
    ) {
        let topic = topic::uplink(&self.config.site, kind);
        self.to_cloud.push(Queued::new(priority, topic, body));
    }

    /// Hands every point gathered since the last call to the uplink: the
    /// points a tick scored as scores, the ones between ticks as raw samples.
    pub(super) fn uplink_samples(&mut self) {
        let unsent = self.shared.lock_cache().take_unsent();
        self.metrics.uplink.ring_lost.inc_by(unsent.lost);
        let messages = crate::uplink::sample_messages(&self.config.site, unsent.points);
        self.to_cloud.extend(messages);
    }

    pub(super) fn heartbeat(&mut self) {
        // New entities can bring policies to agents that lack their action.
        self.check_policies_against_agents();
        // Budgets walk every known target: once a heartbeat, not every tick.
        for (policy, left) in self.engine.budgets_left(now_ms()) {
            self.metrics
                .remediation
                .budget_left
                .with_label_values(&[policy])
                .set(left as i64);
        }
        let health = self.health.take();
        let model_release = self.shared.info.lock().ok().and_then(|i| i.model_release);
        let hb = Heartbeat {
            model_family: self.models.family().to_string(),
            model_release,
            health,
            site: self.config.site.clone(),
            node: self.config.node.clone(),
            ts_ms: now_ms(),
            version: env!("CARGO_PKG_VERSION").into(),
            model_version: self.model_version(),
            series: self.shared.lock_cache().len() as u64,
            anomalous_entities: self.shared.lock_entities().anomalous_count() as u64,
            agents_online: self
                .shared
                .agents
                .lock()
                .map(|a| a.values().filter(|&&o| o).count() as u64)
                .unwrap_or(0),
        };
        self.out.send(
            topic::uplink(&self.config.site, UplinkKind::Heartbeat),
            &hb,
            false,
        );
    }
}
