//! Bytes to messages: framing (RFC 4271 §4.1), OPEN with its capabilities (§4.2, RFC 5492,
//! RFC 9072), UPDATE with the multiprotocol and 4-octet AS attributes (§4.3, RFC 4760,
//! RFC 6793) under RFC 7606's revised error handling, NOTIFICATION, KEEPALIVE and
//! ROUTE-REFRESH (RFC 2918, RFC 7313).
//!
//! Nothing here trusts a length field: every read is bounds-checked, so a short or lying
//! buffer becomes the NOTIFICATION the RFCs name, never a panic. What must end the session
//! comes back as `Err`; what RFC 7606 lets the session survive is written into the
//! [`Update`] (`treat_as_withdraw`, `errors`) for the session layer to act on and log.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    AddPathMode, Capability, Codec, GracefulRestart, HEADER_LEN, MAX_MESSAGE_LEN, Message,
    Notification, Open, RouteRefresh, Update, msg_type,
};
use crate::types::{
    AS_TRANS, AsPath, AsSegment, Attrs, Family, LargeCommunity, Nlri, Origin, RawAttribute,
};

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

/// Path attribute type codes and flag bits (RFC 4271 §4.3 and the RFCs named per code),
/// shared with the encoder so both sides agree on one table.
pub(super) mod attr {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;

    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    /// RFC 1997.
    pub const COMMUNITIES: u8 = 8;
    /// RFC 4456.
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    /// RFC 4760.
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// RFC 6793.
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    /// RFC 8092.
    pub const LARGE_COMMUNITY: u8 = 32;

    /// The Optional and Transitive bits each known attribute must carry, or `None` for an
    /// attribute this codec does not interpret.
    pub fn expected_flags(code: u8) -> Option<u8> {
        const WELL_KNOWN: u8 = TRANSITIVE;
        const OPTIONAL_NON_TRANSITIVE: u8 = OPTIONAL;
        const OPTIONAL_TRANSITIVE: u8 = OPTIONAL | TRANSITIVE;
        Some(match code {
            ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => WELL_KNOWN,
            MED | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => {
                OPTIONAL_NON_TRANSITIVE
            }
            AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR | LARGE_COMMUNITY => {
                OPTIONAL_TRANSITIVE
            }
            _ => return None,
        })
    }

    /// The name operators read in logs (as in the RFCs and BIRD's output).
    pub fn name(code: u8) -> &'static str {
        match code {
            ORIGIN => "ORIGIN",
            AS_PATH => "AS_PATH",
            NEXT_HOP => "NEXT_HOP",
            MED => "MULTI_EXIT_DISC",
            LOCAL_PREF => "LOCAL_PREF",
            ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
            AGGREGATOR => "AGGREGATOR",
            COMMUNITIES => "COMMUNITIES",
            ORIGINATOR_ID => "ORIGINATOR_ID",
            CLUSTER_LIST => "CLUSTER_LIST",
            MP_REACH_NLRI => "MP_REACH_NLRI",
            MP_UNREACH_NLRI => "MP_UNREACH_NLRI",
            AS4_PATH => "AS4_PATH",
            AS4_AGGREGATOR => "AS4_AGGREGATOR",
            LARGE_COMMUNITY => "LARGE_COMMUNITY",
            _ => "unknown attribute",
        }
    }
}

// ===== framing (RFC 4271 §4.1, §6.1) =====

/// The length of the first message in `buf`, once its 19-byte header has arrived
/// (`Ok(None)` before that).
///
/// Checks what RFC 4271 §6.1 asks of a header: the all-ones marker, a length within
/// 19..=4096, a known type, and a length the type allows (OPEN ≥ 29, UPDATE ≥ 23,
/// NOTIFICATION ≥ 21, KEEPALIVE exactly 19, ROUTE-REFRESH ≥ 23). A ROUTE-REFRESH longer
/// than 23 passes here and is refused by [`decode_message`] with RFC 7313 §5's own
/// "Invalid Message Length" (7/1), which is the code that RFC asks for.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Notification> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let (marker, rest) = header.split_at(16);
    if marker.iter().any(|b| *b != 0xFF) {
        return Err(Notification::connection_not_synchronized());
    }
    let &[hi, lo, kind] = rest else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([hi, lo]);
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&usize::from(len)) {
        return Err(Notification::bad_message_length(len));
    }
    let (min, max) = length_bounds(kind).ok_or_else(|| Notification::bad_message_type(kind))?;
    if !(min..=max).contains(&usize::from(len)) {
        return Err(Notification::bad_message_length(len));
    }
    Ok(Some(usize::from(len)))
}

/// Smallest and largest length of each message type, header included (RFC 4271 §4, RFC
/// 2918 §3).
fn length_bounds(kind: u8) -> Option<(usize, usize)> {
    Some(match kind {
        msg_type::OPEN => (29, MAX_MESSAGE_LEN),
        msg_type::UPDATE => (23, MAX_MESSAGE_LEN),
        msg_type::NOTIFICATION => (21, MAX_MESSAGE_LEN),
        msg_type::KEEPALIVE => (HEADER_LEN, HEADER_LEN),
        msg_type::ROUTE_REFRESH => (23, MAX_MESSAGE_LEN),
        _ => return None,
    })
}

