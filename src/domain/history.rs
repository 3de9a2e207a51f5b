//! Change history: one immutable revision per change of a node, node group, environment or
//! token, and what a change of classification is.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::resources::rfc3339;
use super::{Classes, Classification, EnvironmentName, Parameters};

/// What a change did to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Create,
    Replace,
    Delete,
    /// An earlier version written again as a new one (`restored_from`).
    Restore,
}

/// One change of one object, as the history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Revision {
    /// The kind of object: `node`, `node_group`, `environment` or `token`.
    #[schema(example = "node_group")]
    pub kind: String,
    /// The object's key: its name, or `environment/cluster`.
    #[schema(example = "web_servers")]
    pub key: String,
    /// The object's version this change made (a deletion takes the next number too, so a
    /// version names one revision even after the object is made again).
    #[schema(example = 3, minimum = 1)]
    pub version: u64,
    pub operation: Operation,
    /// Who made the change.
    #[schema(example = "ci-deploy")]
    pub actor: String,
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// The `x-request-id` of the request that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For a restore: the version whose content was written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<u64>,
    /// For a change made with `force=true`: the nodes it gave conflicting values, and the keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub forced_conflicts: Option<Value>,
    /// For a change made by applying a classification tree: the plan applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The whole object as this change left it, as `GET` showed it; absent for a deletion.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub object: Option<Value>,
    /// RFC 6902 JSON Patch from the previous revision's object (from `null` for the first,
    /// to `null` for a deletion); `null` when the change is too large to keep twice.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub patch: Option<Value>,
}

/// An environment before and after: `null` where the node had none.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EnvironmentChange {
    #[schema(value_type = Option<String>)]
    pub from: Option<EnvironmentName>,
    #[schema(value_type = Option<String>)]
    pub to: Option<EnvironmentName>,
}

/// One changed parameter: top-scope (`class` absent) or a class's.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ParameterChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub name: String,
    /// Any JSON value; `null` where it was absent.
    pub from: Option<Value>,
    /// Any JSON value; `null` where it is absent.
    pub to: Option<Value>,
}

/// How one classification differs from another.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ClassificationDiff {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentChange>,
    pub classes_added: Vec<String>,
    pub classes_removed: Vec<String>,
    /// Class parameters and top-scope parameters whose values differ.
    pub parameters_changed: Vec<ParameterChange>,
}

impl ClassificationDiff {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The changes from `a` to `b`; `None` is no classification (no classes, no parameters, no
/// environment). Parameters are compared as JSON values.
pub fn diff(a: Option<&Classification>, b: Option<&Classification>) -> ClassificationDiff {
    let environment = |c: Option<&Classification>| c.map(|c| c.environment.clone());
    let (env_a, env_b) = (environment(a), environment(b));
    let environment = (env_a != env_b).then_some(EnvironmentChange {
        from: env_a,
        to: env_b,
    });
    let empty = Classes::new();
    let (classes_a, classes_b) = (
        a.map_or(&empty, |c| &c.classes),
        b.map_or(&empty, |c| &c.classes),
    );
    let none = Parameters::new();
    let (top_a, top_b) = (
        a.map_or(&none, |c| &c.parameters),
        b.map_or(&none, |c| &c.parameters),
    );
    let mut parameters_changed = Vec::new();
    for class in classes_a.keys().filter(|k| classes_b.contains_key(*k)) {
        compare(
            Some(class.as_str()),
            &classes_a[class],
            &classes_b[class],
            &mut parameters_changed,
        );
    }
    compare(None, top_a, top_b, &mut parameters_changed);
    let names = |c: &Classes| -> BTreeSet<String> { c.keys().map(|k| k.to_string()).collect() };
    let (before, after) = (names(classes_a), names(classes_b));
    ClassificationDiff {
        environment,
        classes_added: after.difference(&before).cloned().collect(),
        classes_removed: before.difference(&after).cloned().collect(),
        parameters_changed,
    }
}

fn compare(class: Option<&str>, x: &Parameters, y: &Parameters, out: &mut Vec<ParameterChange>) {
    let keys: BTreeSet<_> = x.keys().chain(y.keys()).collect();
    for key in keys {
        let (from, to) = (x.get(key), y.get(key));
        if from != to {
            out.push(ParameterChange {
                class: class.map(str::to_owned),
                name: key.to_string(),
                from: from.cloned(),
                to: to.cloned(),
            });
        }
    }
}
