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

use super::impact::{self, Preview};
use super::{Classifier, JUDGED_TRIES, Write, kept_moving};
use crate::domain::{Certname, Environment, FieldError, Node, NodeGroup, Stored};
use crate::error::AppError;
use crate::store::enc::{ENVIRONMENT, NODE, NODE_GROUP};
use crate::store::engine::Key;
use crate::store::record::{RecordKind, to_body};
use crate::store::{
    Apply, By, EnvironmentFilter, Planned, Snapshot, Store, StoreError, TREE_OWNER, all,
};

/// What a file name may hold as it is; anything else is percent-encoded.
const FILE_NAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b' ');

/// The longest file name (without `.yaml`) a tree holds: most file systems take 255 bytes.
const MAX_FILE_STEM: usize = 255 - ".yaml".len();
/// Hex digits of the name's hash a shortened file name ends with.
const NAME_HASH_HEX: usize = 16;

/// The file name (without `.yaml`) of an object's name: the name percent-encoded. A name
/// whose encoding is too long for a file system (a 253-character certname with `%`s, a group
/// name in another script: 3 bytes a character, 9 encoded) is cut, at a whole escape, and
/// ends with `~` and a hash of the whole name: `~` is never left as it is by the encoding, so
/// no name's file is another's shortened one. The full name is in the file, as always, and a
/// file must be where its name puts it, so import reads both spellings alike.
pub fn file_name(name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, FILE_NAME).to_string();
    if encoded.len() <= MAX_FILE_STEM {
        return encoded;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut keep = MAX_FILE_STEM - 1 - NAME_HASH_HEX;
    // Not inside an escape: `%` and its two hex digits go whole.
    while encoded.as_bytes()[..keep]
        .iter()
        .rev()
        .take(2)
        .any(|b| *b == b'%')
    {
        keep -= 1;
    }
    format!("{}~{}", &encoded[..keep], &hash[..NAME_HASH_HEX])
}

/// An object kind a tree holds.
pub trait Object: Serialize + Clone + PartialEq {
    const KIND: &'static RecordKind;
    fn key(&self) -> Key;
    fn path(&self) -> String;
}

impl Object for Environment {
    const KIND: &'static RecordKind = &ENVIRONMENT;
    fn key(&self) -> Key {
        let cluster = self.puppet_cluster_name.as_str();
        Key::two(self.environment_name.as_str(), cluster)
    }
    fn path(&self) -> String {
        let (env, cluster) = (&self.environment_name, &self.puppet_cluster_name);
        format!(
            "environments/{}/{}.yaml",
            file_name(cluster.as_str()),
            file_name(env.as_str())
        )
    }
}

impl Object for NodeGroup {
    const KIND: &'static RecordKind = &NODE_GROUP;
    fn key(&self) -> Key {
        Key::one(self.name.as_str())
    }
    fn path(&self) -> String {
        format!("node_groups/{}.yaml", file_name(self.name.as_str()))
    }
}

impl Object for Node {
    const KIND: &'static RecordKind = &NODE;
    fn key(&self) -> Key {
        Key::one(self.unique_name.as_str())
    }
    fn path(&self) -> String {
        format!("nodes/{}.yaml", file_name(self.unique_name.as_str()))
    }
}
/// The classification as stored.
pub struct Current {
    pub environments: Vec<Stored<Environment>>,
    pub groups: Vec<Stored<NodeGroup>>,
    pub nodes: Vec<Stored<Node>>,
}

