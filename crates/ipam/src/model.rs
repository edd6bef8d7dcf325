//! The other IPAM records, as Calico stores them: block affinities, handles and the IPAM
//! configuration (`model.BlockAffinity`, `model.IPAMHandle`, `model.IPAMConfig`).

use std::collections::BTreeMap;

use calico_api::kinds::IpamConfigurationSpec;
use serde::{Deserialize, Serialize};

/// The life of an affinity: claimed (pending), confirmed once the block exists, and marked
/// pending deletion while it is released. Only confirmed affinities mean ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AffinityState {
    #[serde(rename = "confirmed")]
    Confirmed,
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "pendingDeletion")]
    PendingDeletion,
    /// Very old installs stored an empty value; Calico treats it as confirmed.
    #[serde(rename = "")]
    Legacy,
}

/// `/calico/ipam/v2/host/<host>/ipv4/block/<cidr>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockAffinity {
    #[serde(default = "legacy")]
    pub state: AffinityState,
    #[serde(default)]
    pub deleted: bool,
}

fn legacy() -> AffinityState {
    AffinityState::Legacy
}

impl BlockAffinity {
    pub fn new(state: AffinityState) -> BlockAffinity {
        BlockAffinity {
            state,
            deleted: false,
        }
    }

    pub fn is_confirmed(&self) -> bool {
        matches!(self.state, AffinityState::Confirmed | AffinityState::Legacy) && !self.deleted
    }

    /// Reads a stored affinity; an empty value is a legacy confirmed one.
    pub fn from_bytes(bytes: &[u8]) -> Result<BlockAffinity, serde_json::Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(BlockAffinity::new(AffinityState::Legacy));
        }
        serde_json::from_slice(bytes)
    }
}

/// `/calico/ipam/v2/handle/<id>`: how many addresses the handle holds in each block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    #[serde(default)]
    pub block: BTreeMap<String, usize>,
    #[serde(default)]
    pub deleted: bool,
}

/// `/calico/ipam/v2/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(rename = "strict_affinity", default)]
    pub strict_affinity: bool,
    #[serde(rename = "auto_allocate_blocks", default)]
    pub auto_allocate_blocks: bool,
    #[serde(rename = "maxBlocksPerHost", default, skip_serializing_if = "is_zero")]
    pub max_blocks_per_host: u32,
    #[serde(
        rename = "kubeVirtVMAddressPersistence",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kube_virt_vm_address_persistence: Option<String>,
    #[serde(rename = "ipCooldownSeconds", default, skip_serializing_if = "is_zero")]
    pub ip_cooldown_seconds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for IpamConfig {
    /// Calico's defaults when nothing is stored.
    fn default() -> IpamConfig {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            kube_virt_vm_address_persistence: None,
            ip_cooldown_seconds: 0,
        }
    }
}

/// Calico's per-host block limit when neither the request nor the configuration sets one.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

impl IpamConfig {
    /// The same settings expressed by a v3 IPAMConfiguration.
    pub fn from_spec(spec: &IpamConfigurationSpec) -> IpamConfig {
        IpamConfig {
            strict_affinity: spec.strict_affinity,
            auto_allocate_blocks: spec.auto_allocate_blocks,
            max_blocks_per_host: spec
                .max_blocks_per_host
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(0),
            kube_virt_vm_address_persistence: spec
                .kube_virt_vm_address_persistence
                .map(|p| format!("{p:?}")),
            ip_cooldown_seconds: spec
                .ip_cooldown_seconds
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
        }
    }

    /// The library's consistency rule: without strict affinity, blocks must be claimable.
    pub fn check(&self) -> Result<(), String> {
        if !self.strict_affinity && !self.auto_allocate_blocks {
            return Err(
                "autoAllocateBlocks: false requires strictAffinity: true (otherwise nodes could never get addresses)".into(),
            );
        }
        if self.max_blocks_per_host > 0 && !self.strict_affinity {
            return Err("a per-host block limit requires strictAffinity: true".into());
        }
        Ok(())
    }

    /// The block cap for a request: the smaller non-zero of the request's and the
    /// configuration's, else 20.
    pub fn block_cap(&self, requested: u32) -> u32 {
        match (requested, self.max_blocks_per_host) {
            (0, 0) => DEFAULT_MAX_BLOCKS_PER_HOST,
            (r, 0) => r,
            (0, c) => c,
            (r, c) => r.min(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_records_use_calicos_json() {
        let a =
            BlockAffinity::from_bytes(br#"{"state":"pendingDeletion","deleted":false}"#).unwrap();
        assert_eq!(a.state, AffinityState::PendingDeletion);
        assert!(BlockAffinity::from_bytes(b"").unwrap().is_confirmed());
        assert!(BlockAffinity::from_bytes(b"{}").unwrap().is_confirmed());
        assert_eq!(
            serde_json::to_string(&BlockAffinity::new(AffinityState::Pending)).unwrap(),
            r#"{"state":"pending","deleted":false}"#
        );
        let h: Handle =
            serde_json::from_str(r#"{"block":{"10.0.0.0/26":2},"deleted":false}"#).unwrap();
        assert_eq!(h.block["10.0.0.0/26"], 2);
        let c: IpamConfig = serde_json::from_str(
            r#"{"strict_affinity":true,"auto_allocate_blocks":false,"maxBlocksPerHost":4}"#,
        )
        .unwrap();
        assert_eq!(c.block_cap(0), 4);
        assert_eq!(c.block_cap(2), 2);
        assert!(c.check().is_ok());
        assert_eq!(IpamConfig::default().block_cap(0), 20);
        let bad = IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: false,
            ..IpamConfig::default()
        };
        assert!(bad.check().is_err());
    }
}
