//! calicoctl without a datastore (`validate`, the global flags) and with one that cannot be
//! reached: good and bad files, and messages an operator can act on.

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

#[test]
fn a_namespaced_resource_without_a_namespace_validates_as_apply_defaults_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("np.yaml");
    std::fs::write(
        &f,
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {selector: all()}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: s}\nspec: {nets: [10.0.0.0/8]}\n",
    )
    .unwrap();
    let out = calicoctl()
        .args(["validate", "-f"])
        .arg(&f)
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
    // A namespace on a cluster-scoped kind, or one that contradicts -n, is refused.
    let g = dir.path().join("gnp.yaml");
    std::fs::write(
        &g,
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g, namespace: prod}\nspec: {selector: all()}\n",
    )
    .unwrap();
    let out = calicoctl()
        .args(["validate", "-f"])
        .arg(&g)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "namespace should not be specified for a non-namespaced resource. GlobalNetworkPolicy is not a namespaced resource"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        &f,
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec: {selector: all()}\n",
    )
    .unwrap();
    let out = calicoctl()
        .args(["validate", "-n", "b", "-f"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("resource namespace does not match client namespace. a != b")
    );
}

#[test]
fn recursive_and_skip_empty_follow_calico() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(
        sub.join("pool.yml"),
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16}\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = calicoctl()
            .args(["validate", "-f"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no resources specified in directory") && err.contains("--skip-empty"),
        "{err}"
    );
    let (code, out, _) = run(&["--skip-empty"]);
    assert_eq!((code, out.trim()), (Some(0), "No resources specified"));
    let (code, out, err) = run(&["-R"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "Successfully validated 1 resource(s)");
}

#[test]
fn context_is_ignored_with_a_warning_that_says_why() {
    let out = calicoctl()
        .args(["--context", "prod-cluster", "version", "--client"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--context prod-cluster is ignored")
            && err.contains("Kubernetes API datastore, which is not available in this build"),
        "{err}"
    );
}

#[test]
fn an_unreachable_datastore_is_reported_as_such() {
    // Nothing listens on port 1.
    let out = calicoctl()
        .args(["get", "ippools"])
        .env_clear()
        .env("ETCD_ENDPOINTS", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the datastore"), "{err}");
    assert!(err.contains("ETCD_ENDPOINTS"), "{err}");
    assert!(!err.contains("--allow-version-mismatch"), "{err}");
}
