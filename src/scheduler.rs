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
pub enum Poll<B> {
    /// Release batch `index` of `run` now. `due` is the earliest instant the rule allowed it;
    /// the release is late by `now - due`.
    Release { run: B, index: u32, due: Instant },
    /// The head batch may go at this instant, not before.
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
/// Pacing: the head may be released at `max(previous release + interval, previous completion)`,
/// with at most one batch in flight. So releases are never closer than `interval`, a batch
/// that completes within the interval does not stretch the period, and idle time earns no burst.
///
/// Positions: every batch gets a *level index*, its number among all batches ever submitted at
/// its priority (a run's batches get consecutive ones). Because a level releases in exactly that
/// order, the released batches of a level are its level indexes `0..released`; see
/// [`Outlook::position`] for why that makes a position O(1), whatever the container.
#[derive(Debug)]
pub struct Scheduler<B> {
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
    /// Batches interrupted in flight by a restart, waiting in the heap to run again.
    reruns: u64,
    in_flight: Option<InFlight<B>>,
    last_release: Option<Instant>,
    last_completion: Option<Instant>,
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
    /// Earlier arrivals first.
    arrival: Reverse<u64>,
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
pub struct InFlight<B> {
    pub run: B,
    pub index: u32,
    pub priority: Priority,
    /// When it was released.
    pub at: Instant,
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
    /// Interrupted batches waiting to run again, ahead of every level.
    reruns: u64,
}

impl Outlook {
    /// Batches of `priority` waiting to be released.
    pub fn queued(&self, priority: Priority) -> u64 {
        self.queued_at(level(priority))
    }

    /// Batches waiting to be released, all priorities.
    pub fn queued_total(&self) -> u64 {
        self.reruns + (0..LEVELS).map(|l| self.queued_at(l)).sum::<u64>()
    }

