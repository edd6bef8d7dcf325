//! birdd: the per-node BGP daemon. Not implemented yet in this build.

use clap::Parser;

/// birdd: advertises this node's pod blocks over BGP (full mesh, route reflectors, explicit
/// peers) and installs the routes it learns.
///
/// STATUS: not implemented in this build; it parses its flags and exits with an error.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// This node's name (else /var/lib/calico/nodename, NODENAME, or the hostname).
    #[arg(long, env = "NODENAME")]
    nodename: Option<String>,
    /// Control socket for calicoctl node status.
    #[arg(long, default_value = "/var/run/calico/birdd.sock")]
    control_socket: String,
    /// BGP port (BGPConfiguration listenPort overrides).
    #[arg(long, default_value_t = 179)]
    port: u16,
}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!(
        "birdd: the BGP daemon is not implemented in this build of calico-rs yet; no session was opened"
    );
    std::process::ExitCode::FAILURE
}
