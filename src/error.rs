//! One error type for every handler, answered as `application/problem+json` (RFC 9457).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;

use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;

use crate::domain::FieldError;
use crate::store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "urn:enc:problem:validation")]
    pub problem_type: String,
    #[schema(example = "Invalid request")]
    pub title: String,
    #[schema(example = 422)]
    pub status: u16,
    #[schema(example = "the request has invalid fields")]
    pub detail: String,
    /// Per-field problems, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For a classification conflict: each conflicting key with every value and the group it
    /// came from (and, for a refused write, the nodes it would affect).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub conflicts: Option<serde_json::Value>,
    /// For a conflict asked with `explain=true`: the groups the node is in and why, its leaf
    /// groups and every rule's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub membership: Option<serde_json::Value>,
    /// For an apply that failed part way: every object it wrote before it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub applied: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    PreconditionRequired(String),
    /// A change made in several commits that failed after some: the failure, how much was
    /// done, and what was (`applied`).
    #[error("{0}; {1}")]
    Partial(Box<AppError>, String, serde_json::Value),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// Groups that give a node different values for the same key.
    #[error("{0}")]
    NodeConflicts(String, serde_json::Value),
    /// A conflict explained (`?explain=true`): the conflicts and the node's membership.
    #[error("{0}")]
    ExplainedNodeConflicts(String, serde_json::Value, serde_json::Value),
    #[error("the store is unavailable, try again shortly")]
    Unavailable(#[source] StoreError),
    #[error("{0}; try again shortly")]
    Overloaded(String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError::new(field, message)])
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use AppError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            NodeConflicts(..) | ExplainedNodeConflicts(..) => (
                StatusCode::CONFLICT,
                "classification-conflict",
                "Classification conflict",
            ),
            PreconditionFailed(_) => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
            ),
            PreconditionRequired(_) => (
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "Precondition required",
            ),
            Partial(inner, ..) => inner.parts(),
            PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Overloaded(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Service overloaded",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        use StoreError::*;
        match e {
            NotFound { .. } => AppError::NotFound(e.to_string()),
            AlreadyExists { .. }
            | StillReferenced { .. }
            | Managed { .. }
            | TooManyWrites { .. } => AppError::Conflict(e.to_string()),
            PlanStale { .. } => AppError::PreconditionFailed(e.to_string()),
            VersionMismatch { .. } => AppError::PreconditionFailed(e.to_string()),
            MissingReference {
                field,
                kind,
                ref key,
            } => AppError::invalid(field, format!("{kind} {key} does not exist")),
            Cycle { ref chain } => AppError::invalid(
                "parent",
                format!("would make a cycle: {}", chain.join(" -> ")),
            ),
            TooDeep { depth, max } => AppError::invalid(
                "parent",
                format!("would make a chain of {depth} node groups; at most {max} are allowed"),
            ),
            NothingToRestore { .. } => AppError::invalid("version", e.to_string()),
            InvalidCursor => AppError::BadRequest(e.to_string()),
            KeyReused { .. } => AppError::invalid(
                "idempotency_key",
                "was used for another entry: use a new key for a new entry",
            ),
            Unavailable(_) | TreeMoved => AppError::Unavailable(e),
            Internal(_) => AppError::Internal(Box::new(e)),
        }
    }
}

impl From<crate::domain::TreeError> for AppError {
    fn from(e: crate::domain::TreeError) -> Self {
        StoreError::from(e).into()
    }
}

pub use crate::telemetry::cause_chain;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        // The cause goes into the request's own log event (telemetry::observe), with its id.
        let failure = match &self {
            AppError::Internal(_) => Some(crate::telemetry::Failure::error(cause_chain(&self))),
            AppError::Unavailable(_) => Some(crate::telemetry::Failure::warn(cause_chain(&self))),
            _ => None,
        };
        let detail = match &self {
            AppError::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let (inner, applied) = match self {
            AppError::Partial(inner, _, applied) => (*inner, Some(applied)),
            other => (other, None),
        };
        let (errors, conflicts, membership) = match inner {
            AppError::Validation(errors) => (errors, None, None),
            AppError::NodeConflicts(_, conflicts) => (Vec::new(), Some(conflicts), None),
            AppError::ExplainedNodeConflicts(_, conflicts, membership) => {
                (Vec::new(), Some(conflicts), Some(membership))
            }
            _ => (Vec::new(), None, None),
        };
        let mut response = problem_response(
            status,
            &Problem {
                problem_type: format!("urn:enc:problem:{slug}"),
                title: title.to_owned(),
                status: status.as_u16(),
                detail,
                errors,
                conflicts,
                membership,
                applied,
            },
        );
        if let Some(failure) = failure {
            response.extensions_mut().insert(failure);
        }
        response
    }
}

fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"enc\""),
        );
    }
    response
}

/// The problems any read can answer with (status, description), for the OpenAPI document.
const READ_PROBLEMS: [(&str, &str); 6] = [
    ("400", "Malformed request"),
    (
        "401",
        "No identity, or one that is malformed, unknown, expired or revoked",
    ),
    ("403", "The identity lacks the scope this needs"),
    ("404", "Not found"),
    ("422", "Invalid parameters"),
    (
        "503",
        "Store unavailable; retry after the `Retry-After` seconds",
    ),
];

/// What a write can answer besides what a read can (the same statuses, said for a write, win).
const WRITE_PROBLEMS: [(&str, &str); 5] = [
    ("409", "Conflict: exists already, or still referenced"),
    ("412", "`If-Match` names another version"),
    ("413", "Body over 1 MiB"),
    ("415", "Body is not JSON"),
    ("422", "Invalid fields, each named in `errors`"),
];

/// Problem documents answered with these statuses.
fn problems<'a>(
    lists: impl IntoIterator<Item = &'a (&'a str, &'a str)>,
) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    let schema = <Problem as utoipa::PartialSchema>::schema();
    let content = ContentBuilder::new().schema(Some(schema)).build();
    lists
        .into_iter()
        .map(|&(status, description)| {
            let response = ResponseBuilder::new()
                .description(description)
                .content(PROBLEM_JSON, content.clone())
                .build();
            (status.to_owned(), response.into())
        })
        .collect()
}

/// The problems any read can answer with, for the OpenAPI document.
pub struct ReadProblems;

impl utoipa::IntoResponses for ReadProblems {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        problems(&READ_PROBLEMS)
    }
}

/// The problems any write can answer with, for the OpenAPI document.
pub struct WriteProblems;

impl utoipa::IntoResponses for WriteProblems {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        problems(READ_PROBLEMS.iter().chain(&WRITE_PROBLEMS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: AppError) -> (StatusCode, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let secret = "table arn:aws:dynamodb:secret-detail";
        let (status, problem) = body(AppError::Internal(secret.into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!problem.to_string().contains("secret"), "{problem}");
        assert_eq!(problem["status"], 500);
    }

    #[tokio::test]
    async fn unavailable_asks_to_retry() {
        let e = AppError::Unavailable(StoreError::Unavailable("connection refused".into()));
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn cause_chains_are_joined() {
        let e = StoreError::Internal(Box::new(std::io::Error::other("disk full")));
        assert_eq!(cause_chain(&e), "the store failed: disk full");
    }
}
