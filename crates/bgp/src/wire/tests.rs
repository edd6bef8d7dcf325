//! Codec tests: byte-exact vectors written out by hand from the RFC layouts, round trips,
//! message splitting, and a table of malformed UPDATEs with the RFC 7606 outcome of each.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::types::{
    AS_TRANS, AsPath, AsSegment, Attrs, Family, LargeCommunity, Nlri, Origin, RawAttribute,
};
use crate::wire::{
    AddPathMode, Capability, Codec, GracefulRestart, MAX_MESSAGE_LEN, Message, Notification, Open,
    RouteRefresh, Update, UpdatePacker, decode_message, encode_end_of_rib, encode_keepalive,
    encode_notification, encode_open, encode_route_refresh, encode_update, encode_withdraw,
    frame_len,
};

// ===== helpers =====

/// Hex with any whitespace and `|` separators, so vectors can be laid out field by field.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

const MARKER: &str = "ffffffff ffffffff ffffffff ffffffff";

/// A message from its type and body, the header computed (RFC 4271 §4.1).
fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = hex(MARKER);
    out.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// An UPDATE from its three fields, lengths computed.
fn update_msg(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = (withdrawn.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    msg(2, &body)
}

/// One path attribute with a one-byte length.
fn attr(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![flags, code, value.len() as u8];
    out.extend_from_slice(value);
    out
}

fn net(s: &str) -> Nlri {
    Nlri::new(s.parse::<IpNet>().unwrap())
}

fn decode_update(bytes: &[u8], codec: &Codec) -> Update {
    match decode_message(bytes, codec) {
        Ok(Message::Update(u)) => u,
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

const FOUR: Codec = Codec {
    four_octet_as: true,
    add_path_rx: [false, false],
    add_path_tx: [false, false],
};

const TWO: Codec = Codec {
    four_octet_as: false,
    add_path_rx: [false, false],
    add_path_tx: [false, false],
};

const ADD_PATH: Codec = Codec {
    four_octet_as: true,
    add_path_rx: [true, true],
    add_path_tx: [true, true],
};

// ===== byte-exact vectors =====

#[test]
fn keepalive_is_a_bare_header() {
    // RFC 4271 §4.4: marker, length 19, type 4.
    let bytes = hex(&format!("{MARKER} 0013 04"));
    assert_eq!(encode_keepalive(), bytes);
    assert_eq!(decode_message(&bytes, &FOUR), Ok(Message::Keepalive));
}

/// OPEN laid out as BIRD 2 sends it, capabilities in BIRD's order in one parameter: AS
/// 64512, hold 240, router id 10.99.0.1; MP IPv4 unicast, MP IPv6 unicast, route refresh,
/// graceful restart (time 120, both families, no flags), 4-octet AS 64512, ADD-PATH both
/// directions for both families, enhanced route refresh. Lengths: capabilities 6+6+2+12+6+
/// 10+2 = 44 (0x2c), parameter 46 (0x2e), message 29+46 = 75 (0x4b).
fn bird_open_bytes() -> Vec<u8> {
    hex(&format!(
        "{MARKER} 004b 01
         04 | fc00 | 00f0 | 0a630001 | 2e | 02 2c
         01 04 0001 00 01
         01 04 0002 00 01
         02 00
         40 0a 0078 0001 01 00 0002 01 00
         41 04 0000fc00
         45 08 0001 01 03 0002 01 03
         46 00"
    ))
}

fn bird_open() -> Open {
    Open {
        version: 4,
        asn: 64512,
        hold_time: 240,
        router_id: Ipv4Addr::new(10, 99, 0, 1),
        capabilities: vec![
            Capability::MultiProtocol(Family::Ipv4Unicast),
            Capability::MultiProtocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
            Capability::GracefulRestart(GracefulRestart {
                restarting: false,
                notification: false,
                time: 120,
                families: vec![(Family::Ipv4Unicast, false), (Family::Ipv6Unicast, false)],
            }),
            Capability::FourOctetAs(64512),
            Capability::AddPath(vec![
                (Family::Ipv4Unicast, AddPathMode::Both),
                (Family::Ipv6Unicast, AddPathMode::Both),
            ]),
            Capability::EnhancedRouteRefresh,
        ],
    }
}

#[test]
fn open_as_bird_sends_it_decodes_and_encodes_byte_for_byte() {
    let bytes = bird_open_bytes();
    assert_eq!(decode_message(&bytes, &TWO), Ok(Message::Open(bird_open())));
    assert_eq!(encode_open(&bird_open()), bytes);
}

#[test]
fn open_from_a_four_octet_speaker_carries_as_trans_and_the_real_as_in_the_capability() {
    // AS 4200000001 = 0xfa56ea01 does not fit my-AS, which holds AS_TRANS 23456 = 0x5ba0
    // (RFC 6793 §4.2.1); hold 90 = 0x5a; router id 192.0.2.1; one capability, 8 bytes.
    let bytes = hex(&format!(
        "{MARKER} 0025 01 04 5ba0 005a c0000201 08 02 06 41 04 fa56ea01"
    ));
    let open = Open {
        version: 4,
        asn: 4_200_000_001,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![Capability::FourOctetAs(4_200_000_001)],
    };
    assert_eq!(encode_open(&open), bytes);
    assert_eq!(decode_message(&bytes, &TWO), Ok(Message::Open(open)));
}

#[test]
fn open_without_capabilities_takes_the_as_from_the_two_octet_field() {
    // An old speaker: AS 65001 (0xfde9), hold 180 (0xb4), no optional parameters: 29 bytes.
    let bytes = hex(&format!("{MARKER} 001d 01 04 fde9 00b4 c0000201 00"));
    let Ok(Message::Open(open)) = decode_message(&bytes, &TWO) else {
        panic!("not an OPEN");
    };
    assert_eq!(open.asn, 65001);
    assert!(open.capabilities.is_empty());
    assert_eq!(encode_open(&open), bytes);
}

/// UPDATE between 4-octet iBGP speakers: ORIGIN IGP, AS_PATH (SEQUENCE 64512), NEXT_HOP
/// 10.99.0.1, LOCAL_PREF 100, COMMUNITIES 64512:100; NLRI 10.244.1.0/26 (4 bytes of
/// prefix) and 10.244.2.0/24 (3 bytes). Attributes 4+9+7+7+7 = 34 (0x22), NLRI 9, message
/// 23+34+9 = 66 (0x42).
fn ipv4_update_bytes() -> Vec<u8> {
    hex(&format!(
        "{MARKER} 0042 02
         0000
         0022
         40 01 01 00
         40 02 06 02 01 0000fc00
         40 03 04 0a630001
         40 05 04 00000064
         c0 08 04 fc000064
         1a 0af40100
         18 0af402"
    ))
}

fn ipv4_attrs() -> Attrs {
    Attrs {
        origin: Origin::Igp,
        as_path: AsPath::from_sequence([64512]),
        next_hop: Some(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1))),
        local_pref: Some(100),
        communities: vec![(64512 << 16) | 100],
        ..Attrs::default()
    }
}

#[test]
fn ipv4_update_decodes_and_encodes_byte_for_byte() {
    let bytes = ipv4_update_bytes();
    let nlri = vec![net("10.244.1.0/26"), net("10.244.2.0/24")];
    let update = decode_update(&bytes, &FOUR);
    assert_eq!(
        update,
        Update {
            announced: nlri.clone(),
            attrs: Some(ipv4_attrs()),
            ..Update::default()
        }
    );
    assert_eq!(encode_update(&ipv4_attrs(), &nlri, &FOUR), vec![bytes]);
}

/// IPv6 UPDATE between 4-octet eBGP speakers, MP_REACH_NLRI first (RFC 7606 §5.1): AFI 2
/// SAFI 1, next hop 32 bytes (global 2001:db8::1 then link-local fe80::1, RFC 2545 §3),
/// reserved 0, NLRI 2001:db8:1::/48 (0x30, 6 bytes); its value is 3+1+32+1+7 = 44 (0x2c).
/// Then ORIGIN IGP and AS_PATH (SEQUENCE 65001 65002). Attributes 47+4+13 = 64 (0x40),
/// message 23+64 = 87 (0x57).
fn ipv6_update_bytes() -> Vec<u8> {
    hex(&format!(
        "{MARKER} 0057 02
         0000
         0040
         80 0e 2c 0002 01 20
            20010db8 00000000 00000000 00000001
            fe800000 00000000 00000000 00000001
            00
            30 20010db80001
         40 01 01 00
         40 02 0a 02 02 0000fde9 0000fdea"
    ))
}

fn ipv6_attrs() -> Attrs {
    Attrs {
        as_path: AsPath::from_sequence([65001, 65002]),
        next_hop: Some("2001:db8::1".parse().unwrap()),
        link_local_next_hop: Some("fe80::1".parse().unwrap()),
        ..Attrs::default()
    }
}

#[test]
fn ipv6_update_decodes_and_encodes_byte_for_byte() {
    let bytes = ipv6_update_bytes();
    let nlri = vec![net("2001:db8:1::/48")];
    let update = decode_update(&bytes, &FOUR);
    assert_eq!(
        update,
        Update {
            announced: nlri.clone(),
            attrs: Some(ipv6_attrs()),
            ..Update::default()
        }
    );
    assert_eq!(encode_update(&ipv6_attrs(), &nlri, &FOUR), vec![bytes]);
}

/// Towards a 2-octet peer the path 65001 4200000001 is AS_PATH 65001 AS_TRANS (0xfde9
/// 0x5ba0) plus AS4_PATH (optional transitive, type 17 = 0x11) with the real numbers
/// (RFC 6793 §4.2.2). NEXT_HOP 192.0.2.1, NLRI 198.51.100.0/24. Attributes 4+9+7+13 = 33
/// (0x21), message 23+33+4 = 60 (0x3c).
#[test]
fn two_octet_peer_gets_as_trans_and_as4_path_and_the_path_survives_the_trip() {
    let bytes = hex(&format!(
        "{MARKER} 003c 02
         0000
         0021
         40 01 01 00
         40 02 06 02 02 fde9 5ba0
         40 03 04 c0000201
         c0 11 0a 02 02 0000fde9 fa56ea01
         18 c63364"
    ));
    let attrs = Attrs {
        as_path: AsPath::from_sequence([65001, 4_200_000_001]),
        next_hop: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        ..Attrs::default()
    };
    let nlri = vec![net("198.51.100.0/24")];
    assert_eq!(encode_update(&attrs, &nlri, &TWO), vec![bytes.clone()]);
    let update = decode_update(&bytes, &TWO);
    assert_eq!(update.attrs, Some(attrs));
    assert_eq!(update.announced, nlri);
    assert!(update.errors.is_empty(), "{:?}", update.errors);
}

#[test]
fn ipv4_withdraw_with_add_path_carries_the_path_id() {
    // Withdrawn Routes: path id 7, 10.0.1.0/24: 8 bytes; message 23+8 = 31 (0x1f).
    let bytes = hex(&format!("{MARKER} 001f 02 0008 00000007 18 0a0001 0000"));
    let nlri = Nlri {
        prefix: "10.0.1.0/24".parse().unwrap(),
        path_id: 7,
    };
    assert_eq!(encode_withdraw(&[nlri], &ADD_PATH), vec![bytes.clone()]);
    let update = decode_update(&bytes, &ADD_PATH);
    assert_eq!(update.withdrawn, vec![nlri]);
    assert_eq!(update.attrs, None);
    assert_eq!(update.end_of_rib, None);
}

#[test]
fn ipv6_withdraw_uses_mp_unreach_nlri() {
    // MP_UNREACH_NLRI: AFI 2, SAFI 1, 2001:db8:1::/48; value 3+7 = 10; message 23+13 = 36.
    let bytes = hex(&format!(
        "{MARKER} 0024 02 0000 000d 80 0f 0a 0002 01 30 20010db80001"
    ));
    let nlri = net("2001:db8:1::/48");
    assert_eq!(encode_withdraw(&[nlri], &FOUR), vec![bytes.clone()]);
    let update = decode_update(&bytes, &FOUR);
    assert_eq!(update.withdrawn, vec![nlri]);
    assert_eq!(
        update.attrs, None,
        "MP_UNREACH_NLRI alone is no attribute set"
    );
}

#[test]
fn end_of_rib_for_both_families() {
    // RFC 4724 §2: IPv4 is the empty UPDATE (23 bytes); IPv6 an UPDATE with only an empty
    // MP_UNREACH_NLRI (flags 0x80, type 15, length 3, AFI 2, SAFI 1): 29 bytes.
    let v4 = hex(&format!("{MARKER} 0017 02 0000 0000"));
    let v6 = hex(&format!("{MARKER} 001d 02 0000 0006 80 0f 03 0002 01"));
    assert_eq!(encode_end_of_rib(Family::Ipv4Unicast), v4);
    assert_eq!(encode_end_of_rib(Family::Ipv6Unicast), v6);
    for (bytes, family) in [(v4, Family::Ipv4Unicast), (v6, Family::Ipv6Unicast)] {
        let update = decode_update(&bytes, &FOUR);
        assert_eq!(update.end_of_rib, Some(family));
        assert!(update.withdrawn.is_empty() && update.announced.is_empty());
    }
}

#[test]
fn notification_with_shutdown_communication() {
    // Cease / Administrative Shutdown (6/2) with RFC 9003's length-prefixed text
    // "maintenance" (11 = 0x0b bytes): 19+2+12 = 33 (0x21).
    let bytes = hex(&format!("{MARKER} 0021 03 06 02 0b 6d61696e74656e616e6365"));
    let mut data = vec![11];
    data.extend_from_slice(b"maintenance");
    let n = Notification::new(6, 2, data);
    assert_eq!(encode_notification(&n), bytes);
    assert_eq!(decode_message(&bytes, &FOUR), Ok(Message::Notification(n)));
}

#[test]
fn route_refresh_with_enhanced_subtype() {
    // RFC 7313 §3: AFI 2, subtype 1 (BoRR), SAFI 1; 23 bytes.
    let bytes = hex(&format!("{MARKER} 0017 05 0002 01 01"));
    let rr = RouteRefresh {
        family: Family::Ipv6Unicast,
        subtype: 1,
    };
    assert_eq!(encode_route_refresh(&rr), bytes);
    assert_eq!(decode_message(&bytes, &FOUR), Ok(Message::RouteRefresh(rr)));
}

// ===== round trips =====

#[test]
fn open_round_trips_with_every_capability_kind() {
    let open = Open {
        version: 4,
        asn: 4_200_000_001,
        hold_time: 0,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::MultiProtocol(Family::Ipv6Unicast),
            Capability::GracefulRestart(GracefulRestart {
                restarting: true,
                notification: true,
                time: 4095,
                families: vec![(Family::Ipv6Unicast, true)],
            }),
            Capability::FourOctetAs(4_200_000_001),
            Capability::AddPath(vec![(Family::Ipv4Unicast, AddPathMode::Send)]),
            Capability::Unknown {
                code: 73,
                value: b"\x05node1\x00".to_vec(),
            },
            // MP for L2VPN EVPN (AFI 25, SAFI 70): a family we do not speak, kept raw.
            Capability::Unknown {
                code: 1,
                value: vec![0, 25, 0, 70],
            },
        ],
    };
    let bytes = encode_open(&open);
    assert_eq!(decode_message(&bytes, &FOUR), Ok(Message::Open(open)));
}

