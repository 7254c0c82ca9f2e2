//! Nothing acknowledged is lost: `kill -9`, restarts, damaged journals and full disks, over
//! real HTTP against the `ingestd` binary with `--data-dir`.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{batch_statuses, rfc3339_ms, wait_for, Server, TempDir};
use serde_json::{json, Value};

fn durable(dir: &TempDir, args: &[&str]) -> Server {
    let mut all = vec!["--data-dir", dir.path()];
    all.extend_from_slice(args);
    Server::start(&all)
}

fn journal(dir: &TempDir) -> std::path::PathBuf {
    dir.0.join("journal.v2")
}

/// Where each group of a journal begins.
fn group_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = ingestd::journal::HEADER.len();
    while let Ok(header) = ingestd::journal::group_header(&bytes[at..]) {
        starts.push(at);
        at += ingestd::journal::GROUP_HEADER_LEN + header.len as usize;
    }
    starts
}

/// Starts `ingestd` expecting it to refuse at once; returns its exit code and stderr. One that
/// starts instead is killed and fails the test.
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ingestd started instead of refusing: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (exited.code(), stderr)
}

/// An acknowledged ingestion as its client saw it.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    ids: Vec<u32>,
    client: usize,
}

fn ids_of(status: &Value) -> Vec<u32> {
    status["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32))
        .collect()
}

fn batch_ids(status: &Value) -> Vec<String> {
    status["batches"].as_array().unwrap().iter().map(|b| b["batch_id"].as_str().unwrap().to_owned()).collect()
}

/// `clients` threads each post `each` ingestions back to back; returns what was acknowledged
/// (a post cut off by a crash is simply not acknowledged), and counts each in `acks` as it comes.
fn post_from_many(server: &Server, clients: usize, each: usize, first_id: u32, acks: &AtomicUsize) -> Vec<Acked> {
    let start = Arc::new(Barrier::new(clients));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let start = Arc::clone(&start);
                let base = server.base.clone();
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
                    start.wait();
                    let mut acked = Vec::new();
                    for i in 0..each {
                        let n = first_id + (c * 1000 + i * 10) as u32;
                        let ids: Vec<u32> = (n..n + 1 + (i as u32 % 5)).collect();
                        let priority = ["HIGH", "MEDIUM", "LOW"][(c + i) % 3];
                        let sent =
                            agent.post(&format!("{base}/ingest")).send_json(json!({"ids": ids, "priority": priority}));
                        let Ok(response) = sent else { break };
                        let Ok(body) = response.into_json::<Value>() else { break };
                        acked.push(Acked { id: body["ingestion_id"].as_str().unwrap().into(), ids, client: c });
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                    acked
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    })
}

/// Parses the restarted server's release log: (priority, ingestion id) in release order.
fn releases(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split_once("released batch ")?.1;
            let inside = rest.split_once('(')?.1;
            let priority = inside.split_whitespace().next()?.to_owned();
            let ingestion = inside.split_once("of ingestion ")?.1.split(',').next()?.to_owned();
            Some((priority, ingestion))
        })
        .collect()
}

