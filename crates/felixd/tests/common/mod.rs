//! A one-node lab cluster with felixd running in the node's namespace and pods wired by the
//! real CNI plugin, for policy tests that send real packets.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use calico_api::codec::decode_documents;
use calico_cni::runtime::{Attachment, ConfList, Runtime};
use calico_lab::{Node as LabNode, NodeOptions};
use calico_netns_harness::{NetNs, Servers, tcp_connects, udp_echoes};
use serde_json::{Value, json};

pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Where cargo put this workspace's binaries.
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_felixd"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// A pod: its namespace, addresses and echo servers.
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub ns: NetNs,
    pub ips: Vec<IpAddr>,
    pub attachment: Attachment,
    pub list: ConfList,
    pub servers: Option<Servers>,
}

impl Pod {
    pub fn v4(&self) -> IpAddr {
        *self
            .ips
            .iter()
            .find(|i| i.is_ipv4())
            .expect("the pod has an IPv4 address")
    }

    pub fn v6(&self) -> Option<IpAddr> {
        self.ips.iter().copied().find(IpAddr::is_ipv6)
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The dataplane backend the tests run on: iptables (felixd's default here), or nftables
/// with `FELIXD_TEST_NFTABLES=1` (`make test` runs the policy suites both ways).
pub fn backend_env() -> Vec<(String, String)> {
    if std::env::var_os("FELIXD_TEST_NFTABLES").is_some() {
        vec![("FELIX_NFTABLESMODE".into(), "Enabled".into())]
    } else {
        Vec::new()
    }
}

pub struct Cluster {
    pub lab: LabNode,
    pub runtime: Runtime,
    pub pods: Vec<Pod>,
    pub env: Vec<(String, String)>,
    pub dual_stack: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = self.lab.ns.try_exec("iptables-save", &[]);
            if let Ok(o) = out {
                eprintln!("--- iptables-save:\n{}", String::from_utf8_lossy(&o.stdout));
            }
        }
        // Pods first (their veths go with their namespaces), then felixd.
        self.pods.clear();
        self.stop_felix();
    }
}

impl Cluster {
    /// A node with felixd started with `env` (FELIX_* settings).
    pub fn new(env: &[(&str, &str)]) -> Cluster {
        Cluster::with_options(env, true)
    }

    pub fn with_options(env: &[(&str, &str)], dual_stack: bool) -> Cluster {
        assert!(
            std::path::Path::new(REFERENCE_PLUGINS)
                .join("loopback")
                .exists(),
            "the reference CNI plugins are missing from {REFERENCE_PLUGINS}: `make deps` installs containernetworking-plugins"
        );
        let lab = LabNode::start(NodeOptions::new(&bin_dir()));
        let runtime = Runtime::new(
            vec![bin_dir(), PathBuf::from(REFERENCE_PLUGINS)],
            &lab.dir.path().join("results"),
        );
        let mut c = Cluster {
            lab,
            runtime,
            pods: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(backend_env())
                .collect(),
            dual_stack,
        };
        c.start_felix();
        c
    }

    pub fn start_felix(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.lab.start_felixd(&env);
    }

    pub fn stop_felix(&mut self) {
        self.lab.stop_felixd();
    }

    /// Applies YAML (create or update each resource).
    pub fn apply(&self, yaml: &str) {
        let docs = decode_documents(yaml).expect("valid YAML");
        self.lab.with_datastore(async move |rc| {
            for d in docs {
                rc.apply_any(d).await.expect("applying a resource");
            }
        });
    }

    /// Deletes a resource.
    pub fn delete(&self, kind: calico_api::Kind, namespace: Option<&str>, name: &str) {
        let (ns, name) = (namespace.map(str::to_string), name.to_string());
        self.lab.with_datastore(async move |rc| {
            rc.delete_any(kind, ns.as_deref(), &name, None)
                .await
                .expect("deleting a resource");
        });
    }

