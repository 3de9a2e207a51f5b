//! A node's rule view: of its facts, only the values some group's rule reads. Membership is
//! judged on views (a few hundred bytes a node) instead of whole facts (tens of kilobytes),
//! and an agent run whose view did not change writes nothing. The paths every rule reads
//! make the tree's [`Lens`]; a view taken through another lens is stale and is taken again
//! from the node's stored facts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::resources::rfc3339;
use super::rule::{FactPath, PathStep, Rule};
use super::{Certname, NodeFacts};

/// The fact paths a tree's rules read, and a short name for that set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lens {
    /// Each path as shown (`facts.os.family`), sorted.
    paths: Vec<String>,
    /// Per root (`false`: facts, `true`: trusted), the key steps each path keeps: a path is
    /// kept whole up to its first index step (arrays are kept whole).
    keeps: [Vec<Vec<String>>; 2],
    id: String,
    /// Whether a rule reads the certname: then no two nodes are judged alike.
    reads_name: bool,
}

impl Lens {
    /// The lens of these rules.
    pub fn of<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> Self {
        let mut found = Vec::new();
        for rule in rules {
            rule.paths(&mut found);
        }
        // Keyed unambiguously: `["fact", "os.family"]` and `["fact", "os", "family"]` show
        // alike (`facts.os.family`) and are different paths.
        let mut by_key: BTreeMap<String, &FactPath> = BTreeMap::new();
        let reads_name = found.iter().any(|p| matches!(p, FactPath::Name));
        for path in found {
            if let FactPath::Path { trusted, steps } = path {
                let steps: Vec<serde_json::Value> = steps
                    .iter()
                    .map(|s| match s {
                        PathStep::Key(k) => serde_json::Value::from(k.as_str()),
                        PathStep::Index(i) => serde_json::Value::from(*i),
                    })
                    .collect();
                by_key.insert(serde_json::json!([trusted, steps]).to_string(), path);
            }
        }
        let mut keeps: [Vec<Vec<String>>; 2] = [Vec::new(), Vec::new()];
        for path in by_key.values() {
            if let FactPath::Path { trusted, steps } = path {
                let keys: Vec<String> = steps
                    .iter()
                    .map_while(|s| match s {
                        PathStep::Key(k) => Some(k.clone()),
                        PathStep::Index(_) => None,
                    })
                    .collect();
                if !keys.is_empty() {
                    keeps[usize::from(*trusted)].push(keys);
                }
            }
        }
        let digest = Sha256::digest(by_key.keys().cloned().collect::<Vec<_>>().join("\n"));
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let mut paths: Vec<String> = by_key.values().map(|p| p.to_string()).collect();
        paths.sort();
        Self {
            paths,
            keeps,
            id,
            reads_name,
        }
    }

    /// A short name of the set of paths: equal for equal sets.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Whether a rule reads the node's certname.
    pub fn reads_name(&self) -> bool {
        self.reads_name
    }

    /// The view of `facts` through this lens.
    pub fn view(&self, facts: &NodeFacts) -> RuleView {
        RuleView {
            unique_name: facts.unique_name.clone(),
            version: 0,
            seq: 0,
            changed_at: None,
            lens: self.id.clone(),
            facts: keep(&facts.facts, &self.keeps[0]),
            trusted: keep(&facts.trusted, &self.keeps[1]),
            received_at: facts.received_at,
            posted_by: facts.posted_by.clone(),
            with_trusted: facts.with_trusted,
        }
    }
}

/// Of `from`, only what lies on `paths` (each a list of keys from the root).
fn keep(from: &Map<String, Value>, paths: &[Vec<String>]) -> Map<String, Value> {
    let mut kept = Map::new();
    for path in paths {
        let mut source = from;
        let mut target = &mut kept;
        for (at, key) in path.iter().enumerate() {
            let Some(value) = source.get(key) else { break };
            let last = at + 1 == path.len();
            match value {
                Value::Object(inner) if !last => {
                    let entry = target
                        .entry(key.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    // A shorter path kept this value whole already.
                    let Value::Object(next) = entry else { break };
                    source = inner;
                    target = next;
                }
                // The path ends here, or goes on into a value with no keys: kept whole
                // (a lookup beyond it finds nothing, as in the facts).
                _ => {
                    target.insert(key.clone(), value.clone());
                    break;
                }
            }
        }
    }
    kept
}

/// What membership is judged on for one node: its facts through a lens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    pub unique_name: Certname,
    /// Raised by each write of the view, which is conditional on the one before.
    #[serde(default)]
    pub version: u64,
    /// Raised when what it says to rules changes (`same_as`): each such version is kept for
    /// time travel under this number.
    #[serde(default)]
    pub seq: u64,
    /// When it last changed so (the version `seq` was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<DateTime<Utc>>,
    /// The id of the lens it was taken through.
    pub lens: String,
    pub facts: Map<String, Value>,
    #[serde(default)]
    pub trusted: Map<String, Value>,
    /// When the facts it was taken from came (and were stored whole).
    #[serde(serialize_with = "rfc3339")]
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_by: Option<String>,
    #[serde(default)]
    pub with_trusted: bool,
}

impl RuleView {
    /// Whether the two say the same to rules and to `explain` (what facts came when aside).
    pub fn same_as(&self, other: &RuleView) -> bool {
        self.lens == other.lens
            && self.facts == other.facts
            && self.trusted == other.trusted
            && self.posted_by == other.posted_by
            && self.with_trusted == other.with_trusted
    }

