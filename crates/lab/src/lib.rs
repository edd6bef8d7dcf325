//! The lab: calico-rs nodes made of network namespaces on one Linux machine (DESIGN §5).
//!
//! - [`Node`]: a node's namespace with an uplink to a stand-in network (its addresses, a
//!   default route, forwarding on), its Node resource, and the per-node daemons (ipamd,
//!   felixd, birdd) inside it; on its own it also has its own etcd.
//! - [`Cluster`]: several nodes on a fabric namespace with a bridge, one etcd there.
//! - [`netpol`] and [`probe`]: the NetworkPolicy conformance catalogue and the TCP/UDP
//!   probes that check its reachability matrices with real packets.
//!
//! Tests, benchmarks and the demo build on it; everything it starts is stopped, and every
//! namespace deleted, when it is dropped. A *named* cluster (the launcher's, the demo's) has
//! namespaces called `<prefix>…` and can instead be handed over to a later process
//! ([`Cluster::detach`], [`Cluster::attach`]); [`remove`] finds and removes everything it
//! made. The lab never touches the machine's own namespace: no routes,
//! iptables, sysctls or interfaces outside the namespaces it made.

mod cluster;
mod daemon;
mod etcd;
pub mod netpol;
mod node;
pub mod probe;
mod state;
mod teardown;

use std::net::IpAddr;
use std::sync::Arc;

use calico_api::ObjectMeta;
use calico_api::kinds::{EncapMode, IpPoolSpec};
use calico_api::resource::IpPool;
use calico_datastore::etcd::{EtcdConfig, EtcdDatastore};
use calico_datastore::{Datastore, KeyPrefix, ResourceClient};
use calico_netns_harness::NetNs;
use serde_json::Value;

pub use cluster::{Cluster, ClusterOptions, Encap, Naming};
pub use daemon::{gate, halt, log_tail, pid_alive, signal_pid};
pub use etcd::EtcdServer;
pub use node::{Node, NodeOptions};
pub use state::{ClusterState, DaemonPids, EtcdState, NodeState};
pub use teardown::{
    Removed, RunDir, namespaces_with_prefix, remove, remove_by_prefix, wait_for_interrupt,
};

pub const NODE_V4: &str = "10.99.0.1";
pub const NODE_V6: &str = "fd99::1";

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

/// Something with a datastore client at hand: a node, a cluster.
pub trait WithDatastore {
    /// Runs `f` with a client of the datastore.
    fn with_ds<T: Send>(&self, f: impl AsyncFnOnce(ResourceClient) -> T + Send) -> T;
}

impl WithDatastore for Node {
    fn with_ds<T: Send>(&self, f: impl AsyncFnOnce(ResourceClient) -> T + Send) -> T {
        self.with_datastore(f)
    }
}

impl WithDatastore for Cluster {
    fn with_ds<T: Send>(&self, f: impl AsyncFnOnce(ResourceClient) -> T + Send) -> T {
        self.with_datastore(f)
    }
}

/// An IP pool the lab creates at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub cidr: String,
    pub block_size: u8,
    pub vxlan: bool,
}

impl From<&(String, String, u8)> for Pool {
    fn from((name, cidr, block_size): &(String, String, u8)) -> Pool {
        Pool {
            name: name.clone(),
            cidr: cidr.clone(),
            block_size: *block_size,
            vxlan: false,
        }
    }
}

/// The lab's IP pools.
fn create_pools(ns: &NetNs, endpoint: &str, pools: &[Pool]) {
    let pools = pools.to_vec();
    with_client(ns, endpoint, async move |rc| {
        for p in &pools {
            rc.create(IpPool::new(
                ObjectMeta::named(p.name.clone()),
                IpPoolSpec {
                    cidr: p.cidr.clone(),
                    block_size: Some(i64::from(p.block_size)),
                    vxlan_mode: p.vxlan.then_some(EncapMode::Always),
                    ..Default::default()
                },
            ))
            .await
            .expect("creating an IP pool");
        }
    });
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
