//! `log`: write a notification to the agent log (and the result detail).

use super::{template, Context, Fail, Kind, RawAction};
use tracing::warn;
use vigil_core::message::Command;

/// Log a notification.
#[derive(Clone, Debug, PartialEq)]
pub struct Log {
    /// Message; `{target}` is replaced by the command's target.
    pub message: String,
}

impl Kind for Log {
    const NAME: &'static str = "log";
    const FIELDS: &'static [&'static str] = &["message"];

    fn from_raw(r: &RawAction) -> Result<Self, String> {
        Ok(Self {
            message: r.need(&r.message, "message")?,
        })
    }

    fn into_raw(self, r: &mut RawAction) {
        r.message = Some(self.message);
    }

    async fn run(&self, _ctx: &Context<'_>, cmd: &Command) -> Result<String, Fail> {
        let text = template::fill(&self.message, cmd, str::to_string);
        warn!(target_entity = %cmd.target, policy = %cmd.policy, "NOTIFY: {text}");
        Ok(text)
    }
}
