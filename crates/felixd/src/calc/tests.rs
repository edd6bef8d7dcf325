#![allow(clippy::unwrap_used)]

use super::*;
use calico_api::codec::decode_documents;

const HOST: &str = "node-a";

fn apply(g: &mut CalcGraph, yaml: &str) {
    for r in decode_documents(yaml).unwrap() {
        g.put(&r);
    }
}

fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-{name}-eth0
  namespace: {ns}
  labels: {{{labels}}}
spec:
  orchestrator: k8s
  node: {node}
  pod: {name}
  endpoint: eth0
  interfaceName: cali{name}
  ipNetworks: ["{ip}/32"]
  profiles: ["kns.{ns}"]
  ports:
  - name: http
    protocol: TCP
    port: 8080
"#
    )
}

fn wl(ns: &str, name: &str, node: &str) -> EndpointId {
    EndpointId::Workload {
        namespace: ns.into(),
        name: format!("{node}-k8s-{name}-eth0"),
    }
}

fn namespace_profile(ns: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: kns.{ns}
spec:
  ingress: [{{action: Allow}}]
  egress: [{{action: Allow}}]
  labelsToApply: {{pcns.projectcalico.org/name: {ns}, {labels}}}
"#
    )
}

fn tiers() -> &'static str {
    r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: default}
spec: {order: 1000000, defaultAction: Deny}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Pass}
"#
}

fn members(g: &CalcGraph, id: &str) -> Vec<String> {
    let mut v: Vec<String> = g
        .ipsets()
        .members(id)
        .unwrap()
        .map(|m| m.to_string())
        .collect();
    v.sort();
    v
}

fn graph() -> CalcGraph {
    let mut g = CalcGraph::new(HOST);
    apply(&mut g, tiers());
    apply(&mut g, &namespace_profile("prod", "pcns.env: prod"));
    apply(&mut g, &namespace_profile("dev", "pcns.env: dev"));
    g
}

#[test]
fn a_policy_selecting_a_local_pod_is_active_and_its_sets_hold_remote_pods() {
    let mut g = graph();
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: web"));
    apply(
        &mut g,
        &pod("prod", "client", "node-b", "10.0.1.1", "app: client"),
    );
    apply(
        &mut g,
        &pod("dev", "client2", "node-b", "10.0.1.2", "app: client"),
    );
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-clients, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'client'}
    destination: {ports: [http]}
"#,
    );
    let ch = g.take_changes();
    let id = PolicyId::network_policy("prod", "allow-clients");
    assert!(ch.policies.contains(&id));
    let rules = g.active_policy(&id).unwrap();
    assert_eq!(rules.inbound.len(), 1);
    let r = &rules.inbound[0];
    // The source selector is scoped to the policy's namespace: only prod's client.
    assert_eq!(members(&g, &r.src_ipset_ids[0]), vec!["10.0.1.1/32"]);
    // The named port covers local and remote endpoints (the destination has no selector).
    assert_eq!(
        members(&g, &r.dst_named_port_ipset_ids[0]),
        vec![
            "10.0.0.1,tcp:8080",
            "10.0.1.1,tcp:8080",
            "10.0.1.2,tcp:8080"
        ]
    );
    let ep = g.local_endpoint(&wl("prod", "web", HOST)).unwrap();
    assert_eq!(ep.iface, "caliweb");
    assert_eq!(ep.tiers.len(), 1);
    assert_eq!(ep.tiers[0].name, "default");
    assert_eq!(ep.tiers[0].ingress[0].id, id);
    assert!(ep.tiers[0].egress.is_empty());
    assert_eq!(ep.profile_ids, vec!["kns.prod".to_string()]);
    assert!(g.active_profile("kns.prod").is_some());
    // Remote pods are not local endpoints, and their profiles are not active.
    assert!(g.local_endpoint(&wl("prod", "client", "node-b")).is_none());
    assert!(g.active_profile("kns.dev").is_none());
}

