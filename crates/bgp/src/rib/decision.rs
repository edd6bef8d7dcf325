//! The decision process: RFC 4271 §9.1.2.2 with RFC 4456 §9, as sequential elimination.
//!
//! Every usable path of a prefix starts as a candidate. Each step keeps the candidates best
//! by its criterion and drops the rest, recording for each dropped path the step and the two
//! values compared — which is how the RFC defines the process, and gives operators the
//! reason a path is not the best for free. The steps, in order:
//!
//! 1. highest LOCAL_PREF (absent = 100; eBGP paths are stored without one);
//! 2. a locally originated route (as BIRD and Cisco's weight do);
//! 3. shortest AS_PATH ([`AsPath::decision_len`](crate::types::AsPath::decision_len));
//! 4. lowest ORIGIN;
//! 5. lowest MED among paths from the same neighbour AS only (absent = 0; an empty AS_PATH
//!    is from our own AS; a path starting with an AS_SET has no neighbour AS and is never
//!    dropped here). A path is dropped when any path from its neighbour AS has a lower MED,
//!    all at once, so the outcome does not depend on arrival order (RFC 4271 §9.1.2.2 c);
//! 6. eBGP over iBGP;
//! 7. lowest IGP cost to the next hop — the paths still standing here are the ECMP set;
//! 8. lowest BGP identifier: ORIGINATOR_ID if present, else the peer's router id
//!    (RFC 4456 §9);
//! 9. shortest CLUSTER_LIST (RFC 4456 §9);
//! 10. lowest peer address;
//! 11. lowest (peer, received path id): two ADD-PATH paths from one peer (RFC 7911 leaves
//!     this open), so the result is always a single path.
//!
//! It must stay a pure function of the paths and the peers' settings.

use std::cmp::Reverse;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use super::{ImportReject, PathEntry, PeerId, PeerInfo, RibConfig};
use crate::types::{AsSegment, Origin};

/// Why a path is not the best of its prefix. `path` is the loser's value, `winner` the value
/// that beat it at that step (the best among the candidates left, not necessarily the
/// overall best's when MED is involved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostBecause {
    /// Refused on import; never a candidate.
    Rejected(ImportReject),
    LocalPref {
        path: u32,
        winner: u32,
    },
    /// A locally originated route exists.
    NotLocal,
    AsPathLen {
        path: usize,
        winner: usize,
    },
    Origin {
        path: Origin,
        winner: Origin,
    },
    Med {
        path: u32,
        winner: u32,
        neighbor_as: u32,
    },
    /// Learned over iBGP while an eBGP path remains.
    Internal,
    IgpCost {
        path: u32,
        winner: u32,
    },
    /// ORIGINATOR_ID or the peer's router id.
    RouterId {
        path: Ipv4Addr,
        winner: Ipv4Addr,
    },
    ClusterListLen {
        path: usize,
        winner: usize,
    },
    PeerAddress {
        path: IpAddr,
        winner: IpAddr,
    },
    /// Same peer address: (peer, received path id).
    PathId {
        path: (PeerId, u32),
        winner: (PeerId, u32),
    },
}

impl LostBecause {
    /// The step of the decision that dropped the path (see the module doc); 0 = refused on
    /// import.
    pub fn step(&self) -> u8 {
        match self {
            LostBecause::Rejected(_) => 0,
            LostBecause::LocalPref { .. } => 1,
            LostBecause::NotLocal => 2,
            LostBecause::AsPathLen { .. } => 3,
            LostBecause::Origin { .. } => 4,
            LostBecause::Med { .. } => 5,
            LostBecause::Internal => 6,
            LostBecause::IgpCost { .. } => 7,
            LostBecause::RouterId { .. } => 8,
            LostBecause::ClusterListLen { .. } => 9,
            LostBecause::PeerAddress { .. } => 10,
            LostBecause::PathId { .. } => 11,
        }
    }
}

