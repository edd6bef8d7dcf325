//! The cluster's network layout as the dataplane needs it: IP pools (NAT outgoing, which
//! sets hold pool CIDRs, encapsulation), nodes (their addresses and VXLAN tunnel endpoints)
//! and IPAM blocks with their affinities (blackholes for this node's blocks, routes to
//! other nodes' blocks). Felix's pool, host IP and route resolver inputs, kept as plain maps:
//! they are small and every change is applied to the dataplane in full.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::kinds::EncapMode;
use calico_api::resource::{IpPool, Node};
use calico_ipam::block::{ATTR_NODE, AllocationBlock};
use ipnet::IpNet;
use sha1::{Digest, Sha1};

/// A pool as the dataplane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub cidr: IpNet,
    pub nat_outgoing: bool,
    pub disabled: bool,
    pub vxlan: EncapMode,
    pub ipip: EncapMode,
}

/// A node's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's address and subnet (`spec.bgp.ipv4Address`).
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
    pub vxlan_tunnel_v4: Option<IpAddr>,
    pub vxlan_mac_v4: Option<[u8; 6]>,
    pub vxlan_tunnel_v6: Option<IpAddr>,
    pub vxlan_mac_v6: Option<[u8; 6]>,
    pub ipip_tunnel_v4: Option<IpAddr>,
}

/// Pools, nodes and blocks.
#[derive(Debug, Default)]
pub struct Network {
    pub pools: BTreeMap<String, Pool>,
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Block CIDR → the node it is affine to (if any).
    pub blocks: BTreeMap<IpNet, Option<String>>,
    /// Addresses in use by a node other than their block's owner (borrowed when the owner
    /// had no free block to give), per block: each needs its own route to where it lives.
    pub borrowed: BTreeMap<IpNet, Vec<(IpAddr, String)>>,
    pub(super) dirty: bool,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Felix's VTEP MAC for a node that has none recorded: `0x66` then the first five bytes of
/// SHA-1 of the node name (`<name>-v6` for IPv6), a locally administered unicast address.
pub fn vtep_mac_for_host(node: &str, ip_version: u8) -> [u8; 6] {
    let input = if ip_version == 6 {
        format!("{node}-v6")
    } else {
        node.to_string()
    };
    let h = Sha1::digest(input.as_bytes());
    [0x66, h[0], h[1], h[2], h[3], h[4]]
}

fn parse_addr_net(s: &str) -> Option<IpNet> {
    if s.is_empty() {
        return None;
    }
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl Network {
    pub fn put_pool(&mut self, p: &IpPool) {
        let Ok(cidr) = p.spec.cidr.parse::<IpNet>() else {
            tracing::warn!(pool = %p.metadata.name, cidr = %p.spec.cidr, "ignoring an IP pool whose CIDR does not parse");
            self.delete_pool(&p.metadata.name);
            return;
        };
        let pool = Pool {
            cidr: cidr.trunc(),
            nat_outgoing: p.spec.nat_outgoing,
            disabled: p.spec.disabled,
            vxlan: p.spec.vxlan_mode.unwrap_or_default(),
            ipip: p.spec.ipip_mode.unwrap_or_default(),
        };
        if self.pools.get(&p.metadata.name) != Some(&pool) {
            self.pools.insert(p.metadata.name.clone(), pool);
            self.dirty = true;
        }
    }

    pub fn delete_pool(&mut self, name: &str) {
        if self.pools.remove(name).is_some() {
            self.dirty = true;
        }
    }

    pub fn put_node(&mut self, n: &Node) {
        let bgp = n.spec.bgp.as_ref();
        let info = NodeInfo {
            ipv4: bgp.and_then(|b| parse_addr_net(&b.ipv4_address)),
            ipv6: bgp.and_then(|b| parse_addr_net(&b.ipv6_address)),
            vxlan_tunnel_v4: n.spec.ipv4_vxlan_tunnel_addr.parse().ok(),
            vxlan_mac_v4: parse_mac(&n.spec.vxlan_tunnel_mac_addr),
            vxlan_tunnel_v6: n.spec.ipv6_vxlan_tunnel_addr.parse().ok(),
            vxlan_mac_v6: parse_mac(&n.spec.vxlan_tunnel_mac_addr_v6),
            ipip_tunnel_v4: bgp.and_then(|b| b.ipv4_ipip_tunnel_addr.parse().ok()),
        };
        if self.nodes.get(&n.metadata.name) != Some(&info) {
            self.nodes.insert(n.metadata.name.clone(), info);
            self.dirty = true;
        }
    }

    pub fn delete_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.dirty = true;
        }
    }

