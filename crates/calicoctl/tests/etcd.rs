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
    let o = ctl.run(&["delete", "ippool", "nosuch", "-s"]);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // The flags of Calico's scripts: -R, --skip-empty, patch -t.
    std::fs::create_dir_all(ctl.dir.path().join("tree/sub")).unwrap();
    ctl.file(
        "tree/sub/pool.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: deep}\nspec: {cidr: 10.5.0.0/16}\n",
    );
    let tree = ctl.dir.path().join("tree").display().to_string();
    let o = ctl.run(&["apply", "-f", &tree]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no resources specified in directory"),
        "{}",
        text(&o.stderr)
    );
    let o = ctl.run(&["create", "-f", &tree, "--skip-empty"]);
    assert_eq!(text(&o.stdout), "No resources specified\n");
    let o = ctl.run(&["apply", "-R", "-f", &tree]);
    assert_eq!(
        text(&o.stdout),
        "Successfully applied 1 'IPPool' resource(s)\n",
        "{}",
        text(&o.stderr)
    );
    let o = ctl.run(&[
        "patch",
        "ippool",
        "deep",
        "-t",
        "json",
        "-p",
        r#"[{"op":"add","path":"/spec/disabled","value":true}]"#,
    ]);
    assert_eq!(
        text(&o.stdout),
        "Successfully patched 1 'IPPool' resource\n",
        "{}",
        text(&o.stderr)
    );
    let o = ctl.run(&["get", "ippool", "deep", "-o", "jsonpath={.spec.disabled}"]);
    assert_eq!(text(&o.stdout), "true\n");

    // A Kubernetes NetworkPolicy file names the same policy for every command.
    let knp = ctl.file(
        "knp.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: prod}\nspec: {podSelector: {}}\n",
    );
    for (args, want) in [
        (
            vec!["apply", "-f", &knp],
            "Successfully applied 1 'NetworkPolicy' resource(s)\n",
        ),
        (
            vec!["replace", "-f", &knp],
            "Successfully replaced 1 'NetworkPolicy' resource(s)\n",
        ),
        (
            vec!["get", "-f", &knp, "-o", "name"],
            "networkpolicy/knp.default.deny\n",
        ),
        (
            vec!["delete", "-f", &knp],
            "Successfully deleted 1 'NetworkPolicy' resource(s)\n",
        ),
    ] {
        let o = ctl.run(&args);
        assert_eq!(text(&o.stdout), want, "{args:?}: {}", text(&o.stderr));
    }
}

/// Runs calicoctl against `endpoint` in `cwd` with extra environment.
fn run_at(endpoint: &str, cwd: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calicoctl"))
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", endpoint)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(endpoint: &str) -> calico_datastore::ResourceClient {
    let ds =
        calico_datastore::etcd::EtcdDatastore::connect(&calico_datastore::etcd::EtcdConfig::new([
            endpoint.to_string(),
        ]))
        .await
        .unwrap();
    calico_datastore::ResourceClient::new(std::sync::Arc::new(ds))
}

/// Every stored key and value, without what differs between two copies of the same data.
async fn contents(endpoint: &str) -> Vec<(String, String)> {
    let rc = client(endpoint).await;
    let mut out = Vec::new();
    for kv in rc
        .datastore()
        .list(&calico_datastore::KeyPrefix::Everything)
        .await
        .unwrap()
        .items
    {
        if kv.key.kind() == Some(calico_api::resource::Kind::ClusterInformation) {
            continue;
        }
        let mut v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("uid");
            m.remove("creationTimestamp");
        }
        out.push((kv.key.path(), v.to_string()));
    }
    out.sort();
    out
}

