//! The RIB: every peer's Adj-RIB-In, the decision process of RFC 4271 §9.1.2.2 with the
//! route-reflection tie-breaks of RFC 4456 §9, and what to advertise to whom.
//!
//! It never opens a socket, reads a clock or spawns a task: the session hands it the NLRI of
//! one UPDATE ([`Rib::apply`]) and gets back the prefixes whose best path changed
//! ([`Change`]); the caller asks [`Rib::export_ids`] (or, over several batches,
//! [`Rib::peer_export`]) what each established peer should now
//! have for those prefixes, and diffs that against what it last sent (Adj-RIB-Out lives in
//! the caller, as in RustyBGP).
//!
//! # Layout
//!
//! - One `Dest` per prefix in a slot of one vector, found by prefix through an index
//!   (`table.rs`); the slot's [`DestId`] is handed out with each [`Change`] so callers keep
//!   their per-prefix state (Adj-RIB-Out, export queues) in vectors, and stays the prefix's
//!   until the caller lets [`Rib::release_empty`] free it. A `Dest` holds a small vector of
//!   [`PathEntry`] (source peer, received path id, our own ADD-PATH send id, IGP cost, the
//!   attributes as an `Arc`, the stale flag and, for a path refused on import, why).
//!   Listings sort on the way out.
//! - The vector is kept ranked: the best path first, then the paths that tie with it through
//!   the IGP-cost step (the ECMP set), then the other losers, those
//!   that lasted longest in the decision first, then the refused ones.
//! - Paths refused on import (AS loop, ORIGINATOR_ID or CLUSTER_LIST loop, no next hop) are
//!   kept with their [`ImportReject`] so operators can see them ([`Rib::explain`]); they are
//!   never candidates and never exported.
//! - A path from an eBGP peer is stored without LOCAL_PREF (RFC 4271 §5.1.5: a received one
//!   is ignored), so it competes with the local default of 100.
//! - Locally originated routes come from [`PeerId::LOCAL`]; their next hop may be absent, in
//!   which case export fills in our address on the session.
//!
//! # The decision (`decision.rs`)
//!
//! Sequential elimination over the candidates, as RFC 4271 §9.1.2.2 defines it: each step
//! keeps the paths best by its criterion, and each path dropped records the step and the two
//! values compared ([`LostBecause`]). MED is compared only among paths from the same
//! neighbour AS, by removing every path that another path from its neighbour AS beats on
//! MED — elimination, not pairwise comparison, so the result does not depend on the order in
//! which paths arrived. A locally originated route wins right after LOCAL_PREF, as in BIRD and
//! Cisco's weight. Stale paths (graceful restart, RFC 4724) are not penalised.
//!
//! # Changes
//!
//! A [`Change`] is emitted only when a prefix's best path or its ECMP set (paths tied through
//! the IGP-cost step, one per distinct next hop) changed; a re-sent identical path, or a loser
//! that comes and goes without moving the winner, emits nothing. Changes are returned per
//! call, uncoalesced, unless the caller deferred decisions ([`Rib::defer_decisions`]): then
//! UPDATEs only store paths, and [`Rib::decide`] decides each prefix they touched once,
//! comparing with its selection before the first of those edits (one [`Change`] at most). Peers receiving ADD-PATH need more than the best: while any peer has
//! `add_path_tx` on, every prefix whose path set changed is also queued for
//! [`Rib::take_path_set_changes`].
//!
//! # ADD-PATH send ids
//!
//! Each path of a prefix carries the path id we send it under, chosen when the path first
//! appears as the smallest id (from 1) not used by another path of that prefix, and kept for
//! as long as that (source peer, received path id) is present. Re-sent attributes keep it; a
//! withdrawn path frees it. Without ADD-PATH the exported path id is 0.
//!
//! # Cost
//!
//! An UPDATE costs one decision per prefix it carries (deferred: per prefix per round,
//! however many peers' UPDATEs carried it). Whole-table events (removing a peer,
//! flushing stale paths, changing a peer's settings or an IGP cost) walk every prefix once.

mod decision;
mod export;
mod paths;
mod table;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::types::{AttrEdits, Attrs, Family, FastMap, FastSet, Nlri};

use decision::Ctx;
pub use decision::LostBecause;
pub use export::{Advertised, ExportAll, ExportPolicy, ExportSink, PeerExport};
use paths::Paths;
pub use table::DestId;
use table::Table;

// ---------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------

/// Who a path came from, as numbered by the caller; [`PeerId::LOCAL`] is this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u32);

impl PeerId {
    /// Routes this node originates ([`Rib::originate`]).
    pub const LOCAL: PeerId = PeerId(0);

    pub fn is_local(self) -> bool {
        self == PeerId::LOCAL
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_local() {
            f.write_str("local")
        } else {
            write!(f, "peer {}", self.0)
        }
    }
}

/// What the RIB needs to know about one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's address: the last tie-break (RFC 4271 §9.1.2.2 g).
    pub address: IpAddr,
    /// The peer's BGP identifier, from its OPEN.
    pub router_id: Ipv4Addr,
    /// Our AS number on this session (Calico may override it per peer).
    pub local_as: u32,
    pub remote_as: u32,
    /// This peer is our route-reflector client (RFC 4456 §6).
    pub rr_client: bool,
    /// We may send several paths per prefix to it, per [`Family::index`] (RFC 7911).
    pub add_path_tx: [bool; 2],
    /// Rewrite the next hop to our address on export (BIRD `next hop self`).
    pub next_hop_self: bool,
    /// Keep the received next hop when exporting to this eBGP peer (BIRD `next hop keep`,
    /// Calico's `keepOriginalNextHop`).
    pub keep_next_hop: bool,
    /// How many times our own AS may appear in a received AS_PATH
    /// (Calico's `numAllowedLocalASNumbers`, BIRD `allow local as`).
    pub allow_local_as: usize,
    /// Our side of the session: the next hop we put on routes for this peer when we
    /// rewrite it (eBGP, next-hop-self, local routes without a next hop).
    pub local_address_v4: Option<Ipv4Addr>,
    pub local_address_v6: Option<Ipv6Addr>,
}

