//! What the three roles (agent, edge, cloud) start and stop the same way:
//! the MQTT link and its bounded inbox, the task tracker, the HTTP server of
//! `/metrics`, `/healthz` (not ready while the broker is unreachable) and
//! the role's API, and the drain at the end: background tasks stop last
//! started first, then the link (so what they publish on the way out still
//! goes), all within a deadline.

use crate::mqtt::{self, Inbox, LinkMetrics, LinkSpec, Publisher};
use crate::telemetry::Health;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the drain waits for every task.
const DRAIN: Duration = Duration::from_secs(3);

/// A running role's shared parts.
pub struct Role {
    name: &'static str,
    /// Every task of the role; drained at the end.
    pub tracker: TaskTracker,
    /// Publishes through the link.
    pub publisher: Publisher,
    /// The readiness checks `/healthz` answers with (the link's is in).
    pub health: Health,
    /// Background tasks (stop token, handle), in the order they were started.
    stops: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
    link: CancellationToken,
}

impl Role {
    /// Opens the link for the role `name` and starts it. Incoming messages
    /// wait in the returned inbox, at most `inbox_messages` and
    /// `inbox_bytes` (the link waits for room beyond that).
    pub fn start(
        name: &'static str,
        spec: LinkSpec,
        (inbox_messages, inbox_bytes): (usize, usize),
        metrics: LinkMetrics,
    ) -> anyhow::Result<(Self, Inbox)> {
        let (inbox_tx, inbox) = mqtt::inbox(inbox_messages, inbox_bytes);
        let (publisher, link) = mqtt::open(spec, inbox_tx, metrics)?;
        let tracker = TaskTracker::new();
        let link = link.spawn_on(&tracker);
        let health = Health::default();
        health.add("mqtt", publisher.readiness());
        let role = Self {
            name,
            tracker,
            publisher,
            health,
            stops: Vec::new(),
            link,
        };
        Ok((role, inbox))
    }

    /// Serves `/metrics` from `registry`, `/healthz` and `api` on
    /// `listener` until `shutdown`.
    pub fn serve(
        &self,
        listener: TcpListener,
        registry: &prometheus::Registry,
        api: axum::Router,
        shutdown: &CancellationToken,
    ) {
        crate::telemetry::spawn_server(
            &self.tracker,
            listener,
            registry,
            self.health.clone(),
            api,
            shutdown,
        );
    }

    /// Starts a background task that runs until the drain cancels its
    /// token (before the link's: it may still publish on its way out).
    pub fn spawn_until_drain<F>(&mut self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = CancellationToken::new();
        let handle = self.tracker.spawn(task(token.clone()));
        self.stops.push((token, handle));
    }

    /// Stops the background tasks one by one, last started first, each
    /// ended before the next is told (what one hands on still gets sent),
    /// then the link; all within one deadline, and says so when a task did
    /// not stop in it.
    pub async fn drain(self) {
        let deadline = tokio::time::Instant::now() + DRAIN;
        for (token, handle) in self.stops.into_iter().rev() {
            token.cancel();
            let _ = tokio::time::timeout_at(deadline, handle).await;
        }
        self.link.cancel();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !crate::shutdown::drain(&self.tracker, left).await {
            tracing::warn!(
                role = self.name,
                "Some {} tasks did not stop within {} s.",
                self.name,
                DRAIN.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn drain_stops_background_tasks_last_started_first_then_the_link() {
        // No broker listens on port 1: the role is up but not ready.
        let spec = LinkSpec {
            settings: crate::mqtt::MqttSettings {
                port: 1,
                ..Default::default()
            },
            default_client_id: "role-test".into(),
            subscriptions: Vec::new(),
            presence: None,
        };
        let metrics = LinkMetrics::new(&prometheus::Registry::new()).unwrap();
        let (mut role, _inbox) = Role::start("test", spec, (4, 1024), metrics).unwrap();
        let (ready, _) = role.health.report();
        assert!(!ready, "ready without a broker");
        let stopped = Arc::new(Mutex::new(Vec::new()));
        for name in ["first", "second"] {
            let stopped = stopped.clone();
            role.spawn_until_drain(move |stop| async move {
                stop.cancelled().await;
                stopped.lock().unwrap().push(name);
            });
        }
        let tracker = role.tracker.clone();
        tokio::time::timeout(Duration::from_secs(5), role.drain())
            .await
            .expect("drained in time");
        assert_eq!(*stopped.lock().unwrap(), ["second", "first"]);
        assert!(
            tracker.is_closed() && tracker.is_empty(),
            "every task ended"
        );
    }
}
