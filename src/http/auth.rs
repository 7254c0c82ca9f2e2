//! The optional bearer token (`--token` / `INGESTD_TOKEN`). Pure; runs on the `http-G-N` and
//! `http-body-N` threads before a route is served. Never logs or echoes a token, and compares it in constant time.

use tiny_http::Header;

use super::error::ApiError;

/// Requires exactly one `Authorization: Bearer <token>` header carrying `token`.
pub(super) fn check(token: &str, headers: &[Header]) -> Result<(), ApiError> {
    let mut values = headers.iter().filter(|h| h.field.equiv("Authorization")).map(|h| h.value.as_str());
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::Unauthorized { wrong_token: false });
    };
    let sent = match value.split_once(' ') {
        Some((scheme, sent)) if scheme.eq_ignore_ascii_case("bearer") => sent.trim_start_matches(' '),
        _ => return Err(ApiError::Unauthorized { wrong_token: false }),
    };
    if same(sent.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized { wrong_token: true })
    }
}

/// Compares in time that depends only on the length of `expected`, not on where `sent` differs.
fn same(sent: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(sent.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        diff |= e ^ sent.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn verdict(lines: &[&str]) -> bool {
        let headers: Vec<Header> =
            lines.iter().map(|v| Header::from_bytes(&b"Authorization"[..], v.as_bytes()).unwrap()).collect();
        check("s3cret", &headers).is_ok()
    }

    #[test]
    fn accepts_only_the_bearer_token() {
        assert!(verdict(&["Bearer s3cret"]));
        assert!(verdict(&["bearer s3cret"]));
        for bad in ["Bearer s3cre", "Bearer s3cret1", "Bearer S3CRET", "Basic s3cret", "s3cret", "Bearer", "Bearer "] {
            assert!(!verdict(&[bad]), "{bad}");
        }
        assert!(!verdict(&[]));
        assert!(!verdict(&["Bearer s3cret", "Bearer s3cret"]));
        let refused = |lines: &[&str]| {
            let headers: Vec<Header> =
                lines.iter().map(|v| Header::from_bytes(&b"Authorization"[..], v.as_bytes()).unwrap()).collect();
            check("s3cret", &headers).unwrap_err()
        };
        assert_eq!(refused(&["Bearer other"]), ApiError::Unauthorized { wrong_token: true });
        assert!(refused(&["Bearer other"]).to_string().starts_with("the token sent is not this server's"));
        assert_eq!(refused(&[]), ApiError::Unauthorized { wrong_token: false });
        assert_eq!(refused(&["Basic s3cret"]), ApiError::Unauthorized { wrong_token: false });
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }
}
