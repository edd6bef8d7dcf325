//! Tests for Calico's BGP configuration. Cases named `golden_*` take their input from
//! Calico's confd tests (`confd/tests/mock_data/calicoctl/<case>/input.yaml`) and check the
//! peers against the rendered `confd/tests/compiled_templates/<case>/bird{,6}.cfg`; as there,
//! this node is `kube-master`.

use std::net::IpAddr;
use std::time::Duration;

use calico_api::codec::decode_documents;
use calico_datastore::syncer::SyncUpdate;
use calico_datastore::{Key, KvPair};
use ipnet::IpNet;

use super::*;

fn state(yaml: &str) -> ClusterState {
    let mut s = ClusterState::new();
    for r in decode_documents(yaml).expect("test YAML decodes") {
        s.put_resource(r).expect("test resource is stored");
    }
    s
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn names(i: &BgpIntent) -> Vec<&str> {
    i.peers.iter().map(|p| p.name.as_str()).collect()
}

fn peer<'a>(i: &'a BgpIntent, name: &str) -> &'a PeerIntent {
    i.peer(name)
        .unwrap_or_else(|| panic!("no peer {name}; have {:?}", names(i)))
}

fn passive(i: &BgpIntent) -> Vec<(&str, bool)> {
    i.peers
        .iter()
        .map(|p| (p.name.as_str(), p.passive))
        .collect()
}

const THREE_NODES: &str = r#"
kind: Node
apiVersion: projectcalico.org/v3
metadata:
  name: kube-master
spec:
  bgp:
    ipv4Address: 10.192.0.2/16
---
kind: Node
apiVersion: projectcalico.org/v3
metadata:
  name: kube-node-1
spec:
  bgp:
    ipv4Address: 10.192.0.3/16
---
kind: Node
apiVersion: projectcalico.org/v3
metadata:
  name: kube-node-2
spec:
  bgp:
    ipv4Address: 10.192.0.4/16
"#;

// ===== mesh =====

/// `mesh/ipip-always`: both mesh peers of kube-master are passive, because their addresses
/// compare greater than 10.192.0.2.
#[test]
fn golden_mesh_three_nodes_from_the_first_node() {
    let s = state(THREE_NODES);
    let i = intent(&s, "kube-master").unwrap();
    assert_eq!(
        passive(&i),
        [("Mesh_10_192_0_3", true), ("Mesh_10_192_0_4", true)]
    );
    let p = peer(&i, "Mesh_10_192_0_3");
    assert_eq!(p.kind, PeerKind::Mesh);
    assert_eq!((p.address, p.port), (ip("10.192.0.3"), 179));
    assert_eq!((p.remote_as, p.local_as), (64512, 64512));
    assert_eq!(p.source_address, Some(ip("10.192.0.2")));
    assert!(p.is_ibgp() && !p.rr_client && p.ttl_security.is_none());
    assert_eq!(p.max_restart_time, None);
    assert_eq!(p.effective_max_restart_time(), Duration::from_secs(120));
    assert_eq!(
        i.router_id,
        "10.192.0.2".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!((i.local_as, i.listen_port), (64512, 179));
    assert_eq!(i.bind_address, None);
    assert_eq!(i.log_level, LogLevel::Info);
}

#[test]
fn mesh_passive_side_is_the_greater_address_on_every_node() {
    let s = state(THREE_NODES);
    let n1 = intent(&s, "kube-node-1").unwrap();
    assert_eq!(
        passive(&n1),
        [("Mesh_10_192_0_2", false), ("Mesh_10_192_0_4", true)]
    );
    let n2 = intent(&s, "kube-node-2").unwrap();
    assert_eq!(
        passive(&n2),
        [("Mesh_10_192_0_2", false), ("Mesh_10_192_0_3", false)]
    );
}

#[test]
fn mesh_passive_rule_compares_address_text_not_numbers() {
    // "10.0.0.10" < "10.0.0.9" as strings, so .9's side is passive towards .10.
    let s = state(
        r#"
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: a}
spec: {bgp: {ipv4Address: 10.0.0.9/24}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: b}
spec: {bgp: {ipv4Address: 10.0.0.10/24}}
"#,
    );
    assert!(!peer(&intent(&s, "a").unwrap(), "Mesh_10_0_0_10").passive);
    assert!(peer(&intent(&s, "b").unwrap(), "Mesh_10_0_0_9").passive);
}

