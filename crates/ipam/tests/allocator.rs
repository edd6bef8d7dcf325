//! The allocator against the in-memory store and a real etcd: Calico's order of decisions,
//! its data, and its guarantees.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use calico_api::ObjectMeta;
use calico_api::kinds::{IpPoolSpec, IpReservationSpec};
use calico_api::names::AffinityType;
use calico_api::resource::{IpPool, IpReservation};
use calico_datastore::{Key, KeyPrefix, ResourceClient};
use calico_etcd_harness::backend::Backend;
use calico_ipam::allocator::Clock;
use calico_ipam::model::{BlockAffinity, Handle, IpamConfig};
use calico_ipam::{AutoAssignArgs, IpUse, Ipam, IpamError, ReleaseRequest};
use ipnet::IpNet;

async fn add_pool(b: &Backend, name: &str, cidr: &str, f: impl FnOnce(&mut IpPoolSpec)) {
    let mut spec = IpPoolSpec {
        cidr: cidr.into(),
        ..Default::default()
    };
    f(&mut spec);
    ResourceClient::new(b.ds())
        .create(IpPool::new(ObjectMeta::named(name), spec))
        .await
        .unwrap();
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn one(ipam: &Ipam, host: &str, handle: &str) -> IpNet {
    let (v4, _) = ipam
        .auto_assign(&AutoAssignArgs::new(host, handle, 1, 0))
        .await
        .unwrap();
    assert_eq!(v4.ips.len(), 1, "{:?}", v4.messages);
    v4.ips[0]
}

async fn assert_consistent(ipam: &Ipam) {
    let report = ipam.check(None).await.unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

async fn first_assignment_claims_a_confirmed_block_for_the_node(b: &Backend) {
    add_pool(b, "p", "10.65.0.0/16", |_| {}).await;
    let ipam = Ipam::new(b.ds());
    let a = one(&ipam, "node1", "net.c1").await;
    assert_eq!(
        a.prefix_len(),
        26,
        "addresses come with their block's prefix length"
    );
    let block: IpNet = IpNet::new(a.addr(), 26).unwrap().trunc();
    let aff = b
        .ds()
        .get(&Key::Affinity {
            affinity_type: AffinityType::Host,
            owner: "node1".into(),
            cidr: block,
        })
        .await
        .unwrap();
    assert!(
        BlockAffinity::from_bytes(&aff.value)
            .unwrap()
            .is_confirmed()
    );
    let raw: serde_json::Value =
        serde_json::from_slice(&b.ds().get(&Key::Block { cidr: block }).await.unwrap().value)
            .unwrap();
    assert_eq!(raw["affinity"], "host:node1");
    assert_eq!(raw["cidr"], block.to_string());
    let h: Handle = serde_json::from_slice(
        &b.ds()
            .get(&Key::Handle {
                id: "net.c1".into(),
            })
            .await
            .unwrap()
            .value,
    )
    .unwrap();
    assert_eq!(h.block[&block.to_string()], 1);
    // The node's next address comes from the same block; another node gets another block.
    let a2 = one(&ipam, "node1", "net.c2").await;
    assert!(block.contains(&a2.addr()));
    let other = one(&ipam, "node2", "net.c3").await;
    assert!(!block.contains(&other.addr()));
    assert_consistent(&ipam).await;
}

async fn dual_stack_assigns_both_families_in_one_call(b: &Backend) {
    add_pool(b, "v4", "10.66.0.0/16", |_| {}).await;
    add_pool(b, "v6", "fd00:66::/48", |_| {}).await;
    let ipam = Ipam::new(b.ds());
    let (v4, v6) = ipam
        .auto_assign(&AutoAssignArgs::new("n", "net.dual", 1, 1))
        .await
        .unwrap();
    assert!(v4.is_complete() && v6.is_complete());
    assert!(v4.ips[0].addr().is_ipv4());
    assert_eq!(v6.ips[0].prefix_len(), 122);
    assert_eq!(ipam.ips_by_handle("net.dual").await.unwrap().len(), 2);
    assert_consistent(&ipam).await;
}

async fn a_full_node_borrows_unless_affinity_is_strict(b: &Backend) {
    add_pool(b, "tiny", "10.67.0.0/28", |s| s.block_size = Some(28)).await;
    let ipam = Ipam::new(b.ds());
    for i in 0..4 {
        one(&ipam, "owner", &format!("net.o{i}")).await;
    }
    // The pool's only block belongs to "owner": "borrower" borrows from it.
    let borrowed = one(&ipam, "borrower", "net.b0").await;
    assert!(borrowed.addr().to_string().starts_with("10.67.0."));
    assert!(
        b.ds()
            .list(&KeyPrefix::Affinities {
                affinity_type: AffinityType::Host,
                owner: Some("borrower".into()),
                ip_version: None
            })
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // With strict affinity the borrower gets nothing, and is told why.
    ipam.set_config(&IpamConfig {
        strict_affinity: true,
        ..IpamConfig::default()
    })
    .await
    .unwrap();
    let (v4, _) = ipam
        .auto_assign(&AutoAssignArgs::new("borrower", "net.b1", 1, 0))
        .await
        .unwrap();
    assert!(v4.ips.is_empty());
    assert!(
        v4.shortfall(4).unwrap().contains("strict affinity"),
        "{:?}",
        v4.messages
    );
    assert_consistent(&ipam).await;
}

async fn exhaustion_is_reported_as_a_short_result_with_the_reason(b: &Backend) {
    add_pool(b, "small", "10.68.0.0/30", |s| s.block_size = Some(30)).await;
    let ipam = Ipam::new(b.ds());
    let (v4, _) = ipam
        .auto_assign(&AutoAssignArgs::new("n", "net.all", 6, 0))
        .await
        .unwrap();
    assert_eq!(v4.ips.len(), 4);
    let msg = v4.shortfall(4).unwrap();
    assert!(
        msg.contains("assigned 4 out of 6 requested IPv4 addresses"),
        "{msg}"
    );
    assert!(
        msg.contains("no IPs available in pools: 10.68.0.0/30"),
        "{msg}"
    );
}

async fn release_by_handle_frees_everything_and_is_idempotent(b: &Backend) {
    add_pool(b, "p", "10.69.0.0/24", |_| {}).await;
    let ipam = Ipam::new(b.ds());
    let (v4, _) = ipam
        .auto_assign(&AutoAssignArgs::new("n", "net.multi", 3, 0))
        .await
        .unwrap();
    let released = ipam.release_by_handle("net.multi").await.unwrap();
    assert_eq!(released.len(), 3);
    assert!(matches!(
        b.ds()
            .get(&Key::Handle {
                id: "net.multi".into()
            })
            .await,
        Err(calico_datastore::DatastoreError::NotFound { .. })
    ));
    assert!(
        ipam.release_by_handle("net.multi")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        ipam.release_by_handle("never-existed")
            .await
            .unwrap()
            .is_empty()
    );
    // The node keeps its (now empty) block: affinity stays.
    let block = IpNet::new(v4.ips[0].addr(), 26).unwrap().trunc();
    assert!(b.ds().get(&Key::Block { cidr: block }).await.is_ok());
    assert_consistent(&ipam).await;
}

async fn releases_are_guarded_by_handle_and_sequence_number(b: &Backend) {
    add_pool(b, "p", "10.70.0.0/24", |_| {}).await;
    let ipam = Ipam::new(b.ds());
    let a = one(&ipam, "n", "net.first").await;
    let err = ipam
        .release_ips(&[ReleaseRequest {
            ip: a.addr(),
            handle: Some("net.someone-else".into()),
            sequence_number: None,
        }])
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::ReleaseRefused { .. }), "{err}");
    let err = ipam
        .release_ips(&[ReleaseRequest {
            ip: a.addr(),
            handle: None,
            sequence_number: Some(1),
        }])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("handed out again"), "{err}");
    let out = ipam
        .release_ips(&[
            ReleaseRequest {
                ip: a.addr(),
                handle: Some("net.first".into()),
                sequence_number: None,
            },
            ReleaseRequest {
                ip: ip("10.70.0.200"),
                handle: None,
                sequence_number: None,
            },
            ReleaseRequest {
                ip: ip("192.0.2.1"),
                handle: None,
                sequence_number: None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(out.released, vec![a.addr()]);
    assert_eq!(out.unallocated.len(), 2);
    assert_consistent(&ipam).await;
}

async fn specific_addresses_respect_use_reservations_and_owners(b: &Backend) {
    add_pool(b, "p", "10.71.0.0/24", |_| {}).await;
    add_pool(b, "off", "10.72.0.0/24", |s| s.disabled = true).await;
    ResourceClient::new(b.ds())
        .create(IpReservation::new(
            ObjectMeta::named("r"),
            IpReservationSpec {
                reserved_cidrs: vec!["10.71.0.0/28".into()],
            },
        ))
        .await
        .unwrap();
    let ipam = Ipam::new(b.ds());
    let got = ipam
        .assign_ip(
            ip("10.71.0.100"),
            "net.fixed",
            &BTreeMap::new(),
            "n",
            IpUse::Workload,
        )
        .await
        .unwrap();
    assert_eq!(got, "10.71.0.100/26".parse().unwrap());
    assert!(matches!(
        ipam.assign_ip(ip("10.71.0.100"), "net.other", &BTreeMap::new(), "n", IpUse::Workload).await,
        Err(IpamError::InUse { handle: Some(h), .. }) if h == "net.fixed"
    ));
    assert!(matches!(
        ipam.assign_ip(
            ip("10.71.0.5"),
            "net.r",
            &BTreeMap::new(),
            "n",
            IpUse::Workload
        )
        .await,
        Err(IpamError::Reserved { .. })
    ));
    assert!(matches!(
        ipam.assign_ip(
            ip("10.72.0.5"),
            "net.d",
            &BTreeMap::new(),
            "n",
            IpUse::Workload
        )
        .await,
        Err(IpamError::NotInAnyPool { .. })
    ));
    assert!(matches!(
        ipam.assign_ip(
            ip("192.0.2.5"),
            "net.x",
            &BTreeMap::new(),
            "n",
            IpUse::Workload
        )
        .await,
        Err(IpamError::NotInAnyPool { .. })
    ));
    // AutoAssign never hands out reserved addresses either.
    let (v4, _) = ipam
        .auto_assign(&AutoAssignArgs::new("n2", "net.many", 64, 0))
        .await
        .unwrap();
    assert!(
        v4.ips
            .iter()
            .all(|n| !"10.71.0.0/28".parse::<IpNet>().unwrap().contains(&n.addr()))
    );
    assert_consistent(&ipam).await;
}

async fn the_per_host_block_limit_is_enforced(b: &Backend) {
    add_pool(b, "p", "10.73.0.0/24", |s| s.block_size = Some(30)).await;
    let ipam = Ipam::new(b.ds());
    ipam.set_config(&IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 1,
        ..IpamConfig::default()
    })
    .await
    .unwrap();
    let (v4, _) = ipam
        .auto_assign(&AutoAssignArgs::new("n", "net.a", 4, 0))
        .await
        .unwrap();
    assert_eq!(v4.ips.len(), 4);
    let err = ipam
        .auto_assign(&AutoAssignArgs::new("n", "net.b", 1, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpamError::BlockLimit { limit: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("maxBlocksPerHost"));
}

async fn bad_requests_write_nothing(b: &Backend) {
    add_pool(b, "p", "10.74.0.0/24", |_| {}).await;
    let ipam = Ipam::new(b.ds());
    let before = b
        .ds()
        .list(&KeyPrefix::Everything)
        .await
        .unwrap()
        .items
        .len();
    let cases: Vec<(AutoAssignArgs, &str)> = vec![
        (
            AutoAssignArgs::new("n", "net.z", 0, 0),
            "at least one address",
        ),
        (
            AutoAssignArgs::new("n", "net.k", 1000, 0),
            "the limit is 256",
        ),
        (AutoAssignArgs::new("n", "bad/handle", 1, 0), "handle_id"),
        (AutoAssignArgs::new("n", "", 1, 0), "handle_id"),
        (AutoAssignArgs::new("", "net.h", 1, 0), "hostname"),
        (
            AutoAssignArgs {
                ipv4_pools: vec!["no-such-pool".into()],
                ..AutoAssignArgs::new("n", "net.u", 1, 0)
            },
            "does not exist",
        ),
        (
            AutoAssignArgs::new("n", "net.v6", 0, 1),
            "no configured Calico IPv6 pools",
        ),
    ];
    for (args, needle) in cases {
        let err = ipam.auto_assign(&args).await.unwrap_err();
        assert!(
            err.to_string().contains(needle),
            "{err} should mention {needle}"
        );
    }
    assert_eq!(
        b.ds()
            .list(&KeyPrefix::Everything)
            .await
            .unwrap()
            .items
            .len(),
        before
    );
}

async fn node_deletion_releases_affinities_but_never_addresses_in_use(b: &Backend) {
    add_pool(b, "p", "10.75.0.0/24", |s| s.block_size = Some(28)).await;
    let ipam = Ipam::new(b.ds());
    let kept = one(&ipam, "gone", "net.live").await;
    // A second block, emptied again.
    ipam.auto_assign(&AutoAssignArgs::new("gone", "net.tmp", 16, 0))
        .await
        .unwrap();
    ipam.release_by_handle("net.tmp").await.unwrap();
    let n = ipam.release_host_affinities("gone", false).await.unwrap();
    assert!(n >= 1);
    let affs = b
        .ds()
        .list(&KeyPrefix::Affinities {
            affinity_type: AffinityType::Host,
            owner: Some("gone".into()),
            ip_version: None,
        })
        .await
        .unwrap();
    assert!(affs.items.is_empty());
    // The address in use survives in a block without affinity.
    let allocs = ipam.allocations().await.unwrap();
    assert_eq!(
        allocs.iter().map(|a| a.0).collect::<Vec<_>>(),
        vec![kept.addr()]
    );
    let blk: serde_json::Value = serde_json::from_slice(
        &b.ds()
            .get(&Key::Block {
                cidr: IpNet::new(kept.addr(), 28).unwrap().trunc(),
            })
            .await
            .unwrap()
            .value,
    )
    .unwrap();
    assert!(blk["affinity"].is_null());
    assert_consistent(&ipam).await;
}

/// A clock tests can move forward.
#[derive(Debug)]
struct TestClock(Mutex<SystemTime>);

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

async fn an_empty_block_abandoned_by_another_node_is_reclaimed_after_a_minute(b: &Backend) {
    add_pool(b, "single", "10.76.0.0/28", |s| s.block_size = Some(28)).await;
    let clock = Arc::new(TestClock(Mutex::new(SystemTime::now())));
    let ipam = Ipam::with_clock(b.ds(), clock.clone());
    one(&ipam, "old", "net.o").await;
    ipam.release_by_handle("net.o").await.unwrap();
    ipam.set_config(&IpamConfig {
        strict_affinity: true,
        ..IpamConfig::default()
    })
    .await
    .unwrap();
    // Too early: the block stays "old"'s.
    let (v4, _) = ipam
        .auto_assign(&AutoAssignArgs::new("new", "net.n", 1, 0))
        .await
        .unwrap();
    assert!(v4.ips.is_empty());
    *clock.0.lock().unwrap() += Duration::from_secs(61);
    let (v4, _) = ipam
        .auto_assign(&AutoAssignArgs::new("new", "net.n", 1, 0))
        .await
        .unwrap();
    assert_eq!(v4.ips.len(), 1, "{:?}", v4.messages);
    let blk: serde_json::Value = serde_json::from_slice(
        &b.ds()
            .get(&Key::Block {
                cidr: "10.76.0.0/28".parse().unwrap(),
            })
            .await
            .unwrap()
            .value,
    )
    .unwrap();
    assert_eq!(blk["affinity"], "host:new");
    assert_consistent(&ipam).await;
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(&super::Backend::memory()).await })*
        }
        mod etcd {
            $(#[tokio::test] async fn $name() { super::$name(&super::Backend::etcd().await).await })*
        }
    };
}

both_backends!(
    first_assignment_claims_a_confirmed_block_for_the_node,
    dual_stack_assigns_both_families_in_one_call,
    a_full_node_borrows_unless_affinity_is_strict,
    exhaustion_is_reported_as_a_short_result_with_the_reason,
    release_by_handle_frees_everything_and_is_idempotent,
    releases_are_guarded_by_handle_and_sequence_number,
    specific_addresses_respect_use_reservations_and_owners,
    the_per_host_block_limit_is_enforced,
    bad_requests_write_nothing,
    node_deletion_releases_affinities_but_never_addresses_in_use,
    an_empty_block_abandoned_by_another_node_is_reclaimed_after_a_minute,
);
