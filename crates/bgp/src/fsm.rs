//! The RFC 4271 §8 session state machine, without I/O.
//!
//! The I/O shell feeds [`Input`]s (a TCP connection came up or failed, a framed message
//! arrived, a timer fired) and carries out the [`Output`]s (connect, send these bytes, close,
//! arm or cancel a timer, hand an UPDATE to the RIB). Time never appears here except as
//! durations for the shell's timers, so every transition is testable byte for byte.
//!
//! Beyond RFC 4271: capabilities are negotiated (RFC 5492) into a [`Negotiated`] that fixes
//! the UPDATE encoding; graceful restart (RFC 4724) decides whether a dropped session leaves
//! its routes in place as stale; a session that failed waits before it tries again, longer
//! each time (BIRD's `error wait time 5,30` in Calico's template).

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::types::Family;
use crate::wire::{
    self, AddPathMode, Capability, Codec, GracefulRestart, Message, Notification, Open,
    RouteRefresh, Update,
};

/// RFC 4271 §8.2.2: the large hold timer (4 minutes) until the peer's OPEN arrives.
const OPEN_HOLD: Duration = Duration::from_secs(240);

/// What to do with a connection the peer opened; see [`Session::incoming`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Run the session on it (after `Input::Collision` if a connection is up).
    Take,
    /// Keep it beside the current one: send [`Session::open_message`] on it, and when an OPEN
    /// arrives on either, keep the connection the dominant side opened
    /// ([`Session::peer_is_dominant`]), switching with `Input::Replaced`.
    Track,
    /// Close it with Cease "connection collision resolution".
    Refuse,
    /// The peer restarted while the session was up (RFC 4724 §4.2: a new connection from a
    /// graceful-restart peer in Established): end the session as a lost connection, so its
    /// routes stay as stale, with `Input::Closed`, then run the session on the new one.
    Restart,
}

/// RFC 4271 session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// The timers the shell keeps for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    /// The wait after a failure before the session starts again.
    IdleHold,
}

/// Graceful restart as this speaker offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// How long peers should keep our routes while we restart (seconds, at most 4095).
    pub restart_time: u16,
    /// Set in the first OPEN after the daemon started (the R bit): peers then keep our
    /// routes until we send End-of-RIB.
    pub restarting: bool,
    /// Whether our forwarding state (the routes in the kernel) survives a restart.
    pub forwarding_preserved: bool,
}

/// How one session is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds (BIRD's default, which Calico keeps, is 240).
    pub hold_time: u16,
    /// Keepalive interval; `None` = a third of the negotiated hold time.
    pub keepalive_time: Option<u16>,
    pub connect_retry: Duration,
    /// First and largest wait after an error (BIRD `error wait time 5,30`).
    pub error_wait: (Duration, Duration),
    /// Never connect; wait for the peer (Calico's mesh: the side with the higher address).
    pub passive: bool,
    pub families: Vec<Family>,
    pub graceful_restart: Option<GracefulRestartConfig>,
    pub add_path: Vec<(Family, AddPathMode)>,
}

impl SessionConfig {
    /// Calico's defaults for a peer: BIRD's timers as Calico's template sets them.
    pub fn new(local_as: u32, remote_as: u32, router_id: Ipv4Addr) -> SessionConfig {
        SessionConfig {
            local_as,
            remote_as,
            router_id,
            hold_time: 240,
            keepalive_time: None,
            connect_retry: Duration::from_secs(5),
            error_wait: (Duration::from_secs(5), Duration::from_secs(30)),
            passive: false,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            graceful_restart: Some(GracefulRestartConfig {
                restart_time: 120,
                restarting: false,
                forwarding_preserved: true,
            }),
            add_path: Vec::new(),
        }
    }

    pub fn ibgp(&self) -> bool {
        self.local_as == self.remote_as
    }
}

/// What the two OPENs agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_router_id: Ipv4Addr,
    pub hold_time: u16,
    pub keepalive_time: u16,
    /// Families both sides announced (IPv4 unicast when the peer sent no multiprotocol
    /// capability at all, RFC 4760 §8).
    pub families: Vec<Family>,
    pub codec: Codec,
    pub peer_route_refresh: bool,
    /// The peer's graceful restart capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestart>,
}

