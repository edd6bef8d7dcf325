//! What this node originates and what it lets out: `bird_aggr.cfg` (blackholes for affine
//! blocks, `calico_aggr()`), `bird_ipam.cfg` (`calico_export_to_bgp_peers`) and
//! `apply_communities()` from `bird.cfg`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::{BgpConfigurationSpec, CidrBlock, EnabledDisabled, EncapMode};
use ipnet::IpNet;

use super::filter::{RouteInfo, RouteSource, glob_match};
use super::state::AffinityState;
use super::view::View;
use super::{BIRD_INT_MAX, CalicoError, DEFAULT_NORMAL_ROUTE_PRIORITY};

/// A BGP community value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    /// `aa:nn`, as `aa << 16 | nn`.
    Standard(u32),
    /// `aa:nn:mm` (RFC 8092).
    Large(u32, u32, u32),
}

impl Community {
    /// Parses `aa:nn` (16-bit parts) or `aa:nn:mm` (32-bit parts).
    pub fn parse(s: &str) -> Result<Community, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || {
            format!(
                "{s:?} is not a community: use aa:nn (16-bit numbers) or aa:nn:mm (32-bit numbers)"
            )
        };
        if !parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        match parts.as_slice() {
            [a, n] => {
                let a: u16 = a.parse().map_err(|_| bad())?;
                let n: u16 = n.parse().map_err(|_| bad())?;
                Ok(Community::Standard((u32::from(a) << 16) | u32::from(n)))
            }
            [a, n, m] => Ok(Community::Large(
                a.parse().map_err(|_| bad())?,
                n.parse().map_err(|_| bad())?,
                m.parse().map_err(|_| bad())?,
            )),
            _ => Err(bad()),
        }
    }

    /// confd's `standardCommunity` / `largeCommunity` regexps: digits and colons, any size.
    fn looks_literal(s: &str) -> bool {
        let parts: Vec<&str> = s.split(':').collect();
        (parts.len() == 2 || parts.len() == 3)
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// One `prefixAdvertisements` entry: routes inside `cidr` (`net ~ cidr`) get `communities`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommunityRule {
    pub cidr: IpNet,
    /// In confd's order: the values sorted as strings, duplicates removed.
    pub communities: Vec<Community>,
}

/// What `calico_export_to_bgp_peers` and the kernel filter need to know about a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolRule {
    pub name: String,
    pub cidr: IpNet,
    pub disable_bgp_export: bool,
    pub ipip: EncapMode,
    pub vxlan: EncapMode,
}

impl PoolRule {
    pub fn uses_vxlan(&self) -> bool {
        self.vxlan != EncapMode::Never
    }

    pub fn uses_ipip(&self) -> bool {
        self.ipip != EncapMode::Never
    }
}

/// The inputs of `calico_export_to_bgp_peers(internal)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExportPolicy {
    /// Sorted as confd sorts its filter statements (by CIDR text).
    pub pools: Vec<PoolRule>,
    /// This node's non-pending affinities, in `calico_aggr()` order.
    pub affine_blocks: Vec<(IpNet, AffinityState)>,
    /// Service ranges advertised from this node (`/staticroutes`).
    pub static_routes: Vec<IpNet>,
    /// On a route reflector: LoadBalancer and external IP ranges it reflects.
    pub rr_service_ranges: Vec<IpNet>,
    pub community_rules: Vec<CommunityRule>,
    /// Felix programs remote IPIP routes (`programClusterRoutes` leaves IPIP to Felix), so
    /// `tunl0` routes are not re-advertised over iBGP.
    pub felix_owns_ipip: bool,
    pub normal_route_priority_v4: u32,
    pub normal_route_priority_v6: u32,
}

/// `route ~ cidr` in BIRD: `net` lies inside `cidr` (or is it), same family.
///
/// Runs for every route against every pool, service range and community rule, so it
/// compares the leading bits directly: ipnet's `contains` works out both networks' first
/// and last addresses, and was a twentieth of a ten-sender feed's CPU.
pub(crate) fn within(net: IpNet, cidr: IpNet) -> bool {
    match (net, cidr) {
        (IpNet::V4(n), IpNet::V4(c)) => {
            n.prefix_len() >= c.prefix_len()
                && (n.addr().to_bits() ^ c.addr().to_bits()) & c.netmask().to_bits() == 0
        }
        (IpNet::V6(n), IpNet::V6(c)) => {
            n.prefix_len() >= c.prefix_len()
                && (n.addr().to_bits() ^ c.addr().to_bits()) & c.netmask().to_bits() == 0
        }
        _ => false,
    }
}

impl ExportPolicy {
    pub fn normal_route_priority(&self, v6: bool) -> u32 {
        if v6 {
            self.normal_route_priority_v6
        } else {
            self.normal_route_priority_v4
        }
    }