#[test]
fn open_with_more_than_255_bytes_of_capabilities_uses_extended_parameters() {
    let open = Open {
        version: 4,
        asn: 65000,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: (0..3)
            .map(|i| Capability::Unknown {
                code: 200 + i,
                value: vec![i; 100],
            })
            .collect(),
    };
    let bytes = encode_open(&open);
    // RFC 9072 §2: non-extended length 255, type 255, then a 2-byte length.
    assert_eq!(&bytes[28..30], &[255, 255]);
    assert_eq!(decode_message(&bytes, &FOUR), Ok(Message::Open(open)));
}

fn rich_attrs() -> Attrs {
    Attrs {
        origin: Origin::Incomplete,
        as_path: AsPath {
            segments: vec![
                AsSegment::ConfedSequence(vec![65010, 65011]),
                AsSegment::Sequence(vec![64512, 4_200_000_001]),
                AsSegment::Set(vec![65100, 65101]),
            ],
        },
        next_hop: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))),
        med: Some(50),
        local_pref: Some(200),
        atomic_aggregate: true,
        aggregator: Some((4_200_000_002, Ipv4Addr::new(10, 0, 0, 2))),
        communities: vec![0xFFFF_FF01, (64512 << 16) | 7],
        large_communities: vec![LargeCommunity(4_200_000_001, 1, 2)],
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 3)),
        cluster_list: vec![Ipv4Addr::new(10, 0, 0, 4), Ipv4Addr::new(10, 0, 0, 5)],
        unknown: vec![RawAttribute {
            flags: 0xE0,
            type_code: 16,
            value: vec![0, 2, 0xFD, 0xE8, 0, 0, 0, 1],
        }],
        ..Attrs::default()
    }
}

