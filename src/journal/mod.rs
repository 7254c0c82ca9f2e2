//! The durable journal: an append-only file of [`Record`]s in `--data-dir`, owned by the
//! `journal` thread.
//!
//! Other threads send records over a channel and wait for the answer. The thread takes every
//! record waiting, writes them, and calls `fsync` once for the group (group commit), so
//! concurrent requests share the cost of the disk. After the sync it inserts the new ingestions
//! into the store and submits them to the queue, in journal order: nothing is queued or
//! answered before it is on disk; a group's transitions (`triggered`, `completed`, `progress`)
//! are applied to memory before anyone is answered. It also sweeps expired ingestions and
//! compacts the file. It takes the queue lock only inside `Queue::submit_all`. At a stop it writes a clean-stop group, then the seal (`seal.rs`), so that
//! damage found later at the end of the file is known to be corruption, not a torn write, even
//! where it took the clean stop with it. Every file operation goes through [`Disk`].
//!
//! Each group is written where zeros reserved ahead of it (`RESERVE`, from spare room only)
//! already lie, so an `fdatasync` does not change the file's size. After each group and every
//! second, the thread checks that its files still have their names; a removed one is written
//! again from memory before anything more is acknowledged.
//!
//! Compaction (when [`Compaction`] says: enough records, enough of them dead) stays off the
//! commit path: at a compaction point the journal thread moves its
//! appends to a segment (`journal.v2.next`), the `journal-compact` thread (`compact.rs`) writes
//! the snapshot, and the journal thread, between two groups, copies the segment's last groups
//! after it and renames it over `journal.v2` (the protocol: ARCHITECTURE.md, "The journal
//! format").

mod compact;
mod disk;
mod health;
mod record;
mod replay;
mod seal;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use disk::{DirLock, Disk, DiskFile, LockError};
pub(crate) use disk::{RealDisk, LOCK_FILE};
pub(crate) use health::{Outage, StorageHealth};
pub use record::{group_header, Group, GroupHeader, Record, GROUP_HEADER_LEN, HEADER, HEADER_V1};
pub use replay::replay;
pub(crate) use replay::{replay_v1, Corrupt, Recovered};
pub use seal::SEAL_NAME;

use compact::Ready;
use replay::{FileEnd, Part, Replay};
use seal::{Seal, Verdict};

use crate::log;
use crate::model::{Batch, Ingestion, IngestionRecord};
use crate::pacer::Queue;
use crate::store::Store;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// The journal's file name inside the data directory; the version is part of the format.
pub const FILE_NAME: &str = "journal.v2";
/// The version 1 journal, upgraded (and removed) at the first start that finds it.
pub(crate) const FILE_NAME_V1: &str = "journal.v1";
/// The segment: while it exists, new groups go here, and it is replayed after the journal.
pub const SEGMENT_NAME: &str = "journal.v2.next";
/// A snapshot being written; never read (a start removes it).
pub const TEMP_NAME: &str = "journal.v2.tmp";
/// The thread that closes the files a compaction replaced.
const REAP_THREAD: &str = "journal-reap";

/// How much of a replaced file [`reap`] frees at a time.
const REAP_STEP: u64 = 8 << 20;

/// Frees files whose names are gone, on a thread of their own, a [`REAP_STEP`] at a time. The
/// last close of an unlinked file frees all its blocks in one go, tens of ms for a journal of
/// millions of ids: on the journal thread every commit would wait that long, and even on
/// another thread the commits' syncs would queue behind one large transaction of the file
/// system's own journal.
fn reap(files: impl IntoIterator<Item = Option<Box<dyn DiskFile>>> + Send + 'static) {
    let _ = thread::Builder::new().name(REAP_THREAD.into()).spawn(move || {
        for file in files.into_iter().flatten() {
            let mut len = file.size().unwrap_or(0);
            while len > 0 {
                len = len.saturating_sub(REAP_STEP);
                if file.set_len(len).is_err() {
                    break;
                }
            }
        }
    });
}

/// The compaction thread's name (tests hold it at its file operations).
pub const COMPACT_THREAD: &str = compact::THREAD;
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How long a stop waits for a compaction under way to end, then again once told to give up.
const STOP_WAIT: Duration = Duration::from_millis(200);

/// Why the journal could not be opened. The service does not start.
#[derive(Debug)]
pub enum OpenError {
    /// A file or the directory could not be read, written or synced.
    Io { path: PathBuf, error: io::Error },
    /// The journal does not end where its clean stop left it (see `seal.rs`): cut, zeroed or
    /// lost since.
    Unsealed { path: PathBuf, corrupt: Corrupt },
    /// The journal is damaged where it cannot be a torn write.
    Corrupt { path: PathBuf, corrupt: Corrupt },
    /// Another process holds the data directory's lock.
    Locked { dir: PathBuf, pid: Option<u32> },
    /// `--data-dir` names something that is not a directory.
    NotADirectory { dir: PathBuf },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Io { path, error } => write!(f, "cannot use the journal {}: {error}", path.display()),
            OpenError::NotADirectory { dir } => {
                write!(
                    f,
                    "--data-dir {} is not a directory; name a directory (it is created if missing)",
                    dir.display()
                )
            }
            OpenError::Corrupt { path, corrupt } => write!(
                f,
                "the journal {} is corrupt at byte {}: {}; nothing was dropped: {}",
                path.display(),
                corrupt.offset,
                corrupt.reason,
                start_empty(path)
            ),
            OpenError::Unsealed { path, corrupt } => write!(
                f,
                "the journal {} is damaged at byte {}: {}; nothing was dropped: restore it, or {}",
                path.display(),
                corrupt.offset,
                corrupt.reason,
                start_empty(path)
            ),
            OpenError::Locked { dir, pid } => write!(
                f,
                "the data directory {} is in use by another ingestd ({}); stop it first, or pass another --data-dir",
                dir.display(),
                pid.map_or_else(|| "its pid is not known yet".to_owned(), |pid| format!("pid {pid}"))
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// How to start empty: every journal file goes, or what is left (a segment, a seal) is taken for
/// the journal or stops the start again.
fn start_empty(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    format!("to start empty, move every journal file aside ({}/journal.*)", dir.display())
}

/// A record could not be saved. What was saved before is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The disk refused it (full, or failing); the sentence says how.
    Refused(String),
    /// The journal thread has stopped: the service is stopping.
    Stopped,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Refused(why) => f.write_str(why),
            WriteError::Stopped => f.write_str("the journal has stopped"),
        }
    }
}