#[test]
fn kill_9_mid_stream_loses_nothing_acknowledged() {
    let dir = TempDir::new("crash");
    let args = ["--interval", "25ms", "--fetch-delay", "1ms"];
    let server = durable(&dir, &args);
    let before = post_from_many(&server, 6, 8, 1, &AtomicUsize::new(0));
    // A snapshot of what was done before the crash.
    let seen: HashMap<String, Value> = before.iter().map(|a| (a.id.clone(), server.status(&a.id))).collect();
    let late_acks = AtomicUsize::new(0);
    let late = std::thread::scope(|scope| {
        let late = scope.spawn(|| post_from_many(&server, 6, 40, 100_000, &late_acks));
        // Mid-stream: after some late posts were acknowledged, long before all 240 are.
        wait_for("7 late posts to be acknowledged", Duration::from_secs(10), || {
            (late_acks.load(Ordering::SeqCst) >= 7).then_some(())
        });
        Command::new("kill").args(["-KILL", &server.pid().to_string()]).status().unwrap();
        late.join().unwrap()
    });
    drop(server);

    let server = durable(&dir, &["--interval", "10ms", "--fetch-delay", "1ms"]);
    let acked: Vec<Acked> = before.iter().chain(&late).cloned().collect();
    assert!(late.len() > 6, "the crash should come mid-stream, after some late posts ({})", late.len());
    for a in &acked {
        let status = server.status(&a.id);
        assert_eq!(ids_of(&status), a.ids, "ingestion {}", a.id);
        if let Some(old) = seen.get(&a.id) {
            assert_eq!(batch_ids(&status), batch_ids(old), "batch ids of {}", a.id);
            for (then, now) in old["batches"].as_array().unwrap().iter().zip(status["batches"].as_array().unwrap()) {
                if then["status"] == "completed" {
                    assert_eq!((&now["status"], &now["attempts"]), (&json!("completed"), &json!(1)), "{}", a.id);
                }
            }
        }
    }
    let agent = ureq::agent();
    wait_for("every acknowledged ingestion to complete", Duration::from_secs(30), || {
        let done = |a: &Acked| {
            let status: Value =
                agent.get(&format!("{}/status/{}", server.base, a.id)).call().unwrap().into_json().unwrap();
            status["status"] == "completed"
        };
        acked.iter().all(done).then_some(())
    });
    let (_, log) = server.terminate();

    // After the restart, what was queued went by priority, then by each client's posting order.
    let order = releases(&log);
    let rank = |p: &str| ["HIGH", "MEDIUM", "LOW"].iter().position(|x| *x == p).unwrap();
    let ranks: Vec<usize> = order.iter().skip(1).map(|(p, _)| rank(p)).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "priorities out of order after restart: {order:?}");
    let position: HashMap<&str, usize> = acked.iter().enumerate().map(|(i, a)| (a.id.as_str(), i)).collect();
    for client in 0..6 {
        for priority in ["HIGH", "MEDIUM", "LOW"] {
            let posted: Vec<usize> = order
                .iter()
                .filter(|(p, _)| p == priority)
                .filter_map(|(_, id)| position.get(id.as_str()).copied())
                .filter(|&i| acked[i].client == client)
                .collect();
            let mut sorted = posted.clone();
            sorted.sort();
            assert_eq!(posted, sorted, "client {client} {priority} released out of posting order");
        }
    }
}

#[test]
fn a_batch_interrupted_in_flight_runs_again_with_attempts_2() {
    let dir = TempDir::new("inflight");
    let server = durable(&dir, &["--interval", "50ms", "--fetch-delay", "5s"]);
    let id = server.ingest(&[1, 2, 3, 4], "MEDIUM");
    wait_for("the first batch to be triggered", Duration::from_secs(5), || {
        (server.status(&id)["batches"][0]["status"] == "triggered").then_some(())
    });
    server.crash();

    let server = durable(&dir, &["--interval", "50ms", "--fetch-delay", "1ms"]);
    let status = wait_for("the ingestion to complete", Duration::from_secs(10), || {
        let status = server.status(&id);
        (status["status"] == "completed").then_some(status)
    });
    assert_eq!(status["batches"][0]["attempts"], 2);
    assert_eq!(status["batches"][1]["attempts"], 1);
    let (_, log) = server.terminate();
    let order: Vec<String> = log.lines().filter(|l| l.contains("released batch")).map(str::to_owned).collect();
    assert!(order[0].contains("ids [1, 2, 3]"), "the interrupted batch goes first: {order:?}");
}

/// What waits has waited since it was accepted, across a restart: `GET /queue` said the
/// restart's time.
#[test]
fn the_oldest_waiting_work_keeps_its_arrival_across_a_restart() {
    let dir = TempDir::new("oldest");
    let args = ["--interval", "1h", "--fetch-delay", "1ms"];
    let server = durable(&dir, &args);
    // The first batch goes at once, the second waits an hour.
    server.ingest_released(&[1, 2, 3, 4], "LOW");
    let since = |server: &Server| server.get("/queue").json["priorities"][2]["oldest_waiting_since"].clone();
    let before = since(&server);
    assert!(before.is_string(), "{before}");
    wait_for("some time to pass", Duration::from_secs(5), || {
        let waited = server.get("/queue").json["priorities"][2]["oldest_waiting_seconds"].as_f64();
        waited.is_some_and(|s| s >= 0.2).then_some(())
    });
    server.terminate();
    let server = durable(&dir, &args);
    // The arrival is the acceptance time (a ms or two earlier), not the restart's.
    let after = since(&server);
    assert!((rfc3339_ms(&after) - rfc3339_ms(&before)).abs() < 50, "before the restart {before}, after {after}");
}

