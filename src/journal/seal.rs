//! The clean stop's seal: a small file a clean stop writes once its last group is synced, naming
//! the journal file it ended, where its clean-stop group begins and the number of the group
//! before it. Pure (the journal thread writes it; `open` reads, checks and removes it before
//! anything in the journal changes).
//!
//! Why: replay can only tell a torn tail (a crash before the sync, never acknowledged) from
//! damage by what follows it. A file cut, or zeroed to its end, after a clean stop leaves
//! nothing behind, and would pass for a crash that lost only unacknowledged groups. The seal
//! remembers where the file ended, so such a start refuses instead of dropping what was saved.

use super::replay::{Corrupt, FileEnd};
use super::{FILE_NAME, SEGMENT_NAME};

/// The seal's file name inside the data directory.
pub const SEAL_NAME: &str = "journal.v2.stopped";

const PREFIX: &str = "ingestd clean stop:";

/// Which file a clean stop ended, where its clean-stop group begins, and the number of the
/// last group before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seal {
    /// [`FILE_NAME`] or [`SEGMENT_NAME`].
    pub(super) file: &'static str,
    pub(super) valid_len: u64,
    pub(super) seq: u64,
}

/// What a seal says of the journal found at a start.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The file ends as the stop left it.
    Whole,
    /// Groups came after the sealed stop (a version that knew no seal ran since): it says
    /// nothing of this journal.
    Stale,
    /// The file ends sooner, or otherwise, than the stop left it.
    Damaged(Corrupt),
}

impl Seal {
    pub(super) fn encode(&self) -> Vec<u8> {
        format!("{PREFIX} {} {} {}\n", self.file, self.valid_len, self.seq).into_bytes()
    }

    /// `None` for anything but a whole seal (a crash can cut it as it is written).
    pub(super) fn parse(bytes: &[u8]) -> Option<Seal> {
        let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let mut words = text.strip_prefix(PREFIX)?.split(' ').skip(1);
        let name = words.next()?;
        let file = [FILE_NAME, SEGMENT_NAME].into_iter().find(|&file| file == name)?;
        let valid_len = words.next()?.parse().ok()?;
        let seq = words.next()?.parse().ok()?;
        words.next().is_none().then_some(Seal { file, valid_len, seq })
    }

    /// Checks the file it names (`None`: missing), replayed up to group `seq`.
    pub(super) fn check(&self, end: Option<&FileEnd>, seq: u64) -> Verdict {
        let how = match end {
            _ if seq > self.seq => return Verdict::Stale,
            None => (0, "it is missing".to_owned()),
            Some(end) if end.clean_stop && end.torn_tail.is_none() && end.valid_len == self.valid_len => {
                return Verdict::Whole
            }
            Some(FileEnd { torn_tail: Some((offset, reason)), .. }) => (*offset, format!("{reason} there")),
            Some(end) if end.clean_stop => (end.valid_len, format!("its clean stop is at byte {}", end.valid_len)),
            Some(end) => {
                (end.valid_len, format!("it has no clean stop (its last whole group ends at byte {})", end.valid_len))
            }
        };
        let reason = format!(
            "a clean stop left it ending with its stop at byte {}, but {}: it was cut or damaged since",
            self.valid_len, how.1
        );
        Verdict::Damaged(Corrupt { offset: how.0, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_reads_back_and_a_cut_one_does_not() {
        let seal = Seal { file: SEGMENT_NAME, valid_len: 4096, seq: 7 };
        let bytes = seal.encode();
        assert_eq!(Seal::parse(&bytes), Some(seal));
        for cut in 0..bytes.len() {
            assert_eq!(Seal::parse(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(Seal::parse(b"ingestd clean stop: journal.v9 10 1\n"), None);
        assert_eq!(Seal::parse(b"ingestd clean stop: journal.v2 10 1 1\n"), None);
    }

    #[test]
    fn a_file_that_ends_sooner_than_its_seal_says_is_damage() {
        let seal = Seal { file: FILE_NAME, valid_len: 500, seq: 4 };
        let end = |valid_len, clean_stop, torn: Option<u64>| FileEnd {
            valid_len,
            clean_stop,
            torn_tail: torn.map(|at| (at, "its checksum is wrong".to_owned())),
            added: 1,
        };
        assert_eq!(seal.check(Some(&end(500, true, None)), 4), Verdict::Whole);
        let offset = |end: Option<&FileEnd>, seq| match seal.check(end, seq) {
            Verdict::Damaged(corrupt) => Some(corrupt.offset),
            _ => None,
        };
        assert_eq!(offset(None, 0), Some(0));
        assert_eq!(offset(Some(&end(300, false, None)), 3), Some(300), "cut, or zeroed to its end");
        assert_eq!(offset(Some(&end(300, false, Some(300))), 3), Some(300), "a group damaged");
        assert_eq!(offset(Some(&end(300, true, None)), 4), Some(300), "a stop elsewhere");
        // A version that knew no seal cut the stop and went on: the seal is old news.
        assert_eq!(seal.check(Some(&end(900, true, None)), 5), Verdict::Stale);
        assert_eq!(seal.check(None, 5), Verdict::Stale);
    }
}
