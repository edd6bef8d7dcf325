//! `make bench-ipam`: allocation rate and latency through ipamd on a real etcd, beside the
//! rate of raw single-key compare-and-swap transactions on the same etcd (the floor: an
//! allocation cannot take fewer than one such transaction), and ipamd's memory afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use calico_bench::{Run, Table, ms, rss_bytes};
use calico_lab::{Node, NodeOptions};
use calico_proto::ipam::{self as pb, ipam_client::IpamClient};
use clap::Parser;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "Benchmark ipamd against raw etcd compare-and-swap transactions")]
struct Args {
    /// Where ipamd is (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Concurrent clients per phase.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32])]
    clients: Vec<usize>,
    /// Operations per phase with one client; phases with more clients do twice as many.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Addresses the node holds at most: a phase allocates this many, releases them all and
    /// goes again (one node cannot hold more than 20 blocks, Calico's default limit).
    #[arg(long, default_value_t = 1000)]
    held: usize,
}

const NODE: &str = "bench-node";

fn main() -> Result<()> {
    let args = Args::parse();
    let bin_dir = calico_bench::binaries_dir(
        args.bin_dir.clone(),
        &["ipamd"],
        "cargo build --release -p calico-ipam --bin ipamd",
    )?;
    // A lab node: its namespace, its own etcd, the pool, a release-build ipamd.
    let mut opts = NodeOptions::new(&bin_dir);
    opts.name = NODE.into();
    opts.pools = vec![("bench".into(), "10.0.0.0/16".into(), 26)];
    let node = Node::start(opts);
    let pid = node
        .ipamd
        .as_ref()
        .map(|c| c.id())
        .context("ipamd is not running")?;
    let endpoint = node.etcd_endpoint();
    let socket = format!("unix://{}", node.socket.display());
    // Everything runs inside the node, where etcd listens.
    node.run(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(bench(&args, &endpoint, &socket, pid, &bin_dir))
    })
}

async fn bench(args: &Args, endpoint: &str, socket: &str, pid: u32, bin_dir: &Path) -> Result<()> {
    let phases: Vec<(usize, usize)> = args
        .clients
        .iter()
        .map(|&c| (c, if c == 1 { args.ops } else { 2 * args.ops }))
        .collect();

    // The floor: one compare-and-swap transaction per operation, each client on its own key.
    let raw = etcd_client::Client::connect([endpoint], None)
        .await
        .context("connecting to etcd")?;
    let mut raw_runs = Vec::new();
    let mut sized_runs = Vec::new();
    cas_run(&raw, 1, 200, RAW_CAS).await?; // warm-up
    for &(c, n) in &phases {
        raw_runs.push(cas_run(&raw, c, n, RAW_CAS).await?);
        sized_runs.push(cas_run(&raw, c, n, ALLOCATION_TXN).await?);
    }

    let warm = alloc_run(socket, 1, 100, "warm").await?;
    release_all(socket, 8, &warm.1).await?;
    let mut alloc_runs = Vec::new();
    let mut release_runs = Vec::new();
    let mut total_allocs = warm.1.len();
    for &(c, n) in &phases {
        let (mut allocs, mut releases) = (Vec::new(), Vec::new());
        let mut done = 0;
        while done < n {
            let round = args.held.min(n - done).max(c);
            let tag = format!("c{c}r{done}");
            let (run, handles) = alloc_run(socket, c, round, &tag).await?;
            total_allocs += handles.len();
            done += handles.len();
            allocs.push(run);
            releases.push(release_all(socket, c, &handles).await?);
        }
        alloc_runs.push(Run::merge(allocs));
        release_runs.push(Run::merge(releases));
    }
    let rss = rss_bytes(pid)?;

    let mut t = Table::new(&[
        "clients",
        "operation",
        "ops",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "vs raw CAS",
    ]);
    for (i, &(c, _)) in phases.iter().enumerate() {
        let raw = &raw_runs[i];
        t.row(row(c, "etcd CAS txn (raw)", raw, None));
        t.row(row(
            c,
            "etcd txn shaped like an allocation",
            &sized_runs[i],
            Some(raw.rate()),
        ));
        t.row(row(c, "ipamd AutoAssign", &alloc_runs[i], Some(raw.rate())));
        t.row(row(
            c,
            "ipamd ReleaseByHandle",
            &release_runs[i],
            Some(raw.rate()),
        ));
    }
    println!(
        "\nIPAM benchmark: ipamd ({}/ipamd) over a unix socket, etcd {} on {}; pool 10.0.0.0/16, /26 blocks,\none node holding up to {} addresses (allocate them all, release them all, repeat)\n",
        bin_dir.display(),
        etcd_version(),
        std::env::temp_dir().display(),
        args.held
    );
    print!("{}", t.render());
    println!();
    let target = |ok: bool| if ok { "met" } else { "MISSED" };
    if let Some(i) = phases.iter().position(|&(c, _)| c == 1) {
        let ratio = alloc_runs[i].rate() / raw_runs[i].rate();
        println!(
            "single-client AutoAssign rate / raw CAS rate: {ratio:.2} (target >= 0.70: {})",
            target(ratio >= 0.7)
        );
    }
    if let Some(i) = phases.iter().position(|&(c, _)| c == 8) {
        let p99 = alloc_runs[i].quantile(0.99);
        println!(
            "AutoAssign p99 with 8 clients: {} ms (target < 10 ms: {})",
            ms(p99),
            target(p99 < Duration::from_millis(10))
        );
    }
    let mb = rss as f64 / (1024.0 * 1024.0);
    println!(
        "ipamd RSS after {total_allocs} allocations: {mb:.1} MB (target < 30 MB: {})",
        target(mb < 30.0)
    );
    Ok(())
}

