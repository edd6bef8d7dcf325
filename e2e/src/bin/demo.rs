//! `make demo`: shows what calico-rs does today: the resource model and datastore on a real
//! etcd, then pods wired on a node made of network namespaces by the real CNI plugin, and a
//! policy taking effect in that node's kernel through felixd.
//!
//! Everything it starts (etcds on loopback with temporary data directories, ipamd, the
//! namespaces) is removed on exit and on error. It touches no interface, route or firewall
//! rule outside the namespaces it made.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use calico_api::codec::decode_documents;
use calico_api::kinds::{Action, ProfileSpec, Rule};
use calico_api::policy_model::{Endpoint, Model, Packet};
use calico_api::{AnyResource, Kind};
use calico_datastore::etcd::{EtcdConfig, EtcdDatastore};
use calico_datastore::syncer::{SyncEvent, SyncStatus, SyncUpdate, Syncer, SyncerConfig};
use calico_datastore::{Datastore, KeyPrefix, ResourceClient};
use calico_etcd_harness::Etcd;
use tokio::sync::mpsc;

const RESOURCES: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.244.0.0/16
  natOutgoing: true
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-dns
spec:
  order: 100
  selector: all()
  types: [Egress]
  egress:
  - action: Allow
    protocol: UDP
    destination:
      ports: [53]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-ingress
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

fn section(n: usize, title: &str) {
    println!("\n[{n}/7] {title}");
}

fn pods() -> Vec<(String, String, IpAddr)> {
    let mut v = Vec::new();
    for (ni, ns) in ["x", "y", "z"].iter().enumerate() {
        for (pi, pod) in ["a", "b", "c"].iter().enumerate() {
            let ip = Ipv4Addr::new(
                10,
                244,
                u8::try_from(ni + 1).unwrap_or(0),
                10 + u8::try_from(pi).unwrap_or(0),
            );
            v.push((ns.to_string(), pod.to_string(), IpAddr::V4(ip)));
        }
    }
    v
}

fn model_grid(policies: &[AnyResource]) -> String {
    let mut m = Model::new();
    let allow_all = ProfileSpec {
        ingress: vec![Rule {
            action: Action::Allow,
            ..Default::default()
        }],
        egress: vec![Rule {
            action: Action::Allow,
            ..Default::default()
        }],
        ..Default::default()
    };
    for ns in ["x", "y", "z"] {
        m.set_namespace(ns, BTreeMap::from([("ns".to_string(), ns.to_string())]));
        m.set_profile(&format!("kns.{ns}"), allow_all.clone());
    }
    let pods = pods();
    for (ns, pod, ip) in &pods {
        m.add_endpoint(Endpoint {
            namespace: Some(ns.clone()),
            name: pod.clone(),
            labels: BTreeMap::from([("pod".to_string(), pod.clone())]),
            ips: vec![*ip],
            profiles: vec![format!("kns.{ns}")],
            ..Default::default()
        });
    }
    for p in policies {
        match p {
            AnyResource::NetworkPolicy(np) => m.set_network_policy(np),
            AnyResource::GlobalNetworkPolicy(g) => m.set_global_network_policy(g),
            _ => {}
        }
    }
    let names: Vec<String> = pods.iter().map(|(n, p, _)| format!("{n}/{p}")).collect();
    calico_e2e::format_grid(&names, |i, j| {
        m.allows(&Packet {
            src: pods[i].2,
            dst: pods[j].2,
            protocol: 6,
            src_port: 40000,
            dst_port: 80,
        })
    })
}