#[test]
fn ipam_release_migrate_diags_and_completion_session() {
    let ctl = Ctl::new();
    let run = |args: &[&str]| run_at(&ctl.endpoint, ctl.dir.path(), &[], args);
    let pool = ctl.file(
        "pool.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool1}\nspec: {cidr: 10.70.0.0/16}\n",
    );
    assert!(run(&["apply", "-f", &pool]).status.success());

    // Three pod addresses, as the CNI plugin would allocate them through ipamd.
    let ips: Vec<String> = rt().block_on(async {
        let ipam = calico_ipam::Ipam::new(client(&ctl.endpoint).await.datastore().clone());
        let mut out = Vec::new();
        for pod in ["web", "gone", "old"] {
            let mut a =
                calico_ipam::AutoAssignArgs::new("node1", &format!("k8s-pod-network.{pod}"), 1, 0);
            a.attrs = [("node", "node1"), ("namespace", "default"), ("pod", pod)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            out.push(
                ipam.auto_assign(&a).await.unwrap().0.ips[0]
                    .addr()
                    .to_string(),
            );
        }
        out
    });
    let (web, gone, old) = (&ips[0], &ips[1], &ips[2]);
    let wep = ctl.file(
        "wep.yaml",
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: node1-k8s-web-eth0, namespace: default}}\n\
             spec: {{node: node1, orchestrator: k8s, endpoint: eth0, pod: web, interfaceName: caliweb, ipNetworks: [{web}/32]}}\n"
        ),
    );
    assert!(run(&["apply", "-f", &wep]).status.success());

    // ipam show --ip, and a bad address.
    let o = run(&["ipam", "show", &format!("--ip={web}")]);
    assert_eq!(
        text(&o.stdout),
        format!(
            "IP {web} is in use\nHandle ID: k8s-pod-network.web\nActive Owner Attributes:\n  namespace: default\n  node: node1\n  pod: web\n"
        )
    );
    let o = run(&["ipam", "show", "--ip=10.70.0.300"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stdout),
        "Error executing command: invalid IP address specified: 10.70.0.300\n"
    );
    let o = run(&["ipam", "show", "--ip=1.2.3.4", "--show-blocks"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("cannot be used with"),
        "{}",
        text(&o.stderr)
    );

    // ipam release --ip, twice.
    let o = run(&["ipam", "release", "--ip", old]);
    assert_eq!(
        text(&o.stdout),
        format!("Successfully released IP address {old}\n")
    );
    let o = run(&["ipam", "release", "--ip", old]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!("IP address {old} is not assigned\n")
    );
    let o = run(&["ipam", "release"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("give --ip=<IP>"),
        "{}",
        text(&o.stderr)
    );

    // ipam configure.
    let o = run(&["ipam", "configure", "--max-blocks-per-host=4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr)
            .starts_with("error: MaxBlocksPerHost requires StrictAffinity to be enabled"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&[
        "ipam",
        "configure",
        "--strictaffinity=true",
        "--max-blocks-per-host=4",
    ]);
    assert_eq!(
        text(&o.stdout),
        "Successfully set StrictAffinity to: true\nSuccessfully set MaxBlocksPerHost to: 4\n",
        "{}",
        text(&o.stderr)
    );
    let o = run(&["ipam", "show", "--show-configuration"]);
    assert!(
        text(&o.stdout).contains("| StrictAffinity               | true "),
        "{}",
        text(&o.stdout)
    );

    // A report taken while unlocked cannot be used; lock, check, release the leak.
    let report = ctl.dir.path().join("report.json");
    let report_arg = format!("--from-report={}", report.display());
    let o = run(&["datastore", "migrate", "lock"]);
    assert_eq!(
        text(&o.stdout),
        "Datastore locked.\n",
        "{}",
        text(&o.stderr)
    );
    let o = run(&["ipam", "check", "-o", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout)
            .contains("Found 1 IPs that are allocated in IPAM but not actually in use.\n"),
        "{}",
        text(&o.stdout)
    );
    let o = run(&["datastore", "migrate", "unlock"]);
    assert_eq!(text(&o.stdout), "Datastore unlocked.\n");
    let o = run(&["ipam", "release", &report_arg]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("are all stale"),
        "{}",
        text(&o.stderr)
    );
    run(&["datastore", "migrate", "lock"]);
    let o = run(&[
        "ipam",
        "check",
        "--show-problem-ips",
        "-o",
        report.to_str().unwrap(),
    ]);
    assert!(
        text(&o.stdout).contains(&format!("  {gone} leaked; attrs Main:k8s-pod-network.gone")),
        "{}",
        text(&o.stdout)
    );
    let o = run(&["ipam", "release", &report_arg]);
    assert_eq!(
        text(&o.stdout),
        "Releasing 1 old IPs...\nReleased 1 IPs successfully\nReport didn't contain any handles to clean up.\nYou may now unlock the data store.\n",
        "{}",
        text(&o.stderr)
    );
    let o = run(&["ipam", "show", &format!("--ip={gone}")]);
    assert_eq!(text(&o.stdout), format!("{gone} is not assigned\n"));

    // Export while locked, unlock, import into a fresh etcd: the same resources and IPAM.
    let o = run(&["datastore", "migrate", "export"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let export = ctl.file("etcd-data.txt", &text(&o.stdout));
    assert_eq!(text(&o.stdout).matches("===\n").count(), 2);
    assert_eq!(
        text(&run(&["datastore", "migrate", "unlock"]).stdout),
        "Datastore unlocked.\n"
    );
    let o = run(&["datastore", "migrate", "export"]);
    assert!(
        text(&o.stderr).starts_with("datastore is not locked."),
        "{}",
        text(&o.stderr)
    );

    let etcd2 = Etcd::start();
    let run2 = |args: &[&str]| run_at(&etcd2.endpoint(), ctl.dir.path(), &[], args);
    let o = run2(&["datastore", "migrate", "import", "-f", &export]);
    assert_eq!(
        text(&o.stdout),
        "Datastore locked.\nSuccessfully applied 5 resource(s)\nImporting IPAM resources\n\
         Successfully applied 4 IPAM resource(s)\n\
         Datastore information successfully imported. Please refer to the datastore migration documentation for next steps.\n",
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        rt().block_on(contents(&ctl.endpoint)),
        rt().block_on(contents(&etcd2.endpoint()))
    );
    assert_eq!(
        text(&run(&["ipam", "show", "--show-blocks"]).stdout),
        text(&run2(&["ipam", "show", "--show-blocks"]).stdout)
    );
    let o = run2(&["datastore", "migrate", "import", "-f", &export]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("datastore already has Calico resources"),
        "{}",
        text(&o.stderr)
    );

    // A cluster running another Calico version: data commands refuse unless allowed.
    rt().block_on(async {
        let rc = client(&etcd2.endpoint()).await;
        let mut ci = rc
            .get::<calico_api::resource::ClusterInformation>(None, "default")
            .await
            .unwrap();
        ci.spec.calico_version = "v9.9.9".into();
        ci.spec.cluster_type = "etcd,bgp".into();
        rc.update(ci).await.unwrap();
    });
    let o = run2(&["get", "ippools"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "failed to get resources: version mismatch.\nClient Version:   v{}\nCluster Version:  9.9.9\nUse --allow-version-mismatch to override\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(
        run2(&["get", "ippools", "--allow-version-mismatch"])
            .status
            .success()
    );
    let o = run2(&["ipam", "show"]);
    assert!(
        text(&o.stderr).starts_with("version mismatch."),
        "{}",
        text(&o.stderr)
    );
    let o = run2(&["version"]);
    assert!(
        text(&o.stdout).ends_with("Cluster Version:   v9.9.9\nCluster Type:      etcd,bgp\n"),
        "{}",
        text(&o.stdout)
    );

    // cluster diags: a tarball in the current directory, with node status when birdd's
    // socket answers (a listener stands in for birdd here).
    let diags_dir = tempfile::tempdir().unwrap();
    let socket = diags_dir.path().join("birdd.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let o = run_at(
        &ctl.endpoint,
        diags_dir.path(),
        &[("CALICO_BIRDD_SOCKET", socket.to_str().unwrap())],
        &["cluster", "diags"],
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.starts_with("==== Begin collecting diagnostics. ====\nCreated temporary directory: "),
        "{out}"
    );
    assert!(out.contains("Collecting node status..."), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Diagnostic bundle created at ./"))
        .unwrap();
    let archive = line.trim_start_matches("Diagnostic bundle created at ./");
    assert!(archive.starts_with("calico-diagnostics-") && archive.ends_with(".tar.gz"));
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(diags_dir.path().join(archive))
        .output()
        .unwrap();
    let listing = text(&listing.stdout);
    let top = archive.trim_end_matches(".tar.gz");
    for f in [
        "cluster/version.txt",
        "cluster/resources/ippools.yaml",
        "cluster/resources/ippools.txt",
        "cluster/resources/workloadendpoints.yaml",
        "cluster/ipam/show-blocks.txt",
        "cluster/ipam/show-borrowed.txt",
        "cluster/ipam/show-configuration.txt",
        "cluster/ipam/check.txt",
        "cluster/ipam/check-report.json",
        "cluster/ipam/ipam-records.json",
    ] {
        assert!(
            listing.contains(&format!("{top}/{f}\n")),
            "{f} not in\n{listing}"
        );
    }
    assert!(listing.contains("/node-status.txt\n"), "{listing}");
    let o = run_at(
        &ctl.endpoint,
        diags_dir.path(),
        &[],
        &["cluster", "diags", "--since=2d"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stdout),
        "Error executing command: invalid duration for since flag (try 10s, 5m, or 1h): 2d\n"
    );

    // Completion scripts and help.
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completion", shell]);
        assert!(o.status.success());
        let s = text(&o.stdout);
        assert!(
            s.len() > 1000 && s.contains("ipam") && s.contains("datastore"),
            "{shell}"
        );
    }
    let o = run(&["ipam", "release", "--help"]);
    assert!(text(&o.stdout).contains("Example: calicoctl ipam release --ip=10.65.79.1"));
}
