//! Messages to bytes, in one canonical form: attributes with the flags their RFC gives them,
//! the Extended Length bit only where a value needs it, MP_REACH_NLRI / MP_UNREACH_NLRI
//! first and the rest by type code, and no message over 4096 bytes (RFC 4271 §4.1; we do
//! not negotiate RFC 8654's extended messages).
//!
//! Encoding cannot fail: it is fed our own data, not a peer's. Where that data cannot be
//! sent as it stands (a capability value over 255 bytes, attributes too large to leave room
//! for one prefix) the doc of the function says what is left out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::decode::attr;
use super::{
    Capability, Codec, HEADER_LEN, MAX_MESSAGE_LEN, Notification, Open, RouteRefresh, msg_type,
};
use crate::types::{AS_TRANS, AsPath, AsSegment, Attrs, Family, Nlri};

/// Marker, length, type, then two zero lengths: the fixed part of every UPDATE.
const UPDATE_OVERHEAD: usize = HEADER_LEN + 4;
/// An attribute header with the Extended Length bit: flags, type, two length bytes. Room is
/// reserved for this form so that a chunk never outgrows the message when the bit is needed.
const LONG_ATTR_HEADER: usize = 4;

// ===== header (RFC 4271 §4.1) =====

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + body.len();
    debug_assert!(len <= MAX_MESSAGE_LEN, "message of {len} bytes");
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0xFF; 16]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

// ===== OPEN (RFC 4271 §4.2, RFC 5492) =====

/// OPEN with every capability in one optional parameter, as BIRD sends it. The 2-octet
/// my-AS field carries `asn`, or AS_TRANS when `asn` needs 4 octets (RFC 6793 §4.2.1); the
/// caller puts the [`Capability::FourOctetAs`] in `capabilities` itself. Should the
/// capabilities outgrow the 255 bytes of a classic parameter block, RFC 9072's extended
/// format is used. A capability whose value exceeds 255 bytes cannot be written and is
/// left out.
pub fn encode_open(open: &Open) -> Vec<u8> {
    let mut caps = Vec::new();
    for cap in &open.capabilities {
        push_capability(&mut caps, cap);
    }
    let my_as = u16::try_from(open.asn).unwrap_or(AS_TRANS as u16);
    let mut body = vec![open.version];
    body.extend_from_slice(&my_as.to_be_bytes());
    body.extend_from_slice(&open.hold_time.to_be_bytes());
    body.extend_from_slice(&open.router_id.octets());
    if caps.is_empty() {
        body.push(0);
    } else if let (Ok(param_len), Ok(caps_len)) =
        (u8::try_from(caps.len() + 2), u8::try_from(caps.len()))
    {
        body.extend_from_slice(&[param_len, 2, caps_len]);
        body.extend_from_slice(&caps);
    } else {
        // RFC 9072 §2: length 255 and type 255 announce 2-byte lengths.
        let caps_len = caps.len() as u16;
        body.extend_from_slice(&[255, 255]);
        body.extend_from_slice(&(caps_len + 3).to_be_bytes());
        body.push(2);
        body.extend_from_slice(&caps_len.to_be_bytes());
        body.extend_from_slice(&caps);
    }
    message(msg_type::OPEN, &body)
}

/// One capability: code, length, value (RFC 5492 §4).
fn push_capability(out: &mut Vec<u8>, cap: &Capability) {
    let (code, value) = capability_value(cap);
    let Ok(len) = u8::try_from(value.len()) else {
        debug_assert!(false, "capability {code} of {} bytes", value.len());
        return;
    };
    out.extend_from_slice(&[code, len]);
    out.extend_from_slice(&value);
}