#[test]
fn update_round_trips_for_both_families_with_and_without_add_path() {
    for codec in [FOUR, TWO, ADD_PATH] {
        let add = codec.add_path_tx[0];
        let id = |n: Nlri, p: u32| Nlri {
            path_id: if add { p } else { 0 },
            ..n
        };
        let v4 = vec![
            id(net("10.1.0.0/16"), 1),
            id(net("10.2.3.0/24"), 2),
            id(net("0.0.0.0/0"), 3),
        ];
        let attrs = rich_attrs();
        let [message] = encode_update(&attrs, &v4, &codec).try_into().unwrap();
        let update = decode_update(&message, &codec);
        assert_eq!(update.announced, v4, "{codec:?}");
        assert_eq!(update.attrs.as_ref(), Some(&attrs), "{codec:?}");
        assert!(update.errors.is_empty(), "{:?}", update.errors);

        let v6 = vec![id(net("2001:db8::/32"), 4), id(net("fd00::1/128"), 5)];
        let attrs6 = Attrs {
            next_hop: Some("2001:db8::9".parse().unwrap()),
            link_local_next_hop: None,
            ..rich_attrs()
        };
        let [message] = encode_update(&attrs6, &v6, &codec).try_into().unwrap();
        let update = decode_update(&message, &codec);
        assert_eq!(update.announced, v6, "{codec:?}");
        assert_eq!(update.attrs.as_ref(), Some(&attrs6), "{codec:?}");
        assert!(update.errors.is_empty(), "{:?}", update.errors);
    }
}

