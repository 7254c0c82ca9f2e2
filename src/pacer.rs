//! The pacer thread and the queue lock.
//!
//! Owns the queue: one `parking_lot::Mutex<State>` (the `Scheduler` with its heap, plus the
//! pacer's bookkeeping) and one `parking_lot::Condvar`, and is the only module that reads the
//! [`Clock`]. HTTP handler threads and the journal take the lock to submit, the worker to report
//! how a release ended (completed, failed, or to retry after a backoff, perhaps with an upstream
//! pause), the pacer thread to decide. The pacer thread is the only one that releases a batch:
//! it waits on the Condvar with the lock released (until the head batch's slot, or until notified
//! when idle or busy), and whoever changes what it would decide notifies it under the lock.
//! Tests wait for its state on the same lock and Condvar. Nobody does I/O, sleeps or sends on a
//! channel while holding the lock.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::clock::{Clock, ManualClock};
use crate::log;
use crate::metrics::Metrics;
use crate::model::{Batch, BatchStatus, BatchView, Enqueued, Ingestion, Priority};
use crate::realtime;
use crate::scheduler::{Finish, Outlook, Poll, Scheduler};

/// A batch the pacer let go, sent to the worker.
#[derive(Debug)]
pub struct Release {
    pub batch: Batch,
    /// The earliest instant the pacing rule allowed this release.
    pub due: Instant,
    /// When it was actually released.
    pub at: Instant,
    /// The same instant on the wall clock, in Unix milliseconds.
    pub at_wall_ms: u64,
    /// Which attempt this is: 1 normally, more for a retry or a batch interrupted by a restart.
    pub attempt: u8,
}

/// How a release ended, as the worker reports it to [`Queue::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finished {
    pub ended: Ended,
    /// When the release's first call ended (answered, failed or timed out), on the queue's clock
    /// ([`Queue::now`]); `None` for an API without a wire. The next release waits an interval
    /// after it, so the upstream never sees two batches closer than the interval.
    pub first_answer: Option<Instant>,
    /// The upstream asked for a pause (`Retry-After`): release nothing for this long from now.
    pub pause: Option<Duration>,
    /// When the release really started, if later than the pacer released it (its `triggered`
    /// record waited for the disk): the interval to the next release counts from there, as the
    /// journaled last release does.
    pub started_late: Option<Instant>,
    /// When it ended, in Unix milliseconds, as journaled: the completion's time and the pause's
    /// end are written from it, so they read the same after a restart.
    pub at_ms: u64,
}

/// What became of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Every id delivered.
    Completed,
    /// Nothing left to retry, some ids failed for good.
    Failed,
    /// Some ids are to be retried: release the batch again after this backoff.
    Retry { backoff: Duration },
}

/// What the pacer thread is waiting for, while it waits. Lets tests wait for a state, not a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// Nothing is queued.
    Idle,
    /// A batch is in flight.
    Busy,
    /// The head batch may go at this instant.
    Until(Instant),
}

/// Queue depth, as seen at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    pub queued_batches: usize,
    pub in_flight: bool,
}

struct State {
    scheduler: Scheduler<Arc<Ingestion>>,
    /// Ids waiting to be released, per priority, indexed like [`Priority::ALL`]; a batch waiting
    /// for a retry counts its undelivered ids.
    queued_ids: [u64; 3],
    /// The end of the last pause an upstream asked for, on the wall clock (0: none), for the
    /// journal.
    paused_until_ms: u64,
    parked: Option<Parked>,
    /// How long the pacer last waited to take the lock back after spinning to a deadline: the
    /// part of a release's lateness that another thread holding the lock caused (logged).
    lock_wait: Duration,
    /// How long after the instant it asked for the pacer's last timed wait returned (logged):
    /// the part of a release's lateness the OS took to wake it and give it a CPU.
    wake_late: Duration,
    stopping: bool,
}

