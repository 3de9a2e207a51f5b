//! The fleet read a page at a time: every node by certname, each with its last facts (the
//! nodes and the facts are two listings in the same order, joined as they are read). What a
//! fleet-wide judgement holds at once is a page, not the fleet.

use std::collections::VecDeque;

use crate::domain::{Certname, Node, NodeFacts};
use crate::store::engine::Position;
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
    facts: Facts<'a>,
}

impl<'a> Fleet<'a> {
    /// Every node after `after` (all if none), by certname.
    pub(super) fn after(store: &'a Store, after: Option<&Certname>) -> Self {
        Self {
            store,
            after: after.cloned(),
            nodes: Some(None),
            facts: Facts::from(store, after),
        }
    }

    /// The next page of nodes, each with its last facts; `None` after the last page.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<(Node, Option<NodeFacts>)>>> {
        let Some(cursor) = self.nodes.take() else {
            return Ok(None);
        };
        let request = PageRequest {
            limit: PAGE,
            cursor,
        };
        let page = self
            .store
            .list_nodes_from(self.after.as_ref(), &request)
            .await?;
        self.nodes = page.next_cursor.map(Some);
        let mut joined = Vec::with_capacity(page.items.len());
        for node in page.items {
            let node = node.item;
            if self.after.as_ref() == Some(&node.unique_name) {
                continue;
            }
            let facts = self.facts.of(&node.unique_name).await?;
            joined.push((node, facts));
        }
        Ok(Some(joined))
    }
}

/// Every node's facts by certname, read a page at a time as certnames are asked for in
/// ascending order: it holds at most a page of facts.
pub(super) struct Facts<'a> {
    store: &'a Store,
    from: Option<Certname>,
    /// The next page's cursor: `Some(None)` for the first, `None` after the last.
    next: Option<Option<String>>,
    /// Facts read and not yet asked for, by certname.
    read: VecDeque<NodeFacts>,
}

impl<'a> Facts<'a> {
    /// Facts of certnames from `from` on (all if none).
    pub(super) fn from(store: &'a Store, from: Option<&Certname>) -> Self {
        Self {
            store,
            from: from.cloned(),
            next: Some(None),
            read: VecDeque::new(),
        }
    }

    /// The last facts of `name`, if it sent any; each name asked for must come after the
    /// one asked for before. Facts of certnames passed by (no node any more) are dropped.
    pub(super) async fn of(&mut self, name: &Certname) -> Result<Option<NodeFacts>> {
        while self.read.back().is_none_or(|f| f.unique_name < *name) {
            let Some(cursor) = self.next.take() else {
                break;
            };
            self.read.clear();
            let request = PageRequest {
                limit: PAGE,
                cursor,
            };
            let page = self
                .store
                .list_facts_from(self.from.as_ref(), &request)
                .await?;
            self.next = page.next_cursor.map(Some);
            self.read.extend(page.items);
        }
        while self.read.front().is_some_and(|f| f.unique_name < *name) {
            self.read.pop_front();
        }
        Ok(match self.read.front() {
            Some(f) if f.unique_name == *name => self.read.pop_front(),
            _ => None,
        })
    }
}

/// The fleet as it is, for a judgement: every node read after the snapshot by a consistent
/// scan (an index may lag a node write on DynamoDB, and a judgement must not miss one), in no
/// order, a page at a time, each page's facts read by key.
pub(super) struct Scanned<'a> {
    store: &'a Store,
    /// Where the scan goes on: `Some(None)` at the start, `None` after the last batch.
    next: Option<Option<Position>>,
    /// Nodes scanned and not yet given out.
    scanned: VecDeque<Node>,
}

impl<'a> Scanned<'a> {
    pub(super) fn new(store: &'a Store) -> Self {
        Self {
            store,
            next: Some(None),
            scanned: VecDeque::new(),
        }
    }

    /// The next page of nodes (at most `PAGE`), each with its last facts; `None` after the
    /// last.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<(Node, Option<NodeFacts>)>>> {
        while self.scanned.len() < PAGE {
            let Some(after) = self.next.take() else {
                break;
            };
            let (nodes, more) = self.store.scan_nodes(after).await?;
            self.next = more.map(Some);
            self.scanned.extend(nodes.into_iter().map(|n| n.item));
        }
        if self.scanned.is_empty() {
            return Ok(None);
        }
        let take = self.scanned.len().min(PAGE);
        let page: Vec<Node> = self.scanned.drain(..take).collect();
        let names: Vec<&Certname> = page.iter().map(|n| &n.unique_name).collect();
        let facts = self.store.facts_of(&names).await?;
        Ok(Some(page.into_iter().zip(facts).collect()))
    }
}
