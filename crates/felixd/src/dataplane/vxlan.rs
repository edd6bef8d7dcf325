//! The VXLAN tunnel endpoint (Felix's VXLAN manager, IPv4): the `vxlan.calico` device with
//! Calico's VNI, port and MAC, the node's tunnel address on it, and for every other node a
//! permanent ARP entry (its tunnel address → its VTEP MAC) and a forwarding entry (its VTEP
//! MAC → its node address). Routes to other nodes' blocks go via their tunnel addresses,
//! on-link through this device (set by the caller in the route table).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use super::routes::RouteError;

/// Calico's device name.
pub const VXLAN_IFACE: &str = "vxlan.calico";

/// A tunnel endpoint: a node's tunnel address and MAC, and the address packets to it go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vtep {
    pub node: String,
    pub tunnel_ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub node_ip: Ipv4Addr,
}

/// The device's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSettings {
    pub vni: u32,
    pub port: u16,
    pub mtu: u32,
}

/// Counts from one apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VxlanStats {
    pub device_changed: bool,
    pub neighbours_changed: usize,
    pub fdb_changed: usize,
}

/// What is wanted.
#[derive(Debug, Default)]
pub struct Vxlan {
    local: Option<(DeviceSettings, Vtep)>,
    remotes: BTreeMap<Ipv4Addr, Vtep>,
    dirty: bool,
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RouteError {
    let what = what.into();
    move |source| RouteError::Netlink { what, source }
}

pub(super) fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if matches!(m.raw_code().abs(), 2 | 3 | 19))
}

/// The VNI, port and local address of an existing VXLAN device.
fn vxlan_params(l: &LinkMessage) -> (Option<u32>, Option<u16>, Option<Ipv4Addr>) {
    let mut out = (None, None, None);
    for a in &l.attributes {
        let LinkAttribute::LinkInfo(infos) = a else {
            continue;
        };
        for i in infos {
            let LinkInfo::Data(InfoData::Vxlan(v)) = i else {
                continue;
            };
            for x in v {
                match x {
                    InfoVxlan::Id(id) => out.0 = Some(*id),
                    InfoVxlan::Port(p) => out.1 = Some(*p),
                    InfoVxlan::Local(ip) => out.2 = Some(*ip),
                    _ => {}
                }
            }
        }
    }
    out
}

impl Vxlan {
    pub fn set_local(&mut self, local: Option<(DeviceSettings, Vtep)>) {
        if self.local != local {
            self.local = local;
            self.dirty = true;
        }
    }

    pub fn set_remotes(&mut self, remotes: impl IntoIterator<Item = Vtep>) {
        let r: BTreeMap<Ipv4Addr, Vtep> = remotes.into_iter().map(|v| (v.tunnel_ip, v)).collect();
        if self.remotes != r {
            self.remotes = r;
            self.dirty = true;
        }
    }

    /// The device MTU, known only once the host's is read.
    pub fn set_mtu(&mut self, mtu: u32) {
        if let Some((s, _)) = &mut self.local
            && s.mtu != mtu
        {
            s.mtu = mtu;
            self.dirty = true;
        }
    }

    pub fn is_wanted(&self) -> bool {
        self.local.is_some()
    }

    pub fn needs_apply(&self) -> bool {
        self.dirty
    }

    pub fn invalidate(&mut self) {
        self.dirty = true;
    }

    /// Brings the device, its address, ARP and forwarding entries in line.
    pub async fn apply(&mut self, h: &Handle) -> Result<VxlanStats, RouteError> {
        let mut stats = VxlanStats::default();
        let mut existing = self.existing(h).await?;
        let Some((dev, me)) = self.local.clone() else {
            if let Some(l) = existing {
                h.link()
                    .del(l.header.index)
                    .execute()
                    .await
                    .map_err(nl("removing vxlan.calico"))?;
                stats.device_changed = true;
            }
            self.dirty = false;
            return Ok(stats);
        };
        // The device must sit on the interface holding the node's address.
        let parent = self.parent_index(h, me.node_ip).await?;
        if let Some(l) = &existing {
            let (vni, port, local) = vxlan_params(l);
            if vni != Some(dev.vni) || port != Some(dev.port) || local != Some(me.node_ip) {
                tracing::info!(
                    ?vni,
                    ?port,
                    ?local,
                    "vxlan.calico has other settings; recreating it"
                );
                h.link()
                    .del(l.header.index)
                    .execute()
                    .await
                    .map_err(nl("removing vxlan.calico"))?;
                existing = None;
            }
        }
        let index = match existing {
            Some(l) => {
                let msg = LinkUnspec::new_with_index(l.header.index)
                    .mtu(dev.mtu)
                    .address(me.mac.to_vec())
                    .up()
                    .build();
                h.link()
                    .set(msg)
                    .execute()
                    .await
                    .map_err(nl("setting vxlan.calico's MAC, MTU and state"))?;
                l.header.index
            }
            None => {
                let mut b = LinkVxlan::new(VXLAN_IFACE, dev.vni)
                    .port(dev.port)
                    .local(me.node_ip)
                    .learning(false);
                if let Some(p) = parent {
                    b = b.dev(p);
                }
                let msg = b.mtu(dev.mtu).address(me.mac.to_vec()).up().build();
                h.link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(nl("creating vxlan.calico"))?;
                stats.device_changed = true;
                self.index_of(h).await?.ok_or_else(|| RouteError::Netlink {
                    what: "vxlan.calico vanished right after it was created".into(),
                    source: rtnetlink::Error::RequestFailed,
                })?
            }
        };
        sync_tunnel_address(h, index, me.tunnel_ip, VXLAN_IFACE).await?;
        stats.neighbours_changed = self.sync_arp(h, index).await?;
        stats.fdb_changed = self.sync_fdb(h, index).await?;
        self.dirty = false;
        Ok(stats)
    }

