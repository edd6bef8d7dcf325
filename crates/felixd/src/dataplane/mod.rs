//! The dataplane: iptables tables, IP sets and routes, kept equal to what the calculation
//! graph wants.

pub mod exec;
pub mod ipsets;
pub mod iptables;
pub mod routes;
