//! Rule views kept up to date. An agent run keeps its node's view (and whole facts) only
//! when the view changed, or the whole facts are older than `ENC_FACTS_REFRESH_SECONDS`.
//! When rules come to read other paths (the tree's lens changes), every node's view is taken
//! again from its stored facts: within the write that changed them for a small fleet, else
//! by the [`Keeper`] in the background, resumably (its progress is a stored record, so an
//! enc restarted mid-way goes on where it was), and paced so that it leaves the store to
//! agent runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;

use crate::domain::{Certname, Lens, NodeFacts, RuleView};
use crate::store::enc::{ClassificationInputs, ViewsTaken};
use crate::store::{Result, Store, StoreError};

/// How far rule views are taken through the paths rules read now.
#[derive(Debug)]
pub struct ViewsStatus {
    /// The paths every group's rule reads now.
    pub lens: Lens,
    /// The last (or current) taking of every node's view again.
    pub taken: Option<ViewsTaken>,
    /// Whether that taking went through `lens` to the end: membership answers are exact.
    pub current: bool,
}

impl ViewsStatus {
    /// Reads where the taking of views is against the rules' paths now.
    pub async fn read(store: &Store) -> Result<ViewsStatus> {
        let (tree, _) = store.snapshot().await?;
        let lens = tree.lens().clone();
        let taken = store.views_taken().await?;
        let current = taken
            .as_ref()
            .is_some_and(|t| t.lens == lens.id() && t.finished_at.is_some());
        Ok(ViewsStatus {
            lens,
            taken,
            current,
        })
    }
}

/// How views are kept, and the task that takes them again in the background.
pub struct Keeper {
    store: Arc<Store>,
    /// Nodes whose whole facts one request may read, when their views do not serve the
    /// rules it judges (`ENC_VIEWS_INLINE`): also how many a write takes again itself.
    pub inline: usize,
    /// Whole facts are stored again after this long even when the view did not change.
    pub refresh: chrono::Duration,
    /// A pause between pages of background work.
    pub pace: Duration,
    wake: Notify,
    started: Once,
    /// Seen true once: every node with facts has a view (through some lens).
    every_node_viewed: AtomicBool,
}

/// Whether a taking of views got to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Done,
    /// The budget ran out first.
    More,
}

impl Keeper {
    pub fn new(
        store: Arc<Store>,
        inline: usize,
        refresh: chrono::Duration,
        pace: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            inline,
            refresh,
            pace,
            wake: Notify::new(),
            started: Once::new(),
            every_node_viewed: AtomicBool::new(false),
        })
    }

    /// Starts the background task (once): it takes views until they are all through the
    /// tree's lens, then waits to be woken (or a minute).
    pub fn start(self: &Arc<Self>) {
        self.started.call_once(|| {
            let keeper = self.clone();
            tokio::spawn(async move { keeper.keep().await });
        });
    }

    /// Tells the background task that the lens may have changed.
    pub fn wake(self: &Arc<Self>) {
        self.start();
        self.wake.notify_one();
    }

    async fn keep(self: Arc<Self>) {
        loop {
            match take_views(&self.store, None, self.pace, &self.every_node_viewed).await {
                Ok(_) => {}
                Err(e) => {
                    let error = crate::error::cause_chain(&e);
                    tracing::warn!(error = %error, "taking rule views failed; trying again");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }

    /// After a write that may have changed the rules' paths: takes views again within the
    /// request for up to `inline` nodes, then leaves the rest to the background task.
    pub async fn follow(self: &Arc<Self>) -> Result<Taken> {
        let viewed = &self.every_node_viewed;
        let taken = take_views(&self.store, Some(self.inline), Duration::ZERO, viewed).await?;
        if taken == Taken::More {
            self.wake();
        }
        Ok(taken)
    }

    /// Whether this process has seen that every node with facts has a view: until then, a
    /// node without one may have facts.
    pub fn every_node_viewed(&self) -> bool {
        self.every_node_viewed.load(Ordering::Relaxed)
    }

    /// Keeps the view of the node an agent run sent `facts` for, and its whole facts, if
    /// either is due; `inputs` is the classification read, read again if another write of
    /// the view came first.
    pub async fn keep_facts(
        &self,
        name: &Certname,
        facts: &NodeFacts,
        mut inputs: ClassificationInputs,
    ) -> Result<ClassificationInputs> {
        for tried in 0..super::JUDGED_TRIES {
            if tried > 0 {
                super::moved_on(tried).await;
                inputs = self.store.classification_inputs(name, None).await?;
            }
            let view = inputs.tree.lens().view(facts);
            let stored = inputs.view()?.map(|(v, _)| v);
            let due = stored.as_ref().is_none_or(|s| {
                !s.same_as(&view) || facts.received_at - s.received_at >= self.refresh
            });
            if !due {
                return Ok(inputs);
            }
            // Not held to the tree: a view taken through a lens the tree no longer has says
            // so (readers compare lenses), and the node's next run takes it again.
            if self
                .store
                .keep_view(&view, stored.as_ref(), Some(facts))
                .await?
            {
                return Ok(inputs);
            }
        }
        Err(StoreError::Unavailable(
            "the node's view kept changing while its facts were kept".into(),
        ))
    }
}

/// Takes every node's view through the tree's lens, going on from where the stored record
/// says the last taking got to, for the facts of at most `budget` nodes (`None`: to the end).
pub async fn take_views(
    store: &Store,
    budget: Option<usize>,
    pace: Duration,
    every_node_viewed: &AtomicBool,
) -> Result<Taken> {
    let mut scanned = 0;
    loop {
        let (tree, _) = store.snapshot().await?;
        let lens = tree.lens();
        let record = store.views_taken().await?;
        if record
            .as_ref()
            .is_some_and(|r| r.every_node_viewed || r.finished_at.is_some())
        {
            every_node_viewed.store(true, Ordering::Relaxed);
        }
        let before = record.as_ref().map(|r| r.version);
        let mut taken = match record {
            Some(r) if r.lens == lens.id() && r.finished_at.is_some() => return Ok(Taken::Done),
            Some(r) if r.lens == lens.id() => r,
            other => ViewsTaken::start(lens, other.as_ref()),
        };
        if budget.is_some_and(|b| scanned >= b) {
            return Ok(Taken::More);
        }
        let (facts, more) = store.scan_facts(taken.cursor.clone()).await?;
        let names: Vec<&Certname> = facts.iter().map(|f| &f.unique_name).collect();
        let views = store.views_of(&names).await?;
        for (facts, view) in facts.iter().zip(views) {
            // Through this lens already, or kept by an agent run from facts newer than these
            // (read before it wrote): left as it is.
            let newer = |v: &RuleView| v.lens == lens.id() || v.received_at > facts.received_at;
            if view.as_ref().is_some_and(newer) {
                continue;
            }
            let again = lens.view(facts);
            // `false`: an agent run kept a view meanwhile, from newer facts.
            if store.rewrite_view(&again, view.as_ref()).await? {
                taken.rewritten += 1;
            }
        }
        scanned += facts.len();
        taken.scanned += facts.len() as u64;
        taken.cursor = more;
        if taken.cursor.is_none() {
            taken.finished_at = Some(Utc::now());
        }
        // `false`: another taker (another enc task) moved the record: read it again.
        if store.record_views_taken(&taken, before).await? && taken.finished_at.is_some() {
            tracing::info!(
                lens = %taken.lens,
                scanned = taken.scanned,
                rewritten = taken.rewritten,
                "rule views taken through the rules' paths"
            );
            every_node_viewed.store(true, Ordering::Relaxed);
            return Ok(Taken::Done);
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
}
