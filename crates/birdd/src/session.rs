//! One BGP session's I/O shell around the sans-IO [`calico_bgp::fsm::Session`]: the TCP
//! connection, the timers, and the channels to the daemon.
//!
//! ```text
//!              commands (bounded)                      frames, timers
//!  daemon ────────────────────────▶ session task ◀──────────── TCP read half
//!    ▲                                 │    │
//!    └──── events (bounded) ───────────┘    └──▶ writer task ──▶ TCP write half
//!                                          (bounded queue; one per connection)
//! ```
//!
//! Timers are checked before reads (`biased`), so a peer flooding UPDATEs never delays our
//! KEEPALIVEs; before the hold timer is allowed to expire, bytes already waiting in the
//! socket are read first, so a busy daemon never mistakes its own backlog for a dead peer.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use calico_bgp::fsm::{
    DownReason, Incoming, Input, Negotiated, Output, Session, SessionConfig, State, Timer,
};
use calico_bgp::types::Family;
use calico_bgp::wire::{self, Codec, Message, Notification, RouteRefresh, Update};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::secrets::Password;
use crate::sockopt;

/// The daemon's number for a peer.
pub type PeerKey = u32;

/// How to reach a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
    /// Our address for the connection (Calico's `source address`, the node IP).
    pub source: Option<IpAddr>,
    /// GTSM: the peer is this many hops away; we send with TTL 255 and drop what arrives
    /// with less than 256 - hops. `None`: the system's TTL, nothing checked.
    pub ttl_security: Option<u8>,
    /// The TCP MD5 key of the session.
    pub password: Option<Password>,
}

/// What a session tells the daemon.
#[derive(Debug)]
pub enum SessionEvent {
    State {
        peer: PeerKey,
        from: State,
        to: State,
        /// BIRD-style info: the last error, or what the session waits for.
        info: String,
    },
    Established {
        peer: PeerKey,
        negotiated: Box<Negotiated>,
        local: SocketAddr,
    },
    Update {
        peer: PeerKey,
        update: Box<Update>,
    },
    RouteRefresh {
        peer: PeerKey,
        request: RouteRefresh,
    },
    Down {
        peer: PeerKey,
        reason: DownReason,
        was_established: bool,
        stale_families: Vec<Family>,
        restart_time: u16,
    },
}

/// What the daemon tells a session.
#[derive(Debug)]
pub enum SessionCommand {
    /// Encoded messages to write, in order.
    Send(Vec<Vec<u8>>),
    /// A connection the listener accepted from this peer's address.
    Incoming(TcpStream),
    /// Cease and stay down (the peer was removed or its configuration changed).
    Stop(Notification),
}

/// The daemon's end of a running session.
#[derive(Debug)]
pub struct SessionHandle {
    pub commands: mpsc::Sender<SessionCommand>,
}

/// Queued bytes above which the session stops taking new UPDATEs from the daemon (which
/// then keeps coalescing them per destination).
const WRITE_BACKLOG: usize = 1 << 20;

