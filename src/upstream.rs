//! The HTTP upstream (`--upstream`): delivers one id per call to a URL and says what came of it.
//!
//! Runs on the worker thread, its only caller, one call at a time; holds ureq's keep-alive pool
//! and no lock of ours. [`HttpUpstream::deliver`] turns each call into a [`Delivery`]: the
//! [`Outcome`] the retry logic acts on, what happened on the wire ([`Call`], for `/metrics`) and
//! how long it took. It reads the monotonic clock only to time its own calls, never to pace, and
//! never retries by itself: what to do after a failure is the worker's call. (ureq 2 does, once:
//! a `GET` that fails on a kept-alive connection the server had closed is sent again at once on
//! a new one, and counted here as one call. Turning the pool off would cost every call a new
//! connection, and a TLS handshake; the README says so instead.)

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ureq::rustls;
use ureq::rustls::pki_types::pem::PemObject;
use ureq::rustls::pki_types::CertificateDer;
use ureq::{ReadWrite, TlsConnector};

use crate::metrics::CALL_OUTCOMES;
use crate::model::Id;
use crate::worker::{ApiResponse, ExternalApi, FetchError};

/// How each id is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No body.
    Get,
    /// The body `{"id": <id>}`, as JSON.
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A header sent with every call. Its value may be a secret: `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Header({}: …)", self.name)
    }
}

/// Where and how to deliver, as the command line gave it (checked there). `Debug` shows the
/// URL as `redacted` and no header value.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// An http or https URL containing `{id}` after its host.
    pub url: String,
    pub method: Method,
    /// In order; a later header of the same name replaces an earlier one.
    pub headers: Vec<Header>,
    /// Bounds each call as a whole: connecting, sending, the answer and its body.
    pub timeout: Duration,
    /// PEM certificates trusted besides the bundled roots.
    pub ca_file: Option<PathBuf>,
}

impl Target {
    /// The URL of one id's call.
    pub(crate) fn url_for(&self, id: Id) -> String {
        self.url.replace("{id}", &id.to_string())
    }

    /// The URL as the log shows it: `redacted`.
    pub fn shown(&self) -> String {
        redacted(&self.url)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.shown())
            .field("method", &self.method)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// An upstream URL without what may be a secret: everything from its scheme to its last `@`
/// (a user and password, which ureq sends as Basic credentials; a password may hold `/`, `?` or
/// `#` where it should not, so an `@` anywhere counts), and its query (an API key), each shown
/// as `…`. A URL with an `@` in its path or query loses more than its secrets: only in the log.
pub(crate) fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let (user, rest) = match rest.rsplit_once('@') {
        Some((_, after)) => ("…@", after),
        None => ("", rest),
    };
    match rest.split_once('?') {
        Some((before, _)) => format!("{scheme}{user}{before}?…"),
        None => format!("{scheme}{user}{rest}"),
    }
}

/// Why an [`HttpUpstream`] could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// `--upstream-ca` could not be read.
    CaUnreadable { path: PathBuf, error: std::io::Error },
    /// `--upstream-ca` holds no PEM certificate, or one that does not parse.
    CaInvalid { path: PathBuf, why: String },
    /// rustls refused the configuration (does not happen with its own defaults).
    Tls(rustls::Error),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::CaUnreadable { path, error } => {
                write!(f, "--upstream-ca {}: cannot read: {error}", path.display())
            }
            SetupError::CaInvalid { path, why } => write!(f, "--upstream-ca {}: {why}", path.display()),
            SetupError::Tls(error) => write!(f, "cannot set up TLS for the upstream: {error}"),
        }
    }
}

impl std::error::Error for SetupError {}

/// What one call came to, and so what to do with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered 2xx: the id is delivered; never send it again.
    Delivered,
    /// Any 5xx but 503, and 408: retry this id later; go on with the next one now.
    Retry { reason: String },
    /// 429, 503, a timeout or a connection error: the upstream as a whole is in trouble; call
    /// nothing more of this release, retry its undelivered ids later, not before `retry_after`.
    Stop { reason: String, retry_after: Option<RetryAfter> },
    /// Any other 4xx, or a 3xx (redirects are not followed): retrying this id will not help.
    Permanent { reason: String },
}

