use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{AppError, Problem};

#[derive(Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    status: &'static str,
    /// Said while something is set up unsafely, e.g. identity switched off.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'static str>,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz", security(()),
    responses((status = 200, description = "Alive", body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok",
        warning: None,
    })
}

/// Readiness: the store answers, so requests can be served.
#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz", security(()), responses(
    (status = 200, description = "Ready", body = Status),
    (status = 503, description = "The store is unreachable", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, AppError> {
    state
        .readiness
        .probe(|| state.store.ping())
        .await
        .map_err(|why| AppError::Unavailable(crate::store::StoreError::Unavailable(why.into())))?;
    let warning = (!state.auth.required).then_some(AUTH_OFF);
    Ok(Json(Status {
        status: "ready",
        warning,
    }))
}

/// What `/readyz` and the start-up log say while identity is off.
pub const AUTH_OFF: &str =
    "identity is off (ENC_AUTH=off): anyone who reaches enc may change anything";

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics", security((), ("bearer" = ["read"])), responses(
    (status = 200, description = "Prometheus text exposition", content_type = "text/plain; version=0.0.4", body = String),
    (status = 401, description = "With ENC_METRICS_TOKEN_REQUIRED: no identity, or not a valid one", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "With ENC_METRICS_TOKEN_REQUIRED: the identity lacks `read`", body = Problem, content_type = "application/problem+json"),
))]
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
