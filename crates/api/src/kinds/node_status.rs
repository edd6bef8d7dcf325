//! CalicoNodeStatus (`nodestatus.go`): a request for one node to report its BGP daemon,
//! sessions and routes every `updatePeriodSeconds`, and the report itself in `status`.
//!
//! Users write the spec; the node writes the status. Calico's Go type has no `omitempty` on
//! the status sections, so they are always written in full (`birdV4: {}`, zero counts)
//! once a status exists; this module keeps that shape.

use serde::{Deserialize, Serialize};

use crate::resource::{CalicoNodeStatus, KindRules};
use crate::validation::{Errors, Path, check_subdomain_name};

/// The longest `updatePeriodSeconds` Calico accepts: one day.
pub const MAX_NODE_STATUS_UPDATE_PERIOD_SECONDS: u32 = 86_400;

/// A kind of information the node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeStatusClass {
    Agent,
    #[serde(rename = "BGP")]
    Bgp,
    Routes,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalicoNodeStatusSpec {
    /// The node that reports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<NodeStatusClass>,
    /// How often the node refreshes the status; 0 stops refreshing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_period_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalicoNodeStatusStatus {
    /// When the node last wrote the status (RFC 3339, UTC); `null` before the first report.
    #[serde(default)]
    pub last_updated: Option<String>,
    #[serde(default)]
    pub agent: CalicoNodeAgentStatus,
    #[serde(default)]
    pub bgp: CalicoNodeBgpStatus,
    #[serde(default)]
    pub routes: CalicoNodeBgpRouteStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalicoNodeAgentStatus {
    #[serde(default, rename = "birdV4")]
    pub bird_v4: BgpDaemonStatus,
    #[serde(default, rename = "birdV6")]
    pub bird_v6: BgpDaemonStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpDaemonState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpDaemonStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BgpDaemonState>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, rename = "routerID", skip_serializing_if = "String::is_empty")]
    pub router_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_boot_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_reconfiguration_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalicoNodeBgpStatus {
    #[serde(default, rename = "numberEstablishedV4")]
    pub number_established_v4: i64,
    #[serde(default, rename = "numberNotEstablishedV4")]
    pub number_not_established_v4: i64,
    #[serde(default, rename = "numberEstablishedV6")]
    pub number_established_v6: i64,
    #[serde(default, rename = "numberNotEstablishedV6")]
    pub number_not_established_v6: i64,
    #[serde(default, rename = "peersV4", skip_serializing_if = "Vec::is_empty")]
    pub peers_v4: Vec<CalicoNodePeer>,
    #[serde(default, rename = "peersV6", skip_serializing_if = "Vec::is_empty")]
    pub peers_v6: Vec<CalicoNodePeer>,
}

/// How a BGP peer is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpPeerType {
    NodeMesh,
    NodePeer,
    GlobalPeer,
}

/// RFC 4271 session states, as Calico spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpSessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
    Close,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalicoNodePeer {
    #[serde(default, rename = "peerIP", skip_serializing_if = "String::is_empty")]
    pub peer_ip: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<BgpPeerType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BgpSessionState>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub since: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalicoNodeBgpRouteStatus {
    #[serde(default, rename = "routesV4", skip_serializing_if = "Vec::is_empty")]
    pub routes_v4: Vec<CalicoNodeRoute>,
    #[serde(default, rename = "routesV6", skip_serializing_if = "Vec::is_empty")]
    pub routes_v6: Vec<CalicoNodeRoute>,
}

/// Whether a route is used for forwarding (`FIB`) or only known to BGP (`RIB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CalicoNodeRouteType {
    #[serde(rename = "FIB")]
    Fib,
    #[serde(rename = "RIB")]
    Rib,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CalicoNodeRouteSourceType {
    Kernel,
    Static,
    Direct,
    NodeMesh,
    #[serde(rename = "BGPPeer")]
    BgpPeer,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalicoNodeRoute {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<CalicoNodeRouteType>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// A struct in Go, so written even when empty (`omitempty` has no effect on it).
    #[serde(default)]
    pub learned_from: CalicoNodeRouteLearnedFrom,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalicoNodeRouteLearnedFrom {
    #[serde(
        default,
        rename = "sourceType",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_type: Option<CalicoNodeRouteSourceType>,
    #[serde(default, rename = "peerIP", skip_serializing_if = "String::is_empty")]
    pub peer_ip: String,
}

fn check_ip(errs: &mut Errors, p: Path, ip: &str) {
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        errs.add(p, format!("{ip:?} is not an IP address"));
    }
}

impl KindRules for CalicoNodeStatus {
    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        if s.node.is_empty() {
            errs.add(
                p.field("node"),
                "is required: name the node that should report its status",
            );
        } else {
            errs.check(p.field("node"), check_subdomain_name(&s.node));
        }
        if s.classes.is_empty() {
            errs.add(
                p.field("classes"),
                "is required: list at least one of Agent, BGP, Routes",
            );
        }
        for (i, c) in s.classes.iter().enumerate() {
            if s.classes[..i].contains(c) {
                errs.add(
                    p.field("classes").index(i),
                    format!("{c:?} is listed twice; list each class once"),
                );
            }
        }
        match s.update_period_seconds {
            None => errs.add(
                p.field("updatePeriodSeconds"),
                "is required: how often the node refreshes the status, in seconds (0 to stop)",
            ),
            Some(n) if n > MAX_NODE_STATUS_UPDATE_PERIOD_SECONDS => errs.add(
                p.field("updatePeriodSeconds"),
                format!("{n} is more than one day ({MAX_NODE_STATUS_UPDATE_PERIOD_SECONDS})"),
            ),
            Some(_) => {}
        }
        // The status is the node's, but Calico's validator still checks its addresses.
        if let Some(st) = &self.status {
            let sp = Path::root("status");
            for (field, peers) in [("peersV4", &st.bgp.peers_v4), ("peersV6", &st.bgp.peers_v6)] {
                for (i, peer) in peers.iter().enumerate() {
                    let pp = sp.field("bgp").field(field).index(i).field("peerIP");
                    check_ip(errs, pp, &peer.peer_ip);
                }
            }
            for (field, routes) in [
                ("routesV4", &st.routes.routes_v4),
                ("routesV6", &st.routes.routes_v6),
            ] {
                for (i, r) in routes.iter().enumerate() {
                    let rp = sp.field("routes").field(field).index(i);
                    check_ip(
                        errs,
                        rp.field("learnedFrom").field("peerIP"),
                        &r.learned_from.peer_ip,
                    );
                }
            }
        }
    }
}
