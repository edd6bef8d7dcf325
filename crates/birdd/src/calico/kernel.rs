//! `filter calico_kernel_programming` (`bird_ipam.cfg`): which routes BIRD writes into the
//! kernel, and how. Felix owns VXLAN routes always, IPIP routes by default
//! (`programClusterRoutes`), and WireGuard peers' routes; service ranges never go in.

use std::net::IpAddr;

use calico_api::EncapMode;
use ipnet::{IpNet, Ipv4Net};

use super::BIRD_INT_MAX;
use super::exports::{PoolRule, ServiceRanges, cluster_route_policy, normal_priority, within};
use super::view::View;

/// Why a route stays out of the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Inside a service range (`/rejectcidrs`): kube-proxy handles those addresses.
    ServiceRange { cidr: IpNet },
    /// Its next hop is a WireGuard node; Felix routes it through the WireGuard device.
    WireguardPeer { node: String },
    /// Inside a VXLAN pool: "VXLAN routes are handled by Felix."
    VxlanPool { cidr: IpNet },
    /// Inside a pool whose cluster routes Felix programs (`programClusterRoutes`).
    FelixProgramsPool { cidr: IpNet },
}

/// What to do with a route in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KernelAction {
    Skip(SkipReason),
    /// Install it: through `tunl0` (IPIP, `krt_tunnel="tunl0"`, onlink to the next hop) or
    /// directly. The metric of a learned route is [`KernelPolicy::metric`].
    Install {
        via_tunnel: bool,
    },
}

/// What a pool's statement in the kernel filter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPoolAction {
    /// VXLAN pool: Felix.
    FelixVxlan,
    /// IPIP or no-encap pool whose routes Felix programs.
    FelixOwned,
    /// BIRD-programmed IPIP Always: via `tunl0`.
    Tunnel,
    /// BIRD-programmed IPIP CrossSubnet: direct when the next hop is in this node's subnet.
    CrossSubnet,
    /// BIRD-programmed without encapsulation.
    Direct,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelPoolRule {
    pub cidr: IpNet,
    pub action: KernelPoolAction,
}

/// The inputs of `calico_kernel_programming`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelPolicy {
    /// Service ranges (`/rejectcidrs`), kept out even on nodes excluded from advertising.
    pub reject_cidrs: Vec<IpNet>,
    /// BGP addresses of WireGuard nodes, when this node runs WireGuard too.
    pub wireguard_next_hops: Vec<(IpAddr, String)>,
    /// Pool statements in confd's order (sorted by CIDR text). IPv4 pools appear only when
    /// this node's IPv4 subnet is known; IPv6 pools only where they reject (confd emits only
    /// the rejects in `bird6_ipam.cfg` and ends with a default accept).
    pub pools: Vec<KernelPoolRule>,
    /// This node's IPv4 subnet (`spec.bgp.ipv4Address`'s prefix), for CrossSubnet.
    pub local_subnet_v4: Option<Ipv4Net>,
    pub normal_route_priority_v4: u32,
    pub normal_route_priority_v6: u32,
}

impl KernelPolicy {
    /// Runs the filter on a route. `next_hop` is the BGP next hop of a learned route, `None`
    /// for a route this node originates (blackholes).
    pub fn action(&self, prefix: IpNet, next_hop: Option<IpAddr>) -> KernelAction {
        if let Some(c) = self.reject_cidrs.iter().find(|c| within(prefix, **c)) {
            return KernelAction::Skip(SkipReason::ServiceRange { cidr: *c });
        }
        if let Some(nh) = next_hop
            && let Some((_, node)) = self.wireguard_next_hops.iter().find(|(ip, _)| *ip == nh)
        {
            return KernelAction::Skip(SkipReason::WireguardPeer { node: node.clone() });
        }
        for p in &self.pools {
            if !within(prefix, p.cidr) {
                continue;
            }
            return match p.action {
                KernelPoolAction::FelixVxlan => {
                    KernelAction::Skip(SkipReason::VxlanPool { cidr: p.cidr })
                }
                KernelPoolAction::FelixOwned => {
                    KernelAction::Skip(SkipReason::FelixProgramsPool { cidr: p.cidr })
                }
                KernelPoolAction::Tunnel => KernelAction::Install { via_tunnel: true },
                KernelPoolAction::CrossSubnet => {
                    let same_subnet = match (next_hop, self.local_subnet_v4) {
                        (Some(IpAddr::V4(nh)), Some(subnet)) => subnet.contains(&nh),
                        _ => false,
                    };
                    KernelAction::Install {
                        via_tunnel: !same_subnet,
                    }
                }
                KernelPoolAction::Direct => KernelAction::Install { via_tunnel: false },
            };
        }
        // Not in any pool (a ToR's routes, say): accept.
        KernelAction::Install { via_tunnel: false }
    }

    /// The metric BIRD gives a BGP-learned route in the kernel: `2^31-1 - LOCAL_PREF`, or the
    /// normal route priority when it has none.
    pub fn metric(&self, prefix: IpNet, local_pref: Option<u32>) -> u32 {
        let normal = if prefix.addr().is_ipv6() {
            self.normal_route_priority_v6
        } else {
            self.normal_route_priority_v4
        };
        local_pref.map_or(normal, |lp| BIRD_INT_MAX.saturating_sub(lp))
    }
}

pub(crate) fn policy(v: &View<'_>, services: &ServiceRanges, pools: &[PoolRule]) -> KernelPolicy {
    let (bird_ipip, bird_no_encap) = cluster_route_policy(v.global);
    let local_subnet_v4 = v.me().and_then(|n| n.v4).map(|n| n.trunc());
    let mut rules = Vec::new();
    for p in pools {
        let v6 = p.cidr.addr().is_ipv6();
        if !v6 && local_subnet_v4.is_none() {
            continue;
        }
        let action = if p.uses_vxlan() {
            KernelPoolAction::FelixVxlan
        } else if !(if p.uses_ipip() {
            bird_ipip
        } else {
            bird_no_encap
        }) {
            KernelPoolAction::FelixOwned
        } else if v6 {
            // Accept statements are left out of the IPv6 filter.
            continue;
        } else {
            match p.ipip {
                EncapMode::Always => KernelPoolAction::Tunnel,
                EncapMode::CrossSubnet => KernelPoolAction::CrossSubnet,
                EncapMode::Never => KernelPoolAction::Direct,
            }
        };
        rules.push(KernelPoolRule {
            cidr: p.cidr,
            action,
        });
    }
    let mut wireguard_next_hops = Vec::new();
    if let Some(me) = v.me() {
        for (v6, mine) in [(false, me.wireguard_v4), (true, me.wireguard_v6)] {
            if !mine {
                continue;
            }
            for n in v.nodes.values() {
                if n.name == v.me || !(if v6 { n.wireguard_v6 } else { n.wireguard_v4 }) {
                    continue;
                }
                if let Some(ip) = n.ip(v6) {
                    wireguard_next_hops.push((ip, n.name.to_string()));
                }
            }
        }
    }
    KernelPolicy {
        reject_cidrs: services.global_routes(),
        wireguard_next_hops,
        pools: rules,
        local_subnet_v4,
        normal_route_priority_v4: normal_priority(
            v.global.and_then(|g| g.ipv4_normal_route_priority),
        ),
        normal_route_priority_v6: normal_priority(
            v.global.and_then(|g| g.ipv6_normal_route_priority),
        ),
    }
}
