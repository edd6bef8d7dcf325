//! `calicoctl cluster diags`: a `calico-diagnostics-<time>.tar.gz` bundle in the current
//! directory, laid out and announced as Calico's `commands/cluster/diags.go` does. Calico
//! gathers it with kubectl; with an etcd datastore calico-rs reads the datastore instead:
//! every resource (YAML and the wide table), the IPAM state (usage, borrowed addresses,
//! configuration, `ipam check` and its report, the raw records) and, when birdd's socket
//! answers on this machine, `node status`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use calico_api::resource::{API_VERSION, ClusterInformation, Kind};
use calico_datastore::ResourceClient;
use calico_ipam::Ipam;

use crate::commands::ipam::{check, show};
use crate::commands::version::CLIENT_VERSION;
use crate::ipam_dump::IpamDump;
use crate::printer::{Lookups, Output, Printed, render};
use crate::tarball::{Entry, ustar};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Collect snapshot of diagnostic info and logs related to Calico at the cluster-level.
    ///
    /// Writes calico-diagnostics-<time>.tar.gz in the current directory: every Calico
    /// resource, the IPAM state and check, and this node's BGP status when birdd runs here.
    /// Pod logs are not collected: there is no Kubernetes API with an etcd datastore, so
    /// --since, --max-logs, --max-parallelism and --focus-nodes are only checked.
    ///
    /// Example: calicoctl cluster diags
    Diags(DiagsArgs),
}

#[derive(Debug, clap::Args)]
pub struct DiagsArgs {
    /// Only collect logs newer than provided relative duration, in seconds (s), minutes (m)
    /// or hours (h).
    #[arg(long, value_name = "SINCE")]
    since: Option<String>,
    /// Only collect up to this number of logs, for each kind of Calico component.
    #[arg(
        long,
        value_name = "MAXLOGS",
        default_value_t = 5,
        allow_negative_numbers = true
    )]
    max_logs: i64,
    /// Maximum number of parallel threads to use for collecting logs.
    #[arg(long, value_name = "MAXPARALLELISM", default_value_t = 10)]
    max_parallelism: u32,
    /// Comma-separated list of nodes from which we should try first to collect logs.
    #[arg(long, value_name = "NODES")]
    focus_nodes: Option<String>,
    /// Don't clean up the temporary directory (useful for development).
    #[arg(long)]
    skip_temp_dir_cleanup: bool,
}

/// birdd's control socket, as `node status` finds it.
fn birdd_socket() -> PathBuf {
    std::env::var_os("CALICO_BIRDD_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/run/calico/birdd.sock"))
}

/// Calico's `argutils.ValidateSinceDuration`: digits then one of s, m, h.
fn valid_since(s: &str) -> bool {
    let digits = s.trim_end_matches(['s', 'm', 'h']);
    s.len() == digits.len() + 1 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Files gathered so far, and the lines announcing the work.
#[derive(Debug, Default)]
struct Collected {
    files: Vec<(String, Vec<u8>)>,
    log: String,
}

impl Collected {
    fn say(&mut self, line: &str) {
        self.log.push_str(line);
        self.log.push('\n');
    }

    /// A file, or (when it could not be made) the error, in the file and announced.
    fn add(&mut self, path: &str, r: Result<String>) {
        let text = r.unwrap_or_else(|e| {
            let _ = writeln!(self.log, "ERROR collecting {path}: {e:#}");
            format!("ERROR: {e:#}\n")
        });
        self.files.push((path.to_string(), text.into_bytes()));
    }
}

/// What the bundle holds, relative to its top directory, and the lines announcing it.
pub async fn collect(rc: &ResourceClient) -> (Vec<(String, Vec<u8>)>, String) {
    let mut b = Collected::default();

    let version = async {
        let mut s = format!("Client Version:    {CLIENT_VERSION}\n");
        let ci = rc.get::<ClusterInformation>(None, "default").await?;
        let _ = writeln!(s, "Cluster Version:   {}", ci.spec.calico_version);
        let _ = writeln!(s, "Cluster Type:      {}", ci.spec.cluster_type);
        let _ = writeln!(s, "Cluster GUID:      {}", ci.spec.cluster_guid);
        let _ = writeln!(s, "Datastore ready:   {}", ci.spec.is_ready());
        Ok(s)
    }
    .await;
    b.add("cluster/version.txt", version);

    b.say("Collecting Calico resources...");
    for kind in Kind::ALL
        .iter()
        .copied()
        .filter(|k| k.info().api_version == API_VERSION)
    {
        let plural = kind.info().plural;
        let list = rc.list_any(kind, None).await.map_err(anyhow::Error::from);
        for (ext, output) in [("yaml", Output::Yaml), ("txt", Output::Wide)] {
            let text = match &list {
                Ok(l) => render(
                    &[Printed::List {
                        kind,
                        items: l.items.clone(),
                        revision: l.revision,
                    }],
                    &output,
                    kind.info().namespaced,
                    &Lookups::default(),
                )
                .map_err(anyhow::Error::msg),
                Err(e) => Err(anyhow::anyhow!("listing {plural}: {e}")),
            };
            b.add(&format!("cluster/resources/{plural}.{ext}"), text);
        }
    }

    b.say("Collecting IPAM state...");
    let ipam = Ipam::new(rc.datastore().clone());
    b.add(
        "cluster/ipam/show-blocks.txt",
        show::usage(&ipam, true).await,
    );
    b.add("cluster/ipam/show-borrowed.txt", show::borrowed(rc).await);
    b.add(
        "cluster/ipam/show-configuration.txt",
        show::configuration(&ipam).await,
    );
    let opts = check::Options {
        show_all_ips: false,
        show_problem_ips: true,
    };
    match check::check(rc, opts, CLIENT_VERSION).await {
        Ok(c) => {
            b.say(&format!("IPAM check found {} problems.", c.problems));
            b.add("cluster/ipam/check.txt", Ok(c.text));
            b.add(
                "cluster/ipam/check-report.json",
                check::report_json(&c.report),
            );
        }
        Err(e) => b.add("cluster/ipam/check.txt", Err(e)),
    }
    let dump = IpamDump::read(rc.datastore().as_ref())
        .await
        .and_then(|d| Ok(serde_json::to_string_pretty(&d)? + "\n"));
    b.add("cluster/ipam/ipam-records.json", dump);
    (b.files, b.log)
}

/// `node status` of this machine, run as a child so that it prints exactly as it does.
fn node_status() -> Result<String> {
    let exe = std::env::current_exe().context("finding the calicoctl binary")?;
    let o = std::process::Command::new(exe)
        .args(["node", "status"])
        .output()
        .context("running calicoctl node status")?;
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    Ok(s)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| "localhost".into())
}

