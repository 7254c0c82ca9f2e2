//! The snapshot half of a compaction, on the `journal-compact` thread, off the commit path.
//!
//! The `journal` thread has already moved its appends to the segment (`journal.v2.next`),
//! opened it and created `journal.v2.tmp` for this thread, which writes there: the header and
//! one group numbered like the last group of `journal.v2` (a `last_release` record, then an
//! `ingest` record with batch states per live ingestion), then copies of the segment's groups
//! synced so far, and syncs it; the journal thread copies the rest and renames it (see
//! `mod.rs`). It takes the store's read lock (`Store::in_order`, a slice of lookups at a time),
//! reads the ingestions' atomics, reads the segment only below what the journal thread
//! published as synced, and touches no file by name. It never takes the queue lock and answers
//! no request. Once it has the ingestions (and so no lock the commits need), it runs only when a
//! CPU has nothing else to do (`SCHED_IDLE`), so a stop waits
//! for it only briefly, then tells it to give up ([`Compactor::finish_within`]); from then on it
//! writes nothing.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::disk::DiskFile;
use super::record::{self, Record, GROUP_HEADER_LEN, HEADER};
use super::replay;
use crate::model::IngestionRecord;
use crate::store::Store;

/// The name of the thread, which tests may hold at its file operations.
pub(crate) const THREAD: &str = "journal-compact";

/// Written to the temp file a chunk at a time, so a snapshot of millions of ids never sits in
/// memory whole.
const CHUNK: usize = 1 << 20;

/// While more than this was synced to the segment during the last copy, copy again before the
/// hand-over: what is left for the journal thread to copy stays small.
const SMALL_TAIL: u64 = 64 << 10;

/// What a compaction starts from. Its files are opened (the temp file created) by the journal
/// thread: this thread touches no name, so one given up and left running can never reach the
/// files of a journal opened after it.
pub(super) struct Job {
    /// The segment, read below `committed` only.
    pub(super) segment: Box<dyn DiskFile>,
    /// The temp file, new and empty.
    pub(super) temp: Box<dyn DiskFile>,
    pub(super) store: Arc<Store>,
    /// The wall clock when the journal thread started this: the store's view of what expired.
    pub(super) now_ms: u64,
    /// Until when the upstream asked for no calls, then: the snapshot carries the pause, so
    /// this thread never takes the queue lock (at `SCHED_IDLE`, a hold could stall the pacer).
    pub(super) paused_until_ms: u64,
    /// The number of the last group of `journal.v2`: the snapshot's group carries it.
    pub(super) base_seq: u64,
    /// The last release the journal thread knew of when it started this.
    pub(super) last_release_ms: Option<u64>,
    /// Where the segment's synced groups end; the journal thread raises it after each sync.
    pub(super) committed: Arc<AtomicU64>,
}

/// A temp file ready for the hand-over: synced, holding the snapshot and the segment's groups up
/// to `copied`.
#[derive(Debug)]
pub(super) struct Ready {
    pub(super) file: Box<dyn DiskFile>,
    /// Its length.
    pub(super) len: u64,
    /// Where the groups it copied end in the segment.
    pub(super) copied: u64,
    /// The bytes and records of the snapshot alone (header and its group).
    pub(super) snapshot_len: u64,
    pub(super) snapshot_records: u64,
}

/// A running compaction, owned by the journal thread.
pub(super) struct Compactor {
    thread: JoinHandle<io::Result<Ready>>,
    abandoned: Arc<AtomicBool>,
    /// Disconnected when the thread ends, whatever its outcome.
    ended: Receiver<()>,
}

/// Starts the thread.
pub(super) fn start(job: Job) -> io::Result<Compactor> {
    let abandoned = Arc::new(AtomicBool::new(false));
    let (end, ended) = crossbeam_channel::bounded::<()>(0);
    let flag = Arc::clone(&abandoned);
    let thread = thread::Builder::new().name(THREAD.into()).spawn(move || {
        let _end = end;
        job.run(&flag)
    })?;
    Ok(Compactor { thread, abandoned, ended })
}

impl Compactor {
    pub(super) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    pub(super) fn join(self) -> thread::Result<io::Result<Ready>> {
        self.thread.join()
    }

    /// Tells the thread to give up, and lets it end alone: it touches no file by name.
    pub(super) fn abandon(self) {
        self.abandoned.store(true, Ordering::Release);
    }

    /// Waits at most `wait` for the thread to end, then tells it to give up and waits as long
    /// again: at `SCHED_IDLE` it may get no CPU while anything else runs. Its outcome, if it
    /// ended; `None` if it is left to end on its own, touching no file.
    pub(super) fn finish_within(self, wait: Duration) -> Option<thread::Result<io::Result<Ready>>> {
        if self.ended.recv_timeout(wait) == Err(RecvTimeoutError::Timeout) {
            self.abandoned.store(true, Ordering::Release);
            if self.ended.recv_timeout(wait) == Err(RecvTimeoutError::Timeout) {
                return None;
            }
        }
        Some(self.thread.join())
    }
}

fn abandoned_error() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the service is stopping")
}

