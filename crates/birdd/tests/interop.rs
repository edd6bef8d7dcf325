//! birdd against the BGP daemons operators run: BIRD 2 and GoBGP as a top-of-rack router
//! in the fabric namespace, peering with a lab node configured from the datastore (mesh off,
//! one global BGPPeer per family), as Calico users peer with their fabric. Sessions with
//! each of them are signed with TCP MD5 somewhere here, as BGPPeer passwords ask.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use calico_lab::{Cluster, Node, NodeOptions};
use calico_netns_harness::NetNs;
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

/// The IPv4 BGPPeer to the router, signed with `password` (TCP MD5) from a mounted secret.
fn sign_tor_v4(node: &Node, password: &str) {
    write_secret(node, "tor-password", "password", password);
    apply(
        node,
        &format!(
            r#"
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: tor-v4}}
spec:
  peerIP: 10.99.0.254
  asNumber: {TOR_AS}
  password: {{secretKeyRef: {{name: tor-password, key: password}}}}
"#
        ),
    );
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
    netns: String,
}

impl Bird {
    /// BIRD as the node's top-of-rack router, in the fabric namespace.
    fn start(node: &Node, conf: &str) -> Bird {
        Bird::start_in(&node.fabric, node.dir.path(), conf, "tor")
    }

    fn start_in(ns: &NetNs, dir: &std::path::Path, conf: &str, name: &str) -> Bird {
        let bird = require("bird", "bird2");
        let (cfg, ctl) = (
            dir.join(format!("{name}-bird.conf")),
            dir.join(format!("{name}-bird.ctl")),
        );
        let _ = std::fs::remove_file(&ctl);
        std::fs::write(&cfg, conf).expect("writing BIRD's config");
        let child = ns.run(|| {
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
            netns: ns.name().to_string(),
        };
        wait_for("BIRD's control socket", Duration::from_secs(10), || {
            b.ctl.exists().then_some(())
        });
        b
    }

    fn birdc(&self, _node: &Node, cmd: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "birdc", "-s"])
            .arg(&self.ctl)
            .args(cmd.split(' '))
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
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
  ipv4 { ADD_PATHS import all; export filter { bgp_community.add((64513, 100)); bgp_large_community.add((64513, 7, 9)); if proto = "s4" then accept; reject; }; };
}
protocol bgp node6 from calico_t {
  neighbor fd99::1 as 64512;
  ipv6 { import all; export where proto = "s6"; };
}
"#;

