//! Storage: the records enc keeps, the rules they follow (written once, in `db/`), and two
//! small engines that hold them: an embedded redb file and DynamoDB.

pub mod activities;
mod apply;
mod change;
mod cursor;
mod db;
pub mod dynamodb;
pub mod embedded;
pub mod enc;
pub mod engine;
pub mod history;
pub mod instrumented;
pub mod record;
pub mod sessions;
pub mod tokens;

pub use apply::Planned;
pub use change::Snapshot;
pub use change::{Apply, Edit, TREE_OWNER, decode};
pub use cursor::Cursor;
pub use db::MAX_REFERRERS;
pub use engine::{Key, Position, Record};
pub use history::ChangeFilter;
pub use record::RecordKind;

use std::sync::Arc;

use chrono::NaiveDate;

use self::engine::Engine;
use crate::domain::{ClusterName, EnvironmentName, GroupName, Label};

/// Every record kind, both products', in the order of their DynamoDB tables.
pub static KINDS: [&RecordKind; 15] = [
    &enc::ENVIRONMENT,
    &enc::NODE_GROUP,
    &enc::GENERATION,
    &enc::NODE,
    &enc::FACTS,
    &enc::VIEW,
    &enc::VIEWS_TAKEN,
    &activities::ACTIVITY,
    &activities::SUBMISSION,
    &tokens::TOKEN,
    &sessions::SESSION,
    &history::REVISION,
    &history::HEAD,
    &history::PLAN,
    &enc::VIEW_PAST,
];

/// How often `/readyz` probes the store at most: the route is open and outside the concurrency
/// limit, so however often it is asked (load balancer, orchestrator, anyone), the store is
/// asked at most once a second per task; the answers in between are the last probe's.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `/readyz`'s last probe of the store, and the one probe under way.
#[derive(Default)]
pub struct Readiness {
    last: std::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
    probing: tokio::sync::Mutex<()>,
}

impl Readiness {
    /// The store's readiness: the last probe's if it is under a second old; otherwise one
    /// probe (`ping`), which concurrent askers wait for rather than repeat.
    pub async fn probe<F, Fut>(&self, ping: F) -> Result<(), String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let fresh = || {
            self.last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .filter(|(at, _)| at.elapsed() < PROBE_EVERY)
                .map(|(_, ready)| ready.clone())
        };
        if let Some(ready) = fresh() {
            return ready;
        }
        let _probing = self.probing.lock().await;
        if let Some(ready) = fresh() {
            return ready;
        }
        let ready = ping().await.map_err(|e| e.to_string());
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), ready.clone()));
        ready
    }
}

