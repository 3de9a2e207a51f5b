//! What every answer tells browsers. No answer may be sniffed as another type than it says
//! (`X-Content-Type-Options`). An HTML page may not be framed by another site (clickjacking
//! of the form's buttons and of sign-out: `frame-ancestors 'none'`, and `X-Frame-Options`
//! for browsers before it), sends no referrer, and runs only what enc serves:
//!
//! - enc's own pages (the metrics form, its report, sign-in) have no script at all, and one
//!   `<style>` block allowed by its hash (a test keeps the hash equal to the template's);
//! - Swagger UI runs its scripts from enc (`'self'`) and sets styles inline, as React does.
//!
//! [MDN](https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Content-Security-Policy),
//! [OWASP](https://cheatsheetseries.owasp.org/cheatsheets/Clickjacking_Defense_Cheat_Sheet.html).

use axum::http::{HeaderMap, HeaderValue, header};

/// The SHA-256 of the `<style>` block of `templates/base.html`, as CSP wants it.
macro_rules! base_style_sha256 {
    () => {
        "sha256-IFuypEZMLXSCI1CkGYX6rvGFX9LXroHab0o5Pl5q0Zk="
    };
}

/// The policy of enc's own pages.
fn pages_policy() -> HeaderValue {
    HeaderValue::from_static(concat!(
        "default-src 'none'; style-src '",
        base_style_sha256!(),
        "'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ))
}

/// The policy of Swagger UI's pages.
fn swagger_policy() -> HeaderValue {
    HeaderValue::from_static(concat!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; ",
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; ",
        "frame-ancestors 'none'"
    ))
}

/// Adds to an answer's headers what browsers are told: `documentation` when the route is
/// Swagger UI's.
pub(crate) fn tell(headers: &mut HeaderMap, documentation: bool) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let html = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
    if !html {
        return;
    }
    let policy = if documentation {
        swagger_policy()
    } else {
        pages_policy()
    };
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};

    use super::*;

    /// The `<style>` block of the base template, as a browser hashes it.
    fn style_of_base_template() -> String {
        let template = include_str!("templates/base.html");
        let start = template.find("<style>").expect("a <style> block") + "<style>".len();
        let end = template.find("</style>").expect("its end");
        template[start..end].to_owned()
    }

    #[test]
    fn the_pages_policy_allows_exactly_the_base_templates_style() {
        let digest = Sha256::digest(style_of_base_template().as_bytes());
        let hash = format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert_eq!(
            base_style_sha256!(),
            hash,
            "update the hash with the template"
        );
        let policy = pages_policy();
        assert!(
            policy
                .to_str()
                .unwrap()
                .contains(&format!("style-src '{hash}'"))
        );
    }
}
