//! Impact: what a write would do to every node it touches (the groups each joins and
//! leaves, how its classification changes, the conflicts it would get), judged on one
//! snapshot of the groups and nodes. The same assessment refuses a write that creates
//! conflicts and answers its dry run.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::fleet::{Judging, Scanned, judged_by_name};
use crate::domain::{
    Certname, Classification, ClassificationDiff, Conflict, GroupName, GroupTree, Node, NodeFacts,
    NodeGroup, classification_diff, classify_all,
};
use crate::error::AppError;
use crate::store::{Snapshot, Store, StoreError};

/// The most affected nodes a preview lists; `more` counts the rest.
pub const MAX_LISTED: usize = 100;

/// A node whose classification would change.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NodeImpact {
    #[schema(example = "web01.example.com")]
    pub unique_name: String,
    pub diff: ClassificationDiff,
    /// Groups it would join (by rule, pin or name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub joins: Vec<GroupName>,
    /// Groups it would leave.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub leaves: Vec<GroupName>,
}

/// A node that would fail to classify after the write.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NodeFailure {
    pub unique_name: String,
    pub error: String,
    /// The keys its groups would disagree on, if that is why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
}

/// What a write would do; nothing was stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Preview {
    /// Always true: this is a preview.
    pub dry_run: bool,
    /// The object as the write would store it; absent for a delete.
    #[schema(value_type = Option<Object>)]
    pub object: Option<Value>,
    /// Nodes looked at: the node written, or every node in the group or a group below it
    /// (by name, pin or rule), before or after the write.
    pub examined: usize,
    /// How many of them would get a different classification or different groups.
    pub affected: usize,
    /// The first of those by certname (at most 100), each with how its classification would
    /// change and the groups it would join and leave.
    pub nodes: Vec<NodeImpact>,
    /// How many affected nodes `nodes` leaves out.
    pub more: usize,
    /// The first nodes by certname (at most 100) that would fail to classify, with the
    /// conflicts the write would give them.
    pub failed: Vec<NodeFailure>,
    /// How many failing nodes `failed` leaves out.
    #[serde(skip_serializing_if = "is_zero")]
    pub failed_more: usize,
    /// The groups that would stop pinning the node(s): a deleted node's pins go with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub unpinned_from: Vec<GroupName>,
    /// Present (true) when some nodes were judged on rule views taken before the rules
    /// read the paths they read now (views are being taken again: `GET /rule-views`): the
    /// answer may change once that is done.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub provisional: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Why a node does not classify.
struct Unclassifiable {
    error: String,
    conflicts: Vec<Conflict>,
}

type Outcome = Result<Option<Classification>, Unclassifiable>;

