use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn no_reservations(_: IpAddr) -> bool {
    false
}

fn attrs(pod: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(ATTR_POD.to_string(), pod.to_string())])
}

#[test]
fn calicos_json_reads_and_writes_back_byte_for_byte() {
    // The shape Calico writes under /calico/ipam/v2/assignment/ipv4/block/10.0.0.0-30.
    let json = r#"{"cidr":"10.0.0.0/30","affinity":"host:node1","allocations":[0,null,1,null],"unallocated":[1,3],"attributes":[{"handle_id":"k8s-pod-network.abc","secondary":{"namespace":"default","node":"node1","pod":"web","timestamp":"2024-05-01 10:00:00 +0000 UTC"}},{"handle_id":"ipip-tunnel-addr-node1","secondary":{"node":"node1","type":"ipipTunnelAddress"}}],"sequenceNumber":1714557600000000002,"sequenceNumberForAllocation":{"0":1714557600000000000,"2":1714557600000000001},"deleted":false}"#;
    let b: AllocationBlock = serde_json::from_str(json).unwrap();
    assert_eq!(b.owner(), Some((AffinityType::Host, "node1")));
    assert_eq!(b.num_allocated(), 2);
    assert_eq!(
        b.attributes_for(v4("10.0.0.2")).unwrap().handle(),
        Some("ipip-tunnel-addr-node1")
    );
    assert_eq!(b.sequence_number_for(2), 1714557600000000001);
    assert!(b.check().is_empty());
    assert_eq!(serde_json::to_string(&b).unwrap(), json);
}

#[test]
fn legacy_host_affinity_and_carriage_return_handles_are_understood() {
    let json = r#"{"cidr":"10.0.0.0/31","affinity":null,"hostAffinity":"old-node","allocations":[0,null],"unallocated":[1],"attributes":[{"handle_id":"abc\rjunk"}],"sequenceNumber":1,"sequenceNumberForAllocation":{},"deleted":false}"#;
    let b: AllocationBlock = serde_json::from_str(json).unwrap();
    assert_eq!(b.owner(), Some((AffinityType::Host, "old-node")));
    assert_eq!(b.ips_for_handle("abc"), vec![v4("10.0.0.0")]);
}

#[test]
fn assignment_takes_from_the_head_and_release_returns_to_the_tail() {
    let mut b = AllocationBlock::new(
        "10.1.0.0/29".parse().unwrap(),
        Some((AffinityType::Host, "n1")),
        None,
        100,
    );
    let got = b.assign(3, Some("h1"), &attrs("a"), &no_reservations);
    assert_eq!(
        got,
        vec![
            "10.1.0.0/29".parse::<IpNet>().unwrap(),
            "10.1.0.1/29".parse().unwrap(),
            "10.1.0.2/29".parse().unwrap()
        ]
    );
    assert_eq!(
        b.attributes.len(),
        1,
        "one record shared by the call's addresses"
    );
    let r = b
        .release(&[ReleaseRequest {
            ip: v4("10.1.0.1"),
            handle: None,
            sequence_number: None,
        }])
        .unwrap();
    assert_eq!(r.released, vec![v4("10.1.0.1")]);
    assert_eq!(r.by_handle, BTreeMap::from([("h1".to_string(), 1)]));
    assert_eq!(
        *b.unallocated.last().unwrap(),
        1,
        "the released ordinal goes to the tail"
    );
    let next = b.assign(1, Some("h2"), &attrs("b"), &no_reservations);
    assert_eq!(
        next,
        vec!["10.1.0.3/29".parse().unwrap()],
        "the longest-free address is reused first"
    );
    assert!(b.check().is_empty());
}

#[test]
fn reserved_addresses_are_skipped_and_stay_free() {
    let mut b = AllocationBlock::new("10.1.0.0/30".parse().unwrap(), None, None, 1);
    let reserved = |ip: IpAddr| ip == v4("10.1.0.0") || ip == v4("10.1.0.2");
    let got = b.assign(4, Some("h"), &BTreeMap::new(), &reserved);
    assert_eq!(got.len(), 2);
    assert_eq!(
        b.unallocated,
        vec![0, 2],
        "reserved ordinals keep their place"
    );
    assert_eq!(b.num_free(&reserved), 0);
    assert_eq!(b.num_free(&no_reservations), 2);
}

#[test]
fn stale_releases_are_refused_whole() {
    let mut b = AllocationBlock::new("10.1.0.0/30".parse().unwrap(), None, None, 7);
    b.assign(2, Some("h1"), &BTreeMap::new(), &no_reservations);
    let seq = b.sequence_number_for(0);
    // The address is released and handed to someone else at a later sequence number.
    b.release_handle("h1", None);
    b.sequence_number += 1;
    b.assign_ip(v4("10.1.0.0"), Some("h2"), &BTreeMap::new())
        .unwrap();
    let err = b
        .release(&[
            ReleaseRequest {
                ip: v4("10.1.0.0"),
                handle: None,
                sequence_number: Some(seq),
            },
            ReleaseRequest {
                ip: v4("10.1.0.3"),
                handle: None,
                sequence_number: None,
            },
        ])
        .unwrap_err();
    assert!(
        matches!(err, BlockReleaseError::BadSequenceNumber { .. }),
        "{err}"
    );
    let err = b
        .release(&[ReleaseRequest {
            ip: v4("10.1.0.0"),
            handle: Some("h1".into()),
            sequence_number: None,
        }])
        .unwrap_err();
    assert!(matches!(err, BlockReleaseError::BadHandle { .. }), "{err}");
    assert_eq!(
        b.ips_for_handle("h2"),
        vec![v4("10.1.0.0")],
        "nothing changed"
    );
}

