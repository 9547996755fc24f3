//! The demo HTTP service (`vigil demo-service --port N`): `/healthz` and
//! `/work` answer quickly until a fault is set through `POST /fault/{kind}`.
//! The fault lasts until the process is restarted, which is Vigil's job.
//! It exports its own Prometheus metrics on `/metrics`, as real services
//! do (requests by route and code, a latency histogram); the `errors` fault
//! shows only there (`/work` answers 500, `/healthz` stays well).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use prometheus::{Encoder, HistogramVec, IntCounterVec, Registry};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LATENCY: u8 = 1;
const HANG: u8 = 2;
const ERRORS: u8 = 3;

/// Delay added to every answer during a latency fault.
pub const LATENCY_FAULT: Duration = Duration::from_millis(600);
/// Memory added per 100 ms during a memory-growth fault.
const GROWTH_STEP: usize = 4 * 1024 * 1024;
/// Memory growth stops here, so a demo left alone cannot exhaust the host.
const GROWTH_CAP: usize = 1024 * 1024 * 1024;

#[derive(Clone)]
struct Faults {
    mode: Arc<AtomicU8>,
    metrics: Metrics,
}

/// The service's own metrics, as a real service exports them.
#[derive(Clone)]
struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            prometheus::Opts::new(
                "demo_requests_total",
                "Requests answered, by route and code.",
            ),
            &["route", "code"],
        )?;
        let latency = HistogramVec::new(
            prometheus::HistogramOpts::new(
                "demo_request_duration_seconds",
                "Time to answer a request, by route.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        // Every route and code from the start, so a counter's rate exists
        // before its first error.
        for route in ["/healthz", "/work"] {
            for code in ["200", "500"] {
                requests.with_label_values(&[route, code]);
            }
            latency.with_label_values(&[route]);
        }
        Ok(Self {
            registry,
            requests,
            latency,
        })
    }

    fn answered(&self, route: &str, code: StatusCode, since: Instant) {
        self.requests
            .with_label_values(&[route, code.as_str()])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(since.elapsed().as_secs_f64());
    }
}

/// Serves the demo service on `127.0.0.1:port` until the process exits.
pub async fn run(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let faults = Faults {
        mode: Arc::default(),
        metrics: Metrics::new()?,
    };
    let app = Router::new()
        .route("/healthz", get(answer))
        .route("/work", get(work))
        .route("/metrics", get(metrics))
        .route("/fault/{kind}", post(fault))
        .with_state(faults);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn metrics(State(f): State<Faults>) -> (StatusCode, String) {
    let mut out = Vec::new();
    match prometheus::TextEncoder::new().encode(&f.metrics.registry.gather(), &mut out) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&out).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn apply(f: &Faults) {
    match f.mode.load(Ordering::Relaxed) {
        LATENCY => tokio::time::sleep(LATENCY_FAULT).await,
        HANG => std::future::pending::<()>().await,
        _ => {}
    }
}

async fn answer(State(f): State<Faults>) -> &'static str {
    let since = Instant::now();
    apply(&f).await;
    f.metrics.answered("/healthz", StatusCode::OK, since);
    "ok\n"
}

async fn work(State(f): State<Faults>) -> (StatusCode, String) {
    let since = Instant::now();
    apply(&f).await;
    // A little real CPU work per request.
    let mut h: u64 = 1469598103934665603;
    for i in 0..20_000u64 {
        h = (h ^ i).wrapping_mul(1099511628211);
    }
    let code = match f.mode.load(Ordering::Relaxed) {
        ERRORS => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    };
    f.metrics.answered("/work", code, since);
    (code, format!("{h:x}\n"))
}

async fn fault(State(f): State<Faults>, Path(kind): Path<String>) -> (StatusCode, String) {
    match kind.as_str() {
        "latency" => f.mode.store(LATENCY, Ordering::Relaxed),
        "hang" => f.mode.store(HANG, Ordering::Relaxed),
        "errors" => f.mode.store(ERRORS, Ordering::Relaxed),
        "crash" => {
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                std::process::exit(1);
            });
        }
        "memory_growth" => {
            tokio::spawn(async {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                while hoard.len() * GROWTH_STEP < GROWTH_CAP {
                    // Filled with ones so the pages are really resident.
                    hoard.push(vec![1u8; GROWTH_STEP]);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                std::future::pending::<()>().await;
            });
        }
        other => return (StatusCode::NOT_FOUND, format!("unknown fault {other:?}\n")),
    }
    (StatusCode::OK, format!("fault {kind} set\n"))
}