#[test]
fn decoding_then_encoding_the_vectors_gives_the_same_bytes() {
    for (bytes, codec) in [(ipv4_update_bytes(), FOUR), (ipv6_update_bytes(), FOUR)] {
        let update = decode_update(&bytes, &codec);
        let attrs = update.attrs.unwrap();
        assert_eq!(
            encode_update(&attrs, &update.announced, &codec),
            vec![bytes]
        );
    }
    let Ok(Message::Open(open)) = decode_message(&bird_open_bytes(), &FOUR) else {
        panic!("not an OPEN");
    };
    assert_eq!(encode_open(&open), bird_open_bytes());
}

#[test]
fn empty_nlri_encodes_to_nothing() {
    assert!(encode_update(&ipv4_attrs(), &[], &FOUR).is_empty());
    assert!(encode_withdraw(&[], &FOUR).is_empty());
}

#[test]
fn host_bits_are_cleared_on_encode_and_masked_on_decode() {
    // 10.0.0.255/25 goes out as 10.0.0.128/25 ...
    let sloppy = Nlri::new("10.0.0.255/25".parse().unwrap());
    let [message] = encode_withdraw(&[sloppy], &FOUR).try_into().unwrap();
    assert_eq!(&message[21..26], &[0x19, 10, 0, 0, 0x80]);
    // ... and a peer's /25 with host bits set (0xff) comes in as 10.0.0.128/25.
    let bytes = update_msg(&[0x19, 10, 0, 0, 0xff], &[], &[]);
    assert_eq!(
        decode_update(&bytes, &FOUR).withdrawn,
        vec![net("10.0.0.128/25")]
    );
}

#[test]
fn attributes_over_255_bytes_use_the_extended_length_bit() {
    let attrs = Attrs {
        communities: (0..100).collect(),
        ..ipv4_attrs()
    };
    let [message] = encode_update(&attrs, &[net("10.0.0.0/8")], &FOUR)
        .try_into()
        .unwrap();
    // COMMUNITIES: flags 0xc0 | 0x10, type 8, length 400 = 0x0190.
    let at = message.windows(4).position(|w| w == [0xd0, 8, 0x01, 0x90]);
    assert!(at.is_some());
    assert_eq!(decode_update(&message, &FOUR).attrs, Some(attrs));
}

#[test]
fn two_thousand_prefixes_split_into_messages_of_at_most_4096_bytes() {
    let nlri: Vec<Nlri> = (0..2000u32)
        .map(|i| {
            let addr = Ipv4Addr::from((10 << 24) | (i << 8));
            Nlri::new(IpNet::new(IpAddr::V4(addr), 24).unwrap())
        })
        .collect();
    for codec in [FOUR, ADD_PATH] {
        let messages = encode_update(&ipv4_attrs(), &nlri, &codec);
        assert!(messages.len() > 1);
        let mut seen = Vec::new();
        for m in &messages {
            assert!(m.len() <= MAX_MESSAGE_LEN);
            assert_eq!(frame_len(m), Ok(Some(m.len())));
            let update = decode_update(m, &codec);
            assert_eq!(update.attrs.as_ref(), Some(&ipv4_attrs()));
            seen.extend(update.announced.iter().map(|n| n.prefix));
        }
        assert_eq!(seen, nlri.iter().map(|n| n.prefix).collect::<Vec<_>>());

        let withdrawals = encode_withdraw(&nlri, &codec);
        assert!(withdrawals.len() > 1);
        let mut seen = Vec::new();
        for m in &withdrawals {
            assert!(m.len() <= MAX_MESSAGE_LEN);
            seen.extend(decode_update(m, &codec).withdrawn.iter().map(|n| n.prefix));
        }
        assert_eq!(seen.len(), 2000);
    }
}

#[test]
fn ipv6_announcements_split_too() {
    let nlri: Vec<Nlri> = (0..1000u128)
        .map(|i| {
            let addr = Ipv6Addr::from((0xfd00u128 << 112) | (i << 64));
            Nlri {
                prefix: IpNet::new(IpAddr::V6(addr), 64).unwrap(),
                path_id: i as u32,
            }
        })
        .collect();
    let messages = encode_update(&ipv6_attrs(), &nlri, &ADD_PATH);
    assert!(messages.len() > 1);
    let mut seen = Vec::new();
    for m in &messages {
        assert!(m.len() <= MAX_MESSAGE_LEN);
        let update = decode_update(m, &ADD_PATH);
        assert_eq!(update.attrs.as_ref(), Some(&ipv6_attrs()));
        seen.extend(update.announced);
    }
    assert_eq!(seen, nlri);
}

#[test]
fn ipv6_withdrawals_fill_each_message_and_the_packer_writes_what_the_list_functions_do() {
    let nlri: Vec<Nlri> = (0..2000u128)
        .map(|i| {
            Nlri::new(
                IpNet::new(
                    IpAddr::V6(Ipv6Addr::from((0xfd00u128 << 112) | (i << 80))),
                    48,
                )
                .unwrap(),
            )
        })
        .collect();
    let messages = encode_withdraw(&nlri, &FOUR);
    // 4096 less the header, the two field lengths, MP_UNREACH_NLRI's long header and
    // AFI/SAFI leave 4066 bytes: 580 prefixes of 7 bytes each.
    let counts: Vec<usize> = messages
        .iter()
        .map(|m| decode_update(m, &FOUR).withdrawn.len())
        .collect();
    assert_eq!(counts, [580, 580, 580, 260]);
    assert!(messages.iter().all(|m| m.len() <= MAX_MESSAGE_LEN));
    // Pushed one at a time: the same bytes, withdrawn and announced.
    let mut packer = UpdatePacker::withdraw(Family::Ipv6Unicast, &FOUR);
    nlri.iter().for_each(|n| packer.push(n));
    assert_eq!(packer.finish(), messages);
    let mut packer = UpdatePacker::announce(Family::Ipv6Unicast, &ipv6_attrs(), &FOUR);
    nlri.iter().for_each(|n| packer.push(n));
    assert_eq!(packer.finish(), encode_update(&ipv6_attrs(), &nlri, &FOUR));
    // Nothing pushed, nothing sent.
    assert!(
        UpdatePacker::withdraw(Family::Ipv4Unicast, &FOUR)
            .finish()
            .is_empty()
    );
}

