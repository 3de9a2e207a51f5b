use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{
    IfMatchHeader, ListResponse, PageQuery, Preview, WriteQuery, answer, parse_filter, parse_name,
    stored_json, within_size,
};
use crate::AppState;
use crate::auth::{Asker, Caller, Identity};
use crate::classifier::{Change, absent};
use crate::domain::{
    Certname, ClassName, ClusterName, EnvironmentName, Fields, GroupName, Node, ParamName, Stored,
};
use crate::error::{AppError, ReadProblems, WriteProblems};
use crate::extract::{IfMatch, Json, Paged, Path, Query};
use crate::store::NodeFilter;
use crate::store::Record;

/// A node as clients send it to replace one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "node_group_name": "web_servers",
    "environment_name": "production",
    "puppet_cluster_name": "puppet-eu-west-1"
}))]
pub struct NodeBody {
    /// The certname: on replace, if given, the one in the path.
    #[schema(value_type = Option<Certname>)]
    unique_name: Option<String>,
    /// The node group it is in, which must exist.
    #[schema(value_type = Option<GroupName>)]
    node_group_name: Option<String>,
    /// Its environment, which must exist for its cluster.
    #[schema(value_type = EnvironmentName, required = true)]
    environment_name: Option<String>,
    #[schema(value_type = ClusterName, required = true)]
    puppet_cluster_name: Option<String>,
    /// Classes for this node alone: class name -> parameters.
    #[schema(value_type = Option<BTreeMap<ClassName, Option<BTreeMap<ParamName, Value>>>>)]
    classes: Option<BTreeMap<String, Option<BTreeMap<String, Value>>>>,
    /// Top-scope variables for this node alone.
    #[schema(value_type = Option<BTreeMap<ParamName, Value>>)]
    parameters: Option<BTreeMap<String, Value>>,
}

/// A new node: as when replacing one, with its certname.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "unique_name": "web01.example.com",
    "node_group_name": "web_servers",
    "environment_name": "production",
    "puppet_cluster_name": "puppet-eu-west-1"
}))]
#[expect(
    dead_code,
    reason = "documentation only: a new node is read as a `NodeBody`"
)]
pub struct NewNode {
    unique_name: Certname,
    node_group_name: Option<GroupName>,
    environment_name: EnvironmentName,
    puppet_cluster_name: ClusterName,
    #[schema(value_type = Option<BTreeMap<ClassName, Option<BTreeMap<ParamName, Value>>>>)]
    classes: Option<Value>,
    #[schema(value_type = Option<BTreeMap<ParamName, Value>>)]
    parameters: Option<Value>,
}

impl NodeBody {
    pub(crate) fn into_domain(self, path_name: Option<&Certname>) -> Result<Node, AppError> {
        let mut f = Fields::default();
        let name = match path_name {
            Some(path) => {
                if self
                    .unique_name
                    .as_ref()
                    .is_some_and(|n| n != path.as_str())
                {
                    f.error("unique_name", "must match the name in the path");
                }
                Some(path.clone())
            }
            None => f.required("unique_name", self.unique_name, Certname::parse),
        };
        let group = f.optional("node_group_name", self.node_group_name, GroupName::parse);
        let environment = f.required(
            "environment_name",
            self.environment_name,
            EnvironmentName::parse,
        );
        let cluster = f.required(
            "puppet_cluster_name",
            self.puppet_cluster_name,
            ClusterName::parse,
        );
        let classes = f.classes("classes", self.classes.unwrap_or_default());
        let parameters = f.parameters("parameters", self.parameters.unwrap_or_default());
        f.finish(|| {
            Some(Node {
                unique_name: name?,
                node_group_name: group,
                environment_name: environment?,
                puppet_cluster_name: cluster?,
                classes,
                parameters,
            })
        })
        .map_err(AppError::Validation)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only nodes in this environment.
    #[param(value_type = Option<EnvironmentName>)]
    environment_name: Option<String>,
    /// Only nodes of this Puppet cluster.
    #[param(value_type = Option<ClusterName>)]
    puppet_cluster_name: Option<String>,
    /// Only nodes directly in this node group.
    #[param(value_type = Option<GroupName>)]
    node_group_name: Option<String>,
}

fn certname(raw: &str) -> Result<Certname, AppError> {
    parse_name("unique_name", raw, Certname::parse)
}

/// A replace's answer: the node as stored, or with `dry_run` the preview.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum NodeOrPreview {
    Stored(Stored<Node>),
    Preview(Preview),
}

