//! Two nodes on one fabric, a VXLAN pool, felixd on both: the tunnel endpoints, routes to
//! the other node's blocks, and pods on different nodes reaching each other through the
//! tunnel, with policy that selects pods on the other node.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use calico_api::codec::decode_documents;
use calico_cni::runtime::{Attachment, ConfList, Runtime};
use calico_lab::{Cluster, Node, NodeOptions};
use calico_netns_harness::{NetNs, Servers, tcp_connects};
use serde_json::json;

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_felixd"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

struct Pod {
    ns: NetNs,
    ip: IpAddr,
    _servers: Servers,
}

fn add_pod(node: &Node, runtime: &Runtime, name: &str, app: &str) -> Pod {
    add_pod_at(node, runtime, name, app, None)
}

/// A pod asking for a given address (CNI_ARGS `IP=`), e.g. one from another node's block.
fn add_pod_at(node: &Node, runtime: &Runtime, name: &str, app: &str, ip: Option<IpAddr>) -> Pod {
    let mut plugin = node.calico_plugin();
    plugin["ipam"]["assign_ipv6"] = json!("false");
    plugin["policy_setup_timeout_seconds"] = json!(10);
    plugin["args"] = json!({"cni": {"labels": [{"key": "app", "value": app}]}});
    let list = ConfList::parse(&json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [plugin]
    }))
    .expect("conflist");
    let ns = NetNs::new("pod");
    let a = Attachment {
        container_id: format!("vx-{name}"),
        netns: Some(ns.path().to_path_buf()),
        ifname: "eth0".into(),
        args: [
            ("K8S_POD_NAMESPACE".to_string(), "prod".to_string()),
            ("K8S_POD_NAME".to_string(), name.to_string()),
        ]
        .into_iter()
        .chain(ip.map(|ip| ("IP".to_string(), ip.to_string())))
        .collect(),
        capability_args: Default::default(),
    };
    let r = node
        .run(|| runtime.add(&list, &a))
        .unwrap_or_else(|e| panic!("CNI ADD {name}: {e}"));
    let ip: IpAddr = r["ips"][0]["address"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .expect("an address");
    let servers = Servers::start(&ns, &[80], &[]);
    Pod {
        ns,
        ip,
        _servers: servers,
    }
}

fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not so after {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pods_on_two_nodes_reach_each_other_through_vxlan_under_policy() {
    let mut cluster = Cluster::start(2, NodeOptions::new(&bin_dir()));
    let setup = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v4}
spec: {cidr: 10.244.0.0/16, blockSize: 26, vxlanMode: Always}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
  labelsToApply: {pcns.projectcalico.org/name: prod}
"#;
    cluster.with_datastore(async |rc| {
        for r in decode_documents(setup).expect("yaml") {
            rc.apply_any(r).await.expect("apply");
        }
    });
    for n in &mut cluster.nodes {
        n.start_felixd(&[]);
    }
    let runtimes: Vec<Runtime> = cluster
        .nodes
        .iter()
        .map(|n| {
            Runtime::new(
                vec![bin_dir(), PathBuf::from("/usr/lib/cni")],
                &n.dir.path().join("results"),
            )
        })
        .collect();
    let a = add_pod(&cluster.nodes[0], &runtimes[0], "a", "client");
    let b = add_pod(&cluster.nodes[1], &runtimes[1], "b", "server");
    let t = Duration::from_millis(500);

    // Each node has its tunnel endpoint, and a route to the other's block through it.
    for n in &cluster.nodes {
        let show = || {
            let link = n.ns.try_exec("ip", &["-d", "link", "show", "vxlan.calico"]);
            link.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let start = Instant::now();
        while !(show().contains("vxlan id 4096")
            && n.routes()
                .lines()
                .any(|l| l.contains("dev vxlan.calico") && l.contains("onlink")))
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{}: no tunnel after 20s:\n{}\n{}",
                n.name,
                show(),
                n.routes()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eventually(Duration::from_secs(20), "a reaches b across nodes", || {
        tcp_connects(&a.ns, b.ip, 80, t)
    });
    assert!(tcp_connects(&b.ns, a.ip, 80, t));

    // A pod on node-b with an address from node-a's block (borrowed): node-a routes that one
    // address through the tunnel to node-b, ahead of its own blackhole for the block.
    let IpAddr::V4(a4) = a.ip else {
        panic!("IPv4 pods")
    };
    let borrowed = IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a4) + 10));
    let c = add_pod_at(
        &cluster.nodes[1],
        &runtimes[1],
        "c",
        "other",
        Some(borrowed),
    );
    assert_eq!(c.ip, borrowed);
    eventually(
        Duration::from_secs(20),
        "node-a's route to the borrowed address",
        || {
            cluster.nodes[0]
                .routes()
                .lines()
                .any(|l| l.starts_with(&format!("{borrowed} ")) && l.contains("dev vxlan.calico"))
        },
    );
    eventually(
        Duration::from_secs(20),
        "a reaches the pod with a borrowed address",
        || tcp_connects(&a.ns, c.ip, 80, t),
    );
    assert!(tcp_connects(&c.ns, a.ip, 80, t));

    // Policy on b's node selecting a pod that lives on a's node.
    let policy = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: server-from-others-only, namespace: prod}
spec:
  selector: app == 'server'
  ingress: [{action: Allow, source: {selector: app != 'client'}}]
"#;
    cluster.with_datastore(async |rc| {
        for r in decode_documents(policy).expect("yaml") {
            rc.apply_any(r).await.expect("apply");
        }
    });
    eventually(Duration::from_secs(20), "the remote client denied", || {
        !tcp_connects(&a.ns, b.ip, 80, t)
    });
    assert!(tcp_connects(&b.ns, a.ip, 80, t), "a's side has no policy");

    let routes = cluster.nodes[0].routes();
    eprintln!("node-a routes:\n{routes}");
    drop(a);
    drop(b);
    drop(c);
}
