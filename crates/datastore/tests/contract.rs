//! The Datastore contract, run identically against the in-memory backend and a real etcd.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use calico_api::Kind;
use calico_api::names::AffinityType;
use calico_datastore::{
    Datastore, DatastoreError, Expect, Key, KeyPrefix, TxnOutcome, TxnWrite, WatchEvent,
};
use common::Backend;
use futures::StreamExt;

fn pool(name: &str) -> Key {
    Key::resource(Kind::IpPool, None, name)
}

async fn next_event(w: &mut calico_datastore::WatchStream) -> WatchEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(WatchEvent::Progress { .. }))) => continue,
            Ok(Some(Ok(ev))) => return ev,
            other => panic!("expected a watch event, got {other:?}"),
        }
    }
}

async fn create_then_get_returns_the_value_at_its_revision(b: &Backend) {
    let ds = b.ds();
    let kv = ds.create(&pool("a"), b"{\"x\":1}".to_vec()).await.unwrap();
    assert!(kv.revision > 0);
    let got = ds.get(&pool("a")).await.unwrap();
    assert_eq!(got, kv);
    assert!(matches!(
        ds.get(&pool("missing")).await,
        Err(DatastoreError::NotFound { .. })
    ));
}

async fn create_of_an_existing_key_fails_and_changes_nothing(b: &Backend) {
    let ds = b.ds();
    let first = ds.create(&pool("a"), b"1".to_vec()).await.unwrap();
    let err = ds.create(&pool("a"), b"2".to_vec()).await.unwrap_err();
    assert!(matches!(err, DatastoreError::AlreadyExists { .. }), "{err}");
    assert_eq!(ds.get(&pool("a")).await.unwrap(), first);
}

async fn update_is_a_compare_and_swap_on_the_revision(b: &Backend) {
    let ds = b.ds();
    let v1 = ds.create(&pool("a"), b"1".to_vec()).await.unwrap();
    let v2 = ds
        .update(&pool("a"), b"2".to_vec(), v1.revision)
        .await
        .unwrap();
    assert!(v2.revision > v1.revision);
    match ds.update(&pool("a"), b"3".to_vec(), v1.revision).await {
        Err(DatastoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, v1.revision);
            assert_eq!(actual, Some(v2.revision));
        }
        other => panic!("stale update must conflict, got {other:?}"),
    }
    assert_eq!(ds.get(&pool("a")).await.unwrap().value, b"2");
    assert!(matches!(
        ds.update(&pool("nope"), b"1".to_vec(), 1).await,
        Err(DatastoreError::NotFound { .. })
    ));
}

async fn delete_honours_its_revision_precondition(b: &Backend) {
    let ds = b.ds();
    let v1 = ds.create(&pool("a"), b"1".to_vec()).await.unwrap();
    let v2 = ds
        .update(&pool("a"), b"2".to_vec(), v1.revision)
        .await
        .unwrap();
    assert!(matches!(
        ds.delete(&pool("a"), Some(v1.revision)).await,
        Err(DatastoreError::Conflict { .. })
    ));
    let gone = ds.delete(&pool("a"), Some(v2.revision)).await.unwrap();
    assert_eq!(gone.value, b"2");
    assert!(gone.revision > v2.revision);
    assert!(matches!(
        ds.delete(&pool("a"), None).await,
        Err(DatastoreError::NotFound { .. })
    ));
    ds.create(&pool("b"), b"1".to_vec()).await.unwrap();
    assert_eq!(ds.delete(&pool("b"), None).await.unwrap().value, b"1");
}

async fn apply_writes_whatever_is_there(b: &Backend) {
    let ds = b.ds();
    let a = ds.apply(&pool("a"), b"1".to_vec()).await.unwrap();
    let c = ds.apply(&pool("a"), b"2".to_vec()).await.unwrap();
    assert!(c.revision > a.revision);
    assert_eq!(ds.get(&pool("a")).await.unwrap().value, b"2");
}

