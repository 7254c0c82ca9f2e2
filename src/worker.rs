//! The fetch worker thread and the external API it calls.
//!
//! Receives released batches from the pacer over a channel, journals the release (in durable
//! mode), calls the [`ExternalApi`] once per id, checks each answer, journals the completion,
//! then reports the batch completed to the [`Queue`] (which notifies the pacer, the only thread
//! that releases). Takes the queue lock only inside `Queue::complete` and `Queue::started_late`;
//! the API calls and journal waits run with no lock held.
//!
//! In durable mode a release that is not on disk did not happen: while the journal cannot
//! write, the worker holds the batch, calls nothing and retries with a backoff; since the batch
//! counts as in flight, the pacer releases nothing else meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Deserialize;

use crate::journal::{JournalHandle, Record};
use crate::log;
use crate::model::{Batch, Id};
use crate::pacer::{Queue, Release};

/// What the external API answers for one id: `{"id": <id>, "data": "processed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiResponse {
    pub id: u64,
    pub data: String,
}

/// Why a call to the external API did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub String);

/// The rate-limited external API: one call per id.
pub trait ExternalApi: Send + 'static {
    fn fetch(&mut self, id: Id) -> Result<ApiResponse, ApiError>;
}

/// The built-in stand-in for the external API: waits `delay`, then answers as the real one would.
#[derive(Debug, Clone)]
pub struct SimulatedApi {
    pub delay: Duration,
}

impl ExternalApi for SimulatedApi {
    fn fetch(&mut self, id: Id) -> Result<ApiResponse, ApiError> {
        thread::sleep(self.delay);
        Ok(ApiResponse { id: u64::from(id), data: "processed".to_owned() })
    }
}

/// Counts of external API answers, for logs and checks.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// Owns the worker thread; [`Worker::join`] waits for it to finish the batch in flight and exit
/// (it exits when the pacer, the channel's only sender, has stopped).
pub struct Worker {
    thread: JoinHandle<()>,
    stats: Arc<FetchStats>,
    done: Receiver<()>,
}

impl Worker {
    /// Starts the worker. With a `journal`, each batch is journaled `triggered` before the
    /// first call and `completed` after the last.
    pub fn start(
        api: impl ExternalApi,
        releases: Receiver<Release>,
        queue: Queue,
        journal: Option<JournalHandle>,
    ) -> Worker {
        let stats = Arc::new(FetchStats::default());
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let thread = {
            let stats = Arc::clone(&stats);
            thread::Builder::new()
                .name("worker".into())
                .spawn(move || {
                    run(api, &releases, &queue, journal.as_ref(), &stats);
                    let _ = done_tx.send(());
                })
                .expect("cannot start the worker thread")
        };
        Worker { thread, stats, done }
    }

    pub fn stats(&self) -> Arc<FetchStats> {
        Arc::clone(&self.stats)
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }

    /// Like [`Worker::join`], but gives up after `timeout`; returns whether the thread ended.
    pub fn join_timeout(self, timeout: Duration) -> bool {
        match self.done.recv_timeout(timeout) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                let _ = self.thread.join();
                true
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => false,
        }
    }
}

/// How long the worker first waits before journaling a transition again, and at most.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MOST: Duration = Duration::from_millis(500);

/// Waits between attempts to journal a transition, with a doubling backoff. The wait is a
/// receive on the releases channel, so it ends at once when the pacer stops (the service is
/// stopping): then the worker gives the batch up, and it runs again after a restart.
struct Retry<'a> {
    releases: &'a Receiver<Release>,
    /// A release that arrived while waiting. The pacer releases nothing while a batch is in
    /// flight, so there is none; kept rather than lost if that ever changes.
    early: Option<Release>,
}

impl Retry<'_> {
    /// Sleeps `delay`; false once the service is stopping.
    fn pause(&mut self, delay: Duration) -> bool {
        match self.releases.recv_timeout(delay) {
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
            Ok(release) => {
                self.early = Some(release);
                true
            }
        }
    }

    /// The next release: one that came early, or the next from the pacer; `None` once the pacer
    /// has stopped.
    fn next(&mut self) -> Option<Release> {
        self.early.take().or_else(|| self.releases.recv().ok())
    }
}