/// Decodes exactly one message, header included (`frame` is what [`frame_len`] measured).
///
/// `Err` is the NOTIFICATION to send before closing the session, with one exception:
/// **a NOTIFICATION with code 0 means "ignore this message, do not reset"**. Code 0 is no
/// error code on the wire (RFC 4271 §4.5 starts at 1), and it is returned for exactly one
/// case: a ROUTE-REFRESH for an AFI/SAFI we do not speak or with an unknown subtype, which
/// RFC 2918 §4 and RFC 7313 §5 say to ignore. Its data holds the four body bytes for the log.
pub fn decode_message(frame: &[u8], codec: &Codec) -> Result<Message, Notification> {
    let Some(len) = frame_len(frame)? else {
        // Shorter than a header: cannot be a message at all.
        return Err(Notification::bad_message_length(frame.len() as u16));
    };
    if len != frame.len() {
        // The header disagrees with the bytes we were given; frame_len bounds len to 4096.
        return Err(Notification::bad_message_length(len as u16));
    }
    let (header, body) = frame.split_at(HEADER_LEN);
    match header.last().copied().unwrap_or_default() {
        msg_type::OPEN => decode_open(body).map(Message::Open),
        msg_type::UPDATE => decode_update(body, codec).map(Message::Update),
        msg_type::NOTIFICATION => decode_notification(body).map(Message::Notification),
        msg_type::KEEPALIVE => Ok(Message::Keepalive),
        msg_type::ROUTE_REFRESH => decode_route_refresh(body).map(Message::RouteRefresh),
        other => Err(Notification::bad_message_type(other)),
    }
}

// ===== reading without panics =====

/// A cursor over a byte slice whose reads return `None` past the end, so each caller maps
/// running out of bytes to the NOTIFICATION (or RFC 7606 outcome) of its own field.
#[derive(Debug)]
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// A big-endian number of up to four bytes (2- and 4-octet AS numbers alike).
fn be_number(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b))
}

// ===== OPEN (RFC 4271 §4.2, RFC 5492, RFC 9072) =====

/// OPEN Message Error without a subcode: RFC 4271 §6.2 names none for an optional
/// parameter or capability whose lengths do not add up, and BIRD sends this one.
fn malformed_open() -> Notification {
    Notification::new(Notification::OPEN_MESSAGE, 0, [])
}

fn decode_open(body: &[u8]) -> Result<Open, Notification> {
    let mut r = Reader::new(body);
    // frame_len guarantees the 10 fixed bytes; the errors below cannot fire in practice.
    let version = r.u8().ok_or_else(malformed_open)?;
    if version != 4 {
        // Checked first: another version's OPEN need not have this layout.
        return Err(Notification::unsupported_version(4));
    }
    let my_as = r.u16().ok_or_else(malformed_open)?;
    let hold_time = r.u16().ok_or_else(malformed_open)?;
    let router_id = Ipv4Addr::from(r.u32().ok_or_else(malformed_open)?);
    let opt_len = r.u8().ok_or_else(malformed_open)?;
    // RFC 4271 §4.2: zero or at least three seconds.
    if matches!(hold_time, 1 | 2) {
        return Err(Notification::unacceptable_hold_time());
    }
    if router_id.is_unspecified() {
        return Err(Notification::bad_bgp_identifier());
    }
    let mut capabilities = Vec::new();
    for (kind, value) in optional_parameters(opt_len, r.rest())? {
        // Type 2 is the only optional parameter left in use (RFC 5492 §4; type 1,
        // authentication, was deprecated by RFC 5492 too).
        if kind != 2 {
            return Err(Notification::unsupported_optional_parameter());
        }
        read_capabilities(value, &mut capabilities)?;
    }
    // RFC 6793 §3: a 4-octet speaker's real AS is in the capability; my-AS holds AS_TRANS.
    let asn = capabilities
        .iter()
        .find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
        .unwrap_or(u32::from(my_as));
    Ok(Open {
        version,
        asn,
        hold_time,
        router_id,
        capabilities,
    })
}

/// Splits the optional parameters into (type, value), in RFC 4271's one-octet-length form
/// or RFC 9072's extended form (announced by a length of 255 followed by type 255).
fn optional_parameters(opt_len: u8, params: &[u8]) -> Result<Vec<(u8, &[u8])>, Notification> {
    // A parameter length that disagrees with the message length is a length error, as BIRD
    // reports it (1/2 with the message length); frame_len capped the length at 4096.
    let bad_length = || Notification::bad_message_length((params.len() + 29) as u16);
    let extended = opt_len == 255 && params.first() == Some(&255);
    let mut r = Reader::new(params);
    if extended {
        r.take(1);
        let ext_len = r.u16().ok_or_else(bad_length)?;
        if usize::from(ext_len) != r.buf.len() {
            return Err(bad_length());
        }
    } else if usize::from(opt_len) != params.len() {
        return Err(bad_length());
    }
    let mut out = Vec::new();
    while !r.is_empty() {
        let kind = r.u8().ok_or_else(malformed_open)?;
        let len = if extended {
            r.u16()
        } else {
            r.u8().map(u16::from)
        };
        let len = len.ok_or_else(malformed_open)?;
        let value = r.take(usize::from(len)).ok_or_else(malformed_open)?;
        out.push((kind, value));
    }
    Ok(out)
}

/// Reads every capability in one parameter (a parameter may carry several, and a speaker
/// may send several parameters: RFC 5492 §4).
fn read_capabilities(param: &[u8], out: &mut Vec<Capability>) -> Result<(), Notification> {
    let mut r = Reader::new(param);
    while !r.is_empty() {
        let code = r.u8().ok_or_else(malformed_open)?;
        let len = r.u8().ok_or_else(malformed_open)?;
        let value = r.take(usize::from(len)).ok_or_else(malformed_open)?;
        out.push(capability(code, value)?);
    }
    Ok(())
}

