//! Each node's last facts, as Puppet sent them with a classification request, and its rule
//! view (the facts rules read, `domain::RuleView`): membership is judged on views, which are
//! small; the whole facts are kept for `GET /nodes/{n}/facts` and to take views again when
//! rules come to read other paths. Neither has versions or history, and neither is listed by
//! an index: they are written on agent runs, and every such write lands on its own key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::super::change::{OnFail, Step, decode};
use super::super::engine::{Expect, Key, Op, Position, Write};
use super::super::record::{RecordKind, to_body};
use super::super::{Kind, Result, Store};
use crate::domain::{Certname, NodeFacts, RuleView};

/// The largest facts enc keeps for a node, as JSON (within a DynamoDB item).
pub const MAX_FACTS_BYTES: usize = 256 * 1024;

pub static FACTS: RecordKind = RecordKind {
    json: &["facts", "trusted"],
    ..RecordKind::new(Kind::Facts, "facts", "facts", &["unique_name"])
};

pub static VIEW: RecordKind = RecordKind {
    json: &["facts", "trusted"],
    ..RecordKind::new(Kind::Facts, "view", "views", &["unique_name"])
};

/// Each version of a node's view, from when it was written (for `?at=`): in the history
/// table, keyed by the node and the view's version, and without the attribute (`order`)
/// that the history's indexes sort on, so in none of them. Expires with the history's
/// retention (DynamoDB's TTL on `expires_at`, and `Store::prune_history`).
pub static VIEW_PAST: RecordKind = RecordKind {
    json: &["view"],
    ..RecordKind::new(
        Kind::Revision,
        "view_version",
        "history",
        &["subject", "seq"],
    )
};

/// A version of a node's view and when it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PastView {
    subject: String,
    seq: String,
    /// When the view was written: it was the node's from then until the next version.
    from: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    view: RuleView,
}

fn past_key(name: &str, version: u64) -> Key {
    Key::two(format!("view/{name}"), format!("{version:020}"))
}

/// How far views are taken through the tree's lens: one record beside the groups.
pub static VIEWS_TAKEN: RecordKind = RecordKind {
    json: &["paths", "cursor"],
    ..RecordKind::new(Kind::Facts, "views_taken", "node_groups", &["name"])
};

fn views_taken_key() -> Key {
    Key::one("/views")
}

/// The taking of every node's view through one lens, as far as it went: resumable from
/// `cursor` (a position in the scan of the facts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewsTaken {
    pub name: String,
    #[serde(default)]
    pub version: u64,
    /// The lens views are being (or were) taken through.
    pub lens: String,
    pub paths: Vec<String>,
    pub started_at: DateTime<Utc>,
    /// When every node's view was taken through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the scan of the facts goes on (`None`: at the start, or done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Position>,
    /// Nodes' facts scanned, and views written because they had changed.
    #[serde(default)]
    pub scanned: u64,
    #[serde(default)]
    pub rewritten: u64,
    /// Whether views were once taken for every node (through any lens): from then on, a
    /// node without a view has no facts.
    #[serde(default)]
    pub every_node_viewed: bool,
}

impl ViewsTaken {
    /// A taking through `lens`, after `before` (if views were ever taken).
    pub fn start(lens: &crate::domain::Lens, before: Option<&ViewsTaken>) -> Self {
        Self {
            name: "/views".into(),
            version: 0,
            lens: lens.id().to_owned(),
            paths: lens.paths().to_vec(),
            started_at: crate::domain::now(),
            finished_at: None,
            cursor: None,
            scanned: 0,
            rewritten: 0,
            every_node_viewed: before
                .is_some_and(|b| b.every_node_viewed || b.finished_at.is_some()),
        }
    }
}

/// A write of a record with versions over the one read (`before`; `None`: there was none).
fn put_over<T: Serialize>(
    kind: &'static RecordKind,
    key: Key,
    object: &T,
    before: Option<u64>,
) -> Result<Write> {
    let body = to_body(object)?;
    let expect = match before {
        Some(version) => Expect::At { version, refs: 0 },
        None => Expect::Absent,
    };
    Ok(Write::new(kind, key, Op::Put { body, refs: 0 }, expect))
}

