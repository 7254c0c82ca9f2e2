//! Where the pacer gets the time. Read only by `pacer.rs`.
//!
//! Both clocks return real [`Instant`]s, so no production type changes for tests: the manual
//! clock is `origin + offset`, and its offset moves only when a test says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;

    /// The wall-clock time, for what is recorded or shown to people.
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    /// The wall-clock time in Unix milliseconds.
    fn wall_ms(&self) -> u64 {
        unix_ms(self.wall())
    }

    /// Whether time passes on its own. The pacer sleeps until a deadline only on such a clock;
    /// on a manual one it waits for `Queue::advance` to wake it.
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
    origin_wall: SystemTime,
    offset_nanos: AtomicU64,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::starting_at(SystemTime::now())
    }

    /// A clock whose wall time starts at `wall`: a restarted service in a test continues
    /// where the last one stopped.
    pub fn starting_at(wall: SystemTime) -> ManualClock {
        ManualClock { origin: Instant::now(), origin_wall: wall, offset_nanos: AtomicU64::new(0) }
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// The wall-clock time at [`ManualClock::origin`].
    pub fn origin_wall(&self) -> SystemTime {
        self.origin_wall
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }

    /// Moves time forward. Call it through `Queue::advance`, which also wakes the pacer.
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
        self.origin + self.offset()
    }

    fn wall(&self) -> SystemTime {
        self.origin_wall + self.offset()
    }

    fn runs_by_itself(&self) -> bool {
        false
    }
}

/// Milliseconds since the Unix epoch; 0 for times before it.
pub fn unix_ms(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}
