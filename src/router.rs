//! Every route in one place, each declared once with its documentation: the OpenAPI document
//! is made from the same list that routes requests, and it names the scope each operation
//! needs, which is what the identity check enforces.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use futures_util::FutureExt as _;
use tower::ServiceBuilder;
use tower::util::option_layer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::auth::Access;
use crate::error::AppError;
use crate::extract::MAX_BODY_BYTES;
use crate::handlers::form::{self as metrics_form, activities, sign_in};
use crate::handlers::{
    classification, environments, health, history, import, lookups, node_groups, nodes, tokens,
    views,
};
use crate::{AppState, auth, browser, telemetry};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "enc",
        description = "External node classifier for Puppet: nodes, node groups, environments and the classification Puppet asks for.\n\nEvery operation names the token scope it needs: send `Authorization: Bearer <token>` (the Authorize button). `admin` may do everything and `write` includes `read`. `classify` is a Puppet server's: it posts facts (which decide a node's groups) and reads classifications; nothing but `admin` includes it. A token bound to Puppet clusters (`clusters`) reaches only their nodes.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&Bearer),
    components(schemas(activities::LabelFilter, activities::DateFilter)),
    tags(
        (name = "nodes", description = "Puppet nodes, by certname"),
        (name = "classification", description = "What Puppet gets for a node: merged classes, parameters and environment"),
        (name = "node groups", description = "Classes and parameters shared by nodes, with inheritance"),
        (name = "environments", description = "Puppet environments per Puppet cluster"),
        (name = "history", description = "Who changed what and when: every change of a node, group, environment or token is kept as a revision (with the whole object and an RFC 6902 patch) in the same commit as the change; classifications as they were at any instant; restoring an earlier version. Every write to a node or group also takes `dry_run=true` to preview its effect on every affected node."),
        (name = "classification as code", description = "The whole classification as a tree of YAML files, one per object (`GET /export`), kept in git and reviewed like Puppet code; a tree planned against what is stored (`POST /import?dry_run=true`: every create, change and, with `prune`, deletion, each with its diff, the impact on every node, and a plan id) and applied exactly as planned (`POST /import` with `If-Match: <plan id>`: refused with 412 if anything the plan read has changed). Objects applied are `managed_by: git`: API writes to them answer 409 unless `force=true`. The command line: `enc export`, `enc plan`, `enc apply`."),
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
                    .description(Some(
                        "An enc token: `enc_<name>_<secret>`. A write that takes `dry_run` \
                         needs `write`, or only `plan` when asked with `?dry_run=true`.",
                    ))
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
    // The handlers of the routes whose token `authorize` leaves to them take it.
    auth::takes_the_token::<AppState, _, _>(nodes::get);
    auth::takes_the_token::<AppState, _, _>(classification::get);
    auth::takes_the_token::<AppState, _, _>(classification::post);
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(nodes::list, nodes::create))
        .routes(routes!(nodes::get, nodes::replace, nodes::delete))
        .routes(routes!(classification::get, classification::post))
        .routes(routes!(classification::facts))
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
        .routes(routes!(lookups::members))
        .routes(routes!(lookups::holders))
        .routes(routes!(views::status))
        .routes(routes!(node_groups::pin))
        .routes(routes!(node_groups::unpin))
        .routes(routes!(node_groups::unpin_from_all))
        .routes(routes!(history::node))
        .routes(routes!(history::node_group))
        .routes(routes!(history::environment))
        .routes(routes!(history::changes))
        .routes(routes!(history::diff))
        .routes(routes!(history::restore_node))
        .routes(routes!(history::restore_node_group))
        .routes(routes!(history::restore_environment))
        .routes(routes!(sign_in::page_get, sign_in::sign_in))
        .routes(routes!(sign_in::sign_out))
        .routes(routes!(import::export))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(import::import))
                .layer(DefaultBodyLimit::max(import::MAX_IMPORT_BYTES)),
        )
}

/// Health and metrics: answered whatever the load, outside the limits.
fn operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// Pairs of what the next request names (a path parameter) and the field of the created
/// object's answer that holds it.
type Fill = &'static [(&'static str, &'static str)];

