//! Where the datastore is: Calico's CalicoAPIConfig file (`--config`, default
//! `/etc/calico/calicoctl.cfg`), else the environment (`DATASTORE_TYPE`, `ETCD_ENDPOINTS`,
//! `ETCD_*_FILE`, `KUBECONFIG`, each also read with a `CALICO_` prefix, which wins).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use calico_datastore::ResourceClient;
use calico_datastore::config::DatastoreConfig;
use calico_datastore::etcd::EtcdConfig;
use serde_json::Value;

pub const DEFAULT_CONFIG: &str = "/etc/calico/calicoctl.cfg";

/// Reads the datastore settings: the file when it exists (a missing non-default file is an
/// error), the environment otherwise.
pub fn datastore_config(path: &Path) -> Result<DatastoreConfig> {
    if !path.exists() {
        if path != Path::new(DEFAULT_CONFIG) {
            bail!(
                "Error reading config file: {} (it does not exist; check --config)",
                path.display()
            );
        }
        return Ok(DatastoreConfig::from_env()?);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Error reading config file: {}", path.display()))?;
    from_file_text(&text).with_context(|| format!("in config file {}", path.display()))
}

/// Parses a CalicoAPIConfig document.
pub fn from_file_text(text: &str) -> Result<DatastoreConfig> {
    let docs = calico_api::codec::parse_documents(text)?;
    let [doc] = docs.as_slice() else {
        bail!("expected one CalicoAPIConfig document");
    };
    if doc.get("kind").and_then(Value::as_str) != Some("CalicoAPIConfig") {
        bail!("kind must be CalicoAPIConfig (apiVersion projectcalico.org/v3)");
    }
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    let field = |k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match field("datastoreType").as_deref() {
        Some("etcdv3") | None if field("etcdEndpoints").is_some() => {
            let endpoints = field("etcdEndpoints").unwrap_or_default();
            let mut cfg = EtcdConfig::new(
                endpoints
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_string),
            );
            cfg.ca_cert_file = field("etcdCACertFile").map(PathBuf::from);
            cfg.cert_file = field("etcdCertFile").map(PathBuf::from);
            cfg.key_file = field("etcdKeyFile").map(PathBuf::from);
            cfg.username = field("etcdUsername");
            cfg.password = field("etcdPassword");
            Ok(DatastoreConfig::Etcd(cfg))
        }
        Some("etcdv3") => bail!("spec.etcdEndpoints is required with datastoreType etcdv3"),
        Some("kubernetes") | None => Ok(DatastoreConfig::Kubernetes {
            kubeconfig: field("kubeconfig"),
        }),
        Some(other) => {
            bail!("spec.datastoreType {other:?} is not supported; use etcdv3 or kubernetes")
        }
    }
}

/// A client on the configured datastore.
pub async fn connect(path: &Path) -> Result<ResourceClient> {
    let cfg = datastore_config(path)?;
    let ds = cfg.connect().await?;
    Ok(ResourceClient::new(ds))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_calicos_config_file() {
        let cfg = from_file_text(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: http://10.0.0.1:2379, http://10.0.0.2:2379\n  etcdCACertFile: /etc/calico/ca.pem\n",
        )
        .unwrap();
        let DatastoreConfig::Etcd(e) = cfg else {
            panic!("not etcd: {cfg:?}")
        };
        assert_eq!(
            e.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(e.ca_cert_file, Some(PathBuf::from("/etc/calico/ca.pem")));
        assert!(from_file_text("kind: Other\n").is_err());
        assert!(
            from_file_text("kind: CalicoAPIConfig\nspec: {datastoreType: etcdv3}\n")
                .unwrap_err()
                .to_string()
                .contains("etcdEndpoints")
        );
    }
}
