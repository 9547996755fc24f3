//! A generic corpus of synthetic series to pretrain the forecaster on:
//! levels, noise (white and autocorrelated), cycles of many periods and
//! shapes, trends, random walks, level shifts, spikes, flat stretches,
//! quantised counts. No public benchmark data goes in, so no score is ever
//! reported on data the model was trained on. The same seed gives the same
//! corpus on every machine (ChaCha8, not the platform's `StdRng`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How much corpus to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorpusConfig {
    /// Number of series.
    pub series: usize,
    /// Samples per series.
    pub len: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            series: 512,
            len: 2048,
            seed: 7,
        }
    }
}

/// Every series of the corpus, in its own units.
pub fn generate(cfg: &CorpusConfig) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    (0..cfg.series).map(|_| series(&mut rng, cfg.len)).collect()
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `10^U(lo, hi)`.
fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    10f64.powf(rng.random_range(lo..hi))
}

/// One cycle shape at phase `p` (radians): sine, a smoothed square (sharp
/// daily switches), or a pulse.
fn wave(shape: u8, p: f64) -> f64 {
    match shape {
        0 => p.sin(),
        1 => (4.0 * p.sin()).tanh(),
        _ => {
            let f = (p / std::f64::consts::TAU).rem_euclid(1.0);
            if f < 0.2 {
                1.0
            } else {
                -0.25
            }
        }
    }
}

/// One series' character, drawn once: level, noise, memory, cycles,
/// trend, walk, and how often it shifts, spikes or goes flat.
struct Shape {
    level: f64,
    sigma: f64,
    phi: f64,
    cycles: Vec<(f64, f64, u8, f64)>,
    slope: f64,
    walk: f64,
    shift_p: f64,
    spike_p: f64,
    flat_p: f64,
    quantum: Option<f64>,
    floor_at_zero: bool,
}

impl Shape {
    fn draw(rng: &mut ChaCha8Rng, len: usize) -> Self {
        let level = log_uniform(rng, -1.0, 4.0);
        let sigma = level * log_uniform(rng, -3.0, -0.5);
        let phi = if rng.random_bool(0.5) {
            rng.random_range(0.0..0.98)
        } else {
            0.0
        };
        let cycles: Vec<(f64, f64, u8, f64)> = (0..rng.random_range(0..=2u32))
            .map(|_| {
                let period = 10f64.powf(rng.random_range(0.8..2.9));
                let amp = sigma * log_uniform(rng, -0.5, 2.0);
                (
                    period,
                    amp,
                    rng.random_range(0..3u8),
                    rng.random_range(0.0..6.3),
                )
            })
            .collect();
        let slope = if rng.random_bool(0.3) {
            sigma * rng.random_range(-0.05..0.05)
        } else {
            0.0
        };
        let walk = if rng.random_bool(0.2) {
            sigma * rng.random_range(0.1..1.0)
        } else {
            0.0
        };
        let shift_p = if rng.random_bool(0.3) {
            2.0 / len as f64
        } else {
            0.0
        };
        let spike_p = if rng.random_bool(0.3) {
            1.0 / rng.random_range(200.0..2000.0)
        } else {
            0.0
        };
        let flat_p = if rng.random_bool(0.1) {
            1.0 / 500.0
        } else {
            0.0
        };
        let quantum = rng
            .random_bool(0.2)
            .then(|| sigma * rng.random_range(0.2..2.0));
        let floor_at_zero = rng.random_bool(0.3);
        Self {
            level,
            sigma,
            phi,
            cycles,
            slope,
            walk,
            shift_p,
            spike_p,
            flat_p,
            quantum,
            floor_at_zero,
        }
    }
}

fn series(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    let sh = Shape::draw(rng, len);
    let (mut ar, mut offset, mut flat_left, mut held) = (0.0, 0.0, 0usize, 0.0);
    let mut out = Vec::with_capacity(len);
    for t in 0..len {
        ar = sh.phi * ar + sh.sigma * normal(rng);
        offset += sh.walk * normal(rng);
        if rng.random_bool(sh.shift_p) {
            let size = sh.sigma * rng.random_range(3.0..20.0);
            offset += if rng.random_bool(0.5) { size } else { -size };
        }
        let mut x = sh.level + sh.slope * t as f64 + offset + ar;
        for &(period, amp, shape, phase) in &sh.cycles {
            x += amp * wave(shape, std::f64::consts::TAU * t as f64 / period + phase);
        }
        if rng.random_bool(sh.spike_p) {
            x += sh.sigma * rng.random_range(5.0..50.0);
        }
        if flat_left > 0 {
            flat_left -= 1;
            x = held;
        } else if rng.random_bool(sh.flat_p) {
            flat_left = rng.random_range(20..200);
            held = x;
        }
        if let Some(q) = sh.quantum {
            x = (x / q).round() * q;
        }
        if sh.floor_at_zero {
            x = x.max(0.0);
        }
        out.push(x);
    }
    out
}
