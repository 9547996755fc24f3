//! The bounded per-series ring cache. Each series keeps its last N points
//! with their scores, and the newest unscored value for the next tick.
//!
//! Series have a lifecycle: one idle for `evict_idle_secs` is evicted, and
//! when the cache is full a new series takes the slot of the stalest one
//! that is not live (a series is live once it has sent two samples, the
//! latest within `protect_secs`). So a flood of junk names, each sent once,
//! cannot lock out a real sensor that comes later, and a working series is
//! never pushed out. An evicted slot is reused; its detector row starts
//! afresh (`take_evicted`).

mod metrics;
pub use metrics::CacheMetrics;

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use vigil_core::SeriesId;

/// One cached point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Unix ms.
    pub ts_ms: i64,
    /// Value.
    pub value: f64,
    /// Anomaly score given at the tick that scored it.
    pub score: f32,
    /// Whether a tick scored this point (only the newest point of a series
    /// at each tick is scored; the ones between are raw samples).
    pub scored: bool,
}

/// One series' cache entry.
#[derive(Debug)]
pub struct Entry {
    /// Its id.
    pub id: SeriesId,
    /// Recent points, oldest first.
    pub points: VecDeque<Point>,
    /// The newest value not yet scored.
    pub pending: Option<f64>,
    /// Latest score: the detector's evidence, high for as long as an
    /// anomaly lasts (what keeps an episode open).
    pub score: f32,
    /// Latest onset score: the detector's score, quiet for a refractory
    /// period after an alarm (what opens an episode).
    pub onset: f32,
    /// Points added since the last uplink took them.
    unsent: usize,
    /// When the series got its slot, as a count of series ever admitted
    /// (slots are reused; this tells one occupant from the next). 0: the
    /// slot is free.
    pub born: u64,
    /// Samples accepted since the series got its slot.
    samples: u64,
}

impl Entry {
    fn free() -> Self {
        Self {
            id: SeriesId::new(vigil_core::EntityId(String::new()), ""),
            points: VecDeque::new(),
            pending: None,
            score: 0.0,
            onset: 0.0,
            unsent: 0,
            born: 0,
            samples: 0,
        }
    }

    /// Whether the series has shown it is a stream: two samples or more,
    /// the latest within `protect_ms` of `now_ms`.
    fn live(&self, now_ms: i64, protect_ms: i64) -> bool {
        self.samples >= 2
            && self
                .points
                .back()
                .is_some_and(|p| now_ms - p.ts_ms <= protect_ms)
    }
}

/// Why a sample was not cached.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Refusal {
    /// NaN or infinite.
    NotFinite,
    /// Older than the newest point of its series.
    OutOfOrder,
    /// The same timestamp as the newest point of its series (a message
    /// delivered twice, as MQTT's at-least-once may).
    Duplicate,
    /// Too far in the future.
    Future,
    /// Too far in the past.
    Past,
    /// A new series while the cache holds its maximum.
    Full,
    /// Larger in magnitude than any real reading (`max_abs_value`).
    TooLarge,
    /// A new series past its sender's `intake.max_new_series_per_sec`.
    NewSeriesRate,
}

impl Refusal {
    /// Every reason (label values).
    pub const ALL: [Refusal; 8] = [
        Refusal::NotFinite,
        Refusal::OutOfOrder,
        Refusal::Duplicate,
        Refusal::Future,
        Refusal::Past,
        Refusal::Full,
        Refusal::TooLarge,
        Refusal::NewSeriesRate,
    ];

    /// Bounded label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotFinite => "not_finite",
            Refusal::OutOfOrder => "out_of_order",
            Refusal::Duplicate => "duplicate",
            Refusal::Future => "future",
            Refusal::Past => "past",
            Refusal::Full => "cache_full",
            Refusal::TooLarge => "too_large",
            Refusal::NewSeriesRate => "new_series_rate",
        }
    }
}

/// All series, addressed by slot index (the detector's batch row).
#[derive(Debug)]
pub struct Cache {
    index: HashMap<SeriesId, usize>,
    entries: Vec<Entry>,
    max_series: usize,
    points: usize,
    max_past_ms: i64,
    max_abs: f64,
    born: u64,
    /// Free slots, reused before the vector grows.
    free: Vec<usize>,
    /// Slots emptied since the last `take_evicted`.
    evicted: Vec<usize>,
    /// Slots given to new series since the last `take_admitted`.
    admitted: Vec<usize>,
    /// Points of evicted series that no uplink took.
    lost: u64,
    idle_ms: i64,
    /// `None`: no series is ever pushed out to make room.
    protect_ms: Option<i64>,
}

