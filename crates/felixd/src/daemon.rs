//! felixd's main loop: datastore syncer and agent commands in, calculation graph, dataplane
//! out; plus the health and metrics endpoints and the agent socket.
//!
//! ```text
//!  syncer ──updates──▶ ┐
//!  agent socket ─────▶ ├─▶ CalcGraph ─changes─▶ Dataplane ─apply─▶ kernel
//!  refresh timers ───▶ ┘                              │
//!                                     Status ◀────────┘ (health, WaitProgrammed)
//! ```
//!
//! Nothing touches the kernel before the syncer is in sync: the first apply then sees the
//! whole cluster and sweeps what an earlier run left behind. A FelixConfiguration change that
//! alters how rules are rendered rebuilds the dataplane in place (Felix restarts itself).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use calico_api::kinds::FelixConfigurationSpec;
use calico_api::{AnyResource, Kind};
use calico_datastore::client::decode_kv;
use calico_datastore::syncer::{SyncEvent, SyncStatus, SyncUpdate, Syncer, SyncerConfig};
use calico_datastore::{Datastore, Key, KeyPrefix};
use calico_proto::agent::agent_server::AgentServer;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentCmd, AgentService, Status};
use crate::calc::{CalcGraph, EndpointId};
use crate::config::{FelixConfig, ReportingConfig, Sources};
use crate::dataplane::ALL_INTERFACES;
use crate::dataplane::exec::{Exec, SystemExec};
use crate::dataplane::ifacemonitor::IfaceEvent;
use crate::dataplane::iptables::detect_backend;
use crate::dataplane::{Dataplane, DataplaneConfig};
use crate::generic::Features;
use crate::metrics::Metrics;
use crate::status::{DOWN, ERROR, StatusMsg, UP};

/// How felixd is started.
#[derive(Debug, Clone)]
pub struct Options {
    pub hostname: String,
    /// Where the agent API listens (none: not served).
    pub agent_socket: Option<PathBuf>,
    /// `FELIX_*` variables (upper-cased names).
    pub env: std::collections::HashMap<String, String>,
    /// Serve health and metrics even if the configuration does not enable them (tests).
    pub http_override: Option<std::net::SocketAddr>,
    /// Where the pod MTU is written for the CNI plugin.
    pub mtu_file: Option<PathBuf>,
}

/// The kinds the calculation needs.
fn prefixes() -> Vec<KeyPrefix> {
    let mut p: Vec<KeyPrefix> = [
        Kind::Tier,
        Kind::NetworkPolicy,
        Kind::GlobalNetworkPolicy,
        Kind::Profile,
        Kind::WorkloadEndpoint,
        Kind::HostEndpoint,
        Kind::NetworkSet,
        Kind::GlobalNetworkSet,
        Kind::IpPool,
        Kind::Node,
        Kind::FelixConfiguration,
    ]
    .into_iter()
    .map(KeyPrefix::kind)
    .collect();
    p.push(KeyPrefix::Blocks { ip_version: None });
    p
}

/// The main loop's state.
struct Loop {
    opts: Options,
    calc: CalcGraph,
    felix_configs: BTreeMap<String, FelixConfigurationSpec>,
    config: Option<FelixConfig>,
    /// What the rules depend on besides the configuration: VXLAN on, this node's tunnel
    /// address.
    derived: Option<(bool, Option<std::net::IpAddr>)>,
    dataplane: Option<Dataplane>,
    ds: Arc<dyn Datastore>,
    /// A tunnel address allocation in progress.
    tunnel_task: Option<tokio::task::JoinHandle<()>>,
    exec: Arc<dyn Exec>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    in_sync: bool,
    in_sync_at: Option<Instant>,
    started: Instant,
    /// When the last apply failed, and how long to wait before the next attempt.
    backoff: Duration,
    retry_at: Option<tokio::time::Instant>,
    next_iptables_refresh: tokio::time::Instant,
    next_ipsets_refresh: tokio::time::Instant,
    next_routes_refresh: tokio::time::Instant,
    /// Interfaces of this namespace and whether each is up (from the interface monitor).
    iface_up: HashMap<String, bool>,
    /// Endpoint statuses last handed to the reporter.
    reported: HashMap<Key, &'static str>,
    reported_in_sync: bool,
    /// Something statuses depend on changed since they were last worked out.
    status_dirty: bool,
    /// The interface monitor has listed the interfaces (and not failed since).
    ifaces_synced: bool,
    status_tx: mpsc::UnboundedSender<StatusMsg>,
    reporting_tx: watch::Sender<Option<ReportingConfig>>,
    /// Turns true at the dataplane's first programming (liveness reports start then).
    ready_tx: watch::Sender<bool>,
}

