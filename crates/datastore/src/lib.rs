//! The datastore: Calico's data, stored where Calico stores it.
//!
//! [`Datastore`] is the contract every backend meets: get, list, create, update, apply and
//! delete keyed values with revision preconditions, and watch from a revision with ordered
//! events. Values are the JSON Calico writes. Backends:
//! - [`etcd::EtcdDatastore`]: etcd v3 with Calico's key layout; every write is one
//!   transaction compared on the key's version or mod_revision;
//! - [`memory::MemoryDatastore`]: the same semantics in memory, for tests.
//!
//! On top sit [`client::ResourceClient`] (typed `projectcalico.org/v3` resources with
//! Calico's create/update rules) and [`syncer`] (list-then-watch caches that survive
//! compaction and lost connections), which typha, felixd and birdd all use.
//!
//! This crate knows nothing of Linux networking.

pub mod client;
pub mod config;
pub mod error;
pub mod etcd;
pub mod key;
pub mod memory;
pub mod syncer;

use std::pin::Pin;

use futures::Stream;

pub use client::ResourceClient;
pub use error::{DatastoreError, Result};
pub use key::{Key, KeyPrefix};

/// A stored value and the revision that last modified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    pub key: Key,
    /// JSON, exactly as Calico stores it.
    pub value: Vec<u8>,
    /// The datastore revision of the last write to this key (etcd's mod_revision).
    pub revision: i64,
}

/// The result of a list: the values, and the datastore revision they were read at (watch from
/// `revision + 1` to see every later change exactly once).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvList {
    pub items: Vec<KvPair>,
    pub revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Created or modified.
    Put(KvPair),
    /// Deleted at `revision`.
    Delete { key: Key, revision: i64 },
    /// Nothing changed under the prefix, but the datastore reached `revision` (lets a watcher
    /// advance its position during quiet periods).
    Progress { revision: i64 },
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.revision,
            WatchEvent::Delete { revision, .. } | WatchEvent::Progress { revision } => *revision,
        }
    }
}

/// What a key must look like for a [`TxnWrite`] to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist.
    Absent,
    /// The key exists and was last written at this revision.
    Revision(i64),
}

/// One key's part in an atomic multi-key write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnWrite {
    pub key: Key,
    pub expect: Expect,
    /// The new value, or `None` to delete the key.
    pub value: Option<Vec<u8>>,
}

/// The result of [`Datastore::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every write took effect, all at this revision.
    Committed { revision: i64 },
    /// Some key was not as expected; nothing was written. `current` holds each key's value
    /// now, in the order of the writes (`None`: the key does not exist), so the caller can
    /// retry without reading them again.
    Failed { current: Vec<Option<KvPair>> },
}

/// The most writes one transaction may carry. etcd's default `--max-txn-ops` is 128 and
/// applies to each of a transaction's compares, its writes and (when it fails) its reads
/// back; each write here costs one of each.
pub const MAX_TXN_WRITES: usize = 128;

/// The checks every backend makes on a transaction before sending it.
pub fn check_txn(writes: &[TxnWrite]) -> Result<()> {
    let invalid = |reason: String| DatastoreError::InvalidTxn { reason };
    if writes.is_empty() {
        return Err(invalid("a transaction needs at least one write".into()));
    }
    if writes.len() > MAX_TXN_WRITES {
        return Err(invalid(format!(
            "a transaction of {} writes is over the limit of {MAX_TXN_WRITES}",
            writes.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(writes.len());
    for w in writes {
        w.key.check()?;
        let path = w.key.path();
        if let Expect::Revision(r) = w.expect
            && r <= 0
        {
            return Err(invalid(format!(
                "{path}: revision {r} cannot be expected (revisions start at 1; use Expect::Absent)"
            )));
        }
        if w.value.is_none() && w.expect == Expect::Absent {
            return Err(invalid(format!(
                "{path}: deleting a key expected to be absent"
            )));
        }
        if !seen.insert(path.clone()) {
            return Err(invalid(format!(
                "{path} is written twice in one transaction"
            )));
        }
    }
    Ok(())
}

/// An ordered stream of changes; ends with an error (e.g. [`DatastoreError::Compacted`] or
/// [`DatastoreError::Unavailable`]) or when the datastore closes it.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// The operations every backend provides.
#[async_trait::async_trait]
pub trait Datastore: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for messages and metrics (`etcdv3`, `memory`).
    fn backend_name(&self) -> &'static str;

    async fn get(&self, key: &Key) -> Result<KvPair>;

    /// Every value under `prefix`, with the revision they were read at.
    async fn list(&self, prefix: &KeyPrefix) -> Result<KvList>;

    /// Writes a new key; fails with `AlreadyExists` if it is there.
    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<KvPair>;

    /// Replaces a key's value if its revision is still `revision`; `Conflict` otherwise,
    /// `NotFound` if it is gone.
    async fn update(&self, key: &Key, value: Vec<u8>, revision: i64) -> Result<KvPair>;

    /// Writes a key whatever its current state.
    async fn apply(&self, key: &Key, value: Vec<u8>) -> Result<KvPair>;

    /// Writes a key whatever its current state, to be deleted by the datastore `ttl` later
    /// unless written again (liveness reports; whole seconds, at least one).
    async fn apply_with_ttl(
        &self,
        key: &Key,
        value: Vec<u8>,
        ttl: std::time::Duration,
    ) -> Result<KvPair>;

    /// Deletes a key, if `revision` is given only while it is still at that revision.
    /// Returns the value that was deleted.
    async fn delete(&self, key: &Key, revision: Option<i64>) -> Result<KvPair>;

    /// Writes several keys atomically, each only if it is as expected: all or nothing.
    /// Fails with `Invalid` for an empty or oversized list, a key named twice, or a delete
    /// of a key expected to be absent.
    async fn txn(&self, writes: &[TxnWrite]) -> Result<TxnOutcome>;

    /// Changes under `prefix` with a revision of at least `from_revision`, in revision order.
    async fn watch(&self, prefix: &KeyPrefix, from_revision: i64) -> Result<WatchStream>;
}
