//! `systemd_restart`: `systemctl restart <unit>`.

use super::exec::run_argv;
use super::{Check, Context, Fail, Kind, RawAction};
use vigil_core::message::Command;

/// Restart a systemd unit.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemdRestart {
    /// Unit name.
    pub unit: String,
    /// Path to systemctl.
    pub systemctl: String,
}

impl Kind for SystemdRestart {
    const NAME: &'static str = "systemd_restart";
    const FIELDS: &'static [&'static str] = &["unit", "systemctl"];

    fn from_raw(r: &RawAction) -> Result<Self, String> {
        Ok(Self {
            unit: r.need(&r.unit, "unit")?,
            systemctl: r.systemctl.clone().unwrap_or_else(|| "systemctl".into()),
        })
    }

    fn into_raw(self, r: &mut RawAction) {
        (r.unit, r.systemctl) = (Some(self.unit), Some(self.systemctl));
    }

    fn validate(&self, c: &Check<'_>, e: &mut Vec<String>) {
        if self.unit.is_empty() {
            e.push(c.problem("unit must not be empty"));
        }
    }

    async fn run(&self, _ctx: &Context<'_>, _cmd: &Command) -> Result<String, Fail> {
        run_argv(&[self.systemctl.clone(), "restart".into(), self.unit.clone()])
            .await
            .map_err(Fail::Retry)
    }
}
