//! The journal's on-disk format: groups of records, one group per commit, one record per line,
//! `CRC32 JSON\n`. Pure; no I/O.
//!
//! ```text
//! ingestd journal v2
//! g 0000000000000001 00000002 00000000000000a4 9c0e61d2
//! 1a2b3c4d {"type":"ingest","ingestion_id":"…","priority":"HIGH",…}
//! 5e6f7a8b {"type":"triggered","ingestion_id":"…","batch":0,"attempt":1,"at_ms":…}
//! ```
//! A group's header line gives its number, its count of records and their length in bytes, and
//! ends with the CRC of the header itself. A record's CRC (8 lowercase hex digits, IEEE
//! polynomial) covers its JSON text. Version 1 files (`HEADER_V1`) are the same records without
//! group headers; they are read once, on upgrade.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{BatchRecord, BatchStatus, Delivery, Id, IngestionRecord, Priority};

pub const HEADER: &str = "ingestd journal v2\n";
/// The first line of a version 1 journal, read only to upgrade it.
pub const HEADER_V1: &str = "ingestd journal v1\n";
/// The length of a group's header line: `g SEQ COUNT LEN CRC\n`.
pub const GROUP_HEADER_LEN: usize = 54;
/// The header line before its CRC: `g `, 16 hex digits, a space, 8, a space, 16, a space.
const GROUP_HEADER_BODY: usize = 45;

/// One event in the life of the queue, as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// An accepted ingestion. After compaction it also carries each batch's state.
    Ingest {
        ingestion_id: Uuid,
        priority: String,
        accepted_at_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        batch_size: usize,
        ids: Vec<Id>,
        batch_ids: Vec<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batches: Option<Vec<BatchState>>,
        /// Per id, what came of delivering it (0 pending, 1 delivered, 2 failed); only in a
        /// compacted file, and only when some id is not pending.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivery: Option<Vec<u8>>,
        /// Per batch, its last error; only in a compacted file, and only when some batch has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_errors: Option<Vec<Option<String>>>,
    },
    /// A batch was released (attempt `attempt`), before the external API was called.
    Triggered { ingestion_id: Uuid, batch: u32, attempt: u8, at_ms: u64 },
    /// The external API answered for every id of the batch.
    Completed { ingestion_id: Uuid, batch: u32, at_ms: u64 },
    /// The last release before a compaction, so the interval survives it, and the upstream's
    /// pause (`Retry-After`) if one was still ahead (0: none).
    LastRelease {
        at_ms: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        paused_until_ms: u64,
    },
    /// A release ended with ids not delivered: the positions (in the batch) of every id
    /// delivered and failed for good so far, the last error, and what next: another release
    /// from `retry_at_ms`, or (0) the batch failed at `at_ms`. `paused_until_ms` (0: none) is the
    /// upstream's pause. Written after the last call of the release, like `completed`.
    Progress {
        ingestion_id: Uuid,
        batch: u32,
        at_ms: u64,
        delivered: Vec<u32>,
        failed: Vec<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
        #[serde(default)]
        retry_at_ms: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        paused_until_ms: u64,
    },
    /// The service stopped cleanly: nothing after this group was ever written. Alone in its
    /// group, always the last one; a start cuts it off before it appends anything.
    CleanStop { at_ms: u64 },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A batch's state inside a compacted `ingest` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchState {
    pub status: u8,
    pub attempts: u8,
    #[serde(default)]
    pub triggered_at_ms: u64,
    #[serde(default)]
    pub completed_at_ms: u64,
    /// When its next release may go, while it waits for a retry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_at_ms: u64,
}

impl Record {
    pub fn ingest(ingestion: IngestionRecord, with_state: bool) -> Record {
        Record::Ingest {
            ingestion_id: ingestion.id,
            priority: ingestion.priority.as_str().to_owned(),
            accepted_at_ms: ingestion.accepted_at_ms,
            idempotency_key: ingestion.idempotency_key.map(String::from),
            batch_size: ingestion.batch_size,
            ids: ingestion.ids,
            batch_ids: ingestion.batches.iter().map(|b| b.id).collect(),
            batches: with_state.then(|| {
                ingestion
                    .batches
                    .iter()
                    .map(|b| BatchState {
                        status: b.status as u8,
                        attempts: b.attempts,
                        triggered_at_ms: b.triggered_at_ms,
                        completed_at_ms: b.completed_at_ms,
                        retry_at_ms: b.retry_at_ms,
                    })
                    .collect()
            }),
            delivery: (with_state && ingestion.delivery.iter().any(|&d| d != 0)).then_some(ingestion.delivery),
            last_errors: (with_state && ingestion.last_errors.iter().any(Option::is_some))
                .then(|| ingestion.last_errors.into_iter().map(|e| e.map(String::from)).collect()),
        }
    }

