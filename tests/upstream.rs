//! `--upstream` over real HTTP: `HttpUpstream` against a scripted local upstream (what each
//! answer is classified as, the whole-call timeout, headers, the POST body, keep-alive), and the
//! real binary delivering every id once, in pacing order, never two batches closer than the
//! interval at the upstream, retries included; retries with a doubling backoff, `Retry-After`
//! pauses, permanent 4xx, `failed` after `--max-attempts`, statuses and `last_error`.

mod common;
#[path = "common/upstream.rs"]
mod scripted;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{batch_statuses, wait_for, Server};
use ingestd::upstream::{Call, Header, HttpUpstream, Method, Outcome, RetryAfter, Target};
use scripted::{Reply, Upstream};
use serde_json::json;

fn target(url: String) -> Target {
    Target { url, method: Method::Get, headers: Vec::new(), timeout: Duration::from_secs(5), ca_file: None }
}

fn client(target: Target) -> HttpUpstream {
    HttpUpstream::new(target).expect("set up the client")
}

#[track_caller]
fn reason_of(outcome: &Outcome, kind: &str) -> String {
    let reason = outcome.reason().unwrap_or_else(|| panic!("{kind} expected, got {outcome:?}")).to_owned();
    let matches = match outcome {
        Outcome::Retry { .. } => kind == "retry",
        Outcome::Stop { .. } => kind == "stop",
        Outcome::Permanent { .. } => kind == "permanent",
        Outcome::Delivered => false,
    };
    assert!(matches, "{kind} expected, got {outcome:?}");
    reason
}

#[test]
fn each_answer_is_classified() {
    let upstream = Upstream::start(vec![
        Reply::Status(200),
        Reply::Status(500),
        Reply::Body(404, "no such item\n"),
        Reply::RetryAfter(429, "7".into()),
        Reply::Status(503),
        Reply::Status(408),
        Reply::Status(301),
    ]);
    let mut api = client(target(upstream.url("/items/{id}")));
    let deliveries: Vec<_> = (1..=7).map(|id| api.deliver(id)).collect();
    let calls: Vec<Call> = deliveries.iter().map(|d| d.call).collect();
    let statuses = [200, 500, 404, 429, 503, 408, 301].map(Call::Answered);
    assert_eq!(calls, statuses);
    assert_eq!(deliveries[0].outcome, Outcome::Delivered);
    let reasons: Vec<String> = deliveries[1..]
        .iter()
        .zip(["retry", "permanent", "stop", "stop", "retry", "permanent"])
        .map(|(d, kind)| reason_of(&d.outcome, kind))
        .collect();
    assert!(reasons[0].starts_with("HTTP 500 after ") && reasons[0].ends_with(" ms"), "{reasons:?}");
    assert!(reasons[1].starts_with("HTTP 404 after ") && reasons[1].ends_with(" ms: no such item"), "{reasons:?}");
    assert!(reasons[2].starts_with("HTTP 429 after ") && reasons[2].ends_with(" (Retry-After: 7)"), "{reasons:?}");
    let Outcome::Stop { retry_after, .. } = &deliveries[3].outcome else { unreachable!() };
    assert_eq!(*retry_after, Some(RetryAfter::Delay(Duration::from_secs(7))));
    let Outcome::Stop { retry_after, .. } = &deliveries[4].outcome else { unreachable!() };
    assert_eq!(*retry_after, None);
    assert!(reasons[5].contains("redirects are not followed"), "{reasons:?}");
    let paths: Vec<String> = upstream.arrivals().into_iter().map(|a| a.path).collect();
    assert_eq!(paths, (1..=7).map(|id| format!("/items/{id}")).collect::<Vec<_>>());
}

#[test]
fn the_timeout_bounds_the_call_as_a_whole() {
    // A stalled upstream: no answer at all.
    let upstream = Upstream::start(vec![Reply::Stall(Duration::from_secs(3))]);
    let mut api = client(Target { timeout: Duration::from_millis(200), ..target(upstream.url("/{id}")) });
    let began = Instant::now();
    let delivery = api.deliver(1);
    assert!(began.elapsed() < Duration::from_millis(1500), "took {:?}", began.elapsed());
    assert_eq!(delivery.call, Call::TimedOut);
    assert_eq!(delivery.outcome, Outcome::Stop { reason: "timed out after 200 ms".into(), retry_after: None });

    // A body that keeps coming: every read gets bytes within 100 ms, the whole takes 2 s. A
    // timeout per read would never fire; the whole-call one ends it at 300 ms. The 2xx head had
    // arrived, so the id is delivered (sending it again would deliver it twice).
    let upstream = Upstream::start(vec![Reply::Drip { chunks: 20, every: Duration::from_millis(100) }]);
    let mut api = client(Target { timeout: Duration::from_millis(300), ..target(upstream.url("/{id}")) });
    let began = Instant::now();
    let delivery = api.deliver(2);
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!((delivery.call, delivery.outcome), (Call::Answered(200), Outcome::Delivered));
}

