//! The memory that answers hold until they are written out, over every handler thread. An
//! answer is built whole before it is sent, and a client that does not read keeps its answer in
//! memory until the idle timeout cuts it: many such clients asking for the status of a large
//! ingestion could hold gigabytes. Answers up to [`FREE_BELOW`] are free; beyond it, an answer
//! reserves its bytes (a [`STEP`] ahead) from one [`BUDGET`] as it is built, and one that would
//! pass the budget is dropped unfinished (its request gets `503 overloaded`; the connection
//! goes on). Atomics only.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Bytes of every answer that are free of the budget.
const FREE_BELOW: usize = 64 << 10;
/// The most bytes answers may hold beyond their free part, together.
pub(crate) const BUDGET: usize = 256 << 20;
/// Test seam: a smaller budget, in bytes.
const BUDGET_VAR: &str = "INGESTD_ANSWER_BUDGET";
/// Taken from the budget this much at a time, so a large answer does not touch the shared
/// count for every piece serde writes.
const STEP: usize = 256 << 10;

static HELD: AtomicUsize = AtomicUsize::new(0);

fn budget() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| std::env::var(BUDGET_VAR).ok().and_then(|v| v.parse().ok()).unwrap_or(BUDGET))
}

/// Bytes the budget holds now (`/metrics`).
pub(crate) fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Budget an answer holds; given back when dropped (once the answer is written out).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Held(usize);

impl Held {
    /// Holds at least `bytes` (taking a [`STEP`] more), unless the budget cannot spare them.
    #[cold]
    fn cover(&mut self, bytes: usize) -> io::Result<()> {
        let more = bytes - self.0 + STEP;
        let taken = HELD.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(more).filter(|&after| after <= budget())
        });
        match taken {
            Ok(_) => {
                self.0 += more;
                Ok(())
            }
            Err(_) => Err(io::Error::other("the memory for answers waiting on their clients is spent")),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Most answers hold nothing: they leave the shared count alone.
        if self.0 > 0 {
            HELD.fetch_sub(self.0, Ordering::AcqRel);
        }
    }
}

/// An answer's bytes as they are built, within the budget.
#[derive(Debug, Default)]
pub(crate) struct Body {
    pub(crate) bytes: Vec<u8>,
    pub(crate) held: Held,
}

impl io::Write for Body {
    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let beyond = (self.bytes.len() + data.len()).saturating_sub(FREE_BELOW);
        if beyond > self.held.0 {
            self.held.cover(beyond)?;
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.write(data).map(|_| ())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn small_answers_are_free_and_large_ones_share_the_budget_until_written() {
        let mut small = Body::default();
        small.write_all(&[0; FREE_BELOW]).unwrap();
        // Compared by its count: a `Held` made here would give back what it never took.
        assert_eq!(small.held.0, 0);
        small.write_all(&[0]).unwrap();
        assert_eq!(small.held.0, 1 + STEP, "taken a step ahead");
        small.write_all(&[0; STEP]).unwrap();
        assert_eq!(small.held.0, 1 + STEP, "within the step, nothing more is taken");
        let half = |held: &mut Held| held.cover(BUDGET / 2);
        let mut first = Held::default();
        half(&mut first).expect("within the budget");
        assert!(half(&mut Held::default()).is_err(), "past the budget");
        drop(first);
        half(&mut Held::default()).expect("given back once dropped");
    }
}
