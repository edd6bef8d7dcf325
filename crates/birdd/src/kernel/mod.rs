//! Learned routes in the kernel's routing table (BIRD's `protocol kernel`, as Calico
//! configures it), written by one task in batches so that FIB writes never sit on the BGP
//! hot path.
//!
//! What is installed, and why:
//! - Routes carry protocol `bird` (12) by default, so `ip route show proto bird` on a node
//!   looks as it does under Calico's BIRD, and tools that know that protocol keep working.
//!   Any other value (`bgp`, 186) can be configured. Every route of that protocol in the
//!   configured table is ours: routes of it that nobody asked for are removed (after
//!   [`KernelHandle::reconcile`]), routes of other protocols are never touched.
//! - No metric by default. Calico's BIRD (a BIRD 1.x fork) sends no `RTA_PRIORITY`: its
//!   routes show as `10.x.y.0/26 via 10.0.0.2 dev eth0 proto bird` with no metric (IPv4 0,
//!   IPv6 the kernel's 1024; see projectcalico/calico#7706). BIRD 2's default of 32 is not
//!   what a Calico node has. A configured metric keeps our routes apart from an
//!   administrator's route to the same prefix, which a replace at metric 0 would overwrite.
//! - Several next hops for one prefix become one ECMP route (`RTA_MULTIPATH`), like BIRD's
//!   `merge paths on`. A next hop with a device is installed `onlink` on that device (IPIP's
//!   `tunl0`, Calico's `krt_tunnel`); one without lets the kernel find the connected subnet.
//! - Every change to one of our routes is one `RTM_NEWROUTE` with
//!   `NLM_F_CREATE|NLM_F_REPLACE`, so a route whose next hop changes never disappears in
//!   between; a new route is created with `NLM_F_EXCL`, so it never replaces a route that is
//!   not ours (the node's connected subnet learned back over BGP, felixd's routes); a
//!   withdrawn prefix is deleted.
//!
//! How it is written:
//! - [`KernelHandle::set`] never blocks and never awaits: it records the latest wanted
//!   next hops per prefix in a pending map, so a prefix that flaps ten times while the writer
//!   is busy is written once. The writer takes everything pending at once and writes it
//!   [`BATCH`] requests to a `sendmsg` on a netlink socket of its own: the kernel applies a
//!   whole datagram inside the call and acknowledges it once, answering only the requests
//!   that fail on their own (see `batch.rs`). The batch grows with the load instead of
//!   waiting on a timer, and a route costs no system call of its own.
//! - Memory: the writer keeps, per prefix, what is wanted and what the kernel has as two
//!   4-byte ids of next-hop sets held once each (`interner.rs`), in a map whose IPv4 keys
//!   are 8 bytes (`route_map.rs`); a table of 200k routes over a few peers costs about 20
//!   bytes a route here. Whole-table passes work a step of
//!   [`BATCH`]×4 prefixes at a time.
//! - A route that fails (gateway not reachable yet, interface not there yet) is logged,
//!   counted and retried with a backoff from 250 ms to 10 s; it never stops the others and
//!   never stops the task. A new `set` for it is tried at once.
//! - Restart, like BIRD's `persist` plus graceful restart: routes stay in the kernel when
//!   birdd stops, and a new writer adopts the routes of its protocol it finds at start.
//!   They keep forwarding until [`KernelHandle::reconcile`] (called once BGP has converged
//!   again, e.g. End-of-RIB from every peer or a timeout) removes the ones not `set` since
//!   start. [`KernelHandle::resync`] compares with a fresh dump and repairs drift (a route of
//!   ours someone deleted comes back); [`KernelHandle::remove_all`] is the explicit clean
//!   shutdown.
//!
//! It must never touch a route of another protocol or another table, and never block the
//! caller of `set`.
//!
//! ```text
//!  BGP best-path changes                 daemon timers, End-of-RIB, shutdown, tests
//!       │ set(prefix, next hops)          │ resync / reconcile / remove_all / flush
//!       ▼                                 ▼
//!  ┌─────────────────────────────────────────────────────────┐
//!  │ pending (Mutex): per-prefix maps and commands in order, │
//!  │ a sequence number; a Notify wakes the writer            │
//!  └───────────────────────────┬─────────────────────────────┘
//!                              │ drain everything at once
//!                              ▼
//!  ┌────────────────────────────────────────┐  RTM_NEWROUTE (replace)  ┌──────────────────┐
//!  │ writer task: per prefix the wanted and │  RTM_DELROUTE, 128 per   │ kernel           │
//!  │ the installed next-hop set ids, retry  │  sendmsg ──────────────▶ │ (own socket for  │
//!  │ backoff, interface indexes             │ ◀── one ack, errors ──── │ writes, rtnetlink│
//!  │                                        │ ◀── dumps, links ─────── │ for dumps)       │
//!  └───────────────────┬────────────────────┘                          └──────────────────┘
//!                      │ watch: stats and the last sequence number applied
//!                      ▼
//!       installed() / stats() / flush() resolves
//! ```

