//! A real Mosquitto broker, started as a child process on a free port of
//! 127.0.0.1 with a config file of its own: for the end-to-end tests and
//! `vigil bench fleet`.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Mosquitto broker on a free port (default limits, no persistence),
/// killed on drop.
pub struct Mosquitto {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    bin: &'static str,
}

impl Mosquitto {
    /// Starts `mosquitto` if it is installed; `Ok(None)` if it is not.
    pub fn start() -> anyhow::Result<Option<Self>> {
        Self::start_with("allow_anonymous true\n")
    }

    /// As [`Mosquitto::start`], with `settings` (mosquitto.conf lines) for
    /// its one listener on 127.0.0.1 instead of anonymous access.
    pub fn start_with(settings: &str) -> anyhow::Result<Option<Self>> {
        let bin = ["mosquitto", "/usr/sbin/mosquitto"].into_iter().find(|b| {
            Command::new(b)
                .arg("-h")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        });
        let Some(bin) = bin else { return Ok(None) };
        let port = crate::broker::free_port()?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\npersistence false\n{settings}"),
        )?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Self::spawn(bin, &conf, addr)?;
        Ok(Some(Self {
            child,
            addr,
            dir,
            bin,
        }))
    }

    /// Kills the broker and starts it again on the same port: every client
    /// is cut off and everything retained is gone, as after a real restart.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start_again()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker (it stays down until [`Mosquitto::start_again`]).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped broker again on the same port.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.child = Self::spawn(self.bin, &self.dir.path().join("mosquitto.conf"), self.addr)?;
        Ok(())
    }

    fn spawn(bin: &str, conf: &Path, addr: SocketAddr) -> anyhow::Result<Child> {
        let child = Command::new(bin)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting mosquitto")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(child)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
