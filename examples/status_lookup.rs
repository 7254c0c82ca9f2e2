//! Benchmark: a status lookup with a million batches queued costs what it costs with ten.
//!
//! Builds the real `App` on a manual clock (so nothing drains while we measure), queues N
//! batches in N/10 ingestions, then times `GET /status/<id>` of the last one through the real
//! handler (queue lock, position and ETA arithmetic, JSON), without sockets.
//! Run: `cargo run --release --example status_lookup 2>/dev/null` (stderr has the pacer's log).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestd::http::api;
use ingestd::{App, ManualClock, Pacing, Parked, Priority, SimulatedApi};

/// Ids per ingestion; with batches of one id, also batches per ingestion.
const PER_INGESTION: u32 = 10;
const LOOKUPS: u32 = 200_000;

fn main() {
    println!("{:>16} {:>14} {:>18}", "queued batches", "ingestions", "ns per lookup");
    let mut results = Vec::new();
    for batches in [10, 1_000_000] {
        let ns = measure(batches);
        println!("{batches:>16} {:>14} {ns:>18.0}", batches / PER_INGESTION);
        results.push(ns);
    }
    println!("ratio (1,000,000 / 10): {:.2}", results[1] / results[0]);
}

/// Nanoseconds per status lookup of the last ingestion, with `batches` queued.
fn measure(batches: u32) -> f64 {
    let pacing = Pacing { interval: Duration::from_secs(5), batch_size: 1 };
    let app = Arc::new(App::start(pacing, Arc::new(ManualClock::new()), SimulatedApi { delay: Duration::ZERO }));
    let mut last = None;
    for i in 0..batches / PER_INGESTION {
        let ids: Vec<u32> = (1..=PER_INGESTION).map(|k| i * PER_INGESTION + k).collect();
        last = Some(app.ingest(Priority::Low, ids, None).expect("an in-memory ingest is accepted"));
    }
    // Let the first batch go and complete, so nothing changes while we measure.
    let parked = app.queue().wait_parked(Duration::from_secs(60), |p| matches!(p, Parked::Until(_)));
    assert!(parked.is_some(), "the pacer did not settle");
    let path = format!("/status/{}", last.expect("at least one ingestion"));
    let limits = ingestd::http::Limits::default();
    let head = api::Head { method: "GET", url: &path, idempotency_key: None };
    let lookup = || api::handle(&app, &limits, head, || unreachable!("GET has no body"));
    let reply = lookup();
    assert_eq!(reply.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    // The first batch went at once, so the last batch has every other one ahead of it.
    assert_eq!(body["batches"][9]["position"], u64::from(batches) - 2, "{body}");
    for _ in 0..LOOKUPS / 10 {
        black_box(lookup());
    }
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        black_box(lookup());
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(LOOKUPS);
    app.shutdown(std::time::Duration::from_secs(10));
    ns
}
