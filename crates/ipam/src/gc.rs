//! Leak collection: releases addresses whose owner is gone, and the block affinities of
//! deleted nodes — and never an address whose owner is alive.
//!
//! An allocation is released only when all of these hold (what Calico users were bitten by
//! is the absence of one of them):
//! 1. its owner was found missing in two scans in a row (a single scan can race a pod being
//!    created);
//! 2. the first of those scans is at least the grace period old (default 15 minutes);
//! 3. a final re-check, reading the owner afresh just before the release, still finds it
//!    gone;
//! 4. the release is guarded by the allocation's handle and sequence number, so an address
//!    released and handed out again since the scan is never touched;
//! 5. every address of its handle is confirmed leaked (a handle is freed whole or not at all).
//!
//! Ownership: a tunnel address belongs to its node (alive while the Node exists); a pod
//! address belongs to the WorkloadEndpoint of its namespace and pod that lists it;
//! an allocation without pod attributes is assumed alive. Node-based rules apply only when
//! the datastore holds Node resources at all, so a cluster that does not register nodes is
//! never mistaken for one whose nodes were all deleted.
//!
//! Only one ipamd collects at a time: a lease in the datastore, renewed by compare-and-swap.
//!
//! [`LeakTracker`] holds the rules and no I/O; [`Collector`] reads the datastore and acts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use calico_api::names::AffinityType;
use calico_api::resource::{Node, WorkloadEndpoint};
use calico_datastore::{DatastoreError, Key, KeyPrefix, ResourceClient};
use serde::{Deserialize, Serialize};

use crate::allocator::{Clock, Ipam};
use crate::block::{
    ATTR_NAMESPACE, ATTR_NODE, ATTR_POD, ATTR_TYPE, AllocationAttribute, AllocationBlock,
};
use crate::{ReleaseRequest, Result};

/// One allocation, precisely: the same address re-allocated later is a different one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId {
    pub ip: IpAddr,
    pub handle: String,
    pub sequence_number: u64,
}

#[derive(Debug, Clone, Copy)]
struct Suspicion {
    first_seen: SystemTime,
    observations: u32,
}

/// The rule for confirming that something is gone (an allocation's owner, a node). Pure:
/// time is passed in.
#[derive(Debug)]
pub struct LeakTracker<K = AllocationId> {
    grace: Duration,
    suspects: HashMap<K, Suspicion>,
}

impl<K: Clone + Eq + std::hash::Hash + Ord> LeakTracker<K> {
    pub fn new(grace: Duration) -> LeakTracker<K> {
        LeakTracker {
            grace,
            suspects: HashMap::new(),
        }
    }

    /// Records one scan's suspects; returns those now confirmed (seen at least twice, the
    /// first time at least the grace period ago). Anything not suspected in this scan is
    /// forgotten: its owner came back, or the allocation is gone.
    pub fn observe(&mut self, now: SystemTime, suspects: impl IntoIterator<Item = K>) -> Vec<K> {
        let current: HashSet<K> = suspects.into_iter().collect();
        self.suspects.retain(|id, _| current.contains(id));
        let mut confirmed = Vec::new();
        for id in current {
            let s = self.suspects.entry(id.clone()).or_insert(Suspicion {
                first_seen: now,
                observations: 0,
            });
            s.observations += 1;
            let age = now.duration_since(s.first_seen).unwrap_or_default();
            if s.observations >= 2 && age >= self.grace {
                confirmed.push(id);
            }
        }
        confirmed.sort();
        confirmed
    }

    /// Forgets a suspect (released, or found alive on the final re-check).
    pub fn forget(&mut self, id: &K) {
        self.suspects.remove(id);
    }

    pub fn suspected(&self) -> usize {
        self.suspects.len()
    }
}

/// Tunnel address types Calico records in the `type` attribute.
const TUNNEL_TYPES: [&str; 5] = [
    "ipipTunnelAddress",
    "vxlanTunnelAddress",
    "vxlanV6TunnelAddress",
    "wireguardTunnelAddress",
    "wireguardV6TunnelAddress",
];

/// Who is alive, as read from the datastore in one scan.
#[derive(Debug, Default)]
pub struct Owners {
    /// Whether the datastore registers nodes at all.
    pub nodes_registered: bool,
    pub nodes: BTreeSet<String>,
    /// (namespace, pod) → addresses its endpoints list.
    pub pods: BTreeMap<(String, String), BTreeSet<IpAddr>>,
}

