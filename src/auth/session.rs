//! The metrics form's session for people without the load balancer's sign-in: the sign-in
//! page checks a token and starts a session kept in the store (`store::sessions`); the cookie
//! (HttpOnly, SameSite=Strict, Secure over https, expiring) holds only the session's random
//! id, never a token. The session grants only the form's scopes the token had, ends at sign-out,
//! when the token is revoked, after `MAX_AGE_SECONDS`, or idle for `IDLE`. The cookie counts
//! only on the form's routes (`/metrics-form` and everything under it, its JSON and CSV
//! answers too) and only on same-site requests; the rest of the API never reads it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};

use super::{Auth, Ground, Identity, Refused, TOUCH_EVERY, secret};
use crate::domain::{Scope, now};
use crate::error::AppError;
use crate::store::sessions::{Session, session_name};
use crate::store::{Store, StoreError};

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

impl Auth {
    /// The identity a secret stands for, for the sign-in page.
    pub async fn sign_in(&self, store: &Store, presented: &str) -> Result<Identity, AppError> {
        self.token(store, presented)
            .await
            .map(|(identity, _)| identity)
            .map_err(Refused::into_error)
    }

    /// Starts a session of the metrics form's pages for the secret `presented`: its id (for
    /// the cookie, never stored) and who it is. The session grants only what the form needs
    /// of what the token has; a token with neither of the form's scopes starts none.
    pub async fn start_session(
        &self,
        ground: Ground<'_>,
        presented: &str,
    ) -> Result<(String, Identity), AppError> {
        let (identity, stored) = self
            .token(ground.store, presented)
            .await
            .map_err(Refused::into_error)?;
        let scopes: BTreeSet<Scope> = [Scope::ActivitiesWrite, Scope::ActivitiesRead]
            .into_iter()
            .filter(|s| identity.grants(*s))
            .collect();
        if scopes.is_empty() {
            return Err(AppError::Unauthorized(
                "the token has neither activities:write nor activities:read, which the form's pages need"
                    .into(),
            ));
        }
        let id = new_id();
        let at = now();
        let max_age = chrono::Duration::seconds(MAX_AGE_SECONDS as i64);
        let record = Session {
            name: session_name(&secret::sha256_hex(&id)),
            actor: identity.actor.clone(),
            token: stored.as_ref().map(|t| t.item.name.clone()),
            token_sha256: Some(match &stored {
                Some(token) => token.item.secret_sha256.clone(),
                None => secret::sha256_hex(presented),
            }),
            scopes: scopes.clone(),
            started_at: at,
            ends_at: at + max_age,
            seen_at: at,
        };
        ground.store.create_session(record).await?;
        if let Some(stored) = stored {
            self.touch(ground, stored);
        }
        let identity = Identity {
            actor: identity.actor,
            scopes,
            person: None,
            clusters: None,
        };
        Ok((id, identity))
    }

    /// Ends the session the cookie `id` names, if any.
    pub async fn end_session(&self, store: &Store, id: &str) -> Result<(), AppError> {
        store
            .end_session(&session_name(&secret::sha256_hex(id)))
            .await?;
        Ok(())
    }

    /// Who the session the cookie `id` names is, if it is still good: not past its end nor
    /// idle too long, and its token (or the bootstrap secret) still the one signed in with.
    /// A session no longer good is ended.
    pub(super) async fn session(
        &self,
        ground: Ground<'_>,
        id: &str,
    ) -> Result<Option<Identity>, Refused> {
        let name = session_name(&secret::sha256_hex(id));
        let Some(stored) = ground.store.session(&name).await.map_err(Refused::Store)? else {
            return Ok(None);
        };
        let at = now();
        let session = &stored.item;
        let idle = (at - session.seen_at)
            .to_std()
            .is_ok_and(|idle| idle > IDLE);
        let mut good = session.ends_at > at && !idle;
        if good {
            good = match &session.token {
                None => self.bootstrap.as_ref().is_some_and(|digest| {
                    session
                        .token_sha256
                        .as_deref()
                        .is_some_and(|signed_in| secret::matches_hex(digest, signed_in))
                }),
                Some(token) => match ground.store.get_token(token).await {
                    Ok(token) => {
                        let same = Some(&token.item.secret_sha256) == session.token_sha256.as_ref();
                        let alive = same && !token.item.expired(at);
                        if alive {
                            self.touch(ground, Arc::new(token));
                        }
                        alive
                    }
                    Err(StoreError::NotFound { .. }) => false,
                    Err(e) => return Err(Refused::Store(e)),
                },
            };
        }
        if !good {
            let store = ground.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.end_session(&name).await {
                    tracing::debug!(error = %e, "an ended session was not removed");
                }
            });
            return Ok(None);
        }
        let identity = Identity {
            actor: session.actor.clone(),
            scopes: session.scopes.clone(),
            person: None,
            clusters: None,
        };
        let fresh = (at - session.seen_at)
            .to_std()
            .is_ok_and(|age| age < TOUCH_EVERY);
        if !fresh {
            let store = ground.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_session(stored, at).await {
                    tracing::debug!(error = %e, "a session's use was not recorded");
                }
            });
        }
        Ok(Some(identity))
    }
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
