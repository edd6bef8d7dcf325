//! calicoctl: the operator CLI, a drop-in for Calico's. Resource commands (create, apply,
//! replace, delete, get, label, patch, validate), `version`, `ipam show|check` and
//! `node status`, reading Calico's CalicoAPIConfig file or environment.

mod commands;
mod config;
mod crud;
mod input;
mod printer;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::crud::{GetTarget, Outcome, Scope, Write};
use crate::printer::Output;

/// calicoctl: manage Calico resources and look at the cluster's network.
///
/// Set the Calico datastore access information in the environment variables
/// (DATASTORE_TYPE=etcdv3, ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE, each
/// also read with a CALICO_ prefix) or supply details in a config file (--config).
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Path to the file containing connection configuration in YAML or JSON format.
    #[arg(short = 'c', long, global = true, default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Set the log level (one of panic, fatal, error, warn, info, debug).
    #[arg(short = 'l', long, global = true, default_value = "panic")]
    log_level: String,
    /// The name of the kubeconfig context to use (Kubernetes datastore).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Allow client and cluster versions mismatch.
    #[arg(long, global = true)]
    allow_version_mismatch: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct FileArgs {
    /// File, directory or `-` (stdin) with YAML or JSON resources; repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Namespace for namespaced resources that do not name one (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// IP address management: usage and consistency.
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
}

fn scope(namespace: Option<String>, all_namespaces: bool) -> Scope {
    Scope {
        namespace,
        all_namespaces,
    }
}

fn print(o: Outcome) -> ExitCode {
    print!("{}", o.stdout);
    eprint!("{}", o.stderr);
    if o.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Resources from `-f` arguments, or the message calicoctl prints when they cannot be read.
fn load(files: &[PathBuf]) -> std::result::Result<Vec<calico_api::resource::AnyResource>, String> {
    let mut out = Vec::new();
    let sources =
        input::read_sources(files).map_err(|e| format!("failed to execute command: {e:#}"))?;
    for src in sources {
        let rs = calico_api::codec::decode_documents(&src.text)
            .map_err(|e| format!("failed to execute command: {}: {e}", src.name))?;
        if rs.is_empty() {
            return Err(format!("no resources specified in file {}", src.name));
        }
        out.extend(rs);
    }
    Ok(out)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    // --context is accepted for scripts written for calicoctl; it only matters to the
    // Kubernetes API datastore, which this build does not have.
    let needs_store = !matches!(
        cli.command,
        Command::Validate(_) | Command::Version(_) | Command::Node { .. }
    );
    if !needs_store {
        return match cli.command {
            Command::Validate(a) => commands::validate::run(&a),
            Command::Version(a) => commands::version::run(&a, &cli.config),
            Command::Node { command } => runtime()?.block_on(commands::node::run(&command)),
            _ => unreachable!("handled below"),
        };
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let rc = match config::connect(&cli.config).await {
            Ok(rc) => rc,
            Err(e) => {
                println!("Failed to create Calico API client: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let code = match cli.command {
            Command::Create { files, skip_exists } => match load(&files.files) {
                Ok(rs) => print(
                    crud::write(
                        &rc,
                        Write::Create { skip_exists },
                        rs,
                        &scope(files.namespace, false),
                    )
                    .await,
                ),
                Err(e) => print(Outcome::failed(e)),
            },
            Command::Apply { files } => match load(&files.files) {
                Ok(rs) => {
                    print(crud::write(&rc, Write::Apply, rs, &scope(files.namespace, false)).await)
                }
                Err(e) => print(Outcome::failed(e)),
            },
            Command::Replace { files } => match load(&files.files) {
                Ok(rs) => print(
                    crud::write(&rc, Write::Replace, rs, &scope(files.namespace, false)).await,
                ),
                Err(e) => print(Outcome::failed(e)),
            },
            Command::Delete {
                kind,
                names,
                files,
                namespace,
                skip_not_exists,
            } => {
                let targets = targets(kind.as_deref(), &names, &files, namespace.as_deref(), true);
                match targets {
                    Ok(GetTarget::Resources(rs)) => print(
                        crud::delete(&rc, rs, &scope(namespace, false), skip_not_exists).await,
                    ),
                    Ok(_) => print(Outcome::failed(
                        "delete needs names: calicoctl delete KIND NAME... or -f FILE",
                    )),
                    Err(e) => print(Outcome::failed(e)),
                }
            }
            Command::Get {
                kind,
                names,
                files,
                output,
                namespace,
                all_namespaces,
                export,
            } => {
                let output = match Output::parse(&output) {
                    Ok(o) => o,
                    Err(e) => return Ok(print(Outcome::failed(e))),
                };
                match targets(kind.as_deref(), &names, &files, None, false) {
                    Ok(t) => print(
                        crud::get(&rc, t, &scope(namespace, all_namespaces), &output, export).await,
                    ),
                    Err(e) => print(Outcome::failed(e)),
                }
            }
            Command::Label {
                kind,
                name,
                label,
                overwrite,
                remove,
                namespace,
            } => print(
                crud::label(
                    &rc,
                    &kind,
                    &name,
                    &label,
                    overwrite,
                    remove,
                    &scope(namespace, false),
                )
                .await,
            ),
            Command::Patch {
                kind,
                name,
                patch,
                namespace,
                patch_type: _,
            } => print(crud::patch(&rc, &kind, &name, &patch, &scope(namespace, false)).await),
            Command::Ipam { command } => commands::ipam::run(&rc, &command).await?,
            Command::Validate(_) | Command::Version(_) | Command::Node { .. } => {
                unreachable!("handled without a datastore")
            }
        };
        Ok(code)
    })
}

/// What a get/delete names: a kind's list, names of a kind, or the resources of files.
fn targets(
    kind: Option<&str>,
    names: &[String],
    files: &[PathBuf],
    namespace: Option<&str>,
    by_name_only: bool,
) -> std::result::Result<GetTarget, String> {
    if !files.is_empty() {
        if kind.is_some() {
            return Err("give either -f FILE or KIND [NAME...], not both".into());
        }
        return load(files).map(GetTarget::Resources);
    }
    let Some(kind) = kind else {
        return Err("name a kind (e.g. ippool, gnp, networkpolicy) or give -f FILE".into());
    };
    let (k, names) = crud::named(kind, names)?;
    if names.is_empty() {
        return Ok(GetTarget::List(k));
    }
    if by_name_only {
        let ns = k
            .info()
            .namespaced
            .then(|| namespace.unwrap_or("default").to_string());
        let stubs = names
            .iter()
            .map(|n| crud::stub(k, ns.clone(), n))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // The namespace is settled by the stub; -n must not be applied twice.
        return Ok(GetTarget::Resources(stubs));
    }
    Ok(GetTarget::Names(k, names))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
