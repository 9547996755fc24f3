//! Supervised services: processes the agent starts from an argv (no shell),
//! watches, and restarts when a command says so. It does not restart a
//! crashed process by itself: deciding that is the edge's job, under policy.
//!
//! Each service runs in its own process group, so it outlives an agent
//! killed with SIGKILL, and its pid (with the kernel's start time, so a
//! reused pid is not mistaken for it) is kept in `<state_dir>/<name>.pid`.
//! A restarted agent adopts the process its predecessor started instead of
//! starting a second copy; restarting an adopted service stops its whole
//! group first.

use crate::config::ServiceConfig;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tracing::{info, warn};

struct Supervised {
    spec: ServiceConfig,
    child: Option<Child>,
    /// A process a previous agent started, found alive through its pid file.
    adopted: Option<Recorded>,
    restarts: u64,
    /// When this agent last started it (its start-up grace runs from here).
    started: Option<std::time::Instant>,
}

/// What a pid file says: the process and when the kernel started it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Recorded {
    pid: u32,
    /// Field 22 of /proc/<pid>/stat (clock ticks after boot).
    start: u64,
    argv: Vec<String>,
}

/// The kernel's start time of `pid` while it runs (not a zombie).
fn started_at(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl Recorded {
    /// Whether the recorded process still runs (same pid, same start).
    fn alive(&self) -> bool {
        started_at(self.pid) == Some(self.start)
    }
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
    /// Where pid files go; `None` keeps none (tests).
    state_dir: Option<std::path::PathBuf>,
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
                        adopted: None,
                        restarts: 0,
                        started: None,
                    },
                )
            })
            .collect();
        Self {
            procs,
            state_dir: None,
        }
    }

    /// Keeps pid files in `dir`, so a restarted agent finds its services.
    pub fn with_state_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.state_dir = Some(dir);
        self
    }

    fn pid_file(&self, name: &str) -> Option<std::path::PathBuf> {
        self.state_dir
            .as_ref()
            .map(|d| d.join(format!("{name}.pid")))
    }

    /// The process a previous agent left running for `name`, if its pid
    /// file names one that still runs the same argv.
    fn recorded(&self, name: &str, argv: &[String]) -> Option<Recorded> {
        let text = std::fs::read_to_string(self.pid_file(name)?).ok()?;
        let r: Recorded = serde_json::from_str(&text).ok()?;
        (r.argv == argv && r.alive()).then_some(r)
    }

    fn record(&self, name: &str, pid: u32, argv: &[String]) {
        let Some(path) = self.pid_file(name) else {
            return;
        };
        let Some(start) = started_at(pid) else {
            return;
        };
        let r = Recorded {
            pid,
            start,
            argv: argv.to_vec(),
        };
        let text = serde_json::to_vec(&r).unwrap_or_default();
        let saved = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| vigil_core::file::write_atomic(&path, &text));
        if let Err(e) = saved {
            warn!(service = %name, path = %path.display(), error = %e, "Could not write the pid file; a restarted agent would not find this service.");
        }
    }

    fn forget(&self, name: &str) {
        if let Some(path) = self.pid_file(name) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Names of supervised services.
    pub fn names(&self) -> Vec<String> {
        self.procs.keys().cloned().collect()
    }

    /// Starts every supervised service, or adopts the process a previous
    /// agent started for it; returns the errors of those that failed.
    pub fn start_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for name in self.names() {
            let argv = self.procs[&name].spec.argv.clone();
            if let Some(r) = self.recorded(&name, &argv) {
                info!(service = %name, pid = r.pid, "Adopted the supervised service a previous agent started.");
                if let Some(p) = self.procs.get_mut(&name) {
                    p.adopted = Some(r);
                }
                continue;
            }
            let Some(p) = self.procs.get_mut(&name) else {
                continue;
            };
            match spawn(&p.spec) {
                Ok(child) => {
                    let pid = child.id();
                    info!(service = %name, pid, "Started supervised service.");
                    p.child = Some(child);
                    p.started = Some(std::time::Instant::now());
                    if let Some(pid) = pid {
                        self.record(&name, pid, &argv);
                    }
                }
                Err(e) => errors.push(format!("service {name}: {e}")),
            }
        }
        errors
    }

    /// The live PID of a supervised service, reaping it if it has exited.
    pub fn pid(&mut self, name: &str) -> Option<u32> {
        let p = self.procs.get_mut(name)?;
        if let Some(r) = &p.adopted {
            if r.alive() {
                return Some(r.pid);
            }
            warn!(service = %name, pid = r.pid, "Adopted supervised service exited.");
            p.adopted = None;
            return None;
        }
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
        if let Some(r) = p.adopted.take() {
            stop_group(name, &r).await;
        }
        let child = spawn(&p.spec).map_err(|e| format!("starting {name}: {e}"))?;
        let pid = child.id().ok_or_else(|| format!("{name} exited at once"))?;
        info!(service = %name, pid, "Restarted supervised service.");
        p.child = Some(child);
        p.started = Some(std::time::Instant::now());
        p.restarts += 1;
        let argv = p.spec.argv.clone();
        self.record(name, pid, &argv);
        Ok(pid)
    }

    /// Whether `name` was started within its `startup_grace_secs` of `now`
    /// (its health check is not judged yet).
    pub fn in_grace(&self, name: &str, now: std::time::Instant) -> bool {
        self.procs.get(name).is_some_and(|p| {
            p.started
                .is_some_and(|s| now.duration_since(s).as_secs_f64() < p.spec.startup_grace_secs)
        })
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
        for name in self.names() {
            let Some(p) = self.procs.get_mut(&name) else {
                continue;
            };
            if let Some(child) = p.child.take() {
                stop(&name, child).await;
            }
            if let Some(r) = p.adopted.take() {
                stop_group(&name, &r).await;
            }
            self.forget(&name);
        }
    }
}

