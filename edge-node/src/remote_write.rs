//! Prometheus remote write 1.0 into the edge (`POST /api/v1/write`): an
//! existing Prometheus sends the series it scrapes, and the edge caches and
//! scores them like its agents' ([`convert`]: entities from `instance` and
//! `job`, counters as rates, bounded cardinality). The request must carry
//! the edge's `api_token` as a bearer token. Answers are the ones
//! Prometheus acts on: 204 taken; 400 for data it should drop (a body that
//! is not snappy or not a `WriteRequest`, or series past `max_series`,
//! whose other series are taken); 401 without the token; 413 too large;
//! 415 for another content type or protocol (remote write 2.0 falls back to
//! 1.0 on it); 503 while the edge's queue is full (64 requests or 64 MiB of
//! samples), which Prometheus retries.

pub mod convert;
mod metrics;
pub mod proto;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use convert::Converter;
pub use metrics::RemoteWriteMetrics;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::warn;
use vigil_core::message::Sample;
use vigil_core::ratelog::RateLog;

/// Requests waiting for the edge's run loop; beyond it the edge answers 503.
pub const QUEUE: usize = 64;
/// Most bytes of samples waiting for the run loop; beyond it, 503 too.
pub const QUEUE_BYTES: usize = 64 << 20;

/// Samples on their way to the run loop. Their bytes count against
/// [`QUEUE_BYTES`] until the run loop has taken them (and drops this).
#[derive(Debug)]
pub struct Handoff {
    /// The samples.
    pub samples: Vec<Sample>,
    held: Held,
}

impl Handoff {
    /// The samples, and the guard that frees their bytes when dropped.
    pub fn take(self) -> (Vec<Sample>, impl Drop) {
        (self.samples, self.held)
    }
}

