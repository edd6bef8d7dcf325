//! Typed resources over both backends: Calico's create/update/apply/delete rules.

#![allow(clippy::unwrap_used)]

mod common;

use calico_api::codec::decode_documents;
use calico_api::resource::{ClusterInformation, IpPool, NetworkPolicy, Tier};
use calico_api::{AnyResource, Kind, ObjectMeta};
use calico_datastore::{DatastoreError, Key, ResourceClient};
use common::Backend;

fn pool(name: &str, cidr: &str) -> IpPool {
    IpPool::new(
        ObjectMeta::named(name),
        calico_api::IpPoolSpec {
            cidr: cidr.into(),
            ..Default::default()
        },
    )
}

async fn create_fills_in_identity_and_defaults(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let p = c.create(pool("p1", "10.1.0.0/16")).await.unwrap();
    assert!(!p.metadata.uid.is_empty());
    assert!(
        p.metadata
            .creation_timestamp
            .as_deref()
            .unwrap()
            .ends_with('Z')
    );
    assert!(!p.metadata.resource_version.is_empty());
    assert_eq!(p.spec.block_size, Some(26));
    let got: IpPool = c.get(None, "p1").await.unwrap();
    assert_eq!(got, p);
    // The stored JSON is Calico's: full object, no resourceVersion.
    let raw = b
        .ds()
        .get(&Key::resource(Kind::IpPool, None, "p1"))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
    assert_eq!(v["apiVersion"], "projectcalico.org/v3");
    assert_eq!(v["kind"], "IPPool");
    assert_eq!(v["spec"]["cidr"], "10.1.0.0/16");
    assert!(v["metadata"].get("resourceVersion").is_none());
}

