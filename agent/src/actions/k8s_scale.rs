//! `k8s_scale`: scale a Kubernetes Deployment through its scale
//! subresource, within the catalog's replica limits.

use super::template::percent;
use super::{fail, Check, Context, Fail, Kind, RawAction};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_core::message::Command;

/// In-cluster service account files (used when the catalog names none).
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Scale a Kubernetes Deployment through its scale subresource.
#[derive(Clone, Debug, PartialEq)]
pub struct K8sScale {
    /// API server URL; default: the in-cluster one
    /// (`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    pub api_server: Option<String>,
    /// Namespace of the Deployment.
    pub namespace: String,
    /// Deployment name.
    pub deployment: String,
    /// Bearer token file; default: the in-cluster service account's.
    pub token_file: Option<PathBuf>,
    /// CA bundle (PEM) that signs the API server's certificate; default: the
    /// in-cluster service account's, when present.
    pub ca_file: Option<PathBuf>,
    /// Never scale below this many replicas.
    pub min_replicas: u32,
    /// Never scale above this many replicas.
    pub max_replicas: u32,
    /// Replicas added per action (negative scales down).
    pub step: i32,
}

impl Kind for K8sScale {
    const NAME: &'static str = "k8s_scale";
    const FIELDS: &'static [&'static str] = &[
        "api_server",
        "namespace",
        "deployment",
        "token_file",
        "ca_file",
        "min_replicas",
        "max_replicas",
        "step",
    ];

    fn from_raw(r: &RawAction) -> Result<Self, String> {
        Ok(Self {
            api_server: r.api_server.clone(),
            namespace: r.need(&r.namespace, "namespace")?,
            deployment: r.need(&r.deployment, "deployment")?,
            token_file: r.token_file.clone(),
            ca_file: r.ca_file.clone(),
            min_replicas: r.min_replicas.unwrap_or(1),
            max_replicas: r.need(&r.max_replicas, "max_replicas")?,
            step: r.step.unwrap_or(1),
        })
    }

    fn into_raw(self, r: &mut RawAction) {
        (r.api_server, r.namespace, r.deployment) =
            (self.api_server, Some(self.namespace), Some(self.deployment));
        (r.token_file, r.ca_file) = (self.token_file, self.ca_file);
        (r.min_replicas, r.max_replicas, r.step) = (
            Some(self.min_replicas),
            Some(self.max_replicas),
            Some(self.step),
        );
    }

    fn validate(&self, c: &Check<'_>, e: &mut Vec<String>) {
        if self.min_replicas > self.max_replicas {
            e.push(c.problem(format!(
                "min_replicas {} is above max_replicas {}",
                self.min_replicas, self.max_replicas
            )));
        }
        if self.step == 0 {
            e.push(c.problem("step must not be 0"));
        }
        if let Some(url) = &self.api_server {
            c.url(url, e);
        }
    }

    async fn run(&self, ctx: &Context<'_>, _cmd: &Command) -> Result<String, Fail> {
        scale(self, ctx.timeout).await
    }
}

/// Reads the Deployment's scale, moves `spec.replicas` by the step within
/// min..=max, and writes it back with the resourceVersion it read (a
/// concurrent change gets 409 and a retry, not a lost update).
async fn scale(k: &K8sScale, timeout: Duration) -> Result<String, Fail> {
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
    let get = client.get(&url).header("authorization", &auth);
    let resp = fail::call(&format!("GET {url}"), get).await?;
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
    let put = client.put(&url).header("authorization", &auth).json(&scale);
    fail::call(&format!("PUT {url}"), put).await?;
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