impl Loop {
    fn on_update(&mut self, u: SyncUpdate) {
        self.metrics.calc_updates.inc();
        match u {
            SyncUpdate::Put(kv) => match &kv.key {
                Key::Resource {
                    kind,
                    namespace,
                    name,
                } => match decode_kv(*kind, &kv) {
                    Ok(AnyResource::FelixConfiguration(fc)) => {
                        self.felix_configs.insert(name.clone(), (*fc.spec).clone());
                    }
                    Ok(r) => self.calc.put(&r),
                    Err(e) => {
                        self.calc
                            .invalid(*kind, namespace.as_deref(), name, &e.to_string());
                    }
                },
                Key::Block { cidr } => self.calc.put_block(*cidr, &kv.value),
                _ => {}
            },
            SyncUpdate::Delete { key, .. } => match &key {
                Key::Resource {
                    kind,
                    namespace,
                    name,
                } => {
                    if *kind == Kind::FelixConfiguration {
                        self.felix_configs.remove(name);
                    } else {
                        self.calc.delete(*kind, namespace.as_deref(), name);
                    }
                }
                Key::Block { cidr } => self.calc.delete_block(cidr),
                _ => {}
            },
        }
    }

    fn on_agent(&mut self, cmd: AgentCmd) {
        match cmd {
            AgentCmd::Put(wep, done) => {
                self.calc.put(&AnyResource::WorkloadEndpoint(wep));
                let _ = done.send(());
            }
            AgentCmd::Remove { namespace, name } => {
                self.calc
                    .delete(Kind::WorkloadEndpoint, Some(&namespace), &name);
            }
        }
    }

    fn on_iface(&mut self, ev: IfaceEvent) {
        let mut appeared: Vec<String> = Vec::new();
        match ev {
            IfaceEvent::Snapshot(now) => {
                self.status_dirty |= !self.ifaces_synced || now != self.iface_up;
                appeared.extend(
                    now.keys()
                        .filter(|n| !self.iface_up.contains_key(*n))
                        .cloned(),
                );
                self.iface_up = now;
                self.ifaces_synced = true;
            }
            IfaceEvent::Link { name, up } => match self.iface_up.insert(name.clone(), up) {
                None => {
                    appeared.push(name);
                    self.status_dirty = true;
                }
                Some(was) => self.status_dirty |= was != up,
            },
            IfaceEvent::Gone { name } => {
                self.status_dirty |= self.iface_up.remove(&name).is_some();
            }
            IfaceEvent::Addresses => {
                if let Some(dp) = self.dataplane.as_mut() {
                    dp.host_addresses_changed();
                }
            }
            // Statuses stand as they are until the monitor has listed the interfaces again.
            IfaceEvent::Lost => self.ifaces_synced = false,
        }
        if let Some(dp) = self.dataplane.as_mut() {
            for name in &appeared {
                dp.interface_appeared(name);
            }
        }
    }

