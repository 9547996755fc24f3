//! Actions that call an API over HTTP: a generic webhook (failover through a
//! load balancer or DNS API, notify), a Kubernetes Deployment's scale
//! subresource, and Alertmanager's v2 alerts API.

use crate::catalog::K8sScale;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use vigil_core::message::Command;

/// In-cluster service account files (used when the catalog names none).
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How an attempt failed: worth another try (network, 5xx, 409, 429), or not
/// (a 4xx the same request will get again, nothing left to scale).
#[derive(Debug, PartialEq)]
pub enum Fail {
    /// Try again after a backoff.
    Retry(String),
    /// Stop now.
    Final(String),
}

impl Fail {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Fail::Retry(m) | Fail::Final(m) => m,
        }
    }
}

/// Fills `{param}` and `{target}` in a template, each value passed through
/// `escape` (percent-encoding in a URL, JSON string escaping in a body), so a
/// value from the network cannot change the request's shape.
pub fn fill(template: &str, cmd: &Command, escape: impl Fn(&str) -> String) -> String {
    let mut out = template.replace("{target}", &escape(cmd.target.as_str()));
    for (k, v) in &cmd.params {
        out = out.replace(&format!("{{{k}}}"), &escape(v));
    }
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The inside of a JSON string holding `v`.
pub fn json_escape(v: &str) -> String {
    let quoted = serde_json::Value::String(v.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

fn status_fail(what: &str, status: reqwest::StatusCode, body: &str) -> Fail {
    let msg = format!(
        "{what}: HTTP {status}: {}",
        body.trim().chars().take(300).collect::<String>()
    );
    if status.is_server_error() || status.as_u16() == 409 || status.as_u16() == 429 {
        Fail::Retry(msg)
    } else {
        Fail::Final(msg)
    }
}

fn send_fail(what: &str, e: reqwest::Error) -> Fail {
    Fail::Retry(format!("{what}: {e}"))
}

/// A generic HTTP call; the default body describes the command as JSON.
pub async fn http(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
    cmd: &Command,
    host: &str,
) -> Result<String, Fail> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| Fail::Final(format!("bad method {method:?}")))?;
    let url = fill(url, cmd, percent);
    let body = match body {
        Some(t) => fill(t, cmd, json_escape),
        None => serde_json::json!({
            "command_id": cmd.id, "action": cmd.action, "target": cmd.target,
            "params": cmd.params, "policy": cmd.policy, "host": host,
            "anomaly_id": cmd.anomaly_id, "issued_ms": cmd.issued_ms,
        })
        .to_string(),
    };
    let mut req = client
        .request(method.clone(), &url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let what = format!("{method} {url}");
    let resp = req.send().await.map_err(|e| send_fail(&what, e))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(format!("{what}: HTTP {status}"))
    } else {
        Err(status_fail(&what, status, &text))
    }
}

/// Posts one firing alert for the command's target to Alertmanager.
pub async fn alertmanager(
    client: &reqwest::Client,
    base: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    cmd: &Command,
    host: &str,
    now_ms: i64,
) -> Result<String, Fail> {
    let mut labels = labels.clone();
    labels
        .entry("alertname".into())
        .or_insert_with(|| "VigilRemediation".into());
    labels.insert("target".into(), cmd.target.to_string());
    labels.insert("policy".into(), cmd.policy.clone());
    labels.insert("host".into(), host.to_string());
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.clone(), fill(v, cmd, str::to_string)))
        .collect();
    let alert = serde_json::json!([{
        "labels": labels,
        "annotations": annotations,
        "startsAt": vigil_core::clock::rfc3339(now_ms),
        "generatorURL": format!("vigil://{host}/command/{}", cmd.id),
    }]);
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    let what = format!("POST {url}");
    let resp = client
        .post(&url)
        .json(&alert)
        .send()
        .await
        .map_err(|e| send_fail(&what, e))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(format!("alert {} sent to {base}", labels["alertname"]))
    } else {
        Err(status_fail(&what, status, &text))
    }
}