#[test]
fn mesh_uses_the_peer_nodes_listen_port_without_naming_it() {
    let yaml = format!(
        "{THREE_NODES}---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {{name: node.kube-node-1}}
spec: {{listenPort: 500}}
"
    );
    let s = state(&yaml);
    let i = intent(&s, "kube-master").unwrap();
    let p = peer(&i, "Mesh_10_192_0_3");
    assert_eq!(p.port, 500);
    assert_eq!(peer(&i, "Mesh_10_192_0_4").port, 179);
    assert_eq!(i.listen_port, 179);
    assert_eq!(intent(&s, "kube-node-1").unwrap().listen_port, 500);
}

#[test]
fn mesh_password_and_restart_time_come_from_the_default_configuration() {
    let yaml = format!(
        "{THREE_NODES}---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {{name: default}}
spec:
  nodeMeshMaxRestartTime: 10.4s
  nodeMeshPassword:
    secretKeyRef: {{name: bgp-secrets, key: mesh}}
"
    );
    let i = intent(&state(&yaml), "kube-master").unwrap();
    for p in &i.peers {
        // mesh/restart-time: "graceful restart time 10;"
        assert_eq!(p.max_restart_time, Some(Duration::from_secs(10)));
        assert_eq!(
            p.password,
            Some(PasswordRef {
                secret_name: "bgp-secrets".into(),
                key: "mesh".into()
            })
        );
    }
}

#[test]
fn mesh_disabled_gives_no_mesh_peers() {
    let yaml = format!(
        "{THREE_NODES}---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {{name: default}}
spec: {{nodeToNodeMeshEnabled: false}}
"
    );
    assert!(
        intent(&state(&yaml), "kube-master")
            .unwrap()
            .peers
            .is_empty()
    );
}

#[test]
fn mesh_peer_without_as_takes_this_nodes_as() {
    // confd falls back to config.ASNumber, this node's AS, for a peer with no AS of its own.
    let yaml = r#"
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: a}
spec: {bgp: {ipv4Address: 10.0.0.1/24, asNumber: 65001}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: b}
spec: {bgp: {ipv4Address: 10.0.0.2/24}}
"#;
    let s = state(yaml);
    let a = intent(&s, "a").unwrap();
    assert_eq!(a.local_as, 65001);
    assert_eq!(peer(&a, "Mesh_10_0_0_2").remote_as, 65001);
    let b = intent(&s, "b").unwrap();
    assert_eq!(peer(&b, "Mesh_10_0_0_1").remote_as, 65001);
    assert_eq!(peer(&b, "Mesh_10_0_0_1").local_as, 64512);
}

const RR_MESH_ENABLED: &str = r#"
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec:
  asNumber: 64532
  nodeToNodeMeshEnabled: true
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-1}
spec:
  peerIP: 172.19.4.87
  asNumber: 64533
  nodeSelector: has(routeReflector)
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-v6}
spec:
  peerIP: "[ac13::57]:50"
  asNumber: 64533
  nodeSelector: has(routeReflector)
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-other-nodes}
spec:
  nodeSelector: has(routeReflector)
  peerSelector: "!has(routeReflector)"
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-master}
spec:
  bgp: {ipv4Address: 10.192.0.2/16, ipv6Address: fe0a::2/96}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-1}
spec:
  bgp: {ipv4Address: 10.192.0.3/16, ipv6Address: fe0a::4/96}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata:
  name: kube-node-2
  labels: {routeReflector: "true"}
spec:
  bgp: {ipv4Address: 10.192.0.4/16, ipv6Address: fe0a::6/96, routeReflectorClusterID: 10.0.0.1}
"#;

/// `mesh/route-reflector-mesh-enabled`: the route reflector leaves the mesh; kube-master
/// reaches it through the automatic reverse peering of `bgppeer-other-nodes`.
#[test]
fn golden_route_reflector_leaves_the_mesh() {
    let s = state(RR_MESH_ENABLED);
    let i = intent(&s, "kube-master").unwrap();
    assert_eq!(
        passive(&i),
        [
            ("Mesh_10_192_0_3", true),
            ("Mesh_fe0a__4", true),
            ("Node_10_192_0_4", false),
            ("Node_fe0a__6", false),
        ]
    );
    let rr = peer(&i, "Node_fe0a__6");
    assert_eq!(rr.source_address, Some(ip("fe0a::2")));
    assert_eq!((rr.remote_as, rr.rr_client), (64532, false));
    assert_eq!(rr.origin.as_deref(), Some("bgppeer-other-nodes"));

    // The route reflector itself: no mesh, its clients as rr clients, and the external peers.
    let r = intent(&s, "kube-node-2").unwrap();
    assert_eq!(
        names(&r),
        [
            "Node_10_192_0_2",
            "Node_10_192_0_3",
            "Node_172_19_4_87",
            "Node_ac13__57_port_50",
            "Node_fe0a__2",
            "Node_fe0a__4",
        ]
    );
    assert!(peer(&r, "Node_10_192_0_3").rr_client);
    assert!(
        !peer(&r, "Node_172_19_4_87").rr_client,
        "eBGP is never a client"
    );
    assert_eq!(r.cluster_id, Some("10.0.0.1".parse().unwrap()));
}

