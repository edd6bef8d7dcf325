//! How the birdd binary starts, before any BGP: it runs with one glibc malloc arena unless
//! the environment chose otherwise.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// birdd, kept waiting on a datastore that accepts connections and never answers.
fn waiting_birdd(arena_max: Option<&str>) -> (Child, TcpListener) {
    let silent = TcpListener::bind("127.0.0.1:0").expect("listener");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_birdd"));
    cmd.args([
        "--nodename",
        "startup-test",
        "--control-socket",
        "none",
        "--http-listen",
        "none",
    ])
    .env_clear()
    .env("DATASTORE_TYPE", "etcdv3")
    .env(
        "ETCD_ENDPOINTS",
        format!("http://{}", silent.local_addr().expect("address")),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(v) = arena_max {
        cmd.env("MALLOC_ARENA_MAX", v);
    }
    (cmd.spawn().expect("birdd starts"), silent)
}

/// MALLOC_ARENA_MAX in the environment birdd runs with, waiting a while for it.
fn arena_max_of(child: &mut Child) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "birdd exited while waiting for its datastore"
        );
        // Until the runtime's threads exist, birdd may still be about to start again: its
        // environment then is not yet the one it runs with.
        let threads =
            std::fs::read_dir(format!("/proc/{}/task", child.id())).map_or(0, |d| d.count());
        if threads < 2 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap_or_default();
        if let Some(v) = environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"MALLOC_ARENA_MAX="))
        {
            // Still named birdd for ps and pgrep after starting again.
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap_or_default();
            assert_eq!(comm.trim(), "birdd");
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn birdd_starts_again_with_one_malloc_arena_unless_told_otherwise() {
    let (mut child, _silent) = waiting_birdd(None);
    let got = arena_max_of(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.as_deref(), Some("1"));

    let (mut child, _silent) = waiting_birdd(Some("4"));
    let got = arena_max_of(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.as_deref(), Some("4"), "the operator's choice stands");
}