    /// Appends `CRC JSON\n` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let json = serde_json::to_string(self).expect("records always serialize");
        out.extend_from_slice(format!("{:08x} ", crc32(json.as_bytes())).as_bytes());
        out.extend_from_slice(json.as_bytes());
        out.push(b'\n');
    }

    /// Decodes one line (without its `\n`); the error says what is wrong with it.
    pub(crate) fn decode(line: &[u8]) -> Result<Record, String> {
        Record::parse(verify(line)?)
    }

    /// Parses a record's JSON text, its line already checked by `verify`.
    pub(crate) fn parse(json: &[u8]) -> Result<Record, String> {
        serde_json::from_slice(json).map_err(|e| format!("the record is not valid ({e})"))
    }
}

/// Checks one line's CRC (without its `\n`) and returns its JSON text.
pub(super) fn verify(line: &[u8]) -> Result<&[u8], String> {
    let (crc, json) = match (line.get(..8), line.get(8), line.get(9..)) {
        (Some(crc), Some(b' '), Some(json)) => (crc, json),
        _ => return Err("the line is not `CRC JSON`".into()),
    };
    let crc = std::str::from_utf8(crc).ok().and_then(|c| u32::from_str_radix(c, 16).ok());
    if crc != Some(crc32(json)) {
        return Err("the checksum does not match".into());
    }
    Ok(json)
}

/// A group being built: the records of one commit, framed by [`Group::finish`].
#[derive(Debug)]
pub struct Group {
    bytes: Vec<u8>,
    count: u32,
}

impl Default for Group {
    fn default() -> Self {
        Group { bytes: vec![0; GROUP_HEADER_LEN], count: 0 }
    }
}

impl Group {
    /// Adds a record already encoded by [`Record::encode`].
    pub(crate) fn push_encoded(&mut self, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        self.count += 1;
    }

    pub fn push(&mut self, record: &Record) {
        record.encode(&mut self.bytes);
        self.count += 1;
    }

    /// The group's bytes, numbered `seq`: its header line, then its records.
    pub fn finish(mut self, seq: u64) -> Vec<u8> {
        let len = (self.bytes.len() - GROUP_HEADER_LEN) as u64;
        self.bytes[..GROUP_HEADER_LEN].copy_from_slice(&header_line(seq, self.count, len));
        self.bytes
    }
}

/// The header line of group `seq`, of `count` records taking `len` bytes after it.
pub(crate) fn header_line(seq: u64, count: u32, len: u64) -> [u8; GROUP_HEADER_LEN] {
    let body = format!("g {seq:016x} {count:08x} {len:016x} ");
    let header = format!("{body}{:08x}\n", crc32(body.as_bytes()));
    let mut line = [0; GROUP_HEADER_LEN];
    line.copy_from_slice(header.as_bytes());
    line
}

/// What a group's header line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    pub seq: u64,
    pub count: u32,
    /// The length of the records after the header line.
    pub len: u64,
}

/// Reads the group header line at the start of `bytes`.
pub fn group_header(bytes: &[u8]) -> Result<GroupHeader, String> {
    let line = bytes.get(..GROUP_HEADER_LEN).ok_or("the group header is cut short")?;
    let shape =
        line.starts_with(b"g ") && [18, 27, 44].iter().all(|&i| line[i] == b' ') && line[GROUP_HEADER_LEN - 1] == b'\n';
    if !shape {
        return Err("there is no group header here".into());
    }
    let hex = |range: std::ops::Range<usize>| {
        std::str::from_utf8(&line[range]).ok().and_then(|text| u64::from_str_radix(text, 16).ok())
    };
    if hex(GROUP_HEADER_BODY..GROUP_HEADER_LEN - 1) != Some(u64::from(crc32(&line[..GROUP_HEADER_BODY]))) {
        return Err("the group header's checksum does not match".into());
    }
    match (hex(2..18), hex(19..27), hex(28..44)) {
        (Some(seq), Some(count), Some(len)) => Ok(GroupHeader { seq, count: count as u32, len }),
        _ => Err("the group header is not hex".into()),
    }
}

