use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::impact::{self, Preview, WriteQuery};
use super::{IfMatchHeader, ListResponse, page_request, parse_name, stored, within_size};
use crate::AppState;
use crate::auth::Caller;
use crate::domain::{
    Certname, ClassName, ClusterName, EnvironmentName, Fields, GroupName, NodeGroup, ParamName,
    Stored,
};
use crate::error::{AppError, ReadProblems, WriteProblems};
use crate::extract::{IfMatch, Json, Path, Query};
use crate::store::{By, StoreError};

/// A node group as clients send it. The existing clients' shape `{name, class_, parameters}`
/// means one class `class_` whose parameters are `parameters`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "parent": "base",
    "classes": {"profile::nginx": {"worker_processes": 4}},
    "parameters": {"tier": "web"}
}))]
pub struct NodeGroupBody {
    /// On replace, if given, the name in the path.
    #[schema(value_type = Option<GroupName>)]
    name: Option<String>,
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// The group this one inherits classes and parameters from. It must exist, must not
    /// make a cycle, and a chain holds at most 32 groups, counting every group below this one
    /// (422 otherwise).
    #[schema(value_type = Option<GroupName>)]
    parent: Option<String>,
    /// Class name -> that class's parameters.
    #[schema(value_type = Option<BTreeMap<ClassName, Option<BTreeMap<ParamName, Value>>>>)]
    classes: Option<BTreeMap<String, Option<BTreeMap<String, Value>>>>,
    /// Top-scope variables; with `class_`, that class's parameters instead.
    #[schema(value_type = Option<BTreeMap<ParamName, Value>>)]
    parameters: Option<BTreeMap<String, Value>>,
    /// Legacy: a single class name (use `classes`; not both).
    #[schema(deprecated, value_type = Option<ClassName>)]
    class_: Option<String>,
    /// Nodes whose facts match this rule are members, in Puppet Enterprise's grammar:
    /// `["and"|"or", c, ...]`, `["not", c]`, `[op, path, value]` with op `=`, `~`, `>`, `>=`,
    /// `<`, `<=` and path `"name"`, `["fact", ...]` or `["trusted", ...]`; at most 256 terms,
    /// 16 deep, regexes of 1024 bytes (422 says where a rule is wrong).
    #[schema(value_type = Option<Vec<Value>>)]
    rule: Option<Value>,
    /// Nodes that are members whatever their facts (at most 10,000); on replace, if absent, the
    /// pins stay as they are (see also `/pin` and `/unpin`).
    #[schema(value_type = Option<Vec<Certname>>)]
    pinned: Option<Vec<String>>,
    /// With `puppet_cluster_name`: the environment (which must exist) of a node enc first
    /// learns of through this group's rule or pins.
    #[schema(value_type = Option<EnvironmentName>)]
    environment_name: Option<String>,
    #[schema(value_type = Option<ClusterName>)]
    puppet_cluster_name: Option<String>,
}

/// A new node group: as when replacing one, with its name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "web_servers",
    "parent": "base",
    "classes": {"profile::nginx": {"worker_processes": 4}},
    "parameters": {"tier": "web"}
}))]
#[expect(
    dead_code,
    reason = "documentation only: a new group is read as a `NodeGroupBody`"
)]
pub struct NewNodeGroup {
    name: GroupName,
    #[schema(max_length = 1000)]
    description: Option<String>,
    parent: Option<GroupName>,
    #[schema(value_type = Option<BTreeMap<ClassName, Option<BTreeMap<ParamName, Value>>>>)]
    classes: Option<Value>,
    #[schema(value_type = Option<BTreeMap<ParamName, Value>>)]
    parameters: Option<Value>,
    #[schema(deprecated)]
    class_: Option<ClassName>,
    #[schema(value_type = Option<Vec<Value>>)]
    rule: Option<Value>,
    pinned: Option<Vec<Certname>>,
    environment_name: Option<EnvironmentName>,
    puppet_cluster_name: Option<ClusterName>,
}

