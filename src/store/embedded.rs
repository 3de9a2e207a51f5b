//! The embedded store: one redb file, no network. Every write is one redb write
//! transaction, so referential checks and the write they guard commit or fail together.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    ActivityFilter, Cursor, EnvironmentFilter, Kind, MAX_REFERRERS, NodeFilter, Page, PageRequest,
    Store, StoreError, check_version, referrers,
};
use crate::domain::{
    Activity, Certname, Environment, EnvironmentKey, GroupName, Meta, Node, NodeGroup, Stored,
};

const BACKEND: &str = "embedded";
/// The file inside the data directory.
pub const FILE_NAME: &str = "enc.redb";

/// (environment_name, puppet_cluster_name) -> Stored<Environment>
const ENVIRONMENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("environments");
/// name -> Stored<NodeGroup>
const NODE_GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("node_groups");
/// unique_name -> Stored<Node>
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// Reverse references, kept in the same transactions as the objects.
const NODES_BY_GROUP: TableDefinition<(&str, &str), ()> = TableDefinition::new("nodes_by_group");
const NODES_BY_ENVIRONMENT: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("nodes_by_environment");
const GROUPS_BY_PARENT: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("groups_by_parent");
/// (date, id) -> Activity: listed in date order, then creation order (ids are UUIDv7).
const ACTIVITIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("activities");
/// id -> date, to find an activity by id.
const ACTIVITY_DATES: TableDefinition<&str, &str> = TableDefinition::new("activity_dates");

macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Internal(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}
internal_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file in `dir`, creating the directory if needed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Internal(Box::new(e)))?;
        let db = Database::create(dir.join(FILE_NAME))?;
        let txn = db.begin_write()?;
        txn.open_table(ENVIRONMENTS)?;
        txn.open_table(NODE_GROUPS)?;
        txn.open_table(NODES)?;
        txn.open_table(NODES_BY_GROUP)?;
        txn.open_table(NODES_BY_ENVIRONMENT)?;
        txn.open_table(GROUPS_BY_PARENT)?;
        txn.open_table(ACTIVITIES)?;
        txn.open_table(ACTIVITY_DATES)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let db = self.db.clone();
        blocking(move || f(&db.begin_read()?)).await
    }

    /// The object stored under `key` in a table keyed by name.
    async fn get_named<T: DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        kind: Kind,
        key: String,
    ) -> Result<T, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(table)?;
            let found = table.get(key.as_str())?;
            match found {
                Some(v) => decode(v.value()),
                None => Err(StoreError::NotFound { kind, key }),
            }
        })
        .await
    }

    /// Runs `f` in one write transaction: committed if it succeeds, aborted if not.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            match f(&txn) {
                Ok(r) => {
                    txn.commit()?;
                    Ok(r)
                }
                Err(e) => {
                    txn.abort()?;
                    Err(e)
                }
            }
        })
        .await
    }
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(Box::new(e)))?
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Internal(Box::new(e)))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Internal(Box::new(e)))
}

/// Cuts a list of up to `limit + 1` items to one page and makes the cursor for the next.
fn page<T, K: Serialize + DeserializeOwned>(
    mut items: Vec<T>,
    limit: usize,
    listing: &str,
    key: impl Fn(&T) -> K,
) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items
            .last()
            .map(|last| Cursor::encode(BACKEND, listing, key(last)))
    } else {
        None
    };
    Page { items, next_cursor }
}

fn after<K: Serialize + DeserializeOwned>(
    listing: &str,
    page: &PageRequest,
) -> Result<Option<K>, StoreError> {
    page.cursor
        .as_deref()
        .map(|c| Cursor::decode(BACKEND, listing, c))
        .transpose()
}

fn get_group(txn: &WriteTransaction, name: &str) -> Result<Option<Stored<NodeGroup>>, StoreError> {
    let table = txn.open_table(NODE_GROUPS)?;
    let found = table.get(name)?;
    found.map(|v| decode(v.value())).transpose()
}

fn require_group(
    txn: &WriteTransaction,
    field: &'static str,
    name: &GroupName,
) -> Result<Stored<NodeGroup>, StoreError> {
    get_group(txn, name.as_str())?.ok_or_else(|| StoreError::MissingReference {
        field,
        kind: Kind::NodeGroup,
        key: name.to_string(),
    })
}