mod batch;
mod interner;
mod route_map;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags, RouteProtocol,
    RouteScope, RouteType, RouteVia,
};
use rtnetlink::{Handle, RouteMessageBuilder, RouteNextHopBuilder};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use batch::{Refusal, Request, RouteSocket};
use interner::{Interner, SetId};
use route_map::RouteMap;

/// `RTPROT_BIRD`: the protocol Calico's BIRD installs its routes with.
pub const PROTO_BIRD: u8 = 12;
/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;
/// Route requests sent in one `sendmsg`; the kernel acknowledges the batch once.
pub const BATCH: usize = batch::MAX_MESSAGES;
/// Prefixes compared and written per step, so that a whole-table pass never holds a copy of
/// the table's operations at once.
const STEP: usize = 4 * BATCH;
/// Next-hop sets the handle remembers to share between the prefixes it is given.
const RECENT_SETS: usize = 8;

const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// The kernel's metric for an IPv6 route added without one (`IP6_RT_PRIO_USER`).
const IPV6_DEFAULT_METRIC: u32 = 1024;
// errno values the kernel answers with (Linux, all architectures).
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

/// Next hops as the daemon asked for them, shared by every prefix pending with them.
type HopSet = Arc<[NextHop]>;

/// One way to reach a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    pub gateway: IpAddr,
    /// Install `onlink` on this device (`tunl0` for IPIP, or an interface the gateway is
    /// known to be on); `None` lets the kernel find the gateway on a connected subnet.
    pub onlink_dev: Option<String>,
}

impl NextHop {
    /// A gateway on a connected subnet.
    pub fn via(gateway: IpAddr) -> NextHop {
        NextHop {
            gateway,
            onlink_dev: None,
        }
    }

    /// A gateway reached through `dev` whatever its subnet.
    pub fn onlink(gateway: IpAddr, dev: impl Into<String>) -> NextHop {
        NextHop {
            gateway,
            onlink_dev: Some(dev.into()),
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.onlink_dev {
            Some(dev) => write!(f, "{} dev {dev} onlink", self.gateway),
            None => write!(f, "{}", self.gateway),
        }
    }
}

/// Where and how learned routes are installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// `rtm_protocol` of our routes; every route of this protocol in `table` is ours.
    pub protocol: u8,
    /// `RTA_PRIORITY`; `None` sends none (IPv4 0, IPv6 1024), as Calico's BIRD does.
    pub metric: Option<u32>,
    pub table: u32,
}

impl Default for KernelConfig {
    fn default() -> KernelConfig {
        KernelConfig {
            protocol: PROTO_BIRD,
            metric: None,
            table: TABLE_MAIN,
        }
    }
}

/// Counters of the writer, as of its last batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Routes of ours in the kernel, adopted ones (of any metric or kind) included.
    pub installed: usize,
    /// Prefixes whose last attempt failed and that wait for a retry.
    pub failed: usize,
    /// Failed netlink requests and dumps since start.
    pub errors: u64,
    /// Successful route requests since start.
    pub applied: u64,
    /// Batches of route requests sent.
    pub batches: u64,
}

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("the kernel route writer must be started inside a tokio runtime")]
    NoRuntime,
    #[error("cannot open a netlink socket (is birdd allowed CAP_NET_ADMIN?): {0}")]
    Socket(#[source] std::io::Error),
    #[error("dumping the routes of table {table}: {source}")]
    Dump {
        table: u32,
        source: rtnetlink::Error,
    },
    #[error("adding the route to {prefix} via {via}: {source}")]
    Add {
        prefix: IpNet,
        via: String,
        source: Refusal,
    },
    #[error("deleting the route to {prefix}: {source}")]
    Delete { prefix: IpNet, source: Refusal },
    #[error("the route to {prefix} needs interface {name}, which does not exist (yet)")]
    NoInterface { prefix: IpNet, name: String },
    #[error("the route to {prefix} cannot go via {gateway} (address family)")]
    Family { prefix: IpNet, gateway: IpAddr },
    #[error("the kernel route writer has stopped")]
    Stopped,
}

/// The daemon's side of the writer. Cheap to clone; when the last clone is dropped the
/// writer applies what is pending and stops, leaving its routes in the kernel.
#[derive(Clone)]
pub struct KernelHandle {
    inner: Arc<HandleInner>,
}

impl fmt::Debug for KernelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

struct HandleInner {
    shared: Arc<Shared>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        lock(&self.shared.pending).closed = true;
        self.shared.wake.notify_one();
    }
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
    status: watch::Receiver<Status>,
}

#[derive(Default)]
struct Pending {
    /// Bumped by every request; the writer reports the last one it has applied.
    seq: u64,
    queue: VecDeque<Job>,
    closed: bool,
    /// The sets given last, most recent first.
    recent: Vec<HopSet>,
    /// Prefixes set and not yet taken by the writer.
    waiting: usize,
}

