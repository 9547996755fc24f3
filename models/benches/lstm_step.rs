#![allow(missing_docs)] // criterion's macros generate undocumented items
//! One stateful LSTM step (input 1) over B series on one thread: candle's
//! generic cell against the fused step, at the detector's default hidden size
//! (16) and at 32 (the size of the reference figures).
//! Samples/s = B / step time. Run: `cargo bench -p vigil-models --bench
//! lstm_step`; compare with `../shared/bench/peer_lstm_bench.py H 1 100 10000
//! 100000` (H = 16 and 32) in the same session.

use candle_core::{DType, Device, Tensor};
use candle_nn::rnn::{LSTMConfig, LSTMState, RNN};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use vigil_models::fused::FusedLstm;

fn bench(c: &mut Criterion) {
    for hidden in [16, 32] {
        bench_size(c, hidden);
    }
}

fn bench_size(c: &mut Criterion, hidden: usize) {
    // One thread, as the peer: gemm would otherwise fan out over rayon.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    if let Err(e) = candle_nn::lstm(1, hidden, LSTMConfig::default(), vb.pp("lstm")) {
        panic!("building the LSTM: {e}");
    }
    let tensor = |n: &str| {
        vm.data()
            .lock()
            .map(|d| d[&format!("lstm.{n}")].as_tensor().detach())
    };
    // candle's generic cell from plain (untracked) tensors: no autograd graph.
    let plain: std::collections::HashMap<String, Tensor> = vm
        .data()
        .lock()
        .map(|d| {
            d.iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                .collect()
        })
        .unwrap_or_default();
    let lstm = candle_nn::lstm(
        1,
        hidden,
        LSTMConfig::default(),
        VarBuilder::from_tensors(plain, DType::F32, &Device::Cpu).pp("lstm"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut fused = match (
        tensor("weight_ih_l0"),
        tensor("weight_hh_l0"),
        tensor("bias_ih_l0"),
        tensor("bias_hh_l0"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => {
            FusedLstm::new(&a, &b, &c, &d).unwrap_or_else(|e| panic!("{e}"))
        }
        _ => panic!("variable map poisoned"),
    };
    let mut group = c.benchmark_group(format!("lstm_step_h{hidden}"));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for b in [1usize, 100, 10_000, 100_000] {
        group.throughput(Throughput::Elements(b as u64));
        let xs: Vec<f32> = (0..b).map(|i| (i as f32 * 0.1).sin()).collect();
        let x = Tensor::from_slice(&xs, (b, 1), &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        let mut state: LSTMState = lstm.zero_state(b).unwrap_or_else(|e| panic!("{e}"));
        group.bench_with_input(BenchmarkId::new("candle_generic", b), &b, |bench, _| {
            bench.iter(|| {
                state = lstm.step(&x, &state).unwrap_or_else(|e| panic!("{e}"));
            })
        });
        let (mut h, mut cell) = (vec![0.0f32; b * hidden], vec![0.0f32; b * hidden]);
        group.bench_with_input(BenchmarkId::new("fused", b), &b, |bench, _| {
            bench.iter(|| {
                fused
                    .step(&xs, &mut h, &mut cell)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
