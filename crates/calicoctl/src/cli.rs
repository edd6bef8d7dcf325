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
    /// Set the log level (one of panic, fatal, error, warn, info, debug, trace); logs go to
    /// standard error.
    #[arg(short = 'l', long, global = true, default_value = "panic", value_parser = LogLevel::parse)]
    pub log_level: LogLevel,
    /// The name of the kubeconfig context to use. Only the Kubernetes API datastore uses it,
    /// and this build does not have that datastore: it is ignored, with a warning.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Allow client and cluster versions mismatch.
    #[arg(long, global = true)]
    pub allow_version_mismatch: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `-l/--log-level`: logrus's levels, as Calico parses them (case-insensitive, `warning`
/// for `warn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Panic,
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn parse(s: &str) -> Result<LogLevel, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "panic" => LogLevel::Panic,
            "fatal" => LogLevel::Fatal,
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => {
                return Err(format!(
                    "unknown log level: {s}, expected one of: panic, fatal, error, warn, info, debug, trace"
                ));
            }
        })
    }

    /// What tracing shows. calicoctl reports failures itself, so `panic` and `fatal` (the
    /// default) log nothing: nothing in this program panics or exits through the log.
    pub fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            LogLevel::Panic | LogLevel::Fatal => LevelFilter::OFF,
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// `-t/--type` of `patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PatchType {
    /// Kubernetes strategic merge patch. Calico's types declare no list merge keys, so this
    /// is a JSON merge patch plus the `$patch: replace|delete` directives.
    #[default]
    Strategic,
    /// JSON merge patch (RFC 7386): objects merge, `null` deletes, the rest replaces.
    Merge,
    /// JSON patch (RFC 6902): a list of add/remove/replace/move/copy/test operations.
    Json,
}

/// Where resources come from: `-f` (file, directory or `-`), `-R`, `--skip-empty`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Sources {
    /// File, directory or `-` (stdin) with YAML or JSON resources; repeatable.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Process the directories given with -f recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Do not error if any files or directory specified using --filename contain no data.
    #[arg(long)]
    pub skip_empty: bool,
}

/// The input of create, apply, replace and validate: `-f` is required.
#[derive(Debug, clap::Args)]
#[command(mut_arg("files", |a| a.required(true)))]
pub struct FileArgs {
    #[command(flatten)]
    pub sources: Sources,
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
        #[command(flatten)]
        sources: Sources,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Do not fail for resources that do not exist.
        #[arg(short = 's', long)]
        skip_not_exists: bool,
    },
    /// Display resources by kind (all of them, or by name) or by file.
    ///
    /// Example: calicoctl get networkpolicy -A -o wide
    Get {
        /// The kind (ippool, gnp, networkpolicy, ...), then names.
        kind: Option<String>,
        names: Vec<String>,
        #[command(flatten)]
        sources: Sources,
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
    /// Change fields of one resource with a patch (strategic by default, merge or json).
    ///
    /// Example: calicoctl patch ippool pool1 -p '{"spec":{"disabled":true}}'
    ///
    /// Example: calicoctl patch ippool pool1 -t json -p '[{"op":"add","path":"/spec/disabled","value":true}]'
    Patch {
        kind: String,
        name: String,
        /// The patch: a JSON (or YAML) object, or with `-t json` a list of operations.
        #[arg(short = 'p', long)]
        patch: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Format of the patch.
        #[arg(short = 't', long = "type", value_enum, default_value_t)]
        patch_type: PatchType,
    },
    /// Check resource files offline: syntax, known kinds and fields, Calico's defaults and
    /// validation rules. Nothing is written.
    ///
    /// Example: calicoctl validate -f pools.yaml -f policies/
    Validate(FileArgs),
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

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("calicoctl").chain(args.iter().copied()))
    }

    #[test]
    fn calicos_file_flags_are_accepted_by_every_file_command() {
        for cmd in ["create", "apply", "replace", "delete", "get", "validate"] {
            let cli = parse(&[cmd, "-f", "dir", "-R", "--skip-empty", "-n", "ns"])
                .unwrap_or_else(|e| panic!("{cmd}: {e}"));
            let (s, ns) = match cli.command {
                Command::Create { files, .. }
                | Command::Apply { files }
                | Command::Replace { files }
                | Command::Validate(files) => (files.sources, files.namespace),
                Command::Delete {
                    sources, namespace, ..
                }
                | Command::Get {
                    sources, namespace, ..
                } => (sources, namespace),
                other => panic!("{other:?}"),
            };
            assert!(s.recursive && s.skip_empty, "{cmd}");
            assert_eq!(s.files, [PathBuf::from("dir")]);
            assert_eq!(ns.as_deref(), Some("ns"));
            assert!(parse(&[cmd, "-f", "d", "--recursive"]).is_ok(), "{cmd}");
        }
        let Command::Delete {
            skip_not_exists, ..
        } = parse(&["delete", "ippool", "p", "-s"]).unwrap().command
        else {
            panic!("not delete")
        };
        assert!(skip_not_exists);
        // Create, apply, replace and validate need -f; delete and get also take names.
        for cmd in ["create", "apply", "replace", "validate"] {
            assert!(parse(&[cmd]).is_err(), "{cmd} without -f");
        }
        assert!(parse(&["get", "ippool"]).is_ok());
    }

    #[test]
    fn log_levels_are_calicos_and_others_are_refused() {
        for (arg, want) in [
            ("panic", LogLevel::Panic),
            ("fatal", LogLevel::Fatal),
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("warning", LogLevel::Warn),
            ("INFO", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ] {
            assert_eq!(
                parse(&["-l", arg, "version", "--client"])
                    .unwrap()
                    .log_level,
                want
            );
        }
        assert_eq!(
            parse(&["version"]).unwrap().log_level.filter(),
            tracing::level_filters::LevelFilter::OFF
        );
        let e = parse(&["get", "ippool", "--log-level", "verbose"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "unknown log level: verbose, expected one of: panic, fatal, error, warn, info, debug, trace"
            ),
            "{e}"
        );
    }

    #[test]
    fn patch_types_are_calicos_three() {
        for (arg, want) in [
            ("strategic", PatchType::Strategic),
            ("merge", PatchType::Merge),
            ("json", PatchType::Json),
        ] {
            let Command::Patch { patch_type, .. } =
                parse(&["patch", "ippool", "p", "-p", "{}", "-t", arg])
                    .unwrap()
                    .command
            else {
                panic!("not patch")
            };
            assert_eq!(patch_type, want);
        }
        let Command::Patch { patch_type, .. } = parse(&["patch", "ippool", "p", "-p", "{}"])
            .unwrap()
            .command
        else {
            panic!("not patch")
        };
        assert_eq!(patch_type, PatchType::Strategic);
        let e = parse(&["patch", "ippool", "p", "-p", "{}", "--type", "apply"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[possible values: strategic, merge, json]"),
            "{e}"
        );
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
