//! The listeners, and the handler threads that check and answer each request.
//!
//! Clients connect to our listener, and `compat/` relays each connection to tiny_http on an
//! internal Unix socket, stamping each request with its connection. Requests come from tiny_http through the pumps of `supervise.rs`
//! (`http-G-N`), which check quarantine and framing in arrival order. A request whose body tiny_http has already read
//! (none, or `Content-Length` up to 1024 bytes) is answered by the pump that took it, with no
//! hand-off; one whose body still has to come off the socket goes to an `http-body-N` thread
//! (`pool.rs`, which starts one when none waits), so that clients stalling their bodies never
//! delay anyone else (a chunked body a route did not read is drained there too). A connection's
//! answers run one at a time (`serial.rs`), and requests without the relay's stamp are
//! answered on `http-reject` (on `http-body-N` if a body is still on the socket). An upgrade's
//! body is always on the socket (tiny_http hands over the connection itself:
//! `framing::is_upgrade`), and is read by its `Content-Length`; the upgrade is ignored. Either thread checks the rest of
//! the head (sizes, token), reads the body, calls [`api::handle`] under
//! `catch_unwind` (a panic costs one 500, not a thread) and writes the reply. This is the only
//! module that touches tiny_http's request and response types; it never writes request data
//! into a response header.
//!
//! Connections it ends: one whose framing is refused is quarantined (every later request of it
//! gets `connection_rejected`, a chunked body of it is not waited for) and closed once its
//! answers are out; so is one whose chunked body fails to decode or passes `--max-body` unread
//! (its place in the stream is lost), and one refused after `Expect: 100-continue` (its body
//! may follow). A GET or HEAD for a connection the relay has already closed gets a short refusal, not its answer.

use std::cell::Cell;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tiny_http::{Header, Request, Response};

use super::api::{self, Head, Reply};
use super::budget::{Held, ReadBody, BODIES};
use super::compat::{Caps, Conn, Connections, Endpoint, Front, Origin, BUFFERED_BODY, STAMP};
use super::error::ApiError;
use super::limits::Limits;
use super::pool::Pool;
use super::serial::{Done, Work};
use super::supervise::{Dispatch, Supervisor};
use super::telemetry;
use super::{auth, cross_site, framing};
use crate::app::App;
use crate::log;

/// How the HTTP layer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Handler threads, and as many body readers.
    pub threads: usize,
    pub limits: Limits,
    /// How long a connection may stay silent: between the bytes of a request head or body, or
    /// between two requests. Also bounds the time to read a whole body, and to write a reply.
    pub idle_timeout: Duration,
    /// When set, every route but `/health` and the pages (`/`, `/docs`, `/openapi.json`) needs
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Where tiny_http's private socket directory may go, tried in order after `$TMPDIR` (or
    /// `/tmp`): an empty root or a `FROM scratch` image has none, but a data directory.
    pub socket_dirs: Vec<PathBuf>,
}

/// Answers a request that passed the checks: its head and a way to read the body.
pub(crate) type Handler =
    dyn Fn(Head<'_>, Box<dyn FnOnce() -> Result<ReadBody, ApiError> + '_>) -> Reply + Send + Sync + 'static;

/// Relay threads (`compat/`): one epoll loop each.
const RELAYS: usize = 2;
/// At shutdown, how long connections get to receive the answers under way before they are cut.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// A request, the client connection it came on (none for our own probes), and the
/// verdict of [`frame_check`] on it.
type Checked = (Request, Option<Arc<Conn>>, Result<(), ApiError>);

struct Shared {
    handler: Box<Handler>,
    limits: Limits,
    idle_timeout: Duration,
    token: Option<String>,
    connections: Arc<Connections>,
}

/// The running HTTP side: the relays, the supervised tiny_http accept loops and our handler
/// threads. [`HttpServer::stop`] joins what is ours.
pub struct HttpServer {
    front: Front,
    supervisor: Supervisor,
    /// The `http-body-N` threads.
    bodies: Arc<Pool<Checked>>,
    /// `http-reject`.
    reject: JoinHandle<()>,
    /// Removed (with its directory) once everything that uses it has stopped.
    endpoint: Endpoint,
    addr: SocketAddr,
}

impl HttpServer {
    pub fn start(listener: TcpListener, app: Arc<App>, options: HttpOptions) -> io::Result<HttpServer> {
        let limits = options.limits;
        let handler = move |head: Head<'_>, read_body: Box<dyn FnOnce() -> Result<ReadBody, ApiError> + '_>| {
            api::handle(&app, &limits, head, read_body)
        };
        HttpServer::start_with(listener, options, Box::new(handler))
    }

