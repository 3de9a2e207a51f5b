//! Change history: every change of a kind with `history` appends a revision in the same
//! commit as the change itself (`db::Db::write`), so a refused write leaves none and a
//! successful one exactly one. Revisions are never changed; they go only when the retention
//! runs out (DynamoDB's TTL on `expires_at`, and `Store::prune_history` on every engine).
//!
//! Each object has a head beside its revisions: the last version number it was given,
//! deletions included, so versions keep counting when an object is made again and a version
//! names one revision forever. Listings are newest first: the sort attribute `order` is the
//! time and version subtracted from their largest values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::change::Version;
use super::change::{Edit, Guard, OnFail, Step};
use super::engine::{Expect, Key, Op, Write};
use super::record::{ITEM_TYPE, Index, RecordKind, to_body};
use super::{Kind, Page, PageRequest, Result, Store, StoreError};
use crate::domain::{Operation, Revision};

pub static REVISION: RecordKind = RecordKind {
    indexes: &[
        Index::new("feed", ITEM_TYPE, "order"),
        Index::new("by_subject", "subject", "order"),
        Index::new("by_actor", "actor", "order"),
        Index::new("by_kind", "kind", "order"),
    ],
    json: &["object", "patch", "forced_conflicts"],
    ..RecordKind::new(Kind::Revision, "revision", "history", &["subject", "seq"])
};

/// An object's last version number (the record's count), beside its revisions.
pub static HEAD: RecordKind = in_history("history_head", &[]);

/// A plan being applied over several commits (DynamoDB), kept so that an interrupted apply
/// can be resumed: what each object was planned to be at and to become.
pub static PLAN: RecordKind = in_history("plan", &["entries"]);

/// A record kind of its own kept in the history table, beside the revisions.
const fn in_history(name: &'static str, json: &'static [&'static str]) -> RecordKind {
    let kind = RecordKind::new(Kind::Revision, name, "history", &["subject", "seq"]);
    RecordKind { json, ..kind }
}

/// Entries per plan record (each well under a kilobyte).
const PLAN_CHUNK: usize = 1000;
/// How long a plan being applied is kept.
const PLAN_KEPT_DAYS: i64 = 30;

#[derive(Debug, Serialize, Deserialize)]
struct PlanChunk {
    subject: String,
    seq: String,
    expires_at: i64,
    entries: Vec<Value>,
}

/// The attribute holding when a revision may go (DynamoDB's TTL attribute).
pub const EXPIRES_AT: &str = "expires_at";

/// The largest revision kept with its patch: the object and its patch must fit one DynamoDB
/// item (400 KB) with the revision's other attributes.
const MAX_KEPT_BYTES: usize = 380 * 1024;
/// Larger than any time in milliseconds since 1970 that enc will see.
const LAST_MS: i64 = 9_999_999_999_999_999;

/// A revision as stored: where it is kept and listed, around what it shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    subject: String,
    seq: String,
    order: String,
    /// When the retention lets it go, in seconds since 1970 (DynamoDB's TTL attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(flatten)]
    revision: Revision,
}

fn subject(kind: &RecordKind, key: &Key) -> String {
    format!("{}/{key}", kind.name)
}

fn seq(version: u64) -> String {
    format!("{version:020}")
}

pub(super) fn head_key(kind: &RecordKind, key: &Key) -> Key {
    Key::two(subject(kind, key), "head")
}

fn revision_key(kind: &RecordKind, key: &Key, version: u64) -> Key {
    Key::two(subject(kind, key), seq(version))
}

/// The `order` of revisions made at `at`: lower is newer. The range from
/// `order_at(t)` up holds every revision made at `t` or before.
fn order_at(at: &DateTime<Utc>) -> String {
    // Nothing was recorded before 1970: an earlier instant counts as 1970.
    format!("{:016}.", LAST_MS - at.timestamp_millis().clamp(0, LAST_MS))
}

fn order(at: &DateTime<Utc>, version: u64) -> String {
    format!("{}{:020}", order_at(at), u64::MAX - version)
}

/// What a change is, for its revision.
pub(super) struct Made<'a> {
    pub kind: &'static RecordKind,
    pub key: &'a Key,
    pub version: u64,
    pub operation: Operation,
    pub actor: &'a str,
    pub request_id: Option<&'a str>,
    pub at: DateTime<Utc>,
    pub restored_from: Option<u64>,
    pub conflicts: Option<&'a Value>,
    pub plan_id: Option<&'a str>,
    /// The last version number given before this change.
    pub head: i64,
    pub before: Option<&'a Map<String, Value>>,
    pub after: Option<&'a Map<String, Value>>,
    pub retention: Option<chrono::Duration>,
}

