//! Running work inside a container's network namespace.
//!
//! A namespace belongs to a thread, so the work runs on a thread of its own that joins the
//! namespace and ends with it; sockets it opens (netlink included) and `/proc/sys/net` paths
//! it writes are the namespace's. Nothing else in the process changes namespace.

use std::future::Future;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file is gone (the container was removed).
    #[error("network namespace {0} does not exist")]
    Missing(PathBuf),
    /// The path exists but is not a network namespace (left over after an unmount).
    #[error("{0} is not a network namespace")]
    NotANamespace(PathBuf),
    #[error("cannot enter network namespace {path}: {reason}")]
    Enter { path: PathBuf, reason: String },
    #[error("the worker thread for network namespace {0} stopped unexpectedly")]
    Thread(PathBuf),
}

fn enter(path: &Path) -> Result<(), NetnsError> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NetnsError::Missing(path.to_path_buf()),
        _ => NetnsError::Enter {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| match e {
        nix::errno::Errno::EINVAL => NetnsError::NotANamespace(path.to_path_buf()),
        e => NetnsError::Enter {
            path: path.to_path_buf(),
            reason: format!("{e} (does this process have CAP_SYS_ADMIN?)"),
        },
    })
}

/// Runs `work` (async, on its own single-threaded runtime) inside the namespace at `path`.
pub async fn run_in<T, F, Fut>(path: &Path, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let result = enter(&thread_path).and_then(|()| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| NetnsError::Enter {
                        path: thread_path.clone(),
                        reason: format!("cannot start a runtime: {e}"),
                    })
                    .map(|rt| rt.block_on(work()))
            });
            let _ = tx.send(result);
        })
        .map_err(|e| NetnsError::Enter {
            path: path.clone(),
            reason: format!("cannot start a thread: {e}"),
        })?;
    rx.await.map_err(|_| NetnsError::Thread(path))?
}

/// Writes a sysctl of the calling thread's network namespace, named by its path under
/// `/proc/sys` (`["net", "ipv4", "conf", "eth0", "forwarding"]`; interface names may hold dots,
/// so the dotted spelling is not used).
pub fn write_sysctl(parts: &[&str], value: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/{}", parts.join("/"));
    std::fs::write(&path, value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {value} to {path}: {e}")))
}

/// Reads a sysctl of the calling thread's network namespace.
pub fn read_sysctl(parts: &[&str]) -> std::io::Result<String> {
    let path = format!("/proc/sys/{}", parts.join("/"));
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

/// Whether `path` can be entered as a network namespace.
pub async fn probe(path: &Path) -> Result<(), NetnsError> {
    run_in(path, || async {}).await
}
