//! Every accepted ingestion, by id. Touched by HTTP handler threads only.
//!
//! Its own lock, never held together with the queue lock: a POST inserts here first, then
//! submits to the queue, so a status lookup never waits for the pacer.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use uuid::Uuid;

use crate::model::Ingestion;

#[derive(Debug, Default)]
pub struct Store {
    ingestions: RwLock<HashMap<Uuid, Arc<Ingestion>>>,
}

impl Store {
    pub fn insert(&self, ingestion: Arc<Ingestion>) {
        self.ingestions.write().insert(ingestion.id, ingestion);
    }

    pub fn get(&self, id: &Uuid) -> Option<Arc<Ingestion>> {
        self.ingestions.read().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.ingestions.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
