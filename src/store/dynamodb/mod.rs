//! The DynamoDB store. Every write is one `TransactWriteItems`: the object's own conditional
//! put, update or delete, together with the reference counts of what it names, each
//! conditional on that item existing. Deletes are conditional on a zero reference count, so
//! referential integrity never rests on a read-then-write race.

mod items;
pub mod tables;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use serde::de::DeserializeOwned;

use self::items::{
    Item, Outcome, adjust_references, delete_versioned, from_item, is_validation_error, n, outcome,
    put_new, put_versioned, ref_count, s, sdk_error, to_item, update_versioned,
};
use self::tables::{
    ACTIVITIES, DATE_ID, ENVIRONMENTS, Index, NODE_GROUPS, NODES, REF_COUNT, SORT_KEY, Table,
};
use super::{
    ActivityFilter, Cursor, EnvironmentFilter, Kind, MAX_REFERRERS, NodeFilter, Page, PageRequest,
    Store, StoreError, check_version, referrers,
};
use crate::domain::{
    Activity, Certname, Environment, EnvironmentKey, GroupName, Meta, Node, NodeGroup, Stored,
};

const BACKEND: &str = "dynamodb";
/// Attempts at a write that keeps meeting concurrent writes before answering 503.
const MAX_TRIES: u32 = 6;
/// A transaction holds at most 100 actions; ancestors beyond this are not re-checked.
const MAX_CHECKED_ANCESTORS: usize = 90;

/// How to reach DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoSettings {
    /// e.g. DynamoDB Local's `http://127.0.0.1:8000`; `None` for AWS.
    pub endpoint: Option<String>,
    pub table_prefix: String,
    pub connect_timeout: Duration,
    /// Bounds a whole call, retries included.
    pub operation_timeout: Duration,
    pub max_attempts: u32,
}

pub struct DynamoStore {
    client: Client,
    environments: String,
    node_groups: String,
    nodes: String,
    activities: String,
}

/// What a failed condition of one transaction action means.
#[derive(Debug, Clone)]
enum Role {
    /// The object written: it changed since it was read, so read again and retry.
    Main,
    /// A referenced object is missing.
    Missing {
        field: &'static str,
        kind: Kind,
        key: String,
    },
    /// Something changed under us; read again and retry.
    Retry,
}

/// Reference-count changes of one transaction, merged per referenced item.
#[derive(Default)]
struct References {
    changes: BTreeMap<(String, String), Change>,
}

struct Change {
    table: String,
    partition: &'static str,
    key: Item,
    delta: i64,
    version: Option<u64>,
    on_fail: Role,
}

impl References {
    fn add(&mut self, id: String, change: Change) {
        match self.changes.entry((change.table.clone(), id)) {
            Entry::Vacant(slot) => {
                slot.insert(change);
            }
            Entry::Occupied(mut slot) => {
                let merged = slot.get_mut();
                merged.delta += change.delta;
                merged.version = merged.version.or(change.version);
                if matches!(change.on_fail, Role::Missing { .. }) {
                    merged.on_fail = change.on_fail;
                }
            }
        }
    }

    fn into_actions(self) -> Result<Vec<(TransactWriteItem, Role)>, StoreError> {
        self.changes
            .into_values()
            .map(|c| {
                let role = if c.version.is_some() {
                    Role::Retry
                } else {
                    c.on_fail
                };
                Ok((
                    adjust_references(&c.table, c.partition, c.key, c.delta, c.version)?,
                    role,
                ))
            })
            .collect()
    }
}

fn env_key(key: &EnvironmentKey) -> Item {
    Item::from([
        (
            "environment_name".to_owned(),
            s(key.environment_name.as_str()),
        ),
        (
            "puppet_cluster_name".to_owned(),
            s(key.puppet_cluster_name.as_str()),
        ),
    ])
}

fn group_key(name: &str) -> Item {
    Item::from([("name".to_owned(), s(name))])
}

fn node_key(name: &str) -> Item {
    Item::from([("unique_name".to_owned(), s(name))])
}