    /// Hands the reporter the statuses that changed: a workload endpoint is up when it is
    /// programmed and its interface is up; a host endpoint when every interface it was
    /// resolved to is up, in error when none matched (Felix's rules).
    fn report_endpoint_statuses(&mut self) {
        let (Some(cfg), Some(dp)) = (&self.config, &self.dataplane) else {
            return;
        };
        if !cfg.reporting.endpoints_enabled {
            // Turned off: the reporter forgets too; turned on again, everything is sent anew.
            self.reported.clear();
            self.reported_in_sync = false;
            self.status_dirty = true;
            return;
        }
        // Not before the first programming, nor while the interfaces are unknown (every
        // endpoint would look down).
        if !self.status_dirty
            || !self.ifaces_synced
            || !self.status.programmed_once.load(Ordering::Relaxed)
        {
            return;
        }
        self.status_dirty = false;
        let region = calico_datastore::key::region_string(&cfg.reporting.region);
        let hostname = &self.opts.hostname;
        let up = |iface: &str| self.iface_up.get(iface).copied().unwrap_or(false);
        let mut want: HashMap<Key, &'static str> = HashMap::with_capacity(self.reported.len());
        for le in self.calc.local_endpoints() {
            match &le.id {
                EndpointId::Workload { namespace, name } => {
                    let Some([_, orch, workload, endpoint]) =
                        calico_api::names::workload_endpoint_name_segments(name)
                    else {
                        continue;
                    };
                    let key = Key::WorkloadEndpointStatus {
                        region: region.clone(),
                        hostname: hostname.clone(),
                        orchestrator: orch,
                        workload: format!("{namespace}/{workload}"),
                        endpoint,
                    };
                    if dp.is_programmed(&le.id) {
                        want.insert(key, if up(&le.iface) { UP } else { DOWN });
                    } else if let Some(prev) = self.reported.get(&key) {
                        // Being reprogrammed: the last status stands until that is done.
                        want.insert(key, prev);
                    }
                }
                EndpointId::Host { name } => {
                    // An interface that does not exist resolves nothing (Felix resolves
                    // against the interfaces it sees).
                    let ifaces: Vec<&str> = dp
                        .host_endpoint_interfaces(name)
                        .into_iter()
                        .filter(|i| *i == ALL_INTERFACES || self.iface_up.contains_key(*i))
                        .collect();
                    let status = if ifaces.is_empty() {
                        ERROR
                    } else if ifaces
                        .iter()
                        .filter(|i| **i != ALL_INTERFACES)
                        .all(|i| up(i))
                    {
                        UP
                    } else {
                        DOWN
                    };
                    let key = Key::HostEndpointStatus {
                        hostname: hostname.clone(),
                        endpoint: name.clone(),
                    };
                    want.insert(key, status);
                }
            }
        }
        for (key, status) in &want {
            if self.reported.get(key) != Some(status) {
                let _ = self
                    .status_tx
                    .send(StatusMsg::Endpoint(key.clone(), Some(status)));
            }
        }
        for key in self.reported.keys() {
            if !want.contains_key(key) {
                let _ = self.status_tx.send(StatusMsg::Endpoint(key.clone(), None));
            }
        }
        self.reported = want;
        if !self.reported_in_sync {
            self.reported_in_sync = true;
            let _ = self.status_tx.send(StatusMsg::InSync);
        }
    }

    fn resolve_config(&self) -> FelixConfig {
        let node = self
            .felix_configs
            .get(&format!("node.{}", self.opts.hostname));
        let global = self.felix_configs.get("default");
        let (cfg, problems) = FelixConfig::resolve(&Sources {
            env: self.opts.env.clone(),
            node,
            global,
        });
        for p in problems {
            tracing::warn!(problem = %p, "ignoring a configuration value");
        }
        cfg
    }

    /// What the network adds to the rules' configuration.
    fn derived(&self) -> (bool, Option<std::net::IpAddr>) {
        let net = self.calc.network();
        let on = net.vxlan_enabled(4);
        let tunnel = net
            .nodes
            .get(&self.opts.hostname)
            .and_then(|n| n.vxlan_tunnel_v4)
            .filter(|_| on);
        (on, tunnel)
    }

