//! The real `calico` binary wiring pods on a node made of network namespaces, with a real
//! etcd and a real ipamd: connectivity, chaining with the reference plugins, idempotency,
//! crashes at every step, parallel ADDs, CHECK, STATUS, GC and bad configurations.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use calico_api::resource::WorkloadEndpoint;
use calico_cni::runtime::Attachment;
use calico_netns_harness::{NetNs, tcp_reaches, udp_reaches};
use common::{NODE_V4, NODE_V6, Node, pod, result_ips};
use serde_json::{Value, json};

fn v4(ips: &[IpAddr]) -> IpAddr {
    *ips.iter().find(|i| i.is_ipv4()).unwrap()
}

fn v6(ips: &[IpAddr]) -> IpAddr {
    *ips.iter().find(|i| i.is_ipv6()).unwrap()
}

#[test]
fn pods_reach_the_host_and_each_other_over_ipv4_and_ipv6() {
    let node = Node::new();
    let list = node.calico_only();
    let (pa, pb) = (NetNs::new("pa"), NetNs::new("pb"));
    let a = pod(&pa, "default", "web-1", "ctr-a");
    let b = pod(&pb, "default", "db-1", "ctr-b");
    let ra = node.add(&list, &a).unwrap();
    let rb = node.add(&list, &b).unwrap();

    // The result as chained plugins need it.
    assert_eq!(ra["cniVersion"], "1.0.0");
    let ifs = ra["interfaces"].as_array().unwrap();
    assert!(ifs[0]["name"].as_str().unwrap().starts_with("cali"));
    assert!(ifs[0].get("sandbox").is_none(), "host side has no sandbox");
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], pa.path().display().to_string());
    for ip in ra["ips"].as_array().unwrap() {
        assert_eq!(ip["interface"], 1);
        let addr = ip["address"].as_str().unwrap();
        assert!(addr.ends_with("/32") || addr.ends_with("/128"), "{addr}");
    }
    let (ia, ib) = (result_ips(&ra), result_ips(&rb));
    assert_eq!(ia.len(), 2, "dual stack: {ra}");

    // The host end is Calico's name for the pod, with Calico's MAC.
    let host_if = calico_api::names::veth_name_for_pod("cali", "default", "web-1");
    assert_eq!(ifs[0]["name"], host_if.as_str());
    let link = node.ns.exec("ip", &["-o", "link", "show", &host_if]);
    assert!(String::from_utf8_lossy(&link.stdout).contains("ee:ee:ee:ee:ee:ee"));
    let routes = node.routes();
    assert!(
        routes.contains(&format!("{} dev {host_if}", v4(&ia))),
        "{routes}"
    );

    // The WorkloadEndpoint.
    let name = "node--a-k8s-web--1-eth0";
    let wep: WorkloadEndpoint = node
        .with_datastore(async |rc| rc.get(Some("default"), name).await)
        .unwrap();
    assert_eq!(wep.spec.container_id, "ctr-a");
    assert_eq!(wep.spec.interface_name, host_if);
    assert_eq!(wep.spec.profiles, vec!["kns.default"]);
    assert_eq!(wep.spec.ip_networks.len(), 2);
    assert_eq!(wep.spec.mac, ifs[1]["mac"].as_str().unwrap());

    // Traffic: pod → host, pod → pod, both ways, both families, TCP and UDP.
    let host = &node.ns;
    assert!(
        tcp_reaches(&pa, host, NODE_V4.parse().unwrap(), 8001),
        "pod a → host v4"
    );
    assert!(
        tcp_reaches(&pa, host, NODE_V6.parse().unwrap(), 8002),
        "pod a → host v6"
    );
    assert!(tcp_reaches(&pa, &pb, v4(&ib), 8003), "a → b v4");
    assert!(tcp_reaches(&pb, &pa, v4(&ia), 8004), "b → a v4");
    assert!(tcp_reaches(&pa, &pb, v6(&ib), 8005), "a → b v6");
    assert!(tcp_reaches(&pb, &pa, v6(&ia), 8006), "b → a v6");
    assert!(udp_reaches(&pa, &pb, v4(&ib), 8007), "a → b udp v4");
    assert!(udp_reaches(&pb, &pa, v6(&ia), 8008), "b → a udp v6");

    // DEL leaves nothing behind.
    node.del(&list, &a).unwrap();
    node.del(&list, &b).unwrap();
    assert!(node.cali_links().is_empty(), "{:?}", node.cali_links());
    assert!(node.allocations().is_empty(), "{:?}", node.allocations());
    let left =
        node.with_datastore(async |rc| rc.get::<WorkloadEndpoint>(Some("default"), name).await);
    assert!(
        matches!(left, Err(calico_datastore::DatastoreError::NotFound { .. })),
        "{left:?}"
    );
    assert!(!node.routes().contains("cali"), "{}", node.routes());
}

