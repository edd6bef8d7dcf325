//! One lab node: a network namespace with an uplink to the fabric, its Node resource as
//! calico-node writes it, and the per-node daemons (ipamd, felixd, birdd) running inside it,
//! each with its sockets, ports and log in the node's run directory.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_api::ObjectMeta;
use calico_datastore::ResourceClient;
use calico_etcd_harness::Etcd;
use calico_netns_harness::NetNs;
use serde_json::{Value, json};

use crate::daemon::{kill_child, log_tail, spawn_in, stop_child, wait_for_path};
use crate::state::{DaemonPids, NodeState};
use crate::teardown::RunDir;
use crate::{NODE_V4, NODE_V6, Pool, create_pools, with_client};

/// felixd's health, readiness and metrics address inside a node (Calico's default port).
const FELIX_HTTP: &str = "127.0.0.1:9099";
/// birdd's health and metrics address inside a node.
const BIRDD_HTTP: &str = "127.0.0.1:9095";

/// How a node is made.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub name: String,
    /// Where `ipamd` (and the other binaries) are.
    pub bin_dir: PathBuf,
    /// IP pools: (name, CIDR, block size).
    pub pools: Vec<(String, String, u8)>,
}

impl NodeOptions {
    pub fn new(bin_dir: &Path) -> NodeOptions {
        NodeOptions {
            name: "node-a".into(),
            bin_dir: bin_dir.to_path_buf(),
            pools: vec![
                ("v4".into(), "10.244.0.0/16".into(), 26),
                ("v6".into(), "fd00:244::/64".into(), 122),
            ],
        }
    }
}

pub struct Node {
    pub ns: NetNs,
    /// The network at the other end of the node's uplink (shared by a cluster's nodes).
    pub fabric: Arc<NetNs>,
    /// The node's run directory: sockets, logs, the CNI plugin's files.
    pub dir: RunDir,
    /// The node's own etcd, for a node on its own; a cluster's nodes share the cluster's.
    pub etcd: Option<Etcd>,
    etcd_endpoint: String,
    /// The node's addresses on its uplink.
    pub v4: IpAddr,
    pub v6: IpAddr,
    pub ipamd: Option<Child>,
    pub socket: PathBuf,
    pub felixd: Option<Child>,
    /// felixd's agent socket (the CNI plugin's `felix_endpoint`).
    pub agent_socket: PathBuf,
    /// felixd's health, readiness and metrics, inside the node.
    pub felix_http: SocketAddr,
    pub birdd: Option<Child>,
    /// birdd's control socket (`calicoctl node status` reads it through
    /// `CALICO_BIRDD_SOCKET`).
    pub birdd_socket: PathBuf,
    /// birdd's health and metrics, inside the node.
    pub birdd_http: SocketAddr,
    pub name: String,
    bin_dir: PathBuf,
    /// Daemons started by an earlier process (a launcher's cluster), known by pid only.
    others: DaemonPids,
    /// Daemons run in their own process group (a named cluster that may outlive us).
    detached: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.name).finish()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for f in ["ipamd.log", "cni.log", "felixd.log", "birdd.log"] {
                let path = self.dir.path().join(f);
                if path.exists() {
                    eprintln!(
                        "--- {} {f}:\n{}",
                        self.name,
                        std::fs::read_to_string(path).unwrap_or_default()
                    );
                }
            }
        }
        self.stop_birdd();
        self.stop_felixd();
        self.stop_ipamd();
    }
}

/// The node's uplink: a veth from the node's namespace to the fabric (`peer` there), the
/// node's addresses, a default route via the fabric's gateway, and forwarding on.
pub(crate) fn wire_uplink(ns: &NetNs, fabric: &NetNs, peer: &str, v4: &str, v6: &str) {
    ns.exec(
        "ip",
        &[
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            fabric.name(),
        ],
    );
    ns.exec("ip", &["addr", "add", &format!("{v4}/24"), "dev", "uplink"]);
    ns.exec(
        "ip",
        &["addr", "add", &format!("{v6}/64"), "dev", "uplink", "nodad"],
    );
    ns.exec("ip", &["link", "set", "uplink", "up"]);
    fabric.exec("ip", &["link", "set", peer, "up"]);
    ns.exec(
        "ip",
        &[
            "route",
            "add",
            "default",
            "via",
            "10.99.0.254",
            "dev",
            "uplink",
            "onlink",
        ],
    );
    ns.exec(
        "ip",
        &[
            "-6", "route", "add", "default", "via", "fd99::fe", "dev", "uplink", "onlink",
        ],
    );
    ns.sysctl(&["net", "ipv4", "ip_forward"], "1");
    ns.sysctl(&["net", "ipv6", "conf", "all", "forwarding"], "1");
}

