//! A calico-rs node made of network namespaces: the node's namespace with an uplink to a
//! stand-in network (its address, a default route, forwarding on), its own etcd, IP pools,
//! and a real ipamd. Tests, benchmarks and the demo build on it; everything it starts is
//! stopped, and every namespace deleted, when it is dropped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_api::ObjectMeta;
use calico_api::kinds::IpPoolSpec;
use calico_api::resource::IpPool;
use calico_datastore::etcd::{EtcdConfig, EtcdDatastore};
use calico_datastore::{Datastore, KeyPrefix, ResourceClient};
use calico_etcd_harness::Etcd;
use calico_netns_harness::NetNs;
use serde_json::{Value, json};

pub const NODE_V4: &str = "10.99.0.1";
pub const NODE_V6: &str = "fd99::1";

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
    pub dir: tempfile::TempDir,
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
    pub felix_http: std::net::SocketAddr,
    pub name: String,
    bin_dir: PathBuf,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.name).finish()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_felixd();
        self.stop_ipamd();
        if std::thread::panicking() {
            for f in ["ipamd.log", "cni.log", "felixd.log"] {
                eprintln!(
                    "--- {f}:\n{}",
                    std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default()
                );
            }
        }
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// Runs `f` with a datastore client for `endpoint`, from inside `ns`.
fn with_client<T: Send>(
    ns: &NetNs,
    endpoint: &str,
    f: impl AsyncFnOnce(ResourceClient) -> T + Send,
) -> T {
    let endpoint = endpoint.to_string();
    ns.run(move || {
        block_on(async move {
            let ds = EtcdDatastore::connect(&EtcdConfig::new(vec![endpoint]))
                .await
                .expect("connecting to the lab's etcd");
            f(ResourceClient::new(Arc::new(ds))).await
        })
    })
}

/// The lab's IP pools.
fn create_pools(ns: &NetNs, endpoint: &str, pools: &[(String, String, u8)]) {
    let pools = pools.to_vec();
    with_client(ns, endpoint, async move |rc| {
        for (name, cidr, bs) in &pools {
            rc.create(IpPool::new(
                ObjectMeta::named(name.clone()),
                IpPoolSpec {
                    cidr: cidr.clone(),
                    block_size: Some(i64::from(*bs)),
                    ..Default::default()
                },
            ))
            .await
            .expect("creating an IP pool");
        }
    });
}

