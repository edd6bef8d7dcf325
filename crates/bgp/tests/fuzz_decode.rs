//! Property-based fuzzing of the BGP codec and session, in `cargo test`; the same checks
//! (`calico_bgp::fuzzing`) run coverage-guided under libFuzzer in `fuzz/` (`make fuzz`).
//!
//! 1. The decoder never panics: not on random bytes, not on random bytes behind a valid
//!    header, not on valid messages that were flipped, cut, stretched or had a length field
//!    rewritten, under every [`Codec`] a session can negotiate. Whatever it accepts, the
//!    encoder can write back without panicking and the decoder can read again.
//! 2. Encoding then decoding an UPDATE keeps every prefix and every attribute.
//! 3. A session fed random events and mutated conversations never panics, sends only whole
//!    decodable messages and reports its state changes in order.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use calico_bgp::fuzzing::{check_decoder, check_session, decoder_seeds, session_seeds};
use calico_bgp::types::{
    AsPath, AsSegment, Attrs, Family, LargeCommunity, Nlri, Origin, RawAttribute,
};
use calico_bgp::wire::{
    Codec, MAX_MESSAGE_LEN, Message, decode_message, encode_update, encode_withdraw,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

const CASES: u32 = 2000;

/// A classic withdrawn-routes or NLRI field: mostly well-formed IPv4 prefixes (so that
/// the attribute parsing behind it is reached), sometimes any bytes.
fn prefix_field() -> impl Strategy<Value = Vec<u8>> {
    let prefix = (0..=32u8, any::<[u8; 4]>()).prop_map(|(len, octets)| {
        let mut out = vec![len];
        out.extend_from_slice(&octets[..usize::from(len).div_ceil(8)]);
        out
    });
    prop_oneof![
        2 => Just(Vec::new()),
        2 => proptest::collection::vec(prefix, 1..4).prop_map(|p| p.concat()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

/// One path attribute built to reach the attribute parsers: the flags and type codes they
/// check, short values of any length, and MP attributes whose AFI, SAFI and next hop
/// length are mostly plausible so that the prefix parsing behind them is reached too.
fn attribute() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        4 => prop::sample::select(vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 17, 18, 32]),
        1 => any::<u8>(),
    ];
    // Mostly the flags the attribute must have (so its value is read), with or without
    // Extended Length; sometimes anything.
    let flags = prop_oneof![
        3 => any::<bool>().prop_map(|long| if long { 0x10 } else { 0 }),
        1 => any::<u8>().prop_map(|f| f | 0x01),
    ];
    // AFI, SAFI, next hop length and the rest of an MP attribute, mostly plausible.
    let mp_parts = (
        prop::sample::select(vec![1u16, 2, 2, 25]),
        prop::sample::select(vec![1u8, 1, 70]),
        prop::sample::select(vec![4u8, 16, 32, 0, 5, 33]),
        proptest::collection::vec(any::<u8>(), 0..60),
    );
    let value = prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..16),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ];
    (flags, code, value, mp_parts, any::<bool>()).prop_map(|(flags, code, value, mp, plain)| {
        // An odd value marks "any flags"; otherwise the attribute's own plus the length bit.
        let flags = if flags & 0x01 != 0 {
            flags & !0x01
        } else {
            expected_flags(code) | flags
        };
        let value = match code {
            14 | 15 if !plain => {
                let (afi, safi, nh_len, rest) = mp;
                let mut v = afi.to_be_bytes().to_vec();
                v.push(safi);
                if code == 14 {
                    v.push(nh_len);
                }
                v.extend(rest);
                v
            }
            _ => value,
        };
        let mut out = vec![flags, code];
        if flags & 0x10 != 0 {
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        } else {
            out.push(value.len() as u8);
        }
        out.extend(value);
        out
    })
}

/// The Optional and Transitive bits of each attribute type (RFC 4271 §5 and the RFCs of
/// the later types); unknown types get optional transitive, the kind that is kept.
fn expected_flags(code: u8) -> u8 {
    match code {
        1 | 2 | 3 | 5 | 6 => 0x40,
        4 | 9 | 10 | 14 | 15 => 0x80,
        _ => 0xC0,
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        xor: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Writes a 16-bit value anywhere, which hits every length field sooner or later.
    SetU16 {
        at: usize,
        value: u16,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), any::<u16>()).prop_map(|(at, value)| Mutation::SetU16 { at, value }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip { at, xor } => {
            let i = at % bytes.len();
            bytes[i] ^= xor;
        }
        Mutation::Truncate { at } => bytes.truncate(at % bytes.len()),
        Mutation::Insert { at, bytes: new } => {
            let i = at % bytes.len();
            bytes.splice(i..i, new.iter().copied());
        }
        Mutation::SetU16 { at, value } => {
            if bytes.len() >= 2 {
                let i = at % (bytes.len() - 1);
                bytes[i..i + 2].copy_from_slice(&value.to_be_bytes());
            }
        }
    }
}