    async fn existing(&self, h: &Handle) -> Result<Option<LinkMessage>, RouteError> {
        let mut links = h.link().get().match_name(VXLAN_IFACE.to_string()).execute();
        match links.try_next().await {
            Ok(l) => Ok(l),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(nl("looking up vxlan.calico")(e)),
        }
    }

    async fn index_of(&self, h: &Handle) -> Result<Option<u32>, RouteError> {
        Ok(self.existing(h).await?.map(|l| l.header.index))
    }

    async fn parent_index(&self, h: &Handle, ip: Ipv4Addr) -> Result<Option<u32>, RouteError> {
        let mut addrs = h.address().get().execute();
        while let Some(a) = addrs.try_next().await.map_err(nl("listing addresses"))? {
            let holds = a.attributes.iter().any(|x| {
                matches!(x, AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) if *v == ip)
            });
            if holds {
                return Ok(Some(a.header.index));
            }
        }
        Ok(None)
    }

    async fn neighbours(
        &self,
        h: &Handle,
        family: AddressFamily,
        index: u32,
    ) -> Result<Vec<NeighbourMessage>, RouteError> {
        let mut req = h.neighbours().get();
        req = req.set_address_family(family);
        let mut s = req.execute();
        let mut out = Vec::new();
        while let Some(n) = s.try_next().await.map_err(nl("listing neighbours"))? {
            if n.header.ifindex == index {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// tunnel address → VTEP MAC, permanent.
    async fn sync_arp(&self, h: &Handle, index: u32) -> Result<usize, RouteError> {
        let mut changed = 0;
        let have = self.neighbours(h, AddressFamily::Inet, index).await?;
        let mut seen: BTreeMap<Ipv4Addr, Vec<u8>> = BTreeMap::new();
        for n in &have {
            let ip = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(*v),
                _ => None,
            });
            let mac = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(m) => Some(m.clone()),
                _ => None,
            });
            let (Some(ip), Some(mac)) = (ip, mac) else {
                continue;
            };
            let wanted = self.remotes.get(&ip).is_some_and(|v| v.mac.to_vec() == mac)
                && n.header.state == NeighbourState::Permanent;
            if wanted {
                seen.insert(ip, mac);
            } else if !self.remotes.contains_key(&ip) {
                match h.neighbours().del(n.clone()).execute().await {
                    Ok(()) => changed += 1,
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(nl(format!("removing the ARP entry for {ip}"))(e)),
                }
            }
        }
        for (ip, v) in &self.remotes {
            if seen.contains_key(ip) {
                continue;
            }
            h.neighbours()
                .add(index, IpAddr::V4(*ip))
                .link_layer_address(&v.mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("adding the ARP entry for {} ({ip})", v.node)))?;
            changed += 1;
        }
        Ok(changed)
    }

    /// VTEP MAC → node address (`bridge fdb append … dst … self permanent`).
    async fn sync_fdb(&self, h: &Handle, index: u32) -> Result<usize, RouteError> {
        let mut changed = 0;
        let have = self.neighbours(h, AddressFamily::Bridge, index).await?;
        let want: BTreeMap<Vec<u8>, Ipv4Addr> = self
            .remotes
            .values()
            .map(|v| (v.mac.to_vec(), v.node_ip))
            .collect();
        let mut seen: BTreeMap<Vec<u8>, Ipv4Addr> = BTreeMap::new();
        for n in &have {
            let mac = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(m) => Some(m.clone()),
                _ => None,
            });
            let dst = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(*v),
                _ => None,
            });
            let Some(mac) = mac else { continue };
            match (want.get(&mac), dst) {
                (Some(w), Some(d)) if *w == d => {
                    seen.insert(mac, d);
                }
                _ => {
                    if n.header.state == NeighbourState::Permanent {
                        match h.neighbours().del(n.clone()).execute().await {
                            Ok(()) => changed += 1,
                            Err(e) if is_not_found(&e) => {}
                            Err(e) => return Err(nl("removing a stale VXLAN forwarding entry")(e)),
                        }
                    }
                }
            }
        }
        for (mac, ip) in &want {
            if seen.contains_key(mac) {
                continue;
            }
            let mut req = h
                .neighbours()
                .add_bridge(index, mac)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace();
            req.message_mut()
                .attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(*ip)));
            req.execute()
                .await
                .map_err(nl(format!("adding the VXLAN forwarding entry to {ip}")))?;
            changed += 1;
        }
        Ok(changed)
    }
}

/// Makes `ip`/32 the only IPv4 address of tunnel device `index` (`vxlan.calico`, `tunl0`):
/// the node's tunnel address, which Felix gives the device.
pub(super) async fn sync_tunnel_address(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    name: &str,
) -> Result<(), RouteError> {
    let mut have_it = false;
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    let mut stale = Vec::new();
    while let Some(a) = addrs
        .try_next()
        .await
        .map_err(nl(format!("listing {name}'s addresses")))?
    {
        let v4 = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
            _ => None,
        });
        match v4 {
            Some(v) if v == ip && a.header.prefix_len == 32 => have_it = true,
            Some(_) => stale.push(a),
            None => {}
        }
    }
    for a in stale {
        h.address()
            .del(a)
            .execute()
            .await
            .map_err(nl(format!("removing a stale {name} address")))?;
    }
    if !have_it {
        h.address()
            .add(index, IpAddr::V4(ip), 32)
            .execute()
            .await
            .map_err(nl(format!("adding {ip}/32 to {name}")))?;
    }
    Ok(())
}