impl PeerInfo {
    /// A session with every option off.
    pub fn new(address: IpAddr, router_id: Ipv4Addr, local_as: u32, remote_as: u32) -> PeerInfo {
        PeerInfo {
            address,
            router_id,
            local_as,
            remote_as,
            rr_client: false,
            add_path_tx: [false; 2],
            next_hop_self: false,
            keep_next_hop: false,
            allow_local_as: 0,
            local_address_v4: None,
            local_address_v6: None,
        }
    }

    /// Internal BGP: both ends in the same AS.
    pub fn ibgp(&self) -> bool {
        self.local_as == self.remote_as
    }

    /// Our address on this session for `family`, the next hop we advertise.
    pub fn local_address(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::Ipv4Unicast => self.local_address_v4.map(IpAddr::V4),
            Family::Ipv6Unicast => self.local_address_v6.map(IpAddr::V6),
        }
    }
}

/// This speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// Set when this node is a route reflector (RFC 4456 §7); Calico's
    /// `routeReflectorClusterID`.
    pub cluster_id: Option<Ipv4Addr>,
}

impl RibConfig {
    /// The id RFC 4456 §8 loop detection looks for in CLUSTER_LIST: the cluster id, or our
    /// router id when we are no reflector (as BIRD does).
    fn cluster_id_or_router_id(&self) -> Ipv4Addr {
        self.cluster_id.unwrap_or(self.router_id)
    }
}

/// Why a received path was refused on import. It is kept, never a candidate, never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportReject {
    /// Our AS is in the AS_PATH more often than `allow_local_as` lets it be (RFC 4271 §9.1.2).
    AsPathLoop { asn: u32 },
    /// ORIGINATOR_ID is our router id: we originated it (RFC 4456 §8).
    OriginatorIsUs(Ipv4Addr),
    /// CLUSTER_LIST holds our cluster id: it has been round our cluster (RFC 4456 §8).
    ClusterLoop(Ipv4Addr),
    /// Neither NEXT_HOP nor an MP_REACH next hop.
    NoNextHop,
}

impl ImportReject {
    pub fn kind(self) -> RejectKind {
        match self {
            ImportReject::AsPathLoop { .. } => RejectKind::AsPathLoop,
            ImportReject::OriginatorIsUs(_) => RejectKind::OriginatorIsUs,
            ImportReject::ClusterLoop(_) => RejectKind::ClusterLoop,
            ImportReject::NoNextHop => RejectKind::NoNextHop,
        }
    }
}

/// What a stored path keeps of its [`ImportReject`]: the kind, in one byte (a path is 24
/// bytes with it, 32 with the reason's address). The AS number or id a reason names is
/// ours, so an explanation finds it again in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    AsPathLoop,
    OriginatorIsUs,
    ClusterLoop,
    NoNextHop,
}

impl fmt::Display for ImportReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportReject::AsPathLoop { asn } => write!(f, "AS_PATH contains our AS {asn} (loop)"),
            ImportReject::OriginatorIsUs(id) => {
                write!(f, "ORIGINATOR_ID {id} is our router id (reflection loop)")
            }
            ImportReject::ClusterLoop(id) => {
                write!(
                    f,
                    "CLUSTER_LIST contains our cluster id {id} (reflection loop)"
                )
            }
            ImportReject::NoNextHop => f.write_str("no next hop"),
        }
    }
}

/// One path of one prefix, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEntry {
    pub peer: PeerId,
    /// The path id the peer sent it under (RFC 7911), 0 without ADD-PATH.
    pub path_id: u32,
    /// The path id we send it under to ADD-PATH peers (see the module doc): the smallest
    /// free one, so 16 bits are plenty, and the entry stays 24 bytes.
    pub tx_path_id: u16,
    /// Cost to reach the next hop ([`Rib::set_igp_cost`]), 0 by default.
    pub igp_cost: u32,
    pub attrs: Arc<Attrs>,
    /// Kept through the peer's graceful restart, not yet re-sent (RFC 4724).
    pub stale: bool,
    /// Refused on import; never a candidate ([`Rib::explain`] says why in full).
    pub rejected: Option<RejectKind>,
}

/// A prefix's selected path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestPath {
    pub peer: PeerId,
    pub path_id: u32,
    pub attrs: Arc<Attrs>,
    /// The best path first, then every path tied with it through the IGP-cost step (equal
    /// LOCAL_PREF, locality, AS_PATH length, ORIGIN, surviving MED, eBGP/iBGP and IGP cost),
    /// one per distinct next hop: the kernel route's ECMP next hops (BIRD `merge paths`).
    pub multipath: Multipath,
}

/// The members of a selection, best first: a slice. One member, nearly every prefix's case,
/// is held inline: a vector for each [`Change`] was a heap allocation and a free per changed
/// prefix, a twentieth of a table's load.
#[derive(Debug, Clone)]
pub enum Multipath {
    One([(PeerId, Arc<Attrs>); 1]),
    Many(Vec<(PeerId, Arc<Attrs>)>),
}

impl std::ops::Deref for Multipath {
    type Target = [(PeerId, Arc<Attrs>)];

    fn deref(&self) -> &Self::Target {
        match self {
            Multipath::One(one) => one,
            Multipath::Many(many) => many,
        }
    }
}

