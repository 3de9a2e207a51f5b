//! Every route in one place, and the OpenAPI document that describes them.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;
use crate::error::AppError;
use crate::extract::MAX_BODY_BYTES;
use crate::handlers::{classification, environments, health, node_groups, nodes};

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
        health::healthz, health::readyz,
    ),
    tags(
        (name = "nodes", description = "Puppet nodes, by certname"),
        (name = "classification", description = "What Puppet gets for a node: merged classes, parameters and environment"),
        (name = "node groups", description = "Classes and parameters shared by nodes, with inheritance"),
        (name = "environments", description = "Puppet environments per Puppet cluster"),
        (name = "operations", description = "Health and readiness"),
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

pub fn router(state: AppState) -> Router {
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
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(SwaggerUi::new("/swagger-ui").url("/api-docs/openapi.json", ApiDoc::openapi()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http())
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
