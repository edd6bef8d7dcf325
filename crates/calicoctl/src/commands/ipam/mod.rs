//! `calicoctl ipam show` and `ipam check`, read straight from the datastore through the IPAM
//! library (the same code ipamd runs).

use std::process::ExitCode;

use anyhow::Result;
use calico_datastore::ResourceClient;
use calico_ipam::Ipam;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Address usage per IP pool (and per block with --show-blocks).
    ///
    /// Example: calicoctl ipam show --show-blocks
    Show {
        /// Also list each allocation block.
        #[arg(long)]
        show_blocks: bool,
    },
    /// Check IPAM consistency: leaks, duplicates, handles, orphaned affinities.
    ///
    /// Example: calicoctl ipam check
    Check,
}

pub async fn run(rc: &ResourceClient, cmd: &Command) -> Result<ExitCode> {
    let ipam = Ipam::new(rc.datastore().clone());
    match cmd {
        Command::Show { show_blocks } => {
            let usage = ipam.usage().await?;
            let mut rows = Vec::new();
            for p in &usage.pools {
                rows.push(row("IP Pool", &p.cidr.to_string(), p.in_use, p.capacity));
                if *show_blocks {
                    for b in usage.blocks.iter().filter(|b| b.pool == p.name) {
                        rows.push(row("Block", &b.cidr.to_string(), b.in_use, b.capacity));
                    }
                }
            }
            print!(
                "{}",
                crate::printer::boxed(
                    &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
                    &rows
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let report = ipam.check(None).await?;
            println!(
                "Checked {} allocations; found {} problem(s).",
                report.allocations_checked,
                report.problems.len()
            );
            for p in &report.problems {
                let mut what = format!("{:?}", p.kind);
                if let Some(ip) = p.ip {
                    what.push_str(&format!(" {ip}"));
                }
                if let Some(h) = &p.handle {
                    what.push_str(&format!(" handle {h}"));
                }
                if let Some(b) = p.block {
                    what.push_str(&format!(" block {b}"));
                }
                println!("  {what}: {}", p.detail);
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn row(kind: &str, cidr: &str, in_use: u128, capacity: u128) -> Vec<String> {
    let pct = |n: u128| {
        if capacity == 0 {
            0.0
        } else {
            100.0 * n as f64 / capacity as f64
        }
    };
    let free = capacity.saturating_sub(in_use);
    vec![
        kind.to_string(),
        cidr.to_string(),
        g5(capacity as f64),
        format!("{} ({:.0}%)", g5(in_use as f64), pct(in_use)),
        format!("{} ({:.0}%)", g5(free as f64), pct(free)),
    ]
}

/// Go's `%.5g`, as `ipam show` prints counts.
fn g5(f: f64) -> String {
    crate::printer::go_g(f, Some(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_calicoctl_prints_them() {
        assert_eq!(g5(256.0), "256");
        assert_eq!(g5(65536.0), "65536");
        assert_eq!(g5(100000.0), "1e+05");
        assert_eq!(g5(1_048_576.0), "1.0486e+06");
        assert_eq!(g5(2f64.powi(80)), "1.2089e+24");
        assert_eq!(g5(5.0), "5");
    }

    #[test]
    fn the_usage_table_matches_calicos_layout() {
        let rows = vec![
            row("IP Pool", "10.65.0.0/16", 5, 65536),
            row("Block", "10.65.79.0/26", 5, 64),
        ];
        let t = crate::printer::boxed(
            &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
            &rows,
        );
        let want = "\
+----------+---------------+-----------+------------+--------------+
| GROUPING |     CIDR      | IPS TOTAL | IPS IN USE |   IPS FREE   |
+----------+---------------+-----------+------------+--------------+
| IP Pool  | 10.65.0.0/16  |     65536 | 5 (0%)     | 65531 (100%) |
| Block    | 10.65.79.0/26 |        64 | 5 (8%)     | 59 (92%)     |
+----------+---------------+-----------+------------+--------------+
";
        assert_eq!(t, want);
    }
}
