//! Every message kind through the envelope decoder, with and without a
//! delivery sequence: refused or decoded, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::envelope::{decode_seq, with_seq, Seq};
use vigil_core::message::*;
use vigil_core::Payload;

fn all<P: Payload>(data: &[u8]) {
    let _ = decode_seq::<P>(data, 1 << 20);
}

fuzz_target!(|data: &[u8]| {
    all::<MetricBatch>(data);
    all::<Command>(data);
    all::<CommandResult>(data);
    all::<Presence>(data);
    all::<AnomalyEvent>(data);
    all::<AuditRecord>(data);
    all::<SampleBatch>(data);
    all::<Heartbeat>(data);
    all::<SignedRelease>(data);
    all::<ChunkRequest>(data);
    all::<UplinkAck>(data);
    // The sequence splice must never turn bytes into something odd either.
    let seq = Seq {
        stream: "fuzz".into(),
        n: 1,
        floor: 1,
    };
    let _ = decode_seq::<MetricBatch>(&with_seq(data, &seq), 1 << 20);
});