impl Pending {
    /// `hops` as a set shared with the other prefixes pending with it: the daemon gives
    /// most prefixes one of a few sets, often many in a row.
    fn share(&mut self, hops: Vec<NextHop>) -> HopSet {
        let set = match self.recent.iter().position(|s| **s == *hops) {
            Some(i) => self.recent.remove(i),
            None => HopSet::from(hops),
        };
        self.recent.insert(0, set.clone());
        self.recent.truncate(RECENT_SETS);
        set
    }
}

enum Job {
    /// The latest next hops per prefix (empty: withdraw).
    Routes(HashMap<IpNet, HopSet>),
    Resync,
    Reconcile,
    RemoveAll,
}

#[derive(Debug, Clone, Copy, Default)]
struct Status {
    stats: KernelStats,
    done: u64,
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // The lock is only held for map inserts, which do not panic half-way.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the writer. Call it inside a tokio runtime, on a thread in the network namespace
/// whose routes it should own: the netlink socket belongs to the namespace it is opened in.
///
/// The writer first dumps the table and adopts the routes of its protocol it finds there.
pub fn spawn(cfg: KernelConfig) -> Result<(KernelHandle, JoinHandle<()>), KernelError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| KernelError::NoRuntime)?;
    let (conn, nl, _) = rtnetlink::new_connection().map_err(KernelError::Socket)?;
    let socket = {
        // The socket registers with the reactor of the runtime it is opened in.
        let _entered = rt.enter();
        RouteSocket::open().map_err(KernelError::Socket)?
    };
    rt.spawn(conn);
    let (status_tx, status_rx) = watch::channel(Status::default());
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            seq: 1,
            queue: VecDeque::from([Job::Resync]),
            closed: false,
            recent: Vec::new(),
            waiting: 0,
        }),
        wake: Notify::new(),
        status: status_rx,
    });
    let writer = Writer {
        cfg,
        nl,
        socket,
        shared: shared.clone(),
        status: status_tx,
        routes: RouteMap::default(),
        wants: Interner::new(),
        haves: Interner::new(),
        ours: 0,
        strays: Vec::new(),
        dumped: false,
        reconciled: false,
        retry: HashMap::new(),
        resync_retry: None,
        ifindex: HashMap::new(),
        stats: KernelStats::default(),
    };
    let task = rt.spawn(writer.run());
    Ok((
        KernelHandle {
            inner: Arc::new(HandleInner { shared }),
        },
        task,
    ))
}

impl KernelHandle {
    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn enqueue(&self, job: Job) {
        let mut p = lock(&self.shared().pending);
        p.queue.push_back(job);
        p.seq += 1;
        drop(p);
        self.shared().wake.notify_one();
    }

    /// Wants `prefix` via `next_hops` (several: ECMP), or withdrawn if `next_hops` is empty.
    /// Returns at once; only the latest call per prefix reaches the kernel.
    ///
    /// Like `ip route replace <prefix> proto bird via <gw> [dev <dev> onlink]`, or with
    /// `nexthop via <gw1> nexthop via <gw2>`; withdrawn: `ip route del <prefix> proto bird`.
    pub fn set(&self, prefix: IpNet, mut next_hops: Vec<NextHop>) {
        next_hops.sort();
        next_hops.dedup();
        let prefix = prefix.trunc();
        let mut p = lock(&self.shared().pending);
        let hops = p.share(next_hops);
        match p.queue.back_mut() {
            Some(Job::Routes(routes)) => {
                if routes.insert(prefix, hops).is_none() {
                    p.waiting += 1;
                }
            }
            _ => {
                p.queue
                    .push_back(Job::Routes(HashMap::from([(prefix, hops)])));
                p.waiting += 1;
            }
        }
        p.seq += 1;
        drop(p);
        self.shared().wake.notify_one();
    }

    /// Prefixes [`set`](Self::set) that the writer has not taken up yet. A caller with a
    /// whole table to write feeds it as this goes down, so that the routes wait in its own
    /// compact queue rather than here.
    pub fn waiting(&self) -> usize {
        lock(&self.shared().pending).waiting
    }

    /// Resolves once everything asked for so far has been tried (a failed route is counted
    /// in [`KernelStats::failed`] and retried later; flush does not wait for that).
    pub fn flush(&self) -> impl Future<Output = Result<(), KernelError>> + Send + 'static {
        let seq = lock(&self.shared().pending).seq;
        let mut status = self.shared().status.clone();
        async move {
            status
                .wait_for(|s| s.done >= seq)
                .await
                .map(|_| ())
                .map_err(|_| KernelError::Stopped)
        }
    }

    /// Once BGP has converged after a start: removes the adopted routes that were not `set`
    /// since start and fixes the rest against a fresh dump. From then on every route of our
    /// protocol that is not wanted is removed by [`resync`](Self::resync).
    ///
    /// Returns at once; [`flush`](Self::flush) resolves once it is done.
    pub fn reconcile(&self) {
        self.enqueue(Job::Reconcile);
    }

    /// Dumps the table and re-applies what differs: a route of ours deleted or changed by
    /// someone else is put back. Meant to be called periodically (BIRD's `scan time`).
    ///
    /// Returns at once; [`flush`](Self::flush) resolves once it is done.
    pub fn resync(&self) {
        self.enqueue(Job::Resync);
    }

    /// Removes every route of our protocol from the table and forgets what was `set`: the
    /// clean shutdown, for when the routes must not outlive birdd.
    ///
    /// Returns at once; [`flush`](Self::flush) resolves once it is done.
    pub fn remove_all(&self) {
        self.enqueue(Job::RemoveAll);
    }

    /// Routes of ours in the kernel (adopted ones included), as of the last batch.
    pub fn installed(&self) -> usize {
        self.stats().installed
    }

    pub fn stats(&self) -> KernelStats {
        self.shared().status.borrow().stats
    }
}

