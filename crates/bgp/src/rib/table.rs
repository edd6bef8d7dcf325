//! Where the RIB keeps its prefixes: a slot per prefix in one vector, found by prefix
//! through an index.
//!
//! A [`DestId`] names a slot and stays the prefix's for as long as the prefix has paths, so
//! a caller can keep per-prefix state in plain vectors indexed by it (Adj-RIB-Out, export
//! queues) instead of hashing the prefix again for each. A slot whose last path went is not
//! reused at once: it stays indexed, empty, until [`Table::release`] is told no caller still
//! holds its id (a withdrawal not yet sent, say), so an id never silently changes prefix
//! under a caller.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use ipnet::IpNet;

use super::Dest;

/// A prefix's slot in the RIB (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestId(pub u32);

impl DestId {
    /// The slot as an index into a caller's vector.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Slots per chunk: the slot vector grows a chunk at a time, so it never holds more than
/// one chunk of room it does not use (a doubling vector at 100,000 prefixes holds 31 % more).
const CHUNK: usize = 4096;

pub(super) struct Table {
    /// Slot numbers, hashed by the prefix in their slot: 4 bytes a prefix, where a map from
    /// prefix to slot held 24.
    index: HashTable<DestId>,
    hasher: foldhash::fast::RandomState,
    chunks: Vec<Vec<Dest>>,
    free: Vec<DestId>,
    /// Slots whose last path went, still indexed until released.
    emptied: Vec<DestId>,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            index: HashTable::new(),
            hasher: Default::default(),
            chunks: Vec::new(),
            free: Vec::new(),
            emptied: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("prefixes", &self.index.len())
            .field("slots", &self.capacity())
            .field("free", &self.free.len())
            .finish()
    }
}

/// The slot `id` in `chunks`.
fn slot(chunks: &[Vec<Dest>], id: DestId) -> Option<&Dest> {
    chunks.get(id.index() / CHUNK)?.get(id.index() % CHUNK)
}

/// A prefix hashed as one integer: the derived `Hash` of an `IpNet` feeds the hasher the
/// variant, the address bytes and the length one by one, and that was a tenth of a
/// million-prefix withdrawal's CPU.
fn prefix_hash(hasher: &foldhash::fast::RandomState, prefix: &IpNet) -> u64 {
    match prefix {
        IpNet::V4(n) => {
            hasher.hash_one(u64::from(n.addr().to_bits()) << 8 | u64::from(n.prefix_len()))
        }
        IpNet::V6(n) => hasher.hash_one((n.addr().to_bits(), n.prefix_len())),
    }
}

impl Table {
    fn hash(&self, prefix: &IpNet) -> u64 {
        prefix_hash(&self.hasher, prefix)
    }

    pub fn id(&self, prefix: &IpNet) -> Option<DestId> {
        let chunks = &self.chunks;
        self.index
            .find(self.hash(prefix), |id| {
                slot(chunks, *id).is_some_and(|d| d.prefix == *prefix)
            })
            .copied()
    }

    pub fn get(&self, prefix: &IpNet) -> Option<&Dest> {
        self.at(self.id(prefix)?)
    }

    pub fn at(&self, id: DestId) -> Option<&Dest> {
        slot(&self.chunks, id)
    }

    pub fn at_mut(&mut self, id: DestId) -> Option<&mut Dest> {
        self.chunks
            .get_mut(id.index() / CHUNK)?
            .get_mut(id.index() % CHUNK)
    }

