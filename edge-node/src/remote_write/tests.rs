use super::*;

const TOKEN: &str = "0123456789abcdef";

/// Serves the route; returns its URL and what it hands over.
async fn serve(max_series: usize) -> (String, mpsc::Receiver<Handoff>, RemoteWriteMetrics) {
    serve_queue(max_series, 1, QUEUE_BYTES).await
}

async fn serve_queue(
    max_series: usize,
    queue: usize,
    max_queued: usize,
) -> (String, mpsc::Receiver<Handoff>, RemoteWriteMetrics) {
    let registry = prometheus::Registry::new();
    let metrics = RemoteWriteMetrics::new(&registry).unwrap();
    let (tx, rx) = mpsc::channel(queue);
    let config = RemoteWriteConfig {
        enabled: true,
        max_series,
        max_body_bytes: 1 << 20,
    };
    let app = route(
        &config,
        Some(TOKEN.into()),
        (tx, max_queued),
        metrics.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx, metrics)
}

fn request(series: &[&str]) -> Vec<u8> {
    let req = proto::WriteRequest {
        timeseries: series
            .iter()
            .map(|name| proto::TimeSeries {
                labels: [("__name__", *name), ("instance", "db:9187"), ("job", "pg")]
                    .iter()
                    .map(|(n, v)| proto::Label {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                samples: vec![proto::Sample {
                    value: 1.5,
                    timestamp: 1_700_000_000_000,
                }],
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

async fn post(url: &str, body: Vec<u8>, content_type: &str, token: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

const PROTOBUF: &str = "application/x-protobuf";

#[tokio::test]
async fn answers_as_prometheus_expects_and_counts_each_refusal() {
    let (url, mut rx, m) = serve(2).await;
    let (status, _) = post(&url, request(&["pg_up", "pg_locks"]), PROTOBUF, TOKEN).await;
    assert_eq!(status, 204);
    let got = rx.recv().await.unwrap();
    assert_eq!(got.samples.len(), 2);
    assert_eq!(got.samples[0].entity.as_str(), "service/db-9187/pg");
    drop(got);
    // The queue (1) is full now: retry later.
    post(&url, request(&["pg_up"]), PROTOBUF, TOKEN).await;
    let (status, _) = post(&url, request(&["pg_up"]), PROTOBUF, TOKEN).await;
    assert_eq!(status, 503);
    rx.recv().await.unwrap();
    // A flood of new series: past max_series they are refused (400, so
    // Prometheus drops them), the known one is taken.
    let (status, why) = post(&url, request(&["pg_up", "x1", "x2", "x3"]), PROTOBUF, TOKEN).await;
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("max_series"), "{why}");
    assert_eq!(rx.recv().await.unwrap().samples.len(), 1);
    let (status, _) = post(&url, b"garbage".to_vec(), PROTOBUF, TOKEN).await;
    assert_eq!(status, 400);
    let not_proto = snap::raw::Encoder::new()
        .compress_vec(b"\xff\xff\xff")
        .unwrap();
    let (status, _) = post(&url, not_proto, PROTOBUF, TOKEN).await;
    assert_eq!(status, 400);
    let (status, _) = post(&url, request(&["pg_up"]), "application/json", TOKEN).await;
    assert_eq!(status, 415);
    let v2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    let (status, _) = post(&url, request(&["pg_up"]), v2, TOKEN).await;
    assert_eq!(status, 415, "remote write 2.0 falls back to 1.0 on 415");
    let (status, _) = post(&url, request(&["pg_up"]), PROTOBUF, "wrong-token-wrong").await;
    assert_eq!(status, 401);
    let (status, _) = post(&url, vec![0; 2 << 20], PROTOBUF, TOKEN).await;
    assert_eq!(status, 413);
    let count = |o: &str| m.requests.with_label_values(&[o]).get();
    assert_eq!(
        [
            "ok",
            "busy",
            "partial",
            "bad_snappy",
            "bad_protobuf",
            "content_type",
            "unauthorized"
        ]
        .map(count),
        [2, 1, 1, 1, 1, 2, 1]
    );
    assert_eq!(m.refused.with_label_values(&["cardinality"]).get(), 3);
    assert_eq!(
        m.samples.get(),
        2 + 1 + 1,
        "the busy request's are not counted"
    );
    assert!(rx.try_recv().is_err(), "nothing refused was handed over");
}

#[tokio::test]
async fn samples_not_yet_taken_are_bounded_in_bytes() {
    // Room for many requests, but for the bytes of one (two samples of
    // 67 bytes as held: entity, metric and 48).
    let (url, mut rx, m) = serve_queue(100, 16, 200).await;
    let (first, _) = post(&url, request(&["a", "b"]), PROTOBUF, TOKEN).await;
    let (second, _) = post(&url, request(&["a", "b"]), PROTOBUF, TOKEN).await;
    assert_eq!((first, second), (204, 503));
    // Once the run loop has taken them, their bytes are free again.
    let (samples, held) = rx.recv().await.unwrap().take();
    assert_eq!(samples.len(), 2);
    let (third, _) = post(&url, request(&["a", "b"]), PROTOBUF, TOKEN).await;
    assert_eq!(third, 503, "still held");
    drop(held);
    let (fourth, _) = post(&url, request(&["a", "b"]), PROTOBUF, TOKEN).await;
    assert_eq!(fourth, 204);
    assert_eq!(m.requests.with_label_values(&["busy"]).get(), 2);
}

#[test]
fn enabling_needs_the_api_token() {
    let c = RemoteWriteConfig {
        enabled: true,
        max_series: 0,
        max_body_bytes: 1,
    };
    let mut e = Vec::new();
    c.validate(false, &mut e);
    assert_eq!(e.len(), 3, "{e:?}");
    let mut e = Vec::new();
    RemoteWriteConfig::default().validate(false, &mut e);
    assert!(e.is_empty());
}