/// Points not yet uplinked, taken by [`Cache::take_unsent`].
#[derive(Debug, Default)]
pub struct Unsent {
    /// Each point with its series, series in slot order, points oldest first.
    pub points: Vec<(SeriesId, Point)>,
    /// Points that left the ring before an uplink took them.
    pub lost: u64,
}

impl Cache {
    /// An empty cache with the given bounds.
    pub fn new(max_series: usize, points: usize) -> Self {
        Self {
            index: HashMap::new(),
            entries: Vec::new(),
            max_series,
            points,
            max_past_ms: i64::MAX,
            max_abs: f64::MAX,
            born: 0,
            free: Vec::new(),
            evicted: Vec::new(),
            admitted: Vec::new(),
            lost: 0,
            idle_ms: i64::MAX,
            protect_ms: None,
        }
    }

    /// Refuses samples older than `ms` before now.
    pub fn with_max_past(mut self, ms: i64) -> Self {
        self.max_past_ms = ms;
        self
    }

    /// Refuses values larger in magnitude than `max` (1.7e308 is no
    /// reading, and it overflows every sum the detector keeps).
    pub fn with_max_abs(mut self, max: f64) -> Self {
        self.max_abs = max;
        self
    }

    /// Evicts series idle for `idle_ms` (at [`Cache::sweep`]) and lets a
    /// new series take the stalest slot that is not live, a series being
    /// live while its latest of two or more samples is within `protect_ms`.
    pub fn with_lifecycle(mut self, idle_ms: i64, protect_ms: i64) -> Self {
        self.idle_ms = idle_ms;
        self.protect_ms = Some(protect_ms);
        self
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Evicts every series without a sample for `idle_ms`; returns how many.
    pub fn sweep(&mut self, now_ms: i64) -> usize {
        let idle: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                e.born != 0
                    && e.points
                        .back()
                        .is_none_or(|p| now_ms - p.ts_ms > self.idle_ms)
            })
            .collect();
        for &i in &idle {
            self.evict(i);
            self.free.push(i);
        }
        idle.len()
    }

    /// Empties slot `i` (its series forgotten, its memory returned).
    fn evict(&mut self, i: usize) {
        let old = std::mem::replace(&mut self.entries[i], Entry::free());
        self.index.remove(&old.id);
        self.lost += old.unsent.min(old.points.len()) as u64;
        self.evicted.push(i);
    }

    /// The slot for a new series: a free one, a new one below the bound,
    /// or the stalest one that is not live (evicted now).
    fn slot_for_new(&mut self, now_ms: i64) -> Option<(usize, bool)> {
        if let Some(i) = self.free.pop() {
            return Some((i, false));
        }
        if self.entries.len() < self.max_series {
            self.entries.push(Entry::free());
            return Some((self.entries.len() - 1, false));
        }
        let protect_ms = self.protect_ms?;
        let stalest = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.live(now_ms, protect_ms))
            .min_by_key(|(_, e)| e.points.back().map_or(i64::MIN, |p| p.ts_ms))
            .map(|(i, _)| i)?;
        self.evict(stalest);
        Some((stalest, true))
    }

    /// Slots given to new series since the last call (a restarted edge
    /// restores their detector rows from its snapshot).
    pub fn take_admitted(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.admitted)
    }

    /// Slots emptied since the last call: the detector starts those rows afresh.
    pub fn take_evicted(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.evicted)
    }

    /// The slots that hold a series, with their slot numbers.
    pub fn live_entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.born != 0)
    }

    /// Adds a sample. `now_ms` and `max_future_ms` bound the timestamp.
    pub fn push(
        &mut self,
        id: &SeriesId,
        ts_ms: i64,
        value: f64,
        now_ms: i64,
        max_future_ms: i64,
    ) -> Result<(), Refusal> {
        self.push_admit(id, ts_ms, value, now_ms, max_future_ms)
            .map(|_| ())
    }

    /// As [`Cache::push`]; `Ok(true)` when a new series took the slot of a
    /// stale one to get in.
    pub fn push_admit(
        &mut self,
        id: &SeriesId,
        ts_ms: i64,
        value: f64,
        now_ms: i64,
        max_future_ms: i64,
    ) -> Result<bool, Refusal> {
        if !value.is_finite() {
            return Err(Refusal::NotFinite);
        }
        if value.abs() > self.max_abs {
            return Err(Refusal::TooLarge);
        }
        if ts_ms > now_ms.saturating_add(max_future_ms) {
            return Err(Refusal::Future);
        }
        if ts_ms < now_ms.saturating_sub(self.max_past_ms) {
            return Err(Refusal::Past);
        }
        let (slot, displaced) = match self.index.get(id) {
            Some(&s) => (s, false),
            None => {
                let (slot, displaced) = self.slot_for_new(now_ms).ok_or(Refusal::Full)?;
                self.born += 1;
                self.entries[slot] = Entry {
                    id: id.clone(),
                    points: VecDeque::with_capacity(self.points),
                    pending: None,
                    score: 0.0,
                    onset: 0.0,
                    unsent: 0,
                    born: self.born,
                    samples: 0,
                };
                self.index.insert(id.clone(), slot);
                self.admitted.push(slot);
                (slot, displaced)
            }
        };
        let e = &mut self.entries[slot];
        match e.points.back().map(|p| p.ts_ms) {
            Some(last) if ts_ms < last => return Err(Refusal::OutOfOrder),
            Some(last) if ts_ms == last => return Err(Refusal::Duplicate),
            _ => {}
        }
        if e.points.len() >= self.points {
            e.points.pop_front();
        }
        e.points.push_back(Point {
            ts_ms,
            value,
            score: 0.0,
            scored: false,
        });
        e.pending = Some(value);
        e.unsent += 1;
        e.samples += 1;
        Ok(displaced)
    }

    /// Takes each series' pending value for the next tick (slot order).
    pub fn take_pending(&mut self) -> Vec<Option<f64>> {
        self.entries.iter_mut().map(|e| e.pending.take()).collect()
    }

    /// Stores a tick's scores; series that had a value get it on their newest point.
    pub fn set_scores(&mut self, scored: &[Option<f64>], scores: &[f32]) {
        self.set_tick(scored, scores, scores);
    }

    /// [`Cache::set_scores`] with the onset scores beside the evidence (the
    /// detector's `scores` and `evidence`; the points keep the evidence).
    pub fn set_tick(&mut self, scored: &[Option<f64>], evidence: &[f32], onsets: &[f32]) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            if scored.get(i).copied().flatten().is_some() {
                let s = evidence.get(i).copied().unwrap_or(0.0);
                e.score = s;
                e.onset = onsets.get(i).copied().unwrap_or(s);
                if let Some(p) = e.points.back_mut() {
                    p.score = s;
                    p.scored = true;
                }
            }
        }
    }

    /// Every point added since the last call, for the uplink.
    pub fn take_unsent(&mut self) -> Unsent {
        let mut out = Unsent {
            lost: std::mem::take(&mut self.lost),
            ..Unsent::default()
        };
        for e in &mut self.entries {
            let n = e.unsent.min(e.points.len());
            out.lost += (e.unsent - n) as u64;
            e.unsent = 0;
            let skip = e.points.len() - n;
            out.points
                .extend(e.points.iter().skip(skip).map(|p| (e.id.clone(), *p)));
        }
        out
    }

    /// When series `id`'s current run of scores at or above `level` began:
    /// the timestamp of the earliest scored point of that run (points
    /// between ticks, unscored, do not break it). `None` if its newest
    /// scored point is below `level`.
    pub fn onset(&self, id: &SeriesId, level: f32) -> Option<i64> {
        let e = self.get(id)?;
        let mut onset = None;
        for p in e.points.iter().rev().filter(|p| p.scored) {
            if p.score < level {
                break;
            }
            onset = Some(p.ts_ms);
        }
        onset
    }

    /// All entries in slot order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// One series' entry.
    pub fn get(&self, id: &SeriesId) -> Option<&Entry> {
        self.index.get(id).map(|&i| &self.entries[i])
    }
}

#[cfg(test)]
mod tests;
