//! Items, transaction actions and errors: the DynamoDB vocabulary the store is written in.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use super::tables::{DATE_ID, ITEM_TYPE, REF_COUNT, SORT_KEY};
use crate::store::StoreError;

pub(super) type Item = HashMap<String, AttributeValue>;

/// Fields kept as JSON text, so any JSON value round-trips exactly.
const JSON_FIELDS: [&str; 2] = ["classes", "parameters"];
/// Attributes the store keeps for itself, never part of an object.
const INTERNAL: [&str; 4] = [ITEM_TYPE, SORT_KEY, REF_COUNT, DATE_ID];

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Internal(Box::new(e))
}

/// An object as an item: strings as S, numbers as N, nulls left out, maps as JSON text.
pub(super) fn to_item<T: Serialize>(object: &T, item_type: &str) -> Result<Item, StoreError> {
    let Value::Object(fields) = serde_json::to_value(object).map_err(internal)? else {
        return Err(StoreError::Internal(
            "objects serialize as JSON objects".into(),
        ));
    };
    let mut item = Item::from([(ITEM_TYPE.to_owned(), s(item_type))]);
    for (name, value) in fields {
        let attribute = match value {
            Value::Null => continue,
            Value::String(text) => s(text),
            Value::Number(number) => n(number),
            Value::Bool(b) => AttributeValue::Bool(b),
            other => s(other.to_string()),
        };
        item.insert(name, attribute);
    }
    Ok(item)
}

pub(super) fn from_item<T: DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    let mut fields = Map::new();
    for (name, attribute) in item {
        if INTERNAL.contains(&name.as_str()) {
            continue;
        }
        let value = match attribute {
            AttributeValue::S(text) if JSON_FIELDS.contains(&name.as_str()) => {
                serde_json::from_str(text).map_err(internal)?
            }
            AttributeValue::S(text) => Value::String(text.clone()),
            AttributeValue::N(number) => Value::Number(number.parse().map_err(internal)?),
            AttributeValue::Bool(b) => Value::Bool(*b),
            _ => continue,
        };
        fields.insert(name.clone(), value);
    }
    serde_json::from_value(Value::Object(fields)).map_err(internal)
}

pub(super) fn ref_count(item: &Item) -> i64 {
    match item.get(REF_COUNT) {
        Some(AttributeValue::N(count)) => count.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The store error for a failed SDK call: transient faults are `Unavailable` (503).
pub(super) fn sdk_error<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => is_transient_code(service.err().code()),
        _ => false,
    };
    if transient {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Internal(Box::new(e))
    }
}

fn is_transient_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ThrottlingException"
                | "ThrottlingError"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "ResourceNotFoundException"
        )
    )
}

pub(super) fn is_validation_error<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .is_some_and(|s| s.code() == Some("ValidationException"))
}

/// How a transaction ended, when DynamoDB answered.
pub(super) enum Outcome {
    Committed,
    /// The condition of the action at this index failed.
    ConditionFailed(usize),
    /// Another transaction touched the same items; try again.
    Conflict,
}

pub(super) fn outcome(
    result: Result<
        impl Sized,
        SdkError<TransactWriteItemsError, impl std::fmt::Debug + Send + Sync + 'static>,
    >,
) -> Result<Outcome, StoreError> {
    let e = match result {
        Ok(_) => return Ok(Outcome::Committed),
        Err(e) => e,
    };
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            let reasons = cancelled.cancellation_reasons();
            if let Some(i) = reasons
                .iter()
                .position(|r| r.code() == Some("ConditionalCheckFailed"))
            {
                return Ok(Outcome::ConditionFailed(i));
            }
            if reasons
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"))
            {
                return Ok(Outcome::Conflict);
            }
            if reasons.iter().any(|r| is_transient_code(r.code())) {
                return Err(StoreError::Unavailable(Box::new(e)));
            }
            Err(StoreError::Internal(Box::new(e)))
        }
        Some(TransactWriteItemsError::TransactionInProgressException(_)) => Ok(Outcome::Conflict),
        _ => Err(sdk_error(e)),
    }
}

fn built<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, StoreError> {
    r.map_err(internal)
}

/// Put a new item, refused if one with its key exists.
pub(super) fn put_new(
    table: &str,
    partition: &str,
    item: Item,
) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", partition);
    Ok(TransactWriteItem::builder()
        .put(built(put.build())?)
        .build())
}

/// Put the next version of an item, refused unless `version` is still the stored one.
pub(super) fn put_versioned(
    table: &str,
    item: Item,
    version: u64,
) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("#v = :v")
        .expression_attribute_names("#v", "version")
        .expression_attribute_values(":v", n(version));
    Ok(TransactWriteItem::builder()
        .put(built(put.build())?)
        .build())
}

