//! Every route in one place, and the OpenAPI document that describes them.

use axum::extract::DefaultBodyLimit;
use axum::{Router, middleware};
use std::time::Duration;

use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use tower::util::option_layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::AppError;
use crate::extract::MAX_BODY_BYTES;
use crate::handlers::{
    activities, classification, environments, health, metrics_form, node_groups, nodes,
};
use crate::{AppState, telemetry};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "enc",
        description = "External node classifier for Puppet: nodes, node groups, environments and the classification Puppet asks for.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        nodes::create, nodes::list, nodes::get, nodes::replace, nodes::delete,
        classification::get,
        node_groups::create, node_groups::list, node_groups::get, node_groups::replace,
        node_groups::delete,
        environments::create, environments::list, environments::get, environments::delete,
        metrics_form::form, metrics_form::submit, activities::entries, activities::entries_csv,
        activities::summary, activities::report,
        health::healthz, health::readyz, health::metrics,
    ),
    tags(
        (name = "nodes", description = "Puppet nodes, by certname"),
        (name = "classification", description = "What Puppet gets for a node: merged classes, parameters and environment"),
        (name = "node groups", description = "Classes and parameters shared by nodes, with inheritance"),
        (name = "environments", description = "Puppet environments per Puppet cluster"),
        (name = "metrics form", description = "Work engineers record for customer projects. `GET /metrics-form` and `/metrics-form/report` are HTML pages for people; the rest is JSON or CSV."),
        (name = "operations", description = "Health, readiness and Prometheus metrics"),
    )
)]
pub struct ApiDoc;

/// A collection route, served both with and without the trailing slash.
fn collection(
    router: Router<AppState>,
    path: &str,
    routes: MethodRouter<AppState>,
) -> Router<AppState> {
    router
        .route(path, routes.clone())
        .route(&format!("{path}/"), routes)
}

/// CORS for the configured origins, if any.
fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::CONTENT_TYPE, header::ACCEPT, header::IF_MATCH])
            .expose_headers([header::ETAG, header::LOCATION])
            .max_age(Duration::from_secs(3600)),
    )
}

pub fn router(state: AppState) -> Router {
    let cors = cors(&state.cors_origins);
    let mut router = Router::new();
    router = collection(router, "/nodes", get(nodes::list).post(nodes::create));
    router = collection(
        router,
        "/nodegroup",
        get(node_groups::list).post(node_groups::create),
    );
    router = collection(
        router,
        "/environment",
        get(environments::list).post(environments::create),
    );
    router
        .route(
            "/nodes/{unique_name}",
            get(nodes::get).put(nodes::replace).delete(nodes::delete),
        )
        .route(
            "/nodes/{unique_name}/classification",
            get(classification::get),
        )
        .route(
            "/nodegroup/{node_group_name}",
            get(node_groups::get)
                .put(node_groups::replace)
                .delete(node_groups::delete),
        )
        .route(
            "/environment/{environment_name}/{puppet_cluster_name}",
            get(environments::get).delete(environments::delete),
        )
        .route(
            "/metrics-form",
            get(metrics_form::form).post(metrics_form::submit),
        )
        .route("/metrics-form/entries", get(activities::entries))
        .route("/metrics-form/entries.csv", get(activities::entries_csv))
        .route("/metrics-form/summary", get(activities::summary))
        .route("/metrics-form/report", get(activities::report))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(SwaggerUi::new("/swagger-ui").url("/api-docs/openapi.json", ApiDoc::openapi()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(option_layer(cors))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            telemetry::observe,
        ))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    AppError::Internal("a handler panicked".into()).into_response()
}
