//! The domain vocabulary: priorities, statuses and the shape of an ingestion.
//! Plain data shared by every thread; no I/O, no knowledge of HTTP. Statuses and delivery
//! progress are atomics; a batch's last error sits behind its own leaf lock (held only to
//! copy or replace it, never with another lock).

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
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
    pub(crate) const fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Medium => 1,
            Priority::Low => 2,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Priority::High => "HIGH",
            Priority::Medium => "MEDIUM",
            Priority::Low => "LOW",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a batch is in its life: `YetToStart` -> `Triggered` -> `Completed` or `Failed`. A
/// batch waiting out a backoff before its next release stays `Triggered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum BatchStatus {
    YetToStart = 0,
    Triggered = 1,
    Completed = 2,
    /// Nothing of it is left to retry and some of its ids failed for good.
    Failed = 3,
}

impl BatchStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BatchStatus::YetToStart => "yet_to_start",
            BatchStatus::Triggered => "triggered",
            BatchStatus::Completed => "completed",
            BatchStatus::Failed => "failed",
        }
    }

    /// The status stored as `v` (the enum's discriminant), if it is one.
    pub(crate) fn stored(v: u8) -> Option<BatchStatus> {
        [BatchStatus::YetToStart, BatchStatus::Triggered, BatchStatus::Completed, BatchStatus::Failed]
            .into_iter()
            .find(|&status| status as u8 == v)
    }

    /// The status in a batch's atomic, where only discriminants are ever stored.
    fn from_u8(v: u8) -> BatchStatus {
        BatchStatus::stored(v).expect("a batch's atomic holds a status")
    }

    /// Whether nothing more will happen to the batch.
    pub(crate) fn is_finished(self) -> bool {
        matches!(self, BatchStatus::Completed | BatchStatus::Failed)
    }

    /// The status of an ingestion whose batches have these statuses: `yet_to_start` while
    /// all are; once all are completed or failed, `failed` if any failed, else `completed`;
    /// `triggered` otherwise.
    pub(crate) fn of_ingestion(batches: impl IntoIterator<Item = BatchStatus>) -> BatchStatus {
        let (mut all_waiting, mut all_done, mut any_failed) = (true, true, false);
        for status in batches {
            all_waiting &= status == BatchStatus::YetToStart;
            all_done &= status.is_finished();
            any_failed |= status == BatchStatus::Failed;
        }
        match (all_waiting, all_done, any_failed) {
            (true, _, _) => BatchStatus::YetToStart,
            (false, true, true) => BatchStatus::Failed,
            (false, true, false) => BatchStatus::Completed,
            (false, false, _) => BatchStatus::Triggered,
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
    /// Per id (same order as `ids`), what came of delivering it: see [`Delivery`].
    delivery: Box<[AtomicU8]>,
    batch_size: usize,
    batches: Box<[BatchState]>,
    /// Batches not yet completed or failed; when it reaches 0, `completed_at_ms` is set.
    remaining: AtomicU32,
    /// When the last batch completed or failed, in Unix milliseconds; 0 while unfinished.
    completed_at_ms: AtomicU64,
    /// Set once, by the queue, when the ingestion is submitted.
    enqueued: OnceLock<Enqueued>,
}

/// Where and when an ingestion entered the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Enqueued {
    /// The level index its first batch has, or would have had: how many batches of its priority
    /// were submitted before it (see `scheduler::Outlook::position`). For an ingestion restored
    /// after a restart with some batches already released, it counts those as if submitted
    /// just before (so it may wrap below zero).
    pub first: u64,
    pub at: Instant,
}

/// What came of delivering one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Delivery {
    /// Not delivered yet: the next release of its batch sends it.
    Pending = 0,
    /// The API took it; it is never sent again.
    Delivered = 1,
    /// Failed for good (a permanent error, or still pending after the last attempt).
    Failed = 2,
}

impl Delivery {
    /// The outcome stored as `v` (the enum's discriminant), if it is one.
    pub(crate) fn stored(v: u8) -> Option<Delivery> {
        [Delivery::Pending, Delivery::Delivered, Delivery::Failed].into_iter().find(|&d| d as u8 == v)
    }

