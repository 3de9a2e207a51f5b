//! The embedded engine: one redb file, no network. A table of records per kind and a table
//! per index, all written in the same write transaction, so a commit's expectations and its
//! writes succeed or fail together. Reads run on the caller's thread: a redb read is a few
//! page lookups; commits (which sync the file) run on the blocking pool.

mod migrate;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde_json::{Map, Value};

use super::engine::{Batch, CommitError, Engine, Key, Op, Position, Query, Record, Write};
use super::record::{Index, RecordKind};
use super::{Result, StoreError};

const BACKEND: &str = "embedded";
/// The file inside the data directory.
pub const FILE_NAME: &str = "enc.redb";
/// The layout this code writes; a file in an older layout is migrated when opened.
pub const SCHEMA_VERSION: u64 = 2;
/// "version" -> the layout of the file.
const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");
/// Joins the parts of a key; below every character a name may hold, so keys keep the order
/// of their parts.
const SEPARATOR: &str = "\0";
/// A record's version and reference count, before its JSON.
const HEADER: usize = 16;

type Records<'a> = TableDefinition<'a, &'static str, &'static [u8]>;
/// (partition, sort, key) -> ()
type Entries<'a> = TableDefinition<'a, (&'static str, &'static str, &'static str), ()>;

fn records_table(kind: &RecordKind) -> String {
    format!("record/{}", kind.name)
}

fn index_table(kind: &RecordKind, index: &Index) -> String {
    format!("index/{}/{}", kind.name, index.name)
}

macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Internal(Box::new(redb::Error::from(e)))
            }
        }
        impl From<$t> for CommitError {
            fn from(e: $t) -> Self {
                CommitError::Store(e.into())
            }
        }
    )*};
}
internal_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Internal(Box::new(e))
}

fn encode_key(key: &Key) -> String {
    key.0.join(SEPARATOR)
}

fn decode_key(text: &str) -> Key {
    Key(text.split(SEPARATOR).map(str::to_owned).collect())
}

fn encode_record(version: u64, refs: i64, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&refs.to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn decode_record(bytes: &[u8]) -> Result<Record> {
    if bytes.len() < HEADER {
        return Err(StoreError::Internal(
            "a record shorter than its header".into(),
        ));
    }
    let (header, body) = bytes.split_at(HEADER);
    let (version, refs) = header.split_at(8);
    Ok(Record {
        body: body.to_vec(),
        version: u64::from_le_bytes(version.try_into().expect("8 bytes")),
        refs: i64::from_le_bytes(refs.try_into().expect("8 bytes")),
    })
}

fn body_of(record: &Record) -> Result<Map<String, Value>> {
    serde_json::from_slice(&record.body).map_err(internal)
}

/// The index entries of a record: (index table, partition, sort) for every index it is in.
fn entries(kind: &RecordKind, body: &Map<String, Value>) -> Vec<(String, String, String)> {
    kind.indexes
        .iter()
        .filter_map(|index| {
            let partition = kind.attribute(body, index.partition)?;
            let sort = kind.attribute(body, index.sort)?;
            Some((index_table(kind, index), partition, sort))
        })
        .collect()
}

/// The tables a write transaction has opened, kept open for its later writes.
pub(super) struct Open<'t> {
    txn: &'t WriteTransaction,
    records: HashMap<String, redb::Table<'t, &'static str, &'static [u8]>>,
    entries: HashMap<String, redb::Table<'t, (&'static str, &'static str, &'static str), ()>>,
}

impl<'t> Open<'t> {
    pub(super) fn new(txn: &'t WriteTransaction) -> Self {
        Self {
            txn,
            records: HashMap::new(),
            entries: HashMap::new(),
        }
    }

    fn records(
        &mut self,
        kind: &RecordKind,
    ) -> Result<&mut redb::Table<'t, &'static str, &'static [u8]>> {
        let name = records_table(kind);
        if !self.records.contains_key(&name) {
            let table = self.txn.open_table(Records::new(&name))?;
            self.records.insert(name.clone(), table);
        }
        Ok(self.records.get_mut(&name).expect("just opened"))
    }

    fn entries(
        &mut self,
        name: &str,
    ) -> Result<&mut redb::Table<'t, (&'static str, &'static str, &'static str), ()>> {
        if !self.entries.contains_key(name) {
            let table = self.txn.open_table(Entries::new(name))?;
            self.entries.insert(name.to_owned(), table);
        }
        Ok(self.entries.get_mut(name).expect("just opened"))
    }

    fn read(&mut self, kind: &RecordKind, key: &str) -> Result<Option<Record>> {
        let found = self.records(kind)?.get(key)?;
        found.map(|v| decode_record(v.value())).transpose()
    }
}

/// Applies one write, given the record as it is, without checking expectations.
fn apply(open: &mut Open<'_>, write: &Write, current: Option<Record>) -> Result<()> {
    let kind = write.kind;
    let key = encode_key(&write.key);
    let records = open.records(kind)?;
    let old_entries = match &current {
        Some(record) if !kind.indexes.is_empty() => entries(kind, &body_of(record)?),
        _ => Vec::new(),
    };
    let new_entries = match &write.op {
        Op::Put { body, refs } => {
            let version = body.get("version").and_then(Value::as_u64).unwrap_or(0);
            let json = serde_json::to_vec(body).map_err(internal)?;
            records.insert(
                key.as_str(),
                encode_record(version, *refs, &json).as_slice(),
            )?;
            entries(kind, body)
        }
        Op::Delete => {
            records.remove(key.as_str())?;
            Vec::new()
        }
        Op::Adjust(delta) => {
            let (version, refs, body) = match &current {
                Some(r) => (r.version, r.refs + delta, r.body.as_slice()),
                None => (0, *delta, b"{}".as_slice()),
            };
            records.insert(key.as_str(), encode_record(version, refs, body).as_slice())?;
            return Ok(());
        }
    };
    for (table, partition, sort) in old_entries {
        let index = open.entries(&table)?;
        index.remove((partition.as_str(), sort.as_str(), key.as_str()))?;
    }
    for (table, partition, sort) in new_entries {
        let index = open.entries(&table)?;
        index.insert((partition.as_str(), sort.as_str(), key.as_str()), ())?;
    }
    Ok(())
}

