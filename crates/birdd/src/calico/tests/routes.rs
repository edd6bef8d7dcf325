//! Exports, communities, the kernel filter and BGPFilters.

use super::*;

const BASE: &str = r#"
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-master}
spec: {bgp: {ipv4Address: 10.192.0.2/16, ipv6Address: "fd00::2/64"}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-1}
spec: {bgp: {ipv4Address: 10.192.0.3/16, ipv6Address: "fd00::3/64"}}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pool-a}
spec: {cidr: 192.168.0.0/16, ipipMode: Never, vxlanMode: Never}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pool-noexport}
spec: {cidr: 172.20.0.0/16, disableBGPExport: true}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pool-vxlan}
spec: {cidr: 10.244.0.0/16, vxlanMode: Always}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pool-ipip}
spec: {cidr: 172.16.0.0/16, ipipMode: Always}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pool-cross}
spec: {cidr: 172.17.0.0/16, ipipMode: CrossSubnet}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pool-ipam-disabled}
spec: {cidr: 172.30.0.0/16, disabled: true}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pool-v6}
spec: {cidr: "fd00:10::/64"}
"#;

const SERVICES: &str = r#"
---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec:
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  serviceExternalIPs: [{cidr: 203.0.113.0/24}, {cidr: 203.0.114.77/32}]
  serviceLoadBalancerIPs: [{cidr: 198.51.100.0/24}]
"#;

fn workload(ns: &str, name: &str, node: &str, addr: &str) -> String {
    format!(
        r#"
---
kind: WorkloadEndpoint
apiVersion: projectcalico.org/v3
metadata: {{name: {name}, namespace: {ns}}}
spec: {{node: {node}, interfaceName: cali{name}, ipNetworks: ["{addr}"]}}
"#
    )
}

fn with_blocks(mut s: ClusterState) -> ClusterState {
    for (host, block, st) in [
        ("kube-master", "192.168.1.0/26", AffinityState::Confirmed),
        ("kube-master", "192.168.1.64/26", AffinityState::Pending),
        (
            "kube-master",
            "192.168.1.128/26",
            AffinityState::PendingDeletion,
        ),
        ("kube-master", "172.20.0.0/26", AffinityState::Confirmed),
        ("kube-master", "192.168.9.9/32", AffinityState::Confirmed),
        ("kube-master", "10.244.1.0/26", AffinityState::Implicit),
        ("kube-node-1", "192.168.2.0/26", AffinityState::Confirmed),
    ] {
        s.put_affinity(host, net(block), st);
    }
    s
}

fn routes_state(extra: &str) -> ClusterState {
    let mut yaml = format!("{BASE}{extra}");
    for (name, node, addr) in [
        ("own", "kube-master", "192.168.1.5/32"),
        ("borrowed", "kube-master", "192.168.2.7/32"),
        ("noexport", "kube-master", "172.20.5.5/32"),
        ("elsewhere", "kube-node-1", "192.168.3.3/32"),
        ("slash32", "kube-master", "192.168.9.9/32"),
        ("releasing", "kube-master", "192.168.1.130/32"),
        ("outside", "kube-master", "8.8.8.8/32"),
    ] {
        yaml.push_str(&workload("default", name, node, addr));
    }
    with_blocks(state(&yaml))
}

fn exports(i: &BgpIntent) -> Vec<(String, &'static str)> {
    i.exports
        .iter()
        .map(|e| {
            let o = match e.origin {
                ExportOrigin::Block => "block",
                ExportOrigin::Service => "service",
                ExportOrigin::Workload { .. } => "workload",
            };
            (e.prefix.to_string(), o)
        })
        .collect()
}

fn owned(v: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    v.iter().map(|(p, o)| (p.to_string(), *o)).collect()
}

#[test]
fn exports_are_blocks_borrowed_addresses_and_service_ranges() {
    let i = intent(&routes_state(SERVICES), "kube-master").unwrap();
    assert_eq!(
        exports(&i),
        owned(&[
            ("10.96.0.0/12", "service"),
            // A VXLAN pool's block is still advertised (confd accepts VXLAN pools).
            ("10.244.1.0/26", "block"),
            ("192.168.1.0/26", "block"),
            // pendingDeletion: still blackholed, no longer aggregated, so the block and the
            // addresses under it go out through the pool's accept.
            ("192.168.1.128/26", "block"),
            ("192.168.1.130/32", "workload"),
            ("192.168.2.7/32", "workload"),
            ("192.168.9.9/32", "workload"),
            ("198.51.100.0/24", "service"),
            ("203.0.113.0/24", "service"),
        ])
    );
    assert_eq!(
        i.blackholes,
        [
            net("10.244.1.0/26"),
            net("172.20.0.0/26"),
            net("192.168.1.0/26"),
            net("192.168.1.128/26"),
        ]
    );
    assert!(i.problems.is_empty(), "{:?}", i.problems);
}

