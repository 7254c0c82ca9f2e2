//! Where a late release's time went: the pacer's own record of it (lock wait, timed wake-up,
//! time runnable but not running), other threads' long holds of the queue lock over its slot,
//! and the CPU time the hypervisor stole just before it. Read from the server's JSON log and
//! from samples of `/proc/stat`; shared by `make bench`'s pacing runs and `mixed_load`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How far back from a late release to count stolen CPU time.
const STEAL_WINDOW_MS: u64 = 100;

/// The number after `"name":` in a JSON log line.
pub fn number(line: &str, name: &str) -> Option<u64> {
    let start = line.find(&format!("\"{name}\":"))? + name.len() + 3;
    line[start..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The `n` latest releases of `log` whose `release_us` lies in `from_us..=to_us`, each
/// explained in a line, latest first; and (count, longest in µs) of the long queue-lock holds.
pub fn latest(log: &str, steals: &[(u64, u64)], (from_us, to_us): (u64, u64), n: usize) -> (Vec<String>, (usize, u64)) {
    let mut releases: Vec<&str> = log
        .lines()
        .filter(|l| {
            number(l, "late_ns").is_some() && number(l, "release_us").is_some_and(|at| (from_us..=to_us).contains(&at))
        })
        .collect();
    releases.sort_by_key(|l| std::cmp::Reverse(number(l, "late_ns")));
    // Other threads' holds of the queue lock long enough to delay a release: (length, end) in
    // µs on the releases' clock, and who held it.
    let holds: Vec<(u64, u64, &str)> = log
        .lines()
        .filter_map(|l| {
            let holder = l.split(" by ").nth(1)?.split('"').next()?;
            Some((number(l, "lock_held_us")?, number(l, "held_until_us")?, holder))
        })
        .collect();
    let explained = releases.iter().take(n).map(|l| explain(l, &holds, steals)).collect();
    (explained, (holds.len(), holds.iter().map(|h| h.0).max().unwrap_or(0)))
}

fn explain(line: &str, holds: &[(u64, u64, &str)], steals: &[(u64, u64)]) -> String {
    let us = |name: &str| number(line, name).map_or("?".to_owned(), |n| format!("{:.1}", n as f64 / 1e3));
    let (due, at) = (number(line, "due_us").unwrap_or(0), number(line, "release_us").unwrap_or(0));
    let blocking: Vec<String> = holds
        .iter()
        .filter(|(held, until, _)| *until >= due && until.saturating_sub(*held) <= at)
        .map(|(held, until, holder)| format!("{holder} {held} us to {} us after the slot", until - due))
        .collect();
    let stolen = ms_of_day(line).map_or(0, |at| stolen_between(steals, at.saturating_sub(STEAL_WINDOW_MS), at + 10));
    format!(
        "late {} us: lock wait {}, timed wake late {}, runnable but not running since the release before {}; \
         queue lock holds over the slot: [{}]; CPU ticks stolen by the hypervisor in the {STEAL_WINDOW_MS} ms \
         before: {stolen}",
        us("late_ns"),
        us("lock_wait_ns"),
        us("wake_late_ns"),
        us("runnable_ns"),
        blocking.join(", ")
    )
}

/// The milliseconds since midnight (UTC) of a log line's `ts`.
fn ms_of_day(line: &str) -> Option<u64> {
    let time = line.split("\"ts\":\"").nth(1)?.get(11..23)?;
    let (h, m, s) = (time.get(0..2)?.parse::<u64>().ok()?, time.get(3..5)?.parse::<u64>().ok()?, time.get(6..)?);
    let seconds: f64 = s.parse().ok()?;
    Some((h * 3600 + m * 60) * 1000 + (seconds * 1000.0).round() as u64)
}

/// Stolen ticks from samples of (ms since midnight UTC, steal so far) between `from` and `to`.
fn stolen_between(steals: &[(u64, u64)], from: u64, to: u64) -> u64 {
    let at = |t: u64| steals.iter().take_while(|(when, _)| *when <= t).last().map_or(0, |s| s.1);
    at(to).saturating_sub(at(from))
}

/// Samples the stolen time every 5 ms until `stop`, keeping the samples where it changed (and
/// the first), as (ms since midnight UTC, ticks).
pub fn sample_steal(stop: &AtomicBool) -> Vec<(u64, u64)> {
    let mut samples: Vec<(u64, u64)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let steal = steal_ticks();
        if samples.last().is_none_or(|last| last.1 != steal) {
            samples.push((u64::try_from(now.as_millis() % 86_400_000).unwrap_or(0), steal));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    samples
}

/// The machine's CPU time stolen by the hypervisor so far, in clock ticks (`/proc/stat`).
pub fn steal_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines().next().and_then(|cpu| cpu.split_whitespace().nth(8)).and_then(|n| n.parse().ok()).unwrap_or(0)
}
