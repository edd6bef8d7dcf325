//! birdd against the BGP daemons operators run: BIRD 2 and GoBGP as a top-of-rack router
//! in the fabric namespace, peering with a lab node configured from the datastore (mesh off,
//! one global BGPPeer per family), as Calico users peer with their fabric.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use calico_lab::{Node, NodeOptions};
use calico_proto::bgp::SessionState;
use common::*;

const TOR_AS: u32 = 64513;

/// A lab node whose fabric end has addresses (the router's), with birdd configured to
/// peer with that router and a block of each family to advertise.
fn node_peering_with_tor() -> (Node, Vec<std::net::IpAddr>) {
    let node = Node::start(NodeOptions::new(&bin_dir()));
    node.fabric
        .exec("ip", &["addr", "add", "10.99.0.254/24", "dev", "net0"]);
    node.fabric.exec(
        "ip",
        &["addr", "add", "fd99::fe/64", "dev", "net0", "nodad"],
    );
    node.fabric.exec("ip", &["link", "set", "lo", "up"]);
    apply(
        &node,
        &format!(
            r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {{name: default}}
spec: {{nodeToNodeMeshEnabled: false, asNumber: 64512}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: tor-v4}}
spec: {{peerIP: 10.99.0.254, asNumber: {TOR_AS}}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: tor-v6}}
spec: {{peerIP: "fd99::fe", asNumber: {TOR_AS}}}
"#
        ),
    );
    let ips = claim_block(&node, &node.name, 1, 1);
    (node, ips)
}

fn block_of(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(_) => ipnet::IpNet::new(ip, 26)
            .expect("prefix")
            .trunc()
            .to_string(),
        std::net::IpAddr::V6(_) => ipnet::IpNet::new(ip, 122)
            .expect("prefix")
            .trunc()
            .to_string(),
    }
}

fn established(b: &Birdd, node: &Node, n: usize) {
    wait_for(
        "birdd's sessions to be Established",
        Duration::from_secs(30),
        || {
            let p = b.peers(node);
            (p.iter()
                .filter(|p| p.state == SessionState::Established as i32)
                .count()
                == n)
                .then_some(())
        },
    );
}

struct Bird {
    _d: Daemon,
    ctl: std::path::PathBuf,
}

impl Bird {
    fn start(node: &Node, conf: &str) -> Bird {
        let bird = require("bird", "bird2");
        let dir = node.dir.path();
        let (cfg, ctl) = (dir.join("tor-bird.conf"), dir.join("tor-bird.ctl"));
        std::fs::write(&cfg, conf).expect("writing BIRD's config");
        let child = node.fabric.run(|| {
            Command::new(bird)
                .arg("-f")
                .arg("-c")
                .arg(&cfg)
                .arg("-s")
                .arg(&ctl)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting bird")
        });
        let b = Bird {
            _d: Daemon(child),
            ctl,
        };
        wait_for("BIRD's control socket", Duration::from_secs(10), || {
            b.ctl.exists().then_some(())
        });
        b
    }

    fn birdc(&self, node: &Node, cmd: &str) -> String {
        let ctl = self.ctl.to_string_lossy().into_owned();
        let mut args = vec!["-s", &ctl];
        args.extend(cmd.split(' '));
        ns_out(&node.fabric, "birdc", &args)
    }
}

const BIRD_CONF: &str = r#"
router id 10.99.0.254;
protocol device { scan time 2; }
protocol direct { ipv4; ipv6; interface "net0"; }
protocol static s4 { ipv4; route 192.168.50.0/24 blackhole; }
protocol static s6 { ipv6; route fd50::/48 blackhole; }
template bgp calico_t {
  local as 64513;
  graceful restart on;
  connect retry time 2;
  error wait time 1,5;
}
protocol bgp node4 from calico_t {
  neighbor 10.99.0.1 as 64512;
  ipv4 { import all; export filter { bgp_community.add((64513, 100)); bgp_large_community.add((64513, 7, 9)); if proto = "s4" then accept; reject; }; };
}
protocol bgp node6 from calico_t {
  neighbor fd99::1 as 64512;
  ipv6 { import all; export where proto = "s6"; };
}
"#;