#[test]
fn bird_exchanges_routes_both_ways_refreshes_and_keeps_them_through_a_birdd_crash() {
    let (node, ips) = node_peering_with_tor();
    let bird = Bird::start(&node, &BIRD_CONF.replace("ADD_PATHS", "add paths on;"));
    let mut birdd = Birdd::start(&node);
    established(&birdd, &node, 2);

    // Both sessions, as BIRD sees them.
    let protos = bird.birdc(&node, "show protocols");
    assert!(
        protos.matches("Established").count() >= 2,
        "BIRD should show both sessions Established:\n{protos}"
    );

    // ADD-PATH was negotiated both ways on the IPv4 session (Calico's `add paths on`).
    let caps = bird.birdc(&node, "show protocols all node4");
    let ours = caps
        .split("Neighbor capabilities")
        .nth(1)
        .unwrap_or_default();
    assert!(
        ours.contains("ADD-PATH") && ours.contains("RX: ipv4") && ours.contains("TX: ipv4"),
        "BIRD should show ADD-PATH in both directions:\n{caps}"
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
  local-address-list = ["10.99.0.254", "fd99::fe"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.99.0.1"
    peer-as = 64512
    auth-password = "gobgp-s3cret"
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
[[neighbors]]
  [neighbors.config]
    neighbor-address = "fd99::1"
    peer-as = 64512
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#;

/// gobgpd in `ns` with the TOML config `conf`, its API on the namespace's loopback.
fn start_gobgp(ns: &NetNs, dir: &std::path::Path, conf: &str) -> Daemon {
    let gobgpd = require("gobgpd", "gobgpd");
    let path = dir.join("gobgp.toml");
    std::fs::write(&path, conf).expect("writing GoBGP's config");
    Daemon(ns.run(|| {
        Command::new(gobgpd)
            .arg("-f")
            .arg(&path)
            .args(["-t", "toml", "--api-hosts", "127.0.0.1:50051"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting gobgpd")
    }))
}

#[test]
fn gobgp_exchanges_routes_of_both_families_with_communities_on_a_signed_session() {
    let (node, ips) = node_peering_with_tor();
    sign_tor_v4(&node, "gobgp-s3cret");
    let _gobgp = start_gobgp(&node.fabric, node.dir.path(), GOBGP_CONF);
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 2);
    let gobgp = |args: &[&str]| ns_out(&node.fabric, "gobgp", args);
    wait_for(
        "GoBGP to see both sessions Established",
        Duration::from_secs(20),
        || (gobgp(&["neighbor"]).matches("Establ").count() == 2).then_some(()),
    );
    for (block, family) in [(block_of(ips[0]), "ipv4"), (block_of(ips[1]), "ipv6")] {
        wait_for(
            &format!("GoBGP to learn {block}"),
            Duration::from_secs(15),
            || {
                gobgp(&["global", "rib", "-a", family])
                    .contains(&block)
                    .then_some(())
            },
        );
    }
    // An IPv6 route from GoBGP, next hop its session address.
    gobgp(&["global", "rib", "add", "fd60::/48", "-a", "ipv6"]);
    wait_for(
        "GoBGP's IPv6 route in the kernel",
        Duration::from_secs(15),
        || {
            ns_out(&node.ns, "ip", &["-6", "route", "show", "proto", "bird"])
                .contains("fd60::/48 via fd99::fe")
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

#[test]
fn birdd_keeps_a_restarting_peers_routes_until_its_end_of_rib() {
    let (node, _) = node_peering_with_tor();
    let conf = BIRD_CONF.replace("ADD_PATHS", "");
    let bird = Bird::start(&node, &conf);
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 2);
    let in_kernel =
        |p: &str| ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"]).contains(p);
    wait_for(
        "BIRD's route in the kernel",
        Duration::from_secs(15),
        || in_kernel("192.168.50.0/24").then_some(()),
    );

    // kill -9 BIRD: as its graceful-restart helper, birdd keeps the route.
    drop(bird);
    wait_for("birdd to notice", Duration::from_secs(10), || {
        birdd.log_text().contains("session down").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        in_kernel("192.168.50.0/24"),
        "a restarting peer's route must stay"
    );

    // BIRD comes back without that route: at its End-of-RIB the stale route goes.
    let without = conf.replace(
        "route 192.168.50.0/24 blackhole;",
        "route 192.168.51.0/24 blackhole;",
    );
    let _bird = Bird::start(&node, &without);
    wait_for(
        "the stale route to be flushed and the new one in",
        Duration::from_secs(20),
        || (!in_kernel("192.168.50.0/24") && in_kernel("192.168.51.0/24")).then_some(()),
    );
    assert!(birdd.log_text().contains("End-of-RIB received"));
}

#[test]
fn a_stricter_bgpfilter_drops_a_route_and_a_looser_one_brings_it_back_by_route_refresh() {
    let (node, _) = node_peering_with_tor();
    apply(
        &node,
        r#"
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: from-tor}
spec:
  importV4: [{action: Reject, matchOperator: Equal, cidr: 192.168.99.0/24}]
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-v4}
spec: {peerIP: 10.99.0.254, asNumber: 64513, filters: [from-tor]}
"#,
    );
    let _bird = Bird::start(&node, &BIRD_CONF.replace("ADD_PATHS", ""));
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 2);
    let in_kernel =
        |p: &str| ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"]).contains(p);
    wait_for(
        "BIRD's route in the kernel",
        Duration::from_secs(15),
        || in_kernel("192.168.50.0/24").then_some(()),
    );
    let since = birdd.peers(&node)[0].since_unix_seconds;
    let filter = |cidr: &str| {
        apply(
            &node,
            &format!(
                r#"
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {{name: from-tor}}
spec:
  importV4: [{{action: Reject, matchOperator: Equal, cidr: {cidr}}}]
"#
            ),
        )
    };
    filter("192.168.50.0/24");
    wait_for(
        "the filtered route to leave the kernel",
        Duration::from_secs(10),
        || (!in_kernel("192.168.50.0/24")).then_some(()),
    );
    filter("192.168.99.0/24");
    wait_for(
        "the route to come back through a ROUTE-REFRESH",
        Duration::from_secs(10),
        || in_kernel("192.168.50.0/24").then_some(()),
    );
    assert!(
        birdd
            .log_text()
            .contains("asking the peer for its routes again")
    );
    assert_eq!(
        birdd.peers(&node)[0].since_unix_seconds,
        since,
        "the session was refreshed, not reset"
    );
}

#[test]
fn bgpfilter_operations_change_what_is_stored_and_what_is_sent() {
    let (node, ips) = node_peering_with_tor();
    let b4 = block_of(ips[0]);
    apply(
        &node,
        &format!(
            r#"
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {{name: tor-ops}}
spec:
  importV4:
  - action: Accept
    matchOperator: Equal
    cidr: 192.168.50.0/24
    operations: [{{addCommunity: {{value: "64512:77"}}}}, {{setPriority: {{value: 100}}}}]
  exportV4:
  - action: Accept
    matchOperator: Equal
    cidr: {b4}
    operations:
    - prependASPath: {{prefix: [64600, 64601]}}
    - addCommunity: {{value: "64512:99:1"}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: tor-v4}}
spec: {{peerIP: 10.99.0.254, asNumber: {TOR_AS}, filters: [tor-ops]}}
"#
        ),
    );
    let bird = Bird::start(&node, &BIRD_CONF.replace("ADD_PATHS", ""));
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 2);

    // Export: the prepend sits behind our own AS, the large community is added.
    let sent = wait_for(
        &format!("BIRD to learn {b4} with the filter's changes"),
        Duration::from_secs(15),
        || {
            let r = bird.birdc(&node, &format!("show route {b4} all"));
            r.contains("BGP.as_path: 64512 64600 64601").then_some(r)
        },
    );
    assert!(sent.contains("(64512, 99, 1)"), "{sent}");

    // Import: the route is stored with the community and the priority's LOCAL_PREF.
    let r = wait_for(
        "the imported route in birdd's RIB",
        Duration::from_secs(15),
        || {
            birdd
                .routes(&node)
                .into_iter()
                .find(|r| r.prefix == "192.168.50.0/24")
        },
    );
    assert!(r.communities.contains(&"64512:77".to_string()), "{r:?}");
    assert!(r.communities.contains(&"64513:100".to_string()), "{r:?}");
    assert_eq!(r.local_pref, 2_147_483_647 - 100, "{r:?}");
    assert_eq!(r.as_path, vec![TOR_AS]);
}

/// Whether birdd's session with `address` is Established.
fn session_up(b: &Birdd, node: &Node, address: &str) -> bool {
    b.peers(node)
        .iter()
        .any(|p| p.address == address && p.state == SessionState::Established as i32)
}

/// Asserts that both sessions with the router stay down for `d`.
fn both_stay_down(b: &Birdd, node: &Node, d: Duration, why: &str) {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until {
        for address in ["10.99.0.254", "fd99::fe"] {
            assert!(!session_up(b, node, address), "{address}: {why}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_password_signs_the_session_and_a_rotated_wrong_one_keeps_it_down() {
    let (node, _) = node_peering_with_tor();
    sign_tor_v4(&node, "s3cret\n");
    apply(
        &node,
        &format!(
            r#"
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: tor-v6}}
spec:
  peerIP: "[fd99::fe]:1790"
  asNumber: {TOR_AS}
  password: {{secretKeyRef: {{name: tor-password, key: password}}}}
"#
        ),
    );
    // BIRD signs both sessions. Nothing listens on 1790: the IPv6 session can only be the
    // one BIRD opens, which birdd's listener must check against the key.
    let conf = BIRD_CONF
        .replace("ADD_PATHS", "")
        .replace(
            "  neighbor 10.99.0.1 as 64512;",
            "  neighbor 10.99.0.1 as 64512;\n  password \"s3cret\";",
        )
        .replace(
            "  neighbor fd99::1 as 64512;",
            "  neighbor fd99::1 as 64512;\n  password \"s3cret\";",
        );
    let bird = Bird::start(&node, &conf);
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 2);
    let protos = bird.birdc(&node, "show protocols all node4");
    assert!(protos.contains("Established"), "{protos}");

    // The secret is rotated to a value BIRD does not have: birdd restarts the session with
    // the new key and BIRD's kernel drops every segment, so it stays down.
    write_secret(&node, "tor-password", "password", "wrong");
    wait_for(
        "birdd to restart the session with the new key",
        Duration::from_secs(30),
        || {
            (!session_up(&birdd, &node, "10.99.0.254") && !session_up(&birdd, &node, "fd99::fe"))
                .then_some(())
        },
    );
    both_stay_down(
        &birdd,
        &node,
        Duration::from_secs(6),
        "a session whose MD5 keys differ must not come up",
    );

    // And back: both sessions return, the IPv6 one through the listener again.
    write_secret(&node, "tor-password", "password", "s3cret");
    established(&birdd, &node, 2);
}

#[test]
fn ttl_security_refuses_a_peer_whose_packets_may_have_come_from_afar() {
    let (node, _) = node_peering_with_tor();
    apply(
        &node,
        &format!(
            r#"
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: tor-v4}}
spec: {{peerIP: 10.99.0.254, asNumber: {TOR_AS}, ttlSecurity: 1}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: tor-v6}}
spec: {{peerIP: "[fd99::fe]:1790", asNumber: {TOR_AS}, ttlSecurity: 1}}
"#
        ),
    );
    // Nothing listens on 1790: the IPv6 session can only be the one BIRD opens, answered
    // by birdd's listener, whose SYN-ACK must already leave with a hop limit of 255.
    let base = BIRD_CONF.replace("ADD_PATHS", "");
    let birdd = Birdd::start(&node);
    // BIRD sends with its usual TTL: birdd drops its packets.
    {
        let _bird = Bird::start(&node, &base);
        both_stay_down(
            &birdd,
            &node,
            Duration::from_secs(6),
            "GTSM must drop packets that arrive with a TTL below 255",
        );
    }
    // With `ttl security on` BIRD sends with 255 as well: both sessions come up.
    let gtsm = base.replace(
        "  graceful restart on;",
        "  graceful restart on;\n  ttl security on;",
    );
    let bird = Bird::start(&node, &gtsm);
    established(&birdd, &node, 2);
    let protos = bird.birdc(&node, "show protocols");
    assert!(protos.matches("Established").count() >= 2, "{protos}");
}

