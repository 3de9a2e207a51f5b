//! A pin never outlives its node: deleting a node, or unpinning it from all groups, takes it
//! off every group that pins it in one commit, each group a new revision, the commit
//! conditional on the group tree that was read (a pin made meanwhile makes it try again). So
//! a rebuilt host of a deleted certname joins nothing through its old pins.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde_json::Value;

use super::NODE_GROUP;
use super::tree::{hold, raise};
use crate::domain::{Certname, GroupName, GroupTree, Node};
use crate::store::Planned;
use crate::store::engine::Key;
use crate::store::rules::{By, Guard, MAX_TRIES, Step};
use crate::store::{Result, Store, StoreError};

/// The guard of a node's deletion: the writes that take it off every group pinning it.
pub(super) struct Unpin<'a> {
    pub(super) store: &'a Store,
    pub(super) by: By<'a>,
}

#[async_trait]
impl Guard<Node> for Unpin<'_> {
    async fn check(&self, before: Option<&Node>, after: Option<&Node>) -> Result<Vec<Step>> {
        let (Some(node), None) = (before, after) else {
            return Ok(Vec::new());
        };
        let nodes = BTreeSet::from([node.unique_name.clone()]);
        for _ in 0..MAX_TRIES {
            let tree = self.store.current_tree().await?;
            if let Some((steps, _)) = self.store.unpin_steps(&tree, &nodes, self.by).await? {
                return Ok(steps);
            }
        }
        Err(StoreError::Unavailable(
            "the groups pinning the node kept changing".into(),
        ))
    }
}

impl Store {
    /// The writes that take `nodes` off every group of `tree` that pins them, conditional on
    /// `tree` being current, and the groups they change; `None` if a group changed since
    /// `tree` was read (read the tree again).
    async fn unpin_steps(
        &self,
        tree: &GroupTree,
        nodes: &BTreeSet<Certname>,
        by: By<'_>,
    ) -> Result<Option<(Vec<Step>, Vec<GroupName>)>> {
        let names: BTreeSet<&GroupName> = nodes.iter().flat_map(|n| tree.pinning(n)).collect();
        if names.is_empty() {
            // Still nobody pinning them at the commit.
            return Ok(Some((vec![hold(tree)], Vec::new())));
        }
        let mut planned = Vec::new();
        for name in &names {
            let group = match self.get_node_group(name).await {
                Ok(group) => group,
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut item = group.item;
            item.pinned.retain(|n| !nodes.contains(n));
            let Ok(Value::Object(after)) = serde_json::to_value(&item) else {
                return Err(StoreError::Internal("a group that is not an object".into()));
            };
            planned.push(Planned {
                kind: &NODE_GROUP,
                key: Key::one(name.as_str()),
                expected: Some(group.meta.version),
                after: Some(after),
            });
        }
        let mut steps = match self.db.set_steps(&planned, by).await {
            Ok((steps, _)) => steps,
            Err(StoreError::PlanStale { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        steps.push(raise(tree));
        Ok(Some((steps, names.into_iter().cloned().collect())))
    }

    /// Takes `nodes` off every group that pins them, in one commit made only while the tree
    /// is still `tree` (the one the change was judged on): the groups changed, or `None` if
    /// the tree moved (judge again on the new one).
    pub async fn unpin_from_all(
        &self,
        tree: &GroupTree,
        nodes: &BTreeSet<Certname>,
        by: By<'_>,
    ) -> Result<Option<Vec<GroupName>>> {
        let Some((steps, groups)) = self.unpin_steps(tree, nodes, by).await? else {
            return Ok(None);
        };
        // The groups may name the same environment: one write per record.
        let (steps, _) = crate::store::rules::merge(steps)?;
        let done = match by.dry_run {
            true => self.db.check(steps).await?,
            false => self.db.commit(steps).await?,
        };
        Ok(done.then_some(groups))
    }
}
