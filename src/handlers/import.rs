//! Classification as code: the whole classification as a tree of YAML files, one per object
//! (`GET /export`); such a tree planned against what is stored (`POST /import?dry_run=true`)
//! and applied exactly as planned (`POST /import` with `If-Match: <plan id>`).
//!
//! A plan lists every object the tree creates, changes or (with `prune`) deletes, each with
//! the version it read, and the impact on every node's classification; its id is a hash of
//! those changes and versions, so an apply whose plan id no longer comes out of the tree and
//! the store is refused (412). The embedded store applies a plan in one transaction. DynamoDB
//! takes at most 100 writes per transaction: the plan is applied in batches in an order that
//! never leaves a dangling reference (environments, groups parents first, nodes, then
//! deletions the other way round), each batch conditional on the versions planned; the plan
//! is kept first, so that the same apply asked again after an interruption finishes it.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::environments::EnvironmentBody;
use super::impact::{self, Preview};
use super::node_groups::NodeGroupBody;
use super::nodes::NodeBody;
use super::{all, within_size};
use crate::AppState;
use crate::auth::Caller;
use crate::domain::{Certname, Environment, FieldError, Node, NodeFacts, NodeGroup, Stored};
use crate::error::{AppError, ReadProblems, WriteProblems};
use crate::extract::{Query, parse_body};
use crate::store::enc::{ENVIRONMENT, NODE, NODE_GROUP};
use crate::store::engine::Key;
use crate::store::record::{RecordKind, to_body};
use crate::store::{Apply, By, EnvironmentFilter, NodeFilter, Planned, StoreError, TREE_OWNER};

/// The largest tree `POST /import` takes.
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;

/// What a file name may hold as it is; anything else is percent-encoded.
const FILE_NAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b' ');

fn file_name(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, FILE_NAME).to_string()
}

/// The classification as files.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Tree {
    /// Each object's YAML file by path: `environments/<cluster>/<environment>.yaml`,
    /// `node_groups/<name>.yaml`, `nodes/<certname>.yaml` (names percent-encoded but for
    /// letters, digits, space, `.`, `-` and `_`).
    #[schema(example = json!({"nodes/web01.example.com.yaml": "unique_name: web01.example.com\nnode_group_name: web\nenvironment_name: production\npuppet_cluster_name: puppet-eu\nclasses: {}\nparameters: {}\n"}))]
    pub files: BTreeMap<String, String>,
}

/// A tree to plan or apply.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// Each object's YAML file by path, as `GET /export` gives them.
    pub files: BTreeMap<String, String>,
    /// Delete the objects that are not in the tree (default: leave them alone).
    #[serde(default)]
    pub prune: bool,
    /// The tree's source revision (e.g. a git commit), kept on every object applied.
    #[schema(max_length = 200, example = "3f9c2e1")]
    pub source_revision: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Plan only: answer what the apply would do, and its plan id; store nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Apply even though the plan gives nodes conflicting values.
    #[serde(default)]
    pub force: bool,
}

/// An object kind a tree holds.
trait Object: Serialize + Clone + PartialEq {
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

fn render<T: Serialize>(object: &T) -> Result<String, AppError> {
    serde_norway::to_string(object).map_err(|e| AppError::Internal(Box::new(e)))
}

/// The classification as stored.
struct Current {
    environments: Vec<Stored<Environment>>,
    groups: Vec<Stored<NodeGroup>>,
    nodes: Vec<Stored<Node>>,
}

impl Current {
    async fn read(state: &AppState) -> Result<Self, AppError> {
        let store = &state.store;
        let (envs, nodes) = (&EnvironmentFilter::default(), &NodeFilter::default());
        Ok(Self {
            environments: all(|p| async move { store.list_environments(envs, &p).await }).await?,
            groups: all(|p| async move { store.list_node_groups(&p).await }).await?,
            nodes: all(|p| async move { store.list_nodes(nodes, &p).await }).await?,
        })
    }
}

/// The whole classification as a tree of YAML files, one per object, in a stable order and
/// form, so that a diff of two exports shows exactly what changed.
#[utoipa::path(get, path = "/export", tag = "classification as code", operation_id = "export",
    security(("bearer" = ["read"])),
    responses((status = 200, body = Tree), ReadProblems))]
