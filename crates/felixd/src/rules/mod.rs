//! Calico's rule set, rendered as Calico renders it (`felix/rules`): the static chains hooked
//! into the kernel's chains, the workload dispatch chains, the per-endpoint chains, and the
//! policy and profile chains. Chain names, rule order, comments and rule text follow Calico so
//! that a node switching from Calico finds its rules unchanged (same per-rule hashes).
//!
//! - [`static_chains`]: filter/raw/mangle/nat static chains and their kernel hooks;
//! - [`dispatch`]: interface → endpoint chain dispatch trees;
//! - [`endpoints`]: `cali-tw-`/`cali-fw-` (and host endpoint) chains, policy groups;
//! - [`policy`]: policy and profile chains, rule rendering;
//! - [`nat`]: NAT outgoing.

pub mod dispatch;
pub mod endpoints;
pub mod nat;
pub mod policy;
pub mod static_chains;

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine as _;
use sha2::{Digest, Sha224, Sha256};

use crate::generic::{Action, PortRange};

pub const CHAIN_NAME_PREFIX: &str = "cali-";

pub const CHAIN_FILTER_INPUT: &str = "cali-INPUT";
pub const CHAIN_FILTER_FORWARD: &str = "cali-FORWARD";
pub const CHAIN_FILTER_OUTPUT: &str = "cali-OUTPUT";
pub const CHAIN_RAW_PREROUTING: &str = "cali-PREROUTING";
pub const CHAIN_RAW_OUTPUT: &str = "cali-OUTPUT";
pub const CHAIN_FAILSAFE_IN: &str = "cali-failsafe-in";
pub const CHAIN_FAILSAFE_OUT: &str = "cali-failsafe-out";
pub const CHAIN_NAT_PREROUTING: &str = "cali-PREROUTING";
pub const CHAIN_NAT_POSTROUTING: &str = "cali-POSTROUTING";
pub const CHAIN_NAT_OUTPUT: &str = "cali-OUTPUT";
pub const CHAIN_NAT_OUTGOING: &str = "cali-nat-outgoing";
pub const CHAIN_MANGLE_PREROUTING: &str = "cali-PREROUTING";
pub const CHAIN_MANGLE_POSTROUTING: &str = "cali-POSTROUTING";
pub const CHAIN_FIP_DNAT: &str = "cali-fip-dnat";
pub const CHAIN_FIP_SNAT: &str = "cali-fip-snat";
pub const CHAIN_CIDR_BLOCK: &str = "cali-cidr-block";
pub const CHAIN_WORKLOAD_TO_HOST: &str = "cali-wl-to-host";
pub const CHAIN_FROM_WORKLOAD_DISPATCH: &str = "cali-from-wl-dispatch";
pub const CHAIN_TO_WORKLOAD_DISPATCH: &str = "cali-to-wl-dispatch";
pub const CHAIN_DISPATCH_TO_HOST_ENDPOINT: &str = "cali-to-host-endpoint";
pub const CHAIN_DISPATCH_FROM_HOST_ENDPOINT: &str = "cali-from-host-endpoint";
pub const CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD: &str = "cali-to-hep-forward";
pub const CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD: &str = "cali-from-hep-forward";
pub const CHAIN_RPF_SKIP: &str = "cali-rpf-skip";

pub const POLICY_INBOUND_PREFIX: &str = "cali-pi-";
pub const POLICY_OUTBOUND_PREFIX: &str = "cali-po-";
pub const PROFILE_INBOUND_PREFIX: &str = "cali-pri-";
pub const PROFILE_OUTBOUND_PREFIX: &str = "cali-pro-";
pub const POLICY_GROUP_INBOUND_PREFIX: &str = "cali-gi-";
pub const POLICY_GROUP_OUTBOUND_PREFIX: &str = "cali-go-";
pub const WORKLOAD_TO_ENDPOINT_PREFIX: &str = "cali-tw-";
pub const WORKLOAD_FROM_ENDPOINT_PREFIX: &str = "cali-fw-";
pub const HOST_TO_ENDPOINT_PREFIX: &str = "cali-th-";
pub const HOST_FROM_ENDPOINT_PREFIX: &str = "cali-fh-";
pub const HOST_TO_ENDPOINT_FORWARD_PREFIX: &str = "cali-thfw-";
pub const HOST_FROM_ENDPOINT_FORWARD_PREFIX: &str = "cali-fhfw-";