    /// Like [`HttpServer::start`] with any handler in place of the API.
    pub(crate) fn start_with(
        listener: TcpListener,
        options: HttpOptions,
        handler: Box<Handler>,
    ) -> io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        // Our listener, for the clients; the relay enforces the idle timeout on them. tiny_http's,
        // for the relay, has no timeouts: the relay ends every connection, so tiny_http's accept
        // never times out and a connection is never ended by two clocks.
        // No Nagle delay (accepted sockets inherit it): an answer may reach the relay as head and
        // body apart, and a body over one segment would wait for the client's delayed ACK.
        rustix::net::sockopt::set_tcp_nodelay(&listener, true)?;
        let (endpoint, internal) = Endpoint::bind(&options.socket_dirs)?;
        let connections = Arc::new(Connections::default());
        let shared = Arc::new(Shared {
            handler,
            limits: options.limits,
            idle_timeout: options.idle_timeout,
            token: options.token,
            connections: Arc::clone(&connections),
        });
        let threads = options.threads.max(1);
        let answer_body = {
            let shared = Arc::clone(&shared);
            move |(request, conn, framing): Checked| {
                serve(&shared, request, conn.as_deref(), framing, Count::Yes);
                if let Some(conn) = conn {
                    conn.answers().resume();
                }
            }
        };
        let bodies = Arc::new(Pool::start("http-body", threads, Box::new(answer_body))?);
        let (reject_tx, reject_rx) = crossbeam_channel::unbounded::<Work>();
        let reject = thread::Builder::new().name("http-reject".into()).spawn(move || {
            for work in reject_rx {
                work();
            }
        })?;
        let gate = Arc::clone(&shared);
        let to_bodies = Arc::clone(&bodies);
        let dispatch: Dispatch = Arc::new(move |request: Request| {
            // Run by the pumps in the order tiny_http read the requests (see `supervise.rs`),
            // so a request after ambiguous framing on its connection is always refused.
            let origin = gate.connections.origin(stamp(&request));
            let count = if matches!(origin, Origin::Probe) { Count::No } else { Count::Yes };
            let (conn, framing) = match &origin {
                Origin::Client(conn) => (Some(Arc::clone(conn)), frame_check(Some(conn), &request)),
                Origin::Probe => (None, frame_check(None, &request)),
                Origin::Unknown => (None, Err(ApiError::ConnectionRejected)),
            };
            // A body still on the socket may be read, or drained (a chunked one, even after a
            // refusal): only a body thread may wait on it.
            let work: Work = if streams_body(&request) {
                let bodies = Arc::clone(&to_bodies);
                Box::new(move || {
                    bodies.hand_over((request, conn, framing));
                    Done::Later
                })
            } else {
                let shared = Arc::clone(&gate);
                Box::new(move || {
                    serve(&shared, request, conn.as_deref(), framing, count);
                    Done::Here
                })
            };
            match origin {
                Origin::Client(conn) => {
                    let work = conn.answers().enter(work)?;
                    Some(Box::new(move || conn.answers().run(work)))
                }
                Origin::Probe => Some(Box::new(move || {
                    let _ = work();
                })),
                // Never a client's real request, and its connection is unknown, so its answer may
                // wait on a stalled one: on a thread of its own, never a pump's.
                Origin::Unknown => {
                    let _ = reject_tx.send(work);
                    None
                }
            }
        });
        let probe = (endpoint.path(), connections.probe_stamp());
        let supervisor = Supervisor::start(internal, probe, options.idle_timeout, threads, dispatch)?;
        let limits = &options.limits;
        let caps = Caps { url: limits.max_url, headers: limits.max_header_bytes, body: limits.max_body };
        let front = Front::start(listener, endpoint.path(), options.idle_timeout, caps, connections, RELAYS)?;
        Ok(HttpServer { front, supervisor, bodies, reject, endpoint, addr })
    }

    /// The address the listener is bound to, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the requests already received, then joins the handler threads and closes the
    /// listener. Bounded whatever clients do: connections forward nothing more, get
    /// half a second to receive the answers under way, and are then cut, so a body still being
    /// read ends at once (as `shutting_down`).
    pub fn stop(self) {
        self.front.stop(STOP_GRACE);
        // The pumps stop after the requests already received; then the channels close, and
        // each handler finishes what is queued and returns.
        self.supervisor.stop();
        self.bodies.stop();
        let _ = self.reject.join();
        drop(self.endpoint);
    }
}

