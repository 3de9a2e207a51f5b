//! The engine's reads: one item (`GetItem`), several in one snapshot (`TransactGetItems`),
//! an index listing (`Query`) and a consistent `Scan` of one kind; commits are in
//! `transactions`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_get_items::TransactGetItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Get, KeysAndAttributes, TransactGetItem};

use super::items::{
    from_item, internal, is_transient_code, is_validation_error, key_item, position, s, sdk_error,
    start_key,
};
use super::{BACKEND, DynamoDb, tables};
use crate::store::engine::{Batch, CommitError, Engine, Key, Position, Query, Record, Write};
use crate::store::record::{ITEM_TYPE, RecordKind};
use crate::store::{Result, StoreError};

/// A snapshot read meeting a write in progress is tried again this many times.
const SNAPSHOT_TRIES: u32 = 4;
/// A filtered query reads at least this many items per request: DynamoDB filters after it
/// reads, so small reads would need many requests to find a page.
const FILTERED_BATCH: usize = 100;

impl DynamoDb {
    async fn get_item(&self, kind: &RecordKind, key: &Key) -> Result<Option<Record>> {
        let out = self
            .client
            .get_item()
            .table_name(self.table(kind))
            .set_key(Some(key_item(kind, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        out.item.map(|item| from_item(kind, &item)).transpose()
    }
}

#[async_trait]
impl Engine for DynamoDb {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// `TransactWriteItems` takes at most 100 items.
    fn max_writes(&self) -> Option<usize> {
        Some(100)
    }

    /// Reads an absent item of every table: each must exist and answer.
    async fn ping(&self) -> Result<()> {
        for table in tables::tables() {
            let kind = table.kinds[0];
            let key = Key(kind.key.iter().map(|_| "/ping".to_owned()).collect());
            self.get_item(kind, &key).await?;
        }
        Ok(())
    }

    /// One key is a `GetItem`; several are one `TransactGetItems`, which reads them all at
    /// one instant (and costs twice as much).
    async fn get(&self, keys: &[(&'static RecordKind, Key)]) -> Result<Vec<Option<Record>>> {
        if let [(kind, key)] = keys {
            return Ok(vec![self.get_item(kind, key).await?]);
        }
        let gets = keys
            .iter()
            .map(|(kind, key)| {
                let get = Get::builder()
                    .table_name(self.table(kind))
                    .set_key(Some(key_item(kind, key)))
                    .build()
                    .map_err(internal)?;
                Ok(TransactGetItem::builder().get(get).build())
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tries = 0;
        let out = loop {
            tries += 1;
            let result = self
                .client
                .transact_get_items()
                .set_transact_items(Some(gets.clone()))
                .send()
                .await;
            let e = match result {
                Ok(out) => break out,
                Err(e) => e,
            };
            let Some(TransactGetItemsError::TransactionCanceledException(cancelled)) =
                e.as_service_error()
            else {
                return Err(sdk_error(e));
            };
            let reasons = cancelled.cancellation_reasons();
            if reasons.iter().any(|r| is_transient_code(r.code())) {
                return Err(StoreError::Unavailable(Box::new(e)));
            }
            let conflict = reasons
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"));
            if !conflict || tries == SNAPSHOT_TRIES {
                return Err(if conflict {
                    StoreError::Unavailable(Box::new(e))
                } else {
                    StoreError::Internal(Box::new(e))
                });
            }
            tokio::time::sleep(Duration::from_millis(5 << tries)).await;
        };
        let responses = out.responses.unwrap_or_default();
        if responses.len() != keys.len() {
            return Err(StoreError::Internal(
                "TransactGetItems answered a different number of items".into(),
            ));
        }
        keys.iter()
            .zip(responses)
            .map(|((kind, _), response)| response.item.map(|i| from_item(kind, &i)).transpose())
            .collect()
    }

    /// `BatchGetItem`s, consistent, 100 keys each, asking again for what DynamoDB left
    /// unprocessed (it answers at most 16 MB a call).
    async fn get_many(
        &self,
        kind: &'static RecordKind,
        keys: &[Key],
    ) -> Result<Vec<Option<Record>>> {
        let table = self.table(kind);
        let mut found: HashMap<Key, Record> = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut wanted: Vec<_> = chunk.iter().map(|k| key_item(kind, k)).collect();
            let mut tries = 0;
            while !wanted.is_empty() {
                tries += 1;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut wanted)))
                    .consistent_read(true)
                    .build()
                    .map_err(internal)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&table, request)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&table)
                    .unwrap_or_default()
                {
                    let key = Key(kind
                        .key
                        .iter()
                        .map(|field| match item.get(*field) {
                            Some(AttributeValue::S(value)) => Ok(value.clone()),
                            _ => Err(StoreError::Internal("an item without its key".into())),
                        })
                        .collect::<Result<_>>()?);
                    found.insert(key, from_item(kind, &item)?);
                }
                if let Some(left) = out.unprocessed_keys.and_then(|mut u| u.remove(&table)) {
                    if tries == SNAPSHOT_TRIES * 2 {
                        return Err(StoreError::Unavailable(
                            "DynamoDB kept leaving keys of a batch read unprocessed".into(),
                        ));
                    }
                    wanted = left.keys;
                    tokio::time::sleep(Duration::from_millis(5 << tries)).await;
                }
            }
        }
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    async fn query(&self, query: &Query<'_>) -> Result<Batch> {
        let index = query.index;
        let mut names = HashMap::from([("#pk".to_owned(), index.partition.to_owned())]);
        let mut values = HashMap::from([(":pk".to_owned(), s(query.partition))]);
        let mut key_condition = "#pk = :pk".to_owned();
        let range = match (query.from, query.to) {
            (Some(from), Some(to)) => Some((" AND #sk BETWEEN :lo AND :hi", Some(from), Some(to))),
            (Some(from), None) => Some((" AND #sk >= :lo", Some(from), None)),
            (None, Some(to)) => Some((" AND #sk <= :hi", None, Some(to))),
            (None, None) => None,
        };
        if let Some((condition, from, to)) = range {
            names.insert("#sk".to_owned(), index.sort.to_owned());
            key_condition.push_str(condition);
            if let Some(from) = from {
                values.insert(":lo".to_owned(), s(from));
            }
            if let Some(to) = to {
                values.insert(":hi".to_owned(), s(to));
            }
        }
        let mut conditions = Vec::new();
        for (i, (field, value)) in query.filters.iter().enumerate() {
            names.insert(format!("#f{i}"), (*field).to_owned());
            values.insert(format!(":f{i}"), s(value.clone()));
            conditions.push(format!("#f{i} = :f{i}"));
        }
        let filter = (!conditions.is_empty()).then(|| conditions.join(" AND "));
        let limit = if filter.is_some() {
            query.limit.max(FILTERED_BATCH)
        } else {
            query.limit
        };
        let kind = query.kind;
        let out = self
            .client
            .query()
            .table_name(self.table(kind))
            .index_name(index.name)
            .key_condition_expression(key_condition)
            .set_filter_expression(filter)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .set_exclusive_start_key(
                query
                    .after
                    .as_ref()
                    .map(|p| start_key(kind, Some((index, query.partition)), p)),
            )
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| {
                if query.after.is_some() && is_validation_error(&e) {
                    StoreError::InvalidCursor
                } else {
                    sdk_error(e)
                }
            })?;
        let mut items = out.items.unwrap_or_default();
        let mut more = out
            .last_evaluated_key
            .and_then(|last| position(kind, Some(index.sort), &last));
        if items.len() > query.limit {
            items.truncate(query.limit);
            more = items
                .last()
                .and_then(|last| position(kind, Some(index.sort), last));
        }
        let records = items
            .iter()
            .map(|item| from_item(kind, item))
            .collect::<Result<_, _>>()?;
        Ok(Batch { records, more })
    }

    async fn scan(&self, kind: &'static RecordKind, after: Option<Position>) -> Result<Batch> {
        let out = self
            .client
            .scan()
            .table_name(self.table(kind))
            .consistent_read(true)
            .filter_expression("#t = :t")
            .expression_attribute_names("#t", ITEM_TYPE)
            .expression_attribute_values(":t", s(kind.name))
            .set_exclusive_start_key(after.map(|p| start_key(kind, None, &p)))
            .send()
            .await
            .map_err(sdk_error)?;
        let records = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| from_item(kind, item))
            .collect::<Result<_, _>>()?;
        let more = out
            .last_evaluated_key
            .and_then(|last| position(kind, None, &last));
        Ok(Batch { records, more })
    }

    async fn commit(&self, writes: &[Write]) -> Result<(), CommitError> {
        self.transact(writes).await
    }
}
