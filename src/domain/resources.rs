use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use super::{Certname, Classes, ClusterName, EnvironmentName, GroupName, Parameters};

/// A Puppet environment as offered by one Puppet cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    pub environment_name: EnvironmentName,
    pub puppet_cluster_name: ClusterName,
    #[schema(example = "Production code for the EU fleet")]
    pub description: Option<String>,
}

impl Environment {
    pub fn key(&self) -> EnvironmentKey {
        EnvironmentKey {
            environment_name: self.environment_name.clone(),
            puppet_cluster_name: self.puppet_cluster_name.clone(),
        }
    }
}

/// Environments are identified by their name together with their cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EnvironmentKey {
    pub environment_name: EnvironmentName,
    pub puppet_cluster_name: ClusterName,
}

impl std::fmt::Display for EnvironmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.environment_name, self.puppet_cluster_name)
    }
}

/// A set of classes and parameters shared by nodes, optionally inheriting from a parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeGroup {
    pub name: GroupName,
    #[schema(example = "Every web server")]
    pub description: Option<String>,
    pub parent: Option<GroupName>,
    #[schema(value_type = Object, example = json!({"profile::nginx": {"worker_processes": 4}}))]
    pub classes: Classes,
    #[schema(value_type = Object, example = json!({"datacenter": "eu-west-1"}))]
    pub parameters: Parameters,
    /// Nodes whose facts match this rule (Puppet Enterprise's grammar) are members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<serde_json::Value>>, example = json!(["=", ["fact", "os", "family"], "Debian"]))]
    pub rule: Option<serde_json::Value>,
    /// Nodes that are members whatever their facts.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub pinned: BTreeSet<Certname>,
    /// The environment (with its cluster) of a node enc first learns of through this group's
    /// rule or pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub environment_name: Option<EnvironmentName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub puppet_cluster_name: Option<ClusterName>,
}

impl NodeGroup {
    /// The environment the group gives a node it takes in, if it gives one.
    pub fn environment(&self) -> Option<EnvironmentKey> {
        Some(EnvironmentKey {
            environment_name: self.environment_name.clone()?,
            puppet_cluster_name: self.puppet_cluster_name.clone()?,
        })
    }
}

/// A node's facts as Puppet last sent them, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeFacts {
    #[schema(value_type = String)]
    pub unique_name: Certname,
    #[schema(value_type = Object)]
    pub facts: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub trusted: serde_json::Map<String, serde_json::Value>,
    #[serde(serialize_with = "rfc3339")]
    pub received_at: DateTime<Utc>,
    /// The token (a Puppet server's) that posted them; absent on facts kept before enc
    /// recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_by: Option<String>,
    /// Whether `trusted` came with them (from the node's verified certificate).
    #[serde(default)]
    pub with_trusted: bool,
}

#[cfg(test)]
impl NodeFacts {
    /// Facts as an agent sends them, without trusted facts, for tests.
    pub(crate) fn sent(name: &str, facts: serde_json::Value) -> Self {
        NodeFacts {
            unique_name: super::Certname::parse(name).unwrap(),
            facts: facts.as_object().unwrap().clone(),
            trusted: serde_json::Map::new(),
            received_at: super::now(),
            posted_by: None,
            with_trusted: false,
        }
    }
}

/// A Puppet node (agent), identified by its certname.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub unique_name: Certname,
    pub node_group_name: Option<GroupName>,
    pub environment_name: EnvironmentName,
    pub puppet_cluster_name: ClusterName,
    #[schema(value_type = Object, example = json!({"profile::monitoring": {}}))]
    pub classes: Classes,
    #[schema(value_type = Object, example = json!({"role": "frontend"}))]
    pub parameters: Parameters,
}

impl Node {
    pub fn environment_key(&self) -> EnvironmentKey {
        EnvironmentKey {
            environment_name: self.environment_name.clone(),
            puppet_cluster_name: self.puppet_cluster_name.clone(),
        }
    }
}

/// What the store adds to every object it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Meta {
    /// Increases by one on every change; sent as the `ETag` and checked against `If-Match`.
    #[schema(example = 1, minimum = 1)]
    pub version: u64,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Who made this version: a token's name, a signed-in user, or `bootstrap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "ci-deploy")]
    pub updated_by: Option<String>,
    /// Who owns the object: `git` when it was applied from a classification tree
    /// (`POST /import`); API writes to it are refused (409) unless `force=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "git")]
    pub managed_by: Option<String>,
    /// The source revision (e.g. a git commit) of the tree that last applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<String>,
}

impl Meta {
    /// The metadata of an object created now by `by`.
    pub fn first(by: &str) -> Self {
        let now = now();
        Self {
            version: 1,
            created_at: now,
            updated_at: now,
            updated_by: Some(by.to_owned()),
            managed_by: None,
            source_revision: None,
        }
    }

    /// The metadata of the next version of an object, changed now by `by`.
    pub fn next(&self, by: &str) -> Self {
        Self {
            version: self.version + 1,
            created_at: self.created_at,
            updated_at: now().max(self.updated_at),
            updated_by: Some(by.to_owned()),
            managed_by: self.managed_by.clone(),
            source_revision: self.source_revision.clone(),
        }
    }
}

/// The current time to the millisecond: plenty for audit timestamps, and what every store
/// keeps exactly.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

pub(super) fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// An object as stored: the object itself plus its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stored<T> {
    #[serde(flatten)]
    pub item: T,
    #[serde(flatten)]
    pub meta: Meta,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_version_keeps_creation_time() {
        let first = Meta::first("alice");
        let next = first.next("bob");
        assert_eq!(next.updated_by.as_deref(), Some("bob"));
        assert_eq!(next.version, 2);
        assert_eq!(next.created_at, first.created_at);
        assert!(next.updated_at >= first.updated_at);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let json = serde_json::to_value(Meta::first("alice")).unwrap();
        let created = json["created_at"].as_str().unwrap();
        assert!(created.ends_with('Z'), "{created}");
        assert!(DateTime::parse_from_rfc3339(created).is_ok());
    }
}
