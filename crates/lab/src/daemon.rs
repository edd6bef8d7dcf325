//! Processes the lab runs inside its namespaces (etcd, ipamd, felixd, birdd): starting one in
//! a namespace with its output in a log file, signalling it by pid when it is not our child
//! (a launcher that came back to a cluster an earlier process started), and reading logs.
//!
//! A daemon of a cluster that must outlive the process that started it runs in its own
//! process group, so that a Ctrl-C in the launcher's terminal does not reach it; a test's
//! daemons stay in the test's group, so that an interrupted test run takes them along.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use calico_netns_harness::NetNs;
pub use calico_netns_harness::cleanup::{pid_alive, signal_pid};
use nix::sys::signal::Signal;

/// Whether [`halt`] was called: the process is tearing its lab down.
static HALTED: RwLock<bool> = RwLock::new(false);

/// Runs `f`, which starts a process or makes a namespace for the lab, unless the lab is
/// being torn down ([`halt`]), in which case it panics instead. A teardown waits for every
/// `f` under way, so that it sees what they made.
pub fn gate<T>(f: impl FnOnce() -> T) -> T {
    let halted = HALTED.read().unwrap_or_else(|p| p.into_inner());
    assert!(
        !*halted,
        "the lab is being torn down: not starting anything more"
    );
    f()
}

/// From now on this process starts no lab process and makes no lab namespace (an
/// interrupted demo or launcher, about to tear down). Returns once everything already
/// being started is there, so that the teardown finds it.
pub fn halt() {
    *HALTED.write().unwrap_or_else(|p| p.into_inner()) = true;
}

/// Starts `cmd` inside `ns`, stdin closed and stdout and stderr appended to `log`.
pub(crate) fn spawn_in(ns: &NetNs, mut cmd: Command, log: &Path, detached: bool) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    if detached {
        cmd.process_group(0);
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    gate(|| ns.run(move || cmd.spawn()))
        .unwrap_or_else(|e| panic!("starting {program} in {}: {e}", ns.name()))
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`; reaps it.
pub(crate) fn stop_child(mut c: Child, grace: Duration) {
    signal_pid(c.id(), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Kills a child with SIGKILL, as a crash would, and reaps it.
pub(crate) fn kill_child(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// The last `lines` lines of a log file (empty if there is none).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].join("\n")
}

/// Waits until `path` exists, or fails with what the daemon logged: it exited (`child`
/// finished) or `within` passed.
pub(crate) fn wait_for_path(
    what: &str,
    path: &Path,
    child: &mut Child,
    log: &Path,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited ({status}) before creating {}; last lines of {}:\n{}",
                path.display(),
                log.display(),
                log_tail(log, 30)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not create {} within {within:?}; last lines of {}:\n{}",
                path.display(),
                log.display(),
                log_tail(log, 30)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
