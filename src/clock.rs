//! Where the pacer gets the time. Read only by `pacer.rs`.
//!
//! Both clocks return real [`Instant`]s, so no production type changes for tests: the manual
//! clock is `origin + offset`, and its offset moves only when a test says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;

    /// Whether time passes on its own. The pacer sleeps until a deadline only on such a clock;
    /// on a manual one it waits for `Pacer::advance` to wake it.
    fn runs_by_itself(&self) -> bool {
        true
    }
}

/// The monotonic system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until advanced, for deterministic tests of the threads.
#[derive(Debug)]
pub struct ManualClock {
    origin: Instant,
    offset_nanos: AtomicU64,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock { origin: Instant::now(), offset_nanos: AtomicU64::new(0) }
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Moves time forward. Call it through `Pacer::advance`, which also wakes the pacer.
    pub(crate) fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.origin + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }

    fn runs_by_itself(&self) -> bool {
        false
    }
}
