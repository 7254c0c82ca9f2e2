//! The fetch worker thread and the external API it calls.
//!
//! Receives released batches from the pacer over a channel, journals the release (in durable
//! mode), delivers each id still pending through the [`ExternalApi`] and acts on what came of
//! it (delivered: never sent again; retry: kept for the next release; permanent: failed for good;
//! stop: the rest of this release waits), journals how the release ended, then reports it to the
//! [`Queue`]: completed, failed, or to retry after a backoff, with the instant of the first
//! answer (the pacer's anchor for the next slot) and any pause the upstream asked for. The queue
//! notifies the pacer, the only thread that releases. Takes the queue lock only inside
//! `Queue::finish`; the API calls and journal waits run with no lock held.
//!
//! In durable mode a release that is not on disk did not happen: while the journal cannot
//! write, the worker holds the batch, calls nothing and retries with a backoff; since the batch
//! counts as in flight, the pacer releases nothing else meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Deserialize;

use crate::config::Retry as RetryPolicy;
use crate::journal::{JournalHandle, Record};
use crate::log;
use crate::model::{Batch, Delivery as Progress, Id};
use crate::pacer::{Ended, Finished, Queue, Release};
use crate::upstream::{Call, Delivery, Outcome};

/// What the external API answers for one id: `{"id": <id>, "data": "processed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiResponse {
    pub id: u64,
    pub data: String,
}

/// Why a call to the external API did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

/// The rate-limited external API: one call per id.
pub trait ExternalApi: Send + 'static {
    fn fetch(&mut self, id: Id) -> Result<ApiResponse, FetchError>;

    /// Delivers one id and says what came of it, which the worker acts on. The default maps
    /// [`ExternalApi::fetch`]: an answer for this id is a delivery (counted as a `2xx` call),
    /// anything else a retry of this id (an error answers `error`, a wrong id `2xx`).
    fn deliver(&mut self, id: Id) -> Delivery {
        let started = Instant::now();
        let result = self.fetch(id);
        let took = started.elapsed();
        let (outcome, call) = match result {
            Ok(answer) if answer.id == u64::from(id) => (Outcome::Delivered, Call::Answered(200)),
            Ok(answer) => (
                Outcome::Retry { reason: format!("the API answered for id {} instead", answer.id) },
                Call::Answered(200),
            ),
            Err(FetchError(reason)) => (Outcome::Retry { reason }, Call::Failed),
        };
        Delivery { outcome, call, took }
    }

    /// Whether a request may reach the API any time before its answer comes back, as over a
    /// network. Then the next release waits an interval after the first answer of the last one
    /// (not just after its release), so the API never sees two batches closer than the interval
    /// whatever the wire's delays. The simulated API has no wire: `false`.
    fn has_wire(&self) -> bool {
        false
    }
}

/// The built-in stand-in for the external API: waits `delay`, then answers as the real one would.
#[derive(Debug, Clone)]
pub struct SimulatedApi {
    pub delay: Duration,
}

impl ExternalApi for SimulatedApi {
    fn fetch(&mut self, id: Id) -> Result<ApiResponse, FetchError> {
        thread::sleep(self.delay);
        Ok(ApiResponse { id: u64::from(id), data: "processed".to_owned() })
    }
}

/// Counts of ids done with, for the queued-ids limit: accepted minus these is what waits.
#[derive(Debug, Default)]
pub(crate) struct FetchStats {
    /// Ids delivered.
    pub ok: AtomicU64,
    /// Ids failed for good.
    pub failed: AtomicU64,
}

/// Owns the worker thread; [`Worker::join_timeout`] waits for it to finish the batch in flight and exit
/// (it exits when the pacer, the channel's only sender, has stopped).
pub(crate) struct Worker {
    thread: JoinHandle<()>,
    stats: Arc<FetchStats>,
    done: Receiver<()>,
}

