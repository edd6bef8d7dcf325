//! Calico IPAM: IP pools carved into blocks (/26 by default) with node affinity, borrowing,
//! handles and leak collection, on top of the Datastore trait with compare-and-swap writes
//! only.
//!
//! Not implemented yet in this build: the allocator lands with the IPAM issue. The data
//! layout it will use (block, affinity and handle keys) is already defined by
//! `calico_api::names` and `calico_datastore::Key`.
