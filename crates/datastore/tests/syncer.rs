//! The syncer against the in-memory backend and a real etcd: after outages, killed etcd,
//! compaction and lossy watches, the consumer's view ends equal to the datastore, and no
//! update is ever delivered twice or out of order.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calico_api::Kind;
use calico_datastore::syncer::{SyncEvent, SyncStatus, SyncUpdate, Syncer, SyncerConfig};
use calico_datastore::{
    Datastore, DatastoreError, Key, KeyPrefix, KvList, KvPair, WatchEvent, WatchStream,
};
use common::Backend;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

/// The consumer: applies events and checks the syncer's promises on every one.
#[derive(Default)]
struct View {
    map: BTreeMap<Key, (i64, Vec<u8>)>,
    /// The last revision seen per key, deletes included, so that an older update arriving
    /// after a delete (a resurrection) is caught too.
    last_seen: BTreeMap<Key, i64>,
    statuses: Vec<SyncStatus>,
    updates: usize,
}

impl View {
    fn apply(&mut self, ev: SyncEvent) {
        match ev {
            SyncEvent::Status(s) => self.statuses.push(s),
            SyncEvent::Updates(us) => {
                for u in us {
                    self.updates += 1;
                    if let Some(last) = self.last_seen.get(u.key()) {
                        assert!(
                            u.revision() > *last,
                            "{} at {} after {last}: duplicate or out of order",
                            u.key(),
                            u.revision()
                        );
                    }
                    self.last_seen.insert(u.key().clone(), u.revision());
                    match u {
                        SyncUpdate::Put(kv) => {
                            self.map.insert(kv.key, (kv.revision, kv.value));
                        }
                        SyncUpdate::Delete { key, .. } => {
                            assert!(
                                self.map.remove(&key).is_some(),
                                "delete of {key}, which the consumer did not have"
                            );
                        }
                    }
                }
            }
        }
    }

    fn same_as(&self, list: &[KvPair]) -> bool {
        self.map.len() == list.len()
            && list.iter().all(|kv| {
                self.map
                    .get(&kv.key)
                    .is_some_and(|(r, v)| *r == kv.revision && *v == kv.value)
            })
    }
}

fn prefixes() -> Vec<KeyPrefix> {
    vec![KeyPrefix::kind(Kind::IpPool), KeyPrefix::Handles]
}