/// The OpenAPI links of each create's answer: the create's path, the operations on the
/// object made (by operation id), and how their parameters are filled from the answer.
const LINKS: &[(&str, &[&str], Fill)] = &[
    (
        "/nodes/",
        &[
            "get_node",
            "replace_node",
            "delete_node",
            "get_classification",
        ],
        &[("unique_name", "unique_name")],
    ),
    (
        "/nodegroup/",
        &["get_node_group", "replace_node_group", "delete_node_group"],
        &[("node_group_name", "name")],
    ),
    (
        "/environment/",
        &["get_environment", "delete_environment"],
        &[
            ("environment_name", "environment_name"),
            ("puppet_cluster_name", "puppet_cluster_name"),
        ],
    ),
    (
        "/tokens",
        &["get_token", "delete_token"],
        &[("name", "name")],
    ),
];

/// What a created object may be named in: (link, operation, request body field, answer field).
const USES: &[(&str, &str, &str, Fill)] = &[
    (
        "/environment/",
        "create_node_in_environment",
        "create_node",
        &[
            ("environment_name", "environment_name"),
            ("puppet_cluster_name", "puppet_cluster_name"),
        ],
    ),
    (
        "/nodegroup/",
        "create_node_in_group",
        "create_node",
        &[("node_group_name", "name")],
    ),
    (
        "/nodegroup/",
        "create_child_group",
        "create_node_group",
        &[("parent", "name")],
    ),
];

/// Links from each create's 201 to what can be done with the object it made, and to the
/// creates that may name it.
fn link(document: &mut Document) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::{Link, LinkBuilder};
    fn created<'d>(
        document: &'d mut Document,
        path: &str,
    ) -> Option<&'d mut BTreeMap<String, RefOr<Link>>> {
        let post = document.paths.paths.get_mut(path)?.post.as_mut()?;
        match post.responses.responses.get_mut("201")? {
            RefOr::T(created) => Some(&mut created.links),
            RefOr::Ref(_) => None,
        }
    }
    let answer = |field: &str| format!("$response.body#/{field}");
    // A write reached through a link is done, not previewed: a client that follows links
    // (schemathesis's stateful phase) must not take a dry run's answer for a change made,
    // e.g. a group still there after a `DELETE ...?dry_run=true`. `"false"` as text: OpenAPI
    // 3.1's schema has a link's parameters as strings (a query sends it as text anyway).
    let previewable = operations_with_query(document, "dry_run");
    for (path, targets, parameters) in LINKS {
        let Some(links) = created(document, path) else {
            continue;
        };
        for target in *targets {
            let mut link = LinkBuilder::new().operation_id(*target);
            for (parameter, field) in *parameters {
                link = link.parameter(*parameter, answer(field));
            }
            if previewable.contains(*target) {
                link = link.parameter("dry_run", "false");
            }
            links.insert(target.to_string(), RefOr::T(link.build()));
        }
    }
    for (path, name, target, fields) in USES {
        let Some(links) = created(document, path) else {
            continue;
        };
        let body: serde_json::Map<_, _> = fields
            .iter()
            .map(|(field, from)| (field.to_string(), answer(from).into()))
            .collect();
        let mut link = LinkBuilder::new()
            .operation_id(*target)
            .request_body(Some(body));
        if previewable.contains(*target) {
            link = link.parameter("dry_run", "false");
        }
        links.insert(name.to_string(), RefOr::T(link.build()));
    }
}

/// The ids of the operations that take the query parameter `name`.
fn operations_with_query(document: &Document, name: &str) -> std::collections::BTreeSet<String> {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::path::ParameterIn;
    let mut found = std::collections::BTreeSet::new();
    for item in document.paths.paths.values() {
        let operations = [&item.get, &item.post, &item.put, &item.delete, &item.patch];
        for operation in operations.into_iter().flatten() {
            let takes = operation.parameters.iter().flatten().any(|p| {
                matches!(p, RefOr::T(p) if p.name == name && matches!(p.parameter_in, ParameterIn::Query))
            });
            if let (true, Some(id)) = (takes, &operation.operation_id) {
                found.insert(id.clone());
            }
        }
    }
    found
}

/// Collections answer with and without a trailing slash: the document lists each route there
/// is, the other spelling's under a tag of its own, so that Swagger UI shows each operation
/// once under its resource and the other spellings once apart.
const COLLECTIONS: [&str; 4] = ["/nodes", "/nodegroup", "/environment", "/tokens"];

