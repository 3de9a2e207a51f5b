//! The embedded engine: one redb file, no network. A table of records per kind and a table
//! per index, all written in the same write transaction, so a commit's expectations and its
//! writes succeed or fail together. Reads run on the caller's thread: a redb read is a few
//! page lookups; reads by key share one read transaction until the next commit
//! ([`Snapshot`]); commits (which sync the file) run on the blocking pool.

mod layout;

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

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
pub const SCHEMA_VERSION: u64 = 3;
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

/// A scan's batch: at most this many records, and stops past this many bytes (as DynamoDB
/// stops at 1 MB), so that a scan holds a page of the fleet, not the fleet.
const SCAN_RECORDS: usize = 500;
const SCAN_BYTES: usize = 1024 * 1024;

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

/// A key as the text redb keeps; a key of one part is that part, not a copy of it.
fn encode_key(key: &Key) -> Cow<'_, str> {
    match key.0.as_slice() {
        [one] => Cow::Borrowed(one),
        parts => Cow::Owned(parts.join(SEPARATOR)),
    }
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

/// Makes `dir` (and its parents) if need be, and narrows it to its owner (0700): it holds the
/// store, and on a first start the admin token's secret.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
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
    let key = encode_key(&write.key).into_owned();
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

/// redb's page cache unless set (its own default is 1 GiB): enough for the classifier's
/// records; pages past it are read from the operating system's cache, so memory stays flat
/// as the file grows (`ENC_EMBEDDED_CACHE_MIB`).
pub const CACHE_BYTES: usize = 8 * 1024 * 1024;

pub struct Embedded {
    db: Arc<Database>,
    /// Commits made, counted when each has finished (whatever its outcome).
    commits: Arc<AtomicU64>,
    /// The snapshot reads by key share while nothing is committed.
    snapshot: Arc<Mutex<Option<Arc<Snapshot>>>>,
}

type RecordTable = redb::ReadOnlyTable<&'static str, &'static [u8]>;

/// A read transaction kept from one read to the next while nothing is committed, with the
/// record tables it has opened. Opening a redb table (a lookup in the file's table of tables
/// and a check of its key and value types) costs more than the read by key after it; a
/// fresh transaction per read paid it for every record read.
///
/// Never stale: a commit counts itself only once it has finished, before its caller hears
/// of it, and a snapshot is labelled with the count read before its transaction began. So a
/// snapshot with the current count began after every commit that has been answered.
struct Snapshot {
    commits: u64,
    txn: redb::ReadTransaction,
    /// By the kind's place in `KINDS`.
    records: [OnceLock<RecordTable>; super::KINDS.len()],
}

impl Snapshot {
    fn get(&self, kind: &RecordKind, key: &Key) -> Result<Option<Record>> {
        // Every kind is in KINDS: its tables are made from that list when the file opens.
        let table = super::KINDS
            .iter()
            .position(|k| std::ptr::eq(*k, kind))
            .map(|i| &self.records[i])
            .ok_or_else(|| StoreError::Internal(format!("{} is not in KINDS", kind.name).into()))?;
        if table.get().is_none() {
            let _ = table.set(self.txn.open_table(Records::new(&records_table(kind)))?);
        }
        let found = table.get().expect("just opened").get(&*encode_key(key))?;
        found.map(|v| decode_record(v.value())).transpose()
    }
}

