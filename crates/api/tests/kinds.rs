//! Every kind, written as Calico's documentation writes it, reads, defaults, validates and
//! round-trips through YAML and JSON without losing a field.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;

use calico_api::codec::{decode_documents, to_json_pretty, to_yaml, to_yaml_documents};
use calico_api::{AnyResource, Kind};
use serde_json::Value;

const EXAMPLES: &str = include_str!("examples/all-kinds.yaml");

fn examples() -> Vec<AnyResource> {
    decode_documents(EXAMPLES).unwrap_or_else(|e| panic!("examples decode: {e}"))
}

/// Every path to a leaf or empty container, e.g. `spec.ingress[0].action`.
fn paths(v: &Value, prefix: String, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                paths(v, format!("{prefix}.{k}"), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                paths(v, format!("{prefix}[{i}]"), out);
            }
        }
        _ => {
            out.insert(prefix);
        }
    }
}

#[test]
fn the_examples_cover_every_kind() {
    let seen: BTreeSet<Kind> = examples().iter().map(AnyResource::kind).collect();
    for k in Kind::ALL {
        assert!(seen.contains(k), "no example of {k:?}");
    }
}

#[test]
fn every_kind_round_trips_through_yaml_and_json() {
    for r in examples() {
        let yaml = to_yaml(&r).unwrap();
        let back = decode_documents(&yaml)
            .unwrap_or_else(|e| panic!("{:?} re-reads: {e}\n{yaml}", r.kind()));
        assert_eq!(back, vec![r.clone()], "YAML round trip of {:?}", r.kind());
        let json = to_json_pretty(&r).unwrap();
        assert_eq!(
            decode_documents(&json).unwrap(),
            vec![r.clone()],
            "JSON round trip of {:?}",
            r.kind()
        );
    }
    // The whole stream, as one multi-document YAML.
    let all = examples();
    assert_eq!(
        decode_documents(&to_yaml_documents(&all).unwrap()).unwrap(),
        all
    );
}

#[test]
fn writing_an_example_back_keeps_every_field_it_had() {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(EXAMPLES, options).unwrap();
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let decoded = examples();
    assert_eq!(docs.len(), decoded.len());
    for (input, r) in docs.iter().zip(&decoded) {
        let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
        paths(input, String::new(), &mut want);
        paths(&r.to_json(), String::new(), &mut got);
        // Like Calico (Go's omitempty), plain `false` flags may be left out when written back.
        want.retain(|p| {
            let ptr = p.replace(['.', '['], "/").replace(']', "");
            got.contains(p) || input.pointer(&ptr) != Some(&Value::Bool(false))
        });
        assert_eq!(
            want,
            got,
            "fields of {:?} {:?}",
            r.kind(),
            r.metadata().name
        );
    }
}

#[test]
fn every_example_is_valid_after_calico_defaults() {
    for mut r in examples() {
        r.apply_defaults();
        if let Err(e) = r.validate() {
            panic!("{e}");
        }
        // Defaulting is idempotent and survives a round trip.
        let once = r.clone();
        r.apply_defaults();
        assert_eq!(r, once);
        assert_eq!(decode_documents(&to_yaml(&r).unwrap()).unwrap(), vec![r]);
    }
}

