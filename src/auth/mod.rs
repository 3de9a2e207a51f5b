//! Identity and access. Every route declares in the OpenAPI document the scope it needs (or
//! none); the middleware here finds who the caller is, from a bearer token, the load
//! balancer's signed sign-in data or the form's session cookie, and lets the request through
//! only with that scope. A route that declares nothing is refused.

mod access;
pub mod alb;
mod caller;
mod deferred;
pub mod secret;
pub mod session;

pub(crate) use access::is_documentation;
pub use access::{Access, Needs};
pub use caller::{Caller, Identity};
pub use deferred::{Asker, Deferred, TakesAsker, takes_the_token};

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::domain::{Scope, Stored, Token, TokenName, now};
use crate::error::AppError;
use crate::memo::Memo;
use crate::store::Record;
use crate::store::{Store, StoreError};
use crate::telemetry::prometheus::Metrics;

/// How identity is checked, from the configuration.
pub struct Auth {
    /// `false` only with `ENC_AUTH=off`: everyone is an administrator.
    pub required: bool,
    /// SHA-256 of `ENC_BOOTSTRAP_TOKEN`: always accepted as `admin`.
    bootstrap: Option<[u8; 32]>,
    pub alb: Option<alb::Alb>,
    pub metrics_token_required: bool,
    pub access: Access,
    /// When each token's last use was last written, so it is written at most once a minute.
    touched: Mutex<HashMap<String, Instant>>,
    /// Tokens as decoded from their records, per version of the record (read every time).
    tokens: Memo<Arc<Stored<Token>>>,
}

/// Bytes of decoded tokens kept, at most.
const TOKENS_BUDGET: usize = 1024 * 1024;

/// What every refused load balancer sign-in answers.
const ALB_REFUSED: &str = "the load balancer's sign-in data is not valid: sign in again";

/// How often a token's `last_used_at` is written at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Why a request has no identity.
#[derive(Debug)]
enum Refused {
    Malformed(&'static str),
    Unknown,
    Expired,
    Alb(alb::AlbError),
    Store(StoreError),
}

impl Refused {
    fn outcome(&self) -> &'static str {
        match self {
            Refused::Malformed(_) => "malformed",
            Refused::Unknown => "unknown",
            Refused::Expired => "expired",
            Refused::Alb(_) => "alb_invalid",
            Refused::Store(_) => "unavailable",
        }
    }

    fn into_error(self) -> AppError {
        match self {
            Refused::Malformed(why) => AppError::Unauthorized(why.to_owned()),
            Refused::Unknown => AppError::Unauthorized("the token is unknown or revoked".into()),
            Refused::Expired => AppError::Unauthorized("the token has expired".into()),
            // Its own outage, not the caller's fault; said without the endpoint's address.
            Refused::Alb(e @ alb::AlbError::KeyUnavailable) => AppError::Overloaded(e.to_string()),
            // One text whatever was wrong (signer, key, signature, expiry): a prober learns
            // nothing from the difference. The outcome metric and the log keep the reason.
            Refused::Alb(e) => {
                tracing::info!(reason = %e, "load balancer sign-in data refused");
                AppError::Unauthorized(ALB_REFUSED.into())
            }
            Refused::Store(e) => e.into(),
        }
    }
}

impl Auth {
    pub fn new(
        required: bool,
        bootstrap: Option<&str>,
        alb: Option<alb::Alb>,
        metrics_token_required: bool,
        access: Access,
    ) -> Self {
        Self {
            required,
            bootstrap: bootstrap.map(secret::sha256),
            alb,
            metrics_token_required,
            access,
            touched: Mutex::default(),
            tokens: Memo::new(TOKENS_BUDGET),
        }
    }

    /// The identity a secret stands for: the bootstrap secret, or a stored token.
    async fn token(
        &self,
        store: &Store,
        presented: &str,
    ) -> Result<(Identity, Option<Arc<Stored<Token>>>), Refused> {
        // Hashed once: compared with the bootstrap secret's digest and the stored token's.
        let digest = secret::sha256(presented);
        if let Some(bootstrap) = &self.bootstrap
            && secret::matches(&digest, bootstrap)
        {
            return Ok((Identity::admin("bootstrap"), None));
        }
        let name = secret::token_name(presented)
            .ok_or(Refused::Malformed("the bearer token is not an enc token"))?;
        let record = match store.token_record(&name).await {
            Ok(record) => Some(record),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(Refused::Store(e)),
        };
        let stored = self.stored_token(&digest, &name, record.as_ref())?;
        Ok((identity_of(&stored), Some(stored)))
    }