/// Create a node (`dry_run`: check it and preview its classification, storing nothing).
#[utoipa::path(post, path = "/nodes/", tag = "nodes", operation_id = "create_node",
    security(("bearer" = ["write"])), params(WriteQuery),
    request_body = NewNode,
    responses(
        (status = 201, description = "Created", body = Stored<Node>,
            headers(("ETag" = String), ("Location" = String))),
        (status = 200, description = "`dry_run`: what it would do", body = Preview),
        WriteProblems,
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Query(options): Query<WriteQuery>,
    Json(body): Json<NodeBody>,
) -> Result<Response, AppError> {
    let node = within_size(body.into_domain(None)?)?;
    let name = node.unique_name.clone();
    let change = Change::CreateNode(node);
    let outcome = super::classifier(&state).write(&change, options.write(&caller));
    Ok(answer(outcome.await?, Some(&["nodes", name.as_str()])))
}

/// List nodes, optionally filtered by environment, cluster or group.
#[utoipa::path(get, path = "/nodes", tag = "nodes", operation_id = "list_nodes",
    security(("bearer" = ["read"])), params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of nodes", body = ListResponse<Stored<Node>>), ReadProblems))]
pub async fn list(
    State(state): State<AppState>,
    Paged(page, query): Paged<PageQuery, ListQuery>,
) -> Result<Response, AppError> {
    let filter = NodeFilter {
        environment_name: parse_filter(
            "environment_name",
            query.environment_name,
            EnvironmentName::parse,
        )?,
        puppet_cluster_name: parse_filter(
            "puppet_cluster_name",
            query.puppet_cluster_name,
            ClusterName::parse,
        )?,
        node_group_name: parse_filter("node_group_name", query.node_group_name, GroupName::parse)?,
    };
    let page = state
        .store
        .list_node_records(&filter, &page.page()?)
        .await?;
    // A `ListResponse` written out by hand: each node's JSON is the one a read of it
    // answers, made once per version of its record (decoding and encoding a node costs
    // more than everything else a page does).
    let mut out =
        Vec::with_capacity(page.items.iter().map(|r| r.body.len() + 1).sum::<usize>() + 128);
    out.extend_from_slice(b"{\"items\":[");
    for (i, record) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // The name only says where the node's JSON is kept: the record's bytes decide.
        let name = serde_json::from_slice::<Named>(&record.body).map(|n| n.unique_name);
        out.extend_from_slice(&node_body(&state, name.as_deref().unwrap_or(""), record)?);
    }
    out.extend_from_slice(b"],\"next_cursor\":");
    serde_json::to_writer(&mut out, &page.next_cursor)
        .map_err(|e| AppError::Internal(Box::new(e)))?;
    out.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// Read one node.
#[utoipa::path(get, path = "/nodes/{unique_name}", tag = "nodes", operation_id = "get_node",
    security(("bearer" = ["read"])), params(("unique_name" = Certname, Path, description = "The node's certname")),
    responses((status = 200, description = "The node", body = Stored<Node>, headers(("ETag" = String))), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    // Not `Caller`: a request whose token is left to this handler has none, and makes none.
    asker: Asker,
    path: Result<Path<String>, AppError>,
) -> Result<Response, AppError> {
    // With a token left to this handler, it is read with the node and checked first.
    let name = path.and_then(|Path(name)| certname(&name));
    let (name, record) = match (name, asker) {
        (Err(invalid), Asker::Deferred(deferred)) => {
            return Err(state.auth.refuse(state.ground(), deferred, invalid).await);
        }
        (Ok(name), Asker::Deferred(deferred)) => {
            let token = deferred.token().clone();
            let read = state.store.node_and_token_records(&name, &token);
            let (record, identity) = state.auth.admitted(state.ground(), deferred, read).await?;
            let record = record.ok_or_else(|| absent(&name))?;
            reached(&identity, &name, &record)?;
            (name, record)
        }
        (name, Asker::Known(identity)) => {
            let name = name?;
            let record = state.store.node_record(&name).await?;
            if let Some(identity) = &identity {
                reached(identity, &name, &record)?;
            }
            (name, record)
        }
    };
    node_json(&state, &name, &record)
}

