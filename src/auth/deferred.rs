//! A token checked by its route's handler, in the store read the handler makes anyway (the
//! node, or everything its classification needs): an agent run's request costs one store
//! call. `authorize` hands such a token over as a [`Deferred`], which the handler receives
//! in an [`Asker`]: a read made with the token's record is handed back only by
//! [`Auth::admitted`], once the token is admitted, and the checks themselves are private
//! here. The router holds each such route's handler to take the `Asker` ([`takes_the_token`]:
//! a compile error otherwise), and a handler that answers without either (not reading
//! through `admitted`, nor refusing through [`Auth::refuse`]) has its answer replaced by a
//! 500.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Auth, Ground, Identity, Needs, identity_of, now, secret, verdict};
use crate::domain::TokenName;
use crate::error::AppError;
use crate::store::Record;
use crate::store::StoreError;

/// Who asks, on a route whose handler may check the token itself.
#[derive(Debug, Clone)]
pub enum Asker {
    /// `authorize` checked the caller (`None`: nobody signed in, on an open route).
    Known(Option<Identity>),
    /// The token is the handler's to check, with the read it makes anyway.
    Deferred(Deferred),
}

impl<S: Send + Sync> FromRequestParts<S> for Asker {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(match parts.extensions.get::<Deferred>() {
            Some(deferred) => Asker::Deferred(deferred.clone()),
            None => Asker::Known(parts.extensions.get::<Identity>().cloned()),
        })
    }
}

/// A bearer token `authorize` left for the route's handler to check with its own store read.
/// The handler gets what it read only through [`Auth::admitted`], which checks the token
/// first and answers 401 or 403 before anything is revealed; a malformed request is refused
/// through [`Auth::refuse`], after the token is checked alone.
#[derive(Debug, Clone)]
pub struct Deferred {
    name: TokenName,
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
    /// Set by every check of the token: `authorize` refuses to send an answer made without it.
    checked: AtomicBool,
    /// Who was admitted, for the request's log event.
    admitted: OnceLock<String>,
}

/// Routes whose GET handlers check a stored token themselves, in the read they make anyway:
/// the classification, asked for on every agent run of every node, and the node itself
/// (and the classification's POST, an agent run's facts). Their handlers are held by
/// [`takes_the_token`] to take an [`Asker`].
const DEFERRED_ROUTES: [&str; 2] = [
    "/nodes/{unique_name}/classification",
    "/nodes/{unique_name}",
];

/// The arguments of a handler that takes an [`Asker`] right after its state (axum's
/// `Handler<T, S>` names them `(M, T1, …, Tn)`).
pub trait TakesAsker {}

macro_rules! takes_asker {
    ($($rest:ident),*) => {
        impl<M, X, $($rest,)*> TakesAsker for (M, State<X>, Asker, $($rest,)*) {}
    };
}
takes_asker!();
takes_asker!(A);
takes_asker!(A, B);
takes_asker!(A, B, C);
takes_asker!(A, B, C, D);
takes_asker!(A, B, C, D, E);
takes_asker!(A, B, C, D, E, F);

/// Holds the handler of a route in [`DEFERRED_ROUTES`] to take the token left to it: a handler
/// that stopped taking its [`Asker`] does not compile, rather than answering 500.
pub fn takes_the_token<S, T: TakesAsker, H: Handler<T, S>>(_: H) {}

impl Deferred {
    /// The token's name, for the read that fetches its record with the handler's data.
    pub fn token(&self) -> &TokenName {
        &self.name
    }

    /// Runs the request's handler, which must check the token: an answer made without
    /// checking it does not go out (500).
    pub(super) async fn handed_over(self, mut request: Request, next: Next) -> Response {
        let (check, route) = (self.check.clone(), self.route);
        request.extensions_mut().insert(self);
        let mut response = next.run(request).await;
        if let Some(actor) = check.admitted.get() {
            response
                .extensions_mut()
                .insert(crate::telemetry::Actor(actor.clone()));
        }
        if !check.checked.load(Ordering::Acquire) {
            return AppError::Internal(
                format!("{route} answered without checking its token").into(),
            )
            .into_response();
        }
        response
    }
}

impl Auth {
    /// What a handler read with the token's record (`read`, one store call answering the
    /// data and the record, `None` if there is no such token), yielded only once the token is
    /// admitted, as `authorize` would admit it: the same answers, metrics and last-use
    /// writes. A failed read is answered as `authorize` answers when it cannot read a token.
    pub async fn admitted<T>(
        &self,
        ground: Ground<'_>,
        deferred: Deferred,
        read: impl Future<Output = Result<(T, Option<Record>), StoreError>>,
    ) -> Result<(T, Identity), AppError> {
        let (data, token) = read
            .await
            .map_err(|e| self.unreadable(ground, &deferred, e))?;
        let identity = self.admit(ground, &deferred, token.as_ref())?;
        Ok((data, identity))
    }

    /// The answer to a malformed request on a deferred route: the token checked alone
    /// first, so that a caller without a good token learns nothing from the refusal.
    pub async fn refuse(&self, ground: Ground<'_>, deferred: Deferred, e: AppError) -> AppError {
        match self.admit_alone(ground, &deferred).await {
            Ok(_) => e,
            Err(refused) => refused,
        }
    }

    /// Checks a token whose check `authorize` left to the handler ([`Deferred`]), with the
    /// token's record the handler read (`None`: it does not exist), as `authorize` would
    /// have: the same answers, metrics and last-use writes.
    fn admit(
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
    async fn admit_alone(
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
    fn unreadable(&self, ground: Ground<'_>, deferred: &Deferred, e: StoreError) -> AppError {
        deferred.check.checked.store(true, Ordering::Release);
        ground.metrics.auth_outcome("unavailable");
        e.into()
    }

    /// A stored token presented on a route whose handler reads it together with what it
    /// answers (one store call): `None` when the request is checked here as usual.
    pub(super) fn deferrable(
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
}
