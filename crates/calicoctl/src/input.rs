//! Reading `-f` arguments: a file, a directory of .yaml/.yml/.json files (its
//! subdirectories too with `-R`), or `-` for stdin; and Calico's rule that a file or directory
//! with no resources is an error unless `--skip-empty` is given.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use calico_api::resource::AnyResource;

use crate::cli::Sources;

/// One input source and its text.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// The sources one `-f` argument expanded to.
#[derive(Debug)]
pub struct Group {
    /// The argument as given.
    pub arg: String,
    /// Whether it named a directory (which may hold no manifest at all).
    pub is_dir: bool,
    pub sources: Vec<Source>,
}

fn is_manifest(p: &Path) -> bool {
    // Calico compares the lower-cased extension.
    p.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .is_some_and(|e| matches!(e.as_str(), "yaml" | "yml" | "json"))
}

/// Expands `-f` arguments into sources, in the order Go's `filepath.Walk` visits them
/// (entries by name; subdirectories only with `recursive`, symlinked directories never).
pub fn read_groups(args: &[PathBuf], recursive: bool) -> Result<Vec<Group>> {
    let mut out = Vec::new();
    for a in args {
        let arg = a.display().to_string();
        if a.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading resources from standard input")?;
            out.push(Group {
                arg,
                is_dir: false,
                sources: vec![Source {
                    name: "<stdin>".into(),
                    text,
                }],
            });
        } else if a.is_dir() {
            let mut sources = Vec::new();
            walk(a, recursive, &mut sources)?;
            out.push(Group {
                arg,
                is_dir: true,
                sources,
            });
        } else {
            out.push(Group {
                arg,
                is_dir: false,
                sources: vec![read_file(a)?],
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<Source>) -> Result<()> {
    let mut entries: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "reading directory {} (check the path given to -f)",
                dir.display()
            )
        })?
        .map(|e| e.and_then(|e| Ok((e.path(), e.file_type()?))))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, ty) in entries {
        if ty.is_dir() {
            if recursive {
                walk(&path, recursive, out)?;
            }
        } else if is_manifest(&path) {
            out.push(read_file(&path)?);
        }
    }
    Ok(())
}

fn read_file(p: &Path) -> Result<Source> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("reading {} (check the path given to -f)", p.display()))?;
    Ok(Source {
        name: p.display().to_string(),
        text,
    })
}

/// The message for a file or directory that holds no resources (Calico's words, and what
/// to do about it).
pub fn empty_message(what: &str, name: &str) -> String {
    format!(
        "no resources specified in {what} {name}; add resources to it, or pass --skip-empty to allow this"
    )
}

/// The resources of the `-f` arguments, or the message calicoctl prints when they cannot be
/// read. With `--skip-empty` the list may be empty; the caller then prints "No resources
/// specified", as Calico does.
pub fn load(s: &Sources) -> std::result::Result<Vec<AnyResource>, String> {
    let groups = read_groups(&s.files, s.recursive)
        .map_err(|e| format!("failed to execute command: {e:#}"))?;
    let mut out = Vec::new();
    for g in groups {
        let before = out.len();
        for src in g.sources {
            let rs = calico_api::codec::decode_documents(&src.text)
                .map_err(|e| format!("failed to execute command: {}: {e}", src.name))?;
            if rs.is_empty() && !s.skip_empty {
                return Err(empty_message("file", &src.name));
            }
            tracing::debug!(file = %src.name, resources = rs.len(), "read resources");
            out.extend(rs);
        }
        if g.is_dir && out.len() == before && !s.skip_empty {
            return Err(empty_message("directory", &g.arg));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const POOL: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: NAME}\nspec: {cidr: CIDR}\n";

    fn pool(name: &str, cidr: &str) -> String {
        POOL.replace("NAME", name).replace("CIDR", cidr)
    }

    fn sources(dir: &Path, recursive: bool, skip_empty: bool) -> Sources {
        Sources {
            files: vec![dir.to_path_buf()],
            recursive,
            skip_empty,
        }
    }

    fn names(rs: &[AnyResource]) -> Vec<String> {
        rs.iter().map(|r| r.metadata().name.clone()).collect()
    }

    #[test]
    fn directories_are_read_one_level_deep_unless_recursive() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("b-sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(dir.path().join("a.yaml"), pool("a", "10.1.0.0/16")).unwrap();
        std::fs::write(dir.path().join("c.YML"), pool("c", "10.3.0.0/16")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::write(sub.join("b.json"), pool("b", "10.2.0.0/16")).unwrap();
        let flat = load(&sources(dir.path(), false, false)).unwrap();
        assert_eq!(names(&flat), ["a", "c"]);
        // Walk order: entries by name, a subdirectory where its name sorts.
        let deep = load(&sources(dir.path(), true, false)).unwrap();
        assert_eq!(names(&deep), ["a", "b", "c"]);
    }

    #[test]
    fn empty_files_and_directories_fail_unless_skip_empty() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&sources(dir.path(), false, false)).unwrap_err();
        assert!(
            err.starts_with("no resources specified in directory ") && err.contains("--skip-empty"),
            "{err}"
        );
        assert!(load(&sources(dir.path(), false, true)).unwrap().is_empty());
        let f = dir.path().join("empty.yaml");
        std::fs::write(&f, "# nothing yet\n").unwrap();
        let err = load(&sources(&f, false, false)).unwrap_err();
        assert!(err.starts_with("no resources specified in file "), "{err}");
        assert!(load(&sources(&f, false, true)).unwrap().is_empty());
        std::fs::write(dir.path().join("p.yaml"), pool("p", "10.1.0.0/16")).unwrap();
        let got = load(&sources(dir.path(), false, true)).unwrap();
        assert_eq!(names(&got), ["p"]);
    }
}
