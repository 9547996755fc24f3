//! Remediation policies (YAML): which anomaly on which target, lasting how
//! long, leads to which catalog action, in which mode, how often, and how
//! recovery is verified.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use vigil_core::EntityId;

mod check;
mod condition;

use check::{validate, At};
pub use condition::{Condition, Op};

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
    /// Which anomalies it applies to. A policy without one acts only when
    /// another policy escalates to it.
    #[serde(rename = "match", default)]
    pub matcher: Option<Matcher>,
    /// Catalog action the agent runs.
    pub action: String,
    /// Agent (host) that runs it; default: the host of the target entity.
    #[serde(default)]
    pub agent: Option<String>,
    /// `auto` acts; `shadow` only records what it would have done;
    /// `approve` asks through the HTTP API and acts once approved.
    #[serde(default)]
    pub mode: Mode,
    /// In `approve` mode: seconds a request waits for an answer before it
    /// expires (and nothing runs).
    #[serde(default = "default_approval_ttl_secs")]
    pub approval_ttl_secs: u64,
    /// Seconds after an action before the same action runs on the target again.
    #[serde(default = "default_cooldown_secs")]
    pub cooldown_secs: u64,
    /// Each repeat inside the budget window multiplies the cooldown by this
    /// (1 keeps it fixed).
    #[serde(default = "default_cooldown_backoff")]
    pub cooldown_backoff: f64,
    /// Ceiling of the backed-off cooldown, seconds.
    #[serde(default = "default_cooldown_max_secs")]
    pub cooldown_max_secs: u64,
    /// Once the target has stayed healthy this long, its cooldowns end and
    /// the backoff starts again from `cooldown_secs` (a service that ran
    /// well for a while and then crashed is a new incident, as Kubernetes
    /// resets CrashLoopBackOff after ten minutes of running).
    #[serde(default = "default_cooldown_reset_secs")]
    pub cooldown_reset_secs: u64,
    /// How often the action may run on one target.
    #[serde(default)]
    pub budget: Budget,
    /// An action meant for a sick site (failover): this policy, and the
    /// chain it escalates along, still act while the site-wide short-circuit
    /// holds every other policy.
    #[serde(default)]
    pub site_wide: bool,
    /// Policy to hand the target to when this one's budget is spent (for
    /// example a page to a human after repeated restarts).
    #[serde(default)]
    pub escalate: Option<String>,
    /// How recovery is checked.
    #[serde(default)]
    pub verify: Verify,
}

fn default_approval_ttl_secs() -> u64 {
    900
}
fn default_cooldown_secs() -> u64 {
    60
}
fn default_cooldown_backoff() -> f64 {
    2.0
}
fn default_cooldown_max_secs() -> u64 {
    3600
}
fn default_cooldown_reset_secs() -> u64 {
    600
}

/// At most `max` actions per target in any `per_secs` window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Actions allowed in the window.
    pub max: u32,
    /// The window, seconds.
    pub per_secs: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max: 3,
            per_secs: 3600,
        }
    }
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
    /// Lowest entity score that counts (the highest of its series' scores).
    #[serde(default = "default_min_score")]
    pub min_score: f64,
    /// Lowest entity-model score that also counts: all of the entity's
    /// metrics scored together, over the model's own threshold (1 is its
    /// alarm level, 2 twice that). Unset: the policy acts on series scores
    /// only. With it, `metrics` is matched against the entity model's top
    /// metric when the entity-model score is what matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_entity_score: Option<f64>,
    /// Seconds the anomaly (or, with `when`, the condition) must persist
    /// before acting.
    #[serde(default = "default_for_secs")]
    pub for_secs: f64,
    /// Liveness conditions on the entity's latest values, such as
    /// `up == 0` or `http_ok == 0`: the policy acts when any of them has
    /// held for `for_secs`, whatever the anomaly score (a dead process is
    /// restarted every time). Empty: the policy acts on anomaly scores, and
    /// `metrics` and `min_score` apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
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
    /// Ask a human through the HTTP API; act once approved, before expiry.
    Approve,
}

