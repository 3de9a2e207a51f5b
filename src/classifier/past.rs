//! Classifications as they were: a node, every group and the node's rule view as the history
//! has them at an instant, judged again (memberships by rule and pin replayed).

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;

use super::Classifier;
use crate::domain::{
    Certname, Classification, Explanation, GroupName, GroupTree, Node, NodeGroup, Stored,
    classify_all,
};
use crate::error::AppError;
use crate::store::enc::{NODE, NODE_GROUP};
use crate::store::{ChangeFilter, Key, PageRequest, RecordKind, Store, StoreError, decode};

/// The object as it was at `at`: its last revision then, or, for an object whose history
/// begins later but which has not changed since before `at`, the object as it is.
async fn as_of<T: DeserializeOwned>(
    store: &Store,
    kind: &'static RecordKind,
    key: &Key,
    at: &DateTime<Utc>,
) -> Result<Option<T>, AppError> {
    let internal = |e: serde_json::Error| AppError::Internal(Box::new(e));
    if let Some(revision) = store.revision_at(kind, key, at).await? {
        return revision
            .object
            .map(|o| serde_json::from_value::<Stored<T>>(o).map(|s| s.item))
            .transpose()
            .map_err(internal);
    }
    let current = match store.record(kind, key).await {
        Ok(record) => record,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let object: Stored<T> = decode(&current)?;
    Ok((object.meta.updated_at <= *at).then_some(object.item))
}

/// The group tree as it was at `at`: every group that existed then (those that exist now,
/// and those whose revisions since say they changed or went), each as it was.
async fn tree_at(store: &Store, at: &DateTime<Utc>) -> Result<GroupTree, AppError> {
    let now = store.current_tree().await?;
    let mut names: BTreeSet<GroupName> = now.names().cloned().collect();
    let filter = ChangeFilter {
        since: Some(*at),
        kind: Some(&NODE_GROUP),
        ..ChangeFilter::default()
    };
    let mut cursor = None;
    loop {
        let page = PageRequest {
            limit: 1000,
            cursor,
        };
        let changes = store.changes(&filter, &page).await?;
        for revision in &changes.items {
            names.extend(GroupName::parse(&revision.key).ok());
        }
        match changes.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut groups = Vec::with_capacity(names.len());
    for name in names {
        let key = Key::one(name.as_str());
        groups.extend(as_of::<NodeGroup>(store, &NODE_GROUP, &key, at).await?);
    }
    Ok(GroupTree::of_groups(groups))
}

/// The node's classification as it was at `at`, judged as it was then: the node, every
/// group and the node's rule view as they were (so memberships by rule and pin are replayed);
/// `None` if the node did not exist then.
impl Classifier<'_> {
    pub async fn classification_at(
        &self,
        name: &Certname,
        at: &DateTime<Utc>,
    ) -> Result<Option<(Classification, Explanation)>, AppError> {
        let store = self.store;
        let Some(node) = as_of::<Node>(store, &NODE, &Key::one(name.as_str()), at).await? else {
            return Ok(None);
        };
        let Some(view) = store.view_at(name, at).await? else {
            return Err(AppError::NotFound(format!(
                "the facts node {name} had at {} are no longer in the history",
                at.to_rfc3339_opts(SecondsFormat::Millis, true)
            )));
        };
        let tree = tree_at(store, at).await?;
        let facts = view.map(|v| v.into_facts());
        // A group of its chains that is gone from the history: as for a node, not found.
        let chains = tree.leaves(&node, facts.as_ref()).map_err(|e| {
            AppError::NotFound(format!(
                "node {name}'s groups at {} are not all in the history ({e})",
                at.to_rfc3339_opts(SecondsFormat::Millis, true)
            ))
        })?;
        let chains: Vec<Vec<&NodeGroup>> = chains
            .iter()
            .map(|chain| chain.iter().map(|g| &**g).collect())
            .collect();
        classify_all(&node, &chains)
            .map(Some)
            .map_err(|conflicts| super::conflicted(name, conflicts))
    }
}
