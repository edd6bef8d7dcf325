//! `calicoctl datastore migrate export|import|lock|unlock` (Calico's
//! `commands/datastore/migrate/*.go`): lock the datastore, export its resources and IPAM
//! state to one file, import that file into another datastore, unlock.
//!
//! Calico exports from etcd and imports into the Kubernetes datastore. calico-rs has only
//! etcd, so `import` writes into an etcd datastore (an empty one, e.g. a new cluster or one
//! being restored from a backup), and the export also carries what Calico leaves to
//! Kubernetes (workload endpoints, profiles, IPAM configuration), so that the restored
//! datastore is complete.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use calico_api::codec::{decode_documents, to_json_pretty};
use calico_api::kinds::{DEFAULT_TIER, KUBE_ADMIN_TIER, KUBE_BASELINE_TIER};
use calico_api::resource::{AnyResource, ClusterInformation, Kind};
use calico_datastore::ResourceClient;

use crate::crud::{Scope, Write};
use crate::ipam_dump::IpamDump;
use crate::printer::{Lookups, Output, Printed, render};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Migrate the contents of an etcdv3 datastore (export, import, lock, unlock).
    ///
    /// Example: calicoctl datastore migrate lock
    Migrate {
        #[command(subcommand)]
        command: Migrate,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum Migrate {
    /// Export the contents of the etcdv3 datastore to yaml.
    ///
    /// Resources are exported in yaml, the cluster information and IPAM data in json. Save
    /// the output to a file for later use with the import command. The datastore must be
    /// locked first.
    ///
    /// Exported: IPPools, BGPPeers, Tiers, GlobalNetworkPolicies,
    /// StagedGlobalNetworkPolicies, GlobalNetworkSets, HostEndpoints,
    /// KubeControllersConfigurations, NetworkPolicies, StagedNetworkPolicies,
    /// StagedKubernetesNetworkPolicies, NetworkSets, Nodes, BGPConfigurations,
    /// FelixConfigurations, IPReservations, BGPFilters, then (unlike
    /// Calico, whose import target gets them from Kubernetes) IPAMConfigurations, Profiles
    /// and WorkloadEndpoints.
    ///
    /// Example: calicoctl datastore migrate export > etcd-data.txt
    Export,
    /// Store the resources of an exported file into an empty etcdv3 datastore.
    ///
    /// Calico imports into the Kubernetes datastore; calico-rs imports into etcd: point the
    /// configuration at the new (or wiped) etcd. The target is locked and stays locked:
    /// unlock it when the cluster should use it.
    ///
    /// Example: ETCD_ENDPOINTS=http://new-etcd:2379 calicoctl datastore migrate import -f etcd-data.txt
    Import {
        /// Filename to use to import resources. If set to "-" loads from stdin.
        #[arg(short = 'f', long = "filename", value_name = "FILENAME")]
        filename: PathBuf,
    },
    /// Lock the datastore to prevent changes from occurring during datastore migration.
    ///
    /// Sets ClusterInformation datastoreReady=false: Calico components stop acting on
    /// changes, but resources can still be created and updated.
    ///
    /// Example: calicoctl datastore migrate lock
    Lock,
    /// Unlock the datastore to allow changes once the migration is completed.
    ///
    /// Example: calicoctl datastore migrate unlock
    Unlock,
}

/// What is exported, in Calico's order (tiers before policies, nodes before what names
/// nodes), with the display names Calico uses.
const EXPORTED: &[(Kind, &str)] = &[
    (Kind::IpPool, "IPPools"),
    (Kind::BgpPeer, "BGPPeers"),
    (Kind::Tier, "Tiers"),
    (Kind::GlobalNetworkPolicy, "GlobalNetworkPolicies"),
    (
        Kind::StagedGlobalNetworkPolicy,
        "StagedGlobalNetworkPolicies",
    ),
    (Kind::GlobalNetworkSet, "GlobalNetworkSets"),
    (Kind::HostEndpoint, "HostEndpoints"),
    (
        Kind::KubeControllersConfiguration,
        "KubeControllersConfigurations",
    ),
    (Kind::NetworkPolicy, "NetworkPolicies"),
    (Kind::StagedNetworkPolicy, "StagedNetworkPolicies"),
    // Calico's display name, doubled "Policies" included.
    (
        Kind::StagedKubernetesNetworkPolicy,
        "StagedKubernetesNetworkPolicyPolicies",
    ),
    (Kind::NetworkSet, "NetworkSets"),
    (Kind::Node, "Nodes"),
    (Kind::BgpConfiguration, "BGPConfigurations"),
    (Kind::FelixConfiguration, "FelixConfigurations"),
    (Kind::IpReservation, "IPReservations"),
    (Kind::BgpFilter, "BGPFilters"),
    // calico-rs: with etcd on both sides nothing else recreates these.
    (Kind::IpamConfiguration, "IPAMConfigurations"),
    (Kind::Profile, "Profiles"),
    (Kind::WorkloadEndpoint, "WorkloadEndpoints"),
];

const SEPARATOR: &str = "===\n";

/// Whether ClusterInformation says the datastore is locked (Calico's `CheckLocked`).
async fn locked(rc: &ResourceClient) -> Result<bool> {
    let ci = rc
        .get::<ClusterInformation>(None, "default")
        .await
        .map_err(|e| {
            anyhow!("error while checking if datastore was locked: error retrieving ClusterInformation: {e}")
        })?;
    Ok(!ci.spec.is_ready())
}

async fn set_ready(rc: &ResourceClient, ready: bool, verb: &str) -> Result<()> {
    let mut ci = rc
        .get::<ClusterInformation>(None, "default")
        .await
        .map_err(|e| {
            let hint = match (&e, ready) {
                (calico_datastore::DatastoreError::NotFound { .. }, true) => {
                    " (nothing to unlock: the datastore was never locked)"
                }
                _ => "",
            };
            anyhow!("error retrieving ClusterInformation for {verb}: {e}{hint}")
        })?;
    ci.spec.datastore_ready = Some(ready);
    rc.update(ci)
        .await
        .map_err(|e| anyhow!("error updating ClusterInformation for {verb}: {e}"))?;
    Ok(())
}

/// `lock`: datastoreReady=false (creating ClusterInformation first if there is none).
pub async fn lock(rc: &ResourceClient) -> Result<String> {
    rc.ensure_initialized("", "").await.map_err(|e| {
        anyhow!("unable to initialize cluster information for the datastore migration: {e}")
    })?;
    set_ready(rc, false, "locking").await?;
    Ok("Datastore locked.\n".into())
}

/// `unlock`: datastoreReady=true.
pub async fn unlock(rc: &ResourceClient) -> Result<String> {
    set_ready(rc, true, "unlocking").await?;
    Ok("Datastore unlocked.\n".into())
}

/// `export`: every exported kind as a YAML list followed by `---`, then `===`, the
/// ClusterInformation as JSON, `===`, and the IPAM records as JSON.
pub async fn export(rc: &ResourceClient) -> Result<String> {
    if !locked(rc).await? {
        bail!(
            "datastore is not locked. Run the `calicoctl datastore migrate lock` command in order to begin migration"
        );
    }
    let mut out = String::new();
    for (kind, display) in EXPORTED {
        let mut list = rc
            .list_any(*kind, None)
            .await
            .map_err(|e| anyhow!("listing {display} for export: {e}"))?;
        for r in &mut list.items {
            let m = r.metadata_mut();
            m.uid.clear();
            m.resource_version.clear();
            m.creation_timestamp = None;
            m.deletion_timestamp = None;
        }
        let printed = Printed::List {
            kind: *kind,
            items: list.items,
            revision: list.revision,
        };
        out.push_str(
            &render(&[printed], &Output::Yaml, false, &Lookups::default())
                .map_err(|e| anyhow!("unable to print {display} for export: {e}"))?,
        );
        out.push_str("---\n");
    }
    out.push_str(SEPARATOR);
    let ci = rc
        .get_any(Kind::ClusterInformation, None, "default")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    out.push_str(&to_json_pretty(&ci)?);
    out.push('\n');
    out.push_str(SEPARATOR);
    let dump = IpamDump::read(rc.datastore().as_ref()).await?;
    out.push_str(&serde_json::to_string_pretty(&dump)?);
    out.push('\n');
    Ok(out)
}

fn builtin_tier(name: &str) -> bool {
    [DEFAULT_TIER, KUBE_ADMIN_TIER, KUBE_BASELINE_TIER].contains(&name)
}

/// The first kind of which the target already holds resources (beyond what every
/// initialised datastore holds: ClusterInformation and the built-in tiers).
async fn first_existing(rc: &ResourceClient) -> Result<Option<Kind>> {
    for (kind, display) in EXPORTED {
        let list = rc.list_any(*kind, None).await.map_err(|e| {
            anyhow!("failed to retrieve {display} resources during datastore check: {e}")
        })?;
        let found = list
            .items
            .iter()
            .any(|r| !(*kind == Kind::Tier && builtin_tier(&r.metadata().name)));
        if found {
            return Ok(Some(*kind));
        }
    }
    Ok(None)
}

/// `import`: into an empty etcd datastore, which is locked first and left locked. What was
/// done so far is in `out` also when an error is returned.
pub async fn import(rc: &ResourceClient, text: &str, source: &str, out: &mut String) -> Result<()> {
    const CLEAR: &str = "Import into a new etcd, or clear out all Calico data first (etcdctl del --prefix /calico/)";
    if let Some(kind) = first_existing(rc).await? {
        bail!(
            "datastore already has Calico resources: found existing Calico '{kind}' resource. {CLEAR}"
        );
    }
    let existing = IpamDump::read(rc.datastore().as_ref())
        .await
        .map_err(|e| anyhow!("failed to retrieve IPAM resources during datastore check: {e}"))?;
    if !existing.is_empty() {
        bail!("datastore already has Calico resources: found existing IPAM resources. {CLEAR}");
    }
    rc.ensure_initialized("", "").await.map_err(|e| {
        anyhow!("unable to initialize cluster information for the datastore migration: {e}")
    })?;
    if !locked(rc).await? {
        let locked = lock(rc)
            .await
            .map_err(|e| anyhow!("error while attempting to lock the datastore for import: {e}"))?;
        out.push_str(&locked);
    }

    let parts: Vec<&str> = text.split(SEPARATOR).collect();
    let [v3, cluster_info, ipam] = parts.as_slice() else {
        bail!(
            "error while reading migration file: imported file: {source} is improperly formatted. Try recreating with 'calicoctl datastore migrate export'"
        );
    };

    let resources = decode_documents(v3)
        .map_err(|e| anyhow!("failed to import v3 resources: failed to execute command: {e}"))?;
    if resources.is_empty() {
        bail!(
            "failed to import v3 resources: {source} holds no resources before its first '===' line; recreate it with 'calicoctl datastore migrate export'"
        );
    }
    let applied = crate::crud::write(rc, Write::Apply, resources, &Scope::default()).await;
    out.push_str(&applied.stdout);
    if !applied.ok {
        bail!(
            "failed to import v3 resources: {}",
            applied.stderr.trim_end()
        );
    }

    update_cluster_info(rc, cluster_info)
        .await
        .map_err(|e| anyhow!("failed to update cluster information: {e:#}"))?;

    out.push_str("Importing IPAM resources\n");
    let dump: IpamDump =
        serde_json::from_str(ipam).map_err(|e| anyhow!("failed to read IPAM resources: {e}"))?;
    // Calico fails here when the file holds no IPAM records; a cluster that has allocated
    // nothing yet is not an error.
    let (handled, errs) = dump.write(rc.datastore().as_ref()).await;
    if !errs.is_empty() {
        if handled > errs.len() {
            out.push_str(&format!(
                "Partial success: applied the first {handled} out of {} resources:\n",
                dump.len()
            ));
        }
        bail!("hit error(s): [{}]", errs.join(" "));
    }
    out.push_str(&format!(
        "Successfully applied {handled} IPAM resource(s)\n"
    ));
    out.push_str("Datastore information successfully imported. Please refer to the datastore migration documentation for next steps.\n");
    Ok(())
}

/// The exported cluster's GUID and Calico version carry over to the target.
async fn update_cluster_info(rc: &ResourceClient, json: &str) -> Result<()> {
    let exported = match decode_documents(json)
        .context("error reading exported cluster info for migration")?
        .into_iter()
        .next()
    {
        Some(AnyResource::ClusterInformation(ci)) => ci,
        _ => bail!(
            "error reading exported cluster info for migration: the second section is not a ClusterInformation"
        ),
    };
    let mut ci = rc
        .get::<ClusterInformation>(None, "default")
        .await
        .map_err(|e| anyhow!("error retrieving current cluster info for migration: {e}"))?;
    ci.spec.cluster_guid = exported.spec.cluster_guid.clone();
    ci.spec.calico_version = exported.spec.calico_version.clone();
    rc.update(ci)
        .await
        .map_err(|e| anyhow!("error updating current cluster info for migration: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use calico_datastore::memory::MemoryDatastore;
    use calico_datastore::{Key, KeyPrefix};
    use calico_ipam::{AutoAssignArgs, Ipam};

    use super::*;

    const RESOURCES: &str = "\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1}
spec: {cidr: 10.65.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: shop}
spec: {selector: app == 'web', ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blocked}
spec: {nets: [192.0.2.0/24]}
";

    fn store() -> ResourceClient {
        ResourceClient::new(Arc::new(MemoryDatastore::new()))
    }

    async fn populated() -> ResourceClient {
        let rc = store();
        let o = crate::crud::write(
            &rc,
            Write::Apply,
            decode_documents(RESOURCES).unwrap(),
            &Scope::default(),
        )
        .await;
        assert!(o.ok, "{o:?}");
        let ipam = Ipam::new(rc.datastore().clone());
        ipam.auto_assign(&AutoAssignArgs::new("node1", "k8s-pod-network.a", 2, 0))
            .await
            .unwrap();
        rc
    }

    /// Every stored key and its JSON value, for comparing datastores.
    async fn contents(rc: &ResourceClient, skip_cluster_info: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for kv in rc
            .datastore()
            .list(&KeyPrefix::Everything)
            .await
            .unwrap()
            .items
        {
            if skip_cluster_info && kv.key.kind() == Some(Kind::ClusterInformation) {
                continue;
            }
            let mut v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
            if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.remove("uid");
                m.remove("creationTimestamp");
            }
            out.push((kv.key.path(), v.to_string()));
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn lock_and_unlock_flip_datastore_ready() {
        let rc = store();
        assert_eq!(
            unlock(&rc).await.unwrap_err().to_string(),
            "error retrieving ClusterInformation for unlocking: /calico/resources/v3/projectcalico.org/clusterinformations/default does not exist (nothing to unlock: the datastore was never locked)"
        );
        assert_eq!(lock(&rc).await.unwrap(), "Datastore locked.\n");
        assert!(locked(&rc).await.unwrap());
        assert_eq!(unlock(&rc).await.unwrap(), "Datastore unlocked.\n");
        assert!(!locked(&rc).await.unwrap());
    }

    #[tokio::test]
    async fn export_needs_a_locked_datastore() {
        let rc = populated().await;
        rc.ensure_initialized("", "").await.unwrap();
        assert_eq!(
            export(&rc).await.unwrap_err().to_string(),
            "datastore is not locked. Run the `calicoctl datastore migrate lock` command in order to begin migration"
        );
    }

    #[tokio::test]
    async fn export_writes_calicos_three_sections() {
        let rc = populated().await;
        lock(&rc).await.unwrap();
        let text = export(&rc).await.unwrap();
        let parts: Vec<&str> = text.split(SEPARATOR).collect();
        assert_eq!(parts.len(), 3, "{text}");
        assert!(parts[0].starts_with("apiVersion: projectcalico.org/v3\nitems:\n"));
        assert_eq!(parts[0].matches("---\n").count(), EXPORTED.len());
        assert!(parts[0].contains("kind: IPPoolList"));
        assert!(parts[0].contains("name: allow-web\n    namespace: shop"));
        assert!(!parts[0].contains("uid:"));
        assert!(!parts[0].contains("creationTimestamp"));
        assert!(parts[1].contains("\"kind\": \"ClusterInformation\""));
        assert!(parts[1].contains("\"datastoreReady\": false"));
        let ipam: serde_json::Value = serde_json::from_str(parts[2]).unwrap();
        assert_eq!(ipam["blocks"].as_array().unwrap().len(), 1);
        assert_eq!(ipam["block_affinities"].as_array().unwrap().len(), 1);
        assert_eq!(
            ipam["handles"][0]["Key"],
            "/calico/ipam/v2/handle/k8s-pod-network.a"
        );
        assert_eq!(ipam["handles"][0]["TTL"], 0);
        assert!(ipam.get("config").is_none());
    }

    #[tokio::test]
    async fn import_restores_an_export_into_an_empty_datastore() {
        let from = populated().await;
        lock(&from).await.unwrap();
        let text = export(&from).await.unwrap();
        let to = store();
        let mut out = String::new();
        import(&to, &text, "etcd-data.txt", &mut out).await.unwrap();
        assert_eq!(
            out,
            "Datastore locked.\nSuccessfully applied 6 resource(s)\nImporting IPAM resources\n\
             Successfully applied 3 IPAM resource(s)\n\
             Datastore information successfully imported. Please refer to the datastore migration documentation for next steps.\n"
        );
        assert_eq!(contents(&from, true).await, contents(&to, true).await);
        let a = from
            .get::<ClusterInformation>(None, "default")
            .await
            .unwrap();
        let b = to.get::<ClusterInformation>(None, "default").await.unwrap();
        assert_eq!(a.spec.cluster_guid, b.spec.cluster_guid);
        assert!(!b.spec.is_ready(), "the target stays locked");

        // Again into the same datastore: refused, nothing written.
        let mut out = String::new();
        let e = import(&to, &text, "etcd-data.txt", &mut out)
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "datastore already has Calico resources: found existing Calico 'IPPool' resource."
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn import_refuses_files_that_are_not_exports() {
        let to = store();
        let mut out = String::new();
        let e = import(&to, "kind: IPPool\n", "x.yaml", &mut out)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "error while reading migration file: imported file: x.yaml is improperly formatted. Try recreating with 'calicoctl datastore migrate export'"
        );
        // IPAM records in the way count as existing data too.
        to.datastore()
            .create(&Key::Handle { id: "h".into() }, br#"{"block":{}}"#.to_vec())
            .await
            .unwrap();
        let e = import(&to, "===\n{}\n===\n{}\n", "x", &mut out)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("found existing IPAM resources"),
            "{e}"
        );
    }
}
