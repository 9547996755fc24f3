//! `vigil-cloud train`: one retraining run from the command line, with a
//! progress bar.

use super::train;
use super::Hub;
use super::LifecycleMetrics;
use crate::config::CloudConfig;
use crate::store::Sink;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use vigil_core::clock::now_ms;
use vigil_models::bundle::Bundle;
use vigil_models::signing::SecretKey;

/// Trains on the store `config` names, judges and (when the gate passes)
/// writes the bundle.
pub fn train(config: &CloudConfig, out: Option<PathBuf>) -> anyhow::Result<()> {
    let (models, data_dir) = (&config.models, config.data_dir.as_path());
    let sink =
        Sink::open(config.store.as_deref(), &config.s3, data_dir).map_err(anyhow::Error::msg)?;
    let root = sink
        .readable(&data_dir.join(super::runner::MIRROR))
        .map_err(anyhow::Error::msg)?;
    let metrics = LifecycleMetrics::new(&prometheus::Registry::new())?;
    let mut hub = Hub::open(models.clone(), data_dir, metrics)?;
    let base = hub.stable_detector()?;
    let base_entities = hub.stable_entities();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<28} [{bar:40}] {pos}/{len} steps {elapsed}")?
            .progress_chars("=> "),
    );
    let mut state = String::new();
    let t = train::run(
        &root,
        &models.train,
        (&base, base_entities.as_ref()),
        now_ms(),
        |p| {
            if p.state != state {
                state = p.state.clone();
                bar.println(format!("{}: {} samples", p.state, p.samples));
            }
            bar.set_length(p.steps as u64);
            bar.set_position(p.step as u64);
            bar.set_message(match p.loss {
                Some(l) => format!("{} (loss {l:.4})", p.state),
                None => p.state.clone(),
            });
        },
    )?;
    bar.finish_and_clear();
    print_verdicts(&t);
    if !t.passed() {
        for r in t.reasons() {
            println!("refused: {r}");
        }
        anyhow::bail!("the candidate is worse than the stable model; nothing written");
    }
    let version = hub.next_version();
    let mut b = Bundle::of(
        &t.detector,
        &models.family,
        version,
        now_ms(),
        t.training.clone(),
    )?;
    if let Some(e) = &t.entities {
        b.put_entities(&e.set)?;
    }
    if let Some(k) = &models.signing_key {
        b.sign(&SecretKey::read(k)?);
    }
    let out = out.unwrap_or_else(|| {
        data_dir
            .join("models")
            .join(&models.family)
            .join(format!("candidate-v{version}.vmb"))
    });
    std::fs::write(&out, b.to_bytes()?)?;
    println!("passed the gate; wrote {} (v{version})", out.display());
    Ok(())
}

/// What the gate saw, for the terminal.
fn print_verdicts(t: &train::Trained) {
    let v = &t.verdict;
    println!(
        "held-back window: forecast loss {:?} -> {:?}, flagged {:.3}% -> {:.3}%, confirmed incidents caught {} -> {} of {}",
        v.current.loss,
        v.candidate.loss,
        v.current.flag_rate * 100.0,
        v.candidate.flag_rate * 100.0,
        v.current.caught,
        v.candidate.caught,
        v.events
    );
    if let Some(e) = &t.entities {
        let v = &e.verdict;
        println!(
            "entity models: {} trained; flagged {:.3}% -> {:.3}% of held-back rows, injected faults found {} -> {} of {}",
            e.set.entries.len(),
            v.current.flag_rate * 100.0,
            v.candidate.flag_rate * 100.0,
            v.current.found(),
            v.candidate.found(),
            v.candidate.delays.len()
        );
    }
}