#[test]
fn a_policy_selecting_nothing_local_is_inactive_and_costs_no_sets() {
    let mut g = graph();
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: web"));
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-only}
spec:
  selector: app == 'db'
  ingress: [{action: Allow, source: {selector: app == 'web'}}]
"#,
    );
    g.take_changes();
    assert!(g.active_policy(&PolicyId::global("db-only")).is_none());
    // Only the profile's rules are active, and they use no sets.
    assert_eq!(g.ipsets().active_count(), 0);
    // A db pod arrives on this node: the policy and its set become active.
    apply(&mut g, &pod("prod", "db", HOST, "10.0.0.2", "app: db"));
    let ch = g.take_changes();
    assert!(ch.policies.contains(&PolicyId::global("db-only")));
    assert_eq!(g.ipsets().active_count(), 1);
    assert!(!ch.ipsets.sets.is_empty());
    // And it leaves again: the policy and the set go away.
    g.delete(
        Kind::WorkloadEndpoint,
        Some("prod"),
        &format!("{HOST}-k8s-db-eth0"),
    );
    let ch = g.take_changes();
    assert!(ch.policies.contains(&PolicyId::global("db-only")));
    assert!(g.active_policy(&PolicyId::global("db-only")).is_none());
    assert_eq!(g.ipsets().active_count(), 0);
    assert!(ch.endpoints.contains(&wl("prod", "db", HOST)));
    assert!(g.local_endpoint(&wl("prod", "db", HOST)).is_none());
}

#[test]
fn tiers_and_policies_are_ordered_as_felix_orders_them() {
    let mut g = graph();
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: web"));
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b, namespace: prod}
spec: {order: 10, selector: all(), ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a, namespace: prod}
spec: {order: 10, selector: all(), ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: z-no-order, namespace: prod}
spec: {selector: all(), ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.first}
spec: {tier: security, order: 500, selector: all(), egress: [{action: Deny}]}
"#,
    );
    g.take_changes();
    let ep = g.local_endpoint(&wl("prod", "web", HOST)).unwrap();
    let names: Vec<(&str, &str)> = ep
        .tiers
        .iter()
        .map(|t| (t.name.as_str(), t.default_action.as_str()))
        .collect();
    assert_eq!(names, vec![("security", "Pass"), ("default", "Deny")]);
    assert!(ep.tiers[0].ingress.is_empty());
    assert_eq!(ep.tiers[0].egress[0].id, PolicyId::global("security.first"));
    let ingress: Vec<&str> = ep.tiers[1]
        .ingress
        .iter()
        .map(|r| r.id.name.as_str())
        .collect();
    assert_eq!(ingress, vec!["a", "b", "z-no-order"]);
    let egress: Vec<&str> = ep.tiers[1]
        .egress
        .iter()
        .map(|r| r.id.name.as_str())
        .collect();
    assert_eq!(egress, vec!["z-no-order"]);
    // Raising the tier's order moves it after default.
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 2000000, defaultAction: Pass}
"#,
    );
    let ch = g.take_changes();
    assert!(ch.endpoints.contains(&wl("prod", "web", HOST)));
    let ep = g.local_endpoint(&wl("prod", "web", HOST)).unwrap();
    assert_eq!(ep.tiers[0].name, "default");
    // A tier without its resource is skipped, as Felix skips it.
    g.delete(Kind::Tier, None, "security");
    g.take_changes();
    let ep = g.local_endpoint(&wl("prod", "web", HOST)).unwrap();
    assert_eq!(ep.tiers.len(), 1);
}

#[test]
fn namespace_labels_come_from_the_profile_and_follow_its_changes() {
    let mut g = graph();
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: web"));
    apply(
        &mut g,
        &pod("dev", "tool", "node-b", "10.0.1.9", "app: tool"),
    );
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-env, namespace: prod}
spec:
  selector: all()
  ingress: [{action: Allow, source: {namespaceSelector: env == 'qa'}}]