/// The tag of the operations at a collection's other spelling.
const OTHER_SPELLING: &str = "other spellings";

/// Each collection's operations under both of its spellings: the copies' ids end `_slash`
/// or `_bare`, they carry the tag `OTHER_SPELLING`, and each original says where its copy is.
fn both_spellings(document: &mut Document) {
    use utoipa::openapi::PathItem;
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::tag::TagBuilder;
    fn slots(item: &mut PathItem) -> [&mut Option<Operation>; 4] {
        [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ]
    }
    /// The copies of `item`'s operations (by slot), as at `path`'s other spelling.
    fn copies(item: &mut PathItem, suffix: &str, path: &str) -> [Option<Operation>; 4] {
        slots(item).map(|slot| {
            let mut copy = slot.clone()?;
            copy.operation_id = copy.operation_id.map(|id| format!("{id}{suffix}"));
            copy.tags = Some(vec![OTHER_SPELLING.to_owned()]);
            let same =
                format!("The same operation as at `{path}`, for clients that spell it this way.");
            copy.description = Some(match copy.description.take() {
                Some(description) if !description.is_empty() => format!("{same}\n\n{description}"),
                _ => same,
            });
            Some(copy)
        })
    }
    /// Says in each of `item`'s operations where its copy is, and adds `copies` beside them.
    fn join(item: &mut PathItem, other: &str, copies: [Option<Operation>; 4]) {
        for (slot, copy) in slots(item).into_iter().zip(copies) {
            if let Some(operation) = slot.as_mut() {
                let also = format!("Also answered at `{other}` (listed under *{OTHER_SPELLING}*).");
                operation.description = Some(match operation.description.take() {
                    Some(description) if !description.is_empty() => {
                        format!("{description}\n\n{also}")
                    }
                    _ => also,
                });
            } else {
                *slot = copy;
            }
        }
    }
    for bare in COLLECTIONS {
        let slashed = format!("{bare}/");
        let paths = &mut document.paths.paths;
        let mut at_bare = paths.remove(bare).unwrap_or_default();
        let mut at_slashed = paths.remove(&slashed).unwrap_or_default();
        let from_bare = copies(&mut at_bare, "_slash", bare);
        let from_slashed = copies(&mut at_slashed, "_bare", &slashed);
        join(&mut at_bare, &slashed, from_slashed);
        join(&mut at_slashed, bare, from_bare);
        paths.insert(bare.to_owned(), at_bare);
        paths.insert(slashed, at_slashed);
    }
    let tag = TagBuilder::new()
        .name(OTHER_SPELLING)
        .description(Some(
            "Each collection at its other spelling (with or without the trailing slash): the \
             same operations as under their resources, listed once here.",
        ))
        .build();
    document.tags.get_or_insert_with(Vec::new).push(tag);
}

/// The OpenAPI document, made afresh from the routes.
pub fn document() -> Document {
    let (_, mut document) = api()
        .merge(metrics_form())
        .merge(operations())
        .split_for_parts();
    link(&mut document);
    both_spellings(&mut document);
    document
}

/// The OpenAPI document as served at `/api-docs/openapi.json`: its JSON, made once. Only the
/// text is kept: the document's own structure takes several MiB (every schema inlined into
/// each path), the text about half a MiB.
pub fn document_json() -> &'static Bytes {
    static JSON: LazyLock<Bytes> = LazyLock::new(|| {
        Bytes::from(serde_json::to_vec(&document()).expect("the document serializes"))
    });
    &JSON
}

async fn serve_document() -> Response {
    let json = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, json)], document_json().clone()).into_response()
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

/// What each route needs, from the OpenAPI document.
pub fn access() -> Access {
    let document = serde_json::from_slice(document_json()).expect("the document parses");
    Access::from_openapi(&document).expect("every operation declares its scope")
}

