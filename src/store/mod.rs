//! Storage: one trait that every backend implements with the same semantics.

mod cursor;
pub mod dynamodb;
pub mod embedded;
pub mod instrumented;

pub use cursor::Cursor;

use async_trait::async_trait;

use chrono::NaiveDate;

use crate::domain::{
    Activity, Certname, ClusterName, Environment, EnvironmentKey, EnvironmentName, GroupName,
    Label, Node, NodeGroup, Stored,
};

/// Boxed error source kept for logs; never shown to clients.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The kinds of object the store keeps, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Node,
    NodeGroup,
    Environment,
    Activity,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Node => "node",
            Kind::NodeGroup => "node group",
            Kind::Environment => "environment",
            Kind::Activity => "activity",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {key} does not exist")]
    NotFound { kind: Kind, key: String },
    #[error("{kind} {key} already exists")]
    AlreadyExists { kind: Kind, key: String },
    #[error("{kind} {key} is at version {actual}, not {expected}")]
    VersionMismatch {
        kind: Kind,
        key: String,
        expected: u64,
        actual: u64,
    },
    /// A field names an object that does not exist.
    #[error("{field}: {kind} {key} does not exist")]
    MissingReference {
        field: &'static str,
        kind: Kind,
        key: String,
    },
    /// The change would make a node group its own ancestor.
    #[error("parent: the chain {} would be a cycle", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    /// The object cannot be deleted while others refer to it.
    #[error("{kind} {key} is still used by {}", referrers.join(", "))]
    StillReferenced {
        kind: Kind,
        key: String,
        referrers: Vec<String>,
    },
    #[error("the pagination cursor is not valid for this listing")]
    InvalidCursor,
    #[error("the store is unavailable")]
    Unavailable(#[source] Source),
    #[error("the store failed")]
    Internal(#[source] Source),
}

/// Which page of a listing to return.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<String>,
}

/// One page of a listing; `next_cursor` is absent on the last page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EnvironmentFilter {
    pub puppet_cluster_name: Option<ClusterName>,
}

#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub environment_name: Option<EnvironmentName>,
    pub puppet_cluster_name: Option<ClusterName>,
    pub node_group_name: Option<GroupName>,
}

impl EnvironmentFilter {
    /// Names this listing in its cursors: a cursor only continues the listing it came from.
    pub fn listing(&self) -> String {
        format!(
            "environments?cluster={:?}",
            self.puppet_cluster_name.as_ref().map(|c| c.as_str())
        )
    }
}

impl NodeFilter {
    /// Names this listing in its cursors: a cursor only continues the listing it came from.
    pub fn listing(&self) -> String {
        let name = |n: Option<&str>| format!("{n:?}");
        format!(
            "nodes?environment={}&cluster={}&group={}",
            name(self.environment_name.as_ref().map(|n| n.as_str())),
            name(self.puppet_cluster_name.as_ref().map(|n| n.as_str())),
            name(self.node_group_name.as_ref().map(|n| n.as_str())),
        )
    }

    pub fn matches(&self, node: &Node) -> bool {
        self.environment_name
            .as_ref()
            .is_none_or(|e| *e == node.environment_name)
            && self
                .puppet_cluster_name
                .as_ref()
                .is_none_or(|c| *c == node.puppet_cluster_name)
            && self
                .node_group_name
                .as_ref()
                .is_none_or(|g| node.node_group_name.as_ref() == Some(g))
    }
}

