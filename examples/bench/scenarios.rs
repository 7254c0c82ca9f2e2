//! Throughput against the ceiling, memory and scale, durable mode, and the hardening figures.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::client::{self, Conn};
use crate::h2load;
use crate::proc::Server;
use crate::report::{Goal, Report};
use crate::wrk::{self, Load, Request};
use crate::Setup;

const POST_SCRIPT: &str = "bench/post.lua";

fn ingestd_args(setup: &Setup, extra: &[&str]) -> Vec<String> {
    let threads = setup.threads.to_string();
    let mut args: Vec<String> = ["--threads", &threads].iter().map(|s| s.to_string()).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start_ingestd(setup: &Setup, extra: &[&str]) -> Server {
    start_binary(&setup.ingestd, setup, extra)
}

fn start_binary(bin: &Path, setup: &Setup, extra: &[&str]) -> Server {
    let args = ingestd_args(setup, extra);
    Server::ingestd(bin, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// An ingestion of 10 batches (30 ids); returns its status path and the status answer's size.
fn ten_batches(server: &Server) -> (String, usize) {
    let mut conn = Conn::open(&server.addr).expect("connect");
    let id = client::ingest(&mut conn, &client::ingest_body(1, 30, "MEDIUM"));
    let path = format!("/status/{id}");
    let (status, body) = conn.call("GET", &path, "").expect("a status answer");
    assert_eq!(status, 200);
    (path, body.len())
}

/// Mean of `rounds` runs each of `a` and `b`, alternating which goes first.
fn alternate(rounds: usize, a: impl FnMut() -> Load, b: impl FnMut() -> Load) -> (Load, Load) {
    let (runs_a, runs_b) = alternate_runs(rounds, a, b);
    (mean(&runs_a), mean(&runs_b))
}

/// Each round's figures, a's and b's.
fn alternate_runs(rounds: usize, mut a: impl FnMut() -> Load, mut b: impl FnMut() -> Load) -> (Vec<Load>, Vec<Load>) {
    let (mut runs_a, mut runs_b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            runs_a.push(a());
            runs_b.push(b());
        } else {
            runs_b.push(b());
            runs_a.push(a());
        }
    }
    (runs_a, runs_b)
}

fn mean(runs: &[Load]) -> Load {
    let n = runs.len() as f64;
    Load {
        rps: runs.iter().map(|l| l.rps).sum::<f64>() / n,
        p50_ms: runs.iter().map(|l| l.p50_ms).sum::<f64>() / n,
        p99_ms: runs.iter().map(|l| l.p99_ms).sum::<f64>() / n,
        max_ms: runs.iter().map(|l| l.max_ms).fold(0.0, f64::max),
        errors: runs.iter().map(|l| l.errors).sum(),
    }
}

/// Item 1: GET /status and POST /ingest at 32 and 256 connections, ours against the ceiling.
pub fn throughput(setup: &Setup, report: &mut Report) {
    // A long interval: nothing drains, so POSTs only ever add to the queue.
    let ours = start_ingestd(setup, &["--interval", "1h", "--max-queued-ids", "1000000000"]);
    let (status_path, get_bytes) = ten_batches(&ours);
    let post_bytes = r#"{"ingestion_id":"00000000-0000-0000-0000-000000000000"}"#.len();
    let ceiling = Server::start(
        &setup.examples.join("ceiling"),
        &[&setup.threads.to_string(), &get_bytes.to_string(), &post_bytes.to_string()],
        None,
    );
    let cases =
        [("GET /status", Request::Get(&status_path), 0.9), ("POST /ingest", Request::Script(POST_SCRIPT, &[]), 0.8)];
    for (name, request, goal) in &cases {
        for connections in [32, 256] {
            let run = |server: &Server| wrk::run(&server.url(""), request, connections, setup.seconds);
            let (o, c) = alternate_runs(setup.rounds, || run(&ours), || run(&ceiling));
            // The ceiling's best round: bare tiny_http strands some of wrk's new connections in
            // some rounds (it has no `strand.rs`), which would flatter the ratio.
            let (o, c) = (mean(&o), c.into_iter().max_by(|x, y| x.rps.total_cmp(&y.rps)).expect("a round"));
            let item = format!("{name} c{connections}");
            report.row(format!("{item} ours"), o.rps, "req/s", Goal::None);
            report.row(format!("{item} ceiling"), c.rps, "req/s", Goal::None);
            report.row(format!("{item} ours/ceiling"), o.rps / c.rps, "ratio", Goal::AtLeast(*goal));
            report.row(format!("{item} p50 ours"), o.p50_ms, "ms", Goal::None);
            report.row(format!("{item} p50 ceiling"), c.p50_ms, "ms", Goal::None);
            report.row(format!("{item} p99 ours"), o.p99_ms, "ms", Goal::None);
            report.row(format!("{item} p99 ceiling"), c.p99_ms, "ms", Goal::None);
            let goal = if connections == 256 { Goal::AtMost(0.0) } else { Goal::None };
            report.row(format!("{item} errors ours"), o.errors as f64, "count", goal);
        }
    }
    drop((ours, ceiling));
    // Stranding shows on a fresh pool, so a fresh server; every connection's answers counted.
    let fresh = start_ingestd(setup, &["--interval", "1h"]);
    let (status_path, _) = ten_batches(&fresh);
    let burst = client::burst(&fresh.addr, 256, Duration::from_secs(3), &status_path);
    report.row("burst c256 (GET+POST, fresh server) stranded", burst.stranded as f64, "conns", Goal::AtMost(0.0));
    report.row("burst c256 (GET+POST, fresh server) errors", burst.errors as f64, "count", Goal::AtMost(0.0));
    report.row("burst c256 (GET+POST, fresh server) answers", burst.answers as f64, "count", Goal::None);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    report.row("burst c256 first answer p50", ms(burst.first_answer_p50), "ms", Goal::None);
    report.row("burst c256 first answer max", ms(burst.first_answer_max), "ms", Goal::None);
}

/// Items 3 and 4: RSS per queued id with 1,000,000 queued, GET /status throughput with that
/// queue against the same server empty, and the latency of one POST of 10,000 ids.
pub fn memory_and_scale(setup: &Setup, report: &mut Report) {
    let server = start_ingestd(setup, &["--interval", "1h", "--max-queued-ids", "100000000"]);
    let (status_path, _) = ten_batches(&server);
    let get = |server: &Server| wrk::run(&server.url(""), &Request::Get(&status_path), 32, setup.seconds);
    let empty = get(&server);
    let idle = server.rss();
    let mut conn = Conn::open(&server.addr).expect("connect");
    for n in 0..1_000u32 {
        client::ingest(&mut conn, &client::ingest_body(n * 1_000 + 1, 1_000, "LOW"));
    }
    let full_rss = server.rss();
    let per_id = (full_rss.saturating_sub(idle)) as f64 / 1e6;
    report.row("memory: RSS idle (after a GET load)", idle as f64 / 1048576.0, "MiB", Goal::None);
    report.row("memory: RSS with 1,000,000 ids queued", full_rss as f64 / 1048576.0, "MiB", Goal::None);
    report.row("memory: bytes per queued id", per_id, "B", Goal::AtMost(32.0));
    let full = get(&server);
    report.row("scale: GET /status c32, 30 ids queued", empty.rps, "req/s", Goal::None);
    report.row("scale: GET /status c32, 1,000,030 ids queued", full.rps, "req/s", Goal::None);
    report.row("scale: full/empty", full.rps / empty.rps, "ratio", Goal::AtLeast(0.9));
    let body = client::ingest_body(1, 10_000, "LOW");
    let mut times: Vec<f64> = (0..20)
        .map(|_| {
            let began = Instant::now();
            client::ingest(&mut conn, &body);
            began.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    report.row("scale: POST /ingest of 10,000 ids, p50 of 20", times[10], "ms", Goal::None);
    report.row("scale: POST /ingest of 10,000 ids, max of 20", times[19], "ms", Goal::None);
}

/// Item 5: durable against in-memory POST throughput at 32 connections, and fsync latency.
pub fn durable(setup: &Setup, report: &mut Report) {
    let data = setup.target.join("bench-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("create target/bench-data");
    let journal = data.join("journal");
    let memory = start_ingestd(setup, &["--interval", "1h"]);
    let durable = start_ingestd(setup, &["--interval", "1h", "--data-dir", journal.to_str().expect("a UTF-8 path")]);
    let post = |server: &Server| wrk::run(&server.url(""), &Request::Script(POST_SCRIPT, &[]), 32, setup.seconds);
    let (m, d) = alternate(setup.rounds.max(2), || post(&memory), || post(&durable));
    report.row("durable: POST c32 in-memory", m.rps, "req/s", Goal::None);
    report.row("durable: POST c32 durable", d.rps, "req/s", Goal::None);
    report.row("durable: durable/in-memory", d.rps / m.rps, "ratio", Goal::AtLeast(0.5));
    report.row("durable: POST c32 durable p99", d.p99_ms, "ms", Goal::None);
    drop((memory, durable));
    let out =
        Command::new(setup.examples.join("fsync_latency")).arg(&data).arg("500").output().expect("run fsync_latency");
    let fsync: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fsync_latency prints JSON");
    report.row("durable: fsync p50 (this disk)", fsync["fsync_ms_p50"].as_f64().unwrap_or(f64::NAN), "ms", Goal::None);
    report.row("durable: fsync p99 (this disk)", fsync["fsync_ms_p99"].as_f64().unwrap_or(f64::NAN), "ms", Goal::None);
    let _ = std::fs::remove_dir_all(&data);
}

/// Issue 11: durable POST latency while the journal compacts, with `BENCH_COMPACTION_IDS`
/// (default 5,000,000) ids queued. A durable server (`--interval 1h`, so nothing leaves) is
/// filled with POSTs of 10,000 ids, then started again on that journal with the hidden
/// compaction knobs set so that a compaction starts as soon as the last one ends
/// (`INGESTD_COMPACTION_MIN_RECORDS=1`, `INGESTD_COMPACTION_DEAD_PERCENT=0`; a build without
/// them never compacts here, and the count below says so). Once the first one is under way,
/// wrk POSTs at 32 connections; the compactions that ended in the window come from the log.
pub fn compaction(setup: &Setup, report: &mut Report) {
    const PER_POST: u32 = 10_000;
    let ids: u32 = crate::env_or("BENCH_COMPACTION_IDS", 5_000_000);
    let data = setup.target.join("bench-compaction");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("create target/bench-compaction");
    let log = data.join("ingestd.log");
    let journal = data.join("journal");
    let journal = journal.to_str().expect("a UTF-8 path");
    let args = ingestd_args(setup, &["--addr", "127.0.0.1:0", "--interval", "1h", "--data-dir", journal]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let filled = Instant::now();
    {
        // Filled without the knobs: 500 groups stay under the default 10,000 records.
        let server = Server::start(&setup.ingestd, &args, None);
        let mut conn = Conn::open(&server.addr).expect("connect");
        for first in (0..ids / PER_POST).map(|n| 1 + (n * PER_POST) % 1_000_000) {
            client::ingest(&mut conn, &client::ingest_body(first, PER_POST, "LOW"));
        }
    }
    report.note(format!("compaction: {ids} ids queued in {:.1} s", filled.elapsed().as_secs_f64()));
    let knobs = ["env", "INGESTD_COMPACTION_MIN_RECORDS=1", "INGESTD_COMPACTION_DEAD_PERCENT=0"];
    let server = Server::start_under(&knobs, &setup.ingestd, &args, Some(&log));
    let count = |what: &str| std::fs::read_to_string(&log).unwrap_or_default().matches(what).count();
    // The first compaction comes at the first housekeeping tick (1 s) or group.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("compacting the journal") + count("compacted the journal") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = count("compacted the journal");
    // Latency from h2load's log of every request; wrk's percentiles are shown beside them (see
    // bench/README.md for a run where they could not be true), and the server's own histogram.
    let body = data.join("body.json");
    std::fs::write(&body, client::ingest_body(1, 5, "MEDIUM")).expect("write the request body");
    let load = h2load::post(&server.url("/ingest"), &body, 32, setup.seconds, &data.join("h2load.log"));
    let by_wrk = wrk::run(&server.url(""), &Request::Script(POST_SCRIPT, &[]), 32, setup.seconds);
    let compactions = count("compacted the journal") - before;
    report.row("compaction: POST c32 durable p99 while compacting", load.p99_ms, "ms", Goal::AtMost(20.0));
    report.row("compaction: POST c32 durable max", load.max_ms, "ms", Goal::None);
    report.row("compaction: POST c32 durable", load.rps, "req/s", Goal::None);
    report.row("compaction: POST c32 durable p99, by wrk", by_wrk.p99_ms, "ms", Goal::None);
    report.row("compaction: POST c32 durable max, by wrk", by_wrk.max_ms, "ms", Goal::None);
    let (slow, all) = slow_ingests(&server, "0.01");
    report.row("compaction: POSTs the server took > 10 ms over (its histogram)", slow as f64, "count", Goal::None);
    report.row("compaction: POSTs the server answered (its histogram)", all as f64, "count", Goal::None);
    report.row("compaction: compactions ended in the window", compactions as f64, "count", Goal::AtLeast(1.0));
    report.row("compaction: errors", (load.errors + by_wrk.errors) as f64, "count", Goal::AtMost(0.0));
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// How many `POST /ingest` the server's own histogram has above the bucket `le`, and in all.
fn slow_ingests(server: &Server, le: &str) -> (u64, u64) {
    let mut conn = Conn::open(&server.addr).expect("connect");
    let (_, body) = conn.call("GET", "/metrics", "").expect("a metrics answer");
    let text = String::from_utf8_lossy(&body);
    let bucket = |le: &str| {
        let wanted = format!("ingestd_http_request_duration_seconds_bucket{{route=\"/ingest\",le=\"{le}\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&wanted)).and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    let all = bucket("+Inf");
    (all - bucket(le).min(all), all)
}

/// Issue 5's figures, from its own bench: bursts of 64/256/1024 and 1,000 stalled connections.
pub fn hardening(setup: &Setup, report: &mut Report) {
    let out =
        Command::new(setup.examples.join("hardening_bench")).arg(&setup.ingestd).output().expect("run hardening_bench");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        report.note(format!("hardening: {line}"));
    }
}

/// A/B: this build's ingestd ("a") against another build (`BENCH_AGAINST`, "b"), alternating
/// on the same machine, on the headline figures a change in the request path moves: POST
/// /ingest at 32 and 256 connections and GET /status at 256 in memory, and POST at 32 durable.
/// E.g. a build with one channel or lock replaced by another.
pub fn against(setup: &Setup, other: &Path, report: &mut Report) {
    let memory = ["--interval", "1h", "--max-queued-ids", "1000000000"];
    let (a, b) = (start_binary(&setup.ingestd, setup, &memory), start_binary(other, setup, &memory));
    let (status_a, _) = ten_batches(&a);
    let (status_b, _) = ten_batches(&b);
    let post = Request::Script(POST_SCRIPT, &[]);
    for connections in [32, 256] {
        let run = |server: &Server| wrk::run(&server.url(""), &post, connections, setup.seconds);
        let (la, lb) = alternate(setup.rounds, || run(&a), || run(&b));
        compare(report, &format!("POST /ingest c{connections}"), la, lb);
    }
    let get = |server: &Server, path: &str| wrk::run(&server.url(""), &Request::Get(path), 256, setup.seconds);
    let (la, lb) = alternate(setup.rounds, || get(&a, &status_a), || get(&b, &status_b));
    compare(report, "GET /status c256", la, lb);
    drop((a, b));
    let data = setup.target.join("bench-against");
    let _ = std::fs::remove_dir_all(&data);
    let journal = |name: &str| data.join(name).to_str().expect("a UTF-8 path").to_owned();
    let (journal_a, journal_b) = (journal("a"), journal("b"));
    let a = start_binary(&setup.ingestd, setup, &["--interval", "1h", "--data-dir", &journal_a]);
    let b = start_binary(other, setup, &["--interval", "1h", "--data-dir", &journal_b]);
    let run = |server: &Server| wrk::run(&server.url(""), &post, 32, setup.seconds);
    let (la, lb) = alternate(setup.rounds.max(2), || run(&a), || run(&b));
    compare(report, "durable POST /ingest c32", la, lb);
    drop((a, b));
    let _ = std::fs::remove_dir_all(&data);
}

fn compare(report: &mut Report, item: &str, a: Load, b: Load) {
    report.row(format!("against: {item} a (this build)"), a.rps, "req/s", Goal::None);
    report.row(format!("against: {item} b"), b.rps, "req/s", Goal::None);
    report.row(format!("against: {item} b/a"), b.rps / a.rps, "ratio", Goal::None);
    report.row(format!("against: {item} p99 a"), a.p99_ms, "ms", Goal::None);
    report.row(format!("against: {item} p99 b"), b.p99_ms, "ms", Goal::None);
    report.row(format!("against: {item} errors a+b"), (a.errors + b.errors) as f64, "count", Goal::AtMost(0.0));
}