/// Equal by members, however they are held.
impl PartialEq for Multipath {
    fn eq(&self, other: &Multipath) -> bool {
        **self == **other
    }
}

impl Eq for Multipath {}

impl<'a> IntoIterator for &'a Multipath {
    type Item = &'a (PeerId, Arc<Attrs>);
    type IntoIter = std::slice::Iter<'a, (PeerId, Arc<Attrs>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<(PeerId, Arc<Attrs>)> for Multipath {
    fn from_iter<I: IntoIterator<Item = (PeerId, Arc<Attrs>)>>(iter: I) -> Multipath {
        let mut iter = iter.into_iter();
        match (iter.next(), iter.next()) {
            (Some(first), None) => Multipath::One([first]),
            (first, second) => {
                // Sized by the upper bound: members come through a filter, whose lower
                // bound of 0 grew the vector three times for ten equal paths.
                let (low, high) = iter.size_hint();
                let mut many = Vec::with_capacity(high.unwrap_or(low).min(64) + 2);
                many.extend(first.into_iter().chain(second).chain(iter));
                Multipath::Many(many)
            }
        }
    }
}

/// The best path of `prefix` changed; `None` = it has no usable path any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub prefix: IpNet,
    /// The prefix's slot, valid until the caller lets [`Rib::release_empty`] free it.
    pub id: DestId,
    pub best: Option<BestPath>,
    /// The best path itself changed (another path, other attributes, or none), not only
    /// the ECMP members behind it: only then does a peer without ADD-PATH hear anything new.
    pub best_moved: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RibError {
    #[error("unknown {0}: add it with add_peer before handing the rib its routes")]
    UnknownPeer(PeerId),
    #[error("{0} is already known: change it with set_peer_info")]
    DuplicatePeer(PeerId),
    #[error(
        "peer id 0 is reserved for locally originated routes: number peers from 1 and use originate for local routes"
    )]
    ReservedPeerId,
}

// ---------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------

/// Every path of one prefix, ranked (see the module doc).
#[derive(Debug)]
///
/// 40 bytes. The prefix is not here whole: an IPv4 prefix's address is, an IPv6 prefix's
/// sits beside the slot in its chunk (see `table.rs`), so the [`Table`] answers for a
/// slot's prefix.
struct Dest {
    /// One path inline (most prefixes have one), more on the heap ([`Paths`]).
    paths: Paths,
    /// The address of an IPv4 prefix (0 for IPv6).
    addr4: u32,
    /// How many leading paths are the best plus its ties through the IGP-cost step; 0 when
    /// no path is usable.
    multipath: u32,
    prefix_len: u8,
    /// Edited since the last [`Rib::decide`] while decisions are deferred: `paths` and
    /// `multipath` are not ranked yet.
    undecided: bool,
    /// In the table's list of slots that lost their last path (listed once however often
    /// it empties before it is released).
    listed_empty: bool,
    /// Released: in the table's free list, found by no lookup (its index entry may remain,
    /// stale, until the slot is reused or the index rebuilt).
    vacant: bool,
}

impl Dest {
    fn new(prefix: &IpNet) -> Dest {
        Dest {
            paths: Paths::None,
            addr4: match prefix {
                IpNet::V4(n) => n.addr().to_bits(),
                IpNet::V6(_) => 0,
            },
            multipath: 0,
            prefix_len: prefix.prefix_len(),
            undecided: false,
            listed_empty: false,
            vacant: false,
        }
    }

    fn best(&self) -> Option<&PathEntry> {
        self.selected().first()
    }

    fn selected(&self) -> &[PathEntry] {
        &self.paths[..(self.multipath as usize).min(self.paths.len())]
    }

    /// The best path, then the other members of the ECMP set with a next hop not seen yet.
    fn multipath_members(&self) -> impl Iterator<Item = &PathEntry> {
        let selected = self.selected();
        selected.iter().enumerate().filter_map(move |(i, p)| {
            let seen = selected[..i]
                .iter()
                .any(|q| q.attrs.next_hop == p.attrs.next_hop);
            (!seen).then_some(p)
        })
    }

    fn best_path(&self) -> Option<BestPath> {
        let best = self.best()?;
        Some(BestPath {
            peer: best.peer,
            path_id: best.path_id,
            attrs: Arc::clone(&best.attrs),
            multipath: self
                .multipath_members()
                .map(|p| (p.peer, Arc::clone(&p.attrs)))
                .collect(),
        })
    }

    /// Writes who is selected now into `out`: the best, then the other ECMP members.
    fn selection_into(&self, out: &mut Vec<SelKey>) {
        out.clear();
        out.extend(self.multipath_members().map(SelKey::of));
    }

    /// Whether the selection is still `before` ([`Dest::selection_into`]).
    fn selected_as(&self, before: &[SelKey]) -> bool {
        let mut now = self.multipath_members().map(SelKey::of);
        before.iter().all(|b| now.next() == Some(*b)) && now.next().is_none()
    }

    /// The smallest ADD-PATH send id, from 1, no path of this prefix uses.
    fn free_tx_path_id(&self) -> u16 {
        (1..u16::MAX)
            .find(|id| !self.paths.iter().any(|p| p.tx_path_id == *id))
            .unwrap_or(u16::MAX)
    }

    /// Puts the paths in `order` (a permutation: new position i takes old path `order[i]`),
    /// in place.
    fn reorder(&mut self, order: &[usize]) {
        for i in 0..order.len().min(self.paths.len()) {
            // Where the path wanted here went: swapped forward by an earlier step.
            let mut j = order[i];
            while j < i {
                j = order[j];
            }
            self.paths.swap(i, j);
        }
    }
}

