//! The vocabulary shared by the codec, the session and the RIB.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Maps keyed by prefix are on every route's path: a fast non-cryptographic hash (the keys
/// come from peers, but a peer that could craft collisions can already send a full table).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// AS_TRANS (RFC 6793): what a 4-octet speaker puts in 2-octet fields for an AS above 65535.
pub const AS_TRANS: u32 = 23456;

/// The address families birdd speaks (AFI/SAFI pairs, unicast only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    /// (AFI, SAFI) on the wire.
    pub fn afi_safi(self) -> (u16, u8) {
        match self {
            Family::Ipv4Unicast => (1, 1),
            Family::Ipv6Unicast => (2, 1),
        }
    }

    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (1, 1) => Some(Family::Ipv4Unicast),
            (2, 1) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::Ipv4Unicast,
            IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }

    /// Index for per-family arrays.
    pub fn index(self) -> usize {
        match self {
            Family::Ipv4Unicast => 0,
            Family::Ipv6Unicast => 1,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        })
    }
}

/// A prefix with its ADD-PATH path identifier (RFC 7911); 0 when ADD-PATH is not in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri {
    pub prefix: IpNet,
    pub path_id: u32,
}

impl Nlri {
    pub fn new(prefix: IpNet) -> Nlri {
        Nlri { prefix, path_id: 0 }
    }
}

/// ORIGIN (RFC 4271 §5.1.1); the order is the preference order (lower wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Origin {
    #[default]
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Igp => "IGP",
            Origin::Egp => "EGP",
            Origin::Incomplete => "incomplete",
        })
    }
}

/// One AS_PATH segment (RFC 4271 §4.3, RFC 5065 for the confederation kinds).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    Set(Vec<u32>),
    Sequence(Vec<u32>),
    ConfedSequence(Vec<u32>),
    ConfedSet(Vec<u32>),
}

impl AsSegment {
    pub fn asns(&self) -> &[u32] {
        match self {
            AsSegment::Set(v)
            | AsSegment::Sequence(v)
            | AsSegment::ConfedSequence(v)
            | AsSegment::ConfedSet(v) => v,
        }
    }
}

/// AS_PATH with 4-octet AS numbers (2-octet paths are widened on decode, RFC 6793).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    pub fn from_sequence(asns: impl IntoIterator<Item = u32>) -> AsPath {
        let v: Vec<u32> = asns.into_iter().collect();
        if v.is_empty() {
            AsPath::default()
        } else {
            AsPath {
                segments: vec![AsSegment::Sequence(v)],
            }
        }
    }

    /// The length the decision process compares (RFC 4271 §9.1.2.2 a): a set counts as one,
    /// confederation segments not at all (RFC 5065 §5.3).
    pub fn decision_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v) => v.len(),
                AsSegment::Set(_) => 1,
                AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => 0,
            })
            .sum()
    }

    /// The neighbouring AS: the first AS of a leading AS_SEQUENCE (RFC 4271 §9.1.2.2 c).
    pub fn neighbor_as(&self) -> Option<u32> {
        match self.segments.first() {
            Some(AsSegment::Sequence(v)) => v.first().copied(),
            _ => None,
        }
    }

    /// How many times `asn` appears (for `numAllowedLocalASNumbers`).
    pub fn count(&self, asn: u32) -> usize {
        self.segments
            .iter()
            .map(|s| s.asns().iter().filter(|a| **a == asn).count())
            .sum()
    }

    /// Puts `asn` in front, as a speaker does when it sends to an external peer.
    pub fn prepend(&mut self, asn: u32) {
        match self.segments.first_mut() {
            Some(AsSegment::Sequence(v)) if v.len() < 255 => v.insert(0, asn),
            _ => self.segments.insert(0, AsSegment::Sequence(vec![asn])),
        }
    }

    /// Every AS number in order, flattened (for display and the API).
    pub fn flat(&self) -> Vec<u32> {
        self.segments
            .iter()
            .flat_map(|s| s.asns().iter().copied())
            .collect()
    }
}

