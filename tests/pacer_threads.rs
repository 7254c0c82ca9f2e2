//! The real pacer and worker threads, driven by a manual clock. No sleeps: each step waits for
//! the pacer to park in a known state, so every assertion is about one instant.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ingestd::clock::unix_ms;
use ingestd::config::Retry as RetryPolicy;
use ingestd::upstream::{Call, Delivery, Outcome, RetryAfter};
use ingestd::{
    ApiResponse, App, BatchStatus, Clock, ExternalApi, FetchError, Id, IngestError, Ingestion, ManualClock, Pacing,
    Parked, Priority, Storage,
};

/// An external API that reports each call, with the manual clock's time, and optionally
/// blocks until the test lets each call finish.
struct Recorder {
    clock: Arc<ManualClock>,
    calls: Sender<(Id, Instant)>,
    gate: Option<Receiver<()>>,
}

impl ExternalApi for Recorder {
    fn fetch(&mut self, id: Id) -> Result<ApiResponse, FetchError> {
        self.calls.send((id, self.clock.now())).unwrap();
        if let Some(gate) = &self.gate {
            gate.recv().map_err(|_| FetchError("gate closed".into()))?;
        }
        Ok(ApiResponse { id: u64::from(id), data: "processed".into() })
    }
}

struct Rig {
    app: App,
    clock: Arc<ManualClock>,
    calls: Receiver<(Id, Instant)>,
    gate: Option<Sender<()>>,
}

const SEC: Duration = Duration::from_secs(1);
/// How long to wait for a thread to reach a state before failing; never reached when passing.
const PATIENCE: Duration = Duration::from_secs(10);

impl Rig {
    fn new(gated: bool) -> Rig {
        let clock = Arc::new(ManualClock::new());
        let (calls_tx, calls) = crossbeam_channel::unbounded();
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded();
        let api = Recorder { clock: Arc::clone(&clock), calls: calls_tx, gate: gated.then_some(gate_rx) };
        let app = App::start(Pacing { interval: 5 * SEC, batch_size: 3 }, clock.clone(), api);
        Rig { app, clock, calls, gate: gated.then_some(gate_tx) }
    }

    fn ingest(&self, priority: Priority, ids: Vec<Id>) -> uuid::Uuid {
        self.app.ingest(priority, ids, None).expect("an in-memory ingest is accepted")
    }

    /// Lets `count` gated calls finish.
    fn finish_calls(&self, count: usize) {
        for _ in 0..count {
            self.gate.as_ref().expect("a gated rig").send(()).unwrap();
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.clock.origin() + Duration::from_secs_f64(secs)
    }

    fn advance_to(&self, secs: f64) {
        let by = self.at(secs).saturating_duration_since(self.clock.now());
        self.app.queue().advance(&self.clock, by);
    }

    /// Waits until the pacer has nothing to do before `secs` (or nothing at all), i.e. every
    /// release due by now has happened and every ungated call has completed.
    #[track_caller]
    fn settle(&self) -> Parked {
        self.parked(|p| p != Parked::Busy)
    }

    #[track_caller]
    fn parked(&self, accept: impl Fn(Parked) -> bool) -> Parked {
        self.app.queue().wait_parked(PATIENCE, accept).expect("the pacer to park as expected")
    }

    #[track_caller]
    fn next_call(&self) -> (Id, Instant) {
        self.calls.recv_timeout(PATIENCE).expect("another call to the external API")
    }

    /// Takes the calls made so far: exactly `ids`, all at `secs`.
    #[track_caller]
    fn expect_calls(&self, ids: &[Id], secs: f64) {
        let got: Vec<(Id, Instant)> = ids.iter().map(|_| self.next_call()).collect();
        let want: Vec<(Id, Instant)> = ids.iter().map(|&id| (id, self.at(secs))).collect();
        assert_eq!(got, want);
        assert!(self.calls.try_recv().is_err(), "more calls than {ids:?}");
    }

    /// Each batch's `(position, eta)` while yet to start, else `None`, and the ingestion's
    /// `eta_completed`.
    fn etas(&self, id: uuid::Uuid) -> (Vec<Option<(u64, Instant)>>, Option<u64>) {
        let ingestion = self.app.ingestion(&id).unwrap();
        let timeline = self.app.queue().timeline(&ingestion, usize::MAX);
        let etas = timeline.batches().map(|b| b.position.zip(b.eta)).collect();
        (etas, timeline.eta_completed.map(unix_ms))
    }

    /// Each batch's `(triggered_at, completed_at)`, in Unix milliseconds.
    fn times(&self, id: uuid::Uuid) -> Vec<(Option<u64>, Option<u64>)> {
        let ingestion = self.app.ingestion(&id).unwrap();
        ingestion.batches().map(|b| (b.triggered_at.map(unix_ms), b.completed_at.map(unix_ms))).collect()
    }

    /// `secs` after the origin on the wall clock, in Unix milliseconds.
    fn ms(&self, secs: f64) -> u64 {
        unix_ms(self.clock.origin_wall() + Duration::from_secs_f64(secs))
    }

    #[track_caller]
    fn expect_no_calls(&self) {
        assert_eq!(self.calls.try_recv().ok(), None);
    }
}

#[test]
fn worked_example_on_the_manual_clock() {
    let rig = Rig::new(false);
    let medium = rig.ingest(Priority::Medium, vec![1, 2, 3, 4, 5]);
    assert_eq!(rig.settle(), Parked::Until(rig.at(5.0)));
    rig.expect_calls(&[1, 2, 3], 0.0);

    rig.advance_to(4.0);
    let high = rig.ingest(Priority::High, vec![6, 7, 8, 9]);
    assert_eq!(rig.settle(), Parked::Until(rig.at(5.0)));
    rig.advance_to(4.999);
    assert_eq!(rig.settle(), Parked::Until(rig.at(5.0)));
    rig.expect_no_calls();

    rig.advance_to(5.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(10.0)));
    rig.expect_calls(&[6, 7, 8], 5.0);
    let statuses = |id| rig.app.ingestion(&id).unwrap().batches().map(|b| b.status).collect::<Vec<_>>();
    assert_eq!(statuses(high), [BatchStatus::Completed, BatchStatus::YetToStart]);
    assert_eq!(statuses(medium), [BatchStatus::Completed, BatchStatus::YetToStart]);

