//! The message counters every role's link keeps.

use super::*;

/// Message counters shared by every role, registered once per registry.
#[derive(Clone)]
pub struct LinkMetrics {
    /// 1 while connected to the broker.
    pub connected: IntGauge,
    /// Connection losses.
    pub reconnects: IntCounter,
    /// Messages received, by kind.
    pub received: IntCounterVec,
    /// Messages published, by kind.
    pub published: IntCounterVec,
    /// Messages that could not be queued for publishing, by kind.
    pub dropped: IntCounterVec,
    /// Messages refused on decoding, by reason.
    pub malformed: IntCounterVec,
}

impl LinkMetrics {
    /// Counts one message received, by kind.
    pub fn count(&self, kind: &str) {
        self.received.with_label_values(&[kind]).inc();
    }

    /// Counts a message refused on decoding (received, by its kind, and
    /// malformed, by reason) and logs it.
    pub fn refused(&self, topic: &str, kind: &str, e: &crate::envelope::DecodeError) {
        self.count(kind);
        self.malformed.with_label_values(&[e.reason()]).inc();
        warn!(topic, kind, error = %e, "Dropped malformed message.");
    }

    /// Creates and registers the counters in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let connected = IntGauge::new(
            "vigil_mqtt_connected",
            "1 while connected to the MQTT broker.",
        )?;
        let reconnects = IntCounter::new(
            "vigil_mqtt_connection_errors_total",
            "MQTT connection losses and failed attempts.",
        )?;
        let received = IntCounterVec::new(
            Opts::new(
                "vigil_messages_received_total",
                "MQTT messages received, by kind.",
            ),
            &["kind"],
        )?;
        let published = IntCounterVec::new(
            Opts::new(
                "vigil_messages_published_total",
                "MQTT messages published, by kind.",
            ),
            &["kind"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "vigil_messages_dropped_total",
                "Messages that could not be queued for the broker, by kind.",
            ),
            &["kind"],
        )?;
        let malformed = IntCounterVec::new(
            Opts::new(
                "vigil_messages_malformed_total",
                "Messages refused on decoding, by reason.",
            ),
            &["reason"],
        )?;
        crate::telemetry::register(registry, "all", &connected)?;
        crate::telemetry::register(registry, "all", &reconnects)?;
        crate::telemetry::register(registry, "all", &received)?;
        crate::telemetry::register(registry, "all", &published)?;
        crate::telemetry::register(registry, "all", &dropped)?;
        crate::telemetry::register(registry, "all", &malformed)?;
        Ok(Self {
            connected,
            reconnects,
            received,
            published,
            dropped,
            malformed,
        })
    }
}
