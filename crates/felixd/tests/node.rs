//! felixd's node-level duties: drift repair, host endpoints with failsafe ports, NAT
//! outgoing, workload interface settings and connection tracking cleanup.

mod common;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use calico_netns_harness::{Servers, tcp_connects};
use common::{Cluster, Proto, reaches};

const CONVERGE: Duration = Duration::from_secs(20);

fn save(c: &Cluster, table: &str) -> String {
    let out = c.lab.ns.exec("iptables-save", &["-t", table]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn what_someone_else_removes_is_restored() {
    let mut c = Cluster::new(&[
        ("FELIX_IPTABLESREFRESHINTERVAL", "1"),
        ("FELIX_IPSETSREFRESHINTERVAL", "1"),
        ("FELIX_ROUTEREFRESHINTERVAL", "1"),
    ]);
    c.namespace("prod", &[]);
    c.add_pod("prod", "a", &[("app", "a")], None, &[80]);
    c.add_pod("prod", "b", &[("app", "b")], None, &[80]);
    c.apply(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: prod}
spec:
  selector: app == 'b'
  ingress: [{action: Allow, source: {selector: app == 'a'}}]
"#,
    );
    let b = c.pod("prod/b").v4();
    c.eventually(CONVERGE, "a reaches b", || {
        reaches(c.pod("prod/a"), b, Proto::Tcp, 80)
    });
    let chain = c
        .filter_chains()
        .into_iter()
        .find(|n| n.starts_with("cali-tw-"))
        .expect("an endpoint chain");

    // A chain flushed.
    let before = c.chain_rules(&chain);
    assert!(before > 0);
    c.flush_chain(&chain);
    assert_eq!(c.chain_rules(&chain), 0);
    c.eventually(CONVERGE, "the endpoint chain restored", || {
        c.chain_rules(&chain) == before
    });

    // Our hook in the kernel's FORWARD chain deleted (iptables: with nftables the whole
    // table is ours, there are no foreign chains to hook into).
    if !c.nft() {
        let hook = save(&c, "filter")
            .lines()
            .find(|l| l.starts_with("-A FORWARD") && l.contains("-j cali-FORWARD"))
            .expect("the FORWARD hook")
            .replacen("-A FORWARD", "-D FORWARD", 1);
        let args: Vec<&str> = hook
            .split_whitespace()
            .map(|a| a.trim_matches('"'))
            .collect();
        c.lab.ns.exec("iptables", &args);
        c.eventually(CONVERGE, "the FORWARD hook restored", || {
            save(&c, "filter")
                .lines()
                .any(|l| l.starts_with("-A FORWARD") && l.contains("-j cali-FORWARD"))
        });
    }

    // A member taken out of the set of the policy's source selector.
    let a = c.pod("prod/a").v4();
    let set = c
        .selector_sets()
        .into_iter()
        .next()
        .expect("a selector set");
    assert!(c.set_has(&set, a));
    c.del_set_member(&set, a);
    assert!(!c.set_has(&set, a));
    c.eventually(CONVERGE, "the set member restored", || c.set_has(&set, a));

    // The route to a pod deleted.
    c.lab.ns.exec("ip", &["route", "del", &b.to_string()]);
    c.eventually(CONVERGE, "the route restored", || {
        c.lab.routes().contains(&format!("{b} dev cali"))
    });
    assert!(reaches(c.pod("prod/a"), b, Proto::Tcp, 80));
}

#[test]
fn host_endpoints_keep_failsafe_ports_open() {
    let c = Cluster::new(&[]);
    c.lab
        .fabric
        .exec("ip", &["addr", "add", "10.99.0.254/24", "dev", "net0"]);
    let _servers = Servers::start(&c.lab.ns, &[22, 8080], &[]);
    let node: IpAddr = calico_lab::NODE_V4.parse().expect("an address");
    let t = Duration::from_millis(400);
    assert!(tcp_connects(&c.lab.fabric, node, 8080, t));
    c.apply(
        r#"
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-a-uplink, labels: {role: node}}
spec: {node: node-a, interfaceName: uplink, expectedIPs: ["10.99.0.1"]}
"#,
    );
    // A host endpoint with no policy denies, except for the failsafe ports.
    c.eventually(CONVERGE, "8080 closed by the host endpoint", || {
        !tcp_connects(&c.lab.fabric, node, 8080, t)
    });
    assert!(
        tcp_connects(&c.lab.fabric, node, 22, t),
        "ssh is a failsafe port"
    );
    c.apply(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: node-web}
spec:
  selector: role == 'node'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]
  egress: [{action: Allow}]
"#,
    );
    c.eventually(CONVERGE, "8080 opened by policy", || {
        tcp_connects(&c.lab.fabric, node, 8080, t)
    });
    // The host endpoint gone: all open again.
    c.delete(calico_api::Kind::HostEndpoint, None, "node-a-uplink");
    c.delete(calico_api::Kind::GlobalNetworkPolicy, None, "node-web");
    c.eventually(CONVERGE, "open without a host endpoint", || {
        tcp_connects(&c.lab.fabric, node, 8080, t)
    });
}

