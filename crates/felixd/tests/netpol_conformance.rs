//! The Kubernetes NetworkPolicy conformance cases of `conformance/netpol-cases.yaml`:
//! 3 namespaces × 3 pods on one node, each case's policies applied through the datastore,
//! and the whole 9×9 matrix probed on TCP and UDP ports 80 and 81 with real packets until it
//! matches (or a deadline passes).

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use calico_api::AnyResource;
use calico_api::codec::{Strictness, decode_object};
use common::{Cluster, Pod, Proto, probe_all};
use serde_json::Value;

const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../conformance/netpol-cases.yaml"
);
const CONVERGE: Duration = Duration::from_secs(30);
const ORDER: [&str; 9] = [
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
];
const PORTS: [(Proto, u16, &str); 4] = [
    (Proto::Tcp, 80, "tcp/80"),
    (Proto::Tcp, 81, "tcp/81"),
    (Proto::Udp, 80, "udp/80"),
    (Proto::Udp, 81, "udp/81"),
];

/// Expected reachability per port: 9 rows of 9 booleans.
type Grid = BTreeMap<&'static str, Vec<Vec<bool>>>;

fn expected(expect: &Value) -> Grid {
    let mut grids: Grid = BTreeMap::new();
    for (_, _, key) in PORTS {
        let mut v = &expect[key];
        if let Some(s) = v.as_str() {
            let other = s
                .strip_prefix("same-as ")
                .unwrap_or_else(|| panic!("bad expectation {s:?}"));
            v = &expect[other];
        }
        let rows = ORDER
            .iter()
            .map(|from| {
                let row = v[*from]
                    .as_str()
                    .unwrap_or_else(|| panic!("no row {from} for {key}"));
                row.chars().map(|c| c == '.').collect()
            })
            .collect();
        grids.insert(key, rows);
    }
    grids
}

fn all_open() -> Grid {
    PORTS
        .iter()
        .map(|(_, _, k)| (*k, vec![vec![true; 9]; 9]))
        .collect()
}

fn probe(c: &Cluster) -> Grid {
    let pods: Vec<&Pod> = ORDER.iter().map(|k| c.pod(k)).collect();
    let mut jobs: Vec<(&Pod, IpAddr, Proto, u16)> = Vec::new();
    for (proto, port, _) in PORTS {
        for from in &pods {
            for to in &pods {
                jobs.push((from, to.v4(), proto, port));
            }
        }
    }
    let results = probe_all(jobs);
    let mut grids = Grid::new();
    for (i, (_, _, key)) in PORTS.iter().enumerate() {
        let rows = (0..9)
            .map(|r| (0..9).map(|col| results[i * 81 + r * 9 + col]).collect())
            .collect();
        grids.insert(key, rows);
    }
    grids
}

fn render(g: &Grid) -> String {
    let mut s = String::new();
    for (k, rows) in g {
        s.push_str(&format!("{k}:\n"));
        for (i, r) in rows.iter().enumerate() {
            let line: String = r.iter().map(|b| if *b { '.' } else { 'X' }).collect();
            s.push_str(&format!("  {} {line}\n", ORDER[i]));
        }
    }
    s
}

/// Probes until the matrix matches; returns the time it took, or the last matrix seen.
fn converge(c: &Cluster, want: &Grid) -> Result<Duration, Grid> {
    let start = Instant::now();
    loop {
        let got = probe(c);
        if &got == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > CONVERGE {
            return Err(got);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn objects(v: &Value) -> Vec<AnyResource> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|o| decode_object(o.clone(), 0, Strictness::Strict).expect("a policy"))
                .collect()
        })
        .unwrap_or_default()
}

fn apply_all(c: &Cluster, objs: Vec<AnyResource>) {
    c.lab.with_datastore(async move |rc| {
        for o in objs {
            rc.apply_any(o).await.expect("applying a policy");
        }
    });
}

/// Every NetworkPolicy in the datastore, deleted.
fn delete_all_policies(c: &Cluster) {
    c.lab.with_datastore(async |rc| {
        let list = rc
            .list::<calico_api::resource::NetworkPolicy>(None)
            .await
            .expect("listing policies");
        for p in list.items {
            rc.delete_any(
                calico_api::Kind::NetworkPolicy,
                p.metadata.namespace.as_deref(),
                &p.metadata.name,
                None,
            )
            .await
            .expect("deleting a policy");
        }
    });
}

/// Adds labels to a pod's WorkloadEndpoint (as the Kubernetes converter would on a pod
/// label change).
fn label_pod(c: &Cluster, key: &str, labels: &serde_json::Map<String, Value>) {
    let (ns, pod) = key.split_once('/').expect("ns/pod");
    let (ns, pod) = (ns.to_string(), pod.to_string());
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    c.lab.with_datastore(async move |rc| {
        let list = rc
            .list::<calico_api::resource::WorkloadEndpoint>(Some(&ns))
            .await
            .expect("listing endpoints");
        let mut wep = list
            .items
            .into_iter()
            .find(|w| w.spec.pod == pod)
            .expect("the pod's endpoint");
        wep.metadata.labels.extend(labels);
        rc.update(wep).await.expect("updating the endpoint");
    });
}

