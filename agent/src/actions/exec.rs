//! `exec`: run an argv, no shell; exit status 0 is success. Declared
//! parameters fill `{name}` in the arguments.

use super::{template, Check, Context, Fail, Kind, RawAction};
use vigil_core::message::Command;

/// Run a program.
#[derive(Clone, Debug, PartialEq)]
pub struct Exec {
    /// Program and arguments; `{param}` is replaced by a declared parameter.
    pub argv: Vec<String>,
}

impl Kind for Exec {
    const NAME: &'static str = "exec";
    const FIELDS: &'static [&'static str] = &["argv"];

    fn from_raw(r: &RawAction) -> Result<Self, String> {
        Ok(Self {
            argv: r.need(&r.argv, "argv")?,
        })
    }

    fn into_raw(self, r: &mut RawAction) {
        r.argv = Some(self.argv);
    }

    fn validate(&self, c: &Check<'_>, e: &mut Vec<String>) {
        if self.argv.is_empty() {
            e.push(c.problem("argv must not be empty"));
        } else {
            c.placeholders(&self.argv, e);
        }
    }

    async fn run(&self, _ctx: &Context<'_>, cmd: &Command) -> Result<String, Fail> {
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| template::fill(a, cmd, str::to_string))
            .collect();
        run_argv(&argv).await.map_err(Fail::Retry)
    }
}

/// Runs a program to its end; stderr is the failure's detail.
pub(super) async fn run_argv(argv: &[String]) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("empty argv")?;
    let out = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {program}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(format!("{program} exited 0"))
    } else {
        Err(format!(
            "{program} failed ({}): {}",
            out.status,
            stderr.trim()
        ))
    }
}
