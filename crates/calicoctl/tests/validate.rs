//! `calicoctl validate` on good and bad files.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn calicoctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_calicoctl"))
}

#[test]
fn valid_files_and_directories_pass() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pool.yaml"),
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: {selector: all()}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let out = calicoctl()
        .args(["validate", "-f"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Successfully validated 2 resource(s)"
    );
}

#[test]
fn invalid_resources_fail_naming_file_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.0.0.0/16, blockSize: 19}\n").unwrap();
    let out = calicoctl()
        .args(["validate", "-f"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "bad.yaml: IPPool \"p1\": spec.blockSize: 19 is outside 20..32 for an IPv4 pool"
        ),
        "{err}"
    );
}

#[test]
fn syntax_errors_and_missing_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.yaml");
    std::fs::write(&f, "kind: IPPool\nmetadata: [oops\n").unwrap();
    let out = calicoctl()
        .args(["validate", "-f"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line "));
    let out = calicoctl()
        .args(["validate", "-f", "/nonexistent/x.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check the path given to -f"));
}
