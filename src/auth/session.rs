//! The metrics form's session for people without the load balancer's sign-in: the sign-in
//! page checks a token and starts a session kept in the store (`store::sessions`); the cookie
//! (HttpOnly, SameSite=Strict, Secure over https, expiring) holds only the session's random
//! id, never a token. The session grants only the form's scopes the token had, ends at sign-out,
//! when the token is revoked, after `MAX_AGE_SECONDS`, or idle for `IDLE`. The cookie counts
//! only on the form's own pages and only on same-site requests; the JSON API never reads it.

use axum::http::{HeaderMap, HeaderValue, header};

pub const COOKIE: &str = "enc_session";
/// How long a session lasts: a working day.
pub const MAX_AGE_SECONDS: u64 = 12 * 60 * 60;
/// How long a session may go unused before it ends.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// A new session id: 256 random bits, URL-safe base64 (43 characters). It names no token and
/// looks like none (tokens are `enc_<name>_<secret>`).
pub fn new_id() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The routes a session cookie counts on.
pub fn accepted_on(route: &str) -> bool {
    route == "/metrics-form" || route.starts_with("/metrics-form/")
}

/// The session cookie's id, if the request carries one.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
}

/// Whether the request comes from enc's own pages (or is typed in or scripted), not from
/// another site: `Sec-Fetch-Site`, else `Origin` against `Host`.
pub fn same_site(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match (text("origin"), text("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

/// Whether the browser reached enc over https (directly, or through the load balancer).
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` that starts the session `id`.
pub fn start(id: &str, headers: &HeaderMap) -> String {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECONDS}{secure}")
}

/// The `Set-Cookie` that ends the session.
pub fn end(headers: &HeaderMap) -> String {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        assert!(same_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(same_site(&headers(&[("sec-fetch-site", "none")])));
        assert!(!same_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_site(&headers(&[
            ("origin", "http://enc:8080"),
            ("host", "enc:8080")
        ])));
        assert!(!same_site(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "enc:8080")
        ])));
        assert!(!same_site(&headers(&[
            ("origin", "null"),
            ("host", "enc:8080")
        ])));
        assert!(same_site(&HeaderMap::new()));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; enc_session=enc_x_y; b=2")]);
        assert_eq!(cookie(&h).as_deref(), Some("enc_x_y"));
        assert_eq!(cookie(&headers(&[("cookie", "enc_session=")])), None);
        let set = start("t", &headers(&[("x-forwarded-proto", "https")]));
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.ends_with("Secure")
        );
        assert!(!start("t", &HeaderMap::new()).contains("Secure"));
        assert!(end(&HeaderMap::new()).contains("Max-Age=0"));
    }
}
