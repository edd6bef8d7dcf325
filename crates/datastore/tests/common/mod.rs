//! Backends for the shared test suites.

pub use calico_etcd_harness::backend::Backend;
