//! The syncer: keeps a consumer's view of some key prefixes equal to the datastore's.
//!
//! For each prefix it lists, then watches from the list's revision + 1. When a watch ends (a
//! lost connection, or history compacted away) it lists again and emits only the difference
//! from what the consumer already has, then watches again; every `resync_interval` it also
//! lists and diffs while the watch keeps running, to repair anything a watch could have
//! missed. It never emits an update older than one already emitted for the same key, so the
//! consumer sees each change at most once and in order.
//!
//! ```text
//!  datastore ──list──▶ SyncCache (per prefix) ──diff──▶ ┐
//!  datastore ──watch─▶ SyncCache (per prefix) ──new───▶ ├─▶ bounded channel ─▶ consumer
//!  timer ────────────▶ resync: list + diff ───────────▶ ┘
//! ```
//!
//! [`SyncCache`] holds the rules and does no I/O; [`Syncer::run`] is the thin async shell.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{SelectAll, StreamExt};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::DatastoreError;
use crate::{Datastore, Key, KeyPrefix, KvList, KvPair, WatchEvent};

/// How far along the syncer is, as Calico's syncers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// Nothing could be read yet.
    WaitForDatastore,
    /// Some prefixes are listed, not all.
    ResyncInProgress,
    /// Every prefix has been listed once; from now on only changes follow.
    InSync,
}

/// One change for the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncUpdate {
    Put(KvPair),
    Delete { key: Key, revision: i64 },
}

