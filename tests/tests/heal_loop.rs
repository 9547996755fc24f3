//! The whole loop on the embedded broker: a real demo service as a child
//! process gets a crash and a latency fault; Vigil detects, restarts and
//! verifies each.

use vigil::demo::FaultKind;
use vigil::stack::BrokerChoice;
use vigil_tests::{heal_scenario, test_options};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_and_latency_are_healed_on_the_embedded_broker() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = test_options(
        BrokerChoice::Embedded(0),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    heal_scenario(opts, &[FaultKind::Crash, FaultKind::Latency]).await
}

/// A fault only the service's own metrics show: `/work` answers 500 while
/// the health check stays well. The agent scrapes the service's
/// `/metrics`; the detector finds the error rate unusual and the demo's
/// policy restarts the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_requests_seen_only_in_the_service_s_own_metrics_are_healed() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let opts = test_options(
        BrokerChoice::Embedded(0),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    heal_scenario(opts, &[FaultKind::Errors]).await
}
