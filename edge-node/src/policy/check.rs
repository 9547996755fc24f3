//! The semantic checks of a policy file: every problem of every policy, by
//! policy name and occurrence (the loader finds their lines).

use super::*;

/// Where a policy is: its name and which policy of that name it is.
pub(super) type At = (String, usize);

/// Problems as (where, message).
pub(super) fn validate(file: &PolicyFile) -> Vec<(At, String)> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let by_name: HashMap<&str, &Policy> =
        file.policies.iter().map(|p| (p.name.as_str(), p)).collect();
    let escalated_to: HashSet<&str> = file
        .policies
        .iter()
        .filter_map(|p| p.escalate.as_deref())
        .collect();
    for (i, p) in file.policies.iter().enumerate() {
        let seen = names.entry(p.name.clone()).or_default();
        let occurrence = *seen;
        *seen += 1;
        let mut problems = Vec::new();
        if p.name.trim().is_empty() {
            problems.push("name must not be empty".into());
        }
        if occurrence > 0 {
            problems.push("name is used twice".to_string());
        }
        if !vigil_core::topic::valid_level(&p.action) {
            problems.push(format!("action {:?} is not a valid action name", p.action));
        }
        match &p.matcher {
            Some(m) => check_match(m, &mut problems),
            None if !escalated_to.contains(p.name.as_str()) => problems
                .push("has no match and no policy escalates to it, so it can never act".into()),
            None => {}
        }
        check_limits(p, &by_name, &mut problems);
        // Without a match the policy runs on the target of the policy that
        // escalated, so its agent can come from that target's host.
        if let (Some(m), None) = (&p.matcher, &p.agent) {
            if !(m.entity.starts_with("service/") || m.entity.starts_with("host/")) {
                problems.push(format!(
                    "agent is required: entity pattern {:?} does not name a host",
                    m.entity
                ));
            }
        }
        out.extend(problems.into_iter().map(|msg| {
            (
                (p.name.clone(), occurrence),
                format!("policy {:?} (#{}): {msg}", p.name, i + 1),
            )
        }));
    }
    out
}

/// The `match:` section.
fn check_match(m: &Matcher, bad: &mut Vec<String>) {
    if m.entity.is_empty() {
        bad.push("match.entity must not be empty".into());
    }
    if !(m.min_score > 0.0 && m.min_score <= 1.0) {
        bad.push(format!("match.min_score {} is outside (0, 1]", m.min_score));
    }
    if let Some(s) = m.min_entity_score {
        if !(s > 0.0 && s <= 1000.0) {
            bad.push(format!("match.min_entity_score {s} is outside (0, 1000]"));
        }
        if !m.when.is_empty() {
            bad.push("match.min_entity_score does not apply with match.when".into());
        }
    }
    if !m.when.is_empty() && !m.metrics.is_empty() {
        bad.push(
            "match.metrics does not apply with match.when (a condition names its metric)".into(),
        );
    }
    if !(m.for_secs >= 0.0 && m.for_secs <= 86_400.0) {
        bad.push(format!(
            "match.for_secs {} is outside 0..=86400",
            m.for_secs
        ));
    }
}

/// The approval expiry, budget, cooldown backoff, escalation and
/// verification window.
fn check_limits(p: &Policy, by_name: &HashMap<&str, &Policy>, bad: &mut Vec<String>) {
    if p.approval_ttl_secs == 0 || p.approval_ttl_secs > 86_400 {
        bad.push(format!(
            "approval_ttl_secs {} is outside 1..=86400",
            p.approval_ttl_secs
        ));
    }
    if p.budget.max == 0 || p.budget.per_secs == 0 {
        bad.push("budget: max and per_secs must be at least 1".into());
    }
    if !(p.cooldown_backoff >= 1.0 && p.cooldown_backoff <= 100.0) {
        bad.push(format!(
            "cooldown_backoff {} is outside 1..=100",
            p.cooldown_backoff
        ));
    }
    if let Some(next) = &p.escalate {
        if !by_name.contains_key(next.as_str()) {
            bad.push(format!("escalate: no policy is named {next:?}"));
        } else if let Some(cycle) = escalation_cycle(&p.name, by_name) {
            bad.push(format!(
                "escalate: the chain loops ({})",
                cycle.join(" -> ")
            ));
        }
    }
    if !(p.verify.within_secs > 0.0
        && p.verify.healthy_for_secs >= 0.0
        && p.verify.healthy_for_secs < p.verify.within_secs)
    {
        bad.push("verify: within_secs must be positive and longer than healthy_for_secs".into());
    }
}

/// The escalation chain from `start` when it comes back to `start`.
fn escalation_cycle(start: &str, by_name: &HashMap<&str, &Policy>) -> Option<Vec<String>> {
    let mut chain = vec![start.to_string()];
    let mut at = by_name.get(start)?;
    while let Some(next) = at.escalate.as_deref() {
        chain.push(next.to_string());
        if next == start {
            return Some(chain);
        }
        if chain.len() > by_name.len() + 1 {
            return None; // loops further down; reported at its own members
        }
        at = by_name.get(next)?;
    }
    None
}
