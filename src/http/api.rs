//! Routes and handlers: an HTTP method, path and body in, a [`Reply`] out.
//!
//! Runs on the HTTP handler threads. Knows JSON and status codes; knows nothing of sockets
//! (that is `server.rs`) nor of queues and clocks (that is the core, behind [`App`]).

use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

use super::error::ApiError;
use super::ingest_body;
use crate::app::App;
use crate::model::{BatchStatus, Id, Ingestion};
use crate::pacer::{Queue, QueueReport};
use crate::rfc3339;

/// What to answer: a status code and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The methods a route takes, sent as `Allow` with a 405.
    pub allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, value: &impl Serialize) -> Reply {
        let body = serde_json::to_vec(value).expect("our response types always serialize");
        Reply { status, body, allow: None }
    }

    pub fn error(error: &ApiError) -> Reply {
        let allow = match error {
            ApiError::MethodNotAllowed { allow, .. } => Some(*allow),
            _ => None,
        };
        let detail = error.to_string();
        Reply { allow, ..Reply::json(error.status(), &ErrorBody { error: error.code(), detail: &detail }) }
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
struct StatusBody<'a> {
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
}

impl Route<'_> {
    fn allow(&self) -> &'static str {
        match self {
            Route::Ingest => "POST",
            Route::Status(_) | Route::Queue | Route::Health => "GET, HEAD",
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
        _ => path.strip_prefix("/status/").filter(|id| !id.contains('/')).map(Route::Status),
    }
}

/// Answers one request. `read_body` is called only by routes that take a body.
pub fn handle(app: &App, method: &str, url: &str, read_body: impl FnOnce() -> Result<Vec<u8>, ApiError>) -> Reply {
    match dispatch(app, method, url, read_body) {
        Ok(reply) => reply,
        Err(error) => Reply::error(&error),
    }
}

fn dispatch(
    app: &App,
    method: &str,
    url: &str,
    read_body: impl FnOnce() -> Result<Vec<u8>, ApiError>,
) -> Result<Reply, ApiError> {
    let route = route(url).ok_or_else(|| {
        ApiError::NotFound(format!(
            "there is no route {}; the API has POST /ingest, GET /status/<ingestion_id>, GET /queue and GET /health",
            shorten(url)
        ))
    })?;
    if !route.takes(method) {
        return Err(ApiError::MethodNotAllowed { method: shorten(method), allow: route.allow() });
    }
    match route {
        Route::Ingest => {
            let request = ingest_body::parse(&read_body()?)?;
            let ingestion_id = app.ingest(request.priority, request.ids);
            Ok(Reply::json(200, &Accepted { ingestion_id }))
        }
        Route::Status(id) => {
            let ingestion = Uuid::try_parse(id)
                .ok()
                .and_then(|id| app.ingestion(&id))
                .ok_or_else(|| ApiError::NotFound(format!("there is no ingestion with id {}", shorten(id))))?;
            Ok(Reply::json(200, &status_body(app.queue(), &ingestion)))
        }
        Route::Queue => Ok(Reply::json(200, &queue_body(app.queue(), &app.queue().report()))),
        Route::Health => Ok(Reply::json(200, &serde_json::json!({"status": "ok"}))),
    }
}

fn status_body<'a>(queue: &Queue, ingestion: &'a Ingestion) -> StatusBody<'a> {
    // One snapshot of the batches; the ingestion's status is derived from it, so they agree.
    let timeline = queue.timeline(ingestion);
    let time = |t: Option<Instant>| t.map(|t| rfc3339::format(queue.wall_time(t)));
    let batches = timeline
        .batches
        .into_iter()
        .map(|b| BatchBody {
            batch_id: b.view.batch_id,
            ids: b.view.ids,
            status: b.view.status,
            position: b.position,
            eta: time(b.eta),
            triggered_at: time(b.view.triggered_at),
            completed_at: time(b.view.completed_at),
        })
        .collect();
    StatusBody {
        ingestion_id: ingestion.id,
        status: timeline.status,
        batches,
        eta_completed: time(timeline.eta_completed),
    }
}

fn queue_body(queue: &Queue, report: &QueueReport) -> QueueBody {
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