#[test]
fn defaults_are_calicos() {
    let docs = decode_documents(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 'fd00:0:0::/48'}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: np, namespace: ns}\nspec:\n  egress: [{action: Allow}]\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n  ingress: [{action: Allow}]\n  egress: [{action: Allow}]\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {order: 10}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {namespace: ns}\nspec: {node: n1, orchestrator: k8s, pod: web-1, endpoint: eth0, interfaceName: cali12345678901}\n",
    )
    .unwrap();
    let mut out = Vec::new();
    for mut r in docs {
        r.apply_defaults();
        r.validate().unwrap_or_else(|e| panic!("{e}"));
        out.push(r.to_json());
    }
    let pool = &out[0]["spec"];
    assert_eq!(pool["cidr"], "fd00::/48");
    assert_eq!(pool["blockSize"], 122);
    assert_eq!(pool["ipipMode"], "Never");
    assert_eq!(pool["vxlanMode"], "Never");
    assert_eq!(pool["nodeSelector"], "all()");
    assert_eq!(
        pool["allowedUses"],
        serde_json::json!(["Workload", "Tunnel"])
    );
    assert_eq!(pool["assignmentMode"], "Automatic");
    assert_eq!(out[1]["spec"]["types"], serde_json::json!(["Egress"]));
    assert_eq!(out[1]["spec"]["tier"], "default");
    assert_eq!(
        out[1]["metadata"]["labels"]["projectcalico.org/tier"],
        "default"
    );
    assert_eq!(
        out[2]["spec"]["types"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert_eq!(out[3]["spec"]["defaultAction"], "Deny");
    assert_eq!(out[4]["metadata"]["name"], "n1-k8s-web--1-eth0");
    assert_eq!(
        out[4]["metadata"]["labels"]["projectcalico.org/namespace"],
        "ns"
    );
    assert_eq!(
        out[4]["metadata"]["labels"]["projectcalico.org/orchestrator"],
        "k8s"
    );
}

#[test]
fn kubernetes_policy_converts_as_calico_names_and_orders_it() {
    let knp = examples()
        .into_iter()
        .find_map(|r| match r {
            AnyResource::K8sNetworkPolicy(p) => Some(p),
            _ => None,
        })
        .unwrap();
    let (np, dropped) = knp.to_calico();
    assert!(dropped.is_empty());
    let v = serde_json::to_value(&np).unwrap();
    assert_eq!(v["metadata"]["name"], "knp.default.test-network-policy");
    assert_eq!(v["metadata"]["namespace"], "default");
    assert_eq!(v["spec"]["order"], 1000);
    assert_eq!(v["spec"]["tier"], "default");
    assert_eq!(
        v["spec"]["selector"],
        "projectcalico.org/orchestrator == 'k8s' && role == 'db'"
    );
    assert_eq!(v["spec"]["types"], serde_json::json!(["Ingress", "Egress"]));
    let ingress = v["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 3, "one rule per peer");
    assert_eq!(
        ingress[0]["source"]["nets"],
        serde_json::json!(["172.17.0.0/16"])
    );
    assert_eq!(
        ingress[0]["source"]["notNets"],
        serde_json::json!(["172.17.1.0/24"])
    );
    assert_eq!(
        ingress[1]["source"]["selector"],
        "projectcalico.org/orchestrator == 'k8s'"
    );
    assert_eq!(
        ingress[1]["source"]["namespaceSelector"],
        "project == 'myproject'"
    );
    assert_eq!(
        ingress[2]["source"]["selector"],
        "projectcalico.org/orchestrator == 'k8s' && role == 'frontend'"
    );
    for r in ingress {
        assert_eq!(r["protocol"], "TCP");
        assert_eq!(r["destination"]["ports"], serde_json::json!([6379]));
    }
    let egress = &v["spec"]["egress"][0];
    assert_eq!(
        egress["destination"]["ports"],
        serde_json::json!(["5978:5990"])
    );
    assert_eq!(
        egress["destination"]["nets"],
        serde_json::json!(["10.0.0.0/24"])
    );
    let mut np = np;
    calico_api::Resource::apply_defaults(&mut np);
    calico_api::Resource::validate(&np).unwrap();
}

#[test]
fn acronym_fields_use_calicos_exact_json_names() {
    // serde's camelCase would write `localAsNumber`; Calico writes `localASNumber`, etc.
    let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec:\n  peerIP: 10.0.0.1\n  asNumber: 65000\n  localASNumber: 65001\n  numAllowedLocalASNumbers: 2\n---\n\
                apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n}\nspec:\n  ipv4VXLANTunnelAddr: 10.0.0.9\n  bgp: {ipv4Address: 10.0.0.1/24, routeReflectorClusterID: 1.0.0.1, ipv4IPIPTunnelAddr: 10.0.0.8}\n  wireguard: {interfaceIPv4Address: 10.0.0.7, interfaceIPv6Address: 'fd00::7'}\n---\n\
                apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, disableBGPExport: true}\n";
    let rs = decode_documents(text).unwrap();
    let json: Vec<Value> = rs.iter().map(AnyResource::to_json).collect();
    assert_eq!(json[0]["spec"]["localASNumber"], 65001);
    assert_eq!(json[0]["spec"]["numAllowedLocalASNumbers"], 2);
    assert_eq!(json[0]["spec"]["peerIP"], "10.0.0.1");
    assert_eq!(
        json[1]["spec"]["wireguard"]["interfaceIPv4Address"],
        "10.0.0.7"
    );
    assert_eq!(
        json[1]["spec"]["wireguard"]["interfaceIPv6Address"],
        "fd00::7"
    );
    assert_eq!(json[1]["spec"]["ipv4VXLANTunnelAddr"], "10.0.0.9");
    assert_eq!(json[1]["spec"]["bgp"]["routeReflectorClusterID"], "1.0.0.1");
    assert_eq!(json[1]["spec"]["bgp"]["ipv4IPIPTunnelAddr"], "10.0.0.8");
    assert_eq!(json[2]["spec"]["disableBGPExport"], true);
}

