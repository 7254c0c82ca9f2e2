//! Rebuilding the state from a journal's bytes. Pure: bytes in, recovered state or an error out.
//!
//! A version 2 journal is a header line, then groups (see `record.rs`), each written with one
//! write and made durable with one sync before the next one is written. So only the last group
//! can be torn by a crash (its pages reach the disk in any order, or not at all), and it was
//! never acknowledged: a group that does not verify, with no verified group after it, is cut
//! off with a warning. Any other damage stops the start, naming the offset: a group that does
//! not verify with a verified one after it (that one was written after this one's sync), damage
//! after a clean stop (nothing is written after one), and a verified record that cannot apply.
//!
//! While a compaction is under way the journal is two files, `journal.v2` and then
//! `journal.v2.next`, replayed in that order into one state ([`Replay`], [`Part`]).

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::record::{self, Record, GROUP_HEADER_LEN, HEADER, HEADER_V1};
use crate::model::{BatchRecord, BatchStatus, Delivery, IngestionRecord};

/// What a journal holds, in the order it was accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub ingestions: Vec<IngestionRecord>,
    /// The wall-clock time of the last release, in Unix milliseconds.
    pub last_release_ms: Option<u64>,
    /// The end of the last pause an upstream asked for (`Retry-After`), in Unix milliseconds.
    pub paused_until_ms: Option<u64>,
    /// Where the verified groups end (before a clean stop's group, if the file ends in one);
    /// the next group is written here.
    pub valid_len: u64,
    /// A torn final group (a crash mid-write, never acknowledged): its offset and what is wrong.
    pub torn_tail: Option<(u64, String)>,
    /// Whether the file ends in a clean stop (then `valid_len` is where that group begins).
    pub clean_stop: bool,
    /// Records in the journal, for deciding when to compact.
    pub records: u64,
    /// The number of the last verified group; the next one is `seq + 1`.
    pub seq: u64,
    /// The bytes of its `ingest` records: about what a compaction would keep.
    pub ingest_bytes: u64,
    /// Records of ingestions the journal no longer holds: a compaction leaves out what expired
    /// (`--retain`), while a segment it folds in may still have their last transitions.
    pub expired_records: u64,
}

/// Damage that is not a torn tail: the journal cannot be trusted, and nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    pub offset: u64,
    pub reason: String,
}

/// Replays a version 2 journal held in one file (no segment).
pub fn replay(bytes: &[u8]) -> Result<Recovered, Corrupt> {
    let mut replay = Replay::default();
    let end = replay.file(bytes, Part::Base)?;
    Ok(replay.finish(&end))
}

/// Which file of a journal is replayed: they differ in how their group numbers may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// `journal.v2`: its first group may carry any number (a snapshot's is the number of the last
    /// group it covers); each later one is the next number.
    Base,
    /// `journal.v2.next`: its groups continue the base's numbers. A group numbered no higher than
    /// the last one replayed is a copy already applied (a compaction copied it into the base),
    /// checked and skipped.
    Segment,
}

/// How one file of a journal ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct FileEnd {
    /// Where its verified groups end (before a clean stop's group, if it ends in one).
    pub(crate) valid_len: u64,
    /// A torn final group: its offset and what is wrong.
    pub(crate) torn_tail: Option<(u64, String)>,
    pub(crate) clean_stop: bool,
    /// Groups it added to the state (copies skipped in a segment do not count).
    pub(crate) added: u64,
}

/// A journal being replayed, one file after another, into one state.
#[derive(Default)]
pub(crate) struct Replay {
    state: Recovered,
    index: HashMap<Uuid, usize>,
}

impl Replay {
    /// The number of the last group applied.
    pub(crate) fn seq(&self) -> u64 {
        self.state.seq
    }

