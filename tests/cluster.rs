//! Aggregators sharing a fleet through a real etcd (the Debian package
//! `etcd-server`, started by the test), each the real `vigil cloud` as its
//! own process, with simulated edges on a real Mosquitto.

use std::path::PathBuf;
use vigil::fleet::{self, FleetOptions, Listed, Report};

fn external_required() -> bool {
    std::env::var("VIGIL_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

/// Mosquitto and etcd are there (or the test may be skipped).
fn parts() -> anyhow::Result<bool> {
    let etcd = vigil::procstat::installed("etcd", "--version");
    let mosquitto = vigil::mosquitto::Mosquitto::start()?.is_some();
    if !(etcd && mosquitto) {
        assert!(!external_required(), "etcd and mosquitto are required");
        eprintln!("skipped: etcd or mosquitto is not installed");
    }
    Ok(etcd && mosquitto)
}

fn two(secs: u64) -> FleetOptions {
    FleetOptions {
        edges: 40,
        series: 50,
        secs,
        warmup_secs: 5,
        drain_secs: 90,
        connections: 4,
        // Rolls seldom, so the killed member leaves rows in its log only.
        roll_secs: Some(30),
        resend_secs: 3,
        // An anomaly event and an audit record every other batch.
        events_every: 2,
        aggregators: 2,
        exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_vigil"))),
        ..Default::default()
    }
}

/// Each anomaly event and audit record made is stored once, and each of
/// `members` lists all of them, once, whichever member owns their site.
fn events_stored_once_and_listed_everywhere(r: &Report, members: &[&str]) {
    let each = r.events / 2;
    assert!(each >= 40, "some events were made: {r}");
    assert_eq!(r.events_stored, (each, each), "stored exactly once: {r}");
    let want: Vec<Listed> = members
        .iter()
        .map(|m| Listed {
            name: m.to_string(),
            anomalies: each,
            audit: each,
            twice: 0,
        })
        .collect();
    assert_eq!(r.listed, want, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_s_sites_are_taken_over_and_every_sample_stored_once() -> anyhow::Result<()>
{
    if !parts()? {
        return Ok(());
    }
    let opts = FleetOptions {
        crash_at_secs: Some(12),
        ..two(25)
    };
    let r = fleet::run(&opts).await?;
    eprintln!("{r}");
    // Before the crash every site had one owner, and both members had some.
    let owned: usize = r.owners_at_crash.iter().map(|(_, n)| n).sum();
    assert_eq!(owned, 40, "{r}");
    assert_eq!(r.owners_at_crash.len(), 2, "{r}");
    assert!(r.owners_at_crash.iter().all(|(_, n)| *n >= 10), "{r}");
    // Taken over within the lease (10 s) and a round.
    assert!(r.takeover_s.is_some_and(|t| t <= 15.0), "{r}");
    assert!(r.drained, "{r}");
    assert_eq!(r.rows, r.made, "every sample stored exactly once: {r}");
    // One leader, the survivor.
    assert_eq!(r.leaders, vec![("cloud-2".to_string(), true)], "{r}");
    // The survivor lists what the dead member stored, too.
    events_stored_once_and_listed_everywhere(&r, &["cloud-2"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_members_keep_serving_their_sites() -> anyhow::Result<()> {
    if !parts()? {
        return Ok(());
    }
    // etcd is gone for 15 s, longer than the lease.
    let opts = FleetOptions {
        etcd_outage_at_secs: Some(5),
        etcd_outage_secs: 15,
        ..two(25)
    };
    let r = fleet::run(&opts).await?;
    eprintln!("{r}");
    assert_eq!(r.etcd_up_in_outage.len(), 2, "{r}");
    assert!(
        r.etcd_up_in_outage.iter().all(|(_, up)| !up),
        "both saw etcd gone: {r}"
    );
    assert!(r.drained, "both kept receipting and stopped cleanly: {r}");
    assert_eq!(r.rows, r.made, "{r}");
    assert!(r.kept_up, "{r}");
    events_stored_once_and_listed_everywhere(&r, &["cloud-1", "cloud-2"]);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_etcd_at_start_is_a_clear_error_naming_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let endpoint = format!("http://127.0.0.1:{}", vigil::broker::free_port()?);
    let mut cfg = vigil_cloud::CloudConfig {
        listen: format!("127.0.0.1:{}", vigil::broker::free_port()?),
        data_dir: dir.path().join("cloud"),
        ..Default::default()
    };
    cfg.cluster.etcd = vec![endpoint.clone()];
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_vigil"));
    let (ok, err) = vigil::fleet::cloud::refusal(exe, dir.path(), &cfg).await?;
    assert!(!ok, "{err}");
    assert!(
        err.contains("cannot reach etcd") && err.contains(&endpoint),
        "{err}"
    );
    Ok(())
}