impl fmt::Display for AsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.segments {
            let (open, close) = match s {
                AsSegment::Sequence(_) => ("", ""),
                AsSegment::Set(_) => ("{", "}"),
                AsSegment::ConfedSequence(_) => ("(", ")"),
                AsSegment::ConfedSet(_) => ("[", "]"),
            };
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(open)?;
            let parts: Vec<String> = s.asns().iter().map(u32::to_string).collect();
            f.write_str(&parts.join(" "))?;
            f.write_str(close)?;
        }
        Ok(())
    }
}

/// A large community (RFC 8092): global administrator, two local data parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity(pub u32, pub u32, pub u32);

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.0, self.1, self.2)
    }
}

/// Well-known communities (RFC 1997).
pub const NO_EXPORT: u32 = 0xFFFF_FF01;
pub const NO_ADVERTISE: u32 = 0xFFFF_FF02;
pub const NO_EXPORT_SUBCONFED: u32 = 0xFFFF_FF03;

/// A standard community as `aa:nn`.
pub fn community_string(c: u32) -> String {
    format!("{}:{}", c >> 16, c & 0xFFFF)
}

/// An attribute birdd does not interpret, kept so that optional transitive ones are passed
/// on (with the Partial bit set, RFC 4271 §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

/// The path attributes of one route, with 4-octet AS numbers throughout (AS4_PATH and
/// AS4_AGGREGATOR from 2-octet peers are merged in on decode). Next hops live here too: the
/// NEXT_HOP attribute for IPv4, the MP_REACH_NLRI next hop for IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Attrs {
    pub origin: Origin,
    pub as_path: AsPath,
    pub next_hop: Option<IpAddr>,
    /// The IPv6 link-local next hop that may follow the global one (RFC 2545).
    pub link_local_next_hop: Option<Ipv6Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<(u32, Ipv4Addr)>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub unknown: Vec<RawAttribute>,
}

impl Attrs {
    /// LOCAL_PREF as the decision process sees it (absent = 100, as BIRD and FRR assume).
    pub fn effective_local_pref(&self) -> u32 {
        self.local_pref.unwrap_or(100)
    }
}

/// What a routing policy changes in a path: BIRD's filter statements `bgp_community.add`,
/// `bgp_large_community.add`, `bgp_path.prepend` and `bgp_local_pref =`, which Calico's
/// BGPFilter operations and community advertisements render to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AttrEdits {
    /// Standard communities to add (each once, as BIRD's `.add` on a set).
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
    /// AS numbers to put in front of AS_PATH, in their final order.
    pub prepend: Vec<u32>,
    pub local_pref: Option<u32>,
}

impl AttrEdits {
    pub fn is_empty(&self) -> bool {
        self.communities.is_empty()
            && self.large_communities.is_empty()
            && self.prepend.is_empty()
            && self.local_pref.is_none()
    }

    pub fn add_community(&mut self, c: u32) {
        if !self.communities.contains(&c) {
            self.communities.push(c);
        }
    }

    pub fn add_large_community(&mut self, c: LargeCommunity) {
        if !self.large_communities.contains(&c) {
            self.large_communities.push(c);
        }
    }

    /// Makes the edits in `attrs`; whether anything changed.
    pub fn apply(&self, attrs: &mut Attrs) -> bool {
        let mut changed = false;
        for c in &self.communities {
            if !attrs.communities.contains(c) {
                attrs.communities.push(*c);
                changed = true;
            }
        }
        for c in &self.large_communities {
            if !attrs.large_communities.contains(c) {
                attrs.large_communities.push(*c);
                changed = true;
            }
        }
        for asn in self.prepend.iter().rev() {
            attrs.as_path.prepend(*asn);
            changed = true;
        }
        if let Some(lp) = self.local_pref
            && attrs.local_pref != Some(lp)
        {
            attrs.local_pref = Some(lp);
            changed = true;
        }
        changed
    }
}
