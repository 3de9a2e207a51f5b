//! An engine that times every call (Prometheus) and traces it (a span per call), around any
//! engine. Engine calls are what costs: each is one redb transaction or one DynamoDB request.
//!
//! The span of a call is made with OpenTelemetry's own API, as a child of the request's span,
//! not as a `tracing` span: nothing but the exporter reads it, and a `tracing` span passes
//! through every layer on each poll of the call (a tenth of a node read's work).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _};
use prometheus::{Histogram, IntCounter};

use super::engine::{Batch, CommitError, Engine, Key, Query, Record, Write};
use super::record::RecordKind;
use super::{Result, StoreError};
use crate::telemetry::prometheus::Metrics;

pub struct Instrumented {
    inner: Arc<dyn Engine>,
    metrics: Arc<Metrics>,
    /// The histogram of each operation, kind (of `KINDS`) and outcome, found by its labels
    /// the first time and kept: a label lookup hashes every label on every call.
    histograms: Box<[OnceLock<Histogram>]>,
    /// The read bytes counter of each read operation and kind, kept the same way.
    read_bytes: Box<[OnceLock<IntCounter>]>,
}

const OPERATIONS: [&str; 5] = ["get", "query", "scan", "commit", "ping"];
const OUTCOMES: [&str; 5] = ["ok", "not_found", "refused", "error", "unavailable"];

