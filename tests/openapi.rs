//! `/openapi.json` against the real binary: every request below must get a status the document
//! lists for its route and method, with the documented content type, required headers and a body
//! that fits the documented schema; and every documented status, and every error code the `Error`
//! schema names, must be produced by some request here.

mod common;
#[path = "common/upstream.rs"]
mod scripted;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{wait_for, Server, TempDir};
use serde_json::{json, Value};

/// Statuses documented but not reachable from outside: a 500 needs a bug.
const UNREACHABLE: &[&str] = &["500"];
/// Error codes in the `Error` schema that no request here produces: `internal_error` needs a
/// bug, and `overloaded` more connections than the open-files limit allows
/// (`tests/hostile.rs` makes them).
const UNREACHABLE_CODES: &[&str] = &["internal_error", "overloaded"];

/// The servers the cases go to, each started with the flags that make its statuses reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// A fast pacer and small URL, header and body limits: 200s, 4xx of the API, 414, 431, framing.
    Main,
    /// `--max-ids 2 --max-queued-ids 3` and a pacer that never drains: 413 too_many_ids, 503 queue_full.
    Limits,
    /// `--token secret`: 401 on the API routes, 200 on the open ones.
    Token,
    /// `--idle-timeout 200ms`: 408 for a stalled body.
    Slow,
    /// A journal that may not grow past 16 KiB (`ulimit -f`): 503 storage_unavailable on
    /// `POST /ingest` and `GET /health`.
    FullDisk,
    /// SIGTERMed while a batch is in flight: 503 shutting_down on every route.
    Stopping,
    /// `--upstream` answering 404, then stalling: a `failed` ingestion, a `triggered` one and a
    /// `yet_to_start` one behind it (see [`failing`]).
    Failing,
}