#[test]
fn bird_exchanges_routes_both_ways_refreshes_and_keeps_them_through_a_birdd_crash() {
    let (node, ips) = node_peering_with_tor();
    let bird = Bird::start(&node, BIRD_CONF);
    let mut birdd = Birdd::start(&node);
    established(&birdd, &node, 2);

    // Both sessions, as BIRD sees them.
    let protos = bird.birdc(&node, "show protocols");
    assert!(
        protos.matches("Established").count() >= 2,
        "BIRD should show both sessions Established:\n{protos}"
    );

    // The node's blocks reach BIRD with our AS on the path.
    let (b4, b6) = (block_of(ips[0]), block_of(ips[1]));
    for b in [&b4, &b6] {
        wait_for(
            &format!("BIRD to learn {b}"),
            Duration::from_secs(15),
            || {
                let r = bird.birdc(&node, &format!("show route {b} all"));
                r.contains("BGP.as_path: 64512").then_some(())
            },
        );
    }

    // BIRD's routes land in the node's kernel with protocol bird, and carry the communities.
    let kernel = wait_for(
        "the learned routes in the kernel",
        Duration::from_secs(15),
        || {
            let v4 = ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"]);
            let v6 = ns_out(&node.ns, "ip", &["-6", "route", "show", "proto", "bird"]);
            (v4.contains("192.168.50.0/24 via 10.99.0.254")
                && v6.contains("fd50::/48 via fd99::fe"))
            .then_some(format!("{v4}{v6}"))
        },
    );
    assert!(
        !kernel.contains("10.244."),
        "our own blocks are not installed: {kernel}"
    );
    let routes = birdd.routes(&node);
    let r = routes
        .iter()
        .find(|r| r.prefix == "192.168.50.0/24")
        .expect("the route in birdd's RIB");
    assert_eq!(r.as_path, vec![TOR_AS]);
    assert!(r.communities.contains(&"64513:100".to_string()), "{r:?}");
    assert!(
        r.large_communities.contains(&"64513:7:9".to_string()),
        "{r:?}"
    );
    assert!(r.best && r.installed);

    // Route refresh: BIRD asks birdd for its routes again and still has them.
    bird.birdc(&node, "reload in node4");
    wait_for(
        "birdd to answer a ROUTE-REFRESH",
        Duration::from_secs(10),
        || {
            birdd
                .log_text()
                .contains("route refresh requested")
                .then_some(())
        },
    );
    assert!(bird.birdc(&node, &format!("show route {b4}")).contains(&b4));

    // A withdrawal in BIRD leaves the kernel.
    bird.birdc(&node, "disable s4");
    wait_for(
        "the withdrawn route to leave the kernel",
        Duration::from_secs(10),
        || {
            (!ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"]).contains("192.168.50.0"))
                .then_some(())
        },
    );
    bird.birdc(&node, "enable s4");
    wait_for("the route to come back", Duration::from_secs(10), || {
        ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"])
            .contains("192.168.50.0/24")
            .then_some(())
    });

    // kill -9 birdd: BIRD keeps the node's routes (graceful restart), the kernel keeps
    // BIRD's; back up, the sessions return and nothing was lost.
    birdd.kill();
    std::thread::sleep(Duration::from_secs(1));
    let during = bird.birdc(&node, &format!("show route {b4}"));
    assert!(
        during.contains(&b4),
        "BIRD dropped the route during the restart:\n{during}"
    );
    assert!(
        ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"]).contains("192.168.50.0/24"),
        "the kernel route must survive birdd's crash"
    );
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 2);
    wait_for(
        "BIRD to have the route fresh again",
        Duration::from_secs(15),
        || {
            let r = bird.birdc(&node, &format!("show route {b4} all"));
            (r.contains(&b4) && !r.contains("stale")).then_some(())
        },
    );
    assert!(
        ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"]).contains("192.168.50.0/24")
    );
}

const GOBGP_CONF: &str = r#"
[global.config]
  as = 64513
  router-id = "10.99.0.254"
  local-address-list = ["10.99.0.254"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.99.0.1"
    peer-as = 64512
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
"#;

#[test]
fn gobgp_exchanges_routes_with_communities() {
    let (node, ips) = node_peering_with_tor();
    let gobgpd = require("gobgpd", "gobgpd");
    let conf = node.dir.path().join("gobgp.toml");
    std::fs::write(&conf, GOBGP_CONF).expect("writing GoBGP's config");
    let child = node.fabric.run(|| {
        Command::new(gobgpd)
            .arg("-f")
            .arg(&conf)
            .args(["-t", "toml", "--api-hosts", "127.0.0.1:50051"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting gobgpd")
    });
    let _gobgp = Daemon(child);
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 1);
    let gobgp = |args: &[&str]| ns_out(&node.fabric, "gobgp", args);
    wait_for(
        "GoBGP to see the session Established",
        Duration::from_secs(20),
        || gobgp(&["neighbor"]).contains("Establ").then_some(()),
    );
    let b4 = block_of(ips[0]);
    wait_for(
        &format!("GoBGP to learn {b4}"),
        Duration::from_secs(15),
        || {
            gobgp(&["global", "rib", "-a", "ipv4"])
                .contains(&b4)
                .then_some(())
        },
    );
    gobgp(&[
        "global",
        "rib",
        "add",
        "192.168.60.0/24",
        "-a",
        "ipv4",
        "community",
        "64513:200",
    ]);
    wait_for(
        "GoBGP's route in the kernel",
        Duration::from_secs(15),
        || {
            ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"])
                .contains("192.168.60.0/24 via 10.99.0.254")
                .then_some(())
        },
    );
    let routes = birdd.routes(&node);
    let r = routes
        .iter()
        .find(|r| r.prefix == "192.168.60.0/24")
        .expect("GoBGP's route in birdd's RIB");
    assert!(r.communities.contains(&"64513:200".to_string()), "{r:?}");
    gobgp(&["global", "rib", "del", "192.168.60.0/24", "-a", "ipv4"]);
    wait_for(
        "the withdrawn route to leave the kernel",
        Duration::from_secs(10),
        || {
            (!ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"]).contains("192.168.60.0"))
                .then_some(())
        },
    );
}
