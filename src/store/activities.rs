//! The metrics form's records: activities, listed by date with customer, project and
//! engineer filters. Nothing here knows about the classifier's records.

use super::engine::Key;
use super::record::{Derived, ITEM_TYPE, Index, RecordKind};
use super::{ActivityFilter, Kind, Page, PageRequest, Result, Store};
use crate::domain::Activity;

/// Activities' sort key in every index: `<date>#<id>`, so a date range is a key range and
/// entries of one day keep the order they were recorded in (ids are UUIDv7).
pub static ACTIVITY: RecordKind = RecordKind {
    kind: Kind::Activity,
    name: "activity",
    table: "activities",
    key: &["id"],
    indexes: &[
        Index::new("ordered", ITEM_TYPE, "date_id"),
        Index::new("by_customer", "customer", "date_id"),
        Index::new("by_project", "project", "date_id"),
        Index::new("by_engineer", "engineer", "date_id"),
    ],
    derived: &[Derived::new("date_id", &["date", "id"], "#")],
    references: &[],
    referenced: false,
    json: &[],
};

impl Store {
    /// Records an activity; its id is new, so this never conflicts.
    pub async fn create_activity(&self, activity: Activity) -> Result<Activity> {
        self.db.create_plain(&ACTIVITY, &activity).await?;
        Ok(activity)
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