/// How a request is sent.
#[derive(Debug)]
enum How {
    /// Through ureq, with extra headers and maybe a body.
    Http { headers: Vec<(&'static str, String)>, body: Option<String> },
    /// These bytes over a new connection, then `answers` answers read (and each checked).
    Raw { bytes: String, answers: usize },
}

/// A request to make: the server, method and path (for the document), and how to send it.
#[derive(Debug)]
struct Case {
    on: On,
    method: &'static str,
    path: String,
    how: How,
}

/// One answer: status, the headers the checks look at, and the body as text.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    allow: Option<String>,
    headers: Vec<(String, String)>,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct Servers {
    main: Server,
    limits: Server,
    token: Server,
    slow: Server,
    full_disk: Server,
    stopping: Server,
    failing: Server,
    /// The ingestions on `failing`: failed, triggered, yet to start.
    failing_ids: [String; 3],
    _upstream: scripted::Upstream,
    _journal: TempDir,
}

impl Servers {
    fn get(&self, on: On) -> &Server {
        match on {
            On::Main => &self.main,
            On::Limits => &self.limits,
            On::Token => &self.token,
            On::Slow => &self.slow,
            On::FullDisk => &self.full_disk,
            On::Stopping => &self.stopping,
            On::Failing => &self.failing,
        }
    }
}

#[test]
fn every_answer_matches_the_document_and_every_documented_status_is_seen() {
    let main = Server::start(&[
        "--interval",
        "20ms",
        "--fetch-delay",
        "0s",
        "--max-body",
        "2048",
        "--max-url",
        "64",
        "--max-headers",
        "256",
    ]);
    let doc = fetch_document(&main);
    let id = main.ingest(&[1, 2, 3, 4], "HIGH");
    // Let a release happen, so the dashboard has a batch to describe.
    wait_for("a release", Duration::from_secs(5), || (main.status(&id)["status"] != "yet_to_start").then_some(()));
    let journal = TempDir::new("openapi-full");
    let (failing, failing_ids, upstream) = failing();
    let servers = Servers {
        main,
        limits: Server::start(&["--interval", "1h", "--fetch-delay", "1h", "--max-ids", "2", "--max-queued-ids", "3"]),
        token: Server::start(&["--token", "secret", "--interval", "1h"]),
        slow: Server::start(&["--idle-timeout", "200ms"]),
        full_disk: full_disk(&journal),
        stopping: stopping(),
        failing,
        failing_ids,
        _upstream: upstream,
        _journal: journal,
    };
    let (mut seen, mut codes, mut statuses) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut all = cases(&id);
    all.extend(servers.failing_ids.iter().map(|id| Case {
        on: On::Failing,
        method: "GET",
        path: format!("/status/{id}"),
        how: How::Http { headers: vec![], body: None },
    }));
    for (method, path) in routes(&servers.failing_ids[0]) {
        let body = (method == "POST").then(|| INGEST.to_owned());
        all.push(Case { on: On::Failing, method, path, how: How::Http { headers: vec![], body } });
    }
    for case in all {
        for answer in send(servers.get(case.on), &case) {
            let context =
                format!("{:?} {} {} -> {} {:.200}", case.on, case.method, case.path, answer.status, answer.text);
            let response = documented_response(&doc, case.method, &case.path, &answer, &context);
            check_headers(&response.1, &answer, &context);
            check_body(&doc, &response.1, &answer.content_type, &answer.text, &context);
            seen.insert(response.0);
            statuses.extend(ingestion_statuses(&answer.text));
            if let Some(code) =
                serde_json::from_str::<Value>(&answer.text).ok().and_then(|b| b["error"].as_str().map(str::to_owned))
            {
                codes.insert(code);
            }
        }
    }
    for documented in documented_statuses(&doc) {
        let exempt = UNREACHABLE.iter().any(|s| documented.ends_with(&format!(" {s}")));
        assert!(exempt || seen.contains(&documented), "no request here produced the documented {documented}");
    }
    for code in doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"].as_array().unwrap() {
        let code = code.as_str().unwrap();
        assert!(UNREACHABLE_CODES.contains(&code) || codes.contains(code), "no request here produced the error {code}");
    }
    for schema in ["Status", "Batch"] {
        for status in doc["components"]["schemas"][schema]["properties"]["status"]["enum"].as_array().unwrap() {
            let status = (schema, status.as_str().unwrap().to_owned());
            assert!(statuses.contains(&status), "no answer here showed the documented {status:?}");
        }
    }
}

/// The statuses an answer shows: `("Status", s)` for an ingestion's, `("Batch", s)` for each
/// of its batches' (a `GET /status` body, or each recent ingestion of `/dashboard.json`).
fn ingestion_statuses(text: &str) -> Vec<(&'static str, String)> {
    let Ok(body) = serde_json::from_str::<Value>(text) else { return Vec::new() };
    let ingestions = match body.get("ingestions").and_then(Value::as_array) {
        Some(list) => list.clone(),
        None => vec![body],
    };
    let mut out = Vec::new();
    for ingestion in ingestions.iter().filter(|i| i.get("batches").is_some()) {
        out.extend(ingestion["status"].as_str().map(|s| ("Status", s.to_owned())));
        for batch in ingestion["batches"].as_array().into_iter().flatten() {
            out.extend(batch["status"].as_str().map(|s| ("Batch", s.to_owned())));
        }
    }
    out
}

/// A server whose upstream answers its first call 404 and stalls on the second: ingestion 1 is
/// `failed` (a permanent error), ingestion 2 `triggered` (its call hangs), ingestion 3
/// `yet_to_start` (behind it).
fn failing() -> (Server, [String; 3], scripted::Upstream) {
    use scripted::{Reply, Upstream};
    let upstream = Upstream::start(vec![Reply::Body(404, "no such item"), Reply::Stall(Duration::from_secs(30))]);
    let url = upstream.url("/items/{id}");
    let server =
        Server::start(&["--interval", "50ms", "--upstream", &url, "--upstream-timeout", "30s", "--batch-size", "1"]);
    let failed = server.ingest(&[1], "HIGH");
    wait_for("a failed ingestion", Duration::from_secs(5), || {
        (server.status(&failed)["status"] == "failed").then_some(())
    });
    let triggered = server.ingest(&[2], "HIGH");
    wait_for("the stalled call", Duration::from_secs(5), || (upstream.arrivals().len() == 2).then_some(()));
    let waiting = server.ingest(&[3], "HIGH");
    (server, [failed, triggered, waiting], upstream)
}

#[test]
fn the_document_is_openapi_3_1_and_names_every_error_code() {
    let server = Server::start(&["--interval", "1h"]);
    let doc = fetch_document(&server);
    assert_eq!(doc["openapi"], "3.1.0");
    let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"];
    // Every code `src/http/error.rs` has.
    for code in [
        "invalid_json",
        "invalid_body",
        "invalid_ids",
        "invalid_priority",
        "invalid_idempotency_key",
        "duplicate_header",
        "missing_host",
        "bad_framing",
        "connection_rejected",
        "unauthorized",
        "cross_site",
        "not_found",
        "method_not_allowed",
        "request_timeout",
        "body_too_large",
        "too_many_ids",
        "url_too_long",
        "headers_too_large",
        "queue_full",
        "shutting_down",
        "overloaded",
        "storage_unavailable",
        "internal_error",
        "http_version_not_supported",
        "malformed_request",
        "expectation_failed",
    ] {
        assert!(codes.as_array().unwrap().contains(&json!(code)), "{code} is not in the Error schema");
    }
    // Each response's own list of codes is a part of that list.
    for (name, response) in doc["components"]["responses"].as_object().unwrap() {
        let own = &response["content"]["application/json"]["schema"]["properties"]["error"]["enum"];
        for code in own.as_array().unwrap() {
            assert!(codes.as_array().unwrap().contains(code), "{name} names {code}, which the Error schema lacks");
        }
    }
}

/// A journal that may not grow past 16 KiB.
fn full_disk(dir: &TempDir) -> Server {
    Server::start_with_file_limit(16, &["--interval", "1h", "--batch-size", "1", "--data-dir", dir.path()])
}

/// A server stopping on SIGTERM: it waits (up to `--shutdown-timeout`, 30 s) for its batch in
/// flight, which takes a minute, and meanwhile answers every request with 503.
fn stopping() -> Server {
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "60s"]);
    let id = server.ingest(&[1], "HIGH");
    wait_for("the batch to be triggered", Duration::from_secs(5), || {
        (server.status(&id)["status"] == "triggered").then_some(())
    });
    assert!(Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap().success());
    wait_for("requests to be refused", Duration::from_secs(5), || (server.get("/health").status == 503).then_some(()));
    server
}