/// One next hop as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KernelHop {
    gateway: Option<IpAddr>,
    /// 0 when we installed it without a device and did not look.
    oif: u32,
    onlink: bool,
}

impl KernelHop {
    fn matches(&self, want: &NextHop, ifindex: &HashMap<String, u32>) -> bool {
        self.gateway == Some(want.gateway)
            && match &want.onlink_dev {
                None => !self.onlink,
                Some(dev) => self.onlink && ifindex.get(dev) == Some(&self.oif),
            }
    }
}

fn same_hops(want: &[NextHop], have: &[KernelHop], ifindex: &HashMap<String, u32>) -> bool {
    want.len() == have.len()
        && want
            .iter()
            .all(|w| have.iter().any(|h| h.matches(w, ifindex)))
}

/// A route of our protocol found in a dump.
struct DumpedRoute {
    prefix: IpNet,
    metric: u32,
    kind: RouteType,
    hops: Vec<KernelHop>,
}

/// A dumped route with its next hops held in the writer's interner.
struct Dumped {
    prefix: IpNet,
    metric: u32,
    kind: RouteType,
    have: SetId,
}

/// One prefix as the writer knows it: 8 bytes, the sets held once in interners.
#[derive(Debug, Default, Clone, Copy)]
struct Route {
    /// What the daemon wants; `None`: nothing (withdrawn, or adopted and not asked for).
    want: Option<SetId>,
    /// Our route in the kernel at the configured metric, as last dumped or written.
    have: Option<SetId>,
}

enum Op {
    Replace {
        prefix: IpNet,
        hops: HopSet,
    },
    /// Also the kind: a stray of ours may be a blackhole or unreachable route.
    Delete {
        prefix: IpNet,
        metric: u32,
        kind: RouteType,
    },
}

