//! IPPool (`ippool.go`, `validateIPPoolSpec`, the CRD's CEL rules, clientv3 defaulting).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::is_false;
use crate::meta::Condition;
use crate::resource::{IpPool, KindRules};
use crate::validation::{Errors, Path, check_selector_no_global, parse_cidr_or_ip};

/// IPIP / VXLAN encapsulation mode of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    CrossSubnet,
}

impl std::fmt::Display for EncapMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncapMode::Never => "Never",
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
        })
    }
}

/// What addresses from a pool may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

/// Whether IPAM picks the pool on its own (`Automatic`) or only when asked for it by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AssignmentMode {
    #[default]
    Automatic,
    Manual,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    #[serde(default)]
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub nat_outgoing: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    #[serde(default, rename = "disableBGPExport", skip_serializing_if = "is_false")]
    pub disable_bgp_export: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpPoolStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Default block size: /26 for IPv4, /122 for IPv6.
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

impl IpPoolSpec {
    /// The pool's network, when `cidr` parses.
    pub fn network(&self) -> Option<IpNet> {
        parse_cidr_or_ip(&self.cidr).ok()
    }

    /// The block size after defaulting.
    pub fn effective_block_size(&self) -> u8 {
        match (self.block_size, self.network()) {
            (Some(b), _) => u8::try_from(b).unwrap_or(0),
            (None, Some(IpNet::V6(_))) => DEFAULT_BLOCK_SIZE_V6,
            (None, _) => DEFAULT_BLOCK_SIZE_V4,
        }
    }

    pub fn ipip(&self) -> EncapMode {
        self.ipip_mode.unwrap_or_default()
    }

    pub fn vxlan(&self) -> EncapMode {
        self.vxlan_mode.unwrap_or_default()
    }

    /// Allowed uses after defaulting (`[Workload, Tunnel]`).
    pub fn uses(&self) -> Vec<AllowedUse> {
        if self.allowed_uses.is_empty() {
            vec![AllowedUse::Workload, AllowedUse::Tunnel]
        } else {
            self.allowed_uses.clone()
        }
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl KindRules for IpPool {
    fn defaults(&mut self) {
        let s = &mut self.spec;
        if let Some(n) = s.network() {
            // Canonical text (e.g. `fd00:0::/48` becomes `fd00::/48`); a bare address becomes
            // a full-length prefix.
            s.cidr = n.to_string();
        }
        if s.block_size.is_none() {
            s.block_size = Some(i64::from(s.effective_block_size()));
        }
        s.ipip_mode.get_or_insert(EncapMode::Never);
        s.vxlan_mode.get_or_insert(EncapMode::Never);
        if s.node_selector.is_empty() {
            s.node_selector = "all()".into();
        }
        if s.allowed_uses.is_empty() {
            s.allowed_uses = vec![AllowedUse::Workload, AllowedUse::Tunnel];
        }
        s.assignment_mode.get_or_insert(AssignmentMode::Automatic);
    }

    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        let net = if s.cidr.is_empty() {
            errs.add(
                p.field("cidr"),
                "an IP pool needs a CIDR, e.g. 10.244.0.0/16",
            );
            None
        } else {
            match parse_cidr_or_ip(&s.cidr) {
                Err(e) => {
                    errs.add(p.field("cidr"), e);
                    None
                }
                Ok(n) if n.trunc() != n => {
                    errs.add(
                        p.field("cidr"),
                        format!(
                            "{:?} is not strictly masked (host bits are set); use {}",
                            s.cidr,
                            n.trunc()
                        ),
                    );
                    None
                }
                Ok(n) => Some(n),
            }
        };
        if let Some(n) = net {
            let v4 = matches!(n, IpNet::V4(_));
            let link_local: IpNet = if v4 {
                IpNet::V4(ipnet::Ipv4Net::new_assert([169, 254, 0, 0].into(), 16))
            } else {
                IpNet::V6(ipnet::Ipv6Net::new_assert(
                    [0xfe80, 0, 0, 0, 0, 0, 0, 0].into(),
                    10,
                ))
            };
            if overlaps(&n, &link_local) {
                errs.add(
                    p.field("cidr"),
                    format!(
                        "{n} overlaps the link-local range {link_local}, which Calico reserves"
                    ),
                );
            }
            if let Some(b) = s.block_size {
                let (lo, hi) = if v4 { (20, 32) } else { (116, 128) };
                if !(lo..=hi).contains(&b) {
                    errs.add(
                        p.field("blockSize"),
                        format!(
                            "{b} is outside {lo}..{hi} for an {} pool",
                            if v4 { "IPv4" } else { "IPv6" }
                        ),
                    );
                } else if i64::from(n.prefix_len()) > b && !s.disabled {
                    errs.add(
                        p.field("blockSize"),
                        format!(
                            "the pool's prefix /{} is smaller than its block size /{b}; use a block size of at least {} or a larger pool",
                            n.prefix_len(),
                            n.prefix_len()
                        ),
                    );
                }
            }
            if !v4 && s.ipip() != EncapMode::Never {
                errs.add(
                    p.field("ipipMode"),
                    "IPIP is not supported on an IPv6 pool; use vxlanMode",
                );
            }
        }
        if s.ipip() != EncapMode::Never && s.vxlan() != EncapMode::Never {
            errs.add(
                p.field("vxlanMode"),
                "ipipMode and vxlanMode cannot both be enabled; set one of them to Never",
            );
        }
        if !s.node_selector.is_empty() {
            errs.check(
                p.field("nodeSelector"),
                check_selector_no_global(&s.node_selector),
            );
        }
        if !s.namespace_selector.is_empty() {
            errs.check(
                p.field("namespaceSelector"),
                check_selector_no_global(&s.namespace_selector),
            );
        }
        let uses = &s.allowed_uses;
        let mut seen = std::collections::BTreeSet::new();
        for (i, u) in uses.iter().enumerate() {
            if !seen.insert(u) {
                errs.add(
                    p.field("allowedUses").index(i),
                    format!("{u:?} is listed twice"),
                );
            }
        }
        if uses.contains(&AllowedUse::LoadBalancer) {
            if uses.contains(&AllowedUse::Workload) || uses.contains(&AllowedUse::Tunnel) {
                errs.add(
                    p.field("allowedUses"),
                    "LoadBalancer cannot be combined with Workload or Tunnel; use a separate pool",
                );
            }
            if !(s.node_selector.is_empty() || s.node_selector.trim() == "all()") {
                errs.add(
                    p.field("nodeSelector"),
                    "a LoadBalancer pool must select all() nodes",
                );
            }
            if s.ipip() != EncapMode::Never || s.vxlan() != EncapMode::Never {
                errs.add(
                    p.field("allowedUses"),
                    "a LoadBalancer pool cannot use IPIP or VXLAN encapsulation",
                );
            }
            if s.disable_bgp_export {
                errs.add(
                    p.field("disableBGPExport"),
                    "a LoadBalancer pool must be exported over BGP; remove disableBGPExport",
                );
            }
        }
        if uses.contains(&AllowedUse::Tunnel) && !s.namespace_selector.is_empty() {
            errs.add(
                p.field("namespaceSelector"),
                "a pool that allows Tunnel addresses cannot have a namespaceSelector",
            );
        }
    }
}
