//! birdd: the per-node BGP daemon of calico-rs (Calico's BIRD + confd in one process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use calico_datastore::config::{DatastoreConfig, NODENAME_FILE, node_name};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// birdd: advertises this node's pod blocks over BGP (full mesh, route reflectors, explicit
/// peers, as the datastore's BGPConfiguration, BGPPeer and Node resources say) and installs
/// the routes it learns in the kernel with protocol `bird`.
///
/// The datastore comes from Calico's variables: DATASTORE_TYPE=etcdv3, ETCD_ENDPOINTS
/// (and ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE), or their CALICO_ forms.
///
/// Example: ETCD_ENDPOINTS=http://10.0.0.10:2379 birdd --nodename node-1
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// This node's name (else the nodename file, NODENAME, or the hostname).
    #[arg(long, env = "NODENAME")]
    nodename: Option<String>,
    /// The nodename file to read when --nodename is not given.
    #[arg(long, default_value = NODENAME_FILE)]
    nodename_file: PathBuf,
    /// Control socket for `calicoctl node status` ("none" to disable).
    #[arg(long, default_value = "/var/run/calico/birdd.sock")]
    control_socket: String,
    /// Serve /liveness, /readiness and /metrics here ("none" to disable).
    #[arg(long, default_value = "127.0.0.1:9900")]
    http_listen: String,
    /// BGP port, overriding BGPConfiguration's listenPort.
    #[arg(long)]
    port: Option<u16>,
    /// Kernel route protocol number for learned routes (12 = bird, what Calico's tooling expects).
    #[arg(long, default_value_t = 12)]
    kernel_protocol: u8,
    /// Seconds after start by which kernel routes left by a previous run, and not learned
    /// again, are removed (sooner once every peer has sent End-of-RIB).
    #[arg(long, default_value_t = 120)]
    reconcile_after: u64,
    /// Where the Kubernetes secrets named by BGP passwords (BGPPeer `password.secretKeyRef`,
    /// BGPConfiguration `nodeMeshPassword`) are mounted: each secret as a directory of its
    /// keys, as a Secret volume lays them out.
    #[arg(
        long,
        env = "BIRDD_SECRETS_DIR",
        default_value = "/etc/calico/bgp-secrets"
    )]
    secrets_dir: PathBuf,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, env = "BIRDD_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn main() -> Result<()> {
    one_malloc_arena();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

/// glibc gives threads that allocate at the same time arenas of their own (up to eight per
/// core), and memory freed into one arena serves only that arena. birdd's sessions decode
/// UPDATEs on worker threads and the daemon thread frees them, so memory piled up in
/// several arenas: peak RSS per path was 86–106 bytes with them and 82–98 with one
/// (bench-bgp E, 200,000 routes). Unless the environment already says, birdd starts again
/// at once, before any thread exists, with one arena; should that fail it runs as it is.
fn one_malloc_arena() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_ARENA_MAX";
    // Set on the way in: should the loader drop VAR (a setuid start does), birdd still
    // starts again only once.
    const AGAIN: &str = "BIRDD_STARTED_AGAIN";
    if std::env::var_os(VAR).is_some() || std::env::var_os(AGAIN).is_some() {
        return;
    }
    // The binary's own path, not /proc/self/exe: the kernel names the process after the
    // file it runs, and `ps`, `pgrep birdd` and `top` would show "exe".
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(VAR, "1")
        .env(AGAIN, "1")
        .exec();
    eprintln!(
        "birdd: could not start again with {VAR}=1 ({err}); running with glibc's default arenas"
    );
}

async fn run() -> Result<()> {
    let args = Args::parse();
    calico_proto::lifecycle::init_logging(&args.log_level);

    let nodename = node_name(args.nodename.as_deref(), &args.nodename_file)?;
    let http_listen = match args.http_listen.as_str() {
        "none" | "" => None,
        a => Some(a.parse::<SocketAddr>().with_context(|| {
            format!("--http-listen {a:?} is not an address:port (e.g. 127.0.0.1:9900) or none")
        })?),
    };
    let ds = DatastoreConfig::from_env()?
        .connect()
        .await
        .context("connecting to the datastore")?;
    let opts = birdd::daemon::Options {
        nodename: nodename.clone(),
        control_socket: match args.control_socket.as_str() {
            "none" | "" => None,
            p => Some(PathBuf::from(p)),
        },
        http_listen,
        kernel_protocol: args.kernel_protocol,
        listen_port: args.port,
        reconcile_after: Duration::from_secs(args.reconcile_after),
        secrets_dir: args.secrets_dir,
    };
    let stop = CancellationToken::new();
    calico_proto::lifecycle::stop_on_signal(stop.clone());
    tracing::info!(node = %nodename, "birdd starting");
    birdd::daemon::run(ds, opts, stop).await
}
