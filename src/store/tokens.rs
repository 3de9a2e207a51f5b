//! API tokens: who may call enc. Records hold each token's scopes and the SHA-256 of its
//! secret, never the secret.

use super::change::Version;
use super::change::{Edit, NoGuard};
use super::engine::{Key, Record};
use super::record::{ITEM_TYPE, Index, RecordKind};
use super::{Kind, Page, PageRequest, Result, Store};
use crate::domain::{Stored, Token, TokenName};

pub static TOKEN: RecordKind = RecordKind {
    indexes: &[Index::new("ordered", ITEM_TYPE, "name")],
    json: &["scopes", "clusters"],
    history: Some(&["secret_sha256"]),
    ..RecordKind::new(Kind::Token, "token", "tokens", &["name"])
};

impl Store {
    pub async fn create_token(
        &self,
        token: Token,
        by: impl Into<Edit<'_>>,
    ) -> Result<Stored<Token>> {
        self.db
            .put(&TOKEN, token, Version::First, by.into(), &NoGuard)
            .await
    }

    pub async fn get_token(&self, name: &TokenName) -> Result<Stored<Token>> {
        self.db.get(&TOKEN, &Key::one(name.as_str())).await
    }

    /// The token's record as stored (decode it with `store::decode`), or `NotFound`.
    pub async fn token_record(&self, name: &TokenName) -> Result<Record> {
        self.db.record(&TOKEN, &Key::one(name.as_str())).await
    }

    pub async fn list_tokens(&self, page: &PageRequest) -> Result<Page<Stored<Token>>> {
        self.db.list(&TOKEN, &[], (None, None), page).await
    }

    /// Records a use, if the token is still the version that was used.
    pub async fn touch_token(
        &self,
        used: Stored<Token>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let mut token = used.item;
        token.last_used_at = Some(at);
        let actor = token.name.to_string();
        let version = Some(used.meta.version);
        let by = Edit {
            quiet: true,
            ..Edit::by(&actor)
        };
        self.db
            .put(&TOKEN, token, Version::Next(version), by, &NoGuard)
            .await?;
        Ok(())
    }

    pub async fn delete_token(
        &self,
        name: &TokenName,
        expected: Option<u64>,
        by: impl Into<Edit<'_>>,
    ) -> Result<()> {
        let key = Key::one(name.as_str());
        self.db
            .delete::<Token>(&TOKEN, &key, expected, by.into(), &NoGuard)
            .await
    }
}
