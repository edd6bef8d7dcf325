//! Probes that run throughout a fault: established TCP connections that exchange a message
//! every few milliseconds, fresh TCP connections and UDP datagrams, each checked against
//! what policy says (open or blocked). Every attempt that did not go as expected is recorded
//! with when it happened, so a test can say "no probe lost, no rule window" and show the
//! moments when it was not so.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use calico_lab::probe::{Probe, Proto, reaches};
use calico_netns_harness::NetNs;

/// What one probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// One TCP connection, opened at the start and kept: a message each way per round.
    Established,
    /// A fresh connection (or datagram) per round, which must get through (`true`) or be
    /// blocked (`false`).
    Fresh { proto: Proto, open: bool },
}

/// A probe from a pod's namespace to an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    /// The client's network namespace (by name).
    pub from: String,
    pub to: SocketAddr,
    pub kind: Kind,
}

/// What a check saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub name: String,
    pub attempts: usize,
    /// When (since the start) an attempt did not go as expected, and how.
    pub misses: Vec<(Duration, String)>,
}

/// The probes, running until stopped.
#[derive(Debug)]
pub struct Watch {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Seen>>,
}

/// How long one attempt may take before it counts as lost: long enough for TCP's first SYN
/// retransmission (1 s), as a real client would wait, so a connection an application would
/// see fail is a miss and one that only waited on a busy 2-core machine is not.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(2500);
/// How long a probe that policy blocks waits for an answer that must not come: one that
/// got through would be answered within milliseconds, and short attempts make many, so that
/// a brief window in the rules is seen.
const BLOCKED_TIMEOUT: Duration = Duration::from_millis(100);

impl Watch {
    /// Starts every check on its own thread, one attempt per `interval`. Established
    /// connections are open when this returns (or their failure to open is the first miss).
    pub fn start(checks: Vec<Check>, interval: Duration) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let threads = checks
            .into_iter()
            .map(|c| {
                let stop = stop.clone();
                let (ready_tx, ready_rx) = std::sync::mpsc::channel();
                let t = std::thread::spawn(move || run(c, interval, start, &stop, ready_tx));
                let _ = ready_rx.recv_timeout(Duration::from_secs(5));
                t
            })
            .collect();
        Watch { stop, threads }
    }

    /// Stops the probes and returns what each saw.
    pub fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| Seen {
                    name: "a probe thread".into(),
                    attempts: 0,
                    misses: vec![(Duration::ZERO, "panicked".into())],
                })
            })
            .collect()
    }
}

/// A summary line per check; misses listed.
pub fn report(seen: &[Seen]) -> String {
    let mut s = String::new();
    for c in seen {
        s.push_str(&format!(
            "  {:<40} {:>5} attempts, {} missed\n",
            c.name,
            c.attempts,
            c.misses.len()
        ));
        for (t, what) in c.misses.iter().take(10) {
            s.push_str(&format!("      at {:>6} ms: {what}\n", t.as_millis()));
        }
    }
    s
}

fn run(
    c: Check,
    interval: Duration,
    start: Instant,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) -> Seen {
    let mut seen = Seen {
        name: c.name.clone(),
        ..Default::default()
    };
    let ns = match NetNs::open(&c.from) {
        Ok(ns) => ns,
        Err(e) => {
            seen.misses
                .push((start.elapsed(), format!("no namespace {}: {e}", c.from)));
            let _ = ready.send(());
            return seen;
        }
    };
    let mut conn: Option<TcpStream> = None;
    if c.kind == Kind::Established {
        match connect(&ns, c.to) {
            Ok(s) => conn = Some(s),
            Err(e) => seen.misses.push((start.elapsed(), format!("connect: {e}"))),
        }
    }
    let _ = ready.send(());
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        seen.attempts += 1;
        n += 1;
        let miss = match &c.kind {
            Kind::Established => match conn.as_mut().map(|s| exchange(s, n)) {
                Some(Ok(())) => None,
                Some(Err(e)) => {
                    // Counted once; later rounds try a new connection.
                    conn = connect(&ns, c.to).ok();
                    Some(format!("established connection: {e}"))
                }
                None => {
                    conn = connect(&ns, c.to).ok();
                    Some("no connection".into())
                }
            },
            Kind::Fresh { proto, open } => {
                let p = Probe {
                    from: &ns,
                    to: c.to.ip(),
                    proto: *proto,
                    port: c.to.port(),
                };
                let got = reaches(
                    &p,
                    if *open {
                        ATTEMPT_TIMEOUT
                    } else {
                        BLOCKED_TIMEOUT
                    },
                );
                (got != *open).then(|| {
                    if *open {
                        format!("{proto} lost")
                    } else {
                        format!("{proto} got through a policy that blocks it")
                    }
                })
            }
        };
        if let Some(m) = miss {
            seen.misses.push((start.elapsed(), m));
        }
        if let Some(rest) = interval.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    seen
}

fn connect(ns: &NetNs, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = ns.run(|| TcpStream::connect_timeout(&to, ATTEMPT_TIMEOUT))?;
    s.set_read_timeout(Some(ATTEMPT_TIMEOUT))?;
    s.set_write_timeout(Some(ATTEMPT_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One message each way on an established connection.
fn exchange(s: &mut TcpStream, n: u64) -> std::io::Result<()> {
    let msg = n.to_be_bytes();
    s.write_all(&msg)?;
    let mut back = [0u8; 8];
    s.read_exact(&mut back)?;
    if back == msg {
        Ok(())
    } else {
        Err(std::io::Error::other("the echo did not match"))
    }
}

/// A TCP echo server inside a namespace that keeps each connection open and echoes every
/// message on it (what [`Kind::Established`] talks to), until dropped.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `port` (IPv4, every address) inside `ns`.
    pub fn start(ns: &NetNs, port: u16) -> std::io::Result<EchoServer> {
        let l = ns.run(|| TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))))?;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || echo(c, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(EchoServer {
            stop,
            thread: Some(thread),
        })
    }
}

fn echo(mut c: TcpStream, stop: &AtomicBool) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
