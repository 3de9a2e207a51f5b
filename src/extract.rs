//! Extractors whose rejections are problem documents, so malformed input gets the same
//! answer shape as every other error.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::Value;

use crate::domain::FieldError;
use crate::error::AppError;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A query string, refused with 400 when malformed or carrying unknown parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

/// A listing's query string: the page's parameters (`limit`, `cursor`) as `P`, every other
/// as the filter `F`. Each refuses a parameter it does not know (400), as `Query` does, so
/// one page type serves every listing, whatever its filter.
pub struct Paged<P, F>(pub P, pub F);

/// The parameters a listing's page takes.
const PAGE_PARAMETERS: [&str; 2] = ["limit", "cursor"];

impl<S: Send + Sync, P: DeserializeOwned, F: DeserializeOwned> FromRequestParts<S> for Paged<P, F> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        fn parse<T: DeserializeOwned>(query: &str) -> Result<T, AppError> {
            serde_urlencoded::from_str(query).map_err(|e| {
                AppError::BadRequest(format!(
                    "invalid query string: Failed to deserialize query string: {e}"
                ))
            })
        }
        let query = parts.uri.query().unwrap_or_default();
        // Split by the decoded name (`lim%69t` is `limit`, as `Query` reads it), then each side
        // encoded again for its own parse.
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            AppError::BadRequest(format!(
                "invalid query string: Failed to deserialize query string: {e}"
            ))
        })?;
        let (page, filter): (Vec<_>, Vec<_>) = pairs
            .into_iter()
            .partition(|(name, _)| PAGE_PARAMETERS.contains(&name.as_str()));
        let encode =
            |pairs: Vec<(String, String)>| serde_urlencoded::to_string(pairs).unwrap_or_default();
        Ok(Paged(parse(&encode(page))?, parse(&encode(filter))?))
    }
}

/// Path parameters, refused with 400 when malformed.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::BadRequest(format!("invalid query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> Self {
        AppError::BadRequest(r.body_text())
    }
}

impl From<BytesRejection> for AppError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge(format!(
                "the request body is larger than {MAX_BODY_BYTES} bytes"
            ))
        } else {
            AppError::BadRequest(r.body_text())
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(format!(
                "the request body is larger than {MAX_BODY_BYTES} bytes"
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType(
                "the request body must be JSON, sent with Content-Type: application/json".into(),
            ),
            _ => AppError::BadRequest(r.body_text()),
        }
    }
}

/// A JSON body checked field by field: unknown fields and wrong types are answered with
/// 422 naming each field, never dropped silently.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let axum::Json(value) = axum::Json::<Value>::from_request(req, state).await?;
        parse_body(value).map(Json)
    }
}

/// Turns a JSON object into `T`, naming every unknown field and the first mistyped one.
pub fn parse_body<T: DeserializeOwned>(value: Value) -> Result<T, AppError> {
    let Value::Object(mut map) = value else {
        return Err(AppError::invalid("", "the body must be a JSON object"));
    };
    let known = field_names::<T>();
    let mut errors = Vec::new();
    map.retain(|key, _| {
        let is_known = known.contains(&key.as_str());
        if !is_known {
            errors.push(FieldError::new(key, "is not a known field"));
        }
        is_known
    });
    match serde_path_to_error::deserialize(Value::Object(map)) {
        Ok(parsed) if errors.is_empty() => Ok(parsed),
        Ok(_) => Err(AppError::Validation(errors)),
        Err(e) => {
            errors.push(FieldError::new(e.path().to_string(), e.inner().to_string()));
            Err(AppError::Validation(errors))
        }
    }
}

/// The field names a struct's `Deserialize` accepts, asked of serde itself.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The version an `If-Match` header requires, if any (`*` requires only existence).
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let text = value.to_str().unwrap_or_default().trim();
        if text == "*" {
            return Ok(IfMatch(None));
        }
        if text.starts_with("W/") {
            return Err(AppError::PreconditionFailed(
                "a weak entity tag never matches If-Match".into(),
            ));
        }
        // The quotes are the standard's; a bare version is taken as meant.
        let tag = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        Some(tag)
            .filter(|t| !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .map(|v| IfMatch(Some(v)))
            .ok_or_else(|| {
                AppError::BadRequest(
                    "If-Match must be one entity tag as sent in ETag, such as \"3\", or *".into(),
                )
            })
    }
}

/// The `ETag` value for a version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Body {
        name: Option<String>,
        #[serde(default)]
        count: Option<u32>,
    }

    #[test]
    fn reads_field_names_from_serde() {
        assert_eq!(field_names::<Body>(), ["name", "count"]);
    }

    fn fields(err: AppError) -> Vec<String> {
        match err {
            AppError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn names_every_unknown_field_and_the_mistyped_one() {
        let err = parse_body::<Body>(json!({"nme": "x", "cont": 1, "count": "two"})).unwrap_err();
        assert_eq!(fields(err), ["cont", "nme", "count"]);
    }

    #[test]
    fn refuses_non_objects() {
        assert_eq!(fields(parse_body::<Body>(json!([1])).unwrap_err()), [""]);
    }

    #[test]
    fn parses_good_bodies() {
        let body: Body = parse_body(json!({"name": "x"})).unwrap();
        assert_eq!(body.name.as_deref(), Some("x"));
    }
}