    rig.advance_to(10.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(15.0)));
    rig.expect_calls(&[9], 10.0);
    assert_eq!(rig.app.ingestion(&high).unwrap().status(), BatchStatus::Completed);

    rig.advance_to(15.0);
    assert_eq!(rig.settle(), Parked::Idle);
    rig.expect_calls(&[4, 5], 15.0);
    assert_eq!(rig.app.ingestion(&medium).unwrap().status(), BatchStatus::Completed);
    rig.app.shutdown(PATIENCE);
}

#[test]
fn a_batch_longer_than_the_interval_holds_the_next_one_back() {
    let rig = Rig::new(true);
    let gate = rig.gate.as_ref().unwrap();
    let id = rig.ingest(Priority::Low, vec![1, 2, 3, 4]);
    assert_eq!(rig.parked(|p| p == Parked::Busy), Parked::Busy);
    assert_eq!(rig.next_call(), (1, rig.at(0.0)));
    assert_eq!(rig.app.ingestion(&id).unwrap().status(), BatchStatus::Triggered);

    rig.advance_to(7.0);
    assert_eq!(rig.parked(|_| true), Parked::Busy);
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    // The second batch goes the moment the first completes, at 7 s, not at 5 s or 10 s.
    assert_eq!(rig.next_call(), (2, rig.at(7.0)));
    assert_eq!(rig.next_call(), (3, rig.at(7.0)));
    assert_eq!(rig.next_call(), (4, rig.at(7.0)));
    gate.send(()).unwrap();
    assert_eq!(rig.settle(), Parked::Idle);
    assert_eq!(rig.app.ingestion(&id).unwrap().status(), BatchStatus::Completed);
    rig.app.shutdown(PATIENCE);
}

#[test]
fn idle_then_burst_goes_at_once_then_paces() {
    let rig = Rig::new(false);
    rig.ingest(Priority::Low, vec![1]);
    assert_eq!(rig.settle(), Parked::Idle);
    rig.expect_calls(&[1], 0.0);

    rig.advance_to(60.0);
    rig.ingest(Priority::Low, vec![2, 3, 4, 5, 6, 7]);
    assert_eq!(rig.settle(), Parked::Until(rig.at(65.0)));
    rig.expect_calls(&[2, 3, 4], 60.0);
    rig.ingest(Priority::High, vec![8]);
    assert_eq!(rig.settle(), Parked::Until(rig.at(65.0)));
    rig.advance_to(65.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(70.0)));
    rig.expect_calls(&[8], 65.0);
    rig.advance_to(70.0);
    assert_eq!(rig.settle(), Parked::Idle);
    rig.expect_calls(&[5, 6, 7], 70.0);
    rig.app.shutdown(PATIENCE);
}

