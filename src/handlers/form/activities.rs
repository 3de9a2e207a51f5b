//! What the metrics form recorded: listings, CSV, sums and the report page.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::super::{ListResponse, PageQuery};
use super::today;
use crate::AppState;
use crate::domain::{Activity, Label, Summary, Total, summarize};
use crate::error::{AppError, ReadProblems};
use crate::extract::{Paged, Query};
use crate::store::ActivityFilter;

/// Days a summary covers when no range is given: the last 30, today included.
const DEFAULT_DAYS: u64 = 30;
/// The longest range a summary or report adds up: a little over a year.
pub const MAX_SUMMARY_DAYS: i64 = 400;

/// A filter as the report's form sends it: a name, or empty for none.
pub struct LabelFilter;

impl utoipa::PartialSchema for LabelFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        empty_or(<Label as utoipa::PartialSchema>::schema())
    }
}

impl ToSchema for LabelFilter {}

/// A day as the report's form sends it (`YYYY-MM-DD`), or empty for none.
pub struct DateFilter;

impl utoipa::PartialSchema for DateFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        let date = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)));
        empty_or(date.into())
    }
}

impl ToSchema for DateFilter {}

fn empty_or(
    schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let empty = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(0));
    OneOfBuilder::new().item(empty).item(schema).into()
}

/// Which entries: every filter given must match; dates are inclusive (`YYYY-MM-DD`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    #[param(value_type = Option<LabelFilter>)]
    customer: Option<String>,
    #[param(value_type = Option<LabelFilter>)]
    project: Option<String>,
    #[param(value_type = Option<LabelFilter>)]
    engineer: Option<String>,
    /// The first day, 0000-01-01 to 9999-12-31; a summary covers at most 400 days.
    #[param(value_type = Option<DateFilter>)]
    from: Option<String>,
    /// The last day; not before `from`.
    #[param(value_type = Option<DateFilter>)]
    to: Option<String>,
}

impl RangeQuery {
    /// The filter; with `summary`, a missing range is the last 30 days, and a range is at most
    /// `MAX_SUMMARY_DAYS` long.
    fn filter(self, summary: bool) -> Result<ActivityFilter, AppError> {
        let mut errors = crate::domain::Fields::default();
        // The report's form sends every field: an empty one is no filter.
        let given = |raw: Option<String>| raw.filter(|r| !r.is_empty());
        let label = |errors: &mut crate::domain::Fields, name: &str, raw: Option<String>| {
            errors.optional(name, given(raw), Label::parse)
        };
        let date = |errors: &mut crate::domain::Fields, name: &str, raw: Option<String>| {
            errors.optional(name, given(raw), |d| {
                NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .ok()
                    .filter(|date| (0..=9999).contains(&chrono::Datelike::year(date)))
                    .ok_or_else(|| {
                        "must be a date from 0000-01-01 to 9999-12-31, such as 2026-11-22"
                            .to_owned()
                    })
            })
        };
        let mut filter = ActivityFilter {
            customer: label(&mut errors, "customer", self.customer),
            project: label(&mut errors, "project", self.project),
            engineer: label(&mut errors, "engineer", self.engineer),
            from: date(&mut errors, "from", self.from),
            to: date(&mut errors, "to", self.to),
        };
        if summary {
            let to = *filter.to.get_or_insert_with(today);
            if filter.from.is_none() {
                filter.from = to.checked_sub_days(chrono::Days::new(DEFAULT_DAYS - 1));
            }
        }
        if let (Some(from), Some(to)) = (filter.from, filter.to) {
            if from > to {
                errors.error("from", "must not be after to");
            } else if summary && (to - from).num_days() >= MAX_SUMMARY_DAYS {
                errors.error(
                    "from",
                    format!("a summary covers at most {MAX_SUMMARY_DAYS} days; ask for several"),
                );
            }
        }
        errors.finish(|| Some(filter)).map_err(AppError::Validation)
    }
}

