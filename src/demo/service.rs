//! The demo HTTP service (`vigil demo-service --port N`): `/healthz` and
//! `/work` answer quickly until a fault is set through `POST /fault/{kind}`.
//! The fault lasts until the process is restarted, which is Vigil's job.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LATENCY: u8 = 1;
const HANG: u8 = 2;

/// Delay added to every answer during a latency fault.
pub const LATENCY_FAULT: Duration = Duration::from_millis(600);
/// Memory added per 100 ms during a memory-growth fault.
const GROWTH_STEP: usize = 4 * 1024 * 1024;
/// Memory growth stops here, so a demo left alone cannot exhaust the host.
const GROWTH_CAP: usize = 1024 * 1024 * 1024;

#[derive(Clone, Default)]
struct Faults {
    mode: Arc<AtomicU8>,
}

/// Serves the demo service on `127.0.0.1:port` until the process exits.
pub async fn run(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let app = Router::new()
        .route("/healthz", get(answer))
        .route("/work", get(work))
        .route("/fault/{kind}", post(fault))
        .with_state(Faults::default());
    axum::serve(listener, app).await?;
    Ok(())
}

async fn apply(f: &Faults) {
    match f.mode.load(Ordering::Relaxed) {
        LATENCY => tokio::time::sleep(LATENCY_FAULT).await,
        HANG => std::future::pending::<()>().await,
        _ => {}
    }
}

async fn answer(State(f): State<Faults>) -> &'static str {
    apply(&f).await;
    "ok\n"
}

async fn work(State(f): State<Faults>) -> String {
    apply(&f).await;
    // A little real CPU work per request.
    let mut h: u64 = 1469598103934665603;
    for i in 0..20_000u64 {
        h = (h ^ i).wrapping_mul(1099511628211);
    }
    format!("{h:x}\n")
}

async fn fault(State(f): State<Faults>, Path(kind): Path<String>) -> (StatusCode, String) {
    match kind.as_str() {
        "latency" => f.mode.store(LATENCY, Ordering::Relaxed),
        "hang" => f.mode.store(HANG, Ordering::Relaxed),
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
