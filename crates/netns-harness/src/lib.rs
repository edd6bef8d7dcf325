//! Test support for anything that touches the kernel: network namespaces made for one test
//! (named `crs<pid>-<n>-<tag>`, deleted when dropped, also on panic), code and commands run
//! inside them, and TCP/UDP probes between them. Nothing here touches the namespace the tests
//! themselves run in.
//!
//! The lab's launcher also makes namespaces with names of its choosing that outlive the
//! process ([`NetNs::named`], [`NetNs::keep`]) and comes back to them later ([`NetNs::open`]).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

pub mod cleanup;

pub use cleanup::remove_orphaned_namespaces;

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Once = Once::new();

/// A network namespace that exists for as long as this value.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    /// Whether dropping this value deletes the namespace.
    owned: bool,
}

/// Runs `ip` with the given arguments (in the calling thread's namespace) and panics with its
/// output if it fails.
pub fn ip(args: &[&str]) -> Output {
    run_cmd("ip", args)
}

/// Runs a command, panicking with its output if it fails (a missing tool names itself).
pub fn run_cmd(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (is it installed? `make deps` installs it): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl NetNs {
    /// Creates a fresh namespace with its loopback up.
    pub fn new(tag: &str) -> NetNs {
        SWEEP.call_once(|| {
            let removed = remove_orphaned_namespaces();
            if !removed.is_empty() {
                eprintln!(
                    "removed namespaces left by test runs that were killed: {}",
                    removed.join(", ")
                );
            }
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        NetNs::named(&format!("crs{}-{n}-{tag}", std::process::id()))
    }

    /// Creates a fresh namespace called exactly `name` (as `ip netns add` does), with its
    /// loopback up; deleted when dropped unless [`NetNs::keep`] was called.
    pub fn named(name: &str) -> NetNs {
        run_cmd("ip", &["netns", "add", name]);
        let ns = NetNs {
            path: PathBuf::from(format!("/run/netns/{name}")),
            name: name.to_string(),
            owned: true,
        };
        ns.run(|| ip(&["link", "set", "lo", "up"]));
        ns
    }

    /// A handle on a namespace that already exists (made by an earlier process); dropping it
    /// leaves the namespace in place.
    pub fn open(name: &str) -> std::io::Result<NetNs> {
        let path = PathBuf::from(format!("/run/netns/{name}"));
        std::fs::metadata(&path)?;
        Ok(NetNs {
            name: name.to_string(),
            path,
            owned: false,
        })
    }

    /// Leaves the namespace in place when this value is dropped (a launcher whose cluster
    /// outlives it; `ip netns del` or the launcher's teardown removes it).
    pub fn keep(&mut self) {
        self.owned = false;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a thread that has joined this namespace (sockets it opens, processes it
    /// starts and `/proc/sys/net` it writes are the namespace's).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&self.path);
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs a command inside the namespace, panicking if it fails.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.run(|| run_cmd(program, args))
    }

    /// Runs a command inside the namespace and returns its output whatever the status.
    pub fn try_exec(&self, program: &str, args: &[&str]) -> std::io::Result<Output> {
        self.run(|| Command::new(program).args(args).output())
    }

    /// Writes a sysctl inside the namespace (`["net", "ipv4", "ip_forward"]`).
    pub fn sysctl(&self, parts: &[&str], value: &str) {
        let path = format!("/proc/sys/{}", parts.join("/"));
        self.run(|| {
            std::fs::write(&path, value)
                .unwrap_or_else(|e| panic!("writing {value} to {path}: {e}"))
        });
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins the calling thread to the namespace at `path`.
pub fn enter(path: &Path) {
    let f = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("opening namespace {}: {e}", path.display()));
    setns(&f, CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("entering namespace {}: {e}", path.display()));
}

/// Whether `from` can open a TCP connection to `to` (listening inside `to_ns`) and exchange a
/// line each way.
pub fn tcp_reaches(from: &NetNs, to_ns: &NetNs, to: IpAddr, port: u16) -> bool {
    let listener = to_ns.run(|| TcpListener::bind(SocketAddr::new(to, port)));
    let Ok(listener) = listener else {
        return false;
    };
    std::thread::scope(|s| {
        let server = s.spawn(move || {
            listener.set_nonblocking(false).ok()?;
            let (mut c, _) = accept_with_timeout(&listener, Duration::from_secs(3))?;
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).ok()?;
            c.write_all(b"pong\n").ok()?;
            Some(buf == *b"ping\n")
        });
        let client_ok = from.run(|| {
            let mut c =
                TcpStream::connect_timeout(&SocketAddr::new(to, port), Duration::from_secs(2))
                    .ok()?;
            c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            c.write_all(b"ping\n").ok()?;
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).ok()?;
            Some(buf == *b"pong\n")
        });
        // Unblock the server if the client never came.
        if client_ok.is_none() {
            let _ = to_ns.run(|| {
                TcpStream::connect_timeout(&SocketAddr::new(to, port), Duration::from_millis(200))
            });
        }
        let server_ok = server.join().ok().flatten();
        client_ok == Some(true) && server_ok == Some(true)
    })
}

fn accept_with_timeout(l: &TcpListener, t: Duration) -> Option<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true).ok()?;
    let deadline = std::time::Instant::now() + t;
    loop {
        match l.accept() {
            Ok((c, a)) => {
                c.set_nonblocking(false).ok()?;
                return Some((c, a));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return None,
        }
    }
}

/// Whether a UDP datagram from `from` reaches `to` (bound inside `to_ns`) and the reply comes
/// back.
pub fn udp_reaches(from: &NetNs, to_ns: &NetNs, to: IpAddr, port: u16) -> bool {
    let Ok(server) = to_ns.run(|| UdpSocket::bind(SocketAddr::new(to, port))) else {
        return false;
    };
    let _ = server.set_read_timeout(Some(Duration::from_secs(2)));
    std::thread::scope(|s| {
        let echo = s.spawn(move || {
            let mut buf = [0u8; 16];
            let (n, peer) = server.recv_from(&mut buf).ok()?;
            server.send_to(&buf[..n], peer).ok()?;
            Some(())
        });
        let ok = from.run(|| {
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let c = UdpSocket::bind(bind).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            c.send_to(b"hello", SocketAddr::new(to, port)).ok()?;
            let mut buf = [0u8; 16];
            let n = c.recv(&mut buf).ok()?;
            Some(&buf[..n] == b"hello")
        });
        let _ = echo.join();
        ok == Some(true)
    })
}

/// TCP and UDP echo servers inside a namespace, on every address, until dropped: the pods of
/// policy tests, which many probes hit while the rules change.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Servers")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Servers {
    /// Listens on `tcp` and `udp` ports, IPv4 and IPv6, inside `ns`.
    pub fn start(ns: &NetNs, tcp: &[u16], udp: &[u16]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in tcp {
            for any in ["0.0.0.0", "::"] {
                let addr: SocketAddr = SocketAddr::new(any.parse().expect("an address"), port);
                let l = ns
                    .run(|| {
                        let s = listen_tcp(addr)?;
                        s.set_nonblocking(true)?;
                        Ok::<_, std::io::Error>(s)
                    })
                    .unwrap_or_else(|e| panic!("listening on tcp {addr} in {}: {e}", ns.name()));
                let stop = stop.clone();
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match l.accept() {
                            Ok((mut c, _)) => {
                                std::thread::spawn(move || {
                                    let _ = c.set_nonblocking(false);
                                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                                    let mut buf = [0u8; 64];
                                    if let Ok(n) = c.read(&mut buf) {
                                        let _ = c.write_all(&buf[..n]);
                                    }
                                });
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                }));
            }
        }
        for &port in udp {
            for any in ["0.0.0.0", "::"] {
                let addr: SocketAddr = SocketAddr::new(any.parse().expect("an address"), port);
                let s = ns
                    .run(|| {
                        let s = if addr.is_ipv6() {
                            v6_only_udp(addr)?
                        } else {
                            UdpSocket::bind(addr)?
                        };
                        s.set_read_timeout(Some(Duration::from_millis(50)))?;
                        Ok::<_, std::io::Error>(s)
                    })
                    .unwrap_or_else(|e| panic!("binding udp {addr} in {}: {e}", ns.name()));
                let stop = stop.clone();
                threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, peer)) = s.recv_from(&mut buf) {
                            let _ = s.send_to(&buf[..n], peer);
                        }
                    }
                }));
            }
        }
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TCP listener; an IPv6 one accepts IPv6 only, so that v4 and v6 can both be bound.
fn listen_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if addr.is_ipv6() {
        v6_only_tcp(addr)
    } else {
        TcpListener::bind(addr)
    }
}