/// List recorded activities by date, filtered and paginated.
#[utoipa::path(get, path = "/metrics-form/entries", tag = "metrics form", operation_id = "list_activities",
    security(("bearer" = ["activities:read"])), params(RangeQuery, PageQuery),
    responses((status = 200, description = "A page of activities", body = ListResponse<Activity>), ReadProblems))]
pub async fn entries(
    State(state): State<AppState>,
    Paged(page, range): Paged<PageQuery, RangeQuery>,
) -> Result<axum::Json<ListResponse<Activity>>, AppError> {
    let filter = range.filter(false)?;
    Ok(axum::Json(
        state
            .store
            .list_activities(&filter, &page.page()?)
            .await?
            .into(),
    ))
}

/// The columns of the CSV export, in order.
const CSV_HEADER: [&str; 9] = [
    "date",
    "engineer",
    "customer",
    "project",
    "activity_type",
    "hours",
    "description",
    "id",
    "created_at",
];

/// One RFC 4180 cell. Whatever a spreadsheet could run as a formula gets a `'` first so it
/// stays text: the cell's start (`=`, `+`, `-`, `@`, tab or carriage return), and the start of
/// every piece a spreadsheet splitting on `,`, `;` or tabs (another locale's separator) would
/// make of it.
fn csv_cell(value: &str) -> String {
    let mut defused = String::with_capacity(value.len() + 1);
    let mut at_start = true;
    for c in value.chars() {
        let formula =
            matches!(c, '=' | '+' | '-' | '@') || (matches!(c, '\t' | '\r') && defused.is_empty());
        if at_start && formula {
            defused.push('\'');
        }
        defused.push(c);
        at_start = matches!(c, ',' | ';' | '\t' | '\r' | '\n');
    }
    let value = defused;
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// CSV rows, each ending in CRLF; the header row first when `header`.
fn csv(entries: &[Activity], header: bool) -> String {
    let mut out = String::new();
    if header {
        out.push_str(&CSV_HEADER.join(","));
        out.push_str("\r\n");
    }
    for a in entries {
        let row = [
            a.date.to_string(),
            a.engineer.to_string(),
            a.customer.to_string(),
            a.project.to_string(),
            a.activity_type.to_string(),
            a.hours.to_string(),
            a.description.clone(),
            a.id.clone(),
            a.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ];
        let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Rows the CSV export reads and sends at a time.
const CSV_PAGE: usize = 500;

/// The same selection as `/metrics-form/entries`, all of it, as CSV (RFC 4180), streamed a
/// page at a time so that any selection takes the same memory.
#[utoipa::path(get, path = "/metrics-form/entries.csv", tag = "metrics form", operation_id = "export_activities",
    security(("bearer" = ["activities:read"])), params(RangeQuery),
    responses((status = 200, description = "CSV with a header row", content_type = "text/csv", body = String), ReadProblems))]
pub async fn entries_csv(
    State(state): State<AppState>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, AppError> {
    let filter = q.filter(false)?;
    let (first, rest) = crate::activities::pages(&state.store, filter, CSV_PAGE).await?;
    let head = bytes::Bytes::from(csv(&first, true));
    let rest = futures_util::StreamExt::map(rest, |page| {
        page.map(|p| bytes::Bytes::from(csv(&p, false)))
    });
    let body = futures_util::StreamExt::chain(futures_util::stream::once(async { Ok(head) }), rest);
    let mut response = axum::body::Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"activities.csv\""),
    );
    Ok(response)
}

/// Hours summed over a date range (default: the last 30 days).
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryResponse {
    #[schema(value_type = String, format = Date)]
    from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    to: NaiveDate,
    #[serde(flatten)]
    summary: Summary,
}

