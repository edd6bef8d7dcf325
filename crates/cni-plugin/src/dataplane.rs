//! Wiring a pod into the node, as Calico's Linux dataplane does (`reference/calico-control-
//! plane.md` §5.5): a veth pair with the host end `cali…` (MAC ee:ee:ee:ee:ee:ee, proxy ARP,
//! proxy NDP) and the pod end holding /32 and /128 addresses, a link route to 169.254.1.1 and
//! default routes through the host; a /32 (/128) route to the pod on the host.
//!
//! The pod end is created directly inside the pod's namespace (as the veth's peer), so no
//! state ever exists where both ends sit on the host. Everything in the pod's namespace runs
//! on a thread that joined it ([`crate::netns`]); everything else runs where the plugin was
//! started, the node's namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::{self, NetnsError};

/// The host end's MAC: every pod sees the same gateway MAC, and the host's IPv6 link-local
/// address follows from it.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The IPv4 next hop pods route through; it exists nowhere, the host answers ARP for it.
pub const POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The host end's IPv6 link-local address (EUI-64 of ee:ee:ee:ee:ee:ee).
pub const HOST_LINK_LOCAL_V6: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what}: {reason}")]
    Netlink { what: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "a route to {ip} already points at {other}, not at {ours}: another endpoint holds this address; release it or fix the conflicting route"
    )]
    RouteConflict {
        ip: IpNet,
        ours: String,
        other: String,
    },
    #[error("{0}")]
    Check(String),
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> DataplaneError {
    let what = what.into();
    move |e| DataplaneError::Netlink {
        what,
        reason: describe(&e),
    }
}

fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Io { what, source }
}

/// A netlink connection in the calling thread's namespace.
fn connect() -> Result<Handle, DataplaneError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(io("opening a netlink socket"))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// A link's index, or `None` if there is no link of that name.
pub async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, DataplaneError> {
    Ok(link_by_name(h, name).await?.map(|l| l.header.index))
}

async fn link_by_index(h: &Handle, idx: u32) -> Result<Option<LinkMessage>, DataplaneError> {
    match h.link().get().match_index(idx).execute().try_next().await {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("reading link {idx}"))(e)),
    }
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, DataplaneError> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("looking up link {name}"))(e)),
    }
}

fn mac_of(l: &LinkMessage) -> Option<Vec<u8>> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m.clone()),
        _ => None,
    })
}

pub fn format_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What a pod's interface gets.
#[derive(Debug, Clone)]
pub struct PodWiring {
    pub ifname: String,
    pub host_ifname: String,
    /// 0 leaves the kernel's default.
    pub mtu: u32,
    pub num_queues: u32,
    /// The pod's addresses (given any prefix; programmed as /32 or /128).
    pub ips: Vec<IpNet>,
    /// Destinations routed through the host (default: 0.0.0.0/0 and ::/0).
    pub routes: Vec<IpNet>,
    pub allow_ip_forwarding: bool,
}

impl PodWiring {
    fn host_addrs(&self) -> Vec<IpNet> {
        self.ips.iter().map(|n| IpNet::from(n.addr())).collect()
    }

    fn has_v4(&self) -> bool {
        self.ips.iter().any(|n| n.addr().is_ipv4())
    }

    fn has_v6(&self) -> bool {
        self.ips.iter().any(|n| n.addr().is_ipv6())
    }
}

/// Wires a pod. Returns the pod interface's MAC. On failure, whatever was created is removed.
pub async fn wire(netns_path: &Path, w: &PodWiring) -> Result<String, DataplaneError> {
    let host = connect()?;
    // A host link of our name is left over from an earlier sandbox of this pod, or from an
    // interrupted ADD of this one (its pod end goes with it).
    remove_host_link(&host, &w.host_ifname).await?;
    let ns = std::fs::File::open(netns_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NetnsError::Missing(netns_path.to_path_buf()).into(),
        _ => io(format!("opening {}", netns_path.display()))(e),
    })?;
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(w.ifname.clone())
        .setns_by_fd(ns.as_raw_fd());
    let mut veth =
        LinkMessageBuilder::<LinkVeth>::new(&w.host_ifname, &w.ifname).address(HOST_MAC.to_vec());
    if w.mtu != 0 {
        peer = peer.mtu(w.mtu);
        veth = veth.mtu(w.mtu);
    }
    if w.num_queues > 1 {
        for q in [
            LinkAttribute::NumTxQueues(w.num_queues),
            LinkAttribute::NumRxQueues(w.num_queues),
        ] {
            peer = peer.append_extra_attribute(q.clone());
            veth = veth.append_extra_attribute(q);
        }
    }
    let veth = veth
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build();
    host.link().add(veth).execute().await.map_err(|e| {
        if errno(&e) == Some(EEXIST) {
            DataplaneError::Netlink {
                what: format!("creating the veth {} / {}", w.host_ifname, w.ifname),
                reason: format!(
                    "an interface named {} already exists in the pod (or {} appeared on the host meanwhile); run DEL for the container first",
                    w.ifname, w.host_ifname
                ),
            }
        } else {
            nl(format!("creating veth {} / {}", w.host_ifname, w.ifname))(e)
        }
    })?;
    crate::failpoint::hit("veth");
    match finish_wiring(&host, netns_path, w).await {
        Ok(mac) => Ok(mac),
        Err(e) => {
            // Remove our pair by its pod end: the host name may already belong to a newer
            // sandbox of the pod.
            let _ = unwire(Some(netns_path), &w.ifname).await;
            Err(e)
        }
    }
}

