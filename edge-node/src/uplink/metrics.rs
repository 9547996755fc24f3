//! The uplink's metrics: the buffer's size, what was sent, acknowledged,
//! dropped, and lost from the cache ring before an uplink took it.

use crate::spool::Priority;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use vigil_core::telemetry::Group;

/// The uplink's metrics.
#[derive(Clone)]
pub struct UplinkMetrics {
    /// Bytes held in the buffer.
    pub buffer_bytes: IntGauge,
    /// Messages held, by priority.
    pub buffer_messages: IntGaugeVec,
    /// Messages dropped before reaching the cloud, by priority.
    pub dropped: IntCounterVec,
    /// Messages sent, first sends and resends (`first`, `resend`).
    pub sent: IntCounterVec,
    /// Messages the cloud acknowledged.
    pub acked: IntCounter,
    /// Points that left the cache ring before an uplink took them.
    pub ring_lost: IntCounter,
}

impl UplinkMetrics {
    /// Creates and registers the metrics.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let g = Group::new(r, "edge");
        let priorities = Priority::ALL.map(|p| p.as_str());
        let m = Self {
            buffer_bytes: g.gauge(
                "vigil_edge_uplink_buffer_bytes",
                "Bytes held in the edge's on-disk uplink buffer.",
            )?,
            buffer_messages: g.gauges(
                "vigil_edge_uplink_buffer_messages",
                "Messages held in the uplink buffer, by priority.",
                &["priority"],
            )?,
            dropped: g.counters(
                "vigil_edge_uplink_dropped_total",
                "Cloud-bound messages dropped (buffer full or unwritable), by priority.",
                &["priority"],
                &priorities,
            )?,
            sent: g.counters(
                "vigil_edge_uplink_sent_total",
                "Uplink messages published, by attempt (first, resend).",
                &["attempt"],
                &[],
            )?,
            acked: g.counter(
                "vigil_edge_uplink_acked_total",
                "Uplink messages the cloud acknowledged as stored.",
            )?,
            ring_lost: g.counter(
                "vigil_edge_uplink_ring_lost_total",
                "Samples that left the cache ring before an uplink took them.",
            )?,
        };
        for p in priorities {
            m.buffer_messages.with_label_values(&[p]);
        }
        Ok(m)
    }
}
