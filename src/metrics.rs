//! What the core has done, for `/metrics` and the dashboard: counters per priority, the release
//! lateness histogram, and short rings of recent releases and ingestions.
//!
//! Written by the handler threads (on submit), the pacer (on release, outside the queue lock) and
//! the worker (on completion). Counters are atomics; each ring sits behind its own small
//! parking_lot lock, a leaf: never taken while the queue lock is held, nothing taken under it.
//! No I/O, no clock reads: times come from the caller.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::model::{Batch, Ingestion, Priority};
use crate::pacer::Release;

/// Upper bounds of the release lateness buckets. The pacer wakes early and spins to its
/// deadline, so a healthy release is late by well under a millisecond; the wide end shows a stalled pacer.
pub const LATENESS_BUCKETS: [Duration; 12] = [
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// How many releases and ingestions the dashboard can show.
pub const RECENT_RELEASES: usize = 64;
pub const RECENT_INGESTIONS: usize = 20;

/// A histogram with fixed bucket bounds, updated with atomics only (so it can be a `static`).
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [Duration; N],
    /// `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`; `overflow` the rest.
    buckets: [AtomicU64; N],
    overflow: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A histogram read at one moment: cumulative counts per bound, as Prometheus wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations <= bound)`, bounds ascending.
    pub cumulative: Vec<(Duration, u64)>,
    /// Every observation, including those above the last bound.
    pub count: u64,
    pub sum: Duration,
}

impl<const N: usize> Histogram<N> {
    pub const fn new(bounds: [Duration; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            overflow: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: Duration) {
        let slot = self.bounds.iter().position(|&bound| value <= bound);
        match slot {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The count is the sum of the buckets read here, so `+Inf` always equals `count` even while
    /// other threads observe.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, bucket)| {
                running += bucket.load(Ordering::Relaxed);
                (bound, running)
            })
            .collect();
        let count = running + self.overflow.load(Ordering::Relaxed);
        HistogramSnapshot { cumulative, count, sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)) }
    }
}

/// Totals for one priority since the process started.
#[derive(Debug, Default)]
struct Counters {
    ingestions: AtomicU64,
    ids: AtomicU64,
    batches_submitted: AtomicU64,
    batches_released: AtomicU64,
    batches_completed: AtomicU64,
}

/// The counters of one priority, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PriorityTotals {
    pub ingestions: u64,
    pub ids: u64,
    pub batches_submitted: u64,
    pub batches_released: u64,
    pub batches_completed: u64,
}

impl PriorityTotals {
    /// Batches waiting to be released. Submissions are counted before they reach the queue and
    /// releases before the worker hears of them, so this never goes below zero in practice;
    /// saturating keeps a scrape racing a submit from showing nonsense.
    pub fn queued(&self) -> u64 {
        self.batches_submitted.saturating_sub(self.batches_released)
    }
}

/// A release as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct ReleaseRecord {
    pub batch: Batch,
    pub due: Instant,
    pub at: Instant,
}

/// Everything the core counts. One per [`crate::pacer::Queue`].
#[derive(Debug)]
pub struct Metrics {
    /// Indexed by [`Priority::index`].
    counters: [Counters; Priority::ALL.len()],
    lateness: Histogram<{ LATENESS_BUCKETS.len() }>,
    releases: Mutex<VecDeque<ReleaseRecord>>,
    ingestions: Mutex<VecDeque<Arc<Ingestion>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counters: Default::default(),
            lateness: Histogram::new(LATENESS_BUCKETS),
            releases: Mutex::default(),
            ingestions: Mutex::default(),
        }
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Metrics {
    /// Called before the ingestion reaches the queue, so a release is never counted first.
    pub fn submitted(&self, ingestion: &Arc<Ingestion>) {
        let counters = &self.counters[ingestion.priority.index()];
        add(&counters.ingestions, 1);
        add(&counters.ids, ingestion.batches().map(|b| b.ids.len()).sum());
        add(&counters.batches_submitted, ingestion.batch_count());
        push_bounded(&mut self.ingestions.lock(), Arc::clone(ingestion), RECENT_INGESTIONS);
    }

    /// Called by the pacer with the queue lock released, before the worker is sent the batch.
    pub fn released(&self, release: &Release) {
        add(&self.counters[release.batch.ingestion.priority.index()].batches_released, 1);
        self.lateness.observe(release.at.saturating_duration_since(release.due));
        let record = ReleaseRecord { batch: release.batch.clone(), due: release.due, at: release.at };
        push_bounded(&mut self.releases.lock(), record, RECENT_RELEASES);
    }

    /// Batches recovered from the journal and queued again: they count as waiting, not as
    /// newly accepted work.
    pub fn restored(&self, priority: Priority, batches: usize) {
        add(&self.counters[priority.index()].batches_submitted, batches);
    }

    pub fn completed(&self, batch: &Batch) {
        add(&self.counters[batch.ingestion.priority.index()].batches_completed, 1);
    }

    /// Totals per priority, in [`Priority::ALL`] order (HIGH first).
    pub fn totals(&self) -> [(Priority, PriorityTotals); 3] {
        Priority::ALL.map(|priority| {
            let c = &self.counters[priority.index()];
            let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            // Completed is read before released, and released before submitted, so each total
            // is at most the one it is compared with.
            let batches_completed = load(&c.batches_completed);
            let batches_released = load(&c.batches_released);
            let totals = PriorityTotals {
                ingestions: load(&c.ingestions),
                ids: load(&c.ids),
                batches_submitted: load(&c.batches_submitted),
                batches_released,
                batches_completed,
            };
            (priority, totals)
        })
    }

    pub fn lateness(&self) -> HistogramSnapshot {
        self.lateness.snapshot()
    }

    /// The most recent releases, oldest first.
    pub fn recent_releases(&self) -> Vec<ReleaseRecord> {
        self.releases.lock().iter().cloned().collect()
    }

    /// The most recent ingestions, newest first.
    pub fn recent_ingestions(&self) -> Vec<Arc<Ingestion>> {
        self.ingestions.lock().iter().rev().cloned().collect()
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, cap: usize) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [Duration; 3] = [Duration::from_millis(1), Duration::from_millis(10), Duration::from_millis(100)];

    #[track_caller]
    fn check(observations_ms: &[u64], expected_cumulative: [u64; 3], expected_count: u64) {
        let histogram = Histogram::new(BOUNDS);
        for &ms in observations_ms {
            histogram.observe(Duration::from_millis(ms));
        }
        let snapshot = histogram.snapshot();
        let cumulative: Vec<u64> = snapshot.cumulative.iter().map(|&(_, n)| n).collect();
        assert_eq!((cumulative.as_slice(), snapshot.count), (&expected_cumulative[..], expected_count));
        assert_eq!(snapshot.sum, Duration::from_millis(observations_ms.iter().sum()));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        check(&[], [0, 0, 0], 0);
        check(&[0], [1, 1, 1], 1);
        check(&[1], [1, 1, 1], 1);
        check(&[2], [0, 1, 1], 1);
        check(&[10, 11, 100], [0, 1, 3], 3);
        check(&[101, 5000], [0, 0, 0], 2);
    }

    #[test]
    fn submit_release_complete_moves_the_counters() {
        let metrics = Metrics::default();
        let ingestion = Arc::new(Ingestion::new(Priority::Medium, vec![1, 2, 3, 4, 5], 3, 0, None));
        metrics.submitted(&ingestion);
        let now = Instant::now();
        let batch = Batch { ingestion: Arc::clone(&ingestion), index: 0 };
        metrics.released(&Release {
            batch: batch.clone(),
            due: now,
            at: now + Duration::from_millis(3),
            at_wall_ms: 0,
            attempt: 1,
        });
        metrics.completed(&batch);
        let [(_, high), (_, medium), (_, low)] = metrics.totals();
        assert_eq!((high, low), (PriorityTotals::default(), PriorityTotals::default()));
        let expected =
            PriorityTotals { ingestions: 1, ids: 5, batches_submitted: 2, batches_released: 1, batches_completed: 1 };
        assert_eq!((medium, medium.queued()), (expected, 1));
        assert_eq!((metrics.lateness().count, metrics.lateness().sum), (1, Duration::from_millis(3)));
        assert_eq!(metrics.recent_releases().len(), 1);
        assert_eq!(metrics.recent_ingestions()[0].id, ingestion.id);
    }

    #[test]
    fn rings_keep_the_newest() {
        let metrics = Metrics::default();
        let ingestions: Vec<_> =
            (0..RECENT_INGESTIONS + 5).map(|_| Arc::new(Ingestion::new(Priority::Low, vec![1], 1, 0, None))).collect();
        for ingestion in &ingestions {
            metrics.submitted(ingestion);
        }
        let recent = metrics.recent_ingestions();
        assert_eq!(recent.len(), RECENT_INGESTIONS);
        assert_eq!(recent[0].id, ingestions.last().unwrap().id, "newest first");
        assert_eq!(recent[RECENT_INGESTIONS - 1].id, ingestions[5].id);
    }
}
