//! The merged classification Puppet asks for: a node's group chain, root first, then the node
//! itself; nearer wins, key by key.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::{
    Certname, ClassName, Classes, EnvironmentName, GroupName, Node, NodeGroup, ParamName,
    Parameters,
};

/// Where a class or value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Source {
    NodeGroup(GroupName),
    Node(Certname),
}

/// What Puppet receives for a node.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Classification {
    #[schema(value_type = String, example = "web01.example.com")]
    pub name: Certname,
    #[schema(value_type = String, example = "production")]
    pub environment: EnvironmentName,
    #[schema(value_type = Object, example = json!({"ntp": {"servers": ["0.pool.ntp.org"]}, "profile::nginx": {"worker_processes": 8}}))]
    pub classes: Classes,
    #[schema(value_type = Object, example = json!({"datacenter": "eu-west-1", "role": "frontend"}))]
    pub parameters: Parameters,
}

/// For every class, class parameter and top-scope parameter: where it came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Explanation {
    /// The nearest group (or the node) that declares each class.
    #[schema(value_type = Object)]
    pub classes: BTreeMap<ClassName, Source>,
    #[schema(value_type = Object)]
    pub class_parameters: BTreeMap<ClassName, BTreeMap<ParamName, Source>>,
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<ParamName, Source>,
}

/// What a classification merges, nearest last: each group of `chain` (its leaf first) from
/// the root down, then the node itself.
fn layers<'a>(
    node: &'a Node,
    chain: &'a [&'a NodeGroup],
) -> impl Iterator<Item = (Source, &'a Classes, &'a Parameters)> + 'a {
    chain
        .iter()
        .rev()
        .map(|g| (Source::NodeGroup(g.name.clone()), &g.classes, &g.parameters))
        .chain(std::iter::once((
            Source::Node(node.unique_name.clone()),
            &node.classes,
            &node.parameters,
        )))
}

/// Merges `groups` (the node's group first, then its parent, up to the root) and the node.
pub fn classify(node: &Node, groups: &[&NodeGroup]) -> (Classification, Explanation) {
    let mut classes = Classes::new();
    let mut parameters = Parameters::new();
    let mut why = Explanation::default();
    for (source, layer_classes, layer_parameters) in layers(node, groups) {
        for (class, class_parameters) in layer_classes {
            let merged = classes.entry(class.clone()).or_default();
            why.classes.insert(class.clone(), source.clone());
            let sources = why.class_parameters.entry(class.clone()).or_default();
            for (name, value) in class_parameters {
                merged.insert(name.clone(), value.clone());
                sources.insert(name.clone(), source.clone());
            }
        }
        for (name, value) in layer_parameters {
            parameters.insert(name.clone(), value.clone());
            why.parameters.insert(name.clone(), source.clone());
        }
    }
    let classification = Classification {
        name: node.unique_name.clone(),
        environment: node.environment_name.clone(),
        classes,
        parameters,
    };
    (classification, why)
}

/// One leaf group's chain, explained: why a node gets each value through it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChainExplanation {
    /// The leaf group.
    #[schema(value_type = String)]
    pub leaf: GroupName,
    /// Its chain from the root down to the leaf.
    #[schema(value_type = Vec<String>)]
    pub groups: Vec<GroupName>,
    /// Every class and value a group of the chain (or the node itself) gives, by key
    /// (`classes.<class>` for a class declared, `classes.<class>.<parameter>`,
    /// `parameters.<name>`): the one that wins and those it overrode.
    pub values: Vec<ValueExplanation>,
}

/// Why a key has its value along one chain.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ValueExplanation {
    pub key: String,
    /// The value that wins (for a class: its parameters as merged).
    /// Any JSON value.
    pub value: serde_json::Value,
    /// Where it came from: the nearest group that gives it, or the node.
    pub from: Source,
    /// The values it overrode, nearest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrode: Vec<Overridden>,
}

/// A value that a nearer group (or the node) overrode.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Overridden {
    pub from: Source,
    /// Any JSON value.
    pub value: serde_json::Value,
}