/// Accepts one connection on the fabric and returns the address it came from.
fn peer_of_next_connection(c: &Cluster, from: &common::Pod) -> Option<IpAddr> {
    let listener = c
        .lab
        .fabric
        .run(|| TcpListener::bind("10.99.0.254:7000"))
        .expect("listening on the fabric");
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            listener.set_nonblocking(false).ok()?;
            let (mut conn, peer) = listener.accept().ok()?;
            let mut buf = [0u8; 4];
            let _ = conn.read(&mut buf);
            Some(peer)
        });
        let ok = tcp_connects_raw(from, "10.99.0.254:7000".parse().expect("an address"));
        if !ok {
            // Unblock the server.
            let _ = c
                .lab
                .fabric
                .run(|| std::net::TcpStream::connect("10.99.0.254:7000"));
        }
        server.join().ok().flatten().map(|p: SocketAddr| p.ip())
    })
}

fn tcp_connects_raw(from: &common::Pod, to: SocketAddr) -> bool {
    from.ns.run(|| {
        use std::io::Write;
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .and_then(|mut s| s.write_all(b"ping"))
            .is_ok()
    })
}

#[test]
fn nat_outgoing_masquerades_pod_traffic_leaving_the_pools() {
    let mut c = Cluster::with_options(&[], false);
    c.namespace("prod", &[]);
    c.lab
        .fabric
        .exec("ip", &["addr", "add", "10.99.0.254/24", "dev", "net0"]);
    // Replies to un-NATed pods come back through the node.
    c.lab
        .fabric
        .exec("ip", &["route", "add", "10.244.0.0/16", "via", "10.99.0.1"]);
    c.add_pod("prod", "a", &[], None, &[]);
    let pod_ip = c.pod("prod/a").v4();
    assert_eq!(
        peer_of_next_connection(&c, c.pod("prod/a")),
        Some(pod_ip),
        "without natOutgoing the pod's own address is seen"
    );
    c.apply(
        r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v4}
spec: {cidr: 10.244.0.0/16, blockSize: 26, natOutgoing: true}
"#,
    );
    let node: IpAddr = calico_lab::NODE_V4.parse().expect("an address");
    c.eventually(CONVERGE, "traffic masqueraded", || {
        peer_of_next_connection(&c, c.pod("prod/a")) == Some(node)
    });
}

#[test]
fn workload_interfaces_are_configured_and_old_flows_forgotten() {
    let mut c = Cluster::with_options(&[("FELIX_ROUTEREFRESHINTERVAL", "1")], false);
    c.namespace("prod", &[]);
    c.add_pod("prod", "a", &[], None, &[80]);
    c.add_pod("prod", "b", &[], None, &[80]);
    let b = c.pod("prod/b").v4();
    assert!(reaches(c.pod("prod/a"), b, Proto::Udp, 80));
    let iface = c
        .lab
        .cali_links()
        .into_iter()
        .next()
        .expect("a workload interface");
    let sysctl = |p: &str| -> String {
        let path = format!("/proc/sys/net/{p}");
        c.lab.ns.run(|| {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string()
        })
    };
    // Someone changes them; felixd puts them back (the CNI plugin set them first).
    let set = |p: &str, v: &str| {
        let path = format!("/proc/sys/net/{p}");
        c.lab
            .ns
            .run(|| std::fs::write(&path, v).expect("writing a sysctl"));
    };
    set(&format!("ipv4/conf/{iface}/route_localnet"), "0");
    set(&format!("ipv4/neigh/{iface}/proxy_delay"), "5");
    set(&format!("ipv6/conf/{iface}/accept_ra"), "1");
    c.eventually(CONVERGE, "interface sysctls", || {
        sysctl(&format!("ipv4/conf/{iface}/route_localnet")) == "1"
            && sysctl(&format!("ipv4/neigh/{iface}/proxy_delay")) == "0"
            && sysctl(&format!("ipv6/conf/{iface}/accept_ra")) == "0"
    });
    let tracked = |c: &Cluster| {
        let out = c
            .lab
            .ns
            .try_exec("conntrack", &["-L", "-d", &b.to_string()])
            .expect("conntrack runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&b.to_string()))
            .count()
    };
    assert!(tracked(&c) > 0, "the UDP exchange is tracked");
    c.del_pod("prod/b");
    c.eventually(CONVERGE, "b's flows forgotten", || tracked(&c) == 0);
    // The MTU file for the CNI plugin.
    let mtu = std::fs::read_to_string(c.lab.dir.path().join("mtu")).expect("the MTU file");
    assert!(mtu.trim().parse::<u32>().is_ok_and(|m| m >= 1200), "{mtu}");
}

/// This kernel has no IPIP: a pool that asks for it makes felixd say why it is not ready,
/// rather than fail every update or pretend; back to no encapsulation, ready again.
#[test]
fn ipip_pools_on_a_kernel_without_ipip_are_a_clear_not_ready_reason() {
    let c = Cluster::new(&[]);
    let pool = |mode: &str| {
        format!(
            r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: v4}}
spec: {{cidr: 10.244.0.0/16, blockSize: 26, ipipMode: {mode}}}
"#
        )
    };
    let has_ipip = c
        .lab
        .ns
        .try_exec("ip", &["link", "add", "name", "probe0", "type", "ipip"]);
    if has_ipip.is_ok_and(|o| o.status.success()) {
        // A kernel with IPIP: tunl0 comes up instead (the CI kernel has none).
        c.lab.ns.exec("ip", &["link", "del", "probe0"]);
        c.apply(&pool("Always"));
        c.eventually(CONVERGE, "tunl0 up", || {
            c.lab
                .ns
                .try_exec("ip", &["link", "show", "tunl0", "up"])
                .is_ok_and(|o| !o.stdout.is_empty())
        });
        return;
    }
    c.apply(&pool("Always"));
    let mut reason = String::new();
    c.eventually(CONVERGE, "felixd to report IPIP as unavailable", || match c
        .lab
        .felixd_get("/readiness")
    {
        Some((503, body)) if body.contains("IPIP") => {
            reason = body;
            true
        }
        _ => false,
    });
    eprintln!("felixd /readiness: {reason}");
    assert!(
        reason.contains("tunl0") && reason.contains("VXLAN"),
        "{reason}"
    );
    c.apply(&pool("Never"));
    c.eventually(CONVERGE, "ready again without IPIP", || {
        matches!(c.lab.felixd_get("/readiness"), Some((200, _)))
    });
}

