//! Addresses for a pod: from ipamd (`ipam.type: calico-ipam`, spoken to directly) or from
//! any other IPAM plugin, run from CNI_PATH as the spec describes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use calico_proto::ipam::{self as pb, ipam_client::IpamClient};
use ipnet::IpNet;
use serde_json::Value;
use tonic::transport::Channel;

use crate::cni::{CniError, CniResult, Command, Env, code};
use crate::netconf::NetConf;

/// How long one call to ipamd may take.
const IPAMD_TIMEOUT: Duration = Duration::from_secs(30);

/// The IPAM handle of a container: `<network>.<containerID>`, as Calico names it.
pub fn handle_id(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}

fn status_error(what: &str, s: &tonic::Status) -> CniError {
    let msg = format!("{what}: {}", s.message());
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted => {
            CniError::try_again(msg)
        }
        tonic::Code::InvalidArgument => CniError::config(msg),
        _ => CniError::calico(msg),
    }
}

/// A connection to ipamd.
pub async fn connect(endpoint: &str) -> Result<IpamClient<Channel>, CniError> {
    let channel = tokio::time::timeout(
        Duration::from_secs(5),
        calico_proto::endpoint::connect(endpoint),
    )
    .await
    .map_err(|_| CniError::try_again(format!("ipamd at {endpoint} did not answer within 5 s")))?
    .map_err(|e| {
        CniError::try_again(format!(
            "{e} (ipamd: set ipam.endpoint if it listens elsewhere)"
        ))
    })?;
    Ok(IpamClient::new(channel))
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(IPAMD_TIMEOUT);
    r
}

/// What a pod's addresses request needs.
#[derive(Debug, Clone)]
pub struct AddressRequest {
    pub handle: String,
    pub node: String,
    pub attrs: BTreeMap<String, String>,
    pub namespace: String,
    /// A specific address (CNI_ARGS `IP=`).
    pub ip: Option<IpAddr>,
}

/// The addresses a handle already holds.
pub async fn held(client: &mut IpamClient<Channel>, handle: &str) -> Result<Vec<IpAddr>, CniError> {
    let r = client
        .ips_by_handle(request(pb::IpsByHandleRequest {
            handle_id: handle.to_string(),
        }))
        .await
        .map_err(|s| status_error("asking ipamd what the container holds", &s))?
        .into_inner();
    r.ips
        .iter()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| CniError::calico(format!("ipamd returned {s:?}, not an address")))
        })
        .collect()
}

/// Allocates through ipamd. Returns each address with its block's prefix length (Calico's
/// AutoAssign) or as a /32 or /128 (a specific address).
pub async fn allocate(
    client: &mut IpamClient<Channel>,
    conf: &NetConf,
    req: &AddressRequest,
) -> Result<Vec<IpNet>, CniError> {
    let texts = if let Some(ip) = req.ip {
        let r = client
            .assign_ip(request(pb::AssignIpRequest {
                ip: ip.to_string(),
                handle_id: req.handle.clone(),
                attributes: req.attrs.clone().into_iter().collect(),
                hostname: req.node.clone(),
                r#use: pb::IpUse::Workload as i32,
            }))
            .await
            .map_err(|s| status_error(&format!("assigning {ip}"), &s))?
            .into_inner();
        vec![r.ip]
    } else {
        let r = client
            .auto_assign(request(pb::AutoAssignRequest {
                num_ipv4: u32::from(conf.ipam.wants_v4()),
                num_ipv6: u32::from(conf.ipam.wants_v6()),
                handle_id: req.handle.clone(),
                attributes: req.attrs.clone().into_iter().collect(),
                ipv4_pools: conf.ipam.ipv4_pools.clone(),
                ipv6_pools: conf.ipam.ipv6_pools.clone(),
                hostname: req.node.clone(),
                max_blocks_per_host: 0,
                r#use: pb::IpUse::Workload as i32,
                namespace: req.namespace.clone(),
            }))
            .await
            .map_err(|s| status_error("requesting addresses from ipamd", &s))?
            .into_inner();
        r.ipv4.into_iter().chain(r.ipv6).collect()
    };
    texts
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| CniError::calico(format!("ipamd returned {s:?}, not an address")))
        })
        .collect()
}

/// Releases a container's addresses (idempotent). Also releases Calico's legacy handle for the
/// workload, as Calico's plugin does.
pub async fn release(
    client: &mut IpamClient<Channel>,
    handles: &[String],
) -> Result<Vec<String>, CniError> {
    let mut released = Vec::new();
    for h in handles {
        let r = client
            .release_by_handle(request(pb::ReleaseByHandleRequest {
                handle_id: h.clone(),
            }))
            .await
            .map_err(|s| status_error(&format!("releasing {h}"), &s))?
            .into_inner();
        released.extend(r.released);
    }
    Ok(released)
}

/// Runs another IPAM plugin (`ipam.type`) from CNI_PATH with the same environment and the
/// whole configuration on stdin, as the CNI spec describes.
pub async fn delegate(
    env: &Env,
    command: Command,
    plugin: &str,
    raw_conf: &Value,
) -> Result<Option<CniResult>, CniError> {
    let bin = find_plugin(&env.path, plugin)?;
    let cmd = match command {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Status => "STATUS",
        Command::Gc => "GC",
        Command::Version => "VERSION",
    };
    let mut child = tokio::process::Command::new(&bin);
    child
        .env("CNI_COMMAND", cmd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let stdin = serde_json::to_vec(raw_conf).unwrap_or_default();
    let mut child = child
        .spawn()
        .map_err(|e| CniError::calico(format!("running IPAM plugin {}: {e}", bin.display())))?;
    if let Some(mut w) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        w.write_all(&stdin)
            .await
            .map_err(|e| CniError::new(code::IO, format!("writing to {plugin}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| CniError::new(code::IO, format!("waiting for {plugin}: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = v
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(code::INTERNAL);
        let msg = v
            .get("msg")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{plugin} failed ({}) with output {text:?}", out.status));
        let details = v.get("details").and_then(Value::as_str).unwrap_or_default();
        return Err(
            CniError::new(code, format!("IPAM plugin {plugin}: {msg}")).with_details(details)
        );
    }
    if command != Command::Add || text.trim().is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("{plugin} printed a result that is not JSON: {e}"),
        )
    })?;
    CniResult::parse(&v).map(Some)
}

fn find_plugin(path: &[PathBuf], plugin: &str) -> Result<PathBuf, CniError> {
    path.iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::config(format!(
                "IPAM plugin {plugin:?} is not in CNI_PATH ({}); install it or fix ipam.type",
                path.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ))
        })
}
