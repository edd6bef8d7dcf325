//! Where the datastore is: Calico's CalicoAPIConfig file (`--config`, default
//! `/etc/calico/calicoctl.cfg`), else the environment (`DATASTORE_TYPE`, `ETCD_ENDPOINTS`,
//! `ETCD_*_FILE`, `KUBECONFIG`, each also read with a `CALICO_` prefix, which wins).
//!
//! The file is read strictly, as Calico's `yaml.UnmarshalStrict` does: an unknown field or
//! another apiVersion/kind is an error naming it. Inline PEM (`etcdCACert`, `etcdCert`,
//! `etcdKey`) is honoured: the datastore crate reads TLS material from files, so the PEM is
//! written to a private temporary directory for the moment of connecting, then removed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use calico_datastore::ResourceClient;
use calico_datastore::config::DatastoreConfig;
use calico_datastore::etcd::EtcdConfig;
use serde_json::Value;

pub const DEFAULT_CONFIG: &str = "/etc/calico/calicoctl.cfg";

/// Every field of Calico's `CalicoAPIConfigSpec` (`libcalico-go/lib/apiconfig/apiconfig.go`).
const SPEC_FIELDS: &[&str] = &[
    "datastoreType",
    "etcdEndpoints",
    "etcdDiscoverySrv",
    "etcdUsername",
    "etcdPassword",
    "etcdKeyFile",
    "etcdCertFile",
    "etcdCACertFile",
    "etcdKey",
    "etcdCert",
    "etcdCACert",
    "kubeconfig",
    "k8sAPIEndpoint",
    "k8sKeyFile",
    "k8sCertFile",
    "k8sCAFile",
    "k8sAPIToken",
    "k8sInsecureSkipTLSVerify",
    "k8sDisableNodePoll",
    "usePodCIDR",
    "kubeconfigInline",
    "k8sClientQPS",
    "k8sClientBurst",
    "k8sCurrentContext",
    "calicoAPIGroup",
];

/// The fields of Kubernetes' ObjectMeta, which the file's `metadata` is.
const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Reads the settings: the file when it exists (a missing non-default file is an error),
/// the environment otherwise.
pub fn load(path: &Path) -> Result<DatastoreConfig> {
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
    from_file_text(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn unknown_fields(obj: &serde_json::Map<String, Value>, known: &[&str], at: &str) -> Result<()> {
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        bail!(
            "field in document is not recognized or is in the wrong location: {at}{k} (valid fields: {})",
            known.join(", ")
        );
    }
    Ok(())
}

/// Parses a CalicoAPIConfig document.
pub fn from_file_text(text: &str) -> Result<DatastoreConfig> {
    let docs = calico_api::codec::parse_documents(text)?;
    let [doc] = docs.as_slice() else {
        bail!(
            "expected one CalicoAPIConfig document, found {}",
            docs.len()
        );
    };
    let Value::Object(top) = doc else {
        bail!("expected a CalicoAPIConfig object (apiVersion, kind, metadata, spec)");
    };
    unknown_fields(top, &["apiVersion", "kind", "metadata", "spec"], "")?;
    let api_version = top.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != calico_api::resource::API_VERSION {
        bail!(
            "unknown APIVersion '{api_version}': set apiVersion: {}",
            calico_api::resource::API_VERSION
        );
    }
    let kind = top.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "CalicoAPIConfig" {
        bail!("expected kind 'CalicoAPIConfig', got '{kind}'");
    }
    match top.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => unknown_fields(m, METADATA_FIELDS, "metadata.")?,
        Some(_) => bail!("metadata must be an object (e.g. metadata: {{}})"),
    }
    let spec = match top.get("spec") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(s)) => s.clone(),
        Some(_) => bail!("spec must be an object holding datastoreType, etcdEndpoints, ..."),
    };
    unknown_fields(&spec, SPEC_FIELDS, "spec.")?;
    let field = |k: &str| -> Result<Option<String>> {
        match spec.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => bail!("spec.{k} must be a string, not {other}"),
        }
    };
    // Inline PEM comes from the file only, never from the environment, as in Calico.
    let (ca_pem, cert_pem, key_pem) = (field("etcdCACert")?, field("etcdCert")?, field("etcdKey")?);
    let inline = ca_pem.is_some() || cert_pem.is_some() || key_pem.is_some();
    let datastore = match field("datastoreType")?.as_deref() {
        Some("etcdv3") | None if field("etcdEndpoints")?.is_some() => {
            let endpoints = field("etcdEndpoints")?.unwrap_or_default();
            let mut cfg = EtcdConfig::new(
                endpoints
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_string),
            );
            cfg.ca_cert_file = field("etcdCACertFile")?.map(PathBuf::from);
            cfg.cert_file = field("etcdCertFile")?.map(PathBuf::from);
            cfg.key_file = field("etcdKeyFile")?.map(PathBuf::from);
            cfg.username = field("etcdUsername")?;
            cfg.password = field("etcdPassword")?;
            let files =
                cfg.ca_cert_file.is_some() || cfg.cert_file.is_some() || cfg.key_file.is_some();
            if files && inline {
                // Calico: "Cannot mix inline certificate-key and certificate / key files".
                bail!(
                    "cannot mix inline certificate-key (etcdCACert, etcdCert, etcdKey) and certificate / key files (etcdCACertFile, etcdCertFile, etcdKeyFile); use one or the other"
                );
            }
            if cert_pem.is_some() != key_pem.is_some() {
                bail!("set both spec.etcdCert and spec.etcdKey for client TLS, or neither");
            }
            cfg.ca_cert_pem = ca_pem;
            cfg.cert_pem = cert_pem;
            cfg.key_pem = key_pem;
            DatastoreConfig::Etcd(Box::new(cfg))
        }
        Some("etcdv3") => bail!("spec.etcdEndpoints is required with datastoreType etcdv3"),
        Some("kubernetes") | None => DatastoreConfig::Kubernetes {
            kubeconfig: field("kubeconfig")?,
        },
        Some(other) => {
            bail!("spec.datastoreType {other:?} is not supported; use etcdv3 or kubernetes")
        }
    };
    Ok(datastore)
}