fn capability_value(cap: &Capability) -> (u8, Vec<u8>) {
    match cap {
        Capability::MultiProtocol(family) => (1, afi_reserved_safi(*family).to_vec()),
        Capability::RouteRefresh => (2, Vec::new()),
        Capability::GracefulRestart(gr) => {
            // RFC 4724 §3: R and N (RFC 8538) in the top bits, then a 12-bit time.
            let mut head = gr.time & 0x0FFF;
            if gr.restarting {
                head |= 0x8000;
            }
            if gr.notification {
                head |= 0x4000;
            }
            let mut value = head.to_be_bytes().to_vec();
            for (family, forwarding) in &gr.families {
                let (afi, safi) = family.afi_safi();
                value.extend_from_slice(&afi.to_be_bytes());
                value.push(safi);
                value.push(if *forwarding { 0x80 } else { 0 });
            }
            (64, value)
        }
        Capability::FourOctetAs(asn) => (65, asn.to_be_bytes().to_vec()),
        Capability::AddPath(families) => {
            let mut value = Vec::with_capacity(families.len() * 4);
            for (family, mode) in families {
                let (afi, safi) = family.afi_safi();
                value.extend_from_slice(&afi.to_be_bytes());
                value.push(safi);
                value.push(*mode as u8);
            }
            (69, value)
        }
        Capability::EnhancedRouteRefresh => (70, Vec::new()),
        Capability::Unknown { code, value } => (*code, value.clone()),
    }
}

/// AFI, a zero reserved byte, SAFI: the layout of the multiprotocol capability.
fn afi_reserved_safi(family: Family) -> [u8; 4] {
    let (afi, safi) = family.afi_safi();
    let [a0, a1] = afi.to_be_bytes();
    [a0, a1, 0, safi]
}

// ===== KEEPALIVE, NOTIFICATION, ROUTE-REFRESH =====

pub fn encode_keepalive() -> Vec<u8> {
    message(msg_type::KEEPALIVE, &[])
}

/// NOTIFICATION (RFC 4271 §4.5). Data beyond what fits in 4096 bytes is cut off.
pub fn encode_notification(n: &Notification) -> Vec<u8> {
    let room = MAX_MESSAGE_LEN - HEADER_LEN - 2;
    let mut body = vec![n.code, n.subcode];
    body.extend_from_slice(&n.data[..n.data.len().min(room)]);
    message(msg_type::NOTIFICATION, &body)
}

/// ROUTE-REFRESH (RFC 2918 §3 with RFC 7313's subtype in the reserved byte).
pub fn encode_route_refresh(rr: &RouteRefresh) -> Vec<u8> {
    let (afi, safi) = rr.family.afi_safi();
    let [a0, a1] = afi.to_be_bytes();
    message(msg_type::ROUTE_REFRESH, &[a0, a1, rr.subtype, safi])
}

// ===== UPDATE (RFC 4271 §4.3, RFC 4760) =====

/// Announces `nlri` with `attrs`, in as many UPDATEs as it takes to stay within 4096
/// bytes. All of `nlri` must be of one family, the first one's (others are left out, and
/// debug builds assert). IPv4 goes in the classic NLRI field with NEXT_HOP taken from an
/// IPv4 `attrs.next_hop` (none is written without one). IPv6 goes in MP_REACH_NLRI with
/// `attrs.next_hop` as the global next hop (an IPv4 one written IPv4-mapped) and
/// `link_local_next_hop` after it when set (RFC 2545 §3). Path identifiers are written when
/// `codec.add_path_tx` says so for the family. Towards a 2-octet peer, AS numbers above
/// 65535 become AS_TRANS and the real ones go in AS4_PATH / AS4_AGGREGATOR (RFC 6793
/// §4.2.2).
///
/// Empty `nlri` gives no messages; so do attributes so large that not one prefix would fit
/// beside them (RFC 4271 §9.2 leaves such a route unadvertised).
pub fn encode_update(attrs: &Attrs, nlri: &[Nlri], codec: &Codec) -> Vec<Vec<u8>> {
    let Some((family, nlri)) = one_family(nlri) else {
        return Vec::new();
    };
    let add_path = codec.add_path_tx[family.index()];
    match family {
        Family::Ipv4Unicast => {
            let next_hop = match attrs.next_hop {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            };
            let path_attrs = path_attributes(attrs, codec, next_hop);
            let room = MAX_MESSAGE_LEN.saturating_sub(UPDATE_OVERHEAD + path_attrs.len());
            pack(&nlri, add_path, room)
                .iter()
                .map(|chunk| update(&[], &path_attrs, chunk))
                .collect()
        }
        Family::Ipv6Unicast => {
            let path_attrs = path_attributes(attrs, codec, None);
            let next_hop = ipv6_next_hop(attrs);
            // AFI, SAFI, next hop length, next hop, reserved byte.
            let fixed = LONG_ATTR_HEADER + 3 + 1 + next_hop.len() + 1;
            let room = MAX_MESSAGE_LEN.saturating_sub(UPDATE_OVERHEAD + path_attrs.len() + fixed);
            pack(&nlri, add_path, room)
                .iter()
                .map(|chunk| {
                    let mut value = afi_safi(family).to_vec();
                    value.push(next_hop.len() as u8);
                    value.extend_from_slice(&next_hop);
                    value.push(0);
                    value.extend_from_slice(chunk);
                    // RFC 7606 §5.1: MP_REACH_NLRI goes first.
                    let mut all = Vec::with_capacity(value.len() + path_attrs.len() + 4);
                    push_attr(
                        &mut all,
                        known_flags(attr::MP_REACH_NLRI),
                        attr::MP_REACH_NLRI,
                        &value,
                    );
                    all.extend_from_slice(&path_attrs);
                    update(&[], &all, &[])
                })
                .collect()
        }
    }
}

