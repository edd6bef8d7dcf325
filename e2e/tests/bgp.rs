//! Native routing with birdd: no encapsulation, each node's birdd advertises the blocks its
//! pods use and installs the other nodes' (`proto bird`). Then faults: birdd killed and
//! restarted (its peers keep its routes through graceful restart: no probe lost), and a node
//! that dies outright (its routes withdrawn by the others once the hold time and the restart
//! time have run out).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use calico_e2e::pod::PodSpec;
use calico_e2e::watch::{Check, EchoServer, Kind, Seen, Watch, report};
use calico_e2e::{Lab, eventually, options};
use calico_lab::probe::Proto;
use calico_lab::{Encap, Node};

/// `calicoctl node status` on `node`, as an operator there would run it.
fn node_status(node: &Node) -> String {
    let bin = node.bin_dir().join("calicoctl");
    let out = node
        .run(|| {
            Command::new(&bin)
                .args(["node", "status"])
                .env("CALICO_BIRDD_SOCKET", &node.birdd_socket)
                .output()
        })
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn established(status: &str, peer: &str) -> bool {
    status
        .lines()
        .any(|l| l.contains(&format!(" {peer} ")) && l.contains("Established"))
}

/// The /26 that holds `ip`.
fn block(ip: std::net::IpAddr) -> String {
    ipnet::IpNet::new(ip, 26)
        .expect("a prefix")
        .trunc()
        .to_string()
}

/// Whether `node` routes `block` via `gw` with a route birdd installed.
fn bird_route(node: &Node, block: &str, gw: &str) -> bool {
    node.bird_routes()
        .iter()
        .any(|r| r.starts_with(&format!("{block} via {gw} ")))
}

#[test]
fn pods_on_three_nodes_reach_each_other_over_routes_learned_by_bgp() {
    let mut o = options(3, Encap::None);
    o.birdd = true;
    let mut lab = Lab::start(o);
    let specs: Vec<PodSpec> = (0..6)
        .map(|i| {
            PodSpec::new(&lab.node_name(i / 2), &format!("bgp/p{i}"))
                .expect("a pod key")
                .label("app", "probe")
        })
        .collect();
    lab.add_pods(specs, 6).expect("six pods");
    let _servers = lab.serve(&[8080], &[8081]);

    let nodes = &lab.cluster.nodes;
    for n in nodes {
        let t = eventually(Duration::from_secs(30), "the mesh Established", || {
            let s = node_status(n);
            nodes
                .iter()
                .filter(|o| o.name != n.name)
                .all(|o| established(&s, &o.v4.to_string()))
        });
        for p in lab.pods.iter().filter(|p| p.node != n.name) {
            let gw = lab
                .cluster
                .node(&p.node)
                .expect("the pod's node")
                .v4
                .to_string();
            let b = block(p.v4().expect("an IPv4 address"));
            eventually(Duration::from_secs(20), "the block via its node", || {
                bird_route(n, &b, &gw)
            });
        }
        assert!(
            !n.routes().contains("vxlan.calico"),
            "{}: native routing, no tunnel:\n{}",
            n.name,
            n.routes()
        );
        eprintln!("{}: mesh Established after {} ms", n.name, t.as_millis());
    }
    eprintln!("node-a:\n{}", node_status(&nodes[0]));

    let pods: Vec<_> = lab.pods.iter().collect();
    for (proto, port) in [(Proto::Tcp, 8080), (Proto::Udp, 8081)] {
        let mut m = Vec::new();
        eventually(Duration::from_secs(20), "every pair connected", || {
            m = lab.matrix(&pods, proto, port, Duration::from_millis(500));
            m.iter().flatten().all(|c| *c)
        });
    }
}

/// The mesh made of a BGPPeer with short timers: a keepalive every second (hold time 3 s)
/// and 4 s to restart gracefully.
const FAST_MESH: &str = "
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false, asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: every-node}
spec: {peerSelector: all(), keepaliveTime: 1s, maxRestartTime: 4s}
";
const HOLD: Duration = Duration::from_secs(3);
const RESTART: Duration = Duration::from_secs(4);

