//! `calicoctl node status`: needs the node's BGP daemon (birdd), which this build does not
//! ship yet, so it says so instead of printing an empty table.

use std::process::ExitCode;

use anyhow::Result;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The Calico processes and BGP sessions of this node.
    ///
    /// Example: sudo calicoctl node status
    Status,
}

/// birdd's control socket, where `node status` will read the sessions.
const BIRDD_SOCKET: &str = "/var/run/calico/birdd.sock";

pub fn run(cmd: &Command) -> Result<ExitCode> {
    match cmd {
        Command::Status => {
            if std::path::Path::new(BIRDD_SOCKET).exists() {
                println!("Calico process is running.\n");
            } else {
                println!("Calico process is not running.");
            }
            eprintln!(
                "BGP status is not available: calico-rs has no BGP daemon (birdd) yet, so there are no sessions to show ({BIRDD_SOCKET})."
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