async fn finish_wiring(
    host: &Handle,
    netns_path: &Path,
    w: &PodWiring,
) -> Result<String, DataplaneError> {
    let idx = link_index(host, &w.host_ifname).await?.ok_or_else(|| {
        DataplaneError::Check(format!("{} vanished after creation", w.host_ifname))
    })?;
    ensure_host_mac(host, idx, &w.host_ifname).await?;
    configure_host_sysctls(w)?;
    host.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("bringing {} up", w.host_ifname)))?;
    let pod = w.clone();
    let mac = netns::run_in(netns_path, move || async move { wire_pod_side(&pod).await }).await??;
    if w.has_v6() {
        // Only now has the host end a carrier, and with it a link-local address: the pods'
        // IPv6 next hop.
        wait_for_link_local(host, idx, &w.host_ifname).await?;
    }
    crate::failpoint::hit("pod");
    for ip in w.host_addrs() {
        add_host_route(host, idx, &w.host_ifname, ip).await?;
    }
    crate::failpoint::hit("host-route");
    Ok(mac)
}

/// Some systems rewrite a new interface's MAC (udev's MACAddressPolicy); set it until it holds.
async fn ensure_host_mac(h: &Handle, idx: u32, name: &str) -> Result<(), DataplaneError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let l = link_by_index(h, idx).await?;
        if l.as_ref().and_then(mac_of).as_deref() == Some(&HOST_MAC[..]) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(DataplaneError::Check(format!(
                "{name} keeps another MAC than ee:ee:ee:ee:ee:ee (is udev rewriting it? set MACAddressPolicy=none for cali* links)"
            )));
        }
        h.link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .address(HOST_MAC.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("setting the MAC of {name}")))?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn configure_host_sysctls(w: &PodWiring) -> Result<(), DataplaneError> {
    let name = w.host_ifname.as_str();
    let set = |parts: &[&str], v: &str| netns::write_sysctl(parts, v).map_err(io("host sysctl"));
    // Best effort, as Calico: some kernels lack these.
    let try_set = |parts: &[&str], v: &str| {
        if let Err(e) = netns::write_sysctl(parts, v) {
            tracing::warn!(error = %e, "could not set a host sysctl");
        }
    };
    if w.has_v4() {
        set(&["net", "ipv4", "conf", name, "route_localnet"], "1")?;
        try_set(&["net", "ipv4", "neigh", name, "proxy_delay"], "0");
        set(&["net", "ipv4", "conf", name, "proxy_arp"], "1")?;
        set(&["net", "ipv4", "conf", name, "forwarding"], "1")?;
    }
    if w.has_v6() {
        // EUI-64 link-local addresses, so the pods' next hop is always the same address.
        set(&["net", "ipv6", "conf", name, "addr_gen_mode"], "0")?;
        set(&["net", "ipv6", "conf", name, "accept_dad"], "0")?;
        set(&["net", "ipv6", "conf", name, "disable_ipv6"], "0")?;
        set(&["net", "ipv6", "conf", name, "proxy_ndp"], "1")?;
        set(&["net", "ipv6", "conf", name, "forwarding"], "1")?;
    }
    try_set(&["net", "ipv6", "conf", name, "accept_ra"], "0");
    Ok(())
}

