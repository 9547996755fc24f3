//! `restart_process`: restart a service the agent supervises (kill, then
//! start its argv). Only for that service's own entity.

use super::{Check, Context, Fail, Kind, RawAction};
use vigil_core::message::Command;
use vigil_core::EntityId;

/// Restart a supervised service.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartProcess {
    /// Service name from the agent config.
    pub service: String,
}

impl Kind for RestartProcess {
    const NAME: &'static str = "restart_process";
    const FIELDS: &'static [&'static str] = &["service"];

    fn from_raw(r: &RawAction) -> Result<Self, String> {
        Ok(Self {
            service: r.need(&r.service, "service")?,
        })
    }

    fn into_raw(self, r: &mut RawAction) {
        r.service = Some(self.service);
    }

    fn validate(&self, c: &Check<'_>, e: &mut Vec<String>) {
        if !c.services.is_empty() && !c.services.contains(&self.service) {
            e.push(c.problem(format!(
                "service {:?} is not a supervised service ({:?})",
                self.service, c.services
            )));
        }
    }

    fn admits(&self, host: &str, cmd: &Command) -> Result<(), String> {
        let expected = EntityId::service(host, &self.service);
        if cmd.target == expected {
            Ok(())
        } else {
            Err(format!(
                "action {:?} restarts {expected}, not {}",
                cmd.action, cmd.target
            ))
        }
    }

    async fn run(&self, ctx: &Context<'_>, _cmd: &Command) -> Result<String, Fail> {
        let pid = ctx
            .supervisor
            .lock()
            .await
            .restart(&self.service)
            .await
            .map_err(Fail::Retry)?;
        Ok(format!("restarted {}, new pid {pid}", self.service))
    }
}
