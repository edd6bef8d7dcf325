//! What makes the allocator fast, shown to change nothing it guarantees: concurrent requests
//! on one block share transactions, remembered blocks and handles that went stale cost a
//! retry and never a duplicate, and watched inputs follow pool and reservation changes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use calico_api::ObjectMeta;
use calico_api::kinds::{IpPoolSpec, IpReservationSpec};
use calico_api::resource::{IpPool, IpReservation};
use calico_datastore::memory::MemoryDatastore;
use calico_datastore::{
    Datastore, Key, KeyPrefix, KvList, KvPair, ResourceClient, Result as DsResult, TxnOutcome,
    TxnWrite, WatchStream,
};
use calico_ipam::inputs::ClusterView;
use calico_ipam::model::Handle;
use calico_ipam::{AutoAssignArgs, Ipam, IpamError};
use tokio_util::sync::CancellationToken;

/// A datastore whose transactions take a while, so that requests pile up behind them.
#[derive(Debug)]
struct SlowTxn {
    inner: MemoryDatastore,
    delay: Duration,
}

#[async_trait::async_trait]
impl Datastore for SlowTxn {
    fn backend_name(&self) -> &'static str {
        "slow"
    }
    async fn get(&self, key: &Key) -> DsResult<KvPair> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &KeyPrefix) -> DsResult<KvList> {
        self.inner.list(prefix).await
    }
    async fn create(&self, key: &Key, value: Vec<u8>) -> DsResult<KvPair> {
        self.inner.create(key, value).await
    }
    async fn update(&self, key: &Key, value: Vec<u8>, revision: i64) -> DsResult<KvPair> {
        self.inner.update(key, value, revision).await
    }
    async fn apply(&self, key: &Key, value: Vec<u8>) -> DsResult<KvPair> {
        self.inner.apply(key, value).await
    }
    async fn apply_with_ttl(&self, key: &Key, value: Vec<u8>, ttl: Duration) -> DsResult<KvPair> {
        self.inner.apply_with_ttl(key, value, ttl).await
    }
    async fn delete(&self, key: &Key, revision: Option<i64>) -> DsResult<KvPair> {
        self.inner.delete(key, revision).await
    }
    async fn txn(&self, writes: &[TxnWrite]) -> DsResult<TxnOutcome> {
        tokio::time::sleep(self.delay).await;
        self.inner.txn(writes).await
    }
    async fn watch(&self, prefix: &KeyPrefix, from: i64) -> DsResult<WatchStream> {
        self.inner.watch(prefix, from).await
    }
}