/// One capability. A known capability with the wrong length is a malformed OPEN (2/0),
/// as BIRD treats it; anything we do not know is kept as `Unknown` and ignored.
fn capability(code: u8, value: &[u8]) -> Result<Capability, Notification> {
    Ok(match code {
        // RFC 4760 §8: AFI, reserved, SAFI.
        1 => {
            let [a0, a1, _reserved, safi] =
                <[u8; 4]>::try_from(value).map_err(|_| malformed_open())?;
            match Family::from_afi_safi(u16::from_be_bytes([a0, a1]), safi) {
                Some(family) => Capability::MultiProtocol(family),
                None => Capability::Unknown {
                    code,
                    value: value.to_vec(),
                },
            }
        }
        2 if value.is_empty() => Capability::RouteRefresh,
        64 => Capability::GracefulRestart(graceful_restart(value)?),
        65 => {
            let asn = <[u8; 4]>::try_from(value).map_err(|_| malformed_open())?;
            Capability::FourOctetAs(u32::from_be_bytes(asn))
        }
        69 => Capability::AddPath(add_path(value)?),
        70 if value.is_empty() => Capability::EnhancedRouteRefresh,
        2 | 70 => return Err(malformed_open()),
        _ => Capability::Unknown {
            code,
            value: value.to_vec(),
        },
    })
}

/// RFC 4724 §3: restart flags in the top nibble (R = 0x8, N = 0x4 from RFC 8538), a
/// 12-bit restart time, then (AFI, SAFI, flags) per family with 0x80 = forwarding
/// preserved. Families we do not speak are skipped.
fn graceful_restart(value: &[u8]) -> Result<GracefulRestart, Notification> {
    let mut r = Reader::new(value);
    let head = r.u16().ok_or_else(malformed_open)?;
    let tuples = r.rest();
    if !tuples.len().is_multiple_of(4) {
        return Err(malformed_open());
    }
    let families = tuples
        .chunks_exact(4)
        .filter_map(|t| match *t {
            [a0, a1, safi, flags] => Family::from_afi_safi(u16::from_be_bytes([a0, a1]), safi)
                .map(|f| (f, flags & 0x80 != 0)),
            _ => None,
        })
        .collect();
    Ok(GracefulRestart {
        restarting: head & 0x8000 != 0,
        notification: head & 0x4000 != 0,
        time: head & 0x0FFF,
        families,
    })
}

/// RFC 7911 §4: (AFI, SAFI, send/receive) per family; families we do not speak are
/// skipped, a send/receive value outside 1..=3 makes the capability malformed.
fn add_path(value: &[u8]) -> Result<Vec<(Family, AddPathMode)>, Notification> {
    if !value.len().is_multiple_of(4) {
        return Err(malformed_open());
    }
    let mut out = Vec::new();
    for t in value.chunks_exact(4) {
        let &[a0, a1, safi, mode] = t else {
            return Err(malformed_open());
        };
        let mode = match mode {
            1 => AddPathMode::Receive,
            2 => AddPathMode::Send,
            3 => AddPathMode::Both,
            _ => return Err(malformed_open()),
        };
        if let Some(family) = Family::from_afi_safi(u16::from_be_bytes([a0, a1]), safi) {
            out.push((family, mode));
        }
    }
    Ok(out)
}

// ===== UPDATE (RFC 4271 §4.3, RFC 4760, RFC 7606) =====

/// A prefix field could not be read (length beyond the family's maximum, or cut short).
/// The NOTIFICATION depends on where the prefix was, so the caller chooses it.
#[derive(Debug)]
struct BadPrefix;

/// How many prefixes a run of them holds, reading only each one's length; at most one per
/// octet of `field`, however it is malformed (`read_prefixes` finds what is wrong).
fn count_prefixes(field: &[u8], add_path: bool) -> usize {
    let path_id = if add_path { 4 } else { 0 };
    let (mut at, mut n) = (0, 0);
    while let Some(&len) = field.get(at + path_id) {
        at += path_id + 1 + usize::from(len).div_ceil(8);
        n += 1;
    }
    n
}

/// Reads a run of prefixes (RFC 4271 §4.3: a length in bits, then just enough octets), each
/// preceded by a 4-byte path identifier when ADD-PATH is on (RFC 7911 §3). Host bits past
/// the length are cleared, so two spellings of one prefix compare equal.
fn read_prefixes(field: &[u8], family: Family, add_path: bool) -> Result<Vec<Nlri>, BadPrefix> {
    let mut r = Reader::new(field);
    // Sized by a first pass over the length octets: a vector grown one push at a time was
    // reallocated eight times for an UPDATE of a thousand prefixes, each time copied into
    // fresh memory, and that was half of what the session threads did with a table coming in.
    let mut out = Vec::with_capacity(count_prefixes(field, add_path));
    while !r.is_empty() {
        let path_id = if add_path {
            r.u32().ok_or(BadPrefix)?
        } else {
            0
        };
        let len = r.u8().ok_or(BadPrefix)?;
        let max = match family {
            Family::Ipv4Unicast => 32,
            Family::Ipv6Unicast => 128,
        };
        if len > max {
            return Err(BadPrefix);
        }
        let bytes = r.take(usize::from(len).div_ceil(8)).ok_or(BadPrefix)?;
        let prefix = match family {
            Family::Ipv4Unicast => {
                let mut octets = [0u8; 4];
                fill(&mut octets, bytes)?;
                IpNet::V4(
                    Ipv4Net::new(octets.into(), len)
                        .map_err(|_| BadPrefix)?
                        .trunc(),
                )
            }
            Family::Ipv6Unicast => {
                let mut octets = [0u8; 16];
                fill(&mut octets, bytes)?;
                IpNet::V6(
                    Ipv6Net::new(octets.into(), len)
                        .map_err(|_| BadPrefix)?
                        .trunc(),
                )
            }
        };
        out.push(Nlri { prefix, path_id });
    }
    Ok(out)
}

fn fill(octets: &mut [u8], bytes: &[u8]) -> Result<(), BadPrefix> {
    octets
        .get_mut(..bytes.len())
        .ok_or(BadPrefix)?
        .copy_from_slice(bytes);
    Ok(())
}

