//! The launcher behind the `lab` command: a named cluster that outlives each command, found
//! again through a state file.
//!
//! `up` builds the cluster (namespaces `calico-lab-…`, files under `/run/calico-lab/`) and
//! detaches it into `/run/calico-lab/state.json`; every later command takes the state lock,
//! attaches, acts, and writes the state back; `down` kills what runs in the lab's namespaces,
//! deletes them and the run directory, whether or not a state file is left (an earlier run
//! that crashed or was killed). `CALICO_LAB_NAME` names another lab (prefix `<name>-`, files
//! under `/run/<name>/`, etcd's data in `<tmp>/<name>-etcd`), so that tests do not meet a
//! person's lab.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use calico_lab::probe::Proto;
use calico_lab::{Encap, Naming, Removed, pid_alive};
use calico_netns_harness::Servers;
use nix::fcntl::{Flock, FlockArg};

use crate::lab::{Lab, LabState};
use crate::pod::{PodError, PodSpec, PodState, split_key};

/// The default lab's name.
pub const DEFAULT_NAME: &str = "calico-lab";

/// What the launcher failed at; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("no lab is up ({0} is missing): `lab up` starts one")]
    NotUp(PathBuf),
    #[error("a lab is up already ({0}): `lab down` removes it")]
    AlreadyUp(PathBuf),
    #[error("namespaces of an earlier run are still there ({0}): `lab down` removes them")]
    Leftovers(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state file {path} is damaged ({source}): `lab down` removes the lab")]
    State {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "the lab's namespaces are gone ({0}): `lab down` clears the rest, `lab up` starts again"
    )]
    Attach(std::io::Error),
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error("bad labels {0:?}: give key=value pairs separated by commas")]
    Labels(String),
    #[error("cannot run {cmd} in {pod}: {source}")]
    Exec {
        cmd: String,
        pod: String,
        source: std::io::Error,
    },
    #[error("no pods to probe: `lab pod add <node> <ns>/<pod>` makes some")]
    NoPods,
}

type Result<T> = std::result::Result<T, LauncherError>;

/// How `lab up` builds the cluster.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
    pub encap: Encap,
    pub birdd: bool,
    /// Where the binaries are.
    pub bin_dir: PathBuf,
}

/// One lab: its name, prefix and run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    pub naming: Naming,
}

impl Launcher {
    /// The lab named by `CALICO_LAB_NAME`, else `calico-lab`.
    pub fn from_env() -> Launcher {
        let name = std::env::var("CALICO_LAB_NAME")
            .ok()
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .unwrap_or_else(|| DEFAULT_NAME.to_string());
        Launcher::named(&name)
    }

