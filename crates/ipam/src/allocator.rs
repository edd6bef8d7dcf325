//! The allocator: Calico's AutoAssign, AssignIP, ReleaseIPs and ReleaseByHandle over any
//! [`Datastore`], with the same data and the same order of decisions, so that it can share a
//! cluster with Calico's own IPAM.
//!
//! Correctness comes from the data alone: every change to a block, an affinity or a handle is
//! a compare-and-swap on that key's revision, retried on conflict (up to 100 times, as
//! Calico). No lock is taken anywhere, so any number of allocators on any number of nodes
//! may run at once. A block and the handles whose counts it changes are written in one
//! transaction (see `blocks`), so an address and its handle record appear and go together.
//!
//! A new block is claimed by writing its confirmed affinity and the block in one transaction.
//! Calico claims in two phases (a `pending` affinity, the block, then `confirmed`); claims it
//! left half-made are completed (or yielded) the same way, so both can share a cluster.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use calico_api::names::{AffinityType, ip_version};
use calico_datastore::{
    Datastore, DatastoreError, Expect, Key, KeyPrefix, KvPair, ResourceClient, TxnOutcome, TxnWrite,
};
use ipnet::IpNet;

use crate::block::{AllocationBlock, BlockReleaseError, ReleaseRequest, affinity_string};
use crate::blocks::{
    AssignOp, BlockOp, BlockWrite, Blocks, CachedBlock, Commit, HandleState, HandleWrite, corrupt,
    decode_block, encode,
};
use crate::inputs::{self, ClusterView, Inputs};
use crate::model::{AffinityState, BlockAffinity, Handle, IpamConfig};
use crate::pools::{IpUse, Pool, Reservations, select_pools};
use crate::{IpamError, Result};

/// Attempts per compare-and-swap loop, as Calico's `datastoreRetries`.
pub const MAX_ATTEMPTS: usize = 100;

/// An empty block owned by another host may be taken over once its claim is this old.
pub const EMPTY_BLOCK_MIN_RECLAIM_AGE: Duration = Duration::from_secs(60);

/// The largest number of addresses of one family a single request may ask for.
pub const MAX_ADDRESSES_PER_REQUEST: usize = 256;

/// Time, injected so tests can move it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Counters a service exports as metrics.
#[derive(Debug, Default)]
pub struct IpamStats {
    /// Compare-and-swap writes that lost to a concurrent writer (and were retried).
    pub cas_conflicts: AtomicU64,
    pub blocks_claimed: AtomicU64,
    /// Block transactions committed; fewer than requests when concurrent ones combine.
    pub block_writes: AtomicU64,
    pub addresses_assigned: AtomicU64,
    pub addresses_released: AtomicU64,
}

/// One AutoAssign request.
#[derive(Debug, Clone)]
pub struct AutoAssignArgs {
    pub num_v4: usize,
    pub num_v6: usize,
    /// `<network>.<containerID>` for pods; none only for callers that track addresses
    /// themselves.
    pub handle: Option<String>,
    /// Owner attributes: node, namespace, pod, timestamp...
    pub attrs: BTreeMap<String, String>,
    /// Pools by name or CIDR; empty means every pool that selects the node.
    pub ipv4_pools: Vec<String>,
    pub ipv6_pools: Vec<String>,
    /// The node (or virtual owner, for LoadBalancer addresses) the addresses are for.
    pub host: String,
    /// 0 = the configured limit.
    pub max_blocks_per_host: u32,
    pub use_: IpUse,
    /// Labels of the pod's namespace, for pools with a namespaceSelector.
    pub namespace_labels: Option<BTreeMap<String, String>>,
}

impl AutoAssignArgs {
    pub fn new(host: &str, handle: &str, num_v4: usize, num_v6: usize) -> AutoAssignArgs {
        AutoAssignArgs {
            num_v4,
            num_v6,
            handle: Some(handle.to_string()),
            attrs: BTreeMap::new(),
            ipv4_pools: Vec::new(),
            ipv6_pools: Vec::new(),
            host: host.to_string(),
            max_blocks_per_host: 0,
            use_: IpUse::Workload,
            namespace_labels: None,
        }
    }
}

/// What one family of an AutoAssign got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Each address with its block's prefix length (`10.0.3.7/26`), as Calico returns them.
    pub ips: Vec<IpNet>,
    pub requested: usize,
    /// Why fewer were assigned than requested.
    pub messages: Vec<String>,
}

impl Assignment {
    pub fn is_complete(&self) -> bool {
        self.ips.len() >= self.requested
    }

    /// Calico's wording for a short result.
    pub fn shortfall(&self, version: u8) -> Option<String> {
        (!self.is_complete()).then(|| {
            let mut s = format!(
                "assigned {} out of {} requested IPv{version} addresses",
                self.ips.len(),
                self.requested
            );
            for m in &self.messages {
                s.push_str("; ");
                s.push_str(m);
            }
            s
        })
    }
}

/// What a ReleaseIPs did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseOutcome {
    pub released: Vec<IpAddr>,
    /// Addresses that were not allocated (nothing to do).
    pub unallocated: Vec<IpAddr>,
}

/// Per-pool and per-block capacity and use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub pools: Vec<PoolUsage>,
    pub blocks: Vec<BlockUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNet,
    pub capacity: u128,
    pub in_use: u128,
    pub reserved: u128,
    pub available: u128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockUsage {
    pub cidr: IpNet,
    pub pool: String,
    pub affinity: Option<String>,
    pub capacity: u128,
    pub in_use: u128,
    pub reserved: u128,
    pub available: u128,
}

/// Calico IPAM over a datastore.
#[derive(Debug, Clone)]
pub struct Ipam {
    ds: Arc<dyn Datastore>,
    resources: ResourceClient,
    clock: Arc<dyn Clock>,
    stats: Arc<IpamStats>,
    blocks: Arc<Blocks>,
    /// Watched inputs (ipamd); without it every request reads them.
    view: Option<Arc<ClusterView>>,
    /// Each (owner, IP version)'s affine blocks as last listed, in the order Calico tries
    /// them: where a request looks first, before listing again.
    affine: Arc<Mutex<AffineMemory>>,
    /// Per (owner, IP version): the turn to read the datastore and claim blocks.
    slow_turns: Arc<Mutex<SlowTurns>>,
}

type SlowTurns = HashMap<(AffinityType, String, u8), Arc<tokio::sync::Mutex<()>>>;

type AffineMemory = HashMap<(AffinityType, String, u8), Vec<IpNet>>;

/// Owners whose affine blocks are remembered at most (ipamd serves one node; the memory is
/// dropped and refilled past this).
const MAX_REMEMBERED_OWNERS: usize = 1024;

/// Handles whose counts one release transaction changes at most (each is a key in it).
const MAX_HANDLES_PER_TXN: usize = 100;

fn family_name(v: u8) -> &'static str {
    if v == 4 { "IPv4" } else { "IPv6" }
}

/// Checks what a caller sends before anything is read or written.
pub fn check_handle(handle: &str) -> Result<()> {
    let bad = |reason: &str| IpamError::InvalidRequest {
        field: "handle_id",
        reason: format!("{handle:?} {reason}"),
    };
    if handle.is_empty() {
        return Err(IpamError::InvalidRequest {
            field: "handle_id",
            reason: "is empty; use <network>.<containerID>, e.g. k8s-pod-network.abc123".into(),
        });
    }
    if handle.len() > 512 {
        return Err(bad("is longer than 512 characters"));
    }
    if handle.contains('/') || handle.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("may not contain '/', spaces or control characters"));
    }
    Ok(())
}

