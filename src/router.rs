//! Every route in one place, each declared once with its documentation: the OpenAPI document
//! is made from the same list that routes requests, and it names the scope each operation
//! needs, which is what the identity check enforces.

use std::sync::LazyLock;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::util::option_layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::AppError;
use crate::extract::MAX_BODY_BYTES;
use crate::handlers::{
    activities, classification, environments, health, metrics_form, node_groups, nodes, session,
    tokens,
};
use crate::{AppState, auth, telemetry};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "enc",
        description = "External node classifier for Puppet: nodes, node groups, environments and the classification Puppet asks for.\n\nEvery operation names the token scope it needs: send `Authorization: Bearer <token>` (the Authorize button). `admin` may do everything, `write` includes `read`, `read` includes `classify`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&Bearer),
    tags(
        (name = "nodes", description = "Puppet nodes, by certname"),
        (name = "classification", description = "What Puppet gets for a node: merged classes, parameters and environment"),
        (name = "node groups", description = "Classes and parameters shared by nodes, with inheritance"),
        (name = "environments", description = "Puppet environments per Puppet cluster"),
        (name = "tokens", description = "API tokens: the secret is shown once, when made; deleting one revokes it at once"),
        (name = "metrics form", description = "Work engineers record for customer projects. `GET /metrics-form` and `/metrics-form/report` are HTML pages for people; the rest is JSON or CSV."),
        (name = "sign-in", description = "A session for the metrics form's pages, for people without the load balancer's sign-in"),
        (name = "operations", description = "Health, readiness and Prometheus metrics"),
    )
)]
pub struct ApiDoc;

/// The bearer token scheme every operation's scope belongs to.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An enc token: `enc_<name>_<secret>`"))
                    .build(),
            ),
        );
    }
}

/// The metrics form's routes: the only ones other origins may call (`ENC_CORS_ORIGINS`).
fn metrics_form() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics_form::form, metrics_form::submit))
        .routes(routes!(activities::entries))
        .routes(routes!(activities::entries_csv))
        .routes(routes!(activities::summary))
        .routes(routes!(activities::report))
}

/// Every documented route. A collection answers with and without its trailing slash.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(nodes::list, nodes::create))
        .routes(routes!(nodes::get, nodes::replace, nodes::delete))
        .routes(routes!(classification::get))
        .routes(routes!(node_groups::list, node_groups::create))
        .routes(routes!(
            node_groups::get,
            node_groups::replace,
            node_groups::delete
        ))
        .routes(routes!(environments::list, environments::create))
        .routes(routes!(environments::get, environments::delete))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::get, tokens::delete))
        .routes(routes!(session::page_get, session::sign_in))
        .routes(routes!(session::sign_out))
}

/// Health and metrics: answered whatever the load, outside the limits.
fn operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The OpenAPI document, as served at `/api-docs/openapi.json`.
pub fn document() -> &'static Document {
    static DOCUMENT: LazyLock<Document> = LazyLock::new(|| {
        let (_, document) = api()
            .merge(metrics_form())
            .merge(operations())
            .split_for_parts();
        document
    });
    &DOCUMENT
}

/// CORS for the configured origins, if any.
fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::ACCEPT, header::AUTHORIZATION])
            .expose_headers([header::LOCATION])
            .max_age(Duration::from_secs(3600)),
    )
}

/// Past the limit of requests in flight, or past the request timeout: 503, try again soon.
async fn overloaded(error: tower::BoxError) -> AppError {
    if error.is::<tower::timeout::error::Elapsed>() {
        AppError::Overloaded("the request took too long".into())
    } else {
        AppError::Overloaded("too many requests at once".into())
    }
}

pub fn router(state: AppState) -> Router {
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(
            state.limits.in_flight.clone(),
        ))
        .timeout(state.limits.request_timeout);
    // CORS wraps the form's routes whole, their 405 answers too, so that preflights work.
    let (form, _) = metrics_form().split_for_parts();
    let form = form
        .method_not_allowed_fallback(method_not_allowed)
        .layer(option_layer(cors(&state.cors_origins)));
    let (api, _) = api().split_for_parts();
    let (operations, _) = operations().split_for_parts();
    api.merge(form)
        .route(
            "/tokens/",
            axum::routing::get(tokens::list).post(tokens::create),
        )
        .layer(limits)
        .merge(operations)
        .merge(SwaggerUi::new("/swagger-ui").url("/api-docs/openapi.json", document().clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
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
