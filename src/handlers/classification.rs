use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::parse_name;
use crate::AppState;
use crate::auth::Deferred;
use crate::domain::{Certname, Classification, Explanation, NodeGroup, classify};
use crate::error::{AppError, ReadProblems};
use crate::extract::{Path, Query};
use crate::store::enc::ClassificationInputs;

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
    /// The classification as it was at this instant (RFC 3339): the node and every group of
    /// its chain as they were then, from the change history.
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<String>,
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
    path: Result<Path<String>, AppError>,
    query: Result<Query<ClassificationQuery>, AppError>,
    deferred: Option<Extension<Deferred>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let result = classification(&state, path, query, deferred.map(|d| d.0), &headers).await;
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

/// The classification; with a token `authorize` left to check here, that token is read in
/// the same store call and checked before anything else is said.
async fn classification(
    state: &AppState,
    path: Result<Path<String>, AppError>,
    query: Result<Query<ClassificationQuery>, AppError>,
    deferred: Option<Deferred>,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let name = match (path, &deferred) {
        (Ok(Path(name)), _) => name,
        (Err(malformed), Some(deferred)) => {
            state.auth.admit_alone(state, deferred).await?;
            return Err(malformed);
        }
        (Err(malformed), None) => return Err(malformed),
    };
    let name = name.as_str();
    let inputs = match (Certname::parse(name), &deferred) {
        (Ok(name), Some(deferred)) => {
            let inputs = state
                .store
                .classification_inputs(&name, Some(&deferred.name))
                .await
                .map_err(|e| state.auth.unreadable(state, deferred, e))?;
            state.auth.admit(state, deferred, inputs.token.as_ref())?;
            Some((name, inputs))
        }
        (Err(_), Some(deferred)) => {
            state.auth.admit_alone(state, deferred).await?;
            None
        }
        (_, None) => None,
    };
    classify_with(state, name, inputs, query?.0, headers).await
}

async fn classify_with(
    state: &AppState,
    name: &str,
    read: Option<(Certname, ClassificationInputs)>,
    query: ClassificationQuery,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let (name, inputs) = match read {
        Some(read) => read,
        None => {
            let name = parse_name("unique_name", name, Certname::parse)?;
            let inputs = state.store.classification_inputs(&name, None).await?;
            (name, inputs)
        }
    };
    let yaml = wants_yaml(query.format, headers);
    let render = |(classification, explanation): (Classification, Explanation)| {
        let body = ClassificationResponse {
            classification,
            explain: query.explain.then_some(explanation),
        };
        let body = if yaml {
            let value = serde_json::to_value(&body).map_err(|e| AppError::Internal(Box::new(e)))?;
            crate::yaml::to_yaml(&value).into_bytes()
        } else {
            serde_json::to_vec(&body).map_err(|e| AppError::Internal(Box::new(e)))?
        };
        let size = body.len();
        Ok::<_, AppError>((Bytes::from(body), size))
    };
    let kind = if yaml { YAML } else { "application/json" };
    let respond = |body: Bytes| {
        let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static(kind))];
        (content_type, body).into_response()
    };
    if let Some(at) = &query.at {
        let at = super::history::instant("at", at)?;
        let Some(then) = super::history::classification_at(state, &name, &at).await? else {
            return Err(AppError::NotFound(format!(
                "node {name} did not exist at {} (or the history does not reach back so far)",
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )));
        };
        return Ok(respond(render(then)?.0));
    }
    let make = || {
        let (node, chain) = inputs.node_and_chain(&name)?;
        let chain: Vec<&NodeGroup> = chain.iter().map(|g| &**g).collect();
        render(classify(&node.item, &chain))
    };
    // The same node record under the same groups classifies the same: made once, kept.
    let body = match &inputs.node {
        Some(record) if !query.explain => state.answers.classifications.get(
            &format!("{}{name}", if yaml { "y " } else { "j " }),
            inputs.tree.generation as u64,
            &record.body,
            make,
        )?,
        _ => make()?.0,
    };
    Ok(respond(body))
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
