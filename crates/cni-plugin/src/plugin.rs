//! The `calico` plugin: ADD, DEL, CHECK, STATUS, GC and VERSION for one invocation.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use calico_api::resource::{ClusterInformation, WorkloadEndpoint};
use calico_datastore::{Datastore, DatastoreError, ResourceClient};
use ipnet::IpNet;
use serde_json::Value;

use crate::cni::{self, CniError, CniResult, Command, Env, Interface, IpConfig, Route, code};
use crate::dataplane::{self, Expected, PodWiring};
use crate::ipam::{self, AddressRequest};
use crate::lock::PodLock;
use crate::netconf::NetConf;
use crate::wep::{self, Identity, Removal};
use crate::{failpoint, felix};

/// One invocation: the environment, the checked configuration and the raw JSON.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub env: Env,
    pub conf: NetConf,
    pub raw: Value,
}

impl Invocation {
    pub(crate) fn uses_calico_ipam(&self) -> bool {
        self.conf.ipam.ipam_type == "calico-ipam"
    }
}

/// How long ADD and DEL may take in all: less than a runtime's own deadline, so the answer
/// is ours (code 11, try again) and the runtime's DEL cleans up what a cut-off ADD left.
const ADD_DEADLINE: Duration = Duration::from_secs(90);
const DEL_DEADLINE: Duration = Duration::from_secs(60);
/// How long a run spends finishing DELs that waited for the datastore.
const REPLAY_BUDGET: Duration = Duration::from_secs(3);
/// How long a run waits for another operation on the same pod.
const POD_LOCK_WAIT: Duration = Duration::from_secs(30);

/// Runs the command; `Some(json)` is printed on stdout.
pub async fn run(cmd: Command, inv: &Invocation) -> Result<Option<Value>, CniError> {
    let deadline = |d: Duration, what: &'static str| {
        move |_| {
            CniError::try_again(format!(
                "{what} did not finish within {} s; the runtime will retry",
                d.as_secs()
            ))
        }
    };
    match cmd {
        Command::Add => {
            replay_pending(inv).await;
            tokio::time::timeout(ADD_DEADLINE, add(inv))
                .await
                .map_err(deadline(ADD_DEADLINE, "ADD"))?
                .map(Some)
        }
        Command::Del => {
            replay_pending(inv).await;
            tokio::time::timeout(DEL_DEADLINE, del(inv))
                .await
                .map_err(deadline(DEL_DEADLINE, "DEL"))?
                .map(|()| None)
        }
        Command::Check => check(inv).await.map(|()| None),
        Command::Status => status(inv).await.map(|()| None),
        Command::Gc => {
            replay_pending(inv).await;
            gc(inv).await.map(|()| None)
        }
        Command::Version => Ok(Some(cni::version_json(&inv.conf.cni_version))),
    }
}

/// Finishes DELs an earlier run recorded because the datastore or ipamd was away.
async fn replay_pending(inv: &Invocation) {
    let dir = inv.conf.pending_dir();
    crate::pending::replay(&dir, REPLAY_BUDGET, |conf, raw, env| async move {
        let replay = Invocation { env, conf, raw };
        let node = replay.conf.node_name()?;
        let container_id = replay.env.container_id()?.to_string();
        let ifname = replay.env.ifname()?.to_string();
        let id = Identity::new(&replay.env, &node, &container_id, &ifname);
        cleanup_datastore(&replay, &id).await
    })
    .await;
}

async fn datastore(conf: &NetConf) -> Result<Arc<dyn Datastore>, CniError> {
    let mut cfg = conf.datastore()?;
    if let calico_datastore::config::DatastoreConfig::Etcd(e) = &mut cfg {
        // A pod waits on us: fail fast and let the runtime retry.
        e.request_timeout = Duration::from_secs(10);
    }
    cfg.connect().await.map_err(|e| {
        CniError::try_again(format!(
            "cannot reach the datastore: {e} (etcd_endpoints in the CNI configuration)"
        ))
    })
}

