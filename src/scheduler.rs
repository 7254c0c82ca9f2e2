//! The queue and the pacing rule, as pure data.
//!
//! Owned by the pacer and only touched under its lock. No locks, threads, clock reads or I/O
//! here: every method that depends on time takes `now`, so the rules are tested as data.

use std::cmp::Ordering;
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::collections::VecDeque;
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

/// A priority queue of batches plus the rule that paces their release.
///
/// Batches arrive in runs (an ingestion's batches, which share a priority and are consecutive in
/// arrival order), and the queue holds one entry per run: memory and lock time per request do
/// not grow with its size. Order: higher [`Priority`] first, then earlier arrival (a sequence
/// number this scheduler hands out, so FIFO within a level holds even for simultaneous
/// submissions), then position within the run.
///
/// Pacing: the head may be released at `max(previous release + interval, previous completion)`,
/// with at most one batch in flight. So releases are never closer than `interval`, a batch
/// that completes within the interval does not stretch the period, and idle time earns no burst.
#[derive(Debug)]
pub struct Scheduler<B> {
    interval: Duration,
    queue: BinaryHeap<Queued<B>>,
    /// Batches interrupted in flight by a crash; they go again before anything queued.
    reruns: VecDeque<(B, u32)>,
    queued_batches: usize,
    next_seq: u64,
    in_flight: bool,
    last_release: Option<Instant>,
    last_completion: Option<Instant>,
    /// When the queue last went from empty to non-empty; a release is never due before it.
    waiting_since: Option<Instant>,
}

#[derive(Debug)]
struct Queued<B> {
    priority: Priority,
    seq: u64,
    run: B,
    next: u32,
    len: u32,
}

impl<B> Ord for Queued<B> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the greatest element is the next to go.
        self.priority.cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