/// Whether reading the body means waiting on the socket (tiny_http has not buffered it; it
/// never buffers an upgrade's).
fn streams_body(request: &Request) -> bool {
    let buffered = if framing::is_upgrade(request.headers()) { 0 } else { BUFFERED_BODY };
    let has = |name| has_header(request, name);
    request.body_length().is_some_and(|len| len > buffered) || has("Transfer-Encoding") || has("Expect")
}

/// Whether a request counts in `/metrics` and the access log: our own health probe does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Yes,
    No,
}

fn serve(shared: &Shared, mut request: Request, conn: Option<&Conn>, framing: Result<(), ApiError>, count: Count) {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let url = request.url().to_owned();
    // A read for a client that has gone (it pipelined, then left) would build an answer for
    // nobody: a large status each, one after another.
    if conn.is_some_and(Conn::is_closed) && matches!(method.as_str(), "GET" | "HEAD") {
        respond(request, Reply::error(&ApiError::ConnectionRejected));
        return answered(conn);
    }
    // A durable POST's reply comes once its group is on disk; it is written here all the same,
    // by the thread that took the request. tiny_http writes a connection's replies in request
    // order and blocks a writer until the reply before is out, so one thread writing everyone's
    // replies stalled for good behind a pipelined request whose reply it had not yet got.
    let (max_body, deadline) = (shared.limits.max_body, shared.idle_timeout);
    let body_read = Cell::new(false);
    let reply = match framing.and_then(|()| admit(shared, &request)) {
        Ok(()) => {
            let key = header_value(&request, "Idempotency-Key");
            answer(|| {
                let head = Head { method: &method, url: &url, idempotency_key: key.as_deref() };
                let body = || {
                    // Refused unread: left as a body nobody read (after `Expect`, the end of
                    // the connection).
                    announced_within(&request, max_body)?;
                    body_read.set(true);
                    read_body(&mut request, conn, max_body, deadline)
                };
                (shared.handler)(head, Box::new(body))
            })
        }
        Err(error) => Reply::error(&error),
    };
    if !body_read.get() {
        leave_body(&mut request, conn, max_body, deadline);
    }
    // Handler time (until the reply is known); writing it depends on the client.
    if count == Count::Yes {
        telemetry::record(&method, &url, api::route_label(&url), reply.status, started.elapsed());
    }
    respond(request, reply);
    answered(conn);
}

/// Leaves a body the route did not read where the next request can start. tiny_http drains a
/// `Content-Length` body itself, but not a chunked one: it would read what is left of it as the
/// next request, and answer that with an empty 400 of its own. After `Expect`, the answer comes
/// at once (RFC 9110, 10.1.1) and the client may still send the body: the connection then ends
/// with the answer. So it does after a chunked body on a quarantined connection: nothing after
/// it is acted on, and the body may never end as chunked (`Transfer-Encoding: gzip`); what the
/// relay forwarded of it is still drained, up to the end tiny_http then meets.
fn leave_body(request: &mut Request, conn: Option<&Conn>, max_body: usize, deadline: Duration) {
    let chunked = has_header(request, "Transfer-Encoding");
    if !chunked && request.body_length().is_none_or(|len| len == 0) {
        return;
    }
    let expects = has_header(request, "Expect");
    if let Some(conn) = conn.filter(|conn| expects || (chunked && conn.is_quarantined())) {
        conn.close_after_answers();
    }
    if chunked && !expects {
        let _ = read_body(request, conn, max_body, deadline);
    }
}

fn answered(conn: Option<&Conn>) {
    if let Some(conn) = conn {
        conn.answered();
    }
}

/// The relay's stamp: always the first header of a request it forwards.
fn stamp(request: &Request) -> Option<&str> {
    let first = request.headers().first()?;
    first.field.equiv(STAMP).then(|| first.value.as_str())
}

/// The headers the client sent: all but the relay's stamp.
fn client_headers(request: &Request) -> &[Header] {
    let headers = request.headers();
    &headers[usize::from(stamp(request).is_some())..]
}

fn has_header(request: &Request, name: &'static str) -> bool {
    request.headers().iter().any(|h| h.field.equiv(name))
}

fn header_value(request: &Request, name: &'static str) -> Option<String> {
    request.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().to_owned())
}

