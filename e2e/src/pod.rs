//! Pods as a container runtime makes them: a network namespace, then the real `calico` CNI
//! binary run inside the node's namespace with the runtime's environment (`CNI_COMMAND`,
//! `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` with the Kubernetes pod
//! arguments, `CNI_PATH`) and the network configuration on stdin; DEL the same way.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use calico_cni::runtime::{Attachment, ConfList, PluginError, Runtime};
use calico_lab::{Naming, Node};
use calico_netns_harness::NetNs;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The network name runtimes give Calico (`/etc/cni/net.d/10-calico.conflist`).
pub const NETWORK: &str = "k8s-pod-network";

/// What a pod failed at.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("CNI ADD for {pod} on {node}: {source}")]
    Add {
        pod: String,
        node: String,
        source: Box<PluginError>,
    },
    #[error("CNI DEL for {pod} on {node}: {source}")]
    Del {
        pod: String,
        node: String,
        source: Box<PluginError>,
    },
    #[error("the CNI result for {pod} has no usable addresses: {result}")]
    Result { pod: String, result: String },
    #[error("{0} is not <namespace>/<pod>")]
    BadKey(String),
    #[error("there is no node {0}")]
    NoNode(String),
    #[error("there is no pod {0}")]
    NoPod(String),
    #[error("pod {0} exists already")]
    Exists(String),
}

/// A pod to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub node: String,
    pub namespace: String,
    pub name: String,
    /// The pod's labels (as the runtime passes them in `args.cni.labels`).
    pub labels: Vec<(String, String)>,
    /// An address to ask for (the `IP` CNI argument), else IPAM chooses.
    pub ip: Option<String>,
}

impl PodSpec {
    /// Pod `key` (`<namespace>/<pod>`) on `node`.
    pub fn new(node: &str, key: &str) -> Result<PodSpec, PodError> {
        let (namespace, name) = split_key(key)?;
        Ok(PodSpec {
            node: node.to_string(),
            namespace,
            name,
            labels: Vec::new(),
            ip: None,
        })
    }

    pub fn label(mut self, k: &str, v: &str) -> PodSpec {
        self.labels.push((k.to_string(), v.to_string()));
        self
    }

    pub fn ip(mut self, ip: &str) -> PodSpec {
        self.ip = Some(ip.to_string());
        self
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `<namespace>/<pod>` split.
pub fn split_key(key: &str) -> Result<(String, String), PodError> {
    match key.split_once('/') {
        Some((ns, p)) if !ns.is_empty() && !p.is_empty() && !p.contains('/') => {
            Ok((ns.to_string(), p.to_string()))
        }
        _ => Err(PodError::BadKey(key.to_string())),
    }
}

/// A pod that exists.
#[derive(Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its network namespace.
    pub ns: NetNs,
    pub ips: Vec<IpAddr>,
    pub container_id: String,
    pub labels: Vec<(String, String)>,
}

/// A pod as the launcher records it between commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ips: Vec<IpAddr>,
    pub container_id: String,
    pub labels: Vec<(String, String)>,
}

impl Pod {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod's IPv4 address.
    pub fn v4(&self) -> Option<IpAddr> {
        self.ips.iter().copied().find(IpAddr::is_ipv4)
    }

    pub fn state(&self) -> PodState {
        PodState {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            node: self.node.clone(),
            netns: self.ns.name().to_string(),
            ips: self.ips.clone(),
            container_id: self.container_id.clone(),
            labels: self.labels.clone(),
        }
    }

    /// A pod an earlier process made (its namespace is left in place when dropped).
    pub fn attach(s: &PodState) -> std::io::Result<Pod> {
        Ok(Pod {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            node: s.node.clone(),
            ns: NetNs::open(&s.netns)?,
            ips: s.ips.clone(),
            container_id: s.container_id.clone(),
            labels: s.labels.clone(),
        })
    }
}

/// The runtime of `node`: plugins from the build, results kept in the node's directory.
pub fn runtime(node: &Node) -> Runtime {
    let dirs: Vec<PathBuf> = vec![node.bin_dir().to_path_buf()];
    Runtime::new(dirs, &node.dir.path().join("results"))
}

