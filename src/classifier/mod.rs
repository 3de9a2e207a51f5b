//! The classifier service: the one place that decides which groups a node is in and refuses
//! a write that would give nodes conflicting values. Every write that can change a node's
//! classification comes here as a [`Change`]: it is judged on one snapshot of the groups and
//! the nodes (`Store::snapshot`), and committed only while both are still as they were
//! (`Edit::judged`); if either moved, it is judged again on the new ones. Handlers parse,
//! authorize, call [`Classifier::write`] and shape its [`Outcome`].

pub mod explain;
mod fleet;
pub mod impact;
mod learn;
pub use learn::Sender;
mod members;
mod past;
pub mod plan;
pub mod views;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Semaphore, SemaphorePermit};

pub use self::impact::{Assessment, NodeFailure, NodeImpact, Preview};
pub use self::members::{Found, Page};
pub use self::views::Keeper;
use crate::domain::{Certname, Conflict, GroupName, Node, NodeGroup, Stored};
use crate::error::AppError;
use crate::store::Key;
use crate::store::RecordKind;
use crate::store::enc::{NODE, NODE_GROUP};
use crate::store::{Edit, Kind, Snapshot, Store, StoreError};

/// The most nodes one group may pin.
pub const MAX_PINS: usize = 10_000;

/// The largest object enc keeps, as JSON: within DynamoDB's 400 KB item limit with room for
/// the store's own attributes, and the same for every backend.
pub const MAX_OBJECT_BYTES: usize = 350 * 1024;

/// Refuses an object too large to store (413), before any store sees it.
pub fn within_size<T: serde::Serialize>(object: T) -> Result<T, AppError> {
    let size = serde_json::to_vec(&object).map_or(usize::MAX, |json| json.len());
    if size > MAX_OBJECT_BYTES {
        return Err(AppError::PayloadTooLarge(format!(
            "the object is {size} bytes as JSON; at most {MAX_OBJECT_BYTES} can be stored"
        )));
    }
    Ok(object)
}

/// How often a write is judged again when the groups or nodes change under it.
const JUDGED_TRIES: usize = 8;

/// Decides membership and judges writes, over one store.
#[derive(Clone, Copy)]
pub struct Classifier<'a> {
    store: &'a Store,
    /// Whether a node enc does not know is learnt from its facts (`ENC_CLASSIFY_UNKNOWN`).
    learns: bool,
    /// Places for fleet-wide work (reads of every node): taken, the answer is 503.
    fleet_work: &'a Semaphore,
    /// Keeps rule views through the rules' paths.
    keeper: &'a Arc<Keeper>,
}

/// Who writes, and how.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub actor: &'a str,
    /// The request that asks for it, for the revisions it writes.
    pub request_id: Option<&'a str>,
    /// Judge the write, store nothing, and answer what it would do (a preview).
    pub dry_run: bool,
    /// Make it although it gives nodes conflicting values (recorded in its revision), or
    /// the object is managed by a classification tree.
    pub force: bool,
}

impl<'a> Write<'a> {
    pub fn by(actor: &'a str) -> Self {
        Self {
            actor,
            request_id: None,
            dry_run: false,
            force: false,
        }
    }
}

/// A write that can change nodes' classifications. `expected` is `If-Match`.
#[derive(Debug, Clone)]
pub enum Change {
    CreateGroup(NodeGroup),
    /// `keep_pins`: the group keeps the nodes it pins now, whatever `group.pinned` says.
    ReplaceGroup {
        group: NodeGroup,
        keep_pins: bool,
        expected: Option<u64>,
    },
    DeleteGroup {
        name: GroupName,
        expected: Option<u64>,
    },
    /// Pins `nodes` to the group (`pin`), or unpins them.
    Pins {
        group: GroupName,
        nodes: BTreeSet<Certname>,
        pin: bool,
    },
    /// Takes the nodes off every group that pins them, in one commit.
    UnpinFromAll(BTreeSet<Certname>),
    /// Writes the content of `version` again as the group's next version.
    RestoreGroup {
        name: GroupName,
        version: u64,
        expected: Option<u64>,
    },
    CreateNode(Node),
    ReplaceNode {
        node: Node,
        expected: Option<u64>,
    },
    /// Deletes the node and takes it off every group that pins it, in one commit.
    DeleteNode {
        name: Certname,
        expected: Option<u64>,
    },
    RestoreNode {
        name: Certname,
        version: u64,
        expected: Option<u64>,
    },
}