impl Op {
    fn prefix(&self) -> IpNet {
        match self {
            Op::Replace { prefix, .. } | Op::Delete { prefix, .. } => *prefix,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    at: Instant,
}

impl Backoff {
    fn after(previous: Option<Backoff>) -> Backoff {
        let attempts = previous.map_or(0, |b| b.attempts).saturating_add(1);
        let delay = RETRY_FIRST
            .saturating_mul(1 << attempts.saturating_sub(1).min(16))
            .min(RETRY_MAX);
        Backoff {
            attempts,
            at: Instant::now() + delay,
        }
    }
}

fn via_text(hops: &[NextHop]) -> String {
    hops.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// The single owner of the routes in the kernel.
struct Writer {
    cfg: KernelConfig,
    /// Dumps and interface lookups.
    nl: Handle,
    /// Route writes, in batches.
    socket: RouteSocket,
    shared: Arc<Shared>,
    status: watch::Sender<Status>,
    /// Every prefix wanted by the daemon or ours in the kernel (at the configured metric).
    routes: RouteMap<Route>,
    wants: Interner<NextHop>,
    haves: Interner<KernelHop>,
    /// Routes with a `have`.
    ours: usize,
    /// Our routes at another metric (left by a birdd with another configuration) or of
    /// another kind (blackholes left by BIRD): adopted, removed at reconcile.
    strays: Vec<(IpNet, u32, RouteType)>,
    /// Whether the table has been read once (the routes found then are adopted).
    dumped: bool,
    /// Whether routes nobody asked for may be removed (after `reconcile`).
    reconciled: bool,
    retry: HashMap<IpNet, Backoff>,
    resync_retry: Option<Backoff>,
    ifindex: HashMap<String, u32>,
    stats: KernelStats,
}

impl Writer {
    async fn run(mut self) {
        loop {
            let (jobs, seq, closed) = {
                let mut p = lock(&self.shared.pending);
                p.waiting = 0;
                (std::mem::take(&mut p.queue), p.seq, p.closed)
            };
            for job in jobs {
                if self.resync_retry.is_some_and(|b| b.at <= Instant::now()) {
                    // Answers were lost: the kernel's view first, then what comes next.
                    self.resync().await;
                }
                match job {
                    Job::Routes(routes) => self.set_routes(routes).await,
                    Job::Resync => self.resync().await,
                    Job::Reconcile => {
                        self.reconciled = true;
                        self.resync().await;
                    }
                    Job::RemoveAll => self.remove_all().await,
                }
            }
            self.retry_due().await;
            self.publish(seq);
            if closed {
                debug!("kernel route writer stopping; its routes stay in the kernel");
                return;
            }
            let next = self
                .retry
                .values()
                .chain(self.resync_retry.iter())
                .map(|b| b.at)
                .min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                _ = sleep => {}
            }
        }
    }

    fn publish(&mut self, done: u64) {
        self.stats.installed = self.ours + self.strays.len();
        self.stats.failed = self.retry.len();
        self.status.send_replace(Status {
            stats: self.stats,
            done,
        });
    }

    /// The metric the kernel reports for our routes in `prefix`'s family.
    fn metric_for(&self, prefix: &IpNet) -> u32 {
        match (prefix, self.cfg.metric.unwrap_or(0)) {
            (IpNet::V6(_), 0) => IPV6_DEFAULT_METRIC,
            (_, m) => m,
        }
    }

    /// Records what the daemon wants for `prefix` (an empty set: nothing).
    fn set_want(&mut self, prefix: IpNet, hops: &[NextHop]) {
        let want = (!hops.is_empty()).then(|| self.wants.acquire(hops));
        let route = self.routes.get_or_default(&prefix);
        if let Some(old) = std::mem::replace(&mut route.want, want) {
            self.wants.release(old);
        }
        if route.want.is_none() && route.have.is_none() {
            self.routes.remove(&prefix);
        }
    }

    /// Records our route to `prefix` in the kernel, taking over the holder of `have`.
    fn set_have(&mut self, prefix: IpNet, have: Option<SetId>) {
        let route = self.routes.get_or_default(&prefix);
        let old = std::mem::replace(&mut route.have, have);
        let forget = route.want.is_none() && route.have.is_none();
        match old {
            Some(old) => self.haves.release(old),
            None => self.ours += 1,
        }
        if have.is_none() {
            self.ours -= 1;
        }
        if forget {
            self.routes.remove(&prefix);
        }
    }

    /// What to send to bring `prefix` to what is wanted, given what the kernel has.
    fn op_for(&self, prefix: IpNet) -> Option<Op> {
        let route = self.routes.get(&prefix)?;
        match route.want {
            Some(want) => {
                let want = self.wants.get(want);
                let present = route
                    .have
                    .is_some_and(|have| same_hops(want, self.haves.get(have), &self.ifindex));
                (!present).then(|| Op::Replace {
                    prefix,
                    hops: want.clone(),
                })
            }
            None => route.have.map(|_| Op::Delete {
                prefix,
                metric: self.metric_for(&prefix),
                kind: RouteType::Unicast,
            }),
        }
    }

    async fn set_routes(&mut self, routes: HashMap<IpNet, HopSet>) {
        let mut prefixes = Vec::with_capacity(routes.len());
        for (prefix, hops) in routes {
            // A new wish supersedes the backoff of the old one.
            self.retry.remove(&prefix);
            self.set_want(prefix, &hops);
            prefixes.push(prefix);
        }
        self.bring_to_wanted(prefixes).await;
    }

    /// Sends what `prefixes` need, a step at a time; a prefix that needs nothing has
    /// nothing to retry either.
    async fn bring_to_wanted(&mut self, prefixes: Vec<IpNet>) {
        for step in prefixes.chunks(STEP) {
            let mut ops = Vec::with_capacity(step.len());
            for &prefix in step {
                match self.op_for(prefix) {
                    Some(op) => ops.push(op),
                    None => {
                        self.retry.remove(&prefix);
                    }
                }
            }
            self.execute(ops).await;
        }
    }

    async fn retry_due(&mut self) {
        let now = Instant::now();
        if self.resync_retry.is_some_and(|b| b.at <= now) {
            self.resync().await;
        }
        let due: Vec<IpNet> = self
            .retry
            .iter()
            .filter(|(_, b)| b.at <= now)
            .map(|(p, _)| *p)
            .collect();
        self.bring_to_wanted(due).await;
    }

    /// Dumps the table and sends what differs from what is wanted.
    async fn resync(&mut self) {
        let dumped = match self.dump().await {
            Ok(d) => d,
            Err(e) => {
                self.stats.errors += 1;
                let b = Backoff::after(self.resync_retry);
                warn!(error = %e, attempt = b.attempts, "cannot read the routing table; will retry");
                self.resync_retry = Some(b);
                return;
            }
        };
        self.resync_retry = None;
        let first = !self.dumped;
        self.dumped = true;
        // The dump is the kernel's view from now on.
        for route in self.routes.values_mut() {
            if let Some(have) = route.have.take() {
                self.haves.release(have);
            }
        }
        self.routes.retain(|r| r.want.is_some());
        self.ours = 0;
        self.strays.clear();
        for d in dumped {
            if d.kind == RouteType::Unicast && d.metric == self.metric_for(&d.prefix) {
                self.set_have(d.prefix, Some(d.have));
            } else {
                self.haves.release(d.have);
                self.strays.push((d.prefix, d.metric, d.kind));
            }
        }
        if first && self.ours + self.strays.len() > 0 {
            info!(
                routes = self.ours + self.strays.len(),
                "adopted routes left by a previous birdd; they stay until reconcile"
            );
        }
        let prefixes: Vec<IpNet> = self
            .routes
            .iter()
            .filter(|(_, r)| self.reconciled || r.want.is_some())
            .map(|(p, _)| p)
            .collect();
        self.bring_to_wanted(prefixes).await;
        if self.reconciled {
            let strays = self
                .strays
                .iter()
                .map(|&(prefix, metric, kind)| Op::Delete {
                    prefix,
                    metric,
                    kind,
                })
                .collect();
            self.execute(strays).await;
        }
    }

    async fn remove_all(&mut self) {
        for route in self.routes.values_mut() {
            if let Some(want) = route.want.take() {
                self.wants.release(want);
            }
        }
        self.routes.retain(|r| r.have.is_some());
        self.retry.clear();
        let ops: Vec<Op> = match self.dump().await {
            Ok(dumped) => dumped
                .into_iter()
                .map(|d| {
                    self.haves.release(d.have);
                    Op::Delete {
                        prefix: d.prefix,
                        metric: d.metric,
                        kind: d.kind,
                    }
                })
                .collect(),
            Err(e) => {
                self.stats.errors += 1;
                warn!(error = %e, "cannot read the routing table; removing the routes known to be ours");
                self.routes
                    .iter()
                    .map(|(prefix, _)| Op::Delete {
                        prefix,
                        metric: self.metric_for(&prefix),
                        kind: RouteType::Unicast,
                    })
                    .collect()
            }
        };
        self.strays.clear();
        self.execute(ops).await;
        // Whatever failed is not retried: nothing is wanted any more.
        self.retry.clear();
    }

    /// Our routes in the table, their next hops held in `haves` (the caller releases them).
    async fn dump(&mut self) -> Result<Vec<Dumped>, KernelError> {
        let mut out: Vec<Dumped> = Vec::new();
        let nl = self.nl.clone();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut routes = nl.route().get(query).execute();
            loop {
                let msg = match routes.try_next().await {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(source) => {
                        for d in out {
                            self.haves.release(d.have);
                        }
                        return Err(KernelError::Dump {
                            table: self.cfg.table,
                            source,
                        });
                    }
                };
                if let Some(r) = parse_route(&self.cfg, &msg) {
                    out.push(Dumped {
                        prefix: r.prefix,
                        metric: r.metric,
                        kind: r.kind,
                        have: self.haves.acquire(&r.hops),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Looks up the interfaces `ops` need that are not known yet.
    async fn resolve_interfaces(&mut self, ops: &[Op]) {
        let missing: HashSet<String> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Replace { hops, .. } => Some(hops.iter()),
                Op::Delete { .. } => None,
            })
            .flatten()
            .filter_map(|h| h.onlink_dev.as_ref())
            .filter(|dev| !self.ifindex.contains_key(*dev))
            .cloned()
            .collect();
        for name in missing {
            let mut links = self.nl.link().get().match_name(name.clone()).execute();
            match links.try_next().await {
                Ok(Some(link)) => {
                    self.ifindex.insert(name, link.header.index);
                }
                Ok(None) => {}
                Err(e) if netlink_errno(&e) == Some(ENODEV) => {}
                Err(e) => debug!(interface = %name, error = %e, "cannot look up interface"),
            }
        }
    }

    /// Sends `ops` in batches and records the outcome of each.
    async fn execute(&mut self, ops: Vec<Op>) {
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let step: Vec<Op> = ops.by_ref().take(STEP).collect();
            self.execute_step(step).await;
        }
    }

    async fn execute_step(&mut self, ops: Vec<Op>) {
        self.stats.batches += 1;
        self.resolve_interfaces(&ops).await;
        let mut requests = Vec::with_capacity(ops.len());
        let mut sent = Vec::with_capacity(ops.len());
        for op in ops {
            match &op {
                Op::Replace { prefix, hops } => {
                    match build_replace(&self.cfg, &self.ifindex, *prefix, hops) {
                        Ok((msg, written)) => {
                            // Replace only what is ours: a new route is created exclusively,
                            // so a connected or someone else's route to the same prefix at
                            // the same metric is never overwritten (BIRD gets this from its
                            // `direct` protocol winning over BGP).
                            let replace = self.routes.get(prefix).is_some_and(|r| r.have.is_some());
                            requests.push(Request::New { msg, replace });
                            sent.push((op, written));
                        }
                        Err(e) => self.failed(op, e),
                    }
                }
                Op::Delete {
                    prefix,
                    metric,
                    kind,
                } => {
                    requests.push(Request::Delete(build_delete(
                        &self.cfg, *prefix, *metric, *kind,
                    )));
                    sent.push((op, Vec::new()));
                }
            }
        }
        let outcome = self.socket.apply(requests).await;
        if outcome.answers_lost {
            self.stats.errors += 1;
            warn!(
                "the kernel's answers to a batch of route changes were lost; comparing with a dump"
            );
            self.resync_retry = Some(Backoff {
                attempts: 0,
                at: Instant::now(),
            });
        }
        for ((op, written), result) in sent.into_iter().zip(outcome.results) {
            match (result, &op) {
                (Ok(()), _) => self.applied(op, written),
                // "Not found" on delete is success: the route is gone, which is what was
                // wanted (someone else removed it, or its interface went away with it).
                (Err(e), Op::Delete { .. }) if matches!(e.errno(), Some(ESRCH | ENOENT)) => {
                    self.applied(op, written)
                }
                (Err(source), Op::Replace { prefix, hops }) => {
                    let e = KernelError::Add {
                        prefix: *prefix,
                        via: via_text(hops),
                        source,
                    };
                    self.failed(op, e)
                }
                (Err(source), Op::Delete { prefix, .. }) => {
                    let e = KernelError::Delete {
                        prefix: *prefix,
                        source,
                    };
                    self.failed(op, e)
                }
            }
        }
    }

    fn applied(&mut self, op: Op, written: Vec<KernelHop>) {
        self.stats.applied += 1;
        let prefix = op.prefix();
        self.retry.remove(&prefix);
        match op {
            Op::Replace { .. } => {
                let have = self.haves.acquire(&written);
                self.set_have(prefix, Some(have));
            }
            Op::Delete { metric, kind, .. }
                if kind == RouteType::Unicast && metric == self.metric_for(&prefix) =>
            {
                if self.routes.get(&prefix).is_some_and(|r| r.have.is_some()) {
                    self.set_have(prefix, None);
                }
            }
            Op::Delete { metric, kind, .. } => {
                self.strays.retain(|s| *s != (prefix, metric, kind));
            }
        }
    }

    fn failed(&mut self, op: Op, e: KernelError) {
        self.stats.errors += 1;
        let prefix = op.prefix();
        if let Op::Replace { hops, .. } = &op {
            // The interface may have been recreated with another index.
            for dev in hops.iter().filter_map(|h| h.onlink_dev.as_ref()) {
                self.ifindex.remove(dev);
            }
        }
        let b = Backoff::after(self.retry.get(&prefix).copied());
        if b.attempts.is_power_of_two() {
            warn!(%prefix, error = %e, attempt = b.attempts, "route not programmed; will retry");
        } else {
            debug!(%prefix, error = %e, attempt = b.attempts, "route not programmed; will retry");
        }
        self.retry.insert(prefix, b);
    }
}

/// The message for `prefix` via `hops`, and the next hops as the kernel will report them.
fn build_replace(
    cfg: &KernelConfig,
    ifindex: &HashMap<String, u32>,
    prefix: IpNet,
    hops: &[NextHop],
) -> Result<(RouteMessage, Vec<KernelHop>), KernelError> {
    let mut msg = base_message(cfg, prefix);
    if let Some(metric) = cfg.metric {
        msg.attributes.push(RouteAttribute::Priority(metric));
    }
    let mut written = Vec::with_capacity(hops.len());
    let mut oif_of = |hop: &NextHop| -> Result<Option<u32>, KernelError> {
        let oif = match &hop.onlink_dev {
            Some(dev) => Some(*ifindex.get(dev).ok_or_else(|| KernelError::NoInterface {
                prefix,
                name: dev.clone(),
            })?),
            None => None,
        };
        written.push(KernelHop {
            gateway: Some(hop.gateway),
            oif: oif.unwrap_or(0),
            onlink: oif.is_some(),
        });
        Ok(oif)
    };
    let family_error = |hop: &NextHop| KernelError::Family {
        prefix,
        gateway: hop.gateway,
    };
    match hops {
        [hop] => {
            let oif = oif_of(hop)?;
            msg.attributes.push(match (prefix, hop.gateway) {
                (IpNet::V4(_), IpAddr::V4(g)) => RouteAttribute::Gateway(RouteAddress::Inet(g)),
                (IpNet::V6(_), IpAddr::V6(g)) => RouteAttribute::Gateway(RouteAddress::Inet6(g)),
                // IPv4 via an IPv6 next hop (RFC 8950, extended next hop).
                (IpNet::V4(_), IpAddr::V6(g)) => RouteAttribute::Via(RouteVia::Inet6(g)),
                (IpNet::V6(_), IpAddr::V4(_)) => return Err(family_error(hop)),
            });
            if let Some(oif) = oif {
                msg.attributes.push(RouteAttribute::Oif(oif));
                msg.header.flags |= RouteFlags::Onlink;
            }
        }
        _ => {
            let family = msg.header.address_family;
            let mut nexthops = Vec::with_capacity(hops.len());
            for hop in hops {
                let oif = oif_of(hop)?;
                let mut b = RouteNextHopBuilder::new(family)
                    .via(hop.gateway)
                    .map_err(|_| family_error(hop))?;
                if let Some(oif) = oif {
                    b = b.interface(oif).onlink();
                }
                nexthops.push(b.build());
            }
            msg.attributes.push(RouteAttribute::MultiPath(nexthops));
        }
    }
    Ok((msg, written))
}

/// The message that deletes our route to `prefix` at `metric`, whatever its next hops.
fn build_delete(cfg: &KernelConfig, prefix: IpNet, metric: u32, kind: RouteType) -> RouteMessage {
    let mut msg = base_message(cfg, prefix);
    msg.header.kind = kind;
    // Any scope, as `ip route del` does.
    msg.header.scope = RouteScope::NoWhere;
    if metric != 0 {
        msg.attributes.push(RouteAttribute::Priority(metric));
    }
    msg
}

fn base_message(cfg: &KernelConfig, prefix: IpNet) -> RouteMessage {
    // The builders start from the main table, scope universe, type unicast.
    let protocol = RouteProtocol::from(cfg.protocol);
    match prefix {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.addr(), n.prefix_len())
            .table_id(cfg.table)
            .protocol(protocol)
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.addr(), n.prefix_len())
            .table_id(cfg.table)
            .protocol(protocol)
            .build(),
    }
}

/// A unicast route of our protocol in our table, or `None`.
fn parse_route(cfg: &KernelConfig, r: &RouteMessage) -> Option<DumpedRoute> {
    if calico_kernel_routes::table(r) != cfg.table || u8::from(r.header.protocol) != cfg.protocol {
        return None;
    }
    let prefix = calico_kernel_routes::destination(r)?;
    let metric = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(0);
    let multipath = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::MultiPath(nhs) => Some(nhs),
        _ => None,
    });
    let hops = match multipath {
        Some(nhs) => nhs
            .iter()
            .map(|nh| KernelHop {
                gateway: gateway_in(&nh.attributes),
                oif: nh.interface_index,
                onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
            })
            .collect(),
        None => vec![KernelHop {
            gateway: gateway_in(&r.attributes),
            oif: calico_kernel_routes::output_interface(r).unwrap_or(0),
            onlink: r.header.flags.contains(RouteFlags::Onlink),
        }],
    };
    Some(DumpedRoute {
        prefix,
        metric,
        kind: r.header.kind,
        hops,
    })
}