    /// The state so far, with the end of `active`, the file the next group goes to.
    pub(crate) fn finish(mut self, active: &FileEnd) -> Recovered {
        self.state.valid_len = active.valid_len;
        self.state.torn_tail = active.torn_tail.clone();
        self.state.clean_stop = active.clean_stop;
        self.state
    }

    /// Applies the groups of one file.
    pub(crate) fn file(&mut self, bytes: &[u8], part: Part) -> Result<FileEnd, Corrupt> {
        let bytes = without_reserved_zeros(bytes);
        let mut end = FileEnd::default();
        // A segment cut inside its header line was never written to.
        if bytes.is_empty() || part == Part::Segment && HEADER.as_bytes().starts_with(bytes) {
            return Ok(end);
        }
        if !bytes.starts_with(HEADER.as_bytes()) {
            return Err(Corrupt { offset: 0, reason: format!("it does not start with {:?}", HEADER.trim_end()) });
        }
        let mut offset = HEADER.len();
        end.valid_len = offset as u64;
        while offset < bytes.len() {
            let expected = self.expected(bytes, offset, part, end.clean_stop)?;
            let group = match verified_group(bytes, offset, expected) {
                Ok(group) => group,
                Err(reason) => return self.torn_or_corrupt(end, bytes, offset, reason),
            };
            if end.clean_stop {
                return Err(Corrupt { offset: offset as u64, reason: "a group follows a clean stop".into() });
            }
            if expected <= self.state.seq {
                // A copy of a group already applied: skipped.
                offset = group.end;
                end.valid_len = offset as u64;
                continue;
            }
            for (at, json) in &group.records {
                let applied = Record::parse(json).and_then(|r| {
                    end.clean_stop |= matches!(r, Record::CleanStop { .. });
                    if matches!(r, Record::Ingest { .. }) {
                        self.state.ingest_bytes += json.len() as u64 + 10;
                    }
                    apply(&mut self.state, &mut self.index, r)
                });
                applied.map_err(|reason| Corrupt { offset: *at as u64, reason })?;
                self.state.records += 1;
            }
            if end.clean_stop && group.records.len() != 1 {
                return Err(Corrupt { offset: offset as u64, reason: "a clean stop is not alone in its group".into() });
            }
            // A clean stop is cut off at the next start: the group after it takes its number.
            if !end.clean_stop {
                self.state.seq = expected;
                end.valid_len = group.end as u64;
                end.added += 1;
            }
            offset = group.end;
        }
        Ok(end)
    }

    /// The number the group at `offset` must carry.
    fn expected(&self, bytes: &[u8], offset: usize, part: Part, after_clean_stop: bool) -> Result<u64, Corrupt> {
        let next = self.state.seq + 1;
        let Ok(header) = record::group_header(&bytes[offset..]) else { return Ok(next) };
        Ok(match part {
            Part::Base if offset == HEADER.len() => header.seq.max(1),
            Part::Segment if header.seq < next && !after_clean_stop => header.seq,
            Part::Segment if header.seq > next && verified_group(bytes, offset, header.seq).is_ok() => {
                return Err(Corrupt {
                    offset: offset as u64,
                    reason: format!(
                        "group {} where group {next} was expected: the groups between are missing",
                        header.seq
                    ),
                })
            }
            _ => next,
        })
    }

    /// A group that does not verify at `offset`: the torn tail, unless something says it was synced.
    fn torn_or_corrupt(
        &self,
        mut end: FileEnd,
        bytes: &[u8],
        offset: usize,
        reason: String,
    ) -> Result<FileEnd, Corrupt> {
        if end.clean_stop {
            return Err(Corrupt { offset: offset as u64, reason: format!("{reason}, after a clean stop") });
        }
        if let Some(later) = later_group(bytes, offset, self.state.seq + 1) {
            let reason = format!("{reason}; a whole group follows at byte {later}, so this one had been saved");
            return Err(Corrupt { offset: offset as u64, reason });
        }
        end.torn_tail = Some((offset as u64, reason));
        Ok(end)
    }
}