#[test]
fn shutdown_finishes_the_batch_in_flight_and_releases_nothing_more() {
    let rig = Rig::new(true);
    let id = rig.ingest(Priority::High, vec![1, 2, 3, 4]);
    assert_eq!(rig.next_call().0, 1);
    let ingestion = rig.app.ingestion(&id).unwrap();
    std::thread::scope(|scope| {
        let stop = scope.spawn(|| rig.app.shutdown(PATIENCE));
        // The stop has begun while the first call is still held at the gate.
        common::wait_for("new work to be refused", PATIENCE, || {
            matches!(rig.app.ingest(Priority::Low, vec![9], None), Err(IngestError::ShuttingDown)).then_some(())
        });
        rig.finish_calls(3);
        assert!(stop.join().unwrap(), "the batch in flight finished");
    });
    let statuses: Vec<BatchStatus> = ingestion.batches().map(|b| b.status).collect();
    assert_eq!(statuses, [BatchStatus::Completed, BatchStatus::YetToStart]);
    assert_eq!(rig.calls.try_iter().map(|c| c.0).collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn worked_example_etas_are_the_slots_the_batches_then_get() {
    let rig = Rig::new(false);
    let medium = rig.ingest(Priority::Medium, vec![1, 2, 3, 4, 5]);
    assert_eq!(rig.settle(), Parked::Until(rig.at(5.0)));
    assert_eq!(rig.etas(medium), (vec![None, Some((0, rig.at(5.0)))], Some(rig.ms(5.0))));
    assert_eq!(rig.times(medium)[0], (Some(rig.ms(0.0)), Some(rig.ms(0.0))));

    rig.advance_to(4.0);
    let high = rig.ingest(Priority::High, vec![6, 7, 8, 9]);
    assert_eq!(rig.settle(), Parked::Until(rig.at(5.0)));
    let at_t4 = [rig.etas(high), rig.etas(medium)];
    assert_eq!(at_t4[0], (vec![Some((0, rig.at(5.0))), Some((1, rig.at(10.0)))], Some(rig.ms(10.0))));
    assert_eq!(at_t4[1], (vec![None, Some((2, rig.at(15.0)))], Some(rig.ms(15.0))));

    for secs in [5.0, 10.0, 15.0] {
        rig.advance_to(secs);
        rig.settle();
    }
    let calls: Vec<(Id, Instant)> = (0..9).map(|_| rig.next_call()).collect();
    let want = [(1, 0.), (2, 0.), (3, 0.), (6, 5.), (7, 5.), (8, 5.), (9, 10.), (4, 15.), (5, 15.)];
    assert_eq!(calls, want.map(|(id, secs)| (id, rig.at(secs))));
    // Every batch was triggered exactly at the ETA it had at T4.
    let triggered = |id| rig.times(id).iter().map(|t| t.0.unwrap()).collect::<Vec<_>>();
    assert_eq!(triggered(high), [rig.ms(5.0), rig.ms(10.0)]);
    assert_eq!(triggered(medium), [rig.ms(0.0), rig.ms(15.0)]);
    assert_eq!(rig.etas(medium), (vec![None, None], None));
    rig.app.shutdown(PATIENCE);
}

#[test]
fn each_high_batch_pushes_every_lower_eta_back_one_interval() {
    let rig = Rig::new(false);
    rig.ingest(Priority::Low, vec![1]);
    assert_eq!(rig.settle(), Parked::Idle);
    let low = rig.ingest(Priority::Low, vec![2, 3, 4, 5, 6, 7]);
    let medium = rig.ingest(Priority::Medium, vec![8, 9, 10, 11]);
    rig.advance_to(1.0);
    let before = [rig.etas(low), rig.etas(medium)];
    assert_eq!(before[1].0, [Some((0, rig.at(5.0))), Some((1, rig.at(10.0)))]);
    assert_eq!(before[0].0, [Some((2, rig.at(15.0))), Some((3, rig.at(20.0)))]);

    let high = rig.ingest(Priority::High, vec![12, 13, 14, 15, 16, 17, 18]);
    assert_eq!(rig.etas(high).0, [Some((0, rig.at(5.0))), Some((1, rig.at(10.0))), Some((2, rig.at(15.0)))]);
    let pushed = |(etas, done): (Vec<Option<(u64, Instant)>>, Option<u64>)| {
        let etas = etas.into_iter().map(|e| e.map(|(p, t)| (p + 3, t + 3 * SEC * 5))).collect::<Vec<_>>();
        (etas, done.map(|t| t + 15_000))
    };
    assert_eq!([rig.etas(low), rig.etas(medium)], before.map(pushed));
    rig.app.shutdown(PATIENCE);
}

/// Work has waited since it was accepted, not since it was queued: in durable mode it is
/// queued once its group is on disk, and after a restart its acceptance time is all there is,
/// so `oldest_waiting_since` would jump back by the commit's time.
#[test]
fn what_waits_has_waited_since_it_was_accepted() {
    let rig = Rig::new(true);
    rig.ingest(Priority::Low, vec![1]);
    assert_eq!(rig.next_call(), (1, rig.at(0.0)), "released: nothing waits");
    rig.advance_to(10.0);
    let accepted_ms = rig.clock.wall_ms() - 300;
    rig.app.queue().submit(Arc::new(Ingestion::new(Priority::Low, vec![2], 3, accepted_ms, None)));
    let low = &rig.app.queue().report().levels[2];
    assert_eq!((low.priority, low.oldest_since), (Priority::Low, Some(rig.at(9.7))));
    rig.finish_calls(2);
    rig.app.shutdown(PATIENCE);
}

/// A timeline of an ingestion's first batches (the dashboard's) says what the whole one says of
/// the ingestion: its status, and when its last batch is expected.
#[test]
fn a_timeline_of_the_first_batches_tells_the_whole_ingestion_s_status_and_end() {
    let rig = Rig::new(true);
    let id = rig.ingest(Priority::Low, (1..=30).collect());
    assert_eq!(rig.next_call(), (1, rig.at(0.0)));
    let ingestion = rig.app.ingestion(&id).unwrap();
    let all = rig.app.queue().timeline(&ingestion, usize::MAX);
    let first = rig.app.queue().timeline(&ingestion, 2);
    assert_eq!((all.batches().len(), first.batches().len()), (10, 2));
    assert_eq!((first.status, first.eta_completed), (all.status, all.eta_completed));
    assert_eq!(first.status, BatchStatus::Triggered);
    let end = unix_ms(all.eta_completed.expect("an expected end"));
    assert_eq!(end, rig.clock.wall_ms() + 45_000, "the tenth batch goes nine intervals after the first");
    assert_eq!(first.batches().nth(1).unwrap().eta, all.batches().nth(1).unwrap().eta);
    rig.finish_calls(3);
    rig.app.shutdown(PATIENCE);
}

#[test]
fn the_queue_report_counts_what_waits_and_what_is_in_flight() {
    let rig = Rig::new(true);
    let first = rig.ingest(Priority::Low, vec![1, 2, 3, 4]);
    assert_eq!(rig.next_call(), (1, rig.at(0.0)));
    rig.advance_to(2.0);
    rig.ingest(Priority::High, vec![5, 6, 7, 8, 9]);
    rig.advance_to(3.0);
    let report = rig.app.queue().report();
    let levels: Vec<_> = report.levels.iter().map(|l| (l.priority, l.batches, l.ids, l.oldest_since)).collect();
    assert_eq!(
        levels,
        [
            (Priority::High, 2, 5, Some(rig.at(2.0))),
            (Priority::Medium, 0, 0, None),
            (Priority::Low, 1, 1, Some(rig.at(0.0))),
        ]
    );
    let (batch, at) = report.in_flight.as_ref().unwrap();
    assert_eq!((batch.ingestion.id, batch.index, *at), (first, 0, rig.at(0.0)));
    assert_eq!(report.outlook.next_release, Some(rig.at(5.0)));
    assert_eq!(report.outlook.drained_at(), Some(rig.at(15.0)));
    // The batch in flight outlasts the interval: the next slot is now, and moves with time.
    rig.advance_to(6.0);
    assert_eq!(rig.app.queue().report().outlook.next_release, Some(rig.at(6.0)));
    rig.finish_calls(3);
    assert_eq!([rig.next_call(), rig.next_call(), rig.next_call()], [2, 3, 5].map(|id| (id, rig.at(6.0))));
    assert_eq!(rig.app.queue().report().in_flight.unwrap().0.ingestion.priority, Priority::High);
    rig.finish_calls(3);
    rig.app.shutdown(PATIENCE);
}

/// The pacer is the only thread that releases. A completion after the next batch's slot has
/// passed notifies it, and it releases that batch at once (due at the completion); a completion
/// before the slot leaves it waiting for the slot.
#[test]
fn after_a_completion_the_pacer_releases_at_once_if_the_slot_has_passed() {
    let clock = Arc::new(ManualClock::new());
    let (releases_tx, releases) = crossbeam_channel::unbounded();
    let pacer = ingestd::Pacer::start(5 * SEC, clock.clone(), releases_tx);
    let queue = pacer.queue().clone();
    let at = |secs: u32| clock.origin() + secs * SEC;
    queue.submit(Arc::new(ingestd::Ingestion::new(Priority::Low, vec![1, 2, 3, 4, 5, 6, 7], 3, 0, None)));
    let first = releases.recv_timeout(PATIENCE).expect("the pacer releases the first batch");
    assert_eq!((first.batch.index, first.at), (0, at(0)));
    assert_eq!(queue.wait_parked(PATIENCE, |p| p == Parked::Busy), Some(Parked::Busy));

    // Completed at 7 s, past the 5 s slot: the pacer releases batch 1, due and released at 7 s.
    queue.advance(&clock, 7 * SEC);
    queue.complete(&first.batch);
    let second = releases.recv_timeout(PATIENCE).expect("the pacer releases the second batch");
    assert_eq!((second.batch.index, second.due, second.at, second.attempt), (1, at(7), at(7), 1));
    assert_eq!(queue.wait_parked(PATIENCE, |p| p == Parked::Busy), Some(Parked::Busy));
    let depth = queue.depth();
    assert_eq!((depth.queued_batches, depth.in_flight), (1, true));

    // Completed at 9 s, before the 12 s slot: the pacer waits for the slot, then releases.
    queue.advance(&clock, 2 * SEC);
    queue.complete(&second.batch);
    assert_eq!(queue.wait_parked(PATIENCE, |_| true), Some(Parked::Until(at(12))));
    assert!(releases.try_recv().is_err(), "nothing released before the slot");
    queue.advance(&clock, 3 * SEC);
    let third = releases.recv_timeout(PATIENCE).expect("the pacer releases the third batch");
    assert_eq!((third.batch.index, third.due, third.at), (2, at(12), at(12)));
    pacer.stop();
}

/// The hard rule on the real threads: over arrivals, completions and clock steps in a mixed
/// order, no two releases are closer than the interval, none goes before its due instant or
/// while another is in flight, and each goes at the first instant the clock shows past its due.
/// Ends with a stop while the pacer waits on a slot, which must wake it.
#[test]
fn releases_are_never_closer_than_the_interval_on_the_real_threads() {
    let clock = Arc::new(ManualClock::new());
    let (releases_tx, releases) = crossbeam_channel::unbounded();
    let interval = 5 * SEC;
    let pacer = ingestd::Pacer::start(interval, clock.clone(), releases_tx);
    let queue = pacer.queue().clone();
    // A fixed pseudo-random sequence (xorshift), so a failure repeats.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut in_flight: Option<ingestd::Release> = None;
    let mut last: Option<Instant> = None;
    let mut released = 0;
    for step in 0..400u32 {
        match next(3) {
            0 => {
                let ids: Vec<Id> = (0..1 + next(7) as u32).map(|i| step * 10 + i).collect();
                let priority = Priority::ALL[next(3) as usize];
                queue.submit(Arc::new(ingestd::Ingestion::new(priority, ids, 3, 0, None)));
            }
            1 => queue.advance(&clock, Duration::from_millis(next(8_000))),
            _ => {
                if let Some(release) = in_flight.take() {
                    queue.complete(&release.batch);
                }
            }
        }
        queue.wait_parked(PATIENCE, |_| true).expect("the pacer to wait again");
        for release in releases.try_iter() {
            assert!(in_flight.is_none(), "a release while another is in flight");
            assert!(release.due <= release.at, "released before its due instant");
            assert_eq!(release.at, clock.now(), "released at the first look past its due instant");
            if let Some(last) = last {
                assert!(release.at - last >= interval, "two releases {:?} apart", release.at - last);
            }
            last = Some(release.at);
            released += 1;
            in_flight = Some(release);
        }
    }
    assert!(released >= 30, "only {released} releases: the sequence exercised too little");
    // Drain what is queued, one slot at a time, then leave the pacer waiting on a slot and stop
    // it there.
    loop {
        if let Some(release) = in_flight.take() {
            queue.complete(&release.batch);
        }
        queue.advance(&clock, interval);
        queue.wait_parked(PATIENCE, |_| true).expect("the pacer to wait again");
        in_flight = releases.try_iter().next();
        if in_flight.is_none() {
            break;
        }
    }
    assert_eq!(queue.depth().queued_batches, 0);
    assert_eq!(queue.wait_parked(PATIENCE, |_| true), Some(Parked::Idle));
    queue.submit(Arc::new(ingestd::Ingestion::new(Priority::High, vec![1, 2], 1, 0, None)));
    let release = releases.recv_timeout(PATIENCE).expect("the first batch goes at once");
    queue.complete(&release.batch);
    assert_eq!(queue.wait_parked(PATIENCE, |p| p != Parked::Busy), Some(Parked::Until(release.at + interval)));
    pacer.stop();
}

/// An API that answers each call for an id with the next outcome its script has for that id (then
/// deliveries), reports
/// each call with the manual clock's time, and optionally blocks each call until let through.
struct Scripted {
    clock: Arc<ManualClock>,
    calls: Sender<(Id, Instant)>,
    script: Vec<(Id, Outcome)>,
    gate: Option<Receiver<()>>,
    wire: bool,
}

impl ExternalApi for Scripted {
    fn fetch(&mut self, id: Id) -> Result<ApiResponse, FetchError> {
        Ok(ApiResponse { id: u64::from(id), data: "processed".into() })
    }

    fn deliver(&mut self, id: Id) -> Delivery {
        self.calls.send((id, self.clock.now())).unwrap();
        if let Some(gate) = &self.gate {
            gate.recv().unwrap();
        }
        let next = self.script.iter().position(|(of, _)| *of == id);
        let outcome = next.map_or(Outcome::Delivered, |at| self.script.remove(at).1);
        Delivery { outcome, call: Call::Answered(200), took: Duration::ZERO }
    }

    fn has_wire(&self) -> bool {
        self.wire
    }
}

impl Rig {
    /// A rig whose API follows `script`, retrying as `policy` says.
    fn scripted(script: Vec<(Id, Outcome)>, policy: RetryPolicy, gated: bool, wire: bool) -> Rig {
        let clock = Arc::new(ManualClock::new());
        let (calls_tx, calls) = crossbeam_channel::unbounded();
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded();
        let api = Scripted { clock: Arc::clone(&clock), calls: calls_tx, script, gate: gated.then_some(gate_rx), wire };
        let pacing = Pacing { interval: 5 * SEC, batch_size: 3 };
        let app = App::open_with(pacing, policy, clock.clone(), api, Storage::default()).unwrap();
        Rig { app, clock, calls, gate: gated.then_some(gate_tx) }
    }

    fn batch(&self, id: uuid::Uuid, index: usize) -> (BatchStatus, u8, Option<u64>, Vec<Id>, Option<String>) {
        let ingestion = self.app.ingestion(&id).unwrap();
        let view = ingestion.batch(index);
        let error = ingestion.last_error(index).map(|e| e.to_string());
        (view.status, view.attempts, view.retry_at.map(unix_ms), ingestion.failed_ids(index), error)
    }
}

fn retry(reason: &str) -> Outcome {
    Outcome::Retry { reason: reason.into() }
}

#[test]
fn a_retry_backs_off_doubling_goes_first_in_its_priority_and_fails_after_max_attempts() {
    let policy = RetryPolicy { min_backoff: 10 * SEC, max_backoff: 25 * SEC, max_attempts: 4 };
    let rig = Rig::scripted(vec![(1, retry("boom")); 4], policy, false, false);
    let failing = rig.ingest(Priority::High, vec![1]);
    assert_eq!(rig.settle(), Parked::Until(rig.at(10.0)), "waits for the backoff's end");
    rig.expect_calls(&[1], 0.0);
    assert_eq!(
        rig.batch(failing, 0),
        (BatchStatus::Triggered, 1, Some(rig.ms(10.0)), vec![], Some("id 1: boom".into()))
    );
    rig.advance_to(1.0);
    let later = rig.ingest(Priority::High, vec![2, 3, 4, 5, 6, 7]);
    // A retry still in its backoff is not counted: the later HIGH batches are next.
    assert_eq!(rig.etas(later).0, [Some((0, rig.at(5.0))), Some((1, rig.at(10.0)))]);
    rig.advance_to(5.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(10.0)));
    rig.expect_calls(&[2, 3, 4], 5.0);
    // Its backoff over, the retry goes before the HIGH batch that arrived after it.
    rig.advance_to(10.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(15.0)));
    rig.expect_calls(&[1], 10.0);
    assert_eq!(rig.batch(failing, 0).1, 2);
    assert_eq!(rig.batch(failing, 0).2, Some(rig.ms(30.0)), "the second backoff is 20 s");
    rig.advance_to(15.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(30.0)));
    rig.expect_calls(&[5, 6, 7], 15.0);
    rig.advance_to(30.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(55.0)), "the third is 25 s, the most");
    rig.expect_calls(&[1], 30.0);
    rig.advance_to(54.9);
    assert_eq!(rig.settle(), Parked::Until(rig.at(55.0)));
    rig.expect_no_calls();
    rig.advance_to(55.0);
    assert_eq!(rig.settle(), Parked::Idle);
    rig.expect_calls(&[1], 55.0);
    // The fourth release was the last: the id failed for good.
    assert_eq!(rig.batch(failing, 0), (BatchStatus::Failed, 4, None, vec![1], Some("id 1: boom".into())));
    let ingestion = rig.app.ingestion(&failing).unwrap();
    assert_eq!((ingestion.status(), ingestion.completed_at_ms()), (BatchStatus::Failed, Some(rig.ms(55.0))));
    assert_eq!(rig.app.ingestion(&later).unwrap().status(), BatchStatus::Completed);
    rig.app.shutdown(PATIENCE);
}