async fn a_key_written_with_a_ttl_goes_away_unless_written_again_without(b: &Backend) {
    let ds = b.ds();
    let report = |host: &str| Key::FelixStatus {
        region: "no-region".into(),
        hostname: host.into(),
        last: false,
    };
    let start = ds.list(&KeyPrefix::Everything).await.unwrap().revision;
    let mut w = ds.watch(&KeyPrefix::Everything, start + 1).await.unwrap();
    ds.apply_with_ttl(&report("a"), b"1".to_vec(), Duration::from_secs(1))
        .await
        .unwrap();
    ds.apply_with_ttl(&report("b"), b"1".to_vec(), Duration::from_secs(1))
        .await
        .unwrap();
    // A plain write detaches the key from its lease.
    ds.apply(&report("b"), b"2".to_vec()).await.unwrap();
    assert_eq!(ds.get(&report("a")).await.unwrap().value, b"1");
    for _ in 0..3 {
        assert!(matches!(next_event(&mut w).await, WatchEvent::Put(_)));
    }
    // etcd rounds a lease up to its minimum TTL (about 2 s with default timings).
    match next_event(&mut w).await {
        WatchEvent::Delete { key, .. } => assert_eq!(key, report("a")),
        other => panic!("expected the expiry of a, got {other:?}"),
    }
    assert!(matches!(
        ds.get(&report("a")).await,
        Err(DatastoreError::NotFound { .. })
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ds.get(&report("b")).await.unwrap().value, b"2");
}

async fn list_returns_exactly_the_prefix(b: &Backend) {
    let ds = b.ds();
    ds.create(&pool("p1"), b"1".to_vec()).await.unwrap();
    ds.create(&pool("p2"), b"2".to_vec()).await.unwrap();
    ds.create(
        &Key::resource(Kind::IpReservation, None, "r"),
        b"3".to_vec(),
    )
    .await
    .unwrap();
    ds.create(
        &Key::resource(Kind::NetworkPolicy, Some("a"), "x"),
        b"4".to_vec(),
    )
    .await
    .unwrap();
    ds.create(
        &Key::resource(Kind::NetworkPolicy, Some("ab"), "x"),
        b"5".to_vec(),
    )
    .await
    .unwrap();
    let last = ds
        .create(
            &Key::Affinity {
                affinity_type: AffinityType::Host,
                owner: "n1".into(),
                cidr: "10.0.0.0/26".parse().unwrap(),
            },
            b"{}".to_vec(),
        )
        .await
        .unwrap();
    let pools = ds.list(&KeyPrefix::kind(Kind::IpPool)).await.unwrap();
    assert_eq!(
        pools
            .items
            .iter()
            .map(|k| k.key.clone())
            .collect::<Vec<_>>(),
        vec![pool("p1"), pool("p2")]
    );
    assert!(pools.revision >= last.revision);
    let ns_a = ds
        .list(&KeyPrefix::Kind {
            kind: Kind::NetworkPolicy,
            namespace: Some("a".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        ns_a.items.len(),
        1,
        "namespace a must not include namespace ab"
    );
    let all_np = ds
        .list(&KeyPrefix::kind(Kind::NetworkPolicy))
        .await
        .unwrap();
    assert_eq!(all_np.items.len(), 2);
    let affs = ds
        .list(&KeyPrefix::Affinities {
            affinity_type: AffinityType::Host,
            owner: Some("n1".into()),
            ip_version: Some(4),
        })
        .await
        .unwrap();
    assert_eq!(affs.items.len(), 1);
    let empty = ds.list(&KeyPrefix::Handles).await.unwrap();
    assert!(empty.items.is_empty());
    assert!(empty.revision >= last.revision);
}

async fn large_lists_are_complete(b: &Backend) {
    let ds = b.ds();
    let n = 2500;
    let mut tasks = Vec::new();
    for chunk in 0..10 {
        let ds = ds.clone();
        tasks.push(tokio::spawn(async move {
            for i in (chunk * n / 10)..((chunk + 1) * n / 10) {
                ds.create(
                    &Key::Handle {
                        id: format!("h{i:05}"),
                    },
                    vec![b'x'; 100],
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let l = ds.list(&KeyPrefix::Handles).await.unwrap();
    assert_eq!(l.items.len(), n);
    let mut names: Vec<_> = l.items.iter().map(|kv| kv.key.path()).collect();
    names.dedup();
    assert_eq!(names.len(), n, "no duplicates across pages");
}

async fn watch_replays_from_a_revision_then_follows_live_changes(b: &Backend) {
    let ds = b.ds();
    let c = ds.create(&pool("a"), b"1".to_vec()).await.unwrap();
    let u = ds
        .update(&pool("a"), b"2".to_vec(), c.revision)
        .await
        .unwrap();
    ds.create(
        &Key::resource(Kind::Tier, None, "t"),
        b"other prefix".to_vec(),
    )
    .await
    .unwrap();
    let d = ds.delete(&pool("a"), None).await.unwrap();
    let mut w = ds
        .watch(&KeyPrefix::kind(Kind::IpPool), c.revision)
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::Put(c.clone()));
    assert_eq!(next_event(&mut w).await, WatchEvent::Put(u));
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Delete {
            key: pool("a"),
            revision: d.revision
        }
    );
    let live = ds.create(&pool("b"), b"3".to_vec()).await.unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::Put(live));
    // Watching from 0 means "from now".
    let mut now = ds.watch(&KeyPrefix::kind(Kind::IpPool), 0).await.unwrap();
    let later = ds.create(&pool("c"), b"4".to_vec()).await.unwrap();
    assert_eq!(next_event(&mut now).await, WatchEvent::Put(later));
}

async fn watch_from_a_compacted_revision_reports_compacted(b: &Backend) {
    let ds = b.ds();
    let first = ds.create(&pool("a"), b"1".to_vec()).await.unwrap();
    let mut last = first.clone();
    for i in 0..5 {
        last = ds
            .update(&pool("a"), format!("{i}").into_bytes(), last.revision)
            .await
            .unwrap();
    }
    b.compact(last.revision).await;
    let mut w = ds
        .watch(&KeyPrefix::kind(Kind::IpPool), first.revision)
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(DatastoreError::Compacted {
            requested,
            compacted,
        }))) => {
            assert_eq!(requested, first.revision);
            assert!(
                compacted >= last.revision - 1,
                "{compacted} vs {}",
                last.revision
            );
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // From the compaction point on, watching works again.
    let mut ok = ds
        .watch(&KeyPrefix::kind(Kind::IpPool), last.revision)
        .await
        .unwrap();
    assert_eq!(next_event(&mut ok).await, WatchEvent::Put(last));
}

async fn concurrent_compare_and_swap_loses_no_update(b: &Backend) {
    let ds = b.ds();
    ds.create(&pool("counter"), b"0".to_vec()).await.unwrap();
    let writers = 8;
    let each = 25;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let ds: Arc<dyn Datastore> = ds.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..each {
                loop {
                    let cur = ds.get(&pool("counter")).await.unwrap();
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    match ds
                        .update(
                            &pool("counter"),
                            (n + 1).to_string().into_bytes(),
                            cur.revision,
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(DatastoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = ds.get(&pool("counter")).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&v.value).unwrap(),
        (writers * each).to_string()
    );
}

async fn update_and_delete_of_a_missing_key_are_not_found_whatever_the_revision(b: &Backend) {
    let ds = b.ds();
    // etcd's mod_revision of a missing key is 0: a naive compare would "update" it into life.
    for rev in [0, 1, 99] {
        assert!(
            matches!(
                ds.update(&pool("ghost"), b"x".to_vec(), rev).await,
                Err(DatastoreError::NotFound { .. })
            ),
            "update at {rev}"
        );
        assert!(
            matches!(
                ds.delete(&pool("ghost"), Some(rev)).await,
                Err(DatastoreError::NotFound { .. })
            ),
            "delete at {rev}"
        );
    }
    assert!(matches!(
        ds.get(&pool("ghost")).await,
        Err(DatastoreError::NotFound { .. })
    ));
}

async fn keys_that_would_not_round_trip_are_refused(b: &Backend) {
    let ds = b.ds();
    for key in [
        Key::Handle { id: "a/b".into() },
        Key::Handle { id: String::new() },
        Key::resource(Kind::IpPool, None, "x/y"),
        Key::Resource {
            kind: Kind::NetworkPolicy,
            namespace: None,
            name: "np".into(),
        },
    ] {
        assert!(
            matches!(
                ds.create(&key, b"1".to_vec()).await,
                Err(DatastoreError::InvalidKey { .. })
            ),
            "{key:?}"
        );
    }
}

async fn a_watch_from_a_future_revision_starts_there(b: &Backend) {
    let ds = b.ds();
    let now = ds.create(&pool("a"), b"1".to_vec()).await.unwrap().revision;
    let mut w = ds
        .watch(&KeyPrefix::kind(Kind::IpPool), now + 3)
        .await
        .unwrap();
    let mut last = None;
    for i in 0..4 {
        last = Some(
            ds.apply(&pool("a"), format!("{i}").into_bytes())
                .await
                .unwrap(),
        );
    }
    // Revisions now+1 and now+2 are before the start; now+3 and now+4 are seen.
    let first = next_event(&mut w).await;
    assert_eq!(first.revision(), now + 3);
    assert_eq!(next_event(&mut w).await, WatchEvent::Put(last.unwrap()));
}

async fn a_list_is_one_snapshot_while_writes_go_on(b: &Backend) {
    let ds = b.ds();
    let n = 1200;
    for i in 0..n {
        ds.create(
            &Key::Handle {
                id: format!("h{i:05}"),
            },
            b"x".to_vec(),
        )
        .await
        .unwrap();
    }
    // Delete keys from the far end while the (paged) list runs.
    let deleter = {
        let ds = ds.clone();
        tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in (0..n).rev().take(300) {
                revs.push(
                    ds.delete(
                        &Key::Handle {
                            id: format!("h{i:05}"),
                        },
                        None,
                    )
                    .await
                    .unwrap()
                    .revision,
                );
            }
            revs
        })
    };
    let list = ds.list(&KeyPrefix::Handles).await.unwrap();
    let delete_revs = deleter.await.unwrap();
    let deleted_before = delete_revs.iter().filter(|r| **r <= list.revision).count();
    assert_eq!(
        list.items.len(),
        n - deleted_before,
        "the list is the state at its revision"
    );
    assert!(list.items.iter().all(|kv| kv.revision <= list.revision));
}

fn handle(id: &str) -> Key {
    Key::Handle { id: id.into() }
}

fn put(key: Key, expect: Expect, value: &str) -> TxnWrite {
    TxnWrite {
        key,
        expect,
        value: Some(value.as_bytes().to_vec()),
    }
}

async fn a_transaction_writes_every_key_at_one_revision_or_none(b: &Backend) {
    let ds = b.ds();
    let a = ds.create(&handle("a"), b"a1".to_vec()).await.unwrap();
    let gone = ds.create(&handle("gone"), b"g".to_vec()).await.unwrap();
    let mut w = ds
        .watch(&KeyPrefix::Handles, gone.revision + 1)
        .await
        .unwrap();
    let writes = [
        put(handle("a"), Expect::Revision(a.revision), "a2"),
        put(handle("new"), Expect::Absent, "n1"),
        TxnWrite {
            key: handle("gone"),
            expect: Expect::Revision(gone.revision),
            value: None,
        },
    ];
    let TxnOutcome::Committed { revision } = ds.txn(&writes).await.unwrap() else {
        panic!("the transaction should commit");
    };
    assert_eq!(ds.get(&handle("a")).await.unwrap().revision, revision);
    assert_eq!(ds.get(&handle("new")).await.unwrap().value, b"n1");
    assert!(matches!(
        ds.get(&handle("gone")).await,
        Err(DatastoreError::NotFound { .. })
    ));
    // Watchers see the three changes, all at the transaction's revision.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(next_event(&mut w).await);
    }
    assert!(seen.iter().all(|e| e.revision() == revision), "{seen:?}");
    assert!(
        seen.iter()
            .any(|e| matches!(e, WatchEvent::Delete { key, .. } if key == &handle("gone")))
    );

    // Any key not as expected: nothing is written, and every key's value comes back.
    let stale = [
        put(handle("a"), Expect::Revision(revision), "a3"),
        put(handle("new"), Expect::Absent, "n2"),
        put(handle("other"), Expect::Absent, "o"),
    ];
    let TxnOutcome::Failed { current } = ds.txn(&stale).await.unwrap() else {
        panic!("the transaction should fail: \"new\" exists");
    };
    assert_eq!(current.len(), 3);
    assert_eq!(current[0].as_ref().unwrap().value, b"a2");
    assert_eq!(current[1].as_ref().unwrap().value, b"n1");
    assert!(current[2].is_none());
    assert!(matches!(
        ds.get(&handle("other")).await,
        Err(DatastoreError::NotFound { .. })
    ));
    assert_eq!(ds.get(&handle("a")).await.unwrap().value, b"a2");
    // Expecting a revision of a key that does not exist fails too.
    let TxnOutcome::Failed { current } = ds
        .txn(&[put(handle("nope"), Expect::Revision(revision), "x")])
        .await
        .unwrap()
    else {
        panic!("a revision precondition on a missing key must fail");
    };
    assert_eq!(current, vec![None]);
}

async fn transactions_that_cannot_be_sent_are_refused_before_sending(b: &Backend) {
    let ds = b.ds();
    for bad in [
        vec![],
        vec![
            put(handle("x"), Expect::Absent, "1"),
            put(handle("x"), Expect::Absent, "2"),
        ],
        vec![TxnWrite {
            key: handle("x"),
            expect: Expect::Absent,
            value: None,
        }],
        vec![put(handle("a/b"), Expect::Absent, "1")],
        vec![put(handle("x"), Expect::Revision(0), "1")],
        (0..=calico_datastore::MAX_TXN_WRITES)
            .map(|i| put(handle(&format!("h{i}")), Expect::Absent, "1"))
            .collect(),
    ] {
        let err = ds.txn(&bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                DatastoreError::InvalidTxn { .. } | DatastoreError::InvalidKey { .. }
            ),
            "{err}"
        );
    }
    assert!(ds.list(&KeyPrefix::Handles).await.unwrap().items.is_empty());
}

async fn the_largest_transaction_goes_through(b: &Backend) {
    // Every write compared on a revision, as when many handles change with one block.
    let ds = b.ds();
    let n = calico_datastore::MAX_TXN_WRITES;
    let mut writes = Vec::with_capacity(n);
    for i in 0..n {
        let kv = ds
            .create(&handle(&format!("big{i}")), b"0".to_vec())
            .await
            .unwrap();
        writes.push(put(kv.key, Expect::Revision(kv.revision), "1"));
    }
    assert!(matches!(
        ds.txn(&writes).await.unwrap(),
        TxnOutcome::Committed { .. }
    ));
    // And fails as a whole, reading every key back, when one of them changed.
    let TxnOutcome::Failed { current } = ds.txn(&writes).await.unwrap() else {
        panic!("every revision moved on");
    };
    assert_eq!(current.len(), n);
    assert!(current.iter().all(|kv| kv.as_ref().unwrap().value == b"1"));
}

async fn racing_transactions_lose_no_update(b: &Backend) {
    // Two counters moved together by concurrent transactions: both always agree.
    let ds = b.ds();
    ds.create(&handle("c1"), b"0".to_vec()).await.unwrap();
    ds.create(&handle("c2"), b"0".to_vec()).await.unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let ds = ds.clone();
            tokio::spawn(async move {
                let mut cur = (
                    ds.get(&handle("c1")).await.unwrap(),
                    ds.get(&handle("c2")).await.unwrap(),
                );
                let mut done = 0;
                while done < 25 {
                    let n: u64 = std::str::from_utf8(&cur.0.value).unwrap().parse().unwrap();
                    let next = (n + 1).to_string();
                    let writes = [
                        put(handle("c1"), Expect::Revision(cur.0.revision), &next),
                        put(handle("c2"), Expect::Revision(cur.1.revision), &next),
                    ];
                    match ds.txn(&writes).await.unwrap() {
                        TxnOutcome::Committed { .. } => {
                            done += 1;
                            cur = (
                                ds.get(&handle("c1")).await.unwrap(),
                                ds.get(&handle("c2")).await.unwrap(),
                            );
                        }
                        TxnOutcome::Failed { current } => {
                            cur = (current[0].clone().unwrap(), current[1].clone().unwrap());
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(ds.get(&handle("c1")).await.unwrap().value, b"100");
    assert_eq!(ds.get(&handle("c2")).await.unwrap().value, b"100");
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(&super::Backend::memory()).await })*
        }
        mod etcd {
            $(#[tokio::test] async fn $name() { super::$name(&super::Backend::etcd().await).await })*
        }
    };
}

contract_tests!(
    create_then_get_returns_the_value_at_its_revision,
    create_of_an_existing_key_fails_and_changes_nothing,
    update_is_a_compare_and_swap_on_the_revision,
    delete_honours_its_revision_precondition,
    apply_writes_whatever_is_there,
    a_key_written_with_a_ttl_goes_away_unless_written_again_without,
    list_returns_exactly_the_prefix,
    large_lists_are_complete,
    watch_replays_from_a_revision_then_follows_live_changes,
    watch_from_a_compacted_revision_reports_compacted,
    concurrent_compare_and_swap_loses_no_update,
    update_and_delete_of_a_missing_key_are_not_found_whatever_the_revision,
    keys_that_would_not_round_trip_are_refused,
    a_watch_from_a_future_revision_starts_there,
    a_list_is_one_snapshot_while_writes_go_on,
    a_transaction_writes_every_key_at_one_revision_or_none,
    transactions_that_cannot_be_sent_are_refused_before_sending,
    racing_transactions_lose_no_update,
    the_largest_transaction_goes_through,
);
