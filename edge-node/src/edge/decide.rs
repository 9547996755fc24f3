//! Deciding and acting: policies reloaded and checked against the agents'
//! catalogs, conditions and anomalies handed to the remediation engine,
//! its commands signed and sent, its audit records kept and counted.

use super::*;

impl Node {
    /// Takes an edited policy file; a broken edit, or one naming an action
    /// that an agent it would send to does not have (from the catalogs the
    /// agents announce), is refused with every error at its line, counted,
    /// and the policies in force stay.
    pub(super) fn reload_policy(&mut self) {
        let Some(watch) = &mut self.policy_watch else {
            return;
        };
        let engine = &self.engine;
        let entities = self.shared.lock_entities();
        let result = watch.reload(|text, path| {
            let set = PolicySet::parse(text, path)?;
            let lacking = set.action_problems(text, path, |p| engine.lacking(&set, p, &entities));
            if lacking.is_empty() {
                Ok(set)
            } else {
                Err(lacking)
            }
        });
        drop(entities);
        let Some(result) = result else {
            return;
        };
        self.policy_refused = result.is_err();
        match result {
            Ok(set) => {
                info!(path = %watch.path().display(), version = %set.version, policies = set.policies.len(), "Policy reloaded.");
                self.metrics
                    .remediation
                    .policy_reloads
                    .with_label_values(&["ok"])
                    .inc();
                if let Ok(mut i) = self.shared.info.lock() {
                    i.policy_version = set.version.clone();
                    i.policy_errors.clear();
                }
                self.engine.set_policies(set);
                // Policies that went away lose their budget gauge.
                self.metrics.remediation.budget_left.reset();
                self.check_policies_against_agents();
            }
            Err(errors) => {
                self.metrics
                    .remediation
                    .policy_reloads
                    .with_label_values(&["failed"])
                    .inc();
                warn!(errors = %errors.join("\n"), version = %self.engine.policy_version(), "Policy edit refused; the policies in force stay.");
                if let Ok(mut i) = self.shared.info.lock() {
                    i.policy_errors = errors;
                }
            }
        }
    }

    /// An agent's catalog changed: a policy edit refused for naming an
    /// action no agent had is read again, since it may run now.
    pub(super) fn catalogs_changed(&mut self) {
        if self.policy_refused {
            if let Some(w) = &mut self.policy_watch {
                w.forget();
            }
            self.reload_policy();
        }
        self.check_policies_against_agents();
    }

    /// Warns about every policy that names an action an agent it would
    /// send to does not have (from the catalogs agents announce), and
    /// counts them; the engine holds such actions back, naming the rail.
    pub(super) fn check_policies_against_agents(&mut self) {
        let problems = self.engine.missing_actions(&self.shared.lock_entities());
        self.metrics
            .remediation
            .policy_problems
            .set(problems.len() as i64);
        for p in problems
            .iter()
            .filter(|p| !self.policy_problems.contains(p))
        {
            warn!(problem = %p, "Policy names an action the agent does not have.");
        }
        if let Ok(mut i) = self.shared.info.lock() {
            i.policy_problems.clone_from(&problems);
        }
        self.policy_problems = problems;
    }

