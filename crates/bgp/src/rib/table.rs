//! Where the RIB keeps its prefixes: a slot per prefix in one vector, found by prefix
//! through an index.
//!
//! A [`DestId`] names a slot and stays the prefix's for as long as the prefix has paths, so
//! a caller can keep per-prefix state in plain vectors indexed by it (Adj-RIB-Out, export
//! queues) instead of hashing the prefix again for each. A slot whose last path went is not
//! reused at once: it stays indexed, empty, until [`Table::release`] is told no caller still
//! holds its id (a withdrawal not yet sent, say), so an id never silently changes prefix
//! under a caller.

use ipnet::IpNet;

use super::Dest;
use crate::types::FastMap;

/// A prefix's slot in the RIB (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestId(pub u32);

impl DestId {
    /// The slot as an index into a caller's vector.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Default)]
pub(super) struct Table {
    index: FastMap<IpNet, DestId>,
    slots: Vec<Dest>,
    free: Vec<DestId>,
    /// Slots whose last path went, still indexed until released.
    emptied: Vec<DestId>,
}

impl Table {
    pub fn id(&self, prefix: &IpNet) -> Option<DestId> {
        self.index.get(prefix).copied()
    }

    pub fn get(&self, prefix: &IpNet) -> Option<&Dest> {
        self.at(self.id(prefix)?)
    }

    pub fn at(&self, id: DestId) -> Option<&Dest> {
        self.slots.get(id.index())
    }

    pub fn at_mut(&mut self, id: DestId) -> Option<&mut Dest> {
        self.slots.get_mut(id.index())
    }

    /// The slot of `prefix`, made (empty) if it has none.
    pub fn entry(&mut self, prefix: IpNet) -> DestId {
        if let Some(id) = self.id(&prefix) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id.index()].prefix = prefix;
                id
            }
            None => {
                let id = DestId(u32::try_from(self.slots.len()).unwrap_or(u32::MAX));
                self.slots.push(Dest::new(prefix));
                id
            }
        };
        self.index.insert(prefix, id);
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
            let Some(dest) = self.slots.get(id.index()) else {
                continue;
            };
            // Refilled since, or already freed (an id emptied twice is listed twice).
            if !dest.paths.is_empty() || self.index.get(&dest.prefix) != Some(&id) {
                continue;
            }
            if in_use(id) {
                kept.push(id);
                continue;
            }
            self.index.remove(&dest.prefix);
            self.slots[id.index()].paths = Vec::new();
            self.free.push(id);
            freed += 1;
        }
        self.emptied = kept;
        freed
    }

    /// Every slot holding a path.
    pub fn iter(&self) -> impl Iterator<Item = (DestId, &Dest)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.paths.is_empty())
            .map(|(i, d)| (DestId(i as u32), d))
    }

    /// Every slot holding a path, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (DestId, &mut Dest)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter(|(_, d)| !d.paths.is_empty())
            .map(|(i, d)| (DestId(i as u32), d))
    }

    /// Slots in use, freed ones included: the length a caller's vector indexed by
    /// [`DestId`] needs.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}
