//! The node-group tree: which groups a node is in (named, pinned or by rule), each group's
//! chain up to its root, and the checks a group's parent must pass (no cycle, no chain deeper
//! than `MAX_DEPTH`). Pure: the store reads a tree as of one generation and keeps it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Map;

use super::rule::{self, Rule, RuleOutcome, Subject};
use super::view::Lens;
use super::{Certname, GroupName, Node, NodeFacts, NodeGroup, Stored};

/// The most groups a node's chain may hold, its own group included.
pub const MAX_DEPTH: usize = 32;

/// Why a tree or a change of it is refused.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The change would make a node group its own ancestor.
    #[error("parent: the chain {} would be a cycle", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    /// The change would make a chain of node groups longer than `MAX_DEPTH`.
    #[error("parent: the chain would hold {depth} node groups; at most {max} are allowed")]
    TooDeep { depth: usize, max: usize },
    /// The parent named does not exist.
    #[error("parent: node group {0} does not exist")]
    MissingParent(GroupName),
    /// The tree read is not a tree: a fault of the store, never of a request.
    #[error("{0}")]
    Broken(String),
}

type Result<T, E = TreeError> = std::result::Result<T, E>;

/// A group and its ancestors up to the root.
pub type Chain = Vec<Arc<NodeGroup>>;

pub struct GroupTree {
    pub generation: i64,
    groups: HashMap<GroupName, Arc<NodeGroup>>,
    children: HashMap<GroupName, Vec<GroupName>>,
    /// Each group's rule, compiled once per tree.
    rules: Vec<(GroupName, Rule)>,
    /// By rule (as indexed in `rules`), the rules of its group's ancestors: as in Puppet
    /// Enterprise, a node is in a group by rule only when those match it too.
    inherited: Vec<Vec<usize>>,
    /// The groups each node is pinned to.
    pins: HashMap<Certname, Vec<GroupName>>,
    /// The fact paths the rules read.
    lens: Lens,
}

/// What rules judge: the node's certname and its facts (none: empty).
fn subject<'a>(
    node: &'a Node,
    facts: Option<&'a NodeFacts>,
    empty: &'a Map<String, serde_json::Value>,
) -> Subject<'a> {
    Subject {
        name: node.unique_name.as_str(),
        facts: facts.map_or(empty, |f| &f.facts),
        trusted: facts.map_or(empty, |f| &f.trusted),
    }
}

/// For each rule, the indexes of the rules of its group's ancestors (a chain broken by a
/// missing parent or a cycle stops there: the tree's checks refuse such writes).
fn inherited_rules(
    groups: &HashMap<GroupName, Arc<NodeGroup>>,
    rules: &[(GroupName, Rule)],
) -> Vec<Vec<usize>> {
    let index: HashMap<&GroupName, usize> =
        rules.iter().enumerate().map(|(i, (g, _))| (g, i)).collect();
    rules
        .iter()
        .map(|(group, _)| {
            let mut above = Vec::new();
            let mut parent = groups.get(group).and_then(|g| g.parent.as_ref());
            for _ in 0..MAX_DEPTH {
                let Some(name) = parent else { break };
                above.extend(index.get(name).copied());
                parent = groups.get(name).and_then(|g| g.parent.as_ref());
            }
            above
        })
        .collect()
}

/// Why a node is in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// The node names the group (`node_group_name`).
    Named,
    Pinned,
    /// The group's rule matches the node's facts, and so do its ruled ancestors' rules.
    Rule,
    /// It is an ancestor of a group the node is in (`ancestor_of`): the node gets its classes
    /// and values through that group.
    Ancestor,
}

impl GroupTree {
    pub fn new(generation: i64, groups: Vec<Stored<NodeGroup>>) -> Self {
        Self::of(generation, groups.into_iter().map(|g| g.item).collect())
    }

    /// The tree these groups make, outside any generation (a tree of the past).
    pub fn of_groups(groups: Vec<NodeGroup>) -> Self {
        Self::of(0, groups)
    }

