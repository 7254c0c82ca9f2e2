//! Routes and handlers: an HTTP method, path and body in, a [`Reply`] out.
//!
//! Runs on the HTTP handler threads. Knows JSON and status codes; knows nothing of sockets
//! (that is `server.rs`). Reads the queue only through [`Queue`]'s O(1) reports, and the clock
//! only to turn the queue's instants into dates.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use uuid::Uuid;

use super::budget::{Body, Held, ReadBody};
use super::error::ApiError;
use super::ingest_body;
use super::limits::Limits;
use super::pages;
use crate::app::{App, IngestError};
use crate::journal::Outage;
use crate::model::{BatchStatus, Id, Ingestion};
use crate::pacer::{Queue, QueueReport, Timeline};
use crate::rfc3339;

/// Headers every answer carries, ours and the relay's: status and queue data go stale at once,
/// and no answer is to be read as another type than it says.
const EVERY_ANSWER: [(&str, &str); 2] = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")];

/// What to answer: a status code and a body (JSON unless a page says otherwise).
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The answer budget its body holds until it is written out.
    pub(crate) held: Held,
    /// The methods a route takes, sent as `Allow` with a 405.
    pub allow: Option<&'static str>,
    /// Seconds, sent as `Retry-After` with a 503.
    pub retry_after: Option<u64>,
    pub content_type: &'static str,
}

impl Reply {
    /// The value as JSON, or `503 overloaded` if the answer budget cannot hold it.
    pub(super) fn json(status: u16, value: &impl Serialize) -> Reply {
        let mut body = Body::default();
        match serde_json::to_writer(&mut body, value) {
            Ok(()) => Reply {
                status,
                body: body.bytes,
                held: body.held,
                allow: None,
                retry_after: None,
                content_type: "application/json",
            },
            // An error's answer is small, so always free of the budget.
            Err(error) if error.is_io() => Reply::error(&ApiError::Overloaded),
            Err(error) => unreachable!("our response types always serialize: {error}"),
        }
    }

    pub(crate) fn error(error: &ApiError) -> Reply {
        let allow = match error {
            ApiError::MethodNotAllowed { allow, .. } => Some(*allow),
            _ => None,
        };
        let retry_after = match error {
            ApiError::QueueFull { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Overloaded => Some(1),
            _ => None,
        };
        let detail = error.to_string();
        Reply { allow, retry_after, ..Reply::json(error.status(), &ErrorBody { error: error.code(), detail: &detail }) }
    }

    /// Every header the answer carries but its framing (`Content-Length`, `Connection`,
    /// `Date`), whoever writes it: tiny_http, or the relay for what it answers itself.
    pub(crate) fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("Content-Type", self.content_type.to_owned())];
        headers.extend(EVERY_ANSWER.map(|(name, value)| (name, value.to_owned())));
        if self.content_type.starts_with("text/html") {
            // The pages take a token and submit work: no other site may frame them.
            headers.push(("Content-Security-Policy", "frame-ancestors 'none'".to_owned()));
        }
        headers.extend(self.allow.map(|allow| ("Allow", allow.to_owned())));
        headers.extend(self.retry_after.map(|seconds| ("Retry-After", seconds.to_string())));
        if self.status == 401 {
            headers.push(("WWW-Authenticate", "Bearer".to_owned()));
        }
        headers
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
    batches: Batches<'a>,
    /// The expected release of the last batch, while the ingestion is not completed.
    eta_completed: Option<String>,
}

/// An ingestion's batches, each put in its JSON shape only as it is written: an answer of
/// 100,000 ids holds its bytes and the timeline, not a third copy between them.
pub(super) struct Batches<'a> {
    queue: &'a Queue,
    ingestion: &'a Ingestion,
    timeline: Timeline<'a>,
}

