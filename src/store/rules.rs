//! The storage rules, written once over any engine: versions and `If-Match`, reference counts
//! and who still refers to a record, retrying a write that lost a race, and listings cut into
//! pages with cursors.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::change::{By, Guard, OnFail, Step, decode, retry};
use super::engine::{CommitError, Engine, Expect, Key, Op, Position, Query, Record, Write};
use super::history::{self, HEAD, Made, head_key};
use super::record::{RecordKind, to_body};
use super::{Cursor, Kind, Page, PageRequest, Result, StoreError};
use crate::domain::{Meta, Operation, Stored, now};

/// How many referrers of each kind a refused delete names.
pub const MAX_REFERRERS: usize = 10;

impl Page<Record> {
    /// The page with each record decoded.
    pub fn decode<T: DeserializeOwned>(self) -> Result<Page<T>> {
        let items = self.items.iter().map(decode).collect::<Result<_>>()?;
        Ok(Page {
            items,
            next_cursor: self.next_cursor,
        })
    }
}

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
fn check_owner(kind: Kind, key: &Key, meta: &Meta, by: &By<'_>) -> Result<()> {
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

    /// The record holding an object, or `NotFound`.
    pub(super) async fn record(&self, kind: &'static RecordKind, key: &Key) -> Result<Record> {
        match self
            .engine
            .get(&[(kind, key.clone())])
            .await?
            .pop()
            .flatten()
        {
            Some(record) => Ok(record),
            None => Err(StoreError::NotFound {
                kind: kind.kind,
                key: key.to_string(),
            }),
        }
    }

    /// The count a counter record keeps (its reference count); 0 while it is absent.
    pub(super) async fn count(&self, kind: &'static RecordKind, key: Key) -> Result<i64> {
        let found = self.engine.get(&[(kind, key)]).await?;
        Ok(found.first().and_then(Option::as_ref).map_or(0, |r| r.refs))
    }

    /// The object and the record holding it, or `NotFound`.
    async fn require<T: DeserializeOwned>(
        &self,
        kind: &'static RecordKind,
        key: &Key,
    ) -> Result<(T, Record), StoreError> {
        let record = self.record(kind, key).await?;
        Ok((decode(&record)?, record))
    }

    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        kind: &'static RecordKind,
        key: &Key,
    ) -> Result<T> {
        Ok(self.require(kind, key).await?.0)
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
        by: By<'_>,
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

    /// Stores the first version of an object; refused if its key exists or a record it
    /// names is missing.
    pub(super) async fn create<T>(
        &self,
        kind: &'static RecordKind,
        item: T,
        by: By<'_>,
        guard: &dyn Guard<T>,
    ) -> Result<Stored<T>>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
    {
        let key = key_of(kind, &item)?;
        let stored = self.write(kind, &key, Change::Create(&item), by, guard);
        stored
            .await?
            .ok_or_else(|| StoreError::Internal("created nothing".into()))
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

    /// Stores the next version of an object, refused if `expected` (`If-Match`) is stale.
    pub(super) async fn replace<T>(
        &self,
        kind: &'static RecordKind,
        item: T,
        expected: Option<u64>,
        by: By<'_>,
        guard: &dyn Guard<T>,
    ) -> Result<Stored<T>>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
    {
        let key = key_of(kind, &item)?;
        let stored = self.write(kind, &key, Change::Replace(&item, expected), by, guard);
        stored
            .await?
            .ok_or_else(|| StoreError::Internal("replaced nothing".into()))
    }

    /// Deletes an object, refused while others refer to it or if `expected` is stale.
    pub(super) async fn delete<T>(
        &self,
        kind: &'static RecordKind,
        key: &Key,
        expected: Option<u64>,
        by: By<'_>,
        guard: &dyn Guard<T>,
    ) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
    {
        self.write(kind, key, Change::Delete(expected), by, guard)
            .await?;
        Ok(())
    }

    /// Who refers to the record: up to `MAX_REFERRERS` of each kind that can, e.g.
    /// `node web01`, then `more` if there are more.
    pub(super) async fn referrers(&self, target: &RecordKind, key: &Key) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for kind in self.kinds {
            for reference in kind.references.iter().filter(|r| r.target == target) {
                let fields = reference.fields.iter().copied();
                let filters: Vec<_> = fields.zip(key.0.iter().cloned()).collect();
                let found = self.find(kind, &filters, (None, None), None, MAX_REFERRERS + 1);
                for (i, record) in found.await?.iter().enumerate() {
                    if i == MAX_REFERRERS {
                        out.push("more".to_owned());
                        break;
                    }
                    let name = kind.key_of(&decode(record)?).unwrap_or_default();
                    out.push(format!("{} {name}", kind.kind));
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` records matching the filters and sort range, after `after`.
    async fn find(
        &self,
        kind: &'static RecordKind,
        filters: &[(&'static str, String)],
        (from, to): (Option<&str>, Option<&str>),
        mut after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let (index, partition, filters) = kind.choose_index(filters);
        let partition = &partition;
        let mut found = Vec::new();
        loop {
            let (filters, limit) = (&filters[..], limit - found.len());
            let query = Query {
                kind,
                index,
                partition,
                from,
                to,
                filters,
                after,
                limit,
            };
            let batch = self.engine.query(&query).await?;
            found.extend(batch.records);
            match batch.more {
                Some(position) if found.len() < limit => after = Some(position),
                _ => return Ok(found),
            }
        }
    }

    /// One page of a listing. The cursor names the listing (kind, filters and range), so a
    /// cursor only continues the listing it came from.
    pub(super) async fn list<T: DeserializeOwned>(
        &self,
        kind: &'static RecordKind,
        filters: &[(&'static str, String)],
        range: (Option<&str>, Option<&str>),
        page: &PageRequest,
    ) -> Result<Page<T>> {
        self.list_records(kind, filters, range, page)
            .await?
            .decode()
    }

    /// [`Db::list`], the records as stored.
    pub(super) async fn list_records(
        &self,
        kind: &'static RecordKind,
        filters: &[(&'static str, String)],
        range: (Option<&str>, Option<&str>),
        page: &PageRequest,
    ) -> Result<Page<Record>> {
        let listing = format!("{}?{filters:?}&{range:?}", kind.name);
        let backend = self.backend();
        let after = match &page.cursor {
            None => None,
            Some(text) => {
                let position: Position = Cursor::decode(backend, &listing, text)?;
                let parts = &position.key.0;
                let whole = parts.len() == kind.key.len() && parts.iter().all(|p| !p.is_empty());
                if !whole || position.sort.is_empty() {
                    return Err(StoreError::InvalidCursor);
                }
                Some(position)
            }
        };
        let mut records = self
            .find(kind, filters, range, after, page.limit + 1)
            .await?;
        let mut next_cursor = None;
        if records.len() > page.limit {
            records.truncate(page.limit);
            if let Some(last) = records.last() {
                let body = decode(last)?;
                let index = kind.choose_index(filters).0;
                let sort = kind.attribute(&body, index.sort).unwrap_or_default();
                let key = kind.key_of(&body).unwrap_or_default();
                next_cursor = Some(Cursor::encode(backend, &listing, Position { sort, key }));
            }
        }
        Ok(Page {
            items: records,
            next_cursor,
        })
    }
}

/// Folds `next` into `into`, two writes to one record: reference-count changes add up, and
/// join the object's own write if it is there. `Err(())`: both write the object.
fn fold(into: &mut Step, next: Step, deltas: &mut i64) -> Result<(), ()> {
    let (write, on_fail) = next;
    match (&mut into.0.op, write.op) {
        (Op::Adjust(a), Op::Adjust(b)) => {
            *a += b;
            into.0.expect = match (into.0.expect, write.expect) {
                (Expect::Refs(n), _) | (_, Expect::Refs(n)) => Expect::Refs(n),
                (Expect::Present, _) | (_, Expect::Present) => Expect::Present,
                (kept, _) => kept,
            };
            if matches!(into.1, OnFail::Changed) {
                into.1 = on_fail;
            }
        }
        (Op::Put { refs, .. }, Op::Adjust(d)) => *refs += d,
        (Op::Delete, Op::Adjust(d)) => *deltas += d,
        (Op::Adjust(d), op @ (Op::Put { .. } | Op::Delete)) => {
            let d = *d;
            *into = (Write { op, ..write }, on_fail);
            match &mut into.0.op {
                Op::Put { refs, .. } => *refs += d,
                _ => *deltas += d,
            }
        }
        _ => return Err(()),
    }
    Ok(())
}

/// Deletions among merged steps: (step, reference-count change the others make to it).
type Deletions = Vec<(usize, i64)>;

/// The steps with one write per record (by table and key), in first-seen order.
pub(super) fn merge(steps: Vec<Step>) -> Result<(Vec<Step>, Deletions)> {
    let mut out: Vec<Step> = Vec::new();
    let mut deltas: Vec<i64> = Vec::new();
    let mut at: HashMap<(&'static str, Key), usize> = HashMap::new();
    for step in steps {
        let id = (step.0.kind.table, step.0.key.clone());
        match at.get(&id) {
            Some(&i) => fold(&mut out[i], step, &mut deltas[i]).map_err(|()| {
                StoreError::Internal(format!("{} {} written twice", id.0, id.1).into())
            })?,
            None => {
                at.insert(id, out.len());
                out.push(step);
                deltas.push(0);
            }
        }
    }
    let deletes = deltas
        .into_iter()
        .enumerate()
        .filter(|(i, _)| matches!(out[*i].0.op, Op::Delete))
        .collect();
    Ok((out, deletes))
}