/// The chain `chain` (the leaf first, up to the root) explained for `node`: each key's value
/// from the root down, each nearer layer (and the node last) overriding the ones above.
pub fn explain_chain(node: &Node, chain: &[&NodeGroup]) -> Option<ChainExplanation> {
    let leaf = chain.first()?.name.clone();
    // Each key's values, root first, each with where it came from.
    let mut given: BTreeMap<String, Vec<(serde_json::Value, Source)>> = BTreeMap::new();
    for (source, classes, parameters) in layers(node, chain) {
        for (class, class_parameters) in classes {
            let declared = serde_json::to_value(class_parameters).unwrap_or_default();
            given
                .entry(format!("classes.{class}"))
                .or_default()
                .push((declared, source.clone()));
            for (name, value) in class_parameters {
                given
                    .entry(format!("classes.{class}.{name}"))
                    .or_default()
                    .push((value.clone(), source.clone()));
            }
        }
        for (name, value) in parameters {
            given
                .entry(format!("parameters.{name}"))
                .or_default()
                .push((value.clone(), source.clone()));
        }
    }
    let (classification, _) = classify(node, chain);
    let values = given
        .into_iter()
        .filter_map(|(key, mut values)| {
            let (last, from) = values.pop()?;
            let value = match key.strip_prefix("classes.") {
                // A class as it is merged along the chain, not as its nearest group wrote it.
                Some(class) if !class.contains('.') => classification
                    .classes
                    .iter()
                    .find(|(c, _)| c.as_str() == class)
                    .and_then(|(_, p)| serde_json::to_value(p).ok())
                    .unwrap_or(last),
                _ => last,
            };
            let overrode = values
                .into_iter()
                .rev()
                .map(|(value, from)| Overridden { from, value })
                .collect();
            Some(ValueExplanation {
                key,
                value,
                from,
                overrode,
            })
        })
        .collect();
    Some(ChainExplanation {
        leaf,
        groups: chain.iter().rev().map(|g| g.name.clone()).collect(),
        values,
    })
}

/// A value one of a node's leaf groups gives a key.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ConflictValue {
    /// Any JSON value.
    pub value: serde_json::Value,
    /// The group it came from (nearest in that leaf's chain).
    #[schema(value_type = String)]
    pub group: GroupName,
}

/// A key that a node's leaf groups give different values: `parameters.<name>` or
/// `classes.<class>.<parameter>`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Conflict {
    pub key: String,
    pub values: Vec<ConflictValue>,
}

fn group_of(source: Option<&Source>) -> Option<GroupName> {
    match source {
        Some(Source::NodeGroup(g)) => Some(g.clone()),
        _ => None,
    }
}

