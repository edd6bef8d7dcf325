//! `make bench-bgp`: birdd beside BIRD 2, FRR and GoBGP on the same feed in the same run.
//!
//! Two namespaces joined by a veth pair: the device under test (DUT, 10.2.0.1 / fd02::1,
//! AS 65000) and the generator (one address per session: senders 10.2.0.10+k / fd02::1:k with
//! AS 65001+k, the receiver 10.2.0.3 / fd02::3 with AS 65100). Every session is eBGP and
//! every DUT imports and exports everything (birdd from etcd config: mesh off, one global
//! BGPPeer per session, the prefixes inside IP pools so that Calico's export filter passes
//! them). Each DUT is started afresh for each run of each scenario (birdd and BIRD `--runs`
//! times, alternating which goes first; the tables show medians); the generator encodes everything
//! before the clock starts, writes it as fast as TCP takes it, and counts at the receiver:
//!
//! - converge: from the first UPDATE written to the receiver holding every prefix;
//! - last UPDATE to the receiver, and to any session (senders hear each other's routes);
//! - withdraw: from the first withdrawal written to the receiver holding none;
//! - DUT CPU seconds for the announcement (its process CPU clock, every thread, until every
//!   session was quiet),
//!   peak RSS (VmHWM), bytes per path (RSS growth / paths received), UPDATEs to the receiver;
//! - the generator's own CPU over the same time, to show it was not the bottleneck.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use calico_api::codec::decode_documents;
use calico_bench::bgpgen::{self, Batches, FibWatch, Generator, PeerSpec};
use calico_bench::{
    Table, check_interrupted, cpu_seconds, machine_busy_seconds, peak_rss_bytes, rss_bytes,
};
use calico_bgp::types::Family;
use calico_datastore::ResourceClient;
use calico_datastore::etcd::{EtcdConfig, EtcdDatastore};
use calico_etcd_harness::Etcd;
use calico_netns_harness::NetNs;
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "birdd beside BIRD 2, FRR and GoBGP on the same BGP feed")]
struct Args {
    /// Scenarios to run (A, A1M, A6, B, D, E, F), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "A,A1M,A6,B,D,E,F")]
    scenarios: Vec<String>,
    /// Daemons to compare (birdd, bird, frr, gobgp), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "birdd,bird,frr,gobgp")]
    duts: Vec<String>,
    /// Divides every scenario's prefix count (a quick look: --shrink 10).
    #[arg(long, default_value_t = 1)]
    shrink: usize,
    /// GoBGP sits out scenarios with more paths than this (it needs about 70 s and 2 GB per
    /// million here); a note says so.
    #[arg(long, default_value_t = 300_000)]
    gobgp_max_paths: usize,
    /// Seconds without an UPDATE on any session that end a phase.
    #[arg(long, default_value_t = 0.7)]
    quiet: f64,
    /// Append one JSON object per (scenario, daemon, run) to this file, its run numbered.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where birdd is (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Runs of birdd and BIRD per scenario, which of them goes first alternating from run to
    /// run; the tables show each figure's median. On a shared machine one run's figures swing
    /// by a fifth or more. FRR and GoBGP, there for context, run once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
}

// ===== topology =====

const DUT_AS: u32 = 65000;
const SENDER_AS: u32 = 65001;
const RECEIVER_AS: u32 = 65100;

fn dut_addr(f: Family) -> IpAddr {
    match f {
        Family::Ipv4Unicast => Ipv4Addr::new(10, 2, 0, 1).into(),
        Family::Ipv6Unicast => Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 0, 1).into(),
    }
}

fn receiver_addr(f: Family) -> IpAddr {
    match f {
        Family::Ipv4Unicast => Ipv4Addr::new(10, 2, 0, 3).into(),
        Family::Ipv6Unicast => Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 0, 3).into(),
    }
}

fn sender_addr(f: Family, k: usize) -> IpAddr {
    match f {
        Family::Ipv4Unicast => Ipv4Addr::new(10, 2, 0, 10 + k as u8).into(),
        Family::Ipv6Unicast => Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 1, k as u16).into(),
    }
}

/// The sessions of a scenario, as the DUT's configuration names them.
#[derive(Debug, Clone)]
struct PeerCfg {
    name: String,
    addr: IpAddr,
    asn: u32,
}

fn peers(sc: &Scenario) -> Vec<PeerCfg> {
    let mut v: Vec<PeerCfg> = (0..sc.senders)
        .map(|k| PeerCfg {
            name: format!("s{k}"),
            addr: sender_addr(sc.family, k),
            asn: SENDER_AS + k as u32,
        })
        .collect();
    v.push(PeerCfg {
        name: "recv".into(),
        addr: receiver_addr(sc.family),
        asn: RECEIVER_AS,
    });
    v
}

/// The generator's and the DUT's namespaces, joined by a veth pair created inside them (the
/// host's own interfaces are never touched); deleted on drop.
#[derive(Debug)]
struct Topo {
    dut: NetNs,
    gen_ns: NetNs,
}

impl Topo {
    fn new(sc: &Scenario) -> Result<Topo> {
        let dut = NetNs::new("bgp-dut");
        let gen_ns = NetNs::new("bgp-gen");
        gen_ns.exec(
            "ip",
            &[
                "link",
                "add",
                "g0",
                "type",
                "veth",
                "peer",
                "name",
                "d0",
                "netns",
                dut.name(),
            ],
        );
        let mut g = String::new();
        for f in Family::ALL {
            let (plen, extra) = match f {
                Family::Ipv4Unicast => (24, ""),
                Family::Ipv6Unicast => (64, " nodad"),
            };
            writeln!(g, "addr add {}/{plen} dev g0{extra}", receiver_addr(f))?;
            for k in 0..sc.senders {
                writeln!(g, "addr add {}/{plen} dev g0{extra}", sender_addr(f, k))?;
            }
        }
        g.push_str("link set g0 up\n");
        let d = format!(
            "addr add {}/24 dev d0\naddr add {}/64 dev d0 nodad\nlink set d0 up\n",
            dut_addr(Family::Ipv4Unicast),
            dut_addr(Family::Ipv6Unicast)
        );
        let dir = tempfile::tempdir()?;
        for (ns, batch, file) in [(&gen_ns, g, "gen.batch"), (&dut, d, "dut.batch")] {
            let path = dir.path().join(file);
            std::fs::write(&path, batch)?;
            ns.exec("ip", &["-batch", &path.display().to_string()]);
        }
        Ok(Topo { dut, gen_ns })
    }
}

