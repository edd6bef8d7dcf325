//! What birdd's tests share: a lab node (or cluster) with birdd running in it, the
//! datastore writes that give it something to advertise, and waiting for conditions.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_api::codec::decode_documents;
use calico_ipam::{AutoAssignArgs, Ipam};
use calico_lab::Node;
use calico_proto::bgp::bgp_client::BgpClient;
use calico_proto::bgp::{ListPeersRequest, ListRoutesRequest, Peer, Route};

pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_birdd"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// birdd running in a node's namespace; killed (SIGKILL, as a crash would) on drop.
pub struct Birdd {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Birdd {
    pub fn start(node: &Node) -> Birdd {
        let socket = node.dir.path().join("birdd.sock");
        let log = node.dir.path().join("birdd.log");
        let _ = std::fs::remove_file(&socket);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let (bin, endpoint, name, sock, secrets) = (
            bin_dir().join("birdd"),
            node.etcd_endpoint(),
            node.name.clone(),
            socket.clone(),
            secrets_dir(node),
        );
        let child = node.ns.run(move || {
            Command::new(bin)
                .env("DATASTORE_TYPE", "etcdv3")
                .env("ETCD_ENDPOINTS", endpoint)
                .env("RUST_LOG", "info,birdd=debug")
                .args(["--nodename", &name, "--http-listen", "127.0.0.1:9900"])
                .args(["--reconcile-after", "20"])
                .arg("--secrets-dir")
                .arg(&secrets)
                .arg("--control-socket")
                .arg(&sock)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .expect("starting birdd")
        });
        let b = Birdd { child, socket, log };
        wait_for("birdd's control socket", Duration::from_secs(20), || {
            b.socket.exists().then_some(())
        });
        b
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn peers(&self, node: &Node) -> Vec<Peer> {
        let sock = self.socket.clone();
        node.ns.run(move || {
            calico_lab::block_on(async move {
                let ch = calico_proto::endpoint::connect(&format!("unix://{}", sock.display()))
                    .await
                    .expect("birdd's control socket");
                BgpClient::new(ch)
                    .list_peers(ListPeersRequest {})
                    .await
                    .expect("ListPeers")
                    .into_inner()
                    .peers
            })
        })
    }

    pub fn routes(&self, node: &Node) -> Vec<Route> {
        let sock = self.socket.clone();
        node.ns.run(move || {
            calico_lab::block_on(async move {
                let ch = calico_proto::endpoint::connect(&format!("unix://{}", sock.display()))
                    .await
                    .expect("birdd's control socket");
                BgpClient::new(ch)
                    .list_routes(ListRoutesRequest {
                        prefix: String::new(),
                        best_only: false,
                    })
                    .await
                    .expect("ListRoutes")
                    .into_inner()
                    .routes
            })
        })
    }
}

impl Drop for Birdd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- birdd.log:\n{}", self.log_text());
        }
    }
}

/// Where the node's birdd finds mounted secrets.
pub fn secrets_dir(node: &Node) -> PathBuf {
    node.dir.path().join("secrets")
}

/// Writes a secret's key as a Secret volume would show it to birdd.
pub fn write_secret(node: &Node, name: &str, key: &str, value: &str) {
    let dir = secrets_dir(node).join(name);
    std::fs::create_dir_all(&dir).expect("the secret's directory");
    std::fs::write(dir.join(key), value).expect("writing the secret");
}

/// Applies Calico YAML through the node's datastore.
pub fn apply(node: &Node, yaml: &str) {
    let docs = decode_documents(yaml).expect("valid YAML");
    node.with_datastore(async move |rc| {
        for r in docs {
            rc.apply_any(r).await.expect("apply");
        }
    });
}

/// Gives `host` a block (an address from each pool family asked for), as a pod would.
pub fn claim_block(node: &Node, host: &str, v4: usize, v6: usize) -> Vec<std::net::IpAddr> {
    let host = host.to_string();
    node.with_datastore(async move |rc| {
        let ipam = Ipam::new(rc.datastore().clone());
        let (a4, a6) = ipam
            .auto_assign(&AutoAssignArgs::new(&host, &format!("test.{host}"), v4, v6))
            .await
            .expect("auto-assign");
        a4.ips
            .iter()
            .chain(a6.ips.iter())
            .map(|n| n.addr())
            .collect()
    })
}

/// Polls `f` until it returns something, or panics naming `what`.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command inside a namespace and returns its stdout (empty on failure).
pub fn ns_out(ns: &calico_netns_harness::NetNs, prog: &str, args: &[&str]) -> String {
    ns.try_exec(prog, args)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A program the test needs, or a loud failure naming the package.
pub fn require(prog: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/lib/frr", "/sbin", "/bin"] {
        let p = Path::new(dir).join(prog);
        if p.exists() {
            return p;
        }
    }
    panic!("{prog} is missing: install the Debian package {package} (make deps does)");
}

/// A child process killed on drop.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