/// The three variable fields of an UPDATE body: withdrawn routes, path attributes, NLRI.
type UpdateFields<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Splits an UPDATE body into its three variable fields. RFC 4271 §6.3 makes lengths
/// that overrun the message a Malformed Attribute List, and RFC 7606 §4 keeps that a
/// session reset: without them nothing after can be located.
fn split_update(body: &[u8]) -> Result<UpdateFields<'_>, Notification> {
    let malformed = Notification::malformed_attribute_list;
    let mut r = Reader::new(body);
    let withdrawn_len = r.u16().ok_or_else(malformed)?;
    let withdrawn = r.take(usize::from(withdrawn_len)).ok_or_else(malformed)?;
    let attrs_len = r.u16().ok_or_else(malformed)?;
    let attrs = r.take(usize::from(attrs_len)).ok_or_else(malformed)?;
    Ok((withdrawn, attrs, r.rest()))
}

fn decode_update(body: &[u8], codec: &Codec) -> Result<Update, Notification> {
    let (withdrawn_field, attr_field, nlri_field) = split_update(body)?;
    if withdrawn_field.is_empty() && attr_field.is_empty() && nlri_field.is_empty() {
        // RFC 4724 §2: the IPv4 unicast End-of-RIB is an UPDATE with nothing in it.
        return Ok(Update {
            end_of_rib: Some(Family::Ipv4Unicast),
            ..Update::default()
        });
    }
    // RFC 7606 §5.3: a malformed prefix in the classic fields leaves no way to tell which
    // routes were meant, so the session is reset.
    let v4_add_path = codec.add_path_rx[Family::Ipv4Unicast.index()];
    let withdrawn = read_prefixes(withdrawn_field, Family::Ipv4Unicast, v4_add_path)
        .map_err(|_| Notification::invalid_network_field())?;
    let classic = read_prefixes(nlri_field, Family::Ipv4Unicast, v4_add_path)
        .map_err(|_| Notification::invalid_network_field())?;
    let mut parser = AttrParser::new(codec);
    parser.parse(attr_field)?;
    parser.merge_as4();
    Ok(parser.into_update(withdrawn, classic))
}

/// The announcements of an MP_REACH_NLRI with their next hop (RFC 4760 §3, RFC 2545 §3).
#[derive(Debug)]
struct MpReach {
    family: Family,
    next_hop: IpAddr,
    link_local: Option<Ipv6Addr>,
    nlri: Vec<Nlri>,
}

/// Reads the path attributes of one UPDATE and collects the RFC 7606 outcome as it goes:
/// session reset is returned as `Err` at once (it is the strongest outcome, RFC 7606 §3 h),
/// treat-as-withdraw sets a flag, attribute-discard only leaves a note.
#[derive(Debug)]
struct AttrParser<'c> {
    codec: &'c Codec,
    attrs: Attrs,
    /// Which type codes have been met, to find duplicates (RFC 7606 §3 g) and missing
    /// mandatory attributes (RFC 7606 §3 d).
    seen: [bool; 256],
    /// How many attributes the UPDATE carried, and whether any was not MP_UNREACH_NLRI
    /// (End-of-RIB detection and `Update::attrs`).
    count: usize,
    any_but_unreach: bool,
    /// The NEXT_HOP attribute and what was wrong with it, decided on only once we know
    /// whether classic NLRI needs it (RFC 4760 §3: otherwise it is ignored).
    next_hop: Option<Ipv4Addr>,
    next_hop_problem: Option<String>,
    reach: Option<MpReach>,
    unreach: Option<(Family, Vec<Nlri>)>,
    as4_path: Option<AsPath>,
    as4_aggregator: Option<(u32, Ipv4Addr)>,
    treat_as_withdraw: bool,
    errors: Vec<String>,
}

