//! calicoctl: the operator CLI. This build has `validate` and `version`; the resource
//! commands (create, apply, get, ...) arrive with the calicoctl issue.

mod commands;
mod input;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// calicoctl: manage Calico resources.
///
/// This build of calico-rs implements `validate` and `version`; the other calicoctl commands
/// are not available yet.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check resource files offline: syntax, known kinds and fields, Calico's defaults and
    /// validation rules. Nothing is written.
    ///
    /// Example: calicoctl validate -f pools.yaml -f policies/
    Validate(commands::validate::Args),
    /// Print the client version and, when a datastore is configured, the cluster's.
    ///
    /// Example: ETCD_ENDPOINTS=http://127.0.0.1:2379 calicoctl version
    Version(commands::version::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(a) => commands::validate::run(&a),
        Command::Version(a) => commands::version::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
