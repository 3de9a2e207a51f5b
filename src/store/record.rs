//! Record kinds, each described once: its key, the records it names, and how it is listed.
//! The rules, both engines and `enc dynamodb tables` all read these descriptions, so a new
//! kind is a description and a domain type, not code in each backend.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Kind;

/// The key of a record: the values of its kind's key fields, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(pub Vec<String>);

impl Key {
    pub fn one(part: impl Into<String>) -> Self {
        Key(vec![part.into()])
    }

    pub fn two(first: impl Into<String>, second: impl Into<String>) -> Self {
        Key(vec![first.into(), second.into()])
    }
}

/// Written as in messages and paths: `production/puppet-eu`.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// The attribute that names a record's kind; constant per kind, so an index partitioned on
/// it lists a whole kind in order.
pub const ITEM_TYPE: &str = "item_type";
/// The reference count the store keeps on records others refer to.
pub const REF_COUNT: &str = "ref_count";

/// A way to list a kind: records whose `partition` attribute has one value, in `sort` order.
#[derive(Debug, PartialEq, Eq)]
pub struct Index {
    pub name: &'static str,
    pub partition: &'static str,
    pub sort: &'static str,
}

/// An attribute made of fields, for an index: `fields` joined by `separator`.
#[derive(Debug, PartialEq, Eq)]
pub struct Derived {
    pub name: &'static str,
    pub fields: &'static [&'static str],
    pub separator: &'static str,
}

impl Derived {
    pub const fn new(
        name: &'static str,
        fields: &'static [&'static str],
        separator: &'static str,
    ) -> Self {
        Self {
            name,
            fields,
            separator,
        }
    }
}

impl Index {
    pub const fn new(name: &'static str, partition: &'static str, sort: &'static str) -> Self {
        Self {
            name,
            partition,
            sort,
        }
    }
}

/// A field (or fields) naming a record of `target` kind: the values of `fields` are its key.
#[derive(Debug, PartialEq)]
pub struct Reference {
    /// The field named in messages when the target is missing.
    pub field: &'static str,
    pub target: &'static RecordKind,
    pub fields: &'static [&'static str],
}

impl Reference {
    pub const fn new(
        field: &'static str,
        target: &'static RecordKind,
        fields: &'static [&'static str],
    ) -> Self {
        Self {
            field,
            target,
            fields,
        }
    }
}

pub struct RecordKind {
    pub kind: Kind,
    /// The kind's name in the engines: redb table names, DynamoDB's `item_type`.
    pub name: &'static str,
    /// The DynamoDB table (after `ENC_TABLE_PREFIX`) that holds it; kinds may share one.
    pub table: &'static str,
    /// The fields of the key; the first is the table's partition key, a second its sort key.
    pub key: &'static [&'static str],
    /// Listings, the first whose partition is a given filter chosen; the one partitioned on
    /// `item_type` lists everything.
    pub indexes: &'static [Index],
    pub derived: &'static [Derived],
    pub references: &'static [Reference],
    /// Whether other records refer to these: they keep a reference count, and a delete
    /// needs it to be zero.
    pub referenced: bool,
    /// Fields holding any JSON value (DynamoDB keeps them as JSON text).
    pub json: &'static [&'static str],
    /// Whether every change appends a revision (`history`) in its own commit, and the fields
    /// a revision leaves out (secrets).
    pub history: Option<&'static [&'static str]>,
}

impl RecordKind {
    /// A kind with this key, listed by no index, naming and named by nothing, without
    /// history: a description says only where a kind differs (`..RecordKind::new(..)`).
    pub const fn new(
        kind: Kind,
        name: &'static str,
        table: &'static str,
        key: &'static [&'static str],
    ) -> Self {
        Self {
            kind,
            name,
            table,
            key,
            indexes: &[],
            derived: &[],
            references: &[],
            referenced: false,
            json: &[],
            history: None,
        }
    }
}

/// Kinds are statics that may refer to themselves: they are equal when they are the same
/// kind, and shown by name.
impl PartialEq for RecordKind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl std::fmt::Debug for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A field's value as an index or key attribute: strings only.
fn text(body: &Map<String, Value>, field: &str) -> Option<String> {
    match body.get(field) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

impl RecordKind {
    /// The value of an attribute (a field, a derived attribute or `item_type`), if it has one.
    pub fn attribute(&self, body: &Map<String, Value>, name: &str) -> Option<String> {
        if name == ITEM_TYPE {
            return Some(self.name.to_owned());
        }
        match self.derived.iter().find(|d| d.name == name) {
            Some(derived) => {
                let parts: Option<Vec<String>> =
                    derived.fields.iter().map(|f| text(body, f)).collect();
                Some(parts?.join(derived.separator))
            }
            None => text(body, name),
        }
    }

    /// The key of the record holding `body`.
    pub fn key_of(&self, body: &Map<String, Value>) -> Option<Key> {
        self.key
            .iter()
            .map(|f| text(body, f))
            .collect::<Option<_>>()
            .map(Key)
    }

    /// Attributes the store adds to records of this kind, never part of an object.
    pub fn is_internal(&self, attribute: &str) -> bool {
        attribute == ITEM_TYPE
            || attribute == REF_COUNT
            || self.derived.iter().any(|d| d.name == attribute)
    }

    /// The index listing every record of the kind.
    pub fn everything(&self) -> &'static Index {
        self.indexes
            .iter()
            .find(|i| i.partition == ITEM_TYPE)
            .unwrap_or_else(|| panic!("{} has no index on {ITEM_TYPE}", self.name))
    }

    pub fn index_named(&self, name: &str) -> &'static Index {
        self.indexes
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{} has no index {name}", self.name))
    }

    /// The index for these equality filters and the filters it leaves to apply: the first
    /// index partitioned on a filtered field, else the one listing everything.
    pub fn choose_index(
        &self,
        filters: &[(&'static str, String)],
    ) -> (&'static Index, String, Vec<(&'static str, String)>) {
        for index in self.indexes {
            if let Some(at) = filters.iter().position(|(f, _)| *f == index.partition) {
                let mut rest = filters.to_vec();
                let (_, partition) = rest.remove(at);
                return (index, partition, rest);
            }
        }
        (self.everything(), self.name.to_owned(), filters.to_vec())
    }

    /// The keys of the records `body` refers to, with their references.
    pub fn referenced_keys(&self, body: &Map<String, Value>) -> Vec<(&'static Reference, Key)> {
        self.references
            .iter()
            .filter_map(|r| {
                let parts: Option<Vec<String>> = r.fields.iter().map(|f| text(body, f)).collect();
                Some((r, Key(parts?)))
            })
            .collect()
    }
}

/// The object as a JSON object, as engines take it.
pub fn to_body<T: serde::Serialize>(object: &T) -> Result<Map<String, Value>, super::StoreError> {
    match serde_json::to_value(object) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(super::StoreError::Internal(
            "records serialize as JSON objects".into(),
        )),
        Err(e) => Err(super::StoreError::Internal(Box::new(e))),
    }
}