#[test]
fn an_ipam_disabled_pool_is_still_exported_like_confd() {
    // confd's filters look at disableBGPExport only; `disabled` stops IPAM, not BGP.
    let mut s = routes_state("");
    s.put_affinity(
        "kube-master",
        net("172.30.1.0/26"),
        AffinityState::Confirmed,
    );
    let i = intent(&s, "kube-master").unwrap();
    assert!(i.exports.iter().any(|e| e.prefix == net("172.30.1.0/26")));
}

#[test]
fn node_excluded_from_load_balancers_advertises_no_service_ranges() {
    let yaml = SERVICES.to_string()
        + r#"
---
kind: Node
apiVersion: projectcalico.org/v3
metadata:
  name: kube-master
  labels: {node.kubernetes.io/exclude-from-external-load-balancers: "true"}
spec: {bgp: {ipv4Address: 10.192.0.2/16}}
"#;
    let i = intent(&routes_state(&yaml), "kube-master").unwrap();
    assert!(i.exports.iter().all(|e| e.origin != ExportOrigin::Service));
    // ... but still keeps them out of the kernel.
    assert_eq!(
        i.kernel_action(&net("10.96.1.0/24"), ip("10.192.0.3")),
        KernelAction::Skip(SkipReason::ServiceRange {
            cidr: net("10.96.0.0/12")
        })
    );
}

/// `mesh/communities`: named and literal, standard and large, sorted as confd sorts them.
#[test]
fn golden_communities_from_prefix_advertisements() {
    let cfg = r#"
---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec:
  communities:
    - {name: bgp-comm-standard, value: "100:6532"}
    - {name: bgp-comm-large, value: "100:555:107"}
  prefixAdvertisements:
    - cidr: 192.168.0.0/16
      communities: [bgp-comm-standard, "5663:12", bgp-comm-large]
    - cidr: 192.168.1.0/24
      communities: ["65000:1", bgp-comm-standard]
    - cidr: "fd00:96::/112"
      communities: [bgp-comm-large, bgp-comm-large]
"#;
    let i = intent(&routes_state(cfg), "kube-master").unwrap();
    assert_eq!(
        i.export_policy.community_rules[0].communities,
        [
            Community::Large(100, 555, 107),
            Community::Standard((100 << 16) | 6532),
            Community::Standard((5663 << 16) | 12),
        ]
    );
    let block = i
        .exports
        .iter()
        .find(|e| e.prefix == net("192.168.1.0/26"))
        .unwrap();
    assert_eq!(
        block.communities,
        [(100 << 16) | 6532, (5663 << 16) | 12, (65000 << 16) | 1]
    );
    assert_eq!(block.large_communities, [(100, 555, 107)]);
    let borrowed = i
        .exports
        .iter()
        .find(|e| e.prefix == net("192.168.2.7/32"))
        .unwrap();
    assert_eq!(
        borrowed.communities,
        [(100 << 16) | 6532, (5663 << 16) | 12]
    );
    let vx = i
        .exports
        .iter()
        .find(|e| e.prefix == net("10.244.1.0/26"))
        .unwrap();
    assert!(vx.communities.is_empty() && vx.large_communities.is_empty());
}

#[test]
fn node_prefix_advertisements_replace_the_global_ones_and_bad_values_are_reported() {
    let cfg = r#"
---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec:
  prefixAdvertisements: [{cidr: 192.168.0.0/16, communities: ["1:1"]}]
---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: node.kube-master}
spec:
  prefixAdvertisements:
    - {cidr: 192.168.2.0/24, communities: ["2:2", "no-such-name", "70000:1", "1:2:3"]}