/// Who a selection holds: source, received path id and stored attributes (by address:
/// compared before and after one edit, while the `before` attributes are still held or
/// were freed only after the new ones were allocated, so equal addresses are the same
/// attributes). Interning makes equal attributes one allocation; a pair of equal copies
/// costs at most a spurious [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SelKey {
    peer: PeerId,
    path_id: u32,
    attrs: usize,
}

impl SelKey {
    fn of(p: &PathEntry) -> SelKey {
        SelKey {
            peer: p.peer,
            path_id: p.path_id,
            attrs: Arc::as_ptr(&p.attrs) as usize,
        }
    }
}

/// Buffers reused by every decision.
#[derive(Debug, Default)]
struct Scratch {
    decision: decision::Scratch,
    before: Vec<SelKey>,
    /// The slots of one UPDATE's prefixes, looked up before any is changed.
    found: Vec<Option<DestId>>,
    /// The slot after the last prefix found: where the next one likely is.
    next: Option<DestId>,
}

/// Decisions held back until [`Rib::decide`]: each prefix edited since, with its selection
/// before its first edit (a range of `keys`).
#[derive(Debug, Default)]
struct Deferred {
    on: bool,
    undecided: Vec<(DestId, std::ops::Range<usize>)>,
    keys: Vec<SelKey>,
    /// The attributes `keys` name, held so that no address in them is reused by other
    /// attributes before the decision compares them (several edits may come between).
    held: Vec<Arc<Attrs>>,
}

/// Paths stored per source, for [`Rib::paths_from`] and [`Rib::rejected_from`].
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    accepted: usize,
    rejected: usize,
}

impl Counts {
    fn record(&mut self, p: &PathEntry) {
        if p.rejected.is_some() {
            self.rejected += 1;
        } else {
            self.accepted += 1;
        }
    }

    fn forget(&mut self, p: &PathEntry) {
        if p.rejected.is_some() {
            self.rejected = self.rejected.saturating_sub(1);
        } else {
            self.accepted = self.accepted.saturating_sub(1);
        }
    }
}

/// The set of attribute sets in use. Entries only the interner still holds are dropped
/// as the set grows, so it never keeps what no path uses.
#[derive(Debug, Default)]
struct Interner {
    set: FastSet<Arc<Attrs>>,
    /// Size at which the next sweep runs (twice the size after the last one).
    sweep_at: usize,
}

impl Interner {
    fn intern(&mut self, attrs: Arc<Attrs>) -> Arc<Attrs> {
        if let Some(existing) = self.set.get(&attrs) {
            return existing.clone();
        }
        if self.set.len() >= self.sweep_at {
            self.set.retain(|a| Arc::strong_count(a) > 1);
            self.sweep_at = (self.set.len() * 2).max(1024);
        }
        self.set.insert(attrs.clone());
        attrs
    }
}

/// A received path after the import checks.
#[derive(Debug)]
struct Imported {
    attrs: Arc<Attrs>,
    rejected: Option<RejectKind>,
    igp_cost: u32,
}

/// What a whole-table walk does to one path.
#[derive(Debug, Clone, Copy)]
enum Edit {
    Drop,
    /// Re-decide with these import verdict and IGP cost (the peer's settings may also have
    /// changed the decision's inputs).
    Set {
        rejected: Option<RejectKind>,
        igp_cost: u32,
    },
}

// ---------------------------------------------------------------------------------------
// The RIB
// ---------------------------------------------------------------------------------------

/// Adj-RIB-In of every peer plus the Loc-RIB, with the decision made per prefix.
#[derive(Debug)]
pub struct Rib {
    config: RibConfig,
    peers: FastMap<PeerId, PeerInfo>,
    counts: FastMap<PeerId, Counts>,
    dests: Table,
    /// Equal attribute sets share one allocation, whichever UPDATE brought them: less
    /// memory, and export groups more prefixes per UPDATE (BIRD's `rta_lookup`).
    interned: Interner,
    /// Cost to reach a next hop, by next hop; absent = 0.
    igp_costs: HashMap<IpAddr, u32>,
    /// Some peer has `add_path_tx` on: record path-set changes.
    track_path_sets: bool,
    path_set_changes: Vec<DestId>,
    scratch: Scratch,
    deferred: Deferred,
}

impl Rib {
    pub fn new(config: RibConfig) -> Rib {
        Rib {
            config,
            peers: FastMap::default(),
            counts: FastMap::default(),
            dests: Table::default(),
            interned: Interner::default(),
            igp_costs: HashMap::new(),
            track_path_sets: false,
            path_set_changes: Vec::new(),
            scratch: Scratch::default(),
            deferred: Deferred::default(),
        }
    }

    pub fn config(&self) -> &RibConfig {
        &self.config
    }

    // ----- peers -----

    /// Registers a session, before it hands in routes.
    pub fn add_peer(&mut self, id: PeerId, info: PeerInfo) -> Result<(), RibError> {
        if id.is_local() {
            return Err(RibError::ReservedPeerId);
        }
        if self.peers.contains_key(&id) {
            return Err(RibError::DuplicatePeer(id));
        }
        self.peers.insert(id, info);
        self.refresh_tracking();
        Ok(())
    }

    pub fn peer_info(&self, id: PeerId) -> Option<&PeerInfo> {
        self.peers.get(&id)
    }