/// The object as its revisions keep it: without the fields the kind keeps secret.
fn shown(kind: &RecordKind, body: Option<&Map<String, Value>>) -> Value {
    let omit = kind.history.unwrap_or_default();
    match body {
        Some(body) => Value::Object(
            body.iter()
                .filter(|(k, _)| !omit.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => Value::Null,
    }
}

/// The writes that record a change: the revision, and the head moved to its version, both
/// conditional on nothing else having been recorded for the object since it was read.
pub(super) fn record(made: Made<'_>) -> Result<Vec<Step>> {
    let (before, after) = (shown(made.kind, made.before), shown(made.kind, made.after));
    let patch = serde_json::to_value(json_patch::diff(&before, &after))
        .map_err(|e| StoreError::Internal(Box::new(e)))?;
    let size = |v: &Value| serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
    let patch = (size(&after) + size(&patch) <= MAX_KEPT_BYTES).then_some(patch);
    let entry = Entry {
        subject: subject(made.kind, made.key),
        seq: seq(made.version),
        order: order(&made.at, made.version),
        expires_at: made.retention.map(|r| (made.at + r).timestamp()),
        revision: Revision {
            kind: made.kind.name.to_owned(),
            key: made.key.to_string(),
            version: made.version,
            operation: made.operation,
            actor: made.actor.to_owned(),
            at: made.at,
            request_id: made.request_id.map(str::to_owned),
            restored_from: made.restored_from,
            forced_conflicts: made.conflicts.cloned(),
            plan_id: made.plan_id.map(str::to_owned),
            object: (!after.is_null()).then_some(after),
            patch,
        },
    };
    let key = revision_key(made.kind, made.key, made.version);
    let body = to_body(&entry)?;
    let put = Write::new(&REVISION, key, Op::Put { body, refs: 0 }, Expect::Absent);
    let moved = made.version as i64 - made.head;
    let head = Write::new(
        &HEAD,
        head_key(made.kind, made.key),
        Op::Adjust(moved),
        Expect::Refs(made.head),
    );
    Ok(vec![(put, OnFail::Changed), (head, OnFail::Changed)])
}

/// Which changes to list: all filters must hold; times are inclusive.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub actor: Option<String>,
    pub kind: Option<&'static RecordKind>,
}

/// The kinds whose changes are recorded, by name.
pub fn kind_named(name: &str) -> Option<&'static RecordKind> {
    super::KINDS
        .iter()
        .copied()
        .find(|k| k.history.is_some() && k.name == name)
}

fn entries(page: Page<Entry>) -> Page<Revision> {
    Page {
        items: page.items.into_iter().map(|e| e.revision).collect(),
        next_cursor: page.next_cursor,
    }
}

impl Store {
    /// One object's revisions, newest first.
    pub async fn history(
        &self,
        kind: &'static RecordKind,
        key: &Key,
        page: &PageRequest,
    ) -> Result<Page<Revision>> {
        let filters = [("subject", subject(kind, key))];
        let found = self
            .db
            .list(&REVISION, &filters, (None, None), page)
            .await?;
        Ok(entries(found))
    }

    /// Every recorded change, newest first.
    pub async fn changes(
        &self,
        filter: &ChangeFilter,
        page: &PageRequest,
    ) -> Result<Page<Revision>> {
        let mut filters = Vec::new();
        if let Some(actor) = &filter.actor {
            filters.push(("actor", actor.clone()));
        }
        if let Some(kind) = filter.kind {
            filters.push(("kind", kind.name.to_owned()));
        }
        let from = filter.until.as_ref().map(order_at);
        let to = filter.since.as_ref().map(|t| format!("{}~", order_at(t)));
        let range = (from.as_deref(), to.as_deref());
        let found = self.db.list(&REVISION, &filters, range, page).await?;
        Ok(entries(found))
    }

    /// The revision that made `version` of the object.
    pub async fn revision(
        &self,
        kind: &'static RecordKind,
        key: &Key,
        version: u64,
    ) -> Result<Revision> {
        let at = revision_key(kind, key, version);
        match self.db.get::<Entry>(&REVISION, &at).await {
            Ok(entry) => Ok(entry.revision),
            Err(StoreError::NotFound { .. }) => Err(StoreError::NotFound {
                kind: Kind::Revision,
                key: format!("{} of {} {key}", version, kind.kind),
            }),
            Err(e) => Err(e),
        }
    }

