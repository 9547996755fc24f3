//! Logging setup and the `/metrics` + `/healthz` HTTP surface every role serves.

use axum::{http::header, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Installs a stderr `tracing` subscriber; `RUST_LOG` overrides `default_filter`.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only on a terminal: escape codes make a redirected log unreadable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// One metric as the reference (docs/metrics.md) lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricDoc {
    /// The role that serves it (`all` for the shared MQTT link metrics).
    pub role: &'static str,
    /// Metric name.
    pub name: String,
    /// counter, gauge or histogram.
    pub kind: &'static str,
    /// Label names.
    pub labels: Vec<String>,
    /// Its help text.
    pub help: String,
}

/// Every metric registered through [`register`] in this process, by name.
static DOCUMENTED: std::sync::Mutex<std::collections::BTreeMap<String, MetricDoc>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Registers `metric` in `r` and notes it for the metric reference.
pub fn register<C>(r: &Registry, role: &'static str, metric: &C) -> prometheus::Result<()>
where
    C: prometheus::core::Collector + Clone + 'static,
{
    use prometheus::proto::MetricType;
    let families = metric.collect();
    if let Ok(mut docs) = DOCUMENTED.lock() {
        for (desc, family) in metric.desc().iter().zip(&families) {
            let kind = match family.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                MetricType::SUMMARY => "summary",
                MetricType::UNTYPED => "untyped",
            };
            docs.insert(
                desc.fq_name.clone(),
                MetricDoc {
                    role,
                    name: desc.fq_name.clone(),
                    kind,
                    labels: desc.variable_labels.clone(),
                    help: desc.help.clone(),
                },
            );
        }
    }
    r.register(Box::new(metric.clone()))
}

/// Buckets for detection and reaction delays, seconds.
pub const DELAY_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// One component's metrics in its role's registry: each made, documented
/// and registered in one call, so a component declares its own metrics
/// where it counts them and the role's metrics struct composes the groups.
#[derive(Clone, Copy)]
pub struct Group<'a> {
    registry: &'a Registry,
    role: &'static str,
}

impl<'a> Group<'a> {
    /// Metrics of `role` registered in `registry`.
    pub fn new(registry: &'a Registry, role: &'static str) -> Self {
        Self { registry, role }
    }

    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> prometheus::Result<C> {
        register(self.registry, self.role, &c)?;
        Ok(c)
    }

    /// A counter.
    pub fn counter(&self, name: &str, help: &str) -> prometheus::Result<prometheus::IntCounter> {
        self.add(prometheus::IntCounter::new(name, help)?)
    }

    /// An integer gauge.
    pub fn gauge(&self, name: &str, help: &str) -> prometheus::Result<prometheus::IntGauge> {
        self.add(prometheus::IntGauge::new(name, help)?)
    }

    /// A float gauge.
    pub fn float_gauge(&self, name: &str, help: &str) -> prometheus::Result<prometheus::Gauge> {
        self.add(prometheus::Gauge::new(name, help)?)
    }

    /// Counters by `labels`; each of `values` (of a single label) exists
    /// from the start, so dashboards and alerts see a 0 rather than no series.
    pub fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        values: &[&str],
    ) -> prometheus::Result<prometheus::IntCounterVec> {
        let c = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)?;
        for v in values {
            c.with_label_values(&[v]);
        }
        self.add(c)
    }

    /// Integer gauges by `labels`.
    pub fn gauges(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<prometheus::IntGaugeVec> {
        self.add(prometheus::IntGaugeVec::new(
            prometheus::Opts::new(name, help),
            labels,
        )?)
    }

    /// Float gauges by `labels`.
    pub fn float_gauges(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<prometheus::GaugeVec> {
        self.add(prometheus::GaugeVec::new(
            prometheus::Opts::new(name, help),
            labels,
        )?)
    }

    /// A histogram with `buckets`.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> prometheus::Result<prometheus::Histogram> {
        let opts = prometheus::HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(prometheus::Histogram::with_opts(opts)?)
    }
}

