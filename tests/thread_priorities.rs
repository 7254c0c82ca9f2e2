//! The real binary's threads and their nice values: every HTTP thread, ours and tiny_http's
//! (including connection threads it adds under load), runs lowered; the core threads do not.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{wait_for, Server};

/// How much the HTTP threads are lowered (`realtime::HTTP_NICENESS`).
const LOWERED_BY: i64 = 10;

/// Each thread of `pid` as (tid, name, nice value).
fn threads(pid: u32) -> Vec<(u32, String, i64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the process's threads");
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let tid = path.file_name()?.to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(path.join("comm")).ok()?.trim().to_owned();
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // After the name in parentheses: field 3 (state) onward; the nice value is field 19.
            let nice = stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()?;
            Some((tid, name, nice))
        })
        .collect()
}

/// The scheduling policy of each thread of `pid` by name (0 is `SCHED_OTHER`, 1 `SCHED_FIFO`).
fn policies(pid: u32) -> BTreeMap<String, Vec<i64>> {
    let mut by_name: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the process's threads").flatten() {
        let path = task.path();
        let (Ok(name), Ok(stat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("stat")))
        else {
            continue;
        };
        // Field 41 of stat, counted from field 3 after the name in parentheses.
        let policy = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(38)?.parse::<i64>().ok());
        by_name.entry(name.trim().to_owned()).or_default().extend(policy);
    }
    by_name
}

/// Opens `n` connections at once and gets one answer on each, so that tiny_http's pool has a
/// thread per connection; returns them open.
fn busy_connections(server: &Server, n: usize) -> Vec<TcpStream> {
    let addr = server.base.trim_start_matches("http://");
    let mut conns: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    for conn in &mut conns {
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    }
    for conn in &mut conns {
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let read = conn.read(&mut buf).expect("an answer");
        assert!(buf[..read].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..read]));
    }
    conns
}

#[test]
fn http_threads_run_lowered_and_the_core_threads_do_not() {
    let server = Server::start(&["--threads", "4"]);
    let pid = server.pid();
    let _open = busy_connections(&server, 12);
    // 4 pumps, 4 body handlers, http-accept, two relays, tiny_http's accept thread and a pool
    // thread per open connection, besides main, pacer and worker. The pool thread that took the
    // last connection may still be starting: wait for them all.
    let expected_http = 4 + 4 + 1 + 2 + 1 + 12;
    let all = wait_for("tiny_http's connection threads", Duration::from_secs(10), || {
        let all = threads(pid);
        (all.len() >= 3 + expected_http).then_some(all)
    });
    let base = all.iter().find(|(tid, _, _)| *tid == pid).expect("the main thread").2;
    let mut nice_by_name: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, name, nice) in &all {
        nice_by_name.entry(name.clone()).or_default().push(*nice);
    }
    for core in ["pacer", "worker"] {
        assert_eq!(nice_by_name.get(core), Some(&vec![base]), "{core}: {nice_by_name:?}");
    }
    let lowered = (base + LOWERED_BY).min(19);
    let mut http = 0;
    for (tid, name, nice) in &all {
        // The core threads, and the main thread that only waits for a signal.
        if *tid == pid || ["pacer", "worker", "log-writer", "journal", "store-sweep"].contains(&name.as_str()) {
            continue;
        }
        assert_eq!(*nice, lowered, "thread {tid} {name:?} is not lowered: {nice_by_name:?}");
        http += 1;
    }
    assert!(http >= expected_http, "only {http} HTTP threads: {nice_by_name:?}");
    let (_, stderr) = server.terminate();
    assert!(stderr.contains(&format!("http-start and the threads it starts: nice {lowered}")), "{stderr}");
}

#[test]
fn the_log_writer_never_runs_real_time() {
    let server = Server::start(&[]);
    let by_name = wait_for("the log-writer thread", Duration::from_secs(10), || {
        let by_name = policies(server.pid());
        by_name.contains_key("log-writer").then_some(by_name)
    });
    // Real-time, it would compete with the pacer for the CPU whenever a record is written.
    assert_eq!(by_name.get("log-writer"), Some(&vec![0]), "{by_name:?}");
}
