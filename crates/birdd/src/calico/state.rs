//! [`ClusterState`]: birdd's cache of the datastore records that decide its BGP configuration,
//! fed by the syncer one [`SyncUpdate`] at a time.
//!
//! It holds what Calico's BGP syncer hands confd (`libcalico-go/.../bgpsyncer/bgpsyncer.go`:
//! IPPools, BGPConfigurations, Nodes, BGPPeers, BGPFilters and this host's block affinities)
//! plus WorkloadEndpoints, which stand in for the kernel routes BIRD would `learn`: birdd has
//! no kernel scan, so it finds this node's borrowed workload addresses from the endpoints.

use std::collections::BTreeMap;

use calico_api::names::AffinityType;
use calico_api::resource::Node;
use calico_api::{AnyResource, BgpConfigurationSpec, BgpFilterSpec, BgpPeerSpec, IpPoolSpec, Kind};
use calico_datastore::client::decode_kv;
use calico_datastore::syncer::SyncUpdate;
use calico_datastore::{DatastoreError, Key, KeyPrefix, KvPair};
use ipnet::IpNet;
use serde::Deserialize;

use super::CalicoError;

/// The resource kinds birdd reads.
const WATCHED_KINDS: [Kind; 6] = [
    Kind::Node,
    Kind::BgpConfiguration,
    Kind::BgpPeer,
    Kind::BgpFilter,
    Kind::IpPool,
    Kind::WorkloadEndpoint,
];

/// What the syncer must list and watch for birdd on `nodename`: the six resource kinds, and
/// this host's block affinities only (as Calico's BGP syncer watches
/// `BlockAffinityListOptions{Host: node}`: other hosts' affinities never matter to a node).
pub fn watched_prefixes(nodename: &str) -> Vec<KeyPrefix> {
    let mut v: Vec<KeyPrefix> = WATCHED_KINDS.iter().map(|k| KeyPrefix::kind(*k)).collect();
    v.push(KeyPrefix::Affinities {
        affinity_type: AffinityType::Host,
        owner: Some(nodename.to_string()),
        ip_version: None,
    });
    v
}

/// The state of a block affinity (`model.BlockAffinity.State`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AffinityState {
    /// The block is this host's.
    Confirmed,
    /// No state recorded (very old installs): confd's `bird_aggr.cfg` calls it "implicitly
    /// confirmed".
    Implicit,
    /// Being claimed. confd drops pending affinities from its cache (`client.go`,
    /// `updateCache`), so they neither blackhole nor aggregate.
    Pending,
    /// Being released: the blackhole stays, but the block is no longer aggregated.
    PendingDeletion,
    /// A state this version does not know; treated like `PendingDeletion`, as the template
    /// only aggregates `confirmed` and state-less blocks.
    Other(String),
}

impl AffinityState {
    /// Whether `calico_aggr()` aggregates the block (accepts it and rejects what is beneath).
    pub fn aggregates(&self) -> bool {
        matches!(self, AffinityState::Confirmed | AffinityState::Implicit)
    }
}

#[derive(Deserialize)]
struct AffinityJson {
    #[serde(default)]
    state: String,
    #[serde(default)]
    deleted: bool,
}

/// Reads an affinity value. `None` means "as if absent": a `deleted: true` record is on its
/// way out (the Kubernetes backend never returns those; etcd never writes them).
fn parse_affinity(bytes: &[u8]) -> Result<Option<AffinityState>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(AffinityState::Implicit));
    }
    let a: AffinityJson = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if a.deleted {
        return Ok(None);
    }
    Ok(Some(match a.state.as_str() {
        "" => AffinityState::Implicit,
        "confirmed" => AffinityState::Confirmed,
        "pending" => AffinityState::Pending,
        "pendingDeletion" => AffinityState::PendingDeletion,
        other => AffinityState::Other(other.to_string()),
    }))
}

/// What birdd keeps of a WorkloadEndpoint: where it runs and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadAddrs {
    pub node: String,
    pub interface: String,
    pub nets: Vec<IpNet>,
}

/// birdd's view of the datastore. Every setter reports whether anything birdd uses changed,
/// so the daemon recomputes its intent only when it has to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    pub(crate) nodes: BTreeMap<String, Node>,
    pub(crate) bgp_configs: BTreeMap<String, BgpConfigurationSpec>,
    pub(crate) bgp_peers: BTreeMap<String, BgpPeerSpec>,
    pub(crate) bgp_filters: BTreeMap<String, BgpFilterSpec>,
    pub(crate) pools: BTreeMap<String, IpPoolSpec>,
    /// By (namespace, name).
    pub(crate) workloads: BTreeMap<(String, String), WorkloadAddrs>,
    /// Host affinities by (host, block).
    pub(crate) affinities: BTreeMap<(String, IpNet), AffinityState>,
    /// Keep only this node's workloads (birdd exports only its own borrowed addresses, so
    /// another node's pod churn must not make it recompute).
    only_node: Option<String>,
}

impl ClusterState {
    pub fn new() -> ClusterState {
        ClusterState::default()
    }

    /// The state for one node's birdd: other nodes' workloads are not kept.
    pub fn for_node(name: &str) -> ClusterState {
        ClusterState {
            only_node: Some(name.to_string()),
            ..ClusterState::default()
        }
    }

    /// Applies one syncer update. Returns whether anything birdd uses changed.
    ///
    /// A value that cannot be read is an error naming its key, and the cache keeps what it
    /// had for that key: a corrupt record must not change which sessions run.
    pub fn apply(&mut self, update: &SyncUpdate) -> Result<bool, CalicoError> {
        match update {
            SyncUpdate::Put(kv) => self.apply_put(kv),
            SyncUpdate::Delete { key, .. } => Ok(self.apply_delete(key)),
        }
    }

