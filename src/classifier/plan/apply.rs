//! A plan applied: judged as any write, committed in the store's batches, each conditional
//! on what the plan read, and finished by the same apply asked again after an interruption.

use std::collections::HashMap;

use serde_json::Value;

use super::{Applied, ApplyOutcome, PlanStep, PlanSummary, Proposal, entry, plan};
use crate::classifier::{
    Classifier, JUDGED_TRIES, Write, impact, kept_moving, moved_on, refuse_revived,
};
use crate::error::AppError;
use crate::store::Key;
use crate::store::RecordKind;
use crate::store::enc::{ENVIRONMENT, NODE, NODE_GROUP};
use crate::store::{Apply, Edit, Planned, Snapshot, Store, StoreError};

fn stale(id: &str) -> AppError {
    AppError::PreconditionFailed(format!(
        "plan {id} is not what this tree would do now: something it read has changed since \
         (or the tree did); plan again"
    ))
}

/// The steps still to make of plan `id`, kept when its apply began, if every object it
/// names is either as the plan read it or as this plan's apply left it.
async fn resumed(
    store: &Store,
    id: &str,
    steps: &[PlanStep],
) -> Result<(Vec<PlanStep>, usize), AppError> {
    let Some(kept) = store.kept_plan(id).await? else {
        return Err(stale(id));
    };
    let mut now: HashMap<(String, Key), &PlanStep> = steps
        .iter()
        .map(|s| ((s.planned.kind.name.to_owned(), s.planned.key.clone()), s))
        .collect();
    let (mut remaining, mut done) = (Vec::new(), 0);
    for kept in &kept {
        let parsed: Option<(String, Vec<String>)> = kept
            .get(0)
            .and_then(Value::as_str)
            .zip(
                kept.get(1)
                    .and_then(|k| serde_json::from_value(k.clone()).ok()),
            )
            .map(|(kind, key)| (kind.to_owned(), key));
        let Some((kind_name, key)) = parsed else {
            return Err(stale(id));
        };
        let key = Key(key);
        match now.remove(&(kind_name.clone(), key.clone())) {
            Some(step) if entry(step) == *kept => remaining.push(step.clone()),
            Some(_) => return Err(stale(id)),
            None => {
                let kind = [&ENVIRONMENT, &NODE_GROUP, &NODE]
                    .into_iter()
                    .find(|k| k.name == kind_name)
                    .ok_or_else(|| stale(id))?;
                let version = store.last_version(kind, &key).await?;
                let made = store.revision(kind, &key, version).await;
                if made.ok().and_then(|r| r.plan_id).as_deref() != Some(id) {
                    return Err(stale(id));
                }
                done += 1;
            }
        }
    }
    if !now.is_empty() {
        return Err(stale(id));
    }
    remaining.sort_by_key(|s| s.order);
    Ok((remaining, done))
}

/// Writes the batches in order, each in one commit judged on what the apply was judged on,
/// adding what each wrote to `applied`: `false` if the groups or nodes moved before one.
async fn write(
    store: &Store,
    batches: &[&[PlanStep]],
    mut by: Edit<'_>,
    applied: &mut Vec<Applied>,
) -> Result<bool, StoreError> {
    for batch in batches.iter().filter(|b| !b.is_empty()) {
        let planned: Vec<Planned> = batch.iter().map(|s| s.planned.clone()).collect();
        let versions = match store.apply_set(&planned, by).await {
            Ok(versions) => versions,
            Err(StoreError::TreeMoved) => return Ok(false),
            Err(e) => return Err(e),
        };
        // Each commit holds to the groups and nodes as the last one of this apply left
        // them: it moved each counter by one if it wrote any of its kind.
        let wrote = |kind: &RecordKind| i64::from(planned.iter().any(|p| p.kind.name == kind.name));
        by.judged = by.judged.map(|s| Snapshot {
            groups: s.groups + wrote(&NODE_GROUP),
            nodes: s.nodes + wrote(&NODE),
        });
        for (step, version) in batch.iter().zip(versions) {
            applied.push(Applied {
                kind: step.change.kind.clone(),
                key: step.change.key.clone(),
                action: step.change.action,
                version,
            });
        }
    }
    Ok(true)
}