    /// The namespace's profile, as kube-controllers would write it.
    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (format!("pcns.{k}"), v.to_string()))
            .collect();
        l.insert("pcns.projectcalico.org/name".into(), name.into());
        let labels: Vec<String> = l.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
        self.apply(&format!(
            r#"
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.{name}}}
spec:
  ingress: [{{action: Allow}}]
  egress: [{{action: Allow}}]
  labelsToApply: {{{}}}
"#,
            labels.join(", ")
        ));
    }

    fn plugin(&self, labels: &[(&str, &str)]) -> Value {
        let mut p = self.lab.calico_plugin();
        p["policy_setup_timeout_seconds"] = json!(10);
        p["log_level"] = json!("debug");
        if !self.dual_stack {
            p["ipam"]["assign_ipv6"] = json!("false");
        }
        let labels: Vec<Value> = labels
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        p["args"] = json!({"cni": {"labels": labels}});
        p
    }

    /// Wires a pod with the CNI plugin (asking for `ip` if given) and starts echo servers on
    /// TCP and UDP `ports`.
    pub fn add_pod(
        &mut self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ip: Option<&str>,
        ports: &[u16],
    ) -> usize {
        let ns = NetNs::new("pod");
        let list = ConfList::parse(&json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "plugins": [self.plugin(labels)],
        }))
        .expect("conflist");
        let container = format!("{namespace}-{name}-{}", self.pods.len());
        let mut args = vec![
            ("K8S_POD_NAMESPACE".into(), namespace.into()),
            ("K8S_POD_NAME".into(), name.into()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), container.clone()),
        ];
        if let Some(ip) = ip {
            args.push(("IP".to_string(), ip.to_string()));
        }
        let attachment = Attachment {
            container_id: container,
            netns: Some(ns.path().to_path_buf()),
            ifname: "eth0".into(),
            args,
            capability_args: Default::default(),
        };
        let result = self
            .lab
            .run(|| self.runtime.add(&list, &attachment))
            .unwrap_or_else(|e| panic!("CNI ADD for {namespace}/{name}: {e}"));
        let ips = result["ips"]
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
            .collect();
        let servers = (!ports.is_empty()).then(|| Servers::start(&ns, ports, ports));
        self.pods.push(Pod {
            namespace: namespace.into(),
            name: name.into(),
            ns,
            ips,
            attachment,
            list,
            servers,
        });
        self.pods.len() - 1
    }

    pub fn pod(&self, key: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.key() == key)
            .unwrap_or_else(|| panic!("no pod {key}"))
    }

    /// Removes a pod with CNI DEL.
    pub fn del_pod(&mut self, key: &str) {
        let i = self
            .pods
            .iter()
            .position(|p| p.key() == key)
            .unwrap_or_else(|| panic!("no pod {key}"));
        let pod = self.pods.remove(i);
        self.lab
            .run(|| self.runtime.del(&pod.list, &pod.attachment))
            .expect("CNI DEL");
    }

    /// Polls `check` until it holds or `within` passes; returns how long it took.
    pub fn eventually(
        &self,
        within: Duration,
        what: &str,
        mut check: impl FnMut() -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if check() {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "{what}: not so after {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One probe's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Whether `from` reaches `to` on a port, with a short timeout (drops show as timeouts).
pub fn reaches(from: &Pod, to: IpAddr, proto: Proto, port: u16) -> bool {
    let t = Duration::from_millis(400);
    match proto {
        Proto::Tcp => tcp_connects(&from.ns, to, port, t),
        Proto::Udp => {
            // UDP has no handshake: a lost datagram and a drop look alike, so try twice.
            udp_echoes(&from.ns, to, port, t) || udp_echoes(&from.ns, to, port, t)
        }
    }
}

const PARALLEL_PROBES: usize = 128;

/// Runs probes in parallel (many at a time: most of a blocked probe's time is waiting) and returns their results in order.
pub fn probe_all(jobs: Vec<(&Pod, IpAddr, Proto, u16)>) -> Vec<bool> {
    let mut out = vec![false; jobs.len()];
    std::thread::scope(|s| {
        for (chunk_i, chunk) in jobs.chunks(PARALLEL_PROBES).enumerate() {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(from, to, proto, port)| s.spawn(move || reaches(from, *to, *proto, *port)))
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                out[chunk_i * PARALLEL_PROBES + i] = h.join().unwrap_or(false);
            }
        }
    });
    out
}