impl fmt::Display for LostBecause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostBecause::Rejected(r) => write!(f, "rejected on import: {r}"),
            LostBecause::LocalPref { path, winner } => {
                write!(f, "lower LOCAL_PREF ({path} < {winner})")
            }
            LostBecause::NotLocal => f.write_str("not locally originated (a local route exists)"),
            LostBecause::AsPathLen { path, winner } => {
                write!(f, "longer AS_PATH ({path} > {winner})")
            }
            LostBecause::Origin { path, winner } => write!(f, "worse ORIGIN ({path} > {winner})"),
            LostBecause::Med {
                path,
                winner,
                neighbor_as,
            } => write!(
                f,
                "higher MED ({path} > {winner}) than a path from the same neighbour AS {neighbor_as}"
            ),
            LostBecause::Internal => f.write_str("learned over iBGP (an eBGP path exists)"),
            LostBecause::IgpCost { path, winner } => {
                write!(f, "higher IGP cost to the next hop ({path} > {winner})")
            }
            LostBecause::RouterId { path, winner } => {
                write!(f, "higher originator/router id ({path} > {winner})")
            }
            LostBecause::ClusterListLen { path, winner } => {
                write!(f, "longer CLUSTER_LIST ({path} > {winner})")
            }
            LostBecause::PeerAddress { path, winner } => {
                write!(f, "higher peer address ({path} > {winner})")
            }
            LostBecause::PathId { path, winner } => write!(
                f,
                "higher peer/path id ({}/{} > {}/{})",
                path.0.0, path.1, winner.0.0, winner.1
            ),
        }
    }
}

/// What the decision reads besides the paths.
#[derive(Debug)]
pub(super) struct Ctx<'a> {
    pub config: &'a RibConfig,
    pub peers: &'a crate::types::FastMap<PeerId, PeerInfo>,
}

/// Why each path lost, per input index (`None` for the best), for [`Rib::explain`](super::Rib::explain).
pub(super) type Lost = Vec<Option<LostBecause>>;

/// Buffers the decision reuses from prefix to prefix: an UPDATE decides thousands of
/// prefixes, and allocating its working lists each time was a tenth of a ten-sender feed.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    alive: Vec<Cand>,
    dropped: Vec<(usize, LostBecause)>,
    mins: Vec<Option<u32>>,
    /// Indices into the paths after [`select`]: the best, then the losers that lasted
    /// longest first (ties in input order), then the refused ones.
    pub order: Vec<usize>,
}

/// One candidate with every value the steps compare.
#[derive(Debug, Clone, Copy)]
struct Cand {
    idx: usize,
    local_pref: u32,
    local: bool,
    as_path_len: usize,
    origin: Origin,
    med: u32,
    neighbor_as: Option<u32>,
    ebgp: bool,
    igp_cost: u32,
    bgp_id: Ipv4Addr,
    cluster_list_len: usize,
    address: IpAddr,
    tie: (PeerId, u32),
}

impl Cand {
    fn new(idx: usize, p: &PathEntry, ctx: &Ctx<'_>) -> Cand {
        let a = &p.attrs;
        let info = ctx.peers.get(&p.peer);
        let (ebgp, peer_id, address) = match info {
            Some(i) => (!i.ibgp(), i.router_id, i.address),
            // A local route, or (never expected) a path whose peer is gone: last in every
            // tie-break that reads the peer.
            None if p.peer.is_local() => {
                (false, ctx.config.router_id, Ipv4Addr::UNSPECIFIED.into())
            }
            None => (false, Ipv4Addr::BROADCAST, Ipv4Addr::BROADCAST.into()),
        };
        // RFC 4271 §9.1.2.2 c: the neighbour AS is the first AS of the path; a path with
        // none (from inside our AS) comes from our own AS.
        let neighbor_as = match a.as_path.segments.first() {
            None => Some(ctx.config.local_as),
            Some(AsSegment::Sequence(_)) => a.as_path.neighbor_as(),
            Some(AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_))
                if a.as_path.decision_len() == 0 =>
            {
                Some(ctx.config.local_as)
            }
            Some(_) => None,
        };
        Cand {
            idx,
            local_pref: a.effective_local_pref(),
            local: p.peer.is_local(),
            as_path_len: a.as_path.decision_len(),
            origin: a.origin,
            med: a.med.unwrap_or(0),
            neighbor_as,
            ebgp,
            igp_cost: p.igp_cost,
            bgp_id: a.originator_id.unwrap_or(peer_id),
            cluster_list_len: a.cluster_list.len(),
            address,
            tie: (p.peer, p.path_id),
        }
    }
}

/// The candidates still standing and the paths dropped so far, in the order dropped.
#[derive(Debug)]
struct Elimination<'s> {
    alive: &'s mut Vec<Cand>,
    dropped: &'s mut Vec<(usize, LostBecause)>,
    mins: &'s mut Vec<Option<u32>>,
}

