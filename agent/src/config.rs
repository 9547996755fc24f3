//! Agent configuration (YAML). Every field has a default; `validate()` reports
//! every problem at once.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use vigil_core::mqtt::MqttSettings;
use vigil_core::topic;

/// The agent's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Site (topic level) this host belongs to.
    pub site: String,
    /// This host's name; empty means the system host name.
    pub host: String,
    /// Seconds between metric batches.
    pub interval_secs: f64,
    /// The broker.
    pub mqtt: MqttSettings,
    /// Action catalog file; empty means no actions are allowed.
    pub catalog: PathBuf,
    /// Address for `/metrics` and `/healthz`.
    pub listen: String,
    /// Mount points whose usage is reported.
    pub disks: Vec<String>,
    /// Services to watch.
    pub services: Vec<ServiceConfig>,
    /// Prometheus endpoints to scrape (node_exporter, a service's own
    /// `/metrics`): their series go to the edge with the host's.
    pub scrape: Vec<crate::scrape::ScrapeConfig>,
    /// Largest command accepted, in bytes.
    pub max_command_bytes: usize,
    /// Longest any action may run before it is cancelled, in seconds.
    pub max_action_secs: u64,
    /// Where the command ledger (commands that ran, leases) is kept.
    pub data_dir: PathBuf,
    /// Circuit breaker per target.
    pub breaker: crate::breaker::BreakerConfig,
    /// Seconds between checks of the catalog file for changes (hot reload).
    pub reload_secs: f64,
    /// Metric batches kept in memory while the broker or the edge is
    /// unreachable, sent in order when both are back; beyond it the oldest
    /// go (and are counted).
    pub buffer_batches: usize,
    /// Public keys of the edges whose commands this agent runs (key text or
    /// `.pub` files, as `vigil keygen` writes them; the edge keeps its key
    /// in `<data_dir>/command.key` and its public half beside it). A
    /// command without a signature one of them verifies runs nothing.
    pub trusted_edge_keys: Vec<String>,
    /// Run unsigned commands too (the broker's ACL is then the only wall).
    /// For migrations only; the agent warns at start while it is set.
    pub allow_unsigned_commands: bool,
}

/// One watched service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name (topic-safe).
    pub name: String,
    /// If set, the agent starts and supervises this process (argv, no shell).
    #[serde(default)]
    pub argv: Vec<String>,
    /// Extra environment for a supervised process.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// For a process the agent does not start: a file holding its PID.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// HTTP health endpoint; 2xx counts as healthy.
    #[serde(default)]
    pub health_url: Option<String>,
    /// Health check timeout in milliseconds.
    #[serde(default = "default_health_timeout_ms")]
    pub health_timeout_ms: u64,
    /// A supervised process runs as this user (name or uid); the agent's
    /// own when unset. Its group is the user's unless `group` says.
    #[serde(default)]
    pub user: Option<String>,
    /// ...and with this group (name or gid).
    #[serde(default)]
    pub group: Option<String>,
    /// A supervised process starts in this folder; the agent's when unset.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// For this long after the agent starts (or restarts) a supervised
    /// process, its health check is not reported, so liveness does not
    /// judge a service that has not bound its port yet (`up` is).
    #[serde(default)]
    pub startup_grace_secs: f64,
}

fn default_health_timeout_ms() -> u64 {
    800
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            argv: Vec::new(),
            env: Vec::new(),
            pid_file: None,
            health_url: None,
            health_timeout_ms: default_health_timeout_ms(),
            user: None,
            group: None,
            working_dir: None,
            startup_grace_secs: 0.0,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            site: "site-1".into(),
            host: String::new(),
            interval_secs: 1.0,
            mqtt: MqttSettings::default(),
            catalog: PathBuf::new(),
            listen: "127.0.0.1:9101".into(),
            disks: vec!["/".into()],
            services: Vec::new(),
            scrape: Vec::new(),
            max_command_bytes: 64 * 1024,
            max_action_secs: 60,
            data_dir: PathBuf::from("vigil-data/agent"),
            breaker: crate::breaker::BreakerConfig::default(),
            reload_secs: 2.0,
            buffer_batches: 600,
            trusted_edge_keys: Vec::new(),
            allow_unsigned_commands: false,
        }
    }
}

