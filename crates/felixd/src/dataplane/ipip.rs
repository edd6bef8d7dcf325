//! IPIP: the `tunl0` device Felix prepares for IPIP pools (up, MTU = underlay − 20, the
//! node's `ipv4IPIPTunnelAddr` as its only address); the routes through it are birdd's
//! (`via <node> dev tunl0 onlink`), as they are BIRD's under Calico.
//!
//! `tunl0` exists once the kernel's `ipip` module is loaded; creating any IPIP device loads
//! it. A kernel without IPIP cannot carry these pools at all, so felixd says so in its
//! readiness ([`Ipip::unavailable`]) instead of failing every update or pretending.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkIpIp, LinkUnspec};

use super::routes::RouteError;

pub const IPIP_IFACE: &str = "tunl0";

/// What `tunl0` should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpipDevice {
    pub mtu: u32,
    /// The node's tunnel address; `None` until IPAM gave the node one.
    pub address: Option<Ipv4Addr>,
}

#[derive(Debug, Default)]
pub struct Ipip {
    wanted: Option<IpipDevice>,
    dirty: bool,
    unavailable: Option<String>,
}

/// `ip link add name tunl0 type ipip`: what brings the fallback device in on a kernel with
/// IPIP (the module loads and creates `tunl0` itself; the request then names that device).
pub fn add_tunl0_request() -> LinkMessage {
    LinkIpIp::new(IPIP_IFACE).build()
}

/// `ip link set tunl0 mtu <mtu> up`.
pub fn set_tunl0_request(index: u32, mtu: u32) -> LinkMessage {
    LinkUnspec::new_with_index(index).mtu(mtu).up().build()
}

impl Ipip {
    pub fn set(&mut self, wanted: Option<IpipDevice>) {
        if self.wanted != wanted {
            self.wanted = wanted;
            self.dirty = true;
        }
    }

    /// The MTU once the host's is known (underlay − 20).
    pub fn set_mtu(&mut self, mtu: u32) {
        if let Some(w) = &mut self.wanted
            && w.mtu != mtu
        {
            w.mtu = mtu;
            self.dirty = true;
        }
    }

    pub fn needs_apply(&self) -> bool {
        self.dirty
    }

    pub fn invalidate(&mut self) {
        self.dirty = self.wanted.is_some();
    }

    /// Why IPIP pools cannot work on this node, if they cannot.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    pub async fn apply(&mut self, h: &Handle) -> Result<(), RouteError> {
        let Some(want) = self.wanted.clone() else {
            // Felix leaves tunl0 in place when IPIP is no longer used; so do we.
            self.unavailable = None;
            self.dirty = false;
            return Ok(());
        };
        let mut index = find(h).await?;
        if index.is_none() {
            match h.link().add(add_tunl0_request()).execute().await {
                Ok(()) => {}
                // The module loaded and made tunl0 itself: the add names an existing device.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == 17 => {}
                Err(e) => {
                    let why = format!(
                        "IP pools use IPIP, but this kernel cannot create {IPIP_IFACE} ({e}): load the ipip module (modprobe ipip) or switch the pools to VXLAN"
                    );
                    if self.unavailable.as_deref() != Some(&why) {
                        tracing::error!(reason = %why, "IPIP is not available");
                    }
                    self.unavailable = Some(why);
                    self.dirty = false;
                    return Ok(());
                }
            }
            index = find(h).await?;
        }
        let Some(index) = index else {
            self.unavailable = Some(format!(
                "{IPIP_IFACE} did not appear after the ipip module was asked for it"
            ));
            self.dirty = false;
            return Ok(());
        };
        self.unavailable = None;
        h.link()
            .set(set_tunl0_request(index, want.mtu))
            .execute()
            .await
            .map_err(|source| RouteError::Netlink {
                what: format!("setting {IPIP_IFACE}'s MTU and state"),
                source,
            })?;
        if let Some(ip) = want.address {
            super::vxlan::sync_tunnel_address(h, index, ip, IPIP_IFACE).await?;
        }
        self.dirty = false;
        Ok(())
    }
}

async fn find(h: &Handle) -> Result<Option<u32>, RouteError> {
    let mut links = h.link().get().match_name(IPIP_IFACE.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        Err(e) if super::vxlan::is_not_found(&e) => Ok(None),
        Err(source) => Err(RouteError::Netlink {
            what: format!("looking up {IPIP_IFACE}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo};

    use super::*;

    #[test]
    fn the_add_request_names_tunl0_as_an_ipip_device() {
        let m = add_tunl0_request();
        assert!(
            m.attributes
                .contains(&LinkAttribute::IfName("tunl0".into()))
        );
        let kind = m.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(k) => Some(k.clone()),
                _ => None,
            }),
            _ => None,
        });
        assert_eq!(kind, Some(InfoKind::IpIp));
    }

    #[test]
    fn the_set_request_brings_tunl0_up_with_the_mtu() {
        let m = set_tunl0_request(7, 1480);
        assert_eq!(m.header.index, 7);
        assert!(m.header.flags.contains(LinkFlags::Up));
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1480)));
    }
}
