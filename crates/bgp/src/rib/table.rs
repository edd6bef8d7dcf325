//! Where the RIB keeps its prefixes: a slot per prefix in one vector, found by prefix
//! through an index.
//!
//! A [`DestId`] names a slot and stays the prefix's for as long as the prefix has paths, so
//! a caller can keep per-prefix state in plain vectors indexed by it (Adj-RIB-Out, export
//! queues) instead of hashing the prefix again for each. A slot whose last path went is not
//! reused at once: it stays indexed, empty, until [`Table::release`] is told no caller still
//! holds its id (a withdrawal not yet sent, say), so an id never silently changes prefix
//! under a caller.
//!
//! Every slot that is not vacant (released to the free list) is indexed. Such a slot may be
//! without paths: emptied and waiting for release, or entered by the RIB for an UPDATE's new
//! prefix and given its path later in the same call.
//!
//! A released slot keeps its index entry for a while ("stale": a lookup passes it over,
//! since the slot is vacant). Taking an entry out is a probe of an index gone cold since the
//! prefix was withdrawn, a cache miss at random, and that was a fifth of a withdrawal's
//! CPU. A stale entry goes when its slot is handed out again (the probe then, only on
//! churn), or with the others in a rebuild of the index from the slots, once few slots are
//! in use or the index needs room. Stale entries hold no memory the removals would have
//! given back: hashbrown does not shrink on removal either.

use std::hash::BuildHasher;

use std::net::{Ipv4Addr, Ipv6Addr};

use hashbrown::HashTable;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::Dest;
use crate::types::Family;

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

/// Slots of one family. An IPv6 address is 16 bytes where an IPv4 one is 4: kept in the
/// slot it would make every slot 8 bytes bigger (48 instead of 40), IPv4 ones included, so
/// IPv6 addresses sit beside their slots instead.
struct Chunk {
    dests: Vec<Dest>,
    /// The IPv6 addresses of `dests`, by position; empty in an IPv4 chunk.
    v6: Vec<Ipv6Addr>,
    is_v6: bool,
}

impl Chunk {
    fn new(is_v6: bool) -> Chunk {
        Chunk {
            dests: Vec::with_capacity(CHUNK),
            v6: if is_v6 {
                Vec::with_capacity(CHUNK)
            } else {
                Vec::new()
            },
            is_v6,
        }
    }

    fn prefix(&self, at: usize) -> Option<IpNet> {
        slot_prefix(self.is_v6, &self.v6, at, self.dests.get(at)?)
    }

    /// Whether slot `at` holds `prefix` and is not vacant, without building the slot's
    /// prefix. A vacant slot still has the prefix it last held, and may still be indexed.
    fn holds(&self, at: usize, prefix: &IpNet) -> bool {
        let Some(d) = self.dests.get(at) else {
            return false;
        };
        !d.vacant
            && d.prefix_len == prefix.prefix_len()
            && match prefix {
                IpNet::V4(n) => !self.is_v6 && d.addr4 == n.addr().to_bits(),
                IpNet::V6(n) => self.is_v6 && self.v6.get(at) == Some(&n.addr()),
            }
    }

    /// Puts `prefix` (of this chunk's family) into slot `at`, a new one at the end or a
    /// freed one.
    fn put(&mut self, at: usize, prefix: &IpNet) {
        let d = Dest::new(prefix);
        if at == self.dests.len() {
            self.dests.push(d);
        } else if let Some(slot) = self.dests.get_mut(at) {
            *slot = d;
        }
        if let IpNet::V6(n) = prefix {
            if at == self.v6.len() {
                self.v6.push(n.addr());
            } else if let Some(a) = self.v6.get_mut(at) {
                *a = n.addr();
            }
        }
    }
}

/// The prefix of `d`, slot `at` of a chunk with IPv6 addresses `v6`.
fn slot_prefix(is_v6: bool, v6: &[Ipv6Addr], at: usize, d: &Dest) -> Option<IpNet> {
    Some(if is_v6 {
        IpNet::V6(Ipv6Net::new_assert(*v6.get(at)?, d.prefix_len))
    } else {
        IpNet::V4(Ipv4Net::new_assert(
            Ipv4Addr::from_bits(d.addr4),
            d.prefix_len,
        ))
    })
}

