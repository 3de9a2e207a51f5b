//! The metrics form, one of enc's two products: engineers record work for customer projects,
//! by HTML form or JSON (here); what was recorded, listed, summed and reported
//! (`activities.rs`); signing in without the load balancer (`sign_in.rs`). Below the HTTP
//! layer: `crate::activities` (the service), `domain::activity`, `store::activities`,
//! `store::sessions` and `auth::session`.

pub mod activities;
pub mod sign_in;

use askama::Template;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use bytes::Bytes;
use chrono::NaiveDate;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Caller, session};
use crate::domain::{
    Activity, ActivityType, FieldError, Fields, Hours, Label, MAX_ACTIVITY_DESCRIPTION, Scope, now,
    parse_work_date,
};
use crate::error::{AppError, Problem};
use crate::extract::{Query, parse_body};
use crate::store::StoreError;

/// An activity as the form or a JSON client sends it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(example = json!({
    "engineer": "alice", "customer": "ACME Corp", "project": "Website relaunch",
    "activity_type": "development", "date": "2026-11-20", "hours": 2.5,
    "description": "Migrated the staging database"
}))]
#[serde(deny_unknown_fields)]
pub struct ActivityBody {
    /// Who did the work; a person signed in through the load balancer is the engineer
    /// whatever this says.
    #[schema(value_type = Label, required = true)]
    engineer: Option<String>,
    #[schema(value_type = Label, required = true)]
    customer: Option<String>,
    #[schema(value_type = Label, required = true)]
    project: Option<String>,
    #[schema(value_type = ActivityType, required = true)]
    activity_type: Option<String>,
    /// The day (`YYYY-MM-DD`), from 2000-01-01 to tomorrow; today when absent.
    #[schema(value_type = Option<String>, format = Date)]
    date: Option<String>,
    /// 0.25 to 24 in steps of 0.25.
    #[schema(value_type = f64, required = true, minimum = 0.25, maximum = 24, multiple_of = 0.25)]
    hours: Option<HoursField>,
    #[schema(max_length = 2000)]
    description: Option<String>,
    /// Sending an entry again with the same key records it once (the form sends one; JSON
    /// clients may use the `Idempotency-Key` header instead): 1 to 128 letters, digits, `-`,
    /// `_`, `.` or `:`.
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    idempotency_key: Option<String>,
}

/// Hours as JSON sends them (a number) or as a form does (text).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum HoursField {
    Number(f64),
    Text(String),
}

impl ActivityBody {
    /// The entry as `caller` records it: a person signed in through the load balancer is
    /// its engineer, whatever was typed.
    fn recorded_by(
        mut self,
        caller: &Caller,
        today: NaiveDate,
    ) -> Result<Activity, Vec<FieldError>> {
        if let Some(person) = &caller.0.person {
            self.engineer = Some(person.clone());
        }
        let mut activity = self.into_activity(today)?;
        activity.recorded_by = Some(caller.actor().to_owned());
        Ok(activity)
    }

    fn into_activity(self, today: NaiveDate) -> Result<Activity, Vec<FieldError>> {
        let mut f = Fields::default();
        let text = |raw: Option<String>| raw.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
        let engineer = f.required("engineer", text(self.engineer), Label::parse);
        let customer = f.required("customer", text(self.customer), Label::parse);
        let project = f.required("project", text(self.project), Label::parse);
        let activity_type = f.required(
            "activity_type",
            text(self.activity_type),
            ActivityType::parse,
        );
        // Absent: today. Sent, it must be a date: the form's field is required (and filled
        // with today's), so an empty one is not "absent".
        let date = match self.date {
            None => Some(today),
            Some(raw) => parse_work_date(&raw, today)
                .map_err(|e| f.error("date", e))
                .ok(),
        };
        let hours = match self.hours {
            None => {
                f.error("hours", "is required");
                None
            }
            Some(HoursField::Number(n)) => Hours::from_f64(n).map_err(|e| f.error("hours", e)).ok(),
            Some(HoursField::Text(t)) if t.trim().is_empty() => {
                f.error("hours", "is required");
                None
            }
            Some(HoursField::Text(t)) => Hours::parse(&t).map_err(|e| f.error("hours", e)).ok(),
        };
        // As sent, before trailing whitespace goes: the limit the document states.
        let raw = self.description.unwrap_or_default();
        let description = raw.trim_end().to_owned();
        if raw.chars().count() > MAX_ACTIVITY_DESCRIPTION {
            f.error(
                "description",
                format!("must be at most {MAX_ACTIVITY_DESCRIPTION} characters"),
            );
        }
        f.finish(|| {
            Some(Activity {
                id: uuid::Uuid::now_v7().to_string(),
                engineer: engineer?,
                customer: customer?,
                project: project?,
                activity_type: activity_type?,
                date: date?,
                hours: hours?,
                description,
                created_at: now(),
                recorded_by: None,
            })
        })
    }
}