"#;
    let i = intent(&routes_state(cfg), "kube-master").unwrap();
    let block = i
        .exports
        .iter()
        .find(|e| e.prefix == net("192.168.1.0/26"))
        .unwrap();
    assert!(block.communities.is_empty());
    let borrowed = i
        .exports
        .iter()
        .find(|e| e.prefix == net("192.168.2.7/32"))
        .unwrap();
    assert_eq!(borrowed.communities, [(2 << 16) | 2]);
    assert_eq!(borrowed.large_communities, [(1, 2, 3)]);
    let msgs: Vec<String> = i.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    assert!(msgs[0].contains("\"node.kube-master\" spec.prefixAdvertisements[0].communities[1]"));
    assert!(msgs[1].contains("\"70000:1\" is not a community"));
    // kube-node-1 has no node configuration: the global rule applies there.
    let n1 = intent(&routes_state(cfg), "kube-node-1").unwrap();
    let b = n1
        .exports
        .iter()
        .find(|e| e.prefix == net("192.168.2.0/26"))
        .unwrap();
    assert_eq!(b.communities, [(1 << 16) | 1]);
}

// ===== calico_export_to_bgp_peers =====

fn mesh_and_tor(extra: &str) -> BgpIntent {
    let yaml = format!(
        "{extra}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: tor}}
spec: {{peerIP: 10.192.0.1, asNumber: 65000}}
"
    );
    intent(&routes_state(&yaml), "kube-master").unwrap()
}

#[test]
fn export_filter_aggregates_blocks_and_keeps_felix_tunnels_off_ibgp() {
    let i = mesh_and_tor(SERVICES);
    let (mesh, tor) = ("Mesh_10_192_0_3", "Global_10_192_0_1");
    let ok = |peer: &str, r: RouteInfo| i.filter_export_route(peer, &r);

    assert!(ok(mesh, RouteInfo::originated(net("192.168.1.0/26"))));
    // A pod's /32 inside a confirmed block stays inside...
    let pod = RouteInfo::new(net("192.168.1.5/32"), RouteSource::Kernel).with_interface("cali1");
    assert!(!ok(mesh, pod.clone()));
    // ... unless Felix raised its priority (live migration: metric below 1024).
    let mut elevated = pod;
    elevated.krt_metric = Some(512);
    assert!(ok(mesh, elevated));
    // Felix's VXLAN routes: not to iBGP peers, but to the ToR (eBGP).
    let vx =
        RouteInfo::new(net("10.244.7.0/26"), RouteSource::Kernel).with_interface("vxlan.calico");
    assert!(!ok(mesh, vx.clone()));
    assert!(ok(tor, vx));
    // tunl0 routes are Felix's too by default (programClusterRoutes: EnabledNoEncapOnly).
    let tunl = RouteInfo::new(net("172.16.3.0/26"), RouteSource::Kernel).with_interface("tunl0");
    assert!(!ok(mesh, tunl.clone()));
    assert!(ok(tor, tunl));
    let bpf =
        RouteInfo::new(net("192.168.5.0/26"), RouteSource::Kernel).with_interface("bpfout.cali");
    assert!(!ok(tor, bpf));
    // Other nodes' blocks learned over BGP are in a pool: the filter lets them through (the
    // RIB decides whether iBGP may carry them on).
    assert!(i.filter_export(tor, &net("192.168.2.0/26")));
    assert!(!i.filter_export(tor, &net("8.8.8.0/24")), "not in a pool");
    assert!(
        !i.filter_export(tor, &net("172.20.0.0/26")),
        "disableBGPExport"
    );
    assert!(i.filter_export(tor, &net("10.96.0.0/12")), "service range");
    assert!(
        !i.filter_export(tor, &net("fd00:10::/122")),
        "IPv6 route to an IPv4 session"
    );
    assert!(!i.filter_export("Nope", &net("192.168.1.0/26")));
    // Export sets LOCAL_PREF from the metric.
    match i.export_verdict(mesh, &RouteInfo::originated(net("192.168.1.0/26"))) {
        FilterVerdict::Accept(e) => assert_eq!(e.local_pref, Some(BIRD_INT_MAX - 1024)),
        FilterVerdict::Reject => panic!("rejected"),
    }
}

#[test]
fn a_route_reflector_reflects_load_balancer_and_external_ranges() {
    let rr = SERVICES.to_string()
        + r#"
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-master}
spec: {bgp: {ipv4Address: 10.192.0.2/16, routeReflectorClusterID: 244.0.0.1}}
"#;
    let i = mesh_and_tor(&rr);
    // A single external IP is advertised per service by the owning nodes; only a reflector
    // passes it on.
    assert!(i.filter_export("Global_10_192_0_1", &net("203.0.114.77/32")));
    let plain = mesh_and_tor(SERVICES);
    assert!(!plain.filter_export("Global_10_192_0_1", &net("203.0.114.77/32")));
}

