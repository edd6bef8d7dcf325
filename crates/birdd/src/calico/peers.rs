//! The peerings of one node, as confd computes them.
//!
//! Two steps, like confd:
//!
//! 1. `client.go` `updatePeersV1` turns v3 BGPPeers into v1 peerings keyed by
//!    (peer IP, port), globally or per node: a pass over global BGPPeers, a pass over
//!    node-scoped ones (skipping any that duplicate a global key), then automatic reverse
//!    peerings so that a Calico node named by `peerIP`/`peerSelector` peers back. The first
//!    peering emitted for a key wins. Go iterates its BGPPeer map in random order; here the
//!    order is by BGPPeer name, so ties are decided the same way every time.
//! 2. `bgp_processor.go` `processPeers` renders mesh, `Global_` and `Node_` peers for this
//!    node and one family: names, passive side, route-reflector clients, next hop.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use calico_api::{BgpPeerSpec, NextHopMode, ReversePeering, SourceAddress, parse_peer_ip};

use super::view::View;
use super::{CalicoError, DEFAULT_PORT, PasswordRef, PeerIntent, PeerKind};

/// A v1 peering (`backends.BGPPeer`) before rendering.
#[derive(Debug, Clone)]
struct RawPeer {
    ip: IpAddr,
    /// 0: not set.
    port: u16,
    as_num: u32,
    /// 0: not set.
    local_as: u32,
    use_node_ip: bool,
    keep_next_hop: bool,
    next_hop_mode: Option<NextHopMode>,
    /// The peer IP is a Calico node's BGP address (confd's `CalicoNode`), which makes one
    /// side of a global peering passive.
    calico_node: bool,
    ttl_security: u8,
    filters: Vec<String>,
    num_allow_local_as: i32,
    reachable_by: Option<IpAddr>,
    rr_cluster_id: String,
    password: Option<PasswordRef>,
    restart_time: Option<Duration>,
    keepalive_time: Option<Duration>,
    origin: String,
}

/// Go's `int(math.Round(d.Seconds()))`; a negative duration is dropped.
fn whole_seconds(d: &calico_api::numorstring::Duration) -> Option<Duration> {
    d.to_std()
        .map(|d| Duration::from_secs(d.as_secs_f64().round() as u64))
}

/// `setPeerConfigFieldsFromV3Resource`.
fn set_config_fields(p: &mut RawPeer, spec: &BgpPeerSpec) {
    p.password = spec
        .password
        .as_ref()
        .and_then(|pw| pw.secret_key_ref.as_ref())
        .map(|r| PasswordRef {
            secret_name: r.name.clone(),
            key: r.key.clone(),
        });
    p.use_node_ip =
        spec.source_address.unwrap_or(SourceAddress::UseNodeIp) == SourceAddress::UseNodeIp;
    p.restart_time = spec.max_restart_time.as_ref().and_then(whole_seconds);
    p.keepalive_time = spec.keepalive_time.as_ref().and_then(whole_seconds);
}

/// `getNextHopMode`: `nextHopMode` wins over the legacy `keepOriginalNextHop`.
fn next_hop(spec: &BgpPeerSpec) -> (bool, Option<NextHopMode>) {
    match spec.next_hop_mode {
        Some(m) => (false, Some(m)),
        None => (spec.keep_original_next_hop, None),
    }
}

/// The key of a v1 peering.
type PeerKey = (IpAddr, u16);

struct Emitter {
    global_keys: BTreeSet<PeerKey>,
    node_keys: BTreeSet<PeerKey>,
    out: Vec<(PeerKind, RawPeer)>,
}

impl Emitter {
    /// `emit` in `updatePeersV1`: the first peering for a key wins, and a node-specific
    /// peering that duplicates a global one is dropped.
    fn emit(&mut self, kind: PeerKind, p: RawPeer) {
        let key = (p.ip, p.port);
        let fresh = match kind {
            PeerKind::Global => self.global_keys.insert(key),
            _ => !self.global_keys.contains(&key) && self.node_keys.insert(key),
        };
        if fresh {
            self.out.push((kind, p));
        }
    }
}

