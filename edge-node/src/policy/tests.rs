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
    let at = |line: &str, what: &str| errs.iter().any(|e| e.starts_with(line) && e.contains(what));
    // Each at the field's own line and column; the duplicate at the second use.
    assert!(at("p.yaml:4:5:", "is not a valid action name"), "{errs:?}");
    assert!(at("p.yaml:3:34:", "min_score 2"), "{errs:?}");
    assert!(at("p.yaml:2:5:", "agent is required"), "{errs:?}");
    assert!(at("p.yaml:5:5:", "used twice"), "{errs:?}");
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
fn every_bad_policy_is_reported_not_only_the_first() {
    let text = "policies:
  - name: a
    match: { entity: \"service/*\" }
    acton: restart
  - name: b
    match: { entity: \"service/*\", for_secs: ten }
    action: restart
  - name: c
    match: { entity: \"service/*\" }
    action: restart
    escalate: d
  - name: d
    action: page
    escalate: c
";
    let errs = PolicySet::parse(text, Path::new("p.yaml")).unwrap_err();
    let has = |line: &str, what: &str| errs.iter().any(|e| e.starts_with(line) && e.contains(what));
    assert!(has("p.yaml:4:5:", "unknown field `acton`"), "{errs:?}");
    assert!(has("p.yaml:6:", "policies[1].match.for_secs"), "{errs:?}");
    assert!(
        has("p.yaml:11:5:", "the chain loops (c -> d -> c)"),
        "{errs:?}"
    );
    assert!(
        has("p.yaml:14:5:", "the chain loops (d -> c -> d)"),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 4, "{errs:?}");
}

#[test]
fn escalation_chains_are_checked() {
    let text = "policies:
  - name: a
    match: { entity: \"service/*\" }
    action: restart
    escalate: b
  - name: b
    action: page
    escalate: a
  - name: c
    match: { entity: \"service/*\" }
    action: restart
    escalate: nobody
    budget: { max: 0 }
    cooldown_backoff: 0.5
  - name: orphan
    action: page
";
    let errs = PolicySet::parse(text, Path::new("p.yaml")).unwrap_err();
    let has = |line: &str, what: &str| errs.iter().any(|e| e.starts_with(line) && e.contains(what));
    assert!(
        has("p.yaml:5:5:", "the chain loops (a -> b -> a)"),
        "{errs:?}"
    );
    assert!(
        has("p.yaml:8:5:", "the chain loops (b -> a -> b)"),
        "{errs:?}"
    );
    assert!(
        has("p.yaml:12:5:", "no policy is named \"nobody\""),
        "{errs:?}"
    );
    assert!(has("p.yaml:13:5:", "budget: max and per_secs"), "{errs:?}");
    assert!(has("p.yaml:14:5:", "cooldown_backoff 0.5"), "{errs:?}");
    assert!(has("p.yaml:15:", "can never act"), "{errs:?}");
    assert_eq!(errs.len(), 6, "{errs:?}");
}

#[test]
fn backed_off_cooldown_is_capped() {
    let set = PolicySet::parse(
            "policies:\n  - name: a\n    match: { entity: \"service/*\" }\n    action: r\n    cooldown_secs: 10\n    cooldown_max_secs: 35\n",
            Path::new("p.yaml"),
        )
        .unwrap();
    let p = &set.policies[0];
    let got: Vec<i64> = (1..=4).map(|n| p.cooldown_ms(n)).collect();
    assert_eq!(got, [10_000, 20_000, 35_000, 35_000]);
}

#[test]
fn an_entity_score_threshold_is_checked_where_it_is_written() {
    let text = "policies:\n  - name: a\n    agent: h\n    match: { entity: \"host/*\", min_entity_score: 0 }\n    action: ok\n  - name: b\n    agent: h\n    match: { entity: \"host/*\", when: [\"up == 0\"], min_entity_score: 2 }\n    action: ok\n";
    let errs = PolicySet::parse(text, Path::new("p.yaml")).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("p.yaml:4:32:") && errs[0].contains("outside (0, 1000]"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("p.yaml:8:51:") && errs[1].contains("does not apply with match.when"),
        "{errs:?}"
    );
}