impl State {
    fn depth(&self) -> Depth {
        Depth { queued_batches: self.scheduler.queued(), in_flight: self.scheduler.in_flight() }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Notified under `state` whenever what the pacer would decide may have changed (a submit
    /// to an idle queue, a completion, a restore, a stop, a manual clock's step), and by the
    /// pacer each time it starts to wait (for [`Queue::wait_parked`]). Always `notify_all`: the
    /// pacer and test waiters share it.
    changed: Condvar,
    clock: Arc<dyn Clock>,
    /// The scheduler's, which never changes: read without the lock.
    interval: Duration,
    /// Counters and recent history; its own lock, never taken under the queue lock.
    metrics: Metrics,
    wall: Wall,
}

/// Maps the clock's [`Instant`]s to wall-clock time, from one pair read together at start, so
/// the core stays monotonic and the API can still print dates.
#[derive(Debug, Clone, Copy)]
struct Wall {
    instant: Instant,
    system: SystemTime,
}

impl Wall {
    fn at(&self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.instant) {
            Some(after) => self.system + after,
            None => self.system - (self.instant - t),
        }
    }
}

/// An ingestion's batches and when they go, as of one instant: each batch's status read once
/// (a byte each, however many), the rest of a batch read when [`Timeline::batches`] gets to it.
#[derive(Debug)]
pub struct Timeline<'a> {
    ingestion: &'a Ingestion,
    /// The first batches' statuses as read, up to the most asked for.
    statuses: Vec<BatchStatus>,
    outlook: Outlook,
    enqueued: Option<Enqueued>,
    paused_until: Option<SystemTime>,
    /// Derived from the statuses read, so it agrees with every batch shown.
    pub status: BatchStatus,
    /// When its last batch is expected to be released (or was, if it is in flight); `None` once
    /// every batch has completed.
    pub eta_completed: Option<SystemTime>,
}

impl<'a> Timeline<'a> {
    /// The batches asked for, in order, each as of the status read for it: a time a later
    /// change wrote is not shown beside an earlier status.
    pub fn batches(&self) -> impl ExactSizeIterator<Item = BatchTimeline<'a>> + '_ {
        self.statuses.iter().enumerate().map(|(index, &status)| self.line(status, index as u32))
    }

    fn line(&self, status: BatchStatus, index: u32) -> BatchTimeline<'a> {
        let mut view = self.ingestion.batch(index as usize);
        view.status = status;
        view.triggered_at = view.triggered_at.filter(|_| status != BatchStatus::YetToStart);
        view.completed_at = view.completed_at.filter(|_| status.is_finished());
        // A retry cannot go before the upstream's pause ends, whichever release set it.
        view.retry_at = view
            .retry_at
            .filter(|_| status == BatchStatus::Triggered)
            .map(|at| self.paused_until.map_or(at, |p| at.max(p)));
        let position = match (status, self.enqueued) {
            (BatchStatus::YetToStart, Some(e)) => self.outlook.position(self.ingestion.priority, e.first, index),
            _ => None,
        };
        BatchTimeline { view, position, eta: position.and_then(|p| self.outlook.eta(p)) }
    }
}

/// One batch of a [`Timeline`].
#[derive(Debug)]
pub struct BatchTimeline<'a> {
    pub view: BatchView<'a>,
    /// How many batches go before it if nothing new arrives; `None` unless it is yet to start.
    pub position: Option<u64>,
    /// Its expected release (see `Outlook::eta`); `None` unless it is yet to start.
    pub eta: Option<Instant>,
}

/// The whole queue, as of one instant. Built under the queue lock in O(1).
#[derive(Debug)]
pub struct QueueReport {
    pub outlook: Outlook,
    /// One per priority, in the order of [`Priority::ALL`] (HIGH first).
    pub levels: Vec<LevelReport>,
    /// The batch in flight and when it was released.
    pub in_flight: Option<(Batch, Instant)>,
    /// Batches waiting out a backoff before a retry (not in `outlook`'s counts).
    pub retrying: usize,
    /// While the upstream's pause (`Retry-After`) lasts, when it ends.
    pub paused_until: Option<Instant>,
    /// When the next release can go if nothing new arrives: the head's slot, or with only
    /// retries backing off, the first one's end (see `Scheduler::next_release`). Unlike
    /// `outlook.next_release`, not the ETAs' base.
    pub next_release: Option<Instant>,
}

/// The waiting work of one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelReport {
    pub priority: Priority,
    pub batches: u64,
    pub ids: u64,
    /// When the oldest batch still waiting was submitted.
    pub oldest_since: Option<Instant>,
}

/// The handle every other thread uses: submit work, report completions, read the depth.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

