//! Removing what a lab made: run directories, and everything of a named cluster found by its
//! namespaces' name prefix (the processes running in those namespaces, then the namespaces,
//! then the run directory). The same code runs when a named cluster is dropped, when the
//! launcher's `lab down` cleans up (also after a crashed or killed run) and when the demo is
//! interrupted. It only ever looks at namespaces whose names start with the prefix.

use std::path::{Path, PathBuf};

pub use calico_netns_harness::cleanup::{Removed, namespaces_with_prefix, remove_by_prefix};

use crate::Naming;

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

/// Removes a named cluster: [`remove_by_prefix`], then its run and data directories.
pub fn remove(naming: &Naming) -> Removed {
    let removed = remove_by_prefix(&naming.prefix);
    for d in [&naming.run_dir, &naming.data_dir] {
        let _ = std::fs::remove_dir_all(d);
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
