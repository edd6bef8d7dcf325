//! The daemon: one task owns the Calico configuration, the RIB, every peer's Adj-RIB-Out
//! and the peers' status; sessions, the listener, the kernel writer and the control API
//! talk to it through channels.
//!
//! ```text
//!  etcd ──syncer──▶ ┐                              ┌──▶ session task ×N ──▶ TCP (peers)
//!  listener ──────▶ ├──▶ daemon loop (owner) ──────┤
//!  session events ─▶ │   ClusterState, intent,      └──▶ kernel writer ──▶ rtnetlink
//!  control queries ▶ ┘   Rib, Adj-RIB-Out per peer
//! ```
//!
//! Input is decided per round: the RIB stores what a batch of UPDATEs brings and decides
//! each prefix they touched once, before the flush (or every 4,096 prefixes per peer whose
//! UPDATEs wait, up to eight), so ten peers sending the same table cost a few decisions per
//! prefix, not ten.
//!
//! Output to peers is coalesced per destination: each best-path change puts the prefix's
//! RIB slot in every established peer's queue, once however often it changes, and when the
//! peer's session has room a slice of the queue is exported from the RIB as it is then, so
//! only the latest state goes on the wire. Queues, Adj-RIB-Out and the kernel's bookkeeping
//! are indexed by slot ([`DestId`]), not hashed by prefix; a slot whose prefix lost its last
//! path is freed once no peer still has to hear of it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::adj_out::AdjRibOut;
use crate::dirty::{DirtyQueue, SlotBits};
use anyhow::{Context, Result};
use calico_bgp::fsm::{DownReason, GracefulRestartConfig, Negotiated, SessionConfig, State};
use calico_bgp::rib::{Change, DestId, ExportPolicy, PeerExport, PeerId, PeerInfo, Rib, RibConfig};
use calico_bgp::types::{AttrEdits, Attrs, Family, FastMap, Nlri, Origin};
use calico_bgp::wire::{self, AddPathMode, Notification, RouteRefresh, UpdatePacker};
use calico_datastore::Datastore;
use calico_datastore::syncer::{SyncEvent, SyncStatus, Syncer, SyncerConfig};
use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::calico::{self, BgpIntent, ClusterState, FilterVerdict, KernelAction, PeerIntent};
use crate::control::{self, PeerStatus, Query, RouteView};
use crate::kernel::{self, KernelConfig, KernelHandle, NextHop};
use crate::metrics::Metrics;
use crate::secrets::{ListenerKeys, Password, Passwords, SecretStore};
use crate::session::{self, Endpoint, PeerKey, SessionCommand, SessionEvent, SessionHandle};
use crate::sockopt;

/// Prefixes exported to one peer per flush: bounded so the loop stays responsive (and
/// keepalives flow) while a full table goes out.
const FLUSH_SLICE: usize = 20_000;

/// Slots a peer takes at a time within its slice before the next peer takes the same ones
/// (see `flush`): small enough that a step's prefixes and their paths stay cached.
const FLUSH_STEP: usize = 1024;

/// Prefixes edited by one sender's UPDATEs before their decisions run anyway: small enough
/// that its round of changes stays a few hundred kilobytes (bench-bgp A's B/path). With
/// several senders the batch grows with them, up to `DECIDE_SENDERS` times (a few megabytes
/// held): ten peers sending the same table drift tens of thousands of prefixes apart, and at
/// 4,096 each prefix was decided five times as their paths came in (bench-bgp B), where the
/// paths held for the decision grow with the senders anyway.
const DECIDE_BATCH: usize = 4096;
const DECIDE_SENDERS: usize = 8;

/// How soon a peer whose session had no room for more is tried again.
const BLOCKED_RETRY: Duration = Duration::from_millis(2);

/// How often the timers run (graceful-restart stale routes, kernel resync, password files,
/// the first reconcile) and readiness and the gauges are brought up to date: every timer
/// counts in seconds. At 50 ms the wake-ups alone kept an idle birdd at 0.7 % of a CPU.
const TICK: Duration = Duration::from_millis(500);

/// Whether some peer still waits for prefixes after a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backlog {
    None,
    /// A peer with queued prefixes whose session can take them.
    Ready,
    /// Every peer with queued prefixes has a full session.
    Blocked,
}

/// How often the kernel's routes are re-read and repaired if someone changed them.
const KERNEL_RESYNC: Duration = Duration::from_secs(10);
/// Routes handed to the kernel writer ahead of it. The rest wait as bits in
/// `kernel_dirty` (a bit a slot, not a route): a 200k-route table written at once held
/// 10 MB of pending routes, and the memory stayed with the process.
const KERNEL_AHEAD: usize = 8192;

/// How birdd runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodename: String,
    /// The control API for `calicoctl node status`; `None` = not served.
    pub control_socket: Option<std::path::PathBuf>,
    /// /liveness, /readiness and /metrics.
    pub http_listen: Option<SocketAddr>,
    /// The kernel route protocol (BIRD's 12, so Calico's tooling recognises the routes).
    pub kernel_protocol: u8,
    /// Override BGPConfiguration's listen port (tests run several daemons on one host).
    pub listen_port: Option<u16>,
    /// After this long without every peer's End-of-RIB, routes a previous run left in the
    /// kernel and nobody re-announced are removed anyway.
    pub reconcile_after: Duration,
    /// Where Kubernetes secrets holding BGP passwords are mounted (`<dir>/<name>/<key>`).
    pub secrets_dir: std::path::PathBuf,
}

/// How often passwords are read again (a rotated secret restarts its sessions).
const PASSWORD_CHECK: Duration = Duration::from_secs(10);

/// A peer the daemon runs.
struct Peer {
    key: PeerKey,
    intent: PeerIntent,
    session: SessionHandle,
    state: State,
    since: SystemTime,
    info: String,
    negotiated: Option<Negotiated>,
    /// Adj-RIB-Out: what the peer was last told.
    sent: AdjRibOut,
    /// Prefixes whose export may have changed since the last flush.
    dirty: DirtyQueue,
    /// End-of-RIB still to send after the initial table.
    eor_pending: Vec<Family>,
    /// Families whose End-of-RIB the peer has not sent since it came up.
    eor_awaited: Vec<Family>,
    /// Graceful restart of the peer: stale routes go at this deadline.
    stale_until: Option<(Instant, Vec<Family>)>,
    /// The TCP MD5 key the session was started with.
    password: Option<Password>,
}

impl Peer {
    fn established(&self) -> bool {
        self.state == State::Established
    }
}