    /// The outcome in an id's atomic, where only discriminants are ever stored.
    fn from_u8(v: u8) -> Delivery {
        Delivery::stored(v).expect("an id's atomic holds an outcome")
    }
}

#[derive(Debug)]
struct BatchState {
    id: Uuid,
    status: AtomicU8,
    attempts: AtomicU8,
    /// When it was last triggered and when completed (or failed), in Unix milliseconds; 0 until
    /// then. Written before `status`, so a reader that sees the status sees the time.
    triggered_ms: AtomicU64,
    completed_ms: AtomicU64,
    /// When its next release may go, while it waits out a backoff; 0 otherwise.
    retry_at_ms: AtomicU64,
    /// The last failure of one of its ids, for a person: `id 7: HTTP 503 after 2.1 s`.
    last_error: Mutex<Option<Arc<str>>>,
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
    /// Per id, what came of delivering it (`Delivery` as a byte); empty: all pending.
    pub delivery: Vec<u8>,
    /// Per batch, its last error; empty: none.
    pub last_errors: Vec<Option<Box<str>>>,
}

/// One batch as recorded in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: Uuid,
    pub status: BatchStatus,
    pub attempts: u8,
    /// Unix milliseconds of the last release, 0 if never released.
    pub triggered_at_ms: u64,
    /// Unix milliseconds of completion (or failure), 0 if not finished.
    pub completed_at_ms: u64,
    /// Unix milliseconds when its next release may go, while it waits for a retry; 0 otherwise.
    pub retry_at_ms: u64,
}

