use super::*;
use axum::{routing::get, Router};
use std::sync::atomic::{AtomicU64, Ordering};

/// Serves a counter that grows by 10 on every scrape, and a gauge.
async fn exporter() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let hits = n.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let v = hits.fetch_add(1, Ordering::SeqCst) * 10;
            async move {
                format!("# TYPE jobs_total counter\njobs_total{{queue=\"a\"}} {v}\n# TYPE depth gauge\ndepth 7\n")
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/metrics"), n)
}

fn target(name: &str, url: &str) -> ScrapeConfig {
    ScrapeConfig {
        name: name.into(),
        url: url.into(),
        service: None,
        interval_secs: 0.5,
        timeout_ms: 2000,
        include: vec![],
        exclude: vec![],
        max_series: 100,
        quantile: 0.99,
    }
}

/// Waits (up to 10 s) until the samples taken so far satisfy `done`.
async fn until(pending: &Arc<Mutex<Pending>>, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        all.extend(pending.lock().unwrap().take());
        if done(&all) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not there in 10 s: {all:?}");
}

#[tokio::test]
async fn a_target_s_series_reach_the_buffer_with_counters_as_rates_and_its_up() {
    let (url, _) = exporter().await;
    let dead = format!("http://127.0.0.1:{}/metrics", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let registry = prometheus::Registry::new();
    let metrics = ScrapeMetrics::new(&registry).unwrap();
    let pending = Arc::new(Mutex::new(Pending::default()));
    let stop = CancellationToken::new();
    let mut web = target("web", &url);
    web.service = Some("api".into());
    let tasks = start(
        &[web, target("gone", &dead)],
        "h1",
        pending.clone(),
        metrics.clone(),
        &stop,
    )
    .unwrap();
    let got = until(&pending, |s| s.iter().any(|x| x.metric.contains(":rate"))).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let of = |m: &str| {
        got.iter()
            .find(|s| s.metric == m)
            .map(|s| (s.entity.as_str(), s.value))
    };
    assert_eq!(of("depth"), Some(("service/h1/api", 7.0)));
    // 10 more per scrape, scrapes half a second apart: about 20 a second.
    let rate = of("jobs_total:rate{queue=\"a\"}").unwrap().1;
    assert!((10.0..=40.0).contains(&rate), "{rate}");
    assert_eq!(
        of("scrape_up{target=\"web\"}"),
        Some(("service/h1/api", 1.0))
    );
    assert_eq!(of("scrape_up{target=\"gone\"}"), Some(("host/h1", 0.0)));
    let failed = metrics.scrapes.with_label_values(&["gone", "failed"]).get();
    assert!(failed >= 1);
    assert_eq!(metrics.series.with_label_values(&["web"]).get(), 2);
}

#[test]
fn the_buffer_is_bounded_in_bytes_dropping_the_oldest() {
    let mut p = Pending::default();
    let sample = |i: usize| Sample {
        entity: EntityId::host("h"),
        metric: format!("m{i}"),
        ts_ms: i as i64,
        value: 1.0,
    };
    let n = MAX_PENDING_BYTES / sample(0).held_bytes() + 10;
    let dropped = p.add((0..n).map(sample).collect());
    assert!(dropped >= 10, "{dropped}");
    let kept = p.take();
    assert_eq!(
        kept.last().map(|s| s.ts_ms),
        Some(n as i64 - 1),
        "the newest stay"
    );
    assert_eq!(kept.len() as u64 + dropped, n as u64);
    assert!(p.take().is_empty());
}

#[test]
fn every_problem_of_a_target_is_reported() {
    let bad = ScrapeConfig {
        name: "a b".into(),
        url: "ftp://x".into(),
        service: Some("nope".into()),
        interval_secs: 0.0,
        timeout_ms: 0,
        include: vec!["(".into()],
        exclude: vec!["[".into()],
        max_series: 0,
        quantile: 1.0,
    };
    let mut e = Vec::new();
    bad.validate("scrape[0]", &["web".into()], &mut e);
    assert_eq!(e.len(), 9, "{e:#?}");
    assert!(e.iter().all(|x| x.starts_with("scrape[0].")), "{e:#?}");
    let mut e = Vec::new();
    target("node", "http://127.0.0.1:9100/metrics").validate("scrape[1]", &[], &mut e);
    assert!(e.is_empty(), "{e:?}");
}