impl Outcome {
    /// A sentence for a person (`HTTP 503 after 2.1 s`, `timed out after 10 s`), or `None` for
    /// a delivery.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Delivered => None,
            Outcome::Retry { reason } | Outcome::Stop { reason, .. } | Outcome::Permanent { reason } => Some(reason),
        }
    }
}

/// What happened on the wire, for counting calls by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// The upstream answered with this status.
    Answered(u16),
    /// No answer within `--upstream-timeout`.
    TimedOut,
    /// No answer: the connection could not be made or broke (DNS, refused, reset, TLS).
    Failed,
}

impl Call {
    /// The `/metrics` label: `2xx`, `3xx`, `4xx`, `5xx`, `timeout` or `error`.
    pub(crate) fn label(self) -> &'static str {
        CALL_OUTCOMES[self.outcome()]
    }

    /// Its index in [`CALL_OUTCOMES`].
    pub(crate) fn outcome(self) -> usize {
        match self {
            Call::Answered(200..=299) => 0,
            Call::Answered(300..=399) => 1,
            Call::Answered(400..=499) => 2,
            Call::Answered(500..=599) => 3,
            Call::TimedOut => 4,
            Call::Answered(_) | Call::Failed => 5,
        }
    }
}

/// One call: its outcome, what happened on the wire, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub outcome: Outcome,
    pub call: Call,
    pub took: Duration,
}

/// An upstream's `Retry-After`: a delay from its answer, or a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    Delay(Duration),
    At(SystemTime),
}

impl RetryAfter {
    /// Reads delta-seconds (`120`) or an HTTP date in any of its three forms (RFC 9110 §10.2.3).
    pub(crate) fn parse(value: &str) -> Option<RetryAfter> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // Too many digits for a number is a long time: capped by `until` like any other.
            return Some(RetryAfter::Delay(Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))));
        }
        httpdate::parse_http_date(value).ok().map(RetryAfter::At)
    }

    /// The wall-clock instant before which nothing should be sent, for an answer received at
    /// `received`. A date in the past is `received` itself; one more than [`MAX_PAUSE`] away is
    /// that far (a value in the years is a broken upstream, not a plan).
    pub(crate) fn until(self, received: SystemTime) -> SystemTime {
        let latest = received + MAX_PAUSE;
        match self {
            RetryAfter::Delay(delay) => received.checked_add(delay).map_or(latest, |at| at.min(latest)),
            RetryAfter::At(at) => at.clamp(received, latest),
        }
    }
}

/// The longest pause a `Retry-After` makes.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(24 * 3600);

/// Most bytes of an answer's body read (the rest is dropped with its connection). Reading the
/// body to its end is what lets ureq put the connection back in its pool.
const BODY_LIMIT: u64 = 64 << 10;
/// Most characters of a 4xx body quoted in the reason.
const EXCERPT_CHARS: usize = 120;

/// Delivers ids over HTTP(S); implements [`ExternalApi`] for the worker.
pub struct HttpUpstream {
    agent: ureq::Agent,
    target: Target,
    /// The end of the call under way, for the TLS handshake ([`BoundedTls`]).
    deadline: Arc<Deadline>,
}

impl fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpUpstream").field("target", &self.target).finish_non_exhaustive()
    }
}

impl HttpUpstream {
    /// Reads `--upstream-ca` (if any) and sets up the client. Connects to nothing yet.
    pub fn new(target: Target) -> Result<HttpUpstream, SetupError> {
        let deadline = Arc::new(Deadline::default());
        let tls = BoundedTls { tls: tls_config(target.ca_file.as_deref())?, deadline: Arc::clone(&deadline) };
        let agent = ureq::AgentBuilder::new()
            .timeout(target.timeout)
            // ureq's own connect limit (30 s) would otherwise outlast the call's.
            .timeout_connect(target.timeout)
            // A redirect is answered as what it is (a permanent failure), not followed: a
            // followed POST would turn into a GET without its body.
            .redirects(0)
            .user_agent(concat!("ingestd/", env!("CARGO_PKG_VERSION")))
            .tls_connector(Arc::new(tls))
            .build();
        Ok(HttpUpstream { agent, target, deadline })
    }

