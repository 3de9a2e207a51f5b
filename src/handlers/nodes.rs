use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{ListResponse, page_request, parse_filter, parse_name, stored, within_size};
use crate::AppState;
use crate::auth::Caller;
use crate::domain::{Certname, ClusterName, EnvironmentName, Fields, GroupName, Node, Stored};
use crate::error::{AppError, ReadProblems, WriteProblems};
use crate::extract::{IfMatch, Json, Path, Query};
use crate::store::NodeFilter;

/// A node as clients send it.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "unique_name": "web01.example.com",
    "node_group_name": "web_servers",
    "environment_name": "production",
    "puppet_cluster_name": "puppet-eu-west-1"
}))]
pub struct NodeBody {
    /// The certname. Required on create; on replace, if given, it must match the path.
    #[schema(example = "web01.example.com")]
    unique_name: Option<String>,
    node_group_name: Option<String>,
    environment_name: Option<String>,
    puppet_cluster_name: Option<String>,
    /// Classes for this node alone: class name -> parameters.
    #[schema(value_type = Option<Object>)]
    classes: Option<BTreeMap<String, Option<BTreeMap<String, Value>>>>,
    /// Top-scope variables for this node alone.
    #[schema(value_type = Option<Object>)]
    parameters: Option<BTreeMap<String, Value>>,
}

impl NodeBody {
    fn into_domain(self, path_name: Option<&Certname>) -> Result<Node, AppError> {
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
    /// Items per page, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only nodes in this environment.
    environment_name: Option<String>,
    /// Only nodes of this Puppet cluster.
    puppet_cluster_name: Option<String>,
    /// Only nodes directly in this node group.
    node_group_name: Option<String>,
}

fn certname(raw: &str) -> Result<Certname, AppError> {
    parse_name("unique_name", raw, Certname::parse)
}

/// Create a node.
#[utoipa::path(post, path = "/nodes/", tag = "nodes", security(("bearer" = ["write"])),
    request_body = NodeBody,
    responses(
        (status = 201, description = "Created", body = Stored<Node>,
            headers(("ETag" = String), ("Location" = String))),
        WriteProblems,
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NodeBody>,
) -> Result<Response, AppError> {
    let node = within_size(body.into_domain(None)?)?;
    let created = state.store.create_node(node, caller.actor()).await?;
    let location = format!("/nodes/{}", created.item.unique_name);
    Ok(stored(StatusCode::CREATED, &created, Some(location)))
}

/// List nodes, optionally filtered by environment, cluster or group.
#[utoipa::path(get, path = "/nodes", tag = "nodes", security(("bearer" = ["read"])), params(ListQuery),
    responses((status = 200, body = ListResponse<Stored<Node>>), ReadProblems))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<ListResponse<Stored<Node>>>, AppError> {
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
    let page = page_request(query.limit, query.cursor)?;
    Ok(axum::Json(
        state.store.list_nodes(&filter, &page).await?.into(),
    ))
}

/// Read one node.
#[utoipa::path(get, path = "/nodes/{unique_name}", tag = "nodes", security(("bearer" = ["read"])),
    params(("unique_name" = String, Path, description = "The node's certname")),
    responses((status = 200, body = Stored<Node>, headers(("ETag" = String))), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let node = state.store.get_node(&certname(&name)?).await?;
    Ok(stored(StatusCode::OK, &node, None))
}

/// Replace a node.
#[utoipa::path(put, path = "/nodes/{unique_name}", tag = "nodes", security(("bearer" = ["write"])),
    params(("unique_name" = String, Path, description = "The node's certname"),
        ("If-Match" = Option<String>, Header, description = "Replace only if at this version")),
    request_body = NodeBody,
    responses((status = 200, body = Stored<Node>, headers(("ETag" = String))), WriteProblems))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(expected): IfMatch,
    Path(name): Path<String>,
    Json(body): Json<NodeBody>,
) -> Result<Response, AppError> {
    let node = within_size(body.into_domain(Some(&certname(&name)?))?)?;
    let replaced = state
        .store
        .replace_node(node, expected, caller.actor())
        .await?;
    Ok(stored(StatusCode::OK, &replaced, None))
}

/// Delete a node.
#[utoipa::path(delete, path = "/nodes/{unique_name}", tag = "nodes", security(("bearer" = ["write"])),
    params(("unique_name" = String, Path, description = "The node's certname"),
        ("If-Match" = Option<String>, Header, description = "Delete only if at this version")),
    responses((status = 204, description = "Deleted"), WriteProblems))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(expected): IfMatch,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let name = certname(&name)?;
    state
        .store
        .delete_node(&name, expected, caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