#[test]
fn get_sends_the_headers_and_the_id_in_path_or_query() {
    let upstream = Upstream::start(Vec::new());
    let headers = vec![
        Header { name: "Authorization".into(), value: "Bearer s3cret".into() },
        Header { name: "X-Tenant".into(), value: "blue".into() },
    ];
    let mut api = client(Target { headers, ..target(upstream.url("/v1/items/{id}?check={id}")) });
    assert_eq!(api.deliver(41).outcome, Outcome::Delivered);
    let arrival = upstream.wait_for(1, Duration::from_secs(5)).remove(0);
    assert_eq!((arrival.method.as_str(), arrival.path.as_str()), ("GET", "/v1/items/41?check=41"));
    assert_eq!(arrival.header("Authorization"), Some("Bearer s3cret"));
    assert_eq!(arrival.header("X-Tenant"), Some("blue"));
    assert!(arrival.header("User-Agent").unwrap().starts_with("ingestd/"), "{arrival:?}");
    assert_eq!(arrival.body, "");
}

#[test]
fn post_sends_the_id_as_json() {
    let upstream = Upstream::start(Vec::new());
    let mut api = client(Target { method: Method::Post, ..target(upstream.url("/ingest/{id}")) });
    assert_eq!(api.deliver(7).outcome, Outcome::Delivered);
    let arrival = upstream.wait_for(1, Duration::from_secs(5)).remove(0);
    assert_eq!((arrival.method.as_str(), arrival.path.as_str()), ("POST", "/ingest/7"));
    assert_eq!(arrival.header("Content-Type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&arrival.body).expect("a JSON body");
    assert_eq!(body, serde_json::json!({"id": 7}));
}

#[test]
fn calls_reuse_one_connection() {
    // Bodies too large to arrive with the head: the connection is reused only if they are read.
    let upstream = Upstream::start(vec![
        Reply::Large(200, 20_000),
        Reply::Large(500, 20_000),
        Reply::Body(404, "gone"),
        Reply::Large(404, 20_000),
    ]);
    let mut api = client(target(upstream.url("/{id}")));
    for id in 1..=5 {
        api.deliver(id);
    }
    let peers: Vec<_> = upstream.wait_for(5, Duration::from_secs(5)).into_iter().map(|a| a.peer).collect();
    assert!(peers[0].is_some());
    assert!(peers.iter().all(|p| *p == peers[0]), "more than one connection: {peers:?}");
}

#[test]
fn a_refused_connection_stops_the_release() {
    let (_reserved, port) = common::refusing_port();
    let mut api = client(target(format!("http://127.0.0.1:{port}/{{id}}")));
    let delivery = api.deliver(1);
    assert_eq!(delivery.call, Call::Failed);
    assert_eq!(delivery.outcome, Outcome::Stop { reason: "connection refused".into(), retry_after: None });
}

/// A raw upstream on 127.0.0.1: each connection goes to `serve` on its own thread.
fn raw_upstream(serve: fn(std::net::TcpStream)) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    port
}

/// The timeout bounds a TLS handshake too: an upstream that sends its first record a byte at a
/// time (each read gets one within 100 ms) held a call for as long as it dripped (ureq 2's
/// timeout there is per read), and sent the request after the call had been given up.
#[test]
fn the_timeout_bounds_a_dripped_tls_handshake() {
    let port = raw_upstream(|mut conn| {
        use std::io::Write;
        let _ = conn.read(&mut [0; 4096]);
        // A handshake record of 16 KiB, announced, then a byte every 100 ms.
        let _ = conn.write_all(&[0x16, 0x03, 0x03, 0x40, 0x00]);
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(100));
            if conn.write_all(&[0x02]).is_err() {
                return;
            }
        }
    });
    let timeout = Duration::from_millis(500);
    let mut api = client(Target { timeout, ..target(format!("https://127.0.0.1:{port}/{{id}}")) });
    let began = Instant::now();
    let delivery = api.deliver(1);
    let took = began.elapsed();
    assert!(took >= timeout && took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(delivery.call, Call::TimedOut, "{delivery:?}");
    assert_eq!(delivery.outcome, Outcome::Stop { reason: "timed out after 500 ms".into(), retry_after: None });
}