impl Negotiated {
    /// Families whose routes the peer keeps while it restarts (it preserved forwarding).
    pub fn peer_gr_families(&self) -> Vec<Family> {
        match &self.peer_graceful_restart {
            Some(gr) => gr
                .families
                .iter()
                .filter(|(f, _)| self.families.contains(f))
                .map(|(f, _)| *f)
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Why a session went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION.
    Sent(Notification),
    /// The peer sent this NOTIFICATION.
    Received(Notification),
    /// The TCP connection closed or failed.
    ConnectionLost(String),
    /// Stopped by configuration.
    Stopped,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::Sent(n) => write!(f, "sent: {n}"),
            DownReason::Received(n) => write!(f, "received: {n}"),
            DownReason::ConnectionLost(e) => write!(f, "connection lost: {e}"),
            DownReason::Stopped => f.write_str("stopped"),
        }
    }
}

/// Events for the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// Begin (or begin again after a stop).
    Start,
    /// Stop with this NOTIFICATION (Cease) and stay down until `Start`.
    Stop(Notification),
    /// A TCP connection to the peer is up (ours or theirs; the shell chose one).
    Connected,
    /// Our connection attempt failed.
    ConnectFailed(String),
    /// The TCP connection closed or broke.
    Closed(String),
    /// One framed message (header included).
    Frame(&'a [u8]),
    /// The shell is replacing the current connection with the peer's incoming one (a
    /// collision [`Session::incoming`] answered with `Take`): Cease the current one, then
    /// expect `Connected`.
    Collision,
    /// The shell switched to a connection it tracked during a collision (on which our OPEN,
    /// [`Session::open_message`], is already sent) because that one won: wait for the
    /// peer's OPEN there.
    Replaced,
    Timer(Timer),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer.
    Connect,
    /// Write these bytes.
    Send(Vec<u8>),
    /// Close the TCP connection (after writing what was queued).
    Disconnect,
    /// Arm a timer (replacing it if armed) or, with `None`, cancel it.
    Timer(Timer, Option<Duration>),
    StateChanged {
        from: State,
        to: State,
    },
    /// The session is up with these parameters: send the initial routes.
    Established(Negotiated),
    Update(Update),
    /// The peer asks for our routes of this family again.
    RouteRefresh(RouteRefresh),
    /// The session left Established (or failed on the way). `stale_families` lists the
    /// families whose routes must be kept as stale (the peer does graceful restart, RFC
    /// 4724 §4.2) instead of withdrawn; `restart_time` is how long.
    Down {
        reason: DownReason,
        was_established: bool,
        stale_families: Vec<Family>,
        restart_time: u16,
    },
}