    /// Audits a result for no command in flight: one this edge never sent
    /// (forged, or another edge's) or one it closed already (a replay).
    pub(super) fn unexpected_result(
        &mut self,
        r: &vigil_core::message::CommandResult,
        model: &str,
    ) {
        let sent = self
            .shared
            .audit
            .lock()
            .ok()
            .and_then(|a| a.sent(&r.command_id).cloned());
        let known = self.shared.audit.lock().is_ok_and(|a| {
            let closed = sent.is_some()
                && a.result_of(&r.command_id)
                    .is_some_and(|x| x.outcome.is_some());
            // Audited as unexpected already (before a restart, say).
            closed || a.unexpected_on_record(&r.command_id, r.outcome)
        });
        if known {
            // An agent sends its recent results again when the edge comes
            // back; these are already on record.
            tracing::debug!(command_id = %r.command_id, "Result already on record.");
            return;
        }
        self.metrics.remediation.unexpected_results.inc();
        let why = match &sent {
            Some(_) => "a command this edge sent and has closed (a replay or a late result)",
            None => "a command this edge never sent (forged, or another edge's)",
        };
        if let Some(skipped) = self.ratelog.allow(&format!("unexpected {}", r.host)) {
            warn!(command_id = %r.command_id, agent = %r.host, outcome = r.outcome.as_str(), why, skipped, "Result for no command in flight.");
        }
        let rec = AuditRecord {
            ts_ms: now_ms(),
            site: self.config.site.clone(),
            kind: AuditKind::UnexpectedResult,
            policy: sent.as_ref().map(|s| s.policy.clone()).unwrap_or_default(),
            policy_version: self.engine.policy_version().to_string(),
            target: r.target.clone(),
            action: r.action.clone(),
            command_id: Some(r.command_id.clone()),
            anomaly_id: sent.and_then(|s| s.anomaly_id),
            model_version: model.to_string(),
            score: None,
            top_metric: String::new(),
            mode: String::new(),
            lease_token: r.lease_token,
            outcome: Some(r.outcome),
            rail: None,
            root_cause: Vec::new(),
            detail: format!(
                "{} on {} for {why}: {}",
                r.outcome.as_str(),
                r.host,
                r.detail
            ),
        };
        self.apply(Decisions {
            audit: vec![rec],
            ..Default::default()
        });
    }

    /// (policy, target) pairs whose liveness condition has held long enough.
    pub(super) fn due_now(&self) -> std::collections::HashSet<(String, EntityId)> {
        let policies = &self.engine.policies().policies;
        self.live
            .firing()
            .iter()
            .filter(|f| {
                policies
                    .iter()
                    .find(|p| p.name == f.policy)
                    .is_some_and(|p| f.held_ms as f64 >= p.for_secs() * 1000.0)
            })
            .map(|f| (f.policy.clone(), f.entity.clone()))
            .collect()
    }

    /// Whether a liveness condition has come due since the last decision.
    pub(super) fn newly_due(&self) -> bool {
        !self.due_now().is_subset(&self.due)
    }

    /// Counts an anomaly, keeps it for the API and sends it to the cloud.
    pub(super) fn record_anomaly(&mut self, ev: AnomalyEvent) {
        self.metrics.detection.anomalies.inc();
        if let Some(a) = self.alerts.as_mut() {
            a.opened(&ev);
        }
        self.for_cloud(Priority::Audit, UplinkKind::Anomaly, &ev);
        if let Ok(mut a) = self.shared.anomalies.lock() {
            if a.len() >= RECENT_ANOMALIES {
                a.pop_front();
            }
            a.push_back(ev);
        }
    }

    /// Runs the remediation engine over the entities and liveness
    /// conditions as they stand, and carries out what it decides. A
    /// condition that has just come due is an incident of its own: an
    /// anomaly event whose id the commands it leads to carry.
    pub(super) fn decide(&mut self, now: i64, model: &str) {
        let due = self.due_now();
        let opened: Vec<AnomalyEvent> = self
            .live
            .firing()
            .iter()
            .filter(|f| {
                let key = (f.policy.clone(), f.entity.clone());
                due.contains(&key) && !self.due.contains(&key)
            })
            .inspect(|f| {
                // The fault showed in its first sample that met the condition.
                self.metrics
                    .detection
                    .fault_to_detection_seconds
                    .observe((now - f.since_ms).max(0) as f64 / 1000.0);
            })
            .map(|f| AnomalyEvent {
                id: f.episode.clone(),
                site: self.config.site.clone(),
                entity: f.entity.clone(),
                score: 1.0,
                top_metric: f.metric.clone(),
                contributors: vec![vigil_core::message::Contributor {
                    metric: f.metric.clone(),
                    score: 1.0,
                    value: f.value,
                }],
                ts_ms: now,
                model_version: format!("liveness: {}", f.condition),
                entity_score: None,
                root_cause: vec![vigil_core::message::MetricShare {
                    metric: f.metric.clone(),
                    share: 1.0,
                }],
            })
            .collect();
        for ev in opened {
            info!(entity = %ev.entity, condition = %ev.model_version, "Liveness condition holds.");
            self.record_anomaly(ev);
        }
        let decisions = {
            let ents = self.shared.lock_entities();
            self.metrics
                .detection
                .anomalous_entities
                .set(ents.anomalous_count() as i64);
            self.engine.on_tick(now, &ents, &self.live, model)
        };
        self.due = due;
        self.metrics
            .remediation
            .short_circuit
            .set(self.engine.short_circuited() as i64);
        self.apply(decisions);
        self.alert_closed(now);
    }

