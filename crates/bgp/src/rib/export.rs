//! What to advertise to a peer: the export rules of RFC 4271 §9.1.3 and §5.1, route
//! reflection (RFC 4456 §6–§8) and the well-known communities (RFC 1997).
//!
//! Pure functions of the RIB: the caller keeps Adj-RIB-Out and diffs against it. A path
//! whose attributes need no change for the peer comes back as the very `Arc` stored, and
//! within one call (or one [`PeerExport`]) the same stored attributes from the same source
//! yield one shared `Arc`, so callers can group prefixes into UPDATEs by pointer.
//!
//! Rules, per path, in order:
//! - never a refused path, never a path back to the peer it came from;
//! - NO_ADVERTISE: to nobody; NO_EXPORT (and NO_EXPORT_SUBCONFED, as we run no
//!   confederation): to no eBGP peer;
//! - iBGP to iBGP only through a route reflector (`cluster_id` set): from a client to every
//!   iBGP peer, from a non-client to clients only (RFC 4456 §6); reflected paths get
//!   ORIGINATOR_ID (if absent, the source's router id) and our cluster id in front of
//!   CLUSTER_LIST; nor do we send a path to the router named in its ORIGINATOR_ID, which
//!   would drop it (RFC 4456 §8);
//! - to eBGP: our AS in front of AS_PATH; next hop = our address on the session unless
//!   `keep_next_hop` (the received one is kept when we do not know our address); no
//!   LOCAL_PREF, no ORIGINATOR_ID or CLUSTER_LIST, no MED unless we originated the route;
//! - to iBGP: LOCAL_PREF always (100 when absent); next hop unchanged unless
//!   `next_hop_self` or the path has none (a local route), then our address;
//! - a path still without a next hop is not sent.
//!
//! Without ADD-PATH to that peer only the best path is a candidate, sent as path id 0; with
//! it, every usable path, each under its stable send id ([`PathEntry::tx_path_id`]).
//!
//! The speaker's own export filter ([`ExportPolicy`]) runs on each path that passes these
//! rules and before the rewriting above, as BIRD runs a BGP protocol's export filter before
//! BGP's attribute updates: a path it prepends to still gets our AS in front towards eBGP.

use std::borrow::Cow;

use std::sync::Arc;

use ipnet::IpNet;

use super::{Dest, DestId, PathEntry, PeerId, PeerInfo, Rib};
use crate::types::{AttrEdits, Attrs, Family, NO_ADVERTISE, NO_EXPORT, NO_EXPORT_SUBCONFED};

/// What one peer should have for one prefix: (path id, attributes) pairs, path id 0
/// without ADD-PATH; empty = withdraw.
pub type Advertised = Vec<(u32, Arc<Attrs>)>;

/// A speaker's export filter for one peer: whether a path goes out, and what it changes
/// first. `from` is the peer the path came from (`None`: originated here).
pub trait ExportPolicy {
    fn export(
        &mut self,
        prefix: IpNet,
        attrs: &Attrs,
        from: Option<&PeerInfo>,
    ) -> Option<AttrEdits>;
}

impl<F> ExportPolicy for F
where
    F: FnMut(IpNet, &Attrs, Option<&PeerInfo>) -> Option<AttrEdits>,
{
    fn export(
        &mut self,
        prefix: IpNet,
        attrs: &Attrs,
        from: Option<&PeerInfo>,
    ) -> Option<AttrEdits> {
        self(prefix, attrs, from)
    }
}

/// A policy borrowed as a trait object, for the calls that take one.
struct Borrowed<'p>(&'p mut dyn ExportPolicy);

impl ExportPolicy for Borrowed<'_> {
    fn export(
        &mut self,
        prefix: IpNet,
        attrs: &Attrs,
        from: Option<&PeerInfo>,
    ) -> Option<AttrEdits> {
        self.0.export(prefix, attrs, from)
    }
}

/// No export filter: every path the protocol allows, unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportAll;

impl ExportPolicy for ExportAll {
    fn export(&mut self, _: IpNet, _: &Attrs, _: Option<&PeerInfo>) -> Option<AttrEdits> {
        Some(AttrEdits::default())
    }
}

/// Where export hands what one peer should have for one prefix: its slot, the prefix, and
/// the (path id, attributes) pairs (empty = withdraw). The slice is only valid during the
/// call: export reuses one buffer for every prefix.
pub type ExportSink<'s> = dyn FnMut(DestId, IpNet, &[(u32, Arc<Attrs>)]) + 's;

impl Rib {
    /// What `to` should have for `prefix` without an export filter: (path id, attributes)
    /// pairs; empty = withdraw.
    pub fn export(&self, to: PeerId, prefix: IpNet) -> Advertised {
        self.export_many(to, [prefix], &mut ExportAll)
            .pop()
            .map(|(_, paths)| paths)
            .unwrap_or_default()
    }

