//! A node for CNI tests: a network namespace with its own etcd, a real ipamd, an address of
//! its own (10.99.0.1 and fd99::1) and forwarding on, plus pods made as
//! namespaces and wired by the real plugin binary through the in-repo runtime.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_api::ObjectMeta;
use calico_api::kinds::IpPoolSpec;
use calico_api::resource::IpPool;
use calico_cni::runtime::{Attachment, ConfList, Runtime};
use calico_datastore::ResourceClient;
use calico_datastore::etcd::{EtcdConfig, EtcdDatastore};
use calico_etcd_harness::Etcd;
use calico_netns_harness::NetNs;
use serde_json::{Value, json};

pub const NODE_V4: &str = "10.99.0.1";
pub const NODE_V6: &str = "fd99::1";
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Where cargo put this workspace's binaries (the test executable lives in `deps/` below it).
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

pub struct Node {
    pub ns: NetNs,
    pub fabric: NetNs,
    pub dir: tempfile::TempDir,
    pub etcd: Option<Etcd>,
    pub ipamd: Option<Child>,
    pub socket: PathBuf,
    pub runtime: Runtime,
    pub name: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_ipamd();
        if std::thread::panicking() {
            for f in ["ipamd.log", "cni.log"] {
                eprintln!(
                    "--- {f}:\n{}",
                    std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default()
                );
            }
        }
    }
}

