//! Item 2: pacing precision while 256 connections hammer the server, from the pacer's own
//! release records (`--log-format json`: `release_us`, `due_us`, `late_ns`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{self, Conn};
use crate::proc::Server;
use crate::report::{Goal, Report};
use crate::wrk::{self, Request};
use crate::Setup;

const INTERVAL_US: u64 = 20_000;
const RELEASES: usize = 500;

/// One release record.
#[derive(Debug, Clone, Copy)]
struct Released {
    at_us: u64,
    late_ns: u64,
}

fn releases(log: &Path) -> Vec<Released> {
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

pub fn precision(setup: &Setup, report: &mut Report) {
    let log = setup.target.join("bench-pacing.log");
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
    let server = Server::start(&setup.ingestd, &args, Some(&log));
    // Enough work queued up front that the queue never runs dry, whatever the load posts.
    let mut conn = Conn::open(&server.addr).expect("connect");
    let id = client::ingest(&mut conn, &client::ingest_body(1, 5_000, "HIGH"));
    let budget = Duration::from_micros(INTERVAL_US * RELEASES as u64) + Duration::from_secs(10);
    let mut load = wrk::spawn(&server.url(""), &Request::Script("bench/mixed.lua", &[&id]), 256, budget);
    // Count from once the load is on; then take the next RELEASES + 1 releases (RELEASES gaps).
    wait(Duration::from_secs(1));
    let first = releases(&log).len();
    let began = Instant::now();
    while releases(&log).len() < first + RELEASES + 1 && began.elapsed() < budget {
        wait(Duration::from_millis(500));
    }
    let _ = load.kill();
    let _ = load.wait();
    drop(server);
    let all = releases(&log);
    let window = &all[first.min(all.len())..(first + RELEASES + 1).min(all.len())];
    summarise(window, report);
}

fn summarise(window: &[Released], report: &mut Report) {
    let mut late: Vec<f64> = window[1..].iter().map(|r| r.late_ns as f64 / 1e6).collect();
    let cumulative: f64 = late.iter().sum();
    late.sort_by(f64::total_cmp);
    let at = |q: f64| late.get(((late.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(f64::NAN);
    let min_gap_ms = window.windows(2).map(|w| w[1].at_us - w[0].at_us).min().unwrap_or(0) as f64 / 1e3;
    let drift_ms = match (window.first(), window.last()) {
        (Some(a), Some(b)) => (b.at_us - a.at_us) as f64 / 1e3 - (window.len() - 1) as f64 * INTERVAL_US as f64 / 1e3,
        _ => f64::NAN,
    };
    report.row("pacing c256: releases measured", late.len() as f64, "count", Goal::AtLeast(RELEASES as f64));
    report.row("pacing c256: lateness p50", at(0.5), "ms", Goal::None);
    report.row("pacing c256: lateness p99", at(0.99), "ms", Goal::AtMost(1.0));
    report.row("pacing c256: lateness max", at(1.0), "ms", Goal::None);
    report.row("pacing c256: smallest gap (interval 20 ms)", min_gap_ms, "ms", Goal::AtLeast(20.0));
    report.row("pacing c256: cumulative lateness", cumulative, "ms", Goal::AtMost(20.0));
    report.row("pacing c256: span minus 500 intervals", drift_ms, "ms", Goal::None);
}

/// The bench's only sleeps: letting time pass under load, not waiting for a condition.
fn wait(duration: Duration) {
    std::thread::sleep(duration);
}