/// Turns a decoded `ingest` record back into an ingestion, checking that it is consistent.
pub(super) fn ingestion_of(record: Record) -> Result<IngestionRecord, String> {
    let Record::Ingest {
        ingestion_id,
        priority,
        accepted_at_ms,
        idempotency_key,
        batch_size,
        ids,
        batch_ids,
        batches,
        delivery,
        last_errors,
    } = record
    else {
        return Err("not an ingest record".into());
    };
    let priority = Priority::parse(&priority).ok_or_else(|| format!("unknown priority {priority:?}"))?;
    if batch_size == 0 || ids.is_empty() || ids.len().div_ceil(batch_size) != batch_ids.len() {
        return Err("its ids, batch size and batch ids do not agree".into());
    }
    let states = match batches {
        Some(states) if states.len() != batch_ids.len() => return Err("it has the wrong number of batch states".into()),
        Some(states) => states,
        None => vec![
            BatchState { status: 0, attempts: 0, triggered_at_ms: 0, completed_at_ms: 0, retry_at_ms: 0 };
            batch_ids.len()
        ],
    };
    let delivery = delivery.unwrap_or_default();
    if let Some(&unknown) = delivery.iter().find(|&&d| Delivery::stored(d).is_none()) {
        return Err(format!("it has an unknown delivery state {unknown}"));
    }
    if let Some(unknown) = states.iter().find(|s| BatchStatus::stored(s.status).is_none()) {
        return Err(format!("it has an unknown batch status {}", unknown.status));
    }
    let last_errors: Vec<Option<Box<str>>> =
        last_errors.unwrap_or_default().into_iter().map(|e| e.map(Box::from)).collect();
    if !delivery.is_empty() && delivery.len() != ids.len() || last_errors.len() > batch_ids.len() {
        return Err("its delivery progress does not fit its ids and batches".into());
    }
    let batches = batch_ids
        .into_iter()
        .zip(states)
        .map(|(id, s)| BatchRecord {
            id,
            status: BatchStatus::stored(s.status).expect("checked above"),
            attempts: s.attempts,
            triggered_at_ms: s.triggered_at_ms,
            completed_at_ms: s.completed_at_ms,
            retry_at_ms: s.retry_at_ms,
        })
        .collect();
    Ok(IngestionRecord {
        id: ingestion_id,
        priority,
        accepted_at_ms,
        idempotency_key: idempotency_key.map(Box::from),
        ids,
        batch_size,
        batches,
        delivery,
        last_errors,
    })
}

/// CRC-32 (IEEE 802.3, reflected, as in zip and PNG).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &b| TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let records = [
            Record::Triggered { ingestion_id: Uuid::new_v4(), batch: 2, attempt: 1, at_ms: 17 },
            Record::Completed { ingestion_id: Uuid::new_v4(), batch: 0, at_ms: 18 },
            Record::LastRelease { at_ms: 19, paused_until_ms: 0 },
            Record::Progress {
                ingestion_id: Uuid::new_v4(),
                batch: 1,
                at_ms: 20,
                delivered: vec![0, 2],
                failed: vec![1],
                last_error: Some("id 7: HTTP 503 after 2.1 s".into()),
                retry_at_ms: 25,
                paused_until_ms: 30,
            },
        ];
        for record in records {
            let mut line = Vec::new();
            record.encode(&mut line);
            assert_eq!(line.pop(), Some(b'\n'));
            assert_eq!(Record::decode(&line), Ok(record));
            let mut damaged = line.clone();
            let last = damaged.len() - 2;
            damaged[last] ^= 1;
            assert_eq!(Record::decode(&damaged), Err("the checksum does not match".into()));
            assert!(Record::decode(&line[..5]).is_err());
        }
    }

    #[test]
    fn ingest_records_keep_everything() {
        let ingestion = crate::model::Ingestion::new(Priority::Low, vec![1, 2, 3, 4], 3, 42, Some("key-1"));
        ingestion.trigger(0, 3);
        ingestion.set_delivery(0, 1, crate::model::Delivery::Delivered);
        ingestion.set_delivery(0, 2, crate::model::Delivery::Failed);
        ingestion.set_last_error(0, Some("id 3: HTTP 404 after 1 ms".into()));
        ingestion.set_retry_at(0, 9);
        for with_state in [false, true] {
            let mut line = Vec::new();
            Record::ingest(ingestion.record(), with_state).encode(&mut line);
            let back = ingestion_of(Record::decode(&line[..line.len() - 1]).unwrap()).unwrap();
            let mut expected = ingestion.record();
            if !with_state {
                expected.batches.iter_mut().for_each(|b| {
                    (b.status, b.attempts, b.triggered_at_ms, b.retry_at_ms) = (BatchStatus::YetToStart, 0, 0, 0);
                });
                (expected.delivery, expected.last_errors) = (Vec::new(), Vec::new());
            }
            assert_eq!(back, expected);
        }
    }

    #[test]
    fn states_that_are_not_ours_are_refused_not_read_as_others() {
        let ingestion = crate::model::Ingestion::new(Priority::Low, vec![1, 2, 3, 4], 3, 42, None);
        ingestion.set_delivery(0, 1, crate::model::Delivery::Delivered);
        let Record::Ingest { batches: Some(states), delivery: Some(delivery), .. } =
            Record::ingest(ingestion.record(), true)
        else {
            panic!("a compacted ingest record carries its states");
        };
        let with = |status: u8, outcome: u8| {
            let mut record = Record::ingest(ingestion.record(), true);
            if let Record::Ingest { batches, delivery: d, .. } = &mut record {
                let mut states = states.clone();
                states[1].status = status;
                let mut outcomes = delivery.clone();
                outcomes[0] = outcome;
                (*batches, *d) = (Some(states), Some(outcomes));
            }
            ingestion_of(record)
        };
        assert!(with(3, 2).is_ok());
        assert_eq!(with(4, 0).unwrap_err(), "it has an unknown batch status 4");
        assert_eq!(with(0, 3).unwrap_err(), "it has an unknown delivery state 3");
    }
}