async fn create_rejects_invalid_objects_and_writes_nothing(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let err = c.create(pool("p1", "10.1.0.1/16")).await.unwrap_err();
    assert!(matches!(err, DatastoreError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("spec.cidr"), "{err}");
    let mut with_rv = pool("p2", "10.2.0.0/16");
    with_rv.metadata.resource_version = "5".into();
    assert!(matches!(
        c.create(with_rv).await,
        Err(DatastoreError::Forbidden { .. })
    ));
    assert!(c.list::<IpPool>(None).await.unwrap().items.is_empty());
}

async fn pools_may_not_overlap_and_their_cidr_is_immutable(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let p = c.create(pool("p1", "10.0.0.0/16")).await.unwrap();
    let err = c.create(pool("p2", "10.0.128.0/17")).await.unwrap_err();
    assert!(err.to_string().contains("overlaps IPPool \"p1\""), "{err}");
    let mut moved = p.clone();
    moved.spec.cidr = "10.9.0.0/16".into();
    let err = c.update(moved).await.unwrap_err();
    assert!(
        err.to_string().contains("spec.cidr cannot be changed"),
        "{err}"
    );
    let mut resized = p.clone();
    resized.spec.block_size = Some(28);
    assert!(
        c.update(resized)
            .await
            .unwrap_err()
            .to_string()
            .contains("blockSize cannot be changed")
    );
    let mut nat = p.clone();
    nat.spec.nat_outgoing = true;
    let updated = c.update(nat).await.unwrap();
    assert!(updated.spec.nat_outgoing);
    assert_eq!(updated.metadata.uid, p.metadata.uid);
    assert_eq!(
        updated.metadata.creation_timestamp,
        p.metadata.creation_timestamp
    );
}

async fn update_needs_the_current_revision(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let t = c
        .create(Tier::new(
            ObjectMeta::named("t1"),
            calico_api::TierSpec {
                order: Some(5.0),
                default_action: None,
            },
        ))
        .await
        .unwrap();
    let mut no_rv = t.clone();
    no_rv.metadata.resource_version.clear();
    assert!(matches!(
        c.update(no_rv).await,
        Err(DatastoreError::Forbidden { .. })
    ));
    let mut first = t.clone();
    first.spec.order = Some(6.0);
    c.update(first).await.unwrap();
    let mut stale = t.clone();
    stale.spec.order = Some(7.0);
    assert!(matches!(
        c.update(stale).await,
        Err(DatastoreError::Conflict { .. })
    ));
    assert_eq!(
        c.get::<Tier>(None, "t1").await.unwrap().spec.order,
        Some(6.0)
    );
}

async fn apply_creates_then_updates(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let a = c.apply(pool("p1", "10.0.0.0/16")).await.unwrap();
    let mut again = pool("p1", "10.0.0.0/16");
    again.spec.nat_outgoing = true;
    let b2 = c.apply(again).await.unwrap();
    assert!(b2.spec.nat_outgoing);
    assert_eq!(a.metadata.uid, b2.metadata.uid);
    assert_ne!(a.metadata.resource_version, b2.metadata.resource_version);
}

async fn delete_returns_the_deleted_object(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let p = c.create(pool("p1", "10.0.0.0/16")).await.unwrap();
    let stale: i64 = p.metadata.resource_version.parse::<i64>().unwrap() - 1;
    assert!(matches!(
        c.delete::<IpPool>(None, "p1", Some(stale)).await,
        Err(DatastoreError::Conflict { .. })
    ));
    let gone: IpPool = c.delete(None, "p1", None).await.unwrap();
    assert_eq!(gone.spec.cidr, "10.0.0.0/16");
    assert!(matches!(
        c.get::<IpPool>(None, "p1").await,
        Err(DatastoreError::NotFound { .. })
    ));
}

async fn kubernetes_policies_are_stored_as_calico_policies(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let knp = decode_documents(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
    )
    .unwrap()
    .remove(0);
    let stored = c.create_any(knp).await.unwrap();
    assert_eq!(stored.kind(), Kind::NetworkPolicy);
    let np: NetworkPolicy = c.get(Some("x"), "knp.default.deny").await.unwrap();
    assert_eq!(np.spec.order, Some(1000.0));
    assert_eq!(np.spec.selector, "projectcalico.org/orchestrator == 'k8s'");
}

async fn initialisation_creates_cluster_information_and_tiers_once(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    c.ensure_initialized("v3.30.0", "k8s,bgp").await.unwrap();
    let first: ClusterInformation = c.get(None, "default").await.unwrap();
    c.ensure_initialized("v3.30.0", "k8s,bgp").await.unwrap();
    let second: ClusterInformation = c.get(None, "default").await.unwrap();
    assert_eq!(first, second, "the cluster GUID never changes");
    assert_eq!(first.spec.cluster_guid.len(), 32);
    assert!(first.spec.is_ready());
    let tiers = c.list_any(Kind::Tier, None).await.unwrap();
    let names: Vec<_> = tiers
        .items
        .iter()
        .map(|t| t.metadata().name.clone())
        .collect();
    assert_eq!(names, ["default", "kube-admin", "kube-baseline"]);
    for t in &tiers.items {
        t.validate().unwrap();
        assert!(matches!(t, AnyResource::Tier(_)));
    }
}

async fn apply_survives_stale_identity_and_refuses_a_foreign_uid(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let first = c.create(pool("p1", "10.0.0.0/16")).await.unwrap();
    // An exported copy (with resourceVersion and uid) re-applied after the object is gone is
    // simply created again, as calicoctl does.
    c.delete::<IpPool>(None, "p1", None).await.unwrap();
    let again = c.apply(first.clone()).await.unwrap();
    assert_ne!(again.metadata.uid, first.metadata.uid);
    // Updating with the old object's uid is refused, and not as a retryable conflict.
    let mut stale = first.clone();
    stale.metadata.resource_version = again.metadata.resource_version.clone();
    let err = c.update(stale).await.unwrap_err();
    assert!(matches!(err, DatastoreError::Forbidden { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("no longer exists"), "{err}");
    // A revision of 0 is not one the datastore issued.
    let mut zero = again.clone();
    zero.metadata.resource_version = "0".into();
    assert!(matches!(
        c.update(zero).await,
        Err(DatastoreError::Forbidden { .. })
    ));
}

async fn staged_policies_are_stored_apart_from_the_policies_they_preview(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let docs = decode_documents(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {selector: all()}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {stagedAction: Delete}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: g}\nspec: {selector: all()}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\nmetadata: {name: k, namespace: x}\nspec: {podSelector: {}}\n",
    )
    .unwrap();
    for d in docs {
        c.create_any(d).await.unwrap();
    }
    assert_eq!(
        c.list_any(Kind::NetworkPolicy, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    for (kind, path) in [
        (
            Kind::StagedNetworkPolicy,
            "/calico/resources/v3/projectcalico.org/stagednetworkpolicies/x/p",
        ),
        (
            Kind::StagedGlobalNetworkPolicy,
            "/calico/resources/v3/projectcalico.org/stagedglobalnetworkpolicies/g",
        ),
        (
            Kind::StagedKubernetesNetworkPolicy,
            "/calico/resources/v3/projectcalico.org/stagedkubernetesnetworkpolicies/x/k",
        ),
    ] {
        let list = c.list_any(kind, None).await.unwrap();
        assert_eq!(list.items.len(), 1, "{kind}");
        // Stored where Calico stores it.
        let key = Key::parse(path).unwrap();
        assert!(
            c.datastore().get(&key).await.is_ok(),
            "{kind} not at {path}"
        );
    }
    let staged = c
        .get_any(Kind::StagedNetworkPolicy, Some("x"), "p")
        .await
        .unwrap();
    assert_eq!(
        staged.to_json()["spec"],
        serde_json::json!({"stagedAction": "Delete", "tier": "default"})
    );
}

async fn a_node_status_update_without_status_keeps_the_nodes_report(b: &Backend) {
    let c = ResourceClient::new(b.ds());
    let doc = |status: &str| {
        decode_documents(&format!(
            "apiVersion: projectcalico.org/v3\nkind: CalicoNodeStatus\nmetadata: {{name: s}}\nspec: {{node: n1, classes: [BGP], updatePeriodSeconds: 10}}\n{status}"
        ))
        .unwrap()
        .remove(0)
    };
    c.create_any(doc("status: {bgp: {numberEstablishedV4: 2}}\n"))
        .await
        .unwrap();
    let applied = c.apply_any(doc("")).await.unwrap();
    assert_eq!(applied.to_json()["status"]["bgp"]["numberEstablishedV4"], 2);
    let got = c.get_any(Kind::CalicoNodeStatus, None, "s").await.unwrap();
    assert_eq!(got.to_json()["status"]["bgp"]["numberEstablishedV4"], 2);
    // The node's own write, with a status, replaces it.
    let applied = c
        .apply_any(doc("status: {bgp: {numberEstablishedV4: 3}}\n"))
        .await
        .unwrap();
    assert_eq!(applied.to_json()["status"]["bgp"]["numberEstablishedV4"], 3);
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(&super::Backend::memory()).await })*
        }
        mod etcd {
            $(#[tokio::test] async fn $name() { super::$name(&super::Backend::etcd().await).await })*
        }
    };
}

both_backends!(
    staged_policies_are_stored_apart_from_the_policies_they_preview,
    a_node_status_update_without_status_keeps_the_nodes_report,
    create_fills_in_identity_and_defaults,
    create_rejects_invalid_objects_and_writes_nothing,
    pools_may_not_overlap_and_their_cidr_is_immutable,
    update_needs_the_current_revision,
    apply_creates_then_updates,
    delete_returns_the_deleted_object,
    kubernetes_policies_are_stored_as_calico_policies,
    initialisation_creates_cluster_information_and_tiers_once,
    apply_survives_stale_identity_and_refuses_a_foreign_uid,
);
