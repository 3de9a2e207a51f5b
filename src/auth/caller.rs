//! Who calls, as handlers see it.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;

use crate::domain::{ClusterName, Scope};
use crate::error::AppError;
use crate::store::Edit;

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

    pub(super) fn admin(actor: &str) -> Self {
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
    pub fn by(&self) -> Edit<'_> {
        Edit {
            request_id: self.request_id(),
            ..Edit::by(self.actor())
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