impl<B> PartialOrd for Queued<B> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<B> PartialEq for Queued<B> {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl<B> Eq for Queued<B> {}

impl<B: Clone> Scheduler<B> {
    pub fn new(interval: Duration) -> Scheduler<B> {
        Scheduler {
            interval,
            queue: BinaryHeap::new(),
            reruns: VecDeque::new(),
            queued_batches: 0,
            next_seq: 0,
            in_flight: false,
            last_release: None,
            last_completion: None,
            waiting_since: None,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Queues a run of `len` batches behind every batch of its priority submitted before it.
    pub fn submit(&mut self, priority: Priority, run: B, len: u32, now: Instant) {
        self.submit_from(priority, run, 0, len, now);
    }

    /// Like [`Scheduler::submit`] for a run whose batches before `first` already went (a run
    /// restored after a restart).
    pub fn submit_from(&mut self, priority: Priority, run: B, first: u32, len: u32, now: Instant) {
        if first >= len {
            return;
        }
        self.note_arrival(now);
        self.queue.push(Queued { priority, seq: self.next_seq, run, next: first, len });
        self.queued_batches += (len - first) as usize;
        self.next_seq += 1;
    }

    /// Puts batch `index` of `run` ahead of everything queued: it was in flight when the
    /// service stopped, and runs again first.
    pub fn rerun(&mut self, run: B, index: u32, now: Instant) {
        self.note_arrival(now);
        self.reruns.push_back((run, index));
        self.queued_batches += 1;
    }

    /// Restores the time of the last release before a restart, so that the interval holds
    /// across it.
    pub fn restore_last_release(&mut self, at: Instant) {
        self.last_release = Some(self.last_release.map_or(at, |t| t.max(at)));
    }

    fn note_arrival(&mut self, now: Instant) {
        if self.queued_batches == 0 {
            self.waiting_since = Some(now);
        }
    }

    /// Decides what to do at `now`; on `Release` the batch leaves the queue and is in flight.
    pub fn poll(&mut self, now: Instant) -> Poll<B> {
        if self.in_flight {
            return Poll::Busy;
        }
        if self.queued_batches == 0 {
            return Poll::Idle;
        }
        let due = self.earliest_release();
        if now < due {
            return Poll::WaitUntil(due);
        }
        let (run, index) = self.take_head();
        self.queued_batches -= 1;
        self.in_flight = true;
        self.last_release = Some(now);
        self.waiting_since = if self.queued_batches == 0 { None } else { Some(now) };
        Poll::Release { run, index, due }
    }

    fn take_head(&mut self) -> (B, u32) {
        if let Some(rerun) = self.reruns.pop_front() {
            return rerun;
        }
        let mut head = self.queue.peek_mut().expect("queue checked non-empty");
        let index = head.next;
        head.next += 1;
        if head.next < head.len {
            (head.run.clone(), index)
        } else {
            (PeekMut::pop(head).run, index)
        }
    }

    /// Records that the batch in flight finished at `now`.
    pub fn complete(&mut self, now: Instant) {
        self.in_flight = false;
        self.last_completion = Some(now);
    }

    /// Batches waiting to be released (the one in flight is not counted).
    pub fn queued(&self) -> usize {
        self.queued_batches
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
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

    /// Runs a script of `;`-separated steps against a scheduler with a 5 s interval.
    ///
    /// Steps (times in seconds from an origin): `submit NAME PRIO [BATCHES] @T`, `complete @T`,
    /// `poll @T -> NAME[.INDEX]`, `poll @T -> wait T2`, `poll @T -> busy`, `poll @T -> idle`.
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
        for step in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let words: Vec<&str> = step.split_whitespace().collect();
            match words.as_slice() {
                ["submit", name, prio, t] => {
                    sched.submit(Priority::parse(prio).unwrap(), name.to_string(), 1, at(&t[1..]));
                }
                ["submit", name, prio, len, t] => {
                    let len = len.parse().unwrap();
                    sched.submit(Priority::parse(prio).unwrap(), name.to_string(), len, at(&t[1..]));
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
        sched.submit_from(Priority::Low, 'l', 2, 4, origin);
        sched.submit_from(Priority::Low, 'x', 3, 3, origin);
        sched.rerun('l', 1, origin);
        assert_eq!(sched.queued(), 4);
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

        proptest! {
            /// Over random arrivals and processing times, simulated event by event: releases
            /// are never closer than the interval, never overlap, never wait longer than the
            /// rule says, and always take the best (priority, arrival, index) batch queued.
            #[test]
            fn pacing_and_order_hold(
                steps in proptest::collection::vec((0u8..3, 1u32..4, 0u64..12_000, 0u64..9_000), 1..60)
            ) {
                let interval = Duration::from_secs(5);
                let mut now = Instant::now();
                let mut sched = Scheduler::new(interval);
                // Every queued batch as (priority, arrival order of its run, index in its run).
                let mut model: Vec<(Priority, usize, u32)> = Vec::new();
                let mut last_release: Option<Instant> = None;
                let mut busy_until: Option<Instant> = None;
                for (i, (p, len, gap_ms, work_ms)) in steps.into_iter().enumerate() {
                    let next_arrival = now + Duration::from_millis(gap_ms);
                    loop {
                        match sched.poll(now) {
                            Poll::Release { run, index, due } => {
                                prop_assert_eq!(due, now, "released late in a simulation");
                                prop_assert!(busy_until.is_none());
                                if let Some(last) = last_release {
                                    prop_assert!(now - last >= interval);
                                }
                                let best = model
                                    .iter()
                                    .copied()
                                    .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)))
                                    .unwrap();
                                prop_assert_eq!((run, index), (best.1, best.2));
                                model.retain(|m| (m.1, m.2) != (run, index));
                                prop_assert_eq!(sched.queued(), model.len());
                                last_release = Some(now);
                                busy_until = Some(now + Duration::from_millis(work_ms));
                            }
                            Poll::WaitUntil(t) if t <= next_arrival => {
                                prop_assert!(t > now);
                                now = t;
                            }
                            Poll::Busy | Poll::Idle | Poll::WaitUntil(_) => {
                                match busy_until {
                                    Some(t) if t <= next_arrival => {
                                        now = now.max(t);
                                        sched.complete(now);
                                        busy_until = None;
                                    }
                                    _ => break,
                                }
                            }
                        }
                    }
                    now = next_arrival;
                    sched.submit(prio(p), i, len, now);
                    model.extend((0..len).map(|j| (prio(p), i, j)));
                }
            }
        }
    }
}
