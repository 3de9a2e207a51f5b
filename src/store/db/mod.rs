//! The storage rules, written once over any engine (`Db`): versions and `If-Match`,
//! reference counts, retrying a write that lost a race, commits within the engine's limits;
//! reads and listings in `reads.rs`.

mod reads;

pub use reads::MAX_REFERRERS;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::change::{Edit, Guard, OnFail, Step, Version, decode, merge, retry};
use super::engine::{CommitError, Engine, Expect, Key, Op, Record, Write};
use super::history::{self, HEAD, Made, head_key};
use super::record::{RecordKind, to_body};
use super::{Kind, Result, StoreError};
use crate::domain::{Meta, Operation, Stored, now};

/// Refuses a write whose `If-Match` version is not the stored one.
fn check_version(kind: Kind, key: &Key, expected: Option<u64>, actual: u64) -> Result<()> {
    match expected {
        Some(expected) if expected != actual => Err(StoreError::VersionMismatch {
            kind,
            key: key.to_string(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// The key of an object about to be stored.
fn key_of<T: Serialize>(kind: &RecordKind, object: &T) -> Result<Key> {
    kind.key_of(&to_body(object)?)
        .ok_or_else(|| StoreError::Internal(format!("a {} without its key", kind.name).into()))
}

/// The reference-count changes from `before` to `after` (either absent), one per record
/// named; every record named must exist, and a newly named one missing is refused.
pub(super) fn references(
    kind: &RecordKind,
    before: Option<&Map<String, Value>>,
    after: Option<&Map<String, Value>>,
) -> Vec<Step> {
    let mut changes: BTreeMap<(&str, Key), (&'static RecordKind, i64, OnFail)> = BTreeMap::new();
    let named = |body: Option<&Map<String, Value>>| body.map(|b| kind.referenced_keys(b));
    for (delta, body) in [(-1, before), (1, after)] {
        for (reference, key) in named(body).unwrap_or_default() {
            let target = reference.target;
            let change =
                changes
                    .entry((target.name, key.clone()))
                    .or_insert((target, 0, OnFail::Changed));
            change.1 += delta;
            if delta > 0 {
                let (field, kind, key) = (reference.field, target.kind, key.to_string());
                change.2 = OnFail::Missing { field, kind, key };
            }
        }
    }
    changes
        .into_iter()
        .map(|((_, key), (kind, delta, on_fail))| {
            let op = Op::Adjust(delta);
            let write = Write::new(kind, key, op, Expect::Present);
            (write, on_fail)
        })
        .collect()
}

/// Refuses an API write to an object a tree owns, unless forced.
fn check_owner(kind: Kind, key: &Key, meta: &Meta, by: &Edit<'_>) -> Result<()> {
    match &meta.managed_by {
        Some(owner) if by.apply.is_none() && !by.force => Err(StoreError::Managed {
            kind,
            key: key.to_string(),
            owner: owner.clone(),
        }),
        _ => Ok(()),
    }
}

/// What a write does to the object under its key; `Option<u64>` is `If-Match`.
enum Change<'a, T> {
    Create(&'a T),
    Replace(&'a T, Option<u64>),
    Delete(Option<u64>),
}

/// What the failed expectation of step `i` means: `Ok(false)` to try again, or the refusal.
fn refusal(steps: &[Step], i: usize) -> Result<bool> {
    let Some((write, on_fail)) = steps.get(i) else {
        return Err(StoreError::Internal(format!("no write {i} to fail").into()));
    };
    match on_fail {
        OnFail::Changed => Ok(false),
        OnFail::Moved => Err(StoreError::TreeMoved),
        OnFail::Exists => Err(StoreError::AlreadyExists {
            kind: write.kind.kind,
            key: write.key.to_string(),
        }),
        OnFail::Missing { field, kind, key } => Err(StoreError::MissingReference {
            field,
            kind: *kind,
            key: key.clone(),
        }),
    }
}

/// The rules over one engine.
pub(super) struct Db {
    engine: Arc<dyn Engine>,
    /// Every kind, to find who refers to a record.
    kinds: &'static [&'static RecordKind],
    /// How long revisions are kept; `None`: forever.
    pub(super) retention: Option<chrono::Duration>,
}

impl Db {
    pub(super) fn new(engine: Arc<dyn Engine>, kinds: &'static [&'static RecordKind]) -> Self {
        Self {
            engine,
            kinds,
            retention: None,
        }
    }

    pub(super) fn engine(&self) -> &dyn Engine {
        &*self.engine
    }

    pub(super) fn backend(&self) -> &'static str {
        self.engine.backend()
    }

    /// Refuses a commit larger than the engine takes, before it is sent.
    fn within_limit(&self, steps: &[Step]) -> Result<()> {
        match self.engine.max_writes() {
            Some(max) if steps.len() > max => Err(StoreError::TooManyWrites {
                writes: steps.len(),
                max,
            }),
            _ => Ok(()),
        }
    }

    /// Commits: `Ok(true)` when done, `Ok(false)` when it should be tried again.
    pub(super) async fn commit(&self, steps: Vec<Step>) -> Result<bool> {
        self.within_limit(&steps)?;
        let writes: Vec<Write> = steps.iter().map(|(w, _)| w.clone()).collect();
        match self.engine.commit(&writes).await {
            Ok(()) => Ok(true),
            Err(CommitError::Conflict) => Ok(false),
            Err(CommitError::Store(e)) => Err(e),
            Err(CommitError::Condition(i)) => refusal(&steps, i),
        }
    }

    /// What `commit` would answer, storing nothing: every expectation checked against the
    /// records as they are now (a dry run).
    pub(super) async fn check(&self, steps: Vec<Step>) -> Result<bool> {
        self.within_limit(&steps)?;
        let keys: Vec<_> = steps.iter().map(|(w, _)| (w.kind, w.key.clone())).collect();
        let found = self.engine.get(&keys).await?;
        for (i, ((write, _), record)) in steps.iter().zip(&found).enumerate() {
            if !write.expect.holds(record.as_ref()) {
                return refusal(&steps, i);
            }
        }
        Ok(true)
    }

    /// Creates, replaces or deletes the object under `key`, in one commit with the reference
    /// counts it changes, the guard's writes and its revision, all conditional on what was
    /// read; tried again if anything changed in between.
    async fn write<T>(
        &self,
        kind: &'static RecordKind,
        key: &Key,
        change: Change<'_, T>,
        by: Edit<'_>,
        guard: &dyn Guard<T>,
    ) -> Result<Option<Stored<T>>>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
    {
        let (create, expected, after) = match change {
            Change::Create(item) => (true, None, Some(item)),
            Change::Replace(item, expected) => (false, expected, Some(item)),
            Change::Delete(expected) => (false, expected, None),
        };
        let recorded = kind.history.is_some() && !by.quiet;
        // A create first takes the object to be new (no head: version 1), so it costs one
        // commit; made again after a deletion, that commit fails on the head, and the next
        // attempt reads it.
        let tries = &std::sync::atomic::AtomicU32::new(0);
        retry(|| async move {
            let mut keys = Vec::new();
            if !create {
                keys.push((kind, key.clone()));
            }
            let tried = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let read_head = recorded && (!create || tried > 0);
            if read_head {
                keys.push((&HEAD, head_key(kind, key)));
            }
            let mut found = match keys.is_empty() {
                true => Vec::new(),
                false => self.engine.get(&keys).await?,
            }
            .into_iter();
            let current: Option<(Stored<T>, Record)> = match create {
                true => None,
                false => match found.next().flatten() {
                    Some(record) => Some((decode(&record)?, record)),
                    None => {
                        let key = key.to_string();
                        return Err(StoreError::NotFound {
                            kind: kind.kind,
                            key,
                        });
                    }
                },
            };
            let head = found.next().flatten().map_or(0, |r| r.refs);
            let (meta, expect, refs) = match &current {
                None => {
                    let mut meta = Meta::first(by.actor);
                    meta.version = u64::try_from(head).unwrap_or(0) + 1;
                    (meta, Expect::Absent, 0)
                }
                Some((stored, record)) => {
                    check_version(kind.kind, key, expected, stored.meta.version)?;
                    check_owner(kind.kind, key, &stored.meta, &by)?;
                    if after.is_none() && record.refs > 0 {
                        let referrers = self.referrers(kind, key).await?;
                        let key = key.to_string();
                        return Err(StoreError::StillReferenced {
                            kind: kind.kind,
                            key,
                            referrers,
                        });
                    }
                    let (version, refs) = (record.version, record.refs);
                    (
                        stored.meta.next(by.actor),
                        Expect::At { version, refs },
                        refs,
                    )
                }
            };
            let stored = after.map(|item| Stored {
                item: item.clone(),
                meta: meta.clone(),
            });
            let before = current.as_ref().map(|(_, r)| decode(r)).transpose()?;
            let body = stored.as_ref().map(to_body).transpose()?;
            let op = match &body {
                Some(body) => Op::Put {
                    body: body.clone(),
                    refs,
                },
                None => Op::Delete,
            };
            let on_fail = if create {
                OnFail::Exists
            } else {
                OnFail::Changed
            };
            let mut steps = vec![(Write::new(kind, key.clone(), op, expect), on_fail)];
            steps.extend(references(kind, before.as_ref(), body.as_ref()));
            let item = current.as_ref().map(|(s, _)| &s.item);
            steps.extend(guard.check(item, after).await?);
            if recorded {
                let (version, at, operation) = match (&stored, &current) {
                    (Some(new), _) => {
                        let operation = match (by.restored_from, create) {
                            (Some(_), _) => Operation::Restore,
                            (None, true) => Operation::Create,
                            (None, false) => Operation::Replace,
                        };
                        (new.meta.version, new.meta.updated_at, operation)
                    }
                    (None, Some((old, _))) => {
                        let at = now().max(old.meta.updated_at);
                        (old.meta.version + 1, at, Operation::Delete)
                    }
                    (None, None) => return Err(StoreError::Internal("a change of nothing".into())),
                };
                steps.extend(history::record(Made {
                    kind,
                    key,
                    version,
                    operation,
                    actor: by.actor,
                    request_id: by.request_id,
                    at,
                    restored_from: by.restored_from,
                    conflicts: by.conflicts,
                    plan_id: by.apply.map(|a| a.plan_id),
                    head,
                    before: before.as_ref(),
                    after: body.as_ref(),
                    retention: self.retention,
                })?);
            }
            // A guard's writes may touch records the object's own writes touch (a node and
            // the groups that pinned it name the same environment): one write per record.
            let (steps, _) = merge(steps)?;
            let done = match by.dry_run {
                true => self.check(steps).await?,
                false => self.commit(steps).await?,
            };
            Ok(done.then_some(stored))
        })
        .await
    }

    /// Stores an object: its first version (refused if its key exists) or its next (refused
    /// if `If-Match` is stale); refused if a record it names is missing.
    pub(in crate::store) async fn put<T>(
        &self,
        kind: &'static RecordKind,
        item: T,
        version: Version,
        by: Edit<'_>,
        guard: &dyn Guard<T>,
    ) -> Result<Stored<T>>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
    {
        let key = key_of(kind, &item)?;
        let change = match version {
            Version::First => Change::Create(&item),
            Version::Next(expected) => Change::Replace(&item, expected),
        };
        let stored = self.write(kind, &key, change, by, guard);
        stored
            .await?
            .ok_or_else(|| StoreError::Internal("wrote nothing".into()))
    }

    /// Stores an object that has no versions and is never changed.
    pub(super) async fn create_plain<T: Serialize>(
        &self,
        kind: &'static RecordKind,
        object: &T,
    ) -> Result<()> {
        let body = to_body(object)?;
        let key = &key_of(kind, object)?;
        retry(|| async {
            let op = Op::Put {
                body: body.clone(),
                refs: 0,
            };
            let write = Write::new(kind, key.clone(), op, Expect::Absent);
            let mut steps = vec![(write, OnFail::Exists)];
            steps.extend(references(kind, None, Some(&body)));
            Ok(self.commit(steps).await?.then_some(()))
        })
        .await
    }

    /// Deletes an object, refused while others refer to it or if `expected` is stale.
    pub(super) async fn delete<T>(
        &self,
        kind: &'static RecordKind,
        key: &Key,
        expected: Option<u64>,
        by: Edit<'_>,
        guard: &dyn Guard<T>,
    ) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
    {
        self.write(kind, key, Change::Delete(expected), by, guard)
            .await?;
        Ok(())
    }
}
