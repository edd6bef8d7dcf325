//! What an allocation decides from besides blocks: the IPAM configuration, the pools, the
//! reservations and the node's labels. Read from the datastore per request, or, in ipamd,
//! kept current by a watch ([`ClusterView`]) so a request on the node's behalf reads nothing.
//!
//! A view can lag the datastore by the time a watch event takes to arrive (milliseconds), as
//! Calico's own IPAM lags between reading a pool and writing a block. The block writes are
//! compare-and-swaps either way; what the lag can do is let an address out of a pool disabled
//! (or a reservation made) in that instant, exactly as in Calico.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use calico_api::Kind;
use calico_api::resource::{AnyResource, IpPool, IpReservation, IpamConfiguration, Node};
use calico_datastore::client::decode_kv;
use calico_datastore::syncer::{SyncEvent, SyncStatus, SyncUpdate, Syncer, SyncerConfig};
use calico_datastore::{Datastore, DatastoreError, Key, KeyPrefix, KvPair, ResourceClient};
use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::IpamConfig;
use crate::pools::{Pool, Reservations};
use crate::{IpamError, Result};

/// Everything an AutoAssign reads before it looks at blocks.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub config: IpamConfig,
    pub pools: Vec<Pool>,
    pub reservations: Arc<Reservations>,
    /// The labels of the node the request is for (empty if it has no Node resource).
    pub node_labels: BTreeMap<String, String>,
}

fn pool_of(p: &IpPool) -> Option<Pool> {
    let mut p = p.clone();
    calico_api::Resource::apply_defaults(&mut p);
    Pool::from_resource(&p)
}

fn reserved_nets(r: &IpReservation) -> Vec<IpNet> {
    r.spec
        .reserved_cidrs
        .iter()
        .filter_map(|c| calico_api::validation::parse_cidr_or_ip(c).ok())
        .collect()
}

fn v2_config(kv: &KvPair) -> Result<IpamConfig> {
    serde_json::from_slice::<IpamConfig>(&kv.value).map_err(|e| IpamError::Corrupt {
        key: kv.key.path(),
        reason: e.to_string(),
    })
}

/// The IPAM configuration: `/calico/ipam/v2/config` (what Calico's IPAM reads), else the v3
/// IPAMConfiguration `default`, else Calico's defaults.
fn effective_config(v2: Option<IpamConfig>, v3: Option<IpamConfig>) -> IpamConfig {
    v2.or(v3).unwrap_or_default()
}

