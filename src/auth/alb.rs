//! People behind the load balancer. After `authenticate-oidc` the ALB adds `x-amzn-oidc-data`,
//! a JWT it signs with ES256 (its segments carry base64 padding, unlike RFC 7515's). enc trusts
//! one only when its `signer` is the configured load balancer, it has not expired, and its
//! signature verifies with the ALB's public key for its `kid`, fetched from the regional
//! endpoint and kept. Nothing else in the header is believed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

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
    #[error("the load balancer's signing key could not be fetched")]
    KeyUnavailable,
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
            // An address the identity provider has not verified is anyone's to type.
            Some(_) if claim == "email" && !email_verified(&user.claims) => false,
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

/// Whether the claims say the identity provider verified the `email` claim (`email_verified`
/// true, as OpenID Connect's standard claim, or `"true"` as some providers write it).
fn email_verified(claims: &Map<String, Value>) -> bool {
    match claims.get("email_verified") {
        Some(Value::Bool(verified)) => *verified,
        Some(Value::String(verified)) => verified.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Keys kept at most: the ALB rotates its keys rarely; an attacker's made-up `kid`s must
/// not grow the cache without bound.
const KEYS_KEPT: usize = 64;
/// How long a fetched key is kept, and how long "no such key" is.
const KEY_KEPT_FOR: Duration = Duration::from_secs(3600);
const NO_KEY_KEPT_FOR: Duration = Duration::from_secs(30);
/// The longest answer read from the key endpoint: a PEM public key is a few hundred bytes.
const KEY_MAX_BYTES: usize = 16 * 1024;

/// A key (or that there is none) as fetched at `at`.
#[derive(Clone)]
struct Kept {
    key: Option<Arc<DecodingKey>>,
    at: Instant,
}

impl Kept {
    fn fresh(&self) -> bool {
        let kept_for = if self.key.is_some() {
            KEY_KEPT_FOR
        } else {
            NO_KEY_KEPT_FOR
        };
        self.at.elapsed() < kept_for
    }
}

pub struct Alb {
    signer: String,
    /// Where keys are: `<keys_url>/<kid>` answers the key as PEM.
    keys_url: String,
    pub rules: ScopeRules,
    keys: RwLock<HashMap<String, Kept>>,
    /// The fetch under way per `kid`: others asking for the same key wait for it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Alb {
    pub fn new(signer: String, keys_url: String, rules: ScopeRules) -> Self {
        Self {
            signer,
            keys_url: keys_url.trim_end_matches('/').to_owned(),
            rules,
            keys: RwLock::default(),
            fetching: Mutex::default(),
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
        // Named by their address only if it was verified; otherwise by their subject.
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .filter(|_| email_verified(&claims));
        let name = email
            .or_else(|| claims.get("sub").and_then(Value::as_str))
            .ok_or(AlbError::Malformed)?
            .to_owned();
        Ok(User { name, claims })
    }

    /// The kept key of `kid`, if it is fresh: `Some(None)` for "no such key".
    fn kept(&self, kid: &str) -> Option<Option<Arc<DecodingKey>>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(kid).filter(|k| k.fresh()).map(|k| k.key.clone())
    }

    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, AlbError> {
        // Key ids are UUIDs; anything else is not worth a request.
        let plausible = (1..=64).contains(&kid.len())
            && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !plausible {
            return Err(AlbError::UnknownKey);
        }
        if let Some(known) = self.kept(kid) {
            return known.ok_or(AlbError::UnknownKey);
        }
        // One fetch per key at a time: the requests that come meanwhile wait for it.
        let turn = self
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kid.to_owned())
            .or_default()
            .clone();
        let fetched = {
            let _turn = turn.lock().await;
            match self.kept(kid) {
                Some(known) => Ok(known),
                None => self.fetch(kid).await,
            }
        };
        {
            let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            // The last one out takes the turn away (the map holds one, this holds one).
            if Arc::strong_count(&turn) <= 2 {
                fetching.remove(kid);
            }
        }
        fetched?.ok_or(AlbError::UnknownKey)
    }

    /// Fetches the key of `kid` and keeps what was found (or that nothing was).
    async fn fetch(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>, AlbError> {
        let url = format!("{}/{kid}", self.keys_url);
        let unavailable = |why: String| {
            tracing::warn!(
                url,
                why,
                "the load balancer's signing key could not be fetched"
            );
            AlbError::KeyUnavailable
        };
        let fetched = client::get_at_most(&url, "*/*", KEY_MAX_BYTES, Duration::from_secs(3))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let key = match fetched.status {
            StatusCode::OK => Some(Arc::new(
                DecodingKey::from_ec_pem(&fetched.body).map_err(|e| unavailable(e.to_string()))?,
            )),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => None,
            other => return Err(unavailable(format!("answered {other}"))),
        };
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= KEYS_KEPT {
            keys.retain(|_, k| k.fresh());
        }
        if keys.len() >= KEYS_KEPT
            && let Some(oldest) = keys
                .iter()
                .min_by_key(|(_, k)| k.at)
                .map(|(kid, _)| kid.clone())
        {
            keys.remove(&oldest);
        }
        keys.insert(
            kid.to_owned(),
            Kept {
                key: key.clone(),
                at: Instant::now(),
            },
        );
        Ok(key)
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
        let ops =
            user(json!({"email": "ops@example.com", "email_verified": true, "groups": "staff"}));
        assert_eq!(
            rules.scopes(&ops),
            BTreeSet::from([Scope::Write, Scope::ActivitiesWrite])
        );
        assert!(ScopeRules::default().scopes(&ops).is_empty());
        let unverified = user(json!({"email": "ops@example.com", "groups": "staff"}));
        assert_eq!(
            rules.scopes(&unverified),
            BTreeSet::from([Scope::ActivitiesWrite]),
            "an address nobody verified matches no email rule"
        );
        assert!(ScopeRules::parse(r#"{"groups": ["admin"]}"#).is_err());
        assert!(ScopeRules::parse(r#"{"*": ["root"]}"#).is_err());
        assert!(ScopeRules::parse("not json").is_err());
    }
}
