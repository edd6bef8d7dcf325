//! The CNI protocol (SPEC 0.3.0 to 1.1.0): the environment a runtime sets, the error
//! envelope and its codes, and results, printed in whichever version the runtime asked for.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Versions this plugin speaks (results are printed in the one requested).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The spec's error codes.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// Calico's own: something in the datastore or the kernel went wrong.
    pub const CALICO: u32 = 100;
    pub const INTERNAL: u32 = 999;
}

/// A CNI error: printed as `{cniVersion, code, msg, details}` on stdout, exit status 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn config(msg: impl Into<String>) -> CniError {
        CniError::new(code::INVALID_CONFIG, msg)
    }

    pub fn env(msg: impl Into<String>) -> CniError {
        CniError::new(code::INVALID_ENV, msg)
    }

    pub fn try_again(msg: impl Into<String>) -> CniError {
        CniError::new(code::TRY_AGAIN, msg)
    }

    pub fn calico(msg: impl Into<String>) -> CniError {
        CniError::new(code::CALICO, msg)
    }

    /// The JSON the runtime reads.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

/// The operation a runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// `CNI_ARGS`: `K=V;K2=V2`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(pub BTreeMap<String, String>);

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut out = BTreeMap::new();
        for part in s.split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                CniError::env(format!(
                    "CNI_ARGS: {part:?} is not KEY=VALUE (CNI_ARGS is KEY=VALUE pairs separated by ';')"
                ))
            })?;
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(CniArgs(out))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: Option<Command>,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

