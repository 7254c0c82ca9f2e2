//! The queue and the pacing rule, as pure data.
//!
//! Owned by the pacer and only touched under its lock. No locks, threads, clock reads or I/O
//! here: every method that depends on time takes `now`, so the rules are tested as data.

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use crate::model::Priority;

/// What the pacer should do next, decided at `now`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Poll<B> {
    /// Release batch `index` of `run` now. `due` is the earliest instant the rule allowed it;
    /// the release is late by `now - due`.
    Release { run: B, index: u32, due: Instant },
    /// Look again at this instant: the head batch may go then, or a retry's backoff ends.
    WaitUntil(Instant),
    /// A batch is in flight; nothing may go until it completes.
    Busy,
    /// Nothing is queued and nothing is in flight.
    Idle,
}

/// One set of counters per priority, indexed by [`Priority::index`] (HIGH first).
const LEVELS: usize = Priority::ALL.len();

fn level(priority: Priority) -> usize {
    priority.index()
}

/// A priority queue of batches plus the rule that paces their release.
///
/// Batches arrive in runs (an ingestion's batches, which share a priority and are consecutive in
/// arrival order), and the queue holds one entry per run in a [`BinaryHeap`]: memory and lock
/// time per request do not grow with its size. Order: higher [`Priority`] first, then earlier
/// arrival (a sequence number given at submit), then position within the run. A batch to run
/// again after a restart goes before all of them.
///
/// Retries: a release that leaves ids to retry hands its batch back ([`Finish::retry_at`]); it
/// waits out its backoff outside the queue, then (when a poll sees the backoff over) enters the
/// heap before every batch of its priority that arrived after it, which is every batch of its
/// priority still queued (they have larger level indexes), and behind higher priorities. Among
/// retries of one priority, earlier arrivals go first.
///
/// Pacing: the head may be released at `max(previous release + interval, previous completion,
/// when the queue last became non-empty, previous first answer + interval, pause end)`, with at
/// most one batch in flight. So releases are never closer than `interval`, a batch that
/// completes within the interval does not stretch the period, and idle time earns no burst (a
/// queue that was empty counts from when work came). The first-answer term makes the gap exact at a
/// remote API: the previous batch's first request arrived there before its answer came back, and
/// the next one arrives after its release, so two first requests are at least `interval` apart
/// (the API reports no first answer when it has no wire, [`Finish::first_answer`]). The pause is
/// the upstream's `Retry-After` ([`Scheduler::pause`]).
///
/// Positions: every batch gets a *level index*, its number among all batches ever submitted at
/// its priority (a run's batches get consecutive ones). Because a level releases in exactly that
/// order, the released batches of a level are its level indexes `0..released`; see
/// [`Outlook::position`] for why that makes a position O(1), whatever the container.
#[derive(Debug)]
pub(crate) struct Scheduler<B> {
    interval: Duration,
    /// One entry per queued run (and per batch to run again); the greatest goes first.
    heap: BinaryHeap<Entry<B>>,
    /// The arrival sequence number of the next run.
    arrivals: u64,
    /// Per level, when runs arrived: `(level index after them, instant)`, oldest first, one
    /// element per instant. Only for [`Scheduler::oldest_waiting`]; the heap decides the order.
    arrived: [VecDeque<(u64, Instant)>; LEVELS],
    /// Batches ever submitted, per level.
    submitted: [u64; LEVELS],
    /// Batches ever released, per level (reruns not counted).
    released: [u64; LEVELS],
    /// Batches interrupted in flight by a restart, waiting in the heap to run again, per level.
    reruns: [u64; LEVELS],
    /// Retries whose backoff has ended, waiting in the heap, per level.
    ready_retries: [u64; LEVELS],
    /// Retries still waiting out their backoff, the soonest first. Not in the heap, not counted
    /// in positions until their backoff ends.
    backing_off: BinaryHeap<Reverse<Backoff<B>>>,
    in_flight: Option<InFlight<B>>,
    last_release: Option<Instant>,
    last_completion: Option<Instant>,
    /// How long the last release ran, from its release to its end.
    last_run: Option<Duration>,
    /// When the batch released last had its first answer (see [`Finish::first_answer`]).
    last_answer: Option<Instant>,
    /// Nothing is released before this instant (an upstream's `Retry-After`).
    paused_until: Option<Instant>,
    /// When the queue last went from empty to non-empty; a release is never due before it.
    waiting_since: Option<Instant>,
    /// Reads and writes of queued runs, so tests can show what a lookup costs.
    touches: Cell<u64>,
}

/// Where a heap entry goes: compared field by field, the greatest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// A batch interrupted by a restart, ahead of everything else.
    rerun: bool,
    priority: Priority,
    /// A retry, ahead of every first release of its priority (all of which arrived after it).
    retry: bool,
    /// Earlier arrivals first.
    arrival: Reverse<u64>,
    /// Within one arrival (retries of one run), earlier batches first; 0 for a run's entry.
    index: Reverse<u32>,
}

/// A retry waiting out its backoff; the soonest first, then as in the heap.
#[derive(Debug)]
struct Backoff<B> {
    ready_at: Instant,
    arrival: u64,
    index: u32,
    priority: Priority,
    run: B,
}

impl<B> Backoff<B> {
    fn key(&self) -> (Instant, u64, u32) {
        (self.ready_at, self.arrival, self.index)
    }
}

impl<B> PartialEq for Backoff<B> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<B> Eq for Backoff<B> {}

impl<B> PartialOrd for Backoff<B> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<B> Ord for Backoff<B> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// How a release ended, as the worker reports it to [`Scheduler::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Finish {
    /// When the release's first call was answered (or gave up): the API had the batch's first
    /// request before this. `None` for an API without a wire (the simulated one), or a release
    /// that called nothing.
    pub first_answer: Option<Instant>,
    /// Release the batch again, not before this instant: some of its ids are to be retried.
    pub retry_at: Option<Instant>,
    /// When the release really started, if later than it was released: it counts as the last
    /// release from then on.
    pub started_late: Option<Instant>,
}

/// A run in the heap: batches `next..len` of `run` are still to go.
#[derive(Debug)]
struct Entry<B> {
    rank: Rank,
    run: B,
    next: u32,
    len: u32,
}

impl<B> PartialEq for Entry<B> {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}

impl<B> Eq for Entry<B> {}

impl<B> PartialOrd for Entry<B> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<B> Ord for Entry<B> {
    /// By rank alone: arrival numbers are unique, so no two entries are equal.
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank.cmp(&other.rank)
    }
}

/// The batch released last, until it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InFlight<B> {
    pub run: B,
    pub index: u32,
    pub priority: Priority,
    /// When it was released.
    pub at: Instant,
    /// Its run's arrival number: a retry keeps its place among retries by it.
    pub arrival: u64,
}

