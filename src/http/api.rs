//! Routes and handlers: an HTTP method, path and body in, a [`Reply`] out.
//!
//! Runs on the HTTP handler threads. Knows JSON and status codes; knows nothing of sockets
//! (that is `server.rs`) nor of queues and clocks (that is the core, behind [`App`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use uuid::Uuid;

use super::error::ApiError;
use super::ingest_body;
use super::limits::Limits;
use super::pages;
use crate::app::{App, IngestError};
use crate::journal::Outage;
use crate::model::{BatchStatus, Id, Ingestion};
use crate::pacer::{Queue, QueueReport};
use crate::rfc3339;

/// What to answer: a status code and a body (JSON unless a page says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The methods a route takes, sent as `Allow` with a 405.
    pub allow: Option<&'static str>,
    /// Seconds, sent as `Retry-After` with a 503.
    pub retry_after: Option<u64>,
    pub content_type: &'static str,
}

impl Reply {
    pub(super) fn json(status: u16, value: &impl Serialize) -> Reply {
        let body = serde_json::to_vec(value).expect("our response types always serialize");
        Reply { status, body, allow: None, retry_after: None, content_type: "application/json" }
    }

    pub fn error(error: &ApiError) -> Reply {
        let allow = match error {
            ApiError::MethodNotAllowed { allow, .. } => Some(*allow),
            _ => None,
        };
        let retry_after = match error {
            ApiError::QueueFull { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let detail = error.to_string();
        Reply { allow, retry_after, ..Reply::json(error.status(), &ErrorBody { error: error.code(), detail: &detail }) }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    detail: &'a str,
}

#[derive(Serialize)]
struct Accepted {
    ingestion_id: Uuid,
}

/// Times are RFC 3339 UTC strings; every field is always present, `null` where it does not apply.
#[derive(Serialize)]
pub(super) struct StatusBody<'a> {
    ingestion_id: Uuid,
    #[serde(serialize_with = "status_name")]
    status: BatchStatus,
    batches: Vec<BatchBody<'a>>,
    /// The expected release of the last batch, while the ingestion is not completed.
    eta_completed: Option<String>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    batch_id: Uuid,
    ids: &'a [Id],
    #[serde(serialize_with = "status_name")]
    status: BatchStatus,
    attempts: u8,
    /// Batches released before this one if nothing new arrives; only while yet to start.
    position: Option<u64>,
    /// Expected release; only while yet to start.
    eta: Option<String>,
    triggered_at: Option<String>,
    completed_at: Option<String>,
}

/// `GET /queue`. Durations are in seconds.
#[derive(Serialize)]
struct QueueBody {
    now: String,
    interval_seconds: f64,
    queued_batches: u64,
    queued_ids: u64,
    /// One entry per priority, HIGH first.
    priorities: Vec<LevelBody>,
    in_flight: Option<InFlightBody>,
    /// When the next batch can go at the earliest; `null` when nothing is queued.
    next_release_at: Option<String>,
    /// Time until the last queued batch is released at one batch per interval; 0 when empty.
    drain_seconds: f64,
    /// When the last queued batch is expected to be released; `null` when nothing is queued.
    drained_at: Option<String>,
    storage: StorageBody,
}

/// Whether the journal can write (always, in memory mode). While it cannot, nothing is
/// accepted or released.
#[derive(Serialize)]
struct StorageBody {
    durable: bool,
    available: bool,
    /// What the last failed write got from the OS; `null` while writes succeed.
    error: Option<String>,
    /// When writes started failing; `null` while they succeed.
    unavailable_since: Option<String>,
}

impl StorageBody {
    fn of(app: &App) -> StorageBody {
        let outage = app.storage_outage();
        StorageBody {
            durable: app.is_durable(),
            available: outage.is_none(),
            unavailable_since: outage.as_ref().map(|o| rfc3339::format(since(o))),
            error: outage.map(|o| o.error),
        }
    }
}

fn since(outage: &Outage) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(outage.since_ms)
}

#[derive(Serialize)]
struct LevelBody {
    priority: &'static str,
    queued_batches: u64,
    queued_ids: u64,
    /// How long the oldest batch of this priority has waited; `null` when none waits.
    oldest_waiting_seconds: Option<f64>,
    oldest_waiting_since: Option<String>,
}

#[derive(Serialize)]
struct InFlightBody {
    batch_id: Uuid,
    ingestion_id: Uuid,
    priority: &'static str,
    ids: Vec<Id>,
    triggered_at: String,
}

/// The routes, so that a path can be told apart from a method it does not take.
enum Route<'a> {
    Ingest,
    Status(&'a str),
    Queue,
    Health,
    Page(pages::Page),
}

impl Route<'_> {
    fn allow(&self) -> &'static str {
        match self {
            Route::Ingest => "POST",
            Route::Status(_) | Route::Queue | Route::Health | Route::Page(_) => "GET, HEAD",
        }
    }

    /// The route as `/metrics` labels it: its OpenAPI path template, so labels stay few.
    fn label(&self) -> &'static str {
        match self {
            Route::Ingest => "/ingest",
            Route::Status(_) => "/status/{ingestion_id}",
            Route::Queue => "/queue",
            Route::Health => "/health",
            Route::Page(page) => page.path(),
        }
    }

    fn takes(&self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    match path {
        "/ingest" => Some(Route::Ingest),
        "/health" => Some(Route::Health),
        "/queue" => Some(Route::Queue),
        _ => pages::Page::at(path)
            .map(Route::Page)
            .or_else(|| path.strip_prefix("/status/").filter(|id| !id.contains('/')).map(Route::Status)),
    }
}

