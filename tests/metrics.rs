//! The core's counters on a manual clock (release lateness is exactly zero there), and `/metrics`
//! over HTTP: it parses as Prometheus text format and its counters move as work is done.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_for, Server};
use ingestd::metrics::PriorityTotals;
use ingestd::{App, Clock, ManualClock, Pacing, Parked, Priority, SimulatedApi};

const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn counters_and_lateness_on_a_manual_clock() {
    let clock = Arc::new(ManualClock::new());
    let interval = Duration::from_secs(5);
    let app = App::start(Pacing { interval, batch_size: 3 }, clock.clone(), SimulatedApi { delay: Duration::ZERO });
    app.ingest(Priority::Medium, vec![1, 2, 3, 4, 5], None).unwrap();
    let queue = app.queue();
    let parked = queue.wait_parked(PATIENCE, |p| matches!(p, Parked::Until(_)));
    assert_eq!(parked, Some(Parked::Until(clock.origin() + interval)));
    assert_eq!(queue.next_release(), Some(clock.origin() + interval));
    let medium = |app: &App| app.queue().metrics().totals()[1].1;
    let expected = PriorityTotals {
        ingestions: 1,
        ids: 5,
        batches_submitted: 2,
        batches_released: 1,
        batches_completed: 1,
        ..Default::default()
    };
    assert_eq!((medium(&app), medium(&app).queued()), (expected, 1));

    queue.advance(&clock, interval);
    assert_eq!(queue.wait_parked(PATIENCE, |p| p == Parked::Idle), Some(Parked::Idle));
    assert_eq!(queue.next_release(), None);
    assert_eq!((medium(&app).batches_completed, medium(&app).queued()), (2, 0));
    // On a manual clock the pacer releases at the very instant it is due.
    let lateness = queue.metrics().lateness();
    assert_eq!((lateness.count, lateness.sum, lateness.cumulative[0].1), (2, Duration::ZERO, 2));
    let releases = queue.metrics().recent_releases();
    let released_at: Vec<Duration> = releases.iter().map(|r| r.at - clock.origin()).collect();
    assert_eq!(released_at, [Duration::ZERO, interval]);
    assert_eq!(queue.now(), clock.now());
    app.shutdown(Duration::from_secs(10));
}

#[test]
fn metrics_parse_and_move_with_the_work() {
    let server = Server::start(&["--interval", "30ms", "--fetch-delay", "0s"]);
    let before = parse(&scrape(&server));
    assert_eq!(before["ingestd_ids_total{priority=\"HIGH\"}"], 0.0);
    assert_eq!(before["ingestd_release_lateness_seconds_count"], 0.0);

    let id = server.ingest(&[1, 2, 3, 4, 5], "HIGH");
    server.ingest(&[6], "LOW");
    wait_for("both ingestions to complete", PATIENCE, || {
        let after = parse(&scrape(&server));
        (after["ingestd_batches_completed_total{priority=\"LOW\"}"] == 1.0).then_some(())
    });
    assert_eq!(server.status(&id)["status"], "completed");
    let after = parse(&scrape(&server));
    for (series, value) in [
        ("ingestd_ingestions_total{priority=\"HIGH\"}", 1.0),
        ("ingestd_ids_total{priority=\"HIGH\"}", 5.0),
        ("ingestd_ids_total{priority=\"LOW\"}", 1.0),
        ("ingestd_batches_released_total{priority=\"HIGH\"}", 2.0),
        ("ingestd_batches_completed_total{priority=\"HIGH\"}", 2.0),
        ("ingestd_queue_depth_batches{priority=\"HIGH\"}", 0.0),
        ("ingestd_batch_in_flight", 0.0),
        ("ingestd_release_lateness_seconds_count", 3.0),
        ("ingestd_http_requests_total{route=\"/ingest\",status=\"200\"}", 2.0),
        ("ingestd_http_requests_total{route=\"/status/{ingestion_id}\",status=\"200\"}", 1.0),
        ("ingestd_http_request_duration_seconds_count{route=\"/ingest\"}", 2.0),
    ] {
        assert_eq!(after.get(series), Some(&value), "{series}");
    }
    assert!(after["ingestd_http_requests_total{route=\"/metrics\",status=\"200\"}"] >= 2.0);
    server.get("/nowhere");
    let last = parse(&scrape(&server));
    assert_eq!(last["ingestd_http_requests_total{route=\"unmatched\",status=\"404\"}"], 1.0);
}

