//! A lock per pod: two sandboxes of one pod share the host interface name, so their ADDs and
//! DELs must not interleave. A `flock` on a file named after the host interface, beside
//! Calico's IPAM lock; the kernel releases it if the process dies.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::cni::CniError;

#[derive(Debug)]
pub struct PodLock {
    _lock: Flock<File>,
}

impl PodLock {
    /// Waits (up to `wait`) for the lock of the pod whose host interface is `host_ifname`.
    pub async fn acquire(
        dir: &Path,
        host_ifname: &str,
        wait: Duration,
    ) -> Result<PodLock, CniError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            CniError::calico(format!(
                "creating the lock directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(format!("cni-{host_ifname}.lock"));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| CniError::calico(format!("opening {}: {e}", path.display())))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(PodLock { _lock: lock }),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(CniError::try_again(format!(
                            "another CNI operation on this pod holds {} for more than {wait:?}",
                            path.display()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((_, e)) => {
                    return Err(CniError::calico(format!("locking {}: {e}", path.display())));
                }
            }
        }
    }
}