    fn apply_put(&mut self, kv: &KvPair) -> Result<bool, CalicoError> {
        match &kv.key {
            Key::Resource {
                kind,
                namespace,
                name,
            } if WATCHED_KINDS.contains(kind) => {
                let res = decode_kv(*kind, kv).map_err(|e| decode_error(&kv.key, e))?;
                match res {
                    AnyResource::WorkloadEndpoint(w) => {
                        let ns = namespace.clone().unwrap_or_default();
                        if self.only_node.as_ref().is_some_and(|n| *n != w.spec.node) {
                            // Not ours (any more): forget it if we had it.
                            return Ok(self.workloads.remove(&(ns, name.clone())).is_some());
                        }
                        let addrs = workload_addrs(
                            &w.spec.node,
                            &w.spec.interface_name,
                            &w.spec.ip_networks,
                        )
                        .map_err(|reason| CalicoError::Decode {
                            key: kv.key.path(),
                            reason,
                        })?;
                        Ok(put(&mut self.workloads, (ns, name.clone()), addrs))
                    }
                    other => Ok(self.put_named(name, other)),
                }
            }
            Key::Affinity {
                affinity_type: AffinityType::Host,
                owner,
                cidr,
            } => {
                let state = parse_affinity(&kv.value).map_err(|reason| CalicoError::Decode {
                    key: kv.key.path(),
                    reason,
                })?;
                let k = (owner.clone(), *cidr);
                Ok(match state {
                    Some(s) => put(&mut self.affinities, k, s),
                    None => self.affinities.remove(&k).is_some(),
                })
            }
            _ => Ok(false),
        }
    }

    fn apply_delete(&mut self, key: &Key) -> bool {
        match key {
            Key::Resource {
                kind,
                namespace,
                name,
            } => match kind {
                Kind::Node => self.nodes.remove(name).is_some(),
                Kind::BgpConfiguration => self.bgp_configs.remove(name).is_some(),
                Kind::BgpPeer => self.bgp_peers.remove(name).is_some(),
                Kind::BgpFilter => self.bgp_filters.remove(name).is_some(),
                Kind::IpPool => self.pools.remove(name).is_some(),
                Kind::WorkloadEndpoint => self
                    .workloads
                    .remove(&(namespace.clone().unwrap_or_default(), name.clone()))
                    .is_some(),
                _ => false,
            },
            Key::Affinity {
                affinity_type: AffinityType::Host,
                owner,
                cidr,
            } => self.affinities.remove(&(owner.clone(), *cidr)).is_some(),
            _ => false,
        }
    }

    /// Stores a typed resource under its own metadata name (and namespace). For tests and
    /// for callers that already hold typed resources. Returns whether anything changed; a
    /// WorkloadEndpoint whose addresses do not parse is an error and changes nothing.
    pub fn put_resource(&mut self, r: AnyResource) -> Result<bool, CalicoError> {
        let name = r.metadata().name.clone();
        if let AnyResource::WorkloadEndpoint(w) = &r {
            let ns = w.metadata.namespace.clone().unwrap_or_default();
            let addrs = workload_addrs(&w.spec.node, &w.spec.interface_name, &w.spec.ip_networks)
                .map_err(|reason| CalicoError::Decode {
                key: Key::resource(Kind::WorkloadEndpoint, Some(&ns), &name).path(),
                reason,
            })?;
            return Ok(put(&mut self.workloads, (ns, name), addrs));
        }
        Ok(self.put_named(&name, r))
    }

    /// Records a host block affinity (what a `/calico/ipam/v2/host/<host>/ipvN/block/<cidr>`
    /// record says).
    pub fn put_affinity(&mut self, host: &str, block: IpNet, state: AffinityState) -> bool {
        put(&mut self.affinities, (host.to_string(), block), state)
    }

    fn put_named(&mut self, name: &str, r: AnyResource) -> bool {
        let name = name.to_string();
        match r {
            AnyResource::Node(mut n) => {
                // The revision changes on every write; only content matters here.
                n.metadata.resource_version.clear();
                put(&mut self.nodes, name, *n)
            }
            AnyResource::BgpConfiguration(c) => put(&mut self.bgp_configs, name, c.spec),
            AnyResource::BgpPeer(p) => put(&mut self.bgp_peers, name, p.spec),
            AnyResource::BgpFilter(f) => put(&mut self.bgp_filters, name, f.spec),
            AnyResource::IpPool(p) => put(&mut self.pools, name, p.spec),
            _ => false,
        }
    }

    /// The Node resource called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }
}

/// Inserts `v` under `k`; true when the value is new or different.
fn put<K: Ord, V: PartialEq>(map: &mut BTreeMap<K, V>, k: K, v: V) -> bool {
    match map.get(&k) {
        Some(old) if *old == v => false,
        _ => {
            map.insert(k, v);
            true
        }
    }
}

fn decode_error(key: &Key, e: DatastoreError) -> CalicoError {
    let reason = match e {
        DatastoreError::Corrupt { reason, .. } => reason,
        other => other.to_string(),
    };
    CalicoError::Decode {
        key: key.path(),
        reason,
    }
}

fn workload_addrs(node: &str, iface: &str, nets: &[String]) -> Result<WorkloadAddrs, String> {
    let nets = nets
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("spec.ipNetworks entry {s:?} is not a CIDR"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WorkloadAddrs {
        node: node.to_string(),
        interface: iface.to_string(),
        nets,
    })
}