/// Results of the store: its errors unless said otherwise.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Boxed error source kept for logs; never shown to clients.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The kinds of object the store keeps, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Node,
    NodeGroup,
    Environment,
    Activity,
    Token,
    Revision,
    Facts,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Node => "node",
            Kind::NodeGroup => "node group",
            Kind::Environment => "environment",
            Kind::Activity => "activity",
            Kind::Token => "token",
            Kind::Revision => "revision",
            Kind::Facts => "facts",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {key} does not exist")]
    NotFound { kind: Kind, key: String },
    #[error("{kind} {key} already exists")]
    AlreadyExists { kind: Kind, key: String },
    #[error("{kind} {key} is at version {actual}, not {expected}")]
    VersionMismatch {
        kind: Kind,
        key: String,
        expected: u64,
        actual: u64,
    },
    /// A field names an object that does not exist.
    #[error("{field}: {kind} {key} does not exist")]
    MissingReference {
        field: &'static str,
        kind: Kind,
        key: String,
    },
    /// The change would make a node group its own ancestor.
    #[error("parent: the chain {} would be a cycle", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    /// The change would make a chain of node groups longer than the limit.
    #[error("parent: the chain would hold {depth} node groups; at most {max} are allowed")]
    TooDeep { depth: usize, max: usize },
    /// The object cannot be deleted while others refer to it.
    #[error("{kind} {key} is still used by {}", referrers.join(", "))]
    StillReferenced {
        kind: Kind,
        key: String,
        referrers: Vec<String>,
    },
    /// A restore of the revision that deleted the object.
    #[error("version {version} of {kind} {key} is its deletion: restore an earlier version")]
    NothingToRestore {
        kind: Kind,
        key: String,
        version: u64,
    },
    /// The object is owned by a classification tree: an API write must be forced.
    #[error("{kind} {key} is managed by {owner}: change it there, or send force=true")]
    Managed {
        kind: Kind,
        key: String,
        owner: String,
    },
    /// An apply found something changed since its plan was made.
    #[error("{kind} {key} changed since the plan was made: plan again")]
    PlanStale { kind: Kind, key: String },
    /// The change needs more writes in one commit than the engine takes.
    #[error(
        "the change needs {writes} writes in one commit and this store takes at most {max}: \
         make it in smaller parts (e.g. unpin the node from some groups first)"
    )]
    TooManyWrites { writes: usize, max: usize },
    /// The node groups changed since the write was judged: judge it again.
    #[error("the node groups changed while the write was judged")]
    TreeMoved,
    #[error("the pagination cursor is not valid for this listing")]
    InvalidCursor,
    /// An idempotency key sent again with something else than it first came with.
    #[error("the idempotency key {key} was used for another entry")]
    KeyReused { key: String },
    #[error("the store is unavailable")]
    Unavailable(#[source] Source),
    #[error("the store failed")]
    Internal(#[source] Source),
}

/// A tree refused as a store write is refused: a parent that is missing is a missing
/// reference; a tree that is not one is the store's fault.
impl From<crate::domain::TreeError> for StoreError {
    fn from(e: crate::domain::TreeError) -> Self {
        use crate::domain::TreeError;
        match e {
            TreeError::Cycle { chain } => StoreError::Cycle { chain },
            TreeError::TooDeep { depth, max } => StoreError::TooDeep { depth, max },
            TreeError::MissingParent(name) => StoreError::MissingReference {
                field: "parent",
                kind: Kind::NodeGroup,
                key: name.to_string(),
            },
            TreeError::Broken(why) => StoreError::Internal(why.into()),
        }
    }
}

/// Which page of a listing to return.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<String>,
}

/// One page of a listing; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EnvironmentFilter {
    pub puppet_cluster_name: Option<ClusterName>,
}

#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub environment_name: Option<EnvironmentName>,
    pub puppet_cluster_name: Option<ClusterName>,
    pub node_group_name: Option<GroupName>,
}

/// Which activities to list: all filters must match; dates are inclusive.
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    pub customer: Option<Label>,
    pub project: Option<Label>,
    pub engineer: Option<Label>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

/// Everything enc keeps, over one engine. Writes are atomic and conditional: `expected` is
/// the version the caller last saw (`If-Match`), and referential checks are in the same commit.
pub struct Store {
    db: db::Db,
    /// The newest node-group tree this process read, for classifications.
    groups: enc::TreeCache,
}

impl Store {
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        Self {
            db: db::Db::new(engine, &KINDS),
            groups: enc::TreeCache::default(),
        }
    }

    /// Keeps revisions for `retention` (default: forever): they carry when they expire.
    pub fn set_retention(&mut self, retention: Option<chrono::Duration>) {
        self.db.retention = retention;
    }

    pub fn retention(&self) -> Option<chrono::Duration> {
        self.db.retention
    }

    /// A short name for logs and metrics, e.g. `embedded`.
    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// Succeeds when the store can serve reads and writes.
    pub async fn ping(&self) -> Result<()> {
        self.db.engine().ping().await
    }
}

/// Every item of a listing, page by page.
pub async fn all<T, F, Fut>(list: F) -> Result<Vec<T>>
where
    F: Fn(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>>>,
{
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(PageRequest {
            limit: 1000,
            cursor,
        })
        .await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(items),
        }
    }
}
