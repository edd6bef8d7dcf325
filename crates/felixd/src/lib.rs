//! felixd: the per-node agent. It turns the datastore's endpoints, policies, profiles and
//! pools into iptables or nftables rules, IP sets and routes on this node, and keeps them so.
//!
//! - [`daemon`]: the main loop (syncer and agent in, calculation, dataplane out);
//! - [`calc`]: the calculation graph (active policies, IP set members, endpoint tiers);
//! - [`rules`]: Calico's rule set (static, dispatch, endpoint, policy and NAT chains);
//! - [`generic`]: the backend-neutral rule model and Calico's exact iptables text;
//! - [`dataplane`]: iptables tables, IP sets and routes kept equal to what is wanted;
//! - [`config`], [`agent`], [`metrics`]: configuration, the CNI plugin's socket, Prometheus.

pub mod agent;
pub mod calc;
pub mod chain_graph;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod generic;
pub mod metrics;
pub mod nftables;
pub mod rules;
pub mod status;
