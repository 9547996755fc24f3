//! Process-level shutdown: Ctrl-C or SIGTERM cancels one token; tasks stop
//! through child tokens and a `TaskTracker` drained with a deadline.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A token cancelled on the first Ctrl-C or SIGTERM. A second Ctrl-C exits
/// at once with status 130, as operators expect of a stuck shutdown.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down (Ctrl-C again to force).");
        t.cancel();
        wait_for_signal().await;
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Closes `tracker` and waits for its tasks, at most `deadline`.
/// Returns false if some task was still running at the deadline.
pub async fn drain(tracker: &TaskTracker, deadline: Duration) -> bool {
    tracker.close();
    tokio::time::timeout(deadline, tracker.wait()).await.is_ok()
}
