//! Logs go to stderr and to `log_file_path` (default `/var/log/calico/cni/cni.log`; empty for
//! none), at `log_level` — never to stdout, which belongs to the result.

use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::netconf::{DEFAULT_LOG_FILE, NetConf};

pub fn init(conf: &NetConf, container_id: Option<&str>) {
    let level = match conf.log_level.as_deref().map(str::to_lowercase).as_deref() {
        Some("debug") => "debug",
        Some("trace") => "trace",
        Some("warn" | "warning") => "warn",
        Some("error" | "fatal" | "panic") => "error",
        _ => "info",
    };
    let filter = || {
        EnvFilter::try_from_env("CALICO_CNI_LOG").unwrap_or_else(|_| {
            EnvFilter::new(format!("warn,calico_cni={level},calico_datastore={level}"))
        })
    };
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter(filter());
    let path = conf.log_file_path.as_deref().unwrap_or(DEFAULT_LOG_FILE);
    let file = (!path.is_empty())
        .then(|| {
            if let Some(dir) = std::path::Path::new(path).parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        })
        .and_then(|r| match r {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "calico-rs CNI: cannot open log file {path}: {e}; logging to stderr only"
                );
                None
            }
        })
        .map(|f| {
            fmt::layer()
                .with_writer(Mutex::new(f))
                .with_ansi(false)
                .with_filter(filter())
        });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
    if let Some(id) = container_id {
        tracing::debug!(container = id, "invocation");
    }
}