/// Every route `/openapi.json` documents is counted under its own path template, none as
/// `unmatched`.
#[test]
fn every_documented_route_is_counted_under_its_own_label() {
    let server = Server::start(&["--interval", "1h", "--fetch-delay", "0s"]);
    let id = server.ingest(&[1], "LOW");
    let doc: serde_json::Value = serde_json::from_str(&get(&server, "/openapi.json")).unwrap();
    let templates: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(templates.len() >= 9, "{templates:?}");
    for &template in &templates {
        let path = template.replace("{ingestion_id}", &id);
        for method in doc["paths"][template].as_object().unwrap().keys() {
            match method.as_str() {
                "get" => drop(get(&server, &path)),
                "post" => assert_eq!(server.post(&path, r#"{"ids": [2], "priority": "LOW"}"#).status, 200),
                other => panic!("{template} documents {other}, which this test does not send"),
            }
        }
    }
    let counted = parse(&scrape(&server));
    for template in templates {
        let series = format!("ingestd_http_requests_total{{route=\"{template}\",status=\"200\"}}");
        assert!(counted.get(&series).is_some_and(|&n| n >= 1.0), "{series} is missing");
    }
    let unmatched: Vec<&String> = counted.keys().filter(|k| k.contains("route=\"unmatched\"")).collect();
    assert!(unmatched.is_empty(), "{unmatched:?}");
}

/// `/metrics` counts what clients asked, answered by a route or by the relay (a head it
/// refused), and not the server's own health probe, which asks every 2 s.
#[test]
fn requests_count_whoever_answers_them_but_the_probe_does_not_count() {
    let server = Server::start(&["--interval", "1h"]);
    let addr = server.base.trim_start_matches("http://");
    let heads = [
        "GET /health HTTP/1.2\r\n\r\n",
        "GET /health HTTP/1.1\r\nExpect: bogus\r\n\r\n",
        "POST /ingest HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    ];
    for head in heads {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut conn, head.as_bytes()).unwrap();
        let _ = std::io::Read::read_to_end(&mut conn, &mut Vec::new());
    }
    // A probe answered (`supervise.rs`: every 2 s), and no client asked for /health.
    let counted = common::wait_for("a health probe answered", Duration::from_secs(10), || {
        let counted = parse(&scrape(&server));
        (counted.get("ingestd_http_health_probes_total").copied().unwrap_or(0.0) >= 1.0).then_some(counted)
    });
    let count = |route: &str, status: u16| {
        counted.get(&format!("ingestd_http_requests_total{{route=\"{route}\",status=\"{status}\"}}")).copied()
    };
    // A refused request line has no route; a whole one has, whoever answers it (they were all
    // `unmatched`, so a route's error rate missed the refusals of its bodies).
    assert_eq!(
        (count("unmatched", 505), count("/health", 417), count("/ingest", 413)),
        (Some(1.0), Some(1.0), Some(1.0))
    );
    assert_eq!((count("unmatched", 417), count("unmatched", 413)), (None, None));
    assert_eq!(count("/health", 200), None, "the probe was counted");
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert_eq!(parse(good)["a_total{x=\"1\"}"], 2.0);
    for bad in [
        "a_total 1\n",                                                                             // no TYPE
        "# TYPE a counter\na{x=1} 1\n",                                                            // unquoted label
        "# TYPE a counter\na 1\na 2\n",                                                            // duplicate series
        "# TYPE a gauge\na one\n",                                                                 // not a number
        "# TYPE a gauge\n# TYPE a gauge\na 1\n", // family declared twice
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n", // +Inf != count
    ] {
        assert!(std::panic::catch_unwind(|| parse(bad)).is_err(), "accepted {bad:?}");
    }
}

/// The body of a `GET` that must answer 200.
fn get(server: &Server, path: &str) -> String {
    ureq::get(&format!("{}{path}", server.base)).call().expect(path).into_string().unwrap()
}

fn scrape(server: &Server) -> String {
    let response = ureq::get(&format!("{}/metrics", server.base)).call().expect("scrape");
    assert_eq!(response.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    response.into_string().unwrap()
}

/// Parses Prometheus text format 0.0.4 strictly, panicking on anything a scraper would refuse
/// or that breaks the histogram rules; returns each series (`name{labels}`) and its value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut series = BTreeMap::new();
    let mut closed = BTreeSet::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "{name} declared twice");
            closed.insert(std::mem::replace(&mut current, name.to_owned()));
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let name = key.split('{').next().unwrap();
        assert!(valid_name(name), "bad metric name: {line}");
        let family = family_of(name, &types).unwrap_or_else(|| panic!("no # TYPE for {line}"));
        assert!(family == current && !closed.contains(&family), "{name} is outside its family's block");
        if let Some(labels) = key.strip_prefix(name) {
            check_labels(labels, line);
        }
        assert!(series.insert(key.to_owned(), value).is_none(), "duplicate series {key}");
    }
    for (name, kind) in &types {
        if kind == "histogram" {
            check_histogram(name, &series);
        }
    }
    series
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| types.get(*base).is_some_and(|k| k == "histogram"))
        .map(str::to_owned)
}

fn check_labels(labels: &str, line: &str) {
    if labels.is_empty() {
        return;
    }
    let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).unwrap_or_else(|| panic!("{line}"));
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line}"));
        assert!(valid_name(name) && !name.contains(':'), "bad label name in {line}");
        let end = after.find('"').unwrap_or_else(|| panic!("unterminated label in {line}"));
        assert!(!after[..end].contains('\\'), "this exposition never escapes: {line}");
        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
        assert!(rest.is_empty() || !after[end + 1..].is_empty(), "{line}");
    }
}

/// Buckets cumulative per label set, the last one `+Inf`, and equal to `_count`.
fn check_histogram(name: &str, series: &BTreeMap<String, f64>) {
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (key, &value) in series.range(format!("{name}_bucket")..).take_while(|(k, _)| k.starts_with(name)) {
        let Some(labels) = key.strip_prefix(&format!("{name}_bucket")) else { continue };
        let (others, le) = labels.split_once("le=\"").expect("a bucket has le");
        let le = le.trim_end_matches("\"}");
        let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("le is a number") };
        groups.entry(others.trim_end_matches(',').trim_start_matches('{').to_owned()).or_default().push((bound, value));
    }
    for (labels, mut buckets) in groups {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{name}{{{labels}}} is not cumulative");
        let last = buckets.last().unwrap();
        let braces = |l: &str| if l.is_empty() { String::new() } else { format!("{{{l}}}") };
        let count = series[&format!("{name}_count{}", braces(&labels))];
        assert!(last.0.is_infinite() && last.1 == count, "{name}{{{labels}}}: +Inf bucket is not the count");
        assert!(series.contains_key(&format!("{name}_sum{}", braces(&labels))), "{name}{{{labels}}} has no _sum");
    }
}