/// Every route with a path that reaches it.
fn routes(id: &str) -> Vec<(&'static str, String)> {
    let mut routes =
        vec![("POST", "/ingest".to_owned()), ("GET", format!("/status/{id}")), ("GET", "/queue".to_owned())];
    for page in ["/health", "/", "/dashboard.json", "/docs", "/openapi.json", "/metrics"] {
        routes.push(("GET", page.to_owned()));
    }
    routes
}

const INGEST: &str = r#"{"ids": [1, 2, 3], "priority": "LOW"}"#;

fn cases(id: &str) -> Vec<Case> {
    let http = |on, method, path: &str, headers: Vec<(&'static str, String)>, body: Option<&str>| Case {
        on,
        method,
        path: path.to_owned(),
        how: How::Http { headers, body: body.map(str::to_owned) },
    };
    let raw = |on, method, path: &str, bytes: String, answers| Case {
        on,
        method,
        path: path.to_owned(),
        how: How::Raw { bytes, answers },
    };
    let raw_post = |headers: &str, body: &str| {
        raw(On::Main, "POST", "/ingest", format!("POST /ingest HTTP/1.1\r\nHost: t\r\n{headers}\r\n{body}"), 1)
    };
    let get = |path: &str| http(On::Main, "GET", path, vec![], None);
    let post = |on, body: &str| http(on, "POST", "/ingest", vec![], Some(body));
    let keyed = |key: &str| http(On::Main, "POST", "/ingest", vec![("Idempotency-Key", key.to_owned())], Some(INGEST));
    let mut cases = vec![
        post(On::Main, INGEST),
        post(On::Main, ""),
        post(On::Main, "[1]"),
        post(On::Main, r#"{"ids": [0], "priority": "LOW"}"#),
        post(On::Main, r#"{"ids": [1], "priority": "URGENT"}"#),
        post(On::Main, &format!(r#"{{"ids": [{}], "priority": "LOW"}}"#, vec!["1"; 2000].join(","))),
        keyed("order-42"),
        keyed("order-42"),
        keyed(""),
        http(On::Main, "POST", "/ingest", vec![("Sec-Fetch-Site", "cross-site".to_owned())], Some(INGEST)),
        get(&format!("/status/{id}")),
        get(&format!("/status/{id}/")),
        get(&format!("/status/{}", id.to_ascii_uppercase())),
        get(&format!("/status/urn:uuid:{id}")),
        get(&format!("/status/{}", id.replace('-', ""))),
        get("/status/00000000-0000-4000-8000-000000000000"),
        get("/status/not-a-uuid"),
        get("/queue"),
        get("/queue/"),
        get("/health"),
        get("/"),
        get("/dashboard.json"),
        get("/docs"),
        get("/openapi.json"),
        get("/metrics"),
        http(On::Main, "DELETE", "/health", vec![], None),
        http(On::Main, "GET", "/ingest", vec![], None),
        http(On::Main, "POST", "/metrics", vec![], Some("{}")),
        http(On::Main, "HEAD", "/health", vec![], None),
        // The queue holds at most 3 ids, so at most 2 in one request; nothing drains.
        post(On::Limits, r#"{"ids": [1, 2, 3], "priority": "LOW"}"#),
        post(On::Limits, r#"{"ids": [1, 2], "priority": "LOW"}"#),
        post(On::Limits, r#"{"ids": [3, 4], "priority": "LOW"}"#),
        // A body that stops arriving.
        raw(
            On::Slow,
            "POST",
            "/ingest",
            "POST /ingest HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n{\"ids\": [".to_owned(),
            1,
        ),
        // Two keys: which one counts would be a guess.
        raw_post(&format!("Idempotency-Key: a\r\nIdempotency-Key: b\r\nContent-Length: {}\r\n", INGEST.len()), INGEST),
        // HTTP/1.1 without Host.
        raw(
            On::Main,
            "POST",
            "/ingest",
            format!("POST /ingest HTTP/1.1\r\nContent-Length: {}\r\n\r\n{INGEST}", INGEST.len()),
            1,
        ),
        // Trailer fields after a chunked body.
        raw_post(
            "Transfer-Encoding: chunked\r\n",
            &format!("{:x}\r\n{INGEST}\r\n0\r\nX-Checksum: 1\r\n\r\n", INGEST.len()),
        ),
        // One record of 500 batch ids is larger than the whole journal may be.
        post(On::FullDisk, &json!({"ids": (1..=500).collect::<Vec<u32>>(), "priority": "LOW"}).to_string()),
        // Until a write succeeds: 503 storage_unavailable, and the queue says why.
        http(On::FullDisk, "GET", "/health", vec![], None),
        http(On::FullDisk, "GET", "/queue", vec![], None),
    ];
    for (method, path) in routes(id) {
        let body = (method == "POST").then_some(INGEST);
        let length = body.map_or(0, str::len);
        // The checks every route passes before it runs.
        cases.push(http(On::Main, method, &format!("{path}?pad={}", "x".repeat(64)), vec![], body));
        cases.push(http(On::Main, method, &path, vec![("X-Pad", "x".repeat(300))], body));
        let head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
        // A version tiny_http cannot answer: the relay's own 505.
        cases.push(raw(On::Main, method, &path, format!("{method} {path} HTTP/2.0\r\nHost: t\r\n\r\n"), 1));
        cases.push(raw(
            On::Main,
            method,
            &path,
            format!("{head}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
            1,
        ));
        // A repeated Content-Length is refused, and so is what follows it on that connection.
        cases.push(raw(
            On::Main,
            method,
            &path,
            format!(
                "{head}Content-Length: 0\r\nContent-Length: 0\r\n\r\n{head}Content-Length: {length}\r\n\r\n{}",
                body.unwrap_or_default()
            ),
            2,
        ));
        // A head line the server cannot parse: 400, before any check or route.
        cases.push(raw(On::Main, method, &path, format!("{head}no colon here\r\n\r\n"), 1));
        // An expectation other than 100-continue: 417, before any check or route.
        cases.push(raw(
            On::Main,
            method,
            &path,
            format!("{head}Expect: nothing-else\r\nContent-Length: {length}\r\n\r\n{}", body.unwrap_or_default()),
            1,
        ));
        // Without a token: 401 on the API routes, 200 on the open ones.
        cases.push(http(On::Token, method, &path, vec![], body));
        cases.push(http(On::Stopping, method, &path, vec![], body));
    }
    cases
}

fn fetch_document(server: &Server) -> Value {
    let answer = call(server, "GET", "/openapi.json", &[], None);
    assert_eq!((answer.status, answer.content_type.as_str()), (200, "application/json"));
    serde_json::from_str(&answer.text).expect("the document is JSON")
}

fn send(server: &Server, case: &Case) -> Vec<Answer> {
    match &case.how {
        How::Http { headers, body } => vec![call(server, case.method, &case.path, headers, body.as_deref())],
        How::Raw { bytes, answers } => raw(server, bytes, *answers),
    }
}

/// The answer to a request through ureq, whatever its status.
fn call(server: &Server, method: &str, path: &str, headers: &[(&str, String)], body: Option<&str>) -> Answer {
    let mut request = ureq::request(method, &format!("{}{path}", server.base));
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {path} failed: {error}"),
    };
    let headers = response.headers_names().into_iter().map(|name| {
        let value = response.header(&name).unwrap_or_default().to_owned();
        (name, value)
    });
    let headers = headers.collect();
    let content_type = response.header("Content-Type").unwrap_or_default().to_owned();
    let allow = response.header("Allow").map(str::to_owned);
    Answer { status: response.status(), content_type, allow, headers, text: response.into_string().unwrap() }
}

/// Sends `bytes` on a new connection and reads `count` answers (each with a `Content-Length`).
fn raw(server: &Server, bytes: &str, count: usize) -> Vec<Answer> {
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(bytes.as_bytes()).expect("send");
    let mut reader = BufReader::new(stream);
    (0..count)
        .map(|n| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap_or_else(|e| panic!("answer {n} to {bytes:?}: {e}"));
            let status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
            let status = status.unwrap_or_else(|| panic!("answer {n} to {bytes:?} starts {line:?}"));
            let mut headers = Vec::new();
            loop {
                line.clear();
                reader.read_line(&mut line).expect("a header line");
                let Some((name, value)) = line.split_once(':') else { break };
                headers.push((name.to_owned(), value.trim().to_owned()));
            }
            let find = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
            let length = find("Content-Length").map_or(0, |v| v.parse().expect("a Content-Length"));
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("the body");
            let (content_type, allow) = (find("Content-Type").unwrap_or_default(), find("Allow"));
            Answer { status, content_type, allow, headers, text: String::from_utf8(body).expect("UTF-8") }
        })
        .collect()
}

/// The OpenAPI path template that `path` falls under, e.g. `/status/{ingestion_id}`.
fn template<'a>(doc: &'a Value, path: &str) -> &'a str {
    let path = path.split('?').next().unwrap_or_default();
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let matches = |template: &str| {
        let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
    };
    let paths = doc["paths"].as_object().unwrap();
    paths.keys().find(|t| matches(t)).unwrap_or_else(|| panic!("{path} is not documented"))
}

/// `("<template> <method> <status>", response object)` for an answer; a method the route does
/// not document must be a 405 naming the documented methods in `Allow`.
fn documented_response(doc: &Value, method: &str, path: &str, answer: &Answer, context: &str) -> (String, Value) {
    let (status, allow) = (answer.status, answer.allow.as_deref());
    let template = template(doc, path);
    let lookup = if method == "HEAD" { "get" } else { &method.to_ascii_lowercase() };
    let Some(operation) = doc["paths"][template].get(lookup) else {
        assert_eq!(status, 405, "{context}: an undocumented method must be refused");
        let allow = allow.unwrap_or_else(|| panic!("{context}: a 405 without Allow"));
        let documented: Vec<String> = doc["paths"][template].as_object().unwrap().keys().cloned().collect();
        for method in documented {
            assert!(allow.contains(&method.to_ascii_uppercase()), "{context}: Allow {allow:?} lacks {method}");
        }
        let response = resolve(doc, &doc["components"]["responses"]["MethodNotAllowed"]).clone();
        return (format!("{template} * 405"), response);
    };
    let response = operation["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{context}: status {status} is not documented for {lookup} {template}"));
    (format!("{template} {lookup} {status}"), resolve(doc, response).clone())
}

fn documented_statuses(doc: &Value) -> Vec<String> {
    let mut all = vec![];
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for status in operation["responses"].as_object().unwrap().keys() {
                all.push(format!("{template} {method} {status}"));
            }
        }
    }
    all
}

/// Every header the document marks required is there; `queue_full` says when to retry.
fn check_headers(response: &Value, answer: &Answer, context: &str) {
    for (name, header) in response.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let value = answer.header(name);
        assert!(header["required"] != true || value.is_some(), "{context}: no {name} header");
        if let (Some(value), Some(expected)) = (value, header["schema"].get("const")) {
            assert_eq!(value, expected.as_str().unwrap(), "{context}: {name}");
        }
    }
    if answer.text.contains(r#""error":"queue_full""#) {
        let seconds = answer.header("Retry-After").unwrap_or_else(|| panic!("{context}: no Retry-After"));
        assert!(seconds.parse::<u64>().is_ok_and(|s| s >= 1), "{context}: Retry-After {seconds:?}");
    }
}

