//! The command-line contract: help, bad flags, the listening line, PORT, and signals.

mod common;

use std::process::Command;
use std::time::Duration;

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

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    for (args, says) in [
        (&["--interval", "5"][..], "--interval takes a duration like 200ms, 5s, 1.5s, 10m, 2h or 7d; '5' has no unit"),
        (&["--batch-size", "zero"][..], "--batch-size takes a whole number of at least 1, not 'zero'"),
        (&["--frobnicate"][..], "--frobnicate"),
        (&["--addr"][..], "--addr"),
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

#[test]
fn sigterm_finishes_the_batch_in_flight_then_exits_0() {
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "300ms"]);
    let id = server.ingest(&[1, 2, 3, 4], "HIGH");
    wait_for("the first batch to be triggered", Duration::from_secs(5), || {
        (server.status(&id)["batches"][0]["status"] == "triggered").then_some(())
    });
    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status:?}\n{log}");
    let completed = log.lines().filter(|l| l.contains("completed batch")).count();
    let released = log.lines().filter(|l| l.contains("released batch")).count();
    assert_eq!((released, completed), (1, 1), "{log}");
    assert!(log.contains("ids [1, 2, 3]"), "{log}");
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
