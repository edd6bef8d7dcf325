//! birdd's kernel route writer against a real kernel: a fresh namespace per test with a veth
//! pair into a second namespace (10.77.0.1/24 and fd77::1/64 here, the peer at .2 / ::2),
//! routes checked with `ip route show proto bird`. Needs root; touches no route of the host.

use std::future::Future;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use birdd::kernel::{self, KernelConfig, KernelHandle, NextHop};
use calico_netns_harness::{NetNs, run_cmd};
use ipnet::IpNet;

/// A node namespace with `v0` (10.77.0.1/24, fd77::1/64) and a peer namespace on the other
/// end (10.77.0.2/24, fd77::2/64).
struct Lab {
    node: NetNs,
    _peer: NetNs,
}

fn lab(tag: &str) -> Lab {
    let node = NetNs::new(tag);
    let peer = NetNs::new("peer");
    let ip = |ns: &NetNs, args: &[&str]| {
        ns.exec("ip", args);
    };
    ip(
        &node,
        &[
            "link",
            "add",
            "v0",
            "type",
            "veth",
            "peer",
            "name",
            "v1",
            "netns",
            peer.name(),
        ],
    );
    ip(&node, &["addr", "add", "10.77.0.1/24", "dev", "v0"]);
    ip(&node, &["addr", "add", "fd77::1/64", "dev", "v0", "nodad"]);
    ip(&node, &["link", "set", "v0", "up"]);
    ip(&peer, &["addr", "add", "10.77.0.2/24", "dev", "v1"]);
    ip(&peer, &["addr", "add", "fd77::2/64", "dev", "v1", "nodad"]);
    ip(&peer, &["link", "set", "v1", "up"]);
    Lab { node, _peer: peer }
}

/// Runs `body` on a current-thread runtime on a thread inside `ns`.
fn in_ns<F: Future<Output = ()>>(ns: &NetNs, body: impl FnOnce() -> F + Send) {
    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(body());
    });
}

/// `ip -n <ns> [-6] <args>`, stdout.
fn ip_out(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&run_cmd("ip", &all).stdout).into_owned()
}

/// The routes with protocol bird (continuation lines of multipath routes folded in).
fn bird_routes(ns: &str, v6: bool) -> Vec<String> {
    let family = if v6 { "-6" } else { "-4" };
    let out = ip_out(ns, &[family, "route", "show", "proto", "bird"]);
    let mut routes: Vec<String> = Vec::new();
    for line in out.lines() {
        match routes.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => routes.push(line.trim().to_string()),
        }
    }
    routes
}

fn v4(i: u32) -> IpNet {
    format!("10.100.{i}.0/24").parse().expect("prefix")
}

fn v6(i: u32) -> IpNet {
    format!("fd00:100:{i}::/48").parse().expect("prefix")
}

fn gw(s: &str) -> NextHop {
    NextHop::via(s.parse::<IpAddr>().expect("address"))
}

fn start() -> (KernelHandle, tokio::task::JoinHandle<()>) {
    kernel::spawn(KernelConfig::default()).expect("the writer starts")
}