/// The first checks, made by the pumps in arrival order: the quarantine, then the framing.
/// The quarantine is the connection's: tiny_http will not let us close it, and after a head
/// it misreads, whatever follows on it may be a request smuggled inside the previous body; it
/// ends when the connection does.
fn frame_check(conn: Option<&Conn>, request: &Request) -> Result<(), ApiError> {
    if conn.is_some_and(Conn::is_quarantined) {
        return Err(ApiError::ConnectionRejected);
    }
    if let Err(error) = framing::check(request.http_version(), request.headers()) {
        if let Some(conn) = conn {
            // RFC 9112 (6.3): after a 400 for a framing it cannot trust, the connection ends;
            // what tiny_http already took of it is refused until then.
            conn.quarantine();
            conn.close_after_answers();
            log_framing(conn);
        }
        return Err(error);
    }
    Ok(())
}

/// Logs a connection refused for its framing: through `log-writer`, since a pump calls it under
/// its turn lock, and once a second at most, since a client can send such requests as fast as
/// it likes.
fn log_framing(conn: &Conn) {
    static THROTTLE: parking_lot::Mutex<log::Throttle> =
        parking_lot::Mutex::new(log::Throttle::new(Duration::from_secs(1)));
    if let Some(record) = framing_record(&mut THROTTLE.lock(), Instant::now(), &conn.peer()) {
        log::info(format_args!("{record}"));
    }
}

fn framing_record(throttle: &mut log::Throttle, now: Instant, peer: &dyn std::fmt::Display) -> Option<String> {
    let more = match throttle.admit(now)? {
        0 => String::new(),
        n => format!(" ({n} more since the last such record)"),
    };
    Some(format!("ambiguous framing from {peer}: nothing more from that connection is acted on{more}"))
}

/// The checks made after [`frame_check`], before anything acts on a request, in this order.
fn admit(shared: &Shared, request: &Request) -> Result<(), ApiError> {
    shared.limits.check_head(request.http_version(), request.url(), client_headers(request))?;
    cross_site::check(request.method().as_str(), request.headers())?;
    match &shared.token {
        Some(token) if !api::is_open(request.url()) => auth::check(token, request.headers()),
        _ => Ok(()),
    }
}

/// Runs a handler; a panic becomes a 500 for this request, and the thread lives on.
fn answer(handler: impl FnOnce() -> Reply) -> Reply {
    panic::catch_unwind(AssertUnwindSafe(handler)).unwrap_or_else(|_| Reply::error(&ApiError::Internal))
}

fn read_body(
    request: &mut Request,
    conn: Option<&Conn>,
    max_body: usize,
    deadline: Duration,
) -> Result<ReadBody, ApiError> {
    announced_within(request, max_body)?;
    let length = request.body_length();
    // An upgrade's reader is the connection itself, read to its end: the body is the
    // Content-Length bytes after the head, none without one (a chunked one is refused earlier).
    let framed = if framing::is_upgrade(request.headers()) { length.unwrap_or(0) as u64 } else { u64::MAX };
    // A body with a length reserves all of it at once: one announced and sent slowly holds its
    // share of the memory from the start, so many of them cannot outgrow it.
    let mut held = Held::of(&BODIES);
    held.cover_exactly(length.unwrap_or(0)).map_err(|_| no_memory(conn))?;
    let began = Instant::now();
    let mut body = Vec::with_capacity(length.unwrap_or(0));
    let mut reader = Read::take(request.as_reader(), framed);
    let mut chunk = [0; 16 << 10];
    // The relay ends the stream when the client is silent for the idle timeout or the server
    // stops; the body then ends early, and why is the answer.
    let cut = || conn.and_then(Conn::cut).map(|cut| cut.error(max_body));
    loop {
        // Each read waits at most the idle timeout (the socket's); the whole body gets as long.
        let read = match reader.read(&mut chunk) {
            // The bytes keep their share of the budget until they are parsed.
            Ok(0) => return cut().map_or_else(|| whole(body, length).map(|body| ReadBody::new(body, held)), Err),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(ApiError::RequestTimeout)
            }
            Err(e) => {
                return Err(cut().unwrap_or_else(|| {
                    lost_place(conn);
                    ApiError::BadFraming(format!("the body could not be read to its end ({e}); nothing was accepted"))
                }))
            }
        };
        if body.len() + read > max_body {
            if length.is_none() {
                lost_place(conn);
            }
            return Err(ApiError::BodyTooLarge { limit: max_body });
        }
        held.cover(body.len() + read).map_err(|_| no_memory(conn))?;
        body.extend_from_slice(&chunk[..read]);
        if began.elapsed() > deadline {
            return Err(ApiError::RequestTimeout);
        }
    }
}