/// The node's uplink: a veth from the node's namespace to the fabric (`peer` there), the
/// node's addresses, a default route via the fabric's gateway, and forwarding on.
fn wire_uplink(ns: &NetNs, fabric: &NetNs, peer: &str, v4: &str, v6: &str) {
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

impl Node {
    /// A node on its own: its own fabric namespace at the other end of its uplink, its own
    /// etcd, the pools, and ipamd.
    pub fn start(opts: NodeOptions) -> Node {
        let fabric = Arc::new(NetNs::new("fabric"));
        let ns = NetNs::new("node");
        wire_uplink(&ns, &fabric, "net0", NODE_V4, NODE_V6);
        let etcd = ns.run(Etcd::start);
        let endpoint = etcd.endpoint();
        create_pools(&ns, &endpoint, &opts.pools);
        Node::finish(opts, ns, fabric, Some(etcd), endpoint, NODE_V4, NODE_V6)
    }

    /// The common tail: the Node resource (as calico-node writes it), the directory, ipamd.
    fn finish(
        opts: NodeOptions,
        ns: NetNs,
        fabric: Arc<NetNs>,
        etcd: Option<Etcd>,
        etcd_endpoint: String,
        v4: &str,
        v6: &str,
    ) -> Node {
        let ipamd_bin = opts.bin_dir.join("ipamd");
        assert!(
            ipamd_bin.exists(),
            "{} is missing: build the workspace first (`cargo build --workspace`)",
            ipamd_bin.display()
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("ipam.sock");
        let agent_socket = dir.path().join("felix.sock");
        let mut node = Node {
            ns,
            fabric,
            dir,
            etcd,
            etcd_endpoint,
            v4: v4.parse().expect("an address"),
            v6: v6.parse().expect("an address"),
            ipamd: None,
            socket,
            felixd: None,
            agent_socket,
            felix_http: "127.0.0.1:9099".parse().expect("an address"),
            name: opts.name.clone(),
            bin_dir: opts.bin_dir.clone(),
        };
        let (name, v4, v6) = (node.name.clone(), format!("{v4}/24"), format!("{v6}/64"));
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

    pub fn etcd_endpoint(&self) -> String {
        self.etcd_endpoint.clone()
    }

    pub fn start_ipamd(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("ipamd.log")).expect("log file");
        let endpoint = self.etcd_endpoint();
        let socket = self.socket.clone();
        let name = self.name.clone();
        let bin = self.bin_dir.join("ipamd");
        let child = self.ns.run(move || {
            Command::new(bin)
                .env("DATASTORE_TYPE", "etcdv3")
                .env("ETCD_ENDPOINTS", &endpoint)
                .args(["--nodename", &name, "--http-listen", "none", "--no-gc"])
                .args(["--log-level", "warn"])
                .arg("--listen")
                .arg(format!("unix://{}", socket.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting ipamd")
        });
        self.ipamd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() {
            assert!(Instant::now() < deadline, "ipamd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop_ipamd(&mut self) {
        if let Some(mut c) = self.ipamd.take() {
            let _ = c.kill();
            let _ = c.wait();
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("felixd.log"))
            .expect("log file");
        let endpoint = self.etcd_endpoint();
        let name = self.name.clone();
        let agent = self.agent_socket.clone();
        let http = self.felix_http.to_string();
        let mtu = self.dir.path().join("mtu");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = self.ns.run(move || {
            Command::new(bin)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("DATASTORE_TYPE", "etcdv3")
                .env("ETCD_ENDPOINTS", &endpoint)
                .env("RUST_LOG", "info,felixd=debug")
                .envs(env)
                .args(["--nodename", &name, "--http-listen", &http])
                .arg("--agent-socket")
                .arg(&agent)
                .arg("--mtu-file")
                .arg(mtu)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting felixd")
        });
        self.felixd = Some(child);
        self.wait_felixd_ready(Duration::from_secs(30));
    }

    /// Stops felixd (SIGTERM, then SIGKILL after 5 s). Its rules stay in the kernel.
    pub fn stop_felixd(&mut self) {
        if let Some(mut c) = self.felixd.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An HTTP GET to felixd inside the node: (status code, body).
    pub fn felixd_get(&self, path: &str) -> Option<(u16, String)> {
        let addr = self.felix_http;
        self.ns.run(|| {
            use std::io::{Read, Write};
            let mut s =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: felixd\r\n\r\n").as_bytes())
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            let code = out.split_whitespace().nth(1)?.parse().ok()?;
            let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
            Some((code, body))
        })
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
                "felixd did not become ready within {within:?}: {:?}\n{}",
                self.felixd_get("/readiness"),
                std::fs::read_to_string(self.dir.path().join("felixd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
        self.with_datastore(async |rc| allocations(rc.datastore().clone()).await)
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
}

async fn allocations(ds: Arc<dyn Datastore>) -> Vec<(IpAddr, String)> {
    let list = ds
        .list(&KeyPrefix::Blocks { ip_version: None })
        .await
        .expect("listing blocks");
    let mut out = Vec::new();
    for kv in list.items {
        let b: Value = serde_json::from_slice(&kv.value).expect("block JSON");
        let Some(cidr) = b["cidr"]
            .as_str()
            .and_then(|c| c.parse::<ipnet::IpNet>().ok())
        else {
            continue;
        };
        let attrs = b["attributes"].as_array().cloned().unwrap_or_default();
        let allocs = b["allocations"].as_array().cloned().unwrap_or_default();
        for (i, a) in allocs.iter().enumerate() {
            let Some(idx) = a.as_u64() else { continue };
            let handle = attrs
                .get(idx as usize)
                .and_then(|a| a["handle_id"].as_str())
                .unwrap_or_default()
                .to_string();
            let ip = match cidr.network() {
                IpAddr::V4(n) => IpAddr::V4((u32::from(n) + i as u32).into()),
                IpAddr::V6(n) => IpAddr::V6((u128::from(n) + i as u128).into()),
            };
            out.push((ip, handle));
        }
    }
    out
}

/// Several nodes on one fabric: a bridge in the fabric namespace (which is also the nodes'
/// gateway, 10.99.0.254, standing in for the network beyond), and one etcd in the fabric
/// that every node uses. Node `i` is `node-<a+i>` at 10.99.0.<i+1> and fd99::<i+1>.
pub struct Cluster {
    // Dropped in this order: nodes (and their daemons), then etcd, then the fabric.
    pub nodes: Vec<Node>,
    pub etcd: Etcd,
    pub fabric: Arc<NetNs>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Cluster {
    pub fn start(n: usize, opts: NodeOptions) -> Cluster {
        assert!((1..=26).contains(&n), "a lab cluster has 1 to 26 nodes");
        let fabric = Arc::new(NetNs::new("fabric"));
        fabric.exec("ip", &["link", "add", "br0", "type", "bridge"]);
        fabric.exec("ip", &["addr", "add", "10.99.0.254/24", "dev", "br0"]);
        fabric.exec("ip", &["addr", "add", "fd99::fe/64", "dev", "br0", "nodad"]);
        fabric.exec("ip", &["link", "set", "br0", "up"]);
        let etcd = fabric.run(|| Etcd::start_on("10.99.0.254".parse().expect("an address")));
        create_pools(&fabric, &etcd.endpoint(), &opts.pools);
        let endpoint = etcd.public_endpoint();
        let nodes = (0..n)
            .map(|i| {
                let ns = NetNs::new("node");
                let peer = format!("p{i}");
                let (v4, v6) = (format!("10.99.0.{}", i + 1), format!("fd99::{:x}", i + 1));
                wire_uplink(&ns, &fabric, &peer, &v4, &v6);
                fabric.exec("ip", &["link", "set", &peer, "master", "br0"]);
                let mut o = opts.clone();
                o.name = format!("node-{}", (b'a' + i as u8) as char);
                Node::finish(o, ns, fabric.clone(), None, endpoint.clone(), &v4, &v6)
            })
            .collect();
        Cluster {
            nodes,
            etcd,
            fabric,
        }
    }

    /// Runs `f` with a client of the cluster's datastore.
    pub fn with_datastore<T: Send>(&self, f: impl AsyncFnOnce(ResourceClient) -> T + Send) -> T {
        with_client(&self.fabric, &self.etcd.endpoint(), f)
    }
}