// ===== explicit peering =====

/// `explicit_peering/global`.
#[test]
fn golden_global_peers_with_ports_source_address_and_bind_mode() {
    let s = state(
        r#"
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec:
  nodeToNodeMeshEnabled: false
  logSeverityScreen: Debug
  asNumber: 64567
  listenPort: 150
  bindMode: NodeIP
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-1}
spec: {peerIP: 10.192.0.3, asNumber: 64567, sourceAddress: None}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-2}
spec: {peerIP: "10.192.0.1:166", asNumber: 64567}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-3}
spec: {peerIP: 10.192.0.1, asNumber: 64567}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-master}
spec: {bgp: {ipv4Address: 10.192.0.2/16}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-1}
spec: {bgp: {ipv4Address: 10.192.0.3/16}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-2}
spec: {bgp: {ipv4Address: 10.192.0.1/16}}
"#,
    );
    let i = intent(&s, "kube-master").unwrap();
    assert_eq!(
        passive(&i),
        [
            ("Global_10_192_0_1_port_150", false),
            ("Global_10_192_0_1_port_166", false),
            ("Global_10_192_0_3_port_150", true),
        ]
    );
    assert_eq!(peer(&i, "Global_10_192_0_3_port_150").source_address, None);
    let p = peer(&i, "Global_10_192_0_1_port_166");
    assert_eq!((p.port, p.kind), (166, PeerKind::Global));
    assert_eq!(p.source_address, Some(ip("10.192.0.2")));
    assert_eq!((i.local_as, i.listen_port), (64567, 150));
    assert_eq!(i.bind_address, Some(ip("10.192.0.2")));
    assert_eq!(i.log_level, LogLevel::Debug);
}

/// `explicit_peering/global-ipv6`.
#[test]
fn golden_global_ipv6_peers() {
    let s = state(
        r#"
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false, logSeverityScreen: Debug, asNumber: 64567}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-1}
spec: {peerIP: "2001::102", asNumber: 64567, sourceAddress: None}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-2}
spec: {peerIP: "2001::104", asNumber: 64567}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-master}
spec: {bgp: {ipv4Address: 10.192.0.2/16, ipv6Address: "2001::103/64"}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-1}
spec: {bgp: {ipv4Address: 10.192.0.3/16, ipv6Address: "2001::102/64"}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-2}
spec: {bgp: {ipv4Address: 10.192.0.1/16, ipv6Address: "2001::104/64"}}
"#,
    );
    let i = intent(&s, "kube-master").unwrap();
    assert_eq!(
        passive(&i),
        [("Global_2001__102", false), ("Global_2001__104", true)]
    );
    assert_eq!(peer(&i, "Global_2001__102").source_address, None);
    assert_eq!(
        peer(&i, "Global_2001__104").source_address,
        Some(ip("2001::103"))
    );
}

const SELECTORS: &str = r#"
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: node.kube-node-1}
spec: {listenPort: 500}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-1}
spec: {nodeSelector: "group=='one'", peerSelector: "group=='two'"}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-master, labels: {group: one}}
spec: {bgp: {ipv4Address: 10.192.0.2/16, ipv6Address: fd5f::2/96}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-1, labels: {group: two}}
spec: {bgp: {ipv4Address: 10.192.0.3/16, ipv6Address: fd5f::3/96}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-2, labels: {group: two}}
spec: {bgp: {ipv4Address: 10.192.0.4/16, ipv6Address: fd5f::4/96}}
"#;

/// `explicit_peering/selectors`: peerSelector expands to both families of every matching
/// node, on the listen port of that node's own BGPConfiguration.
#[test]
fn golden_peer_selector_expands_to_both_families_and_node_ports() {
    let i = intent(&state(SELECTORS), "kube-master").unwrap();
    assert_eq!(
        passive(&i),
        [
            ("Node_10_192_0_3_port_500", false),
            ("Node_10_192_0_4", false),
            ("Node_fd5f__3_port_500", false),
            ("Node_fd5f__4", false),
        ]
    );
    let p = peer(&i, "Node_fd5f__3_port_500");
    assert_eq!((p.address, p.port), (ip("fd5f::3"), 500));
    assert_eq!(p.source_address, Some(ip("fd5f::2")));
    assert_eq!(p.kind, PeerKind::NodeSpecific);
}

