//! Item 2: pacing precision while 256 connections hammer the server, from the pacer's own
//! release records (`--log-format json`: `release_us`, `due_us`, `late_ns`), in each way the
//! service may find itself scheduled, alternating within one run:
//! - as started: the pacer and the worker real-time (`SCHED_FIFO`) where this run may grant it
//!   (root or `CAP_SYS_NICE`); the log says which they got, and the rows are labelled by it;
//! - without `CAP_SYS_NICE` (started under `setpriv`, like a default container or any non-root
//!   user): ordinary threads, with the HTTP threads lowered by the service itself;
//! - the same with the HTTP threads put back at the pacer's nice value from outside (`renice`,
//!   which needs `CAP_SYS_NICE` here): what lowering them is worth.
//!
//! `BENCH_PACING_RELEASES` (default 500) sets how many releases each run measures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{self, Conn};
use crate::diagnose;
use crate::proc::Server;
use crate::report::{Goal, Report};
use crate::wrk::{self, Request};
use crate::Setup;

const INTERVAL_US: u64 = 20_000;
/// Lateness figures are given per this many releases, the unit.
const PER_RELEASES: f64 = 500.0;
/// Drops `CAP_SYS_NICE` from the child and everything it runs.
const WITHOUT_CAP_SYS_NICE: [&str; 4] = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--"];

/// One release record.
#[derive(Debug, Clone, Copy)]
pub struct Released {
    at_us: u64,
    pub late_ns: u64,
}

pub fn releases(log: &Path) -> Vec<Released> {
    let Ok(file) = std::fs::File::open(log) else { return Vec::new() };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| line.contains("\"late_ns\""))
        .filter_map(|line| {
            let record: serde_json::Value = serde_json::from_str(&line).ok()?;
            Some(Released { at_us: record["release_us"].as_u64()?, late_ns: record["late_ns"].as_u64()? })
        })
        .collect()
}

/// Whether the pacer said it got real-time scheduling (its one line at start).
fn pacer_was_real_time(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains("pacer thread: real-time scheduling"))
}

/// How a run is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    AsStarted,
    NoCapSysNice,
    /// Without `CAP_SYS_NICE`, and every thread reniced to the main thread's value after start.
    NoCapSysNiceHttpNotLowered,
}

impl Mode {
    fn slug(self) -> &'static str {
        match self {
            Mode::AsStarted => "as-started",
            Mode::NoCapSysNice => "no-cap-sys-nice",
            Mode::NoCapSysNiceHttpNotLowered => "no-cap-sys-nice-http-not-lowered",
        }
    }
}

/// What the runs of one mode measured, all rounds together.
#[derive(Default)]
struct Tally {
    late_ms: Vec<f64>,
    cumulative_ms: f64,
    min_gap_ms: Option<f64>,
    drift_ms: Vec<f64>,
    runs: usize,
    real_time_runs: usize,
}

impl Tally {
    fn add(&mut self, window: &[Released], real_time: bool) {
        self.runs += 1;
        self.real_time_runs += usize::from(real_time);
        if window.len() < 2 {
            return;
        }
        let late: Vec<f64> = window[1..].iter().map(|r| r.late_ns as f64 / 1e6).collect();
        self.cumulative_ms += late.iter().sum::<f64>();
        self.late_ms.extend(late);
        let gap = window.windows(2).map(|w| w[1].at_us - w[0].at_us).min().unwrap_or(0) as f64 / 1e3;
        self.min_gap_ms = Some(self.min_gap_ms.map_or(gap, |g| g.min(gap)));
        let span_ms = (window[window.len() - 1].at_us - window[0].at_us) as f64 / 1e3;
        self.drift_ms.push(span_ms - (window.len() - 1) as f64 * INTERVAL_US as f64 / 1e3);
    }
}