/// Owns the pacer thread; [`Pacer::stop`] joins it.
pub struct Pacer {
    queue: Queue,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    /// Starts the pacer thread. It sends each released batch on `releases`, and stops when told
    /// to or when the receiver is gone.
    pub fn start(interval: Duration, clock: Arc<dyn Clock>, releases: Sender<Release>) -> Pacer {
        let wall = Wall { instant: clock.now(), system: clock.wall() };
        let state = State {
            scheduler: Scheduler::new(interval),
            queued_ids: [0; 3],
            paused_until_ms: 0,
            parked: None,
            lock_wait: Duration::ZERO,
            wake_late: Duration::ZERO,
            stopping: false,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            clock,
            interval,
            metrics: Metrics::default(),
            wall,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("pacer".into())
                .spawn(move || run(&shared, &releases))
                .expect("cannot start the pacer thread")
        };
        Pacer { queue: Queue { shared }, thread: Some(thread) }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Releases nothing more and joins the thread. The batch in flight, if any, is the worker's.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.queue.change(|state, _| state.stopping = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(shared: &Shared, releases: &Sender<Release>) {
    if shared.clock.runs_by_itself() {
        realtime::raise_and_say("pacer");
    }
    let mut runnable = realtime::runnable_time();
    let mut state = shared.state.lock();
    while !state.stopping {
        let now = shared.clock.now();
        match take_release(shared, &mut state, now) {
            Ok(release) => {
                let depth = state.depth();
                let waits = (std::mem::take(&mut state.lock_wait), std::mem::take(&mut state.wake_late));
                let delivered = MutexGuard::unlocked(&mut state, || {
                    // Logged after the send, so the worker never waits for a record to be
                    // formatted; the `log-writer` thread writes it.
                    let mut logged = LoggedRelease::of(&release, waits);
                    shared.metrics.released(&release);
                    let sent = releases.send(release).is_ok();
                    let now_runnable = realtime::runnable_time();
                    logged.runnable = now_runnable.zip(runnable).map(|(now, before)| now.saturating_sub(before));
                    runnable = now_runnable;
                    log_release(shared, &logged, depth);
                    sent
                });
                if !delivered {
                    return;
                }
            }
            Err(Poll::WaitUntil(deadline)) => wait(shared, &mut state, Parked::Until(deadline)),
            Err(Poll::Busy) => wait(shared, &mut state, Parked::Busy),
            Err(_) => wait(shared, &mut state, Parked::Idle),
        }
    }
}

/// Releases the head batch if the pacing rule allows it at `now`; otherwise says why not.
fn take_release(shared: &Shared, state: &mut State, now: Instant) -> Result<Release, Poll<Arc<Ingestion>>> {
    match state.scheduler.poll(now) {
        Poll::Release { run, index, due } => {
            let batch = Batch { ingestion: run, index };
            // The worker marks it triggered, once (in durable mode) that is on disk.
            let attempt = batch.view().attempts.saturating_add(1);
            let ids = &mut state.queued_ids[batch.ingestion.priority.index()];
            *ids = ids.saturating_sub(batch.pending_count() as u64);
            Ok(Release { batch, due, at: now, at_wall_ms: shared.clock.wall_ms(), attempt })
        }
        other => Err(other),
    }
}

/// What the log says of a release, kept once the release itself has gone to the worker.
struct LoggedRelease {
    batch: String,
    at: Instant,
    due: Instant,
    lock_wait: Duration,
    wake_late: Duration,
    /// How long the pacer was runnable but not running since the release before (where the OS
    /// says): a lateness with this near it was the CPU going elsewhere, not a late timer.
    runnable: Option<Duration>,
}

impl LoggedRelease {
    fn of(release: &Release, (lock_wait, wake_late): (Duration, Duration)) -> LoggedRelease {
        let batch = release.batch.to_string();
        LoggedRelease { batch, at: release.at, due: release.due, lock_wait, wake_late, runnable: None }
    }
}

/// Logs a release; in JSON, with exact microseconds since the pacer started, so a benchmark
/// can compute lateness and gaps without parsing rounded text.
fn log_release(shared: &Shared, release: &LoggedRelease, depth: Depth) {
    let micros =
        |t: Instant| u64::try_from(t.saturating_duration_since(shared.wall.instant).as_micros()).unwrap_or(u64::MAX);
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let late = release.at - release.due;
    let mut fields = vec![
        ("release_us", micros(release.at)),
        ("due_us", micros(release.due)),
        ("late_ns", nanos(late)),
        ("lock_wait_ns", nanos(release.lock_wait)),
        ("wake_late_ns", nanos(release.wake_late)),
    ];
    fields.extend(release.runnable.map(|runnable| ("runnable_ns", nanos(runnable))));
    log::info_with(format_args!("released {} late by {late:?}; {depth}", release.batch), &fields);
}

/// Waits on the Condvar, with the lock released, until notified or (on a clock that runs by
/// itself) until the head batch's slot.
fn wait(shared: &Shared, state: &mut MutexGuard<'_, State>, parked: Parked) {
    state.parked = Some(parked);
    shared.changed.notify_all();
    match parked {
        Parked::Until(deadline) if shared.clock.runs_by_itself() => {
            let early = deadline.checked_sub(SPIN).unwrap_or(deadline);
            // Notified before `early`, something changed: look again. Timed out with nothing
            // changed, the deadline is close: spin the rest without the lock, since a wake-up
            // alone is often late by more than a slice of a busy CPU.
            let timed_out = shared.changed.wait_until(state, early).timed_out();
            if timed_out && state.parked == Some(parked) {
                let clock = shared.clock.as_ref();
                state.wake_late = clock.now().saturating_duration_since(early);
                let spun = MutexGuard::unlocked(state, || spin_until(clock, deadline));
                state.lock_wait = clock.now().saturating_duration_since(spun);
            }
        }
        // On a manual clock only `Queue::advance` moves time, and it notifies.
        _ => shared.changed.wait(state),
    }
    state.parked = None;
}

/// How long before a deadline the pacer stops sleeping and spins. Costs at most this much CPU
/// per release.
const SPIN: Duration = Duration::from_micros(500);

/// Spins until `deadline`; returns the instant it saw it pass.
fn spin_until(clock: &dyn Clock, deadline: Instant) -> Instant {
    loop {
        let now = clock.now();
        if now >= deadline {
            return now;
        }
        std::hint::spin_loop();
    }
}

/// What a restart recovered from the journal, for [`Queue::restore`].
pub(crate) struct Restored {
    /// Batches that were in flight: they run again first.
    pub(crate) reruns: Vec<Batch>,
    /// Ingestions with batches yet to start, in acceptance order.
    pub(crate) queued: Vec<Arc<Ingestion>>,
    /// Batches that were waiting out a retry's backoff.
    pub(crate) retries: Vec<Batch>,
    /// The last release and the end of the upstream's last pause, on the wall clock.
    pub(crate) last_release_ms: Option<u64>,
    pub(crate) paused_until_ms: Option<u64>,
    /// The API has a wire (`--upstream`): the next release also waits an interval after the
    /// last one's first answer.
    pub(crate) wire: bool,
}

impl Queue {
    /// Queues every batch of `ingestion`, behind all earlier work of its priority.
    pub fn submit(&self, ingestion: Arc<Ingestion>) {
        self.submit_all(std::iter::once(ingestion));
    }