async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not so after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn learned_routes_are_installed_in_one_batch_replaced_without_a_gap_and_withdrawn() {
    let lab = lab("krt");
    let ns = lab.node.name().to_string();
    in_ns(&lab.node, || async move {
        let (k, _task) = start();
        k.flush().await.expect("initial dump");
        assert_eq!(k.installed(), 0);

        // Only the latest wish per prefix reaches the kernel.
        k.set(v4(0), vec![gw("10.77.0.3")]);
        for i in 0..200 {
            k.set(v4(i), vec![gw("10.77.0.2")]);
        }
        for i in 0..20 {
            k.set(v6(i), vec![gw("fd77::2")]);
        }
        k.flush().await.expect("flushed");
        let st = k.stats();
        assert_eq!(
            (st.installed, st.failed, st.applied, st.batches),
            (220, 0, 220, 1),
            "{st:?}"
        );
        let routes = bird_routes(&ns, false);
        assert_eq!(routes.len(), 200);
        assert!(routes.contains(&"10.100.0.0/24 via 10.77.0.2 dev v0".to_string()));
        assert!(routes.contains(&"10.100.199.0/24 via 10.77.0.2 dev v0".to_string()));
        let routes6 = bird_routes(&ns, true);
        assert_eq!(routes6.len(), 20);
        assert!(
            routes6
                .iter()
                .any(|r| r.starts_with("fd00:100:7::/48 via fd77::2 dev v0 metric 1024")),
            "{routes6:?}"
        );

        // A next-hop change is a replace: the kernel never announces the route deleted.
        let mut monitor = Command::new("ip")
            .args(["-n", &ns, "monitor", "route"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip monitor");
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..10 {
            k.set(v4(i), vec![gw("10.77.0.3")]);
        }
        k.flush().await.expect("flushed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        monitor.kill().expect("stopping ip monitor");
        let seen = monitor.wait_with_output().expect("ip monitor output");
        let seen = String::from_utf8_lossy(&seen.stdout);
        assert!(seen.contains("10.100.9.0/24 via 10.77.0.3"), "{seen}");
        assert!(!seen.contains("Deleted"), "{seen}");
        let routes = bird_routes(&ns, false);
        assert_eq!(routes.len(), 200);
        assert!(routes.contains(&"10.100.3.0/24 via 10.77.0.3 dev v0".to_string()));

        // ECMP (merge paths) in both families, and an on-link next hop off every subnet.
        let ecmp4: IpNet = "10.150.0.0/24".parse().expect("prefix");
        let ecmp6: IpNet = "fd00:150::/48".parse().expect("prefix");
        let onlink: IpNet = "10.160.0.0/24".parse().expect("prefix");
        k.set(ecmp4, vec![gw("10.77.0.3"), gw("10.77.0.2")]);
        k.set(ecmp6, vec![gw("fd77::2"), gw("fd77::3")]);
        k.set(
            onlink,
            vec![NextHop::onlink("10.99.0.1".parse().expect("ip"), "v0")],
        );
        k.flush().await.expect("flushed");
        assert_eq!(k.stats().failed, 0, "{:?}", k.stats());
        let r = ip_out(&ns, &["route", "show", "10.150.0.0/24"]);
        assert!(
            r.contains("proto bird")
                && r.contains("nexthop via 10.77.0.2 dev v0")
                && r.contains("nexthop via 10.77.0.3 dev v0"),
            "{r}"
        );
        let r = ip_out(&ns, &["-6", "route", "show", "fd00:150::/48"]);
        assert!(
            r.contains("nexthop via fd77::2 dev v0") && r.contains("nexthop via fd77::3 dev v0"),
            "{r}"
        );
        let r = ip_out(&ns, &["route", "show", "10.160.0.0/24"]);
        assert!(r.contains("via 10.99.0.1 dev v0 proto bird onlink"), "{r}");

        // The dump reads back exactly what was written: a resync changes nothing.
        let before = k.stats();
        k.resync();
        k.flush().await.expect("resynced");
        let after = k.stats();
        assert_eq!(
            (after.applied, after.installed, after.errors),
            (before.applied, before.installed, before.errors),
            "{after:?}"
        );

        // Withdrawals, and ECMP back to one next hop.
        for i in 100..200 {
            k.set(v4(i), vec![]);
        }
        k.set(ecmp4, vec![gw("10.77.0.2")]);
        k.flush().await.expect("flushed");
        let routes = bird_routes(&ns, false);
        assert_eq!(routes.len(), 102, "{routes:?}");
        assert!(routes.contains(&"10.150.0.0/24 via 10.77.0.2 dev v0".to_string()));
        assert!(!routes.iter().any(|r| r.starts_with("10.100.150.0/24")));
        assert_eq!(k.installed(), 102 + 21);
    });
}

#[test]
fn routes_outlive_the_writer_and_those_not_relearned_go_at_reconcile() {
    let lab = lab("krtrestart");
    let ns = lab.node.name().to_string();
    in_ns(&lab.node, || async move {
        let (k, task) = start();
        for i in 0..50 {
            k.set(v4(i), vec![gw("10.77.0.2")]);
        }
        for i in 0..10 {
            k.set(v6(i), vec![gw("fd77::2")]);
        }
        k.flush().await.expect("flushed");
        assert_eq!(k.installed(), 60);

        // birdd dies: the routes keep forwarding (BIRD's `persist`).
        task.abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
        k.set(v4(99), vec![gw("10.77.0.2")]);
        assert!(k.flush().await.is_err(), "the old writer is gone");
        assert_eq!(bird_routes(&ns, false).len(), 50);
        assert_eq!(bird_routes(&ns, true).len(), 10);

        // A blackhole BIRD left for this node's block is ours too (same protocol).
        ip_out(
            &ns,
            &[
                "route",
                "add",
                "blackhole",
                "10.230.0.0/26",
                "proto",
                "bird",
            ],
        );

        // A new writer adopts them all without touching them.
        let (k, _task) = start();
        k.flush().await.expect("initial dump");
        assert_eq!(k.installed(), 61);
        assert_eq!(k.stats().applied, 0);

        // BGP relearns a subset: unchanged ones cost nothing, a changed one is replaced,
        // the rest stay until reconcile.
        for i in 0..20 {
            k.set(v4(i), vec![gw("10.77.0.2")]);
        }
        k.set(v4(20), vec![gw("10.77.0.3")]);
        k.flush().await.expect("flushed");
        assert_eq!(k.stats().applied, 1, "{:?}", k.stats());
        assert_eq!(bird_routes(&ns, false).len(), 51);
        assert_eq!(bird_routes(&ns, true).len(), 10);

        k.reconcile();
        k.flush().await.expect("reconciled");
        let routes = bird_routes(&ns, false);
        assert_eq!(routes.len(), 21, "{routes:?}");
        assert!(routes.contains(&"10.100.20.0/24 via 10.77.0.3 dev v0".to_string()));
        assert!(bird_routes(&ns, true).is_empty());
        assert_eq!(k.installed(), 21);

        // Drift: a route of ours deleted behind our back comes back; a stranger's route
        // with our protocol goes; a route of another protocol is left alone.
        ip_out(&ns, &["route", "del", "10.100.5.0/24", "proto", "bird"]);
        ip_out(
            &ns,
            &[
                "route",
                "add",
                "10.222.0.0/24",
                "via",
                "10.77.0.2",
                "proto",
                "bird",
            ],
        );
        ip_out(&ns, &["route", "add", "10.223.0.0/24", "via", "10.77.0.2"]);
        k.resync();
        k.flush().await.expect("resynced");
        let routes = bird_routes(&ns, false);
        assert_eq!(routes.len(), 21, "{routes:?}");
        assert!(routes.contains(&"10.100.5.0/24 via 10.77.0.2 dev v0".to_string()));
        assert!(!routes.iter().any(|r| r.starts_with("10.222.0.0/24")));

        // The clean shutdown removes ours and only ours.
        k.remove_all();
        k.flush().await.expect("removed");
        assert!(bird_routes(&ns, false).is_empty());
        assert_eq!(k.installed(), 0);
        let all = ip_out(&ns, &["route", "show"]);
        assert!(all.contains("10.223.0.0/24 via 10.77.0.2 dev v0"), "{all}");
        assert!(all.contains("10.77.0.0/24 dev v0 proto kernel"), "{all}");
    });
}

#[test]
fn a_route_that_cannot_be_installed_fails_alone_and_is_retried_until_it_can() {
    let lab = lab("krtfail");
    let ns = lab.node.name().to_string();
    in_ns(&lab.node, || async move {
        let (k, _task) = start();
        let unreachable: IpNet = "10.201.0.0/24".parse().expect("prefix");
        let no_dev: IpNet = "10.202.0.0/24".parse().expect("prefix");
        k.set(unreachable, vec![gw("10.55.0.1")]);
        k.set(
            no_dev,
            vec![NextHop::onlink("10.56.0.1".parse().expect("ip"), "late0")],
        );
        for i in 0..10 {
            k.set(v4(i), vec![gw("10.77.0.2")]);
        }
        k.flush().await.expect("flushed");
        let st = k.stats();
        assert_eq!((st.installed, st.failed), (10, 2), "{st:?}");
        assert!(st.errors >= 2, "{st:?}");
        assert_eq!(bird_routes(&ns, false).len(), 10);

        // Retried with a backoff while the gateway stays unreachable.
        let errors = st.errors;
        eventually(Duration::from_secs(2), "a retry", || {
            k.stats().errors > errors
        })
        .await;

        // The gateway's subnet and the interface appear: the retries succeed.
        ip_out(&ns, &["addr", "add", "10.55.0.2/24", "dev", "v0"]);
        ip_out(
            &ns,
            &[
                "link", "add", "late0", "type", "veth", "peer", "name", "late1",
            ],
        );
        ip_out(&ns, &["link", "set", "late0", "up"]);
        eventually(Duration::from_secs(5), "both routes installed", || {
            k.stats().failed == 0
        })
        .await;
        assert_eq!(k.installed(), 12);
        let r = ip_out(&ns, &["route", "show", "proto", "bird"]);
        assert!(r.contains("10.201.0.0/24 via 10.55.0.1 dev v0"), "{r}");
        assert!(
            r.contains("10.202.0.0/24 via 10.56.0.1 dev late0 onlink"),
            "{r}"
        );
    });
}

/// Routes go to the kernel many to a datagram, and only failures are answered one by one:
/// each failure must be pinned on its own route, in whatever datagram and position (the last
/// of a datagram included), and never on its neighbours.
#[test]
fn failures_inside_batches_are_pinned_on_their_own_routes() {
    let lab = lab("krtbatch");
    let ns = lab.node.name().to_string();
    // Someone else's route to a prefix we will be asked for: creating ours must fail (never
    // replace it), and it must stay as it is.
    ip_out(
        &ns,
        &[
            "route",
            "add",
            "10.121.44.0/24",
            "via",
            "10.77.0.9",
            "proto",
            "static",
        ],
    );
    in_ns(&lab.node, || async move {
        let (k, _task) = start();
        let prefix = |i: u32| -> IpNet {
            format!("10.{}.{}.0/24", 120 + i / 256, i % 256)
                .parse()
                .expect("prefix")
        };
        // Every request of several datagrams fails: every answer is an error, the last of
        // each datagram's too, and the wait still ends.
        for i in 0..300 {
            k.set(prefix(2000 + i), vec![gw("10.55.0.1")]);
        }
        k.flush().await.expect("flushed");
        let st = k.stats();
        assert_eq!((st.installed, st.failed), (0, 300), "{st:?}");

        let bad = |i: u32| i % 7 == 3;
        for i in 0..1000 {
            let via = if bad(i) { "10.55.0.1" } else { "10.77.0.2" };
            k.set(prefix(i), vec![gw(via)]);
        }
        k.flush().await.expect("flushed");
        let taken = prefix(256 + 44);
        let good: Vec<u32> = (0..1000)
            .filter(|&i| !bad(i) && prefix(i) != taken)
            .collect();
        let st = k.stats();
        assert_eq!(st.installed, good.len(), "{st:?}");
        assert_eq!(st.failed, 300 + (1000 - good.len()), "{st:?}");
        let mut want: Vec<String> = good
            .iter()
            .map(|&i| format!("{} via 10.77.0.2 dev v0", prefix(i)))
            .collect();
        want.sort();
        let mut have = bird_routes(&ns, false);
        have.sort();
        assert_eq!(have, want);
        let theirs = ip_out(&ns, &["route", "show", "10.121.44.0/24"]);
        assert!(
            theirs.contains("via 10.77.0.9 dev v0 proto static"),
            "{theirs}"
        );
    });
}