/// iptables allows 28 characters in a chain name.
pub const MAX_CHAIN_NAME_LENGTH: usize = 28;

pub const NFLOG_INBOUND_GROUP: u16 = 1;
pub const NFLOG_OUTBOUND_GROUP: u16 = 2;

/// Fixed IP set IDs.
pub const IPSET_ID_NETWORK_POOLS: &str = "network-ip-pools";
pub const IPSET_ID_NAT_OUTGOING_MASQ_POOLS: &str = "masq-ipam-pools";
pub const IPSET_ID_ALL_HOST_NETS: &str = "all-hosts-net";
pub const IPSET_ID_ALL_VXLAN_SOURCE_NETS: &str = "all-vxlan-net";
pub const IPSET_ID_THIS_HOST_IPS: &str = "this-host";

/// The kernel's limit on an IP set's name.
pub const MAX_IPSET_NAME_LENGTH: usize = 31;

/// The dataplane name of an IP set: `cali` + `4`/`6` + `0` + the set's ID, at most 31
/// characters. nftables has no `:` in names, so it uses `-` there.
pub fn ipset_name(ip_version: u8, id: &str, nftables: bool) -> String {
    let mut name = format!("cali{ip_version}0{id}");
    name.truncate(MAX_IPSET_NAME_LENGTH);
    if nftables {
        name = name.replace(':', "-");
    }
    name
}

/// The temporary name a set is built under before it is swapped in (`cali4t…`).
pub fn ipset_temp_name(ip_version: u8, id: &str) -> String {
    let mut name = format!("cali{ip_version}t{id}");
    name.truncate(MAX_IPSET_NAME_LENGTH);
    name
}

/// `prefix + suffix` when it fits in `max`, else `prefix + "_" + base64url(SHA-256(suffix))`
/// cut to fit (Calico's `GetLengthLimitedID`).
pub fn length_limited_id(prefix: &str, suffix: &str, max: usize) -> String {
    let suffix = if suffix.is_empty() { "_" } else { suffix };
    let total = prefix.len() + suffix.len();
    if total > max || (total == max && suffix.starts_with('_')) {
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(suffix));
        let left = max.saturating_sub(1 + prefix.len());
        return format!("{prefix}_{}", &hash[..left.min(hash.len())]);
    }
    format!("{prefix}{suffix}")
}

/// `<prefix>:` + base64url(SHA-224(`<prefix>:<content>`)), Calico's `MakeUniqueID`.
pub fn make_unique_id(prefix: &str, content: &str) -> String {
    let h = Sha224::digest(format!("{prefix}:{content}"));
    format!(
        "{prefix}:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h)
    )
}

/// A policy's identity, as Felix names it in chains: `np/<ns>/<name>` or `gnp/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    /// Calico's kind short name: `np`, `gnp`, `knp`, ...
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl PolicyId {
    pub fn network_policy(namespace: &str, name: &str) -> PolicyId {
        PolicyId {
            kind: "np".into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn global(name: &str) -> PolicyId {
        PolicyId {
            kind: "gnp".into(),
            namespace: String::new(),
            name: name.into(),
        }
    }

    /// `np/ns/name` or `gnp/name`.
    pub fn id(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Which way traffic goes relative to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// A protocol as a rule names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProtocolMatch {
    Number(u8),
    Name(String),
}

/// ICMP type and optional code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpMatch {
    pub icmp_type: u8,
    pub code: Option<u8>,
}

/// A rule as the calculation hands it to rendering (Felix's `proto.Rule`): selectors already
/// replaced by the IDs of the IP sets that hold their members.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ParsedRule {
    /// `allow`, `deny`, `next-tier` (Pass) or `log`.
    pub action: String,
    pub ip_version: Option<u8>,
    pub protocol: Option<ProtocolMatch>,
    pub src_net: Vec<String>,
    pub src_ports: Vec<PortRange>,
    pub src_named_port_ipset_ids: Vec<String>,
    pub dst_net: Vec<String>,
    pub dst_ports: Vec<PortRange>,
    pub dst_named_port_ipset_ids: Vec<String>,
    pub icmp: Option<IcmpMatch>,
    pub src_ipset_ids: Vec<String>,
    pub dst_ipset_ids: Vec<String>,
    pub dst_ip_port_set_ids: Vec<String>,
    pub not_protocol: Option<ProtocolMatch>,
    pub not_src_net: Vec<String>,
    pub not_src_ports: Vec<PortRange>,
    pub not_dst_net: Vec<String>,
    pub not_dst_ports: Vec<PortRange>,
    pub not_icmp: Option<IcmpMatch>,
    pub not_src_ipset_ids: Vec<String>,
    pub not_dst_ipset_ids: Vec<String>,
    pub not_src_named_port_ipset_ids: Vec<String>,
    pub not_dst_named_port_ipset_ids: Vec<String>,
    /// `metadata.annotations` of the rule (rendered as comments).
    pub annotations: BTreeMap<String, String>,
    /// An opaque ID for the rule (used in NFLOG prefixes).
    pub rule_id: String,
}

/// A policy as rendering needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PolicyRules {
    pub inbound: Vec<ParsedRule>,
    pub outbound: Vec<ParsedRule>,
    pub untracked: bool,
    pub pre_dnat: bool,
    /// Staged policies are never programmed.
    pub staged: bool,
    /// The tier the policy belongs to (for NFLOG prefixes).
    pub tier: String,
}

