//! The classifier's records: environments, node groups and nodes, and the group tree that a
//! classification reads in one consistent snapshot.

mod facts;
mod pins;
mod tree;

use std::ops::Range;
use std::sync::Arc;

pub use self::facts::{FACTS, MAX_FACTS_BYTES, VIEW, VIEW_PAST, VIEWS_TAKEN, ViewsTaken};
use self::pins::Unpin;
pub use self::tree::{GENERATION, TreeCache};
use self::tree::{Held, TreeGuard, generation_key, held_fleet, hold, judged, moved_fleet, raise};
use super::change::Version;
use super::change::{Edit, MAX_TRIES, NoGuard, decode};
use super::engine::{Key, Position, Record};
use super::record::{Derived, ITEM_TYPE, Index, RecordKind, Reference};
use super::tokens::TOKEN;
use super::{EnvironmentFilter, Kind, NodeFilter, Page, PageRequest, Result, Store, StoreError};
use crate::domain::{
    Certname, Environment, EnvironmentKey, GroupName, GroupTree, Node, NodeFacts, NodeGroup,
    RuleView, Stored, TokenName,
};
pub use crate::store::change::Snapshot;

/// What one classification read found (`Store::classification_inputs`).
pub struct ClassificationInputs {
    /// The node's record exactly as stored: the same bytes mean the same node.
    pub node: Option<Record>,
    /// The record of the token asked for, if it exists (checked by `Auth::admitted`).
    pub token: Option<Record>,
    /// The node's rule view as stored, if it sent facts.
    pub view: Option<Record>,
    /// The group tree as it was when the node was read.
    pub tree: Arc<GroupTree>,
}

/// A node with what it is classified by: its facts and its leaf groups' chains.
pub struct Classifiable {
    pub node: Stored<Node>,
    pub facts: Option<NodeFacts>,
    /// Each leaf group first, then up to the root; by leaf name.
    pub chains: Vec<Vec<Arc<NodeGroup>>>,
}

impl ClassificationInputs {
    /// The stored view, and whether it was taken through the tree's lens (else rules may
    /// read paths it does not hold: the whole facts must be read).
    pub fn view(&self) -> Result<Option<(RuleView, bool)>> {
        let Some(record) = &self.view else {
            return Ok(None);
        };
        let view: RuleView = decode(record)?;
        let current = view.lens == self.tree.lens().id();
        Ok(Some((view, current)))
    }

    /// The node, its facts (`given`, or the stored view) and its leaf groups' chains.
    pub fn classifiable(&self, name: &Certname, given: Option<NodeFacts>) -> Result<Classifiable> {
        let Some(record) = &self.node else {
            return Err(StoreError::NotFound {
                kind: Kind::Node,
                key: name.to_string(),
            });
        };
        let node: Stored<Node> = decode(record)?;
        let facts = match given {
            Some(facts) => Some(facts),
            None => self.view()?.map(|(view, _)| view.into_facts()),
        };
        let chains = self.tree.leaves(&node.item, facts.as_ref())?;
        Ok(Classifiable {
            node,
            facts,
            chains,
        })
    }
}

pub static ENVIRONMENT: RecordKind = RecordKind {
    indexes: &[
        Index::new("ordered", ITEM_TYPE, "sort_key"),
        Index::new("by_cluster", "puppet_cluster_name", "sort_key"),
    ],
    derived: &[Derived::new(
        "sort_key",
        &["environment_name", "puppet_cluster_name"],
        "/",
    )],
    referenced: true,
    history: Some(&[]),
    ..RecordKind::new(
        Kind::Environment,
        "environment",
        "environments",
        &["environment_name", "puppet_cluster_name"],
    )
};

pub static NODE_GROUP: RecordKind = RecordKind {
    indexes: &[
        Index::new("ordered", ITEM_TYPE, "name"),
        Index::new("by_parent", "parent", "name"),
    ],
    references: &[
        Reference::new("parent", &NODE_GROUP, &["parent"]),
        Reference::new(
            "environment_name",
            &ENVIRONMENT,
            &["environment_name", "puppet_cluster_name"],
        ),
    ],
    referenced: true,
    json: &["classes", "parameters", "rule", "pinned"],
    history: Some(&[]),
    ..RecordKind::new(Kind::NodeGroup, "node_group", "node_groups", &["name"])
};