impl Current {
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
struct Step {
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
) -> Result<Vec<Step>, AppError> {
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
        steps.push(Step {
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
    steps: Vec<Step>,
    /// Nodes the plan would give conflicting values, which the apply refuses unless forced.
    conflicts: impact::Assessment,
}

fn plan_id(steps: &[Step], prune: bool, source_revision: Option<&str>) -> String {
    let entries: Vec<Value> = steps.iter().map(entry).collect();
    let hashed = json!({"prune": prune, "source_revision": source_revision, "entries": entries});
    let digest = Sha256::digest(serde_json::to_vec(&hashed).unwrap_or_default());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A step as a plan keeps it: kind, key, version read and a digest of what it writes.
fn entry(step: &Step) -> Value {
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
    let current = Current::read(store).await?;
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
fn stale(id: &str) -> AppError {
    AppError::PreconditionFailed(format!(
        "plan {id} is not what this tree would do now: something it read has changed since \
         (or the tree did); plan again"
    ))
}

/// The steps still to make of plan `id`, kept when its apply began, if every object it
/// names is either as the plan read it or as this plan's apply left it.
async fn resumed(store: &Store, id: &str, steps: &[Step]) -> Result<(Vec<Step>, usize), AppError> {
    let Some(kept) = store.kept_plan(id).await? else {
        return Err(stale(id));
    };
    let mut now: HashMap<(String, Key), &Step> = steps
        .iter()
        .map(|s| ((s.planned.kind.name.to_owned(), s.planned.key.clone()), s))
        .collect();
    let (mut remaining, mut done) = (Vec::new(), 0);
    for kept in &kept {
        let parsed: Option<(String, Vec<String>)> = kept
            .get(0)
            .and_then(Value::as_str)
            .zip(
                kept.get(1)
                    .and_then(|k| serde_json::from_value(k.clone()).ok()),
            )
            .map(|(kind, key)| (kind.to_owned(), key));
        let Some((kind_name, key)) = parsed else {
            return Err(stale(id));
        };
        let key = Key(key);
        match now.remove(&(kind_name.clone(), key.clone())) {
            Some(step) if entry(step) == *kept => remaining.push(step.clone()),
            Some(_) => return Err(stale(id)),
            None => {
                let kind = [&ENVIRONMENT, &NODE_GROUP, &NODE]
                    .into_iter()
                    .find(|k| k.name == kind_name)
                    .ok_or_else(|| stale(id))?;
                let version = store.last_version(kind, &key).await?;
                let made = store.revision(kind, &key, version).await;
                if made.ok().and_then(|r| r.plan_id).as_deref() != Some(id) {
                    return Err(stale(id));
                }
                done += 1;
            }
        }
    }
    if !now.is_empty() {
        return Err(stale(id));
    }
    remaining.sort_by_key(|s| s.order);
    Ok((remaining, done))
}

/// The steps in commits: one where the store allows it, else batches within its limit.
fn batches(max_writes: Option<usize>, steps: &[Step]) -> Vec<&[Step]> {
    // An object's write, its revision and its history head, and its two references each
    // moved from one record to another (four counts); two more for the group tree's and the
    // fleet's generations; and well under DynamoDB's 4 MB.
    let (per_object, budget) = (7, 3 * 1024 * 1024);
    match max_writes {
        None => vec![steps],
        Some(max) => {
            let mut batches = Vec::new();
            let (mut start, mut bytes) = (0, 0);
            for (i, step) in steps.iter().enumerate() {
                let size =
                    3 * serde_json::to_vec(&step.planned.after).map_or(0, |b| b.len()) + 1024;
                if i > start && ((i - start + 1) * per_object + 2 > max || bytes + size > budget) {
                    batches.push(&steps[start..i]);
                    (start, bytes) = (i, 0);
                }
                bytes += size;
            }
            batches.push(&steps[start..]);
            batches
        }
    }
}

/// Writes the batches in order, each in one commit judged on what the apply was judged on,
/// adding what each wrote to `applied`: `false` if the groups or nodes moved before one.
async fn write(
    store: &Store,
    batches: &[&[Step]],
    mut by: By<'_>,
    applied: &mut Vec<Applied>,
) -> Result<bool, StoreError> {
    for batch in batches.iter().filter(|b| !b.is_empty()) {
        let planned: Vec<Planned> = batch.iter().map(|s| s.planned.clone()).collect();
        let versions = match store.apply_set(&planned, by).await {
            Ok(versions) => versions,
            Err(StoreError::TreeMoved) => return Ok(false),
            Err(e) => return Err(e),
        };
        // Each commit holds to the groups and nodes as the last one of this apply left
        // them: it moved each counter by one if it wrote any of its kind.
        let wrote = |kind: &RecordKind| i64::from(planned.iter().any(|p| p.kind.name == kind.name));
        by.judged = by.judged.map(|s| Snapshot {
            groups: s.groups + wrote(&NODE_GROUP),
            nodes: s.nodes + wrote(&NODE),
        });
        for (step, version) in batch.iter().zip(versions) {
            applied.push(Applied {
                kind: step.change.kind.clone(),
                key: step.change.key.clone(),
                action: step.change.action,
                version,
            });
        }
    }
    Ok(true)
}

impl Classifier<'_> {
    /// What applying `proposal` would do; nothing is stored.
    pub async fn plan(self, proposal: &Proposal) -> Result<Plan, AppError> {
        let _place = self.fleet_work()?;
        Ok(plan(self.store, proposal, self.budget()).await?.plan)
    }

    /// Applies exactly the plan `id` of `proposal` (or finishes it, if an interrupted apply
    /// of it began), judged as any write: refused if it gives nodes conflicting values,
    /// unless forced. If the groups or nodes move before one of its commits, what is left
    /// of it is planned and judged again (refused with 412 if that changes the plan); a
    /// refusal after some commits says what they applied.
    pub async fn apply(
        self,
        proposal: &Proposal,
        id: &str,
        write: Write<'_>,
    ) -> Result<ApplyOutcome, AppError> {
        let _place = self.fleet_work()?;
        let mut applied = Vec::new();
        let (mut total, mut earlier, mut first_summary) = (None, None, None);
        for tried in 0..JUDGED_TRIES {
            if tried > 0 {
                super::moved_on(tried).await;
            }
            let tried = self
                .apply_once(proposal, id, write, (&mut applied, &mut total))
                .await
                .map_err(|e| partial(e, &applied, total.unwrap_or_default()))?;
            match tried {
                Tried::Moved { done, summary } => {
                    earlier.get_or_insert(done);
                    first_summary.get_or_insert(summary);
                }
                Tried::Done { summary, done } => {
                    // What the plan does as a whole: as the first try planned it.
                    let summary = first_summary.unwrap_or(summary);
                    // Objects an earlier request had applied, not this one's earlier tries.
                    let done = earlier.unwrap_or(done);
                    tracing::info!(plan_id = %id, applied = applied.len(), already_applied = done, "plan applied");
                    self.follow_rules().await;
                    return Ok(ApplyOutcome {
                        plan_id: id.to_owned(),
                        applied,
                        already_applied: done,
                        summary,
                    });
                }
            }
        }
        Err(partial(kept_moving(), &applied, total.unwrap_or_default()))
    }

    /// One try at an apply: planned, judged and committed batch by batch.
    async fn apply_once(
        self,
        proposal: &Proposal,
        id: &str,
        write: Write<'_>,
        (applied, total): (&mut Vec<Applied>, &mut Option<usize>),
    ) -> Result<Tried, AppError> {
        let store = self.store;
        let planning = plan(store, proposal, self.budget()).await?;
        let (steps, done) = match id == planning.plan.plan_id {
            true => (planning.steps, 0),
            false => resumed(store, id, &planning.steps).await?,
        };
        total.get_or_insert(steps.len() + done);
        // What is left of a plan an interrupted apply began is judged as a whole plan is: on
        // the classification as the earlier commits left it.
        let conflicts = impact::refuse_conflicts(&planning.conflicts, write.force)?;
        if !write.force {
            super::refuse_revived(&planning.plan.pins_of_deleted_nodes)?;
        }
        let apply = Apply {
            plan_id: id,
            source_revision: proposal.source_revision.as_deref(),
        };
        let by = By {
            apply: Some(apply),
            conflicts: conflicts.as_ref(),
            judged: Some(planning.conflicts.snapshot),
            request_id: write.request_id,
            ..By::actor(write.actor)
        };
        let batches = batches(store.max_writes(), &steps);
        if done == 0 && batches.len() > 1 {
            let entries: Vec<Value> = steps.iter().map(entry).collect();
            store.keep_plan(id, &entries).await?;
        }
        match self::write(store, &batches, by, applied).await? {
            true => Ok(Tried::Done {
                summary: planning.plan.summary,
                done,
            }),
            false => Ok(Tried::Moved {
                done,
                summary: planning.plan.summary,
            }),
        }
    }
}

/// How one try at an apply ended.
enum Tried {
    /// Every commit made; `done` objects were applied before this try.
    Done { summary: PlanSummary, done: usize },
    /// The groups or nodes moved before a commit; `done` objects were applied before this
    /// try.
    Moved { done: usize, summary: PlanSummary },
}

/// A refusal after some of the plan was applied says what was.
fn partial(e: AppError, applied: &[Applied], total: usize) -> AppError {
    if applied.is_empty() {
        return e;
    }
    let count = applied.len();
    AppError::Partial(
        Box::new(e),
        format!("{count} of the plan's {total} changes were applied first"),
        serde_json::to_value(applied).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn long_names_get_short_distinct_file_names_that_cut_no_escape() {
        assert_eq!(file_name("web01.example.com"), "web01.example.com");
        assert_eq!(file_name("All Nodes (EU)"), "All Nodes %28EU%29");
        for name in [
            "é".repeat(255),
            "a".repeat(253),
            format!("{}%", "x".repeat(300)),
        ] {
            let file = file_name(&name);
            assert!(file.len() + ".yaml".len() <= 255, "{} bytes", file.len());
            let (cut, hash) = file.rsplit_once('~').expect("a hash");
            assert_eq!(hash.len(), 16);
            assert!(
                !cut.ends_with('%') && !cut[..cut.len() - 1].ends_with('%'),
                "{cut}"
            );
            assert_eq!(file, file_name(&name), "the same name, the same file");
        }
        // Two names alike in their first 250 bytes still get two files.
        let (a, b) = (
            format!("{}a", "x".repeat(300)),
            format!("{}b", "x".repeat(300)),
        );
        assert_ne!(file_name(&a), file_name(&b));
        // `~` in a name is encoded, so a short name never looks like a shortened one.
        assert_eq!(file_name("a~b"), "a%7Eb");
    }
}