fn gateway_in(attributes: &[RouteAttribute]) -> Option<IpAddr> {
    attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(IpAddr::V4(*g)),
        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => Some(IpAddr::V6(*g)),
        RouteAttribute::Via(RouteVia::Inet6(g)) => Some(IpAddr::V6(*g)),
        RouteAttribute::Via(RouteVia::Inet(g)) => Some(IpAddr::V4(*g)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KernelConfig {
        KernelConfig::default()
    }

    #[test]
    fn a_single_next_hop_is_a_gateway_and_several_are_one_multipath_route() {
        let p: IpNet = "10.1.0.0/24".parse().expect("prefix");
        let one = [NextHop::via("10.0.0.2".parse().expect("ip"))];
        let (msg, written) = build_replace(&cfg(), &HashMap::new(), p, &one).expect("built");
        assert_eq!(u8::from(msg.header.protocol), PROTO_BIRD);
        assert!(msg.attributes.iter().any(|a| matches!(
            a,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) if *g == Ipv4Addr::new(10, 0, 0, 2)
        )));
        assert!(
            !msg.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Priority(_)))
        );
        assert_eq!(written.len(), 1);

        let two = [
            NextHop::via("10.0.0.2".parse().expect("ip")),
            NextHop::onlink("10.9.0.1".parse().expect("ip"), "tunl0"),
        ];
        let ifindex = HashMap::from([("tunl0".to_string(), 7)]);
        let (msg, written) = build_replace(&cfg(), &ifindex, p, &two).expect("built");
        let nhs = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::MultiPath(n) => Some(n),
                _ => None,
            })
            .expect("multipath");
        assert_eq!(nhs.len(), 2);
        assert_eq!(nhs[1].interface_index, 7);
        assert!(nhs[1].flags.contains(RouteNextHopFlags::Onlink));
        assert!(same_hops(&two, &written, &ifindex));
    }

    #[test]
    fn a_missing_interface_or_a_v4_gateway_for_a_v6_prefix_is_refused_before_sending() {
        let p: IpNet = "10.1.0.0/24".parse().expect("prefix");
        let hop = [NextHop::onlink("10.9.0.1".parse().expect("ip"), "tunl0")];
        assert!(matches!(
            build_replace(&cfg(), &HashMap::new(), p, &hop),
            Err(KernelError::NoInterface { .. })
        ));
        let p6: IpNet = "fd00::/64".parse().expect("prefix");
        let hop = [NextHop::via("10.9.0.1".parse().expect("ip"))];
        assert!(matches!(
            build_replace(&cfg(), &HashMap::new(), p6, &hop),
            Err(KernelError::Family { .. })
        ));
    }

    #[test]
    fn a_large_table_id_goes_in_an_attribute() {
        let c = KernelConfig {
            table: 1000,
            metric: Some(32),
            ..cfg()
        };
        let msg = build_delete(
            &c,
            "10.1.0.0/24".parse().expect("prefix"),
            32,
            RouteType::Unicast,
        );
        assert!(
            msg.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Table(1000)))
        );
        assert!(
            msg.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Priority(32)))
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::after(None);
        assert_eq!(b.attempts, 1);
        for _ in 0..40 {
            b = Backoff::after(Some(b));
        }
        assert!(b.at <= Instant::now() + RETRY_MAX);
    }
}
