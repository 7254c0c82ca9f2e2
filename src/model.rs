//! The domain vocabulary: priorities, statuses and the shape of an ingestion.
//! Plain data shared by every thread; no locks, no I/O, no knowledge of HTTP.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// Largest id the external API accepts (10^9 + 7).
pub const MAX_ID: u32 = 1_000_000_007;

/// An id the external API accepts: an integer in `1..=MAX_ID`. Fits in a `u32`.
pub type Id = u32;

/// How urgently an ingestion should run. Higher priorities are released first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Low,
    Medium,
    High,
}

impl Priority {
    /// Every priority, HIGH first: the order `/queue` and `/metrics` list them in.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Medium, Priority::Low];

    /// This priority's place in [`Priority::ALL`]: the one index of every per-priority array.
    pub const fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Medium => 1,
            Priority::Low => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "HIGH",
            Priority::Medium => "MEDIUM",
            Priority::Low => "LOW",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a batch is in its life: `YetToStart` -> `Triggered` -> `Completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum BatchStatus {
    YetToStart = 0,
    Triggered = 1,
    Completed = 2,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::YetToStart => "yet_to_start",
            BatchStatus::Triggered => "triggered",
            BatchStatus::Completed => "completed",
        }
    }

    fn from_u8(v: u8) -> BatchStatus {
        match v {
            0 => BatchStatus::YetToStart,
            1 => BatchStatus::Triggered,
            _ => BatchStatus::Completed,
        }
    }

    /// The status of an ingestion whose batches have these statuses: `yet_to_start` while
    /// all are, `completed` when all are, `triggered` otherwise.
    pub fn of_ingestion(batches: impl IntoIterator<Item = BatchStatus>) -> BatchStatus {
        let (mut all_waiting, mut all_done) = (true, true);
        for status in batches {
            all_waiting &= status == BatchStatus::YetToStart;
            all_done &= status == BatchStatus::Completed;
        }
        match (all_waiting, all_done) {
            (true, _) => BatchStatus::YetToStart,
            (false, true) => BatchStatus::Completed,
            (false, false) => BatchStatus::Triggered,
        }
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accepted request: its ids, cut into batches, and each batch's status.
///
/// Shared (behind an `Arc`) by the store, the queue and the worker; statuses are atomics so
/// that a status read never waits for the queue lock.
#[derive(Debug)]
pub struct Ingestion {
    pub id: Uuid,
    pub priority: Priority,
    /// When it was accepted, in Unix milliseconds.
    pub accepted_at_ms: u64,
    /// The `Idempotency-Key` it was posted with, if any.
    pub idempotency_key: Option<Box<str>>,
    ids: Box<[Id]>,
    batch_size: usize,
    batches: Box<[BatchState]>,
    /// Batches not yet completed; when it reaches 0, `completed_at_ms` is set.
    remaining: AtomicU32,
    /// When the last batch completed, in Unix milliseconds; 0 while unfinished.
    completed_at_ms: AtomicU64,
    /// Set once, by the queue, when the ingestion is submitted.
    enqueued: OnceLock<Enqueued>,
}

/// Where and when an ingestion entered the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The level index its first batch has, or would have had: how many batches of its priority
    /// were submitted before it (see `scheduler::Outlook::position`). For an ingestion restored
    /// after a restart with some batches already released, it counts those as if submitted
    /// just before (so it may wrap below zero).
    pub first: u64,
    pub at: Instant,
}

#[derive(Debug)]
struct BatchState {
    id: Uuid,
    status: AtomicU8,
    attempts: AtomicU8,
    /// When it was last triggered and when completed, in Unix milliseconds; 0 until then.
    /// Written before `status`, so a reader that sees the status sees the time.
    triggered_ms: AtomicU64,
    completed_ms: AtomicU64,
}

/// An ingestion as recorded in the journal, to be rebuilt after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestionRecord {
    pub id: Uuid,
    pub priority: Priority,
    pub accepted_at_ms: u64,
    pub idempotency_key: Option<Box<str>>,
    pub ids: Vec<Id>,
    pub batch_size: usize,
    pub batches: Vec<BatchRecord>,
}

/// One batch as recorded in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: Uuid,
    pub status: BatchStatus,
    pub attempts: u8,
    /// Unix milliseconds of the last release, 0 if never released.
    pub triggered_at_ms: u64,
    /// Unix milliseconds of completion, 0 if not completed.
    pub completed_at_ms: u64,
}

/// A read-only view of one batch of an ingestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView<'a> {
    pub batch_id: Uuid,
    pub ids: &'a [Id],
    pub status: BatchStatus,
    /// How many times the batch has been released: 0 while waiting, 1 normally, more after a
    /// batch in flight was interrupted by a crash and run again.
    pub attempts: u8,
    pub triggered_at: Option<SystemTime>,
    pub completed_at: Option<SystemTime>,
}

impl Ingestion {
    /// Cuts `ids` into consecutive batches of `batch_size`, in request order.
    ///
    /// Callers guarantee `ids` is non-empty and `batch_size >= 1`.
    pub fn new(
        priority: Priority,
        ids: Vec<Id>,
        batch_size: usize,
        accepted_at_ms: u64,
        key: Option<&str>,
    ) -> Ingestion {
        debug_assert!(!ids.is_empty() && batch_size >= 1);
        let batches = ids
            .chunks(batch_size)
            .map(|_| BatchRecord {
                id: Uuid::new_v4(),
                status: BatchStatus::YetToStart,
                attempts: 0,
                triggered_at_ms: 0,
                completed_at_ms: 0,
            })
            .collect();
        Ingestion::restore(IngestionRecord {
            id: Uuid::new_v4(),
            priority,
            accepted_at_ms,
            idempotency_key: key.map(Box::from),
            ids,
            batch_size,
            batches,
        })
    }

    /// Rebuilds an ingestion exactly as recorded.
    pub fn restore(record: IngestionRecord) -> Ingestion {
        let remaining = record.batches.iter().filter(|b| b.status != BatchStatus::Completed).count();
        let completed_at_ms =
            if remaining == 0 { record.batches.iter().map(|b| b.completed_at_ms).max().unwrap_or(0) } else { 0 };
        let batches = record
            .batches
            .iter()
            .map(|b| BatchState {
                id: b.id,
                status: AtomicU8::new(b.status as u8),
                attempts: AtomicU8::new(b.attempts),
                triggered_ms: AtomicU64::new(b.triggered_at_ms),
                completed_ms: AtomicU64::new(b.completed_at_ms),
            })
            .collect();
        Ingestion {
            id: record.id,
            priority: record.priority,
            accepted_at_ms: record.accepted_at_ms,
            idempotency_key: record.idempotency_key,
            ids: record.ids.into_boxed_slice(),
            batch_size: record.batch_size,
            batches,
            remaining: AtomicU32::new(u32::try_from(remaining).unwrap_or(u32::MAX)),
            completed_at_ms: AtomicU64::new(completed_at_ms),
            enqueued: OnceLock::new(),
        }
    }

    /// What the journal needs to rebuild this ingestion as it is now.
    pub fn record(&self) -> IngestionRecord {
        IngestionRecord {
            id: self.id,
            priority: self.priority,
            accepted_at_ms: self.accepted_at_ms,
            idempotency_key: self.idempotency_key.clone(),
            ids: self.ids.to_vec(),
            batch_size: self.batch_size,
            batches: self
                .batches
                .iter()
                .map(|b| BatchRecord {
                    id: b.id,
                    status: BatchStatus::from_u8(b.status.load(Ordering::Acquire)),
                    attempts: b.attempts.load(Ordering::Acquire),
                    triggered_at_ms: b.triggered_ms.load(Ordering::Acquire),
                    completed_at_ms: b.completed_ms.load(Ordering::Acquire),
                })
                .collect(),
        }
    }

    pub fn ids(&self) -> &[Id] {
        &self.ids
    }

    /// How many ids it holds, over all its batches.
    pub fn id_count(&self) -> usize {
        self.ids.len()
    }

    /// Where and when it entered the queue; `None` until it is submitted.
    pub fn enqueued(&self) -> Option<Enqueued> {
        self.enqueued.get().copied()
    }

    /// Records where it entered the queue. The first call wins: an ingestion is queued once.
    pub(crate) fn set_enqueued(&self, enqueued: Enqueued) {
        let _ = self.enqueued.set(enqueued);
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// When the last batch completed (Unix milliseconds), or `None` while unfinished.
    pub fn completed_at_ms(&self) -> Option<u64> {
        Some(self.completed_at_ms.load(Ordering::Acquire)).filter(|&t| t != 0)
    }

    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    pub fn batch(&self, index: usize) -> BatchView<'_> {
        let state = &self.batches[index];
        let start = index * self.batch_size;
        let end = (start + self.batch_size).min(self.ids.len());
        // Status first: the times were written before it.
        let status = BatchStatus::from_u8(state.status.load(Ordering::Acquire));
        BatchView {
            batch_id: state.id,
            ids: &self.ids[start..end],
            status,
            attempts: state.attempts.load(Ordering::Acquire),
            triggered_at: wall(state.triggered_ms.load(Ordering::Acquire)),
            completed_at: wall(state.completed_ms.load(Ordering::Acquire)),
        }
    }

    pub fn batches(&self) -> impl ExactSizeIterator<Item = BatchView<'_>> + '_ {
        (0..self.batch_count()).map(|i| self.batch(i))
    }

    pub fn status(&self) -> BatchStatus {
        BatchStatus::of_ingestion(self.batches().map(|b| b.status))
    }

    /// Marks batch `index` released at `at_ms`; returns which attempt this is (1 normally).
    pub(crate) fn trigger(&self, index: usize, at_ms: u64) -> u8 {
        let state = &self.batches[index];
        let attempt = state.attempts.load(Ordering::Acquire).saturating_add(1);
        state.attempts.store(attempt, Ordering::Release);
        state.triggered_ms.store(at_ms.max(1), Ordering::Release);
        state.status.store(BatchStatus::Triggered as u8, Ordering::Release);
        attempt
    }

    /// Marks batch `index` completed at `now_ms`; returns whether the whole ingestion now is.
    pub(crate) fn complete(&self, index: usize, now_ms: u64) -> bool {
        let state = &self.batches[index];
        if state.status.load(Ordering::Acquire) == BatchStatus::Completed as u8 {
            return false;
        }
        state.completed_ms.store(now_ms.max(1), Ordering::Release);
        let previous = state.status.swap(BatchStatus::Completed as u8, Ordering::AcqRel);
        if previous == BatchStatus::Completed as u8 {
            return false;
        }
        let finished = self.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if finished {
            self.completed_at_ms.store(now_ms.max(1), Ordering::Release);
        }
        finished
    }
}

fn wall(unix_ms: u64) -> Option<SystemTime> {
    (unix_ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(unix_ms))
}

/// A handle to one batch of an ingestion: what the queue releases and the worker runs.
#[derive(Debug, Clone)]
pub struct Batch {
    pub ingestion: Arc<Ingestion>,
    pub index: u32,
}

impl Batch {
    pub fn view(&self) -> BatchView<'_> {
        self.ingestion.batch(self.index as usize)
    }

    pub(crate) fn trigger(&self, at_ms: u64) -> u8 {
        self.ingestion.trigger(self.index as usize, at_ms)
    }

    pub(crate) fn complete(&self, now_ms: u64) -> bool {
        self.ingestion.complete(self.index as usize, now_ms)
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = self.view();
        write!(
            f,
            "batch {} ({} {}/{} of ingestion {}, ids {:?})",
            view.batch_id,
            self.ingestion.priority,
            self.index + 1,
            self.ingestion.batch_count(),
            self.ingestion.id,
            view.ids
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BatchStatus::*;

    #[track_caller]
    fn check(batches: &[BatchStatus], expected: BatchStatus) {
        assert_eq!(BatchStatus::of_ingestion(batches.iter().copied()), expected, "{batches:?}");
    }

    #[test]
    fn ingestion_status_table() {
        check(&[YetToStart], YetToStart);
        check(&[YetToStart, YetToStart], YetToStart);
        check(&[Triggered, YetToStart], Triggered);
        check(&[Completed, YetToStart], Triggered);
        check(&[Completed, Triggered], Triggered);
        check(&[Completed, Completed, YetToStart], Triggered);
        check(&[Completed], Completed);
        check(&[Completed, Completed], Completed);
    }

    #[test]
    fn batches_are_cut_in_request_order() {
        let ingestion = Ingestion::new(Priority::Medium, vec![1, 2, 3, 4, 5], 3, 0, None);
        let cut: Vec<&[Id]> = ingestion.batches().map(|b| b.ids).collect();
        assert_eq!(cut, [&[1, 2, 3][..], &[4, 5][..]]);
        let singles = Ingestion::new(Priority::Low, vec![7, 7], 1, 0, None);
        let one: Vec<&[Id]> = singles.batches().map(|b| b.ids).collect();
        assert_eq!(one, [&[7][..], &[7][..]]);
    }

    #[test]
    fn transitions_count_attempts_and_finish_once() {
        let ingestion = Ingestion::new(Priority::High, vec![1, 2, 3, 4], 3, 5, Some("k"));
        assert_eq!(ingestion.trigger(0, 5), 1);
        assert!(!ingestion.complete(0, 10));
        assert_eq!(ingestion.trigger(1, 11), 1);
        assert_eq!(ingestion.trigger(1, 12), 2);
        assert_eq!(ingestion.completed_at_ms(), None);
        assert!(ingestion.complete(1, 20));
        assert!(!ingestion.complete(1, 30), "completing twice finishes once");
        assert_eq!(ingestion.completed_at_ms(), Some(20));
        let attempts: Vec<u8> = ingestion.batches().map(|b| b.attempts).collect();
        assert_eq!(attempts, [1, 2]);
        let triggered: Vec<Option<SystemTime>> = ingestion.batches().map(|b| b.triggered_at).collect();
        assert_eq!(triggered, [wall(5), wall(12)]);
        assert_eq!(ingestion.batch(0).completed_at, wall(10));
        let again = Ingestion::restore(ingestion.record());
        assert_eq!(again.record(), ingestion.record());
        assert_eq!(again.completed_at_ms(), Some(20));
    }

    #[test]
    fn priorities_order_high_first() {
        assert!(Priority::High > Priority::Medium && Priority::Medium > Priority::Low);
        assert_eq!(Priority::parse("HIGH"), Some(Priority::High));
        assert_eq!(Priority::parse("high"), None);
        for (index, priority) in Priority::ALL.into_iter().enumerate() {
            assert_eq!(priority.index(), index, "{priority}");
        }
    }
}
