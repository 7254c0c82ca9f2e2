//! What a person or a scraper reads: the dashboard (`/`) and its data (`/dashboard.json`), the
//! API docs (`/docs`), the OpenAPI document (`/openapi.json`) and `/metrics`.
//!
//! Runs on the handler threads. Pages are compiled into the binary (`include_str!`), so nothing
//! is fetched from anywhere else. Reads the core's metrics, and the queue as `GET /status`
//! does (brief O(1) copies under the queue lock: the next release, and each recent ingestion's
//! timeline); never writes.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

use super::api::{status_body, Reply, StatusBody};
use super::budget::Held;
use super::prometheus;
use crate::app::App;
use crate::metrics::ReleaseRecord;
use crate::model::{BatchStatus, Id};

const DASHBOARD: &str = include_str!("../../static/index.html");
const DOCS: &str = include_str!("../../static/docs.html");
/// The token prompt both pages share, put where a page says `/*@token.js*/`.
const TOKEN_JS: &str = include_str!("../../static/token.js");

/// A page with its shared script in place, built once.
fn with_shared_script(cell: &'static OnceLock<String>, html: &str) -> Vec<u8> {
    cell.get_or_init(|| html.replace("/*@token.js*/", TOKEN_JS)).as_bytes().to_vec()
}
const OPENAPI: &str = include_str!("openapi.json");
/// The batches each recent ingestion shows on the dashboard: the page polls twice a second, so
/// its data stays small whatever the ingestions hold.
const DASHBOARD_BATCHES: usize = 12;
const HTML: &str = "text/html; charset=utf-8";

/// A page route (its path is in `api.rs`'s table). Each takes GET and HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Page {
    Dashboard,
    DashboardJson,
    Docs,
    OpenApi,
    Metrics,
}

pub(super) fn render(app: &App, page: Page) -> Reply {
    match page {
        Page::Dashboard => {
            static BUILT: OnceLock<String> = OnceLock::new();
            text(HTML, with_shared_script(&BUILT, DASHBOARD))
        }
        Page::Docs => {
            static BUILT: OnceLock<String> = OnceLock::new();
            text(HTML, with_shared_script(&BUILT, DOCS))
        }
        Page::OpenApi => text("application/json", OPENAPI.as_bytes().to_vec()),
        Page::Metrics => text(prometheus::CONTENT_TYPE, prometheus::render(app).into_bytes()),
        Page::DashboardJson => dashboard(app),
    }
}

fn text(content_type: &'static str, body: Vec<u8>) -> Reply {
    Reply { status: 200, body, held: Held::default(), allow: None, retry_after: None, content_type }
}

/// `GET /dashboard.json`. Times are milliseconds relative to the moment of the answer, so the
/// page needs no clock agreement with the server.
#[derive(Serialize)]
struct Dashboard<'a> {
    interval_ms: f64,
    queued: Queued,
    in_flight: Option<ReleaseBody<'a>>,
    /// Until the pacer may release the head batch; `null` when idle or waiting for the batch in
    /// flight.
    next_release_in_ms: Option<f64>,
    /// Oldest first.
    releases: Vec<ReleaseBody<'a>>,
    /// Newest first.
    ingestions: Vec<RecentIngestion<'a>>,
    totals: Totals,
}

#[derive(Serialize)]
#[allow(non_snake_case)] // the keys are the priorities as the API spells them
struct Queued {
    HIGH: u64,
    MEDIUM: u64,
    LOW: u64,
}

#[derive(Serialize)]
struct Totals {
    ingestions: u64,
    ids: u64,
    batches_released: u64,
    batches_completed: u64,
    batches_failed: u64,
}

#[derive(Serialize, Clone)]
struct ReleaseBody<'a> {
    batch_id: Uuid,
    ingestion_id: Uuid,
    priority: &'static str,
    ids: &'a [Id],
    status: &'static str,
    /// Whether the batch waits out a backoff before its next release.
    retrying: bool,
    ago_ms: f64,
    late_ms: f64,
}

#[derive(Serialize)]
struct RecentIngestion<'a> {
    priority: &'static str,
    /// All its batches; `batches` holds the first [`DASHBOARD_BATCHES`].
    batch_count: usize,
    #[serde(flatten)]
    status: StatusBody<'a>,
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn release_body(record: &ReleaseRecord, now: Instant) -> ReleaseBody<'_> {
    let view = record.batch.view();
    ReleaseBody {
        batch_id: view.batch_id,
        ingestion_id: record.batch.ingestion.id,
        priority: record.batch.ingestion.priority.as_str(),
        ids: view.ids,
        status: view.status.as_str(),
        retrying: view.retry_at.is_some(),
        ago_ms: millis(now.saturating_duration_since(record.at)),
        late_ms: millis(record.at.saturating_duration_since(record.due)),
    }
}

fn dashboard(app: &App) -> Reply {
    let queue = app.queue();
    let metrics = queue.metrics();
    let (releases, ingestions) = (metrics.recent_releases(), metrics.recent_ingestions());
    let next_release = queue.next_release();
    let now = queue.now();
    let [(_, high), (_, medium), (_, low)] = metrics.totals();
    let all = [high, medium, low];
    let releases: Vec<ReleaseBody<'_>> = releases.iter().map(|r| release_body(r, now)).collect();
    let in_flight = releases.iter().rev().find(|r| r.status == BatchStatus::Triggered.as_str() && !r.retrying);
    let body = Dashboard {
        interval_ms: millis(queue.interval()),
        queued: Queued { HIGH: high.queued(), MEDIUM: medium.queued(), LOW: low.queued() },
        in_flight: in_flight.cloned(),
        next_release_in_ms: next_release.map(|due| millis(due.saturating_duration_since(now))),
        // One that expired is gone from the API too.
        ingestions: ingestions
            .iter()
            .filter(|i| app.ingestion(&i.id).is_some())
            .map(|i| RecentIngestion {
                priority: i.priority.as_str(),
                batch_count: i.batch_count(),
                status: status_body(app.queue(), i, DASHBOARD_BATCHES),
            })
            .collect(),
        totals: Totals {
            ingestions: all.iter().map(|t| t.ingestions).sum(),
            ids: all.iter().map(|t| t.ids).sum(),
            batches_released: all.iter().map(|t| t.batches_released).sum(),
            batches_completed: all.iter().map(|t| t.batches_completed).sum(),
            batches_failed: all.iter().map(|t| t.batches_failed).sum(),
        },
        releases,
    };
    // Serialized here, while the rings' data it borrows is alive.
    Reply::json(200, &body)
}
