//! Opening a file: create what the current layout needs, and move a file of an older layout
//! into it, all in the transaction that opens the file. Layout 3 added rule views (and
//! dropped the facts' index) to layout 2.
//!
//! Layout 1 (enc before the schema version was recorded) kept a table per kind keyed by the
//! object's key (`environments`, `node_groups`, `nodes`, `activities` by date and id), and
//! reverse-reference tables instead of reference counts.

use std::collections::HashMap;

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde_json::{Map, Value};

use super::{Entries, Records, SCHEMA, SCHEMA_VERSION, apply, index_table, records_table};
use crate::store::engine::{Expect, Key, Op, Write};
use crate::store::record::RecordKind;
use crate::store::{KINDS, Result, StoreError, activities, enc};

const V1_ENVIRONMENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("environments");
const V1_NODE_GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("node_groups");
const V1_NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const V1_ACTIVITIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("activities");
const V1_INDEXES: [&str; 4] = [
    "nodes_by_group",
    "nodes_by_environment",
    "groups_by_parent",
    "activity_dates",
];

pub(super) fn upgrade(txn: &WriteTransaction) -> Result<()> {
    let mut indexes = Vec::new();
    for kind in KINDS {
        txn.open_table(Records::new(&records_table(kind)))?;
        for index in kind.indexes {
            indexes.push(index_table(kind, index));
            txn.open_table(Entries::new(&indexes[indexes.len() - 1]))?;
        }
    }
    // An index an earlier enc kept and this one does not (the facts' listing) goes.
    let unused: Vec<String> = txn
        .list_tables()?
        .map(|t| t.name().to_owned())
        .filter(|t| t.starts_with("index/") && !indexes.contains(t))
        .collect();
    for table in unused {
        txn.delete_table(Entries::new(&table))?;
    }
    let found = txn.open_table(SCHEMA)?.get("version")?.map(|v| v.value());
    match found {
        Some(SCHEMA_VERSION) => return Ok(()),
        // Layout 2 had the facts listed by an index (dropped above) and no rule views (their
        // tables are made above; enc takes the views when it starts). Layout 3 keeps an enc
        // of layout 2 from opening the file and judging every node without facts.
        Some(2) => {}
        Some(other) => {
            return Err(StoreError::Internal(
                format!("the file has layout {other}; this enc reads layout {SCHEMA_VERSION}")
                    .into(),
            ));
        }
        None if txn.list_tables()?.any(|t| t.name() == V1_NODES.name()) => from_layout_1(txn)?,
        None => {}
    }
    txn.open_table(SCHEMA)?.insert("version", SCHEMA_VERSION)?;
    Ok(())
}

fn body(bytes: &[u8]) -> Result<Map<String, Value>> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Internal(Box::new(e)))
}

fn from_layout_1(txn: &WriteTransaction) -> Result<()> {
    let mut objects: Vec<(&'static RecordKind, Map<String, Value>)> = Vec::new();
    for entry in txn.open_table(V1_ENVIRONMENTS)?.iter()? {
        objects.push((&enc::ENVIRONMENT, body(entry?.1.value())?));
    }
    for entry in txn.open_table(V1_NODE_GROUPS)?.iter()? {
        objects.push((&enc::NODE_GROUP, body(entry?.1.value())?));
    }
    for entry in txn.open_table(V1_NODES)?.iter()? {
        objects.push((&enc::NODE, body(entry?.1.value())?));
    }
    for entry in txn.open_table(V1_ACTIVITIES)?.iter()? {
        objects.push((&activities::ACTIVITY, body(entry?.1.value())?));
    }
    let mut refs: HashMap<(&str, Key), i64> = HashMap::new();
    for (kind, object) in &objects {
        for (reference, key) in kind.referenced_keys(object) {
            *refs.entry((reference.target.name, key)).or_default() += 1;
        }
    }
    let migrated = objects.len();
    let mut open = super::Open::new(txn);
    for (kind, object) in objects {
        let key = kind.key_of(&object).ok_or_else(|| {
            StoreError::Internal(format!("a {} without its key", kind.name).into())
        })?;
        let count = refs.get(&(kind.name, key.clone())).copied().unwrap_or(0);
        let write = Write::new(
            kind,
            key,
            Op::Put {
                body: object,
                refs: count,
            },
            Expect::Anything,
        );
        apply(&mut open, &write, None)?;
    }
    drop(open);
    txn.delete_table(V1_ENVIRONMENTS)?;
    txn.delete_table(V1_NODE_GROUPS)?;
    txn.delete_table(V1_NODES)?;
    txn.delete_table(V1_ACTIVITIES)?;
    let old: Vec<_> = txn
        .list_tables()?
        .filter(|t| V1_INDEXES.contains(&t.name()))
        .collect();
    for table in old {
        txn.delete_table(table)?;
    }
    tracing::info!(
        from = 1,
        to = SCHEMA_VERSION,
        records = migrated,
        "migrated the embedded store"
    );
    Ok(())
}
