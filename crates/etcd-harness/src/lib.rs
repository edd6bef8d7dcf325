//! A real etcd for tests: a fresh `etcd` process on free loopback ports with a throw-away data
//! directory, that can be killed (SIGKILL) and restarted on the same ports and data, and is
//! always stopped when dropped.
//!
//! A missing `etcd` binary is a loud failure naming the package to install, never a skip.
//! It listens on 127.0.0.1 (of the network namespace it is started in). The lab's
//! cluster etcd, which the nodes reach over the fabric, shares its command line
//! ([`member_args`]) and health checks.

pub mod backend;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or deliberately stopped) etcd server.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    binary: PathBuf,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
    l.local_addr().expect("listener has an address").port()
}

/// Finds the etcd binary: `$ETCD_BIN`, then `etcd` on PATH (Debian's etcd-server package).
pub fn etcd_binary() -> PathBuf {
    if let Ok(p) = std::env::var("ETCD_BIN") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "etcd is not installed: these tests run a real etcd. Run `make deps` \
         (apt-get install etcd-server) or set ETCD_BIN to an etcd binary."
    );
}

impl Etcd {
    /// Starts etcd and waits until it answers `/health`.
    pub fn start() -> Etcd {
        let mut e = Etcd {
            child: None,
            dir: tempfile::Builder::new()
                .prefix("calico-rs-etcd-")
                .tempdir()
                .expect("creating a temporary etcd data directory"),
            client_port: free_port(),
            peer_port: free_port(),
            binary: etcd_binary(),
        };
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log"))
            .expect("creating the etcd log file");
        let child = Command::new(&self.binary)
            .args(member_args(
                "test",
                &self.dir.path().join("data"),
                &client,
                &peer,
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(20));
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let port = self.client_port;
        let log = self.dir.path().join("etcd.log");
        wait_healthy(
            self.child.as_mut(),
            limit,
            || answers_health(port),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }

    /// Whether etcd answers its `/health` endpoint with `"health":"true"`.
    pub fn healthy(&self) -> bool {
        answers_health(self.client_port)
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// etcd's own log (errors only), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kills etcd with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops etcd gracefully (SIGTERM), waiting up to 10 s before killing it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcd's arguments for a one-member cluster called `name` with its data in `data_dir`,
/// serving clients on `client_urls` (comma-separated) and its peer port on `peer_url`, logging
/// errors only, to stderr.
pub fn member_args(name: &str, data_dir: &Path, client_urls: &str, peer_url: &str) -> Vec<String> {
    vec![
        format!("--name={name}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_urls}"),
        format!("--advertise-client-urls={client_urls}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={name}={peer_url}"),
        "--logger=zap".into(),
        "--log-outputs=stderr".into(),
        "--log-level=error".into(),
    ]
}

/// Whether the etcd on 127.0.0.1:`port` answers `/health` with `"health":"true"` (asked
/// from whatever network namespace the calling thread is in).
pub fn answers_health(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// Waits until `healthy()`; panics with etcd's log if `child` exits first or `limit` passes.
pub fn wait_healthy(
    mut child: Option<&mut Child>,
    limit: Duration,
    healthy: impl Fn() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(c) = child.as_deref_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("etcd exited during start-up ({status}); log:\n{}", log());
        }
        if healthy() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "etcd did not become healthy within {limit:?}; log:\n{}",
        log()
    );
}
