//! `make bench-felix`: felixd at scale on a lab node, beside the raw cost of the same kernel
//! state measured in the same run.
//!
//! (a) full programming of 1,000 policies selecting among 1,000 local endpoints (veth pairs
//!     standing in for pods), against `ipset restore` + `iptables-restore` (and `nft -f`) of
//!     exactly the rules felixd wrote, replayed into a fresh namespace;
//! (b) one policy or label change reaching the kernel, observed by real traffic between two
//!     pods wired by the CNI plugin (p50/p99 over many changes);
//! (c) felixd's resident memory idle and at that scale;
//! (d) TCP throughput between the two pods with the 1,000 policies loaded, against none.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use calico_api::codec::decode_documents;
use calico_bench::{Run, Table, ms, rss_bytes};
use calico_cni::runtime::{Attachment, ConfList, Runtime};
use calico_lab::{Node, NodeOptions};
use calico_netns_harness::{NetNs, Servers, tcp_connects};
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "felixd at scale beside the raw cost of the same kernel state")]
struct Args {
    /// Policies (spread over 10 namespaces).
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// Local endpoints (veth pairs standing in for pods).
    #[arg(long, default_value_t = 1000)]
    endpoints: usize,
    /// Changes timed for (b), half policy edits and half label changes.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Seconds of each TCP stream of a throughput measurement.
    #[arg(long, default_value_t = 2)]
    stream_seconds: u64,
    /// Streams per throughput measurement; the best counts (on a shared machine, other
    /// work only ever takes throughput away).
    #[arg(long, default_value_t = 3)]
    streams: usize,
    /// Where felixd, calico, calico-ipam and ipamd are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

const NAMESPACES: usize = 10;
/// Apps per namespace: each policy selects one app in its namespace.
const APPS: usize = 10;

fn apply_yaml(node: &Node, yaml: String) -> Result<()> {
    node.with_datastore(async move |rc| {
        for r in decode_documents(&yaml)? {
            rc.apply_any(r).await?;
        }
        anyhow::Ok(())
    })
}

fn namespace_profiles() -> String {
    (0..NAMESPACES)
        .map(|n| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: kns.ns{n}}}\nspec:\n  ingress: [{{action: Allow}}]\n  egress: [{{action: Allow}}]\n  labelsToApply: {{pcns.projectcalico.org/name: ns{n}, pcns.team: t{}}}\n",
                n % 3
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Endpoint `i`: namespace ns<i%10>, app app-<(i/10)%10>, role r<i%5>, on its own veth.
fn endpoint_yaml(node: &str, i: usize) -> String {
    let ns = i % NAMESPACES;
    let ip = format!("10.240.{}.{}", i / 250, i % 250 + 1);
    // Calico doubles dashes of the node name in endpoint names.
    let wep_node = node.replace('-', "--");
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {wep_node}-k8s-p{i}-eth0\n  namespace: ns{ns}\n  labels: {{app: app-{}, role: r{}, projectcalico.org/namespace: ns{ns}, projectcalico.org/orchestrator: k8s}}\nspec:\n  orchestrator: k8s\n  node: {node}\n  pod: p{i}\n  endpoint: eth0\n  interfaceName: {}\n  ipNetworks: [\"{ip}/32\"]\n  profiles: [kns.ns{ns}]\n  ports: [{{name: http, protocol: TCP, port: 8080}}]\n",
        (i / NAMESPACES) % APPS,
        i % 5,
        veth(i)
    )
}

fn veth(i: usize) -> String {
    format!("cali{i:011x}")
}

/// Policy `j`: in ns<j%10>, selects app-<(j/10)%10> (so each policy selects 10 of the 1,000
/// endpoints, and each endpoint is selected by 10 policies); allows a role on one port, a named port from
/// a team of namespaces, and a CIDR; denies the rest of one port range.
fn policy_yaml(j: usize) -> String {
    let ns = j % NAMESPACES;
    format!(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: pol-{j}, namespace: ns{ns}}}\nspec:\n  order: {}\n  selector: app == 'app-{}'\n  types: [Ingress, Egress]\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {{selector: role == 'r{}'}}\n    destination: {{ports: [{}]}}\n  - action: Allow\n    protocol: TCP\n    source: {{namespaceSelector: team == 't{}'}}\n    destination: {{ports: [http]}}\n  - action: Allow\n    source: {{nets: [192.168.{}.0/24]}}\n  - action: Deny\n    protocol: UDP\n    destination: {{ports: ['1000:2000']}}\n  egress:\n  - action: Allow\n",
        j % 7,
        (j / NAMESPACES) % APPS,
        j % 5,
        8000 + j % 100,
        j % 3,
        j % 250
    )
}