impl Store {
    /// The writes of a view over the one read (`before`; `None`: there was none): the view,
    /// and, when what it says to rules changed, that version kept for `?at=`.
    fn view_writes(&self, view: &RuleView, before: Option<&RuleView>) -> Result<Vec<Step>> {
        let name = view.unique_name.as_str();
        let now = crate::domain::now();
        let changed = before.is_none_or(|b| !b.same_as(view));
        let view = RuleView {
            version: before.map_or(0, |b| b.version) + 1,
            seq: before.map_or(0, |b| b.seq) + u64::from(changed),
            changed_at: match (changed, before) {
                (false, Some(b)) => b.changed_at,
                _ => Some(now),
            },
            ..view.clone()
        };
        let expect = match before {
            Some(b) => Expect::At {
                version: b.version,
                refs: 0,
            },
            None => Expect::Absent,
        };
        let body = to_body(&view)?;
        let put = Write::new(&VIEW, Key::one(name), Op::Put { body, refs: 0 }, expect);
        let mut steps = vec![(put, OnFail::Changed)];
        if changed {
            let past = PastView {
                subject: format!("view/{name}"),
                seq: format!("{:020}", view.seq),
                from: now,
                expires_at: self.db.retention.map(|r| (now + r).timestamp()),
                view: view.clone(),
            };
            let body = to_body(&past)?;
            let key = past_key(name, view.seq);
            let kept = Write::new(&VIEW_PAST, key, Op::Put { body, refs: 0 }, Expect::Anything);
            steps.push((kept, OnFail::Changed));
        }
        Ok(steps)
    }

    /// A kept version of a node's view, if it was not pruned.
    async fn past_view(&self, name: &Certname, seq: u64) -> Result<Option<PastView>> {
        self.read_one(&VIEW_PAST, past_key(name.as_str(), seq))
            .await
    }

    /// The node's view as it was at `at`: `Some(None)` if it had none then, `None` if the
    /// history does not reach back so far (or has a gap just there).
    pub async fn view_at(
        &self,
        name: &Certname,
        at: &DateTime<Utc>,
    ) -> Result<Option<Option<RuleView>>> {
        let Some(current) = self
            .read_one::<RuleView>(&VIEW, Key::one(name.as_str()))
            .await?
        else {
            return Ok(Some(None));
        };
        let Some(changed_at) = current.changed_at else {
            return Ok(None);
        };
        if changed_at <= *at {
            return Ok(Some(Some(current)));
        }
        // The last version written at `at` or before, among the kept ones (each written after
        // the one before it); then checked against the one after it, since versions may have
        // gone in any order.
        let (mut low, mut high, mut found) = (1, current.seq.saturating_sub(1), None);
        while low <= high {
            // The kept version at the middle, or the nearest kept one below it.
            let middle = low + (high - low) / 2;
            let mut probe = middle;
            let kept = loop {
                match self.past_view(name, probe).await? {
                    Some(past) => break Some(past),
                    None if probe > low => probe -= 1,
                    None => break None,
                }
            };
            match kept {
                Some(past) if past.from <= *at => {
                    found = Some(probe);
                    low = middle + 1;
                }
                Some(_) => high = probe - 1,
                // None kept from `low` to the middle: the answer is above, or in the gap.
                None => low = middle + 1,
            }
        }
        let Some(seq) = found else {
            // Had none then, if the first version is kept and came after `at`.
            return Ok(match self.past_view(name, 1).await? {
                Some(first) if first.from > *at => Some(None),
                _ => None,
            });
        };
        let next_after = match seq + 1 == current.seq {
            true => true,
            false => self
                .past_view(name, seq + 1)
                .await?
                .is_some_and(|next| next.from > *at),
        };
        match (next_after, self.past_view(name, seq).await?) {
            (true, Some(past)) => Ok(Some(Some(past.view))),
            _ => Ok(None),
        }
    }

    /// Keeps a node's view over the one read (`before`), and its whole facts with it if
    /// `whole`. `false`: another write of the view came first; read again.
    pub async fn keep_view(
        &self,
        view: &RuleView,
        before: Option<&RuleView>,
        whole: Option<&NodeFacts>,
    ) -> Result<bool> {
        let key = Key::one(view.unique_name.as_str());
        let mut steps = self.view_writes(view, before)?;
        if let Some(facts) = whole {
            let body = to_body(facts)?;
            let write = Write::new(&FACTS, key, Op::Put { body, refs: 0 }, Expect::Anything);
            steps.push((write, OnFail::Changed));
        }
        self.db.commit(steps).await
    }

