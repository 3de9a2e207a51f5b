//! Identity and access. Every route declares in the OpenAPI document the scope it needs (or
//! none); the middleware here finds who the caller is, from a bearer token, the load
//! balancer's signed sign-in data or the form's session cookie, and lets the request through
//! only with that scope. A route that declares nothing is refused.

pub mod alb;
pub mod secret;
pub mod session;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;

use crate::domain::{ClusterName, Scope, Stored, Token, TokenName, now};
use crate::error::AppError;
use crate::memo::Memo;
use crate::metrics::Metrics;
use crate::store::engine::Record;
use crate::store::sessions::{Session, session_name};
use crate::store::{By, Store, StoreError};

/// Who is calling, as the middleware found out.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Recorded on what they write: a token's name, a signed-in person, `bootstrap`.
    pub actor: String,
    pub scopes: BTreeSet<Scope>,
    /// A person signed in through the load balancer: the metrics form's engineer.
    pub person: Option<String>,
    /// A token bound to Puppet clusters reaches only their nodes; `None`: every cluster.
    pub clusters: Option<BTreeSet<ClusterName>>,
}

impl Identity {
    pub fn grants(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|s| s.grants(needed))
    }

    /// Whether it may see and touch nodes of `cluster`.
    pub fn reaches(&self, cluster: &ClusterName) -> bool {
        self.clusters.as_ref().is_none_or(|c| c.contains(cluster))
    }

    fn admin(actor: &str) -> Self {
        Identity {
            actor: actor.to_owned(),
            scopes: BTreeSet::from([Scope::Admin]),
            person: None,
            clusters: None,
        }
    }
}

/// The identity of a request, for handlers; `anonymous` on open routes without one. With the
/// request's id, which its writes' revisions keep.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity, Option<HeaderValue>);

impl Caller {
    pub fn actor(&self) -> &str {
        &self.0.actor
    }

    /// The id of the request (`x-request-id`, as telemetry kept or made it).
    pub fn request_id(&self) -> Option<&str> {
        self.1.as_ref().and_then(|id| id.to_str().ok())
    }

    /// Who writes: the actor, in this request.
    pub fn by(&self) -> By<'_> {
        By {
            request_id: self.request_id(),
            ..By::actor(self.actor())
        }
    }

    /// The same request, as `identity` (a token its handler admitted itself).
    pub fn admitted(&self, identity: Identity) -> Caller {
        Caller(identity, self.1.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let identity = parts
            .extensions
            .get::<Identity>()
            .cloned()
            .unwrap_or_else(|| Identity {
                actor: "anonymous".to_owned(),
                scopes: BTreeSet::new(),
                person: None,
                clusters: None,
            });
        let request_id = parts.headers.get(crate::telemetry::REQUEST_ID).cloned();
        Ok(Caller(identity, request_id))
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    Scope(Scope),
    /// Either scope will do (a classification is read by people and by Puppet servers).
    Either(Scope, Scope),
}

impl Needs {
    /// Whether holding `scope` is enough.
    pub fn granted_by(self, scope: Scope) -> bool {
        match self {
            Needs::Nothing => true,
            Needs::Scope(needed) => scope.grants(needed),
            Needs::Either(one, other) => scope.grants(one) || scope.grants(other),
        }
    }

    fn granted_to(self, identity: &Identity) -> bool {
        identity.scopes.iter().any(|s| self.granted_by(*s))
    }
}

impl std::fmt::Display for Needs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Needs::Nothing => f.write_str("nothing"),
            Needs::Scope(scope) => write!(f, "the scope {scope}"),
            Needs::Either(one, other) => write!(f, "the scope {one} or {other}"),
        }
    }
}

/// Every documented operation's needs, read from the OpenAPI document.
#[derive(Debug, Default)]
pub struct Access {
    /// By route, what each of its methods needs (looked up without a copy of the route).
    routes: HashMap<String, Vec<(Method, Needs)>>,
    /// The writes that take `?dry_run=true` (by route, their methods): previewed, they need
    /// only the scope `plan`.
    previewable: HashMap<String, Vec<Method>>,
}

/// Routes served beside the documented API, open to all: the documentation itself.
pub(crate) fn is_documentation(route: &str) -> bool {
    route == "/api-docs/openapi.json" || route == "/swagger-ui" || route.starts_with("/swagger-ui/")
}

/// `/nodes/` and `/nodes` are one collection.
fn normalized(route: &str) -> &str {
    match route.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => route,
    }
}