impl SyncUpdate {
    pub fn key(&self) -> &Key {
        match self {
            SyncUpdate::Put(kv) => &kv.key,
            SyncUpdate::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> i64 {
        match self {
            SyncUpdate::Put(kv) => kv.revision,
            SyncUpdate::Delete { revision, .. } => *revision,
        }
    }
}

/// What the syncer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    Status(SyncStatus),
    Updates(Vec<SyncUpdate>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    revision: i64,
    hash: u64,
}

fn value_hash(v: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The syncer's memory of what the consumer has been told, for one prefix. Pure logic.
#[derive(Debug, Clone, Default)]
pub struct SyncCache {
    entries: HashMap<Key, Entry>,
    /// The highest revision applied (from a list or an event).
    applied: i64,
    /// The revision of the last list. Watch events at or below it are already reflected in
    /// that list (a periodic resync lists while the watch keeps running, so such events can
    /// still be in flight) and are dropped.
    listed_at: i64,
}

impl SyncCache {
    pub fn new() -> SyncCache {
        SyncCache::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The revision the consumer's view is at.
    pub fn revision(&self) -> i64 {
        self.applied
    }

    /// Applies a full list and returns what changed for the consumer.
    ///
    /// Lists are linearizable reads, so a list is never older than an event already applied
    /// from the same datastore: if the list's revision is older than what was applied, the
    /// datastore was restored or replaced, and values are compared by content, whatever their
    /// revisions.
    pub fn apply_list(&mut self, list: &KvList) -> Vec<SyncUpdate> {
        let reset = list.revision < self.applied;
        let mut out = Vec::new();
        let mut seen = HashSet::with_capacity(list.items.len());
        for kv in &list.items {
            seen.insert(&kv.key);
            let entry = Entry {
                revision: kv.revision,
                hash: value_hash(&kv.value),
            };
            let changed = match self.entries.get(&kv.key) {
                None => true,
                Some(e) if reset => *e != entry,
                Some(e) => kv.revision > e.revision,
            };
            if changed {
                self.entries.insert(kv.key.clone(), entry);
                out.push(SyncUpdate::Put(kv.clone()));
            }
        }
        let gone: Vec<Key> = self
            .entries
            .iter()
            .filter(|(k, e)| !seen.contains(k) && (reset || e.revision <= list.revision))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.entries.remove(&key);
            out.push(SyncUpdate::Delete {
                key,
                revision: list.revision,
            });
        }
        self.applied = if reset {
            list.revision
        } else {
            self.applied.max(list.revision)
        };
        self.listed_at = list.revision;
        out
    }

    /// Applies one watch event; `None` when it changes nothing the consumer has not seen.
    pub fn apply_event(&mut self, ev: &WatchEvent) -> Option<SyncUpdate> {
        if ev.revision() <= self.listed_at {
            return None;
        }
        self.applied = self.applied.max(ev.revision());
        match ev {
            WatchEvent::Put(kv) => {
                if self
                    .entries
                    .get(&kv.key)
                    .is_some_and(|e| e.revision >= kv.revision)
                {
                    return None;
                }
                self.entries.insert(
                    kv.key.clone(),
                    Entry {
                        revision: kv.revision,
                        hash: value_hash(&kv.value),
                    },
                );
                Some(SyncUpdate::Put(kv.clone()))
            }
            WatchEvent::Delete { key, revision } => match self.entries.get(key) {
                Some(e) if e.revision < *revision => {
                    self.entries.remove(key);
                    Some(SyncUpdate::Delete {
                        key: key.clone(),
                        revision: *revision,
                    })
                }
                _ => None,
            },
            WatchEvent::Progress { .. } => None,
        }
    }
}

/// What to sync and how often to double-check.
#[derive(Debug, Clone)]
pub struct SyncerConfig {
    pub prefixes: Vec<KeyPrefix>,
    /// How often to list everything again and repair differences.
    pub resync_interval: Duration,
    /// Backoff between failed attempts to reach the datastore (jittered, doubling).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The most updates sent in one batch.
    pub max_batch: usize,
}

impl SyncerConfig {
    pub fn new(prefixes: Vec<KeyPrefix>) -> SyncerConfig {
        SyncerConfig {
            prefixes,
            resync_interval: Duration::from_secs(30 * 60),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_batch: 1000,
        }
    }
}

/// The list-and-watch driver.
#[derive(Debug)]
pub struct Syncer {
    ds: Arc<dyn Datastore>,
    cfg: SyncerConfig,
}

type Tagged = (usize, u64, crate::Result<WatchEvent>);

struct PrefixState {
    prefix: KeyPrefix,
    cache: SyncCache,
    listed: bool,
    need_list: bool,
    /// Generation of the running watch; events from older generations are ignored.
    generation: u64,
    watching: bool,
}

impl Syncer {
    pub fn new(ds: Arc<dyn Datastore>, cfg: SyncerConfig) -> Syncer {
        Syncer { ds, cfg }
    }

    /// Runs until the receiving side of `tx` is dropped.
    pub async fn run(self, tx: mpsc::Sender<SyncEvent>) {
        let mut states: Vec<PrefixState> = self
            .cfg
            .prefixes
            .iter()
            .map(|p| PrefixState {
                prefix: p.clone(),
                cache: SyncCache::new(),
                listed: false,
                need_list: true,
                generation: 0,
                watching: false,
            })
            .collect();
        let mut watches: SelectAll<futures::stream::BoxStream<'static, Tagged>> = SelectAll::new();
        let mut status = SyncStatus::WaitForDatastore;
        if tx.send(SyncEvent::Status(status)).await.is_err() {
            return;
        }
        let mut backoff = self.cfg.min_backoff;
        let mut next_resync = Instant::now() + self.cfg.resync_interval;
        loop {
            let mut failed = false;
            for (i, st) in states.iter_mut().enumerate() {
                if !st.need_list {
                    continue;
                }
                let (updates, error) = self.list_and_watch(i, st, &mut watches).await;
                if !send_batched(&tx, updates, self.cfg.max_batch).await {
                    return;
                }
                if let Some(e) = error {
                    tracing::warn!(prefix = %st.prefix, error = %e, "datastore list or watch failed; will retry");
                    failed = true;
                }
            }
            let listed = states.iter().filter(|s| s.listed).count();
            let new_status = if listed == states.len() {
                SyncStatus::InSync
            } else if listed > 0 {
                SyncStatus::ResyncInProgress
            } else {
                SyncStatus::WaitForDatastore
            };
            if new_status != status && status != SyncStatus::InSync {
                status = new_status;
                if tx.send(SyncEvent::Status(status)).await.is_err() {
                    return;
                }
            }
            if failed {
                let jitter = rand::rng().random_range(0.8..1.2);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                    _ = tx.closed() => return,
                }
                backoff = (backoff * 2).min(self.cfg.max_backoff);
                continue;
            }
            backoff = self.cfg.min_backoff;
            tokio::select! {
                ev = watches.next(), if !watches.is_empty() => {
                    let Some(first) = ev else { continue };
                    let mut updates = Vec::new();
                    self.handle(&mut states, first, &mut updates);
                    // Take whatever else is already waiting, so bursts go out as one batch.
                    while updates.len() < self.cfg.max_batch {
                        match watches.next().now_or_never() {
                            Some(Some(ev)) => self.handle(&mut states, ev, &mut updates),
                            _ => break,
                        }
                    }
                    if !send_batched(&tx, updates, self.cfg.max_batch).await {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(next_resync) => {
                    tracing::debug!("periodic resync: listing every prefix again");
                    for st in &mut states {
                        st.need_list = true;
                    }
                    next_resync = Instant::now() + self.cfg.resync_interval;
                }
                _ = tx.closed() => return,
            }
        }
    }

    /// Lists a prefix and (re)starts its watch. The list's updates are returned even when
    /// the watch cannot be started: the cache already counts them as delivered.
    async fn list_and_watch(
        &self,
        i: usize,
        st: &mut PrefixState,
        watches: &mut SelectAll<futures::stream::BoxStream<'static, Tagged>>,
    ) -> (Vec<SyncUpdate>, Option<DatastoreError>) {
        let list = match self.ds.list(&st.prefix).await {
            Ok(l) => l,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let updates = st.cache.apply_list(&list);
        st.listed = true;
        st.need_list = false;
        if st.watching {
            return (updates, None);
        }
        match self.ds.watch(&st.prefix, list.revision + 1).await {
            Ok(stream) => {
                st.generation += 1;
                st.watching = true;
                let generation = st.generation;
                watches.push(stream.map(move |ev| (i, generation, ev)).boxed());
                (updates, None)
            }
            Err(e) => {
                st.need_list = true;
                (updates, Some(e))
            }
        }
    }

    fn handle(
        &self,
        states: &mut [PrefixState],
        (i, generation, ev): Tagged,
        out: &mut Vec<SyncUpdate>,
    ) {
        let Some(st) = states.get_mut(i) else { return };
        if generation != st.generation {
            return;
        }
        match ev {
            Ok(ev) => out.extend(st.cache.apply_event(&ev)),
            Err(e) => {
                match &e {
                    DatastoreError::Compacted { .. } => {
                        tracing::info!(prefix = %st.prefix, error = %e, "watch fell behind compaction; listing again")
                    }
                    _ => {
                        tracing::warn!(prefix = %st.prefix, error = %e, "watch ended; listing again")
                    }
                }
                st.watching = false;
                st.need_list = true;
            }
        }
    }
}

/// Sends updates in batches; false when the consumer has gone.
async fn send_batched(
    tx: &mpsc::Sender<SyncEvent>,
    mut updates: Vec<SyncUpdate>,
    max: usize,
) -> bool {
    while !updates.is_empty() {
        let rest = updates.split_off(updates.len().min(max));
        if tx.send(SyncEvent::Updates(updates)).await.is_err() {
            return false;
        }
        updates = rest;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_api::Kind;

    fn key(n: &str) -> Key {
        Key::resource(Kind::IpPool, None, n)
    }

    fn kv(n: &str, v: &str, rev: i64) -> KvPair {
        KvPair {
            key: key(n),
            value: v.as_bytes().to_vec(),
            revision: rev,
        }
    }

    #[test]
    fn a_list_emits_only_the_difference() {
        let mut c = SyncCache::new();
        let first = c.apply_list(&KvList {
            items: vec![kv("a", "1", 2), kv("b", "1", 3)],
            revision: 3,
        });
        assert_eq!(first.len(), 2);
        let again = c.apply_list(&KvList {
            items: vec![kv("a", "1", 2), kv("b", "2", 5), kv("c", "1", 6)],
            revision: 6,
        });
        assert_eq!(
            again,
            vec![
                SyncUpdate::Put(kv("b", "2", 5)),
                SyncUpdate::Put(kv("c", "1", 6))
            ]
        );
        let third = c.apply_list(&KvList {
            items: vec![kv("c", "1", 6)],
            revision: 9,
        });
        assert_eq!(third.len(), 2);
        assert!(
            third
                .iter()
                .all(|u| matches!(u, SyncUpdate::Delete { revision: 9, .. }))
        );
    }

    #[test]
    fn stale_and_duplicate_events_are_dropped() {
        let mut c = SyncCache::new();
        c.apply_list(&KvList {
            items: vec![kv("a", "1", 5)],
            revision: 5,
        });
        assert_eq!(c.apply_event(&WatchEvent::Put(kv("a", "old", 4))), None);
        assert_eq!(c.apply_event(&WatchEvent::Put(kv("a", "1", 5))), None);
        assert!(c.apply_event(&WatchEvent::Put(kv("a", "2", 7))).is_some());
        assert_eq!(
            c.apply_event(&WatchEvent::Delete {
                key: key("a"),
                revision: 6
            }),
            None
        );
        assert_eq!(
            c.apply_event(&WatchEvent::Delete {
                key: key("zz"),
                revision: 8
            }),
            None
        );
        assert!(
            c.apply_event(&WatchEvent::Delete {
                key: key("a"),
                revision: 8
            })
            .is_some()
        );
        assert!(c.is_empty());
        assert_eq!(c.revision(), 8);
    }

    #[test]
    fn events_already_covered_by_a_resync_list_are_dropped() {
        // k at 5 in the cache; k updated at 10 and deleted at 11 while both events are still
        // in flight; a periodic list at 11 already reflects both.
        let mut c = SyncCache::new();
        c.apply_list(&KvList {
            items: vec![kv("k", "1", 5)],
            revision: 5,
        });
        let ups = c.apply_list(&KvList {
            items: vec![],
            revision: 11,
        });
        assert_eq!(
            ups,
            vec![SyncUpdate::Delete {
                key: key("k"),
                revision: 11
            }]
        );
        assert_eq!(c.apply_event(&WatchEvent::Put(kv("k", "2", 10))), None);
        assert_eq!(
            c.apply_event(&WatchEvent::Delete {
                key: key("k"),
                revision: 11
            }),
            None
        );
        assert!(c.apply_event(&WatchEvent::Put(kv("k", "3", 12))).is_some());
    }

    #[test]
    fn a_datastore_reset_is_diffed_by_content() {
        let mut c = SyncCache::new();
        c.apply_list(&KvList {
            items: vec![kv("a", "1", 50), kv("b", "1", 60)],
            revision: 60,
        });
        // Restored from an older backup: revisions went backwards.
        let ups = c.apply_list(&KvList {
            items: vec![kv("a", "1", 50), kv("c", "1", 20)],
            revision: 30,
        });
        assert_eq!(ups.len(), 2, "{ups:?}");
        assert!(ups.contains(&SyncUpdate::Put(kv("c", "1", 20))));
        assert!(ups.contains(&SyncUpdate::Delete {
            key: key("b"),
            revision: 30
        }));
        assert_eq!(c.revision(), 30);
    }
}
