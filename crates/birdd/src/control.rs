//! The control API: gRPC on a unix socket (`calicoctl node status`, routes, "why not best")
//! and HTTP for `/liveness`, `/readiness` and Prometheus `/metrics`. Both ask the daemon
//! loop, which owns the state, through a channel; nothing here holds BGP state.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result};
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::routing::get;
use calico_bgp::fsm::State;
use calico_bgp::types::{Attrs, community_string};
use calico_proto::bgp as pb;
use calico_proto::bgp::bgp_server::{Bgp, BgpServer};
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::calico::PeerKind;
use crate::metrics::Metrics;

/// A question for the daemon loop.
#[derive(Debug)]
pub enum Query {
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    Routes {
        prefix: Option<IpNet>,
        best_only: bool,
        reply: oneshot::Sender<Vec<RouteView>>,
    },
    Explain {
        prefix: IpNet,
        reply: oneshot::Sender<Vec<(RouteView, String)>>,
    },
    Status(oneshot::Sender<DaemonStatus>),
}

#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub kind: PeerKind,
    pub state: State,
    pub since: SystemTime,
    pub info: String,
    pub local_as: u32,
    pub remote_as: u32,
    pub received: u64,
    pub advertised: u64,
}

#[derive(Debug, Clone)]
pub struct RouteView {
    pub prefix: IpNet,
    pub from_peer: String,
    pub attrs: Attrs,
    pub best: bool,
    pub installed: bool,
}

#[derive(Debug, Clone)]
pub struct DaemonStatus {
    pub router_id: Option<Ipv4Addr>,
    pub local_as: u32,
    pub started: SystemTime,
    pub routes_in_kernel: u64,
}

/// Whether birdd is ready, and if not, why (set by the daemon loop on each timer tick).
#[derive(Debug, Clone)]
pub struct Readiness(Arc<Mutex<Result<(), String>>>);

impl Default for Readiness {
    fn default() -> Readiness {
        Readiness(Arc::new(Mutex::new(Err("starting".into()))))
    }
}

impl Readiness {
    pub fn set(&self, r: Result<(), String>) {
        if let Ok(mut g) = self.0.lock() {
            *g = r;
        }
    }
    fn get(&self) -> Result<(), String> {
        self.0
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|_| Err("status lock poisoned".into()))
    }
}

// ===== gRPC =====

struct BgpService {
    tx: mpsc::Sender<Query>,
}

impl BgpService {
    async fn ask<T>(&self, q: impl FnOnce(oneshot::Sender<T>) -> Query) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(q(tx))
            .await
            .map_err(|_| Status::unavailable("birdd is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("birdd is shutting down"))
    }
}

fn parse_prefix(s: &str) -> Result<IpNet, Status> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            Status::invalid_argument(format!(
                "prefix {s:?} is not a CIDR or an address (e.g. 10.244.0.0/26)"
            ))
        })
}

fn route(r: &RouteView) -> pb::Route {
    let a = &r.attrs;
    pb::Route {
        prefix: r.prefix.to_string(),
        next_hop: a.next_hop.map(|n| n.to_string()).unwrap_or_default(),
        from_peer: r.from_peer.clone(),
        as_path: a.as_path.flat(),
        local_pref: a.effective_local_pref(),
        med: a.med.unwrap_or(0),
        origin: a.origin.to_string(),
        communities: a.communities.iter().map(|c| community_string(*c)).collect(),
        large_communities: a.large_communities.iter().map(|c| c.to_string()).collect(),
        best: r.best,
        installed: r.installed,
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[tonic::async_trait]
impl Bgp for BgpService {
    async fn list_peers(
        &self,
        _: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let peers = self.ask(Query::Peers).await?;
        let peers = peers
            .into_iter()
            .map(|p| pb::Peer {
                address: p.address.to_string(),
                port: p.port.into(),
                r#type: match p.kind {
                    PeerKind::Mesh => pb::PeerType::NodeToNodeMesh,
                    PeerKind::Global => pb::PeerType::Global,
                    PeerKind::NodeSpecific => pb::PeerType::NodeSpecific,
                } as i32,
                state: match p.state {
                    State::Idle => pb::SessionState::Idle,
                    State::Connect => pb::SessionState::Connect,
                    State::Active => pb::SessionState::Active,
                    State::OpenSent => pb::SessionState::OpenSent,
                    State::OpenConfirm => pb::SessionState::OpenConfirm,
                    State::Established => pb::SessionState::Established,
                } as i32,
                since_unix_seconds: unix_seconds(p.since),
                info: p.info,
                local_as: p.local_as,
                remote_as: p.remote_as,
                prefixes_received: p.received,
                prefixes_advertised: p.advertised,
                name: p.name,
            })
            .collect();
        Ok(Response::new(pb::ListPeersResponse { peers }))
    }

    async fn list_routes(
        &self,
        req: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let req = req.into_inner();
        let prefix = match req.prefix.as_str() {
            "" => None,
            p => Some(parse_prefix(p)?),
        };
        let best_only = req.best_only;
        let routes = self
            .ask(|reply| Query::Routes {
                prefix,
                best_only,
                reply,
            })
            .await?;
        Ok(Response::new(pb::ListRoutesResponse {
            routes: routes.iter().map(route).collect(),
        }))
    }

    async fn explain_route(
        &self,
        req: Request<pb::ExplainRouteRequest>,
    ) -> Result<Response<pb::ExplainRouteResponse>, Status> {
        let prefix = parse_prefix(&req.into_inner().prefix)?;
        let paths = self.ask(|reply| Query::Explain { prefix, reply }).await?;
        Ok(Response::new(pb::ExplainRouteResponse {
            candidates: paths
                .iter()
                .map(|(r, why)| pb::Candidate {
                    route: Some(route(r)),
                    lost_because: why.clone(),
                })
                .collect(),
        }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.ask(Query::Status).await?;
        Ok(Response::new(pb::StatusResponse {
            router_id: s.router_id.map(|r| r.to_string()).unwrap_or_default(),
            local_as: s.local_as,
            started_unix_seconds: unix_seconds(s.started),
            routes_in_kernel: s.routes_in_kernel,
        }))
    }
}

/// Serves the control API on `path` (mode 0600) until `stop`.
pub fn serve_grpc(path: &Path, tx: mpsc::Sender<Query>, stop: CancellationToken) -> Result<()> {
    let listener = calico_proto::endpoint::bind_unix(path)?;
    let path = path.to_path_buf();
    tracing::info!(socket = %path.display(), "serving the control API");
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(BgpServer::new(BgpService { tx }))
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "control API stopped");
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

// ===== HTTP =====

#[derive(Clone)]
struct HttpState {
    ready: Readiness,
    metrics: Arc<Metrics>,
}

async fn liveness() -> &'static str {
    "live\n"
}

async fn readiness(AxState(s): AxState<HttpState>) -> (StatusCode, String) {
    match s.ready.get() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics(AxState(s): AxState<HttpState>) -> String {
    s.metrics.render()
}

/// Binds `addr` now (so a port in use fails at start) and serves until `stop`.
pub async fn serve_http(
    addr: SocketAddr,
    ready: Readiness,
    metrics_: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<()> {
    let app = axum::Router::new()
        .route("/liveness", get(liveness))
        .route("/readiness", get(readiness))
        .route("/metrics", get(metrics))
        .with_state(HttpState {
            ready,
            metrics: metrics_,
        });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} for /liveness, /readiness and /metrics"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(())
}