fn outcome_of(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable(_) => "unavailable",
        _ => "error",
    }
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Engine>, metrics: Arc<Metrics>) -> Self {
        let slots = OPERATIONS.len() * super::KINDS.len() * OUTCOMES.len();
        Self {
            inner,
            metrics,
            histograms: (0..slots).map(|_| OnceLock::new()).collect(),
            read_bytes: (0..OPERATIONS.len() * super::KINDS.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Counts the bytes of the records a read returned.
    fn count_read<'r>(
        &self,
        operation: &'static str,
        kind: &'static RecordKind,
        records: impl Iterator<Item = &'r Record>,
    ) {
        let bytes: usize = records.map(|r| r.body.len()).sum();
        if bytes == 0 {
            return;
        }
        let labels = [self.inner.backend(), operation, kind.name];
        let family = &self.metrics.store_read_bytes;
        let slot = super::KINDS
            .iter()
            .position(|k| std::ptr::eq(*k, kind))
            .zip(OPERATIONS.iter().position(|o| *o == operation))
            .and_then(|(k, o)| self.read_bytes.get(o * super::KINDS.len() + k));
        match slot {
            Some(slot) => slot
                .get_or_init(|| family.with_label_values(&labels))
                .inc_by(bytes as u64),
            None => family.with_label_values(&labels).inc_by(bytes as u64),
        }
    }

    /// The kept histogram of a call with these labels, if they are among those kept.
    fn slot(
        &self,
        operation: &str,
        kind: &RecordKind,
        outcome: &str,
    ) -> Option<&OnceLock<Histogram>> {
        let at = |names: &[&str], name: &str| names.iter().position(|n| *n == name);
        let kind = super::KINDS.iter().position(|k| std::ptr::eq(*k, kind))?;
        let operation = at(&OPERATIONS, operation)?;
        let outcome = at(&OUTCOMES, outcome)?;
        let index = (operation * super::KINDS.len() + kind) * OUTCOMES.len() + outcome;
        self.histograms.get(index)
    }

    /// Records how long a call took, under its labels.
    fn record(&self, operation: &str, kind: &'static RecordKind, outcome: &str, seconds: f64) {
        let labels = [self.inner.backend(), operation, kind.name, outcome];
        let store_duration = &self.metrics.store_duration;
        match self.slot(operation, kind, outcome) {
            Some(slot) => slot
                .get_or_init(|| store_duration.with_label_values(&labels))
                .observe(seconds),
            None => store_duration.with_label_values(&labels).observe(seconds),
        }
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        kind: &'static RecordKind,
        call: impl Future<Output = T>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> T {
        let span = crate::telemetry::tracer().map(|tracer| {
            let parent = crate::telemetry::request_context();
            // Room for the outcome set at the end, so the list is not moved then.
            let mut attributes = Vec::with_capacity(5);
            attributes.extend([
                KeyValue::new("db.system.name", self.inner.backend()),
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("db.collection.name", kind.table),
                KeyValue::new("record", kind.name),
            ]);
            tracer
                .span_builder(span_name(operation))
                .with_kind(SpanKind::Client)
                .with_attributes(attributes)
                .start_with_context(tracer, &parent)
        });
        let started = Instant::now();
        let result = call.await;
        let outcome = outcome(&result);
        self.record(operation, kind, outcome, started.elapsed().as_secs_f64());
        if let Some(mut span) = span {
            span.set_attribute(KeyValue::new("outcome", outcome));
            span.end();
        }
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
        let found = self
            .observe("get", kind, self.inner.get(keys), |r| match r {
                Ok(found) if found.first().is_some_and(Option::is_none) => "not_found",
                other => read(other),
            })
            .await?;
        self.count_read("get", kind, found.iter().flatten());
        Ok(found)
    }

    async fn get_many(
        &self,
        kind: &'static RecordKind,
        keys: &[Key],
    ) -> Result<Vec<Option<Record>>> {
        let found = self
            .observe("get", kind, self.inner.get_many(kind, keys), read)
            .await?;
        self.count_read("get", kind, found.iter().flatten());
        Ok(found)
    }

    async fn query(&self, query: &Query<'_>) -> Result<Batch> {
        let batch = self
            .observe("query", query.kind, self.inner.query(query), read)
            .await?;
        self.count_read("query", query.kind, batch.records.iter());
        Ok(batch)
    }

    async fn scan(
        &self,
        kind: &'static RecordKind,
        after: Option<super::engine::Position>,
    ) -> Result<Batch> {
        let batch = self
            .observe("scan", kind, self.inner.scan(kind, after), read)
            .await?;
        self.count_read("scan", kind, batch.records.iter());
        Ok(batch)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::Embedded;
    use crate::store::record::Index;

    /// A kind the store does not keep: its calls are counted all the same.
    static STRAY: RecordKind = RecordKind {
        indexes: &[Index::new(
            "ordered",
            super::super::record::ITEM_TYPE,
            "name",
        )],
        ..RecordKind::new(super::super::Kind::Node, "stray", "strays", &["name"])
    };

    fn count(metrics: &Metrics, operation: &str, record: &str, outcome: &str) -> u64 {
        let labels = ["embedded", operation, record, outcome];
        let histogram = metrics.store_duration.with_label_values(&labels);
        histogram.get_sample_count()
    }

    #[tokio::test]
    async fn every_call_is_counted_under_its_own_labels() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = Instrumented::new(
            Arc::new(Embedded::open(dir.path()).unwrap()),
            metrics.clone(),
        );
        let node = &super::super::enc::NODE;
        for _ in 0..3 {
            store.get(&[(node, Key::one("web01"))]).await.unwrap();
        }
        store.ping().await.unwrap();
        store.get(&[(&STRAY, Key::one("x"))]).await.unwrap_err();
        store.record("vanish", node, "odd", 0.5);
        assert_eq!(count(&metrics, "get", "node", "not_found"), 3);
        assert_eq!(count(&metrics, "get", "node", "ok"), 0);
        assert_eq!(
            count(&metrics, "ping", super::super::KINDS[0].name, "ok"),
            1
        );
        assert_eq!(count(&metrics, "get", "stray", "error"), 1);
        assert_eq!(count(&metrics, "vanish", "node", "odd"), 1);
        let rendered = metrics.render();
        assert!(
            rendered.contains(r#"store_operation_duration_seconds_count{backend="embedded",operation="get",outcome="not_found",record="node"} 3"#),
            "{rendered}"
        );
    }
}