    /// `apply_communities()`: every matching rule adds its communities (no duplicates).
    pub fn communities_for(&self, net: IpNet) -> Vec<Community> {
        let mut out: Vec<Community> = Vec::new();
        for r in self.community_rules.iter().filter(|r| within(net, r.cidr)) {
            for c in &r.communities {
                if !out.contains(c) {
                    out.push(*c);
                }
            }
        }
        out
    }

    /// `calico_export_to_bgp_peers(internal)` on a route whose `krt_metric` is already set:
    /// `None` rejects, `Some(communities)` accepts with those communities added.
    pub fn export_to_peers(
        &self,
        route: &RouteInfo,
        krt_metric: u32,
        internal: bool,
    ) -> Option<Vec<Community>> {
        let net = route.prefix;
        // Pools with disableBGPExport.
        if self
            .pools
            .iter()
            .any(|p| p.disable_bgp_export && within(net, p.cidr))
        {
            return None;
        }
        if let Some(ifname) = route.interface.as_deref() {
            // Felix's tunnel routes (VXLAN, WireGuard, IPIP when Felix owns it) are not
            // re-advertised to iBGP peers; eBGP peers (ToR) still get them on purpose.
            if internal
                && (glob_match("*.cali", ifname)
                    || glob_match("*.calico", ifname)
                    || (self.felix_owns_ipip && glob_match("tunl0", ifname)))
            {
                return None;
            }
            // reject_local_routes(): BPF-mode local routes never leave the node.
            if glob_match("bpf*.cali", ifname) {
                return None;
            }
        }
        let communities = self.communities_for(net);
        // calico_aggr(): export each confirmed block and, beneath it, only elevated-priority
        // routes (live migration); the per-pod /32s stay inside.
        let normal = self.normal_route_priority(net.addr().is_ipv6());
        for (block, state) in &self.affine_blocks {
            if !state.aggregates() {
                continue;
            }
            if net == *block {
                return Some(communities);
            }
            if within(net, *block) {
                return (krt_metric < normal).then_some(communities);
            }
        }
        if self.static_routes.iter().any(|s| within(net, *s)) {
            return Some(communities);
        }
        if self.rr_service_ranges.iter().any(|s| within(net, *s)) {
            return Some(communities);
        }
        if self
            .pools
            .iter()
            .any(|p| !p.disable_bgp_export && within(net, p.cidr))
        {
            return Some(communities);
        }
        None
    }
}

/// Where an originated route comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExportOrigin {
    /// A block affine to this node (blackholed here).
    Block,
    /// A service range from BGPConfiguration.
    Service,
    /// A local workload's address outside this node's blocks (borrowed from another node's
    /// block), or in a /32 block.
    Workload { namespace: String, name: String },
}

/// A route this node advertises.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExportRoute {
    pub prefix: IpNet,
    pub origin: ExportOrigin,
    /// Where BIRD would have learned it: the kernel (Felix's workload route, with its
    /// interface) or a static route (blackholed block, service range).
    pub source: RouteSource,
    pub interface: Option<String>,
    /// Standard communities, `aa << 16 | nn`.
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
}

impl ExportRoute {
    /// The route as the filters see it.
    pub fn route_info(&self) -> RouteInfo {
        RouteInfo {
            interface: self.interface.clone(),
            ..RouteInfo::new(self.prefix, self.source)
        }
    }
}

pub(crate) fn split_communities(cs: &[Community]) -> (Vec<u32>, Vec<(u32, u32, u32)>) {
    let mut std = Vec::new();
    let mut large = Vec::new();
    for c in cs {
        match *c {
            Community::Standard(v) => std.push(v),
            Community::Large(a, b, c) => large.push((a, b, c)),
        }
    }
    (std, large)
}

/// The service ranges of BGPConfiguration `default`, parsed once.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceRanges {
    pub cluster: Vec<IpNet>,
    pub external: Vec<IpNet>,
    pub load_balancer: Vec<IpNet>,
    /// `serviceLoadBalancerAggregation` (default Enabled).
    pub aggregate_lb: bool,
}

fn is_single(n: &IpNet) -> bool {
    n.prefix_len() == n.max_prefix_len()
}

impl ServiceRanges {
    /// What every node advertises and keeps out of its kernel (`updateGlobalRoutes`): all
    /// cluster IP ranges, external ranges that are not single addresses, and LoadBalancer
    /// ranges that are not single addresses when aggregation is on.
    pub fn global_routes(&self) -> Vec<IpNet> {
        let mut out = self.cluster.clone();
        out.extend(self.external.iter().filter(|n| !is_single(n)));
        if self.aggregate_lb {
            out.extend(self.load_balancer.iter().filter(|n| !is_single(n)));
        }
        let mut seen = Vec::new();
        out.retain(|n| {
            let fresh = !seen.contains(n);
            seen.push(*n);
            fresh
        });
        out
    }
}

