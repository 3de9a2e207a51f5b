//! Who may do what: scopes, and the API tokens that carry them.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use super::{ClusterName, TokenName};

/// What an identity may do. `admin` may do everything and `write` includes `read`. `classify`
/// is a Puppet server's: it posts facts (which decide a node's groups) and reads
/// classifications; nothing but `admin` includes it. The two activity scopes are separate
/// from the rest and each other.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub enum Scope {
    /// Post facts and read classifications: what a Puppet server holds, and only it.
    #[serde(rename = "classify")]
    Classify,
    /// Read nodes, node groups and environments.
    #[serde(rename = "read")]
    Read,
    /// Change nodes, node groups and environments.
    #[serde(rename = "write")]
    Write,
    /// Preview writes only: any write with `?dry_run=true`, and planning a tree
    /// (`POST /import?dry_run=true`, `enc plan`); nothing stored, nothing else read. What a
    /// pull request's CI holds.
    #[serde(rename = "plan")]
    Plan,
    /// Record work in the metrics form.
    #[serde(rename = "activities:write")]
    ActivitiesWrite,
    /// Read recorded work: entries, CSV, summary, report.
    #[serde(rename = "activities:read")]
    ActivitiesRead,
    /// Everything, tokens included.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Classify,
        Scope::Read,
        Scope::Write,
        Scope::Plan,
        Scope::ActivitiesWrite,
        Scope::ActivitiesRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Classify => "classify",
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Plan => "plan",
            Scope::ActivitiesWrite => "activities:write",
            Scope::ActivitiesRead => "activities:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("must be one of {}", names.join(", "))
            })
    }

    /// Whether holding `self` allows what `needed` allows.
    pub fn grants(self, needed: Scope) -> bool {
        use Scope::*;
        match self {
            Admin => true,
            Write => matches!(needed, Write | Read | Plan),
            other => other == needed,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API token as stored: never its secret, only the secret's SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub name: TokenName,
    pub scopes: BTreeSet<Scope>,
    pub description: Option<String>,
    #[serde(serialize_with = "optional_rfc3339", default)]
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: String,
    #[serde(serialize_with = "optional_rfc3339", default)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// The Puppet clusters whose nodes alone it reaches; every cluster when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<BTreeSet<ClusterName>>,
}

impl Token {
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    pub fn grants(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|s| s.grants(needed))
    }
}

fn optional_rfc3339<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => super::resources::rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_imply_what_the_issue_says() {
        use Scope::*;
        assert!(Admin.grants(ActivitiesRead) && Admin.grants(Write));
        assert!(Write.grants(Read) && !Write.grants(Admin));
        assert!(Admin.grants(Classify));
        // Facts decide membership: only a Puppet server's scope posts them.
        assert!(!Read.grants(Classify) && !Write.grants(Classify) && !Read.grants(Write));
        assert!(!ActivitiesWrite.grants(Classify) && !ActivitiesRead.grants(Classify));
        assert!(!Classify.grants(Read));
        assert!(!ActivitiesWrite.grants(ActivitiesRead) && !ActivitiesRead.grants(ActivitiesWrite));
        assert!(!Write.grants(ActivitiesWrite));
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Ok(scope));
            assert_eq!(serde_json::to_value(scope).unwrap(), scope.as_str());
        }
        assert!(Scope::parse("root").is_err());
    }
}