async fn demo(etcd: &mut Etcd) -> Result<()> {
    let ds: Arc<dyn Datastore> =
        Arc::new(EtcdDatastore::connect(&EtcdConfig::new([etcd.endpoint()])).await?);
    let client = ResourceClient::new(ds.clone());

    section(
        2,
        "Writing Calico resources through the typed client (defaults and validation applied)",
    );
    let t = Instant::now();
    client
        .ensure_initialized("v3.30.0", "calico-rs,demo")
        .await?;
    for r in decode_documents(RESOURCES).context("demo resources decode")? {
        let stored = client.apply_any(r).await?;
        println!("  stored {} {:?}", stored.kind(), stored.metadata().name);
    }
    println!(
        "  keys now in etcd, in Calico's layout ({:.0?}):",
        t.elapsed()
    );
    for kv in ds.list(&KeyPrefix::Everything).await?.items {
        println!("    {}", kv.key.path());
    }

    section(
        3,
        "Bad input is refused with the field and the reason, and nothing is written",
    );
    let bad = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bad}\nspec: {cidr: 10.9.0.0/16, blockSize: 19}\n";
    for r in decode_documents(bad)? {
        match client.create_any(r).await {
            Err(e) => println!("  refused: {e}"),
            Ok(_) => anyhow::bail!("an invalid pool was accepted"),
        }
    }
    let typo = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: typo}\nspec:\n  cidr: 10.8.0.0/16\n  natOutgoin: true\n";
    if let Err(e) = decode_documents(typo) {
        println!("  refused: {e}");
    }
    println!(
        "  pools stored: {}",
        client.list_any(Kind::IpPool, None).await?.items.len()
    );

    section(
        4,
        "A syncer follows the datastore; etcd is killed (-9) and restarted under it",
    );
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(
        Syncer::new(
            ds.clone(),
            SyncerConfig::new(vec![KeyPrefix::kind(Kind::IpPool)]),
        )
        .run(tx),
    );
    let mut view = 0usize;
    if let Some(u) = next_updates(&mut rx).await {
        view += u.len();
        println!("  syncer: initial list delivered {} pool(s)", u.len());
    }
    let t = Instant::now();
    etcd.kill();
    println!("  etcd killed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.restart();
    println!("  etcd restarted ({:.1?} down)", t.elapsed());
    let t = Instant::now();
    let extra = decode_documents(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: second-pool}\nspec: {cidr: 10.245.0.0/16}\n",
    )?;
    for r in extra {
        let mut tries = 0;
        loop {
            match client.apply_any(r.clone()).await {
                Ok(_) => break,
                // etcd is still coming back; the client reports Unavailable meanwhile.
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let Some(u) = next_updates(&mut rx).await {
        view += u.len();
        for up in &u {
            println!(
                "  syncer: saw {} at revision {} ({:.0?} after the write was first tried)",
                up.key().path(),
                up.revision(),
                t.elapsed()
            );
        }
    }
    println!(
        "  the consumer's view holds {view} pool update(s); etcd holds {} pool(s)",
        client.list_any(Kind::IpPool, None).await?.items.len()
    );

    section(
        5,
        "What the Kubernetes policy means (reference model of Calico's semantics, TCP/80)",
    );
    let policies: Vec<AnyResource> = client.list_any(Kind::NetworkPolicy, None).await?.items;
    println!("  before (no Kubernetes policy):");
    print!("{}", indent(&model_grid(&[])));
    println!("  after knp.default.deny-ingress in namespace x (stored as a Calico NetworkPolicy):");
    print!("{}", indent(&model_grid(&policies)));
    Ok(())
}

/// Two pods wired on one node through the CNI plugin exactly as a runtime calls it, felixd
/// enforcing policy on them in the node's kernel; then DEL.
fn pods_on_a_node(bin_dir: &std::path::Path) -> Result<()> {
    use calico_cni::runtime::{Attachment, ConfList, Runtime};
    use calico_lab::{Node, NodeOptions};
    use calico_netns_harness::{NetNs, Servers, tcp_connects, tcp_reaches};
    let t = Instant::now();
    let mut node = Node::start(NodeOptions::new(bin_dir));
    println!(
        "  node {} up: namespace {}, address {}, its own etcd, ipamd on {} ({:.1?})",
        node.name,
        node.ns.name(),
        calico_lab::NODE_V4,
        node.socket.display(),
        t.elapsed()
    );
    let t = Instant::now();
    node.start_felixd(&[]);
    println!(
        "  felixd ready: in sync with etcd, iptables programmed ({:.1?})",
        t.elapsed()
    );
    // The namespace's profile, as kube-controllers writes it: Kubernetes' default allow, and
    // the namespace's labels for selectors.
    node.with_datastore(async |rc| {
        for r in decode_documents(
            r#"
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.demo}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
  labelsToApply: {pcns.projectcalico.org/name: demo}
"#,
        )? {
            rc.apply_any(r).await?;
        }
        anyhow::Ok(())
    })?;
    let runtime = Runtime::new(
        vec![bin_dir.to_path_buf(), "/usr/lib/cni".into()],
        &node.dir.path().join("results"),
    );
    let mut pods: Vec<(NetNs, Attachment, ConfList)> = Vec::new();
    for name in ["web", "db"] {
        let mut plugin = node.calico_plugin();
        // The pod's labels, as kubelet's runtime passes them; wait for felixd to program it.
        plugin["args"] = serde_json::json!({"cni": {"labels": [{"key": "app", "value": name}]}});
        plugin["policy_setup_timeout_seconds"] = serde_json::json!(10);
        let list = ConfList::parse(&serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "plugins": [plugin],
        }))
        .map_err(anyhow::Error::msg)?;
        let ns = NetNs::new(name);
        let a = Attachment {
            container_id: format!("demo-{name}"),
            netns: Some(ns.path().to_path_buf()),
            ifname: "eth0".into(),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), "demo".into()),
                ("K8S_POD_NAME".into(), name.to_string()),
            ],
            capability_args: Default::default(),
        };
        pods.push((ns, a, list));
    }
    let mut v4 = Vec::new();
    for (ns, a, list) in &pods {
        let t = Instant::now();
        let r = node.run(|| runtime.add(list, a))?;
        let ips: Vec<String> = r["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str().map(str::to_string))
            .collect();
        println!(
            "  ADD {:<4} → {} on {}, policy programmed ({:.0?})",
            ns.name().rsplit('-').next().unwrap_or_default(),
            ips.join(", "),
            r["interfaces"][0]["name"].as_str().unwrap_or_default(),
            t.elapsed()
        );
        v4.push(
            ips.iter()
                .find(|i| i.contains('.'))
                .and_then(|i| i.split('/').next())
                .and_then(|i| i.parse::<IpAddr>().ok())
                .context("no IPv4 address in the result")?,
        );
    }
    println!("  the node's routes to its pods:");
    for line in node.routes().lines().filter(|l| l.contains("cali")) {
        println!("    {line}");
    }
    let open = tcp_reaches(&pods[0].0, &pods[1].0, v4[1], 5432);
    println!(
        "  web → db:5432 over TCP: {}",
        if open { "connected" } else { "FAILED" }
    );

    section(
        7,
        "A policy taking effect: felixd programs the node's iptables",
    );
    let policy = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-api-only, namespace: demo}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{port: 5432}]