/// A client on the configured datastore.
pub async fn connect(path: &Path) -> Result<ResourceClient> {
    let ds = load(path)?.connect().await?;
    Ok(ResourceClient::new(ds))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HEAD: &str = "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\n";

    fn err(text: &str) -> String {
        format!("{:#}", from_file_text(text).unwrap_err())
    }

    #[test]
    fn reads_calicos_config_file() {
        let cfg = from_file_text(&format!(
            "{HEAD}spec:\n  datastoreType: etcdv3\n  etcdEndpoints: http://10.0.0.1:2379, http://10.0.0.2:2379\n  etcdCACertFile: /etc/calico/ca.pem\n"
        ))
        .unwrap();
        let DatastoreConfig::Etcd(e) = cfg else {
            panic!("not etcd: {cfg:?}")
        };
        assert_eq!(
            e.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(e.ca_cert_file, Some(PathBuf::from("/etc/calico/ca.pem")));
        assert!(err(&format!("{HEAD}spec: {{datastoreType: etcdv3}}\n")).contains("etcdEndpoints"));
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_named() {
        assert_eq!(
            err(&format!(
                "{HEAD}spec:\n  etcdEndpoints: http://e:2379\n  etcdEndpoint: http://x:2379\n"
            ))
            .split(" (valid fields")
            .next()
            .unwrap(),
            "field in document is not recognized or is in the wrong location: spec.etcdEndpoint"
        );
        assert!(
            err(&format!("{HEAD}spec: {{}}\nextra: 1\n"))
                .contains("is not recognized or is in the wrong location: extra"),
        );
        assert!(
            err(&format!("{HEAD}  nmae: x\nspec: {{}}\n").replace("metadata: {}\n", "metadata:\n"))
                .contains("metadata.nmae"),
        );
        assert_eq!(
            err("apiVersion: projectcalico.org/v1\nkind: CalicoAPIConfig\nspec: {}\n"),
            "unknown APIVersion 'projectcalico.org/v1': set apiVersion: projectcalico.org/v3"
        );
        assert_eq!(
            err("apiVersion: projectcalico.org/v3\nkind: Other\n"),
            "expected kind 'CalicoAPIConfig', got 'Other'"
        );
        assert!(
            err(&format!("{HEAD}spec: {{etcdEndpoints: [a, b]}}\n"))
                .contains("spec.etcdEndpoints must be a string")
        );
    }

    #[test]
    fn inline_certificates_are_kept_and_not_mixed_with_files() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let text = format!(
            "{HEAD}spec:\n  etcdEndpoints: https://e:2379\n  etcdCACert: |\n    {}\n  etcdCert: cert-pem\n  etcdKey: key-pem\n",
            pem.trim_end().replace('\n', "\n    ")
        );
        let DatastoreConfig::Etcd(e) = from_file_text(&text).unwrap() else {
            panic!("not etcd")
        };
        // Handed to the etcd client as PEM text; nothing is written to disk.
        assert_eq!(e.ca_cert_pem.as_deref(), Some(pem));
        assert_eq!(e.cert_pem.as_deref(), Some("cert-pem"));
        assert_eq!(e.key_pem.as_deref(), Some("key-pem"));
        let mixed = text.replace("  etcdCert: cert-pem\n", "  etcdCertFile: /c.pem\n");
        assert!(err(&mixed).contains("cannot mix inline"), "{}", err(&mixed));
        let half = text.replace("  etcdKey: key-pem\n", "");
        assert!(err(&half).contains("etcdKey"), "{}", err(&half));
    }
}
