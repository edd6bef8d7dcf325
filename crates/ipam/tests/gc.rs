//! The leak collector: a live pod's address is never released (even with lagging or missing
//! metadata); a dead pod's is, after two scans and the grace period; a deleted node's tunnel
//! addresses and block affinities are released; only the lease holder acts.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use calico_api::ObjectMeta;
use calico_api::kinds::{IpPoolSpec, NodeSpec, WorkloadEndpointSpec};
use calico_api::names::AffinityType;
use calico_api::resource::{IpPool, Node, WorkloadEndpoint};
use calico_datastore::{KeyPrefix, ResourceClient};
use calico_etcd_harness::backend::Backend;
use calico_ipam::allocator::Clock;
use calico_ipam::gc::{Collector, GcConfig};
use calico_ipam::{AutoAssignArgs, IpUse, Ipam};

#[derive(Debug)]
struct TestClock(Mutex<SystemTime>);

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

impl TestClock {
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

const GRACE: Duration = Duration::from_secs(900);

struct World {
    b: Backend,
    ipam: Ipam,
    res: ResourceClient,
    clock: Arc<TestClock>,
}

impl World {
    async fn new() -> World {
        let b = Backend::memory();
        let res = ResourceClient::new(b.ds());
        res.create(IpPool::new(
            ObjectMeta::named("p"),
            IpPoolSpec {
                cidr: "10.100.0.0/24".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
        let clock = Arc::new(TestClock(Mutex::new(SystemTime::now())));
        let ipam = Ipam::with_clock(b.ds(), clock.clone());
        World {
            b,
            ipam,
            res,
            clock,
        }
    }

    fn collector(&self, identity: &str) -> Collector {
        Collector::new(
            self.ipam.clone(),
            self.clock.clone(),
            GcConfig::new(identity, GRACE),
        )
    }

    async fn pod_address(&self, ns: &str, pod: &str, node: &str) -> IpAddr {
        let mut args = AutoAssignArgs::new(node, &format!("k8s-pod-network.{ns}-{pod}"), 1, 0);
        args.attrs = BTreeMap::from([
            ("namespace".to_string(), ns.to_string()),
            ("pod".to_string(), pod.to_string()),
            ("node".to_string(), node.to_string()),
        ]);
        self.ipam.auto_assign(&args).await.unwrap().0.ips[0].addr()
    }

    async fn endpoint(&self, ns: &str, pod: &str, node: &str, ip: IpAddr) {
        let spec = WorkloadEndpointSpec {
            orchestrator: "k8s".into(),
            node: node.into(),
            pod: pod.into(),
            endpoint: "eth0".into(),
            interface_name: "cali0123456789a".into(),
            ip_networks: vec![format!("{ip}/32")],
            ..Default::default()
        };
        self.res
            .apply(WorkloadEndpoint::new(
                ObjectMeta {
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                spec,
            ))
            .await
            .unwrap();
    }

    async fn allocated(&self) -> Vec<IpAddr> {
        self.ipam
            .allocations()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.0)
            .collect()
    }
}

#[tokio::test]
async fn live_pods_are_never_released_whatever_their_metadata_looks_like() {
    let w = World::new().await;
    let mut gc = w.collector("ipamd-1");
    // A pod with an endpoint listing its address.
    let live = w.pod_address("x", "a", "n1").await;
    w.endpoint("x", "a", "n1", live).await;
    // An address allocated without any pod metadata.
    let mut bare = AutoAssignArgs::new("n1", "net.bare", 1, 0);
    bare.attrs.clear();
    let bare_ip = w.ipam.auto_assign(&bare).await.unwrap().0.ips[0].addr();
    // A pod whose endpoint is written late (CNI still running on the first scans).
    let lagging = w.pod_address("x", "b", "n1").await;
    gc.scan().await.unwrap();
    w.clock.advance(GRACE / 2);
    gc.scan().await.unwrap();
    w.endpoint("x", "b", "n1", lagging).await;
    for _ in 0..5 {
        w.clock.advance(GRACE);
        let r = gc.scan().await.unwrap();
        assert!(r.released.is_empty(), "{r:?}");
    }
    let mut left = w.allocated().await;
    left.sort();
    let mut want = vec![live, bare_ip, lagging];
    want.sort();
    assert_eq!(left, want);
}

#[tokio::test]
async fn a_dead_pods_address_is_released_only_after_two_scans_and_the_grace_period() {
    let w = World::new().await;
    let mut gc = w.collector("ipamd-1");
    let dead = w.pod_address("x", "gone", "n1").await;
    let r = gc.scan().await.unwrap();
    assert_eq!(r.suspected, 1);
    assert!(r.released.is_empty(), "one scan is never enough");
    w.clock.advance(GRACE - Duration::from_secs(1));
    assert!(
        gc.scan().await.unwrap().released.is_empty(),
        "not before the grace period"
    );
    w.clock.advance(Duration::from_secs(1));
    assert_eq!(gc.scan().await.unwrap().released, vec![dead]);
    assert!(w.allocated().await.is_empty());
    assert!(
        w.b.ds()
            .list(&KeyPrefix::Handles)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let report = w.ipam.check(None).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn an_old_address_of_a_pod_that_got_a_new_one_is_released() {
    let w = World::new().await;
    let mut gc = w.collector("ipamd-1");
    let old = w.pod_address("x", "a", "n1").await;
    let new = w
        .ipam
        .assign_ip(
            "10.100.0.200".parse().unwrap(),
            "k8s-pod-network.new-sandbox",
            &BTreeMap::from([
                ("namespace".to_string(), "x".to_string()),
                ("pod".to_string(), "a".to_string()),
            ]),
            "n1",
            IpUse::Workload,
        )
        .await
        .unwrap()
        .addr();
    w.endpoint("x", "a", "n1", new).await;
    gc.scan().await.unwrap();
    w.clock.advance(GRACE);
    assert_eq!(gc.scan().await.unwrap().released, vec![old]);
    assert_eq!(w.allocated().await, vec![new]);
}

#[tokio::test]
async fn a_deleted_nodes_tunnel_address_and_affinities_are_released_and_no_one_elses() {
    let w = World::new().await;
    let mut gc = w.collector("ipamd-1");
    for n in ["n1", "n2"] {
        w.res
            .create(Node::new(ObjectMeta::named(n), NodeSpec::default()))
            .await
            .unwrap();
        let mut t = AutoAssignArgs::new(n, &format!("vxlan-tunnel-addr-{n}"), 1, 0);
        t.use_ = IpUse::Tunnel;
        t.attrs = BTreeMap::from([
            ("node".to_string(), n.to_string()),
            ("type".to_string(), "vxlanTunnelAddress".to_string()),
        ]);
        w.ipam.auto_assign(&t).await.unwrap();
    }
    w.res.delete::<Node>(None, "n2", None).await.unwrap();
    let first = gc.scan().await.unwrap();
    assert_eq!(
        first.affinities_released, 0,
        "a node missing from one scan keeps its blocks"
    );
    assert!(first.released.is_empty());
    w.clock.advance(GRACE);
    let r = gc.scan().await.unwrap();
    assert_eq!(r.released.len(), 1, "{r:?}");
    assert!(r.affinities_released >= 1);
    let affs =
        w.b.ds()
            .list(&KeyPrefix::Affinities {
                affinity_type: AffinityType::Host,
                owner: None,
                ip_version: None,
            })
            .await
            .unwrap();
    assert!(
        affs.items.iter().all(|kv| kv.key.path().contains("/n1/")),
        "only n1's affinities remain"
    );
    let left = w.ipam.allocations().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].2.owner("node"), Some("n1"));
}

#[tokio::test]
async fn only_the_lease_holder_collects_and_an_expired_lease_moves_on() {
    let w = World::new().await;
    let mut first = w.collector("ipamd-1");
    let mut second = w.collector("ipamd-2");
    assert!(first.scan().await.unwrap().leader);
    assert!(!second.scan().await.unwrap().leader);
    assert!(first.scan().await.unwrap().leader, "the holder renews");
    // ipamd-1 stops renewing: after the lease runs out, ipamd-2 takes over.
    w.clock.advance(Duration::from_secs(31));
    assert!(second.scan().await.unwrap().leader);
    assert!(!first.scan().await.unwrap().leader);
}