/// Overwrite every attribute of `item` except its key (and remove `removable` ones it lacks),
/// keeping attributes the store maintains, such as the reference count.
pub(super) fn update_versioned(
    table: &str,
    key: Item,
    item: Item,
    removable: &[&str],
    version: u64,
) -> Result<TransactWriteItem, StoreError> {
    let mut update = Update::builder()
        .table_name(table)
        .condition_expression("#v = :v")
        .expression_attribute_names("#v", "version")
        .expression_attribute_values(":v", n(version));
    let remove: Vec<&str> = removable
        .iter()
        .copied()
        .filter(|name| !item.contains_key(*name))
        .collect();
    let mut sets = Vec::new();
    for (i, (name, value)) in item
        .into_iter()
        .filter(|(k, _)| !key.contains_key(k))
        .enumerate()
    {
        sets.push(format!("#s{i} = :s{i}"));
        update = update
            .expression_attribute_names(format!("#s{i}"), name)
            .expression_attribute_values(format!(":s{i}"), value);
    }
    let mut expression = format!("SET {}", sets.join(", "));
    if !remove.is_empty() {
        let mut removed = Vec::new();
        for (i, name) in remove.into_iter().enumerate() {
            update = update.expression_attribute_names(format!("#r{i}"), name);
            removed.push(format!("#r{i}"));
        }
        expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
    }
    let update = update.set_key(Some(key)).update_expression(expression);
    Ok(TransactWriteItem::builder()
        .update(built(update.build())?)
        .build())
}

/// Delete an item at `version`; with `unreferenced`, only while nothing refers to it.
pub(super) fn delete_versioned(
    table: &str,
    key: Item,
    version: u64,
    unreferenced: bool,
) -> Result<TransactWriteItem, StoreError> {
    let mut delete = Delete::builder()
        .table_name(table)
        .set_key(Some(key))
        .expression_attribute_names("#v", "version")
        .expression_attribute_values(":v", n(version));
    delete = if unreferenced {
        delete
            .condition_expression("#v = :v AND (attribute_not_exists(#rc) OR #rc = :zero)")
            .expression_attribute_names("#rc", REF_COUNT)
            .expression_attribute_values(":zero", n(0))
    } else {
        delete.condition_expression("#v = :v")
    };
    Ok(TransactWriteItem::builder()
        .delete(built(delete.build())?)
        .build())
}

/// Changes the reference count of an item that must exist (and, with `version`, must still
/// be at that version); with no change, only checks those conditions.
pub(super) fn adjust_references(
    table: &str,
    partition: &str,
    key: Item,
    delta: i64,
    version: Option<u64>,
) -> Result<TransactWriteItem, StoreError> {
    let mut condition = "attribute_exists(#pk)".to_owned();
    let mut names = HashMap::from([("#pk".to_owned(), partition.to_owned())]);
    let mut values = HashMap::new();
    if let Some(version) = version {
        condition.push_str(" AND #v = :v");
        names.insert("#v".into(), "version".into());
        values.insert(":v".into(), n(version));
    }
    if delta == 0 {
        let check = ConditionCheck::builder()
            .table_name(table)
            .set_key(Some(key))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values((!values.is_empty()).then_some(values));
        return Ok(TransactWriteItem::builder()
            .condition_check(built(check.build())?)
            .build());
    }
    names.insert("#rc".into(), REF_COUNT.into());
    values.insert(":d".into(), n(delta));
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(key))
        .update_expression("ADD #rc :d")
        .condition_expression(condition)
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values));
    Ok(TransactWriteItem::builder()
        .update(built(update.build())?)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Meta, NodeGroup, Stored};
    use serde_json::json;

    #[test]
    fn objects_round_trip_through_items() {
        let group: NodeGroup = serde_json::from_value(json!({
            "name": "web",
            "description": null,
            "parent": "base",
            "classes": {"profile::nginx": {"workers": 4.0, "on": "yes", "list": [1, null]}},
            "parameters": {"n": 12345678901234567890u64}
        }))
        .unwrap();
        let stored = Stored {
            item: group,
            meta: Meta::first(),
        };
        let mut item = to_item(&stored, "node_group").unwrap();
        assert_eq!(item["item_type"], s("node_group"));
        assert!(!item.contains_key("description"));
        assert_eq!(item["version"], n(1));
        item.insert(REF_COUNT.into(), n(3));
        let back: Stored<NodeGroup> = from_item(&item).unwrap();
        assert_eq!(back, stored);
        assert_eq!(ref_count(&item), 3);
    }

    #[test]
    fn throttling_and_outages_are_transient() {
        for code in [
            "ThrottlingException",
            "ProvisionedThroughputExceededException",
            "InternalServerError",
        ] {
            assert!(is_transient_code(Some(code)), "{code}");
        }
        for code in [
            "ValidationException",
            "ConditionalCheckFailedException",
            "AccessDeniedException",
        ] {
            assert!(!is_transient_code(Some(code)), "{code}");
        }
        assert!(!is_transient_code(None));
    }
}
