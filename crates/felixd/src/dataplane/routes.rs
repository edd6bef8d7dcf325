//! The main routing table's routes felixd owns (Felix's route table manager, main table):
//! workload `/32` and `/128` routes on their `cali` interfaces, blackholes for this node's
//! blocks, and routes to other nodes' blocks over VXLAN.
//!
//! Ownership follows Felix: a route is ours if it carries our protocol (80), or if it points
//! at a workload interface. A route on a workload interface that we do not want is removed
//! only after a grace period, so that a route the CNI plugin just added for a pod felixd has
//! not heard of yet survives. Routes are replaced atomically (`RTM_NEWROUTE` with replace),
//! so a route that moves between interfaces never disappears in between.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::Handle;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};

/// Felix's protocol for routes only it owns (blackholes, tunnels).
pub const PROTO_FELIX: u8 = 80;
/// Felix's `deviceRouteProtocol` default for workload routes (RTPROT_BOOT).
pub const PROTO_DEVICE: u8 = 3;
/// How long an unknown route on a workload interface is left alone.
pub const CLEANUP_GRACE: Duration = Duration::from_secs(10);

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Straight out of an interface, scope link (a local workload).
    Device(String),
    /// Dropped: this node's own block (its addresses that are not in use).
    Blackhole,
    /// Via a gateway that is reachable on `iface` whatever its subnet (VXLAN, IPIP).
    OnLink { gateway: IpAddr, iface: String },
    /// Via a gateway on a directly connected subnet (VXLAN CrossSubnet within the subnet).
    Gateway(IpAddr),
}

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
}

/// Counts from one apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteStats {
    pub added: usize,
    pub removed: usize,
    pub waiting_for_interface: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelRoute {
    dst: IpNet,
    kind: RouteType,
    oif: Option<u32>,
    gateway: Option<IpAddr>,
    protocol: RouteProtocol,
    onlink: bool,
}

/// The routes felixd wants in the main table.
#[derive(Debug)]
pub struct RouteTable {
    workload_prefixes: Vec<String>,
    desired: HashMap<IpNet, RouteTarget>,
    dirty: bool,
    first_seen_unknown: HashMap<IpNet, Instant>,
    handle: Option<Handle>,
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RouteError {
    let what = what.into();
    move |source| RouteError::Netlink { what, source }
}

fn parse_route(r: &RouteMessage) -> Option<KernelRoute> {
    // Only the main table (RT_TABLE_MAIN).
    if calico_kernel_routes::table(r) != 254 {
        return None;
    }
    let dst = calico_kernel_routes::destination(r)?;
    let oif = calico_kernel_routes::output_interface(r);
    let gateway = calico_kernel_routes::gateway(r);
    Some(KernelRoute {
        dst,
        kind: r.header.kind,
        oif,
        gateway,
        protocol: r.header.protocol,
        onlink: r.header.flags.contains(RouteFlags::Onlink),
    })
}

impl RouteTable {
    pub fn new(workload_prefixes: Vec<String>) -> RouteTable {
        RouteTable {
            workload_prefixes,
            desired: HashMap::new(),
            dirty: true,
            first_seen_unknown: HashMap::new(),
            handle: None,
        }
    }

    /// Sets the route for `dst` (one route per destination).
    pub fn set(&mut self, dst: IpNet, target: RouteTarget) {
        if self.desired.get(&dst) != Some(&target) {
            self.desired.insert(dst, target);
            self.dirty = true;
        }
    }

    pub fn remove(&mut self, dst: &IpNet) {
        if self.desired.remove(dst).is_some() {
            self.dirty = true;
        }
    }

    pub fn desired(&self) -> &HashMap<IpNet, RouteTarget> {
        &self.desired
    }

    /// Compare with the kernel on the next apply even if nothing changed here.
    pub fn invalidate(&mut self) {
        self.dirty = true;
    }