fn parse_blocks(v: &mut View<'_>, field: &str, blocks: &[CidrBlock]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        if b.cidr.is_empty() {
            // The CRD allows an empty entry; confd ignores it.
            continue;
        }
        match b.cidr.parse::<IpNet>() {
            Ok(n) => out.push(n.trunc()),
            Err(_) => v.problems.push(CalicoError::InvalidConfig {
                config: "default".to_string(),
                field: format!("{field}[{i}].cidr"),
                reason: format!("{:?} is not a CIDR", b.cidr),
            }),
        }
    }
    out
}

pub(crate) fn service_ranges(v: &mut View<'_>) -> ServiceRanges {
    let Some(g) = v.global else {
        return ServiceRanges {
            aggregate_lb: true,
            ..ServiceRanges::default()
        };
    };
    ServiceRanges {
        cluster: parse_blocks(v, "serviceClusterIPs", &g.service_cluster_ips),
        external: parse_blocks(v, "serviceExternalIPs", &g.service_external_ips),
        load_balancer: parse_blocks(v, "serviceLoadBalancerIPs", &g.service_load_balancer_ips),
        aggregate_lb: g.service_load_balancer_aggregation != Some(EnabledDisabled::Disabled),
    }
}

/// `BGPConfiguration.programClusterRoutes`: does BIRD program (ipip, no-encap) pools' routes?
pub(crate) fn cluster_route_policy(g: Option<&BgpConfigurationSpec>) -> (bool, bool) {
    match g.and_then(|g| g.program_cluster_routes.as_deref()) {
        Some("Disabled") => (false, false),
        Some("Enabled") => (true, true),
        Some("EnabledIPIPOnly") => (true, false),
        // EnabledNoEncapOnly, unset, or a value from a newer API: the default.
        _ => (false, true),
    }
}

/// The pools, sorted by CIDR text (confd sorts its `if (net ~ <cidr>)` statements).
pub(crate) fn pools(v: &mut View<'_>) -> Vec<PoolRule> {
    let mut out = Vec::new();
    for (name, spec) in &v.state.pools {
        match spec.network() {
            Some(n) => out.push(PoolRule {
                name: name.clone(),
                cidr: n.trunc(),
                disable_bgp_export: spec.disable_bgp_export,
                ipip: spec.ipip(),
                vxlan: spec.vxlan(),
            }),
            None => v.problems.push(CalicoError::InvalidPool {
                pool: name.clone(),
                cidr: spec.cidr.clone(),
            }),
        }
    }
    out.sort_by_key(|p| p.cidr.to_string());
    out
}

pub(crate) fn normal_priority(p: Option<i64>) -> u32 {
    p.and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0 && *p < BIRD_INT_MAX)
        .unwrap_or(DEFAULT_NORMAL_ROUTE_PRIORITY)
}

/// `prefixAdvertisements` of `node.<me>` if it has any, else of `default`; names resolve
/// against the same resource's `communities`.
fn community_rules(v: &mut View<'_>) -> Vec<CommunityRule> {
    let node_cfg_name = format!("node.{}", v.me);
    let (cfg_name, cfg) = match (v.node_config, v.global) {
        (Some(n), _) if !n.prefix_advertisements.is_empty() => (node_cfg_name, n),
        (_, Some(g)) => ("default".to_string(), g),
        _ => return Vec::new(),
    };
    let mut rules = Vec::new();
    for (i, adv) in cfg.prefix_advertisements.iter().enumerate() {
        if adv.cidr.is_empty() {
            continue;
        }
        let cidr = match adv
            .cidr
            .parse::<IpNet>()
            .or_else(|_| adv.cidr.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(n) => n.trunc(),
            Err(_) => {
                v.problems.push(CalicoError::InvalidConfig {
                    config: cfg_name.clone(),
                    field: format!("prefixAdvertisements[{i}].cidr"),
                    reason: format!("{:?} is not a CIDR", adv.cidr),
                });
                continue;
            }
        };
        // confd: a literal is used as is, anything else is looked up by name; then the set
        // is sorted as strings.
        let mut values: Vec<&str> = Vec::new();
        for (j, c) in adv.communities.iter().enumerate() {
            let value = if Community::looks_literal(c) {
                Some(c.as_str())
            } else {
                cfg.communities
                    .iter()
                    .find(|d| d.name == *c)
                    .map(|d| d.value.as_str())
            };
            match value {
                Some(val) => values.push(val),
                None => v.problems.push(CalicoError::InvalidConfig {
                    config: cfg_name.clone(),
                    field: format!("prefixAdvertisements[{i}].communities[{j}]"),
                    reason: format!(
                        "{c:?} is neither a community value (aa:nn or aa:nn:mm) nor the name of one in spec.communities"
                    ),
                }),
            }
        }
        values.sort_unstable();
        values.dedup();
        let mut communities = Vec::new();
        for val in values {
            match Community::parse(val) {
                Ok(c) => communities.push(c),
                Err(reason) => v.problems.push(CalicoError::InvalidConfig {
                    config: cfg_name.clone(),
                    field: format!("prefixAdvertisements[{i}].communities"),
                    reason,
                }),
            }
        }
        if !communities.is_empty() {
            rules.push(CommunityRule { cidr, communities });
        }
    }
    rules
}