// ===== kernel =====

#[test]
fn kernel_actions_by_pool_with_the_default_cluster_route_policy() {
    let i = intent(&routes_state(SERVICES), "kube-master").unwrap();
    let nh = ip("10.192.0.3");
    let k = |p: &str| i.kernel_action(&net(p), nh);
    assert_eq!(
        k("192.168.2.0/26"),
        KernelAction::Install { via_tunnel: false }
    );
    assert_eq!(
        k("10.244.2.0/26"),
        KernelAction::Skip(SkipReason::VxlanPool {
            cidr: net("10.244.0.0/16")
        })
    );
    assert_eq!(
        k("172.16.2.0/26"),
        KernelAction::Skip(SkipReason::FelixProgramsPool {
            cidr: net("172.16.0.0/16")
        })
    );
    assert_eq!(
        k("10.96.0.0/16"),
        KernelAction::Skip(SkipReason::ServiceRange {
            cidr: net("10.96.0.0/12")
        })
    );
    assert_eq!(k("8.8.0.0/16"), KernelAction::Install { via_tunnel: false });
    assert_eq!(
        i.kernel_action(&net("fd00:10::40/122"), ip("fd00::3")),
        KernelAction::Install { via_tunnel: false }
    );
    // Blackholes of no-encap blocks are BIRD's to install; VXLAN ones are Felix's.
    assert_eq!(
        i.blackhole_action(&net("192.168.1.0/26")),
        KernelAction::Install { via_tunnel: false }
    );
    assert!(matches!(
        i.blackhole_action(&net("10.244.1.0/26")),
        KernelAction::Skip(_)
    ));
    assert_eq!(i.kernel_metric(&net("192.168.2.0/26"), None), 1024);
    assert_eq!(
        i.kernel_metric(&net("192.168.2.0/26"), Some(BIRD_INT_MAX - 512)),
        512
    );
}

#[test]
fn kernel_actions_when_bird_programs_ipip() {
    let cfg = r#"
---
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {programClusterRoutes: Enabled}
"#;
    let i = intent(&routes_state(cfg), "kube-master").unwrap();
    let k = |p: &str, nh: &str| i.kernel_action(&net(p), ip(nh));
    assert_eq!(
        k("172.16.2.0/26", "10.192.0.3"),
        KernelAction::Install { via_tunnel: true }
    );
    // CrossSubnet: direct inside this node's 10.192.0.0/16, tunnelled outside it.
    assert_eq!(
        k("172.17.2.0/26", "10.192.0.3"),
        KernelAction::Install { via_tunnel: false }
    );
    assert_eq!(
        k("172.17.2.0/26", "10.99.0.3"),
        KernelAction::Install { via_tunnel: true }
    );
    assert_eq!(
        k("192.168.2.0/26", "10.99.0.3"),
        KernelAction::Install { via_tunnel: false }
    );
    // BIRD owns tunl0 routes now, so they may go to iBGP peers.
    assert!(!i.export_policy.felix_owns_ipip);

    let disabled = cfg.replace("Enabled", "Disabled");
    let d = intent(&routes_state(&disabled), "kube-master").unwrap();
    assert!(matches!(
        d.kernel_action(&net("192.168.2.0/26"), ip("10.192.0.3")),
        KernelAction::Skip(SkipReason::FelixProgramsPool { .. })
    ));
    assert!(matches!(
        d.kernel_action(&net("fd00:10::40/122"), ip("fd00::3")),
        KernelAction::Skip(SkipReason::FelixProgramsPool { .. })
    ));
}

#[test]
fn wireguard_peers_routes_stay_out_of_the_kernel() {
    let wg = r#"
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-master}
spec: {bgp: {ipv4Address: 10.192.0.2/16}, wireguard: {interfaceIPv4Address: 10.255.0.2}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {name: kube-node-1}
spec: {bgp: {ipv4Address: 10.192.0.3/16}, wireguard: {interfaceIPv4Address: 10.255.0.3}}
"#;
    let s = routes_state(wg);
    let i = intent(&s, "kube-master").unwrap();
    assert_eq!(
        i.kernel_action(&net("192.168.2.0/26"), ip("10.192.0.3")),
        KernelAction::Skip(SkipReason::WireguardPeer {
            node: "kube-node-1".into()
        })
    );
}

