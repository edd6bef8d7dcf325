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
    let mut out = header(kind, HEADER_LEN + body.len());
    out.extend_from_slice(body);
    out
}

/// A message's header (marker, length, type), in a buffer with room for all `len` bytes of
/// the message.
fn header(kind: u8, len: usize) -> Vec<u8> {
    debug_assert!(len <= MAX_MESSAGE_LEN, "message of {len} bytes");
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0xFF; 16]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(kind);
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
    let Some(first) = nlri.first() else {
        return Vec::new();
    };
    let mut packer = UpdatePacker::announce(Family::of(&first.prefix), attrs, codec);
    nlri.iter().for_each(|n| packer.push(n));
    packer.finish()
}

/// Withdraws `nlri` (one family, as for [`encode_update`]): IPv4 in the classic Withdrawn
/// Routes field, IPv6 in MP_UNREACH_NLRI, split to stay within 4096 bytes.
pub fn encode_withdraw(nlri: &[Nlri], codec: &Codec) -> Vec<Vec<u8>> {
    let Some(first) = nlri.first() else {
        return Vec::new();
    };
    let mut packer = UpdatePacker::withdraw(Family::of(&first.prefix), codec);
    nlri.iter().for_each(|n| packer.push(n));
    packer.finish()
}

/// End-of-RIB (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an UPDATE with only an
/// empty MP_UNREACH_NLRI for other families.
pub fn encode_end_of_rib(family: Family) -> Vec<u8> {
    match family {
        Family::Ipv4Unicast => update(&[], None, &[], &[]),
        Family::Ipv6Unicast => update(
            &[],
            Some((attr::MP_UNREACH_NLRI, &[&afi_safi(family)[..]])),
            &[],
            &[],
        ),
    }
}

/// Prefixes of one family written into UPDATEs as they come, all announced with one set of
/// attributes or all withdrawn, each message as full as 4096 bytes allow: what
/// [`encode_update`] and [`encode_withdraw`] make of a list, for a caller whose prefixes are
/// spread over its own tables and need not be copied into a list first.
///
/// A prefix of another family is left out (debug builds assert); should one not fit even
/// in an empty message, nothing at all is sent, as for the functions above.
#[derive(Debug)]
pub struct UpdatePacker {
    family: Family,
    add_path: bool,
    frame: Frame,
    /// Bytes of prefixes one message has room for.
    room: usize,
    run: Vec<u8>,
    messages: Vec<Vec<u8>>,
    overflow: bool,
}

/// What goes around a run of prefixes.
#[derive(Debug)]
enum Frame {
    /// IPv4 in the Withdrawn Routes field, IPv6 in MP_UNREACH_NLRI.
    Withdraw,
    /// IPv4: the path attributes, then the prefixes in the NLRI field.
    Announce4 { path_attrs: Vec<u8> },
    /// IPv6: MP_REACH_NLRI (AFI/SAFI, next hop, the prefixes) before the path attributes
    /// (RFC 7606 §5.1).
    Announce6 {
        path_attrs: Vec<u8>,
        /// AFI, SAFI, next hop length, next hop, reserved byte.
        mp_head: Vec<u8>,
    },
}

impl UpdatePacker {
    /// Withdrawals of `family`.
    pub fn withdraw(family: Family, codec: &Codec) -> UpdatePacker {
        let room = match family {
            Family::Ipv4Unicast => MAX_MESSAGE_LEN - UPDATE_OVERHEAD,
            Family::Ipv6Unicast => MAX_MESSAGE_LEN - UPDATE_OVERHEAD - LONG_ATTR_HEADER - 3,
        };
        UpdatePacker::new(family, codec, Frame::Withdraw, room)
    }

    /// Announcements of `family` with `attrs`, written as [`encode_update`] says.
    pub fn announce(family: Family, attrs: &Attrs, codec: &Codec) -> UpdatePacker {
        let (frame, fixed) = match family {
            Family::Ipv4Unicast => {
                let next_hop = match attrs.next_hop {
                    Some(IpAddr::V4(a)) => Some(a),
                    _ => None,
                };
                let path_attrs = path_attributes(attrs, codec, next_hop);
                let fixed = path_attrs.len();
                (Frame::Announce4 { path_attrs }, fixed)
            }
            Family::Ipv6Unicast => {
                let path_attrs = path_attributes(attrs, codec, None);
                let next_hop = ipv6_next_hop(attrs);
                let mut mp_head = afi_safi(family).to_vec();
                mp_head.push(next_hop.len() as u8);
                mp_head.extend_from_slice(&next_hop);
                mp_head.push(0);
                let fixed = path_attrs.len() + LONG_ATTR_HEADER + mp_head.len();
                (
                    Frame::Announce6 {
                        path_attrs,
                        mp_head,
                    },
                    fixed,
                )
            }
        };
        let room = MAX_MESSAGE_LEN.saturating_sub(UPDATE_OVERHEAD + fixed);
        UpdatePacker::new(family, codec, frame, room)
    }