/// Merges several leaf chains (each its group first, up to the root) and the node: each chain
/// merges as `classify` does; classes join; a key the chains give different values is a
/// conflict, unless the node itself sets it; the node's own values win last.
pub fn classify_all(
    node: &Node,
    chains: &[Vec<&NodeGroup>],
) -> Result<(Classification, Explanation), Vec<Conflict>> {
    if chains.len() <= 1 {
        let chain = chains.first().map(Vec::as_slice).unwrap_or_default();
        return Ok(classify(node, chain));
    }
    let bare = Node {
        classes: Classes::new(),
        parameters: Parameters::new(),
        ..node.clone()
    };
    let merged: Vec<(Classification, Explanation)> =
        chains.iter().map(|chain| classify(&bare, chain)).collect();
    let mut classes = Classes::new();
    let mut parameters = Parameters::new();
    let mut why = Explanation::default();
    let mut conflicts = Vec::new();
    // Every value each chain gives a key, with where it came from.
    let mut class_values: BTreeMap<(ClassName, ParamName), Vec<(serde_json::Value, Source)>> =
        BTreeMap::new();
    let mut top_values: BTreeMap<ParamName, Vec<(serde_json::Value, Source)>> = BTreeMap::new();
    for (classification, explanation) in &merged {
        for (class, class_parameters) in &classification.classes {
            classes.entry(class.clone()).or_default();
            if let Some(source) = explanation.classes.get(class) {
                why.classes
                    .entry(class.clone())
                    .or_insert_with(|| source.clone());
            }
            for (name, value) in class_parameters {
                let source = explanation.class_parameters[class][name].clone();
                class_values
                    .entry((class.clone(), name.clone()))
                    .or_default()
                    .push((value.clone(), source));
            }
        }
        for (name, value) in &classification.parameters {
            let source = explanation.parameters[name].clone();
            top_values
                .entry(name.clone())
                .or_default()
                .push((value.clone(), source));
        }
    }
    let mut settle = |key: String, values: Vec<(serde_json::Value, Source)>, overridden: bool| {
        let mut distinct: Vec<(serde_json::Value, Source)> = Vec::new();
        for (value, source) in values {
            if !distinct.iter().any(|(v, _)| *v == value) {
                distinct.push((value, source));
            }
        }
        if distinct.len() > 1 && !overridden {
            conflicts.push(Conflict {
                key,
                values: distinct
                    .iter()
                    .filter_map(|(value, source)| {
                        let group = group_of(Some(source))?;
                        Some(ConflictValue {
                            value: value.clone(),
                            group,
                        })
                    })
                    .collect(),
            });
        }
        distinct.into_iter().next()
    };
    for ((class, name), values) in class_values {
        let overridden = node
            .classes
            .get(&class)
            .is_some_and(|p| p.contains_key(&name));
        let key = format!("classes.{class}.{name}");
        if let Some((value, source)) = settle(key, values, overridden) {
            classes
                .entry(class.clone())
                .or_default()
                .insert(name.clone(), value);
            why.class_parameters
                .entry(class)
                .or_default()
                .insert(name, source);
        }
    }
    for (name, values) in top_values {
        let overridden = node.parameters.contains_key(&name);
        if let Some((value, source)) = settle(format!("parameters.{name}"), values, overridden) {
            parameters.insert(name.clone(), value);
            why.parameters.insert(name, source);
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let own = Source::Node(node.unique_name.clone());
    for (class, class_parameters) in &node.classes {
        let merged = classes.entry(class.clone()).or_default();
        why.classes.insert(class.clone(), own.clone());
        let sources = why.class_parameters.entry(class.clone()).or_default();
        for (name, value) in class_parameters {
            merged.insert(name.clone(), value.clone());
            sources.insert(name.clone(), own.clone());
        }
    }
    for (name, value) in &node.parameters {
        parameters.insert(name.clone(), value.clone());
        why.parameters.insert(name.clone(), own.clone());
    }
    let classification = Classification {
        name: node.unique_name.clone(),
        environment: node.environment_name.clone(),
        classes,
        parameters,
    };
    Ok((classification, why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn group(name: &str, parent: Option<&str>, classes: Value, parameters: Value) -> NodeGroup {
        serde_json::from_value(json!({
            "name": name, "description": null, "parent": parent,
            "classes": classes, "parameters": parameters
        }))
        .unwrap()
    }

    #[test]
    fn four_levels_and_the_node_nearer_wins() {
        // root <- platform <- web <- web_eu, and the node on top.
        let chain = [
            group(
                "web_eu",
                Some("web"),
                json!({"nginx": {"listen": 8443}}),
                json!({"region": "eu", "tier": "web-eu"}),
            ),
            group(
                "web",
                Some("platform"),
                json!({"nginx": {"listen": 443, "workers": 8}}),
                json!({"tier": "web"}),
            ),
            group(
                "platform",
                Some("root"),
                json!({"ntp": {"servers": ["b"]}, "monitoring": {}}),
                json!({"owner": "platform"}),
            ),
            group(
                "root",
                None,
                json!({"ntp": {"servers": ["a"], "iburst": true}}),
                json!({"owner": "root", "tier": "base", "dc": "x"}),
            ),
        ];
        let node: Node = serde_json::from_value(json!({
            "unique_name": "web01", "node_group_name": "web_eu",
            "environment_name": "production", "puppet_cluster_name": "eu",
            "classes": {"nginx": {"workers": 16}, "hotfix": {}},
            "parameters": {"dc": "eu-1"}
        }))
        .unwrap();
        let chain: Vec<&NodeGroup> = chain.iter().collect();
        let (c, why) = classify(&node, &chain);
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({
                "name": "web01",
                "environment": "production",
                "classes": {
                    "hotfix": {},
                    "monitoring": {},
                    "nginx": {"listen": 8443, "workers": 16},
                    "ntp": {"servers": ["b"], "iburst": true}
                },
                "parameters": {"dc": "eu-1", "owner": "platform", "region": "eu", "tier": "web-eu"}
            })
        );
        let g = |n: &str| json!({"kind": "node_group", "name": n});
        let node_source = json!({"kind": "node", "name": "web01"});
        assert_eq!(
            serde_json::to_value(&why).unwrap(),
            json!({
                "classes": {"hotfix": node_source, "monitoring": g("platform"), "nginx": node_source, "ntp": g("platform")},
                "class_parameters": {
                    "hotfix": {},
                    "monitoring": {},
                    "nginx": {"listen": g("web_eu"), "workers": node_source},
                    "ntp": {"servers": g("platform"), "iburst": g("root")}
                },
                "parameters": {"dc": node_source, "owner": g("platform"), "region": g("web_eu"), "tier": g("web_eu")}
            })
        );
    }

    #[test]
    fn a_node_without_a_group_is_just_itself() {
        let node: Node = serde_json::from_value(json!({
            "unique_name": "db01", "node_group_name": null,
            "environment_name": "staging", "puppet_cluster_name": "eu",
            "classes": {}, "parameters": {}
        }))
        .unwrap();
        let (c, why) = classify(&node, &[]);
        assert!(c.classes.is_empty() && c.parameters.is_empty());
        assert_eq!(c.environment.as_str(), "staging");
        assert_eq!(why, Explanation::default());
    }
}