    /// The slot of `prefix`, made (empty) if it has none.
    pub fn entry(&mut self, prefix: IpNet) -> DestId {
        let hash = self.hash(&prefix);
        let Table {
            index,
            hasher,
            chunks,
            free,
            ..
        } = self;
        if let Some(id) = index.find(hash, |id| {
            slot(chunks, *id).is_some_and(|d| d.prefix == prefix)
        }) {
            return *id;
        }
        let id = match free.pop() {
            Some(id) => {
                chunks[id.index() / CHUNK][id.index() % CHUNK].prefix = prefix;
                id
            }
            None => {
                if chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    chunks.push(Vec::with_capacity(CHUNK));
                }
                let n = (chunks.len() - 1) * CHUNK + chunks.last().map_or(0, Vec::len);
                if let Some(c) = chunks.last_mut() {
                    c.push(Dest::new(prefix));
                }
                DestId(u32::try_from(n).unwrap_or(u32::MAX))
            }
        };
        index.insert_unique(hash, id, |id| {
            slot(chunks, *id).map_or(0, |d| prefix_hash(hasher, &d.prefix))
        });
        id
    }

    /// Notes that the slot's last path went.
    pub fn emptied(&mut self, id: DestId) {
        self.emptied.push(id);
    }

    /// Frees the emptied slots that are still empty and that `in_use` says no caller holds;
    /// the others wait for the next call. Returns how many were freed.
    pub fn release(&mut self, mut in_use: impl FnMut(DestId) -> bool) -> usize {
        let mut freed = 0;
        let mut kept = Vec::new();
        for id in std::mem::take(&mut self.emptied) {
            let Some(dest) = slot(&self.chunks, id) else {
                continue;
            };
            // Refilled since: listed again when it empties again.
            if !dest.paths.is_empty() {
                continue;
            }
            // Not decided yet (its change still to come), or held by the caller.
            if dest.undecided || in_use(id) {
                kept.push(id);
                continue;
            }
            // One lookup both checks the slot is still indexed (an id emptied twice is
            // listed twice) and unindexes it.
            let hash = self.hash(&dest.prefix);
            let Ok(entry) = self.index.find_entry(hash, |x| *x == id) else {
                continue;
            };
            entry.remove();
            if let Some(d) = self.at_mut(id) {
                d.paths = Default::default();
            }
            self.free.push(id);
            freed += 1;
        }
        self.emptied = kept;
        freed
    }

    /// Every slot holding a path.
    pub fn iter(&self) -> impl Iterator<Item = (DestId, &Dest)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, d)| !d.paths.is_empty())
            .map(|(i, d)| (DestId(i as u32), d))
    }

    /// Every slot holding a path, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (DestId, &mut Dest)> {
        self.chunks
            .iter_mut()
            .flatten()
            .enumerate()
            .filter(|(_, d)| !d.paths.is_empty())
            .map(|(i, d)| (DestId(i as u32), d))
    }

    /// Slots in use, freed ones included: the length a caller's vector indexed by
    /// [`DestId`] needs.
    pub fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn prefix(i: u32) -> IpNet {
        IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(i << 8), 24).unwrap())
    }

    #[test]
    fn emptied_slots_are_released_after_the_index_grew() {
        let mut t = Table::default();
        let (a, b) = (prefix(1), prefix(2));
        let ida = t.entry(a);
        let idb = t.entry(b);
        // Listed twice, released once.
        t.emptied(ida);
        t.emptied(ida);
        t.emptied(idb);
        // The index grows (and rehashes) before the release.
        for i in 10..5000 {
            t.entry(prefix(i));
        }
        assert_eq!(t.release(|_| false), 2);
        assert_eq!(t.id(&a), None);
        assert_eq!(t.id(&b), None);
        assert_eq!(
            t.id(&prefix(4999)).map(|id| t.at(id).unwrap().prefix),
            Some(prefix(4999))
        );
        // Freed slots are reused, and found again.
        let again = t.entry(a);
        assert!(again == ida || again == idb);
        assert_eq!(t.id(&a), Some(again));
    }

    #[test]
    fn a_slot_refilled_or_held_is_not_released() {
        let mut t = Table::default();
        let a = prefix(1);
        let id = t.entry(a);
        t.emptied(id);
        assert_eq!(t.release(|x| x == id), 0);
        assert_eq!(t.id(&a), Some(id));
        assert_eq!(t.release(|_| false), 1);
        assert_eq!(t.id(&a), None);
    }
}