pub async fn export(State(state): State<AppState>) -> Result<axum::Json<Tree>, AppError> {
    let current = Current::read(&state).await?;
    let mut files = BTreeMap::new();
    for env in &current.environments {
        files.insert(env.item.path(), render(&env.item)?);
    }
    for group in &current.groups {
        files.insert(group.item.path(), render(&group.item)?);
    }
    for node in &current.nodes {
        files.insert(node.item.path(), render(&node.item)?);
    }
    Ok(axum::Json(Tree { files }))
}

/// The objects a tree holds, by key.
#[derive(Default)]
struct Desired {
    environments: BTreeMap<Key, Environment>,
    groups: BTreeMap<Key, NodeGroup>,
    nodes: BTreeMap<Key, Node>,
}

/// One object of a tree.
enum Parsed {
    Environment(Environment),
    Group(NodeGroup),
    Node(Node),
}

/// An object from its body under a tree's directory (`environments`, `node_groups`,
/// `nodes`), checked as the API checks a body; errors name the body's fields.
fn parse_object(dir: &str, value: Value) -> Result<Parsed, AppError> {
    match dir {
        "environments" => parse_body::<EnvironmentBody>(value)
            .and_then(|b| b.into_domain())
            .map(Parsed::Environment),
        "node_groups" => parse_body::<NodeGroupBody>(value)
            .and_then(|b| b.into_domain(None))
            .and_then(|(group, _)| within_size(group))
            .map(Parsed::Group),
        "nodes" => parse_body::<NodeBody>(value)
            .and_then(|b| b.into_domain(None))
            .and_then(within_size)
            .map(Parsed::Node),
        _ => Err(AppError::invalid(
            "",
            "is not under environments/, node_groups/ or nodes/",
        )),
    }
}

/// The file of an object given by its body as the API takes it (under `dir`, as
/// `parse_object`): its path in the tree and its text, as `GET /export` would write them.
pub fn object_file(dir: &str, body: Value) -> Result<(String, String), Vec<FieldError>> {
    let file = parse_object(dir, body).and_then(|parsed| match parsed {
        Parsed::Environment(e) => Ok((e.path(), render(&e)?)),
        Parsed::Group(g) => Ok((g.path(), render(&g)?)),
        Parsed::Node(n) => Ok((n.path(), render(&n)?)),
    });
    file.map_err(|e| match e {
        AppError::Validation(list) => list,
        other => vec![FieldError::new("", other.to_string())],
    })
}

/// Reads one file as its object, checked as the API checks it, and named as its file says.
fn parse_file(path: &str, text: &str, desired: &mut Desired) -> Result<(), Vec<FieldError>> {
    let at = |field: &str, message: String| match field {
        "" => FieldError::new(path, message),
        field => FieldError::new(format!("{path}: {field}"), message),
    };
    let errors = |e: AppError| match e {
        AppError::Validation(list) => list.into_iter().map(|f| at(&f.field, f.message)).collect(),
        other => vec![at("", other.to_string())],
    };
    let value: Value = serde_norway::from_str(text)
        .map_err(|e| vec![at("", format!("is not a YAML mapping: {e}"))])?;
    fn placed<T: Object>(path: &str, object: T, into: &mut BTreeMap<Key, T>) -> Result<(), String> {
        let expected = object.path();
        if expected != path {
            return Err(format!(
                "holds the {} {}, whose file is {expected}",
                T::KIND.kind,
                object.key()
            ));
        }
        into.insert(object.key(), object);
        Ok(())
    }
    let dir = path.split('/').next().unwrap_or_default();
    let placed = match parse_object(dir, value).map_err(errors)? {
        Parsed::Environment(env) => placed(path, env, &mut desired.environments),
        Parsed::Group(group) => placed(path, group, &mut desired.groups),
        Parsed::Node(node) => placed(path, node, &mut desired.nodes),
    };
    placed.map_err(|message| vec![at("", message)])
}