/// What a write did; with `dry_run`, what it would do.
#[derive(Debug)]
pub enum Outcome {
    Group(Stored<NodeGroup>),
    Node(Stored<Node>),
    Deleted,
    /// The groups the nodes were taken off.
    Unpinned(Vec<GroupName>),
    Preview(Preview),
}

/// A write as judged: what it does to nodes, and what its commit holds to.
struct Judged<'a> {
    write: Write<'a>,
    preview: Option<Preview>,
    /// The conflicts a forced write creates, for its revision.
    conflicts: Option<Value>,
    /// What the commit holds to (none: it creates no conflict, e.g. a deletion).
    snapshot: Option<Snapshot>,
}

impl Judged<'_> {
    fn by(&self) -> Edit<'_> {
        Edit {
            dry_run: self.write.dry_run,
            force: self.write.force,
            conflicts: self.conflicts.as_ref(),
            judged: self.snapshot.filter(|_| !self.write.dry_run),
            request_id: self.write.request_id,
            ..Edit::by(self.write.actor)
        }
    }

    /// The commit's outcome: `None` if the groups or nodes moved (judge again); with
    /// `dry_run`, the preview of the object as the commit would have stored it.
    fn outcome(self, done: Result<Outcome, StoreError>) -> Result<Option<Outcome>, AppError> {
        let outcome = match done {
            Err(StoreError::TreeMoved) => return Ok(None),
            done => done?,
        };
        let Some(mut preview) = self.preview.filter(|_| self.write.dry_run) else {
            return Ok(Some(outcome));
        };
        preview.object = match &outcome {
            Outcome::Group(group) => Some(impact::shown(group)?),
            Outcome::Node(node) => Some(impact::shown(node)?),
            _ => None,
        };
        Ok(Some(Outcome::Preview(preview)))
    }
}

impl<'a> Classifier<'a> {
    pub fn new(
        store: &'a Store,
        learns: bool,
        fleet_work: &'a Semaphore,
        keeper: &'a Arc<Keeper>,
    ) -> Self {
        Self {
            store,
            learns,
            fleet_work,
            keeper,
        }
    }

    /// Whole facts one request may read where views do not serve the rules it judges.
    fn budget(&self) -> usize {
        self.keeper.inline
    }

    /// After a write that may have changed the paths rules read: views are taken again,
    /// within the request for a small fleet, else in the background. The write stands
    /// either way; a failure here is left to the background task.
    pub async fn follow_rules(&self) {
        if let Err(e) = self.keeper.follow().await {
            let error = crate::error::cause_chain(&e);
            tracing::warn!(error = %error, "taking rule views after a group write failed");
            self.keeper.wake();
        }
    }