impl Elimination<'_> {
    /// Keeps the candidates with the smallest `key`; the others lose with `why(theirs, min)`.
    fn keep_min<K: Ord + Copy>(
        &mut self,
        key: impl Fn(&Cand) -> K,
        why: impl Fn(K, K) -> LostBecause,
    ) {
        let mut keys = self.alive.iter().map(&key);
        let Some(first) = keys.next() else {
            return;
        };
        // Equal paths (ten senders of one table) tie at most steps: then no pass to drop.
        let (mut min, mut tied) = (first, true);
        for k in keys {
            tied &= k == min;
            min = min.min(k);
        }
        if tied {
            return;
        }
        let dropped = &mut *self.dropped;
        self.alive.retain(|c| {
            let k = key(c);
            if k == min {
                return true;
            }
            dropped.push((c.idx, why(k, min)));
            false
        });
    }

    /// Step 5: drop every path beaten on MED by a path from the same neighbour AS.
    fn med(&mut self) {
        // A handful of candidates: the lowest MED per neighbour AS by scanning them.
        let lowest = |alive: &[Cand], asn: u32| {
            alive
                .iter()
                .filter(|c| c.neighbor_as == Some(asn))
                .map(|c| c.med)
                .min()
        };
        self.mins.clear();
        let alive = &*self.alive;
        self.mins.extend(
            alive
                .iter()
                .map(|c| c.neighbor_as.and_then(|asn| lowest(alive, asn))),
        );
        let dropped = &mut *self.dropped;
        let mut mins = self.mins.iter();
        self.alive.retain(|c| {
            let min = mins.next().copied().flatten();
            let Some(asn) = c.neighbor_as else {
                return true;
            };
            let min = min.unwrap_or(c.med);
            if c.med <= min {
                return true;
            }
            dropped.push((
                c.idx,
                LostBecause::Med {
                    path: c.med,
                    winner: min,
                    neighbor_as: asn,
                },
            ));
            false
        });
    }
}

/// Ranks the paths of one prefix into `s.order`; returns how many lead it as the best and
/// its ties through the IGP-cost step (0 without a usable path).
pub(super) fn select(paths: &[PathEntry], ctx: &Ctx<'_>, s: &mut Scratch) -> usize {
    s.order.clear();
    s.dropped.clear();
    if let [only] = paths {
        s.order.push(0);
        return usize::from(only.rejected.is_none());
    }
    s.alive.clear();
    s.alive.extend(
        paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.rejected.is_none())
            .map(|(i, p)| Cand::new(i, p, ctx)),
    );
    let mut e = Elimination {
        alive: &mut s.alive,
        dropped: &mut s.dropped,
        mins: &mut s.mins,
    };
    e.keep_min(
        |c| Reverse(c.local_pref),
        |p, w| LostBecause::LocalPref {
            path: p.0,
            winner: w.0,
        },
    );
    e.keep_min(|c| !c.local, |_, _| LostBecause::NotLocal);
    e.keep_min(
        |c| c.as_path_len,
        |path, winner| LostBecause::AsPathLen { path, winner },
    );
    e.keep_min(
        |c| c.origin,
        |path, winner| LostBecause::Origin { path, winner },
    );
    e.med();
    e.keep_min(|c| !c.ebgp, |_, _| LostBecause::Internal);
    e.keep_min(
        |c| c.igp_cost,
        |path, winner| LostBecause::IgpCost { path, winner },
    );
    let multipath = e.alive.len();
    e.keep_min(
        |c| c.bgp_id,
        |path, winner| LostBecause::RouterId { path, winner },
    );
    e.keep_min(
        |c| c.cluster_list_len,
        |path, winner| LostBecause::ClusterListLen { path, winner },
    );
    e.keep_min(
        |c| c.address,
        |path, winner| LostBecause::PeerAddress { path, winner },
    );
    e.keep_min(
        |c| c.tie,
        |path, winner| LostBecause::PathId { path, winner },
    );

    s.order.extend(s.alive.iter().map(|c| c.idx));
    // Those dropped later lasted longer: rank them first (stable, so ties stay in input
    // order).
    s.dropped.sort_by_key(|(_, why)| Reverse(why.step()));
    s.order.extend(s.dropped.iter().map(|(i, _)| *i));
    s.order.extend(
        paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.rejected.is_some())
            .map(|(i, _)| i),
    );
    multipath
}

/// Why each path of one prefix is not its best (`None`: it is), in input order.
pub(super) fn explain(paths: &[PathEntry], ctx: &Ctx<'_>) -> Lost {
    let mut s = Scratch::default();
    select(paths, ctx, &mut s);
    let mut lost: Lost = paths
        .iter()
        .map(|p| super::import_reject(ctx, p).map(LostBecause::Rejected))
        .collect();
    for (i, why) in s.dropped {
        if let Some(slot) = lost.get_mut(i) {
            *slot = Some(why);
        }
    }
    lost
}
