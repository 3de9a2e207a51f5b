//! Classification as code, planned and applied: a tree's objects planned against what is
//! stored, judged for every node as any write is, and applied exactly as planned.
//!
//! A plan lists every object the tree creates, changes or (with `prune`) deletes, each with
//! the version it read, and the impact on every node's classification; its id is a hash of
//! those changes and versions, so an apply whose plan id no longer comes out of the tree and
//! the store is refused (412). The embedded store applies a plan in one transaction. DynamoDB
//! takes at most 100 writes per transaction: the plan is applied in batches in an order that
//! never leaves a dangling reference (environments, groups parents first, nodes, then
//! deletions the other way round), each batch conditional on the versions planned; the plan
//! is kept first, so that the same apply asked again after an interruption finishes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

mod apply;
mod files;

pub use files::{Object, file_name};

use super::Classifier;
use super::impact::{self, Preview};
use crate::domain::{Certname, Environment, FieldError, Node, NodeGroup, Stored};
use crate::error::AppError;
use crate::store::Key;
use crate::store::enc::NODE;
use crate::store::record::to_body;
use crate::store::{EnvironmentFilter, Planned, Store, StoreError, TREE_OWNER, all};

/// The classification as stored.
pub struct AsStored {
    pub environments: Vec<Stored<Environment>>,
    pub groups: Vec<Stored<NodeGroup>>,
    pub nodes: Vec<Stored<Node>>,
}

impl AsStored {
    /// What is stored; the nodes as they are after every commit that finished before (a
    /// consistent scan: a plan is judged on them), by certname.
    pub async fn read(store: &Store) -> Result<Self, AppError> {
        let envs = &EnvironmentFilter::default();
        let mut nodes = Vec::new();
        let mut after = None;
        loop {
            let (batch, more) = store.scan_nodes(after).await?;
            nodes.extend(batch);
            match more {
                Some(position) => after = Some(position),
                None => break,
            }
        }
        nodes.sort_by(|a, b| a.item.unique_name.cmp(&b.item.unique_name));
        Ok(Self {
            environments: all(|p| async move { store.list_environments(envs, &p).await }).await?,
            groups: all(|p| async move { store.list_node_groups(&p).await }).await?,
            nodes,
        })
    }
}
/// The objects a tree holds, by key.
#[derive(Default)]
pub struct Desired {
    pub environments: BTreeMap<Key, Environment>,
    pub groups: BTreeMap<Key, NodeGroup>,
    pub nodes: BTreeMap<Key, Node>,
}
/// What an apply does to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    Create,
    Replace,
    Delete,
    /// The object is as the tree has it, but not yet managed by it: the apply marks it
    /// `managed_by: git` (no change to the classification).
    Adopt,
}

/// One object a plan changes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlannedChange {
    /// `environment`, `node_group` or `node`.
    #[schema(example = "node")]
    pub kind: String,
    /// The object's name (`environment/cluster` for an environment).
    #[schema(example = "web01.example.com")]
    pub key: String,
    #[schema(example = "nodes/web01.example.com.yaml")]
    pub file: String,
    pub action: PlanAction,
    /// The version read: the apply writes only over this version (absent: only while the
    /// object is still absent).
    pub version: Option<u64>,
    /// RFC 6902 JSON Patch from the object as stored to the object in the tree.
    #[schema(value_type = Vec<Object>)]
    pub diff: Value,
}

/// How many objects a plan changes, and how many it leaves.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct PlanSummary {
    pub create: usize,
    pub replace: usize,
    pub delete: usize,
    pub adopt: usize,
    /// Objects in the tree, managed by it and as it has them.
    pub unchanged: usize,
    /// Objects not in the tree, left as they are (the plan does not prune).
    pub left_alone: usize,
}

impl PlanSummary {
    /// How many objects' content the plan changes (adoptions change only ownership).
    pub fn changes(&self) -> usize {
        self.create + self.replace + self.delete
    }
}

/// What applying a tree would do; nothing was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Plan {
    /// Send as `If-Match` to apply exactly this plan.
    #[schema(example = "3b1f0c9e4a7d2b6f8e5c1a0d9f3b7e2c")]
    pub plan_id: String,
    pub prune: bool,
    pub source_revision: Option<String>,
    /// Every object the apply writes, in the order it writes them.
    pub changes: Vec<PlannedChange>,
    pub summary: PlanSummary,
    /// How every node's classification would change.
    pub impact: Preview,
    /// Deleted nodes the tree would pin again (a pin dies with its node): the apply refuses
    /// them unless forced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub pins_of_deleted_nodes: Vec<Certname>,
}

