//! A local S3-compatible server for the tests and benchmarks of the store on
//! object storage: `moto_server` (the moto package, `pip install
//! 'moto[server]'`), a child process on a free port of 127.0.0.1 that speaks
//! the real S3 REST API (signed requests, PUT/GET/LIST) and keeps the
//! objects in memory.

use anyhow::Context;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`, killed on drop.
pub struct Moto {
    child: Child,
    /// Its endpoint, e.g. `http://127.0.0.1:1234`.
    pub endpoint: String,
}

impl Moto {
    /// Starts `moto_server` if it is installed (`Ok(None)` if not) and waits
    /// until it answers.
    pub async fn start() -> anyhow::Result<Option<Self>> {
        // The script, or the module when pip put the script off the PATH
        // (a pyenv without a rehash).
        let command: &[&str] = if crate::procstat::installed("moto_server", "--help") {
            &["moto_server"]
        } else if Command::new("python3")
            .args(["-m", "moto.server", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            &["python3", "-m", "moto.server"]
        } else {
            return Ok(None);
        };
        let port = crate::broker::free_port()?;
        let child = Command::new(command[0])
            .args(&command[1..])
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server")?;
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(&moto.endpoint).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "moto_server did not answer on {} within 30 s",
                moto.endpoint
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Some(moto))
    }

    /// Creates `bucket` (moto takes an unsigned request).
    pub async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "creating {bucket}: {}", r.status());
        Ok(())
    }

    /// Settings that reach it (moto takes any key).
    pub fn settings(&self) -> vigil_cloud::config::S3Settings {
        vigil_cloud::config::S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("vigil-test".into()),
            secret_access_key: Some("vigil-test-secret".into()),
            ..Default::default()
        }
    }

    /// Freezes it (SIGSTOP): connections are accepted by the kernel but
    /// nothing answers, as in an outage seen from a client.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Ends a [`Moto::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        crate::procstat::signal(self.child.id(), sig)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
