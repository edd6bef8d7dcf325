//! `calicoctl version`.

use std::process::ExitCode;

use anyhow::Result;
use calico_api::resource::ClusterInformation;
use calico_datastore::ResourceClient;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only print the client version.
    #[arg(long)]
    client: bool,
}

pub fn run(args: &Args, config: &std::path::Path) -> Result<ExitCode> {
    println!("Client Version:    v{}", env!("CARGO_PKG_VERSION"));
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
    let cluster = runtime.block_on(async {
        let ds = crate::config::datastore_config(config)
            .ok()?
            .connect()
            .await
            .ok()?;
        ResourceClient::new(ds)
            .get::<ClusterInformation>(None, "default")
            .await
            .ok()
    });
    match cluster {
        Some(info) if !info.spec.calico_version.is_empty() => {
            println!("Cluster Version:   {}", info.spec.calico_version);
            println!("Cluster Type:      {}", info.spec.cluster_type);
        }
        _ => println!("Unable to detect installed Calico version"),
    }
    Ok(ExitCode::SUCCESS)
}