async fn summary_of(state: &AppState, q: RangeQuery) -> Result<SummaryResponse, AppError> {
    let filter = q.filter(true)?;
    let entries = crate::activities::all(&state.store, &filter).await?;
    Ok(SummaryResponse {
        from: filter.from.unwrap_or_default(),
        to: filter.to.unwrap_or_default(),
        summary: summarize(&entries),
    })
}

/// Hours summed by customer, project and engineer over a date range.
#[utoipa::path(get, path = "/metrics-form/summary", tag = "metrics form", operation_id = "summarize_activities",
    security(("bearer" = ["activities:read"])), params(RangeQuery),
    responses((status = 200, description = "Hours summed", body = SummaryResponse), ReadProblems))]
pub async fn summary(
    State(state): State<AppState>,
    Query(q): Query<RangeQuery>,
) -> Result<axum::Json<SummaryResponse>, AppError> {
    Ok(axum::Json(summary_of(&state, q).await?))
}

struct Bar {
    label: String,
    hours: f64,
    width: u32,
    y: u32,
}

/// How many customers the chart shows.
const MAX_BARS: usize = 15;
const BAR_PITCH: u32 = 28;
const BAR_SPACE: f64 = 380.0;

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    from: NaiveDate,
    to: NaiveDate,
    range_query: String,
    summary: Summary,
    bars: Vec<Bar>,
    chart_height: u32,
    tables: Vec<(&'static str, &'static str, &'static str, Vec<Total>)>,
}

/// The summary as a page: tables, a bar chart of hours per customer, links to the CSV.
#[utoipa::path(get, path = "/metrics-form/report", tag = "metrics form", operation_id = "report_activities",
    security(("bearer" = ["activities:read"])), params(RangeQuery),
    responses(
        (status = 200, description = "The report, as HTML", content_type = "text/html", body = String),
        (status = 303, description = "A browser without a session: to the sign-in page", headers(("Location" = String))),
        ReadProblems,
    ))]
pub async fn report(
    State(state): State<AppState>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, AppError> {
    let SummaryResponse { from, to, summary } = summary_of(&state, q).await?;
    let max = summary
        .by_customer
        .first()
        .map_or(1.0, |t| t.hours.max(0.25));
    let bars: Vec<Bar> = summary
        .by_customer
        .iter()
        .take(MAX_BARS)
        .zip(0u32..)
        .map(|(t, i)| Bar {
            label: t.name.clone(),
            hours: t.hours,
            width: ((t.hours / max) * BAR_SPACE).round().max(1.0) as u32,
            y: i * BAR_PITCH,
        })
        .collect();
    let page = ReportPage {
        from,
        to,
        range_query: format!("from={from}&to={to}"),
        chart_height: bars.len() as u32 * BAR_PITCH + 4,
        bars,
        tables: vec![
            (
                "By customer",
                "by-customer",
                "Customer",
                summary.by_customer.clone(),
            ),
            (
                "By project",
                "by-project",
                "Customer / project",
                summary.by_project.clone(),
            ),
            (
                "By engineer",
                "by-engineer",
                "Engineer",
                summary.by_engineer.clone(),
            ),
        ],
        summary,
    };
    let html = page.render().map_err(|e| AppError::Internal(Box::new(e)))?;
    Ok((StatusCode::OK, Html(html)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("=SUM(A1:A9)"), "'=SUM(A1:A9)");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-2"), "'-2");
        assert_eq!(csv_cell("@cmd"), "'@cmd");
        assert_eq!(
            csv_cell("=HYPERLINK(\"x\",\"y\")"),
            "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\""
        );
        assert_eq!(csv_cell("x;=cmd|' /C calc'!A0"), "x;'=cmd|' /C calc'!A0");
        assert_eq!(csv_cell("a,+1"), "\"a,'+1\"");
        assert_eq!(csv_cell("\tlead"), "'\tlead");
        assert_eq!(csv_cell("one\n@two"), "\"one\n'@two\"");
        assert_eq!(csv_cell("in-between, a - b"), "\"in-between, a - b\"");
    }
}
