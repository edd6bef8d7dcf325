//! NOTIFICATION codes (RFC 4271 §4.5 and §6, RFC 4486 Cease subcodes, RFC 6608 FSM
//! subcodes, RFC 7313 route-refresh subcodes). An error that must end a session is a
//! `Notification`, so the wire code can never be forgotten.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;

    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Notification {
        Notification {
            code,
            subcode,
            data: data.into(),
        }
    }

    // ===== message header errors (RFC 4271 §6.1) =====
    pub fn connection_not_synchronized() -> Notification {
        Notification::new(Self::MESSAGE_HEADER, 1, [])
    }
    pub fn bad_message_length(len: u16) -> Notification {
        Notification::new(Self::MESSAGE_HEADER, 2, len.to_be_bytes())
    }
    pub fn bad_message_type(t: u8) -> Notification {
        Notification::new(Self::MESSAGE_HEADER, 3, [t])
    }

    // ===== OPEN errors (RFC 4271 §6.2) =====
    pub fn unsupported_version(supported: u8) -> Notification {
        Notification::new(Self::OPEN_MESSAGE, 1, [0, supported])
    }
    pub fn bad_peer_as() -> Notification {
        Notification::new(Self::OPEN_MESSAGE, 2, [])
    }
    pub fn bad_bgp_identifier() -> Notification {
        Notification::new(Self::OPEN_MESSAGE, 3, [])
    }
    pub fn unsupported_optional_parameter() -> Notification {
        Notification::new(Self::OPEN_MESSAGE, 4, [])
    }
    pub fn unacceptable_hold_time() -> Notification {
        Notification::new(Self::OPEN_MESSAGE, 6, [])
    }

    // ===== UPDATE errors (RFC 4271 §6.3), only those RFC 7606 still resets for =====
    pub fn malformed_attribute_list() -> Notification {
        Notification::new(Self::UPDATE_MESSAGE, 1, [])
    }
    pub fn invalid_network_field() -> Notification {
        Notification::new(Self::UPDATE_MESSAGE, 10, [])
    }
    pub fn optional_attribute_error() -> Notification {
        Notification::new(Self::UPDATE_MESSAGE, 9, [])
    }

    pub fn hold_timer_expired() -> Notification {
        Notification::new(Self::HOLD_TIMER_EXPIRED, 0, [])
    }

    // ===== FSM errors (RFC 6608) =====
    pub fn fsm_unexpected_in_open_sent() -> Notification {
        Notification::new(Self::FSM, 1, [])
    }
    pub fn fsm_unexpected_in_open_confirm() -> Notification {
        Notification::new(Self::FSM, 2, [])
    }
    pub fn fsm_unexpected_in_established() -> Notification {
        Notification::new(Self::FSM, 3, [])
    }

    // ===== Cease (RFC 4486) =====
    pub fn admin_shutdown() -> Notification {
        Notification::new(Self::CEASE, 2, [])
    }
    pub fn peer_deconfigured() -> Notification {
        Notification::new(Self::CEASE, 3, [])
    }
    pub fn other_config_change() -> Notification {
        Notification::new(Self::CEASE, 6, [])
    }
    pub fn connection_collision() -> Notification {
        Notification::new(Self::CEASE, 7, [])
    }

    /// RFC 7313 §5: a ROUTE-REFRESH of the wrong length.
    pub fn invalid_route_refresh_length() -> Notification {
        Notification::new(Self::ROUTE_REFRESH, 1, [])
    }

    /// The words operators know these by (as BIRD and FRR print them).
    pub fn describe(&self) -> String {
        let what = match (self.code, self.subcode) {
            (1, 1) => "Connection not synchronized",
            (1, 2) => "Bad message length",
            (1, 3) => "Bad message type",
            (1, _) => "Message header error",
            (2, 1) => "Unsupported version number",
            (2, 2) => "Bad peer AS",
            (2, 3) => "Bad BGP identifier",
            (2, 4) => "Unsupported optional parameter",
            (2, 6) => "Unacceptable hold time",
            (2, 7) => "Unsupported capability",
            (2, _) => "OPEN message error",
            (3, 1) => "Malformed attribute list",
            (3, 2) => "Unrecognized well-known attribute",
            (3, 3) => "Missing well-known attribute",
            (3, 4) => "Attribute flags error",
            (3, 5) => "Attribute length error",
            (3, 6) => "Invalid ORIGIN attribute",
            (3, 8) => "Invalid NEXT_HOP attribute",
            (3, 9) => "Optional attribute error",
            (3, 10) => "Invalid network field",
            (3, 11) => "Malformed AS_PATH",
            (3, _) => "UPDATE message error",
            (4, _) => "Hold timer expired",
            (5, _) => "Finite state machine error",
            (6, 1) => "Maximum number of prefixes reached",
            (6, 2) => "Administrative shutdown",
            (6, 3) => "Peer de-configured",
            (6, 4) => "Administrative reset",
            (6, 5) => "Connection rejected",
            (6, 6) => "Other configuration change",
            (6, 7) => "Connection collision resolution",
            (6, 8) => "Out of resources",
            (6, _) => "Cease",
            (7, _) => "ROUTE-REFRESH message error",
            _ => "Unknown error",
        };
        what.to_string()
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}/{})", self.describe(), self.code, self.subcode)?;
        // RFC 8203/9003 shutdown communication: a length byte and UTF-8 text.
        if self.code == 6
            && matches!(self.subcode, 2 | 4)
            && let Some((&len, text)) = self.data.split_first()
            && let Some(text) = text.get(..len as usize)
            && let Ok(text) = std::str::from_utf8(text)
            && !text.is_empty()
        {
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}