    /// Queues several ingestions in this order, under one lock acquisition.
    pub(crate) fn submit_all(&self, ingestions: impl IntoIterator<Item = Arc<Ingestion>>) {
        let ingestions: Vec<Arc<Ingestion>> = ingestions.into_iter().collect();
        // The journal's groups of transitions alone have nothing to queue: no lock, no wake-up.
        if ingestions.is_empty() {
            return;
        }
        for ingestion in &ingestions {
            self.shared.metrics.submitted(ingestion);
        }
        let mut state = self.lock();
        let (now, now_ms) = (self.shared.clock.now(), self.shared.clock.wall_ms());
        let was_empty = state.scheduler.queued() == 0;
        for ingestion in ingestions {
            let (priority, len, ids) = (ingestion.priority, batch_count(&ingestion), ingestion.id_count() as u64);
            // It has waited since it was accepted (a restart says the same): in durable mode,
            // that was before its group went to disk.
            let waited = Duration::from_millis(now_ms.saturating_sub(ingestion.accepted_at_ms));
            let arrived = now.checked_sub(waited).unwrap_or(now);
            let first = state.scheduler.submit_from(priority, Arc::clone(&ingestion), 0, len, arrived, now);
            ingestion.set_enqueued(Enqueued { first, at: now });
            state.queued_ids[priority.index()] += ids;
        }
        // More work never makes a release earlier than the head batch's slot, or than the end
        // of the batch in flight: a pacer parked on either would decide the same again, so only
        // one with nothing queued (idle, or waiting for a retry's backoff to end) is woken. A
        // wake-up per POST cost a context switch and a turn of this lock each, under load.
        let slot_or_busy = !was_empty && matches!(state.parked, Some(Parked::Until(_)));
        if !slot_or_busy && state.parked != Some(Parked::Busy) {
            wake(&self.shared, &mut state);
        }
    }