/// A run of consecutive policies of one tier sharing a selector: rendered as one group chain
/// when it has more than one member.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyGroup {
    pub direction: Direction,
    pub policies: Vec<PolicyId>,
    pub selector: String,
    /// Which of `policies` are staged (skipped in rendering).
    pub staged: Vec<bool>,
}

/// One tier of an endpoint's policies, already grouped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TierPolicyGroups {
    pub name: String,
    /// `Deny` (default) or `Pass`.
    pub default_action: String,
    pub ingress: Vec<PolicyGroup>,
    pub egress: Vec<PolicyGroup>,
}

/// A `proto:port` (optionally `proto:cidr:port`) failsafe entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProtoPort {
    pub protocol: String,
    pub port: u16,
    pub net: Option<String>,
}

/// The settings rendering depends on (Calico's `rules.Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    pub workload_iface_prefixes: Vec<String>,
    pub mark_accept: u32,
    pub mark_pass: u32,
    pub mark_drop: u32,
    pub mark_scratch0: u32,
    pub mark_scratch1: u32,
    pub mark_endpoint: u32,
    pub mark_non_cali_endpoint: u32,
    pub vxlan_enabled: bool,
    pub vxlan_enabled_v6: bool,
    pub vxlan_port: u16,
    pub vxlan_vni: u32,
    pub ipip_enabled: bool,
    pub ipip_tunnel_address: Option<IpAddr>,
    pub vxlan_tunnel_address: Option<IpAddr>,
    pub vxlan_tunnel_address_v6: Option<IpAddr>,
    pub allow_vxlan_packets_from_workloads: bool,
    pub allow_ipip_packets_from_workloads: bool,
    /// LOG prefix (`calico-packet`).
    pub log_prefix: String,
    /// `DROP`, `ACCEPT` or `RETURN`.
    pub endpoint_to_host_action: String,
    /// `ACCEPT` or `RETURN`.
    pub filter_allow_action: String,
    /// `ACCEPT` or `RETURN`.
    pub mangle_allow_action: String,
    /// `DROP` or `REJECT`.
    pub filter_deny_action: String,
    pub failsafe_inbound_host_ports: Vec<ProtoPort>,
    pub failsafe_outbound_host_ports: Vec<ProtoPort>,
    pub disable_conntrack_invalid: bool,
    /// NATPortRange (`None` = not set).
    pub nat_port_range: Option<PortRange>,
    pub nat_outgoing_interface_filter: String,
    pub nat_outgoing_address: Option<IpAddr>,
    /// `IPPoolsOnly` or `IPPoolsAndHostIPs`.
    pub nat_outgoing_exclusions: String,
    /// `Drop`, `Reject` or `Disabled`.
    pub service_loop_prevention: String,
    pub kube_node_port_ranges: Vec<PortRange>,
    pub kube_ipvs_support_enabled: bool,
    pub flow_logs_enabled: bool,
    pub nftables: bool,
    /// LogActionRateLimit (`""` = no limit), e.g. `50/minute`.
    pub log_action_rate_limit: String,
    /// LogActionRateLimitBurst, used only with a rate limit.
    pub log_action_rate_limit_burst: u16,
}