    pub fn needs_apply(&self) -> bool {
        self.dirty || !self.first_seen_unknown.is_empty()
    }

    fn is_workload_iface(&self, name: &str) -> bool {
        self.workload_prefixes
            .iter()
            .any(|p| name.starts_with(p.as_str()))
    }

    /// The netlink connection (opened on first use), shared with the VXLAN manager.
    pub async fn handle(&mut self) -> Result<Handle, RouteError> {
        if let Some(h) = &self.handle {
            return Ok(h.clone());
        }
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        tokio::spawn(conn);
        self.handle = Some(handle.clone());
        Ok(handle)
    }

    /// Brings the main table in line with what is wanted.
    pub async fn apply(&mut self) -> Result<RouteStats, RouteError> {
        let h = self.handle().await?;
        let result = self.sync(&h).await;
        match &result {
            // A broken socket is reopened next time.
            Err(_) => self.handle = None,
            // Routes whose interface has not appeared yet are tried again on the next pass.
            Ok(st) => self.dirty = st.waiting_for_interface > 0,
        }
        result
    }

    async fn sync(&mut self, h: &Handle) -> Result<RouteStats, RouteError> {
        let mut stats = RouteStats::default();
        let mut index_of: HashMap<String, u32> = HashMap::new();
        let mut name_of: HashMap<u32, String> = HashMap::new();
        let mut links = h.link().get().execute();
        while let Some(l) = links.try_next().await.map_err(nl("listing interfaces"))? {
            if let Some(name) = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }) {
                index_of.insert(name.clone(), l.header.index);
                name_of.insert(l.header.index, name);
            }
        }
        let mut kernel: HashMap<IpNet, Vec<KernelRoute>> = HashMap::new();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut s = h.route().get(query).execute();
            while let Some(r) = s.try_next().await.map_err(nl("listing routes"))? {
                if let Some(kr) = parse_route(&r) {
                    kernel.entry(kr.dst).or_default().push(kr);
                }
            }
        }

        // Add or fix what is wanted.
        for (dst, target) in &self.desired {
            let want = match target {
                RouteTarget::Device(iface) | RouteTarget::OnLink { iface, .. } => {
                    match index_of.get(iface) {
                        Some(i) => Some(*i),
                        None => {
                            stats.waiting_for_interface += 1;
                            continue;
                        }
                    }
                }
                RouteTarget::Blackhole | RouteTarget::Gateway(_) => None,
            };
            let present = kernel.get(dst).is_some_and(|rs| {
                rs.iter().any(|r| match target {
                    RouteTarget::Device(_) => {
                        r.kind == RouteType::Unicast && r.oif == want && r.gateway.is_none()
                    }
                    RouteTarget::Blackhole => r.kind == RouteType::BlackHole,
                    RouteTarget::OnLink { gateway, .. } => {
                        r.kind == RouteType::Unicast
                            && r.oif == want
                            && r.gateway == Some(*gateway)
                            && r.onlink
                    }
                    RouteTarget::Gateway(gateway) => {
                        r.kind == RouteType::Unicast && r.gateway == Some(*gateway)
                    }
                })
            });
            if present {
                continue;
            }
            let msg = build(*dst, target, want);
            h.route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("setting the route to {dst}")))?;
            stats.added += 1;
        }

        // Remove what is ours and not wanted.
        let now = Instant::now();
        let mut still_unknown = HashSet::new();
        for (dst, routes) in &kernel {
            for r in routes {
                if self.wanted_matches(r, &index_of) || r.protocol == RouteProtocol::Kernel {
                    // Routes the kernel made for addresses (link-local ones on every veth)
                    // belong to the kernel.
                    continue;
                }
                let on_workload = r
                    .oif
                    .and_then(|i| name_of.get(&i))
                    .is_some_and(|n| self.is_workload_iface(n));
                let exclusive = r.protocol == RouteProtocol::Other(PROTO_FELIX);
                if !on_workload && !exclusive {
                    continue;
                }
                if on_workload && !exclusive {
                    // Give the CNI plugin's fresh routes time to be announced.
                    let first = *self.first_seen_unknown.entry(*dst).or_insert(now);
                    if now.duration_since(first) < CLEANUP_GRACE {
                        still_unknown.insert(*dst);
                        continue;
                    }
                }
                let mut msg = build(*dst, &RouteTarget::Blackhole, None);
                msg.header.kind = r.kind;
                msg.header.protocol = r.protocol;
                msg.header.scope = RouteScope::Universe;
                msg.attributes
                    .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
                if let Some(i) = r.oif {
                    msg.attributes.push(RouteAttribute::Oif(i));
                }
                match h.route().del(msg).execute().await {
                    Ok(()) => stats.removed += 1,
                    // Gone already (the interface went away with it).
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == 3 => {}
                    Err(e) => return Err(nl(format!("removing the route to {dst}"))(e)),
                }
            }
        }
        self.first_seen_unknown
            .retain(|d, _| still_unknown.contains(d));
        Ok(stats)
    }

    fn wanted_matches(&self, r: &KernelRoute, index_of: &HashMap<String, u32>) -> bool {
        match self.desired.get(&r.dst) {
            Some(RouteTarget::Device(i)) => {
                r.kind == RouteType::Unicast
                    && r.oif == index_of.get(i).copied()
                    && r.gateway.is_none()
            }
            Some(RouteTarget::Blackhole) => r.kind == RouteType::BlackHole,
            Some(RouteTarget::OnLink { gateway, iface }) => {
                r.kind == RouteType::Unicast
                    && r.oif == index_of.get(iface).copied()
                    && r.gateway == Some(*gateway)
            }
            Some(RouteTarget::Gateway(gateway)) => {
                r.kind == RouteType::Unicast && r.gateway == Some(*gateway)
            }
            None => false,
        }
    }
}

