//! `lab`: a calico-rs cluster in network namespaces on this machine, kept between commands.
//!
//! ```text
//! lab up [--nodes N] [--encap vxlan|none] [--birdd]
//! lab status
//! lab pod add <node> <ns>/<pod> [--labels k=v,...]
//! lab pod del <ns>/<pod>
//! lab exec <ns>/<pod> -- <cmd...>
//! lab probe [--port P] [--udp]
//! lab down
//! ```
//! The work is in [`calico_e2e::launcher`]; this file parses and prints.

use std::process::ExitCode;

use anyhow::Result;
use calico_e2e::launcher::{Launcher, UpOptions};
use calico_lab::Encap;
use calico_lab::probe::Proto;
use clap::{Parser, Subcommand, ValueEnum};

/// A calico-rs cluster in network namespaces on this machine (root needed): nodes on a
/// bridge, etcd, ipamd, felixd (and birdd) per node, pods made by the real CNI plugin.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EncapArg {
    /// felixd routes between nodes through VXLAN (works without birdd).
    Vxlan,
    /// Native routing: birdd carries the routes (use with --birdd).
    None,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Builds the cluster and leaves it running.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, value_enum, default_value_t = EncapArg::Vxlan)]
        encap: EncapArg,
        /// Start birdd (BGP full mesh) on every node.
        #[arg(long)]
        birdd: bool,
    },
    /// Removes the cluster, and anything left by an earlier run.
    Down,
    /// Nodes, daemons and pods.
    Status,
    /// Pods.
    #[command(subcommand)]
    Pod(PodCmd),
    /// Runs a command inside a pod's network namespace.
    Exec {
        /// <namespace>/<pod>
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Connects from every pod to every other and prints the grid.
    Probe {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// UDP instead of TCP.
        #[arg(long)]
        udp: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PodCmd {
    /// Makes a pod on a node through CNI ADD.
    Add {
        /// node-a, node-b, ...
        node: String,
        /// <namespace>/<pod>
        pod: String,
        /// Labels: k=v,k2=v2
        #[arg(long, default_value = "")]
        labels: String,
    },
    /// Removes a pod through CNI DEL.
    Del {
        /// <namespace>/<pod>
        pod: String,
    },
}

fn main() -> ExitCode {
    // The lab's harness reports a daemon that would not start by panicking; say it plainly.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown failure");
        eprintln!("lab: {msg}");
    }));
    let args = Args::parse();
    match run(args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode> {
    let l = Launcher::from_env();
    match cmd {
        Cmd::Up {
            nodes,
            encap,
            birdd,
        } => {
            // Ctrl-C while building: remove what was made so far.
            let naming = l.naming.clone();
            std::thread::spawn(move || {
                let sig = calico_lab::wait_for_interrupt();
                eprintln!("lab: {sig}: removing what was made");
                // The main thread stops at its next line of output.
                let _out = std::io::stdout().lock();
                calico_lab::halt();
                calico_lab::remove(&naming);
                std::process::exit(130);
            });
            let encap = match encap {
                EncapArg::Vxlan => Encap::Vxlan,
                EncapArg::None => Encap::None,
            };
            let started = std::time::Instant::now();
            let s = l.up(&UpOptions {
                nodes,
                encap,
                birdd,
                bin_dir: calico_e2e::bin_dir(),
            })?;
            println!(
                "lab up in {:.1?}: {} nodes, etcd at {} (inside {}), state in {}",
                started.elapsed(),
                s.cluster.nodes.len(),
                s.cluster.etcd.endpoint,
                s.cluster.fabric,
                l.state_path().display()
            );
            for n in &s.cluster.nodes {
                println!("  {}  {}  {}", n.name, n.v4, n.netns);
            }
            if encap == Encap::None && !birdd {
                println!(
                    "note: with --encap none and no --birdd, pods on different nodes cannot reach each other"
                );
            }
            println!("next: lab pod add node-a default/web; lab probe; lab down");
        }
        Cmd::Down => {
            let r = l.down()?;
            println!(
                "lab down: {} namespace(s) deleted, {} process(es) stopped",
                r.namespaces.len(),
                r.processes
            );
        }
        Cmd::Status => print!("{}", l.status()?),
        Cmd::Pod(PodCmd::Add { node, pod, labels }) => {
            let p = l.pod_add(&node, &pod, &labels)?;
            let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
            println!(
                "{pod} on {node}: {} (namespace {})",
                ips.join(", "),
                p.netns
            );
        }
        Cmd::Pod(PodCmd::Del { pod }) => {
            l.pod_del(&pod)?;
            println!("{pod} deleted");
        }
        Cmd::Exec { pod, command } => {
            let code = l.exec(&pod, &command)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Cmd::Probe { port, udp } => {
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            print!("{}", l.probe(proto, port)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
