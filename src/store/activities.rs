//! The metrics form's records: activities, listed by date with customer, project and
//! engineer filters. Nothing here knows about the classifier's records.

use serde::{Deserialize, Serialize};

use super::change::{OnFail, retry};
use super::engine::{Expect, Key, Op, Write};
use super::record::{Derived, ITEM_TYPE, Index, RecordKind, to_body};
use super::{ActivityFilter, Kind, Page, PageRequest, Result, Store, StoreError};
use crate::domain::Activity;

/// Activities' sort key in every index: `<date>#<id>`, so a date range is a key range and
/// entries of one day keep the order they were recorded in (ids are UUIDv7).
pub static ACTIVITY: RecordKind = RecordKind {
    indexes: &[
        Index::new("ordered", ITEM_TYPE, "date_id"),
        Index::new("by_customer", "customer", "date_id"),
        Index::new("by_project", "project", "date_id"),
        Index::new("by_engineer", "engineer", "date_id"),
    ],
    derived: &[Derived::new("date_id", &["date", "id"], "#")],
    ..RecordKind::new(Kind::Activity, "activity", "activities", &["id"])
};

/// A submission made with an idempotency key: the activity it recorded and a fingerprint of
/// what was submitted, so that sending it again records nothing more. Kept beside the
/// activities under a key no activity id can have.
pub static SUBMISSION: RecordKind =
    RecordKind::new(Kind::Activity, "activity_submission", "activities", &["id"]);

#[derive(Serialize, Deserialize)]
struct Submission {
    id: String,
    activity_id: String,
    fingerprint: String,
}

/// What recording an activity did.
#[derive(Debug)]
pub enum Recorded {
    New(Activity),
    /// The key was used before, for the same entry: this is what it recorded then.
    Again(Activity),
}

impl Store {
    /// Records an activity; its id is new, so this never conflicts.
    pub async fn create_activity(&self, activity: Activity) -> Result<Activity> {
        self.db.create_plain(&ACTIVITY, &activity).await?;
        Ok(activity)
    }

    /// Records an activity once per idempotency `key`: the activity and the key are kept in
    /// one commit, and a key kept already answers what it recorded. `fingerprint` says what
    /// was submitted; the same key with another fingerprint is refused.
    pub async fn record_activity(
        &self,
        activity: Activity,
        key: &str,
        fingerprint: &str,
    ) -> Result<Recorded> {
        let submission = Key::one(format!("/submission/{key}"));
        let body = to_body(&activity)?;
        let kept = to_body(&Submission {
            id: submission.0[0].clone(),
            activity_id: activity.id.clone(),
            fingerprint: fingerprint.to_owned(),
        })?;
        let (activity_key, submission, body, kept) =
            (&Key::one(activity.id.as_str()), &submission, &body, &kept);
        let done = retry(|| async move {
            let put = |kind, key: &Key, body: &serde_json::Map<_, _>| {
                let op = Op::Put {
                    body: body.clone(),
                    refs: 0,
                };
                Write::new(kind, key.clone(), op, Expect::Absent)
            };
            let steps = vec![
                (put(&ACTIVITY, activity_key, body), OnFail::Exists),
                (put(&SUBMISSION, submission, kept), OnFail::Exists),
            ];
            match self.db.commit(steps).await {
                Ok(committed) => Ok(committed.then_some(true)),
                Err(StoreError::AlreadyExists { key, .. }) if key == submission.to_string() => {
                    Ok(Some(false))
                }
                Err(e) => Err(e),
            }
        })
        .await?;
        if done {
            return Ok(Recorded::New(activity));
        }
        let earlier: Submission = self.db.get(&SUBMISSION, submission).await?;
        if earlier.fingerprint != fingerprint {
            return Err(StoreError::KeyReused {
                key: key.to_owned(),
            });
        }
        Ok(Recorded::Again(
            self.get_activity(&earlier.activity_id).await?,
        ))
    }

    pub async fn get_activity(&self, id: &str) -> Result<Activity> {
        self.db.get(&ACTIVITY, &Key::one(id)).await
    }

    /// Activities by date, then in the order they were recorded.
    pub async fn list_activities(
        &self,
        filter: &ActivityFilter,
        page: &PageRequest,
    ) -> Result<Page<Activity>> {
        let mut filters = Vec::new();
        for (field, value) in [
            ("customer", &filter.customer),
            ("project", &filter.project),
            ("engineer", &filter.engineer),
        ] {
            if let Some(value) = value {
                filters.push((field, value.to_string()));
            }
        }
        // `<date>#<id>` sorts between `<from>` and `<to>~` exactly when the date is in range.
        let from = filter.from.map(|d| d.to_string());
        let to = filter.to.map(|d| format!("{d}~"));
        self.db
            .list(&ACTIVITY, &filters, (from.as_deref(), to.as_deref()), page)
            .await
    }
}
