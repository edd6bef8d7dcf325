//! The cluster's etcd: one member inside the fabric namespace on etcd's usual ports (2379 for
//! clients, 2380 for peers; every cluster has its own fabric, so clusters never collide),
//! listening on loopback and on the fabric's gateway address, its data and log in the
//! cluster's run directory. It can be killed and restarted on the same data, and it can be
//! left running for a later process (the launcher), which finds it again by pid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use calico_netns_harness::NetNs;

use crate::daemon::{kill_child, log_tail, pid_alive, signal_pid, spawn_in};

/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port (loopback only: a single member).
pub const PEER_PORT: u16 = 2380;

/// A single etcd member in a namespace.
#[derive(Debug)]
pub struct EtcdServer {
    ns: NetNs,
    listen: IpAddr,
    dir: PathBuf,
    child: Option<Child>,
    /// The pid of an etcd this value did not start (found again from a launcher's state).
    pid: Option<u32>,
    detached: bool,
    /// Whether dropping this value kills etcd.
    owned: bool,
}

impl EtcdServer {
    /// Starts etcd inside `ns`, listening on loopback and `listen`, with its data in `dir`,
    /// and waits until it answers `/health`.
    pub fn start(ns: &NetNs, listen: IpAddr, dir: &Path, detached: bool) -> EtcdServer {
        let ns = NetNs::open(ns.name())
            .unwrap_or_else(|e| panic!("opening namespace {}: {e}", ns.name()));
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut e = EtcdServer {
            ns,
            listen,
            dir: dir.to_path_buf(),
            child: None,
            pid: None,
            detached,
            owned: true,
        };
        e.spawn();
        e
    }

    /// An etcd an earlier process started (the launcher's state), left running when dropped.
    pub fn attach(ns: &str, listen: IpAddr, dir: &Path, pid: Option<u32>) -> std::io::Result<Self> {
        Ok(EtcdServer {
            ns: NetNs::open(ns)?,
            listen,
            dir: dir.to_path_buf(),
            child: None,
            pid,
            detached: true,
            owned: false,
        })
    }

    fn spawn(&mut self) {
        let host = match self.listen {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let client = format!("http://127.0.0.1:{CLIENT_PORT},http://{host}:{CLIENT_PORT}");
        let peer = format!("http://127.0.0.1:{PEER_PORT}");
        let mut cmd = Command::new(calico_etcd_harness::etcd_binary());
        cmd.args(calico_etcd_harness::member_args(
            "lab",
            &self.dir.join("data"),
            &client,
            &peer,
        ));
        let child = spawn_in(&self.ns, cmd, &self.log_path(), self.detached);
        self.pid = Some(child.id());
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(20));
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let log = self.log_path();
        let ns = &self.ns;
        calico_etcd_harness::wait_healthy(
            self.child.as_mut(),
            limit,
            || ns.run(|| calico_etcd_harness::answers_health(CLIENT_PORT)),
            || log_tail(&log, 40),
        );
    }

    /// Whether etcd answers `/health` with `"health":"true"` (asked from inside its namespace).
    pub fn healthy(&self) -> bool {
        self.ns
            .run(|| calico_etcd_harness::answers_health(CLIENT_PORT))
    }

    /// The client URL inside the fabric namespace (loopback).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{CLIENT_PORT}")
    }

    /// The client URL the nodes use (the fabric's gateway address).
    pub fn public_endpoint(&self) -> String {
        match self.listen {
            IpAddr::V4(a) => format!("http://{a}:{CLIENT_PORT}"),
            IpAddr::V6(a) => format!("http://[{a}]:{CLIENT_PORT}"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// etcd's own log (errors only), for failure messages.
    pub fn log(&self) -> String {
        log_tail(&self.log_path(), 40)
    }

    /// The running etcd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id).or(self.pid)
    }

    /// Kills etcd with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            kill_child(c);
        } else if let Some(pid) = self.pid {
            signal_pid(pid, nix::sys::signal::Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.pid = None;
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Leaves etcd running when this value is dropped; returns its pid.
    pub(crate) fn detach(&mut self) -> Option<u32> {
        self.owned = false;
        let pid = self.pid();
        // Dropping a `Child` neither kills nor waits.
        self.child = None;
        self.pid = pid;
        pid
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if self.owned {
            self.kill();
        }
    }
}