    /// Makes one call for `id` and classifies it. Blocks at most about `--upstream-timeout`.
    pub fn deliver(&mut self, id: Id) -> Delivery {
        self.call(id)
    }

    fn call(&mut self, id: Id) -> Delivery {
        let started = Instant::now();
        self.deadline.set(started + self.target.timeout);
        let mut request = self.agent.request(self.target.method.as_str(), &self.target.url_for(id));
        for header in &self.target.headers {
            request = request.set(&header.name, &header.value);
        }
        let result = match self.target.method {
            Method::Get => request.call(),
            Method::Post => {
                if !self.target.headers.iter().any(|h| h.name.eq_ignore_ascii_case("content-type")) {
                    request = request.set("Content-Type", "application/json");
                }
                request.send_string(&format!("{{\"id\":{id}}}"))
            }
        };
        let response = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(error)) => {
                let took = started.elapsed();
                let (call, reason) = if timed_out(&error) {
                    (Call::TimedOut, format!("timed out after {}", human(self.target.timeout)))
                } else {
                    (Call::Failed, describe(&error))
                };
                return Delivery { outcome: Outcome::Stop { reason, retry_after: None }, call, took };
            }
        };
        let status = response.status();
        let retry_after = response.header("Retry-After").map(str::to_owned);
        // ureq 2 takes an interim answer (`100 Continue`, `103 Early Hints`) for the final one,
        // with a body up to the close: not read, its connection is dropped, not reused.
        let body = if status >= 200 { read_body(response) } else { Vec::new() };
        let took = started.elapsed();
        let outcome = classify(status, took, retry_after.as_deref(), &body);
        Delivery { outcome, call: Call::Answered(status), took }
    }
}

impl ExternalApi for HttpUpstream {
    /// A delivery is an answer, anything else an error with its reason (the worker uses
    /// [`ExternalApi::deliver`], which keeps the difference between a retry and a stop).
    fn fetch(&mut self, id: Id) -> Result<ApiResponse, FetchError> {
        let delivery = self.call(id);
        match delivery.outcome.reason() {
            None => Ok(ApiResponse { id: u64::from(id), data: format!("HTTP {}", delivery.call.label()) }),
            Some(reason) => Err(FetchError(reason.to_owned())),
        }
    }

    fn deliver(&mut self, id: Id) -> Delivery {
        self.call(id)
    }

    /// Over a network a request reaches the upstream some time before its answer is back.
    fn has_wire(&self) -> bool {
        true
    }
}

/// The outcome of an answer with `status`, after `took`. Pure: the table in the module's doc of
/// [`Outcome`], and the reason a person reads.
pub(crate) fn classify(status: u16, took: Duration, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    let mut reason = format!("HTTP {status} after {}", human(took));
    match status {
        200..=299 => Outcome::Delivered,
        429 | 503 => {
            let parsed = retry_after.and_then(RetryAfter::parse);
            if let (Some(value), Some(_)) = (retry_after, parsed) {
                reason.push_str(&format!(" (Retry-After: {})", value.trim()));
            }
            Outcome::Stop { reason, retry_after: parsed }
        }
        408 | 500..=599 => Outcome::Retry { reason },
        301 | 302 | 303 | 307 | 308 => {
            reason.push_str(": redirects are not followed; point --upstream at the final URL");
            Outcome::Permanent { reason }
        }
        300..=399 => {
            reason.push_str(": not a delivery (only 2xx is)");
            Outcome::Permanent { reason }
        }
        400..=499 => {
            if let Some(excerpt) = excerpt(body) {
                reason.push_str(": ");
                reason.push_str(&excerpt);
            }
            Outcome::Permanent { reason }
        }
        _ => Outcome::Retry { reason: format!("unexpected {reason}") },
    }
}

/// The first non-blank line of a text body, shortened, with control characters replaced, so a
/// person sees the upstream's own words (`HTTP 404 after 3 ms: no such item`).
fn excerpt(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text
        .lines()
        .map(|l| l.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>())
        .find(|l| !l.trim().is_empty())?;
    let line = line.trim();
    let mut out: String = line.chars().take(EXCERPT_CHARS).collect();
    if line.chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    Some(out)
}

