//! typha: the datastore fan-out cache. Not implemented yet in this build.

use clap::Parser;

/// typha: holds one snapshot per syncer type and streams snapshot + deltas to many felixd and
/// birdd clients.
///
/// STATUS: not implemented in this build; it parses its flags and exits with an error.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port clients connect to.
    #[arg(long, env = "TYPHA_PORT", default_value_t = 5473)]
    port: u16,
    /// Health endpoint port.
    #[arg(long, env = "TYPHA_HEALTHPORT", default_value_t = 9098)]
    health_port: u16,
    /// Prometheus metrics port.
    #[arg(long, env = "TYPHA_PROMETHEUSMETRICSPORT", default_value_t = 9093)]
    metrics_port: u16,
}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!(
        "typha: the fan-out cache is not implemented in this build of calico-rs yet; nothing is served"
    );
    std::process::ExitCode::FAILURE
}
