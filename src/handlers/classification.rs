use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::parse_name;
use crate::AppState;
use crate::auth::{Asker, Caller, Deferred, Identity};
use crate::classifier::explain::classify_read;
pub use crate::classifier::explain::{GroupMembership, Membership, RuleResult};
use crate::classifier::{Sender, absent};
use crate::domain::{Certname, Classification, ClusterName, Explanation, NodeFacts};
use crate::error::{AppError, ReadProblems};
use crate::extract::{Json, Path, Query};
use crate::store::enc::{ClassificationInputs, MAX_FACTS_BYTES};

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
    /// With `explain`: the groups the node is in and why, its leaf groups, every rule's
    /// outcome on its facts, and when those facts came.
    #[serde(skip_serializing_if = "Option::is_none")]
    membership: Option<Membership>,
}

/// Facts to classify a node with, as Puppet has them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FactsBody {
    /// The node's facts (`$facts`); left out, enc keeps the facts it has for the node (and
    /// replaces only its trusted facts).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    facts: Option<serde_json::Map<String, serde_json::Value>>,
    /// Its trusted facts (`$trusted`), such as `extensions`, from the node's verified
    /// certificate; left out, the node has none (rules on `trusted` paths do not match).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    trusted: Option<serde_json::Map<String, serde_json::Value>>,
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
    operation_id = "get_classification", security(("bearer" = ["read"]), ("bearer" = ["classify"])),
    params(("unique_name" = Certname, Path, description = "The node's certname"), ClassificationQuery,
        ("Accept" = Option<String>, Header, description = "`application/yaml` for YAML")),
    responses(
        (status = 200, description = "The classification",
            content((ClassificationResponse = "application/json"), (ClassificationResponse = "application/yaml"))),
        ReadProblems,
    ))]
pub async fn get(
    State(state): State<AppState>,
    // Not `Caller`: an agent run's request (a token left to this handler) has none, and
    // makes none.
    asker: Asker,
    path: Result<Path<String>, AppError>,
    query: Result<Query<ClassificationQuery>, AppError>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let result = classification(&state, asker, asked(path, query), &headers).await;
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

/// The node and query a GET names: the path's errors first, then the query's, then the
/// name's.
fn asked(
    path: Result<Path<String>, AppError>,
    query: Result<Query<ClassificationQuery>, AppError>,
) -> Result<(Certname, ClassificationQuery), AppError> {
    let Path(name) = path?;
    let query = query?.0;
    Ok((parse_name("unique_name", &name, Certname::parse)?, query))
}

/// What classifying `name` reads, with the record of the token left to this handler, in one
/// store call: yielded once the token is admitted.
async fn read_with_token(
    state: &AppState,
    deferred: Deferred,
    name: &Certname,
) -> Result<(ClassificationInputs, Identity), AppError> {
    let token = deferred.token().clone();
    let read = async {
        let mut inputs = state
            .store
            .classification_inputs(name, Some(&token))
            .await?;
        let token = inputs.token.take();
        Ok((inputs, token))
    };
    state.auth.admitted(state.ground(), deferred, read).await
}

/// The classification; with a token `authorize` left to check here, that token is read in
/// the same store call and checked before anything else is said.
async fn classification(
    state: &AppState,
    asker: Asker,
    asked: Result<(Certname, ClassificationQuery), AppError>,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let (name, query, inputs, identity) = match (asked, asker) {
        (Err(malformed), Asker::Deferred(deferred)) => {
            return Err(state.auth.refuse(state.ground(), deferred, malformed).await);
        }
        (Err(malformed), Asker::Known(_)) => return Err(malformed),
        (Ok((name, query)), Asker::Deferred(deferred)) => {
            let (inputs, identity) = read_with_token(state, deferred, &name).await?;
            (name, query, inputs, Some(identity))
        }
        (Ok((name, query)), Asker::Known(identity)) => {
            let inputs = state.store.classification_inputs(&name, None).await?;
            (name, query, inputs, identity)
        }
    };
    if let Some(bound) = identity.filter(|i| i.clusters.is_some()) {
        let record = inputs.node.as_ref().ok_or_else(|| absent(&name))?;
        super::nodes::reached(&bound, &name, record)?;
    }
    answer(state, name, inputs, None, query, headers).await
}

/// The answer: the classification of `name` from what was read (with `given` facts in place
/// of the stored ones), as JSON or YAML, made once per version of what it comes from.
async fn answer(
    state: &AppState,
    name: Certname,
    inputs: ClassificationInputs,
    given: Option<NodeFacts>,
    query: ClassificationQuery,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let yaml = wants_yaml(query.format, headers);
    let render = |(classification, explanation): (Classification, Explanation),
                  membership: Option<Membership>| {
        let body = ClassificationResponse {
            classification,
            explain: query.explain.then_some(explanation),
            membership,
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
        let Some(then) = super::classifier(state)
            .classification_at(&name, &at)
            .await?
        else {
            return Err(AppError::NotFound(format!(
                "node {name} did not exist at {} (or the history does not reach back so far)",
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )));
        };
        return Ok(respond(render(then, None)?.0));
    }
    let given = super::classifier(state)
        .facts_for(&name, &inputs, given)
        .await?;
    let fresh = given.is_some();
    let make = || {
        let (classification, explanation, membership) =
            classify_read(&name, &inputs, given, query.explain)?;
        render((classification, explanation), membership)
    };
    // The same node record and facts under the same groups classify the same: made once, kept.
    let body = match &inputs.node {
        Some(record) if !query.explain && !fresh => {
            let source = match &inputs.view {
                None => std::borrow::Cow::Borrowed(record.body.as_slice()),
                Some(view) => {
                    std::borrow::Cow::Owned([&record.body[..], b"\n", &view.body].concat())
                }
            };
            state.answers.classifications.get(
                &format!("{}{name}", if yaml { "y " } else { "j " }),
                inputs.tree.generation as u64,
                &source,
                make,
            )?
        }
        _ => make()?.0,
    };
    Ok(respond(body))
}

/// Classifies a node with the facts Puppet has for it (as Puppet Enterprise's
/// `/v1/classified/nodes/<name>`): the facts are kept as the node's last, with their time,
/// and group rules judge them.
#[utoipa::path(post, path = "/nodes/{unique_name}/classification", tag = "classification",
    operation_id = "classify_with_facts", security(("bearer" = ["classify"])),
    params(("unique_name" = Certname, Path, description = "The node's certname"), ClassificationQuery,
        ("Accept" = Option<String>, Header, description = "`application/yaml` for YAML")),
    request_body = FactsBody,
    responses(
        (status = 200, description = "The classification",
            content((ClassificationResponse = "application/json"), (ClassificationResponse = "application/yaml"))),
        (status = 409, description = "The node's groups conflict", body = crate::error::Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Facts over 256 KiB", body = crate::error::Problem,
            content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = crate::error::Problem,
            content_type = "application/problem+json"),
        ReadProblems,
    ))]