impl Serialize for Batches<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let time = |t: Option<Instant>| t.map(|t| rfc3339::format(self.queue.wall_time(t)));
        let wall = |t: Option<SystemTime>| t.map(rfc3339::format);
        serializer.collect_seq(self.timeline.batches().zip(0..).map(|(b, index)| BatchBody {
            batch_id: b.view.batch_id,
            ids: b.view.ids,
            status: b.view.status,
            attempts: b.view.attempts,
            position: b.position,
            eta: time(b.eta),
            triggered_at: wall(b.view.triggered_at),
            completed_at: wall(b.view.completed_at),
            retry_at: wall(b.view.retry_at),
            last_error: self.ingestion.last_error(index),
            failed_ids: self.ingestion.failed_ids(index),
        }))
    }
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
    /// When it completed, or failed.
    completed_at: Option<String>,
    /// When its next release may go, while it waits out a backoff after a failed release.
    retry_at: Option<String>,
    /// The last failure of one of its ids, for a person (`id 7: HTTP 503 after 2.1 s`); kept
    /// after a later release delivers the id.
    #[serde(serialize_with = "optional_text")]
    last_error: Option<Arc<str>>,
    /// Ids that failed for good: a permanent error, or undelivered after the last attempt.
    failed_ids: Vec<Id>,
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
    /// Batches waiting out a backoff before a retry (not in `queued_batches`).
    retrying_batches: usize,
    /// While the upstream's pause (`Retry-After`) lasts, when it ends; `null` otherwise.
    paused_until: Option<String>,
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

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ingest,
    Status,
    Queue,
    Health,
    Page(pages::Page),
}

/// Every route, by its OpenAPI path template: the one list of routes. [`route`] matches paths
/// against it, and `/metrics` labels requests with its templates ([`LABELS`]), so a route added
/// here is served and counted under its own name. A `{name}` in a template stands for one
/// non-empty path segment, at the end.
const ROUTES: [(&str, Target); 9] = [
    ("/ingest", Target::Ingest),
    ("/status/{ingestion_id}", Target::Status),
    ("/queue", Target::Queue),
    (HEALTH, Target::Health),
    ("/", Target::Page(pages::Page::Dashboard)),
    ("/dashboard.json", Target::Page(pages::Page::DashboardJson)),
    ("/docs", Target::Page(pages::Page::Docs)),
    ("/openapi.json", Target::Page(pages::Page::OpenApi)),
    ("/metrics", Target::Page(pages::Page::Metrics)),
];

/// The liveness route, which `ingestd health` and the accept loop's supervisor probe.
pub const HEALTH: &str = "/health";

/// The `route` label of a request to a path with no route.
pub(super) const UNMATCHED: &str = "unmatched";

/// Every `route` label `/metrics` may show, in the order it lists them: each template of
/// [`ROUTES`], then [`UNMATCHED`].
pub(super) const LABELS: [&str; ROUTES.len() + 1] = {
    let mut labels = [UNMATCHED; ROUTES.len() + 1];
    let mut i = 0;
    while i < ROUTES.len() {
        labels[i] = ROUTES[i].0;
        i += 1;
    }
    labels
};

/// A path matched to its row of [`ROUTES`], so that a path can be told apart from a method it
/// does not take.
struct Route<'a> {
    template: &'static str,
    target: Target,
    /// The segment a `{name}` in the template matched; empty when it has none.
    param: &'a str,
}

impl Route<'_> {
    fn allow(&self) -> &'static str {
        match self.target {
            Target::Ingest => "POST",
            Target::Status | Target::Queue | Target::Health | Target::Page(_) => "GET, HEAD",
        }
    }

    fn takes(&self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

impl Target {
    /// Served without a token: `/health`, so that load balancers can probe the service, and the
    /// pages with the document they render, which carry no data and ask the person for the
    /// token (`pages.rs` serves no other static asset).
    fn is_open(self) -> bool {
        use pages::Page;
        matches!(self, Target::Health | Target::Page(Page::Dashboard | Page::Docs | Page::OpenApi))
    }
}

/// Whether a request to `url` may be served without a token (see [`Target::is_open`]).
pub(super) fn is_open(url: &str) -> bool {
    route(url).is_some_and(|route| route.target.is_open())
}

/// The API's routes (not the pages), for a person: `POST /ingest, GET /status/{ingestion_id}, …`.
fn api_routes() -> String {
    let api = ROUTES.iter().filter(|(_, target)| !matches!(target, Target::Page(_)));
    let named: Vec<String> = api
        .map(|&(template, target)| {
            let method = Route { template, target, param: "" }.allow().split(", ").next().unwrap_or_default();
            format!("{method} {template}")
        })
        .collect();
    named.join(", ")
}

/// The path of a request target as the routes see it: without scheme and host (the absolute
/// form, which a server must take: RFC 9112, 3.2.2), query or fragment, and without one
/// trailing slash (`/` stays `/`). The token's open paths (`auth.rs`) are matched on it too.
pub(super) fn path_of(url: &str) -> &str {
    let url = match url.split_once("://") {
        Some((scheme, rest)) if ["http", "https"].iter().any(|s| scheme.eq_ignore_ascii_case(s)) => {
            rest.find(['/', '?', '#']).map(|at| &rest[at..]).filter(|p| p.starts_with('/')).unwrap_or("/")
        }
        _ => url,
    };
    let path = url.split(['?', '#']).next().unwrap_or_default();
    path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path)
}