/// How [`Node::create`] places a node.
pub(crate) struct Placement {
    pub ns: NetNs,
    pub fabric: Arc<NetNs>,
    pub etcd: Option<Etcd>,
    pub etcd_endpoint: String,
    pub v4: String,
    pub v6: String,
    pub dir: RunDir,
    pub detached: bool,
}

impl Node {
    /// A node on its own: its own fabric namespace at the other end of its uplink, its own
    /// etcd, the pools, and ipamd.
    pub fn start(opts: NodeOptions) -> Node {
        let fabric = Arc::new(NetNs::new("fabric"));
        let ns = NetNs::new("node");
        wire_uplink(&ns, &fabric, "net0", NODE_V4, NODE_V6);
        let etcd = ns.run(Etcd::start);
        let endpoint = etcd.endpoint();
        let pools: Vec<Pool> = opts.pools.iter().map(Pool::from).collect();
        create_pools(&ns, &endpoint, &pools);
        Node::create(
            opts,
            Placement {
                ns,
                fabric,
                etcd: Some(etcd),
                etcd_endpoint: endpoint,
                v4: NODE_V4.into(),
                v6: NODE_V6.into(),
                dir: RunDir::temp(),
                detached: false,
            },
        )
    }

    /// The common tail: the Node resource (as calico-node writes it), the directory, ipamd.
    pub(crate) fn create(opts: NodeOptions, p: Placement) -> Node {
        let ipamd_bin = opts.bin_dir.join("ipamd");
        assert!(
            ipamd_bin.exists(),
            "{} is missing: build the workspace first (`cargo build --workspace`)",
            ipamd_bin.display()
        );
        let mut node = Node::assemble(&opts.name, &opts.bin_dir, p);
        let (name, v4, v6) = (
            node.name.clone(),
            format!("{}/24", node.v4),
            format!("{}/64", node.v6),
        );
        node.with_datastore(async move |rc| {
            let mut n = calico_api::resource::Node::new(
                ObjectMeta::named(name),
                calico_api::kinds::NodeSpec {
                    bgp: Some(calico_api::kinds::NodeBgpSpec {
                        ipv4_address: v4,
                        ipv6_address: v6,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
            n.metadata
                .labels
                .insert("kubernetes.io/os".into(), "linux".into());
            rc.create(n).await.expect("creating the Node resource");
        });
        node.start_ipamd();
        node
    }

    fn assemble(name: &str, bin_dir: &Path, p: Placement) -> Node {
        let dir = p.dir;
        Node {
            ns: p.ns,
            fabric: p.fabric,
            socket: dir.path().join("ipam.sock"),
            agent_socket: dir.path().join("felix.sock"),
            birdd_socket: dir.path().join("birdd.sock"),
            dir,
            etcd: p.etcd,
            etcd_endpoint: p.etcd_endpoint,
            v4: p.v4.parse().expect("an address"),
            v6: p.v6.parse().expect("an address"),
            ipamd: None,
            felixd: None,
            felix_http: FELIX_HTTP.parse().expect("an address"),
            birdd: None,
            birdd_http: BIRDD_HTTP.parse().expect("an address"),
            name: name.to_string(),
            bin_dir: bin_dir.to_path_buf(),
            others: DaemonPids::default(),
            detached: p.detached,
        }
    }

    /// A node of a cluster an earlier process started and left running (the launcher's
    /// state): its namespace and directory are left in place when this value is dropped,
    /// and its daemons are known by pid only.
    pub fn attach(
        s: &NodeState,
        fabric: Arc<NetNs>,
        etcd_endpoint: &str,
        bin_dir: &Path,
    ) -> std::io::Result<Node> {
        let mut node = Node::assemble(
            &s.name,
            bin_dir,
            Placement {
                ns: NetNs::open(&s.netns)?,
                fabric,
                etcd: None,
                etcd_endpoint: etcd_endpoint.to_string(),
                v4: s.v4.to_string(),
                v6: s.v6.to_string(),
                dir: RunDir::existing(&s.dir),
                detached: true,
            },
        );
        node.others = s.pids;
        Ok(node)
    }

    /// Hands the node over to a later process: its namespace, directory and daemons stay
    /// when this value is dropped. Returns what that process needs to find them.
    pub fn detach(&mut self) -> NodeState {
        let pids = self.pids();
        self.ns.keep();
        self.dir.keep();
        // Dropping a `Child` neither kills nor waits.
        self.ipamd = None;
        self.felixd = None;
        self.birdd = None;
        self.others = pids;
        NodeState {
            name: self.name.clone(),
            netns: self.ns.name().to_string(),
            v4: self.v4,
            v6: self.v6,
            dir: self.dir.path().to_path_buf(),
            pids,
        }
    }

    /// The pids of the node's daemons.
    pub fn pids(&self) -> DaemonPids {
        let id = |c: &Option<Child>, other: Option<u32>| c.as_ref().map(Child::id).or(other);
        DaemonPids {
            ipamd: id(&self.ipamd, self.others.ipamd),
            felixd: id(&self.felixd, self.others.felixd),
            birdd: id(&self.birdd, self.others.birdd),
        }
    }

    pub fn etcd_endpoint(&self) -> String {
        self.etcd_endpoint.clone()
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn start_ipamd(&mut self) {
        let mut cmd = Command::new(self.bin_dir.join("ipamd"));
        cmd.env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", self.etcd_endpoint())
            .args(["--nodename", &self.name, "--http-listen", "none", "--no-gc"])
            .args(["--log-level", "warn"])
            .arg("--listen")
            .arg(format!("unix://{}", self.socket.display()));
        let log = self.dir.path().join("ipamd.log");
        // A socket left by a killed ipamd would read as "started" before the new one listens.
        let _ = std::fs::remove_file(&self.socket);
        let mut child = spawn_in(&self.ns, cmd, &log, self.detached);
        let started = wait_for_path(
            "ipamd",
            &self.socket,
            &mut child,
            &log,
            Duration::from_secs(20),
        );
        self.ipamd = Some(child);
        if let Err(e) = started {
            panic!("{}: {e}", self.name);
        }
    }

    pub fn stop_ipamd(&mut self) {
        if let Some(c) = self.ipamd.take() {
            kill_child(c);
        }
    }

    /// Starts felixd in the node with `env` (FELIX_* settings) and waits until it is ready:
    /// in sync with the node's etcd and the kernel programmed.
    pub fn start_felixd(&mut self, env: &[(&str, &str)]) {
        let bin = self.bin_dir.join("felixd");
        assert!(
            bin.exists(),
            "{} is missing: build the workspace first (`cargo build --workspace`)",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", self.etcd_endpoint())
            .env("RUST_LOG", "info,felixd=debug")
            .envs(env.iter().copied())
            .args(["--nodename", &self.name])
            .args(["--http-listen", &self.felix_http.to_string()])
            .arg("--agent-socket")
            .arg(&self.agent_socket)
            .arg("--mtu-file")
            .arg(self.dir.path().join("mtu"));
        let log = self.dir.path().join("felixd.log");
        self.felixd = Some(spawn_in(&self.ns, cmd, &log, self.detached));
        self.wait_felixd_ready(Duration::from_secs(30));
    }

    /// Stops felixd (SIGTERM, then SIGKILL after 5 s). Its rules stay in the kernel.
    pub fn stop_felixd(&mut self) {
        if let Some(c) = self.felixd.take() {
            stop_child(c, Duration::from_secs(5));
        }
    }

    /// Kills felixd with SIGKILL, as a crash or an OOM kill would. Its rules stay in the
    /// kernel.
    pub fn kill_felixd(&mut self) {
        if let Some(c) = self.felixd.take() {
            kill_child(c);
        }
    }

    /// An HTTP GET to felixd inside the node: (status code, body).
    pub fn felixd_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.ns, self.felix_http, path)
    }

    /// Waits for felixd's /readiness.
    pub fn wait_felixd_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some((200, _)) = self.felixd_get("/readiness") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: felixd did not become ready within {within:?}: {:?}\n{}\n{}",
                self.name,
                self.felixd_get("/readiness"),
                std::fs::read_to_string(self.dir.path().join("felixd.log")).unwrap_or_default(),
                self.network_dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// birdd's log file.
    pub fn birdd_log(&self) -> PathBuf {
        self.dir.path().join("birdd.log")
    }

    /// Starts birdd in the node (its BGP port 179 on the node's addresses, its control
    /// socket in the node's directory) and waits until the control socket is there.
    /// Panics with the tail of `birdd.log` if birdd exits or does not get there in 20 s.
    pub fn start_birdd(&mut self) {
        if let Err(e) = self.try_start_birdd() {
            panic!("{}: {e}", self.name);
        }
    }

    /// [`Node::start_birdd`] that returns what went wrong instead of panicking (the demo
    /// prints it).
    pub fn try_start_birdd(&mut self) -> Result<(), String> {
        let bin = self.bin_dir.join("birdd");
        if !bin.exists() {
            return Err(format!(
                "{} is missing: build it first (`cargo build -p birdd`)",
                bin.display()
            ));
        }
        let _ = std::fs::remove_file(&self.birdd_socket);
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", self.etcd_endpoint())
            .env("RUST_LOG", "info")
            .args(["--nodename", &self.name])
            .arg("--control-socket")
            .arg(&self.birdd_socket)
            .args(["--http-listen", &self.birdd_http.to_string()]);
        let log = self.birdd_log();
        let mut child = spawn_in(&self.ns, cmd, &log, self.detached);
        let started = wait_for_path(
            "birdd",
            &self.birdd_socket,
            &mut child,
            &log,
            Duration::from_secs(20),
        );
        self.birdd = Some(child);
        if started.is_err() {
            self.kill_birdd();
        }
        started
    }

    /// Stops birdd (SIGTERM, then SIGKILL after 5 s). Routes it installed are its to remove
    /// (or to leave for graceful restart).
    pub fn stop_birdd(&mut self) {
        if let Some(c) = self.birdd.take() {
            stop_child(c, Duration::from_secs(5));
        }
    }

    /// Kills birdd with SIGKILL: its sessions drop without a NOTIFICATION, and its peers
    /// notice when their hold timer expires.
    pub fn kill_birdd(&mut self) {
        if let Some(c) = self.birdd.take() {
            kill_child(c);
        }
    }

    /// The last lines of birdd's log.
    pub fn birdd_log_tail(&self, lines: usize) -> String {
        log_tail(&self.birdd_log(), lines)
    }

    /// The `calico` plugin's configuration for this node (dual stack, Kubernetes policy).
    pub fn calico_plugin(&self) -> Value {
        json!({
            "type": "calico",
            "etcd_endpoints": self.etcd_endpoint(),
            "nodename": self.name,
            "nodename_file_optional": true,
            "mtu": 1440,
            "log_level": "info",
            "log_file_path": self.dir.path().join("cni.log").display().to_string(),
            "ipam_lock_file": self.dir.path().join("locks/ipam.lock").display().to_string(),
            "pending_dir": self.dir.path().join("pending").display().to_string(),
            "ipam": {
                "type": "calico-ipam",
                "endpoint": format!("unix://{}", self.socket.display()),
                "assign_ipv4": "true",
                "assign_ipv6": "true",
            },
            "policy": {"type": "k8s"},
            "felix_endpoint": format!("unix://{}", self.agent_socket.display()),
        })
    }

    /// Runs `f` inside the node's namespace (where runtimes run plugins).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.run(f)
    }

    /// Runs `f` with a client of the node's datastore, from inside the node.
    pub fn with_datastore<T: Send>(&self, f: impl AsyncFnOnce(ResourceClient) -> T + Send) -> T {
        with_client(&self.ns, &self.etcd_endpoint, f)
    }

    /// Every allocation in the datastore: (address, handle), read straight from the blocks.
    pub fn allocations(&self) -> Vec<(IpAddr, String)> {
        self.with_datastore(async |rc| crate::allocations(rc.datastore().clone()).await)
    }

    /// Links in the node whose names start with `cali`.
    pub fn cali_links(&self) -> Vec<String> {
        let out = self.ns.exec("ip", &["-o", "link", "show"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("cali"))
            .collect()
    }

    /// The node's routes (v4 and v6) as `ip route` prints them.
    pub fn routes(&self) -> String {
        let v4 = self.ns.exec("ip", &["route", "show"]);
        let v6 = self.ns.exec("ip", &["-6", "route", "show"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&v4.stdout),
            String::from_utf8_lossy(&v6.stdout)
        )
    }

    /// The node's and the fabric's links, addresses, routes and neighbours, for failure
    /// messages about reachability.
    pub fn network_dump(&self) -> String {
        let mut out = String::new();
        for (who, ns) in [(self.name.as_str(), &self.ns), ("fabric", &*self.fabric)] {
            for args in [
                &["-br", "link"][..],
                &["-br", "addr"],
                &["route"],
                &["neigh"],
            ] {
                if let Ok(o) = ns.try_exec("ip", args) {
                    out.push_str(&format!(
                        "--- {who}: ip {}\n{}{}",
                        args.join(" "),
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    ));
                }
            }
        }
        out
    }

    /// The routes birdd installed (`ip route show proto bird`, v4 and v6).
    pub fn bird_routes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            if let Ok(o) = self
                .ns
                .try_exec("ip", &[fam, "route", "show", "proto", "bird"])
            {
                out.extend(
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(str::to_string),
                );
            }
        }
        out
    }
}

/// An HTTP/1.0 GET from inside `ns`: (status code, body).
pub(crate) fn http_get(ns: &NetNs, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    ns.run(|| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: lab\r\n\r\n").as_bytes())
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    })
}
