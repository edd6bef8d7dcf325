//! What a later process needs to find a named cluster again: its namespaces, directories,
//! addresses and daemon pids. The launcher keeps it in a JSON file between commands.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The pids of a node's daemons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonPids {
    pub ipamd: Option<u32>,
    pub felixd: Option<u32>,
    pub birdd: Option<u32>,
}

/// One node of a detached cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    /// The node's network namespace.
    pub netns: String,
    pub v4: IpAddr,
    pub v6: IpAddr,
    /// The node's run directory (sockets, logs).
    pub dir: PathBuf,
    pub pids: DaemonPids,
}

/// The cluster's etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdState {
    pub pid: Option<u32>,
    /// The address it listens on in the fabric (besides loopback).
    pub listen: IpAddr,
    /// Its data and log.
    pub dir: PathBuf,
    /// The endpoint nodes use.
    pub endpoint: String,
}

/// A detached cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Every namespace of the cluster (and of its pods) starts with this.
    pub prefix: String,
    /// The cluster's run directory; node directories are inside it.
    pub run_dir: PathBuf,
    /// Where the daemons' and the CNI plugins' binaries are.
    pub bin_dir: PathBuf,
    /// The fabric namespace (the bridge, the nodes' gateway, etcd).
    pub fabric: String,
    pub etcd: EtcdState,
    pub nodes: Vec<NodeState>,
}