/// Calico refuses pods while the datastore is locked for a migration.
async fn check_ready(rc: &ResourceClient) -> Result<(), CniError> {
    match rc.get::<ClusterInformation>(None, "default").await {
        Ok(ci) if ci.spec.datastore_ready == Some(false) => Err(CniError::try_again(
            "Calico is currently not ready to process requests (ClusterInformation default has datastoreReady: false)",
        )),
        Ok(_) | Err(DatastoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(CniError::try_again(format!(
            "reading ClusterInformation: {e}"
        ))),
    }
}

fn default_routes(ips: &[IpNet]) -> Vec<IpNet> {
    let mut out = Vec::new();
    if ips.iter().any(|n| n.addr().is_ipv4()) {
        out.push(IpNet::V4(Default::default()));
    }
    if ips.iter().any(|n| n.addr().is_ipv6()) {
        out.push(IpNet::V6(Default::default()));
    }
    out
}

fn result_for(
    inv: &Invocation,
    host_ifname: &str,
    ifname: &str,
    netns: &Path,
    mac: &str,
    mtu: u32,
    ips: &[IpNet],
) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: host_ifname.to_string(),
                ..Default::default()
            },
            Interface {
                name: ifname.to_string(),
                mac: (!mac.is_empty()).then(|| mac.to_string()),
                mtu: (mtu != 0).then_some(mtu),
                sandbox: Some(netns.display().to_string()),
                ..Default::default()
            },
        ],
        ips: ips
            .iter()
            .map(|n| IpConfig {
                address: IpNet::from(n.addr()),
                gateway: None,
                interface: Some(1),
            })
            .collect(),
        routes: default_routes(ips).into_iter().map(Route::to).collect(),
        dns: inv.conf.dns.clone().unwrap_or_default(),
    }
}

/// Addresses for the pod and whether this ADD allocated them (only then does a failure
/// release them: addresses a previous, interrupted ADD of the same container holds are kept
/// for the DEL the runtime sends).
pub(crate) struct Addresses {
    pub ips: Vec<IpNet>,
    pub fresh: bool,
}

pub(crate) async fn addresses(inv: &Invocation, id: &Identity) -> Result<Addresses, CniError> {
    let conf = &inv.conf;
    if !inv.uses_calico_ipam() {
        let r = ipam::delegate(&inv.env, Command::Add, &conf.ipam.ipam_type, &inv.raw)
            .await?
            .ok_or_else(|| {
                CniError::calico(format!(
                    "IPAM plugin {} returned no result",
                    conf.ipam.ipam_type
                ))
            })?;
        if r.ips.is_empty() {
            return Err(CniError::calico(format!(
                "IPAM plugin {} returned no address",
                conf.ipam.ipam_type
            )));
        }
        return Ok(Addresses {
            ips: r.ips.iter().map(|c| c.address).collect(),
            fresh: true,
        });
    }
    let mut client = ipam::connect(conf.ipam.endpoint()).await?;
    let handle = ipam::handle_id(&conf.name, &id.container_id);
    // A retried ADD of the same container reuses what the first one got: one container, one
    // allocation, whatever was interrupted.
    let held = ipam::held(&mut client, &handle).await?;
    let wants_v4 = conf.ipam.wants_v4();
    let wants_v6 = conf.ipam.wants_v6();
    let requested_ip = match inv.env.args.get("IP") {
        Some(s) => Some(
            s.parse::<IpAddr>()
                .map_err(|_| CniError::env(format!("CNI_ARGS IP={s:?} is not an IP address")))?,
        ),
        None => None,
    };
    if !held.is_empty() {
        let complete = match requested_ip {
            Some(ip) => held.contains(&ip),
            None => {
                held.iter().any(IpAddr::is_ipv4) == wants_v4
                    && held.iter().any(IpAddr::is_ipv6) == wants_v6
            }
        };
        if complete {
            tracing::info!(%handle, ips = ?held, "reusing the addresses an earlier ADD of this container took");
            return Ok(Addresses {
                ips: held.into_iter().map(IpNet::from).collect(),
                fresh: false,
            });
        }
        // What an earlier ADD of this container wired goes before its addresses do, so no
        // interface is left using an address IPAM considers free.
        dataplane::unwire_host(&id.host_ifname())
            .await
            .map_err(dp_error)?;
        ipam::release(&mut client, std::slice::from_ref(&handle)).await?;
    }
    // The network is recorded too, so a GC of one network never touches another's handles
    // (network names may hold dots, so the handle alone cannot tell).
    let mut attrs = std::collections::BTreeMap::from([
        ("node".to_string(), id.node.clone()),
        ("network".to_string(), conf.name.clone()),
        (
            "timestamp".to_string(),
            chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S%.9f +0000 UTC")
                .to_string(),
        ),
    ]);
    if id.is_k8s() {
        attrs.insert("pod".into(), id.pod.clone());
        attrs.insert("namespace".into(), id.namespace.clone());
    }
    let req = AddressRequest {
        handle,
        node: id.node.clone(),
        attrs,
        namespace: if id.is_k8s() {
            id.namespace.clone()
        } else {
            String::new()
        },
        ip: requested_ip,
    };
    let ips = ipam::allocate(&mut client, conf, &req).await?;
    Ok(Addresses { ips, fresh: true })
}