/// The served ports as named container ports, as the Kubernetes converter writes them.
fn name_ports(c: &Cluster) {
    c.lab.with_datastore(async |rc| {
        for ns in ["x", "y", "z"] {
            let list = rc
                .list::<calico_api::resource::WorkloadEndpoint>(Some(ns))
                .await
                .expect("listing endpoints");
            for mut wep in list.items {
                wep.spec.ports = [(80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP")]
                    .iter()
                    .map(|(port, proto)| calico_api::kinds::WorkloadEndpointPort {
                        name: format!("serve-{port}-{}", proto.to_lowercase()),
                        protocol: calico_api::numorstring::Protocol::Name(proto.to_string()),
                        port: *port,
                        host_port: 0,
                        host_ip: String::new(),
                    })
                    .collect();
                rc.update(wep).await.expect("naming the ports");
            }
        }
    });
}

#[test]
fn kubernetes_network_policy_conformance_matrices() {
    let text = std::fs::read_to_string(CASES)
        .unwrap_or_else(|e| panic!("reading {CASES}: {e} (the shared conformance data)"));
    // YAML 1.1 would read the namespace label `ns: y` as `true`; the catalogue means a string.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let doc: Value =
        serde_saphyr::from_str_with_options(&text, options).expect("the catalogue is valid YAML");
    let mut cases = doc["cases"].as_array().expect("cases").clone();
    cases.extend(doc["dynamic_cases"].as_array().cloned().unwrap_or_default());

    let mut c = Cluster::with_options(&[], false);
    let bases = [("x", "10.244.1."), ("y", "10.244.2."), ("z", "10.244.3.")];
    for (ns, _) in bases {
        c.namespace(ns, &[("ns", ns), ("kubernetes.io/metadata.name", ns)]);
    }
    for (ns, base) in bases {
        for (pod, last) in [("a", 10), ("b", 11), ("c", 12)] {
            let ip = format!("{base}{last}");
            c.add_pod(ns, pod, &[("pod", pod)], Some(&ip), &[80, 81]);
            assert_eq!(c.pod(&format!("{ns}/{pod}")).v4().to_string(), ip);
        }
    }
    name_ports(&c);
    converge(&c, &all_open()).unwrap_or_else(|g| panic!("baseline not open:\n{}", render(&g)));

    let mut failures = Vec::new();
    let mut timings = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?").to_string();
        let steps: Vec<Value> = match case.get("steps") {
            Some(s) => s.as_array().cloned().unwrap_or_default(),
            None => vec![serde_json::json!({
                "action": "create",
                "objects": case["policies"].clone(),
                "expect": case["expect"].clone(),
            })],
        };
        let mut labelled = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match step["action"].as_str().unwrap_or("create") {
                "create" | "update" => apply_all(&c, objects(&step["objects"])),
                "delete" => {
                    for d in step["objects_deleted"].as_array().into_iter().flatten() {
                        let (ns, n) = d.as_str().and_then(|s| s.split_once('/')).expect("ns/name");
                        c.delete(
                            calico_api::Kind::NetworkPolicy,
                            Some(ns),
                            &format!("knp.default.{n}"),
                        );
                    }
                }
                "label-pod" => {
                    let pod = step["pod"].as_str().expect("pod").to_string();
                    let labels = step["add_labels"].as_object().cloned().unwrap_or_default();
                    label_pod(&c, &pod, &labels);
                    labelled.push((pod, labels));
                }
                other => panic!("case {name}: unknown action {other:?}"),
            }
            let want = expected(&step["expect"]);
            match converge(&c, &want) {
                Ok(t) => timings.push((format!("{name}#{i}"), t)),
                Err(got) => failures.push(format!(
                    "case {name} step {i}: expected\n{}got\n{}",
                    render(&want),
                    render(&got)
                )),
            }
        }
        // Back to the baseline before the next case, so one case's rules cannot make the
        // next one pass early.
        delete_all_policies(&c);
        for (pod, labels) in labelled {
            let (ns, p) = pod.split_once('/').expect("ns/pod");
            let (ns, p) = (ns.to_string(), p.to_string());
            let keys: Vec<String> = labels.keys().cloned().collect();
            c.lab.with_datastore(async move |rc| {
                let list = rc
                    .list::<calico_api::resource::WorkloadEndpoint>(Some(&ns))
                    .await
                    .expect("listing endpoints");
                if let Some(mut w) = list.items.into_iter().find(|w| w.spec.pod == p) {
                    for k in &keys {
                        w.metadata.labels.remove(k);
                    }
                    rc.update(w).await.expect("restoring labels");
                }
            });
        }
        if let Err(g) = converge(&c, &all_open()) {
            panic!(
                "after case {name} the baseline did not come back:\n{}",
                render(&g)
            );
        }
    }
    let slowest = timings.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "{} cases, {} steps matched; slowest convergence {slowest:?}",
        cases.len(),
        timings.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