impl Mode {
    /// The mode's name, as written in policy files and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Shadow => "shadow",
            Mode::Approve => "approve",
        }
    }
}

/// Recovery check after an action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// The target must be healthy within this many seconds of the result.
    pub within_secs: f64,
    /// And stay healthy (score below the detector threshold) this long.
    pub healthy_for_secs: f64,
    /// When the target did not recover, hand it to the `escalate` policy at
    /// once instead of repeating this action until its budget is spent.
    pub escalate_on_failure: bool,
}

impl Default for Verify {
    fn default() -> Self {
        Self {
            within_secs: 60.0,
            healthy_for_secs: 5.0,
            escalate_on_failure: false,
        }
    }
}

pub use vigil_core::series::glob;

impl Policy {
    /// Whether this policy applies to `entity` with this top metric and score.
    pub fn matches(&self, entity: &EntityId, top_metric: &str, score: f64) -> bool {
        let Some(m) = self.matcher.as_ref().filter(|m| m.when.is_empty()) else {
            return false;
        };
        glob(&m.entity, entity.as_str())
            && (m.metrics.is_empty() || m.metrics.iter().any(|p| glob(p, top_metric)))
            && score >= m.min_score
    }

    /// Whether this policy applies to `entity` by its entity-model score
    /// (`match.min_entity_score`), with the entity model's top metric.
    pub fn matches_entity_score(
        &self,
        entity: &EntityId,
        top_metric: &str,
        entity_score: Option<f64>,
    ) -> bool {
        let Some(m) = self.matcher.as_ref().filter(|m| m.when.is_empty()) else {
            return false;
        };
        let (Some(min), Some(score)) = (m.min_entity_score, entity_score) else {
            return false;
        };
        glob(&m.entity, entity.as_str())
            && (m.metrics.is_empty() || m.metrics.iter().any(|p| glob(p, top_metric)))
            && score >= min
    }

    /// Whether this policy acts on liveness conditions (`when`) rather than
    /// on anomaly scores.
    pub fn is_liveness(&self) -> bool {
        self.matcher.as_ref().is_some_and(|m| !m.when.is_empty())
    }

    /// Seconds an anomaly must last before this policy acts (0 for a policy
    /// reached only by escalation: the first policy already waited).
    pub fn for_secs(&self) -> f64 {
        self.matcher.as_ref().map(|m| m.for_secs).unwrap_or(0.0)
    }

    /// Cooldown after the `n`-th action (1-based) inside the budget window.
    pub fn cooldown_ms(&self, n: usize) -> i64 {
        let backed = self.cooldown_secs as f64 * self.cooldown_backoff.powi(n.max(1) as i32 - 1);
        (backed.min(self.cooldown_max_secs.max(self.cooldown_secs) as f64) * 1000.0) as i64
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

    /// Parses policy text; `path` is only used in messages. Every problem
    /// is reported, each at its own line: the edge and `vigil policy
    /// check` read policy files through this one front end.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Vec<String>> {
        let lines = text.lines().collect::<Vec<_>>();
        let (file, errors) = vigil_core::config::parse_all::<PolicyFile>(text, path);
        // serde numbers the policies that parsed; the file's own numbering
        // counts every item, set aside or not.
        let mut errors: Vec<String> = errors.into_iter().map(|e| renumber(&lines, &e)).collect();
        let partial = !errors.is_empty();
        if let Some(file) = &file {
            errors.extend(
                validate(file)
                    .into_iter()
                    // With policies set aside these depend on what is missing.
                    .filter(|(_, p)| {
                        !partial
                            || !(p.contains("no policy is named") || p.contains("can never act"))
                    })
                    .map(|(at, p)| locate(path, &lines, &at, &p)),
            );
        }
        match file {
            Some(file) if errors.is_empty() => Ok(Self {
                policies: file.policies,
                version: content_hash(text),
            }),
            _ => Err(errors),
        }
    }
}

