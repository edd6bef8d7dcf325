//! The spec of every kind, with Calico's defaults and validation rules next to each.

mod bgp;
mod cluster;
mod endpoint;
mod felix;
mod ipam;
mod ippool;
mod k8s_policy;
mod networkset;
mod node;
mod node_status;
mod policy;
mod staged;

pub use bgp::*;
pub use cluster::*;
pub use endpoint::*;
pub use felix::*;
pub use ipam::*;
pub use ippool::*;
pub use k8s_policy::*;
pub use networkset::*;
pub use node::*;
pub use node_status::*;
pub use policy::*;
pub use staged::*;

/// Serde helper: skip `false` booleans, as Go's `omitempty` does.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
