//! `vigil bench fleet` end to end, small: a real Mosquitto, the real
//! aggregator as its own process (`vigil cloud`), simulated edges sending
//! real uplinks. Every sample made must be receipted and stored once.

use std::path::PathBuf;
use vigil::fleet::{self, FleetOptions};

fn external_required() -> bool {
    std::env::var("VIGIL_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

/// Whether Mosquitto is there (or the test may be skipped).
fn mosquitto() -> bool {
    let installed = ["mosquitto", "/usr/sbin/mosquitto"].iter().any(|b| {
        std::process::Command::new(b)
            .arg("-h")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok()
    });
    if !installed {
        assert!(!external_required(), "mosquitto is required");
        eprintln!("skipped: mosquitto is not installed");
    }
    installed
}

/// 40 edges × 50 series on 4 connections, with this build's `vigil`.
fn small() -> FleetOptions {
    FleetOptions {
        edges: 40,
        series: 50,
        drain_secs: 60,
        connections: 4,
        exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_vigil"))),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_is_stored_exactly_once_and_kept_up_with() -> anyhow::Result<()> {
    if !mosquitto() {
        return Ok(());
    }
    let opts = FleetOptions {
        secs: 10,
        warmup_secs: 5,
        events_every: 1,
        ..small()
    };
    let r = fleet::run(&opts).await?;
    eprintln!("{r}");
    assert!(r.drained && r.exactly_once(), "{r}");
    // 40 × 50 samples/s for 15 s, give or take the batch in the making.
    assert!(r.made >= 40 * 50 * 10, "{r}");
    assert!(r.kept_up, "{r}");
    assert!(r.receipt_p99_s.is_some_and(|p| p < 30.0), "{r}");
    assert!(
        r.aggregator_peak_rss_mb > 0.0 && r.aggregator_cpu > 0.0,
        "{r}"
    );
    // An anomaly event and an audit record per batch: stored and listed once.
    let each = r.events / 2;
    assert!(each >= 40 * 2, "{r}");
    assert_eq!(r.events_stored, (each, each), "{r}");
    let listed = &r.listed[0];
    assert_eq!(
        (listed.anomalies, listed.audit, listed.twice),
        (each, each, 0),
        "{r}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_nothing_receipted_and_stores_nothing_twice() -> anyhow::Result<()> {
    if !mosquitto() {
        return Ok(());
    }
    // Rolls every 2 s, so the crash (SIGKILL at 7 s) finds rows rolled and
    // checkpointed, rows in the log only, and messages not yet committed.
    let opts = FleetOptions {
        secs: 8,
        warmup_secs: 4,
        resend_secs: 3,
        roll_secs: Some(2),
        crash_at_secs: Some(7),
        events_every: 1,
        ..small()
    };
    let r = fleet::run(&opts).await?;
    eprintln!("{r}");
    assert!(r.drained, "{r}");
    assert_eq!(r.rows, r.made, "{r}");
    let each = r.events / 2;
    assert_eq!(r.events_stored, (each, each), "events too, once: {r}");
    assert!(
        r.resent > 0,
        "the crash cost receipts, so edges sent again: {r}"
    );
    assert!(r.files > 2, "several rolls: {r}");
    assert!(
        r.replayed.is_some_and(|n| n > 0),
        "rows came back from the log: {r}"
    );
    Ok(())
}