fn row(clients: usize, op: &str, run: &Run, raw_rate: Option<f64>) -> Vec<String> {
    vec![
        clients.to_string(),
        op.to_string(),
        run.ops().to_string(),
        format!("{:.0}", run.rate()),
        ms(run.quantile(0.5)),
        ms(run.quantile(0.99)),
        raw_rate.map_or(String::new(), |r| format!("{:.2}x", run.rate() / r)),
    ]
}

fn etcd_version() -> String {
    Command::new(calico_etcd_harness::etcd_binary())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("etcd Version:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "(unknown version)".into())
}

/// The transactions of a reference run.
#[derive(Debug, Clone, Copy)]
struct TxnShape {
    /// Bytes written to the compared key.
    value_bytes: usize,
    /// Also create a new key in each transaction (compared absent), as an allocation
    /// creates its handle.
    new_key: bool,
}

/// The floor: one single-key compare-and-swap.
const RAW_CAS: TxnShape = TxnShape {
    value_bytes: 1,
    new_key: false,
};

/// What one allocation writes: its block (Calico's JSON of a half-full /26 with owner
/// attributes is about 5 KB) and a new handle, compared on the block's revision and the
/// handle's absence.
const ALLOCATION_TXN: TxnShape = TxnShape {
    value_bytes: 5_000,
    new_key: true,
};

/// `total` compare-and-swap transactions spread over `clients` tasks, each on its own key.
async fn cas_run(
    client: &etcd_client::Client,
    clients: usize,
    total: usize,
    shape: TxnShape,
) -> Result<Run> {
    let TxnShape {
        value_bytes,
        new_key,
    } = shape;
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let mut kv = client.kv_client();
            let n = share(total, clients, i);
            tokio::spawn(async move {
                let key = format!("/bench/cas/{clients}/{value_bytes}/{i}");
                let value = "x".repeat(value_bytes);
                let put = kv.put(key.as_str(), "0", None).await?;
                let mut rev = put.header().map_or(0, |h| h.revision());
                let mut lat = Vec::with_capacity(n);
                for j in 0..n {
                    let t = Instant::now();
                    let mut when = vec![Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)];
                    let mut ops = vec![TxnOp::put(key.as_str(), format!("{j}{value}"), None)];
                    if new_key {
                        let other = format!("{key}/new/{j}");
                        when.push(Compare::version(other.as_str(), CompareOp::Equal, 0));
                        ops.push(TxnOp::put(other, r#"{"block":{"10.0.0.0/26":1}}"#, None));
                    }
                    let txn = Txn::new().when(when).and_then(ops);
                    let resp = kv.txn(txn).await?;
                    lat.push(t.elapsed());
                    if !resp.succeeded() {
                        anyhow::bail!("compare-and-swap on {key} failed: nobody else writes it");
                    }
                    rev = resp.header().map_or(0, |h| h.revision());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(Run::new(lat, start.elapsed()))
}

/// One connection per client, as separate CNI plugin invocations would have.
async fn connect_all(socket: &str, clients: usize) -> Result<Vec<IpamClient<Channel>>> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(calico_ipam::client::connect(socket).await?);
    }
    Ok(conns)
}

fn share(total: usize, parts: usize, i: usize) -> usize {
    total / parts + usize::from(i < total % parts)
}

/// `total` single-address AutoAssigns over `clients` connections (as many CNI plugin
/// invocations would make); returns the handles used.
async fn alloc_run(
    socket: &str,
    clients: usize,
    total: usize,
    tag: &str,
) -> Result<(Run, Vec<String>)> {
    let conns = connect_all(socket, clients).await?;
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let n = share(total, clients, i);
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                let mut handles = Vec::with_capacity(n);
                for j in 0..n {
                    let handle = format!("k8s-pod-network.bench-{tag}-{i}-{j}");
                    let req = pb::AutoAssignRequest {
                        num_ipv4: 1,
                        handle_id: handle.clone(),
                        attributes: [
                            ("node".to_string(), NODE.to_string()),
                            ("namespace".to_string(), "bench".to_string()),
                            ("pod".to_string(), format!("pod-{tag}-{i}-{j}")),
                        ]
                        .into(),
                        ..Default::default()
                    };
                    let t = Instant::now();
                    let resp = c.auto_assign(req).await?.into_inner();
                    lat.push(t.elapsed());
                    if resp.ipv4.len() != 1 {
                        anyhow::bail!("AutoAssign for {handle} returned {:?}", resp.ipv4);
                    }
                    handles.push(handle);
                }
                Ok((lat, handles))
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(total);
    let mut handles = Vec::with_capacity(total);
    for t in tasks {
        let (l, h) = t.await??;
        lat.extend(l);
        handles.extend(h);
    }
    Ok((Run::new(lat, start.elapsed()), handles))
}

/// Releases every handle, `clients` at a time.
async fn release_all(socket: &str, clients: usize, handles: &[String]) -> Result<Run> {
    let conns = connect_all(socket, clients).await?;
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let mine: Vec<String> = handles.iter().skip(i).step_by(clients).cloned().collect();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(mine.len());
                for handle in mine {
                    let t = Instant::now();
                    let resp = c
                        .release_by_handle(pb::ReleaseByHandleRequest {
                            handle_id: handle.clone(),
                        })
                        .await?
                        .into_inner();
                    lat.push(t.elapsed());
                    if resp.released.len() != 1 {
                        anyhow::bail!("ReleaseByHandle {handle} released {:?}", resp.released);
                    }
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(handles.len());
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(Run::new(lat, start.elapsed()))
}