/// The status of an endpoint as felixd reported it in the datastore.
fn reported(c: &Cluster, key: &calico_datastore::Key) -> Option<String> {
    let key = key.clone();
    c.lab.with_datastore(async move |rc| {
        let kv = rc.datastore().get(&key).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&kv.value).ok()?;
        v["status"].as_str().map(str::to_string)
    })
}

#[test]
fn endpoint_and_node_status_are_reported_where_felix_writes_them() {
    use calico_datastore::Key;
    let mut c = Cluster::with_options(
        &[
            ("FELIX_ENDPOINTREPORTINGENABLED", "true"),
            ("FELIX_ENDPOINTREPORTINGDELAYSECS", "0.1"),
            ("FELIX_REPORTINGINTERVALSECS", "1"),
        ],
        false,
    );
    c.namespace("prod", &[]);
    c.add_pod("prod", "a", &[], None, &[]);
    let wep = Key::WorkloadEndpointStatus {
        region: "no-region".into(),
        hostname: "node-a".into(),
        orchestrator: "k8s".into(),
        workload: "prod/a".into(),
        endpoint: "eth0".into(),
    };
    c.eventually(CONVERGE, "pod a reported up", || {
        reported(&c, &wep).as_deref() == Some("up")
    });
    // The pod's end goes down: the host end loses its carrier.
    c.pod("prod/a")
        .ns
        .exec("ip", &["link", "set", "eth0", "down"]);
    c.eventually(CONVERGE, "pod a reported down", || {
        reported(&c, &wep).as_deref() == Some("down")
    });
    c.pod("prod/a")
        .ns
        .exec("ip", &["link", "set", "eth0", "up"]);
    c.eventually(CONVERGE, "pod a reported up again", || {
        reported(&c, &wep).as_deref() == Some("up")
    });

    // Host endpoints: on an interface that is up; on one that does not exist (an error,
    // until it appears).
    c.apply(
        r#"
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: uplink-hep}
spec: {node: node-a, interfaceName: uplink}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: spare-hep}
spec: {node: node-a, interfaceName: spare0}
"#,
    );
    let hep = |name: &str| Key::HostEndpointStatus {
        hostname: "node-a".into(),
        endpoint: name.into(),
    };
    c.eventually(CONVERGE, "host endpoint statuses", || {
        reported(&c, &hep("uplink-hep")).as_deref() == Some("up")
            && reported(&c, &hep("spare-hep")).as_deref() == Some("error")
    });
    c.lab.ns.exec(
        "ip",
        &["link", "add", "spare0", "type", "veth", "peer", "spare1"],
    );
    c.eventually(CONVERGE, "spare0 exists but is down", || {
        reported(&c, &hep("spare-hep")).as_deref() == Some("down")
    });

    // The node's liveness report, in Felix's shape.
    let live = Key::FelixStatus {
        region: "no-region".into(),
        hostname: "node-a".into(),
        last: false,
    };
    let report = c.lab.with_datastore(async move |rc| {
        let kv = rc.datastore().get(&live).await.expect("a status report");
        serde_json::from_slice::<serde_json::Value>(&kv.value).expect("JSON")
    });
    assert!(report["uptime"].as_f64().is_some(), "{report}");
    assert!(report["time"].as_str().is_some(), "{report}");

    // Gone endpoints take their reports with them.
    c.del_pod("prod/a");
    c.delete(calico_api::Kind::HostEndpoint, None, "spare-hep");
    c.eventually(CONVERGE, "reports removed", || {
        reported(&c, &wep).is_none() && reported(&c, &hep("spare-hep")).is_none()
    });
}
