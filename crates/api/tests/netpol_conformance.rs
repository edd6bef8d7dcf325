//! Every case of `conformance/netpol-cases.yaml`, run through Calico's Kubernetes → Calico
//! NetworkPolicy conversion and the reference policy model: each 9×9 grid must match.
//!
//! This proves the conversion (selectors, namespace scoping, ports, named ports, endPort,
//! ipBlock/except, policyTypes) has the semantics the catalogue states, independently of any
//! dataplane.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::codec::{Strictness, decode_object};
use calico_api::kinds::{Action, ProfileSpec, Rule};
use calico_api::policy_model::{Endpoint, Model, NamedPort, Packet};
use calico_api::{AnyResource, Resource};
use serde_json::Value;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn catalogue() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../conformance/netpol-cases.yaml"
    );
    let text =
        std::fs::read_to_string(path).expect("conformance/netpol-cases.yaml is in the repository");
    // YAML 1.1 would read the namespace label `ns: y` as `true`; the catalogue means a string.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options(&text, options).expect("the catalogue is valid YAML")
}

fn pod_ip(cat: &Value, ns: &str, pod: &str) -> IpAddr {
    let cidr = cat["model"]["namespaces"][ns]["pod_cidr"].as_str().unwrap();
    let base: ipnet::Ipv4Net = cidr.parse().unwrap();
    let offset = match pod {
        "a" => 10,
        "b" => 11,
        _ => 12,
    };
    IpAddr::V4((u32::from(base.network()) + offset).into())
}

struct Cluster {
    model: Model,
    cat: Value,
}

impl Cluster {
    fn new(cat: &Value) -> Cluster {
        let mut model = Model::new();
        let allow_all = ProfileSpec {
            ingress: vec![Rule {
                action: Action::Allow,
                ..Default::default()
            }],
            egress: vec![Rule {
                action: Action::Allow,
                ..Default::default()
            }],
            ..Default::default()
        };
        let ports: Vec<NamedPort> = cat["model"]["served_ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| NamedPort {
                name: p["name"].as_str().unwrap().into(),
                protocol: if p["protocol"] == "TCP" { 6 } else { 17 },
                port: p["port"].as_u64().unwrap() as u16,
            })
            .collect();
        for ns in NAMESPACES {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(cat["model"]["namespaces"][ns]["labels"].clone()).unwrap();
            model.set_namespace(ns, labels);
            model.set_profile(&format!("kns.{ns}"), allow_all.clone());
            for pod in PODS {
                model.add_endpoint(Endpoint {
                    namespace: Some(ns.into()),
                    name: pod.into(),
                    labels: BTreeMap::from([("pod".to_string(), pod.to_string())]),
                    service_account: Some("default".into()),
                    ips: vec![pod_ip(cat, ns, pod)],
                    ports: ports.clone(),
                    profiles: vec![format!("kns.{ns}")],
                });
            }
        }
        Cluster {
            model,
            cat: cat.clone(),
        }
    }

    fn apply(&mut self, obj: &Value) {
        let res =
            decode_object(obj.clone(), 1, Strictness::Strict).expect("catalogue policy decodes");
        res.validate()
            .unwrap_or_else(|e| panic!("catalogue policy is valid: {e}"));
        match res {
            AnyResource::K8sNetworkPolicy(knp) => {
                let (calico, dropped) = knp.to_calico();
                assert!(dropped.is_empty(), "no rule may be dropped: {dropped:?}");
                calico
                    .validate()
                    .unwrap_or_else(|e| panic!("converted policy is valid: {e}"));
                self.model.set_network_policy(&calico);
            }
            AnyResource::NetworkPolicy(np) => self.model.set_network_policy(&np),
            AnyResource::GlobalNetworkPolicy(gnp) => self.model.set_global_network_policy(&gnp),
            other => panic!("unexpected object in catalogue: {:?}", other.kind()),
        }
    }

    fn delete(&mut self, id: &str) {
        let (ns, name) = id.split_once('/').unwrap();
        self.model
            .remove_network_policy(ns, &format!("knp.default.{name}"));
    }

    fn grid(&self, proto: u8, port: u16) -> Vec<String> {
        let mut rows = Vec::new();
        for cns in NAMESPACES {
            for cpod in PODS {
                let mut row = String::new();
                for sns in NAMESPACES {
                    for spod in PODS {
                        let ok = (cns, cpod) == (sns, spod)
                            || self.model.allows(&Packet {
                                src: pod_ip(&self.cat, cns, cpod),
                                dst: pod_ip(&self.cat, sns, spod),
                                protocol: proto,
                                src_port: 40000,
                                dst_port: port,
                            });
                        row.push(if ok { '.' } else { 'X' });
                    }
                }
                rows.push(row);
            }
        }
        rows
    }
}

