//! Calico's CNI plugins, `calico` (the network plugin) and `calico-ipam` (the IPAM plugin).
//! A container runtime runs them with the CNI_* environment and the network configuration on
//! stdin; they answer with a result or a CNI error on stdout.
//!
//! - [`cni`]: the protocol (environment, errors, results in every supported version);
//! - [`netconf`]: Calico's configuration keys and their checks;
//! - [`plugin`], [`ipam_plugin`]: the commands;
//! - [`dataplane`]: the veth, addresses, routes and sysctls; [`netns`]: entering the pod;
//! - [`ipam`]: ipamd or a delegated IPAM plugin; [`wep`]: the WorkloadEndpoint;
//!   [`felix`]: telling felixd;
//! - [`runtime`]: a small libcni, to run conflists in tests and in the lab.

pub mod cni;
pub mod dataplane;
pub mod failpoint;
pub mod felix;
pub mod ipam;
pub mod ipam_plugin;
mod lock;
mod logging;
pub mod netconf;
pub mod netns;
pub mod pending;
pub mod plugin;
pub mod runtime;
pub mod wep;

use std::io::{Read, Write};
use std::process::ExitCode;

use cni::{CniError, Command, Env, code};
use netconf::{NetConf, Role};
use plugin::Invocation;

/// Which binary is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Calico,
    CalicoIpam,
}

impl Binary {
    fn name(self) -> &'static str {
        match self {
            Binary::Calico => "calico",
            Binary::CalicoIpam => "calico-ipam",
        }
    }
}

fn print_json(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The whole of one invocation, as `main` runs it.
pub fn main_entry(binary: Binary) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-v" | "--version") => {
            println!("{} {}", binary.name(), env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("-h" | "--help") => {
            println!(
                "{}: Calico's CNI {} plugin (calico-rs {}).\n\n\
                 Container runtimes run it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION),\n\
                 CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH in the environment and the\n\
                 network configuration on stdin; it prints a result or a CNI error on stdout.\n\
                 Supported CNI versions: {}.\n\n\
                 Flags: -v prints the version; -t checks that the datastore in the configuration on stdin\n\
                 can be reached.",
                binary.name(),
                if binary == Binary::Calico {
                    "network"
                } else {
                    "IPAM"
                },
                env!("CARGO_PKG_VERSION"),
                cni::SUPPORTED_VERSIONS.join(", ")
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let test_datastore = args.first().is_some_and(|a| a == "-t");
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        print_json(&CniError::new(code::IO, format!("reading stdin: {e}")).to_json("1.0.0"));
        return ExitCode::FAILURE;
    }
    let requested_version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "1.0.0".to_string());
    let fail = |e: CniError| {
        print_json(&e.to_json(&requested_version));
        ExitCode::FAILURE
    };
    let env = match Env::from_process() {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let Some(command) = env.command.or(test_datastore.then_some(Command::Status)) else {
        eprintln!(
            "{} plugin (calico-rs {}): CNI protocol versions {}",
            binary.name(),
            env!("CARGO_PKG_VERSION"),
            cni::SUPPORTED_VERSIONS.join(", ")
        );
        return ExitCode::SUCCESS;
    };
    if command == Command::Version {
        print_json(&cni::version_json(&requested_version));
        return ExitCode::SUCCESS;
    }
    let role = match binary {
        Binary::Calico => Role::Network,
        Binary::CalicoIpam => Role::Ipam,
    };
    let (conf, raw) = match NetConf::parse(&stdin, role) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    logging::init(&conf, env.container_id.as_deref());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(CniError::new(
                code::INTERNAL,
                format!("starting a runtime: {e}"),
            ));
        }
    };
    let inv = Invocation { env, conf, raw };
    let result = rt.block_on(async {
        match binary {
            Binary::Calico => plugin::run(command, &inv).await,
            Binary::CalicoIpam => ipam_plugin::run(command, &inv).await,
        }
    });
    match result {
        Ok(Some(v)) => {
            print_json(&v);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(code = e.code, error = %e, ?command, "failed");
            fail(e)
        }
    }
}
