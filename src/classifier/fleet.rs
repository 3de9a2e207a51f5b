//! The fleet read a page at a time, each node with what rules judge: its rule view, or its
//! whole facts where the view was taken through another lens than the rules being judged
//! (up to a budget per request; beyond it, the answer is provisional). What a fleet-wide
//! judgement holds at once is a page, not the fleet.

use crate::domain::{Certname, Lens, Node, NodeFacts};
use crate::store::Position;
use crate::store::{PageRequest, Result, Store};

/// Nodes read per store call.
const PAGE: usize = 200;

/// What rules judge, for pages of nodes read by key.
pub(super) struct Judging<'a> {
    store: &'a Store,
    /// The lenses of the trees judged (one, or the tree before and after a write): a view
    /// serves only if it was taken through all of them (through the one they share).
    lenses: Vec<String>,
    /// Whether every node with facts has a view (views were taken through some lens once):
    /// if not, a node without one may have facts.
    every_node_viewed: bool,
    /// Whole facts this request may still read for nodes whose view does not serve.
    budget: usize,
    /// Whether some node was judged on a view that does not serve (its whole facts were
    /// over the budget): the answer may change once views are taken again.
    pub(super) provisional: bool,
}

impl<'a> Judging<'a> {
    pub(super) async fn new(store: &'a Store, lenses: &[&Lens], budget: usize) -> Result<Self> {
        let taken = store.views_taken().await?;
        let mut lenses: Vec<String> = lenses.iter().map(|l| l.id().to_owned()).collect();
        lenses.dedup();
        Ok(Self {
            store,
            lenses,
            every_node_viewed: taken
                .is_some_and(|t| t.every_node_viewed || t.finished_at.is_some()),
            budget,
            provisional: false,
        })
    }

    /// What rules judge for each of `names`, in order.
    pub(super) async fn facts(&mut self, names: &[&Certname]) -> Result<Vec<Option<NodeFacts>>> {
        let views = self.store.views_of(names).await?;
        let mut judged = Vec::with_capacity(names.len());
        let mut whole: Vec<(usize, &Certname)> = Vec::new();
        for (at, (view, name)) in views.into_iter().zip(names).enumerate() {
            let serves = view
                .as_ref()
                .map_or(self.every_node_viewed, |v| self.lenses == [v.lens.as_str()]);
            if !serves {
                if self.budget > 0 {
                    self.budget -= 1;
                    whole.push((at, name));
                } else {
                    self.provisional = true;
                }
            }
            judged.push(view.map(|v| v.into_facts()));
        }
        if !whole.is_empty() {
            let wanted: Vec<&Certname> = whole.iter().map(|(_, n)| *n).collect();
            let read = self.store.facts_of(&wanted).await?;
            for ((at, _), facts) in whole.into_iter().zip(read) {
                judged[at] = facts;
            }
        }
        Ok(judged)
    }
}

/// The fleet from a certname on, by certname, page by page (nodes from their ordered
/// listing, what rules judge by key).
pub(super) struct Fleet<'a> {
    store: &'a Store,
    /// Listed after this certname only.
    after: Option<Certname>,
    /// The next page's cursor: `Some(None)` for the first, `None` after the last.
    nodes: Option<Option<String>>,
    pub(super) judging: Judging<'a>,
}

impl<'a> Fleet<'a> {
    /// Every node after `after` (all if none), by certname.
    pub(super) fn after(store: &'a Store, after: Option<&Certname>, judging: Judging<'a>) -> Self {
        Self {
            store,
            after: after.cloned(),
            nodes: Some(None),
            judging,
        }
    }

    /// The next page of nodes, each with what rules judge; `None` after the last page.
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
        let nodes: Vec<Node> = page
            .items
            .into_iter()
            .map(|n| n.item)
            .filter(|n| self.after.as_ref() != Some(&n.unique_name))
            .collect();
        let names: Vec<&Certname> = nodes.iter().map(|n| &n.unique_name).collect();
        let facts = self.judging.facts(&names).await?;
        Ok(Some(nodes.into_iter().zip(facts).collect()))
    }
}

/// The fleet as it is, for a judgement: every node read after the snapshot by a consistent
/// scan (an index may lag a node write on DynamoDB, and a judgement must not miss one), in no
/// order, a page at a time, what rules judge read by key.
pub(super) struct Scanned<'a> {
    store: &'a Store,
    /// Where the scan goes on: `Some(None)` at the start, `None` after the last batch.
    next: Option<Option<Position>>,
    /// Nodes scanned and not yet given out.
    scanned: Vec<Node>,
    pub(super) judging: Judging<'a>,
}

impl<'a> Scanned<'a> {
    pub(super) fn new(store: &'a Store, judging: Judging<'a>) -> Self {
        Self {
            store,
            next: Some(None),
            scanned: Vec::new(),
            judging,
        }
    }

    /// The next page of nodes (at most `PAGE`), each with what rules judge; `None` after
    /// the last.
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
        let facts = self.judging.facts(&names).await?;
        Ok(Some(page.into_iter().zip(facts).collect()))
    }
}

/// What rules judge for `names` (any number, in order), a page at a time.
pub(super) async fn judged_by_name<'n>(
    judging: &mut Judging<'_>,
    names: impl IntoIterator<Item = &'n Certname>,
    mut each: impl FnMut(&'n Certname, Option<NodeFacts>),
) -> Result<()> {
    let mut names = names.into_iter().peekable();
    while names.peek().is_some() {
        let page: Vec<&Certname> = names.by_ref().take(PAGE).collect();
        let facts = judging.facts(&page).await?;
        for (name, facts) in page.into_iter().zip(facts) {
            each(name, facts);
        }
    }
    Ok(())
}