/// Where the first group numbered above `seq` begins in a segment's bytes (its header line,
/// then whole groups), or their end: the groups before it are copies a `journal.v2` holds.
pub(crate) fn first_group_after(bytes: &[u8], seq: u64) -> Result<usize, String> {
    let mut offset = HEADER.len().min(bytes.len());
    while offset < bytes.len() {
        let header = record::group_header(&bytes[offset..])?;
        if header.seq > seq {
            break;
        }
        offset = verified_group(bytes, offset, header.seq)?.end;
    }
    Ok(offset)
}

/// The ingestions whose `ingest` records are in a segment's bytes from `from` on: whole groups
/// (no torn tail: only synced groups are read).
pub(crate) fn ingestion_ids(bytes: &[u8], from: usize) -> Result<HashSet<Uuid>, String> {
    let mut ids = HashSet::new();
    let mut offset = from;
    while offset < bytes.len() {
        let header = record::group_header(&bytes[offset..])?;
        let group = verified_group(bytes, offset, header.seq)?;
        for (_, json) in &group.records {
            if let Record::Ingest { ingestion_id, .. } = Record::parse(json)? {
                ids.insert(ingestion_id);
            }
        }
        offset = group.end;
    }
    Ok(ids)
}

/// Zeros at the end are room the writer reserved for groups to come, not groups.
fn without_reserved_zeros(bytes: &[u8]) -> &[u8] {
    // Megabytes of them: compared a page at a time (`memcmp`), then a byte at a time.
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut end = bytes.len();
    while end >= ZEROS.len() && bytes[end - ZEROS.len()..end] == ZEROS {
        end -= ZEROS.len();
    }
    &bytes[..bytes[..end].iter().rposition(|&b| b != 0).map_or(0, |last| last + 1)]
}

/// A group whose header and records all verify: its records (offset, JSON) and its end.
struct Verified<'a> {
    records: Vec<(usize, &'a [u8])>,
    end: usize,
}

fn verified_group(bytes: &[u8], offset: usize, seq: u64) -> Result<Verified<'_>, String> {
    let header = record::group_header(&bytes[offset..])?;
    if header.seq != seq {
        return Err(format!("group {} where group {seq} was expected", header.seq));
    }
    let start = offset + GROUP_HEADER_LEN;
    let end = usize::try_from(header.len).ok().and_then(|len| start.checked_add(len)).filter(|&end| end <= bytes.len());
    let end = end.ok_or("the group is cut short")?;
    let mut records = Vec::with_capacity(header.count as usize);
    let mut at = start;
    while at < end {
        let line_end =
            bytes[at..end].iter().position(|&b| b == b'\n').ok_or("a record in the group has no line end")?;
        let json = record::verify(&bytes[at..at + line_end]).map_err(|e| format!("record at byte {at}: {e}"))?;
        records.push((at, json));
        at += line_end + 1;
    }
    if records.len() != header.count as usize {
        return Err(format!("the group holds {} records, its header says {}", records.len(), header.count));
    }
    Ok(Verified { records, end })
}

/// The offset of a whole group numbered `seq` or later somewhere after `offset`, if any.
fn later_group(bytes: &[u8], offset: usize, seq: u64) -> Option<usize> {
    (offset + 1..bytes.len().saturating_sub(GROUP_HEADER_LEN - 1)).filter(|&at| bytes[at] == b'g').find(|&at| {
        record::group_header(&bytes[at..]).is_ok_and(|h| h.seq >= seq && verified_group(bytes, at, h.seq).is_ok())
    })
}

