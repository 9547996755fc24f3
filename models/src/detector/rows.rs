//! A series' state as 32-bit words: what a snapshot saves and restores.

use super::{Detector, Slot};
use crate::baseline::Baseline;
use crate::novelty::{Novelty, WORDS as NOVELTY_WORDS};
use crate::season::{Season, WORDS as SEASON_WORDS};

impl Detector {
    /// Row `i`'s whole state (baseline, novelty, history, LSTM state,
    /// forecast) as 32-bit words, for a snapshot; `None` past the end.
    pub fn row_state(&self, i: usize) -> Option<Vec<u32>> {
        let s = self.slots.get(i)?;
        let hd = self.cfg.hidden;
        let f = f32::to_bits;
        let mut w = vec![
            hd as u32,
            s.base.count,
            f(s.base.mean),
            f(s.base.spread),
            s.deviated,
            f(s.last_input),
            s.anomalous as u32,
            f(self.forecast[i]),
        ];
        w.extend(s.novelty.to_words());
        w.extend(s.season.to_words());
        w.extend([s.quiet, f(s.fired)]);
        w.extend(self.h[i * hd..(i + 1) * hd].iter().map(|&x| f(x)));
        w.extend(self.c[i * hd..(i + 1) * hd].iter().map(|&x| f(x)));
        w.push(s.history.len() as u32);
        w.extend(s.history.iter().map(|&x| f(x)));
        Some(w)
    }

    /// Puts back a row saved by [`Detector::row_state`] into row `i`
    /// (growing the rows as needed); false, and nothing changed, when the
    /// words do not fit this detector (another hidden size or layout, a
    /// torn file).
    pub fn restore_row(&mut self, i: usize, w: &[u32]) -> bool {
        let hd = self.cfg.hidden;
        let (nov, sea) = (8, 8 + NOVELTY_WORDS);
        let lstm = sea + SEASON_WORDS + 2;
        let fixed = lstm + 2 * hd + 1;
        if w.len() < fixed || w[0] as usize != hd {
            return false;
        }
        let n_hist = w[fixed - 1] as usize;
        if w.len() != fixed + n_hist || n_hist > self.cfg.train_window + 1 {
            return false;
        }
        let (Ok(novelty), Some(season)) = (
            <[u32; NOVELTY_WORDS]>::try_from(&w[nov..sea]),
            Season::from_words(&w[sea..sea + SEASON_WORDS]),
        ) else {
            return false;
        };
        if self.grow(i + 1).is_err() {
            return false;
        }
        let f = f32::from_bits;
        self.slots[i] = Slot {
            base: Baseline {
                count: w[1],
                mean: f(w[2]),
                spread: f(w[3]),
            },
            novelty: Novelty::from_words(novelty),
            season,
            quiet: w[lstm - 2],
            fired: f(w[lstm - 1]),
            deviated: w[4],
            history: w[fixed..].iter().map(|&x| f(x)).collect(),
            last_input: f(w[5]),
            anomalous: w[6] != 0,
            // The ablation's day of samples is not state a snapshot carries.
            day_ago: None,
        };
        self.forecast[i] = f(w[7]);
        for k in 0..hd {
            self.h[i * hd + k] = f(w[lstm + k]);
            self.c[i * hd + k] = f(w[lstm + hd + k]);
        }
        true
    }
}