    /// Builds (or rebuilds, when the configuration changed) the dataplane.
    fn ensure_dataplane(&mut self) {
        let cfg = self.resolve_config();
        let derived = self.derived();
        if self.dataplane.is_some()
            && self.config.as_ref().is_some_and(|c| c.same_dataplane(&cfg))
            && self.derived == Some(derived)
        {
            // Reporting settings take effect without touching the dataplane.
            let changed = self.reporting_tx.send_if_modified(|r| {
                let changed = r.as_ref() != Some(&cfg.reporting);
                *r = Some(cfg.reporting.clone());
                changed
            });
            self.status_dirty |= changed;
            self.config = Some(cfg);
            return;
        }
        if self.dataplane.is_some() {
            tracing::info!("configuration changed; re-rendering the dataplane");
        }
        let exec = self.exec.clone();
        let backend = cfg.backend(|| detect_backend(exec.as_ref()));
        let mut rules = cfg.rules_config();
        if cfg.nftables_mode == crate::config::NftablesMode::Auto {
            // Felix's Auto: nftables if kube-proxy runs in nftables mode (its table exists).
            rules.nftables = self
                .exec
                .run("nft", &["list", "tables"], None)
                .map(|out| out.lines().any(|l| l.trim().ends_with(" kube-proxy")))
                .unwrap_or(false);
        }
        if rules.nftables {
            tracing::info!(
                ipv6 = cfg.ipv6_support,
                "programming nftables (table calico)"
            );
        } else {
            tracing::info!(
                backend = backend.as_str(),
                ipv6 = cfg.ipv6_support,
                "programming iptables"
            );
        }
        rules.vxlan_enabled = derived.0;
        rules.vxlan_tunnel_address = derived.1;
        let dcfg = DataplaneConfig {
            rules,
            ipv6: cfg.ipv6_support,
            backend,
            features: Features::default(),
            insert_mode: !cfg.chain_insert_mode_append,
            hostname: self.opts.hostname.clone(),
            netlink: true,
            mtu_file: self.opts.mtu_file.clone(),
        };
        crate::dataplane::interfaces::enable_forwarding(cfg.ipv6_support);
        let t = Instant::now();
        let mut dp = Dataplane::new(dcfg, self.exec.clone());
        let all = self.calc.full_changes();
        dp.on_changes(&self.calc, &all);
        tracing::info!(
            secs = t.elapsed().as_secs_f64(),
            endpoints = all.endpoints.len(),
            policies = all.policies.len(),
            "rendered the whole dataplane"
        );
        let now = tokio::time::Instant::now();
        self.next_iptables_refresh = now + cfg.iptables_refresh_interval;
        self.next_ipsets_refresh = now + cfg.ipsets_refresh_interval;
        self.next_routes_refresh = now + cfg.route_refresh_interval;
        self.reporting_tx.send_replace(Some(cfg.reporting.clone()));
        self.config = Some(cfg);
        self.derived = Some(derived);
        self.dataplane = Some(dp);
        self.retry_at = None;
    }

    /// Takes the graph's changes to the dataplane and writes them, if it is time.
    async fn step(&mut self) {
        self.step_dataplane().await;
        self.report_endpoint_statuses();
    }

