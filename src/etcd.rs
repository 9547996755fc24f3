//! A real etcd (the Debian package `etcd-server`), started as a child
//! process on free ports of 127.0.0.1 with a data folder of its own: for
//! the cluster tests and `vigil bench fleet --aggregators K`.

use anyhow::Context;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A single-node etcd, killed on drop.
pub struct EtcdServer {
    child: Child,
    /// Its client URL, e.g. `http://127.0.0.1:1234`.
    pub endpoint: String,
    peer_url: String,
    dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts `etcd` if it is installed (`Ok(None)` if not) and waits until
    /// it answers.
    pub async fn start() -> anyhow::Result<Option<Self>> {
        if !crate::procstat::installed("etcd", "--version") {
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let (client, peer) = (crate::broker::free_port()?, crate::broker::free_port()?);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = spawn(dir.path(), &endpoint, &peer_url)?;
        let etcd = Self {
            child,
            endpoint,
            peer_url,
            dir,
        };
        etcd.ready().await?;
        Ok(Some(etcd))
    }

    /// Kills it (it stays down until [`EtcdServer::start_again`]).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped etcd again on the same ports and data, and waits
    /// until it answers.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.child = spawn(self.dir.path(), &self.endpoint, &self.peer_url)?;
        self.ready().await
    }

    async fn ready(&self) -> anyhow::Result<()> {
        let etcd = self;
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            let r = http
                .post(format!("{}/v3/kv/range", etcd.endpoint))
                .body(r#"{"key":"AA=="}"#)
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "etcd did not answer on {} within 30 s",
                etcd.endpoint
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn spawn(dir: &std::path::Path, endpoint: &str, peer_url: &str) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))?;
    Command::new("etcd")
        .arg("--name")
        .arg("vigil-test")
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", endpoint])
        .args(["--advertise-client-urls", endpoint])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .arg("--initial-cluster")
        .arg(format!("vigil-test={peer_url}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting etcd")
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