impl Access {
    pub fn from_openapi(document: &Value) -> Result<Self, String> {
        let mut access = Access::default();
        let paths = document["paths"]
            .as_object()
            .ok_or("the document has no paths")?;
        for (path, item) in paths {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                let needs = needs_of(operation).map_err(|e| format!("{method} {path}: {e}"))?;
                let methods = access
                    .routes
                    .entry(normalized(path).to_owned())
                    .or_default();
                methods.retain(|(m, _)| *m != method);
                methods.push((method.clone(), needs));
                let dry_run = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == "dry_run" && p["in"] == "query");
                if dry_run && needs == Needs::Scope(Scope::Write) {
                    let methods = access
                        .previewable
                        .entry(normalized(path).to_owned())
                        .or_default();
                    methods.retain(|m| *m != method);
                    methods.push(method);
                }
            }
        }
        Ok(access)
    }

    /// What `method` on the matched `route` needs; `None` for a route nobody declared.
    pub fn needs(&self, method: &Method, route: &str) -> Option<Needs> {
        let route = normalized(route);
        // axum answers HEAD with the GET handler: it needs what GET needs.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let methods = self.routes.get(route);
        if let Some((_, needs)) = methods.into_iter().flatten().find(|(m, _)| m == method) {
            return Some(*needs);
        }
        // Another method on a documented path is answered 405 by the router.
        (methods.is_some() || is_documentation(route)).then_some(Needs::Nothing)
    }

    /// What `method` on `route` needs when asked with `query`: a write previewed
    /// (`dry_run=true`, and no other spelling of it) needs only `plan`, which `write` grants.
    pub fn needs_asked(&self, method: &Method, route: &str, query: Option<&str>) -> Option<Needs> {
        let needs = self.needs(method, route);
        let previewable = self
            .previewable
            .get(normalized(route))
            .is_some_and(|methods| methods.contains(method));
        match needs {
            Some(Needs::Scope(Scope::Write)) if previewable && asks_dry_run(query) => {
                Some(Needs::Scope(Scope::Plan))
            }
            other => other,
        }
    }

    /// The methods a route answers, for `Allow` (HEAD with GET).
    pub fn methods(&self, route: &str) -> Vec<&'static str> {
        let route = normalized(route);
        let mut methods: Vec<&'static str> = self
            .routes
            .get(route)
            .into_iter()
            .flatten()
            .map(|(method, _)| method_name(method))
            .collect();
        if methods.contains(&"GET") {
            methods.push("HEAD");
        }
        methods.sort_unstable();
        methods
    }

    pub fn operations(&self) -> impl Iterator<Item = (&Method, &str, Needs)> {
        self.routes
            .iter()
            .flat_map(|(p, methods)| methods.iter().map(|(m, n)| (m, p.as_str(), *n)))
    }
}

/// Whether a query asks for a dry run as the handler will read it: `dry_run=true`, every time
/// it is named. Any other spelling (`%74rue`, `dry%5Frun`) is not taken for one here: at
/// worst a previewing token is refused, never a write let through.
fn asks_dry_run(query: Option<&str>) -> bool {
    let mut asked = false;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "dry_run" {
            if value != "true" {
                return false;
            }
            asked = true;
        } else if key.contains('%') || key.contains('+') {
            // An encoded name might decode to `dry_run`.
            return false;
        }
    }
    asked
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "OPTIONS",
    }
}

