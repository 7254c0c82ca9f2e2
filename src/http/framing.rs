//! Refuses request heads whose body framing tiny_http 0.12.0 would read differently from a proxy
//! in front of us (CVE-2026-66752, CVE-2026-66753). Pure: headers in, a verdict out; run by the
//! pumps (`http-G-N`) as they take each request, before anything acts on it; never reads the body.
//!
//! What tiny_http does with a head (`src/request.rs` of 0.12.0): any Transfer-Encoding, whatever
//! its value, means chunked and Content-Length is then ignored; the first Content-Length wins and
//! one that `usize::from_str` rejects means "no body" (so the body would be read as the next
//! request); header lines end at CRLF only, so a bare CR or LF stays inside a value. Each of those
//! is refused here. A head whose first `Connection` header holds "upgrade" (any case) gets the
//! connection itself as its body, unframed ([`is_upgrade`]): `server.rs` frames a Content-Length
//! body itself, and a chunked one is refused here. Obsolete line folding: tiny_http trims every header line, so a folded line
//! without a colon makes it answer 400 and close by itself, and a folded line with a colon
//! becomes a header of its own that we cannot tell apart; if it names Transfer-Encoding or
//! Content-Length the rules below still apply to it.

use tiny_http::{HTTPVersion, Header};

use super::error::ApiError;

/// Checks the framing headers of one request head.
pub(super) fn check(version: &HTTPVersion, headers: &[Header]) -> Result<(), ApiError> {
    let mut transfer_encodings = 0;
    let mut content_lengths = 0;
    for header in headers {
        let name = header.field.as_str().as_str();
        if !name.bytes().all(is_token_byte) {
            return Err(bad("a header name holds a character that is not allowed in a header name"));
        }
        if header.value.as_str().bytes().any(is_forbidden_in_value) {
            return Err(bad(
                "a header value holds a control character (such as a bare CR or LF); header lines must end with CRLF",
            ));
        }
        if header.field.equiv("Transfer-Encoding") {
            transfer_encodings += 1;
            if !header.value.as_str().eq_ignore_ascii_case("chunked") {
                return Err(bad("Transfer-Encoding must be exactly 'chunked' or absent"));
            }
        } else if header.field.equiv("Content-Length") {
            content_lengths += 1;
            if !is_length(header.value.as_str()) {
                return Err(bad("Content-Length must be a plain decimal number of bytes"));
            }
        }
    }
    match (transfer_encodings, content_lengths) {
        (1, _) if is_upgrade(headers) => {
            Err(bad("Transfer-Encoding with Connection: upgrade (this server upgrades nothing); send Content-Length"))
        }
        (t, _) if t > 1 => Err(bad("Transfer-Encoding appears more than once; send it once")),
        (_, c) if c > 1 => Err(bad("Content-Length appears more than once; send it once")),
        (1, 1) => Err(bad("Transfer-Encoding and Content-Length were both sent; send only one of them")),
        (1, 0) if *version < HTTPVersion(1, 1) => {
            Err(bad("Transfer-Encoding is not part of HTTP/1.0; send Content-Length instead"))
        }
        _ => Ok(()),
    }
}

/// Whether tiny_http takes the request for a protocol upgrade: then its body reader is the
/// connection itself, unframed (it reads until the client closes), and it reads no request after
/// this one on the connection. We upgrade nothing: the request is answered as HTTP/1.1 (RFC 9110
/// allows ignoring `Upgrade`), and the connection then closes.
pub(super) fn is_upgrade(headers: &[Header]) -> bool {
    let connection = headers.iter().find(|h| h.field.equiv("Connection"));
    connection.is_some_and(|h| h.value.as_str().to_ascii_lowercase().contains("upgrade"))
}

fn bad(why: &str) -> ApiError {
    ApiError::BadFraming(format!(
        "the request's framing is ambiguous: {why}; nothing more sent on this connection will be acted on"
    ))
}