impl Worker {
    /// Starts the worker. With a `journal`, each batch is journaled `triggered` before the
    /// first call and `completed` after the last. `policy` says how long a batch with ids to
    /// retry waits, and after how many releases they fail.
    pub(crate) fn start(
        api: impl ExternalApi,
        releases: Receiver<Release>,
        queue: Queue,
        journal: Option<JournalHandle>,
        policy: RetryPolicy,
    ) -> Worker {
        let stats = Arc::new(FetchStats::default());
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let thread = {
            let stats = Arc::clone(&stats);
            thread::Builder::new()
                .name("worker".into())
                .spawn(move || {
                    run(api, &releases, &queue, journal.as_ref(), &stats, policy);
                    let _ = done_tx.send(());
                })
                .expect("cannot start the worker thread")
        };
        Worker { thread, stats, done }
    }

    pub(crate) fn stats(&self) -> Arc<FetchStats> {
        Arc::clone(&self.stats)
    }

    /// Joins the thread, but gives up after `timeout`; returns whether the thread ended.
    pub(crate) fn join_timeout(self, timeout: Duration) -> bool {
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
            log::warn(format_args!(
                "could not journal the {what} of {batch}: {error}; holding it until the disk takes it"
            ));
        }
        if !retry.pause(delay) {
            log::info(format_args!("stopping with the {what} of {batch} unjournaled"));
            return false;
        }
        delay = (delay * 2).min(RETRY_MOST);
        attempt += 1;
    }
    if attempt > 0 {
        log::info(format_args!("journaled the {what} of {batch} after {attempt} retries"));
    }
    true
}

fn run(
    mut api: impl ExternalApi,
    releases: &Receiver<Release>,
    queue: &Queue,
    journal: Option<&JournalHandle>,
    stats: &FetchStats,
    policy: RetryPolicy,
) {
    if queue.on_real_time() {
        crate::realtime::raise_and_say("worker");
    }
    let mut retry = Retry { releases, early: None };
    let mut next = retry.next();
    while let Some(release) = next {
        let Some(finished) = fetch_batch(&mut api, &release, queue, journal, stats, &mut retry, policy) else {
            // The service is stopping with this batch unjournaled; a restart runs it.
            return;
        };
        queue.finish(&release.batch, finished);
        next = retry.next();
    }
}

/// What one release came to, id by id.
#[derive(Debug, Default)]
struct Attempt {
    /// When the first call ended, on the queue's clock (for an API with a wire).
    first_answer: Option<Instant>,
    /// How long the upstream asked us to wait (`Retry-After`), from its answer.
    pause: Option<Duration>,
}

