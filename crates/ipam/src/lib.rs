//! Calico IPAM: IP pools carved into blocks (/26 by default) with node affinity, borrowing,
//! handles, reservations and release guarded by sequence numbers, over the Datastore trait
//! with compare-and-swap writes only — no locks, so any number of allocators may run at once.
//!
//! The data is Calico's (`/calico/ipam/v2/...`, the same JSON), so Calico and calico-rs can
//! read each other's allocations.
//!
//! - [`block`]: the allocation block and its pure operations;
//! - [`model`]: affinities, handles, configuration;
//! - [`pools`]: which pools a request may use and the order blocks are tried in;
//! - [`allocator`]: AutoAssign, AssignIP, release, affinities and usage over a datastore;
//! - [`inputs`]: configuration, pools, reservations and node labels, read or watched;
//! - `blocks`: block and handle writes as single transactions, combined per block.

pub mod allocator;
pub mod block;
mod blocks;
pub mod check;
pub mod client;
mod error;
pub mod gc;
pub mod inputs;
pub mod metrics;
pub mod model;
pub mod pools;
pub mod server;
pub mod service;

pub use allocator::{Assignment, AutoAssignArgs, Ipam, ReleaseOutcome};
pub use block::ReleaseRequest;
pub use error::{IpamError, Result};
pub use pools::IpUse;