impl<'c> AttrParser<'c> {
    fn new(codec: &'c Codec) -> AttrParser<'c> {
        AttrParser {
            codec,
            attrs: Attrs::default(),
            seen: [false; 256],
            count: 0,
            any_but_unreach: false,
            next_hop: None,
            next_hop_problem: None,
            reach: None,
            unreach: None,
            as4_path: None,
            as4_aggregator: None,
            treat_as_withdraw: false,
            errors: Vec::new(),
        }
    }

    /// RFC 7606 treat-as-withdraw: the UPDATE's announcements count as withdrawals.
    fn withdraw(&mut self, problem: String) {
        self.treat_as_withdraw = true;
        self.errors
            .push(format!("{problem}: announced routes treated as withdrawn"));
    }

    /// RFC 7606 attribute-discard: the attribute is dropped, the routes stand.
    fn discard(&mut self, problem: String) {
        self.errors.push(format!("{problem}: attribute discarded"));
    }

    /// Walks the attribute section. An attribute whose header or length runs past the
    /// section resets the session with Malformed Attribute List. RFC 7606 §4 would allow
    /// treat-as-withdraw here, but only if every MP_REACH_NLRI / MP_UNREACH_NLRI had been
    /// parsed (§5.1 leaves their position to the sender), and the unread tail may hold one
    /// whose routes we could then neither install nor withdraw.
    fn parse(&mut self, section: &[u8]) -> Result<(), Notification> {
        let malformed = Notification::malformed_attribute_list;
        let mut r = Reader::new(section);
        while !r.is_empty() {
            let flags = r.u8().ok_or_else(malformed)?;
            let code = r.u8().ok_or_else(malformed)?;
            let len = if flags & attr::EXTENDED_LENGTH != 0 {
                r.u16()
            } else {
                r.u8().map(u16::from)
            };
            let len = len.ok_or_else(malformed)?;
            let value = r.take(usize::from(len)).ok_or_else(malformed)?;
            self.attribute(flags, code, value)?;
        }
        Ok(())
    }

    fn attribute(&mut self, flags: u8, code: u8, value: &[u8]) -> Result<(), Notification> {
        self.count += 1;
        self.any_but_unreach |= code != attr::MP_UNREACH_NLRI;
        let first = !std::mem::replace(&mut self.seen[usize::from(code)], true);
        if !first {
            // RFC 7606 §3 g: a repeated MP attribute resets, any other repeat is dropped.
            if matches!(code, attr::MP_REACH_NLRI | attr::MP_UNREACH_NLRI) {
                return Err(Notification::malformed_attribute_list());
            }
            self.discard(format!(
                "{} (type {code}) appears more than once",
                attr::name(code)
            ));
            return Ok(());
        }
        let Some(expected) = attr::expected_flags(code) else {
            self.unknown(flags, code, value);
            return Ok(());
        };
        if flags & (attr::OPTIONAL | attr::TRANSITIVE) != expected {
            let problem = format!(
                "{}: attribute flags {flags:#04x} (RFC 7606 §3 c)",
                attr::name(code)
            );
            if matches!(code, attr::AS4_PATH | attr::AS4_AGGREGATOR) {
                // RFC 6793 §6 handles every malformed AS4 attribute by discarding it.
                self.discard(problem);
                return Ok(());
            }
            self.withdraw(problem);
            // The MP attributes are still read: they name the routes to withdraw.
            if !matches!(code, attr::MP_REACH_NLRI | attr::MP_UNREACH_NLRI) {
                return Ok(());
            }
        }
        self.known(code, value)
    }

    fn known(&mut self, code: u8, value: &[u8]) -> Result<(), Notification> {
        match code {
            attr::ORIGIN => self.origin(value),
            attr::AS_PATH => self.as_path(value),
            attr::NEXT_HOP => self.next_hop(value),
            attr::MED => self.attrs.med = self.four_bytes(code, value, "§7.4"),
            attr::LOCAL_PREF => self.attrs.local_pref = self.four_bytes(code, value, "§7.5"),
            attr::ATOMIC_AGGREGATE => self.atomic_aggregate(value),
            attr::AGGREGATOR => self.aggregator(value),
            attr::COMMUNITIES => {
                self.attrs.communities = self
                    .list(code, value, 4, "RFC 7606 §7.8")
                    .map(be_number)
                    .collect();
            }
            attr::ORIGINATOR_ID => {
                self.attrs.originator_id = self.four_bytes(code, value, "§7.9").map(Ipv4Addr::from);
            }
            attr::CLUSTER_LIST => {
                self.attrs.cluster_list = self
                    .list(code, value, 4, "RFC 7606 §7.10")
                    .map(|c| Ipv4Addr::from(be_number(c)))
                    .collect();
            }
            attr::LARGE_COMMUNITY => {
                self.attrs.large_communities = self
                    .list(code, value, 12, "RFC 8092 §6")
                    .map(|c| {
                        let (a, rest) = c.split_at(4);
                        let (b, d) = rest.split_at(4);
                        LargeCommunity(be_number(a), be_number(b), be_number(d))
                    })
                    .collect();
            }
            attr::MP_REACH_NLRI => return self.mp_reach(value),
            attr::MP_UNREACH_NLRI => return self.mp_unreach(value),
            attr::AS4_PATH => self.as4_path(value),
            attr::AS4_AGGREGATOR => self.as4_aggregator(value),
            _ => {}
        }
        Ok(())
    }

    /// RFC 4271 §5: an optional transitive attribute we do not know is passed on with
    /// Partial set, an optional non-transitive one is dropped quietly. An unknown
    /// well-known attribute resets the session under RFC 4271 §6.3 (3/2); RFC 7606 does not
    /// revise that case, and we take its general preference (§2) for treat-as-withdraw over
    /// a reset when the rest of the message can still be read.
    fn unknown(&mut self, flags: u8, code: u8, value: &[u8]) {
        if flags & attr::OPTIONAL == 0 {
            self.withdraw(format!("unrecognized well-known attribute type {code}"));
        } else if flags & attr::TRANSITIVE != 0 {
            self.attrs.unknown.push(RawAttribute {
                flags: (flags & (attr::OPTIONAL | attr::TRANSITIVE)) | attr::PARTIAL,
                type_code: code,
                value: value.to_vec(),
            });
        }
    }

    /// RFC 7606 §7.1: a wrong length or an undefined value is treat-as-withdraw.
    fn origin(&mut self, value: &[u8]) {
        match value {
            [0] => self.attrs.origin = Origin::Igp,
            [1] => self.attrs.origin = Origin::Egp,
            [2] => self.attrs.origin = Origin::Incomplete,
            [other] => self.withdraw(format!("ORIGIN: undefined value {other} (RFC 7606 §7.1)")),
            _ => self.withdraw(format!(
                "ORIGIN: length {}, expected 1 (RFC 7606 §7.1)",
                value.len()
            )),
        }
    }

    fn as_path(&mut self, value: &[u8]) {
        match read_as_path(value, self.codec.four_octet_as) {
            Ok(path) => self.attrs.as_path = path,
            Err(why) => self.withdraw(format!("AS_PATH: {why} (RFC 7606 §7.2)")),
        }
    }

    /// RFC 7606 §7.3: a wrong length or an address that cannot be a host (0.0.0.0,
    /// multicast, broadcast; RFC 4271 §6.3) is treat-as-withdraw, decided in
    /// [`AttrParser::into_update`] once we know classic NLRI needs it.
    fn next_hop(&mut self, value: &[u8]) {
        let Ok(octets) = <[u8; 4]>::try_from(value) else {
            self.next_hop_problem = Some(format!(
                "NEXT_HOP: length {}, expected 4 (RFC 7606 §7.3)",
                value.len()
            ));
            return;
        };
        let addr = Ipv4Addr::from(octets);
        if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
            self.next_hop_problem = Some(format!(
                "NEXT_HOP: {addr} is not a host address (RFC 7606 §7.3)"
            ));
            return;
        }
        self.next_hop = Some(addr);
    }

