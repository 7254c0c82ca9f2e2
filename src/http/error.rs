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
    /// The service is stopping and takes no new requests.
    ShuttingDown,
    /// The journal could not save the request; nothing was accepted.
    Unsaved(String),
    /// A bug on our side; the request may be retried.
    Internal,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::InvalidBody(_)
            | ApiError::InvalidIds(_)
            | ApiError::InvalidPriority(_)
            | ApiError::InvalidIdempotencyKey => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::BodyTooLarge { .. } => 413,
            ApiError::Internal => 500,
            ApiError::ShuttingDown | ApiError::Unsaved(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::InvalidIds(_) => "invalid_ids",
            ApiError::InvalidPriority(_) => "invalid_priority",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Unsaved(_) => "storage_unavailable",
            ApiError::Internal => "internal_error",
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
            | ApiError::NotFound(detail) => f.write_str(detail),
            ApiError::InvalidIdempotencyKey => {
                f.write_str("the Idempotency-Key header must be 1 to 255 printable ASCII characters, e.g. a UUID")
            }
            ApiError::ShuttingDown => f.write_str("the service is shutting down; retry in a moment"),
            ApiError::Unsaved(why) => write!(f, "{why}; nothing was accepted, retry later"),
            ApiError::BodyTooLarge { limit } => {
                write!(f, "the body is larger than {limit} bytes; send fewer ids per request")
            }
            ApiError::MethodNotAllowed { method, allow } => {
                write!(f, "{method} is not allowed here; this route takes {allow}")
            }
            ApiError::Internal => f.write_str("the server hit an internal error; the request may be retried"),
        }
    }
}

impl std::error::Error for ApiError {}