// ===== BGPFilter =====

const FILTERS: &str = r#"
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: f-ops}
spec:
  importV4:
    - {cidr: 10.0.0.0/8, matchOperator: Equal, action: Reject}
    - {cidr: 10.1.0.0/16, matchOperator: In, prefixLength: {min: 24, max: 26}, action: Reject}
    - {cidr: 10.2.0.0/16, matchOperator: In, action: Reject}
    - {cidr: 10.3.0.0/16, matchOperator: NotIn, action: Accept}
    - {cidr: 10.3.0.0/24, matchOperator: NotEqual, action: Reject}
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: f-export}
spec:
  exportV4:
    - {interface: "eth*", action: Reject}
    - {source: RemotePeers, action: Reject}
    - {cidr: 172.20.0.0/16, matchOperator: In, action: Accept}
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: f-ibgp}
spec:
  exportV4:
    - {peerType: iBGP, cidr: 192.168.0.0/16, matchOperator: In, action: Reject}
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: f-tag}
spec:
  importV4:
    - communities: {values: ["65000:100"]}
      action: Accept
      operations:
        - addCommunity: {value: "65000:200"}
        - prependASPath: {prefix: [65001, 65002]}
        - setPriority: {value: 512}
    - {asPathPrefix: [65009], action: Reject}
    - {priority: 100, action: Reject}
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: f-accept-10}
spec:
  importV4: [{cidr: 10.2.0.0/16, matchOperator: In, action: Accept}]
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: ops}
spec: {peerIP: 192.0.2.1, asNumber: 65000, filters: [f-ops]}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: exp}
spec: {peerIP: 192.0.2.2, asNumber: 65000, filters: [f-export]}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: ibgp}
spec: {peerIP: 192.0.2.3, asNumber: 64512, filters: [f-ibgp]}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: ebgp}
spec: {peerIP: 192.0.2.4, asNumber: 65000, filters: [f-ibgp]}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tag}
spec: {peerIP: 192.0.2.5, asNumber: 65000, filters: [f-tag]}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: order}
spec: {peerIP: 192.0.2.6, asNumber: 65000, filters: [f-accept-10, f-ops]}
"#;

#[test]
fn bgp_filter_match_operators_first_match_wins_then_accept() {
    let i = intent(&routes_state(FILTERS), "kube-master").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    let imp = |p: &str| i.filter_import("Global_192_0_2_1", &net(p));
    assert!(!imp("10.0.0.0/8"), "Equal");
    assert!(
        imp("10.0.0.0/9"),
        "Equal is exact; NotIn 10.3/16 then accepts"
    );
    assert!(!imp("10.1.2.0/24"), "In with lengths 24..26");
    assert!(imp("10.1.0.0/16"), "shorter than the length range");
    assert!(imp("10.1.2.0/28"), "longer than the length range");
    assert!(!imp("10.2.3.0/24"), "In");
    assert!(!imp("10.3.1.0/24"), "NotEqual");
    assert!(imp("10.3.0.0/24"), "no rule: accept");
    // Filters run in the peer's order: the first filter's accept ends it.
    assert!(i.filter_import("Global_192_0_2_6", &net("10.2.3.0/24")));
}

#[test]
fn bgp_filter_export_rules_come_before_calicos_own() {
    let i = intent(&routes_state(FILTERS), "kube-master").unwrap();
    let exp = "Global_192_0_2_2";
    // An Accept overrides disableBGPExport.
    assert!(i.filter_export_route(exp, &RouteInfo::originated(net("172.20.0.0/26"))));
    // Interface glob and source.
    let eth = RouteInfo::new(net("192.168.2.0/26"), RouteSource::Kernel).with_interface("eth0");
    assert!(!i.filter_export_route(exp, &eth));
    assert!(!i.filter_export_route(exp, &RouteInfo::learned(net("192.168.2.0/26"))));
    // No match: on to calico_export_to_bgp_peers.
    assert!(i.filter_export_route(exp, &RouteInfo::originated(net("192.168.1.0/26"))));
    // peerType iBGP only applies to iBGP peers.
    let block = RouteInfo::originated(net("192.168.1.0/26"));
    assert!(!i.filter_export_route("Global_192_0_2_3", &block));
    assert!(i.filter_export_route("Global_192_0_2_4", &block));
}