#[test]
fn staged_policies_default_to_set_and_a_delete_keeps_only_its_tier() {
    let docs = decode_documents(
        "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  egress: [{action: Allow}]\n---\n\
         apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: t1.g}\nspec: {stagedAction: Delete, tier: t1, types: [Ingress]}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\nmetadata: {name: k, namespace: ns}\nspec: {stagedAction: Delete, podSelector: {}}\n",
    )
    .unwrap();
    let mut out = Vec::new();
    for mut r in docs {
        r.apply_defaults();
        r.validate().unwrap_or_else(|e| panic!("{e}"));
        out.push(r.to_json());
    }
    assert_eq!(out[0]["spec"]["stagedAction"], "Set");
    assert_eq!(out[0]["spec"]["tier"], "default");
    assert_eq!(out[0]["spec"]["types"], serde_json::json!(["Egress"]));
    assert_eq!(
        out[0]["metadata"]["labels"]["projectcalico.org/tier"],
        "default"
    );
    // As Calico's client does: a Delete's defaulted (or given) types are cleared.
    assert_eq!(
        out[1]["spec"],
        serde_json::json!({"stagedAction": "Delete", "tier": "t1"})
    );
    assert_eq!(out[1]["metadata"]["labels"]["projectcalico.org/tier"], "t1");
    assert_eq!(
        out[2]["spec"],
        serde_json::json!({"stagedAction": "Delete", "podSelector": {}})
    );
}

#[test]
fn a_staged_policy_converts_to_the_policy_it_would_set() {
    let all = examples();
    let snp = all
        .iter()
        .find_map(|r| match r {
            AnyResource::StagedNetworkPolicy(p) => Some(p),
            _ => None,
        })
        .unwrap();
    let (action, np) = snp.to_enforced();
    assert_eq!(action, calico_api::StagedAction::Set);
    assert_eq!(np.metadata.name, "allow-tcp-6379");
    assert_eq!(np.metadata.namespace.as_deref(), Some("production"));
    assert_eq!(np.spec.selector, "role == 'database'");
    assert_eq!(np.spec.order, Some(100.0));
    let sknp = all
        .iter()
        .find_map(|r| match r {
            AnyResource::StagedKubernetesNetworkPolicy(p) => Some(p),
            _ => None,
        })
        .unwrap();
    let (_, knp) = sknp.to_enforced();
    let (np, dropped) = knp.to_calico();
    assert!(dropped.is_empty());
    assert_eq!(np.metadata.name, "knp.default.test-network-policy");
}

#[test]
fn a_node_status_is_written_in_full_as_calicos_go_type_writes_it() {
    let r = decode_documents(
        "apiVersion: projectcalico.org/v3\nkind: CalicoNodeStatus\nmetadata: {name: s}\nspec: {node: n1, classes: [Agent, BGP], updatePeriodSeconds: 0}\nstatus: {}\n",
    )
    .unwrap()
    .remove(0);
    r.validate().unwrap();
    let v = r.to_json();
    assert_eq!(v["spec"]["updatePeriodSeconds"], 0);
    assert_eq!(
        v["status"],
        serde_json::json!({
            "lastUpdated": null,
            "agent": {"birdV4": {}, "birdV6": {}},
            "bgp": {"numberEstablishedV4": 0, "numberNotEstablishedV4": 0, "numberEstablishedV6": 0, "numberNotEstablishedV6": 0},
            "routes": {},
        })
    );
}

#[test]
fn calicoctl_names_for_the_staged_kinds_and_node_status_are_calicos() {
    for (name, kind) in [
        ("snp", Kind::StagedNetworkPolicy),
        ("stagedpolicies", Kind::StagedNetworkPolicy),
        ("spol", Kind::StagedNetworkPolicy),
        ("sgnp", Kind::StagedGlobalNetworkPolicy),
        (
            "StagedGlobalNetworkPolicies",
            Kind::StagedGlobalNetworkPolicy,
        ),
        ("sknp", Kind::StagedKubernetesNetworkPolicy),
        ("skpols", Kind::StagedKubernetesNetworkPolicy),
        ("nodestatus", Kind::CalicoNodeStatus),
        ("caliconodestatuses", Kind::CalicoNodeStatus),
    ] {
        assert_eq!(Kind::from_cli_name(name), Some(kind), "{name}");
    }
    assert_eq!(
        Kind::StagedKubernetesNetworkPolicy.info().plural,
        "stagedkubernetesnetworkpolicies"
    );
    assert_eq!(Kind::CalicoNodeStatus.info().plural, "caliconodestatuses");
}