/// One BGP session's state machine.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    negotiated: Option<Negotiated>,
    /// Failures in a row, for the growing wait before the next attempt.
    failures: u32,
    /// Set by `Stop`: no automatic restart.
    stopped: bool,
    last_error: Option<DownReason>,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        Session {
            cfg,
            state: State::Idle,
            negotiated: None,
            failures: 0,
            stopped: true,
            last_error: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// What was negotiated, while Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The codec for UPDATEs (defaults before Established).
    pub fn codec(&self) -> Codec {
        self.negotiated
            .as_ref()
            .map(|n| n.codec)
            .unwrap_or_default()
    }

    /// Why the session last went down, for `show` output.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// What to do with a connection the peer opened (RFC 4271 §6.8). `current_is_ours`:
    /// the connection the session runs on now was opened by us.
    pub fn incoming(&self, current_is_ours: bool) -> Incoming {
        match self.state {
            State::Idle if self.stopped => Incoming::Refuse,
            State::Idle | State::Connect | State::Active => Incoming::Take,
            // The peer connecting again while we wait on its earlier connection: it gave
            // that one up.
            State::OpenSent | State::OpenConfirm if !current_is_ours => Incoming::Take,
            // Our OPEN is out and the peer's identifier unknown: both connections go on
            // until one of them brings the peer's OPEN.
            State::OpenSent => Incoming::Track,
            State::OpenConfirm => match &self.negotiated {
                Some(n) if self.peer_is_dominant(n.peer_router_id) => Incoming::Take,
                _ => Incoming::Refuse,
            },
            State::Established
                if self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.peer_graceful_restart.is_some()) =>
            {
                Incoming::Restart
            }
            State::Established => Incoming::Refuse,
        }
    }

    /// Whether the peer's identifier beats ours, so that in a collision the connection the
    /// peer opened stays (RFC 4271 §6.8; equal identifiers, possible between ASes: the
    /// higher AS number, RFC 6286 §2.3).
    pub fn peer_is_dominant(&self, peer_router_id: Ipv4Addr) -> bool {
        (u32::from(peer_router_id), self.cfg.remote_as)
            > (u32::from(self.cfg.router_id), self.cfg.local_as)
    }

    /// Our OPEN, as the session sends it on a new connection.
    pub fn open_message(&self) -> Vec<u8> {
        wire::encode_open(&self.our_open())
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, input: Input<'_>) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                self.stopped = false;
                if self.state == State::Idle {
                    self.begin(&mut out);
                }
            }
            Input::Stop(n) => {
                self.stopped = true;
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    out.push(Output::Send(wire::encode_notification(&n)));
                }
                self.down(DownReason::Stopped, &mut out);
            }
            Input::Connected => self.connected(&mut out),
            Input::ConnectFailed(e) => {
                if self.state == State::Connect {
                    self.last_error = Some(DownReason::ConnectionLost(e));
                    self.set_state(State::Active, &mut out);
                    out.push(Output::Timer(
                        Timer::ConnectRetry,
                        Some(self.cfg.connect_retry),
                    ));
                }
            }
            Input::Closed(e) => match self.state {
                State::Idle | State::Connect | State::Active => {}
                _ => self.down(DownReason::ConnectionLost(e), &mut out),
            },
            Input::Frame(bytes) => self.frame(bytes, &mut out),
            Input::Collision => {
                if matches!(self.state, State::OpenSent | State::OpenConfirm) {
                    let n = Notification::connection_collision();
                    out.push(Output::Send(wire::encode_notification(&n)));
                    out.push(Output::Disconnect);
                    out.push(Output::Timer(Timer::Hold, None));
                    out.push(Output::Timer(Timer::Keepalive, None));
                    self.negotiated = None;
                    self.set_state(State::Active, &mut out);
                }
            }
            Input::Replaced => {
                if !self.stopped && self.state != State::Established {
                    for t in [Timer::ConnectRetry, Timer::IdleHold, Timer::Keepalive] {
                        out.push(Output::Timer(t, None));
                    }
                    out.push(Output::Timer(Timer::Hold, Some(OPEN_HOLD)));
                    self.negotiated = None;
                    self.set_state(State::OpenSent, &mut out);
                }
            }
            Input::Timer(t) => self.timer(t, &mut out),
        }
        out
    }

    // ===== transitions =====

    fn begin(&mut self, out: &mut Vec<Output>) {
        if self.cfg.passive {
            self.set_state(State::Active, out);
        } else {
            self.set_state(State::Connect, out);
            out.push(Output::Connect);
            out.push(Output::Timer(
                Timer::ConnectRetry,
                Some(self.cfg.connect_retry),
            ));
        }
    }

    fn connected(&mut self, out: &mut Vec<Output>) {
        if !matches!(self.state, State::Idle | State::Connect | State::Active) || self.stopped {
            return;
        }
        out.push(Output::Timer(Timer::ConnectRetry, None));
        out.push(Output::Timer(Timer::IdleHold, None));
        out.push(Output::Send(self.open_message()));
        out.push(Output::Timer(Timer::Hold, Some(OPEN_HOLD)));
        self.set_state(State::OpenSent, out);
    }

    fn timer(&mut self, t: Timer, out: &mut Vec<Output>) {
        match t {
            Timer::ConnectRetry => {
                if matches!(self.state, State::Connect | State::Active) && !self.cfg.passive {
                    self.set_state(State::Connect, out);
                    out.push(Output::Connect);
                    out.push(Output::Timer(
                        Timer::ConnectRetry,
                        Some(self.cfg.connect_retry),
                    ));
                }
            }
            Timer::Hold => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    self.fail(Notification::hold_timer_expired(), out);
                }
            }
            Timer::Keepalive => {
                if matches!(self.state, State::OpenConfirm | State::Established) {
                    out.push(Output::Send(wire::encode_keepalive()));
                    if let Some(k) = self.keepalive_interval() {
                        out.push(Output::Timer(Timer::Keepalive, Some(k)));
                    }
                }
            }
            Timer::IdleHold => {
                if self.state == State::Idle && !self.stopped {
                    self.begin(out);
                }
            }
        }
    }

    fn frame(&mut self, bytes: &[u8], out: &mut Vec<Output>) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        let msg = match wire::decode_message(bytes, &self.codec()) {
            Ok(m) => m,
            // The codec's "ignore this message" convention (an unknown family in a
            // ROUTE-REFRESH, RFC 2918 §4).
            Err(n) if n.code == 0 => return,
            Err(n) => return self.fail(n, out),
        };
        if let Message::Notification(n) = msg {
            // RFC 4271 §6: a NOTIFICATION ends the session; nothing is sent back.
            return self.down(DownReason::Received(n), out);
        }
        match self.state {
            State::OpenSent => match msg {
                Message::Open(open) => self.open_received(open, out),
                _ => self.fail(Notification::fsm_unexpected_in_open_sent(), out),
            },
            State::OpenConfirm => match msg {
                Message::Keepalive => self.establish(out),
                _ => self.fail(Notification::fsm_unexpected_in_open_confirm(), out),
            },
            State::Established => {
                self.restart_hold(out);
                match msg {
                    Message::Keepalive => {}
                    Message::Update(u) => out.push(Output::Update(u)),
                    Message::RouteRefresh(rr) => out.push(Output::RouteRefresh(rr)),
                    Message::Open(_) | Message::Notification(_) => {
                        self.fail(Notification::fsm_unexpected_in_established(), out)
                    }
                }
            }
            _ => {}
        }
    }

    fn open_received(&mut self, open: Open, out: &mut Vec<Output>) {
        if let Err(n) = self.check_open(&open) {
            return self.fail(n, out);
        }
        let negotiated = self.negotiate(&open);
        out.push(Output::Send(wire::encode_keepalive()));
        if negotiated.hold_time == 0 {
            out.push(Output::Timer(Timer::Hold, None));
        } else {
            out.push(Output::Timer(
                Timer::Hold,
                Some(Duration::from_secs(negotiated.hold_time.into())),
            ));
        }
        self.negotiated = Some(negotiated);
        if let Some(k) = self.keepalive_interval() {
            out.push(Output::Timer(Timer::Keepalive, Some(k)));
        }
        self.set_state(State::OpenConfirm, out);
    }

    fn establish(&mut self, out: &mut Vec<Output>) {
        self.restart_hold(out);
        self.failures = 0;
        self.last_error = None;
        self.set_state(State::Established, out);
        if let Some(n) = &self.negotiated {
            out.push(Output::Established(n.clone()));
        }
    }

    /// Sends `n` and goes down (which closes the connection after it).
    fn fail(&mut self, n: Notification, out: &mut Vec<Output>) {
        out.push(Output::Send(wire::encode_notification(&n)));
        self.down(DownReason::Sent(n), out);
    }

    fn down(&mut self, reason: DownReason, out: &mut Vec<Output>) {
        let was_established = self.state == State::Established;
        // RFC 4724 §4.2: the peer's routes are kept when the session ends without a
        // NOTIFICATION (a restart looks like a lost connection or an expired hold timer).
        let graceful = match &reason {
            DownReason::ConnectionLost(_) => true,
            DownReason::Sent(n) => n.code == Notification::HOLD_TIMER_EXPIRED,
            _ => false,
        };
        let (stale_families, restart_time) = match (&self.negotiated, graceful) {
            (Some(n), true) => (
                n.peer_gr_families(),
                n.peer_graceful_restart.as_ref().map_or(0, |g| g.time),
            ),
            _ => (Vec::new(), 0),
        };
        for t in [Timer::Hold, Timer::Keepalive, Timer::ConnectRetry] {
            out.push(Output::Timer(t, None));
        }
        if !matches!(self.state, State::Idle | State::Connect | State::Active) {
            out.push(Output::Disconnect);
        }
        self.set_state(State::Idle, out);
        // Established implies negotiated.
        if self.negotiated.is_some() {
            out.push(Output::Down {
                reason: reason.clone(),
                was_established,
                stale_families,
                restart_time,
            });
        }
        self.negotiated = None;
        if !matches!(reason, DownReason::Stopped) {
            self.last_error = Some(reason);
        }
        if let Some(gr) = &mut self.cfg.graceful_restart {
            gr.restarting = false;
        }
        if !self.stopped {
            self.failures = self.failures.saturating_add(1);
            out.push(Output::Timer(Timer::IdleHold, Some(self.error_wait())));
        }
    }

    fn set_state(&mut self, to: State, out: &mut Vec<Output>) {
        if self.state != to {
            out.push(Output::StateChanged {
                from: self.state,
                to,
            });
            self.state = to;
        }
    }

    fn restart_hold(&self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated
            && n.hold_time > 0
        {
            out.push(Output::Timer(
                Timer::Hold,
                Some(Duration::from_secs(n.hold_time.into())),
            ));
        }
    }

    fn keepalive_interval(&self) -> Option<Duration> {
        let n = self.negotiated.as_ref()?;
        (n.keepalive_time > 0).then(|| Duration::from_secs(n.keepalive_time.into()))
    }

    /// The wait before trying again: doubles per failure in a row, within the bounds.
    fn error_wait(&self) -> Duration {
        let (first, max) = self.cfg.error_wait;
        let shift = self.failures.saturating_sub(1).min(8);
        (first * (1u32 << shift)).min(max)
    }

    // ===== OPEN =====

    fn our_open(&self) -> Open {
        let c = &self.cfg;
        let mut caps: Vec<Capability> = c
            .families
            .iter()
            .map(|f| Capability::MultiProtocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::EnhancedRouteRefresh);
        if let Some(gr) = &c.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restarting: gr.restarting,
                notification: false,
                time: gr.restart_time.min(4095),
                families: c
                    .families
                    .iter()
                    .map(|f| (*f, gr.forwarding_preserved))
                    .collect(),
            }));
        }
        caps.push(Capability::FourOctetAs(c.local_as));
        if !c.add_path.is_empty() {
            caps.push(Capability::AddPath(c.add_path.clone()));
        }
        Open {
            version: 4,
            asn: c.local_as,
            hold_time: c.hold_time,
            router_id: c.router_id,
            capabilities: caps,
        }
    }

    fn check_open(&self, open: &Open) -> Result<(), Notification> {
        if open.version != 4 {
            return Err(Notification::unsupported_version(4));
        }
        // RFC 7607: AS 0 is never valid. A 2-octet speaker with a 4-octet AS would show up
        // as AS_TRANS and fail here, as it should.
        if open.asn == 0 || open.asn != self.cfg.remote_as {
            return Err(Notification::bad_peer_as());
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(Notification::unacceptable_hold_time());
        }
        // RFC 6286 §2.1: identifiers must differ within an AS.
        if open.router_id.is_unspecified()
            || (self.cfg.ibgp() && open.router_id == self.cfg.router_id)
        {
            return Err(Notification::bad_bgp_identifier());
        }
        Ok(())
    }

    fn negotiate(&self, open: &Open) -> Negotiated {
        let c = &self.cfg;
        let mut peer_families = Vec::new();
        let mut four = false;
        let mut route_refresh = false;
        let mut gr = None;
        let mut peer_add_path: Vec<(Family, AddPathMode)> = Vec::new();
        for cap in &open.capabilities {
            match cap {
                Capability::MultiProtocol(f) => peer_families.push(*f),
                Capability::FourOctetAs(_) => four = true,
                Capability::RouteRefresh | Capability::EnhancedRouteRefresh => route_refresh = true,
                Capability::GracefulRestart(g) => gr = Some(g.clone()),
                Capability::AddPath(v) => peer_add_path.extend(v.iter().copied()),
                Capability::Unknown { .. } => {}
            }
        }
        let saw_mp = open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::MultiProtocol(_)) || is_unknown_mp(c));
        if !saw_mp {
            peer_families.push(Family::Ipv4Unicast);
        }
        let families: Vec<Family> = c
            .families
            .iter()
            .copied()
            .filter(|f| peer_families.contains(f))
            .collect();
        let mut codec = Codec {
            four_octet_as: four,
            ..Codec::default()
        };
        for (f, ours) in &c.add_path {
            if let Some((_, theirs)) = peer_add_path.iter().find(|(pf, _)| pf == f) {
                codec.add_path_rx[f.index()] = ours.receives() && theirs.sends();
                codec.add_path_tx[f.index()] = ours.sends() && theirs.receives();
            }
        }
        let hold_time = c.hold_time.min(open.hold_time);
        let keepalive_time = match c.keepalive_time {
            Some(k) if hold_time > 0 => k.min(hold_time / 3).max(1),
            _ => hold_time / 3,
        };
        Negotiated {
            peer_router_id: open.router_id,
            hold_time,
            keepalive_time,
            families,
            codec,
            peer_route_refresh: route_refresh,
            peer_graceful_restart: gr,
        }
    }
}

fn is_unknown_mp(c: &Capability) -> bool {
    matches!(c, Capability::Unknown { code: 1, .. })
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