#[test]
fn other_messages_round_trip() {
    for m in [
        Message::Keepalive,
        Message::Notification(Notification::hold_timer_expired()),
        Message::Notification(Notification::bad_message_length(4097)),
        Message::RouteRefresh(RouteRefresh {
            family: Family::Ipv4Unicast,
            subtype: 0,
        }),
        Message::RouteRefresh(RouteRefresh {
            family: Family::Ipv6Unicast,
            subtype: 2,
        }),
    ] {
        let bytes = match &m {
            Message::Keepalive => encode_keepalive(),
            Message::Notification(n) => encode_notification(n),
            Message::RouteRefresh(rr) => encode_route_refresh(rr),
            _ => unreachable!(),
        };
        assert_eq!(decode_message(&bytes, &FOUR), Ok(m));
    }
}

// ===== RFC 6793 on receipt from a 2-octet peer =====

#[test]
fn as4_path_is_merged_behind_ases_added_by_old_speakers() {
    // An old speaker 65002 prepended itself after AS4_PATH was written: AS_PATH has three
    // ASes, AS4_PATH two, so the leading one of AS_PATH is kept (RFC 6793 §4.2.3).
    let attrs = [
        attr(0x40, 1, &[0]),
        attr(0x40, 2, &hex("02 03 fdea fde9 5ba0")),
        attr(0x40, 3, &[192, 0, 2, 1]),
        attr(0xc0, 17, &hex("02 02 0000fde9 fa56ea01")),
    ]
    .concat();
    let update = decode_update(&update_msg(&[], &attrs, &[24, 198, 51, 100]), &TWO);
    let path = update.attrs.unwrap().as_path;
    assert_eq!(path, AsPath::from_sequence([65002, 65001, 4_200_000_001]));
}

#[test]
fn as4_path_longer_than_as_path_is_ignored() {
    let attrs = [
        attr(0x40, 1, &[0]),
        attr(0x40, 2, &hex("02 01 fde9")),
        attr(0x40, 3, &[192, 0, 2, 1]),
        attr(0xc0, 17, &hex("02 02 0000fde9 fa56ea01")),
    ]
    .concat();
    let update = decode_update(&update_msg(&[], &attrs, &[24, 198, 51, 100]), &TWO);
    assert_eq!(
        update.attrs.unwrap().as_path,
        AsPath::from_sequence([65001])
    );
    assert!(!update.treat_as_withdraw);
    assert_eq!(update.errors.len(), 1, "{:?}", update.errors);
}

#[test]
fn as4_aggregator_replaces_an_as_trans_aggregator() {
    let attrs = [
        attr(0x40, 1, &[0]),
        attr(0x40, 2, &hex("02 01 5ba0")),
        attr(0x40, 3, &[192, 0, 2, 1]),
        attr(0xc0, 7, &hex("5ba0 0a000002")),
        attr(0xc0, 17, &hex("02 01 fa56ea01")),
        attr(0xc0, 18, &hex("fa56ea01 0a000002")),
    ]
    .concat();
    let update = decode_update(&update_msg(&[], &attrs, &[24, 198, 51, 100]), &TWO);
    let attrs = update.attrs.unwrap();
    assert_eq!(
        attrs.aggregator,
        Some((4_200_000_001, Ipv4Addr::new(10, 0, 0, 2)))
    );
    assert_eq!(attrs.as_path, AsPath::from_sequence([4_200_000_001]));
}

#[test]
fn as4_attributes_are_ignored_when_an_old_speaker_aggregated() {
    // AGGREGATOR names 65000, not AS_TRANS: the AS4 attributes predate the aggregation.
    let attrs = [
        attr(0x40, 1, &[0]),
        attr(0x40, 2, &hex("02 01 5ba0")),
        attr(0x40, 3, &[192, 0, 2, 1]),
        attr(0xc0, 7, &hex("fde8 0a000002")),
        attr(0xc0, 17, &hex("02 01 fa56ea01")),
    ]
    .concat();
    let update = decode_update(&update_msg(&[], &attrs, &[24, 198, 51, 100]), &TWO);
    let attrs = update.attrs.unwrap();
    assert_eq!(attrs.as_path, AsPath::from_sequence([AS_TRANS]));
    assert_eq!(attrs.aggregator, Some((65000, Ipv4Addr::new(10, 0, 0, 2))));
}

#[test]
fn as4_path_from_a_four_octet_peer_is_discarded() {
    let attrs = [
        attr(0x40, 1, &[0]),
        attr(0x40, 2, &hex("02 01 0000fde9")),
        attr(0x40, 3, &[192, 0, 2, 1]),
        attr(0xc0, 17, &hex("02 01 fa56ea01")),
    ]
    .concat();
    let update = decode_update(&update_msg(&[], &attrs, &[24, 198, 51, 100]), &FOUR);
    assert_eq!(
        update.attrs.unwrap().as_path,
        AsPath::from_sequence([65001])
    );
    assert!(!update.treat_as_withdraw);
    assert_eq!(update.errors.len(), 1);
}

// ===== other decoding decisions =====

#[test]
fn unknown_optional_transitive_attribute_is_kept_with_partial_set_and_passed_on() {
    let attrs = [
        attr(0x40, 1, &[0]),
        attr(0x40, 2, &[]),
        attr(0x40, 3, &[192, 0, 2, 1]),
        attr(0xc0, 99, &[1, 2, 3]),
    ]
    .concat();
    let update = decode_update(&update_msg(&[], &attrs, &[24, 198, 51, 100]), &FOUR);
    let decoded = update.attrs.unwrap();
    assert_eq!(
        decoded.unknown,
        vec![RawAttribute {
            flags: 0xe0,
            type_code: 99,
            value: vec![1, 2, 3],
        }]
    );
    let [message] = encode_update(&decoded, &update.announced, &FOUR)
        .try_into()
        .unwrap();
    assert!(message.windows(6).any(|w| w == [0xe0, 99, 3, 1, 2, 3]));
}

