//! Who is where, for operators: the nodes a group holds and the nodes that get a class, each
//! judged on its last facts by the same definition as a classification (`GroupTree`). Read
//! a page of the fleet at a time from the caller's cursor, until the answer's page is full
//! or `Page::judged` nodes were judged: never the whole fleet at once, and a lookup of a
//! group that holds few nodes costs each request the same (its pages hold fewer).

use super::Classifier;
use super::fleet::{Fleet, Judging};
use crate::domain::{
    Certname, ClassName, GroupName, GroupTree, Node, NodeFacts, Source, Why, classify_all,
};
use crate::error::AppError;

/// The page a lookup asks for: nodes after a certname (all if none), up to `limit` found,
/// judging at most `judged` nodes.
#[derive(Debug, Clone)]
pub struct Page {
    pub after: Option<Certname>,
    pub limit: usize,
    pub judged: usize,
}

impl Classifier<'_> {
    /// Up to `limit + 1` nodes of `page` that the group `name` holds now, by certname,
    /// each with why (by name, pin or rule); not those of the groups below it.
    pub async fn members(self, name: &GroupName, page: Page) -> Result<Found<Vec<Why>>, AppError> {
        self.store.get_node_group(name).await?;
        let (tree, _) = self.store.snapshot().await?;
        self.find(&tree, page, |node, facts| {
            let why = tree.why_in(node, facts, name);
            (!why.is_empty()).then_some(why)
        })
        .await
    }

    /// Up to `limit + 1` nodes of `page` that get `class`, by certname, each with where it
    /// comes from; nodes whose groups conflict are left out.
    pub async fn holders(self, class: &ClassName, page: Page) -> Result<Found<Source>, AppError> {
        let (tree, _) = self.store.snapshot().await?;
        self.find(&tree, page, |node, facts| {
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

    /// Up to `limit + 1` nodes of `page` for which `found` says something, by certname,
    /// judged under `tree`.
    async fn find<T>(
        self,
        tree: &GroupTree,
        page: Page,
        found: impl Fn(&Node, Option<&NodeFacts>) -> Option<T>,
    ) -> Result<Found<T>, AppError> {
        let _place = self.fleet_work()?;
        let (limit, mut items) = (page.limit, Vec::new());
        let judging = Judging::new(self.store, &[tree.lens()], self.budget()).await?;
        let mut fleet = Fleet::after(self.store, page.after.as_ref(), judging);
        let (mut examined, mut resume) = (0, None);
        'pages: while let Some(nodes) = fleet.next().await? {
            for (node, facts) in nodes {
                examined += 1;
                if let Some(item) = found(&node, facts.as_ref()) {
                    items.push((node.unique_name.clone(), item));
                    if items.len() > limit {
                        break 'pages;
                    }
                }
                if examined == page.judged {
                    resume = Some(node.unique_name);
                    break 'pages;
                }
            }
        }
        let provisional = fleet.judging.provisional;
        Ok(Found {
            items,
            resume,
            provisional,
        })
    }
}

/// What a lookup found: nodes by certname (up to one more than asked for: there are more),
/// where the next page starts if this one stopped at `Page::judged` nodes before it was full,
/// and whether some were judged on rule views taken before the rules read the paths they
/// read now.
pub struct Found<T> {
    pub items: Vec<(Certname, T)>,
    pub resume: Option<Certname>,
    pub provisional: bool,
}