    /// [`Rib::export`] for many prefixes at once through `policy`, sharing the rewritten
    /// attributes.
    pub fn export_many(
        &self,
        to: PeerId,
        prefixes: impl IntoIterator<Item = IpNet>,
        policy: &mut dyn ExportPolicy,
    ) -> Vec<(IpNet, Advertised)> {
        let mut ex = Exporter::new(self, to, Borrowed(policy));
        prefixes
            .into_iter()
            .map(|prefix| {
                let paths = match (&mut ex, self.dests.get(&prefix)) {
                    (Some(ex), Some(dest)) => {
                        ex.dest(prefix, dest);
                        ex.buf.clone()
                    }
                    _ => Vec::new(),
                };
                (prefix, paths)
            })
            .collect()
    }

    /// What `to` should have for each slot in `ids`, through `policy`, handed to `sink` in
    /// order. Prefixes sharing stored attributes share one rewritten `Arc`, so the caller
    /// can group them into UPDATEs by pointer.
    pub fn export_ids(
        &self,
        to: PeerId,
        ids: impl IntoIterator<Item = DestId>,
        policy: &mut dyn ExportPolicy,
        sink: &mut ExportSink<'_>,
    ) {
        self.peer_export(to, Borrowed(policy)).ids(ids, sink);
    }

    /// An export to `to` through `policy` that several calls share: [`PeerExport::ids`]
    /// keeps sharing rewritten attributes from one call to the next.
    pub fn peer_export<P: ExportPolicy>(&self, to: PeerId, policy: P) -> PeerExport<'_, P> {
        PeerExport {
            rib: self,
            ex: Exporter::new(self, to, policy),
        }
    }
}

/// Export to one peer across several batches of slots ([`Rib::peer_export`]). A caller
/// exporting the same slots to many peers can go a batch at a time through all of them
/// while the slots are still cached, and still group each peer's prefixes by pointer.
pub struct PeerExport<'a, P> {
    rib: &'a Rib,
    /// `None`: the peer is unknown to the RIB, and hears only withdrawals.
    ex: Option<Exporter<'a, P>>,
}

impl<P> std::fmt::Debug for PeerExport<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerExport")
            .field("to", &self.ex.as_ref().map(|e| e.to_id))
            .finish_non_exhaustive()
    }
}

impl<P: ExportPolicy> PeerExport<'_, P> {
    /// What the peer should have for each slot in `ids`, handed to `sink` in order.
    pub fn ids(&mut self, ids: impl IntoIterator<Item = DestId>, sink: &mut ExportSink<'_>) {
        for id in ids {
            let Some((prefix, dest)) = self.rib.dests.at_with_prefix(id) else {
                continue;
            };
            match &mut self.ex {
                Some(ex) => {
                    ex.dest(prefix, dest);
                    sink(id, prefix, &ex.buf);
                }
                None => sink(id, prefix, &[]),
            }
        }
    }
}

/// A stored attribute set (by address), where it came from, and the family it goes out in.
type RewriteKey = (usize, PeerId, Family);

/// Export to one peer, remembering rewritten attributes for as long as it lives (it borrows
/// `&Rib`, and while that borrow lasts no stored `Arc` can be freed, so its address is a
/// sound key).
struct Exporter<'a, P> {
    rib: &'a Rib,
    to_id: PeerId,
    to: &'a PeerInfo,
    policy: P,
    rewritten: crate::types::FastMap<RewriteKey, Option<Arc<Attrs>>>,
    /// Paths the policy changed, by what it changed: prefixes given the same edits of the
    /// same stored attributes still share one `Arc`.
    edited: crate::types::FastMap<(RewriteKey, AttrEdits), Option<Arc<Attrs>>>,
    /// The last unedited answer: neighbouring prefixes mostly share attributes, so most
    /// lookups end here without hashing.
    last: Option<(RewriteKey, Option<Arc<Attrs>>)>,
    /// What [`Exporter::dest`] found, reused from prefix to prefix.
    buf: Vec<(u32, Arc<Attrs>)>,
    /// The last source peer looked up.
    source: Option<(PeerId, &'a PeerInfo)>,
}

impl<'a, P: ExportPolicy> Exporter<'a, P> {
    fn new(rib: &'a Rib, to_id: PeerId, policy: P) -> Option<Exporter<'a, P>> {
        Some(Exporter {
            rib,
            to_id,
            to: rib.peers.get(&to_id)?,
            policy,
            rewritten: Default::default(),
            edited: Default::default(),
            last: None,
            buf: Vec::new(),
            source: None,
        })
    }

    /// Puts what `self.to` should have for `dest` into `self.buf`.
    fn dest(&mut self, prefix: IpNet, dest: &Dest) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if self.to.add_path_tx[Family::of(&prefix).index()] {
            buf.extend(
                dest.paths
                    .iter()
                    .filter_map(|p| Some((u32::from(p.tx_path_id), self.path(prefix, p)?))),
            );
        } else if let Some(a) = dest.best().and_then(|p| self.path(prefix, p)) {
            buf.push((0, a));
        }
        self.buf = buf;
    }