    /// The names of every group.
    pub fn names(&self) -> impl Iterator<Item = &GroupName> {
        self.groups.keys()
    }

    fn of(generation: i64, groups: Vec<NodeGroup>) -> Self {
        let mut children: HashMap<GroupName, Vec<GroupName>> = HashMap::new();
        for group in &groups {
            if let Some(parent) = &group.parent {
                children
                    .entry(parent.clone())
                    .or_default()
                    .push(group.name.clone());
            }
        }
        let mut rules = Vec::new();
        let mut pins: HashMap<Certname, Vec<GroupName>> = HashMap::new();
        for group in &groups {
            for node in &group.pinned {
                pins.entry(node.clone())
                    .or_default()
                    .push(group.name.clone());
            }
            // Rules are checked when written; one that no longer parses matches nothing, and
            // so takes in nobody below it either (an empty `or`).
            if let Some(rule) = &group.rule {
                let rule = rule::parse(rule).unwrap_or_else(|_| Rule::Or(Vec::new()));
                rules.push((group.name.clone(), rule));
            }
        }
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        for pinning in pins.values_mut() {
            pinning.sort();
        }
        let groups: HashMap<GroupName, Arc<NodeGroup>> = groups
            .into_iter()
            .map(|g| (g.name.clone(), Arc::new(g)))
            .collect();
        let inherited = inherited_rules(&groups, &rules);
        let lens = Lens::of(rules.iter().map(|(_, r)| r));
        Self {
            generation,
            groups,
            children,
            rules,
            inherited,
            pins,
            lens,
        }
    }

    /// The fact paths the rules read: what a rule view keeps.
    pub fn lens(&self) -> &Lens {
        &self.lens
    }

    /// Whether each rule takes the node in: its own rule and every ancestor's match.
    fn rule_members(&self, subject: &Subject<'_>) -> Vec<bool> {
        let own: Vec<bool> = self.rules.iter().map(|(_, r)| r.matches(subject)).collect();
        (0..own.len())
            .map(|i| own[i] && self.inherited[i].iter().all(|&a| own[a]))
            .collect()
    }