#[test]
fn peer_selector_targets_peer_back_automatically() {
    let s = state(SELECTORS);
    let n1 = intent(&s, "kube-node-1").unwrap();
    assert_eq!(names(&n1), ["Node_10_192_0_2", "Node_fd5f__2"]);
    assert_eq!(n1.listen_port, 500);
}

#[test]
fn reverse_peering_manual_leaves_the_far_side_alone() {
    let yaml = SELECTORS.replace(
        "spec: {nodeSelector: \"group=='one'\", peerSelector: \"group=='two'\"}",
        "spec: {nodeSelector: \"group=='one'\", peerSelector: \"group=='two'\", reversePeering: Manual}",
    );
    let s = state(&yaml);
    assert!(intent(&s, "kube-node-1").unwrap().peers.is_empty());
    assert_eq!(intent(&s, "kube-master").unwrap().peers.len(), 4);
}

/// `explicit_peering/route_reflector`.
#[test]
fn golden_route_reflector_has_its_clients_as_rr_clients() {
    let s = state(
        r#"
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {asNumber: 64532, nodeToNodeMeshEnabled: false}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-1}
spec: {peerIP: 172.19.4.87, asNumber: 64533, nodeSelector: has(routeReflector)}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-v6}
spec: {peerIP: "[ac13::57]:50", asNumber: 64533, nodeSelector: has(routeReflector)}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: bgppeer-other-nodes}
spec: {nodeSelector: has(routeReflector), peerSelector: "!has(routeReflector)"}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-master, labels: {routeReflector: "true"}}
spec:
  bgp: {ipv4Address: 10.192.0.2/16, ipv6Address: fe0a::2/96, routeReflectorClusterID: 10.0.0.1}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-1}
spec: {bgp: {ipv4Address: 10.192.0.3/16, ipv6Address: fe0a::3/96}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-2}
spec: {bgp: {ipv4Address: 10.192.0.4/16, ipv6Address: fe0a::4/96}}
"#,
    );
    let i = intent(&s, "kube-master").unwrap();
    let rr: Vec<(&str, bool, u32)> = i
        .peers
        .iter()
        .map(|p| (p.name.as_str(), p.rr_client, p.remote_as))
        .collect();
    assert_eq!(
        rr,
        [
            ("Node_10_192_0_3", true, 64532),
            ("Node_10_192_0_4", true, 64532),
            ("Node_172_19_4_87", false, 64533),
            ("Node_ac13__57_port_50", false, 64533),
            ("Node_fe0a__3", true, 64532),
            ("Node_fe0a__4", true, 64532),
        ]
    );
    assert!(i.peers.iter().all(|p| !p.passive));
    assert_eq!(peer(&i, "Node_ac13__57_port_50").port, 50);
}

/// The usual RR topology: mesh off, every node peers with the nodes labelled as reflectors.
#[test]
fn rr_topology_clients_peer_with_reflectors_and_reflectors_with_everyone() {
    let s = state(
        r#"
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: peer-with-rrs}
spec: {nodeSelector: all(), peerSelector: "route-reflector == 'true'"}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: rr1, labels: {route-reflector: "true"}}
spec: {bgp: {ipv4Address: 10.0.0.1/24, routeReflectorClusterID: 244.0.0.1}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: rr2, labels: {route-reflector: "true"}}
spec: {bgp: {ipv4Address: 10.0.0.2/24, routeReflectorClusterID: 244.0.0.1}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: c1}
spec: {bgp: {ipv4Address: 10.0.0.11/24}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: c2}
spec: {bgp: {ipv4Address: 10.0.0.12/24}}
"#,
    );
    let c1 = intent(&s, "c1").unwrap();
    assert_eq!(names(&c1), ["Node_10_0_0_1", "Node_10_0_0_2"]);
    assert!(c1.peers.iter().all(|p| !p.rr_client && !p.passive));

    let rr1 = intent(&s, "rr1").unwrap();
    let flags: Vec<(&str, bool)> = rr1
        .peers
        .iter()
        .map(|p| (p.name.as_str(), p.rr_client))
        .collect();
    // The other reflector shares the cluster ID: not a client.
    assert_eq!(
        flags,
        [
            ("Node_10_0_0_11", true),
            ("Node_10_0_0_12", true),
            ("Node_10_0_0_2", false),
        ]
    );
}

