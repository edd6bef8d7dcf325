//! Running the kernel tools (`iptables-restore`, `ipset`, `nft`, `conntrack`): one seam, so
//! tests can see exactly what would be written and the dataplane can time every call.
//!
//! `iptables-nft-restore` stays running between transactions. Each process that changed the
//! ruleset waits, when it closes its netlink socket, for the kernel to free what the change
//! replaced (an RCU grace period: ~10 ms idle, 20-30 ms on a busy node), and the next
//! transaction waits behind that. A long-lived process never closes: it commits each
//! `*table … COMMIT` section as it reads it, and with `--verbose` echoes the comment line we
//! send after the section, which tells us the commit is done. (The legacy tool holds the
//! xtables lock while it runs, so it is started per transaction.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A tool failed or could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(
        "cannot run {program}: {source}; is it installed (Debian packages iptables, ipset, nftables, conntrack)?"
    )]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
}

/// Runs a program with optional standard input and returns its standard output.
pub trait Exec: Send + Sync + std::fmt::Debug {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String, ExecError>;

    /// Feeds one transaction to a restore tool: the same as [`Exec::run`] with `input`, except
    /// that a tool able to stay up between transactions may be kept running.
    fn restore(&self, program: &str, args: &[&str], input: &str) -> Result<(), ExecError> {
        self.run(program, args, Some(input.as_bytes())).map(|_| ())
    }
}

/// The real thing.
#[derive(Debug, Default)]
pub struct SystemExec {
    /// Long-lived restore processes, by program.
    restorers: Mutex<HashMap<String, Restorer>>,
}

