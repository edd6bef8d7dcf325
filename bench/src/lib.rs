//! What every benchmark shares: where the binaries under test are, latency summaries, a
//! process's memory, and the table they are printed in.

pub mod bgpgen;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Turns SIGINT and SIGTERM into a flag that [`check_interrupted`] reports, so a benchmark
/// stopped by hand unwinds and its guards stop what it started and delete its namespaces.
pub fn catch_interrupts() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    if INTERRUPTED.swap(true, Ordering::Relaxed) {
                        // A second signal: give up on a tidy end.
                        std::process::exit(130);
                    }
                    eprintln!("interrupted: stopping what was started (again to exit at once)");
                }
            });
        })?;
    Ok(())
}

/// An error once SIGINT or SIGTERM has come (after [`catch_interrupts`]).
pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// The directory holding the release binaries under test (`--bin-dir`, else next to the
/// benchmark), after checking each of `names` is there; `build` says how to build them.
pub fn binaries_dir(
    given: Option<PathBuf>,
    names: &[&str],
    build: &str,
) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow::anyhow!("this binary has no directory"))?
            .to_path_buf(),
    };
    for b in names {
        if !dir.join(b).exists() {
            anyhow::bail!("{} is missing: build with `{build}`", dir.join(b).display());
        }
    }
    Ok(dir)
}

/// Latencies of one run, and how long the run took.
#[derive(Debug, Clone)]
pub struct Run {
    pub latencies: Vec<Duration>,
    pub wall: Duration,
}

impl Run {
    pub fn new(mut latencies: Vec<Duration>, wall: Duration) -> Run {
        latencies.sort_unstable();
        Run { latencies, wall }
    }

    /// Several runs as one: their operations, and their wall times added.
    pub fn merge(runs: Vec<Run>) -> Run {
        let wall = runs.iter().map(|r| r.wall).sum();
        Run::new(runs.into_iter().flat_map(|r| r.latencies).collect(), wall)
    }

    pub fn ops(&self) -> usize {
        self.latencies.len()
    }

    /// Completed operations per second of wall time.
    pub fn rate(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs == 0.0 {
            0.0
        } else {
            self.latencies.len() as f64 / secs
        }
    }

    /// The latency below which `q` (0..=1) of the operations finished (nearest rank).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// Milliseconds with two decimals, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Resident memory of a process in bytes, from `/proc/<pid>/status` (VmRSS).
pub fn rss_bytes(pid: u32) -> std::io::Result<u64> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// A process's `VmHWM` (peak resident memory) in bytes, from `/proc/<pid>/status`.
pub fn peak_rss_bytes(pid: u32) -> std::io::Result<u64> {
    status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

fn status_kb(pid: u32, field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| std::io::Error::other(format!("no {field} line in /proc/{pid}/status")))
}

/// CPU seconds (user + system, every thread, exited ones too) a process has used, to the
/// nanosecond: its CPU-time clock (clock_getcpuclockid(3)). The 10 ms ticks of
/// `/proc/<pid>/stat` made a 50 ms phase's figure jump by a fifth from run to run.
pub fn cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let pid = nix::unistd::Pid::from_raw(
        i32::try_from(pid).map_err(|_| std::io::Error::other(format!("no such pid {pid}")))?,
    );
    let clock = nix::time::clock_getcpuclockid(pid)?;
    let t = nix::time::clock_gettime(clock)?;
    Ok(t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// CPU seconds the whole machine has been busy (every CPU, every process, the kernel), from
/// the `cpu` line of `/proc/stat`: what other work took during a measurement.
pub fn machine_busy_seconds() -> std::io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| std::io::Error::other("no cpu line in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    Ok(busy as f64 / 100.0)
}

/// A fixed-width text table.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|s| s.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (i, r) in self.rows.iter().enumerate() {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let run = Run::new(
            (1..=100).rev().map(Duration::from_millis).collect(),
            Duration::from_secs(2),
        );
        assert_eq!(run.quantile(0.5), Duration::from_millis(50));
        assert_eq!(run.quantile(0.99), Duration::from_millis(99));
        assert_eq!(run.quantile(1.0), Duration::from_millis(100));
        assert_eq!(run.rate(), 50.0);
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_bytes(std::process::id()).is_ok_and(|b| b > 0));
        assert!(peak_rss_bytes(std::process::id()).is_ok_and(|b| b > 0));
        assert!(cpu_seconds(std::process::id()).is_ok_and(|s| s >= 0.0));
        assert!(machine_busy_seconds().is_ok_and(|s| s > 0.0));
    }

    #[test]
    fn cpu_time_counts_finer_than_ticks_and_keeps_exited_threads() {
        let me = std::process::id();
        // Until the thread itself has run for `d`: wall time would count time it spent
        // preempted on a busy machine.
        let spin = |d: Duration| {
            let clock = nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID;
            let ran = || Duration::from(nix::time::clock_gettime(clock).unwrap());
            let start = ran();
            while ran() - start < d {
                std::hint::black_box(0u64.wrapping_add(1));
            }
        };
        let before = cpu_seconds(me).unwrap();
        // 25 ms on a thread that then exits, and 25 ms on this one.
        std::thread::spawn(move || spin(Duration::from_millis(25)))
            .join()
            .unwrap();
        spin(Duration::from_millis(25));
        let used = cpu_seconds(me).unwrap() - before;
        // Other tests of this process may add a little.
        assert!(used >= 0.05, "{used}");
        assert!(used < 5.0, "{used}");
    }
}