#[test]
fn node_specific_peer_that_duplicates_a_global_one_is_dropped() {
    let yaml = format!(
        "{THREE_NODES}---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: a-node}}
spec: {{node: kube-master, peerIP: 192.0.2.1, asNumber: 65000}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: b-global}}
spec: {{peerIP: 192.0.2.1, asNumber: 65001}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: c-global-same}}
spec: {{peerIP: 192.0.2.1, asNumber: 65002}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: d-node-other-port}}
spec: {{node: kube-master, peerIP: \"192.0.2.1:1179\", asNumber: 65003}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: e-other-node}}
spec: {{node: kube-node-1, peerIP: 192.0.2.9, asNumber: 65003}}
"
    );
    let i = intent(&state(&yaml), "kube-master").unwrap();
    let g = peer(&i, "Global_192_0_2_1");
    // Global peerings are emitted first; among them the first by name wins.
    assert_eq!(
        (g.remote_as, g.origin.as_deref()),
        (65001, Some("b-global"))
    );
    assert!(i.peer("Node_192_0_2_1").is_none());
    let n = peer(&i, "Node_192_0_2_1_port_1179");
    assert_eq!((n.port, n.remote_as), (1179, 65003));
    assert!(i.peer("Node_192_0_2_9").is_none(), "scoped to another node");
    assert_eq!(i.peers.len(), 4, "{:?}", names(&i));
}

#[test]
fn peer_options_are_carried_as_confd_renders_them() {
    let yaml = format!(
        "{THREE_NODES}---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: tor}}
spec:
  nodeSelector: all()
  peerIP: 192.0.2.1
  asNumber: 65000
  localASNumber: 65010
  keepOriginalNextHop: true
  password: {{secretKeyRef: {{name: s, key: k}}}}
  maxRestartTime: 1m30s
  keepaliveTime: 20s
  ttlSecurity: 2
  numAllowedLocalASNumbers: 3
  reachableBy: 10.192.0.1
  filters: [f1]
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: ibgp-keep}}
spec: {{peerIP: 192.0.2.2, asNumber: 64512, keepOriginalNextHop: true}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: self}}
spec: {{peerIP: 192.0.2.3, asNumber: 64512, nextHopMode: Self}}
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {{name: f1}}
spec: {{}}
"
    );
    let i = intent(&state(&yaml), "kube-master").unwrap();
    let p = peer(&i, "Node_192_0_2_1");
    assert_eq!((p.remote_as, p.local_as), (65000, 65010));
    assert!(p.keep_original_next_hop && !p.next_hop_self);
    assert_eq!(
        p.password,
        Some(PasswordRef {
            secret_name: "s".into(),
            key: "k".into()
        })
    );
    assert_eq!(p.max_restart_time, Some(Duration::from_secs(90)));
    assert_eq!(p.keepalive_time, Some(Duration::from_secs(20)));
    assert_eq!((p.ttl_security, p.allow_local_as), (Some(2), 3));
    assert_eq!(p.reachable_by, Some(ip("10.192.0.1")));
    assert_eq!(p.filters, ["f1"]);
    // Legacy keepOriginalNextHop only applies to eBGP.
    assert!(!peer(&i, "Global_192_0_2_2").keep_original_next_hop);
    assert!(peer(&i, "Global_192_0_2_3").next_hop_self);
    assert!(i.problems.is_empty(), "{:?}", i.problems);
}

#[test]
fn peer_selector_peers_ignore_local_as_number_like_confd() {
    let yaml = SELECTORS.replace(
        "spec: {nodeSelector: \"group=='one'\", peerSelector: \"group=='two'\"}",
        "spec: {nodeSelector: \"group=='one'\", peerSelector: \"group=='two'\", localASNumber: 65099, numAllowedLocalASNumbers: 2}",
    );
    let i = intent(&state(&yaml), "kube-master").unwrap();
    let p = peer(&i, "Node_10_192_0_4");
    assert_eq!((p.local_as, p.allow_local_as), (64512, 0));
}

