//! `calicoctl version`, and the client/cluster version check every data command makes first
//! (Calico's `commands/version.go` and `commands/common/version_mismatch.go`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use calico_api::resource::ClusterInformation;
use calico_datastore::{DatastoreError, ResourceClient};

/// This calicoctl's version, as it reports itself and writes into `ipam check` reports.
pub const CLIENT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Display the client version only.
    #[arg(long)]
    client: bool,
    /// Poll for changes to the cluster information at a frequency specified using POLL
    /// duration (e.g. 1s, 10m, 2h etc.). A value of 0 (the default) disables polling.
    #[arg(long, value_name = "POLL")]
    poll: Option<String>,
}

/// `major.minor.patch` of a version: the `v` prefix and any `-suffix` dropped.
fn core(v: &str) -> &str {
    let v = v.strip_prefix('v').unwrap_or(v);
    v.split('-').next().unwrap_or(v)
}

/// What to say when the datastore cannot be reached: the version is not the problem, so
/// `--allow-version-mismatch` would not help (Calico skips its check then).
pub fn unreachable(e: &DatastoreError) -> String {
    format!(
        "cannot reach the datastore: {e}\nCheck the endpoints (ETCD_ENDPOINTS, or spec.etcdEndpoints in the --config file), that etcd is running there, and the TLS settings (ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE, or their spec fields)."
    )
}

/// Calico's `CheckVersionMismatch`: `Err` with its message when the cluster runs another
/// version. Skipped when allowed, when ClusterInformation is missing or names no version;
/// an unreachable datastore is reported as such.
pub async fn check_mismatch(rc: &ResourceClient, allow: bool) -> std::result::Result<(), String> {
    if allow {
        return Ok(());
    }
    let ci = match rc.get::<ClusterInformation>(None, "default").await {
        Ok(ci) => ci,
        Err(DatastoreError::NotFound { .. }) => return Ok(()),
        Err(e @ DatastoreError::Unavailable { .. }) => return Err(unreachable(&e)),
        Err(e) => {
            return Err(format!(
                "unable to get Cluster Information to verify version mismatch: {e}\nUse --allow-version-mismatch to override"
            ));
        }
    };
    mismatch(CLIENT_VERSION, &ci.spec.calico_version)
}

fn mismatch(client: &str, cluster: &str) -> std::result::Result<(), String> {
    if cluster.is_empty() || core(cluster) == core(client) {
        return Ok(());
    }
    Err(format!(
        "version mismatch.\nClient Version:   {client}\nCluster Version:  {}\nUse --allow-version-mismatch to override",
        core(cluster)
    ))
}

/// Go's `time.ParseDuration` for the units an operator types (ns, us, µs, ms, s, m, h).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

pub fn run(args: &Args, config: &std::path::Path) -> Result<ExitCode> {
    let poll = match args.poll.as_deref().filter(|p| !p.is_empty()) {
        None => Duration::ZERO,
        Some(p) => match parse_go_duration(p) {
            Some(d) => d,
            None => bail!("invalid poll duration specified: {p} (use e.g. 1s, 10m or 2h)"),
        },
    };
    println!("Client Version:    {CLIENT_VERSION}");
    println!(
        "Git commit:        {}",
        option_env!("CALICO_RS_GIT_COMMIT").unwrap_or("unknown")
    );
    if args.client {
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ds = match crate::config::load(config) {
            Ok(cfg) => cfg.connect().await.ok(),
            Err(_) => None,
        };
        let Some(ds) = ds else {
            // As Calico does when it has no datastore to ask.
            println!("Unable to detect installed Calico version");
            return Ok(ExitCode::SUCCESS);
        };
        let rc = ResourceClient::new(ds);
        let (mut shown_version, mut shown_type) = (String::new(), String::new());
        loop {
            let err = match rc.get::<ClusterInformation>(None, "default").await {
                Ok(ci) => {
                    let or_unknown = |s: &str| {
                        if s.is_empty() {
                            "unknown".to_string()
                        } else {
                            s.to_string()
                        }
                    };
                    let v = or_unknown(&ci.spec.calico_version);
                    let t = or_unknown(&ci.spec.cluster_type);
                    if v != shown_version {
                        println!("Cluster Version:   {v}");
                        shown_version = v;
                    }
                    if t != shown_type {
                        println!("Cluster Type:      {t}");
                        shown_type = t;
                    }
                    None
                }
                Err(e) => {
                    shown_version.clear();
                    shown_type.clear();
                    Some(format!("unable to retrieve Cluster Version or Type: {e}"))
                }
            };
            if poll.is_zero() {
                return match err {
                    Some(e) => bail!("{e}"),
                    None => Ok(ExitCode::SUCCESS),
                };
            }
            if let Some(e) = err {
                eprintln!("{e}");
            }
            tokio::time::sleep(poll).await;
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versions_compare_as_calico_compares_them() {
        assert!(mismatch("v3.32.1", "").is_ok());
        assert!(mismatch("v3.32.1", "v3.32.1").is_ok());
        assert!(mismatch("v3.32.1", "3.32.1-rc1").is_ok());
        assert_eq!(
            mismatch("v3.32.1", "v3.31.0").unwrap_err(),
            "version mismatch.\nClient Version:   v3.32.1\nCluster Version:  3.31.0\nUse --allow-version-mismatch to override"
        );
    }

    #[test]
    fn poll_durations_read_as_go_reads_them() {
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
