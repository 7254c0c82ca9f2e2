//! Compaction, retention and restarts against an in-memory model: random operations on the
//! real core (journal, pacer and worker threads) on a manual clock, restarting at random points.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ingestd::journal::Compaction;
use ingestd::{
    ApiResponse, App, BatchStatus, Clock, ExternalApi, FetchError, Id, ManualClock, Pacing, Parked, Priority, Storage,
};
use proptest::prelude::*;
use uuid::Uuid;

/// An external API that answers at once, and records every id it is called with, across
/// restarts: the model's oracle for what ran, independent of what the service reports.
#[derive(Clone, Default)]
struct Immediate {
    calls: Arc<Mutex<Vec<Id>>>,
}

impl ExternalApi for Immediate {
    fn fetch(&mut self, id: Id) -> Result<ApiResponse, FetchError> {
        self.calls.lock().unwrap().push(id);
        Ok(ApiResponse { id: u64::from(id), data: "processed".into() })
    }
}

const PATIENCE: Duration = Duration::from_secs(10);
const RETAIN: Duration = Duration::from_secs(30);

struct Service {
    app: App,
    clock: Arc<ManualClock>,
    api: Immediate,
}

impl Service {
    fn open(dir: &Path, wall: SystemTime, min_records: u64) -> Service {
        Service::open_retaining(dir, wall, min_records, RETAIN)
    }

    fn open_retaining(dir: &Path, wall: SystemTime, min_records: u64, retain: Duration) -> Service {
        Service::open_with(dir, wall, min_records, retain, Immediate::default())
    }

    fn open_with(dir: &Path, wall: SystemTime, min_records: u64, retain: Duration, api: Immediate) -> Service {
        let clock = Arc::new(ManualClock::starting_at(wall));
        let storage = Storage {
            data_dir: Some(dir.to_owned()),
            retain,
            compaction: Compaction { min_records, dead_percent: 100 },
            ..Storage::default()
        };
        let pacing = Pacing { interval: Duration::from_secs(5), batch_size: 3 };
        let app = App::open(pacing, clock.clone(), api.clone(), storage).expect("the journal opens");
        Service { app, clock, api }
    }

    fn settle(&self) {
        self.app.queue().wait_parked(PATIENCE, |p| p != Parked::Busy).expect("the pacer to settle");
    }

    fn advance(&self, by: Duration) {
        self.app.queue().advance(&self.clock, by);
        self.settle();
    }

    fn restart(self, dir: &Path, min_records: u64) -> Service {
        self.restart_retaining(dir, min_records, RETAIN)
    }

    fn restart_retaining(self, dir: &Path, min_records: u64, retain: Duration) -> Service {
        let (wall, api) = (self.clock.wall(), self.api.clone());
        assert!(self.app.shutdown(PATIENCE));
        drop(self);
        Service::open_with(dir, wall, min_records, retain, api)
    }
}

/// What the model knows of an ingestion.
#[derive(Debug, Clone)]
struct Known {
    priority: Priority,
    ids: Vec<Id>,
    batch_ids: Vec<Uuid>,
    statuses: Vec<BatchStatus>,
    completed_at_ms: Option<u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Ingest(u8, u8),
    Advance(u16),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 1u8..8).prop_map(|(p, n)| Op::Ingest(p, n)),
        3 => (1u16..20).prop_map(Op::Advance),
        1 => Just(Op::Restart),
    ]
}