/// Replays a version 1 journal (no groups: a damaged or cut last line is a torn write), to
/// upgrade it.
pub(crate) fn replay_v1(bytes: &[u8]) -> Result<Recovered, Corrupt> {
    let bytes = without_reserved_zeros(bytes);
    let mut state = Recovered::default();
    if bytes.is_empty() {
        return Ok(state);
    }
    if !bytes.starts_with(HEADER_V1.as_bytes()) {
        return Err(Corrupt { offset: 0, reason: format!("it does not start with {:?}", HEADER_V1.trim_end()) });
    }
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    let mut offset = HEADER_V1.len();
    state.valid_len = offset as u64;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], offset + end + 1),
            None => {
                state.torn_tail = Some((offset as u64, "the last record has no line end".into()));
                break;
            }
        };
        let applied = Record::decode(line).and_then(|r| apply(&mut state, &mut index, r));
        if let Err(reason) = applied {
            if next == bytes.len() {
                state.torn_tail = Some((offset as u64, reason));
                break;
            }
            return Err(Corrupt { offset: offset as u64, reason });
        }
        state.records += 1;
        offset = next;
        state.valid_len = offset as u64;
    }
    Ok(state)
}

fn apply(state: &mut Recovered, index: &mut HashMap<Uuid, usize>, record: Record) -> Result<(), String> {
    match record {
        Record::Ingest { ingestion_id, .. } => {
            if index.contains_key(&ingestion_id) {
                return Err(format!("ingestion {ingestion_id} appears twice"));
            }
            let ingestion = record::ingestion_of(record)?;
            index.insert(ingestion_id, state.ingestions.len());
            state.ingestions.push(ingestion);
        }
        Record::Triggered { ingestion_id, batch: b, attempt, at_ms } => {
            state.last_release_ms = state.last_release_ms.max(Some(at_ms));
            let Some(batch) = batch_of(state, index, &ingestion_id, b)? else { return Ok(()) };
            batch.status = BatchStatus::Triggered;
            batch.attempts = attempt;
            batch.triggered_at_ms = at_ms;
            batch.retry_at_ms = 0;
        }
        Record::Progress {
            ingestion_id,
            batch: b,
            at_ms,
            delivered,
            failed,
            last_error,
            retry_at_ms,
            paused_until_ms,
        } => {
            if paused_until_ms != 0 {
                state.paused_until_ms = state.paused_until_ms.max(Some(paused_until_ms));
            }
            let Some(batch) = batch_of(state, index, &ingestion_id, b)? else { return Ok(()) };
            if retry_at_ms == 0 {
                (batch.status, batch.completed_at_ms) = (BatchStatus::Failed, at_ms);
            }
            batch.retry_at_ms = retry_at_ms;
            let ingestion = &mut state.ingestions[index[&ingestion_id]];
            let start = b as usize * ingestion.batch_size;
            let len = ingestion.ids.len().saturating_sub(start).min(ingestion.batch_size);
            if delivered.iter().chain(&failed).any(|&at| at as usize >= len) {
                return Err(format!("it names an id beyond batch {b}"));
            }
            if ingestion.delivery.len() != ingestion.ids.len() {
                ingestion.delivery = vec![Delivery::Pending as u8; ingestion.ids.len()];
            }
            for (positions, value) in [(delivered, Delivery::Delivered), (failed, Delivery::Failed)] {
                for at in positions {
                    ingestion.delivery[start + at as usize] = value as u8;
                }
            }
            if ingestion.last_errors.len() != ingestion.batches.len() {
                ingestion.last_errors.resize(ingestion.batches.len(), None);
            }
            ingestion.last_errors[b as usize] = last_error.map(Box::from);
        }
        Record::Completed { ingestion_id, batch: b, at_ms } => {
            let Some(batch) = batch_of(state, index, &ingestion_id, b)? else { return Ok(()) };
            batch.status = BatchStatus::Completed;
            batch.completed_at_ms = at_ms;
        }
        Record::LastRelease { at_ms, paused_until_ms } => {
            state.last_release_ms = state.last_release_ms.max(Some(at_ms).filter(|&at| at > 0));
            if paused_until_ms > 0 {
                state.paused_until_ms = state.paused_until_ms.max(Some(paused_until_ms));
            }
        }
        Record::CleanStop { .. } => {}
    }
    Ok(())
}