impl Embedded {
    /// Opens (or creates) the store file in `dir`, creating the directory if needed, and
    /// migrates a file of an older layout in one transaction.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, CACHE_BYTES)
    }

    /// [`Embedded::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        private_dir(dir).map_err(internal)?;
        let file = dir.join(FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&file)?;
        // The file holds every object and token hash: its owner's only, as the directory.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .map_err(internal)?;
        let txn = db.begin_write()?;
        layout::upgrade(&txn)?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            commits: Arc::default(),
            snapshot: Arc::default(),
        })
    }

    /// The layout version recorded in the file.
    pub fn schema_version(&self) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SCHEMA)?;
        Ok(table.get("version")?.map(|v| v.value()))
    }

    /// The snapshot of the last commit: the one kept, or a new one after a commit.
    fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let commits = self.commits.load(Ordering::Acquire);
        let mut kept = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(snapshot) = kept.as_ref().filter(|s| s.commits == commits) {
            return Ok(snapshot.clone());
        }
        let snapshot = Arc::new(Snapshot {
            commits,
            txn: self.db.begin_read()?,
            records: std::array::from_fn(|_| OnceLock::new()),
        });
        *kept = Some(snapshot.clone());
        Ok(snapshot)
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
        let snapshot = self.snapshot()?;
        keys.iter()
            .map(|(kind, key)| snapshot.get(kind, key))
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
            Some((sort, key)) => Bound::Excluded((p, *sort, key.as_ref())),
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

    async fn scan(&self, kind: &'static RecordKind, after: Option<Position>) -> Result<Batch> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(Records::new(&records_table(kind)))?;
        let after = after.map(|p| encode_key(&p.key).into_owned());
        let range = match &after {
            Some(key) => table.range::<&str>((Bound::Excluded(key.as_str()), Bound::Unbounded))?,
            None => table.range::<&str>(..)?,
        };
        let (mut records, mut last, mut bytes) = (Vec::new(), None, 0);
        for entry in range {
            let (key, value) = entry?;
            if records.len() == SCAN_RECORDS || bytes >= SCAN_BYTES {
                return Ok(Batch {
                    records,
                    more: last.map(|key: String| Position {
                        sort: String::new(),
                        key: decode_key(&key),
                    }),
                });
            }
            bytes += value.value().len();
            records.push(decode_record(value.value())?);
            last = Some(key.value().to_owned());
        }
        Ok(Batch {
            records,
            more: None,
        })
    }

    async fn commit(&self, writes: &[Write]) -> Result<(), CommitError> {
        let (db, commits, snapshot) =
            (self.db.clone(), self.commits.clone(), self.snapshot.clone());
        let writes = writes.to_vec();
        tokio::task::spawn_blocking(move || {
            let result = commit_now(&db, &writes);
            commits.fetch_add(1, Ordering::Release);
            // Not needed for the next read to be right (the count is), but a snapshot kept
            // through a run of writes would keep redb from reusing the pages they free.
            drop(
                snapshot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
            result
        })
        .await
        .map_err(|e| CommitError::Store(internal(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::super::engine::Expect;
    use super::*;

    #[test]
    fn keys_keep_the_order_of_their_parts() {
        let a = encode_key(&Key::two("prod", "eu")).into_owned();
        let b = encode_key(&Key::two("prod_x", "eu")).into_owned();
        let c = encode_key(&Key::two("prod", "us")).into_owned();
        assert!(a < c && c < b, "{a:?} {b:?} {c:?}");
        assert_eq!(decode_key(&a), Key::two("prod", "eu"));
    }

    fn put(version: u64, expect: Expect) -> Write {
        let body = serde_json::json!({ "name": "g", "version": version });
        let Value::Object(body) = body else {
            unreachable!()
        };
        Write::new(
            &crate::store::enc::GENERATION,
            Key::one("g"),
            Op::Put { body, refs: 0 },
            expect,
        )
    }

    async fn version(store: &Embedded) -> Option<u64> {
        let keys = [(&crate::store::enc::GENERATION, Key::one("g"))];
        let mut found = store.get(&keys).await.unwrap();
        found.pop().unwrap().map(|r| r.version)
    }

    #[tokio::test]
    async fn reads_share_a_snapshot_until_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        assert_eq!(version(&store).await, None);
        store.commit(&[put(1, Expect::Absent)]).await.unwrap();
        assert_eq!(version(&store).await, Some(1));
        let kept = store.snapshot().unwrap();
        assert!(Arc::ptr_eq(&kept, &store.snapshot().unwrap()));
        store.commit(&[put(2, Expect::Present)]).await.unwrap();
        assert!(
            store.snapshot.lock().unwrap().is_none(),
            "let go at the commit"
        );
        assert!(!Arc::ptr_eq(&kept, &store.snapshot().unwrap()));
        assert_eq!(version(&store).await, Some(2));
        // A refused commit changes nothing, and what is read stays right.
        let refused = store.commit(&[put(3, Expect::Absent)]).await;
        assert!(matches!(refused, Err(CommitError::Condition(0))));
        assert_eq!(version(&store).await, Some(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_after_a_commit_sees_it_while_others_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Embedded::open(dir.path()).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, stop) = (store.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        version(&store).await;
                        reads += 1;
                        tokio::task::yield_now().await;
                    }
                    reads
                })
            })
            .collect();
        for v in 1..=200 {
            let expect = if v == 1 {
                Expect::Absent
            } else {
                Expect::Present
            };
            store.commit(&[put(v, expect)]).await.unwrap();
            assert_eq!(version(&store).await, Some(v), "read after commit {v}");
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.await.unwrap() > 0);
        }
    }

    #[test]
    fn records_round_trip_with_their_header() {
        let record = decode_record(&encode_record(7, -2, b"{\"a\":1}")).unwrap();
        assert_eq!((record.version, record.refs), (7, -2));
        assert_eq!(record.body, b"{\"a\":1}");
        assert!(decode_record(b"short").is_err());
    }
}
