//! What the edge reads from the broker: the first byte picks a topic of the
//! scheme (or a mangled one), the rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_edge::ingest::classify;

const TOPICS: &[&str] = &[
    "vigil/v1/s/h1/metrics",
    "vigil/v1/s/h1/results",
    "vigil/v1/s/h1/presence",
    "vigil/v1/s/sensors/t1",
    "vigil/v1/s/edge/ack",
    "vigil/v1/models/default/release",
    "vigil/v1/models/default/chunk/1/0",
    "vigil/v1/models/default/chunk/x/y",
    "vigil/v1/s/uplink/audit",
    "vigil/v1//metrics",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, payload)) = data.split_first() else {
        return;
    };
    let topic = TOPICS[first as usize % TOPICS.len()];
    let _ = classify("s", topic, payload, 1 << 20, 1_700_000_000_000);
    // Topics themselves are network input too.
    if let Ok(t) = std::str::from_utf8(payload) {
        let _ = vigil_core::topic::parse(t);
        let _ = classify("s", t, b"1.5", 1 << 20, 1_700_000_000_000);
    }
});