fn parse_tree(files: &BTreeMap<String, String>) -> Result<Desired, AppError> {
    let mut desired = Desired::default();
    let mut errors = Vec::new();
    for (path, text) in files {
        if let Err(mut found) = parse_file(path, text, &mut desired) {
            errors.append(&mut found);
        }
    }
    match errors.is_empty() {
        true => Ok(desired),
        false => Err(AppError::Validation(errors)),
    }
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

async fn plan(state: &AppState, body: &ImportBody) -> Result<Planning, AppError> {
    if body
        .source_revision
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 200 || r.chars().any(char::is_control))
    {
        return Err(AppError::invalid(
            "source_revision",
            "must be 1 to 200 characters without control characters",
        ));
    }
    let desired = parse_tree(&body.files)?;
    let current = Current::read(state).await?;
    let tree = state.store.current_tree().await?;
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
    let store = &state.store;
    let facts: HashMap<Certname, NodeFacts> = all(|p| async move { store.list_facts(&p).await })
        .await?
        .into_iter()
        .map(|f| (f.unique_name.clone(), f))
        .collect();
    let assessed = impact::of_many(&before, &after, &facts, &tree, &tree_after);
    let plan = Plan {
        plan_id: plan_id(&steps, prune, body.source_revision.as_deref()),
        prune,
        source_revision: body.source_revision.clone(),
        changes: steps.iter().map(|s| s.change.clone()).collect(),
        summary,
        impact: assessed.preview.clone(),
    };
    Ok(Planning {
        plan,
        steps,
        conflicts: assessed,
    })
}

/// The plan id an apply names (`If-Match`).
fn named_plan(headers: &HeaderMap) -> Result<String, AppError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Err(AppError::PreconditionRequired(
            "send the plan id to apply as If-Match (plan it with dry_run=true)".into(),
        ));
    };
    let text = value.to_str().unwrap_or_default().trim();
    let id = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(AppError::BadRequest(
            "If-Match must be a plan id, as a plan's plan_id gives it".into(),
        ))
    }
}

fn stale(id: &str) -> AppError {
    AppError::PreconditionFailed(format!(
        "plan {id} is not what this tree would do now: something it read has changed since \
         (or the tree did); plan again"
    ))
}

