//! End to end: the lab with pods, the launcher behind the `lab` command, and the grids the
//! demo and the launcher print.
//!
//! - [`lab::Lab`]: a [`calico_lab::Cluster`] plus pods made by the real `calico` CNI binary,
//!   as a container runtime runs it ([`pod`]), and probe matrices between them;
//! - [`launcher::Launcher`]: `lab up | down | status | pod add | pod del | exec | probe`, a
//!   named cluster kept between commands in a state file;
//! - [`watch`]: probes that run throughout a fault and record every miss;
//! - [`format_grid`]: reachability grids as people read them.
//!
//! Nothing here touches the machine's own network namespace.

pub mod grid;
pub mod lab;
pub mod launcher;
pub mod pod;
pub mod watch;

pub use grid::format_grid;
pub use lab::{Lab, LabState};

use std::time::{Duration, Instant};

use calico_lab::{ClusterOptions, Encap};

/// The end-to-end suite's cluster: `nodes` nodes, one IPv4 pool 10.244.0.0/16 (/26 blocks)
/// with `encap`, felixd ready on every node.
pub fn options(nodes: usize, encap: Encap) -> ClusterOptions {
    let mut o = ClusterOptions::new(nodes, &bin_dir());
    o.node.pools = vec![("default-ipv4-ippool".into(), "10.244.0.0/16".into(), 26)];
    o.encap = encap;
    o.felixd = Some(Vec::new());
    o
}

/// Polls `check` every 50 ms until it holds; returns how long that took. Panics with `what`
/// after `within`.
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not so after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where the binaries are: beside the running executable (`target/debug` for the demo, the
/// launcher and the end-to-end tests).
pub fn bin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    // Test executables live one level down, in `target/debug/deps`.
    if dir.ends_with("deps") {
        dir.parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or(dir)
    } else {
        dir
    }
}