    /// The object's last revision made at `at` or before, if its history reaches back so far.
    pub async fn revision_at(
        &self,
        kind: &'static RecordKind,
        key: &Key,
        at: &DateTime<Utc>,
    ) -> Result<Option<Revision>> {
        let filters = [("subject", subject(kind, key))];
        let from = order_at(at);
        let page = PageRequest {
            limit: 1,
            cursor: None,
        };
        let found = self
            .db
            .list::<Entry>(&REVISION, &filters, (Some(&from), None), &page);
        Ok(found.await?.items.pop().map(|e| e.revision))
    }

    /// Writes the content of `version` again as the object's next version, honouring
    /// `If-Match` (a deleted object is at the version of its deletion), and made again if it
    /// was deleted: its references must exist.
    pub(super) async fn restore<T>(
        &self,
        kind: &'static RecordKind,
        key: &Key,
        version: u64,
        expected: Option<u64>,
        by: Edit<'_>,
        guard: &dyn Guard<T>,
    ) -> Result<crate::domain::Stored<T>>
    where
        T: Serialize + serde::de::DeserializeOwned + Clone + Sync,
    {
        let revision = self.revision(kind, key, version).await?;
        let Some(object) = revision.object else {
            return Err(StoreError::NothingToRestore {
                kind: kind.kind,
                key: key.to_string(),
                version,
            });
        };
        let old: crate::domain::Stored<T> =
            serde_json::from_value(object).map_err(|e| StoreError::Internal(Box::new(e)))?;
        let by = Edit {
            restored_from: Some(version),
            ..by
        };
        match self
            .db
            .put(kind, old.item.clone(), Version::Next(expected), by, guard)
            .await
        {
            Err(StoreError::NotFound { .. }) => {
                let actual = self.last_version(kind, key).await?;
                if let Some(expected) = expected.filter(|e| *e != actual) {
                    return Err(StoreError::VersionMismatch {
                        kind: kind.kind,
                        key: key.to_string(),
                        expected,
                        actual,
                    });
                }
                self.db.put(kind, old.item, Version::First, by, guard).await
            }
            other => other,
        }
    }

    /// Keeps a plan's entries while it is applied over several commits.
    pub async fn keep_plan(&self, id: &str, entries: &[Value]) -> Result<()> {
        let expires_at =
            (crate::domain::now() + chrono::Duration::days(PLAN_KEPT_DAYS)).timestamp();
        for (i, chunk) in entries.chunks(PLAN_CHUNK).enumerate() {
            let record = PlanChunk {
                subject: format!("plan/{id}"),
                seq: seq(i as u64),
                expires_at,
                entries: chunk.to_vec(),
            };
            let key = Key::two(record.subject.clone(), record.seq.clone());
            let body = to_body(&record)?;
            let write = Write::new(&PLAN, key, Op::Put { body, refs: 0 }, Expect::Anything);
            self.db.commit(vec![(write, OnFail::Changed)]).await?;
        }
        Ok(())
    }

    /// The entries of a plan kept by `keep_plan`, if it was.
    pub async fn kept_plan(&self, id: &str) -> Result<Option<Vec<Value>>> {
        let mut entries = Vec::new();
        for i in 0.. {
            let key = Key::two(format!("plan/{id}"), seq(i));
            match self.db.get::<PlanChunk>(&PLAN, &key).await {
                Ok(chunk) => entries.extend(chunk.entries),
                Err(StoreError::NotFound { .. }) if i == 0 => return Ok(None),
                Err(StoreError::NotFound { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(Some(entries))
    }

    /// The last version number an object was given, its deletion included (0: never made).
    pub async fn last_version(&self, kind: &'static RecordKind, key: &Key) -> Result<u64> {
        let head = self.db.count(&HEAD, head_key(kind, key)).await?;
        Ok(u64::try_from(head).unwrap_or(0))
    }

    /// Removes revisions made before `before`, a few at a time; answers how many went.
    pub async fn prune_history(&self, before: &DateTime<Utc>) -> Result<usize> {
        let from = order_at(before);
        let mut removed = 0;
        // DynamoDB's indexes may list a removed revision for a moment more: a bounded run.
        for _ in 0..400 {
            let page = PageRequest {
                limit: 25,
                cursor: None,
            };
            let found = self
                .db
                .list::<Entry>(&REVISION, &[], (Some(&from), None), &page);
            let found = found.await?.items;
            if found.is_empty() {
                break;
            }
            let writes: Vec<Step> = found
                .iter()
                .map(|e| {
                    let key = Key::two(e.subject.clone(), e.seq.clone());
                    let write = Write::new(&REVISION, key, Op::Delete, Expect::Anything);
                    (write, OnFail::Changed)
                })
                .collect();
            removed += writes.len();
            self.db.commit(writes).await?;
        }
        Ok(removed)
    }
}
