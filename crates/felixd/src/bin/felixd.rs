//! felixd: the per-node policy and route agent.

use std::path::PathBuf;

use anyhow::{Context, Result};
use calico_datastore::config::{DatastoreConfig, NODENAME_FILE, node_name};
use calico_datastore::etcd::EtcdConfig;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// felixd: turns the datastore's endpoints, policies and pools into iptables rules, IP sets
/// and routes on this node, and keeps them so.
///
/// The datastore comes from Calico's variables (DATASTORE_TYPE, ETCD_ENDPOINTS and the ETCD_*
/// TLS files; FELIX_ETCDENDPOINTS also works). Felix's own parameters are read from FELIX_*
/// variables and the FelixConfiguration resources `node.<name>` and `default`, e.g.
/// FELIX_IPTABLESBACKEND=NFT, FELIX_HEALTHENABLED=true, FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT.
///
/// Example: ETCD_ENDPOINTS=http://127.0.0.1:2379 felixd --nodename node1
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// This node's name (else /var/lib/calico/nodename, NODENAME, or the hostname).
    #[arg(long, env = "FELIX_FELIXHOSTNAME")]
    nodename: Option<String>,
    /// The nodename file to read when --nodename is not given.
    #[arg(long, default_value = NODENAME_FILE)]
    nodename_file: PathBuf,
    /// Where the agent API for the CNI plugin listens ("none" to disable).
    #[arg(long, default_value = "/var/run/calico/felix.sock")]
    agent_socket: String,
    /// Serve /liveness, /readiness and /metrics on this address whatever the configuration
    /// says (e.g. 127.0.0.1:9099).
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Where to write the pod MTU for the CNI plugin ("none" to skip).
    #[arg(long, default_value = "/var/lib/calico/mtu")]
    mtu_file: String,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, env = "FELIX_LOGSEVERITYSCREEN", default_value = "info")]
    log_level: String,
}

fn datastore() -> Result<DatastoreConfig> {
    // Felix's own spelling of the etcd endpoints, used when Calico's is absent.
    if std::env::var_os("ETCD_ENDPOINTS").is_none()
        && std::env::var_os("CALICO_ETCD_ENDPOINTS").is_none()
        && let Ok(eps) = std::env::var("FELIX_ETCDENDPOINTS")
    {
        return Ok(DatastoreConfig::Etcd(Box::new(EtcdConfig::new(
            eps.split(',').map(str::trim).filter(|e| !e.is_empty()),
        ))));
    }
    Ok(DatastoreConfig::from_env()?)
}

// One worker thread: the agent's work is one loop (calculate, then program the kernel), and
// every extra allocating thread gets its own glibc arena, which at a thousand pods kept
// ~45 MB of freed memory resident (make bench-felix, felixd RSS at scale).
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let args = Args::parse();
    calico_proto::lifecycle::init_logging(&args.log_level);

    let hostname = node_name(args.nodename.as_deref(), &args.nodename_file)?;
    let ds = datastore()?
        .connect()
        .await
        .context("connecting to the datastore")?;
    let opts = felixd::daemon::Options {
        hostname: hostname.clone(),
        agent_socket: match args.agent_socket.as_str() {
            "none" | "" => None,
            p => Some(PathBuf::from(p)),
        },
        env: felixd::config::Sources::from_process_env(),
        http_override: args.http_listen,
        mtu_file: match args.mtu_file.as_str() {
            "none" | "" => None,
            p => Some(PathBuf::from(p)),
        },
    };
    let stop = CancellationToken::new();
    calico_proto::lifecycle::stop_on_signal(stop.clone());
    tracing::info!(node = %hostname, "felixd starting");
    felixd::daemon::run(ds, opts, stop).await
}