/// Reads the body up to [`BODY_LIMIT`]; errors only end the read (the status decides).
fn read_body(response: ureq::Response) -> Vec<u8> {
    let mut body = Vec::new();
    let _ = response.into_reader().take(BODY_LIMIT).read_to_end(&mut body);
    body
}

/// `2.1 s`, `10 s`, `250 ms`, `0.4 ms`: short, and as precise as a person needs.
pub(crate) fn human(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{:.1} ms", ms).replace(".0 ms", " ms")
    } else if ms < 1_000.0 {
        format!("{ms:.0} ms")
    } else if ms < 10_000.0 {
        format!("{:.1} s", ms / 1e3).replace(".0 s", " s")
    } else {
        format!("{:.0} s", ms / 1e3)
    }
}

/// The io errors in a transport error's chain.
fn io_errors(error: &ureq::Transport) -> impl Iterator<Item = &std::io::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    std::iter::from_fn(move || {
        while let Some(current) = next {
            next = current.source();
            if let Some(io) = current.downcast_ref::<std::io::Error>() {
                return Some(io);
            }
        }
        None
    })
}

fn timed_out(error: &ureq::Transport) -> bool {
    io_errors(error).any(|e| matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock))
}

/// A transport error as a person would put it: `connection refused`, `could not resolve
/// api.example.com`, `certificate not trusted …`.
fn describe(error: &ureq::Transport) -> String {
    use std::io::ErrorKind as Io;
    if let Some(tls) = io_errors(error).find_map(|e| e.get_ref()?.downcast_ref::<rustls::Error>()) {
        return describe_tls(tls);
    }
    if error.kind() == ureq::ErrorKind::Dns {
        let host = error.url().and_then(|u| u.host_str()).unwrap_or("the host");
        return format!("could not resolve {host}");
    }
    match io_errors(error).next().map(std::io::Error::kind) {
        Some(Io::ConnectionRefused) => "connection refused".into(),
        Some(Io::ConnectionReset) => "connection reset".into(),
        Some(Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof) => "connection closed before an answer".into(),
        Some(Io::HostUnreachable | Io::NetworkUnreachable) => "upstream unreachable".into(),
        _ => match error.message() {
            Some(message) => format!("{}: {message}", error.kind()),
            None => error.kind().to_string(),
        },
    }
}

fn describe_tls(error: &rustls::Error) -> String {
    use rustls::CertificateError as Cert;
    match error {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer) => {
            "certificate not trusted (unknown issuer); for a private CA, pass --upstream-ca".into()
        }
        rustls::Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => "certificate expired".into(),
        rustls::Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "certificate not valid for the upstream's host name".into()
        }
        rustls::Error::InvalidCertificate(Cert::Other(other)) => format!("certificate not accepted ({other})"),
        other => format!("TLS: {other}"),
    }
}

/// When the call under way must end: set by [`HttpUpstream::call`], read by [`Bounded`] (both
/// on the worker thread, which makes one call at a time).
#[derive(Debug)]
struct Deadline {
    origin: Instant,
    /// Nanoseconds after `origin`.
    at: AtomicU64,
}

impl Default for Deadline {
    fn default() -> Deadline {
        Deadline { origin: Instant::now(), at: AtomicU64::new(0) }
    }
}

impl Deadline {
    fn set(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        self.at.store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn left(&self) -> Duration {
        let at = self.origin + Duration::from_nanos(self.at.load(Ordering::Relaxed));
        at.saturating_duration_since(Instant::now())
    }
}

/// rustls over a stream bounded by the call's deadline. ureq 2 sets the socket's timeouts once
/// before the handshake, and as a timeout per read, each byte restarts it: an upstream that
/// dripped its handshake held the worker, and every release, as long as it liked.
struct BoundedTls {
    tls: Arc<rustls::ClientConfig>,
    deadline: Arc<Deadline>,
}

impl TlsConnector for BoundedTls {
    fn connect(&self, dns_name: &str, io: Box<dyn ReadWrite>) -> Result<Box<dyn ReadWrite>, ureq::Error> {
        self.tls.connect(dns_name, Box::new(Bounded { io, deadline: Arc::clone(&self.deadline) }))
    }
}

/// A connection whose every read and write ends by the deadline of the call under way.
#[derive(Debug)]
struct Bounded {
    io: Box<dyn ReadWrite>,
    deadline: Arc<Deadline>,
}

impl Bounded {
    fn bound(&self) -> io::Result<()> {
        let left = self.deadline.left();
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if let Some(socket) = self.io.socket() {
            socket.set_read_timeout(Some(left))?;
            socket.set_write_timeout(Some(left))?;
        }
        Ok(())
    }
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bound()?;
        self.io.read(buf)
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bound()?;
        self.io.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.bound()?;
        self.io.flush()
    }
}

