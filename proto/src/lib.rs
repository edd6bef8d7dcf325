//! The gRPC contracts between calico-rs components, generated at build time from the
//! `.proto` files beside this crate:
//!
//! - [`ipam`]: ipamd (AutoAssign, AssignIP, ReleaseByHandle, ReleaseIPs, Usage, Check);
//! - [`sync`]: typha's snapshot-then-deltas stream;
//! - [`agent`]: felixd's local API for the CNI plugin and status;
//! - [`bgp`]: birdd's peers, routes and decisions.
//!
//! Messages carry typed fields; resource bodies travel as the v3 JSON they are stored as.

#![allow(missing_debug_implementations)]
#![allow(clippy::all, clippy::unwrap_used)] // generated code

pub mod ipam {
    tonic::include_proto!("calico.ipam.v1");
}

pub mod sync {
    tonic::include_proto!("calico.sync.v1");
}

pub mod agent {
    tonic::include_proto!("calico.agent.v1");
}

pub mod bgp {
    tonic::include_proto!("calico.bgp.v1");
}
