//! The fetch worker thread and the external API it calls.
//!
//! Receives released batches from the pacer over a channel, journals the release (in durable
//! mode), calls the [`ExternalApi`] once per id, checks each answer, journals the completion,
//! then reports the batch completed to the [`Queue`] (which notifies the pacer, the only thread
//! that releases). Takes the queue lock only inside `Queue::complete`; the API calls and journal
//! waits run with no lock held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Receiver;
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

/// Journals a transition, which also applies it; without a journal, or if it cannot be
/// saved (the work goes on: at worst it runs again after a restart), applies it here.
fn save(journal: Option<&JournalHandle>, record: Record, batch: &Batch, apply: impl FnOnce(&Batch)) {
    let Some(journal) = journal else { return apply(batch) };
    if let Err(error) = journal.transition(record, batch) {
        log::info_later(format_args!("warning: could not journal a transition of {batch}: {error}"));
        apply(batch);
    }
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
    let mut next = releases.recv().ok();
    while let Some(release) = next {
        fetch_batch(&mut api, &release, queue, journal, stats);
        queue.complete(&release.batch);
        next = releases.recv().ok();
    }
}

fn fetch_batch(
    api: &mut impl ExternalApi,
    release: &Release,
    queue: &Queue,
    journal: Option<&JournalHandle>,
    stats: &FetchStats,
) {
    let (ingestion_id, batch) = (release.batch.ingestion.id, release.batch.index);
    let triggered = Record::Triggered { ingestion_id, batch, attempt: release.attempt, at_ms: release.at_wall_ms };
    save(journal, triggered, &release.batch, |b| {
        b.trigger(release.at_wall_ms);
    });
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
    save(journal, Record::Completed { ingestion_id, batch, at_ms }, &release.batch, |b| {
        b.complete(at_ms);
    });
}