/// The steps still to make of plan `id`, kept when its apply began, if every object it
/// names is either as the plan read it or as this plan's apply left it.
async fn resumed(
    state: &AppState,
    id: &str,
    steps: &[Step],
) -> Result<(Vec<Step>, usize), AppError> {
    let Some(kept) = state.store.kept_plan(id).await? else {
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
                let version = state.store.last_version(kind, &key).await?;
                let made = state.store.revision(kind, &key, version).await;
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
    // An object's write, its two references at most, its revision and its history head;
    // one more for the group tree's generation; and well under DynamoDB's 4 MB.
    let (per_object, budget) = (5, 3 * 1024 * 1024);
    match max_writes {
        None => vec![steps],
        Some(max) => {
            let mut batches = Vec::new();
            let (mut start, mut bytes) = (0, 0);
            for (i, step) in steps.iter().enumerate() {
                let size =
                    3 * serde_json::to_vec(&step.planned.after).map_or(0, |b| b.len()) + 1024;
                if i > start && ((i - start + 1) * per_object + 1 > max || bytes + size > budget) {
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

/// Writes the batches in order, each in one commit.
async fn write(
    state: &AppState,
    batches: &[&[Step]],
    by: By<'_>,
) -> Result<Vec<Applied>, AppError> {
    let total: usize = batches.iter().map(|b| b.len()).sum();
    let mut applied = Vec::new();
    for batch in batches.iter().filter(|b| !b.is_empty()) {
        let planned: Vec<Planned> = batch.iter().map(|s| s.planned.clone()).collect();
        // Only the first commit can hold to the groups it was judged on: it moves them.
        let by = match applied.is_empty() {
            true => by,
            false => By { judged: None, ..by },
        };
        let versions = match state.store.apply_set(&planned, by).await {
            Ok(versions) => versions,
            Err(e) if applied.is_empty() => return Err(e.into()),
            Err(e) => {
                let count = applied.len();
                return Err(AppError::Partial(
                    Box::new(e.into()),
                    format!("{count} of the plan's {total} changes were applied first"),
                    serde_json::to_value(&applied).unwrap_or_default(),
                ));
            }
        };
        for (step, version) in batch.iter().zip(versions) {
            applied.push(Applied {
                kind: step.change.kind.clone(),
                key: step.change.key.clone(),
                action: step.change.action,
                version,
            });
        }
    }
    Ok(applied)
}

/// Plan a tree of YAML files against what is stored (`dry_run=true`: 200 with the plan and
/// its id, nothing stored), or apply exactly the plan named by `If-Match` (refused with 412
/// if it is no longer what the tree would do). Objects applied become `managed_by: git`.
#[utoipa::path(post, path = "/import", tag = "classification as code", operation_id = "import",
    security(("bearer" = ["write"])), params(ImportQuery,
        ("If-Match" = Option<String>, Header, description = "To apply: the plan id of the plan to apply")),
    request_body = ImportBody,
    responses(
        (status = 200, description = "`dry_run`: the plan; else what was applied", body = PlanOrOutcome),
        (status = 428, description = "An apply without a plan id", body = crate::error::Problem,
            content_type = "application/problem+json"),
        WriteProblems,
    ))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Query(options): Query<ImportQuery>,
    headers: HeaderMap,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Result<Response, AppError> {
    let body: ImportBody = match body {
        Ok(axum::Json(value)) => parse_body(value)?,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(AppError::PayloadTooLarge(format!(
                "a tree may be at most {MAX_IMPORT_BYTES} bytes"
            )));
        }
        Err(r) => return Err(r.into()),
    };
    let named = match options.dry_run {
        true => None,
        false => Some(named_plan(&headers)?),
    };
    // An apply commits only on the groups it was judged on; if they move, it is planned and
    // judged again (and refused with 412 if that changes the plan).
    for _ in 0..super::node_groups::JUDGED_TRIES {
        let planning = plan(&state, &body).await?;
        let Some(id) = named.clone() else {
            return Ok(axum::Json(planning.plan).into_response());
        };
        let (steps, done) = match id == planning.plan.plan_id {
            true => (planning.steps, 0),
            false => resumed(&state, &id, &planning.steps).await?,
        };
        let conflicts = match done {
            0 => impact::refuse_conflicts(&planning.conflicts, options.force)?,
            _ => None,
        };
        let apply = Apply {
            plan_id: &id,
            source_revision: body.source_revision.as_deref(),
        };
        let by = By {
            apply: Some(apply),
            conflicts: conflicts.as_ref(),
            judged: (done == 0).then_some(planning.conflicts.generation),
            ..By::actor(caller.actor())
        };
        let batches = batches(state.store.max_writes(), &steps);
        if done == 0 && batches.len() > 1 {
            let entries: Vec<Value> = steps.iter().map(entry).collect();
            state.store.keep_plan(&id, &entries).await?;
        }
        let applied = match write(&state, &batches, by).await {
            Err(AppError::Unavailable(StoreError::TreeMoved)) => continue,
            applied => applied?,
        };
        tracing::info!(plan_id = %id, applied = applied.len(), already_applied = done, "plan applied");
        return Ok(axum::Json(ApplyOutcome {
            plan_id: id,
            applied,
            already_applied: done,
            summary: planning.plan.summary,
        })
        .into_response());
    }
    Err(super::node_groups::kept_moving())
}
