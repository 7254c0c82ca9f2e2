//! The service without HTTP: the store, the pacer, the worker and (in durable mode) the
//! journal, wired together.
//!
//! `App` is what the HTTP layer calls and what thread tests drive. It owns the core threads and
//! stops them in order: the pacer first, then the worker after its batch in flight, then the
//! journal after everything is saved. In memory mode a `store-sweep` thread forgets expired
//! ingestions, which the journal thread does in durable mode: never a request's thread.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::Retry;
use crate::journal::{
    self, Compaction, Disk, Journal, JournalHandle, Outage, RealDisk, Recovered, StorageHealth, WriteError,
};
use crate::log;
use crate::metrics::{push_bounded, RECENT_INGESTIONS};
use crate::model::{Batch, BatchStatus, Id, Ingestion, Priority};
use crate::pacer::{Pacer, Queue, Restored};
use crate::store::{KeyClaim, Store};
use crate::worker::{ExternalApi, FetchStats, Worker};

/// How the core paces and cuts work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// The least time between two releases.
    pub interval: Duration,
    /// Ids per batch.
    pub batch_size: usize,
}

/// Where the state lives and how long finished work is kept.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The journal's directory; `None` keeps everything in memory only.
    pub data_dir: Option<PathBuf>,
    /// How long a completed ingestion stays visible.
    pub retain: Duration,
    pub compaction: Compaction,
    /// Where the journal's file operations go: the real file system, or a test's recording.
    pub disk: Arc<dyn Disk>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: None,
            retain: crate::config::defaults::RETAIN,
            compaction: Compaction::default(),
            disk: Arc::new(RealDisk),
        }
    }
}

