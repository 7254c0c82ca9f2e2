//! Connections that tiny_http 0.12.0 accepts but leaves unread, as the relay sees them. Pure:
//! an `http-relay-N` loop says when it opened a connection to tiny_http and when tiny_http
//! first answered on it, and [`Strands::due`] says which to look at: for each that tiny_http
//! has read nothing of, the relay makes an empty connection ("tick").
//!
//! Upstream defect: tiny_http's pool starts a thread for a new connection only when its count
//! of idle workers is zero, and that count lags, so in a burst some connections queue behind
//! workers busy with keep-alive clients, unread until a connection closes. Any task that ends
//! lets a worker take the next queued connection, and a new task when none is idle starts a
//! thread that does the same: each tick frees one queued connection. A connection is looked at
//! when its first request has waited [`FIRST_WAIT`] for an answer, and again each time that
//! wait doubles, [`TICKS`] times at most; one that tiny_http has read from is taken, and
//! forgotten. Each look counts in `/metrics` (`ingestd_http_pool_looks_total`), and each tick
//! (`ingestd_http_pool_nudges_total`).
//! `tests/burst.rs` fails without this, and without the check of what tiny_http has read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a first request waits for an answer before its connection is taken for stranded.
pub(super) const FIRST_WAIT: Duration = Duration::from_millis(5);
/// The most looks one connection gets (the last after 80 ms, 155 ms in all).
const TICKS: u32 = 5;

/// One relay's connections to tiny_http that have not been answered yet.
#[derive(Debug, Default)]
pub(super) struct Strands {
    /// By link: when its next tick is due, and how many it has had.
    waiting: HashMap<u64, (Instant, u32)>,
    /// No tick is due before this.
    next: Option<Instant>,
}

impl Strands {
    /// Link `id` just sent tiny_http its first request.
    pub(super) fn opened(&mut self, id: u64, now: Instant) {
        let due = now + FIRST_WAIT;
        self.waiting.insert(id, (due, 0));
        self.next = Some(self.next.map_or(due, |next| next.min(due)));
    }

    /// tiny_http answered on link `id` (or the link ended): a worker has it.
    pub(super) fn answered(&mut self, id: u64) {
        self.waiting.remove(&id);
    }

    /// When [`Strands::due`] may have something to do.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.next
    }

    /// The links to look at `now`: each one tiny_http has read nothing of gets a tick.
    pub(super) fn due(&mut self, now: Instant) -> Vec<u64> {
        if self.next.is_none_or(|next| next > now) {
            return Vec::new();
        }
        let mut due_now = Vec::new();
        self.waiting.retain(|&id, (due, given)| {
            if *due <= now {
                due_now.push(id);
                *given += 1;
                *due = now + FIRST_WAIT * 2u32.pow(*given);
            }
            *given < TICKS
        });
        self.next = self.waiting.values().map(|(due, _)| *due).min();
        due_now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `script` (`open N`, `answer N`, `at MS`) and checks how many links are due at each `at`.
    #[track_caller]
    fn check(script: &str, expected: &[usize]) {
        let start = Instant::now();
        let mut strands = Strands::default();
        let mut now = start;
        let mut ticks = Vec::new();
        for step in script.split(';').map(str::trim) {
            let (verb, arg) = step.split_once(' ').expect("a verb and a number");
            let arg: u64 = arg.parse().expect("a number");
            match verb {
                "open" => strands.opened(arg, now),
                "answer" => strands.answered(arg),
                "at" => {
                    now = start + Duration::from_millis(arg);
                    ticks.push(strands.due(now).len());
                }
                _ => panic!("unknown step {step:?}"),
            }
        }
        assert_eq!(ticks, expected, "{script}");
    }

    #[test]
    fn each_unanswered_connection_is_due_after_the_first_wait() {
        check("open 1; open 2; at 4; at 5", &[0, 2]);
        check("open 1; open 2; answer 1; at 5", &[1]);
        check("open 1; answer 1; at 5; at 500", &[0, 0]);
        check("open 1; at 3; open 2; at 5; at 8", &[0, 1, 1]);
    }

    #[test]
    fn ticks_back_off_and_stop_for_a_connection_that_is_only_slow() {
        // Due at 5, then 10, 20, 40 and 80 ms after the tick before.
        check("open 1; at 5; at 14; at 15; at 35; at 75; at 155; at 10000", &[1, 0, 1, 1, 1, 1, 0]);
        check("open 1; at 5; at 15; answer 1; at 35", &[1, 1, 0]);
    }

    #[test]
    fn the_next_due_time_is_the_earliest_tick_due() {
        let start = Instant::now();
        let mut strands = Strands::default();
        assert_eq!(strands.next_due(), None);
        strands.opened(1, start);
        strands.opened(2, start + Duration::from_millis(2));
        assert_eq!(strands.next_due(), Some(start + FIRST_WAIT));
        assert_eq!(strands.due(start + FIRST_WAIT), [1]);
        assert_eq!(strands.next_due(), Some(start + Duration::from_millis(7)));
        strands.answered(2);
        assert!(strands.due(start + Duration::from_millis(7)).is_empty());
        assert_eq!(strands.next_due(), Some(start + Duration::from_millis(15)));
    }
}