    /// MULTI_EXIT_DISC, LOCAL_PREF and ORIGINATOR_ID: exactly four bytes, else
    /// treat-as-withdraw (RFC 7606 §7.4, §7.5, §7.9). Whether LOCAL_PREF may come from this
    /// peer at all (§7.5: not from eBGP) is the session layer's call, not the codec's.
    fn four_bytes(&mut self, code: u8, value: &[u8], section: &str) -> Option<u32> {
        match <[u8; 4]>::try_from(value) {
            Ok(b) => Some(u32::from_be_bytes(b)),
            Err(_) => {
                self.withdraw(format!(
                    "{}: length {}, expected 4 (RFC 7606 {section})",
                    attr::name(code),
                    value.len()
                ));
                None
            }
        }
    }

    /// COMMUNITIES, CLUSTER_LIST and LARGE_COMMUNITY: a non-zero multiple of `unit` bytes,
    /// else treat-as-withdraw; yields nothing in that case.
    fn list<'v>(
        &mut self,
        code: u8,
        value: &'v [u8],
        unit: usize,
        rfc: &str,
    ) -> std::slice::ChunksExact<'v, u8> {
        if value.is_empty() || !value.len().is_multiple_of(unit) {
            self.withdraw(format!(
                "{}: length {} is not a non-zero multiple of {unit} ({rfc})",
                attr::name(code),
                value.len()
            ));
            return [].chunks_exact(unit);
        }
        value.chunks_exact(unit)
    }

    /// RFC 7606 §7.6: any length but 0 is attribute-discard.
    fn atomic_aggregate(&mut self, value: &[u8]) {
        if value.is_empty() {
            self.attrs.atomic_aggregate = true;
        } else {
            self.discard(format!(
                "ATOMIC_AGGREGATE: length {}, expected 0 (RFC 7606 §7.6)",
                value.len()
            ));
        }
    }

    /// RFC 7606 §7.7: 6 bytes between 2-octet speakers, 8 between 4-octet ones (RFC 6793
    /// §3); another length is attribute-discard.
    fn aggregator(&mut self, value: &[u8]) {
        let width = if self.codec.four_octet_as { 4 } else { 2 };
        if value.len() != width + 4 {
            self.discard(format!(
                "AGGREGATOR: length {}, expected {} (RFC 7606 §7.7)",
                value.len(),
                width + 4
            ));
            return;
        }
        let (asn, addr) = value.split_at(width);
        self.attrs.aggregator = Some((be_number(asn), Ipv4Addr::from(be_number(addr))));
    }

    /// MP_REACH_NLRI (RFC 4760 §3). A family we do not speak is ignored (RFC 4760 §7 lets
    /// a speaker drop what it did not negotiate). Anything unreadable, including a next hop
    /// length the family does not allow, resets with Optional Attribute Error: RFC 7606
    /// §7.11 asks for session reset (or AFI/SAFI disable, which we do not implement) because
    /// the routes to withdraw cannot be known, and RFC 4760 §7 names the subcode.
    fn mp_reach(&mut self, value: &[u8]) -> Result<(), Notification> {
        let bad = Notification::optional_attribute_error;
        let mut r = Reader::new(value);
        let afi = r.u16().ok_or_else(bad)?;
        let safi = r.u8().ok_or_else(bad)?;
        let Some(family) = Family::from_afi_safi(afi, safi) else {
            self.errors.push(format!(
                "MP_REACH_NLRI for AFI {afi} SAFI {safi} ignored: address family not supported"
            ));
            return Ok(());
        };
        let nh_len = r.u8().ok_or_else(bad)?;
        let nh = r.take(usize::from(nh_len)).ok_or_else(bad)?;
        // The reserved octet (once the SNPA count, RFC 4760 §3) is ignored on receipt.
        r.u8().ok_or_else(bad)?;
        let (next_hop, link_local) = mp_next_hop(family, nh).ok_or_else(bad)?;
        let add_path = self.codec.add_path_rx[family.index()];
        let nlri = read_prefixes(r.rest(), family, add_path).map_err(|_| bad())?;
        let unusable = match next_hop {
            IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
            IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
        };
        if unusable && !nlri.is_empty() {
            self.withdraw(format!(
                "MP_REACH_NLRI: next hop {next_hop} is not a host address (RFC 7606 §7.11)"
            ));
        }
        self.reach = Some(MpReach {
            family,
            next_hop,
            link_local,
            nlri,
        });
        Ok(())
    }

    /// MP_UNREACH_NLRI (RFC 4760 §4), with the same handling as [`AttrParser::mp_reach`].
    fn mp_unreach(&mut self, value: &[u8]) -> Result<(), Notification> {
        let bad = Notification::optional_attribute_error;
        let mut r = Reader::new(value);
        let afi = r.u16().ok_or_else(bad)?;
        let safi = r.u8().ok_or_else(bad)?;
        let Some(family) = Family::from_afi_safi(afi, safi) else {
            self.errors.push(format!(
                "MP_UNREACH_NLRI for AFI {afi} SAFI {safi} ignored: address family not supported"
            ));
            return Ok(());
        };
        let add_path = self.codec.add_path_rx[family.index()];
        let nlri = read_prefixes(r.rest(), family, add_path).map_err(|_| bad())?;
        self.unreach = Some((family, nlri));
        Ok(())
    }

    /// AS4_PATH (RFC 6793 §3): only meaningful from a 2-octet peer; from a 4-octet peer it
    /// is ignored (§4.1). Malformed is attribute-discard (§6), and confederation segments,
    /// which must never appear in it, are dropped with the rest kept (§6).
    fn as4_path(&mut self, value: &[u8]) {
        if self.codec.four_octet_as {
            self.discard("AS4_PATH from a 4-octet AS peer (RFC 6793 §4.1)".to_string());
            return;
        }
        match read_as_path(value, true) {
            Ok(mut path) => {
                let before = path.segments.len();
                path.segments
                    .retain(|s| matches!(s, AsSegment::Sequence(_) | AsSegment::Set(_)));
                if path.segments.len() != before {
                    self.errors
                        .push("AS4_PATH: confederation segments dropped (RFC 6793 §6)".to_string());
                }
                self.as4_path = Some(path);
            }
            Err(why) => self.discard(format!("AS4_PATH: {why} (RFC 6793 §6)")),
        }
    }

    /// AS4_AGGREGATOR (RFC 6793 §3): 8 bytes from a 2-octet peer, else discarded.
    fn as4_aggregator(&mut self, value: &[u8]) {
        if self.codec.four_octet_as {
            self.discard("AS4_AGGREGATOR from a 4-octet AS peer (RFC 6793 §4.1)".to_string());
            return;
        }
        if value.len() != 8 {
            self.discard(format!(
                "AS4_AGGREGATOR: length {}, expected 8 (RFC 6793 §6)",
                value.len()
            ));
            return;
        }
        let (asn, addr) = value.split_at(4);
        self.as4_aggregator = Some((be_number(asn), Ipv4Addr::from(be_number(addr))));
    }

    /// RFC 6793 §4.2.3: rebuild the 4-octet path a 2-octet peer could only carry in
    /// AS4_PATH / AS4_AGGREGATOR.
    fn merge_as4(&mut self) {
        let as4_path = self.as4_path.take();
        let as4_aggregator = self.as4_aggregator.take();
        if as4_path.is_none() && as4_aggregator.is_none() {
            return;
        }
        if let Some((asn, _)) = self.attrs.aggregator
            && asn != AS_TRANS
        {
            // A 2-octet speaker aggregated after the AS4 attributes were written, so they
            // describe a path that no longer exists.
            self.errors.push(
                "AS4_PATH/AS4_AGGREGATOR ignored: AGGREGATOR is not AS_TRANS (RFC 6793 §4.2.3)"
                    .to_string(),
            );
            return;
        }
        if let Some(aggregator) = as4_aggregator {
            if self.attrs.aggregator.is_some() {
                self.attrs.aggregator = Some(aggregator);
            } else {
                self.errors
                    .push("AS4_AGGREGATOR without AGGREGATOR ignored (RFC 6793 §4.2.3)".into());
            }
        }
        let Some(as4_path) = as4_path else { return };
        if !self.seen[usize::from(attr::AS_PATH)] {
            return;
        }
        match merge_as4_path(&self.attrs.as_path, &as4_path) {
            Some(merged) => self.attrs.as_path = merged,
            None => self
                .errors
                .push("AS4_PATH ignored: longer than AS_PATH (RFC 6793 §4.2.3)".to_string()),
        }
    }

    /// Puts the UPDATE together: which announcements stand, which next hop they use, and
    /// whether a mandatory attribute is missing (RFC 7606 §3 d).
    fn into_update(mut self, mut withdrawn: Vec<Nlri>, classic: Vec<Nlri>) -> Update {
        let mut announced = classic;
        let from_classic = !announced.is_empty();
        self.attrs.next_hop = self.next_hop.map(IpAddr::V4);
        if let Some(reach) = self.reach.take() {
            if from_classic && !reach.nlri.is_empty() {
                // One Attrs carries one next hop; BIRD, GoBGP and FRR never send both
                // kinds in one UPDATE, so the MP routes are withdrawn rather than guessed at.
                // Only those routes: the classic ones and their NEXT_HOP are sound.
                self.errors.push(format!(
                    "MP_REACH_NLRI ({}) in an UPDATE that also has IPv4 NLRI: its routes \
                     treated as withdrawn",
                    reach.family
                ));
                withdrawn.extend(reach.nlri);
            } else if !reach.nlri.is_empty() {
                // RFC 4760 §3: with only MP_REACH_NLRI routes, NEXT_HOP is ignored.
                self.attrs.next_hop = Some(reach.next_hop);
                self.attrs.link_local_next_hop = reach.link_local;
                self.next_hop_problem = None;
                announced = reach.nlri;
            }
        }
        if from_classic && let Some(problem) = self.next_hop_problem.take() {
            self.withdraw(problem);
        }
        if !announced.is_empty() {
            self.check_mandatory(from_classic);
        }
        let mut end_of_rib = None;
        if let Some((family, nlri)) = self.unreach {
            // RFC 4724 §2: an UPDATE with only an empty MP_UNREACH_NLRI ends the family's RIB.
            if self.count == 1 && nlri.is_empty() && withdrawn.is_empty() && announced.is_empty() {
                end_of_rib = Some(family);
            }
            withdrawn.extend(nlri);
        }
        Update {
            withdrawn,
            announced,
            attrs: self.any_but_unreach.then_some(self.attrs),
            treat_as_withdraw: self.treat_as_withdraw,
            errors: self.errors,
            end_of_rib,
        }
    }

    /// RFC 7606 §3 d: ORIGIN and AS_PATH always, NEXT_HOP for classic NLRI (RFC 4760 §3
    /// makes it optional for MP_REACH_NLRI routes). An attribute that was present but
    /// malformed has already been handled, so it is not reported twice.
    fn check_mandatory(&mut self, from_classic: bool) {
        for code in [attr::ORIGIN, attr::AS_PATH, attr::NEXT_HOP] {
            if code == attr::NEXT_HOP && !from_classic {
                continue;
            }
            if !self.seen[usize::from(code)] {
                self.withdraw(format!(
                    "mandatory attribute {} missing (RFC 7606 §3 d)",
                    attr::name(code)
                ));
            }
        }
    }
}

