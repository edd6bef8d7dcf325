//! calicoctl: the operator CLI, a drop-in for Calico's. Resource commands (create, apply,
//! replace, delete, get, label, patch, validate), `version`, `ipam show|check|release|
//! configure`, `node status`, `datastore migrate`, `cluster diags` and `completion`, reading
//! Calico's CalicoAPIConfig file or environment.

mod cli;
mod commands;
mod config;
mod crud;
mod input;
mod ipam_dump;
mod patch;
mod printer;
mod tarball;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use calico_datastore::ResourceClient;
use calico_datastore::config::DatastoreConfig;
use clap::Parser;

use crate::cli::{Cli, Command, LogLevel};
use crate::commands::datastore::Migrate;
use crate::crud::{GetTarget, Outcome, Scope, Write};
use crate::printer::Output;

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

/// What create/apply/replace/delete print when `--skip-empty` left nothing to do.
fn nothing_to_do() -> ExitCode {
    println!("No resources specified");
    ExitCode::SUCCESS
}

/// Starts logging to standard error at the `--log-level` asked for.
fn start_tracing(level: LogLevel) {
    let filter = level.filter();
    if filter == tracing::level_filters::LevelFilter::OFF {
        return;
    }
    tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// The warning for `--context`: it selects a kubeconfig context, which only the Kubernetes
/// API datastore reads (Calico exports it as K8S_CURRENT_CONTEXT for that datastore).
fn context_warning(context: &str) -> String {
    format!(
        "Warning: --context {context} is ignored: it selects a kubeconfig context for the Kubernetes API datastore, which is not available in this build of calico-rs; use DATASTORE_TYPE=etcdv3 and ETCD_ENDPOINTS (or a --config file) and drop --context"
    )
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    start_tracing(cli.log_level);
    // --context is accepted for scripts written for calicoctl; it only matters to the
    // Kubernetes API datastore, which this build does not have: say so, once.
    if let Some(context) = cli.context.as_deref().filter(|c| !c.is_empty()) {
        eprintln!("{}", context_warning(context));
    }
    let config = cli.config.clone();
    match cli.command {
        Command::Validate(a) => return commands::validate::run(&a),
        Command::Version(a) => return commands::version::run(&a, &config),
        Command::Node { command } => {
            return runtime()?.block_on(commands::node::run(&command));
        }
        Command::Completion(a) => {
            print!("{}", commands::completion::script::<Cli>(&a));
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    // Export and import move data out of and into etcd only (Calico: out of etcd only).
    if let Command::Datastore {
        command: commands::datastore::Command::Migrate { command },
    } = &cli.command
    {
        let (verb, direction) = match command {
            Migrate::Export => ("export", "from"),
            Migrate::Import { .. } => ("import", "to"),
            Migrate::Lock | Migrate::Unlock => ("", ""),
        };
        if !verb.is_empty() {
            let kind = match config::load(&config) {
                Ok(DatastoreConfig::Etcd(_)) => None,
                Ok(DatastoreConfig::Kubernetes { .. }) => Some("kubernetes"),
                Ok(DatastoreConfig::Memory) => Some("memory"),
                Err(_) => None, // reported when connecting
            };
            if let Some(kind) = kind {
                bail!(
                    "invalid datastore type: {kind} to {verb} {direction} for datastore migration. Datastore type must be etcdv3"
                );
            }
        }
    }
    runtime()?.block_on(async move {
        let rc = match config::connect(&config).await {
            Ok(rc) => rc,
            Err(e) => {
                println!("Failed to create Calico API client: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        };
        // Every data command first compares versions, except import (as in Calico) and
        // cluster diags (it reports the versions instead).
        let checked = !matches!(
            cli.command,
            Command::Datastore {
                command: commands::datastore::Command::Migrate {
                    command: Migrate::Import { .. }
                }
            } | Command::Cluster { .. }
        );
        if checked
            && let Err(e) = commands::version::check_mismatch(&rc, cli.allow_version_mismatch).await
        {
            let msg = match &cli.command {
                Command::Get { .. } => format!("failed to get resources: {e}"),
                Command::Label { kind, name, .. } => {
                    format!("failed to get {kind} {name}, error {e}")
                }
                _ => e,
            };
            return Ok(print(Outcome::failed(msg)));
        }
        dispatch(&rc, cli.command).await
    })
}

async fn dispatch(rc: &ResourceClient, command: Command) -> Result<ExitCode> {
    let rc = rc.clone();
    let code = match command {
        Command::Create { files, skip_exists } => match input::load(&files.sources) {
            Ok(rs) if rs.is_empty() => nothing_to_do(),
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
        Command::Apply { files } => match input::load(&files.sources) {
            Ok(rs) if rs.is_empty() => nothing_to_do(),
            Ok(rs) => {
                print(crud::write(&rc, Write::Apply, rs, &scope(files.namespace, false)).await)
            }
            Err(e) => print(Outcome::failed(e)),
        },
        Command::Replace { files } => match input::load(&files.sources) {
            Ok(rs) if rs.is_empty() => nothing_to_do(),
            Ok(rs) => {
                print(crud::write(&rc, Write::Replace, rs, &scope(files.namespace, false)).await)
            }
            Err(e) => print(Outcome::failed(e)),
        },
        Command::Delete {
            kind,
            names,
            sources,
            namespace,
            skip_not_exists,
        } => {
            let targets = targets(
                kind.as_deref(),
                &names,
                &sources,
                namespace.as_deref(),
                true,
            );
            match targets {
                Ok(GetTarget::Resources(rs)) if rs.is_empty() => nothing_to_do(),
                Ok(GetTarget::Resources(rs)) => {
                    print(crud::delete(&rc, rs, &scope(namespace, false), skip_not_exists).await)
                }
                Ok(_) => print(Outcome::failed(
                    "delete needs names: calicoctl delete KIND NAME... or -f FILE",
                )),
                Err(e) => print(Outcome::failed(e)),
            }
        }
        Command::Get {
            kind,
            names,
            sources,
            output,
            namespace,
            all_namespaces,
            export,
        } => {
            let output = match Output::parse(&output) {
                Ok(o) => o,
                Err(e) => return Ok(print(Outcome::failed(e))),
            };
            match targets(kind.as_deref(), &names, &sources, None, false) {
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
            patch_type,
        } => print(
            crud::patch(
                &rc,
                &kind,
                &name,
                &patch,
                patch_type,
                &scope(namespace, false),
            )
            .await,
        ),
        Command::Ipam { command } => commands::ipam::run(&rc, &command).await?,
        Command::Datastore {
            command: commands::datastore::Command::Migrate { command },
        } => migrate(&rc, &command).await?,
        Command::Cluster {
            command: commands::cluster::Command::Diags(args),
        } => commands::cluster::run(&rc, &args).await?,
        Command::Validate(_)
        | Command::Version(_)
        | Command::Node { .. }
        | Command::Completion(_) => {
            unreachable!("handled without a datastore")
        }
    };
    Ok(code)
}

async fn migrate(rc: &ResourceClient, command: &Migrate) -> Result<ExitCode> {
    use commands::datastore as ds;
    let out = match command {
        Migrate::Lock => ds::lock(rc).await?,
        Migrate::Unlock => ds::unlock(rc).await?,
        Migrate::Export => ds::export(rc).await?,
        Migrate::Import { filename } => {
            let (text, name) = if filename.as_os_str() == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .context("error while reading migration file: standard input")?;
                (t, "/dev/stdin".to_string())
            } else {
                let t = std::fs::read_to_string(filename).with_context(|| {
                    format!(
                        "error while reading migration file: open {}",
                        filename.display()
                    )
                })?;
                (t, filename.display().to_string())
            };
            let mut out = String::new();
            let result = ds::import(rc, &text, &name, &mut out).await;
            print!("{out}");
            result?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// What a get/delete names: a kind's list, names of a kind, or the resources of files.
fn targets(
    kind: Option<&str>,
    names: &[String],
    sources: &cli::Sources,
    namespace: Option<&str>,
    by_name_only: bool,
) -> std::result::Result<GetTarget, String> {
    if !sources.files.is_empty() {
        if kind.is_some() {
            return Err("give either -f FILE or KIND [NAME...], not both".into());
        }
        return input::load(sources).map(GetTarget::Resources);
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
