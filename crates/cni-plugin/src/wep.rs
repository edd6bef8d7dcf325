//! The WorkloadEndpoint a pod's wiring is recorded in: what felixd programs policy for and
//! birdd routes, named and filled as Calico's plugin does.

use std::collections::BTreeMap;

use calico_api::ObjectMeta;
use calico_api::kinds::WorkloadEndpointSpec;
use calico_api::names::{self, WorkloadEndpointIds};
use calico_api::resource::{Profile, WorkloadEndpoint};
use calico_datastore::{DatastoreError, ResourceClient};
use ipnet::IpNet;

use crate::cni::{CniError, Env};

/// Who a pod is: from CNI_ARGS as Kubernetes runtimes send them, else a plain container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub orchestrator: String,
    pub namespace: String,
    /// The pod's name (Kubernetes), empty otherwise.
    pub pod: String,
    pub container_id: String,
    pub node: String,
    pub endpoint: String,
}

impl Identity {
    pub fn new(env: &Env, node: &str, container_id: &str, ifname: &str) -> Identity {
        let ns = env.args.get("K8S_POD_NAMESPACE");
        let pod = env.args.get("K8S_POD_NAME");
        match (ns, pod) {
            (Some(ns), Some(pod)) => Identity {
                orchestrator: names::ORCHESTRATOR_K8S.into(),
                namespace: ns.into(),
                pod: pod.into(),
                container_id: container_id.into(),
                node: node.into(),
                endpoint: ifname.into(),
            },
            _ => Identity {
                orchestrator: names::ORCHESTRATOR_CNI.into(),
                namespace: "default".into(),
                pod: String::new(),
                container_id: container_id.into(),
                node: node.into(),
                endpoint: ifname.into(),
            },
        }
    }

    pub fn is_k8s(&self) -> bool {
        self.orchestrator == names::ORCHESTRATOR_K8S
    }

    pub fn wep_name(&self) -> Result<String, CniError> {
        WorkloadEndpointIds {
            node: self.node.clone(),
            orchestrator: self.orchestrator.clone(),
            endpoint: self.endpoint.clone(),
            workload: self.container_id.clone(),
            pod: self.pod.clone(),
            container_id: self.container_id.clone(),
        }
        .name()
        .map_err(|(field, why)| CniError::env(format!("cannot name the endpoint: {field}: {why}")))
    }

    /// The host end of the pod's veth: `cali` + 11 hex chars of SHA-1("<ns>.<pod>") for
    /// Kubernetes pods, `cali` + the container ID's first 11 characters otherwise.
    pub fn host_ifname(&self) -> String {
        if self.is_k8s() {
            names::veth_name_for_pod(names::DEFAULT_INTERFACE_PREFIX, &self.namespace, &self.pod)
        } else {
            let id: String = self.container_id.chars().take(11).collect();
            format!("{}{id}", names::DEFAULT_INTERFACE_PREFIX)
        }
    }

    /// Calico's legacy handle for the workload (released on DEL along with the real one).
    pub fn legacy_handle(&self) -> String {
        if self.is_k8s() {
            format!("{}.{}", self.namespace, self.pod)
        } else {
            self.container_id.clone()
        }
    }
}

/// The endpoint for a wired pod.
#[derive(Debug)]
pub struct EndpointParts<'a> {
    pub identity: &'a Identity,
    pub name: String,
    pub ips: &'a [IpNet],
    pub mac: &'a str,
    pub host_ifname: &'a str,
    pub profiles: Vec<String>,
    pub labels: Vec<(String, String)>,
}

pub fn build(p: EndpointParts<'_>) -> WorkloadEndpoint {
    let id = p.identity;
    let mut labels: BTreeMap<String, String> = p.labels.into_iter().collect();
    labels.insert(names::LABEL_NAMESPACE.into(), id.namespace.clone());
    labels.insert(names::LABEL_ORCHESTRATOR.into(), id.orchestrator.clone());
    let mut meta = ObjectMeta::namespaced(id.namespace.clone(), p.name);
    meta.labels = labels;
    WorkloadEndpoint::new(
        meta,
        WorkloadEndpointSpec {
            orchestrator: id.orchestrator.clone(),
            workload: if id.is_k8s() {
                String::new()
            } else {
                id.container_id.clone()
            },
            node: id.node.clone(),
            container_id: id.container_id.clone(),
            pod: id.pod.clone(),
            endpoint: id.endpoint.clone(),
            // Always host routes: /32 and /128, whatever the block size.
            ip_networks: p
                .ips
                .iter()
                .map(|n| IpNet::from(n.addr()).to_string())
                .collect(),
            profiles: p.profiles,
            interface_name: p.host_ifname.to_string(),
            mac: p.mac.to_string(),
            ..Default::default()
        },
    )
}

fn ds_error(what: &str, e: DatastoreError) -> CniError {
    if e.is_transient() {
        CniError::try_again(format!("{what}: {e}"))
    } else {
        CniError::calico(format!("{what}: {e}"))
    }
}

