//! `make demo`: a three-node calico-rs cluster comes up in network namespaces on this
//! machine; an IP pool made with calicoctl; two pods per node through the real CNI plugin;
//! birdd's BGP full mesh and the routes it learned; the cross-node connectivity grid; a
//! policy taking effect; a switch to a VXLAN pool; teardown.
//!
//! Everything it makes is called `calico-demo-…` (namespaces) or lives under
//! `/run/calico-demo/`, and is removed at the end, on error, and on Ctrl-C; a run that was
//! killed outright is cleaned up by the next. It touches no interface, route, firewall rule
//! or sysctl outside the namespaces it made.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use calico_e2e::Lab;
use calico_e2e::pod::PodSpec;
use calico_lab::probe::Proto;
use calico_lab::{ClusterOptions, Naming, Node};

const NAME: &str = "calico-demo";
const PORT: u16 = 8080;
const STEPS: usize = 8;
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The pods: (node, name, app).
const PODS: [(usize, &str, &str); 6] = [
    (0, "web-1", "web"),
    (0, "db-1", "db"),
    (1, "web-2", "web"),
    (1, "api-1", "api"),
    (2, "api-2", "api"),
    (2, "db-2", "db"),
];

const POOL: &str = "\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.244.0.0/16
  blockSize: 26
  ipipMode: Never
  vxlanMode: Never
";

const POLICY: &str = "\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: db-from-api-only
  namespace: shop
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: app == 'api'
    destination:
      ports: [8080]
";

const VXLAN_POOLS: &str = "\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: vxlan-ippool
spec:
  cidr: 10.245.0.0/16
  blockSize: 26
  vxlanMode: Always
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.244.0.0/16
  blockSize: 26
  disabled: true
";

/// A section header; returns the section's start, for its timing line.
fn section(n: usize, title: &str, what: &str) -> Instant {
    println!("\n== [{n}/{STEPS}] {title} ==");
    println!("   {what}");
    Instant::now()
}

fn took(t: Instant) {
    let e = t.elapsed();
    if e < Duration::from_secs(1) {
        println!("   ({} ms)", e.as_millis());
    } else {
        println!("   ({:.1} s)", e.as_secs_f64());
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("     {l}\n")).collect()
}

