//! Every error the API answers with, and the one place that maps them to status codes.

use std::fmt;

/// A request the API refuses, with a detail written for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The body is empty or is not JSON.
    InvalidJson(String),
    /// The body is JSON but not an object, or a field is missing or of the wrong type.
    InvalidBody(String),
    /// `ids` is empty or holds something other than an integer in 1..=1000000007.
    InvalidIds(String),
    /// `priority` is a string other than `HIGH`, `MEDIUM` or `LOW`.
    InvalidPriority(String),
    /// The body is longer than the server accepts.
    BodyTooLarge { limit: usize },
    /// No such route, or no such ingestion.
    NotFound(String),
    /// The route exists but not for this method; `allow` lists the methods it takes.
    MethodNotAllowed { method: String, allow: &'static str },
    /// The `Idempotency-Key` header is empty, too long or not printable ASCII.
    InvalidIdempotencyKey,
    /// A header that means one thing was sent more than once: which one counts would be a guess.
    DuplicateHeader { name: &'static str },
    /// An HTTP/1.1 request without a `Host` header, which RFC 9112 (3.2) asks a server to refuse.
    MissingHost,
    /// The service is stopping and takes no new requests.
    ShuttingDown,
    /// The service is at capacity: it holds as many connections as its open-files limit lets
    /// it, or cannot reach its HTTP workers for a moment (answered by the relay, which then
    /// closes the connection), or answers not yet read by their clients, or bodies being read,
    /// hold all the memory they may.
    Overloaded,
    /// The journal could not save the request; nothing was accepted.
    Unsaved(String),
    /// `GET /health` in durable mode while the journal cannot write (`error`, since `since`):
    /// nothing is accepted or released until it can. Same code as [`ApiError::Unsaved`].
    StorageUnavailable { error: String, since: String },
    /// The request's framing is ambiguous (CVE-2026-66752/66753 shapes): a Transfer-Encoding
    /// other than `chunked`, Transfer-Encoding with Content-Length, a repeated or malformed
    /// Content-Length, a control character in a header, or a head line ending in a bare LF.
    BadFraming(String),
    /// An earlier request on this connection had ambiguous framing; nothing more from it is acted on.
    ConnectionRejected,
    /// `ids` holds more ids than one request may carry.
    TooManyIds { count: usize, limit: usize },
    /// The queue holds as many ids as it may; `retry_after` is when enough will have drained.
    QueueFull { retry_after_secs: u64 },
    /// The URL is longer than the server accepts.
    UrlTooLong { limit: usize },
    /// The request's headers are larger than the server accepts.
    HeadersTooLarge { limit: usize },
    /// The request's head or body did not arrive in full within the idle timeout.
    RequestTimeout,
    /// A token is required (`--token`) and the request has none, or (`wrong_token`) another one.
    Unauthorized { wrong_token: bool },
    /// A browser sent a request that changes something from a page of another site
    /// (`Sec-Fetch-Site`), as cross-site request forgery does.
    CrossSite,
    /// A bug on our side; the request may be retried.
    Internal,
    /// The request line names an HTTP version other than 1.0 and 1.1 (HTTP/2 prior knowledge,
    /// for one); answered by the relay, which then closes the connection.
    VersionNotSupported,
    /// The request line or a header line cannot be parsed (`what` says how); answered by the
    /// relay, which then closes the connection.
    MalformedRequest { what: &'static str },
    /// An `Expect` header other than `100-continue`; answered by the relay, which then closes
    /// the connection.
    ExpectationFailed,
}

impl ApiError {
    pub(crate) fn status(&self) -> u16 {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::InvalidBody(_)
            | ApiError::InvalidIds(_)
            | ApiError::InvalidPriority(_)
            | ApiError::InvalidIdempotencyKey
            | ApiError::DuplicateHeader { .. }
            | ApiError::MissingHost
            | ApiError::BadFraming(_)
            | ApiError::ConnectionRejected
            | ApiError::MalformedRequest { .. } => 400,
            ApiError::Unauthorized { .. } => 401,
            ApiError::CrossSite => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::RequestTimeout => 408,
            ApiError::BodyTooLarge { .. } | ApiError::TooManyIds { .. } => 413,
            ApiError::UrlTooLong { .. } => 414,
            ApiError::ExpectationFailed => 417,
            ApiError::HeadersTooLarge { .. } => 431,
            ApiError::Internal => 500,
            ApiError::ShuttingDown
            | ApiError::Overloaded
            | ApiError::Unsaved(_)
            | ApiError::StorageUnavailable { .. }
            | ApiError::QueueFull { .. } => 503,
            ApiError::VersionNotSupported => 505,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::InvalidIds(_) => "invalid_ids",
            ApiError::InvalidPriority(_) => "invalid_priority",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ApiError::DuplicateHeader { .. } => "duplicate_header",
            ApiError::MissingHost => "missing_host",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Overloaded => "overloaded",
            ApiError::Unsaved(_) | ApiError::StorageUnavailable { .. } => "storage_unavailable",
            ApiError::BadFraming(_) => "bad_framing",
            ApiError::ConnectionRejected => "connection_rejected",
            ApiError::TooManyIds { .. } => "too_many_ids",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::UrlTooLong { .. } => "url_too_long",
            ApiError::HeadersTooLarge { .. } => "headers_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::CrossSite => "cross_site",
            ApiError::Internal => "internal_error",
            ApiError::VersionNotSupported => "http_version_not_supported",
            ApiError::MalformedRequest { .. } => "malformed_request",
            ApiError::ExpectationFailed => "expectation_failed",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::InvalidJson(detail)
            | ApiError::InvalidBody(detail)
            | ApiError::InvalidIds(detail)
            | ApiError::InvalidPriority(detail)
            | ApiError::NotFound(detail)
            | ApiError::BadFraming(detail) => f.write_str(detail),
            ApiError::InvalidIdempotencyKey => {
                f.write_str("the Idempotency-Key header must be 1 to 255 printable ASCII characters, e.g. a UUID")
            }
            ApiError::DuplicateHeader { name } => {
                write!(f, "the {name} header was sent more than once; send it once")
            }
            ApiError::MissingHost => f.write_str(
                "an HTTP/1.1 request must carry a Host header, e.g. 'Host: localhost:8000'; send it with one",
            ),
            ApiError::ShuttingDown => f.write_str("the service is shutting down; retry in a moment"),
            ApiError::Overloaded => f.write_str(
                "the service is at capacity (open connections, or memory held by answers its clients have not read yet or by bodies being read); retry in a moment",
            ),
            ApiError::Unsaved(why) => write!(f, "{why}; nothing was accepted, retry later"),
            ApiError::StorageUnavailable { error, since } => write!(
                f,
                "the service cannot save to disk since {since} ({error}): new work is refused and no batch is \
                 released until it can; this clears by itself once a write succeeds"
            ),
            ApiError::BodyTooLarge { limit } => {
                write!(f, "the body is larger than {limit} bytes; send fewer ids per request")
            }
            ApiError::MethodNotAllowed { method, allow } => {
                write!(f, "{method} is not allowed here; this route takes {allow}")
            }
            ApiError::ConnectionRejected => f.write_str(
                "an earlier request on this connection had ambiguous framing, so nothing more sent on it is acted on; \
                 open a new connection",
            ),
            ApiError::TooManyIds { count, limit } => {
                write!(f, "ids has {count} ids; one request may carry at most {limit}, so split it into several")
            }
            ApiError::QueueFull { retry_after_secs } => write!(
                f,
                "the queue is full; nothing was accepted, retry in about {retry_after_secs} s (see Retry-After)"
            ),
            ApiError::UrlTooLong { limit } => write!(f, "the URL is longer than {limit} bytes"),
            ApiError::HeadersTooLarge { limit } => {
                write!(f, "the request headers are larger than {limit} bytes in all")
            }
            ApiError::RequestTimeout => {
                f.write_str("the request did not arrive in full within the idle timeout; send it in one go and retry")
            }
            ApiError::Unauthorized { wrong_token: false } => {
                f.write_str("this server requires a token: send the header 'Authorization: Bearer <token>'")
            }
            ApiError::Unauthorized { wrong_token: true } => {
                f.write_str("the token sent is not this server's: check it, then send 'Authorization: Bearer <token>'")
            }
            ApiError::CrossSite => f.write_str(
                "a browser sent this request from a page of another origin (Sec-Fetch-Site: another site, or another port or subdomain of this one); changes are taken only \
                 from this service's own pages and from programs that are not browsers",
            ),
            ApiError::Internal => f.write_str("the server hit an internal error; the request may be retried"),
            ApiError::VersionNotSupported => f.write_str(
                "this server speaks HTTP/1.0 and HTTP/1.1 only; send the request as HTTP/1.1 on a new connection",
            ),
            ApiError::MalformedRequest { what } => {
                write!(f, "{what}; send the request again, well-formed, on a new connection")
            }
            ApiError::ExpectationFailed => {
                f.write_str("the only Expect this server meets is 100-continue; send the request without the header")
            }
        }
    }
}

impl std::error::Error for ApiError {}