/// Which activities to list: all filters must match; dates are inclusive.
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    pub customer: Option<Label>,
    pub project: Option<Label>,
    pub engineer: Option<Label>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl ActivityFilter {
    /// Names this listing in its cursors: a cursor only continues the listing it came from.
    pub fn listing(&self) -> String {
        let name = |n: Option<&Label>| format!("{:?}", n.map(|l| l.as_str()));
        format!(
            "activities?customer={}&project={}&engineer={}&from={:?}&to={:?}",
            name(self.customer.as_ref()),
            name(self.project.as_ref()),
            name(self.engineer.as_ref()),
            self.from,
            self.to,
        )
    }

    pub fn matches(&self, a: &Activity) -> bool {
        self.customer.as_ref().is_none_or(|c| *c == a.customer)
            && self.project.as_ref().is_none_or(|p| *p == a.project)
            && self.engineer.as_ref().is_none_or(|e| *e == a.engineer)
            && self.from.is_none_or(|f| a.date >= f)
            && self.to.is_none_or(|t| a.date <= t)
    }
}

/// Everything enc keeps. Writes are atomic and conditional: `expected` is the version the
/// caller last saw (`If-Match`), and referential checks happen in the same transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and metrics, e.g. `embedded`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn create_environment(&self, env: Environment)
    -> Result<Stored<Environment>, StoreError>;
    async fn get_environment(
        &self,
        key: &EnvironmentKey,
    ) -> Result<Stored<Environment>, StoreError>;
    async fn list_environments(
        &self,
        filter: &EnvironmentFilter,
        page: &PageRequest,
    ) -> Result<Page<Stored<Environment>>, StoreError>;
    async fn delete_environment(
        &self,
        key: &EnvironmentKey,
        expected: Option<u64>,
    ) -> Result<(), StoreError>;

    async fn create_node_group(&self, group: NodeGroup) -> Result<Stored<NodeGroup>, StoreError>;
    async fn get_node_group(&self, name: &GroupName) -> Result<Stored<NodeGroup>, StoreError>;
    async fn list_node_groups(
        &self,
        page: &PageRequest,
    ) -> Result<Page<Stored<NodeGroup>>, StoreError>;
    async fn replace_node_group(
        &self,
        group: NodeGroup,
        expected: Option<u64>,
    ) -> Result<Stored<NodeGroup>, StoreError>;
    async fn delete_node_group(
        &self,
        name: &GroupName,
        expected: Option<u64>,
    ) -> Result<(), StoreError>;

    async fn create_node(&self, node: Node) -> Result<Stored<Node>, StoreError>;
    async fn get_node(&self, name: &Certname) -> Result<Stored<Node>, StoreError>;
    async fn list_nodes(
        &self,
        filter: &NodeFilter,
        page: &PageRequest,
    ) -> Result<Page<Stored<Node>>, StoreError>;
    async fn replace_node(
        &self,
        node: Node,
        expected: Option<u64>,
    ) -> Result<Stored<Node>, StoreError>;
    async fn delete_node(&self, name: &Certname, expected: Option<u64>) -> Result<(), StoreError>;

    /// Records an activity; its id is new, so this never conflicts.
    async fn create_activity(&self, activity: Activity) -> Result<Activity, StoreError>;
    async fn get_activity(&self, id: &str) -> Result<Activity, StoreError>;
    /// Activities by date, then in the order they were recorded.
    async fn list_activities(
        &self,
        filter: &ActivityFilter,
        page: &PageRequest,
    ) -> Result<Page<Activity>, StoreError>;
}

/// Refuses a write whose `If-Match` version is not the stored one.
pub(crate) fn check_version(
    kind: Kind,
    key: &dyn std::fmt::Display,
    expected: Option<u64>,
    actual: u64,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != actual => Err(StoreError::VersionMismatch {
            kind,
            key: key.to_string(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// How many referrers a refused delete names.
pub(crate) const MAX_REFERRERS: usize = 10;

/// Describes who still refers to an object: `what` and up to `MAX_REFERRERS` names, then
/// "more" if `names` holds more than that.
pub(crate) fn referrers(what: &str, mut names: Vec<String>) -> Vec<String> {
    let more = names.len() > MAX_REFERRERS;
    names.truncate(MAX_REFERRERS);
    let mut out: Vec<String> = names.into_iter().map(|n| format!("{what} {n}")).collect();
    if more {
        out.push("more".to_owned());
    }
    out
}
