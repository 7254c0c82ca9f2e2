//! The fetch worker thread and the external API it calls.
//!
//! Receives released batches from the pacer over a channel, calls the [`ExternalApi`] once per
//! id, checks each answer, then reports the batch completed to the [`Queue`]. Takes the queue
//! lock only inside `Queue::complete`; the API calls run with no lock held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Receiver;
use serde::Deserialize;

use crate::log;
use crate::model::Id;
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
}

impl Worker {
    pub fn start(api: impl ExternalApi, releases: Receiver<Release>, queue: Queue) -> Worker {
        let stats = Arc::new(FetchStats::default());
        let thread = {
            let stats = Arc::clone(&stats);
            thread::Builder::new()
                .name("worker".into())
                .spawn(move || run(api, &releases, &queue, &stats))
                .expect("cannot start the worker thread")
        };
        Worker { thread, stats }
    }

    pub fn stats(&self) -> &FetchStats {
        &self.stats
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn run(mut api: impl ExternalApi, releases: &Receiver<Release>, queue: &Queue, stats: &FetchStats) {
    for release in releases {
        for &id in release.batch.view().ids {
            match api.fetch(id) {
                Ok(answer) if answer.id == u64::from(id) => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(answer) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    log::info(format_args!("external API answered id {} when asked for id {id}", answer.id));
                }
                Err(ApiError(why)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    log::info(format_args!("external API failed for id {id}: {why}"));
                }
            }
        }
        let depth = queue.complete(&release.batch);
        log::info(format_args!("completed {}; {depth}", release.batch));
    }
}
