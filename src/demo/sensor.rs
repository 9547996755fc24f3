//! A simulated temperature sensor publishing straight to the edge over MQTT
//! (`{"value":…,"unit":"C"}` once a second). On demand it drifts upward, as
//! a failing cooling fan would, until told to stop.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_core::clock::now_ms;
use vigil_core::mqtt::Publisher;

/// Degrees per second while drifting.
pub const DRIFT_PER_SEC: f64 = 0.3;

/// Starts and stops the drift; shared with the injector.
#[derive(Clone, Default)]
pub struct Drift {
    since_ms: Arc<AtomicI64>,
}

impl Drift {
    /// Starts drifting now.
    pub fn start(&self) {
        self.since_ms.store(now_ms(), Ordering::Relaxed);
    }
    /// Back to normal.
    pub fn stop(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }
    fn offset(&self, now: i64) -> f64 {
        match self.since_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            since => DRIFT_PER_SEC * (now - since).max(0) as f64 / 1000.0,
        }
    }
}

/// The reading at `now_ms` with the given drift offset: 21 °C, a slow
/// 5-minute wave and a little deterministic noise.
pub fn reading(now: i64, drift: f64) -> f64 {
    let t = now as f64 / 1000.0;
    let noise = ((t * 12.9898).sin() * 43758.5453).fract() * 0.05;
    21.0 + 0.2 * (t * std::f64::consts::TAU / 300.0).sin() + noise + drift
}

/// Publishes one reading a second to `topic` until `shutdown`.
pub async fn run(publisher: Publisher, topic: String, drift: Drift, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let body = format!(
            r#"{{"value":{:.3},"unit":"C"}}"#,
            reading(now, drift.offset(now))
        );
        publisher
            .send_raw(&topic, "sensor", body.into_bytes(), false)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_stay_near_21_without_drift() {
        for i in 0..600 {
            let r = reading(i * 1000, 0.0);
            assert!((20.7..21.3).contains(&r), "{r}");
        }
        assert!(reading(0, 6.0) > 26.0);
    }
}
