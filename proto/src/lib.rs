//! The gRPC contracts between calico-rs components, generated at build time from the
//! `.proto` files beside this crate:
//!
//! - [`ipam`]: ipamd (AutoAssign, AssignIP, ReleaseByHandle, ReleaseIPs, Usage, Check, ...);
//! - [`sync`]: typha's snapshot-then-deltas stream;
//! - [`agent`]: felixd's local API for the CNI plugin and status;
//! - [`bgp`]: birdd's peers, routes and decisions;
//!
//! and [`endpoint`], how a client dials any of them; [`lifecycle`], how every daemon stops.
//!
//! Messages carry typed fields; resource bodies travel as the v3 JSON they are stored as.

pub mod endpoint;
pub mod lifecycle;

#[allow(missing_debug_implementations, clippy::all, clippy::unwrap_used)] // generated code
pub mod ipam {
    tonic::include_proto!("calico.ipam.v1");
}

#[allow(missing_debug_implementations, clippy::all, clippy::unwrap_used)] // generated code
pub mod sync {
    tonic::include_proto!("calico.sync.v1");
}

#[allow(missing_debug_implementations, clippy::all, clippy::unwrap_used)] // generated code
pub mod agent {
    tonic::include_proto!("calico.agent.v1");
}

#[allow(missing_debug_implementations, clippy::all, clippy::unwrap_used)] // generated code
pub mod bgp {
    tonic::include_proto!("calico.bgp.v1");
}