/// Refuses a body whose `Content-Length` is over `max_body`, before reading any of it.
fn announced_within(request: &Request, max_body: usize) -> Result<(), ApiError> {
    match request.body_length() {
        Some(len) if len > max_body => Err(ApiError::BodyTooLarge { limit: max_body }),
        _ => Ok(()),
    }
}

/// The body, if it is as long as its `Content-Length` said: a client that closes its side
/// halfway has not sent its request.
fn whole(body: Vec<u8>, length: Option<usize>) -> Result<Vec<u8>, ApiError> {
    match length {
        Some(length) if body.len() < length => Err(ApiError::BadFraming(format!(
            "the body ended after {} of the {length} bytes its Content-Length announced",
            body.len()
        ))),
        _ => Ok(body),
    }
}

/// The memory bodies may hold is spent: the rest of this one is not read (tiny_http would
/// drain it), so its connection closes after the answer.
fn no_memory(conn: Option<&Conn>) -> ApiError {
    if let Some(conn) = conn {
        conn.close_after_answers();
    }
    ApiError::Overloaded
}

/// A chunked body that failed to decode, or passed `--max-body` unread, leaves the connection
/// at a place nobody knows: what tiny_http reads next may be a request smuggled inside that body (a trailer
/// it misreads), so nothing more from the connection is acted on.
fn lost_place(conn: Option<&Conn>) {
    if let Some(conn) = conn {
        conn.quarantine();
        log::info(format_args!("unreadable body from {}: nothing more from that connection is acted on", conn.peer()));
    }
}

fn respond(request: Request, reply: Reply) {
    let headers = reply.headers();
    // Held until the answer is written out, whatever the client does.
    let _held = reply.held;
    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    for (name, value) in headers {
        response.add_header(header(name, value));
    }
    // The client may have gone; there is nobody left to tell.
    let _ = request.respond(response);
}

/// Builds a header from a constant name and a value we made (never request data).
fn header(name: &'static str, value: String) -> Header {
    Header::from_bytes(name.as_bytes(), value.into_bytes()).expect("our headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_a_500_for_that_request_only() {
        let reply = answer(|| panic!("a handler bug"));
        assert_eq!(reply.status, 500);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"], "internal_error");
        assert_eq!(answer(|| Reply::error(&ApiError::NotFound("x".into()))).status, 404);
    }

    #[test]
    fn panicking_handlers_keep_the_pool_at_its_size() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let options = HttpOptions {
            threads: 2,
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(5),
            token: None,
            socket_dirs: Vec::new(),
        };
        let handler = |head: Head<'_>, _: Box<dyn FnOnce() -> Result<ReadBody, ApiError> + '_>| {
            assert!(head.url != "/panic", "a handler bug");
            Reply::error(&ApiError::NotFound(head.url.into()))
        };
        let server = HttpServer::start_with(listener, options, Box::new(handler)).unwrap();
        let base = format!("http://{}", server.addr());
        let status = |path: &str| match ureq::get(&format!("{base}{path}")).call() {
            Ok(response) => response.status(),
            Err(ureq::Error::Status(status, _)) => status,
            Err(error) => panic!("{error}"),
        };
        // More panics than threads: a thread lost per panic would leave none to answer.
        for _ in 0..6 {
            assert_eq!(status("/panic"), 500);
        }
        for _ in 0..6 {
            assert_eq!(status("/fine"), 404);
        }
        server.stop();
    }

    /// A client may send refused framings as fast as it likes: one record a second at most,
    /// counting the rest, so the log (written under a pump's turn lock) keeps up.
    #[test]
    fn refused_framings_are_logged_once_a_second() {
        let mut throttle = log::Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        let records: Vec<String> = (0..40u64)
            .filter_map(|ms| framing_record(&mut throttle, start + Duration::from_millis(ms * 50), &"1.2.3.4:5"))
            .collect();
        assert_eq!(records.len(), 2, "{records:?}");
        assert!(records[0].ends_with("nothing more from that connection is acted on"), "{records:?}");
        assert!(records[1].ends_with("acted on (19 more since the last such record)"), "{records:?}");
    }
}
