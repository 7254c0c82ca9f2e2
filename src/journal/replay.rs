//! Rebuilding the state from a journal's bytes. Pure: bytes in, recovered state or an error out.

use std::collections::HashMap;

use uuid::Uuid;

use super::record::{self, Record, HEADER};
use crate::model::{BatchRecord, BatchStatus, Delivery, IngestionRecord};

/// What a journal holds, in the order it was accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub ingestions: Vec<IngestionRecord>,
    /// The wall-clock time of the last release, in Unix milliseconds.
    pub last_release_ms: Option<u64>,
    /// The end of the last pause an upstream asked for (`Retry-After`), in Unix milliseconds.
    pub paused_until_ms: Option<u64>,
    /// How many bytes are whole records; anything after is a torn tail to cut off.
    pub valid_len: u64,
    /// A torn final record (a crash mid-write): its offset and what is wrong with it.
    pub torn_tail: Option<(u64, String)>,
    /// Records in the journal, for deciding when to compact.
    pub records: u64,
}

/// Damage before the tail: the journal cannot be trusted, and nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    pub offset: u64,
    pub reason: String,
}

pub fn replay(bytes: &[u8]) -> Result<Recovered, Corrupt> {
    // Zeros at the end are room the writer reserved for records to come, not records.
    let bytes = &bytes[..bytes.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1)];
    let mut state = Recovered::default();
    if bytes.is_empty() {
        return Ok(state);
    }
    if !bytes.starts_with(HEADER.as_bytes()) {
        return Err(Corrupt { offset: 0, reason: format!("it does not start with {:?}", HEADER.trim_end()) });
    }
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    let mut offset = HEADER.len();
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
            let batch = batch_of(state, index, &ingestion_id, b)?;
            batch.status = BatchStatus::Triggered;
            batch.attempts = attempt;
            batch.triggered_at_ms = at_ms;
            batch.retry_at_ms = 0;
            state.last_release_ms = state.last_release_ms.max(Some(at_ms));
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
            let batch = batch_of(state, index, &ingestion_id, b)?;
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
            if paused_until_ms != 0 {
                state.paused_until_ms = state.paused_until_ms.max(Some(paused_until_ms));
            }
        }
        Record::Completed { ingestion_id, batch: b, at_ms } => {
            let batch = batch_of(state, index, &ingestion_id, b)?;
            batch.status = BatchStatus::Completed;
            batch.completed_at_ms = at_ms;
        }
        Record::LastRelease { at_ms } => state.last_release_ms = state.last_release_ms.max(Some(at_ms)),
    }
    Ok(())
}

fn batch_of<'a>(
    state: &'a mut Recovered,
    index: &HashMap<Uuid, usize>,
    id: &Uuid,
    batch: u32,
) -> Result<&'a mut BatchRecord, String> {
    let at = *index.get(id).ok_or_else(|| format!("it names an unknown ingestion {id}"))?;
    state.ingestions[at].batches.get_mut(batch as usize).ok_or_else(|| format!("it names a missing batch {batch}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Ingestion, Priority};

    fn journal(records: &[Record]) -> Vec<u8> {
        let mut bytes = HEADER.as_bytes().to_vec();
        records.iter().for_each(|r| r.encode(&mut bytes));
        bytes
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

    #[test]
    fn replays_transitions() {
        let (ingestion, records) = sample();
        let state = replay(&journal(&records)).unwrap();
        let statuses: Vec<(BatchStatus, u8)> =
            state.ingestions[0].batches.iter().map(|b| (b.status, b.attempts)).collect();
        assert_eq!(statuses, [(BatchStatus::Completed, 1), (BatchStatus::Triggered, 1), (BatchStatus::YetToStart, 0)]);
        assert_eq!(state.ingestions[0].id, ingestion.id);
        assert_eq!((state.last_release_ms, state.records, state.torn_tail.clone()), (Some(200), 4, None));
        assert_eq!(replay(b""), Ok(Recovered::default()));
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
        let state = replay(&journal(&records)).unwrap();
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
        let state = replay(&journal(&records)).unwrap();
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
        records.push(Record::LastRelease { at_ms: 1 });
        assert!(replay(&journal(&records)).unwrap_err().reason.contains("beyond batch 2"));
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let (_, records) = sample();
        let whole = journal(&records);
        let before_last = journal(&records[..3]).len();
        for cut in [whole.len() - 1, whole.len() - 10, before_last + 3] {
            let state = replay(&whole[..cut]).unwrap();
            assert_eq!(state.valid_len, before_last as u64, "cut at {cut}");
            assert_eq!(state.records, 3);
            assert_eq!(state.torn_tail.as_ref().map(|t| t.0), Some(before_last as u64));
        }
    }

    #[test]
    fn zeros_reserved_after_the_records_are_not_a_tail() {
        let (_, records) = sample();
        let whole = journal(&records);
        let mut reserved = whole.clone();
        reserved.resize(whole.len() + 4096, 0);
        let state = replay(&reserved).unwrap();
        assert_eq!((state.valid_len, state.records, state.torn_tail), (whole.len() as u64, 4, None));
        // A record cut short in the reserved space is a torn tail all the same.
        let before_last = journal(&records[..3]).len();
        let mut torn = whole[..whole.len() - 10].to_vec();
        torn.resize(whole.len() + 4096, 0);
        let state = replay(&torn).unwrap();
        assert_eq!((state.valid_len, state.records), (before_last as u64, 3));
        assert_eq!(state.torn_tail.map(|t| t.0), Some(before_last as u64));
        assert_eq!(replay(&[0; 64]), Ok(Recovered::default()), "only zeros: a journal not yet begun");
    }

    #[test]
    fn damage_before_the_tail_names_the_offset() {
        let (_, records) = sample();
        let mut bytes = journal(&records);
        let second = journal(&records[..1]).len();
        bytes[second + 20] ^= 0x20;
        assert_eq!(
            replay(&bytes),
            Err(Corrupt { offset: second as u64, reason: "the checksum does not match".into() })
        );
        assert_eq!(replay(b"not a journal\n").unwrap_err().offset, 0);
    }
}