fn require_node_references(txn: &WriteTransaction, node: &Node) -> Result<(), StoreError> {
    let key = node.environment_key();
    let exists = txn
        .open_table(ENVIRONMENTS)?
        .get((
            key.environment_name.as_str(),
            key.puppet_cluster_name.as_str(),
        ))?
        .is_some();
    if !exists {
        return Err(StoreError::MissingReference {
            field: "environment_name",
            kind: Kind::Environment,
            key: key.to_string(),
        });
    }
    if let Some(group) = &node.node_group_name {
        require_group(txn, "node_group_name", group)?;
    }
    Ok(())
}

/// Adds (`add = true`) or removes the reverse-reference entries of `node`.
fn index_node(txn: &WriteTransaction, node: &Node, add: bool) -> Result<(), StoreError> {
    let name = node.unique_name.as_str();
    let env_key = (
        node.environment_name.as_str(),
        node.puppet_cluster_name.as_str(),
        name,
    );
    let mut by_env = txn.open_table(NODES_BY_ENVIRONMENT)?;
    let mut by_group = txn.open_table(NODES_BY_GROUP)?;
    let group_key = node.node_group_name.as_ref().map(|g| (g.as_str(), name));
    if add {
        by_env.insert(env_key, ())?;
        if let Some(k) = group_key {
            by_group.insert(k, ())?;
        }
    } else {
        by_env.remove(env_key)?;
        if let Some(k) = group_key {
            by_group.remove(k)?;
        }
    }
    Ok(())
}

fn index_group(txn: &WriteTransaction, group: &NodeGroup, add: bool) -> Result<(), StoreError> {
    if let Some(parent) = &group.parent {
        let mut by_parent = txn.open_table(GROUPS_BY_PARENT)?;
        let key = (parent.as_str(), group.name.as_str());
        if add {
            by_parent.insert(key, ())?;
        } else {
            by_parent.remove(key)?;
        }
    }
    Ok(())
}

/// Refuses a parent that is missing or that has `group` among its ancestors.
fn check_parent(txn: &WriteTransaction, group: &NodeGroup) -> Result<(), StoreError> {
    let Some(parent) = &group.parent else {
        return Ok(());
    };
    let mut chain = vec![group.name.to_string()];
    let mut seen = HashSet::from([group.name.to_string()]);
    let mut next = Some(parent.clone());
    while let Some(name) = next {
        chain.push(name.to_string());
        if !seen.insert(name.to_string()) {
            return Err(StoreError::Cycle { chain });
        }
        next = require_group(txn, "parent", &name)?.item.parent;
    }
    Ok(())
}