// ===== daemons =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DutKind {
    Birdd,
    Bird,
    Frr,
    Gobgp,
}

impl DutKind {
    fn parse(s: &str) -> Result<DutKind> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "birdd" => DutKind::Birdd,
            "bird" | "bird2" => DutKind::Bird,
            "frr" | "bgpd" => DutKind::Frr,
            "gobgp" | "gobgpd" => DutKind::Gobgp,
            other => bail!("unknown daemon {other:?}: birdd, bird, frr or gobgp"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            DutKind::Birdd => "birdd",
            DutKind::Bird => "BIRD 2",
            DutKind::Frr => "FRR",
            DutKind::Gobgp => "GoBGP",
        }
    }

    /// Version text for the header.
    fn version(self, env: &Env) -> String {
        let out = |prog: &Path, arg: &str| -> String {
            Command::new(prog)
                .arg(arg)
                .output()
                .map(|o| {
                    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                    s.push_str(&String::from_utf8_lossy(&o.stderr));
                    s.lines().next().unwrap_or("").trim().to_string()
                })
                .unwrap_or_default()
        };
        match self {
            DutKind::Birdd => format!("birdd (release, {})", env.birdd.display()),
            DutKind::Bird => out(&env.bird, "--version"),
            DutKind::Frr => out(&env.bgpd, "--version"),
            DutKind::Gobgp => out(&env.gobgpd, "--version"),
        }
    }
}

/// The programs, found before anything starts (a missing one fails loudly, naming its package).
#[derive(Debug, Default)]
struct Env {
    birdd: PathBuf,
    bird: PathBuf,
    bgpd: PathBuf,
    zebra: PathBuf,
    gobgpd: PathBuf,
}

fn require(prog: &str, package: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/lib/frr", "/sbin", "/bin"] {
        let p = Path::new(dir).join(prog);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{prog} is missing: install the Debian package {package} (`make deps` does)")
}

/// A running DUT: its processes (killed on drop, the routing daemon first), its etcd (birdd),
/// its files.
#[derive(Debug)]
struct Running {
    /// (name, process); the CPU and memory of all of them count.
    procs: Vec<(String, Child)>,
    _etcd: Option<Etcd>,
    dir: tempfile::TempDir,
    /// FRR's state directory under /var/run/frr, removed on drop.
    frr_dir: Option<PathBuf>,
}

