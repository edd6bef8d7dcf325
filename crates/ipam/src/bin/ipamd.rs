//! ipamd: serves Calico IPAM over gRPC. Not implemented yet in this build.

use clap::Parser;

/// ipamd: Calico IPAM as a gRPC service (AutoAssign, AssignIP, ReleaseByHandle, ReleaseIPs,
/// Usage, Check), plus leak collection.
///
/// STATUS: not implemented in this build; it parses its flags and exits with an error.
/// The datastore, resource model and gRPC contract it will use are in place.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to serve: unix:///path or tcp://addr:port (repeatable).
    #[arg(long, default_value = "unix:///var/run/calico/ipam.sock")]
    listen: Vec<String>,
    /// This node's name (else /var/lib/calico/nodename, NODENAME, or the hostname).
    #[arg(long, env = "NODENAME")]
    nodename: Option<String>,
    /// etcdv3 or kubernetes.
    #[arg(long, env = "DATASTORE_TYPE", default_value = "etcdv3")]
    datastore_type: String,
    /// Comma-separated etcd URLs.
    #[arg(long, env = "ETCD_ENDPOINTS")]
    etcd_endpoints: Option<String>,
}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!("ipamd: IPAM is not implemented in this build of calico-rs yet; nothing was started");
    std::process::ExitCode::FAILURE
}
