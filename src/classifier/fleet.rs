//! The fleet read a page at a time: every node by certname, each with its last facts (the
//! nodes and the facts are two listings in the same order, joined as they are read). What a
//! fleet-wide judgement holds at once is a page, not the fleet.

use std::collections::VecDeque;

use crate::domain::{Certname, Node, NodeFacts};
use crate::store::{PageRequest, Result, Store};

/// Nodes (and facts) read per store call: facts are up to 256 KiB each.
const PAGE: usize = 200;

/// The fleet from a certname on, page by page.
pub(super) struct Fleet<'a> {
    store: &'a Store,
    /// Listed after this certname only.
    after: Option<Certname>,
    /// The next page's cursor: `Some(None)` for the first, `None` after the last.
    nodes: Option<Option<String>>,
    facts_next: Option<Option<String>>,
    /// Facts read and not yet joined to their node, by certname.
    facts: VecDeque<NodeFacts>,
}

impl<'a> Fleet<'a> {
    /// Every node after `after` (all if none), by certname.
    pub(super) fn after(store: &'a Store, after: Option<&Certname>) -> Self {
        Self {
            store,
            after: after.cloned(),
            nodes: Some(None),
            facts_next: Some(None),
            facts: VecDeque::new(),
        }
    }

    /// The next page of nodes, each with its last facts; `None` after the last page.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<(Node, Option<NodeFacts>)>>> {
        let Some(cursor) = self.nodes.take() else {
            return Ok(None);
        };
        let from = self.after.as_ref();
        let request = PageRequest {
            limit: PAGE,
            cursor,
        };
        let page = self.store.list_nodes_from(from, &request).await?;
        self.nodes = page.next_cursor.map(Some);
        let Some(last) = page.items.last().map(|n| n.item.unique_name.clone()) else {
            return Ok(Some(Vec::new()));
        };
        // Facts up to this page's last certname: at most a page more than the page needs.
        while self.facts.back().is_none_or(|f| f.unique_name < last) {
            let Some(cursor) = self.facts_next.take() else {
                break;
            };
            let request = PageRequest {
                limit: PAGE,
                cursor,
            };
            let facts = self.store.list_facts_from(from, &request).await?;
            self.facts_next = facts.next_cursor.map(Some);
            self.facts.extend(facts.items);
        }
        let mut joined = Vec::with_capacity(page.items.len());
        for node in page.items {
            let node = node.item;
            if self.after.as_ref() == Some(&node.unique_name) {
                continue;
            }
            // Facts of a certname with no node (deleted since) are passed by.
            while self
                .facts
                .front()
                .is_some_and(|f| f.unique_name < node.unique_name)
            {
                self.facts.pop_front();
            }
            let facts = match self.facts.front() {
                Some(f) if f.unique_name == node.unique_name => self.facts.pop_front(),
                _ => None,
            };
            joined.push((node, facts));
        }
        Ok(Some(joined))
    }
}