    async fn step_dataplane(&mut self) {
        self.status.beat();
        if !self.in_sync {
            return;
        }
        self.ensure_dataplane();
        let Some(dp) = self.dataplane.as_mut() else {
            return;
        };
        let t = Instant::now();
        let ch = self.calc.take_changes();
        self.status_dirty |= !ch.is_empty();
        let calc_secs = t.elapsed().as_secs_f64();
        dp.on_changes(&self.calc, &ch);
        let render_secs = t.elapsed().as_secs_f64() - calc_secs;
        if calc_secs + render_secs > 0.2 {
            tracing::info!(
                calc_secs,
                render_secs,
                endpoints = ch.endpoints.len(),
                policies = ch.policies.len(),
                "calculated and rendered"
            );
        }
        if ch.network {
            self.maybe_allocate_tunnel();
        }
        let Some(dp) = self.dataplane.as_mut() else {
            return;
        };
        {
            let mut known = self.status.known.lock().unwrap_or_else(|e| e.into_inner());
            for id in &ch.endpoints {
                if self.calc.local_endpoint(id).is_some() {
                    known.insert(id.clone());
                } else {
                    known.remove(id);
                }
            }
        }
        let now = tokio::time::Instant::now();
        if let Some(cfg) = &self.config {
            if now >= self.next_iptables_refresh {
                dp.invalidate_tables();
                self.next_iptables_refresh = now + cfg.iptables_refresh_interval;
            }
            if now >= self.next_ipsets_refresh {
                dp.invalidate_ipsets();
                self.next_ipsets_refresh = now + cfg.ipsets_refresh_interval;
            }
            if now >= self.next_routes_refresh {
                dp.invalidate_routes();
                self.next_routes_refresh = now + cfg.route_refresh_interval;
            }
        }
        if !dp.needs_apply() || self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let t0 = Instant::now();
        match dp.apply().await {
            Ok(summary) => {
                let secs = t0.elapsed().as_secs_f64();
                self.metrics.record_apply(&summary, secs);
                self.metrics.chains.set(dp.chain_count() as i64);
                if secs > 0.5 {
                    tracing::info!(?summary, secs, "dataplane updated (slow)");
                } else {
                    tracing::debug!(?summary, secs, "dataplane updated");
                }
                self.backoff = Duration::from_millis(100);
                self.retry_at = None;
                // Endpoints this apply programmed may now be reported up.
                self.status_dirty = true;
                if !self.status.programmed_once.swap(true, Ordering::Relaxed) {
                    self.ready_tx.send_replace(true);
                    let since = self.started.elapsed();
                    let programming = self.in_sync_at.map(|t| t.elapsed()).unwrap_or_default();
                    self.metrics.initial_resync_time.set(since.as_secs_f64());
                    self.metrics
                        .first_programming_time
                        .set(programming.as_secs_f64());
                    tracing::info!(
                        ?since,
                        ?programming,
                        "dataplane programmed for the first time"
                    );
                }
                *self
                    .status
                    .dataplane_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                *self
                    .status
                    .encap_problem
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = dp.encap_problem();
                let programmed: HashSet<EndpointId> = self
                    .calc
                    .local_endpoints()
                    .filter(|le| dp.is_programmed(&le.id))
                    .map(|le| le.id.clone())
                    .collect();
                *self
                    .status
                    .programmed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = programmed;
                self.status.applied.send_modify(|g| *g += 1);
            }
            Err(e) => {
                self.metrics.dataplane_failures.inc();
                tracing::error!(error = %e, retry_in = ?self.backoff, "dataplane update failed");
                *self
                    .status
                    .dataplane_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
            }
        }
        let counts = self.calc.counts();
        self.metrics.record_counts(&counts);
        self.metrics
            .invalid_resources
            .set(self.calc.invalid_resources() as i64);
        self.status
            .local_endpoints
            .store(counts.local_endpoints as u64, Ordering::Relaxed);
        self.status
            .active_policies
            .store(counts.active_policies as u64, Ordering::Relaxed);
    }