/// An AS_PATH or AS4_PATH (RFC 4271 §4.3, RFC 5065 §3 for the confederation kinds), AS
/// numbers 2 or 4 bytes wide. The error says what RFC 7606 §7.2 found malformed.
fn read_as_path(value: &[u8], four_octet: bool) -> Result<AsPath, String> {
    let width = if four_octet { 4 } else { 2 };
    let mut r = Reader::new(value);
    let mut segments = Vec::new();
    while !r.is_empty() {
        let (Some(kind), Some(count)) = (r.u8(), r.u8()) else {
            return Err("segment header cut short".to_string());
        };
        if count == 0 {
            return Err("segment of length zero".to_string());
        }
        let bytes = r
            .take(usize::from(count) * width)
            .ok_or_else(|| "segment overruns the attribute".to_string())?;
        let asns: Vec<u32> = bytes.chunks_exact(width).map(be_number).collect();
        segments.push(match kind {
            1 => AsSegment::Set(asns),
            2 => AsSegment::Sequence(asns),
            3 => AsSegment::ConfedSequence(asns),
            4 => AsSegment::ConfedSet(asns),
            other => return Err(format!("unknown segment type {other}")),
        });
    }
    Ok(AsPath { segments })
}

/// RFC 6793 §4.2.3: when AS_PATH is at least as long as AS4_PATH (by the decision
/// process's count), the leading AS_PATH numbers that AS4_PATH lacks (added by 2-octet
/// speakers since) are put before AS4_PATH; a confederation segment is kept if it leads or
/// follows one that was kept. `None` when AS4_PATH is the longer, which means it is stale.
fn merge_as4_path(as_path: &AsPath, as4_path: &AsPath) -> Option<AsPath> {
    let mut need = as_path
        .decision_len()
        .checked_sub(as4_path.decision_len())?;
    let mut segments = Vec::new();
    for segment in &as_path.segments {
        match segment {
            // Reached only while the walk goes on, so this segment either leads or follows
            // one that was kept.
            AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => {
                segments.push(segment.clone());
            }
            _ if need == 0 => break,
            AsSegment::Set(_) => {
                segments.push(segment.clone());
                need -= 1;
            }
            AsSegment::Sequence(v) => {
                let take = need.min(v.len());
                segments.push(AsSegment::Sequence(v.iter().take(take).copied().collect()));
                need -= take;
            }
        }
    }
    let mut as4_segments = as4_path.segments.iter().cloned();
    // Join the seam between the kept head and AS4_PATH, as one path written whole would be.
    if let (Some(AsSegment::Sequence(head)), Some(AsSegment::Sequence(_))) =
        (segments.last_mut(), as4_path.segments.first())
        && let Some(AsSegment::Sequence(tail)) = as4_segments.next()
    {
        head.extend(tail);
    }
    segments.extend(as4_segments);
    Some(AsPath { segments })
}

