//! `GET /metrics`: the core's counters and the HTTP telemetry in Prometheus text format 0.0.4.
//!
//! Runs on a handler thread; reads atomics and the metrics rings, never the queue lock.

use std::fmt::Write as _;
use std::time::Duration;

use super::{budget, compat, supervise, telemetry};
use crate::app::App;
use crate::metrics::{HistogramSnapshot, PriorityTotals};

pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family being written: its `# HELP` and `# TYPE` lines come first.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out, name }
    }

    /// `labels` is already formatted (`a="b",c="d"`), or empty.
    fn sample(&mut self, suffix: &str, labels: &str, value: impl std::fmt::Display) {
        let name = self.name;
        let _ = if labels.is_empty() {
            writeln!(self.out, "{name}{suffix} {value}")
        } else {
            writeln!(self.out, "{name}{suffix}{{{labels}}} {value}")
        };
    }

    fn histogram(&mut self, labels: &str, snapshot: &HistogramSnapshot) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in &snapshot.cumulative {
            self.sample("_bucket", &format!("{labels}{sep}le=\"{}\"", seconds(*bound)), count);
        }
        self.sample("_bucket", &format!("{labels}{sep}le=\"+Inf\""), snapshot.count);
        self.sample("_sum", labels, seconds(snapshot.sum));
        self.sample("_count", labels, snapshot.count);
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// A family with one sample per priority: name, type, help, and the value from the totals.
type PerPriority = (&'static str, &'static str, &'static str, fn(&PriorityTotals) -> u64);

/// The whole exposition.
pub(super) fn render(app: &App) -> String {
    let mut out = String::new();
    let metrics = app.queue().metrics();
    let totals = metrics.totals();
    let per_priority: [PerPriority; 8] = [
        ("ingestd_ingestions_total", "counter", "Ingestions accepted.", |t| t.ingestions),
        ("ingestd_ids_total", "counter", "Ids accepted.", |t| t.ids),
        ("ingestd_batches_submitted_total", "counter", "Batches queued.", |t| t.batches_submitted),
        ("ingestd_batches_released_total", "counter", "Releases of batches by the pacer, retries included.", |t| {
            t.batches_released
        }),
        ("ingestd_batches_completed_total", "counter", "Batches with every id delivered.", |t| t.batches_completed),
        ("ingestd_batches_failed_total", "counter", "Batches finished with ids that failed for good.", |t| {
            t.batches_failed
        }),
        (
            "ingestd_batch_retries_total",
            "counter",
            "Releases that ended with ids to retry (each one more release to come).",
            |t| t.batch_retries,
        ),
        (
            "ingestd_queue_depth_batches",
            "gauge",
            "Batches waiting to be released, retries included, also those still waiting out their backoff.",
            PriorityTotals::queued,
        ),
    ];
    for (name, kind, help, value) in per_priority {
        let mut family = Family::new(&mut out, name, kind, help);
        for (priority, totals) in &totals {
            family.sample("", &format!("priority=\"{priority}\""), value(totals));
        }
    }
    let in_flight: u64 = totals.iter().map(|(_, t)| t.in_flight()).sum();
    Family::new(&mut out, "ingestd_batch_in_flight", "gauge", "Batches released and not yet completed (0 or 1).")
        .sample("", "", in_flight);
    Family::new(
        &mut out,
        "ingestd_release_lateness_seconds",
        "histogram",
        "Actual minus scheduled release time of each batch.",
    )
    .histogram("", &metrics.lateness());
    let mut calls = Family::new(
        &mut out,
        "ingestd_upstream_calls_total",
        "counter",
        "Calls to the external API, by outcome: 2xx, 3xx, 4xx, 5xx, timeout, error (no answer).",
    );
    for (outcome, count) in metrics.calls() {
        calls.sample("", &format!("outcome=\"{outcome}\""), count);
    }
    Family::new(
        &mut out,
        "ingestd_upstream_call_duration_seconds",
        "histogram",
        "Time of each call to the external API, the answer's body included.",
    )
    .histogram("", &metrics.call_latency());
    render_http(&mut out);
    out
}

fn render_http(out: &mut String) {
    let mut requests =
        Family::new(out, "ingestd_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (route, status, count) in telemetry::requests() {
        requests.sample("", &format!("route=\"{route}\",status=\"{status}\""), count);
    }
    let mut latency = Family::new(
        out,
        "ingestd_http_request_duration_seconds",
        "histogram",
        "Time from request to reply, by route (writing the reply excluded).",
    );
    // Only routes that have answered, so an idle route adds no dozen zero lines.
    for (route, snapshot) in telemetry::latency().into_iter().filter(|(_, s)| s.count > 0) {
        latency.histogram(&format!("route=\"{route}\""), &snapshot);
    }
    Family::new(
        out,
        "ingestd_http_pool_nudges_total",
        "counter",
        "Empty connections made to tiny_http's pool to free a client connection it left unread.",
    )
    .sample("", "", compat::nudges());
    Family::new(
        out,
        "ingestd_http_pool_looks_total",
        "counter",
        "Looks at a client's first request still unanswered: each ends in a nudge, or in finding it read (or gone).",
    )
    .sample("", "", compat::looks());
    Family::new(
        out,
        "ingestd_http_health_probes_total",
        "counter",
        "Health probes the accept loop's supervisor made and got answered (not in the requests counted above).",
    )
    .sample("", "", supervise::probes_answered());
    Family::new(
        out,
        "ingestd_http_answer_bytes_held",
        "gauge",
        &format!(
            "Bytes reserved by large answers not yet written out (at most {} MiB; past it, 503 overloaded).",
            budget::BUDGET >> 20
        ),
    )
    .sample("", "", budget::ANSWERS.held());
    Family::new(
        out,
        "ingestd_http_body_bytes_held",
        "gauge",
        &format!(
            "Bytes reserved by large request bodies, read and not yet parsed (at most {} MiB; past it, 503 overloaded).",
            budget::BUDGET >> 20
        ),
    )
    .sample("", "", budget::BODIES.held());
    Family::new(
        out,
        "ingestd_log_records_dropped_total",
        "counter",
        &format!(
            "Log records (access records among them) dropped because {} already waited for a slow log reader.",
            crate::log::QUEUED_MOST
        ),
    )
    .sample("", "", crate::log::dropped());
}