impl Classifier<'_> {
    /// Applies exactly the plan `id` of `proposal` (or finishes it, if an interrupted apply
    /// of it began), judged as any write: refused if it gives nodes conflicting values,
    /// unless forced. If the groups or nodes move before one of its commits, what is left
    /// of it is planned and judged again (refused with 412 if that changes the plan); a
    /// refusal after some commits says what they applied.
    pub async fn apply(
        self,
        proposal: &Proposal,
        id: &str,
        write: Write<'_>,
    ) -> Result<ApplyOutcome, AppError> {
        let _place = self.fleet_work()?;
        let mut applied = Vec::new();
        let (mut total, mut earlier, mut first_summary) = (None, None, None);
        for tried in 0..JUDGED_TRIES {
            if tried > 0 {
                moved_on(tried).await;
            }
            let tried = self
                .apply_once(proposal, id, write, (&mut applied, &mut total))
                .await
                .map_err(|e| partial(e, &applied, total.unwrap_or_default()))?;
            match tried {
                Tried::Moved { done, summary } => {
                    earlier.get_or_insert(done);
                    first_summary.get_or_insert(summary);
                }
                Tried::Done { summary, done } => {
                    // What the plan does as a whole: as the first try planned it.
                    let summary = first_summary.unwrap_or(summary);
                    // Objects an earlier request had applied, not this one's earlier tries.
                    let done = earlier.unwrap_or(done);
                    tracing::info!(plan_id = %id, applied = applied.len(), already_applied = done, "plan applied");
                    self.follow_rules().await;
                    return Ok(ApplyOutcome {
                        plan_id: id.to_owned(),
                        applied,
                        already_applied: done,
                        summary,
                    });
                }
            }
        }
        Err(partial(kept_moving(), &applied, total.unwrap_or_default()))
    }

    /// One try at an apply: planned, judged and committed batch by batch.
    async fn apply_once(
        self,
        proposal: &Proposal,
        id: &str,
        write: Write<'_>,
        (applied, total): (&mut Vec<Applied>, &mut Option<usize>),
    ) -> Result<Tried, AppError> {
        let store = self.store;
        let planning = plan(store, proposal, self.budget()).await?;
        let (steps, done) = match id == planning.plan.plan_id {
            true => (planning.steps, 0),
            false => resumed(store, id, &planning.steps).await?,
        };
        total.get_or_insert(steps.len() + done);
        // What is left of a plan an interrupted apply began is judged as a whole plan is: on
        // the classification as the earlier commits left it.
        let conflicts = impact::refuse_conflicts(&planning.conflicts, write.force)?;
        if !write.force {
            refuse_revived(&planning.plan.pins_of_deleted_nodes)?;
        }
        let apply = Apply {
            plan_id: id,
            source_revision: proposal.source_revision.as_deref(),
        };
        let by = Edit {
            apply: Some(apply),
            conflicts: conflicts.as_ref(),
            judged: Some(planning.conflicts.snapshot),
            request_id: write.request_id,
            ..Edit::by(write.actor)
        };
        let batches: Vec<&[PlanStep]> = store
            .commits(steps.iter().map(|s| &s.planned))
            .into_iter()
            .map(|commit| &steps[commit])
            .collect();
        if done == 0 && batches.len() > 1 {
            let entries: Vec<Value> = steps.iter().map(entry).collect();
            store.keep_plan(id, &entries).await?;
        }
        match self::write(store, &batches, by, applied).await? {
            true => Ok(Tried::Done {
                summary: planning.plan.summary,
                done,
            }),
            false => Ok(Tried::Moved {
                done,
                summary: planning.plan.summary,
            }),
        }
    }
}

/// How one try at an apply ended.
enum Tried {
    /// Every commit made; `done` objects were applied before this try.
    Done { summary: PlanSummary, done: usize },
    /// The groups or nodes moved before a commit; `done` objects were applied before this
    /// try.
    Moved { done: usize, summary: PlanSummary },
}

/// A refusal after some of the plan was applied says what was.
fn partial(e: AppError, applied: &[Applied], total: usize) -> AppError {
    if applied.is_empty() {
        return e;
    }
    let count = applied.len();
    AppError::Partial(
        Box::new(e),
        format!("{count} of the plan's {total} changes were applied first"),
        serde_json::to_value(applied).unwrap_or_default(),
    )
}
