//! `calicoctl ipam configure`: IPAM settings (`/calico/ipam/v2/config`) through the IPAM
//! library, with the messages of Calico's `commands/ipam/configure.go`.

use anyhow::{Result, anyhow, bail};
use calico_ipam::Ipam;

/// The flags as typed (parsed here, so that bad values get Calico's messages).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub strict_affinity: Option<String>,
    pub max_blocks_per_host: Option<String>,
    pub kubevirt_ip_persistence: Option<String>,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Applies the given settings and says what was set.
pub async fn configure(ipam: &Ipam, s: &Settings) -> Result<String> {
    let given = |o: &Option<String>| o.clone().filter(|v| !v.is_empty());
    let strict = match given(&s.strict_affinity) {
        Some(v) => Some(
            parse_bool(&v)
                .ok_or_else(|| anyhow!("invalid value. Use true or false to set strictaffinity"))?,
        ),
        None => None,
    };
    let max_blocks = match given(&s.max_blocks_per_host) {
        Some(v) => Some(
            v.parse::<u32>()
                .map_err(|_| anyhow!("invalid value for maxblockhost. Use a valid number"))?,
        ),
        None => None,
    };
    let persistence = match given(&s.kubevirt_ip_persistence).as_deref() {
        Some(v @ ("Enabled" | "Disabled")) => Some(v.to_string()),
        Some(_) => bail!("invalid value for --kubevirt-ip-persistence. Use Enabled or Disabled"),
        None => None,
    };
    if strict.is_none() && max_blocks.is_none() && persistence.is_none() {
        bail!(
            "at least one configuration option must be specified: --strictaffinity, --max-blocks-per-host or --kubevirt-ip-persistence"
        );
    }

    let current = ipam.config().await.map_err(|e| anyhow!("error: {e}"))?;
    let mut cfg = current.clone();
    if let Some(v) = strict {
        cfg.strict_affinity = v;
    }
    if let Some(v) = max_blocks {
        cfg.max_blocks_per_host = v;
    }
    if let Some(v) = &persistence {
        cfg.kube_virt_vm_address_persistence = Some(v.clone());
    }
    // Calico's `SetIPAMConfig` rules, in its words, before the library checks them again.
    if !cfg.strict_affinity && !cfg.auto_allocate_blocks {
        bail!("error: Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time");
    }
    if cfg.max_blocks_per_host > 0 && !cfg.strict_affinity {
        bail!(
            "error: MaxBlocksPerHost requires StrictAffinity to be enabled (add --strictaffinity=true)"
        );
    }
    if cfg != current {
        ipam.set_config(&cfg)
            .await
            .map_err(|e| anyhow!("error: {e}"))?;
    }
    let mut out = String::new();
    if let Some(v) = strict {
        out.push_str(&format!("Successfully set StrictAffinity to: {v}\n"));
    }
    if let Some(v) = max_blocks {
        out.push_str(&format!("Successfully set MaxBlocksPerHost to: {v}\n"));
    }
    if let Some(v) = persistence {
        out.push_str(&format!(
            "Successfully set KubeVirtVMAddressPersistence to: {v}\n"
        ));
    }
    Ok(out)
}