fn build(dst: IpNet, target: &RouteTarget, oif: Option<u32>) -> RouteMessage {
    let mut msg = match dst {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.addr(), n.prefix_len())
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.addr(), n.prefix_len())
            .build(),
    };
    match target {
        RouteTarget::Device(_) => {
            msg.header.scope = RouteScope::Link;
            msg.header.protocol = RouteProtocol::Other(PROTO_DEVICE);
            msg.header.kind = RouteType::Unicast;
            if let Some(i) = oif {
                msg.attributes.push(RouteAttribute::Oif(i));
            }
        }
        RouteTarget::Blackhole => {
            msg.header.scope = RouteScope::Universe;
            msg.header.protocol = RouteProtocol::Other(PROTO_FELIX);
            msg.header.kind = RouteType::BlackHole;
        }
        RouteTarget::Gateway(gateway) => {
            msg.header.scope = RouteScope::Universe;
            msg.header.protocol = RouteProtocol::Other(PROTO_FELIX);
            msg.header.kind = RouteType::Unicast;
            msg.attributes.push(RouteAttribute::Gateway(match gateway {
                IpAddr::V4(a) => RouteAddress::Inet(*a),
                IpAddr::V6(a) => RouteAddress::Inet6(*a),
            }));
        }
        RouteTarget::OnLink { gateway, .. } => {
            msg.header.scope = RouteScope::Universe;
            msg.header.protocol = RouteProtocol::Other(PROTO_FELIX);
            msg.header.kind = RouteType::Unicast;
            msg.header.flags |= RouteFlags::Onlink;
            msg.attributes.push(RouteAttribute::Gateway(match gateway {
                IpAddr::V4(a) => RouteAddress::Inet(*a),
                IpAddr::V6(a) => RouteAddress::Inet6(*a),
            }));
            if let Some(i) = oif {
                msg.attributes.push(RouteAttribute::Oif(i));
            }
        }
    }
    msg
}
