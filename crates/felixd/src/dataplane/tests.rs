#![allow(clippy::unwrap_used)]

use super::*;
use crate::calc::CalcGraph;
use crate::dataplane::exec::fake::FakeExec;
use calico_api::codec::decode_documents;

const HOST: &str = "node-a";

fn config() -> DataplaneConfig {
    DataplaneConfig {
        rules: RulesConfig::default(),
        ipv6: true,
        backend: Backend::Nft,
        features: Features::default(),
        insert_mode: true,
        hostname: HOST.into(),
        netlink: false,
        mtu_file: None,
    }
}

fn empty_kernel() -> Arc<FakeExec> {
    let exec = Arc::new(FakeExec::default());
    for tool in ["iptables-nft-save", "ip6tables-nft-save"] {
        exec.set_output(
            tool,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
        );
    }
    exec
}

fn apply(g: &mut CalcGraph, yaml: &str) {
    for r in decode_documents(yaml).unwrap() {
        g.put(&r);
    }
}

const CLUSTER: &str = r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: default}
spec: {order: 1000000}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
  labelsToApply: {pcns.projectcalico.org/name: prod}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool4}
spec: {cidr: 10.244.0.0/16, natOutgoing: true, blockSize: 26}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node-a-k8s-web-eth0
  namespace: prod
  labels: {app: web}
spec:
  orchestrator: k8s
  node: node-a
  pod: web
  endpoint: eth0
  interfaceName: cali0123456789a
  ipNetworks: ["10.244.0.5/32", "fd00:244::5/128"]
  profiles: ["kns.prod"]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node-b-k8s-client-eth0
  namespace: prod
  labels: {app: client}
spec:
  orchestrator: k8s
  node: node-b
  pod: client
  endpoint: eth0
  interfaceName: calib0123456789
  ipNetworks: ["10.244.1.7/32"]
  profiles: ["kns.prod"]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: prod}
spec:
  order: 100
  selector: app == 'web'
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'client'}
    destination: {ports: [80, 443]}
  egress:
  - action: Allow
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-metrics, namespace: prod}
spec:
  order: 100
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [9090]}
"#;