/// The dashboard's recent ingestions are the ones a restart recovered (it listed none), and
/// never one that expired (it listed them until newer ones pushed them out).
#[test]
fn the_dashboard_lists_recovered_ingestions_and_none_expired() {
    let dir = TempDir::new("dashboard");
    // Long enough that `done` is still listed when first read on a slow machine.
    let args = ["--interval", "1h", "--retain", "3s", "--fetch-delay", "1ms"];
    let listed = |server: &Server| -> Vec<String> {
        let dashboard = server.get("/dashboard.json").json;
        dashboard["ingestions"].as_array().unwrap().iter().map(|i| i["ingestion_id"].as_str().unwrap().into()).collect()
    };
    let server = durable(&dir, &args);
    let done = server.ingest(&[1], "HIGH");
    let waiting = server.ingest(&[2], "LOW");
    assert_eq!(listed(&server), [waiting.clone(), done.clone()], "newest first");
    server.terminate();
    let server = durable(&dir, &args);
    assert!(listed(&server).contains(&waiting), "{:?}", listed(&server));
    wait_for("the completed one to expire", Duration::from_secs(15), || {
        (server.get(&format!("/status/{done}")).status == 404).then_some(())
    });
    assert_eq!(listed(&server), [waiting]);
}

/// Expired ingestions are forgotten while work keeps coming: the journal swept them only after
/// a whole second without an operation, so under a steady load they stayed in memory.
#[test]
fn expired_ingestions_are_forgotten_under_a_steady_load() {
    let dir = TempDir::new("sweep");
    let server = durable(&dir, &["--interval", "50ms", "--retain", "500ms", "--fetch-delay", "1ms"]);
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(3) {
        server.ingest(&[1], "LOW");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.crash();
    assert!(log.contains("past the retention period"), "nothing was forgotten under load: {log}");
}

#[test]
fn the_interval_holds_across_a_crash_and_restart() {
    let dir = TempDir::new("ratelimit");
    let interval = Duration::from_secs(2);
    let server = durable(&dir, &["--interval", "2s", "--fetch-delay", "1ms"]);
    let posted = Instant::now();
    let id = server.ingest(&[1, 2, 3, 4], "HIGH");
    wait_for("the first release", Duration::from_secs(5), || {
        (server.status(&id)["batches"][0]["status"] != "yet_to_start").then_some(())
    });
    server.crash();
    let server = durable(&dir, &["--interval", "2s", "--fetch-delay", "1ms"]);
    let second = wait_for("the second release", Duration::from_secs(10), || {
        (server.status(&id)["batches"][1]["status"] != "yet_to_start").then(Instant::now)
    });
    // The first release came after `posted`, so the second may not come before posted + interval.
    assert!(second - posted >= interval, "second release {:?} after posting", second - posted);
}

#[test]
fn a_torn_tail_is_ignored_with_a_warning() {
    let dir = TempDir::new("torn");
    let server = durable(&dir, &["--interval", "1h"]);
    let kept: Vec<String> = (1..=3).map(|i| server.ingest(&[i, i + 1], "LOW")).collect();
    server.crash();
    let mut bytes = std::fs::read(journal(&dir)).unwrap();
    bytes.extend_from_slice(b"0badf00d {\"type\":\"ingest\",\"ingestion_id\":\"");
    std::fs::write(journal(&dir), &bytes).unwrap();

    let server = durable(&dir, &["--interval", "1h"]);
    for id in &kept {
        assert_eq!(server.status(id)["ingestion_id"], id.as_str());
    }
    let more = server.ingest(&[9], "HIGH");
    let (_, log) = server.terminate();
    assert!(log.contains("warning: ignoring a torn final group"), "{log}");
    let server = durable(&dir, &["--interval", "1h"]);
    assert_eq!(server.status(&more)["batches"][0]["ids"], json!([9]), "appends after a cut tail are readable");
}

#[test]
fn damage_before_the_tail_stops_the_start_naming_file_and_offset() {
    let dir = TempDir::new("corrupt");
    let server = durable(&dir, &["--interval", "1h"]);
    for i in 1..=3 {
        server.ingest(&[i], "LOW");
    }
    server.crash();
    let mut bytes = std::fs::read(journal(&dir)).unwrap();
    let second_group = group_starts(&bytes)[1];
    bytes[second_group + 90] ^= 0x01;
    std::fs::write(journal(&dir), &bytes).unwrap();

    let (code, stderr) = refused_start(&["--data-dir", dir.path()]);
    assert_eq!(code, Some(1));
    let expected = format!("the journal {} is corrupt at byte {second_group}", journal(&dir).display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(std::fs::read(journal(&dir)).unwrap(), bytes, "the damaged journal is left as it was");
}

#[test]
fn an_unusable_data_dir_stops_the_start_with_a_clear_message() {
    let dir = TempDir::new("notadir");
    let file = dir.0.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    // A file, or a path under one (it said "cannot use the journal ...: File exists").
    for data_dir in [file.clone(), file.join("data")] {
        let data_dir = data_dir.to_str().unwrap();
        let (code, stderr) = refused_start(&["--data-dir", data_dir]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(&format!("--data-dir {data_dir} is not a directory")), "{stderr}");
    }
}

#[test]
fn a_full_disk_answers_503_and_keeps_what_was_acknowledged() {
    let dir = TempDir::new("full");
    // The journal may not grow past 16 KiB.
    let server = Server::start_with_file_limit(16, &["--interval", "1h", "--data-dir", dir.path()]);
    let mut acked = Vec::new();
    let refused = loop {
        let ids: Vec<u32> = (1..=30).collect();
        let answer = server.post("/ingest", &json!({"ids": ids, "priority": "LOW"}).to_string());
        if answer.status != 200 {
            break answer;
        }
        acked.push(answer.json["ingestion_id"].as_str().unwrap().to_owned());
        assert!(acked.len() < 1000, "the file-size limit never hit");
    };
    assert_eq!((refused.status, refused.json["error"].as_str()), (503, Some("storage_unavailable")), "{refused:?}");
    assert!(refused.json["detail"].as_str().unwrap().contains("cannot save new work"), "{refused:?}");
    assert!(!acked.is_empty());
    for id in &acked {
        assert_eq!(server.status(id)["ingestion_id"], id.as_str());
    }
    server.crash();
    let server = durable(&dir, &["--interval", "1h"]);
    for id in &acked {
        assert_eq!(ids_of(&server.status(id)), (1..=30).collect::<Vec<u32>>(), "{id} after restart");
    }
}

#[test]
fn a_repeated_idempotency_key_answers_the_first_ingestion_even_after_a_restart() {
    let dir = TempDir::new("idem");
    let server = durable(&dir, &["--interval", "1h"]);
    let body = r#"{"ids": [5, 6, 7, 8], "priority": "HIGH"}"#;
    let first = server.post_with("/ingest", body, &[("Idempotency-Key", "order-42")]);
    let again = server.post_with("/ingest", body, &[("Idempotency-Key", "order-42")]);
    assert_eq!(first.status, 200);
    assert_eq!(first.json, again.json);
    let other = server.post_with("/ingest", body, &[("Idempotency-Key", "order-43")]);
    assert_ne!(other.json, first.json);
    let bad = server.post_with("/ingest", body, &[("Idempotency-Key", "")]);
    assert_eq!((bad.status, bad.json["error"].as_str()), (400, Some("invalid_idempotency_key")));
    server.crash();

    let server = durable(&dir, &["--interval", "1h"]);
    let after = server.post_with("/ingest", body, &[("Idempotency-Key", "order-42")]);
    assert_eq!(after.json, first.json);
    let (_, log) = server.terminate();
    assert!(log.contains("recovered 2 ingestions"), "no duplicate was journaled: {log}");
}

#[test]
fn sigterm_answers_503_while_the_batch_in_flight_finishes() {
    let dir = TempDir::new("drain");
    // 3 s in flight: certainly still running when the stop begins.
    let server = durable(&dir, &["--interval", "1h", "--fetch-delay", "1s"]);
    let id = server.ingest(&[1, 2, 3, 4], "HIGH");
    wait_for("the first batch to be triggered", Duration::from_secs(5), || {
        (server.status(&id)["batches"][0]["status"] == "triggered").then_some(())
    });
    Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    let refused = wait_for("new requests to be refused", Duration::from_secs(5), || {
        let answer = server.post("/ingest", r#"{"ids": [9], "priority": "LOW"}"#);
        (answer.status == 503).then_some(answer)
    });
    assert_eq!(refused.json["error"], "shutting_down");
    let (status, log) = server.terminate_wait();
    assert!(status.success(), "{log}");
    let line = |what: &str| log.lines().position(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what}: {log}"));
    assert!(line(": stopping;") < line("completed batch"), "the batch completed before the stop: {log}");
    let server = durable(&dir, &["--interval", "1h"]);
    let after = server.status(&id);
    assert_eq!(batch_statuses(&after), ["completed", "yet_to_start"], "the batch in flight finished before exit");
    assert_eq!(after["batches"][0]["attempts"], 1);
}

#[test]
fn a_stuck_batch_does_not_hold_shutdown_past_the_timeout() {
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "60s", "--shutdown-timeout", "200ms"]);
    let id = server.ingest(&[1], "HIGH");
    wait_for("the batch to be triggered", Duration::from_secs(5), || {
        (server.status(&id)["status"] == "triggered").then_some(())
    });
    let started = Instant::now();
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // In memory, nothing runs it again.
    assert!(log.contains("did not finish within 200ms; in memory mode it is lost"), "{log}");
}

/// A client that pipelines durable POSTs on one connection gets every answer, and so does
/// everyone after it. (Their records can reach the journal out of order; replies written by
/// one shared thread then waited forever for the reply before theirs, and every later durable
/// POST hung behind them.)
#[test]
fn pipelined_durable_posts_are_all_answered() {
    use std::io::{Read, Write};
    let dir = TempDir::new("pipelined");
    let server = durable(&dir, &[]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let body = r#"{"ids": [1, 2, 3], "priority": "LOW"}"#;
    let one = format!("POST /ingest HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    const PIPELINED: usize = 40;
    for round in 0..10 {
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(one.repeat(PIPELINED).as_bytes()).unwrap();
        let (mut seen, mut buf) = (Vec::new(), [0u8; 65536]);
        while count(&seen, "HTTP/1.1 200") < PIPELINED {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(count(&seen, "HTTP/1.1 200"), PIPELINED, "round {round}: every pipelined POST answered 200");
    }
    assert_eq!(server.post("/ingest", body).status, 200, "a later client is answered too");
}

fn count(haystack: &[u8], needle: &str) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle.as_bytes()).count()
}

/// Issue 11: the disk may persist a group's pages in any order. A last group with a zeroed page
/// inside its first record and its end whole was written after the last sync, so it was never
/// acknowledged: it is cut off with a warning, and everything before it stays.
#[test]
fn a_torn_final_group_with_its_end_whole_is_cut_off() {
    use ingestd::journal::{group_header, Group, Record};
    let dir = TempDir::new("torn-group");
    let server = durable(&dir, &["--interval", "1h"]);
    let kept: Vec<String> = (1..=3).map(|i| server.ingest(&[i, i + 1], "LOW")).collect();
    server.crash();
    let mut bytes = std::fs::read(journal(&dir)).unwrap();
    let last = *group_starts(&bytes).last().unwrap();
    let seq = group_header(&bytes[last..]).unwrap().seq;
    let end = last + ingestd::journal::GROUP_HEADER_LEN + group_header(&bytes[last..]).unwrap().len as usize;
    bytes.truncate(end);
    // Six unacknowledged ingestions of 2,000 ids each, in one group, as a crash leaves them.
    let mut group = Group::default();
    let unacked: Vec<ingestd::Ingestion> = (0..6)
        .map(|i| {
            ingestd::Ingestion::new(ingestd::Priority::High, (1..=2000).map(|n| n + i * 2000).collect(), 3, 1, None)
        })
        .collect();
    unacked.iter().for_each(|i| group.push(&Record::ingest(i.record(), false)));
    let framed = group.finish(seq + 1);
    assert!(framed.len() > 6 * 8192, "each record spans pages");
    bytes.extend_from_slice(&framed);
    let page = (end / 4096 + 2) * 4096;
    bytes[page..page + 4096].fill(0);
    std::fs::write(journal(&dir), &bytes).unwrap();

    let server = durable(&dir, &["--interval", "1h"]);
    for id in &kept {
        assert_eq!(server.status(id)["ingestion_id"], id.as_str());
    }
    for lost in &unacked {
        assert_eq!(server.get(&format!("/status/{}", lost.id)).status, 404);
    }
    let more = server.ingest(&[9], "HIGH");
    let (_, log) = server.terminate();
    assert!(log.contains(&format!("warning: ignoring a torn final group in {} at byte {end}", journal(&dir).display())));
    let server = durable(&dir, &["--interval", "1h"]);
    assert_eq!(server.status(&more)["batches"][0]["ids"], json!([9]), "groups after a cut tail are readable");
}

/// Issue 11: after a clean stop nothing is torn, so a flipped byte in the last acknowledged
/// record is corruption: the start stops naming the offset (it used to drop the ingestion).
#[test]
fn after_a_clean_stop_a_flipped_byte_in_the_last_record_stops_the_start() {
    let dir = TempDir::new("clean-stop");
    let server = durable(&dir, &["--interval", "1h", "--fetch-delay", "1ms"]);
    let first = server.ingest(&[1, 2], "LOW");
    wait_for("the first release to complete", Duration::from_secs(5), || {
        (server.status(&first)["status"] == "completed").then_some(())
    });
    // Queued behind the interval: its group is the last before the clean stop.
    let last = server.ingest(&[3, 4], "LOW");
    let (status, _) = server.terminate();
    assert!(status.success());
    let mut bytes = std::fs::read(journal(&dir)).unwrap();
    let starts = group_starts(&bytes);
    let group = starts[starts.len() - 2];
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let record = text.rfind(&last).expect("the last ingestion is in the journal");
    assert!(record > group, "the last group before the clean stop holds the last ingestion");
    bytes[record + 3] ^= 0x01;
    std::fs::write(journal(&dir), &bytes).unwrap();

    let (code, stderr) = refused_start(&["--data-dir", dir.path()]);
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!("the journal {} is corrupt at byte {group}", journal(&dir).display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(std::fs::read(journal(&dir)).unwrap(), bytes, "the damaged journal is left as it was");
}

/// After a clean stop, a journal cut short or zeroed to its end leaves nothing to tell it from
/// a crash's torn tail but the stop's seal: the start refuses, naming the file (it used to drop
/// the acknowledged ingestions in those groups, with no warning or a false one).
#[test]
fn after_a_clean_stop_a_journal_cut_or_zeroed_at_its_end_stops_the_start() {
    let dir = TempDir::new("clean-stop-cut");
    let server = durable(&dir, &["--interval", "1h"]);
    let acked: Vec<String> = (1..=6).map(|n| server.ingest(&[n], "LOW")).collect();
    assert!(server.terminate().0.success());
    let bytes = std::fs::read(journal(&dir)).unwrap();
    let fourth = group_starts(&bytes)[3];
    let mut zeroed = bytes.clone();
    zeroed[fourth..].fill(0);
    let last = group_starts(&bytes)[group_starts(&bytes).len() - 2];
    for (how, damaged) in [("zeroed to its end", zeroed), ("cut inside its last group", bytes[..last + 20].to_vec())] {
        std::fs::write(journal(&dir), &damaged).unwrap();
        let (code, stderr) = refused_start(&["--data-dir", dir.path()]);
        assert_eq!(code, Some(1), "{how}: {stderr}");
        let expected = format!("the journal {} is damaged at byte", journal(&dir).display());
        assert!(stderr.contains(&expected) && stderr.contains("cut or damaged since"), "{how}: {stderr}");
        assert!(stderr.contains("move every journal file aside"), "{how}: {stderr}");
        assert_eq!(std::fs::read(journal(&dir)).unwrap(), damaged, "{how}: the journal is left as it was");
    }
    std::fs::write(journal(&dir), &bytes).unwrap();
    let seal_path = std::path::Path::new(dir.path()).join(ingestd::journal::SEAL_NAME);
    let old_seal = std::fs::read(&seal_path).unwrap();
    let server = durable(&dir, &["--interval", "1h"]);
    for (n, id) in (1..=6).zip(&acked) {
        assert_eq!(ids_of(&server.status(id)), [n], "restored whole, it starts with every ingestion");
    }
    server.ingest(&[7], "LOW");
    assert!(server.terminate().0.success());
    // A seal older than the journal (left by a version that knew none) says nothing of it.
    std::fs::write(&seal_path, &old_seal).unwrap();
    let server = durable(&dir, &["--interval", "1h"]);
    let (_, log) = server.terminate();
    assert!(log.contains("ignoring journal.v2.stopped: groups were added after"), "{log}");
    // The journal gone, the seal still stops the start, and says what to move to start empty.
    std::fs::rename(journal(&dir), std::path::Path::new(dir.path()).join("journal.v2.aside")).unwrap();
    let (code, stderr) = refused_start(&["--data-dir", dir.path()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("it is missing") && stderr.contains("move every journal file aside"), "{stderr}");
    std::fs::rename(&seal_path, std::path::Path::new(dir.path()).join("journal.v2.stopped.aside")).unwrap();
    durable(&dir, &["--interval", "1h"]);
}

/// Issue 11: a restart after a clean stop appends after the acknowledged groups, and a crash
/// then tears only what came after.
#[test]
fn a_restart_after_a_clean_stop_keeps_appending() {
    let dir = TempDir::new("clean-restart");
    let server = durable(&dir, &["--interval", "1h"]);
    let first = server.ingest(&[1], "LOW");
    assert!(server.terminate().0.success());
    let server = durable(&dir, &["--interval", "1h"]);
    let second = server.ingest(&[2], "LOW");
    server.crash();
    let mut bytes = std::fs::read(journal(&dir)).unwrap();
    bytes.extend_from_slice(b"g 00000");
    std::fs::write(journal(&dir), &bytes).unwrap();
    let server = durable(&dir, &["--interval", "1h"]);
    assert_eq!(ids_of(&server.status(&first)), [1]);
    assert_eq!(ids_of(&server.status(&second)), [2]);
}

/// Issue 11: two instances on one data directory. The second exits at once (code 1), naming
/// the directory and the first one's PID; the lock dies with its process, even by `kill -9`.
#[test]
fn a_second_instance_on_the_same_data_dir_exits_naming_the_holder() {
    let dir = TempDir::new("lock");
    let server = durable(&dir, &["--interval", "1h"]);
    let id = server.ingest(&[1, 2, 3], "LOW");
    let started = Instant::now();
    let (code, stderr) = refused_start(&["--data-dir", dir.path()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "it exits at once");
    let expected = format!("the data directory {} is in use by another ingestd (pid {})", dir.path(), server.pid());
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(ids_of(&server.status(&id)), [1, 2, 3], "the first instance is unaffected");
    // The lock is the directory's: deleting the file that names the holder does not free it.
    std::fs::remove_file(format!("{}/ingestd.lock", dir.path())).unwrap();
    let (code, stderr) = refused_start(&["--data-dir", dir.path()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is in use by another ingestd"), "{stderr}");
    server.crash();
    let server = durable(&dir, &["--interval", "1h"]);
    assert_eq!(ids_of(&server.status(&id)), [1, 2, 3], "a killed holder leaves no stale lock");
}

/// Issue 11: a version 1 journal is replayed by its rules and rewritten as version 2.
#[test]
fn a_version_1_journal_is_upgraded_at_the_start() {
    use ingestd::journal::{Record, HEADER_V1};
    let dir = TempDir::new("upgrade");
    // The last release a second ago: with a 1 h interval the second batch stays queued.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let old = ingestd::Ingestion::new(ingestd::Priority::Medium, vec![7, 8, 9, 10], 3, now_ms - 2_000, Some("k-1"));
    let mut bytes = HEADER_V1.as_bytes().to_vec();
    Record::ingest(old.record(), false).encode(&mut bytes);
    let triggered = Record::Triggered { ingestion_id: old.id, batch: 0, attempt: 1, at_ms: now_ms - 1_000 };
    triggered.encode(&mut bytes);
    Record::Completed { ingestion_id: old.id, batch: 0, at_ms: now_ms - 900 }.encode(&mut bytes);
    std::fs::write(dir.0.join("journal.v1"), &bytes).unwrap();

    let server = durable(&dir, &["--interval", "1h"]);
    let status = server.status(&old.id.to_string());
    assert_eq!(
        (ids_of(&status), batch_statuses(&status)),
        (vec![7, 8, 9, 10], vec!["completed".into(), "yet_to_start".into()])
    );
    assert!(!dir.0.join("journal.v1").exists(), "the old file is gone once the new one holds it all");
    let again = server.post_with("/ingest", r#"{"ids": [1], "priority": "LOW"}"#, &[("Idempotency-Key", "k-1")]);
    assert_eq!(again.json["ingestion_id"], old.id.to_string(), "keys survive the upgrade");
    let (_, log) = server.terminate();
    assert!(log.contains("upgraded the journal"), "{log}");
    let server = durable(&dir, &["--interval", "1h"]);
    assert_eq!(ids_of(&server.status(&old.id.to_string())), [7, 8, 9, 10]);
}

/// Issue 11: a compaction rewrote the whole journal on the commit path, and every durable POST
/// waited for it (peaks of 1.2 s with 5M ids queued). Now it runs on its own thread: held in the
/// middle (a FIFO it reads a byte from, `INGESTD_COMPACTION_HOLD`), the journal keeps answering,
/// new groups go to the segment, and the hand-over and a restart keep everything.
#[test]
fn posts_are_acknowledged_while_a_compaction_is_under_way() {
    let dir = TempDir::new("compact-held");
    let fifo = dir.0.join("hold.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // Read and write: opening it never blocks, and it stays open for every compaction.
    let mut hold = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingestd"));
    command
        .args(["--addr", "127.0.0.1:0", "--data-dir", dir.path(), "--interval", "1h"])
        .env("INGESTD_COMPACTION_MIN_RECORDS", "20")
        .env("INGESTD_COMPACTION_DEAD_PERCENT", "0")
        .env("INGESTD_COMPACTION_HOLD", &fifo);
    let server = Server::start_with(&mut command);
    let (segment, temp) = (dir.0.join("journal.v2.next"), dir.0.join("journal.v2.tmp"));
    let mut acked: Vec<(String, Vec<u32>)> = Vec::new();
    let mut post = |n: u32| {
        let ids: Vec<u32> = (n * 10 + 1..n * 10 + 4).collect();
        acked.push((server.ingest(&ids, "LOW"), ids));
    };
    for n in 0..25 {
        post(n);
    }
    wait_for("a compaction to hold, its snapshot written", Duration::from_secs(10), || temp.exists().then_some(()));
    let started = Instant::now();
    for n in 25..125 {
        post(n);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "100 POSTs took {:?}", started.elapsed());
    assert!(segment.exists() && temp.exists(), "the compaction is still under way: the POSTs did not wait for it");
    // Let it go: the journal thread copies the segment's last groups and renames the snapshot.
    std::io::Write::write_all(&mut hold, b"1").unwrap();
    wait_for("the hand-over", Duration::from_secs(10), || (!temp.exists() || !segment.exists()).then_some(()));
    for n in 125..130 {
        post(n);
    }
    // Every later compaction may go at once, so the stop (which waits for one) is not held.
    std::io::Write::write_all(&mut hold, &[1; 1000]).unwrap();
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("compacted the journal"), "{log}");
    let server = durable(&dir, &["--interval", "1h"]);
    for (id, ids) in &acked {
        assert_eq!(&ids_of(&server.status(id)), ids, "ingestion {id}");
    }
    assert!(!segment.exists() && !temp.exists(), "one journal file after a clean stop and start");
}

/// The data directory removed while the service runs (`rm -rf`): the journal is written again
/// from memory within a second, and what was acknowledged, before and after, outlives a crash
/// (before, the service appended to the removed file and a restart found nothing).
#[test]
fn a_data_directory_removed_while_running_is_written_again() {
    let dir = TempDir::new("removed");
    let args = ["--interval", "1h", "--fetch-delay", "1ms"];
    let server = durable(&dir, &args);
    let before = server.ingest(&[1, 2, 3, 4], "LOW");
    // Completed in memory only once on disk (the journal applies what it wrote): then removed.
    wait_for("the first batch to complete", Duration::from_secs(5), || {
        (batch_statuses(&server.status(&before))[0] == "completed").then_some(())
    });
    std::fs::remove_dir_all(&dir.0).unwrap();
    wait_for("the journal to be written again", Duration::from_secs(5), || journal(&dir).exists().then_some(()));
    std::fs::remove_dir_all(&dir.0).unwrap();
    let after = server.ingest(&[5], "HIGH");
    assert!(journal(&dir).exists(), "written again before the ingestion was acknowledged");
    server.crash();
    let server = durable(&dir, &args);
    assert_eq!(ids_of(&server.status(&before)), [1, 2, 3, 4]);
    assert_eq!(batch_statuses(&server.status(&before)), ["completed", "yet_to_start"]);
    assert_eq!(ids_of(&server.status(&after)), [5]);
}

/// README (Durability): batches keep their size across a restart. Work queued with
/// `--batch-size 3` runs in batches of 3 after a restart with `--batch-size 2` (same batch ids,
/// nothing delivered again); only new work is cut in 2s.
#[test]
fn batches_keep_their_size_across_a_restart_with_another_batch_size() {
    let dir = TempDir::new("resize");
    let server = durable(&dir, &["--batch-size", "3", "--interval", "1h", "--fetch-delay", "1ms"]);
    let id = server.ingest(&[1, 2, 3, 4, 5, 6, 7], "LOW");
    let before = wait_for("the first batch to complete", Duration::from_secs(10), || {
        let status = server.status(&id);
        (batch_statuses(&status)[0] == "completed").then_some(status)
    });
    let (status, _) = server.terminate();
    assert!(status.success());

    let server = durable(&dir, &["--batch-size", "2", "--interval", "10ms", "--fetch-delay", "1ms"]);
    let cut = |status: &Value| -> Vec<Value> {
        status["batches"].as_array().unwrap().iter().map(|b| b["ids"].clone()).collect()
    };
    let after = server.status(&id);
    assert_eq!(cut(&after), [json!([1, 2, 3]), json!([4, 5, 6]), json!([7])], "{after}");
    assert_eq!(batch_ids(&after), batch_ids(&before));
    let new = server.ingest(&[8, 9, 10], "LOW");
    assert_eq!(cut(&server.status(&new)), [json!([8, 9]), json!([10])]);
    let done = server.wait_status(&id, "completed");
    assert_eq!(done["batches"][0]["attempts"], 1, "the delivered batch did not run again: {done}");
    server.wait_status(&new, "completed");
    let (_, log) = server.terminate();
    let released: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("released batch"))
        .filter_map(|l| l.split_once("ids ")?.1.split(')').next())
        .collect();
    assert_eq!(released, ["[4, 5, 6]", "[7]", "[8, 9]", "[10]"], "{log}");
}