/// Evaluates `attempt` (a `Result<Option<R>, StoreError>`) until it gives a result, backing
/// off between tries; `Ok(None)` means "something changed under us, try again".
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut tries: u32 = 0;
        loop {
            if tries == MAX_TRIES {
                break Err(StoreError::Unavailable(
                    "concurrent writes to the same objects kept conflicting".into(),
                ));
            }
            if tries > 0 {
                tokio::time::sleep(Duration::from_millis(5 << tries)).await;
            }
            tries += 1;
            match $attempt {
                Ok(Some(done)) => break Ok(done),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        }
    }};
}

/// One listing: a Query on an index, optionally filtered.
struct Listing<'a> {
    table: &'static Table,
    table_name: &'a str,
    /// Names the listing (and its filters) in cursors, as `*Filter::listing` does.
    cursor_name: String,
    index: &'static Index,
    partition: String,
    /// Inclusive bounds on the index's sort key.
    range: Option<(String, String)>,
    filters: Vec<(&'static str, String)>,
}

impl DynamoStore {
    /// A client from the default AWS configuration (credentials, region) with these settings.
    pub async fn connect(settings: &DynamoSettings) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.connect_timeout)
            .operation_timeout(settings.operation_timeout)
            .operation_attempt_timeout(settings.operation_timeout / 2)
            .build();
        let region = RegionProviderChain::default_provider().or_else("us-east-1");
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts))
            .load()
            .await;
        let mut config = aws_sdk_dynamodb::config::Builder::from(&sdk);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Self::new(Client::from_conf(config.build()), &settings.table_prefix)
    }

    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            environments: ENVIRONMENTS.name(prefix),
            node_groups: NODE_GROUPS.name(prefix),
            nodes: NODES.name(prefix),
            activities: ACTIVITIES.name(prefix),
            client,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn get(&self, table: &str, key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.item)
    }

    async fn get_object<T: DeserializeOwned>(
        &self,
        table: &str,
        key: Item,
        kind: Kind,
        name: String,
    ) -> Result<(T, Item), StoreError> {
        let item = self
            .get(table, key)
            .await?
            .ok_or(StoreError::NotFound { kind, key: name })?;
        Ok((from_item(&item)?, item))
    }

    /// The stored object and its item, refused unless at the `expected` version (If-Match).
    async fn current<T: DeserializeOwned>(
        &self,
        table: &str,
        key: Item,
        kind: Kind,
        name: String,
        expected: Option<u64>,
    ) -> Result<(Stored<T>, Item), StoreError> {
        let (current, item): (Stored<T>, Item) =
            self.get_object(table, key, kind, name.clone()).await?;
        check_version(kind, &name, expected, current.meta.version)?;
        Ok((current, item))
    }

    /// Runs one transaction; `Some(())` when committed, `None` when it should be retried.
    async fn transact(
        &self,
        actions: Vec<(TransactWriteItem, Role)>,
    ) -> Result<Option<Role>, StoreError> {
        let (items, roles): (Vec<_>, Vec<_>) = actions.into_iter().unzip();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match outcome(result)? {
            Outcome::Committed => Ok(None),
            Outcome::ConditionFailed(i) => Ok(Some(roles[i].clone())),
            Outcome::Conflict => Ok(Some(Role::Retry)),
        }
    }

    /// Commits, or says why not: `Ok(None)` means try again.
    async fn commit<R>(
        &self,
        actions: Vec<(TransactWriteItem, Role)>,
        done: R,
        on_main: impl FnOnce() -> Option<StoreError>,
    ) -> Result<Option<R>, StoreError> {
        match self.transact(actions).await? {
            None => Ok(Some(done)),
            Some(Role::Main) => on_main().map_or(Ok(None), Err),
            Some(Role::Missing { field, kind, key }) => {
                Err(StoreError::MissingReference { field, kind, key })
            }
            Some(Role::Retry) => Ok(None),
        }
    }

    /// Commits a create (the new item's action first), trying again on conflicts; a failed
    /// condition on the new item means it exists already.
    async fn create<R: Clone>(
        &self,
        actions: Vec<(TransactWriteItem, Role)>,
        created: R,
        kind: Kind,
        key: String,
    ) -> Result<R, StoreError> {
        retrying!(
            async {
                self.commit(actions.clone(), created.clone(), || {
                    Some(StoreError::AlreadyExists {
                        kind,
                        key: key.clone(),
                    })
                })
                .await
            }
            .await
        )
    }

    async fn list<T: DeserializeOwned>(
        &self,
        listing: Listing<'_>,
        page: &PageRequest,
    ) -> Result<Page<T>, StoreError> {
        let key_attributes = listing.table.key_attributes(Some(listing.index));
        let mut start = match &page.cursor {
            None => None,
            Some(text) => {
                let key: BTreeMap<String, String> =
                    Cursor::decode(BACKEND, &listing.cursor_name, text)?;
                let valid = key.len() == key_attributes.len()
                    && key_attributes
                        .iter()
                        .all(|a| key.get(*a).is_some_and(|v| !v.is_empty()));
                if !valid {
                    return Err(StoreError::InvalidCursor);
                }
                Some(key.into_iter().map(|(k, v)| (k, s(v))).collect::<Item>())
            }
        };
        let mut names = std::collections::HashMap::from([(
            "#pk".to_owned(),
            listing.index.partition.to_owned(),
        )]);
        let mut values = Item::from([(":pk".to_owned(), s(listing.partition))]);
        let mut key_condition = "#pk = :pk".to_owned();
        if let Some((low, high)) = listing.range {
            names.insert("#sk".to_owned(), listing.index.sort.to_owned());
            values.insert(":lo".to_owned(), s(low));
            values.insert(":hi".to_owned(), s(high));
            key_condition.push_str(" AND #sk BETWEEN :lo AND :hi");
        }
        let mut conditions = Vec::new();
        for (i, (attribute, value)) in listing.filters.into_iter().enumerate() {
            names.insert(format!("#f{i}"), attribute.to_owned());
            values.insert(format!(":f{i}"), s(value));
            conditions.push(format!("#f{i} = :f{i}"));
        }
        let filter = (!conditions.is_empty()).then(|| conditions.join(" AND "));
        let mut found: Vec<Item> = Vec::new();
        loop {
            let wanted = page.limit + 1 - found.len();
            let batch = if filter.is_some() {
                wanted.max(100)
            } else {
                wanted
            };
            let out = self
                .client
                .query()
                .table_name(listing.table_name)
                .index_name(listing.index.name)
                .key_condition_expression(&key_condition)
                .set_filter_expression(filter.clone())
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .set_exclusive_start_key(start.take())
                .limit(i32::try_from(batch).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|e| {
                    if page.cursor.is_some() && is_validation_error(&e) {
                        StoreError::InvalidCursor
                    } else {
                        sdk_error(e)
                    }
                })?;
            found.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if found.len() <= page.limit => start = Some(key),
                _ => break,
            }
        }
        let next_cursor = if found.len() > page.limit {
            found.truncate(page.limit);
            found.last().map(|last| {
                let key: BTreeMap<String, String> = key_attributes
                    .iter()
                    .filter_map(|a| match last.get(*a) {
                        Some(AttributeValue::S(v)) => Some(((*a).to_owned(), v.clone())),
                        _ => None,
                    })
                    .collect();
                Cursor::encode(BACKEND, &listing.cursor_name, key)
            })
        } else {
            None
        };
        let items = found.iter().map(from_item).collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor })
    }

    fn node_listing(&self, filter: &NodeFilter) -> Listing<'_> {
        let env = filter
            .environment_name
            .as_ref()
            .map(|e| ("environment_name", e.to_string()));
        let cluster = filter
            .puppet_cluster_name
            .as_ref()
            .map(|c| ("puppet_cluster_name", c.to_string()));
        let (index, partition, filters) = match (&filter.node_group_name, env, cluster) {
            (Some(group), env, cluster) => (
                "by_group",
                group.to_string(),
                [env, cluster].into_iter().flatten().collect(),
            ),
            (None, Some(env), cluster) => ("by_environment", env.1, cluster.into_iter().collect()),
            (None, None, Some(cluster)) => ("by_cluster", cluster.1, Vec::new()),
            (None, None, None) => ("ordered", "node".to_owned(), Vec::new()),
        };
        Listing {
            table: &NODES,
            table_name: &self.nodes,
            cursor_name: filter.listing(),
            index: NODES.index_named(index),
            partition,
            range: None,
            filters,
        }
    }

    async fn node_names(&self, filter: NodeFilter) -> Result<Vec<String>, StoreError> {
        let page = PageRequest {
            limit: MAX_REFERRERS + 1,
            cursor: None,
        };
        let nodes: Page<Stored<Node>> = self.list(self.node_listing(&filter), &page).await?;
        Ok(nodes
            .items
            .into_iter()
            .map(|n| n.item.unique_name.to_string())
            .collect())
    }

    /// Reads the chain above a group's new parent, refusing a cycle or a missing parent.
    async fn ancestors(&self, group: &NodeGroup) -> Result<Vec<(GroupName, u64)>, StoreError> {
        let mut chain = vec![group.name.to_string()];
        let mut found = Vec::new();
        let mut next = group.parent.clone();
        while let Some(name) = next {
            chain.push(name.to_string());
            if name == group.name || found.iter().any(|(n, _)| *n == name) {
                return Err(StoreError::Cycle { chain });
            }
            let item = self
                .get(&self.node_groups, group_key(name.as_str()))
                .await?;
            let Some(item) = item else {
                return Err(StoreError::MissingReference {
                    field: "parent",
                    kind: Kind::NodeGroup,
                    key: name.to_string(),
                });
            };
            let parent: Stored<NodeGroup> = from_item(&item)?;
            found.push((name, parent.meta.version));
            next = parent.item.parent;
        }
        Ok(found)
    }

    fn group_change(
        &self,
        name: &GroupName,
        delta: i64,
        version: Option<u64>,
        on_fail: Role,
    ) -> Change {
        Change {
            table: self.node_groups.clone(),
            partition: NODE_GROUPS.partition,
            key: group_key(name.as_str()),
            delta,
            version,
            on_fail,
        }
    }

    fn node_references(&self, refs: &mut References, node: &Node, delta: i64) {
        let on_fail = |field, kind, key: String| {
            if delta > 0 {
                Role::Missing { field, kind, key }
            } else {
                Role::Retry
            }
        };
        let key = node.environment_key();
        let change = Change {
            table: self.environments.clone(),
            partition: ENVIRONMENTS.partition,
            key: env_key(&key),
            delta,
            version: None,
            on_fail: on_fail("environment_name", Kind::Environment, key.to_string()),
        };
        refs.add(key.to_string(), change);
        if let Some(group) = &node.node_group_name {
            let fail = on_fail("node_group_name", Kind::NodeGroup, group.to_string());
            refs.add(
                group.to_string(),
                self.group_change(group, delta, None, fail),
            );
        }
    }

    fn parent_reference(&self, refs: &mut References, parent: &GroupName, delta: i64) {
        let on_fail = if delta > 0 {
            Role::Missing {
                field: "parent",
                kind: Kind::NodeGroup,
                key: parent.to_string(),
            }
        } else {
            Role::Retry
        };
        refs.add(
            parent.to_string(),
            self.group_change(parent, delta, None, on_fail),
        );
    }
}