/// Every table's full restore input after a first apply on an empty node.
fn rendered(exec: &FakeExec) -> String {
    let mut out = String::new();
    for tool in ["iptables-nft-restore", "ip6tables-nft-restore"] {
        out.push_str(&format!("### {tool}\n"));
        for input in exec.inputs_to(tool) {
            out.push_str(&input);
        }
    }
    out.push_str("### ipset\n");
    for input in exec.inputs_to("ipset") {
        let mut lines: Vec<&str> = input.lines().collect();
        lines.sort();
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Compares rendered text with a checked-in file (rewritten with UPDATE_GOLDEN=1).
fn assert_golden(file: &str, text: &str) {
    let golden = format!("{}/testdata/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        text == want,
        "rendered rules differ from {golden} (UPDATE_GOLDEN=1 to accept):\n{text}"
    );
}

#[tokio::test]
async fn a_node_with_one_pod_and_policy_renders_calicos_rule_set() {
    let exec = empty_kernel();
    let mut g = CalcGraph::new(HOST);
    apply(&mut g, CLUSTER);
    let mut dp = Dataplane::new(config(), exec.clone());
    let ch = g.take_changes();
    dp.on_changes(&g, &ch);
    dp.apply().await.unwrap();
    let text = rendered(&exec);
    assert_golden("iptables-one-pod.txt", &text);
    // What must be there, whatever the golden file says.
    assert!(text.contains(":cali-tw-cali0123456789a - [0:0]"));
    assert!(text.contains(":cali-fw-cali0123456789a - [0:0]"));
    assert!(text.contains("cali-from-wl-dispatch"));
    // Two policies with the same selector share a group chain.
    assert!(text.contains(":cali-gi-"));
    assert!(text.contains("-A cali-nat-outgoing"));
    assert!(text.contains("add cali40masq-ipam-pools 10.244.0.0/16"));
    assert!(dp.is_programmed(&crate::calc::EndpointId::Workload {
        namespace: "prod".into(),
        name: "node-a-k8s-web-eth0".into()
    }));
}

#[tokio::test]
async fn removing_the_pod_removes_its_chains_policies_and_sets() {
    let exec = empty_kernel();
    let mut g = CalcGraph::new(HOST);
    apply(&mut g, CLUSTER);
    let mut dp = Dataplane::new(config(), exec.clone());
    let ch = g.take_changes();
    dp.on_changes(&g, &ch);
    dp.apply().await.unwrap();
    let before = exec.calls.lock().unwrap().len();
    g.delete(
        calico_api::Kind::WorkloadEndpoint,
        Some("prod"),
        "node-a-k8s-web-eth0",
    );
    let ch = g.take_changes();
    dp.on_changes(&g, &ch);
    let s = dp.apply().await.unwrap();
    assert!(s.chains_deleted >= 4, "{s:?}");
    // The sets go on a later pass, once the kernel has freed the rules that used them.
    assert_eq!(s.sets_deleted, 0, "{s:?}");
    let due = dp.next_retry().expect("a pass for the sets is scheduled");
    tokio::time::sleep(due.saturating_duration_since(std::time::Instant::now())).await;
    assert!(dp.needs_apply());
    let s = dp.apply().await.unwrap();
    assert!(s.sets_deleted >= 1, "{s:?}");
    assert!(dp.next_retry().is_none());
    let calls = exec.calls.lock().unwrap()[before..].to_vec();
    let all: String = calls
        .iter()
        .map(|c| c.2.clone() + &c.1.join(" ") + "\n")
        .collect();
    assert!(all.contains("-X cali-tw-cali0123456789a"), "{all}");
    assert!(all.contains("-X cali-pi-"), "{all}");
    assert!(all.contains("destroy cali40s:"), "{all}");
    // The dispatch chains no longer name the interface.
    assert!(!all.contains("--in-interface cali0123456789a --goto cali-fw-"));
}

#[tokio::test]
async fn a_label_change_rewrites_only_what_depends_on_it() {
    let exec = empty_kernel();
    let mut g = CalcGraph::new(HOST);
    apply(&mut g, CLUSTER);
    let mut dp = Dataplane::new(config(), exec.clone());
    let ch = g.take_changes();
    dp.on_changes(&g, &ch);
    dp.apply().await.unwrap();
    // The remote client loses its label: one set member goes, no chain changes.
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node-b-k8s-client-eth0
  namespace: prod
  labels: {app: other}
spec:
  orchestrator: k8s
  node: node-b
  pod: client
  endpoint: eth0
  interfaceName: calib0123456789
  ipNetworks: ["10.244.1.7/32"]
  profiles: ["kns.prod"]
"#,
    );
    let ch = g.take_changes();
    dp.on_changes(&g, &ch);
    let s = dp.apply().await.unwrap();
    assert_eq!(s.chains_written, 0, "{s:?}");
    assert_eq!(s.members_changed, 1, "{s:?}");
    assert_eq!(s.restores, 0, "{s:?}");
}

#[tokio::test]
async fn host_endpoints_get_chains_in_every_table_they_need() {
    let exec = empty_kernel();
    let mut g = CalcGraph::new(HOST);
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: default}
spec: {order: 1000000}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-a-eth0, labels: {role: node}}
spec: {node: node-a, interfaceName: eth0, expectedIPs: ["192.168.1.10"]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked}
spec: {order: 1, selector: role == 'node', doNotTrack: true, applyOnForward: true, ingress: [{action: Allow, protocol: UDP, destination: {ports: [53]}}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prednat}
spec: {order: 2, selector: role == 'node', preDNAT: true, applyOnForward: true, ingress: [{action: Deny, source: {nets: [192.0.2.0/24]}}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ssh}
spec: {order: 3, selector: role == 'node', ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]}
"#,
    );
    let mut dp = Dataplane::new(config(), exec.clone());
    let ch = g.take_changes();
    dp.on_changes(&g, &ch);
    dp.apply().await.unwrap();
    let text = rendered(&exec);
    for chain in [
        ":cali-th-eth0",
        ":cali-fh-eth0",
        ":cali-thfw-eth0",
        ":cali-fhfw-eth0",
        "-A cali-from-host-endpoint -m comment --comment \"cali:HIN_eur26mTLJ97D\" --in-interface eth0",
        "-A cali-failsafe-in",
    ] {
        assert!(text.contains(chain), "{chain} missing:\n{text}");
    }
    let raw = text.find("*raw").unwrap();
    assert!(
        text[raw..].contains("cali-pi-"),
        "untracked policy in raw:\n{text}"
    );
}