    /// With VXLAN pools, this node needs a tunnel address from one of them (Calico's
    /// calico-node allocates it at start; felixd does it here): allocated through IPAM under
    /// Calico's handle and written to the Node resource with the node's VTEP MAC.
    fn maybe_allocate_tunnel(&mut self) {
        if self.tunnel_task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let net = self.calc.network();
        let pools: Vec<String> = net
            .pools
            .values()
            .filter(|p| {
                p.vxlan != calico_api::kinds::EncapMode::Never
                    && p.cidr.addr().is_ipv4()
                    && !p.disabled
            })
            .map(|p| p.cidr.to_string())
            .collect();
        let Some(me) = net.nodes.get(&self.opts.hostname) else {
            return;
        };
        let current_ok = me.vxlan_tunnel_v4.is_some_and(|ip| {
            net.pools
                .values()
                .any(|p| p.vxlan != calico_api::kinds::EncapMode::Never && p.cidr.contains(&ip))
        });
        if pools.is_empty() || (current_ok && me.vxlan_mac_v4.is_some()) {
            return;
        }
        let (ds, host) = (self.ds.clone(), self.opts.hostname.clone());
        self.tunnel_task = Some(tokio::spawn(async move {
            if let Err(e) = allocate_vxlan_tunnel(ds, &host, pools).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot set up this node's VXLAN tunnel address yet; will retry"
                );
            }
        }));
    }

    /// When the loop must wake up on its own.
    fn next_wake(&self) -> tokio::time::Instant {
        let mut t = tokio::time::Instant::now() + Duration::from_secs(10);
        if self.dataplane.is_some() {
            t = t
                .min(self.next_iptables_refresh)
                .min(self.next_ipsets_refresh)
                .min(self.next_routes_refresh);
            // Unknown routes on workload interfaces are re-checked after their grace period.
            t = t.min(tokio::time::Instant::now() + Duration::from_secs(2));
            if let Some(r) = self.dataplane.as_ref().and_then(|dp| dp.next_retry()) {
                // Never before a failed apply's backoff ends (no apply runs until then), and
                // never in the past: a due retry must not spin the loop.
                let r = tokio::time::Instant::from_std(r);
                let r = self.retry_at.map_or(r, |ra| r.max(ra));
                t = t.min(r.max(tokio::time::Instant::now() + Duration::from_millis(1)));
            }
        }
        if let Some(r) = self.retry_at {
            t = t.min(r);
        }
        t
    }
}

#[derive(Clone)]
struct HttpState {
    status: Arc<Status>,
    metrics: Arc<Metrics>,
}

async fn liveness(State(s): State<HttpState>) -> (StatusCode, String) {
    if s.status.live() {
        (StatusCode::OK, "live\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the main loop has stalled\n".into(),
        )
    }
}