/// The most nodes one group may pin.
pub const MAX_PINS: usize = 10_000;

/// Checks pinned certnames: each a certname, at most `MAX_PINS`.
pub fn pins(f: &mut Fields, field: &str, names: Vec<String>) -> BTreeSet<Certname> {
    if names.len() > MAX_PINS {
        f.error(field, format!("at most {MAX_PINS} nodes"));
        return BTreeSet::new();
    }
    let mut pinned = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        match Certname::parse(name) {
            Ok(name) => {
                pinned.insert(name);
            }
            Err(message) => f.error(format!("{field}[{i}]"), message),
        }
    }
    pinned
}

impl NodeGroupBody {
    /// The group, and whether the body said which nodes are pinned.
    pub(crate) fn into_domain(
        self,
        path_name: Option<&GroupName>,
    ) -> Result<(NodeGroup, bool), AppError> {
        let mut f = Fields::default();
        let name = match path_name {
            Some(path) => {
                if self.name.as_ref().is_some_and(|n| n != path.as_str()) {
                    f.error("name", "must match the name in the path");
                }
                Some(path.clone())
            }
            None => f.required("name", self.name, GroupName::parse),
        };
        let description = f.description(self.description);
        let parent = f.optional("parent", self.parent, GroupName::parse);
        let parameters = self.parameters.unwrap_or_default();
        let (classes, parameters) = match self.class_ {
            Some(class) => {
                if self.classes.is_some() {
                    f.error("class_", "give either class_ or classes, not both");
                }
                let classes = f.classes("class_", BTreeMap::from([(class, Some(parameters))]));
                (classes, BTreeMap::new())
            }
            None => (
                f.classes("classes", self.classes.unwrap_or_default()),
                f.parameters("parameters", parameters),
            ),
        };
        let rule = match self.rule {
            None | Some(Value::Null) => None,
            Some(rule) => match crate::domain::rule::parse(&rule) {
                Ok(_) => Some(rule),
                Err(e) => {
                    f.error("rule", e.to_string());
                    None
                }
            },
        };
        let environment_name = f.optional(
            "environment_name",
            self.environment_name,
            EnvironmentName::parse,
        );
        let puppet_cluster_name = f.optional(
            "puppet_cluster_name",
            self.puppet_cluster_name,
            ClusterName::parse,
        );
        if environment_name.is_some() != puppet_cluster_name.is_some() {
            f.error(
                "environment_name",
                "environment_name and puppet_cluster_name go together",
            );
        }
        let pinned_given = self.pinned.is_some();
        let pinned = pins(&mut f, "pinned", self.pinned.unwrap_or_default());
        f.finish(|| {
            Some(NodeGroup {
                name: name?,
                description,
                parent,
                classes,
                parameters,
                rule,
                pinned,
                environment_name,
                puppet_cluster_name,
            })
        })
        .map(|group| (group, pinned_given))
        .map_err(AppError::Validation)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Items per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn group_name(raw: &str) -> Result<GroupName, AppError> {
    parse_name("node_group_name", raw, GroupName::parse)
}

/// A replace's answer: the group as stored, or with `dry_run` the preview.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "only names the answer's schema in the OpenAPI document"
)]
pub enum GroupOrPreview {
    Stored(Stored<NodeGroup>),
    Preview(Preview),
}

/// The preview of a group write, as the answer.
async fn previewed(
    state: &AppState,
    name: &GroupName,
    after: Option<Stored<NodeGroup>>,
) -> Result<Response, AppError> {
    let group = after.as_ref().map(|g| g.item.clone());
    let assessed = impact::of_group(state, name, group, after.as_ref()).await?;
    Ok(axum::Json(assessed.preview).into_response())
}