/// The batch a transition record names; `None` (counted) for an ingestion the journal no
/// longer holds, which expired before a compaction (see [`Recovered::expired_records`]).
fn batch_of<'a>(
    state: &'a mut Recovered,
    index: &HashMap<Uuid, usize>,
    id: &Uuid,
    batch: u32,
) -> Result<Option<&'a mut BatchRecord>, String> {
    let Some(&at) = index.get(id) else {
        state.expired_records += 1;
        return Ok(None);
    };
    let found = state.ingestions[at].batches.get_mut(batch as usize);
    found.map(Some).ok_or_else(|| format!("it names a missing batch {batch}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::Group;
    use crate::model::{Ingestion, Priority};

    /// A journal of `groups`, numbered from 1, and where each group begins.
    fn journal(groups: &[&[Record]]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = HEADER.as_bytes().to_vec();
        let mut starts = Vec::new();
        for (i, records) in groups.iter().enumerate() {
            starts.push(bytes.len());
            let mut group = Group::default();
            records.iter().for_each(|r| group.push(r));
            bytes.extend_from_slice(&group.finish(i as u64 + 1));
        }
        (bytes, starts)
    }

    fn sample() -> (Ingestion, Vec<Record>) {
        let ingestion = Ingestion::new(Priority::High, vec![1, 2, 3, 4, 5, 6, 7], 3, 1, None);
        let id = ingestion.id;
        let records = vec![
            Record::ingest(ingestion.record(), false),
            Record::Triggered { ingestion_id: id, batch: 0, attempt: 1, at_ms: 100 },
            Record::Completed { ingestion_id: id, batch: 0, at_ms: 150 },
            Record::Triggered { ingestion_id: id, batch: 1, attempt: 1, at_ms: 200 },
        ];
        (ingestion, records)
    }

    /// The sample as three groups: the ingestion, two transitions, the last transition.
    fn sample_groups(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
        journal(&[&records[..1], &records[1..3], &records[3..]])
    }

    #[test]
    fn replays_transitions() {
        let (ingestion, records) = sample();
        let (bytes, _) = sample_groups(&records);
        let state = replay(&bytes).unwrap();
        let statuses: Vec<(BatchStatus, u8)> =
            state.ingestions[0].batches.iter().map(|b| (b.status, b.attempts)).collect();
        assert_eq!(statuses, [(BatchStatus::Completed, 1), (BatchStatus::Triggered, 1), (BatchStatus::YetToStart, 0)]);
        assert_eq!(state.ingestions[0].id, ingestion.id);
        assert_eq!((state.last_release_ms, state.records, state.seq, state.torn_tail.clone()), (Some(200), 4, 3, None));
        assert_eq!(state.valid_len, bytes.len() as u64);
        assert_eq!(replay(b""), Ok(Recovered::default()));
    }

    /// A compaction leaves out an ingestion that expired, while the segment it folds in may
    /// still hold its last transitions: they are skipped (counted), not taken for corruption,
    /// and the release and pause they carry still count.
    #[test]
    fn transitions_of_an_ingestion_no_longer_held_are_skipped() {
        let (_, records) = sample();
        let gone = Uuid::new_v4();
        let progress = Record::Progress {
            ingestion_id: gone,
            batch: 0,
            at_ms: 310,
            delivered: vec![],
            failed: vec![0],
            last_error: None,
            retry_at_ms: 0,
            paused_until_ms: 900,
        };
        let transitions = [
            Record::Triggered { ingestion_id: gone, batch: 0, attempt: 1, at_ms: 300 },
            progress,
            Record::Completed { ingestion_id: gone, batch: 1, at_ms: 320 },
        ];
        let (bytes, _) = journal(&[&records[..1], &transitions]);
        let state = replay(&bytes).expect("not corruption");
        assert_eq!(state.ingestions.len(), 1);
        assert_eq!((state.expired_records, state.last_release_ms, state.paused_until_ms), (3, Some(300), Some(900)));
    }

    #[test]
    fn progress_keeps_delivered_and_failed_ids_the_next_retry_and_the_pause() {
        let (ingestion, mut records) = sample();
        let id = ingestion.id;
        records.push(Record::Progress {
            ingestion_id: id,
            batch: 1,
            at_ms: 210,
            delivered: vec![0],
            failed: vec![2],
            last_error: Some("id 5: HTTP 503 after 2 ms".into()),
            retry_at_ms: 400,
            paused_until_ms: 300,
        });
        let state = replay(&journal(&[&records]).0).unwrap();
        let recovered = &state.ingestions[0];
        assert_eq!((recovered.batches[1].status, recovered.batches[1].retry_at_ms), (BatchStatus::Triggered, 400));
        assert_eq!(recovered.delivery, [0, 0, 0, 1, 0, 2, 0]);
        assert_eq!(recovered.last_errors[1].as_deref(), Some("id 5: HTTP 503 after 2 ms"));
        assert_eq!(state.paused_until_ms, Some(300));
        // The retry's release clears its wait; a last attempt that fails finishes the batch.
        records.push(Record::Triggered { ingestion_id: id, batch: 1, attempt: 2, at_ms: 400 });
        records.push(Record::Progress {
            ingestion_id: id,
            batch: 1,
            at_ms: 450,
            delivered: vec![0],
            failed: vec![1, 2],
            last_error: None,
            retry_at_ms: 0,
            paused_until_ms: 0,
        });
        let state = replay(&journal(&[&records]).0).unwrap();
        let batch = state.ingestions[0].batches[1];
        assert_eq!(
            (batch.status, batch.attempts, batch.retry_at_ms, batch.completed_at_ms),
            (BatchStatus::Failed, 2, 0, 450)
        );
        assert_eq!(state.ingestions[0].delivery, [0, 0, 0, 1, 2, 2, 0]);
        // A position beyond the batch is damage.
        records.push(Record::Progress {
            ingestion_id: id,
            batch: 2,
            at_ms: 500,
            delivered: vec![1],
            failed: vec![],
            last_error: None,
            retry_at_ms: 0,
            paused_until_ms: 0,
        });
        records.push(Record::LastRelease { at_ms: 1, paused_until_ms: 0 });
        assert!(replay(&journal(&[&records]).0).unwrap_err().reason.contains("beyond batch 2"));
    }

    #[test]
    fn a_torn_last_group_is_cut_off_however_it_was_torn() {
        let (_, records) = sample();
        let (whole, starts) = journal(&[&records[..1], &records[1..]]);
        let last = starts[1];
        let mut torn: Vec<(&str, Vec<u8>)> = vec![
            ("cut in its header", whole[..last + 20].to_vec()),
            ("cut in its records", whole[..whole.len() - 10].to_vec()),
            ("cut after its last line end but one", whole[..whole.len() - 1].to_vec()),
        ];
        let mut zeroed_header = whole.clone();
        zeroed_header[last..last + 30].fill(0);
        torn.push(("its header zeroed, its records whole", zeroed_header));
        let mut zeroed_middle = whole.clone();
        zeroed_middle[last + 70..last + 90].fill(0);
        torn.push(("a zeroed page inside, the end whole", zeroed_middle));
        for (how, bytes) in torn {
            let state = replay(&bytes).unwrap_or_else(|e| panic!("{how}: {e:?}"));
            assert_eq!((state.valid_len, state.records, state.seq), (last as u64, 1, 1), "{how}");
            assert_eq!(state.torn_tail.as_ref().map(|t| t.0), Some(last as u64), "{how}");
            assert_eq!(state.ingestions[0].batches[0].status, BatchStatus::YetToStart, "{how}");
        }
    }

    #[test]
    fn damage_with_a_whole_group_after_it_names_the_offset() {
        let (_, records) = sample();
        let (bytes, starts) = sample_groups(&records);
        let mut damaged = bytes.clone();
        damaged[starts[1] + GROUP_HEADER_LEN + 20] ^= 0x20;
        let corrupt = replay(&damaged).unwrap_err();
        assert_eq!(corrupt.offset, starts[1] as u64);
        assert!(corrupt.reason.contains("checksum does not match"), "{corrupt:?}");
        assert!(corrupt.reason.contains(&format!("a whole group follows at byte {}", starts[2])), "{corrupt:?}");
        // A whole page of zeros over the middle group: the same.
        let mut zeroed = bytes.clone();
        zeroed[starts[1]..starts[2]].fill(0);
        assert_eq!(replay(&zeroed).unwrap_err().offset, starts[1] as u64);
        assert_eq!(replay(b"not a journal\n").unwrap_err().offset, 0);
    }

    #[test]
    fn after_a_clean_stop_nothing_is_torn() {
        let (_, records) = sample();
        let stop = Record::CleanStop { at_ms: 300 };
        let (bytes, starts) = journal(&[&records[..1], &records[1..], std::slice::from_ref(&stop)]);
        let state = replay(&bytes).unwrap();
        assert!(state.clean_stop);
        assert_eq!((state.valid_len, state.seq, state.torn_tail), (starts[2] as u64, 2, None));
        // A flipped byte in the last record before the stop: corruption, not a torn write.
        let mut flipped = bytes.clone();
        flipped[starts[2] - 5] ^= 0x01;
        assert_eq!(replay(&flipped).unwrap_err().offset, starts[1] as u64);
        // Bytes after a clean stop: nothing is written after one.
        let mut after = bytes.clone();
        after.extend_from_slice(b"0badf00d {");
        let corrupt = replay(&after).unwrap_err();
        assert_eq!(corrupt.offset, bytes.len() as u64);
        assert!(corrupt.reason.contains("after a clean stop"), "{corrupt:?}");
        // A clean stop shares its group with nothing.
        let (shared, starts) = journal(&[&records[..1], &[records[1].clone(), stop]]);
        assert_eq!(replay(&shared).unwrap_err().offset, starts[1] as u64);
    }

    #[test]
    fn zeros_reserved_after_the_groups_are_not_a_tail() {
        let (_, records) = sample();
        let (whole, starts) = sample_groups(&records);
        let mut reserved = whole.clone();
        reserved.resize(whole.len() + 4096, 0);
        let state = replay(&reserved).unwrap();
        assert_eq!((state.valid_len, state.records, state.torn_tail), (whole.len() as u64, 4, None));
        // A group cut short in the reserved space is a torn tail all the same.
        let mut torn = whole[..whole.len() - 10].to_vec();
        torn.resize(whole.len() + 4096, 0);
        let state = replay(&torn).unwrap();
        assert_eq!((state.valid_len, state.records), (starts[2] as u64, 3));
        assert_eq!(state.torn_tail.map(|t| t.0), Some(starts[2] as u64));
        assert_eq!(replay(&[0; 64]), Ok(Recovered::default()), "only zeros: a journal not yet begun");
    }

    /// Groups numbered from `first`, with the file header.
    fn numbered(first: u64, groups: &[&[Record]]) -> Vec<u8> {
        let mut bytes = HEADER.as_bytes().to_vec();
        for (i, records) in groups.iter().enumerate() {
            let mut group = Group::default();
            records.iter().for_each(|r| group.push(r));
            bytes.extend_from_slice(&group.finish(first + i as u64));
        }
        bytes
    }

    #[test]
    fn a_base_may_start_at_any_group_but_a_gap_after_it_is_torn() {
        let (_, records) = sample();
        // A snapshot numbered like the last group it covers, then the groups after it.
        let state = replay(&numbered(7, &[&records[..1], &records[1..]])).unwrap();
        assert_eq!((state.seq, state.records, state.torn_tail.is_some()), (8, 4, false));
        let mut bytes = numbered(7, &[&records[..1]]);
        let skipped = numbered(9, &[&records[1..]]);
        bytes.extend_from_slice(&skipped[HEADER.len()..]);
        let state = replay(&bytes).unwrap();
        assert_eq!((state.seq, state.records), (7, 1));
        assert_eq!(state.torn_tail.map(|t| t.0), Some(numbered(7, &[&records[..1]]).len() as u64));
    }

    /// Replays a base and then a segment, as a start does.
    fn both(base: &[u8], segment: &[u8]) -> Result<(Recovered, FileEnd), Corrupt> {
        let mut replay = Replay::default();
        replay.file(base, Part::Base)?;
        let end = replay.file(segment, Part::Segment)?;
        Ok((replay.finish(&end), end))
    }

    #[test]
    fn a_segment_continues_the_base_and_skips_the_copies_it_already_has() {
        let (ingestion, records) = sample();
        let split = |n: usize| records[n..n + 1].to_vec();
        let (r0, r1, r2, r3) = (split(0), split(1), split(2), split(3));
        // Before the hand-over: the old journal (groups 1..2), the segment (3..4).
        let base = numbered(1, &[&r0, &r1]);
        let segment = numbered(3, &[&r2, &r3]);
        let (state, end) = both(&base, &segment).unwrap();
        assert_eq!((state.seq, state.records, end.added), (4, 4, 2));
        assert_eq!(state.ingestions[0].batches[1].status, BatchStatus::Triggered);
        // After it: the snapshot (numbered 2) with copies of 3..4, and the segment, now stale.
        let mut merged = numbered(2, &[&[Record::ingest(ingestion.record(), false)]]);
        merged.extend_from_slice(&segment[HEADER.len()..]);
        let (state, end) = both(&merged, &segment).unwrap();
        assert_eq!((state.seq, state.records, end.added), (4, 3, 0));
        // A stale segment after a journal that went on: still only copies.
        let mut longer = merged.clone();
        longer.extend_from_slice(&numbered(5, &[&r3])[HEADER.len()..]);
        assert_eq!(both(&longer, &segment).unwrap().1.added, 0);
        // A segment never written to, or cut in its header: nothing to add.
        for empty in [&b""[..], &HEADER.as_bytes()[..7], HEADER.as_bytes()] {
            let (state, end) = both(&base, empty).unwrap();
            assert_eq!((state.seq, end.added, end.torn_tail), (2, 0, None));
        }
        // A torn last group in the segment is cut off like any.
        let (state, end) = both(&base, &segment[..segment.len() - 3]).unwrap();
        assert_eq!((state.seq, end.added, end.torn_tail.is_some()), (3, 1, true));
        // Groups missing between the base and the segment: damage, not a torn write.
        let gap = numbered(4, &[&r3]);
        let corrupt = both(&base, &gap).unwrap_err();
        assert_eq!(corrupt.offset, HEADER.len() as u64);
        assert!(corrupt.reason.contains("the groups between are missing"), "{corrupt:?}");
    }

    #[test]
    fn version_1_journals_replay_by_their_own_rules() {
        let (_, records) = sample();
        let mut bytes = HEADER_V1.as_bytes().to_vec();
        records.iter().for_each(|r| r.encode(&mut bytes));
        let state = replay_v1(&bytes).unwrap();
        assert_eq!((state.records, state.last_release_ms), (4, Some(200)));
        let cut = replay_v1(&bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(cut.records, 3);
        assert!(cut.torn_tail.is_some());
        let mut damaged = bytes.clone();
        damaged[HEADER_V1.len() + 20] ^= 0x20;
        assert_eq!(replay_v1(&damaged).unwrap_err().offset, HEADER_V1.len() as u64);
        assert_eq!(replay(&bytes).unwrap_err().offset, 0, "a version 1 file is not read as version 2");
    }
}
