//! The aggregator under test: the real aggregator (`vigil cloud`, the
//! same code as `vigil-cloud`) as its own process (so its CPU and memory are its own), with its
//! store in the run's folder and training off; its figures are read from
//! its `/metrics`.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running aggregator, killed on drop.
pub struct Aggregator {
    child: Child,
    /// Its API, e.g. `http://127.0.0.1:1234`.
    pub url: String,
    /// Its store.
    pub data_dir: PathBuf,
}

impl Aggregator {
    /// Starts aggregator `name` in `dir` on the broker at `port` by running
    /// `vigil cloud` from `exe`, and waits until it serves `/healthz`.
    pub async fn start(exe: &Path, dir: &Path, name: &str, port: u16) -> anyhow::Result<Self> {
        let listen = format!("127.0.0.1:{}", crate::broker::free_port()?);
        let mut cfg = vigil_cloud::CloudConfig {
            listen: listen.clone(),
            data_dir: dir.join(name),
            ..Default::default()
        };
        cfg.mqtt.port = port;
        cfg.mqtt.client_id = format!("vigil-cloud-{name}");
        cfg.models.train_every_secs = 0;
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, serde_yaml_ng::to_string(&cfg)?)?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(exe)
            .arg("cloud")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {} cloud", exe.display()))?;
        let a = Self {
            child,
            url: format!("http://{listen}"),
            data_dir: cfg.data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{}/healthz", a.url)).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the aggregator did not serve {} within 20 s (see {})",
                a.url,
                dir.join(format!("{name}.log")).display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(a)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sum of every sample of `name` on its `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await?
            .text()
            .await?;
        Ok(sum_of(&text, name))
    }
}

impl Aggregator {
    /// Stops it as an operator would (SIGTERM: it rolls what it holds into
    /// Parquet), waiting at most `secs`; false if it had to be killed.
    pub fn stop(&mut self, secs: u64) -> bool {
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(secs);
        while term.as_ref().is_ok_and(|s| s.success()) && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every sample of `name` (any labels) in Prometheus text, or
/// of one series when `name` carries its labels.
pub fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with(' ') || (rest.starts_with('{') && !name.contains('{')))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Rows and files of the Parquet parts under `dir`, at any depth.
pub fn parquet_rows(dir: &Path) -> anyhow::Result<(u64, usize)> {
    let (mut rows, mut files) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok((0, 0));
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            let (r, f) = parquet_rows(&p)?;
            (rows, files) = (rows + r, files + f);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            let file = std::fs::File::open(&p)?;
            let mut reader = polars::prelude::ParquetReader::new(file);
            use polars::prelude::SerReader as _;
            rows += reader
                .num_rows()
                .with_context(|| format!("reading {}", p.display()))? as u64;
            files += 1;
        }
    }
    Ok((rows, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_its_labels() {
        let text = "# HELP x y\nrows_total{table=\"a\"} 3\nrows_total{table=\"b\"} 4\nrows_totals 9\nrows 1\n";
        assert_eq!(sum_of(text, "rows_total"), 7.0);
        assert_eq!(sum_of(text, "rows_total{table=\"b\"}"), 4.0);
        assert_eq!(sum_of(text, "rows"), 1.0);
        assert_eq!(sum_of(text, "missing"), 0.0);
    }
}