    /// Tells the alerts which anomalies are still open (detector episodes
    /// and liveness conditions): the others have closed.
    fn alert_closed(&mut self, now: i64) {
        let Some(alerts) = self.alerts.as_mut() else {
            return;
        };
        let mut open: std::collections::HashSet<String> = self
            .live
            .firing()
            .iter()
            .map(|f| f.episode.clone())
            .collect();
        open.extend(
            self.shared
                .lock_entities()
                .all()
                .filter_map(|e| e.anomaly_id.clone()),
        );
        alerts.still_open(&open, now);
    }

    pub(super) fn apply(&mut self, d: Decisions) {
        let now = now_ms();
        let m = &self.metrics.remediation;
        for c in &d.gave_up {
            m.gave_up.with_label_values(&[c.as_str()]).inc();
        }
        for c in &d.escalations {
            m.escalations.with_label_values(&[c.as_str()]).inc();
        }
        for (agent, mut cmd) in d.commands {
            cmd.to = agent.clone();
            cmd.sign(&self.command_key);
            // Detected when its anomaly (or liveness episode) opened.
            let opened = cmd.anomaly_id.as_ref().and_then(|id| {
                let recent = self.shared.anomalies.lock().ok()?;
                recent.iter().rev().find(|a| &a.id == id).map(|a| a.ts_ms)
            });
            if let Some(since) = opened {
                self.metrics
                    .remediation
                    .detection_to_action_seconds
                    .observe((now - since).max(0) as f64 / 1000.0);
            }
            info!(target_entity = %cmd.target, action = %cmd.action, %agent, id = %cmd.id, "Sending remediation command.");
            self.metrics.remediation.commands_sent.inc();
            if cmd.policy == crate::remediation::SHORT_CIRCUIT {
                self.metrics.remediation.pages.inc();
            }
            self.health.h.actions += 1;
            self.out
                .send(topic::commands(&self.config.site, &agent), &cmd, false);
        }
        for rec in d.audit {
            self.count_audit(&rec);
            if let Some(a) = &self.alerts {
                a.decided(&rec);
            }
            info!(kind = ?rec.kind, policy = %rec.policy, target_entity = %rec.target, detail = %rec.detail, "Audit.");
            if let Ok(mut log) = self.shared.audit.lock() {
                if let Err(e) = log.append(&rec) {
                    self.metrics.remediation.audit_write_errors.inc();
                    warn!(error = %e, path = %log.path().display(), "Could not write audit record.");
                }
            }
            self.for_cloud(Priority::Audit, UplinkKind::Audit, &rec);
        }
    }

    pub(super) fn count_audit(&self, rec: &AuditRecord) {
        if matches!(rec.kind, AuditKind::Verified | AuditKind::VerifyFailed) {
            self.metrics
                .remediation
                .policy_outcome(&rec.policy, rec.kind == AuditKind::Verified);
        }
        match rec.kind {
            AuditKind::HeldBack => self
                .metrics
                .remediation
                .held_back
                .with_label_values(&[crate::metrics::rail_label(rec)])
                .inc(),
            AuditKind::Verified => self
                .metrics
                .remediation
                .verifications
                .with_label_values(&["verified"])
                .inc(),
            AuditKind::VerifyFailed => self
                .metrics
                .remediation
                .verifications
                .with_label_values(&["failed"])
                .inc(),
            AuditKind::ActionResult if rec.outcome.is_none() => self
                .metrics
                .remediation
                .action_results
                .with_label_values(&["no_result"])
                .inc(),
            _ => {}
        }
    }
}