/// Before a group write: refused (409) if it would give nodes conflicting values, unless
/// forced; the conflicts a forced one creates, for its revision, and the group-tree
/// generation it was judged on, which the write's commit is conditional on.
pub(super) async fn judged(
    state: &AppState,
    name: &GroupName,
    after: Option<&NodeGroup>,
    options: &WriteQuery,
) -> Result<Judged, AppError> {
    if options.dry_run {
        return Ok(Judged::default());
    }
    let assessed = impact::of_group::<()>(state, name, after.cloned(), None).await?;
    Ok(Judged {
        conflicts: impact::refuse_conflicts(&assessed, options.force)?,
        generation: Some(assessed.generation),
    })
}

/// How a group write was judged.
#[derive(Default)]
pub(super) struct Judged {
    /// The conflicts a forced write creates.
    pub(super) conflicts: Option<serde_json::Value>,
    /// The group-tree generation the judgement was made on.
    pub(super) generation: Option<i64>,
}

impl Judged {
    pub(super) fn by<'a>(&'a self, by: By<'a>) -> By<'a> {
        By {
            conflicts: self.conflicts.as_ref(),
            judged: self.generation,
            ..by
        }
    }
}

/// How often a group write is judged again when the groups change under it.
pub(super) const JUDGED_TRIES: usize = 8;

/// The answer when the groups kept changing under a write.
pub(super) fn kept_moving() -> AppError {
    AppError::Unavailable(StoreError::Unavailable(
        "the node groups kept changing while the write was judged".into(),
    ))
}

/// Create a node group (`dry_run`: check it and preview it, storing nothing).
#[utoipa::path(post, path = "/nodegroup/", tag = "node groups", operation_id = "create_node_group",
    security(("bearer" = ["write"])), params(WriteQuery),
    request_body = NewNodeGroup,
    responses(
        (status = 201, description = "Created", body = Stored<NodeGroup>,
            headers(("ETag" = String), ("Location" = String))),
        (status = 200, description = "`dry_run`: what it would do", body = Preview),
        WriteProblems,
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Query(options): Query<WriteQuery>,
    Json(body): Json<NodeGroupBody>,
) -> Result<Response, AppError> {
    let group = within_size(body.into_domain(None)?.0)?;
    let name = group.name.clone();
    for _ in 0..JUDGED_TRIES {
        let judged = judged(&state, &name, Some(&group), &options).await?;
        let by = judged.by(options.by(&caller));
        let created = match state.store.create_node_group(group.clone(), by).await {
            Err(StoreError::TreeMoved) => continue,
            other => other?,
        };
        if options.dry_run {
            return previewed(&state, &name, Some(created)).await;
        }
        let location = ["nodegroup", created.item.name.as_str()];
        return Ok(stored(StatusCode::CREATED, &created, &location));
    }
    Err(kept_moving())
}

/// List node groups.
#[utoipa::path(get, path = "/nodegroup", tag = "node groups", operation_id = "list_node_groups",
    security(("bearer" = ["read"])), params(ListQuery),
    responses((status = 200, body = ListResponse<Stored<NodeGroup>>), ReadProblems))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<ListResponse<Stored<NodeGroup>>>, AppError> {
    let page = page_request(query.limit, query.cursor)?;
    Ok(axum::Json(
        state.store.list_node_groups(&page).await?.into(),
    ))
}

/// Read one node group.
#[utoipa::path(get, path = "/nodegroup/{node_group_name}", tag = "node groups", operation_id = "get_node_group",
    security(("bearer" = ["read"])), params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded")),
    responses((status = 200, body = Stored<NodeGroup>, headers(("ETag" = String))), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let group = state.store.get_node_group(&group_name(&name)?).await?;
    Ok(stored(StatusCode::OK, &group, &[]))
}

