//! The Parquet store on S3-compatible object storage, end to end: a real
//! Mosquitto, the real aggregator (`vigil cloud`, its own process) with
//! `store: s3://…`, and `moto_server` (the moto package) as the S3 server:
//! a local stand-in that speaks the real S3 REST API (signed PUT, GET and
//! LIST requests), since AWS itself cannot be reached here.

use std::path::PathBuf;
use std::time::Duration;
use vigil::fleet::{self, FleetOptions};
use vigil::moto::Moto;

fn external_required() -> bool {
    std::env::var("VIGIL_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

async fn moto() -> anyhow::Result<Option<Moto>> {
    let m = Moto::start().await?;
    if m.is_none() {
        assert!(
            !external_required(),
            "moto_server is required (pip install 'moto[server]')"
        );
        eprintln!("skipped: moto_server is not installed");
    }
    Ok(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_s3_is_stored_exactly_once_through_a_20_s_outage() -> anyhow::Result<()> {
    if vigil::mosquitto::Mosquitto::start()?.is_none() {
        assert!(!external_required(), "mosquitto is required");
        return Ok(());
    }
    let Some(moto) = moto().await? else {
        return Ok(());
    };
    moto.create_bucket("vigil-fleet").await?;
    let dir = tempfile::tempdir()?;
    let s3 = vigil_cloud::config::S3Settings {
        timeout_secs: 2,
        ..moto.settings()
    };
    // Rolls every 2 s, so the outage (from 6 s to 26 s into the load)
    // fails several rolls while the edges keep sending.
    let opts = FleetOptions {
        edges: 40,
        series: 50,
        secs: 30,
        warmup_secs: 5,
        drain_secs: 90,
        connections: 4,
        roll_secs: Some(2),
        store: Some("s3://vigil-fleet/fleet".into()),
        s3: s3.clone(),
        keep: Some(dir.path().join("run")),
        exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_vigil"))),
        ..Default::default()
    };
    let run = tokio::spawn(async move { fleet::run(&opts).await });
    tokio::time::sleep(Duration::from_secs(6)).await;
    moto.pause()?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    moto.resume()?;
    let r = run.await??;
    eprintln!("{r}");
    assert!(r.drained, "{r}");
    assert_eq!(r.rows, r.made, "every sample in the bucket once: {r}");
    assert!(
        r.failed_rolls.is_some_and(|n| n > 0),
        "the outage failed rolls: {r}"
    );
    assert!(r.files > 2, "several rolls reached the bucket: {r}");

    // Training reads the bucket through its mirror, lazily with polars.
    let sink = vigil_cloud::store::Sink::open(Some("s3://vigil-fleet/fleet"), &s3, dir.path())
        .map_err(anyhow::Error::msg)?;
    let mirror = dir.path().join("mirror");
    let root = tokio::task::spawn_blocking(move || sink.readable(&mirror))
        .await?
        .map_err(anyhow::Error::msg)?;
    let q = vigil_cloud::lifecycle::dataset::Query::default();
    let ds = vigil_cloud::lifecycle::dataset::load(&root, &q)?;
    assert_eq!(ds.samples, r.made);
    assert_eq!(ds.sites.len(), 40);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_store_at_start_is_a_clear_error_naming_the_endpoint() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let endpoint = format!("http://127.0.0.1:{}", vigil::broker::free_port()?);
    let mut cfg = vigil_cloud::CloudConfig {
        listen: format!("127.0.0.1:{}", vigil::broker::free_port()?),
        data_dir: dir.path().join("cloud"),
        store: Some("s3://vigil-fleet/p".into()),
        ..Default::default()
    };
    cfg.s3 = vigil_cloud::config::S3Settings {
        endpoint: Some(endpoint.clone()),
        timeout_secs: 1,
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        region: Some("us-east-1".into()),
    };
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_vigil"));
    let (ok, err) = vigil::fleet::cloud::refusal(exe, dir.path(), &cfg).await?;
    assert!(!ok, "{err}");
    assert!(
        err.contains(&endpoint) && err.contains("s3://vigil-fleet/p"),
        "{err}"
    );
    Ok(())
}