pub(super) fn today() -> NaiveDate {
    now().date_naive()
}

/// One field of the page: what was entered, and what is wrong with it.
#[derive(Debug, Default)]
struct Field {
    name: &'static str,
    label: &'static str,
    autocomplete: &'static str,
    value: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "metrics_form.html")]
struct FormPage {
    saved: Option<String>,
    /// Sent back with the form, so that posting it twice records it once.
    idempotency_key: String,
    /// The engineer, when the load balancer signed them in: not to be typed.
    signed_in_as: Option<String>,
    has_errors: bool,
    text_fields: [Field; 3],
    activity_type: Field,
    date: Field,
    hours: Field,
    description: Field,
    types: Vec<(&'static str, String)>,
    max_date: String,
}

impl FormPage {
    fn new(
        values: &ActivityBody,
        errors: &[FieldError],
        saved: Option<String>,
        caller: &Caller,
    ) -> Self {
        let field = |name: &'static str,
                     label: &'static str,
                     autocomplete: &'static str,
                     value: &Option<String>| Field {
            name,
            label,
            autocomplete,
            value: value.clone().unwrap_or_default(),
            error: errors
                .iter()
                .find(|e| e.field == name)
                .map(|e| format!("{} {}", label, e.message)),
        };
        let hours = match &values.hours {
            Some(HoursField::Number(n)) => Some(n.to_string()),
            Some(HoursField::Text(t)) => Some(t.clone()),
            None => None,
        };
        let today = today();
        let engineer = caller.0.person.clone().or_else(|| values.engineer.clone());
        let idempotency_key = values
            .idempotency_key
            .clone()
            .filter(|k| crate::activities::valid_key(k))
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        FormPage {
            saved,
            idempotency_key,
            signed_in_as: caller.0.person.clone(),
            has_errors: !errors.is_empty(),
            text_fields: [
                field("engineer", "Engineer", "name", &engineer),
                field("customer", "Customer", "organization", &values.customer),
                field("project", "Project", "off", &values.project),
            ],
            activity_type: field(
                "activity_type",
                "Activity type",
                "off",
                &values.activity_type,
            ),
            date: field(
                "date",
                "Date",
                "off",
                &values.date.clone().or(Some(today.to_string())),
            ),
            hours: field("hours", "Hours", "off", &hours),
            description: field("description", "Description", "off", &values.description),
            types: ActivityType::ALL
                .iter()
                .map(|t| {
                    let name = t.as_str();
                    (name, format!("{}{}", name[..1].to_uppercase(), &name[1..]))
                })
                .collect(),
            max_date: (today + chrono::Days::new(1)).to_string(),
        }
    }

