//! Datastore cleanup a DEL could not do yet. When ipamd or the datastore cannot be reached,
//! DEL removes what is local (the pod's interface), records the rest here and succeeds, so
//! the pod is not stuck terminating; every later run of the plugin on the node replays the
//! records first, and removes each once its cleanup succeeded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::{CniArgs, CniError, Env, code};
use crate::netconf::{NetConf, Role};

/// What a replay needs to finish a DEL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingDel {
    pub conf: Value,
    pub container_id: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
}

impl PendingDel {
    pub fn file_name(&self, network: &str) -> String {
        format!("{network}-{}-{}.json", self.container_id, self.ifname)
    }

    /// The invocation to replay.
    pub fn env(&self) -> Env {
        Env {
            command: Some(crate::cni::Command::Del),
            container_id: Some(self.container_id.clone()),
            netns: None,
            ifname: Some(self.ifname.clone()),
            args: CniArgs(self.args.iter().cloned().collect()),
            path: Vec::new(),
        }
    }
}

/// Records a DEL to finish later (written atomically: temporary file, then rename).
pub fn record(dir: &Path, network: &str, p: &PendingDel) -> Result<PathBuf, CniError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CniError::new(code::IO, format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(p.file_name(network));
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(p).unwrap_or_default();
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| CniError::new(code::IO, format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// The recorded DELs, oldest first.
pub fn list(dir: &Path) -> Vec<(PathBuf, PendingDel)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(std::time::SystemTime, PathBuf, PendingDel)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            let p: PendingDel = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((modified, e.path(), p))
        })
        .collect();
    out.sort_by_key(|(t, _, _)| *t);
    out.into_iter().map(|(_, path, p)| (path, p)).collect()
}

/// Replays recorded DELs through `finish` for at most `budget`; each one done is removed.
pub async fn replay<F, Fut>(dir: &Path, budget: Duration, mut finish: F)
where
    F: FnMut(NetConf, Value, Env) -> Fut,
    Fut: std::future::Future<Output = Result<(), CniError>>,
{
    let started = Instant::now();
    for (path, p) in list(dir) {
        if started.elapsed() > budget {
            break;
        }
        let Ok((conf, raw)) = NetConf::parse(
            &serde_json::to_vec(&p.conf).unwrap_or_default(),
            Role::Network,
        ) else {
            tracing::warn!(file = %path.display(), "a pending DEL has a configuration that no longer parses; removing it");
            let _ = std::fs::remove_file(&path);
            continue;
        };
        match finish(conf, raw, p.env()).await {
            Ok(()) => {
                tracing::info!(container = %p.container_id, "finished a DEL that was waiting for the datastore");
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => {
                tracing::debug!(container = %p.container_id, error = %e, "a pending DEL still cannot finish");
                if e.code == code::TRY_AGAIN {
                    // The datastore is still away: the rest would wait the same.
                    break;
                }
            }
        }
    }
}
