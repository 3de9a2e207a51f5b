//! enc: an external node classifier for Puppet, with the metrics form and operations
//! endpoints, on an embedded store or DynamoDB.

pub mod classify;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod router;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod yaml;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;

use crate::store::Store;

/// What every handler shares.
pub struct App {
    pub store: Arc<dyn Store>,
}

#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(Arc::new(App { store }))
    }
}

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// The whole HTTP application: the exact router the binary serves and the tests drive.
pub fn app(state: AppState) -> Router {
    router::router(state)
}