/// The peerings for `v.me`, rendered and sorted by name.
pub(crate) fn compute(v: &mut View<'_>) -> Vec<PeerIntent> {
    let mut peers = mesh(v);
    let mut em = Emitter {
        global_keys: BTreeSet::new(),
        node_keys: BTreeSet::new(),
        out: Vec::new(),
    };
    let bgp_peers: Vec<(&str, &BgpPeerSpec)> = v
        .state
        .bgp_peers
        .iter()
        .map(|(n, s)| (n.as_str(), s))
        .collect();

    // Global pass, then node-specific pass.
    for global_pass in [true, false] {
        for &(name, spec) in &bgp_peers {
            let is_global = spec.node_selector.is_empty() && spec.node.is_empty();
            if global_pass != is_global {
                continue;
            }
            if !spec.local_workload_selector.is_empty() {
                // Peering with pods (confd's local BGP peer watcher) needs the workload
                // endpoints' live state; not supported.
                continue;
            }
            if !is_global {
                let local = if !spec.node_selector.is_empty() {
                    v.nodes_matching(&spec.node_selector, (name, "nodeSelector"))
                } else {
                    vec![spec.node.as_str()]
                };
                if !local.contains(&v.me) {
                    continue;
                }
            }
            let kind = if is_global {
                PeerKind::Global
            } else {
                PeerKind::NodeSpecific
            };
            for p in forward(v, name, spec) {
                em.emit(kind, p);
            }
        }
    }

    // Automatic reverse peerings: this node is the one a BGPPeer's peerIP / peerSelector
    // names, so it peers back to the nodes the BGPPeer's node / nodeSelector names.
    for &(name, spec) in &bgp_peers {
        if spec.reverse_peering == Some(ReversePeering::Manual)
            || !spec.local_workload_selector.is_empty()
        {
            continue;
        }
        let (local, v4, v6) = if !spec.peer_selector.is_empty() {
            (
                v.nodes_matching(&spec.peer_selector, (name, "peerSelector")),
                true,
                true,
            )
        } else {
            match parse_peer_ip(&spec.peer_ip) {
                Ok((ip, port)) => (
                    nodes_with_ip_port_as(v, ip, spec.as_number.map(|a| a.0), port.unwrap_or(0)),
                    ip.is_ipv4(),
                    ip.is_ipv6(),
                ),
                // Reported by the forward pass.
                Err(_) => continue,
            }
        };
        if !local.contains(&v.me) {
            continue;
        }
        let peer_nodes = if !spec.node_selector.is_empty() {
            v.nodes_matching(&spec.node_selector, (name, "nodeSelector"))
        } else if !spec.node.is_empty() {
            vec![spec.node.as_str()]
        } else {
            v.nodes.keys().copied().collect()
        };
        for node in peer_nodes {
            for mut p in node_as_peers(v, node, v4, v6, name, spec) {
                set_config_fields(&mut p, spec);
                em.emit(PeerKind::NodeSpecific, p);
            }
        }
    }

    for (kind, raw) in em.out {
        if let Some(p) = render(v, kind, &raw) {
            peers.push(p);
        }
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    peers
}

/// The v1 peerings a BGPPeer asks for in the forward direction.
fn forward(v: &mut View<'_>, name: &str, spec: &BgpPeerSpec) -> Vec<RawPeer> {
    if !spec.peer_selector.is_empty() {
        let nodes = v.nodes_matching(&spec.peer_selector, (name, "peerSelector"));
        let mut out = Vec::new();
        for node in nodes {
            for mut p in node_as_peers(v, node, true, true, name, spec) {
                set_config_fields(&mut p, spec);
                out.push(p);
            }
        }
        return out;
    }
    if spec.peer_ip.is_empty() {
        v.problems.push(CalicoError::InvalidPeer {
            peer: name.to_string(),
            field: "peerIP",
            reason: "neither peerIP nor peerSelector is set".to_string(),
        });
        return Vec::new();
    }
    let (ip, port) = match parse_peer_ip(&spec.peer_ip) {
        Ok((ip, port)) => (ip, port.unwrap_or(0)),
        Err(reason) => {
            v.problems.push(CalicoError::InvalidPeer {
                peer: name.to_string(),
                field: "peerIP",
                reason,
            });
            return Vec::new();
        }
    };
    // Without asNumber confd would render `as 0`, which BIRD refuses. A peerIP that is a
    // Calico node's address (the usual reason to leave it out: the reverse peering then
    // takes the global AS) gets that node's AS; anything else is reported.
    let node_as = v
        .nodes
        .values()
        .find(|n| n.has_ip(ip))
        .map(|n| n.as_num.unwrap_or(v.global_as));
    let Some(as_num) = spec.as_number.map(|a| a.0).filter(|a| *a != 0).or(node_as) else {
        v.problems.push(CalicoError::InvalidPeer {
            peer: name.to_string(),
            field: "asNumber",
            reason: format!("peerIP {} needs the peer's AS number", spec.peer_ip),
        });
        return Vec::new();
    };
    // No port given: when the peer is a Calico node, use that node's listen port.
    let mut port = port;
    if port == 0
        && let Some(node) = nodes_with_ip_port_as(v, ip, Some(as_num), 0).first()
        && let Some(n) = v.nodes.get(node)
    {
        port = n.listen_port.unwrap_or(v.global_listen_port);
    }
    let calico_node = v.nodes.values().any(|n| n.has_ip(ip));
    let reachable_by = if spec.reachable_by.is_empty() {
        None
    } else {
        match spec.reachable_by.parse::<IpAddr>() {
            Ok(gw) if gw.is_ipv4() == ip.is_ipv4() => Some(gw),
            Ok(_) => {
                v.problems.push(CalicoError::InvalidPeer {
                    peer: name.to_string(),
                    field: "reachableBy",
                    reason: "reachableBy and peerIP must be of the same address family".to_string(),
                });
                return Vec::new();
            }
            Err(_) => {
                v.problems.push(CalicoError::InvalidPeer {
                    peer: name.to_string(),
                    field: "reachableBy",
                    reason: format!("{:?} is not an IP address", spec.reachable_by),
                });
                return Vec::new();
            }
        }
    };
    let (keep_next_hop, next_hop_mode) = next_hop(spec);
    let mut p = RawPeer {
        ip,
        port,
        as_num,
        local_as: spec.local_as_number.map_or(0, |a| a.0),
        use_node_ip: true,
        keep_next_hop,
        next_hop_mode,
        calico_node,
        ttl_security: spec.ttl_security.unwrap_or(0),
        filters: spec.filters.clone(),
        num_allow_local_as: spec.num_allowed_local_as_numbers.unwrap_or(0),
        reachable_by,
        rr_cluster_id: String::new(),
        password: None,
        restart_time: None,
        keepalive_time: None,
        origin: name.to_string(),
    };
    set_config_fields(&mut p, spec);
    vec![p]
}

/// `nodeAsBGPPeers`: a Calico node as a peer, one per requested family it has an address
/// of. It carries the node's AS (or the global AS), its listen port and cluster ID, but not
/// the BGPPeer's `localASNumber` or `numAllowedLocalASNumbers` (confd does not copy them).
fn node_as_peers(
    v: &View<'_>,
    node: &str,
    v4: bool,
    v6: bool,
    origin: &str,
    spec: &BgpPeerSpec,
) -> Vec<RawPeer> {
    let Some(n) = v.nodes.get(node) else {
        return Vec::new();
    };
    let (keep_next_hop, next_hop_mode) = next_hop(spec);
    let mut out = Vec::new();
    for (want, is_v6) in [(v4, false), (v6, true)] {
        let Some(ip) = n.ip(is_v6).filter(|_| want) else {
            continue;
        };
        out.push(RawPeer {
            ip,
            port: n.listen_port.unwrap_or(v.global_listen_port),
            as_num: n.as_num.unwrap_or(v.global_as),
            local_as: 0,
            use_node_ip: true,
            keep_next_hop,
            next_hop_mode,
            calico_node: false,
            ttl_security: spec.ttl_security.unwrap_or(0),
            filters: spec.filters.clone(),
            num_allow_local_as: 0,
            reachable_by: spec.reachable_by.parse().ok(),
            rr_cluster_id: n.rr_cluster_id.to_string(),
            password: None,
            restart_time: None,
            keepalive_time: None,
            origin: origin.to_string(),
        });
    }
    out
}

/// `nodesWithIPPortAndAS`: the Calico nodes a `peerIP` (and AS, and port) denote. An AS of
/// 0/none means the global AS. With a port, a node is skipped when its own listen port
/// differs, *or* when a global listen port is set and differs (confd's `else if` reaches the
/// global check even when the node's port matched).
fn nodes_with_ip_port_as<'a>(
    v: &View<'a>,
    ip: IpAddr,
    as_num: Option<u32>,
    port: u16,
) -> Vec<&'a str> {
    let want_as = as_num.filter(|a| *a != 0).unwrap_or(v.global_as);
    v.nodes
        .values()
        .filter(|n| n.has_ip(ip))
        .filter(|n| n.as_num.unwrap_or(v.global_as) == want_as)
        .filter(|n| {
            port == 0
                || !(n.listen_port.is_some_and(|np| np != port)
                    || (v.global_listen_port != 0 && v.global_listen_port != port))
        })
        .map(|n| n.name)
        .collect()
}