/// One object an apply wrote.
#[derive(Debug, Serialize, ToSchema)]
pub struct Applied {
    #[schema(example = "node")]
    pub kind: String,
    #[schema(example = "web01.example.com")]
    pub key: String,
    pub action: PlanAction,
    /// The version it made (for a deletion: the version the deletion took).
    pub version: u64,
}

/// What an apply did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplyOutcome {
    pub plan_id: String,
    /// Every object written, in order.
    pub applied: Vec<Applied>,
    /// Objects an earlier, interrupted apply of the same plan had written already.
    pub already_applied: usize,
    pub summary: PlanSummary,
}

/// The answer of `POST /import`: the plan (`dry_run`), or what the apply did.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "only names the answer's schema in the OpenAPI document"
)]
pub enum PlanOrOutcome {
    Plan(Plan),
    Outcome(ApplyOutcome),
}

/// A planned change with what the store needs to make it.
#[derive(Debug, Clone)]
struct PlanStep {
    change: PlannedChange,
    planned: Planned,
    /// Where it goes in the apply: (phase, depth).
    order: (u8, usize),
}

/// Phases of an apply, so no batch leaves a reference dangling.
const PUT: [u8; 3] = [0, 1, 2];
const DELETE: [u8; 3] = [5, 4, 3];

fn shown<T: Serialize>(object: Option<&T>) -> Value {
    object.map_or(Value::Null, |o| serde_json::to_value(o).unwrap_or_default())
}

/// How deep an object is in the group tree after (`true`) or before the apply.
type Depth<'a, T> = dyn Fn(&T, bool) -> usize + 'a;