    /// Replaces a peer's settings, re-runs the import checks on its stored paths and the
    /// decision wherever it has a path. Attributes stay as they were imported: a change of
    /// AS numbers (iBGP becoming eBGP) needs a new session. What is exported depends on these
    /// settings too, so the caller exports every prefix again ([`Rib::export_many`]) to every peer.
    pub fn set_peer_info(&mut self, id: PeerId, info: PeerInfo) -> Result<Vec<Change>, RibError> {
        if id.is_local() {
            return Err(RibError::ReservedPeerId);
        }
        let slot = self.peers.get_mut(&id).ok_or(RibError::UnknownPeer(id))?;
        *slot = info.clone();
        self.refresh_tracking();
        let config = self.config.clone();
        Ok(self.sweep(None, |p| {
            (p.peer == id).then(|| Edit::Set {
                rejected: import_check(&config, &info, &p.attrs).map(ImportReject::kind),
                igp_cost: p.igp_cost,
            })
        }))
    }

    /// Forgets a peer and every path it sent ([`PeerId::LOCAL`]: every local route).
    pub fn remove_peer(&mut self, id: PeerId) -> Vec<Change> {
        let known = self.peers.remove(&id).is_some();
        if !known && !id.is_local() {
            return Vec::new();
        }
        self.refresh_tracking();
        let changes = self.sweep(None, |p| (p.peer == id).then_some(Edit::Drop));
        self.counts.remove(&id);
        changes
    }

    // ----- input -----

    /// One prefix from one peer: announced with `attrs`, or withdrawn when `attrs` is `None`.
    pub fn update(
        &mut self,
        peer: PeerId,
        nlri: Nlri,
        attrs: Option<Arc<Attrs>>,
    ) -> Result<Vec<Change>, RibError> {
        match attrs {
            Some(a) => self.apply(peer, &[], &[nlri], Some(a)),
            None => self.apply(peer, &[nlri], &[], None),
        }
    }

    /// One UPDATE: `withdrawn` first, then `announced` with `attrs`. With `attrs` `None` the
    /// announced prefixes are withdrawn too (RFC 7606 treat-as-withdraw).
    pub fn apply(
        &mut self,
        peer: PeerId,
        withdrawn: &[Nlri],
        announced: &[Nlri],
        attrs: Option<Arc<Attrs>>,
    ) -> Result<Vec<Change>, RibError> {
        self.apply_edited(peer, withdrawn, announced, attrs, None)
    }

    /// [`Rib::apply`] with the changes an import filter made to the announced routes
    /// (`edits`), made after the protocol's own import rules, as BIRD runs import filters
    /// on attributes already decoded (an eBGP peer's LOCAL_PREF already dropped).
    pub fn apply_edited(
        &mut self,
        peer: PeerId,
        withdrawn: &[Nlri],
        announced: &[Nlri],
        attrs: Option<Arc<Attrs>>,
        edits: Option<&AttrEdits>,
    ) -> Result<Vec<Change>, RibError> {
        if peer.is_local() {
            return Err(RibError::ReservedPeerId);
        }
        let info = self.peers.get(&peer).ok_or(RibError::UnknownPeer(peer))?;
        let mut imported = attrs.map(|a| self.import(info, a, edits));
        if let Some(i) = &mut imported {
            i.attrs = self.interned.intern(i.attrs.clone());
        }
        let mut changes = Vec::new();
        // Every prefix is looked up first, in a loop of nothing else: the lookups do not
        // depend on each other, so the processor overlaps their cache misses (in a table
        // of a million prefixes a lookup misses two or three times), where between two
        // edits each lookup waited for the last. The edits then find their lines cached.
        //
        // A peer sends its table in the order it keeps it, and withdraws or sends it again in
        // that order, while slots are handed out in arrival order: a known prefix is mostly
        // in the slot after the last one found. That slot is tried first, a read next to the
        // last, where the index costs two misses at random.
        let mut found = std::mem::take(&mut self.scratch.found);
        found.clear();
        let (dests, mut next) = (&self.dests, self.scratch.next);
        found.extend(withdrawn.iter().chain(announced).map(|n| {
            let id = next
                .filter(|id| dests.indexed_as(*id, &n.prefix))
                .or_else(|| dests.id(&n.prefix));
            if let Some(id) = id {
                next = Some(DestId(id.0.wrapping_add(1)));
            }
            id
        }));
        self.scratch.next = next;
        let (found_w, found_a) = found.split_at_mut(withdrawn.len());
        // New prefixes get their slots together too, before any path goes in: each one's
        // index entry is a store to a line not yet cached, and the next path's reference
        // count increment (an atomic) would wait for it, one miss after another.
        if imported.is_some() {
            for (nlri, id) in announced.iter().zip(found_a.iter_mut()) {
                if id.is_none() {
                    *id = Some(self.dests.entry(nlri.prefix));
                }
            }
        }
        for (nlri, id) in withdrawn.iter().zip(found_w) {
            self.put(peer, *nlri, *id, None, &mut changes);
        }
        for (nlri, id) in announced.iter().zip(found_a) {
            self.put(peer, *nlri, *id, imported.as_ref(), &mut changes);
        }
        self.scratch.found = found;
        Ok(changes)
    }

    /// Originates `prefix` from this node. Without a next hop, export puts our session
    /// address there.
    pub fn originate(&mut self, prefix: IpNet, attrs: Arc<Attrs>) -> Vec<Change> {
        let imported = Imported {
            attrs,
            rejected: None,
            igp_cost: 0,
        };
        let mut changes = Vec::new();
        let found = self.dests.id(&prefix);
        self.put(
            PeerId::LOCAL,
            Nlri::new(prefix),
            found,
            Some(&imported),
            &mut changes,
        );
        changes
    }

    pub fn withdraw_local(&mut self, prefix: IpNet) -> Vec<Change> {
        let mut changes = Vec::new();
        let found = self.dests.id(&prefix);
        self.put(PeerId::LOCAL, Nlri::new(prefix), found, None, &mut changes);
        changes
    }

