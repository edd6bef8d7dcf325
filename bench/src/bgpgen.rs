//! A BGP load generator for `bench-bgp`, on calico-bgp's codec and plain blocking sockets (a
//! reader thread per session): sender sessions write pre-encoded UPDATEs as fast as TCP takes
//! them, and one receiver session counts the prefixes the device under test passes on.
//!
//! Prefixes are numbered — IPv4 /24s from 64.0.0.0, IPv6 /48s from 2001:db8:: — so the
//! receiver turns an NLRI back into its number with a subtraction and keeps a bitmap: no
//! allocation per prefix, and duplicates and withdrawals are counted right. Everything a
//! sender writes is encoded before the clock starts.
//!
//! [`FibWatch`] counts the routes a daemon puts into a namespace's kernel, from rtnetlink
//! notifications, so the count costs neither the kernel nor the daemon a table dump per poll.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use calico_bgp::types::{AsPath, Attrs, Family, Nlri, Origin};
use calico_bgp::wire::{self, Capability, Codec, Message, Open, msg_type};
use calico_netns_harness::NetNs;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// First IPv4 prefix (64.0.0.0/24); they run on in /24 steps.
pub const V4_BASE: u32 = 0x4000_0000;
/// Top 48 bits of the first IPv6 prefix (2001:db8::/48); they run on in /48 steps.
pub const V6_BASE_48: u64 = 0x2001_0db8_0000;
/// Pools that hold every generated prefix (4 M /24s, 512 k /48s).
pub const V4_COVER: &str = "64.0.0.0/2";
pub const V6_COVER: &str = "2001:db8::/29";
/// Hold time the generator offers (the DUT may ask for less; keepalives follow the result).
const HOLD: u16 = 240;
/// Bytes per write: messages are never split between writes, so keepalives fit between.
const CHUNK: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Prefix number `i` of a family.
pub fn prefix(family: Family, i: usize) -> IpNet {
    match family {
        Family::Ipv4Unicast => {
            let a = V4_BASE + ((i as u32) << 8);
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(a), 24))
        }
        Family::Ipv6Unicast => {
            let top = u128::from(V6_BASE_48 + i as u64);
            IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(top << 80), 48))
        }
    }
}

/// The number of a prefix as it is on the wire (length, then its significant bytes).
fn index(family: Family, plen: u8, bytes: &[u8]) -> Option<usize> {
    match (family, plen, bytes) {
        (Family::Ipv4Unicast, 24, &[a, b, c]) => u32::from_be_bytes([a, b, c, 0])
            .checked_sub(V4_BASE)
            .map(|d| (d >> 8) as usize),
        (Family::Ipv6Unicast, 48, &[a, b, c, d, e, f]) => {
            u64::from_be_bytes([0, 0, a, b, c, d, e, f])
                .checked_sub(V6_BASE_48)
                .and_then(|d| usize::try_from(d).ok())
        }
        _ => None,
    }
}

/// Encoded messages joined into writes of at most [`CHUNK`] bytes, message-aligned.
#[derive(Debug, Default, Clone)]
pub struct Batches {
    pub chunks: Vec<Vec<u8>>,
    pub messages: usize,
}

impl Batches {
    pub fn push(&mut self, msgs: Vec<Vec<u8>>) {
        for m in msgs {
            self.messages += 1;
            match self.chunks.last_mut() {
                Some(c) if c.len() + m.len() <= CHUNK => c.extend_from_slice(&m),
                _ => self.chunks.push(m),
            }
        }
    }

    pub fn extend(&mut self, other: &Batches) {
        self.messages += other.messages;
        self.chunks.extend(other.chunks.iter().cloned());
    }
}

/// UPDATEs announcing prefixes `indices`, all with one attribute set (ORIGIN IGP, AS_PATH
/// `[asn]`, next hop `next_hop`), as many NLRI per message as fit.
pub fn announce(family: Family, indices: &[usize], asn: u32, next_hop: IpAddr) -> Batches {
    let attrs = Attrs {
        origin: Origin::Igp,
        as_path: AsPath::from_sequence([asn]),
        next_hop: Some(next_hop),
        ..Attrs::default()
    };
    let codec = Codec {
        four_octet_as: true,
        ..Codec::default()
    };
    let nlri: Vec<Nlri> = indices
        .iter()
        .map(|i| Nlri::new(prefix(family, *i)))
        .collect();
    let mut b = Batches::default();
    b.push(wire::encode_update(&attrs, &nlri, &codec));
    b
}