fn route(url: &str) -> Option<Route<'_>> {
    let path = path_of(url);
    ROUTES.iter().find_map(|&(template, target)| {
        let param = match template.split_once('{') {
            None => (path == template).then_some("")?,
            Some((prefix, _)) => path.strip_prefix(prefix).filter(|p| !p.is_empty() && !p.contains('/'))?,
        };
        Some(Route { template, target, param })
    })
}

/// What the handlers need of a request besides its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Head<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub idempotency_key: Option<&'a str>,
}

/// The `route` label of a request in `/metrics`: its route's path template, or `unmatched`.
pub(crate) fn route_label(url: &str) -> &'static str {
    route(url).map_or(UNMATCHED, |route| route.template)
}

/// Answers one request. `read_body` is called only by routes that take a body.
pub fn handle(
    app: &Arc<App>,
    limits: &Limits,
    head: Head<'_>,
    read_body: impl FnOnce() -> Result<ReadBody, ApiError>,
) -> Reply {
    dispatch(app, limits, head, read_body).unwrap_or_else(|error| Reply::error(&error))
}

fn dispatch(
    app: &Arc<App>,
    limits: &Limits,
    head: Head<'_>,
    read_body: impl FnOnce() -> Result<ReadBody, ApiError>,
) -> Result<Reply, ApiError> {
    let Head { method, url, idempotency_key } = head;
    if !app.is_accepting() {
        return Err(ApiError::ShuttingDown);
    }
    let route = route(url).ok_or_else(|| {
        ApiError::NotFound(format!("there is no route {}; the API has {} (see GET /docs)", shorten(url), api_routes()))
    })?;
    if !route.takes(method) {
        return Err(ApiError::MethodNotAllowed { method: shorten(method), allow: route.allow() });
    }
    match route.target {
        Target::Ingest => {
            let key = idempotency_key.map(check_idempotency_key).transpose()?;
            // A request larger than the whole queue could never fit: that is a 413, not a 503.
            let max_ids = limits.max_ids.min(usize::try_from(app.max_queued_ids()).unwrap_or(usize::MAX));
            let request = ingest_body::parse(&read_body()?, max_ids)?;
            // In durable mode this waits for the group commit; the thread that took the request
            // must write its reply (see `server.rs`), so waiting here costs nothing more.
            Ok(ingest_reply(app.ingest(request.priority, request.ids, key)))
        }
        Target::Status => {
            let id = route.param;
            let ingestion = ingestion_id(id)
                .and_then(|id| app.ingestion(&id))
                .ok_or_else(|| ApiError::NotFound(format!("unknown or expired ingestion {}", shorten(id))))?;
            Ok(Reply::json(200, &status_body(app.queue(), &ingestion, usize::MAX)))
        }
        Target::Queue => Ok(Reply::json(200, &queue_body(app.queue(), &app.queue().report(), StorageBody::of(app)))),
        Target::Health => match app.storage_outage() {
            Some(outage) => Err(ApiError::StorageUnavailable {
                error: outage.error.clone(),
                since: rfc3339::format(since(&outage)),
            }),
            None => Ok(Reply::json(200, &serde_json::json!({"status": "ok"}))),
        },
        Target::Page(page) => Ok(pages::render(app, page)),
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

/// An ingestion id in the form the API writes it: hyphenated, 36 characters, hex digits of
/// either case (RFC 9562 makes case insignificant). `Uuid::try_parse` alone also takes the
/// braced, `urn:uuid:` and 32-digit forms, which would give one ingestion four URLs.
fn ingestion_id(text: &str) -> Option<Uuid> {
    let id = Uuid::try_parse(text).ok()?;
    let mut canonical = Uuid::encode_buffer();
    id.hyphenated().encode_lower(&mut canonical).eq_ignore_ascii_case(text).then_some(id)
}

fn check_idempotency_key(key: &str) -> Result<&str, ApiError> {
    let printable = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if key.is_empty() || key.len() > 255 || !printable {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(key)
}

/// The status of `ingestion`, with its first `most` batches.
pub(super) fn status_body<'a>(queue: &'a Queue, ingestion: &'a Ingestion, most: usize) -> StatusBody<'a> {
    // One snapshot of the batches; the ingestion's status is derived from it, so they agree.
    let timeline = queue.timeline(ingestion, most);
    StatusBody {
        ingestion_id: ingestion.id,
        status: timeline.status,
        eta_completed: timeline.eta_completed.map(rfc3339::format),
        batches: Batches { queue, ingestion, timeline },
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
        next_release_at: report.next_release.map(time),
        drain_seconds: drained_at.map_or(0.0, |t| seconds(t.saturating_duration_since(outlook.now))),
        drained_at: drained_at.map(time),
        retrying_batches: report.retrying,
        paused_until: report.paused_until.map(time),
        storage,
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn optional_text<S: serde::Serializer>(text: &Option<Arc<str>>, serializer: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(text) => serializer.serialize_str(text),
        None => serializer.serialize_none(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_reached_by_its_template_and_labelled_with_it() {
        for (template, target) in ROUTES {
            let path = template.split_once('{').map_or(template.to_owned(), |(prefix, _)| format!("{prefix}x"));
            for url in [path.clone(), format!("{path}/"), format!("{path}?q=1")] {
                let route = route(&url).unwrap_or_else(|| panic!("{url} has no route"));
                assert_eq!((route.template, route.target), (template, target), "{url}");
                assert_eq!(route_label(&url), template, "{url}");
            }
        }
        assert_eq!(LABELS[..ROUTES.len()], ROUTES.map(|(template, _)| template));
        assert_eq!(LABELS.last(), Some(&UNMATCHED));
        for unrouted in ["/nope", "/status", "/status/", "/status//", "/status/a/b", "/ingest/x", "/queues", ""] {
            assert_eq!(route_label(unrouted), UNMATCHED, "{unrouted:?}");
        }
    }

    #[test]
    fn paths_lose_scheme_host_query_fragment_and_one_trailing_slash() {
        let cases = [
            ("/", "/"),
            ("/a/", "/a"),
            ("/a//", "/a/"),
            ("/a?b=/", "/a"),
            ("/a#b", "/a"),
            ("/?x", "/"),
            ("http://h:1/status/x/?y", "/status/x"),
            ("HTTPS://h/a", "/a"),
            ("http://h", "/"),
            ("http://h?x=/a", "/"),
            ("ftp://h/a", "ftp://h/a"),
        ];
        for (url, path) in cases {
            assert_eq!(path_of(url), path, "{url}");
        }
    }

    #[test]
    fn an_ingestion_id_is_taken_only_as_the_api_writes_it() {
        let id = Uuid::new_v4();
        let text = id.to_string();
        assert_eq!(ingestion_id(&text), Some(id));
        assert_eq!(ingestion_id(&text.to_ascii_uppercase()), Some(id));
        let simple = id.simple().to_string();
        for other in [format!("{{{text}}}"), format!("urn:uuid:{text}"), simple, format!(" {text}"), format!("{text}0")]
        {
            assert_eq!(ingestion_id(&other), None, "{other}");
        }
    }

    #[test]
    fn only_health_and_the_pages_are_open() {
        for open in ["/health", "/health/", "/health?x=1", "/", "/?x=1", "/docs", "/docs/", "/openapi.json"] {
            assert!(is_open(open), "{open}");
        }
        let closed = ["/ingest", "/status/x", "/healthz", "/health/x", "/dashboard.json", "/metrics", "/docs/x", "/x"];
        for closed in closed {
            assert!(!is_open(closed), "{closed}");
        }
    }

    #[test]
    fn a_missing_route_names_the_api_routes() {
        assert_eq!(api_routes(), "POST /ingest, GET /status/{ingestion_id}, GET /queue, GET /health");
    }
}