/// Reads the Deployment's scale, moves `spec.replicas` by the step within
/// min..=max, and writes it back with the resourceVersion it read (a
/// concurrent change gets 409 and a retry, not a lost update).
pub async fn k8s_scale(k: &K8sScale, timeout: Duration) -> Result<String, Fail> {
    let base = match &k.api_server {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => in_cluster_server().ok_or_else(|| {
            Fail::Final("no api_server and not in a cluster (KUBERNETES_SERVICE_HOST unset)".into())
        })?,
    };
    let token_path = k
        .token_file
        .clone()
        .unwrap_or_else(|| Path::new(SA_DIR).join("token"));
    let token = std::fs::read_to_string(&token_path)
        .map_err(|e| Fail::Final(format!("bearer token {}: {e}", token_path.display())))?;
    let client = k8s_client(k, timeout)?;
    let url = format!(
        "{base}/apis/apps/v1/namespaces/{}/deployments/{}/scale",
        percent(&k.namespace),
        percent(&k.deployment)
    );
    let auth = format!("Bearer {}", token.trim());
    let resp = client
        .get(&url)
        .header("authorization", &auth)
        .send()
        .await
        .map_err(|e| send_fail(&format!("GET {url}"), e))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(status_fail(&format!("GET {url}"), status, &text));
    }
    let mut scale: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| Fail::Final(format!("GET {url}: not a Scale object: {e}")))?;
    let current = scale["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| Fail::Final(format!("GET {url}: no spec.replicas")))?;
    let wanted = (current + k.step as i64).clamp(k.min_replicas as i64, k.max_replicas as i64);
    if wanted == current {
        return Err(Fail::Final(format!(
            "{}/{} is already at {current} replicas (limits {}..={})",
            k.namespace, k.deployment, k.min_replicas, k.max_replicas
        )));
    }
    scale["spec"]["replicas"] = wanted.into();
    let resp = client
        .put(&url)
        .header("authorization", &auth)
        .json(&scale)
        .send()
        .await
        .map_err(|e| send_fail(&format!("PUT {url}"), e))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(status_fail(&format!("PUT {url}"), status, &text));
    }
    Ok(format!(
        "scaled {}/{} from {current} to {wanted} replicas",
        k.namespace, k.deployment
    ))
}

fn in_cluster_server() -> Option<String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    Some(if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    })
}

/// A client that trusts the catalog's CA (or the service account's) for
/// the API server, on top of the system roots.
fn k8s_client(k: &K8sScale, timeout: Duration) -> Result<reqwest::Client, Fail> {
    let mut b = reqwest::Client::builder().timeout(timeout);
    let default_ca = Path::new(SA_DIR).join("ca.crt");
    let ca = k
        .ca_file
        .clone()
        .or_else(|| default_ca.exists().then_some(default_ca));
    if let Some(path) = ca {
        let pem = std::fs::read(&path)
            .map_err(|e| Fail::Final(format!("CA file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Fail::Final(format!(
                "CA file {}: not PEM certificates: {e}",
                path.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(Fail::Final(format!(
                "CA file {}: holds no certificate",
                path.display()
            )));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| Fail::Final(format!("building the HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::EntityId;

    #[test]
    fn values_cannot_change_the_request_shape() {
        let mut cmd = Command {
            id: "c".into(),
            action: "a".into(),
            target: EntityId::service("h", "web"),
            params: Default::default(),
            issued_ms: 0,
            expires_ms: 0,
            policy: "p".into(),
            anomaly_id: None,
            holder: String::new(),
            lease_token: None,
            lease_ms: 0,
            to: "h".into(),
            signature: None,
        };
        cmd.params.insert("zone".into(), "eu\",\"x\":\"1".into());
        let body = fill(r#"{"zone":"{zone}","t":"{target}"}"#, &cmd, json_escape);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["zone"], "eu\",\"x\":\"1");
        assert_eq!(v["t"], "service/h/web");
        assert!(v.get("x").is_none());
        let url = fill("http://lb/pools/{zone}?t={target}", &cmd, percent);
        assert_eq!(
            url,
            "http://lb/pools/eu%22%2C%22x%22%3A%221?t=service%2Fh%2Fweb"
        );
    }

    #[test]
    fn a_bad_ca_file_is_a_clear_final_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "not a certificate").unwrap();
        let k = K8sScale {
            api_server: Some("https://127.0.0.1:1".into()),
            namespace: "default".into(),
            deployment: "web".into(),
            token_file: None,
            ca_file: Some(ca),
            min_replicas: 1,
            max_replicas: 3,
            step: 1,
        };
        match k8s_client(&k, Duration::from_secs(1)) {
            Err(Fail::Final(m)) => assert!(m.contains("ca.crt"), "{m}"),
            other => panic!("expected a final error, got {other:?}"),
        }
    }
}
