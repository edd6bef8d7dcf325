//! `make bench-cni`: CNI ADD and DEL latency for 200 pods on one node (real etcd and ipamd,
//! release builds), beside Debian's reference `bridge` + `host-local` chain measured in the
//! same run on the same machine, and sustained pod churn (ADD then DEL) with 4 pods in flight.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use calico_bench::{Run, Table, ms};
use calico_cni::runtime::{Attachment, ConfList, Runtime};
use calico_lab::{Node, NodeOptions};
use calico_netns_harness::NetNs;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(
    about = "Benchmark the calico CNI plugin against the reference bridge + host-local chain"
)]
struct Args {
    /// Where calico, calico-ipam and ipamd are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the reference plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_dir: PathBuf,
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// How long each churn phase runs.
    #[arg(long, default_value_t = 10)]
    churn_seconds: u64,
    /// Pods in flight during churn.
    #[arg(long, default_value_t = 4)]
    churn_parallel: usize,
}

fn conflist(name: &str, plugin: Value) -> Result<ConfList> {
    ConfList::parse(&json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}))
        .map_err(anyhow::Error::msg)
}

fn attachment(ns: &NetNs, i: usize, tag: &str) -> Attachment {
    Attachment {
        container_id: format!("bench-{tag}-{i}"),
        netns: Some(ns.path().to_path_buf()),
        ifname: "eth0".into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), "bench".into()),
            ("K8S_POD_NAME".into(), format!("pod-{tag}-{i}")),
        ],
        capability_args: Default::default(),
    }
}

struct System {
    label: &'static str,
    /// For container IDs (letters, digits, '-' only).
    tag: &'static str,
    list: ConfList,
}

/// ADDs for every pod one after another, then DELs; per-operation latencies.
fn add_then_del(node: &Node, rt: &Runtime, sys: &System, pods: &[NetNs]) -> Result<(Run, Run)> {
    let atts: Vec<Attachment> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| attachment(p, i, sys.tag))
        .collect();
    node.run(|| {
        let mut adds = Vec::with_capacity(atts.len());
        let start = Instant::now();
        for a in &atts {
            let t = Instant::now();
            rt.add(&sys.list, a)
                .with_context(|| format!("{} ADD {}", sys.label, a.container_id))?;
            adds.push(t.elapsed());
        }
        let add_wall = start.elapsed();
        let mut dels = Vec::with_capacity(atts.len());
        let start = Instant::now();
        for a in &atts {
            let t = Instant::now();
            rt.del(&sys.list, a)
                .with_context(|| format!("{} DEL {}", sys.label, a.container_id))?;
            dels.push(t.elapsed());
        }
        Ok((Run::new(adds, add_wall), Run::new(dels, start.elapsed())))
    })
}

