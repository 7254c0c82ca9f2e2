//! The command-line contract: help, version, bad flags, the listening line, PORT, signals, and
//! `ingestd health`.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_for, Server};

fn ingestd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ingestd")).args(args).output().expect("run ingestd")
}

#[test]
fn help_prints_usage_and_exits_0() {
    let out = ingestd(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--addr", "--interval", "--batch-size", "--fetch-delay", "--threads", "200ms"] {
        assert!(text.contains(flag), "usage lacks {flag}:\n{text}");
    }
}

/// With its stdout closed (`ingestd --help | head -0`), a print is an error to report, not a
/// panic with a backtrace.
#[test]
fn help_and_version_to_a_closed_stdout_exit_1_without_a_panic() {
    use std::process::Stdio;
    for flag in ["--help", "--version"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ingestd"))
            .arg(flag)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ingestd");
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A broken pipe, or the pipe's buffer took it before the reader went: either is clean.
        assert!(out.status.code() == Some(1) || out.status.success(), "{flag}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{flag}: {stderr}");
    }
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    for (args, says) in [
        (&["--interval", "5"][..], "--interval takes a duration like 200ms, 5s, 1.5s, 10m, 2h or 7d; '5' has no unit"),
        (&["--batch-size", "zero"][..], "--batch-size takes a whole number of at least 1, not 'zero'"),
        (&["--frobnicate"][..], "--frobnicate"),
        (&["--addr"][..], "--addr"),
        (&["--addr", "nonsense"][..], "--addr takes HOST:PORT"),
        // tiny_http drains an unread body into one buffer of its announced length: above this, a
        // client could announce one too large to allocate and abort the process.
        (&["--max-body", "200000000000"][..], "--max-body takes at most 16777216 (16 MiB)"),
    ] {
        let out = ingestd(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_address_in_use_is_reported() {
    let first = Server::start(&[]);
    let addr = first.base.trim_start_matches("http://").to_owned();
    let out = ingestd(&["--addr", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    // With JSON logs, the reason is a JSON record too, at level error: a log pipeline keeps it.
    let out = ingestd(&["--addr", &addr, "--log-format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let last: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).expect("a JSON line");
    assert_eq!(last["level"], "error", "{stderr}");
    assert!(last["msg"].as_str().unwrap().starts_with(&format!("ingestd: cannot listen on {addr}")), "{stderr}");
}

#[test]
fn port_from_the_environment_binds_all_interfaces() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingestd"));
    command.env("PORT", "0");
    let server = Server::start_with(&mut command);
    assert!(server.base.starts_with("http://0.0.0.0:"), "{}", server.base);
    let port = server.base.rsplit(':').next().unwrap();
    let health = ureq::get(&format!("http://127.0.0.1:{port}/health")).call().unwrap();
    assert_eq!(health.status(), 200);
}

/// SIGTERM and SIGINT alike: new requests get `503 shutting_down`, the batch in flight (3 ids
/// of 1 s each) finishes after the stop began, nothing more is released, and the exit is 0.
#[test]
fn sigterm_and_sigint_finish_the_batch_in_flight_then_exit_0() {
    std::thread::scope(|scope| {
        for signal in ["-TERM", "-INT"] {
            scope.spawn(move || stop_with(signal));
        }
    });
}

fn stop_with(signal: &str) {
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "1s"]);
    let id = server.ingest(&[1, 2, 3, 4], "HIGH");
    wait_for("the first batch to be triggered", Duration::from_secs(5), || {
        (server.status(&id)["batches"][0]["status"] == "triggered").then_some(())
    });
    let sent = Command::new("kill").args([signal, &server.pid().to_string()]).status().unwrap();
    assert!(sent.success());
    let refused = wait_for("new requests to be refused", Duration::from_secs(5), || {
        let answer = server.post("/ingest", r#"{"ids": [9], "priority": "LOW"}"#);
        (answer.status == 503).then_some(answer)
    });
    assert_eq!(refused.json["error"], "shutting_down", "{signal}: {refused:?}");
    let (status, log) = server.terminate_wait();
    assert!(status.success(), "{signal}: exit status {status:?}\n{log}");
    let completed = log.lines().filter(|l| l.contains("completed batch")).count();
    let released = log.lines().filter(|l| l.contains("released batch")).count();
    assert_eq!((released, completed), (1, 1), "{signal}: {log}");
    assert!(log.contains("ids [1, 2, 3]"), "{log}");
    // The stop waited for the batch: it began before the batch completed.
    let line = |what: &str| log.lines().position(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what}: {log}"));
    assert!(line(": stopping;") < line("completed batch"), "{signal}: the batch completed before the stop: {log}");
    assert!(log.lines().last().unwrap().ends_with("stopped"), "{log}");
}

#[test]
fn logs_each_release_and_completion_with_a_timestamp_and_depth() {
    let server = Server::start(&["--interval", "20ms", "--fetch-delay", "1ms"]);
    let id = server.ingest(&[1, 2, 3, 4, 5, 6, 7], "LOW");
    wait_for("the ingestion to complete", Duration::from_secs(5), || {
        (server.status(&id)["status"] == "completed").then_some(())
    });
    let (_, log) = server.terminate();
    let releases: Vec<&str> = log.lines().filter(|l| l.contains("released batch")).collect();
    assert_eq!(releases.len(), 3, "{log}");
    assert!(releases[0].contains("queue depth 2 batches"), "{log}");
    for line in log.lines().filter(|l| l.contains(" batch ")) {
        let stamp = line.split(' ').next().unwrap();
        assert!(stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{line}");
    }
}

/// The start line says what this instance runs with: the simulated API's delay only without
/// `--upstream`, whether a token is required, and a warning when `--max-ids` cannot be met.
#[test]
fn the_start_line_says_what_runs() {
    let start_line = |args: &[&str]| {
        let (_, log) = Server::start(args).terminate();
        log.lines().find(|l| l.contains(" batch size ")).map(str::to_owned).unwrap_or_else(|| panic!("{log}"))
    };
    let simulated = start_line(&["--fetch-delay", "7ms"]);
    assert!(simulated.contains("batch size 3, fetch delay 7ms, ") && simulated.ends_with(", no token"), "{simulated}");
    let upstream = start_line(&["--upstream", "http://127.0.0.1:9/{id}", "--token", "t0ken"]);
    assert!(!upstream.contains("fetch delay"), "{upstream}");
    assert!(upstream.ends_with(", token required but on /health and the pages"), "{upstream}");
    let (_, log) = Server::start(&["--max-ids", "20", "--max-queued-ids", "10"]).terminate();
    assert!(
        log.contains("warning: --max-ids 20 is more than --max-queued-ids 10: a request takes at most 10 ids"),
        "{log}"
    );
}

/// README.md's flags are `--help`'s, word for word: the block from `Usage:` to the end of the
/// options.
#[test]
fn the_readme_shows_the_help_as_it_is() {
    let help = String::from_utf8(ingestd(&["--help"]).stdout).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shown =
        readme.split("```\nUsage: ").nth(1).and_then(|rest| rest.split("\n```").next()).expect("the help block");
    let options = |text: &str| text.split("\n\n").take(2).collect::<Vec<_>>().join("\n\n");
    let help = help.split_once("\n\n").map_or(help.as_str(), |(_, rest)| rest);
    assert_eq!(options(&format!("Usage: {shown}")), options(help), "README.md's flags differ from --help");
}

#[test]
fn version_names_the_package_and_the_commit() {
    for flag in ["--version", "-V"] {
        let out = ingestd(&[flag]);
        assert!(out.status.success(), "{flag}");
        let text = String::from_utf8(out.stdout).unwrap();
        let expected = format!("ingestd {}", env!("CARGO_PKG_VERSION"));
        assert!(text.starts_with(&expected), "{flag}: {text}");
        // Built from a git checkout (as here), the commit is the one checked out.
        let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
        if let Some(head) = head.ok().filter(|h| h.status.success()) {
            let head = String::from_utf8(head.stdout).unwrap();
            assert_eq!(text.trim(), format!("{expected} (commit {})", head.trim()), "{flag}");
        }
    }
}

fn health(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ingestd")).arg("health").args(args).env_remove("PORT").output().unwrap();
    assert!(out.stdout.is_empty());
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn health_exits_0_while_the_service_answers() {
    let server = Server::start(&[]);
    let addr = server.base.trim_start_matches("http://");
    assert_eq!(health(&["--addr", addr]), (Some(0), String::new()));
    // Without --addr it asks where `ingestd` with the same PORT listens, on loopback.
    let port = addr.rsplit(':').next().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ingestd")).arg("health").env("PORT", port).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // /health needs no token, so the probe works with one set.
    let guarded = Server::start(&["--token", "secret"]);
    assert_eq!(health(&["--addr", guarded.base.trim_start_matches("http://")]).0, Some(0));
}

#[test]
fn health_exits_1_when_nothing_listens() {
    let (_reserved, port) = common::refusing_port();
    let addr = format!("127.0.0.1:{port}");
    let (code, stderr) = health(&["--addr", &addr]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains(&format!("ingestd health: {addr}: cannot connect")), "{stderr}");
}

/// A listener that answers one connection with `reply` (or holds it silent if `None`). Join
/// its thread only once the probe has connected (exit 1 for the right reason), or it waits.
fn one_answer(reply: Option<&'static str>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut chunk = [0; 256];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(n) if n > 0 => head.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        assert!(head.starts_with(b"GET /health HTTP/1.1\r\n"), "{:?}", String::from_utf8_lossy(&head));
        match reply {
            Some(reply) => stream.write_all(reply.as_bytes()).unwrap(),
            // Keep the connection open and silent until the probe gives up and closes it.
            None => while stream.read(&mut chunk).is_ok_and(|n| n > 0) {},
        }
    });
    (addr, thread)
}

#[test]
fn health_exits_1_on_any_status_but_200() {
    let (addr, thread) =
        one_answer(Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
    let (code, stderr) = health(&["--addr", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    thread.join().unwrap();
    assert!(stderr.contains("answered \"HTTP/1.1 503 Service Unavailable\""), "{stderr}");

    let (addr, thread) = one_answer(Some(""));
    let (code, stderr) = health(&["--addr", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    thread.join().unwrap();
    assert!(stderr.contains("closed without an answer"), "{stderr}");
}

#[test]
fn health_gives_up_after_its_timeout() {
    let (addr, thread) = one_answer(None);
    let started = Instant::now();
    let (code, stderr) = health(&["--addr", &addr, "--timeout", "200ms"]);
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{stderr}");
    // Said as a timeout, not as the socket's "Resource temporarily unavailable".
    assert!(stderr.contains("no answer within 200ms"), "{stderr}");
    thread.join().unwrap();
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn health_bad_flags_exit_2() {
    let (code, stderr) = health(&["--timeout", "0s"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--timeout must be more than 0"), "{stderr}");
    assert_eq!(health(&["--addr"]).0, Some(2));
    assert_eq!(health(&["--addr", "nonsense"]).0, Some(2));
}

/// Every JSON log line stays whole behind a slow reader (a busy journald, a container's log
/// driver): records are written by one thread, one `write` each, and an access record keeps
/// the first 512 characters of a long URL (one with a 7,000-byte URL, longer than a pipe takes
/// at once, was written in parts and spliced into other threads' records).
#[test]
fn json_log_lines_stay_whole_behind_a_slow_reader() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .args(["--addr", "127.0.0.1:0", "--log-format", "json", "--interval", "1h"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ingestd");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut all, mut chunk) = (Vec::new(), [0; 4096]);
        // About 4 MB/s: the pipe fills, and long writes go out in parts.
        while let Ok(n @ 1..) = stderr.read(&mut chunk) {
            all.extend_from_slice(&chunk[..n]);
            std::thread::sleep(Duration::from_millis(1));
        }
        all
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().trim_start_matches("listening on http://").to_owned();
    let path = format!("/{}", "x".repeat(7000));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (addr, path) = (addr.clone(), path.clone());
            std::thread::spawn(move || {
                let mut conn = std::net::TcpStream::connect(&addr).unwrap();
                let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
                let mut answer = [0; 1024];
                for _ in 0..60 {
                    conn.write_all(request.as_bytes()).unwrap();
                    let _ = conn.read(&mut answer).unwrap();
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    child.wait().unwrap();
    let log = String::from_utf8(reader.join().unwrap()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let broken: Vec<&&str> = lines.iter().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err()).collect();
    assert!(lines.len() > 360, "{} lines", lines.len());
    assert!(broken.is_empty(), "{} of {} lines are not JSON, e.g. {:.300}", broken.len(), lines.len(), broken[0]);
    let paths: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["path"].as_str().map(str::to_owned))
        .collect();
    assert!(paths.len() >= 300, "{} access records", paths.len());
    assert!(paths.iter().all(|p| p.chars().count() == 513 && p.ends_with('…')), "{:.600}", paths[0]);
}