"#,
    );
    g.take_changes();
    let set = g
        .active_policy(&PolicyId::network_policy("prod", "from-env"))
        .unwrap()
        .inbound[0]
        .src_ipset_ids[0]
        .clone();
    assert!(members(&g, &set).is_empty());
    // dev's namespace is relabelled env=qa: its pod joins the set.
    apply(&mut g, &namespace_profile("dev", "pcns.env: qa"));
    let ch = g.take_changes();
    assert_eq!(members(&g, &set), vec!["10.0.1.9/32"]);
    assert!(ch.ipsets.members.contains_key(&set));
    // The pod's own label wins over an inherited one.
    apply(
        &mut g,
        &pod(
            "dev",
            "tool",
            "node-b",
            "10.0.1.9",
            "app: tool, pcns.env: other",
        ),
    );
    assert!(members(&g, &set).is_empty());
}

#[test]
fn network_sets_feed_sets_and_inherit_namespace_labels() {
    let mut g = graph();
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: web"));
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: egress-to-sets}
spec:
  selector: all()
  egress:
  - action: Allow
    destination: {selector: role == 'external', namespaceSelector: all()}
  - action: Allow
    destination: {selector: role == 'external', namespaceSelector: global()}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: prod, labels: {role: external}}
spec: {nets: ["198.51.100.0/24", "203.0.113.7"]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: world, labels: {role: external}}
spec: {nets: ["192.0.2.0/24"]}
"#,
    );
    g.take_changes();
    let p = g
        .active_policy(&PolicyId::global("egress-to-sets"))
        .unwrap();
    let namespaced = p.outbound[0].dst_ipset_ids[0].clone();
    let global = p.outbound[1].dst_ipset_ids[0].clone();
    assert_eq!(
        members(&g, &namespaced),
        vec!["198.51.100.0/24", "203.0.113.7/32"]
    );
    assert_eq!(members(&g, &global), vec!["192.0.2.0/24"]);
    g.delete(Kind::NetworkSet, Some("prod"), "partners");
    assert!(members(&g, &namespaced).is_empty());
}

#[test]
fn a_missing_profile_denies_and_a_profile_arriving_replaces_the_stand_in() {
    let mut g = CalcGraph::new(HOST);
    apply(&mut g, &pod("ghost", "p", HOST, "10.0.0.5", "app: x"));
    g.take_changes();
    let pr = g.active_profile("kns.ghost").unwrap();
    assert_eq!(pr.inbound[0].action, "deny");
    assert_eq!(pr.outbound[0].action, "deny");
    apply(&mut g, &namespace_profile("ghost", "pcns.env: x"));
    let ch = g.take_changes();
    assert!(ch.profiles.contains("kns.ghost"));
    assert_eq!(
        g.active_profile("kns.ghost").unwrap().inbound[0].action,
        "allow"
    );
}

#[test]
fn relabelling_a_local_pod_moves_it_between_policies() {
    let mut g = graph();
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: web"));
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec: {selector: app == 'web', ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api, namespace: prod}
spec: {selector: app == 'api', ingress: [{action: Deny}]}
"#,
    );
    g.take_changes();
    assert!(
        g.active_policy(&PolicyId::network_policy("prod", "web"))
            .is_some()
    );
    assert!(
        g.active_policy(&PolicyId::network_policy("prod", "api"))
            .is_none()
    );
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: api"));
    let ch = g.take_changes();
    assert!(ch.endpoints.contains(&wl("prod", "web", HOST)));
    assert!(
        g.active_policy(&PolicyId::network_policy("prod", "web"))
            .is_none()
    );
    assert!(
        g.active_policy(&PolicyId::network_policy("prod", "api"))
            .is_some()
    );
    let ep = g.local_endpoint(&wl("prod", "web", HOST)).unwrap();
    assert_eq!(ep.tiers[0].ingress[0].id.name, "api");
    // The same update again changes nothing.
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: api"));
    assert!(g.take_changes().is_empty());
}