/// UPDATEs withdrawing prefixes `indices`.
pub fn withdraw(family: Family, indices: &[usize]) -> Batches {
    let nlri: Vec<Nlri> = indices
        .iter()
        .map(|i| Nlri::new(prefix(family, *i)))
        .collect();
    let mut b = Batches::default();
    b.push(wire::encode_withdraw(&nlri, &Codec::default()));
    b
}

/// One end of a session the generator opens.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub name: String,
    pub local: IpAddr,
    pub asn: u32,
    pub router_id: Ipv4Addr,
}

/// What the receiver has counted.
#[derive(Debug, Default)]
pub struct Tally {
    bits: Vec<u64>,
    /// Numbered prefixes the receiver currently has.
    pub present: usize,
    /// UPDATE messages received (End-of-RIB included).
    pub updates: u64,
    /// Announcements plus withdrawals received, prefix by prefix.
    pub changes: u64,
    /// Prefixes outside the numbering (ignored).
    pub foreign: u64,
    pub last_change: Option<Instant>,
    /// The count being waited for, and since when the receiver has had exactly that many.
    target: Option<usize>,
    reached: Option<Instant>,
}

impl Tally {
    fn set(&mut self, family: Family, block: &[u8], announce: bool) {
        let mut i = 0;
        while i < block.len() {
            let plen = block[i];
            let n = usize::from(plen).div_ceil(8);
            let Some(bytes) = block.get(i + 1..i + 1 + n) else {
                return;
            };
            i += 1 + n;
            self.changes += 1;
            let Some(idx) = index(family, plen, bytes) else {
                self.foreign += 1;
                continue;
            };
            let (w, bit) = (idx / 64, 1u64 << (idx % 64));
            if w >= self.bits.len() {
                self.bits.resize(w + 1, 0);
            }
            let had = self.bits[w] & bit != 0;
            if announce && !had {
                self.bits[w] |= bit;
                self.present += 1;
            } else if !announce && had {
                self.bits[w] &= !bit;
                self.present -= 1;
            }
        }
    }

    /// Counts one UPDATE body (after the header): classic IPv4 fields and MP_(UN)REACH_NLRI.
    fn update(&mut self, body: &[u8]) {
        self.updates += 1;
        let rd = |i: usize| -> Option<usize> {
            Some(usize::from(u16::from_be_bytes([
                *body.get(i)?,
                *body.get(i + 1)?,
            ])))
        };
        let Some(wl) = rd(0) else { return };
        let Some(al) = rd(2 + wl) else { return };
        let (Some(withdrawn), Some(attrs), Some(nlri)) = (
            body.get(2..2 + wl),
            body.get(4 + wl..4 + wl + al),
            body.get(4 + wl + al..),
        ) else {
            return;
        };
        self.set(Family::Ipv4Unicast, withdrawn, false);
        self.set(Family::Ipv4Unicast, nlri, true);
        let mut j = 0;
        while j + 3 <= attrs.len() {
            let (flags, code) = (attrs[j], attrs[j + 1]);
            let (len, hdr) = if flags & 0x10 != 0 {
                let Some(&lo) = attrs.get(j + 3) else { return };
                (usize::from(u16::from_be_bytes([attrs[j + 2], lo])), 4)
            } else {
                (usize::from(attrs[j + 2]), 3)
            };
            let Some(v) = attrs.get(j + hdr..j + hdr + len) else {
                return;
            };
            j += hdr + len;
            let family = match v.get(..2) {
                Some([0, 2]) => Family::Ipv6Unicast,
                _ => Family::Ipv4Unicast,
            };
            match code {
                14 => {
                    let Some(&nhl) = v.get(3) else { continue };
                    if let Some(block) = v.get(5 + usize::from(nhl)..) {
                        self.set(family, block, true);
                    }
                }
                15 => {
                    if let Some(block) = v.get(3..) {
                        self.set(family, block, false);
                    }
                }
                _ => {}
            }
        }
    }

