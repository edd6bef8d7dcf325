//! Faults with probes running throughout (DESIGN §6): felixd killed and restarted under a
//! policy, and etcd killed and restarted. Each probe is an established connection that
//! exchanges a message every 20 ms, or a fresh connection per round that policy allows (it
//! must get through every time) or blocks (it must never get through). A miss is recorded
//! with when it happened.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use calico_e2e::pod::PodSpec;
use calico_e2e::watch::{Check, EchoServer, Kind, Watch, report};
use calico_e2e::{Lab, eventually, options};
use calico_lab::Encap;
use calico_lab::probe::Proto;

const INTERVAL: Duration = Duration::from_millis(20);

/// Only `app=client` may reach `app=server` on TCP 8080 and UDP 8081; 9090 is closed to all.
const POLICY: &str = "
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: server-from-client-only, namespace: faults}
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
  - {action: Allow, protocol: TCP, source: {selector: app == 'client'}, destination: {ports: [8080, 7000]}}
  - {action: Allow, protocol: UDP, source: {selector: app == 'client'}, destination: {ports: [8081]}}
";

/// Pods: a client on node-a, servers on node-a (same node) and node-b (across nodes), an
/// outsider on node-c. Echo servers in every server.
fn pods(lab: &mut Lab) {
    let specs = [
        ("node-a", "faults/client", "client"),
        ("node-a", "faults/server-a", "server"),
        ("node-b", "faults/server-b", "server"),
        ("node-c", "faults/outsider", "other"),
    ]
    .iter()
    .map(|(node, key, app)| PodSpec::new(node, key).expect("a key").label("app", app))
    .collect();
    lab.add_pods(specs, 4).expect("the pods");
}

fn checks(lab: &Lab) -> Vec<Check> {
    let ns = |k: &str| lab.pod(k).ns.name().to_string();
    let to = |k: &str, port: u16| SocketAddr::new(lab.v4(k), port);
    let mut c = Vec::new();
    for server in ["faults/server-a", "faults/server-b"] {
        let s = server.trim_start_matches("faults/");
        c.push(Check {
            name: format!("client -> {s} established tcp/7000"),
            from: ns("faults/client"),
            to: to(server, 7000),
            kind: Kind::Established,
        });
        c.push(Check {
            name: format!("client -> {s} new tcp/8080"),
            from: ns("faults/client"),
            to: to(server, 8080),
            kind: Kind::Fresh {
                proto: Proto::Tcp,
                open: true,
            },
        });
        c.push(Check {
            name: format!("client -> {s} udp/8081"),
            from: ns("faults/client"),
            to: to(server, 8081),
            kind: Kind::Fresh {
                proto: Proto::Udp,
                open: true,
            },
        });
        c.push(Check {
            name: format!("outsider -> {s} tcp/8080 (blocked)"),
            from: ns("faults/outsider"),
            to: to(server, 8080),
            kind: Kind::Fresh {
                proto: Proto::Tcp,
                open: false,
            },
        });
    }
    c
}

/// The pods, the policy in force, echo servers, and a watch that starts clean.
fn setup(lab: &mut Lab) -> (Vec<calico_netns_harness::Servers>, Vec<EchoServer>) {
    pods(lab);
    lab.apply(POLICY);
    let servers: Vec<_> = ["faults/server-a", "faults/server-b"]
        .iter()
        .map(|k| calico_netns_harness::Servers::start(&lab.pod(k).ns, &[8080], &[8081]))
        .collect();
    let echo: Vec<_> = ["faults/server-a", "faults/server-b"]
        .iter()
        .map(|k| EchoServer::start(&lab.pod(k).ns, 7000).expect("an echo server"))
        .collect();
    // The policy is in force everywhere before the watch starts.
    let (client, outsider) = (lab.pod("faults/client"), lab.pod("faults/outsider"));
    eventually(Duration::from_secs(20), "the policy in force", || {
        let m = lab.matrix(
            &[client, outsider, lab.pod("faults/server-b")],
            Proto::Tcp,
            8080,
            Duration::from_millis(300),
        );
        m[0][2] && !m[1][2]
    });
    (servers, echo)
}

fn assert_clean(what: &str, seen: &[calico_e2e::watch::Seen]) {
    let r = report(seen);
    eprintln!("{what}:\n{r}");
    assert!(
        seen.iter().all(|s| s.misses.is_empty() && s.attempts > 0),
        "{what}: probes missed:\n{r}"
    );
}

#[test]
fn felixd_killed_and_restarted_loses_no_probe_and_opens_no_rule_window() {
    let mut lab = Lab::start(options(3, Encap::Vxlan));
    let _running = setup(&mut lab);
    let watch = Watch::start(checks(&lab), INTERVAL);
    std::thread::sleep(Duration::from_millis(500));
    // Both servers' nodes lose felixd: one holds a same-node server, one a remote one.
    let t = Instant::now();
    for i in [0, 1] {
        lab.cluster.nodes[i].kill_felixd();
    }
    std::thread::sleep(Duration::from_secs(1));
    for i in [0, 1] {
        lab.cluster.nodes[i].start_felixd(&[]);
    }
    let back = t.elapsed();
    // The restarted felixd has rewritten its tables by now; keep probing through that.
    std::thread::sleep(Duration::from_secs(2));
    assert_clean(
        &format!(
            "felixd SIGKILLed on node-a and node-b, restarted and ready {} ms later",
            back.as_millis()
        ),
        &watch.stop(),
    );
}

#[test]
fn etcd_killed_and_restarted_leaves_pods_talking_and_new_pods_work_once_it_is_back() {
    let mut lab = Lab::start(options(3, Encap::Vxlan));
    let _running = setup(&mut lab);
    let watch = Watch::start(checks(&lab), INTERVAL);
    std::thread::sleep(Duration::from_millis(500));
    lab.cluster.etcd.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    lab.cluster.etcd.restart();
    let was_down = down.elapsed();
    // A new pod, as soon as the datastore lets it: it gets an address and reaches a server
    // on another node (it is a client: the policy lets it in).
    let t = Instant::now();
    let mut tries = 0;
    let spec = PodSpec::new("node-c", "faults/late-client")
        .expect("a key")
        .label("app", "client");
    eventually(
        Duration::from_secs(30),
        "a new pod once etcd is back",
        || {
            tries += 1;
            lab.add_pod(spec.clone()).is_ok()
        },
    );
    let added = t.elapsed();
    let late = lab.pod("faults/late-client");
    let server = lab.pod("faults/server-b");
    eventually(
        Duration::from_secs(20),
        "the new pod reaches a server",
        || {
            lab.matrix(
                &[late, server],
                Proto::Tcp,
                8080,
                Duration::from_millis(500),
            )[0][1]
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_clean(
        &format!(
            "etcd SIGKILLed for {} ms; a new pod made {} ms after the restart ({tries} tries)",
            was_down.as_millis(),
            added.as_millis()
        ),
        &watch.stop(),
    );
}