impl Owners {
    /// `Some(false)` when the owner is known to be gone; `Some(true)` alive; `None` unknown.
    pub fn alive(&self, ip: IpAddr, attr: &AllocationAttribute) -> Option<bool> {
        let node = attr.owner(ATTR_NODE);
        if attr
            .owner(ATTR_TYPE)
            .is_some_and(|t| TUNNEL_TYPES.contains(&t))
        {
            return match node {
                Some(n) if self.nodes_registered => Some(self.nodes.contains(n)),
                _ => None,
            };
        }
        match (attr.owner(ATTR_NAMESPACE), attr.owner(ATTR_POD)) {
            (Some(ns), Some(pod)) => {
                let listed = self
                    .pods
                    .get(&(ns.to_string(), pod.to_string()))
                    .is_some_and(|ips| ips.contains(&ip));
                Some(listed)
            }
            // Without pod attributes the owner cannot be judged: assume alive.
            _ => match node {
                Some(n) if self.nodes_registered && !self.nodes.contains(n) => Some(false),
                _ => None,
            },
        }
    }
}

/// Collector settings.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// How long an owner must stay gone before its addresses are released (Calico's
    /// leakGracePeriod, default 15 minutes).
    pub grace: Duration,
    /// Time between scans (default half the grace period).
    pub interval: Duration,
    /// This ipamd's identity in the leader lease.
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
}

impl GcConfig {
    pub fn new(identity: &str, grace: Duration) -> GcConfig {
        GcConfig {
            grace,
            interval: (grace / 2).max(Duration::from_secs(1)),
            identity: identity.to_string(),
            lease: Duration::from_secs(30),
        }
    }
}

/// What one scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub leader: bool,
    pub allocations: usize,
    pub suspected: usize,
    pub released: Vec<IpAddr>,
    /// Confirmed leaks kept because the final re-check found the owner alive.
    pub kept_on_recheck: usize,
    pub affinities_released: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    holder: String,
    #[serde(rename = "renewedAt")]
    renewed_at: u64,
    #[serde(rename = "durationSeconds")]
    duration_seconds: u64,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The leak collector of one ipamd.
#[derive(Debug)]
pub struct Collector {
    ipam: Ipam,
    resources: ResourceClient,
    clock: Arc<dyn Clock>,
    cfg: GcConfig,
    tracker: LeakTracker,
    gone_nodes: LeakTracker<String>,
}

impl Collector {
    pub fn new(ipam: Ipam, clock: Arc<dyn Clock>, cfg: GcConfig) -> Collector {
        Collector {
            resources: ResourceClient::new(ipam.datastore().clone()),
            ipam,
            clock,
            tracker: LeakTracker::new(cfg.grace),
            gone_nodes: LeakTracker::new(cfg.grace),
            cfg,
        }
    }

