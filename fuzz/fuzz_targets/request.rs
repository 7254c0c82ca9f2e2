//! Fuzzes the request decoder and validator end to end: an arbitrary method, URL, header value
//! and body go through `api::handle` against a real in-memory core. Nothing may panic, every
//! answer is a known status, and every API answer is JSON with an error code when it fails.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ingestd::http::api::{self, Head};
use ingestd::http::Limits;
use ingestd::{App, Pacing, SimulatedApi, SystemClock};
use libfuzzer_sys::fuzz_target;

const STATUSES: [u16; 12] = [200, 400, 401, 404, 405, 408, 413, 414, 431, 500, 503, 429];

fn app() -> &'static Arc<App> {
    static APP: OnceLock<Arc<App>> = OnceLock::new();
    APP.get_or_init(|| {
        let pacing = Pacing { interval: Duration::from_secs(3600), batch_size: 3 };
        let app = App::start(pacing, Arc::new(SystemClock), SimulatedApi { delay: Duration::ZERO });
        // Bounded memory however long the fuzzer runs: past this, ingests answer 503.
        app.set_max_queued_ids(200_000);
        Arc::new(app)
    })
}

/// Splits the input into method, URL, idempotency key and body at the first three `\n`s.
fn parts(data: &[u8]) -> Option<(&str, &str, Option<&str>, &[u8])> {
    let mut fields = data.splitn(4, |&b| b == b'\n');
    let method = std::str::from_utf8(fields.next()?).ok()?;
    let url = std::str::from_utf8(fields.next()?).ok()?;
    let key = std::str::from_utf8(fields.next()?).ok().filter(|k| !k.is_empty());
    Some((method, url, key, fields.next().unwrap_or_default()))
}

fuzz_target!(|data: &[u8]| {
    // The body validator alone: whatever it accepts is a valid request.
    if let Ok(request) = ingestd::http::ingest_body::parse(data, usize::MAX) {
        assert!(!request.ids.is_empty());
        assert!(request.ids.iter().all(|&id| (1..=ingestd::model::MAX_ID).contains(&id)));
    }
    let Some((method, url, key, body)) = parts(data) else { return };
    let head = Head { method, url, idempotency_key: key };
    let reply = api::handle(app(), &Limits::default(), head, || Ok(body.to_vec().into()));
    assert!(STATUSES.contains(&reply.status), "unexpected status {}", reply.status);
    if reply.content_type == "application/json" {
        let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON answers parse");
        if reply.status >= 400 {
            assert!(json["error"].is_string() && json["detail"].is_string(), "{json}");
        }
    }
});