    fn check_target(&mut self, now: Instant) {
        match self.target {
            Some(t) if t == self.present => {
                self.reached.get_or_insert(now);
            }
            _ => self.reached = None,
        }
    }
}

/// Per-session counters, written by its reader thread.
#[derive(Debug, Default)]
struct Stats {
    updates: AtomicU64,
    /// Nanoseconds after the generator's epoch of the last UPDATE (0: none yet).
    last_update: AtomicU64,
    /// Why the session ended, once it has.
    ended: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Session {
    name: String,
    writer: Arc<Mutex<TcpStream>>,
    stats: Arc<Stats>,
    reader: Option<JoinHandle<()>>,
}

type Shared = Arc<(Mutex<Tally>, Condvar)>;

/// When a phase was over: the receiver had the count asked for since `reached`; its last
/// change came at `last_rx`, the last UPDATE to any session at `last_any`.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    pub reached: Instant,
    pub last_rx: Instant,
    pub last_any: Instant,
}

/// Established sessions to the device under test: `sessions[0]` receives, the rest send.
#[derive(Debug)]
pub struct Generator {
    epoch: Instant,
    sessions: Vec<Session>,
    tally: Shared,
    stop: Arc<AtomicBool>,
    keepalive: Option<JoinHandle<()>>,
}

/// A TCP connection from `local` (any port) to `remote`.
fn tcp_connect(local: IpAddr, remote: SocketAddr) -> Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, connect, socket,
    };
    let af = if remote.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket(af, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    match (local, remote) {
        (IpAddr::V4(l), SocketAddr::V4(r)) => {
            bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(l, 0)))?;
            connect(fd.as_raw_fd(), &SockaddrIn::from(r))?;
        }
        (IpAddr::V6(l), SocketAddr::V6(r)) => {
            bind(
                fd.as_raw_fd(),
                &SockaddrIn6::from(SocketAddrV6::new(l, 0, 0, 0)),
            )?;
            connect(fd.as_raw_fd(), &SockaddrIn6::from(r))?;
        }
        _ => bail!("{local} and {remote} are of different families"),
    }
    Ok(TcpStream::from(fd))
}

