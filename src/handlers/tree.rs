//! The classification as code's file format, shared by the server (`/export`, `/import`) and
//! `enc migrate`: an object as its YAML file, and a tree's files read back as the objects
//! they hold, each checked as the API checks its body. Where each file goes is
//! [`crate::classifier::plan::Object::path`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::environments::EnvironmentBody;
use super::node_groups::NodeGroupBody;
use super::nodes::NodeBody;
use super::within_size;
use crate::classifier::plan::{Desired, Object};
use crate::domain::{Environment, FieldError, Node, NodeGroup};
use crate::error::AppError;
use crate::extract::parse_body;
use crate::store::Key;

/// An object's file text, as `GET /export` writes it.
pub fn render<T: Serialize>(object: &T) -> Result<String, AppError> {
    serde_norway::to_string(object).map_err(|e| AppError::Internal(Box::new(e)))
}

/// One object of a tree.
enum Parsed {
    Environment(Environment),
    Group(NodeGroup),
    Node(Node),
}

/// An object from its body under a tree's directory (`environments`, `node_groups`,
/// `nodes`), checked as the API checks a body; errors name the body's fields.
fn parse_object(dir: &str, value: Value) -> Result<Parsed, AppError> {
    match dir {
        "environments" => parse_body::<EnvironmentBody>(value)
            .and_then(|b| b.into_domain())
            .map(Parsed::Environment),
        "node_groups" => parse_body::<NodeGroupBody>(value)
            .and_then(|b| b.into_domain(None))
            .and_then(|(group, _)| within_size(group))
            .map(Parsed::Group),
        "nodes" => parse_body::<NodeBody>(value)
            .and_then(|b| b.into_domain(None))
            .and_then(within_size)
            .map(Parsed::Node),
        _ => Err(AppError::invalid(
            "",
            "is not under environments/, node_groups/ or nodes/",
        )),
    }
}

/// The file of an object given by its body as the API takes it (under `dir`, as
/// `parse_object`): its path in the tree and its text, as `GET /export` would write them.
pub fn object_file(dir: &str, body: Value) -> Result<(String, String), Vec<FieldError>> {
    let file = parse_object(dir, body).and_then(|parsed| match parsed {
        Parsed::Environment(e) => Ok((e.path(), render(&e)?)),
        Parsed::Group(g) => Ok((g.path(), render(&g)?)),
        Parsed::Node(n) => Ok((n.path(), render(&n)?)),
    });
    file.map_err(|e| match e {
        AppError::Validation(list) => list,
        other => vec![FieldError::new("", other.to_string())],
    })
}

/// Reads one file as its object, checked as the API checks it, and named as its file says.
fn parse_file(path: &str, text: &str, desired: &mut Desired) -> Result<(), Vec<FieldError>> {
    let at = |field: &str, message: String| match field {
        "" => FieldError::new(path, message),
        field => FieldError::new(format!("{path}: {field}"), message),
    };
    let errors = |e: AppError| match e {
        AppError::Validation(list) => list.into_iter().map(|f| at(&f.field, f.message)).collect(),
        other => vec![at("", other.to_string())],
    };
    let value: Value = crate::yaml::from_yaml(text)
        .map_err(|e| vec![at("", format!("cannot be read as YAML: {e}"))])?;
    fn placed<T: Object>(path: &str, object: T, into: &mut BTreeMap<Key, T>) -> Result<(), String> {
        let expected = object.path();
        if expected != path {
            return Err(format!(
                "holds the {} {}, whose file is {expected}",
                T::KIND.kind,
                object.key()
            ));
        }
        into.insert(object.key(), object);
        Ok(())
    }
    let dir = path.split('/').next().unwrap_or_default();
    let placed = match parse_object(dir, value).map_err(errors)? {
        Parsed::Environment(env) => placed(path, env, &mut desired.environments),
        Parsed::Group(group) => placed(path, group, &mut desired.groups),
        Parsed::Node(node) => placed(path, node, &mut desired.nodes),
    };
    placed.map_err(|message| vec![at("", message)])
}

/// A tree's files as the objects they hold; every file's errors at once.
pub fn parse_tree(files: &BTreeMap<String, String>) -> Result<Desired, AppError> {
    let mut desired = Desired::default();
    let mut errors = Vec::new();
    for (path, text) in files {
        if let Err(mut found) = parse_file(path, text, &mut desired) {
            errors.append(&mut found);
        }
    }
    match errors.is_empty() {
        true => Ok(desired),
        false => Err(AppError::Validation(errors)),
    }
}
