//! Drives the demo service with real HTTP requests, about `rate` a second,
//! and counts answers and failures.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Requests in flight at most; beyond it the client skips a beat instead of
/// piling up against a hung service.
const MAX_IN_FLIGHT: usize = 32;

/// Counts shared with the console.
#[derive(Debug, Default)]
pub struct WorkloadStats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that failed or timed out.
    pub errors: AtomicU64,
}

/// A snapshot of the counts.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct WorkloadCounts {
    /// Requests sent.
    pub requests: u64,
    /// Failed or timed out.
    pub errors: u64,
}

impl WorkloadStats {
    /// The current counts.
    pub fn snapshot(&self) -> WorkloadCounts {
        WorkloadCounts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Sends GET `url` about `rate` times a second until `shutdown`.
pub async fn run(url: String, rate: u32, stats: Arc<WorkloadStats>, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "Demo workload could not build an HTTP client.");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= MAX_IN_FLIGHT {
            continue;
        }
        let (c, u, s) = (client.clone(), url.clone(), stats.clone());
        in_flight.spawn(async move {
            s.requests.fetch_add(1, Ordering::Relaxed);
            let ok = matches!(c.get(&u).send().await, Ok(r) if r.status().is_success());
            if !ok {
                s.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    in_flight.abort_all();
}