/// An HTTP token (RFC 9110, 5.6.2): a method or a header name.
pub(crate) fn is_token(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(is_token_byte)
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// The bytes a token may hold, by value (looked up for every header of every request).
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let symbols = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < symbols.len() {
        table[symbols[i] as usize] = true;
        i += 1;
    }
    table
};

/// Control characters other than horizontal tab, and DEL.
fn is_forbidden_in_value(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Digits only, and few enough to fit in a `usize` (tiny_http reads a longer one as "no body").
fn is_length(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value.parse::<usize>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_head(version: (u8, u8), lines: &[(&str, &str)], ok: bool) {
        let headers: Vec<Header> =
            lines.iter().map(|(n, v)| Header::from_bytes(n.as_bytes(), v.as_bytes()).unwrap()).collect();
        let verdict = check(&HTTPVersion(version.0, version.1), &headers);
        assert_eq!(verdict.is_ok(), ok, "{lines:?}: {verdict:?}");
        if let Err(error) = verdict {
            assert_eq!((error.status(), error.code()), (400, "bad_framing"));
        }
    }

    #[test]
    fn plain_framing_passes() {
        check_head((1, 1), &[("Host", "x"), ("Content-Length", "12")], true);
        check_head((1, 1), &[("Transfer-Encoding", "chunked")], true);
        check_head((1, 1), &[("transfer-encoding", "Chunked")], true);
        check_head((1, 0), &[("Content-Length", "0")], true);
        check_head((1, 1), &[("X-Note", "tab\tinside is fine")], true);
        check_head((1, 1), &[], true);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        check_head((1, 1), &[("Transfer-Encoding", "gzip")], false);
        check_head((1, 1), &[("Transfer-Encoding", "gzip, chunked")], false);
        check_head((1, 1), &[("Transfer-Encoding", "chunked, chunked")], false);
        check_head((1, 1), &[("Transfer-Encoding", "xchunked")], false);
        check_head((1, 1), &[("Transfer-Encoding", "")], false);
        check_head((1, 1), &[("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")], false);
        check_head((1, 1), &[("Transfer-Encoding", "chunked"), ("Content-Length", "5")], false);
        check_head((1, 1), &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")], false);
        check_head((1, 1), &[("Content-Length", "5"), ("Content-Length", "5")], false);
        check_head((1, 1), &[("Content-Length", "5"), ("content-length", "6")], false);
        check_head((1, 0), &[("Transfer-Encoding", "chunked")], false);
        // An upgrade's body is the raw connection to tiny_http: a chunked one cannot be framed.
        check_head((1, 1), &[("Connection", "Upgrade"), ("Transfer-Encoding", "chunked")], false);
        check_head((1, 1), &[("Connection", "keep-alive, upgrade"), ("Transfer-Encoding", "chunked")], false);
        check_head((1, 1), &[("Connection", "upgrade"), ("Content-Length", "5")], true);
        // Only the first Connection header counts, as in tiny_http.
        check_head(
            (1, 1),
            &[("Connection", "close"), ("Connection", "upgrade"), ("Transfer-Encoding", "chunked")],
            true,
        );
    }

    #[test]
    fn malformed_lengths_are_refused() {
        for value in ["+5", "-1", "5 ", "0x10", "5,5", "", "99999999999999999999999", "1e3"] {
            check_head((1, 1), &[("Content-Length", value)], false);
        }
    }

    #[test]
    fn control_characters_in_headers_are_refused() {
        check_head((1, 1), &[("X-A", "a\nTransfer-Encoding: chunked")], false);
        check_head((1, 1), &[("X-A", "a\rb")], false);
        check_head((1, 1), &[("X-A", "a\0b")], false);
        check_head((1, 1), &[("X-A", "a\x7fb")], false);
        check_head((1, 1), &[("X-A\x01", "a")], false);
        check_head((1, 1), &[("X(A)", "a")], false);
    }
}