pub(crate) fn policy(
    v: &mut View<'_>,
    services: &ServiceRanges,
    pools: Vec<PoolRule>,
) -> ExportPolicy {
    let (bird_ipip, _) = cluster_route_policy(v.global);
    let affine_blocks: Vec<(IpNet, AffinityState)> = v
        .state
        .affinities
        .iter()
        .filter(|((owner, _), state)| owner == v.me && **state != AffinityState::Pending)
        .map(|((_, block), state)| (*block, state.clone()))
        .collect();
    let excluded = v.me().is_some_and(|n| {
        n.labels
            .get("node.kubernetes.io/exclude-from-external-load-balancers")
            .is_some_and(|l| l == "true")
    });
    let static_routes = if excluded {
        Vec::new()
    } else {
        services.global_routes()
    };
    let rr_service_ranges = if v.my_cluster_id().is_empty() {
        Vec::new()
    } else {
        services
            .load_balancer
            .iter()
            .chain(&services.external)
            .copied()
            .collect()
    };
    let community_rules = community_rules(v);
    ExportPolicy {
        pools,
        affine_blocks,
        static_routes,
        rr_service_ranges,
        community_rules,
        felix_owns_ipip: !bird_ipip,
        normal_route_priority_v4: normal_priority(
            v.global.and_then(|g| g.ipv4_normal_route_priority),
        ),
        normal_route_priority_v6: normal_priority(
            v.global.and_then(|g| g.ipv6_normal_route_priority),
        ),
    }
}

/// This node's blocks as `bird_aggr.cfg` blackholes them: every affinity that is not pending,
/// except /32 and /128 blocks.
pub(crate) fn blackholes(v: &View<'_>) -> Vec<IpNet> {
    v.state
        .affinities
        .iter()
        .filter(|((owner, block), state)| {
            owner == v.me && **state != AffinityState::Pending && !is_single(block)
        })
        .map(|((_, block), _)| *block)
        .collect()
}

/// The routes this node originates and that pass `calico_export_to_bgp_peers`: its
/// blackholed blocks, its service ranges, and its workloads' addresses (BIRD learns their
/// kernel routes; `calico_aggr()` keeps those inside confirmed blocks, so what is left is
/// borrowed addresses and /32 blocks).
pub(crate) fn originated(v: &View<'_>, policy: &ExportPolicy) -> Vec<ExportRoute> {
    let mut candidates: Vec<(IpNet, ExportOrigin, Option<&str>)> = Vec::new();
    for b in blackholes(v) {
        candidates.push((b, ExportOrigin::Block, None));
    }
    for s in &policy.static_routes {
        candidates.push((*s, ExportOrigin::Service, None));
    }
    for ((ns, name), w) in &v.state.workloads {
        if w.node != v.me {
            continue;
        }
        for n in &w.nets {
            candidates.push((
                n.trunc(),
                ExportOrigin::Workload {
                    namespace: ns.clone(),
                    name: name.clone(),
                },
                Some(w.interface.as_str()),
            ));
        }
    }
    let mut out: BTreeMap<IpNet, ExportRoute> = BTreeMap::new();
    for (prefix, origin, iface) in candidates {
        if out.contains_key(&prefix) {
            continue;
        }
        let source = if iface.is_some() {
            RouteSource::Kernel
        } else {
            RouteSource::Static
        };
        let mut route = RouteInfo::new(prefix, source);
        route.interface = iface.filter(|i| !i.is_empty()).map(str::to_string);
        // Felix programs workload routes at the normal priority; static routes have no
        // metric and the export filter defaults it to the same value.
        let metric = policy.normal_route_priority(prefix.addr().is_ipv6());
        if let Some(cs) = policy.export_to_peers(&route, metric, false) {
            let (communities, large_communities) = split_communities(&cs);
            out.insert(
                prefix,
                ExportRoute {
                    prefix,
                    origin,
                    source: route.source,
                    interface: route.interface,
                    communities,
                    large_communities,
                },
            );
        }
    }
    out.into_values().collect()
}
