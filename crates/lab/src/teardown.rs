//! Removing what a lab made: run directories, and everything of a named cluster found by its
//! namespaces' name prefix (the processes running in those namespaces, then the namespaces,
//! then the run directory). The same code runs when a named cluster is dropped, when the
//! launcher's `lab down` cleans up (also after a crashed or killed run) and when the demo is
//! interrupted. It only ever looks at namespaces whose names start with the prefix.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::Naming;
use crate::daemon::{pid_alive, signal_pid};

/// A directory for a node's or cluster's sockets, logs and data; removed when dropped if this
/// value owns it.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    owned: bool,
}

impl RunDir {
    /// A fresh temporary directory, removed when dropped.
    pub fn temp() -> RunDir {
        let dir = tempfile::Builder::new()
            .prefix("calico-lab-")
            .tempdir()
            .expect("a temporary directory");
        RunDir {
            path: dir.keep(),
            owned: true,
        }
    }

    /// `path`, created if missing, removed when dropped if `owned`.
    pub fn create(path: &Path, owned: bool) -> RunDir {
        std::fs::create_dir_all(path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        RunDir {
            path: path.to_path_buf(),
            owned,
        }
    }

    /// A directory an earlier process made; left in place when dropped.
    pub fn existing(path: &Path) -> RunDir {
        RunDir {
            path: path.to_path_buf(),
            owned: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place when this value is dropped.
    pub fn keep(&mut self) {
        self.owned = false;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The network namespaces whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    // Lines read `name` or `name (id: 3)`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The pids of the processes running in namespace `name` (`ip netns pids`).
pub fn pids_in(name: &str) -> Vec<u32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What a teardown removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub namespaces: Vec<String>,
    pub processes: usize,
}

/// Removes a named cluster: [`remove_by_prefix`], then its run and data directories.
pub fn remove(naming: &Naming) -> Removed {
    let removed = remove_by_prefix(&naming.prefix);
    for d in [&naming.run_dir, &naming.data_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
    removed
}

/// Kills every process running in a namespace named `prefix*` (SIGKILL: nothing of theirs
/// needs to survive) and deletes those namespaces.
pub fn remove_by_prefix(prefix: &str) -> Removed {
    assert!(
        prefix.len() >= 4,
        "refusing a teardown by the short prefix {prefix:?}"
    );
    let mut removed = Removed::default();
    // Twice: a process that was starting a namespace while the first pass ran (an
    // interrupted launcher) leaves it for the second.
    for _ in 0..2 {
        let names = namespaces_with_prefix(prefix);
        let mut pids = Vec::new();
        for n in &names {
            for pid in pids_in(n) {
                signal_pid(pid, Signal::SIGKILL);
                pids.push(pid);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        removed.processes += pids.len();
        for n in names {
            let _ = Command::new("ip").args(["netns", "del", &n]).output();
            if !removed.namespaces.contains(&n) {
                removed.namespaces.push(n);
            }
        }
    }
    removed
}

/// Runs [`remove`] when dropped, unless disarmed (a named cluster that was handed over to a
/// launcher state).
#[derive(Debug)]
pub(crate) struct PrefixGuard {
    pub naming: Naming,
    pub armed: bool,
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        if self.armed {
            remove(&self.naming);
        }
    }
}

/// Blocks the calling thread until the process receives SIGINT, SIGTERM or SIGHUP, and says
/// which. Once called, those signals no longer end the process by themselves: the caller
/// tears down and exits.
pub fn wait_for_interrupt() -> &'static str {
    crate::block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            // Without handlers the signals keep their default action (the process ends).
            return std::future::pending().await;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        }
    })
}