#[test]
fn a_chain_with_portmap_bandwidth_and_tuning() {
    let node = Node::new();
    let list = node.conflist(
        "1.0.0",
        vec![
            node.calico_plugin(),
            json!({"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}),
            json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
            json!({"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}}),
        ],
    );
    let p = NetNs::new("web");
    let mut a = pod(&p, "default", "web", "ctr-web");
    a.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
    );
    a.capability_args.insert(
        "bandwidth".into(),
        json!({"ingressRate": 100_000_000, "ingressBurst": 100_000_000, "egressRate": 100_000_000, "egressBurst": 100_000_000}),
    );
    let r = node.add(&list, &a).unwrap();
    let ip = v4(&result_ips(&r));
    // tuning ran inside the pod.
    let somaxconn = p.exec("cat", &["/proc/sys/net/core/somaxconn"]);
    assert_eq!(String::from_utf8_lossy(&somaxconn.stdout).trim(), "512");
    // bandwidth shaped the host end (found through our result's host interface).
    let host_if = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    let qdisc = node.ns.exec("tc", &["qdisc", "show", "dev", &host_if]);
    assert!(
        String::from_utf8_lossy(&qdisc.stdout).contains("tbf"),
        "{}",
        String::from_utf8_lossy(&qdisc.stdout)
    );
    // portmap forwards the host port to the pod.
    assert!(
        tcp_reaches_via(&node.ns, &p, ip, 80, NODE_V4.parse().unwrap(), 18080),
        "host port 18080 → pod :80"
    );
    // CHECK down the chain, without portmap: Debian's portmap 1.1.1 always checks IPv6 rules
    // (even for an IPv4-only result) and fails whatever came before it.
    let mut checkable = list.clone();
    checkable.plugins.retain(|p| p["type"] != "portmap");
    node.run(|| node.runtime.check(&checkable, &a)).unwrap();

    node.del(&list, &a).unwrap();
    assert!(node.cali_links().is_empty());
    assert!(node.allocations().is_empty());
    let nat = node.ns.exec("iptables-save", &["-t", "nat"]);
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(!nat.contains("18080"), "portmap rules left behind:\n{nat}");
}

/// Connects from `from` to `to_addr:to_port` while the server listens on the pod's
/// `pod_ip:pod_port` (the path goes through a DNAT).
fn tcp_reaches_via(
    from: &NetNs,
    pod_ns: &NetNs,
    pod_ip: IpAddr,
    pod_port: u16,
    to_addr: IpAddr,
    to_port: u16,
) -> bool {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;
    let l = pod_ns
        .run(|| TcpListener::bind(SocketAddr::new(pod_ip, pod_port)))
        .unwrap();
    std::thread::scope(|s| {
        let server = s.spawn(move || {
            let (mut c, _) = l.accept().ok()?;
            c.write_all(b"hi\n").ok()
        });
        let got = from.run(|| {
            let mut c = TcpStream::connect_timeout(
                &SocketAddr::new(to_addr, to_port),
                Duration::from_secs(3),
            )
            .ok()?;
            c.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            let mut buf = [0u8; 3];
            c.read_exact(&mut buf).ok()?;
            Some(buf == *b"hi\n")
        });
        if got.is_none() {
            // Unblock the accept.
            let _ = pod_ns.run(|| TcpStream::connect(SocketAddr::new(pod_ip, pod_port)));
        }
        let _ = server.join();
        got == Some(true)
    })
}

#[test]
fn del_and_add_are_idempotent() {
    let node = Node::new();
    let list = node.calico_only();
    let p = NetNs::new("idem");
    let a = pod(&p, "default", "idem", "ctr-idem");

    // DEL before any ADD, and DEL without a netns: success.
    node.del(&list, &a).unwrap();
    let mut no_ns = a.clone();
    no_ns.netns = None;
    node.del(&list, &no_ns).unwrap();

    // ADD twice for the same container: the same answer, one allocation.
    let first = node.add(&list, &a).unwrap();
    let again = node.add(&list, &a).unwrap();
    assert_eq!(result_ips(&first), result_ips(&again));
    assert_eq!(node.allocations().len(), 2, "{:?}", node.allocations());
    assert_eq!(node.cali_links().len(), 1);

    // DEL twice, then once more without the netns: all succeed, nothing left.
    node.del(&list, &a).unwrap();
    node.del(&list, &a).unwrap();
    node.del(&list, &no_ns).unwrap();
    assert!(node.allocations().is_empty());
    assert!(node.cali_links().is_empty());

    // The netns gone before DEL: DEL still releases the address.
    node.add(&list, &a).unwrap();
    drop(p);
    node.del(&list, &a).unwrap();
    assert!(node.allocations().is_empty(), "{:?}", node.allocations());
    assert!(node.cali_links().is_empty());
}

#[test]
fn a_plugin_killed_at_any_step_is_recovered_by_del_and_a_fresh_add() {
    let node = Node::new();
    let list = node.calico_only();
    for step in ["ipam", "veth", "pod", "host-route", "wep"] {
        let p = NetNs::new("crash");
        let a = pod(
            &p,
            "default",
            &format!("crash-{step}"),
            &format!("ctr-{step}"),
        );
        let mut crashing = node.runtime.clone();
        crashing
            .extra_env
            .push((calico_cni::failpoint::ENV.into(), step.into()));
        let err = node.run(|| crashing.add(&list, &a)).unwrap_err();
        assert!(
            err.msg.contains("signal: 9"),
            "{step}: the plugin should have been killed: {err:?}"
        );
        // What a runtime does after a failed ADD: DEL, then ADD again.
        node.del(&list, &a).unwrap();
        assert!(
            !node
                .allocations()
                .iter()
                .any(|(_, h)| h.ends_with(&format!("ctr-{step}"))),
            "{step}: DEL left {:?}",
            node.allocations()
        );
        assert!(
            node.cali_links().is_empty(),
            "{step}: DEL left {:?}",
            node.cali_links()
        );
        let wep = node.with_datastore(async |rc| {
            rc.get::<WorkloadEndpoint>(Some("default"), &format!("node--a-k8s-crash--{step}-eth0"))
                .await
        });
        assert!(wep.is_err(), "{step}: DEL left the endpoint");
        let r = node.add(&list, &a).unwrap();
        let ips = result_ips(&r);
        let mine: Vec<_> = node
            .allocations()
            .into_iter()
            .filter(|(_, h)| h == &format!("k8s-pod-network.ctr-{step}"))
            .collect();
        assert_eq!(mine.len(), 2, "{step}: one address per family: {mine:?}");
        assert_eq!(
            node.cali_links().len(),
            1,
            "{step}: {:?}",
            node.cali_links()
        );
        let routes = node.routes();
        assert_eq!(
            routes.matches(&format!("{} dev cali", v4(&ips))).count(),
            1,
            "{step}: {routes}"
        );
        for _ in 0..3 {
            node.del(&list, &a).unwrap();
        }
        assert!(
            node.allocations().is_empty(),
            "{step}: {:?}",
            node.allocations()
        );
        assert!(node.cali_links().is_empty(), "{step}");
    }
}

#[test]
fn twenty_parallel_adds_get_distinct_addresses() {
    let node = Node::new();
    let list = node.calico_only();
    let pods: Vec<NetNs> = (0..20).map(|i| NetNs::new(&format!("par{i}"))).collect();
    let attachments: Vec<Attachment> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| pod(p, "load", &format!("p{i}"), &format!("ctr-par-{i}")))
        .collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = attachments
            .iter()
            .map(|a| s.spawn(|| node.add(&list, a)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let mut seen = BTreeSet::new();
    for r in &results {
        for ip in result_ips(r) {
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
    }
    assert_eq!(seen.len(), 40);
    assert_eq!(node.cali_links().len(), 20);
    std::thread::scope(|s| {
        for a in &attachments {
            let node = &node;
            let list = &list;
            s.spawn(move || node.del(list, a).unwrap());
        }
    });
    assert!(node.allocations().is_empty());
    assert!(node.cali_links().is_empty());
}

#[test]
fn check_status_and_gc() {
    let mut node = Node::new();
    let list = node.calico_only();
    let p = NetNs::new("chk");
    let a = pod(&p, "default", "chk", "ctr-chk");
    let r = node.add(&list, &a).unwrap();
    node.run(|| node.runtime.check(&list, &a)).unwrap();
    // Someone removes the pod's IPv4 address: CHECK says so.
    let ip = v4(&result_ips(&r));
    p.exec("ip", &["addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
    let err = node.run(|| node.runtime.check(&list, &a)).unwrap_err();
    assert!(err.msg.contains(&ip.to_string()), "{err}");

    // STATUS: fine with ipamd, code 50 without.
    node.run(|| node.runtime.status(&list)).unwrap();
    node.stop_ipamd();
    let err = node.run(|| node.runtime.status(&list)).unwrap_err();
    assert_eq!(err.code, 50, "{err}");
    node.start_ipamd();

    // GC: the runtime no longer knows ctr-chk; its allocation and endpoint go, a kept one
    // stays.
    let q = NetNs::new("keep");
    let b = pod(&q, "default", "keep", "ctr-keep");
    node.add(&list, &b).unwrap();
    let list11 = node.conflist("1.1.0", vec![node.calico_plugin()]);
    // Without the attachments, GC refuses and frees nothing.
    let mut bare = node.calico_plugin();
    bare["cniVersion"] = json!("1.1.0");
    bare["name"] = json!("k8s-pod-network");
    let (ok, v) = run_plugin(&node, "GC", &bare.to_string());
    assert!(!ok && v["code"] == 7, "{v}");
    assert_eq!(node.allocations().len(), 4);
    let errors = node.run(|| {
        node.runtime
            .gc(&list11, &[("ctr-keep".into(), "eth0".into())])
    });
    assert!(errors.is_empty(), "{errors:?}");
    let left: BTreeSet<String> = node.allocations().into_iter().map(|(_, h)| h).collect();
    assert_eq!(
        left,
        BTreeSet::from(["k8s-pod-network.ctr-keep".to_string()])
    );
    let gone = node.with_datastore(async |rc| {
        rc.get::<WorkloadEndpoint>(Some("default"), "node--a-k8s-chk-eth0")
            .await
    });
    assert!(
        gone.is_err(),
        "GC deletes the endpoint of a released container"
    );
    node.del(&list, &a).unwrap();
    node.del(&list, &b).unwrap();
}

/// Runs the binary directly with a configuration and returns (exit success, stdout JSON).
fn run_plugin(node: &Node, command: &str, conf: &str) -> (bool, Value) {
    let bin = common::bin_dir().join("calico");
    let p = NetNs::new("bad");
    let out = node.run(|| {
        let mut child = Command::new(&bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "ctr-bad")
            .env("CNI_NETNS", p.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", common::bin_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    });
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

#[test]
fn bad_configurations_get_the_right_code_and_a_helpful_message() {
    let node = Node::new();
    let mut good = node.calico_plugin();
    good["cniVersion"] = json!("1.0.0");
    good["name"] = json!("k8s-pod-network");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        c.to_string()
    };
    let cases: Vec<(String, u64, &str)> = vec![
        ("{not json".into(), 6, "not valid JSON"),
        (
            with(&|c| c["cniVersion"] = json!("2.0.0")),
            1,
            "not supported",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("ipam");
            }),
            7,
            "ipam.type is missing",
        ),
        (with(&|c| c["mtu"] = json!("big")), 7, "mtu"),
        (
            with(&|c| c["ipam"]["type"] = json!("no-such-ipam")),
            7,
            "no-such-ipam",
        ),
        (with(&|c| c["name"] = json!("bad name!")), 7, "network name"),
        (
            with(&|c| c["ipam"]["ipv4_pools"] = json!(["nope"])),
            7,
            "nope",
        ),
    ];
    for (conf, code, text) in cases {
        let (ok, v) = run_plugin(&node, "ADD", &conf);
        assert!(!ok, "{conf} was accepted");
        assert_eq!(v["code"], code, "{conf}: {v}");
        assert!(
            v["msg"].as_str().unwrap_or_default().contains(text),
            "{conf}: {v}"
        );
    }
    // Nothing was left behind by any of them.
    assert!(node.allocations().is_empty(), "{:?}", node.allocations());
    assert!(node.cali_links().is_empty());
    // VERSION needs no configuration beyond the version.
    let (ok, v) = run_plugin(&node, "VERSION", r#"{"cniVersion":"0.4.0"}"#);
    assert!(ok);
    assert_eq!(v["cniVersion"], "0.4.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.1.0"))
    );
}

#[test]
fn a_retried_add_after_a_crash_reuses_the_first_allocation() {
    let node = Node::new();
    let list = node.calico_only();
    for step in ["ipam", "veth", "pod", "host-route", "wep"] {
        let p = NetNs::new("retry");
        let a = pod(
            &p,
            "default",
            &format!("retry-{step}"),
            &format!("ctr-r-{step}"),
        );
        let mut crashing = node.runtime.clone();
        crashing
            .extra_env
            .push((calico_cni::failpoint::ENV.into(), step.into()));
        node.run(|| crashing.add(&list, &a)).unwrap_err();
        let first: BTreeSet<IpAddr> = node.allocations().into_iter().map(|(ip, _)| ip).collect();
        // No DEL in between: the runtime simply tries again.
        let r = node.add(&list, &a).unwrap();
        let got: BTreeSet<IpAddr> = result_ips(&r).into_iter().collect();
        assert_eq!(
            got, first,
            "{step}: the retry must get what the first attempt took"
        );
        assert_eq!(
            node.allocations().len(),
            2,
            "{step}: one allocation per family"
        );
        assert_eq!(node.cali_links().len(), 1, "{step}");
        node.del(&list, &a).unwrap();
        assert!(node.allocations().is_empty(), "{step}");
        assert!(node.cali_links().is_empty(), "{step}");
    }
}

#[test]
fn an_old_sandbox_del_leaves_the_new_sandbox_alone() {
    let node = Node::new();
    let list = node.calico_only();
    let (old_ns, new_ns) = (NetNs::new("old"), NetNs::new("new"));
    let old = pod(&old_ns, "default", "web", "ctr-old");
    let new = pod(&new_ns, "default", "web", "ctr-new");
    node.add(&list, &old).unwrap();
    // The pod's new sandbox comes up before the old one is torn down.
    let r = node.add(&list, &new).unwrap();
    let new_ips = result_ips(&r);
    node.del(&list, &old).unwrap();
    let wep: WorkloadEndpoint = node
        .with_datastore(async |rc| rc.get(Some("default"), "node--a-k8s-web-eth0").await)
        .unwrap();
    assert_eq!(
        wep.spec.container_id, "ctr-new",
        "the new sandbox keeps its endpoint"
    );
    let held: BTreeSet<IpAddr> = node.allocations().into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(
        held,
        new_ips.iter().copied().collect(),
        "only the old sandbox's addresses went"
    );
    assert_eq!(node.cali_links().len(), 1);
    let host = &node.ns;
    let lab_ip: IpAddr = NODE_V4.parse().unwrap();
    assert!(
        tcp_reaches(&new_ns, host, lab_ip, 8101),
        "the new sandbox still works"
    );
    node.del(&list, &new).unwrap();
    assert!(node.allocations().is_empty());
}

#[test]
fn a_del_while_ipamd_is_down_succeeds_and_finishes_later() {
    let mut node = Node::new();
    let list = node.calico_only();
    let p = NetNs::new("late");
    let a = pod(&p, "default", "late", "ctr-late");
    node.add(&list, &a).unwrap();
    node.stop_ipamd();
    // The interface goes now; the endpoint and addresses wait for ipamd.
    node.del(&list, &a).unwrap();
    assert!(node.cali_links().is_empty());
    assert_eq!(
        node.allocations().len(),
        2,
        "addresses stay until ipamd is back"
    );
    let pending = node.dir.path().join("pending");
    assert_eq!(std::fs::read_dir(&pending).unwrap().count(), 1);
    node.start_ipamd();
    // The next run of the plugin on the node finishes it.
    let q = NetNs::new("next");
    let b = pod(&q, "default", "next", "ctr-next");
    node.add(&list, &b).unwrap();
    let left: BTreeSet<String> = node.allocations().into_iter().map(|(_, h)| h).collect();
    assert_eq!(
        left,
        BTreeSet::from(["k8s-pod-network.ctr-next".to_string()])
    );
    assert_eq!(std::fs::read_dir(&pending).unwrap().count(), 0);
    let wep = node.with_datastore(async |rc| {
        rc.get::<WorkloadEndpoint>(Some("default"), "node--a-k8s-late-eth0")
            .await
    });
    assert!(wep.is_err(), "the endpoint was deleted by the replay");
    node.del(&list, &b).unwrap();
}

#[test]
fn del_succeeds_when_the_netns_path_is_no_namespace() {
    let node = Node::new();
    let list = node.calico_only();
    let p = NetNs::new("unmounted");
    let a = pod(&p, "default", "gone", "ctr-gone");
    node.add(&list, &a).unwrap();
    // What an unmounted namespace leaves behind: a plain file at the path.
    let stale = node.dir.path().join("stale-netns");
    std::fs::write(&stale, "").unwrap();
    let mut at_file = a.clone();
    at_file.netns = Some(stale);
    node.del(&list, &at_file).unwrap();
    assert!(node.allocations().is_empty());
    assert!(
        node.cali_links().is_empty(),
        "the endpoint named the host link"
    );
}

#[test]
fn results_in_cni_0_3_1_carry_ip_versions() {
    let node = Node::new();
    let list = node.conflist("0.3.1", vec![node.calico_plugin()]);
    let p = NetNs::new("old");
    let a = pod(&p, "default", "legacy", "ctr-legacy");
    let r = node.add(&list, &a).unwrap();
    assert_eq!(r["cniVersion"], "0.3.1");
    let versions: BTreeSet<&str> = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, BTreeSet::from(["4", "6"]));
    assert!(
        r["interfaces"][1].get("mtu").is_none(),
        "mtu is a 1.1.0 field"
    );
    node.del(&list, &a).unwrap();
}

#[test]
fn a_requested_address_and_other_ipam_plugins() {
    let node = Node::new();
    // CNI_ARGS IP= asks calico-ipam for that very address.
    let list = node.calico_only();
    let p = NetNs::new("fixed");
    let mut a = pod(&p, "default", "fixed", "ctr-fixed");
    a.args.push(("IP".into(), "10.244.200.7".into()));
    let r = node.add(&list, &a).unwrap();
    assert_eq!(
        result_ips(&r),
        vec!["10.244.200.7".parse::<IpAddr>().unwrap()]
    );
    node.del(&list, &a).unwrap();
    assert!(node.allocations().is_empty());

    // calico-ipam under another main plugin (macvlan, as Multus users do for a second
    // network), as an IPAM plugin of its own.
    let mut ipam = node.calico_plugin()["ipam"].clone();
    ipam["assign_ipv6"] = json!("false");
    let ptp = node.conflist(
        "1.0.0",
        vec![json!({
            "type": "macvlan",
            "master": "uplink",
            "mode": "bridge",
            "ipam": ipam,
            "nodename": node.name,
            "nodename_file_optional": true,
            "log_file_path": node.dir.path().join("cni.log").display().to_string(),
        })],
    );
    let q = NetNs::new("ptp");
    let b = pod(&q, "default", "ptp", "ctr-ptp");
    let r = node.add(&ptp, &b).unwrap();
    let ip = result_ips(&r)[0];
    assert!(
        node.allocations()
            .contains(&(ip, "k8s-pod-network.ctr-ptp".to_string())),
        "{:?}",
        node.allocations()
    );
    node.del(&ptp, &b).unwrap();
    assert!(node.allocations().is_empty());

    // calico with Debian's host-local IPAM, run from CNI_PATH.
    let mut calico = node.calico_plugin();
    calico["ipam"] = json!({
        "type": "host-local",
        "ranges": [[{"subnet": "10.55.0.0/24"}]],
        "dataDir": node.dir.path().join("host-local").display().to_string(),
    });
    let hl = node.conflist("1.0.0", vec![calico]);
    let c_ns = NetNs::new("hl");
    let c = pod(&c_ns, "default", "hl", "ctr-hl");
    let r = node.add(&hl, &c).unwrap();
    let ip = result_ips(&r)[0];
    assert!(ip.to_string().starts_with("10.55.0."), "{ip}");
    assert!(tcp_reaches(&c_ns, &node.ns, NODE_V4.parse().unwrap(), 8201));
    node.del(&hl, &c).unwrap();
    assert!(node.cali_links().is_empty());
}

/// A stand-in felixd on a unix socket: records endpoints and reports them programmed.
mod fake_felix {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use calico_proto::agent::{
        self as pb,
        agent_server::{Agent, AgentServer},
    };
    use tonic::{Request, Response, Status};

    #[derive(Default, Clone)]
    pub struct Felix {
        pub added: Arc<Mutex<Vec<(String, String, serde_json::Value)>>>,
        pub waited: Arc<Mutex<Vec<String>>>,
    }

    #[tonic::async_trait]
    impl Agent for Felix {
        async fn endpoint_added(
            &self,
            r: Request<pb::EndpointAddedRequest>,
        ) -> Result<Response<pb::EndpointAddedResponse>, Status> {
            let r = r.into_inner();
            let v = serde_json::from_slice(&r.workload_endpoint).unwrap_or_default();
            self.added.lock().unwrap().push((r.namespace, r.name, v));
            Ok(Response::new(pb::EndpointAddedResponse {}))
        }
        async fn endpoint_removed(
            &self,
            _r: Request<pb::EndpointRemovedRequest>,
        ) -> Result<Response<pb::EndpointRemovedResponse>, Status> {
            Ok(Response::new(pb::EndpointRemovedResponse {}))
        }
        async fn wait_programmed(
            &self,
            r: Request<pb::WaitProgrammedRequest>,
        ) -> Result<Response<pb::WaitProgrammedResponse>, Status> {
            self.waited.lock().unwrap().push(r.into_inner().name);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Ok(Response::new(pb::WaitProgrammedResponse {
                state: pb::EndpointState::Programmed as i32,
                detail: String::new(),
            }))
        }
        async fn status(
            &self,
            _r: Request<pb::StatusRequest>,
        ) -> Result<Response<pb::StatusResponse>, Status> {
            Err(Status::unimplemented("status"))
        }
    }

    /// Serves until the returned sender is dropped.
    pub fn serve(path: &Path) -> (Felix, tokio::sync::oneshot::Sender<()>) {
        let felix = Felix::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let svc = felix.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::UnixListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(l);
                let _ = tonic::transport::Server::builder()
                    .add_service(AgentServer::new(svc))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        (felix, stop)
    }
}

#[test]
fn felixd_is_told_and_waited_for_and_its_absence_only_delays() {
    let node = Node::new();
    let socket = node.dir.path().join("felix.sock");
    let mut calico = node.calico_plugin();
    calico["felix_endpoint"] = json!(format!("unix://{}", socket.display()));
    calico["policy_setup_timeout_seconds"] = json!(1);
    let list = node.conflist("1.0.0", vec![calico]);

    // No felixd: ADD waits the timeout, then goes on.
    let p = NetNs::new("nofelix");
    let a = pod(&p, "default", "nofelix", "ctr-nofelix");
    let t = std::time::Instant::now();
    node.add(&list, &a).unwrap();
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let log = std::fs::read_to_string(node.dir.path().join("cni.log")).unwrap();
    assert!(log.contains("felixd did not come up"), "{log}");
    node.del(&list, &a).unwrap();

    // felixd there: told about the endpoint, waited for, and ADD returns once programmed.
    let (felix, stop) = fake_felix::serve(&socket);
    let q = NetNs::new("felix");
    let b = pod(&q, "default", "withfelix", "ctr-felix");
    node.add(&list, &b).unwrap();
    let added = felix.added.lock().unwrap().clone();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].0, "default");
    assert_eq!(added[0].1, "node--a-k8s-withfelix-eth0");
    assert_eq!(added[0].2["spec"]["containerID"], "ctr-felix");
    assert_eq!(
        felix.waited.lock().unwrap().clone(),
        vec!["node--a-k8s-withfelix-eth0"]
    );
    node.del(&list, &b).unwrap();
    drop(stop);
}

#[test]
fn check_notices_a_missing_default_route() {
    let node = Node::new();
    let list = node.calico_only();
    let p = NetNs::new("route");
    let a = pod(&p, "default", "route", "ctr-route");
    node.add(&list, &a).unwrap();
    node.run(|| node.runtime.check(&list, &a)).unwrap();
    p.exec("ip", &["route", "del", "default"]);
    let err = node.run(|| node.runtime.check(&list, &a)).unwrap_err();
    assert!(err.msg.contains("default route"), "{err}");
    node.del(&list, &a).unwrap();
}
