//! The Kubernetes NetworkPolicy conformance cases of `conformance/netpol-cases.yaml`:
//! 3 namespaces × 3 pods on one node, each case's policies applied through the datastore,
//! and the whole 9×9 matrix probed on TCP and UDP ports 80 and 81 with real packets until it
//! matches (or a deadline passes). The catalogue, the steps and the probing are the lab's
//! ([`calico_lab::netpol`]); the lab's three-node suite runs the same cases across nodes.

mod common;

use std::time::Duration;

use calico_lab::netpol::{self, ORDER};
use common::Cluster;

const CONVERGE: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

#[test]
fn kubernetes_network_policy_conformance_matrices() {
    let path = netpol::catalogue_path();
    let cases = netpol::load(&path).unwrap_or_else(|e| panic!("{e}"));

    let mut c = Cluster::with_options(&[], false);
    c.lab
        .with_datastore(async |rc| netpol::write_namespaces(&rc).await);
    for key in ORDER {
        let (ns, pod) = key.split_once('/').expect("ns/pod");
        let ip = netpol::pod_ip(key).expect("a pinned address");
        c.add_pod(ns, pod, &[("pod", pod)], Some(&ip), &[80, 81]);
        assert_eq!(c.pod(key).v4().to_string(), ip);
    }
    c.lab
        .with_datastore(async |rc| netpol::name_ports(&rc).await);
    let probe = |timeout| {
        let pods: Vec<_> = ORDER
            .iter()
            .map(|k| (&c.pod(k).ns, c.pod(k).v4()))
            .collect();
        netpol::probe(&pods, timeout)
    };
    netpol::converge(probe, &netpol::all_open(), CONVERGE, PROBE_TIMEOUT)
        .unwrap_or_else(|g| panic!("baseline not open:\n{}", netpol::render(&g)));

    let outcome = netpol::run(&c.lab, &cases, probe, CONVERGE, PROBE_TIMEOUT);
    eprintln!("{} cases on one node:\n{}", cases.len(), outcome.report());
    assert!(
        outcome.failures.is_empty(),
        "{}",
        outcome.failures.join("\n")
    );
}