    /// `p` as `self.to` should get it, or `None` when it must not be sent.
    fn path(&mut self, prefix: IpNet, p: &PathEntry) -> Option<Arc<Attrs>> {
        self.path_of(prefix, p.peer, &p.attrs, p.rejected)
    }

    /// A path from `peer` with `attrs` as `self.to` should get it.
    fn path_of(
        &mut self,
        prefix: IpNet,
        peer: PeerId,
        attrs: &Arc<Attrs>,
        rejected: Option<super::RejectKind>,
    ) -> Option<Arc<Attrs>> {
        if rejected.is_some() || peer == self.to_id {
            return None;
        }
        if attrs.communities.contains(&NO_ADVERTISE) {
            return None;
        }
        let to_ibgp = self.to.ibgp();
        if !to_ibgp
            && attrs
                .communities
                .iter()
                .any(|c| *c == NO_EXPORT || *c == NO_EXPORT_SUBCONFED)
        {
            return None;
        }
        let source = if peer.is_local() {
            None
        } else {
            // Neighbouring prefixes mostly come from one peer: look it up once for them.
            match self.source {
                Some((id, info)) if id == peer => Some(info),
                _ => {
                    let info = self.rib.peers.get(&peer)?;
                    self.source = Some((peer, info));
                    Some(info)
                }
            }
        };
        // RFC 4456 §6: iBGP-learned routes reach other iBGP peers only by reflection.
        let reflect = match source {
            Some(s) if s.ibgp() && to_ibgp => {
                self.rib.config.cluster_id?;
                if !(s.rr_client || self.to.rr_client) {
                    return None;
                }
                true
            }
            _ => false,
        };
        let originator = attrs
            .originator_id
            .or_else(|| source.filter(|_| reflect).map(|s| s.router_id));
        if to_ibgp && originator == Some(self.to.router_id) {
            return None;
        }
        let edits = self.policy.export(prefix, attrs, source)?;
        let family = Family::of(&prefix);
        let key = (Arc::as_ptr(attrs) as usize, peer, family);
        if !edits.is_empty() {
            let key = (key, edits);
            if let Some(done) = self.edited.get(&key) {
                return done.clone();
            }
            let mut changed = Attrs::clone(attrs);
            let done = if key.1.apply(&mut changed) {
                self.rewrite(family, &Arc::new(changed), source, reflect)
            } else {
                self.rewrite(family, attrs, source, reflect)
            };
            self.edited.insert(key, done.clone());
            return done;
        }
        if let Some((k, done)) = &self.last
            && *k == key
        {
            return done.clone();
        }
        let done = match self.rewritten.get(&key) {
            Some(done) => done.clone(),
            None => {
                let done = self.rewrite(family, attrs, source, reflect);
                self.rewritten.insert(key, done.clone());
                done
            }
        };
        self.last = Some((key, done.clone()));
        done
    }

    /// The attribute changes of export; the stored `Arc` itself when there are none.
    fn rewrite(
        &self,
        family: Family,
        stored: &Arc<Attrs>,
        source: Option<&PeerInfo>,
        reflect: bool,
    ) -> Option<Arc<Attrs>> {
        let mut a: Cow<'_, Attrs> = Cow::Borrowed(stored);
        let ours = self.to.local_address(family);
        if self.to.ibgp() {
            if a.local_pref.is_none() {
                a.to_mut().local_pref = Some(stored.effective_local_pref());
            }
            if (self.to.next_hop_self || a.next_hop.is_none())
                && let Some(nh) = ours.filter(|nh| a.next_hop != Some(*nh))
            {
                let m = a.to_mut();
                m.next_hop = Some(nh);
                m.link_local_next_hop = None;
            }
            if reflect {
                let m = a.to_mut();
                if m.originator_id.is_none() {
                    m.originator_id = source.map(|s| s.router_id);
                }
                if let Some(cluster) = self.rib.config.cluster_id {
                    m.cluster_list.insert(0, cluster);
                }
            }
        } else {
            let m = a.to_mut();
            m.as_path.prepend(self.to.local_as);
            if (!self.to.keep_next_hop || m.next_hop.is_none())
                && let Some(nh) = ours
            {
                m.next_hop = Some(nh);
                m.link_local_next_hop = None;
            }
            m.local_pref = None;
            if source.is_some() {
                m.med = None;
            }
            m.originator_id = None;
            m.cluster_list.clear();
        }
        a.next_hop?;
        Some(match a {
            Cow::Borrowed(_) => Arc::clone(stored),
            Cow::Owned(o) => Arc::new(o),
        })
    }
}
