//! Calico's BGP configuration for birdd: datastore resources in, the BGP sessions to run and
//! the routes to advertise out, with the same results Calico's confd templates give BIRD
//! (`confd/pkg/backends/calico/{client.go,bgp_processor.go}` and
//! `node/filesystem/etc/calico/confd/templates/bird{,6}{,_aggr,_ipam}.cfg.template`).
//!
//! ```text
//!  syncer ─SyncUpdate─▶ ClusterState::apply ─▶ intent(state, node) ─▶ BgpIntent
//!                                                                  ├─ peers        (sessions)
//!                                                                  ├─ exports      (originated routes)
//!                                                                  ├─ filter_import / filter_export
//!                                                                  └─ kernel_action (what to install)
//! ```
//!
//! Everything here is pure: no I/O, no clock, no tokio. It never reads Kubernetes secrets
//! (peer passwords are carried as references for the daemon to resolve or report) and never
//! decides session state; [`diff_peers`] tells the daemon which sessions changed.

mod exports;
mod filter;
mod kernel;
mod peers;
mod router_id;
mod state;
mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;

pub use exports::{Community, CommunityRule, ExportOrigin, ExportPolicy, ExportRoute, PoolRule};
pub use filter::{CompiledFilter, FilterVerdict, RouteInfo, RouteSource};
pub use kernel::{KernelAction, KernelPolicy, KernelPoolAction, KernelPoolRule, SkipReason};
pub use router_id::hash_router_id;
pub use state::{AffinityState, ClusterState, WorkloadAddrs, watched_prefixes};

/// BIRD's graceful-restart time when confd sets none (`graceful restart time` unset).
pub const DEFAULT_MAX_RESTART_TIME: Duration = Duration::from_secs(120);
/// BGP's port when neither BGPConfiguration nor the peer sets one.
pub const DEFAULT_PORT: u16 = calico_api::DEFAULT_BGP_PORT;
/// `template.BirdIntMaxValue`: priority and local-pref convert as `x = 2^31-1 - y`.
pub const BIRD_INT_MAX: u32 = 2_147_483_647;
/// `ipv4/ipv6NormalRoutePriority` default: the kernel metric of a normal route.
pub const DEFAULT_NORMAL_ROUTE_PRIORITY: u32 = 1024;

/// Where a peering comes from; also the prefix of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// Node-to-node mesh (`Mesh_<ip>`).
    Mesh,
    /// A BGPPeer with neither `node` nor `nodeSelector` (`Global_<ip>`).
    Global,
    /// A BGPPeer whose `node`/`nodeSelector` picks this node, or an automatic reverse peering
    /// (`Node_<ip>`).
    NodeSpecific,
}

impl PeerKind {
    /// The name prefix confd uses.
    pub fn prefix(self) -> &'static str {
        match self {
            PeerKind::Mesh => "Mesh",
            PeerKind::Global => "Global",
            PeerKind::NodeSpecific => "Node",
        }
    }
}

/// A password in a Kubernetes secret (`secretKeyRef`). birdd reads its datastore through
/// etcd, so it cannot read secrets itself; the daemon resolves or reports the reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PasswordRef {
    pub secret_name: String,
    pub key: String,
}

/// BIRD's debug level, from `logSeverityScreen` (confd keeps `debug` and `info` and turns
/// every other level into `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogLevel {
    /// `debug { states }` on protocols, `debug { states, routes, filters, events }` on peers.
    #[default]
    Info,
    /// `debug all`.
    Debug,
    /// No BGP debugging.
    None,
}