/// Withdraws `nlri` (one family, as for [`encode_update`]): IPv4 in the classic Withdrawn
/// Routes field, IPv6 in MP_UNREACH_NLRI, split to stay within 4096 bytes.
pub fn encode_withdraw(nlri: &[Nlri], codec: &Codec) -> Vec<Vec<u8>> {
    let Some((family, nlri)) = one_family(nlri) else {
        return Vec::new();
    };
    let add_path = codec.add_path_tx[family.index()];
    match family {
        Family::Ipv4Unicast => pack(&nlri, add_path, MAX_MESSAGE_LEN - UPDATE_OVERHEAD)
            .iter()
            .map(|chunk| update(chunk, &[], &[]))
            .collect(),
        Family::Ipv6Unicast => {
            let room = MAX_MESSAGE_LEN - UPDATE_OVERHEAD - LONG_ATTR_HEADER - 3;
            pack(&nlri, add_path, room)
                .iter()
                .map(|chunk| update(&[], &mp_unreach(family, chunk), &[]))
                .collect()
        }
    }
}

/// End-of-RIB (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an UPDATE with only an
/// empty MP_UNREACH_NLRI for other families.
pub fn encode_end_of_rib(family: Family) -> Vec<u8> {
    match family {
        Family::Ipv4Unicast => update(&[], &[], &[]),
        Family::Ipv6Unicast => update(&[], &mp_unreach(family, &[]), &[]),
    }
}

/// The family of the first prefix and the prefixes of that family.
fn one_family(nlri: &[Nlri]) -> Option<(Family, Vec<Nlri>)> {
    let family = Family::of(&nlri.first()?.prefix);
    debug_assert!(
        nlri.iter().all(|n| Family::of(&n.prefix) == family),
        "one UPDATE carries one family"
    );
    let same: Vec<Nlri> = nlri
        .iter()
        .filter(|n| Family::of(&n.prefix) == family)
        .copied()
        .collect();
    Some((family, same))
}

/// An UPDATE from its three fields (RFC 4271 §4.3).
fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + withdrawn.len() + attrs.len() + nlri.len());
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    message(msg_type::UPDATE, &body)
}

fn mp_unreach(family: Family, nlri: &[u8]) -> Vec<u8> {
    let mut value = afi_safi(family).to_vec();
    value.extend_from_slice(nlri);
    let mut out = Vec::with_capacity(value.len() + 4);
    push_attr(
        &mut out,
        known_flags(attr::MP_UNREACH_NLRI),
        attr::MP_UNREACH_NLRI,
        &value,
    );
    out
}

/// AFI and SAFI as MP_REACH_NLRI / MP_UNREACH_NLRI carry them (RFC 4760 §3).
fn afi_safi(family: Family) -> [u8; 3] {
    let (afi, safi) = family.afi_safi();
    let [a0, a1] = afi.to_be_bytes();
    [a0, a1, safi]
}

