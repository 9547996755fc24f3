//! The same loop against a real Mosquitto broker started by the test on a
//! free port. Skipped with a notice when mosquitto is not installed; required
//! when VIGIL_REQUIRE_EXTERNAL=1 (as in CI).

use vigil::demo::FaultKind;
use vigil::stack::BrokerChoice;
use vigil_tests::{external_required, heal_scenario, test_options, Mosquitto};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_and_latency_are_healed_through_mosquitto() -> anyhow::Result<()> {
    let Some(broker) = Mosquitto::start()? else {
        assert!(
            !external_required(),
            "VIGIL_REQUIRE_EXTERNAL=1 but mosquitto is not installed"
        );
        eprintln!("SKIPPED: mosquitto is not on PATH; install it (apt-get install mosquitto) to run this test.");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let opts = test_options(
        BrokerChoice::External(broker.addr),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    heal_scenario(opts, &[FaultKind::Crash, FaultKind::Latency]).await
}
