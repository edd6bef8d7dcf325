//! Node (`internalapi/node.go`, `validateNodeSpec`).

use serde::{Deserialize, Serialize};

use crate::numorstring::AsNumber;
use crate::resource::{KindRules, Node};
use crate::validation::{
    Errors, Path, check_cidr_family, check_ipv4, check_ipv6, check_mac, parse_cidr_or_ip,
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeBgpSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv4_address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv6_address: String,
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_ipip_tunnel_addr: String,
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "String::is_empty"
    )]
    pub route_reflector_cluster_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    #[serde(default)]
    pub orchestrator: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeWireguardSpec {
    #[serde(
        default,
        rename = "interfaceIPv4Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_ipv4_address: String,
    #[serde(
        default,
        rename = "interfaceIPv6Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_ipv6_address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeAddress {
    #[serde(default)]
    pub address: String,
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInterface {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_vxlan_tunnel_addr: String,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub vxlan_tunnel_mac_addr: String,
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_vxlan_tunnel_addr: String,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "String::is_empty"
    )]
    pub vxlan_tunnel_mac_addr_v6: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<NodeWireguardSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<NodeInterface>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wireguard_public_key: String,
    #[serde(
        default,
        rename = "wireguardPublicKeyV6",
        skip_serializing_if = "String::is_empty"
    )]
    pub wireguard_public_key_v6: String,
    #[serde(default, rename = "podCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub pod_cidrs: Vec<String>,
}

impl KindRules for Node {
    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        if let Some(b) = &s.bgp {
            let bp = p.field("bgp");
            if *b == NodeBgpSpec::default() {
                errs.add(
                    &bp,
                    "spec.bgp must not be empty; remove it or set ipv4Address/ipv6Address",
                );
            }
            if !b.ipv4_address.is_empty() {
                errs.check(
                    bp.field("ipv4Address"),
                    check_cidr_family(&b.ipv4_address, true),
                );
            }
            if !b.ipv6_address.is_empty() {
                errs.check(
                    bp.field("ipv6Address"),
                    check_cidr_family(&b.ipv6_address, false),
                );
            }
            if !b.ipv4_ipip_tunnel_addr.is_empty() {
                errs.check(
                    bp.field("ipv4IPIPTunnelAddr"),
                    check_ipv4(&b.ipv4_ipip_tunnel_addr),
                );
            }
            if !b.route_reflector_cluster_id.is_empty() {
                errs.check(
                    bp.field("routeReflectorClusterID"),
                    check_ipv4(&b.route_reflector_cluster_id),
                );
            }
        }
        if !s.ipv4_vxlan_tunnel_addr.is_empty() {
            errs.check(
                p.field("ipv4VXLANTunnelAddr"),
                check_ipv4(&s.ipv4_vxlan_tunnel_addr),
            );
        }
        if !s.ipv6_vxlan_tunnel_addr.is_empty() {
            errs.check(
                p.field("ipv6VXLANTunnelAddr"),
                check_ipv6(&s.ipv6_vxlan_tunnel_addr),
            );
        }
        if !s.vxlan_tunnel_mac_addr.is_empty() {
            errs.check(
                p.field("vxlanTunnelMACAddr"),
                check_mac(&s.vxlan_tunnel_mac_addr),
            );
        }
        if !s.vxlan_tunnel_mac_addr_v6.is_empty() {
            errs.check(
                p.field("vxlanTunnelMACAddrV6"),
                check_mac(&s.vxlan_tunnel_mac_addr_v6),
            );
        }
        if let Some(w) = &s.wireguard {
            if !w.interface_ipv4_address.is_empty() {
                errs.check(
                    p.field("wireguard").field("interfaceIPv4Address"),
                    check_ipv4(&w.interface_ipv4_address),
                );
            }
            if !w.interface_ipv6_address.is_empty() {
                errs.check(
                    p.field("wireguard").field("interfaceIPv6Address"),
                    check_ipv6(&w.interface_ipv6_address),
                );
            }
        }
        for (i, o) in s.orch_refs.iter().enumerate() {
            if o.orchestrator.is_empty() {
                errs.add(
                    p.field("orchRefs").index(i).field("orchestrator"),
                    "is required (e.g. k8s)",
                );
            }
        }
        for (i, a) in s.addresses.iter().enumerate() {
            let ap = p.field("addresses").index(i);
            if let Err(e) = parse_cidr_or_ip(&a.address) {
                errs.add(ap.field("address"), e);
            }
            if !a.type_.is_empty()
                && !["CalicoNodeIP", "InternalIP", "ExternalIP"].contains(&a.type_.as_str())
            {
                errs.add(
                    ap.field("type"),
                    format!(
                        "{:?} is not one of CalicoNodeIP, InternalIP, ExternalIP",
                        a.type_
                    ),
                );
            }
        }
    }
}

impl NodeSpec {
    /// The node's IPv4 BGP address without its prefix length, if set and valid.
    pub fn ipv4_address(&self) -> Option<std::net::Ipv4Addr> {
        let b = self.bgp.as_ref()?;
        match parse_cidr_or_ip(&b.ipv4_address).ok()? {
            ipnet::IpNet::V4(n) => Some(n.addr()),
            ipnet::IpNet::V6(_) => None,
        }
    }

    /// The node's IPv6 BGP address without its prefix length, if set and valid.
    pub fn ipv6_address(&self) -> Option<std::net::Ipv6Addr> {
        let b = self.bgp.as_ref()?;
        match parse_cidr_or_ip(&b.ipv6_address).ok()? {
            ipnet::IpNet::V6(n) => Some(n.addr()),
            ipnet::IpNet::V4(_) => None,
        }
    }
}
