//! Where a component finds its datastore and its own node name, read the way Calico's
//! components read them: `DATASTORE_TYPE` (`etcdv3` | `kubernetes`), `ETCD_ENDPOINTS` and the
//! `ETCD_*` TLS files (each also with a `CALICO_` prefix), and the node name from
//! `/var/lib/calico/nodename`, `NODENAME`, or the hostname.

use std::path::Path;
use std::sync::Arc;

use crate::Datastore;
use crate::error::{DatastoreError, Result};
use crate::etcd::{EtcdConfig, EtcdDatastore};
use crate::memory::MemoryDatastore;

/// Calico's default nodename file.
pub const NODENAME_FILE: &str = "/var/lib/calico/nodename";

/// Which datastore to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreConfig {
    /// Boxed: etcd's settings are a few hundred bytes, the other variants a few words.
    Etcd(Box<EtcdConfig>),
    /// The Kubernetes API (CRDs); not available in this build.
    Kubernetes { kubeconfig: Option<String> },
    /// A private in-memory store (tests and demos only: nothing is shared).
    Memory,
}

fn var(name: &str) -> Option<String> {
    std::env::var(format!("CALICO_{name}"))
        .or_else(|_| std::env::var(name))
        .ok()
        .filter(|v| !v.is_empty())
}

impl DatastoreConfig {
    /// Reads the environment. With no `DATASTORE_TYPE`, etcd is used when `ETCD_ENDPOINTS` is
    /// set and Kubernetes otherwise, as calicoctl does.
    pub fn from_env() -> Result<DatastoreConfig> {
        let kind = var("DATASTORE_TYPE");
        match kind.as_deref() {
            Some("etcdv3") | None if var("ETCD_ENDPOINTS").is_some() => EtcdConfig::from_env()
                .map(|c| DatastoreConfig::Etcd(Box::new(c)))
                .ok_or_else(|| bad_config("ETCD_ENDPOINTS is empty")),
            Some("etcdv3") => Err(bad_config(
                "DATASTORE_TYPE is etcdv3 but ETCD_ENDPOINTS is not set; set it, e.g. ETCD_ENDPOINTS=http://127.0.0.1:2379",
            )),
            Some("kubernetes") | None => Ok(DatastoreConfig::Kubernetes {
                kubeconfig: var("KUBECONFIG"),
            }),
            Some("memory") => Ok(DatastoreConfig::Memory),
            Some(other) => Err(bad_config(&format!(
                "DATASTORE_TYPE {other:?} is not supported; use etcdv3 or kubernetes"
            ))),
        }
    }

    /// Connects to the configured datastore.
    pub async fn connect(&self) -> Result<Arc<dyn Datastore>> {
        match self {
            DatastoreConfig::Etcd(cfg) => Ok(Arc::new(EtcdDatastore::connect(cfg).await?)),
            DatastoreConfig::Memory => Ok(Arc::new(MemoryDatastore::new())),
            DatastoreConfig::Kubernetes { .. } => Err(bad_config(
                "the Kubernetes API datastore is not available in this build of calico-rs; set DATASTORE_TYPE=etcdv3 and ETCD_ENDPOINTS",
            )),
        }
    }
}

fn bad_config(reason: &str) -> DatastoreError {
    DatastoreError::Config {
        reason: reason.into(),
    }
}

/// This node's name: the first of an explicit value, the nodename file, `NODENAME`, and the
/// hostname. Calico writes the nodename file when the node starts so every component agrees.
pub fn node_name(explicit: Option<&str>, nodename_file: &Path) -> Result<String> {
    if let Some(n) = explicit.filter(|n| !n.is_empty()) {
        return Ok(n.to_string());
    }
    if let Ok(s) = std::fs::read_to_string(nodename_file) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(s.to_string());
        }
    }
    if let Some(n) = var("NODENAME") {
        return Ok(n);
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            bad_config(
                "cannot determine the node name: set NODENAME or write /var/lib/calico/nodename",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_prefers_explicit_then_file() {
        let dir = std::env::temp_dir().join(format!("calico-rs-nodename-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nodename");
        std::fs::write(&file, "node-from-file\n").unwrap();
        assert_eq!(node_name(Some("explicit"), &file).unwrap(), "explicit");
        assert_eq!(node_name(None, &file).unwrap(), "node-from-file");
        let missing = dir.join("missing");
        assert!(!node_name(None, &missing).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