pub async fn run(rc: &ResourceClient, args: &DiagsArgs) -> Result<ExitCode> {
    let since = args.since.clone().unwrap_or_else(|| "0s".into());
    if !valid_since(&since) {
        println!(
            "Error executing command: invalid duration for since flag (try 10s, 5m, or 1h): {since}"
        );
        return Ok(ExitCode::FAILURE);
    }
    if args.max_logs < 0 {
        println!("Error executing command: negative value for max-logs flag");
        return Ok(ExitCode::FAILURE);
    }
    let _ = (&args.focus_nodes, args.max_parallelism);
    println!("==== Begin collecting diagnostics. ====");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let temp = std::env::temp_dir().join(format!("calicoctl-diags-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&temp)
        .with_context(|| format!("creating temporary directory {}", temp.display()))?;
    println!("Created temporary directory: {}", temp.display());
    let result = bundle(rc, &temp).await;
    if !args.skip_temp_dir_cleanup {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn bundle(rc: &ResourceClient, temp: &Path) -> Result<()> {
    let now = chrono::Utc::now();
    let dir_name = format!("calico-diagnostics-{}", now.format("%Y%m%d_%H%M%S"));
    let (mut files, log) = collect(rc).await;
    print!("{log}");
    let socket = birdd_socket();
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        println!("Collecting node status...");
        let text = node_status().unwrap_or_else(|e| format!("ERROR: {e:#}\n"));
        files.push((
            format!("nodes/{}/node-status.txt", hostname()),
            text.into_bytes(),
        ));
    } else {
        println!(
            "Skipping node status: birdd's socket {} does not answer here (run on a node, or set CALICO_BIRDD_SOCKET).",
            socket.display()
        );
    }

    let root = temp.join(&dir_name);
    for (rel, data) in &files {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
    }

    println!("\n==== Producing a diagnostics bundle. ====");
    let archive = format!("{dir_name}.tar.gz");
    let _ = std::fs::remove_file(&archive);
    let tar = std::process::Command::new("tar")
        .arg("cfz")
        .arg(format!("./{archive}"))
        .arg("-C")
        .arg(temp)
        .arg(&dir_name)
        .output();
    match tar {
        Ok(o) if o.status.success() => {
            println!("Diagnostic bundle created at ./{archive}");
        }
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            println!("Could not create new archive {archive}: {why}");
            // Without tar (and with no compression library), an uncompressed archive.
            let plain = format!("{dir_name}.tar");
            let bytes = ustar(&entries(&dir_name, &files), now.timestamp().max(0) as u64)
                .map_err(anyhow::Error::msg)?;
            std::fs::write(&plain, bytes).with_context(|| format!("writing ./{plain}"))?;
            println!("Diagnostic bundle created at ./{plain}");
        }
    }
    Ok(())
}

/// Archive members: every directory before the files in it.
fn entries(top: &str, files: &[(String, Vec<u8>)]) -> Vec<Entry> {
    let mut dirs = std::collections::BTreeSet::new();
    for (rel, _) in files {
        let mut p = Path::new(rel).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(format!("{top}/{}", d.display()));
            p = d.parent();
        }
    }
    let mut out: Vec<Entry> = std::iter::once(top.to_string())
        .chain(dirs)
        .map(|path| Entry { path, data: None })
        .collect();
    out.extend(files.iter().map(|(rel, data)| Entry {
        path: format!("{top}/{rel}"),
        data: Some(data.clone()),
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_durations_are_checked_as_calico_checks_them() {
        assert!(valid_since("0s"));
        assert!(valid_since("15m"));
        assert!(valid_since("2h"));
        assert!(!valid_since("2d"));
        assert!(!valid_since("h"));
        assert!(!valid_since("1hs"));
        assert!(!valid_since("1.5h"));
    }

    #[test]
    fn directories_come_before_their_files() {
        let e = entries(
            "top",
            &[
                ("cluster/ipam/check.txt".into(), vec![]),
                ("cluster/version.txt".into(), vec![]),
            ],
        );
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "top",
                "top/cluster",
                "top/cluster/ipam",
                "top/cluster/ipam/check.txt",
                "top/cluster/version.txt"
            ]
        );
    }
}