    /// The token `record` (read for the token `name`) if the presented secret (its `digest`)
    /// is its secret and it has not expired.
    fn stored_token(
        &self,
        digest: &[u8; 32],
        name: &TokenName,
        record: Option<&Record>,
    ) -> Result<Arc<Stored<Token>>, Refused> {
        let record = record.ok_or(Refused::Unknown)?;
        let stored = self
            .tokens
            .get(name.as_str(), 0, &record.body, || {
                let token: Stored<Token> = crate::store::decode(record)?;
                Ok((Arc::new(token), record.body.len() * 2))
            })
            .map_err(Refused::Store)?;
        if !secret::matches_hex(digest, &stored.item.secret_sha256) {
            return Err(Refused::Unknown);
        }
        if stored.item.expired(now()) {
            return Err(Refused::Expired);
        }
        Ok(stored)
    }

    /// Who the request is from, if it says; `Err` when what it says is not good.
    async fn identify(
        &self,
        ground: Ground<'_>,
        headers: &HeaderMap,
        route: &str,
    ) -> Result<Option<Identity>, Refused> {
        if !self.required {
            return Ok(Some(Identity::admin("anonymous")));
        }
        let presented = match headers.get(header::AUTHORIZATION) {
            Some(value) => {
                let value = value
                    .to_str()
                    .map_err(|_| Refused::Malformed("the Authorization header is not text"))?;
                let (scheme, token) = value.split_once(' ').ok_or(Refused::Malformed(
                    "the Authorization header is not `Bearer <token>`",
                ))?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(Refused::Malformed("only Bearer tokens are accepted"));
                }
                Some(token.trim().to_owned())
            }
            None => None,
        };
        if let Some(token) = presented {
            let (identity, stored) = self.token(ground.store, &token).await?;
            if let Some(stored) = stored {
                self.touch(ground, stored);
            }
            return Ok(Some(identity));
        }
        if let (Some(alb), Some(data)) = (&self.alb, headers.get(alb::HEADER)) {
            let data = data
                .to_str()
                .map_err(|_| Refused::Alb(alb::AlbError::Malformed))?;
            let user = alb
                .verify(data, now().timestamp())
                .await
                .map_err(Refused::Alb)?;
            return Ok(Some(Identity {
                actor: user.name.clone(),
                scopes: alb.rules.scopes(&user),
                person: Some(user.name),
                clusters: None,
            }));
        }
        if session::accepted_on(route)
            && session::same_site(headers)
            && let Some(id) = session::cookie(headers)
        {
            // A stale cookie is as good as none: the page asks to sign in again.
            return self.session(ground, &id).await;
        }
        Ok(None)
    }

    /// Writes the token's last use in the background, at most once a minute per token.
    fn touch(&self, ground: Ground<'_>, used: Arc<Stored<Token>>) {
        let at = now();
        let fresh = used
            .item
            .last_used_at
            .is_some_and(|t| (at - t).to_std().is_ok_and(|age| age < TOUCH_EVERY));
        if fresh {
            return;
        }
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        let recent = touched
            .get(used.item.name.as_str())
            .is_some_and(|t| t.elapsed() < TOUCH_EVERY);
        if recent {
            return;
        }
        touched.insert(used.item.name.to_string(), Instant::now());
        let store = ground.store.clone();
        let used = Stored::clone(&used);
        tokio::spawn(async move {
            let name = used.item.name.to_string();
            if let Err(e) = store.touch_token(used, at).await {
                tracing::debug!(token = %name, error = %e, "last use not recorded");
            }
        });
    }
}

/// What checking a caller reads and counts: the store (tokens, sessions, their last uses)
/// and the metrics (each check's outcome).
#[derive(Clone, Copy)]
pub struct Ground<'a> {
    pub store: &'a Arc<Store>,
    pub metrics: &'a Metrics,
}