/// Puts the real length back in the header, so a mutated body gets past framing and into
/// the field parsers.
fn fix_header_length(bytes: &mut [u8]) {
    if bytes.len() >= 19 && bytes.len() <= MAX_MESSAGE_LEN {
        let len = (bytes.len() as u16).to_be_bytes();
        bytes[16..18].copy_from_slice(&len);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_decoder(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        kind in 0..=6u8,
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![0xFF; 16];
        bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&body);
        check_decoder(&bytes);
    }

    #[test]
    fn random_attribute_lists_never_panic(
        withdrawn in prefix_field(),
        attrs in proptest::collection::vec(attribute(), 0..6),
        nlri in prefix_field(),
    ) {
        let attrs = attrs.concat();
        let mut body = (withdrawn.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&withdrawn);
        body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        body.extend_from_slice(&attrs);
        body.extend_from_slice(&nlri);
        let mut bytes = vec![0xFF; 16];
        bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        bytes.push(2);
        bytes.extend_from_slice(&body);
        check_decoder(&bytes);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        fix_length in any::<bool>(),
    ) {
        let seeds = decoder_seeds();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        if fix_length {
            fix_header_length(&mut bytes);
        }
        check_decoder(&bytes);
    }
}

// ===== the session =====

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_session_events_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = check_session(&bytes);
    }

    #[test]
    fn mutated_conversations_never_panic(
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let seeds = session_seeds();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        let _ = check_session(&bytes);
    }
}

/// The seed conversations reach Established and carry routes: the mutations start from
/// sessions that work, not from ones that fail at the OPEN.
#[test]
fn session_seeds_reach_established() {
    for seed in session_seeds() {
        // The UPDATE (both prefixes in one) and the ROUTE-REFRESH.
        assert_eq!(check_session(&seed), 2, "config byte {:#04x}", seed[0]);
    }
}

/// The seed corpora of the libFuzzer targets (`fuzz/seeds/<target>/`) are the seeds above,
/// byte for byte. After the seeds change, write them again with
/// `UPDATE_FUZZ_SEEDS=1 cargo test -p calico-bgp --test fuzz_decode fuzz_seed_corpora`.
#[test]
fn fuzz_seed_corpora_are_the_seeds_above() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let update = std::env::var_os("UPDATE_FUZZ_SEEDS").is_some();
    for (target, seeds) in [("decode", decoder_seeds()), ("session", session_seeds())] {
        let dir = root.join(target);
        if update {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create the seed directory");
            for (i, seed) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write a seed");
            }
        }
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("the seed directory (write it with UPDATE_FUZZ_SEEDS=1)")
            .map(|e| e.expect("a directory entry").path())
            .collect();
        files.sort();
        let on_disk: Vec<Vec<u8>> = files
            .iter()
            .map(|f| std::fs::read(f).expect("read a seed"))
            .collect();
        assert_eq!(
            on_disk, seeds,
            "fuzz/seeds/{target} differs from the seeds in this file: write them again with UPDATE_FUZZ_SEEDS=1"
        );
    }
}

// ===== decode(encode(update)) keeps prefixes and attributes =====

fn v4_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u32>(), 0..=32u8).prop_map(|(a, len)| {
        Ipv4Net::new(Ipv4Addr::from(a), len)
            .map(|n| IpNet::V4(n.trunc()))
            .unwrap_or_default()
    })
}

fn v6_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 0..=128u8).prop_map(|(a, len)| {
        Ipv6Net::new(Ipv6Addr::from(a), len)
            .map(|n| IpNet::V6(n.trunc()))
            .unwrap_or_default()
    })
}

fn as_path() -> impl Strategy<Value = AsPath> {
    // Confederation members are 2-octet (a 2-octet peer could not be told otherwise: RFC
    // 6793 §6 keeps them out of AS4_PATH) and lead the path, where RFC 5065 puts them.
    let confed = proptest::option::of(proptest::collection::vec(64512..65535u32, 1..4));
    let segment = prop_oneof![
        proptest::collection::vec(any::<u32>(), 1..10).prop_map(AsSegment::Sequence),
        proptest::collection::vec(any::<u32>(), 1..5).prop_map(AsSegment::Set),
    ];
    (confed, proptest::collection::vec(segment, 0..4)).prop_map(|(confed, rest)| AsPath {
        segments: confed
            .map(AsSegment::ConfedSequence)
            .into_iter()
            .chain(rest)
            .collect(),
    })
}

fn host_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("a host address", |a| {
            !(a.is_unspecified() || a.is_multicast() || a.is_broadcast())
        })
}

fn host_v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>()
        .prop_map(Ipv6Addr::from)
        .prop_filter("a host address", |a| {
            !(a.is_unspecified() || a.is_multicast())
        })
}

