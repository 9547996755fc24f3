//! Synthetic faults for the detection gate: copies of the held-back series
//! with one fault each (a spike, a level shift, a flat line, a change of
//! pattern), at fixed places in their second half, so that the candidate
//! and the model in force are judged on the same faults.

/// The kinds of fault injected, in turn over the series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// One sample far out.
    Spike,
    /// A step that holds.
    LevelShift,
    /// The value stops moving.
    Flat,
    /// The wiggle grows fourfold.
    Pattern,
}

impl FaultKind {
    const ALL: [FaultKind; 4] = [
        FaultKind::Spike,
        FaultKind::LevelShift,
        FaultKind::Flat,
        FaultKind::Pattern,
    ];
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Injected {
    /// Series index.
    pub series: usize,
    /// First faulty sample.
    pub at: usize,
    /// Samples it lasts.
    pub len: usize,
    /// What it is.
    pub kind: FaultKind,
}

/// Shortest series that gets a fault.
const MIN_LEN: usize = 100;

/// `raw` with one fault in each series long enough and not in `skip` (the
/// series with confirmed incidents), and where each fault is.
pub fn inject(raw: &[Vec<f64>], skip: &[usize]) -> (Vec<Vec<f64>>, Vec<Injected>) {
    let mut out = raw.to_vec();
    let mut faults = Vec::new();
    for (i, s) in out.iter_mut().enumerate() {
        let n = s.len();
        if n < MIN_LEN || skip.contains(&i) {
            continue;
        }
        let first = &s[..n / 2];
        let mean = first.iter().sum::<f64>() / first.len() as f64;
        let var = first.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / first.len() as f64;
        let sd = var.sqrt().max(1e-3 * mean.abs()).max(1e-6);
        let kind = FaultKind::ALL[faults.len() % FaultKind::ALL.len()];
        let at = n / 2 + (i * 37) % (n / 4);
        let len = match kind {
            FaultKind::Spike => 1,
            FaultKind::LevelShift | FaultKind::Pattern => 20,
            FaultKind::Flat => 30,
        }
        .min(n - at);
        let held = s[at];
        for v in &mut s[at..at + len] {
            *v = match kind {
                FaultKind::Spike => *v + 8.0 * sd,
                FaultKind::LevelShift => *v + 6.0 * sd,
                FaultKind::Flat => held,
                FaultKind::Pattern => mean + 4.0 * (*v - mean),
            };
        }
        faults.push(Injected {
            series: i,
            at,
            len,
            kind,
        });
    }
    (out, faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fault_per_long_series_in_its_second_half_and_skipped_ones_untouched() {
        let raw: Vec<Vec<f64>> = (0..6)
            .map(|i| {
                (0..200)
                    .map(|t| (t as f64 * 0.3 + i as f64).sin())
                    .collect()
            })
            .chain(std::iter::once(vec![1.0; 50]))
            .collect();
        let (out, faults) = inject(&raw, &[2]);
        assert_eq!(faults.len(), 5, "six long series, one skipped: {faults:?}");
        let kinds: Vec<FaultKind> = faults.iter().map(|f| f.kind).collect();
        assert_eq!(&kinds[..4], &FaultKind::ALL);
        for f in &faults {
            assert!(f.at >= 100 && f.at + f.len <= 200, "{f:?}");
            assert_ne!(
                out[f.series][f.at..f.at + f.len],
                raw[f.series][f.at..f.at + f.len]
            );
            assert_eq!(
                out[f.series][..f.at],
                raw[f.series][..f.at],
                "only the fault changed"
            );
        }
        assert_eq!(out[2], raw[2]);
        assert_eq!(out[6], raw[6], "too short for a fault");
    }
}