/// Lets a request through only with the identity and scope its route needs.
pub async fn authorize(
    auth: &Auth,
    ground: Ground<'_>,
    mut request: Request,
    next: Next,
) -> Response {
    // Shared, not copied: the request is gone by the time the route is needed again.
    let Some(matched) = request.extensions().get::<MatchedPath>().cloned() else {
        // No route: the fallback answers 404 and reads nothing.
        return next.run(request).await;
    };
    let route = matched.as_str();
    let mut needs = auth
        .access
        .needs_asked(request.method(), route, request.uri().query());
    if route == "/metrics" && auth.metrics_token_required {
        needs = Some(Needs::Scope(Scope::Read));
    }
    if let Some(deferred) = auth.deferrable(request.method(), request.headers(), route, needs) {
        return deferred.handed_over(request, next).await;
    }
    // An open route reads no credential (a bearer on `/healthz` costs no store read), unless
    // it shows the caller what they may do: the metrics form's pages and sign-in.
    let identity = if needs == Some(Needs::Nothing) && !shows_the_caller(route) {
        Ok(None)
    } else {
        auth.identify(ground, request.headers(), route).await
    };
    let (outcome, denial) = match (needs, identity) {
        (None, _) => (
            "undeclared",
            Some(AppError::Forbidden(format!("{route} declares no scope"))),
        ),
        (Some(Needs::Nothing), Ok(identity)) => {
            if let Some(identity) = identity {
                request.extensions_mut().insert(identity);
            }
            ("open", None)
        }
        (Some(Needs::Nothing), Err(_)) => ("open", None),
        (Some(_), Err(refused)) => (refused.outcome(), Some(refused.into_error())),
        (Some(needs), Ok(None)) => {
            if wants_a_page(request.headers()) && session::accepted_on(route) {
                ground.metrics.auth_outcome("missing");
                return Redirect::to("/sign-in").into_response();
            }
            (
                "missing",
                Some(AppError::Unauthorized(format!(
                    "this needs a token with {needs}: send Authorization: Bearer <token>"
                ))),
            )
        }
        (Some(needs), Ok(Some(identity))) => match verdict(needs, route, identity) {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
                ("ok", None)
            }
            Err((outcome, denial)) => (outcome, Some(denial)),
        },
    };
    ground.metrics.auth_outcome(outcome);
    if let Some(denial) = denial {
        return denial.into_response();
    }
    let actor = request
        .extensions()
        .get::<Identity>()
        .map(|i| i.actor.clone());
    let mut response = next.run(request).await;
    if let Some(actor) = actor {
        response
            .extensions_mut()
            .insert(crate::telemetry::Actor(actor));
    }
    response
}

/// Open routes whose answer depends on who asks: the metrics form's pages (what was saved is
/// shown to those who may see it) and the sign-in page.
fn shows_the_caller(route: &str) -> bool {
    session::accepted_on(route) || route == "/sign-in"
}

fn identity_of(stored: &Stored<Token>) -> Identity {
    Identity {
        actor: stored.item.name.to_string(),
        scopes: stored.item.scopes.clone(),
        person: None,
        clusters: stored.item.clusters.clone(),
    }
}

/// Whether `identity` may do what `needs` says on `route`: the identity, or the metric
/// outcome and the answer that refuses it.
fn verdict(
    needs: Needs,
    route: &str,
    identity: Identity,
) -> Result<Identity, (&'static str, AppError)> {
    if !needs.granted_to(&identity) {
        return Err((
            "forbidden",
            AppError::Forbidden(format!(
                "this needs {needs}; {} has {}",
                identity.actor,
                describe(&identity.scopes)
            )),
        ));
    }
    if identity.clusters.is_some() && needs != Needs::Nothing && !CLUSTER_ROUTES.contains(&route) {
        return Err((
            "forbidden",
            AppError::Forbidden(format!(
                "{} is bound to Puppet clusters: it reaches only their nodes' classifications, \
                 facts and history",
                identity.actor
            )),
        ));
    }
    Ok(identity)
}

/// What a token bound to Puppet clusters may use: one node at a time, each checked against
/// its clusters by the handler.
const CLUSTER_ROUTES: [&str; 4] = [
    "/nodes/{unique_name}",
    "/nodes/{unique_name}/classification",
    "/nodes/{unique_name}/classification/diff",
    "/nodes/{unique_name}/history",
];

fn describe(scopes: &BTreeSet<Scope>) -> String {
    if scopes.is_empty() {
        return "no scopes".to_owned();
    }
    let names: Vec<_> = scopes.iter().map(|s| s.as_str()).collect();
    names.join(", ")
}

/// A browser navigating (it takes HTML), rather than a script.
fn wants_a_page(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}
