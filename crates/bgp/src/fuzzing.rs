//! Checks shared by the property tests (`tests/fuzz_decode.rs`, on stable in `cargo test`)
//! and the coverage-guided fuzz targets (`fuzz/`, run by `make fuzz`): each takes raw
//! bytes, drives the decoder or a session with them, and panics when an invariant breaks.
//! Nothing here is used by the daemons.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::fsm::{GracefulRestartConfig, Input, Output, Session, SessionConfig, State, Timer};
use crate::types::{AsPath, AsSegment, Attrs, Family, LargeCommunity, Nlri, Origin, RawAttribute};
use crate::wire::{
    AddPathMode, Capability, Codec, GracefulRestart, MAX_MESSAGE_LEN, Message, Notification, Open,
    RouteRefresh, Update, decode_message, encode_end_of_rib, encode_keepalive, encode_notification,
    encode_open, encode_route_refresh, encode_update, encode_withdraw, frame_len,
};

/// Every combination a session can negotiate that changes how bytes are read.
pub fn codecs() -> Vec<Codec> {
    let mut out = Vec::new();
    for four_octet_as in [false, true] {
        for v4 in [false, true] {
            for v6 in [false, true] {
                out.push(Codec {
                    four_octet_as,
                    add_path_rx: [v4, v6],
                    add_path_tx: [v4, v6],
                });
            }
        }
    }
    out
}