pub fn precision(setup: &Setup, report: &mut Report) {
    let releases_per_run: usize = crate::env_or("BENCH_PACING_RELEASES", 500usize).max(10);
    let mut modes = vec![Mode::AsStarted];
    if can_drop_cap_sys_nice() {
        modes.extend([Mode::NoCapSysNice, Mode::NoCapSysNiceHttpNotLowered]);
    } else {
        report.note("pacing: setpriv cannot drop CAP_SYS_NICE here; measured as started only");
    }
    let mut tallies: Vec<(Mode, Tally)> = modes.iter().map(|&m| (m, Tally::default())).collect();
    for round in 0..setup.rounds {
        // Alternate the order, so that a machine getting busier slows every mode alike.
        let mut order: Vec<usize> = (0..tallies.len()).collect();
        order.rotate_left(round % tallies.len());
        for i in order {
            let mode = tallies[i].0;
            match run(setup, mode, round, releases_per_run) {
                Ok((window, real_time, worst)) => {
                    tallies[i].1.add(&window, real_time);
                    if let Some(worst) = worst {
                        report.note(format!("pacing {} run {round}, worst release: {worst}", mode.slug()));
                    }
                }
                Err(why) => report.note(format!("pacing {}: not measured: {why}", mode.slug())),
            }
        }
    }
    for (mode, tally) in &tallies {
        summarise(*mode, tally, releases_per_run, report);
    }
}

/// Whether `setpriv` can start a child without `CAP_SYS_NICE` (it needs `CAP_SETPCAP`).
fn can_drop_cap_sys_nice() -> bool {
    let mut command = Command::new(WITHOUT_CAP_SYS_NICE[0]);
    command.args(&WITHOUT_CAP_SYS_NICE[1..]).arg("true").stdout(Stdio::null()).stderr(Stdio::null());
    command.status().is_ok_and(|status| status.success())
}

/// One run: starts the server in `mode`, queues enough work that the queue never runs dry,
/// hammers it with 256 connections and takes the next `count + 1` releases (`count` gaps).
/// Returns them, whether the pacer was real-time, and where the worst one's lateness went.
fn run(setup: &Setup, mode: Mode, round: usize, count: usize) -> Result<(Vec<Released>, bool, Option<String>), String> {
    let log = setup.target.join(format!("bench-pacing-{}-{round}.log", mode.slug()));
    let threads = setup.threads.to_string();
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--threads",
        &threads,
        "--interval",
        "20ms",
        "--fetch-delay",
        "5ms",
        "--log-format",
        "json",
        "--max-queued-ids",
        "100000000",
    ];
    let wrapper: &[&str] = if mode == Mode::AsStarted { &[] } else { &WITHOUT_CAP_SYS_NICE };
    let server = Server::start_under(wrapper, &setup.ingestd, &args, Some(&log));
    if mode == Mode::NoCapSysNiceHttpNotLowered {
        renice_all_threads_to_main(server.pid())?;
    }
    let mut conn = Conn::open(&server.addr).map_err(|e| format!("connect: {e}"))?;
    let id = client::ingest(&mut conn, &client::ingest_body(1, 5_000, "HIGH"));
    let budget = Duration::from_micros(INTERVAL_US * count as u64) + Duration::from_secs(10);
    let mut load = wrk::spawn(&server.url(""), &Request::Script("bench/mixed.lua", &[&id]), 256, budget);
    // Count from once the load is on.
    wait(Duration::from_secs(1));
    // Again, for any thread started while the first pass ran; a failure is reported below.
    let reniced = match mode {
        Mode::NoCapSysNiceHttpNotLowered => renice_all_threads_to_main(server.pid()),
        _ => Ok(()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let steals = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || diagnose::sample_steal(&stop))
    };
    let first = releases(&log).len();
    let began = Instant::now();
    while releases(&log).len() < first + count + 1 && began.elapsed() < budget {
        wait(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let steals = steals.join().unwrap_or_default();
    let _ = load.kill();
    let _ = load.wait();
    drop(server);
    let all = releases(&log);
    let window = all[first.min(all.len())..(first + count + 1).min(all.len())].to_vec();
    // The first release of the window anchors it; its own lateness is not counted.
    let worst = window.get(1).zip(window.last()).and_then(|(from, to)| {
        let text = std::fs::read_to_string(&log).ok()?;
        diagnose::latest(&text, &steals, (from.at_us, to.at_us), 1).0.into_iter().next()
    });
    reniced.map(|()| (window, pacer_was_real_time(&log), worst))
}

/// Puts every thread of `pid` at its main thread's nice value, undoing the service's own
/// lowering of its HTTP threads. Threads started later inherit it from their (reniced) creators.
fn renice_all_threads_to_main(pid: u32) -> Result<(), String> {
    let nice_of = |tid: &str| -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(16).map(str::to_owned)
    };
    let main = nice_of(&pid.to_string()).ok_or("cannot read the main thread's nice value")?;
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("cannot list the threads: {e}"))?
        .filter_map(|task| task.ok()?.file_name().into_string().ok())
        .collect();
    // `--priority` is an absolute value in every util-linux (`-n` became relative in 2.39).
    let status = Command::new("renice")
        .args(["--priority", &main, "-p"])
        .args(&tids)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run renice: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("renice could not raise the HTTP threads back (no CAP_SYS_NICE?)".to_owned())
    }
}

