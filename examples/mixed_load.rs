//! Mixed load for `make bench` and `make soak`: keep-alive connections alternating POST /ingest
//! and GET /status, then proof that nothing acknowledged was lost, plus the pacer's precision
//! from its JSON release log and the server's memory over time.
//!
//! Usage: `mixed_load BASE_URL CONNECTIONS SECONDS GETS_PER_POST SERVER_PID RELEASE_LOG INTERVAL_MS`
//! Prints one JSON object. Exits 1 if any request failed or any acknowledgement was lost.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use diagnose::{number, sample_steal, steal_ticks};

#[path = "bench/diagnose.rs"]
mod diagnose;

/// One keep-alive HTTP/1.1 connection, read by hand so every answer is counted.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    fn call(&mut self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(request.as_bytes()).ok()?;
        let mut line = String::new();
        self.reader.read_line(&mut line).ok()?;
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).ok()?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok()?;
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).ok()?;
        Some((status, String::from_utf8(body).ok()?))
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    queue_full: u64,
    /// (ingestion id, the ids sent)
    acked: Vec<(String, Vec<u32>)>,
}

fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{name}\":\""))? + name.len() + 4;
    json[start..].split('"').next()
}

fn client(addr: String, n: u32, gets_per_post: u32, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let Ok(mut conn) = Conn::open(&addr) else {
        tally.failed += 1;
        return tally;
    };
    let priorities = ["HIGH", "MEDIUM", "LOW"];
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<u32> = (0..3 + round % 4).map(|k| 1 + (n * 7919 + round * 31 + k) % 1_000_000_007).collect();
        let body = format!(r#"{{"ids": {ids:?}, "priority": "{}"}}"#, priorities[(round % 3) as usize]);
        match conn.call("POST", "/ingest", &body) {
            Some((200, answer)) => match field(&answer, "ingestion_id") {
                Some(id) => {
                    tally.ok += 1;
                    tally.acked.push((id.to_owned(), ids));
                }
                None => tally.failed += 1,
            },
            Some((503, answer)) if answer.contains("queue_full") => tally.queue_full += 1,
            _ => {
                tally.failed += 1;
                return tally;
            }
        }
        for _ in 0..gets_per_post {
            let Some((id, _)) = tally.acked.last() else { break };
            match conn.call("GET", &format!("/status/{id}"), "") {
                Some((200, _)) => tally.ok += 1,
                _ => {
                    tally.failed += 1;
                    return tally;
                }
            }
        }
        round += 1;
    }
    tally
}

