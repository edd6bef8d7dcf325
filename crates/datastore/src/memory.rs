//! An in-memory datastore with etcd's semantics: one global revision bumped by every write,
//! per-key mod revisions, compare-and-swap writes, watches that replay history from a
//! revision, and compaction that makes older revisions unwatchable.
//!
//! Tests use it wherever a real etcd is not the point; it can also simulate an outage
//! ([`MemoryDatastore::set_available`]) and dropped watch connections
//! ([`MemoryDatastore::break_watches`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::{DatastoreError, Result};
use crate::{
    Datastore, Expect, Key, KeyPrefix, KvList, KvPair, TxnOutcome, TxnWrite, WatchEvent,
    WatchStream, check_txn,
};

#[derive(Debug)]
struct Entry {
    key: Key,
    value: Vec<u8>,
    revision: i64,
}

#[derive(Debug)]
struct Change {
    revision: i64,
    key: Key,
    value: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Watcher {
    prefix: KeyPrefix,
    /// Changes below this revision are not sent (a watch from a future revision).
    from_revision: i64,
    tx: mpsc::UnboundedSender<Result<WatchEvent>>,
}

#[derive(Debug)]
struct State {
    revision: i64,
    data: BTreeMap<String, Entry>,
    /// Every change after `compacted`, oldest first.
    history: VecDeque<Change>,
    /// Revisions below this can no longer be watched.
    compacted: i64,
    watchers: Vec<Watcher>,
    available: bool,
    /// Keys written with a TTL and when they go (as an etcd lease expiring: a delete).
    expiry: HashMap<String, std::time::Instant>,
}

/// The in-memory backend.
#[derive(Debug)]
pub struct MemoryDatastore {
    state: Arc<Mutex<State>>,
}

impl Default for MemoryDatastore {
    fn default() -> Self {
        MemoryDatastore::new()
    }
}

/// How much history is kept before old changes are compacted automatically.
const MAX_HISTORY: usize = 200_000;

impl MemoryDatastore {
    pub fn new() -> MemoryDatastore {
        MemoryDatastore {
            state: Arc::new(Mutex::new(State {
                revision: 1,
                data: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                watchers: Vec::new(),
                available: true,
                expiry: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than the panic itself; keep serving.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::expire(&mut s);
        s
    }

    /// Deletes the keys whose TTL has run out, each a change watchers see.
    fn expire(s: &mut State) {
        if s.expiry.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let mut due: Vec<String> = s
            .expiry
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        due.sort();
        for path in due {
            s.expiry.remove(&path);
            if let Some(e) = s.data.remove(&path) {
                Self::record(s, e.key, None);
            }
        }
    }

    /// Forgets history older than `revision`; watches from before it fail with `Compacted`.
    pub fn compact(&self, revision: i64) {
        let mut s = self.lock();
        s.compacted = s.compacted.max(revision);
        while s.history.front().is_some_and(|c| c.revision < revision) {
            s.history.pop_front();
        }
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    /// Makes every operation fail with `Unavailable` (and ends open watches) until set back.
    pub fn set_available(&self, available: bool) {
        let mut s = self.lock();
        s.available = available;
        if !available {
            Self::fail_watchers(&mut s);
        }
    }

    /// Ends every open watch with `Unavailable`, as a dropped connection would.
    pub fn break_watches(&self) {
        Self::fail_watchers(&mut self.lock());
    }

    fn fail_watchers(s: &mut State) {
        for w in s.watchers.drain(..) {
            let _ =
                w.tx.send(Err(unavailable("the watch connection was closed")));
        }
    }

    fn check_available(s: &State) -> Result<()> {
        if s.available {
            Ok(())
        } else {
            Err(unavailable("simulated outage"))
        }
    }

    fn record(s: &mut State, key: Key, value: Option<Vec<u8>>) -> i64 {
        s.revision += 1;
        let revision = s.revision;
        Self::record_at(s, revision, key, value);
        revision
    }

    /// Records a change at a revision already taken (a transaction's writes share one).
    fn record_at(s: &mut State, revision: i64, key: Key, value: Option<Vec<u8>>) {
        let event = match &value {
            Some(v) => WatchEvent::Put(KvPair {
                key: key.clone(),
                value: v.clone(),
                revision,
            }),
            None => WatchEvent::Delete {
                key: key.clone(),
                revision,
            },
        };
        s.watchers.retain(|w| {
            !w.prefix.matches(&key)
                || revision < w.from_revision
                || w.tx.send(Ok(event.clone())).is_ok()
        });
        s.history.push_back(Change {
            revision,
            key,
            value,
        });
        if s.history.len() > MAX_HISTORY
            && let Some(c) = s.history.pop_front()
        {
            s.compacted = c.revision + 1;
        }
    }

    fn put(s: &mut State, key: &Key, value: Vec<u8>) -> KvPair {
        // A write without a TTL detaches the key from its lease, as in etcd.
        s.expiry.remove(&key.path());
        let revision = Self::record(s, key.clone(), Some(value.clone()));
        s.data.insert(
            key.path(),
            Entry {
                key: key.clone(),
                value: value.clone(),
                revision,
            },
        );
        KvPair {
            key: key.clone(),
            value,
            revision,
        }
    }
}

fn unavailable(reason: &str) -> DatastoreError {
    DatastoreError::Unavailable {
        backend: "memory datastore".into(),
        reason: reason.into(),
    }
}

fn kv(e: &Entry) -> KvPair {
    KvPair {
        key: e.key.clone(),
        value: e.value.clone(),
        revision: e.revision,
    }
}

#[async_trait::async_trait]
impl Datastore for MemoryDatastore {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &Key) -> Result<KvPair> {
        let s = self.lock();
        Self::check_available(&s)?;
        s.data
            .get(&key.path())
            .map(kv)
            .ok_or_else(|| DatastoreError::NotFound { key: key.path() })
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<KvList> {
        let s = self.lock();
        Self::check_available(&s)?;
        let p = prefix.path();
        let items = s
            .data
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .filter(|(_, e)| prefix.matches(&e.key))
            .map(|(_, e)| kv(e))
            .collect();
        Ok(KvList {
            items,
            revision: s.revision,
        })
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<KvPair> {
        key.check()?;
        let mut s = self.lock();
        Self::check_available(&s)?;
        if s.data.contains_key(&key.path()) {
            return Err(DatastoreError::AlreadyExists { key: key.path() });
        }
        Ok(Self::put(&mut s, key, value))
    }

    async fn update(&self, key: &Key, value: Vec<u8>, revision: i64) -> Result<KvPair> {
        key.check()?;
        let mut s = self.lock();
        Self::check_available(&s)?;
        match s.data.get(&key.path()) {
            None => return Err(DatastoreError::NotFound { key: key.path() }),
            Some(e) if e.revision != revision => {
                return Err(DatastoreError::Conflict {
                    key: key.path(),
                    expected: revision,
                    actual: Some(e.revision),
                });
            }
            Some(_) => {}
        }
        Ok(Self::put(&mut s, key, value))
    }

    async fn apply(&self, key: &Key, value: Vec<u8>) -> Result<KvPair> {
        key.check()?;
        let mut s = self.lock();
        Self::check_available(&s)?;
        Ok(Self::put(&mut s, key, value))
    }

    async fn apply_with_ttl(
        &self,
        key: &Key,
        value: Vec<u8>,
        ttl: std::time::Duration,
    ) -> Result<KvPair> {
        key.check()?;
        let mut s = self.lock();
        Self::check_available(&s)?;
        let kv = Self::put(&mut s, key, value);
        let ttl = std::time::Duration::from_secs(ttl.as_secs().max(1));
        s.expiry.insert(key.path(), std::time::Instant::now() + ttl);
        // Expiry must reach watchers even when nothing else touches the store.
        let state = Arc::downgrade(&self.state);
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            if let Some(state) = state.upgrade() {
                Self::expire(&mut state.lock().unwrap_or_else(|p| p.into_inner()));
            }
        });
        Ok(kv)
    }

    async fn delete(&self, key: &Key, revision: Option<i64>) -> Result<KvPair> {
        key.check()?;
        let mut s = self.lock();
        Self::check_available(&s)?;
        let path = key.path();
        match (s.data.get(&path), revision) {
            (None, _) => return Err(DatastoreError::NotFound { key: path }),
            (Some(e), Some(r)) if e.revision != r => {
                return Err(DatastoreError::Conflict {
                    key: path,
                    expected: r,
                    actual: Some(e.revision),
                });
            }
            _ => {}
        }
        s.expiry.remove(&path);
        let old = s.data.remove(&path).map(|e| kv(&e));
        let revision = Self::record(&mut s, key.clone(), None);
        let mut old = old.ok_or(DatastoreError::NotFound { key: path })?;
        old.revision = revision;
        Ok(old)
    }

    async fn txn(&self, writes: &[TxnWrite]) -> Result<TxnOutcome> {
        check_txn(writes)?;
        let mut s = self.lock();
        Self::check_available(&s)?;
        let as_expected = writes
            .iter()
            .all(|w| match (s.data.get(&w.key.path()), w.expect) {
                (None, Expect::Absent) => true,
                (Some(e), Expect::Revision(r)) => e.revision == r,
                _ => false,
            });
        if !as_expected {
            let current = writes
                .iter()
                .map(|w| s.data.get(&w.key.path()).map(kv))
                .collect();
            return Ok(TxnOutcome::Failed { current });
        }
        s.revision += 1;
        let revision = s.revision;
        for w in writes {
            s.expiry.remove(&w.key.path());
            match &w.value {
                Some(v) => {
                    s.data.insert(
                        w.key.path(),
                        Entry {
                            key: w.key.clone(),
                            value: v.clone(),
                            revision,
                        },
                    );
                }
                None => {
                    s.data.remove(&w.key.path());
                }
            }
            Self::record_at(&mut s, revision, w.key.clone(), w.value.clone());
        }
        Ok(TxnOutcome::Committed { revision })
    }

    async fn watch(&self, prefix: &KeyPrefix, from_revision: i64) -> Result<WatchStream> {
        let mut s = self.lock();
        Self::check_available(&s)?;
        let (tx, rx) = mpsc::unbounded_channel();
        if from_revision > 0 && from_revision < s.compacted {
            // As etcd does, the watch starts and is then cancelled with the compaction point.
            let _ = tx.send(Err(DatastoreError::Compacted {
                requested: from_revision,
                compacted: s.compacted,
            }));
            return Ok(Box::pin(UnboundedReceiverStream::new(rx)));
        }
        if from_revision > 0 {
            for c in s.history.iter().filter(|c| c.revision >= from_revision) {
                if !prefix.matches(&c.key) {
                    continue;
                }
                let ev = match &c.value {
                    Some(v) => WatchEvent::Put(KvPair {
                        key: c.key.clone(),
                        value: v.clone(),
                        revision: c.revision,
                    }),
                    None => WatchEvent::Delete {
                        key: c.key.clone(),
                        revision: c.revision,
                    },
                };
                let _ = tx.send(Ok(ev));
            }
        }
        s.watchers.push(Watcher {
            prefix: prefix.clone(),
            from_revision,
            tx,
        });
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}