/// Gives back what this ADD allocated.
async fn release_addresses(inv: &Invocation, id: &Identity) {
    let r = if inv.uses_calico_ipam() {
        match ipam::connect(inv.conf.ipam.endpoint()).await {
            Ok(mut c) => {
                ipam::release(&mut c, &[ipam::handle_id(&inv.conf.name, &id.container_id)])
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    } else {
        ipam::delegate(&inv.env, Command::Del, &inv.conf.ipam.ipam_type, &inv.raw)
            .await
            .map(|_| ())
    };
    if let Err(e) = r {
        tracing::error!(error = %e, "could not release the addresses of a failed ADD; the leak collector will");
    }
}

fn dp_error(e: dataplane::DataplaneError) -> CniError {
    CniError::calico(format!("wiring the pod: {e}"))
}

async fn add(inv: &Invocation) -> Result<Value, CniError> {
    let env = &inv.env;
    let conf = &inv.conf;
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    // Before anything is allocated: the container must be there.
    crate::netns::probe(netns)
        .await
        .map_err(|e| CniError::new(code::UNKNOWN_CONTAINER, format!("CNI_NETNS: {e}")))?;
    let node = conf.node_name()?;
    let mtu = conf.effective_mtu()?;
    let id = Identity::new(env, &node, container_id, ifname);
    let name = id.wep_name()?;
    let host_ifname = id.host_ifname();
    let _lock = PodLock::acquire(&conf.lock_dir(), &host_ifname, POD_LOCK_WAIT).await?;
    let ds = datastore(conf).await?;
    let rc = ResourceClient::new(ds);
    check_ready(&rc).await?;
    let existing = wep::get(&rc, &id.namespace, &name).await?;

    // The same container again (a runtime retrying): if it is wired as recorded, the answer
    // is the same and nothing changes.
    if let Some(w) = &existing
        && w.spec.container_id == container_id
        && !w.spec.ip_networks.is_empty()
    {
        let ips: Vec<IpNet> = w
            .spec
            .ip_networks
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let want = Expected {
            ifname: ifname.to_string(),
            host_ifname: w.spec.interface_name.clone(),
            ips: ips.clone(),
            mac: Some(w.spec.mac.clone()).filter(|m| !m.is_empty()),
        };
        if dataplane::check(netns, &want).await.is_ok() {
            tracing::info!(endpoint = %name, "container already wired; returning its result");
            let r = result_for(
                inv,
                &w.spec.interface_name,
                ifname,
                netns,
                &w.spec.mac,
                mtu,
                &ips,
            );
            return Ok(r.to_json(&conf.cni_version));
        }
    }

    let got = addresses(inv, &id).await?;
    failpoint::hit("ipam");
    let wiring = PodWiring {
        ifname: ifname.to_string(),
        host_ifname: host_ifname.clone(),
        mtu,
        num_queues: conf.num_queues(),
        ips: got.ips.clone(),
        routes: default_routes(&got.ips),
        allow_ip_forwarding: conf.container_settings.allow_ip_forwarding,
    };
    let mac = match dataplane::wire(netns, &wiring).await {
        Ok(mac) => mac,
        Err(e) => {
            if got.fresh {
                release_addresses(inv, &id).await;
            }
            return Err(dp_error(e));
        }
    };

    let k8s_policy = conf.policy.policy_type == "k8s" && id.is_k8s();
    let profiles = if k8s_policy {
        vec![format!(
            "{}{}",
            calico_api::names::NAMESPACE_PROFILE_PREFIX,
            id.namespace
        )]
    } else {
        vec![conf.name.clone()]
    };
    let written = async {
        if !k8s_policy {
            wep::ensure_network_profile(&rc, &conf.name, id.is_k8s()).await?;
        }
        let endpoint = wep::build(wep::EndpointParts {
            identity: &id,
            name: name.clone(),
            ips: &got.ips,
            mac: &mac,
            host_ifname: &host_ifname,
            profiles,
            labels: conf.runtime_labels(),
        });
        wep::write(&rc, endpoint, existing.as_ref()).await
    }
    .await;
    let endpoint = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = dataplane::unwire(Some(netns), ifname).await;
            if got.fresh {
                release_addresses(inv, &id).await;
            }
            return Err(e);
        }
    };
    failpoint::hit("wep");
    let timeout = Duration::from_secs(conf.policy_setup_timeout_seconds.unsigned_abs());
    felix::announce(conf.felix_endpoint(), &endpoint, timeout).await;
    tracing::info!(endpoint = %name, ips = ?got.ips, "pod wired");
    Ok(
        result_for(inv, &host_ifname, ifname, netns, &mac, mtu, &got.ips)
            .to_json(&conf.cni_version),
    )
}