#[derive(Debug)]
struct Held {
    bytes: usize,
    total: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Remote-write settings (`remote_write:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    /// Serve `POST /api/v1/write` (needs `api_token`).
    pub enabled: bool,
    /// Most series taken; new ones past it are refused (400) and counted.
    pub max_series: usize,
    /// Largest request body (snappy-compressed), bytes; its decompressed
    /// size may be at most four times this.
    pub max_body_bytes: usize,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_series: 10_000,
            max_body_bytes: 8 << 20,
        }
    }
}

impl RemoteWriteConfig {
    /// Every problem, given whether the edge has an `api_token`.
    pub fn validate(&self, has_token: bool, e: &mut Vec<String>) {
        if self.enabled && !has_token {
            e.push("remote_write.enabled: needs api_token (Prometheus sends it: remote_write.authorization.credentials)".into());
        }
        if self.max_series == 0 || self.max_series > 1_000_000 {
            e.push(format!(
                "remote_write.max_series: {} is outside 1..=1000000",
                self.max_series
            ));
        }
        if !(1024..=256 << 20).contains(&self.max_body_bytes) {
            e.push(format!(
                "remote_write.max_body_bytes: {} is outside 1024..=268435456",
                self.max_body_bytes
            ));
        }
    }
}

/// What the handler shares.
struct Intake {
    token: Option<String>,
    max_body: usize,
    converter: Mutex<Converter>,
    to_edge: mpsc::Sender<Handoff>,
    /// Bytes of samples handed over and not yet taken...
    queued: Arc<AtomicUsize>,
    /// ...and the most there may be.
    max_queued: usize,
    metrics: RemoteWriteMetrics,
    ratelog: Mutex<RateLog>,
}

/// The route, handing what it takes to `to_edge`.
pub fn router(
    config: &RemoteWriteConfig,
    token: Option<String>,
    to_edge: mpsc::Sender<Handoff>,
    metrics: RemoteWriteMetrics,
) -> Router {
    route(config, token, (to_edge, QUEUE_BYTES), metrics)
}

/// [`router`] with `max_queued` bytes of samples waiting at most.
fn route(
    config: &RemoteWriteConfig,
    token: Option<String>,
    (to_edge, max_queued): (mpsc::Sender<Handoff>, usize),
    metrics: RemoteWriteMetrics,
) -> Router {
    let intake = Arc::new(Intake {
        token,
        max_body: config.max_body_bytes,
        converter: Mutex::new(Converter::new(config.max_series)),
        to_edge,
        queued: Arc::default(),
        max_queued,
        metrics,
        ratelog: Mutex::default(),
    });
    Router::new()
        .route("/api/v1/write", post(write))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(intake)
}

async fn write(State(i): State<Arc<Intake>>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, outcome, why) = match take(&i, &headers, body).await {
        Ok(None) => (StatusCode::NO_CONTENT, "ok", String::new()),
        Ok(Some(why)) => (StatusCode::BAD_REQUEST, "partial", why),
        Err((status, outcome, why)) => (status, outcome, why),
    };
    i.metrics.requests.with_label_values(&[outcome]).inc();
    if !why.is_empty() {
        let allowed = i.ratelog.lock().ok().and_then(|mut r| r.allow(outcome));
        if let Some(skipped) = allowed {
            warn!(
                status = status.as_u16(),
                outcome, why, skipped, "Remote write refused."
            );
        }
    }
    (status, why).into_response()
}

type Refused = (StatusCode, &'static str, String);

/// Checks, decodes and hands over one request; `Ok(Some(why))` when some
/// of its series were refused.
async fn take(
    i: &Arc<Intake>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Option<String>, Refused> {
    if vigil_core::telemetry::unauthorized(i.token.as_deref(), headers).is_some() {
        return Err((
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token (the edge's api_token) is required".into(),
        ));
    }
    let header = |h| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (kind, params) = header(header::CONTENT_TYPE)
        .split_once(';')
        .unwrap_or((header(header::CONTENT_TYPE), ""));
    let proto = params
        .split(';')
        .find_map(|p| p.trim().strip_prefix("proto="))
        .unwrap_or("prometheus.WriteRequest");
    if kind.trim() != "application/x-protobuf" || proto != "prometheus.WriteRequest" {
        let why = format!("content type {:?}: only application/x-protobuf (remote write 1.0, prometheus.WriteRequest) is taken", header(header::CONTENT_TYPE));
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type", why));
    }
    if !header(header::CONTENT_ENCODING).eq_ignore_ascii_case("snappy") {
        let why = "Content-Encoding must be snappy".to_string();
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type", why));
    }
    let intake = i.clone();
    let max = 4 * i.max_body;
    let converted = tokio::task::spawn_blocking(move || {
        let len = snap::raw::decompress_len(&body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                "bad_snappy",
                format!("not snappy: {e}"),
            )
        })?;
        if len > max {
            let why = format!("{len} bytes decompressed, more than {max}");
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "too_large", why));
        }
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    "bad_snappy",
                    format!("not snappy: {e}"),
                )
            })?;
        let req = proto::WriteRequest::decode(raw.as_slice()).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                "bad_protobuf",
                format!("not a WriteRequest: {e}"),
            )
        })?;
        let mut c = intake.converter.lock().map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                "converter poisoned".to_string(),
            )
        })?;
        let out = c.convert(&req, vigil_core::clock::now_ms());
        intake.metrics.series.set(c.series() as i64);
        Ok(out)
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, "failed", e.to_string()))??;
    for (why, n) in &converted.refused {
        i.metrics
            .refused
            .with_label_values(&[why.as_str()])
            .inc_by(*n);
    }
    let n = converted.samples.len() as u64;
    if !converted.samples.is_empty() {
        let bytes = converted.samples.iter().map(Sample::held_bytes).sum();
        let held = Held {
            bytes,
            total: i.queued.clone(),
        };
        let busy = i.queued.fetch_add(bytes, Ordering::Relaxed) + bytes > i.max_queued;
        let handoff = Handoff {
            samples: converted.samples,
            held,
        };
        // Refused, the handoff is dropped and its bytes freed.
        if busy || i.to_edge.try_send(handoff).is_err() {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the edge is busy; send again".into(),
            ));
        }
    }
    i.metrics.samples.inc_by(n);
    Ok(converted
        .refused
        .get(&convert::Refusal::Cardinality)
        .map(|n| format!("{n} samples of new series past remote_write.max_series refused; the others were taken")))
}

#[cfg(test)]
mod tests;