    /// A block from its stored JSON: its affinity, and the addresses in it that a node other
    /// than the owner uses (each allocation records its node, as Calico's CNI plugin writes it).
    pub fn put_block(&mut self, cidr: IpNet, value: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Deleted {
            #[serde(default)]
            deleted: bool,
        }
        let block = match serde_json::from_slice::<AllocationBlock>(value) {
            Ok(b) if b.deleted => return self.delete_block(&cidr),
            Ok(b) => b,
            // A tombstone that is not a whole block still removes the block.
            Err(_) if serde_json::from_slice::<Deleted>(value).is_ok_and(|d| d.deleted) => {
                return self.delete_block(&cidr);
            }
            Err(e) => {
                tracing::warn!(block = %cidr, error = %e, "ignoring an IPAM block that does not parse");
                if self.blocks.get(&cidr) != Some(&None) {
                    self.blocks.insert(cidr, None);
                    self.borrowed.remove(&cidr);
                    self.dirty = true;
                }
                return;
            }
        };
        let host = block
            .affinity
            .as_deref()
            .and_then(|s| s.strip_prefix("host:").map(str::to_string))
            .or_else(|| block.host_affinity.clone());
        let borrowed: Vec<(IpAddr, String)> = block
            .allocated()
            .filter_map(|(ip, a)| {
                let node = a.owner(ATTR_NODE)?;
                (Some(node) != host.as_deref()).then(|| (ip, node.to_string()))
            })
            .collect();
        if self.blocks.get(&cidr) != Some(&host) {
            self.blocks.insert(cidr, host);
            self.dirty = true;
        }
        let had = self.borrowed.get(&cidr).map_or(&[][..], Vec::as_slice);
        if had != borrowed.as_slice() {
            if borrowed.is_empty() {
                self.borrowed.remove(&cidr);
            } else {
                self.borrowed.insert(cidr, borrowed);
            }
            self.dirty = true;
        }
    }

    pub fn delete_block(&mut self, cidr: &IpNet) {
        self.borrowed.remove(cidr);
        if self.blocks.remove(cidr).is_some() {
            self.dirty = true;
        }
    }

    /// The pool holding `addr`, if any.
    pub fn pool_of(&self, net: &IpNet) -> Option<&Pool> {
        self.pools.values().find(|p| p.cidr.contains(net))
    }

    pub fn vxlan_enabled(&self, ip_version: u8) -> bool {
        self.pools
            .values()
            .any(|p| p.vxlan != EncapMode::Never && (p.cidr.addr().is_ipv4() == (ip_version == 4)))
    }

    pub fn ipip_enabled(&self) -> bool {
        self.pools
            .values()
            .any(|p| p.ipip != EncapMode::Never && p.cidr.addr().is_ipv4())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn vtep_macs_follow_felix() {
        let m = vtep_mac_for_host("node-a", 4);
        assert_eq!(m[0], 0x66);
        assert_ne!(vtep_mac_for_host("node-a", 6), m);
        assert_eq!(
            parse_mac("66:aa:bb:cc:dd:ee"),
            Some([0x66, 0xaa, 0xbb, 0xcc, 0xdd, 0xee])
        );
        assert_eq!(parse_mac("66:aa:bb"), None);
    }

    #[test]
    fn blocks_record_their_host() {
        let mut n = Network::default();
        let cidr: IpNet = "10.244.1.0/26".parse().unwrap();
        n.put_block(
            cidr,
            br#"{"cidr":"10.244.1.0/26","affinity":"host:node-b","allocations":[]}"#,
        );
        assert_eq!(n.blocks[&cidr].as_deref(), Some("node-b"));
        n.put_block(cidr, br#"{"cidr":"10.244.1.0/26","affinity":null}"#);
        assert_eq!(n.blocks[&cidr], None);
        n.put_block(cidr, br#"{"cidr":"10.244.1.0/26","deleted":true}"#);
        assert!(!n.blocks.contains_key(&cidr));
    }
}
