//! Reading `-f` arguments: a file, a directory of .yaml/.yml/.json files, or `-` for stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One input source and its text.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Expands `-f` arguments into sources, in a stable order.
pub fn read_sources(args: &[PathBuf]) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for a in args {
        if a.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading resources from standard input")?;
            out.push(Source {
                name: "<stdin>".into(),
                text,
            });
        } else if a.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(a)
                .with_context(|| format!("reading directory {}", a.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_manifest(p))
                .collect();
            files.sort();
            for f in files {
                out.push(read_file(&f)?);
            }
        } else {
            out.push(read_file(a)?);
        }
    }
    Ok(out)
}

fn read_file(p: &Path) -> Result<Source> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("reading {} (check the path given to -f)", p.display()))?;
    Ok(Source {
        name: p.display().to_string(),
        text,
    })
}