/// The two real pods used for latency and throughput.
struct Pods {
    client: NetNs,
    server: NetNs,
    server_ip: IpAddr,
    list: ConfList,
    attachments: Vec<Attachment>,
}

fn wire_pods(node: &Node, rt: &Runtime) -> Result<Pods> {
    let mut plugin = node.calico_plugin();
    plugin["ipam"]["assign_ipv6"] = json!("false");
    let list = ConfList::parse(
        &json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [plugin]}),
    )
    .map_err(anyhow::Error::msg)?;
    let mut ips = Vec::new();
    let mut nss = Vec::new();
    let mut attachments = Vec::new();
    for name in ["client", "server"] {
        let ns = NetNs::new(name);
        let a = Attachment {
            container_id: format!("bench-{name}"),
            netns: Some(ns.path().to_path_buf()),
            ifname: "eth0".into(),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), "bench".into()),
                ("K8S_POD_NAME".into(), name.into()),
            ],
            capability_args: Default::default(),
        };
        let r = node.run(|| rt.add(&list, &a))?;
        let ip: IpAddr = r["ips"][0]["address"]
            .as_str()
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .context("no pod address")?;
        ips.push(ip);
        nss.push(ns);
        attachments.push(a);
    }
    let server = nss.pop().context("server")?;
    let client = nss.pop().context("client")?;
    Ok(Pods {
        client,
        server,
        server_ip: ips[1],
        list,
        attachments,
    })
}

/// The best of `runs` streams, in bytes per second.
fn best_throughput(p: &Pods, secs: u64, runs: usize) -> Result<f64> {
    let mut best = 0f64;
    for _ in 0..runs.max(1) {
        best = best.max(throughput(p, secs)?);
    }
    Ok(best)
}

/// Bytes per second of one TCP stream from the client pod to the server pod.
fn throughput(p: &Pods, secs: u64) -> Result<f64> {
    let listener = p
        .server
        .run(|| TcpListener::bind(SocketAddr::new(p.server_ip, 5201)))?;
    std::thread::scope(|s| {
        let rx = s.spawn(move || -> std::io::Result<u64> {
            let (mut c, _) = listener.accept()?;
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                match c.read(&mut buf)? {
                    0 => return Ok(total),
                    n => total += n as u64,
                }
            }
        });
        let started = Instant::now();
        let sent = p.client.run(|| -> std::io::Result<()> {
            let mut c = TcpStream::connect(SocketAddr::new(p.server_ip, 5201))?;
            let buf = vec![7u8; 1 << 16];
            while started.elapsed() < Duration::from_secs(secs) {
                c.write_all(&buf)?;
            }
            Ok(())
        });
        sent?;
        let total = rx
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        Ok(total as f64 / started.elapsed().as_secs_f64())
    })
}

/// Sets labels on the WorkloadEndpoint of pod `pod` in namespace `bench`.
fn relabel(node: &Node, pod: &str, labels: &[(&str, &str)]) -> Result<()> {
    let pod = pod.to_string();
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    node.with_datastore(async move |rc| {
        let list = rc
            .list::<calico_api::resource::WorkloadEndpoint>(Some("bench"))
            .await?;
        let mut w = list
            .items
            .into_iter()
            .find(|w| w.spec.pod == pod)
            .context("the pod's WorkloadEndpoint")?;
        w.metadata.labels.extend(labels);
        rc.update(w).await?;
        anyhow::Ok(())
    })
}

