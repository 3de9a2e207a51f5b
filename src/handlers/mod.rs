//! HTTP handlers: each parses its request, is authorized (by the middleware, or, for a token
//! left to it in an `auth::Asker`, through `Auth::admitted` with its own read), calls the
//! classifier or the store, and shapes the answer. One module per resource, the metrics form's under `form/`; here,
//! what they share: page queries, write options, and the answers to writes.

pub mod classification;
pub mod environments;
pub mod form;
pub mod health;
pub mod history;
pub mod import;
pub mod lookups;
pub mod node_groups;
pub mod nodes;
pub mod tokens;
pub mod tree;
pub mod views;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use crate::classifier::Preview;
use crate::classifier::{Outcome, Write};
use crate::domain::Stored;
use crate::error::AppError;
use crate::extract::etag;
use crate::store::{Page, PageRequest};

/// Items per page when the client names no `limit`.
const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
const MAX_LIMIT: usize = 1000;

/// The page a listing with no filter is asked for.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl PageQuery {
    /// The page asked for: `limit` 1 to `MAX_LIMIT` (default `DEFAULT_LIMIT`), and the cursor.
    fn page(self) -> Result<PageRequest, AppError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        Ok(PageRequest {
            limit,
            cursor: self.cursor,
        })
    }
}

/// The query of a route that takes none: any parameter is refused (400), as on every other
/// route, so that `?dry_run=true` on a write without a preview is never taken for one and
/// written for real.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// One page of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> From<Page<T>> for ListResponse<T> {
    fn from(page: Page<T>) -> Self {
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

/// `If-Match`, as the document states it.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "documentation only: `IfMatch` reads the header")]
pub struct IfMatchHeader {
    /// Change only while at this version (its `ETag`, such as `"3"`); `*` for any version.
    /// Another version answers 412.
    #[param(rename = "If-Match", value_type = String, required = false, pattern = r#"^(\*|"[0-9]{1,19}"|[0-9]{1,19})$"#)]
    if_match: Option<String>,
}

/// `force`, for writes that have no other options.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Make the write even though the object is managed by a classification tree
    /// (`managed_by`: the next apply of the tree changes it back), or, restoring a group,
    /// even though the version restored gives nodes conflicting values (recorded in its
    /// revision).
    #[serde(default)]
    pub force: bool,
}

impl ForceQuery {
    pub fn by<'a>(&self, caller: &'a crate::auth::Caller) -> crate::store::Edit<'a> {
        crate::store::Edit {
            force: self.force,
            ..caller.by()
        }
    }

    /// A write to the classifier with this `force`.
    pub fn write<'a>(&self, caller: &'a crate::auth::Caller) -> Write<'a> {
        Write {
            force: self.force,
            ..writer(caller)
        }
    }
}

/// A write to the classifier by the caller, in its request.
pub fn writer(caller: &crate::auth::Caller) -> Write<'_> {
    Write {
        request_id: caller.request_id(),
        ..Write::by(caller.actor())
    }
}

/// `dry_run` and `force`, for writes that can change nodes' classifications.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteQuery {
    /// Check the write, store nothing, and answer what it would change for every node it
    /// affects (200 with a preview).
    #[serde(default)]
    pub dry_run: bool,
    /// Make the write even though it gives nodes conflicting values (recorded in its
    /// revision with those conflicts), or the object is managed by a classification tree.
    #[serde(default)]
    pub force: bool,
}

impl WriteQuery {
    /// Who writes, whether only to preview, and whether forced.
    pub fn write<'a>(&self, caller: &'a crate::auth::Caller) -> Write<'a> {
        Write {
            dry_run: self.dry_run,
            force: self.force,
            ..writer(caller)
        }
    }
}

/// The classifier service over the app's store.
fn classifier(state: &crate::AppState) -> crate::classifier::Classifier<'_> {
    crate::classifier::Classifier::new(
        &state.store,
        state.classify_unknown,
        &state.limits.fleet_work,
        &state.views,
    )
}

/// The answer to a classifier write: the object as stored (201 with its `Location` if
/// `created` names it), 204 for a deletion, or the preview of a dry run.
fn answer(outcome: Outcome, created: Option<&[&str]>) -> Response {
    let status = match created {
        Some(_) => StatusCode::CREATED,
        None => StatusCode::OK,
    };
    let location = created.unwrap_or(&[]);
    match outcome {
        Outcome::Group(group) => stored(status, &group, location),
        Outcome::Node(node) => stored(status, &node, location),
        Outcome::Deleted => StatusCode::NO_CONTENT.into_response(),
        Outcome::Unpinned(groups) => axum::Json(node_groups::Unpinned {
            unpinned_from: groups,
        })
        .into_response(),
        Outcome::Preview(preview) => axum::Json(preview).into_response(),
    }
}

pub use crate::classifier::{MAX_OBJECT_BYTES, within_size};

/// What a path segment may hold as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The path made of `segments`, each percent-encoded: names are free text.
fn path_of(segments: &[&str]) -> String {
    segments.iter().fold(String::new(), |mut path, segment| {
        path.push('/');
        path.extend(percent_encoding::utf8_percent_encode(segment, SEGMENT));
        path
    })
}

/// A stored object as a JSON response with its `ETag`, and, when created, the `Location` of
/// the path made of `location`.
fn stored<T: Serialize>(status: StatusCode, object: &Stored<T>, location: &[&str]) -> Response {
    let mut response = (status, axum::Json(object)).into_response();
    let headers = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(&etag(object.meta.version)) {
        headers.insert(header::ETAG, tag);
    }
    if !location.is_empty()
        && let Ok(location) = HeaderValue::from_str(&path_of(location))
    {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// An object's JSON made earlier (see `memo`), with its version as the `ETag`.
fn stored_json(body: bytes::Bytes, version: u64) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Ok(tag) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// Parses a name from a path or query; a name that breaks the rules can't name anything.
fn parse_name<T>(
    field: &str,
    raw: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, AppError> {
    parse(raw).map_err(|message| AppError::invalid(field, message))
}

/// Parses an optional filter value.
fn parse_filter<T>(
    field: &str,
    raw: Option<String>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, AppError> {
    raw.map(|raw| parse_name(field, &raw, parse)).transpose()
}
