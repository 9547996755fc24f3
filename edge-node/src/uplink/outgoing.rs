//! What goes up as samples: the points a tick scored as `scores` (kept
//! before raw samples when the buffer is full), the points between ticks
//! as `samples`, each message small enough for any broker.

use super::Queued;
use crate::cache::Point;
use crate::spool::Priority;
use vigil_core::message::{SampleBatch, ScoredSample};
use vigil_core::topic::{self, UplinkKind};
use vigil_core::SeriesId;

/// Samples per message: well under the broker's packet limit.
pub const SAMPLES_PER_MESSAGE: usize = 2000;

/// The cache's unsent points of `site` as uplink messages.
pub fn sample_messages(site: &str, points: Vec<(SeriesId, Point)>) -> Vec<Queued> {
    let (scored, raw): (Vec<_>, Vec<_>) = points
        .into_iter()
        .map(|(id, p)| ScoredSample {
            entity: id.entity,
            metric: id.metric,
            ts_ms: p.ts_ms,
            value: p.value,
            score: p.scored.then_some(p.score as f64),
        })
        .partition(|s| s.score.is_some());
    let mut out = Vec::new();
    for (priority, kind, samples) in [
        (Priority::Scores, UplinkKind::Scores, scored),
        (Priority::Samples, UplinkKind::Samples, raw),
    ] {
        for chunk in samples.chunks(SAMPLES_PER_MESSAGE) {
            let batch = SampleBatch {
                site: site.to_string(),
                samples: chunk.to_vec(),
            };
            out.push(Queued::new(priority, topic::uplink(site, kind), &batch));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::EntityId;

    fn point(ts_ms: i64, scored: bool) -> (SeriesId, Point) {
        let id = SeriesId::new(EntityId::host("h"), "cpu");
        let p = Point {
            ts_ms,
            value: 1.0,
            score: 0.5,
            scored,
        };
        (id, p)
    }

    #[test]
    fn scored_points_go_as_scores_first_and_every_message_is_bounded() {
        let mut points: Vec<_> = (0..4500).map(|t| point(t, true)).collect();
        points.extend((0..10).map(|t| point(t, false)));
        let out = sample_messages("s1", points);
        let kinds: Vec<(Priority, &str)> =
            out.iter().map(|q| (q.priority, q.topic.as_str())).collect();
        let scores = (Priority::Scores, "vigil/v1/s1/uplink/scores");
        let samples = (Priority::Samples, "vigil/v1/s1/uplink/samples");
        assert_eq!(kinds, [scores, scores, scores, samples]);
        let sizes: Vec<usize> = out
            .iter()
            .map(|q| {
                let b: SampleBatch = vigil_core::decode(&q.payload, 1 << 24).unwrap();
                assert!(b
                    .samples
                    .iter()
                    .all(|s| s.score.is_some() == (q.priority == Priority::Scores)));
                b.samples.len()
            })
            .collect();
        assert_eq!(sizes, [2000, 2000, 500, 10]);
    }
}
