//! An engine that times every call (Prometheus) and traces it (a span per call), around any
//! engine. Engine calls are what costs: each is one redb transaction or one DynamoDB request.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;

use super::engine::{Batch, CommitError, Engine, Key, Query, Record, Write};
use super::record::RecordKind;
use super::{Result, StoreError};
use crate::metrics::Metrics;

pub struct Instrumented {
    inner: Arc<dyn Engine>,
    metrics: Arc<Metrics>,
}

fn outcome_of(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable(_) => "unavailable",
        _ => "error",
    }
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Engine>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        kind: &'static RecordKind,
        call: impl Future<Output = T>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> T {
        let backend = self.inner.backend();
        let span = tracing::info_span!(
            "store",
            otel.name = span_name(operation),
            otel.kind = "client",
            db.system.name = backend,
            db.operation.name = operation,
            db.collection.name = kind.table,
            record = kind.name,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let outcome = outcome(&result);
        span.record("outcome", outcome);
        self.metrics
            .store_duration
            .with_label_values(&[backend, operation, kind.name, outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

/// The span of an engine call, named without formatting on every call.
fn span_name(operation: &'static str) -> &'static str {
    match operation {
        "get" => "store.get",
        "query" => "store.query",
        "scan" => "store.scan",
        "commit" => "store.commit",
        "ping" => "store.ping",
        _ => "store",
    }
}

fn read<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => outcome_of(e),
    }
}

#[async_trait]
impl Engine for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn max_writes(&self) -> Option<usize> {
        self.inner.max_writes()
    }

    async fn ping(&self) -> Result<()> {
        let kind = super::KINDS[0];
        self.observe("ping", kind, self.inner.ping(), read).await
    }

    /// Named after the first key's kind, and `not_found` when its record is absent.
    async fn get(&self, keys: &[(&'static RecordKind, Key)]) -> Result<Vec<Option<Record>>> {
        let kind = keys.first().map_or(super::KINDS[0], |(k, _)| *k);
        self.observe("get", kind, self.inner.get(keys), |r| match r {
            Ok(found) if found.first().is_some_and(Option::is_none) => "not_found",
            other => read(other),
        })
        .await
    }

    async fn query(&self, query: &Query<'_>) -> Result<Batch> {
        self.observe("query", query.kind, self.inner.query(query), read)
            .await
    }

    async fn scan(
        &self,
        kind: &'static RecordKind,
        after: Option<super::engine::Position>,
    ) -> Result<Batch> {
        self.observe("scan", kind, self.inner.scan(kind, after), read)
            .await
    }

    async fn commit(&self, writes: &[Write]) -> Result<(), CommitError> {
        let kind = writes.first().map_or(super::KINDS[0], |w| w.kind);
        self.observe("commit", kind, self.inner.commit(writes), |r| match r {
            Ok(()) => "ok",
            Err(CommitError::Condition(_) | CommitError::Conflict) => "refused",
            Err(CommitError::Store(e)) => outcome_of(e),
        })
        .await
    }
}