    fn queued_at(&self, level: usize) -> u64 {
        self.submitted[level] - self.released[level]
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
    pub fn position(&self, priority: Priority, first: u64, index: u32) -> Option<u64> {
        let l = level(priority);
        let n = first.wrapping_add(u64::from(index));
        if n < self.released[l] || n >= self.submitted[l] {
            return None;
        }
        let higher: u64 = self.reruns + (0..l).map(|h| self.queued_at(h)).sum::<u64>();
        Some(higher + n - self.released[l])
    }

    /// When the batch at `position` is expected to be released: one interval per batch ahead of
    /// it after the next free slot. Exact if nothing new arrives and every batch completes within
    /// the interval; otherwise the earliest possible, and later outlooks only move it later.
    pub fn eta(&self, position: u64) -> Option<Instant> {
        let wait = self.interval.checked_mul(u32::try_from(position).ok()?)?;
        self.next_release?.checked_add(wait)
    }

    /// When the last queued batch is expected to be released; `None` when nothing is queued.
    pub fn drained_at(&self) -> Option<Instant> {
        self.queued_total().checked_sub(1).and_then(|last| self.eta(last))
    }
}

impl<B: Clone> Scheduler<B> {
    pub fn new(interval: Duration) -> Scheduler<B> {
        Scheduler {
            interval,
            heap: BinaryHeap::new(),
            arrivals: 0,
            arrived: Default::default(),
            submitted: [0; LEVELS],
            released: [0; LEVELS],
            reruns: 0,
            in_flight: None,
            last_release: None,
            last_completion: None,
            waiting_since: None,
            touches: Cell::new(0),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Queues a run of `len` batches behind every batch of its priority submitted before it, and
    /// returns the level index of its first batch (see [`Outlook::position`]).
    pub fn submit(&mut self, priority: Priority, run: B, len: u32, now: Instant) -> u64 {
        self.submit_from(priority, run, 0, len, now)
    }

    /// Like [`Scheduler::submit`] for a run whose batches before `first` already went (a run
    /// restored after a restart). The level index returned is the one batch 0 would have had
    /// (it may wrap below zero), so that `first + index` stays right for the batches queued.
    pub fn submit_from(&mut self, priority: Priority, run: B, first: u32, len: u32, now: Instant) -> u64 {
        let l = level(priority);
        let start = self.submitted[l];
        if first >= len {
            return start.wrapping_sub(u64::from(first));
        }
        self.note_arrival(now);
        self.push(false, priority, run, first, len);
        self.submitted[l] += u64::from(len - first);
        let end = self.submitted[l];
        match self.arrived[l].back_mut() {
            Some((last_end, at)) if *at == now => *last_end = end,
            _ => self.arrived[l].push_back((end, now)),
        }
        start.wrapping_sub(u64::from(first))
    }

    /// Puts batch `index` of `run` ahead of everything queued: it was in flight when the
    /// service stopped, and runs again first.
    pub fn rerun(&mut self, priority: Priority, run: B, index: u32, now: Instant) {
        self.note_arrival(now);
        self.push(true, priority, run, index, index + 1);
        self.reruns += 1;
    }

    fn push(&mut self, rerun: bool, priority: Priority, run: B, next: u32, len: u32) {
        let arrival = Reverse(self.arrivals);
        self.arrivals += 1;
        self.touch();
        self.heap.push(Entry { rank: Rank { rerun, priority, arrival }, run, next, len });
    }

    /// Restores the time of the last release before a restart, so that the interval holds
    /// across it.
    pub fn restore_last_release(&mut self, at: Instant) {
        self.last_release = Some(self.last_release.map_or(at, |t| t.max(at)));
    }

    fn note_arrival(&mut self, now: Instant) {
        if self.queued() == 0 {
            self.waiting_since = Some(now);
        }
    }

    /// Decides what to do at `now`; on `Release` the batch leaves the queue and is in flight.
    pub fn poll(&mut self, now: Instant) -> Poll<B> {
        if self.in_flight.is_some() {
            return Poll::Busy;
        }
        if self.heap.is_empty() {
            return Poll::Idle;
        }
        let due = self.earliest_release();
        if now < due {
            return Poll::WaitUntil(due);
        }
        let (run, index, rank) = self.take_head();
        if rank.rerun {
            self.reruns -= 1;
        } else {
            self.note_release(level(rank.priority));
        }
        self.in_flight = Some(InFlight { run: run.clone(), index, priority: rank.priority, at: now });
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

    /// Records that the batch in flight finished at `now`.
    pub fn complete(&mut self, now: Instant) {
        self.in_flight = None;
        self.last_completion = Some(now);
    }

    /// Batches waiting to be released (the one in flight is not counted).
    pub fn queued(&self) -> usize {
        (self.reruns + (0..LEVELS).map(|l| self.queued_at(l)).sum::<u64>()) as usize
    }

    fn queued_at(&self, l: usize) -> u64 {
        self.submitted[l] - self.released[l]
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The batch in flight, if any.
    pub fn in_flight_batch(&self) -> Option<&InFlight<B>> {
        self.in_flight.as_ref()
    }

    /// The counters positions and ETAs are computed from, at `now`. O(1): reads no queued run.
    pub fn outlook(&self, now: Instant) -> Outlook {
        let next_release = (self.queued() > 0).then(|| self.earliest_release().max(now));
        Outlook {
            now,
            interval: self.interval,
            next_release,
            submitted: self.submitted,
            released: self.released,
            reruns: self.reruns,
        }
    }

    /// When the oldest batch of `priority` still waiting was submitted (reruns aside). O(1).
    pub fn oldest_waiting(&self, priority: Priority) -> Option<Instant> {
        self.arrived[level(priority)].front().map(|&(_, at)| at)
    }

    /// How many times a queued run has been read or written so far. Lets tests show that a
    /// lookup's cost does not depend on the length of the queue.
    pub fn touches(&self) -> u64 {
        self.touches.get()
    }

    fn touch(&self) {
        self.touches.set(self.touches.get() + 1);
    }

    fn earliest_release(&self) -> Instant {
        let after_interval = self.last_release.map(|t| t + self.interval);
        [after_interval, self.last_completion, self.waiting_since]
            .into_iter()
            .flatten()
            .max()
            .expect("waiting_since is set while the queue is non-empty")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Runs a script of `;`-separated steps against a scheduler with a 5 s interval.
    ///
    /// Steps (times in seconds from an origin): `submit NAME PRIO [BATCHES] @T`, `complete @T`,
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
                ["complete", t] => sched.complete(at(&t[1..])),
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
    fn a_rerun_goes_before_everything_and_restored_runs_resume_where_they_were() {
        let origin = Instant::now();
        let mut sched = Scheduler::new(Duration::from_secs(5));
        sched.restore_last_release(origin - Duration::from_secs(2));
        sched.submit(Priority::High, 'h', 1, origin);
        let l = sched.submit_from(Priority::Low, 'l', 2, 4, origin);
        sched.submit_from(Priority::Low, 'x', 3, 3, origin);
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

        /// An event-by-event simulation that checks every queued batch's position and ETA after
        /// every event against a brute-force model of the queue.
        struct Sim {
            interval: Duration,
            now: Instant,
            sched: Scheduler<usize>,
            /// Per run, in arrival order: its priority and the level index of its first batch.
            runs: Vec<(Priority, u64)>,
            /// Every queued batch as (priority, run, index).
            queued: Vec<(Priority, usize, u32)>,
            /// The latest ETA seen for each batch.
            etas: HashMap<Key, Instant>,
            busy_until: Option<Instant>,
        }

        impl Sim {
            fn new() -> Sim {
                let interval = Duration::from_secs(5);
                let (now, sched) = (Instant::now(), Scheduler::new(interval));
                Sim { interval, now, sched, runs: vec![], queued: vec![], etas: HashMap::new(), busy_until: None }
            }

            /// Positions are the brute-force release order, and no ETA moved earlier.
            fn check(&mut self) -> Result<(), TestCaseError> {
                let outlook = self.sched.outlook(self.now);
                let mut order = self.queued.clone();
                order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
                for (rank, &(priority, run, index)) in order.iter().enumerate() {
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

            /// Runs the pacer until `until`; each release takes `work`. Returns the releases.
            fn run_until(&mut self, until: Instant, work: Duration) -> Result<Vec<(Key, Instant)>, TestCaseError> {
                let mut releases = vec![];
                loop {
                    match self.sched.poll(self.now) {
                        Poll::Release { run, index, due } => {
                            prop_assert_eq!(due, self.now, "released late in a simulation");
                            let eta = self.etas[&(run, index)];
                            prop_assert!(self.now >= eta, "{:?} went before its ETA", (run, index));
                            self.queued.retain(|q| (q.1, q.2) != (run, index));
                            self.busy_until = Some(self.now + work);
                            releases.push(((run, index), self.now));
                        }
                        Poll::WaitUntil(t) if t <= until => self.now = t,
                        Poll::Busy | Poll::Idle | Poll::WaitUntil(_) => match self.busy_until {
                            Some(t) if t <= until => {
                                self.now = self.now.max(t);
                                self.sched.complete(self.now);
                                self.busy_until = None;
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
        }

        proptest! {
            /// Over random arrivals and processing times (some longer than the interval): every
            /// position is the batch's place in the real release order, no ETA ever moves
            /// earlier, no batch goes before its ETA, a HIGH run pushes lower batches back one
            /// interval per batch, and once arrivals stop and the API keeps up, every batch goes
            /// exactly at its ETA.
            #[test]
            fn etas_only_move_later_and_are_exact_once_arrivals_stop(
                steps in proptest::collection::vec((0u8..3, 1u32..4, 0u64..12_000, 0u64..9_000), 1..40)
            ) {
                let mut sim = Sim::new();
                for (p, len, gap_ms, work_ms) in steps {
                    let next_arrival = sim.now + Duration::from_millis(gap_ms);
                    sim.run_until(next_arrival, Duration::from_millis(work_ms))?;
                    sim.submit(prio(p), len)?;
                }
                // Let a slow batch in flight finish; from then on the API keeps up.
                let quick = Duration::from_secs(1);
                if let Some(t) = sim.busy_until {
                    sim.run_until(t, quick)?;
                }
                let promised = sim.etas.clone();
                let far = sim.now + Duration::from_secs(10_000);
                for (key, at) in sim.run_until(far, quick)? {
                    prop_assert_eq!(at, promised[&key], "{:?} did not go at its ETA", key);
                }
                prop_assert!(sim.queued.is_empty());
            }

            /// Over random arrivals, processing times, late polls (a pacer that wakes late),
            /// batches to run again and a last release restored from before a restart, simulated
            /// event by event: releases are never closer than the interval (the hard rule), never
            /// overlap, are due exactly when the rule says, always take the best (rerun, priority,
            /// arrival, index) batch queued, and each level's oldest waiting arrival is the
            /// model's.
            #[test]
            fn pacing_and_order_hold(
                restored_ago_ms in proptest::option::of(0u64..10_000),
                reruns in proptest::collection::vec(0u8..3, 0..3),
                steps in proptest::collection::vec(
                    (0u8..3, 1u32..4, 0u64..12_000, 0u64..9_000, 0u64..3_000),
                    1..60,
                )
            ) {
                let interval = Duration::from_secs(5);
                let origin = Instant::now() + Duration::from_secs(60);
                let mut now = origin;
                let mut sched = Scheduler::new(interval);
                // Every queued batch as (rerun, priority, arrival, index, submitted at).
                let mut model: Vec<(bool, Priority, usize, u32, Instant)> = Vec::new();
                let mut last_release: Option<Instant> = None;
                let mut last_completion: Option<Instant> = None;
                let mut waiting_since = origin;
                let mut busy_until: Option<Instant> = None;
                if let Some(ago) = restored_ago_ms {
                    let at = origin - Duration::from_millis(ago);
                    sched.restore_last_release(at);
                    last_release = Some(at);
                }
                for (arrival, &p) in reruns.iter().enumerate() {
                    sched.rerun(prio(p), arrival, 0, now);
                    model.push((true, prio(p), arrival, 0, now));
                }
                for (i, (p, len, gap_ms, work_ms, late_ms)) in steps.into_iter().enumerate() {
                    let arrival = reruns.len() + i;
                    let next_arrival = now + Duration::from_millis(gap_ms);
                    loop {
                        match sched.poll(now) {
                            Poll::Release { run, index, due } => {
                                let rule = [last_release.map(|t| t + interval), last_completion, Some(waiting_since)];
                                prop_assert_eq!(Some(due), rule.into_iter().flatten().max(), "due by the rule");
                                prop_assert!(due <= now);
                                prop_assert!(busy_until.is_none());
                                if let Some(last) = last_release {
                                    prop_assert!(now - last >= interval, "two releases closer than the interval");
                                }
                                let best = model
                                    .iter()
                                    .copied()
                                    .max_by(|a, b| {
                                        a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)).then(b.3.cmp(&a.3))
                                    })
                                    .unwrap();
                                prop_assert_eq!((run, index), (best.2, best.3));
                                model.retain(|m| (m.2, m.3) != (run, index));
                                prop_assert_eq!(sched.queued(), model.len());
                                for level in Priority::ALL {
                                    let oldest = model.iter().filter(|m| !m.0 && m.1 == level).map(|m| m.4).min();
                                    prop_assert_eq!(sched.oldest_waiting(level), oldest);
                                }
                                last_release = Some(now);
                                busy_until = Some(now + Duration::from_millis(work_ms));
                            }
                            Poll::WaitUntil(t) if t <= next_arrival => {
                                prop_assert!(t > now);
                                // The pacer may wake late, but never past the next arrival.
                                now = (t + Duration::from_millis(late_ms)).min(next_arrival);
                            }
                            Poll::Busy | Poll::Idle | Poll::WaitUntil(_) => {
                                match busy_until {
                                    Some(t) if t <= next_arrival => {
                                        now = now.max(t);
                                        sched.complete(now);
                                        last_completion = Some(now);
                                        busy_until = None;
                                    }
                                    _ => break,
                                }
                            }
                        }
                    }
                    now = next_arrival;
                    if model.is_empty() {
                        waiting_since = now;
                    }
                    sched.submit(prio(p), arrival, len, now);
                    model.extend((0..len).map(|j| (false, prio(p), arrival, j, now)));
                }
            }
        }
    }
}
