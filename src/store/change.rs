//! What a change is made of, below the rules that check it: who makes it and how (`Edit`), the
//! version it writes (`Version`), the writes of its commit with what each one's failure means
//! (`Step`, merged to one write per record by `merge`), the checks a kind adds (`Guard`), and
//! trying again when a write lost a race.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use super::engine::{Expect, Key, Op, Record, Write};
use super::{Kind, Result, StoreError};
use crate::domain::Meta;

/// What a write was judged on (its conflicts): the group tree's generation and the fleet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub groups: i64,
    pub nodes: i64,
}

/// Attempts at a write that keeps meeting concurrent writes before answering 503.
pub(super) const MAX_TRIES: u32 = 8;

/// What a failed expectation of one write of a commit means.
#[derive(Debug, Clone)]
pub(super) enum OnFail {
    /// The record being created exists already.
    Exists,
    /// A record the change names does not exist.
    Missing {
        field: &'static str,
        kind: Kind,
        key: String,
    },
    /// Something changed since it was read: read again and retry.
    Changed,
    /// Something changed since the write was judged: judge it again (`TreeMoved`).
    Moved,
}

pub(super) type Step = (Write, OnFail);

/// Checks a change against records beyond the one written, and adds the writes that keep
/// those checks true until the commit (e.g. the group tree's generation).
#[async_trait]
pub(super) trait Guard<T: Sync>: Sync {
    async fn check(&self, before: Option<&T>, after: Option<&T>) -> Result<Vec<Step>>;
}

/// For kinds whose writes need no more than their references.
pub(super) struct NoGuard;

#[async_trait]
impl<T: Sync> Guard<T> for NoGuard {
    async fn check(&self, _: Option<&T>, _: Option<&T>) -> Result<Vec<Step>> {
        Ok(Vec::new())
    }
}

pub fn decode<T: DeserializeOwned>(record: &Record) -> Result<T> {
    serde_json::from_slice(&record.body).map_err(|e| StoreError::Internal(Box::new(e)))
}

/// Runs `attempt` until it gives a result, backing off between tries; `Ok(None)` means
/// "something changed under us, try again".
pub(super) async fn retry<R, F, Fut>(mut attempt: F) -> Result<R>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<R>>>,
{
    for tries in 0..MAX_TRIES {
        if tries > 0 {
            tokio::time::sleep(Duration::from_millis(2 << tries)).await;
        }
        if let Some(done) = attempt().await? {
            return Ok(done);
        }
    }
    Err(StoreError::Unavailable(
        "concurrent writes to the same records kept conflicting".into(),
    ))
}

/// Which version of an object `Db::put` stores: the first, or the next after the one
/// `If-Match` names (`None`: whichever is stored).
pub(in crate::store) enum Version {
    First,
    Next(Option<u64>),
}

/// An edit of the store: who makes it (`actor`, `request_id`, kept in its revision) and how
/// it is made (a dry run, quietly, forced, as a restore, as part of an apply, judged on a
/// snapshot). Write methods take it as `by`: the edit by `actor` (`Edit::by`), with how it
/// is made set on top.
#[derive(Debug, Clone, Copy)]
pub struct Edit<'a> {
    pub actor: &'a str,
    /// The request that makes the change, if one does: its revision keeps the id.
    pub request_id: Option<&'a str>,
    /// Check the change exactly as its commit would, and store nothing.
    pub dry_run: bool,
    /// Record no revision: a change that is not an edit (a token's last use).
    pub quiet: bool,
    /// The version whose content this change writes again.
    pub restored_from: Option<u64>,
    /// The conflicts a forced change creates, for its revision.
    pub conflicts: Option<&'a serde_json::Value>,
    /// Write even over an object a classification tree owns (`force=true`).
    pub force: bool,
    /// The change applies a plan (`POST /import`): the object becomes owned by the tree.
    pub apply: Option<Apply<'a>>,
    /// What the change was judged on (its conflicts): it commits only while the groups (and,
    /// for a group write, the nodes) are as they were then, else fails with `TreeMoved`.
    pub judged: Option<Snapshot>,
}

/// A plan being applied, for the objects it writes and their revisions.
#[derive(Debug, Clone, Copy)]
pub struct Apply<'a> {
    pub plan_id: &'a str,
    pub source_revision: Option<&'a str>,
}

/// Who owns objects applied from a tree.
pub const TREE_OWNER: &str = "git";

impl Apply<'_> {
    /// The metadata of an object this apply writes.
    pub(super) fn own(&self, meta: &mut Meta) {
        meta.managed_by = Some(TREE_OWNER.to_owned());
        meta.source_revision = self.source_revision.map(str::to_owned);
    }
}

impl<'a> Edit<'a> {
    /// A plain edit by `actor`: stored, revised, not forced, outside any apply.
    pub fn by(actor: &'a str) -> Self {
        Self {
            actor,
            request_id: None,
            dry_run: false,
            quiet: false,
            restored_from: None,
            conflicts: None,
            force: false,
            apply: None,
            judged: None,
        }
    }
}

impl<'a> From<&'a str> for Edit<'a> {
    fn from(actor: &'a str) -> Self {
        Self::by(actor)
    }
}

impl<'a> From<&'a String> for Edit<'a> {
    fn from(actor: &'a String) -> Self {
        Self::by(actor)
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