#[tokio::test]
async fn the_same_node_on_nftables_renders_one_transaction_for_both_families() {
    let exec = Arc::new(FakeExec::default());
    // An empty node: nft lists no calico table.
    exec.set_output(
        "nft",
        r#"{"nftables": [{"metainfo": {"json_schema_version": 1}}]}"#,
    );
    let mut cfg = config();
    cfg.rules.nftables = true;
    let mut g = CalcGraph::new(HOST);
    apply(&mut g, CLUSTER);
    let mut dp = Dataplane::new(cfg, exec.clone());
    let ch = g.take_changes();
    dp.on_changes(&g, &ch);
    dp.apply().await.unwrap();
    let scripts = exec.inputs_to("nft");
    let scripts: Vec<&String> = scripts.iter().filter(|s| !s.is_empty()).collect();
    assert_eq!(scripts.len(), 1, "ip and ip6 in one transaction");
    let text = scripts[0].clone();
    assert!(text.contains("table ip calico") && text.contains("table ip6 calico"));
    assert_golden("nftables-one-pod.txt", &text);
    assert!(text.contains("add chain ip calico filter-cali-tw-cali0123456789a"));
    assert!(text.contains(r#""cali0123456789a" : goto filter-cali-fw-cali0123456789a"#));
    assert!(text.contains("add set ip calico cali40s-"));
    assert!(exec.inputs_to("ipset").is_empty(), "no ipset with nftables");
    assert!(exec.inputs_to("iptables-nft-restore").is_empty());
}

#[tokio::test]
async fn a_host_endpoint_without_an_interface_name_follows_its_expected_ips() {
    let exec = empty_kernel();
    let mut g = CalcGraph::new(HOST);
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-a-by-ip, labels: {role: node}}
spec: {node: node-a, expectedIPs: ["192.168.1.10"]}
"#,
    );
    let mut dp = Dataplane::new(config(), exec.clone());
    let ch = g.take_changes();
    dp.on_changes(&g, &ch);
    dp.apply().await.unwrap();
    assert!(
        !rendered(&exec).contains("cali-th-"),
        "no interface known to hold 192.168.1.10 yet"
    );
    let host = |iface: &str| {
        [
            (iface.to_string(), ["192.168.1.10".parse().unwrap()].into()),
            ("lo".to_string(), ["127.0.0.1".parse().unwrap()].into()),
        ]
        .into_iter()
        .collect()
    };
    dp.set_host_addresses(host("ens3"));
    dp.apply().await.unwrap();
    let text = rendered(&exec);
    assert!(text.contains(":cali-th-ens3"), "{text}");
    assert!(text.contains("--in-interface ens3"), "{text}");
    assert!(!text.contains("cali-th-lo"), "{text}");

    // The address moves to another interface: the endpoint follows it.
    dp.set_host_addresses(host("ens4"));
    dp.apply().await.unwrap();
    let text = rendered(&exec);
    assert!(text.contains("-X cali-th-ens3"), "{text}");
    assert!(text.contains(":cali-th-ens4"), "{text}");

    // A named endpoint whose name sorts first takes the interface; the other gives it up.
    apply(
        &mut g,
        r#"
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-a-aaa, labels: {role: other}}
spec: {node: node-a, interfaceName: ens4}
"#,
    );
    let ch = g.take_changes();
    dp.on_changes(&g, &ch);
    dp.apply().await.unwrap();
    assert_eq!(
        dp.hep_owner.get("ens4").map(String::as_str),
        Some("node-a-aaa")
    );
}
