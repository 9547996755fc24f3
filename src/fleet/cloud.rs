//! The aggregator under test: the real aggregator (`vigil cloud`, the same
//! code as `vigil-cloud`) as its own process (so its CPU and memory are its
//! own), with its store in the run's folder and training off.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running aggregator, killed on drop.
pub struct Aggregator {
    child: Child,
    /// Its name (`cloud-1`, …).
    pub name: String,
    /// Whether it was killed on purpose (a cluster's failover).
    pub killed: bool,
    /// Its API, e.g. `http://127.0.0.1:1234`.
    pub url: String,
    /// Its store.
    pub data_dir: PathBuf,
    /// How to start it again: the executable, its config and log files.
    exe: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Aggregator {
    /// Starts aggregator `name` in `dir` on the broker at `port` by running
    /// `vigil cloud` from `exe`, rolling into Parquet every `opts.roll_secs`
    /// (the default when `None`) into `opts.store` (its folder when `None`),
    /// and waits until it serves `/healthz`.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        name: &str,
        port: u16,
        opts: &super::FleetOptions,
        cluster: Option<(&str, u64)>,
    ) -> anyhow::Result<Self> {
        let listen = format!("127.0.0.1:{}", crate::broker::free_port()?);
        let mut cfg = vigil_cloud::CloudConfig {
            listen: listen.clone(),
            data_dir: dir.join(name),
            ..Default::default()
        };
        // A cluster shares one folder; each member keeps its state in it.
        if let Some((etcd, ttl)) = cluster {
            cfg.data_dir = dir.join("cloud");
            cfg.cluster.etcd = vec![etcd.to_string()];
            cfg.cluster.name = Some(name.to_string());
            cfg.cluster.lease_ttl_secs = ttl;
        }
        cfg.mqtt.port = port;
        cfg.mqtt.client_id = format!("vigil-cloud-{name}");
        cfg.models.train_every_secs = 0;
        cfg.roll_secs = opts.roll_secs.unwrap_or(cfg.roll_secs);
        cfg.store = opts.store.clone();
        cfg.s3 = opts.s3.clone();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, serde_yaml_ng::to_string(&cfg)?)?;
        let log = dir.join(format!("{name}.log"));
        let child = spawn(exe, &config, &log, false)?;
        let a = Self {
            child,
            name: name.to_string(),
            killed: false,
            url: format!("http://{listen}"),
            data_dir: cfg.data_dir,
            exe: exe.to_path_buf(),
            config,
            log,
        };
        a.ready().await?;
        Ok(a)
    }

    async fn ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{}/healthz", self.url)).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the aggregator did not serve {} within 20 s (see {})",
                self.url,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Kills it with SIGKILL (no chance to roll or commit) and starts it
    /// again on the same config, as a supervisor would after a crash.
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.exe, &self.config, &self.log, true)?;
        self.ready().await
    }

    /// Kills it with SIGKILL, for good.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Aggregator {
    /// The value of the unlabelled metric `name` on its `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("{name} is not on {}/metrics", self.url))
    }

    /// Stops it as an operator would (SIGTERM: it rolls what it holds into
    /// Parquet), waiting at most `secs`; false if it had to be killed.
    pub fn stop(&mut self, secs: u64) -> bool {
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
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

fn spawn(exe: &Path, config: &Path, log: &Path, append: bool) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(log)?;
    Command::new(exe)
        .arg("cloud")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {} cloud", exe.display()))
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Aggregator {
    /// Rows and files of each table it stored (samples, anomalies, audit):
    /// in its folder, or fetched from the bucket into a folder beside it.
    pub async fn parquet_rows(
        &self,
        opts: &super::FleetOptions,
    ) -> anyhow::Result<[(u64, usize); 3]> {
        let sink = vigil_cloud::store::Sink::open(opts.store.as_deref(), &opts.s3, &self.data_dir)
            .map_err(anyhow::Error::msg)?;
        let mirror = self.data_dir.with_extension("mirror");
        let root = tokio::task::spawn_blocking(move || sink.readable(&mirror))
            .await?
            .map_err(anyhow::Error::msg)?;
        Ok([
            parquet_rows(&root.join("samples"))?,
            parquet_rows(&root.join("anomalies"))?,
            parquet_rows(&root.join("audit"))?,
        ])
    }

    /// What its API lists: anomaly events (distinct ids) and audit records,
    /// and how many of either were listed more than once.
    pub async fn listed(&self) -> anyhow::Result<super::Listed> {
        let get = |what: &'static str| async move {
            let url = format!("{}/api/v1/{what}?limit=10000", self.url);
            let items: Vec<serde_json::Value> = reqwest::get(&url).await?.json().await?;
            anyhow::Ok(items)
        };
        let (anomalies, audit) = (get("anomalies").await?, get("audit").await?);
        let ids = |items: &[serde_json::Value], field: &str| {
            let all: Vec<String> = items.iter().map(|i| i[field].to_string()).collect();
            let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
            (distinct.len() as u64, (all.len() - distinct.len()) as u64)
        };
        // A simulated audit record names the anomaly just before it.
        let (a, a_twice) = ids(&anomalies, "id");
        let (r, r_twice) = ids(&audit, "anomaly_id");
        Ok(super::Listed {
            name: self.name.clone(),
            anomalies: a,
            audit: r,
            twice: a_twice + r_twice,
        })
    }
}

/// Seconds until etcd shows every one of `sites` owned by a member other
/// than `dead` (`None` after two minutes).
pub async fn takeover(etcd: String, dead: &'static str, sites: usize) -> Option<f64> {
    let client = vigil_cloud::cluster::etcd::Etcd::new(&[etcd], Duration::from_secs(2)).ok()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(kvs) = client.prefix("/vigil/cloud/sites/").await {
            if kvs.len() >= sites && kvs.iter().all(|kv| kv.value != dead) {
                return Some(start.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Runs `vigil cloud` from `exe` with `cfg` (written into `dir`) where it is
/// expected to refuse to start: whether it exited with success, and what
/// it wrote to stderr.
pub async fn refusal(
    exe: &Path,
    dir: &Path,
    cfg: &vigil_cloud::CloudConfig,
) -> anyhow::Result<(bool, String)> {
    let config = dir.join("cloud.yaml");
    std::fs::write(&config, serde_yaml_ng::to_string(cfg)?)?;
    let out = tokio::process::Command::new(exe)
        .arg("cloud")
        .arg("--config")
        .arg(&config)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Sites per owner, as etcd has them now.
pub async fn owners(etcd: &str) -> Vec<(String, usize)> {
    let Ok(client) =
        vigil_cloud::cluster::etcd::Etcd::new(&[etcd.to_string()], Duration::from_secs(2))
    else {
        return Vec::new();
    };
    let mut by = std::collections::BTreeMap::new();
    for kv in client
        .prefix("/vigil/cloud/sites/")
        .await
        .unwrap_or_default()
    {
        *by.entry(kv.value).or_insert(0) += 1;
    }
    by.into_iter().collect()
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