impl ReadWrite for Bounded {
    fn socket(&self) -> Option<&TcpStream> {
        self.io.socket()
    }
}

/// The bundled Mozilla roots (webpki-roots), plus the PEM certificates in `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, SetupError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        let invalid = |why: String| SetupError::CaInvalid { path: path.to_owned(), why };
        let pem = std::fs::read(path).map_err(|error| SetupError::CaUnreadable { path: path.to_owned(), error })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| invalid(format!("a certificate cannot be used as a root: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const MS3: Duration = Duration::from_millis(3);

    #[track_caller]
    fn check(status: u16, retry_after: Option<&str>, body: &str, expected: Outcome) {
        assert_eq!(classify(status, MS3, retry_after, body.as_bytes()), expected, "{status}");
    }

    fn retry(reason: &str) -> Outcome {
        Outcome::Retry { reason: reason.into() }
    }

    fn stop(reason: &str, retry_after: Option<RetryAfter>) -> Outcome {
        Outcome::Stop { reason: reason.into(), retry_after }
    }

    fn permanent(reason: &str) -> Outcome {
        Outcome::Permanent { reason: reason.into() }
    }

    #[test]
    fn classification() {
        let secs = |s| Some(RetryAfter::Delay(Duration::from_secs(s)));
        check(200, None, "", Outcome::Delivered);
        check(204, Some("5"), "", Outcome::Delivered);
        check(299, None, "", Outcome::Delivered);
        check(500, None, "oops", retry("HTTP 500 after 3 ms"));
        check(502, Some("5"), "", retry("HTTP 502 after 3 ms"));
        check(408, None, "", retry("HTTP 408 after 3 ms"));
        check(503, None, "", stop("HTTP 503 after 3 ms", None));
        check(503, Some("30"), "", stop("HTTP 503 after 3 ms (Retry-After: 30)", secs(30)));
        check(429, Some(" 7 "), "", stop("HTTP 429 after 3 ms (Retry-After: 7)", secs(7)));
        check(429, Some("soon"), "", stop("HTTP 429 after 3 ms", None));
        check(404, None, "", permanent("HTTP 404 after 3 ms"));
        check(404, None, "\n  no such item\nmore", permanent("HTTP 404 after 3 ms: no such item"));
        check(400, None, "bad\tid", permanent("HTTP 400 after 3 ms: bad id"));
        check(422, None, "\u{fffd}", permanent("HTTP 422 after 3 ms: \u{fffd}"));
        check(401, None, "\0\0", permanent("HTTP 401 after 3 ms"));
        check(
            301,
            None,
            "",
            permanent("HTTP 301 after 3 ms: redirects are not followed; point --upstream at the final URL"),
        );
        check(304, None, "", permanent("HTTP 304 after 3 ms: not a delivery (only 2xx is)"));
        check(199, None, "", retry("unexpected HTTP 199 after 3 ms"));
    }

    #[test]
    fn a_binary_or_long_body_is_cut() {
        assert_eq!(excerpt(&[0xff, 0xfe]), None);
        let long = "x".repeat(300);
        let cut = excerpt(long.as_bytes()).unwrap();
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[track_caller]
    fn check_retry_after(value: &str, expected: Option<RetryAfter>) {
        assert_eq!(RetryAfter::parse(value), expected, "{value:?}");
    }

    #[test]
    fn retry_after_values() {
        let at = |secs| Some(RetryAfter::At(UNIX_EPOCH + Duration::from_secs(secs)));
        check_retry_after("120", Some(RetryAfter::Delay(Duration::from_secs(120))));
        check_retry_after("0", Some(RetryAfter::Delay(Duration::ZERO)));
        check_retry_after(" 5\t", Some(RetryAfter::Delay(Duration::from_secs(5))));
        check_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", at(1_445_412_480));
        check_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", at(1_445_412_480));
        check_retry_after("Wed Oct 21 07:28:00 2015", at(1_445_412_480));
        // Valid, only too long for a number: as long as a number gets (then capped by `until`).
        check_retry_after("99999999999999999999999", Some(RetryAfter::Delay(Duration::from_secs(u64::MAX))));
        for bad in ["", "-1", "1.5", "+5", "5s", "soon", "Wed, 32 Oct 2015 07:28:00 GMT"] {
            check_retry_after(bad, None);
        }
    }

    #[test]
    fn retry_after_until() {
        let received = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(RetryAfter::Delay(Duration::from_secs(30)).until(received), received + Duration::from_secs(30));
        let later = received + Duration::from_secs(60);
        assert_eq!(RetryAfter::At(later).until(received), later);
        assert_eq!(RetryAfter::At(UNIX_EPOCH).until(received), received, "a date in the past");
        let day = received + MAX_PAUSE;
        assert_eq!(RetryAfter::Delay(Duration::from_secs(9_000_000_000_000_000_000)).until(received), day);
        assert_eq!(RetryAfter::Delay(Duration::from_secs(u64::MAX)).until(received), day, "past the clock's end");
        assert_eq!(RetryAfter::At(received + 2 * MAX_PAUSE).until(received), day);
    }

    #[test]
    fn durations_for_people() {
        for (ms, text) in [(0.4, "0.4 ms"), (3.0, "3 ms"), (250.0, "250 ms"), (2_100.0, "2.1 s"), (10_000.0, "10 s")] {
            assert_eq!(human(Duration::from_secs_f64(ms / 1e3)), text);
        }
        assert_eq!(human(Duration::from_secs(1)), "1 s");
        assert_eq!(human(Duration::from_secs(95)), "95 s");
    }

    #[test]
    fn labels_for_metrics() {
        let labels: Vec<_> = [200, 302, 404, 503, 99].map(|s| Call::Answered(s).label()).to_vec();
        assert_eq!(labels, ["2xx", "3xx", "4xx", "5xx", "error"]);
        assert_eq!((Call::TimedOut.label(), Call::Failed.label()), ("timeout", "error"));
    }

    #[test]
    fn urls_and_what_the_log_shows() {
        let target = Target {
            url: "https://api.example.com/items/{id}?key=secret&again={id}".into(),
            method: Method::Get,
            headers: vec![Header { name: "Authorization".into(), value: "Bearer s3cret".into() }],
            timeout: Duration::from_secs(10),
            ca_file: None,
        };
        assert_eq!(target.url_for(42), "https://api.example.com/items/42?key=secret&again=42");
        assert_eq!(target.shown(), "https://api.example.com/items/{id}?…");
        assert!(!format!("{target:?}").contains("s3cret") && !format!("{target:?}").contains("secret"));
    }

    #[test]
    fn what_may_be_a_secret_is_redacted() {
        for (url, shown) in [
            ("http://127.0.0.1:9/{id}", "http://127.0.0.1:9/{id}"),
            ("https://user:pa@ss@api.example.com/i/{id}?k=1", "https://…@api.example.com/i/{id}?…"),
            ("https://token@api.example.com", "https://…@api.example.com"),
            ("http://h/a@b/{id}", "http://…@b/{id}"),
            ("http://u:p@h/{id}#x@y", "http://…@y"),
            ("http://user:se#cret@h/{id}", "http://…@h/{id}"),
            ("http://user:se/cret@h/{id}", "http://…@h/{id}"),
            ("http://user:se?cret@h/{id}", "http://…@h/{id}"),
            ("not a url?key=1", "not a url?…"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("ingestd-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = tls_config(Some(&path)).unwrap_err().to_string();
        assert!(error.starts_with("--upstream-ca ") && error.contains("holds no PEM certificate"), "{error}");
        let missing = tls_config(Some(&dir.join("missing.pem"))).unwrap_err().to_string();
        assert!(missing.contains("cannot read"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(tls_config(None).is_ok());
    }
}
