//! IPReservation and IPAMConfiguration.

use serde::{Deserialize, Serialize};

use crate::resource::{IpReservation, IpamConfiguration, KindRules};
use crate::validation::{Errors, Path};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpReservationSpec {
    #[serde(
        default,
        rename = "reservedCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reserved_cidrs: Vec<String>,
}

impl KindRules for IpReservation {
    fn check(&self, errs: &mut Errors) {
        let p = Path::root("spec").field("reservedCIDRs");
        for (i, c) in self.spec.reserved_cidrs.iter().enumerate() {
            if let Err(e) = crate::validation::parse_cidr_or_ip(c) {
                errs.add(p.index(i), e);
            }
        }
    }
}

/// KubeVirt VM address persistence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmAddressPersistence {
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConfigurationSpec {
    #[serde(default)]
    pub strict_affinity: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocks_per_host: Option<i64>,
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
    #[serde(
        default,
        rename = "kubeVirtVMAddressPersistence",
        skip_serializing_if = "Option::is_none"
    )]
    pub kube_virt_vm_address_persistence: Option<VmAddressPersistence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_cooldown_seconds: Option<i64>,
}

fn default_true() -> bool {
    true
}

impl Default for IpamConfigurationSpec {
    fn default() -> Self {
        IpamConfigurationSpec {
            strict_affinity: false,
            max_blocks_per_host: None,
            auto_allocate_blocks: true,
            kube_virt_vm_address_persistence: None,
            ip_cooldown_seconds: None,
        }
    }
}

impl KindRules for IpamConfiguration {
    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        if self.metadata.name != "default" {
            errs.add(
                "metadata.name",
                "IPAMConfiguration is a singleton: its name must be \"default\"",
            );
        }
        if let Some(m) = s.max_blocks_per_host {
            if !(0..=1_000_000).contains(&m) {
                errs.add(
                    p.field("maxBlocksPerHost"),
                    format!("{m} is outside 0..1000000"),
                );
            } else if m > 0 && !s.strict_affinity {
                errs.add(
                    p.field("maxBlocksPerHost"),
                    "a per-host block limit requires strictAffinity: true",
                );
            }
        }
        if !s.strict_affinity && !s.auto_allocate_blocks {
            errs.add(
                p.field("autoAllocateBlocks"),
                "autoAllocateBlocks: false requires strictAffinity: true (otherwise nodes could never get addresses)",
            );
        }
        if let Some(c) = s.ip_cooldown_seconds
            && !(0..=1200).contains(&c)
        {
            errs.add(
                p.field("ipCooldownSeconds"),
                format!("{c} is outside 0..1200"),
            );
        }
    }
}