/// What the handlers need of a request besides its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Head<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub idempotency_key: Option<&'a str>,
}

/// The `route` label of a request in `/metrics`; `unmatched` for a path with no route.
pub fn route_label(url: &str) -> &'static str {
    route(url).map_or(UNMATCHED, |route| route.label())
}

pub const UNMATCHED: &str = "unmatched";

/// Answers one request. `read_body` is called only by routes that take a body.
pub fn handle(
    app: &Arc<App>,
    limits: &Limits,
    head: Head<'_>,
    read_body: impl FnOnce() -> Result<Vec<u8>, ApiError>,
) -> Reply {
    dispatch(app, limits, head, read_body).unwrap_or_else(|error| Reply::error(&error))
}

fn dispatch(
    app: &Arc<App>,
    limits: &Limits,
    head: Head<'_>,
    read_body: impl FnOnce() -> Result<Vec<u8>, ApiError>,
) -> Result<Reply, ApiError> {
    let Head { method, url, idempotency_key } = head;
    if !app.is_accepting() {
        return Err(ApiError::ShuttingDown);
    }
    let route = route(url).ok_or_else(|| {
        ApiError::NotFound(format!(
            "there is no route {}; the API has POST /ingest, GET /status/<ingestion_id>, GET /queue and \
             GET /health (see GET /docs)",
            shorten(url)
        ))
    })?;
    if !route.takes(method) {
        return Err(ApiError::MethodNotAllowed { method: shorten(method), allow: route.allow() });
    }
    match route {
        Route::Ingest => {
            let key = idempotency_key.map(check_idempotency_key).transpose()?;
            let request = ingest_body::parse(&read_body()?)?;
            // A request larger than the whole queue could never fit: that is a 413, not a 503.
            let max_ids = limits.max_ids.min(usize::try_from(limits.max_queued_ids).unwrap_or(usize::MAX));
            if request.ids.len() > max_ids {
                return Err(ApiError::TooManyIds { count: request.ids.len(), limit: max_ids });
            }
            // In durable mode this waits for the group commit; the thread that took the request
            // must write its reply (see `server.rs`), so waiting here costs nothing more.
            Ok(ingest_reply(app.ingest(request.priority, request.ids, key)))
        }
        Route::Status(id) => {
            let ingestion = Uuid::try_parse(id)
                .ok()
                .and_then(|id| app.ingestion(&id))
                .ok_or_else(|| ApiError::NotFound(format!("unknown or expired ingestion {}", shorten(id))))?;
            Ok(Reply::json(200, &status_body(app.queue(), &ingestion)))
        }
        Route::Queue => Ok(Reply::json(200, &queue_body(app.queue(), &app.queue().report(), StorageBody::of(app)))),
        Route::Health => match app.storage_outage() {
            Some(outage) => Err(ApiError::StorageUnavailable {
                error: outage.error.clone(),
                since: rfc3339::format(since(&outage)),
            }),
            None => Ok(Reply::json(200, &serde_json::json!({"status": "ok"}))),
        },
        Route::Page(page) => Ok(pages::render(app, page)),
    }
}