/// Valid messages of every kind: starting points for mutation, and the decoder target's
/// seed corpus.
pub fn decoder_seeds() -> Vec<Vec<u8>> {
    let open = Open {
        version: 4,
        asn: 4_200_000_001,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::MultiProtocol(Family::Ipv4Unicast),
            Capability::MultiProtocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
            Capability::GracefulRestart(GracefulRestart {
                restarting: true,
                notification: false,
                time: 120,
                families: vec![(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, false)],
            }),
            Capability::FourOctetAs(4_200_000_001),
            Capability::AddPath(vec![(Family::Ipv4Unicast, AddPathMode::Both)]),
            Capability::EnhancedRouteRefresh,
        ],
    };
    let attrs = Attrs {
        origin: Origin::Egp,
        as_path: AsPath {
            segments: vec![
                AsSegment::ConfedSequence(vec![65010]),
                AsSegment::Sequence(vec![65001, 4_200_000_001]),
                AsSegment::Set(vec![65100, 65101]),
            ],
        },
        next_hop: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        med: Some(10),
        local_pref: Some(100),
        atomic_aggregate: true,
        aggregator: Some((4_200_000_002, Ipv4Addr::new(10, 0, 0, 2))),
        communities: vec![0xFFFF_FF01],
        large_communities: vec![LargeCommunity(1, 2, 3)],
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 3)),
        cluster_list: vec![Ipv4Addr::new(10, 0, 0, 4)],
        unknown: vec![RawAttribute {
            flags: 0xE0,
            type_code: 99,
            value: vec![1, 2, 3],
        }],
        ..Attrs::default()
    };
    let attrs6 = Attrs {
        next_hop: Some(IpAddr::V6(
            "2001:db8::1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
        )),
        link_local_next_hop: Some("fe80::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        ..attrs.clone()
    };
    let v4: Vec<Nlri> = ["10.0.0.0/8", "10.1.2.0/24", "192.0.2.128/25", "0.0.0.0/0"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .map(|p| Nlri {
            prefix: p,
            path_id: 7,
        })
        .collect();
    let v6: Vec<Nlri> = ["2001:db8::/32", "fd00:1:2::/48", "::/0", "2001:db8::1/128"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .map(|p| Nlri {
            prefix: p,
            path_id: 9,
        })
        .collect();
    let mut out = vec![
        encode_open(&open),
        encode_keepalive(),
        encode_notification(&Notification::new(6, 2, b"\x04bye!".to_vec())),
        encode_route_refresh(&RouteRefresh {
            family: Family::Ipv6Unicast,
            subtype: 1,
        }),
        encode_end_of_rib(Family::Ipv4Unicast),
        encode_end_of_rib(Family::Ipv6Unicast),
    ];
    for codec in [codecs()[0], codecs()[7]] {
        out.extend(encode_update(&attrs, &v4, &codec));
        out.extend(encode_update(&attrs6, &v6, &codec));
        out.extend(encode_withdraw(&v4, &codec));
        out.extend(encode_withdraw(&v6, &codec));
    }
    out
}

/// Decodes `bytes` every way a session could and, for what is accepted, writes it back and
/// reads it again: none of it may panic, an OPEN must come back equal, and a re-encoded
/// UPDATE must decode as an UPDATE again.
pub fn check_decoder(bytes: &[u8]) {
    // Framing does not depend on the codec.
    let frame = match frame_len(bytes) {
        Ok(Some(len)) => bytes.get(..len),
        _ => None,
    };
    for codec in codecs() {
        let whole = decode_message(bytes, &codec);
        let Some(frame) = frame else {
            continue;
        };
        let decoded = if frame.len() == bytes.len() {
            whole
        } else {
            decode_message(frame, &codec)
        };
        match decoded {
            Ok(Message::Update(update)) => reencode_update(&update, &codec),
            Ok(Message::Open(open)) => {
                let again = decode_message(&encode_open(&open), &codec);
                assert_eq!(again, Ok(Message::Open(open)));
            }
            _ => {}
        }
    }
}

fn reencode_update(update: &Update, codec: &Codec) {
    let attrs = update.attrs.clone().unwrap_or_default();
    let mut messages = Vec::new();
    // One UPDATE may withdraw both families (classic field and MP_UNREACH_NLRI); the
    // encoders take one family at a time.
    for family in Family::ALL {
        let of = |list: &[Nlri]| -> Vec<Nlri> {
            list.iter()
                .filter(|n| Family::of(&n.prefix) == family)
                .copied()
                .collect()
        };
        messages.extend(encode_update(&attrs, &of(&update.announced), codec));
        messages.extend(encode_withdraw(&of(&update.withdrawn), codec));
    }
    for m in messages {
        assert!(m.len() <= MAX_MESSAGE_LEN);
        let decoded = decode_message(&m, codec);
        assert!(
            matches!(decoded, Ok(Message::Update(_))),
            "re-encoded {update:?} decodes as {decoded:?}"
        );
    }
}

/// The session configuration a session-fuzzing input asks for in its first byte: iBGP or
/// eBGP, passive, graceful restart, ADD-PATH, one family or two.
fn session_config(byte: u8) -> SessionConfig {
    let remote_as = if byte & 0x01 != 0 {
        65000
    } else {
        4_200_000_001
    };
    let mut cfg = SessionConfig::new(65000, remote_as, Ipv4Addr::new(10, 0, 0, 1));
    cfg.passive = byte & 0x02 != 0;
    if byte & 0x04 != 0 {
        cfg.graceful_restart = None;
    } else {
        cfg.graceful_restart = Some(GracefulRestartConfig {
            restart_time: 120,
            restarting: byte & 0x08 != 0,
            forwarding_preserved: true,
        });
    }
    if byte & 0x10 != 0 {
        cfg.add_path = vec![(Family::Ipv4Unicast, AddPathMode::Both)];
    }
    if byte & 0x20 != 0 {
        cfg.families = vec![Family::Ipv4Unicast];
    }
    if byte & 0x40 != 0 {
        cfg.hold_time = 3;
    }
    cfg
}

/// The OPEN a peer of [`session_config`]`(byte)` would send, for the seed corpus.
fn peer_open(byte: u8) -> Open {
    let cfg = session_config(byte);
    Open {
        version: 4,
        asn: cfg.remote_as,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 0, 2),
        capabilities: vec![
            Capability::MultiProtocol(Family::Ipv4Unicast),
            Capability::MultiProtocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
            Capability::GracefulRestart(GracefulRestart {
                restarting: false,
                notification: false,
                time: 120,
                families: vec![(Family::Ipv4Unicast, true)],
            }),
            Capability::FourOctetAs(cfg.remote_as),
            Capability::AddPath(vec![(Family::Ipv4Unicast, AddPathMode::Both)]),
        ],
    }
}

/// Operation codes of a session-fuzzing input (after its configuration byte). A frame
/// operation is followed by one BGP message, as much of it as `frame_len` says (or the rest
/// of the input when that is not a whole frame).
mod op {
    pub const FRAME: u8 = 0;
    pub const TIMER: u8 = 4;
    pub const CLOSED: u8 = 5;
    pub const CONNECTED: u8 = 6;
    /// `START | 0x80` stops the session instead.
    pub const START: u8 = 7;
}

/// Inputs that bring a session up and use it, for the session target's seed corpus.
pub fn session_seeds() -> Vec<Vec<u8>> {
    let v4: Vec<Nlri> = ["10.0.0.0/8", "10.1.2.0/24"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .map(|prefix| Nlri { prefix, path_id: 1 })
        .collect();
    let attrs = Attrs {
        next_hop: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        as_path: AsPath {
            segments: vec![AsSegment::Sequence(vec![4_200_000_001])],
        },
        ..Attrs::default()
    };
    let mut out = Vec::new();
    for config in [0x00u8, 0x01, 0x12, 0x25, 0x40] {
        let codec = Codec {
            four_octet_as: true,
            add_path_rx: [config & 0x10 != 0, false],
            add_path_tx: [config & 0x10 != 0, false],
        };
        let mut input = vec![config, op::START, op::CONNECTED, op::FRAME];
        input.extend(encode_open(&peer_open(config)));
        input.push(op::FRAME);
        input.extend(encode_keepalive());
        for update in encode_update(&attrs, &v4, &codec) {
            input.push(op::FRAME);
            input.extend(update);
        }
        input.push(op::FRAME);
        input.extend(encode_route_refresh(&RouteRefresh {
            family: Family::Ipv4Unicast,
            subtype: 0,
        }));
        input.push(op::TIMER | (1 << 3));
        input.push(op::CLOSED);
        input.push(op::START | 0x80);
        out.push(input);
    }
    out
}

/// Drives one session with the operations in `bytes` (the first byte picks the
/// configuration) and checks what it answers: every message it sends is one whole,
/// decodable BGP message; each state change starts from the state the session was in;
/// routes come up only while Established; and `Established` is announced only on the way
/// into that state. Returns how many UPDATEs the session passed on.
pub fn check_session(bytes: &[u8]) -> usize {
    let Some((&config, mut rest)) = bytes.split_first() else {
        return 0;
    };
    let mut updates = 0;
    let mut session = Session::new(session_config(config));
    let mut state = session.state();
    while let Some((&code, tail)) = rest.split_first() {
        rest = tail;
        let input = match code & 0x07 {
            op::TIMER => Input::Timer(
                [
                    Timer::ConnectRetry,
                    Timer::Hold,
                    Timer::Keepalive,
                    Timer::IdleHold,
                ][usize::from(code >> 3) % 4],
            ),
            op::CLOSED => Input::Closed("closed by the fuzzer".into()),
            op::CONNECTED => Input::Connected,
            op::START if code & 0x80 != 0 => Input::Stop(Notification::admin_shutdown()),
            op::START => Input::Start,
            _ => {
                let len = match frame_len(rest) {
                    Ok(Some(len)) if len <= rest.len() => len,
                    _ => rest.len(),
                };
                let (frame, tail) = rest.split_at(len);
                rest = tail;
                Input::Frame(frame)
            }
        };
        let outputs = session.handle(input);
        let mut announced_established = false;
        for output in outputs {
            match output {
                Output::Send(message) => {
                    assert!(message.len() <= MAX_MESSAGE_LEN, "oversized message sent");
                    assert_eq!(frame_len(&message), Ok(Some(message.len())));
                    let decoded = decode_message(&message, &session.codec());
                    assert!(decoded.is_ok(), "sent {message:?}, read back {decoded:?}");
                }
                Output::StateChanged { from, to } => {
                    assert_eq!(from, state, "a state change from a state the session left");
                    assert_ne!(from, to);
                    state = to;
                }
                Output::Established(_) => {
                    assert_eq!(state, State::Established);
                    announced_established = true;
                }
                Output::Update(_) | Output::RouteRefresh(_) => {
                    assert_eq!(state, State::Established, "routes outside Established");
                    updates += 1;
                }
                Output::Timer(_, Some(after)) => {
                    assert!(after > Duration::ZERO, "a timer armed for no time");
                }
                Output::Connect
                | Output::Disconnect
                | Output::Timer(_, None)
                | Output::Down { .. } => {}
            }
        }
        assert_eq!(
            session.state(),
            state,
            "the session's state and its reports differ"
        );
        if announced_established {
            assert!(session.negotiated().is_some());
        }
    }
    updates
}
