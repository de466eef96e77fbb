//! The plaintext chunks an export keeps: least recently used out first, bounded in
//! bytes, so a VM booting on an export re-reads its hot blocks (boot loader, kernel,
//! libraries) from memory and the process never grows past the bound.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use lifeboat_store::ChunkId;

pub(crate) struct ChunkCache {
    limit: u64,
    used: u64,
    tick: u64,
    chunks: HashMap<ChunkId, (Bytes, u64)>,
    by_age: BTreeMap<u64, ChunkId>,
}

impl ChunkCache {
    pub(crate) fn new(limit: u64) -> ChunkCache {
        ChunkCache {
            limit,
            used: 0,
            tick: 0,
            chunks: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// The chunk, marked as just used.
    pub(crate) fn get(&mut self, id: &ChunkId) -> Option<Bytes> {
        self.tick += 1;
        let (data, age) = self.chunks.get_mut(id)?;
        self.by_age.remove(age);
        *age = self.tick;
        self.by_age.insert(self.tick, *id);
        Some(data.clone())
    }

    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    /// Keeps `data`, evicting the least recently used chunks beyond the limit.
    pub(crate) fn insert(&mut self, id: ChunkId, data: Bytes) {
        if self.chunks.contains_key(&id) {
            return;
        }
        self.tick += 1;
        self.used += data.len() as u64;
        self.by_age.insert(self.tick, id);
        self.chunks.insert(id, (data, self.tick));
        while self.used > self.limit {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((data, _)) = self.chunks.remove(&oldest) {
                self.used -= data.len() as u64;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_recently_used_within_the_limit() {
        let mut c = ChunkCache::new(3000);
        let ids: Vec<ChunkId> = (0..4).map(|_| ChunkId::random()).collect();
        for id in &ids[..3] {
            c.insert(*id, Bytes::from(vec![0u8; 1000]));
        }
        assert!(c.get(&ids[0]).is_some(), "touch the oldest");
        c.insert(ids[3], Bytes::from(vec![0u8; 1000]));
        assert!(c.contains(&ids[0]), "recently used stays");
        assert!(!c.contains(&ids[1]), "least recently used goes");
        assert!(c.contains(&ids[2]) && c.contains(&ids[3]));
        assert_eq!(c.used(), 3000);
    }
}
