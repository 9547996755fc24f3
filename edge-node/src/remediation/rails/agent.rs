//! The agent rail: an action goes only to an agent that owns the target and,
//! when the agent announced its catalog, has the action in it.

use super::Hold;
use crate::entity::Entities;
use crate::policy::Policy;
use crate::remediation::Engine;
use std::collections::{HashMap, HashSet};

const RAIL: &str = "agent";

/// The catalog action names each agent announced with its presence.
#[derive(Debug, Default)]
pub(in crate::remediation) struct Agents {
    actions: HashMap<String, Vec<String>>,
}

impl Agents {
    /// Takes the action names an agent announced.
    pub fn set(&mut self, agent: &str, actions: Vec<String>) {
        self.actions.insert(agent.to_string(), actions);
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
    /// Every policy naming an action that an announcing agent it would send
    /// to lacks: its own `agent`, or the host of a known entity it matches.
    pub fn missing_actions(&self, entities: &Entities) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.policies.policies {
            let hosts: HashSet<&str> = match (&p.agent, &p.matcher) {
                (Some(a), _) => std::iter::once(a.as_str()).collect(),
                (None, Some(m)) => entities
                    .all()
                    .filter(|e| crate::policy::glob(&m.entity, e.entity.as_str()))
                    .filter_map(|e| e.entity.host_name())
                    .collect(),
                // Reached by escalation: on the escalating policy's agent.
                (None, None) => Default::default(),
            };
            for agent in self.agents.actions.keys() {
                let reaches = hosts.contains(agent.as_str());
                if reaches && self.agents.lacks(agent, &p.action) {
                    out.push(format!(
                        "policy {:?} (version {}) runs {:?} on agent {agent}, whose catalog has no such action",
                        p.name, self.policies.version, p.action
                    ));
                }
            }
        }
        out
    }
}
