//! A pin never outlives its node: deleting a node, or unpinning it from all groups, takes it
//! off every group that pins it in one commit, each group a new revision, the commit
//! conditional on the group tree that was read (a pin made meanwhile makes it try again). So
//! a rebuilt host of a deleted certname joins nothing through its old pins.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde_json::Value;

use super::tree::{held_fleet, hold, moved_fleet, raise};
use super::{NODE, NODE_GROUP};
use crate::domain::{Certname, GroupName, GroupTree, Node};
use crate::store::Planned;
use crate::store::change::{Edit, Guard, MAX_TRIES, Step};
use crate::store::engine::Key;
use crate::store::history::{HEAD, head_key};
use crate::store::{Kind, Result, Store, StoreError};

/// The guard of a node's deletion: the writes that take it off every group pinning it.
pub(super) struct Unpin<'a> {
    pub(super) store: &'a Store,
    pub(super) by: Edit<'a>,
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
            if let Some((mut steps, _)) = self.store.unpin_steps(&tree, &nodes, self.by).await? {
                steps.push(moved_fleet());
                return Ok(steps);
            }
        }
        Err(StoreError::Unavailable(
            "the groups pinning the node kept changing".into(),
        ))
    }
}

impl Store {
    /// Those of `names` that were deleted: absent now, with a history (they existed once).
    /// Read 50 at a time, each with its history head.
    pub async fn deleted_nodes(&self, names: &BTreeSet<Certname>) -> Result<Vec<Certname>> {
        let names: Vec<&Certname> = names.iter().collect();
        let mut deleted = Vec::new();
        for chunk in names.chunks(50) {
            let keys: Vec<_> = chunk
                .iter()
                .flat_map(|name| {
                    let key = Key::one(name.as_str());
                    [(&NODE, key.clone()), (&HEAD, head_key(&NODE, &key))]
                })
                .collect();
            let found = self.db.engine().get(&keys).await?;
            for (name, pair) in chunk.iter().zip(found.chunks(2)) {
                if pair[0].is_none() && pair[1].as_ref().is_some_and(|head| head.refs > 0) {
                    deleted.push((*name).clone());
                }
            }
        }
        Ok(deleted)
    }

    /// The writes that take `nodes` off every group of `tree` that pins them, conditional on
    /// `tree` being current, and the groups they change; `None` if a group changed since
    /// `tree` was read (read the tree again).
    async fn unpin_steps(
        &self,
        tree: &GroupTree,
        nodes: &BTreeSet<Certname>,
        by: Edit<'_>,
    ) -> Result<Option<(Vec<Step>, Vec<GroupName>)>> {
        let names: BTreeSet<&GroupName> = nodes.iter().flat_map(|n| tree.pinning(n)).collect();
        // Judged (unpin-from-all), on the nodes as they were too.
        let held: Vec<Step> = by.judged.map(held_fleet).into_iter().collect();
        if names.is_empty() {
            // Still nobody pinning them at the commit.
            return Ok(Some(([vec![hold(tree)], held].concat(), Vec::new())));
        }
        let mut planned = Vec::new();
        for name in &names {
            let group = match self.get_node_group(name).await {
                Ok(group) => group,
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            // A group a classification tree owns changes there, or when forced.
            if let Some(owner) = &group.meta.managed_by
                && by.apply.is_none()
                && !by.force
            {
                return Err(StoreError::Managed {
                    kind: Kind::NodeGroup,
                    key: name.to_string(),
                    owner: owner.clone(),
                });
            }
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
        steps.extend(held);
        Ok(Some((steps, names.into_iter().cloned().collect())))
    }

    /// Takes `nodes` off every group that pins them, in one commit made only while the tree
    /// is still `tree` (the one the change was judged on): the groups changed, or `None` if
    /// the tree moved (judge again on the new one).
    pub async fn unpin_from_all(
        &self,
        tree: &GroupTree,
        nodes: &BTreeSet<Certname>,
        by: Edit<'_>,
    ) -> Result<Option<Vec<GroupName>>> {
        let Some((steps, groups)) = self.unpin_steps(tree, nodes, by).await? else {
            return Ok(None);
        };
        // The groups may name the same environment: one write per record.
        let (steps, _) = crate::store::change::merge(steps)?;
        let done = match by.dry_run {
            true => self.db.check(steps).await?,
            false => self.db.commit(steps).await?,
        };
        Ok(done.then_some(groups))
    }
}