/// Pods created and deleted continuously for `secs`, `parallel` at a time: pods per second.
fn churn(
    node: &Node,
    rt: &Runtime,
    sys: &System,
    pods: &[NetNs],
    parallel: usize,
    secs: u64,
) -> Result<f64> {
    let done = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..parallel)
            .map(|w| {
                let done = &done;
                s.spawn(move || -> Result<()> {
                    node.run(|| {
                        let mut i = w;
                        while Instant::now() < deadline {
                            let p = &pods[i % pods.len()];
                            let a = attachment(p, i, &format!("{}-churn", sys.tag));
                            rt.add(&sys.list, &a).context("churn ADD")?;
                            rt.del(&sys.list, &a).context("churn DEL")?;
                            done.fetch_add(1, Ordering::Relaxed);
                            i += parallel;
                        }
                        Ok(())
                    })
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a churn worker panicked"))??;
        }
        Ok(())
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin_dir = calico_bench::binaries_dir(
        args.bin_dir.clone(),
        &["calico", "calico-ipam", "ipamd"],
        "cargo build --release -p calico-cni -p calico-ipam",
    )?;
    for b in ["bridge", "host-local"] {
        if !args.reference_dir.join(b).exists() {
            bail!(
                "{} is missing: install containernetworking-plugins (`make deps`)",
                args.reference_dir.join(b).display()
            );
        }
    }
    let node = Node::start(NodeOptions::new(&bin_dir));
    let rt = Runtime::new(
        vec![bin_dir.clone(), args.reference_dir.clone()],
        &node.dir.path().join("results"),
    );
    // IPv4 only on both sides, so the work compares.
    let mut calico = node.calico_plugin();
    calico["ipam"]["assign_ipv6"] = json!("false");
    let ours = System {
        label: "calico-rs",
        tag: "ours",
        list: conflist("k8s-pod-network", calico)?,
    };
    let reference = System {
        label: "bridge+host-local",
        tag: "ref",
        list: conflist(
            "reference",
            json!({
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.88.0.0/16"}]],
                    "dataDir": node.dir.path().join("host-local").display().to_string(),
                },
            }),
        )?,
    };
    let pods: Vec<NetNs> = (0..args.pods)
        .map(|i| NetNs::new(&format!("b{i}")))
        .collect();

    // Warm both (first runs pay for page cache and the bridge's creation).
    for sys in [&reference, &ours] {
        add_then_del(&node, &rt, sys, &pods[..5])?;
    }
    let (ref_add, ref_del) = add_then_del(&node, &rt, &reference, &pods)?;
    let (our_add, our_del) = add_then_del(&node, &rt, &ours, &pods)?;
    let ref_churn = churn(
        &node,
        &rt,
        &reference,
        &pods,
        args.churn_parallel,
        args.churn_seconds,
    )?;
    let our_churn = churn(
        &node,
        &rt,
        &ours,
        &pods,
        args.churn_parallel,
        args.churn_seconds,
    )?;
    if !node.allocations().is_empty() || !node.cali_links().is_empty() {
        bail!("the benchmark left allocations or interfaces behind");
    }

    let mut t = Table::new(&[
        "plugin",
        "operation",
        "pods",
        "p50 ms",
        "p99 ms",
        "vs reference p50",
    ]);
    for (label, op, run, refr) in [
        (reference.label, "ADD", &ref_add, &ref_add),
        (ours.label, "ADD", &our_add, &ref_add),
        (reference.label, "DEL", &ref_del, &ref_del),
        (ours.label, "DEL", &our_del, &ref_del),
    ] {
        t.row(vec![
            label.to_string(),
            op.to_string(),
            run.ops().to_string(),
            ms(run.quantile(0.5)),
            ms(run.quantile(0.99)),
            format!(
                "{:.2}x",
                run.quantile(0.5).as_secs_f64() / refr.quantile(0.5).as_secs_f64()
            ),
        ]);
    }
    println!(
        "\nCNI benchmark: {} pods on one node (etcd and ipamd in the node's namespace), release builds from {}; reference plugins from {}\n",
        args.pods,
        bin_dir.display(),
        args.reference_dir.display()
    );
    print!("{}", t.render());
    println!(
        "\nchurn ({} pods in flight, {} s each): {} {:.1} pods/s, {} {:.1} pods/s",
        args.churn_parallel, args.churn_seconds, reference.label, ref_churn, ours.label, our_churn
    );
    let target = |ok: bool| if ok { "met" } else { "MISSED" };
    let ratio = our_add.quantile(0.5).as_secs_f64() / ref_add.quantile(0.5).as_secs_f64();
    println!(
        "ADD p50 / reference ADD p50: {ratio:.2} (target <= 1.0: {})",
        target(ratio <= 1.0)
    );
    let p99 = our_add.quantile(0.99);
    println!(
        "ADD p99: {} ms (target <= 50 ms: {})",
        ms(p99),
        target(p99 <= Duration::from_millis(50))
    );
    println!(
        "sustained churn: {our_churn:.1} pods/s (target >= 20: {})",
        target(our_churn >= 20.0)
    );
    drop(pods);
    Ok(())
}
