//! Each node's last facts, as Puppet sent them with a classification request: what rules are
//! judged on. Kept as they come (no versions, no history): every agent run sends new ones.

use super::super::engine::{Expect, Key, Op, Write};
use super::super::record::{ITEM_TYPE, Index, RecordKind, to_body};
use super::super::rules::{OnFail, decode};
use super::super::{Kind, Page, PageRequest, Result, Store};
use crate::domain::{Certname, NodeFacts};

/// The largest facts enc keeps for a node, as JSON (within a DynamoDB item).
pub const MAX_FACTS_BYTES: usize = 256 * 1024;

pub static FACTS: RecordKind = RecordKind {
    indexes: &[Index::new("ordered", ITEM_TYPE, "unique_name")],
    json: &["facts", "trusted"],
    ..RecordKind::new(Kind::Facts, "facts", "facts", &["unique_name"])
};

impl Store {
    /// Keeps a node's facts in place of the ones before.
    pub async fn put_facts(&self, facts: &NodeFacts) -> Result<()> {
        let body = to_body(facts)?;
        let key = Key::one(facts.unique_name.as_str());
        let write = Write::new(&FACTS, key, Op::Put { body, refs: 0 }, Expect::Anything);
        self.db.commit(vec![(write, OnFail::Changed)]).await?;
        Ok(())
    }

    /// A node's last facts, if it sent any.
    pub async fn facts(&self, name: &Certname) -> Result<Option<NodeFacts>> {
        let found = self
            .db
            .engine()
            .get(&[(&FACTS, Key::one(name.as_str()))])
            .await?;
        found
            .into_iter()
            .flatten()
            .next()
            .map(|r| decode(&r))
            .transpose()
    }

    /// The last facts of each of `names`, in order, each as it is now.
    pub async fn facts_of(&self, names: &[&Certname]) -> Result<Vec<Option<NodeFacts>>> {
        let keys: Vec<Key> = names.iter().map(|n| Key::one(n.as_str())).collect();
        let found = self.db.engine().get_many(&FACTS, &keys).await?;
        found
            .iter()
            .map(|r| r.as_ref().map(decode).transpose())
            .collect()
    }

    /// One page of every node's facts, by certname.
    pub async fn list_facts(&self, page: &PageRequest) -> Result<Page<NodeFacts>> {
        self.list_facts_from(None, page).await
    }

    /// One page of every node's facts by certname, from `from` on (inclusive).
    pub async fn list_facts_from(
        &self,
        from: Option<&Certname>,
        page: &PageRequest,
    ) -> Result<Page<NodeFacts>> {
        let range = (from.map(Certname::as_str), None);
        self.db.list(&FACTS, &[], range, page).await
    }
}