    /// Graceful restart began (RFC 4724 §4.2): every path of `peer` in `family` is kept but
    /// marked stale; a re-sent path loses the mark. Returns how many were marked. Stale paths
    /// compete as usual.
    pub fn mark_stale(&mut self, peer: PeerId, family: Family) -> usize {
        let mut marked = 0;
        for (_, prefix, dest) in self.dests.iter_mut() {
            if Family::of(&prefix) != family {
                continue;
            }
            for p in dest.paths.iter_mut().filter(|p| p.peer == peer) {
                p.stale = true;
                marked += 1;
            }
        }
        marked
    }

    /// End-of-RIB or the restart timer: drops the paths of `peer` in `family` still stale.
    pub fn flush_stale(&mut self, peer: PeerId, family: Family) -> Vec<Change> {
        self.sweep(Some(family), |p| {
            (p.peer == peer && p.stale).then_some(Edit::Drop)
        })
    }

    /// Sets the cost to reach `next_hop` (decision step 7); 0 removes it.
    pub fn set_igp_cost(&mut self, next_hop: IpAddr, cost: u32) -> Vec<Change> {
        if cost == 0 {
            self.igp_costs.remove(&next_hop);
        } else {
            self.igp_costs.insert(next_hop, cost);
        }
        self.sweep(None, |p| {
            (p.attrs.next_hop == Some(next_hop) && p.igp_cost != cost).then_some(Edit::Set {
                rejected: p.rejected,
                igp_cost: cost,
            })
        })
    }

    // ----- queries -----

    /// Prefixes with a usable path.
    pub fn prefix_count(&self) -> usize {
        self.dests
            .iter()
            .filter(|(_, _, d)| d.best().is_some())
            .count()
    }

    /// Paths from `peer` that passed the import checks.
    pub fn paths_from(&self, peer: PeerId) -> usize {
        self.counts.get(&peer).map_or(0, |c| c.accepted)
    }

    /// Paths from `peer` refused on import (kept for [`Rib::explain`]).
    pub fn rejected_from(&self, peer: PeerId) -> usize {
        self.counts.get(&peer).map_or(0, |c| c.rejected)
    }

    pub fn best(&self, prefix: IpNet) -> Option<BestPath> {
        self.dests.get(&prefix)?.best_path()
    }

    /// Slot `id`'s current selection as a [`Change`], for a caller that must apply it again
    /// (the kernel's rules changed, say).
    pub fn current(&self, id: DestId) -> Option<Change> {
        let (prefix, dest) = self.dests.at_with_prefix(id)?;
        Some(Change {
            prefix,
            id,
            best: dest.best_path(),
            best_moved: true,
        })
    }

    /// Every stored path of `prefix`, ranked: best first, refused last.
    pub fn paths(&self, prefix: IpNet) -> &[PathEntry] {
        self.dests.get(&prefix).map_or(&[], |d| &d.paths)
    }

    /// Every prefix with its ranked paths, in no particular order (sort to list).
    pub fn routes(&self) -> impl Iterator<Item = (IpNet, &[PathEntry])> {
        self.dests
            .iter()
            .map(|(_, prefix, d)| (prefix, d.paths.as_slice()))
    }

    /// Every prefix with a path, with its slot.
    pub fn ids(&self) -> impl Iterator<Item = (DestId, IpNet)> {
        self.dests.iter().map(|(id, prefix, _)| (id, prefix))
    }

    /// The slot of `prefix`, while it has one.
    pub fn id(&self, prefix: IpNet) -> Option<DestId> {
        self.dests.id(&prefix)
    }

    /// The prefix in slot `id`.
    pub fn prefix(&self, id: DestId) -> Option<IpNet> {
        self.dests.prefix(id)
    }

    /// The family of slot `id`'s prefix, without reading the prefix.
    pub fn family(&self, id: DestId) -> Option<Family> {
        self.dests.family(id)
    }

    /// How long a vector indexed by [`DestId`] must be to hold every slot.
    pub fn id_capacity(&self) -> usize {
        self.dests.capacity()
    }

    /// From now on, announcements and withdrawals only store paths; the decision for each
    /// prefix they touched runs once, at [`Rib::decide`]. A prefix edited by many UPDATEs
    /// between two calls (ten peers sending the same table) is decided once, not once per
    /// path, and reports one [`Change`] at most. Whole-table operations (removing a peer,
    /// flushing stale paths, new peer settings, IGP costs) make their edits as part of the
    /// round and then decide everything waiting, returning those changes. Until `decide` the
    /// touched prefixes' best paths and listings are not current.
    pub fn defer_decisions(&mut self) {
        self.deferred.on = true;
    }

    /// Prefixes edited and not decided yet.
    pub fn undecided(&self) -> usize {
        self.deferred.undecided.len()
    }

    /// Decides every prefix edited since the last call (see [`Rib::defer_decisions`]) and
    /// returns the changes, in the order the prefixes were first edited.
    pub fn decide(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.deferred.undecided.is_empty() {
            return changes;
        }
        let Rib {
            config,
            peers,
            dests,
            scratch,
            deferred,
            ..
        } = self;
        let ctx = Ctx { config, peers };
        for (id, before) in deferred.undecided.drain(..) {
            let Some((prefix, dest)) = dests.at_mut_with_prefix(id) else {
                continue;
            };
            dest.undecided = false;
            scratch.before.clear();
            scratch.before.extend_from_slice(&deferred.keys[before]);
            settle(&ctx, scratch, (id, prefix), dest, &mut changes);
        }
        deferred.keys.clear();
        deferred.held.clear();
        changes
    }

