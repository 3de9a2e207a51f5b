//! API tokens: made by an administrator, the secret shown once, revoked by deleting them.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{IfMatchHeader, ListResponse, PageQuery, parse_name, stored};
use crate::AppState;
use crate::auth::Caller;
use crate::auth::secret::{Secret, sha256_hex};
use crate::domain::{ClusterName, Fields, Scope, Stored, Token, TokenName, now};
use crate::error::{AppError, ReadProblems, WriteProblems};
use crate::extract::{IfMatch, Json, Path, Query};

/// A token as an administrator asks for it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "puppet-eu-1", "scopes": ["classify"], "description": "Puppet servers of puppet-eu"}))]
pub struct TokenBody {
    #[schema(value_type = TokenName, required = true)]
    name: Option<String>,
    /// What it may do: at least one scope.
    #[schema(value_type = Vec<Scope>, required = true, min_items = 1, example = json!(["classify"]))]
    scopes: Option<Vec<String>>,
    /// When the token stops working (RFC 3339, in the future); never when absent.
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<String>,
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// Binds it to these Puppet clusters: it then reaches only their nodes (another
    /// cluster's node answers 404, as if absent) and may hold only `classify` and `read`.
    #[schema(value_type = Option<Vec<ClusterName>>, min_items = 1, example = json!(["puppet-eu"]))]
    clusters: Option<Vec<String>>,
}

/// A token as shown: everything but its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    #[schema(value_type = String, example = "puppet-eu-1")]
    name: TokenName,
    #[schema(value_type = Vec<String>, example = json!(["classify"]))]
    scopes: BTreeSet<Scope>,
    description: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<String>,
    /// Who made it.
    created_by: String,
    /// When it was last used, to the minute.
    #[schema(value_type = Option<String>, format = DateTime)]
    last_used_at: Option<String>,
    /// The Puppet clusters it is bound to; absent: it is not bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>, example = json!(["puppet-eu"]))]
    clusters: Option<BTreeSet<ClusterName>>,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    view: TokenView,
    /// The secret, to send as `Authorization: Bearer <token>`. Shown this once only.
    #[schema(example = "enc_puppet-eu-1_6QeT…")]
    token: String,
}

/// What a token bound to clusters may hold: it classifies and reads its clusters' nodes,
/// and writes nothing else.
const BOUND_SCOPES: [Scope; 2] = [Scope::Classify, Scope::Read];

fn rfc3339(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn view(stored: Stored<Token>) -> Stored<TokenView> {
    let t = stored.item;
    let item = TokenView {
        name: t.name,
        scopes: t.scopes,
        description: t.description,
        expires_at: rfc3339(t.expires_at),
        created_by: t.created_by,
        last_used_at: rfc3339(t.last_used_at),
        clusters: t.clusters,
    };
    Stored {
        item,
        meta: stored.meta,
    }
}

impl TokenBody {
    fn into_token(self, created_by: &str) -> Result<(Token, Secret), AppError> {
        let mut f = Fields::default();
        let name = f.required("name", self.name, TokenName::parse);
        let mut scopes = BTreeSet::new();
        match self.scopes {
            None => f.error("scopes", "is required"),
            Some(names) if names.is_empty() => f.error("scopes", "must name at least one scope"),
            Some(names) => {
                for (i, scope) in names.iter().enumerate() {
                    match Scope::parse(scope) {
                        Ok(scope) => {
                            scopes.insert(scope);
                        }
                        Err(e) => f.error(format!("scopes.{i}"), e),
                    }
                }
            }
        }
        let expires_at = f.optional("expires_at", self.expires_at, |text| {
            let at = DateTime::parse_from_rfc3339(text)
                .map_err(|_| "must be an RFC 3339 time such as 2027-01-31T00:00:00Z".to_owned())?
                .with_timezone(&Utc);
            if at <= now() {
                return Err("must be in the future".to_owned());
            }
            Ok(at)
        });
        let description = f.description(self.description);
        let clusters = self.clusters.map(|names| {
            if names.is_empty() {
                f.error(
                    "clusters",
                    "must name at least one cluster (or be left out)",
                );
            }
            let mut clusters = BTreeSet::new();
            for (i, name) in names.iter().enumerate() {
                match ClusterName::parse(name) {
                    Ok(cluster) => {
                        clusters.insert(cluster);
                    }
                    Err(e) => f.error(format!("clusters.{i}"), e),
                }
            }
            clusters
        });
        if clusters.is_some() && scopes.iter().any(|s| !BOUND_SCOPES.contains(s)) {
            f.error(
                "scopes",
                "a token bound to clusters may hold only classify and read",
            );
        }
        let token = f
            .finish(|| {
                let name = name?;
                let secret = Secret::generate(&name);
                let token = Token {
                    name,
                    scopes,
                    description,
                    expires_at,
                    created_by: created_by.to_owned(),
                    last_used_at: None,
                    secret_sha256: sha256_hex(secret.expose()),
                    clusters,
                };
                Some((token, secret))
            })
            .map_err(AppError::Validation)?;
        Ok(token)
    }
}

fn token_name(raw: &str) -> Result<TokenName, AppError> {
    parse_name("name", raw, TokenName::parse)
}

/// Make a token; the answer holds its secret, shown this once only.
#[utoipa::path(post, path = "/tokens", tag = "tokens", operation_id = "create_token", security(("bearer" = ["admin"])),
    request_body = TokenBody,
    responses(
        (status = 201, description = "Made: `token` is the secret", body = Stored<CreatedToken>,
            headers(("ETag" = String), ("Location" = String))),
        WriteProblems,
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    _: Query<super::NoQuery>,
    Json(body): Json<TokenBody>,
) -> Result<Response, AppError> {
    let (token, secret) = body.into_token(caller.actor())?;
    let created = state.store.create_token(token, caller.by()).await?;
    let Stored { item, meta } = view(created);
    let token = secret.into_string();
    let shown = Stored {
        item: CreatedToken { view: item, token },
        meta,
    };
    let location = ["tokens", shown.item.view.name.as_str()];
    let mut response = stored(StatusCode::CREATED, &shown, &location);
    // The body is the secret: no cache may keep it.
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// List tokens (never their secrets).
#[utoipa::path(get, path = "/tokens", tag = "tokens", operation_id = "list_tokens", security(("bearer" = ["admin"])),
    params(PageQuery),
    responses((status = 200, description = "A page of tokens (never their secrets)", body = ListResponse<Stored<TokenView>>), ReadProblems))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<ListResponse<Stored<TokenView>>>, AppError> {
    let page = state.store.list_tokens(&query.page()?).await?;
    Ok(axum::Json(ListResponse {
        items: page.items.into_iter().map(view).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Read one token (never its secret).
#[utoipa::path(get, path = "/tokens/{name}", tag = "tokens", operation_id = "get_token", security(("bearer" = ["admin"])),
    params(("name" = TokenName, Path)),
    responses((status = 200, description = "The token (never its secret)", body = Stored<TokenView>, headers(("ETag" = String))), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let token = state.store.get_token(&token_name(&name)?).await?;
    Ok(stored(StatusCode::OK, &view(token), &[]).into_response())
}

/// Revoke a token: it stops working at once.
#[utoipa::path(delete, path = "/tokens/{name}", tag = "tokens", operation_id = "delete_token", security(("bearer" = ["admin"])),
    params(("name" = TokenName, Path), IfMatchHeader),
    responses((status = 204, description = "Revoked"), WriteProblems))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(expected): IfMatch,
    _: Query<super::NoQuery>,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let name = token_name(&name)?;
    state
        .store
        .delete_token(&name, expected, caller.by())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