#[test]
fn ipv6_announcements_beside_ipv4_nlri_are_withdrawn_not_guessed_at() {
    let mut reach = hex("0002 01 10 20010db8000000000000000000000001 00");
    reach.extend_from_slice(&hex("30 20010db80001"));
    let attrs = [
        attr(0x80, 14, &reach),
        attr(0x40, 1, &[0]),
        attr(0x40, 2, &[]),
        attr(0x40, 3, &[192, 0, 2, 1]),
    ]
    .concat();
    let update = decode_update(&update_msg(&[], &attrs, &[24, 198, 51, 100]), &FOUR);
    assert_eq!(update.announced, vec![net("198.51.100.0/24")]);
    assert_eq!(update.withdrawn, vec![net("2001:db8:1::/48")]);
    assert_eq!(
        update.attrs.unwrap().next_hop,
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
    );
    assert_eq!(update.errors.len(), 1);
}

#[test]
fn next_hop_attribute_is_ignored_for_mp_only_updates() {
    // RFC 4760 §3: a (here bogus, 0.0.0.0) NEXT_HOP beside MP_REACH_NLRI alone is ignored.
    let mut reach = hex("0002 01 10 20010db8000000000000000000000001 00");
    reach.extend_from_slice(&hex("30 20010db80001"));
    let attrs = [
        attr(0x80, 14, &reach),
        attr(0x40, 1, &[0]),
        attr(0x40, 2, &[]),
        attr(0x40, 3, &[0, 0, 0, 0]),
    ]
    .concat();
    let update = decode_update(&update_msg(&[], &attrs, &[]), &FOUR);
    assert!(!update.treat_as_withdraw, "{:?}", update.errors);
    assert_eq!(
        update.attrs.unwrap().next_hop,
        Some("2001:db8::1".parse().unwrap())
    );
}

// ===== malformed UPDATEs and their RFC 7606 outcome =====

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// The session ends with this NOTIFICATION code and subcode.
    Reset(u8, u8),
    /// The announcements are to be handled as withdrawals.
    TreatAsWithdraw,
    /// An attribute was dropped (or ignored) and noted; the routes stand.
    Discard,
    /// Nothing to report.
    Ok,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Outcome,
}

/// The three mandatory attributes (2-octet AS numbers, as [`TWO`] decodes them) and one
/// IPv4 prefix, 198.51.100.0/24, as NLRI.
fn origin() -> Vec<u8> {
    attr(0x40, 1, &[0])
}
fn as_path() -> Vec<u8> {
    attr(0x40, 2, &hex("02 01 fde9"))
}
fn next_hop() -> Vec<u8> {
    attr(0x40, 3, &[192, 0, 2, 1])
}
const NLRI: [u8; 4] = [24, 198, 51, 100];

/// A well-formed UPDATE with `extra` after the mandatory attributes.
fn with(extra: &[u8]) -> Vec<u8> {
    update_msg(
        &[],
        &[origin(), as_path(), next_hop(), extra.to_vec()].concat(),
        &NLRI,
    )
}

/// A well-formed UPDATE with the attribute `code` replaced by `replacement`.
fn replacing(code: u8, replacement: &[u8]) -> Vec<u8> {
    let attrs: Vec<Vec<u8>> = [(1, origin()), (2, as_path()), (3, next_hop())]
        .into_iter()
        .map(|(c, a)| if c == code { replacement.to_vec() } else { a })
        .collect();
    update_msg(&[], &attrs.concat(), &NLRI)
}

/// An IPv6 MP attribute value: AFI 2, SAFI 1, then `rest`.
fn mp(code: u8, rest: &str) -> Vec<u8> {
    attr(0x80, code, &hex(&format!("0002 01 {rest}")))
}