    /// Writes a view taken again over the one read (`before`); `false` if it changed
    /// meanwhile (an agent run wrote a newer one).
    pub async fn rewrite_view(&self, view: &RuleView, before: Option<&RuleView>) -> Result<bool> {
        let steps = self.view_writes(view, before)?;
        self.db.commit(steps).await
    }

    /// A node's last facts, if it sent any.
    pub async fn facts(&self, name: &Certname) -> Result<Option<NodeFacts>> {
        self.read_one(&FACTS, Key::one(name.as_str())).await
    }

    /// The last facts of each of `names`, in order, each as it is now.
    pub async fn facts_of(&self, names: &[&Certname]) -> Result<Vec<Option<NodeFacts>>> {
        self.read_many(&FACTS, names).await
    }

    /// The rule view of each of `names`, in order, each as it is now.
    pub async fn views_of(&self, names: &[&Certname]) -> Result<Vec<Option<RuleView>>> {
        self.read_many(&VIEW, names).await
    }

    async fn read_many<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static RecordKind,
        names: &[&Certname],
    ) -> Result<Vec<Option<T>>> {
        let keys: Vec<Key> = names.iter().map(|n| Key::one(n.as_str())).collect();
        let found = self.db.engine().get_many(kind, &keys).await?;
        found
            .iter()
            .map(|r| r.as_ref().map(decode).transpose())
            .collect()
    }

    /// One batch of every node's facts, in no order, and where the scan goes on.
    pub async fn scan_facts(
        &self,
        after: Option<Position>,
    ) -> Result<(Vec<NodeFacts>, Option<Position>)> {
        let batch = self.db.engine().scan(&FACTS, after).await?;
        // One record that does not read must not stop every view being taken: said, passed.
        let facts = batch
            .records
            .iter()
            .filter_map(|r| match decode::<NodeFacts>(r) {
                Ok(facts) => Some(facts),
                Err(e) => {
                    tracing::warn!(error = %e, "a node's stored facts do not read; passed by");
                    None
                }
            })
            .collect();
        Ok((facts, batch.more))
    }

    /// Removes versions of views that expired before `before`, where the engine has no TTL
    /// of its own (DynamoDB's removes them within days; listing them there would scan the
    /// whole history table).
    pub async fn prune_view_versions(&self, before: &DateTime<Utc>) -> Result<usize> {
        if self.db.backend() != "embedded" {
            return Ok(0);
        }
        let (mut after, mut removed) = (None, 0);
        loop {
            let batch = self.db.engine().scan(&VIEW_PAST, after).await?;
            let mut steps = Vec::new();
            for record in &batch.records {
                let past: PastView = decode(record)?;
                if past.expires_at.is_some_and(|e| e < before.timestamp()) {
                    let key = Key::two(past.subject, past.seq);
                    let write = Write::new(&VIEW_PAST, key, Op::Delete, Expect::Anything);
                    steps.push((write, OnFail::Changed));
                }
            }
            removed += steps.len();
            if !steps.is_empty() {
                self.db.commit(steps).await?;
            }
            match batch.more {
                Some(more) => after = Some(more),
                None => return Ok(removed),
            }
        }
    }

    /// How far views are taken through the tree's lens, if they ever were.
    pub async fn views_taken(&self) -> Result<Option<ViewsTaken>> {
        self.read_one(&VIEWS_TAKEN, views_taken_key()).await
    }

    /// The record of `kind` under `key`, decoded, if there is one.
    async fn read_one<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static RecordKind,
        key: Key,
    ) -> Result<Option<T>> {
        let found = self.db.engine().get(&[(kind, key)]).await?;
        found
            .into_iter()
            .flatten()
            .next()
            .map(|r| decode(&r))
            .transpose()
    }

    /// Records how far views are taken, over the record read (version `before`); `false` if
    /// another writer moved it meanwhile.
    pub async fn record_views_taken(
        &self,
        taken: &ViewsTaken,
        before: Option<u64>,
    ) -> Result<bool> {
        let taken = ViewsTaken {
            version: before.unwrap_or(0) + 1,
            ..taken.clone()
        };
        let write = put_over(&VIEWS_TAKEN, views_taken_key(), &taken, before)?;
        self.db.commit(vec![(write, OnFail::Changed)]).await
    }
}