#[test]
fn assigning_a_taken_address_fails_and_empty_ignores_windows_reservations() {
    let mut b = AllocationBlock::new("10.1.0.0/30".parse().unwrap(), None, None, 1);
    b.assign_ip(v4("10.1.0.1"), Some("h"), &BTreeMap::new())
        .unwrap();
    assert_eq!(
        b.assign_ip(v4("10.1.0.1"), Some("other"), &BTreeMap::new()),
        Err(AssignIpError::InUse {
            handle: Some("h".into())
        })
    );
    assert_eq!(
        b.assign_ip(v4("10.2.0.1"), None, &BTreeMap::new()),
        Err(AssignIpError::NotInBlock)
    );
    assert!(!b.is_empty());
    b.release_handle("h", None);
    assert!(b.is_empty());
    b.assign(
        1,
        Some(WINDOWS_RESERVED_HANDLE),
        &BTreeMap::new(),
        &no_reservations,
    );
    assert!(b.is_empty());
}

#[test]
fn unreferenced_attribute_records_are_compacted() {
    let mut b = AllocationBlock::new("10.1.0.0/29".parse().unwrap(), None, None, 1);
    b.assign(1, Some("a"), &attrs("a"), &no_reservations);
    b.assign(1, Some("b"), &attrs("b"), &no_reservations);
    b.assign(1, Some("c"), &attrs("c"), &no_reservations);
    b.release_handle("a", None);
    assert_eq!(b.attributes.len(), 2);
    assert_eq!(b.ips_for_handle("c"), vec![v4("10.1.0.2")]);
    assert!(b.check().is_empty());
}

#[test]
fn ipv6_blocks_work_like_ipv4() {
    let mut b = AllocationBlock::new(
        "fd00::40/122".parse().unwrap(),
        Some((AffinityType::Host, "n")),
        None,
        1,
    );
    assert_eq!(b.size(), 64);
    let got = b.assign(2, Some("h"), &BTreeMap::new(), &no_reservations);
    assert_eq!(got[1], "fd00::41/122".parse().unwrap());
    assert_eq!(b.ordinal("fd00::7f".parse().unwrap()), Some(63));
    assert_eq!(b.ordinal("fd00::80".parse().unwrap()), None);
}

#[test]
fn structural_damage_is_reported() {
    let mut b = AllocationBlock::new("10.1.0.0/30".parse().unwrap(), None, None, 1);
    b.unallocated.push(0);
    b.allocations[3] = Some(9);
    let problems = b.check();
    assert!(
        problems.iter().any(|p| p.contains("free twice")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("does not exist")),
        "{problems:?}"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Assign { n: usize, handle: u8 },
    AssignIp { ordinal: usize, handle: u8 },
    Release { ordinal: usize },
    ReleaseHandle { handle: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..5, 0u8..4).prop_map(|(n, handle)| Op::Assign { n, handle }),
        (0usize..16, 0u8..4).prop_map(|(ordinal, handle)| Op::AssignIp { ordinal, handle }),
        (0usize..16).prop_map(|ordinal| Op::Release { ordinal }),
        (0u8..4).prop_map(|handle| Op::ReleaseHandle { handle }),
    ]
}

proptest! {
    /// Any sequence of operations keeps the block consistent, never hands out an address
    /// twice, and its JSON always reads back identically.
    #[test]
    fn random_operations_keep_the_block_consistent(ops in prop::collection::vec(op(), 0..60)) {
        let mut b = AllocationBlock::new("10.9.0.0/28".parse().unwrap(), None, None, 1000);
        let mut model: BTreeMap<usize, u8> = BTreeMap::new();
        for op in ops {
            b.sequence_number += 1;
            match op {
                Op::Assign { n, handle } => {
                    let got = b.assign(n, Some(&format!("h{handle}")), &BTreeMap::new(), &no_reservations);
                    prop_assert_eq!(got.len(), n.min(16 - model.len()));
                    for ip in got {
                        let o = b.ordinal(ip.addr()).unwrap();
                        prop_assert!(model.insert(o, handle).is_none(), "ordinal {} handed out twice", o);
                    }
                }
                Op::AssignIp { ordinal, handle } => {
                    let r = b.assign_ip(b.ip(ordinal), Some(&format!("h{handle}")), &BTreeMap::new());
                    prop_assert_eq!(r.is_ok(), !model.contains_key(&ordinal));
                    model.entry(ordinal).or_insert(handle);
                }
                Op::Release { ordinal } => {
                    let r = b.release(&[ReleaseRequest { ip: b.ip(ordinal), handle: None, sequence_number: None }]).unwrap();
                    prop_assert_eq!(r.released.len(), usize::from(model.remove(&ordinal).is_some()));
                }
                Op::ReleaseHandle { handle } => {
                    let released = b.release_handle(&format!("h{handle}"), None);
                    let before = model.len();
                    model.retain(|_, h| *h != handle);
                    prop_assert_eq!(released.len(), before - model.len());
                }
            }
            prop_assert!(b.check().is_empty(), "{:?}", b.check());
            prop_assert_eq!(b.num_allocated(), model.len());
            prop_assert_eq!(b.unallocated.len() + model.len(), 16);
            let json = serde_json::to_string(&b).unwrap();
            prop_assert_eq!(&serde_json::from_str::<AllocationBlock>(&json).unwrap(), &b);
        }
    }
}
