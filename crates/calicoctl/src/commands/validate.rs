//! `calicoctl validate -f FILE`: everything calicoctl would check before writing, offline —
//! including the namespace rules `apply` uses (a namespaced resource without one goes to
//! `default`, or to `-n`), so that what validates is what applies.

use std::process::ExitCode;

use anyhow::Result;
use calico_api::codec::decode_documents;

use crate::cli::FileArgs;
use crate::crud::{Scope, settle_namespace};
use crate::input::{empty_message, read_groups};

pub fn run(args: &FileArgs) -> Result<ExitCode> {
    let scope = Scope {
        namespace: args.namespace.clone(),
        all_namespaces: false,
    };
    let mut ok = 0usize;
    let mut failed = 0usize;
    for group in read_groups(&args.sources.files, args.sources.recursive)? {
        for src in &group.sources {
            match decode_documents(&src.text) {
                Err(e) => {
                    failed += 1;
                    eprintln!("{}: {e}", src.name);
                }
                Ok(resources) if resources.is_empty() && !args.sources.skip_empty => {
                    failed += 1;
                    eprintln!("{}", empty_message("file", &src.name));
                }
                Ok(resources) => {
                    for mut r in resources {
                        let checked = settle_namespace(&mut r, &scope).and_then(|()| {
                            r.apply_defaults();
                            r.validate().map_err(|e| e.to_string())
                        });
                        match checked {
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
        if group.is_dir && group.sources.is_empty() && !args.sources.skip_empty {
            failed += 1;
            eprintln!("{}", empty_message("directory", &group.arg));
        }
    }
    if failed == 0 && ok == 0 {
        println!("No resources specified");
        Ok(ExitCode::SUCCESS)
    } else if failed == 0 {
        println!("Successfully validated {ok} resource(s)");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("Validated {ok} resource(s); {failed} failed (see above)");
        Ok(ExitCode::FAILURE)
    }
}
