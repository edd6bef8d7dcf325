//! The network configuration on stdin, with Calico's keys (`reference/calico-control-plane.md`
//! §5.1) and the checks that turn a bad one into a CNI error naming the key.

use std::path::{Path, PathBuf};

use calico_datastore::config::DatastoreConfig;
use calico_datastore::etcd::EtcdConfig;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::cni::{self, CniError, Dns, code};

/// Where ipamd listens unless `ipam.endpoint` says otherwise.
pub const DEFAULT_IPAM_ENDPOINT: &str = "unix:///var/run/calico/ipam.sock";
/// Where felixd listens unless `felix_endpoint` says otherwise.
pub const DEFAULT_FELIX_ENDPOINT: &str = "unix:///var/run/calico/felix.sock";
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/calico/nodename";
pub const DEFAULT_MTU_FILE: &str = "/var/lib/calico/mtu";
pub const DEFAULT_LOG_FILE: &str = "/var/log/calico/cni/cni.log";
pub const DEFAULT_IPAM_LOCK_FILE: &str = "/var/run/calico/ipam.lock";
pub const DEFAULT_PENDING_DIR: &str = "/var/lib/calico/cni/pending";

/// `"true"`/`"false"` as Calico writes them; a JSON boolean is accepted too.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        B(bool),
        S(String),
    }
    match Option::<Flag>::deserialize(d)? {
        None => Ok(None),
        Some(Flag::B(b)) => Ok(Some(b)),
        Some(Flag::S(s)) => match s.as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is neither \"true\" nor \"false\""
            ))),
        },
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: String,
    #[serde(default, deserialize_with = "flag")]
    pub assign_ipv4: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    pub assign_ipv6: Option<bool>,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    /// Where ipamd listens: `unix:///path` or `tcp://host:port`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
}

impl IpamConf {
    pub fn wants_v4(&self) -> bool {
        self.assign_ipv4.unwrap_or(true)
    }

    pub fn wants_v6(&self) -> bool {
        self.assign_ipv6.unwrap_or(false)
    }

    pub fn endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(DEFAULT_IPAM_ENDPOINT)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct KubernetesConf {
    #[serde(default)]
    pub kubeconfig: Option<String>,
    #[serde(default)]
    pub k8s_api_root: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PolicyConf {
    #[serde(rename = "type", default)]
    pub policy_type: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerSettings {
    #[serde(default)]
    pub allow_ip_forwarding: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FeatureControl {
    #[serde(default)]
    pub ip_addrs_no_ipam: bool,
    #[serde(default)]
    pub floating_ips: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DataplaneOptions {
    #[serde(rename = "type", default)]
    pub dataplane_type: String,
}

/// One attachment a runtime still uses (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// The plugin's configuration as the runtime passes it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub ipam: IpamConf,

    #[serde(default)]
    pub datastore_type: Option<String>,
    #[serde(default)]
    pub etcd_endpoints: Option<String>,
    #[serde(default)]
    pub etcd_discovery_srv: Option<String>,
    #[serde(default)]
    pub etcd_key_file: Option<String>,
    #[serde(default)]
    pub etcd_cert_file: Option<String>,
    #[serde(default)]
    pub etcd_ca_cert_file: Option<String>,
    #[serde(default)]
    pub kubernetes: KubernetesConf,
    #[serde(default)]
    pub policy: PolicyConf,

    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default)]
    pub nodename_file: Option<String>,
    #[serde(default)]
    pub nodename_file_optional: bool,
    /// Deprecated spelling of `nodename`.
    #[serde(default)]
    pub hostname: Option<String>,

    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub require_mtu_file: bool,
    /// Where the node agent writes the MTU (`/var/lib/calico/mtu`).
    #[serde(default)]
    pub mtu_file: Option<String>,
    #[serde(default)]
    pub num_queues: Option<u32>,
    #[serde(default)]
    pub device_type: String,

    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub log_file_path: Option<String>,

    #[serde(default)]
    pub container_settings: ContainerSettings,
    #[serde(default)]
    pub feature_control: FeatureControl,
    #[serde(default)]
    pub dataplane_options: DataplaneOptions,
    #[serde(default)]
    pub policy_setup_timeout_seconds: i64,
    /// Calico's IPAM lock; its directory also holds the per-pod locks.
    #[serde(default)]
    pub ipam_lock_file: Option<String>,
    /// Where DEL records datastore cleanup it could not do yet (replayed by later runs).
    #[serde(default)]
    pub pending_dir: Option<String>,
    #[serde(default)]
    pub readiness_gates: Vec<String>,
    /// Where felixd listens (`unix:///var/run/calico/felix.sock`).
    #[serde(default)]
    pub felix_endpoint: Option<String>,
    #[serde(default)]
    pub dns: Option<Dns>,

    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "cni.dev/attachments", default)]
    pub attachments: Option<Vec<Attachment>>,
    /// Runtime metadata (`args.cni.labels`: the pod's labels).
    #[serde(default)]
    pub args: Option<Value>,
}