/// One BGP session to run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIntent {
    /// `Mesh_10_0_0_2`, `Node_fd00__1_port_1790`, ...: unique, and what `calicoctl node status`
    /// parses.
    pub name: String,
    pub kind: PeerKind,
    pub address: IpAddr,
    /// The port to connect to (179 unless the peer or its node's BGPConfiguration says
    /// otherwise).
    pub port: u16,
    pub remote_as: u32,
    /// The AS this node uses on the session (BGPPeer `localASNumber`, else the node's AS).
    pub local_as: u32,
    /// Bind the TCP connection to this node's address of the peer's family
    /// (`sourceAddress: UseNodeIP`, the default).
    pub source_address: Option<IpAddr>,
    /// Wait for the peer to connect (`passive on`).
    pub passive: bool,
    /// Treat the peer as a route-reflector client, with this node's cluster ID.
    pub rr_client: bool,
    pub password: Option<PasswordRef>,
    /// `next hop keep`.
    pub keep_original_next_hop: bool,
    /// `next hop self`.
    pub next_hop_self: bool,
    /// `graceful restart time`; `None` leaves BIRD's default, [`DEFAULT_MAX_RESTART_TIME`].
    pub max_restart_time: Option<Duration>,
    pub keepalive_time: Option<Duration>,
    /// `ttl security on; multihop <n>`; `None` is `ttl security off; multihop`.
    pub ttl_security: Option<u8>,
    /// `allow local as <n>` (0: not set).
    pub allow_local_as: usize,
    /// BGPFilter names, applied in order.
    pub filters: Vec<String>,
    /// Gateway for a static route to the peer (`reachableBy`).
    pub reachable_by: Option<IpAddr>,
    /// The BGPPeer resource this came from (`None` for mesh peers).
    pub origin: Option<String>,
}

impl PeerIntent {
    /// iBGP: the same AS on both ends (confd's `is_same_as`).
    pub fn is_ibgp(&self) -> bool {
        self.remote_as == self.local_as
    }

    /// The graceful-restart time in force.
    pub fn effective_max_restart_time(&self) -> Duration {
        self.max_restart_time.unwrap_or(DEFAULT_MAX_RESTART_TIME)
    }
}

/// How to pick the router ID (`CALICO_ROUTER_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouterIdMode {
    /// The node's IPv4 address; for a node without one, the name hash (Calico would render an
    /// empty router ID there, which BIRD rejects).
    #[default]
    NodeIp,
    /// `CALICO_ROUTER_ID=hash`: always [`hash_router_id`].
    Hash,
    /// `CALICO_ROUTER_ID=<ip>`.
    Fixed(Ipv4Addr),
}

/// Inputs that come from the environment rather than the datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntentOptions {
    pub router_id: RouterIdMode,
}

/// Everything birdd should be doing on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct BgpIntent {
    pub node_name: String,
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// `listenPort` of `node.<name>`, else of `default`, else 179.
    pub listen_port: u16,
    /// `bindMode: NodeIP`: listen only on this node's address (IPv4 if it has one, else
    /// IPv6; see [`BgpIntent::bind_addresses`] for both); `None`: on every address.
    pub bind_address: Option<IpAddr>,
    /// `spec.bgp.ipv4Address` without its prefix length.
    pub node_ipv4: Option<Ipv4Addr>,
    /// `spec.bgp.ipv6Address` without its prefix length.
    pub node_ipv6: Option<Ipv6Addr>,
    /// `routeReflectorClusterID`: this node is a route reflector.
    pub cluster_id: Option<Ipv4Addr>,
    pub log_level: LogLevel,
    /// Sorted by name.
    pub peers: Vec<PeerIntent>,
    /// Routes this node originates, sorted by prefix.
    pub exports: Vec<ExportRoute>,
    /// This node's affine blocks (not /32 or /128), as `bird_aggr.cfg` blackholes them.
    /// Whether birdd or Felix installs them is [`BgpIntent::kernel_action`]'s answer.
    pub blackholes: Vec<IpNet>,
    /// `calico_export_to_bgp_peers` and the route-origination inputs.
    pub export_policy: ExportPolicy,
    /// `calico_kernel_programming`.
    pub kernel_policy: KernelPolicy,
    /// The BGPFilters the peers name, as they were when the intent was computed (so that a
    /// changed filter makes the intent differ and the daemon re-runs its export).
    pub filters: BTreeMap<String, CompiledFilter>,
    /// Resources that were skipped, each naming the resource and field to fix.
    pub problems: Vec<CalicoError>,
}