pub static NODE: RecordKind = RecordKind {
    indexes: &[
        Index::new("ordered", ITEM_TYPE, "unique_name"),
        Index::new("by_group", "node_group_name", "unique_name"),
        Index::new("by_environment", "environment_name", "unique_name"),
        Index::new("by_cluster", "puppet_cluster_name", "unique_name"),
    ],
    references: &[
        Reference::new(
            "environment_name",
            &ENVIRONMENT,
            &["environment_name", "puppet_cluster_name"],
        ),
        Reference::new("node_group_name", &NODE_GROUP, &["node_group_name"]),
    ],
    json: &["classes", "parameters"],
    history: Some(&[]),
    ..RecordKind::new(Kind::Node, "node", "nodes", &["unique_name"])
};

fn env_key(key: &EnvironmentKey) -> Key {
    Key::two(
        key.environment_name.as_str(),
        key.puppet_cluster_name.as_str(),
    )
}

impl Store {
    fn tree_guard(&self, by: Edit<'_>) -> TreeGuard<'_> {
        TreeGuard {
            store: self,
            judged: by.judged,
        }
    }

    /// What a classification reads, in one store call: the node's record as stored, the
    /// group generation and, when the caller's token is checked here too, that token; then
    /// the group tree at that generation (from memory while groups are unchanged). Absent
    /// records are `None`: the caller decides what to say, after checking the token.
    pub async fn classification_inputs(
        &self,
        name: &Certname,
        token: Option<&TokenName>,
    ) -> Result<ClassificationInputs> {
        let mut keys = vec![
            (&NODE, Key::one(name.as_str())),
            (&GENERATION, generation_key()),
            (&VIEW, Key::one(name.as_str())),
        ];
        if let Some(token) = token {
            keys.push((&TOKEN, Key::one(token.as_str())));
        }
        for _ in 0..MAX_TRIES {
            let mut found = self.db.engine().get(&keys).await?.into_iter();
            let (node, generation) = (found.next().flatten(), found.next().flatten());
            let view = found.next().flatten();
            let token = found.next().flatten();
            let generation = generation.as_ref().map_or(0, |r| r.refs);
            let tree = self.tree_at(generation).await?;
            if tree.generation == generation {
                return Ok(ClassificationInputs {
                    node,
                    token,
                    view,
                    tree,
                });
            }
        }
        Err(StoreError::Unavailable(
            "node groups kept changing while a node was classified".into(),
        ))
    }

    /// The record of any object, or `NotFound`.
    pub async fn record(&self, kind: &'static RecordKind, key: &Key) -> Result<Record> {
        self.db.record(kind, key).await
    }

    pub async fn create_environment(
        &self,
        env: Environment,
        by: impl Into<Edit<'_>>,
    ) -> Result<Stored<Environment>> {
        self.db
            .put(&ENVIRONMENT, env, Version::First, by.into(), &NoGuard)
            .await
    }

    pub async fn get_environment(&self, key: &EnvironmentKey) -> Result<Stored<Environment>> {
        self.db.get(&ENVIRONMENT, &env_key(key)).await
    }

    pub async fn list_environments(
        &self,
        filter: &EnvironmentFilter,
        page: &PageRequest,
    ) -> Result<Page<Stored<Environment>>> {
        let filters: Vec<_> = filter
            .puppet_cluster_name
            .iter()
            .map(|c| ("puppet_cluster_name", c.to_string()))
            .collect();
        self.db
            .list(&ENVIRONMENT, &filters, (None, None), page)
            .await
    }

    pub async fn delete_environment(
        &self,
        key: &EnvironmentKey,
        expected: Option<u64>,
        by: impl Into<Edit<'_>>,
    ) -> Result<()> {
        self.db
            .delete::<Environment>(&ENVIRONMENT, &env_key(key), expected, by.into(), &NoGuard)
            .await
    }

    pub async fn create_node_group(
        &self,
        group: NodeGroup,
        by: impl Into<Edit<'_>>,
    ) -> Result<Stored<NodeGroup>> {
        let by = by.into();
        self.db
            .put(&NODE_GROUP, group, Version::First, by, &self.tree_guard(by))
            .await
    }

    pub async fn get_node_group(&self, name: &GroupName) -> Result<Stored<NodeGroup>> {
        self.db.get(&NODE_GROUP, &Key::one(name.as_str())).await
    }

    pub async fn list_node_groups(&self, page: &PageRequest) -> Result<Page<Stored<NodeGroup>>> {
        self.db.list(&NODE_GROUP, &[], (None, None), page).await
    }

    pub async fn replace_node_group(
        &self,
        group: NodeGroup,
        expected: Option<u64>,
        by: impl Into<Edit<'_>>,
    ) -> Result<Stored<NodeGroup>> {
        let by = by.into();
        self.db
            .put(
                &NODE_GROUP,
                group,
                Version::Next(expected),
                by,
                &self.tree_guard(by),
            )
            .await
    }

    pub async fn delete_node_group(
        &self,
        name: &GroupName,
        expected: Option<u64>,
        by: impl Into<Edit<'_>>,
    ) -> Result<()> {
        let key = Key::one(name.as_str());
        let by = by.into();
        self.db
            .delete(&NODE_GROUP, &key, expected, by, &self.tree_guard(by))
            .await
    }

    /// Creates a node; with `by.judged`, only while the groups are the ones it was judged on.
    pub async fn create_node(&self, node: Node, by: impl Into<Edit<'_>>) -> Result<Stored<Node>> {
        let by = by.into();
        let held = Held {
            store: self,
            judged: by.judged,
        };
        self.db.put(&NODE, node, Version::First, by, &held).await
    }

    pub async fn get_node(&self, name: &Certname) -> Result<Stored<Node>> {
        self.db.get(&NODE, &Key::one(name.as_str())).await
    }

    /// The node's record as stored (decode it with `store::decode`), or `NotFound`.
    pub async fn node_record(&self, name: &Certname) -> Result<Record> {
        self.db.record(&NODE, &Key::one(name.as_str())).await
    }

    /// The node's record and the token's, if they exist, in one store call (for a handler
    /// that checks the caller's token itself: `auth::Deferred`).
    pub async fn node_and_token_records(
        &self,
        name: &Certname,
        token: &TokenName,
    ) -> Result<(Option<Record>, Option<Record>)> {
        let keys = [
            (&NODE, Key::one(name.as_str())),
            (&TOKEN, Key::one(token.as_str())),
        ];
        let mut found = self.db.engine().get(&keys).await?.into_iter();
        Ok((found.next().flatten(), found.next().flatten()))
    }

    pub async fn list_nodes(
        &self,
        filter: &NodeFilter,
        page: &PageRequest,
    ) -> Result<Page<Stored<Node>>> {
        self.list_node_records(filter, page).await?.decode()
    }

    /// Some of every node, in no order, each as it is after every commit that finished before
    /// the call (not from an index, which may lag on DynamoDB), and where to go on from.
    pub async fn scan_nodes(
        &self,
        after: Option<Position>,
    ) -> Result<(Vec<Stored<Node>>, Option<Position>)> {
        let batch = self.db.engine().scan(&NODE, after).await?;
        let nodes = batch.records.iter().map(decode).collect::<Result<_>>()?;
        Ok((nodes, batch.more))
    }

    /// Every node by certname from `from` on (inclusive), one page at a time.
    pub async fn list_nodes_from(
        &self,
        from: Option<&Certname>,
        page: &PageRequest,
    ) -> Result<Page<Stored<Node>>> {
        let range = (from.map(Certname::as_str), None);
        self.db.list(&NODE, &[], range, page).await
    }

    /// [`Store::list_nodes`], each node's record as stored.
    pub async fn list_node_records(
        &self,
        filter: &NodeFilter,
        page: &PageRequest,
    ) -> Result<Page<Record>> {
        let mut filters = Vec::new();
        if let Some(group) = &filter.node_group_name {
            filters.push(("node_group_name", group.to_string()));
        }
        if let Some(env) = &filter.environment_name {
            filters.push(("environment_name", env.to_string()));
        }
        if let Some(cluster) = &filter.puppet_cluster_name {
            filters.push(("puppet_cluster_name", cluster.to_string()));
        }
        self.db
            .list_records(&NODE, &filters, (None, None), page)
            .await
    }

    /// Replaces a node; with `by.judged`, only while the groups are the ones it was judged on.
    pub async fn replace_node(
        &self,
        node: Node,
        expected: Option<u64>,
        by: impl Into<Edit<'_>>,
    ) -> Result<Stored<Node>> {
        let by = by.into();
        let held = Held {
            store: self,
            judged: by.judged,
        };
        self.db
            .put(&NODE, node, Version::Next(expected), by, &held)
            .await
    }

    /// Deletes a node and, in the same commit, takes it off every group that pins it.
    pub async fn delete_node(
        &self,
        name: &Certname,
        expected: Option<u64>,
        by: impl Into<Edit<'_>>,
    ) -> Result<()> {
        let key = Key::one(name.as_str());
        let by = by.into();
        let guard = Unpin { store: self, by };
        self.db
            .delete::<Node>(&NODE, &key, expected, by, &guard)
            .await
    }

    pub async fn restore_environment(
        &self,
        key: &EnvironmentKey,
        version: u64,
        expected: Option<u64>,
        by: impl Into<Edit<'_>>,
    ) -> Result<Stored<Environment>> {
        let key = env_key(key);
        self.restore(&ENVIRONMENT, &key, version, expected, by.into(), &NoGuard)
            .await
    }

    pub async fn restore_node_group(
        &self,
        name: &GroupName,
        version: u64,
        expected: Option<u64>,
        by: impl Into<Edit<'_>>,
    ) -> Result<Stored<NodeGroup>> {
        let key = Key::one(name.as_str());
        let by = by.into();
        let guard = self.tree_guard(by);
        self.restore(&NODE_GROUP, &key, version, expected, by, &guard)
            .await
    }

    pub async fn restore_node(
        &self,
        name: &Certname,
        version: u64,
        expected: Option<u64>,
        by: impl Into<Edit<'_>>,
    ) -> Result<Stored<Node>> {
        let key = Key::one(name.as_str());
        let by = by.into();
        let held = Held {
            store: self,
            judged: by.judged,
        };
        self.restore(&NODE, &key, version, expected, by, &held)
            .await
    }
}

impl Store {
    /// How a set of planned changes is cut into commits ([`Store::apply_set`] each), in
    /// order: one where the engine takes any number of writes in a commit (redb), else
    /// batches within its limits (DynamoDB: 100 writes, 4 MB a transaction).
    pub fn commits<'a>(
        &self,
        planned: impl Iterator<Item = &'a super::apply::Planned>,
    ) -> Vec<Range<usize>> {
        let Some(max) = self.db.engine().max_writes() else {
            return std::iter::once(0..planned.count()).collect();
        };
        // An object's write, its revision and its history head, and its two references each
        // moved from one record to another (four counts); two more for the group tree's and
        // the fleet's generations; and well under DynamoDB's 4 MB.
        let (per_object, budget) = (7, 3 * 1024 * 1024);
        let mut commits = Vec::new();
        let (mut start, mut bytes, mut end) = (0, 0, 0);
        for (i, planned) in planned.enumerate() {
            let size = 3 * serde_json::to_vec(&planned.after).map_or(0, |b| b.len()) + 1024;
            if i > start && ((i - start + 1) * per_object + 2 > max || bytes + size > budget) {
                commits.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += size;
            end = i + 1;
        }
        commits.push(start..end);
        commits
    }

    /// Writes a set of planned changes of environments, node groups and nodes in one
    /// commit (each at the version planned), the group tree checked as the commit leaves it.
    pub async fn apply_set(
        &self,
        planned: &[super::Planned],
        by: impl Into<Edit<'_>>,
    ) -> Result<Vec<u64>> {
        let by = by.into();
        let mut extra = Vec::new();
        let mut changes = Vec::new();
        for p in planned.iter().filter(|p| p.kind.name == NODE_GROUP.name) {
            let name =
                GroupName::parse(&p.key.to_string()).map_err(|e| StoreError::Internal(e.into()))?;
            let group: Option<NodeGroup> = p
                .after
                .clone()
                .map(|body| serde_json::from_value(serde_json::Value::Object(body)))
                .transpose()
                .map_err(|e| StoreError::Internal(Box::new(e)))?;
            changes.push((name, group));
        }
        let tree = self.current_tree().await?;
        if by.judged.is_some_and(|j| j.groups != tree.generation) {
            return Err(StoreError::TreeMoved);
        }
        if !changes.is_empty() {
            let after = tree.with_changes(&changes);
            for group in changes.iter().filter_map(|(_, g)| g.as_ref()) {
                after.check_parent(group)?;
            }
            extra.push(match by.judged {
                Some(_) => judged(raise(&tree)),
                None => raise(&tree),
            });
        } else if by.judged.is_some() {
            extra.push(judged(hold(&tree)));
        }
        // Written nodes move the fleet; judged, the set commits only while no other node
        // was written (one write to the counter: both merge).
        if planned.iter().any(|p| p.kind.name == NODE.name) {
            extra.push(moved_fleet());
        }
        extra.extend(by.judged.map(held_fleet));
        self.db.write_set(planned, by, extra).await
    }
}
