//! Who is where, for operators: the nodes a group holds and the nodes that get a class, each
//! judged on its last facts by the same definition as a classification (`GroupTree`). Read
//! a page of the fleet at a time from the caller's cursor, until the answer's page is full:
//! never the whole fleet at once.

use super::Classifier;
use super::fleet::{Fleet, Judging};
use crate::domain::{
    Certname, ClassName, GroupName, GroupTree, Node, NodeFacts, Source, Why, classify_all,
};
use crate::error::AppError;

impl Classifier<'_> {
    /// Up to `limit + 1` nodes after `after` that the group `name` holds now, by certname,
    /// each with why (by name, pin or rule); not those of the groups below it.
    pub async fn members(
        self,
        name: &GroupName,
        after: Option<&Certname>,
        limit: usize,
    ) -> Result<Found<Vec<Why>>, AppError> {
        self.store.get_node_group(name).await?;
        let (tree, _) = self.store.snapshot().await?;
        self.find(&tree, after, limit, |node, facts| {
            let why = tree.why_in(node, facts, name);
            (!why.is_empty()).then_some(why)
        })
        .await
    }

    /// Up to `limit + 1` nodes after `after` that get `class`, by certname, each with where
    /// it comes from; nodes whose groups conflict are left out.
    pub async fn holders(
        self,
        class: &ClassName,
        after: Option<&Certname>,
        limit: usize,
    ) -> Result<Found<Source>, AppError> {
        let (tree, _) = self.store.snapshot().await?;
        self.find(&tree, after, limit, |node, facts| {
            let chains = tree.leaves(node, facts).ok()?;
            let chains: Vec<Vec<_>> = chains
                .iter()
                .map(|chain| chain.iter().map(|g| &**g).collect())
                .collect();
            let (_, why) = classify_all(node, &chains).ok()?;
            why.classes.get(class).cloned()
        })
        .await
    }

    /// Up to `limit + 1` nodes after `after` for which `found` says something, by certname,
    /// judged under `tree`.
    async fn find<T>(
        self,
        tree: &GroupTree,
        after: Option<&Certname>,
        limit: usize,
        found: impl Fn(&Node, Option<&NodeFacts>) -> Option<T>,
    ) -> Result<Found<T>, AppError> {
        let _place = self.fleet_work()?;
        let mut items = Vec::new();
        let judging = Judging::new(self.store, &[tree.lens()], self.budget()).await?;
        let mut fleet = Fleet::after(self.store, after, judging);
        while let Some(page) = fleet.next().await? {
            for (node, facts) in page {
                if let Some(item) = found(&node, facts.as_ref()) {
                    items.push((node.unique_name, item));
                    if items.len() > limit {
                        break;
                    }
                }
            }
            if items.len() > limit {
                break;
            }
        }
        let provisional = fleet.judging.provisional;
        Ok(Found { items, provisional })
    }
}

/// What a lookup found: nodes by certname, and whether some were judged on rule views taken
/// before the rules read the paths they read now.
pub struct Found<T> {
    pub items: Vec<(Certname, T)>,
    pub provisional: bool,
}