    fn new(family: Family, codec: &Codec, frame: Frame, room: usize) -> UpdatePacker {
        UpdatePacker {
            family,
            add_path: codec.add_path_tx[family.index()],
            frame,
            room,
            run: Vec::new(),
            messages: Vec::new(),
            overflow: false,
        }
    }

    pub fn push(&mut self, n: &Nlri) {
        if Family::of(&n.prefix) != self.family {
            debug_assert!(false, "one UPDATE carries one family");
            return;
        }
        let size = prefix_size(n, self.add_path);
        if size > self.room {
            self.overflow = true;
        }
        if self.overflow {
            return;
        }
        if self.run.len() + size > self.room {
            self.seal();
        }
        push_prefix(&mut self.run, n, self.add_path);
    }

    /// The messages, in order.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        if self.overflow {
            return Vec::new();
        }
        if !self.run.is_empty() {
            self.seal();
        }
        self.messages
    }

    fn seal(&mut self) {
        let run = &self.run[..];
        let msg = match &self.frame {
            Frame::Withdraw => match self.family {
                Family::Ipv4Unicast => update(run, None, &[], &[]),
                Family::Ipv6Unicast => update(
                    &[],
                    Some((attr::MP_UNREACH_NLRI, &[&afi_safi(self.family)[..], run])),
                    &[],
                    &[],
                ),
            },
            Frame::Announce4 { path_attrs } => update(&[], None, path_attrs, run),
            Frame::Announce6 {
                path_attrs,
                mp_head,
            } => update(
                &[],
                Some((attr::MP_REACH_NLRI, &[mp_head, run])),
                path_attrs,
                &[],
            ),
        };
        self.messages.push(msg);
        self.run.clear();
    }
}

/// An UPDATE (RFC 4271 §4.3), written once: the Withdrawn Routes field; the path
/// attributes, an MP attribute first when given (its code and the parts of its value), then
/// `attrs`; the NLRI field.
fn update(withdrawn: &[u8], mp: Option<(u8, &[&[u8]])>, attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mp_len: usize = mp.map_or(0, |(_, parts)| parts.iter().map(|p| p.len()).sum());
    let mp_header = match mp {
        None => 0,
        Some(_) if mp_len <= 255 => 3,
        Some(_) => LONG_ATTR_HEADER,
    };
    let attrs_len = mp_header + mp_len + attrs.len();
    let len = UPDATE_OVERHEAD + withdrawn.len() + attrs_len + nlri.len();
    let mut out = header(msg_type::UPDATE, len);
    out.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    out.extend_from_slice(withdrawn);
    out.extend_from_slice(&(attrs_len as u16).to_be_bytes());
    if let Some((code, parts)) = mp {
        push_attr_header(&mut out, known_flags(code), code, mp_len as u16);
        for part in parts {
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(attrs);
    out.extend_from_slice(nlri);
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

// ===== path attributes (RFC 4271 §5, RFC 6793) =====

/// One attribute: flags, type, length, value; Extended Length only for values over 255
/// bytes. A value over 65535 bytes cannot be written; it is cut short in release builds,
/// and since it could never fit a message, [`UpdatePacker`] then finds no room and nothing
/// is sent.
fn push_attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    push_attr_header(out, flags, code, len);
    out.extend_from_slice(&value[..usize::from(len)]);
}

/// An attribute's flags, type and length: one length byte, or two with Extended Length
/// when the value is over 255 bytes.
fn push_attr_header(out: &mut Vec<u8>, flags: u8, code: u8, len: u16) {
    let flags = flags & !attr::EXTENDED_LENGTH;
    match u8::try_from(len) {
        Ok(len) => out.extend_from_slice(&[flags, code, len]),
        Err(_) => {
            out.extend_from_slice(&[flags | attr::EXTENDED_LENGTH, code]);
            out.extend_from_slice(&len.to_be_bytes());
        }
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