/// New work that arrives while the only batch queued waits out its backoff goes at its own slot.
/// (The pacer, parked until the backoff's end, slept through it: new work waited up to
/// `--retry-max-backoff`.)
#[test]
fn new_work_goes_at_its_slot_while_a_retry_backs_off() {
    let policy = RetryPolicy { min_backoff: 60 * SEC, max_backoff: 60 * SEC, max_attempts: 4 };
    let rig = Rig::scripted(vec![(1, retry("boom"))], policy, false, false);
    rig.ingest(Priority::Low, vec![1]);
    assert_eq!(rig.settle(), Parked::Until(rig.at(60.0)));
    rig.expect_calls(&[1], 0.0);
    rig.advance_to(7.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(60.0)));
    // No clock move wakes the pacer now: the new batch alone must.
    rig.ingest(Priority::Low, vec![2]);
    rig.expect_calls(&[2], 7.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(60.0)));
    rig.app.shutdown(PATIENCE);
}

#[test]
fn retry_after_pauses_every_release_and_moves_the_etas() {
    let policy = RetryPolicy { min_backoff: 10 * SEC, max_backoff: 60 * SEC, max_attempts: 5 };
    let stop = Outcome::Stop { reason: "HTTP 429 after 1 ms".into(), retry_after: Some(RetryAfter::Delay(60 * SEC)) };
    let rig = Rig::scripted(vec![(1, stop)], policy, false, false);
    let high = rig.ingest(Priority::High, vec![1, 2, 3, 4]);
    let low = rig.ingest(Priority::Low, vec![9]);
    // The release stopped at its first id; nothing more goes before 60 s.
    assert_eq!(rig.settle(), Parked::Until(rig.at(10.0)));
    rig.expect_calls(&[1], 0.0);
    let report = rig.app.queue().report();
    assert_eq!((report.paused_until, report.retrying), (Some(rig.at(60.0)), 1));
    assert_eq!(rig.etas(low).0, [Some((1, rig.at(65.0)))]);
    rig.advance_to(10.0);
    assert_eq!(rig.settle(), Parked::Until(rig.at(60.0)));
    // The retry's backoff is over: it goes first, at the pause's end; everything behind moves.
    assert_eq!(rig.etas(high).0, [None, Some((1, rig.at(65.0)))]);
    assert_eq!(rig.etas(low).0, [Some((2, rig.at(70.0)))]);
    rig.advance_to(59.9);
    rig.settle();
    rig.expect_no_calls();
    rig.advance_to(60.0);
    rig.settle();
    rig.expect_calls(&[1, 2, 3], 60.0);
    assert_eq!(rig.app.queue().report().paused_until, None);
    rig.advance_to(65.0);
    rig.settle();
    rig.expect_calls(&[4], 65.0);
    rig.advance_to(70.0);
    assert_eq!(rig.settle(), Parked::Idle);
    rig.expect_calls(&[9], 70.0);
    assert_eq!(rig.batch(high, 0).0, BatchStatus::Completed);
    rig.app.shutdown(PATIENCE);
}

