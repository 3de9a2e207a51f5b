use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::parse_name;
use crate::AppState;
use crate::domain::{Certname, Classification, Explanation, NodeGroup, classify};
use crate::error::{AppError, ReadProblems};
use crate::extract::{Path, Query};

pub const YAML: &str = "application/yaml";
const YAML_TYPES: [&str; 4] = [YAML, "application/x-yaml", "text/yaml", "text/x-yaml"];

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Yaml,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClassificationQuery {
    /// `yaml` for Puppet's exec terminus format; default JSON, or YAML if `Accept` asks for it.
    #[param(inline)]
    format: Option<Format>,
    /// Add where every class and value came from.
    #[serde(default)]
    explain: bool,
}

/// The classification, with its explanation when asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassificationResponse {
    #[serde(flatten)]
    classification: Classification,
    #[serde(skip_serializing_if = "Option::is_none")]
    explain: Option<Explanation>,
}

fn wants_yaml(format: Option<Format>, headers: &HeaderMap) -> bool {
    match format {
        Some(Format::Yaml) => true,
        Some(Format::Json) => false,
        None => headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|media| YAML_TYPES.contains(&media.split(';').next().unwrap_or("").trim())),
    }
}

/// The merged classification of a node: what Puppet gets on every agent run.
///
/// Classes and parameters merge from the root of the node's group chain down to its group,
/// then the node itself; nearer wins, key by key.
#[utoipa::path(get, path = "/nodes/{unique_name}/classification", tag = "classification",
    operation_id = "get_classification", security(("bearer" = ["classify"])),
    params(("unique_name" = Certname, Path, description = "The node's certname"), ClassificationQuery,
        ("Accept" = Option<String>, Header, description = "`application/yaml` for YAML")),
    responses(
        (status = 200, description = "The classification",
            content((ClassificationResponse = "application/json"), (ClassificationResponse = "application/yaml"))),
        ReadProblems,
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ClassificationQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let result = classification(&state, &name, query, &headers).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(AppError::NotFound(_)) => "not_found",
        Err(_) => "error",
    };
    state
        .metrics
        .classifications
        .with_label_values(&[outcome])
        .inc();
    result
}

async fn classification(
    state: &AppState,
    name: &str,
    query: ClassificationQuery,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let name = parse_name("unique_name", name, Certname::parse)?;
    let (node, chain) = state.store.node_with_groups(&name).await?;
    let chain: Vec<&NodeGroup> = chain.iter().map(|g| &**g).collect();
    let (classification, explanation) = classify(&node.item, &chain);
    let body = ClassificationResponse {
        classification,
        explain: query.explain.then_some(explanation),
    };
    if !wants_yaml(query.format, headers) {
        return Ok(axum::Json(body).into_response());
    }
    let value = serde_json::to_value(&body).map_err(|e| AppError::Internal(Box::new(e)))?;
    let mut response = crate::yaml::to_yaml(&value).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(YAML));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_yaml() {
        let accept = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(wants_yaml(None, &accept("application/yaml")));
        assert!(wants_yaml(None, &accept("text/html, text/yaml;q=0.9")));
        assert!(!wants_yaml(None, &accept("application/json")));
        assert!(!wants_yaml(None, &HeaderMap::new()));
        assert!(wants_yaml(Some(Format::Yaml), &HeaderMap::new()));
        assert!(!wants_yaml(Some(Format::Json), &accept("application/yaml")));
    }
}
