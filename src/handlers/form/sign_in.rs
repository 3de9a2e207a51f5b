//! Signing in to the metrics form without the load balancer: a token becomes a session
//! cookie; signing out clears it. Both refuse cross-site posts.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::session;
use crate::error::AppError;
use crate::extract::Query;

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    error: Option<String>,
    signed_out: bool,
}

fn page(status: StatusCode, error: Option<String>, signed_out: bool) -> Result<Response, AppError> {
    let html = SignInPage { error, signed_out }
        .render()
        .map_err(|e| AppError::Internal(Box::new(e)))?;
    Ok((status, Html(html)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SignInQuery {
    /// Set after signing out, to say so.
    signed_out: Option<bool>,
}

/// The sign-in page (HTML).
#[utoipa::path(get, path = "/sign-in", tag = "sign-in", operation_id = "sign_in_page", security(()), params(SignInQuery),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 400, description = "A malformed query", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn page_get(Query(query): Query<SignInQuery>) -> Result<Response, AppError> {
    page(StatusCode::OK, None, query.signed_out.unwrap_or(false))
}

/// What the sign-in form posts.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignInForm {
    token: String,
}

fn refuse_cross_site(headers: &HeaderMap) -> Result<(), AppError> {
    if session::same_site(headers) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "cross-site form posts are refused".into(),
        ))
    }
}

fn cookie(value: String) -> Result<HeaderValue, AppError> {
    HeaderValue::from_str(&value).map_err(|e| AppError::Internal(Box::new(e)))
}

/// Sign in with a token: 303 to the form with a session cookie, or the page again (401).
#[utoipa::path(post, path = "/sign-in", tag = "sign-in", operation_id = "sign_in", security(()),
    request_body(content = SignInForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: to the form, with the session cookie", headers(("Set-Cookie" = String), ("Location" = String))),
        (status = 400, description = "No token sent: the page again", content_type = "text/html", body = String),
        (status = 401, description = "Not a valid token: the page with the reason", content_type = "text/html", body = String),
        (status = 403, description = "A cross-site post", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_in(
    State(state): State<AppState>,
    _: Query<super::super::NoQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    refuse_cross_site(&headers)?;
    let Ok(form) = serde_urlencoded::from_bytes::<SignInForm>(&body) else {
        return page(StatusCode::BAD_REQUEST, Some("Send a token.".into()), false);
    };
    let token = form.token.trim();
    let (id, identity) = match state.auth.start_session(state.ground(), token).await {
        Ok(started) => started,
        Err(AppError::Unauthorized(why)) => {
            return page(
                StatusCode::UNAUTHORIZED,
                Some(format!("Not signed in: {why}.")),
                false,
            );
        }
        Err(other) => return Err(other),
    };
    tracing::info!(actor = %identity.actor, "signed in to the metrics form");
    let mut response = Redirect::to("/metrics-form").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(session::start(&id, &headers))?);
    Ok(response)
}

/// Sign out: ends the session and clears its cookie.
#[utoipa::path(post, path = "/sign-out", tag = "sign-in", operation_id = "sign_out", security(()),
    responses(
        (status = 303, description = "Signed out: to the sign-in page", headers(("Set-Cookie" = String), ("Location" = String))),
        (status = 403, description = "A cross-site post", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_out(
    State(state): State<AppState>,
    _: Query<super::super::NoQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    refuse_cross_site(&headers)?;
    if let Some(id) = session::cookie(&headers) {
        state.auth.end_session(&state.store, &id).await?;
    }
    let mut response = Redirect::to("/sign-in?signed_out=true").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(session::end(&headers))?);
    Ok(response)
}
