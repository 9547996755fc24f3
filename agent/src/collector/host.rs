//! Host metrics from /proc via sysinfo: CPU, memory, disk, network, load, and
//! the CPU and RSS of watched processes. Synchronous; call it off the async
//! worker threads.

use std::time::Instant;
use sysinfo::{Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use vigil_core::message::Sample;
use vigil_core::EntityId;

/// Keeps sysinfo's state between collections (CPU and network are deltas).
pub struct HostCollector {
    sys: System,
    disks: Disks,
    networks: Networks,
    mounts: Vec<String>,
    last_net: Option<Instant>,
}

/// CPU share and RSS of one process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessStats {
    /// CPU use in percent of one core.
    pub cpu_percent: f64,
    /// Resident set size in bytes.
    pub rss_bytes: f64,
}

impl HostCollector {
    /// A collector reporting usage for the given mount points.
    pub fn new(mounts: Vec<String>) -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_usage();
        Self {
            sys,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            mounts,
            last_net: Some(Instant::now()),
        }
    }

    /// Host samples for `host` at `ts_ms`.
    pub fn collect(&mut self, host: &str, ts_ms: i64) -> Vec<Sample> {
        let entity = EntityId::host(host);
        let mut out = Vec::new();
        let mut push = |metric: String, value: f64| {
            if value.is_finite() {
                out.push(Sample {
                    entity: entity.clone(),
                    metric,
                    ts_ms,
                    value,
                });
            }
        };
        self.sys.refresh_cpu_usage();
        push("cpu_percent".into(), self.sys.global_cpu_usage() as f64);
        self.sys.refresh_memory();
        let total = self.sys.total_memory() as f64;
        let used = self.sys.used_memory() as f64;
        push("memory_used_bytes".into(), used);
        if total > 0.0 {
            push("memory_used_ratio".into(), used / total);
        }
        let load = System::load_average();
        push("load1".into(), load.one);
        push("load5".into(), load.five);
        push("load15".into(), load.fifteen);
        self.disks.refresh(true);
        for d in self.disks.list() {
            let mount = d.mount_point().to_string_lossy();
            if self.mounts.iter().any(|m| *m == mount) && d.total_space() > 0 {
                let ratio = 1.0 - d.available_space() as f64 / d.total_space() as f64;
                let metric = if mount == "/" {
                    "disk_used_ratio".to_string()
                } else {
                    format!("disk_used_ratio[{mount}]")
                };
                push(metric, ratio);
            }
        }
        self.networks.refresh(true);
        let now = Instant::now();
        let secs = self
            .last_net
            .map(|t| now.duration_since(t).as_secs_f64())
            .unwrap_or(1.0)
            .max(1e-3);
        self.last_net = Some(now);
        let (mut rx, mut tx) = (0u64, 0u64);
        for (name, data) in self.networks.iter() {
            if name != "lo" {
                rx += data.received();
                tx += data.transmitted();
            }
        }
        push("network_receive_bytes_per_second".into(), rx as f64 / secs);
        push("network_transmit_bytes_per_second".into(), tx as f64 / secs);
        out
    }

    /// CPU and RSS of `pid`, or `None` if it is gone.
    pub fn process(&mut self, pid: u32) -> Option<ProcessStats> {
        let pid = Pid::from_u32(pid);
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let p = self.sys.process(pid)?;
        Some(ProcessStats {
            cpu_percent: p.cpu_usage() as f64,
            rss_bytes: p.memory() as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_core_host_metrics_and_own_process() {
        let mut c = HostCollector::new(vec!["/".into()]);
        let samples = c.collect("h1", 1);
        let names: Vec<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
        for m in [
            "cpu_percent",
            "memory_used_bytes",
            "load1",
            "network_receive_bytes_per_second",
        ] {
            assert!(names.contains(&m), "missing {m} in {names:?}");
        }
        assert!(samples.iter().all(|s| s.entity == EntityId::host("h1")));
        let me = c.process(std::process::id()).unwrap();
        assert!(me.rss_bytes > 1_000_000.0, "{me:?}");
        assert!(c.process(u32::MAX - 7).is_none());
    }
}