    /// Marks the batch in flight completed and notifies the pacer, which releases the next one
    /// once the interval allows (at once, if its slot has passed).
    pub fn complete(&self, batch: &Batch) -> Depth {
        let at_ms = self.shared.clock.wall_ms();
        let finished = Finished { ended: Ended::Completed, first_answer: None, pause: None, started_late: None, at_ms };
        self.finish(batch, finished)
    }

    /// Records how the release in flight ended and notifies the pacer. A batch to retry waits
    /// out its backoff from now, then goes before every batch of its priority that arrived
    /// after it (see [`Scheduler`]); its `retry_at` shows when. A pause holds every release.
    pub(crate) fn finish(&self, batch: &Batch, finished: Finished) -> Depth {
        let wall_ms = finished.at_ms;
        // Counted first, so whoever sees the queue move on also sees the count.
        self.shared.metrics.ended(batch, finished.ended);
        let depth = self.change(|state, now| {
            let ms_after = |d: Duration| wall_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let retry_at = match finished.ended {
                Ended::Completed => {
                    batch.complete(wall_ms);
                    None
                }
                Ended::Failed => {
                    batch.finish(BatchStatus::Failed, wall_ms);
                    None
                }
                Ended::Retry { backoff } => {
                    // Its `retry_at` is the worker's, as journaled.
                    state.queued_ids[batch.ingestion.priority.index()] += batch.pending_count() as u64;
                    Some(now + backoff)
                }
            };
            if let Some(pause) = finished.pause {
                state.scheduler.pause(now + pause);
                state.paused_until_ms = state.paused_until_ms.max(ms_after(pause));
            }
            let (first_answer, started_late) = (finished.first_answer, finished.started_late);
            state.scheduler.finish(now, Finish { first_answer, retry_at, started_late });
            state.depth()
        });
        match finished.ended {
            Ended::Completed => log::info(format_args!("completed {batch}; {depth}")),
            Ended::Failed => log::info(format_args!("failed {batch}; {depth}")),
            Ended::Retry { backoff } => log::info(format_args!("retrying {batch} in {backoff:?}; {depth}")),
        }
        depth
    }