#[async_trait]
impl Store for DynamoStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let probe = EnvironmentKey {
            environment_name: crate::domain::EnvironmentName::parse("ping").expect("valid"),
            puppet_cluster_name: crate::domain::ClusterName::parse("ping").expect("valid"),
        };
        tokio::try_join!(
            self.get(&self.environments, env_key(&probe)),
            self.get(&self.node_groups, group_key("ping")),
            self.get(&self.nodes, node_key("ping")),
        )?;
        Ok(())
    }

    async fn create_environment(
        &self,
        env: Environment,
    ) -> Result<Stored<Environment>, StoreError> {
        let stored = Stored {
            item: env,
            meta: Meta::first(),
        };
        let key = stored.item.key();
        let mut item = to_item(&stored, "environment")?;
        item.insert(
            SORT_KEY.into(),
            s(format!(
                "{}/{}",
                key.environment_name, key.puppet_cluster_name
            )),
        );
        item.insert(REF_COUNT.into(), n(0));
        let put = put_new(&self.environments, ENVIRONMENTS.partition, item)?;
        let actions = vec![(put, Role::Main)];
        self.create(actions, stored, Kind::Environment, key.to_string())
            .await
    }

    async fn get_environment(
        &self,
        key: &EnvironmentKey,
    ) -> Result<Stored<Environment>, StoreError> {
        let (env, _) = self
            .get_object(
                &self.environments,
                env_key(key),
                Kind::Environment,
                key.to_string(),
            )
            .await?;
        Ok(env)
    }

    async fn list_environments(
        &self,
        filter: &EnvironmentFilter,
        page: &PageRequest,
    ) -> Result<Page<Stored<Environment>>, StoreError> {
        let (index, partition) = match &filter.puppet_cluster_name {
            Some(cluster) => ("by_cluster", cluster.to_string()),
            None => ("ordered", "environment".to_owned()),
        };
        let listing = Listing {
            table: &ENVIRONMENTS,
            table_name: &self.environments,
            cursor_name: filter.listing(),
            index: ENVIRONMENTS.index_named(index),
            partition,
            range: None,
            filters: Vec::new(),
        };
        self.list(listing, page).await
    }

    async fn delete_environment(
        &self,
        key: &EnvironmentKey,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        retrying!(
            async {
                let (current, item): (Stored<Environment>, _) = self
                    .current(
                        &self.environments,
                        env_key(key),
                        Kind::Environment,
                        key.to_string(),
                        expected,
                    )
                    .await?;
                if ref_count(&item) > 0 {
                    let names = self
                        .node_names(NodeFilter {
                            environment_name: Some(key.environment_name.clone()),
                            puppet_cluster_name: Some(key.puppet_cluster_name.clone()),
                            node_group_name: None,
                        })
                        .await?;
                    return Err(StoreError::StillReferenced {
                        kind: Kind::Environment,
                        key: key.to_string(),
                        referrers: referrers("node", names),
                    });
                }
                let delete =
                    delete_versioned(&self.environments, env_key(key), current.meta.version, true)?;
                self.commit(vec![(delete, Role::Main)], (), || None).await
            }
            .await
        )
    }

    async fn create_node_group(&self, group: NodeGroup) -> Result<Stored<NodeGroup>, StoreError> {
        let name = group.name.clone();
        if group.parent.as_ref() == Some(&name) {
            // A group cannot name itself: it either exists already or its parent does not.
            return Err(
                match self
                    .get(&self.node_groups, group_key(name.as_str()))
                    .await?
                {
                    Some(_) => StoreError::AlreadyExists {
                        kind: Kind::NodeGroup,
                        key: name.to_string(),
                    },
                    None => StoreError::MissingReference {
                        field: "parent",
                        kind: Kind::NodeGroup,
                        key: name.to_string(),
                    },
                },
            );
        }
        let stored = Stored {
            item: group,
            meta: Meta::first(),
        };
        let mut item = to_item(&stored, "node_group")?;
        item.insert(REF_COUNT.into(), n(0));
        let mut actions = vec![(
            put_new(&self.node_groups, NODE_GROUPS.partition, item)?,
            Role::Main,
        )];
        if let Some(parent) = &stored.item.parent {
            let mut refs = References::default();
            self.parent_reference(&mut refs, parent, 1);
            actions.extend(refs.into_actions()?);
        }
        self.create(actions, stored, Kind::NodeGroup, name.to_string())
            .await
    }

    async fn get_node_group(&self, name: &GroupName) -> Result<Stored<NodeGroup>, StoreError> {
        let (group, _) = self
            .get_object(
                &self.node_groups,
                group_key(name.as_str()),
                Kind::NodeGroup,
                name.to_string(),
            )
            .await?;
        Ok(group)
    }

    async fn list_node_groups(
        &self,
        page: &PageRequest,
    ) -> Result<Page<Stored<NodeGroup>>, StoreError> {
        let listing = Listing {
            table: &NODE_GROUPS,
            table_name: &self.node_groups,
            cursor_name: "node_groups".to_owned(),
            index: NODE_GROUPS.index_named("ordered"),
            partition: "node_group".to_owned(),
            range: None,
            filters: Vec::new(),
        };
        self.list(listing, page).await
    }

    async fn replace_node_group(
        &self,
        group: NodeGroup,
        expected: Option<u64>,
    ) -> Result<Stored<NodeGroup>, StoreError> {
        let name = group.name.clone();
        retrying!(
            async {
                let (current, _): (Stored<NodeGroup>, _) = self
                    .current(
                        &self.node_groups,
                        group_key(name.as_str()),
                        Kind::NodeGroup,
                        name.to_string(),
                        expected,
                    )
                    .await?;
                let ancestors = self.ancestors(&group).await?;
                let stored = Stored {
                    item: group.clone(),
                    meta: current.meta.next(),
                };
                let item = to_item(&stored, "node_group")?;
                let update = update_versioned(
                    &self.node_groups,
                    group_key(name.as_str()),
                    item,
                    &["description", "parent"],
                    current.meta.version,
                )?;
                let mut refs = References::default();
                for (ancestor, version) in ancestors.iter().take(MAX_CHECKED_ANCESTORS) {
                    let check = self.group_change(ancestor, 0, Some(*version), Role::Retry);
                    refs.add(ancestor.to_string(), check);
                }
                if current.item.parent != group.parent {
                    if let Some(old) = &current.item.parent {
                        self.parent_reference(&mut refs, old, -1);
                    }
                    if let Some(new) = &group.parent {
                        self.parent_reference(&mut refs, new, 1);
                    }
                }
                let mut actions = vec![(update, Role::Main)];
                actions.extend(refs.into_actions()?);
                self.commit(actions, stored, || None).await
            }
            .await
        )
    }

    async fn delete_node_group(
        &self,
        name: &GroupName,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        retrying!(
            async {
                let (current, item): (Stored<NodeGroup>, _) = self
                    .current(
                        &self.node_groups,
                        group_key(name.as_str()),
                        Kind::NodeGroup,
                        name.to_string(),
                        expected,
                    )
                    .await?;
                if ref_count(&item) > 0 {
                    let nodes = self
                        .node_names(NodeFilter {
                            node_group_name: Some(name.clone()),
                            ..NodeFilter::default()
                        })
                        .await?;
                    let children: Page<Stored<NodeGroup>> = self
                        .list(
                            Listing {
                                table: &NODE_GROUPS,
                                table_name: &self.node_groups,
                                cursor_name: "node_groups".to_owned(),
                                index: NODE_GROUPS.index_named("by_parent"),
                                partition: name.to_string(),
                                range: None,
                                filters: Vec::new(),
                            },
                            &PageRequest {
                                limit: MAX_REFERRERS + 1,
                                cursor: None,
                            },
                        )
                        .await?;
                    let mut users = referrers("node", nodes);
                    users.extend(referrers(
                        "node group",
                        children
                            .items
                            .into_iter()
                            .map(|g| g.item.name.to_string())
                            .collect(),
                    ));
                    return Err(StoreError::StillReferenced {
                        kind: Kind::NodeGroup,
                        key: name.to_string(),
                        referrers: users,
                    });
                }
                let mut actions = vec![(
                    delete_versioned(
                        &self.node_groups,
                        group_key(name.as_str()),
                        current.meta.version,
                        true,
                    )?,
                    Role::Main,
                )];
                if let Some(parent) = &current.item.parent {
                    let mut refs = References::default();
                    self.parent_reference(&mut refs, parent, -1);
                    actions.extend(refs.into_actions()?);
                }
                self.commit(actions, (), || None).await
            }
            .await
        )
    }

    async fn create_node(&self, node: Node) -> Result<Stored<Node>, StoreError> {
        let stored = Stored {
            item: node,
            meta: Meta::first(),
        };
        let name = stored.item.unique_name.to_string();
        let mut actions = vec![(
            put_new(&self.nodes, NODES.partition, to_item(&stored, "node")?)?,
            Role::Main,
        )];
        let mut refs = References::default();
        self.node_references(&mut refs, &stored.item, 1);
        actions.extend(refs.into_actions()?);
        self.create(actions, stored, Kind::Node, name.clone()).await
    }

    async fn get_node(&self, name: &Certname) -> Result<Stored<Node>, StoreError> {
        let (node, _) = self
            .get_object(
                &self.nodes,
                node_key(name.as_str()),
                Kind::Node,
                name.to_string(),
            )
            .await?;
        Ok(node)
    }

    async fn list_nodes(
        &self,
        filter: &NodeFilter,
        page: &PageRequest,
    ) -> Result<Page<Stored<Node>>, StoreError> {
        self.list(self.node_listing(filter), page).await
    }

    async fn replace_node(
        &self,
        node: Node,
        expected: Option<u64>,
    ) -> Result<Stored<Node>, StoreError> {
        let name = node.unique_name.clone();
        retrying!(
            async {
                let (current, _): (Stored<Node>, _) = self
                    .current(
                        &self.nodes,
                        node_key(name.as_str()),
                        Kind::Node,
                        name.to_string(),
                        expected,
                    )
                    .await?;
                let stored = Stored {
                    item: node.clone(),
                    meta: current.meta.next(),
                };
                let put =
                    put_versioned(&self.nodes, to_item(&stored, "node")?, current.meta.version)?;
                let mut refs = References::default();
                self.node_references(&mut refs, &current.item, -1);
                self.node_references(&mut refs, &stored.item, 1);
                let mut actions = vec![(put, Role::Main)];
                actions.extend(refs.into_actions()?);
                self.commit(actions, stored, || None).await
            }
            .await
        )
    }

    async fn delete_node(&self, name: &Certname, expected: Option<u64>) -> Result<(), StoreError> {
        retrying!(
            async {
                let (current, _): (Stored<Node>, _) = self
                    .current(
                        &self.nodes,
                        node_key(name.as_str()),
                        Kind::Node,
                        name.to_string(),
                        expected,
                    )
                    .await?;
                let delete = delete_versioned(
                    &self.nodes,
                    node_key(name.as_str()),
                    current.meta.version,
                    false,
                )?;
                let mut refs = References::default();
                self.node_references(&mut refs, &current.item, -1);
                let mut actions = vec![(delete, Role::Main)];
                actions.extend(refs.into_actions()?);
                self.commit(actions, (), || None).await
            }
            .await
        )
    }

    async fn create_activity(&self, activity: Activity) -> Result<Activity, StoreError> {
        let mut item = to_item(&activity, "activity")?;
        item.insert(DATE_ID.into(), s(activity.date_id()));
        let put = put_new(&self.activities, ACTIVITIES.partition, item)?;
        let id = activity.id.clone();
        self.create(vec![(put, Role::Main)], activity, Kind::Activity, id)
            .await
    }

    async fn get_activity(&self, id: &str) -> Result<Activity, StoreError> {
        let key = Item::from([("id".to_owned(), s(id))]);
        let (activity, _) = self
            .get_object(&self.activities, key, Kind::Activity, id.to_owned())
            .await?;
        Ok(activity)
    }

    async fn list_activities(
        &self,
        filter: &ActivityFilter,
        page: &PageRequest,
    ) -> Result<Page<Activity>, StoreError> {
        let customer = filter
            .customer
            .as_ref()
            .map(|c| ("customer", c.to_string()));
        let project = filter.project.as_ref().map(|p| ("project", p.to_string()));
        let engineer = filter
            .engineer
            .as_ref()
            .map(|e| ("engineer", e.to_string()));
        let (index, partition, filters) = match (customer, engineer, project) {
            (Some(c), e, p) => ("by_customer", c.1, [e, p].into_iter().flatten().collect()),
            (None, Some(e), p) => ("by_engineer", e.1, p.into_iter().collect()),
            (None, None, Some(p)) => ("by_project", p.1, Vec::new()),
            (None, None, None) => ("ordered", "activity".to_owned(), Vec::new()),
        };
        // `<date>#<id>` sorts between `<from>` and `<to>~` exactly when the date is in range.
        let low = filter
            .from
            .map_or_else(|| "0".to_owned(), |d| d.to_string());
        let high = filter
            .to
            .map_or_else(|| "~".to_owned(), |d| format!("{d}~"));
        let listing = Listing {
            table: &ACTIVITIES,
            table_name: &self.activities,
            cursor_name: filter.listing(),
            index: ACTIVITIES.index_named(index),
            partition,
            range: Some((low, high)),
            filters,
        };
        self.list(listing, page).await
    }
}