#[test]
fn a_restarted_birdd_keeps_its_routes_and_a_dead_nodes_routes_are_withdrawn() {
    let mut o = options(3, Encap::None);
    o.birdd = true;
    o.resources = FAST_MESH.into();
    let mut lab = Lab::start(o);
    let specs = [
        ("node-a", "bgp/client"),
        ("node-b", "bgp/server-b"),
        ("node-c", "bgp/server-c"),
    ]
    .iter()
    .map(|(n, k)| PodSpec::new(n, k).expect("a pod key"))
    .collect();
    lab.add_pods(specs, 3).expect("the pods");
    let server = lab.pod("bgp/server-c");
    let _echo = EchoServer::start(&server.ns, 7000).expect("an echo server");
    let _servers = calico_netns_harness::Servers::start(&server.ns, &[8080], &[]);
    // node-b's server stays up when node-c dies: traffic between the survivors is watched
    // through node-c's death.
    let survivor = lab.pod("bgp/server-b");
    let _survivor_echo = EchoServer::start(&survivor.ns, 7000).expect("an echo server");
    let _survivor_servers = calico_netns_harness::Servers::start(&survivor.ns, &[8080], &[]);
    let c_block = block(lab.v4("bgp/server-c"));
    let (a, b) = (&lab.cluster.nodes[0], &lab.cluster.nodes[1]);
    for n in [a, b] {
        eventually(Duration::from_secs(30), "node-c's block learned", || {
            bird_route(n, &c_block, "10.99.0.3")
        });
    }
    let from = lab.pod("bgp/client").ns.name().to_string();
    let (server_b, server_c) = (lab.v4("bgp/server-b"), lab.v4("bgp/server-c"));
    let checks = |server: std::net::IpAddr, node: &str| {
        let to = |port| SocketAddr::new(server, port);
        vec![
            Check {
                name: format!("client@a -> server@{node} established"),
                from: from.clone(),
                to: to(7000),
                kind: Kind::Established,
            },
            Check {
                name: format!("client@a -> server@{node} new tcp"),
                from: from.clone(),
                to: to(8080),
                kind: Kind::Fresh {
                    proto: Proto::Tcp,
                    open: true,
                },
            },
        ]
    };
    let all_answered = |seen: &[Seen]| seen.iter().all(|s| s.misses.is_empty() && s.attempts > 0);
    let watch = Watch::start(checks(server_c, "c"), Duration::from_millis(20));

    // birdd on node-c dies and comes back: node-a keeps the route all along.
    lab.cluster.nodes[2].kill_birdd();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        assert!(
            bird_route(&lab.cluster.nodes[0], &c_block, "10.99.0.3"),
            "node-a dropped node-c's block {} ms after birdd died, within the restart time:\n{}",
            t.elapsed().as_millis(),
            lab.cluster.nodes[0].routes()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.cluster.nodes[2].start_birdd();
    let again = eventually(Duration::from_secs(20), "node-c Established again", || {
        established(&node_status(&lab.cluster.nodes[0]), "10.99.0.3")
    });
    assert!(bird_route(&lab.cluster.nodes[0], &c_block, "10.99.0.3"));
    std::thread::sleep(Duration::from_millis(500));
    let seen = watch.stop();
    eprintln!(
        "birdd on node-c SIGKILLed, restarted; Established again {} ms after the restart:\n{}",
        again.as_millis(),
        report(&seen)
    );
    assert!(all_answered(&seen), "probes were lost:\n{}", report(&seen));

    // node-c dies: its daemons killed and its link down, so no one hears a goodbye. Traffic
    // between node-a and node-b is watched throughout.
    let watch = Watch::start(checks(server_b, "b"), Duration::from_millis(20));
    let c = &mut lab.cluster.nodes[2];
    c.kill_birdd();
    c.kill_felixd();
    c.stop_ipamd();
    c.ns.exec("ip", &["link", "set", "uplink", "down"]);
    let (a, b) = (&lab.cluster.nodes[0], &lab.cluster.nodes[1]);
    let gone = eventually(
        HOLD + RESTART + Duration::from_secs(5),
        "node-c's block withdrawn",
        || !bird_route(a, &c_block, "10.99.0.3") && !bird_route(b, &c_block, "10.99.0.3"),
    );
    eprintln!(
        "node-c dead: its block withdrawn from node-a and node-b after {} ms (hold time {} s, restart time {} s)",
        gone.as_millis(),
        HOLD.as_secs(),
        RESTART.as_secs()
    );
    assert!(
        gone <= HOLD + RESTART + Duration::from_secs(2),
        "withdrawn only after {} ms",
        gone.as_millis()
    );
    std::thread::sleep(Duration::from_millis(500));
    let seen = watch.stop();
    eprintln!("node-a to node-b while node-c died:\n{}", report(&seen));
    assert!(
        all_answered(&seen),
        "node-c's death disturbed node-a to node-b:\n{}",
        report(&seen)
    );
}