#[test]
fn peer_ip_naming_a_calico_node_uses_its_listen_port() {
    let yaml = format!(
        "{THREE_NODES}---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {{name: node.kube-node-2}}
spec: {{listenPort: 1790}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: to-node-2}}
spec: {{node: kube-master, peerIP: 10.192.0.4, asNumber: 64512}}
"
    );
    let s = state(&yaml);
    let i = intent(&s, "kube-master").unwrap();
    let p = peer(&i, "Node_10_192_0_4_port_1790");
    assert_eq!(p.port, 1790);
    assert!(
        !p.passive,
        "node-specific peerings never get the passive rule"
    );
    // kube-node-2 peers back (reverse peering) to kube-master on its default port.
    let back = intent(&s, "kube-node-2").unwrap();
    assert!(back.peer("Node_10_192_0_2").is_some(), "{:?}", names(&back));
}

#[test]
fn node_without_ipv4_gets_no_ipv4_peers_and_a_hashed_router_id() {
    let s = state(
        r#"
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: v6only}
spec: {bgp: {ipv6Address: "fd00::1/64"}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: dual}
spec: {bgp: {ipv4Address: 10.0.0.2/24, ipv6Address: "fd00::2/64"}}
"#,
    );
    let i = intent(&s, "v6only").unwrap();
    assert_eq!(names(&i), ["Mesh_fd00__2"]);
    assert_eq!(i.router_id, hash_router_id("v6only"));
    let d = intent(&s, "dual").unwrap();
    assert_eq!(passive(&d), [("Mesh_fd00__1", false)]);
}

/// One line per peer, in the format of `tests/confd_peers.txt`.
fn peer_line(i: &BgpIntent, p: &PeerIntent) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    format!(
        "{} {} port={} as={} local_as={} source={} passive={} rr_client={} restart={} keepalive={} ttl={} next_hop={} allow_local_as={}",
        p.name,
        p.address,
        opt((p.port != DEFAULT_PORT).then(|| p.port.to_string())),
        p.remote_as,
        opt((p.local_as != i.local_as).then(|| p.local_as.to_string())),
        opt(p.source_address.map(|a| a.to_string())),
        p.passive,
        p.rr_client,
        opt(p.max_restart_time.map(|d| d.as_secs().to_string())),
        opt(p.keepalive_time.map(|d| d.as_secs().to_string())),
        p.ttl_security.map_or("off".to_string(), |t| t.to_string()),
        if p.keep_original_next_hop {
            "keep"
        } else if p.next_hop_self {
            "self"
        } else {
            "-"
        },
        opt((p.allow_local_as > 0).then(|| p.allow_local_as.to_string())),
    )
}

/// Every case of Calico's confd tests that renders peers for kube-master (explicit peering,
/// mesh, next-hop mode, reachableBy, reverse peering): same input, same peers.
#[test]
fn golden_confd_peer_cases() {
    let text = include_str!("tests/confd_peers.txt");
    let mut cases = 0;
    for section in text.split("=== ").skip(1) {
        let (case, rest) = section.split_once('\n').expect("case name line");
        let (input, peers) = rest
            .strip_prefix("--- input\n")
            .and_then(|r| r.split_once("--- peers\n"))
            .expect("input and peers");
        let i = intent(&state(input), "kube-master").unwrap_or_else(|e| panic!("{case}: {e}"));
        let got: Vec<String> = i.peers.iter().map(|p| peer_line(&i, p)).collect();
        // A `localASNumber` equal to the node's AS is rendered as `local as <AS>`; in the
        // intent it is the default.
        let own_as = format!(" local_as={} ", i.local_as);
        let want: Vec<String> = peers
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.replace(&own_as, " local_as=- "))
            .collect();
        assert_eq!(got, want, "case {case}; problems {:?}", i.problems);
        cases += 1;
    }
    assert_eq!(cases, 22);
}

// ===== configuration =====

#[test]
fn node_specific_bgp_configuration_overrides_port_and_log_level() {
    let yaml = format!(
        "{THREE_NODES}---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {{name: default}}
spec: {{listenPort: 178, logSeverityScreen: Debug, asNumber: 65100}}
---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {{name: node.kube-master}}
spec: {{listenPort: 1790, logSeverityScreen: Warning}}
"
    );
    let s = state(&yaml);
    let m = intent(&s, "kube-master").unwrap();
    assert_eq!(
        (m.listen_port, m.log_level, m.local_as),
        (1790, LogLevel::None, 65100)
    );
    let n = intent(&s, "kube-node-1").unwrap();
    assert_eq!((n.listen_port, n.log_level), (178, LogLevel::Debug));
    // Mesh peers connect to each node's own port.
    assert_eq!(peer(&n, "Mesh_10_192_0_2").port, 1790);
    assert_eq!(peer(&n, "Mesh_10_192_0_4").port, 178);
}