    /// A place for fleet-wide work, held until dropped; 503 (with `Retry-After`) if all are
    /// taken, at once rather than queued: each holds pages of facts in memory.
    pub fn fleet_work(&self) -> Result<SemaphorePermit<'a>, AppError> {
        self.fleet_work.try_acquire().map_err(|_| {
            AppError::Overloaded(
                "enc is doing as much fleet-wide work (judgements, previews, lookups, plans) \
                 as it takes at once (ENC_MAX_FLEET_WORK)"
                    .into(),
            )
        })
    }

    /// Judges `change` and commits it on the snapshot it was judged on, again while the
    /// groups or nodes move under it; 409 if it would give nodes conflicting values they
    /// did not have (unless `force`), 503 if they kept moving.
    pub async fn write(self, change: &Change, write: Write<'_>) -> Result<Outcome, AppError> {
        // A group write is judged on every node below the group.
        // Rules may read other paths after it: views follow.
        let rules = matches!(
            change,
            Change::CreateGroup(_)
                | Change::ReplaceGroup { .. }
                | Change::DeleteGroup { .. }
                | Change::RestoreGroup { .. }
        );
        let _place = match rules || matches!(change, Change::Pins { .. }) {
            true => Some(self.fleet_work()?),
            false => None,
        };
        for tried in 0..JUDGED_TRIES {
            if tried > 0 {
                moved_on(tried).await;
            }
            if let Some(outcome) = self.attempt(change, write).await? {
                if rules && !write.dry_run {
                    self.follow_rules().await;
                }
                return Ok(outcome);
            }
        }
        Err(kept_moving())
    }

    /// Judges `assessment`: refused if it creates conflicts, unless forced or a dry run.
    fn judge<'w>(&self, assessment: Assessment, write: Write<'w>) -> Result<Judged<'w>, AppError> {
        let conflicts = match write.dry_run {
            true => None,
            false => impact::refuse_conflicts(&assessment, write.force)?,
        };
        Ok(Judged {
            write,
            conflicts,
            snapshot: Some(assessment.snapshot),
            preview: Some(assessment.preview),
        })
    }

    /// Nothing to judge: the store refuses the write, or it creates no conflict.
    fn unjudged<'w>(&self, write: Write<'w>, preview: Option<Preview>) -> Judged<'w> {
        Judged {
            write,
            preview,
            conflicts: None,
            snapshot: None,
        }
    }

    async fn attempt(
        &self,
        change: &Change,
        write: Write<'_>,
    ) -> Result<Option<Outcome>, AppError> {
        let store = self.store;
        match change {
            Change::CreateGroup(group) => {
                let assessed =
                    impact::of_group(store, &group.name, Some(group.clone()), self.budget())
                        .await?;
                // After the snapshot: a node deleted since moves it.
                self.no_revived_pins(&assessed, group, write).await?;
                let judged = self.judge(assessed, write)?;
                let done = store.create_node_group(group.clone(), judged.by()).await;
                judged.outcome(done.map(Outcome::Group))
            }
            Change::ReplaceGroup {
                group,
                keep_pins,
                expected,
            } => {
                let (mut group, mut at) = (group.clone(), *expected);
                let current = store.get_node_group(&group.name).await?;
                if *keep_pins {
                    // Judged with the pins it has; a pin change since moves the tree, so
                    // the write is judged again with the new ones.
                    group.pinned = current.item.pinned.clone();
                    at = at.or(Some(current.meta.version));
                    group = within_size(group)?;
                }
                let read_at = *keep_pins && expected.is_none();
                self.replace_group(group, at, read_at, write).await
            }
            Change::DeleteGroup { name, expected } => {
                let judged = self.judge(
                    impact::of_group(store, name, None, self.budget()).await?,
                    write,
                )?;
                let done = store.delete_node_group(name, *expected, judged.by()).await;
                judged.outcome(done.map(|()| Outcome::Deleted))
            }
            Change::Pins { group, nodes, pin } => {
                let current = store.get_node_group(group).await?;
                let mut group = current.item.clone();
                match pin {
                    true => group.pinned.extend(nodes.iter().cloned()),
                    false => group.pinned.retain(|n| !nodes.contains(n)),
                }
                if group.pinned.len() > MAX_PINS {
                    return Err(AppError::invalid(
                        "nodes",
                        format!("a group pins at most {MAX_PINS} nodes"),
                    ));
                }
                let group = within_size(group)?;
                let at = Some(current.meta.version);
                self.replace_group(group, at, true, write).await
            }
            Change::UnpinFromAll(nodes) => {
                let (tree, snapshot) = store.snapshot().await?;
                let assessed = impact::of_unpinning(store, (&tree, snapshot), nodes).await?;
                let judged = self.judge(assessed, write)?;
                let groups = match store.unpin_from_all(&tree, nodes, judged.by()).await {
                    Ok(Some(groups)) => groups,
                    Ok(None) | Err(StoreError::TreeMoved) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                judged.outcome(Ok(Outcome::Unpinned(groups)))
            }
            Change::RestoreGroup {
                name,
                version,
                expected,
            } => {
                let after: Option<NodeGroup> =
                    restored(store, &NODE_GROUP, name.as_str(), *version).await?;
                let judged = match after {
                    Some(group) => {
                        let assessed =
                            impact::of_group(store, name, Some(group.clone()), self.budget())
                                .await?;
                        self.no_revived_pins(&assessed, &group, write).await?;
                        self.judge(assessed, write)?
                    }
                    None => self.unjudged(write, None),
                };
                let done = store
                    .restore_node_group(name, *version, *expected, judged.by())
                    .await;
                judged.outcome(done.map(Outcome::Group))
            }
            Change::CreateNode(node) => {
                let judged = self.judge(impact::of_node(store, None, Some(node)).await?, write)?;
                let done = store.create_node(node.clone(), judged.by()).await;
                judged.outcome(done.map(Outcome::Node))
            }
            Change::ReplaceNode { node, expected } => {
                // Judged against the node as read, and committed only over that version.
                let current = store.get_node(&node.unique_name).await?;
                let at = expected.or(Some(current.meta.version));
                let assessed = impact::of_node(store, Some(&current.item), Some(node)).await?;
                let judged = self.judge(assessed, write)?;
                let done = store.replace_node(node.clone(), at, judged.by()).await;
                if expected.is_none() && matches!(done, Err(StoreError::VersionMismatch { .. })) {
                    return Ok(None);
                }
                judged.outcome(done.map(Outcome::Node))
            }
            Change::DeleteNode { name, expected } => {
                // A node deleted gets no conflict: judged only for its preview.
                let preview = match write.dry_run {
                    true => Some(self.deletion(name).await?),
                    false => None,
                };
                let judged = self.unjudged(write, preview);
                let done = store.delete_node(name, *expected, judged.by()).await;
                judged.outcome(done.map(|()| Outcome::Deleted))
            }
            Change::RestoreNode {
                name,
                version,
                expected,
            } => {
                let after: Option<Node> = restored(store, &NODE, name.as_str(), *version).await?;
                // Judged against the node as read, and committed only over that version.
                let before = match store.get_node(name).await {
                    Ok(current) => Some(current),
                    Err(StoreError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
                let at = expected.or(before.as_ref().map(|b| b.meta.version));
                let judged = match &after {
                    Some(node) => {
                        let before = before.as_ref().map(|b| &b.item);
                        let assessed = impact::of_node(store, before, Some(node)).await?;
                        self.judge(assessed, write)?
                    }
                    None => self.unjudged(write, None),
                };
                let done = store.restore_node(name, *version, at, judged.by()).await;
                if expected.is_none() && matches!(done, Err(StoreError::VersionMismatch { .. })) {
                    return Ok(None);
                }
                judged.outcome(done.map(Outcome::Node))
            }
        }
    }

    /// Refuses (409) a group write that pins nodes which were deleted, unless forced: a pin
    /// dies with its node, and bringing one back (a restore of an older version, an old
    /// tree applied, or a pin sent again) would take a rebuilt host of that certname in.
    async fn no_revived_pins(
        &self,
        assessed: &Assessment,
        after: &NodeGroup,
        write: Write<'_>,
    ) -> Result<(), AppError> {
        // Added to the group as it was in the snapshot the commit holds to.
        let before = assessed.group_before.as_ref();
        let added: BTreeSet<Certname> = after
            .pinned
            .iter()
            .filter(|n| before.is_none_or(|b| !b.pinned.contains(*n)))
            .cloned()
            .collect();
        if write.force || added.is_empty() {
            return Ok(());
        }
        refuse_revived(&self.store.deleted_nodes(&added).await?)
    }

    /// Replaces a group with `group` at version `at`; `None` (judge again) if the groups
    /// moved, or if `at` was read here (`read_at`) and the group changed since.
    async fn replace_group(
        &self,
        group: NodeGroup,
        at: Option<u64>,
        read_at: bool,
        write: Write<'_>,
    ) -> Result<Option<Outcome>, AppError> {
        let assessed =
            impact::of_group(self.store, &group.name, Some(group.clone()), self.budget()).await?;
        self.no_revived_pins(&assessed, &group, write).await?;
        let judged = self.judge(assessed, write)?;
        let done = self.store.replace_node_group(group, at, judged.by()).await;
        if read_at && matches!(done, Err(StoreError::VersionMismatch { .. })) {
            return Ok(None);
        }
        judged.outcome(done.map(Outcome::Group))
    }

    /// The preview of a node's deletion: what its classification was, and the groups that
    /// would stop pinning it.
    async fn deletion(&self, name: &Certname) -> Result<Preview, AppError> {
        let current = self.store.get_node(name).await?;
        let (tree, _) = self.store.snapshot().await?;
        let mut preview = impact::of_node(self.store, Some(&current.item), None)
            .await?
            .preview;
        preview.unpinned_from = tree.pinning(name).to_vec();
        Ok(preview)
    }
}

/// What restoring `version` of the object under `key` would write (`None`: that version is
/// its deletion), to judge the restore before it is made.
async fn restored<T: DeserializeOwned>(
    store: &Store,
    kind: &'static RecordKind,
    key: &str,
    version: u64,
) -> Result<Option<T>, AppError> {
    let revision = store.revision(kind, &Key::one(key), version).await?;
    let object = revision
        .object
        .map(serde_json::from_value::<Stored<T>>)
        .transpose()
        .map_err(|e| AppError::Internal(Box::new(e)))?;
    Ok(object.map(|o| o.item))
}

/// The 409 for pins of deleted nodes, if there are any.
pub(crate) fn refuse_revived(deleted: &[Certname]) -> Result<(), AppError> {
    if deleted.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = deleted.iter().take(10).map(Certname::as_str).collect();
    Err(AppError::Conflict(format!(
        "the write would pin {} node(s) that were deleted ({}): a pin dies with its node; \
         send force=true to pin them anyway",
        deleted.len(),
        names.join(", ")
    )))
}

/// Waits a little longer each time a write is judged again (2, 4, 8, ... ms, with jitter),
/// so writes that keep moving the groups or nodes under it let it through.
async fn moved_on(tried: usize) {
    let base = 1u64 << tried.min(8);
    let jitter = u64::from(rand::random::<u8>()) % base.max(1);
    tokio::time::sleep(std::time::Duration::from_millis(base + jitter)).await;
}

/// The answer when the groups or nodes kept changing while a write was judged.
pub fn kept_moving() -> AppError {
    AppError::Overloaded("the node groups or nodes kept changing while the write was judged".into())
}

/// The answer for a node enc does not have.
pub fn absent(name: &Certname) -> AppError {
    StoreError::NotFound {
        kind: Kind::Node,
        key: name.to_string(),
    }
    .into()
}

/// The 409 a conflict answers: every key the node's leaf groups disagree on.
pub fn conflicted(name: &Certname, conflicts: Vec<Conflict>) -> AppError {
    let keys: Vec<&str> = conflicts.iter().map(|c| c.key.as_str()).collect();
    let detail = format!(
        "node {name}'s groups give different values for {}",
        keys.join(", ")
    );
    AppError::NodeConflicts(detail, serde_json::to_value(conflicts).unwrap_or_default())
}