pub(super) struct Table {
    /// Slot numbers, hashed by the prefix in their slot: 4 bytes a prefix, where a map from
    /// prefix to slot held 24.
    index: HashTable<DestId>,
    hasher: foldhash::fast::RandomState,
    chunks: Vec<Chunk>,
    /// By family (IPv4, IPv6): the chunk new slots go into, and freed slots to use first.
    open: [Option<usize>; 2],
    free: [Vec<DestId>; 2],
    /// By family: `free[f][..unindexed[f]]` have no index entry; the slots above it keep
    /// their stale one (see the module doc).
    unindexed: [usize; 2],
    /// Slots whose last path went, still indexed until released.
    emptied: Vec<DestId>,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            index: HashTable::new(),
            hasher: Default::default(),
            chunks: Vec::new(),
            open: [None; 2],
            free: Default::default(),
            unindexed: [0; 2],
            emptied: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("prefixes", &self.live())
            .field("stale", &self.stale())
            .field("slots", &self.capacity())
            .field("free", &(self.free[0].len() + self.free[1].len()))
            .finish()
    }
}

fn split(id: DestId) -> (usize, usize) {
    (id.index() / CHUNK, id.index() % CHUNK)
}

fn prefix_at(chunks: &[Chunk], id: DestId) -> Option<IpNet> {
    let (c, at) = split(id);
    chunks.get(c)?.prefix(at)
}

/// The hash of the prefix in slot `id`: for a vacant slot, the prefix it last held, under
/// which its stale entry sits.
fn slot_hash(hasher: &foldhash::fast::RandomState, chunks: &[Chunk], id: DestId) -> u64 {
    prefix_at(chunks, id).map_or(0, |p| prefix_hash(hasher, &p))
}

/// Takes slot `id`'s entry out of `index`.
fn unindex(
    index: &mut HashTable<DestId>,
    hasher: &foldhash::fast::RandomState,
    chunks: &[Chunk],
    id: DestId,
) {
    if let Ok(entry) = index.find_entry(slot_hash(hasher, chunks, id), |x| *x == id) {
        entry.remove();
    }
}

