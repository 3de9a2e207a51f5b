//! Work done once per version of what it was made from. Every answer is still made from a
//! fresh store read; what is kept is only what that read's bytes turned into last time (a
//! decoded token, a node's JSON, a classification's YAML), reused while the bytes are the
//! same. So nothing here can be stale: different bytes, or another `stamp` (the group
//! generation), and the value is made again. Bounded in bytes; past the bound, entries go.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

/// Shards, so that the workers rarely wait for one another.
const SHARDS: usize = 16;

pub struct Memo<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
    /// Bytes each shard may hold.
    budget: usize,
}

struct Shard<V> {
    entries: HashMap<Box<str>, Entry<V>>,
    bytes: usize,
}

struct Entry<V> {
    stamp: u64,
    source: Box<[u8]>,
    value: V,
    cost: usize,
}

impl<V: Clone> Memo<V> {
    /// A memo holding about `budget` bytes (sources and values) at most.
    pub fn new(budget: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::new(),
                        bytes: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            budget: budget / SHARDS,
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard<V>> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `make` made last time from exactly these `source` bytes and `stamp` for `key`, or
    /// what it makes now (kept, with `size` its size in bytes).
    pub fn get<E>(
        &self,
        key: &str,
        stamp: u64,
        source: &[u8],
        make: impl FnOnce() -> Result<(V, usize), E>,
    ) -> Result<V, E> {
        if let Some(entry) = self.shard(key).entries.get(key)
            && entry.stamp == stamp
            && *entry.source == *source
        {
            return Ok(entry.value.clone());
        }
        let (value, size) = make()?;
        let cost = key.len() + source.len() + size;
        if cost <= self.budget / 8 {
            let mut shard = self.shard(key);
            if let Some(old) = shard.entries.remove(key) {
                shard.bytes -= old.cost;
            }
            while shard.bytes + cost > self.budget {
                let Some(victim) = shard.entries.keys().next().cloned() else {
                    break;
                };
                let old = shard.entries.remove(&victim).expect("just seen");
                shard.bytes -= old.cost;
            }
            shard.bytes += cost;
            shard.entries.insert(
                key.into(),
                Entry {
                    stamp,
                    source: source.into(),
                    value: value.clone(),
                    cost,
                },
            );
        }
        Ok(value)
    }

    /// The value last made for `key`, whatever it was made from: a guess, for a caller that
    /// has it confirmed or refuted by a fresh read.
    pub fn peek(&self, key: &str) -> Option<V> {
        self.shard(key).entries.get(key).map(|e| e.value.clone())
    }

    /// Bytes held, for tests.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(memo: &Memo<String>, key: &str, stamp: u64, source: &[u8]) -> (String, bool) {
        let mut called = false;
        let value = memo
            .get::<()>(key, stamp, source, || {
                called = true;
                let v = format!("{key}:{stamp}:{}", String::from_utf8_lossy(source));
                let n = v.len();
                Ok((v, n))
            })
            .unwrap();
        (value, called)
    }

    #[test]
    fn the_same_bytes_reuse_what_was_made_and_any_change_makes_it_again() {
        let memo = Memo::new(1 << 20);
        assert_eq!(made(&memo, "a", 1, b"x"), ("a:1:x".into(), true));
        assert_eq!(made(&memo, "a", 1, b"x"), ("a:1:x".into(), false));
        assert_eq!(made(&memo, "a", 1, b"y"), ("a:1:y".into(), true));
        assert_eq!(made(&memo, "a", 2, b"y"), ("a:2:y".into(), true));
        assert_eq!(made(&memo, "b", 2, b"y"), ("b:2:y".into(), true));
        assert_eq!(made(&memo, "a", 2, b"y"), ("a:2:y".into(), false));
    }

    #[test]
    fn it_never_holds_more_than_its_budget() {
        let memo = Memo::new(64 * 1024);
        for i in 0..10_000 {
            made(&memo, &format!("key{i}"), 0, &[b'z'; 100]);
            assert!(memo.bytes() <= 64 * 1024);
        }
        assert!(memo.bytes() > 32 * 1024, "and it does hold things");
        let huge = vec![b'h'; 64 * 1024];
        made(&memo, "huge", 0, &huge);
        assert!(made(&memo, "huge", 0, &huge).1, "too big to keep");
    }

    #[test]
    fn errors_are_not_kept() {
        let memo: Memo<String> = Memo::new(1 << 20);
        assert!(memo.get("a", 0, b"x", || Err("no")).is_err());
        assert!(made(&memo, "a", 0, b"x").1, "made again");
    }
}