impl Node {
    /// A node with one IPv4 pool (10.244.0.0/16) and one IPv6 pool (fd00:244::/64).
    pub fn new() -> Node {
        assert!(
            Path::new(REFERENCE_PLUGINS).join("portmap").exists(),
            "the reference CNI plugins are missing from {REFERENCE_PLUGINS}: `make deps` installs containernetworking-plugins"
        );
        let ipamd_bin = bin_dir().join("ipamd");
        assert!(
            ipamd_bin.exists(),
            "{} is missing: build the workspace first (`cargo build --workspace`)",
            ipamd_bin.display()
        );
        let ns = NetNs::new("node");
        // The node's uplink, to a namespace standing in for the network, with the node's
        // address and a default route (pods reach the host through proxy ARP, which answers
        // only for destinations the host can route elsewhere).
        let fabric = NetNs::new("fabric");
        let peer = format!("netns {}", fabric.name());
        let mut link = vec![
            "link", "add", "uplink", "type", "veth", "peer", "name", "net0",
        ];
        link.extend(peer.split(' '));
        ns.exec("ip", &link);
        ns.exec(
            "ip",
            &["addr", "add", &format!("{NODE_V4}/24"), "dev", "uplink"],
        );
        ns.exec(
            "ip",
            &[
                "addr",
                "add",
                &format!("{NODE_V6}/64"),
                "dev",
                "uplink",
                "nodad",
            ],
        );
        ns.exec("ip", &["link", "set", "uplink", "up"]);
        fabric.exec("ip", &["link", "set", "net0", "up"]);
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
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = ns.run(Etcd::start);
        let endpoint = etcd.endpoint();
        ns.run(|| {
            block_on(async {
                let ds = std::sync::Arc::new(
                    EtcdDatastore::connect(&EtcdConfig::new(vec![endpoint.clone()]))
                        .await
                        .expect("etcd"),
                );
                let rc = ResourceClient::new(ds);
                for (name, cidr, bs) in [("v4", "10.244.0.0/16", 26), ("v6", "fd00:244::/64", 122)]
                {
                    rc.create(IpPool::new(
                        ObjectMeta::named(name),
                        IpPoolSpec {
                            cidr: cidr.into(),
                            block_size: Some(bs),
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("pool");
                }
            })
        });
        let socket = dir.path().join("ipam.sock");
        let mut node = Node {
            ns,
            fabric,
            runtime: Runtime::new(
                vec![bin_dir(), PathBuf::from(REFERENCE_PLUGINS)],
                &dir.path().join("results"),
            ),
            dir,
            etcd: Some(etcd),
            ipamd: None,
            socket,
            name: "node-a".into(),
        };
        node.start_ipamd();
        node
    }

    pub fn etcd_endpoint(&self) -> String {
        self.etcd.as_ref().expect("etcd").endpoint()
    }

    pub fn start_ipamd(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("ipamd.log")).expect("log");
        let endpoint = self.etcd_endpoint();
        let socket = self.socket.clone();
        let name = self.name.clone();
        let child = self.ns.run(move || {
            Command::new(bin_dir().join("ipamd"))
                .env("DATASTORE_TYPE", "etcdv3")
                .env("ETCD_ENDPOINTS", &endpoint)
                .args(["--nodename", &name, "--http-listen", "none", "--no-gc"])
                .arg("--listen")
                .arg(format!("unix://{}", socket.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("ipamd")
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

    /// The `calico` plugin's configuration for this node.
    pub fn calico_plugin(&self) -> Value {
        json!({
            "type": "calico",
            "etcd_endpoints": self.etcd_endpoint(),
            "nodename": self.name,
            "nodename_file_optional": true,
            "mtu": 1440,
            "log_level": "debug",
            "log_file_path": self.dir.path().join("cni.log").display().to_string(),
            "ipam": {
                "type": "calico-ipam",
                "endpoint": format!("unix://{}", self.socket.display()),
                "assign_ipv4": "true",
                "assign_ipv6": "true",
            },
            "policy": {"type": "k8s"},
        })
    }

    pub fn conflist(&self, version: &str, plugins: Vec<Value>) -> ConfList {
        ConfList::parse(&json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "plugins": plugins,
        }))
        .expect("conflist")
    }

    pub fn calico_only(&self) -> ConfList {
        self.conflist("1.0.0", vec![self.calico_plugin()])
    }

    /// Runs `f` inside the node's namespace (where runtimes run plugins).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.run(f)
    }

    pub fn add(
        &self,
        list: &ConfList,
        a: &Attachment,
    ) -> Result<Value, calico_cni::runtime::PluginError> {
        self.run(|| self.runtime.add(list, a))
    }

    pub fn del(
        &self,
        list: &ConfList,
        a: &Attachment,
    ) -> Result<(), calico_cni::runtime::PluginError> {
        self.run(|| self.runtime.del(list, a))
    }

    /// Every allocation in the datastore: (address, handle).
    pub fn allocations(&self) -> Vec<(IpAddr, String)> {
        self.with_datastore(async |rc| calico_ipam_view(rc.datastore().clone()).await)
    }

    /// The datastore, from inside the node.
    pub fn with_datastore<T: Send>(&self, f: impl AsyncFnOnce(ResourceClient) -> T + Send) -> T {
        let endpoint = self.etcd_endpoint();
        self.run(move || {
            block_on(async move {
                let ds = std::sync::Arc::new(
                    EtcdDatastore::connect(&EtcdConfig::new(vec![endpoint]))
                        .await
                        .expect("etcd"),
                );
                f(ResourceClient::new(ds)).await
            })
        })
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

/// Reads every allocation straight from the blocks.
async fn calico_ipam_view(
    ds: std::sync::Arc<dyn calico_datastore::Datastore>,
) -> Vec<(IpAddr, String)> {
    use calico_datastore::KeyPrefix;
    let list = ds
        .list(&KeyPrefix::Blocks { ip_version: None })
        .await
        .expect("blocks");
    let mut out = Vec::new();
    for kv in list.items {
        let b: Value = serde_json::from_slice(&kv.value).expect("block json");
        let cidr: ipnet::IpNet = b["cidr"].as_str().expect("cidr").parse().expect("cidr");
        let attrs = b["attributes"].as_array().cloned().unwrap_or_default();
        for (i, a) in b["allocations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if let Some(idx) = a.as_u64() {
                let handle = attrs[idx as usize]["handle_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ip = match cidr.network() {
                    IpAddr::V4(n) => IpAddr::V4((u32::from(n) + i as u32).into()),
                    IpAddr::V6(n) => IpAddr::V6((u128::from(n) + i as u128).into()),
                };
                out.push((ip, handle));
            }
        }
    }
    out
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A Kubernetes-style attachment for a pod namespace.
pub fn pod(ns: &NetNs, namespace: &str, name: &str, container: &str) -> Attachment {
    Attachment {
        container_id: container.into(),
        netns: Some(ns.path().to_path_buf()),
        ifname: "eth0".into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), namespace.into()),
            ("K8S_POD_NAME".into(), name.into()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), container.into()),
        ],
        capability_args: Default::default(),
    }
}

/// The pod addresses an ADD result lists.
pub fn result_ips(r: &Value) -> Vec<IpAddr> {
    r["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .map(|i| {
            i["address"]
                .as_str()
                .expect("address")
                .parse::<ipnet::IpNet>()
                .expect("cidr")
                .addr()
        })
        .collect()
}
