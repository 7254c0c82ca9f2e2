//! HTTP request counters and latency by route and status, and the JSON access log.
//!
//! Called once per answered request by the handler threads, after the reply is decided, and by
//! the `http-relay` threads for the heads they answer themselves (the health probe is not
//! counted). Counters are atomics; the access record goes to `log-writer` (a slow log reader
//! never holds up a request; past the writer's bounded queue, records are dropped and counted).
//! The tables are `static` because a process runs one HTTP server; a handle would have to be
//! threaded through tiny_http's serve loop for no gain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::api::LABELS as ROUTES;
use crate::log;
use crate::metrics::{Histogram, HistogramSnapshot};

/// Request latency bounds: handlers answer in microseconds; the top end catches a stall.
pub(super) const LATENCY_BUCKETS: [Duration; 10] = [
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// Status codes 100..=599, one counter each: 500 slots per route is 36 KiB in all, and no code
/// the server may answer (now or later) needs a table entry.
const STATUSES: usize = 500;
const FIRST_STATUS: u16 = 100;

static REQUESTS: [[AtomicU64; STATUSES]; ROUTES.len()] =
    [const { [const { AtomicU64::new(0) }; STATUSES] }; ROUTES.len()];
static LATENCY: [Histogram<{ LATENCY_BUCKETS.len() }>; ROUTES.len()] =
    [const { Histogram::new(LATENCY_BUCKETS) }; ROUTES.len()];

/// `route`'s row in the tables; an unknown label counts as the last one, `unmatched`.
fn route_index(route: &str) -> usize {
    ROUTES.iter().position(|&r| r == route).unwrap_or(ROUTES.len() - 1)
}

/// Counts one answered request, and writes its access record when logging JSON.
pub(super) fn record(method: &str, url: &str, route: &'static str, status: u16, elapsed: Duration) {
    let index = route_index(route);
    if let Some(counter) = status.checked_sub(FIRST_STATUS).and_then(|s| REQUESTS[index].get(usize::from(s))) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    LATENCY[index].observe(elapsed);
    if log::format() == log::Format::Json {
        access_log(method, url, route, status, elapsed);
    }
}

/// A URL as the access record keeps it: its first [`URL_CHARS`] characters, so that clients
/// sending the longest URLs allowed cannot make each record kilobytes long.
fn shortened(url: &str) -> std::borrow::Cow<'_, str> {
    match url.char_indices().nth(URL_CHARS) {
        None => url.into(),
        Some((at, _)) => format!("{}…", &url[..at]).into(),
    }
}

const URL_CHARS: usize = 512;

fn access_log(method: &str, url: &str, route: &str, status: u16, elapsed: Duration) {
    let record = serde_json::json!({
        "ts": log::timestamp(),
        "level": "info",
        "msg": "access",
        "method": method,
        "path": shortened(url),
        "route": route,
        "status": status,
        "duration_ms": elapsed.as_secs_f64() * 1000.0,
    });
    log::access(record.to_string());
}

/// `(route, status, count)` for every pair seen at least once.
pub(super) fn requests() -> Vec<(&'static str, u16, u64)> {
    let mut seen = Vec::new();
    for (route, counters) in ROUTES.iter().zip(&REQUESTS) {
        for (offset, counter) in (0u16..).zip(counters) {
            let count = counter.load(Ordering::Relaxed);
            if count > 0 {
                seen.push((*route, FIRST_STATUS + offset, count));
            }
        }
    }
    seen
}

/// Latency per route, for every route.
pub(super) fn latency() -> Vec<(&'static str, HistogramSnapshot)> {
    ROUTES.iter().zip(&LATENCY).map(|(route, histogram)| (*route, histogram.snapshot())).collect()
}
