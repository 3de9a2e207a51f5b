//! Learning a node enc does not know: if its facts (or a pin of its certname) put it in
//! groups that give it an environment, it is recorded in that environment, judged on the
//! groups its commit holds to.

use super::{Classifier, JUDGED_TRIES, absent, conflicted, kept_moving};
use crate::domain::{
    Certname, ClusterName, Conflict, ConflictValue, EnvironmentKey, EnvironmentName, GroupName,
    GroupTree, Node, NodeFacts,
};
use crate::error::AppError;
use crate::store::Record;
use crate::store::enc::ClassificationInputs;
use crate::store::{Edit, StoreError};

/// Who sent an agent run's facts.
#[derive(Clone, Copy)]
pub struct Sender<'a> {
    /// Whether they may see and touch nodes of a cluster.
    pub reaches: &'a (dyn Fn(&ClusterName) -> bool + Sync),
    /// Whether they are bound to some clusters: a node they may not see is answered as absent,
    /// and so is one no group of theirs would take in.
    pub bound: bool,
    pub by: Edit<'a>,
}

impl Classifier<'_> {
    /// An agent run's facts taken for `name`: a node enc does not know is learnt from them
    /// ([`Classifier::learn`]); then, if the sender may see the node, its rule view and
    /// whole facts are kept when due. Answers what the node is classified by, as the facts
    /// left it; `read` is the classification read made already (with a token's check), if
    /// one was.
    pub async fn take_facts(
        self,
        name: &Certname,
        facts: &NodeFacts,
        read: Option<ClassificationInputs>,
        sender: Sender<'_>,
    ) -> Result<ClassificationInputs, AppError> {
        let mut inputs = match read {
            Some(inputs) => inputs,
            None => self.store.classification_inputs(name, None).await?,
        };
        if inputs.node.is_none() {
            match self.learn(name, facts, sender.reaches, sender.by).await {
                Err(AppError::NotFound(_)) if sender.bound => return Err(absent(name)),
                learnt => learnt?,
            }
            inputs = self.store.classification_inputs(name, None).await?;
        }
        // A sender bound to other clusters learns nothing of the node and stores nothing.
        let record = inputs.node.as_ref().ok_or_else(|| absent(name))?;
        if sender.bound && !reached(record, sender.reaches)? {
            return Err(absent(name));
        }
        Ok(self.keeper.keep_facts(name, facts, inputs).await?)
    }

    /// Records the node `name` enc does not know, from `facts`: in the environment of the
    /// nearest group with one on each leaf's chain, all the same. `reaches` says which
    /// clusters the caller may learn nodes into: any other is answered as no group at all.
    pub async fn learn(
        self,
        name: &Certname,
        facts: &NodeFacts,
        reaches: impl Fn(&ClusterName) -> bool,
        by: Edit<'_>,
    ) -> Result<(), AppError> {
        if !self.learns {
            return Err(absent(name));
        }
        for tried in 0..JUDGED_TRIES {
            if tried > 0 {
                super::moved_on(tried).await;
            }
            let (tree, snapshot) = self.store.snapshot().await?;
            let node = learnt(&tree, name, facts, &reaches)?;
            let by = Edit {
                judged: Some(snapshot),
                ..by
            };
            match self.store.create_node(node, by).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => return Ok(()),
                Err(StoreError::TreeMoved) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_moving())
    }
}

/// The node `tree` takes in with `facts`, in its groups' environment.
fn learnt(
    tree: &GroupTree,
    name: &Certname,
    facts: &NodeFacts,
    reaches: impl Fn(&ClusterName) -> bool,
) -> Result<Node, AppError> {
    let internal = |e: String| AppError::Internal(e.into());
    let bare = Node {
        unique_name: name.clone(),
        node_group_name: None,
        environment_name: EnvironmentName::parse("production").map_err(internal)?,
        puppet_cluster_name: ClusterName::parse("unknown").map_err(internal)?,
        classes: Default::default(),
        parameters: Default::default(),
    };
    let chains = tree.leaves(&bare, Some(facts))?;
    if chains.is_empty() {
        return Err(AppError::NotFound(format!(
            "node {name} does not exist, and no group's rule or pin takes it in"
        )));
    }
    let mut environments: Vec<(EnvironmentKey, GroupName)> = Vec::new();
    for chain in &chains {
        if let Some(group) = chain.iter().find(|g| g.environment().is_some())
            && let Some(environment) = group.environment()
            && !environments.iter().any(|(e, _)| *e == environment)
        {
            environments.push((environment, group.name.clone()));
        }
    }
    if environments
        .iter()
        .any(|(e, _)| !reaches(&e.puppet_cluster_name))
    {
        return Err(absent(name));
    }
    let (environment, _) = match environments.len() {
        0 => {
            return Err(AppError::NotFound(format!(
                "node {name} does not exist, and the groups that take it in give no environment"
            )));
        }
        1 => environments.remove(0),
        _ => {
            let conflicts = vec![Conflict {
                key: "environment".into(),
                values: environments
                    .iter()
                    .map(|(e, g)| ConflictValue {
                        value: serde_json::json!(e.to_string()),
                        group: g.clone(),
                    })
                    .collect(),
            }];
            return Err(conflicted(name, conflicts));
        }
    };
    Ok(Node {
        environment_name: environment.environment_name,
        puppet_cluster_name: environment.puppet_cluster_name,
        ..bare
    })
}

/// Whether `reaches` takes the cluster in a node's record (read without the rest of the
/// node); a name that is not a cluster's is reached by no one.
fn reached(record: &Record, reaches: &dyn Fn(&ClusterName) -> bool) -> Result<bool, AppError> {
    #[derive(serde::Deserialize)]
    struct InCluster<'a> {
        #[serde(borrow)]
        puppet_cluster_name: std::borrow::Cow<'a, str>,
    }
    let node: InCluster<'_> =
        serde_json::from_slice(&record.body).map_err(|e| AppError::Internal(Box::new(e)))?;
    Ok(ClusterName::parse(&node.puppet_cluster_name).is_ok_and(|c| reaches(&c)))
}