pub(crate) async fn read_config(
    ds: &Arc<dyn Datastore>,
    resources: &ResourceClient,
) -> Result<IpamConfig> {
    let v2 = match ds.get(&Key::IpamConfig).await {
        Ok(kv) => Some(v2_config(&kv)?),
        Err(DatastoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if v2.is_some() {
        return Ok(effective_config(v2, None));
    }
    let v3 = match resources.get::<IpamConfiguration>(None, "default").await {
        Ok(r) => Some(IpamConfig::from_spec(&r.spec)),
        Err(DatastoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(effective_config(None, v3))
}

pub(crate) async fn read_pools(resources: &ResourceClient) -> Result<Vec<Pool>> {
    let list = resources.list::<IpPool>(None).await?;
    Ok(list.items.iter().filter_map(pool_of).collect())
}

pub(crate) async fn read_reservations(resources: &ResourceClient) -> Result<Reservations> {
    let list = resources.list::<IpReservation>(None).await?;
    Ok(Reservations::new(
        list.items.iter().flat_map(reserved_nets).collect(),
    ))
}

pub(crate) async fn read_node_labels(
    resources: &ResourceClient,
    host: &str,
) -> Result<BTreeMap<String, String>> {
    match resources.get::<Node>(None, host).await {
        Ok(n) => Ok(n.metadata.labels),
        Err(DatastoreError::NotFound { .. }) => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default)]
struct ViewState {
    config_v2: Option<IpamConfig>,
    config_v3: Option<IpamConfig>,
    pools: BTreeMap<String, Pool>,
    reservations: BTreeMap<String, Vec<IpNet>>,
    node_labels: BTreeMap<String, String>,
    /// Built from the above after each batch of changes; requests share it.
    snapshot: Option<Arc<Inputs>>,
}

/// The inputs for one node, kept current by a datastore watch.
#[derive(Debug)]
pub struct ClusterView {
    node: String,
    state: RwLock<ViewState>,
    in_sync: AtomicBool,
}

impl ClusterView {
    pub fn new(node: &str) -> Arc<ClusterView> {
        Arc::new(ClusterView {
            node: node.to_string(),
            state: RwLock::default(),
            in_sync: AtomicBool::new(false),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether every input has been read once (before that, requests read the datastore).
    pub fn is_in_sync(&self) -> bool {
        self.in_sync.load(Ordering::Acquire)
    }

    /// The current inputs (the node labels are this view's node's), once in sync.
    pub fn snapshot(&self) -> Option<Arc<Inputs>> {
        if !self.is_in_sync() {
            return None;
        }
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot
            .clone()
    }

    fn prefixes() -> Vec<KeyPrefix> {
        vec![
            KeyPrefix::IpamConfig,
            KeyPrefix::kind(Kind::IpamConfiguration),
            KeyPrefix::kind(Kind::IpPool),
            KeyPrefix::kind(Kind::IpReservation),
            KeyPrefix::kind(Kind::Node),
        ]
    }

    /// Follows the datastore until cancelled.
    pub async fn run(self: Arc<Self>, ds: Arc<dyn Datastore>, stop: CancellationToken) {
        let (tx, mut rx) = mpsc::channel(16);
        let syncer = Syncer::new(ds, SyncerConfig::new(Self::prefixes()));
        let task = tokio::spawn(syncer.run(tx));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(SyncEvent::Updates(u)) => self.apply(&u),
                    Some(SyncEvent::Status(s)) => {
                        if s == SyncStatus::InSync {
                            self.rebuild();
                            self.in_sync.store(true, Ordering::Release);
                            tracing::info!(node = %self.node, "IPAM inputs in sync with the datastore");
                        }
                    }
                    None => break,
                },
            }
        }
        // A view nobody updates must not keep deciding: requests read the datastore again.
        self.in_sync.store(false, Ordering::Release);
        task.abort();
    }

    /// Applies a batch of changes and rebuilds the shared snapshot.
    pub fn apply(&self, updates: &[SyncUpdate]) {
        {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            for u in updates {
                if let Err(e) = self.apply_one(&mut st, u) {
                    // Keep the last good value: a corrupt record must not change decisions.
                    tracing::warn!(key = %u.key().path(), error = %e, "ignoring a record IPAM cannot read");
                }
            }
        }
        self.rebuild();
    }

    fn apply_one(&self, st: &mut ViewState, u: &SyncUpdate) -> Result<()> {
        let key = u.key();
        let value = match u {
            SyncUpdate::Put(kv) => Some(kv),
            SyncUpdate::Delete { .. } => None,
        };
        match key {
            Key::IpamConfig => st.config_v2 = value.map(v2_config).transpose()?,
            Key::Resource { kind, name, .. } => {
                let res = value.map(|kv| decode_kv(*kind, kv)).transpose()?;
                match (kind, res) {
                    (Kind::IpamConfiguration, r) if name == "default" => {
                        st.config_v3 = match r {
                            Some(AnyResource::IpamConfiguration(c)) => {
                                Some(IpamConfig::from_spec(&c.spec))
                            }
                            _ => None,
                        }
                    }
                    (Kind::IpPool, Some(AnyResource::IpPool(p))) => match pool_of(&p) {
                        Some(pool) => {
                            st.pools.insert(name.clone(), pool);
                        }
                        None => {
                            st.pools.remove(name);
                        }
                    },
                    (Kind::IpPool, None) => {
                        st.pools.remove(name);
                    }
                    (Kind::IpReservation, Some(AnyResource::IpReservation(r))) => {
                        st.reservations.insert(key.path(), reserved_nets(&r));
                    }
                    (Kind::IpReservation, None) => {
                        st.reservations.remove(&key.path());
                    }
                    (Kind::Node, r) if *name == self.node => {
                        st.node_labels = match r {
                            Some(AnyResource::Node(n)) => n.metadata.labels,
                            _ => BTreeMap::new(),
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn rebuild(&self) {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let inputs = Inputs {
            config: effective_config(st.config_v2.clone(), st.config_v3.clone()),
            pools: st.pools.values().cloned().collect(),
            reservations: Arc::new(Reservations::new(
                st.reservations.values().flatten().copied().collect(),
            )),
            node_labels: st.node_labels.clone(),
        };
        st.snapshot = Some(Arc::new(inputs));
    }
}