impl Exec for SystemExec {
    fn restore(&self, program: &str, args: &[&str], input: &str) -> Result<(), ExecError> {
        if !program.ends_with("-nft-restore") {
            return self.run(program, args, Some(input.as_bytes())).map(|_| ());
        }
        let mut restorers = self.restorers.lock().unwrap_or_else(|e| e.into_inner());
        let r = match restorers.entry(program.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Restorer::start(program, args)?)
            }
        };
        let started = Instant::now();
        let result = r.transaction(input);
        if result.is_err() {
            // Dead or confused: the next transaction starts a new one.
            restorers.remove(program);
        }
        let took = started.elapsed();
        if took > Duration::from_secs(1) {
            tracing::info!(%program, ?took, "slow dataplane command");
        }
        result
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String, ExecError> {
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_failed(program))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that exits early closes the pipe; its exit status tells why.
            let _ = pipe.write_all(input);
        }
        let out = child.wait_with_output().map_err(spawn_failed(program))?;
        let took = started.elapsed();
        if took > Duration::from_secs(1) {
            tracing::info!(%program, ?took, "slow dataplane command");
        }
        if !out.status.success() {
            return Err(ExecError::Failed {
                program: program.to_string(),
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The error for a program that could not be started or waited for.
fn spawn_failed(program: &str) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Spawn {
        program: program.to_string(),
        source,
    }
}

/// How long one transaction may take before the process is taken for hung (a full
/// programming of 40k rules takes ~2 s).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// One long-lived `iptables-nft-restore --noflush --verbose`.
#[derive(Debug)]
struct Restorer {
    program: String,
    args: String,
    /// Always set; taken only by `drop`.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Standard output, a line at a time, from a reader thread (so waiting can time out).
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// Lines written so far: the tool numbers lines across the whole stream.
    lines: usize,
    marker: u64,
}

impl Restorer {
    fn start(program: &str, args: &[&str]) -> Result<Restorer, ExecError> {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--verbose");
        let mut child = Command::new(program)
            .args(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_failed(program))?;
        let (tx, stdout) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                // Until EOF only: a line that is not UTF-8 must not end the reading.
                let mut out = BufReader::new(out);
                let mut buf = Vec::new();
                while matches!(out.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    buf.clear();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_reader = None;
        if let Some(mut err) = child.stderr.take() {
            let sink = stderr.clone();
            stderr_reader = Some(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                    // Warnings of earlier transactions are not kept forever.
                    if text.len() > 64 * 1024 {
                        text.clear();
                    }
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        Ok(Restorer {
            program: program.to_string(),
            args: all.join(" "),
            stdin: child.stdin.take(),
            child: Some(child),
            stdout,
            stderr,
            stderr_reader,
            lines: 0,
            marker: 0,
        })
    }

    fn transaction(&mut self, input: &str) -> Result<(), ExecError> {
        self.marker += 1;
        let marker = format!("# calico-rs transaction {}", self.marker);
        let first_line = self.lines + 1;
        // Only what the tool says about this transaction.
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut text = String::with_capacity(input.len() + marker.len() + 2);
        text.push_str(input);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&marker);
        text.push('\n');
        self.lines += text.lines().count();
        let written = match self.stdin.as_mut() {
            Some(w) => w.write_all(text.as_bytes()).and_then(|_| w.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        let deadline = Instant::now() + TRANSACTION_TIMEOUT;
        if written.is_ok() {
            loop {
                match self
                    .stdout
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    Ok(line) if line == marker => return Ok(()),
                    Ok(_) => {}
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        return Err(self.failed(
                            "no answer".into(),
                            format!("no answer within {TRANSACTION_TIMEOUT:?}"),
                        ));
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        // The tool exits on the first error; its message numbers lines across the stream.
        drop(self.stdin.take());
        let status = match self.child.as_mut().map(Child::wait) {
            Some(Ok(s)) => s.to_string(),
            Some(Err(e)) => e.to_string(),
            None => "gone".into(),
        };
        // The tool has exited, so its stderr is at EOF: the reader finishes.
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
        let stderr = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trim()
            .to_string();
        let detail = relative_line(&stderr, first_line, input)
            .map(|l| format!("{stderr} (in this transaction: {l})"))
            .unwrap_or(stderr);
        Err(self.failed(status, detail))
    }

    fn failed(&self, status: String, stderr: String) -> ExecError {
        ExecError::Failed {
            program: self.program.clone(),
            args: self.args.clone(),
            status,
            stderr,
        }
    }
}

impl Drop for Restorer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            // Idle between transactions; reaping it must not hold anyone up.
            let _ = child.kill();
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
    }
}

/// "line N failed" in the tool's numbering, as the line of this transaction it means.
fn relative_line(stderr: &str, first_line: usize, input: &str) -> Option<String> {
    let after = stderr.split("line ").nth(1)?;
    let n: usize = after.split_whitespace().next()?.parse().ok()?;
    let idx = n.checked_sub(first_line)?;
    let text = input.lines().nth(idx)?;
    Some(format!("line {}: {text}", idx + 1))
}

#[cfg(test)]
mod restorer_tests {
    use super::*;

    /// Stands in for `iptables-nft-restore --verbose`: echoes comment lines, numbers lines
    /// across the stream, fails (and exits) on a line saying "bad".
    const TOOL: &str = r##"n=0; while IFS= read -r l; do n=$((n+1)); case "$l" in
        "#"*) echo "$l";;
        *bad*) echo "tool: line $n failed: No chain/target/match by that name." >&2; exit 1;;
        esac; done"##;

    fn start() -> Restorer {
        Restorer::start("sh", &["-c", TOOL]).expect("sh starts")
    }

    #[test]
    fn transactions_go_through_one_process_until_one_fails() {
        let mut r = start();
        let pid = r.child.as_ref().map(Child::id);
        r.transaction("*filter\n-A x -j ACCEPT\nCOMMIT\n")
            .expect("the first transaction");
        r.transaction("*filter\n-A y -j ACCEPT\nCOMMIT")
            .expect("a second one, in the same process");
        assert_eq!(r.child.as_ref().map(Child::id), pid);
        let err = r
            .transaction("*filter\n-F z\n-A z bad\nCOMMIT\n")
            .expect_err("the tool failed");
        let msg = err.to_string();
        assert!(
            msg.contains("line 11 failed") && msg.contains("line 3: -A z bad"),
            "the failing line, in the stream's and in the transaction's numbering: {msg}"
        );
    }

    #[test]
    fn a_tool_that_died_is_an_error_not_a_hang() {
        let mut r = start();
        if let Some(c) = r.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(r.transaction("*filter\nCOMMIT\n").is_err());
    }
}

#[cfg(test)]
pub mod fake {
    //! A recorder standing in for the kernel tools in unit tests.
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    pub struct FakeExec {
        /// Each call: program, args, stdin.
        pub calls: Mutex<Vec<(String, Vec<String>, String)>>,
        /// Output returned for a program (by name), else empty.
        pub outputs: Mutex<Vec<(String, String)>>,
        /// Programs that fail.
        pub failing: Mutex<Vec<String>>,
    }

    impl FakeExec {
        pub fn set_output(&self, program: &str, out: &str) {
            let mut o = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
            o.retain(|(p, _)| p != program);
            o.push((program.to_string(), out.to_string()));
        }

        pub fn inputs_to(&self, program: &str) -> Vec<String> {
            self.calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|c| c.0 == program)
                .map(|c| c.2.clone())
                .collect()
        }
    }

    impl Exec for FakeExec {
        fn run(
            &self,
            program: &str,
            args: &[&str],
            stdin: Option<&[u8]>,
        ) -> Result<String, ExecError> {
            self.calls.lock().unwrap_or_else(|e| e.into_inner()).push((
                program.to_string(),
                args.iter().map(|s| s.to_string()).collect(),
                stdin
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default(),
            ));
            if self
                .failing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|p| p == program)
            {
                return Err(ExecError::Failed {
                    program: program.into(),
                    args: args.join(" "),
                    status: "exit status: 1".into(),
                    stderr: "injected failure".into(),
                });
            }
            Ok(self
                .outputs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|(p, _)| p == program)
                .map(|(_, o)| o.clone())
                .unwrap_or_default())
        }
    }
}
