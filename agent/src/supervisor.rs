//! Supervised services: processes the agent starts from an argv (no shell),
//! watches, and restarts when a command says so. It does not restart a
//! crashed process by itself: deciding that is the edge's job, under policy.

use crate::config::ServiceConfig;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tracing::{info, warn};

struct Supervised {
    spec: ServiceConfig,
    child: Option<Child>,
    restarts: u64,
}

/// A supervised service as reported by the agent's API.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Live PID, if running.
    pub pid: Option<u32>,
    /// Restarts done on command.
    pub restarts: u64,
}

/// The set of processes this agent owns.
#[derive(Default)]
pub struct Supervisor {
    procs: BTreeMap<String, Supervised>,
}

impl Supervisor {
    /// Takes the services that have an argv; does not start them yet.
    pub fn new(services: &[ServiceConfig]) -> Self {
        let procs = services
            .iter()
            .filter(|s| !s.argv.is_empty())
            .map(|s| {
                (
                    s.name.clone(),
                    Supervised {
                        spec: s.clone(),
                        child: None,
                        restarts: 0,
                    },
                )
            })
            .collect();
        Self { procs }
    }

    /// Names of supervised services.
    pub fn names(&self) -> Vec<String> {
        self.procs.keys().cloned().collect()
    }

    /// Starts every supervised service; returns the errors of those that failed.
    pub fn start_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, p) in self.procs.iter_mut() {
            match spawn(&p.spec) {
                Ok(child) => {
                    info!(service = %name, pid = child.id(), "Started supervised service.");
                    p.child = Some(child);
                }
                Err(e) => errors.push(format!("service {name}: {e}")),
            }
        }
        errors
    }

    /// The live PID of a supervised service, reaping it if it has exited.
    pub fn pid(&mut self, name: &str) -> Option<u32> {
        let p = self.procs.get_mut(name)?;
        let child = p.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => child.id(),
            Ok(Some(status)) => {
                warn!(service = %name, %status, "Supervised service exited.");
                p.child = None;
                None
            }
            Err(e) => {
                warn!(service = %name, error = %e, "Could not poll supervised service.");
                None
            }
        }
    }

    /// Stops (if running) and starts the service again; returns the new PID.
    pub async fn restart(&mut self, name: &str) -> Result<u32, String> {
        let p = self
            .procs
            .get_mut(name)
            .ok_or_else(|| format!("{name} is not a supervised service"))?;
        if let Some(child) = p.child.take() {
            stop(name, child).await;
        }
        let child = spawn(&p.spec).map_err(|e| format!("starting {name}: {e}"))?;
        let pid = child.id().ok_or_else(|| format!("{name} exited at once"))?;
        info!(service = %name, pid, "Restarted supervised service.");
        p.child = Some(child);
        p.restarts += 1;
        Ok(pid)
    }

    /// Every supervised service with its PID and restart count.
    pub fn status(&mut self) -> Vec<ServiceStatus> {
        self.names()
            .into_iter()
            .map(|name| {
                let pid = self.pid(&name);
                let restarts = self.procs.get(&name).map(|p| p.restarts).unwrap_or(0);
                ServiceStatus {
                    name,
                    pid,
                    restarts,
                }
            })
            .collect()
    }

    /// Stops every supervised service (SIGTERM, then SIGKILL after 2 s).
    pub async fn stop_all(&mut self) {
        for (name, p) in self.procs.iter_mut() {
            if let Some(child) = p.child.take() {
                stop(name, child).await;
            }
        }
    }
}

fn spawn(spec: &ServiceConfig) -> std::io::Result<Child> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty argv"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // Own process group: a Ctrl-C in the agent's terminal must not reach the
    // service directly; the agent stops it in order.
    #[cfg(unix)]
    cmd.process_group(0);
    cmd.spawn()
}

async fn stop(name: &str, mut child: Child) {
    if let Some(pid) = child.id() {
        terminate(pid);
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            info!(service = %name, pid, %status, "Stopped supervised service.");
            return;
        }
        warn!(service = %name, pid, "Service ignored SIGTERM for 2 s; killing it.");
    }
    if let Err(e) = child.kill().await {
        warn!(service = %name, error = %e, "Could not kill service.");
    }
}

/// Sends SIGTERM. The one unsafe call in the agent: libc::kill has no
/// memory-safety preconditions; the PID is one of our own children.
#[allow(unsafe_code)]
fn terminate(pid: u32) {
    #[cfg(unix)]
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(name: &str) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            argv: vec!["sleep".into(), "30".into()],
            env: vec![],
            pid_file: None,
            health_url: None,
            health_timeout_ms: 800,
        }
    }

    #[tokio::test]
    async fn restart_gives_a_new_pid_and_stop_reaps() {
        let mut s = Supervisor::new(&[sleeper("a")]);
        assert!(s.start_all().is_empty());
        let first = s.pid("a").unwrap();
        let second = s.restart("a").await.unwrap();
        assert_ne!(first, second);
        assert_eq!(s.pid("a"), Some(second));
        s.stop_all().await;
        assert_eq!(s.pid("a"), None);
        assert!(
            !std::path::Path::new(&format!("/proc/{second}")).exists() || is_zombie_free(second)
        );
    }

    fn is_zombie_free(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(true)
    }

    #[tokio::test]
    async fn exited_process_has_no_pid() {
        let mut spec = sleeper("b");
        spec.argv = vec!["true".into()];
        let mut s = Supervisor::new(&[spec]);
        assert!(s.start_all().is_empty());
        tokio::time::timeout(Duration::from_secs(5), async {
            while s.pid("b").is_some() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert!(s.restart("missing").await.is_err());
    }
}
