//! Issue 13: pacing as the upstream sees it, and the cost of a call. ingestd delivers to a local
//! upstream (a socket loop in this process) that answers each call after 5 ms, while 256 connections
//! hammer ingestd. From the upstream's own records: every gap between two batches' first calls
//! (goal: >= the interval), and ingestd's time per call minus the upstream's own (from sending an
//! answer to the next call of the same batch arriving, over one kept-alive connection).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{self, Conn};
use crate::proc::Server;
use crate::report::{Goal, Report};
use crate::wrk::{self, Request};
use crate::Setup;

const INTERVAL: Duration = Duration::from_millis(20);
const BATCH_SIZE: usize = 3;
const SERVICE: Duration = Duration::from_millis(5);
const BATCHES: usize = 300;

/// One call as the upstream saw it: when it arrived, when its answer was sent, from where.
#[derive(Debug, Clone, Copy)]
struct Call {
    arrived: Instant,
    answered: Instant,
    peer: Option<SocketAddr>,
}

/// The upstream: answers every request 200 after [`SERVICE`] and records it. A plain socket
/// loop on one real-time thread (where allowed), not tiny_http: an arrival is stamped when its
/// bytes are read, with no thread hand-off in between to add jitter to the gaps it measures.
/// ingestd makes one call at a time over one kept-alive connection; connections are served in
/// turn. Only GETs without a body (the default method) are understood.
struct Upstream {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        let addr = listener.local_addr().expect("an address");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        // Detached: it ends with the bench process.
        std::thread::spawn(move || {
            let _ = ingestd::realtime::raise_current_thread();
            for stream in listener.incoming().map_while(Result::ok) {
                serve(stream, &recorded);
            }
        });
        Upstream { addr, calls }
    }

    fn url(&self) -> String {
        format!("http://{}/items/{{id}}", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// Answers the requests of one connection until it closes.
fn serve(mut stream: TcpStream, calls: &Mutex<Vec<Call>>) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        let arrived = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            std::thread::sleep(SERVICE.saturating_sub(arrived.elapsed()));
            if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                return;
            }
            calls.lock().unwrap().push(Call { arrived, answered: Instant::now(), peer });
        }
    }
}

pub fn pacing_and_overhead(setup: &Setup, report: &mut Report) {
    let upstream = Upstream::start();
    let (threads, url) = (setup.threads.to_string(), upstream.url());
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--threads",
        &threads,
        "--interval",
        "20ms",
        "--batch-size",
        "3",
        "--upstream",
        &url,
        "--max-queued-ids",
        "100000000",
        "--log-format",
        "json",
    ];
    let log = setup.target.join("bench-upstream.log");
    let server = Server::start(&setup.ingestd, &args, Some(&log));
    // Enough HIGH work up front that every measured batch is full and the queue never runs dry.
    let mut conn = Conn::open(&server.addr).expect("connect");
    let id = client::ingest(&mut conn, &client::ingest_body(1, 5_000, "HIGH"));
    let budget = INTERVAL * BATCHES as u32 + Duration::from_secs(10);
    let mut load = wrk::spawn(&server.url(""), &Request::Script("bench/mixed.lua", &[&id]), 256, budget);
    // Count from once the load is on; then take the next BATCHES + 1 batches.
    std::thread::sleep(Duration::from_secs(1));
    let first = upstream.calls().len().next_multiple_of(BATCH_SIZE);
    let wanted = first + (BATCHES + 1) * BATCH_SIZE;
    let began = Instant::now();
    while upstream.calls().len() < wanted && began.elapsed() < budget {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = load.kill();
    let _ = load.wait();
    drop(server);
    let calls = upstream.calls();
    summarise(&calls[first.min(calls.len())..wanted.min(calls.len())], report);
    lateness(&crate::pacing::releases(&log), report);
}

/// The pacer's lateness for the releases of this run (after the first second's): the same
/// figures as the pacing rows, with a real upstream behind the worker.
fn lateness(releases: &[crate::pacing::Released], report: &mut Report) {
    let mut late: Vec<f64> = releases.iter().skip(50).map(|r| r.late_ns as f64 / 1e6).collect();
    late.sort_by(f64::total_cmp);
    let at = |q: f64| late.get(((late.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(0.0);
    let per_500 = late.iter().sum::<f64>() * 500.0 / late.len().max(1) as f64;
    report.row("upstream c256: releases measured", late.len() as f64, "count", Goal::None);
    report.row("upstream c256: lateness p99", at(0.99), "ms", Goal::None);
    report.row("upstream c256: lateness max", at(1.0), "ms", Goal::None);
    report.row("upstream c256: cumulative lateness per 500 releases", per_500, "ms", Goal::None);
}

fn summarise(calls: &[Call], report: &mut Report) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let gaps: Vec<f64> = calls
        .chunks(BATCH_SIZE)
        .map(|b| b[0].arrived)
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| ms(w[1] - w[0]))
        .collect();
    let interval_ms = ms(INTERVAL);
    let under = gaps.iter().filter(|&&g| g < interval_ms).count();
    let smallest = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    // Within a batch: from the upstream's answer to the next call's arrival is all ingestd's
    // (and loopback's): reading the answer, classifying it, sending the next.
    let mut overhead: Vec<f64> = calls
        .chunks(BATCH_SIZE)
        .flat_map(|b| b.windows(2).map(|w| ms(w[1].arrived.saturating_duration_since(w[0].answered))))
        .collect();
    overhead.sort_by(f64::total_cmp);
    let at = |q: f64| overhead.get(((overhead.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(f64::NAN);
    let connections = calls.iter().map(|c| c.peer).collect::<HashSet<_>>().len();
    report.row("upstream c256: batches measured", gaps.len() as f64, "count", Goal::AtLeast(BATCHES as f64));
    report.row(
        "upstream c256: smallest gap at the upstream (interval 20 ms)",
        smallest,
        "ms",
        Goal::AtLeast(interval_ms),
    );
    report.row("upstream c256: gaps under the interval", under as f64, "count", Goal::AtMost(0.0));
    report.row("upstream c256: call overhead p50 (keep-alive)", at(0.5), "ms", Goal::AtMost(0.3));
    report.row("upstream c256: call overhead p99", at(0.99), "ms", Goal::None);
    report.row("upstream c256: connections used", connections as f64, "count", Goal::None);
}
