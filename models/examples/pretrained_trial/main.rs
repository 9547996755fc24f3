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
        // Episodes without the edge's hysteresis (its rails are not here).
        let levels = vigil_models::episode::Levels::plain(cfg.threshold as f64);
        let scored = stream::run_with(&mut d, levels, &files, |_, _| {})?;
        let s = nab::score_corpus(&scored, &windows, &profiles)?;
        println!(
            "{name:24} standard {:.2}  low FP {:.2}  low FN {:.2}",
            s["standard"].normalised,
            s["reward_low_FP_rate"].normalised,
            s["reward_low_FN_rate"].normalised
        );
    }
    Ok(())
}
