#![allow(missing_docs)] // criterion's macros generate undocumented items
//! One scoring step of 1,000 entities × 38 metrics on one thread: the entity
//! model (persistence forecast and principal-subspace error), the same with
//! the kind's LSTM forecasting all 1,000 entities in one fused batch, and
//! the edge's per-series detector scoring the same 38,000 series in one
//! batched tick. Throughput in metric-samples. Run: `cargo bench -p
//! vigil-models --bench entity_step`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use vigil_models::entity::lstm::{EntityLstm, LstmState};
use vigil_models::entity::{EntityConfig, EntityModel, EntityState};
use vigil_models::{Detector, DetectorConfig};

const ENTITIES: usize = 1000;
const METRICS: usize = 38;

/// A machine-like row: waves shared by groups of metrics, plus noise.
fn row(t: usize, e: usize) -> Vec<f64> {
    (0..METRICS)
        .map(|k| {
            let wave = ((t + e) as f64 / (10.0 + (k % 5) as f64)).sin();
            let noise = ((t * 7919 + k * 104_729 + e * 31) % 1000) as f64 / 1000.0;
            0.5 + 0.2 * wave + 0.05 * noise
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let train: Vec<Vec<f64>> = (0..2000).map(|t| row(t, 0)).collect();
    let model = match EntityModel::fit(&train, EntityConfig::default()) {
        Ok(m) => m,
        Err(e) => panic!("fitting: {e}"),
    };
    let rows: Vec<Vec<f64>> = (0..ENTITIES).map(|e| row(2000, e)).collect();
    let mut states = vec![EntityState::default(); ENTITIES];
    let mut g = c.benchmark_group("entity_step");
    g.throughput(Throughput::Elements((ENTITIES * METRICS) as u64));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("entity_model/1000x38", |b| {
        b.iter(|| {
            for (s, r) in states.iter_mut().zip(&rows) {
                std::hint::black_box(model.step(s, r));
            }
        })
    });
    // The same step with the kind's LSTM forecasting every entity's next
    // row in one fused batch (untrained weights: the cost is the same).
    let mut lstm = match EntityLstm::new(METRICS, 32, 7) {
        Ok(l) => l,
        Err(e) => panic!("building the LSTM: {e}"),
    };
    let mut lstm_state = LstmState::new(ENTITIES, lstm.hidden());
    let (mut z, mut next) = (Vec::with_capacity(ENTITIES * METRICS), Vec::new());
    g.bench_function("entity_model_lstm/1000x38", |b| {
        b.iter(|| {
            z.clear();
            for (s, r) in states.iter_mut().zip(&rows) {
                std::hint::black_box(model.step(s, r));
                model.normalise(r, &mut z);
            }
            if let Err(e) = lstm.step(&mut lstm_state, &z, &mut next) {
                panic!("LSTM step: {e}");
            }
            for (s, f) in states.iter_mut().zip(next.chunks_exact(METRICS)) {
                s.next = Some(model.denormalise(f));
            }
        })
    });
    let mut detector = match Detector::new(DetectorConfig {
        train_every_ticks: 0,
        ..DetectorConfig::default()
    }) {
        Ok(d) => d,
        Err(e) => panic!("building the detector: {e}"),
    };
    let values: Vec<Option<f64>> = rows.iter().flatten().map(|&v| Some(v)).collect();
    g.bench_function("per_series_detector/38000", |b| {
        b.iter(|| std::hint::black_box(detector.tick(&values).ok()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