impl Default for RulesConfig {
    /// Calico's defaults with the default mark mask 0xffff0000.
    fn default() -> Self {
        let pp = |protocol: &str, port: u16| ProtoPort {
            protocol: protocol.into(),
            port,
            net: None,
        };
        RulesConfig {
            workload_iface_prefixes: vec!["cali".into()],
            mark_accept: 0x10000,
            mark_pass: 0x20000,
            mark_drop: 0x40000,
            mark_scratch0: 0x80000,
            mark_scratch1: 0x100000,
            mark_endpoint: 0xffe00000,
            mark_non_cali_endpoint: 0x200000,
            vxlan_enabled: false,
            vxlan_enabled_v6: false,
            vxlan_port: 4789,
            vxlan_vni: 4096,
            ipip_enabled: false,
            ipip_tunnel_address: None,
            vxlan_tunnel_address: None,
            vxlan_tunnel_address_v6: None,
            allow_vxlan_packets_from_workloads: false,
            allow_ipip_packets_from_workloads: false,
            log_prefix: "calico-packet".into(),
            endpoint_to_host_action: "DROP".into(),
            filter_allow_action: "ACCEPT".into(),
            mangle_allow_action: "ACCEPT".into(),
            filter_deny_action: "DROP".into(),
            failsafe_inbound_host_ports: vec![
                pp("tcp", 22),
                pp("udp", 68),
                pp("tcp", 179),
                pp("tcp", 2379),
                pp("tcp", 2380),
                pp("tcp", 5473),
                pp("tcp", 6443),
                pp("tcp", 6666),
                pp("tcp", 6667),
            ],
            failsafe_outbound_host_ports: vec![
                pp("udp", 53),
                pp("udp", 67),
                pp("tcp", 179),
                pp("tcp", 2379),
                pp("tcp", 2380),
                pp("tcp", 5473),
                pp("tcp", 6443),
                pp("tcp", 6666),
                pp("tcp", 6667),
            ],
            disable_conntrack_invalid: false,
            nat_port_range: None,
            nat_outgoing_interface_filter: String::new(),
            nat_outgoing_address: None,
            nat_outgoing_exclusions: "IPPoolsOnly".into(),
            service_loop_prevention: "Drop".into(),
            kube_node_port_ranges: vec![PortRange {
                first: 30000,
                last: 32767,
            }],
            kube_ipvs_support_enabled: false,
            flow_logs_enabled: false,
            nftables: false,
            log_action_rate_limit: String::new(),
            log_action_rate_limit_burst: 5,
        }
    }
}

impl RulesConfig {
    /// The four mark bits Calico clears together (`0x1b0000` by default).
    pub fn all_calico_marks(&self) -> u32 {
        self.mark_accept | self.mark_pass | self.mark_scratch0 | self.mark_scratch1
    }

    /// The action for "allowed" in filter chains.
    pub fn filter_allow(&self) -> Action {
        if self.filter_allow_action == "RETURN" {
            Action::Return
        } else {
            Action::Accept
        }
    }

    /// The action for "allowed" in mangle chains.
    pub fn mangle_allow(&self) -> Action {
        if self.mangle_allow_action == "RETURN" {
            Action::Return
        } else {
            Action::Accept
        }
    }

    /// The action for "denied".
    pub fn filter_deny(&self) -> Action {
        if self.filter_deny_action == "REJECT" {
            Action::Reject { with: None }
        } else {
            Action::Drop
        }
    }

    /// `cali+` style wildcards for the workload interface prefixes.
    pub fn workload_iface_wildcards(&self) -> Vec<String> {
        self.workload_iface_prefixes
            .iter()
            .map(|p| format!("{p}+"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_calico() {
        assert_eq!(
            ipset_name(4, "s:abcdefghijklmnopqrstuvwxyz0123456789", false),
            "cali40s:abcdefghijklmnopqrstuvw"
        );
        assert_eq!(ipset_name(4, "s:abc", true), "cali40s-abc");
        assert_eq!(
            ipset_name(6, IPSET_ID_NETWORK_POOLS, false),
            "cali60network-ip-pools"
        );
        assert_eq!(
            length_limited_id("cali-pi-", "np/ns/x", 28),
            "cali-pi-np/ns/x"
        );
        let long = length_limited_id("cali-pi-", "np/some-namespace/a-long-policy-name", 28);
        assert_eq!(long.len(), 28);
        assert!(long.starts_with("cali-pi-_"));
        assert_eq!(PolicyId::network_policy("ns", "p").id(), "np/ns/p");
        assert_eq!(PolicyId::global("g").id(), "gnp/g");
    }
}
