//! Refuses a change that a web browser sends on behalf of another site (cross-site request
//! forgery): without it, any page a person has open could POST ids to an ingestd on their
//! machine, as a form or a `fetch` with a plain-text body needs no one's permission. Browsers
//! say where a request comes from in `Sec-Fetch-Site`, which a proxy in front leaves alone (it
//! may rewrite `Host`, so `Origin` is not compared with it); programs that are not browsers send
//! none. Pure; runs on the `http-G-N` and `http-body-N` threads before a route is served.

use tiny_http::Header;

use super::error::ApiError;

/// Methods that change nothing, which any page may send.
const SAFE_METHODS: [&str; 2] = ["GET", "HEAD"];

/// `Sec-Fetch-Site` values of a request a person made on this service's own pages, or typed.
const OWN_SITES: [&str; 2] = ["same-origin", "none"];

/// Lets a request through unless a browser says another site sent it to change something.
pub(super) fn check(method: &str, headers: &[Header]) -> Result<(), ApiError> {
    if SAFE_METHODS.contains(&method) {
        return Ok(());
    }
    let mut sites = headers.iter().filter(|h| h.field.equiv("Sec-Fetch-Site")).map(|h| h.value.as_str());
    match sites.all(|site| OWN_SITES.iter().any(|own| site.eq_ignore_ascii_case(own))) {
        true => Ok(()),
        false => Err(ApiError::CrossSite),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn allowed(method: &str, sites: &[&str]) -> bool {
        let headers: Vec<Header> =
            sites.iter().map(|v| Header::from_bytes(&b"Sec-Fetch-Site"[..], v.as_bytes()).unwrap()).collect();
        let verdict = check(method, &headers);
        if let Err(error) = &verdict {
            assert_eq!((error.status(), error.code()), (403, "cross_site"));
        }
        verdict.is_ok()
    }

    #[test]
    fn a_browser_may_change_things_only_from_this_service_s_own_pages() {
        assert!(allowed("POST", &[]), "not a browser");
        assert!(allowed("POST", &["same-origin"]));
        assert!(allowed("POST", &["none"]), "typed or bookmarked");
        assert!(allowed("POST", &["Same-Origin"]));
        assert!(!allowed("POST", &["cross-site"]));
        assert!(!allowed("POST", &["same-site"]), "another port of this host is another origin");
        assert!(!allowed("POST", &["same-origin", "cross-site"]));
        assert!(!allowed("POST", &["anything else"]));
        assert!(!allowed("DELETE", &["cross-site"]));
        assert!(allowed("GET", &["cross-site"]), "reads change nothing");
        assert!(allowed("HEAD", &["cross-site"]));
    }
}
