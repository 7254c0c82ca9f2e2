//! The API over real HTTP, against the `ingestd` binary on an ephemeral port.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{batch_statuses, exchange, rfc3339_ms, wait_for, Server, PATIENCE};
use serde_json::{json, Value};

const FAST: &[&str] = &["--interval", "100ms", "--fetch-delay", "1ms"];

#[test]
fn health() {
    let server = Server::start(FAST);
    let answer = server.get("/health");
    assert_eq!((answer.status, answer.json), (200, json!({"status": "ok"})));
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(server.get("/health/").status, 200);
}

#[test]
fn ingest_answers_an_id_and_status_shows_batches_in_request_order() {
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "1ms"]);
    let first = server.ingest(&[1, 2, 3, 4, 5], "HIGH");
    let second = server
        .post("/ingest/", r#"{"ids": [1000000007, 7, 7, 7], "priority": "LOW", "note": "extra keys are ignored"}"#);
    assert_eq!(second.status, 200, "{second:?}");
    let second = second.json["ingestion_id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&first).unwrap().get_version_num(), 4);

    let status = server.status(&first);
    assert_eq!(status["ingestion_id"], first.as_str());
    let ids: Vec<&Value> = status["batches"].as_array().unwrap().iter().map(|b| &b["ids"]).collect();
    assert_eq!(ids, [&json!([1, 2, 3]), &json!([4, 5])]);
    for batch in status["batches"].as_array().unwrap() {
        assert_eq!(uuid::Uuid::parse_str(batch["batch_id"].as_str().unwrap()).unwrap().get_version_num(), 4);
    }
    // The first batch went at once; with a one-hour interval the second waits.
    let status = wait_for("the first batch to complete", Duration::from_secs(5), || {
        let status = server.status(&first);
        (batch_statuses(&status)[0] == "completed").then_some(status)
    });
    assert_eq!(batch_statuses(&status), ["completed", "yet_to_start"]);
    assert_eq!(status["status"], "triggered");

    let status = server.get(&format!("/status/{second}/")).json;
    assert_eq!(status["status"], "yet_to_start");
    assert_eq!(status["batches"][0]["ids"], json!([1000000007, 7, 7]));
    assert_eq!(status["batches"][1]["ids"], json!([7]));
    assert_eq!(batch_statuses(&status), ["yet_to_start", "yet_to_start"]);
}

/// When each batch was first seen released, bracketed by the polls around it.
struct Seen {
    ids: Value,
    after: Instant,
    by: Instant,
}

/// The worked example over HTTP. The order does not depend on timing: HIGH is posted while the
/// first MEDIUM batch is still in flight (300 ms an id), so it is queued before the next
/// release. Exact slots are the manual clock's (tests/pacer_threads.rs); here only the lower
/// bound that pacing guarantees is checked, as a quiet machine is not.
#[test]
fn worked_example_runs_in_priority_order_one_batch_per_interval() {
    let interval = Duration::from_millis(300);
    let server = Server::start(&["--interval", "300ms", "--fetch-delay", "300ms"]);
    let t0 = Instant::now();
    let medium = server.ingest(&[1, 2, 3, 4, 5], "MEDIUM");
    wait_for("batch [1, 2, 3] to be in flight", PATIENCE, || {
        (server.status(&medium)["batches"][0]["status"] == "triggered").then_some(())
    });
    let high = server.ingest(&[6, 7, 8, 9], "HIGH");

    let mut seen: Vec<Seen> = Vec::new();
    let mut last_poll = t0;
    let done = wait_for("every batch to complete", PATIENCE, || {
        let poll_started = Instant::now();
        let statuses = [server.status(&medium), server.status(&high)];
        let poll_done = Instant::now();
        for batch in statuses.iter().flat_map(|s| s["batches"].as_array().unwrap()) {
            if batch["status"] != "yet_to_start" && !seen.iter().any(|s| s.ids == batch["ids"]) {
                seen.push(Seen { ids: batch["ids"].clone(), after: last_poll, by: poll_done });
            }
        }
        last_poll = poll_started;
        statuses.iter().all(|s| s["status"] == "completed").then_some(statuses)
    });

    // The order of release is the server's own record (two releases seen by one poll would
    // otherwise be in the order the poll read them).
    let mut released: Vec<(i64, i64, Value)> = done
        .iter()
        .flat_map(|s| s["batches"].as_array().unwrap())
        .map(|b| (rfc3339_ms(&b["triggered_at"]), rfc3339_ms(&b["completed_at"]), b["ids"].clone()))
        .collect();
    released.sort_by_key(|r| r.0);
    let order: Vec<&Value> = released.iter().map(|r| &r.2).collect();
    assert_eq!(order, [&json!([1, 2, 3]), &json!([6, 7, 8]), &json!([9]), &json!([4, 5])]);
    for pair in released.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "{} released before {} completed: {released:?}", pair[1].2, pair[0].2);
    }
    // Two releases are at least an interval apart (measured on our clock, bracketed by polls).
    seen.sort_by_key(|s| order.iter().position(|ids| **ids == s.ids));
    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let longest = b.by - a.after;
        assert!(longest >= interval, "releases {} and {} came at most {longest:?} apart", a.ids, b.ids);
    }
}

