//! The `lab` command as a person uses it, one process per command: up, pods on two nodes,
//! status, a probe grid, exec in a pod, pod del, down; and `down` after a run whose state
//! file is gone (a crashed launcher) still finds and removes everything by name. It runs
//! under its own lab name, so a lab someone has up on this machine is not touched.

use std::process::{Command, Output};
use std::time::Duration;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn lab(name: &str, args: &[&str]) -> Output {
    let out = Command::new(LAB)
        .args(args)
        .env("CALICO_LAB_NAME", name)
        .output()
        .expect("running lab");
    eprintln!(
        "$ lab {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(name: &str, args: &[&str]) -> String {
    let out = lab(name, args);
    assert!(out.status.success(), "lab {} failed", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the lab whatever happens to the test.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        lab(&self.0, &["down"]);
    }
}

#[test]
fn the_lab_command_builds_a_cluster_that_outlives_each_command_and_removes_it() {
    let name = format!("calico-labtest-{}", std::process::id());
    let _down = Down(name.clone());
    let prefix = format!("{name}-");

    ok(&name, &["up", "--nodes", "2"]);
    let refused = lab(&name, &["up"]);
    assert!(!refused.status.success(), "a second lab up is refused");

    ok(
        &name,
        &["pod", "add", "node-a", "demo/web", "--labels", "app=web"],
    );
    ok(
        &name,
        &[
            "pod",
            "add",
            "node-b",
            "demo/db",
            "--labels",
            "app=db,tier=back",
        ],
    );
    let status = ok(&name, &["status"]);
    for want in [
        "node-a", "node-b", "ready", "demo/web", "demo/db", "healthy",
    ] {
        assert!(status.contains(want), "status lacks {want}");
    }
    // Each node's felixd learns the other's new block on its own time, so a probe right
    // after `pod add` may run before the route across is there: probe until it is.
    for args in [&["probe"][..], &["probe", "--udp", "--port", "5353"]] {
        calico_e2e::eventually(Duration::from_secs(30), "both pods reached", || {
            ok(&name, args).contains("2 of 2 reached")
        });
    }

    // exec runs in the pod: its eth0 holds the address the lab recorded.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/{name}/state.json")).expect("the state file"),
    )
    .expect("state JSON");
    let ip = state["pods"][0]["ips"][0]
        .as_str()
        .expect("an address")
        .to_string();
    let addr = ok(
        &name,
        &["exec", "demo/web", "--", "ip", "-4", "addr", "show", "eth0"],
    );
    assert!(addr.contains(&ip), "{addr}");
    let code = lab(&name, &["exec", "demo/web", "--", "false"])
        .status
        .code();
    assert_eq!(code, Some(1), "exec passes the command's exit code on");

    ok(&name, &["pod", "del", "demo/db"]);
    let namespaces = calico_lab::namespaces_with_prefix(&prefix);
    assert!(
        !namespaces.iter().any(|n| n.ends_with("demo.db")),
        "{namespaces:?}"
    );
    assert!(!ok(&name, &["status"]).contains("demo/db"));

    ok(&name, &["down"]);
    assert!(calico_lab::namespaces_with_prefix(&prefix).is_empty());
    assert!(!std::path::Path::new(&format!("/run/{name}")).exists());

    // A launcher that lost its state (crashed, killed): down still finds everything.
    ok(&name, &["up", "--nodes", "1"]);
    ok(&name, &["pod", "add", "node-a", "demo/orphan"]);
    std::fs::remove_file(format!("/run/{name}/state.json")).expect("removing the state");
    let refused = lab(&name, &["up"]);
    assert!(
        !refused.status.success(),
        "up refuses while leftovers exist"
    );
    let down = ok(&name, &["down"]);
    assert!(down.contains("3 namespace(s)"), "{down}");
    let stray: Vec<String> = calico_lab::namespaces_with_prefix(&prefix);
    assert!(stray.is_empty(), "{stray:?}");
}