/// The MP_REACH_NLRI next hop by family: 4 bytes for IPv4; for IPv6 a global address,
/// optionally followed by a link-local one (RFC 2545 §3). An all-zero link-local address
/// (which some speakers send as padding) is treated as absent.
fn mp_next_hop(family: Family, nh: &[u8]) -> Option<(IpAddr, Option<Ipv6Addr>)> {
    match family {
        Family::Ipv4Unicast => {
            let octets = <[u8; 4]>::try_from(nh).ok()?;
            Some((IpAddr::V4(octets.into()), None))
        }
        Family::Ipv6Unicast => {
            let (global, link_local) = match nh.len() {
                16 => (nh, None),
                32 => {
                    let (g, l) = nh.split_at(16);
                    (g, Some(l))
                }
                _ => return None,
            };
            let global = Ipv6Addr::from(<[u8; 16]>::try_from(global).ok()?);
            let link_local = match link_local {
                Some(l) => Some(Ipv6Addr::from(<[u8; 16]>::try_from(l).ok()?))
                    .filter(|a| !a.is_unspecified()),
                None => None,
            };
            Some((IpAddr::V6(global), link_local))
        }
    }
}

// ===== NOTIFICATION and ROUTE-REFRESH =====

/// RFC 4271 §4.5: code, subcode, then data to the end.
fn decode_notification(body: &[u8]) -> Result<Notification, Notification> {
    match body {
        [code, subcode, data @ ..] => Ok(Notification::new(*code, *subcode, data)),
        // frame_len already refused a NOTIFICATION under 21 bytes.
        _ => Err(Notification::bad_message_length(
            (body.len() + HEADER_LEN) as u16,
        )),
    }
}

/// RFC 2918 §3 / RFC 7313 §3: AFI, subtype, SAFI. Any other length is RFC 7313 §5's
/// Invalid Message Length (ORF entries, RFC 5291, would make longer ones legal, but we
/// never negotiate ORF). An unknown family or subtype is to be ignored (RFC 2918 §4, RFC
/// 7313 §5), signalled by code 0 (see [`decode_message`]).
fn decode_route_refresh(body: &[u8]) -> Result<RouteRefresh, Notification> {
    let [a0, a1, subtype, safi] =
        <[u8; 4]>::try_from(body).map_err(|_| Notification::invalid_route_refresh_length())?;
    let ignore = || Notification::new(0, 0, body);
    if subtype > 2 {
        return Err(ignore());
    }
    let family = Family::from_afi_safi(u16::from_be_bytes([a0, a1]), safi).ok_or_else(ignore)?;
    Ok(RouteRefresh { family, subtype })
}