/// The network configuration list the runtime hands the plugin for a pod with `labels`.
pub fn conf_list(node: &Node, labels: &[(String, String)], dual_stack: bool) -> ConfList {
    let mut plugin = node.calico_plugin();
    plugin["policy_setup_timeout_seconds"] = json!(10);
    if !dual_stack {
        plugin["ipam"]["assign_ipv6"] = json!("false");
    }
    let labels: Vec<Value> = labels
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    plugin["args"] = json!({"cni": {"labels": labels}});
    let list = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [plugin]});
    ConfList::parse(&list).expect("the lab's configuration list is complete")
}

/// The attachment a runtime describes for a pod sandbox.
fn attachment(ns: &NetNs, container_id: &str, namespace: &str, name: &str) -> Attachment {
    Attachment {
        container_id: container_id.to_string(),
        netns: Some(ns.path().to_path_buf()),
        ifname: "eth0".into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), namespace.into()),
            ("K8S_POD_NAME".into(), name.into()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), container_id.into()),
        ],
        capability_args: Default::default(),
    }
}

/// A sandbox id as containerd makes them: 64 hex characters, unique per sandbox.
fn sandbox_id(key: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (0..4u64)
        .map(|part| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write(key.as_bytes());
            h.write_u64(n);
            h.write_u128(now);
            h.write_u32(std::process::id());
            h.write_u64(part);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// Deletes a namespace whatever its handle says (a named pod's is kept by its handle).
fn discard(ns: NetNs) {
    let name = ns.name().to_string();
    drop(ns);
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &name])
        .output();
}

/// Makes the pod: its namespace, then CNI ADD on `node` as a runtime runs it. A failed ADD
/// leaves no namespace behind (the plugin cleans up what it made).
pub fn create(
    node: &Node,
    naming: Option<&Naming>,
    spec: &PodSpec,
    dual_stack: bool,
) -> Result<Pod, PodError> {
    let key = spec.key();
    let ns = calico_lab::gate(|| match naming {
        Some(n) => {
            let mut ns = NetNs::named(&format!("{}pod-{}.{}", n.prefix, spec.namespace, spec.name));
            ns.keep();
            ns
        }
        None => NetNs::new("pod"),
    });
    let container_id = sandbox_id(&key);
    let mut a = attachment(&ns, &container_id, &spec.namespace, &spec.name);
    if let Some(ip) = &spec.ip {
        a.args.push(("IP".into(), ip.clone()));
    }
    let list = conf_list(node, &spec.labels, dual_stack);
    let rt = runtime(node);
    // The plugin runs under the lab's gate: a teardown waits for it, and sees what it made.
    let result = match calico_lab::gate(|| node.run(|| rt.add(&list, &a))) {
        Ok(r) => r,
        Err(source) => {
            discard(ns);
            return Err(PodError::Add {
                pod: key,
                node: node.name.clone(),
                source: Box::new(source),
            });
        }
    };
    let ips: Vec<IpAddr> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .filter_map(|a| a.parse::<ipnet::IpNet>().ok())
        .map(|n| n.addr())
        .collect();
    if ips.is_empty() {
        let _ = node.run(|| rt.del(&list, &a));
        discard(ns);
        return Err(PodError::Result {
            pod: key,
            result: result.to_string(),
        });
    }
    Ok(Pod {
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
        node: node.name.clone(),
        ns,
        ips,
        container_id,
        labels: spec.labels.clone(),
    })
}

/// CNI DEL for the pod on `node`, as a runtime runs it when the sandbox goes; then its
/// namespace goes.
pub fn delete(node: &Node, pod: Pod, dual_stack: bool) -> Result<(), PodError> {
    let list = conf_list(node, &pod.labels, dual_stack);
    let a = attachment(&pod.ns, &pod.container_id, &pod.namespace, &pod.name);
    let rt = runtime(node);
    let r = node.run(|| rt.del(&list, &a));
    let key = pod.key();
    discard(pod.ns);
    r.map_err(|source| PodError::Del {
        pod: key,
        node: node.name.clone(),
        source: Box::new(source),
    })
}
