//! Several nodes on one fabric: a bridge in the fabric namespace (which is also the nodes'
//! gateway, 10.99.0.254 and fd99::fe, standing in for the network beyond) and one etcd in
//! the fabric that every node uses. Node `i` is `node-<a+i>` at 10.99.0.<i+1> and
//! fd99::<i+1>. Every cluster has its own fabric, so clusters built side by side (parallel
//! tests) share no address, port or name.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use calico_api::codec::decode_documents;
use calico_datastore::ResourceClient;
use calico_netns_harness::NetNs;

use crate::node::{Placement, wire_uplink};
use crate::state::{ClusterState, EtcdState};
use crate::teardown::{PrefixGuard, RunDir, namespaces_with_prefix};
use crate::{EtcdServer, Node, NodeOptions, Pool, create_pools, with_client};

/// The fabric's gateway address, where etcd listens for the nodes.
pub const GATEWAY_V4: &str = "10.99.0.254";

/// How pods on different nodes reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encap {
    /// Native routing: the pools are not encapsulated; birdd carries the routes.
    #[default]
    None,
    /// The IPv4 pools have `vxlanMode: Always`; felixd programs the tunnel and the routes.
    Vxlan,
}

/// A cluster whose namespaces are called `<prefix>fabric`, `<prefix>node-a`, … and whose
/// files live in `run_dir` (etcd's data, which is larger, in `data_dir`): one that can
/// outlive the process that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub prefix: String,
    pub run_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl Naming {
    /// The cluster called `name`: namespaces `<name>-…`, sockets, logs and state under
    /// `/run/<name>`, etcd's data (some 130 MB of write-ahead log) in the temporary
    /// directory as `<name>-etcd`.
    pub fn new(name: &str) -> Naming {
        Naming {
            prefix: format!("{name}-"),
            run_dir: std::path::Path::new("/run").join(name),
            data_dir: std::env::temp_dir().join(format!("{name}-etcd")),
        }
    }
}

/// How a cluster is made.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// Where the binaries are, and the pools created at start.
    pub node: NodeOptions,
    /// The encapsulation of the pools created at start.
    pub encap: Encap,
    /// Calico resources (YAML) written before any daemon starts.
    pub resources: String,
    /// Start felixd on every node with these FELIX_* settings.
    pub felixd: Option<Vec<(String, String)>>,
    /// Start birdd on every node.
    pub birdd: bool,
    /// Named namespaces and a fixed run directory (else `crs<pid>-…` namespaces and a
    /// temporary directory).
    pub naming: Option<Naming>,
}

impl ClusterOptions {
    /// `nodes` nodes with the binaries in `bin_dir`, the default pools, no daemons beyond
    /// ipamd.
    pub fn new(nodes: usize, bin_dir: &std::path::Path) -> ClusterOptions {
        ClusterOptions {
            nodes,
            node: NodeOptions::new(bin_dir),
            encap: Encap::None,
            resources: String::new(),
            felixd: None,
            birdd: false,
            naming: None,
        }
    }
}

pub struct Cluster {
    // Dropped in this order: nodes (and their daemons), etcd, the fabric, the directory, and
    // for a named cluster the teardown of everything with its prefix.
    pub nodes: Vec<Node>,
    pub etcd: EtcdServer,
    pub fabric: Arc<NetNs>,
    /// The cluster's run directory (etcd's data; the nodes' directories are inside it).
    pub dir: RunDir,
    guard: Option<PrefixGuard>,
    naming: Option<Naming>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes.len())
            .field("naming", &self.naming)
            .finish()
    }
}

/// A namespace for `tag`: `<prefix><tag>` for a named cluster (kept: the cluster's teardown
/// removes it), else a test namespace.
pub(crate) fn make_ns(naming: Option<&Naming>, tag: &str) -> NetNs {
    crate::gate(|| match naming {
        Some(n) => {
            let mut ns = NetNs::named(&format!("{}{tag}", n.prefix));
            ns.keep();
            ns
        }
        None => NetNs::new(tag),
    })
}

impl Cluster {
    /// `n` nodes with `opts`' binaries and pools, ipamd on each.
    pub fn start(n: usize, opts: NodeOptions) -> Cluster {
        let mut o = ClusterOptions::new(n, &opts.bin_dir);
        o.node = opts;
        Cluster::start_with(o)
    }