#[test]
fn a_peer_that_restarts_behind_a_silent_connection_is_taken_back_at_once() {
    let (node, _) = node_peering_with_tor();
    let bird = Bird::start(&node, &BIRD_CONF.replace("ADD_PATHS", ""));
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 2);
    let in_kernel =
        || ns_out(&node.ns, "ip", &["route", "show", "proto", "bird"]).contains("192.168.50.0/24");
    wait_for(
        "BIRD's route in the kernel",
        Duration::from_secs(15),
        || in_kernel().then_some(()),
    );
    let since = |b: &Birdd| {
        b.peers(&node)
            .iter()
            .find(|p| p.address == "10.99.0.254")
            .map(|p| (p.state, p.since_unix_seconds))
    };
    let before = since(&birdd);

    // The IPv4 connection goes silent (a router rebooting behind a dead link): nothing of it
    // crosses the fabric any more, not even the reset BIRD's kernel sends when it dies.
    let conns = ns_out(
        &node.fabric,
        "ss",
        &["-Htn", "state", "established", "dst", "10.99.0.1"],
    );
    let tuple = conns
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(2)?.strip_prefix("10.99.0.254:")?;
            let remote = f.get(3)?.strip_prefix("10.99.0.1:")?;
            Some((local.to_string(), remote.to_string()))
        })
        .unwrap_or_else(|| panic!("BIRD's IPv4 connection in:\n{conns}"));
    let (lp, rp) = (tuple.0.as_str(), tuple.1.as_str());
    for rule in [
        [
            "OUTPUT",
            "-s",
            "10.99.0.254",
            "--sport",
            lp,
            "-d",
            "10.99.0.1",
            "--dport",
            rp,
        ],
        [
            "INPUT",
            "-s",
            "10.99.0.1",
            "--sport",
            rp,
            "-d",
            "10.99.0.254",
            "--dport",
            lp,
        ],
    ] {
        let mut args = vec!["-w", "-A", rule[0], "-p", "tcp"];
        args.extend(&rule[1..]);
        args.extend(["-j", "DROP"]);
        node.fabric.exec("iptables", &args);
    }
    drop(bird);

    // BIRD comes back and connects while birdd still has the old session up: RFC 4724 says
    // that is the peer's restart. The session starts again at once (not after the hold
    // time) and the route never leaves the kernel.
    let _bird = Bird::start(&node, &BIRD_CONF.replace("ADD_PATHS", ""));
    wait_for(
        "birdd to take BIRD's new connection",
        Duration::from_secs(20),
        || {
            let now = since(&birdd)?;
            (now.0 == SessionState::Established as i32 && Some(now) != before).then_some(())
        },
    );
    assert!(in_kernel(), "the route must be kept through the restart");
    assert!(
        birdd
            .log_text()
            .contains("graceful restart), its routes are kept as stale"),
        "{}",
        birdd.log_text()
    );
}

