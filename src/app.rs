//! The service without HTTP: the store, the pacer and the worker, wired together.
//!
//! `App` is what the HTTP layer calls and what thread tests drive. It owns the pacer and worker
//! threads and stops them in order: the pacer first, then the worker after its batch in flight.

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
}

impl App {
    pub fn start(pacing: Pacing, clock: Arc<dyn Clock>, api: impl ExternalApi) -> App {
        assert!(pacing.batch_size >= 1, "batch size must be at least 1");
        let (tx, rx) = crossbeam_channel::unbounded();
        let pacer = Pacer::start(pacing.interval, clock, tx);
        let worker = Worker::start(api, rx, pacer.queue().clone());
        App { store: Store::default(), pacer, worker, batch_size: pacing.batch_size }
    }

    /// Accepts `ids` (non-empty, already validated) and queues their batches.
    pub fn ingest(&self, priority: Priority, ids: Vec<Id>) -> Uuid {
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
