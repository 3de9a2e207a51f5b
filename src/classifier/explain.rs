//! Why a node is classified as it is: the merge of its leaf groups' chains (with where
//! every class and value came from), and its membership: each group it is in and why, each
//! chain from the root with the values each group gave, which won and which they overrode.

use serde::Serialize;
use utoipa::ToSchema;

use super::{Classifier, conflicted};
use crate::domain::rule::RuleOutcome;
use crate::domain::{Certname, NodeFacts};
use crate::domain::{
    ChainExplanation, Classification, Conflict, Explanation, GroupName, GroupTree, NodeGroup, Why,
    classify_all, explain_chain,
};
use crate::error::AppError;
use crate::store::enc::{Classifiable, ClassificationInputs};

impl Classifier<'_> {
    /// The facts a read of `name`'s classification judges rules with: `given` (an agent
    /// run's), else none where the stored rule view serves the rules (or every node with
    /// facts has a view and this one has none), else the node's whole stored facts (its view
    /// was taken through other rules' paths, or not yet taken).
    pub async fn facts_for(
        &self,
        name: &Certname,
        inputs: &ClassificationInputs,
        given: Option<NodeFacts>,
    ) -> Result<Option<NodeFacts>, AppError> {
        Ok(match (given, inputs.view()?) {
            (Some(given), _) => Some(given),
            (None, Some((_, true))) => None,
            (None, None) if self.keeper.every_node_viewed() => None,
            (None, _) => self.store.facts(name).await?,
        })
    }
}

/// `name`'s classification from what was read (with `facts`, if any, in place of its view)
/// and, when `explain`, its membership; a conflict is then explained with the membership too.
pub fn classify_read(
    name: &Certname,
    inputs: &ClassificationInputs,
    facts: Option<NodeFacts>,
    explain: bool,
) -> Result<(Classification, Explanation, Option<Membership>), AppError> {
    let classifiable = inputs.classifiable(name, facts)?;
    let (classification, explanation) = classified(&classifiable).map_err(|conflicts| {
        match (conflicted(name, conflicts), explain) {
            (AppError::NodeConflicts(detail, conflicts), true) => {
                let why = serde_json::to_value(membership(&inputs.tree, &classifiable));
                AppError::ExplainedNodeConflicts(detail, conflicts, why.unwrap_or_default())
            }
            (other, _) => other,
        }
    })?;
    let membership = explain.then(|| membership(&inputs.tree, &classifiable));
    Ok((classification, explanation, membership))
}

/// The node's classification merged from its leaf groups' chains, and where each part came
/// from; the keys they disagree on if they do.
pub fn classified(
    classifiable: &Classifiable,
) -> Result<(Classification, Explanation), Vec<Conflict>> {
    let chains: Vec<Vec<&NodeGroup>> = classifiable
        .chains
        .iter()
        .map(|chain| chain.iter().map(|g| &**g).collect())
        .collect();
    classify_all(&classifiable.node.item, &chains)
}

/// Why a node is in the groups it is in.
#[derive(Debug, Serialize, ToSchema)]
pub struct Membership {
    pub groups: Vec<GroupMembership>,
    /// The groups it is in that have none of those below them; each merges its ancestors.
    #[schema(value_type = Vec<String>)]
    pub leaves: Vec<GroupName>,
    pub rules: Vec<RuleResult>,
    /// Each leaf group's chain from the root: every class and value each group (and the
    /// node) gives, the one that wins and those it overrode.
    pub chains: Vec<ChainExplanation>,
    /// When the facts the rules were judged on came (absent: the node sent none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts_received_at: Option<String>,
    /// Their age, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts_age_seconds: Option<i64>,
    /// Who posted them: the Puppet server's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts_posted_by: Option<String>,
    /// Whether trusted facts (from the node's verified certificate) came with them; rules on
    /// `trusted` paths match nothing without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts_with_trusted: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupMembership {
    #[schema(value_type = String)]
    pub group: GroupName,
    pub why: Vec<Why>,
    /// The groups the node is in that this group is an ancestor of.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub ancestor_of: Vec<GroupName>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleResult {
    #[schema(value_type = String)]
    pub group: GroupName,
    pub outcome: RuleOutcome,
}

/// The membership part of an explanation.
pub fn membership(tree: &GroupTree, classifiable: &Classifiable) -> Membership {
    let node = &classifiable.node.item;
    let facts = classifiable.facts.as_ref();
    let mut groups: Vec<GroupMembership> = Vec::new();
    for (group, why) in tree.memberships(node, facts) {
        match groups.last_mut() {
            Some(last) if last.group == group => last.why.push(why),
            _ => groups.push(GroupMembership {
                group,
                why: vec![why],
                ancestor_of: Vec::new(),
            }),
        }
    }
    // Every group above one the node is in, and which of those it is above.
    let members: Vec<GroupName> = groups.iter().map(|g| g.group.clone()).collect();
    for member in &members {
        let Ok(chain) = tree.chain(Some(member)) else {
            continue;
        };
        for above in chain.iter().skip(1) {
            match groups.iter_mut().find(|g| g.group == above.name) {
                Some(known) => {
                    if !known.why.contains(&Why::Ancestor) {
                        known.why.push(Why::Ancestor);
                    }
                    known.ancestor_of.push(member.clone());
                }
                None => groups.push(GroupMembership {
                    group: above.name.clone(),
                    why: vec![Why::Ancestor],
                    ancestor_of: vec![member.clone()],
                }),
            }
        }
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    let chains = classifiable
        .chains
        .iter()
        .filter_map(|chain| {
            let chain: Vec<&NodeGroup> = chain.iter().map(|g| &**g).collect();
            explain_chain(node, &chain)
        })
        .collect();
    Membership {
        groups,
        chains,
        leaves: classifiable
            .chains
            .iter()
            .filter_map(|c| c.first().map(|g| g.name.clone()))
            .collect(),
        rules: tree
            .rule_outcomes(node, facts)
            .into_iter()
            .map(|(group, outcome)| RuleResult { group, outcome })
            .collect(),
        facts_received_at: facts.map(|f| {
            f.received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }),
        facts_age_seconds: facts.map(|f| (chrono::Utc::now() - f.received_at).num_seconds().max(0)),
        facts_posted_by: facts.and_then(|f| f.posted_by.clone()),
        facts_with_trusted: facts.map(|f| f.with_trusted),
    }
}
