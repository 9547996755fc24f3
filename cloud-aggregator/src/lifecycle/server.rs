//! The MQTT side of releases: publishes the family's signed release
//! (retained), answers chunk requests, and publishes the release again after
//! every reconnect, since a restarted broker may have lost what it retained.
//! Chunks sent in the last half second are not sent again, so a hundred
//! edges asking at once cost one copy (every edge fetching the release
//! subscribes to its chunks).

use super::hub::Hub;
use super::LifecycleMetrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use vigil_core::message::{ChunkRequest, SignedRelease};
use vigil_core::mqtt::Publisher;
use vigil_core::{encode, topic};

/// Work for the release server.
#[derive(Debug)]
pub enum Job {
    /// Publish this release (retained).
    Release(SignedRelease),
    /// Send the chunks asked for.
    Chunks(ChunkRequest),
}

/// How long a sent chunk counts as fresh for every edge waiting on it.
const RESEND_AFTER: Duration = Duration::from_millis(500);

/// Runs until `shutdown`.
pub async fn serve(
    hub: Arc<Mutex<Hub>>,
    publisher: Publisher,
    mut jobs: mpsc::Receiver<Job>,
    metrics: LifecycleMetrics,
    shutdown: CancellationToken,
) {
    // Both are fixed for the life of the aggregator.
    let (family, chunk) = hub
        .lock()
        .map(|h| (h.config().family.clone(), h.config().chunk_bytes.max(1)))
        .unwrap_or_else(|_| (String::new(), 1));
    let mut sent: HashMap<(u64, u32), Instant> = HashMap::new();
    let mut seen_connections = 0;
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            job = jobs.recv() => match job {
                Some(Job::Release(r)) => publish_release(&publisher, &family, &r).await,
                Some(Job::Chunks(req)) => {
                    let bytes = hub.lock().ok().and_then(|mut h| h.bytes(req.version));
                    let Some(bytes) = bytes else {
                        debug!(version = req.version, node = %req.node, "Chunks asked of an unknown release.");
                        continue;
                    };
                    sent.retain(|_, t| t.elapsed() < RESEND_AFTER);
                    for &i in &req.chunks {
                        let start = i as usize * chunk;
                        if start >= bytes.len() || sent.contains_key(&(req.version, i)) {
                            continue;
                        }
                        let part = bytes[start..(start + chunk).min(bytes.len())].to_vec();
                        let t = topic::model_chunk(&family, req.version, i);
                        if publisher.send_raw(&t, "chunk", part, false).await {
                            metrics.chunks_sent.inc();
                            sent.insert((req.version, i), Instant::now());
                        }
                    }
                }
                None => break,
            },
            _ = check.tick() => {
                let now = publisher.connections();
                if now != seen_connections && publisher.is_connected() {
                    seen_connections = now;
                    let current = hub.lock().ok().and_then(|h| h.release().cloned());
                    if let Some(r) = current {
                        publish_release(&publisher, &family, &r).await;
                    }
                }
            }
        }
    }
}

async fn publish_release(publisher: &Publisher, family: &str, r: &SignedRelease) {
    let t = topic::model_release(family);
    if !publisher.send_raw(&t, "release", encode(r), true).await {
        warn!(topic = %t, "Could not publish the model release; it goes out again on reconnect.");
    }
}
