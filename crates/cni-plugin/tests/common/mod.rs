//! A lab node for CNI tests, with the in-repo runtime running the real plugin binaries.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;

use calico_cni::runtime::{Attachment, ConfList, PluginError, Runtime};
use calico_lab::{Node as LabNode, NodeOptions};
use calico_netns_harness::NetNs;
use serde_json::{Value, json};

pub use calico_lab::{NODE_V4, NODE_V6};

pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Where cargo put this workspace's binaries.
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

pub struct Node {
    pub lab: LabNode,
    pub runtime: Runtime,
}

impl std::ops::Deref for Node {
    type Target = LabNode;
    fn deref(&self) -> &LabNode {
        &self.lab
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut LabNode {
        &mut self.lab
    }
}

impl Node {
    pub fn new() -> Node {
        assert!(
            std::path::Path::new(REFERENCE_PLUGINS)
                .join("portmap")
                .exists(),
            "the reference CNI plugins are missing from {REFERENCE_PLUGINS}: `make deps` installs containernetworking-plugins"
        );
        let lab = LabNode::start(NodeOptions::new(&bin_dir()));
        let runtime = Runtime::new(
            vec![bin_dir(), PathBuf::from(REFERENCE_PLUGINS)],
            &lab.dir.path().join("results"),
        );
        Node { lab, runtime }
    }

    /// The `calico` plugin's configuration, logging at debug level for failing tests.
    pub fn calico_plugin(&self) -> Value {
        let mut p = self.lab.calico_plugin();
        p["log_level"] = json!("debug");
        p
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

    pub fn add(&self, list: &ConfList, a: &Attachment) -> Result<Value, PluginError> {
        self.run(|| self.runtime.add(list, a))
    }

    pub fn del(&self, list: &ConfList, a: &Attachment) -> Result<(), PluginError> {
        self.run(|| self.runtime.del(list, a))
    }
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