fn holds(chunks: &[Chunk], id: DestId, prefix: &IpNet) -> bool {
    let (c, at) = split(id);
    chunks.get(c).is_some_and(|c| c.holds(at, prefix))
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
            .find(self.hash(prefix), |id| holds(chunks, *id, prefix))
            .copied()
    }

    /// Whether slot `id` holds `prefix` and is not vacant: what [`Table::id`] would answer,
    /// from the slot alone.
    pub fn indexed_as(&self, id: DestId, prefix: &IpNet) -> bool {
        holds(&self.chunks, id, prefix)
    }

    /// Index entries of released slots (see the module doc).
    fn stale(&self) -> usize {
        (0..2).map(|f| self.free[f].len() - self.unindexed[f]).sum()
    }

    /// Slots that are not vacant (every one indexed).
    fn live(&self) -> usize {
        self.index.len() - self.stale()
    }

    /// Whether rebuilding the index from the slots costs less than taking the stale entries
    /// out one by one: a rebuild reads every slot in order and inserts the live ones, a
    /// miss each as a removal is, where a slot read in order costs a few percent of one.
    fn rebuild_is_cheaper(&self) -> bool {
        self.capacity() / 32 + self.live() <= self.stale()
    }

    pub fn get(&self, prefix: &IpNet) -> Option<&Dest> {
        self.at(self.id(prefix)?)
    }

    pub fn at(&self, id: DestId) -> Option<&Dest> {
        let (c, at) = split(id);
        self.chunks.get(c)?.dests.get(at)
    }

    pub fn at_mut(&mut self, id: DestId) -> Option<&mut Dest> {
        let (c, at) = split(id);
        self.chunks.get_mut(c)?.dests.get_mut(at)
    }

    /// The prefix of slot `id`.
    pub fn prefix(&self, id: DestId) -> Option<IpNet> {
        prefix_at(&self.chunks, id)
    }

    /// The family of slot `id`'s prefix (`None`: no such slot), without reading the slot:
    /// its chunk says.
    pub fn family(&self, id: DestId) -> Option<Family> {
        let (c, at) = split(id);
        self.chunks.get(c).filter(|c| at < c.dests.len()).map(|c| {
            if c.is_v6 {
                Family::Ipv6Unicast
            } else {
                Family::Ipv4Unicast
            }
        })
    }

    pub fn at_with_prefix(&self, id: DestId) -> Option<(IpNet, &Dest)> {
        Some((self.prefix(id)?, self.at(id)?))
    }

    pub fn at_mut_with_prefix(&mut self, id: DestId) -> Option<(IpNet, &mut Dest)> {
        Some((self.prefix(id)?, self.at_mut(id)?))
    }

    /// The slot of `prefix`, made (empty) if it has none.
    pub fn entry(&mut self, prefix: IpNet) -> DestId {
        let hash = self.hash(&prefix);
        // A full index with stale entries making up an eighth of it makes room by dropping
        // them instead of growing.
        //
        // Full, with at least half the slots in use (a table filling up): grown here rather
        // than by hashbrown (see `reindex_for`). Asking for room for 2 × len keeps hashbrown's
        // bucket count exactly doubled; 2 × len + 1 would quadruple it. A table refilling its
        // freed slots after a mass withdrawal is left to hashbrown: the walk would pass every
        // vacant slot at each doubling.
        if self.index.len() == self.index.capacity() && self.id(&prefix).is_none() {
            let stale = self.stale();
            if stale > 0 && 8 * stale >= self.index.len() {
                if self.rebuild_is_cheaper() {
                    self.reindex_for(self.index.capacity());
                } else {
                    self.unindex_stale();
                }
            } else if 2 * self.live() >= self.capacity() {
                self.reindex_for((2 * self.index.len()).max(16));
            }
        }
        let Table {
            index,
            hasher,
            chunks,
            open,
            free,
            unindexed,
            ..
        } = self;
        if let Some(id) = index.find(hash, |id| holds(chunks, *id, &prefix)) {
            return *id;
        }
        let family = Family::of(&prefix).index();
        let id = match free[family].pop() {
            Some(id) if free[family].len() >= unindexed[family] => {
                // Its stale entry goes before the slot takes its new prefix.
                unindex(index, hasher, chunks, id);
                id
            }
            Some(id) => {
                unindexed[family] = free[family].len();
                id
            }
            None => {
                let c = match open[family] {
                    Some(c) if chunks.get(c).is_some_and(|c| c.dests.len() < CHUNK) => c,
                    _ => {
                        chunks.push(Chunk::new(family == 1));
                        open[family] = Some(chunks.len() - 1);
                        chunks.len() - 1
                    }
                };
                let at = chunks.get(c).map_or(0, |c| c.dests.len());
                DestId(u32::try_from(c * CHUNK + at).unwrap_or(u32::MAX))
            }
        };
        let (c, at) = split(id);
        if let Some(chunk) = chunks.get_mut(c) {
            chunk.put(at, &prefix);
        }
        index.insert_unique(hash, id, |id| slot_hash(hasher, chunks, *id));
        id
    }

    /// Notes that the slot's last path went.
    pub fn emptied(&mut self, id: DestId) {
        if let Some(d) = self.at_mut(id)
            && !std::mem::replace(&mut d.listed_empty, true)
        {
            self.emptied.push(id);
        }
    }

    /// Frees the emptied slots that are still empty and that `in_use` says no caller holds;
    /// the others wait for the next call. Returns how many were freed.
    ///
    /// Their index entries stay (see the module doc). Once the slots in use are few beside
    /// the stale entries, and a rebuild is the cheaper way, the index is built again from
    /// the slots in use, as small as they allow: a full table withdrawn costs a pass or two
    /// over the slots, and gives the index's memory back.
    pub fn release(&mut self, mut in_use: impl FnMut(DestId) -> bool) -> usize {
        let mut going = Vec::new();
        let mut kept = Vec::new();
        for id in std::mem::take(&mut self.emptied) {
            let Some(dest) = self.at_mut(id) else {
                continue;
            };
            // Refilled since: listed again when it empties again.
            if !dest.paths.is_empty() {
                dest.listed_empty = false;
                continue;
            }
            // Not decided yet (its change still to come), or held by the caller.
            if dest.undecided || in_use(id) {
                kept.push(id);
                continue;
            }
            dest.listed_empty = false;
            dest.vacant = true;
            dest.paths = Default::default();
            going.push(id);
        }
        self.emptied = kept;
        // Pushed last first, so they are handed out again in the order they went: a peer
        // sending the prefixes again, then withdrawing them, in its order finds each in the
        // slot after the last (see `Rib::apply_edited`).
        for &id in going.iter().rev() {
            if let Some(family) = self.family(id) {
                self.free[family.index()].push(id);
            }
        }
        let stale = self.stale();
        if stale > 0 && 16 * self.live() <= stale && self.rebuild_is_cheaper() {
            self.reindex_for(self.live());
        }
        going.len()
    }

    /// Takes the stale entries out of the index one by one.
    fn unindex_stale(&mut self) {
        let Table {
            index,
            hasher,
            chunks,
            free,
            unindexed,
            ..
        } = self;
        for (free, unindexed) in free.iter().zip(unindexed) {
            for &id in &free[*unindexed..] {
                unindex(index, hasher, chunks, id);
            }
            *unindexed = free.len();
        }
    }

    /// Builds the index again from the slots not vacant, with room for `capacity`. A walk
    /// over the slots in order, where hashbrown's own growth visits its buckets and looks
    /// up each one's slot at random (a cache miss each, a seventh of a full table's load).
    /// Stale entries are left behind.
    fn reindex_for(&mut self, capacity: usize) {
        let mut index = HashTable::with_capacity(capacity);
        let Table { hasher, chunks, .. } = &*self;
        let rehash = |id: &DestId| slot_hash(hasher, chunks, *id);
        for (c, chunk) in chunks.iter().enumerate() {
            for (at, d) in chunk.dests.iter().enumerate() {
                if d.vacant {
                    continue;
                }
                let Some(prefix) = slot_prefix(chunk.is_v6, &chunk.v6, at, d) else {
                    continue;
                };
                let id = DestId((c * CHUNK + at) as u32);
                index.insert_unique(prefix_hash(hasher, &prefix), id, rehash);
            }
        }
        self.index = index;
        self.unindexed = [self.free[0].len(), self.free[1].len()];
    }

    /// Every slot holding a path, with its prefix.
    pub fn iter(&self) -> impl Iterator<Item = (DestId, IpNet, &Dest)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk
                .dests
                .iter()
                .enumerate()
                .filter(|(_, d)| !d.paths.is_empty())
                .filter_map(move |(at, d)| {
                    Some((DestId((c * CHUNK + at) as u32), chunk.prefix(at)?, d))
                })
        })
    }

    /// Every slot holding a path, with its prefix, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (DestId, IpNet, &mut Dest)> {
        self.chunks.iter_mut().enumerate().flat_map(|(c, chunk)| {
            let Chunk { dests, v6, is_v6 } = chunk;
            let (v6, is_v6) = (&*v6, *is_v6);
            dests
                .iter_mut()
                .enumerate()
                .filter(|(_, d)| !d.paths.is_empty())
                .filter_map(move |(at, d)| {
                    let prefix = slot_prefix(is_v6, v6, at, d)?;
                    Some((DestId((c * CHUNK + at) as u32), prefix, d))
                })
        })
    }

    /// One past the highest slot handed out, freed ones included: the length a caller's
    /// vector indexed by [`DestId`] needs.
    pub fn capacity(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |c| (self.chunks.len() - 1) * CHUNK + c.dests.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn v6(i: u32) -> IpNet {
        format!("fd00:{i:x}::/48").parse().unwrap()
    }

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
            t.id(&prefix(4999)).and_then(|id| t.prefix(id)),
            Some(prefix(4999))
        );
        // Freed slots are reused, and found again.
        let again = t.entry(a);
        assert!(again == ida || again == idb);
        assert_eq!(t.id(&a), Some(again));
    }

    #[test]
    fn both_families_get_slots_of_their_own_and_keep_their_prefixes_whole() {
        let mut t = Table::default();
        let mut ids = Vec::new();
        // Interleaved, past a chunk of each.
        for i in 0..(CHUNK as u32 + 10) {
            ids.push((t.entry(prefix(i)), prefix(i)));
            ids.push((t.entry(v6(i)), v6(i)));
        }
        // The same address under two lengths, and the IPv6 default route.
        let short: IpNet = "0.0.1.0/23".parse().unwrap();
        let all6: IpNet = "::/0".parse().unwrap();
        ids.push((t.entry(short), short));
        ids.push((t.entry(all6), all6));
        for (id, p) in &ids {
            assert_eq!(t.prefix(*id), Some(*p));
            assert_eq!(t.id(p), Some(*id));
            assert!(id.index() < t.capacity());
            let (c, _) = split(*id);
            assert_eq!(t.chunks[c].is_v6, matches!(p, IpNet::V6(_)));
        }
        // Slots are dense: no id twice, none past the capacity.
        let mut seen: Vec<DestId> = ids.iter().map(|(id, _)| *id).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), ids.len());
        // A freed IPv6 slot goes to the next IPv6 prefix, never to an IPv4 one.
        let (id6, p6) = ids[1];
        t.emptied(id6);
        assert_eq!(t.release(|_| false), 1);
        assert_eq!(t.id(&p6), None);
        let new4 = t.entry(prefix(1 << 20));
        assert_ne!(new4, id6);
        let new6 = t.entry(v6(0xffff));
        assert_eq!(new6, id6);
        assert_eq!(t.prefix(new6), Some(v6(0xffff)));
    }

    /// Gives slot `id` a path, as the RIB does when a prefix is announced.
    fn fill(t: &mut Table, id: DestId) {
        use crate::rib::{PathEntry, PeerId};
        let d = t.at_mut(id).unwrap();
        d.paths.push(PathEntry {
            peer: PeerId(1),
            path_id: 0,
            tx_path_id: 0,
            igp_cost: 0,
            attrs: Default::default(),
            stale: false,
            rejected: None,
        });
    }

    #[test]
    fn most_of_the_table_released_at_once_rebuilds_the_index_right() {
        let mut t = Table::default();
        let all: Vec<IpNet> = (0..3000).map(prefix).chain((0..3000).map(v6)).collect();
        let ids: Vec<DestId> = all.iter().map(|p| t.entry(*p)).collect();
        for id in &ids {
            fill(&mut t, *id);
        }
        // Everything empties; a hundred are refilled, a hundred held, one listed twice.
        for id in &ids {
            t.at_mut(*id).unwrap().paths = Default::default();
            t.emptied(*id);
        }
        t.emptied(ids[0]);
        for id in &ids[100..200] {
            fill(&mut t, *id);
        }
        let held = |id: DestId| (ids[200]..ids[300]).contains(&id);
        assert_eq!(t.release(held), 6000 - 200);
        for (i, (id, p)) in ids.iter().zip(&all).enumerate() {
            let stays = (100..300).contains(&i);
            assert_eq!(t.id(p), stays.then_some(*id), "{p}");
        }
        // The held ones go next time; the refilled ones are not listed any more.
        assert_eq!(t.release(|_| false), 100);
        assert_eq!(t.id(&all[250]), None);
        assert_eq!(t.id(&all[150]), Some(ids[150]));
        // Freed slots serve new prefixes of their family, found through the new index.
        let again = t.entry(v6(5000));
        assert!(t.chunks[split(again).0].is_v6);
        assert_eq!(t.id(&v6(5000)), Some(again));
        assert_eq!(t.prefix(again), Some(v6(5000)));
    }

    #[test]
    fn growth_reindexes_every_slot_in_use_and_no_freed_one() {
        let mut t = Table::default();
        let first: Vec<DestId> = (0..100)
            .map(|i| {
                let id = t.entry(prefix(i));
                fill(&mut t, id);
                id
            })
            .collect();
        let empty = |t: &mut Table, ids: &[DestId]| {
            for id in ids {
                t.at_mut(*id).unwrap().paths = Default::default();
                t.emptied(*id);
            }
        };
        // Ten freed, ten emptied but held.
        empty(&mut t, &first[..20]);
        let held = first[10..20].to_vec();
        assert_eq!(t.release(|id| held.contains(&id)), 10);
        // Slots entered without a path yet (the RIB enters an UPDATE's new prefixes before
        // it adds their paths), through several doublings; the first ten take the freed slots.
        let fresh: Vec<(DestId, IpNet)> = (1000..11_000)
            .map(|i| (t.entry(prefix(i)), prefix(i)))
            .collect();
        assert!(fresh[..10].iter().all(|(id, _)| first[..10].contains(id)));
        assert_eq!(t.index.len(), 90 + fresh.len());
        // Twice the buckets per growth, as hashbrown's own: room for 10,090 prefixes is
        // under twice as much.
        assert!((t.index.len()..2 * t.index.len()).contains(&t.index.capacity()));
        for (i, id) in first.iter().enumerate() {
            let p = prefix(i as u32);
            assert_eq!(t.id(&p), (i >= 10).then_some(*id), "{p}");
        }
        for (id, p) in &fresh {
            assert_eq!(t.id(p), Some(*id));
            assert_eq!(t.prefix(*id), Some(*p));
        }
        // The held ones are still released later.
        assert_eq!(t.release(|_| false), 10);
        assert_eq!(t.id(&prefix(15)), None);

        // Nearly everything goes, then comes back through the freed slots: the index grows
        // from a handful while most slots are vacant (hashbrown's own growth).
        for (id, _) in &fresh {
            fill(&mut t, *id);
        }
        let (gone, kept) = fresh.split_at(fresh.len() - 5);
        empty(&mut t, &gone.iter().map(|(id, _)| *id).collect::<Vec<_>>());
        assert_eq!(t.release(|_| false), gone.len());
        assert_eq!(t.index.len(), 90 - 10 + kept.len());
        let back: Vec<(DestId, IpNet)> = (20_000..25_000)
            .map(|i| (t.entry(prefix(i)), prefix(i)))
            .collect();
        assert!(
            back.iter().all(|(id, _)| id.index() < 11_000),
            "freed slots reused"
        );
        for (id, p) in back.iter().chain(kept) {
            assert_eq!(t.id(p), Some(*id));
        }
        assert_eq!(t.id(&gone[0].1), None);
    }

    /// Every slot not vacant is indexed once and found; every other index entry is the stale
    /// entry of a released slot above `unindexed`, once.
    fn check_index(t: &Table) {
        let mut entries: Vec<DestId> = t.index.iter().copied().collect();
        entries.sort();
        let before = entries.len();
        entries.dedup();
        assert_eq!(entries.len(), before, "a slot indexed twice");
        let stale: Vec<DestId> = (0..2)
            .flat_map(|f| t.free[f][t.unindexed[f]..].iter().copied())
            .collect();
        for id in &entries {
            let d = t.at(*id).unwrap();
            if d.vacant {
                assert!(stale.contains(id), "slot {id:?} is vacant but not stale");
            } else {
                let p = t.prefix(*id).unwrap();
                assert_eq!(t.id(&p), Some(*id), "{p}");
            }
        }
        let live = (0..t.capacity() as u32)
            .filter(|i| t.at(DestId(*i)).is_some_and(|d| !d.vacant))
            .count();
        assert_eq!(t.live(), live);
        assert_eq!(t.stale(), stale.len());
        assert_eq!(entries.len(), live + stale.len());
    }

    #[test]
    fn released_slots_keep_a_stale_entry_that_no_lookup_takes_until_reuse_or_rebuild() {
        let mut t = Table::default();
        let all: Vec<IpNet> = (0..2000).map(prefix).chain((0..2000).map(v6)).collect();
        let ids: Vec<DestId> = all.iter().map(|p| t.entry(*p)).collect();
        let release = |t: &mut Table, range: std::ops::Range<usize>| {
            for id in &ids[range] {
                t.emptied(*id);
            }
            t.release(|_| false)
        };
        // A tenth of each family goes: the entries stay, and no lookup finds them.
        assert_eq!(release(&mut t, 0..200), 200);
        assert_eq!(release(&mut t, 2000..2200), 200);
        assert_eq!(t.stale(), 400);
        check_index(&t);
        for (i, (id, p)) in ids.iter().zip(&all).enumerate() {
            let gone = (0..200).contains(&i) || (2000..2200).contains(&i);
            assert_eq!(t.id(p), (!gone).then_some(*id), "{p}");
            assert_eq!(t.indexed_as(*id, p), !gone);
        }
        // A released prefix comes back into a freed slot of its family; other new prefixes
        // take the rest; each reused slot's stale entry goes.
        let back = t.entry(all[5]);
        assert!(ids[..200].contains(&back));
        assert_eq!(t.id(&all[5]), Some(back));
        let fresh: Vec<(DestId, IpNet)> = (5000..5100)
            .flat_map(|i| [prefix(i), v6(i)])
            .map(|p| (t.entry(p), p))
            .collect();
        check_index(&t);
        assert_eq!(t.stale(), 400 - 201);
        for (id, p) in &fresh {
            assert_eq!(t.id(p), Some(*id));
        }
        // Nearly everything goes: the index is built again from the slots in use.
        let going: Vec<DestId> = (0..t.capacity() as u32)
            .map(DestId)
            .filter(|id| *id != back && t.at(*id).is_some_and(|d| !d.vacant))
            .collect();
        for id in &going {
            t.emptied(*id);
        }
        assert_eq!(t.release(|_| false), going.len());
        check_index(&t);
        assert_eq!(t.stale(), 0);
        assert_eq!(t.live(), 1);
        assert_eq!(t.id(&all[5]), Some(back));
        assert_eq!(t.id(&all[6]), None);
    }

    #[test]
    fn a_full_index_drops_stale_entries_instead_of_growing() {
        // Released IPv6 slots stay stale while only IPv4 prefixes come in (a family's new
        // prefixes reuse only its own freed slots), until the index is full. 1,000 stale
        // beside 2,500 live are taken out one by one; 2,000 beside 1,500, by a rebuild.
        for released in [1000, 2000] {
            let mut t = Table::default();
            let ids: Vec<DestId> = (0..3000).map(|i| t.entry(v6(i))).collect();
            let mut next = 0;
            while t.index.len() < t.index.capacity() {
                t.entry(prefix(next));
                next += 1;
            }
            let size = t.index.allocation_size();
            for id in &ids[..released] {
                t.emptied(*id);
            }
            assert_eq!(t.release(|_| false), released);
            assert_eq!(t.stale(), released);
            check_index(&t);
            for _ in 0..200 {
                t.entry(prefix(next));
                next += 1;
            }
            assert_eq!(t.stale(), 0, "{released}");
            assert_eq!(t.index.allocation_size(), size, "{released}");
            check_index(&t);
            assert_eq!(t.id(&v6(0)), None);
            assert_eq!(t.id(&v6(2999)), Some(ids[2999]));
        }
    }

    #[test]
    fn freed_slots_are_handed_out_again_in_the_order_they_went() {
        let mut t = Table::default();
        let ids: Vec<DestId> = (0..100).map(|i| t.entry(prefix(i))).collect();
        for id in &ids[10..20] {
            t.emptied(*id);
        }
        assert_eq!(t.release(|_| false), 10);
        let again: Vec<DestId> = (1000..1010).map(|i| t.entry(prefix(i))).collect();
        assert_eq!(again, ids[10..20]);
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