async fn del(inv: &Invocation) -> Result<(), CniError> {
    let env = &inv.env;
    let conf = &inv.conf;
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    // As Calico: without the node's name the endpoint cannot be found, so DEL waits for it.
    let node = conf.node_name()?;
    let id = Identity::new(env, &node, container_id, ifname);
    let _lock = PodLock::acquire(&conf.lock_dir(), &id.host_ifname(), POD_LOCK_WAIT).await?;

    // First what is local: the pod's interface (and with it the veth and host routes). If it
    // cannot be removed, nothing else is touched, so its addresses stay reserved for it.
    dataplane::unwire(env.netns.as_deref(), ifname)
        .await
        .map_err(dp_error)?;

    // Then the datastore: the endpoint, then the addresses. If the datastore or ipamd is away,
    // record the rest for a later run and let the pod go.
    match cleanup_datastore(inv, &id).await {
        Ok(()) => Ok(()),
        Err(e) if e.code == code::TRY_AGAIN => {
            let record = crate::pending::PendingDel {
                conf: inv.raw.clone(),
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
                args: env
                    .args
                    .0
                    .iter()
                    .filter(|(k, _)| k.starts_with("K8S_"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            let path = crate::pending::record(&conf.pending_dir(), &conf.name, &record)?;
            tracing::warn!(
                error = %e,
                pending = %path.display(),
                "the pod's interface is gone; its endpoint and addresses are released by a later run once the datastore is back"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The datastore side of DEL: the endpoint (unless it belongs to a newer sandbox of the pod,
/// compared on its revision), then the addresses. Each part is idempotent.
async fn cleanup_datastore(inv: &Invocation, id: &Identity) -> Result<(), CniError> {
    let conf = &inv.conf;
    let name = id.wep_name()?;
    let rc = ResourceClient::new(datastore(conf).await?);
    match wep::delete_if_ours(&rc, &id.namespace, &name, &id.container_id).await? {
        Removal::Deleted(host_ifname) => {
            // When the pod's namespace was out of reach but still alive, its veth is too:
            // the endpoint was ours, so is the host link of that name.
            if !host_ifname.is_empty()
                && let Err(e) = dataplane::unwire_host(&host_ifname).await
            {
                tracing::warn!(error = %e, "could not remove the pod's host interface");
            }
            felix::withdraw(
                conf.felix_endpoint(),
                &id.namespace,
                &name,
                &id.container_id,
            )
            .await
        }
        Removal::Kept => {
            tracing::info!(endpoint = %name, "endpoint belongs to a newer sandbox; kept")
        }
        Removal::Missing => {}
    }
    if inv.uses_calico_ipam() {
        let mut c = ipam::connect(conf.ipam.endpoint()).await?;
        let handles = [
            ipam::handle_id(&conf.name, &id.container_id),
            id.legacy_handle(),
        ];
        let ips = ipam::release(&mut c, &handles).await?;
        if !ips.is_empty() {
            tracing::info!(?ips, "released the pod's addresses");
        }
    } else {
        ipam::delegate(&inv.env, Command::Del, &conf.ipam.ipam_type, &inv.raw).await?;
    }
    Ok(())
}

async fn check(inv: &Invocation) -> Result<(), CniError> {
    let env = &inv.env;
    let conf = &inv.conf;
    if !cni::version_at_least(&conf.cni_version, "0.4.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CHECK needs CNI 0.4.0 or later, not {}", conf.cni_version),
        ));
    }
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs prevResult (the result of ADD)"))?;
    let prev = CniResult::parse(prev)?;
    let pod_index = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            CniError::calico(format!(
                "prevResult lists no interface {ifname} inside the pod"
            ))
        })?;
    let host = prev
        .interfaces
        .iter()
        .find(|i| {
            i.sandbox.is_none()
                && i.name
                    .starts_with(calico_api::names::DEFAULT_INTERFACE_PREFIX)
        })
        .ok_or_else(|| CniError::calico("prevResult lists no host-side cali interface"))?;
    let ips: Vec<IpNet> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i as usize == pod_index))
        .map(|ip| ip.address)
        .collect();
    let want = Expected {
        ifname: ifname.to_string(),
        host_ifname: host.name.clone(),
        ips: ips.clone(),
        // A chained plugin (tuning) may have changed the MAC; it then rewrote prevResult.
        mac: prev.interfaces[pod_index].mac.clone(),
    };
    dataplane::check(netns, &want)
        .await
        .map_err(|e| CniError::calico(format!("CHECK: {e}")))?;
    let node = conf.node_name()?;
    let id = Identity::new(env, &node, container_id, ifname);
    let rc = ResourceClient::new(datastore(conf).await?);
    let name = id.wep_name()?;
    match wep::get(&rc, &id.namespace, &name).await? {
        Some(w) if w.spec.container_id == container_id => {}
        Some(_) => {
            return Err(CniError::calico(format!(
                "CHECK: WorkloadEndpoint {name} belongs to another container"
            )));
        }
        None => {
            return Err(CniError::calico(format!(
                "CHECK: WorkloadEndpoint {name} is missing"
            )));
        }
    }
    if inv.uses_calico_ipam() {
        let mut c = ipam::connect(conf.ipam.endpoint()).await?;
        let held = ipam::held(&mut c, &ipam::handle_id(&conf.name, container_id)).await?;
        for ip in &ips {
            if !held.contains(&ip.addr()) {
                return Err(CniError::calico(format!(
                    "CHECK: {} is not allocated to this container in IPAM",
                    ip.addr()
                )));
            }
        }
    } else {
        ipam::delegate(env, Command::Check, &conf.ipam.ipam_type, &inv.raw).await?;
    }
    Ok(())
}

pub(crate) async fn status(inv: &Invocation) -> Result<(), CniError> {
    let conf = &inv.conf;
    let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    if inv.uses_calico_ipam() {
        let mut c = ipam::connect(conf.ipam.endpoint())
            .await
            .map_err(|e| unavailable(e.msg))?;
        let r = c
            .ready(calico_proto::ipam::ReadyRequest {})
            .await
            .map_err(|s| unavailable(format!("ipamd: {}", s.message())))?
            .into_inner();
        if !r.ready {
            return Err(unavailable(format!("ipamd is not ready: {}", r.detail)));
        }
    } else {
        ipam::delegate(&inv.env, Command::Status, &conf.ipam.ipam_type, &inv.raw).await?;
    }
    let rc = ResourceClient::new(datastore(conf).await.map_err(|e| unavailable(e.msg))?);
    rc.get::<ClusterInformation>(None, "default")
        .await
        .map(|_| ())
        .or_else(|e| match e {
            DatastoreError::NotFound { .. } => Ok(()),
            e => Err(unavailable(format!("the datastore: {e}"))),
        })
}

pub(crate) async fn gc(inv: &Invocation) -> Result<(), CniError> {
    let conf = &inv.conf;
    if !cni::version_at_least(&conf.cni_version, "1.1.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("GC needs CNI 1.1.0 or later, not {}", conf.cni_version),
        ));
    }
    // Without the list, everything would look stale: refuse rather than free live pods.
    let Some(keep) = conf.gc_keep() else {
        return Err(CniError::config(
            "GC without cni.dev/valid-attachments (or cni.dev/attachments): nothing is released",
        ));
    };
    if !inv.uses_calico_ipam() {
        ipam::delegate(&inv.env, Command::Gc, &conf.ipam.ipam_type, &inv.raw).await?;
        return Ok(());
    }
    let node = conf.node_name()?;
    let keep: Vec<String> = keep.into_iter().map(|a| a.container_id).collect();
    let mut c = ipam::connect(conf.ipam.endpoint()).await?;
    let r = c
        .release_stale(calico_proto::ipam::ReleaseStaleRequest {
            network: conf.name.clone(),
            hostname: node.clone(),
            keep_container_ids: keep,
        })
        .await
        .map_err(|s| CniError::calico(format!("GC: {}", s.message())))?
        .into_inner();
    if r.released_handles.is_empty() {
        return Ok(());
    }
    tracing::info!(handles = ?r.released_handles, ips = ?r.released, "GC released stale allocations");
    // The endpoints of those containers list addresses that are free now: they go too.
    let prefix = format!("{}.", conf.name);
    let gone: std::collections::BTreeSet<&str> = r
        .released_handles
        .iter()
        .filter_map(|h| h.strip_prefix(&prefix))
        .collect();
    let rc = ResourceClient::new(datastore(conf).await?);
    for w in wep::on_node(&rc, &node).await? {
        if gone.contains(w.spec.container_id.as_str()) {
            let ns = w.metadata.namespace.clone().unwrap_or_default();
            wep::delete_if_ours(&rc, &ns, &w.metadata.name, &w.spec.container_id).await?;
        }
    }
    Ok(())
}

/// The endpoint of a wired pod, for tests and tools.
pub async fn endpoint_of(
    rc: &ResourceClient,
    namespace: &str,
    name: &str,
) -> Result<Option<WorkloadEndpoint>, CniError> {
    wep::get(rc, namespace, name).await
}