async fn addresses(h: &Handle, idx: u32) -> Result<Vec<IpAddr>, DataplaneError> {
    let mut out = Vec::new();
    let mut s = h.address().get().set_link_index_filter(idx).execute();
    while let Some(a) = s.try_next().await.map_err(nl("listing addresses"))? {
        for attr in a.attributes {
            if let AddressAttribute::Address(ip) = attr {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// Waits for the host end's link-local address (the pods' IPv6 next hop); toggles the link
/// once if the kernel gave it another one.
async fn wait_for_link_local(h: &Handle, idx: u32, name: &str) -> Result<(), DataplaneError> {
    for attempt in 0..20 {
        if addresses(h, idx)
            .await?
            .contains(&IpAddr::V6(HOST_LINK_LOCAL_V6))
        {
            return Ok(());
        }
        if attempt == 10 {
            for up in [false, true] {
                let msg = LinkUnspec::new_with_index(idx);
                let msg = if up { msg.up() } else { msg.down() };
                h.link()
                    .set(msg.build())
                    .execute()
                    .await
                    .map_err(nl(format!("toggling {name}")))?;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = addresses(h, idx).await.unwrap_or_default();
    Err(DataplaneError::Check(format!(
        "{name} did not get the link-local address {HOST_LINK_LOCAL_V6} (it has {seen:?}; is IPv6 disabled on the node?)"
    )))
}

async fn wire_pod_side(w: &PodWiring) -> Result<String, DataplaneError> {
    let h = connect()?;
    let ifname = w.ifname.as_str();
    let idx = link_index(&h, ifname)
        .await?
        .ok_or_else(|| DataplaneError::Check(format!("{ifname} did not appear in the pod")))?;
    let set = |parts: &[&str], v: &str| netns::write_sysctl(parts, v).map_err(io("pod sysctl"));
    let forwarding = if w.allow_ip_forwarding { "1" } else { "0" };
    if w.has_v6() {
        for dev in ["all", "default", "lo", ifname] {
            set(&["net", "ipv6", "conf", dev, "disable_ipv6"], "0")?;
        }
        set(&["net", "ipv6", "conf", ifname, "accept_dad"], "0")?;
        set(&["net", "ipv6", "conf", "all", "forwarding"], forwarding)?;
    }
    if w.has_v4() {
        set(&["net", "ipv4", "ip_forward"], forwarding)?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("bringing {ifname} up")))?;
    for ip in w.host_addrs() {
        h.address()
            .add(idx, ip.addr(), ip.prefix_len())
            .execute()
            .await
            .map_err(nl(format!("adding {ip} to {ifname}")))?;
    }
    if w.has_v4() {
        h.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(POD_GATEWAY_V4, 32)
                    .output_interface(idx)
                    .scope(RouteScope::Link)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("adding the route to 169.254.1.1"))?;
    }
    for dst in &w.routes {
        let msg = match dst {
            IpNet::V4(d) if w.has_v4() => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d.network(), d.prefix_len())
                .gateway(POD_GATEWAY_V4)
                .output_interface(idx)
                .build(),
            IpNet::V6(d) if w.has_v6() => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d.network(), d.prefix_len())
                .gateway(HOST_LINK_LOCAL_V6)
                .output_interface(idx)
                .build(),
            _ => continue,
        };
        h.route()
            .add(msg)
            .execute()
            .await
            .map_err(nl(format!("adding the route to {dst}")))?;
    }
    let l = link_by_name(&h, ifname)
        .await?
        .ok_or_else(|| DataplaneError::Check(format!("{ifname} vanished")))?;
    Ok(mac_of(&l).map(|m| format_mac(&m)).unwrap_or_default())
}

fn route_dst(r: &RouteMessage) -> Option<IpNet> {
    use rtnetlink::packet_route::AddressFamily;
    let len = r.header.destination_prefix_length;
    let explicit = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => IpNet::new(IpAddr::V4(*a), len).ok(),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => IpNet::new(IpAddr::V6(*a), len).ok(),
        _ => None,
    });
    // A default route carries no destination attribute.
    explicit.or(match (len, r.header.address_family) {
        (0, AddressFamily::Inet) => Some(IpNet::V4(Default::default())),
        (0, AddressFamily::Inet6) => Some(IpNet::V6(Default::default())),
        _ => None,
    })
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// The main-table routes to exactly `dst`.
async fn routes_to(h: &Handle, dst: IpNet) -> Result<Vec<RouteMessage>, DataplaneError> {
    let query = match dst {
        IpNet::V4(_) => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        IpNet::V6(_) => RouteMessageBuilder::<Ipv6Addr>::new().build(),
    };
    let mut out = Vec::new();
    let mut s = h.route().get(query).execute();
    while let Some(r) = s.try_next().await.map_err(nl("listing routes"))? {
        if route_dst(&r) == Some(dst) {
            out.push(r);
        }
    }
    Ok(out)
}

async fn add_host_route(
    h: &Handle,
    idx: u32,
    ifname: &str,
    ip: IpNet,
) -> Result<(), DataplaneError> {
    let msg = match ip {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.addr(), 32)
            .output_interface(idx)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.addr(), 128)
            .output_interface(idx)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build(),
    };
    match h.route().add(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => {
            // Fine if it already points at our interface (felixd may have added it).
            for r in routes_to(h, ip).await? {
                match route_oif(&r) {
                    Some(o) if o == idx => return Ok(()),
                    Some(o) => {
                        let other = link_name(h, o)
                            .await
                            .unwrap_or_else(|| format!("ifindex {o}"));
                        return Err(DataplaneError::RouteConflict {
                            ip,
                            ours: ifname.to_string(),
                            other,
                        });
                    }
                    None => {}
                }
            }
            Err(nl(format!("adding the host route to {ip}"))(e))
        }
        Err(e) => Err(nl(format!("adding the host route to {ip}"))(e)),
    }
}

