//! felixd: the per-node policy and route agent.

use clap::Parser;

/// felixd: turns the datastore's endpoints, policies and pools into iptables/nftables rules,
/// ipsets, routes and interface settings on this node.
///
/// STATUS: the rule renderer is being built; this binary does not program anything yet.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// This node's name (else /var/lib/calico/nodename, NODENAME, or the hostname).
    #[arg(long, env = "FELIX_FELIXHOSTNAME")]
    nodename: Option<String>,
    /// etcdv3 or kubernetes.
    #[arg(long, env = "FELIX_DATASTORETYPE", default_value = "etcdv3")]
    datastore_type: String,
    /// Comma-separated etcd URLs.
    #[arg(long, env = "FELIX_ETCDENDPOINTS")]
    etcd_endpoints: Option<String>,
    /// Health endpoint port (/liveness, /readiness).
    #[arg(long, env = "FELIX_HEALTHPORT", default_value_t = 9099)]
    health_port: u16,
    /// Prometheus metrics port.
    #[arg(long, env = "FELIX_PROMETHEUSMETRICSPORT", default_value_t = 9091)]
    metrics_port: u16,
}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!(
        "felixd: the policy agent is not complete in this build of calico-rs yet; nothing was programmed"
    );
    std::process::ExitCode::FAILURE
}
