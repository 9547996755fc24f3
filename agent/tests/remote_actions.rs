//! The HTTP actions against stand-in servers that speak the real protocols:
//! Kubernetes' scale subresource (`/apis/apps/v1/namespaces/{ns}/deployments/
//! {name}/scale`, a `Scale` object with a resourceVersion, bearer auth, 409 on
//! a stale write) and Alertmanager's `POST /api/v2/alerts`. No cluster and no
//! Alertmanager run here; the stand-ins check what the real ones check.
#![cfg(test)]

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil_agent::breaker::BreakerConfig;
use vigil_agent::executor::Executor;
use vigil_agent::ledger::Ledger;
use vigil_agent::supervisor::Supervisor;
use vigil_agent::Catalog;
use vigil_core::clock::now_ms;
use vigil_core::message::{Command, Outcome};
use vigil_core::EntityId;

const TOKEN: &str = "sa-token-123";

#[derive(Default)]
struct Cluster {
    /// (namespace, name) → (replicas, resourceVersion).
    deployments: BTreeMap<(String, String), (i64, u64)>,
    /// Bump the resourceVersion after the next GET (a concurrent writer).
    race_next_get: bool,
    writes: Vec<Value>,
    received: Vec<Value>,
}

type Shared = Arc<Mutex<Cluster>>;

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Json<Value>) {
    // A metav1.Status, as the API server answers errors.
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, Json(body))
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn scale_object(ns: &str, name: &str, replicas: i64, rv: u64) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv.to_string()},
        "spec": {"replicas": replicas}, "status": {"replicas": replicas, "selector": format!("app={name}")}})
}

async fn get_scale(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
) -> (StatusCode, Json<Value>) {
    if !authorized(&h) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let mut c = s.lock().unwrap();
    let race = std::mem::take(&mut c.race_next_get);
    let Some(d) = c.deployments.get_mut(&(ns.clone(), name.clone())) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("deployments.apps \"{name}\" not found"),
        );
    };
    let out = scale_object(&ns, &name, d.0, d.1);
    if race {
        d.1 += 1;
    }
    (StatusCode::OK, Json(out))
}

async fn put_scale(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&h) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let mut c = s.lock().unwrap();
    c.writes.push(body.clone());
    let Some(d) = c.deployments.get_mut(&(ns.clone(), name.clone())) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    if body["kind"] != "Scale" || body["metadata"]["name"] != name.as_str() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "not a Scale for this deployment",
        );
    }
    let Some(replicas) = body["spec"]["replicas"].as_i64() else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.replicas missing",
        );
    };
    if body["metadata"]["resourceVersion"] != d.1.to_string().as_str() {
        return status(StatusCode::CONFLICT, "Conflict",
            "Operation cannot be fulfilled on deployments.apps: the object has been modified; please apply your changes to the latest version and try again");
    }
    *d = (replicas, d.1 + 1);
    (StatusCode::OK, Json(scale_object(&ns, &name, d.0, d.1)))
}

async fn post_alerts(
    State(s): State<Shared>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    // postableAlerts: an array of {labels (required, string map), annotations,
    // startsAt, endsAt, generatorURL}.
    let Some(alerts) = body.as_array() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!("body must be an array of alerts")),
        );
    };
    for a in alerts {
        let labels_ok = a["labels"]
            .as_object()
            .is_some_and(|l| !l.is_empty() && l.values().all(Value::is_string));
        let starts_ok = a["startsAt"]
            .as_str()
            .is_some_and(|t| t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T');
        if !labels_ok || !starts_ok {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!(format!("invalid alert {a}"))),
            );
        }
    }
    s.lock().unwrap().received.extend(alerts.iter().cloned());
    (StatusCode::OK, Json(Value::Null))
}

