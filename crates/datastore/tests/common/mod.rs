//! Backends for the shared test suites: a fresh in-memory store, or a fresh real etcd.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use calico_datastore::Datastore;
use calico_datastore::etcd::{EtcdConfig, EtcdDatastore};
use calico_datastore::memory::MemoryDatastore;
use calico_etcd_harness::Etcd;

/// A datastore under test, plus what only tests may do to it.
#[derive(Debug)]
pub enum Backend {
    Memory(Arc<MemoryDatastore>),
    Etcd { etcd: Etcd, ds: Arc<EtcdDatastore> },
}

impl Backend {
    pub fn memory() -> Backend {
        Backend::Memory(Arc::new(MemoryDatastore::new()))
    }

    pub async fn etcd() -> Backend {
        let etcd = Etcd::start();
        let ds = Arc::new(
            EtcdDatastore::connect(&EtcdConfig::new([etcd.endpoint()]))
                .await
                .unwrap(),
        );
        Backend::Etcd { etcd, ds }
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
            Backend::Etcd { ds, .. } => ds.compact(revision).await.unwrap(),
        }
    }
}