#[test]
fn host_endpoints_split_untracked_pre_dnat_and_forward_policies() {
    let mut g = graph();
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-a-eth0, labels: {role: node}}
spec: {node: node-a, interfaceName: eth0, expectedIPs: ["192.168.1.10"]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked}
spec: {order: 1, selector: role == 'node', doNotTrack: true, applyOnForward: true, ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prednat}
spec: {order: 2, selector: role == 'node', preDNAT: true, applyOnForward: true, ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: forward}
spec: {order: 3, selector: role == 'node', applyOnForward: true, ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: normal}
spec: {order: 4, selector: role == 'node', ingress: [{action: Allow}]}
"#,
    );
    g.take_changes();
    let ep = g
        .local_endpoint(&EndpointId::Host {
            name: "node-a-eth0".into(),
        })
        .unwrap();
    let names = |t: &[TierInfo]| -> Vec<String> {
        t.iter()
            .flat_map(|t| t.ingress.iter().chain(t.egress.iter()))
            .map(|r| r.id.name.clone())
            .collect()
    };
    assert_eq!(names(&ep.untracked_tiers), vec!["untracked", "untracked"]);
    assert_eq!(ep.untracked_tiers[0].default_action, "Pass");
    assert_eq!(names(&ep.pre_dnat_tiers), vec!["prednat"]);
    assert_eq!(names(&ep.forward_tiers), vec!["forward"]);
    assert_eq!(names(&ep.tiers), vec!["forward", "normal"]);
    assert_eq!(ep.nets, vec!["192.168.1.10/32".parse::<IpNet>().unwrap()]);
    assert!(
        g.active_policy(&PolicyId::global("untracked"))
            .unwrap()
            .untracked
    );
    assert!(
        g.active_policy(&PolicyId::global("prednat"))
            .unwrap()
            .pre_dnat
    );
}

#[test]
fn a_pod_moving_off_this_node_stops_being_local() {
    let mut g = graph();
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: web"));
    g.take_changes();
    assert!(g.active_profile("kns.prod").is_some());
    let mut y = pod("prod", "web", HOST, "10.0.0.1", "app: web");
    y = y.replace(&format!("node: {HOST}"), "node: node-b");
    apply(&mut g, &y);
    let ch = g.take_changes();
    assert!(ch.endpoints.contains(&wl("prod", "web", HOST)));
    assert!(g.local_endpoint(&wl("prod", "web", HOST)).is_none());
    assert!(g.active_profile("kns.prod").is_none());
}

#[test]
fn kubernetes_policies_keep_their_kind() {
    let mut g = graph();
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: web"));
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: knp.default.deny-all, namespace: prod}
spec: {order: 1000, selector: "projectcalico.org/orchestrator == 'k8s'", types: [Ingress]}
"#,
    );
    g.take_changes();
    let ep = g.local_endpoint(&wl("prod", "web", HOST)).unwrap();
    assert_eq!(ep.tiers[0].ingress[0].id.kind, "knp");
    assert_eq!(
        ep.tiers[0].ingress[0].id.id(),
        "knp/prod/knp.default.deny-all"
    );
}

#[test]
fn staged_policies_are_never_enforced() {
    let mut g = graph();
    apply(&mut g, &pod("prod", "web", HOST, "10.0.0.1", "app: web"));
    g.take_changes();
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: deny-web, namespace: prod}
spec: {selector: app == 'web', ingress: [{action: Deny, source: {selector: app == 'x'}}]}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: deny-all}
spec: {selector: all(), ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: deny-web, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#,
    );
    let ch = g.take_changes();
    assert!(ch.policies.is_empty());
    assert_eq!(g.counts().policies, 0);
    assert_eq!(g.ipsets().active_count(), 0);
    let ep = g.local_endpoint(&wl("prod", "web", HOST)).unwrap();
    assert!(ep.tiers.is_empty(), "{:?}", ep.tiers);
    g.delete(Kind::StagedNetworkPolicy, Some("prod"), "deny-web");
    g.delete(Kind::StagedGlobalNetworkPolicy, None, "deny-all");
    assert!(g.take_changes().policies.is_empty());
}