#[test]
fn router_id_modes() {
    let s = state(THREE_NODES);
    let hashed = intent_with(
        &s,
        "kube-master",
        &IntentOptions {
            router_id: RouterIdMode::Hash,
        },
    )
    .unwrap();
    // mesh/hash: "router id 25.79.212.8;" for kube-master.
    assert_eq!(
        hashed.router_id,
        "25.79.212.8".parse::<std::net::Ipv4Addr>().unwrap()
    );
    let fixed = intent_with(
        &s,
        "kube-master",
        &IntentOptions {
            router_id: RouterIdMode::Fixed("1.2.3.4".parse().unwrap()),
        },
    )
    .unwrap();
    assert_eq!(fixed.router_id.to_string(), "1.2.3.4");
}

#[test]
fn hash_router_id_matches_calicos_vectors() {
    // confd/pkg/resource/template/template_funcs_test.go
    assert_eq!(hash_router_id("Testrobin123").to_string(), "207.94.5.27");
    assert_eq!(hash_router_id("nodeTest").to_string(), "109.174.215.226");
}

// ===== errors =====

#[test]
fn missing_node_and_missing_address_are_errors_saying_what_to_do() {
    let s = state(THREE_NODES);
    let e = intent(&s, "nope").unwrap_err();
    assert_eq!(
        e,
        CalicoError::NoNode {
            node: "nope".into()
        }
    );
    assert!(e.to_string().contains("--nodename"));
    let s = state(
        r#"
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: bare}
spec: {}
"#,
    );
    let e = intent(&s, "bare").unwrap_err();
    assert!(e.to_string().contains("set spec.bgp.ipv4Address"), "{e}");
}

#[test]
fn a_bad_cluster_id_on_this_node_is_an_error() {
    let s = state(
        r#"
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: a}
spec: {bgp: {ipv4Address: 10.0.0.1/24, routeReflectorClusterID: not-an-ip}}
"#,
    );
    let e = intent(&s, "a").unwrap_err();
    assert!(e.to_string().contains("routeReflectorClusterID"), "{e}");
}

#[test]
fn bad_peers_are_skipped_and_reported_by_name_and_field() {
    let yaml = format!(
        "{THREE_NODES}---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: bad-ip}}
spec: {{peerIP: 10.0.0.300, asNumber: 65000}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: no-as}}
spec: {{peerIP: 192.0.2.7}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: bad-selector}}
spec: {{nodeSelector: \"a ==\", peerIP: 192.0.2.8, asNumber: 65000}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: no-filter}}
spec: {{peerIP: 192.0.2.9, asNumber: 65000, filters: [missing]}}
"
    );
    let i = intent(&state(&yaml), "kube-master").unwrap();
    let msgs: Vec<String> = i.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    assert!(
        msgs[0].starts_with("BGPPeer \"bad-ip\" spec.peerIP:"),
        "{}",
        msgs[0]
    );
    assert!(msgs.iter().any(|m| m.contains("\"no-as\" spec.asNumber")));
    assert!(
        msgs.iter()
            .any(|m| m.contains("\"bad-selector\" spec.nodeSelector"))
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("no BGPFilter named \"missing\""))
    );
    // The good part still runs: the mesh and the peer whose filter is missing.
    assert_eq!(
        names(&i),
        ["Global_192_0_2_9", "Mesh_10_192_0_3", "Mesh_10_192_0_4"]
    );
}

// ===== apply =====

fn put(key: Key, value: &str, revision: i64) -> SyncUpdate {
    SyncUpdate::Put(KvPair {
        key,
        value: value.as_bytes().to_vec(),
        revision,
    })
}

fn node_key(name: &str) -> Key {
    Key::resource(calico_api::Kind::Node, None, name)
}