/// Every acknowledged ingestion is there, with the ids that were sent.
fn lost(addr: &str, acked: &[(String, Vec<u32>)]) -> usize {
    let mut conn = Conn::open(addr).expect("connect to verify");
    acked
        .iter()
        .filter(|(id, ids)| match conn.call("GET", &format!("/status/{id}"), "") {
            Some((200, body)) => {
                let digits: String = ids.iter().map(|i| format!("{i},")).collect();
                let found: String = body
                    .split("\"ids\":[")
                    .skip(1)
                    .map(|s| s.split(']').next().unwrap_or_default().to_owned() + ",")
                    .collect();
                found != digits
            }
            _ => true,
        })
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// What the release log says of the pacing.
struct Pacing {
    /// The smallest gap between two releases, in µs.
    gap: u64,
    /// Lateness p50, p99 and max, in µs.
    p50: f64,
    p99: f64,
    max: f64,
    releases: usize,
    /// The three latest releases, each as where its lateness went.
    worst: Vec<String>,
    /// Other threads' holds of the queue lock long enough to delay a release: how many, the
    /// longest (µs).
    long_holds: (usize, u64),
}

fn pacing(log: &str, steals: &[(u64, u64)]) -> Pacing {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let releases: Vec<(u64, u64)> =
        text.lines().filter_map(|l| Some((number(l, "release_us")?, number(l, "late_ns")?))).collect();
    let (worst, long_holds) = diagnose::latest(&text, steals, (0, u64::MAX), 3);
    let gap = releases.windows(2).map(|w| w[1].0 - w[0].0).min().unwrap_or(0);
    let mut late: Vec<u64> = releases.iter().map(|r| r.1).collect();
    late.sort_unstable();
    let at = |q: f64| late.get(((late.len().max(1) - 1) as f64 * q) as usize).map_or(0.0, |&n| n as f64 / 1e3);
    Pacing { gap, p50: at(0.5), p99: at(0.99), max: at(1.0), releases: releases.len(), worst, long_holds }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, connections, seconds, gets_per_post, pid, log, interval_ms] = args.as_slice() else {
        eprintln!("usage: mixed_load BASE_URL CONNECTIONS SECONDS GETS_PER_POST SERVER_PID RELEASE_LOG INTERVAL_MS");
        std::process::exit(2);
    };
    let addr = base.trim_start_matches("http://").to_owned();
    let (connections, seconds): (u32, u64) = (connections.parse().unwrap(), seconds.parse().unwrap());
    let (gets_per_post, pid): (u32, u32) = (gets_per_post.parse().unwrap(), pid.parse().unwrap());
    let interval_us: u64 = interval_ms.parse::<u64>().unwrap() * 1000;
    let stop = Arc::new(AtomicBool::new(false));
    let rss_idle = rss_kib(pid);
    let steal_before = steal_ticks();
    let steals = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || sample_steal(&stop))
    };
    let clients: Vec<_> = (0..connections)
        .map(|n| {
            let (addr, stop) = (addr.clone(), Arc::clone(&stop));
            thread::spawn(move || client(addr, n, gets_per_post, stop))
        })
        .collect();
    let started = Instant::now();
    let mut rss = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_secs(1).min(Duration::from_secs(seconds).saturating_sub(started.elapsed())));
        rss.push(rss_kib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let elapsed = started.elapsed().as_secs_f64();
    let acked: Vec<(String, Vec<u32>)> = tallies.iter().flat_map(|t| t.acked.iter().cloned()).collect();
    let (ok, failed, full) = tallies.iter().fold((0, 0, 0), |a, t| (a.0 + t.ok, a.1 + t.failed, a.2 + t.queue_full));
    let lost = lost(&addr, &acked);
    let steals = steals.join().unwrap();
    let Pacing { gap, p50, p99, max, releases, worst, long_holds: (long_holds, longest_hold) } = pacing(log, &steals);
    let steal = steal_ticks().saturating_sub(steal_before);
    let worst = worst.iter().map(|w| format!("{w:?}")).collect::<Vec<_>>().join(", ");
    let tenth = rss.len() / 10;
    let (early, late) = (rss.get(tenth).copied().unwrap_or(0), rss.last().copied().unwrap_or(0));
    println!(
        "{{\"connections\": {connections}, \"seconds\": {elapsed:.1}, \"requests_ok\": {ok}, \"requests_per_s\": {:.0}, \
         \"failed\": {failed}, \"queue_full\": {full}, \"acknowledged\": {}, \"lost\": {lost}, \"releases\": {releases}, \
         \"min_gap_us\": {gap}, \"interval_us\": {interval_us}, \"late_us_p50\": {p50:.1}, \"late_us_p99\": {p99:.1}, \
         \"late_us_max\": {max:.1}, \"latest_releases\": [{worst}], \"cpu_stolen_ticks\": {steal}, \"queue_lock_holds_over_2ms\": {long_holds}, \"longest_queue_lock_hold_us\": {longest_hold}, \"rss_kib_idle\": {rss_idle}, \"rss_kib_at_10pct\": {early}, \"rss_kib_end\": {late}, \
         \"rss_kib_per_1000_acked\": {:.1}}}",
        ok as f64 / elapsed,
        acked.len(),
        late.saturating_sub(rss_idle) as f64 * 1000.0 / acked.len().max(1) as f64
    );
    // No release records means no proof of pacing: the log must be `--log-format json`.
    let gap_ok = releases >= 2 && gap >= interval_us;
    if failed > 0 || lost > 0 || !gap_ok {
        std::process::exit(1);
    }
}