/// Whether a record's fields have the filtered values.
fn matches(record: &Record, filters: &[(&'static str, String)]) -> Result<bool> {
    if filters.is_empty() {
        return Ok(true);
    }
    let body = body_of(record)?;
    Ok(filters
        .iter()
        .all(|(field, value)| body.get(*field).and_then(Value::as_str) == Some(value.as_str())))
}

/// redb's page cache (its default is 1 GiB): enough for the classifier's records; pages past
/// it are read from the operating system's cache, so memory stays flat as the file grows.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

pub struct Embedded {
    db: Arc<Database>,
}

impl Embedded {
    /// Opens (or creates) the store file in `dir`, creating the directory if needed, and
    /// migrates a file of an older layout in one transaction.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(internal)?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(FILE_NAME))?;
        let txn = db.begin_write()?;
        migrate::upgrade(&txn)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The layout version recorded in the file.
    pub fn schema_version(&self) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SCHEMA)?;
        Ok(table.get("version")?.map(|v| v.value()))
    }

    fn get_in(txn: &redb::ReadTransaction, kind: &RecordKind, key: &Key) -> Result<Option<Record>> {
        let table = txn.open_table(Records::new(&records_table(kind)))?;
        let found = table.get(encode_key(key).as_str())?;
        found.map(|v| decode_record(v.value())).transpose()
    }
}

fn commit_now(db: &Database, writes: &[Write]) -> Result<(), CommitError> {
    let txn = db.begin_write()?;
    let mut open = Open::new(&txn);
    for (i, write) in writes.iter().enumerate() {
        let current = open.read(write.kind, &encode_key(&write.key))?;
        if !write.expect.holds(current.as_ref()) {
            drop(open);
            txn.abort()?;
            return Err(CommitError::Condition(i));
        }
        apply(&mut open, write, current)?;
    }
    drop(open);
    txn.commit()?;
    Ok(())
}

#[async_trait]
impl Engine for Embedded {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ping(&self) -> Result<()> {
        self.db.begin_read()?.open_table(SCHEMA)?;
        Ok(())
    }

    async fn get(&self, keys: &[(&'static RecordKind, Key)]) -> Result<Vec<Option<Record>>> {
        let txn = self.db.begin_read()?;
        keys.iter()
            .map(|(kind, key)| Self::get_in(&txn, kind, key))
            .collect()
    }

    async fn query(&self, query: &Query<'_>) -> Result<Batch> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(Entries::new(&index_table(query.kind, query.index)))?;
        let records = txn.open_table(Records::new(&records_table(query.kind)))?;
        let p = query.partition;
        let after = query
            .after
            .as_ref()
            .map(|a| (a.sort.as_str(), encode_key(&a.key)));
        let lower = match &after {
            Some((sort, key)) => Bound::Excluded((p, *sort, key.as_str())),
            None => Bound::Included((p, query.from.unwrap_or(""), "")),
        };
        // The smallest strings above the partition, or above the last sort value wanted.
        let (past_p, past_to) = (
            format!("{p}{SEPARATOR}"),
            query.to.map(|t| format!("{t}{SEPARATOR}")),
        );
        let upper = match &past_to {
            Some(to) => Bound::Excluded((p, to.as_str(), "")),
            None => Bound::Excluded((past_p.as_str(), "", "")),
        };
        let mut batch = Batch::default();
        for entry in index.range::<(&str, &str, &str)>((lower, upper))? {
            let entry = entry?.0;
            let (_, sort, key) = entry.value();
            let Some(bytes) = records.get(key)? else {
                continue;
            };
            let record = decode_record(bytes.value())?;
            if !matches(&record, query.filters)? {
                continue;
            }
            batch.records.push(record);
            if batch.records.len() >= query.limit {
                batch.more = Some(Position {
                    sort: sort.to_owned(),
                    key: decode_key(key),
                });
                break;
            }
        }
        Ok(batch)
    }

    async fn scan(&self, kind: &'static RecordKind, _after: Option<Position>) -> Result<Batch> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(Records::new(&records_table(kind)))?;
        let records = table
            .iter()?
            .map(|entry| decode_record(entry?.1.value()))
            .collect::<Result<_, _>>()?;
        Ok(Batch {
            records,
            more: None,
        })
    }

    async fn commit(&self, writes: &[Write]) -> Result<(), CommitError> {
        let db = self.db.clone();
        let writes = writes.to_vec();
        tokio::task::spawn_blocking(move || commit_now(&db, &writes))
            .await
            .map_err(|e| CommitError::Store(internal(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_order_of_their_parts() {
        let a = encode_key(&Key::two("prod", "eu"));
        let b = encode_key(&Key::two("prod_x", "eu"));
        let c = encode_key(&Key::two("prod", "us"));
        assert!(a < c && c < b, "{a:?} {b:?} {c:?}");
        assert_eq!(decode_key(&a), Key::two("prod", "eu"));
    }

    #[test]
    fn records_round_trip_with_their_header() {
        let record = decode_record(&encode_record(7, -2, b"{\"a\":1}")).unwrap();
        assert_eq!((record.version, record.refs), (7, -2));
        assert_eq!(record.body, b"{\"a\":1}");
        assert!(decode_record(b"short").is_err());
    }
}