/// The timeout bounds connecting: to a listener whose queue is full (SYNs dropped), a call took
/// ureq's own 30 s.
#[test]
fn the_timeout_bounds_connecting() {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill its queue until a connection no longer completes.
    let mut held = Vec::new();
    while let Ok(conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        held.push(conn);
        assert!(held.len() < 100, "the queue never filled");
    }
    let timeout = Duration::from_millis(500);
    let mut api = client(Target { timeout, ..target(format!("http://{addr}/{{id}}")) });
    let began = Instant::now();
    let delivery = api.deliver(1);
    let took = began.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(delivery.call, Call::TimedOut, "{delivery:?}");
}

/// An interim answer (`100 Continue`, `103 Early Hints`) before the final one: ureq 2 takes it
/// for the final answer; it is a retry at once, on a new connection, rather than a body read up
/// to the timeout and the next answer read as the next id's.
#[test]
fn an_interim_answer_is_a_retry_at_once_on_a_new_connection() {
    let port = raw_upstream(|mut conn| {
        use std::io::Write;
        let mut head = [0; 4096];
        while matches!(conn.read(&mut head), Ok(n) if n > 0) {
            let answer =
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
            if conn.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    });
    // The bug reads a body up to the timeout: a third of it is the bound.
    let timeout = Duration::from_secs(30);
    let mut api = client(Target { timeout, ..target(format!("http://127.0.0.1:{port}/{{id}}")) });
    for id in [1, 2] {
        let began = Instant::now();
        let delivery = api.deliver(id);
        assert!(began.elapsed() < timeout / 3, "took {:?}", began.elapsed());
        assert_eq!(delivery.call, Call::Answered(103));
        assert!(reason_of(&delivery.outcome, "retry").starts_with("unexpected HTTP 103 after "), "{delivery:?}");
    }
}

/// The first arrival of each release never comes closer than `interval` after the one before:
/// the pacer releases a batch no sooner than an interval after the previous one's first answer,
/// which came after its first request arrived. Strict, with no slack for jitter.
#[track_caller]
fn assert_gaps_at_least(firsts: &[Instant], interval: Duration, arrivals: &[scripted::Arrival]) {
    for pair in firsts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= interval, "two releases {gap:?} apart at the upstream: {arrivals:#?}");
    }
}

#[test]
fn the_binary_delivers_every_id_once_in_pacing_order_never_closer_than_the_interval() {
    // The first call is held 500 ms, so the first LOW batch is certainly in flight when HIGH
    // is posted, and HIGH goes next whatever the machine's speed.
    let upstream = Upstream::start(vec![Reply::Stall(Duration::from_millis(500))]);
    let interval = Duration::from_millis(300);
    let url = upstream.url("/items/{id}");
    let args = ["--interval", "300ms", "--batch-size", "2", "--upstream", &url, "--log-format", "json"];
    let server = Server::start(&args);
    let low = server.ingest(&[1, 2, 3, 4, 5, 6], "LOW");
    upstream.wait_for(1, Duration::from_secs(10));
    let high = server.ingest(&[7, 8], "HIGH");
    for id in [&low, &high] {
        server.wait_status(id, "completed");
    }
    assert_eq!(batch_statuses(&server.status(&low)), ["completed"; 3]);
    let (_, log) = server.terminate();
    assert!(log.contains("upstream: GET http://127.0.0.1:"), "{log}");

    let arrivals = upstream.arrivals();
    let paths: Vec<&str> = arrivals.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(paths, ["/items/1", "/items/2", "/items/7", "/items/8", "/items/3", "/items/4", "/items/5", "/items/6"]);
    let released: Vec<u64> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()?["release_us"].as_u64())
        .collect();
    assert_eq!(released.len(), 4, "{log}");
    for pair in released.windows(2) {
        assert!(pair[1] - pair[0] >= 300_000, "releases {pair:?} µs closer than the interval");
    }
    let firsts: Vec<Instant> = arrivals.iter().step_by(2).map(|a| a.at).collect();
    assert_gaps_at_least(&firsts, interval, &arrivals);
}