impl Ipam {
    pub fn new(ds: Arc<dyn Datastore>) -> Ipam {
        Ipam::with_clock(ds, Arc::new(SystemClock))
    }

    pub fn with_clock(ds: Arc<dyn Datastore>, clock: Arc<dyn Clock>) -> Ipam {
        let stats = Arc::new(IpamStats::default());
        Ipam {
            resources: ResourceClient::new(ds.clone()),
            blocks: Arc::new(Blocks::new(ds.clone(), stats.clone())),
            ds,
            clock,
            stats,
            view: None,
            affine: Arc::default(),
            slow_turns: Arc::default(),
        }
    }

    /// Takes configuration, pools, reservations and node labels from a watched view instead
    /// of reading them for every request (once the view is in sync).
    pub fn with_view(mut self, view: Arc<ClusterView>) -> Ipam {
        self.view = Some(view);
        self
    }

    pub fn stats(&self) -> &Arc<IpamStats> {
        &self.stats
    }

    pub fn datastore(&self) -> &Arc<dyn Datastore> {
        &self.ds
    }

    fn now_rfc3339(&self) -> String {
        chrono::DateTime::<chrono::Utc>::from(self.clock.now())
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    /// A new block's first sequence number: the time in nanoseconds, as Calico, so that a
    /// recreated block never reuses the numbers of the one before.
    fn initial_sequence_number(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(1)
    }

    fn conflict(&self) {
        self.stats.cas_conflicts.fetch_add(1, Ordering::Relaxed);
    }

    // ---- configuration and inputs ----

    /// The IPAM configuration: `/calico/ipam/v2/config` (what Calico's IPAM reads), else the
    /// v3 IPAMConfiguration `default`, else Calico's defaults. Not checked against the
    /// rules of [`Ipam::set_config`]: Calico checks them only when the configuration is set,
    /// and a stored value it would refuse must not stop every allocation.
    pub async fn config(&self) -> Result<IpamConfig> {
        inputs::read_config(&self.ds, &self.resources).await
    }

    /// Stores the IPAM configuration where Calico's IPAM reads it.
    pub async fn set_config(&self, cfg: &IpamConfig) -> Result<()> {
        cfg.check()
            .map_err(|reason| IpamError::InvalidConfig { reason })?;
        self.ds.apply(&Key::IpamConfig, encode(cfg)).await?;
        Ok(())
    }

    pub(crate) async fn pools(&self) -> Result<Vec<Pool>> {
        match self.view.as_ref().and_then(|v| v.snapshot()) {
            Some(i) => Ok(i.pools.clone()),
            None => inputs::read_pools(&self.resources).await,
        }
    }

    async fn reservations(&self) -> Result<Arc<Reservations>> {
        match self.view.as_ref().and_then(|v| v.snapshot()) {
            Some(i) => Ok(i.reservations.clone()),
            None => Ok(Arc::new(inputs::read_reservations(&self.resources).await?)),
        }
    }

    /// What a request for `host` decides from: from the view when there is one in sync
    /// (reading only another node's labels), else read now.
    async fn inputs(&self, host: &str, use_: IpUse) -> Result<Arc<Inputs>> {
        let wants_labels = use_ != IpUse::LoadBalancer;
        if let Some(view) = &self.view
            && let Some(snapshot) = view.snapshot()
        {
            if !wants_labels && !snapshot.node_labels.is_empty() {
                let mut i = (*snapshot).clone();
                i.node_labels.clear();
                return Ok(Arc::new(i));
            }
            if !wants_labels || host == view.node() {
                return Ok(snapshot);
            }
            let mut i = (*snapshot).clone();
            i.node_labels = inputs::read_node_labels(&self.resources, host).await?;
            return Ok(Arc::new(i));
        }
        Ok(Arc::new(Inputs {
            config: self.config().await?,
            reservations: Arc::new(inputs::read_reservations(&self.resources).await?),
            pools: inputs::read_pools(&self.resources).await?,
            node_labels: if wants_labels {
                inputs::read_node_labels(&self.resources, host).await?
            } else {
                BTreeMap::new()
            },
        }))
    }

    /// A namespace's labels, for pools with a namespaceSelector: what the namespace's profile
    /// (`kns.<namespace>`, kept by the controllers) applies, without its `pcns.` prefix.
    /// A namespace without a profile has no labels.
    pub async fn namespace_labels(&self, namespace: &str) -> Result<BTreeMap<String, String>> {
        let name = format!("{}{namespace}", calico_api::names::NAMESPACE_PROFILE_PREFIX);
        match self
            .resources
            .get::<calico_api::resource::Profile>(None, &name)
            .await
        {
            Ok(p) => Ok(p
                .spec
                .labels_to_apply
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(calico_api::names::NAMESPACE_LABEL_PREFIX)
                        .map(|k| (k.to_string(), v.clone()))
                })
                .collect()),
            Err(DatastoreError::NotFound { .. }) => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn remembered_affine(&self, kind: AffinityType, host: &str, version: u8) -> Vec<IpNet> {
        self.affine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kind, host.to_string(), version))
            .cloned()
            .unwrap_or_default()
    }

    fn remember_affine(&self, kind: AffinityType, host: &str, version: u8, blocks: Vec<IpNet>) {
        let mut m = self.affine.lock().unwrap_or_else(|p| p.into_inner());
        let key = (kind, host.to_string(), version);
        if m.len() >= MAX_REMEMBERED_OWNERS && !m.contains_key(&key) {
            m.clear();
        }
        m.insert(key, blocks);
    }

    // ---- AutoAssign ----

    /// Assigns addresses for one owner, IPv4 then IPv6. A short result is not an error:
    /// check [`Assignment::is_complete`] (the caller decides whether a partial result is
    /// acceptable, as with Calico's `PartialFulfillmentError`).
    pub async fn auto_assign(&self, args: &AutoAssignArgs) -> Result<(Assignment, Assignment)> {
        if args.num_v4 == 0 && args.num_v6 == 0 {
            return Err(IpamError::InvalidRequest {
                field: "num_ipv4/num_ipv6",
                reason: "ask for at least one address".into(),
            });
        }
        for (field, n) in [("num_ipv4", args.num_v4), ("num_ipv6", args.num_v6)] {
            if n > MAX_ADDRESSES_PER_REQUEST {
                return Err(IpamError::InvalidRequest {
                    field,
                    reason: format!(
                        "{n} addresses in one request; the limit is {MAX_ADDRESSES_PER_REQUEST}"
                    ),
                });
            }
        }
        if let Some(h) = &args.handle {
            check_handle(h)?;
        }
        if args.host.is_empty() {
            return Err(IpamError::InvalidRequest {
                field: "hostname",
                reason: "is empty; name the node the addresses are for".into(),
            });
        }
        let inputs = self.inputs(&args.host, args.use_).await?;
        // Choose pools for both families before writing anything, so a request that cannot
        // be served fails without leaving a half-made allocation behind.
        let mut plan = Vec::with_capacity(2);
        for (version, num, requested) in [
            (4u8, args.num_v4, &args.ipv4_pools),
            (6u8, args.num_v6, &args.ipv6_pools),
        ] {
            if num == 0 {
                plan.push((version, num, Vec::new()));
                continue;
            }
            let chosen = select_pools(
                &inputs.pools,
                version,
                requested,
                &args.host,
                &inputs.node_labels,
                args.namespace_labels.as_ref(),
                args.use_,
            )?;
            plan.push((version, num, chosen));
        }
        let mut out: Vec<Assignment> = Vec::with_capacity(2);
        for (version, num, chosen) in plan {
            if num == 0 {
                out.push(Assignment::default());
                continue;
            }
            match self
                .assign_family(args, version, num, &chosen, &inputs)
                .await
            {
                Ok(a) => out.push(a),
                Err(e) => {
                    // Give back what this call already took, so the caller's error leaves no
                    // allocation it does not know about.
                    self.undo(
                        out.iter().flat_map(|a| a.ips.iter()),
                        args.handle.as_deref(),
                    )
                    .await;
                    return Err(e);
                }
            }
        }
        let v6 = out.pop().unwrap_or_default();
        let v4 = out.pop().unwrap_or_default();
        Ok((v4, v6))
    }

    /// Best-effort release of addresses a failed request assigned (guarded by the handle, so
    /// nothing anyone else holds is touched).
    async fn undo<'a>(&self, ips: impl Iterator<Item = &'a IpNet>, handle: Option<&str>) {
        let requests: Vec<ReleaseRequest> = ips
            .map(|n| ReleaseRequest {
                ip: n.addr(),
                handle: handle.map(str::to_string),
                sequence_number: None,
            })
            .collect();
        if requests.is_empty() {
            return;
        }
        if let Err(e) = self.release_ips(&requests).await {
            tracing::warn!(error = %e, "could not give back addresses of a failed request; leak collection will");
        }
    }

    fn affinity_type(use_: IpUse) -> AffinityType {
        if use_ == IpUse::LoadBalancer {
            AffinityType::Virtual
        } else {
            AffinityType::Host
        }
    }

    fn assign_op(
        args: &AutoAssignArgs,
        num: usize,
        owner: Option<(AffinityType, &str)>,
        reservations: &Arc<Reservations>,
    ) -> AssignOp {
        AssignOp {
            num,
            handle: args.handle.clone(),
            attrs: args.attrs.clone(),
            owner: owner.map(|(k, o)| (k, o.to_string())),
            reservations: reservations.clone(),
        }
    }

    async fn assign_family(
        &self,
        args: &AutoAssignArgs,
        version: u8,
        num: usize,
        pools: &[Pool],
        inputs: &Inputs,
    ) -> Result<Assignment> {
        let mut result = Assignment {
            requested: num,
            ..Default::default()
        };
        if let Err(e) = self
            .fill_family(args, version, num, pools, inputs, &mut result)
            .await
        {
            // What this family already took would otherwise stay allocated behind an error.
            self.undo(result.ips.iter(), args.handle.as_deref()).await;
            return Err(e);
        }
        self.stats
            .addresses_assigned
            .fetch_add(result.ips.len() as u64, Ordering::Relaxed);
        Ok(result)
    }

    async fn fill_family(
        &self,
        args: &AutoAssignArgs,
        version: u8,
        num: usize,
        pools: &[Pool],
        inputs: &Inputs,
        result: &mut Assignment,
    ) -> Result<()> {
        let kind = Self::affinity_type(args.use_);
        self.fill_from_memory(args, version, num, pools, inputs, result)
            .await?;
        if result.ips.len() < num {
            // One request per host and family at a time reads the datastore and claims
            // blocks: a burst that finds the node's blocks full would otherwise claim a block
            // each. Whoever waited looks at the (now larger) memory again first.
            let turn = self.slow_path_turn(kind, &args.host, version);
            let _turn = turn.lock().await;
            self.fill_from_memory(args, version, num, pools, inputs, result)
                .await?;
            if result.ips.len() < num {
                self.assign_family_from_datastore(args, version, num, pools, inputs, result)
                    .await?;
            }
        }
        Ok(())
    }

    fn slow_path_turn(
        &self,
        kind: AffinityType,
        host: &str,
        version: u8,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.slow_turns.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_REMEMBERED_OWNERS {
            m.retain(|_, t| Arc::strong_count(t) > 1);
        }
        m.entry((kind, host.to_string(), version))
            .or_default()
            .clone()
    }

    /// The host's blocks as this process last saw them, when one has room: the common case
    /// costs one transaction and no reads. What the memory says is only trusted as far as
    /// the write's compare-and-swap checks it; everything else (a block being full, the
    /// list of blocks) is read again before acting on it.
    async fn fill_from_memory(
        &self,
        args: &AutoAssignArgs,
        version: u8,
        num: usize,
        pools: &[Pool],
        inputs: &Inputs,
        result: &mut Assignment,
    ) -> Result<()> {
        let kind = Self::affinity_type(args.use_);
        let host = args.host.as_str();
        let reservations = &inputs.reservations;
        let reserved = |ip: IpAddr| reservations.contains(ip);
        for cidr in self.remembered_affine(kind, host, version) {
            if result.ips.len() >= num {
                break;
            }
            if !pools.iter().any(|p| p.net.contains(&cidr)) || reservations.covers(&cidr) {
                continue;
            }
            let Some(cached) = self.blocks.cached(cidr) else {
                continue;
            };
            if !cached.block.is_owned_by(kind, host) || cached.block.num_free(&reserved) == 0 {
                continue;
            }
            let op = Self::assign_op(
                args,
                num - result.ips.len(),
                Some((kind, host)),
                reservations,
            );
            result.ips.extend(self.blocks.assign(cidr, op).await?);
        }
        Ok(())
    }

    /// Calico's order on freshly read data: the host's affine blocks, a new block, an
    /// abandoned empty block, then borrowing.
    async fn assign_family_from_datastore(
        &self,
        args: &AutoAssignArgs,
        version: u8,
        num: usize,
        pools: &[Pool],
        inputs: &Inputs,
        result: &mut Assignment,
    ) -> Result<()> {
        let kind = Self::affinity_type(args.use_);
        let host = args.host.as_str();
        let config = &inputs.config;
        let reservations = &inputs.reservations;
        let reserved = |ip: IpAddr| reservations.contains(ip);
        // The host's blocks in the chosen pools.
        let affinities = self
            .ds
            .list(&KeyPrefix::Affinities {
                affinity_type: kind,
                owner: Some(host.to_string()),
                ip_version: Some(version),
            })
            .await?;
        let mut owned = 0u32;
        let mut affine: Vec<IpNet> = Vec::new();
        let mut confirmed = std::collections::HashSet::new();
        let mut all_affine: Vec<IpNet> = Vec::new();
        for kv in &affinities.items {
            let Key::Affinity { cidr, .. } = &kv.key else {
                continue;
            };
            owned += 1;
            let state = BlockAffinity::from_bytes(&kv.value).map_err(|e| corrupt(kv, e))?;
            if state.state != AffinityState::PendingDeletion {
                all_affine.push(*cidr);
                if state.is_confirmed() {
                    confirmed.insert(*cidr);
                }
                if pools.iter().any(|p| p.net.contains(cidr)) && !reservations.covers(cidr) {
                    affine.push(*cidr);
                }
            }
        }
        self.remember_affine(kind, host, version, all_affine.clone());
        // Every affine block read now, all at once (the walk below is in Calico's order).
        let fresh: HashMap<IpNet, Option<Arc<CachedBlock>>> = futures::future::join_all(
            affine
                .iter()
                .map(|c| async move { (*c, self.blocks.read(*c).await) }),
        )
        .await
        .into_iter()
        .map(|(c, r)| r.map(|b| (c, b)))
        .collect::<Result<_>>()?;
        let cap = config.block_cap(args.max_blocks_per_host);
        let mut remaining_affine = affine.into_iter();
        'fill: while result.ips.len() < num {
            // 1. A block of ours with room; 2. a new block.
            let mut chosen: Option<IpNet> = None;
            for cidr in remaining_affine.by_ref() {
                // A confirmed affinity whose block was just read as ours needs nothing more;
                // anything else (a claim a crash interrupted, a stale affinity) is settled.
                let block = match fresh.get(&cidr) {
                    Some(Some(b))
                        if confirmed.contains(&cidr) && b.block.is_owned_by(kind, host) =>
                    {
                        Some(b.clone())
                    }
                    _ => self.block_for_affinity(kind, host, cidr).await?,
                };
                if block.is_some_and(|b| b.block.num_free(&reserved) > 0) {
                    chosen = Some(cidr);
                    break;
                }
            }
            if chosen.is_none() {
                if owned >= cap {
                    return Err(IpamError::BlockLimit {
                        node: host.to_string(),
                        limit: cap,
                    });
                }
                if !config.auto_allocate_blocks {
                    result.messages.push(
                        "automatic block allocation is disabled and the node's blocks are full"
                            .into(),
                    );
                    break 'fill;
                }
                match self
                    .claim_new_block(kind, host, pools, reservations, config)
                    .await?
                {
                    Some(kv) => {
                        owned += 1;
                        let Key::Block { cidr } = kv.key else {
                            break 'fill;
                        };
                        self.blocks.note_kv(cidr, &kv)?;
                        all_affine.push(cidr);
                        self.remember_affine(kind, host, version, all_affine.clone());
                        chosen = Some(cidr);
                    }
                    None => {
                        if config.strict_affinity {
                            result.messages.push(
                                "no more free affine blocks and strict affinity is enabled".into(),
                            );
                        }
                        break 'fill;
                    }
                }
            }
            let Some(cidr) = chosen else { break };
            let op = Self::assign_op(
                args,
                num - result.ips.len(),
                Some((kind, host)),
                reservations,
            );
            result.ips.extend(self.blocks.assign(cidr, op).await?);
        }
        // 3. Borrow from any block with room, unless affinity is strict.
        if result.ips.len() < num && !config.strict_affinity {
            let blocks = self
                .ds
                .list(&KeyPrefix::Blocks {
                    ip_version: Some(version),
                })
                .await?;
            let mut exhausted = Vec::new();
            for pool in pools {
                let mut in_pool: Vec<(IpNet, KvPair)> = blocks
                    .items
                    .iter()
                    .filter_map(|kv| match &kv.key {
                        Key::Block { cidr } if pool.net.contains(cidr) => Some((*cidr, kv.clone())),
                        _ => None,
                    })
                    .collect();
                // Walk the pool's blocks in this host's order, as Calico does.
                let order: HashMap<IpNet, usize> = if in_pool.len() > 1 {
                    pool.blocks_from(host)
                        .take(pool.num_blocks().min(1 << 20) as usize)
                        .enumerate()
                        .map(|(i, b)| (b, i))
                        .collect()
                } else {
                    Default::default()
                };
                in_pool.sort_by_key(|(c, _)| order.get(c).copied().unwrap_or(usize::MAX));
                for (cidr, kv) in in_pool {
                    if result.ips.len() >= num {
                        break;
                    }
                    if reservations.covers(&cidr) {
                        continue;
                    }
                    let b = decode_block(&kv)?;
                    if b.num_free(&reserved) == 0 {
                        continue;
                    }
                    self.blocks.note_block(cidr, kv.revision, b);
                    let op = Self::assign_op(args, num - result.ips.len(), None, reservations);
                    result.ips.extend(self.blocks.assign(cidr, op).await?);
                }
                if result.ips.len() < num {
                    exhausted.push(pool.net.to_string());
                }
            }
            if result.ips.len() < num && !exhausted.is_empty() {
                result.messages.push(format!(
                    "no IPs available in pools: {}",
                    exhausted.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The block behind one of the host's affinities, read now, finishing a claim a crash
    /// interrupted.
    async fn block_for_affinity(
        &self,
        kind: AffinityType,
        host: &str,
        cidr: IpNet,
    ) -> Result<Option<Arc<CachedBlock>>> {
        let aff_key = Key::Affinity {
            affinity_type: kind,
            owner: host.to_string(),
            cidr,
        };
        for _ in 0..MAX_ATTEMPTS {
            let aff = match self.ds.get(&aff_key).await {
                Ok(kv) => kv,
                Err(DatastoreError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let state = BlockAffinity::from_bytes(&aff.value).map_err(|e| corrupt(&aff, e))?;
            if state.state == AffinityState::PendingDeletion {
                return Ok(None);
            }
            match self.blocks.read(cidr).await? {
                Some(b) if state.is_confirmed() => {
                    if b.block.is_owned_by(kind, host) {
                        return Ok(Some(b));
                    }
                    // Someone else's block: our affinity is stale.
                    let _ = self.ds.delete(&aff_key, Some(aff.revision)).await;
                    return Ok(None);
                }
                _ => {
                    // Pending, or confirmed with the block missing: complete the claim.
                    match self.claim_block(kind, host, cidr, aff).await {
                        Ok(kv) => return Ok(Some(self.blocks.note_kv(cidr, &kv)?)),
                        Err(ClaimError::Retry) => continue,
                        Err(ClaimError::TakenByOther) => return Ok(None),
                        Err(ClaimError::Ipam(e)) => return Err(e),
                    }
                }
            }
        }
        Err(IpamError::TooManyRetries {
            operation: "reading an affine block",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Finds a block no one owns in the pools (or an empty one abandoned by another host)
    /// and claims it. `None` when every block of every pool is taken.
    async fn claim_new_block(
        &self,
        kind: AffinityType,
        host: &str,
        pools: &[Pool],
        reservations: &Reservations,
        config: &IpamConfig,
    ) -> Result<Option<KvPair>> {
        let reserved = |ip: IpAddr| reservations.contains(ip);
        for _ in 0..MAX_ATTEMPTS {
            let Some(version) = pools.first().map(Pool::version) else {
                return Ok(None);
            };
            let existing = self
                .ds
                .list(&KeyPrefix::Blocks {
                    ip_version: Some(version),
                })
                .await?;
            let mut blocks: std::collections::HashMap<IpNet, (AllocationBlock, KvPair)> =
                std::collections::HashMap::with_capacity(existing.items.len());
            for kv in existing.items {
                if let Key::Block { cidr } = &kv.key {
                    let b = decode_block(&kv)?;
                    blocks.insert(*cidr, (b, kv));
                }
            }
            let mut candidate = None;
            let mut abandoned = Vec::new();
            'pools: for pool in pools {
                // Bounded: among `existing + 1` distinct subnets at least one is free.
                for subnet in pool.blocks_from(host).take(blocks.len() + 1) {
                    if reservations.covers(&subnet) {
                        continue;
                    }
                    match blocks.get(&subnet) {
                        None => {
                            candidate = Some(subnet);
                            break 'pools;
                        }
                        Some((b, _)) if b.is_owned_by(kind, host) && b.num_free(&reserved) > 0 => {
                            candidate = Some(subnet);
                            break 'pools;
                        }
                        Some((b, kv)) if b.is_empty() && b.num_free(&reserved) > 0 => {
                            abandoned.push((subnet, b.clone(), kv.clone()));
                        }
                        Some(_) => {}
                    }
                }
            }
            // Nothing free: take over an empty block another host has not used for a while.
            if candidate.is_none() {
                for (subnet, b, _) in &abandoned {
                    if !self.claim_is_old(b) {
                        continue;
                    }
                    if let Some((owner_kind, owner)) = b.owner() {
                        let owner = owner.to_string();
                        match self
                            .release_block_affinity(
                                owner_kind,
                                &owner,
                                *subnet,
                                true,
                                Some(b.sequence_number),
                            )
                            .await
                        {
                            Ok(()) => {
                                tracing::info!(block = %subnet, from = %owner, to = %host, "reclaimed an empty block");
                                candidate = Some(*subnet);
                                break;
                            }
                            Err(e) => {
                                tracing::debug!(block = %subnet, error = %e, "could not reclaim block")
                            }
                        }
                    } else {
                        candidate = Some(*subnet);
                        break;
                    }
                }
            }
            let Some(subnet) = candidate else {
                return Ok(None);
            };
            let _ = config;
            // The usual case, a subnet with no block and no affinity: both are written in one
            // transaction, so no half-made claim can ever be seen or left behind. Anything
            // already there goes the two-phase way below, which completes or yields.
            if let Some(kv) = self.claim_atomically(kind, host, subnet).await? {
                self.stats.blocks_claimed.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(kv));
            }
            let pending = match self.pending_affinity(kind, host, subnet).await {
                Ok(kv) => kv,
                // Our affinity changed or vanished between create and update (another
                // allocator gave up its claim, or a reclaim released it): look again.
                Err(IpamError::Datastore(
                    DatastoreError::Conflict { .. } | DatastoreError::NotFound { .. },
                )) => {
                    self.conflict();
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.claim_block(kind, host, subnet, pending).await {
                Ok(kv) => {
                    self.stats.blocks_claimed.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(kv));
                }
                Err(ClaimError::Retry | ClaimError::TakenByOther) => continue,
                Err(ClaimError::Ipam(e)) => return Err(e),
            }
        }
        Err(IpamError::TooManyRetries {
            operation: "claiming a block",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Claims a subnet where neither the block nor this host's affinity exists: the
    /// confirmed affinity and the new block in one transaction. `None` when either exists.
    async fn claim_atomically(
        &self,
        kind: AffinityType,
        host: &str,
        cidr: IpNet,
    ) -> Result<Option<KvPair>> {
        let block = AllocationBlock::new(
            cidr,
            Some((kind, host)),
            Some(self.now_rfc3339()),
            self.initial_sequence_number(),
        );
        let value = encode(&block);
        let writes = [
            TxnWrite {
                key: Key::Affinity {
                    affinity_type: kind,
                    owner: host.to_string(),
                    cidr,
                },
                expect: Expect::Absent,
                value: Some(encode(&BlockAffinity::new(AffinityState::Confirmed))),
            },
            TxnWrite {
                key: Key::Block { cidr },
                expect: Expect::Absent,
                value: Some(value.clone()),
            },
        ];
        match self.ds.txn(&writes).await? {
            TxnOutcome::Committed { revision } => {
                self.blocks.note_block(cidr, revision, block);
                Ok(Some(KvPair {
                    key: Key::Block { cidr },
                    value,
                    revision,
                }))
            }
            TxnOutcome::Failed { .. } => {
                self.conflict();
                Ok(None)
            }
        }
    }

    fn claim_is_old(&self, b: &AllocationBlock) -> bool {
        let Some(t) = &b.affinity_claim_time else {
            return true;
        };
        let Ok(claimed) = chrono::DateTime::parse_from_rfc3339(t) else {
            return true;
        };
        let age =
            chrono::DateTime::<chrono::Utc>::from(self.clock.now()).signed_duration_since(claimed);
        age.to_std().is_ok_and(|a| a >= EMPTY_BLOCK_MIN_RECLAIM_AGE)
    }

    /// Creates (or re-marks) this host's affinity for `cidr` as pending.
    async fn pending_affinity(
        &self,
        kind: AffinityType,
        host: &str,
        cidr: IpNet,
    ) -> Result<KvPair> {
        let key = Key::Affinity {
            affinity_type: kind,
            owner: host.to_string(),
            cidr,
        };
        match self
            .ds
            .create(&key, encode(&BlockAffinity::new(AffinityState::Pending)))
            .await
        {
            Ok(kv) => Ok(kv),
            Err(DatastoreError::AlreadyExists { .. }) => {
                let kv = self.ds.get(&key).await?;
                let a = BlockAffinity::from_bytes(&kv.value).map_err(|e| corrupt(&kv, e))?;
                if a.is_confirmed() {
                    return Ok(kv);
                }
                Ok(self
                    .ds
                    .update(
                        &key,
                        encode(&BlockAffinity::new(AffinityState::Pending)),
                        kv.revision,
                    )
                    .await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the block for a pending affinity and confirms the affinity.
    async fn claim_block(
        &self,
        kind: AffinityType,
        host: &str,
        cidr: IpNet,
        aff: KvPair,
    ) -> Result<KvPair, ClaimError> {
        let block = AllocationBlock::new(
            cidr,
            Some((kind, host)),
            Some(self.now_rfc3339()),
            self.initial_sequence_number(),
        );
        let block_kv = match self.ds.create(&Key::Block { cidr }, encode(&block)).await {
            Ok(kv) => kv,
            Err(DatastoreError::AlreadyExists { .. }) => {
                let kv = self
                    .ds
                    .get(&Key::Block { cidr })
                    .await
                    .map_err(ClaimError::ds)?;
                let existing = decode_block(&kv).map_err(ClaimError::Ipam)?;
                if !existing.is_owned_by(kind, host) {
                    // Another host won the race: give up our pending claim.
                    let _ = self.ds.delete(&aff.key, Some(aff.revision)).await;
                    return Err(ClaimError::TakenByOther);
                }
                kv
            }
            Err(e) => return Err(ClaimError::ds(e)),
        };
        let confirmed = encode(&BlockAffinity::new(AffinityState::Confirmed));
        match self.ds.update(&aff.key, confirmed, aff.revision).await {
            Ok(_) => Ok(block_kv),
            Err(DatastoreError::Conflict { .. }) => {
                self.conflict();
                // Someone confirmed it for us already?
                match self.ds.get(&aff.key).await {
                    Ok(kv)
                        if BlockAffinity::from_bytes(&kv.value).is_ok_and(|a| a.is_confirmed()) =>
                    {
                        Ok(block_kv)
                    }
                    _ => Err(ClaimError::Retry),
                }
            }
            Err(e) => Err(ClaimError::ds(e)),
        }
    }

    // ---- AssignIP ----

    /// Assigns one specific address to `handle` on `host`, claiming its block for the host
    /// if nobody has it yet.
    pub async fn assign_ip(
        &self,
        ip: IpAddr,
        handle: &str,
        attrs: &BTreeMap<String, String>,
        host: &str,
        use_: IpUse,
    ) -> Result<IpNet> {
        check_handle(handle)?;
        let pools = self.pools().await?;
        let pool = pools
            .iter()
            .find(|p| p.net.contains(&ip) && !p.spec.disabled)
            .ok_or(IpamError::NotInAnyPool { ip })?;
        if !pool
            .spec
            .uses()
            .iter()
            .any(|u| format!("{u:?}") == format!("{use_:?}"))
        {
            return Err(IpamError::UseNotAllowed {
                pool: pool.name.clone(),
                use_: format!("{use_:?}"),
            });
        }
        if self.reservations().await?.contains(ip) {
            return Err(IpamError::Reserved { ip });
        }
        let config = self.config().await?;
        let kind = Self::affinity_type(use_);
        let cidr = pool.block_for(ip);
        // "In use" is an answer the caller acts on: decide it from values read now.
        let mut current = self.blocks.read(cidr).await?;
        let mut handle_state = self.blocks.read_handle(handle).await?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(cur) = current.clone() else {
                let pending = self.pending_affinity(kind, host, cidr).await?;
                match self.claim_block(kind, host, cidr, pending).await {
                    Ok(kv) => {
                        self.stats.blocks_claimed.fetch_add(1, Ordering::Relaxed);
                        current = Some(self.blocks.note_kv(cidr, &kv)?);
                    }
                    Err(ClaimError::Retry | ClaimError::TakenByOther) => {
                        current = self.blocks.read(cidr).await?;
                    }
                    Err(ClaimError::Ipam(e)) => return Err(e),
                }
                continue;
            };
            let mut b = cur.block.clone();
            if config.strict_affinity && !b.is_owned_by(kind, host) {
                return Err(IpamError::StrictAffinity {
                    block: cidr,
                    owner: b.affinity.clone().unwrap_or_else(|| "no one".into()),
                    node: host.to_string(),
                });
            }
            let assigned = b.assign_ip(ip, Some(handle), attrs).map_err(|e| match e {
                crate::block::AssignIpError::InUse { handle } => IpamError::InUse { ip, handle },
                crate::block::AssignIpError::NotInBlock => IpamError::NotInAnyPool { ip },
            })?;
            b.sequence_number += 1;
            let mut h = handle_state
                .as_ref()
                .map(|(_, h)| h.clone())
                .unwrap_or_default();
            *h.block.entry(cidr.to_string()).or_default() += 1;
            let writes = vec![HandleWrite {
                id: handle.to_string(),
                base: handle_state.as_ref().map(|(r, _)| *r),
                new: Some(h),
            }];
            let block = BlockWrite {
                cidr,
                base: cur.revision,
                new: Some(b),
            };
            match self.blocks.commit(Some(block), writes).await? {
                Commit::Done { .. } => {
                    self.stats
                        .addresses_assigned
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(assigned);
                }
                Commit::Stale { block, handles } => {
                    current = block;
                    handle_state = handles.into_iter().next().flatten();
                }
            }
        }
        Err(IpamError::TooManyRetries {
            operation: "assigning an address",
            attempts: MAX_ATTEMPTS,
        })
    }

    // ---- Release ----

    /// The block an address lives in: from its pool (disabled pools included), else by
    /// looking through the blocks.
    async fn block_of(
        &self,
        ip: IpAddr,
        pools: &[Pool],
        blocks: &mut Option<Vec<IpNet>>,
    ) -> Result<Option<IpNet>> {
        if let Some(p) = pools.iter().find(|p| p.net.contains(&ip)) {
            return Ok(Some(p.block_for(ip)));
        }
        if blocks.is_none() {
            let v = if ip.is_ipv4() { 4 } else { 6 };
            let list = self
                .ds
                .list(&KeyPrefix::Blocks {
                    ip_version: Some(v),
                })
                .await?;
            *blocks = Some(
                list.items
                    .iter()
                    .filter_map(|kv| match kv.key {
                        Key::Block { cidr } => Some(cidr),
                        _ => None,
                    })
                    .collect(),
            );
        }
        Ok(blocks
            .as_ref()
            .and_then(|bs| bs.iter().find(|b| b.contains(&ip)).copied()))
    }

    /// Releases addresses, each optionally only if it still has the given handle and
    /// sequence number. A block in which any guard fails is left untouched and reported.
    pub async fn release_ips(&self, requests: &[ReleaseRequest]) -> Result<ReleaseOutcome> {
        let pools = self.pools().await?;
        let mut by_block: BTreeMap<IpNet, Vec<ReleaseRequest>> = BTreeMap::new();
        let mut out = ReleaseOutcome::default();
        let mut all_blocks = None;
        for r in requests {
            match self.block_of(r.ip, &pools, &mut all_blocks).await? {
                Some(b) => by_block.entry(b).or_default().push(r.clone()),
                None => out.unallocated.push(r.ip),
            }
        }
        for (cidr, reqs) in by_block {
            let (released, unallocated) = self.release_from_block(cidr, &reqs).await?;
            out.released.extend(released);
            out.unallocated.extend(unallocated);
        }
        Ok(out)
    }

    async fn release_from_block(
        &self,
        cidr: IpNet,
        reqs: &[ReleaseRequest],
    ) -> Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        // "Not allocated" is reported without a write, so it must come from a fresh read; and
        // every guard is checked on it first, so a refused request changes nothing.
        let Some(cur) = self.blocks.read(cidr).await? else {
            return Ok((Vec::new(), reqs.iter().map(|r| r.ip).collect()));
        };
        let rel = cur.block.clone().release(reqs).map_err(release_refused)?;
        if rel.by_handle.len() <= MAX_HANDLES_PER_TXN {
            return self.release_chunk(cidr, reqs, Some(cur)).await;
        }
        // More owners than one transaction can carry: a group of owners at a time.
        let mut by_owner: BTreeMap<Option<String>, Vec<ReleaseRequest>> = BTreeMap::new();
        for r in reqs {
            let owner = cur
                .block
                .attributes_for(r.ip)
                .and_then(|a| a.handle())
                .map(str::to_string);
            by_owner.entry(owner).or_default().push(r.clone());
        }
        let groups: Vec<Vec<ReleaseRequest>> = by_owner.into_values().collect();
        let (mut released, mut unallocated) = (Vec::new(), Vec::new());
        for chunk in groups.chunks(MAX_HANDLES_PER_TXN) {
            let reqs: Vec<ReleaseRequest> = chunk.iter().flatten().cloned().collect();
            let (r, u) = self.release_chunk(cidr, &reqs, None).await?;
            released.extend(r);
            unallocated.extend(u);
        }
        Ok((released, unallocated))
    }

    /// Releases addresses of one block in one transaction with their handles' new counts.
    async fn release_chunk(
        &self,
        cidr: IpNet,
        reqs: &[ReleaseRequest],
        mut current: Option<Arc<CachedBlock>>,
    ) -> Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        if current.is_none() {
            current = self.blocks.read(cidr).await?;
        }
        let mut handles: HashMap<String, HandleState> = HashMap::new();
        for _ in 0..MAX_ATTEMPTS {
            let Some(cur) = current.clone() else {
                return Ok((Vec::new(), reqs.iter().map(|r| r.ip).collect()));
            };
            let mut b = cur.block.clone();
            let rel = b.release(reqs).map_err(release_refused)?;
            if rel.released.is_empty() {
                return Ok((Vec::new(), rel.unallocated));
            }
            let mut writes = Vec::with_capacity(rel.by_handle.len());
            for id in rel.by_handle.keys() {
                if !handles.contains_key(id) {
                    let state = self.blocks.handle_or_read(id).await?;
                    handles.insert(id.clone(), state);
                }
                let state = handles.get(id).cloned().flatten();
                // The count is what the block holds for the handle afterwards, which also
                // repairs a count that had drifted.
                let held = b.ips_for_handle(id).len();
                writes.push(HandleWrite {
                    id: id.clone(),
                    base: state.as_ref().map(|(r, _)| *r),
                    new: state.and_then(|(_, h)| handle_with_count(h, cidr, held)),
                });
            }
            let ids: Vec<String> = writes.iter().map(|w| w.id.clone()).collect();
            let block = BlockWrite {
                cidr,
                base: cur.revision,
                new: after_release(b),
            };
            match self.blocks.commit(Some(block), writes).await? {
                Commit::Done { .. } => {
                    self.stats
                        .addresses_released
                        .fetch_add(rel.released.len() as u64, Ordering::Relaxed);
                    return Ok((rel.released, rel.unallocated));
                }
                Commit::Stale {
                    block,
                    handles: now,
                } => {
                    current = block;
                    for (id, s) in ids.into_iter().zip(now) {
                        handles.insert(id, s);
                    }
                }
            }
        }
        Err(IpamError::TooManyRetries {
            operation: "releasing addresses",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Releases every address a handle holds; releasing an unknown handle is not an error
    /// (releases must be idempotent). Returns what was released.
    ///
    /// Block by block, the addresses and the handle's count for that block go in one
    /// transaction (combined with other requests on the same block); the handle record
    /// goes with the last.
    pub async fn release_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>> {
        check_handle(handle)?;
        let mut state = self.blocks.handle_or_read(handle).await?;
        let mut released = Vec::new();
        let mut checked: Vec<IpNet> = Vec::new();
        // Each round settles one block, or learns newer values after losing a race.
        for _ in 0..MAX_ATTEMPTS {
            let Some((revision, h)) = state.clone() else {
                return Ok(released);
            };
            let Some(name) = h.block.keys().next().cloned() else {
                // A record counting nothing: remove it.
                state = self.rewrite_handle(handle, revision, None).await?;
                continue;
            };
            let mut rest = h.clone();
            rest.block.remove(&name);
            let rest = (!rest.block.is_empty()).then_some(rest);
            let Ok(cidr) = name.parse::<IpNet>() else {
                // Not a block name: nothing can be allocated under it.
                state = self.rewrite_handle(handle, revision, rest).await?;
                continue;
            };
            let op = BlockOp::ReleaseHandle {
                handle: handle.to_string(),
                seen: state.clone(),
            };
            let out = self.blocks.run(cidr, op).await?;
            if !out.released.is_empty() {
                self.stats
                    .addresses_released
                    .fetch_add(out.released.len() as u64, Ordering::Relaxed);
                released.extend(out.released);
                state = match out.handle {
                    Some(s) => s,
                    None => self.blocks.read_handle(handle).await?,
                };
                continue;
            }
            // Nothing of the handle's in the block as this process knew it: look again
            // before believing it, since no compare-and-swap checks an absence.
            if !checked.contains(&cidr) {
                checked.push(cidr);
                self.blocks.read(cidr).await?;
                state = self.blocks.read_handle(handle).await?;
                continue;
            }
            state = self.rewrite_handle(handle, revision, rest).await?;
        }
        Err(IpamError::TooManyRetries {
            operation: "releasing a handle",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Replaces a handle record seen at `revision` (`None` deletes it); returns the handle
    /// as it is afterwards, or as found if it had changed.
    async fn rewrite_handle(
        &self,
        handle: &str,
        revision: i64,
        new: Option<Handle>,
    ) -> Result<HandleState> {
        let write = HandleWrite {
            id: handle.to_string(),
            base: Some(revision),
            new: new.clone(),
        };
        match self.blocks.commit(None, vec![write]).await? {
            Commit::Done { revision } => Ok(new.map(|h| (revision, h))),
            Commit::Stale { handles, .. } => Ok(handles.into_iter().next().flatten()),
        }
    }

    /// Releases the allocations of a CNI network on a node whose container is not in `keep`
    /// (handles `<network>.<containerID>`, as the CNI plugin makes them). Returns each
    /// released handle with its addresses.
    pub async fn release_stale(
        &self,
        network: &str,
        host: &str,
        keep: &std::collections::HashSet<String>,
    ) -> Result<Vec<(String, Vec<IpAddr>)>> {
        let prefix = format!("{network}.");
        let mut stale = std::collections::BTreeSet::new();
        for (_, _, attr) in self.allocations().await? {
            let Some(handle) = attr.handle() else {
                continue;
            };
            let Some(container) = handle.strip_prefix(&prefix) else {
                continue;
            };
            // Only what the CNI plugin recorded for this network: another network's names
            // may share the prefix.
            if attr.owner("node") == Some(host)
                && attr.owner("network") == Some(network)
                && !keep.contains(container)
            {
                stale.insert(handle.to_string());
            }
        }
        let mut out = Vec::with_capacity(stale.len());
        for handle in stale {
            let ips = self.release_by_handle(&handle).await?;
            out.push((handle, ips));
        }
        Ok(out)
    }

    /// The addresses a handle holds.
    pub async fn ips_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>> {
        let h = match self
            .ds
            .get(&Key::Handle {
                id: handle.to_string(),
            })
            .await
        {
            Ok(kv) => serde_json::from_slice::<Handle>(&kv.value).map_err(|e| corrupt(&kv, e))?,
            Err(DatastoreError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for block in h.block.keys() {
            let Ok(cidr) = block.parse::<IpNet>() else {
                continue;
            };
            match self.ds.get(&Key::Block { cidr }).await {
                Ok(kv) => out.extend(decode_block(&kv)?.ips_for_handle(handle)),
                Err(DatastoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    // ---- affinities ----

    /// Releases a host's affinity for a block: an empty block is deleted; a block still in
    /// use stays, without affinity, for anyone to borrow from (and is never lost). With
    /// `must_be_empty`, a block in use is left alone. `sequence_number`, when given, must
    /// still be the block's (the block was not touched since it was judged empty).
    ///
    /// The affinity and the block change in one transaction, so no state between the two
    /// (Calico's `pendingDeletion` mark) is ever left behind.
    pub async fn release_block_affinity(
        &self,
        kind: AffinityType,
        host: &str,
        cidr: IpNet,
        must_be_empty: bool,
        sequence_number: Option<u64>,
    ) -> Result<()> {
        let aff_key = Key::Affinity {
            affinity_type: kind,
            owner: host.to_string(),
            cidr,
        };
        for _ in 0..MAX_ATTEMPTS {
            let aff = match self.ds.get(&aff_key).await {
                Ok(kv) => kv,
                Err(DatastoreError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let mut writes = vec![TxnWrite {
                key: aff_key.clone(),
                expect: Expect::Revision(aff.revision),
                value: None,
            }];
            let mut new_block = None;
            if let Some(cur) = self.blocks.read(cidr).await? {
                let b = &cur.block;
                if sequence_number.is_some_and(|s| s != b.sequence_number) {
                    return Err(IpamError::Datastore(DatastoreError::Conflict {
                        key: Key::Block { cidr }.path(),
                        expected: 0,
                        actual: Some(cur.revision),
                    }));
                }
                if b.owner().is_some() && !b.is_owned_by(kind, host) {
                    // A stale affinity for someone else's block: only the affinity goes.
                    let _ = self.ds.delete(&aff_key, Some(aff.revision)).await;
                    return Ok(());
                }
                if must_be_empty && !b.is_empty() {
                    return Err(IpamError::InUse {
                        ip: cidr.network(),
                        handle: None,
                    });
                }
                new_block = (!b.is_empty()).then(|| {
                    let mut b = b.clone();
                    b.affinity = None;
                    b.affinity_claim_time = None;
                    b.host_affinity = None;
                    b.sequence_number += 1;
                    b
                });
                writes.push(TxnWrite {
                    key: Key::Block { cidr },
                    expect: Expect::Revision(cur.revision),
                    value: new_block.as_ref().map(encode),
                });
            }
            match self.ds.txn(&writes).await {
                Ok(TxnOutcome::Committed { revision }) => {
                    match new_block {
                        Some(b) => {
                            self.blocks.note_block(cidr, revision, b);
                        }
                        None => self.blocks.forget_block(cidr),
                    }
                    return Ok(());
                }
                Ok(TxnOutcome::Failed { .. }) => self.conflict(),
                Err(e) => {
                    self.blocks.forget_block(cidr);
                    return Err(e.into());
                }
            }
        }
        Err(IpamError::TooManyRetries {
            operation: "releasing a block affinity",
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Releases every affinity of a host (node deletion). Addresses stay allocated.
    pub async fn release_host_affinities(&self, host: &str, must_be_empty: bool) -> Result<usize> {
        let mut n = 0;
        for kind in [AffinityType::Host] {
            let list = self
                .ds
                .list(&KeyPrefix::Affinities {
                    affinity_type: kind,
                    owner: Some(host.to_string()),
                    ip_version: None,
                })
                .await?;
            for kv in list.items {
                if let Key::Affinity { cidr, .. } = kv.key {
                    match self
                        .release_block_affinity(kind, host, cidr, must_be_empty, None)
                        .await
                    {
                        Ok(()) => n += 1,
                        Err(IpamError::InUse { .. }) if must_be_empty => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(n)
    }

    // ---- reporting ----

    /// Capacity and use per pool and per block.
    pub async fn usage(&self) -> Result<Usage> {
        let pools = self.pools().await?;
        let reservations = self.reservations().await?;
        let reserved = |ip: IpAddr| reservations.contains(ip);
        let mut usage = Usage::default();
        let blocks = self
            .stored_blocks()
            .await?
            .iter()
            .map(decode_block)
            .collect::<Result<Vec<_>>>()?;
        for pool in &pools {
            let size = |n: &IpNet| {
                1u128
                    .checked_shl(u32::from(n.max_prefix_len() - n.prefix_len()))
                    .unwrap_or(u128::MAX)
            };
            let mut pu = PoolUsage {
                name: pool.name.clone(),
                cidr: pool.net,
                capacity: size(&pool.net),
                in_use: 0,
                reserved: 0,
                available: 0,
            };
            let mut carved = Vec::new();
            for b in blocks.iter().filter(|b| pool.net.contains(&b.cidr)) {
                let cap = b.size() as u128;
                let in_use = b.num_allocated() as u128;
                let res = (0..b.size()).filter(|o| reserved(b.ip(*o))).count() as u128;
                let free = b.num_free(&reserved) as u128;
                pu.in_use += in_use;
                pu.available += free;
                carved.push(b.cidr);
                usage.blocks.push(BlockUsage {
                    cidr: b.cidr,
                    pool: pool.name.clone(),
                    affinity: b.affinity.clone(),
                    capacity: cap,
                    in_use,
                    reserved: res,
                    available: free,
                });
            }
            // Reserved over the whole pool; space with no block yet is available, less what
            // reservations hold there.
            let space = reservations.pool_space(&pool.net, &carved);
            pu.reserved = space.reserved;
            pu.available += space.free_outside_blocks;
            usage.pools.push(pu);
        }
        Ok(usage)
    }

    /// Every allocation in every block: (address, block, attributes).
    pub async fn allocations(
        &self,
    ) -> Result<Vec<(IpAddr, IpNet, crate::block::AllocationAttribute)>> {
        let mut out = Vec::new();
        for kv in self.stored_blocks().await? {
            let b = decode_block(&kv)?;
            out.extend(b.allocated().map(|(ip, a)| (ip, b.cidr, a.clone())));
        }
        Ok(out)
    }

    /// Every stored block of both families, undecoded (reports and the leak collector
    /// decide what a corrupt one means to them).
    pub async fn stored_blocks(&self) -> Result<Vec<KvPair>> {
        // One list for both families (IPv4 blocks sort first).
        Ok(self
            .ds
            .list(&KeyPrefix::Blocks { ip_version: None })
            .await?
            .items)
    }

    /// The block affinity text for a host (`host:<name>`).
    pub fn host_affinity(host: &str) -> String {
        affinity_string(AffinityType::Host, host)
    }

    /// The IP family of a network, for callers that branch on it.
    pub fn version_of(net: &IpNet) -> &'static str {
        family_name(ip_version(net))
    }
}

enum ClaimError {
    /// A concurrent change; start the claim again.
    Retry,
    /// Another host owns the block.
    TakenByOther,
    Ipam(IpamError),
}

impl ClaimError {
    fn ds(e: DatastoreError) -> ClaimError {
        match e {
            DatastoreError::Conflict { .. } | DatastoreError::NotFound { .. } => ClaimError::Retry,
            e => ClaimError::Ipam(e.into()),
        }
    }
}

/// A block after addresses left it: an empty block no host has affinity for is deleted
/// (`None`); otherwise its sequence number moves on.
fn after_release(mut b: AllocationBlock) -> Option<AllocationBlock> {
    if b.is_empty() && b.owner().is_none() {
        None
    } else {
        b.sequence_number += 1;
        Some(b)
    }
}

/// A handle counting `count` addresses in `block`; `None` once it counts nothing.
fn handle_with_count(mut h: Handle, block: IpNet, count: usize) -> Option<Handle> {
    let name = block.to_string();
    if count == 0 {
        h.block.remove(&name);
    } else {
        h.block.insert(name, count);
    }
    (!h.block.is_empty()).then_some(h)
}

fn release_refused(e: BlockReleaseError) -> IpamError {
    let ip = match &e {
        BlockReleaseError::BadSequenceNumber { ip, .. }
        | BlockReleaseError::BadHandle { ip, .. }
        | BlockReleaseError::NotInBlock { ip, .. } => *ip,
    };
    IpamError::ReleaseRefused {
        ip,
        reason: e.to_string(),
    }
}