/// Runs the real calicoctl inside `node`, as an operator on that node would, with `stdin`.
fn calicoctl(node: &Node, args: &[&str], stdin: Option<&str>) -> Result<(bool, String)> {
    let bin = node.bin_dir().join("calicoctl");
    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", node.etcd_endpoint())
        .env("CALICO_BIRDD_SOCKET", &node.birdd_socket)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = node.run(|| -> std::io::Result<std::process::Output> {
        let mut child = cmd.spawn()?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    });
    let out = out.with_context(|| format!("running {}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// calicoctl that must succeed; prints the command and its output.
fn calicoctl_ok(node: &Node, args: &[&str], stdin: Option<&str>) -> Result<String> {
    println!("   $ calicoctl {}", args.join(" "));
    let (ok, text) = calicoctl(node, args, stdin)?;
    print!("{}", indent(&text));
    ensure!(ok, "calicoctl {} failed", args.join(" "));
    Ok(text)
}

/// Probes until the grid matches `want` (or 30 s pass); returns the grid and the time.
fn grid_until(lab: &Lab, want: impl Fn(usize, usize) -> bool) -> Result<(String, Duration)> {
    let start = Instant::now();
    loop {
        let round = start.elapsed();
        let (grid, m) = lab.grid(Proto::Tcp, PORT, PROBE_TIMEOUT);
        let matches = (0..m.len()).all(|i| (0..m.len()).all(|j| i == j || m[i][j] == want(i, j)));
        if matches {
            return Ok((grid, round));
        }
        if start.elapsed() > Duration::from_secs(30) {
            println!("{}", indent(&grid));
            bail!("the grid did not reach the expected state within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn app(lab: &Lab, i: usize) -> &str {
    lab.pods[i]
        .labels
        .iter()
        .find(|(k, _)| k == "app")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

fn add_pods(lab: &mut Lab) -> Result<()> {
    let specs = PODS
        .iter()
        .map(|(node, name, app)| {
            Ok(PodSpec::new(&lab.node_name(*node), &format!("shop/{name}"))?.label("app", app))
        })
        .collect::<Result<Vec<_>>>()?;
    lab.add_pods(specs, 6)?;
    for p in &lab.pods {
        let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
        println!(
            "   {:<11} on {}  {:<13} namespace {}",
            p.key(),
            p.node,
            ips.join(", "),
            p.ns.name()
        );
    }
    Ok(())
}

/// 1: the cluster.
fn bring_up() -> Result<Lab> {
    let t = section(
        1,
        "Three nodes",
        "A fabric namespace with a bridge stands in for the network; each node is a namespace on it running ipamd and felixd; etcd runs in the fabric.",
    );
    let mut o = ClusterOptions::new(3, &calico_e2e::bin_dir());
    o.node.pools = Vec::new();
    o.felixd = Some(Vec::new());
    o.naming = Some(Naming::new(NAME));
    let lab = Lab::start(o);
    let c = &lab.cluster;
    println!(
        "   fabric {} (bridge br0, 10.99.0.254/24), etcd at {}",
        c.fabric.name(),
        c.etcd.public_endpoint()
    );
    for n in &c.nodes {
        let p = n.pids();
        println!(
            "   {}  {:<10} namespace {:<20} ipamd pid {}, felixd pid {} (ready)",
            n.name,
            n.v4,
            n.ns.name(),
            p.ipamd.unwrap_or_default(),
            p.felixd.unwrap_or_default()
        );
    }
    took(t);
    Ok(lab)
}

/// 2: the pool, with calicoctl.
fn create_pool(lab: &Lab) -> Result<()> {
    let t = section(
        2,
        "An IP pool, made with calicoctl",
        "Pods get addresses from it, in /26 blocks that each node claims as it needs them.",
    );
    let node = &lab.cluster.nodes[0];
    print!("{}", indent(POOL));
    calicoctl_ok(node, &["apply", "-f", "-"], Some(POOL))?;
    calicoctl_ok(node, &["get", "ippools", "-o", "wide"], None)?;
    took(t);
    Ok(())
}

/// 3: the pods.
fn start_pods(lab: &mut Lab) -> Result<()> {
    let t = section(
        3,
        "Two pods per node",
        "Each pod is a namespace wired by the real calico CNI binary, run as containerd runs it; labels app=web|api|db.",
    );
    add_pods(lab)?;
    took(t);
    Ok(())
}

/// Fails with birdd's own words.
fn birdd_failure(lab: &Lab, what: &str) -> anyhow::Error {
    let mut msg = format!("BGP step failed: {what}\n");
    for n in &lab.cluster.nodes {
        msg.push_str(&format!(
            "--- last lines of {} ({}):\n{}\n",
            n.birdd_log().display(),
            n.name,
            n.birdd_log_tail(20)
        ));
    }
    anyhow::anyhow!(msg)
}

/// 4: birdd, the mesh, the routes it learned.
fn bgp(lab: &mut Lab) -> Result<()> {
    let t = section(
        4,
        "BGP: birdd on every node, in a full mesh",
        "Each node's birdd advertises the blocks its pods use and installs what it learns (proto bird).",
    );
    for n in &mut lab.cluster.nodes {
        if let Err(e) = n.try_start_birdd() {
            return Err(birdd_failure(lab, &format!("birdd did not start: {e}")));
        }
    }
    let node = &lab.cluster.nodes[0];
    let others: Vec<String> = lab.cluster.nodes[1..]
        .iter()
        .map(|n| n.v4.to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, text) = calicoctl(node, &["node", "status"], None)?;
        let up = others.iter().all(|a| {
            text.lines()
                .any(|l| l.contains(a.as_str()) && l.contains("Established"))
        });
        if up {
            break text;
        }
        if Instant::now() > deadline {
            print!("{}", indent(&text));
            return Err(birdd_failure(
                lab,
                "the mesh did not reach Established within 30 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("   $ calicoctl node status   (on {})", node.name);
    print!("{}", indent(&status));
    // Every other node's blocks, learned over BGP.
    let remote: Vec<String> = lab
        .pods
        .iter()
        .filter(|p| p.node != node.name)
        .filter_map(|p| p.v4())
        .filter_map(|ip| ipnet::Ipv4Net::new(ip_v4(ip)?, 26).ok())
        .map(|n| n.trunc().to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !{
        let learned = node.bird_routes();
        remote
            .iter()
            .all(|b| learned.iter().any(|r| r.starts_with(b.as_str())))
    } {
        if Instant::now() > deadline {
            print!("{}", indent(&node.routes()));
            return Err(birdd_failure(
                lab,
                &format!(
                    "{} did not learn routes to {}",
                    node.name,
                    remote.join(", ")
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "   $ ip route   (on {}; proto bird = learned over BGP)",
        node.name
    );
    print!("{}", indent(&node.routes()));
    took(t);
    Ok(())
}

fn ip_v4(ip: std::net::IpAddr) -> Option<std::net::Ipv4Addr> {
    match ip {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(_) => None,
    }
}

/// 5: the grid in native routing.
fn connectivity(lab: &Lab) -> Result<()> {
    let t = section(
        5,
        "Cross-node connectivity",
        "Every pod connects to every other on TCP 8080: rows are clients, columns servers, '.' connected, 'X' blocked.",
    );
    let (grid, _) = grid_until(lab, |_, _| true)?;
    print!("{}", indent(&grid));
    took(t);
    Ok(())
}

/// 6: the policy and the grid with its denied cells.
fn policy(lab: &Lab) -> Result<()> {
    let t = section(
        6,
        "A policy: db admits only api",
        "Applied with calicoctl; every felixd turns it into iptables rules for the db pods on its node.",
    );
    print!("{}", indent(POLICY));
    calicoctl_ok(&lab.cluster.nodes[0], &["apply", "-f", "-"], Some(POLICY))?;
    let (grid, after) = grid_until(lab, |i, j| app(lab, j) != "db" || app(lab, i) == "api")?;
    print!("{}", indent(&grid));
    println!(
        "   in force on every node {} ms after the apply (rounds of probes, {} ms timeout each)",
        after.as_millis(),
        PROBE_TIMEOUT.as_millis()
    );
    took(t);
    Ok(())
}

/// 7: a VXLAN pool instead.
fn vxlan(lab: &mut Lab) -> Result<()> {
    let t = section(
        7,
        "Switching to a VXLAN pool",
        "A new pool with vxlanMode Always, the old one disabled, the pods made again: felixd builds the tunnels and routes.",
    );
    print!("{}", indent(VXLAN_POOLS));
    calicoctl_ok(
        &lab.cluster.nodes[0],
        &["apply", "-f", "-"],
        Some(VXLAN_POOLS),
    )?;
    let keys: Vec<String> = lab.pods.iter().map(|p| p.key()).collect();
    lab.del_pods(&keys, 6)?;
    add_pods(lab)?;
    let _servers = lab.serve(&[PORT], &[]);
    let node = &lab.cluster.nodes[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.routes().contains("dev vxlan.calico") {
        ensure!(
            Instant::now() < deadline,
            "{} has no VXLAN routes after 30 s:\n{}",
            node.name,
            node.routes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "   $ ip route   (on {}; vxlan.calico = through the tunnel)",
        node.name
    );
    print!("{}", indent(&node.routes()));
    let (grid, after) = grid_until(lab, |i, j| app(lab, j) != "db" || app(lab, i) == "api")?;
    println!(
        "   the same grid through the tunnels, the policy following the pods' labels ({} ms):",
        after.as_millis()
    );
    print!("{}", indent(&grid));
    took(t);
    Ok(())
}

fn demo() -> Result<()> {
    let mut lab = bring_up()?;
    create_pool(&lab)?;
    start_pods(&mut lab)?;
    let servers = lab.serve(&[PORT], &[]);
    bgp(&mut lab)?;
    connectivity(&lab)?;
    policy(&lab)?;
    drop(servers);
    vxlan(&mut lab)?;
    let t = section(
        8,
        "Teardown",
        "Pods, daemons, etcd and every namespace removed.",
    );
    drop(lab);
    let left = calico_lab::namespaces_with_prefix(&format!("{NAME}-"));
    ensure!(
        left.is_empty(),
        "namespaces left behind: {}",
        left.join(", ")
    );
    took(t);
    Ok(())
}

fn main() -> std::process::ExitCode {
    if !running_as_root() {
        eprintln!(
            "demo: making network namespaces, veths and routes needs root: run `make demo`, which uses sudo, or `sudo ./target/debug/demo` (everything stays inside namespaces the demo creates and removes)"
        );
        return std::process::ExitCode::FAILURE;
    }
    let started = Instant::now();
    let naming = Naming::new(NAME);
    {
        let naming = naming.clone();
        std::thread::spawn(move || {
            let sig = calico_lab::wait_for_interrupt();
            eprintln!("\ndemo: {sig}: tearing down");
            // The main thread stops at its next line of output.
            let _out = std::io::stdout().lock();
            calico_lab::halt();
            calico_lab::remove(&naming);
            std::process::exit(130);
        });
    }
    println!(
        "calico-rs demo: a 3-node cluster in network namespaces on this machine (nothing outside them is touched)."
    );
    if !calico_lab::namespaces_with_prefix(&naming.prefix).is_empty() {
        let r = calico_lab::remove(&naming);
        println!(
            "   removed what an earlier, interrupted demo left: {}",
            r.namespaces.join(", ")
        );
    }
    let outcome = std::panic::catch_unwind(demo);
    // Whatever happened, nothing stays.
    calico_lab::remove(&naming);
    match outcome {
        Ok(Ok(())) => {
            println!(
                "\nDemo done in {:.1} s; nothing left behind.",
                started.elapsed().as_secs_f64()
            );
            std::process::ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!(
                "\ndemo FAILED after {:.1} s: {e:#}",
                started.elapsed().as_secs_f64()
            );
            eprintln!("Everything it made was removed.");
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "\ndemo FAILED after {:.1} s (see the message above); everything it made was removed.",
                started.elapsed().as_secs_f64()
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// The effective uid is 0 (read from /proc, which needs no unsafe call).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}