async fn readiness(State(s): State<HttpState>) -> (StatusCode, String) {
    match s.status.ready() {
        (true, _) => (StatusCode::OK, "ready\n".into()),
        (false, why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics(State(s): State<HttpState>) -> String {
    s.metrics.render()
}

async fn serve_http(
    addr: std::net::SocketAddr,
    state: HttpState,
    routes: &[&'static str],
    stop: CancellationToken,
) -> Result<()> {
    let mut app = Router::new();
    for r in routes {
        app = match *r {
            "/liveness" => app.route("/liveness", get(liveness)),
            "/readiness" => app.route("/readiness", get(readiness)),
            _ => app.route("/metrics", get(metrics)),
        };
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} for {}", routes.join(", ")))?;
    tracing::info!(%addr, ?routes, "serving HTTP");
    axum::serve(listener, app.with_state(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .context("HTTP server")
}

fn http_addr(host: &str, port: u16) -> Result<std::net::SocketAddr> {
    let host = match host {
        "" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        h => h,
    };
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .with_context(|| format!("{host}:{port} is not an address felixd can listen on"))
}

/// Runs felixd until `stop` is cancelled.
pub async fn run(ds: Arc<dyn Datastore>, opts: Options, stop: CancellationToken) -> Result<()> {
    let ds_for_loop = ds.clone();
    let status = Arc::new(Status::default());
    let metrics = Arc::new(Metrics::new());
    let (sync_tx, mut sync_rx) = mpsc::channel::<SyncEvent>(64);
    let syncer = Syncer::new(ds, SyncerConfig::new(prefixes()));
    tokio::spawn(syncer.run(sync_tx));
    metrics.resync_state.set(1);

    let (agent_tx, mut agent_rx) = mpsc::channel::<AgentCmd>(256);
    if let Some(path) = &opts.agent_socket {
        let listener = calico_proto::endpoint::bind_unix(path)?;
        let svc = AgentServer::new(AgentService {
            hostname: opts.hostname.clone(),
            tx: agent_tx.clone(),
            status: status.clone(),
        });
        let stop = stop.clone();
        let path = path.clone();
        tracing::info!(socket = %path.display(), "serving the agent API");
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "agent API server stopped");
            }
            let _ = std::fs::remove_file(&path);
        });
    }
    drop(agent_tx);

    let (status_tx, status_rx) = mpsc::unbounded_channel();
    let (reporting_tx, reporting_rx) = watch::channel(None);
    let (ready_tx, ready_rx) = watch::channel(false);
    tokio::spawn(crate::status::run_endpoint_reporter(
        crate::status::EndpointReporter::new(ds_for_loop.clone(), opts.hostname.clone()),
        reporting_rx.clone(),
        status_rx,
        stop.clone(),
    ));
    tokio::spawn(crate::status::run_process_reporter(
        ds_for_loop.clone(),
        opts.hostname.clone(),
        reporting_rx,
        ready_rx,
        Instant::now(),
        stop.clone(),
    ));
    let (iface_tx, mut iface_rx) = mpsc::unbounded_channel();
    {
        let stop = stop.clone();
        tokio::spawn(crate::dataplane::ifacemonitor::run(iface_tx, stop));
    }

    let now = tokio::time::Instant::now();
    let mut lp = Loop {
        calc: CalcGraph::new(opts.hostname.clone()),
        opts,
        felix_configs: BTreeMap::new(),
        config: None,
        derived: None,
        dataplane: None,
        ds: ds_for_loop,
        tunnel_task: None,
        exec: Arc::new(SystemExec::default()),
        status: status.clone(),
        metrics: metrics.clone(),
        in_sync: false,
        in_sync_at: None,
        started: Instant::now(),
        backoff: Duration::from_millis(100),
        retry_at: None,
        next_iptables_refresh: now,
        next_ipsets_refresh: now,
        next_routes_refresh: now,
        iface_up: HashMap::new(),
        reported: HashMap::new(),
        reported_in_sync: false,
        status_dirty: true,
        ifaces_synced: false,
        status_tx,
        reporting_tx,
        ready_tx,
    };
    let mut iface_open = true;
    let mut http_started = false;
    let mut agent_open = true;
    loop {
        // Health and metrics follow the configuration, so they start once it is known.
        if lp.in_sync && !http_started {
            http_started = true;
            let cfg = lp.resolve_config();
            let state = HttpState {
                status: status.clone(),
                metrics: metrics.clone(),
            };
            let mut servers: Vec<(std::net::SocketAddr, Vec<&'static str>)> = Vec::new();
            if let Some(addr) = lp.opts.http_override {
                servers.push((addr, vec!["/liveness", "/readiness", "/metrics"]));
            } else {
                if cfg.health_enabled {
                    servers.push((
                        http_addr(&cfg.health_host, cfg.health_port)?,
                        vec!["/liveness", "/readiness"],
                    ));
                }
                if cfg.prometheus_metrics_enabled {
                    servers.push((
                        http_addr(&cfg.prometheus_metrics_host, cfg.prometheus_metrics_port)?,
                        vec!["/metrics"],
                    ));
                }
            }
            for (addr, routes) in servers {
                let (state, stop) = (state.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_http(addr, state, &routes, stop).await {
                        tracing::error!(error = format!("{e:#}"), "health/metrics endpoint failed");
                    }
                });
            }
        }
        let wake = lp.next_wake();
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = sync_rx.recv() => {
                let Some(ev) = ev else {
                    anyhow::bail!("the datastore syncer stopped");
                };
                lp_handle_sync(&mut lp, ev, &metrics);
                // Take whatever else is waiting, so a burst is applied once.
                for _ in 0..1000 {
                    match sync_rx.try_recv() {
                        Ok(ev) => lp_handle_sync(&mut lp, ev, &metrics),
                        Err(_) => break,
                    }
                }
            }
            cmd = agent_rx.recv(), if agent_open => match cmd {
                Some(cmd) => {
                    lp.on_agent(cmd);
                    while let Ok(cmd) = agent_rx.try_recv() {
                        lp.on_agent(cmd);
                    }
                }
                None => agent_open = false,
            },
            ev = iface_rx.recv(), if iface_open => match ev {
                Some(ev) => {
                    lp.on_iface(ev);
                    while let Ok(ev) = iface_rx.try_recv() {
                        lp.on_iface(ev);
                    }
                }
                None => iface_open = false,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
        lp.step().await;
    }
    tracing::info!(
        "felixd stopping; the kernel keeps its rules (fail closed) until the next start"
    );
    Ok(())
}

/// Allocates (or finds) this node's VXLAN tunnel address and records it, with the VTEP MAC,
/// in the Node resource.
async fn allocate_vxlan_tunnel(
    ds: Arc<dyn Datastore>,
    host: &str,
    pools: Vec<String>,
) -> Result<()> {
    use calico_api::resource::Node;
    let ipam = calico_ipam::Ipam::new(ds.clone());
    let handle = format!("vxlan-tunnel-addr-{host}");
    let in_pools = |ip: &std::net::IpAddr| {
        pools
            .iter()
            .filter_map(|p| p.parse::<ipnet::IpNet>().ok())
            .any(|p| p.contains(ip))
    };
    let existing = ipam
        .ips_by_handle(&handle)
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|ip| ip.is_ipv4() && in_pools(ip));
    let ip = match existing {
        Some(ip) => ip,
        None => {
            let mut args = calico_ipam::AutoAssignArgs::new(host, &handle, 1, 0);
            args.attrs = [
                ("node".to_string(), host.to_string()),
                ("type".to_string(), "vxlanTunnelAddress".to_string()),
            ]
            .into();
            args.ipv4_pools = pools.clone();
            args.use_ = calico_ipam::IpUse::Tunnel;
            let (v4, _) = ipam
                .auto_assign(&args)
                .await
                .context("allocating a VXLAN tunnel address")?;
            v4.ips
                .first()
                .map(|n| n.addr())
                .context("IPAM had no address left in the VXLAN pools for the tunnel")?
        }
    };
    let rc = calico_datastore::ResourceClient::new(ds);
    let mut node: Node = rc.get(None, host).await.with_context(|| {
        format!("reading Node {host} (the node must be registered, as calico-node does)")
    })?;
    let mac = crate::calc::network::vtep_mac_for_host(host, 4);
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    if node.spec.ipv4_vxlan_tunnel_addr == ip.to_string()
        && !node.spec.vxlan_tunnel_mac_addr.is_empty()
    {
        return Ok(());
    }
    node.spec.ipv4_vxlan_tunnel_addr = ip.to_string();
    if node.spec.vxlan_tunnel_mac_addr.is_empty() {
        node.spec.vxlan_tunnel_mac_addr = mac;
    }
    rc.update(node)
        .await
        .with_context(|| format!("recording the tunnel address in Node {host}"))?;
    tracing::info!(%ip, "this node's VXLAN tunnel address");
    Ok(())
}

fn lp_handle_sync(lp: &mut Loop, ev: SyncEvent, metrics: &Metrics) {
    match ev {
        SyncEvent::Status(s) => {
            metrics.resync_state.set(match s {
                SyncStatus::WaitForDatastore => 1,
                SyncStatus::ResyncInProgress => 2,
                SyncStatus::InSync => 3,
            });
            if s == SyncStatus::InSync && !lp.in_sync {
                tracing::info!("in sync with the datastore");
                lp.in_sync = true;
                lp.in_sync_at = Some(Instant::now());
                lp.status.in_sync.store(true, Ordering::Relaxed);
            }
        }
        SyncEvent::Updates(us) => {
            for u in us {
                lp.on_update(u);
            }
        }
    }
}
