//! The size limits of one request, and the checks on its head. Pure; runs on the `http-G-N` and
//! `http-body-N` threads after tiny_http has read the head, and never reads the body.
//!
//! tiny_http 0.12.0 reads the whole request line and every header line into memory before we
//! see the request (1 KiB buffered reads, no limit of its own), and also the whole body when
//! `Content-Length` is at most 1024. So `max_url` and `max_header_bytes` decide what we answer,
//! not what is read: a head is bounded only by the idle timeout between its bytes.

use tiny_http::{HTTPVersion, Header};

use super::error::ApiError;
use crate::config::defaults;

/// Headers that mean one thing, so that sent twice, which one counts would be a guess (tiny_http
/// hands us both and a lookup takes the first; a proxy in front may take the last).
/// `Content-Length` and `Transfer-Encoding` are `framing.rs`'s to refuse, and `Authorization` is
/// `auth.rs`'s (anything but exactly one is a 401). RFC 9112 (3.2) asks for a 400 to two `Host`s.
const SENT_ONCE: [&str; 2] = ["Idempotency-Key", "Host"];

/// The largest `--max-body`: tiny_http 0.12.0 drains a body nobody read to its end into one
/// buffer of its announced length, and an allocation that fails aborts the process.
pub(crate) const BODY_CEILING: usize = 16 << 20;

/// What one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest body, in bytes (413).
    pub max_body: usize,
    /// The most ids in one `POST /ingest` (413).
    pub max_ids: usize,
    /// The longest request target, in bytes (414).
    pub max_url: usize,
    /// The most header bytes, names and values (431).
    pub max_header_bytes: usize,
}

/// The flags' defaults (`config::defaults`).
impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: defaults::MAX_BODY,
            max_ids: defaults::MAX_IDS,
            max_url: defaults::MAX_URL,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
        }
    }
}

impl Limits {
    /// Refuses a URL or a set of headers larger than allowed, then a header that means one thing
    /// (`Idempotency-Key`, `Host`) sent more than once, then an HTTP/1.1 request without `Host`.
    pub(crate) fn check_head(&self, version: &HTTPVersion, url: &str, headers: &[Header]) -> Result<(), ApiError> {
        if url.len() > self.max_url {
            return Err(ApiError::UrlTooLong { limit: self.max_url });
        }
        // As sent: "name: value\r\n".
        let header_bytes: usize = headers.iter().map(|h| h.field.as_str().len() + h.value.len() + 4).sum();
        if header_bytes > self.max_header_bytes {
            return Err(ApiError::HeadersTooLarge { limit: self.max_header_bytes });
        }
        if let Some(name) =
            SENT_ONCE.into_iter().find(|&name| headers.iter().filter(|h| h.field.equiv(name)).count() > 1)
        {
            return Err(ApiError::DuplicateHeader { name });
        }
        match version {
            HTTPVersion(1, 1) if !headers.iter().any(|h| h.field.equiv("Host")) => Err(ApiError::MissingHost),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP_10: HTTPVersion = HTTPVersion(1, 0);
    const HTTP_11: HTTPVersion = HTTPVersion(1, 1);

    #[test]
    fn url_and_header_sizes() {
        let limits = Limits { max_url: 10, max_header_bytes: 20, ..Limits::default() };
        let header = |value: &str| Header::from_bytes(&b"X-A"[..], value.as_bytes()).unwrap();
        assert_eq!(limits.check_head(&HTTP_10, "/0123456789", &[]).unwrap_err().status(), 414);
        assert!(limits.check_head(&HTTP_10, "/012345678", &[header("0123456789012")]).is_ok());
        assert_eq!(limits.check_head(&HTTP_10, "/", &[header("01234567890123")]).unwrap_err().status(), 431);
        assert_eq!(
            limits.check_head(&HTTP_10, "/", &[header("0123456"), header("0123456")]).unwrap_err().status(),
            431
        );
    }

    #[test]
    fn a_header_that_means_one_thing_is_sent_once() {
        let head = |lines: &[(&str, &str)]| -> Vec<Header> {
            lines.iter().map(|(n, v)| Header::from_bytes(n.as_bytes(), v.as_bytes()).unwrap()).collect()
        };
        let check = |lines: &[(&str, &str)]| Limits::default().check_head(&HTTP_11, "/ingest", &head(lines));
        assert!(check(&[("Host", "h"), ("Idempotency-Key", "a"), ("X-Other", "b"), ("X-Other", "c")]).is_ok());
        for twice in
            [[("Idempotency-Key", "a"), ("Idempotency-Key", "b")], [("idempotency-key", "a"), ("IDEMPOTENCY-KEY", "a")]]
        {
            let error = check(&twice).unwrap_err();
            assert_eq!((error.status(), error.code()), (400, "duplicate_header"), "{twice:?}");
            assert_eq!(error.to_string(), "the Idempotency-Key header was sent more than once; send it once");
        }
        let error = check(&[("Host", "a"), ("X-Other", "b"), ("host", "a")]).unwrap_err();
        assert_eq!(error.to_string(), "the Host header was sent more than once; send it once");
    }

    #[test]
    fn an_http_11_request_names_its_host() {
        let host = [Header::from_bytes(&b"host"[..], &b"localhost"[..]).unwrap()];
        let other = [Header::from_bytes(&b"X-Host"[..], &b"localhost"[..]).unwrap()];
        let check = |version: HTTPVersion, headers: &[Header]| Limits::default().check_head(&version, "/", headers);
        assert!(check(HTTP_11, &host).is_ok());
        assert!(check(HTTP_10, &other).is_ok(), "HTTP/1.0 has no Host requirement");
        for headers in [&other[..], &[]] {
            let error = check(HTTP_11, headers).unwrap_err();
            assert_eq!((error.status(), error.code()), (400, "missing_host"));
        }
    }
}
