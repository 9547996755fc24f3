//! A process's resident memory and CPU time, read from /proc (Linux), for
//! the benchmarks that run Vigil's roles as child processes.

/// A `/proc/{pid}/status` field in kB, as MB.
fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Resident set now, MB.
pub fn rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmRSS:")
}

/// Largest resident set so far, MB.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmHWM:")
}

/// User plus system CPU seconds used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15, in clock ticks (100 a second on
    // every Linux Vigil runs on).
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Whether `bin arg` runs and succeeds (is the program installed?).
pub fn installed(bin: &str, arg: &str) -> bool {
    std::process::Command::new(bin)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `sig` (as `kill` takes it, e.g. `-STOP`) to process `pid`.
pub fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let s = std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()?;
    anyhow::ensure!(s.success(), "kill {sig} {pid} failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let (rss, peak) = (rss_mb(me).unwrap(), peak_rss_mb(me).unwrap());
        assert!(rss > 0.0 && peak >= rss, "{rss} {peak}");
        let before = cpu_secs(me).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let used = cpu_secs(me).unwrap() - before;
        assert!(used > 0.1, "{used}");
        assert_eq!(rss_mb(u32::MAX), None);
    }
}
