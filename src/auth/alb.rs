//! People behind the load balancer. After `authenticate-oidc` the ALB adds `x-amzn-oidc-data`,
//! a JWT it signs with ES256 (its segments carry base64 padding, unlike RFC 7515's). enc trusts
//! one only when its `signer` is the configured load balancer, it has not expired, and its
//! signature verifies with the ALB's public key for its `kid`, fetched from the regional
//! endpoint and kept. Nothing else in the header is believed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client;
use crate::domain::Scope;

/// The header the ALB sets.
pub const HEADER: &str = "x-amzn-oidc-data";

/// URL-safe base64 with or without padding, as the ALB writes it.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlbError {
    #[error("the sign-in data is not a JWT")]
    Malformed,
    #[error("the sign-in data is not signed with ES256")]
    Algorithm,
    #[error("the sign-in data was signed by another load balancer")]
    Signer,
    #[error("the sign-in data has expired")]
    Expired,
    #[error("the sign-in data names a key the load balancer does not have")]
    UnknownKey,
    #[error("the sign-in data's signature does not verify")]
    Signature,
    #[error("the load balancer's key could not be fetched: {0}")]
    KeyUnavailable(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: String,
    signer: String,
    exp: i64,
}

/// A signed-in person: a display name (their email, else their subject) and their claims.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub claims: Map<String, Value>,
}

/// A claim and the value it must have (or contain).
type ClaimIs = (String, String);

/// Which scopes people get: for each `claim=value` (or `*`, everyone signed in) a list.
#[derive(Debug, Clone, Default)]
pub struct ScopeRules(Vec<(Option<ClaimIs>, Vec<Scope>)>);

impl ScopeRules {
    /// From JSON such as `{"groups=enc-admins": ["admin"], "*": ["activities:write"]}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let rules: BTreeMap<String, Vec<String>> = serde_json::from_str(text)
            .map_err(|e| format!("must be a JSON object of \"claim=value\" to scopes: {e}"))?;
        let mut out = Vec::new();
        for (pattern, names) in rules {
            let matcher = match pattern.as_str() {
                "*" => None,
                other => {
                    let (claim, value) = other
                        .split_once('=')
                        .ok_or_else(|| format!("{other:?} is neither \"*\" nor \"claim=value\""))?;
                    Some((claim.to_owned(), value.to_owned()))
                }
            };
            let scopes = names
                .iter()
                .map(|n| Scope::parse(n).map_err(|e| format!("{n:?} {e}")))
                .collect::<Result<_, _>>()?;
            out.push((matcher, scopes));
        }
        Ok(Self(out))
    }

    pub fn scopes(&self, user: &User) -> BTreeSet<Scope> {
        let has = |claim: &str, wanted: &str| match user.claims.get(claim) {
            Some(Value::String(s)) => s == wanted,
            Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(wanted)),
            _ => false,
        };
        self.0
            .iter()
            .filter(|(matcher, _)| matcher.as_ref().is_none_or(|(c, v)| has(c, v)))
            .flat_map(|(_, scopes)| scopes.iter().copied())
            .collect()
    }
}

pub struct Alb {
    signer: String,
    /// Where keys are: `<keys_url>/<kid>` answers the key as PEM.
    keys_url: String,
    pub rules: ScopeRules,
    keys: RwLock<HashMap<String, Option<Arc<DecodingKey>>>>,
}

impl Alb {
    pub fn new(signer: String, keys_url: String, rules: ScopeRules) -> Self {
        Self {
            signer,
            keys_url: keys_url.trim_end_matches('/').to_owned(),
            rules,
            keys: RwLock::default(),
        }
    }

    /// The signed-in person, if `jwt` is what this load balancer signed.
    pub async fn verify(&self, jwt: &str, now: i64) -> Result<User, AlbError> {
        let mut parts = jwt.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AlbError::Malformed);
        };
        let decode = |part: &str| LENIENT.decode(part).map_err(|_| AlbError::Malformed);
        let head: Header =
            serde_json::from_slice(&decode(header)?).map_err(|_| AlbError::Malformed)?;
        if head.alg != "ES256" {
            return Err(AlbError::Algorithm);
        }
        if head.signer != self.signer {
            return Err(AlbError::Signer);
        }
        if head.exp <= now {
            return Err(AlbError::Expired);
        }
        let key = self.key(&head.kid).await?;
        let message = &jwt[..header.len() + 1 + payload.len()];
        let signature = signature.trim_end_matches('=');
        let valid =
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::ES256);
        if !valid.unwrap_or(false) {
            return Err(AlbError::Signature);
        }
        let claims: Map<String, Value> =
            serde_json::from_slice(&decode(payload)?).map_err(|_| AlbError::Malformed)?;
        if claims
            .get("exp")
            .and_then(Value::as_i64)
            .is_some_and(|exp| exp <= now)
        {
            return Err(AlbError::Expired);
        }
        let name = ["email", "sub"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .ok_or(AlbError::Malformed)?
            .to_owned();
        Ok(User { name, claims })
    }

    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, AlbError> {
        // Key ids are UUIDs; anything else is not worth a request.
        let plausible = (1..=64).contains(&kid.len())
            && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !plausible {
            return Err(AlbError::UnknownKey);
        }
        if let Some(known) = self.keys.read().unwrap_or_else(|e| e.into_inner()).get(kid) {
            return known.clone().ok_or(AlbError::UnknownKey);
        }
        let url = format!("{}/{kid}", self.keys_url);
        let fetched = client::get(&url, "*/*", Duration::from_secs(3))
            .await
            .map_err(|e| AlbError::KeyUnavailable(e.to_string()))?;
        let key = match fetched.status {
            StatusCode::OK => Some(Arc::new(
                DecodingKey::from_ec_pem(&fetched.body)
                    .map_err(|e| AlbError::KeyUnavailable(format!("{url}: {e}")))?,
            )),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => None,
            other => return Err(AlbError::KeyUnavailable(format!("{url} answered {other}"))),
        };
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kid.to_owned(), key.clone());
        key.ok_or(AlbError::UnknownKey)
    }
}

/// The regional endpoint of ALB public keys.
pub fn regional_keys_url(region: &str) -> String {
    format!("https://public-keys.auth.elb.{region}.amazonaws.com")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(claims: Value) -> User {
        User {
            name: "u".into(),
            claims: claims.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn scopes_follow_claims() {
        let rules = ScopeRules::parse(
            r#"{"groups=enc-admins": ["admin"], "email=ops@example.com": ["write"], "*": ["activities:write"]}"#,
        )
        .unwrap();
        let admin = user(json!({"groups": ["staff", "enc-admins"]}));
        assert_eq!(
            rules.scopes(&admin),
            BTreeSet::from([Scope::Admin, Scope::ActivitiesWrite])
        );
        let ops = user(json!({"email": "ops@example.com", "groups": "staff"}));
        assert_eq!(
            rules.scopes(&ops),
            BTreeSet::from([Scope::Write, Scope::ActivitiesWrite])
        );
        assert!(ScopeRules::default().scopes(&ops).is_empty());
        assert!(ScopeRules::parse(r#"{"groups": ["admin"]}"#).is_err());
        assert!(ScopeRules::parse(r#"{"*": ["root"]}"#).is_err());
        assert!(ScopeRules::parse("not json").is_err());
    }
}
