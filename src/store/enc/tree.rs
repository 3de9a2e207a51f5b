//! The node-group tree as the store keeps it: every group write raises a generation counter
//! in its own commit, so a tree read between two equal readings of the generation is one
//! consistent snapshot, and a write conditional on the generation it checked cannot race
//! another. Each process keeps the newest tree it read, until the generation moves.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::NODE_GROUP;
use crate::domain::{GroupTree, NodeGroup};
use crate::store::change::{Guard, MAX_TRIES, OnFail, Snapshot, Step, decode};
use crate::store::engine::{Expect, Key, Op, Write};
use crate::store::record::RecordKind;
use crate::store::{Kind, Result, Store, StoreError};

/// The group tree's generation: a counter (the record's reference count) that every group
/// write raises in its own commit. It lives beside the groups, under a key no group can have.
pub static GENERATION: RecordKind =
    RecordKind::new(Kind::NodeGroup, "group_tree", "node_groups", &["name"]);

pub(super) fn generation_key() -> Key {
    Key::one("/generation")
}

/// The fleet's generation: a counter every node write raises in its own commit, beside the
/// groups' (same table, a key no group can have). A group write judged on the nodes commits
/// only while it is unchanged, so a node written meanwhile makes it judged again.
pub(super) fn fleet_key() -> Key {
    Key::one("/nodes")
}

/// The write every node write makes: the fleet moves, whatever it was.
pub(super) fn moved_fleet() -> Step {
    let write = Write::new(&GENERATION, fleet_key(), Op::Adjust(1), Expect::Anything);
    (write, OnFail::Changed)
}

/// A write that changes nothing, made only while no node was written since `snapshot`; if
/// one was, the write is judged again.
pub(super) fn held_fleet(snapshot: Snapshot) -> Step {
    let expect = Expect::Refs(snapshot.nodes);
    let write = Write::new(&GENERATION, fleet_key(), Op::Adjust(0), expect);
    (write, OnFail::Moved)
}

/// `step` in a write judged on the tree: if it fails, the write is judged again.
pub(super) fn judged(step: Step) -> Step {
    (step.0, OnFail::Moved)
}

/// The write that raises the generation, made only if the tree is still the one checked.
pub(super) fn raise(tree: &GroupTree) -> Step {
    let expect = Expect::Refs(tree.generation);
    let write = Write::new(&GENERATION, generation_key(), Op::Adjust(1), expect);
    (write, OnFail::Changed)
}

/// A write that changes nothing, made only while the tree is still `tree`: a commit that
/// changes no group but was judged on the groups.
pub(super) fn hold(tree: &GroupTree) -> Step {
    let expect = Expect::Refs(tree.generation);
    let write = Write::new(&GENERATION, generation_key(), Op::Adjust(0), expect);
    (write, OnFail::Changed)
}

/// A node write moves the fleet and, judged on the groups, commits only while they are the
/// ones it was judged on. It does not move the groups (node writes would then refuse each
/// other): a group write judged meanwhile, on the node as it was, fails on the fleet instead.
pub(super) struct Held<'a> {
    pub(super) store: &'a Store,
    pub(super) judged: Option<Snapshot>,
}

#[async_trait]
impl<T: Sync> Guard<T> for Held<'_> {
    async fn check(&self, _: Option<&T>, _: Option<&T>) -> Result<Vec<Step>> {
        let Some(judged) = self.judged else {
            return Ok(vec![moved_fleet()]);
        };
        let tree = self.store.current_tree().await?;
        if tree.generation != judged.groups {
            return Err(StoreError::TreeMoved);
        }
        Ok(vec![hold(&tree), moved_fleet()])
    }
}

/// Group writes check the tree they change as of one generation, and commit only if it is
/// still current (raising it), so two writes can never together make a cycle or a chain
/// deeper than `MAX_DEPTH`.
pub(super) struct TreeGuard<'a> {
    pub(super) store: &'a Store,
    /// What the write was judged on, if it was.
    pub(super) judged: Option<Snapshot>,
}

#[async_trait]
impl Guard<NodeGroup> for TreeGuard<'_> {
    async fn check(
        &self,
        before: Option<&NodeGroup>,
        after: Option<&NodeGroup>,
    ) -> Result<Vec<Step>> {
        let tree = self.store.current_tree().await?;
        if self.judged.is_some_and(|j| j.groups != tree.generation) {
            return Err(StoreError::TreeMoved);
        }
        let mut steps = vec![raise(&tree)];
        steps.extend(self.judged.map(held_fleet));
        if let Some(group) = after {
            if before.is_none() && tree.contains(&group.name) {
                return Err(StoreError::AlreadyExists {
                    kind: Kind::NodeGroup,
                    key: group.name.to_string(),
                });
            }
            tree.check_parent(group)?;
        }
        Ok(steps)
    }
}

impl Store {
    pub(super) async fn generation(&self) -> Result<i64> {
        self.db.count(&GENERATION, generation_key()).await
    }

    /// The tree at `generation` if this process has it; else the tree read now, which is
    /// at `generation` or a later one.
    pub(super) async fn tree_at(&self, generation: i64) -> Result<Arc<GroupTree>> {
        if let Some(tree) = self.groups.at(generation) {
            return Ok(tree);
        }
        let mut before = generation;
        for _ in 0..MAX_TRIES {
            let mut groups = Vec::new();
            let mut after = None;
            loop {
                let batch = self.db.engine().scan(&NODE_GROUP, after).await?;
                for record in &batch.records {
                    groups.push(decode(record)?);
                }
                match batch.more {
                    Some(position) => after = Some(position),
                    None => break,
                }
            }
            let now = self.generation().await?;
            if now == before {
                let tree = Arc::new(GroupTree::new(now, groups));
                self.groups.keep(tree.clone());
                return Ok(tree);
            }
            before = now;
        }
        Err(StoreError::Unavailable(
            "node groups kept changing while they were read".into(),
        ))
    }

    /// The group tree as it is now.
    pub async fn current_tree(&self) -> Result<Arc<GroupTree>> {
        let generation = self.generation().await?;
        self.tree_at(generation).await
    }

    /// The group tree as it is now, and the snapshot a write judged on it (and on the nodes
    /// read after this call) commits on.
    pub async fn snapshot(&self) -> Result<(Arc<GroupTree>, Snapshot)> {
        let keys = [(&GENERATION, generation_key()), (&GENERATION, fleet_key())];
        for _ in 0..MAX_TRIES {
            let found = self.db.engine().get(&keys).await?;
            let count = |i: usize| found.get(i).and_then(Option::as_ref).map_or(0, |r| r.refs);
            let snapshot = Snapshot {
                groups: count(0),
                nodes: count(1),
            };
            let tree = self.tree_at(snapshot.groups).await?;
            if tree.generation == snapshot.groups {
                return Ok((tree, snapshot));
            }
        }
        Err(StoreError::Unavailable(
            "node groups kept changing while they were read".into(),
        ))
    }
}

/// The newest tree this process has read.
#[derive(Default)]
pub struct TreeCache {
    current: RwLock<Option<Arc<GroupTree>>>,
}

impl TreeCache {
    pub fn at(&self, generation: i64) -> Option<Arc<GroupTree>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|t| t.generation == generation)
            .cloned()
    }

    pub fn keep(&self, tree: Arc<GroupTree>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current
            .as_ref()
            .is_none_or(|t| t.generation <= tree.generation)
        {
            *current = Some(tree);
        }
    }
}
