//! A trial, not part of Vigil: pretrain the forecaster offline on a
//! generated corpus (no benchmark data), then score nab-dev with the
//! pretrained weights, with and without online learning, beside the
//! default detector. docs/detector.md ("What was tried") quotes its output.
//!
//! `cargo run --release -p vigil-models --example pretrained_trial -- <nab-dev dir> [steps]`

mod corpus;
mod pretrain;

use pretrain::{normalised, pretrain, PretrainPlan};
use std::path::PathBuf;
use vigil_models::eval::{nab, stream};
use vigil_models::{Detector, DetectorConfig};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or("../shared/data/nab-dev".into()));
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3000);
    let windows = nab::load_windows(&root.join("labels/combined_windows.json"))?;
    let profiles = nab::load_profiles(&root.join("profiles.json"))?;
    let files = stream::read_data(&root.join("data"), &windows)?;
    let cfg = DetectorConfig::default();
    let plan = PretrainPlan {
        steps,
        ..PretrainPlan::default()
    };
    let t = std::time::Instant::now();
    let trained = pretrain(&cfg, &plan, |s, n, loss| {
        if s % 500 == 0 {
            eprintln!("step {s}/{n}: loss {loss:.3}");
        }
    })?;
    eprintln!("pretrained in {:.1} s", t.elapsed().as_secs_f32());
    let weights = trained.weights_bytes()?;
    let series: Vec<Vec<f32>> = files.iter().map(|f| normalised(&f.values, &cfg)).collect();
    let mse = |d: &Detector| vigil_models::training::loss(d, &series, 64);
    println!(
        "nab-dev one-step MSE: persistence {:.3}, pretrained {:.3}",
        mse(&Detector::new(cfg.clone())?)?.unwrap_or(f32::NAN),
        mse(&trained)?.unwrap_or(f32::NAN)
    );
    for (name, online, pretrained) in [
        ("default (online only)", true, false),
        ("pretrained + online", true, true),
        ("pretrained, frozen", false, true),
    ] {
        let mut c = cfg.clone();
        if !online {
            c.train_every_ticks = 0;
        }
        let mut d = Detector::new(c)?;
        if pretrained {
            d.load_weights_bytes(&weights, 0)?;
        }
        let s = nab::score_corpus(&score(&mut d, &files)?, &windows, &profiles)?;
        println!(
            "{name:24} standard {:.2}  low FP {:.2}  low FN {:.2}",
            s["standard"].normalised,
            s["reward_low_FP_rate"].normalised,
            s["reward_low_FN_rate"].normalised
        );
    }
    Ok(())
}

/// Every file as one series of the batch, row `t` in tick `t` (as `eval nab`).
fn score(d: &mut Detector, files: &[stream::DataFile]) -> anyhow::Result<Vec<nab::ScoredFile>> {
    let longest = files.iter().map(|f| f.values.len()).max().unwrap_or(0);
    let mut scores: Vec<Vec<f64>> = files.iter().map(|_| Vec::new()).collect();
    for t in 0..longest {
        let row: Vec<Option<f64>> = files.iter().map(|f| f.values.get(t).copied()).collect();
        let times: Vec<i64> = files
            .iter()
            .map(|f| f.times.get(t).copied().unwrap_or(0))
            .collect();
        let s = d.tick_at(&row, &times)?;
        for (i, v) in row.iter().enumerate() {
            if v.is_some() {
                scores[i].push(s.scores[i] as f64);
            }
        }
    }
    Ok(files
        .iter()
        .zip(scores)
        .map(|(f, scores)| nab::ScoredFile {
            name: f.name.clone(),
            timestamps: f.timestamps.clone(),
            scores,
        })
        .collect())
}