/// The counters a position and an ETA are computed from, copied at one instant. A fixed-size
/// value: computing from it never touches the queue, however long the queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlook {
    /// The instant this outlook describes.
    pub now: Instant,
    pub interval: Duration,
    /// The earliest instant the head batch can be released, never before `now`; `None` when
    /// nothing is queued. While a batch is in flight this assumes it completes within the
    /// interval: if it does not, the real slot is later.
    pub next_release: Option<Instant>,
    submitted: [u64; LEVELS],
    released: [u64; LEVELS],
    /// Interrupted batches waiting to run again, per level: ahead of every level.
    reruns: [u64; LEVELS],
    /// Retries whose backoff has ended, per level: ahead of every first release of theirs.
    ready_retries: [u64; LEVELS],
    /// The end of the upstream's pause, while it lasts: nothing goes before it, retries included.
    pub paused_until: Option<Instant>,
}

impl Outlook {
    /// Batches of `priority` waiting to be released: reruns, retries whose backoff has ended
    /// and first releases (retries still in their backoff aside).
    pub(crate) fn queued(&self, priority: Priority) -> u64 {
        let l = level(priority);
        self.reruns[l] + self.waiting_at(l)
    }

    /// Batches waiting to be released, all priorities: the sum of [`Outlook::queued`].
    pub(crate) fn queued_total(&self) -> u64 {
        Priority::ALL.into_iter().map(|p| self.queued(p)).sum()
    }

    fn queued_at(&self, level: usize) -> u64 {
        self.submitted[level] - self.released[level]
    }

    /// Batches of a level that go before its first queued one: first releases and retries.
    fn waiting_at(&self, level: usize) -> u64 {
        self.queued_at(level) + self.ready_retries[level]
    }

    /// How many batches are released before batch `index` of the run of `priority` whose first
    /// batch has level index `first`, if nothing new arrives; `None` if, as of this outlook,
    /// that batch is already released or not yet submitted.
    ///
    /// Why this is exact, in O(1): the batches released before it are (a) every queued batch of a
    /// higher priority, all of which go first, plus (b) the queued batches of its own priority
    /// with a smaller level index, and nothing of a lower priority. A level releases in level
    /// index order, so its released batches are exactly indexes `0..released`, and its queued
    /// ones below `n = first + index` are `released..n`: `n - released` of them. The batch in
    /// flight was released already and is not counted; it shows in `next_release`.
    ///
    /// Retries: one whose backoff has ended goes before every first release of its priority
    /// (they all arrived after it) and behind higher priorities, so it counts in (a) for lower
    /// levels and ahead of (b) for its own: one more counter per level. A retry still in its
    /// backoff is not counted: when its backoff ends it pushes every queued batch of its
    /// priority and below back by one, which only moves positions (and ETAs) later.
    pub(crate) fn position(&self, priority: Priority, first: u64, index: u32) -> Option<u64> {
        let l = level(priority);
        let n = first.wrapping_add(u64::from(index));
        if n < self.released[l] || n >= self.submitted[l] {
            return None;
        }
        let higher: u64 = self.reruns.iter().sum::<u64>() + (0..l).map(|h| self.waiting_at(h)).sum::<u64>();
        Some(higher + self.ready_retries[l] + n - self.released[l])
    }

    /// When the batch at `position` is expected to be released: one interval per batch ahead of
    /// it after the next free slot. Exact if nothing new arrives, no release fails and every
    /// batch completes within the interval, its first call answered at once; otherwise the
    /// earliest possible, and later outlooks only move it later (a pause moves the next free
    /// slot, and every ETA with it, to the pause's end).
    pub(crate) fn eta(&self, position: u64) -> Option<Instant> {
        let wait = self.interval.checked_mul(u32::try_from(position).ok()?)?;
        self.next_release?.checked_add(wait)
    }

    /// When the last queued batch is expected to be released; `None` when nothing is queued.
    pub fn drained_at(&self) -> Option<Instant> {
        self.queued_total().checked_sub(1).and_then(|last| self.eta(last))
    }
}

impl<B: Clone> Scheduler<B> {
    pub(crate) fn new(interval: Duration) -> Scheduler<B> {
        Scheduler {
            interval,
            heap: BinaryHeap::new(),
            arrivals: 0,
            arrived: Default::default(),
            submitted: [0; LEVELS],
            released: [0; LEVELS],
            reruns: [0; LEVELS],
            ready_retries: [0; LEVELS],
            backing_off: BinaryHeap::new(),
            in_flight: None,
            last_release: None,
            last_completion: None,
            last_run: None,
            last_answer: None,
            paused_until: None,
            waiting_since: None,
            touches: Cell::new(0),
        }
    }

    /// Queues a run of `len` batches behind every batch of its priority submitted before it, and
    /// returns the level index of its first batch (see [`Outlook::position`]). The queue submits
    /// with [`Scheduler::submit_from`], giving the acceptance time.
    #[cfg(test)]
    pub(crate) fn submit(&mut self, priority: Priority, run: B, len: u32, now: Instant) -> u64 {
        self.submit_from(priority, run, 0, len, now, now)
    }

    /// Queues a run of `len` batches whose batches before `first` already went (a run restored
    /// after a restart), which `arrived` earlier (when it was accepted): how long it has waited
    /// counts from then (never before a run submitted ahead of it). The level index returned is the one
    /// batch 0 would have had (it may wrap below zero), so that `first + index` stays right for
    /// the batches queued.
    pub(crate) fn submit_from(
        &mut self,
        priority: Priority,
        run: B,
        first: u32,
        len: u32,
        arrived: Instant,
        now: Instant,
    ) -> u64 {
        let l = level(priority);
        let start = self.submitted[l];
        if first >= len {
            return start.wrapping_sub(u64::from(first));
        }
        self.note_arrival(now);
        self.push(false, priority, run, first, len);
        self.submitted[l] += u64::from(len - first);
        let end = self.submitted[l];
        let arrived = self.arrived[l].back().map_or(arrived, |&(_, last)| arrived.max(last));
        match self.arrived[l].back_mut() {
            Some((last_end, at)) if *at == arrived => *last_end = end,
            _ => self.arrived[l].push_back((end, arrived)),
        }
        start.wrapping_sub(u64::from(first))
    }

    /// Puts batch `index` of `run` ahead of everything queued: it was in flight when the
    /// service stopped, and runs again first.
    pub(crate) fn rerun(&mut self, priority: Priority, run: B, index: u32, now: Instant) {
        self.note_arrival(now);
        self.push(true, priority, run, index, index + 1);
        self.reruns[level(priority)] += 1;
    }

    /// Puts batch `index` of `run` back to wait out a backoff until `ready_at`: it was waiting
    /// for a retry when the service stopped. It keeps its place among retries by the order of
    /// these calls, all before any new work.
    pub(crate) fn restore_retry(&mut self, priority: Priority, run: B, index: u32, ready_at: Instant) {
        let arrival = self.next_arrival();
        self.backing_off.push(Reverse(Backoff { ready_at, arrival, index, priority, run }));
    }

    fn next_arrival(&mut self) -> u64 {
        self.arrivals += 1;
        self.arrivals - 1
    }

    fn push(&mut self, rerun: bool, priority: Priority, run: B, next: u32, len: u32) {
        let arrival = Reverse(self.next_arrival());
        self.touch();
        let rank = Rank { rerun, priority, retry: false, arrival, index: Reverse(0) };
        self.heap.push(Entry { rank, run, next, len });
    }

