//! `calicoctl ipam show|check|release|configure`, read and written through the IPAM library
//! (the same code ipamd runs), as Calico's `commands/ipam/*.go` print them.

pub mod check;
pub mod configure;
pub mod release;
pub mod show;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use calico_datastore::ResourceClient;
use calico_ipam::Ipam;

use crate::commands::version::CLIENT_VERSION;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show details of a Calico configuration, assigned IP address, or of overall IP usage.
    ///
    /// Without options: address usage per IP pool.
    ///
    /// Example: calicoctl ipam show --show-blocks
    #[command(group = clap::ArgGroup::new("what").multiple(false))]
    Show {
        /// Report whether this specific IP address is in use.
        #[arg(long, group = "what", value_name = "IP")]
        ip: Option<String>,
        /// Show detailed information for IP blocks as well as pools.
        #[arg(long, group = "what")]
        show_blocks: bool,
        /// Show detailed information for "borrowed" IP addresses.
        #[arg(long, group = "what")]
        show_borrowed: bool,
        /// Show current Calico IPAM configuration.
        #[arg(long, group = "what")]
        show_configuration: bool,
    },
    /// Check the integrity of the IPAM datastructures.
    ///
    /// Compares IPAM allocations with the workload endpoints and node tunnel addresses that
    /// use them, and looks for leaked addresses and handles, duplicates and orphaned block
    /// affinities. With -o, writes Calico's JSON report for 'ipam release --from-report'.
    ///
    /// Example: calicoctl ipam check --show-problem-ips -o /tmp/ipam-report.json
    Check {
        /// Path to output report file.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print all IPs that are checked.
        #[arg(long)]
        show_all_ips: bool,
        /// Print all IPs that are leaked or not allocated properly.
        #[arg(long)]
        show_problem_ips: bool,
        /// Accepted for compatibility: with an etcd datastore there is no Kubernetes API to
        /// read services from.
        #[arg(long, value_name = "KUBECONFIG")]
        kubeconfig: Option<String>,
    },
    /// Release a Calico assigned IP address.
    ///
    /// Releases an address that was previously assigned to an endpoint, so that it can be
    /// assigned again. This does not remove the address from any endpoint still using it:
    /// only use it to clean up after endpoints that were not cleanly removed. With
    /// --from-report, releases every leak the reports agree on (lock the datastore, run
    /// 'ipam check -o', then release; --force skips the lock and version checks).
    ///
    /// Example: calicoctl ipam release --ip=10.65.79.1
    ///
    /// Example: calicoctl ipam release --from-report=/tmp/ipam-report.json
    Release {
        /// IP address to release.
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
        /// Release all leaked addresses from the report. If several are given, only leaks
        /// common to all reports are released; at least one should be newly generated.
        #[arg(long = "from-report", value_name = "REPORT")]
        from_report: Vec<PathBuf>,
        /// Force release of leaked addresses.
        #[arg(long)]
        force: bool,
    },
    /// Configure IPAM.
    ///
    /// Modify configuration for Calico IP address management.
    ///
    /// Example: calicoctl ipam configure --strictaffinity=true --max-blocks-per-host=4
    Configure {
        /// Set StrictAffinity to true/false. When StrictAffinity is true, borrowing IP
        /// addresses is not allowed.
        #[arg(long = "strictaffinity", value_name = "true/false")]
        strict_affinity: Option<String>,
        /// Set the maximum number of blocks that can be affine to a host.
        #[arg(long, value_name = "number")]
        max_blocks_per_host: Option<String>,
        /// Control whether KubeVirt VMs retain persistent IP addresses across lifecycle
        /// events.
        #[arg(long, value_name = "Enabled|Disabled")]
        kubevirt_ip_persistence: Option<String>,
    },
}

/// Calico's `argutils.ValidateIP`: a bad address is reported on stdout, exit 1.
fn parse_ip(s: &str) -> std::result::Result<IpAddr, ExitCode> {
    s.parse::<IpAddr>().map_err(|_| {
        println!("Error executing command: invalid IP address specified: {s}");
        ExitCode::FAILURE
    })
}

pub async fn run(rc: &ResourceClient, cmd: &Command) -> Result<ExitCode> {
    let ipam = Ipam::new(rc.datastore().clone());
    let out = match cmd {
        Command::Show { ip: Some(ip), .. } => match parse_ip(ip) {
            Ok(ip) => show::ip(rc, ip).await?,
            Err(code) => return Ok(code),
        },
        Command::Show {
            show_blocks: true, ..
        } => show::usage(&ipam, true).await?,
        Command::Show {
            show_borrowed: true,
            ..
        } => show::borrowed(rc).await?,
        Command::Show {
            show_configuration: true,
            ..
        } => show::configuration(&ipam).await?,
        Command::Show { .. } => show::usage(&ipam, false).await?,
        Command::Check {
            output,
            show_all_ips,
            show_problem_ips,
            kubeconfig: _,
        } => {
            let opts = check::Options {
                show_all_ips: *show_all_ips,
                show_problem_ips: *show_problem_ips,
            };
            let checked = check::check(rc, opts, CLIENT_VERSION).await?;
            print!("{}", checked.text);
            if let Some(path) = output {
                std::fs::write(path, check::report_json(&checked.report)?).with_context(|| {
                    format!("writing the report to {} (check -o)", path.display())
                })?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Release {
            ip,
            from_report,
            force,
        } => {
            if !from_report.is_empty() {
                let mut s = release::from_reports(rc, from_report, *force, CLIENT_VERSION).await?;
                s.push_str("You may now unlock the data store.\n");
                s
            } else if let Some(ip) = ip {
                match parse_ip(ip) {
                    Ok(ip) => release::ip(&ipam, ip).await?,
                    Err(code) => return Ok(code),
                }
            } else {
                bail!(
                    "nothing to release: give --ip=<IP>, or --from-report=<REPORT> written by 'calicoctl ipam check -o <REPORT>'"
                );
            }
        }
        Command::Configure {
            strict_affinity,
            max_blocks_per_host,
            kubevirt_ip_persistence,
        } => {
            configure::configure(
                &ipam,
                &configure::Settings {
                    strict_affinity: strict_affinity.clone(),
                    max_blocks_per_host: max_blocks_per_host.clone(),
                    kubevirt_ip_persistence: kubevirt_ip_persistence.clone(),
                },
            )
            .await?
        }
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests;