/// The IPv6 next hop field: 16 bytes of global address, 32 with the link-local one
/// (RFC 2545 §3). Without an IPv6 next hop the global one is written IPv4-mapped (RFC 4291
/// §2.5.5.2) or unspecified, so the bytes stay well-formed.
fn ipv6_next_hop(attrs: &Attrs) -> Vec<u8> {
    let global = match attrs.next_hop {
        Some(IpAddr::V6(a)) => a,
        Some(IpAddr::V4(a)) => a.to_ipv6_mapped(),
        None => Ipv6Addr::UNSPECIFIED,
    };
    let mut out = global.octets().to_vec();
    if let Some(ll) = attrs.link_local_next_hop {
        out.extend_from_slice(&ll.octets());
    }
    out
}

// ===== prefixes =====

/// How many bytes a prefix takes on the wire.
fn prefix_size(n: &Nlri, add_path: bool) -> usize {
    let path_id = if add_path { 4 } else { 0 };
    path_id + 1 + usize::from(n.prefix.prefix_len()).div_ceil(8)
}

/// A prefix as RFC 4271 §4.3 writes it, host bits cleared, after its path identifier when
/// ADD-PATH is on (RFC 7911 §3).
fn push_prefix(out: &mut Vec<u8>, n: &Nlri, add_path: bool) {
    if add_path {
        out.extend_from_slice(&n.path_id.to_be_bytes());
    }
    let len = n.prefix.prefix_len();
    let bytes = usize::from(len).div_ceil(8);
    out.push(len);
    match n.prefix.trunc() {
        ipnet::IpNet::V4(net) => out.extend_from_slice(&net.addr().octets()[..bytes]),
        ipnet::IpNet::V6(net) => out.extend_from_slice(&net.addr().octets()[..bytes]),
    }
}

/// Encoded prefixes in runs of at most `room` bytes, one run per message. Nothing at all
/// when not even one prefix fits.
fn pack(nlri: &[Nlri], add_path: bool, room: usize) -> Vec<Vec<u8>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for n in nlri {
        let size = prefix_size(n, add_path);
        if size > room {
            return Vec::new();
        }
        if run.len() + size > room {
            runs.push(std::mem::take(&mut run));
        }
        push_prefix(&mut run, n, add_path);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

// ===== path attributes (RFC 4271 §5, RFC 6793) =====

/// One attribute: flags, type, length, value; Extended Length only for values over 255
/// bytes. A value over 65535 bytes cannot be written; it is cut short in release builds,
/// and since it could never fit a message, [`pack`] then finds no room and nothing is sent.
fn push_attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    let flags = flags & !attr::EXTENDED_LENGTH;
    if let Ok(len) = u8::try_from(value.len()) {
        out.extend_from_slice(&[flags, code, len]);
        out.extend_from_slice(value);
    } else {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&[flags | attr::EXTENDED_LENGTH, code]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&value[..usize::from(len)]);
    }
}

/// The flags of an attribute birdd writes itself, from the table the decoder checks
/// against, so both sides agree.
fn known_flags(code: u8) -> u8 {
    attr::expected_flags(code).unwrap_or(attr::OPTIONAL | attr::TRANSITIVE)
}

/// A (flags, code, value) entry for an attribute birdd writes itself.
fn known(code: u8, value: Vec<u8>) -> (u8, u8, Vec<u8>) {
    (known_flags(code), code, value)
}

