//! BGP messages to and from bytes.
//!
//! Decoding needs what the session negotiated ([`Codec`]): whether AS numbers are 4 octets
//! wide and, per family, whether NLRI carry ADD-PATH identifiers. Errors follow RFC 7606:
//! a framing or OPEN error is a [`Notification`] that ends the session; an attribute error
//! in an UPDATE either drops the attribute or turns the UPDATE's announcements into
//! withdrawals ([`Update::treat_as_withdraw`]), and the session lives on.

mod decode;
mod encode;
mod notification;

pub use decode::{decode_message, frame_len};
pub use encode::{
    UpdatePacker, encode_end_of_rib, encode_keepalive, encode_notification, encode_open,
    encode_route_refresh, encode_update, encode_withdraw,
};
pub use notification::Notification;

use std::net::Ipv4Addr;

use crate::types::{Attrs, Family, Nlri};

/// Largest message without RFC 8654's extended messages.
pub const MAX_MESSAGE_LEN: usize = 4096;
pub const HEADER_LEN: usize = 19;

/// Message type codes (RFC 4271 §4.1, RFC 2918).
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// What the session negotiated that changes the bytes of an UPDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Codec {
    /// Both sides sent the 4-octet AS capability (RFC 6793).
    pub four_octet_as: bool,
    /// NLRI received carry path identifiers, per [`Family::index`] (RFC 7911).
    pub add_path_rx: [bool; 2],
    /// NLRI sent carry path identifiers, per [`Family::index`].
    pub add_path_tx: [bool; 2],
}

/// ADD-PATH send/receive direction for one family (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddPathMode {
    Receive = 1,
    Send = 2,
    Both = 3,
}

impl AddPathMode {
    pub fn receives(self) -> bool {
        matches!(self, AddPathMode::Receive | AddPathMode::Both)
    }
    pub fn sends(self) -> bool {
        matches!(self, AddPathMode::Send | AddPathMode::Both)
    }
}

/// Graceful restart capability contents (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The R bit: the sender has restarted.
    pub restarting: bool,
    /// The N bit (RFC 8538): graceful restart also after a NOTIFICATION.
    pub notification: bool,
    /// Restart time in seconds (12 bits).
    pub time: u16,
    /// Families with their "forwarding state preserved" bit.
    pub families: Vec<(Family, bool)>,
}

/// OPEN optional capabilities (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Code 1 (RFC 4760).
    MultiProtocol(Family),
    /// Code 2 (RFC 2918).
    RouteRefresh,
    /// Code 64 (RFC 4724).
    GracefulRestart(GracefulRestart),
    /// Code 65 (RFC 6793).
    FourOctetAs(u32),
    /// Code 69 (RFC 7911).
    AddPath(Vec<(Family, AddPathMode)>),
    /// Code 70 (RFC 7313).
    EnhancedRouteRefresh,
    /// Anything else, or a multiprotocol family birdd does not speak: kept, ignored.
    Unknown { code: u8, value: Vec<u8> },
}

/// OPEN (RFC 4271 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The speaker's AS: the 4-octet capability's value when present, else the 2-octet field.
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

/// UPDATE (RFC 4271 §4.3) with both families: IPv4 routes in the classic fields, IPv6 in
/// MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<Nlri>,
    pub announced: Vec<Nlri>,
    /// Present when the UPDATE carries attributes (announced routes need them).
    pub attrs: Option<Attrs>,
    /// RFC 7606 treat-as-withdraw: an attribute was malformed, so `announced` must be handled
    /// as withdrawn; `errors` says why.
    pub treat_as_withdraw: bool,
    /// Attributes dropped or problems met (RFC 7606 attribute-discard / treat-as-withdraw),
    /// for the log.
    pub errors: Vec<String>,
    /// End-of-RIB marker (RFC 4724 §2): an UPDATE with nothing in it (IPv4) or an empty
    /// MP_UNREACH_NLRI (other families).
    pub end_of_rib: Option<Family>,
}

/// ROUTE-REFRESH (RFC 2918; subtype from RFC 7313: 0 normal, 1 BoRR, 2 EoRR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: Family,
    pub subtype: u8,
}

/// A decoded message.
// UPDATE dwarfs the others, but messages are handled one at a time and never stored, so
// boxing it would only add an allocation per UPDATE.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}