    /// Frees the slots of prefixes that lost their last path, except those `in_use` says the
    /// caller still holds (a withdrawal not yet sent): their ids may then name other
    /// prefixes. Returns how many were freed. Take [`Rib::take_path_set_changes`] first: the
    /// ids it lists are not checked here.
    pub fn release_empty(&mut self, in_use: impl FnMut(DestId) -> bool) -> usize {
        self.dests.release(in_use)
    }

    /// Each path of `prefix`, ranked, with why it is not the best (`None`: it is).
    pub fn explain(&self, prefix: IpNet) -> Vec<(&PathEntry, Option<LostBecause>)> {
        let Some(dest) = self.dests.get(&prefix) else {
            return Vec::new();
        };
        let lost = decision::explain(&dest.paths, &self.ctx());
        dest.paths.iter().zip(lost).collect()
    }

    /// Slots whose set of paths changed since the last call, sorted, recorded only while
    /// some peer has ADD-PATH send on: a non-best path coming or going changes what those
    /// peers get without producing a [`Change`].
    pub fn take_path_set_changes(&mut self) -> Vec<DestId> {
        let mut v = std::mem::take(&mut self.path_set_changes);
        v.sort_unstable();
        v.dedup();
        v
    }

    // ----- internals -----

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            config: &self.config,
            peers: &self.peers,
        }
    }

    fn refresh_tracking(&mut self) {
        self.track_path_sets = self
            .peers
            .values()
            .any(|p| p.add_path_tx.iter().any(|on| *on));
        if !self.track_path_sets {
            self.path_set_changes = Vec::new();
        }
    }

    /// The import checks, the eBGP LOCAL_PREF rule and the import filter's edits, once per
    /// UPDATE.
    fn import(&self, info: &PeerInfo, attrs: Arc<Attrs>, edits: Option<&AttrEdits>) -> Imported {
        // RFC 4271 §5.1.5: LOCAL_PREF from an external peer is ignored.
        let mut attrs = if !info.ibgp() && attrs.local_pref.is_some() {
            Arc::new(Attrs {
                local_pref: None,
                ..Attrs::clone(&attrs)
            })
        } else {
            attrs
        };
        // The loop checks look at the path as received (BIRD's run at decode): an import
        // filter that prepends our own AS does not make it a loop.
        let rejected = import_check(&self.config, info, &attrs).map(ImportReject::kind);
        if let Some(e) = edits.filter(|e| !e.is_empty()) {
            e.apply(Arc::make_mut(&mut attrs));
        }
        let igp_cost = attrs
            .next_hop
            .and_then(|nh| self.igp_costs.get(&nh).copied())
            .unwrap_or(0);
        Imported {
            attrs,
            rejected,
            igp_cost,
        }
    }

    /// Stores, replaces or (with `new` `None`) removes one path, and re-decides its prefix.
    /// `found`: the prefix's slot if it had one when looked up, or was entered before the
    /// edits (a slot is never released in between, so it still holds the prefix).
    fn put(
        &mut self,
        peer: PeerId,
        nlri: Nlri,
        found: Option<DestId>,
        new: Option<&Imported>,
        changes: &mut Vec<Change>,
    ) {
        let Rib {
            config,
            peers,
            counts,
            dests,
            track_path_sets,
            path_set_changes,
            scratch,
            deferred,
            ..
        } = self;
        let ctx = Ctx { config, peers };
        let id = match (found, new) {
            (Some(id), _) => id,
            (None, Some(_)) => dests.entry(nlri.prefix),
            (None, None) => return,
        };
        let Some(dest) = dests.at_mut(id) else {
            return;
        };
        let pos = dest
            .paths
            .iter()
            .position(|p| p.peer == peer && p.path_id == nlri.path_id);
        let counts = counts.entry(peer).or_default();
        match (pos, new) {
            (None, None) => return,
            (Some(i), Some(imp)) => {
                let p = &mut dest.paths[i];
                p.stale = false;
                let same = p.rejected == imp.rejected
                    && p.igp_cost == imp.igp_cost
                    && (Arc::ptr_eq(&p.attrs, &imp.attrs) || p.attrs == imp.attrs);
                if same {
                    return;
                }
                before_edit(deferred, scratch, id, dest);
                let p = &mut dest.paths[i];
                counts.forget(p);
                p.attrs = Arc::clone(&imp.attrs);
                p.rejected = imp.rejected;
                p.igp_cost = imp.igp_cost;
                counts.record(p);
                settle_now(&ctx, deferred, scratch, (id, nlri.prefix), dest, changes);
            }
            (None, Some(imp)) => {
                before_edit(deferred, scratch, id, dest);
                let p = PathEntry {
                    peer,
                    path_id: nlri.path_id,
                    tx_path_id: dest.free_tx_path_id(),
                    igp_cost: imp.igp_cost,
                    attrs: Arc::clone(&imp.attrs),
                    stale: false,
                    rejected: imp.rejected,
                };
                counts.record(&p);
                dest.paths.push(p);
                settle_now(&ctx, deferred, scratch, (id, nlri.prefix), dest, changes);
            }
            (Some(i), None) => {
                before_edit(deferred, scratch, id, dest);
                let p = dest.paths.remove(i);
                counts.forget(&p);
                settle_now(&ctx, deferred, scratch, (id, nlri.prefix), dest, changes);
                if dest.paths.is_empty() {
                    dests.emptied(id);
                }
            }
        }
        if *track_path_sets {
            path_set_changes.push(id);
        }
    }

    /// Walks every prefix (of `family`, if given), applies `edit` to each path it picks, and
    /// re-decides the prefixes touched.
    fn sweep(
        &mut self,
        family: Option<Family>,
        edit: impl Fn(&PathEntry) -> Option<Edit>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let Rib {
            config,
            peers,
            counts,
            dests,
            track_path_sets,
            path_set_changes,
            scratch,
            deferred,
            ..
        } = self;
        let ctx = Ctx { config, peers };
        let mut emptied = Vec::new();
        for (id, prefix, dest) in dests.iter_mut() {
            if family.is_some_and(|f| f != Family::of(&prefix))
                || !dest.paths.iter().any(|p| edit(p).is_some())
            {
                continue;
            }
            before_edit(deferred, scratch, id, dest);
            dest.paths.retain_mut(|p| {
                let Some(e) = edit(p) else { return true };
                let c = counts.entry(p.peer).or_default();
                c.forget(p);
                match e {
                    Edit::Drop => false,
                    Edit::Set { rejected, igp_cost } => {
                        p.rejected = rejected;
                        p.igp_cost = igp_cost;
                        c.record(p);
                        true
                    }
                }
            });
            settle_now(&ctx, deferred, scratch, (id, prefix), dest, &mut changes);
            if *track_path_sets {
                path_set_changes.push(id);
            }
            if dest.paths.is_empty() {
                emptied.push(id);
            }
        }
        for id in emptied {
            dests.emptied(id);
        }
        // Deferred: the walk's edits join the round's, and everything waiting is decided
        // now, after the edits (a departed peer's pending path is never ranked, let alone
        // reported as best).
        if self.deferred.on {
            changes = self.decide();
        }
        changes
    }
}

