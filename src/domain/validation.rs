use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::{ClassName, Classes, ParamName, Parameters};

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field, e.g. `classes.ntp` or `parent`.
    #[schema(example = "environment_name")]
    pub field: String,
    #[schema(example = "is required")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Longest description accepted, in characters.
const MAX_DESCRIPTION: usize = 1000;

/// Collects every problem with a request's fields so that one answer names them all.
#[derive(Debug, Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn required<T>(
        &mut self,
        field: &str,
        raw: Option<String>,
        parse: fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match raw {
            Some(raw) => self.parse(field, &raw, parse),
            None => {
                self.error(field, "is required");
                None
            }
        }
    }

    pub fn optional<T>(
        &mut self,
        field: &str,
        raw: Option<String>,
        parse: fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        raw.and_then(|raw| self.parse(field, &raw, parse))
    }

    fn parse<T>(
        &mut self,
        field: &str,
        raw: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        parse(raw)
            .map_err(|message| self.error(field, message))
            .ok()
    }

    pub fn description(&mut self, raw: Option<String>) -> Option<String> {
        let raw = raw?;
        if raw.chars().count() > MAX_DESCRIPTION {
            self.error(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            );
        }
        Some(raw)
    }

    pub fn parameters(
        &mut self,
        field: &str,
        raw: BTreeMap<String, serde_json::Value>,
    ) -> Parameters {
        raw.into_iter()
            .filter_map(|(name, value)| {
                let path = format!("{field}.{name}");
                let name = self.parse(&path, &name, ParamName::parse)?;
                self.yaml_keys(&path, &value);
                Some((name, value))
            })
            .collect()
    }

    /// Refuses keys, at any depth of a value, that Puppet's YAML parser could not read.
    fn yaml_keys(&mut self, field: &str, value: &serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    let path = format!("{field}.{}", key.chars().take(40).collect::<String>());
                    if !crate::yaml::key_fits(key) {
                        self.error(
                            path.clone(),
                            format!(
                                "keys may be at most {} characters once written as YAML (control characters count six); Puppet could not read this one",
                                crate::yaml::MAX_KEY
                            ),
                        );
                    }
                    self.yaml_keys(&path, inner);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    self.yaml_keys(&format!("{field}.{i}"), inner);
                }
            }
            _ => {}
        }
    }

    pub fn classes(
        &mut self,
        field: &str,
        raw: BTreeMap<String, Option<BTreeMap<String, serde_json::Value>>>,
    ) -> Classes {
        raw.into_iter()
            .filter_map(|(name, params)| {
                let path = format!("{field}.{name}");
                let class = self.parse(&path, &name, ClassName::parse);
                let params = self.parameters(&path, params.unwrap_or_default());
                Some((class?, params))
            })
            .collect()
    }

    /// The finished value, or every error found.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldError>> {
        if self.errors.is_empty()
            && let Some(value) = build()
        {
            return Ok(value);
        }
        Err(self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Certname;
    use serde_json::json;

    #[test]
    fn collects_every_error() {
        let mut f = Fields::default();
        let name = f.required("unique_name", Some("BAD".into()), Certname::parse);
        let missing = f.required("environment_name", None, Certname::parse);
        let classes = f.classes(
            "classes",
            BTreeMap::from([(
                "Bad-Class".to_owned(),
                Some(BTreeMap::from([("Bad-Param".to_owned(), json!(1))])),
            )]),
        );
        assert!(name.is_none() && missing.is_none() && classes.is_empty());
        let errors = f.finish(|| Some(())).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "unique_name",
                "environment_name",
                "classes.Bad-Class",
                "classes.Bad-Class.Bad-Param"
            ]
        );
    }

    #[test]
    fn null_class_parameters_mean_none() {
        let mut f = Fields::default();
        let classes = f.classes("classes", BTreeMap::from([("ntp".to_owned(), None)]));
        assert!(f.finish(|| Some(())).is_ok());
        assert_eq!(classes.len(), 1);
        assert!(classes.values().all(|p| p.is_empty()));
    }

    #[test]
    fn long_descriptions_are_refused() {
        let mut f = Fields::default();
        f.description(Some("x".repeat(MAX_DESCRIPTION + 1)));
        assert!(f.finish(|| Some(())).is_err());
    }
}
