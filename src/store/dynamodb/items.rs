//! Records as DynamoDB items, and DynamoDB's errors as store errors.
//!
//! An item holds the object's fields (strings as S, numbers as N, booleans as BOOL, nulls left
//! out, the kind's JSON fields as JSON text), `item_type`, the kind's derived attributes and,
//! for kinds others refer to, `ref_count`.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value};

use crate::store::engine::{Key, Position, Record};
use crate::store::record::{ITEM_TYPE, Index, REF_COUNT, RecordKind};
use crate::store::{Result, StoreError};

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn internal(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Internal(Box::new(e))
}

pub(super) fn to_item(kind: &RecordKind, body: &Map<String, Value>, refs: i64) -> Item {
    let mut item = Item::from([(ITEM_TYPE.to_owned(), s(kind.name))]);
    for (name, value) in body {
        let attribute = match value {
            Value::Null => continue,
            Value::String(text) => s(text.clone()),
            Value::Number(number) => n(number),
            Value::Bool(b) => AttributeValue::Bool(*b),
            other => s(other.to_string()),
        };
        item.insert(name.clone(), attribute);
    }
    for derived in kind.derived {
        if let Some(value) = kind.attribute(body, derived.name) {
            item.insert(derived.name.to_owned(), s(value));
        }
    }
    if kind.referenced {
        item.insert(REF_COUNT.to_owned(), n(refs));
    }
    item
}

fn number<T: std::str::FromStr + Default>(item: &Item, name: &str) -> T {
    match item.get(name) {
        Some(AttributeValue::N(text)) => text.parse().unwrap_or_default(),
        _ => T::default(),
    }
}

pub(super) fn from_item(kind: &RecordKind, item: &Item) -> Result<Record> {
    let mut fields = Map::new();
    for (name, attribute) in item {
        if kind.is_internal(name) {
            continue;
        }
        let value = match attribute {
            AttributeValue::S(text) if kind.json.contains(&name.as_str()) => {
                serde_json::from_str(text).map_err(internal)?
            }
            AttributeValue::S(text) => Value::String(text.clone()),
            AttributeValue::N(text) => Value::Number(text.parse().map_err(internal)?),
            AttributeValue::Bool(b) => Value::Bool(*b),
            _ => continue,
        };
        fields.insert(name.clone(), value);
    }
    Ok(Record {
        body: serde_json::to_vec(&fields).map_err(internal)?,
        version: number(item, "version"),
        refs: number(item, REF_COUNT),
    })
}

/// The item key of a record.
pub(super) fn key_item(kind: &RecordKind, key: &Key) -> Item {
    kind.key
        .iter()
        .zip(&key.0)
        .map(|(name, value)| ((*name).to_owned(), s(value.clone())))
        .collect()
}

/// Where a query on `index` goes on from: the record's key and its index attributes.
pub(super) fn start_key(
    kind: &RecordKind,
    index: Option<(&Index, &str)>,
    position: &Position,
) -> Item {
    let mut item = key_item(kind, &position.key);
    if let Some((index, partition)) = index {
        item.insert(index.partition.to_owned(), s(partition));
        item.insert(index.sort.to_owned(), s(position.sort.clone()));
    }
    item
}

/// A query's `LastEvaluatedKey` as a position.
pub(super) fn position(kind: &RecordKind, sort: Option<&str>, last: &Item) -> Option<Position> {
    let text = |name: &str| match last.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    let key = kind
        .key
        .iter()
        .map(|k| text(k))
        .collect::<Option<Vec<_>>>()?;
    Some(Position {
        sort: sort.map_or(Some(String::new()), text)?,
        key: Key(key),
    })
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

pub(super) fn is_transient_code(code: Option<&str>) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Meta, NodeGroup, Stored};
    use crate::store::enc::NODE_GROUP;
    use crate::store::record::to_body;
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
            meta: Meta::first("test"),
        };
        let item = to_item(&NODE_GROUP, &to_body(&stored).unwrap(), 3);
        assert_eq!(item["item_type"], s("node_group"));
        assert!(!item.contains_key("description"));
        assert_eq!(item["version"], n(1));
        assert_eq!(item["ref_count"], n(3));
        let record = from_item(&NODE_GROUP, &item).unwrap();
        assert_eq!((record.version, record.refs), (1, 3));
        let back: Stored<NodeGroup> = serde_json::from_slice(&record.body).unwrap();
        assert_eq!(back, stored);
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