/// The endpoint by name, if it exists.
pub async fn get(
    rc: &ResourceClient,
    namespace: &str,
    name: &str,
) -> Result<Option<WorkloadEndpoint>, CniError> {
    match rc.get::<WorkloadEndpoint>(Some(namespace), name).await {
        Ok(w) => Ok(Some(w)),
        Err(DatastoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(ds_error(
            &format!("reading WorkloadEndpoint {namespace}/{name}"),
            e,
        )),
    }
}

/// Creates the endpoint, or replaces an existing one (an earlier sandbox of the same pod),
/// keeping its identity.
pub async fn write(
    rc: &ResourceClient,
    mut wep: WorkloadEndpoint,
    existing: Option<&WorkloadEndpoint>,
) -> Result<WorkloadEndpoint, CniError> {
    let what = format!(
        "writing WorkloadEndpoint {}/{}",
        wep.metadata.namespace.as_deref().unwrap_or_default(),
        wep.metadata.name
    );
    match existing {
        Some(old) => {
            wep.metadata.resource_version = old.metadata.resource_version.clone();
            wep.metadata.uid = old.metadata.uid.clone();
            wep.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
            rc.update(wep).await.map_err(|e| ds_error(&what, e))
        }
        None => match rc.create(wep.clone()).await {
            Ok(w) => Ok(w),
            // Written meanwhile (a retried ADD): take it over.
            Err(DatastoreError::AlreadyExists { .. }) => {
                let ns = wep.metadata.namespace.clone().unwrap_or_default();
                let current = get(rc, &ns, &wep.metadata.name).await?;
                Box::pin(write(rc, wep, current.as_ref())).await
            }
            Err(e) => Err(ds_error(&what, e)),
        },
    }
}

/// The endpoints on a node, in every namespace.
pub async fn on_node(rc: &ResourceClient, node: &str) -> Result<Vec<WorkloadEndpoint>, CniError> {
    let list = rc
        .list::<WorkloadEndpoint>(None)
        .await
        .map_err(|e| ds_error("listing WorkloadEndpoints", e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|w| w.spec.node == node)
        .collect())
}

/// What DEL did with the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Deleted; the host interface it named.
    Deleted(String),
    /// It belongs to a newer sandbox of the pod (another container ID): kept.
    Kept,
    Missing,
}

/// Deletes the endpoint if it is this container's (compared on the revision it was read at,
/// so a newer sandbox's endpoint written meanwhile is never deleted).
pub async fn delete_if_ours(
    rc: &ResourceClient,
    namespace: &str,
    name: &str,
    container_id: &str,
) -> Result<Removal, CniError> {
    for _ in 0..6 {
        let Some(w) = get(rc, namespace, name).await? else {
            return Ok(Removal::Missing);
        };
        if !w.spec.container_id.is_empty() && w.spec.container_id != container_id {
            return Ok(Removal::Kept);
        }
        let revision = w.metadata.resource_version.parse::<i64>().ok();
        match rc
            .delete::<WorkloadEndpoint>(Some(namespace), name, revision)
            .await
        {
            Ok(_) => return Ok(Removal::Deleted(w.spec.interface_name.clone())),
            Err(DatastoreError::NotFound { .. }) => return Ok(Removal::Missing),
            Err(DatastoreError::Conflict { .. }) => continue,
            Err(e) => {
                return Err(ds_error(
                    &format!("deleting WorkloadEndpoint {namespace}/{name}"),
                    e,
                ));
            }
        }
    }
    Err(CniError::try_again(format!(
        "WorkloadEndpoint {namespace}/{name} kept changing while being deleted"
    )))
}

/// Outside Kubernetes policy, endpoints use a profile named after the network: created once
/// (never updated), allowing everything out and everything in from the same network.
pub async fn ensure_network_profile(
    rc: &ResourceClient,
    network: &str,
    k8s: bool,
) -> Result<(), CniError> {
    use calico_api::kinds::{Action, EntityRule, Rule};
    match rc.get::<Profile>(None, network).await {
        Ok(_) => return Ok(()),
        Err(DatastoreError::NotFound { .. }) => {}
        Err(e) => return Err(ds_error(&format!("reading Profile {network}"), e)),
    }
    let profile = Profile::new(
        ObjectMeta::named(network),
        calico_api::kinds::ProfileSpec {
            // Kubernetes pods accept everything (policy does the rest); other workloads
            // accept their own network.
            ingress: vec![Rule {
                action: Action::Allow,
                source: EntityRule {
                    selector: if k8s {
                        String::new()
                    } else {
                        format!("has({network})")
                    },
                    ..Default::default()
                },
                ..Default::default()
            }],
            egress: vec![Rule {
                action: Action::Allow,
                ..Default::default()
            }],
            labels_to_apply: [(network.to_string(), String::new())].into(),
        },
    );
    match rc.create(profile).await {
        Ok(_) | Err(DatastoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(ds_error(&format!("creating Profile {network}"), e)),
    }
}