    /// Takes or renews the leader lease; false if another collector holds it.
    pub async fn acquire_lease(&self) -> Result<bool> {
        let ds = self.ipam.datastore();
        let now = unix_secs(self.clock.now());
        let mine = Lease {
            holder: self.cfg.identity.clone(),
            renewed_at: now,
            duration_seconds: self.cfg.lease.as_secs(),
        };
        let body = serde_json::to_vec(&mine).unwrap_or_default();
        match ds.get(&Key::IpamGcLease).await {
            Err(DatastoreError::NotFound { .. }) => {
                match ds.create(&Key::IpamGcLease, body).await {
                    Ok(_) => Ok(true),
                    Err(DatastoreError::AlreadyExists { .. }) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
            Ok(kv) => {
                let current: Option<Lease> = serde_json::from_slice(&kv.value).ok();
                let free = match &current {
                    None => true,
                    Some(l) => {
                        l.holder == self.cfg.identity || l.renewed_at + l.duration_seconds < now
                    }
                };
                if !free {
                    return Ok(false);
                }
                match ds.update(&Key::IpamGcLease, body, kv.revision).await {
                    Ok(_) => Ok(true),
                    Err(DatastoreError::Conflict { .. } | DatastoreError::NotFound { .. }) => {
                        Ok(false)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    async fn owners(&self) -> Result<Owners> {
        let nodes = self.resources.list::<Node>(None).await?;
        let weps = self.resources.list::<WorkloadEndpoint>(None).await?;
        let mut owners = Owners {
            nodes_registered: !nodes.items.is_empty(),
            nodes: nodes
                .items
                .iter()
                .map(|n| n.metadata.name.clone())
                .collect(),
            pods: BTreeMap::new(),
        };
        for w in &weps.items {
            let pod = if w.spec.pod.is_empty() {
                &w.spec.workload
            } else {
                &w.spec.pod
            };
            let entry = owners
                .pods
                .entry((w.metadata.namespace_str().to_string(), pod.clone()))
                .or_default();
            for n in &w.spec.ip_networks {
                if let Ok(net) = calico_api::validation::parse_cidr_or_ip(n) {
                    entry.insert(net.addr());
                }
            }
        }
        Ok(owners)
    }

    /// One scan: find suspects, confirm leaks, re-check, release; release deleted nodes'
    /// affinities. Does nothing unless this collector holds the lease.
    pub async fn scan(&mut self) -> Result<ScanReport> {
        let mut report = ScanReport::default();
        if !self.acquire_lease().await? {
            return Ok(report);
        }
        report.leader = true;
        let now = self.clock.now();
        let owners = self.owners().await?;
        let ds = self.ipam.datastore();
        // Every allocation, with what is needed to release it precisely.
        let mut by_handle: BTreeMap<String, Vec<AllocationId>> = BTreeMap::new();
        let mut attrs: HashMap<AllocationId, AllocationAttribute> = HashMap::new();
        let mut suspects = Vec::new();
        for kv in self.ipam.stored_blocks().await? {
            let Ok(block) = serde_json::from_slice::<AllocationBlock>(&kv.value) else {
                continue;
            };
            for (ip, attr) in block.allocated() {
                report.allocations += 1;
                let Some(handle) = attr.handle() else {
                    continue;
                };
                let Some(ordinal) = block.ordinal(ip) else {
                    continue;
                };
                let id = AllocationId {
                    ip,
                    handle: handle.to_string(),
                    sequence_number: block.sequence_number_for(ordinal),
                };
                by_handle
                    .entry(id.handle.clone())
                    .or_default()
                    .push(id.clone());
                if owners.alive(ip, attr) == Some(false) {
                    suspects.push(id.clone());
                }
                attrs.insert(id, attr.clone());
            }
        }
        report.suspected = suspects.len();
        let confirmed: BTreeSet<AllocationId> =
            self.tracker.observe(now, suspects).into_iter().collect();
        if !confirmed.is_empty() {
            // Final re-check, against owners read afresh.
            let fresh = self.owners().await?;
            for (handle, ids) in &by_handle {
                if !ids.iter().all(|id| confirmed.contains(id)) {
                    continue;
                }
                let still_gone = ids.iter().all(|id| {
                    attrs
                        .get(id)
                        .is_some_and(|a| fresh.alive(id.ip, a) == Some(false))
                });
                if !still_gone {
                    report.kept_on_recheck += ids.len();
                    for id in ids {
                        self.tracker.forget(id);
                    }
                    continue;
                }
                let requests: Vec<ReleaseRequest> = ids
                    .iter()
                    .map(|id| ReleaseRequest {
                        ip: id.ip,
                        handle: Some(handle.clone()),
                        sequence_number: Some(id.sequence_number),
                    })
                    .collect();
                match self.ipam.release_ips(&requests).await {
                    Ok(out) => {
                        tracing::info!(handle = %handle, released = ?out.released, "released leaked addresses");
                        report.released.extend(out.released);
                    }
                    Err(e) => {
                        tracing::warn!(handle = %handle, error = %e, "leaked addresses not released (they changed since the scan)")
                    }
                }
                for id in ids {
                    self.tracker.forget(id);
                }
            }
        }
        // Affinities of deleted nodes, confirmed like leaks (a node that has not registered
        // yet must not lose its blocks).
        if owners.nodes_registered {
            let affs = ds
                .list(&KeyPrefix::Affinities {
                    affinity_type: AffinityType::Host,
                    owner: None,
                    ip_version: None,
                })
                .await?;
            let gone: BTreeSet<String> = affs
                .items
                .iter()
                .filter_map(|kv| match &kv.key {
                    Key::Affinity { owner, .. } if !owners.nodes.contains(owner) => {
                        Some(owner.clone())
                    }
                    _ => None,
                })
                .collect();
            for node in self.gone_nodes.observe(now, gone) {
                // Re-check: the node may have registered since the scan began.
                if self.resources.get::<Node>(None, &node).await.is_ok() {
                    continue;
                }
                self.gone_nodes.forget(&node);
                match self.ipam.release_host_affinities(&node, false).await {
                    Ok(n) => {
                        tracing::info!(%node, affinities = n, "released the block affinities of a deleted node");
                        report.affinities_released += n;
                    }
                    Err(e) => {
                        tracing::warn!(%node, error = %e, "could not release a deleted node's affinities")
                    }
                }
            }
        }
        Ok(report)
    }

    /// Scans every interval until cancelled.
    pub async fn run(mut self, stop: tokio_util::sync::CancellationToken) {
        loop {
            match self.scan().await {
                Ok(r) if r.leader => tracing::debug!(?r, "leak scan done"),
                Ok(_) => tracing::debug!("another ipamd holds the leak collector lease"),
                Err(e) => tracing::warn!(error = %e, "leak scan failed; will retry"),
            }
            let wait = self
                .cfg
                .interval
                .min(self.cfg.lease / 3)
                .max(Duration::from_millis(100));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> AllocationId {
        AllocationId {
            ip: IpAddr::from([10, 0, 0, n]),
            handle: format!("h{n}"),
            sequence_number: 1,
        }
    }

    #[test]
    fn a_leak_needs_two_scans_and_the_grace_period() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut t = LeakTracker::new(Duration::from_secs(900));
        assert!(
            t.observe(t0, [id(1)]).is_empty(),
            "one scan is never enough"
        );
        assert!(
            t.observe(t0 + Duration::from_secs(60), [id(1)]).is_empty(),
            "two scans within the grace period"
        );
        assert_eq!(
            t.observe(t0 + Duration::from_secs(900), [id(1)]),
            vec![id(1)]
        );
    }

    #[test]
    fn an_owner_that_comes_back_resets_the_clock() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut t = LeakTracker::new(Duration::from_secs(10));
        t.observe(t0, [id(1)]);
        // A scan where the owner is back: forgotten.
        t.observe(t0 + Duration::from_secs(5), []);
        assert!(t.observe(t0 + Duration::from_secs(11), [id(1)]).is_empty());
        assert!(t.observe(t0 + Duration::from_secs(20), [id(1)]).is_empty());
        assert_eq!(
            t.observe(t0 + Duration::from_secs(21), [id(1)]),
            vec![id(1)]
        );
    }

    #[test]
    fn owners_are_judged_conservatively() {
        let attr = |pairs: &[(&str, &str)]| AllocationAttribute {
            handle_id: Some("h".into()),
            active_owner_attrs: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        let ip = IpAddr::from([10, 0, 0, 1]);
        let mut o = Owners::default();
        // No nodes registered: node rules never fire.
        assert_eq!(
            o.alive(ip, &attr(&[("node", "n1"), ("type", "vxlanTunnelAddress")])),
            None
        );
        assert_eq!(o.alive(ip, &attr(&[("node", "n1")])), None);
        o.nodes_registered = true;
        o.nodes.insert("n1".into());
        assert_eq!(
            o.alive(ip, &attr(&[("node", "n1"), ("type", "vxlanTunnelAddress")])),
            Some(true)
        );
        assert_eq!(
            o.alive(ip, &attr(&[("node", "n2"), ("type", "ipipTunnelAddress")])),
            Some(false)
        );
        // Missing pod metadata: assumed alive unless its node is gone.
        assert_eq!(o.alive(ip, &attr(&[("node", "n1")])), None);
        assert_eq!(o.alive(ip, &attr(&[])), None);
        // A pod is alive only if an endpoint of it lists the address.
        assert_eq!(
            o.alive(ip, &attr(&[("namespace", "x"), ("pod", "a")])),
            Some(false)
        );
        o.pods.insert(("x".into(), "a".into()), [ip].into());
        assert_eq!(
            o.alive(
                ip,
                &attr(&[("namespace", "x"), ("pod", "a"), ("node", "elsewhere")])
            ),
            Some(true)
        );
    }
}