    /// Queues what a restart recovered, before any new work, under one hold of the lock (the
    /// pacer, already running, sees all of it or none): the upstream's pause if it has not
    /// ended, the last release, `reruns` (interrupted in flight) first, then `queued` in their
    /// original order, each from its first unreleased batch, and the batches that were waiting
    /// out a retry's backoff (each until its `retry_at`), in their order.
    pub(crate) fn restore(&self, restored: Restored) {
        let Restored { reruns, queued, retries, last_release_ms, paused_until_ms, wire } = restored;
        let now_ms = self.shared.clock.wall_ms();
        for batch in reruns.iter().chain(&retries) {
            self.shared.metrics.restored(batch.ingestion.priority, 1);
        }
        for ingestion in &queued {
            let waiting = ingestion.batches().filter(|b| b.status == BatchStatus::YetToStart).count();
            self.shared.metrics.restored(ingestion.priority, waiting);
        }
        // A wall-clock instant as one of the queue's, from how far it is from now.
        let at = |now: Instant, ms: u64| match ms.checked_sub(now_ms) {
            Some(ahead) => now + Duration::from_millis(ahead),
            None => now.checked_sub(Duration::from_millis(now_ms - ms)).unwrap_or(now),
        };
        self.change(|state, now| {
            if let Some(until) = paused_until_ms.filter(|&ms| ms > now_ms) {
                state.scheduler.pause(at(now, until));
                state.paused_until_ms = state.paused_until_ms.max(until);
            }
            if let Some(last) = last_release_ms {
                // Kept in whole milliseconds, rounded down: taken as the millisecond after, so
                // the interval from it is never short. A release "in the future" (the wall clock
                // stepped back) counts as just now.
                state.scheduler.restore_last_release(at(now, last.saturating_add(1)).min(now));
                if wire {
                    // Its first answer is not journaled; it came before this start at the latest.
                    state.scheduler.restore_first_answer(now);
                }
            }
            for batch in reruns {
                let priority = batch.ingestion.priority;
                state.queued_ids[priority.index()] += batch.pending_count() as u64;
                state.scheduler.rerun(priority, batch.ingestion, batch.index, now);
            }
            for ingestion in queued {
                let (priority, len) = (ingestion.priority, batch_count(&ingestion));
                let first = ingestion.batches().take_while(|b| b.status != BatchStatus::YetToStart).count();
                let waiting: usize = ingestion.batches().skip(first).map(|b| b.ids.len()).sum();
                state.queued_ids[priority.index()] += waiting as u64;
                // How long it waits counts from its acceptance (on the wall clock), not from now.
                let arrived = at(now, ingestion.accepted_at_ms).min(now);
                let run = Arc::clone(&ingestion);
                let level_first = state.scheduler.submit_from(priority, run, first as u32, len, arrived, now);
                ingestion.set_enqueued(Enqueued { first: level_first, at: now });
            }
            for batch in retries {
                let (priority, retry_at_ms) = (batch.ingestion.priority, batch.retry_at_ms());
                state.queued_ids[priority.index()] += batch.pending_count() as u64;
                state.scheduler.restore_retry(priority, batch.ingestion, batch.index, at(now, retry_at_ms));
            }
        });
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The queue's clock, for showing recorded instants as ages.
    pub fn now(&self) -> Instant {
        self.shared.clock.now()
    }

    /// When the next release can go if nothing new arrives, retries and pauses included; `None`
    /// while a batch is in flight or nothing waits (see `Scheduler::next_release`).
    pub fn next_release(&self) -> Option<Instant> {
        self.lock().scheduler.next_release(self.shared.clock.now())
    }

    pub fn depth(&self) -> Depth {
        self.lock().depth()
    }

    /// Whether the queue runs on a clock that moves by itself (not a test's manual clock).
    pub(crate) fn on_real_time(&self) -> bool {
        self.shared.clock.runs_by_itself()
    }

    /// The wall-clock time in Unix milliseconds, from the pacer's clock.
    pub(crate) fn wall_ms(&self) -> u64 {
        self.shared.clock.wall_ms()
    }

    pub(crate) fn interval(&self) -> Duration {
        self.shared.interval
    }

    /// How long each release takes to make room for the next, as of now (see
    /// `Scheduler::period`): the interval, or longer when batches run longer.
    pub(crate) fn period(&self) -> Duration {
        self.lock().scheduler.period(self.shared.clock.now())
    }

    /// `ingestion`'s first `most` batches with their positions and ETAs, and its status and
    /// expected end from all of them, each batch read once. Takes the queue lock once, briefly,
    /// to copy the counters; never walks the queue, so it costs the same with a million batches
    /// queued as with ten.
    pub fn timeline<'a>(&self, ingestion: &'a Ingestion, most: usize) -> Timeline<'a> {
        // Counters first, statuses second. A batch released before the counters were copied is
        // no longer counted as queued, so it gets no position, even while it reads as yet to
        // start (the worker marks it triggered once that is on disk).
        let (outlook, paused_until) = {
            let state = self.lock();
            let outlook = state.scheduler.outlook(self.shared.clock.now());
            // As journaled (wall milliseconds), so it reads the same across a restart.
            let until = outlook.paused_until.map(|_| UNIX_EPOCH + Duration::from_millis(state.paused_until_ms));
            (outlook, until)
        };
        let count = ingestion.batch_count();
        let mut timeline = Timeline {
            ingestion,
            statuses: Vec::with_capacity(count.min(most)),
            outlook,
            enqueued: ingestion.enqueued(),
            paused_until,
            status: BatchStatus::YetToStart,
            eta_completed: None,
        };
        let mut last = None;
        timeline.status = BatchStatus::of_ingestion(ingestion.batches().zip(0u32..).map(|(view, index)| {
            if (index as usize) < most {
                timeline.statuses.push(view.status);
            } else if index as usize + 1 == count {
                last = Some((view.status, index));
            }
            view.status
        }));
        let last = last.or_else(|| timeline.statuses.last().map(|&s| (s, timeline.statuses.len() as u32 - 1)));
        timeline.eta_completed = match (timeline.status.is_finished(), last) {
            (true, _) | (_, None) => None,
            (false, Some((status, index))) => {
                let last = timeline.line(status, index);
                last.eta.map(|t| self.shared.wall.at(t)).or(last.view.retry_at).or(last.view.triggered_at)
            }
        };
        timeline
    }

    /// Everything `GET /queue` shows, copied under the queue lock in O(1).
    pub fn report(&self) -> QueueReport {
        let state = self.lock();
        let outlook = state.scheduler.outlook(self.shared.clock.now());
        let levels = Priority::ALL
            .into_iter()
            .map(|priority| LevelReport {
                priority,
                batches: outlook.queued(priority),
                ids: state.queued_ids[priority.index()],
                oldest_since: state.scheduler.oldest_waiting(priority),
            })
            .collect();
        let in_flight =
            state.scheduler.in_flight_batch().map(|f| (Batch { ingestion: Arc::clone(&f.run), index: f.index }, f.at));
        let paused_until = outlook.paused_until;
        let next_release = outlook.next_release.or_else(|| state.scheduler.next_release(outlook.now));
        let retrying = state.scheduler.backing_off();
        QueueReport { outlook, levels, in_flight, retrying, paused_until, next_release }
    }