fn v6_only_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn6, bind, listen, setsockopt, socket,
        sockopt,
    };
    let SocketAddr::V6(a) = addr else {
        return TcpListener::bind(addr);
    };
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(a))?;
    listen(&fd, Backlog::new(128).map_err(std::io::Error::from)?)?;
    Ok(TcpListener::from(fd))
}

fn v6_only_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn6, bind, setsockopt, socket, sockopt,
    };
    let SocketAddr::V6(a) = addr else {
        return UdpSocket::bind(addr);
    };
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::empty(),
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(a))?;
    Ok(UdpSocket::from(fd))
}

/// Whether a TCP connection from `from` to `to:port` is accepted and echoes, within
/// `timeout` (a dropped SYN shows as a timeout).
pub fn tcp_connects(from: &NetNs, to: IpAddr, port: u16, timeout: Duration) -> bool {
    from.run(|| {
        let Ok(mut c) = TcpStream::connect_timeout(&SocketAddr::new(to, port), timeout) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(timeout));
        if c.write_all(b"ping").is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).is_ok() && &buf == b"ping"
    })
}

/// Whether a UDP datagram from `from` to `to:port` is echoed within `timeout`.
pub fn udp_echoes(from: &NetNs, to: IpAddr, port: u16, timeout: Duration) -> bool {
    from.run(|| {
        let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let Ok(c) = UdpSocket::bind(bind) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(timeout));
        if c.send_to(b"echo", SocketAddr::new(to, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 8];
        matches!(c.recv(&mut buf), Ok(4)) && &buf[..4] == b"echo"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A namespace named for a process that cannot exist (a pid above any `pid_max`) is
    /// removed; one of this process is not.
    #[test]
    fn namespaces_of_dead_test_processes_are_removed() {
        let ours = NetNs::new("sweep");
        let orphan = format!("crs{}-0-orphan", u32::MAX);
        run_cmd("ip", &["netns", "add", &orphan]);
        let removed = remove_orphaned_namespaces();
        assert!(removed.contains(&orphan), "removed {removed:?}");
        assert!(!Path::new(&format!("/run/netns/{orphan}")).exists());
        assert!(
            ours.path().exists(),
            "a living process's namespace was removed"
        );
    }
}
