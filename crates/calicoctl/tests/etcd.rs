//! The real calicoctl binary against a real etcd: the commands an operator types, the
//! config file, exit codes and result lines.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use calico_etcd_harness::Etcd;

struct Ctl {
    _etcd: Etcd,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Ctl {
    fn new() -> Ctl {
        let etcd = Etcd::start();
        let endpoint = etcd.endpoint();
        Ctl {
            _etcd: etcd,
            endpoint,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_calicoctl"))
            .args(args)
            .env_clear()
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", &self.endpoint)
            .output()
            .unwrap()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn an_operator_session() {
    let ctl = Ctl::new();
    let pools = ctl.file(
        "pools.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool1}\nspec: {cidr: 10.1.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool2}\nspec: {cidr: 10.2.0.0/16, natOutgoing: true}\n",
    );
    let o = ctl.run(&["apply", "-f", &pools]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "Successfully applied 2 'IPPool' resource(s)\n"
    );

    let o = ctl.run(&["get", "ippools"]);
    assert_eq!(
        text(&o.stdout),
        "NAME    CIDR          SELECTOR   \npool1   10.1.0.0/16   all()      \npool2   10.2.0.0/16   all()      \n\n"
    );

    // get -o yaml, edit, replace: what get prints is accepted back.
    let o = ctl.run(&["get", "ippool", "pool2", "-o", "yaml"]);
    assert!(o.status.success());
    let edited = text(&o.stdout).replace("natOutgoing: true", "natOutgoing: false");
    let f = ctl.file("pool2.yaml", &edited);
    let o = ctl.run(&["replace", "-f", &f]);
    assert_eq!(
        text(&o.stdout),
        "Successfully replaced 1 'IPPool' resource(s)\n",
        "{}",
        text(&o.stderr)
    );
    // The same file again carries an old resourceVersion: a conflict, nothing written.
    let o = ctl.run(&["replace", "-f", &f]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("update conflict: IPPool(pool2)"),
        "{}",
        text(&o.stderr)
    );

    let o = ctl.run(&["label", "ippool", "pool1", "zone=a"]);
    assert_eq!(
        text(&o.stdout),
        "Successfully set label zone on ippool pool1\n"
    );
    let o = ctl.run(&[
        "get",
        "ippool",
        "-o",
        "jsonpath={.items[0].metadata.labels.zone}",
    ]);
    assert_eq!(text(&o.stdout), "a\n");

    // Bad input: each class says what and where, exit 1, nothing written.
    let bad = ctl.file("bad.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p3}\nspec: {cidr: 10.3.0.0/16, bogus: 1}\n");
    let o = ctl.run(&["create", "-f", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("bogus"), "{}", text(&o.stderr));
    let bad = ctl.file(
        "bad2.yaml",
        "apiVersion: projectcalico.org/v3\nkind: Bogus\nmetadata: {name: x}\n",
    );
    let o = ctl.run(&["create", "-f", &bad]);
    assert!(text(&o.stderr).contains("Bogus"), "{}", text(&o.stderr));
    let bad = ctl.file(
        "bad3.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p4\n",
    );
    let o = ctl.run(&["apply", "-f", &bad]);
    assert!(text(&o.stderr).contains("line"), "{}", text(&o.stderr));
    let o = ctl.run(&["get", "nosuchkind"]);
    assert!(text(&o.stderr).contains("resource type 'nosuchkind' is not supported"));
    let o = ctl.run(&["get", "ippool", "-o", "xml"]);
    assert!(text(&o.stderr).contains("unrecognized output format 'xml'"));
    let o = ctl.run(&["get", "ippool", "p3"]);
    assert_eq!(text(&o.stderr), "resource does not exist: IPPool(p3)\n");

    // A config file instead of the environment.
    let cfg = ctl.file(
        "calicoctl.cfg",
        &format!("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {{}}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: {}\n", ctl.endpoint),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_calicoctl"))
        .args(["get", "ippool", "-o", "name", "--config", &cfg])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        text(&o.stdout),
        "ippool/pool1\nippool/pool2\n",
        "{}",
        text(&o.stderr)
    );

    let o = ctl.run(&["ipam", "show"]);
    assert!(
        text(&o.stdout).contains("| IP Pool  | 10.1.0.0/16 |"),
        "{}",
        text(&o.stdout)
    );

    let o = ctl.run(&["delete", "ippool", "pool1", "pool2", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stdout),
        "Successfully deleted 2 'IPPool' resource(s)\n"
    );
    assert_eq!(
        text(&o.stderr),
        "Failed to delete 'IPPool' resource: resource does not exist: IPPool(nosuch)\n"
    );
}