fn unknown_attrs() -> impl Strategy<Value = Vec<RawAttribute>> {
    // Type codes 40..=250 are none we interpret; sorted and unique, as the decoder returns
    // them (the encoder orders by type code, a repeat would be discarded).
    proptest::collection::btree_map(
        40..=250u8,
        proptest::collection::vec(any::<u8>(), 0..300),
        0..3,
    )
    .prop_map(|m: BTreeMap<u8, Vec<u8>>| {
        m.into_iter()
            .map(|(type_code, value)| RawAttribute {
                flags: 0xE0,
                type_code,
                value,
            })
            .collect()
    })
}

prop_compose! {
    fn attrs()(
        origin in prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)],
        as_path in as_path(),
        med in proptest::option::of(any::<u32>()),
        local_pref in proptest::option::of(any::<u32>()),
        atomic_aggregate in any::<bool>(),
        aggregator in proptest::option::of((any::<u32>(), any::<u32>().prop_map(Ipv4Addr::from))),
        communities in proptest::collection::vec(any::<u32>(), 0..20),
        large in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..5),
        originator_id in proptest::option::of(any::<u32>().prop_map(Ipv4Addr::from)),
        cluster_list in proptest::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 0..5),
        unknown in unknown_attrs(),
    ) -> Attrs {
        Attrs {
            origin,
            as_path,
            next_hop: None,
            link_local_next_hop: None,
            med,
            local_pref,
            atomic_aggregate,
            aggregator,
            communities,
            large_communities: large.into_iter().map(|(a, b, c)| LargeCommunity(a, b, c)).collect(),
            originator_id,
            cluster_list,
            unknown,
        }
    }
}

prop_compose! {
    /// A family's prefixes, next hops and codec.
    fn announcement()(
        ipv6 in any::<bool>(),
        four_octet_as in any::<bool>(),
        add_path in any::<bool>(),
        v4 in proptest::collection::vec((v4_prefix(), any::<u32>()), 1..300),
        v6 in proptest::collection::vec((v6_prefix(), any::<u32>()), 1..300),
        nh4 in host_v4(),
        nh6 in host_v6(),
        link_local in proptest::option::of(host_v6()),
        mut attrs in attrs(),
    ) -> (Attrs, Vec<Nlri>, Codec) {
        let family = if ipv6 { Family::Ipv6Unicast } else { Family::Ipv4Unicast };
        let mut per_family = [false, false];
        per_family[family.index()] = add_path;
        let codec = Codec { four_octet_as, add_path_rx: per_family, add_path_tx: per_family };
        let nlri: Vec<Nlri> = if ipv6 { v6 } else { v4 }
            .into_iter()
            .map(|(prefix, id)| Nlri { prefix, path_id: if add_path { id } else { 0 } })
            .collect();
        if ipv6 {
            attrs.next_hop = Some(IpAddr::V6(nh6));
            attrs.link_local_next_hop = link_local;
        } else {
            attrs.next_hop = Some(IpAddr::V4(nh4));
        }
        // RFC 6793 §4.2.3: from a 2-octet peer, an AGGREGATOR that is not AS_TRANS means
        // AS4_PATH is stale and ignored; keep that legitimate loss out of this property.
        if !four_octet_as
            && attrs.as_path.flat().iter().any(|a| *a > 0xFFFF)
            && attrs.aggregator.is_some_and(|(a, _)| a <= 0xFFFF)
        {
            attrs.aggregator = None;
        }
        (attrs, nlri, codec)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES / 2))]

    #[test]
    fn decode_of_encode_keeps_prefixes_and_attributes((attrs, nlri, codec) in announcement()) {
        let messages = encode_update(&attrs, &nlri, &codec);
        prop_assert!(!messages.is_empty());
        let mut announced = Vec::new();
        for m in &messages {
            prop_assert!(m.len() <= MAX_MESSAGE_LEN);
            let Ok(Message::Update(update)) = decode_message(m, &codec) else {
                return Err(TestCaseError::fail("not an UPDATE"));
            };
            prop_assert!(!update.treat_as_withdraw, "{:?}", update.errors);
            prop_assert!(update.errors.is_empty(), "{:?}", update.errors);
            prop_assert_eq!(update.attrs.as_ref(), Some(&attrs));
            announced.extend(update.announced);
        }
        let mut expected = nlri.clone();
        expected.sort();
        announced.sort();
        prop_assert_eq!(announced, expected);

        let mut withdrawn = Vec::new();
        for m in encode_withdraw(&nlri, &codec) {
            let Ok(Message::Update(update)) = decode_message(&m, &codec) else {
                return Err(TestCaseError::fail("not an UPDATE"));
            };
            withdrawn.extend(update.withdrawn);
        }
        let mut expected = nlri;
        expected.sort();
        withdrawn.sort();
        prop_assert_eq!(withdrawn, expected);
    }
}
