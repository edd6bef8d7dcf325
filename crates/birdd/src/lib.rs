//! birdd: the per-node BGP daemon.
//!
//! - [`calico`]: the datastore's Node, BGPConfiguration, BGPPeer, IPPool and block resources
//!   turned into the peers to run and the routes to advertise, as Calico's confd templates do;
//! - [`daemon`]: the loop that owns the RIB and the peers;
//! - [`session`]: one peer's TCP connection and timers around the sans-IO state machine;
//! - [`kernel`]: learned routes in the kernel's main table with protocol `bird`, in batches;
//! - [`control`]: the gRPC socket `calicoctl node status` reads, health and metrics.

pub mod adj_out;
pub mod calico;
pub mod control;
pub mod daemon;
pub mod dirty;
pub mod kernel;
pub mod metrics;
pub mod secrets;
pub mod session;
pub mod sockopt;
