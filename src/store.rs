//! Every accepted ingestion by id, in acceptance order, and the idempotency keys.
//!
//! Touched by HTTP handler threads (lookups, key claims; inserts in memory mode), `store-sweep`
//! (sweeps in memory mode), the journal thread (inserts and sweeps in durable mode), `journal-compact` (`in_order`, for a
//! snapshot) and the main thread (a restart's restore). Its locks are never held together
//! with the queue lock: work is inserted here first, then submitted to the queue. The keys' lock
//! may take the ingestions' read lock inside it, never the other way round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use uuid::Uuid;

use crate::model::Ingestion;

/// How many ingestions [`Store::in_order`] looks up per hold of the read lock.
const LOOKUPS_PER_HOLD: usize = 1024;

#[derive(Debug)]
pub(crate) struct Store {
    ingestions: RwLock<Ingestions>,
    keys: Mutex<HashMap<Box<str>, Key>>,
    /// Wakes requests waiting for a key that another request is still saving.
    key_settled: Condvar,
    /// How long a completed ingestion stays visible.
    retain_ms: u64,
    /// When [`Store::sweep_now_and_then`] last swept, in Unix milliseconds.
    last_sweep_ms: AtomicU64,
}

#[derive(Debug, Default)]
struct Ingestions {
    by_id: HashMap<Uuid, (u64, Arc<Ingestion>)>,
    next_arrival: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// A request with this key is being saved.
    Pending,
    Saved(Uuid),
}

/// What a request with an `Idempotency-Key` should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyClaim {
    /// The key is new: go ahead, then [`Store::insert`] (which settles it) or
    /// [`Store::release_key`].
    Claimed,
    /// The key was seen: answer this ingestion and enqueue nothing.
    Existing(Uuid),
}

impl Store {
    pub(crate) fn new(retain: Duration) -> Store {
        Store {
            ingestions: RwLock::default(),
            keys: Mutex::default(),
            key_settled: Condvar::new(),
            retain_ms: u64::try_from(retain.as_millis()).unwrap_or(u64::MAX),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    /// How many ingestions it holds, expired or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ingestions.read().by_id.len()
    }

    /// Adds an ingestion after every one inserted before it, then settles its key: in that
    /// order, because a request woken by the key reads a saved id it cannot find as expired.
    pub(crate) fn insert(&self, ingestion: Arc<Ingestion>) {
        let (id, key) = (ingestion.id, ingestion.idempotency_key.clone());
        {
            let mut ingestions = self.ingestions.write();
            let arrival = ingestions.next_arrival;
            ingestions.next_arrival += 1;
            ingestions.by_id.insert(id, (arrival, ingestion));
        }
        if let Some(key) = key {
            self.keys.lock().insert(key, Key::Saved(id));
            self.key_settled.notify_all();
        }
    }

    /// The ingestion with this id, unless it finished more than the retention period ago.
    pub(crate) fn get(&self, id: &Uuid, now_ms: u64) -> Option<Arc<Ingestion>> {
        let found = self.ingestions.read().by_id.get(id).map(|(_, i)| Arc::clone(i))?;
        (!self.expired(&found, now_ms)).then_some(found)
    }

    /// Claims `key` for a new ingestion, or names the one saved under it, unless that one
    /// expired (its key is free again, swept or not). Waits while another request with the
    /// same key is being saved.
    pub(crate) fn claim_key(&self, key: &str, now_ms: u64) -> KeyClaim {
        let mut keys = self.keys.lock();
        loop {
            match keys.get(key).copied() {
                Some(Key::Saved(id)) if self.get(&id, now_ms).is_some() => return KeyClaim::Existing(id),
                None | Some(Key::Saved(_)) => {
                    keys.insert(key.into(), Key::Pending);
                    return KeyClaim::Claimed;
                }
                Some(Key::Pending) => self.key_settled.wait(&mut keys),
            }
        }
    }

    /// Gives up a claimed key whose ingestion could not be saved.
    pub(crate) fn release_key(&self, key: &str) {
        self.keys.lock().remove(key);
        self.key_settled.notify_all();
    }

    /// Every live ingestion the store held when called, in acceptance order; one swept meanwhile
    /// is left out. The read lock is taken for a scan of the ids, then for a slice of lookups at
    /// a time: with millions of ids queued, touching every ingestion under one hold would keep
    /// the journal thread's inserts (and so every durable `POST`) waiting for tens of ms.
    pub(crate) fn in_order(&self, now_ms: u64) -> Vec<Arc<Ingestion>> {
        let mut ids: Vec<(u64, Uuid)> =
            self.ingestions.read().by_id.iter().map(|(id, (arrival, _))| (*arrival, *id)).collect();
        ids.sort_unstable();
        let mut all = Vec::with_capacity(ids.len());
        for slice in ids.chunks(LOOKUPS_PER_HOLD) {
            let ingestions = self.ingestions.read();
            let found = slice.iter().filter_map(|(_, id)| ingestions.by_id.get(id));
            all.extend(found.filter(|(_, i)| !self.expired(i, now_ms)).map(|(_, i)| Arc::clone(i)));
        }
        all
    }

    /// [`Store::sweep`], if the last was long enough ago: the retention period, from 1 s to a
    /// minute. A sweep scans every ingestion under the read lock, which holds the journal's
    /// inserts; at once a second it cost a durable POST up to 8 ms each second with 100,000
    /// kept. Returns how many were forgotten.
    pub(crate) fn sweep_now_and_then(&self, now_ms: u64) -> usize {
        let period = self.retain_ms.clamp(1_000, 60_000);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        let due = now_ms.saturating_sub(last) >= period;
        if due && self.last_sweep_ms.compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.sweep(now_ms)
        } else {
            0
        }
    }