    /// The wall-clock time of one of the queue's instants.
    pub(crate) fn wall_time(&self, t: Instant) -> SystemTime {
        self.shared.wall.at(t)
    }

    /// Moves a manual clock forward and wakes the pacer, under the lock, so no wake-up is lost.
    pub fn advance(&self, clock: &ManualClock, by: Duration) {
        self.change(|_, _| clock.advance(by));
    }

    /// Blocks until the pacer thread waits in a state that `accept`s and returns it, or returns
    /// `None` after `timeout` (a real duration, whatever the clock). Waits on the pacer's own
    /// lock and Condvar: the pacer notifies each time it starts to wait.
    pub fn wait_parked(&self, timeout: Duration, accept: impl Fn(Parked) -> bool) -> Option<Parked> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock();
        loop {
            let parked = state.parked.filter(|&p| accept(p));
            if parked.is_some() || self.shared.changed.wait_until(&mut state, deadline).timed_out() {
                return parked.or(state.parked.filter(|&p| accept(p)));
            }
        }
    }

    /// The queue lock, for every thread but the pacer.
    fn lock(&self) -> Held<'_> {
        Held { guard: Some(self.shared.state.lock()), since: Instant::now(), origin: self.shared.wall.instant }
    }

    /// Changes the state and notifies the pacer, under the lock, so no wake-up is lost.
    fn change<T>(&self, f: impl FnOnce(&mut State, Instant) -> T) -> T {
        let mut state = self.lock();
        let out = f(&mut state, self.shared.clock.now());
        wake(&self.shared, &mut state);
        out
    }
}

/// The queue lock as other threads hold it. A hold long enough to make a release late (a
/// lowered HTTP thread preempted while it holds the lock) is logged with its length, so a late
/// release can be told apart from a late wake-up.
struct Held<'a> {
    /// Always `Some` until dropped; taken then so that the lock is let go before logging, and
    /// the hold is measured without the wake-up its release may cause.
    guard: Option<MutexGuard<'a, State>>,
    since: Instant,
    /// Where the release log's microseconds count from, so a hold lines up with the releases.
    origin: Instant,
}

/// Holds at least this long are logged.
const LONG_HOLD: Duration = Duration::from_millis(2);

impl std::ops::Deref for Held<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Read before letting go: unlocking may wake the pacer, which may run first.
        let until = Instant::now();
        drop(self.guard.take());
        let held = until - self.since;
        if held >= LONG_HOLD {
            let thread = std::thread::current();
            let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            log::info_with(
                format_args!("the queue lock was held {held:?} by {}", thread.name().unwrap_or("a thread")),
                &[("lock_held_us", micros(held)), ("held_until_us", micros(until - self.origin))],
            );
        }
    }
}

fn wake(shared: &Shared, state: &mut State) {
    // The pacer must look again before it counts as waiting.
    state.parked = None;
    shared.changed.notify_all();
}

fn batch_count(ingestion: &Ingestion) -> u32 {
    u32::try_from(ingestion.batch_count()).expect("batch count fits in u32")
}

impl std::fmt::Display for Depth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "queue depth {} batches, {} in flight", self.queued_batches, u8::from(self.in_flight))
    }
}

