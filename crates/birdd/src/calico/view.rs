//! The per-computation view of [`ClusterState`]: each node's BGP fields as confd's v1 keys
//! hold them (`bgpnodeprocessor.go`: `ip_addr_v4`, `network_v4`, `as_num`, `rr_cluster_id`,
//! ...), the global and per-node BGPConfiguration values, and the problems found on the way.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use calico_api::{BgpConfigurationSpec, DEFAULT_AS_NUMBER, Selector};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::CalicoError;
use super::state::ClusterState;

/// One node's BGP fields.
#[derive(Debug, Clone)]
pub(crate) struct NodeView<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// `spec.bgp.ipv4Address`, address and subnet.
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
    pub as_num: Option<u32>,
    /// `spec.bgp.routeReflectorClusterID`; non-empty means "is a route reflector".
    pub rr_cluster_id: &'a str,
    /// `listenPort` of BGPConfiguration `node.<name>`, when set and non-zero.
    pub listen_port: Option<u16>,
    pub wireguard_v4: bool,
    pub wireguard_v6: bool,
}

impl NodeView<'_> {
    pub fn ip(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.v6.map(|n| IpAddr::V6(n.addr()))
        } else {
            self.v4.map(|n| IpAddr::V4(n.addr()))
        }
    }

    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.ip(ip.is_ipv6()) == Some(ip)
    }
}

/// Everything one intent computation reads, indexed once.
pub(crate) struct View<'a> {
    pub state: &'a ClusterState,
    pub me: &'a str,
    pub nodes: BTreeMap<&'a str, NodeView<'a>>,
    /// BGPConfiguration `default`.
    pub global: Option<&'a BgpConfigurationSpec>,
    /// BGPConfiguration `node.<me>`.
    pub node_config: Option<&'a BgpConfigurationSpec>,
    /// The global AS (`/calico/bgp/v1/global/as_num`, default 64512).
    pub global_as: u32,
    /// The global `listenPort`, 0 when unset (confd's `globalListenPort`).
    pub global_listen_port: u16,
    /// Problems with individual resources; each one skips what it names.
    pub problems: Vec<CalicoError>,
}

fn parse_node_addr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or address/prefix"))
}

impl<'a> View<'a> {
    pub fn new(state: &'a ClusterState, me: &'a str) -> View<'a> {
        let global = state.bgp_configs.get("default");
        let node_config = state.bgp_configs.get(&format!("node.{me}"));
        let mut problems = Vec::new();
        let mut nodes = BTreeMap::new();
        for (name, node) in &state.nodes {
            let bgp = node.spec.bgp.as_ref();
            let mut v4 = None;
            let mut v6 = None;
            if let Some(b) = bgp {
                if !b.ipv4_address.is_empty() {
                    match parse_node_addr(&b.ipv4_address) {
                        Ok(IpNet::V4(n)) => v4 = Some(n),
                        Ok(IpNet::V6(_)) => problems.push(CalicoError::InvalidNode {
                            node: name.clone(),
                            field: "spec.bgp.ipv4Address",
                            reason: format!("{:?} is an IPv6 address", b.ipv4_address),
                        }),
                        Err(reason) => problems.push(CalicoError::InvalidNode {
                            node: name.clone(),
                            field: "spec.bgp.ipv4Address",
                            reason,
                        }),
                    }
                }
                if !b.ipv6_address.is_empty() {
                    match parse_node_addr(&b.ipv6_address) {
                        Ok(IpNet::V6(n)) => v6 = Some(n),
                        Ok(IpNet::V4(_)) => problems.push(CalicoError::InvalidNode {
                            node: name.clone(),
                            field: "spec.bgp.ipv6Address",
                            reason: format!("{:?} is an IPv4 address", b.ipv6_address),
                        }),
                        Err(reason) => problems.push(CalicoError::InvalidNode {
                            node: name.clone(),
                            field: "spec.bgp.ipv6Address",
                            reason,
                        }),
                    }
                }
            }
            let listen_port = state
                .bgp_configs
                .get(&format!("node.{name}"))
                .and_then(|c| c.listen_port)
                .filter(|p| *p != 0);
            let wg = node.spec.wireguard.as_ref();
            nodes.insert(
                name.as_str(),
                NodeView {
                    name: name.as_str(),
                    labels: &node.metadata.labels,
                    v4,
                    v6,
                    as_num: bgp.and_then(|b| b.as_number).map(|a| a.0),
                    rr_cluster_id: bgp.map_or("", |b| b.route_reflector_cluster_id.as_str()),
                    listen_port,
                    wireguard_v4: wg.is_some_and(|w| !w.interface_ipv4_address.is_empty()),
                    wireguard_v6: wg.is_some_and(|w| !w.interface_ipv6_address.is_empty()),
                },
            );
        }
        View {
            state,
            me,
            nodes,
            global,
            node_config,
            global_as: global
                .and_then(|g| g.as_number)
                .unwrap_or(DEFAULT_AS_NUMBER)
                .0,
            global_listen_port: global.and_then(|g| g.listen_port).unwrap_or(0),
            problems,
        }
    }

    pub fn me(&self) -> Option<&NodeView<'a>> {
        self.nodes.get(self.me)
    }

    /// This node's address of a family, as confd's `NodeIP` / `NodeIPv6`.
    pub fn my_ip(&self, v6: bool) -> Option<IpAddr> {
        self.me().and_then(|n| n.ip(v6))
    }

    pub fn my_v4(&self) -> Option<Ipv4Addr> {
        self.me().and_then(|n| n.v4).map(|n| n.addr())
    }

    pub fn my_v6(&self) -> Option<Ipv6Addr> {
        self.me().and_then(|n| n.v6).map(|n| n.addr())
    }

    /// This node's AS: `Node.spec.bgp.asNumber`, else the global one.
    pub fn my_as(&self) -> u32 {
        self.me().and_then(|n| n.as_num).unwrap_or(self.global_as)
    }

    pub fn my_cluster_id(&self) -> &'a str {
        self.me().map_or("", |n| n.rr_cluster_id)
    }

    /// Names of the nodes a selector matches, sorted; a selector that does not parse matches
    /// nothing (as confd's `nodesMatching`) and is reported against `what`.
    pub fn nodes_matching(&mut self, selector: &str, what: (&str, &'static str)) -> Vec<&'a str> {
        match Selector::parse(selector) {
            Ok(sel) => self
                .nodes
                .values()
                .filter(|n| sel.evaluate(n.labels))
                .map(|n| n.name)
                .collect(),
            Err(e) => {
                self.problems.push(CalicoError::InvalidPeer {
                    peer: what.0.to_string(),
                    field: what.1,
                    reason: format!("selector {selector:?} does not parse: {e}"),
                });
                Vec::new()
            }
        }
    }
}