async fn everything(ds: &Arc<dyn Datastore>) -> Vec<KvPair> {
    let mut all = Vec::new();
    for p in prefixes() {
        loop {
            match ds.list(&p).await {
                Ok(l) => {
                    all.extend(l.items);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    all
}

fn start(ds: Arc<dyn Datastore>, cfg: SyncerConfig) -> mpsc::Receiver<SyncEvent> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(Syncer::new(ds, cfg).run(tx));
    rx
}

fn fast_config() -> SyncerConfig {
    let mut cfg = SyncerConfig::new(prefixes());
    cfg.min_backoff = Duration::from_millis(20);
    cfg.max_backoff = Duration::from_millis(300);
    cfg
}

/// Consumes events until the view equals `truth` (checked after each batch). `truth` is the
/// real store, never a wrapper whose calls a test counts.
async fn converge(
    rx: &mut mpsc::Receiver<SyncEvent>,
    view: &mut View,
    truth: &Arc<dyn Datastore>,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let want = everything(truth).await;
        if view.statuses.last() == Some(&SyncStatus::InSync) && view.same_as(&want) {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => view.apply(ev),
            Ok(None) => panic!("syncer stopped"),
            Err(_) => panic!(
                "view did not converge: {} keys in view, {} in datastore; statuses {:?}",
                view.map.len(),
                want.len(),
                view.statuses
            ),
        }
    }
}

fn key(i: usize) -> Key {
    if i.is_multiple_of(2) {
        Key::resource(Kind::IpPool, None, &format!("pool-{i}"))
    } else {
        Key::Handle {
            id: format!("h-{i}"),
        }
    }
}

/// Writes, updates and deletes keys, retrying through outages, until `stop` is set.
async fn writer(ds: Arc<dyn Datastore>, stop: Arc<AtomicBool>, written: Arc<AtomicUsize>) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let k = key(i % 40);
        let value = format!("{{\"n\":{i}}}").into_bytes();
        let op = match i % 5 {
            4 => match ds.delete(&k, None).await {
                Ok(_) | Err(DatastoreError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            _ => ds.apply(&k, value).await.map(|_| ()),
        };
        match op {
            Ok(()) => {
                i += 1;
                written.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        tokio::task::yield_now().await;
    }
}

/// A datastore wrapper that can hold new watches, break running ones and drop some watch
/// events, and counts the lists and watches the syncer makes — the seams these tests need.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn Datastore>,
    hold: watch::Sender<bool>,
    breaker: watch::Sender<u64>,
    drop_puts_of: Mutex<Option<Key>>,
    lists: AtomicUsize,
    watches: AtomicUsize,
}

impl Faulty {
    fn new(inner: Arc<dyn Datastore>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            hold: watch::channel(false).0,
            breaker: watch::channel(0).0,
            drop_puts_of: Mutex::new(None),
            lists: AtomicUsize::new(0),
            watches: AtomicUsize::new(0),
        })
    }

    fn break_watches(&self) {
        self.breaker.send_modify(|n| *n += 1);
    }
}

#[async_trait::async_trait]
impl Datastore for Faulty {
    fn backend_name(&self) -> &'static str {
        "faulty"
    }
    async fn get(&self, key: &Key) -> calico_datastore::Result<KvPair> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &KeyPrefix) -> calico_datastore::Result<KvList> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix).await
    }
    async fn create(&self, key: &Key, value: Vec<u8>) -> calico_datastore::Result<KvPair> {
        self.inner.create(key, value).await
    }
    async fn update(
        &self,
        key: &Key,
        value: Vec<u8>,
        revision: i64,
    ) -> calico_datastore::Result<KvPair> {
        self.inner.update(key, value, revision).await
    }
    async fn apply(&self, key: &Key, value: Vec<u8>) -> calico_datastore::Result<KvPair> {
        self.inner.apply(key, value).await
    }
    async fn apply_with_ttl(
        &self,
        key: &Key,
        value: Vec<u8>,
        ttl: std::time::Duration,
    ) -> calico_datastore::Result<KvPair> {
        self.inner.apply_with_ttl(key, value, ttl).await
    }
    async fn delete(&self, key: &Key, revision: Option<i64>) -> calico_datastore::Result<KvPair> {
        self.inner.delete(key, revision).await
    }
    async fn txn(
        &self,
        writes: &[calico_datastore::TxnWrite],
    ) -> calico_datastore::Result<calico_datastore::TxnOutcome> {
        self.inner.txn(writes).await
    }
    async fn watch(&self, prefix: &KeyPrefix, from: i64) -> calico_datastore::Result<WatchStream> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        let mut hold = self.hold.subscribe();
        while *hold.borrow_and_update() {
            if hold.changed().await.is_err() {
                break;
            }
        }
        let inner = self.inner.watch(prefix, from).await?;
        let mut breaker = self.breaker.subscribe();
        breaker.borrow_and_update();
        let drop_key = self.drop_puts_of.lock().unwrap().clone();
        let stream = inner
            .filter(move |ev| {
                let keep =
                    !matches!((ev, &drop_key), (Ok(WatchEvent::Put(kv)), Some(k)) if &kv.key == k);
                async move { keep }
            })
            .take_until(async move {
                let _ = breaker.changed().await;
            })
            .chain(futures::stream::once(async {
                Err(DatastoreError::Unavailable {
                    backend: "faulty".into(),
                    reason: "broken on purpose".into(),
                })
            }));
        Ok(Box::pin(stream))
    }
}

/// Breaks the syncer's watches and holds it between its re-list and its next watch, runs
/// `meanwhile`, then lets it go on.
async fn while_held<F: std::future::Future<Output = ()>>(
    faulty: &Faulty,
    rx: &mut mpsc::Receiver<SyncEvent>,
    view: &mut View,
    meanwhile: F,
) {
    let watches_before = faulty.watches.load(Ordering::SeqCst);
    faulty.hold.send_replace(true);
    faulty.break_watches();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while faulty.watches.load(Ordering::SeqCst) < watches_before + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the syncer did not come back to watch"
        );
        if let Ok(ev) = rx.try_recv() {
            view.apply(ev);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    meanwhile.await;
    faulty.hold.send_replace(false);
}