/// The steps that make the stored objects of a kind what the tree has.
fn plan_kind<T: Object>(
    current: &[Stored<T>],
    desired: &BTreeMap<Key, T>,
    prune: bool,
    (phase, depth): (usize, Option<&Depth<'_, T>>),
    summary: &mut PlanSummary,
) -> Result<Vec<PlanStep>, AppError> {
    let stored: HashMap<Key, &Stored<T>> = current.iter().map(|s| (s.item.key(), s)).collect();
    let mut steps = Vec::new();
    let mut step = |action: PlanAction, now: Option<&Stored<T>>, after: Option<&T>| {
        let object = after.or(now.map(|s| &s.item)).expect("an object");
        let body = after.map(to_body).transpose()?;
        let order = match after {
            Some(item) => (PUT[phase], depth.map_or(0, |d| d(item, true))),
            None => (
                DELETE[phase],
                usize::MAX - depth.map_or(0, |d| d(object, false)),
            ),
        };
        steps.push(PlanStep {
            change: PlannedChange {
                kind: T::KIND.name.to_owned(),
                key: object.key().to_string(),
                file: object.path(),
                action,
                version: now.map(|s| s.meta.version),
                diff: serde_json::to_value(json_patch::diff(
                    &shown(now.map(|s| &s.item)),
                    &shown(after),
                ))
                .unwrap_or_default(),
            },
            planned: Planned {
                kind: T::KIND,
                key: object.key(),
                expected: now.map(|s| s.meta.version),
                after: body,
            },
            order,
        });
        Ok::<_, StoreError>(())
    };
    for (key, item) in desired {
        match stored.get(key).copied() {
            None => {
                summary.create += 1;
                step(PlanAction::Create, None, Some(item))?;
            }
            Some(now) if now.item == *item => {
                if now.meta.managed_by.as_deref() == Some(TREE_OWNER) {
                    summary.unchanged += 1;
                } else {
                    summary.adopt += 1;
                    step(PlanAction::Adopt, Some(now), Some(item))?;
                }
            }
            Some(now) => {
                summary.replace += 1;
                step(PlanAction::Replace, Some(now), Some(item))?;
            }
        }
    }
    for now in current
        .iter()
        .filter(|s| !desired.contains_key(&s.item.key()))
    {
        if prune {
            summary.delete += 1;
            step(PlanAction::Delete, Some(now), None)?;
        } else {
            summary.left_alone += 1;
        }
    }
    Ok(steps)
}

/// A plan and the steps that apply it.
struct Planning {
    plan: Plan,
    steps: Vec<PlanStep>,
    /// Nodes the plan would give conflicting values, which the apply refuses unless forced.
    conflicts: impact::Assessment,
}

fn plan_id(steps: &[PlanStep], prune: bool, source_revision: Option<&str>) -> String {
    let entries: Vec<Value> = steps.iter().map(entry).collect();
    let hashed = json!({"prune": prune, "source_revision": source_revision, "entries": entries});
    let digest = Sha256::digest(serde_json::to_vec(&hashed).unwrap_or_default());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A step as a plan keeps it: kind, key, version read and a digest of what it writes.
fn entry(step: &PlanStep) -> Value {
    let after = serde_json::to_vec(&step.planned.after).unwrap_or_default();
    let digest = Sha256::digest(after);
    let digest: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    json!([
        step.planned.kind.name,
        step.planned.key.0,
        step.planned.expected,
        digest
    ])
}

/// A tree to plan: its objects, whether to delete what it does not hold, and its source
/// revision (e.g. a git commit), kept on every object applied.
pub struct Proposal {
    pub desired: Desired,
    pub prune: bool,
    pub source_revision: Option<String>,
}

async fn plan(store: &Store, proposal: &Proposal, budget: usize) -> Result<Planning, AppError> {
    let (desired, body) = (&proposal.desired, proposal);
    // The snapshot first: a node or group written after it moves it.
    let (tree, snapshot) = store.snapshot().await?;
    let current = AsStored::read(store).await?;
    let mut group_changes = Vec::new();
    for (key, group) in &desired.groups {
        let now = current.groups.iter().find(|s| s.item.key() == *key);
        if now.is_none_or(|s| s.item != *group) {
            group_changes.push((group.name.clone(), Some(group.clone())));
        }
    }
    if body.prune {
        for now in &current.groups {
            if !desired.groups.contains_key(&now.item.key()) {
                group_changes.push((now.item.name.clone(), None));
            }
        }
    }
    let tree_after = tree.with_changes(&group_changes);
    let depth_of = |group: &NodeGroup, after: bool| {
        let in_tree = if after { &tree_after } else { &tree };
        in_tree.chain(Some(&group.name)).map_or(0, |c| c.len())
    };
    let mut summary = PlanSummary::default();
    let prune = body.prune;
    let mut steps = plan_kind(
        &current.environments,
        &desired.environments,
        prune,
        (0, None),
        &mut summary,
    )?;
    steps.extend(plan_kind(
        &current.groups,
        &desired.groups,
        prune,
        (1, Some(&depth_of)),
        &mut summary,
    )?);
    steps.extend(plan_kind(
        &current.nodes,
        &desired.nodes,
        prune,
        (2, None),
        &mut summary,
    )?);
    steps.sort_by(|a, b| {
        (a.order, a.planned.kind.name, &a.planned.key).cmp(&(
            b.order,
            b.planned.kind.name,
            &b.planned.key,
        ))
    });
    let before: HashMap<Certname, Node> = current
        .nodes
        .iter()
        .map(|s| (s.item.unique_name.clone(), s.item.clone()))
        .collect();
    let mut after = before.clone();
    for step in steps.iter().filter(|s| s.planned.kind.name == NODE.name) {
        let name = Certname::parse(&step.change.key).map_err(AppError::BadRequest)?;
        match &step.planned.after {
            Some(body) => {
                let node: Node = serde_json::from_value(Value::Object(body.clone()))
                    .map_err(|e| AppError::Internal(Box::new(e)))?;
                after.insert(name, node);
            }
            None => {
                after.remove(&name);
            }
        }
    }
    let assessed = impact::of_many(
        store,
        &before,
        &after,
        (&tree, snapshot),
        &tree_after,
        budget,
    )
    .await?;
    // A pruned node's pins go with it: a tree that deletes a node and still pins it is
    // refused, naming the group's file.
    if prune {
        let mut errors = Vec::new();
        for group in desired.groups.values() {
            let gone: Vec<&str> = group
                .pinned
                .iter()
                .filter(|n| before.contains_key(*n) && !after.contains_key(*n))
                .map(Certname::as_str)
                .collect();
            if !gone.is_empty() {
                errors.push(FieldError::new(
                    format!("{}: pinned", group.path()),
                    format!(
                        "pins {}, which the tree deletes (a pin dies with its node): take it off",
                        gone.join(", ")
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
    }
    // Pins the tree adds to a group, of nodes that were deleted.
    let mut added = BTreeSet::new();
    for group in desired.groups.values() {
        let now = current.groups.iter().find(|s| s.item.name == group.name);
        added.extend(
            group
                .pinned
                .iter()
                .filter(|n| now.is_none_or(|s| !s.item.pinned.contains(*n)))
                .cloned(),
        );
    }
    let plan = Plan {
        plan_id: plan_id(&steps, prune, body.source_revision.as_deref()),
        prune,
        source_revision: body.source_revision.clone(),
        changes: steps.iter().map(|s| s.change.clone()).collect(),
        summary,
        impact: assessed.preview.clone(),
        pins_of_deleted_nodes: store.deleted_nodes(&added).await?,
    };
    Ok(Planning {
        plan,
        steps,
        conflicts: assessed,
    })
}

impl Classifier<'_> {
    /// What applying `proposal` would do; nothing is stored.
    pub async fn plan(self, proposal: &Proposal) -> Result<Plan, AppError> {
        let _place = self.fleet_work()?;
        Ok(plan(self.store, proposal, self.budget()).await?.plan)
    }
}
