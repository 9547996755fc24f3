//! What the aggregator reads from the broker: the first byte picks a topic
//! of the scheme (or a mangled one), the rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_cloud::ingest::classify;

const TOPICS: &[&str] = &[
    "vigil/v1/s/uplink/samples",
    "vigil/v1/s/uplink/scores",
    "vigil/v1/s/uplink/anomaly",
    "vigil/v1/s/uplink/audit",
    "vigil/v1/s/uplink/heartbeat",
    "vigil/v1/s/uplink/other",
    "vigil/v1/s/h1/presence",
    "vigil/v1/s/edge/presence",
    "vigil/v1/models/default/request",
    "vigil/v1//uplink/audit",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, payload)) = data.split_first() else {
        return;
    };
    let topic = TOPICS[first as usize % TOPICS.len()];
    let _ = classify(topic, payload, 1 << 20);
    // Topics themselves are network input too.
    if let Ok(t) = std::str::from_utf8(payload) {
        let _ = classify(t, b"{}", 1 << 20);
    }
});
