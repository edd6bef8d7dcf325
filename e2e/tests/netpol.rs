//! The NetworkPolicy conformance catalogue (`conformance/netpol-cases.yaml`) across three
//! nodes: pods x/a … z/c spread round-robin (x/a on node-a, x/b on node-b, x/c on node-c, y/a
//! on node-a, …), so that all but the same-letter pairs cross nodes, through VXLAN. Every
//! 9×9 matrix on TCP and UDP 80 and 81 must match; the time each took to converge is printed.
//!
//! The catalogue pins pod addresses (x = 10.244.1.0/24, y = .2, z = .3; a = .10, b = .11, c =
//! .12) and its ipBlock cases depend on them. Pods of one namespace on different nodes then
//! share a /24, so the pod pool has /32 blocks: each pinned address is its own block, affine
//! to its pod's node, and routed there (felixd routes blocks, not borrowed addresses). Tunnel
//! addresses come from a pool of their own so that none can take a pinned address.

use std::time::{Duration, Instant};

use calico_e2e::pod::PodSpec;
use calico_e2e::{Lab, options};
use calico_lab::Encap;
use calico_lab::netpol::{self, ORDER};

const CONVERGE: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

const POOLS: &str = "
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16, blockSize: 32, vxlanMode: Always, allowedUses: [Workload]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: tunnels}
spec: {cidr: 10.98.0.0/24, blockSize: 30, vxlanMode: Always, allowedUses: [Tunnel]}
";

#[test]
fn conformance_matrices_match_with_pods_spread_over_three_nodes() {
    let cases = netpol::load(&netpol::catalogue_path()).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let mut o = options(3, Encap::Vxlan);
    o.node.pools = Vec::new();
    o.resources = POOLS.into();
    let mut lab = Lab::start(o);
    lab.cluster
        .with_datastore(async |rc| netpol::write_namespaces(&rc).await);
    let specs: Vec<PodSpec> = ORDER
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let pod = key.split_once('/').map(|(_, p)| p).unwrap_or_default();
            PodSpec::new(&lab.node_name(i), key)
                .expect("a pod key")
                .label("pod", pod)
                .ip(&netpol::pod_ip(key).expect("a pinned address"))
        })
        .collect();
    lab.add_pods(specs, 9).expect("the nine pods");
    for key in ORDER {
        let want = netpol::pod_ip(key).expect("a pinned address");
        assert_eq!(lab.v4(key).to_string(), want, "{key}'s address");
    }
    lab.cluster
        .with_datastore(async |rc| netpol::name_ports(&rc).await);
    let _servers = lab.serve(&[80, 81], &[80, 81]);
    let probe = |timeout| {
        let pods: Vec<_> = ORDER.iter().map(|k| (&lab.pod(k).ns, lab.v4(k))).collect();
        netpol::probe(&pods, timeout)
    };
    let baseline = netpol::converge(probe, &netpol::all_open(), CONVERGE, PROBE_TIMEOUT)
        .unwrap_or_else(|g| panic!("baseline not open:\n{}", netpol::render(&g)));
    eprintln!(
        "3 nodes and 9 pods up in {} ms, every pair open after {} ms more",
        (started.elapsed() - baseline).as_millis(),
        baseline.as_millis()
    );

    let outcome = netpol::run(&lab.cluster, &cases, probe, CONVERGE, PROBE_TIMEOUT);
    eprintln!(
        "{} cases across 3 nodes in {:.1} s; time to converge per step (when the first matching round of probes began; rounds of 150 ms, confirmed by one of {} ms):\n{}",
        cases.len(),
        started.elapsed().as_secs_f64(),
        PROBE_TIMEOUT.as_millis(),
        outcome.report()
    );
    assert!(
        outcome.failures.is_empty(),
        "{}",
        outcome.failures.join("\n")
    );
}