fn name_ok(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Env {
    /// Reads the variables through `get` (the process environment, or a map in tests).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let command = match var("CNI_COMMAND") {
            None => None,
            Some(c) => Some(Command::parse(&c).ok_or_else(|| {
                CniError::env(format!(
                    "CNI_COMMAND {c:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
                ))
            })?),
        };
        Ok(Env {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS").map(PathBuf::from),
            ifname: var("CNI_IFNAME"),
            args: CniArgs::parse(&var("CNI_ARGS").unwrap_or_default())?,
            path: var("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    pub fn from_process() -> Result<Env, CniError> {
        Env::read(|k| std::env::var(k).ok())
    }

    pub fn container_id(&self) -> Result<&str, CniError> {
        let id = self
            .container_id
            .as_deref()
            .ok_or_else(|| CniError::env("CNI_CONTAINERID is not set"))?;
        if !name_ok(id) {
            return Err(CniError::env(format!(
                "CNI_CONTAINERID {id:?} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
            )));
        }
        Ok(id)
    }

    pub fn ifname(&self) -> Result<&str, CniError> {
        let name = self
            .ifname
            .as_deref()
            .ok_or_else(|| CniError::env("CNI_IFNAME is not set"))?;
        if name.len() > 15
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(CniError::env(format!(
                "CNI_IFNAME {name:?} is not a valid interface name (at most 15 characters, no '/', ':' or spaces)"
            )));
        }
        Ok(name)
    }

    pub fn netns(&self) -> Result<&std::path::Path, CniError> {
        self.netns
            .as_deref()
            .ok_or_else(|| CniError::env("CNI_NETNS is not set"))
    }
}

/// Whether a network name is acceptable (it is also a file name for runtimes).
pub fn network_name_ok(name: &str) -> bool {
    name_ok(name)
}

/// Compares dotted versions numerically (`0.3.1` < `1.0.0`).
pub fn version_at_least(v: &str, min: &str) -> bool {
    let parse = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(v) >= parse(min)
}

/// `{cniVersion, supportedVersions}` for VERSION.
pub fn version_json(requested: &str) -> Value {
    json!({
        "cniVersion": if requested.is_empty() { "1.1.0" } else { requested },
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// Refuses versions this plugin does not speak (code 1, listing what it does).
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        return Ok(());
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!("CNI version {v:?} is not supported"),
    )
    .with_details(format!(
        "supported versions: {}",
        SUPPORTED_VERSIONS.join(", ")
    )))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside a container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    pub fn to(dst: IpNet) -> Route {
        Route {
            dst,
            gw: None,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// An ADD result, as of spec 1.1.0; [`CniResult::to_json`] prints it in older versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result of any supported version (0.3.x/0.4.0 `ips[].version` is ignored).
    pub fn parse(v: &Value) -> Result<CniResult, CniError> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("prevResult: {} at {}", e.inner(), e.path()),
            )
        })
    }

    /// The result as the runtime asked for it.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let v11 = version_at_least(cni_version, "1.1.0");
        let v10 = version_at_least(cni_version, "1.0.0");
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if !v11 {
                    i.mtu = None;
                    i.socket_path = None;
                    i.pci_id = None;
                }
                serde_json::to_value(i).unwrap_or(Value::Null)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = serde_json::to_value(ip).unwrap_or(Value::Null);
                if !v10 {
                    v["version"] = Value::String(
                        if ip.address.addr().is_ipv4() {
                            "4"
                        } else {
                            "6"
                        }
                        .into(),
                    );
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if !v11 {
                    r.mtu = None;
                    r.advmss = None;
                    r.priority = None;
                    r.table = None;
                    r.scope = None;
                }
                serde_json::to_value(r).unwrap_or(Value::Null)
            })
            .collect();
        let mut out = json!({ "cniVersion": cni_version });
        if !interfaces.is_empty() {
            out["interfaces"] = Value::Array(interfaces);
        }
        out["ips"] = Value::Array(ips);
        if !routes.is_empty() {
            out["routes"] = Value::Array(routes);
        }
        out["dns"] = serde_json::to_value(&self.dns).unwrap_or(Value::Null);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cali1234567890a".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("aa:bb:cc:dd:ee:ff".into()),
                    mtu: Some(1440),
                    sandbox: Some("/run/netns/p".into()),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.0.0.5/32".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/128".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                scope: Some(0),
                ..Route::to("0.0.0.0/0".parse().unwrap())
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn results_are_printed_in_the_requested_version() {
        let old = result().to_json("0.3.1");
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        assert!(old["interfaces"][1].get("mtu").is_none(), "mtu is 1.1.0");
        assert!(old["routes"][0].get("scope").is_none());
        let v10 = result().to_json("1.0.0");
        assert!(v10["ips"][0].get("version").is_none());
        let v11 = result().to_json("1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1440);
        assert_eq!(v11["routes"][0]["scope"], 0);
        // And every version reads back as the same result.
        for v in SUPPORTED_VERSIONS {
            let mut back = CniResult::parse(&result().to_json(v)).unwrap();
            if !version_at_least(v, "1.1.0") {
                back.interfaces[1].mtu = Some(1440);
                back.routes[0].scope = Some(0);
            }
            assert_eq!(back, result(), "{v}");
        }
    }

    #[test]
    fn cni_args_and_env_are_checked() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;").unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("p"));
        assert_eq!(CniArgs::parse("oops").unwrap_err().code, code::INVALID_ENV);
        let env = |pairs: &[(&str, &str)]| {
            let m: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Env::read(|k| m.get(k).cloned())
        };
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0/x")]).unwrap();
        assert_eq!(e.command, Some(Command::Add));
        assert!(
            e.ifname()
                .unwrap_err()
                .msg
                .contains("not a valid interface name")
        );
        assert!(
            e.container_id()
                .unwrap_err()
                .msg
                .contains("CNI_CONTAINERID")
        );
        assert!(env(&[("CNI_COMMAND", "NOPE")]).is_err());
        let e = env(&[("CNI_CONTAINERID", "-bad")]).unwrap();
        assert!(e.container_id().is_err());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("1.0.0", "0.4.0"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
        assert!(version_at_least("0.10.0", "0.4.0"));
        assert_eq!(check_version("2.0.0").unwrap_err().code, 1);
        assert!(check_version("0.3.1").is_ok());
    }
}
