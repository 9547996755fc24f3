//! A small client for etcd's v3 API through its JSON gateway (`/v3/…`, the
//! HTTP face every etcd ≥ 3.4 serves beside gRPC): leases, a create-if-absent
//! transaction, reads and deletes by prefix. Keys and values travel base64
//! encoded, as the gateway wants; 64-bit numbers arrive as strings.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// An etcd cluster, reached at any of its endpoints.
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    current: AtomicUsize,
}

/// One key and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// The lease it is bound to (0: none).
    pub lease: i64,
}

impl Etcd {
    /// A client for `endpoints` (e.g. `http://127.0.0.1:2379`) that gives up
    /// on a request after `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            endpoints: endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
        })
    }

    /// The endpoints, for messages.
    pub fn endpoints(&self) -> String {
        self.endpoints.join(", ")
    }

    /// Posts `body` to `path` at the endpoint that answered last, then at the
    /// others in turn.
    async fn call(&self, path: &str, body: Value) -> Result<Value, String> {
        let n = self.endpoints.len().max(1);
        let first = self.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..n {
            let at = (first + i) % n;
            let Some(endpoint) = self.endpoints.get(at) else {
                break;
            };
            let sent = self
                .http
                .post(format!("{endpoint}{path}"))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    self.current.store(at, Ordering::Relaxed);
                    return r.json().await.map_err(|e| format!("{endpoint}: {e}"));
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    errors.push(format!("{endpoint}: {status} {}", text.trim()));
                }
                Err(e) => errors.push(format!("{endpoint}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// Grants a lease of `ttl_secs`; its id.
    pub async fn grant(&self, ttl_secs: u64) -> Result<i64, String> {
        let r = self
            .call("/v3/lease/grant", json!({ "TTL": ttl_secs }))
            .await?;
        int(&r["ID"]).ok_or_else(|| format!("no lease id in {r}"))
    }

    /// Renews lease `id`; its time left, 0 when it has expired.
    pub async fn keepalive(&self, id: i64) -> Result<i64, String> {
        let r = self
            .call("/v3/lease/keepalive", json!({ "ID": id.to_string() }))
            .await?;
        Ok(int(&r["result"]["TTL"]).unwrap_or(0))
    }

    /// Ends lease `id` now: its keys go at once.
    pub async fn revoke(&self, id: i64) -> Result<(), String> {
        self.call("/v3/lease/revoke", json!({ "ID": id.to_string() }))
            .await
            .map(|_| ())
    }

    /// Creates `key` = `value` (bound to `lease` unless 0) if no such key
    /// exists; whether it did.
    pub async fn create(&self, key: &str, value: &str, lease: i64) -> Result<bool, String> {
        let mut put = json!({ "key": B64.encode(key), "value": B64.encode(value) });
        if lease != 0 {
            put["lease"] = json!(lease.to_string());
        }
        let r = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{
                        "key": B64.encode(key),
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": "0"
                    }],
                    "success": [{ "request_put": put }]
                }),
            )
            .await?;
        Ok(r["succeeded"].as_bool().unwrap_or(false))
    }

    /// Creates every one of `keys` (= `value`, on `lease`) and sets every
    /// one of `puts` (no lease), all in one transaction, if none of `keys`
    /// exists; whether it did. (etcd takes 128 operations a transaction by
    /// default: keep `keys` and `puts` within it.)
    pub async fn create_all(
        &self,
        keys: &[String],
        value: &str,
        lease: i64,
        puts: &[(String, String)],
    ) -> Result<bool, String> {
        let compare: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({
                    "key": B64.encode(k),
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": "0"
                })
            })
            .collect();
        let mut success: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({ "request_put": {
                    "key": B64.encode(k),
                    "value": B64.encode(value),
                    "lease": lease.to_string()
                }})
            })
            .collect();
        success.extend(puts.iter().map(
            |(k, v)| json!({ "request_put": { "key": B64.encode(k), "value": B64.encode(v) } }),
        ));
        let r = self
            .call(
                "/v3/kv/txn",
                json!({ "compare": compare, "success": success }),
            )
            .await?;
        Ok(r["succeeded"].as_bool().unwrap_or(false))
    }

    /// Sets `key` = `value`, with no lease.
    pub async fn put(&self, key: &str, value: &str) -> Result<(), String> {
        self.call(
            "/v3/kv/put",
            json!({ "key": B64.encode(key), "value": B64.encode(value) }),
        )
        .await
        .map(|_| ())
    }

    /// Every key that starts with `prefix`.
    pub async fn prefix(&self, prefix: &str) -> Result<Vec<Kv>, String> {
        let r = self
            .call(
                "/v3/kv/range",
                json!({ "key": B64.encode(prefix), "range_end": B64.encode(range_end(prefix)) }),
            )
            .await?;
        let kvs = r["kvs"].as_array().cloned().unwrap_or_default();
        let text = |v: &Value| {
            v.as_str()
                .and_then(|s| B64.decode(s).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Ok(kvs
            .iter()
            .map(|kv| Kv {
                key: text(&kv["key"]),
                value: text(&kv["value"]),
                lease: int(&kv["lease"]).unwrap_or(0),
            })
            .collect())
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        self.call("/v3/kv/deleterange", json!({ "key": B64.encode(key) }))
            .await
            .map(|_| ())
    }
}

/// The end of a prefix range: the prefix with its last byte raised.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A 64-bit number the gateway sends as a string (or a number).
fn int(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_range_ends_past_every_key_under_it() {
        assert_eq!(super::range_end("/vigil/sites/"), b"/vigil/sites0".to_vec());
        assert_eq!(super::range_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