#[test]
fn bgp_filter_communities_as_path_priority_and_operations() {
    let i = intent(&routes_state(FILTERS), "kube-master").unwrap();
    let tag = "Global_192_0_2_5";
    let mut r = RouteInfo::learned(net("10.9.0.0/16"));
    r.communities = vec![(65000 << 16) | 100];
    match i.import_verdict(tag, &r) {
        FilterVerdict::Accept(e) => {
            assert_eq!(e.communities, [(65000 << 16) | 200]);
            assert_eq!(e.prepend, [65001, 65002]);
            assert_eq!(e.local_pref, Some(BIRD_INT_MAX - 512));
        }
        FilterVerdict::Reject => panic!("rejected"),
    }
    let mut path = RouteInfo::learned(net("10.9.0.0/16"));
    path.as_path = vec![65009, 1];
    assert!(!i.filter_import_route(tag, &path));
    path.as_path = vec![1, 65009];
    assert!(i.filter_import_route(tag, &path));
    let mut pri = RouteInfo::learned(net("10.9.0.0/16"));
    pri.local_pref = Some(BIRD_INT_MAX - 100);
    assert!(!i.filter_import_route(tag, &pri));
}

#[test]
fn an_invalid_filter_rule_is_skipped_and_reported() {
    let bad = r#"
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: bad}
spec:
  importV4:
    - {cidr: "fd00::/8", matchOperator: In, action: Reject}
    - {cidr: 10.0.0.0/8, action: Reject}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: p}
spec: {peerIP: 192.0.2.1, asNumber: 65000, filters: [bad]}
"#;
    let i = intent(&routes_state(bad), "kube-master").unwrap();
    let msgs: Vec<String> = i.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    assert!(
        msgs[0].starts_with("BGPFilter \"bad\" spec.importV4[0].cidr"),
        "{}",
        msgs[0]
    );
    assert!(msgs[1].contains("importV4[1].matchOperator"), "{}", msgs[1]);
    assert!(i.filter_import("Global_192_0_2_1", &net("10.0.0.0/8")));
}

#[test]
fn a_changed_filter_makes_intents_differ_without_touching_peers() {
    let a = intent(&routes_state(FILTERS), "kube-master").unwrap();
    let b = intent(
        &routes_state(&FILTERS.replace(
            "10.2.0.0/16, matchOperator: In, action: Reject",
            "10.2.0.0/16, matchOperator: In, action: Accept",
        )),
        "kube-master",
    )
    .unwrap();
    assert!(diff_peers(&a.peers, &b.peers).is_empty());
    assert!(a.filters_differ(&b));
    assert!(!a.filters_differ(&a.clone()));
}

#[test]
fn bird_patterns() {
    use super::super::filter::glob_match;
    assert!(glob_match("*.cali", "wireguard.cali"));
    assert!(!glob_match("*.cali", "cali12345"));
    assert!(glob_match("bpf*.cali", "bpfout.cali"));
    assert!(glob_match("eth?", "eth0") && !glob_match("eth?", "eth10"));
    assert!(glob_match("*", "") && glob_match("tunl0", "tunl0"));
}

#[test]
fn originated_routes_reach_the_filters_with_their_source_and_interface() {
    let pods_out = r#"
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: no-pods}
spec:
  exportV4: [{interface: "cali*", action: Reject}]
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor}
spec: {peerIP: 192.0.2.9, asNumber: 65000, filters: [no-pods]}
"#;
    let i = intent(&routes_state(pods_out), "kube-master").unwrap();
    // A borrowed address is Felix's kernel route on the pod's interface, as BIRD sees it.
    let pod = i.originated_route(net("192.168.2.7/32"));
    assert_eq!(pod.source, RouteSource::Kernel);
    assert_eq!(pod.interface.as_deref(), Some("caliborrowed"));
    let block = i.originated_route(net("192.168.1.0/26"));
    assert_eq!((block.source, block.interface), (RouteSource::Static, None));
    // So an interface rule keeps pod routes from the peer and lets the block through.
    assert!(!i.filter_export("Global_192_0_2_9", &net("192.168.2.7/32")));
    assert!(i.filter_export("Global_192_0_2_9", &net("192.168.1.0/26")));
}