pub async fn post(
    State(state): State<AppState>,
    asker: Asker,
    caller: Caller,
    path: Result<Path<String>, AppError>,
    query: Result<Query<ClassificationQuery>, AppError>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, AppError> {
    // A stored token is checked with the node's read (one store call for an agent run),
    // and before anything else is said or done: a malformed request is refused after it,
    // and the body is read only then.
    let asked = (|| {
        let Path(name) = path?;
        let name = parse_name("unique_name", &name, Certname::parse)?;
        Ok::<_, AppError>((name, query?.0))
    })();
    let (name, query, caller, inputs) = match (asked, asker) {
        (Err(malformed), Asker::Deferred(deferred)) => {
            return Err(state.auth.refuse(state.ground(), deferred, malformed).await);
        }
        (Err(malformed), Asker::Known(_)) => return Err(malformed),
        (Ok((name, query)), Asker::Deferred(deferred)) => {
            let (inputs, identity) = read_with_token(&state, deferred, &name).await?;
            (name, query, caller.admitted(identity), Some(inputs))
        }
        (Ok((name, query)), Asker::Known(_)) => (name, query, caller, None),
    };
    let Json(body) = Json::<FactsBody>::from_request(request, &state).await?;
    let given = match body.facts {
        Some(facts) => facts,
        None => (state.store.facts(&name).await?)
            .map(|kept| kept.facts)
            .unwrap_or_default(),
    };
    let facts = NodeFacts {
        unique_name: name.clone(),
        facts: given,
        with_trusted: body.trusted.is_some(),
        trusted: body.trusted.unwrap_or_default(),
        received_at: crate::domain::now(),
        posted_by: Some(caller.actor().to_owned()),
    };
    let size = serde_json::to_vec(&facts).map_or(usize::MAX, |b| b.len());
    if size > MAX_FACTS_BYTES {
        return Err(AppError::PayloadTooLarge(format!(
            "the facts are {size} bytes as JSON; at most {MAX_FACTS_BYTES} are kept"
        )));
    }
    let reaches = |cluster: &ClusterName| caller.0.reaches(cluster);
    let sender = Sender {
        reaches: &reaches,
        bound: caller.0.clusters.is_some(),
        by: caller.by(),
    };
    let classifier = super::classifier(&state);
    let inputs = classifier.take_facts(&name, &facts, inputs, sender).await?;
    answer(&state, name, inputs, Some(facts), query, &headers).await
}

/// A node's last facts as stored whole: Puppet's facts and trusted facts, when they came and
/// which token posted them. An agent run stores them when what rules read changed, or when
/// the stored ones are older than `ENC_FACTS_REFRESH_SECONDS`. `admin` only: whole facts may
/// hold secrets (cloud metadata, custom facts); `explain` shows `read` callers the values
/// rules read.
#[utoipa::path(get, path = "/nodes/{unique_name}/facts", tag = "classification",
    operation_id = "node_facts", security(("bearer" = ["admin"])),
    params(("unique_name" = Certname, Path, description = "The node's certname")),
    responses((status = 200, description = "The node's last facts", body = NodeFacts), ReadProblems))]
pub async fn facts(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<NodeFacts>, AppError> {
    let name = parse_name("unique_name", &name, Certname::parse)?;
    match state.store.facts(&name).await? {
        Some(facts) => Ok(axum::Json(facts)),
        None => Err(AppError::NotFound(format!("node {name} has sent no facts"))),
    }
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