fn ingest_reply(result: Result<Uuid, IngestError>) -> Reply {
    let error = match result {
        Ok(ingestion_id) => return Reply::json(200, &Accepted { ingestion_id }),
        Err(IngestError::ShuttingDown) => ApiError::ShuttingDown,
        Err(IngestError::Unsaved(why)) => ApiError::Unsaved(why.to_string()),
        Err(IngestError::QueueFull { retry_after }) => {
            ApiError::QueueFull { retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64 }
        }
    };
    Reply::error(&error)
}

fn check_idempotency_key(key: &str) -> Result<&str, ApiError> {
    let printable = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if key.is_empty() || key.len() > 255 || !printable {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(key)
}

pub(super) fn status_body<'a>(queue: &Queue, ingestion: &'a Ingestion) -> StatusBody<'a> {
    // One snapshot of the batches; the ingestion's status is derived from it, so they agree.
    let timeline = queue.timeline(ingestion);
    let time = |t: Option<Instant>| t.map(|t| rfc3339::format(queue.wall_time(t)));
    let wall = |t: Option<SystemTime>| t.map(rfc3339::format);
    let batches = timeline
        .batches
        .into_iter()
        .map(|b| BatchBody {
            batch_id: b.view.batch_id,
            ids: b.view.ids,
            status: b.view.status,
            attempts: b.view.attempts,
            position: b.position,
            eta: time(b.eta),
            triggered_at: wall(b.view.triggered_at),
            completed_at: wall(b.view.completed_at),
        })
        .collect();
    StatusBody {
        ingestion_id: ingestion.id,
        status: timeline.status,
        batches,
        eta_completed: wall(timeline.eta_completed),
    }
}

fn queue_body(queue: &Queue, report: &QueueReport, storage: StorageBody) -> QueueBody {
    let outlook = &report.outlook;
    let time = |t: Instant| rfc3339::format(queue.wall_time(t));
    let priorities = report
        .levels
        .iter()
        .map(|level| LevelBody {
            priority: level.priority.as_str(),
            queued_batches: level.batches,
            queued_ids: level.ids,
            oldest_waiting_seconds: level.oldest_since.map(|t| seconds(outlook.now.saturating_duration_since(t))),
            oldest_waiting_since: level.oldest_since.map(time),
        })
        .collect();
    let in_flight = report.in_flight.as_ref().map(|(batch, at)| {
        let view = batch.view();
        InFlightBody {
            batch_id: view.batch_id,
            ingestion_id: batch.ingestion.id,
            priority: batch.ingestion.priority.as_str(),
            ids: view.ids.to_vec(),
            triggered_at: time(*at),
        }
    });
    let drained_at = outlook.drained_at();
    QueueBody {
        now: time(outlook.now),
        interval_seconds: seconds(outlook.interval),
        queued_batches: outlook.queued_total(),
        queued_ids: report.levels.iter().map(|l| l.ids).sum(),
        priorities,
        in_flight,
        next_release_at: outlook.next_release.map(time),
        drain_seconds: drained_at.map_or(0.0, |t| seconds(t.saturating_duration_since(outlook.now))),
        drained_at: drained_at.map(time),
        storage,
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn status_name<S: serde::Serializer>(status: &BatchStatus, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(status.as_str())
}

/// Request text quoted in an error detail, cut so that a huge URL makes a small answer.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let quoted: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().count() > MAX_CHARS {
        format!("'{quoted}…'")
    } else {
        format!("'{quoted}'")
    }
}
