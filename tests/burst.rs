//! A burst of new keep-alive connections to a fresh server: every one must be served.
//! (tiny_http 0.12.0 strands some of them without `src/http/compat/strand.rs`; wrk would not
//! notice, so this counts answers per connection.)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

/// Opens `connections` at once, each sending `GET /health` back to back for `duration`;
/// returns the answers each connection got and the time to its first answer.
fn burst(base: &str, connections: usize, duration: Duration) -> Vec<(usize, Option<Duration>)> {
    let addr = base.trim_start_matches("http://").to_owned();
    let start = Arc::new(Barrier::new(connections));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (addr, start) = (addr.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let stream = TcpStream::connect(&addr).expect("connect");
                stream.set_read_timeout(Some(duration + Duration::from_secs(2))).unwrap();
                let began = Instant::now();
                let (mut answers, mut first) = (0, None);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                while began.elapsed() < duration {
                    let sent = writer.write_all(b"GET /health HTTP/1.1\r\nHost: burst\r\n\r\n").is_ok();
                    // An answer after the window counts for nothing: a stranded connection is
                    // read only once the others close.
                    if !sent || !read_answer(&mut reader) || began.elapsed() > duration {
                        break;
                    }
                    answers += 1;
                    first.get_or_insert_with(|| began.elapsed());
                }
                (answers, first)
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().unwrap()).collect()
}

fn read_answer(reader: &mut impl BufRead) -> bool {
    let mut length = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = vec![0; length.unwrap_or(0)];
    reader.read_exact(&mut body).is_ok()
}

#[test]
fn sixty_four_new_keep_alive_connections_are_all_served() {
    let server = common::Server::start(&["--interval", "1h"]);
    let results = burst(&server.base, 64, Duration::from_millis(1500));
    let stranded = results.iter().filter(|(answers, _)| *answers == 0).count();
    let mut firsts: Vec<Duration> = results.iter().filter_map(|r| r.1).collect();
    firsts.sort();
    let p99 = firsts.get(firsts.len().saturating_sub(1) * 99 / 100).copied();
    eprintln!("64 connections: {stranded} stranded, p99 time to first answer {p99:?}");
    assert_eq!(stranded, 0, "connections that never got an answer");
}

#[test]
fn a_first_request_waiting_for_its_body_is_not_taken_for_stranded() {
    let server = common::Server::start(&["--interval", "1h"]);
    // Both counts from one answer, on one kept-alive connection: after its first request, the
    // scrapes' own connection is never looked at.
    let agent = ureq::AgentBuilder::new().build();
    let counts = || {
        let text = agent.get(&format!("{}/metrics", server.base)).call().unwrap().into_string().unwrap();
        let count = |name: &str| -> f64 {
            let line = text.lines().find(|line| line.split(' ').next() == Some(name));
            line.and_then(|line| line.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("no {name}"))
        };
        (count("ingestd_http_pool_looks_total"), count("ingestd_http_pool_nudges_total"))
    };
    // Its own first request answered, and any looks at it done.
    let (looks_before, nudges_before) = common::wait_for("the scrape's looks to end", Duration::from_secs(10), || {
        let first = counts();
        std::thread::sleep(Duration::from_millis(200));
        (counts() == first).then_some(first)
    });
    let mut client = TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    let body = br#"{"ids": [1, 2, 3], "priority": "LOW"}"#;
    let head = format!("POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
    client.write_all(head.as_bytes()).unwrap();
    // The relay looks at an unanswered first request 5, 15, 35, 75 and 155 ms after it sent it,
    // and nudges only while tiny_http has not read it: on a busy machine tiny_http may take a
    // few milliseconds to start reading a new connection, but not all of that. Its looks end
    // at the first that finds the head read, or after the fifth.
    let nudges = common::wait_for("the relay's looks to end", Duration::from_secs(10), || {
        let (looks, nudges) = counts();
        let (looks, nudges) = (looks - looks_before, nudges - nudges_before);
        (looks > nudges || looks >= 5.0).then_some(nudges)
    });
    assert!(nudges < 5.0, "{nudges} nudges: every look nudged, though tiny_http had read the head");
    client.write_all(body).unwrap();
    let mut reader = BufReader::new(client);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}