async fn link_name(h: &Handle, idx: u32) -> Option<String> {
    let l = link_by_index(h, idx).await.ok()??;
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Removes a host link by name (a missing one is fine). Returns whether one was removed.
async fn remove_host_link(h: &Handle, name: &str) -> Result<bool, DataplaneError> {
    let Some(idx) = link_index(h, name).await? else {
        return Ok(false);
    };
    tracing::info!(link = %name, "removing a stale host interface");
    match h.link().del(idx).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
        Err(e) => Err(nl(format!("removing {name}"))(e)),
    }
}

/// Removes the host end of a pod's veth by name, when the pod's namespace is out of reach
/// (its path gone while something still holds it). Returns whether one was removed.
pub async fn unwire_host(host_ifname: &str) -> Result<bool, DataplaneError> {
    remove_host_link(&connect()?, host_ifname).await
}

/// Removes the pod's interface (and with it the veth pair and the host routes). A missing
/// namespace or interface is not an error. Returns whether anything was removed.
pub async fn unwire(netns_path: Option<&Path>, ifname: &str) -> Result<bool, DataplaneError> {
    let Some(path) = netns_path else {
        return Ok(false);
    };
    let ifname = ifname.to_string();
    let result = netns::run_in(path, move || async move {
        let h = connect()?;
        match link_index(&h, &ifname).await? {
            None => Ok(false),
            Some(idx) => match h.link().del(idx).execute().await {
                Ok(()) => Ok(true),
                Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
                Err(e) => Err(nl(format!("removing {ifname}"))(e)),
            },
        }
    })
    .await;
    match result {
        Ok(r) => r,
        Err(NetnsError::Missing(_) | NetnsError::NotANamespace(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What CHECK compares against: the interface and addresses a previous ADD reported.
#[derive(Debug, Clone)]
pub struct Expected {
    pub ifname: String,
    pub host_ifname: String,
    pub ips: Vec<IpNet>,
    pub mac: Option<String>,
}

/// Checks that a pod is still wired as ADD left it.
pub async fn check(netns_path: &Path, want: &Expected) -> Result<(), DataplaneError> {
    let host = connect()?;
    let idx = link_index(&host, &want.host_ifname).await?.ok_or_else(|| {
        DataplaneError::Check(format!(
            "the host interface {} is missing",
            want.host_ifname
        ))
    })?;
    for ip in &want.ips {
        let dst = IpNet::from(ip.addr());
        let routes = routes_to(&host, dst).await?;
        if !routes.iter().any(|r| route_oif(r) == Some(idx)) {
            return Err(DataplaneError::Check(format!(
                "the host has no route to {dst} through {}",
                want.host_ifname
            )));
        }
    }
    let w = want.clone();
    netns::run_in(netns_path, move || async move {
        let h = connect()?;
        let l = link_by_name(&h, &w.ifname).await?.ok_or_else(|| {
            DataplaneError::Check(format!("the pod has no interface {}", w.ifname))
        })?;
        if let Some(mac) = &w.mac {
            let have = mac_of(&l).map(|m| format_mac(&m)).unwrap_or_default();
            if !have.eq_ignore_ascii_case(mac) {
                return Err(DataplaneError::Check(format!(
                    "{} has MAC {have}, not {mac}",
                    w.ifname
                )));
            }
        }
        let have = addresses(&h, l.header.index).await?;
        for ip in &w.ips {
            if !have.contains(&ip.addr()) {
                return Err(DataplaneError::Check(format!(
                    "{} lacks the address {}",
                    w.ifname,
                    ip.addr()
                )));
            }
        }
        // The default route of each family the pod has, through its interface.
        let idx = l.header.index;
        for family_default in [IpNet::V4(Default::default()), IpNet::V6(Default::default())] {
            let wanted = w
                .ips
                .iter()
                .any(|ip| ip.addr().is_ipv4() == family_default.addr().is_ipv4());
            if wanted
                && !routes_to(&h, family_default)
                    .await?
                    .iter()
                    .any(|r| route_oif(r) == Some(idx))
            {
                return Err(DataplaneError::Check(format!(
                    "the pod has no default route {family_default} through {}",
                    w.ifname
                )));
            }
        }
        Ok(())
    })
    .await?
}