/// The node's classification under `tree` (`None`: no node), and the groups it is in: the
/// rules judged once for both.
fn classified(
    node: Option<&Node>,
    facts: Option<&NodeFacts>,
    tree: &GroupTree,
) -> (Outcome, BTreeSet<GroupName>) {
    let Some(node) = node else {
        return (Ok(None), BTreeSet::new());
    };
    let (groups, chains) = match tree.placed(node, facts) {
        Ok(placed) => placed,
        Err(e) => {
            let failure = Unclassifiable {
                error: e.to_string(),
                conflicts: Vec::new(),
            };
            return (Err(failure), BTreeSet::new());
        }
    };
    let groups: BTreeSet<GroupName> = groups.into_iter().collect();
    let chains: Vec<Vec<&NodeGroup>> = chains
        .iter()
        .map(|chain| chain.iter().map(|g| &**g).collect())
        .collect();
    let outcome = match classify_all(node, &chains) {
        Ok((classification, _)) => Ok(Some(classification)),
        Err(conflicts) => Err(Unclassifiable {
            error: format!(
                "its groups would give different values for {}",
                conflicts
                    .iter()
                    .map(|c| c.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            conflicts,
        }),
    };
    (outcome, groups)
}

/// One node before and after a write: the node (absent: none), its facts, and the tree.
struct Change<'a> {
    before: Option<&'a Node>,
    after: Option<&'a Node>,
    facts: Option<&'a NodeFacts>,
    tree_before: &'a GroupTree,
    tree_after: &'a GroupTree,
}

/// What a write would do, and the conflicts it would create (nodes that classify now and
/// would not for their groups' disagreeing).
pub struct Assessment {
    pub preview: Preview,
    /// The first of the nodes it would give conflicts they did not have (at most 100).
    pub created: Vec<NodeFailure>,
    /// How many nodes it would give conflicts they did not have.
    pub created_count: usize,
    /// What it was made on: the write commits only while the groups and nodes are as then.
    pub snapshot: Snapshot,
    /// A group write's group as it was in that snapshot (absent: it did not exist).
    pub group_before: Option<NodeGroup>,
}

/// What a change does to one node, whatever its certname.
#[derive(Clone)]
enum Verdict {
    Unchanged,
    Affected {
        diff: ClassificationDiff,
        joins: Vec<GroupName>,
        leaves: Vec<GroupName>,
    },
    Fails {
        error: String,
        conflicts: Vec<Conflict>,
        /// It classified before the change.
        created: bool,
    },
}

impl Verdict {
    fn of(change: &Change<'_>) -> Self {
        let (was, groups_before) = classified(change.before, change.facts, change.tree_before);
        let (will, groups_after) = classified(change.after, change.facts, change.tree_after);
        let joins: Vec<GroupName> = groups_after.difference(&groups_before).cloned().collect();
        let leaves: Vec<GroupName> = groups_before.difference(&groups_after).cloned().collect();
        match (was, will) {
            (Ok(was), Ok(will)) => {
                let diff = classification_diff(was.as_ref(), will.as_ref());
                if diff.is_empty() && joins.is_empty() && leaves.is_empty() {
                    Verdict::Unchanged
                } else {
                    Verdict::Affected {
                        diff,
                        joins,
                        leaves,
                    }
                }
            }
            (was, Err(failure)) => Verdict::Fails {
                created: was.is_ok() && !failure.conflicts.is_empty(),
                error: failure.error,
                conflicts: failure.conflicts,
            },
            (Err(failure), Ok(_)) => Verdict::Fails {
                error: format!("now: {}", failure.error),
                conflicts: Vec::new(),
                created: false,
            },
        }
    }
}

/// Verdicts kept per judgement, at most: nodes alike but for their certname (their own
/// fields, their view, no pins, no rule on the certname) are judged once.
const MEMO_MAX: usize = 5_000;

/// What decides a change's verdict for the node, but its certname; `None` when the
/// certname decides too (a pin, a rule on `name`).
fn alike(change: &Change<'_>) -> Option<String> {
    let name = &change.after.or(change.before)?.unique_name;
    let trees = [change.tree_before, change.tree_after];
    if trees
        .iter()
        .any(|t| t.lens().reads_name() || !t.pinning(name).is_empty())
    {
        return None;
    }
    let without_name = |node: Option<&Node>| {
        let mut value = serde_json::to_value(node).ok()?;
        if let Value::Object(fields) = &mut value {
            fields.remove("unique_name");
        }
        Some(value)
    };
    let facts = change.facts.map(|f| (&f.facts, &f.trusted));
    let key = (
        without_name(change.before)?,
        without_name(change.after)?,
        facts,
    );
    serde_json::to_string(&key).ok()
}

/// An assessment being made, one node at a time in any order: it keeps the first nodes of
/// each list by certname and counts the rest, so it holds no more for a larger fleet.
#[derive(Default)]
struct Tally {
    examined: usize,
    affected: usize,
    nodes: Vec<NodeImpact>,
    failed: Vec<NodeFailure>,
    failed_count: usize,
    created: Vec<NodeFailure>,
    created_count: usize,
    /// Verdicts by what decides them (`alike`).
    memo: HashMap<String, Verdict>,
}

impl Tally {
    fn add(&mut self, change: Change<'_>) {
        self.examined += 1;
        let Some(name) = change
            .after
            .or(change.before)
            .map(|n| n.unique_name.to_string())
        else {
            return;
        };
        let verdict = match alike(&change) {
            Some(key) => match self.memo.get(&key) {
                Some(verdict) => verdict.clone(),
                None => {
                    let verdict = Verdict::of(&change);
                    if self.memo.len() < MEMO_MAX {
                        self.memo.insert(key, verdict.clone());
                    }
                    verdict
                }
            },
            None => Verdict::of(&change),
        };
        match verdict {
            Verdict::Unchanged => {}
            Verdict::Affected {
                diff,
                joins,
                leaves,
            } => {
                self.affected += 1;
                let impact = NodeImpact {
                    unique_name: name,
                    diff,
                    joins,
                    leaves,
                };
                first(&mut self.nodes, impact, |i| &i.unique_name);
            }
            Verdict::Fails {
                error,
                conflicts,
                created,
            } => {
                let failure = NodeFailure {
                    unique_name: name,
                    error,
                    conflicts,
                };
                if created {
                    self.created_count += 1;
                    first(&mut self.created, failure.clone(), |f| &f.unique_name);
                }
                self.failed_count += 1;
                first(&mut self.failed, failure, |f| &f.unique_name);
            }
        }
    }

    fn finish(mut self, snapshot: Snapshot) -> Assessment {
        for list in [&mut self.failed, &mut self.created] {
            list.sort_by(|a, b| a.unique_name.cmp(&b.unique_name));
            list.truncate(MAX_LISTED);
        }
        self.nodes.sort_by(|a, b| a.unique_name.cmp(&b.unique_name));
        self.nodes.truncate(MAX_LISTED);
        let preview = Preview {
            dry_run: true,
            object: None,
            examined: self.examined,
            affected: self.affected,
            more: self.affected - self.nodes.len(),
            nodes: self.nodes,
            failed_more: self.failed_count - self.failed.len(),
            failed: self.failed,
            unpinned_from: Vec::new(),
            provisional: false,
        };
        Assessment {
            preview,
            created: self.created,
            created_count: self.created_count,
            snapshot,
            group_before: None,
        }
    }
}

/// Adds `item` to `list`, which keeps the first `MAX_LISTED` by name (and some more, sorted
/// out at the end).
fn first<T>(list: &mut Vec<T>, item: T, name: impl Fn(&T) -> &String) {
    list.push(item);
    if list.len() >= 2 * MAX_LISTED {
        list.sort_by(|a, b| name(a).cmp(name(b)));
        list.truncate(MAX_LISTED);
    }
}

/// The assessment of `changes`.
fn assess<'a>(snapshot: Snapshot, changes: impl Iterator<Item = Change<'a>>) -> Assessment {
    let mut tally = Tally::default();
    for change in changes {
        tally.add(change);
    }
    tally.finish(snapshot)
}