pub fn spawn(
    peer: PeerKey,
    endpoint: Endpoint,
    cfg: SessionConfig,
    events: mpsc::Sender<SessionEvent>,
) -> SessionHandle {
    let (tx, rx) = mpsc::channel(64);
    let shell = Shell {
        peer,
        endpoint,
        fsm: Session::new(cfg),
        events,
        conn: None,
        rival: None,
        connecting: None,
        timers: HashMap::new(),
        pending: VecDeque::new(),
        pending_bytes: 0,
        buf: Vec::with_capacity(64 * 1024),
        established_at: None,
    };
    // Detached: the session ends when the daemon drops `commands`.
    tokio::spawn(shell.run(rx));
    SessionHandle { commands: tx }
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;

struct Conn {
    read: OwnedReadHalf,
    write: mpsc::Sender<Vec<u8>>,
    local: SocketAddr,
    /// We opened it (the RFC 4271 §6.8 collision rule keeps the dominant side's connection).
    outgoing: bool,
}

impl Conn {
    fn new(stream: TcpStream, outgoing: bool) -> std::io::Result<Conn> {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let local = stream.local_addr()?;
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(writer(write, rx));
        Ok(Conn {
            read,
            write: tx,
            local,
            outgoing,
        })
    }

    /// Queues a Cease "connection collision resolution"; dropping the connection then sends
    /// it and closes.
    fn cease_collision(&self) {
        let _ = self.write.try_send(collision_notification());
    }
}

/// The peer's connection kept beside ours while both sides' OPENs cross (RFC 4271 §6.8).
struct Rival {
    conn: Conn,
    /// Bytes read and not yet framed: the peer's OPEN, once it is whole.
    buf: Vec<u8>,
}

struct Shell {
    peer: PeerKey,
    endpoint: Endpoint,
    fsm: Session,
    events: mpsc::Sender<SessionEvent>,
    conn: Option<Conn>,
    /// A second connection, opened by the peer during our OPEN exchange, until an OPEN
    /// settles which of the two stays.
    rival: Option<Rival>,
    connecting: Option<ConnectFuture>,
    timers: HashMap<Timer, Instant>,
    /// Bytes for the writer, waiting for room in its queue.
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    /// Bytes read and not yet framed.
    buf: Vec<u8>,
    /// When the session last reached Established.
    established_at: Option<Instant>,
}

/// A peer's connection this soon after Established is the tail of a connection collision
/// (its half of a simultaneous open, accepted late), not a restart: a restarting router
/// takes longer than this to come back.
const RESTART_GUARD: Duration = Duration::from_secs(2);

enum Wake {
    Command(Option<SessionCommand>),
    Timer(Timer),
    Connected(std::io::Result<TcpStream>),
    Read(std::io::Result<usize>),
    RivalRead(std::io::Result<usize>),
    Wrote,
}

impl Shell {
    async fn run(mut self, mut commands: mpsc::Receiver<SessionCommand>) {
        self.handle(Input::Start).await;
        loop {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let wake = {
                let take_commands = self.pending_bytes < WRITE_BACKLOG;
                let writer = self.conn.as_ref().map(|c| c.write.clone());
                let has_pending = !self.pending.is_empty();
                let is_connecting = self.connecting.is_some();
                let has_conn = self.conn.is_some();
                let has_rival = self.rival.is_some();
                let connecting = self.connecting.as_mut();
                let reading = self.conn.as_mut().map(|c| (&mut c.read, &mut self.buf));
                let rival = self.rival.as_mut().map(|r| (&mut r.conn.read, &mut r.buf));
                tokio::select! {
                    biased;
                    _ = sleep_until(next_timer.map(|(_, at)| at)), if next_timer.is_some() => {
                        match next_timer {
                            Some((t, _)) => Wake::Timer(t),
                            None => continue,
                        }
                    }
                    cmd = commands.recv(), if take_commands => Wake::Command(cmd),
                    permit = reserve(writer), if has_pending => match permit {
                        Some(p) => {
                            if let Some(bytes) = self.pending.pop_front() {
                                self.pending_bytes -= bytes.len();
                                p.send(bytes);
                            }
                            Wake::Wrote
                        }
                        None => Wake::Read(Ok(0)),
                    },
                    res = poll_connect(connecting), if is_connecting => Wake::Connected(res),
                    res = read_some(reading), if has_conn => Wake::Read(res),
                    res = read_some(rival), if has_rival => Wake::RivalRead(res),
                }
            };
            match wake {
                Wake::Command(None) => break,
                Wake::Command(Some(cmd)) => self.command(cmd).await,
                Wake::Timer(t) => {
                    self.timers.remove(&t);
                    if t == Timer::Hold && self.drain_readable().await {
                        continue;
                    }
                    self.handle(Input::Timer(t)).await;
                }
                Wake::Connected(res) => {
                    self.connecting = None;
                    match res {
                        Ok(stream) => self.adopt(stream, true).await,
                        Err(e) => {
                            let msg = connect_error(&e);
                            self.handle(Input::ConnectFailed(msg)).await
                        }
                    }
                }
                Wake::Read(Ok(0)) => {
                    self.handle(Input::Closed("connection closed by the peer".into()))
                        .await
                }
                Wake::Read(Ok(_)) => self.frames().await,
                Wake::Read(Err(e)) => self.handle(Input::Closed(e.to_string())).await,
                Wake::RivalRead(Ok(n)) if n > 0 => self.rival_read().await,
                Wake::RivalRead(_) => self.rival = None,
                Wake::Wrote => {}
            }
            if self.rival.is_some() {
                self.settle_rival().await;
            }
        }
        // The daemon dropped us: close politely.
        self.handle(Input::Stop(Notification::peer_deconfigured()))
            .await;
        self.disconnect();
    }

    async fn command(&mut self, cmd: SessionCommand) {
        match cmd {
            SessionCommand::Send(msgs) => {
                if self.fsm.state() == State::Established {
                    for m in msgs {
                        self.queue(m);
                    }
                }
            }
            SessionCommand::Incoming(stream) => {
                let ours = self.conn.as_ref().is_some_and(|c| c.outgoing);
                let decision = match self.fsm.incoming(ours) {
                    Incoming::Restart
                        if self
                            .established_at
                            .is_none_or(|t| t.elapsed() < RESTART_GUARD) =>
                    {
                        Incoming::Refuse
                    }
                    d => d,
                };
                match decision {
                    Incoming::Take | Incoming::Restart => {
                        if let Some(r) = self.rival.take() {
                            r.conn.cease_collision();
                        }
                        if decision == Incoming::Restart {
                            tracing::info!(peer = %self.endpoint.address,
                                "the peer connected again while the session was up: it restarted (graceful restart), its routes are kept as stale");
                            self.handle(Input::Closed(
                                "the peer connected again (graceful restart)".into(),
                            ))
                            .await;
                        } else if self.conn.is_some() {
                            self.handle(Input::Collision).await;
                        }
                        self.connecting = None;
                        self.adopt(stream, false).await;
                    }
                    Incoming::Track => match Conn::new(stream, false) {
                        Ok(conn) => {
                            tracing::debug!(peer = %self.endpoint.address, "connection collision: both connections go on until an OPEN arrives");
                            let _ = conn.write.try_send(self.fsm.open_message());
                            if let Some(old) = self.rival.replace(Rival {
                                conn,
                                buf: Vec::new(),
                            }) {
                                old.conn.cease_collision();
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "a connection from the peer"),
                    },
                    Incoming::Refuse => {
                        tracing::debug!(peer = %self.endpoint.address, "refusing a second connection");
                        let _ = stream.try_write(&collision_notification());
                    }
                }
            }
            SessionCommand::Stop(n) => self.handle(Input::Stop(n)).await,
        }
    }

    async fn adopt(&mut self, stream: TcpStream, outgoing: bool) {
        match Conn::new(stream, outgoing) {
            Ok(conn) => {
                self.buf.clear();
                self.conn = Some(conn);
                self.handle(Input::Connected).await;
            }
            Err(e) => self.handle(Input::ConnectFailed(e.to_string())).await,
        }
    }

    /// The rival connection sent something: once its first message is whole, it must be
    /// the peer's OPEN, whose identifier settles the collision.
    async fn rival_read(&mut self) {
        let Some(r) = &self.rival else {
            return;
        };
        let peer_id = match wire::frame_len(&r.buf) {
            Ok(Some(len)) if r.buf.len() >= len => {
                match wire::decode_message(&r.buf[..len], &Codec::default()) {
                    Ok(Message::Open(open)) => open.router_id,
                    // Not an OPEN first: the peer gave this connection up, or it is broken.
                    _ => {
                        self.rival = None;
                        return;
                    }
                }
            }
            Ok(_) => return,
            Err(_) => {
                self.rival = None;
                return;
            }
        };
        self.settle_collision(peer_id).await;
    }

    /// After every event while a rival connection exists: the session's own progress may
    /// settle the collision too.
    async fn settle_rival(&mut self) {
        match self.fsm.state() {
            State::OpenSent => {}
            State::OpenConfirm => {
                if let Some(id) = self.fsm.negotiated().map(|n| n.peer_router_id) {
                    self.settle_collision(id).await;
                }
            }
            // RFC 4271 §6.8: an Established session always stays.
            State::Established => {
                if let Some(r) = self.rival.take() {
                    r.conn.cease_collision();
                }
            }
            // Our connection is gone (the peer closed it, having settled the collision
            // itself, or it failed): the peer's connection carries on at once.
            State::Idle | State::Connect | State::Active => {
                if self.conn.is_none()
                    && let Some(r) = self.rival.take()
                {
                    self.promote(r).await;
                }
            }
        }
    }

    /// Keeps the connection the dominant side opened and closes the other.
    async fn settle_collision(&mut self, peer_id: std::net::Ipv4Addr) {
        let Some(r) = self.rival.take() else {
            return;
        };
        let ours = self.conn.as_ref().is_some_and(|c| c.outgoing);
        let open_exchange = matches!(self.fsm.state(), State::OpenSent | State::OpenConfirm);
        if ours && open_exchange && self.fsm.peer_is_dominant(peer_id) {
            tracing::debug!(peer = %self.endpoint.address, "connection collision: the peer's connection stays");
            self.promote(r).await;
        } else {
            tracing::debug!(peer = %self.endpoint.address, "connection collision: our connection stays");
            r.conn.cease_collision();
        }
    }

    /// Runs the session on the rival connection from now on (our OPEN is already on it).
    async fn promote(&mut self, r: Rival) {
        if self.conn.is_some() {
            self.queue(collision_notification());
            self.disconnect();
        }
        self.connecting = None;
        self.conn = Some(r.conn);
        self.buf = r.buf;
        self.handle(Input::Replaced).await;
        if self.fsm.state() != State::OpenSent {
            // Stopped meanwhile.
            self.disconnect();
            return;
        }
        self.frames().await;
    }

    /// Frames every complete message in the buffer and feeds it to the state machine.
    async fn frames(&mut self) {
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            let len = match wire::frame_len(rest) {
                Ok(Some(len)) if rest.len() >= len => len,
                Ok(_) => break,
                // A broken header: hand it over whole; decoding reports the error.
                Err(_) => rest.len(),
            };
            let frame = self.buf[start..start + len].to_vec();
            start += len;
            self.handle(Input::Frame(&frame)).await;
            if self.conn.is_none() {
                return;
            }
        }
        self.buf.drain(..start);
    }

    /// Reads whatever the socket already holds, without waiting; true if anything came in
    /// (so a hold timer about to expire was really our own backlog).
    async fn drain_readable(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let mut got = false;
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match conn.read.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    got = true;
                }
                Err(_) => break,
            }
        }
        if got {
            self.frames().await;
        }
        got && self.fsm.state() != State::Idle
    }

    fn queue(&mut self, bytes: Vec<u8>) {
        self.pending_bytes += bytes.len();
        self.pending.push_back(bytes);
    }

    async fn handle(&mut self, input: Input<'_>) {
        let outputs = self.fsm.handle(input);
        for o in outputs {
            self.execute(o).await;
        }
    }

    async fn execute(&mut self, o: Output) {
        let peer = self.peer;
        match o {
            Output::Connect => {
                if self.conn.is_none() && self.connecting.is_none() {
                    self.connecting = Some(Box::pin(connect(self.endpoint.clone())));
                }
            }
            Output::Send(bytes) => self.queue(bytes),
            Output::Disconnect => self.disconnect(),
            Output::Timer(t, Some(d)) => {
                self.timers.insert(t, Instant::now() + jittered(t, d));
            }
            Output::Timer(t, None) => {
                self.timers.remove(&t);
            }
            Output::StateChanged { from, to } => {
                let info = self.info(to);
                self.emit(SessionEvent::State {
                    peer,
                    from,
                    to,
                    info,
                })
                .await;
            }
            Output::Established(n) => {
                self.established_at = Some(Instant::now());
                let local = self
                    .conn
                    .as_ref()
                    .map(|c| c.local)
                    .unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
                self.emit(SessionEvent::Established {
                    peer,
                    negotiated: Box::new(n),
                    local,
                })
                .await;
            }
            Output::Update(u) => {
                self.emit(SessionEvent::Update {
                    peer,
                    update: Box::new(u),
                })
                .await
            }
            Output::RouteRefresh(request) => {
                self.emit(SessionEvent::RouteRefresh { peer, request })
                    .await
            }
            Output::Down {
                reason,
                was_established,
                stale_families,
                restart_time,
            } => {
                self.emit(SessionEvent::Down {
                    peer,
                    reason,
                    was_established,
                    stale_families,
                    restart_time,
                })
                .await
            }
        }
    }

    /// Hands what is queued to the writer, which sends it and closes the socket.
    fn disconnect(&mut self) {
        self.connecting = None;
        let Some(conn) = self.conn.take() else {
            return;
        };
        let pending: Vec<Vec<u8>> = self.pending.drain(..).collect();
        self.pending_bytes = 0;
        let write = conn.write;
        tokio::spawn(async move {
            for bytes in pending {
                let sent = tokio::time::timeout(Duration::from_secs(2), write.send(bytes)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
        });
        drop(conn.read);
    }

    fn info(&self, to: State) -> String {
        match (to, self.fsm.last_error()) {
            (State::Established, _) => String::new(),
            (_, Some(e)) => e.to_string(),
            (State::Active, None) if self.fsm.config().passive => {
                "waiting for the peer to connect".into()
            }
            _ => String::new(),
        }
    }

    async fn emit(&mut self, ev: SessionEvent) {
        // The daemon going away ends us through the command channel; nothing to do here.
        let _ = self.events.send(ev).await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn reserve(tx: Option<mpsc::Sender<Vec<u8>>>) -> Option<mpsc::OwnedPermit<Vec<u8>>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

async fn poll_connect(f: Option<&mut ConnectFuture>) -> std::io::Result<TcpStream> {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn read_some(conn: Option<(&mut OwnedReadHalf, &mut Vec<u8>)>) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    match conn {
        Some((r, buf)) => {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            r.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}

async fn connect(ep: Endpoint) -> std::io::Result<TcpStream> {
    let target = SocketAddr::new(ep.address, ep.port);
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(src) = ep.source
        && src.is_ipv4() == target.is_ipv4()
    {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    // Both before the SYN: it must be signed, and the peer's SYN-ACK already checked.
    if let Some(pw) = &ep.password {
        sockopt::set_md5_key(&socket, target.is_ipv6(), ep.address, Some(pw.bytes()))?;
    }
    if let Some(hops) = ep.ttl_security {
        sockopt::set_ttl_security(&socket, ep.address, hops)?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out"))??;
    Ok(stream)
}

fn collision_notification() -> Vec<u8> {
    wire::encode_notification(&Notification::connection_collision())
}

/// RFC 4271 §10: the timers that start attempts and KEEPALIVEs run 75-100% of their
/// value, so two speakers that failed together do not retry in lockstep (BIRD does the
/// same). The hold timer is a promise to the peer and stays exact.
fn jittered(t: Timer, d: Duration) -> Duration {
    match t {
        Timer::ConnectRetry | Timer::IdleHold | Timer::Keepalive => {
            d.mul_f64(rand::random_range(0.75..=1.0))
        }
        Timer::Hold => d,
    }
}

/// BIRD's words for why a connection failed, as `calicoctl node status` shows them.
fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "Connect: Connection refused".into(),
        std::io::ErrorKind::TimedOut => "Connect: Connection timed out".into(),
        _ => format!("Connect: {e}"),
    }
}

async fn writer(mut w: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if w.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
