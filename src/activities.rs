//! The activities service: what the metrics form does with recorded work, over the store.
//! An entry saved once per idempotency key (what makes a submission the same one is every
//! field entered), every entry a filter selects read a page at a time, and the same
//! selection as a stream of pages (for the CSV export). The HTTP side is
//! `handlers::form`; the records are `store::activities`; what an entry is, `domain::activity`.

use std::sync::Arc;

use futures_util::Stream;

use crate::domain::Activity;
use crate::error::AppError;
use crate::store::activities::Recorded;
use crate::store::{ActivityFilter, PageRequest, Store, StoreError};

/// Entries read per store call when every entry of a selection is wanted.
const PAGE: usize = 1000;

/// What makes a submission the same one: every field entered.
fn fingerprint(a: &Activity) -> String {
    let entered = (
        a.engineer.as_str(),
        a.customer.as_str(),
        a.project.as_str(),
        a.activity_type.as_str(),
        a.date,
        a.hours.quarters(),
        &a.description,
    );
    crate::auth::secret::sha256_hex(&serde_json::to_string(&entered).unwrap_or_default())
}

/// Whether `key` may be an idempotency key: 1 to 128 letters, digits, `-`, `_`, `.` or `:`.
pub fn valid_key(key: &str) -> bool {
    (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Saves the entry; with an idempotency key, once for that key (a second submission of the
/// same entry answers the first). `true` when it was new.
pub async fn save(
    store: &Store,
    activity: Activity,
    key: Option<&str>,
) -> Result<(Activity, bool), AppError> {
    let Some(key) = key else {
        return Ok((store.create_activity(activity).await?, true));
    };
    if !valid_key(key) {
        return Err(AppError::invalid(
            "idempotency_key",
            "must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
        ));
    }
    let print = fingerprint(&activity);
    Ok(match store.record_activity(activity, key, &print).await? {
        Recorded::New(a) => (a, true),
        Recorded::Again(a) => (a, false),
    })
}

/// Every entry the filter selects, read a page at a time (a summary's range is bounded).
pub async fn all(store: &Store, filter: &ActivityFilter) -> Result<Vec<Activity>, AppError> {
    let mut entries = Vec::new();
    let mut page = PageRequest {
        limit: PAGE,
        cursor: None,
    };
    loop {
        let batch = store.list_activities(filter, &page).await?;
        entries.extend(batch.items);
        match batch.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(entries),
        }
    }
}

/// The selection as pages of `size` entries: the first read now (so that a store that fails
/// fails the answer's status), the rest as a stream read one page at a time, so that any
/// selection takes the same memory. A failure ends the stream with that error, logged.
pub async fn pages(
    store: &Arc<Store>,
    filter: ActivityFilter,
    size: usize,
) -> Result<
    (
        Vec<Activity>,
        impl Stream<Item = Result<Vec<Activity>, StoreError>> + Send + 'static,
    ),
    AppError,
> {
    let page = move |cursor| PageRequest {
        limit: size,
        cursor,
    };
    let first = store.list_activities(&filter, &page(None)).await?;
    let store = store.clone();
    let rest = futures_util::stream::unfold(first.next_cursor, move |cursor| {
        let (store, filter) = (store.clone(), filter.clone());
        async move {
            let listed = store.list_activities(&filter, &page(Some(cursor?))).await;
            Some(match listed {
                Ok(next) => (Ok(next.items), next.next_cursor),
                Err(e) => {
                    tracing::warn!(error = %crate::error::cause_chain(&e), "a listing of activities cut short");
                    (Err(e), None)
                }
            })
        }
    });
    Ok((first.items, rest))
}