async fn pool(ds: &Arc<dyn Datastore>, name: &str, cidr: &str) {
    let prefix: u8 = cidr.rsplit('/').next().unwrap().parse().unwrap();
    ResourceClient::new(ds.clone())
        .create(IpPool::new(
            ObjectMeta::named(name),
            IpPoolSpec {
                cidr: cidr.into(),
                block_size: Some(i64::from(prefix.max(26))),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

async fn handle(ds: &Arc<dyn Datastore>, id: &str) -> Option<Handle> {
    ds.get(&Key::Handle { id: id.into() })
        .await
        .ok()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
}

async fn assert_consistent(ipam: &Ipam) {
    let report = ipam.check(None).await.unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_one_block_share_transactions() {
    let ds: Arc<dyn Datastore> = Arc::new(SlowTxn {
        inner: MemoryDatastore::new(),
        delay: Duration::from_millis(40),
    });
    pool(&ds, "p", "10.70.0.0/24").await;
    let ipam = Ipam::new(ds.clone());
    // The node's first block, claimed and remembered.
    let (first, _) = ipam
        .auto_assign(&AutoAssignArgs::new("n1", "net.first", 1, 0))
        .await
        .unwrap();
    let block = first.ips[0].trunc();
    let writes_before = ipam.stats().block_writes.load(Ordering::Relaxed);

    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move {
                let args = AutoAssignArgs::new("n1", &format!("net.c{i}"), 1, 0);
                ipam.auto_assign(&args).await.unwrap().0.ips
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for t in tasks {
        let ips = t.await.unwrap();
        assert_eq!(ips.len(), 1);
        assert!(seen.insert(ips[0].addr()), "{} handed out twice", ips[0]);
        assert_eq!(
            ips[0].trunc(),
            block,
            "all from the node's block while it has room"
        );
    }
    let writes = ipam.stats().block_writes.load(Ordering::Relaxed) - writes_before;
    assert!(
        writes <= 4,
        "40 requests queued behind a slow transaction should share a few: {writes} block writes"
    );
    for i in 0..40 {
        let h = handle(&ds, &format!("net.c{i}")).await.unwrap();
        assert_eq!(h.block.get(&block.to_string()), Some(&1), "net.c{i}: {h:?}");
    }
    assert_consistent(&ipam).await;

    // Releases combine the same way, and take the handles with them.
    let writes_before = ipam.stats().block_writes.load(Ordering::Relaxed);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move { ipam.release_by_handle(&format!("net.c{i}")).await.unwrap() })
        })
        .collect();
    let mut released = BTreeSet::new();
    for t in tasks {
        let ips = t.await.unwrap();
        assert_eq!(ips.len(), 1);
        released.insert(ips[0]);
    }
    assert_eq!(released, seen);
    let writes = ipam.stats().block_writes.load(Ordering::Relaxed) - writes_before;
    assert!(writes <= 4, "{writes} block writes for 40 releases");
    for i in 0..40 {
        assert!(handle(&ds, &format!("net.c{i}")).await.is_none());
    }
    assert_consistent(&ipam).await;
}

#[tokio::test]
async fn a_stale_memory_costs_a_retry_never_a_duplicate() {
    let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
    pool(&ds, "p", "10.71.0.0/24").await;
    // Two allocators for the same node (an old and a new ipamd, or ipamd and calicoctl).
    let a = Ipam::new(ds.clone());
    let b = Ipam::new(ds.clone());
    let mut held = BTreeSet::new();
    for i in 0..3 {
        let (v4, _) = a
            .auto_assign(&AutoAssignArgs::new("n1", &format!("net.a{i}"), 1, 0))
            .await
            .unwrap();
        held.insert(v4.ips[0].addr());
    }
    // b changes the block behind a's back.
    for i in 0..3 {
        let (v4, _) = b
            .auto_assign(&AutoAssignArgs::new("n1", &format!("net.b{i}"), 1, 0))
            .await
            .unwrap();
        assert!(held.insert(v4.ips[0].addr()), "b reused {}", v4.ips[0]);
    }
    let conflicts = a.stats().cas_conflicts.load(Ordering::Relaxed);
    let (v4, _) = a
        .auto_assign(&AutoAssignArgs::new("n1", "net.a3", 1, 0))
        .await
        .unwrap();
    assert!(held.insert(v4.ips[0].addr()), "a reused {}", v4.ips[0]);
    assert_eq!(
        a.stats().cas_conflicts.load(Ordering::Relaxed),
        conflicts + 1,
        "the stale block cost exactly one failed transaction"
    );
    // b releases one of a's handles; a remembers it, but its release finds nothing left.
    assert_eq!(b.release_by_handle("net.a0").await.unwrap().len(), 1);
    assert!(a.release_by_handle("net.a0").await.unwrap().is_empty());
    // a releases b's handle, which it never saw.
    assert_eq!(a.release_by_handle("net.b0").await.unwrap().len(), 1);
    // The same handle again through both: one address per handle, counted once.
    let (x, _) = a
        .auto_assign(&AutoAssignArgs::new("n1", "net.shared", 1, 0))
        .await
        .unwrap();
    let (y, _) = b
        .auto_assign(&AutoAssignArgs::new("n1", "net.shared", 1, 0))
        .await
        .unwrap();
    assert_ne!(x.ips, y.ips);
    let h = handle(&ds, "net.shared").await.unwrap();
    assert_eq!(h.block.values().sum::<usize>(), 2, "{h:?}");
    assert_eq!(a.release_by_handle("net.shared").await.unwrap().len(), 2);
    assert_consistent(&a).await;
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn watched_inputs_follow_pool_and_reservation_changes() {
    let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
    pool(&ds, "p", "10.72.0.0/30").await;
    let stop = CancellationToken::new();
    let view = ClusterView::new("n1");
    tokio::spawn(view.clone().run(ds.clone(), stop.clone()));
    let ipam = Ipam::new(ds.clone()).with_view(view.clone());
    eventually("the view to sync", async || view.snapshot().is_some()).await;

    // A reservation over two of the pool's four addresses.
    let resources = ResourceClient::new(ds.clone());
    resources
        .create(IpReservation::new(
            ObjectMeta::named("r"),
            IpReservationSpec {
                reserved_cidrs: vec!["10.72.0.0/31".into()],
            },
        ))
        .await
        .unwrap();
    eventually("the reservation", async || {
        view.snapshot()
            .is_some_and(|s| s.reservations.contains("10.72.0.1".parse().unwrap()))
    })
    .await;
    let mut got = Vec::new();
    for i in 0..4 {
        let (v4, _) = ipam
            .auto_assign(&AutoAssignArgs::new("n1", &format!("net.r{i}"), 1, 0))
            .await
            .unwrap();
        got.extend(v4.ips.iter().map(|n| n.addr().to_string()));
    }
    assert_eq!(
        got,
        ["10.72.0.2", "10.72.0.3"],
        "reserved addresses stay out"
    );

    // Disabling the pool stops allocation from it once the view has seen it.
    let mut p: IpPool = resources.get(None, "p").await.unwrap();
    p.spec.disabled = true;
    resources.update(p).await.unwrap();
    eventually("the disabled pool", async || {
        view.snapshot()
            .is_some_and(|s| s.pools.iter().all(|p| p.spec.disabled))
    })
    .await;
    let err = ipam
        .auto_assign(&AutoAssignArgs::new("n1", "net.late", 1, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::NoPools { .. }), "{err}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_block_of_existing_handles_is_released_at_once_on_etcd() {
    // 64 handles released together on one /26: one combined transaction carries the block
    // and 64 handle records, which etcd must accept.
    let b = calico_etcd_harness::backend::Backend::etcd().await;
    let ds = b.ds();
    pool(&ds, "p", "10.73.0.0/26").await;
    let ipam = Ipam::new(ds.clone());
    for i in 0..64 {
        let (v4, _) = ipam
            .auto_assign(&AutoAssignArgs::new("n1", &format!("net.f{i}"), 1, 0))
            .await
            .unwrap();
        assert_eq!(v4.ips.len(), 1);
    }
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move { ipam.release_by_handle(&format!("net.f{i}")).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 1);
    }
    assert!(ipam.allocations().await.unwrap().is_empty());
    assert!(ds.list(&KeyPrefix::Handles).await.unwrap().items.is_empty());
    assert_consistent(&ipam).await;
}

#[tokio::test]
async fn one_release_of_more_owners_than_a_transaction_holds() {
    let b = calico_etcd_harness::backend::Backend::etcd().await;
    let ds = b.ds();
    ResourceClient::new(ds.clone())
        .create(IpPool::new(
            ObjectMeta::named("wide"),
            IpPoolSpec {
                cidr: "10.74.0.0/24".into(),
                block_size: Some(24),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let ipam = Ipam::new(ds.clone());
    let mut requests = Vec::new();
    for i in 0..150 {
        let (v4, _) = ipam
            .auto_assign(&AutoAssignArgs::new("n1", &format!("net.w{i}"), 1, 0))
            .await
            .unwrap();
        requests.push(calico_ipam::ReleaseRequest {
            ip: v4.ips[0].addr(),
            handle: Some(format!("net.w{i}")),
            sequence_number: None,
        });
    }
    let out = ipam.release_ips(&requests).await.unwrap();
    assert_eq!(out.released.len(), 150);
    assert!(out.unallocated.is_empty());
    assert!(ds.list(&KeyPrefix::Handles).await.unwrap().items.is_empty());
    assert_consistent(&ipam).await;

    // A guard that fails refuses the whole request, even one that needs several transactions.
    let mut requests = Vec::new();
    for i in 0..120 {
        let (v4, _) = ipam
            .auto_assign(&AutoAssignArgs::new("n1", &format!("net.v{i}"), 1, 0))
            .await
            .unwrap();
        requests.push(calico_ipam::ReleaseRequest {
            ip: v4.ips[0].addr(),
            handle: Some(format!("net.v{i}")),
            sequence_number: None,
        });
    }
    requests[119].handle = Some("net.somebody-else".into());
    let err = ipam.release_ips(&requests).await.unwrap_err();
    assert!(matches!(err, IpamError::ReleaseRefused { .. }), "{err}");
    assert_eq!(
        ipam.allocations().await.unwrap().len(),
        120,
        "nothing was released"
    );
}