/// An opened journal, replayed, ready for its thread.
pub struct Opened {
    pub recovered: Recovered,
    disk: Arc<dyn Disk>,
    lock: DirLock,
    file: Box<dyn DiskFile>,
    dir: PathBuf,
    /// Where the groups end; zeros reserved for later ones may follow.
    len: u64,
    /// With a segment that adds groups (a compaction was under way): `file` is the segment, and
    /// this is the number of the last group of `journal.v2`.
    segment: Option<u64>,
}

/// Locks `dir`, opens (or creates, or upgrades from version 1) the journal in it, replays it and
/// cuts off a torn tail or a clean stop, so that the next group goes where they began. A temp
/// file is removed; a segment is replayed after `journal.v2`, and kept if it adds groups (the
/// compaction then resumes in the background), removed if it does not.
pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> Result<Opened, OpenError> {
    let path = dir.join(FILE_NAME);
    let segment_path = dir.join(SEGMENT_NAME);
    let lock = lock_dir(&*disk, dir)?;
    remove_if_there(&*disk, &dir.join(TEMP_NAME)).map_err(io_at(&dir.join(TEMP_NAME)))?;
    let seal = read_seal(&*disk, dir)?;
    let base = read(&*disk, &path).map_err(io_at(&path))?;
    let segment = read(&*disk, &segment_path).map_err(io_at(&segment_path))?;
    let Found { recovered, file, active, segment } = match (base, segment) {
        (None, Some(_)) => {
            let reason = format!("there is no {FILE_NAME} before it");
            return Err(OpenError::Corrupt { path: segment_path, corrupt: Corrupt { offset: 0, reason } });
        }
        (None, None) => {
            if let Some(seal) = &seal {
                if let Verdict::Damaged(corrupt) = seal.check(None, 0) {
                    return Err(unsealed(dir, seal.file, corrupt));
                }
            }
            let (recovered, file) = upgrade_or_create(&*disk, dir)?;
            Found { recovered, file, active: path, segment: None }
        }
        (Some(base), segment) => replay_existing(&*disk, dir, &base, segment.as_deref(), seal.as_ref())?,
    };
    if let Some((offset, reason)) = &recovered.torn_tail {
        log::warn(format_args!(
            "ignoring a torn final group in {} at byte {offset} ({reason}); it was written after the last sync and never acknowledged",
            active.display()
        ));
    }
    if recovered.torn_tail.is_some() || recovered.clean_stop {
        // Cut (and synced) before anything is appended: a later crash must not leave a torn
        // group after a clean stop, nor new groups after damaged bytes.
        file.set_len(recovered.valid_len).and_then(|()| file.sync_all()).map_err(io_at(&active))?;
    }
    let len = recovered.valid_len;
    Ok(Opened { recovered, disk, lock, file, dir: dir.to_owned(), len, segment })
}