/// Why the service did not start.
#[derive(Debug)]
pub enum StartError {
    /// The data directory's journal cannot be used: locked by another process, damaged, or
    /// not readable or writable.
    Journal(journal::OpenError),
    /// A thread (the journal's, or the sweeper's) could not be started.
    Thread(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Journal(error) => error.fmt(f),
            StartError::Thread(error) => write!(f, "cannot start a thread: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Why an ingestion was not accepted. Nothing accepted before is affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestError {
    /// The service is stopping and takes no new work.
    ShuttingDown,
    /// The journal could not save it.
    Unsaved(WriteError),
    /// The queue holds too many ids for this request now; at the pacing rate, enough will have
    /// drained after `retry_after`.
    QueueFull { retry_after: Duration },
}

pub struct App {
    store: Arc<Store>,
    queue: Queue,
    batch_size: usize,
    journal: Option<JournalHandle>,
    /// Whether the journal can write; `None` in memory mode.
    storage: Option<Arc<StorageHealth>>,
    accepting: AtomicBool,
    /// Ids ever accepted (and recovered); minus the ids the worker has fetched, the ids queued.
    accepted_ids: Arc<AtomicU64>,
    fetched: Arc<FetchStats>,
    max_queued_ids: AtomicU64,
    threads: Mutex<Option<Threads>>,
}

struct Threads {
    pacer: Pacer,
    worker: Worker,
    journal: Option<Journal>,
    /// Memory mode's sweeper (the journal sweeps in durable mode).
    sweeper: Option<Sweeper>,
}

/// The `store-sweep` thread: in memory mode, forgets expired ingestions once a sweep period
/// (`Store::sweep_now_and_then`), off the request path, where a sweep of a million ingestions
/// cost the POST that ran it tens of milliseconds.
struct Sweeper {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Sweeper {
    /// How often it asks whether a sweep is due.
    const LOOK_EVERY: Duration = Duration::from_secs(1);

    fn start(store: Arc<Store>, queue: Queue) -> std::io::Result<Sweeper> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new().name("store-sweep".into()).spawn(move || {
            while stopped.recv_timeout(Sweeper::LOOK_EVERY) == Err(crossbeam_channel::RecvTimeoutError::Timeout) {
                store.sweep_now_and_then(queue.wall_ms());
            }
        })?;
        Ok(Sweeper { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

impl App {
    /// Starts an in-memory service.
    pub fn start(pacing: Pacing, clock: Arc<dyn Clock>, api: impl ExternalApi) -> App {
        match App::open(pacing, clock, api, Storage::default()) {
            Ok(app) => app,
            // It does no I/O; only a thread it cannot start stops it.
            Err(error) => panic!("the service cannot start: {error}"),
        }
    }

    /// Starts the service; with a data directory, replays its journal first. Failed releases are
    /// retried by the default policy (see [`App::open_with`]).
    pub fn open(
        pacing: Pacing,
        clock: Arc<dyn Clock>,
        api: impl ExternalApi,
        storage: Storage,
    ) -> Result<App, StartError> {
        App::open_with(pacing, Retry::default_for(pacing.interval), clock, api, storage)
    }

    /// Like [`App::open`], with `retry` saying how long a batch with ids to retry waits, and
    /// after how many releases they fail.
    pub fn open_with(
        pacing: Pacing,
        retry: Retry,
        clock: Arc<dyn Clock>,
        api: impl ExternalApi,
        storage: Storage,
    ) -> Result<App, StartError> {
        assert!(pacing.batch_size >= 1, "batch size must be at least 1");
        let store = Arc::new(Store::new(storage.retain));
        let (tx, rx) = crossbeam_channel::unbounded();
        let pacer = Pacer::start(pacing.interval, clock, tx);
        let queue = pacer.queue().clone();
        let mut recovered_ids = 0;
        let journal = match &storage.data_dir {
            None => None,
            Some(dir) => {
                // Locks the directory first: a second instance stops here, naming the holder.
                let mut opened = journal::open(Arc::clone(&storage.disk), dir).map_err(StartError::Journal)?;
                let recovered = std::mem::take(&mut opened.recovered.ingestions);
                recovered_ids = restore(&store, &queue, recovered, &opened.recovered, dir, api.has_wire());
                let journal = Journal::start(opened, Arc::clone(&store), queue.clone(), storage.compaction)
                    .map_err(StartError::Thread)?;
                Some(journal)
            }
        };
        let sweeper = match journal {
            Some(_) => None,
            None => Some(Sweeper::start(Arc::clone(&store), queue.clone()).map_err(StartError::Thread)?),
        };
        let journal_handle = journal.as_ref().map(|j| j.handle().clone());
        let worker = Worker::start(api, rx, queue.clone(), journal_handle.clone(), retry);
        Ok(App {
            store,
            queue,
            batch_size: pacing.batch_size,
            storage: journal_handle.as_ref().map(|j| Arc::clone(j.health())),
            journal: journal_handle,
            accepting: AtomicBool::new(true),
            accepted_ids: Arc::new(AtomicU64::new(recovered_ids)),
            fetched: worker.stats(),
            max_queued_ids: AtomicU64::new(crate::config::defaults::MAX_QUEUED_IDS as u64),
            threads: Mutex::new(Some(Threads { pacer, worker, journal, sweeper })),
        })
    }

    /// Refuses new work (with [`IngestError::QueueFull`]) that would leave more than `max` ids
    /// waiting.
    pub fn set_max_queued_ids(&self, max: u64) {
        self.max_queued_ids.store(max, Ordering::Relaxed);
    }

    /// The most ids that may wait at once (`--max-queued-ids`).
    pub(crate) fn max_queued_ids(&self) -> u64 {
        self.max_queued_ids.load(Ordering::Relaxed)
    }

    /// Accepts `ids` (non-empty, already validated) and queues their batches. In durable mode
    /// it returns once they are on disk. A `key` seen before answers the first ingestion's id
    /// and enqueues nothing.
    pub fn ingest(&self, priority: Priority, ids: Vec<Id>, key: Option<&str>) -> Result<Uuid, IngestError> {
        if !self.is_accepting() {
            return Err(IngestError::ShuttingDown);
        }
        if let Some(key) = key {
            if let KeyClaim::Existing(id) = self.store.claim_key(key, self.queue.wall_ms()) {
                return Ok(id);
            }
        }
        let wanted = ids.len() as u64;
        let release_key = || {
            if let Some(key) = key {
                self.store.release_key(key);
            }
        };
        if let Err(error) = self.reserve(wanted) {
            release_key();
            return Err(error);
        }
        let now_ms = self.queue.wall_ms();
        let ingestion = Arc::new(Ingestion::new(priority, ids, self.batch_size, now_ms, key));
        let id = ingestion.id;
        let Some(journal) = &self.journal else {
            self.store.insert(Arc::clone(&ingestion));
            self.queue.submit(ingestion);
            return Ok(id);
        };
        // Waits for the group commit; the journal thread inserts and submits it first.
        journal.ingest(ingestion).map(|()| id).map_err(|error| {
            self.accepted_ids.fetch_sub(wanted, Ordering::Relaxed);
            release_key();
            match error {
                WriteError::Stopped => IngestError::ShuttingDown,
                WriteError::Refused(_) => IngestError::Unsaved(error),
            }
        })
    }

    /// Counts `wanted` ids as queued, unless that would pass the limit. Reserving first means
    /// simultaneous requests cannot overshoot together.
    fn reserve(&self, wanted: u64) -> Result<(), IngestError> {
        let max = self.max_queued_ids();
        let reserved = self.accepted_ids.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |accepted| {
            let queued = accepted.saturating_sub(self.fetched_ids());
            (queued + wanted <= max).then_some(accepted + wanted)
        });
        reserved.map(|_| ()).map_err(|accepted| {
            let excess = (accepted.saturating_sub(self.fetched_ids()) + wanted).saturating_sub(max);
            IngestError::QueueFull { retry_after: self.drain_time(excess) }
        })
    }

    fn fetched_ids(&self) -> u64 {
        self.fetched.ok.load(Ordering::Relaxed) + self.fetched.failed.load(Ordering::Relaxed)
    }

    /// How long until `ids` more have drained: a batch per period, which is the interval
    /// unless batches run longer (a slow API).
    fn drain_time(&self, ids: u64) -> Duration {
        let batches = ids.div_ceil(self.batch_size as u64);
        self.queue.period().saturating_mul(u32::try_from(batches).unwrap_or(u32::MAX))
    }

    /// The ingestion with this id, unless unknown or past the retention period.
    pub fn ingestion(&self, id: &Uuid) -> Option<Arc<Ingestion>> {
        self.store.get(id, self.queue.wall_ms())
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Whether state is kept on disk (`--data-dir`).
    pub(crate) fn is_durable(&self) -> bool {
        self.storage.is_some()
    }

    /// In durable mode, the journal's outage while it cannot write: then new work is refused
    /// and nothing is released until it can. Always `None` in memory mode.
    pub fn storage_outage(&self) -> Option<Outage> {
        self.storage.as_ref().and_then(|health| health.outage())
    }

    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Takes no new work, releases nothing more, waits up to `timeout` for the batch in flight,
    /// saves everything and joins the threads. Returns whether the batch in flight finished.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.accepting.store(false, Ordering::Release);
        let Some(threads) = self.threads.lock().take() else { return true };
        threads.pacer.stop();
        let finished = threads.worker.join_timeout(timeout);
        if !finished {
            let then = match threads.journal {
                Some(_) => "it runs again after a restart",
                None => "in memory mode it is lost with the rest of the queue",
            };
            log::warn(format_args!("the batch in flight did not finish within {timeout:?}; {then}"));
        }
        if let Some(journal) = threads.journal {
            journal.stop();
        }
        if let Some(sweeper) = threads.sweeper {
            sweeper.stop();
        }
        finished
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown(crate::config::defaults::SHUTDOWN_TIMEOUT);
    }
}

/// Puts what the journal held back: into the store, and what is unfinished into the queue
/// (interrupted batches first).
fn restore(
    store: &Store,
    queue: &Queue,
    ingestions: Vec<crate::model::IngestionRecord>,
    recovered: &Recovered,
    dir: &std::path::Path,
    wire: bool,
) -> u64 {
    let now_ms = queue.wall_ms();
    let mut unfinished_ids = 0;
    let (mut reruns, mut retries, mut queued, mut kept) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut recent = VecDeque::with_capacity(RECENT_INGESTIONS);
    for record in ingestions {
        let ingestion = Arc::new(Ingestion::restore(record));
        store.insert(Arc::clone(&ingestion));
        if store.get(&ingestion.id, now_ms).is_none() {
            continue;
        }
        kept += 1;
        push_bounded(&mut recent, Arc::clone(&ingestion), RECENT_INGESTIONS);
        for (index, batch) in ingestion.batches().enumerate() {
            if !batch.status.is_finished() {
                unfinished_ids += ingestion.pending_count(index) as u64;
            }
            if batch.status == BatchStatus::Triggered {
                // Waiting out a retry's backoff, or interrupted in flight (at least once).
                let handle = Batch { ingestion: Arc::clone(&ingestion), index: index as u32 };
                match batch.retry_at {
                    Some(_) => retries.push(handle),
                    None => reruns.push(handle),
                }
            }
        }
        if ingestion.batches().any(|b| b.status == BatchStatus::YetToStart) {
            queued.push(ingestion);
        }
    }
    store.sweep(now_ms);
    log::info(format_args!(
        "durable mode: journal in {}; recovered {kept} ingestions, {} batches to run again, {} waiting for a retry, {} \
         ingestions with queued batches",
        dir.display(),
        reruns.len(),
        retries.len(),
        queued.len()
    ));
    if recovered.expired_records > 0 {
        log::info(format_args!(
            "skipped {} journal records of ingestions that had expired (--retain) before a compaction",
            recovered.expired_records
        ));
    }
    if let Some(ms) = recovered.paused_until_ms.filter(|&ms| ms > now_ms) {
        let until = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        log::info(format_args!(
            "the upstream asked for a pause (Retry-After) until {}: nothing is released before then",
            crate::rfc3339::format(until)
        ));
    }
    queue.metrics().recall(recent);
    let (last_release_ms, paused_until_ms) = (recovered.last_release_ms, recovered.paused_until_ms);
    queue.restore(Restored { reruns, queued, retries, last_release_ms, paused_until_ms, wire });
    unfinished_ids
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::clock::ManualClock;
    use crate::worker::SimulatedApi;

    /// In memory mode expired ingestions are forgotten by `store-sweep`, with no request to
    /// run the sweep (and pay for it).
    #[test]
    fn memory_mode_forgets_expired_ingestions_without_a_request() {
        let clock = Arc::new(ManualClock::starting_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
        let storage = Storage { retain: Duration::from_secs(1), ..Storage::default() };
        let pacing = Pacing { interval: Duration::from_secs(5), batch_size: 3 };
        let app = App::open(pacing, clock.clone(), SimulatedApi { delay: Duration::ZERO }, storage).expect("starts");
        let id = app.ingest(Priority::Low, vec![1], None).expect("accepted");
        let done = |app: &App| app.ingestion(&id).is_some_and(|i| i.completed_at_ms().is_some());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done(&app) {
            assert!(std::time::Instant::now() < deadline, "the batch to complete");
            std::thread::yield_now();
        }
        app.queue().advance(&clock, Duration::from_secs(2));
        while app.store.len() > 0 {
            assert!(std::time::Instant::now() < deadline, "the sweeper to forget it");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(app.shutdown(Duration::from_secs(5)));
    }
}