/// An object as a preview shows it.
pub fn shown<T: Serialize>(object: &T) -> Result<Value, AppError> {
    serde_json::to_value(object).map_err(|e| AppError::Internal(Box::new(e)))
}

/// What a write that leaves the group `name` as `after` (`None`: deleted) would change: every
/// node in it or a group below it (by name, pin or rule), before or after, classified under
/// the tree as it is and as it would be, each with its last facts.
pub(super) async fn of_group(
    store: &Store,
    name: &GroupName,
    after: Option<NodeGroup>,
    budget: usize,
) -> Result<Assessment, AppError> {
    // The fleet is read after the snapshot, a page at a time: a node written meanwhile
    // moves the snapshot, and the write is judged again.
    let (tree, snapshot) = store.snapshot().await?;
    let changed = tree.changed(after, name);
    let below: HashSet<GroupName> = tree
        .subtree(name)
        .into_iter()
        .chain(changed.subtree(name))
        .collect();
    let in_subtree = |node: &Node, facts: Option<&NodeFacts>| {
        tree.in_any(node, facts, &below) || changed.in_any(node, facts, &below)
    };
    let mut tally = Tally::default();
    let judging = Judging::new(store, &[tree.lens(), changed.lens()], budget).await?;
    let mut fleet = Scanned::new(store, judging);
    while let Some(page) = fleet.next().await? {
        for (node, facts) in &page {
            let facts = facts.as_ref();
            if in_subtree(node, facts) {
                tally.add(Change {
                    before: Some(node),
                    after: Some(node),
                    facts,
                    tree_before: &tree,
                    tree_after: &changed,
                });
            }
        }
    }
    let mut assessment = tally.finish(snapshot);
    assessment.group_before = tree.group(name).cloned();
    assessment.preview.provisional = fleet.judging.provisional;
    Ok(assessment)
}