/// `Mesh_<ip>` with '.' (IPv4) or ':' (IPv6) replaced by '_', and `_port_<n>` for a set port.
fn peer_name(kind: PeerKind, ip: IpAddr, port: u16) -> String {
    let ip_part = ip.to_string().replace(['.', ':'], "_");
    if port > 0 && kind != PeerKind::Mesh {
        format!("{}_{ip_part}_port_{port}", kind.prefix())
    } else {
        format!("{}_{ip_part}", kind.prefix())
    }
}

/// `processMeshPeers`: every other node with an address of the family, unless this node or
/// that node is a route reflector, or the mesh is off. The peer's AS is its own, else *this*
/// node's (confd falls back to `config.ASNumber`); its port is its listen port, else the
/// global one. The side whose address string compares greater waits (`passive`).
fn mesh(v: &View<'_>) -> Vec<PeerIntent> {
    if !v.my_cluster_id().is_empty() {
        return Vec::new();
    }
    if !v
        .global
        .and_then(|g| g.node_to_node_mesh_enabled)
        .unwrap_or(true)
    {
        return Vec::new();
    }
    let password = v
        .global
        .and_then(|g| g.node_mesh_password.as_ref())
        .and_then(|pw| pw.secret_key_ref.as_ref())
        .map(|r| PasswordRef {
            secret_name: r.name.clone(),
            key: r.key.clone(),
        });
    let restart = v
        .global
        .and_then(|g| g.node_mesh_max_restart_time.as_ref())
        .and_then(whole_seconds);
    let my_as = v.my_as();
    let mut out = Vec::new();
    for is_v6 in [false, true] {
        let Some(mine) = v.my_ip(is_v6) else {
            continue;
        };
        let mine_str = mine.to_string();
        for n in v.nodes.values() {
            let Some(ip) = n.ip(is_v6) else { continue };
            if ip == mine || !n.rr_cluster_id.is_empty() {
                continue;
            }
            let port = n.listen_port.unwrap_or(v.global_listen_port);
            out.push(PeerIntent {
                name: peer_name(PeerKind::Mesh, ip, port),
                kind: PeerKind::Mesh,
                address: ip,
                port: if port == 0 { DEFAULT_PORT } else { port },
                remote_as: n.as_num.unwrap_or(my_as),
                local_as: my_as,
                source_address: Some(mine),
                passive: ip.to_string() > mine_str,
                rr_client: false,
                password: password.clone(),
                keep_original_next_hop: false,
                next_hop_self: false,
                max_restart_time: restart,
                keepalive_time: None,
                ttl_security: None,
                allow_local_as: 0,
                filters: Vec::new(),
                reachable_by: None,
                origin: None,
            });
        }
    }
    out
}