/// Kernel inspection and tampering that works on either backend.
impl Cluster {
    pub fn nft(&self) -> bool {
        self.env
            .iter()
            .any(|(k, v)| k == "FELIX_NFTABLESMODE" && v == "Enabled")
    }

    fn out(&self, program: &str, args: &[&str]) -> String {
        let o = self.lab.ns.exec(program, args);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The names of Calico's chains (without nftables' layer prefix) in the filter table.
    pub fn filter_chains(&self) -> Vec<String> {
        if self.nft() {
            self.out("nft", &["list", "table", "ip", "calico"])
                .lines()
                .filter_map(|l| l.trim().strip_prefix("chain filter-"))
                .map(|n| n.trim_end_matches(" {").to_string())
                .filter(|n| n.starts_with("cali-"))
                .collect()
        } else {
            self.out("iptables-save", &["-t", "filter"])
                .lines()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|l| l.split(' ').next())
                .filter(|n| n.starts_with("cali-"))
                .map(str::to_string)
                .collect()
        }
    }

    /// Rules in one of Calico's filter chains.
    pub fn chain_rules(&self, chain: &str) -> usize {
        if self.nft() {
            let o = self.lab.ns.try_exec(
                "nft",
                &["list", "chain", "ip", "calico", &format!("filter-{chain}")],
            );
            o.map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains("comment \"cali:"))
                    .count()
            })
            .unwrap_or(0)
        } else {
            self.out("iptables-save", &["-t", "filter"])
                .lines()
                .filter(|l| l.starts_with(&format!("-A {chain} ")))
                .count()
        }
    }

    pub fn flush_chain(&self, chain: &str) {
        if self.nft() {
            self.lab.ns.exec(
                "nft",
                &["flush", "chain", "ip", "calico", &format!("filter-{chain}")],
            );
        } else {
            self.lab.ns.exec("iptables", &["-F", chain]);
        }
    }

    /// Calico's IPv4 selector sets.
    pub fn selector_sets(&self) -> Vec<String> {
        if self.nft() {
            self.out("nft", &["list", "sets", "ip"])
                .lines()
                .filter_map(|l| l.trim().strip_prefix("set "))
                .map(|n| n.trim_end_matches(" {").to_string())
                .filter(|n| n.starts_with("cali40s"))
                .collect()
        } else {
            self.out("ipset", &["list", "-n"])
                .lines()
                .filter(|s| s.starts_with("cali40s:"))
                .map(str::to_string)
                .collect()
        }
    }

    pub fn del_set_member(&self, set: &str, ip: IpAddr) {
        if self.nft() {
            let elem = format!("{{ {ip} }}");
            self.lab
                .ns
                .exec("nft", &["delete", "element", "ip", "calico", set, &elem]);
        } else {
            self.lab.ns.exec("ipset", &["del", set, &ip.to_string()]);
        }
    }

    pub fn set_has(&self, set: &str, ip: IpAddr) -> bool {
        let r = if self.nft() {
            let elem = format!("{{ {ip} }}");
            self.lab
                .ns
                .try_exec("nft", &["get", "element", "ip", "calico", set, &elem])
        } else {
            self.lab
                .ns
                .try_exec("ipset", &["test", set, &ip.to_string()])
        };
        r.map(|o| o.status.success()).unwrap_or(false)
    }
}
