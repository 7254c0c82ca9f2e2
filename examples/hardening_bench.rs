//! Figures for issues 5 and 11, against a release `ingestd` binary started afresh for each run:
//! bursts of new keep-alive connections (stranded count, p99 time to first answer), the
//! latency of a new client's `/status` while 1,000 connections stall, and 1,000 connections
//! sending a request line tiny_http cannot answer (`GET /health HTTP/2.0`): each gets `505` or
//! is closed within the idle timeout, and the threads and file descriptors they took are given
//! back; and a new client's `/health` while 300 connections pipeline requests and never read
//! the answers. Run by `bench/hardening.sh`; timing bounds live here, never in `make test`.
//!
//! Usage: hardening_bench PATH_TO_INGESTD [versions|bursts|pipelines] (that scenario alone)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

struct Ingestd {
    child: Child,
    addr: String,
}

impl Ingestd {
    fn start(bin: &str, args: &[&str]) -> Ingestd {
        let mut child = Command::new(bin)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ingestd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().trim_start_matches("listening on http://").to_owned();
        Ingestd { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().split(' ').next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Ingestd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_answer(reader: &mut impl BufRead) -> Option<u16> {
    let (mut length, mut status, mut line) = (0, None, String::new());
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if status.is_none() {
            status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
            continue;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    status
}

fn percentile(mut values: Vec<Duration>, p: usize) -> Duration {
    values.sort();
    values.get(values.len().saturating_sub(1) * p / 100).copied().unwrap_or_default()
}

/// `connections` new keep-alive connections at once, each sending `GET /health` back to back for
/// `window`; returns (stranded, p99 time to first answer).
fn burst(addr: &str, connections: usize, window: Duration) -> (usize, Duration) {
    let start = Arc::new(Barrier::new(connections));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (addr, start) = (addr.to_owned(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let stream = TcpStream::connect(&addr).expect("connect");
                stream.set_read_timeout(Some(window + Duration::from_secs(2))).unwrap();
                let began = Instant::now();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut first = None;
                while began.elapsed() < window {
                    let sent = writer.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n").is_ok();
                    if !sent || read_answer(&mut reader).is_none() || began.elapsed() > window {
                        break;
                    }
                    first.get_or_insert_with(|| began.elapsed());
                }
                first
            })
        })
        .collect();
    let firsts: Vec<Option<Duration>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let stranded = firsts.iter().filter(|f| f.is_none()).count();
    (stranded, percentile(firsts.into_iter().flatten().collect(), 99))
}

fn timed_get(addr: &str, path: &str) -> (Option<u16>, Duration) {
    let began = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes()).unwrap();
    let status = read_answer(&mut BufReader::new(stream));
    (status, began.elapsed())
}

/// 1,000 stalled connections (silent, inside a head, inside a body), then new clients' `/status`.
fn stalled(bin: &str, count: usize) {
    let server = Ingestd::start(bin, &["--interval", "1h"]);
    let mut post = TcpStream::connect(&server.addr).unwrap();
    let body = r#"{"ids": [1, 2, 3], "priority": "LOW"}"#;
    write!(post, "POST /ingest HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut reader = BufReader::new(post.try_clone().unwrap());
    let mut line = String::new();
    let mut id = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(at) = line.find("\"ingestion_id\":\"") {
            id = line[at + 16..at + 52].to_owned();
            break;
        }
        line.clear();
    }
    let rss_before = server.rss_kib();
    let mut held = Vec::with_capacity(count);
    for n in 0..count {
        let mut conn = TcpStream::connect(&server.addr).expect("connect a stalled client");
        let _ = match n % 10 {
            0 | 1 => conn.write_all(b"POST /ingest HTTP/1.1\r\nHost: b\r\nContent-Length: 5000\r\n\r\n{\"ids\""),
            2..=5 => conn.write_all(b"GET /status/"),
            _ => Ok(()),
        };
        held.push(conn);
    }
    // Let the server take them all in before measuring.
    let settle = Instant::now();
    while timed_get(&server.addr, "/health").1 > Duration::from_millis(50) && settle.elapsed() < Duration::from_secs(10)
    {
    }
    let mut times = Vec::new();
    let mut failures = 0;
    for _ in 0..100 {
        let (status, took) = timed_get(&server.addr, &format!("/status/{id}"));
        failures += usize::from(status != Some(200));
        times.push(took);
    }
    let rss_after = server.rss_kib();
    let max = times.iter().max().copied().unwrap_or_default();
    println!(
        "stalled {count}: new client /status p50 {:?} p99 {:?} max {max:?}, {failures} failed; server RSS {} KiB -> {} KiB{}",
        percentile(times.clone(), 50),
        percentile(times, 99),
        rss_before,
        rss_after,
        if max > Duration::from_millis(100) { "  ** OVER 100 ms **" } else { "" }
    );
    drop(held);
}

/// `count` connections each pipeline 200 `GET /openapi.json` (about 2 MB of answers) and never
/// read; then a new client's `/health`, 20 times, and the server's threads and RSS.
fn pipelines(bin: &str, count: usize) {
    let server = Ingestd::start(bin, &["--interval", "1h"]);
    let pid = server.child.id();
    let before = (threads(pid), server.rss_kib());
    let pipeline = "GET /openapi.json HTTP/1.1\r\nHost: b\r\n\r\n".repeat(200);
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut conn = TcpStream::connect(&server.addr).expect("connect a pipelining client");
        conn.set_nonblocking(true).unwrap();
        let _ = conn.write(pipeline.as_bytes());
        held.push(conn);
    }
    let times: Vec<Duration> = (0..20).map(|_| timed_get(&server.addr, "/health").1).collect();
    let max = times.iter().max().copied().unwrap_or_default();
    println!(
        "pipelines {count} (200 deep, never read): new client /health p50 {:?} max {max:?}{}; threads {} -> {}, \
         RSS {} KiB -> {} KiB",
        percentile(times.clone(), 50),
        if max > Duration::from_secs(1) { "  ** OVER 1 s **" } else { "" },
        before.0,
        threads(pid),
        before.1,
        server.rss_kib()
    );
    drop(held);
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Issue 11: `count` connections send `GET /health HTTP/2.0`; half close at once, half stay
/// open and wait for their answer. Every open one must get `505` or be closed within the idle
/// timeout; threads and fds are counted before, just after, and 2 s after the idle timeout;
/// a new client's `/status` is timed meanwhile.
fn bad_versions(bin: &str, count: usize) {
    let idle = Duration::from_secs(3);
    let server = Ingestd::start(bin, &["--interval", "1h", "--idle-timeout", "3s"]);
    let pid = server.child.id();
    let (status, _) = timed_get(&server.addr, "/health");
    assert_eq!(status, Some(200), "the server answers");
    let before = (threads(pid), fds(pid));
    let began = Instant::now();
    // Each open connection with when its line was sent.
    let mut open = Vec::with_capacity(count / 2);
    let mut refused_connects = 0;
    for n in 0..count {
        let Ok(mut conn) = TcpStream::connect(&server.addr) else {
            refused_connects += 1;
            continue;
        };
        let _ = conn.write_all(b"GET /health HTTP/2.0\r\nHost: bench\r\n\r\n");
        if n % 2 == 0 {
            drop(conn);
        } else {
            open.push((conn, Instant::now()));
        }
    }
    let sent = began.elapsed();
    let during = (threads(pid), fds(pid));
    let mut times: Vec<Duration> = (0..20).map(|_| timed_get(&server.addr, "/health").1).collect();
    let (mut answered, mut closed, mut late) = (0, 0, 0);
    for (conn, sent_at) in &mut open {
        let left = (*sent_at + idle).saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        conn.set_read_timeout(Some(left)).unwrap();
        let mut reader = BufReader::new(&*conn);
        match read_answer(&mut reader) {
            Some(505) => answered += 1,
            Some(_) => late += 1,
            None if sent_at.elapsed() < idle => closed += 1,
            None => late += 1,
        }
    }
    drop(open);
    times.extend((0..20).map(|_| timed_get(&server.addr, "/health").1));
    let status_max = times.iter().max().copied().unwrap_or_default();
    let after_at = began + sent + idle + Duration::from_secs(2);
    thread::sleep(after_at.saturating_duration_since(Instant::now()));
    let after = (threads(pid), fds(pid));
    let back_within = |(threads, fds): (usize, usize)| threads <= before.0 + 10 && fds <= before.1 + 10;
    let back = back_within(after);
    // tiny_http's spare pool threads leave after 5 s without a task: when are they all gone?
    let waited = Instant::now();
    while !back_within((threads(pid), fds(pid))) && waited.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(100));
    }
    let settled = (threads(pid), fds(pid));
    println!(
        "HTTP/2.0 x{count} (half closed at once, sent in {sent:?}): of {} left open, {answered} got 505, {closed} closed \
         without one, {late} neither within the idle timeout ({idle:?}){}; {refused_connects} connects failed",
        count / 2,
        if late > 0 { "  ** LATE **" } else { "" }
    );
    println!(
        "  threads/fds before {before:?}, just after sending {during:?}, 2 s after the last one's idle timeout \
         {after:?}{}; {settled:?} {:?} later",
        if back { "" } else { "  ** NOT BACK WITHIN 10 **" },
        waited.elapsed(),
    );
    println!(
        "  new client /health meanwhile: p50 {:?} max {status_max:?}{}",
        percentile(times.clone(), 50),
        if status_max > Duration::from_millis(100) { "  ** OVER 100 ms **" } else { "" }
    );
}

fn main() {
    let bin = std::env::args().nth(1).expect("usage: hardening_bench PATH_TO_INGESTD [versions|bursts|pipelines]");
    let only = std::env::args().nth(2);
    let wanted = |scenario: &str| only.as_deref().is_none_or(|only| only == scenario);
    if wanted("versions") {
        bad_versions(&bin, 1000);
    }
    if wanted("pipelines") {
        pipelines(&bin, 300);
    }
    if wanted("bursts") {
        for connections in [64, 256, 1024] {
            for run in 1..=3 {
                let server = Ingestd::start(&bin, &["--interval", "1h"]);
                let (stranded, p99) = burst(&server.addr, connections, Duration::from_secs(3));
                println!("burst {connections} run {run}: {stranded} stranded, p99 time to first answer {p99:?}");
            }
        }
    }
    if only.is_none() {
        stalled(&bin, 1000);
    }
}
