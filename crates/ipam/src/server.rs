//! Running ipamd: gRPC listeners (a unix socket, mode 0600, and optionally TCP with mutual
//! TLS), the HTTP endpoint for `/liveness`, `/readiness` and `/metrics`, and a readiness probe
//! of the datastore.
//!
//! ```text
//!   unix socket ─┐
//!   tcp + mTLS ──┼─▶ tonic ─▶ IpamService ─▶ Ipam ─▶ Datastore
//!   http ────────┴─▶ axum  ─▶ health flags, Metrics
//!   probe task ─────────────▶ Datastore ─▶ ready flag
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use calico_proto::ipam::ipam_server::IpamServer;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::allocator::Ipam;
use crate::metrics::Metrics;
use crate::service::IpamService;

/// Where to serve gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Listen, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            if !p.starts_with('/') {
                return Err(format!(
                    "{s:?}: a unix socket path must be absolute (unix:///var/run/calico/ipam.sock)"
                ));
            }
            return Ok(Listen::Unix(PathBuf::from(p)));
        }
        if let Some(a) = s.strip_prefix("tcp://") {
            return a.parse().map(Listen::Tcp).map_err(|_| {
                format!("{s:?}: expected tcp://ADDRESS:PORT, e.g. tcp://0.0.0.0:5475")
            });
        }
        Err(format!("{s:?}: use unix:///path or tcp://address:port"))
    }
}

/// TLS material for TCP listeners; clients must present a certificate signed by `client_ca`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// Health shared between the probe and the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Health {
    pub serving: AtomicBool,
    pub datastore_ok: AtomicBool,
}

#[derive(Clone)]
struct HttpState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    ipam: Ipam,
}

async fn liveness(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.health.serving.load(Ordering::Relaxed) {
        (StatusCode::OK, "live\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not serving yet\n")
    }
}

async fn readiness(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    match (
        s.health.serving.load(Ordering::Relaxed),
        s.health.datastore_ok.load(Ordering::Relaxed),
    ) {
        (true, true) => (StatusCode::OK, "ready\n"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not serving yet\n"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "datastore unreachable\n"),
    }
}

async fn render_metrics(State(s): State<HttpState>) -> String {
    s.metrics.sync_stats(s.ipam.stats());
    if let Ok(u) = s.ipam.usage().await {
        s.metrics.set_usage(&u);
    }
    s.metrics.render()
}

/// Everything ipamd runs, until `stop` is cancelled; then listeners close and in-flight
/// requests get up to `drain` to finish.
pub struct Ipamd {
    pub ipam: Ipam,
    pub node: String,
    pub listen: Vec<Listen>,
    pub http: Option<std::net::SocketAddr>,
    pub tls: Option<TlsFiles>,
}

impl std::fmt::Debug for Ipamd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipamd")
            .field("node", &self.node)
            .field("listen", &self.listen)
            .finish()
    }
}

impl Ipamd {
    pub async fn run(self, stop: CancellationToken, drain: Duration) -> Result<()> {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let service = IpamService::new(
            self.ipam.clone(),
            self.node.clone(),
            metrics.clone(),
            health.clone(),
        );
        let mut tasks = tokio::task::JoinSet::new();

        for l in &self.listen {
            let svc = IpamServer::new(service.clone());
            let stop = stop.clone();
            match l {
                Listen::Unix(path) => {
                    let listener = calico_proto::endpoint::bind_unix(path)?;
                    let path = path.clone();
                    tracing::info!(socket = %path.display(), "serving gRPC");
                    tasks.spawn(async move {
                        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                        let r = Server::builder()
                            .add_service(svc)
                            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                            .await;
                        let _ = std::fs::remove_file(&path);
                        r.context("unix gRPC server")
                    });
                }
                Listen::Tcp(addr) => {
                    let Some(tls) = &self.tls else {
                        bail!(
                            "listening on tcp://{addr} needs --tls-cert, --tls-key and --tls-client-ca (mutual TLS)"
                        );
                    };
                    let read = |p: &PathBuf| {
                        std::fs::read(p).with_context(|| format!("reading {}", p.display()))
                    };
                    let config = ServerTlsConfig::new()
                        .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
                        .client_ca_root(Certificate::from_pem(read(&tls.client_ca)?));
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding tcp://{addr}"))?;
                    tracing::info!(%addr, "serving gRPC over mutual TLS");
                    let mut builder = Server::builder()
                        .tls_config(config)
                        .context("TLS configuration")?;
                    tasks.spawn(async move {
                        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                        builder
                            .add_service(svc)
                            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                            .await
                            .context("tcp gRPC server")
                    });
                }
            }
        }

        if let Some(addr) = self.http {
            let state = HttpState {
                health: health.clone(),
                metrics: metrics.clone(),
                ipam: self.ipam.clone(),
            };
            let app = Router::new()
                .route("/liveness", get(liveness))
                .route("/readiness", get(readiness))
                .route("/metrics", get(render_metrics))
                .with_state(state);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the health/metrics endpoint {addr}"))?;
            tracing::info!(%addr, "serving /liveness, /readiness and /metrics");
            let stop = stop.clone();
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                    .context("health/metrics server")
            });
        }

        // Readiness follows the datastore.
        {
            let ipam = self.ipam.clone();
            let health = health.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                loop {
                    let ok = ipam.config().await.is_ok();
                    if health.datastore_ok.swap(ok, Ordering::Relaxed) != ok {
                        tracing::info!(reachable = ok, "datastore reachability changed");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(if ok { 10 } else { 1 })) => {}
                    }
                }
            });
        }
        health.serving.store(true, Ordering::Relaxed);

        let mut first_error = None;
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        tracing::error!(error = %format!("{e:#}"), "a server stopped");
                        first_error.get_or_insert(e);
                        stop.cancel();
                    }
                    Some(Err(e)) => {
                        first_error.get_or_insert(anyhow::anyhow!("a server task panicked: {e}"));
                        stop.cancel();
                    }
                },
                _ = stop.cancelled(), if !stop.is_cancelled() => {}
            }
            if stop.is_cancelled() {
                // Give in-flight requests their drain time, then stop waiting.
                let deadline = tokio::time::sleep(drain);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        done = tasks.join_next() => if done.is_none() { break },
                        _ = &mut deadline => {
                            tracing::warn!("drain deadline passed; stopping");
                            tasks.abort_all();
                            break;
                        }
                    }
                }
                break;
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
