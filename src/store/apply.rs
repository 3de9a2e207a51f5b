//! Many objects changed in one commit (applying a plan): each write conditional on the
//! version the plan read, the reference counts they change merged per record, so that
//! objects created together may name each other and objects deleted together may have named
//! each other, and one revision per object.

use serde_json::{Map, Value};

use super::change::merge;
use super::change::{Edit, OnFail, Step, retry};
use super::db::{Db, references};
use super::engine::{Expect, Key, Op, Record, Write};
use super::history::{self, HEAD, Made, head_key};
use super::record::RecordKind;
use super::{Result, StoreError};
use crate::domain::{Meta, Operation, now};

/// One object of a set of changes: the version the plan read (`None`: it was absent) and
/// what it becomes (the object's fields; `None`: deleted).
#[derive(Debug, Clone)]
pub struct Planned {
    pub kind: &'static RecordKind,
    pub key: Key,
    pub expected: Option<u64>,
    pub after: Option<Map<String, Value>>,
}

fn meta_of(record: &Record) -> Result<(Meta, Map<String, Value>)> {
    let body: Map<String, Value> = super::decode(record)?;
    let meta = serde_json::from_value(Value::Object(body.clone()))
        .map_err(|e| StoreError::Internal(Box::new(e)))?;
    Ok((meta, body))
}

impl Db {
    /// Writes every planned object in one commit, or none: refused with `PlanStale` if any
    /// is not at the version planned, `StillReferenced` if a deletion leaves referrers,
    /// `MissingReference` if a record named is missing. `extra`: more writes of the same
    /// commit (the group tree's guard). Answers each object's new version.
    pub(super) async fn write_set(
        &self,
        planned: &[Planned],
        by: Edit<'_>,
        extra: Vec<Step>,
    ) -> Result<Vec<u64>> {
        // A commit that lost a race (another transaction on the same records, or a record
        // changed since it was read) is made again from what is read then: a planned object
        // that changed meanwhile is then `PlanStale`.
        let extra = &extra;
        retry(|| async move {
            let (mut steps, versions) = self.set_steps(planned, by).await?;
            steps.extend(extra.iter().cloned());
            let (steps, deletes) = merge(steps)?;
            for (i, delta) in deletes {
                let write = &steps[i].0;
                if let Expect::At { refs, .. } = write.expect
                    && refs + delta != 0
                {
                    let referrers = self.referrers(write.kind, &write.key).await?;
                    return Err(StoreError::StillReferenced {
                        kind: write.kind.kind,
                        key: write.key.to_string(),
                        referrers,
                    });
                }
            }
            let done = match by.dry_run {
                true => self.check(steps).await?,
                false => self.commit(steps).await?,
            };
            Ok(done.then_some(versions))
        })
        .await
    }

    /// The writes (with their revisions and reference counts) that make each planned object
    /// what it becomes, each conditional on the version planned, and each object's new
    /// version; refused with `PlanStale` if one is not at the version planned.
    pub(super) async fn set_steps(
        &self,
        planned: &[Planned],
        by: Edit<'_>,
    ) -> Result<(Vec<Step>, Vec<u64>)> {
        let keys: Vec<_> = planned
            .iter()
            .flat_map(|p| [(p.kind, p.key.clone()), (&HEAD, head_key(p.kind, &p.key))])
            .collect();
        let found = self.engine().get(&keys).await?;
        let stale = |p: &Planned| StoreError::PlanStale {
            kind: p.kind.kind,
            key: p.key.to_string(),
        };
        let mut steps = Vec::new();
        let mut versions = Vec::new();
        for (p, pair) in planned.iter().zip(found.chunks(2)) {
            let (record, head) = (pair[0].as_ref(), pair[1].as_ref().map_or(0, |r| r.refs));
            let current = record.map(meta_of).transpose()?;
            let mut meta = match (&current, p.expected) {
                (None, None) => {
                    let mut meta = Meta::first(by.actor);
                    meta.version = u64::try_from(head).unwrap_or(0) + 1;
                    meta
                }
                (Some((meta, _)), Some(v)) if meta.version == v => meta.next(by.actor),
                _ => return Err(stale(p)),
            };
            if let Some(apply) = &by.apply {
                apply.own(&mut meta);
            }
            let body = p.after.clone().map(|mut item| {
                if let Ok(Value::Object(meta)) = serde_json::to_value(&meta) {
                    item.extend(meta);
                }
                item
            });
            let (expect, refs) = match record {
                Some(r) => (
                    Expect::At {
                        version: r.version,
                        refs: r.refs,
                    },
                    r.refs,
                ),
                None => (Expect::Absent, 0),
            };
            let op = match &body {
                Some(body) => Op::Put {
                    body: body.clone(),
                    refs,
                },
                None if record.is_none() => return Err(stale(p)),
                None => Op::Delete,
            };
            let before = current.as_ref().map(|(_, b)| b);
            let (version, at, operation) = match (&body, &current) {
                (Some(_), None) => (meta.version, meta.updated_at, Operation::Create),
                (Some(_), Some(_)) => (meta.version, meta.updated_at, Operation::Replace),
                (None, Some((old, _))) => (meta.version, now().max(old.updated_at), {
                    Operation::Delete
                }),
                (None, None) => return Err(stale(p)),
            };
            let write = Write::new(p.kind, p.key.clone(), op, expect);
            steps.push((write, OnFail::Changed));
            steps.extend(references(p.kind, before, body.as_ref()));
            if p.kind.history.is_some() {
                steps.extend(history::record(Made {
                    kind: p.kind,
                    key: &p.key,
                    version,
                    operation,
                    actor: by.actor,
                    request_id: by.request_id,
                    at,
                    restored_from: None,
                    conflicts: by.conflicts,
                    plan_id: by.apply.map(|a| a.plan_id),
                    head,
                    before,
                    after: body.as_ref(),
                    retention: self.retention,
                })?);
            }
            versions.push(version);
        }
        Ok((steps, versions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::enc::{NODE, NODE_GROUP};

    fn step(kind: &'static RecordKind, key: &str, op: Op, expect: Expect) -> Step {
        (Write::new(kind, Key::one(key), op, expect), OnFail::Changed)
    }

    #[test]
    fn writes_to_one_record_merge_into_one() {
        let put = Op::Put {
            body: Map::new(),
            refs: 0,
        };
        let (steps, deletes) = merge(vec![
            step(&NODE_GROUP, "web", Op::Adjust(1), Expect::Present),
            step(&NODE_GROUP, "web", put, Expect::Absent),
            step(&NODE_GROUP, "web", Op::Adjust(2), Expect::Present),
            step(
                &NODE_GROUP,
                "old",
                Op::Delete,
                Expect::At {
                    version: 1,
                    refs: 2,
                },
            ),
            step(&NODE_GROUP, "old", Op::Adjust(-2), Expect::Present),
            step(&NODE, "web", Op::Adjust(0), Expect::Anything),
        ])
        .unwrap();
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert!(matches!(steps[0].0.op, Op::Put { refs: 3, .. }));
        assert_eq!(steps[0].0.expect, Expect::Absent);
        assert_eq!(deletes, [(1, -2)]);
        let twice = merge(vec![
            step(&NODE, "a", Op::Delete, Expect::Present),
            step(&NODE, "a", Op::Delete, Expect::Present),
        ]);
        assert!(twice.is_err());
    }
}
