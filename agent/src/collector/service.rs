//! Per-service checks: is the process alive, its CPU and RSS, and an HTTP
//! health probe with status and latency.

use std::time::{Duration, Instant};
use vigil_core::message::Sample;
use vigil_core::EntityId;

/// Result of one HTTP health probe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probe {
    /// 1 for a 2xx answer, else 0.
    pub ok: f64,
    /// HTTP status, 0 when there was no answer.
    pub status: f64,
    /// Seconds until the answer or the failure (the timeout when it hung).
    pub latency_seconds: f64,
}

/// Runs HTTP health probes with one shared client.
#[derive(Clone)]
pub struct ServiceChecker {
    client: reqwest::Client,
}

impl ServiceChecker {
    /// A checker; per-probe timeouts come from each service's config.
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Self { client })
    }

    /// GETs `url` within `timeout`.
    pub async fn probe(&self, url: &str, timeout: Duration) -> Probe {
        let start = Instant::now();
        let res = self.client.get(url).timeout(timeout).send().await;
        let latency_seconds = start.elapsed().as_secs_f64();
        match res {
            Ok(r) => Probe {
                ok: if r.status().is_success() { 1.0 } else { 0.0 },
                status: r.status().as_u16() as f64,
                latency_seconds,
            },
            Err(_) => Probe {
                ok: 0.0,
                status: 0.0,
                latency_seconds,
            },
        }
    }
}

/// Every metric a service check can give.
pub const METRICS: [&str; 6] = [
    "up",
    "cpu_percent",
    "rss_bytes",
    "http_ok",
    "http_status",
    "http_latency_seconds",
];

/// The samples of one service check.
pub fn samples(
    host: &str,
    service: &str,
    ts_ms: i64,
    alive: bool,
    process: Option<crate::collector::host::ProcessStats>,
    probe: Option<Probe>,
) -> Vec<Sample> {
    let entity = EntityId::service(host, service);
    let mut out = vec![Sample {
        entity: entity.clone(),
        metric: "up".into(),
        ts_ms,
        value: if alive { 1.0 } else { 0.0 },
    }];
    let mut push = |metric: &str, value: f64| {
        out.push(Sample {
            entity: entity.clone(),
            metric: metric.into(),
            ts_ms,
            value,
        })
    };
    if let Some(p) = process {
        push("cpu_percent", p.cpu_percent);
        push("rss_bytes", p.rss_bytes);
    }
    if let Some(p) = probe {
        push("http_ok", p.ok);
        push("http_status", p.status);
        push("http_latency_seconds", p.latency_seconds);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{routing::get, Router};

    #[tokio::test]
    async fn probe_reports_status_and_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/ok", get(|| async { "ok" })).route(
            "/bad",
            get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "no") }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let c = ServiceChecker::new().unwrap();
        let ok = c
            .probe(&format!("http://{addr}/ok"), Duration::from_secs(2))
            .await;
        assert_eq!((ok.ok, ok.status), (1.0, 200.0));
        let bad = c
            .probe(&format!("http://{addr}/bad"), Duration::from_secs(2))
            .await;
        assert_eq!((bad.ok, bad.status), (0.0, 503.0));
        // A port nobody listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let refused = c
            .probe(&format!("http://{free}/"), Duration::from_secs(2))
            .await;
        assert_eq!((refused.ok, refused.status), (0.0, 0.0));
    }

    #[test]
    fn dead_service_reports_only_up_zero() {
        let s = samples("h", "web", 1, false, None, None);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].metric.as_str(), s[0].value), ("up", 0.0));
    }
}