    /// The view as facts that hold only what rules read.
    pub fn into_facts(self) -> NodeFacts {
        NodeFacts {
            unique_name: self.unique_name,
            facts: self.facts,
            trusted: self.trusted,
            received_at: self.received_at,
            posted_by: self.posted_by,
            with_trusted: self.with_trusted,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::rule;

    fn lens(rules: &[Value]) -> Lens {
        let rules: Vec<Rule> = rules.iter().map(|r| rule::parse(r).unwrap()).collect();
        Lens::of(&rules)
    }

    fn facts(facts: Value, trusted: Value) -> NodeFacts {
        NodeFacts {
            unique_name: Certname::parse("web1.example.com").unwrap(),
            facts: facts.as_object().unwrap().clone(),
            trusted: trusted.as_object().unwrap().clone(),
            received_at: crate::domain::now(),
            posted_by: None,
            with_trusted: true,
        }
    }

    #[test]
    fn a_view_keeps_only_what_rules_read_and_judges_as_the_facts_do() {
        let rules = [
            json!([
                "and",
                ["=", ["fact", "os", "family"], "Debian"],
                ["~", ["trusted", "extensions", "pp_role"], "^web"]
            ]),
            json!([">=", ["fact", "memory", "system", "total_bytes"], "1024"]),
            json!([
                "=",
                ["fact", "networking", "interfaces", "eth0", "ip"],
                "10.0.0.1"
            ]),
            json!(["=", ["fact", "disks", 0], "sda"]),
            json!(["=", "name", "web1.example.com"]),
        ];
        let lens = lens(&rules);
        let node = facts(
            json!({
                "os": {"family": "Debian", "release": {"major": "12"}},
                "memory": {"system": {"total_bytes": 4096, "used": 12}},
                "networking": {"interfaces": "none"},
                "disks": ["sda", "sdb"],
                "uptime_seconds": 12345,
                "padding": "x".repeat(10_000),
            }),
            json!({"extensions": {"pp_role": "web", "pp_env": "prod"}, "certname": "web1"}),
        );
        let view = lens.view(&node);
        assert_eq!(
            Value::Object(view.facts.clone()),
            json!({
                "os": {"family": "Debian"},
                "memory": {"system": {"total_bytes": 4096}},
                "networking": {"interfaces": "none"},
                "disks": ["sda", "sdb"],
            })
        );
        assert_eq!(
            Value::Object(view.trusted.clone()),
            json!({"extensions": {"pp_role": "web"}})
        );
        let parsed: Vec<Rule> = rules.iter().map(|r| rule::parse(r).unwrap()).collect();
        let seen = view.clone().into_facts();
        fn subject(f: &NodeFacts) -> rule::Subject<'_> {
            rule::Subject {
                name: "web1.example.com",
                facts: &f.facts,
                trusted: &f.trusted,
            }
        }
        for rule in &parsed {
            assert_eq!(rule.matches(&subject(&node)), rule.matches(&subject(&seen)));
        }
        assert_eq!(lens.paths().len(), 5);
        assert!(lens.reads_name());
    }

    #[test]
    fn a_shorter_path_keeps_its_value_whole_whatever_the_order() {
        let a = lens(&[
            json!(["=", ["fact", "os", "family"], "Debian"]),
            json!(["=", ["fact", "os"], "x"]),
        ]);
        let node = facts(json!({"os": {"family": "Debian", "name": "x"}}), json!({}));
        let view = a.view(&node);
        assert_eq!(view.facts["os"], json!({"family": "Debian", "name": "x"}));
    }

    #[test]
    fn the_same_paths_make_the_same_lens() {
        let a = lens(&[
            json!(["=", ["fact", "a"], "1"]),
            json!(["=", ["fact", "b"], "2"]),
        ]);
        let b = lens(&[json!([
            "or",
            ["=", ["fact", "b"], "3"],
            ["=", ["fact", "a"], "4"]
        ])]);
        let c = lens(&[json!(["=", ["fact", "c"], "1"])]);
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(a.id().len(), 16);
    }

    #[test]
    fn views_differ_only_in_what_rules_see() {
        let lens = lens(&[json!(["=", ["fact", "os"], "Debian"])]);
        let first = facts(json!({"os": "Debian", "uptime": 1}), json!({}));
        let mut later = facts(json!({"os": "Debian", "uptime": 2}), json!({}));
        later.received_at = first.received_at + chrono::Duration::seconds(60);
        let (a, b) = (lens.view(&first), lens.view(&later));
        assert!(a.same_as(&b));
        let moved = facts(json!({"os": "RedHat"}), json!({}));
        assert!(!a.same_as(&lens.view(&moved)));
    }
}

#[cfg(test)]
mod collisions {
    use serde_json::json;

    use super::*;
    use crate::domain::rule;

    #[test]
    fn paths_that_show_alike_are_still_two_paths() {
        let rules: Vec<Rule> = [
            json!(["=", ["fact", "os.family"], "Debian"]),
            json!(["=", ["fact", "os", "family"], "Debian"]),
        ]
        .iter()
        .map(|r| rule::parse(r).unwrap())
        .collect();
        let both = Lens::of(&rules);
        let one = Lens::of(&rules[1..]);
        assert_ne!(both.id(), one.id());
        assert_eq!(both.paths().len(), 2);
        let facts = NodeFacts::sent(
            "web1",
            json!({"os.family": "Debian", "os": {"family": "Debian", "name": "x"}}),
        );
        let view = both.view(&facts);
        assert_eq!(
            Value::Object(view.facts),
            json!({"os.family": "Debian", "os": {"family": "Debian"}})
        );
    }
}
