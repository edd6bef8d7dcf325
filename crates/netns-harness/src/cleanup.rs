//! Finding and removing namespaces by name, with whatever runs in them: the lab's teardown
//! (a named cluster by its prefix) and the sweep of namespaces that killed test runs left.
//! Only namespaces whose names start with the prefix asked for are ever touched.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Whether a process with this pid exists and has not exited (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `R`, `S`, `Z`...
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn signal_pid(pid: u32, signal: Signal) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(p), signal);
    }
}

/// The network namespaces whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    // Lines read `name` or `name (id: 3)`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The pids of the processes running in namespace `name` (`ip netns pids`).
pub fn pids_in(name: &str) -> Vec<u32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What a teardown removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub namespaces: Vec<String>,
    pub processes: usize,
}

/// Kills every process running in a namespace named `prefix*` (SIGKILL: nothing of theirs
/// needs to survive) and deletes those namespaces.
pub fn remove_by_prefix(prefix: &str) -> Removed {
    assert!(
        prefix.len() >= 4,
        "refusing a teardown by the short prefix {prefix:?}"
    );
    let mut removed = Removed::default();
    // Twice: a process that was starting a namespace while the first pass ran (an
    // interrupted launcher) leaves it for the second.
    for _ in 0..2 {
        let names = namespaces_with_prefix(prefix);
        let mut pids = Vec::new();
        for n in &names {
            for pid in pids_in(n) {
                signal_pid(pid, Signal::SIGKILL);
                pids.push(pid);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        removed.processes += pids.len();
        for n in names {
            let _ = Command::new("ip").args(["netns", "del", &n]).output();
            if !removed.namespaces.contains(&n) {
                removed.namespaces.push(n);
            }
        }
    }
    removed
}

/// Removes the namespaces (and what runs in them) of test processes that are gone: a test
/// run stopped by Ctrl-C or SIGKILL runs no destructors, and its `crs<pid>-` namespaces
/// would otherwise stay until the machine restarts. A namespace whose process is still alive
/// belongs to a test running now and is left alone.
pub fn remove_orphaned_namespaces() -> Vec<String> {
    let mut dead: Vec<u32> = namespaces_with_prefix("crs")
        .iter()
        .filter_map(|name| name.strip_prefix("crs")?.split_once('-')?.0.parse().ok())
        .filter(|&pid| pid != std::process::id() && !pid_alive(pid))
        .collect();
    dead.sort_unstable();
    dead.dedup();
    dead.into_iter()
        .flat_map(|pid| remove_by_prefix(&format!("crs{pid}-")).namespaces)
        .collect()
}