/// The cluster in a node's record, read without the rest of the node.
#[derive(Deserialize)]
struct InCluster<'a> {
    #[serde(borrow)]
    puppet_cluster_name: std::borrow::Cow<'a, str>,
}

/// Whether `identity` may see the node of `record`: a token bound to other clusters is
/// answered as if the node did not exist.
pub(super) fn reached(
    identity: &Identity,
    name: &Certname,
    record: &Record,
) -> Result<(), AppError> {
    let Some(clusters) = &identity.clusters else {
        return Ok(());
    };
    let node: InCluster<'_> =
        serde_json::from_slice(&record.body).map_err(|e| AppError::Internal(Box::new(e)))?;
    if clusters
        .iter()
        .any(|c| c.as_str() == node.puppet_cluster_name)
    {
        Ok(())
    } else {
        Err(absent(name))
    }
}

/// [`reached`] for a handler that has not read the node: it is read only for a bound token.
pub(super) async fn within_reach(
    state: &AppState,
    identity: &Identity,
    name: &Certname,
) -> Result<(), AppError> {
    if identity.clusters.is_none() {
        return Ok(());
    }
    let record = state.store.node_record(name).await?;
    reached(identity, name, &record)
}

/// The name in a node's record, read without the rest of the node.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    unique_name: std::borrow::Cow<'a, str>,
}

/// A node's JSON answer, with its version as the `ETag`.
fn node_json(state: &AppState, name: &Certname, record: &Record) -> Result<Response, AppError> {
    let body = node_body(state, name.as_str(), record)?;
    Ok(stored_json(body, record.version))
}

/// A node's JSON: the same record as last time answers with the same bytes, made once.
fn node_body(state: &AppState, name: &str, record: &Record) -> Result<bytes::Bytes, AppError> {
    state.answers.nodes.get(name, 0, &record.body, || {
        let node: Stored<Node> = crate::store::decode(record)?;
        let body = serde_json::to_vec(&node).map_err(|e| AppError::Internal(Box::new(e)))?;
        let size = body.len();
        Ok::<_, AppError>((body.into(), size))
    })
}

/// Replace a node (`dry_run`: how its classification would change; nothing stored).
#[utoipa::path(put, path = "/nodes/{unique_name}", tag = "nodes", operation_id = "replace_node",
    security(("bearer" = ["write"])), params(("unique_name" = Certname, Path, description = "The node's certname"), IfMatchHeader, WriteQuery),
    request_body = NodeBody,
    responses((status = 200, description = "The node as stored or, with `dry_run`, a `Preview`",
        body = NodeOrPreview,
        headers(("ETag" = String))), WriteProblems))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(expected): IfMatch,
    Path(name): Path<String>,
    Query(options): Query<WriteQuery>,
    Json(body): Json<NodeBody>,
) -> Result<Response, AppError> {
    let name = certname(&name)?;
    let node = within_size(body.into_domain(Some(&name))?)?;
    let change = Change::ReplaceNode { node, expected };
    let outcome = super::classifier(&state).write(&change, options.write(&caller));
    Ok(answer(outcome.await?, None))
}

/// Delete a node, taking it off every group that pins it in the same commit (`dry_run`: what
/// its classification was and the groups that would stop pinning it; nothing stored).
#[utoipa::path(delete, path = "/nodes/{unique_name}", tag = "nodes", operation_id = "delete_node",
    security(("bearer" = ["write"])), params(("unique_name" = Certname, Path, description = "The node's certname"), IfMatchHeader, WriteQuery),
    responses((status = 204, description = "Deleted"),
        (status = 200, description = "`dry_run`: what it would do", body = Preview), WriteProblems))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(expected): IfMatch,
    Path(name): Path<String>,
    Query(options): Query<WriteQuery>,
) -> Result<Response, AppError> {
    let name = certname(&name)?;
    let change = Change::DeleteNode { name, expected };
    let outcome = super::classifier(&state).write(&change, options.write(&caller));
    Ok(answer(outcome.await?, None))
}
