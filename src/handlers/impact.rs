//! Impact preview: a write to a node or node group with `?dry_run=true` is checked exactly as
//! its commit would check it (`store::By::dry_run`), stores nothing, and answers which
//! nodes' classifications it would change, and how.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::domain::{
    Classification, ClassificationDiff, GroupName, Node, NodeGroup, classification_diff, classify,
};
use crate::error::AppError;
use crate::store::enc::GroupTree;
use crate::store::{By, NodeFilter, PageRequest};

/// The most affected nodes a preview lists; `more` counts the rest.
pub const MAX_LISTED: usize = 100;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteQuery {
    /// Check the write, store nothing, and answer what it would change for every node it
    /// affects (200 with a preview).
    #[serde(default)]
    pub dry_run: bool,
}

impl WriteQuery {
    /// Who writes, and whether only to preview.
    pub fn by<'a>(&self, caller: &'a Caller) -> By<'a> {
        By {
            dry_run: self.dry_run,
            ..By::actor(caller.actor())
        }
    }
}

/// A node whose classification would change.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NodeImpact {
    #[schema(example = "web01.example.com")]
    pub unique_name: String,
    pub diff: ClassificationDiff,
}

/// A node that would fail to classify after the write.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NodeFailure {
    pub unique_name: String,
    pub error: String,
}

/// What a write would do; nothing was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// Always true: this is a preview.
    pub dry_run: bool,
    /// The object as the write would store it; absent for a delete.
    #[schema(value_type = Option<Object>)]
    pub object: Option<Value>,
    /// Nodes looked at: the node written, or every node in the group and the groups below it.
    pub examined: usize,
    /// How many of them would get a different classification.
    pub affected: usize,
    /// The first of those by certname (at most 100), each with how its classification would
    /// change.
    pub nodes: Vec<NodeImpact>,
    /// How many affected nodes `nodes` leaves out.
    pub more: usize,
    /// Nodes that would fail to classify.
    pub failed: Vec<NodeFailure>,
}

fn classified(node: Option<&Node>, tree: &GroupTree) -> Result<Option<Classification>, String> {
    let Some(node) = node else {
        return Ok(None);
    };
    let chain = tree
        .chain(node.node_group_name.as_ref())
        .map_err(|e| e.to_string())?;
    let chain: Vec<&NodeGroup> = chain.iter().map(|g| &**g).collect();
    Ok(Some(classify(node, &chain).0))
}

/// The preview of nodes each before and after (as a node and the tree it classifies under).
fn preview<'a>(
    object: Option<Value>,
    changes: impl Iterator<
        Item = (
            Option<&'a Node>,
            &'a GroupTree,
            Option<&'a Node>,
            &'a GroupTree,
        ),
    >,
) -> Preview {
    let mut affected: Vec<NodeImpact> = Vec::new();
    let mut failed = Vec::new();
    let mut examined = 0;
    for (before, tree_before, after, tree_after) in changes {
        examined += 1;
        let Some(name) = after.or(before).map(|n| n.unique_name.to_string()) else {
            continue;
        };
        let was = classified(before, tree_before);
        let will = classified(after, tree_after);
        match (was, will) {
            (Ok(was), Ok(will)) => {
                let diff = classification_diff(was.as_ref(), will.as_ref());
                if !diff.is_empty() {
                    affected.push(NodeImpact {
                        unique_name: name,
                        diff,
                    });
                }
            }
            (Err(error), _) | (_, Err(error)) => failed.push(NodeFailure {
                unique_name: name,
                error,
            }),
        }
    }
    affected.sort_by(|a, b| a.unique_name.cmp(&b.unique_name));
    let count = affected.len();
    affected.truncate(MAX_LISTED);
    Preview {
        dry_run: true,
        object,
        examined,
        affected: count,
        more: count - affected.len(),
        nodes: affected,
        failed,
    }
}

/// Every node in `group`.
async fn nodes_in(state: &AppState, group: &GroupName) -> Result<Vec<Node>, AppError> {
    let filter = NodeFilter {
        node_group_name: Some(group.clone()),
        ..NodeFilter::default()
    };
    let mut nodes = Vec::new();
    let mut cursor = None;
    loop {
        let page = PageRequest {
            limit: 1000,
            cursor,
        };
        let found = state.store.list_nodes(&filter, &page).await?;
        nodes.extend(found.items.into_iter().map(|n| n.item));
        match found.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(nodes),
        }
    }
}

fn shown<T: Serialize>(object: &T) -> Result<Value, AppError> {
    serde_json::to_value(object).map_err(|e| AppError::Internal(Box::new(e)))
}

/// What a write that leaves the group `name` as `after` (`None`: deleted) would change: every
/// node in it and in the groups below it, classified under the tree as it is and as it would be.
pub async fn of_group<T: Serialize>(
    state: &AppState,
    name: &GroupName,
    after: Option<NodeGroup>,
    object: Option<&T>,
) -> Result<Preview, AppError> {
    let tree = state.store.current_tree().await?;
    let changed = tree.changed(after, name);
    let mut nodes = Vec::new();
    for group in tree.subtree(name) {
        nodes.extend(nodes_in(state, &group).await?);
    }
    let object = object.map(shown).transpose()?;
    let changes = nodes.iter().map(|n| (Some(n), &*tree, Some(n), &changed));
    Ok(preview(object, changes))
}

/// What a write that makes the node `before` into `after` would change for it.
pub async fn of_node<T: Serialize>(
    state: &AppState,
    before: Option<&Node>,
    after: Option<&Node>,
    object: Option<&T>,
) -> Result<Preview, AppError> {
    let tree = state.store.current_tree().await?;
    let object = object.map(shown).transpose()?;
    Ok(preview(
        object,
        std::iter::once((before, &*tree, after, &*tree)),
    ))
}
