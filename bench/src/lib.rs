//! What every benchmark shares: where the binaries under test are, latency summaries, a
//! process's memory, and the table they are printed in.

use std::path::PathBuf;
use std::time::Duration;

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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| std::io::Error::other(format!("no VmRSS line in /proc/{pid}/status")))
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
    }
}
