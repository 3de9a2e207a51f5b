//! Commits: every commit is one `TransactWriteItems`, each write's expectation its condition,
//! and a cancelled transaction says which condition failed.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};

use super::DynamoDb;
use super::items::{internal, is_transient_code, key_item, n, sdk_error, to_item};
use crate::store::engine::{CommitError, Expect, Op, Write};
use crate::store::record::{REF_COUNT, RecordKind};
use crate::store::{Result, StoreError};

/// A condition expression with its names and values.
#[derive(Default)]
struct Condition {
    expression: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

/// `#rc = :rc`, where an absent count (items of older versions) counts as zero.
fn refs_are(condition: &mut Condition, refs: i64) -> String {
    condition.names.insert("#rc".into(), REF_COUNT.into());
    condition.values.insert(":rc".into(), n(refs));
    if refs == 0 {
        "(attribute_not_exists(#rc) OR #rc = :rc)".into()
    } else {
        "#rc = :rc".into()
    }
}

impl Condition {
    fn of(kind: &RecordKind, expect: Expect) -> Self {
        let mut c = Condition::default();
        let key_is = |c: &mut Condition, test: &str| {
            c.names.insert("#pk".into(), kind.key[0].into());
            format!("{test}(#pk)")
        };
        c.expression = match expect {
            Expect::Anything => None,
            Expect::Absent => Some(key_is(&mut c, "attribute_not_exists")),
            Expect::Present => Some(key_is(&mut c, "attribute_exists")),
            Expect::At { version, refs } => {
                c.names.insert("#v".into(), "version".into());
                c.values.insert(":v".into(), n(version));
                let mut expression = "#v = :v".to_owned();
                if kind.referenced {
                    expression = format!("{expression} AND {}", refs_are(&mut c, refs));
                }
                Some(expression)
            }
            Expect::Refs(refs) => Some(refs_are(&mut c, refs)),
        };
        c
    }

    fn values(self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then_some(self.values)
    }
}

impl DynamoDb {
    fn action(&self, write: &Write) -> Result<Option<TransactWriteItem>> {
        let kind = write.kind;
        let table = self.table(kind);
        let key = key_item(kind, &write.key);
        let mut c = Condition::of(kind, write.expect);
        let action = TransactWriteItem::builder();
        let action = match &write.op {
            Op::Put { body, refs } => {
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(to_item(kind, body, *refs)))
                    .set_condition_expression(c.expression.take())
                    .set_expression_attribute_names((!c.names.is_empty()).then(|| c.names.clone()))
                    .set_expression_attribute_values(c.values());
                action.put(put.build().map_err(internal)?)
            }
            Op::Delete => {
                let delete = Delete::builder()
                    .table_name(table)
                    .set_key(Some(key))
                    .set_condition_expression(c.expression.take())
                    .set_expression_attribute_names((!c.names.is_empty()).then(|| c.names.clone()))
                    .set_expression_attribute_values(c.values());
                action.delete(delete.build().map_err(internal)?)
            }
            Op::Adjust(0) => {
                let Some(expression) = c.expression.take() else {
                    return Ok(None);
                };
                let check = ConditionCheck::builder()
                    .table_name(table)
                    .set_key(Some(key))
                    .condition_expression(expression)
                    .set_expression_attribute_names(Some(c.names.clone()))
                    .set_expression_attribute_values(c.values());
                action.condition_check(check.build().map_err(internal)?)
            }
            Op::Adjust(delta) => {
                c.names.insert("#rc".into(), REF_COUNT.into());
                c.values.insert(":d".into(), n(delta));
                let update = Update::builder()
                    .table_name(table)
                    .set_key(Some(key))
                    .update_expression("ADD #rc :d")
                    .set_condition_expression(c.expression.take())
                    .set_expression_attribute_names(Some(c.names.clone()))
                    .set_expression_attribute_values(c.values());
                action.update(update.build().map_err(internal)?)
            }
        };
        Ok(Some(action.build()))
    }

    pub(super) async fn transact(&self, writes: &[Write]) -> Result<(), CommitError> {
        // Which write each action is, as writes with nothing to do send no action.
        let mut actions = Vec::new();
        let mut origin = Vec::new();
        for (i, write) in writes.iter().enumerate() {
            if let Some(action) = self.action(write)? {
                actions.push(action);
                origin.push(i);
            }
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await;
        let e = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match failure(e) {
            CommitError::Condition(i) => Err(CommitError::Condition(origin[i])),
            other => Err(other),
        }
    }
}

fn failure<R>(e: SdkError<TransactWriteItemsError, R>) -> CommitError
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            let reasons = cancelled.cancellation_reasons();
            if let Some(i) = reasons
                .iter()
                .position(|r| r.code() == Some("ConditionalCheckFailed"))
            {
                return CommitError::Condition(i);
            }
            if reasons
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"))
            {
                return CommitError::Conflict;
            }
            if reasons.iter().any(|r| is_transient_code(r.code())) {
                return CommitError::Store(StoreError::Unavailable(Box::new(e)));
            }
            CommitError::Store(StoreError::Internal(Box::new(e)))
        }
        Some(TransactWriteItemsError::TransactionInProgressException(_)) => CommitError::Conflict,
        _ => CommitError::Store(sdk_error(e)),
    }
}
