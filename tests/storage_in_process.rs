//! A durable `App` on the manual clock whose journal cannot write for a while: the worker holds
//! the released batch and calls nothing, the pacer releases nothing else, and once the disk takes
//! the record the batch starts with the interval counted from then, also across a restart.
//!
//! Alone in its test binary, as one test: it lowers this process's own file-size limit
//! (`RLIMIT_FSIZE`, the way a full disk looks to the journal), which every thread shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ingestd::clock::unix_ms;
use ingestd::journal::{self, Record};
use ingestd::Storage;
use ingestd::{ApiResponse, App, BatchStatus, Clock, ExternalApi, FetchError, Id, IngestError, ManualClock, Pacing};
use ingestd::{Parked, Priority};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// An external API that reports each call with the manual clock's time.
struct Recorder {
    clock: Arc<ManualClock>,
    calls: Sender<(Id, Instant)>,
}

impl ExternalApi for Recorder {
    fn fetch(&mut self, id: Id) -> Result<ApiResponse, FetchError> {
        self.calls.send((id, self.clock.now())).unwrap();
        Ok(ApiResponse { id: u64::from(id), data: "processed".into() })
    }
}

const SEC: Duration = Duration::from_secs(1);
/// How long to wait for a thread to reach a state before failing; never reached when passing.
const PATIENCE: Duration = Duration::from_secs(10);

struct Rig {
    app: App,
    clock: Arc<ManualClock>,
    calls: Receiver<(Id, Instant)>,
}

impl Rig {
    fn open(dir: &std::path::Path, clock: ManualClock) -> Rig {
        let clock = Arc::new(clock);
        let (calls_tx, calls) = crossbeam_channel::unbounded();
        let api = Recorder { clock: Arc::clone(&clock), calls: calls_tx };
        let storage = Storage { data_dir: Some(dir.to_owned()), ..Storage::default() };
        let app = App::open(Pacing { interval: 5 * SEC, batch_size: 1 }, clock.clone(), api, storage).unwrap();
        Rig { app, clock, calls }
    }

    fn at(&self, secs: u64) -> Instant {
        self.clock.origin() + Duration::from_secs(secs)
    }

    fn advance_to(&self, secs: u64) {
        let by = self.at(secs).saturating_duration_since(self.clock.now());
        self.app.queue().advance(&self.clock, by);
    }

    #[track_caller]
    fn parked(&self, accept: impl Fn(Parked) -> bool) -> Parked {
        self.app.queue().wait_parked(PATIENCE, accept).expect("the pacer to park as expected")
    }

    #[track_caller]
    fn expect_call(&self, id: Id, secs: u64) {
        assert_eq!(self.calls.recv_timeout(PATIENCE).ok(), Some((id, self.at(secs))));
    }

    #[track_caller]
    fn expect_no_calls(&self) {
        assert_eq!(self.calls.try_recv().ok(), None, "the external API was called");
    }

    /// Waits until the journal has failed `count` writes in the current outage.
    #[track_caller]
    fn wait_failures(&self, count: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.app.storage_outage().map_or(0, |o| o.failures) < count {
            assert!(Instant::now() < deadline, "the journal never failed {count} writes");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn batch(&self, id: uuid::Uuid, index: usize) -> (BatchStatus, u8, Option<u64>) {
        let ingestion = self.app.ingestion(&id).unwrap();
        let batch = ingestion.batch(index);
        (batch.status, batch.attempts, batch.triggered_at.map(unix_ms))
    }

    fn ms(&self, secs: u64) -> u64 {
        unix_ms(self.clock.origin_wall() + Duration::from_secs(secs))
    }
}

/// Where the journal's records end: after them come only zeros reserved for later ones.
fn records_end(dir: &std::path::Path) -> u64 {
    let bytes = std::fs::read(dir.join(journal::FILE_NAME)).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |last| last as u64 + 1)
}

/// Makes every write past `bytes` into any file fail with EFBIG (`None`: no limit).
fn limit_file_size(bytes: Option<u64>) {
    let maximum = getrlimit(Resource::Fsize).maximum;
    setrlimit(Resource::Fsize, Rlimit { current: bytes, maximum }).expect("set RLIMIT_FSIZE");
}

#[test]
fn a_release_the_journal_cannot_save_is_held_and_starts_only_once_saved() {
    // Past the limit the kernel sends SIGXFSZ, which would end the process; the binary ignores
    // it too (main.rs), so a write just fails.
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::new(AtomicBool::new(false))).unwrap();
    let dir = std::env::temp_dir().join(format!("ingestd-held-{}", uuid::Uuid::new_v4()));
    let rig = Rig::open(&dir, ManualClock::new());

