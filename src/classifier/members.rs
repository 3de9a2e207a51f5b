//! Who is where, for operators: the nodes a group holds and the nodes that get a class, each
//! judged on its last facts by the same definition as a classification (`GroupTree`). Each
//! call reads the fleet: for operators, not for agent runs.

use super::Classifier;
use super::impact::fleet;
use crate::domain::{Certname, ClassName, GroupName, NodeGroup, Source, Why, classify_all};
use crate::error::AppError;

impl Classifier<'_> {
    /// The nodes the group `name` holds now, each with why (by name, pin or rule); not
    /// those of the groups below it.
    pub async fn members(self, name: &GroupName) -> Result<Vec<(Certname, Vec<Why>)>, AppError> {
        self.store.get_node_group(name).await?;
        let (tree, _) = self.store.snapshot().await?;
        let (nodes, facts) = fleet(self.store).await?;
        let found = nodes
            .iter()
            .filter_map(|node| {
                let why: Vec<Why> = tree
                    .memberships(node, facts.get(&node.unique_name))
                    .into_iter()
                    .filter(|(g, _)| g == name)
                    .map(|(_, why)| why)
                    .collect();
                (!why.is_empty()).then(|| (node.unique_name.clone(), why))
            })
            .collect();
        Ok(found)
    }

    /// The nodes that get `class`, each with where it comes from; nodes whose groups
    /// conflict are left out.
    pub async fn holders(self, class: &ClassName) -> Result<Vec<(Certname, Source)>, AppError> {
        let (tree, _) = self.store.snapshot().await?;
        let (nodes, facts) = fleet(self.store).await?;
        let mut found = Vec::new();
        for node in &nodes {
            let chains = tree.leaves(node, facts.get(&node.unique_name))?;
            let chains: Vec<Vec<&NodeGroup>> = chains
                .iter()
                .map(|chain| chain.iter().map(|g| &**g).collect())
                .collect();
            if let Ok((_, why)) = classify_all(node, &chains)
                && let Some(from) = why.classes.get(class)
            {
                found.push((node.unique_name.clone(), from.clone()));
            }
        }
        Ok(found)
    }
}