fn summarise(mode: Mode, tally: &Tally, releases_per_run: usize, report: &mut Report) {
    if tally.runs == 0 {
        return;
    }
    let real_time = tally.real_time_runs == tally.runs;
    let name = match (mode, real_time) {
        (Mode::AsStarted, true) => "real-time".to_owned(),
        (Mode::AsStarted, false) if tally.real_time_runs == 0 => "as started, ordinary scheduling".to_owned(),
        (Mode::AsStarted, false) => format!("as started, real-time in {} of {} runs", tally.real_time_runs, tally.runs),
        (Mode::NoCapSysNice, _) => "no CAP_SYS_NICE, HTTP lowered".to_owned(),
        (Mode::NoCapSysNiceHttpNotLowered, _) => "no CAP_SYS_NICE, HTTP not lowered".to_owned(),
    };
    // The goals: real-time, or the service's own setting without the privilege.
    let (p99, max, cumulative) = match (mode, real_time) {
        (Mode::AsStarted, true) => (Goal::AtMost(0.1), Goal::AtMost(5.0), Goal::AtMost(20.0)),
        (Mode::NoCapSysNiceHttpNotLowered, _) => (Goal::None, Goal::None, Goal::None),
        _ => (Goal::AtMost(2.0), Goal::None, Goal::AtMost(100.0)),
    };
    let mut late = tally.late_ms.clone();
    late.sort_by(f64::total_cmp);
    let at = |q: f64| late.get(((late.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(f64::NAN);
    let per_500 = if late.is_empty() { f64::NAN } else { tally.cumulative_ms * PER_RELEASES / late.len() as f64 };
    let drift = tally.drift_ms.iter().sum::<f64>() / tally.drift_ms.len().max(1) as f64;
    let row = |report: &mut Report, item: &str, value: f64, unit: &'static str, goal: Goal| {
        report.row(format!("pacing c256 {name}: {item}"), value, unit, goal);
    };
    let wanted = (releases_per_run * tally.runs) as f64;
    row(report, &format!("releases measured ({} runs)", tally.runs), late.len() as f64, "count", Goal::AtLeast(wanted));
    row(report, "lateness p50", at(0.5), "ms", Goal::None);
    row(report, "lateness p99", at(0.99), "ms", p99);
    row(report, "lateness max", at(1.0), "ms", max);
    row(report, "cumulative lateness per 500 releases", per_500, "ms", cumulative);
    // The hard rule, in every mode.
    let gap = tally.min_gap_ms.unwrap_or(f64::NAN);
    row(report, "smallest gap (interval 20 ms)", gap, "ms", Goal::AtLeast(INTERVAL_US as f64 / 1e3));
    row(report, "span minus intervals, mean per run", drift, "ms", Goal::None);
}

/// The bench's only sleeps: letting time pass under load, not waiting for a condition.
fn wait(duration: Duration) {
    std::thread::sleep(duration);
}
