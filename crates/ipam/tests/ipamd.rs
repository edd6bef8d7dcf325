//! The real ipamd binary on a real etcd: gRPC over its unix socket (mode 0600) and over
//! mutual TLS, status codes for bad input with nothing written, health and metrics.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_api::ObjectMeta;
use calico_api::kinds::IpPoolSpec;
use calico_api::resource::IpPool;
use calico_datastore::{KeyPrefix, ResourceClient};
use calico_etcd_harness::backend::Backend;
use calico_ipam::client::connect;
use calico_proto::ipam::{self as pb, ipam_client::IpamClient};
use tonic::Code;

struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    http: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "ipamd log:\n{}",
                std::fs::read_to_string(self._dir.path().join("ipamd.log")).unwrap_or_default()
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

fn start(etcd: &str, extra: &[String]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/ipam.sock");
    let http = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ipamd"))
        .env("ETCD_ENDPOINTS", etcd)
        .env("DATASTORE_TYPE", "etcdv3")
        .args([
            "--nodename",
            "node-a",
            "--http-listen",
            &format!("127.0.0.1:{http}"),
        ])
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("ipamd.log")).unwrap())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        _dir: dir,
        socket,
        http,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(d.socket.exists() && TcpStream::connect(("127.0.0.1", d.http)).is_ok()) {
        assert!(Instant::now() < deadline, "ipamd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

async fn client(d: &Daemon) -> IpamClient<tonic::transport::Channel> {
    connect(&format!("unix://{}", d.socket.display()))
        .await
        .unwrap()
}

async fn with_pool() -> Backend {
    let b = Backend::etcd().await;
    ResourceClient::new(b.ds())
        .create(IpPool::new(
            ObjectMeta::named("p"),
            IpPoolSpec {
                cidr: "10.96.0.0/24".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    b
}

fn endpoint(b: &Backend) -> String {
    match b {
        Backend::Etcd { etcd, .. } => etcd.endpoint(),
        Backend::Memory(_) => unreachable!(),
    }
}

#[tokio::test]
async fn ipamd_serves_assignments_on_a_private_unix_socket() {
    let b = with_pool().await;
    let d = start(&endpoint(&b), &[]);
    assert_eq!(
        std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut c = client(&d).await;
    let r = c
        .auto_assign(pb::AutoAssignRequest {
            num_ipv4: 2,
            handle_id: "k8s-pod-network.c1".into(),
            attributes: [("pod".to_string(), "web".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.ipv4.len(), 2);
    assert!(
        r.ipv4
            .iter()
            .all(|ip| ip.starts_with("10.96.0.") && ip.ends_with("/26"))
    );
    // The default host is ipamd's own node.
    let u = c
        .usage(pb::UsageRequest {
            include_blocks: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.pools[0].in_use, 2);
    assert_eq!(u.blocks[0].affinity, "host:node-a");
    let fixed = c
        .assign_ip(pb::AssignIpRequest {
            ip: "10.96.0.200".into(),
            handle_id: "k8s-pod-network.c2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fixed.ip, "10.96.0.200/26");
    let rel = c
        .release_by_handle(pb::ReleaseByHandleRequest {
            handle_id: "k8s-pod-network.c1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rel.released.len(), 2);
    let again = c
        .release_by_handle(pb::ReleaseByHandleRequest {
            handle_id: "k8s-pod-network.c1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.released.is_empty(), "releases are idempotent");
    let ips = c
        .release_i_ps(pb::ReleaseIPsRequest {
            ips: vec![pb::ReleaseOption {
                ip: "10.96.0.200".into(),
                handle_id: "k8s-pod-network.c2".into(),
                sequence_number: None,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ips.released, vec!["10.96.0.200".to_string()]);
    let check = c.check(pb::CheckRequest {}).await.unwrap().into_inner();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    // Health and metrics.
    assert_eq!(http_get(d.http, "/liveness").0, 200);
    assert_eq!(http_get(d.http, "/readiness").0, 200);
    let (code, body) = http_get(d.http, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("ipam_allocations_total 3"), "{body}");
    assert!(body.contains("ipam_releases_total 3"), "{body}");
    assert!(
        body.contains("ipam_request_duration_seconds_bucket{method=\"AutoAssign\""),
        "{body}"
    );
    assert!(
        body.contains("ipam_pool_capacity{pool=\"p\"} 256"),
        "{body}"
    );
    assert!(
        body.contains("ipam_requests_total{code=\"OK\",method=\"ReleaseByHandle\"} 2"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_requests_get_a_status_that_says_what_to_change_and_write_nothing() {
    let b = with_pool().await;
    // Without the garbage collector, whose leader lease is written some time after start
    // and would count as a write here.
    let d = start(&endpoint(&b), &["--no-gc".to_string()]);
    let mut c = client(&d).await;
    let before = b
        .ds()
        .list(&KeyPrefix::Everything)
        .await
        .unwrap()
        .items
        .len();
    let auto = |f: fn(&mut pb::AutoAssignRequest)| {
        let mut r = pb::AutoAssignRequest {
            num_ipv4: 1,
            handle_id: "net.x".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let cases: Vec<(pb::AutoAssignRequest, Code, &str)> = vec![
        (
            auto(|r| r.num_ipv4 = 0),
            Code::InvalidArgument,
            "at least one address",
        ),
        (
            auto(|r| r.num_ipv4 = 1000),
            Code::InvalidArgument,
            "the limit is 256",
        ),
        (
            auto(|r| r.handle_id = "a/b".into()),
            Code::InvalidArgument,
            "handle_id",
        ),
        (
            auto(|r| r.ipv4_pools = vec!["missing".into()]),
            Code::InvalidArgument,
            "does not exist",
        ),
        (auto(|r| r.r#use = 7), Code::InvalidArgument, "invalid use"),
        (
            auto(|r| {
                r.num_ipv4 = 0;
                r.num_ipv6 = 1
            }),
            Code::FailedPrecondition,
            "no configured Calico IPv6 pools",
        ),
    ];
    for (req, code, needle) in cases {
        let s = c.auto_assign(req).await.unwrap_err();
        assert_eq!(s.code(), code, "{}", s.message());
        assert!(
            s.message().contains(needle),
            "{:?} should mention {needle}",
            s.message()
        );
    }
    for (ip, code, needle) in [
        (
            "10.250.0.1",
            Code::InvalidArgument,
            "not in any enabled IP pool",
        ),
        ("not-an-ip", Code::InvalidArgument, "is not an IP address"),
    ] {
        let s = c
            .assign_ip(pb::AssignIpRequest {
                ip: ip.into(),
                handle_id: "net.y".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), code);
        assert!(s.message().contains(needle), "{}", s.message());
    }
    let s = c
        .release_i_ps(pb::ReleaseIPsRequest { ips: vec![] })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(
        b.ds()
            .list(&KeyPrefix::Everything)
            .await
            .unwrap()
            .items
            .len(),
        before,
        "nothing was written"
    );
    // More than the pool has left: all or nothing, and what was taken is given back.
    c.auto_assign(auto(|r| {
        r.num_ipv4 = 10;
        r.handle_id = "net.keep".into()
    }))
    .await
    .unwrap();
    let s = c.auto_assign(auto(|r| r.num_ipv4 = 250)).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(
        s.message()
            .contains("assigned 246 out of 250 requested IPv4 addresses"),
        "{}",
        s.message()
    );
    let handles = b.ds().list(&KeyPrefix::Handles).await.unwrap();
    assert_eq!(handles.items.len(), 1, "only the kept handle remains");
    let check = c.check(pb::CheckRequest {}).await.unwrap().into_inner();
    assert_eq!(check.allocations_checked, 10);
    assert!(check.problems.is_empty(), "{:?}", check.problems);
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

#[tokio::test]
async fn tcp_listeners_require_a_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let b = with_pool().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf("localhost");
    let (client_cert, client_key) = leaf("calico-cni");
    let port = free_port();
    let args = vec![
        "--listen".to_string(),
        format!("tcp://127.0.0.1:{port}"),
        "--tls-cert".into(),
        write(dir.path(), "s.pem", &server_cert)
            .display()
            .to_string(),
        "--tls-key".into(),
        write(dir.path(), "s.key", &server_key)
            .display()
            .to_string(),
        "--tls-client-ca".into(),
        write(dir.path(), "ca.pem", &ca.pem()).display().to_string(),
    ];
    let _d = start(&endpoint(&b), &args);
    let url = format!("https://localhost:{port}");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()));
    // With a certificate from the CA: served.
    let with_cert = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(tls.clone().identity(tonic::transport::Identity::from_pem(
            client_cert,
            client_key,
        )))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let usage = IpamClient::new(with_cert)
        .usage(pb::UsageRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.pools.len(), 1);
    // Without one: refused.
    let refused = match tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
    {
        Err(_) => true,
        Ok(ch) => IpamClient::new(ch)
            .usage(pb::UsageRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");
}
