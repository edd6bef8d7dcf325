//! ipamd: serves Calico IPAM over gRPC.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use calico_datastore::config::{DatastoreConfig, NODENAME_FILE, node_name};
use std::sync::Arc;

use calico_ipam::Ipam;
use calico_ipam::allocator::SystemClock;
use calico_ipam::gc::{Collector, GcConfig};
use calico_ipam::inputs::ClusterView;
use calico_ipam::server::{Ipamd, Listen, TlsFiles};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// ipamd: Calico IPAM as a gRPC service — AutoAssign, AssignIP, ReleaseByHandle, ReleaseIPs,
/// Usage, Check — on a node-local unix socket and, optionally, TCP with mutual TLS.
///
/// The datastore comes from Calico's variables: DATASTORE_TYPE=etcdv3 and ETCD_ENDPOINTS
/// (plus ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE for TLS).
///
/// Example: ETCD_ENDPOINTS=http://127.0.0.1:2379 ipamd --nodename node1
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to serve gRPC: unix:///path (mode 0600) or tcp://address:port; repeatable.
    #[arg(long, default_value = "unix:///var/run/calico/ipam.sock")]
    listen: Vec<Listen>,
    /// Address for /liveness, /readiness and /metrics ("none" to disable).
    #[arg(long, default_value = "127.0.0.1:9096")]
    http_listen: String,
    /// This node's name (else /var/lib/calico/nodename, NODENAME, or the hostname).
    #[arg(long, env = "NODENAME")]
    nodename: Option<String>,
    /// The nodename file to read when --nodename is not given.
    #[arg(long, default_value = NODENAME_FILE)]
    nodename_file: PathBuf,
    /// Server certificate for tcp:// listeners (PEM).
    #[arg(long, requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    /// Server key for tcp:// listeners (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// CA that client certificates must be signed by (PEM).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// How long an address's owner must stay gone before the leak collector releases it
    /// (Go duration syntax, as Calico's leakGracePeriod).
    #[arg(long, default_value = "15m")]
    leak_grace_period: calico_api::numorstring::Duration,
    /// Do not take part in leak collection (another ipamd does it).
    #[arg(long)]
    no_gc: bool,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, env = "IPAMD_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    calico_proto::lifecycle::init_logging(&args.log_level);

    let node = node_name(args.nodename.as_deref(), &args.nodename_file)?;
    let ds = DatastoreConfig::from_env()?
        .connect()
        .await
        .context("connecting to the datastore")?;
    let http = match args.http_listen.as_str() {
        "none" | "" => None,
        a => Some(
            a.parse()
                .with_context(|| format!("--http-listen {a:?}: expected ADDRESS:PORT or none"))?,
        ),
    };
    let tls = match (args.tls_cert, args.tls_key, args.tls_client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(TlsFiles {
            cert,
            key,
            client_ca,
        }),
        _ => None,
    };
    let stop = CancellationToken::new();
    // Pools, reservations, configuration and this node's labels are watched, so a request
    // for this node reads nothing before it writes.
    let view = ClusterView::new(&node);
    tokio::spawn(view.clone().run(ds.clone(), stop.clone()));
    let ipam = Ipam::new(ds).with_view(view);
    let grace = args
        .leak_grace_period
        .to_std()
        .context("--leak-grace-period must not be negative")?;
    let ipamd = Ipamd {
        ipam: ipam.clone(),
        node: node.clone(),
        listen: args.listen,
        http,
        tls,
    };
    tracing::info!(%node, "ipamd starting");

    if !args.no_gc {
        let identity = format!("{node}/{}", std::process::id());
        let gc = Collector::new(ipam, Arc::new(SystemClock), GcConfig::new(&identity, grace));
        tokio::spawn(gc.run(stop.clone()));
    }
    calico_proto::lifecycle::stop_on_signal(stop.clone());
    ipamd.run(stop, Duration::from_secs(10)).await
}