async fn serve(state: Shared) -> String {
    let path = "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale";
    let app = Router::new()
        .route(path, get(get_scale).put(put_scale))
        .route("/api/v2/alerts", post(post_alerts))
        .with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

fn executor(catalog: &str) -> Executor {
    let catalog = Catalog::parse(catalog, std::path::Path::new("catalog.yaml"), &[]).unwrap();
    Executor::new(
        "h1".into(),
        catalog,
        Arc::new(tokio::sync::Mutex::new(Supervisor::default())),
        Duration::from_secs(10),
        Ledger::in_memory(),
        BreakerConfig {
            failures: 10,
            open_secs: 60,
        },
    )
}

fn command(id: &str, action: &str) -> Command {
    Command {
        id: id.into(),
        action: action.into(),
        target: EntityId::service("h1", "web"),
        params: Default::default(),
        issued_ms: now_ms(),
        expires_ms: now_ms() + 30_000,
        policy: "pool-exhausted".into(),
        anomaly_id: None,
        holder: "site-1/edge-1".into(),
        lease_token: None,
        lease_ms: 60_000,
        to: "h1".into(),
        signature: None,
    }
}

#[tokio::test]
async fn k8s_scale_moves_replicas_within_limits_through_the_scale_subresource() {
    let state: Shared = Arc::default();
    state
        .lock()
        .unwrap()
        .deployments
        .insert(("shop".into(), "web".into()), (2, 100));
    let url = serve(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let bad = dir.path().join("bad-token");
    std::fs::write(&bad, "nope").unwrap();
    let mut ex = executor(&format!(
        "actions:
  scale-up: {{ kind: k8s_scale, api_server: {url:?}, namespace: shop, deployment: web, token_file: {:?}, min_replicas: 1, max_replicas: 4, step: 1, retry_backoff_ms: 10 }}
  scale-ghost: {{ kind: k8s_scale, api_server: {url:?}, namespace: shop, deployment: ghost, token_file: {:?}, max_replicas: 4, retry_backoff_ms: 10 }}
  scale-noauth: {{ kind: k8s_scale, api_server: {url:?}, namespace: shop, deployment: web, token_file: {:?}, max_replicas: 4, retry_backoff_ms: 10 }}
",
        token.display(),
        token.display(),
        bad.display()
    ));
    let r = ex.handle(&command("k1", "scale-up")).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.detail);
    assert!(r.detail.contains("from 2 to 3"), "{}", r.detail);
    // A concurrent writer bumps the resourceVersion between GET and PUT:
    // the stale write gets 409 and is retried on a fresh read.
    state.lock().unwrap().race_next_get = true;
    let r = ex.handle(&command("k2", "scale-up")).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.detail);
    assert!(
        r.detail.contains("from 3 to 4") && r.detail.contains("after 1 failed"),
        "{}",
        r.detail
    );
    // At max_replicas: nothing to do, no retries, so the edge escalates.
    let r = ex.handle(&command("k3", "scale-up")).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(
        r.detail.starts_with("1 attempts failed") && r.detail.contains("already at 4"),
        "{}",
        r.detail
    );
    assert_eq!(
        state.lock().unwrap().deployments[&("shop".into(), "web".into())].0,
        4
    );
    // Unknown deployment and a wrong token: final errors with the API's words.
    let r = ex.handle(&command("k4", "scale-ghost")).await;
    assert!(
        r.detail.contains("404") && r.detail.contains("not found"),
        "{}",
        r.detail
    );
    let r = ex.handle(&command("k5", "scale-noauth")).await;
    assert!(
        r.detail.starts_with("1 attempts failed") && r.detail.contains("401"),
        "{}",
        r.detail
    );
    // Every write was a whole Scale object carrying the version it read.
    let writes = state.lock().unwrap().writes.clone();
    assert_eq!(writes.len(), 3);
    assert!(writes
        .iter()
        .all(|w| w["kind"] == "Scale" && w["metadata"]["resourceVersion"].is_string()));
}

#[tokio::test]
async fn alertmanager_gets_a_v2_alert_with_the_target_and_policy() {
    let state: Shared = Arc::default();
    let url = serve(state.clone()).await;
    let mut ex = executor(&format!(
        "actions:
  page-ops: {{ kind: alertmanager, url: {url:?}, labels: {{ severity: page, team: sre }}, annotations: {{ summary: \"{{target}} keeps failing\" }} }}
"
    ));
    let r = ex.handle(&command("a1", "page-ops")).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.detail);
    let got = state.lock().unwrap().received.clone();
    assert_eq!(got.len(), 1);
    let l = &got[0]["labels"];
    assert_eq!(l["alertname"], "VigilRemediation");
    assert_eq!(l["severity"], "page");
    assert_eq!(l["target"], "service/h1/web");
    assert_eq!(l["policy"], "pool-exhausted");
    assert_eq!(l["host"], "h1");
    assert_eq!(
        got[0]["annotations"]["summary"],
        "service/h1/web keeps failing"
    );
}

#[tokio::test]
async fn http_webhook_retries_a_server_error_and_fills_declared_params() {
    #[derive(Default)]
    struct Hook {
        calls: Vec<(String, Value)>,
    }
    let hook: Arc<Mutex<Hook>> = Arc::default();
    let h = hook.clone();
    let app = Router::new().route(
        "/{*path}",
        post(
            move |Path(path): Path<String>, headers: HeaderMap, Json(body): Json<Value>| {
                let h = h.clone();
                async move {
                    let mut g = h.lock().unwrap();
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    g.calls.push((format!("{path} {auth}"), body));
                    // The load balancer is briefly unavailable on the first call.
                    if g.calls.len() == 1 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let mut ex = executor(&format!(
        "actions:
  failover: {{ kind: http, url: \"{url}/pools/{{zone}}/failover\", headers: {{ Authorization: \"Bearer lb\" }}, body: '{{\"to\": \"{{zone}}\", \"target\": \"{{target}}\"}}', params: [zone], retry_backoff_ms: 10 }}
  notify: {{ kind: http, url: \"{url}/hook\" }}
"
    ));
    let mut c = command("w1", "failover");
    c.params.insert("zone".into(), "eu-west-2".into());
    let r = ex.handle(&c).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.detail);
    let r = ex.handle(&command("w2", "notify")).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.detail);
    let calls = hook.lock().unwrap().calls.clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[1].0, "pools/eu-west-2/failover Bearer lb");
    assert_eq!(
        calls[1].1,
        json!({"to": "eu-west-2", "target": "service/h1/web"})
    );
    // The generic webhook's default body describes the command.
    assert_eq!(calls[2].1["action"], "notify");
    assert_eq!(calls[2].1["target"], "service/h1/web");
    assert_eq!(calls[2].1["host"], "h1");
}