fn check_body(doc: &Value, response: &Value, content_type: &str, text: &str, context: &str) {
    let Some(content) = response.get("content") else { return };
    let media = content
        .get(content_type)
        .unwrap_or_else(|| panic!("{context}: Content-Type {content_type:?} is not documented"));
    if content_type != "application/json" || text.is_empty() {
        // A HEAD answer has no body; an HTML or text body has no schema beyond a string.
        return;
    }
    let body: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{context}: not JSON: {e}"));
    if let Err(why) = conforms(doc, &media["schema"], &body) {
        panic!("{context}: the body does not fit the schema: {why}");
    }
}

fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("only local references");
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("dangling {reference}")))
        }
        None => node,
    }
}

/// The JSON Schema keywords the document uses, checked strictly enough to catch drift.
fn conforms(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    let schema = resolve(doc, schema);
    let fail = |why: String| Err(format!("{value:.80} {why}"));
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let fits = options.iter().filter(|option| conforms(doc, option, value).is_ok()).count();
        return if fits == 1 { Ok(()) } else { fail(format!("fits {fits} of oneOf")) };
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
            other => vec![other.as_str().unwrap()],
        };
        if !types.iter().any(|t| is_type(t, value)) {
            return fail(format!("is not of type {types:?}"));
        }
    }
    if schema.get("const").is_some_and(|c| c != value) {
        return fail(format!("is not {}", schema["const"]));
    }
    if schema.get("enum").and_then(Value::as_array).is_some_and(|e| !e.contains(value)) {
        return fail(format!("is not one of {}", schema["enum"]));
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
        if n < min {
            return fail(format!("is below {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), value.as_f64()) {
        if n > max {
            return fail(format!("is above {max}"));
        }
    }
    if let (Some(min), Some(text)) = (schema.get("minLength").and_then(Value::as_u64), value.as_str()) {
        if (text.chars().count() as u64) < min {
            return fail("is too short".into());
        }
    }
    if let Value::Array(items) = value {
        if schema.get("minItems").and_then(Value::as_u64).is_some_and(|min| (items.len() as u64) < min) {
            return fail("has too few items".into());
        }
        if let Some(item_schema) = schema.get("items") {
            items.iter().try_for_each(|item| conforms(doc, item_schema, item))?;
        }
    }
    if let Value::Object(fields) = value {
        check_object(doc, schema, fields)?;
    }
    if let (Some(format), Some(text)) = (schema.get("format").and_then(Value::as_str), value.as_str()) {
        if format == "uuid" && uuid::Uuid::try_parse(text).is_err() {
            return fail("is not a UUID".into());
        }
    }
    Ok(())
}

fn check_object(doc: &Value, schema: &Value, fields: &serde_json::Map<String, Value>) -> Result<(), String> {
    let properties = schema.get("properties").and_then(Value::as_object);
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if !fields.contains_key(required.as_str().unwrap()) {
            return Err(format!("lacks the required field {required}"));
        }
    }
    for (name, field) in fields {
        match properties.and_then(|p| p.get(name)) {
            Some(field_schema) => conforms(doc, field_schema, field).map_err(|why| format!("{name}: {why}"))?,
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                return Err(format!("has the undocumented field {name:?}"));
            }
            None => {}
        }
    }
    Ok(())
}

