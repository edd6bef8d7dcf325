//! felixd: the per-node agent. It turns the datastore's endpoints, policies, profiles and
//! pools into iptables or nftables rules, IP sets and routes on this node, and keeps them so.
//!
//! - [`calc`]: the calculation graph (active policies, IP set members, endpoint tiers);
//! - [`generic`]: the backend-neutral rule model and Calico's exact iptables text;
//! - [`rules`]: Calico's rule set (static, dispatch, endpoint, policy and NAT chains).

pub mod calc;
pub mod dataplane;
pub mod generic;
pub mod rules;