#[allow(dead_code)]
fn assert_shareable() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Shared>();
    is_send_sync::<Queue>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;

    /// The journal keeps the last release in whole milliseconds: read back as the millisecond
    /// it began, a release at `…000.999` ms let the next go up to 1 ms before the interval was
    /// out; it is taken as the millisecond after.
    #[test]
    fn a_restored_last_release_never_shortens_the_interval() {
        let released_ms = 1_700_000_000_000;
        // Restored 1 µs after the release (at `…000.999` ms, journaled as `…000`).
        let wall = SystemTime::UNIX_EPOCH + Duration::from_micros(released_ms * 1000 + 1_000);
        let clock = Arc::new(ManualClock::starting_at(wall));
        let (releases, released) = crossbeam_channel::unbounded();
        let pacer = Pacer::start(Duration::from_secs(5), clock.clone(), releases);
        let queue = pacer.queue();
        let ingestion = Arc::new(Ingestion::new(Priority::High, vec![1], 3, released_ms, None));
        let last_release_ms = Some(released_ms);
        queue.restore(Restored {
            reruns: vec![],
            queued: vec![ingestion],
            retries: vec![],
            last_release_ms,
            paused_until_ms: None,
            wire: false,
        });
        let waiting = |p: Parked| matches!(p, Parked::Until(_));
        assert!(queue.wait_parked(Duration::from_secs(5), waiting).is_some());
        // 4,999.5 ms after the restore: 4,999.501 ms after the release.
        queue.advance(&clock, Duration::from_micros(4_999_500));
        let settled = |p: Parked| matches!(p, Parked::Until(_) | Parked::Busy);
        assert!(queue.wait_parked(Duration::from_secs(5), settled).is_some());
        assert!(released.try_recv().is_err(), "released before the interval was out");
        queue.advance(&clock, Duration::from_micros(500));
        assert!(released.recv_timeout(Duration::from_secs(5)).is_ok());
        pacer.stop();
    }

    /// A pacer on a manual clock (interval 5 s) with a LOW ingestion of `ids` submitted, and
    /// the release of its first batch, which goes at once.
    fn released_at_once(
        ids: Vec<u32>,
    ) -> (Arc<ManualClock>, Pacer, crossbeam_channel::Receiver<Release>, Arc<Ingestion>, Release) {
        let clock = Arc::new(ManualClock::starting_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
        let (releases, released) = crossbeam_channel::unbounded();
        let pacer = Pacer::start(Duration::from_secs(5), clock.clone(), releases);
        let ingestion = Arc::new(Ingestion::new(Priority::Low, ids, 3, clock.wall_ms(), None));
        pacer.queue().submit(Arc::clone(&ingestion));
        let release = released.recv_timeout(Duration::from_secs(5)).expect("released at once");
        (clock, pacer, released, ingestion, release)
    }

    /// With only a retry waiting out its backoff, `GET /queue` still says when the next release
    /// can go: at the backoff's end, or the upstream's pause if that ends later.
    #[test]
    fn a_queue_with_only_a_retry_backing_off_reports_its_next_release() {
        let (clock, pacer, released, _, release) = released_at_once(vec![1]);
        let queue = pacer.queue();
        let start = queue.now();
        let retry = |backoff, pause| Finished {
            ended: Ended::Retry { backoff },
            first_answer: None,
            pause,
            started_late: None,
            at_ms: clock.wall_ms(),
        };
        queue.finish(&release.batch, retry(Duration::from_secs(30), None));
        let report = queue.report();
        assert_eq!((report.retrying, report.outlook.next_release), (1, None));
        assert_eq!(report.next_release, Some(start + Duration::from_secs(30)));

        queue.advance(&clock, Duration::from_secs(30));
        let release = released.recv_timeout(Duration::from_secs(5)).expect("the retry");
        queue.finish(&release.batch, retry(Duration::from_secs(1), Some(Duration::from_secs(60))));
        let paused_until = queue.now() + Duration::from_secs(60);
        assert_eq!(queue.report().next_release, Some(paused_until));
        pacer.stop();
    }

    /// A timeline reads each batch's status once; what a later change wrote (a release, a
    /// completion) does not show beside it, and neither does the batch's place in the queue
    /// change meanwhile.
    #[test]
    fn a_timeline_shows_each_batch_as_of_the_status_it_read() {
        let (clock, pacer, _, ingestion, release) = released_at_once(vec![1, 2, 3, 4]);
        let queue = pacer.queue();
        let timeline = queue.timeline(&ingestion, usize::MAX);
        let before: Vec<(BatchStatus, bool, bool, Option<u64>)> = timeline
            .batches()
            .map(|b| (b.view.status, b.view.triggered_at.is_some(), b.view.completed_at.is_some(), b.position))
            .collect();
        assert_eq!(
            before,
            [(BatchStatus::YetToStart, false, false, None), (BatchStatus::YetToStart, false, false, Some(0))]
        );
        release.batch.trigger(clock.wall_ms());
        queue.complete(&release.batch);
        let after: Vec<_> = timeline
            .batches()
            .map(|b| (b.view.status, b.view.triggered_at.is_some(), b.view.completed_at.is_some(), b.position))
            .collect();
        assert_eq!(after, before, "a timeline is as of when it was taken");
        pacer.stop();
    }
}