"#;
    println!(
        "  applying (db admits only app=api on 5432):{}",
        indent(policy).trim_end()
    );
    let t = Instant::now();
    node.with_datastore(async |rc| {
        for r in decode_documents(policy)? {
            rc.apply_any(r).await?;
        }
        anyhow::Ok(())
    })?;
    // db serves 5432 while web probes every few milliseconds (a 100 ms timeout each).
    let servers = Servers::start(&pods[1].0, &[5432], &[]);
    let probe = || tcp_connects(&pods[0].0, v4[1], 5432, Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut blocked = false;
    while Instant::now() < deadline {
        if !probe() {
            blocked = true;
            break;
        }
    }
    println!(
        "  web → db:5432 now: {} ({:.0?} after the write; the probe's 100 ms timeout included)",
        if blocked { "blocked" } else { "STILL OPEN" },
        t.elapsed()
    );
    let save = node.ns.exec("iptables-save", &["-t", "filter"]);
    let save = String::from_utf8_lossy(&save.stdout);
    let chains = save.lines().filter(|l| l.starts_with(":cali-")).count();
    let rules = save.lines().filter(|l| l.contains("cali:")).count();
    println!("  felixd's filter table: {chains} cali- chains, {rules} rules; the policy's chain:");
    for l in save
        .lines()
        .filter(|l| l.starts_with("-A cali-pi-") && l.contains("demo/knp.default.db-from-api-only"))
    {
        println!("    {l}");
    }
    node.with_datastore(async |rc| {
        rc.delete_any(
            Kind::NetworkPolicy,
            Some("demo"),
            "knp.default.db-from-api-only",
            None,
        )
        .await?;
        anyhow::Ok(())
    })?;
    let t = Instant::now();
    let mut reopened = false;
    while t.elapsed() < Duration::from_secs(20) {
        if probe() {
            reopened = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(servers);
    println!(
        "  policy deleted: web → db:5432 {} ({:.0?} after the delete)",
        if reopened {
            "connected again"
        } else {
            "STILL BLOCKED"
        },
        t.elapsed()
    );
    for (_, a, list) in &pods {
        node.run(|| runtime.del(list, a))?;
    }
    println!(
        "  DEL both: {} addresses allocated, {} cali interfaces left",
        node.allocations().len(),
        node.cali_links().len()
    );
    anyhow::ensure!(open, "the pods could not reach each other");
    anyhow::ensure!(blocked, "the policy did not take effect");
    anyhow::ensure!(reopened, "deleting the policy did not restore access");
    Ok(())
}

/// Waits (up to 20 s) for the next batch of updates, printing status changes on the way.
async fn next_updates(rx: &mut mpsc::Receiver<SyncEvent>) -> Option<Vec<SyncUpdate>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(SyncEvent::Updates(u))) => return Some(u),
            Ok(Some(SyncEvent::Status(SyncStatus::InSync))) => println!("  syncer: in sync"),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => return None,
        }
    }
    None
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    println!(
        "calico-rs demo: the resource model and datastore on a real etcd, pods wired by the CNI plugin, policy enforced by felixd."
    );
    println!("Not built yet: several nodes and BGP routes between them. See README.md.");
    section(1, "Starting a private etcd on loopback");
    let t = Instant::now();
    let mut etcd = Etcd::start();
    println!("  etcd at {} ({:.1?})", etcd.endpoint(), t.elapsed());
    let outcome = tokio::select! {
        r = demo(&mut etcd) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    etcd.stop();
    println!("\nTorn down: etcd stopped, its data directory removed.");
    outcome?;
    section(
        6,
        "Pods on a node: the real CNI plugin, ipamd and etcd in network namespaces",
    );
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the demo binary has no directory")?
        .to_path_buf();
    tokio::task::spawn_blocking(move || pods_on_a_node(&bin_dir)).await??;
    println!("\nTorn down: pods, node, felixd, ipamd and etcd removed; no namespace left behind.");
    Ok(())
}