    /// The lab called `name`: namespaces `<name>-…`, files under `/run/<name>/`, etcd's
    /// data in the temporary directory (see [`Naming::new`]).
    pub fn named(name: &str) -> Launcher {
        Launcher {
            naming: Naming::new(name),
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.naming.run_dir.join("state.json")
    }

    /// The lab's lock, held for the whole of a command.
    fn lock(&self) -> Result<Flock<File>> {
        let dir = &self.naming.run_dir;
        std::fs::create_dir_all(dir).map_err(|source| LauncherError::Io {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("lock");
        let f = File::create(&path).map_err(|source| LauncherError::Io {
            what: "creating",
            path: path.clone(),
            source,
        })?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| LauncherError::Io {
            what: "locking",
            path,
            source: e.into(),
        })
    }

    fn load(&self) -> Result<LabState> {
        let path = self.state_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LauncherError::NotUp(path));
            }
            Err(source) => {
                return Err(LauncherError::Io {
                    what: "reading",
                    path,
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| LauncherError::State { path, source })
    }

    fn save(&self, s: &LabState) -> Result<()> {
        let path = self.state_path();
        let tmp = path.with_extension("json.new");
        let text = serde_json::to_string_pretty(s).map_err(|source| LauncherError::State {
            path: path.clone(),
            source,
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| LauncherError::Io {
            what: "writing",
            path: path.clone(),
            source,
        })
    }

    /// Attaches to the lab, runs `f`, and writes the state back.
    fn with_lab<T>(&self, f: impl FnOnce(&mut Lab) -> Result<T>) -> Result<T> {
        let _lock = self.lock()?;
        let s = self.load()?;
        let mut lab = Lab::attach(&s).map_err(LauncherError::Attach)?;
        let out = f(&mut lab);
        let (encap, birdd) = (s.encap.clone(), s.birdd);
        let s = lab.detach(&encap, birdd);
        self.save(&s)?;
        out
    }

    /// Builds the cluster and leaves it running. Panics (after removing what it made) if a
    /// daemon does not start; the message names it and shows its log.
    pub fn up(&self, o: &UpOptions) -> Result<LabState> {
        let _lock = self.lock()?;
        if self.state_path().exists() {
            return Err(LauncherError::AlreadyUp(self.state_path()));
        }
        let left = calico_lab::namespaces_with_prefix(&self.naming.prefix);
        if !left.is_empty() {
            return Err(LauncherError::Leftovers(left.join(", ")));
        }
        let mut co = crate::options(o.nodes, o.encap);
        co.node.bin_dir = o.bin_dir.clone();
        co.birdd = o.birdd;
        co.naming = Some(self.naming.clone());
        let lab = Lab::start(co);
        let encap = match o.encap {
            Encap::Vxlan => "vxlan",
            Encap::None => "none",
        };
        let s = lab.detach(encap, o.birdd);
        self.save(&s)?;
        Ok(s)
    }

    /// Removes the lab: every process in its namespaces (and any recorded daemon still
    /// running from its run directory), the namespaces, the run directory.
    pub fn down(&self) -> Result<Removed> {
        let lock = if self.naming.run_dir.exists() {
            Some(self.lock()?)
        } else {
            None
        };
        let mut killed = 0;
        let mut data_dirs = vec![self.naming.data_dir.clone()];
        if let Ok(s) = self.load() {
            data_dirs.push(s.cluster.etcd.dir.clone());
            let pids = s
                .cluster
                .nodes
                .iter()
                .flat_map(|n| [n.pids.ipamd, n.pids.felixd, n.pids.birdd])
                .chain([s.cluster.etcd.pid])
                .flatten();
            let mut mine = Vec::new();
            for pid in pids {
                if pid_alive(pid) && runs_from(pid, &self.naming.run_dir) {
                    calico_lab::signal_pid(pid, nix::sys::signal::Signal::SIGKILL);
                    mine.push(pid);
                }
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while mine.iter().any(|p| pid_alive(*p)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            killed = mine.len();
        }
        let mut removed = calico_lab::remove(&self.naming);
        // Test runs that were killed leave their namespaces too; `lab down` is where an
        // operator looks for a clean machine.
        removed
            .namespaces
            .extend(calico_netns_harness::remove_orphaned_namespaces());
        for d in data_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        removed.processes += killed;
        drop(lock);
        Ok(removed)
    }

    /// The lab's nodes, daemons and pods.
    pub fn status(&self) -> Result<String> {
        self.with_lab(|lab| Ok(status(lab)))
    }

    /// Makes pod `key` on `node` with `labels` (`k=v,k2=v2`).
    pub fn pod_add(&self, node: &str, key: &str, labels: &str) -> Result<PodState> {
        let mut spec = PodSpec::new(node, key)?;
        for kv in labels.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| LauncherError::Labels(labels.to_string()))?;
            spec = spec.label(k.trim(), v.trim());
        }
        self.with_lab(|lab| {
            let p = lab.add_pod(spec)?;
            Ok(p.state())
        })
    }

    /// Removes pod `key`.
    pub fn pod_del(&self, key: &str) -> Result<()> {
        split_key(key)?;
        self.with_lab(|lab| Ok(lab.del_pod(key)?))
    }

    /// Runs `argv` inside pod `key`'s namespace with this terminal; returns its exit code.
    pub fn exec(&self, key: &str, argv: &[String]) -> Result<i32> {
        let (program, args) = argv.split_first().ok_or_else(|| LauncherError::Exec {
            cmd: String::new(),
            pod: key.to_string(),
            source: std::io::Error::other("no command given"),
        })?;
        // Not under the lock: a shell in a pod may run for long.
        let s = {
            let _lock = self.lock()?;
            self.load()?
        };
        let p = s
            .pods
            .iter()
            .find(|p| format!("{}/{}", p.namespace, p.name) == key)
            .ok_or_else(|| PodError::NoPod(key.to_string()))?;
        let pod = crate::pod::Pod::attach(p).map_err(LauncherError::Attach)?;
        let status = pod
            .ns
            .run(|| std::process::Command::new(program).args(args).status())
            .map_err(|source| LauncherError::Exec {
                cmd: program.clone(),
                pod: key.to_string(),
                source,
            })?;
        Ok(status.code().unwrap_or(128))
    }

    /// Probes every pod from every other on `proto`/`port` (echo servers started in each pod
    /// for the probe) and prints the grid.
    pub fn probe(&self, proto: Proto, port: u16) -> Result<String> {
        self.with_lab(|lab| {
            if lab.pods.is_empty() {
                return Err(LauncherError::NoPods);
            }
            let (tcp, udp): (&[u16], &[u16]) = match proto {
                Proto::Tcp => (&[port], &[]),
                Proto::Udp => (&[], &[port]),
            };
            let servers: Vec<Servers> = lab.serve(tcp, udp);
            let (grid, m) = lab.grid(proto, port, Duration::from_secs(1));
            drop(servers);
            let open = m.iter().flatten().filter(|c| **c).count() - m.len();
            let pairs = m.len() * (m.len() - 1);
            let mut out = String::new();
            for p in &lab.pods {
                let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
                out.push_str(&format!("  {:<24} {:<8} {}\n", p.key(), p.node, ips.join(", ")));
            }
            out.push_str(&format!(
                "\n{proto}/{port} from each row to each column ('.' reached, 'X' blocked): {open} of {pairs} reached\n{grid}"
            ));
            Ok(out)
        })
    }
}

/// Whether process `pid` was started with a path under `dir` on its command line (the lab's
/// daemons all are), so that a recycled pid is never killed.
fn runs_from(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy())
}

fn status(lab: &mut Lab) -> String {
    let c = &mut lab.cluster;
    let mut out = format!(
        "fabric   {}  bridge br0 10.99.0.254/24, fd99::fe/64\netcd     {}  pid {}  {}\n\n",
        c.fabric.name(),
        c.etcd.public_endpoint(),
        c.etcd
            .pid()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        if c.etcd.healthy() {
            "healthy"
        } else {
            "NOT HEALTHY"
        },
    );
    let mut rows = vec![vec![
        "NODE".to_string(),
        "NAMESPACE".into(),
        "ADDRESS".into(),
        "IPAMD".into(),
        "FELIXD".into(),
        "BIRDD".into(),
        "PODS".into(),
    ]];
    for n in &c.nodes {
        let p = n.pids();
        let show = |pid: Option<u32>, extra: &str| match pid {
            Some(pid) if pid_alive(pid) => format!("{pid} {extra}"),
            Some(pid) => format!("{pid} dead"),
            None => "-".into(),
        };
        let ready = match n.felixd_get("/readiness") {
            Some((200, _)) => "ready",
            _ => "not ready",
        };
        let pods = lab.pods.iter().filter(|p| p.node == n.name).count();
        rows.push(vec![
            n.name.clone(),
            n.ns.name().to_string(),
            n.v4.to_string(),
            show(p.ipamd, "up"),
            show(p.felixd, ready),
            show(p.birdd, "up"),
            pods.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    if !lab.pods.is_empty() {
        let mut rows = vec![vec![
            "POD".to_string(),
            "NODE".into(),
            "NAMESPACE".into(),
            "ADDRESSES".into(),
        ]];
        for p in &lab.pods {
            let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
            rows.push(vec![
                p.key(),
                p.node.clone(),
                p.ns.name().to_string(),
                ips.join(", "),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    out
}

/// Rows as left-aligned columns, three spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}