/// The whole HTTP application: the exact router the binary serves and the tests drive.
pub fn router(state: AppState) -> Router {
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
        .merge(operations)
        .route("/api-docs/openapi.json", axum::routing::get(serve_document))
        .merge(SwaggerUi::new("/swagger-ui").config(Config::from("/api-docs/openapi.json")))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One layer, not four: axum boxes each layer it applies to a route, and clones
        // every box on every request.
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(state.clone(), edge))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// 405, with `Allow` naming the methods the route has.
async fn method_not_allowed(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    route: Option<MatchedPath>,
) -> Response {
    let mut response =
        AppError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
            .into_response();
    let allowed = route.map(|r| state.auth.access.methods(r.as_str()));
    if let Some(allow) = allowed
        .filter(|a| !a.is_empty())
        .and_then(|a| HeaderValue::from_str(&a.join(", ")).ok())
    {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// Routes answered whatever the load: health checks, metrics, the documentation, and what
/// no route matches.
fn unlimited(route: Option<&str>) -> bool {
    route.is_none_or(|r| {
        matches!(r, "/healthz" | "/readyz" | "/metrics") || auth::is_documentation(r)
    })
}

/// What every request goes through, as one middleware: it is observed (`telemetry`); unless
/// it is `unlimited`, it takes one of the places in flight (503 at once when none is free)
/// and must be answered within the request timeout (503); then it is authorized (`auth`).
/// A panic below is a 500, observed like any other answer.
async fn edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let observer = telemetry::Observer {
        metrics: &state.metrics,
        trace_context: state.trace_context,
        store: state.store.backend(),
    };
    telemetry::observe(observer, request, |request| async {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let limited = !unlimited(route);
        let documentation = route.is_some_and(auth::is_documentation);
        let mut answer = answer(&state, limited, request, next).await;
        browser::tell(answer.headers_mut(), documentation);
        answer
    })
    .await
}

/// The answer to a request that passed the edge's observation: see [`edge`].
async fn answer(state: &AppState, limited: bool, request: Request, next: Next) -> Response {
    let _place = match limited.then(|| state.limits.in_flight.try_acquire()) {
        Some(Err(_)) => {
            return AppError::Overloaded("too many requests at once".into()).into_response();
        }
        place => place,
    };
    let authorized = auth::authorize(&state.auth, state.ground(), request, next);
    let caught = std::panic::AssertUnwindSafe(authorized).catch_unwind();
    let answered = if limited {
        match tokio::time::timeout(state.limits.request_timeout, caught).await {
            Ok(answered) => answered,
            Err(_) => {
                let late = AppError::Overloaded("the request took too long".into());
                return late.into_response();
            }
        }
    } else {
        caught.await
    };
    answered.unwrap_or_else(|_| AppError::Internal("a handler panicked".into()).into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    #[test]
    fn only_operations_and_documentation_are_answered_whatever_the_load() {
        let paths = |router: OpenApiRouter<AppState>| {
            let (_, document) = router.split_for_parts();
            document.paths.paths.into_keys().collect::<Vec<_>>()
        };
        let operations = paths(operations());
        assert_eq!(operations.len(), 3, "{operations:?}");
        for path in &operations {
            assert!(unlimited(Some(path)), "{path}");
        }
        for path in paths(api()).iter().chain(&paths(metrics_form())) {
            assert!(!unlimited(Some(path)), "{path}");
        }
        assert!(!unlimited(Some("/tokens/")));
        for path in [
            "/api-docs/openapi.json",
            "/swagger-ui",
            "/swagger-ui/index.html",
        ] {
            assert!(unlimited(Some(path)), "{path}");
        }
        assert!(unlimited(None), "no route matched: a 404");
    }

    async fn boom() -> Response {
        panic!("a handler that fails")
    }

    #[tokio::test]
    async fn a_panic_below_the_edge_is_a_500_counted_and_answered_with_its_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::store::embedded::Embedded::open(dir.path()).unwrap();
        let auth = crate::auth::Auth::new(true, None, None, false, access());
        let state: AppState = crate::App::new(Arc::new(engine)).with_auth(auth).into();
        // An open route of the real table, served by a handler that panics.
        let app = Router::new()
            .route("/healthz", axum::routing::get(boom))
            .layer(middleware::from_fn_with_state(state.clone(), edge))
            .with_state(state.clone());
        let request = Request::get("/healthz").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(response.headers().contains_key(telemetry::REQUEST_ID));
        let rendered = state.metrics.render();
        assert!(
            rendered
                .contains(r#"http_requests_total{method="GET",route="/healthz",status="500"} 1"#),
            "{rendered}"
        );
    }
}
