use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    ForceQuery, IfMatchHeader, ListResponse, PageQuery, parse_filter, parse_name, stored,
    within_size,
};
use crate::AppState;
use crate::auth::Caller;
use crate::domain::{ClusterName, Environment, EnvironmentKey, EnvironmentName, Fields, Stored};
use crate::error::{AppError, ReadProblems, WriteProblems};
use crate::extract::{IfMatch, Json, Paged, Path, Query};
use crate::store::EnvironmentFilter;

/// An environment as clients send it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"environment_name": "production", "puppet_cluster_name": "puppet-eu-west-1"}))]
pub struct EnvironmentBody {
    #[schema(value_type = EnvironmentName, required = true)]
    environment_name: Option<String>,
    #[schema(value_type = ClusterName, required = true)]
    puppet_cluster_name: Option<String>,
    #[schema(max_length = 1000)]
    description: Option<String>,
}

impl EnvironmentBody {
    pub(crate) fn into_domain(self) -> Result<Environment, AppError> {
        let mut f = Fields::default();
        let name = f.required(
            "environment_name",
            self.environment_name,
            EnvironmentName::parse,
        );
        let cluster = f.required(
            "puppet_cluster_name",
            self.puppet_cluster_name,
            ClusterName::parse,
        );
        let description = f.description(self.description);
        f.finish(|| {
            Some(Environment {
                environment_name: name?,
                puppet_cluster_name: cluster?,
                description,
            })
        })
        .map_err(AppError::Validation)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only environments of this Puppet cluster.
    #[param(value_type = Option<ClusterName>)]
    puppet_cluster_name: Option<String>,
}

fn key(environment_name: &str, puppet_cluster_name: &str) -> Result<EnvironmentKey, AppError> {
    Ok(EnvironmentKey {
        environment_name: parse_name("environment_name", environment_name, EnvironmentName::parse)?,
        puppet_cluster_name: parse_name(
            "puppet_cluster_name",
            puppet_cluster_name,
            ClusterName::parse,
        )?,
    })
}

/// Create an environment for a Puppet cluster.
#[utoipa::path(post, path = "/environment/", tag = "environments", operation_id = "create_environment",
    security(("bearer" = ["write"])),
    request_body = EnvironmentBody,
    responses(
        (status = 201, description = "Created", body = Stored<Environment>,
            headers(("ETag" = String), ("Location" = String))),
        WriteProblems,
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    _: Query<super::NoQuery>,
    Json(body): Json<EnvironmentBody>,
) -> Result<Response, AppError> {
    let env = within_size(body.into_domain()?)?;
    let created = state.store.create_environment(env, caller.by()).await?;
    let location = [
        "environment",
        created.item.environment_name.as_str(),
        created.item.puppet_cluster_name.as_str(),
    ];
    Ok(stored(StatusCode::CREATED, &created, &location))
}

/// List environments, optionally of one Puppet cluster.
#[utoipa::path(get, path = "/environment", tag = "environments", operation_id = "list_environments",
    security(("bearer" = ["read"])), params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of environments", body = ListResponse<Stored<Environment>>), ReadProblems))]
pub async fn list(
    State(state): State<AppState>,
    Paged(page, query): Paged<PageQuery, ListQuery>,
) -> Result<axum::Json<ListResponse<Stored<Environment>>>, AppError> {
    let filter = EnvironmentFilter {
        puppet_cluster_name: parse_filter(
            "puppet_cluster_name",
            query.puppet_cluster_name,
            ClusterName::parse,
        )?,
    };
    let page = state
        .store
        .list_environments(&filter, &page.page()?)
        .await?;
    Ok(axum::Json(page.into()))
}

/// Read one environment.
#[utoipa::path(get, path = "/environment/{environment_name}/{puppet_cluster_name}",
    tag = "environments", operation_id = "get_environment", security(("bearer" = ["read"])),
    params(("environment_name" = EnvironmentName, Path), ("puppet_cluster_name" = ClusterName, Path)),
    responses((status = 200, description = "The environment", body = Stored<Environment>, headers(("ETag" = String))), ReadProblems))]
pub async fn get(
    State(state): State<AppState>,
    Path((environment_name, puppet_cluster_name)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let key = key(&environment_name, &puppet_cluster_name)?;
    let env = state.store.get_environment(&key).await?;
    Ok(stored(StatusCode::OK, &env, &[]))
}

/// Delete an environment; refused (409) while nodes use it.
#[utoipa::path(delete, path = "/environment/{environment_name}/{puppet_cluster_name}",
    tag = "environments", operation_id = "delete_environment", security(("bearer" = ["write"])),
    params(("environment_name" = EnvironmentName, Path), ("puppet_cluster_name" = ClusterName, Path), IfMatchHeader, ForceQuery),
    responses((status = 204, description = "Deleted"), WriteProblems))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(expected): IfMatch,
    Query(options): Query<ForceQuery>,
    Path((environment_name, puppet_cluster_name)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let key = key(&environment_name, &puppet_cluster_name)?;
    state
        .store
        .delete_environment(&key, expected, options.by(&caller))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