impl Job {
    fn run(self, abandoned: &AtomicBool) -> io::Result<Ready> {
        let go_on = || match abandoned.load(Ordering::Acquire) {
            true => Err(abandoned_error()),
            false => Ok(()),
        };
        let now_ms = self.now_ms;
        // Taken before `committed` is read: an ingestion the store holds now either was in
        // `journal.v2` or has its record in the segment below `committed` (the journal thread
        // publishes a sync before it inserts what the group held).
        let live = self.store.in_order(now_ms);
        // The snapshot may take seconds of CPU: the commits and the requests come first. Only
        // once the store's lock is let go for good: at `SCHED_IDLE`, a thread preempted inside
        // its read lock held every commit (every durable POST) behind it, 286 ms measured.
        let _ = crate::realtime::idle_this_thread();
        let copied = self.committed.load(Ordering::Acquire);
        let head = read_range(&*self.segment, 0, copied)?;
        // A compaction resumed after one whose hand-over failed past its rename: `journal.v2`
        // already holds the segment's first groups, up to `base_seq`.
        let from = replay::first_group_after(&head, self.base_seq).map_err(segment_error)?;
        let in_segment = replay::ingestion_ids(&head, from).map_err(segment_error)?;
        let paused_until_ms = Some(self.paused_until_ms).filter(|&until| until > now_ms).unwrap_or(0);
        let records = live.iter().filter(|i| !in_segment.contains(&i.id)).map(|i| i.record());
        let records = records.take_while(|_| !abandoned.load(Ordering::Acquire));
        let (snapshot_len, snapshot_records) =
            write_snapshot(&*self.temp, self.base_seq, self.last_release_ms, paused_until_ms, records)?;
        go_on()?;
        hold();
        let (file, segment) = (self.temp, self.segment);
        let mut ready = Ready { file, len: snapshot_len, copied: HEADER.len() as u64, snapshot_len, snapshot_records };
        ready.copy(&head[from..], copied)?;
        go_on()?;
        ready.file.sync_all()?;
        // Groups synced meanwhile: copied again while that is worth it, so the journal
        // thread's share of the copy stays small.
        for _ in 0..4 {
            let now = self.committed.load(Ordering::Acquire);
            if now - ready.copied < SMALL_TAIL {
                break;
            }
            go_on()?;
            let tail = read_range(&*segment, ready.copied, now)?;
            ready.copy(&tail, now)?;
            ready.file.sync_all()?;
        }
        Ok(ready)
    }
}

impl Ready {
    /// Appends `groups`, the segment's bytes up to `to`, after what it holds.
    pub(super) fn copy(&mut self, groups: &[u8], to: u64) -> io::Result<()> {
        if !groups.is_empty() {
            self.file.write_all_at(groups, self.len)?;
            self.len += groups.len() as u64;
        }
        self.copied = to;
        Ok(())
    }
}

/// The file's bytes from `from` to `to`.
pub(super) fn read_range(file: &dyn DiskFile, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; usize::try_from(to.saturating_sub(from)).map_err(io::Error::other)?];
    file.read_exact_at(&mut bytes, from)?;
    Ok(bytes)
}

fn segment_error(error: String) -> io::Error {
    io::Error::other(format!("reading the segment: {error}"))
}

/// Writes a journal holding this state to `file`: the header, then (unless `seq` is 0, a
/// journal with no group yet) one group numbered `seq` of a `last_release` record (with the
/// upstream's pause, if one is still ahead) and an `ingest` record with batch states per
/// ingestion. Returns its length and its count of records. Not synced.
pub(super) fn write_snapshot(
    file: &dyn DiskFile,
    seq: u64,
    last_release_ms: Option<u64>,
    paused_until_ms: u64,
    ingestions: impl Iterator<Item = IngestionRecord>,
) -> io::Result<(u64, u64)> {
    let mut out = Chunked { file, buf: HEADER.as_bytes().to_vec(), flushed: 0, last: (0, 0) };
    if seq == 0 {
        out.flush()?;
        return Ok((out.flushed, 0));
    }
    let group_at = out.buf.len() as u64;
    out.buf.extend_from_slice(&[0; GROUP_HEADER_LEN]);
    let mut count = 0u32;
    if last_release_ms.is_some() || paused_until_ms > 0 {
        out.push(&Record::LastRelease { at_ms: last_release_ms.unwrap_or(0), paused_until_ms })?;
        count += 1;
    }
    for ingestion in ingestions {
        out.push(&Record::ingest(ingestion, true))?;
        count += 1;
    }
    out.flush()?;
    let len = out.flushed - group_at - GROUP_HEADER_LEN as u64;
    file.write_all_at(&record::header_line(seq, count, len), group_at)?;
    Ok((out.flushed, u64::from(count)))
}

/// Bytes on their way to a file, written a [`CHUNK`] at a time. Each chunk's write-back starts
/// as it is written and the one before it is waited for, so at most two chunks are ever in the
/// disk's queue ahead of the journal thread's commits (a snapshot of millions of ids left to
/// the kernel's write-back put ~100 ms of writes ahead of some commits).
struct Chunked<'a> {
    file: &'a dyn DiskFile,
    buf: Vec<u8>,
    flushed: u64,
    /// The last chunk written: (offset, length).
    last: (u64, u64),
}

impl Chunked<'_> {
    fn push(&mut self, record: &Record) -> io::Result<()> {
        record.encode(&mut self.buf);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.buf, self.flushed)?;
        let len = self.buf.len() as u64;
        self.file.start_write_back(self.flushed, len);
        if self.last.1 > 0 {
            self.file.finish_write_back(self.last.0, self.last.1);
        }
        self.last = (self.flushed, len);
        self.flushed += len;
        self.buf.clear();
        Ok(())
    }
}

/// Test seam: with `INGESTD_COMPACTION_HOLD` naming a FIFO, each compaction waits here, its
/// snapshot written and not yet synced, until it reads one byte from it. So a test holds a
/// compaction under way for as long as it likes, without sleeping.
fn hold() {
    if let Some(path) = std::env::var_os("INGESTD_COMPACTION_HOLD") {
        hold_on(Path::new(&path));
    }
}

fn hold_on(path: &Path) {
    use std::io::Read;
    if let Ok(mut fifo) = std::fs::File::open(path) {
        let _ = fifo.read(&mut [0]);
    }
}