#[test]
fn over_a_wire_the_next_release_waits_an_interval_after_the_first_answer() {
    let policy = RetryPolicy { min_backoff: 5 * SEC, max_backoff: 60 * SEC, max_attempts: 5 };
    for (wire, next) in [(true, 7.0), (false, 5.0)] {
        let rig = Rig::scripted(Vec::new(), policy, true, wire);
        let gate = rig.gate.clone().unwrap();
        rig.ingest(Priority::Low, vec![1, 2, 3, 4]);
        assert_eq!(rig.next_call(), (1, rig.at(0.0)));
        // The first call is answered at 2 s: the upstream had the request by then, at the latest.
        rig.advance_to(2.0);
        for _ in 0..3 {
            gate.send(()).unwrap();
        }
        assert_eq!([rig.next_call(), rig.next_call()], [(2, rig.at(2.0)), (3, rig.at(2.0))]);
        assert_eq!(rig.parked(|p| p != Parked::Busy), Parked::Until(rig.at(next)), "wire: {wire}");
        rig.advance_to(next);
        assert_eq!(rig.next_call(), (4, rig.at(next)));
        gate.send(()).unwrap();
        rig.settle();
        rig.app.shutdown(PATIENCE);
    }
}

/// A full queue's `Retry-After` counts a batch per period, not per interval, when batches run
/// longer than the interval (a slow API): a client told to come back sooner would only be
/// refused again.
#[test]
fn a_full_queue_counts_slow_batches_in_its_retry_after() {
    let rig = Rig::new(true);
    rig.ingest(Priority::Low, vec![1, 2, 3]);
    assert_eq!(rig.next_call(), (1, rig.at(0.0)));
    rig.advance_to(12.0);
    rig.finish_calls(3);
    assert_eq!([rig.next_call(), rig.next_call()], [(2, rig.at(12.0)), (3, rig.at(12.0))]);
    rig.app.set_max_queued_ids(3);
    rig.ingest(Priority::Low, vec![4, 5, 6]);
    assert_eq!(rig.next_call(), (4, rig.at(12.0)), "the next batch goes once the slow one is done");
    // 3 in flight + 3 wanted - 3 allowed = one batch over; the last one ran 12 s.
    let refused = rig.app.ingest(Priority::Low, vec![7, 8, 9], None);
    assert_eq!(refused, Err(IngestError::QueueFull { retry_after: 12 * SEC }));
    rig.finish_calls(3);
    assert!(rig.app.shutdown(PATIENCE));
}

/// ARCHITECTURE (Queued ids): simultaneous requests cannot overshoot `--max-queued-ids`
/// together. Nothing drains (the call in flight is held), 16 requests of 3 ids race for a
/// limit of 10: exactly 3 are accepted, the rest get `QueueFull` with one batch's interval.
#[test]
fn simultaneous_requests_cannot_overshoot_the_queued_ids_limit() {
    let rig = Rig::new(true);
    rig.app.set_max_queued_ids(10);
    let start = std::sync::Barrier::new(16);
    let results: Vec<_> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..16u32)
            .map(|t| {
                let (rig, start) = (&rig, &start);
                scope.spawn(move || {
                    start.wait();
                    rig.app.ingest(Priority::Low, vec![t * 3 + 1, t * 3 + 2, t * 3 + 3], None)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 3, "{results:?}");
    // 9 queued + 3 wanted - 10 allowed = 2 ids over: one batch, one interval.
    let full = IngestError::QueueFull { retry_after: 5 * SEC };
    assert!(results.iter().filter(|r| r.is_err()).all(|r| r.as_ref().unwrap_err() == &full), "{results:?}");
    rig.finish_calls(3);
    assert!(rig.app.shutdown(PATIENCE));
}