/// A read-only view of one batch of an ingestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView<'a> {
    pub batch_id: Uuid,
    pub ids: &'a [Id],
    pub status: BatchStatus,
    /// How many times the batch has been released: 0 while waiting, 1 normally, more for each
    /// retry and each run again after a crash interrupted it in flight.
    pub attempts: u8,
    pub triggered_at: Option<SystemTime>,
    /// When it completed, or failed.
    pub completed_at: Option<SystemTime>,
    /// When its next release may go, while it waits out a backoff after a failed release.
    pub retry_at: Option<SystemTime>,
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
                retry_at_ms: 0,
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
            delivery: Vec::new(),
            last_errors: Vec::new(),
        })
    }

    /// Rebuilds an ingestion exactly as recorded.
    pub(crate) fn restore(record: IngestionRecord) -> Ingestion {
        let remaining = record.batches.iter().filter(|b| !b.status.is_finished()).count();
        let completed_at_ms =
            if remaining == 0 { record.batches.iter().map(|b| b.completed_at_ms).max().unwrap_or(0) } else { 0 };
        let batches = record
            .batches
            .iter()
            .zip(0..)
            .map(|(b, index)| BatchState {
                id: b.id,
                status: AtomicU8::new(b.status as u8),
                attempts: AtomicU8::new(b.attempts),
                triggered_ms: AtomicU64::new(b.triggered_at_ms),
                completed_ms: AtomicU64::new(b.completed_at_ms),
                retry_at_ms: AtomicU64::new(b.retry_at_ms),
                last_error: Mutex::new(record.last_errors.get(index).cloned().flatten().map(Arc::from)),
            })
            .collect();
        let delivery =
            (0..record.ids.len()).map(|at| AtomicU8::new(record.delivery.get(at).copied().unwrap_or(0))).collect();
        Ingestion {
            id: record.id,
            priority: record.priority,
            accepted_at_ms: record.accepted_at_ms,
            idempotency_key: record.idempotency_key,
            ids: record.ids.into_boxed_slice(),
            delivery,
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
                    retry_at_ms: b.retry_at_ms.load(Ordering::Acquire),
                })
                .collect(),
            delivery: self.delivery.iter().map(|d| d.load(Ordering::Acquire)).collect(),
            last_errors: self.batches.iter().map(|b| b.last_error.lock().as_deref().map(Box::from)).collect(),
        }
    }

    pub fn ids(&self) -> &[Id] {
        &self.ids
    }

    /// How many ids it holds, over all its batches.
    pub(crate) fn id_count(&self) -> usize {
        self.ids.len()
    }

    /// Where and when it entered the queue; `None` until it is submitted.
    pub(crate) fn enqueued(&self) -> Option<Enqueued> {
        self.enqueued.get().copied()
    }

    /// Records where it entered the queue. The first call wins: an ingestion is queued once.
    pub(crate) fn set_enqueued(&self, enqueued: Enqueued) {
        let _ = self.enqueued.set(enqueued);
    }

    /// When the last batch completed (Unix milliseconds), or `None` while unfinished.
    pub fn completed_at_ms(&self) -> Option<u64> {
        Some(self.completed_at_ms.load(Ordering::Acquire)).filter(|&t| t != 0)
    }

    pub(crate) fn batch_count(&self) -> usize {
        self.batches.len()
    }

    pub fn batch(&self, index: usize) -> BatchView<'_> {
        let state = &self.batches[index];
        // Status first: the times were written before it.
        let status = BatchStatus::from_u8(state.status.load(Ordering::Acquire));
        BatchView {
            batch_id: state.id,
            ids: &self.ids[self.span(index)],
            status,
            attempts: state.attempts.load(Ordering::Acquire),
            triggered_at: wall(state.triggered_ms.load(Ordering::Acquire)),
            completed_at: wall(state.completed_ms.load(Ordering::Acquire)),
            retry_at: wall(state.retry_at_ms.load(Ordering::Acquire)),
        }
    }

    /// Where batch `index`'s ids are in `ids`.
    fn span(&self, index: usize) -> std::ops::Range<usize> {
        let start = index * self.batch_size;
        start..(start + self.batch_size).min(self.ids.len())
    }

    /// What came of each id of batch `index`, in order.
    pub(crate) fn deliveries(&self, index: usize) -> impl Iterator<Item = (Id, Delivery)> + '_ {
        let span = self.span(index);
        self.ids[span.clone()]
            .iter()
            .zip(&self.delivery[span])
            .map(|(&id, state)| (id, Delivery::from_u8(state.load(Ordering::Acquire))))
    }

    /// The ids of batch `index` that failed for good, in order.
    pub fn failed_ids(&self, index: usize) -> Vec<Id> {
        self.deliveries(index).filter(|&(_, d)| d == Delivery::Failed).map(|(id, _)| id).collect()
    }

    /// How many ids of batch `index` are still to be delivered.
    pub(crate) fn pending_count(&self, index: usize) -> usize {
        self.deliveries(index).filter(|&(_, d)| d == Delivery::Pending).count()
    }

    /// The last failure of batch `index`, if any.
    pub fn last_error(&self, index: usize) -> Option<Arc<str>> {
        self.batches[index].last_error.lock().clone()
    }

    /// Records what came of the id at position `at` (from 0) of batch `index`.
    pub(crate) fn set_delivery(&self, index: usize, at: usize, delivery: Delivery) {
        let span = self.span(index);
        self.delivery[span][at].store(delivery as u8, Ordering::Release);
    }

    /// Positions (in batch `index`) of its ids that are delivered, and of those failed for good.
    pub(crate) fn progress(&self, index: usize) -> (Vec<u32>, Vec<u32>) {
        let (mut delivered, mut failed) = (Vec::new(), Vec::new());
        for ((_, d), at) in self.deliveries(index).zip(0u32..) {
            match d {
                Delivery::Delivered => delivered.push(at),
                Delivery::Failed => failed.push(at),
                Delivery::Pending => {}
            }
        }
        (delivered, failed)
    }

    pub(crate) fn set_last_error(&self, index: usize, error: Option<Arc<str>>) {
        *self.batches[index].last_error.lock() = error;
    }

    /// Records when batch `index` may be released again (0: it does not wait).
    pub(crate) fn set_retry_at(&self, index: usize, at_ms: u64) {
        self.batches[index].retry_at_ms.store(at_ms, Ordering::Release);
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
        state.retry_at_ms.store(0, Ordering::Release);
        state.status.store(BatchStatus::Triggered as u8, Ordering::Release);
        attempt
    }

    /// Marks batch `index` completed at `now_ms`; returns whether the whole ingestion is now
    /// finished.
    pub(crate) fn complete(&self, index: usize, now_ms: u64) -> bool {
        self.finish(index, BatchStatus::Completed, now_ms)
    }

    /// Marks batch `index` finished (`Completed` or `Failed`) at `now_ms`; returns whether the
    /// whole ingestion is now finished. A batch finishes once: later calls change nothing.
    pub(crate) fn finish(&self, index: usize, status: BatchStatus, now_ms: u64) -> bool {
        debug_assert!(status.is_finished());
        let state = &self.batches[index];
        if BatchStatus::from_u8(state.status.load(Ordering::Acquire)).is_finished() {
            return false;
        }
        state.completed_ms.store(now_ms.max(1), Ordering::Release);
        state.retry_at_ms.store(0, Ordering::Release);
        let previous = BatchStatus::from_u8(state.status.swap(status as u8, Ordering::AcqRel));
        if previous.is_finished() {
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
    pub(crate) fn view(&self) -> BatchView<'_> {
        self.ingestion.batch(self.index as usize)
    }

    pub(crate) fn trigger(&self, at_ms: u64) -> u8 {
        self.ingestion.trigger(self.index as usize, at_ms)
    }

    pub(crate) fn complete(&self, now_ms: u64) -> bool {
        self.ingestion.complete(self.index as usize, now_ms)
    }

    pub(crate) fn finish(&self, status: BatchStatus, now_ms: u64) -> bool {
        self.ingestion.finish(self.index as usize, status, now_ms)
    }

    /// What came of each id of this batch, in order.
    pub(crate) fn deliveries(&self) -> impl Iterator<Item = (Id, Delivery)> + '_ {
        self.ingestion.deliveries(self.index as usize)
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.ingestion.pending_count(self.index as usize)
    }

    pub(crate) fn set_delivery(&self, at: usize, delivery: Delivery) {
        self.ingestion.set_delivery(self.index as usize, at, delivery);
    }

    pub(crate) fn set_last_error(&self, error: Option<Arc<str>>) {
        self.ingestion.set_last_error(self.index as usize, error);
    }

    pub(crate) fn set_retry_at(&self, at_ms: u64) {
        self.ingestion.set_retry_at(self.index as usize, at_ms);
    }

    /// What a `progress` record says of it: with nothing left to retry (`retry_at_ms` 0) it has
    /// failed, else it waits until `retry_at_ms`.
    pub(crate) fn record_progress(&self, at_ms: u64, retry_at_ms: u64) {
        if retry_at_ms == 0 {
            self.finish(BatchStatus::Failed, at_ms);
        }
        self.set_retry_at(retry_at_ms);
    }

    /// When its next release may go, in Unix milliseconds, while it waits for a retry; else 0.
    pub(crate) fn retry_at_ms(&self) -> u64 {
        self.ingestion.batches[self.index as usize].retry_at_ms.load(Ordering::Acquire)
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
        check(&[Failed], Failed);
        check(&[Completed, Failed], Failed);
        check(&[Failed, Triggered], Triggered);
        check(&[Failed, YetToStart], Triggered);
    }

    #[test]
    fn a_failed_batch_finishes_the_ingestion_once() {
        let ingestion = Ingestion::new(Priority::Low, vec![1, 2, 3, 4], 2, 0, None);
        ingestion.set_delivery(1, 1, Delivery::Failed);
        ingestion.set_delivery(1, 0, Delivery::Delivered);
        assert_eq!(ingestion.failed_ids(1), [4]);
        assert_eq!((ingestion.pending_count(0), ingestion.pending_count(1)), (2, 0));
        assert!(!ingestion.finish(1, Failed, 7));
        assert!(!ingestion.finish(1, Completed, 8), "a batch finishes once");
        assert_eq!(ingestion.batch(1).status, Failed);
        assert!(ingestion.complete(0, 9));
        assert_eq!((ingestion.status(), ingestion.completed_at_ms()), (Failed, Some(9)));
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