    // An idle queue releases at once; the next batches wait for the interval.
    rig.app.ingest(Priority::High, vec![1], None).unwrap();
    rig.expect_call(1, 0);
    let later = rig.app.ingest(Priority::High, vec![2, 3], None).unwrap();
    assert_eq!(rig.parked(|p| matches!(p, Parked::Until(_))), Parked::Until(rig.at(5)));

    // The disk is full: the release at 5 s is held, unjournaled, and the API is not called.
    limit_file_size(Some(records_end(&dir)));
    rig.advance_to(5);
    rig.wait_failures(3);
    rig.expect_no_calls();
    assert_eq!(rig.batch(later, 0), (BatchStatus::YetToStart, 0, None));
    let outage = rig.app.storage_outage().expect("an outage");
    assert!(outage.error.contains("File too large"), "{outage:?}");
    assert!(
        matches!(rig.app.ingest(Priority::Low, vec![9], None), Err(IngestError::Unsaved(_))),
        "new work is refused while the journal cannot write"
    );

    // Time passes; nothing else is released while the held batch waits for the disk.
    rig.advance_to(20);
    assert_eq!(rig.parked(|p| p == Parked::Busy), Parked::Busy);
    let failed = rig.app.storage_outage().unwrap().failures;
    rig.wait_failures(failed + 2);
    rig.expect_no_calls();
    assert_eq!(rig.batch(later, 0), (BatchStatus::YetToStart, 0, None));

    // Space frees: the batch starts now, journaled as now, and the interval counts from now
    // (not from the release at 5 s, nor from its completion).
    limit_file_size(None);
    rig.expect_call(2, 20);
    assert_eq!(rig.parked(|p| matches!(p, Parked::Until(_))), Parked::Until(rig.at(25)));
    rig.expect_no_calls();
    assert_eq!(rig.app.storage_outage(), None);
    assert_eq!(rig.batch(later, 0), (BatchStatus::Completed, 1, Some(rig.ms(20))));
    let triggered: Vec<u64> = journal_records(&dir)
        .into_iter()
        .filter_map(|r| match r {
            Record::Triggered { ingestion_id, at_ms, .. } if ingestion_id == later => Some(at_ms),
            _ => None,
        })
        .collect();
    assert_eq!(triggered, vec![rig.ms(20)], "one triggered record, at the real start");

    // After a restart 1 s later, the last batch still waits for the interval from 20 s (and a
    // millisecond: the journal keeps whole ones, and the interval must never be short).
    let restart_wall = rig.clock.origin_wall() + Duration::from_secs(21);
    rig.app.shutdown(PATIENCE);
    drop(rig);
    let rig = Rig::open(&dir, ManualClock::starting_at(restart_wall));
    let due = rig.at(4) + Duration::from_millis(1);
    assert_eq!(rig.parked(|p| matches!(p, Parked::Until(_))), Parked::Until(due));
    rig.expect_no_calls();
    rig.app.queue().advance(&rig.clock, due - rig.clock.now());
    assert_eq!(rig.calls.recv_timeout(PATIENCE).ok(), Some((3, due)));
    rig.app.shutdown(PATIENCE);
    let _ = std::fs::remove_dir_all(&dir);
}

fn journal_records(dir: &std::path::Path) -> Vec<Record> {
    let text = std::fs::read(dir.join(journal::FILE_NAME)).unwrap();
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .skip(1)
        .filter(|line| !line.starts_with('\0'))
        .filter_map(|line| line.split_once(' ').and_then(|(_, json)| serde_json::from_str(json).ok()))
        .collect()
}