    /// Releases nothing before `until` (kept if a pause already runs longer).
    pub(crate) fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
    }

    /// Retries waiting out their backoff (not in [`Scheduler::queued`]).
    pub(crate) fn backing_off(&self) -> usize {
        self.backing_off.len()
    }

    /// Moves every retry whose backoff is over by `now` into the heap, the soonest first. One
    /// that makes the queue non-empty counts as arriving when its backoff ended.
    fn promote(&mut self, now: Instant) {
        while self.backing_off.peek().is_some_and(|Reverse(b)| b.ready_at <= now) {
            let Reverse(b) = self.backing_off.pop().expect("peeked");
            if self.queued() == 0 {
                self.waiting_since = Some(b.ready_at);
            }
            self.touch();
            let rank = Rank {
                rerun: false,
                priority: b.priority,
                retry: true,
                arrival: Reverse(b.arrival),
                index: Reverse(b.index),
            };
            self.heap.push(Entry { rank, run: b.run, next: b.index, len: b.index + 1 });
            self.ready_retries[level(b.priority)] += 1;
        }
    }

    fn next_ready(&self) -> Option<Instant> {
        self.backing_off.peek().map(|Reverse(b)| b.ready_at)
    }

    /// Restores the time of the last release before a restart, so that the interval holds
    /// across it.
    pub(crate) fn restore_last_release(&mut self, at: Instant) {
        self.last_release = Some(self.last_release.map_or(at, |t| t.max(at)));
    }

    /// Sets when the batch released last had its first answer, at the latest, after a restart.
    pub(crate) fn restore_first_answer(&mut self, at: Instant) {
        self.last_answer = Some(self.last_answer.map_or(at, |t| t.max(at)));
    }

    fn note_arrival(&mut self, now: Instant) {
        if self.queued() == 0 {
            self.waiting_since = Some(now);
        }
    }

    /// Decides what to do at `now`; on `Release` the batch leaves the queue and is in flight.
    /// Retries whose backoff is over enter the queue first.
    pub(crate) fn poll(&mut self, now: Instant) -> Poll<B> {
        self.promote(now);
        if self.in_flight.is_some() {
            return Poll::Busy;
        }
        if self.heap.is_empty() {
            return self.next_ready().map_or(Poll::Idle, Poll::WaitUntil);
        }
        let due = self.earliest_release();
        if now < due {
            // Woken when a backoff ends too, so the retry counts in positions from then on.
            return Poll::WaitUntil(self.next_ready().map_or(due, |ready| ready.min(due)));
        }
        let (run, index, rank) = self.take_head();
        if rank.rerun {
            self.reruns[level(rank.priority)] -= 1;
        } else if rank.retry {
            self.ready_retries[level(rank.priority)] -= 1;
        } else {
            self.note_release(level(rank.priority));
        }
        let arrival = rank.arrival.0;
        self.in_flight = Some(InFlight { run: run.clone(), index, priority: rank.priority, at: now, arrival });
        self.last_release = Some(now);
        self.waiting_since = if self.queued() == 0 { None } else { Some(now) };
        Poll::Release { run, index, due }
    }

    /// Takes the next batch of the head run; the run leaves the heap with its last batch. Its
    /// rank does not change, so the heap stays in order without moving anything.
    fn take_head(&mut self) -> (B, u32, Rank) {
        self.touch();
        let mut head = self.heap.peek_mut().expect("checked that something is queued");
        let (index, rank) = (head.next, head.rank);
        head.next += 1;
        if head.next < head.len {
            (head.run.clone(), index, rank)
        } else {
            (PeekMut::pop(head).run, index, rank)
        }
    }

    fn note_release(&mut self, l: usize) {
        self.released[l] += 1;
        let released = self.released[l];
        while self.arrived[l].front().is_some_and(|&(end, _)| end <= released) {
            self.arrived[l].pop_front();
        }
    }

    /// Records that the batch in flight finished at `now`, with nothing to retry.
    #[cfg(test)]
    pub(crate) fn complete(&mut self, now: Instant) {
        self.finish(now, Finish::default());
    }

    /// Records that the release in flight ended at `now`, as `finish` says: when its first call
    /// was answered, and whether the batch waits for another release.
    pub(crate) fn finish(&mut self, now: Instant, finish: Finish) {
        let in_flight = self.in_flight.take();
        self.last_completion = Some(now);
        self.last_run = in_flight.as_ref().map(|f| now.saturating_duration_since(f.at));
        self.last_answer = finish.first_answer;
        if let Some(at) = finish.started_late {
            self.restore_last_release(at);
        }
        if let (Some(f), Some(ready_at)) = (in_flight, finish.retry_at) {
            let backoff = Backoff { ready_at, arrival: f.arrival, index: f.index, priority: f.priority, run: f.run };
            self.backing_off.push(Reverse(backoff));
        }
    }

    /// Batches waiting to be released, retries whose backoff has ended included (the one in
    /// flight and those still backing off are not counted).
    pub(crate) fn queued(&self) -> usize {
        (0..LEVELS).map(|l| self.reruns[l] + self.queued_at(l) + self.ready_retries[l]).sum::<u64>() as usize
    }

    fn queued_at(&self, l: usize) -> u64 {
        self.submitted[l] - self.released[l]
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The batch in flight, if any.
    pub(crate) fn in_flight_batch(&self) -> Option<&InFlight<B>> {
        self.in_flight.as_ref()
    }

    /// The counters positions and ETAs are computed from, at `now`. O(1): reads no queued run.
    pub(crate) fn outlook(&self, now: Instant) -> Outlook {
        let next_release = (self.queued() > 0).then(|| self.earliest_release().max(now));
        Outlook {
            now,
            interval: self.interval,
            next_release,
            submitted: self.submitted,
            released: self.released,
            reruns: self.reruns,
            ready_retries: self.ready_retries,
            paused_until: self.paused_until.filter(|&t| t > now),
        }
    }

    /// When the oldest batch of `priority` still waiting was submitted (reruns aside). O(1).
    pub(crate) fn oldest_waiting(&self, priority: Priority) -> Option<Instant> {
        self.arrived[level(priority)].front().map(|&(_, at)| at)
    }

    /// How many times a queued run has been read or written so far. Lets tests show that a
    /// lookup's cost does not depend on the length of the queue.
    #[cfg(test)]
    pub(crate) fn touches(&self) -> u64 {
        self.touches.get()
    }

    fn touch(&self) {
        self.touches.set(self.touches.get() + 1);
    }

    /// When the next release can go if nothing new arrives, for a person to see: the head's slot
    /// or, with only retries waiting out a backoff, the first one's end (nor before the slot or
    /// a pause). `None` while a batch is in flight (when it ends decides) or nothing waits.
    pub(crate) fn next_release(&self, now: Instant) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        if self.queued() > 0 {
            return Some(self.earliest_release().max(now));
        }
        let ready = self.next_ready()?;
        Some(self.not_before().map_or(ready, |t| t.max(ready)).max(now))
    }

    /// How long a release takes to make room for the next, as of `now`: the interval, or
    /// longer if the last batch ran longer (the next waits for it), or the one in flight has.
    pub(crate) fn period(&self, now: Instant) -> Duration {
        let running = self.in_flight.as_ref().map(|f| now.saturating_duration_since(f.at));
        [self.last_run, running].into_iter().flatten().fold(self.interval, Duration::max)
    }

    /// The pacing rule (the type's doc): [`Self::not_before`]'s terms and the queue's own wait.
    fn earliest_release(&self) -> Instant {
        [self.not_before(), self.waiting_since]
            .into_iter()
            .flatten()
            .max()
            .expect("waiting_since is set while the queue is non-empty")
    }

    /// The pacing rule's terms but the queue's own wait: the last release and first answer
    /// plus the interval, the last completion, the upstream's pause.
    fn not_before(&self) -> Option<Instant> {
        let after_interval = self.last_release.map(|t| t + self.interval);
        let after_answer = self.last_answer.map(|t| t + self.interval);
        [after_interval, self.last_completion, after_answer, self.paused_until].into_iter().flatten().max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Runs a script of `;`-separated steps against a scheduler with a 5 s interval.
    ///
    /// Steps (times in seconds from an origin): `submit NAME PRIO [BATCHES] @T`, `complete @T`,
    /// `complete @T first T1` (its first call answered at T1), `retry @T until T2` (the release
    /// ended at T with ids to retry from T2; may also say `first T1`), `pause T`,
    /// `poll @T -> NAME[.INDEX]`, `poll @T -> wait T2`, `poll @T -> busy`, `poll @T -> idle`,
    /// `eta NAME[.INDEX] @T -> POSITION T2` (its position and ETA as seen at T),
    /// `eta NAME[.INDEX] @T -> none` (released already).
    /// A release also checks that it was late by nothing: the script polls at the due time.
    #[track_caller]
    fn check(script: &str) {
        check_with(Duration::from_secs(5), script);
    }

    #[track_caller]
    fn check_with(interval: Duration, script: &str) {
        let origin = Instant::now();
        let at = |s: &str| origin + Duration::from_secs_f64(s.parse::<f64>().unwrap());
        let mut sched: Scheduler<String> = Scheduler::new(interval);
        let mut firsts: HashMap<String, (Priority, u64)> = HashMap::new();
        for step in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let words: Vec<&str> = step.split_whitespace().collect();
            match words.as_slice() {
                ["submit", name, prio, t] => {
                    let prio = Priority::parse(prio).unwrap();
                    let first = sched.submit(prio, name.to_string(), 1, at(&t[1..]));
                    firsts.insert(name.to_string(), (prio, first));
                }
                ["submit", name, prio, len, t] => {
                    let (prio, len) = (Priority::parse(prio).unwrap(), len.parse().unwrap());
                    let first = sched.submit(prio, name.to_string(), len, at(&t[1..]));
                    firsts.insert(name.to_string(), (prio, first));
                }
                ["eta", name, t, "->", expected @ ..] => {
                    let (run, index) = name.split_once('.').unwrap_or((name, "0"));
                    let (prio, first) = firsts[run];
                    let outlook = sched.outlook(at(&t[1..]));
                    let position = outlook.position(prio, first, index.parse().unwrap());
                    let got = position.map(|p| (p, outlook.eta(p).unwrap()));
                    let want = match expected {
                        ["none"] => None,
                        [pos, t2] => Some((pos.parse().unwrap(), at(t2))),
                        _ => panic!("bad step {step:?}"),
                    };
                    assert_eq!(got, want, "at step {step:?}");
                }
                ["complete" | "retry", t, rest @ ..] => {
                    let mut finish = Finish::default();
                    for pair in rest.chunks(2) {
                        match pair {
                            ["first", t1] => finish.first_answer = Some(at(t1)),
                            ["until", t2] => finish.retry_at = Some(at(t2)),
                            _ => panic!("bad step {step:?}"),
                        }
                    }
                    assert_eq!(words[0] == "retry", finish.retry_at.is_some(), "bad step {step:?}");
                    sched.finish(at(&t[1..]), finish);
                }
                ["pause", t] => sched.pause(at(t)),
                ["next", t, "->", expected] => {
                    let want = (*expected != "none").then(|| at(expected));
                    assert_eq!(sched.next_release(at(&t[1..])), want, "at step {step:?}");
                }
                ["poll", t, "->", expected @ ..] => {
                    let now = at(&t[1..]);
                    let got = sched.poll(now);
                    let want = match expected {
                        ["idle"] => Poll::Idle,
                        ["busy"] => Poll::Busy,
                        ["wait", t2] => Poll::WaitUntil(at(t2)),
                        [name] => {
                            let (run, index) = name.split_once('.').unwrap_or((name, "0"));
                            Poll::Release { run: run.to_string(), index: index.parse().unwrap(), due: now }
                        }
                        _ => panic!("bad step {step:?}"),
                    };
                    assert_eq!(got, want, "at step {step:?}");
                }
                _ => panic!("bad step {step:?}"),
            }
        }
    }

    #[test]
    fn higher_priority_goes_first() {
        check("submit l LOW @0; submit m MEDIUM @0; submit h HIGH @0; poll @0 -> h; complete @0; poll @5 -> m; complete @5; poll @10 -> l");
        check(
            "submit x LOW @0; poll @0 -> x; complete @1;
             submit l LOW @1; submit m MEDIUM @2; submit h HIGH @3;
             poll @5 -> h; complete @5; poll @10 -> m; complete @10; poll @15 -> l",
        );
    }

    #[test]
    fn the_next_release_for_people() {
        // None while a batch is in flight; the head's slot; a backoff's end, nor before a pause.
        check(
            "next @0 -> none; submit a LOW 2 @0; next @0 -> 0; poll @0 -> a.0; next @1 -> none;
             complete @1; next @1 -> 5; poll @5 -> a.1; retry @6 until 8; next @6 -> 10;
             poll @6 -> wait 8; next @9 -> 10; pause 30; next @9 -> 30",
        );
    }

    #[test]
    fn fifo_within_a_level() {
        check(
            "submit a HIGH @0; submit b HIGH @0; submit c HIGH @0;
             poll @0 -> a; complete @0; poll @5 -> b; complete @5; poll @10 -> c",
        );
    }

    #[test]
    fn worked_example() {
        // MEDIUM [1..5] at T0 and HIGH [6..9] at T4: [1,2,3]@0, [6,7,8]@5, [9]@10, [4,5]@15.
        check(
            "submit m MEDIUM 2 @0; poll @0 -> m.0; complete @0.3;
             submit h HIGH 2 @4;
             poll @4 -> wait 5; poll @4.999 -> wait 5; poll @5 -> h.0; complete @5.3;
             poll @5.3 -> wait 10; poll @10 -> h.1; complete @10.3;
             poll @10.3 -> wait 15; poll @15 -> m.1; complete @15.3; poll @15.3 -> idle",
        );
    }

    #[test]
    fn worked_example_etas_are_the_slots_the_batches_get() {
        // At T0 [4,5] is due at 5; at T4 the HIGH run takes 5 and 10 and pushes [4,5] to 15.
        check(
            "submit m MEDIUM 2 @0; eta m.0 @0 -> 0 0; eta m.1 @0 -> 1 5;
             poll @0 -> m.0; eta m.0 @0 -> none; eta m.1 @0 -> 0 5; complete @0.3;
             submit h HIGH 2 @4; eta h.0 @4 -> 0 5; eta h.1 @4 -> 1 10; eta m.1 @4 -> 2 15;
             poll @5 -> h.0; eta h.1 @5 -> 0 10; eta m.1 @5 -> 1 15; complete @5.3;
             poll @10 -> h.1; eta m.1 @10 -> 0 15; complete @10.3; poll @15 -> m.1; eta m.1 @15 -> none",
        );
    }

    #[test]
    fn each_higher_batch_pushes_lower_etas_back_one_interval() {
        check(
            "submit l LOW 2 @0; submit m MEDIUM 1 @0; poll @0 -> m; complete @1;
             eta l.0 @2 -> 0 5; eta l.1 @2 -> 1 10;
             submit m2 MEDIUM 1 @2; eta m2 @2 -> 0 5; eta l.0 @2 -> 1 10; eta l.1 @2 -> 2 15;
             submit h HIGH 3 @3; eta h.2 @3 -> 2 15; eta m2 @3 -> 3 20; eta l.0 @3 -> 4 25; eta l.1 @3 -> 5 30;
             submit l2 LOW 1 @3; eta l.1 @3 -> 5 30; eta l2 @3 -> 6 35",
        );
    }

    #[test]
    fn an_eta_is_never_in_the_past_and_a_slow_batch_only_delays_it() {
        check(
            "submit a LOW 3 @0; poll @0 -> a.0; eta a.1 @1 -> 0 5; eta a.2 @1 -> 1 10;
             eta a.1 @7 -> 0 7; eta a.2 @7 -> 1 12; complete @8; eta a.1 @8 -> 0 8; poll @8 -> a.1;
             eta a.2 @8 -> 0 13",
        );
    }

    #[test]
    fn an_empty_queue_has_no_next_release() {
        let origin = Instant::now();
        let mut sched = Scheduler::new(Duration::from_secs(5));
        let outlook = sched.outlook(origin);
        assert_eq!((outlook.next_release, outlook.drained_at(), outlook.queued_total()), (None, None, 0));
        sched.submit(Priority::High, 'a', 2, origin);
        let _ = sched.poll(origin);
        let outlook = sched.outlook(origin);
        assert_eq!(outlook.next_release, Some(origin + Duration::from_secs(5)));
        assert_eq!(outlook.drained_at(), outlook.next_release);
    }

    /// The cost the issue asks about: a status lookup copies a fixed set of counters and does
    /// arithmetic on them, so it reads no queued run however many there are.
    #[test]
    fn a_position_costs_the_same_with_a_million_batches_queued_as_with_ten() {
        let interval = Duration::from_secs(5);
        let mut touches_per_lookup = Vec::new();
        for n in [10u64, 1_000_000] {
            let origin = Instant::now();
            let mut sched = Scheduler::new(interval);
            // One run per batch, the worst case for anything that walks the queue.
            let firsts: Vec<u64> = (0..n).map(|i| sched.submit(Priority::Low, i, 1, origin)).collect();
            sched.submit(Priority::High, n, 1, origin);
            assert_eq!(sched.touches(), n + 1, "one touch per submit");
            let before = sched.touches();
            let outlook = sched.outlook(origin);
            let position = outlook.position(Priority::Low, firsts[n as usize - 1], 0);
            let eta = position.and_then(|p| outlook.eta(p));
            touches_per_lookup.push(sched.touches() - before);
            assert_eq!(position, Some(n), "behind the HIGH batch and the other LOW ones");
            assert_eq!(eta, Some(origin + interval * n as u32));
        }
        assert_eq!(touches_per_lookup, [0, 0]);
    }

    #[test]
    fn a_run_is_released_in_order_and_overtaken_only_by_higher_priority() {
        check(
            "submit a MEDIUM 3 @0; submit b MEDIUM 1 @0; submit c LOW 1 @0;
             poll @0 -> a.0; complete @0; poll @5 -> a.1; complete @5;
             submit h HIGH 1 @6; poll @10 -> h; complete @10;
             poll @15 -> a.2; complete @15; poll @20 -> b; complete @20; poll @25 -> c",
        );
    }

    #[test]
    fn processing_shorter_than_the_interval_keeps_a_fixed_rate() {
        check(
            "submit a LOW @0; submit b LOW @0; submit c LOW @0;
             poll @0 -> a; poll @4.9 -> busy; complete @4.9; poll @4.9 -> wait 5;
             poll @5 -> b; complete @9.99; poll @10 -> c",
        );
    }

    #[test]
    fn a_batch_longer_than_the_interval_is_waited_for() {
        check(
            "submit a LOW @0; submit b LOW @0;
             poll @0 -> a; poll @5 -> busy; poll @6.9 -> busy; complete @7; poll @7 -> b; complete @7.1;
             submit c LOW @7.1; poll @7.1 -> wait 12; poll @12 -> c",
        );
    }

    #[test]
    fn idle_then_burst_goes_at_once_then_paces() {
        check(
            "submit a LOW @0; poll @0 -> a; complete @0.1; poll @3 -> idle;
             submit b HIGH @20; submit c HIGH @20; submit d HIGH @20;
             poll @20 -> b; poll @20 -> busy; complete @20.1; poll @20.1 -> wait 25;
             poll @25 -> c; complete @25.1; poll @30 -> d",
        );
    }

    #[test]
    fn no_burst_right_after_a_short_idle() {
        check("submit a LOW @0; poll @0 -> a; complete @0.1; poll @1 -> idle; submit b LOW @2; poll @2 -> wait 5; poll @5 -> b");
    }

    #[test]
    fn first_batch_goes_at_once() {
        check("poll @0 -> idle; submit a MEDIUM @3; poll @3 -> a");
    }

    #[test]
    fn a_retry_waits_out_its_backoff_then_goes_before_its_priority_behind_higher_ones() {
        check(
            "submit a MEDIUM @0; poll @0 -> a; retry @1 until 7;
             submit b MEDIUM @2; submit l LOW @2; submit h HIGH @2;
             eta h @2 -> 0 5; eta b @2 -> 1 10; eta l @2 -> 2 15;
             poll @2 -> wait 5; poll @5 -> h; complete @5.1;
             poll @5.1 -> wait 7; eta b @6 -> 0 10; poll @7 -> wait 10;
             eta b @7 -> 1 15; eta l @7 -> 2 20;
             poll @10 -> a; complete @10.1; poll @15 -> b; complete @15.1; poll @20 -> l",
        );
    }

    #[test]
    fn a_retry_alone_goes_when_its_backoff_ends_and_the_interval_allows() {
        check(
            "submit a LOW @0; poll @0 -> a; retry @1 until 3; poll @1 -> wait 3; poll @3 -> wait 5;
             poll @5 -> a; retry @6 until 20; poll @6 -> wait 20; poll @20 -> a; complete @20.1; poll @21 -> idle",
        );
    }

    #[test]
    fn retries_of_one_priority_go_in_arrival_order_then_batch_order() {
        check(
            "submit a LOW @0; submit b LOW @0; submit c LOW @0;
             poll @0 -> a; retry @0 until 14; poll @5 -> b; retry @5 until 12; poll @10 -> c; complete @10;
             poll @10 -> wait 12; poll @12 -> wait 14; poll @14 -> wait 15; poll @15 -> a; complete @15;
             poll @20 -> b; complete @20; poll @20 -> idle",
        );
        check(
            "submit r LOW 2 @0; poll @0 -> r.0; retry @0 until 30; poll @5 -> r.1; retry @5 until 30;
             poll @30 -> r.0; complete @30; poll @35 -> r.1",
        );
    }

    #[test]
    fn the_next_slot_is_an_interval_after_the_first_answer() {
        check(
            "submit a LOW @0; submit b LOW @0; submit c LOW @0; poll @0 -> a; complete @1 first 0.5;
             eta b @1 -> 0 5.5; poll @1 -> wait 5.5; poll @5.5 -> b; complete @7 first 7; poll @7 -> wait 12;
             poll @12 -> c",
        );
    }

    #[test]
    fn a_pause_holds_every_release_and_moves_every_eta() {
        check(
            "submit a LOW @0; submit b LOW @0; submit c LOW @0; poll @0 -> a; complete @1;
             eta b @1 -> 0 5; eta c @1 -> 1 10; pause 30; pause 20;
             eta b @1 -> 0 30; eta c @1 -> 1 35; poll @1 -> wait 30; poll @29.9 -> wait 30; poll @30 -> b;
             complete @30; poll @35 -> c",
        );
    }

    #[test]
    fn a_restored_retry_waits_for_its_instant_and_keeps_its_place() {
        let origin = Instant::now();
        let secs = |s: u64| origin + Duration::from_secs(s);
        let mut sched = Scheduler::new(Duration::from_secs(5));
        sched.restore_retry(Priority::Low, 'x', 1, secs(8));
        sched.restore_retry(Priority::Low, 'y', 0, secs(8));
        sched.submit(Priority::Low, 'n', 1, secs(0));
        assert_eq!((sched.backing_off(), sched.queued()), (2, 1));
        assert!(matches!(sched.poll(secs(0)), Poll::Release { run: 'n', .. }));
        sched.complete(secs(1));
        assert_eq!(sched.poll(secs(1)), Poll::WaitUntil(secs(8)));
        assert_eq!(sched.poll(secs(8)), Poll::Release { run: 'x', index: 1, due: secs(8) });
        sched.complete(secs(8));
        assert_eq!(sched.poll(secs(13)), Poll::Release { run: 'y', index: 0, due: secs(13) });
    }

    #[test]
    fn a_late_poll_reports_the_due_instant() {
        let origin = Instant::now();
        let mut sched = Scheduler::new(Duration::from_secs(5));
        sched.submit(Priority::Low, 'a', 1, origin);
        sched.submit(Priority::Low, 'b', 1, origin);
        assert!(matches!(sched.poll(origin), Poll::Release { run: 'a', .. }));
        sched.complete(origin + Duration::from_secs(1));
        let late = origin + Duration::from_millis(5_002);
        let due = origin + Duration::from_secs(5);
        assert_eq!(sched.poll(late), Poll::Release { run: 'b', index: 0, due });
    }

    #[test]
    fn a_restored_run_has_waited_since_it_arrived_but_goes_no_earlier() {
        let origin = Instant::now();
        let mut sched = Scheduler::new(Duration::from_secs(5));
        let (hour_ago, minute_ago) = (origin - Duration::from_secs(3600), origin - Duration::from_secs(60));
        sched.submit_from(Priority::Low, 'a', 0, 2, minute_ago, origin);
        // Restored in acceptance order: an earlier time on a later run (a clock step) is clamped.
        sched.submit_from(Priority::Low, 'b', 0, 1, hour_ago, origin);
        assert_eq!(sched.oldest_waiting(Priority::Low), Some(minute_ago));
        assert_eq!(sched.poll(origin), Poll::Release { run: 'a', index: 0, due: origin });
        sched.complete(origin);
        assert_eq!(sched.oldest_waiting(Priority::Low), Some(minute_ago), "a's second batch still waits");
    }

    #[test]
    fn a_rerun_goes_before_everything_and_restored_runs_resume_where_they_were() {
        let origin = Instant::now();
        let mut sched = Scheduler::new(Duration::from_secs(5));
        sched.restore_last_release(origin - Duration::from_secs(2));
        sched.submit(Priority::High, 'h', 1, origin);
        let l = sched.submit_from(Priority::Low, 'l', 2, 4, origin, origin);
        sched.submit_from(Priority::Low, 'x', 3, 3, origin, origin);
        sched.rerun(Priority::Low, 'l', 1, origin);
        assert_eq!(sched.queued(), 4);
        // Positions count the rerun first, and a restored run's batches from where it resumes.
        let outlook = sched.outlook(origin);
        assert_eq!(outlook.position(Priority::Low, l, 2), Some(2));
        assert_eq!(outlook.position(Priority::Low, l, 3), Some(3));
        assert_eq!(outlook.position(Priority::Low, l, 1), None);
        // The interval holds across the restart: the last release was 2 s before it.
        assert_eq!(sched.poll(origin), Poll::WaitUntil(origin + Duration::from_secs(3)));
        let mut order = Vec::new();
        let mut now = origin + Duration::from_secs(3);
        while let Poll::Release { run, index, .. } = sched.poll(now) {
            order.push((run, index));
            sched.complete(now);
            now += Duration::from_secs(5);
        }
        assert_eq!(order, [('l', 1), ('h', 0), ('l', 2), ('l', 3)]);
    }

    #[test]
    fn counts_what_is_queued_and_in_flight() {
        let origin = Instant::now();
        let mut sched = Scheduler::new(Duration::from_millis(10));
        sched.submit(Priority::Medium, 'a', 3, origin);
        sched.submit(Priority::Medium, 'b', 0, origin);
        sched.submit(Priority::Medium, 'c', 1, origin);
        assert_eq!((sched.queued(), sched.in_flight()), (4, false));
        let _ = sched.poll(origin);
        assert_eq!((sched.queued(), sched.in_flight()), (3, true));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn prio(i: u8) -> Priority {
            Priority::ALL[usize::from(i % 3)]
        }

        type Key = (usize, u32);

        /// What the releases of one stretch of a simulation come to: the first call answered
        /// `answer` after the release (at most the batch's work), and maybe a retry after
        /// `backoff` and a pause of `pause` from the completion.
        #[derive(Debug, Clone, Copy, Default)]
        struct Outcome {
            answer: Duration,
            retry: Option<Duration>,
            pause: Option<Duration>,
        }

        fn outcome(kind: u8, backoff_ms: u64, answer_ms: u64) -> Outcome {
            let answer = Duration::from_millis(answer_ms);
            let wait = Some(Duration::from_millis(backoff_ms));
            match kind {
                0 => Outcome { answer, retry: wait, pause: None },
                1 => Outcome { answer, retry: wait, pause: wait },
                2 => Outcome { answer, retry: None, pause: wait },
                _ => Outcome { answer, retry: None, pause: None },
            }
        }

        /// The brute-force order of waiting batches: (priority, retry, arrival, index).
        fn brute_order(a: &(Priority, bool, usize, u32), b: &(Priority, bool, usize, u32)) -> Ordering {
            b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3))
        }

        /// An event-by-event simulation that checks every queued batch's position and ETA after
        /// every event against a brute-force model of the queue, retries and pauses included.
        struct Sim {
            interval: Duration,
            now: Instant,
            sched: Scheduler<usize>,
            /// Per run, in arrival order: its priority and the level index of its first batch.
            runs: Vec<(Priority, u64)>,
            /// Every batch waiting for its first release as (priority, run, index).
            queued: Vec<(Priority, usize, u32)>,
            /// Retries whose backoff has ended (as the scheduler last looked), and those still
            /// in it with the instant it ends.
            retries: Vec<(Priority, usize, u32)>,
            backoffs: Vec<(Instant, Priority, usize, u32)>,
            /// The latest ETA seen for each batch waiting for its first release.
            etas: HashMap<Key, Instant>,
            /// The batch in flight, when it was released and when it completes.
            in_flight: Option<(Priority, usize, u32, Instant)>,
            busy_until: Option<Instant>,
        }

        impl Sim {
            fn new() -> Sim {
                let interval = Duration::from_secs(5);
                let (now, sched) = (Instant::now(), Scheduler::new(interval));
                Sim {
                    interval,
                    now,
                    sched,
                    runs: vec![],
                    queued: vec![],
                    retries: vec![],
                    backoffs: vec![],
                    etas: HashMap::new(),
                    in_flight: None,
                    busy_until: None,
                }
            }

            /// Positions are the brute-force release order, and no ETA moved earlier.
            fn check(&mut self) -> Result<(), TestCaseError> {
                let outlook = self.sched.outlook(self.now);
                let mut order: Vec<(Priority, bool, usize, u32)> =
                    self.queued.iter().map(|&(p, r, j)| (p, false, r, j)).collect();
                order.extend(self.retries.iter().map(|&(p, r, j)| (p, true, r, j)));
                order.sort_by(brute_order);
                prop_assert_eq!(outlook.queued_total(), order.len() as u64);
                for (rank, &(priority, retry, run, index)) in order.iter().enumerate() {
                    if retry {
                        continue;
                    }
                    let position = outlook.position(priority, self.runs[run].1, index);
                    prop_assert_eq!(position, Some(rank as u64));
                    let eta = outlook.eta(rank as u64).unwrap();
                    prop_assert!(eta >= self.now, "an ETA in the past");
                    if let Some(old) = self.etas.insert((run, index), eta) {
                        prop_assert!(eta >= old, "the ETA of {:?} moved earlier", (run, index));
                    }
                }
                Ok(())
            }

            /// Submits a run at `now`; each batch of it pushes every lower batch back one interval.
            fn submit(&mut self, priority: Priority, len: u32) -> Result<(), TestCaseError> {
                self.check()?;
                let before = self.etas.clone();
                let run = self.runs.len();
                let first = self.sched.submit(priority, run, len, self.now);
                self.runs.push((priority, first));
                self.queued.extend((0..len).map(|j| (priority, run, j)));
                self.check()?;
                for &(p, r, j) in self.queued.iter().filter(|q| q.1 != run) {
                    let want = if p < priority { before[&(r, j)] + self.interval * len } else { before[&(r, j)] };
                    prop_assert_eq!(self.etas[&(r, j)], want, "batch {:?} after a {} run", (r, j), priority);
                }
                Ok(())
            }

            /// What the scheduler does at the top of a poll: backoffs over by now become retries.
            fn promote(&mut self) {
                self.backoffs.sort();
                let over = self.backoffs.iter().take_while(|b| b.0 <= self.now).count();
                self.retries.extend(self.backoffs.drain(..over).map(|(_, p, r, j)| (p, r, j)));
            }

            /// Runs the pacer until `until`; each release takes `work` and ends as `outcome` says.
            /// Returns the releases.
            fn run_until(
                &mut self,
                until: Instant,
                work: Duration,
                outcome: Outcome,
            ) -> Result<Vec<(Key, Instant)>, TestCaseError> {
                let mut releases = vec![];
                loop {
                    self.promote();
                    match self.sched.poll(self.now) {
                        Poll::Release { run, index, due } => {
                            prop_assert_eq!(due, self.now, "released late in a simulation");
                            let priority = self.runs[run].0;
                            if let Some(at) = self.retries.iter().position(|q| (q.1, q.2) == (run, index)) {
                                self.retries.remove(at);
                            } else {
                                let eta = self.etas.remove(&(run, index)).unwrap();
                                prop_assert!(self.now >= eta, "{:?} went before its ETA", (run, index));
                                self.queued.retain(|q| (q.1, q.2) != (run, index));
                            }
                            self.in_flight = Some((priority, run, index, self.now));
                            self.busy_until = Some(self.now + work);
                            releases.push(((run, index), self.now));
                        }
                        Poll::WaitUntil(t) if t <= until => self.now = t,
                        Poll::Busy | Poll::Idle | Poll::WaitUntil(_) => match self.busy_until {
                            Some(t) if t <= until => {
                                self.now = self.now.max(t);
                                self.finish(work, outcome);
                            }
                            _ => break,
                        },
                    }
                    self.check()?;
                }
                self.now = self.now.max(until);
                self.check()?;
                Ok(releases)
            }

            fn finish(&mut self, work: Duration, outcome: Outcome) {
                let (priority, run, index, released) = self.in_flight.take().unwrap();
                let retry_at = outcome.retry.map(|b| self.now + b);
                let first_answer = Some(released + outcome.answer.min(work));
                self.sched.finish(self.now, Finish { first_answer, retry_at, started_late: None });
                if let Some(at) = retry_at {
                    self.backoffs.push((at, priority, run, index));
                }
                if let Some(pause) = outcome.pause {
                    self.sched.pause(self.now + pause);
                }
                self.busy_until = None;
            }
        }

        proptest! {
            /// Over random arrivals, processing times (some longer than the interval), first
            /// answers, failed releases retried after random backoffs and pauses: every position
            /// is the batch's place in the brute-force release order (retries whose backoff has
            /// ended first in their priority), no ETA ever moves earlier, no batch goes before its
            /// ETA, a HIGH run pushes lower batches back one interval per batch, and once
            /// arrivals and failures stop, every backoff has ended and the API keeps up, every
            /// batch goes exactly at its ETA.
            #[test]
            fn etas_only_move_later_and_are_exact_once_arrivals_stop(
                steps in proptest::collection::vec(
                    (0u8..3, 1u32..4, 0u64..12_000, 0u64..9_000, 0u8..8, 0u64..15_000, 0u64..3_000),
                    1..40,
                )
            ) {
                let mut sim = Sim::new();
                for (p, len, gap_ms, work_ms, kind, backoff_ms, answer_ms) in steps {
                    let next_arrival = sim.now + Duration::from_millis(gap_ms);
                    let outcome = outcome(kind, backoff_ms, answer_ms);
                    sim.run_until(next_arrival, Duration::from_millis(work_ms), outcome)?;
                    sim.submit(prio(p), len)?;
                }
                // Let a slow batch in flight finish and every backoff end; from then on the API
                // keeps up, answers at once and nothing fails.
                let (quick, fine) = (Duration::from_secs(1), Outcome::default());
                if let Some(t) = sim.busy_until {
                    sim.run_until(t, quick, fine)?;
                }
                while let Some(last) = sim.backoffs.iter().map(|b| b.0).max() {
                    sim.run_until(last, quick, fine)?;
                }
                let promised: HashMap<Key, Instant> =
                    sim.queued.iter().map(|&(_, r, j)| ((r, j), sim.etas[&(r, j)])).collect();
                let far = sim.now + Duration::from_secs(100_000);
                for (key, at) in sim.run_until(far, quick, fine)? {
                    if let Some(&eta) = promised.get(&key) {
                        prop_assert_eq!(at, eta, "{:?} did not go at its ETA", key);
                    }
                }
                prop_assert!(sim.queued.is_empty() && sim.retries.is_empty());
            }

            /// Over random arrivals, processing times, late polls (a pacer that wakes late),
            /// batches to run again, a last release restored from before a restart, first answers,
            /// failed releases retried after random backoffs and pauses, simulated event by event:
            /// releases are never closer than the interval (the hard rule), never overlap, are due
            /// exactly when the rule says, never go before an answer plus the interval or inside
            /// a pause, always take the best (rerun, priority, retry, arrival, index) batch
            /// waiting, no retry goes before its backoff ends, and each level's oldest waiting
            /// arrival is the model's.
            #[test]
            fn pacing_and_order_hold(
                restored_ago_ms in proptest::option::of(0u64..10_000),
                reruns in proptest::collection::vec(0u8..3, 0..3),
                steps in proptest::collection::vec(
                    (0u8..3, 1u32..4, 0u64..12_000, 0u64..9_000, 0u64..3_000, 0u8..8, 0u64..15_000, 0u64..3_000),
                    1..60,
                )
            ) {
                let interval = Duration::from_secs(5);
                let origin = Instant::now() + Duration::from_secs(60);
                let mut now = origin;
                let mut sched = Scheduler::new(interval);
                // Every waiting batch as (rerun, priority, retry, arrival, index, submitted at).
                type Waiting = (bool, Priority, bool, usize, u32, Instant);
                let mut model: Vec<Waiting> = Vec::new();
                // Retries in their backoff as (ready at, priority, arrival, index).
                let mut backoffs: Vec<(Instant, Priority, usize, u32)> = Vec::new();
                let mut last_release: Option<Instant> = None;
                let mut last_completion: Option<Instant> = None;
                let mut last_answer: Option<Instant> = None;
                let mut paused_until: Option<Instant> = None;
                let mut waiting_since = origin;
                // The batch in flight: (priority, arrival, index, released at, completes at).
                let mut busy: Option<(Priority, usize, u32, Instant, Instant)> = None;
                if let Some(ago) = restored_ago_ms {
                    let at = origin - Duration::from_millis(ago);
                    sched.restore_last_release(at);
                    last_release = Some(at);
                }
                for (arrival, &p) in reruns.iter().enumerate() {
                    sched.rerun(prio(p), arrival, 0, now);
                    model.push((true, prio(p), false, arrival, 0, now));
                }
                for (i, (p, len, gap_ms, work_ms, late_ms, kind, backoff_ms, answer_ms)) in steps.into_iter().enumerate() {
                    let arrival = reruns.len() + i;
                    let next_arrival = now + Duration::from_millis(gap_ms);
                    let outcome = outcome(kind, backoff_ms, answer_ms);
                    let work = Duration::from_millis(work_ms);
                    loop {
                        // What the scheduler does first in a poll.
                        backoffs.sort();
                        let over = backoffs.iter().take_while(|b| b.0 <= now).count();
                        for (ready_at, p, a, j) in backoffs.drain(..over) {
                            if model.is_empty() {
                                waiting_since = ready_at;
                            }
                            model.push((false, p, true, a, j, ready_at));
                        }
                        match sched.poll(now) {
                            Poll::Release { run, index, due } => {
                                let rule = [
                                    last_release.map(|t| t + interval),
                                    last_completion,
                                    Some(waiting_since),
                                    last_answer.map(|t| t + interval),
                                    paused_until,
                                ];
                                prop_assert_eq!(Some(due), rule.into_iter().flatten().max(), "due by the rule");
                                prop_assert!(due <= now);
                                prop_assert!(busy.is_none());
                                if let Some(last) = last_release {
                                    prop_assert!(now - last >= interval, "two releases closer than the interval");
                                }
                                let best = model
                                    .iter()
                                    .copied()
                                    .max_by(|a, b| {
                                        a.0.cmp(&b.0)
                                            .then(a.1.cmp(&b.1))
                                            .then(a.2.cmp(&b.2))
                                            .then(b.3.cmp(&a.3))
                                            .then(b.4.cmp(&a.4))
                                    })
                                    .unwrap();
                                prop_assert_eq!((run, index), (best.3, best.4));
                                model.retain(|m| (m.3, m.4) != (run, index));
                                prop_assert_eq!(sched.queued(), model.len());
                                prop_assert_eq!(sched.backing_off(), backoffs.len());
                                let outlook = sched.outlook(now);
                                for level in Priority::ALL {
                                    let oldest =
                                        model.iter().filter(|m| !m.0 && !m.2 && m.1 == level).map(|m| m.5).min();
                                    prop_assert_eq!(sched.oldest_waiting(level), oldest);
                                    let waiting = model.iter().filter(|m| m.1 == level).count() as u64;
                                    prop_assert_eq!(outlook.queued(level), waiting, "{:?} batches waiting", level);
                                }
                                last_release = Some(now);
                                busy = Some((best.1, run, index, now, now + work));
                            }
                            Poll::WaitUntil(t) if t <= next_arrival => {
                                prop_assert!(t > now);
                                // The pacer may wake late, but never past the next arrival.
                                now = (t + Duration::from_millis(late_ms)).min(next_arrival);
                            }
                            Poll::Busy | Poll::Idle | Poll::WaitUntil(_) => match busy {
                                Some((p, a, j, released, done)) if done <= next_arrival => {
                                    now = now.max(done);
                                    let first_answer = Some(released + outcome.answer.min(work));
                                    let retry_at = outcome.retry.map(|b| now + b);
                                    sched.finish(now, Finish { first_answer, retry_at, started_late: None });
                                    if let Some(ready_at) = retry_at {
                                        backoffs.push((ready_at, p, a, j));
                                    }
                                    if let Some(pause) = outcome.pause {
                                        sched.pause(now + pause);
                                        paused_until = paused_until.max(Some(now + pause));
                                    }
                                    last_completion = Some(now);
                                    last_answer = first_answer;
                                    busy = None;
                                }
                                _ => break,
                            },
                        }
                    }
                    now = next_arrival;
                    if model.is_empty() {
                        waiting_since = now;
                    }
                    sched.submit(prio(p), arrival, len, now);
                    model.extend((0..len).map(|j| (false, prio(p), false, arrival, j, now)));
                }
            }
        }
    }
}