/// The loop and next-hop checks of import (RFC 4271 §9.1.2, RFC 4456 §8).
fn import_check(config: &RibConfig, info: &PeerInfo, attrs: &Attrs) -> Option<ImportReject> {
    let ours = [config.local_as, info.local_as];
    if let Some(&asn) = ours
        .iter()
        .find(|&&asn| attrs.as_path.count(asn) > info.allow_local_as)
    {
        return Some(ImportReject::AsPathLoop { asn });
    }
    if attrs.originator_id == Some(config.router_id) {
        return Some(ImportReject::OriginatorIsUs(config.router_id));
    }
    let cluster = config.cluster_id_or_router_id();
    if attrs.cluster_list.contains(&cluster) {
        return Some(ImportReject::ClusterLoop(cluster));
    }
    if attrs.next_hop.is_none() {
        return Some(ImportReject::NoNextHop);
    }
    None
}

/// The full reason a stored path was refused: the check run again, or, should the
/// configuration have changed since, the reason of that kind with today's AS number and ids.
fn import_reject(ctx: &Ctx<'_>, p: &PathEntry) -> Option<ImportReject> {
    let kind = p.rejected?;
    let info = ctx.peers.get(&p.peer);
    if let Some(r) = info.and_then(|i| import_check(ctx.config, i, &p.attrs))
        && r.kind() == kind
    {
        return Some(r);
    }
    Some(match kind {
        RejectKind::AsPathLoop => ImportReject::AsPathLoop {
            asn: info.map_or(ctx.config.local_as, |i| i.local_as),
        },
        RejectKind::OriginatorIsUs => ImportReject::OriginatorIsUs(ctx.config.router_id),
        RejectKind::ClusterLoop => ImportReject::ClusterLoop(ctx.config.cluster_id_or_router_id()),
        RejectKind::NoNextHop => ImportReject::NoNextHop,
    })
}

/// Notes the selection of `dest` before an edit: in `scratch.before` to decide at once, or,
/// while decisions are deferred, with the prefix's first edit since the last decision.
fn before_edit(deferred: &mut Deferred, scratch: &mut Scratch, id: DestId, dest: &mut Dest) {
    if !deferred.on {
        dest.selection_into(&mut scratch.before);
        return;
    }
    if dest.undecided {
        return;
    }
    dest.undecided = true;
    let start = deferred.keys.len();
    for p in dest.multipath_members() {
        deferred.keys.push(SelKey::of(p));
        deferred.held.push(Arc::clone(&p.attrs));
    }
    deferred.undecided.push((id, start..deferred.keys.len()));
}

/// Decides `dest` after an edit, unless decisions are deferred.
fn settle_now(
    ctx: &Ctx<'_>,
    deferred: &Deferred,
    scratch: &mut Scratch,
    slot: (DestId, IpNet),
    dest: &mut Dest,
    changes: &mut Vec<Change>,
) {
    if !deferred.on {
        settle(ctx, scratch, slot, dest, changes);
    }
}

/// Re-decides `dest` after an edit and reports a [`Change`] if its selection moved from
/// `scratch.before`.
fn settle(
    ctx: &Ctx<'_>,
    scratch: &mut Scratch,
    (id, prefix): (DestId, IpNet),
    dest: &mut Dest,
    changes: &mut Vec<Change>,
) {
    if let [only] = dest.paths.as_slice() {
        // One path (most prefixes): selected unless refused, nothing to rank.
        dest.multipath = u32::from(only.rejected.is_none());
    } else if dest.paths.is_empty() {
        // Withdrawn: nothing to rank either.
        dest.multipath = 0;
    } else {
        let multipath = decision::select(&dest.paths, ctx, &mut scratch.decision);
        dest.multipath = u32::try_from(multipath).unwrap_or(u32::MAX);
        let order = &scratch.decision.order;
        if !order.iter().enumerate().all(|(i, &j)| i == j) {
            dest.reorder(order);
        }
    }
    if !dest.selected_as(&scratch.before) {
        changes.push(Change {
            prefix,
            id,
            best: dest.best_path(),
            best_moved: scratch.before.first().copied() != dest.best().map(SelKey::of),
        });
    }
}