    /// A cluster as `o` says, with every daemon it asks for running and ready.
    pub fn start_with(o: ClusterOptions) -> Cluster {
        assert!(
            (1..=26).contains(&o.nodes),
            "a lab cluster has 1 to 26 nodes"
        );
        let naming = o.naming.clone();
        // Armed from the first namespace on: a failure anywhere below removes it all.
        let guard = naming.as_ref().map(|n| {
            let left = namespaces_with_prefix(&n.prefix);
            assert!(
                left.is_empty(),
                "namespaces of an earlier run are still there ({}): remove them first (`lab down` for the launcher's)",
                left.join(", ")
            );
            PrefixGuard {
                naming: n.clone(),
                armed: true,
            }
        });
        let dir = match &naming {
            Some(n) => RunDir::create(&n.run_dir, false),
            None => RunDir::temp(),
        };
        let fabric = Arc::new(make_ns(naming.as_ref(), "fabric"));
        // A fixed MAC: a bridge without one takes the lowest of its ports' and changes it as
        // ports come, and a node that resolved the gateway before then sends to a MAC the
        // bridge no longer answers for (its IP layer drops frames to a port's address).
        fabric.exec(
            "ip",
            &[
                "link",
                "add",
                "br0",
                "address",
                "02:00:0a:63:00:fe",
                "type",
                "bridge",
            ],
        );
        fabric.exec("ip", &["addr", "add", "10.99.0.254/24", "dev", "br0"]);
        fabric.exec("ip", &["addr", "add", "fd99::fe/64", "dev", "br0", "nodad"]);
        fabric.exec("ip", &["link", "set", "br0", "up"]);
        let gateway: IpAddr = GATEWAY_V4.parse().expect("an address");
        let etcd_dir = match &naming {
            Some(n) => n.data_dir.clone(),
            None => dir.path().join("etcd"),
        };
        let etcd = EtcdServer::start(&fabric, gateway, &etcd_dir, naming.is_some());
        let pools: Vec<Pool> = o
            .node
            .pools
            .iter()
            .map(|p| {
                let mut pool = Pool::from(p);
                pool.vxlan = o.encap == Encap::Vxlan && !pool.cidr.contains(':');
                pool
            })
            .collect();
        create_pools(&fabric, &etcd.endpoint(), &pools);
        if !o.resources.trim().is_empty() {
            let docs = decode_documents(&o.resources).expect("the cluster's resources are valid");
            with_client(&fabric, &etcd.endpoint(), async move |rc| {
                for d in docs {
                    rc.apply_any(d)
                        .await
                        .expect("writing the cluster's resources");
                }
            });
        }
        let endpoint = etcd.public_endpoint();
        let mut nodes: Vec<Node> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..o.nodes)
                .map(|i| {
                    let (fabric, naming, dir) = (fabric.clone(), naming.as_ref(), &dir);
                    let (endpoint, opts) = (endpoint.clone(), o.node.clone());
                    s.spawn(move || {
                        let name = format!("node-{}", char::from(b'a' + i as u8));
                        let ns = make_ns(naming, &name);
                        let peer = format!("p{i}");
                        let (v4, v6) = (format!("10.99.0.{}", i + 1), format!("fd99::{:x}", i + 1));
                        wire_uplink(&ns, &fabric, &peer, &v4, &v6);
                        fabric.exec("ip", &["link", "set", &peer, "master", "br0"]);
                        let mut opts = opts;
                        opts.name = name.clone();
                        Node::create(
                            opts,
                            Placement {
                                ns,
                                fabric,
                                etcd: None,
                                etcd_endpoint: endpoint,
                                v4,
                                v6,
                                dir: RunDir::create(&dir.path().join(&name), naming.is_none()),
                                detached: naming.is_some(),
                            },
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        if let Some(env) = &o.felixd {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            each_node(&mut nodes, |n| n.start_felixd(&env));
        }
        if o.birdd {
            each_node(&mut nodes, Node::start_birdd);
        }
        Cluster {
            nodes,
            etcd,
            fabric,
            dir,
            guard,
            naming,
        }
    }

    /// A named cluster an earlier process made and [detached](Cluster::detach): handles on
    /// its namespaces, etcd and daemons that leave them all in place when dropped.
    pub fn attach(s: &ClusterState) -> std::io::Result<Cluster> {
        let fabric = Arc::new(NetNs::open(&s.fabric)?);
        let etcd = EtcdServer::attach(&s.fabric, s.etcd.listen, &s.etcd.dir, s.etcd.pid)?;
        let nodes = s
            .nodes
            .iter()
            .map(|n| Node::attach(n, fabric.clone(), &s.etcd.endpoint, &s.bin_dir))
            .collect::<std::io::Result<Vec<Node>>>()?;
        Ok(Cluster {
            nodes,
            etcd,
            fabric,
            dir: RunDir::existing(&s.run_dir),
            guard: None,
            naming: Some(Naming {
                prefix: s.prefix.clone(),
                run_dir: s.run_dir.clone(),
                data_dir: s.etcd.dir.clone(),
            }),
        })
    }

    /// Hands a named cluster over to a later process: nothing is stopped or removed when
    /// this value is dropped. Returns what [`Cluster::attach`] needs. Panics for a test
    /// cluster, whose namespaces nothing else could find.
    pub fn detach(mut self) -> ClusterState {
        let naming = self
            .naming
            .clone()
            .expect("only a named cluster can be detached");
        if let Some(g) = self.guard.as_mut() {
            g.armed = false;
        }
        let nodes = self.nodes.iter_mut().map(Node::detach).collect();
        let bin_dir = self
            .nodes
            .first()
            .map(|n| n.bin_dir().to_path_buf())
            .unwrap_or_default();
        ClusterState {
            prefix: naming.prefix,
            run_dir: naming.run_dir,
            bin_dir,
            fabric: self.fabric.name().to_string(),
            etcd: EtcdState {
                pid: self.etcd.detach(),
                listen: GATEWAY_V4.parse().expect("an address"),
                dir: self.etcd.dir().to_path_buf(),
                endpoint: self.etcd.public_endpoint(),
            },
            nodes,
        }
    }

    /// The prefix of a named cluster's namespaces.
    pub fn naming(&self) -> Option<&Naming> {
        self.naming.as_ref()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Runs `f` with a client of the cluster's datastore.
    pub fn with_datastore<T: Send>(&self, f: impl AsyncFnOnce(ResourceClient) -> T + Send) -> T {
        with_client(&self.fabric, &self.etcd.endpoint(), f)
    }

    /// Starts felixd on every node at once, and waits until all are ready.
    pub fn start_felixd(&mut self, env: &[(&str, &str)]) {
        each_node(&mut self.nodes, |n| n.start_felixd(env));
    }

    /// Starts birdd on every node at once.
    pub fn start_birdd(&mut self) {
        each_node(&mut self.nodes, Node::start_birdd);
    }
}

/// Runs `f` on every node, each on its own thread (daemons start and get ready in parallel).
fn each_node(nodes: &mut [Node], f: impl Fn(&mut Node) + Sync) {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes.iter_mut().map(|n| s.spawn(|| f(n))).collect();
        for h in handles {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
}