struct Daemon {
    opts: Options,
    ds_in_sync: bool,
    cluster: ClusterState,
    intent: Option<BgpIntent>,
    intent_error: Option<String>,
    config_dirty: bool,
    rib: Option<Rib>,
    peers: BTreeMap<PeerKey, Peer>,
    by_name: HashMap<String, PeerKey>,
    next_key: PeerKey,
    /// Routes we originate, as given to the RIB.
    originated: HashMap<IpNet, Arc<Attrs>>,
    kernel: KernelHandle,
    /// Slots whose best route this daemon put in the kernel.
    kernel_routes: SlotBits,
    /// Slots whose kernel route is to be brought to their current best route.
    kernel_dirty: DirtyQueue,
    /// Peers whose UPDATEs wait in the RIB's undecided prefixes (see `DECIDE_BATCH`).
    deciding_for: Vec<PeerKey>,
    /// Static routes to peers that are not on a connected subnet (BGPPeer `reachableBy`):
    /// the peer's address via that gateway. They win over a learned route to the same
    /// address, as BIRD's static routes (preference 200) win over BGP's (100).
    peer_routes: HashMap<IpNet, IpAddr>,
    events_tx: mpsc::Sender<SessionEvent>,
    listener: Option<Listener>,
    passwords: Passwords,
    next_password_check: Instant,
    accepted_tx: mpsc::Sender<(tokio::net::TcpStream, SocketAddr)>,
    started: Instant,
    started_wall: SystemTime,
    reconciled: bool,
    /// When the kernel is next compared with what we want (drift repair).
    next_resync: Instant,
    /// The first OPEN of each session after this process started says "restarting".
    restarting: bool,
    metrics: Arc<Metrics>,
}