/// Refuses a write that would give nodes conflicting values (409, listing the nodes and
/// keys) unless forced; the conflicts a forced write creates, for its revision.
pub(super) fn refuse_conflicts(
    assessment: &Assessment,
    force: bool,
) -> Result<Option<Value>, AppError> {
    if assessment.created.is_empty() {
        return Ok(None);
    }
    let shown = serde_json::to_value(&assessment.created).unwrap_or_default();
    if force {
        return Ok(Some(shown));
    }
    let names: Vec<&str> = assessment
        .created
        .iter()
        .map(|f| f.unique_name.as_str())
        .collect();
    Err(AppError::NodeConflicts(
        format!(
            "the change would give {} node(s) conflicting values ({}); send force=true to make it anyway",
            assessment.created_count,
            names
                .iter()
                .take(10)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ),
        shown,
    ))
}

/// What a write that makes the node `before` into `after` would change for it.
pub(super) async fn of_node(
    store: &Store,
    before: Option<&Node>,
    after: Option<&Node>,
) -> Result<Assessment, AppError> {
    let (tree, snapshot) = store.snapshot().await?;
    let name = after.or(before).map(|n| n.unique_name.clone());
    let facts = match &name {
        Some(name) => store.facts(name).await?,
        None => None,
    };
    let change = Change {
        before,
        after,
        facts: facts.as_ref(),
        tree_before: &tree,
        tree_after: &tree,
    };
    Ok(assess(snapshot, std::iter::once(change)))
}

/// What taking `nodes` off every group that pins them would do to them, under `tree`; the
/// groups that would change with it.
pub(super) async fn of_unpinning(
    store: &Store,
    (tree, snapshot): (&GroupTree, Snapshot),
    nodes: &BTreeSet<Certname>,
) -> Result<Assessment, AppError> {
    let mut groups: BTreeSet<&GroupName> = BTreeSet::new();
    for node in nodes {
        groups.extend(tree.pinning(node));
    }
    let mut changes = Vec::new();
    for group in &groups {
        let mut after = tree
            .group(group)
            .cloned()
            .ok_or_else(|| AppError::Internal("a pinning group not in its tree".into()))?;
        after.pinned.retain(|n| !nodes.contains(n));
        changes.push((after.name.clone(), Some(after)));
    }
    let tree_after = tree.with_changes(&changes);
    let mut read = Vec::new();
    for name in nodes {
        let node = match store.get_node(name).await {
            Ok(node) => Some(node.item),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        read.push((node, store.facts(name).await?));
    }
    let changes = read.iter().map(|(node, facts)| Change {
        before: node.as_ref(),
        after: node.as_ref(),
        facts: facts.as_ref(),
        tree_before: tree,
        tree_after: &tree_after,
    });
    let mut assessment = assess(snapshot, changes);
    assessment.preview.unpinned_from = groups.into_iter().cloned().collect();
    Ok(assessment)
}

/// What a change of many objects would do to every node: each node as it is (`before`) and
/// as it would be (`after`; absent: deleted), classified under the tree as it is and as it
/// would be, with its last facts (read a page at a time). Nodes are looked at by certname.
pub(super) async fn of_many(
    store: &Store,
    before: &HashMap<Certname, Node>,
    after: &HashMap<Certname, Node>,
    (tree_before, snapshot): (&GroupTree, Snapshot),
    tree_after: &GroupTree,
    budget: usize,
) -> Result<Assessment, AppError> {
    let names: BTreeSet<&Certname> = before.keys().chain(after.keys()).collect();
    let mut judging = Judging::new(store, &[tree_before.lens(), tree_after.lens()], budget).await?;
    let mut tally = Tally::default();
    judged_by_name(&mut judging, names, |name, facts| {
        tally.add(Change {
            before: before.get(name),
            after: after.get(name),
            facts: facts.as_ref(),
            tree_before,
            tree_after,
        });
    })
    .await?;
    let mut assessment = tally.finish(snapshot);
    assessment.preview.provisional = judging.provisional;
    Ok(assessment)
}
