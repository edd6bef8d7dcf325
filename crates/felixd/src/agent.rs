//! The local agent API on felixd's unix socket: the CNI plugin announces the endpoints it
//! wires (so felixd need not wait for the datastore round trip) and may wait until their
//! policy is in the kernel; operators read felixd's status.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use calico_api::resource::WorkloadEndpoint;
use calico_proto::agent::{self as pb, agent_server::Agent};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status as RpcStatus};

use crate::calc::EndpointId;

/// What the agent asks the main loop to do.
#[derive(Debug)]
pub enum AgentCmd {
    /// A workload endpoint the CNI plugin just wrote.
    Put(Box<WorkloadEndpoint>, oneshot::Sender<()>),
    /// A workload endpoint the CNI plugin just removed.
    Remove { namespace: String, name: String },
}

/// felixd's state as the agent, health checks and status report it.
#[derive(Debug)]
pub struct Status {
    pub in_sync: AtomicBool,
    pub programmed_once: AtomicBool,
    pub dataplane_error: Mutex<Option<String>>,
    /// Something the pools need that this node cannot do (IPIP without the kernel module).
    pub encap_problem: Mutex<Option<String>>,
    /// Local endpoints felixd knows, and those whose current state is in the kernel.
    pub known: Mutex<HashSet<EndpointId>>,
    pub programmed: Mutex<HashSet<EndpointId>>,
    /// Bumped after every apply, so waiters look again.
    pub applied: watch::Sender<u64>,
    pub local_endpoints: AtomicU64,
    pub active_policies: AtomicU64,
    /// When the main loop last went round (ms since the epoch), for liveness.
    pub heartbeat_ms: AtomicU64,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            in_sync: AtomicBool::new(false),
            programmed_once: AtomicBool::new(false),
            dataplane_error: Mutex::new(None),
            encap_problem: Mutex::new(None),
            known: Mutex::new(HashSet::new()),
            programmed: Mutex::new(HashSet::new()),
            applied: watch::channel(0).0,
            local_endpoints: AtomicU64::new(0),
            active_policies: AtomicU64::new(0),
            heartbeat_ms: AtomicU64::new(now_ms()),
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// How long the main loop may go without a heartbeat before felixd counts as not live.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(90);

impl Status {
    pub fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn live(&self) -> bool {
        now_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed))
            < LIVENESS_TIMEOUT.as_millis() as u64
    }

    /// Ready once in sync with the datastore and the kernel programmed, while the last
    /// apply succeeded.
    pub fn ready(&self) -> (bool, String) {
        if !self.in_sync.load(Ordering::Relaxed) {
            return (false, "not yet in sync with the datastore".into());
        }
        if !self.programmed_once.load(Ordering::Relaxed) {
            return (false, "the dataplane has not been programmed yet".into());
        }
        if let Some(e) = self
            .dataplane_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return (false, format!("the last dataplane update failed: {e}"));
        }
        if let Some(e) = self
            .encap_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return (false, e.clone());
        }
        (true, "ready".into())
    }

    fn state_of(&self, id: &EndpointId) -> pb::EndpointState {
        let lock = |m: &Mutex<HashSet<EndpointId>>| {
            m.lock().unwrap_or_else(|e| e.into_inner()).contains(id)
        };
        if lock(&self.programmed) {
            pb::EndpointState::Programmed
        } else if lock(&self.known) {
            pb::EndpointState::Pending
        } else {
            pb::EndpointState::Unknown
        }
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct AgentService {
    pub hostname: String,
    pub tx: mpsc::Sender<AgentCmd>,
    pub status: std::sync::Arc<Status>,
}

fn bad(what: impl Into<String>) -> RpcStatus {
    RpcStatus::invalid_argument(what.into())
}

/// The longest a caller may wait in one WaitProgrammed.
const MAX_WAIT: Duration = Duration::from_secs(300);

#[tonic::async_trait]
impl Agent for AgentService {
    async fn endpoint_added(
        &self,
        req: Request<pb::EndpointAddedRequest>,
    ) -> Result<Response<pb::EndpointAddedResponse>, RpcStatus> {
        let r = req.into_inner();
        let wep: WorkloadEndpoint = serde_json::from_slice(&r.workload_endpoint).map_err(|e| {
            bad(format!(
                "workload_endpoint is not a projectcalico.org/v3 WorkloadEndpoint in JSON: {e}"
            ))
        })?;
        if wep.metadata.name != r.name || wep.metadata.namespace_str() != r.namespace {
            return Err(bad(format!(
                "the request names {}/{} but the endpoint is {}/{}",
                r.namespace,
                r.name,
                wep.metadata.namespace_str(),
                wep.metadata.name
            )));
        }
        if wep.spec.node != self.hostname {
            return Err(bad(format!(
                "endpoint {}/{} is for node {:?}; this felixd serves {:?}",
                r.namespace, r.name, wep.spec.node, self.hostname
            )));
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(AgentCmd::Put(Box::new(wep), done))
            .await
            .map_err(|_| RpcStatus::unavailable("felixd is shutting down"))?;
        let _ = wait.await;
        Ok(Response::new(pb::EndpointAddedResponse {}))
    }

    async fn endpoint_removed(
        &self,
        req: Request<pb::EndpointRemovedRequest>,
    ) -> Result<Response<pb::EndpointRemovedResponse>, RpcStatus> {
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(bad("name is required"));
        }
        self.tx
            .send(AgentCmd::Remove {
                namespace: r.namespace,
                name: r.name,
            })
            .await
            .map_err(|_| RpcStatus::unavailable("felixd is shutting down"))?;
        Ok(Response::new(pb::EndpointRemovedResponse {}))
    }

    async fn wait_programmed(
        &self,
        req: Request<pb::WaitProgrammedRequest>,
    ) -> Result<Response<pb::WaitProgrammedResponse>, RpcStatus> {
        let r = req.into_inner();
        let id = EndpointId::Workload {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        };
        let timeout = Duration::from_millis(u64::from(r.timeout_millis)).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut applied = self.status.applied.subscribe();
        loop {
            let state = self.status.state_of(&id);
            if state == pb::EndpointState::Programmed {
                return Ok(Response::new(pb::WaitProgrammedResponse {
                    state: state as i32,
                    detail: String::new(),
                }));
            }
            let changed = tokio::time::timeout_at(deadline, applied.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                let (_, why) = self.status.ready();
                let detail = match state {
                    pb::EndpointState::Pending => format!(
                        "endpoint {}/{} is known but not yet programmed ({why})",
                        r.namespace, r.name
                    ),
                    _ => format!(
                        "felixd does not know endpoint {}/{} on this node",
                        r.namespace, r.name
                    ),
                };
                return Ok(Response::new(pb::WaitProgrammedResponse {
                    state: state as i32,
                    detail,
                }));
            }
        }
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, RpcStatus> {
        let s = &self.status;
        let (ready, detail) = s.ready();
        Ok(Response::new(pb::StatusResponse {
            live: s.live(),
            ready,
            components: vec![pb::ComponentHealth {
                name: "dataplane".into(),
                live: s.live(),
                ready,
                detail,
            }],
            local_endpoints: s.local_endpoints.load(Ordering::Relaxed),
            active_policies: s.active_policies.load(Ordering::Relaxed),
            in_sync: s.in_sync.load(Ordering::Relaxed),
        }))
    }
}
