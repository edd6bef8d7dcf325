//! Typed access to `projectcalico.org/v3` resources, with the rules Calico's client applies
//! on top of the raw datastore:
//!
//! - create: no `resourceVersion` may be given; defaults are filled in, the object is
//!   validated, `uid` and `creationTimestamp` are set, and an IP pool may not overlap another;
//! - update: `resourceVersion` is required (optimistic concurrency); `uid` and
//!   `creationTimestamp` are kept from the stored object; an IP pool's `cidr` and `blockSize`
//!   cannot change; a CalicoNodeStatus written without a status keeps the node's;
//! - apply: create, or update at the current revision;
//! - stored JSON never carries `resourceVersion` (it is the key's etcd revision on read);
//! - a Kubernetes NetworkPolicy is stored converted, as the Calico NetworkPolicy
//!   `knp.default.<name>`.

use std::sync::Arc;

use calico_api::codec::decode_stored;
use calico_api::kinds::{
    Action, ClusterInformationSpec, DEFAULT_TIER, DEFAULT_TIER_ORDER, KUBE_ADMIN_TIER,
    KUBE_ADMIN_TIER_ORDER, KUBE_BASELINE_TIER, KUBE_BASELINE_TIER_ORDER, TierSpec,
};
use calico_api::resource::{ClusterInformation, Tier};
use calico_api::{AnyResource, Kind, ObjectMeta, Resource};

use crate::error::{DatastoreError, Result};
use crate::{Datastore, Key, KeyPrefix, KvPair};

/// Resources of one kind with the revision they were listed at.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceList<R> {
    pub items: Vec<R>,
    pub revision: i64,
}

/// Typed resource access over any [`Datastore`].
#[derive(Debug, Clone)]
pub struct ResourceClient {
    ds: Arc<dyn Datastore>,
}

fn key_of(r: &AnyResource) -> Key {
    let m = r.metadata();
    Key::resource(r.kind(), m.namespace.as_deref(), &m.name)
}

/// Decodes a stored resource and sets its `resourceVersion` from the key's revision.
pub fn decode_kv(kind: Kind, kv: &KvPair) -> Result<AnyResource> {
    let mut r = decode_stored(kind, &kv.value).map_err(|e| DatastoreError::Corrupt {
        key: kv.key.path(),
        reason: e.to_string(),
    })?;
    r.metadata_mut().resource_version = kv.revision.to_string();
    Ok(r)
}

/// The JSON Calico stores for a resource: everything but `resourceVersion` and `selfLink`.
pub fn encode_for_storage(r: &AnyResource) -> Vec<u8> {
    let mut r = r.clone();
    let m = r.metadata_mut();
    m.resource_version.clear();
    m.self_link = None;
    serde_json::to_vec(&r.to_json()).unwrap_or_default()
}

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_revision(m: &ObjectMeta, kind: Kind) -> Result<i64> {
    m.resource_version.parse().ok().filter(|r: &i64| *r > 0).ok_or_else(|| DatastoreError::Forbidden {
        message: format!(
            "{kind} {:?}: metadata.resourceVersion {:?} is not a revision this datastore issued; get the resource again",
            m.name, m.resource_version
        ),
    })
}

/// A resource as it is stored: a Kubernetes NetworkPolicy becomes the Calico policy
/// `knp.default.<name>` that enforces it (as Calico names such policies), keeping the
/// document's resourceVersion.
pub fn normalise_kind(r: AnyResource) -> AnyResource {
    match r {
        AnyResource::K8sNetworkPolicy(knp) => {
            let rv = knp.metadata.resource_version.clone();
            let mut np = knp.to_calico().0.into_any();
            np.metadata_mut().resource_version = rv;
            np
        }
        other => other,
    }
}

impl ResourceClient {
    pub fn new(ds: Arc<dyn Datastore>) -> ResourceClient {
        ResourceClient { ds }
    }

    pub fn datastore(&self) -> &Arc<dyn Datastore> {
        &self.ds
    }

