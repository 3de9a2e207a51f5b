//! enc: an external node classifier for Puppet, with the metrics form and operations
//! endpoints, on an embedded store or DynamoDB.

pub mod activities;
pub mod auth;
mod browser;
pub mod classifier;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod memo;
pub mod router;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod yaml;

use std::ops::Deref;
use std::sync::Arc;

use axum::http::HeaderValue;

use crate::auth::{Access, Auth};
use crate::store::Store;
use crate::store::engine::Engine;
use crate::store::instrumented::Instrumented;
use crate::telemetry::prometheus::Metrics;

/// What every handler shares.
pub struct App {
    /// The store, its engine timed and traced.
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Origins allowed cross-origin requests; none means no CORS.
    pub cors_origins: Vec<HeaderValue>,
    /// Whether spans are exported, so incoming `traceparent` headers are read.
    pub trace_context: bool,
    /// Who may do what.
    pub auth: Auth,
    pub limits: Limits,
    /// Answers made once per version of the records they come from (see `memo`).
    pub answers: Answers,
    /// Whether a node enc does not know, whose facts a group's rule (or whose certname a pin)
    /// takes in, is recorded and classified (`ENC_CLASSIFY_UNKNOWN`).
    pub classify_unknown: bool,
    /// Keeps every node's rule view through the paths rules read.
    pub views: Arc<classifier::Keeper>,
    /// `/readyz`'s last probe of the store (at most one a second).
    pub readiness: store::Readiness,
}

/// Whole facts a request may read where rule views do not serve, unless set.
const VIEWS_INLINE: usize = 1000;
/// Whole facts are stored again after this long, unless set.
const FACTS_REFRESH_SECONDS: i64 = 3600;

/// Bytes of answers kept per kind, at most.
const ANSWERS_BUDGET: usize = 4 * 1024 * 1024;

/// The response bodies reads make, kept per version of what they were made from.
pub struct Answers {
    /// `GET /nodes/{n}`: the node's JSON, per node record.
    pub nodes: memo::Memo<bytes::Bytes>,
    /// A classification's body, per node record and group generation (key: format, name).
    pub classifications: memo::Memo<bytes::Bytes>,
}

impl Default for Answers {
    fn default() -> Self {
        Self {
            nodes: memo::Memo::new(ANSWERS_BUDGET),
            classifications: memo::Memo::new(ANSWERS_BUDGET),
        }
    }
}

/// How much enc takes on: requests at once, and how long each may take.
#[derive(Clone)]
pub struct Limits {
    pub request_timeout: std::time::Duration,
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Fleet-wide operations at once (`ENC_MAX_FLEET_WORK`).
    pub fleet_work: Arc<tokio::sync::Semaphore>,
    /// Nodes a page of a lookup judges at most (`ENC_LOOKUP_JUDGED`).
    pub lookup_judged: usize,
}

/// Fleet-wide operations at once, unless set.
const FLEET_WORK: usize = 2;
/// Nodes a lookup's page judges at most, unless set: about 40 ms of an embedded store's
/// time on the benchmark's machine.
const LOOKUP_JUDGED: usize = 5_000;

impl Limits {
    pub fn new(request_timeout: std::time::Duration, max_in_flight: usize) -> Self {
        Self {
            request_timeout,
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1))),
            fleet_work: Arc::new(tokio::sync::Semaphore::new(FLEET_WORK)),
            lookup_judged: LOOKUP_JUDGED,
        }
    }

    pub fn with_fleet_work(mut self, at_once: usize) -> Self {
        self.fleet_work = Arc::new(tokio::sync::Semaphore::new(at_once.max(1)));
        self
    }

    pub fn with_lookup_judged(mut self, nodes: usize) -> Self {
        self.lookup_judged = nodes.max(1);
        self
    }
}

impl App {
    /// What checking a caller reads and counts.
    pub fn ground(&self) -> auth::Ground<'_> {
        auth::Ground {
            store: &self.store,
            metrics: &self.metrics,
        }
    }

    pub fn new(engine: Arc<dyn Engine>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let engine = Arc::new(Instrumented::new(engine, metrics.clone()));
        let store = Arc::new(Store::new(engine));
        let views = classifier::Keeper::new(
            store.clone(),
            VIEWS_INLINE,
            chrono::Duration::seconds(FACTS_REFRESH_SECONDS),
            std::time::Duration::ZERO,
        );
        Self {
            views,
            store,
            metrics,
            cors_origins: Vec::new(),
            trace_context: false,
            auth: Auth::new(true, None, None, false, Access::default()),
            limits: Limits::new(std::time::Duration::from_secs(30), 256),
            answers: Answers::default(),
            classify_unknown: true,
            readiness: store::Readiness::default(),
        }
    }

    pub fn with_classify_unknown(mut self, enabled: bool) -> Self {
        self.classify_unknown = enabled;
        self
    }

    /// Keeps history for `retention` (default: forever). Call before the state is shared.
    pub fn with_history_retention(mut self, retention: Option<chrono::Duration>) -> Self {
        if let Some(store) = Arc::get_mut(&mut self.store) {
            store.set_retention(retention);
        }
        self
    }

    /// How rule views are kept: whole facts a request may read where views do not serve
    /// (`inline`), how often whole facts are stored again, and the background pace.
    pub fn with_views(
        mut self,
        inline: usize,
        refresh: chrono::Duration,
        pace: std::time::Duration,
    ) -> Self {
        self.views = classifier::Keeper::new(self.store.clone(), inline, refresh, pace);
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    pub fn with_trace_context(mut self, enabled: bool) -> Self {
        self.trace_context = enabled;
        self
    }

    /// Allows these origins (`scheme://host[:port]`) cross-origin requests.
    pub fn with_cors_origins(mut self, origins: &[String]) -> anyhow::Result<Self> {
        for origin in origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            let (scheme, rest) = origin.split_once("://").unwrap_or(("", ""));
            if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
                anyhow::bail!(
                    "ENC_CORS_ORIGINS: {origin:?} is not an origin such as https://forms.example.com"
                );
            }
            self.cors_origins.push(HeaderValue::from_str(origin)?);
        }
        Ok(self)
    }
}

#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    /// State over this engine, with no CORS.
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        App::new(engine).into()
    }
}

impl From<App> for AppState {
    fn from(app: App) -> Self {
        Self(Arc::new(app))
    }
}

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