/// How much a configuration is checked: IPAM plugins need less than the main plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Network,
    Ipam,
}

impl NetConf {
    /// Decodes and checks stdin. The raw JSON is kept by the caller for delegation.
    pub fn parse(bytes: &[u8], role: Role) -> Result<(NetConf, Value), CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!(
                    "the network configuration is not valid JSON: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if !raw.is_object() {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration must be a JSON object",
            ));
        }
        let conf: NetConf = serde_path_to_error::deserialize(&raw).map_err(|e| {
            CniError::config(format!(
                "network configuration: {}: {}",
                e.path(),
                e.inner()
            ))
        })?;
        conf.check(role)?;
        Ok((conf, raw))
    }

    fn check(&self, role: Role) -> Result<(), CniError> {
        if self.cni_version.is_empty() {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "cniVersion is missing; calico-rs speaks CNI 0.3.0 and later",
            )
            .with_details(format!(
                "supported versions: {}",
                cni::SUPPORTED_VERSIONS.join(", ")
            )));
        }
        cni::check_version(&self.cni_version)?;
        if !cni::network_name_ok(&self.name) {
            return Err(CniError::config(format!(
                "name {:?}: a network name must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
                self.name
            )));
        }
        if role == Role::Network && self.ipam.ipam_type.is_empty() {
            return Err(CniError::config(
                "ipam.type is missing: set it to calico-ipam (or another IPAM plugin such as host-local)",
            ));
        }
        if (self.ipam.ipam_type.is_empty() || self.ipam.ipam_type == "calico-ipam")
            && !self.ipam.wants_v4()
            && !self.ipam.wants_v6()
        {
            return Err(CniError::config(
                "ipam.assign_ipv4 and ipam.assign_ipv6 are both false: a pod would get no address",
            ));
        }
        if let Some(s) = &self.ipam.subnet
            && s.starts_with("usePodCidr")
        {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!(
                    "ipam.subnet {s:?} needs the Kubernetes API, which this build does not use; give the node's pod CIDR itself"
                ),
            ));
        }
        if !self.readiness_gates.is_empty() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "readiness_gates are not supported in this build; remove them",
            ));
        }
        if self.ipam.ipam_type.contains('/') {
            return Err(CniError::config(format!(
                "ipam.type {:?} must be a plugin name, not a path",
                self.ipam.ipam_type
            )));
        }
        match self.datastore_type.as_deref() {
            None | Some("") | Some("etcdv3") | Some("kubernetes") => {}
            Some(other) => {
                return Err(CniError::config(format!(
                    "datastore_type {other:?} is not etcdv3 or kubernetes"
                )));
            }
        }
        if self.etcd_discovery_srv.is_some() && self.etcd_endpoints.is_none() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "etcd_discovery_srv is not supported; list the members in etcd_endpoints",
            ));
        }
        match self.device_type.as_str() {
            "" | "veth" | "netkit" => {}
            other => {
                return Err(CniError::config(format!(
                    "device_type {other:?} is not veth or netkit"
                )));
            }
        }
        if self.mtu != 0 && !(68..=65535).contains(&self.mtu) {
            return Err(CniError::config(format!(
                "mtu {} is outside 68..65535",
                self.mtu
            )));
        }
        if self.policy_setup_timeout_seconds < 0 {
            return Err(CniError::config(format!(
                "policy_setup_timeout_seconds {} must not be negative (0 turns waiting off)",
                self.policy_setup_timeout_seconds
            )));
        }
        if !self.dataplane_options.dataplane_type.is_empty() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!(
                    "dataplane_options.type {:?}: external dataplanes are not supported",
                    self.dataplane_options.dataplane_type
                ),
            ));
        }
        if let Some(level) = &self.log_level
            && !matches!(
                level.to_lowercase().as_str(),
                "" | "trace" | "debug" | "info" | "warn" | "warning" | "error" | "fatal" | "panic"
            )
        {
            return Err(CniError::config(format!(
                "log_level {level:?} is not one of debug, info, warning, error"
            )));
        }
        Ok(())
    }

    /// The attachments a GC must keep (both spellings of the key are accepted); `None` when
    /// the runtime sent neither.
    pub fn gc_keep(&self) -> Option<Vec<Attachment>> {
        self.valid_attachments
            .clone()
            .or_else(|| self.attachments.clone())
    }

    pub fn felix_endpoint(&self) -> &str {
        self.felix_endpoint
            .as_deref()
            .unwrap_or(DEFAULT_FELIX_ENDPOINT)
    }

    /// The directory of the per-pod locks (beside Calico's IPAM lock).
    pub fn lock_dir(&self) -> PathBuf {
        Path::new(
            self.ipam_lock_file
                .as_deref()
                .unwrap_or(DEFAULT_IPAM_LOCK_FILE),
        )
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/var/run/calico"))
    }

    pub fn pending_dir(&self) -> PathBuf {
        PathBuf::from(self.pending_dir.as_deref().unwrap_or(DEFAULT_PENDING_DIR))
    }

    pub fn num_queues(&self) -> u32 {
        self.num_queues.filter(|n| *n > 0).unwrap_or(1)
    }

    /// The datastore: from the configuration's keys, else the environment.
    pub fn datastore(&self) -> Result<DatastoreConfig, CniError> {
        if self.datastore_type.as_deref() == Some("kubernetes") {
            return Err(CniError::config(
                "datastore_type kubernetes: the Kubernetes API datastore is not available in this build; use etcdv3 with etcd_endpoints",
            ));
        }
        if let Some(endpoints) = self.etcd_endpoints.as_deref().filter(|e| !e.is_empty()) {
            let mut cfg = EtcdConfig::new(
                endpoints
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty()),
            );
            cfg.ca_cert_file = self.etcd_ca_cert_file.clone().map(PathBuf::from);
            cfg.cert_file = self.etcd_cert_file.clone().map(PathBuf::from);
            cfg.key_file = self.etcd_key_file.clone().map(PathBuf::from);
            return Ok(DatastoreConfig::Etcd(Box::new(cfg)));
        }
        if self.datastore_type.as_deref() == Some("etcdv3") {
            return Err(CniError::config(
                "datastore_type is etcdv3 but etcd_endpoints is empty; list the etcd members, e.g. http://10.0.0.1:2379",
            ));
        }
        DatastoreConfig::from_env().map_err(|e| CniError::config(e.to_string()))
    }

    /// This node's name: `nodename`, else the nodename file, else the deprecated
    /// `hostname`, else `NODENAME`, else the host name. The nodename file must exist unless
    /// `nodename_file_optional` (it shows the node agent has started).
    pub fn node_name(&self) -> Result<String, CniError> {
        let file = PathBuf::from(
            self.nodename_file
                .as_deref()
                .unwrap_or(DEFAULT_NODENAME_FILE),
        );
        let contents = std::fs::read_to_string(&file).ok();
        if contents.is_none() && !self.nodename_file_optional {
            return Err(CniError::try_again(format!(
                "{} does not exist yet: check that the calico-rs node agent is running and has mounted /var/lib/calico/ (or set nodename_file_optional)",
                file.display()
            )));
        }
        if let Some(n) = self.nodename.as_deref().filter(|n| !n.is_empty()) {
            return Ok(n.to_string());
        }
        if let Some(n) = contents
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
        {
            return Ok(n);
        }
        if let Some(n) = self.hostname.as_deref().filter(|n| !n.is_empty()) {
            return Ok(n.to_string());
        }
        calico_datastore::config::node_name(None, Path::new("/nonexistent"))
            .map_err(|e| CniError::config(e.to_string()))
    }

    /// The veth MTU: `mtu`, else the node agent's MTU file, else 0 (the kernel's default).
    pub fn effective_mtu(&self) -> Result<u32, CniError> {
        if self.mtu != 0 {
            return Ok(self.mtu);
        }
        let file = self.mtu_file.as_deref().unwrap_or(DEFAULT_MTU_FILE);
        match std::fs::read_to_string(file) {
            Ok(s) => s
                .trim()
                .parse::<u32>()
                .map_err(|_| CniError::config(format!("{file} holds {:?}, not an MTU", s.trim()))),
            Err(_) if self.require_mtu_file => Err(CniError::try_again(format!(
                "{file} does not exist yet and require_mtu_file is set: check that the node agent is running"
            ))),
            Err(_) => Ok(0),
        }
    }

    /// The pod's labels from the runtime's `args.cni.labels` (`[{key, value}]`).
    pub fn runtime_labels(&self) -> Vec<(String, String)> {
        let Some(labels) = self
            .args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("labels"))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        labels
            .iter()
            .filter_map(|l| {
                Some((
                    l.get("key")?.as_str()?.to_string(),
                    l.get("value")?.as_str()?.to_string(),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<NetConf, CniError> {
        NetConf::parse(json.as_bytes(), Role::Network).map(|(c, _)| c)
    }

    const GOOD: &str = r#"{"cniVersion":"0.3.1","name":"k8s-pod-network","type":"calico",
        "ipam":{"type":"calico-ipam","assign_ipv6":"true"},"mtu":1440,
        "etcd_endpoints":"http://127.0.0.1:2379","nodename":"n1","nodename_file_optional":true,
        "policy":{"type":"k8s"},"kubernetes":{"kubeconfig":"/etc/cni/net.d/calico-kubeconfig"},
        "somethingElse":{"x":1}}"#;

    #[test]
    fn calicos_shipped_configuration_is_accepted() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.name, "k8s-pod-network");
        assert!(c.ipam.wants_v4() && c.ipam.wants_v6());
        assert_eq!(c.effective_mtu().unwrap(), 1440);
        assert_eq!(c.node_name().unwrap(), "n1");
        assert!(matches!(c.datastore().unwrap(), DatastoreConfig::Etcd(_)));
        assert_eq!(c.ipam.endpoint(), DEFAULT_IPAM_ENDPOINT);
    }

    #[test]
    fn bad_configurations_name_the_key_and_the_code() {
        let cases: &[(&str, u32, &str)] = &[
            ("{", code::DECODE, "line 1"),
            ("[]", code::DECODE, "JSON object"),
            (
                r#"{"name":"n","ipam":{"type":"calico-ipam"}}"#,
                1,
                "cniVersion is missing",
            ),
            (
                r#"{"cniVersion":"9.9.9","name":"n","ipam":{"type":"x"}}"#,
                1,
                "not supported",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"bad name","ipam":{"type":"x"}}"#,
                7,
                "network name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                7,
                "ipam.type is missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam"},"mtu":"1500"}"#,
                7,
                "mtu",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam","assign_ipv4":"yes"}}"#,
                7,
                "ipam.assign_ipv4",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam","assign_ipv4":"false"}}"#,
                7,
                "both false",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam"},"device_type":"tap"}"#,
                7,
                "device_type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam"},"mtu":20}"#,
                7,
                "mtu 20",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam"},"policy_setup_timeout_seconds":-1}"#,
                7,
                "negative",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam"},"datastore_type":"consul"}"#,
                7,
                "datastore_type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"../x"}}"#,
                7,
                "not a path",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam"},"dataplane_options":{"type":"grpc"}}"#,
                2,
                "dataplane",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam"},"log_level":"loud"}"#,
                7,
                "log_level",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam","ipv4_pools":"10.0.0.0/8"}}"#,
                7,
                "ipam.ipv4_pools",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"usePodCidr"}}"#,
                2,
                "usePodCidr",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"calico-ipam"},"readiness_gates":["http://x"]}"#,
                2,
                "readiness_gates",
            ),
        ];
        for (json, want_code, want_text) in cases {
            let e = parse(json)
                .err()
                .unwrap_or_else(|| panic!("accepted: {json}"));
            assert_eq!(e.code, *want_code, "{json}: {e}");
            assert!(e.to_string().contains(want_text), "{json}: {e}");
        }
    }

    #[test]
    fn the_nodename_file_must_exist_unless_optional() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nodename");
        let conf = |optional: bool| NetConf {
            nodename_file: Some(file.display().to_string()),
            nodename_file_optional: optional,
            ..Default::default()
        };
        let e = conf(false).node_name().unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN);
        let optional = NetConf {
            nodename: Some("explicit".into()),
            ..conf(true)
        };
        assert_eq!(optional.node_name().unwrap(), "explicit");
        std::fs::write(&file, "node-7\n").unwrap();
        assert_eq!(conf(false).node_name().unwrap(), "node-7");
    }

    #[test]
    fn the_mtu_comes_from_the_file_when_not_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mtu");
        let mut c = NetConf {
            mtu_file: Some(file.display().to_string()),
            ..Default::default()
        };
        assert_eq!(c.effective_mtu().unwrap(), 0);
        c.require_mtu_file = true;
        assert_eq!(c.effective_mtu().unwrap_err().code, code::TRY_AGAIN);
        std::fs::write(&file, "1410\n").unwrap();
        assert_eq!(c.effective_mtu().unwrap(), 1410);
    }

    #[test]
    fn runtime_labels_and_gc_keys() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","ipam":{"type":"calico-ipam"},
            "args":{"cni":{"labels":[{"key":"app","value":"web"}]}},
            "cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.runtime_labels(), vec![("app".into(), "web".into())]);
        assert_eq!(c.gc_keep().unwrap()[0].container_id, "c1");
        let v = parse(
            r#"{"cniVersion":"1.1.0","name":"n","ipam":{"type":"calico-ipam"},
            "cni.dev/valid-attachments":[]}"#,
        )
        .unwrap();
        assert_eq!(v.gc_keep(), Some(vec![]));
        let none =
            parse(r#"{"cniVersion":"1.1.0","name":"n","ipam":{"type":"calico-ipam"}}"#).unwrap();
        assert_eq!(none.gc_keep(), None);
    }
}