/// Every known ingestion is there exactly as it was (or gone, if it expired), and no status
/// went backwards. Against the calls the API saw: no id was called twice (restarts here are
/// clean, so nothing runs again and no batch has more than one attempt), a batch is completed
/// if and only if all its ids were called, and waits if and only if none was (the pacer is
/// settled: nothing is in flight).
fn check(service: &Service, model: &mut HashMap<Uuid, Known>) -> Result<(), TestCaseError> {
    let now_ms =
        u64::try_from(service.clock.wall().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let calls = service.api.calls.lock().unwrap().clone();
    let mut counted: HashMap<Id, usize> = HashMap::new();
    for id in &calls {
        *counted.entry(*id).or_default() += 1;
    }
    prop_assert!(counted.values().all(|&n| n == 1), "an id was called twice: {:?}", calls);
    for (id, known) in model.iter_mut() {
        let expired = known.completed_at_ms.is_some_and(|t| now_ms - t > RETAIN.as_millis() as u64);
        let Some(found) = service.app.ingestion(id) else {
            prop_assert!(expired, "ingestion {} is missing", id);
            continue;
        };
        prop_assert!(!expired, "ingestion {} outlived its retention", id);
        prop_assert_eq!(found.priority, known.priority);
        prop_assert_eq!(found.ids(), &known.ids[..]);
        let batch_ids: Vec<Uuid> = found.batches().map(|b| b.batch_id).collect();
        prop_assert_eq!(&batch_ids, &known.batch_ids);
        for batch in found.batches() {
            let called = batch.ids.iter().filter(|id| counted.contains_key(id)).count();
            prop_assert!(batch.attempts <= 1, "{} ran {} times", batch.batch_id, batch.attempts);
            match batch.status {
                BatchStatus::Completed => {
                    prop_assert_eq!(called, batch.ids.len(), "{} completed uncalled", batch.batch_id)
                }
                BatchStatus::YetToStart => prop_assert_eq!(called, 0, "{} waits, yet was called", batch.batch_id),
                other => prop_assert!(false, "{} is {:?} with nothing in flight", batch.batch_id, other),
            }
        }
        let statuses: Vec<BatchStatus> = found.batches().map(|b| b.status).collect();
        for (before, now) in known.statuses.iter().zip(&statuses) {
            prop_assert!(before != &BatchStatus::Completed || now == &BatchStatus::Completed, "{} went back", id);
        }
        known.statuses = statuses;
        known.completed_at_ms = found.completed_at_ms();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn compaction_retention_and_restarts_keep_every_live_ingestion(ops in proptest::collection::vec(op(), 1..40)) {
        let temp = common::TempDir::new("model");
        let dir = temp.0.clone();
        let mut service = Service::open(&dir, SystemTime::now(), 6);
        let mut model: HashMap<Uuid, Known> = HashMap::new();
        let mut next_id = 1;
        for op in ops {
            match op {
                Op::Ingest(p, n) => {
                    let priority = Priority::ALL[usize::from(p)];
                    let ids: Vec<Id> = (next_id..next_id + u32::from(n)).collect();
                    next_id += u32::from(n);
                    let id = service.app.ingest(priority, ids.clone(), None).expect("accepted");
                    service.settle();
                    let found = service.app.ingestion(&id).unwrap();
                    let batch_ids = found.batches().map(|b| b.batch_id).collect();
                    let statuses = found.batches().map(|b| b.status).collect();
                    model.insert(id, Known { priority, ids, batch_ids, statuses, completed_at_ms: None });
                }
                Op::Advance(secs) => service.advance(Duration::from_secs(u64::from(secs))),
                Op::Restart => service = service.restart(&dir, 6),
            }
            check(&service, &mut model)?;
        }
        service = service.restart(&dir, 6);
        check(&service, &mut model)?;
        // Everything still waiting runs, one batch per interval.
        let waiting: usize = model.values().map(|k| k.statuses.iter().filter(|s| **s != BatchStatus::Completed).count()).sum();
        for _ in 0..waiting {
            service.advance(Duration::from_secs(5));
            check(&service, &mut model)?;
        }
        for (id, known) in &model {
            // Gone only if expired, which `check` has made sure of.
            if service.app.ingestion(id).is_some() {
                let done = known.statuses.iter().all(|s| *s == BatchStatus::Completed);
                prop_assert!(done, "{} never completed: {:?}", id, known);
            }
        }
        drop(service);
    }
}

#[test]
fn compaction_shrinks_the_journal_to_the_live_ingestions() {
    let temp = common::TempDir::new("model");
    let dir = temp.0.clone();
    let retain = Duration::from_secs(3600);
    let service = Service::open_retaining(&dir, SystemTime::now(), 20, retain);
    let ids: Vec<Uuid> = (1..=12).map(|i| service.app.ingest(Priority::Low, vec![i, i, i, i], None).unwrap()).collect();
    for _ in 0..30 {
        service.advance(Duration::from_secs(5));
    }
    assert!(ids.iter().all(|id| service.app.ingestion(id).unwrap().status() == BatchStatus::Completed));
    // 12 ingest records + 2 transitions for each of 24 batches: compacted at least once since.
    let records = ingestd::journal::replay(&std::fs::read(dir.join("journal.v2")).unwrap()).unwrap().records;
    assert!(records < 12 + 2 * 24, "{records} records: not compacted");
    let service = service.restart_retaining(&dir, 20, retain);
    for id in &ids {
        let found = service.app.ingestion(id).unwrap();
        assert_eq!(found.status(), BatchStatus::Completed);
        assert!(found.batches().all(|b| b.attempts == 1));
    }
    // Past the retention period, completed work is gone, in memory and after a restart.
    service.advance(retain + Duration::from_secs(1));
    assert!(ids.iter().all(|id| service.app.ingestion(id).is_none()));
    let service = service.restart_retaining(&dir, 20, retain);
    assert!(ids.iter().all(|id| service.app.ingestion(id).is_none()));
    drop(service);
}