impl BgpIntent {
    pub fn peer(&self, name: &str) -> Option<&PeerIntent> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// The addresses to listen on under `bindMode: NodeIP` (confd binds BIRD to the IPv4
    /// address and BIRD6 to the IPv6 one); empty means every address.
    pub fn bind_addresses(&self) -> Vec<IpAddr> {
        if self.bind_address.is_none() {
            return Vec::new();
        }
        self.node_ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.node_ipv6.map(IpAddr::V6))
            .collect()
    }

    /// Whether anything besides the peer list that decides which routes go where differs:
    /// BGPFilters, the export policy (pools, blocks, service ranges, communities) or the
    /// kernel policy. When it does, every prefix must be re-filtered.
    pub fn filters_differ(&self, other: &BgpIntent) -> bool {
        self.filters != other.filters
            || self.export_policy != other.export_policy
            || self.kernel_policy != other.kernel_policy
    }

    /// What the import filter of `peer_name` does with a received route (BGPFilter import
    /// rules, first match wins, then accept). An unknown peer, or a route of the other
    /// family (Calico runs separate IPv4 and IPv6 sessions), is rejected.
    pub fn import_verdict(&self, peer_name: &str, route: &RouteInfo) -> FilterVerdict {
        match self.peer(peer_name) {
            Some(p) => self.import_verdict_for(p, route),
            None => FilterVerdict::Reject,
        }
    }

    /// [`BgpIntent::import_verdict`] for a peer the caller already holds.
    pub fn import_verdict_for(&self, p: &PeerIntent, route: &RouteInfo) -> FilterVerdict {
        if p.address.is_ipv6() != route.prefix.addr().is_ipv6() {
            return FilterVerdict::Reject;
        }
        filter::import(&self.filters, p, route)
    }

    /// What the export filter of `peer_name` does with a route: metric / LOCAL_PREF mapping,
    /// BGPFilter export rules, then `calico_export_to_bgp_peers(<iBGP>)`. Unknown peer or
    /// other family: reject.
    pub fn export_verdict(&self, peer_name: &str, route: &RouteInfo) -> FilterVerdict {
        match self.peer(peer_name) {
            Some(p) => self.export_verdict_for(p, route),
            None => FilterVerdict::Reject,
        }
    }

    /// [`BgpIntent::export_verdict`] for a peer the caller already holds.
    pub fn export_verdict_for(&self, p: &PeerIntent, route: &RouteInfo) -> FilterVerdict {
        if p.address.is_ipv6() != route.prefix.addr().is_ipv6() {
            return FilterVerdict::Reject;
        }
        filter::export(&self.filters, &self.export_policy, p, route)
    }

    /// Whether the import filter of `peer_name` accepts `route`.
    pub fn filter_import_route(&self, peer_name: &str, route: &RouteInfo) -> bool {
        self.import_verdict(peer_name, route).is_accept()
    }

    /// Whether the export filter of `peer_name` accepts `route`.
    pub fn filter_export_route(&self, peer_name: &str, route: &RouteInfo) -> bool {
        self.export_verdict(peer_name, route).is_accept()
    }

    /// [`BgpIntent::import_verdict`] for a route received from a peer, known only by prefix.
    pub fn filter_import(&self, peer_name: &str, prefix: &IpNet) -> bool {
        self.import_verdict(peer_name, &RouteInfo::learned(*prefix))
            .is_accept()
    }

    /// [`BgpIntent::export_verdict`] for a route known only by prefix: one of
    /// [`BgpIntent::exports`] is taken as originated here, anything else as learned over BGP.
    pub fn filter_export(&self, peer_name: &str, prefix: &IpNet) -> bool {
        let route = self
            .export_of(*prefix)
            .map_or_else(|| RouteInfo::learned(*prefix), ExportRoute::route_info);
        self.peer(peer_name)
            .is_some_and(|p| self.export_verdict_for(p, &route).is_accept())
    }

    /// The filters' view of a route this node originates: its source and interface as BIRD
    /// learned it (a workload's kernel route on its `cali` interface, a static blackhole or
    /// service range); a prefix that is not one of the exports is taken as static.
    pub fn originated_route(&self, prefix: IpNet) -> RouteInfo {
        self.export_of(prefix)
            .map_or_else(|| RouteInfo::originated(prefix), ExportRoute::route_info)
    }

    fn export_of(&self, prefix: IpNet) -> Option<&ExportRoute> {
        self.exports
            .binary_search_by(|e| e.prefix.cmp(&prefix))
            .ok()
            .map(|i| &self.exports[i])
    }

    /// Whether and how to program a route learned with BGP next hop `next_hop`.
    pub fn kernel_action(&self, prefix: &IpNet, next_hop: IpAddr) -> KernelAction {
        self.kernel_policy.action(*prefix, Some(next_hop))
    }

    /// Whether this node's own blackhole for `block` goes into the kernel through BIRD
    /// (`Install`: BIRD-programmed pools) or is Felix's (`Skip`).
    pub fn blackhole_action(&self, block: &IpNet) -> KernelAction {
        self.kernel_policy.action(*block, None)
    }

    /// The kernel metric of a learned route: `2^31-1 - LOCAL_PREF`, else the normal route
    /// priority (`calico_kernel_programming`).
    pub fn kernel_metric(&self, prefix: &IpNet, local_pref: Option<u32>) -> u32 {
        self.kernel_policy.metric(*prefix, local_pref)
    }
}

