//! The service without HTTP: the store, the pacer and the worker, wired together.
//!
//! `App` is what the HTTP layer calls and what thread tests drive. It owns the pacer and worker
//! threads and stops them in order: the pacer first, then the worker after its batch in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::clock::Clock;
use crate::model::{Id, Ingestion, Priority};
use crate::pacer::{Pacer, Queue};
use crate::store::Store;
use crate::worker::{ExternalApi, FetchStats, Worker};

/// How the core paces and cuts work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// The least time between two releases.
    pub interval: Duration,
    /// Ids per batch.
    pub batch_size: usize,
}

pub struct App {
    store: Store,
    pacer: Pacer,
    worker: Worker,
    batch_size: usize,
    /// Ids ever accepted; minus the ids the worker has fetched, the ids still queued.
    accepted_ids: AtomicU64,
}

/// The queue holds too many ids for a request to be accepted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// When, at the pacing rate, enough ids will have drained for the request to fit.
    pub retry_after: Duration,
}

impl App {
    pub fn start(pacing: Pacing, clock: Arc<dyn Clock>, api: impl ExternalApi) -> App {
        assert!(pacing.batch_size >= 1, "batch size must be at least 1");
        let (tx, rx) = crossbeam_channel::unbounded();
        let pacer = Pacer::start(pacing.interval, clock, tx);
        let worker = Worker::start(api, rx, pacer.queue().clone());
        App { store: Store::default(), pacer, worker, batch_size: pacing.batch_size, accepted_ids: AtomicU64::new(0) }
    }

    /// Accepts `ids` (non-empty, already validated) and queues their batches.
    pub fn ingest(&self, priority: Priority, ids: Vec<Id>) -> Uuid {
        self.accepted_ids.fetch_add(ids.len() as u64, Ordering::Relaxed);
        self.enqueue(priority, ids)
    }

    /// Like [`App::ingest`], unless that would leave more than `max_queued` ids waiting.
    pub fn try_ingest(&self, priority: Priority, ids: Vec<Id>, max_queued: u64) -> Result<Uuid, QueueFull> {
        let wanted = ids.len() as u64;
        // Reserve first, so that simultaneous requests cannot overshoot together.
        let reserved = self.accepted_ids.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |accepted| {
            let queued = accepted.saturating_sub(self.fetched_ids());
            (queued + wanted <= max_queued).then_some(accepted + wanted)
        });
        match reserved {
            Ok(_) => Ok(self.enqueue(priority, ids)),
            Err(accepted) => {
                let excess = (accepted.saturating_sub(self.fetched_ids()) + wanted).saturating_sub(max_queued);
                Err(QueueFull { retry_after: self.drain_time(excess) })
            }
        }
    }

    /// Ids accepted and not yet fetched from the external API.
    pub fn queued_ids(&self) -> u64 {
        self.accepted_ids.load(Ordering::Relaxed).saturating_sub(self.fetched_ids())
    }

    fn fetched_ids(&self) -> u64 {
        let stats = self.worker.stats();
        stats.ok.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed)
    }

    /// How long the pacer takes to let `ids` go: one batch per interval at best.
    fn drain_time(&self, ids: u64) -> Duration {
        let batches = ids.div_ceil(self.batch_size as u64);
        self.pacer.queue().interval().saturating_mul(u32::try_from(batches).unwrap_or(u32::MAX))
    }

    fn enqueue(&self, priority: Priority, ids: Vec<Id>) -> Uuid {
        let ingestion = Arc::new(Ingestion::new(priority, ids, self.batch_size));
        let id = ingestion.id;
        self.store.insert(Arc::clone(&ingestion));
        self.pacer.queue().submit(ingestion);
        id
    }

    pub fn ingestion(&self, id: &Uuid) -> Option<Arc<Ingestion>> {
        self.store.get(id)
    }

    pub fn queue(&self) -> &Queue {
        self.pacer.queue()
    }

    pub fn fetch_stats(&self) -> &FetchStats {
        self.worker.stats()
    }

    /// Releases nothing more, waits for the batch in flight to complete, joins both threads.
    pub fn shutdown(self) {
        self.pacer.stop();
        self.worker.join();
    }
}
