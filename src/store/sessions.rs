//! Sessions of the metrics form's pages, server-side: the browser's cookie holds a random id,
//! the store only its SHA-256, with who signed in, the scopes the session grants (the metrics
//! form's, as far as the signing-in token had them), when it ends and when it was last used.
//! They are kept beside the tokens (same table, their own kind), listed by nothing.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::change::Version;
use super::change::{Edit, NoGuard};
use super::engine::Key;
use super::record::RecordKind;
use super::{Kind, Result, Store, StoreError};
use crate::domain::{Scope, Stored, TokenName};

pub static SESSION: RecordKind = RecordKind {
    json: &["scopes"],
    ..RecordKind::new(Kind::Token, "session", "tokens", &["name"])
};

/// A session as stored: never the cookie's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// `session/<SHA-256 of the cookie's id, hex>`.
    pub name: String,
    /// Who signed in: the token's name (`bootstrap` for the bootstrap secret).
    pub actor: String,
    /// The token signed in with and its secret's hash then: revoked, expired or made again,
    /// the session ends with it. `None` for the bootstrap secret.
    pub token: Option<TokenName>,
    pub token_sha256: Option<String>,
    /// What the session may do: at most `activities:write` and `activities:read`.
    pub scopes: BTreeSet<Scope>,
    /// When it began and when it ends (the record's own times are its `meta`'s).
    pub started_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Its last use (written at most once a minute): idle too long, it ends.
    pub seen_at: DateTime<Utc>,
}

/// The key of the session whose cookie id hashes to `digest_hex`.
pub fn session_name(digest_hex: &str) -> String {
    format!("session/{digest_hex}")
}

impl Store {
    pub async fn create_session(&self, session: Session) -> Result<Stored<Session>> {
        let actor = session.actor.clone();
        self.db
            .put(
                &SESSION,
                session,
                Version::First,
                Edit::by(&actor),
                &NoGuard,
            )
            .await
    }

    /// The session named `name`, if there is one.
    pub async fn session(&self, name: &str) -> Result<Option<Stored<Session>>> {
        match self.db.get(&SESSION, &Key::one(name)).await {
            Ok(session) => Ok(Some(session)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records a use, if the session is still the version that was used.
    pub async fn touch_session(&self, used: Stored<Session>, at: DateTime<Utc>) -> Result<()> {
        let mut session = used.item;
        session.seen_at = at;
        let actor = session.actor.clone();
        let by = Edit {
            quiet: true,
            ..Edit::by(&actor)
        };
        self.db
            .put(
                &SESSION,
                session,
                Version::Next(Some(used.meta.version)),
                by,
                &NoGuard,
            )
            .await?;
        Ok(())
    }

    /// Ends the session named `name` (nothing if there is none).
    pub async fn end_session(&self, name: &str) -> Result<()> {
        let by = Edit {
            quiet: true,
            ..Edit::by("enc")
        };
        match self
            .db
            .delete::<Session>(&SESSION, &Key::one(name), None, by, &NoGuard)
            .await
        {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