#[tokio::test]
async fn memory_view_survives_broken_watches_outages_and_compaction() {
    let b = Backend::memory();
    let Backend::Memory(mem) = &b else {
        unreachable!()
    };
    let truth = b.ds();
    let faulty = Faulty::new(truth.clone());
    let ds: Arc<dyn Datastore> = faulty.clone();
    for i in 0..10 {
        truth.apply(&key(i), b"1".to_vec()).await.unwrap();
    }
    let mut rx = start(ds, fast_config());
    let mut view = View::default();
    converge(&mut rx, &mut view, &truth, Duration::from_secs(10)).await;
    assert_eq!(view.statuses.first(), Some(&SyncStatus::WaitForDatastore));
    // Broken watches, while writes continue.
    for round in 0..5 {
        for i in 0..10 {
            truth
                .apply(&key(i + round), format!("{round}").into_bytes())
                .await
                .unwrap();
        }
        mem.break_watches();
        truth.delete(&key(round), None).await.unwrap();
    }
    converge(&mut rx, &mut view, &truth, Duration::from_secs(10)).await;
    // An outage.
    mem.set_available(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    mem.set_available(true);
    converge(&mut rx, &mut view, &truth, Duration::from_secs(10)).await;
    // Changes whose history is compacted away while the syncer reconnects.
    let lists_before = faulty.lists.load(Ordering::SeqCst);
    while_held(&faulty, &mut rx, &mut view, async {
        for i in 20..30 {
            truth.apply(&key(i), b"during".to_vec()).await.unwrap();
        }
        truth.delete(&key(7), None).await.unwrap();
        mem.compact(mem.revision());
    })
    .await;
    converge(&mut rx, &mut view, &truth, Duration::from_secs(10)).await;
    // A list per prefix on reconnect (2), and another for the prefix whose new watch found its
    // history compacted (1); without the compaction it would be 2.
    assert!(faulty.lists.load(Ordering::SeqCst) >= lists_before + 3);
    assert!(!view.map.contains_key(&key(7)));
}

#[tokio::test]
async fn periodic_resync_repairs_what_a_watch_missed() {
    let b = Backend::memory();
    let truth = b.ds();
    let faulty = Faulty::new(truth.clone());
    *faulty.drop_puts_of.lock().unwrap() = Some(key(2));
    let ds: Arc<dyn Datastore> = faulty.clone();
    let mut cfg = fast_config();
    cfg.resync_interval = Duration::from_millis(500);
    let mut rx = start(ds, cfg);
    let mut view = View::default();
    converge(&mut rx, &mut view, &truth, Duration::from_secs(5)).await;
    let lists_before = faulty.lists.load(Ordering::SeqCst);
    // The watch swallows this write; only the periodic list can deliver it.
    truth.apply(&key(2), b"missed".to_vec()).await.unwrap();
    converge(&mut rx, &mut view, &truth, Duration::from_secs(10)).await;
    assert_eq!(view.map[&key(2)].1, b"missed");
    assert!(
        faulty.lists.load(Ordering::SeqCst) > lists_before,
        "a resync list happened"
    );
}

#[tokio::test]
async fn etcd_killed_and_restarted_mid_watch_loses_and_repeats_nothing() {
    let mut b = Backend::etcd().await;
    let ds = b.ds();
    let mut rx = start(ds.clone(), fast_config());
    let mut view = View::default();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let w = tokio::spawn(writer(ds.clone(), stop.clone(), written.clone()));
    let consume = |rx: &mut mpsc::Receiver<SyncEvent>, view: &mut View| {
        while let Ok(ev) = rx.try_recv() {
            view.apply(ev);
        }
    };
    // Let the writer and the syncer run, then crash etcd in the middle of it.
    while written.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        consume(&mut rx, &mut view);
    }
    let Backend::Etcd { etcd, .. } = &mut b else {
        unreachable!()
    };
    etcd.kill();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        consume(&mut rx, &mut view);
    }
    let at_crash = written.load(Ordering::Relaxed);
    etcd.restart();
    while written.load(Ordering::Relaxed) < at_crash + 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        consume(&mut rx, &mut view);
    }
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    converge(&mut rx, &mut view, &ds, Duration::from_secs(30)).await;
    // The writer kept going across the crash, and the exact final state reached the consumer
    // (intermediate values may be coalesced by a re-list; none may be repeated or reordered).
    assert!(written.load(Ordering::Relaxed) >= at_crash + 200);
    assert!(view.statuses.contains(&SyncStatus::InSync));
}

#[tokio::test]
async fn etcd_compaction_during_a_reconnect_forces_a_relist_and_the_view_stays_exact() {
    let b = Backend::etcd().await;
    let Backend::Etcd { ds: etcd_ds, .. } = &b else {
        unreachable!()
    };
    let truth = b.ds();
    let faulty = Faulty::new(truth.clone());
    let ds: Arc<dyn Datastore> = faulty.clone();
    for i in 0..20 {
        truth.apply(&key(i), b"v1".to_vec()).await.unwrap();
    }
    let mut rx = start(ds, fast_config());
    let mut view = View::default();
    converge(&mut rx, &mut view, &truth, Duration::from_secs(10)).await;
    let lists_before = faulty.lists.load(Ordering::SeqCst);
    // While the syncer is between its re-list and its new watch: changes, then compaction of
    // all of their history.
    while_held(&faulty, &mut rx, &mut view, async {
        for i in 0..20 {
            if i % 3 == 0 {
                truth.delete(&key(i), None).await.unwrap();
            } else {
                truth.apply(&key(i), b"v2".to_vec()).await.unwrap();
            }
        }
        for i in 20..30 {
            truth.apply(&key(i), b"new".to_vec()).await.unwrap();
        }
        let now = truth.list(&KeyPrefix::Handles).await.unwrap().revision;
        etcd_ds.compact(now).await.unwrap();
    })
    .await;
    converge(&mut rx, &mut view, &truth, Duration::from_secs(20)).await;
    // A list per prefix on reconnect (2), and another for the prefix whose new watch found its
    // history compacted (1); without the compaction it would be 2.
    assert!(
        faulty.lists.load(Ordering::SeqCst) >= lists_before + 3,
        "the compacted watch made the syncer list again"
    );
}