#[test]
fn a_refused_upstream_fails_the_batch_after_max_attempts_with_its_reason() {
    let (_reserved, port) = common::refusing_port();
    let url = format!("http://127.0.0.1:{port}/items/{{id}}");
    let server = Server::start(&[
        "--interval",
        "10ms",
        "--upstream",
        &url,
        "--upstream-timeout",
        "1s",
        "--max-attempts",
        "2",
        "--retry-min-backoff",
        "10ms",
    ]);
    let id = server.ingest(&[9], "HIGH");
    let status = wait_for("the batch to fail", Duration::from_secs(10), || {
        let status = server.status(&id);
        (status["status"] == "failed").then_some(status)
    });
    let batch = &status["batches"][0];
    assert_eq!((&batch["status"], &batch["attempts"]), (&json!("failed"), &json!(2)), "{status}");
    assert_eq!((&batch["last_error"], &batch["failed_ids"]), (&json!("id 9: connection refused"), &json!([9])));
    assert!(batch["completed_at"].is_string() && batch["retry_at"].is_null(), "{status}");
    assert!(status["eta_completed"].is_null(), "{status}");
    let metrics = ureq::get(&format!("{}/metrics", server.base)).call().unwrap().into_string().unwrap();
    for line in [
        "ingestd_upstream_calls_total{outcome=\"error\"} 2",
        "ingestd_batches_failed_total{priority=\"HIGH\"} 1",
        "ingestd_batch_retries_total{priority=\"HIGH\"} 1",
        "ingestd_upstream_call_duration_seconds_count 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    let (_, log) = server.terminate();
    assert!(log.contains("external API failed for id 9: connection refused"), "{log}");
}

/// `--interval 20ms --batch-size B --upstream URL` plus `extra`.
fn against(upstream: &Upstream, batch_size: &str, extra: &[&str]) -> Server {
    let url = upstream.url("/items/{id}");
    let mut args = vec!["--interval", "20ms", "--batch-size", batch_size, "--upstream", &url, "--log-format", "json"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn paths(upstream: &Upstream) -> Vec<String> {
    upstream.arrivals().into_iter().map(|a| a.path).collect()
}

#[test]
fn delivered_ids_are_never_sent_again_and_a_retryable_5xx_goes_on_with_the_release() {
    let upstream = Upstream::start(vec![Reply::Status(200), Reply::Status(500), Reply::Status(200)]);
    let server = against(&upstream, "3", &["--retry-min-backoff", "50ms"]);
    let id = server.ingest(&[1, 2, 3], "LOW");
    let status = server.wait_status(&id, "completed");
    assert_eq!(paths(&upstream), ["/items/1", "/items/2", "/items/3", "/items/2"]);
    let batch = &status["batches"][0];
    assert_eq!((&batch["attempts"], &batch["failed_ids"]), (&json!(2), &json!([])), "{status}");
    let error = batch["last_error"].as_str().unwrap();
    assert!(error.starts_with("id 2: HTTP 500 after ") && error.ends_with(" ms"), "{error}");
}

#[test]
fn a_503_stops_the_release_and_the_rest_waits_for_the_retry() {
    let upstream = Upstream::start(vec![Reply::Status(200), Reply::Status(503)]);
    let server = against(&upstream, "3", &["--retry-min-backoff", "50ms"]);
    let id = server.ingest(&[1, 2, 3], "LOW");
    server.wait_status(&id, "completed");
    assert_eq!(paths(&upstream), ["/items/1", "/items/2", "/items/2", "/items/3"]);
}

#[test]
fn a_4xx_is_permanent_and_the_release_goes_on() {
    let upstream = Upstream::start(vec![Reply::Status(200), Reply::Body(404, "no such item\n")]);
    let server = against(&upstream, "3", &["--retry-min-backoff", "20ms"]);
    let id = server.ingest(&[1, 2, 3], "MEDIUM");
    let status = server.wait_status(&id, "failed");
    let batch = &status["batches"][0];
    assert_eq!(
        (&batch["status"], &batch["attempts"], &batch["failed_ids"]),
        (&json!("failed"), &json!(1), &json!([2]))
    );
    let error = batch["last_error"].as_str().unwrap();
    assert!(error.starts_with("id 2: HTTP 404 after ") && error.ends_with(" ms: no such item"), "{error}");
    // Another ingestion goes through after it: nothing of the failed one is sent again.
    let next = server.ingest(&[4], "MEDIUM");
    server.wait_status(&next, "completed");
    assert_eq!(paths(&upstream), ["/items/1", "/items/2", "/items/3", "/items/4"]);
}

#[test]
fn the_backoff_doubles_and_a_waiting_retry_shows_when_it_goes() {
    let upstream = Upstream::start(vec![Reply::Status(500), Reply::Status(500), Reply::Status(500)]);
    let server = against(&upstream, "1", &["--retry-min-backoff", "200ms", "--max-attempts", "5"]);
    let id = server.ingest(&[5], "HIGH");
    let waiting = wait_for("a retry to wait", Duration::from_secs(5), || {
        let status = server.status(&id);
        status["batches"][0]["retry_at"].is_string().then_some(status)
    });
    let batch = &waiting["batches"][0];
    assert_eq!((&batch["status"], &batch["attempts"]), (&json!("triggered"), &json!(1)), "{waiting}");
    assert!(batch["last_error"].as_str().unwrap().starts_with("id 5: HTTP 500 after "), "{waiting}");
    let queue = server.get("/queue").json;
    assert_eq!((&queue["retrying_batches"], &queue["queued_batches"]), (&json!(1), &json!(0)), "{queue}");
    server.wait_status(&id, "completed");
    let at: Vec<Instant> = upstream.arrivals().iter().map(|a| a.at).collect();
    assert_eq!(at.len(), 4);
    // Each wait is at least its backoff (200, 400, 800 ms). How much longer depends on the
    // machine; the exact schedule is the manual clock's (tests/pacer_threads.rs).
    for (pair, backoff) in at.windows(2).zip([200u64, 400, 800]) {
        let gap = pair[1] - pair[0];
        let backoff = Duration::from_millis(backoff);
        assert!(gap >= backoff, "waited {gap:?} for a backoff of {backoff:?}");
    }
    assert_eq!(server.status(&id)["batches"][0]["attempts"], 4);
    // The backoffs the pacer chose, exactly: doubled after each failure.
    let (_, log) = server.terminate();
    let backoffs: Vec<&str> = log
        .lines()
        .filter_map(|line| line.split_once("retrying ")?.1.split_once(" in ")?.1.split(';').next())
        .collect();
    assert_eq!(backoffs, ["200ms", "400ms", "800ms"], "{log}");
}

#[test]
fn retry_after_pauses_every_release_and_the_queue_shows_it() {
    let upstream = Upstream::start(vec![Reply::RetryAfter(429, "1".into())]);
    let server = against(&upstream, "1", &["--retry-min-backoff", "20ms"]);
    let first = server.ingest(&[1], "HIGH");
    let second = server.ingest(&[2], "LOW");
    let queue = wait_for("the pause", Duration::from_secs(5), || {
        let queue = server.get("/queue").json;
        queue["paused_until"].is_string().then_some(queue)
    });
    let paused_until = queue["paused_until"].as_str().unwrap().to_owned();
    // The waiting batch's ETA (and the next release) are at or after the pause's end.
    let eta = server.status(&second)["batches"][0]["eta"].as_str().map(str::to_owned);
    assert!(eta.as_deref().is_some_and(|eta| eta >= paused_until.as_str()), "{eta:?} before {paused_until}");
    assert!(queue["next_release_at"].as_str().unwrap() >= paused_until.as_str(), "{queue}");
    // The dashboard's countdown goes to the pause's end too, not to the backoff's (20 ms).
    let wait_ms = server.get("/dashboard.json").json["next_release_in_ms"].as_f64().expect("a countdown");
    assert!(wait_ms > 500.0, "the dashboard says the next release is {wait_ms} ms away, within a 1 s pause");
    // So are the paused batch's retry (its backoff, 20 ms, ends first) and expected end.
    let retrying = server.status(&first);
    for at in [&retrying["batches"][0]["retry_at"], &retrying["eta_completed"]] {
        assert!(at.as_str().is_some_and(|at| at >= paused_until.as_str()), "{at} before {paused_until}: {retrying}");
    }
    server.wait_status(&first, "completed");
    server.wait_status(&second, "completed");
    let arrivals = upstream.arrivals();
    assert_eq!(paths(&upstream), ["/items/1", "/items/1", "/items/2"]);
    let gap = arrivals[1].at - arrivals[0].at;
    assert!(gap >= Duration::from_secs(1), "released {gap:?} after a Retry-After of 1 s");
    assert!(server.get("/queue").json["paused_until"].is_null());
}

#[test]
fn arrivals_are_never_closer_than_the_interval_retries_included() {
    // Every kind of answer, one id per batch: every arrival is a release's first call.
    let mut script = Vec::new();
    for _ in 0..3 {
        script.extend([Reply::Status(500), Reply::Status(200), Reply::Status(503), Reply::Body(404, "gone")]);
        script.extend([Reply::Status(200), Reply::Status(502), Reply::Status(200)]);
    }
    let upstream = Upstream::start(script);
    let interval = Duration::from_millis(40);
    // The least backoff below the interval: retries become ready as soon as they may.
    let server = against(&upstream, "1", &["--interval", "40ms", "--retry-min-backoff", "10ms"]);
    let ids: Vec<String> = [("HIGH", 1), ("LOW", 2), ("MEDIUM", 3), ("HIGH", 4), ("LOW", 5), ("MEDIUM", 6)]
        .into_iter()
        .map(|(priority, n)| server.ingest(&[n, n + 10, n + 20], priority))
        .collect();
    for id in &ids {
        wait_for("the ingestion to finish", Duration::from_secs(20), || {
            let status = server.status(id)["status"].clone();
            (status == "completed" || status == "failed").then_some(())
        });
    }
    let arrivals = upstream.arrivals();
    assert!(arrivals.len() >= 24, "{arrivals:#?}");
    let firsts: Vec<Instant> = arrivals.iter().map(|a| a.at).collect();
    assert_gaps_at_least(&firsts, interval, &arrivals);
}

fn ingestd(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingestd"));
    command.args(args).env_remove("INGESTD_UPSTREAM_HEADERS").envs(env.iter().copied());
    command.output().expect("run ingestd")
}

#[test]
fn bad_upstream_flags_exit_2_naming_the_flag() {
    let url = "http://127.0.0.1:9/items/{id}";
    for (args, env, says) in [
        (&["--upstream", "http://127.0.0.1:9/items"][..], None, "--upstream takes an http or https URL with {id}"),
        (&["--upstream", "file:///{id}"][..], None, "--upstream takes an http or https URL with {id}"),
        (&["--upstream", url, "--upstream-method", "PUT"][..], None, "--upstream-method takes GET or POST, not 'PUT'"),
        (&["--upstream", url, "--upstream-header", "Bearer x"][..], None, "--upstream-header takes 'Name: value'"),
        (
            &["--upstream", url][..],
            Some("X-Key: a\nno colon here"),
            "INGESTD_UPSTREAM_HEADERS line 2 (as --upstream-header)",
        ),
        (&["--upstream", url, "--upstream-timeout", "soon"][..], None, "--upstream-timeout takes a duration"),
        (&["--upstream-method", "POST"][..], None, "--upstream-method needs --upstream URL"),
        (&["--max-attempts", "0"][..], None, "--max-attempts takes a whole number of at least 1"),
        (&["--retry-max-backoff", "0s"][..], None, "--retry-max-backoff must be more than 0"),
    ] {
        let env: Vec<(&str, &str)> = env.map(|v| ("INGESTD_UPSTREAM_HEADERS", v)).into_iter().collect();
        let out = ingestd(args, &env);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_unreadable_ca_file_is_reported_at_start() {
    let out = ingestd(&["--upstream", "https://127.0.0.1:9/{id}", "--upstream-ca", "/nonexistent/ca.pem"], &[]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--upstream-ca /nonexistent/ca.pem: cannot read"), "{stderr}");
}

#[test]
fn help_lists_the_upstream_flags() {
    let out = ingestd(&["--help"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--upstream URL",
        "--upstream-method",
        "--upstream-header",
        "INGESTD_UPSTREAM_HEADERS",
        "--upstream-timeout",
        "--upstream-ca",
        "--retry-min-backoff",
        "--retry-max-backoff",
        "--max-attempts",
    ] {
        assert!(text.contains(flag), "usage lacks {flag}:\n{text}");
    }
}

#[test]
fn a_restart_between_a_failure_and_its_retry_keeps_the_retry_its_backoff_and_the_pause() {
    let dir = common::TempDir::new("upstream-restart");
    // Id 1 is delivered; id 2 gets a 429 asking for a 3 s pause; the backoff is 2 s.
    let upstream = Upstream::start(vec![Reply::Status(200), Reply::RetryAfter(429, "3".into())]);
    let args = ["--retry-min-backoff", "2s", "--data-dir", dir.path()];
    let server = against(&upstream, "3", &args);
    let id = server.ingest(&[1, 2, 3], "HIGH");
    let before = wait_for("the retry to wait", Duration::from_secs(5), || {
        let status = server.status(&id);
        status["batches"][0]["retry_at"].is_string().then_some(status)
    });
    let paused = server.get("/queue").json["paused_until"].clone();
    assert!(paused.is_string(), "{paused}");
    server.crash();

    let server = against(&upstream, "3", &args);
    let after = server.status(&id);
    let (was, is) = (&before["batches"][0], &after["batches"][0]);
    for field in ["status", "attempts", "retry_at", "last_error", "failed_ids"] {
        assert_eq!(was[field], is[field], "{field} after the restart: {after}");
    }
    assert!(server.get("/queue").json["paused_until"].is_string(), "the pause is kept");
    server.wait_status(&id, "completed");
    let arrivals = upstream.arrivals();
    // Id 1 is never sent again; ids 2 and 3 go once the pause is over, not at the restart.
    assert_eq!(paths(&upstream), ["/items/1", "/items/2", "/items/2", "/items/3"]);
    let waited = arrivals[2].at - arrivals[1].at;
    assert!(waited >= Duration::from_secs(3), "retried {waited:?} after a 429 asking for 3 s");
    assert_eq!(server.status(&id)["batches"][0]["attempts"], 2);
    let (_, log) = server.terminate();
    assert!(
        log.contains("the upstream asked for a pause (Retry-After) until "),
        "the restored pause is not logged: {log}"
    );
}

/// The pause an upstream asked for holds across a restart for every batch queued, not only
/// the one that was told to wait: they went at the restart, the pause restored after them.
#[test]
fn a_pause_holds_across_a_restart_for_every_batch_queued() {
    let dir = common::TempDir::new("pause-restart");
    let upstream = Upstream::start(vec![Reply::RetryAfter(429, "3".into())]);
    let args = ["--retry-min-backoff", "20ms", "--data-dir", dir.path()];
    let server = against(&upstream, "1", &args);
    let id = server.ingest(&[1, 2, 3], "HIGH");
    wait_for("the pause", Duration::from_secs(5), || {
        server.get("/queue").json["paused_until"].is_string().then_some(())
    });
    server.crash();
    let server = against(&upstream, "1", &args);
    server.wait_status(&id, "completed");
    let arrivals = upstream.arrivals();
    assert_eq!(paths(&upstream), ["/items/1", "/items/1", "/items/2", "/items/3"]);
    for later in &arrivals[1..] {
        let after = later.at - arrivals[0].at;
        assert!(after >= Duration::from_secs(3), "{} came {after:?} after a 429 asking for 3 s", later.path);
    }
}

/// Across a restart, the next batch still waits an interval after the last one's first answer
/// (which the journal does not hold): it came an interval after the last release instead.
#[test]
fn across_a_restart_the_next_batch_waits_an_interval_after_the_last_first_answer() {
    let dir = common::TempDir::new("answer-restart");
    let upstream = Upstream::start(vec![Reply::Stall(Duration::from_millis(800))]);
    let url = upstream.url("/items/{id}");
    let args = ["--interval", "1s", "--batch-size", "1", "--upstream", &url, "--data-dir", dir.path()];
    let server = Server::start(&args);
    let id = server.ingest(&[1, 2], "HIGH");
    upstream.wait_for(1, Duration::from_secs(5));
    // A clean stop lets the batch in flight finish: its answer comes 0.8 s after its release.
    server.terminate();
    let server = Server::start(&args);
    server.wait_status(&id, "completed");
    let arrivals = upstream.arrivals();
    assert_eq!(paths(&upstream), ["/items/1", "/items/2"]);
    let gap = arrivals[1].at - arrivals[0].at;
    assert!(gap >= Duration::from_millis(1_800), "the second batch came {gap:?} after the first (answered at 0.8 s)");
}
