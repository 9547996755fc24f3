//! Remediation policies (YAML): which anomaly on which target, lasting how
//! long, leads to which catalog action, in which mode, how often, and how
//! recovery is verified.

use serde::{Deserialize, Serialize};
use std::path::Path;
use vigil_core::config::yaml_error;
use vigil_core::EntityId;

/// A policy file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The policies, tried in order; the first that matches a target acts.
    #[serde(default)]
    pub policies: Vec<Policy>,
}

/// One policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Unique name, written into every audit record.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Which anomalies it applies to.
    #[serde(rename = "match")]
    pub matcher: Matcher,
    /// Catalog action the agent runs.
    pub action: String,
    /// Agent (host) that runs it; default: the host of the target entity.
    #[serde(default)]
    pub agent: Option<String>,
    /// `auto` acts; `shadow` only records what it would have done.
    #[serde(default)]
    pub mode: Mode,
    /// Seconds after an action before the same policy acts on the target again.
    #[serde(default = "default_cooldown_secs")]
    pub cooldown_secs: u64,
    /// How recovery is checked.
    #[serde(default)]
    pub verify: Verify,
}

fn default_cooldown_secs() -> u64 {
    60
}

/// Which anomalies a policy applies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Entity pattern; `*` matches any run of characters (e.g. `service/*/web`).
    pub entity: String,
    /// Patterns for the top contributing metric; empty matches any.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// Lowest entity score that counts.
    #[serde(default = "default_min_score")]
    pub min_score: f64,
    /// Seconds the anomaly must persist before acting.
    #[serde(default = "default_for_secs")]
    pub for_secs: f64,
}

fn default_min_score() -> f64 {
    0.95
}
fn default_for_secs() -> f64 {
    3.0
}

/// Acting mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Send the command.
    #[default]
    Auto,
    /// Record and count what would have been done; do nothing.
    Shadow,
}

/// Recovery check after an action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// The target must be healthy within this many seconds of the result.
    pub within_secs: f64,
    /// And stay healthy (score below the detector threshold) this long.
    pub healthy_for_secs: f64,
}

impl Default for Verify {
    fn default() -> Self {
        Self {
            within_secs: 60.0,
            healthy_for_secs: 5.0,
        }
    }
}

/// `*`-glob match (a `*` matches any run of characters, `/` included).
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Policy {
    /// Whether this policy applies to `entity` with this top metric and score.
    pub fn matches(&self, entity: &EntityId, top_metric: &str, score: f64) -> bool {
        glob(&self.matcher.entity, entity.as_str())
            && (self.matcher.metrics.is_empty()
                || self.matcher.metrics.iter().any(|m| glob(m, top_metric)))
            && score >= self.matcher.min_score
    }

    /// The agent that must run the action for `entity`.
    pub fn agent_for(&self, entity: &EntityId) -> Option<String> {
        self.agent
            .clone()
            .or_else(|| entity.host_name().map(str::to_string))
    }
}

/// A loaded, validated policy file with its version (content hash).
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// The policies.
    pub policies: Vec<Policy>,
    /// Content hash of the file, written into audit records.
    pub version: String,
}

impl PolicySet {
    /// Loads and validates a policy file; every problem is returned, each
    /// naming the file (and line and column for syntax errors).
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Self::parse(&text, path)
    }

    /// Parses policy text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Vec<String>> {
        let file: PolicyFile =
            serde_yaml_ng::from_str(text).map_err(|e| vec![yaml_error(path, &e)])?;
        let problems = validate(&file);
        if !problems.is_empty() {
            let lines = text.lines().collect::<Vec<_>>();
            return Err(problems
                .into_iter()
                .map(|(name, p)| locate(path, &lines, &name, &p))
                .collect());
        }
        Ok(Self {
            policies: file.policies,
            version: content_hash(text),
        })
    }
}

