//! The domain vocabulary: priorities, statuses and the shape of an ingestion.
//! Plain data shared by every thread; no locks, no I/O, no knowledge of HTTP.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Medium, Priority::Low];

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
    ids: Box<[Id]>,
    batch_size: usize,
    batches: Box<[BatchState]>,
    /// Set once, by the queue, when the ingestion is submitted.
    enqueued: OnceLock<Enqueued>,
}

/// Where and when an ingestion entered the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The level index of its first batch: how many batches of its priority were submitted
    /// before it (see `scheduler::Outlook::position`).
    pub first: u64,
    pub at: Instant,
}

#[derive(Debug)]
struct BatchState {
    id: Uuid,
    status: AtomicU8,
    /// When it was triggered and completed, as nanoseconds after `Enqueued::at` plus one; 0 until
    /// then. Written before `status`, so a reader that sees the status sees the time.
    triggered: AtomicU64,
    completed: AtomicU64,
}

/// A read-only view of one batch of an ingestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView<'a> {
    pub batch_id: Uuid,
    pub ids: &'a [Id],
    pub status: BatchStatus,
    pub triggered_at: Option<Instant>,
    pub completed_at: Option<Instant>,
}

impl Ingestion {
    /// Cuts `ids` into consecutive batches of `batch_size`, in request order.
    ///
    /// Callers guarantee `ids` is non-empty and `batch_size >= 1`.
    pub fn new(priority: Priority, ids: Vec<Id>, batch_size: usize) -> Ingestion {
        debug_assert!(!ids.is_empty() && batch_size >= 1);
        let batches = ids
            .chunks(batch_size)
            .map(|_| BatchState {
                id: Uuid::new_v4(),
                status: AtomicU8::new(0),
                triggered: AtomicU64::new(0),
                completed: AtomicU64::new(0),
            })
            .collect();
        let ids = ids.into_boxed_slice();
        Ingestion { id: Uuid::new_v4(), priority, ids, batch_size, batches, enqueued: OnceLock::new() }
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

    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    pub fn batch(&self, index: usize) -> BatchView<'_> {
        let state = &self.batches[index];
        let start = index * self.batch_size;
        let end = (start + self.batch_size).min(self.ids.len());
        // Status first: the times were written before it (see `set_status_at`).
        let status = BatchStatus::from_u8(state.status.load(Ordering::Acquire));
        BatchView {
            batch_id: state.id,
            ids: &self.ids[start..end],
            status,
            triggered_at: self.time(&state.triggered),
            completed_at: self.time(&state.completed),
        }
    }

    fn time(&self, stamp: &AtomicU64) -> Option<Instant> {
        let nanos = stamp.load(Ordering::Relaxed).checked_sub(1)?;
        Some(self.enqueued()?.at + Duration::from_nanos(nanos))
    }

    pub fn batches(&self) -> impl ExactSizeIterator<Item = BatchView<'_>> + '_ {
        (0..self.batch_count()).map(|i| self.batch(i))
    }

    pub fn status(&self) -> BatchStatus {
        BatchStatus::of_ingestion(self.batches().map(|b| b.status))
    }

    pub(crate) fn set_status(&self, index: usize, status: BatchStatus) {
        self.batches[index].status.store(status as u8, Ordering::Release);
    }

    /// Sets a batch's status and records when (`at`, from the queue's clock). Needs `enqueued`,
    /// which the queue sets before it releases anything of this ingestion.
    pub(crate) fn set_status_at(&self, index: usize, status: BatchStatus, at: Instant) {
        let state = &self.batches[index];
        let stamp = match (status, self.enqueued()) {
            (BatchStatus::Triggered, Some(e)) => Some((&state.triggered, e)),
            (BatchStatus::Completed, Some(e)) => Some((&state.completed, e)),
            _ => None,
        };
        if let Some((slot, e)) = stamp {
            let nanos = u64::try_from(at.saturating_duration_since(e.at).as_nanos()).unwrap_or(u64::MAX - 1);
            slot.store(nanos + 1, Ordering::Relaxed);
        }
        self.set_status(index, status);
    }
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

    pub(crate) fn set_status_at(&self, status: BatchStatus, at: Instant) {
        self.ingestion.set_status_at(self.index as usize, status, at);
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
        let ingestion = Ingestion::new(Priority::Medium, vec![1, 2, 3, 4, 5], 3);
        let cut: Vec<&[Id]> = ingestion.batches().map(|b| b.ids).collect();
        assert_eq!(cut, [&[1, 2, 3][..], &[4, 5][..]]);
        let singles = Ingestion::new(Priority::Low, vec![7, 7], 1);
        let one: Vec<&[Id]> = singles.batches().map(|b| b.ids).collect();
        assert_eq!(one, [&[7][..], &[7][..]]);
    }

    #[test]
    fn priorities_order_high_first() {
        assert!(Priority::High > Priority::Medium && Priority::Medium > Priority::Low);
        assert_eq!(Priority::parse("HIGH"), Some(Priority::High));
        assert_eq!(Priority::parse("high"), None);
    }
}
