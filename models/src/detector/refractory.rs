//! The refractory period: one incident, one detection (what NAB and a
//! pager count).

use super::Slot;

/// Score margin by which an event must beat the alarm that began a
/// refractory period to alarm again within it.
const STRONGER_BY: f32 = 0.1;
/// The most a held-back score may be (below any sensible threshold).
const HELD_CAP: f32 = 0.5;

/// The refractory period: an alarm at `threshold` starts `samples` of
/// quiet in which the score is capped at [`HELD_CAP`], unless it beats the
/// alarm by [`STRONGER_BY`] (which starts a new period). A score still at
/// the threshold prolongs the quiet: a run is one detection, however long.
pub(super) fn hold_back(slot: &mut Slot, score: f32, samples: u32, threshold: f32) -> f32 {
    if samples == 0 {
        return score;
    }
    if slot.quiet > 0 {
        slot.quiet -= 1;
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
