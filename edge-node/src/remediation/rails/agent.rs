//! The agent rail: an action goes only to an agent that owns the target and,
//! when the agent announced its catalog, has the action in it.

use super::Hold;
use crate::entity::Entities;
use crate::policy::{Policy, PolicySet};
use crate::remediation::Engine;
use std::collections::{HashMap, HashSet};

const RAIL: &str = "agent";

/// The catalog action names each agent announced with its presence.
#[derive(Debug, Default)]
pub(in crate::remediation) struct Agents {
    actions: HashMap<String, Vec<String>>,
}

impl Agents {
    /// Takes the action names an agent announced; whether they changed.
    pub fn set(&mut self, agent: &str, mut actions: Vec<String>) -> bool {
        actions.sort_unstable();
        self.actions.insert(agent.to_string(), actions.clone()) != Some(actions)
    }

    /// Whether `agent` is known to lack `action` (unknown agents are not).
    pub fn lacks(&self, agent: &str, action: &str) -> bool {
        self.actions
            .get(agent)
            .is_some_and(|a| !a.iter().any(|x| x == action))
    }

    /// The agent `acting` may send to, or why not.
    pub fn check(
        &self,
        acting: &Policy,
        agent: Option<String>,
        note: &str,
    ) -> Result<String, Hold> {
        match agent {
            Some(agent) if self.lacks(&agent, &acting.action) => Err(Hold::because(
                RAIL,
                acting,
                format!(
                    "{note}agent {agent} has no action {:?} in its catalog",
                    acting.action
                ),
            )),
            Some(agent) => Ok(agent),
            None => Err(Hold::because(
                RAIL,
                acting,
                format!("{note}no agent owns this target"),
            )),
        }
    }
}

impl Engine {
    /// Every policy in force naming an action that an announcing agent it
    /// would send to lacks, in words for the log.
    pub fn missing_actions(&self, entities: &Entities) -> Vec<String> {
        self.policies
            .policies
            .iter()
            .filter_map(|p| {
                let why = self.lacking(&self.policies, p, entities)?;
                Some(format!(
                    "policy {:?} (version {}): action {:?} is unknown: {why}",
                    p.name, self.policies.version, p.action
                ))
            })
            .collect()
    }

    /// Why `p` of `set` could not run its action: the announcing agents it
    /// would send to whose catalogs lack it (its own `agent`, the hosts of
    /// the known entities it matches, or, for a policy reached only by
    /// escalation, those of the policies escalating to it). `None` when
    /// every such agent has it or none has announced.
    pub fn lacking(&self, set: &PolicySet, p: &Policy, entities: &Entities) -> Option<String> {
        let mut hosts: HashSet<String> = HashSet::new();
        let reached = std::iter::once(p).chain(set.escalating_to(&p.name));
        for q in reached {
            match (&q.agent, &q.matcher) {
                (Some(a), _) => {
                    hosts.insert(a.clone());
                }
                (None, Some(m)) => hosts.extend(
                    entities
                        .all()
                        .filter(|e| crate::policy::glob(&m.entity, e.entity.as_str()))
                        .filter_map(|e| e.entity.host_name().map(str::to_string)),
                ),
                (None, None) => {}
            }
        }
        let mut without: Vec<&str> = hosts
            .iter()
            .filter(|h| self.agents.lacks(h, &p.action))
            .map(String::as_str)
            .collect();
        without.sort_unstable();
        (!without.is_empty()).then(|| {
            format!(
                "not in the catalog of agent {} (as announced)",
                without.join(", agent ")
            )
        })
    }
}