/// The metrics registered so far, by role then name.
pub fn documented() -> Vec<MetricDoc> {
    let mut v: Vec<MetricDoc> = DOCUMENTED
        .lock()
        .map(|d| d.values().cloned().collect())
        .unwrap_or_default();
    v.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
    v
}

/// The registry rendered in Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "Could not encode metrics.");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// A readiness check: `Ok` or why the role is not ready.
type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What `/healthz` reports: 200 and `ok` while every check passes, 503 and
/// each failing check's reason otherwise (a role that cannot reach its
/// broker is running but not doing its job, and says so).
#[derive(Clone, Default)]
pub struct Health {
    checks: std::sync::Arc<std::sync::Mutex<Vec<(String, Check)>>>,
}

impl Health {
    /// Adds a named check.
    pub fn add(&self, name: &str, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        if let Ok(mut c) = self.checks.lock() {
            c.push((name.to_string(), Box::new(check)));
        }
    }

    /// Whether every check passes, and the text `/healthz` answers.
    pub fn report(&self) -> (bool, String) {
        let Ok(checks) = self.checks.lock() else {
            return (false, "not ready: health checks unavailable\n".into());
        };
        let failing: Vec<String> = checks
            .iter()
            .filter_map(|(name, f)| f().err().map(|why| format!("{name}: {why}")))
            .collect();
        if failing.is_empty() {
            (true, "ok\n".into())
        } else {
            (false, format!("not ready: {}\n", failing.join("; ")))
        }
    }
}

/// A router serving `/metrics` from `registry` and `/healthz` from `health`.
pub fn router(registry: Registry, health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = render(&registry);
                async move {
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let (ready, text) = health.report();
                let status = if ready {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                };
                async move { (status, text).into_response() }
            }),
        )
}

/// For an API write: `Some(401 response)` unless `headers` carry
/// `Authorization: Bearer <token>`. With no token configured every write is
/// refused: an API that changes what runs on hosts is never open.
pub fn unauthorized(
    token: Option<&str>,
    headers: &axum::http::HeaderMap,
) -> Option<axum::response::Response> {
    let refuse =
        |why: &'static str| Some((axum::http::StatusCode::UNAUTHORIZED, why).into_response());
    let Some(token) = token else {
        return refuse("writes are disabled: no api_token is configured\n");
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same(given.as_bytes(), token.as_bytes()) {
        None
    } else {
        refuse("a bearer token is required (Authorization: Bearer <api_token>)\n")
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds a role's HTTP address, naming it in the error.
pub async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen} (in use? set `listen` in the config)"))
}

/// Spawns the role's HTTP server on `tracker`: `/metrics` from `registry`,
/// `/healthz` from `health`, plus the role's own `api` routes, until
/// `shutdown`.
pub fn spawn_server(
    tracker: &tokio_util::task::TaskTracker,
    listener: TcpListener,
    registry: &Registry,
    health: Health,
    api: Router,
    shutdown: &CancellationToken,
) {
    let app = router(registry.clone(), health).merge(api);
    tracker.spawn(serve(listener, app, shutdown.child_token()));
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Installs a `tracing` subscriber writing plain lines to `path` (for `vigil
/// up`, whose terminal shows the live summary instead).
pub fn init_tracing_to_file(default_filter: &str, path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, StatusCode};

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn writes_need_the_exact_token_and_no_token_means_no_writes() {
        let t = Some("0123456789abcdef");
        assert!(unauthorized(t, &with("Bearer 0123456789abcdef")).is_none());
        for bad in [
            "Bearer 0123456789abcdeg",
            "Bearer 0123456789abcde",
            "0123456789abcdef",
            "Basic x",
        ] {
            let r = unauthorized(t, &with(bad)).unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert!(unauthorized(t, &HeaderMap::new()).is_some());
        let r = unauthorized(None, &with("Bearer anything")).unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}