    /// Forgets ingestions (and their keys) that finished more than the retention period ago.
    pub(crate) fn sweep(&self, now_ms: u64) -> usize {
        // Found under the read lock, so status reads go on during the scan; the write lock is
        // taken only to remove what expired, usually nothing.
        let ids: Vec<Uuid> = {
            let ingestions = self.ingestions.read();
            ingestions.by_id.values().filter(|(_, i)| self.expired(i, now_ms)).map(|(_, i)| i.id).collect()
        };
        if ids.is_empty() {
            return 0;
        }
        let expired: Vec<Arc<Ingestion>> = {
            let mut ingestions = self.ingestions.write();
            ids.iter().filter_map(|id| ingestions.by_id.remove(id)).map(|(_, i)| i).collect()
        };
        let mut keys = self.keys.lock();
        for ingestion in &expired {
            // Its key may name a newer ingestion by now.
            if let Some(key) = &ingestion.idempotency_key {
                if keys.get(key) == Some(&Key::Saved(ingestion.id)) {
                    keys.remove(key);
                }
            }
        }
        expired.len()
    }

    fn expired(&self, ingestion: &Ingestion, now_ms: u64) -> bool {
        ingestion.completed_at_ms().is_some_and(|done| now_ms.saturating_sub(done) > self.retain_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;

    #[test]
    fn completed_ingestions_expire_after_the_retention_period() {
        let store = Store::new(Duration::from_secs(10));
        let done = Arc::new(Ingestion::new(Priority::Low, vec![1], 3, 0, Some("k")));
        let waiting = Arc::new(Ingestion::new(Priority::Low, vec![2], 3, 0, None));
        store.insert(Arc::clone(&done));
        store.insert(Arc::clone(&waiting));
        done.trigger(0, 500);
        done.complete(0, 1_000);
        assert!(store.get(&done.id, 11_000).is_some());
        assert!(store.get(&done.id, 11_001).is_none());
        assert_eq!(store.claim_key("k", 11_000), KeyClaim::Existing(done.id));
        assert_eq!(store.sweep(11_001), 1);
        assert_eq!(store.in_order(0).len(), 1);
        assert!(store.get(&waiting.id, u64::MAX).is_some(), "unfinished work never expires");
        assert_eq!(store.claim_key("k", 11_001), KeyClaim::Claimed, "an expired key is free again");
    }

    /// A sweep scans everything: it runs at most once per retention period, from 1 s to a minute.
    #[test]
    fn sweeps_come_at_most_once_a_period() {
        let finished = |store: &Store, at_ms: u64| {
            let ingestion = Arc::new(Ingestion::new(Priority::Low, vec![1], 3, 0, None));
            store.insert(Arc::clone(&ingestion));
            ingestion.trigger(0, at_ms);
            ingestion.complete(0, at_ms);
        };
        let store = Store::new(Duration::from_secs(10));
        finished(&store, 1_000);
        assert_eq!(store.sweep_now_and_then(20_000), 1);
        finished(&store, 2_000);
        assert_eq!(store.sweep_now_and_then(29_999), 0, "within the period");
        assert_eq!(store.sweep_now_and_then(30_000), 1);
        let week = Store::new(Duration::from_secs(7 * 86_400));
        assert_eq!(week.sweep_now_and_then(1_000_000), 0);
        finished(&week, 0);
        assert_eq!(week.sweep_now_and_then(1_059_999), 0, "a minute at most");
        assert_eq!(week.sweep_now_and_then(u64::MAX), 1);
    }

    /// Before the sweep: an ingestion that answers 404 must not answer for its key either.
    #[test]
    fn an_expired_key_is_free_before_the_sweep_and_the_sweep_spares_its_new_owner() {
        let store = Store::new(Duration::from_secs(10));
        let old = Arc::new(Ingestion::new(Priority::Low, vec![1], 3, 0, Some("k")));
        store.insert(Arc::clone(&old));
        old.trigger(0, 500);
        old.complete(0, 1_000);
        assert_eq!(store.claim_key("k", 11_001), KeyClaim::Claimed);
        let new = Arc::new(Ingestion::new(Priority::Low, vec![2], 3, 0, Some("k")));
        store.insert(Arc::clone(&new));
        assert_eq!(store.sweep(11_001), 1);
        assert_eq!(store.claim_key("k", 11_001), KeyClaim::Existing(new.id));
    }

    #[test]
    fn order_is_acceptance_order() {
        let store = Store::new(Duration::from_secs(1));
        let all: Vec<Arc<Ingestion>> = (1..=2 * LOOKUPS_PER_HOLD as u32 + 5)
            .map(|i| Arc::new(Ingestion::new(Priority::High, vec![i], 3, 0, None)))
            .collect();
        all.iter().for_each(|i| store.insert(Arc::clone(i)));
        let ids: Vec<Uuid> = store.in_order(0).iter().map(|i| i.id).collect();
        assert_eq!(ids, all.iter().map(|i| i.id).collect::<Vec<_>>());
    }

    #[test]
    fn a_pending_key_makes_the_second_request_wait_for_the_first() {
        let store = Arc::new(Store::new(Duration::from_secs(1)));
        assert_eq!(store.claim_key("k", 0), KeyClaim::Claimed);
        let second = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.claim_key("k", 0))
        };
        let first = Arc::new(Ingestion::new(Priority::High, vec![1], 3, 0, Some("k")));
        store.insert(Arc::clone(&first));
        assert_eq!(second.join().unwrap(), KeyClaim::Existing(first.id));
        store.release_key("gone");
        assert_eq!(store.claim_key("other", 0), KeyClaim::Claimed);
        store.release_key("other");
        assert_eq!(store.claim_key("other", 0), KeyClaim::Claimed);
    }

    /// A request woken by a settled key must find its ingestion, not take the key for a new one.
    #[test]
    fn requests_racing_with_one_key_all_get_the_one_ingestion() {
        const REQUESTS: usize = 8;
        for round in 0..400 {
            let store = Arc::new(Store::new(Duration::from_secs(1)));
            let start = Arc::new(std::sync::Barrier::new(REQUESTS));
            let requests: Vec<_> = (0..REQUESTS)
                .map(|_| {
                    let (store, start) = (Arc::clone(&store), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        match store.claim_key("k", 0) {
                            KeyClaim::Existing(id) => id,
                            KeyClaim::Claimed => {
                                let ingestion = Arc::new(Ingestion::new(Priority::High, vec![1], 3, 0, Some("k")));
                                let id = ingestion.id;
                                store.insert(ingestion);
                                id
                            }
                        }
                    })
                })
                .collect();
            let mut ids: Vec<Uuid> = requests.into_iter().map(|r| r.join().unwrap()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 1, "round {round}: one key saved {} ingestions", ids.len());
        }
    }
}
