//! What a storage engine must do, and nothing more: read records, list them by an index, and
//! commit a set of conditional writes atomically, saying which condition failed. Every rule
//! about what the records mean lives above this line, written once for both engines.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::record::Key;
use super::record::{Index, RecordKind};
use super::{Result, StoreError};

/// A record as an engine keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The object as JSON text (a JSON object), exactly as the domain serialised it.
    pub body: Vec<u8>,
    /// The object's `version` (0 for kinds without versions).
    pub version: u64,
    /// How many records refer to this one (kept by the store in every commit).
    pub refs: i64,
}

/// What a write requires of the record it touches, checked inside the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Anything,
    Absent,
    Present,
    /// Present at exactly this version and reference count.
    At {
        version: u64,
        refs: i64,
    },
    /// Its reference count is this (an absent record counts zero).
    Refs(i64),
}

impl Expect {
    /// Whether the record as it is (`None`: absent) meets the expectation.
    pub fn holds(self, current: Option<&Record>) -> bool {
        match self {
            Expect::Anything => true,
            Expect::Absent => current.is_none(),
            Expect::Present => current.is_some(),
            Expect::At { version, refs } => {
                current.is_some_and(|r| r.version == version && r.refs == refs)
            }
            Expect::Refs(refs) => current.map_or(0, |r| r.refs) == refs,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Store this object (a JSON object) with this reference count.
    Put {
        body: Map<String, Value>,
        refs: i64,
    },
    Delete,
    /// Add this to the reference count (zero: only check the expectation). An absent record
    /// is created holding only its count.
    Adjust(i64),
}

/// One conditional write of a commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub kind: &'static RecordKind,
    pub key: Key,
    pub op: Op,
    pub expect: Expect,
}

impl Write {
    pub fn new(kind: &'static RecordKind, key: Key, op: Op, expect: Expect) -> Self {
        Self {
            kind,
            key,
            op,
            expect,
        }
    }
}

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError {
    /// The expectation of the write at this index did not hold; nothing was written.
    Condition(usize),
    /// Another commit touched the same records at the same moment; nothing was written.
    Conflict,
    Store(StoreError),
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> Self {
        CommitError::Store(e)
    }
}

/// A position in an index: just after the record with this sort value and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub sort: String,
    pub key: Key,
}

/// Records of one kind, in an index's order: those whose partition attribute is
/// `partition`, whose sort attribute is within `from..=to`, and whose `filters` fields have
/// exactly these values.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub kind: &'static RecordKind,
    pub index: &'static Index,
    pub partition: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub filters: &'a [(&'static str, String)],
    pub after: Option<Position>,
    /// At most this many records.
    pub limit: usize,
}

/// Some of what a query or scan found, and where to go on if there may be more. An engine
/// may answer fewer records than asked for and still have more.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    pub more: Option<Position>,
}

#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs, metrics and cursors, e.g. `embedded`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the engine can serve reads and writes.
    async fn ping(&self) -> Result<()>;

    /// The records under these keys, in order, as they all were at one instant after every
    /// commit that finished before the call.
    async fn get(&self, keys: &[(&'static RecordKind, Key)]) -> Result<Vec<Option<Record>>>;

    /// The records of one kind under these keys, in order, each read after every commit that
    /// finished before the call (not one snapshot; any number of keys, and large records).
    async fn get_many(
        &self,
        kind: &'static RecordKind,
        keys: &[Key],
    ) -> Result<Vec<Option<Record>>> {
        let keys: Vec<_> = keys.iter().map(|k| (kind, k.clone())).collect();
        self.get(&keys).await
    }

    /// One batch of an index listing. Listings may lag commits by moments on DynamoDB.
    async fn query(&self, query: &Query<'_>) -> Result<Batch>;

    /// One batch of every record of a kind, in no particular order, each read after every
    /// commit that finished before the call (not one snapshot: callers check a counter).
    async fn scan(&self, kind: &'static RecordKind, after: Option<Position>) -> Result<Batch>;

    /// The most writes one commit may hold, if the engine has a limit.
    fn max_writes(&self) -> Option<usize> {
        None
    }

    /// Applies every write or none: all expectations are checked in the same atomic step.
    async fn commit(&self, writes: &[Write]) -> Result<(), CommitError>;
}