/// Replace a node group; refused (422) if its parent is missing, would make a cycle, or would
/// make a chain deeper than 32 groups. `dry_run`: the nodes in it and below it whose
/// classification would change, and how; nothing stored.
#[utoipa::path(put, path = "/nodegroup/{node_group_name}", tag = "node groups", operation_id = "replace_node_group",
    security(("bearer" = ["write"])), params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"), IfMatchHeader, WriteQuery),
    request_body = NodeGroupBody,
    responses((status = 200, description = "The group as stored or, with `dry_run`, a `Preview`",
        body = GroupOrPreview,
        headers(("ETag" = String))), WriteProblems))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(expected): IfMatch,
    Path(name): Path<String>,
    Query(options): Query<WriteQuery>,
    Json(body): Json<NodeGroupBody>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let (mut group, pinned_given) = body.into_domain(Some(&name))?;
    for _ in 0..JUDGED_TRIES {
        // Without `pinned` the group keeps its pins: judged with them, and any pin change
        // since moves the tree, so the write is judged again with the new ones.
        let mut at = expected;
        if !pinned_given && !options.dry_run {
            let current = state.store.get_node_group(&name).await?;
            group.pinned = current.item.pinned;
            at = expected.or(Some(current.meta.version));
        }
        let judged = judged(&state, &name, Some(&group), &options).await?;
        let by = judged.by(options.by(&caller));
        let written = within_size(group.clone())?;
        let replaced = match state.store.replace_node_group(written, at, by).await {
            Err(StoreError::TreeMoved) => continue,
            Err(StoreError::VersionMismatch { .. }) if expected.is_none() => continue,
            other => other?,
        };
        if options.dry_run {
            return previewed(&state, &name, Some(replaced)).await;
        }
        return Ok(stored(StatusCode::OK, &replaced, &[]));
    }
    Err(kept_moving())
}

/// Delete a node group; refused (409) while nodes or child groups use it.
#[utoipa::path(delete, path = "/nodegroup/{node_group_name}", tag = "node groups", operation_id = "delete_node_group",
    security(("bearer" = ["write"])), params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"), IfMatchHeader, WriteQuery),
    responses((status = 204, description = "Deleted"),
        (status = 200, description = "`dry_run`: what it would do", body = Preview), WriteProblems))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(expected): IfMatch,
    Path(name): Path<String>,
    Query(options): Query<WriteQuery>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    for _ in 0..JUDGED_TRIES {
        let judged = judged(&state, &name, None, &options).await?;
        let by = judged.by(options.by(&caller));
        match state.store.delete_node_group(&name, expected, by).await {
            Err(StoreError::TreeMoved) => continue,
            other => other?,
        }
        if options.dry_run {
            return previewed(&state, &name, None).await;
        }
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Err(kept_moving())
}

/// Nodes to pin to a group or unpin from it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    /// Certnames (at most 10,000 pinned per group).
    #[schema(value_type = Vec<Certname>)]
    nodes: Vec<String>,
}

async fn change_pins(
    state: &AppState,
    caller: &Caller,
    name: &str,
    options: WriteQuery,
    body: PinBody,
    pin: bool,
) -> Result<Response, AppError> {
    let name = group_name(name)?;
    let mut f = Fields::default();
    let nodes = pins(&mut f, "nodes", body.nodes);
    f.finish(|| Some(())).map_err(AppError::Validation)?;
    for _ in 0..8 {
        let current = state.store.get_node_group(&name).await?;
        let mut group = current.item;
        if pin {
            group.pinned.extend(nodes.iter().cloned());
        } else {
            group.pinned.retain(|n| !nodes.contains(n));
        }
        if group.pinned.len() > MAX_PINS {
            return Err(AppError::invalid(
                "nodes",
                format!("a group pins at most {MAX_PINS} nodes"),
            ));
        }
        let version = Some(current.meta.version);
        let judged = judged(state, &name, Some(&group), &options).await?;
        let by = judged.by(options.by(caller));
        match state.store.replace_node_group(group, version, by).await {
            Err(StoreError::VersionMismatch { .. } | StoreError::TreeMoved) => continue,
            Ok(changed) if options.dry_run => {
                return previewed(state, &name, Some(changed)).await;
            }
            other => return Ok(stored(StatusCode::OK, &other?, &[])),
        }
    }
    Err(AppError::Unavailable(StoreError::Unavailable(
        "the node group kept changing".into(),
    )))
}