#[test]
fn a_two_octet_bird_session_carries_four_octet_paths_in_as4_path() {
    let node = Node::start(NodeOptions::new(&bin_dir()));
    node.fabric
        .exec("ip", &["addr", "add", "10.99.0.254/24", "dev", "net0"]);
    apply(
        &node,
        r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false, asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: old-router}
spec: {peerIP: 10.99.0.254, asNumber: 64513}
"#,
    );
    let ips = claim_block(&node, &node.name, 1, 0);
    // BIRD without 4-octet AS support; its route has come through AS 4200000002, which a
    // 2-octet speaker can only carry as AS_TRANS plus AS4_PATH (RFC 6793).
    let bird = Bird::start(
        &node,
        r#"
router id 10.99.0.254;
protocol device { }
protocol direct { ipv4; interface "net0"; }
protocol static s4 { ipv4; route 192.168.50.0/24 blackhole; }
protocol bgp node4 {
  local as 64513;
  neighbor 10.99.0.1 as 64512;
  enable as4 off;
  ipv4 { import all; export filter { if proto = "s4" then { bgp_path.prepend(4200000002); accept; } reject; }; };
}
"#,
    );
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 1);
    let caps = bird.birdc(&node, "show protocols all node4");
    assert!(
        !caps.contains("external AS4"),
        "the session must be 2-octet:\n{caps}"
    );
    let b4 = block_of(ips[0]);
    wait_for("BIRD to learn the block", Duration::from_secs(15), || {
        bird.birdc(&node, &format!("show route {b4} all"))
            .contains("BGP.as_path: 64512")
            .then_some(())
    });
    let routes = wait_for("BIRD's route at birdd", Duration::from_secs(15), || {
        let r = birdd.routes(&node);
        r.iter().any(|r| r.prefix == "192.168.50.0/24").then_some(r)
    });
    let r = routes
        .iter()
        .find(|r| r.prefix == "192.168.50.0/24")
        .expect("the route");
    assert_eq!(r.as_path, vec![64513, 4200000002], "AS4_PATH merged back");
}