#[test]
fn apply_keeps_the_old_value_when_the_new_one_is_malformed() {
    let mut s = ClusterState::new();
    let good = r#"{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"a"},"spec":{"bgp":{"ipv4Address":"10.0.0.1/24"}}}"#;
    assert!(s.apply(&put(node_key("a"), good, 1)).unwrap());
    assert!(
        !s.apply(&put(node_key("a"), good, 2)).unwrap(),
        "same content"
    );
    let before = s.clone();
    let e = s
        .apply(&put(node_key("a"), r#"{"spec": {"bgp": 7"#, 3))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("/calico/resources/v3/projectcalico.org/nodes/a"),
        "{e}"
    );
    assert_eq!(s, before);
    assert!(intent(&s, "a").is_ok());
    assert!(
        s.apply(&SyncUpdate::Delete {
            key: node_key("a"),
            revision: 4
        })
        .unwrap()
    );
    assert!(s.node("a").is_none());
}

#[test]
fn apply_reads_affinities_of_hosts_only() {
    let mut s = ClusterState::new();
    let aff = |owner: &str, cidr: &str| Key::Affinity {
        affinity_type: calico_api::names::AffinityType::Host,
        owner: owner.into(),
        cidr: net(cidr),
    };
    s.apply(&put(
        aff("a", "10.1.0.0/26"),
        r#"{"state":"confirmed","deleted":false}"#,
        1,
    ))
    .unwrap();
    s.apply(&put(aff("a", "10.1.0.64/26"), r#"{"state":"pending"}"#, 2))
        .unwrap();
    s.apply(&put(aff("a", "10.1.0.128/26"), "", 3)).unwrap();
    s.apply(&put(
        aff("a", "10.1.0.192/26"),
        r#"{"state":"confirmed","deleted":true}"#,
        4,
    ))
    .unwrap();
    assert!(s.apply(&put(aff("a", "10.1.1.0/26"), "{", 5)).is_err());
    let virt = Key::Affinity {
        affinity_type: calico_api::names::AffinityType::Virtual,
        owner: "lb".into(),
        cidr: net("10.2.0.0/26"),
    };
    assert!(!s.apply(&put(virt, r#"{"state":"confirmed"}"#, 6)).unwrap());
    let got: Vec<(String, IpNet, AffinityState)> = s
        .affinities
        .iter()
        .map(|((o, c), st)| (o.clone(), *c, st.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("a".into(), net("10.1.0.0/26"), AffinityState::Confirmed),
            ("a".into(), net("10.1.0.64/26"), AffinityState::Pending),
            ("a".into(), net("10.1.0.128/26"), AffinityState::Implicit),
        ]
    );
}

#[test]
fn watched_prefixes_cover_what_birdd_reads() {
    let paths: Vec<String> = watched_prefixes("n1").iter().map(|p| p.path()).collect();
    for want in [
        "/calico/resources/v3/projectcalico.org/nodes/",
        "/calico/resources/v3/projectcalico.org/bgpconfigurations/",
        "/calico/resources/v3/projectcalico.org/bgppeers/",
        "/calico/resources/v3/projectcalico.org/bgpfilters/",
        "/calico/resources/v3/projectcalico.org/ippools/",
        "/calico/resources/v3/projectcalico.org/workloadendpoints/",
        "/calico/ipam/v2/host/n1/",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} missing from {paths:?}"
        );
    }
    assert_eq!(paths.len(), 7);
}

// ===== diff =====

#[test]
fn diff_peers_reports_added_removed_and_changed_by_name() {
    let s = state(THREE_NODES);
    let old = intent(&s, "kube-master").unwrap().peers;
    let mut new = old.clone();
    new.retain(|p| p.name != "Mesh_10_192_0_4");
    new[0].port = 1790;
    let mut extra = new[0].clone();
    extra.name = "Global_192_0_2_1".into();
    new.insert(0, extra);
    let d = diff_peers(&old, &new);
    let n = |v: &[PeerIntent]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(n(&d.added), ["Global_192_0_2_1"]);
    assert_eq!(n(&d.removed), ["Mesh_10_192_0_4"]);
    assert_eq!(n(&d.changed), ["Mesh_10_192_0_3"]);
    assert_eq!(d.changed[0].port, 1790);
    assert!(diff_peers(&old, &old).is_empty());
}

mod routes;

#[test]
fn within_agrees_with_ipnet_containment() {
    use super::exports::within;
    let nets: Vec<IpNet> = [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.0.0.0/16",
        "10.0.0.1/16",
        "10.0.3.0/24",
        "10.0.3.128/25",
        "10.0.3.7/32",
        "10.1.0.0/16",
        "11.0.0.0/8",
        "255.255.255.255/32",
        "::/0",
        "fd00::/8",
        "fd00:1::/48",
        "fd00:1:0:1::/64",
        "fd00:1:0:1::5/128",
        "fd00:2::/48",
        "::ffff:10.0.0.0/104",
    ]
    .iter()
    .map(|s| s.parse().expect("net"))
    .collect();
    for &net in &nets {
        for &cidr in &nets {
            assert_eq!(
                within(net, cidr),
                cidr.contains(&net),
                "{net} within {cidr}"
            );
        }
    }
}
