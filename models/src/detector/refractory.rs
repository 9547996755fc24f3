//! The refractory period: one incident, one detection (what NAB and a
//! pager count).

use super::Slot;

/// Score margin by which an event must beat the alarm that began a
/// refractory period to alarm again within it.
const STRONGER_BY: f32 = 0.1;
/// The most a held-back score may be (below any sensible threshold).
const HELD_CAP: f32 = 0.5;
/// Once the score is calm again (below [`HELD_CAP`]), the quiet lasts at
/// most this many more samples: the alarm's run is over, and a new fault on
/// the same series (a leak after a restart's noise) must not wait out the
/// rest. On wsd-dev: 271 caught, 0.144 false alarms per series-day, event
/// F1 0.440 (267, 0.139 and 0.439 without); nab-dev 72.69 / 69.31 (73.17 /
/// 70.28); 5 samples gave 0.150 and 72.55 / 68.50.
const CALM_SAMPLES: u32 = 15;

/// The refractory period: an alarm at `threshold` starts `samples` of
/// quiet in which the score is capped at [`HELD_CAP`], unless it beats the
/// alarm by [`STRONGER_BY`] (which starts a new period). A score still at
/// the threshold prolongs the quiet: a run is one detection, however long.
/// A calm score shortens it to [`CALM_SAMPLES`].
pub(super) fn hold_back(slot: &mut Slot, score: f32, samples: u32, threshold: f32) -> f32 {
    if samples == 0 {
        return score;
    }
    if slot.quiet > 0 {
        slot.quiet -= 1;
        if score < HELD_CAP {
            slot.quiet = slot.quiet.min(CALM_SAMPLES);
        }
        if score < slot.fired + STRONGER_BY {
            if score >= threshold {
                // Still the same run: it stays one detection.
                slot.quiet = samples;
            }
            return score.min(HELD_CAP);
        }
    } else if score < threshold {
        return score;
    }
    (slot.fired, slot.quiet) = (score, samples);
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_one_detection_and_a_new_fault_after_calm_is_another() {
        let mut slot = Slot::fresh(4);
        let (samples, threshold) = (50, 0.75);
        assert_eq!(hold_back(&mut slot, 1.0, samples, threshold), 1.0);
        // The same run, however long: held back.
        for _ in 0..100 {
            assert_eq!(hold_back(&mut slot, 0.9, samples, threshold), HELD_CAP);
        }
        // Restless but under the threshold: the quiet runs its course.
        for _ in 0..samples - 1 {
            assert_eq!(hold_back(&mut slot, 0.6, samples, threshold), HELD_CAP);
        }
        assert_eq!(hold_back(&mut slot, 1.0, samples, threshold), HELD_CAP);
        // Calm past CALM_SAMPLES: the next fault is a detection of its own,
        // long before the quiet would have run out.
        for _ in 0..=CALM_SAMPLES {
            assert_eq!(hold_back(&mut slot, 0.1, samples, threshold), 0.1);
        }
        assert_eq!(hold_back(&mut slot, 1.0, samples, threshold), 1.0);
    }
}
