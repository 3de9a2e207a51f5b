use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    IfMatchHeader, ListResponse, PageQuery, Preview, WriteQuery, answer, parse_name, stored,
    within_size,
};
use crate::AppState;
use crate::auth::Caller;
use crate::classifier::Change;
pub use crate::classifier::MAX_PINS;
use crate::domain::{
    Certname, ClassName, ClusterName, EnvironmentName, Fields, GroupName, NodeGroup, ParamName,
    Stored,
};
use crate::error::{AppError, ReadProblems, WriteProblems};
use crate::extract::{IfMatch, Json, Path, Query};

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
    let change = Change::CreateGroup(group);
    let outcome = super::classifier(&state).write(&change, options.write(&caller));
    Ok(answer(outcome.await?, Some(&["nodegroup", name.as_str()])))
}

/// List node groups.
#[utoipa::path(get, path = "/nodegroup", tag = "node groups", operation_id = "list_node_groups",
    security(("bearer" = ["read"])), params(PageQuery),
    responses((status = 200, description = "A page of node groups", body = ListResponse<Stored<NodeGroup>>), ReadProblems))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<ListResponse<Stored<NodeGroup>>>, AppError> {
    let page = query.page()?;
    Ok(axum::Json(
        state.store.list_node_groups(&page).await?.into(),
    ))
}

/// Read one node group.
#[utoipa::path(get, path = "/nodegroup/{node_group_name}", tag = "node groups", operation_id = "get_node_group",
    security(("bearer" = ["read"])), params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded")),
    responses((status = 200, description = "The node group", body = Stored<NodeGroup>, headers(("ETag" = String))), ReadProblems))]
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
    let (group, pinned_given) = body.into_domain(Some(&name))?;
    // Without `pinned` the group keeps the pins it has (checked for size with them).
    let change = Change::ReplaceGroup {
        group: within_size(group)?,
        keep_pins: !pinned_given,
        expected,
    };
    let outcome = super::classifier(&state).write(&change, options.write(&caller));
    Ok(answer(outcome.await?, None))
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
    let change = Change::DeleteGroup { name, expected };
    let outcome = super::classifier(&state).write(&change, options.write(&caller));
    Ok(answer(outcome.await?, None))
}

/// Nodes to pin to a group or unpin from it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    /// Certnames (at most 10,000 pinned per group).
    #[schema(value_type = Vec<Certname>)]
    nodes: Vec<String>,
}

/// A request to pin nodes to a group or unpin them: who asks, the group, the write's
/// options and the nodes, extracted in that order.
pub struct Pinning {
    caller: Caller,
    name: String,
    options: WriteQuery,
    body: PinBody,
}

impl FromRequest<AppState> for Pinning {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, AppError> {
        let (mut parts, body) = request.into_parts();
        let caller = Caller::from_request_parts(&mut parts, state).await?;
        let Path(name) = Path::<String>::from_request_parts(&mut parts, state).await?;
        let Query(options) = Query::<WriteQuery>::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        let Json(body) = Json::<PinBody>::from_request(request, state).await?;
        Ok(Pinning {
            caller,
            name,
            options,
            body,
        })
    }
}

impl Pinning {
    /// Pins (`pin`) or unpins the nodes, judged as any group write.
    async fn write(self, state: &AppState, pin: bool) -> Result<Response, AppError> {
        let name = group_name(&self.name)?;
        let mut f = Fields::default();
        let nodes = pins(&mut f, "nodes", self.body.nodes);
        f.finish(|| Some(())).map_err(AppError::Validation)?;
        let change = Change::Pins {
            group: name,
            nodes,
            pin,
        };
        let outcome = super::classifier(state).write(&change, self.options.write(&self.caller));
        Ok(answer(outcome.await?, None))
    }
}

/// Pin nodes to a group: they are members whatever their facts (a new version of the group).
#[utoipa::path(post, path = "/nodegroup/{node_group_name}/pin", tag = "node groups", operation_id = "pin_nodes",
    security(("bearer" = ["write"])), params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"), WriteQuery),
    request_body = PinBody,
    responses((status = 200, description = "The group as stored or, with `dry_run`, a `Preview`",
        body = GroupOrPreview, headers(("ETag" = String))), WriteProblems))]
pub async fn pin(State(state): State<AppState>, asked: Pinning) -> Result<Response, AppError> {
    asked.write(&state, true).await
}

/// Unpin nodes from a group (a new version of the group).
#[utoipa::path(post, path = "/nodegroup/{node_group_name}/unpin", tag = "node groups", operation_id = "unpin_nodes",
    security(("bearer" = ["write"])), params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"), WriteQuery),
    request_body = PinBody,
    responses((status = 200, description = "The group as stored or, with `dry_run`, a `Preview`",
        body = GroupOrPreview, headers(("ETag" = String))), WriteProblems))]
pub async fn unpin(State(state): State<AppState>, asked: Pinning) -> Result<Response, AppError> {
    asked.write(&state, false).await
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
    let change = Change::UnpinFromAll(nodes);
    let outcome = super::classifier(&state).write(&change, options.write(&caller));
    Ok(answer(outcome.await?, None))
}