/// Every attribute but the MP ones, ordered by type code. `next_hop` is written as NEXT_HOP
/// (classic IPv4 NLRI only: RFC 4760 §3 says MP-only UPDATEs should not carry it).
fn path_attributes(attrs: &Attrs, codec: &Codec, next_hop: Option<Ipv4Addr>) -> Vec<u8> {
    let four = codec.four_octet_as;
    let mut list: Vec<(u8, u8, Vec<u8>)> = Vec::new();
    list.push(known(attr::ORIGIN, vec![attrs.origin as u8]));
    // AS_PATH is mandatory even when empty (towards iBGP peers).
    list.push(known(attr::AS_PATH, as_path_value(&attrs.as_path, four)));
    if let Some(nh) = next_hop {
        list.push(known(attr::NEXT_HOP, nh.octets().to_vec()));
    }
    if let Some(med) = attrs.med {
        list.push(known(attr::MED, med.to_be_bytes().to_vec()));
    }
    if let Some(lp) = attrs.local_pref {
        list.push(known(attr::LOCAL_PREF, lp.to_be_bytes().to_vec()));
    }
    if attrs.atomic_aggregate {
        list.push(known(attr::ATOMIC_AGGREGATE, Vec::new()));
    }
    if let Some((asn, addr)) = attrs.aggregator {
        list.push(known(attr::AGGREGATOR, aggregator_value(asn, addr, four)));
        if !four && asn > u32::from(u16::MAX) {
            list.push(known(
                attr::AS4_AGGREGATOR,
                aggregator_value(asn, addr, true),
            ));
        }
    }
    if !attrs.communities.is_empty() {
        let value = attrs
            .communities
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect();
        list.push(known(attr::COMMUNITIES, value));
    }
    if let Some(id) = attrs.originator_id {
        list.push(known(attr::ORIGINATOR_ID, id.octets().to_vec()));
    }
    if !attrs.cluster_list.is_empty() {
        let value = attrs.cluster_list.iter().flat_map(|c| c.octets()).collect();
        list.push(known(attr::CLUSTER_LIST, value));
    }
    if !four
        && attrs
            .as_path
            .flat()
            .iter()
            .any(|a| *a > u32::from(u16::MAX))
    {
        list.push(known(attr::AS4_PATH, as4_path_value(&attrs.as_path)));
    }
    if !attrs.large_communities.is_empty() {
        let value = attrs
            .large_communities
            .iter()
            .flat_map(|c| [c.0, c.1, c.2])
            .flat_map(u32::to_be_bytes)
            .collect();
        list.push(known(attr::LARGE_COMMUNITY, value));
    }
    for raw in &attrs.unknown {
        // An attribute we write ourselves cannot also be passed on raw: that would send it
        // twice, which the peer discards or resets for (RFC 7606 §3 g).
        if attr::expected_flags(raw.type_code).is_none() {
            list.push((raw.flags, raw.type_code, raw.value.clone()));
        }
    }
    list.sort_by_key(|(_, code, _)| *code);
    let mut out = Vec::new();
    for (flags, code, value) in &list {
        push_attr(&mut out, *flags, *code, value);
    }
    out
}

/// AS_PATH segments (RFC 4271 §4.3): at most 255 ASes each, so a longer one is split into
/// several of the same kind; empty segments are left out, since RFC 7606 §7.2 calls them
/// malformed. Towards a 2-octet peer an AS above 65535 is written as AS_TRANS.
fn as_path_value(path: &AsPath, four_octet: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for segment in &path.segments {
        let kind = match segment {
            AsSegment::Set(_) => 1,
            AsSegment::Sequence(_) => 2,
            AsSegment::ConfedSequence(_) => 3,
            AsSegment::ConfedSet(_) => 4,
        };
        for chunk in segment.asns().chunks(255) {
            out.extend_from_slice(&[kind, chunk.len() as u8]);
            for asn in chunk {
                if four_octet {
                    out.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let two = u16::try_from(*asn).unwrap_or(AS_TRANS as u16);
                    out.extend_from_slice(&two.to_be_bytes());
                }
            }
        }
    }
    out
}

/// AS4_PATH: the whole path with 4-octet numbers, without the confederation segments that
/// RFC 6793 §6 forbids in it.
fn as4_path_value(path: &AsPath) -> Vec<u8> {
    let kept = AsPath {
        segments: path
            .segments
            .iter()
            .filter(|s| matches!(s, AsSegment::Sequence(_) | AsSegment::Set(_)))
            .cloned()
            .collect(),
    };
    as_path_value(&kept, true)
}

/// AGGREGATOR / AS4_AGGREGATOR: the AS (2 octets, AS_TRANS if it does not fit, or 4) and
/// the aggregating speaker's address (RFC 4271 §5.1.7, RFC 6793 §3).
fn aggregator_value(asn: u32, addr: Ipv4Addr, four_octet: bool) -> Vec<u8> {
    let mut out = if four_octet {
        asn.to_be_bytes().to_vec()
    } else {
        u16::try_from(asn)
            .unwrap_or(AS_TRANS as u16)
            .to_be_bytes()
            .to_vec()
    };
    out.extend_from_slice(&addr.octets());
    out
}