impl Running {
    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|(_, c)| c.id()).collect()
    }

    fn alive(&mut self) -> Result<()> {
        for (name, c) in &mut self.procs {
            if let Ok(Some(status)) = c.try_wait() {
                let log = self.dir.path().join(format!("{name}.log"));
                bail!(
                    "{name} exited ({status}); its log ends:\n{}",
                    tail(&log, 15)
                );
            }
        }
        Ok(())
    }

    fn cpu(&self) -> f64 {
        self.pids()
            .into_iter()
            .filter_map(|p| cpu_seconds(p).ok())
            .sum()
    }

    fn rss(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|p| rss_bytes(p).ok())
            .sum()
    }

    fn peak_rss(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|p| peak_rss_bytes(p).ok())
            .sum()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for (_, c) in self.procs.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self.frr_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn wait_path(path: &Path, within: Duration, r: &mut Running) -> Result<()> {
    let deadline = Instant::now() + within;
    while !path.exists() {
        r.alive()?;
        check_interrupted()?;
        if Instant::now() > deadline {
            bail!("{} did not appear within {within:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Starts a program inside `ns`, its output to `<dir>/<name>.log`.
fn spawn(ns: &NetNs, dir: &Path, name: &str, cmd: &mut Command) -> Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    ns.run(|| cmd.spawn())
        .with_context(|| format!("starting {name}"))
}

fn start_dut(kind: DutKind, sc: &Scenario, topo: &Topo, env: &Env) -> Result<Running> {
    let dir = tempfile::Builder::new().prefix("bench-bgp-").tempdir()?;
    let mut r = Running {
        procs: Vec::new(),
        _etcd: None,
        dir,
        frr_dir: None,
    };
    let d = r.dir.path().to_path_buf();
    let ps = peers(sc);
    match kind {
        DutKind::Birdd => {
            let etcd = topo.dut.run(Etcd::start);
            let endpoint = etcd.endpoint();
            r._etcd = Some(etcd);
            apply_yaml(&topo.dut, &endpoint, &birdd_yaml(sc, &ps))?;
            let sock = d.join("birdd.sock");
            let child = spawn(
                &topo.dut,
                &d,
                "birdd",
                Command::new(&env.birdd)
                    .env_remove("RUST_LOG")
                    .env("DATASTORE_TYPE", "etcdv3")
                    .env("ETCD_ENDPOINTS", &endpoint)
                    .args(["--nodename", "dut", "--http-listen", "none"])
                    .args(["--log-level", "warn", "--control-socket"])
                    .arg(&sock),
            )?;
            r.procs.push(("birdd".into(), child));
            wait_path(&sock, Duration::from_secs(20), &mut r)?;
        }
        DutKind::Bird => {
            let (conf, ctl) = (d.join("bird.conf"), d.join("bird.ctl"));
            std::fs::write(&conf, bird_conf(sc, &ps))?;
            let child = spawn(
                &topo.dut,
                &d,
                "bird",
                Command::new(&env.bird)
                    .arg("-f")
                    .arg("-c")
                    .arg(&conf)
                    .arg("-s")
                    .arg(&ctl),
            )?;
            r.procs.push(("bird".into(), child));
            wait_path(&ctl, Duration::from_secs(10), &mut r)?;
        }
        DutKind::Gobgp => {
            let conf = d.join("gobgp.toml");
            std::fs::write(&conf, gobgp_conf(sc, &ps))?;
            let child = spawn(
                &topo.dut,
                &d,
                "gobgpd",
                Command::new(&env.gobgpd)
                    .arg("-f")
                    .arg(&conf)
                    .args(["-t", "toml", "--api-hosts", "127.0.0.1:50051"])
                    .args(["-l", "warn", "--pprof-disable"]),
            )?;
            r.procs.push(("gobgpd".into(), child));
        }
        DutKind::Frr => {
            // zebra runs as user frr, in a per-instance state directory (its "pathspace").
            let space = topo.dut.name().to_string();
            let state = PathBuf::from("/var/run/frr").join(&space);
            std::fs::create_dir_all(&state)
                .with_context(|| format!("creating {}", state.display()))?;
            r.frr_dir = Some(state.clone());
            let out = Command::new("chown")
                .args(["frr:frr"])
                .arg(&state)
                .output()?;
            if !out.status.success() {
                bail!(
                    "chown frr:frr {}: {} (does the frr user exist? the Debian package frr makes it)",
                    state.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let (zconf, bconf) = (state.join("zebra.conf"), state.join("bgpd.conf"));
            std::fs::write(&zconf, "hostname dut-zebra\n")?;
            std::fs::write(&bconf, frr_conf(sc, &ps))?;
            let child = spawn(
                &topo.dut,
                &d,
                "zebra",
                Command::new(&env.zebra)
                    .args(["-N", &space, "-A", "127.0.0.1", "-f"])
                    .arg(&zconf)
                    .arg("-i")
                    .arg(state.join("zebra.pid")),
            )?;
            r.procs.push(("zebra".into(), child));
            wait_path(&state.join("zserv.api"), Duration::from_secs(10), &mut r)?;
            let mut cmd = Command::new(&env.bgpd);
            cmd.args(["-S", "-N", &space, "-A", "127.0.0.1", "-f"])
                .arg(&bconf)
                .arg("-i")
                .arg(state.join("bgpd.pid"));
            if !sc.kernel {
                cmd.arg("-n");
            }
            let child = spawn(&topo.dut, &d, "bgpd", &mut cmd)?;
            // bgpd first: it is killed first, and its log is the one to read.
            r.procs.insert(0, ("bgpd".into(), child));
        }
    }
    Ok(r)
}

fn apply_yaml(ns: &NetNs, endpoint: &str, yaml: &str) -> Result<()> {
    let docs = decode_documents(yaml).context("the benchmark's own Calico YAML")?;
    let endpoint = endpoint.to_string();
    ns.run(move || {
        calico_lab::block_on(async move {
            let ds = EtcdDatastore::connect(&EtcdConfig::new(vec![endpoint])).await?;
            let rc = ResourceClient::new(Arc::new(ds));
            for d in docs {
                rc.apply_any(d).await?;
            }
            anyhow::Ok(())
        })
    })
}

/// birdd's configuration: this node, mesh off, AS 65000, a global BGPPeer per session, and
/// pools holding the generated prefixes (Calico exports only what lies in a pool). VXLAN
/// pools keep the routes out of the kernel (Felix owns those); scenario E uses a no-encap
/// pool, whose routes birdd programs, as BIRD does for Calico.
fn birdd_yaml(sc: &Scenario, ps: &[PeerCfg]) -> String {
    let encap = if sc.kernel { "Never" } else { "Always" };
    let mut y = format!(
        r#"apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: dut}}
spec: {{bgp: {{ipv4Address: {}/24, ipv6Address: "{}/64"}}}}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {{name: default}}
spec: {{nodeToNodeMeshEnabled: false, asNumber: {DUT_AS}}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: bench-v4}}
spec: {{cidr: {}, vxlanMode: {encap}, ipipMode: Never}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: bench-v6}}
spec: {{cidr: "{}", vxlanMode: Always, ipipMode: Never}}
"#,
        dut_addr(Family::Ipv4Unicast),
        dut_addr(Family::Ipv6Unicast),
        bgpgen::V4_COVER,
        bgpgen::V6_COVER,
    );
    for p in ps {
        let _ = write!(
            y,
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: {}}}\nspec: {{peerIP: \"{}\", asNumber: {}}}\n",
            p.name, p.addr, p.asn
        );
    }
    y
}

fn bird_conf(sc: &Scenario, ps: &[PeerCfg]) -> String {
    let chan = match sc.family {
        Family::Ipv4Unicast => "ipv4",
        Family::Ipv6Unicast => "ipv6",
    };
    let mut c = format!(
        "router id {};\nprotocol device {{ }}\n",
        dut_addr(Family::Ipv4Unicast)
    );
    if sc.kernel {
        let _ = writeln!(
            c,
            "protocol kernel {{ {chan} {{ import none; export all; }}; }}"
        );
    }
    let _ = writeln!(
        c,
        "template bgp t {{ local as {DUT_AS}; passive on; hold time 240; }}"
    );
    for p in ps {
        let _ = writeln!(
            c,
            "protocol bgp {} from t {{ neighbor {} as {}; {chan} {{ import all; export all; }}; }}",
            p.name, p.addr, p.asn
        );
    }
    c
}

fn gobgp_conf(sc: &Scenario, ps: &[PeerCfg]) -> String {
    let afi = match sc.family {
        Family::Ipv4Unicast => "ipv4-unicast",
        Family::Ipv6Unicast => "ipv6-unicast",
    };
    let mut c = format!(
        "[global.config]\n  as = {DUT_AS}\n  router-id = \"{}\"\n  local-address-list = [\"{}\", \"{}\"]\n",
        dut_addr(Family::Ipv4Unicast),
        dut_addr(Family::Ipv4Unicast),
        dut_addr(Family::Ipv6Unicast)
    );
    for p in ps {
        let _ = write!(
            c,
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n  [neighbors.transport.config]\n    passive-mode = true\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{afi}\"\n",
            p.addr, p.asn
        );
    }
    c
}

/// FRR as the harness notes say: datacenter defaults (no 30 s advertisement interval), no
/// RFC 8212 policy requirement, passive neighbours; hold 240 s like the others.
fn frr_conf(sc: &Scenario, ps: &[PeerCfg]) -> String {
    let af = match sc.family {
        Family::Ipv4Unicast => "ipv4",
        Family::Ipv6Unicast => "ipv6",
    };
    let mut c = format!(
        "frr defaults datacenter\nhostname dut\n!\nrouter bgp {DUT_AS}\n bgp router-id {}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n timers bgp 80 240\n",
        dut_addr(Family::Ipv4Unicast)
    );
    for p in ps {
        let _ = writeln!(
            c,
            " neighbor {} remote-as {}\n neighbor {} passive",
            p.addr, p.asn, p.addr
        );
    }
    let _ = writeln!(c, " address-family {af} unicast");
    for p in ps {
        let _ = writeln!(c, "  neighbor {} activate", p.addr);
    }
    c.push_str(" exit-address-family\n!\n");
    c
}

// ===== scenarios =====

#[derive(Debug, Clone)]
struct Scenario {
    key: &'static str,
    title: String,
    family: Family,
    senders: usize,
    /// Distinct prefixes in all.
    prefixes: usize,
    /// Every sender announces every prefix (best-path work); else each its own share.
    overlap: bool,
    /// The DUT writes what it learns into the kernel (E).
    kernel: bool,
    /// Churn (F): (rounds) of withdrawing and re-announcing every prefix.
    churn: Option<usize>,
}

impl Scenario {
    /// Paths the DUT holds (Adj-RIB-In).
    fn paths(&self) -> usize {
        if self.overlap {
            self.prefixes * self.senders
        } else {
            self.prefixes
        }
    }

    /// Prefix numbers sender `k` announces.
    fn share(&self, k: usize) -> Vec<usize> {
        if self.overlap {
            (0..self.prefixes).collect()
        } else {
            let per = self.prefixes.div_ceil(self.senders);
            (k * per..((k + 1) * per).min(self.prefixes)).collect()
        }
    }
}

fn scenarios(keys: &[String], shrink: usize) -> Result<Vec<Scenario>> {
    let n = |x: usize| (x / shrink.max(1)).max(1);
    let mut out = Vec::new();
    for k in keys {
        let v4 = Family::Ipv4Unicast;
        let s = match k.to_ascii_uppercase().as_str() {
            "A" => Scenario {
                key: "A",
                title: format!("1 sender -> 1 receiver, {} IPv4 /24", n(100_000)),
                family: v4,
                senders: 1,
                prefixes: n(100_000),
                overlap: false,
                kernel: false,
                churn: None,
            },
            "A1M" | "A'" => Scenario {
                key: "A'",
                title: format!("1 sender -> 1 receiver, {} IPv4 /24", n(1_000_000)),
                family: v4,
                senders: 1,
                prefixes: n(1_000_000),
                overlap: false,
                kernel: false,
                churn: None,
            },
            "A6" => Scenario {
                key: "A6",
                title: format!("1 sender -> 1 receiver, {} IPv6 /48", n(200_000)),
                family: Family::Ipv6Unicast,
                senders: 1,
                prefixes: n(200_000),
                overlap: false,
                kernel: false,
                churn: None,
            },
            "B" => Scenario {
                key: "B",
                title: format!(
                    "10 senders x the same {} IPv4 /24 (best-path work)",
                    n(100_000)
                ),
                family: v4,
                senders: 10,
                prefixes: n(100_000),
                overlap: true,
                kernel: false,
                churn: None,
            },
            "D" => Scenario {
                key: "D",
                title: format!(
                    "50 senders x {} distinct IPv4 /24 (mesh-like)",
                    n(10_000) / 50
                ),
                family: v4,
                senders: 50,
                prefixes: (n(10_000) / 50).max(1) * 50,
                overlap: false,
                kernel: false,
                churn: None,
            },
            "E" => Scenario {
                key: "E",
                title: format!(
                    "1 sender -> 1 receiver, {} IPv4 /24 into the kernel",
                    n(200_000)
                ),
                family: v4,
                senders: 1,
                prefixes: n(200_000),
                overlap: false,
                kernel: true,
                churn: None,
            },
            "F" => Scenario {
                key: "F",
                title: format!(
                    "churn: {} IPv4 /24 withdrawn and re-announced 10 times back to back",
                    n(10_000)
                ),
                family: v4,
                senders: 1,
                prefixes: n(10_000),
                overlap: false,
                kernel: false,
                churn: Some(10),
            },
            other => bail!("unknown scenario {other:?}: A, A1M, A6, B, D, E or F"),
        };
        out.push(s);
    }
    Ok(out)
}

/// Everything the senders write, encoded before any clock starts.
#[derive(Debug)]
struct Feed {
    announce: Vec<Batches>,
    withdraw: Vec<Batches>,
    /// F: the churn, then one marker prefix (number `prefixes`) the DUT can only pass on
    /// after reading all of it.
    churn: Option<Batches>,
}

impl Feed {
    fn build(sc: &Scenario) -> Feed {
        let mut announce = Vec::new();
        let mut withdraw = Vec::new();
        for k in 0..sc.senders {
            let share = sc.share(k);
            announce.push(bgpgen::announce(
                sc.family,
                &share,
                SENDER_AS + k as u32,
                sender_addr(sc.family, k),
            ));
            let mut w = bgpgen::withdraw(sc.family, &share);
            if sc.churn.is_some() && k == 0 {
                w.extend(&bgpgen::withdraw(sc.family, &[sc.prefixes]));
            }
            withdraw.push(w);
        }
        let churn = sc.churn.map(|rounds| {
            let all: Vec<usize> = (0..sc.prefixes).collect();
            let (w, a) = (
                bgpgen::withdraw(sc.family, &all),
                bgpgen::announce(sc.family, &all, SENDER_AS, sender_addr(sc.family, 0)),
            );
            let mut b = Batches::default();
            for _ in 0..rounds {
                b.extend(&w);
                b.extend(&a);
            }
            b.extend(&bgpgen::announce(
                sc.family,
                &[sc.prefixes],
                SENDER_AS,
                sender_addr(sc.family, 0),
            ));
            b
        });
        Feed {
            announce,
            withdraw,
            churn,
        }
    }
}

/// What one DUT did in one scenario.
#[derive(Debug, Default, Clone)]
struct Outcome {
    converge: Option<f64>,
    last_rx: Option<f64>,
    all_peers: Option<f64>,
    send: Option<f64>,
    fib: Option<f64>,
    withdraw: Option<f64>,
    fib_withdraw: Option<f64>,
    cpu: Option<f64>,
    cpu_withdraw: Option<f64>,
    peak_rss: Option<u64>,
    bytes_per_path: Option<f64>,
    updates_out: Option<u64>,
    changes_out: Option<u64>,
    gen_cpu: Option<f64>,
    /// CPU seconds the rest of the machine used meanwhile (other users' builds and tests).
    other_cpu: Option<f64>,
    /// Routes the DUT put in the kernel where it should not have.
    stray_kernel_routes: Option<usize>,
    error: Option<String>,
    skipped: Option<String>,
}

impl Outcome {
    /// Each figure's median over `runs` (the mean of the middle two for an even count,
    /// rounded for counts), and the most stray kernel routes any run left. A failed run makes
    /// the result that failure, naming the run: a daemon that failed once is not summarised by
    /// the runs that went well.
    fn median(runs: &[Outcome]) -> Outcome {
        if let Some((i, failed)) = runs
            .iter()
            .enumerate()
            .find(|(_, o)| o.error.is_some() || o.skipped.is_some())
        {
            let mut failed = failed.clone();
            if runs.len() > 1 {
                failed.error = failed.error.map(|e| format!("run {}: {e}", i + 1));
            }
            return failed;
        }
        let f = |get: fn(&Outcome) -> Option<f64>| median(runs.iter().filter_map(get).collect());
        let u = |get: fn(&Outcome) -> Option<u64>| {
            median(runs.iter().filter_map(get).map(|v| v as f64).collect())
                .map(|v| v.round() as u64)
        };
        Outcome {
            converge: f(|o| o.converge),
            last_rx: f(|o| o.last_rx),
            all_peers: f(|o| o.all_peers),
            send: f(|o| o.send),
            fib: f(|o| o.fib),
            withdraw: f(|o| o.withdraw),
            fib_withdraw: f(|o| o.fib_withdraw),
            cpu: f(|o| o.cpu),
            cpu_withdraw: f(|o| o.cpu_withdraw),
            peak_rss: u(|o| o.peak_rss),
            bytes_per_path: f(|o| o.bytes_per_path),
            updates_out: u(|o| o.updates_out),
            changes_out: u(|o| o.changes_out),
            gen_cpu: f(|o| o.gen_cpu),
            other_cpu: f(|o| o.other_cpu),
            stray_kernel_routes: runs.iter().filter_map(|o| o.stray_kernel_routes).max(),
            error: None,
            skipped: None,
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn secs(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64()
}

/// Runs one scenario against one freshly started DUT, filling `o` as it goes (so a failure
/// halfway still reports what was measured).
fn run_one(
    sc: &Scenario,
    feed: &Feed,
    kind: DutKind,
    env: &Env,
    quiet: Duration,
    o: &mut Outcome,
) -> Result<()> {
    let topo = Topo::new(sc)?;
    let mut dut = start_dut(kind, sc, &topo, env)?;
    let timeout = Duration::from_secs(60) + Duration::from_micros(150 * sc.paths() as u64);
    let receiver = PeerSpec {
        name: "recv".into(),
        local: receiver_addr(sc.family),
        asn: RECEIVER_AS,
        router_id: Ipv4Addr::new(10, 2, 0, 3),
    };
    let senders: Vec<PeerSpec> = (0..sc.senders)
        .map(|k| PeerSpec {
            name: format!("s{k}"),
            local: sender_addr(sc.family, k),
            asn: SENDER_AS + k as u32,
            router_id: Ipv4Addr::new(10, 2, 0, 10 + k as u8),
        })
        .collect();
    let generator = Generator::connect(
        &topo.gen_ns,
        dut_addr(sc.family),
        sc.family,
        &receiver,
        &senders,
        Duration::from_secs(60),
        &mut || dut.alive(),
    )?;
    let fib = if sc.kernel {
        // RTPROT_BIRD (12: BIRD, and birdd as Calico expects), RTPROT_BGP (186: zebra).
        Some(FibWatch::start(&topo.dut, &[12, 186])?)
    } else {
        None
    };
    // Initial End-of-RIBs and the like.
    std::thread::sleep(Duration::from_secs(1));
    dut.alive()?;

    let me = std::process::id();
    let (cpu0, rss0, gen0, all0) = (
        dut.cpu(),
        dut.rss(),
        cpu_seconds(me)?,
        machine_busy_seconds()?,
    );
    let (_, upd0, chg0) = generator.counts();
    let target = sc.prefixes;
    generator.expect(target);
    if let Some(f) = &fib {
        f.expect(target);
    }
    let feeds: Vec<&Batches> = feed.announce.iter().collect();
    let (t0, sent) = generator.blast(&feeds)?;
    o.send = Some(secs(t0, sent));
    let s = generator.wait(quiet, timeout, &mut || dut.alive())?;
    o.converge = Some(secs(t0, s.reached));
    o.last_rx = Some(secs(t0, s.last_rx));
    o.all_peers = Some(secs(t0, s.last_any));
    o.cpu = Some(dut.cpu() - cpu0);
    o.gen_cpu = Some(cpu_seconds(me)? - gen0);
    o.other_cpu = Some(
        (machine_busy_seconds()? - all0 - o.cpu.unwrap_or(0.0) - o.gen_cpu.unwrap_or(0.0)).max(0.0),
    );
    let (_, upd1, chg1) = generator.counts();
    o.updates_out = Some(upd1 - upd0);
    o.changes_out = Some(chg1 - chg0);
    if !sc.kernel {
        let n: usize = ["-4", "-6"]
            .iter()
            .map(|f| {
                let out = topo.dut.exec("ip", &[f, "route", "show", "proto", "bird"]);
                String::from_utf8_lossy(&out.stdout).lines().count()
            })
            .sum();
        o.stray_kernel_routes = (n > 0).then_some(n);
    }
    o.bytes_per_path = Some((dut.rss().saturating_sub(rss0)) as f64 / sc.paths().max(1) as f64);
    if let Some(f) = &fib {
        let at = f.wait(timeout, &mut || dut.alive())?;
        o.fib = Some(secs(t0, at));
        let n = f.dump_count()?;
        if n != target {
            bail!("the kernel table holds {n} routes, the notifications said {target}");
        }
    }

    if let Some(churn) = &feed.churn {
        // F: what counts is the churn, from the first withdrawal to the last UPDATE out.
        let (cpu0, gen0, all0) = (dut.cpu(), cpu_seconds(me)?, machine_busy_seconds()?);
        let (_, upd0, chg0) = generator.counts();
        generator.expect(target + 1);
        let (t0, sent) = generator.blast(&[churn])?;
        o.send = Some(secs(t0, sent));
        let s = generator.wait(quiet, timeout, &mut || dut.alive())?;
        o.converge = Some(secs(t0, s.reached));
        o.last_rx = Some(secs(t0, s.last_rx));
        o.all_peers = Some(secs(t0, s.last_any));
        o.cpu = Some(dut.cpu() - cpu0);
        o.gen_cpu = Some(cpu_seconds(me)? - gen0);
        o.other_cpu = Some(
            (machine_busy_seconds()? - all0 - o.cpu.unwrap_or(0.0) - o.gen_cpu.unwrap_or(0.0))
                .max(0.0),
        );
        let (_, upd1, chg1) = generator.counts();
        o.updates_out = Some(upd1 - upd0);
        o.changes_out = Some(chg1 - chg0);
        if let Some(f) = &fib {
            f.expect(target + 1);
        }
    }

    let cpu1 = dut.cpu();
    generator.expect(0);
    if let Some(f) = &fib {
        f.expect(0);
    }
    let feeds: Vec<&Batches> = feed.withdraw.iter().collect();
    let (t1, _) = generator.blast(&feeds)?;
    let s = generator.wait(quiet, timeout, &mut || dut.alive())?;
    o.withdraw = Some(secs(t1, s.reached));
    o.cpu_withdraw = Some(dut.cpu() - cpu1);
    if let Some(f) = &fib {
        let at = f.wait(timeout, &mut || dut.alive())?;
        o.fib_withdraw = Some(secs(t1, at));
    }
    o.peak_rss = Some(dut.peak_rss());
    let failed = generator.failures();
    if !failed.is_empty() {
        bail!("sessions went down: {}", failed.join("; "));
    }
    drop(generator);
    drop(fib);
    drop(dut);
    drop(topo);
    Ok(())
}

// ===== report =====

/// Seconds, of the clock or of a process's CPU clock, to the millisecond.
fn ms3(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

/// The machine's busy seconds: /proc/stat counts 10 ms ticks, so two decimals.
fn c2(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn mb(b: Option<u64>) -> Option<f64> {
    b.map(|b| b as f64 / 1e6)
}

fn render(sc: &Scenario, results: &[(DutKind, Outcome)]) -> String {
    let fib = sc.kernel;
    let mut head = vec!["DUT", "converge s", "last UPD s", "all peers s"];
    if fib {
        head.push("FIB s");
    }
    head.push("withdraw s");
    if fib {
        head.push("FIB out s");
    }
    head.extend([
        "CPU s",
        "CPU wd s",
        "peak RSS MB",
        "B/path",
        "UPDATEs out",
        "prefix msgs out",
        "gen CPU s",
        "other CPU s",
    ]);
    let mut t = Table::new(&head);
    let row = |name: String, o: &Outcome| -> Vec<String> {
        let mut r = vec![name, ms3(o.converge), ms3(o.last_rx), ms3(o.all_peers)];
        if fib {
            r.push(ms3(o.fib));
        }
        r.push(ms3(o.withdraw));
        if fib {
            r.push(ms3(o.fib_withdraw));
        }
        r.extend([
            ms3(o.cpu),
            ms3(o.cpu_withdraw),
            mb(o.peak_rss).map_or("-".into(), |v| format!("{v:.1}")),
            o.bytes_per_path.map_or("-".into(), |v| format!("{v:.0}")),
            o.updates_out.map_or("-".into(), |v| v.to_string()),
            o.changes_out.map_or("-".into(), |v| v.to_string()),
            ms3(o.gen_cpu),
            c2(o.other_cpu),
        ]);
        r
    };
    for (k, o) in results {
        t.row(row(k.name().into(), o));
    }
    let get = |k: DutKind| results.iter().find(|(x, _)| *x == k).map(|(_, o)| o);
    if let (Some(a), Some(b)) = (get(DutKind::Birdd), get(DutKind::Bird)) {
        let mut r = vec![
            "birdd/BIRD".to_string(),
            ratio(a.converge, b.converge),
            ratio(a.last_rx, b.last_rx),
            ratio(a.all_peers, b.all_peers),
        ];
        if fib {
            r.push(ratio(a.fib, b.fib));
        }
        r.push(ratio(a.withdraw, b.withdraw));
        if fib {
            r.push(ratio(a.fib_withdraw, b.fib_withdraw));
        }
        r.extend([
            ratio(a.cpu, b.cpu),
            ratio(a.cpu_withdraw, b.cpu_withdraw),
            ratio(mb(a.peak_rss), mb(b.peak_rss)),
            ratio(a.bytes_per_path, b.bytes_per_path),
            ratio(
                a.updates_out.map(|v| v as f64),
                b.updates_out.map(|v| v as f64),
            ),
            ratio(
                a.changes_out.map(|v| v as f64),
                b.changes_out.map(|v| v as f64),
            ),
            String::new(),
            String::new(),
        ]);
        t.row(r);
    }
    let mut out = format!(
        "\n{} — {} ({} paths in the DUT)\n\n{}",
        sc.key,
        sc.title,
        sc.paths(),
        t.render()
    );
    for (k, o) in results {
        if let Some(why) = &o.skipped {
            let _ = writeln!(out, "  {}: not run — {why}", k.name());
        }
        if let Some(e) = &o.error {
            let _ = writeln!(out, "  {}: FAILED — {e}", k.name());
        }
        if let Some(n) = o.stray_kernel_routes {
            let _ = writeln!(
                out,
                "  {}: put {n} routes into the kernel in a scenario without kernel export",
                k.name()
            );
        }
    }
    out
}

fn json_line(sc: &Scenario, k: DutKind, o: &Outcome) -> serde_json::Value {
    json!({
        "scenario": sc.key, "title": sc.title, "paths": sc.paths(), "dut": k.name(),
        "converge_s": o.converge, "last_update_s": o.last_rx, "all_peers_s": o.all_peers,
        "send_s": o.send, "fib_s": o.fib, "withdraw_s": o.withdraw,
        "fib_withdraw_s": o.fib_withdraw, "cpu_s": o.cpu, "cpu_withdraw_s": o.cpu_withdraw,
        "peak_rss_bytes": o.peak_rss, "bytes_per_path": o.bytes_per_path,
        "updates_out": o.updates_out, "prefix_changes_out": o.changes_out,
        "generator_cpu_s": o.gen_cpu, "other_cpu_s": o.other_cpu,
        "stray_kernel_routes": o.stray_kernel_routes, "error": o.error, "skipped": o.skipped,
    })
}

/// One run of one daemon in one scenario (or the reason it sits out), its JSON line written.
fn run_dut(
    sc: &Scenario,
    feed: &Feed,
    k: DutKind,
    env: &Env,
    args: &Args,
    quiet: Duration,
    run: u32,
) -> Result<Outcome> {
    let mut o = Outcome::default();
    if k == DutKind::Gobgp && sc.kernel {
        o.skipped = Some("gobgpd alone does not program the kernel (it needs zebra)".into());
    } else if k == DutKind::Gobgp && sc.paths() > args.gobgp_max_paths {
        o.skipped = Some(format!(
            "{} paths is over --gobgp-max-paths {} (GoBGP took 73 s and 2.2 GB for 1 M here)",
            sc.paths(),
            args.gobgp_max_paths
        ));
    } else {
        eprint!("{} {} run {} ... ", sc.key, k.name(), run + 1);
        let t = Instant::now();
        if let Err(e) = run_one(sc, feed, k, env, quiet, &mut o) {
            o.error = Some(format!("{e:#}"));
        }
        eprintln!(
            "{:.1} s{}",
            t.elapsed().as_secs_f64(),
            if o.error.is_some() { " (failed)" } else { "" }
        );
    }
    if let Some(path) = &args.json {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut line = json_line(sc, k, &o);
        line["run"] = json!(run + 1);
        writeln!(f, "{line}")?;
    }
    Ok(o)
}

/// Each run's convergence, CPU and withdrawal, for the daemons that ran more than once: how
/// far the medians above can be trusted ("failed" for a run that did not finish).
fn spread(duts: &[DutKind], runs: &[Vec<Outcome>]) -> String {
    let mut out = String::new();
    for (k, os) in duts.iter().zip(runs) {
        if os.len() < 2 {
            continue;
        }
        let list = |get: fn(&Outcome) -> Option<f64>| {
            os.iter()
                .map(|o| {
                    if o.error.is_some() || o.skipped.is_some() {
                        "failed".to_string()
                    } else {
                        ms3(get(o))
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "  {} over {} runs: converge {} s, CPU {} s, withdraw {} s",
            k.name(),
            os.len(),
            list(|o| o.converge),
            list(|o| o.cpu),
            list(|o| o.withdraw),
        );
    }
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    calico_bench::catch_interrupts()?;
    let duts: Vec<DutKind> = args
        .duts
        .iter()
        .map(|s| DutKind::parse(s))
        .collect::<Result<_>>()?;
    let scs = scenarios(&args.scenarios, args.shrink)?;
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false);
    if !root {
        bail!("bench-bgp makes network namespaces: run it as root");
    }
    let mut env = Env::default();
    for k in &duts {
        match k {
            DutKind::Birdd => {
                let dir = calico_bench::binaries_dir(
                    args.bin_dir.clone(),
                    &["birdd"],
                    "cargo build --release -p birdd",
                )?;
                env.birdd = dir.join("birdd");
                calico_etcd_harness::etcd_binary();
            }
            DutKind::Bird => env.bird = require("bird", "bird2")?,
            DutKind::Frr => {
                env.bgpd = require("bgpd", "frr")?;
                env.zebra = require("zebra", "frr")?;
            }
            DutKind::Gobgp => env.gobgpd = require("gobgpd", "gobgpd")?,
        }
    }
    let quiet = Duration::from_secs_f64(args.quiet);
    println!(
        "BGP benchmark: every daemon on the same feed, each restarted per scenario, eBGP \
         (DUT AS {DUT_AS}, senders AS {SENDER_AS}+k, receiver AS {RECEIVER_AS}), import and \
         export everything to every session; 2 CPUs shared by the DUT and the generator."
    );
    for k in &duts {
        println!("  {:<7} {}", k.name(), k.version(&env));
    }
    println!(
        "  FRR's figures are bgpd + zebra (bgpd -n, except in E). Times are from the first \
         UPDATE written; a phase ends when no session has had an UPDATE for {:.1} s. \
         Senders hear each other's routes (all peers s). CPU s: the DUT's, announcing; \
         gen CPU s: this generator's; other CPU s: the rest of the machine meanwhile.",
        quiet.as_secs_f64(),
    );
    if args.runs > 1 {
        println!(
            "  birdd and BIRD run {} times per scenario, alternating which goes first; each \
             figure is the median of their runs (FRR and GoBGP run once).",
            args.runs
        );
    }
    let started = Instant::now();
    let mut all: Vec<(Scenario, Vec<(DutKind, Outcome)>)> = Vec::new();
    for sc in &scs {
        let feed = Feed::build(sc);
        let mut runs: Vec<Vec<Outcome>> = vec![Vec::new(); duts.len()];
        for run in 0..args.runs {
            // Which daemon goes first alternates, so that a drift in the machine's load over
            // a scenario's runs does not always favour the same one.
            let mut order: Vec<usize> = (0..duts.len()).collect();
            if run % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let k = duts[i];
                if run > 0 && !matches!(k, DutKind::Birdd | DutKind::Bird) {
                    continue;
                }
                check_interrupted()?;
                let o = run_dut(sc, &feed, k, &env, &args, quiet, run)?;
                runs[i].push(o);
            }
        }
        let results: Vec<(DutKind, Outcome)> = duts
            .iter()
            .zip(&runs)
            .map(|(k, os)| (*k, Outcome::median(os)))
            .collect();
        print!("{}", render(sc, &results));
        print!("{}", spread(&duts, &runs));
        all.push((sc.clone(), results));
    }

    // Against the issue's targets: birdd <= 1.0x BIRD's time and CPU, <= 100 B per path, no
    // more UPDATEs than BIRD, the kernel no slower than BIRD's.
    let mut t = Table::new(&[
        "scenario",
        "converge birdd/BIRD",
        "CPU birdd/BIRD",
        "withdraw birdd/BIRD",
        "B/path birdd",
        "UPDATEs birdd/BIRD",
        "FIB birdd/BIRD",
        "targets",
    ]);
    for (sc, results) in &all {
        let get = |k: DutKind| {
            results
                .iter()
                .find(|(x, o)| *x == k && o.error.is_none() && o.skipped.is_none())
                .map(|(_, o)| o)
        };
        let (Some(a), Some(b)) = (get(DutKind::Birdd), get(DutKind::Bird)) else {
            // A daemon that failed (its error is under the scenario's table) is no target met.
            if duts.contains(&DutKind::Birdd) && duts.contains(&DutKind::Bird) {
                let mut row = vec![sc.key.to_string()];
                row.extend(std::iter::repeat_n("-".to_string(), 6));
                row.push("FAILED: a run did not finish".into());
                t.row(row);
            }
            continue;
        };
        let r = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y > 0.0 => Some(x / y),
            _ => None,
        };
        let conv = r(a.converge, b.converge);
        let cpu = r(a.cpu, b.cpu);
        let upd = r(
            a.updates_out.map(|v| v as f64),
            b.updates_out.map(|v| v as f64),
        );
        let fib = r(a.fib, b.fib);
        let mut missed = Vec::new();
        if conv.is_some_and(|v| v > 1.0) {
            missed.push("time");
        }
        if cpu.is_some_and(|v| v > 1.0) {
            missed.push("CPU");
        }
        if a.bytes_per_path.is_some_and(|v| v > 100.0) && sc.paths() >= 100_000 {
            missed.push("B/path");
        }
        if upd.is_some_and(|v| v > 1.0) {
            missed.push("UPDATEs");
        }
        if fib.is_some_and(|v| v > 1.0) {
            missed.push("FIB");
        }
        let x = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}x"));
        t.row(vec![
            sc.key.to_string(),
            x(conv),
            x(cpu),
            x(r(a.withdraw, b.withdraw)),
            a.bytes_per_path.map_or("-".into(), |v| format!("{v:.0}")),
            x(upd),
            x(fib),
            if missed.is_empty() {
                "met".into()
            } else {
                format!("MISSED: {}", missed.join(", "))
            },
        ]);
    }
    println!(
        "\nbirdd against BIRD, medians of {} runs (targets: <= 1.0x time and CPU, <= 100 B/path, \
         no more UPDATEs, kernel no slower)\n\n{}",
        args.runs,
        t.render()
    );
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(converge: f64, updates: u64) -> Outcome {
        Outcome {
            converge: Some(converge),
            updates_out: Some(updates),
            ..Outcome::default()
        }
    }

    #[test]
    fn medians_take_the_middle_run_of_each_figure() {
        let m = Outcome::median(&[run(0.3, 10), run(0.1, 30), run(0.2, 20)]);
        assert_eq!(m.converge, Some(0.2));
        assert_eq!(m.updates_out, Some(20));
        assert_eq!(m.withdraw, None, "a figure no run has stays empty");
        let m = Outcome::median(&[run(0.4, 10), run(0.1, 21)]);
        assert_eq!(m.converge, Some(0.25), "even: the mean of the middle two");
        assert_eq!(m.updates_out, Some(16), "a count's mean is rounded");
    }

    #[test]
    fn a_failed_run_is_the_result() {
        let mut failed = run(0.5, 1);
        failed.error = Some("sessions went down".into());
        let m = Outcome::median(&[run(0.1, 1), failed, run(0.2, 1)]);
        assert_eq!(m.error.as_deref(), Some("run 2: sessions went down"));
    }
}
