//! `calicoctl validate -f FILE`: everything calicoctl would check before writing, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use calico_api::codec::decode_documents;

use crate::input::read_sources;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// File, directory or `-` (stdin) holding YAML or JSON resources; repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let mut ok = 0usize;
    let mut failed = 0usize;
    for src in read_sources(&args.files)? {
        match decode_documents(&src.text) {
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", src.name);
            }
            Ok(resources) => {
                for mut r in resources {
                    r.apply_defaults();
                    match r.validate() {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            failed += 1;
                            eprintln!("{}: {e}", src.name);
                        }
                    }
                }
            }
        }
    }
    if failed == 0 {
        println!("Successfully validated {ok} resource(s)");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("Validated {ok} resource(s); {failed} failed (see above)");
        Ok(ExitCode::FAILURE)
    }
}
