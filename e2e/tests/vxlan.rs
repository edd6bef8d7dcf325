//! Pods on three nodes reach each other over VXLAN (the pool's `vxlanMode: Always`): felixd
//! on each node builds `vxlan.calico`, learns the other nodes' tunnel endpoints from their
//! Node resources and routes their blocks through them. No BGP daemon runs.

use std::time::{Duration, Instant};

use calico_e2e::pod::PodSpec;
use calico_e2e::{Lab, eventually, options};
use calico_lab::Encap;
use calico_lab::probe::Proto;

#[test]
fn pods_on_three_nodes_reach_each_other_over_vxlan_on_tcp_and_udp() {
    let started = Instant::now();
    let mut lab = Lab::start(options(3, Encap::Vxlan));
    let up = started.elapsed();
    let specs: Vec<PodSpec> = (0..6)
        .map(|i| {
            PodSpec::new(&lab.node_name(i / 2), &format!("e2e/p{i}"))
                .expect("a pod key")
                .label("app", "probe")
        })
        .collect();
    lab.add_pods(specs, 6).expect("six pods");
    let _servers = lab.serve(&[8080], &[8081]);

    // Each node: the tunnel device, and a route through it to each other node's block.
    for n in &lab.cluster.nodes {
        let others: Vec<String> = lab
            .pods
            .iter()
            .filter(|p| p.node != n.name)
            .filter_map(|p| p.v4())
            .map(|ip| {
                ipnet::IpNet::new(ip, 26)
                    .expect("a prefix")
                    .trunc()
                    .to_string()
            })
            .collect();
        eventually(
            Duration::from_secs(20),
            "routes to the other blocks",
            || {
                let routes = n.routes();
                others.iter().all(|b| {
                    routes
                        .lines()
                        .any(|l| l.starts_with(&format!("{b} ")) && l.contains("dev vxlan.calico"))
                })
            },
        );
    }

    let pods: Vec<_> = lab.pods.iter().collect();
    let names: Vec<String> = pods
        .iter()
        .map(|p| format!("{}@{}", p.key(), p.node))
        .collect();
    for (proto, port) in [(Proto::Tcp, 8080), (Proto::Udp, 8081)] {
        let mut m = Vec::new();
        let took = eventually(Duration::from_secs(20), "every pair connected", || {
            m = lab.matrix(&pods, proto, port, Duration::from_millis(500));
            m.iter().flatten().all(|c| *c)
        });
        eprintln!(
            "{proto}/{port}, all 30 pairs (24 across nodes) after {} ms:\n{}",
            took.as_millis(),
            calico_e2e::format_grid(&names, |i, j| m[i][j])
        );
    }
    eprintln!(
        "cluster up in {} ms; whole test {} ms",
        up.as_millis(),
        started.elapsed().as_millis()
    );
}