fn felix_metric(node: &Node, name: &str) -> Option<f64> {
    let (_, body) = node.felixd_get("/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn felix_pid(node: &Node) -> Result<u32> {
    node.felixd
        .as_ref()
        .map(|c| c.id())
        .context("felixd is not running")
}

/// Times replaying `save` (iptables-save output, `ipset save` output, or an nft ruleset)
/// into a fresh namespace: the raw kernel cost of the state felixd programmed.
fn raw_restore(ipsets: &str, tables: &[(String, String)], nft: Option<&str>) -> Result<Duration> {
    let ns = NetNs::new("raw");
    let started = Instant::now();
    ns.run(|| -> Result<()> {
        use std::process::{Command, Stdio};
        let feed = |prog: &str, args: &[&str], input: &str| -> Result<()> {
            let mut c = Command::new(prog)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            c.stdin
                .take()
                .context("stdin")?
                .write_all(input.as_bytes())?;
            let out = c.wait_with_output()?;
            if !out.status.success() {
                bail!("{prog} failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        if let Some(rules) = nft {
            feed("nft", &["-f", "-"], rules)?;
        } else {
            feed("ipset", &["restore"], ipsets)?;
            for (tool, input) in tables {
                feed(tool, &["--noflush"], input)?;
            }
        }
        Ok(())
    })?;
    Ok(started.elapsed())
}

struct Measured {
    programming: Duration,
    start_to_ready: Duration,
    raw: Duration,
    rss_scale: u64,
}

/// What the kernel holds after felixd programmed it: `ipset save` output, (restore tool,
/// iptables-save output) per family, and the nft ruleset when nftables is in use.
type SavedState = (String, Vec<(String, String)>, Option<String>);

fn save_state(node: &Node, nft: bool) -> Result<SavedState> {
    let out = |prog: &str, args: &[&str]| -> String {
        String::from_utf8_lossy(&node.ns.exec(prog, args).stdout).into_owned()
    };
    if nft {
        let mut rules = out("nft", &["list", "table", "ip", "calico"]);
        rules.push('\n');
        rules.push_str(&out("nft", &["list", "table", "ip6", "calico"]));
        return Ok((String::new(), Vec::new(), Some(rules)));
    }
    let ipsets = out("ipset", &["save"]);
    // Counters stripped so the replay is a plain restore.
    let strip = |s: String| -> String {
        s.lines()
            .map(|l| {
                if l.starts_with(':') {
                    l.split(" [").next().unwrap_or(l).to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let tables = vec![
        (
            "iptables-nft-restore".to_string(),
            strip(out("iptables-nft-save", &[])),
        ),
        (
            "ip6tables-nft-restore".to_string(),
            strip(out("ip6tables-nft-save", &[])),
        ),
    ];
    Ok((ipsets, tables, None))
}

/// Starts felixd on the loaded node and measures its full programming.
fn measure_programming(node: &mut Node, env: &[(&str, &str)], nft: bool) -> Result<Measured> {
    node.stop_felixd();
    // A node whose kernel has none of it yet: felixd programs everything from scratch.
    node.ns.exec("nft", &["flush", "ruleset"]);
    node.ns.exec("ipset", &["destroy"]);
    let t = Instant::now();
    node.start_felixd(env);
    let start_to_ready = t.elapsed();
    let programming = Duration::from_secs_f64(
        felix_metric(node, "felixd_first_programming_seconds").context("no programming metric")?,
    );
    let rss_scale = rss_bytes(felix_pid(node)?)?;
    // What felixd says it spent its time on.
    let log = std::fs::read_to_string(node.dir.path().join("felixd.log")).unwrap_or_default();
    let tail: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("rendered the whole")
                || l.contains("(slow)")
                || l.contains("calculated and rendered")
                || l.contains("programmed for the first time")
                || l.contains("in sync with")
        })
        .collect();
    for l in tail.iter().rev().take(6).rev() {
        eprintln!("  felixd: {l}");
    }
    let (ipsets, tables, rules) = save_state(node, nft)?;
    if let Some(dir) = std::env::var_os("BENCH_FELIX_DUMP") {
        // For looking into the raw cost by hand.
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("ipsets"), &ipsets)?;
        for (tool, input) in &tables {
            std::fs::write(dir.join(tool), input)?;
        }
        if let Some(r) = &rules {
            std::fs::write(dir.join("nft"), r)?;
        }
    }
    let raw = raw_restore(&ipsets, &tables, rules.as_deref())?;
    Ok(Measured {
        programming,
        start_to_ready,
        raw,
        rss_scale,
    })
}

/// Times policy edits and label changes until real traffic shows them.
fn change_latency(node: &Node, p: &Pods, n: usize) -> Result<Run> {
    let probe = || tcp_connects(&p.client, p.server_ip, 80, Duration::from_millis(5));
    let wait = |want: bool| -> Result<Duration> {
        let t = Instant::now();
        while probe() != want {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("traffic did not follow a change within 10 s");
            }
        }
        Ok(t.elapsed())
    };
    let mut latencies = Vec::new();
    let started = Instant::now();

    for i in 0..n {
        let open = i % 2 == 1;
        let t0 = Instant::now();
        if i % 4 < 2 {
            // A policy edit: the server admits the client's role, or nobody.
            let src = if open {
                "role == 'bench-client'"
            } else {
                "role == 'nobody'"
            };
            apply_yaml(
                node,
                format!(
                    "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: bench-server, namespace: bench}}\nspec:\n  selector: app == 'bench-server'\n  ingress: [{{action: Allow, protocol: TCP, source: {{selector: \"{src}\"}}}}]\n"
                ),
            )?;
        } else {
            // A label change on the client (an IP set member in or out).
            let role = if open { "bench-client" } else { "other" };
            relabel(node, "client", &[("role", role)])?;
        }
        let write = t0.elapsed();
        let seen = wait(open)?;
        latencies.push(write + seen);
    }
    Ok(Run::new(latencies, started.elapsed()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin_dir = calico_bench::binaries_dir(
        args.bin_dir.clone(),
        &["felixd", "calico", "calico-ipam", "ipamd"],
        "cargo build --release -p felixd -p calico-cni -p calico-ipam",
    )?;
    let mut node = Node::start(NodeOptions::new(&bin_dir));
    let rt = Runtime::new(
        vec![bin_dir.clone(), "/usr/lib/cni".into()],
        &node.dir.path().join("results"),
    );
    apply_yaml(
        &node,
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.bench}\nspec:\n  ingress: [{action: Allow}]\n  egress: [{action: Allow}]\n  labelsToApply: {pcns.projectcalico.org/name: bench}\n".into(),
    )?;

    // Idle felixd, two pods, no policy: memory and the throughput baseline.
    node.start_felixd(&[]);
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = rss_bytes(felix_pid(&node)?)?;
    let pods = wire_pods(&node, &rt)?;
    let _servers = Servers::start(&pods.server, &[80], &[]);
    // Label the pods for the change-latency policies.
    relabel(
        &node,
        "client",
        &[("app", "bench-client"), ("role", "bench-client")],
    )?;
    relabel(
        &node,
        "server",
        &[("app", "bench-server"), ("role", "server")],
    )?;
    let tput_none = best_throughput(&pods, args.stream_seconds, args.streams)?;

    // The scale: veths, endpoints, profiles, policies.
    let t = Instant::now();
    let batch: String = (0..args.endpoints)
        .map(|i| {
            format!(
                "link add {} type veth peer name b{i:011x}\nlink set {} up\n",
                veth(i),
                veth(i)
            )
        })
        .collect();
    std::fs::write(node.dir.path().join("veths.batch"), batch)?;
    node.ns.exec(
        "ip",
        &[
            "-batch",
            &node.dir.path().join("veths.batch").display().to_string(),
        ],
    );
    apply_yaml(&node, namespace_profiles())?;
    let eps: Vec<String> = (0..args.endpoints)
        .map(|i| endpoint_yaml(&node.name, i))
        .collect();
    for chunk in eps.chunks(100) {
        apply_yaml(&node, chunk.join("---\n"))?;
    }
    let pols: Vec<String> = (0..args.policies).map(policy_yaml).collect();
    for chunk in pols.chunks(100) {
        apply_yaml(&node, chunk.join("---\n"))?;
    }
    eprintln!(
        "loaded {} endpoints and {} policies in {:.1?}",
        args.endpoints,
        args.policies,
        t.elapsed()
    );

    // (a) and (c): full programming from a restart, iptables then nftables.
    let ipt = measure_programming(&mut node, &[], false)?;
    let tput_loaded = best_throughput(&pods, args.stream_seconds, args.streams)?;
    // (b): changes at scale.
    let lat = change_latency(&node, &pods, args.changes)?;
    let rss_after = rss_bytes(felix_pid(&node)?)?;
    let nft = measure_programming(&mut node, &[("FELIX_NFTABLESMODE", "Enabled")], true)?;
    let lat_nft = change_latency(&node, &pods, args.changes)?;
    if let Some(dir) = std::env::var_os("BENCH_FELIX_DUMP") {
        // felixd's own account of each change (phases at debug level).
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(
            node.dir.path().join("felixd.log"),
            PathBuf::from(dir).join("felixd.log"),
        )?;
    }

    for a in &pods.attachments {
        node.run(|| rt.del(&pods.list, a))?;
    }

    let mb = |b: u64| format!("{:.1}", b as f64 / 1e6);
    let mut t = Table::new(&["measure", "felixd", "reference", "ratio", "target"]);
    let target = |ok: bool| if ok { "met" } else { "MISSED" };
    for (label, m) in [("iptables", &ipt), ("nftables", &nft)] {
        let ratio = m.programming.as_secs_f64() / m.raw.as_secs_f64();
        t.row(vec![
            format!(
                "(a) program {} policies x {} endpoints, {label}",
                args.policies, args.endpoints
            ),
            format!("{} ms", ms(m.programming)),
            format!("{} ms raw restore", ms(m.raw)),
            format!("{ratio:.2}x"),
            format!("<= 1.5x: {}", target(ratio <= 1.5)),
        ]);
        t.row(vec![
            format!("    start to ready, {label}"),
            format!("{} ms", ms(m.start_to_ready)),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    for (label, run) in [("iptables", &lat), ("nftables", &lat_nft)] {
        t.row(vec![
            format!("(b) change to kernel, {label} ({} changes)", run.ops()),
            format!(
                "p50 {} / p99 {} ms",
                ms(run.quantile(0.5)),
                ms(run.quantile(0.99))
            ),
            String::new(),
            String::new(),
            format!(
                "p99 < 100 ms: {}",
                target(run.quantile(0.99) < Duration::from_millis(100))
            ),
        ]);
    }
    let peak = ipt.rss_scale.max(rss_after).max(nft.rss_scale);
    eprintln!(
        "felixd RSS: {} MB after programming iptables, {} MB after the iptables changes, {} MB after programming nftables",
        mb(ipt.rss_scale),
        mb(rss_after),
        mb(nft.rss_scale)
    );
    t.row(vec![
        "(c) felixd RSS at scale".into(),
        format!("{} MB", mb(peak)),
        String::new(),
        String::new(),
        format!("< 150 MB: {}", target(peak < 150_000_000)),
    ]);
    t.row(vec![
        "    felixd RSS idle".into(),
        format!("{} MB", mb(rss_idle)),
        String::new(),
        String::new(),
        format!("< 30 MB: {}", target(rss_idle < 30_000_000)),
    ]);
    let tr = tput_loaded / tput_none;
    t.row(vec![
        "(d) pod-to-pod TCP with the policies".into(),
        format!("{:.2} Gbit/s", tput_loaded * 8.0 / 1e9),
        format!("{:.2} Gbit/s without", tput_none * 8.0 / 1e9),
        format!("{tr:.2}x"),
        format!(">= 0.9x: {}", target(tr >= 0.9)),
    ]);
    println!(
        "\nfelixd benchmark: {} policies over {} local endpoints on one lab node (release builds from {})\n",
        args.policies,
        args.endpoints,
        bin_dir.display()
    );
    print!("{}", t.render());
    Ok(())
}