/// Journals a transition (which applies it) until it is on disk, making a new record for each
/// attempt with `record(attempt)`. Without a journal it applies it here. Returns whether it was
/// saved; `false` only when the service stops first.
fn save_until_done(
    journal: Option<&JournalHandle>,
    batch: &Batch,
    retry: &mut Retry<'_>,
    what: &str,
    mut record: impl FnMut(u32) -> Record,
    apply: impl FnOnce(&Batch, &Record),
) -> bool {
    let Some(journal) = journal else {
        apply(batch, &record(0));
        return true;
    };
    let (mut delay, mut attempt) = (RETRY_FIRST, 0u32);
    while let Err(error) = journal.transition(record(attempt), batch) {
        if attempt == 0 {
            log::info_later(format_args!(
                "warning: could not journal the {what} of {batch}: {error}; holding it until the disk takes it"
            ));
        }
        if !retry.pause(delay) {
            log::info_later(format_args!("stopping with the {what} of {batch} unjournaled"));
            return false;
        }
        delay = (delay * 2).min(RETRY_MOST);
        attempt += 1;
    }
    if attempt > 0 {
        log::info_later(format_args!("journaled the {what} of {batch} after {attempt} retries"));
    }
    true
}

fn run(
    mut api: impl ExternalApi,
    releases: &Receiver<Release>,
    queue: &Queue,
    journal: Option<&JournalHandle>,
    stats: &FetchStats,
) {
    if queue.on_real_time() {
        crate::realtime::raise_and_say("worker");
    }
    let mut retry = Retry { releases, early: None };
    let mut next = retry.next();
    while let Some(release) = next {
        if !fetch_batch(&mut api, &release, queue, journal, stats, &mut retry) {
            // The service is stopping with this batch unjournaled; a restart runs it.
            return;
        }
        queue.complete(&release.batch);
        next = retry.next();
    }
}

/// Journals `triggered`, calls the API for each id, journals `completed`. In durable mode the
/// API is called only once `triggered` is on disk: a release that is not on disk did not
/// happen. Returns false if the service stopped before the batch could be journaled.
fn fetch_batch(
    api: &mut impl ExternalApi,
    release: &Release,
    queue: &Queue,
    journal: Option<&JournalHandle>,
    stats: &FetchStats,
    retry: &mut Retry<'_>,
) -> bool {
    let (ingestion_id, batch) = (release.batch.ingestion.id, release.batch.index);
    // A retry journals the moment it is made, when the batch will really start, so the
    // journaled last release is never earlier than the real one.
    let triggered = |attempt: u32| {
        let at_ms = if attempt == 0 { release.at_wall_ms } else { queue.wall_ms() };
        Record::Triggered { ingestion_id, batch, attempt: release.attempt, at_ms }
    };
    let mut late = false;
    let saved = save_until_done(
        journal,
        &release.batch,
        retry,
        "release",
        |attempt| {
            late = attempt > 0;
            triggered(attempt)
        },
        |b, record| {
            if let Record::Triggered { at_ms, .. } = record {
                b.trigger(*at_ms);
            }
        },
    );
    if !saved {
        return false;
    }
    if late {
        // It starts only now: the interval to the next release counts from here.
        queue.started_late();
    }
    for &id in release.batch.view().ids {
        match api.fetch(id) {
            Ok(answer) if answer.id == u64::from(id) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(answer) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                log::info_later(format_args!("external API answered id {} when asked for id {id}", answer.id));
            }
            Err(ApiError(why)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                log::info_later(format_args!("external API failed for id {id}: {why}"));
            }
        }
    }
    let at_ms = queue.wall_ms();
    save_until_done(
        journal,
        &release.batch,
        retry,
        "completion",
        |_| Record::Completed { ingestion_id, batch, at_ms },
        |b, _| {
            b.complete(at_ms);
        },
    )
}
