//! `http`: a generic HTTP call (a JSON webhook, a load balancer's or DNS
//! API's failover endpoint, a scale webhook). A 2xx status is success.

use super::template::{fill, json_escape, percent};
use super::{fail, Check, Context, Fail, Kind, RawAction};
use std::collections::BTreeMap;
use vigil_core::message::Command;

/// Call an HTTP endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Http {
    /// Method (default POST).
    pub method: String,
    /// URL; `{param}` and `{target}` are filled, percent-encoded.
    pub url: String,
    /// Extra headers (e.g. `Authorization`).
    pub headers: BTreeMap<String, String>,
    /// Body template; `{param}` and `{target}` are filled, JSON-escaped.
    /// Default: a JSON object describing the command.
    pub body: Option<String>,
}

impl Kind for Http {
    const NAME: &'static str = "http";
    const FIELDS: &'static [&'static str] = &["method", "url", "headers", "body"];

    fn from_raw(r: &RawAction) -> Result<Self, String> {
        Ok(Self {
            method: r.method.clone().unwrap_or_else(|| "POST".into()),
            url: r.need(&r.url, "url")?,
            headers: r.headers.clone().unwrap_or_default(),
            body: r.body.clone(),
        })
    }

    fn into_raw(self, r: &mut RawAction) {
        (r.method, r.url, r.body) = (Some(self.method), Some(self.url), self.body);
        r.headers = Some(self.headers);
    }

    fn validate(&self, c: &Check<'_>, e: &mut Vec<String>) {
        let mut texts = vec![self.url.clone()];
        texts.extend(self.body.clone());
        c.placeholders(&texts, e);
        c.url(&self.url, e);
        if reqwest::Method::from_bytes(self.method.as_bytes()).is_err() {
            e.push(c.problem(format!("method {:?} is not an HTTP method", self.method)));
        }
    }

    /// The default body describes the command as JSON.
    async fn run(&self, ctx: &Context<'_>, cmd: &Command) -> Result<String, Fail> {
        let method = reqwest::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| Fail::Final(format!("bad method {:?}", self.method)))?;
        let url = fill(&self.url, cmd, percent);
        let body = match &self.body {
            Some(t) => fill(t, cmd, json_escape),
            None => serde_json::json!({
                "command_id": cmd.id, "action": cmd.action, "target": cmd.target,
                "params": cmd.params, "policy": cmd.policy, "host": ctx.host,
                "anomaly_id": cmd.anomaly_id, "issued_ms": cmd.issued_ms,
            })
            .to_string(),
        };
        let mut req = ctx
            .http
            .request(method.clone(), &url)
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let what = format!("{method} {url}");
        let resp = fail::call(&what, req).await?;
        Ok(format!("{what}: HTTP {}", resp.status()))
    }
}