/// Which peers changed between two intents, keyed by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerDiff {
    pub added: Vec<PeerIntent>,
    pub removed: Vec<PeerIntent>,
    /// The new intent of peers whose settings changed (the daemon restarts those sessions).
    pub changed: Vec<PeerIntent>,
}

impl PeerDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares two peer lists by name, so that the daemon touches only the sessions that
/// changed. Output is sorted by name.
pub fn diff_peers(old: &[PeerIntent], new: &[PeerIntent]) -> PeerDiff {
    let old_by: BTreeMap<&str, &PeerIntent> = old.iter().map(|p| (p.name.as_str(), p)).collect();
    let new_by: BTreeMap<&str, &PeerIntent> = new.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut d = PeerDiff::default();
    for (name, n) in &new_by {
        match old_by.get(name) {
            None => d.added.push((*n).clone()),
            Some(o) if o != n => d.changed.push((*n).clone()),
            Some(_) => {}
        }
    }
    for (name, o) in &old_by {
        if !new_by.contains_key(name) {
            d.removed.push((*o).clone());
        }
    }
    d
}

/// Why a resource cannot be used. Each names the resource and the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalicoError {
    #[error("cannot read datastore record {key}: {reason}")]
    Decode { key: String, reason: String },

    #[error(
        "there is no Node resource named {node:?}: start calico-node on this host to create it, or pass the right --nodename"
    )]
    NoNode { node: String },

    #[error(
        "Node {node:?} has no BGP address: set spec.bgp.ipv4Address (e.g. 10.0.0.1/24) or spec.bgp.ipv6Address"
    )]
    NoBgpAddress { node: String },

    #[error("Node {node:?} {field}: {reason}")]
    InvalidNode {
        node: String,
        field: &'static str,
        reason: String,
    },

    #[error("BGPPeer {peer:?} spec.{field}: {reason}; the peering is skipped")]
    InvalidPeer {
        peer: String,
        field: &'static str,
        reason: String,
    },

    #[error("BGPConfiguration {config:?} spec.{field}: {reason}; the entry is skipped")]
    InvalidConfig {
        config: String,
        field: String,
        reason: String,
    },

    #[error("BGPFilter {filter:?} spec.{field}: {reason}; the rule is skipped")]
    InvalidFilter {
        filter: String,
        field: String,
        reason: String,
    },

    #[error("IPPool {pool:?} spec.cidr {cidr:?} is not a CIDR; the pool is ignored for BGP")]
    InvalidPool { pool: String, cidr: String },
}

