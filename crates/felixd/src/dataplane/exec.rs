//! Running the kernel tools (`iptables-restore`, `ipset`, `nft`, `conntrack`): one seam, so
//! tests can see exactly what would be written and the dataplane can time every call.

use std::io::Write;
use std::process::{Command, Stdio};
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
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemExec;

impl Exec for SystemExec {
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
            .map_err(|source| ExecError::Spawn {
                program: program.to_string(),
                source,
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that exits early closes the pipe; its exit status tells why.
            let _ = pipe.write_all(input);
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ExecError::Spawn {
                program: program.to_string(),
                source,
            })?;
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