fn expected_grids(expect: &Value) -> Vec<(String, Vec<String>)> {
    let map = expect.as_object().unwrap();
    let mut out = Vec::new();
    for key in ["tcp/80", "tcp/81", "udp/80", "udp/81"] {
        let mut v = &map[key];
        if let Some(s) = v.as_str() {
            let target = s.strip_prefix("same-as ").expect("same-as reference");
            v = &map[target];
        }
        let rows = NAMESPACES
            .iter()
            .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
            .map(|k| {
                v[&k]
                    .as_str()
                    .unwrap_or_else(|| panic!("row {k}"))
                    .to_string()
            })
            .collect();
        out.push((key.to_string(), rows));
    }
    out
}

fn check(cluster: &Cluster, case: &str, expect: &Value, failures: &mut Vec<String>) {
    for (key, want) in expected_grids(expect) {
        let (proto, port) = key.split_once('/').unwrap();
        let got = cluster.grid(if proto == "tcp" { 6 } else { 17 }, port.parse().unwrap());
        if got != want {
            failures.push(format!(
                "{case} {key}:\n  expected        got\n{}",
                want.iter()
                    .zip(&got)
                    .map(|(w, g)| format!("  {w}  {g}{}", if w != g { "  <-" } else { "" }))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
}

#[test]
fn every_conformance_grid_matches_through_conversion_and_model() {
    let cat = catalogue();
    let mut cases: Vec<&Value> = cat["cases"].as_array().unwrap().iter().collect();
    cases.extend(cat["dynamic_cases"].as_array().into_iter().flatten());
    assert!(cases.len() >= 35, "the catalogue has its cases");
    let mut failures = Vec::new();
    let mut grids = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut cluster = Cluster::new(&cat);
        if let Some(policies) = case["policies"].as_array() {
            for p in policies {
                cluster.apply(p);
            }
            check(&cluster, name, &case["expect"], &mut failures);
            grids += 4;
        }
        if let Some(steps) = case["steps"].as_array() {
            for (i, step) in steps.iter().enumerate() {
                match step["action"].as_str().unwrap() {
                    "create" | "update" => {
                        for o in step["objects"].as_array().unwrap() {
                            cluster.apply(o);
                        }
                    }
                    "delete" => {
                        for id in step["objects_deleted"].as_array().unwrap() {
                            cluster.delete(id.as_str().unwrap());
                        }
                    }
                    "label-pod" => {
                        let (ns, pod) = step["pod"].as_str().unwrap().split_once('/').unwrap();
                        let ep = cluster.model.endpoint_mut(Some(ns), pod).unwrap();
                        for (k, v) in step["add_labels"].as_object().unwrap() {
                            ep.labels.insert(k.clone(), v.as_str().unwrap().to_string());
                        }
                    }
                    other => panic!("{name}: unknown step action {other}"),
                }
                check(
                    &cluster,
                    &format!("{name} step {}", i + 1),
                    &step["expect"],
                    &mut failures,
                );
                grids += 4;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} grid(s) differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(grids >= 152, "checked {grids} grids");
}
