//! Datastores for tests: a fresh in-memory store, or a fresh real etcd with a connected
//! backend, plus what only tests may do to them (compaction).

use std::sync::Arc;

use calico_datastore::Datastore;
use calico_datastore::etcd::{EtcdConfig, EtcdDatastore};
use calico_datastore::memory::MemoryDatastore;

use crate::Etcd;

/// A datastore under test.
#[derive(Debug)]
pub enum Backend {
    Memory(Arc<MemoryDatastore>),
    Etcd { etcd: Etcd, ds: Arc<EtcdDatastore> },
}

impl Backend {
    pub fn memory() -> Backend {
        Backend::Memory(Arc::new(MemoryDatastore::new()))
    }

    /// Starts a real etcd and connects to it.
    pub async fn etcd() -> Backend {
        let etcd = Etcd::start();
        let ds = EtcdDatastore::connect(&EtcdConfig::new([etcd.endpoint()]))
            .await
            .unwrap_or_else(|e| panic!("connecting to the test etcd: {e}"));
        Backend::Etcd {
            etcd,
            ds: Arc::new(ds),
        }
    }

    pub fn ds(&self) -> Arc<dyn Datastore> {
        match self {
            Backend::Memory(m) => m.clone(),
            Backend::Etcd { ds, .. } => ds.clone(),
        }
    }

    /// Drops history older than `revision`.
    pub async fn compact(&self, revision: i64) {
        match self {
            Backend::Memory(m) => m.compact(revision),
            Backend::Etcd { ds, .. } => ds
                .compact(revision)
                .await
                .unwrap_or_else(|e| panic!("compacting the test etcd: {e}")),
        }
    }

    /// The etcd process, for tests that crash it.
    pub fn etcd_mut(&mut self) -> Option<&mut Etcd> {
        match self {
            Backend::Etcd { etcd, .. } => Some(etcd),
            Backend::Memory(_) => None,
        }
    }
}