const RR_CLIENT: &str = r#"
router id ID;
protocol device { }
protocol direct { ipv4; interface "uplink"; }
protocol static s4 { ipv4; route PREFIX blackhole; }
protocol bgp reflector {
  local ID as 64512;
  neighbor 10.99.0.1 as 64512;
  ipv4 { import all; export where proto = "s4"; };
}
"#;

const GOBGP_RR_CLIENT: &str = r#"
[global.config]
  as = 64512
  router-id = "10.99.0.3"
  local-address-list = ["10.99.0.3"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.99.0.1"
    peer-as = 64512
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#;

#[test]
fn birdd_reflects_routes_between_bird_and_gobgp_clients() {
    // node-a runs birdd as a route reflector; node-b and node-c stand in for two clients,
    // one running BIRD and one GoBGP (the lab's node namespaces on one bridge, nothing
    // Calico in them).
    let cluster = Cluster::start(3, NodeOptions::new(&bin_dir()));
    let rr = &cluster.nodes[0];
    apply(
        rr,
        r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false, asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: c1}
spec: {node: node-a, peerIP: 10.99.0.2, asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: c2}
spec: {node: node-a, peerIP: 10.99.0.3, asNumber: 64512}
"#,
    );
    rr.with_datastore(async |rc| {
        let mut n: calico_api::resource::Node =
            rc.get(None, "node-a").await.expect("the Node resource");
        if let Some(bgp) = n.spec.bgp.as_mut() {
            bgp.route_reflector_cluster_id = "1.1.1.1".into();
        }
        rc.update(n).await.expect("making node-a a route reflector");
    });
    let conf = |id: &str, prefix: &str| RR_CLIENT.replace("ID", id).replace("PREFIX", prefix);
    let c1 = Bird::start_in(
        &cluster.nodes[1].ns,
        cluster.nodes[1].dir.path(),
        &conf("10.99.0.2", "10.244.1.0/26"),
        "c1",
    );
    let c2 = &cluster.nodes[2];
    let _gobgp = start_gobgp(&c2.ns, c2.dir.path(), GOBGP_RR_CLIENT);
    let gobgp = |args: &[&str]| ns_out(&c2.ns, "gobgp", args);
    let birdd = Birdd::start(rr);
    established(&birdd, rr, 2);
    gobgp(&["global", "rib", "add", "10.244.2.0/26", "-a", "ipv4"]);
    // Each client hears the other's route through the reflector, marked as reflected (a
    // Calico reflector passes on routes inside its IP pools, as Calico's export filter says).
    let seen = wait_for(
        "BIRD's route reflected to GoBGP",
        Duration::from_secs(15),
        || {
            let r = gobgp(&["global", "rib", "-a", "ipv4", "10.244.1.0/26", "-j"]);
            r.contains("10.244.1.0/26").then_some(r)
        },
    );
    // ORIGINATOR_ID (type 9) is the BIRD client, CLUSTER_LIST (type 10) our cluster id.
    assert!(
        seen.contains(r#""type":9,"value":"10.99.0.2""#)
            && seen.contains(r#""type":10,"value":["1.1.1.1"]"#),
        "{seen}"
    );
    let seen = wait_for(
        "GoBGP's route reflected to BIRD",
        Duration::from_secs(15),
        || {
            let r = c1.birdc(rr, "show route 10.244.2.0/26 all");
            r.contains("BGP.originator_id: 10.99.0.3").then_some(r)
        },
    );
    assert!(seen.contains("BGP.cluster_list: 1.1.1.1"), "{seen}");
    // The originator never hears its own route back.
    let own = c1.birdc(rr, "show route 10.244.1.0/26 all");
    assert!(!own.contains("BGP.originator_id"), "{own}");
}

/// FRR (zebra and bgpd) in `ns` with `conf`, in its own pathspace; stopped and its run
/// directory removed on drop.
struct Frr {
    _bgpd: Daemon,
    _zebra: Daemon,
    ns: String,
    pathspace: String,
    run: std::path::PathBuf,
}

impl Frr {
    fn start_in(ns: &NetNs, dir: &std::path::Path, name: &str, conf: &str) -> Frr {
        let zebra = require("zebra", "frr");
        let bgpd = require("bgpd", "frr");
        let pathspace = format!("calico-rs-{}-{name}", std::process::id());
        let run = std::path::PathBuf::from("/var/run/frr").join(&pathspace);
        std::fs::create_dir_all(&run).expect("FRR's run directory");
        let _ = Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(&run)
            .status();
        let (bgp_conf, zebra_conf) = (
            dir.join(format!("{name}-frr.conf")),
            dir.join(format!("{name}-zebra.conf")),
        );
        std::fs::write(&bgp_conf, conf).expect("FRR config");
        std::fs::write(&zebra_conf, format!("hostname {name}\n")).expect("zebra config");
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
        let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let spawn = |prog: &std::path::Path, extra: &[&str], conf: &std::path::Path, pid: &str| {
            let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
            args.extend([
                "-N".into(),
                pathspace.clone(),
                "-f".into(),
                s(conf),
                "-i".into(),
                s(&run.join(pid)),
                "-A".into(),
                "127.0.0.1".into(),
            ]);
            let prog = prog.to_path_buf();
            Daemon(ns.run(move || {
                Command::new(prog)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("starting an FRR daemon")
            }))
        };
        let zebra = spawn(&zebra, &[], &zebra_conf, "zebra.pid");
        std::thread::sleep(Duration::from_millis(500));
        let bgpd = spawn(&bgpd, &["-S", "-n"], &bgp_conf, "bgpd.pid");
        Frr {
            _bgpd: bgpd,
            _zebra: zebra,
            ns: ns.name().to_string(),
            pathspace,
            run,
        }
    }

    fn vtysh(&self, cmd: &str) -> String {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "vtysh",
                "-N",
                &self.pathspace,
                "-c",
                cmd,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

#[test]
fn frr_exchanges_routes_of_both_families_on_a_signed_session() {
    let (node, ips) = node_peering_with_tor();
    sign_tor_v4(&node, "frr-s3cret");
    let frr = Frr::start_in(
        &node.fabric,
        node.dir.path(),
        "tor",
        r#"
frr defaults datacenter
hostname tor
router bgp 64513
 bgp router-id 10.99.0.254
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.99.0.1 remote-as 64512
 neighbor 10.99.0.1 password frr-s3cret
 neighbor fd99::1 remote-as 64512
 address-family ipv4 unicast
  network 192.168.70.0/24
  no neighbor fd99::1 activate
 exit-address-family
 address-family ipv6 unicast
  network fd70::/48
  neighbor fd99::1 activate
 exit-address-family
"#,
    );
    let birdd = Birdd::start(&node);
    established(&birdd, &node, 2);
    for (family, route) in [
        ("", "192.168.70.0/24 via 10.99.0.254"),
        ("-6", "fd70::/48 via fd99::fe"),
    ] {
        wait_for(
            &format!("FRR's {route} in the kernel"),
            Duration::from_secs(15),
            || {
                let args: Vec<&str> = [family, "route", "show", "proto", "bird"]
                    .into_iter()
                    .filter(|a| !a.is_empty())
                    .collect();
                ns_out(&node.ns, "ip", &args).contains(route).then_some(())
            },
        );
    }
    for (block, family) in [(block_of(ips[0]), "ipv4"), (block_of(ips[1]), "ipv6")] {
        wait_for(
            &format!("FRR to learn {block}"),
            Duration::from_secs(15),
            || {
                frr.vtysh(&format!("show bgp {family} unicast"))
                    .contains(&block)
                    .then_some(())
            },
        );
    }
}

/// Calico's "disable the mesh, peer every node with a reflector" setup: two birdd nodes whose
/// only peer is the reflector `start_reflector` runs on the fabric at 10.99.0.254 (cluster id
/// 2.2.2.2, both nodes its clients). Each node's block must reach the other through it, next
/// hop unchanged, into the kernel; returns the reflector and node-a's block.
fn nodes_reach_each_other_through_a_reflector<R>(
    start_reflector: impl FnOnce(&Cluster) -> R,
) -> (Cluster, Vec<Birdd>, R, String) {
    let cluster = Cluster::start(2, NodeOptions::new(&bin_dir()));
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    apply(
        a,
        r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false, asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: reflector}
spec: {peerIP: 10.99.0.254, asNumber: 64512}
"#,
    );
    let block = |n: &calico_lab::Node| block_of(claim_block(a, &n.name, 1, 0)[0]);
    let (block_a, block_b) = (block(a), block(b));
    let rr = start_reflector(&cluster);
    let birdds: Vec<Birdd> = cluster.nodes.iter().map(Birdd::start).collect();
    for (n, d) in cluster.nodes.iter().zip(&birdds) {
        established(d, n, 1);
    }
    for (n, other_block, via) in [(a, &block_b, "10.99.0.2"), (b, &block_a, "10.99.0.1")] {
        wait_for(
            "the reflected block in the kernel",
            Duration::from_secs(20),
            || {
                ns_out(&n.ns, "ip", &["route", "show", "proto", "bird"])
                    .contains(&format!("{other_block} via {via}"))
                    .then_some(())
            },
        );
    }
    // What node-b learned is node-a's path, best and installed.
    let routes = birdds[1].routes(b);
    let r = routes
        .iter()
        .find(|r| r.prefix == block_a)
        .expect("node-a's block at node-b");
    assert_eq!(r.next_hop, "10.99.0.1");
    assert!(r.best && r.installed, "{r:?}");
    (cluster, birdds, rr, block_a)
}

#[test]
fn birdd_nodes_reach_each_other_through_a_bird_route_reflector() {
    let (cluster, _birdds, rr, block_a) = nodes_reach_each_other_through_a_reflector(|c| {
        Bird::start_in(
            &c.fabric,
            c.nodes[0].dir.path(),
            r#"
router id 10.99.0.254;
protocol device { }
protocol direct { ipv4; interface "br0"; }
template bgp clients {
  local 10.99.0.254 as 64512;
  rr client;
  rr cluster id 2.2.2.2;
  ipv4 { import all; export all; };
}
protocol bgp node_a from clients { neighbor 10.99.0.1 as 64512; }
protocol bgp node_b from clients { neighbor 10.99.0.2 as 64512; }
"#,
            "reflector",
        )
    });
    let a = &cluster.nodes[0];
    let seen = rr.birdc(a, &format!("show route {block_a} all"));
    assert!(
        seen.contains("BGP.as_path"),
        "the reflector has node-a's block:\n{seen}"
    );
    // The reflector also sends its connected subnet, the nodes' own: it must not replace
    // the nodes' link route (BIRD's `direct` protocol would win; birdd never overwrites a
    // route that is not its own).
    for n in &cluster.nodes {
        let r = ns_out(&n.ns, "ip", &["route", "show", "10.99.0.0/24"]);
        assert!(
            r.contains("proto kernel"),
            "the link route was replaced on {}: {r}",
            n.name
        );
    }
}

#[test]
fn birdd_nodes_reach_each_other_through_an_frr_route_reflector() {
    let (_cluster, birdds, rr, block_a) = nodes_reach_each_other_through_a_reflector(|c| {
        Frr::start_in(
            &c.fabric,
            c.nodes[0].dir.path(),
            "reflector",
            r#"
frr defaults datacenter
hostname reflector
router bgp 64512
 bgp router-id 10.99.0.254
 bgp cluster-id 2.2.2.2
 neighbor 10.99.0.1 remote-as 64512
 neighbor 10.99.0.2 remote-as 64512
 address-family ipv4 unicast
  neighbor 10.99.0.1 route-reflector-client
  neighbor 10.99.0.2 route-reflector-client
 exit-address-family
"#,
        )
    });
    let seen = rr.vtysh(&format!("show bgp ipv4 unicast {block_a}"));
    // From a client, with Calico's LOCAL_PREF for a block (2^31-1 - 1024).
    assert!(
        seen.contains("Received from a RR-client") && seen.contains("localpref 2147482623"),
        "FRR reflects node-a's block from a client:\n{seen}"
    );
    drop(birdds);
}