impl PolicySet {
    /// Every policy whose action cannot run, at its `action:` line, in the
    /// words the edge and `vigil policy check` share: `lacks` says why (the
    /// catalogs that do not have it), or `None` when the action is known.
    pub fn action_problems(
        &self,
        text: &str,
        path: &Path,
        lacks: impl Fn(&Policy) -> Option<String>,
    ) -> Vec<String> {
        let lines = text.lines().collect::<Vec<_>>();
        self.policies
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let why = lacks(p)?;
                let problem = format!(
                    "policy {:?} (#{}): action {:?} is unknown: {why}",
                    p.name,
                    i + 1,
                    p.action
                );
                Some(locate(path, &lines, &(p.name.clone(), 0), &problem))
            })
            .collect()
    }

    /// The policies that escalate to `name`, directly or through others.
    pub fn escalating_to<'a>(&'a self, name: &str) -> Vec<&'a Policy> {
        let mut out: Vec<&Policy> = Vec::new();
        let mut wanted = vec![name.to_string()];
        while let Some(n) = wanted.pop() {
            for p in &self.policies {
                let new = p.escalate.as_deref() == Some(n.as_str())
                    && !out.iter().any(|q| q.name == p.name);
                if new {
                    out.push(p);
                    wanted.push(p.name.clone());
                }
            }
        }
        out
    }
}

/// `file:line:col: policies[k]...` with `k` the index of the list item
/// that holds `line` in the file.
fn renumber(lines: &[&str], e: &str) -> String {
    let mut parts = e.splitn(4, ':');
    let (Some(file), Some(line), Some(col), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return e.to_string();
    };
    let (Ok(line), Some(tail)) = (
        line.parse::<usize>(),
        rest.trim_start()
            .strip_prefix("policies[")
            .and_then(|r| r.split_once(']')),
    ) else {
        return e.to_string();
    };
    let Some(start) = lines.iter().position(|l| l.starts_with("policies:")) else {
        return e.to_string();
    };
    let items = lines
        .iter()
        .enumerate()
        .skip(start + 1)
        .filter(|(_, l)| l.trim_start().starts_with("- "));
    let depth = items
        .clone()
        .map(|(_, l)| l.len() - l.trim_start().len())
        .min();
    let k = items
        .filter(|(_, l)| Some(l.len() - l.trim_start().len()) == depth)
        .filter(|(i, _)| *i < line)
        .count();
    match k.checked_sub(1) {
        Some(k) => format!("{file}:{line}:{col}: policies[{k}]{}", tail.1),
        None => e.to_string(),
    }
}

/// Prefixes a semantic problem with the line where its policy is named
/// (the `n`-th policy of that name, for a name used twice).
fn locate(path: &Path, lines: &[&str], (name, n): &At, problem: &str) -> String {
    let needle = format!("name: {name}");
    let quoted = format!("name: \"{name}\"");
    let found = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(&needle) || l.contains(&quoted))
        .nth(*n);
    let Some((i, l)) = found.filter(|_| !name.is_empty()) else {
        return format!("{}: {problem}", path.display());
    };
    // The field the problem names (`action`, `match.min_score`, `budget:`),
    // found within this policy's lines: its own line and column.
    let item_indent = l.len() - l.trim_start().trim_start_matches("- ").len();
    let field = problem
        .split_once("): ")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split([' ', ':']).next())
        .and_then(|f| f.rsplit('.').next())
        .unwrap_or("");
    let at = lines
        .iter()
        .enumerate()
        .skip(i)
        .take_while(|(j, x)| {
            *j == i || x.trim().is_empty() || x.len() - x.trim_start().len() >= item_indent
        })
        .find_map(|(j, x)| {
            let c = x.find(&format!("{field}:")).filter(|_| !field.is_empty())?;
            // A whole word: not `min_score` inside `xmin_score`.
            let before = x[..c].chars().last();
            before
                .is_none_or(|b| !(b.is_alphanumeric() || b == '_'))
                .then_some((j, c))
        });
    let (line, col) = at.unwrap_or((i, l.find("name:").unwrap_or(0)));
    format!("{}:{}:{}: {problem}", path.display(), line + 1, col + 1)
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
mod tests;