    /// Every group the node is in, and why (a group may be in for more than one reason), by
    /// group name.
    pub fn memberships(&self, node: &Node, facts: Option<&NodeFacts>) -> Vec<(GroupName, Why)> {
        let mut found: Vec<(GroupName, Why)> = Vec::new();
        if let Some(group) = &node.node_group_name {
            found.push((group.clone(), Why::Named));
        }
        for group in self.pins.get(&node.unique_name).into_iter().flatten() {
            found.push((group.clone(), Why::Pinned));
        }
        let empty = Map::new();
        let subject = subject(node, facts, &empty);
        let members = self.rule_members(&subject);
        for ((group, _), member) in self.rules.iter().zip(members) {
            if member {
                found.push((group.clone(), Why::Rule));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Why the node is in `group` (empty: it is not): as `memberships` says for that group,
    /// judging only its rule and its ancestors'.
    pub fn why_in(&self, node: &Node, facts: Option<&NodeFacts>, group: &GroupName) -> Vec<Why> {
        let mut why = Vec::new();
        if node.node_group_name.as_ref() == Some(group) {
            why.push(Why::Named);
        }
        if self.pinning(&node.unique_name).contains(group) {
            why.push(Why::Pinned);
        }
        if let Ok(at) = self.rules.binary_search_by(|(g, _)| g.cmp(group)) {
            let empty = Map::new();
            let subject = subject(node, facts, &empty);
            let matches = |i: usize| self.rules[i].1.matches(&subject);
            if matches(at) && self.inherited[at].iter().all(|&a| matches(a)) {
                why.push(Why::Rule);
            }
        }
        why
    }

    /// The group of that name.
    pub fn group(&self, name: &GroupName) -> Option<&NodeGroup> {
        self.groups.get(name).map(|g| &**g)
    }

    /// The groups that pin `node`, by name.
    pub fn pinning(&self, node: &Certname) -> &[GroupName] {
        self.pins.get(node).map_or(&[], Vec::as_slice)
    }

    /// Whether the node is in any of `groups` (by name, pin or rule), judging only their rules.
    pub fn in_any(
        &self,
        node: &Node,
        facts: Option<&NodeFacts>,
        groups: &HashSet<GroupName>,
    ) -> bool {
        if node
            .node_group_name
            .as_ref()
            .is_some_and(|g| groups.contains(g))
        {
            return true;
        }
        if self
            .pins
            .get(&node.unique_name)
            .is_some_and(|pinned| pinned.iter().any(|g| groups.contains(g)))
        {
            return true;
        }
        let empty = Map::new();
        let subject = subject(node, facts, &empty);
        // Each rule judged at most once, and only those the answer needs.
        let mut judged: Vec<Option<bool>> = vec![None; self.rules.len()];
        let mut matches =
            |i: usize| *judged[i].get_or_insert_with(|| self.rules[i].1.matches(&subject));
        (0..self.rules.len()).any(|i| {
            groups.contains(&self.rules[i].0)
                && matches(i)
                && self.inherited[i].iter().all(|&a| matches(a))
        })
    }

    /// How every group's rule fares on the node, by group name (for `explain`).
    pub fn rule_outcomes(
        &self,
        node: &Node,
        facts: Option<&NodeFacts>,
    ) -> Vec<(GroupName, RuleOutcome)> {
        let empty = Map::new();
        let subject = subject(node, facts, &empty);
        self.rules
            .iter()
            .map(|(group, rule)| (group.clone(), rule.explain(&subject)))
            .collect()
    }

    /// The node's leaf groups: the groups it is in, but any with one of those below it, by
    /// name; each with its chain up to the root.
    pub fn leaves(
        &self,
        node: &Node,
        facts: Option<&NodeFacts>,
    ) -> Result<Vec<Vec<Arc<NodeGroup>>>> {
        Ok(self.placed(node, facts)?.1)
    }

    /// The groups the node is in (by name, pin or rule), by name, and its leaf groups' chains
    /// (as `leaves`): the rules judged once for both.
    pub fn placed(
        &self,
        node: &Node,
        facts: Option<&NodeFacts>,
    ) -> Result<(Vec<GroupName>, Vec<Chain>)> {
        let mut names: Vec<GroupName> = self
            .memberships(node, facts)
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        names.dedup();
        let mut chains: Vec<Vec<Arc<NodeGroup>>> = Vec::new();
        let mut inner: HashSet<GroupName> = HashSet::new();
        for name in &names {
            let chain = self.chain(Some(name))?;
            inner.extend(chain.iter().skip(1).map(|g| g.name.clone()));
            chains.push(chain);
        }
        chains.retain(|chain| chain.first().is_none_or(|g| !inner.contains(&g.name)));
        Ok((names, chains))
    }

    /// This tree with `group` in place of the group of its name (added if new), or with the
    /// group `removed` taken out: what a write would make of it.
    pub fn changed(&self, group: Option<NodeGroup>, removed: &GroupName) -> Self {
        self.with_changes(&[(removed.clone(), group)])
    }

    /// This tree with each named group replaced by the one given, or taken out (`None`).
    pub fn with_changes(&self, changes: &[(GroupName, Option<NodeGroup>)]) -> Self {
        let gone: HashSet<&GroupName> = changes.iter().map(|(name, _)| name).collect();
        let mut groups: Vec<NodeGroup> = self
            .groups
            .values()
            .filter(|g| !gone.contains(&g.name))
            .map(|g| (**g).clone())
            .collect();
        groups.extend(changes.iter().filter_map(|(_, g)| g.clone()));
        Self::of(self.generation, groups)
    }

    /// The group and every group below it.
    pub fn subtree(&self, name: &GroupName) -> Vec<GroupName> {
        let mut names = vec![name.clone()];
        let mut i = 0;
        while i < names.len() && names.len() <= self.groups.len() {
            if let Some(children) = self.children.get(&names[i]) {
                names.extend(children.iter().cloned());
            }
            i += 1;
        }
        names
    }

    pub fn contains(&self, name: &GroupName) -> bool {
        self.groups.contains_key(name)
    }

    /// The group `first`, its parent, and so on up to the root.
    pub fn chain(&self, first: Option<&GroupName>) -> Result<Vec<Arc<NodeGroup>>> {
        let mut chain: Vec<Arc<NodeGroup>> = Vec::new();
        let mut next = first;
        while let Some(name) = next {
            // References are kept intact by the store, so a gap or a loop is a fault.
            let group = self.groups.get(name).ok_or_else(|| {
                TreeError::Broken(format!("node group {name} is missing from the tree"))
            })?;
            if chain.len() > MAX_DEPTH * 2 {
                return Err(TreeError::Broken(format!(
                    "node group {name} is its own ancestor"
                )));
            }
            chain.push(group.clone());
            next = group.parent.as_ref();
        }
        Ok(chain)
    }

    /// The longest path from `name` down to a descendant, in groups below it.
    fn height(&self, name: &GroupName) -> usize {
        let mut deepest = 0;
        let mut level: Vec<&GroupName> = vec![name];
        let mut seen: HashSet<&GroupName> = HashSet::from([name]);
        while !level.is_empty() {
            level = level
                .iter()
                .flat_map(|n| self.children.get(*n).into_iter().flatten())
                .filter(|c| seen.insert(*c))
                .collect();
            if !level.is_empty() {
                deepest += 1;
            }
        }
        deepest
    }

    /// Refuses a parent that is missing, that has `group` among its ancestors, or that would
    /// make some chain through `group` longer than `MAX_DEPTH`.
    pub fn check_parent(&self, group: &NodeGroup) -> Result<()> {
        let Some(parent) = &group.parent else {
            return Ok(());
        };
        let mut chain = vec![group.name.to_string()];
        let mut seen = HashSet::from([&group.name]);
        let mut next = Some(parent);
        while let Some(name) = next {
            chain.push(name.to_string());
            if !seen.insert(name) {
                return Err(TreeError::Cycle { chain });
            }
            let found = self
                .groups
                .get(name)
                .ok_or_else(|| TreeError::MissingParent(name.clone()))?;
            next = found.parent.as_ref();
        }
        let depth = chain.len() + self.height(&group.name);
        if depth > MAX_DEPTH {
            return Err(TreeError::TooDeep {
                depth,
                max: MAX_DEPTH,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Meta;
    use std::collections::BTreeMap;

    fn group(name: &str, parent: Option<&str>) -> NodeGroup {
        NodeGroup {
            name: GroupName::parse(name).unwrap(),
            description: None,
            parent: parent.map(|p| GroupName::parse(p).unwrap()),
            classes: BTreeMap::new(),
            parameters: BTreeMap::new(),
            rule: None,
            pinned: Default::default(),
            environment_name: None,
            puppet_cluster_name: None,
        }
    }

    /// g0 <- g1 <- ... <- g{n-1}
    fn line(n: usize) -> GroupTree {
        let groups = (0..n)
            .map(|i| Stored {
                item: group(
                    &format!("g{i}"),
                    (i > 0).then(|| format!("g{}", i - 1)).as_deref(),
                ),
                meta: Meta::first("test"),
            })
            .collect();
        GroupTree::new(7, groups)
    }

    #[test]
    fn chains_run_from_the_group_to_the_root() {
        let tree = line(4);
        let names: Vec<String> = tree
            .chain(Some(&GroupName::parse("g3").unwrap()))
            .unwrap()
            .iter()
            .map(|g| g.name.to_string())
            .collect();
        assert_eq!(names, ["g3", "g2", "g1", "g0"]);
        assert!(tree.chain(None).unwrap().is_empty());
        assert!(
            tree.chain(Some(&GroupName::parse("nope").unwrap()))
                .is_err()
        );
    }

    #[test]
    fn depth_counts_the_subtree_that_moves_with_a_group() {
        let tree = line(MAX_DEPTH);
        // A new group under the deepest one would be the 33rd level.
        let under_last = group("new", Some(&format!("g{}", MAX_DEPTH - 1)));
        assert!(matches!(
            tree.check_parent(&under_last),
            Err(TreeError::TooDeep { depth: 33, .. })
        ));
        assert!(tree.check_parent(&group("new", Some("g30"))).is_ok());
        // Moving g1 (with 30 groups below it) under a new root's child adds a level.
        tree.check_parent(&group("g1", Some("g0"))).unwrap();
        let mut taller = line(MAX_DEPTH);
        taller.groups.insert(
            GroupName::parse("x").unwrap(),
            Arc::new(group("x", Some("g0"))),
        );
        assert!(matches!(
            taller.check_parent(&group("g1", Some("x"))),
            Err(TreeError::TooDeep { depth: 33, .. })
        ));
    }

    #[test]
    fn cycles_and_missing_parents_are_refused() {
        let tree = line(3);
        match tree.check_parent(&group("g0", Some("g2"))) {
            Err(TreeError::Cycle { chain }) => assert_eq!(chain, ["g0", "g2", "g1", "g0"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            tree.check_parent(&group("g1", Some("g1"))),
            Err(TreeError::Cycle { .. })
        ));
        assert!(matches!(
            tree.check_parent(&group("g1", Some("nope"))),
            Err(TreeError::MissingParent(_))
        ));
    }

    fn ruled(name: &str, parent: Option<&str>, rule: serde_json::Value) -> NodeGroup {
        NodeGroup {
            rule: Some(rule),
            ..group(name, parent)
        }
    }

    #[test]
    fn a_rule_takes_a_node_in_only_with_every_ruled_ancestor() {
        use crate::domain::{ClusterName, EnvironmentName};
        let fact = |name: &str, value: &str| serde_json::json!(["=", ["fact", name], value]);
        // a (rule) <- b (no rule) <- c (rule); d (rule) at the root.
        let tree = GroupTree::of(
            1,
            vec![
                ruled("a", None, fact("os", "Debian")),
                group("b", Some("a")),
                ruled("c", Some("b"), fact("role", "web")),
                ruled("d", None, fact("role", "web")),
            ],
        );
        let node = Node {
            unique_name: Certname::parse("n1").unwrap(),
            node_group_name: None,
            environment_name: EnvironmentName::parse("production").unwrap(),
            puppet_cluster_name: ClusterName::parse("eu").unwrap(),
            classes: BTreeMap::new(),
            parameters: BTreeMap::new(),
        };
        let facts = |os: &str| NodeFacts::sent("n1", serde_json::json!({"os": os, "role": "web"}));
        let names = |os: &str| -> Vec<String> {
            let facts = facts(os);
            tree.memberships(&node, Some(&facts))
                .into_iter()
                .map(|(g, _)| g.to_string())
                .collect()
        };
        assert_eq!(names("RedHat"), ["d"]);
        assert_eq!(names("Debian"), ["a", "c", "d"]);
        let set = |names: &[&str]| -> HashSet<GroupName> {
            names.iter().map(|n| GroupName::parse(n).unwrap()).collect()
        };
        let redhat = facts("RedHat");
        assert!(!tree.in_any(&node, Some(&redhat), &set(&["c"])));
        assert!(tree.in_any(&node, Some(&redhat), &set(&["c", "d"])));
        let debian = facts("Debian");
        assert!(tree.in_any(&node, Some(&debian), &set(&["c"])));
        // b has no rule: it holds nobody by rule, and narrows nothing below it.
        assert!(!tree.in_any(&node, Some(&debian), &set(&["b"])));
    }
}