/// Runs birdd until `stop` is cancelled.
pub async fn run(ds: Arc<dyn Datastore>, opts: Options, stop: CancellationToken) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let (sync_tx, mut sync_rx) = mpsc::channel::<SyncEvent>(64);
    tokio::spawn(
        Syncer::new(
            ds,
            SyncerConfig::new(calico::watched_prefixes(&opts.nodename)),
        )
        .run(sync_tx),
    );

    let (kernel, _kernel_task) = kernel::spawn(KernelConfig {
        protocol: opts.kernel_protocol,
        ..KernelConfig::default()
    })
    .context("starting the kernel route writer")?;

    let (query_tx, mut query_rx) = mpsc::channel::<Query>(16);
    let ready = control::Readiness::default();
    if let Some(path) = &opts.control_socket {
        control::serve_grpc(path, query_tx.clone(), stop.clone())?;
    }
    if let Some(addr) = opts.http_listen {
        control::serve_http(addr, ready.clone(), metrics.clone(), stop.clone()).await?;
    }

    // Short, so that decoded UPDATEs wait in the sockets rather than in memory when the loop is
    // behind (each holds up to ~1,000 prefixes).
    let (events_tx, mut events_rx) = mpsc::channel::<SessionEvent>(32);
    let (accepted_tx, mut accepted_rx) = mpsc::channel(16);
    let nodename = opts.nodename.clone();
    let secrets = SecretStore::new(opts.secrets_dir.clone());
    let mut d = Daemon {
        opts,
        ds_in_sync: false,
        cluster: ClusterState::for_node(&nodename),
        intent: None,
        intent_error: None,
        config_dirty: false,
        rib: None,
        peers: BTreeMap::new(),
        by_name: HashMap::new(),
        next_key: 1,
        originated: HashMap::new(),
        kernel,
        kernel_routes: SlotBits::default(),
        kernel_dirty: DirtyQueue::default(),
        deciding_for: Vec::new(),
        peer_routes: HashMap::new(),
        events_tx,
        listener: None,
        passwords: Passwords::new(secrets),
        next_password_check: Instant::now() + PASSWORD_CHECK,
        accepted_tx,
        started: Instant::now(),
        started_wall: SystemTime::now(),
        reconciled: false,
        next_resync: Instant::now() + KERNEL_RESYNC,
        restarting: true,
        metrics,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backlog = Backlog::None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = sync_rx.recv() => match ev {
                Some(ev) => d.sync_event(ev),
                None => anyhow::bail!("the datastore syncer stopped"),
            },
            Some(ev) = events_rx.recv() => {
                d.session_event(ev);
                // Take whatever else is already waiting before flushing, so bursts coalesce.
                // (Flushing every 20,000 changes instead halved one-peer convergence but made
                // a ten-sender withdrawal four times slower: bench-bgp B.)
                for _ in 0..256 {
                    match events_rx.try_recv() {
                        Ok(ev) => d.session_event(ev),
                        Err(_) => break,
                    }
                }
            }
            Some((stream, from)) = accepted_rx.recv() => d.accepted(stream, from),
            Some(q) = query_rx.recv() => d.query(q),
            _ = tick.tick() => {
                d.timers();
                ready.set(d.readiness());
            }
            // A peer still has prefixes queued past this round's slice: go on once the
            // other tasks had their turn, or shortly when its session is full (without
            // this it waited for the next event or tick: a tick per slice).
            _ = tokio::task::yield_now(), if backlog == Backlog::Ready => {}
            _ = tokio::time::sleep(BLOCKED_RETRY), if backlog == Backlog::Blocked => {}
        }
        d.decide();
        if d.config_dirty && d.ds_in_sync {
            d.reconfigure().await;
            d.decide();
        }
        d.flush();
        backlog = d.backlog();
    }
    tracing::info!("birdd stopping; routes stay in the kernel for the next run");
    for p in d.peers.values() {
        let _ = p
            .session
            .commands
            .try_send(SessionCommand::Stop(Notification::admin_shutdown()));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

impl Daemon {
    // ===== datastore =====

    fn sync_event(&mut self, ev: SyncEvent) {
        match ev {
            SyncEvent::Status(s) => {
                if s == SyncStatus::InSync && !self.ds_in_sync {
                    tracing::info!("in sync with the datastore");
                    self.ds_in_sync = true;
                    self.config_dirty = true;
                }
            }
            SyncEvent::Updates(updates) => {
                for u in &updates {
                    match self.cluster.apply(u) {
                        Ok(changed) => self.config_dirty |= changed,
                        Err(e) => tracing::warn!(error = %e, "ignoring a datastore value"),
                    }
                }
            }
        }
    }

    async fn reconfigure(&mut self) {
        self.config_dirty = false;
        let intent = match calico::intent(&self.cluster, &self.opts.nodename) {
            Ok(i) => i,
            Err(e) => {
                let msg = e.to_string();
                if self.intent_error.as_deref() != Some(&msg) {
                    tracing::error!(error = %msg, "cannot run BGP with this configuration");
                }
                self.intent_error = Some(msg);
                return;
            }
        };
        self.intent_error = None;
        if self.intent.as_ref() == Some(&intent) {
            return;
        }
        let identity_changed = self.intent.as_ref().is_none_or(|old| {
            old.router_id != intent.router_id
                || old.local_as != intent.local_as
                || old.cluster_id != intent.cluster_id
        });
        if identity_changed {
            // Everything depends on who we are: start the RIB and every session afresh.
            if self.rib.is_some() {
                tracing::info!(router_id = %intent.router_id, asn = intent.local_as,
                    "router id, AS or cluster id changed: restarting every session");
            }
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for k in keys {
                self.remove_peer(k, Notification::other_config_change());
            }
            // The old RIB's withdrawals reach the kernel before its slots mean nothing.
            self.decide();
            self.feed_kernel(true);
            let mut rib = Rib::new(RibConfig {
                router_id: intent.router_id,
                local_as: intent.local_as,
                cluster_id: intent.cluster_id,
            });
            // Each round's UPDATEs are decided together, before the flush (Daemon::decide).
            rib.defer_decisions();
            self.rib = Some(rib);
            // The old RIB's kernel routes are dealt with (removing the peers withdrew them),
            // and no peer is left to export its changes to.
            self.kernel_routes.clear();
            self.originated.clear();
        }
        self.ensure_listener(&intent).await;
        let old_peers: Vec<PeerIntent> = self
            .intent
            .as_ref()
            .filter(|_| !identity_changed)
            .map(|i| i.peers.clone())
            .unwrap_or_default();
        let diff = calico::diff_peers(&old_peers, &intent.peers);
        for p in diff.removed.iter().chain(diff.changed.iter()) {
            if let Some(k) = self.by_name.get(&p.name).copied() {
                self.remove_peer(k, Notification::peer_deconfigured());
            }
        }
        // What else decides where routes go: BGPFilters (import and export), the export
        // policy (pools, blocks, service ranges, communities), the kernel policy.
        let (filters_changed, export_changed, kernel_changed) =
            self.intent.as_ref().map_or((false, false, false), |old| {
                (
                    old.filters != intent.filters,
                    old.export_policy != intent.export_policy,
                    old.kernel_policy != intent.kernel_policy,
                )
            });
        if intent.problems
            != self
                .intent
                .as_ref()
                .map_or(Vec::new(), |i| i.problems.clone())
        {
            for p in &intent.problems {
                tracing::warn!(problem = %p, "skipped in the BGP configuration");
            }
        }
        self.intent = Some(intent);
        for p in diff.added.iter().chain(diff.changed.iter()) {
            let Some(p) = self
                .intent
                .as_ref()
                .and_then(|i| i.peers.iter().find(|x| x.name == p.name))
                .cloned()
            else {
                continue;
            };
            self.add_peer(p);
        }
        // The listener checks the new peers' connections before anything else runs.
        self.sync_listener_keys();
        self.sync_peer_routes();
        self.update_originated();
        if kernel_changed {
            // Which pools birdd programs may differ now: every best route again, as decided.
            self.decide();
            let all = self.ids(&Family::ALL);
            self.kernel_dirty.extend(all);
        }
        if filters_changed || export_changed {
            // Export may now say otherwise about anything: re-evaluate every prefix.
            let all = self.ids(&Family::ALL);
            for p in self.peers.values_mut().filter(|p| p.established()) {
                p.dirty.extend(all.iter().copied());
            }
        }
        if filters_changed {
            // Import filters: routes refused before may now be wanted, and only the peer
            // still has them. Ask for them again (RFC 2918), or reset a peer that cannot
            // resend, as BIRD does.
            let mut reset = Vec::new();
            for p in self.peers.values().filter(|p| p.established()) {
                let Some(n) = &p.negotiated else { continue };
                if n.peer_route_refresh {
                    let msgs = n
                        .families
                        .iter()
                        .map(|f| {
                            wire::encode_route_refresh(&RouteRefresh {
                                family: *f,
                                subtype: 0,
                            })
                        })
                        .collect();
                    tracing::info!(peer = %p.intent.name, "filters changed: asking the peer for its routes again");
                    let _ = p.session.commands.try_send(SessionCommand::Send(msgs));
                } else {
                    reset.push(p.key);
                }
            }
            for k in reset {
                if let Some(p) = self.peers.get(&k) {
                    let intent = p.intent.clone();
                    self.remove_peer(k, Notification::other_config_change());
                    self.add_peer(intent);
                }
            }
        }
    }

    async fn ensure_listener(&mut self, intent: &BgpIntent) {
        let port = self.opts.listen_port.unwrap_or(intent.listen_port);
        let ip = intent
            .bind_address
            .unwrap_or(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 0]));
        let addr = SocketAddr::new(ip, port);
        if self.listener.as_ref().is_some_and(|l| l.addr == addr) {
            return;
        }
        if let Some(l) = self.listener.take() {
            l.task.abort();
        }
        match listen(addr, self.accepted_tx.clone()).await {
            Ok((task, fd)) => {
                tracing::info!(%addr, "listening for BGP connections");
                self.listener = Some(Listener {
                    addr,
                    task,
                    keys: ListenerKeys::new(fd, addr.is_ipv6()),
                });
                self.sync_listener_keys();
            }
            Err(e) => tracing::error!(%addr, error = %e,
                "cannot listen for BGP connections; peers that connect to us will fail (is another BGP daemon running?)"),
        }
    }

    fn add_peer(&mut self, p: PeerIntent) {
        let Some(intent) = &self.intent else { return };
        let key = self.next_key;
        self.next_key += 1;
        let family = if p.address.is_ipv4() {
            Family::Ipv4Unicast
        } else {
            Family::Ipv6Unicast
        };
        let mut cfg = SessionConfig::new(p.local_as, p.remote_as, intent.router_id);
        cfg.passive = p.passive;
        cfg.families = vec![family];
        // Calico's template says `add paths on`: several paths per prefix both ways, so
        // route reflectors pass on every node's path and ECMP survives reflection.
        cfg.add_path = vec![(family, AddPathMode::Both)];
        if let Some(k) = p.keepalive_time {
            cfg.keepalive_time = Some(k.as_secs().clamp(1, 21845) as u16);
            cfg.hold_time = (k.as_secs() * 3).clamp(3, 65535) as u16;
        }
        cfg.graceful_restart = Some(GracefulRestartConfig {
            restart_time: p.effective_max_restart_time().as_secs().min(4095) as u16,
            restarting: self.restarting,
            forwarding_preserved: true,
        });
        let password = p.password.as_ref().and_then(|r| self.passwords.get(r));
        let endpoint = Endpoint {
            address: p.address,
            port: p.port,
            source: p.source_address,
            ttl_security: p.ttl_security,
            password: password.clone(),
        };
        let session = session::spawn(key, endpoint, cfg, self.events_tx.clone());
        let info = self.peer_info(&p, None);
        if let Some(rib) = &mut self.rib
            && let Err(e) = rib.add_peer(PeerId(key), info)
        {
            tracing::error!(peer = %p.name, error = %e, "adding the peer to the RIB");
        }
        tracing::info!(peer = %p.name, address = %p.address, asn = p.remote_as, passive = p.passive, "peer added");
        self.by_name.insert(p.name.clone(), key);
        self.peers.insert(
            key,
            Peer {
                key,
                intent: p,
                session,
                state: State::Idle,
                since: SystemTime::now(),
                info: String::new(),
                negotiated: None,
                sent: AdjRibOut::default(),
                dirty: DirtyQueue::default(),
                eor_pending: Vec::new(),
                eor_awaited: Vec::new(),
                password,
                stale_until: None,
            },
        );
    }

    fn peer_info(&self, p: &PeerIntent, local: Option<SocketAddr>) -> PeerInfo {
        // Known once the session is up (`established` sets it).
        let router_id = std::net::Ipv4Addr::UNSPECIFIED;
        let local_ip = local.map(|l| l.ip()).or(p.source_address);
        PeerInfo {
            address: p.address,
            router_id,
            local_as: p.local_as,
            remote_as: p.remote_as,
            rr_client: p.rr_client,
            add_path_tx: [false, false],
            next_hop_self: p.next_hop_self,
            keep_next_hop: p.keep_original_next_hop,
            local_address_v4: match local_ip {
                Some(IpAddr::V4(a)) => Some(a),
                _ => self.intent.as_ref().and_then(|i| i.node_ipv4),
            },
            local_address_v6: match local_ip {
                Some(IpAddr::V6(a)) => Some(a),
                _ => self.intent.as_ref().and_then(|i| i.node_ipv6),
            },
            allow_local_as: p.allow_local_as,
        }
    }

    /// Keeps the listener's MD5 keys equal to the peers' passwords.
    fn sync_listener_keys(&mut self) {
        let Some(l) = &mut self.listener else { return };
        l.keys.sync(
            self.peers
                .values()
                .filter_map(|p| Some((p.intent.address, p.password.as_ref()?))),
        );
    }

    /// Reads every password again; a session whose password changed (a rotated secret)
    /// starts again with the new one.
    fn refresh_passwords(&mut self) {
        self.passwords.refresh(
            self.peers
                .values()
                .filter_map(|p| p.intent.password.as_ref()),
        );
        let passwords = &mut self.passwords;
        let stale: Vec<PeerKey> = self
            .peers
            .values()
            .filter(|p| {
                p.intent.password.is_some()
                    && p.intent.password.as_ref().and_then(|r| passwords.get(r)) != p.password
            })
            .map(|p| p.key)
            .collect();
        for k in stale {
            if let Some(p) = self.peers.get(&k) {
                tracing::info!(peer = %p.intent.name, "the peer's password changed: restarting the session");
                let intent = p.intent.clone();
                self.remove_peer(k, Notification::other_config_change());
                self.add_peer(intent);
            }
        }
        self.sync_listener_keys();
    }

    fn remove_peer(&mut self, key: PeerKey, why: Notification) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        self.by_name.remove(&p.intent.name);
        let _ = p.session.commands.try_send(SessionCommand::Stop(why));
        // Dropping the handle closes the command channel, which ends the session task.
        drop(p.session);
        tracing::info!(peer = %p.intent.name, "peer removed");
        if let Some(rib) = &mut self.rib {
            let changes = rib.remove_peer(PeerId(key));
            self.changes(changes);
        }
    }

    /// Makes the RIB's locally originated routes match the intent's exports.
    fn update_originated(&mut self) {
        let Some(intent) = &self.intent else { return };
        let mut want: HashMap<IpNet, Arc<Attrs>> = HashMap::new();
        // Communities are not stored with the route: the export filter adds them per peer,
        // as Calico's `apply_communities()` does, so a BGPFilter export rule that accepts a
        // route first sends it without them, as BIRD would.
        let plain = Arc::new(Attrs {
            origin: Origin::Igp,
            ..Attrs::default()
        });
        for e in &intent.exports {
            want.insert(e.prefix, plain.clone());
        }
        let Some(rib) = &mut self.rib else { return };
        let mut changes = Vec::new();
        for (prefix, attrs) in &want {
            if self.originated.get(prefix).is_none_or(|a| a != attrs) {
                changes.extend(rib.originate(*prefix, attrs.clone()));
            }
        }
        for prefix in self.originated.keys() {
            if !want.contains_key(prefix) {
                changes.extend(rib.withdraw_local(*prefix));
            }
        }
        self.originated = want;
        self.changes(changes);
    }

    // ===== sessions =====

    fn accepted(&mut self, stream: tokio::net::TcpStream, from: SocketAddr) {
        let ip = canonical(from.ip());
        match self.peers.values().find(|p| p.intent.address == ip) {
            Some(p) => {
                if let Some(pw) = &p.password
                    && !self.listener.as_ref().is_some_and(|l| l.keys.has(ip, pw))
                {
                    tracing::warn!(peer = %p.intent.name, "refusing a connection the listener could not check against the peer's password");
                    return;
                }
                if let Some(hops) = p.intent.ttl_security
                    && let Err(e) = sockopt::set_ttl_security(&stream, ip, hops)
                {
                    tracing::warn!(peer = %p.intent.name, error = %e, "refusing the connection");
                    return;
                }
                let _ = p
                    .session
                    .commands
                    .try_send(SessionCommand::Incoming(stream));
            }
            None => {
                tracing::debug!(%from, "refused a connection from an address that is not a configured peer")
            }
        }
    }

    fn session_event(&mut self, ev: SessionEvent) {
        match ev {
            SessionEvent::State {
                peer,
                from,
                to,
                info,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    tracing::info!(peer = %p.intent.name, from = from.name(), to = to.name(), %info, "session state");
                    p.state = to;
                    p.since = SystemTime::now();
                    p.info = bird_info(to, &info);
                    self.metrics
                        .fsm_transitions
                        .with_label_values(&[to.name()])
                        .inc();
                }
            }
            SessionEvent::Established {
                peer,
                negotiated,
                local,
            } => self.established(peer, *negotiated, local),
            SessionEvent::Update { peer, update } => self.update(peer, *update),
            SessionEvent::RouteRefresh { peer, request } => {
                let family = request.family;
                let all = self.ids(&[family]);
                if let (Some(p), Some(rib)) = (self.peers.get_mut(&peer), &self.rib) {
                    tracing::info!(peer = %p.intent.name, %family, "route refresh requested");
                    // Forgotten: what the peer will be sent again. A prefix that lost its
                    // last path keeps its entry, so its withdrawal (maybe queued) still goes.
                    p.sent.forget(|id| {
                        rib.prefix(id).is_some_and(|prefix| {
                            Family::of(&prefix) == family && !rib.paths(prefix).is_empty()
                        })
                    });
                    p.dirty.extend(all);
                    p.eor_pending.push(family);
                }
            }
            SessionEvent::Down {
                peer,
                reason,
                was_established,
                stale_families,
                restart_time,
            } => self.down(peer, reason, was_established, stale_families, restart_time),
        }
    }

    fn established(&mut self, key: PeerKey, n: Negotiated, local: SocketAddr) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let info = {
            let mut i = self.peer_info(&p.intent, Some(local));
            i.router_id = n.peer_router_id;
            i.add_path_tx = n.codec.add_path_tx;
            i
        };
        let mut changes = Vec::new();
        if let Some(rib) = &mut self.rib {
            match rib.set_peer_info(PeerId(key), info) {
                Ok(c) => changes = c,
                Err(e) => tracing::error!(error = %e, "updating the peer in the RIB"),
            }
        }
        self.changes(changes);
        let all = self.ids(&n.families);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        tracing::info!(peer = %p.intent.name, hold = n.hold_time, families = ?n.families, "established");
        p.sent.clear();
        p.dirty.clear();
        p.dirty.extend(all);
        p.eor_pending = n.families.clone();
        p.eor_awaited = n.families.clone();
        p.negotiated = Some(n);
    }

    fn update(&mut self, key: PeerKey, mut u: calico_bgp::wire::Update) {
        // Nothing waits (a whole-table edit, a peer gone or an End-of-RIB, decided all
        // inside the RIB): the peers counted for the batch are no longer waiting either.
        if self.rib.as_ref().is_some_and(|r| r.undecided() == 0) {
            self.deciding_for.clear();
        }
        let (Some(p), Some(intent)) = (self.peers.get_mut(&key), &self.intent) else {
            return;
        };
        self.metrics.updates_received.inc();
        if !u.errors.is_empty() {
            tracing::warn!(peer = %p.intent.name, errors = ?u.errors, treat_as_withdraw = u.treat_as_withdraw,
                "malformed UPDATE handled as RFC 7606 says");
        }
        if u.treat_as_withdraw {
            let announced = std::mem::take(&mut u.announced);
            u.withdrawn.extend(announced);
        }
        // Import filters (BGPFilter), on the route as received (its AS path and communities):
        // a rejected announcement is a withdrawal of any earlier path; an accepted one is
        // stored with the filter's changes (operations), grouped by what they changed.
        let mut accepted: Vec<Nlri> = Vec::new();
        let mut edited: Vec<(AttrEdits, Vec<Nlri>)> = Vec::new();
        if let Some(a) = &u.attrs {
            let mut route = calico::RouteInfo::of_path(IpNet::V4(Default::default()), a);
            if !p.intent.is_ibgp() {
                // An external peer's LOCAL_PREF is dropped as it arrives; BIRD's default
                // stands in before the filters run.
                route.local_pref = Some(100);
            }
            for n in &u.announced {
                route.prefix = n.prefix;
                match intent.import_verdict_for(&p.intent, &route) {
                    FilterVerdict::Reject => u.withdrawn.push(*n),
                    FilterVerdict::Accept(e) if e.is_empty() => accepted.push(*n),
                    FilterVerdict::Accept(e) => match edited.iter_mut().find(|(x, _)| *x == e) {
                        Some((_, group)) => group.push(*n),
                        None => edited.push((e, vec![*n])),
                    },
                }
            }
        }
        let mut changes = Vec::new();
        if let Some(rib) = &mut self.rib {
            let attrs = u.attrs.map(Arc::new);
            let mut apply =
                |withdrawn: &[Nlri], announced: &[Nlri], edits: Option<&AttrEdits>| match rib
                    .apply_edited(PeerId(key), withdrawn, announced, attrs.clone(), edits)
                {
                    Ok(c) => changes.extend(c),
                    Err(e) => tracing::error!(error = %e, "applying an UPDATE to the RIB"),
                };
            apply(&u.withdrawn, &accepted, None);
            for (e, group) in &edited {
                apply(&[], group, Some(e));
            }
            if let Some(f) = u.end_of_rib {
                changes.extend(rib.flush_stale(PeerId(key), f));
            }
        }
        if let Some(f) = u.end_of_rib
            && let Some(p) = self.peers.get_mut(&key)
        {
            tracing::info!(peer = %p.intent.name, family = %f, "End-of-RIB received");
            p.eor_awaited.retain(|x| *x != f);
            if let Some((_, fams)) = &mut p.stale_until {
                fams.retain(|x| *x != f);
                if fams.is_empty() {
                    p.stale_until = None;
                }
            }
        }
        self.changes(changes);
        if self.deciding_for.len() < DECIDE_SENDERS && !self.deciding_for.contains(&key) {
            self.deciding_for.push(key);
        }
        let batch = DECIDE_BATCH * self.deciding_for.len();
        if self.rib.as_ref().is_some_and(|r| r.undecided() >= batch) {
            self.decide();
        }
    }

    fn down(
        &mut self,
        key: PeerKey,
        reason: DownReason,
        was_established: bool,
        stale: Vec<Family>,
        restart_time: u16,
    ) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !was_established {
            // Failed before any route was exchanged (a collision's losing connection, say):
            // routes kept from an earlier session for graceful restart stay until its timer.
            tracing::debug!(peer = %p.intent.name, %reason, "session failed before Established");
            return;
        }
        tracing::warn!(peer = %p.intent.name, %reason, graceful = !stale.is_empty(), "session down");
        p.negotiated = None;
        p.sent.clear();
        p.dirty.clear();
        p.eor_pending.clear();
        let mut changes = Vec::new();
        if let Some(rib) = &mut self.rib {
            if stale.is_empty() {
                changes = rib.remove_peer(PeerId(key));
                let info = {
                    let p = &self.peers[&key];
                    self.peer_info(&p.intent, None)
                };
                if let Some(rib) = &mut self.rib
                    && let Err(e) = rib.add_peer(PeerId(key), info)
                {
                    tracing::error!(error = %e, "re-adding the peer to the RIB");
                }
            } else {
                for f in &stale {
                    rib.mark_stale(PeerId(key), *f);
                }
                if let Some(p) = self.peers.get_mut(&key) {
                    p.stale_until = Some((
                        Instant::now() + Duration::from_secs(restart_time.into()),
                        stale,
                    ));
                }
            }
        }
        self.changes(changes);
    }

    /// Runs the decisions the RIB deferred while this round's UPDATEs came in.
    fn decide(&mut self) {
        self.deciding_for.clear();
        let changes = self.rib.as_mut().map(Rib::decide).unwrap_or_default();
        self.changes(changes);
    }

    /// Best-path changes: into the kernel, and marked for every established peer.
    fn changes(&mut self, changes: Vec<Change>) {
        // Losing paths that came or went matter to ADD-PATH peers, which hear every path.
        if let Some(rib) = &mut self.rib {
            let set_changes = rib.take_path_set_changes();
            if !set_changes.is_empty() {
                for p in self.peers.values_mut().filter(|p| {
                    p.established()
                        && p.negotiated
                            .as_ref()
                            .is_some_and(|n| n.codec.add_path_tx.iter().any(|x| *x))
                }) {
                    p.dirty.extend(set_changes.iter().copied());
                }
            }
        }
        if changes.is_empty() {
            return;
        }
        // Only what may touch the kernel waits for it: with VXLAN or Felix-owned pools
        // nothing does, and a million changes went through the queue for nothing.
        let for_kernel: Vec<DestId> = changes
            .iter()
            .filter(|c| self.kernel_may_change(c))
            .map(|c| c.id)
            .collect();
        self.kernel_dirty.extend(for_kernel);
        // A peer without ADD-PATH hears the best path only: a change among the ECMP members
        // behind it (ten equal senders make nine of those per prefix) is nothing to it.
        for p in self.peers.values_mut().filter(|p| p.established()) {
            let add_path = p
                .negotiated
                .as_ref()
                .map_or([false; 2], |n| n.codec.add_path_tx);
            p.dirty.extend(
                changes
                    .iter()
                    .filter(|c| heard_by(c, add_path))
                    .map(|c| c.id),
            );
        }
    }

    /// The static routes `reachableBy` asks for, as Calico's BIRD config has them
    /// (`route <peer>/32 via <gateway>;` in `protocol static`, into the kernel, never
    /// advertised): added, changed and removed with the peers.
    fn sync_peer_routes(&mut self) {
        let wanted: HashMap<IpNet, IpAddr> = self
            .intent
            .as_ref()
            .map(|i| {
                i.peers
                    .iter()
                    .filter_map(|p| Some((IpNet::from(p.address), p.reachable_by?)))
                    .collect()
            })
            .unwrap_or_default();
        let freed: Vec<IpNet> = self
            .peer_routes
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for prefix in &freed {
            tracing::info!(%prefix, "static route to a BGP peer removed");
            self.kernel.set(*prefix, Vec::new());
        }
        for (prefix, gateway) in &wanted {
            if self.peer_routes.get(prefix) != Some(gateway) {
                tracing::info!(%prefix, %gateway, "static route to a BGP peer (reachableBy)");
                self.kernel.set(*prefix, vec![NextHop::via(*gateway)]);
            }
        }
        self.peer_routes = wanted;
        // A learned route to an address that no longer has a static route goes back in.
        // At once, not behind the kernel queue: the peer's address must not stay unrouted.
        let learned: Vec<Change> = self.rib.as_ref().map_or(Vec::new(), |r| {
            freed
                .iter()
                .filter_map(|prefix| r.current(r.id(*prefix)?))
                .collect()
        });
        for c in &learned {
            self.program_kernel(c);
        }
    }

    /// Hands the kernel writer the next queued slots, as far as it is not `KERNEL_AHEAD`
    /// behind, or all of them.
    fn feed_kernel(&mut self, all: bool) {
        if self.kernel_dirty.is_empty() {
            return;
        }
        let room = match all {
            true => usize::MAX,
            false => KERNEL_AHEAD.saturating_sub(self.kernel.waiting()),
        };
        let Some(rib) = &self.rib else {
            return;
        };
        let due: Vec<Change> = self
            .kernel_dirty
            .take(room)
            .into_iter()
            .filter_map(|id| rib.current(id))
            .collect();
        for c in &due {
            self.program_kernel(c);
        }
    }

    /// Puts a prefix's best route into the kernel, or takes it out.
    fn program_kernel(&mut self, c: &Change) {
        if self.peer_routes.contains_key(&c.prefix) {
            // The static route to a peer stays.
            self.kernel_routes.remove(c.id);
            return;
        }
        let hops = self.kernel_next_hops(c);
        if hops.is_empty() {
            if self.kernel_routes.remove(c.id) {
                self.kernel.set(c.prefix, Vec::new());
            }
        } else {
            self.kernel_routes.insert(c.id);
            self.kernel.set(c.prefix, hops);
        }
    }

    /// Whether [`program_kernel`](Self::program_kernel) would do anything for `c`.
    fn kernel_may_change(&self, c: &Change) -> bool {
        self.kernel_routes.contains(c.id)
            || (!self.peer_routes.contains_key(&c.prefix) && !self.kernel_next_hops(c).is_empty())
    }

    /// The slot of every prefix in the RIB of these families.
    fn ids(&self, families: &[Family]) -> Vec<DestId> {
        self.rib.as_ref().map_or(Vec::new(), |r| {
            r.ids()
                .filter(|(_, p)| families.contains(&Family::of(p)))
                .map(|(id, _)| id)
                .collect()
        })
    }

    /// What the kernel should hold for a changed prefix (Calico's `calico_kernel_programming`).
    fn kernel_next_hops(&self, c: &Change) -> Vec<NextHop> {
        let (Some(best), Some(intent)) = (&c.best, &self.intent) else {
            return Vec::new();
        };
        if best.peer == PeerId::LOCAL {
            return Vec::new();
        }
        let mut hops = Vec::new();
        for (_, attrs) in &best.multipath {
            let Some(nh) = attrs.next_hop else { continue };
            match intent.kernel_action(&c.prefix, nh) {
                KernelAction::Skip(_) => return Vec::new(),
                KernelAction::Install { via_tunnel } => {
                    let hop = NextHop {
                        gateway: nh,
                        onlink_dev: via_tunnel.then(|| "tunl0".to_string()),
                    };
                    if !hops.contains(&hop) {
                        hops.push(hop);
                    }
                }
            }
        }
        hops
    }

    // ===== output =====

    /// Sends each established peer what changed for it, as far as its session has room.
    fn flush(&mut self) {
        let (Some(rib), Some(intent)) = (&self.rib, &self.intent) else {
            return;
        };
        let mut out: Vec<Outgoing<'_>> = Vec::new();
        for p in self.peers.values_mut() {
            if !p.established() || (p.dirty.is_empty() && p.eor_pending.is_empty()) {
                continue;
            }
            let Peer {
                key,
                intent: peer_intent,
                session,
                negotiated: Some(n),
                sent,
                dirty,
                eor_pending,
                ..
            } = p
            else {
                continue;
            };
            let Ok(permit) = session.commands.try_reserve() else {
                // The session is busy: the queue keeps coalescing.
                continue;
            };
            let policy = PeerPolicy {
                intent,
                peer: peer_intent,
                seen: None,
            };
            out.push(Outgoing {
                export: rib.peer_export(PeerId(*key), policy),
                permit,
                codec: n.codec,
                families: &n.families,
                sent,
                dirty,
                eor_pending,
                updates: UpdateBuilder::default(),
                taken: 0,
            });
        }
        // A bounded slice per peer and round keeps the loop responsive during a full-table
        // send. The peers take it a step at a time in turn: peers mostly have the same
        // prefixes queued, and a step's slots are still cached when the next peer reads
        // them, where a whole slice per peer had gone from the cache by the next peer.
        loop {
            let mut more = false;
            for o in &mut out {
                let want = FLUSH_STEP.min(FLUSH_SLICE - o.taken);
                if want == 0 {
                    continue;
                }
                let step = o.dirty.take(want);
                if step.is_empty() {
                    continue;
                }
                o.taken += step.len();
                more = true;
                let families = o.families;
                let ours = step
                    .into_iter()
                    .filter(|id| rib.family(*id).is_some_and(|f| families.contains(&f)));
                let (sent, updates, codec) = (&mut *o.sent, &mut o.updates, &o.codec);
                o.export.ids(ours, &mut |id, prefix, want| {
                    updates.add(sent, codec, id, prefix, want);
                });
            }
            if !more {
                break;
            }
        }
        for o in out {
            let mut msgs = o.updates.encode(rib, &o.codec);
            if o.dirty.is_empty() {
                for f in o.eor_pending.drain(..) {
                    msgs.push(wire::encode_end_of_rib(f));
                }
            }
            if !msgs.is_empty() {
                self.metrics.updates_sent.inc_by(msgs.len() as u64);
                o.permit.send(SessionCommand::Send(msgs));
            }
        }
        self.feed_kernel(false);
        self.release_slots();
    }

    /// Whether a peer still has prefixes (or End-of-RIB) to be sent, and can take them.
    fn backlog(&self) -> Backlog {
        let mut backlog = Backlog::None;
        if !self.kernel_dirty.is_empty() {
            // The writer takes routes as it goes: feed it on the next round if it has room,
            // or look again shortly.
            if self.kernel.waiting() < KERNEL_AHEAD {
                return Backlog::Ready;
            }
            backlog = Backlog::Blocked;
        }
        for p in self.peers.values() {
            // Until the Established event brings the negotiated codec, flush cannot send.
            if !p.established()
                || p.negotiated.is_none()
                || (p.dirty.is_empty() && p.eor_pending.is_empty())
            {
                continue;
            }
            if p.session.commands.capacity() > 0 {
                return Backlog::Ready;
            }
            backlog = Backlog::Blocked;
        }
        backlog
    }

    /// Frees the RIB slots of prefixes that lost their last path once every peer has heard
    /// (checked only when no peer has anything queued: a slow peer's backlog is not
    /// re-scanned on every round).
    fn release_slots(&mut self) {
        let Some(rib) = &mut self.rib else {
            return;
        };
        if !self.kernel_dirty.is_empty() || self.peers.values().any(|p| !p.dirty.is_empty()) {
            return;
        }
        let (peers, kernel) = (&self.peers, &self.kernel_routes);
        rib.release_empty(|id| {
            kernel.contains(id)
                || peers
                    .values()
                    .any(|p| p.sent.holds(id) || p.dirty.contains(id))
        });
    }

    // ===== timers =====

    fn timers(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for p in self.peers.values_mut() {
            if let Some((at, fams)) = &p.stale_until
                && *at <= now
            {
                tracing::warn!(peer = %p.intent.name, "graceful restart time over: stale routes removed");
                expired.push((p.key, fams.clone()));
                p.stale_until = None;
            }
        }
        let mut changes = Vec::new();
        if let Some(rib) = &mut self.rib {
            for (k, fams) in expired {
                for f in fams {
                    changes.extend(rib.flush_stale(PeerId(k), f));
                }
            }
        }
        self.changes(changes);
        if now >= self.next_resync {
            self.next_resync = now + KERNEL_RESYNC;
            self.kernel.resync();
        }
        if now >= self.next_password_check {
            self.next_password_check = now + PASSWORD_CHECK;
            self.refresh_passwords();
        }
        // Not while learned routes still wait to be handed to the writer: reconcile removes
        // the adopted routes not asked for, and those would go missing for a moment.
        if !self.reconciled && self.intent.is_some() && self.kernel_dirty.is_empty() {
            let all_in = self
                .peers
                .values()
                .all(|p| p.established() && p.eor_awaited.is_empty());
            if all_in || now.duration_since(self.started) > self.opts.reconcile_after {
                tracing::info!(
                    all_peers_converged = all_in,
                    "reconciling the kernel with what was learned"
                );
                self.kernel.reconcile();
                self.reconciled = true;
                self.restarting = false;
            }
        }
        let received = self.rib.as_ref().map_or(0, |r| {
            self.peers
                .keys()
                .map(|k| r.paths_from(PeerId(*k)) as u64)
                .sum()
        });
        let advertised = self.peers.values().map(|p| p.sent.paths() as u64).sum();
        self.metrics.observe(
            self.peers.values().map(|p| p.state),
            self.kernel.installed(),
            received,
            advertised,
        );
    }

    // ===== control =====

    fn readiness(&self) -> Result<(), String> {
        if !self.ds_in_sync {
            return Err("not in sync with the datastore yet".into());
        }
        if let Some(e) = &self.intent_error {
            return Err(e.clone());
        }
        if self.listener.is_none() {
            return Err("not listening for BGP connections".into());
        }
        // calico-node's `-bird-ready`: every BGP session is up.
        let down: Vec<String> = self
            .peers
            .values()
            .filter(|p| !p.established())
            .map(|p| p.intent.address.to_string())
            .collect();
        if !down.is_empty() {
            return Err(format!("BGP not established with {}", down.join(",")));
        }
        Ok(())
    }

    fn query(&self, q: Query) {
        match q {
            Query::Peers(tx) => {
                let peers = self
                    .peers
                    .values()
                    .map(|p| PeerStatus {
                        name: p.intent.name.clone(),
                        address: p.intent.address,
                        port: p.intent.port,
                        kind: p.intent.kind,
                        state: p.state,
                        since: p.since,
                        info: p.info.clone(),
                        local_as: p.intent.local_as,
                        remote_as: p.intent.remote_as,
                        received: self
                            .rib
                            .as_ref()
                            .map_or(0, |r| r.paths_from(PeerId(p.key)) as u64),
                        advertised: p.sent.paths() as u64,
                    })
                    .collect();
                let _ = tx.send(peers);
            }
            Query::Routes {
                prefix,
                best_only,
                reply,
            } => {
                let _ = reply.send(self.routes(prefix, best_only));
            }
            Query::Explain { prefix, reply } => {
                let out = self
                    .rib
                    .as_ref()
                    .map(|r| {
                        r.explain(prefix)
                            .into_iter()
                            .map(|(path, why)| {
                                (
                                    self.route_view(prefix, &path.peer, &path.attrs, why.is_none()),
                                    why.map(|w| w.to_string()).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = reply.send(out);
            }
            Query::Status(tx) => {
                let _ = tx.send(control::DaemonStatus {
                    router_id: self.intent.as_ref().map(|i| i.router_id),
                    local_as: self.intent.as_ref().map_or(0, |i| i.local_as),
                    started: self.started_wall,
                    routes_in_kernel: self.kernel.installed() as u64,
                });
            }
        }
    }

    fn routes(&self, prefix: Option<IpNet>, best_only: bool) -> Vec<RouteView> {
        let Some(rib) = &self.rib else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let prefixes: Vec<IpNet> = match prefix {
            Some(p) => vec![p],
            None => {
                let mut v: Vec<IpNet> = rib.routes().map(|(p, _)| p).collect();
                v.sort();
                v
            }
        };
        for p in prefixes {
            for (path, why) in rib.explain(p) {
                let best = why.is_none();
                if best_only && !best {
                    continue;
                }
                out.push(self.route_view(p, &path.peer, &path.attrs, best));
            }
        }
        out
    }

    fn route_view(&self, prefix: IpNet, peer: &PeerId, attrs: &Attrs, best: bool) -> RouteView {
        RouteView {
            prefix,
            from_peer: self
                .peers
                .get(&peer.0)
                .map(|p| p.intent.address.to_string())
                .unwrap_or_default(),
            attrs: attrs.clone(),
            best,
            installed: best
                && self
                    .rib
                    .as_ref()
                    .and_then(|r| r.id(prefix))
                    .is_some_and(|id| self.kernel_routes.contains(id)),
        }
    }
}

/// BIRD's info column: the state, then what went wrong last ("Active Socket: Connection
/// refused" style), or "Established".
fn bird_info(state: State, info: &str) -> String {
    match state {
        State::Established => "Established".into(),
        _ if info.is_empty() => state.name().into(),
        _ => format!(
            "{} {}",
            state.name(),
            info.trim_start_matches("connection lost: ")
        ),
    }
}

/// IPv4-mapped IPv6 addresses (an IPv4 peer reaching a dual-stack listener) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The BGP listening socket.
struct Listener {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    keys: ListenerKeys,
}

/// Listens on `addr`, handing connections to `tx`; also returns a second descriptor of the
/// socket, for its MD5 keys.
async fn listen(
    addr: SocketAddr,
    tx: mpsc::Sender<(tokio::net::TcpStream, SocketAddr)>,
) -> std::io::Result<(tokio::task::JoinHandle<()>, std::os::fd::OwnedFd)> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    sockopt::set_listener_ttl(&socket, addr.is_ipv6())?;
    socket.bind(addr)?;
    let listener = socket.listen(64)?;
    let fd = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    if tx.send((stream, from)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a BGP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((task, fd))
}

/// Whether a peer sending with ADD-PATH in the families `add_path_tx` says has anything new
/// to hear from `c`: without ADD-PATH in its family only the best path goes out.
fn heard_by(c: &Change, add_path_tx: [bool; 2]) -> bool {
    c.best_moved || add_path_tx[Family::of(&c.prefix).index()]
}

/// One peer's share of a flush: its export, its queue and what it was told, the UPDATEs
/// being built, and the room reserved on its session.
struct Outgoing<'a> {
    export: PeerExport<'a, PeerPolicy<'a>>,
    permit: mpsc::Permit<'a, SessionCommand>,
    codec: wire::Codec,
    families: &'a [Family],
    sent: &'a mut AdjRibOut,
    dirty: &'a mut DirtyQueue,
    eor_pending: &'a mut Vec<Family>,
    updates: UpdateBuilder,
    /// Slots taken from the queue this round.
    taken: usize,
}

/// A peer's export filter: BGPFilter export rules, then Calico's export policy, on each
/// path; a refused one comes back as a withdrawal. Without BGPFilters the verdict needs only
/// the prefix and where the route came from.
struct PeerPolicy<'a> {
    intent: &'a BgpIntent,
    peer: &'a PeerIntent,
    /// The filters' view of the last path seen: neighbouring prefixes mostly share one
    /// stored path, turned into a RouteInfo once. (While the RIB is borrowed no stored path
    /// is freed, so its address identifies it.)
    seen: Option<(*const Attrs, calico::RouteInfo)>,
}

impl ExportPolicy for PeerPolicy<'_> {
    fn export(
        &mut self,
        prefix: IpNet,
        attrs: &Attrs,
        from: Option<&PeerInfo>,
    ) -> Option<AttrEdits> {
        let (intent, peer) = (self.intent, self.peer);
        let verdict = match from {
            None => intent.export_verdict_for(peer, &intent.originated_route(prefix)),
            Some(_) if !peer.filters.is_empty() => {
                let route = match &mut self.seen {
                    Some((ptr, route)) if std::ptr::eq(*ptr, attrs) => route,
                    slot => {
                        &mut slot
                            .insert((attrs, calico::RouteInfo::of_path(prefix, attrs)))
                            .1
                    }
                };
                route.prefix = prefix;
                intent.export_verdict_for(peer, route)
            }
            Some(_) => intent.export_verdict_for(
                peer,
                &calico::RouteInfo {
                    local_pref: Some(attrs.effective_local_pref()),
                    ..calico::RouteInfo::learned(prefix)
                },
            ),
        };
        match verdict {
            FilterVerdict::Accept(mut e) => {
                // LOCAL_PREF never reaches an eBGP peer, and an iBGP peer gets the path's own
                // anyway: no edit, so the path keeps its shared copy.
                if !peer.is_ibgp() || e.local_pref == Some(attrs.effective_local_pref()) {
                    e.local_pref = None;
                }
                Some(e)
            }
            FilterVerdict::Reject => None,
        }
    }
}

/// A prefix by its RIB slot, and a path id.
type SlotPath = (DestId, u32);

/// One peer's UPDATEs of a flush: withdrawals per family, and announcements grouped by
/// attributes (by pointer: export shares one rewritten copy between prefixes). Prefixes are
/// kept as (slot, path id), 8 bytes where an `Nlri` is 24: every peer's builder is alive
/// until the flush ends, and ten peers' slices are two hundred thousand of them.
/// Withdrawals go straight into their messages.
#[derive(Default)]
struct UpdateBuilder {
    groups: Vec<(Arc<Attrs>, Vec<SlotPath>)>,
    group_of: FastMap<usize, usize>,
    last_group: Option<(usize, usize)>,
    withdrawn: [Option<UpdatePacker>; 2],
}

impl UpdateBuilder {
    /// What the peer should now have for slot `id` (`want`), against what it was told.
    fn add(
        &mut self,
        sent: &mut AdjRibOut,
        codec: &wire::Codec,
        id: DestId,
        prefix: IpNet,
        want: &[(u32, Arc<Attrs>)],
    ) {
        let family = Family::of(&prefix);
        let UpdateBuilder {
            groups,
            group_of,
            last_group,
            withdrawn,
        } = self;
        let withdrawn = &mut withdrawn[family.index()];
        sent.replace(
            id,
            codec.add_path_tx[family.index()],
            want,
            |path_id| {
                withdrawn
                    .get_or_insert_with(|| UpdatePacker::withdraw(family, codec))
                    .push(&Nlri { prefix, path_id });
            },
            |path_id, attrs| {
                // Neighbouring prefixes mostly share attributes: the last group first, the
                // map only when they differ.
                let key = Arc::as_ptr(attrs) as usize;
                let g = match *last_group {
                    Some((k, g)) if k == key => g,
                    _ => {
                        let g = *group_of.entry(key).or_insert_with(|| {
                            groups.push((attrs.clone(), Vec::new()));
                            groups.len() - 1
                        });
                        *last_group = Some((key, g));
                        g
                    }
                };
                groups[g].1.push((id, path_id));
            },
        );
    }

    /// The UPDATE messages: withdrawals first, then each group, a family at a time. The
    /// slots are those `rib` exported from, none released since.
    fn encode(self, rib: &Rib, codec: &wire::Codec) -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        for w in self.withdrawn.into_iter().flatten() {
            msgs.extend(w.finish());
        }
        for (attrs, members) in &self.groups {
            let mut part: [Option<UpdatePacker>; 2] = Default::default();
            for &(id, path_id) in members {
                if let Some(prefix) = rib.prefix(id) {
                    let family = Family::of(&prefix);
                    part[family.index()]
                        .get_or_insert_with(|| UpdatePacker::announce(family, attrs, codec))
                        .push(&Nlri { prefix, path_id });
                }
            }
            for p in part.into_iter().flatten() {
                msgs.extend(p.finish());
            }
        }
        msgs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a client that requires TTL 255 (GTSM, one hop) can connect to `addr`.
    async fn gtsm_client_connects(addr: SocketAddr) -> bool {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        sockopt::set_ttl_security(&socket, addr.ip(), 1).unwrap();
        matches!(
            tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await,
            Ok(Ok(_))
        )
    }

    #[test]
    fn ecmp_only_changes_reach_only_peers_taking_add_path_in_their_family() {
        let change = |prefix: &str, best_moved| Change {
            prefix: prefix.parse().unwrap(),
            id: DestId(0),
            best: None,
            best_moved,
        };
        let (v4, v6) = ("10.1.0.0/24", "fd00:1::/48");
        // A new best goes to everyone.
        for add_path in [[false, false], [true, false], [false, true]] {
            assert!(heard_by(&change(v4, true), add_path));
            assert!(heard_by(&change(v6, true), add_path));
        }
        // Only the ECMP members moved: ADD-PATH peers of that family alone.
        assert!(!heard_by(&change(v4, false), [false, false]));
        assert!(heard_by(&change(v4, false), [true, false]));
        assert!(!heard_by(&change(v4, false), [false, true]));
        assert!(heard_by(&change(v6, false), [false, true]));
        assert!(!heard_by(&change(v6, false), [true, false]));
    }

    #[tokio::test]
    async fn the_listener_answers_with_ttl_255_so_a_gtsm_peer_takes_its_syn_ack() {
        // A plain listener answers with the system TTL: the client drops its SYN-ACK.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!gtsm_client_connects(plain.local_addr().unwrap()).await);

        let (tx, _rx) = mpsc::channel(1);
        let (task, fd) = listen("127.0.0.1:0".parse().unwrap(), tx).await.unwrap();
        let addr: nix::sys::socket::SockaddrIn =
            nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap();
        let addr = SocketAddr::V4(addr.into());
        assert!(gtsm_client_connects(addr).await);
        task.abort();
    }
}
