//! A store that times every operation (Prometheus) and traces it (a span per operation),
//! around any backend.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;

use super::{ActivityFilter, EnvironmentFilter, NodeFilter, Page, PageRequest, Store, StoreError};
use crate::domain::{
    Activity, Certname, Environment, EnvironmentKey, GroupName, Node, NodeGroup, Stored,
};
use crate::metrics::Metrics;

pub struct Instrumented {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let backend = self.inner.backend();
        let span = tracing::info_span!(
            "store",
            otel.name = %format_args!("store.{operation}"),
            otel.kind = "client",
            db.system.name = backend,
            db.operation.name = operation,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::NotFound { .. }) => "not_found",
            Err(StoreError::Unavailable(_)) => "unavailable",
            Err(StoreError::Internal(_)) => "error",
            Err(_) => "refused",
        };
        span.record("outcome", outcome);
        self.metrics
            .store_duration
            .with_label_values(&[backend, operation, outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl Store for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.observe("ping", self.inner.ping()).await
    }

    async fn create_environment(
        &self,
        env: Environment,
    ) -> Result<Stored<Environment>, StoreError> {
        self.observe("create_environment", self.inner.create_environment(env))
            .await
    }

    async fn get_environment(
        &self,
        key: &EnvironmentKey,
    ) -> Result<Stored<Environment>, StoreError> {
        self.observe("get_environment", self.inner.get_environment(key))
            .await
    }

    async fn list_environments(
        &self,
        filter: &EnvironmentFilter,
        page: &PageRequest,
    ) -> Result<Page<Stored<Environment>>, StoreError> {
        self.observe(
            "list_environments",
            self.inner.list_environments(filter, page),
        )
        .await
    }

    async fn delete_environment(
        &self,
        key: &EnvironmentKey,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        self.observe(
            "delete_environment",
            self.inner.delete_environment(key, expected),
        )
        .await
    }

    async fn create_node_group(&self, group: NodeGroup) -> Result<Stored<NodeGroup>, StoreError> {
        self.observe("create_node_group", self.inner.create_node_group(group))
            .await
    }

    async fn get_node_group(&self, name: &GroupName) -> Result<Stored<NodeGroup>, StoreError> {
        self.observe("get_node_group", self.inner.get_node_group(name))
            .await
    }

    async fn list_node_groups(
        &self,
        page: &PageRequest,
    ) -> Result<Page<Stored<NodeGroup>>, StoreError> {
        self.observe("list_node_groups", self.inner.list_node_groups(page))
            .await
    }

    async fn replace_node_group(
        &self,
        group: NodeGroup,
        expected: Option<u64>,
    ) -> Result<Stored<NodeGroup>, StoreError> {
        self.observe(
            "replace_node_group",
            self.inner.replace_node_group(group, expected),
        )
        .await
    }

    async fn delete_node_group(
        &self,
        name: &GroupName,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        self.observe(
            "delete_node_group",
            self.inner.delete_node_group(name, expected),
        )
        .await
    }

    async fn create_node(&self, node: Node) -> Result<Stored<Node>, StoreError> {
        self.observe("create_node", self.inner.create_node(node))
            .await
    }

    async fn get_node(&self, name: &Certname) -> Result<Stored<Node>, StoreError> {
        self.observe("get_node", self.inner.get_node(name)).await
    }

    async fn list_nodes(
        &self,
        filter: &NodeFilter,
        page: &PageRequest,
    ) -> Result<Page<Stored<Node>>, StoreError> {
        self.observe("list_nodes", self.inner.list_nodes(filter, page))
            .await
    }

    async fn replace_node(
        &self,
        node: Node,
        expected: Option<u64>,
    ) -> Result<Stored<Node>, StoreError> {
        self.observe("replace_node", self.inner.replace_node(node, expected))
            .await
    }

    async fn delete_node(&self, name: &Certname, expected: Option<u64>) -> Result<(), StoreError> {
        self.observe("delete_node", self.inner.delete_node(name, expected))
            .await
    }

    async fn create_activity(&self, activity: Activity) -> Result<Activity, StoreError> {
        self.observe("create_activity", self.inner.create_activity(activity))
            .await
    }

    async fn get_activity(&self, id: &str) -> Result<Activity, StoreError> {
        self.observe("get_activity", self.inner.get_activity(id))
            .await
    }

    async fn list_activities(
        &self,
        filter: &ActivityFilter,
        page: &PageRequest,
    ) -> Result<Page<Activity>, StoreError> {
        self.observe("list_activities", self.inner.list_activities(filter, page))
            .await
    }
}