/// Reads one whole message (blocking), keeping what follows it in `buf`.
fn next_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Message> {
    loop {
        if let Some(len) = wire::frame_len(buf).map_err(|n| anyhow::anyhow!("bad frame: {n}"))?
            && buf.len() >= len
        {
            let m = wire::decode_message(&buf[..len], &Codec::default())
                .map_err(|n| anyhow::anyhow!("undecodable message: {n}"));
            buf.drain(..len);
            return m;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk)? {
            0 => bail!("the connection was closed"),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Opens one session up to Established: (stream, bytes already read past the handshake,
/// negotiated hold time).
fn establish(dut: SocketAddr, p: &PeerSpec, family: Family) -> Result<(TcpStream, Vec<u8>, u16)> {
    let mut s = tcp_connect(p.local, dut)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let open = Open {
        version: 4,
        asn: p.asn,
        hold_time: HOLD,
        router_id: p.router_id,
        capabilities: vec![
            Capability::MultiProtocol(family),
            Capability::RouteRefresh,
            Capability::FourOctetAs(p.asn),
        ],
    };
    s.write_all(&wire::encode_open(&open))?;
    let mut buf = Vec::new();
    let hold = loop {
        match next_message(&mut s, &mut buf)? {
            Message::Open(o) => break o.hold_time.min(HOLD),
            Message::Notification(n) => bail!("NOTIFICATION in reply to our OPEN: {n}"),
            _ => {}
        }
    };
    s.write_all(&wire::encode_keepalive())?;
    loop {
        match next_message(&mut s, &mut buf)? {
            Message::Keepalive => break,
            Message::Notification(n) => bail!("NOTIFICATION in reply to our KEEPALIVE: {n}"),
            _ => {}
        }
    }
    s.set_read_timeout(None)?;
    Ok((s, buf, hold))
}

/// Reads a session until it ends: frames every message, counts UPDATEs (and, on the
/// receiver, their prefixes).
fn read_loop(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    stats: Arc<Stats>,
    epoch: Instant,
    tally: Option<Shared>,
) {
    let mut chunk = vec![0u8; 256 * 1024];
    let end = |why: String| {
        lock(&stats.ended).get_or_insert(why);
    };
    loop {
        let now = Instant::now();
        let mut start = 0;
        let mut updates = 0;
        {
            let mut t = tally.as_ref().map(|t| lock(&t.0));
            loop {
                let rest = &buf[start..];
                let len = match wire::frame_len(rest) {
                    Ok(Some(len)) if rest.len() >= len => len,
                    Ok(_) => break,
                    Err(n) => return end(format!("bad frame from the DUT: {n}")),
                };
                let frame = &rest[..len];
                match frame[18] {
                    msg_type::UPDATE => {
                        updates += 1;
                        if let Some(t) = t.as_mut() {
                            t.update(&frame[19..]);
                        }
                    }
                    msg_type::NOTIFICATION => {
                        let n = wire::decode_message(frame, &Codec::default())
                            .map(|m| format!("{m:?}"))
                            .unwrap_or_else(|e| e.to_string());
                        return end(format!("the DUT sent a NOTIFICATION: {n}"));
                    }
                    _ => {}
                }
                start += len;
            }
            if let Some(t) = t.as_mut() {
                if updates > 0 {
                    t.last_change = Some(now);
                }
                t.check_target(now);
            }
        }
        if updates > 0 {
            stats.updates.fetch_add(updates, Ordering::Relaxed);
            let ns = now.duration_since(epoch).as_nanos() as u64;
            stats.last_update.store(ns.max(1), Ordering::Relaxed);
            if let Some(t) = &tally {
                t.1.notify_all();
            }
        }
        buf.drain(..start);
        match s.read(&mut chunk) {
            Ok(0) => return end("the DUT closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return end(format!("reading: {e}")),
        }
    }
}

impl Generator {
    /// Connects the receiver, then every sender, to `dut` from inside `ns`, retrying until
    /// `within` for the DUT to start listening and know its peers; `alive` says whether the
    /// DUT still runs.
    pub fn connect(
        ns: &NetNs,
        dut: IpAddr,
        family: Family,
        receiver: &PeerSpec,
        senders: &[PeerSpec],
        within: Duration,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Generator> {
        let epoch = Instant::now();
        let deadline = epoch + within;
        let dut = SocketAddr::new(dut, 179);
        let stop = Arc::new(AtomicBool::new(false));
        let tally: Shared = Arc::new((Mutex::new(Tally::default()), Condvar::new()));
        let mut g = Generator {
            epoch,
            sessions: Vec::new(),
            tally,
            stop,
            keepalive: None,
        };
        let mut min_hold = HOLD;
        for (i, p) in std::iter::once(receiver).chain(senders).enumerate() {
            let (s, buf, hold) = loop {
                match ns.run(|| establish(dut, p, family)) {
                    Ok(x) => break x,
                    Err(e) => {
                        alive()?;
                        crate::check_interrupted()?;
                        if Instant::now() > deadline {
                            return Err(e.context(format!(
                                "session {} from {} to {dut} not Established within {within:?}",
                                p.name, p.local
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            };
            min_hold = min_hold.min(hold);
            let stats = Arc::new(Stats::default());
            let writer = Arc::new(Mutex::new(s.try_clone()?));
            let tally = (i == 0).then(|| g.tally.clone());
            let st = stats.clone();
            let reader = std::thread::Builder::new()
                .name(format!("bgp-{}", p.name))
                .spawn(move || read_loop(s, buf, st, epoch, tally))?;
            g.sessions.push(Session {
                name: p.name.clone(),
                writer,
                stats,
                reader: Some(reader),
            });
        }
        // KEEPALIVEs at a third of the smallest hold time, between writes.
        let writers: Vec<Arc<Mutex<TcpStream>>> =
            g.sessions.iter().map(|s| s.writer.clone()).collect();
        let stop = g.stop.clone();
        let every = Duration::from_secs(u64::from(min_hold / 3).max(1));
        g.keepalive = Some(
            std::thread::Builder::new()
                .name("bgp-keepalive".into())
                .spawn(move || {
                    let ka = wire::encode_keepalive();
                    let mut next = Instant::now() + every;
                    while !stop.load(Ordering::Relaxed) {
                        if Instant::now() >= next {
                            for w in &writers {
                                let _ = lock(w).write_all(&ka);
                            }
                            next += every;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })?,
        );
        Ok(g)
    }

    /// Sessions that ended, and why.
    pub fn failures(&self) -> Vec<String> {
        self.sessions
            .iter()
            .filter_map(|s| {
                lock(&s.stats.ended)
                    .as_ref()
                    .map(|why| format!("{}: {why}", s.name))
            })
            .collect()
    }

    /// Receiver counters: (prefixes held, UPDATEs received, prefix changes received).
    pub fn counts(&self) -> (usize, u64, u64) {
        let t = lock(&self.tally.0);
        (t.present, t.updates, t.changes)
    }

    /// Writes `per_sender[k]` on sender `k`, every sender on its own thread, all released at
    /// once. Returns (when the first write could start, when the last one was done).
    pub fn blast(&self, per_sender: &[&Batches]) -> Result<(Instant, Instant)> {
        let senders = &self.sessions[1..];
        anyhow::ensure!(
            per_sender.len() <= senders.len(),
            "more feeds than sender sessions"
        );
        let gate = Barrier::new(per_sender.len() + 1);
        std::thread::scope(|sc| -> Result<(Instant, Instant)> {
            let mut handles = Vec::new();
            for (s, feed) in senders.iter().zip(per_sender) {
                let gate = &gate;
                handles.push(sc.spawn(move || -> Result<()> {
                    gate.wait();
                    for chunk in &feed.chunks {
                        lock(&s.writer)
                            .write_all(chunk)
                            .with_context(|| format!("writing to the DUT from {}", s.name))?;
                    }
                    Ok(())
                }));
            }
            let t0 = Instant::now();
            gate.wait();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a sender thread panicked"))??;
            }
            Ok((t0, Instant::now()))
        })
    }

    /// Sets the receiver's count to wait for (from now on, [`Generator::wait`] is about it).
    pub fn expect(&self, count: usize) {
        let mut t = lock(&self.tally.0);
        t.target = Some(count);
        t.reached = None;
        t.check_target(Instant::now());
    }

    /// Waits until the receiver has had the expected count and no session has received an
    /// UPDATE for `quiet`. Fails on `timeout`, on a session going down, or when `alive` does.
    pub fn wait(
        &self,
        quiet: Duration,
        timeout: Duration,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Settled> {
        let deadline = Instant::now() + timeout;
        let mut last_check = Instant::now();
        loop {
            let (reached, last_rx, present, target) = {
                let t = lock(&self.tally.0);
                let t = self
                    .tally
                    .1
                    .wait_timeout(t, Duration::from_millis(20))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
                (t.reached, t.last_change, t.present, t.target)
            };
            let now = Instant::now();
            let last_any = self
                .sessions
                .iter()
                .map(|s| s.stats.last_update.load(Ordering::Relaxed))
                .max()
                .map(|ns| self.epoch + Duration::from_nanos(ns))
                .unwrap_or(self.epoch);
            if let Some(reached) = reached
                && now.duration_since(last_any.max(reached)) >= quiet
            {
                return Ok(Settled {
                    reached,
                    last_rx: last_rx.unwrap_or(reached),
                    last_any,
                });
            }
            if now.duration_since(last_check) > Duration::from_millis(200) {
                last_check = now;
                alive()?;
                crate::check_interrupted()?;
                let failed = self.failures();
                if !failed.is_empty() {
                    bail!("sessions went down: {}", failed.join("; "));
                }
            }
            if now > deadline {
                bail!(
                    "timed out after {timeout:?}: the receiver has {present} of {} prefixes",
                    target.unwrap_or(0)
                );
            }
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.sessions {
            let _ = lock(&s.writer).shutdown(std::net::Shutdown::Both);
        }
        for s in &mut self.sessions {
            if let Some(h) = s.reader.take() {
                let _ = h.join();
            }
        }
        if let Some(h) = self.keepalive.take() {
            let _ = h.join();
        }
    }
}

// ===== kernel routes =====

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RT_TABLE_MAIN: u32 = 254;

#[derive(Debug, Default)]
struct FibState {
    routes: HashSet<(u32, u8)>,
    target: Option<usize>,
    reached: Option<Instant>,
    overflowed: bool,
    error: Option<String>,
}

/// The IPv4 routes of some protocols in a namespace's main table, kept from rtnetlink
/// notifications by a thread.
#[derive(Debug)]
pub struct FibWatch {
    state: Arc<(Mutex<FibState>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    dump_fd: OwnedFd,
    protocols: Vec<u8>,
}

/// Applies every route message in `buf` to `routes`; true at NLMSG_DONE.
fn apply_route_msgs(buf: &[u8], protocols: &[u8], routes: &mut HashSet<(u32, u8)>) -> bool {
    let mut i = 0;
    while i + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]) as usize;
        let kind = u16::from_ne_bytes([buf[i + 4], buf[i + 5]]);
        if len < 16 || i + len > buf.len() {
            break;
        }
        let msg = &buf[i..i + len];
        i += len.next_multiple_of(4);
        match kind {
            NLMSG_DONE => return true,
            NLMSG_ERROR => return true,
            RTM_NEWROUTE | RTM_DELROUTE if msg.len() >= 28 => {
                let (family, dst_len, table, proto) = (msg[16], msg[17], msg[20], msg[21]);
                if family != 2 || !protocols.contains(&proto) {
                    continue;
                }
                let mut table = u32::from(table);
                let mut dst = 0u32;
                let mut a = 28;
                while a + 4 <= msg.len() {
                    let alen = usize::from(u16::from_ne_bytes([msg[a], msg[a + 1]]));
                    let atype = u16::from_ne_bytes([msg[a + 2], msg[a + 3]]);
                    if alen < 4 || a + alen > msg.len() {
                        break;
                    }
                    let v = &msg[a + 4..a + alen];
                    match (atype, v) {
                        (1, &[p, q, r, s]) => dst = u32::from_be_bytes([p, q, r, s]),
                        (15, &[p, q, r, s]) => table = u32::from_ne_bytes([p, q, r, s]),
                        _ => {}
                    }
                    a += alen.next_multiple_of(4);
                }
                if table != RT_TABLE_MAIN {
                    continue;
                }
                if kind == RTM_NEWROUTE {
                    routes.insert((dst, dst_len));
                } else {
                    routes.remove(&(dst, dst_len));
                }
            }
            _ => {}
        }
    }
    false
}

fn dump_routes(fd: &OwnedFd, protocols: &[u8]) -> Result<HashSet<(u32, u8)>> {
    use nix::sys::socket::{MsgFlags, recv, send};
    let mut req = Vec::with_capacity(28);
    req.extend_from_slice(&28u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    req.extend_from_slice(&(0x1u16 | 0x300).to_ne_bytes()); // NLM_F_REQUEST | NLM_F_DUMP
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // rtmsg, AF_INET
    send(fd.as_raw_fd(), &req, MsgFlags::empty())?;
    let mut routes = HashSet::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 || apply_route_msgs(&buf[..n], protocols, &mut routes) {
            return Ok(routes);
        }
    }
}

impl FibWatch {
    /// Starts counting routes of `protocols` (RTPROT numbers) in `ns`.
    pub fn start(ns: &NetNs, protocols: &[u8]) -> Result<FibWatch> {
        use nix::sys::socket::{
            AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, setsockopt, socket,
            sockopt,
        };
        let (mon, dump_fd) = ns.run(|| -> Result<(OwnedFd, OwnedFd)> {
            let open = |groups: u32| -> Result<OwnedFd> {
                let fd = socket(
                    AddressFamily::Netlink,
                    SockType::Raw,
                    SockFlag::SOCK_CLOEXEC,
                    SockProtocol::NetlinkRoute,
                )?;
                setsockopt(&fd, sockopt::RcvBufForce, &(128 << 20))?;
                bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
                Ok(fd)
            };
            Ok((open(RTMGRP_IPV4_ROUTE)?, open(0)?))
        })?;
        setsockopt(
            &mon,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 100_000),
        )?;
        let state = Arc::new((Mutex::new(FibState::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, protos) = (state.clone(), stop.clone(), protocols.to_vec());
        let thread = std::thread::Builder::new()
            .name("fib-watch".into())
            .spawn(move || {
                use nix::sys::socket::{MsgFlags, recv};
                let mut buf = vec![0u8; 1 << 20];
                while !sp.load(Ordering::Relaxed) {
                    match recv(mon.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                        Ok(n) => {
                            let now = Instant::now();
                            let mut s = lock(&st.0);
                            apply_route_msgs(&buf[..n], &protos, &mut s.routes);
                            let count = s.routes.len();
                            match s.target {
                                Some(t) if t == count => {
                                    s.reached.get_or_insert(now);
                                }
                                _ => s.reached = None,
                            }
                            st.1.notify_all();
                        }
                        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                        Err(nix::errno::Errno::ENOBUFS) => lock(&st.0).overflowed = true,
                        Err(e) => {
                            lock(&st.0).error = Some(e.to_string());
                            return;
                        }
                    }
                }
            })?;
        Ok(FibWatch {
            state,
            stop,
            thread: Some(thread),
            dump_fd,
            protocols: protocols.to_vec(),
        })
    }

    pub fn expect(&self, count: usize) {
        let mut s = lock(&self.state.0);
        s.target = Some(count);
        s.reached = (s.routes.len() == count).then(Instant::now);
    }

    /// Waits until the kernel holds the expected number of routes; when it got there.
    pub fn wait(
        &self,
        timeout: Duration,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = lock(&self.state.0);
                let s = self
                    .state
                    .1
                    .wait_timeout(s, Duration::from_millis(100))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
                if let Some(e) = &s.error {
                    bail!("watching kernel routes: {e}");
                }
                if s.overflowed {
                    bail!("kernel route notifications overflowed the socket buffer");
                }
                if let Some(at) = s.reached {
                    return Ok(at);
                }
                if Instant::now() > deadline {
                    bail!(
                        "timed out after {timeout:?}: the kernel has {} of {} routes",
                        s.routes.len(),
                        s.target.unwrap_or(0)
                    );
                }
            }
            alive()?;
            crate::check_interrupted()?;
        }
    }

    /// Counts the routes with a table dump (to check the notification count).
    pub fn dump_count(&self) -> Result<usize> {
        Ok(dump_routes(&self.dump_fd, &self.protocols)?.len())
    }
}

impl Drop for FibWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_number_back() {
        for f in Family::ALL {
            for i in [0usize, 1, 255, 65_536, 999_999] {
                let p = prefix(f, i);
                let bytes: Vec<u8> = match p {
                    IpNet::V4(n) => n.network().octets()[..3].to_vec(),
                    IpNet::V6(n) => n.network().octets()[..6].to_vec(),
                };
                assert_eq!(index(f, p.prefix_len(), &bytes), Some(i), "{p}");
            }
        }
    }

    #[test]
    fn the_tally_counts_what_the_codec_encodes() {
        for f in Family::ALL {
            let idx: Vec<usize> = (0..3000).collect();
            let nh: IpAddr = match f {
                Family::Ipv4Unicast => "10.2.0.10".parse().expect("address"),
                Family::Ipv6Unicast => "fd02::10".parse().expect("address"),
            };
            let mut t = Tally::default();
            let feed = |t: &mut Tally, b: &Batches| {
                for c in &b.chunks {
                    let mut i = 0;
                    while let Ok(Some(len)) = wire::frame_len(&c[i..]) {
                        t.update(&c[i + 19..i + len]);
                        i += len;
                    }
                }
            };
            let a = announce(f, &idx, 65001, nh);
            assert!(a.messages < 10, "{} messages", a.messages);
            feed(&mut t, &a);
            assert_eq!(t.present, 3000);
            feed(&mut t, &a);
            assert_eq!(t.present, 3000);
            feed(&mut t, &withdraw(f, &idx[..1000]));
            assert_eq!(t.present, 2000);
            assert_eq!(t.foreign, 0);
        }
    }
}
