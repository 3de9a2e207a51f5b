//! Reading by the storage rules: a record by its key, who refers to a record, and listings
//! cut into pages whose cursors continue only the listing they came from.

use serde::de::DeserializeOwned;

use super::Db;
use crate::store::change::decode;
use crate::store::engine::{Key, Position, Query, Record};
use crate::store::record::RecordKind;
use crate::store::{Cursor, Page, PageRequest, Result, StoreError};

/// How many referrers of each kind a refused delete names.
pub const MAX_REFERRERS: usize = 10;

impl Page<Record> {
    /// The page with each record decoded.
    pub fn decode<T: DeserializeOwned>(self) -> Result<Page<T>> {
        let items = self.items.iter().map(decode).collect::<Result<_>>()?;
        Ok(Page {
            items,
            next_cursor: self.next_cursor,
        })
    }
}

impl Db {
    /// The record holding an object, or `NotFound`.
    pub(in crate::store) async fn record(
        &self,
        kind: &'static RecordKind,
        key: &Key,
    ) -> Result<Record> {
        match self
            .engine
            .get(&[(kind, key.clone())])
            .await?
            .pop()
            .flatten()
        {
            Some(record) => Ok(record),
            None => Err(StoreError::NotFound {
                kind: kind.kind,
                key: key.to_string(),
            }),
        }
    }

    /// The count a counter record keeps (its reference count); 0 while it is absent.
    pub(in crate::store) async fn count(&self, kind: &'static RecordKind, key: Key) -> Result<i64> {
        let found = self.engine.get(&[(kind, key)]).await?;
        Ok(found.first().and_then(Option::as_ref).map_or(0, |r| r.refs))
    }

    /// The object and the record holding it, or `NotFound`.
    pub(super) async fn require<T: DeserializeOwned>(
        &self,
        kind: &'static RecordKind,
        key: &Key,
    ) -> Result<(T, Record), StoreError> {
        let record = self.record(kind, key).await?;
        Ok((decode(&record)?, record))
    }

    pub(in crate::store) async fn get<T: DeserializeOwned>(
        &self,
        kind: &'static RecordKind,
        key: &Key,
    ) -> Result<T> {
        Ok(self.require(kind, key).await?.0)
    }

    /// Who refers to the record: up to `MAX_REFERRERS` of each kind that can, e.g.
    /// `node web01`, then `more` if there are more.
    pub(in crate::store) async fn referrers(
        &self,
        target: &RecordKind,
        key: &Key,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for kind in self.kinds {
            for reference in kind.references.iter().filter(|r| r.target == target) {
                let fields = reference.fields.iter().copied();
                let filters: Vec<_> = fields.zip(key.0.iter().cloned()).collect();
                let found = self.find(kind, &filters, (None, None), None, MAX_REFERRERS + 1);
                for (i, record) in found.await?.iter().enumerate() {
                    if i == MAX_REFERRERS {
                        out.push("more".to_owned());
                        break;
                    }
                    let name = kind.key_of(&decode(record)?).unwrap_or_default();
                    out.push(format!("{} {name}", kind.kind));
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` records matching the filters and sort range, after `after`.
    async fn find(
        &self,
        kind: &'static RecordKind,
        filters: &[(&'static str, String)],
        (from, to): (Option<&str>, Option<&str>),
        mut after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let (index, partition, filters) = kind.choose_index(filters);
        let partition = &partition;
        let mut found = Vec::new();
        loop {
            let (filters, limit) = (&filters[..], limit - found.len());
            let query = Query {
                kind,
                index,
                partition,
                from,
                to,
                filters,
                after,
                limit,
            };
            let batch = self.engine.query(&query).await?;
            found.extend(batch.records);
            match batch.more {
                Some(position) if found.len() < limit => after = Some(position),
                _ => return Ok(found),
            }
        }
    }

    /// One page of a listing. The cursor names the listing (kind, filters and range), so a
    /// cursor only continues the listing it came from.
    pub(in crate::store) async fn list<T: DeserializeOwned>(
        &self,
        kind: &'static RecordKind,
        filters: &[(&'static str, String)],
        range: (Option<&str>, Option<&str>),
        page: &PageRequest,
    ) -> Result<Page<T>> {
        self.list_records(kind, filters, range, page)
            .await?
            .decode()
    }

    /// [`Db::list`], the records as stored.
    pub(in crate::store) async fn list_records(
        &self,
        kind: &'static RecordKind,
        filters: &[(&'static str, String)],
        range: (Option<&str>, Option<&str>),
        page: &PageRequest,
    ) -> Result<Page<Record>> {
        let listing = format!("{}?{filters:?}&{range:?}", kind.name);
        let backend = self.backend();
        let after = match &page.cursor {
            None => None,
            Some(text) => {
                let position: Position = Cursor::decode(backend, &listing, text)?;
                let parts = &position.key.0;
                let whole = parts.len() == kind.key.len() && parts.iter().all(|p| !p.is_empty());
                if !whole || position.sort.is_empty() {
                    return Err(StoreError::InvalidCursor);
                }
                Some(position)
            }
        };
        let mut records = self
            .find(kind, filters, range, after, page.limit + 1)
            .await?;
        let mut next_cursor = None;
        if records.len() > page.limit {
            records.truncate(page.limit);
            if let Some(last) = records.last() {
                let body = decode(last)?;
                let index = kind.choose_index(filters).0;
                let sort = kind.attribute(&body, index.sort).unwrap_or_default();
                let key = kind.key_of(&body).unwrap_or_default();
                next_cursor = Some(Cursor::encode(backend, &listing, Position { sort, key }));
            }
        }
        Ok(Page {
            items: records,
            next_cursor,
        })
    }
}