/// An operation's `security`: `[{}]` is open, `[{"bearer": ["scope"]}]` needs the scope.
fn needs_of(operation: &Value) -> Result<Needs, String> {
    let requirements = operation["security"]
        .as_array()
        .ok_or("declares no security (a scope, or `security(())` for none)")?;
    let mut scopes = Vec::new();
    for requirement in requirements {
        let Some(schemes) = requirement.as_object() else {
            return Err("a security requirement is not an object".into());
        };
        if schemes.is_empty() {
            return Ok(Needs::Nothing);
        }
        let names = schemes["bearer"]
            .as_array()
            .ok_or("names no bearer scopes")?;
        for name in names {
            scopes.push(Scope::parse(name.as_str().unwrap_or_default())?);
        }
    }
    match scopes[..] {
        [] => Err("names no scope".into()),
        [one] => Ok(Needs::Scope(one)),
        [one, other] => Ok(Needs::Either(one, other)),
        _ => Err("names more than two scopes".into()),
    }
}

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
        let id = session::new_id();
        let at = now();
        let max_age = chrono::Duration::seconds(session::MAX_AGE_SECONDS as i64);
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
    async fn session(&self, ground: Ground<'_>, id: &str) -> Result<Option<Identity>, Refused> {
        let name = session_name(&secret::sha256_hex(id));
        let Some(stored) = ground.store.session(&name).await.map_err(Refused::Store)? else {
            return Ok(None);
        };
        let at = now();
        let session = &stored.item;
        let idle = (at - session.seen_at)
            .to_std()
            .is_ok_and(|idle| idle > session::IDLE);
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

    /// Checks a token whose check `authorize` left to the handler ([`Deferred`]), with the
    /// token's record the handler read (`None`: it does not exist), as `authorize` would
    /// have: the same answers, metrics and last-use writes.
    pub fn admit(
        &self,
        ground: Ground<'_>,
        deferred: &Deferred,
        record: Option<&Record>,
    ) -> Result<Identity, AppError> {
        deferred.check.checked.store(true, Ordering::Release);
        let checked = self
            .stored_token(&deferred.digest, &deferred.name, record)
            .map(|stored| {
                let identity = identity_of(&stored);
                (identity, stored)
            });
        let admitted = match checked {
            Ok((identity, stored)) => {
                self.touch(ground, stored);
                verdict(deferred.needs, deferred.route, identity)
            }
            Err(refused) => Err((refused.outcome(), refused.into_error())),
        };
        let (outcome, result) = match admitted {
            Ok(identity) => {
                let _ = deferred.check.admitted.set(identity.actor.clone());
                ("ok", Ok(identity))
            }
            Err((outcome, denial)) => (outcome, Err(denial)),
        };
        ground.metrics.auth_outcome(outcome);
        result
    }

    /// [`Auth::admit`] for a handler that could not read the token with its own read.
    pub async fn admit_alone(
        &self,
        ground: Ground<'_>,
        deferred: &Deferred,
    ) -> Result<Identity, AppError> {
        let record = match ground.store.token_record(&deferred.name).await {
            Ok(record) => Some(record),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(self.unreadable(ground, deferred, e)),
        };
        self.admit(ground, deferred, record.as_ref())
    }

    /// The answer when the read that would have checked a deferred token failed: what
    /// `authorize` answers when it cannot read a token (503), counted the same way.
    pub fn unreadable(&self, ground: Ground<'_>, deferred: &Deferred, e: StoreError) -> AppError {
        deferred.check.checked.store(true, Ordering::Release);
        ground.metrics.auth_outcome("unavailable");
        e.into()
    }

    /// A stored token presented on a route whose handler reads it together with what it
    /// answers (one store call): `None` when the request is checked here as usual.
    fn deferrable(
        &self,
        method: &Method,
        headers: &HeaderMap,
        route: &str,
        needs: Option<Needs>,
    ) -> Option<Deferred> {
        let needs = needs.filter(|n| *n != Needs::Nothing)?;
        let route = DEFERRED_ROUTES.into_iter().find(|r| *r == route)?;
        // Reads, and an agent run's facts (one read of the node, its view and the token).
        let read = method == Method::GET
            || method == Method::HEAD
            || (method == Method::POST && route == DEFERRED_ROUTES[0]);
        if !self.required || !read {
            return None;
        }
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        let presented = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let name = secret::token_name(presented)?;
        let digest = secret::sha256(presented);
        if self
            .bootstrap
            .as_ref()
            .is_some_and(|bootstrap| secret::matches(&digest, bootstrap))
        {
            return None;
        }
        // Deferred only when this very secret was a good token when last read: a token not
        // seen yet, or a wrong secret, is checked here first by reading its record alone, so
        // a request whose token is not good reads nothing larger than that record. The
        // handler's read still holds the token record: a token revoked since is refused.
        let known = self.tokens.peek(name.as_str()).is_some_and(|token| {
            secret::matches_hex(&digest, &token.item.secret_sha256) && !token.item.expired(now())
        });
        if !known {
            return None;
        }
        Some(Deferred {
            name,
            digest,
            needs,
            route,
            check: Arc::default(),
        })
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
        let check = deferred.check.clone();
        request.extensions_mut().insert(deferred);
        let mut response = next.run(request).await;
        if let Some(actor) = check.admitted.get() {
            response
                .extensions_mut()
                .insert(crate::telemetry::Actor(actor.clone()));
        }
        if !check.checked.load(Ordering::Acquire) {
            // A handler of a deferred route that never checked the token: nothing it made
            // may go out.
            return AppError::Internal(
                format!("{route} answered without checking its token").into(),
            )
            .into_response();
        }
        return response;
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

/// A bearer token `authorize` left for the route's handler to check with its own store read
/// (see [`Auth::admit`]); the handler answers 401 or 403 before it reveals anything.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub name: TokenName,
    /// The presented secret's digest: the secret itself is not kept.
    digest: [u8; 32],
    needs: Needs,
    route: &'static str,
    /// Shared with `authorize`, which reads it once the handler answered.
    check: Arc<Check>,
}

/// What the handler of a deferred token did with it, for `authorize`.
#[derive(Debug, Default)]
struct Check {
    /// Set by [`Auth::admit`]: `authorize` refuses to send an answer made without it.
    checked: AtomicBool,
    /// Who was admitted, for the request's log event.
    admitted: OnceLock<String>,
}

/// Routes whose GET handlers check a stored token themselves, in the read they make anyway:
/// the classification, asked for on every agent run of every node, and the node itself.
const DEFERRED_ROUTES: [&str; 2] = [
    "/nodes/{unique_name}/classification",
    "/nodes/{unique_name}",
];

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