/// [`intent_with`] with the default options (router ID from the node's IPv4 address).
pub fn intent(state: &ClusterState, nodename: &str) -> Result<BgpIntent, CalicoError> {
    intent_with(state, nodename, &IntentOptions::default())
}

/// Computes what birdd on `nodename` should do.
///
/// Fails only when this node itself cannot run BGP (no Node resource, no BGP address, a
/// malformed address or cluster ID); a bad BGPPeer, pool, community or filter is skipped, as
/// confd skips it, and listed in [`BgpIntent::problems`].
pub fn intent_with(
    state: &ClusterState,
    nodename: &str,
    opts: &IntentOptions,
) -> Result<BgpIntent, CalicoError> {
    if state.node(nodename).is_none() {
        return Err(CalicoError::NoNode {
            node: nodename.to_string(),
        });
    }
    let mut v = view::View::new(state, nodename);
    // A malformed address of this node is fatal; other nodes' are problems.
    if let Some(p) = v
        .problems
        .iter()
        .find(|p| matches!(p, CalicoError::InvalidNode { node, .. } if node.as_str() == nodename))
    {
        return Err(p.clone());
    }
    let (my_v4, my_v6) = (v.my_v4(), v.my_v6());
    if my_v4.is_none() && my_v6.is_none() {
        return Err(CalicoError::NoBgpAddress {
            node: nodename.to_string(),
        });
    }
    let cluster_id = match v.my_cluster_id() {
        "" => None,
        s => Some(
            s.parse::<Ipv4Addr>()
                .map_err(|_| CalicoError::InvalidNode {
                    node: nodename.to_string(),
                    field: "spec.bgp.routeReflectorClusterID",
                    reason: format!("{s:?} is not an IPv4 address (e.g. 244.0.0.1)"),
                })?,
        ),
    };
    let router_id = match opts.router_id {
        RouterIdMode::Fixed(ip) => ip,
        RouterIdMode::Hash => hash_router_id(nodename),
        RouterIdMode::NodeIp => my_v4.unwrap_or_else(|| hash_router_id(nodename)),
    };
    let global = v.global;
    let node_config = v.node_config;
    let listen_port = node_config
        .and_then(|c| c.listen_port)
        .filter(|p| *p != 0)
        .or(global.and_then(|g| g.listen_port).filter(|p| *p != 0))
        .unwrap_or(DEFAULT_PORT);
    let bind_address = if global
        .and_then(|g| g.bind_mode)
        .is_some_and(|m| m == calico_api::BindMode::NodeIp)
    {
        my_v4.map(IpAddr::V4).or(my_v6.map(IpAddr::V6))
    } else {
        None
    };
    let severity = node_config
        .map(|c| c.log_severity_screen.as_str())
        .filter(|s| !s.is_empty())
        .or(global
            .map(|g| g.log_severity_screen.as_str())
            .filter(|s| !s.is_empty()));
    let log_level = match severity.map(str::to_ascii_lowercase).as_deref() {
        None | Some("info") => LogLevel::Info,
        Some("debug") => LogLevel::Debug,
        Some(_) => LogLevel::None,
    };

    let peers = peers::compute(&mut v);
    let services = exports::service_ranges(&mut v);
    let pools = exports::pools(&mut v);
    let kernel_policy = kernel::policy(&v, &services, &pools);
    let export_policy = exports::policy(&mut v, &services, pools);
    let exports = exports::originated(&v, &export_policy);
    let blackholes = exports::blackholes(&v);
    let filters = filter::referenced(&mut v, &peers);
    // The same selector or peer can be reported by more than one pass.
    let mut problems: Vec<CalicoError> = Vec::new();
    for p in v.problems.drain(..) {
        if !problems.contains(&p) {
            problems.push(p);
        }
    }

    Ok(BgpIntent {
        node_name: nodename.to_string(),
        router_id,
        local_as: v.my_as(),
        listen_port,
        bind_address,
        node_ipv4: my_v4,
        node_ipv6: my_v6,
        cluster_id,
        log_level,
        peers,
        exports,
        blackholes,
        export_policy,
        kernel_policy,
        filters,
        problems,
    })
}