impl AgentConfig {
    /// The host name in force: the configured one or the system's.
    pub fn host_name(&self) -> String {
        if !self.host.is_empty() {
            return self.host.clone();
        }
        let name = sysinfo::System::host_name().unwrap_or_else(|| "localhost".into());
        name.chars()
            .map(|c| {
                if topic::valid_level(&c.to_string()) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }

    /// Every problem with the settings.
    pub fn validate(&self) -> Vec<String> {
        let mut e = self.breaker.validate();
        if self.buffer_batches > 100_000 {
            e.push(format!(
                "buffer_batches: {} is above 100000",
                self.buffer_batches
            ));
        }
        if !(self.reload_secs >= 0.1 && self.reload_secs <= 3600.0) {
            e.push(format!(
                "reload_secs: {} is outside 0.1..=3600",
                self.reload_secs
            ));
        }
        if !topic::valid_site(&self.site) {
            e.push(format!(
                "site: {:?} must be 1-64 of [A-Za-z0-9._-] and not `models`",
                self.site
            ));
        }
        if !self.host.is_empty()
            && (!topic::valid_level(&self.host)
                || topic::RESERVED_HOSTS.contains(&self.host.as_str()))
        {
            e.push(format!(
                "host: {:?} must be 1-64 of [A-Za-z0-9._-] and not one of {:?}",
                self.host,
                topic::RESERVED_HOSTS
            ));
        }
        if !(self.interval_secs >= 0.1 && self.interval_secs <= 3600.0) {
            e.push(format!(
                "interval_secs: {} is outside 0.1..=3600",
                self.interval_secs
            ));
        }
        self.mqtt.validate("mqtt", &mut e);
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            e.push(format!(
                "listen: {:?} is not an address like 127.0.0.1:9101",
                self.listen
            ));
        }
        self.validate_services(&mut e);
        let services: Vec<String> = self.services.iter().map(|s| s.name.clone()).collect();
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.scrape.iter().enumerate() {
            let at = format!("scrape[{i}]");
            t.validate(&at, &services, &mut e);
            if !names.insert(t.name.as_str()) {
                e.push(format!("{at}.name: {:?} is listed twice", t.name));
            }
        }
        if self.max_action_secs == 0 {
            e.push("max_action_secs: must be positive".into());
        }
        if let Err(errors) = vigil_core::signing::Keyring::load(&self.trusted_edge_keys) {
            e.extend(
                errors
                    .into_iter()
                    .map(|x| x.replacen("trusted_keys", "trusted_edge_keys", 1)),
            );
        }
        e
    }

    /// Every problem of the `services:` list.
    fn validate_services(&self, e: &mut Vec<String>) {
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = format!("services[{i}]");
            if !topic::valid_level(&s.name) {
                e.push(format!(
                    "{at}.name: {:?} must be 1-64 of [A-Za-z0-9._-]",
                    s.name
                ));
            }
            if !seen.insert(s.name.clone()) {
                e.push(format!("{at}.name: {:?} is listed twice", s.name));
            }
            if !s.argv.is_empty() && s.pid_file.is_some() {
                e.push(format!(
                    "{at}: give either argv (supervised) or pid_file, not both"
                ));
            }
            if let Some(url) = &s.health_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    e.push(format!(
                        "{at}.health_url: {url:?} must start with http:// or https://"
                    ));
                }
            }
            if s.argv.is_empty() {
                let only = [
                    ("user", s.user.is_some()),
                    ("group", s.group.is_some()),
                    ("working_dir", s.working_dir.is_some()),
                    ("startup_grace_secs", s.startup_grace_secs != 0.0),
                ];
                for (field, _) in only.iter().filter(|(_, set)| *set) {
                    e.push(format!(
                        "{at}.{field}: applies only to a supervised service (argv)"
                    ));
                }
            }
            if !(0.0..=3600.0).contains(&s.startup_grace_secs) {
                e.push(format!(
                    "{at}.startup_grace_secs: {} is outside 0..=3600",
                    s.startup_grace_secs
                ));
            }
            for (field, v) in [("user", &s.user), ("group", &s.group)] {
                if let Some(Err(why)) = v.as_deref().map(|n| crate::supervisor::resolve(field, n)) {
                    e.push(format!("{at}.{field}: {why}"));
                }
            }
            if let Some(d) = s.working_dir.as_ref().filter(|d| !d.is_dir()) {
                e.push(format!("{at}.working_dir: {} is not a folder", d.display()));
            }
            if s.health_timeout_ms == 0 || s.health_timeout_ms > 60_000 {
                e.push(format!(
                    "{at}.health_timeout_ms: {} is outside 1..=60000",
                    s.health_timeout_ms
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_and_validates() {
        let c = AgentConfig::default();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let text = serde_yaml_ng::to_string(&c).unwrap();
        assert_eq!(serde_yaml_ng::from_str::<AgentConfig>(&text).unwrap(), c);
    }

    #[test]
    fn reports_every_problem() {
        let mut c = AgentConfig {
            site: "a/b".into(),
            interval_secs: 0.0,
            listen: "x".into(),
            ..Default::default()
        };
        c.services.push(ServiceConfig {
            name: "web".into(),
            argv: vec!["x".into()],
            env: vec![],
            pid_file: Some("/p".into()),
            health_url: Some("ftp://x".into()),
            health_timeout_ms: 0,
            ..Default::default()
        });
        c.services.push(c.services[0].clone());
        // site, interval, listen, both-set ×2, url ×2, timeout ×2, duplicate name
        assert_eq!(c.validate().len(), 10, "{:?}", c.validate());
    }

    #[test]
    fn supervision_settings_are_checked() {
        let mut c = AgentConfig::default();
        c.services.push(ServiceConfig {
            name: "web".into(),
            argv: vec!["x".into()],
            user: Some("no-such-user-here".into()),
            working_dir: Some("/no/such/folder".into()),
            startup_grace_secs: -1.0,
            ..Default::default()
        });
        c.services.push(ServiceConfig {
            name: "db".into(),
            pid_file: Some("/run/db.pid".into()),
            group: Some("0".into()),
            ..Default::default()
        });
        let e = c.validate();
        let has = |what: &str| e.iter().any(|p| p.contains(what));
        assert!(
            has("services[0].user: no user named \"no-such-user-here\""),
            "{e:?}"
        );
        assert!(
            has("services[0].working_dir: /no/such/folder is not a folder"),
            "{e:?}"
        );
        assert!(
            has("services[0].startup_grace_secs: -1 is outside"),
            "{e:?}"
        );
        assert!(
            has("services[1].group: applies only to a supervised service"),
            "{e:?}"
        );
        assert_eq!(e.len(), 4, "{e:?}");
    }

    #[test]
    fn unknown_field_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.yaml");
        std::fs::write(&p, "site: s1\nintervall_secs: 2\n").unwrap();
        let err = vigil_core::config::load_yaml::<AgentConfig>(&p).unwrap_err();
        assert!(err.contains("agent.yaml:2:"), "{err}");
        assert!(err.contains("intervall_secs"), "{err}");
    }
}