#[test]
fn bad_input_gets_a_clear_json_error() {
    let server = Server::start(FAST);
    let cases: &[(&str, &str, &str)] = &[
        ("", "invalid_json", "the body is empty"),
        ("ids=1,2&priority=HIGH", "invalid_json", "not valid JSON"),
        (r#"{"ids": [1, 2"#, "invalid_json", "not valid JSON"),
        ("[1, 2, 3]", "invalid_body", "must be a JSON object"),
        (r#"{"priority": "HIGH"}"#, "invalid_body", r#"the field "ids" is missing"#),
        (r#"{"ids": [1]}"#, "invalid_body", r#"the field "priority" is missing"#),
        (r#"{"ids": "1,2", "priority": "HIGH"}"#, "invalid_body", r#"ids is "1,2""#),
        (r#"{"ids": [1], "priority": 3}"#, "invalid_body", "priority is 3"),
        (
            r#"{"ids": [1], "priority": "LOW", "priority": "HIGH"}"#,
            "invalid_body",
            r#""priority" is given more than once"#,
        ),
        (r#"{"ids": [], "priority": "HIGH"}"#, "invalid_ids", "ids is empty"),
        (
            r#"{"ids": [1, 2, 3, 0], "priority": "HIGH"}"#,
            "invalid_ids",
            "ids[3] is 0; each id must be an integer from 1 to 1000000007",
        ),
        (r#"{"ids": [1000000008], "priority": "HIGH"}"#, "invalid_ids", "ids[0] is 1000000008"),
        (r#"{"ids": [-4], "priority": "HIGH"}"#, "invalid_ids", "ids[0] is -4"),
        (r#"{"ids": [1.5], "priority": "HIGH"}"#, "invalid_ids", "ids[0] is 1.5"),
        (r#"{"ids": [99999999999999999999999], "priority": "HIGH"}"#, "invalid_ids", "ids[0] is 1e+23"),
        (r#"{"ids": ["3"], "priority": "HIGH"}"#, "invalid_ids", r#"ids[0] is "3""#),
        (r#"{"ids": [null], "priority": "HIGH"}"#, "invalid_ids", "ids[0] is null"),
        (r#"{"ids": [true], "priority": "HIGH"}"#, "invalid_ids", "ids[0] is true"),
        (
            r#"{"ids": [1], "priority": "high"}"#,
            "invalid_priority",
            r#"priority is "high"; it must be one of "HIGH", "MEDIUM" or "LOW""#,
        ),
        (r#"{"ids": [1], "priority": "CRITICAL"}"#, "invalid_priority", r#"priority is "CRITICAL""#),
    ];
    for &(body, code, detail) in cases {
        let answer = server.post("/ingest", body);
        assert_eq!((answer.status, answer.json["error"].as_str()), (400, Some(code)), "body {body:?}: {answer:?}");
        let got = answer.json["detail"].as_str().unwrap();
        assert!(got.contains(detail), "body {body:?}: detail {got:?} lacks {detail:?}");
        assert_eq!(answer.content_type, "application/json");
    }
}

#[test]
fn oversized_bodies_are_refused_with_413() {
    let server = Server::start(&["--max-body", "1000", "--interval", "100ms"]);
    let ids: Vec<u32> = (1..=400).collect();
    let answer = server.post("/ingest", &json!({"ids": ids, "priority": "LOW"}).to_string());
    assert_eq!((answer.status, answer.json["error"].as_str()), (413, Some("body_too_large")), "{answer:?}");
    assert!(answer.json["detail"].as_str().unwrap().contains("1000 bytes"));
}

#[test]
fn unknown_paths_ids_and_methods() {
    let server = Server::start(FAST);
    // `/` is the dashboard (tests/openapi.rs).
    for path in ["/nope", "/status", "/status/", "/ingest/extra", "/status/a/b"] {
        let answer = server.get(path);
        assert_eq!((answer.status, answer.json["error"].as_str()), (404, Some("not_found")), "GET {path}: {answer:?}");
    }
    for id in ["not-a-uuid", "00000000-0000-4000-8000-000000000000", &uuid::Uuid::new_v4().to_string()] {
        let answer = server.get(&format!("/status/{id}"));
        assert_eq!((answer.status, answer.json["error"].as_str()), (404, Some("not_found")), "{id}: {answer:?}");
        assert!(answer.json["detail"].as_str().unwrap().contains("unknown or expired ingestion"), "{answer:?}");
    }
    for (method, path, allow) in [
        ("GET", "/ingest", "POST"),
        ("PUT", "/ingest/", "POST"),
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/status/00000000-0000-4000-8000-000000000000", "GET, HEAD"),
    ] {
        let answer = server.request(method, path);
        assert_eq!(
            (answer.status, answer.json["error"].as_str()),
            (405, Some("method_not_allowed")),
            "{method} {path}"
        );
        assert_eq!(answer.allow.as_deref(), Some(allow), "{method} {path}");
        assert_eq!(answer.content_type, "application/json");
    }
}

#[test]
fn bad_requests_do_not_disturb_accepted_work() {
    let server = Server::start(&["--interval", "50ms", "--fetch-delay", "1ms"]);
    let kept = server.ingest(&[11, 12, 13, 14, 15, 16, 17], "MEDIUM");
    let before = server.status(&kept);
    for body in ["", "{", r#"{"ids": [0], "priority": "HIGH"}"#, r#"{"ids": [1], "priority": "NOW"}"#, "null"] {
        assert_eq!(server.post("/ingest", body).status, 400);
    }
    assert_eq!(server.request("DELETE", &format!("/status/{kept}")).status, 405);
    let after = server.status(&kept);
    assert_eq!(before["batches"].as_array().unwrap().len(), 3);
    for (b, a) in before["batches"].as_array().unwrap().iter().zip(after["batches"].as_array().unwrap()) {
        assert_eq!((&b["batch_id"], &b["ids"]), (&a["batch_id"], &a["ids"]));
    }
    wait_for("the kept ingestion to complete", Duration::from_secs(5), || {
        (server.status(&kept)["status"] == "completed").then_some(())
    });
}

#[test]
fn sixteen_clients_posting_at_once_all_get_their_ingestions() {
    const CLIENTS: usize = 16;
    const EACH: usize = 10;
    let server = Arc::new(Server::start(&["--interval", "1h", "--fetch-delay", "1ms"]));
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (server, start) = (Arc::clone(&server), Arc::clone(&start));
            std::thread::spawn(move || {
                // One keep-alive connection per client, all opened together.
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                start.wait();
                (0..EACH)
                    .map(|i| {
                        let ids: Vec<u32> = (0..=(i as u32 % 7)).map(|k| (c * 1000 + i * 10) as u32 + k + 1).collect();
                        let priority = ["HIGH", "MEDIUM", "LOW"][(c + i) % 3];
                        (server.ingest_on(&agent, json!({"ids": ids, "priority": priority})), ids)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let accepted: Vec<(String, Vec<u32>)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(accepted.len(), CLIENTS * EACH);
    let mut unique: Vec<&String> = accepted.iter().map(|(id, _)| id).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), CLIENTS * EACH, "ingestion ids are unique");
    for (id, ids) in &accepted {
        let status = server.status(id);
        let got: Vec<u32> = status["batches"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32))
            .collect();
        assert_eq!(&got, ids, "ingestion {id}");
    }
}

const BATCH_FIELDS: [&str; 11] = [
    "batch_id",
    "ids",
    "status",
    "attempts",
    "position",
    "eta",
    "triggered_at",
    "completed_at",
    "retry_at",
    "last_error",
    "failed_ids",
];

#[test]
fn rfc3339_ms_reads_what_the_api_writes() {
    assert_eq!(rfc3339_ms(&json!("1970-01-01T00:00:00.000Z")), 0);
    assert_eq!(rfc3339_ms(&json!("2000-02-29T00:00:00.000Z")), 951_782_400_000);
    assert_eq!(rfc3339_ms(&json!("2027-01-01T00:00:00.123Z")), 1_798_761_600_123);
}

/// Positions and ETAs against what then happened. The first LOW batch stays in flight 1.8 s
/// (600 ms an id) while everything is posted and read, so the snapshot and the order do not
/// depend on how fast the requests go. Later releases follow long batches, and an ETA only
/// moves later, so a batch never goes before its ETA; how late it goes is not bounded here
/// (the exact slots are the manual clock's: tests/pacer_threads.rs).
#[test]
fn status_positions_and_etas_match_the_order_and_times_of_release() {
    let interval_ms = 400;
    let server = Server::start(&["--interval", "400ms", "--fetch-delay", "600ms"]);
    let low = server.ingest_released(&[1, 2, 3, 4, 5, 6], "LOW");
    let medium = server.ingest(&[7, 8, 9, 10, 11, 12], "MEDIUM");
    let high = server.ingest(&[13, 14, 15], "HIGH");

    // Every yet-to-start batch as (ids, position, eta in ms), from one status answer each.
    let mut promised: Vec<(Value, u64, i64)> = Vec::new();
    for id in [&low, &medium, &high] {
        let status = server.status(id);
        assert!(status["eta_completed"].is_string(), "unfinished, so it has an eta_completed: {status}");
        let mut slots = Vec::new();
        for batch in status["batches"].as_array().unwrap() {
            let keys: Vec<&String> = batch.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), BATCH_FIELDS.len(), "{batch}");
            assert!(BATCH_FIELDS.iter().all(|f| batch.get(f).is_some()), "{batch}");
            if batch["status"] == "yet_to_start" {
                assert!(batch["triggered_at"].is_null() && batch["completed_at"].is_null(), "{batch}");
                let (position, eta) = (batch["position"].as_u64().unwrap(), rfc3339_ms(&batch["eta"]));
                slots.push(eta - position as i64 * interval_ms);
                promised.push((batch["ids"].clone(), position, eta));
            } else {
                assert!(batch["position"].is_null() && batch["eta"].is_null(), "{batch}");
                rfc3339_ms(&batch["triggered_at"]);
            }
        }
        // Within one answer, ETAs are one next slot plus a whole interval per position.
        assert!(slots.windows(2).all(|w| w[0] == w[1]), "{status}");
        let last = status["batches"].as_array().unwrap().last().unwrap();
        assert_eq!(status["eta_completed"], last["eta"].as_str().map_or(last["triggered_at"].clone(), |e| json!(e)));
    }
    assert_eq!(promised.len(), 4, "all but the first LOW batch wait");

    let done = wait_for("every batch to complete", Duration::from_secs(30), || {
        let all = [&low, &medium, &high].map(|id| server.status(id));
        all.iter().all(|s| s["status"] == "completed").then_some(all)
    });
    // Each batch as (ids, triggered_at, completed_at).
    let mut released: Vec<(Value, i64, i64)> = Vec::new();
    for status in &done {
        assert_eq!(status["eta_completed"], Value::Null);
        for batch in status["batches"].as_array().unwrap() {
            assert!(batch["position"].is_null() && batch["eta"].is_null(), "{batch}");
            let (triggered, completed) = (rfc3339_ms(&batch["triggered_at"]), rfc3339_ms(&batch["completed_at"]));
            assert!(completed >= triggered, "{batch}");
            released.push((batch["ids"].clone(), triggered, completed));
        }
    }
    released.sort_by_key(|r| r.1);
    let release_order: Vec<&Value> = released.iter().map(|r| &r.0).collect();
    assert_eq!(
        release_order,
        [&json!([1, 2, 3]), &json!([13, 14, 15]), &json!([7, 8, 9]), &json!([10, 11, 12]), &json!([4, 5, 6])]
    );
    promised.sort_by_key(|p| p.2);
    let eta_order: Vec<&Value> = promised.iter().map(|p| &p.0).collect();
    assert_eq!(eta_order, release_order[1..], "ETAs order the batches as they were released");
    for (ids, _, eta) in &promised {
        let triggered = released.iter().find(|r| &r.0 == ids).unwrap().1;
        assert!(triggered >= *eta, "{ids} went at {triggered}, before its ETA {eta}");
    }
}

#[test]
fn queue_shows_waiting_work_per_priority_the_batch_in_flight_and_the_drain_time() {
    // The first batch stays in flight for the whole test.
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "1h"]);
    let empty = server.get("/queue");
    assert_eq!(empty.status, 200);
    assert_eq!(
        (&empty.json["queued_batches"], &empty.json["next_release_at"], &empty.json["drain_seconds"]),
        (&json!(0), &Value::Null, &json!(0.0))
    );
    assert_eq!(empty.json["in_flight"], Value::Null);

    let low = server.ingest_released(&[1, 2, 3, 4], "LOW");
    server.ingest(&[5, 6, 7, 8, 9, 10, 11], "HIGH");
    let queue = server.get("/queue/").json;
    let levels: Vec<(&Value, &Value, &Value)> = queue["priorities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (&l["priority"], &l["queued_batches"], &l["queued_ids"]))
        .collect();
    let want = [
        (json!("HIGH"), json!(3), json!(7)),
        (json!("MEDIUM"), json!(0), json!(0)),
        (json!("LOW"), json!(1), json!(1)),
    ];
    assert_eq!(levels, want.iter().map(|(p, b, i)| (p, b, i)).collect::<Vec<_>>());
    assert_eq!(
        (&queue["queued_batches"], &queue["queued_ids"], &queue["interval_seconds"]),
        (&json!(4), &json!(8), &json!(3600.0))
    );
    assert!(queue["priorities"][1]["oldest_waiting_seconds"].is_null());
    for level in [0, 2] {
        assert!(queue["priorities"][level]["oldest_waiting_seconds"].as_f64().unwrap() >= 0.0, "{queue}");
        rfc3339_ms(&queue["priorities"][level]["oldest_waiting_since"]);
    }
    // The first LOW batch went at once and is still in flight; the rest wait an hour each.
    assert_eq!(queue["in_flight"]["ingestion_id"], low.as_str());
    assert_eq!((&queue["in_flight"]["ids"], &queue["in_flight"]["priority"]), (&json!([1, 2, 3]), &json!("LOW")));
    let next = rfc3339_ms(&queue["next_release_at"]);
    assert_eq!(rfc3339_ms(&queue["drained_at"]) - next, 3 * 3_600_000);
    let drain = queue["drain_seconds"].as_f64().unwrap();
    assert!((4.0 * 3600.0 - 5.0..=4.0 * 3600.0).contains(&drain), "{drain}");
    let wait = next - rfc3339_ms(&queue["now"]);
    assert!(
        (3_600_000 - 5_000..=3_600_000).contains(&wait),
        "the next slot is an hour after the first release: {wait}"
    );
    assert_eq!(server.request("POST", "/queue").allow.as_deref(), Some("GET, HEAD"));
}

#[test]
fn an_ingestion_is_found_only_by_the_id_as_the_api_wrote_it() {
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "1ms"]);
    let id = server.ingest(&[1], "LOW");
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(server.status(&id.to_ascii_uppercase())["ingestion_id"], id.as_str());
    let other_forms = [format!("%7B{id}%7D"), format!("{{{id}}}"), format!("urn:uuid:{id}"), uuid.simple().to_string()];
    for other in other_forms {
        let answer = server.get(&format!("/status/{other}"));
        assert_eq!((answer.status, answer.json["error"].as_str()), (404, Some("not_found")), "{other}: {answer:?}");
        assert!(answer.json["detail"].as_str().unwrap().contains("unknown or expired ingestion"), "{answer:?}");
    }
}

#[test]
fn a_header_that_means_one_thing_sent_twice_is_refused_and_queues_nothing() {
    let server = Server::start(&["--interval", "1h"]);
    let body = r#"{"ids": [1], "priority": "LOW"}"#;
    let head = format!("POST /ingest HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n", body.len());
    let twice = format!("{head}Idempotency-Key: a\r\nidempotency-key: b\r\nConnection: close\r\n\r\n{body}");
    let answer = exchange(&server, twice.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains(r#"{"error":"duplicate_header","detail":"the Idempotency-Key header was sent more than once"#)
    );
    let hosts = format!("{head}Host: u\r\nConnection: close\r\n\r\n{body}");
    let answer = exchange(&server, hosts.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains("the Host header was sent more than once"));
    assert_eq!(server.ingestions(), 0, "a refused request was accepted");
    // Once is fine, and so is the same key again: it answers the first ingestion.
    let once = |key: &str| server.post_with("/ingest", body, &[("Idempotency-Key", key)]).json["ingestion_id"].clone();
    assert_eq!(once("a"), once("a"));
}

/// Every answer, ours and the relay's, says not to store it (status data go stale at once) and
/// not to sniff its type; the relay's carry a `Date` (RFC 9110, 6.6.1), and the pages may not be
/// framed by another site.
#[test]
fn every_answer_carries_the_same_safety_headers() {
    let server = Server::start(&["--interval", "1h"]);
    let head_of = |request: &str| {
        let answer = exchange(&server, request.as_bytes());
        answer.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
    };
    let get = |path: &str| head_of(&format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
    let answers = [
        ("/queue", get("/queue")),
        ("/", get("/")),
        ("/nope", get("/nope")),
        ("relay 505", head_of("GET /health HTTP/2.0\r\nHost: t\r\n\r\n")),
    ];
    for (what, head) in &answers {
        assert!(head.contains("\r\ncache-control: no-store\r\n"), "{what}: {head}");
        assert!(head.contains("\r\nx-content-type-options: nosniff\r\n"), "{what}: {head}");
        assert!(head.contains("\r\ndate: "), "{what}: {head}");
    }
    assert!(answers[1].1.contains("\r\ncontent-security-policy: frame-ancestors 'none'"), "{}", answers[1].1);
    assert!(!answers[0].1.contains("content-security-policy"), "{}", answers[0].1);
}

/// RFC 9112 (3.2): an HTTP/1.1 request without `Host` gets 400; HTTP/1.0 needs none.
#[test]
fn an_http_11_request_without_host_is_refused_and_queues_nothing() {
    let server = Server::start(&["--interval", "1h"]);
    server.ingest_released(&[9], "LOW"); // Later ingestions stay queued for an hour.
    let body = r#"{"ids": [1], "priority": "LOW"}"#;
    let post = |version: &str| {
        let head =
            format!("POST /ingest HTTP/{version}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        exchange(&server, format!("{head}{body}").as_bytes())
    };
    let answer = post("1.1");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains(r#"{"error":"missing_host","detail":"an HTTP/1.1 request must carry a Host header"#),
        "{answer}"
    );
    assert_eq!((server.ingestions(), server.get("/queue").json["queued_ids"].clone()), (1, json!(0)));
    let answer = post("1.0");
    assert!(answer.starts_with("HTTP/1.0 200 ") || answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!((server.ingestions(), server.get("/queue").json["queued_ids"].clone()), (2, json!(1)));
}

/// An `Expect` other than `100-continue` gets 417 before any route, and the connection closes
/// (nothing after it is read); a chunked body with trailers is `bad_framing`, as the docs state.
#[test]
fn expect_other_than_continue_is_417_and_trailers_are_bad_framing() {
    let server = Server::start(&["--interval", "1h"]);
    let answer =
        exchange(&server, b"GET /health HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\nGET /health HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 417 ") && answer.contains(r#""error":"expectation_failed""#), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    let continued =
        "POST /ingest HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 31\r\nConnection: close\r\n\r\n";
    let answer = exchange(&server, format!(r#"{continued}{{"ids": [1], "priority": "LOW"}}"#).as_bytes());
    assert!(answer.contains("HTTP/1.1 200 "), "{answer}");

    let body = r#"{"ids": [2], "priority": "LOW"}"#;
    let chunked = format!("POST /ingest HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n", body.len());
    let answer = exchange(&server, format!("{chunked}\r\n").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let answer = exchange(&server, format!("{chunked}X-Checksum: 1\r\n\r\n").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains(r#""error":"bad_framing""#), "{answer}");
    // The one with a trailer was refused.
    assert_eq!(server.ingestions(), 2);
}

/// An HTTP/1.0 client that asks for keep-alive gets its answer and the end of the connection:
/// tiny_http kept such a connection open without saying so in its answer (RFC 9112, C.2.2), so
/// the client waited for the close until the idle timeout (`ab -k`: 3 s a request at 3 s).
#[test]
fn an_http_1_0_keep_alive_connection_ends_with_its_answer() {
    use std::io::{Read, Write};
    let server = Server::start(&["--interval", "1h", "--idle-timeout", "20s"]);
    let mut stream = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let closed = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed.is_ok(), "the connection stayed open after {answer:?}");
    assert!(answer.starts_with("HTTP/1.0 200 ") && !answer.to_ascii_lowercase().contains("keep-alive"), "{answer}");
}

/// As RFC 9112 (2.2) and RFC 9110 (10.1.1) ask: empty lines before a request line are ignored
/// (some clients end a body with a spare CRLF), and so is an HTTP/1.0 client's
/// `Expect: 100-continue` (such a client knows no `100 Continue`).
#[test]
fn spare_empty_lines_and_an_http_1_0_expectation_are_ignored() {
    let server = Server::start(&["--interval", "1h"]);
    let body = r#"{"ids": [1], "priority": "LOW"}"#;
    let post = |version: &str| {
        format!(
            "POST /ingest HTTP/{version}\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let health = "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let answer = exchange(&server, format!("\r\n\r\n{}\r\n{health}", post("1.1")).as_bytes());
    assert_eq!((answer.matches("HTTP/1.1 200 OK\r\n").count(), answer.matches("HTTP/").count()), (2, 3), "{answer}");
    let answer = exchange(&server, post("1.0").as_bytes());
    assert!(!answer.contains(" 100 "), "{answer}");
    assert_eq!((answer.matches("HTTP/1.0 200 OK\r\n").count(), answer.matches("HTTP/").count()), (1, 1), "{answer}");
    let id = answer.split(r#""ingestion_id":""#).nth(1).and_then(|rest| rest.split('"').next()).unwrap();
    assert_eq!(server.status(id)["batches"][0]["ids"], json!([1]));
}

/// A body sent with a `Transfer-Encoding` other than `chunked` is refused as soon as its head
/// arrives, and the connection closes: the body may never end as chunked (before, the answer
/// waited for the client to end its side, or for the idle timeout).
#[test]
fn a_transfer_encoding_other_than_chunked_is_refused_at_once_and_the_connection_closes() {
    use std::io::{Read, Write};
    let server = Server::start(&["--interval", "1h", "--idle-timeout", "30s"]);
    for (encoding, body) in [("gzip", r#"{"ids": [1], "priority": "LOW"}"#), ("identity", "x"), ("gzip, chunked", "{")]
    {
        let mut stream = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!("POST /ingest HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: {encoding}\r\n\r\n{body}");
        stream.write_all(head.as_bytes()).unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains(r#""error":"bad_framing""#), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(10), "{encoding}: answered after {:?}", started.elapsed());
    }
    assert_eq!(server.ingestions(), 0);
}

#[test]
fn a_request_smuggled_after_a_body_that_cannot_be_read_is_never_acted_on() {
    let server = Server::start(&["--interval", "1h"]);
    let body = r#"{"ids": [2], "priority": "LOW"}"#;
    // tiny_http's chunk decoder stops inside the trailer; what follows is read as a request.
    let smuggled = format!("POST /ingest HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let chunked = format!(
        "POST /ingest HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\nX{smuggled}",
        body.len()
    );
    let answer = exchange(&server, chunked.as_bytes());
    assert!(!answer.contains("HTTP/1.1 200 "), "the smuggled request was acted on: {answer}");
    assert_eq!(server.ingestions(), 0, "{answer}");
}

#[test]
fn after_an_oversized_chunked_body_nothing_more_on_that_connection_is_acted_on() {
    use std::io::{Read, Write};
    let server = Server::start(&["--interval", "1h", "--max-body", "64"]);
    let mut stream = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A chunk of 256 bytes, of which the first 70 overflow the limit.
    let head = "POST /ingest HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n";
    stream.write_all(format!("{head}{}", "x".repeat(70)).as_bytes()).unwrap();
    let mut answer = [0; 512];
    let read = stream.read(&mut answer).unwrap();
    let first = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(first.starts_with("HTTP/1.1 413 "), "{first}");
    // The rest of that chunk is a request; it must not run.
    let body = r#"{"ids": [2], "priority": "LOW"}"#;
    let inside = format!("POST /ingest HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    // It may already be closed: the write then fails, or the read sees a reset.
    let _ = stream.write_all(inside.as_bytes());
    let rest = common::read_to_close(&mut stream, Duration::from_secs(10))
        .unwrap_or_else(|rest| panic!("the connection stayed open 10 s after the 413: {first}{rest}"));
    assert!(!rest.contains("HTTP/1.1 200 "), "the request inside the chunk was acted on: {rest}");
    assert_eq!(server.ingestions(), 0, "{rest}");
}

/// The dashboard polls twice a second: each recent ingestion shows its first 12 batches and how
/// many it has, so the data stays small however many ids are queued (before, one ingestion of
/// 100,000 ids made it 8 MB, and ten of them 81 MB per poll).
#[test]
fn the_dashboard_data_stays_small_whatever_the_ingestions_hold() {
    let server = Server::start(&["--interval", "1h"]);
    let ids: Vec<u32> = (1..=30_000).collect();
    for _ in 0..3 {
        server.ingest(&ids, "LOW");
    }
    let answer = server.get("/dashboard.json");
    let ingestions = answer.json["ingestions"].as_array().unwrap();
    assert_eq!(ingestions.len(), 3);
    for ingestion in ingestions {
        assert_eq!(ingestion["batch_count"], 10_000);
        let batches = ingestion["batches"].as_array().unwrap();
        assert_eq!(batches.len(), 12);
        assert_eq!(batches[11]["ids"], json!([34, 35, 36]));
    }
    let bytes = answer.json.to_string().len();
    assert!(bytes < 32 * 1024, "{bytes} bytes");
    let one = ingestions[0]["ingestion_id"].as_str().unwrap();
    assert_eq!(server.status(one)["batches"].as_array().unwrap().len(), 10_000, "/status has them all");
}

/// A web page of another site cannot queue ids through a browser (cross-site request forgery:
/// a form or a `fetch` with a text body needs no permission); the service's own pages, and
/// programs that are not browsers, can.
#[test]
fn a_browser_cannot_post_ids_from_a_page_of_another_site() {
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "1ms"]);
    let body = r#"{"ids": [1], "priority": "LOW"}"#;
    for site in ["cross-site", "same-site"] {
        let answer = server.post_with("/ingest", body, &[("Sec-Fetch-Site", site)]);
        assert_eq!((answer.status, answer.json["error"].as_str()), (403, Some("cross_site")), "{site}: {answer:?}");
    }
    assert_eq!(server.get("/dashboard.json").json["totals"]["ingestions"], 0);
    for site in ["same-origin", "none"] {
        assert_eq!(server.post_with("/ingest", body, &[("Sec-Fetch-Site", site)]).status, 200, "{site}");
    }
    let read = ureq::get(&format!("{}/queue", server.base)).set("Sec-Fetch-Site", "cross-site").call();
    assert_eq!(read.map(|r| r.status()).ok(), Some(200), "reads change nothing");
}

/// README (Pacing): FIFO within a priority is exact, even for simultaneous requests. With the
/// pacer busy for an hour, 8 clients post 20 LOW ingestions each, all at once: every batch has
/// its own position, and each client's come in the order it posted them (its answer came
/// before its next request, so that is the order of acceptance).
#[test]
fn fifo_within_a_priority_is_exact_even_for_simultaneous_requests() {
    const CLIENTS: usize = 8;
    const EACH: u32 = 20;
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "1h"]);
    server.ingest_released(&[1], "HIGH");
    let start = Barrier::new(CLIENTS);
    let posted: Vec<Vec<String>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS as u32)
            .map(|c| {
                let (server, start) = (&server, &start);
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                    start.wait();
                    (0..EACH)
                        .map(|i| server.ingest_on(&agent, json!({"ids": [100 + c * EACH + i], "priority": "LOW"})))
                        .collect()
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let positions: Vec<Vec<u64>> = posted
        .iter()
        .map(|ids| ids.iter().map(|id| server.status(id)["batches"][0]["position"].as_u64().unwrap()).collect())
        .collect();
    let mut all: Vec<u64> = positions.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(all, (0..CLIENTS as u64 * u64::from(EACH)).collect::<Vec<_>>(), "positions are 0..160, each once");
    for (client, positions) in positions.iter().enumerate() {
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "client {client} out of posting order: {positions:?}");
    }
}

/// `--retain` holds in memory mode too: a completed ingestion is forgotten after it.
#[test]
fn retain_forgets_completed_ingestions_in_memory_mode() {
    let server = Server::start(&["--interval", "10ms", "--fetch-delay", "1ms", "--retain", "1s"]);
    let id = server.ingest(&[1], "LOW");
    server.wait_status(&id, "completed");
    let gone = wait_for("the completed ingestion to expire", PATIENCE, || {
        let answer = server.get(&format!("/status/{id}"));
        (answer.status == 404).then_some(answer)
    });
    assert_eq!(gone.json["error"], "not_found", "{gone:?}");
}
