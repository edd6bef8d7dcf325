//! The command line: global flags and one variant per command, each documented with an
//! example (what `--help` prints).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{commands, config};

/// calicoctl: manage Calico resources and look at the cluster's network.
///
/// Set the Calico datastore access information in the environment variables
/// (DATASTORE_TYPE=etcdv3, ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE, each
/// also read with a CALICO_ prefix) or supply details in a config file (--config).
///
/// Example: calicoctl get ippools -o wide
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
pub struct Cli {
    /// Path to the file containing connection configuration in YAML or JSON format.
    #[arg(short = 'c', long, global = true, default_value = config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Set the log level (one of panic, fatal, error, warn, info, debug).
    #[arg(short = 'l', long, global = true, default_value = "panic")]
    pub log_level: String,
    /// The name of the kubeconfig context to use (Kubernetes datastore).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Allow client and cluster versions mismatch.
    #[arg(long, global = true)]
    pub allow_version_mismatch: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// File, directory or `-` (stdin) with YAML or JSON resources; repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace for namespaced resources that do not name one (default: default).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create resources by file name or stdin; existing ones are an error.
    ///
    /// Example: calicoctl create -f ./pools.yaml
    Create {
        #[command(flatten)]
        files: FileArgs,
        /// Do not fail for resources that already exist.
        #[arg(long)]
        skip_exists: bool,
    },
    /// Create or update resources by file name or stdin.
    ///
    /// Example: calicoctl apply -f ./policy.yaml
    Apply {
        #[command(flatten)]
        files: FileArgs,
    },
    /// Replace existing resources by file name or stdin.
    ///
    /// Example: calicoctl replace -f ./pool.yaml
    Replace {
        #[command(flatten)]
        files: FileArgs,
    },
    /// Delete resources by file, or by kind and names.
    ///
    /// Example: calicoctl delete ippool pool1 pool2
    Delete {
        /// The kind (ippool, gnp, networkpolicy, ...), then names.
        kind: Option<String>,
        names: Vec<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Do not fail for resources that do not exist.
        #[arg(long)]
        skip_not_exists: bool,
    },
    /// Display resources by kind (all of them, or by name) or by file.
    ///
    /// Example: calicoctl get networkpolicy -A -o wide
    Get {
        /// The kind (ippool, gnp, networkpolicy, ...), then names.
        kind: Option<String>,
        names: Vec<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// ps (default), wide, yaml, json, name, custom-columns=A,B or jsonpath=EXPR.
        #[arg(short = 'o', long, default_value = "ps")]
        output: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// List namespaced resources of every namespace.
        #[arg(short = 'A', long, visible_short_alias = 'a')]
        all_namespaces: bool,
        /// Leave out cluster-specific metadata (uid, resourceVersion, namespace, timestamps).
        #[arg(long)]
        export: bool,
    },
    /// Add, change or remove one label of a resource.
    ///
    /// Example: calicoctl label node node1 rack=r1 --overwrite
    Label {
        kind: String,
        name: String,
        /// key=value to set, or the key with --remove.
        label: String,
        #[arg(long)]
        overwrite: bool,
        #[arg(long)]
        remove: bool,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Change fields of one resource with a JSON merge patch.
    ///
    /// Example: calicoctl patch ippool pool1 -p '{"spec":{"disabled":true}}'
    Patch {
        kind: String,
        name: String,
        /// The patch: a JSON (or YAML) object.
        #[arg(short = 'p', long)]
        patch: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Accepted for compatibility; the patch is always a merge patch.
        #[arg(short = 't', long = "type")]
        patch_type: Option<String>,
    },
    /// Check resource files offline: syntax, known kinds and fields, Calico's defaults and
    /// validation rules. Nothing is written.
    ///
    /// Example: calicoctl validate -f pools.yaml -f policies/
    Validate(commands::validate::Args),
    /// Print the client version and, when a datastore is configured, the cluster's.
    ///
    /// Example: ETCD_ENDPOINTS=http://127.0.0.1:2379 calicoctl version
    Version(commands::version::Args),
    /// IP address management: show usage, check, release leaked addresses, configure.
    ///
    /// Example: calicoctl ipam show --show-blocks
    Ipam {
        #[command(subcommand)]
        command: commands::ipam::Command,
    },
    /// This node's Calico processes and BGP sessions.
    ///
    /// Example: calicoctl node status
    Node {
        #[command(subcommand)]
        command: commands::node::Command,
    },
    /// Calico datastore management: migrate (export, import, lock, unlock).
    ///
    /// Example: calicoctl datastore migrate export > etcd-data.txt
    Datastore {
        #[command(subcommand)]
        command: commands::datastore::Command,
    },
    /// Access cluster information: a diagnostics bundle.
    ///
    /// Example: calicoctl cluster diags
    Cluster {
        #[command(subcommand)]
        command: commands::cluster::Command,
    },
    /// Print a shell completion script (bash, zsh or fish).
    ///
    /// Load it in the current shell, or install it where the shell looks for completions.
    ///
    /// Example: source <(calicoctl completion bash)
    Completion(commands::completion::Args),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command and subcommand, with its path (`ipam release`).
    fn all(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name()).trim().to_string();
            out.push((p.clone(), sub.clone()));
            all(sub, p, out);
        }
    }

    #[test]
    fn every_command_shows_an_example_in_its_help() {
        Cli::command().debug_assert();
        let mut cmds = Vec::new();
        all(&Cli::command(), String::new(), &mut cmds);
        assert!(cmds.len() > 20);
        for (path, cmd) in cmds {
            if path.ends_with("help") {
                continue; // clap's own
            }
            let long = cmd
                .get_long_about()
                .map(|s| s.to_string())
                .unwrap_or_default();
            assert!(
                long.lines()
                    .any(|l| l.starts_with("Example: ") && l.contains("calicoctl ")),
                "`calicoctl {path} --help` has no example"
            );
        }
    }

    #[test]
    fn completion_scripts_name_the_commands() {
        for shell in ["bash", "zsh", "fish"] {
            let cli = Cli::try_parse_from(["calicoctl", "completion", shell]).unwrap_or_else(|e| {
                panic!("{e}");
            });
            let Command::Completion(args) = cli.command else {
                panic!("not the completion command");
            };
            let s = commands::completion::script::<Cli>(&args);
            for word in [
                "ipam",
                "release",
                "datastore",
                "migrate",
                "diags",
                "from-report",
            ] {
                assert!(s.contains(word), "{shell} completion lacks {word}");
            }
        }
        assert!(Cli::try_parse_from(["calicoctl", "completion", "tcsh"]).is_err());
    }
}