/// What a start found: the state replayed, the file to append to (`active`), and, if that is a
/// segment, the last group number of the `journal.v2` before it.
struct Found {
    recovered: Recovered,
    file: Box<dyn DiskFile>,
    active: PathBuf,
    segment: Option<u64>,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError {
    let path = path.to_owned();
    move |error| OpenError::Io { path, error }
}

fn corrupt_at(path: &Path) -> impl FnOnce(Corrupt) -> OpenError {
    let path = path.to_owned();
    move |corrupt| OpenError::Corrupt { path, corrupt }
}

/// Makes `dir` if need be and takes its lock: a second instance stops here, naming the holder.
fn lock_dir(disk: &dyn Disk, dir: &Path) -> Result<DirLock, OpenError> {
    disk.create_dir_all(dir).map_err(|error| match error.kind() {
        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => OpenError::NotADirectory { dir: dir.to_owned() },
        _ => OpenError::Io { path: dir.to_owned(), error },
    })?;
    disk.lock(dir).map_err(|error| match error {
        LockError::Held { pid } => OpenError::Locked { dir: dir.to_owned(), pid },
        LockError::Io(error) => OpenError::Io { path: dir.join(LOCK_FILE), error },
    })
}

/// Replays `journal.v2` (`base`) and the segment after it, checks them against the clean stop's
/// seal, and picks the file the next group goes to.
fn replay_existing(
    disk: &dyn Disk,
    dir: &Path,
    base: &[u8],
    segment: Option<&[u8]>,
    seal: Option<&Seal>,
) -> Result<Found, OpenError> {
    let (path, segment_path) = (dir.join(FILE_NAME), dir.join(SEGMENT_NAME));
    let mut replay = Replay::default();
    let base_end = replay.file(base, Part::Base).map_err(corrupt_at(&path))?;
    let base_seq = replay.seq();
    // A segment whose groups do not follow a torn `journal.v2` is damage there: the segment was
    // made after every group of it was synced.
    let segment_end = segment
        .map(|bytes| {
            replay.file(bytes, Part::Segment).map_err(|in_segment| match &base_end.torn_tail {
                Some((offset, reason)) => {
                    let reason = format!("{reason}, and {SEGMENT_NAME} continues it");
                    OpenError::Corrupt { path: path.clone(), corrupt: Corrupt { offset: *offset, reason } }
                }
                None => OpenError::Corrupt { path: segment_path.clone(), corrupt: in_segment },
            })
        })
        .transpose()?;
    if let Some(seal) = seal {
        let end = if seal.file == FILE_NAME { Some(&base_end) } else { segment_end.as_ref() };
        check_seal(disk, dir, seal, end, replay.seq())?;
    }
    // Left by an upgrade that stopped after its rename: the version 2 file has it all.
    remove_v1(disk, dir).map_err(io_at(&dir.join(FILE_NAME_V1)))?;
    match segment_end {
        Some(end) if end.added > 0 => {
            // The segment was made after every group of `journal.v2` was synced.
            let said = match (&base_end.torn_tail, base_end.clean_stop) {
                (Some((offset, reason)), _) => Some((*offset, reason.clone())),
                (None, true) => Some((base_end.valid_len, "it ends in a clean stop".to_owned())),
                (None, false) => None,
            };
            if let Some((offset, reason)) = said {
                let reason = format!("{reason}, and {SEGMENT_NAME} continues it");
                return Err(OpenError::Corrupt { path, corrupt: Corrupt { offset, reason } });
            }
            let file = disk.open(&segment_path).map_err(io_at(&segment_path))?;
            Ok(Found { recovered: replay.finish(&end), file, active: segment_path, segment: Some(base_seq) })
        }
        end => {
            if end.is_some() {
                // Only copies of groups `journal.v2` holds, or nothing acknowledged.
                disk.remove(&segment_path).and_then(|()| disk.sync_dir(dir)).map_err(io_at(&segment_path))?;
            }
            let file = disk.open(&path).map_err(io_at(&path))?;
            Ok(Found { recovered: replay.finish(&base_end), file, active: path, segment: None })
        }
    }
}

/// Checks where the journal ends against the clean stop's seal, then removes the seal, before
/// anything changes: a start cut short must not find it stale.
fn check_seal(disk: &dyn Disk, dir: &Path, seal: &Seal, end: Option<&FileEnd>, seq: u64) -> Result<(), OpenError> {
    match seal.check(end, seq) {
        Verdict::Whole => {}
        Verdict::Stale => {
            log::warn(format_args!("ignoring {SEAL_NAME}: groups were added after the clean stop it seals"))
        }
        Verdict::Damaged(corrupt) => return Err(unsealed(dir, seal.file, corrupt)),
    }
    disk.remove(&dir.join(SEAL_NAME)).and_then(|()| disk.sync_dir(dir)).map_err(io_at(&dir.join(SEAL_NAME)))
}

fn unsealed(dir: &Path, file: &str, corrupt: Corrupt) -> OpenError {
    OpenError::Unsealed { path: dir.join(file), corrupt }
}

/// The clean stop's seal, if one is there; one cut short (a crash as it was written, after its
/// journal was synced) is ignored.
fn read_seal(disk: &dyn Disk, dir: &Path) -> Result<Option<Seal>, OpenError> {
    let path = dir.join(SEAL_NAME);
    let Some(bytes) = read(disk, &path).map_err(|error| OpenError::Io { path: path.clone(), error })? else {
        return Ok(None);
    };
    let seal = Seal::parse(&bytes);
    if seal.is_none() {
        log::warn(format_args!("ignoring {}, which is not whole: a crash cut it as it was written", path.display()));
        remove_if_there(disk, &path).map_err(|error| OpenError::Io { path, error })?;
    }
    Ok(seal)
}

fn remove_if_there(disk: &dyn Disk, path: &Path) -> io::Result<()> {
    match disk.remove(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The file's bytes, or `None` if there is no such file.
fn read(disk: &dyn Disk, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match disk.read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn remove_v1(disk: &dyn Disk, dir: &Path) -> io::Result<()> {
    match disk.remove(&dir.join(FILE_NAME_V1)) {
        Ok(()) => disk.sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// With no version 2 journal: replays a version 1 journal if there is one and writes what it
/// held as a version 2 snapshot (then removes it), or starts an empty journal.
fn upgrade_or_create(disk: &dyn Disk, dir: &Path) -> Result<(Recovered, Box<dyn DiskFile>), OpenError> {
    let old = dir.join(FILE_NAME_V1);
    let io = |path: PathBuf| move |error| OpenError::Io { path, error };
    let mut recovered = match read(disk, &old).map_err(io(old.clone()))? {
        Some(bytes) => replay_v1(&bytes).map_err(|corrupt| OpenError::Corrupt { path: old.clone(), corrupt })?,
        None => Recovered::default(),
    };
    if let Some((offset, reason)) = recovered.torn_tail.take() {
        log::warn(format_args!(
            "ignoring a torn final record in {} at byte {offset} ({reason}); it was never acknowledged",
            old.display()
        ));
    }
    // A group numbered 1 if there is anything to hold, none if not.
    let seq = u64::from(recovered.last_release_ms.is_some() || !recovered.ingestions.is_empty());
    let ingestions = recovered.ingestions.iter().cloned();
    let (file, len, records) =
        write_snapshot(disk, dir, seq, recovered.last_release_ms, 0, ingestions).map_err(io(dir.join(FILE_NAME)))?;
    if recovered.records > 0 {
        log::info(format_args!("upgraded the journal {} to {}", old.display(), dir.join(FILE_NAME).display()));
    }
    remove_v1(disk, dir).map_err(io(old))?;
    recovered.valid_len = len;
    recovered.seq = seq;
    recovered.records = records;
    Ok((recovered, file))
}

/// Replaces the journal with a snapshot of this state (see [`compact::write_snapshot`]): a temp
/// file, synced, renamed over the journal, and the directory synced. Returns the new journal,
/// opened, its length and records. On failure the old journal is untouched and the temp file
/// is removed.
fn write_snapshot(
    disk: &dyn Disk,
    dir: &Path,
    seq: u64,
    last_release_ms: Option<u64>,
    paused_until_ms: u64,
    ingestions: impl Iterator<Item = IngestionRecord>,
) -> io::Result<(Box<dyn DiskFile>, u64, u64)> {
    let path = dir.join(FILE_NAME);
    let temp = dir.join(TEMP_NAME);
    // A new file: a compaction given up may still write to one left under this name.
    let _ = disk.remove(&temp);
    let written = disk.create(&temp).and_then(|file| {
        let written = compact::write_snapshot(&*file, seq, last_release_ms, paused_until_ms, ingestions)?;
        file.sync_all()?;
        disk.rename(&temp, &path)?;
        Ok((file, written))
    });
    match written {
        Ok((file, (len, records))) => {
            disk.sync_dir(dir)?;
            Ok((file, len, records))
        }
        Err(error) => {
            // The space it took is needed more than the file.
            let _ = disk.remove(&temp);
            Err(error)
        }
    }
}

enum Op {
    /// An ingestion and its record, encoded by the caller so that encoding runs in parallel.
    Ingest(Arc<Ingestion>, Vec<u8>, Answer),
    Transition(Record, Batch, Answer),
    Stop,
}

/// Where one record's outcome goes: the thread that sent the record waits on the other end.
/// Dropped unanswered (the journal stopped), that thread gets an error.
type Answer = Sender<Result<(), WriteError>>;

/// The handle other threads use to save records.
#[derive(Clone)]
pub(crate) struct JournalHandle {
    ops: Sender<Op>,
    health: Arc<StorageHealth>,
}

/// Owns the journal thread; [`Journal::stop`] flushes and joins it.
pub(crate) struct Journal {
    handle: JournalHandle,
    thread: JoinHandle<()>,
}

/// When to compact: once the file holds at least `min_records`, and more of its bytes are dead
/// (transitions, group headers, what compaction would leave out) than `dead_percent` % of the
/// live ones (the last snapshot's and the `ingest` records since). At 100, the bytes a
/// compaction rewrites are paid for by at least as many written since the last one.
#[derive(Debug, Clone, Copy)]
pub struct Compaction {
    pub min_records: u64,
    pub dead_percent: u64,
}

impl Default for Compaction {
    /// 10,000 records, 100 %. The hidden variables `INGESTD_COMPACTION_MIN_RECORDS` and
    /// `INGESTD_COMPACTION_DEAD_PERCENT` change them, for tests and benchmarks that need a
    /// compaction on demand (0 % compacts again as soon as one ends).
    fn default() -> Self {
        let var = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        Compaction {
            min_records: var("INGESTD_COMPACTION_MIN_RECORDS", 10_000),
            dead_percent: var("INGESTD_COMPACTION_DEAD_PERCENT", 100),
        }
    }
}

/// How long a failed compaction waits before the next try, at first and at most.
const COMPACTION_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

struct Writer {
    disk: Arc<dyn Disk>,
    /// Held until the thread ends: the data directory is this process's.
    _lock: DirLock,
    file: Box<dyn DiskFile>,
    dir: PathBuf,
    /// Where the groups end: the next group is written here.
    len: u64,
    /// The file's size: past `len` it holds zeros, written and synced ahead of the records.
    allocated: u64,
    /// The number of the last group written.
    seq: u64,
    records: u64,
    /// Bytes of the file a snapshot would keep, about: see [`Compaction`].
    live_bytes: u64,
    last_release_ms: Option<u64>,
    /// The end of the upstream's latest pause, as journaled (or recovered), for snapshots: the
    /// queue hears of it only after the journal has answered.
    paused_until_ms: u64,
    store: Arc<Store>,
    queue: Queue,
    compaction: Compaction,
    health: Arc<StorageHealth>,
    /// After a failed compaction: no other try before this, and the next wait.
    retry: Option<(Instant, Duration)>,
    /// From a compaction's start to its end: `file` is the segment.
    segment: Option<Segment>,
    /// The file system counts a file's names (some report none for every file): only then is
    /// a removed journal noticed ([`Writer::lost`]).
    links_counted: bool,
    /// The directory `_lock` holds (device and inode), if known.
    locked_dir: Option<(u64, u64)>,
}

/// `journal.v2.next` while it takes the new groups, and the compaction that will fold it in.
struct Segment {
    /// The number of the last group of `journal.v2`; the snapshot's group carries it.
    base_seq: u64,
    /// Where its synced groups end: raised after each sync, before what the group held is
    /// inserted into the store; the compaction thread reads below it only.
    committed: Arc<AtomicU64>,
    /// Records, and bytes of `ingest` records, appended to it by this process.
    records: u64,
    ingest_bytes: u64,
    /// The compaction thread, while it runs. `None` after a failure, until the next try.
    compactor: Option<compact::Compactor>,
    started: Instant,
    /// `journal.v2`, which the segment continues: its name must stay too.
    base: Option<Box<dyn DiskFile>>,
}

impl Journal {
    pub(crate) fn start(
        opened: Opened,
        store: Arc<Store>,
        queue: Queue,
        compaction: Compaction,
    ) -> io::Result<Journal> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let allocated = opened.file.size()?;
        let health = Arc::new(StorageHealth::default());
        let base = opened.segment.and_then(|_| opened.disk.open(&opened.dir.join(FILE_NAME)).ok());
        let links_counted = opened.file.is_linked().unwrap_or(false);
        let locked_dir = opened.disk.identity(&opened.dir).ok();
        let mut writer = Writer {
            disk: opened.disk,
            _lock: opened.lock,
            file: opened.file,
            dir: opened.dir,
            len: opened.len,
            allocated,
            seq: opened.recovered.seq,
            records: opened.recovered.records,
            live_bytes: opened.recovered.ingest_bytes,
            last_release_ms: opened.recovered.last_release_ms,
            paused_until_ms: opened.recovered.paused_until_ms.unwrap_or(0),
            store,
            queue,
            compaction,
            health: Arc::clone(&health),
            retry: None,
            segment: opened.segment.map(|base_seq| Segment {
                base_seq,
                committed: Arc::new(AtomicU64::new(opened.len)),
                records: 0,
                ingest_bytes: 0,
                compactor: None,
                started: Instant::now(),
                base,
            }),
            links_counted,
            locked_dir,
        };
        let thread = thread::Builder::new().name("journal".into()).spawn(move || writer.run(&rx))?;
        Ok(Journal { handle: JournalHandle { ops: tx, health }, thread })
    }

    pub(crate) fn handle(&self) -> &JournalHandle {
        &self.handle
    }

    /// Saves what was sent before, then joins the thread; later records fail with an error.
    pub(crate) fn stop(self) {
        let _ = self.handle.ops.send(Op::Stop);
        let _ = self.thread.join();
    }
}

impl JournalHandle {
    /// Whether the journal can write now.
    pub(crate) fn health(&self) -> &Arc<StorageHealth> {
        &self.health
    }

    /// Saves a new ingestion; once this returns `Ok`, it is on disk, in the store and queued.
    pub(crate) fn ingest(&self, ingestion: Arc<Ingestion>) -> Result<(), WriteError> {
        let mut encoded = Vec::new();
        Record::ingest(ingestion.record(), false).encode(&mut encoded);
        self.wait(|answer| Op::Ingest(ingestion, encoded, answer))
    }

    /// Saves a transition of `batch` and applies it to the batch; once this returns `Ok`, it is
    /// on disk and visible. On `Err` nothing was applied.
    pub(crate) fn transition(&self, record: Record, batch: &Batch) -> Result<(), WriteError> {
        self.wait(|answer| Op::Transition(record, batch.clone(), answer))
    }

    /// Sends an op and waits for its outcome. Sent to a stopped journal, the op is dropped, and
    /// its answer with it.
    fn wait(&self, op: impl FnOnce(Answer) -> Op) -> Result<(), WriteError> {
        let (answer, outcome) = crossbeam_channel::bounded(1);
        let _ = self.ops.send(op(answer));
        outcome.recv().unwrap_or(Err(WriteError::Stopped))
    }
}

/// How far ahead of its records the journal file is filled with zeros (see `Writer::reserve`).
const RESERVE: u64 = 1 << 20;

/// The least room worth reserving ahead of a group: less saves too few syncs to pay for its own.
const MIN_AHEAD: u64 = 64 << 10;

/// The most a probe of a failing journal writes: enough for a group of ordinary requests, so
/// that one huge request that cannot fit does not keep the service unavailable for the rest.
const PROBE_MOST: u64 = 64 << 10;

/// How long the journal waits for more records to share an fsync with the first one.
const GATHER: Duration = Duration::from_micros(150);

/// Collects a group: `first`, everything already waiting, and, if others are still coming,
/// what arrives within [`GATHER`]. Waiting a little makes groups larger when many requests are
/// in flight, which saves fsyncs (their CPU, and the disk's time) for everyone. It sleeps
/// rather than waits for each record, so senders do not wake it one by one.
fn gather(first: Op, ops: &Receiver<Op>) -> Vec<Op> {
    let mut group = vec![first];
    group.extend(ops.try_iter());
    if group.len() > 1 {
        thread::sleep(GATHER);
        group.extend(ops.try_iter());
    }
    group
}

impl Writer {
    fn run(&mut self, ops: &Receiver<Op>) {
        // Due by the clock, not after a second without work: a steady load never leaves one.
        let mut due = Instant::now() + HOUSEKEEPING;
        loop {
            match ops.recv_deadline(due) {
                Ok(first) => {
                    let mut group = gather(first, ops);
                    let stop = group.iter().position(|op| matches!(op, Op::Stop));
                    if let Some(at) = stop {
                        group.truncate(at);
                    }
                    self.commit(group);
                    if stop.is_some() {
                        return self.stop_cleanly();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= due {
                self.housekeeping();
                due = Instant::now() + HOUSEKEEPING;
            }
        }
    }

    fn commit(&mut self, group: Vec<Op>) {
        if group.is_empty() {
            return;
        }
        let (mut framed, mut ingest_bytes) = (Group::default(), 0);
        for op in &group {
            match op {
                Op::Ingest(_, encoded, _) => {
                    framed.push_encoded(encoded);
                    ingest_bytes += encoded.len() as u64;
                }
                Op::Transition(record, ..) => framed.push(record),
                Op::Stop => {}
            }
        }
        let bytes = framed.finish(self.seq + 1);
        let mut written = self.append(&bytes);
        if written.is_ok() && self.lost() {
            // On disk, but under no name a start would find: not saved until written again.
            written = self.write_again().and_then(|()| self.append(&bytes));
        }
        if written.is_ok() {
            self.wrote();
            self.seq += 1;
            self.live_bytes += ingest_bytes;
            self.records += group.len() as u64;
            if let Some(segment) = &mut self.segment {
                // Published before the store sees the group (see `compact::Job::run`).
                segment.committed.store(self.len, Ordering::Release);
                segment.records += group.len() as u64;
                segment.ingest_bytes += ingest_bytes;
            }
            let mut accepted = Vec::new();
            for op in &group {
                match op {
                    Op::Ingest(ingestion, ..) => {
                        self.store.insert(Arc::clone(ingestion));
                        accepted.push(Arc::clone(ingestion));
                    }
                    // Applied here, before anyone is answered or the file is compacted, so what
                    // is in memory is never behind what is on disk.
                    Op::Transition(Record::Triggered { at_ms, .. }, batch, _) => {
                        self.last_release_ms = self.last_release_ms.max(Some(*at_ms));
                        batch.trigger(*at_ms);
                    }
                    Op::Transition(Record::Completed { at_ms, .. }, batch, _) => {
                        batch.complete(*at_ms);
                    }
                    Op::Transition(Record::Progress { at_ms, retry_at_ms, paused_until_ms, .. }, batch, _) => {
                        self.paused_until_ms = self.paused_until_ms.max(*paused_until_ms);
                        batch.record_progress(*at_ms, *retry_at_ms);
                    }
                    Op::Transition(..) | Op::Stop => {}
                }
            }
            // Queued before anyone is answered, so an acknowledged ingestion is always queued.
            self.queue.submit_all(accepted);
        }
        for op in group {
            if let Op::Ingest(_, _, answer) | Op::Transition(_, _, answer) = op {
                let _ = answer.send(written.clone());
            }
        }
        if written.is_ok() {
            self.tend_compaction();
        }
    }

    /// Writes and syncs `bytes`; on failure cuts the file back, so no partial record stays, and
    /// tells [`StorageHealth`] (a success is the caller's to tell, once it knows the file still
    /// has its name).
    fn append(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let end = self.len + bytes.len() as u64;
        self.reserve(end);
        let result = self.file.write_all_at(bytes, self.len).and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len = end;
                self.allocated = self.allocated.max(end);
                Ok(())
            }
            Err(error) => {
                let _ = self.file.set_len(self.len);
                self.allocated = self.len;
                self.could_not_write(&error, bytes.len() as u64);
                Err(WriteError::Refused(format!("the service cannot save new work to disk right now ({error})")))
            }
        }
    }

    fn wrote(&self) {
        if let Some(outage) = self.health.succeeded() {
            log::info(format_args!(
                "the journal can write again, after {} failed writes; accepting and releasing work",
                outage.failures
            ));
        }
    }

    /// Logs only the first failure of an outage: the worker retries every few hundred ms.
    fn could_not_write(&self, error: &io::Error, needed: u64) {
        if self.health.failed(error, needed, self.queue.wall_ms()) {
            log::warn(format_args!(
                "the journal in {} cannot write ({error}); new work is refused and nothing is \
                 released until it can",
                self.dir.display()
            ));
        }
    }

    /// While writes fail, checks whether the write that failed would fit now (up to
    /// [`PROBE_MOST`]), by writing zeros where it would go, as `reserve` does: so health
    /// recovers even when nobody writes.
    fn probe(&mut self) {
        if self.lost() {
            let _ = self.write_again();
            return;
        }
        let Some(needed) = self.health.probe_size() else { return };
        let needed = needed.min(PROBE_MOST);
        let zeros = vec![0u8; usize::try_from(needed).unwrap_or(0)];
        match self.file.write_all_at(&zeros, self.len).and_then(|()| self.file.sync_data()) {
            Ok(()) => {
                self.allocated = self.allocated.max(self.len + needed);
                self.wrote();
            }
            Err(error) => {
                let _ = self.file.set_len(self.allocated);
                self.could_not_write(&error, needed);
            }
        }
    }

    /// Makes sure the file already reaches `end`, growing it by up to [`RESERVE`] of zeros,
    /// written and synced: then a group's `fdatasync` writes the data alone. Appending past the
    /// end instead changes the size, and the inode is written too: measured on this VM's disk,
    /// 0.187 against 0.153 ms per sync, 94 against 78 µs of CPU. The zeros come only from space
    /// the filesystem can spare ([`health::spare_bytes`]): a speed-up must never fill a disk
    /// that others write to. With less than [`MIN_AHEAD`] to spare, or if zeros cannot be
    /// written (a file size limit), the group is simply appended.
    fn reserve(&mut self, end: u64) {
        if end <= self.allocated {
            return;
        }
        let wanted = end.max(self.allocated + RESERVE);
        let target = wanted.min(self.allocated.saturating_add(self.file.spare_bytes()));
        if target < end + MIN_AHEAD {
            return;
        }
        let zeros = vec![0u8; usize::try_from(target - self.allocated).unwrap_or(0)];
        match self.file.write_all_at(&zeros, self.allocated).and_then(|()| self.file.sync_all()) {
            Ok(()) => self.allocated = target,
            Err(_) => {
                let _ = self.file.set_len(self.allocated);
            }
        }
    }

    /// Whether the journal's file, or during a compaction `journal.v2` or the segment, lost its
    /// name: someone removed it, or the whole directory.
    fn lost(&self) -> bool {
        let base = self.segment.as_ref().and_then(|segment| segment.base.as_deref());
        let mut files = [Some(&*self.file), base].into_iter().flatten();
        self.links_counted && files.any(|file| !file.is_linked().unwrap_or(true))
    }

    /// Writes what memory holds (every ingestion the store keeps, with its batches' states, the
    /// last release and the upstream's pause) as a new `journal.v2`, in a new directory if it
    /// is gone, and appends there from now on; a compaction under way is given up. So an
    /// acknowledged ingestion outlives the removal of its file. On failure, nothing is
    /// acknowledged or released until a try succeeds ([`Writer::probe`], every second).
    fn write_again(&mut self) -> Result<(), WriteError> {
        let written = self.disk.create_dir_all(&self.dir).and_then(|()| self.relock()).and_then(|()| {
            let live = self.store.in_order(self.queue.wall_ms());
            let records = live.iter().map(|ingestion| ingestion.record());
            write_snapshot(&*self.disk, &self.dir, self.seq, self.last_release_ms, self.paused_until_ms, records)
        });
        let (file, len, count) = match written {
            Ok(written) => written,
            Err(error) => {
                let error =
                    io::Error::new(error.kind(), format!("its file was removed, and writing it again failed: {error}"));
                self.could_not_write(&error, 0);
                return Err(WriteError::Refused(format!(
                    "the service cannot save new work to disk right now ({error})"
                )));
            }
        };
        let segment = self.segment.take();
        if segment.is_some() {
            // Its groups are all in the snapshot.
            let _ = self.disk.remove(&self.dir.join(SEGMENT_NAME));
        }
        let base = segment.and_then(|mut segment| {
            if let Some(compactor) = segment.compactor.take() {
                compactor.abandon();
            }
            segment.base.take()
        });
        let old = std::mem::replace(&mut self.file, file);
        // Freed only once their names are gone (a segment that could not be removed is not).
        reap([Some(old), base].map(|file| file.filter(|file| !file.is_linked().unwrap_or(true))));
        (self.len, self.allocated, self.live_bytes, self.records, self.retry) = (len, len, len, count, None);
        log::warn(format_args!(
            "the journal's file in {} was removed; wrote it again from memory ({count} records), \
             so nothing acknowledged is lost",
            self.dir.display()
        ));
        self.wrote();
        Ok(())
    }

    /// Locks the directory again if it is a new one (ours was removed), so that no second
    /// instance takes it; if another process locked it first, this one must not write there.
    fn relock(&mut self) -> io::Result<()> {
        let now = self.disk.identity(&self.dir)?;
        if self.locked_dir == Some(now) {
            return Ok(());
        }
        self._lock = self.disk.lock(&self.dir).map_err(|error| match error {
            // Said to any client that asks `/health`: the directory's path is for the log alone.
            LockError::Held { pid } => io::Error::other(format!(
                "another process ({}) now holds the data directory",
                pid.map_or("PID unknown".to_owned(), |pid| format!("PID {pid}"))
            )),
            LockError::Io(error) => error,
        })?;
        self.locked_dir = Some(now);
        Ok(())
    }

    fn housekeeping(&mut self) {
        self.probe();
        let swept = self.store.sweep_now_and_then(self.queue.wall_ms());
        if swept > 0 {
            log::info(format_args!("forgot {swept} ingestions past the retention period"));
        }
        self.tend_compaction();
    }

    /// Starts a compaction when one is due, starts it again after a failure once its wait is
    /// over, and hands one over once its thread is done.
    fn tend_compaction(&mut self) {
        let Some(segment) = &mut self.segment else {
            if self.should_compact() {
                self.begin_compaction();
            }
            return;
        };
        match &segment.compactor {
            Some(thread) if thread.is_finished() => {
                let thread = segment.compactor.take().expect("checked just above");
                self.finish_compaction(thread.join());
            }
            Some(_) => {}
            None => {
                if self.retry_due() {
                    self.spawn_compactor();
                }
            }
        }
    }

    fn retry_due(&self) -> bool {
        self.retry.is_none_or(|(at, _)| Instant::now() >= at)
    }

    fn should_compact(&self) -> bool {
        let dead_bytes = self.len.saturating_sub(self.live_bytes);
        let dead_enough = dead_bytes.saturating_mul(100) > self.live_bytes.saturating_mul(self.compaction.dead_percent);
        self.seq > 0 && self.records >= self.compaction.min_records && dead_enough && self.retry_due()
    }

    /// Moves the appends to a new segment (its header synced, and its name: a group in it must
    /// not be lost with its directory entry), then starts the compaction thread.
    fn begin_compaction(&mut self) {
        let path = self.dir.join(SEGMENT_NAME);
        let made = self.disk.create(&path).and_then(|file| {
            file.write_all_at(HEADER.as_bytes(), 0)?;
            file.sync_all()?;
            self.disk.sync_dir(&self.dir)?;
            Ok(file)
        });
        match made {
            Ok(file) => {
                let base = std::mem::replace(&mut self.file, file);
                self.len = HEADER.len() as u64;
                self.allocated = self.len;
                self.segment = Some(Segment {
                    base_seq: self.seq,
                    committed: Arc::new(AtomicU64::new(self.len)),
                    records: 0,
                    ingest_bytes: 0,
                    compactor: None,
                    started: Instant::now(),
                    base: Some(base),
                });
                self.spawn_compactor();
            }
            Err(error) => {
                let _ = self.disk.remove(&path);
                self.compaction_failed(&error);
            }
        }
    }

    fn spawn_compactor(&mut self) {
        let temp = self.dir.join(TEMP_NAME);
        let files =
            self.disk.open(&self.dir.join(SEGMENT_NAME)).and_then(|segment| Ok((segment, self.disk.create(&temp)?)));
        let (segment_file, temp_file) = match files {
            Ok(files) => files,
            Err(error) => return self.compaction_failed(&error),
        };
        let Some(segment) = &mut self.segment else { return };
        let job = compact::Job {
            segment: segment_file,
            temp: temp_file,
            store: Arc::clone(&self.store),
            now_ms: self.queue.wall_ms(),
            paused_until_ms: self.paused_until_ms,
            base_seq: segment.base_seq,
            last_release_ms: self.last_release_ms,
            committed: Arc::clone(&segment.committed),
        };
        match compact::start(job) {
            Ok(thread) => {
                segment.compactor = Some(thread);
                segment.started = Instant::now();
                log::info(format_args!(
                    "compacting the journal ({} records) in the background; new groups go to {SEGMENT_NAME}",
                    self.records
                ));
            }
            Err(error) => self.compaction_failed(&error),
        }
    }

    /// The compaction thread is done: on success, copies the segment's last groups into its
    /// temp file, syncs it, renames it over the journal, syncs the directory and goes on
    /// appending there. A failure leaves the journal and the segment as they were (both are
    /// replayed at a start), removes the temp file, and the next try waits.
    fn finish_compaction(&mut self, outcome: thread::Result<io::Result<Ready>>) {
        let ready = match outcome {
            Ok(Ok(ready)) => ready,
            Ok(Err(error)) => return self.compaction_failed(&error),
            Err(_) => return self.compaction_failed(&io::Error::other("the compaction thread panicked")),
        };
        let (ready, old_journal) = match self.hand_over(ready) {
            Ok(handed) => handed,
            Err(error) => return self.compaction_failed(&error),
        };
        let Some(segment) = self.segment.take() else { return };
        let before = self.records;
        let old_segment = std::mem::replace(&mut self.file, ready.file);
        self.len = ready.len;
        self.allocated = ready.len;
        self.live_bytes = ready.snapshot_len + segment.ingest_bytes;
        self.records = ready.snapshot_records + segment.records;
        self.retry = None;
        // Only copies now; a start that finds it removes it too. Freed only once its name is
        // gone: a start must never find it cut short.
        let removed = self.disk.remove(&self.dir.join(SEGMENT_NAME)).is_ok();
        reap([old_journal, removed.then_some(old_segment)]);
        log::info(format_args!(
            "compacted the journal from {before} to {} records ({} bytes) in {} ms",
            self.records,
            self.len,
            segment.started.elapsed().as_millis()
        ));
    }

    /// Returns the temp file, now the journal, and a handle on the file it replaced.
    fn hand_over(&mut self, mut ready: Ready) -> io::Result<(Ready, Option<Box<dyn DiskFile>>)> {
        if ready.copied < self.len {
            let tail = compact::read_range(&*self.file, ready.copied, self.len)?;
            ready.copy(&tail, self.len)?;
            ready.file.sync_all()?;
        }
        // Held open across the rename, which then only drops a name: see `reap`.
        let held = self.segment.as_ref().is_some_and(|segment| segment.base.is_some());
        let opened = if held { None } else { self.disk.open(&self.dir.join(FILE_NAME)).ok() };
        self.disk.rename(&self.dir.join(TEMP_NAME), &self.dir.join(FILE_NAME))?;
        let old_journal = self.segment.as_mut().and_then(|segment| segment.base.take()).or(opened);
        // Should this fail, either journal is whole with the segment after it: keep appending
        // to the segment.
        self.disk.sync_dir(&self.dir)?;
        Ok((ready, old_journal))
    }

    /// The space a compaction's temp file took is needed more than the file.
    fn remove_temp(&self) {
        let _ = self.disk.remove(&self.dir.join(TEMP_NAME));
    }

    /// Removes the temp file; the next try waits, twice as long each time.
    fn compaction_failed(&mut self, error: &io::Error) {
        self.remove_temp();
        let wait = self.retry.map_or(COMPACTION_BACKOFF.0, |(_, wait)| (wait * 2).min(COMPACTION_BACKOFF.1));
        self.retry = Some((Instant::now() + wait, wait));
        log::info(format_args!("journal compaction failed, keeping the old file; next try in {wait:?}: {error}"));
    }

    /// Ends a compaction under way: hands it over if it is done, else gives it up (the next
    /// start compacts again), so that a stop never waits on a thread that may get no CPU.
    fn end_running_compaction(&mut self) {
        let compactor = self.segment.as_mut().and_then(|segment| segment.compactor.take());
        match compactor.map(|compactor| compactor.finish_within(STOP_WAIT)) {
            None => {}
            Some(Some(Ok(Err(error)))) if error.kind() == io::ErrorKind::Interrupted => {
                self.remove_temp();
                log::info(format_args!("journal compaction given up for the stop; the next start resumes it"));
            }
            Some(Some(outcome)) => self.finish_compaction(outcome),
            Some(None) => log::info(format_args!(
                "journal compaction given up for the stop (its thread did not end in time: at SCHED_IDLE it may get no CPU); the next start resumes it"
            )),
        }
    }

    /// Marks the end of a clean stop: nothing is written after this group, and the seal says
    /// where it begins.
    fn stop_cleanly(&mut self) {
        self.end_running_compaction();
        if self.lost() && self.write_again().is_err() {
            return;
        }
        let mut group = Group::default();
        group.push(&Record::CleanStop { at_ms: self.queue.wall_ms() });
        let (valid_len, seq) = (self.len, self.seq);
        if self.append(&group.finish(self.seq + 1)).is_ok() {
            self.wrote();
            self.seq += 1;
            let file = if self.segment.is_some() { SEGMENT_NAME } else { FILE_NAME };
            if let Err(error) = self.seal(&Seal { file, valid_len, seq }) {
                log::warn(format_args!(
                    "could not write {SEAL_NAME} ({error}); the next start cannot check the journal's end"
                ));
            }
        }
    }

    fn seal(&self, seal: &Seal) -> io::Result<()> {
        let file = self.disk.create(&self.dir.join(SEAL_NAME))?;
        file.write_all_at(&seal.encode(), 0)?;
        file.sync_all()?;
        self.disk.sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot written to a real file, read back.
    fn snapshot(seq: u64, last_release_ms: Option<u64>, paused_until_ms: u64, ingestions: &[&Ingestion]) -> Recovered {
        let path = std::env::temp_dir().join(format!("ingestd-snapshot-{}", uuid::Uuid::new_v4()));
        let file = std::fs::File::options().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        let records = ingestions.iter().map(|i| i.record());
        compact::write_snapshot(&file, seq, last_release_ms, paused_until_ms, records).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        replay(&bytes).expect("a snapshot replays")
    }

    #[test]
    fn a_snapshot_keeps_the_last_release_and_a_pause_still_ahead() {
        let ingestion = Ingestion::new(crate::Priority::Low, vec![1, 2], 3, 100, None);
        let recovered = snapshot(1, Some(500), 9_000, &[&ingestion]);
        assert_eq!((recovered.last_release_ms, recovered.paused_until_ms), (Some(500), Some(9_000)));
        assert_eq!(recovered.ingestions.len(), 1);
        // A pause alone (nothing released since the start) is kept too.
        let recovered = snapshot(1, None, 9_000, &[]);
        assert_eq!((recovered.last_release_ms, recovered.paused_until_ms), (None, Some(9_000)));
    }

    #[test]
    fn a_snapshot_carries_the_number_of_the_last_group_it_covers() {
        let ingestion = Ingestion::new(crate::Priority::High, (1..=5000).collect(), 3, 100, None);
        // Larger than a chunk: written in pieces, framed as one group.
        let many: Vec<Ingestion> =
            (0..200).map(|_| Ingestion::new(crate::Priority::Low, (1..=500).collect(), 7, 1, None)).collect();
        let mut all = vec![&ingestion];
        all.extend(many.iter());
        let recovered = snapshot(41, Some(7), 0, &all);
        assert_eq!((recovered.seq, recovered.records, recovered.ingestions.len()), (41, 202, 201));
        assert_eq!(recovered.ingestions[0].ids.len(), 5000);
        // With no group yet, there is nothing to number.
        assert_eq!(snapshot(0, None, 0, &[]).seq, 0);
    }

    /// A request that passed the accepting check as the service stopped learns it is stopping
    /// (`503 shutting_down`), not that the disk failed (`storage_unavailable`).
    #[test]
    fn a_record_sent_after_the_stop_is_refused_as_stopped() {
        let dir = std::env::temp_dir().join(format!("ingestd-stopped-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let opened = open(Arc::new(RealDisk), &dir).expect("a new journal");
        let (releases, _) = crossbeam_channel::unbounded();
        let pacer = crate::Pacer::start(Duration::from_secs(5), Arc::new(crate::SystemClock), releases);
        let store = Arc::new(Store::new(Duration::from_secs(60)));
        let journal = Journal::start(opened, store, pacer.queue().clone(), Compaction::default()).unwrap();
        let handle = journal.handle().clone();
        journal.stop();
        let late = Arc::new(Ingestion::new(crate::Priority::High, vec![1], 3, 0, None));
        assert_eq!(handle.ingest(late), Err(WriteError::Stopped));
        pacer.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