fn spawn(spec: &ServiceConfig) -> std::io::Result<Child> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty argv"))?;
    let mut cmd = Command::new(program);
    #[cfg(unix)]
    {
        let user = spec.user.as_deref().map(|u| resolve("user", u)).transpose();
        let group = spec
            .group
            .as_deref()
            .map(|g| resolve("group", g))
            .transpose();
        let (uid, gid) = (
            user.map_err(std::io::Error::other)?,
            group.map_err(std::io::Error::other)?,
        );
        // Group first: once the user is set the child could not change it.
        if let Some(gid) = gid.or_else(|| uid.and_then(primary_group)) {
            cmd.gid(gid);
        }
        if let Some(uid) = uid {
            cmd.uid(uid);
        }
    }
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
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

/// A `user` or `group` of a service (`field`) as its numeric id: a number
/// is taken as it is, a name is looked up in the system's databases.
pub fn resolve(field: &str, name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let found = match field {
        "group" => nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())),
        _ => nix::unistd::User::from_name(name).map(|u| u.map(|u| u.uid.as_raw())),
    };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(format!("no {field} named {name:?} on this host")),
        Err(e) => Err(format!("looking up {field} {name:?}: {e}")),
    }
}

/// The primary group of the user with `uid`.
fn primary_group(uid: u32) -> Option<u32> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some(user.gid.as_raw())
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

/// Stops an adopted service's whole process group (it is not our child,
/// so it cannot be waited for: its start time says when it is gone).
async fn stop_group(name: &str, r: &Recorded) {
    if !r.alive() {
        return;
    }
    // The service leads its own group (process_group(0) at spawn).
    signal(-(r.pid as i32), libc::SIGTERM);
    for _ in 0..40 {
        if !r.alive() {
            info!(service = %name, pid = r.pid, "Stopped adopted service.");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    warn!(service = %name, pid = r.pid, "Adopted service ignored SIGTERM for 2 s; killing its group.");
    signal(-(r.pid as i32), libc::SIGKILL);
}

/// Sends SIGTERM.
fn terminate(pid: u32) {
    signal(pid as i32, libc::SIGTERM);
}

/// Sends `sig` to a process (or, negative, a process group). The one unsafe
/// call in the agent: libc::kill has no memory-safety preconditions; the
/// target is a service this agent (or its predecessor) started.
#[allow(unsafe_code)]
fn signal(target: i32, sig: i32) {
    #[cfg(unix)]
    unsafe {
        libc::kill(target as libc::pid_t, sig);
    }
}

#[cfg(test)]
mod tests;