fn cases() -> Vec<Case> {
    use Outcome::*;
    let nh16 = "10 20010db8000000000000000000000001 00";
    let case = |name, bytes, expect| Case {
        name,
        bytes,
        expect,
    };
    vec![
        case("well-formed UPDATE", with(&[]), Ok),
        case(
            "ORIGIN of length 2",
            replacing(1, &attr(0x40, 1, &[0, 0])),
            TreatAsWithdraw,
        ),
        case(
            "ORIGIN with undefined value 3",
            replacing(1, &attr(0x40, 1, &[3])),
            TreatAsWithdraw,
        ),
        case(
            "ORIGIN flagged optional",
            replacing(1, &attr(0xc0, 1, &[0])),
            TreatAsWithdraw,
        ),
        case("ORIGIN missing", replacing(1, &[]), TreatAsWithdraw),
        case(
            "AS_PATH segment overruns the attribute",
            replacing(2, &attr(0x40, 2, &hex("02 03 fde9"))),
            TreatAsWithdraw,
        ),
        case(
            "AS_PATH segment of length zero",
            replacing(2, &attr(0x40, 2, &hex("02 00"))),
            TreatAsWithdraw,
        ),
        case(
            "AS_PATH segment type 5",
            replacing(2, &attr(0x40, 2, &hex("05 01 fde9"))),
            TreatAsWithdraw,
        ),
        case(
            "AS_PATH with one stray byte after a segment",
            replacing(2, &attr(0x40, 2, &hex("02 01 fde9 02"))),
            TreatAsWithdraw,
        ),
        case("AS_PATH missing", replacing(2, &[]), TreatAsWithdraw),
        case(
            "NEXT_HOP of length 5",
            replacing(3, &attr(0x40, 3, &[192, 0, 2, 1, 0])),
            TreatAsWithdraw,
        ),
        case(
            "NEXT_HOP is multicast 224.0.0.1",
            replacing(3, &attr(0x40, 3, &[224, 0, 0, 1])),
            TreatAsWithdraw,
        ),
        case(
            "NEXT_HOP missing beside classic NLRI",
            replacing(3, &[]),
            TreatAsWithdraw,
        ),
        case(
            "no attributes at all beside NLRI",
            update_msg(&[], &[], &NLRI),
            TreatAsWithdraw,
        ),
        case(
            "MULTI_EXIT_DISC of length 3",
            with(&attr(0x80, 4, &[0, 0, 1])),
            TreatAsWithdraw,
        ),
        case(
            "MULTI_EXIT_DISC flagged transitive",
            with(&attr(0xc0, 4, &[0, 0, 0, 1])),
            TreatAsWithdraw,
        ),
        case(
            "LOCAL_PREF of length 2",
            with(&attr(0x40, 5, &[0, 100])),
            TreatAsWithdraw,
        ),
        case(
            "ATOMIC_AGGREGATE of length 1",
            with(&attr(0x40, 6, &[0])),
            Discard,
        ),
        case(
            "AGGREGATOR of length 7 from a 2-octet peer",
            with(&attr(0xc0, 7, &[0; 7])),
            Discard,
        ),
        case(
            "COMMUNITIES of length 5",
            with(&attr(0xc0, 8, &[0; 5])),
            TreatAsWithdraw,
        ),
        case(
            "COMMUNITIES of length 0",
            with(&attr(0xc0, 8, &[])),
            TreatAsWithdraw,
        ),
        case(
            "ORIGINATOR_ID of length 3",
            with(&attr(0x80, 9, &[10, 0, 0])),
            TreatAsWithdraw,
        ),
        case(
            "CLUSTER_LIST of length 6",
            with(&attr(0x80, 10, &[0; 6])),
            TreatAsWithdraw,
        ),
        case(
            "LARGE_COMMUNITY of length 13",
            with(&attr(0xc0, 32, &[0; 13])),
            TreatAsWithdraw,
        ),
        case(
            "AS4_PATH segment overruns",
            with(&attr(0xc0, 17, &hex("02 02 0000fde9"))),
            Discard,
        ),
        case(
            "AS4_PATH flagged non-transitive",
            with(&attr(0x80, 17, &hex("02 01 0000fde9"))),
            Discard,
        ),
        case(
            "AS4_AGGREGATOR of length 6",
            with(&attr(0xc0, 18, &[0; 6])),
            Discard,
        ),
        case(
            "second MULTI_EXIT_DISC",
            with(&[attr(0x80, 4, &[0, 0, 0, 1]), attr(0x80, 4, &[0, 0, 0, 2])].concat()),
            Discard,
        ),
        case(
            "unrecognized well-known attribute 99",
            with(&attr(0x40, 99, &[1])),
            TreatAsWithdraw,
        ),
        case(
            "unknown optional non-transitive attribute",
            with(&attr(0x80, 99, &[1])),
            Ok,
        ),
        case(
            "unknown optional transitive attribute",
            with(&attr(0xc0, 99, &[1])),
            Ok,
        ),
        case(
            "MP_REACH_NLRI for L2VPN EVPN (AFI 25, SAFI 70)",
            with(&attr(0x80, 14, &hex("0019 46 04 0a000001 00"))),
            Discard,
        ),
        case(
            "MP_REACH_NLRI next hop of 5 bytes for IPv6",
            with(&mp(14, "05 2001db8000 00 30 20010db80001")),
            Reset(3, 9),
        ),
        case(
            "MP_REACH_NLRI cut inside its next hop",
            with(&mp(14, "10 20010db8")),
            Reset(3, 9),
        ),
        case(
            "MP_REACH_NLRI prefix /129",
            with(&mp(
                14,
                &format!("{nh16} 81 20010db8000000000000000000000000 00"),
            )),
            Reset(3, 9),
        ),
        case(
            "MP_UNREACH_NLRI prefix overruns",
            with(&mp(15, "30 2001")),
            Reset(3, 9),
        ),
        case(
            "MP_UNREACH_NLRI twice",
            with(&[mp(15, ""), mp(15, "")].concat()),
            Reset(3, 1),
        ),
        case(
            "MP_REACH_NLRI twice",
            with(&[mp(14, nh16), mp(14, nh16)].concat()),
            Reset(3, 1),
        ),
        case(
            "attribute length overruns the attribute section",
            update_msg(&[], &[origin(), hex("40 02 0a 02 01 fde9")].concat(), &NLRI),
            Reset(3, 1),
        ),
        case(
            "two bytes of attribute header left over",
            update_msg(
                &[],
                &[origin(), as_path(), next_hop(), vec![0x40, 5]].concat(),
                &NLRI,
            ),
            Reset(3, 1),
        ),
        case(
            "extended-length header cut short",
            update_msg(&[], &[origin(), vec![0x50, 5, 0]].concat(), &NLRI),
            Reset(3, 1),
        ),
        case(
            "withdrawn routes length overruns the message",
            msg(2, &hex("0010 18 0a0001 0000")),
            Reset(3, 1),
        ),
        case(
            "total attribute length overruns the message",
            msg(2, &hex("0000 0040 40 01 01 00")),
            Reset(3, 1),
        ),
        case(
            "NLRI prefix /33",
            update_msg(
                &[],
                &[origin(), as_path(), next_hop()].concat(),
                &hex("21 0a000000 00"),
            ),
            Reset(3, 10),
        ),
        case(
            "NLRI prefix cut short",
            update_msg(
                &[],
                &[origin(), as_path(), next_hop()].concat(),
                &[24, 198, 51],
            ),
            Reset(3, 10),
        ),
        case(
            "withdrawn prefix /40",
            update_msg(&hex("28 0a000000 00"), &[], &[]),
            Reset(3, 10),
        ),
        // RFC 7606 §3 h: with several errors the strongest outcome wins.
        case(
            "bad ORIGIN and bad ATOMIC_AGGREGATE",
            update_msg(
                &[],
                &[
                    attr(0x40, 1, &[3]),
                    as_path(),
                    next_hop(),
                    attr(0x40, 6, &[0]),
                ]
                .concat(),
                &NLRI,
            ),
            TreatAsWithdraw,
        ),
        case(
            "bad ORIGIN and MP_UNREACH_NLRI twice",
            update_msg(
                &[],
                &[
                    attr(0x40, 1, &[3]),
                    as_path(),
                    next_hop(),
                    mp(15, ""),
                    mp(15, ""),
                ]
                .concat(),
                &NLRI,
            ),
            Reset(3, 1),
        ),
    ]
}