    fn render_html(&self, status: StatusCode) -> Result<Response, AppError> {
        let html = self.render().map_err(|e| AppError::Internal(Box::new(e)))?;
        Ok((status, Html(html)).into_response())
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FormQuery {
    /// The id of the entry just saved, to confirm it.
    saved: Option<String>,
}

/// The HTML form (works without JavaScript).
#[utoipa::path(get, path = "/metrics-form", tag = "metrics form", operation_id = "metrics_form", security(()), params(FormQuery),
    responses(
        (status = 200, description = "The form, as HTML", content_type = "text/html", body = String),
        (status = 400, description = "A malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn form(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<FormQuery>,
) -> Result<Response, AppError> {
    // The page is open; what was saved is shown only to those who may record or read work.
    let may_see = caller.0.grants(Scope::ActivitiesWrite) || caller.0.grants(Scope::ActivitiesRead);
    let saved = match query
        .saved
        .filter(|id| may_see && uuid::Uuid::parse_str(id).is_ok())
    {
        Some(id) => match state.store.get_activity(&id).await {
            Ok(a) => Some(a),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    // After a save, keep who and for whom: the next entry is usually the same.
    let values = saved
        .as_ref()
        .map_or_else(ActivityBody::default, |a| ActivityBody {
            engineer: Some(a.engineer.to_string()),
            customer: Some(a.customer.to_string()),
            project: Some(a.project.to_string()),
            activity_type: Some(a.activity_type.to_string()),
            ..ActivityBody::default()
        });
    let confirmation = saved.map(|a| {
        format!(
            "{} h of {} for {} / {} by {} on {}.",
            a.hours, a.activity_type, a.customer, a.project, a.engineer, a.date
        )
    });
    FormPage::new(&values, &[], confirmation, &caller).render_html(StatusCode::OK)
}

/// Record an activity. A form post answers 303 back to the form (or 422 with the form and
/// its errors); a JSON post answers 201 with the entry (or problem+json).
#[utoipa::path(post, path = "/metrics-form", tag = "metrics form", operation_id = "record_activity",
    security(("bearer" = ["activities:write"])),
    request_body(content(
        (ActivityBody = "application/json"),
        (ActivityBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 201, description = "Recorded (JSON)", body = Activity),
        (status = 303, description = "Recorded (form): back to the form, which confirms it",
            headers(("Location" = String))),
        (status = 400, description = "Malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No identity, or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The identity may not record work, or a cross-site form post", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor a form", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid: the form with its errors (HTML), or problem+json",
            content((Problem = "application/problem+json"), (String = "text/html"))),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    _: Query<super::NoQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let result = record(&state, &caller, &headers, body).await;
    let outcome = match &result {
        Ok(r) if r.status().is_redirection() || r.status() == StatusCode::CREATED => "saved",
        Ok(_) | Err(AppError::Validation(_)) => "invalid",
        Err(_) => "error",
    };
    state
        .metrics
        .form_submissions
        .with_label_values(&[outcome])
        .inc();
    result
}

async fn record(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let body = body?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media.as_str() {
        "application/x-www-form-urlencoded" => {
            // Another site's page must not post work in a signed-in person's name.
            if !session::same_site(headers) {
                return Err(AppError::Forbidden("cross-site form posts are refused".into()));
            }
            let values: ActivityBody = serde_urlencoded::from_bytes(&body)
                .map_err(|e| AppError::BadRequest(format!("malformed form: {e}")))?;
            match values.clone().recorded_by(caller, today()) {
                Ok(activity) => {
                    let key = values.idempotency_key.as_deref();
                    let (saved, _) = crate::activities::save(&state.store, activity, key).await?;
                    // `Redirect::to` is 303 See Other: the browser GETs the form again.
                    Ok(Redirect::to(&format!("/metrics-form?saved={}", saved.id)).into_response())
                }
                Err(errors) => FormPage::new(&values, &errors, None, caller)
                    .render_html(StatusCode::UNPROCESSABLE_ENTITY),
            }
        }
        "application/json" => {
            let value = serde_json::from_slice(&body)
                .map_err(|e| AppError::BadRequest(format!("malformed JSON: {e}")))?;
            let values: ActivityBody = parse_body(value)?;
            let header = headers
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
            let key = header.or_else(|| values.idempotency_key.clone());
            let activity = values
                .recorded_by(caller, today())
                .map_err(AppError::Validation)?;
            let (saved, new) = crate::activities::save(&state.store, activity, key.as_deref()).await?;
            let mut response = (StatusCode::CREATED, axum::Json(saved)).into_response();
            if !new {
                response.headers_mut().insert(
                    "idempotent-replayed",
                    axum::http::HeaderValue::from_static("true"),
                );
            }
            Ok(response)
        }
        _ => Err(AppError::UnsupportedMediaType(
            "send the activity as a form (application/x-www-form-urlencoded) or as application/json".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(hours: Option<HoursField>) -> ActivityBody {
        ActivityBody {
            engineer: Some(" alice ".into()),
            customer: Some("ACME".into()),
            project: Some("Web".into()),
            activity_type: Some("support".into()),
            date: None,
            hours,
            description: Some("fixed it  \n".into()),
            idempotency_key: None,
        }
    }

    #[test]
    fn trims_and_defaults_the_date() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let a = body(Some(HoursField::Text("1.5".into())))
            .into_activity(today)
            .unwrap();
        assert_eq!(a.engineer.as_str(), "alice");
        assert_eq!(a.date, today);
        assert_eq!(a.hours.quarters(), 6);
        assert_eq!(a.description, "fixed it");
        assert!(
            body(Some(HoursField::Number(0.3)))
                .into_activity(today)
                .is_err()
        );
        let errors = body(None).into_activity(today).unwrap_err();
        assert_eq!(errors[0].field, "hours");
    }

    #[test]
    fn a_description_is_measured_as_sent() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let hours = || Some(HoursField::Text("1".into()));
        let mut at_limit = body(hours());
        at_limit.description = Some("x".repeat(MAX_ACTIVITY_DESCRIPTION));
        assert!(at_limit.into_activity(today).is_ok());
        // Trailing whitespace past the limit is still past it: the document says so.
        let mut padded = body(hours());
        padded.description = Some(format!(
            "{}{}",
            "x".repeat(10),
            "\u{c}".repeat(MAX_ACTIVITY_DESCRIPTION)
        ));
        let errors = padded.into_activity(today).unwrap_err();
        assert_eq!(errors[0].field, "description");
    }
}