/// Up to `MAX_REFERRERS + 1` second parts of the keys of `index` whose first part is `first`.
fn members(
    index: &impl ReadableTable<(&'static str, &'static str), ()>,
    first: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for entry in index.range((first, "")..)? {
        let key = entry?.0;
        let (f, member) = key.value();
        if f != first || out.len() > MAX_REFERRERS {
            break;
        }
        out.push(member.to_owned());
    }
    Ok(out)
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|txn| {
            txn.open_table(NODES)?;
            Ok(())
        })
        .await
    }

    async fn create_environment(
        &self,
        env: Environment,
    ) -> Result<Stored<Environment>, StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(ENVIRONMENTS)?;
            let key = (
                env.environment_name.as_str(),
                env.puppet_cluster_name.as_str(),
            );
            if table.get(key)?.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: Kind::Environment,
                    key: env.key().to_string(),
                });
            }
            let stored = Stored {
                meta: Meta::first(),
                item: env.clone(),
            };
            table.insert(key, encode(&stored)?.as_slice())?;
            Ok(stored)
        })
        .await
    }

    async fn get_environment(
        &self,
        key: &EnvironmentKey,
    ) -> Result<Stored<Environment>, StoreError> {
        let key = key.clone();
        self.read(move |txn| {
            let table = txn.open_table(ENVIRONMENTS)?;
            let found = table.get((
                key.environment_name.as_str(),
                key.puppet_cluster_name.as_str(),
            ))?;
            match found {
                Some(v) => decode(v.value()),
                None => Err(StoreError::NotFound {
                    kind: Kind::Environment,
                    key: key.to_string(),
                }),
            }
        })
        .await
    }

    async fn list_environments(
        &self,
        filter: &EnvironmentFilter,
        page_request: &PageRequest,
    ) -> Result<Page<Stored<Environment>>, StoreError> {
        let listing = filter.listing();
        let start: Option<(String, String)> = after(&listing, page_request)?;
        let (filter, limit) = (filter.clone(), page_request.limit);
        self.read(move |txn| {
            let table = txn.open_table(ENVIRONMENTS)?;
            let lower = match &start {
                Some((e, c)) => Bound::Excluded((e.as_str(), c.as_str())),
                None => Bound::Unbounded,
            };
            let mut items = Vec::new();
            for entry in table.range::<(&str, &str)>((lower, Bound::Unbounded))? {
                let env: Stored<Environment> = decode(entry?.1.value())?;
                let wanted = filter
                    .puppet_cluster_name
                    .as_ref()
                    .is_none_or(|c| *c == env.item.puppet_cluster_name);
                if wanted {
                    items.push(env);
                    if items.len() > limit {
                        break;
                    }
                }
            }
            Ok(page(items, limit, &listing, |e: &Stored<Environment>| {
                (
                    e.item.environment_name.to_string(),
                    e.item.puppet_cluster_name.to_string(),
                )
            }))
        })
        .await
    }

    async fn delete_environment(
        &self,
        key: &EnvironmentKey,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        self.write(move |txn| {
            let (env, cluster) = (
                key.environment_name.as_str(),
                key.puppet_cluster_name.as_str(),
            );
            let mut table = txn.open_table(ENVIRONMENTS)?;
            let current: Stored<Environment> = match table.get((env, cluster))? {
                Some(v) => decode(v.value())?,
                None => {
                    return Err(StoreError::NotFound {
                        kind: Kind::Environment,
                        key: key.to_string(),
                    });
                }
            };
            check_version(Kind::Environment, &key, expected, current.meta.version)?;
            let by_env = txn.open_table(NODES_BY_ENVIRONMENT)?;
            let mut nodes = Vec::new();
            for entry in by_env.range((env, cluster, "")..)? {
                let key = entry?.0;
                let (e, c, node) = key.value();
                if e != env || c != cluster || nodes.len() > MAX_REFERRERS {
                    break;
                }
                nodes.push(node.to_owned());
            }
            let users = referrers("node", nodes);
            if !users.is_empty() {
                return Err(StoreError::StillReferenced {
                    kind: Kind::Environment,
                    key: key.to_string(),
                    referrers: users,
                });
            }
            table.remove((env, cluster))?;
            Ok(())
        })
        .await
    }

    async fn create_node_group(&self, group: NodeGroup) -> Result<Stored<NodeGroup>, StoreError> {
        self.write(move |txn| {
            if get_group(txn, group.name.as_str())?.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: Kind::NodeGroup,
                    key: group.name.to_string(),
                });
            }
            check_parent(txn, &group)?;
            let stored = Stored {
                meta: Meta::first(),
                item: group,
            };
            txn.open_table(NODE_GROUPS)?
                .insert(stored.item.name.as_str(), encode(&stored)?.as_slice())?;
            index_group(txn, &stored.item, true)?;
            Ok(stored)
        })
        .await
    }

    async fn get_node_group(&self, name: &GroupName) -> Result<Stored<NodeGroup>, StoreError> {
        self.get_named(NODE_GROUPS, Kind::NodeGroup, name.to_string())
            .await
    }

    async fn list_node_groups(
        &self,
        page_request: &PageRequest,
    ) -> Result<Page<Stored<NodeGroup>>, StoreError> {
        const LISTING: &str = "node_groups";
        let start: Option<String> = after(LISTING, page_request)?;
        let limit = page_request.limit;
        self.read(move |txn| {
            let table = txn.open_table(NODE_GROUPS)?;
            let lower = start.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let items = table
                .range::<&str>((lower, Bound::Unbounded))?
                .take(limit + 1)
                .map(|entry| decode(entry?.1.value()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(page(items, limit, LISTING, |g: &Stored<NodeGroup>| {
                g.item.name.to_string()
            }))
        })
        .await
    }

    async fn replace_node_group(
        &self,
        group: NodeGroup,
        expected: Option<u64>,
    ) -> Result<Stored<NodeGroup>, StoreError> {
        self.write(move |txn| {
            let current =
                get_group(txn, group.name.as_str())?.ok_or_else(|| StoreError::NotFound {
                    kind: Kind::NodeGroup,
                    key: group.name.to_string(),
                })?;
            check_version(Kind::NodeGroup, &group.name, expected, current.meta.version)?;
            check_parent(txn, &group)?;
            index_group(txn, &current.item, false)?;
            index_group(txn, &group, true)?;
            let stored = Stored {
                meta: current.meta.next(),
                item: group,
            };
            txn.open_table(NODE_GROUPS)?
                .insert(stored.item.name.as_str(), encode(&stored)?.as_slice())?;
            Ok(stored)
        })
        .await
    }

    async fn delete_node_group(
        &self,
        name: &GroupName,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let name = name.clone();
        self.write(move |txn| {
            let current = get_group(txn, name.as_str())?.ok_or_else(|| StoreError::NotFound {
                kind: Kind::NodeGroup,
                key: name.to_string(),
            })?;
            check_version(Kind::NodeGroup, &name, expected, current.meta.version)?;
            let n = name.as_str();
            let mut users = referrers("node", members(&txn.open_table(NODES_BY_GROUP)?, n)?);
            users.extend(referrers(
                "node group",
                members(&txn.open_table(GROUPS_BY_PARENT)?, n)?,
            ));
            if !users.is_empty() {
                return Err(StoreError::StillReferenced {
                    kind: Kind::NodeGroup,
                    key: name.to_string(),
                    referrers: users,
                });
            }
            index_group(txn, &current.item, false)?;
            txn.open_table(NODE_GROUPS)?.remove(n)?;
            Ok(())
        })
        .await
    }

    async fn create_node(&self, node: Node) -> Result<Stored<Node>, StoreError> {
        self.write(move |txn| {
            let name = node.unique_name.as_str();
            if txn.open_table(NODES)?.get(name)?.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: Kind::Node,
                    key: name.to_owned(),
                });
            }
            require_node_references(txn, &node)?;
            index_node(txn, &node, true)?;
            let stored = Stored {
                meta: Meta::first(),
                item: node,
            };
            txn.open_table(NODES)?.insert(
                stored.item.unique_name.as_str(),
                encode(&stored)?.as_slice(),
            )?;
            Ok(stored)
        })
        .await
    }

    async fn get_node(&self, name: &Certname) -> Result<Stored<Node>, StoreError> {
        self.get_named(NODES, Kind::Node, name.to_string()).await
    }

    async fn list_nodes(
        &self,
        filter: &NodeFilter,
        page_request: &PageRequest,
    ) -> Result<Page<Stored<Node>>, StoreError> {
        let listing = filter.listing();
        let start: Option<String> = after(&listing, page_request)?;
        let (filter, limit) = (filter.clone(), page_request.limit);
        self.read(move |txn| {
            let nodes = txn.open_table(NODES)?;
            let lower = start.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let mut items = Vec::new();
            let mut keep = |node: Stored<Node>| {
                if filter.matches(&node.item) {
                    items.push(node);
                }
                items.len() > limit
            };
            if let Some(group) = &filter.node_group_name {
                let g = group.as_str();
                let by_group = txn.open_table(NODES_BY_GROUP)?;
                let lower = match lower {
                    Bound::Excluded(n) => Bound::Excluded((g, n)),
                    _ => Bound::Included((g, "")),
                };
                for entry in by_group.range::<(&str, &str)>((lower, Bound::Unbounded))? {
                    let key = entry?.0;
                    let (entry_group, name) = key.value();
                    if entry_group != g {
                        break;
                    }
                    let Some(bytes) = nodes.get(name)? else {
                        continue;
                    };
                    if keep(decode(bytes.value())?) {
                        break;
                    }
                }
            } else {
                for entry in nodes.range::<&str>((lower, Bound::Unbounded))? {
                    if keep(decode(entry?.1.value())?) {
                        break;
                    }
                }
            }
            Ok(page(items, limit, &listing, |n: &Stored<Node>| {
                n.item.unique_name.to_string()
            }))
        })
        .await
    }

    async fn replace_node(
        &self,
        node: Node,
        expected: Option<u64>,
    ) -> Result<Stored<Node>, StoreError> {
        self.write(move |txn| {
            let name = node.unique_name.as_str();
            let current: Stored<Node> = match txn.open_table(NODES)?.get(name)? {
                Some(v) => decode(v.value())?,
                None => {
                    return Err(StoreError::NotFound {
                        kind: Kind::Node,
                        key: name.to_owned(),
                    });
                }
            };
            check_version(Kind::Node, &name, expected, current.meta.version)?;
            require_node_references(txn, &node)?;
            index_node(txn, &current.item, false)?;
            index_node(txn, &node, true)?;
            let stored = Stored {
                meta: current.meta.next(),
                item: node,
            };
            txn.open_table(NODES)?.insert(
                stored.item.unique_name.as_str(),
                encode(&stored)?.as_slice(),
            )?;
            Ok(stored)
        })
        .await
    }

    async fn delete_node(&self, name: &Certname, expected: Option<u64>) -> Result<(), StoreError> {
        let name = name.clone();
        self.write(move |txn| {
            let mut nodes = txn.open_table(NODES)?;
            let current: Stored<Node> = match nodes.get(name.as_str())? {
                Some(v) => decode(v.value())?,
                None => {
                    return Err(StoreError::NotFound {
                        kind: Kind::Node,
                        key: name.to_string(),
                    });
                }
            };
            check_version(Kind::Node, &name, expected, current.meta.version)?;
            nodes.remove(name.as_str())?;
            drop(nodes);
            index_node(txn, &current.item, false)
        })
        .await
    }

    async fn create_activity(&self, activity: Activity) -> Result<Activity, StoreError> {
        self.write(move |txn| {
            let mut dates = txn.open_table(ACTIVITY_DATES)?;
            if dates.get(activity.id.as_str())?.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: Kind::Activity,
                    key: activity.id.clone(),
                });
            }
            let date = activity.date.to_string();
            dates.insert(activity.id.as_str(), date.as_str())?;
            txn.open_table(ACTIVITIES)?.insert(
                (date.as_str(), activity.id.as_str()),
                encode(&activity)?.as_slice(),
            )?;
            Ok(activity)
        })
        .await
    }

    async fn get_activity(&self, id: &str) -> Result<Activity, StoreError> {
        let id = id.to_owned();
        self.read(move |txn| {
            let not_found = || StoreError::NotFound {
                kind: Kind::Activity,
                key: id.clone(),
            };
            let date = match txn.open_table(ACTIVITY_DATES)?.get(id.as_str())? {
                Some(date) => date.value().to_owned(),
                None => return Err(not_found()),
            };
            let table = txn.open_table(ACTIVITIES)?;
            let found = table.get((date.as_str(), id.as_str()))?;
            found
                .map(|v| decode(v.value()))
                .transpose()?
                .ok_or_else(not_found)
        })
        .await
    }

    async fn list_activities(
        &self,
        filter: &ActivityFilter,
        page_request: &PageRequest,
    ) -> Result<Page<Activity>, StoreError> {
        let listing = filter.listing();
        let start: Option<(String, String)> = after(&listing, page_request)?;
        let (filter, limit) = (filter.clone(), page_request.limit);
        self.read(move |txn| {
            let table = txn.open_table(ACTIVITIES)?;
            let from = filter.from.map(|d| d.to_string());
            let lower = match (&start, &from) {
                (Some((date, id)), _) => Bound::Excluded((date.as_str(), id.as_str())),
                (None, Some(from)) => Bound::Included((from.as_str(), "")),
                (None, None) => Bound::Unbounded,
            };
            let mut items = Vec::new();
            for entry in table.range::<(&str, &str)>((lower, Bound::Unbounded))? {
                let activity: Activity = decode(entry?.1.value())?;
                if filter.to.is_some_and(|to| activity.date > to) {
                    break;
                }
                if filter.matches(&activity) {
                    items.push(activity);
                    if items.len() > limit {
                        break;
                    }
                }
            }
            Ok(page(items, limit, &listing, |a: &Activity| {
                (a.date.to_string(), a.id.clone())
            }))
        })
        .await
    }
}
