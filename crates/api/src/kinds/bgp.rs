//! BGPConfiguration, BGPPeer and BGPFilter (`bgpconfig.go`, `bgppeer.go`, `bgpfilter.go`, their
//! CEL rules, and clientv3's default-only field check).

use serde::{Deserialize, Serialize};

use super::is_false;
use crate::meta::SecretKeySelector;
use crate::numorstring::{AsNumber, Duration};
use crate::resource::{BgpConfiguration, BgpFilter, BgpPeer, KindRules};
use crate::validation::{
    Errors, Path, check_interface_glob, check_ip, check_ipv4, check_ipv6, check_net_family,
    check_selector_no_global, check_subdomain_name, parse_cidr_or_ip,
};

/// AS number used when neither the node nor BGPConfiguration sets one.
pub const DEFAULT_AS_NUMBER: AsNumber = AsNumber(64512);
/// BGP's well-known port.
pub const DEFAULT_BGP_PORT: u16 = 179;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CidrBlock {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Community {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrefixAdvertisement {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPassword {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindMode {
    None,
    #[serde(rename = "NodeIP")]
    NodeIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnabledDisabled {
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpConfigurationSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_severity_screen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<CidrBlock>,
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<CidrBlock>,
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<CidrBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_load_balancer_aggregation: Option<EnabledDisabled>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<BindMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_interfaces: Vec<String>,
    #[serde(
        default,
        rename = "localWorkloadPeeringIPV4",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_workload_peering_ipv4: String,
    #[serde(
        default,
        rename = "localWorkloadPeeringIPV6",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_workload_peering_ipv6: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_cluster_routes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_normal_route_priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_normal_route_priority: Option<i64>,
}

impl BgpConfigurationSpec {
    pub fn mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }

    pub fn effective_as_number(&self) -> AsNumber {
        self.as_number.unwrap_or(DEFAULT_AS_NUMBER)
    }

    pub fn effective_listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(DEFAULT_BGP_PORT)
    }
}

const LOG_SEVERITIES: [&str; 6] = ["trace", "debug", "info", "warning", "error", "fatal"];

/// `aa:nn` (16-bit parts) or `aa:nn:mm` (32-bit parts).
pub fn check_community_value(v: &str) -> Result<(), String> {
    let parts: Vec<&str> = v.split(':').collect();
    let all_digits = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let ok = all_digits
        && match parts.len() {
            2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
            3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
            _ => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a community: use aa:nn (16-bit numbers) or aa:nn:mm (32-bit numbers)"
        ))
    }
}

fn check_priority(v: i64) -> Result<(), String> {
    if (1..=2_147_483_646).contains(&v) {
        Ok(())
    } else {
        Err(format!("{v} is outside 1..2147483646"))
    }
}

impl KindRules for BgpConfiguration {
    fn check_name(name: &str) -> Result<(), String> {
        check_subdomain_name(name)
    }

    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        if !s.log_severity_screen.is_empty()
            && !LOG_SEVERITIES.contains(&s.log_severity_screen.to_ascii_lowercase().as_str())
        {
            errs.add(
                p.field("logSeverityScreen"),
                format!(
                    "{:?} is not one of Trace, Debug, Info, Warning, Error, Fatal",
                    s.log_severity_screen
                ),
            );
        }
        if self.metadata.name != "default" {
            let only_default = "can only be set on the global BGPConfiguration named \"default\"";
            if s.node_to_node_mesh_enabled.is_some() {
                errs.add(p.field("nodeToNodeMeshEnabled"), only_default);
            }
            if s.as_number.is_some() {
                errs.add(p.field("asNumber"), only_default);
            }
            if !s.service_load_balancer_ips.is_empty() {
                errs.add(p.field("serviceLoadBalancerIPs"), only_default);
            }
            if !s.service_external_ips.is_empty() {
                errs.add(p.field("serviceExternalIPs"), only_default);
            }
            if !s.service_cluster_ips.is_empty() {
                errs.add(p.field("serviceClusterIPs"), only_default);
            }
            if s.node_mesh_password.is_some() {
                errs.add(p.field("nodeMeshPassword"), only_default);
            }
            if s.node_mesh_max_restart_time.is_some() {
                errs.add(p.field("nodeMeshMaxRestartTime"), only_default);
            }
        }
        if s.node_to_node_mesh_enabled == Some(false) {
            if s.node_mesh_password.is_some() {
                errs.add(
                    p.field("nodeMeshPassword"),
                    "cannot be set when nodeToNodeMeshEnabled is false",
                );
            }
            if s.node_mesh_max_restart_time.is_some() {
                errs.add(
                    p.field("nodeMeshMaxRestartTime"),
                    "cannot be set when nodeToNodeMeshEnabled is false",
                );
            }
        }
        for (field, list) in [
            ("serviceLoadBalancerIPs", &s.service_load_balancer_ips),
            ("serviceExternalIPs", &s.service_external_ips),
            ("serviceClusterIPs", &s.service_cluster_ips),
        ] {
            for (i, b) in list.iter().enumerate() {
                if let Err(e) = crate::validation::check_net(&b.cidr) {
                    errs.add(p.field(field).index(i).field("cidr"), e);
                }
            }
        }
        if s.communities.len() > 500 {
            errs.add(
                p.field("communities"),
                "at most 500 communities may be defined",
            );
        }
        for (i, c) in s.communities.iter().enumerate() {
            let cp = p.field("communities").index(i);
            if c.name.is_empty() {
                errs.add(cp.field("name"), "a community needs a name");
            } else {
                errs.check(cp.field("name"), check_subdomain_name(&c.name));
            }
            errs.check(cp.field("value"), check_community_value(&c.value));
        }
        if !s.communities.is_empty() && s.prefix_advertisements.is_empty() {
            errs.add(
                p.field("communities"),
                "communities are defined but no prefixAdvertisements use them",
            );
        }
        for (i, pa) in s.prefix_advertisements.iter().enumerate() {
            let pp = p.field("prefixAdvertisements").index(i);
            if let Err(e) = parse_cidr_or_ip(&pa.cidr) {
                errs.add(pp.field("cidr"), e);
            }
            if pa.communities.is_empty() {
                errs.add(pp.field("communities"), "list at least one community");
            }
            for (j, c) in pa.communities.iter().enumerate() {
                let defined = s.communities.iter().any(|d| &d.name == c);
                if !defined && check_community_value(c).is_err() {
                    errs.add(
                        pp.field("communities").index(j),
                        format!("{c:?} is neither a community value (aa:nn or aa:nn:mm) nor the name of one in spec.communities"),
                    );
                }
            }
        }
        if s.listen_port == Some(0) {
            errs.add(p.field("listenPort"), "0 is not a valid port; use 1..65535");
        }
        for (i, iface) in s.ignored_interfaces.iter().enumerate() {
            errs.check(
                p.field("ignoredInterfaces").index(i),
                check_interface_glob(iface),
            );
        }
        if !s.local_workload_peering_ipv4.is_empty() {
            errs.check(
                p.field("localWorkloadPeeringIPV4"),
                check_ipv4(&s.local_workload_peering_ipv4),
            );
        }
        if !s.local_workload_peering_ipv6.is_empty() {
            errs.check(
                p.field("localWorkloadPeeringIPV6"),
                check_ipv6(&s.local_workload_peering_ipv6),
            );
        }
        if let Some(v) = &s.program_cluster_routes
            && ![
                "Enabled",
                "Disabled",
                "EnabledIPIPOnly",
                "EnabledNoEncapOnly",
            ]
            .contains(&v.as_str())
        {
            errs.add(
                p.field("programClusterRoutes"),
                format!(
                    "{v:?} is not one of Enabled, Disabled, EnabledIPIPOnly, EnabledNoEncapOnly"
                ),
            );
        }
        if let Some(v) = s.ipv4_normal_route_priority {
            errs.check(p.field("ipv4NormalRoutePriority"), check_priority(v));
        }
        if let Some(v) = s.ipv6_normal_route_priority {
            errs.check(p.field("ipv6NormalRoutePriority"), check_priority(v));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceAddress {
    #[serde(rename = "UseNodeIP")]
    UseNodeIp,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextHopMode {
    Auto,
    #[serde(rename = "Self")]
    SelfHop,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReversePeering {
    Auto,
    Manual,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    #[serde(default, rename = "peerIP", skip_serializing_if = "String::is_empty")]
    pub peer_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(
        default,
        rename = "localASNumber",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_as_number: Option<AsNumber>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_selector: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_original_next_hop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<Duration>,
    #[serde(
        default,
        rename = "numAllowedLocalASNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<i32>,
    #[serde(
        default,
        rename = "ttlSecurity",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_security: Option<u8>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reachable_by: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_workload_selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_peering: Option<ReversePeering>,
}

/// Splits a `peerIP` into address and optional port: `10.0.0.1`, `10.0.0.1:1790`,
/// `fd00::1` or `[fd00::1]:1790`.
pub fn parse_peer_ip(s: &str) -> Result<(std::net::IpAddr, Option<u16>), String> {
    let bad = || format!("{s:?} is not an IP address, IPv4:port or [IPv6]:port");
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok((ip, None));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    Err(bad())
}

impl KindRules for BgpPeer {
    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        if !s.node.is_empty() {
            errs.check(p.field("node"), check_subdomain_name(&s.node));
            if !s.node_selector.is_empty() {
                errs.add(
                    p.field("nodeSelector"),
                    "node and nodeSelector cannot both be set",
                );
            }
        }
        if !s.node_selector.is_empty() {
            errs.check(
                p.field("nodeSelector"),
                check_selector_no_global(&s.node_selector),
            );
        }
        let peer_addr = if s.peer_ip.is_empty() {
            None
        } else {
            if s.peer_ip.len() > 64 {
                errs.add(p.field("peerIP"), "must be at most 64 characters");
            }
            match parse_peer_ip(&s.peer_ip) {
                Ok((ip, port)) => {
                    if port == Some(0) {
                        errs.add(p.field("peerIP"), "port 0 is not valid; use 1..65535");
                    }
                    Some(ip)
                }
                Err(e) => {
                    errs.add(p.field("peerIP"), e);
                    None
                }
            }
        };
        if !s.peer_selector.is_empty() {
            errs.check(
                p.field("peerSelector"),
                check_selector_no_global(&s.peer_selector),
            );
            if !s.peer_ip.is_empty() {
                errs.add(
                    p.field("peerSelector"),
                    "peerIP and peerSelector cannot both be set",
                );
            }
            if s.as_number.is_some_and(|a| a.0 != 0) {
                errs.add(
                    p.field("asNumber"),
                    "must be empty when peerSelector is set (the peer node's own AS number is used)",
                );
            }
        }
        if !s.local_workload_selector.is_empty() {
            errs.check(
                p.field("localWorkloadSelector"),
                check_selector_no_global(&s.local_workload_selector),
            );
            if !s.peer_ip.is_empty() {
                errs.add(
                    p.field("peerIP"),
                    "must be empty when localWorkloadSelector is set",
                );
            }
            if !s.peer_selector.is_empty() {
                errs.add(
                    p.field("peerSelector"),
                    "must be empty when localWorkloadSelector is set",
                );
            }
            if s.as_number.is_none_or(|a| a.0 == 0) {
                errs.add(
                    p.field("asNumber"),
                    "is required when localWorkloadSelector is set",
                );
            }
        }
        if !s.reachable_by.is_empty() {
            match check_ip(&s.reachable_by) {
                Err(e) => errs.add(p.field("reachableBy"), e),
                Ok(gw) => match peer_addr {
                    None if s.peer_ip.is_empty() => {
                        errs.add(p.field("reachableBy"), "must be empty when peerIP is empty")
                    }
                    Some(peer) if peer.is_ipv4() != gw.is_ipv4() => errs.add(
                        p.field("reachableBy"),
                        "reachableBy and peerIP must be of the same address family",
                    ),
                    _ => {}
                },
            }
        }
        if s.keep_original_next_hop && s.next_hop_mode.is_some() {
            errs.add(
                p.field("nextHopMode"),
                "keepOriginalNextHop and nextHopMode cannot both be set; use nextHopMode: Keep",
            );
        }
        for (i, f) in s.filters.iter().enumerate() {
            errs.check(p.field("filters").index(i), check_subdomain_name(f));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpFilterAction {
    Accept,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpFilterMatchOperator {
    Equal,
    NotEqual,
    In,
    NotIn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpFilterMatchSource {
    RemotePeers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpFilterPeerType {
    #[serde(rename = "eBGP")]
    Ebgp,
    #[serde(rename = "iBGP")]
    Ibgp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpFilterPrefixLength {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpFilterCommunityMatch {
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpFilterAddCommunity {
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpFilterPrependAsPath {
    #[serde(default)]
    pub prefix: Vec<AsNumber>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpFilterSetPriority {
    #[serde(default)]
    pub value: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpFilterOperation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_community: Option<BgpFilterAddCommunity>,
    #[serde(
        default,
        rename = "prependASPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub prepend_as_path: Option<BgpFilterPrependAsPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_priority: Option<BgpFilterSetPriority>,
}

/// One rule of a BGPFilter list (the same shape for v4 and v6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpFilterRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<BgpFilterPrefixLength>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<BgpFilterMatchSource>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<BgpFilterMatchOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_type: Option<BgpFilterPeerType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<BgpFilterCommunityMatch>,
    #[serde(
        default,
        rename = "asPathPrefix",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub as_path_prefix: Vec<AsNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    pub action: BgpFilterAction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<BgpFilterOperation>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpFilterSpec {
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BgpFilterRule>,
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BgpFilterRule>,
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BgpFilterRule>,
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BgpFilterRule>,
}

fn check_filter_rule(errs: &mut Errors, p: &Path, r: &BgpFilterRule, v4: bool) {
    let max_len = if v4 { 32 } else { 128 };
    if !r.cidr.is_empty() {
        errs.check(p.field("cidr"), check_net_family(&r.cidr, v4).map(|_| ()));
    }
    if r.cidr.is_empty() != r.match_operator.is_none() {
        errs.add(
            p.field("matchOperator"),
            "cidr and matchOperator must both be set or both be empty",
        );
    }
    if let Some(pl) = &r.prefix_length {
        if r.cidr.is_empty() {
            errs.add(
                p.field("prefixLength"),
                "cidr is required when prefixLength is set",
            );
        }
        for (f, v) in [("min", pl.min), ("max", pl.max)] {
            if let Some(v) = v
                && !(0..=max_len).contains(&v)
            {
                errs.add(
                    p.field("prefixLength").field(f),
                    format!("{v} is outside 0..{max_len}"),
                );
            }
        }
        if let (Some(a), Some(b)) = (pl.min, pl.max)
            && a > b
        {
            errs.add(
                p.field("prefixLength"),
                format!("min {a} is greater than max {b}"),
            );
        }
    }
    if !r.interface.is_empty() {
        errs.check(p.field("interface"), check_interface_glob(&r.interface));
    }
    if let Some(c) = &r.communities {
        if c.values.len() != 1 {
            errs.add(
                p.field("communities").field("values"),
                "give exactly one community value",
            );
        }
        for (i, v) in c.values.iter().enumerate() {
            errs.check(
                p.field("communities").field("values").index(i),
                check_community_value(v),
            );
        }
    }
    if let Some(pr) = r.priority {
        errs.check(p.field("priority"), check_priority(pr));
    }
    if !r.operations.is_empty() && r.action != BgpFilterAction::Accept {
        errs.add(
            p.field("operations"),
            "operations may only be used with action Accept",
        );
    }
    if r.operations.len() > 10 {
        errs.add(p.field("operations"), "at most 10 operations are allowed");
    }
    for (i, op) in r.operations.iter().enumerate() {
        let op_p = p.field("operations").index(i);
        let set = [
            op.add_community.is_some(),
            op.prepend_as_path.is_some(),
            op.set_priority.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            errs.add(
                &op_p,
                "each operation sets exactly one of addCommunity, prependASPath, setPriority",
            );
        }
        if let Some(ac) = &op.add_community {
            match &ac.value {
                Some(v) => errs.check(
                    op_p.field("addCommunity").field("value"),
                    check_community_value(v),
                ),
                None => errs.add(
                    op_p.field("addCommunity").field("value"),
                    "a community value is required",
                ),
            }
        }
        if let Some(pp) = &op.prepend_as_path
            && pp.prefix.is_empty()
        {
            errs.add(
                op_p.field("prependASPath").field("prefix"),
                "list at least one AS number",
            );
        }
        if let Some(sp) = &op.set_priority {
            match sp.value {
                Some(v) => errs.check(op_p.field("setPriority").field("value"), check_priority(v)),
                None => errs.add(
                    op_p.field("setPriority").field("value"),
                    "a priority value is required",
                ),
            }
        }
    }
}

impl KindRules for BgpFilter {
    fn check(&self, errs: &mut Errors) {
        let p = Path::root("spec");
        for (field, list, v4) in [
            ("exportV4", &self.spec.export_v4, true),
            ("importV4", &self.spec.import_v4, true),
            ("exportV6", &self.spec.export_v6, false),
            ("importV6", &self.spec.import_v6, false),
        ] {
            for (i, r) in list.iter().enumerate() {
                check_filter_rule(errs, &p.field(field).index(i), r, v4);
            }
        }
    }
}
