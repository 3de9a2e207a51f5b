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

/// How often `/readyz` probes the store at most: it is open and outside the concurrency limit,
/// so however often it is asked (load balancer, orchestrator, anyone), the store is asked at
/// most once a second per task; the answers in between are the last probe's.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `/readyz`'s last probe of the store, and the one probe under way.
#[derive(Default)]
pub struct Readiness {
    last: std::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
    probing: tokio::sync::Mutex<()>,
}

impl Readiness {
    /// The store's readiness: the last probe's if it is under a second old; otherwise one
    /// probe (`ping`), which concurrent askers wait for rather than repeat.
    pub async fn probe<F, Fut>(&self, ping: F) -> Result<(), String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = crate::store::Result<()>>,
    {
        let fresh = || {
            self.last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .filter(|(at, _)| at.elapsed() < PROBE_EVERY)
                .map(|(_, ready)| ready.clone())
        };
        if let Some(ready) = fresh() {
            return ready;
        }
        let _probing = self.probing.lock().await;
        if let Some(ready) = fresh() {
            return ready;
        }
        let ready = ping().await.map_err(|e| e.to_string());
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), ready.clone()));
        ready
    }
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
