//! The memory that requests hold while they wait on their clients, over every handler thread:
//! answers until they are written out, and bodies from when they are read until they are
//! parsed ([`ReadBody`]). An answer is built whole
//! before it is sent, and a client that does not read keeps its answer in memory until the idle
//! timeout cuts it: many such clients asking for the status of a large ingestion could hold
//! gigabytes; so could many clients that announce a large body and send it slowly. The first
//! [`FREE_BELOW`] bytes of each are free; beyond, an answer reserves its bytes (a [`STEP`]
//! ahead) from [`ANSWERS`] as it is built, and a body its announced length (or, chunked, its
//! bytes as they come) from [`BODIES`]. One that would pass its budget is refused with
//! `503 overloaded` (an answer's connection goes on; a body's closes, the rest of it unread).
//! Atomics only.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Bytes of every answer or body that are free of the budget.
const FREE_BELOW: usize = 64 << 10;
/// The most bytes answers, or bodies, may hold beyond their free part, together.
pub(crate) const BUDGET: usize = 256 << 20;
/// Taken from the budget this much at a time, so a large answer does not touch the shared
/// count for every piece serde writes.
const STEP: usize = 256 << 10;

/// One pool of memory, and the test seam that makes it smaller (bytes).
#[derive(Debug)]
pub(crate) struct Budget {
    held: AtomicUsize,
    var: &'static str,
    size: OnceLock<usize>,
}

/// Answers not yet written out.
pub(crate) static ANSWERS: Budget = Budget::new("INGESTD_ANSWER_BUDGET");
/// Bodies from when they are read until they are parsed.
pub(crate) static BODIES: Budget = Budget::new("INGESTD_BODY_BUDGET");

impl Budget {
    const fn new(var: &'static str) -> Budget {
        Budget { held: AtomicUsize::new(0), var, size: OnceLock::new() }
    }

    fn size(&self) -> usize {
        *self.size.get_or_init(|| std::env::var(self.var).ok().and_then(|v| v.parse().ok()).unwrap_or(BUDGET))
    }

    /// Bytes held now (`/metrics`).
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// A body read off the socket, with the budget its bytes hold: given back with the bytes.
#[derive(Debug)]
pub struct ReadBody {
    bytes: Vec<u8>,
    _held: Held,
}

impl ReadBody {
    pub(crate) fn new(bytes: Vec<u8>, held: Held) -> ReadBody {
        ReadBody { bytes, _held: held }
    }
}

/// A body that took nothing from the budget (a test's, the fuzzer's).
impl From<Vec<u8>> for ReadBody {
    fn from(bytes: Vec<u8>) -> ReadBody {
        ReadBody { bytes, _held: Held::of(&BODIES) }
    }
}

impl std::ops::Deref for ReadBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Budget an answer or a body holds; given back when dropped (an answer once written out).
#[derive(Debug)]
pub(crate) struct Held {
    budget: &'static Budget,
    bytes: usize,
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        std::ptr::eq(self.budget, other.budget) && self.bytes == other.bytes
    }
}

impl Eq for Held {}

/// Nothing, of [`ANSWERS`].
impl Default for Held {
    fn default() -> Held {
        Held::of(&ANSWERS)
    }
}

impl Held {
    /// Nothing yet, of `budget`.
    pub(crate) fn of(budget: &'static Budget) -> Held {
        Held { budget, bytes: 0 }
    }

    /// Covers an answer or body of `len` bytes: its part beyond [`FREE_BELOW`], unless the
    /// budget cannot spare it.
    #[inline]
    pub(crate) fn cover(&mut self, len: usize) -> io::Result<()> {
        let beyond = len.saturating_sub(FREE_BELOW);
        if beyond > self.bytes {
            self.take_ahead(beyond)?;
        }
        Ok(())
    }

    /// Covers a body of exactly `len` bytes, known before it is read: its part beyond
    /// [`FREE_BELOW`], and nothing ahead (it will not grow).
    pub(crate) fn cover_exactly(&mut self, len: usize) -> io::Result<()> {
        let beyond = len.saturating_sub(FREE_BELOW);
        if beyond > self.bytes {
            self.take(beyond - self.bytes)?;
        }
        Ok(())
    }

    /// Holds at least `bytes` (taking a [`STEP`] more), unless the budget cannot spare them.
    #[cold]
    fn take_ahead(&mut self, bytes: usize) -> io::Result<()> {
        self.take(bytes - self.bytes + STEP)
    }

    /// Holds `more` bytes more, unless the budget cannot spare them.
    fn take(&mut self, more: usize) -> io::Result<()> {
        let taken = self.budget.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(more).filter(|&after| after <= self.budget.size())
        });
        match taken {
            Ok(_) => {
                self.bytes += more;
                Ok(())
            }
            Err(_) => Err(io::Error::other("the memory for requests waiting on their clients is spent")),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Most answers hold nothing: they leave the shared count alone.
        if self.bytes > 0 {
            self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
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
        self.held.cover(self.bytes.len() + data.len())?;
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
        assert_eq!(small.held.bytes, 0);
        small.write_all(&[0]).unwrap();
        assert_eq!(small.held.bytes, 1 + STEP, "taken a step ahead");
        small.write_all(&[0; STEP]).unwrap();
        assert_eq!(small.held.bytes, 1 + STEP, "within the step, nothing more is taken");
        // A body of known length takes its part beyond the free bytes, and nothing ahead.
        let mut known = Held::of(&BODIES);
        known.cover_exactly(FREE_BELOW + 1000).unwrap();
        assert_eq!(known.bytes, 1000);
        known.cover(FREE_BELOW + 1000).unwrap();
        assert_eq!(known.bytes, 1000, "read to its length, it takes nothing more");
        drop(known);
        for budget in [&ANSWERS, &BODIES] {
            let half = |held: &mut Held| held.cover(FREE_BELOW + BUDGET / 2);
            let mut first = Held::of(budget);
            half(&mut first).expect("within the budget");
            assert!(half(&mut Held::of(budget)).is_err(), "past the budget");
            drop(first);
            half(&mut Held::of(budget)).expect("given back once dropped");
        }
    }
}
