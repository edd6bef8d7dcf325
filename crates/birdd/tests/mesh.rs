//! A Calico node-to-node mesh of three birdd nodes configured only by the datastore, signed
//! with `nodeMeshPassword` (TCP MD5): the blocks exchanged and in each kernel, and a BGPPeer
//! (with `reachableBy`: its static route in the kernel)
//! added and removed live without disturbing the mesh.

mod common;

use std::time::Duration;

use calico_lab::{Cluster, NodeOptions};
use calico_proto::bgp::{PeerType, SessionState};
use common::*;

#[test]
fn three_nodes_mesh_and_install_each_others_blocks() {
    let cluster = Cluster::start(3, NodeOptions::new(&bin_dir()));
    let mut blocks = Vec::new();
    for n in &cluster.nodes {
        let ip = claim_block(&cluster.nodes[0], &n.name, 1, 0)[0];
        blocks.push(ipnet::IpNet::new(ip, 26).expect("prefix").trunc());
    }
    apply(
        &cluster.nodes[0],
        r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  nodeMeshPassword: {secretKeyRef: {name: bgp-passwords, key: mesh}}
"#,
    );
    for n in &cluster.nodes {
        write_secret(n, "bgp-passwords", "mesh", "mesh-s3cret");
    }
    let daemons: Vec<Birdd> = cluster.nodes.iter().map(Birdd::start).collect();

    for (i, (n, d)) in cluster.nodes.iter().zip(&daemons).enumerate() {
        let peers = wait_for("a fully Established mesh", Duration::from_secs(40), || {
            let p = d.peers(n);
            // IPv4 and IPv6 sessions to each of the two others, as Calico's bird and bird6.
            (p.len() == 4
                && p.iter()
                    .all(|p| p.state == SessionState::Established as i32))
            .then_some(p)
        });
        for p in &peers {
            assert_eq!(p.r#type, PeerType::NodeToNodeMesh as i32);
            assert_eq!(
                p.name,
                format!("Mesh_{}", p.address.replace(['.', ':'], "_"))
            );
            assert_eq!((p.local_as, p.remote_as), (64512, 64512));
        }
        // Every other node's block, via that node, with protocol bird; never our own.
        let routes = wait_for(
            "the other blocks in the kernel",
            Duration::from_secs(20),
            || {
                let r = ns_out(&n.ns, "ip", &["route", "show", "proto", "bird"]);
                (0..3)
                    .filter(|j| *j != i)
                    .all(|j| r.contains(&format!("{} via 10.99.0.{}", blocks[j], j + 1)))
                    .then_some(r)
            },
        );
        assert!(!routes.contains(&blocks[i].to_string()), "{routes}");
        // Calico's export filter maps the metric to LOCAL_PREF: 2^31-1 - 1024 for a block.
        let learned = d.routes(n);
        for j in (0..3).filter(|j| *j != i) {
            let r = learned
                .iter()
                .find(|r| r.prefix == blocks[j].to_string())
                .expect("the other node's block in the RIB");
            assert_eq!(r.local_pref, 2_147_482_623, "{r:?}");
        }
    }

    // Half of each session was accepted by a listener, which checks the key: a connection
    // without one, from an address that has one, is dropped by the kernel for want of it.
    for (from, to) in [(0, 1), (1, 0), (2, 0)] {
        let target = std::net::SocketAddr::new(cluster.nodes[to].v4, 179);
        let before = md5_not_found(&cluster.nodes[to]);
        let connected = cluster.nodes[from]
            .ns
            .run(|| std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok());
        assert!(
            !connected,
            "node {to} accepted an unsigned connection from node {from}"
        );
        assert!(
            md5_not_found(&cluster.nodes[to]) > before,
            "node {to}'s kernel should count the unsigned SYN as missing its MD5 signature"
        );
    }

    // Ready (calico-node's -bird-ready): every session up.
    let ready = |n: &calico_lab::Node| {
        n.ns.run(|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect("127.0.0.1:9900").ok()?;
            s.write_all(b"GET /readiness HTTP/1.0\r\n\r\n").ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            Some(body)
        })
        .unwrap_or_default()
    };
    let r = wait_for("node-a ready", Duration::from_secs(10), || {
        let r = ready(&cluster.nodes[0]);
        r.contains(" 200 ").then_some(r)
    });
    assert!(r.contains("ready"), "{r}");

    // A BGPPeer for node-a only, added live: node-a gets a session, the mesh stays up.
    let before: Vec<i64> = daemons[0]
        .peers(&cluster.nodes[0])
        .iter()
        .map(|p| p.since_unix_seconds)
        .collect();
    apply(
        &cluster.nodes[0],
        r#"
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack-router}
spec: {node: node-a, peerIP: 10.99.0.200, asNumber: 65010, reachableBy: 10.99.0.254}
"#,
    );
    let peers = wait_for("the new peer on node-a", Duration::from_secs(10), || {
        let p = daemons[0].peers(&cluster.nodes[0]);
        (p.len() == 5).then_some(p)
    });
    let new = peers
        .iter()
        .find(|p| p.address == "10.99.0.200")
        .expect("the BGPPeer's session");
    assert_eq!(new.r#type, PeerType::NodeSpecific as i32);
    assert_eq!(new.name, "Node_10_99_0_200");
    assert_ne!(new.state, SessionState::Established as i32);
    let mesh_since: Vec<i64> = peers
        .iter()
        .filter(|p| p.address != "10.99.0.200")
        .map(|p| p.since_unix_seconds)
        .collect();
    assert_eq!(mesh_since, before, "the mesh sessions were not touched");
    // reachableBy: a static route to the peer through that gateway, in the kernel only.
    let peer_route =
        |n: &calico_lab::Node| ns_out(&n.ns, "ip", &["-4", "route", "show", "10.99.0.200/32"]);
    let r = wait_for(
        "the static route to the peer",
        Duration::from_secs(10),
        || {
            let r = peer_route(&cluster.nodes[0]);
            r.contains("via 10.99.0.254").then_some(r)
        },
    );
    assert!(r.contains("proto bird"), "{r}");
    assert!(peer_route(&cluster.nodes[1]).trim().is_empty());
    assert_eq!(
        daemons[1].peers(&cluster.nodes[1]).len(),
        4,
        "node-b has no such peer"
    );

    cluster.with_datastore(async |rc| {
        rc.delete_any(calico_api::Kind::BgpPeer, None, "rack-router", None)
            .await
            .expect("deleting the BGPPeer");
    });
    wait_for("the peer to go", Duration::from_secs(10), || {
        (daemons[0].peers(&cluster.nodes[0]).len() == 4).then_some(())
    });
    wait_for("its static route to go", Duration::from_secs(10), || {
        peer_route(&cluster.nodes[0])
            .trim()
            .is_empty()
            .then_some(())
    });
}

/// The node kernel's count of segments dropped for a missing TCP MD5 signature.
fn md5_not_found(n: &calico_lab::Node) -> u64 {
    let stats = ns_out(&n.ns, "cat", &["/proc/net/netstat"]);
    let mut tcp_ext = stats.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        panic!("no TcpExt counters in /proc/net/netstat:\n{stats}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "TCPMD5NotFound")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TCPMD5NotFound counter:\n{stats}"))
}