    /// One resource of any kind.
    pub async fn get_any(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<AnyResource> {
        let key = Key::resource(kind, namespace, name);
        let kv = self.ds.get(&key).await?;
        decode_kv(kind, &kv)
    }

    /// All resources of a kind (optionally in one namespace), sorted by namespace and name.
    pub async fn list_any(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<ResourceList<AnyResource>> {
        let prefix = KeyPrefix::Kind {
            kind,
            namespace: namespace.map(str::to_string),
        };
        let list = self.ds.list(&prefix).await?;
        let items = list
            .items
            .iter()
            .map(|kv| decode_kv(kind, kv))
            .collect::<Result<Vec<_>>>()?;
        Ok(ResourceList {
            items,
            revision: list.revision,
        })
    }

    /// Creates a resource; see the module docs for the rules applied.
    pub async fn create_any(&self, r: AnyResource) -> Result<AnyResource> {
        let mut r = normalise_kind(r);
        let kind = r.kind();
        if !r.metadata().resource_version.is_empty() {
            return Err(DatastoreError::Forbidden {
                message: format!(
                    "{kind} {:?}: metadata.resourceVersion must not be set when creating; remove it (or use apply)",
                    r.metadata().name
                ),
            });
        }
        r.apply_defaults();
        r.validate()?;
        let m = r.metadata_mut();
        if m.creation_timestamp.is_none() {
            m.creation_timestamp = Some(now_rfc3339());
        }
        if m.uid.is_empty() {
            m.uid = uuid::Uuid::new_v4().to_string();
        }
        self.check_cross_object(&r, None).await?;
        let kv = self.ds.create(&key_of(&r), encode_for_storage(&r)).await?;
        r.metadata_mut().resource_version = kv.revision.to_string();
        Ok(r)
    }

    /// Updates a resource at the revision in its `metadata.resourceVersion`.
    pub async fn update_any(&self, r: AnyResource) -> Result<AnyResource> {
        let mut r = normalise_kind(r);
        let kind = r.kind();
        if r.metadata().resource_version.is_empty() {
            return Err(DatastoreError::Forbidden {
                message: format!(
                    "{kind} {:?}: metadata.resourceVersion is required to update; get the current object first (or use apply)",
                    r.metadata().name
                ),
            });
        }
        let revision = parse_revision(r.metadata(), kind)?;
        r.apply_defaults();
        r.validate()?;
        let key = key_of(&r);
        let current = decode_kv(kind, &self.ds.get(&key).await?)?;
        {
            let (cm, m) = (current.metadata(), r.metadata_mut());
            if !m.uid.is_empty() && m.uid != cm.uid {
                // A different object of the same name (deleted and recreated): not retryable.
                return Err(DatastoreError::Forbidden {
                    message: format!(
                        "{kind} {:?}: metadata.uid {} belongs to an object that no longer exists (the current one is {}); remove uid and resourceVersion, or get the object again",
                        m.name, m.uid, cm.uid
                    ),
                });
            }
            m.uid.clone_from(&cm.uid);
            m.creation_timestamp.clone_from(&cm.creation_timestamp);
        }
        // A CalicoNodeStatus's status is the node's report: an update without one (a user
        // applying the spec) keeps it, as the status subresource does under Kubernetes.
        if let (AnyResource::CalicoNodeStatus(next), AnyResource::CalicoNodeStatus(old)) =
            (&mut r, &current)
            && next.status.is_none()
        {
            next.status.clone_from(&old.status);
        }
        self.check_cross_object(&r, Some(&current)).await?;
        let kv = self
            .ds
            .update(&key, encode_for_storage(&r), revision)
            .await?;
        r.metadata_mut().resource_version = kv.revision.to_string();
        Ok(r)
    }

    /// Creates the resource, or updates it at its current revision when it exists. A
    /// conflict with a concurrent writer is retried when the caller gave no revision.
    pub async fn apply_any(&self, r: AnyResource) -> Result<AnyResource> {
        let r = normalise_kind(r);
        let pinned = !r.metadata().resource_version.is_empty();
        for _ in 0..5 {
            match self
                .get_any(
                    r.kind(),
                    r.metadata().namespace.as_deref(),
                    &r.metadata().name,
                )
                .await
            {
                Err(DatastoreError::NotFound { .. }) => {
                    // As calicoctl does: a revision from an object that is gone is dropped.
                    let mut fresh = r.clone();
                    fresh.metadata_mut().resource_version.clear();
                    fresh.metadata_mut().uid.clear();
                    match self.create_any(fresh).await {
                        Err(DatastoreError::AlreadyExists { .. }) => continue,
                        other => return other,
                    }
                }
                Err(e) => return Err(e),
                Ok(current) => {
                    let mut next = r.clone();
                    if !pinned {
                        next.metadata_mut().resource_version =
                            current.metadata().resource_version.clone();
                    }
                    match self.update_any(next).await {
                        Err(DatastoreError::Conflict { .. } | DatastoreError::NotFound { .. })
                            if !pinned =>
                        {
                            continue;
                        }
                        other => return other,
                    }
                }
            }
        }
        Err(DatastoreError::Unavailable {
            backend: self.ds.backend_name().into(),
            reason: format!(
                "{} {:?} kept changing while being applied; try again",
                r.kind(),
                r.metadata().name
            ),
        })
    }

    /// Deletes a resource, only at `revision` when one is given. Returns what was deleted.
    pub async fn delete_any(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        revision: Option<i64>,
    ) -> Result<AnyResource> {
        let key = Key::resource(kind, namespace, name);
        let kv = self.ds.delete(&key, revision).await?;
        decode_kv(kind, &kv)
    }

    /// Rules that involve other objects: IP pools must not overlap; an IP pool's CIDR and
    /// block size are immutable. The overlap check reads and then writes, so two overlapping
    /// pools created at the same instant can both succeed (as in Calico).
    async fn check_cross_object(
        &self,
        r: &AnyResource,
        current: Option<&AnyResource>,
    ) -> Result<()> {
        let AnyResource::IpPool(pool) = r else {
            return Ok(());
        };
        if let Some(AnyResource::IpPool(old)) = current {
            if old.spec.network() != pool.spec.network() {
                return Err(DatastoreError::Forbidden {
                    message: format!(
                        "IPPool {:?}: spec.cidr cannot be changed (from {} to {}); create a new pool, disable this one and migrate workloads",
                        pool.metadata.name, old.spec.cidr, pool.spec.cidr
                    ),
                });
            }
            if old.spec.effective_block_size() != pool.spec.effective_block_size() {
                return Err(DatastoreError::Forbidden {
                    message: format!(
                        "IPPool {:?}: spec.blockSize cannot be changed (from {} to {}); create a new pool instead",
                        pool.metadata.name,
                        old.spec.effective_block_size(),
                        pool.spec.effective_block_size()
                    ),
                });
            }
            return Ok(());
        }
        let Some(net) = pool.spec.network() else {
            return Ok(());
        };
        let others = self.list_any(Kind::IpPool, None).await?;
        for other in &others.items {
            if let AnyResource::IpPool(o) = other
                && o.metadata.name != pool.metadata.name
                && let Some(onet) = o.spec.network()
                && (onet.contains(&net.network()) || net.contains(&onet.network()))
            {
                return Err(DatastoreError::Forbidden {
                    message: format!(
                        "IPPool {:?}: spec.cidr {net} overlaps IPPool {:?} ({onet}); pools must not overlap",
                        pool.metadata.name, o.metadata.name
                    ),
                });
            }
        }
        Ok(())
    }

    /// Typed get.
    pub async fn get<R: Resource>(&self, namespace: Option<&str>, name: &str) -> Result<R> {
        typed(self.get_any(R::KIND, namespace, name).await?)
    }

    /// Typed list.
    pub async fn list<R: Resource>(&self, namespace: Option<&str>) -> Result<ResourceList<R>> {
        let l = self.list_any(R::KIND, namespace).await?;
        Ok(ResourceList {
            items: l.items.into_iter().map(typed).collect::<Result<_>>()?,
            revision: l.revision,
        })
    }

    pub async fn create<R: Resource>(&self, r: R) -> Result<R> {
        typed(self.create_any(r.into_any()).await?)
    }

    pub async fn update<R: Resource>(&self, r: R) -> Result<R> {
        typed(self.update_any(r.into_any()).await?)
    }

    pub async fn apply<R: Resource>(&self, r: R) -> Result<R> {
        typed(self.apply_any(r.into_any()).await?)
    }

    pub async fn delete<R: Resource>(
        &self,
        namespace: Option<&str>,
        name: &str,
        revision: Option<i64>,
    ) -> Result<R> {
        typed(self.delete_any(R::KIND, namespace, name, revision).await?)
    }

    /// Calico's `EnsureInitialized`: the `default` ClusterInformation (a new cluster GUID,
    /// `datastoreReady: true`) and the built-in tiers, each created only if missing.
    pub async fn ensure_initialized(&self, calico_version: &str, cluster_type: &str) -> Result<()> {
        let info = ClusterInformation::new(
            ObjectMeta::named("default"),
            ClusterInformationSpec {
                cluster_guid: uuid::Uuid::new_v4().simple().to_string(),
                cluster_type: cluster_type.to_string(),
                calico_version: calico_version.to_string(),
                datastore_ready: Some(true),
                variant: "Calico".to_string(),
            },
        );
        ignore_exists(self.create(info).await)?;
        for (name, order, action) in [
            (DEFAULT_TIER, DEFAULT_TIER_ORDER, Action::Deny),
            (KUBE_ADMIN_TIER, KUBE_ADMIN_TIER_ORDER, Action::Pass),
            (KUBE_BASELINE_TIER, KUBE_BASELINE_TIER_ORDER, Action::Pass),
        ] {
            let tier = Tier::new(
                ObjectMeta::named(name),
                TierSpec {
                    order: Some(order),
                    default_action: Some(action),
                },
            );
            ignore_exists(self.create(tier).await)?;
        }
        Ok(())
    }
}

fn ignore_exists<T>(r: Result<T>) -> Result<()> {
    match r {
        Ok(_) | Err(DatastoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn typed<R: Resource>(r: AnyResource) -> Result<R> {
    R::from_any(r).map_err(|other| DatastoreError::Corrupt {
        key: other.metadata().name.clone(),
        reason: format!("expected a {}, found a {}", R::KIND, other.kind()),
    })
}
