//! What the core has done, for `/metrics` and the dashboard: counters per priority, the release
//! lateness histogram, calls to the external API by outcome with their latency, and short rings
//! of recent releases and ingestions.
//!
//! Written by whoever submits (handler threads in memory mode, the journal thread in durable
//! mode), the main thread (a restart's restore), the pacer (on release, outside the queue lock)
//! and the worker (per call, and on the end of a release). Counters are atomics; each ring sits behind its own small
//! parking_lot lock, a leaf: never taken while the queue lock is held, nothing taken under it.
//! No I/O, no clock reads: times come from the caller.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::model::{Batch, Ingestion, Priority};
use crate::pacer::{Ended, Release};
use crate::upstream::Call;

/// Upper bounds of the release lateness buckets. The pacer wakes early and spins to its
/// deadline, so a healthy release is late by well under a millisecond; the wide end shows a stalled pacer.
pub(crate) const LATENESS_BUCKETS: [Duration; 12] = [
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

/// Upper bounds of the external API call latency buckets: from a loopback answer to a timeout.
pub(crate) const CALL_BUCKETS: [Duration; 14] = [
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_micros(2_500_000),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// The `outcome` label of external API calls, in the order `/metrics` lists them.
pub(crate) const CALL_OUTCOMES: [&str; 6] = ["2xx", "3xx", "4xx", "5xx", "timeout", "error"];

/// How many releases and ingestions the dashboard can show.
pub(crate) const RECENT_RELEASES: usize = 64;
pub(crate) const RECENT_INGESTIONS: usize = 20;

/// A histogram with fixed bucket bounds, updated with atomics only (so it can be a `static`).
#[derive(Debug)]
pub(crate) struct Histogram<const N: usize> {
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
    pub(crate) const fn new(bounds: [Duration; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            overflow: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, value: Duration) {
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
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
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
    batches_failed: AtomicU64,
    batch_retries: AtomicU64,
}

/// The counters of one priority, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PriorityTotals {
    pub ingestions: u64,
    pub ids: u64,
    pub batches_submitted: u64,
    /// Releases, retries included.
    pub batches_released: u64,
    pub batches_completed: u64,
    pub batches_failed: u64,
    /// Releases that ended with ids to retry: each is one more release to come.
    pub batch_retries: u64,
}

impl PriorityTotals {
    /// Batches waiting to be released, retries (in their backoff or not) included. Submissions
    /// and retries are counted before they reach the queue and releases before the worker hears
    /// of them, so this never goes below zero in practice; saturating keeps a scrape racing a
    /// submit from showing nonsense.
    pub fn queued(&self) -> u64 {
        (self.batches_submitted + self.batch_retries).saturating_sub(self.batches_released)
    }

    /// Releases that have not ended yet (0 or 1 over all priorities).
    pub(crate) fn in_flight(&self) -> u64 {
        self.batches_released.saturating_sub(self.batches_completed + self.batches_failed + self.batch_retries)
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
    /// External API calls, indexed like [`CALL_OUTCOMES`].
    calls: [AtomicU64; CALL_OUTCOMES.len()],
    call_latency: Histogram<{ CALL_BUCKETS.len() }>,
    releases: Mutex<VecDeque<ReleaseRecord>>,
    ingestions: Mutex<VecDeque<Arc<Ingestion>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counters: Default::default(),
            lateness: Histogram::new(LATENESS_BUCKETS),
            calls: Default::default(),
            call_latency: Histogram::new(CALL_BUCKETS),
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
    pub(crate) fn submitted(&self, ingestion: &Arc<Ingestion>) {
        let counters = &self.counters[ingestion.priority.index()];
        add(&counters.ingestions, 1);
        add(&counters.ids, ingestion.batches().map(|b| b.ids.len()).sum());
        add(&counters.batches_submitted, ingestion.batch_count());
        push_bounded(&mut self.ingestions.lock(), Arc::clone(ingestion), RECENT_INGESTIONS);
    }

    /// Puts ingestions a restart recovered among the recent ones (the dashboard's list), in order.
    pub(crate) fn recall(&self, ingestions: impl IntoIterator<Item = Arc<Ingestion>>) {
        let mut ring = self.ingestions.lock();
        for ingestion in ingestions {
            push_bounded(&mut ring, ingestion, RECENT_INGESTIONS);
        }
    }

    /// Called by the pacer with the queue lock released, before the worker is sent the batch.
    pub(crate) fn released(&self, release: &Release) {
        add(&self.counters[release.batch.ingestion.priority.index()].batches_released, 1);
        self.lateness.observe(release.at.saturating_duration_since(release.due));
        let record = ReleaseRecord { batch: release.batch.clone(), due: release.due, at: release.at };
        push_bounded(&mut self.releases.lock(), record, RECENT_RELEASES);
    }

    /// Batches recovered from the journal and queued again: they count as waiting, not as
    /// newly accepted work.
    pub(crate) fn restored(&self, priority: Priority, batches: usize) {
        add(&self.counters[priority.index()].batches_submitted, batches);
    }

    /// Called by the worker before the queue hears how the release ended.
    pub(crate) fn ended(&self, batch: &Batch, ended: Ended) {
        let counters = &self.counters[batch.ingestion.priority.index()];
        let counter = match ended {
            Ended::Completed => &counters.batches_completed,
            Ended::Failed => &counters.batches_failed,
            Ended::Retry { .. } => &counters.batch_retries,
        };
        add(counter, 1);
    }

    /// One call to the external API: what happened on the wire, and how long it took.
    pub(crate) fn call(&self, call: Call, took: Duration) {
        add(&self.calls[call.outcome()], 1);
        self.call_latency.observe(took);
    }

    /// External API calls per outcome, in [`CALL_OUTCOMES`] order.
    pub(crate) fn calls(&self) -> [(&'static str, u64); CALL_OUTCOMES.len()] {
        let mut out = CALL_OUTCOMES.map(|label| (label, 0));
        for (slot, counter) in out.iter_mut().zip(&self.calls) {
            slot.1 = counter.load(Ordering::Relaxed);
        }
        out
    }

    pub(crate) fn call_latency(&self) -> HistogramSnapshot {
        self.call_latency.snapshot()
    }

    /// Totals per priority, in [`Priority::ALL`] order (HIGH first).
    pub fn totals(&self) -> [(Priority, PriorityTotals); 3] {
        Priority::ALL.map(|priority| {
            let c = &self.counters[priority.index()];
            let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            // Endings are read before releases, and releases before submissions and retries, so
            // each total is at most the one it is compared with.
            let batches_completed = load(&c.batches_completed);
            let batches_failed = load(&c.batches_failed);
            let ended_retries = load(&c.batch_retries);
            let batches_released = load(&c.batches_released);
            let totals = PriorityTotals {
                ingestions: load(&c.ingestions),
                ids: load(&c.ids),
                batches_submitted: load(&c.batches_submitted),
                batches_released,
                batches_completed,
                batches_failed,
                batch_retries: ended_retries,
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
    pub(crate) fn recent_ingestions(&self) -> Vec<Arc<Ingestion>> {
        self.ingestions.lock().iter().rev().cloned().collect()
    }
}

pub(crate) fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, cap: usize) {
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
        metrics.ended(&batch, Ended::Completed);
        let [(_, high), (_, medium), (_, low)] = metrics.totals();
        assert_eq!((high, low), (PriorityTotals::default(), PriorityTotals::default()));
        let expected = PriorityTotals {
            ingestions: 1,
            ids: 5,
            batches_submitted: 2,
            batches_released: 1,
            batches_completed: 1,
            ..PriorityTotals::default()
        };
        assert_eq!((medium, medium.queued(), medium.in_flight()), (expected, 1, 0));
        assert_eq!((metrics.lateness().count, metrics.lateness().sum), (1, Duration::from_millis(3)));
        assert_eq!(metrics.recent_releases().len(), 1);
        assert_eq!(metrics.recent_ingestions()[0].id, ingestion.id);
    }

    #[test]
    fn a_retry_queues_the_batch_again_and_calls_count_by_outcome() {
        let metrics = Metrics::default();
        let ingestion = Arc::new(Ingestion::new(Priority::High, vec![1, 2], 2, 0, None));
        metrics.submitted(&ingestion);
        let batch = Batch { ingestion, index: 0 };
        let now = Instant::now();
        let release = Release { batch: batch.clone(), due: now, at: now, at_wall_ms: 0, attempt: 1 };
        let totals = |m: &Metrics| m.totals()[0].1;
        metrics.released(&release);
        assert_eq!((totals(&metrics).queued(), totals(&metrics).in_flight()), (0, 1));
        metrics.ended(&batch, Ended::Retry { backoff: Duration::from_secs(1) });
        assert_eq!((totals(&metrics).queued(), totals(&metrics).in_flight()), (1, 0));
        metrics.released(&release);
        metrics.ended(&batch, Ended::Failed);
        let t = totals(&metrics);
        assert_eq!((t.queued(), t.in_flight(), t.batches_failed, t.batch_retries), (0, 0, 1, 1));
        metrics.call(Call::Answered(503), Duration::from_millis(3));
        metrics.call(Call::TimedOut, Duration::from_secs(10));
        metrics.call(Call::Answered(204), Duration::from_millis(1));
        let calls = metrics.calls();
        assert_eq!(calls, [("2xx", 1), ("3xx", 0), ("4xx", 0), ("5xx", 1), ("timeout", 1), ("error", 0)]);
        assert_eq!(metrics.call_latency().count, 3);
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