fn is_type(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("the document uses type {other}, which this check does not know"),
    }
}

/// The head of a raw answer: its status line and its headers (names lowercased), and its body.
fn split_answer(text: &str) -> (String, Vec<(String, String)>, String) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned())).collect();
    (status, headers, body.to_owned())
}

/// README: every GET also answers HEAD, with the GET's status, `Content-Type` and
/// `Content-Length`, and no body (nothing after the head before the connection closes).
#[test]
fn every_get_route_answers_head_with_the_gets_head_and_no_body() {
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "1ms"]);
    let id = server.ingest(&[1], "LOW");
    server.wait_status(&id, "completed");
    let gets: Vec<String> = routes(&id).into_iter().filter(|(m, _)| *m == "GET").map(|(_, p)| p).collect();
    assert_eq!(gets.len(), 8, "{gets:?}");
    for path in gets {
        let ask = |method: &str| {
            let request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            split_answer(&common::exchange(&server, request.as_bytes()))
        };
        let (get, head) = (ask("GET"), ask("HEAD"));
        let find = |answer: &(String, Vec<(String, String)>, String), name: &str| {
            answer.1.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        };
        assert_eq!(head.0, get.0, "HEAD {path}");
        assert_eq!(find(&head, "content-type"), find(&get, "content-type"), "HEAD {path}");
        // The same framing: the same length, or chunked (as a large answer is) for both.
        let framing = |answer| (find(answer, "content-length"), find(answer, "transfer-encoding"));
        let (head_framing, get_framing) = (framing(&head), framing(&get));
        assert!(head_framing.0.is_some() || head_framing.1.is_some(), "HEAD {path}: no framing: {head:?}");
        if let Some(length) = &get_framing.0 {
            assert_eq!(length, &get.2.len().to_string(), "GET {path}");
        }
        // These change between two requests (counters, clocks): only the kind of framing is checked.
        if ["/metrics", "/queue", "/dashboard.json"].contains(&path.as_str()) {
            assert_eq!(
                (head_framing.0.is_some(), &head_framing.1),
                (get_framing.0.is_some(), &get_framing.1),
                "{path}"
            );
        } else {
            assert_eq!(head_framing, get_framing, "HEAD {path}");
        }
        assert_eq!(head.2, "", "HEAD {path} sent a body");
    }
}