/// `buildPeerFromData`: one v1 peering rendered for this node, or `None` when it is this
/// node itself or this node has no address of the peer's family (the template then renders
/// no peers of that family: "IPv4 disabled on this node").
fn render(v: &View<'_>, kind: PeerKind, p: &RawPeer) -> Option<PeerIntent> {
    let mine = v.my_ip(p.ip.is_ipv6())?;
    if p.ip == mine {
        return None;
    }
    let my_as = v.my_as();
    let local_as = if p.local_as != 0 { p.local_as } else { my_as };
    let ibgp = p.as_num == local_as;
    let cluster = v.my_cluster_id();
    let rr_client =
        ibgp && !cluster.is_empty() && (p.rr_cluster_id.is_empty() || p.rr_cluster_id != cluster);
    // Only global peerings to Calico nodes get the passive rule (local-workload peers, not
    // supported here, are always passive); node-specific ones never do.
    let passive = kind == PeerKind::Global && p.calico_node && p.ip.to_string() > mine.to_string();
    let (mut keep, mut next_hop_self) = (false, false);
    match p.next_hop_mode {
        Some(NextHopMode::SelfHop) => next_hop_self = true,
        Some(NextHopMode::Keep) => keep = true,
        Some(NextHopMode::Auto) | None => {}
    }
    // Legacy keepOriginalNextHop only applies to eBGP peers.
    if p.keep_next_hop && !ibgp {
        keep = true;
    }
    Some(PeerIntent {
        name: peer_name(kind, p.ip, p.port),
        kind,
        address: p.ip,
        port: if p.port == 0 { DEFAULT_PORT } else { p.port },
        remote_as: p.as_num,
        local_as,
        source_address: p.use_node_ip.then_some(mine),
        passive,
        rr_client,
        password: p.password.clone(),
        keep_original_next_hop: keep,
        next_hop_self,
        max_restart_time: p.restart_time,
        keepalive_time: p.keepalive_time,
        ttl_security: (p.ttl_security > 0).then_some(p.ttl_security),
        allow_local_as: usize::try_from(p.num_allow_local_as).unwrap_or(0),
        filters: p.filters.clone(),
        reachable_by: p.reachable_by,
        origin: Some(p.origin.clone()),
    })
}