/// Delivers each id of the batch still pending, in order, and records what came of each on the
/// batch: delivered and failed ids, the last error. Stops early on an [`Outcome::Stop`].
fn deliver_pending(api: &mut impl ExternalApi, batch: &Batch, queue: &Queue, stats: &FetchStats) -> Attempt {
    let pending: Vec<(usize, Id)> = batch
        .deliveries()
        .enumerate()
        .filter(|(_, (_, d))| *d == Progress::Pending)
        .map(|(at, (id, _))| (at, id))
        .collect();
    let mut progress = Attempt::default();
    for (n, (at, id)) in pending.into_iter().enumerate() {
        let Delivery { outcome, call, took } = api.deliver(id);
        if n == 0 && api.has_wire() {
            progress.first_answer = Some(queue.now());
        }
        queue.metrics().call(call, took);
        match outcome {
            Outcome::Delivered => {
                batch.set_delivery(at, Progress::Delivered);
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Retry { reason } => {
                note_failure(batch, id, &reason, "it waits for a retry; going on with the release");
            }
            Outcome::Permanent { reason } => {
                batch.set_delivery(at, Progress::Failed);
                stats.failed.fetch_add(1, Ordering::Relaxed);
                note_failure(batch, id, &reason, "it failed for good; going on with the release");
            }
            Outcome::Stop { reason, retry_after } => {
                let received = UNIX_EPOCH + Duration::from_millis(queue.wall_ms());
                progress.pause =
                    retry_after.and_then(|r| r.until(received).duration_since(received).ok()).filter(|d| !d.is_zero());
                note_failure(batch, id, &reason, "stopping this release");
                break;
            }
        }
    }
    progress
}

fn note_failure(batch: &Batch, id: Id, reason: &str, then: &str) {
    let error = format!("id {id}: {reason}");
    log::info(format_args!("external API failed for {error}; {then} ({batch})"));
    batch.set_last_error(Some(Arc::from(error)));
}

/// How the release ends, from what is left of the batch: completed or failed once nothing is
/// pending; failed when ids are still pending after the last attempt (they fail for good);
/// otherwise a retry after the policy's backoff for this attempt.
fn ending(batch: &Batch, policy: RetryPolicy, stats: &FetchStats) -> Ended {
    let pending: Vec<usize> =
        batch.deliveries().enumerate().filter(|(_, (_, d))| *d == Progress::Pending).map(|(at, _)| at).collect();
    let attempts = batch.view().attempts;
    if !pending.is_empty() && attempts < policy.max_attempts {
        return Ended::Retry { backoff: policy.backoff(attempts.into()) };
    }
    for &at in &pending {
        batch.set_delivery(at, Progress::Failed);
    }
    stats.failed.fetch_add(pending.len() as u64, Ordering::Relaxed);
    if batch.deliveries().any(|(_, d)| d == Progress::Failed) {
        Ended::Failed
    } else {
        Ended::Completed
    }
}

/// Journals `triggered`, delivers the pending ids, journals the completion. In durable mode the
/// API is called only once `triggered` is on disk: a release that is not on disk did not
/// happen. Returns how the release ended, or `None` if the service stopped before the batch
/// could be journaled.
fn fetch_batch(
    api: &mut impl ExternalApi,
    release: &Release,
    queue: &Queue,
    journal: Option<&JournalHandle>,
    stats: &FetchStats,
    retry: &mut Retry<'_>,
    policy: RetryPolicy,
) -> Option<Finished> {
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
        return None;
    }
    // It starts only now: the interval to the next release counts from here.
    let started_late = late.then(|| queue.now());
    let progress = deliver_pending(api, &release.batch, queue, stats);
    let ended = ending(&release.batch, policy, stats);
    let at_ms = queue.wall_ms();
    let saved = save_ending(journal, &release.batch, retry, ended, progress.pause, at_ms);
    saved.then_some(Finished { ended, first_answer: progress.first_answer, pause: progress.pause, started_late, at_ms })
}

/// Journals how the release ended at `at_ms` (`completed`, or `progress` with what is left to
/// retry, and the upstream's pause), and applies it to the batch; `false` if the service
/// stopped first.
fn save_ending(
    journal: Option<&JournalHandle>,
    batch: &Batch,
    retry: &mut Retry<'_>,
    ended: Ended,
    pause: Option<Duration>,
    at_ms: u64,
) -> bool {
    let (ingestion_id, index) = (batch.ingestion.id, batch.index);
    if ended == Ended::Completed {
        let record = |_| Record::Completed { ingestion_id, batch: index, at_ms };
        return save_until_done(journal, batch, retry, "completion", record, |b, _| {
            b.complete(at_ms);
        });
    }
    let (delivered, failed) = batch.ingestion.progress(index as usize);
    let after = |d: Duration| at_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let retry_at_ms = match ended {
        Ended::Retry { backoff } => after(backoff).max(1),
        _ => 0,
    };
    let record = Record::Progress {
        ingestion_id,
        batch: index,
        at_ms,
        delivered,
        failed,
        last_error: batch.ingestion.last_error(index as usize).map(|e| e.to_string()),
        retry_at_ms,
        paused_until_ms: pause.map_or(0, after),
    };
    save_until_done(journal, batch, retry, "progress", |_| record.clone(), |b, _| b.record_progress(at_ms, retry_at_ms))
}