/// Pin nodes to a group: they are members whatever their facts (a new version of the group).
#[utoipa::path(post, path = "/nodegroup/{node_group_name}/pin", tag = "node groups", operation_id = "pin_nodes",
    security(("bearer" = ["write"])), params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"), WriteQuery),
    request_body = PinBody,
    responses((status = 200, description = "The group as stored or, with `dry_run`, a `Preview`",
        body = GroupOrPreview, headers(("ETag" = String))), WriteProblems))]
pub async fn pin(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(options): Query<WriteQuery>,
    Json(body): Json<PinBody>,
) -> Result<Response, AppError> {
    change_pins(&state, &caller, &name, options, body, true).await
}

/// Unpin nodes from a group (a new version of the group).
#[utoipa::path(post, path = "/nodegroup/{node_group_name}/unpin", tag = "node groups", operation_id = "unpin_nodes",
    security(("bearer" = ["write"])), params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"), WriteQuery),
    request_body = PinBody,
    responses((status = 200, description = "The group as stored or, with `dry_run`, a `Preview`",
        body = GroupOrPreview, headers(("ETag" = String))), WriteProblems))]
pub async fn unpin(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(options): Query<WriteQuery>,
    Json(body): Json<PinBody>,
) -> Result<Response, AppError> {
    change_pins(&state, &caller, &name, options, body, false).await
}

/// unpin-from-all's answer: the groups changed, or with `dry_run` the preview.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum UnpinnedOrPreview {
    Unpinned(Unpinned),
    Preview(Preview),
}

/// The groups a node was taken off.
#[derive(Debug, Serialize, ToSchema)]
// Nothing else in it: a preview (which may list `unpinned_from` too) is not one.
#[serde(deny_unknown_fields)]
pub struct Unpinned {
    /// Each group that pinned one of the nodes: each a new version, all in one commit.
    #[schema(value_type = Vec<String>)]
    pub unpinned_from: Vec<GroupName>,
}

/// Take nodes off every group that pins them, in one commit (each group a new version): as
/// Puppet Enterprise's `unpin-from-all`. Refused with 409 if it would give one of them
/// conflicting values, unless `force`.
#[utoipa::path(post, path = "/commands/unpin-from-all", tag = "node groups", operation_id = "unpin_from_all",
    security(("bearer" = ["write"])), params(WriteQuery),
    request_body = PinBody,
    responses((status = 200, description = "The groups changed or, with `dry_run`, a `Preview` (with `unpinned_from`)",
        body = UnpinnedOrPreview), WriteProblems))]
pub async fn unpin_from_all(
    State(state): State<AppState>,
    caller: Caller,
    Query(options): Query<WriteQuery>,
    Json(body): Json<PinBody>,
) -> Result<Response, AppError> {
    let mut f = Fields::default();
    let nodes = pins(&mut f, "nodes", body.nodes);
    f.finish(|| Some(())).map_err(AppError::Validation)?;
    for _ in 0..8 {
        // Judged on the tree the commit is conditional on: if it moves, judged again.
        let tree = state.store.current_tree().await?;
        let assessment = impact::of_unpinning(&state, &tree, &nodes).await?;
        let conflicts = match options.dry_run {
            true => None,
            false => impact::refuse_conflicts(&assessment, options.force)?,
        };
        let by = By {
            conflicts: conflicts.as_ref(),
            ..options.by(&caller)
        };
        let Some(groups) = state.store.unpin_from_all(&tree, &nodes, by).await? else {
            continue;
        };
        if options.dry_run {
            return Ok(axum::Json(assessment.preview).into_response());
        }
        return Ok(axum::Json(Unpinned {
            unpinned_from: groups,
        })
        .into_response());
    }
    Err(AppError::Unavailable(StoreError::Unavailable(
        "the node groups kept changing".into(),
    )))
}