#[test]
fn malformed_updates_get_the_rfc_7606_outcome() {
    let cases = cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let got = match decode_message(&case.bytes, &TWO) {
            Err(n) => Outcome::Reset(n.code, n.subcode),
            Ok(Message::Update(u)) if u.treat_as_withdraw => {
                assert!(
                    !u.errors.is_empty(),
                    "{}: treat-as-withdraw without a reason",
                    case.name
                );
                Outcome::TreatAsWithdraw
            }
            Ok(Message::Update(u)) if !u.errors.is_empty() => Outcome::Discard,
            Ok(Message::Update(_)) => Outcome::Ok,
            Ok(other) => panic!("{}: not an UPDATE: {other:?}", case.name),
        };
        if got != case.expect {
            failures.push(format!(
                "{}: expected {:?}, got {got:?}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ===== framing and the other messages' errors =====

#[test]
fn frame_len_checks_the_header() {
    let header = |len: u16, kind: u8| {
        let mut h = hex(MARKER);
        h.extend_from_slice(&len.to_be_bytes());
        h.push(kind);
        h
    };
    assert_eq!(frame_len(&[0xff; 18]), Ok(None));
    assert_eq!(frame_len(&header(4096, 2)), Ok(Some(4096)));
    let mut bad_marker = header(19, 4);
    bad_marker[3] = 0;
    assert_eq!(
        frame_len(&bad_marker),
        Err(Notification::connection_not_synchronized())
    );
    for (len, kind) in [
        (18, 4),
        (4097, 2),
        (20, 4),
        (28, 1),
        (22, 2),
        (20, 3),
        (22, 5),
    ] {
        assert_eq!(
            frame_len(&header(len, kind)),
            Err(Notification::bad_message_length(len)),
            "length {len} type {kind}"
        );
    }
    assert_eq!(
        frame_len(&header(19, 6)),
        Err(Notification::bad_message_type(6))
    );
}

#[test]
fn decode_message_refuses_a_frame_whose_length_disagrees() {
    let mut bytes = encode_keepalive();
    bytes.push(0);
    assert_eq!(
        decode_message(&bytes, &FOUR),
        Err(Notification::bad_message_length(19))
    );
    assert_eq!(
        decode_message(&bytes[..10], &FOUR),
        Err(Notification::bad_message_length(10))
    );
}

#[test]
fn open_errors_carry_the_rfc_4271_subcodes() {
    let open = |body: &str| msg(1, &hex(body));
    let cases = [
        (
            "03 fde9 00b4 c0000201 00",
            Notification::unsupported_version(4),
        ),
        (
            "04 fde9 0001 c0000201 00",
            Notification::unacceptable_hold_time(),
        ),
        (
            "04 fde9 0002 c0000201 00",
            Notification::unacceptable_hold_time(),
        ),
        (
            "04 fde9 00b4 00000000 00",
            Notification::bad_bgp_identifier(),
        ),
        (
            "04 fde9 00b4 c0000201 03 01 01 00",
            Notification::unsupported_optional_parameter(),
        ),
        // Parameter length 4 but three bytes follow: a length error as BIRD reports it.
        (
            "04 fde9 00b4 c0000201 04 02 01 02",
            Notification::bad_message_length(32),
        ),
        // A capability claiming 4 bytes in a 2-byte parameter.
        (
            "04 fde9 00b4 c0000201 04 02 02 41 04",
            Notification::new(2, 0, []),
        ),
        // 4-octet AS capability of 3 bytes.
        (
            "04 fde9 00b4 c0000201 05 02 03 41 01 00",
            Notification::new(2, 0, []),
        ),
        // ADD-PATH with send/receive value 4.
        (
            "04 fde9 00b4 c0000201 08 02 06 45 04 0001 01 04",
            Notification::new(2, 0, []),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(decode_message(&open(body), &FOUR), Err(expected), "{body}");
    }
}

#[test]
fn open_accepts_rfc_9072_extended_parameters_and_several_parameters() {
    // Extended: 255, 255, length 9, then type 2 with a 2-byte length of 6: 4-octet AS 65001.
    let extended = msg(
        1,
        &hex("04 fde9 00b4 c0000201 ff ff 0009 02 0006 41 04 0000fde9"),
    );
    // Classic, two parameters: route refresh, then 4-octet AS.
    let two_params = msg(
        1,
        &hex("04 fde9 00b4 c0000201 0c 02 02 02 00 02 06 41 04 0000fde9"),
    );
    for bytes in [extended, two_params] {
        let Ok(Message::Open(open)) = decode_message(&bytes, &FOUR) else {
            panic!("not an OPEN");
        };
        assert!(open.capabilities.contains(&Capability::FourOctetAs(65001)));
    }
}

#[test]
fn route_refresh_for_an_unknown_family_is_ignored_with_code_zero() {
    // AFI 25 SAFI 70 (L2VPN EVPN) and subtype 3: RFC 2918 §4 and RFC 7313 §5 say ignore.
    for body in ["0019 00 46", "0001 03 01"] {
        let bytes = msg(5, &hex(body));
        let err = decode_message(&bytes, &FOUR).unwrap_err();
        assert_eq!((err.code, err.subcode), (0, 0));
        assert_eq!(err.data, hex(body));
    }
    // Five body bytes: RFC 7313 §5 Invalid Message Length.
    assert_eq!(
        decode_message(&msg(5, &hex("0001 00 01 00")), &FOUR),
        Err(Notification::invalid_route_refresh_length())
    );
}

#[test]
fn a_run_of_prefixes_is_read_into_a_vector_of_its_exact_size() {
    // 10.0.0.0/8, 10.1.0.0/16, 10.1.2.0/24, 10.1.2.3/32, 0.0.0.0/0.
    let field = hex("080a 100a01 180a0102 200a010203 00");
    assert_eq!(super::count_prefixes(&field, false), 5);
    let v = super::read_prefixes(&field, Family::Ipv4Unicast, false).unwrap();
    assert_eq!((v.len(), v.capacity()), (5, 5));
    assert_eq!(v[2], net("10.1.2.0/24"));
    // With path identifiers: two /24s.
    let field = hex("00000001 180a0102 00000002 180a0103");
    assert_eq!(super::count_prefixes(&field, true), 2);
    let v = super::read_prefixes(&field, Family::Ipv4Unicast, true).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].path_id, 2);
}

#[test]
fn a_malformed_run_of_prefixes_is_still_an_error_and_counts_at_most_one_per_octet() {
    // A /24 cut short, and a length past 32.
    for field in [hex("180a01"), hex("21 0a010203ff")] {
        assert!(super::count_prefixes(&field, false) <= field.len());
        assert!(super::read_prefixes(&field, Family::Ipv4Unicast, false).is_err());
    }
    // Lengths of 255 claim far more than is there: still counted by octets present.
    let field = vec![0xff; 64];
    assert!(super::count_prefixes(&field, false) <= 64);
    assert!(super::count_prefixes(&field, true) <= 64);
}