/// Problems as (policy name, message).
fn validate(file: &PolicyFile) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, p) in file.policies.iter().enumerate() {
        let mut bad = |msg: String| {
            out.push((
                p.name.clone(),
                format!("policy {:?} (#{}): {msg}", p.name, i + 1),
            ))
        };
        if p.name.trim().is_empty() {
            bad("name must not be empty".into());
        }
        if !names.insert(p.name.clone()) {
            bad("name is used twice".into());
        }
        if !vigil_core::topic::valid_level(&p.action) {
            bad(format!("action {:?} is not a valid action name", p.action));
        }
        if p.matcher.entity.is_empty() {
            bad("match.entity must not be empty".into());
        }
        if !(p.matcher.min_score > 0.0 && p.matcher.min_score <= 1.0) {
            bad(format!(
                "match.min_score {} is outside (0, 1]",
                p.matcher.min_score
            ));
        }
        if !(p.matcher.for_secs >= 0.0 && p.matcher.for_secs <= 86_400.0) {
            bad(format!(
                "match.for_secs {} is outside 0..=86400",
                p.matcher.for_secs
            ));
        }
        if !(p.verify.within_secs > 0.0
            && p.verify.healthy_for_secs >= 0.0
            && p.verify.healthy_for_secs < p.verify.within_secs)
        {
            bad("verify: within_secs must be positive and longer than healthy_for_secs".into());
        }
        let host_bound =
            p.matcher.entity.starts_with("service/") || p.matcher.entity.starts_with("host/");
        if p.agent.is_none() && !host_bound {
            bad(format!(
                "agent is required: entity pattern {:?} does not name a host",
                p.matcher.entity
            ));
        }
    }
    out
}

/// Prefixes a semantic problem with the line where its policy is named.
fn locate(path: &Path, lines: &[&str], name: &str, problem: &str) -> String {
    let needle = format!("name: {name}");
    let quoted = format!("name: \"{name}\"");
    match lines
        .iter()
        .position(|l| l.contains(&needle) || l.contains(&quoted))
    {
        Some(i) if !name.is_empty() => format!("{}:{}: {problem}", path.display(), i + 1),
        _ => format!("{}: {problem}", path.display()),
    }
}

/// FNV-1a 64-bit of the text, as hex: a stable version for audit records.
pub fn content_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
policies:
  - name: restart-web
    match: { entity: "service/*/web", metrics: ["http_*", "up"], min_score: 0.9, for_secs: 2 }
    action: restart-web
  - name: notify-temp
    match: { entity: "sensor/temp-*" }
    action: notify-ops
    agent: gw-1
    mode: shadow
"#;

    #[test]
    fn parses_and_matches() {
        let set = PolicySet::parse(GOOD, Path::new("p.yaml")).unwrap();
        let web = &set.policies[0];
        let e = EntityId::service("h1", "web");
        assert!(web.matches(&e, "http_latency_seconds", 0.95));
        assert!(web.matches(&e, "up", 0.95));
        assert!(!web.matches(&e, "rss_bytes", 0.95));
        assert!(!web.matches(&e, "up", 0.5));
        assert!(!web.matches(&EntityId::service("h1", "db"), "up", 1.0));
        assert_eq!(web.agent_for(&e).as_deref(), Some("h1"));
        let temp = &set.policies[1];
        assert_eq!(temp.mode, Mode::Shadow);
        assert_eq!(
            temp.agent_for(&EntityId::sensor("temp-1")).as_deref(),
            Some("gw-1")
        );
        assert_eq!(set.version.len(), 16);
    }

    #[test]
    fn reports_every_problem_with_lines() {
        let text = "policies:\n  - name: a\n    match: { entity: \"sensor/x\", min_score: 2 }\n    action: \"rm -rf\"\n  - name: a\n    match: { entity: \"service/*\" }\n    action: ok\n";
        let errs = PolicySet::parse(text, Path::new("p.yaml")).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs.iter().all(|e| e.starts_with("p.yaml:2:")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("agent is required")));
        assert!(errs.iter().any(|e| e.contains("used twice")));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let errs = PolicySet::parse(
            "policies:\n  - name: a\n    acton: x\n",
            Path::new("p.yaml"),
        )
        .unwrap_err();
        assert!(errs[0].starts_with("p.yaml:3:"), "{errs:?}");
        assert!(errs[0].contains("acton"), "{errs:?}");
    }

    #[test]
    fn glob_patterns() {
        assert!(glob("service/*/web", "service/h1/web"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXc"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }
}
