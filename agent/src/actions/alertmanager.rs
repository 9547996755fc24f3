//! `alertmanager`: post one firing alert for the command's target to
//! Alertmanager's v2 API (`POST /api/v2/alerts`).

use super::template::fill;
use super::{fail, Check, Context, Fail, Kind, RawAction};
use std::collections::BTreeMap;
use vigil_core::message::Command;

/// Raise an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Alertmanager {
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// Alert labels; `alertname` defaults to `VigilRemediation`, and
    /// `target`, `policy` and `host` are added.
    pub labels: BTreeMap<String, String>,
    /// Annotations (`summary`, `description`, ...); `{target}` is filled.
    pub annotations: BTreeMap<String, String>,
}

impl Kind for Alertmanager {
    const NAME: &'static str = "alertmanager";
    const FIELDS: &'static [&'static str] = &["url", "labels", "annotations"];

    fn from_raw(r: &RawAction) -> Result<Self, String> {
        Ok(Self {
            url: r.need(&r.url, "url")?,
            labels: r.labels.clone().unwrap_or_default(),
            annotations: r.annotations.clone().unwrap_or_default(),
        })
    }

    fn into_raw(self, r: &mut RawAction) {
        r.url = Some(self.url);
        (r.labels, r.annotations) = (Some(self.labels), Some(self.annotations));
    }

    fn validate(&self, c: &Check<'_>, e: &mut Vec<String>) {
        c.url(&self.url, e);
    }

    async fn run(&self, ctx: &Context<'_>, cmd: &Command) -> Result<String, Fail> {
        let mut labels = self.labels.clone();
        labels
            .entry("alertname".into())
            .or_insert_with(|| "VigilRemediation".into());
        labels.insert("target".into(), cmd.target.to_string());
        labels.insert("policy".into(), cmd.policy.clone());
        labels.insert("host".into(), ctx.host.to_string());
        let annotations: BTreeMap<String, String> = self
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), fill(v, cmd, str::to_string)))
            .collect();
        let alert = serde_json::json!([{
            "labels": labels,
            "annotations": annotations,
            "startsAt": vigil_core::clock::rfc3339(vigil_core::clock::now_ms()),
            "generatorURL": format!("vigil://{}/command/{}", ctx.host, cmd.id),
        }]);
        let url = format!("{}/api/v2/alerts", self.url.trim_end_matches('/'));
        fail::call(&format!("POST {url}"), ctx.http.post(&url).json(&alert)).await?;
        Ok(format!(
            "alert {} sent to {}",
            labels["alertname"], self.url
        ))
    }
}
