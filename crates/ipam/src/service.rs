//! The `calico.ipam.v1.Ipam` gRPC service: request checking, the call into the allocator,
//! and one mapping from IPAM errors to gRPC statuses.
//!
//! AutoAssign is all-or-nothing here: when fewer addresses than asked for can be had, what
//! was taken is given back and the call fails with RESOURCE_EXHAUSTED, so a client that
//! gives up never leaves an allocation behind.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use calico_proto::ipam as pb;
use tonic::{Code, Request, Response, Status};

use crate::allocator::{AutoAssignArgs, Ipam};
use crate::check::ProblemKind;
use crate::metrics::Metrics;
use crate::server::Health;
use crate::{IpUse, IpamError, ReleaseRequest};

/// The service, for one node.
#[derive(Debug, Clone)]
pub struct IpamService {
    ipam: Ipam,
    node: String,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The one place IPAM errors become gRPC statuses.
pub fn to_status(e: &IpamError) -> Status {
    let code = match e {
        IpamError::InvalidRequest { .. }
        | IpamError::UnknownPool { .. }
        | IpamError::NotInAnyPool { .. }
        | IpamError::Reserved { .. }
        | IpamError::UseNotAllowed { .. } => Code::InvalidArgument,
        IpamError::InUse { .. } => Code::AlreadyExists,
        IpamError::PoolDisabled { .. }
        | IpamError::NoPools { .. }
        | IpamError::NoPoolsForUse { .. }
        | IpamError::BlockLimit { .. }
        | IpamError::StrictAffinity { .. }
        | IpamError::InvalidConfig { .. }
        | IpamError::ReleaseRefused { .. } => Code::FailedPrecondition,
        IpamError::TooManyRetries { .. } => Code::Aborted,
        IpamError::Corrupt { .. } => Code::DataLoss,
        IpamError::Internal { .. } => Code::Internal,
        IpamError::Datastore(d) if d.is_transient() => Code::Unavailable,
        IpamError::Datastore(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// Runs a request that writes to the end even if the client goes away (a cancelled call
/// would otherwise stop between writes, leaving what it took without the give-back).
async fn finish<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("the request failed: {e}"))))
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid {field}: {reason}"))
}

fn parse_use(v: i32) -> Result<IpUse, Status> {
    match pb::IpUse::try_from(v) {
        Ok(pb::IpUse::Workload) => Ok(IpUse::Workload),
        Ok(pb::IpUse::Tunnel) => Ok(IpUse::Tunnel),
        Ok(pb::IpUse::LoadBalancer) => Ok(IpUse::LoadBalancer),
        Err(_) => Err(invalid(
            "use",
            format!("{v} is not one of WORKLOAD, TUNNEL, LOAD_BALANCER"),
        )),
    }
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr, Status> {
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<ipnet::IpNet>().map(|n| n.addr()))
        .map_err(|_| invalid(field, format!("{s:?} is not an IP address")))
}

impl IpamService {
    pub fn new(
        ipam: Ipam,
        node: String,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> IpamService {
        IpamService {
            ipam,
            node,
            metrics,
            health,
        }
    }

    fn host<'a>(&'a self, requested: &'a str) -> &'a str {
        if requested.is_empty() {
            &self.node
        } else {
            requested
        }
    }

    /// Records the outcome and latency of a call.
    fn observe<T>(&self, method: &str, started: Instant, r: &Result<T, Status>) {
        let code = match r {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.metrics
            .requests
            .with_label_values(&[method, &code])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.sync_stats(self.ipam.stats());
    }

    async fn auto_assign_inner(
        &self,
        r: pb::AutoAssignRequest,
    ) -> Result<pb::AutoAssignResponse, Status> {
        let args = AutoAssignArgs {
            num_v4: usize::try_from(r.num_ipv4).map_err(|e| invalid("num_ipv4", e))?,
            num_v6: usize::try_from(r.num_ipv6).map_err(|e| invalid("num_ipv6", e))?,
            handle: Some(r.handle_id.clone()),
            attrs: r.attributes.into_iter().collect::<BTreeMap<_, _>>(),
            ipv4_pools: r.ipv4_pools,
            ipv6_pools: r.ipv6_pools,
            host: self.host(&r.hostname).to_string(),
            max_blocks_per_host: r.max_blocks_per_host,
            use_: parse_use(r.r#use)?,
            namespace_labels: if r.namespace.is_empty() {
                None
            } else {
                Some(
                    self.ipam
                        .namespace_labels(&r.namespace)
                        .await
                        .map_err(|e| to_status(&e))?,
                )
            },
        };
        let (v4, v6) = self
            .ipam
            .auto_assign(&args)
            .await
            .map_err(|e| to_status(&e))?;
        let short = [v4.shortfall(4), v6.shortfall(6)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        if !short.is_empty() {
            let taken: Vec<ReleaseRequest> = v4
                .ips
                .iter()
                .chain(v6.ips.iter())
                .map(|n| ReleaseRequest {
                    ip: n.addr(),
                    handle: Some(r.handle_id.clone()),
                    sequence_number: None,
                })
                .collect();
            if !taken.is_empty()
                && let Err(e) = self.ipam.release_ips(&taken).await
            {
                tracing::warn!(handle = %r.handle_id, error = %e, "could not give back a partial assignment");
            }
            return Err(Status::resource_exhausted(short.join("; ")));
        }
        Ok(pb::AutoAssignResponse {
            ipv4: v4.ips.iter().map(ToString::to_string).collect(),
            ipv6: v6.ips.iter().map(ToString::to_string).collect(),
        })
    }
}

#[tonic::async_trait]
impl pb::ipam_server::Ipam for IpamService {
    async fn auto_assign(
        &self,
        req: Request<pb::AutoAssignRequest>,
    ) -> Result<Response<pb::AutoAssignResponse>, Status> {
        let t = Instant::now();
        let svc = self.clone();
        let r = finish(async move { svc.auto_assign_inner(req.into_inner()).await }).await;
        self.observe("AutoAssign", t, &r);
        r.map(Response::new)
    }

    async fn assign_ip(
        &self,
        req: Request<pb::AssignIpRequest>,
    ) -> Result<Response<pb::AssignIpResponse>, Status> {
        let t = Instant::now();
        let svc = self.clone();
        let r = finish(async move {
            let r = req.into_inner();
            let ip = parse_ip("ip", &r.ip)?;
            let use_ = parse_use(r.r#use)?;
            let attrs: BTreeMap<String, String> = r.attributes.into_iter().collect();
            let got = svc
                .ipam
                .assign_ip(ip, &r.handle_id, &attrs, svc.host(&r.hostname), use_)
                .await
                .map_err(|e| to_status(&e))?;
            Ok(pb::AssignIpResponse {
                ip: got.to_string(),
            })
        })
        .await;
        self.observe("AssignIP", t, &r);
        r.map(Response::new)
    }

    async fn release_by_handle(
        &self,
        req: Request<pb::ReleaseByHandleRequest>,
    ) -> Result<Response<pb::ReleaseByHandleResponse>, Status> {
        let t = Instant::now();
        let svc = self.clone();
        let r = finish(async move {
            let handle = req.into_inner().handle_id;
            let released = svc
                .ipam
                .release_by_handle(&handle)
                .await
                .map_err(|e| to_status(&e))?;
            Ok(pb::ReleaseByHandleResponse {
                released: released.iter().map(ToString::to_string).collect(),
            })
        })
        .await;
        self.observe("ReleaseByHandle", t, &r);
        r.map(Response::new)
    }

    async fn release_i_ps(
        &self,
        req: Request<pb::ReleaseIPsRequest>,
    ) -> Result<Response<pb::ReleaseIPsResponse>, Status> {
        let t = Instant::now();
        let svc = self.clone();
        let r = finish(async move {
            let reqs = req.into_inner().ips;
            if reqs.is_empty() {
                return Err(invalid("ips", "list at least one address"));
            }
            let mut parsed = Vec::with_capacity(reqs.len());
            for (i, o) in reqs.into_iter().enumerate() {
                parsed.push(ReleaseRequest {
                    ip: parse_ip(&format!("ips[{i}].ip"), &o.ip)?,
                    handle: (!o.handle_id.is_empty()).then_some(o.handle_id),
                    sequence_number: o.sequence_number,
                });
            }
            let out = svc
                .ipam
                .release_ips(&parsed)
                .await
                .map_err(|e| to_status(&e))?;
            Ok(pb::ReleaseIPsResponse {
                released: out.released.iter().map(ToString::to_string).collect(),
                unallocated: out.unallocated.iter().map(ToString::to_string).collect(),
            })
        })
        .await;
        self.observe("ReleaseIPs", t, &r);
        r.map(Response::new)
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let t = Instant::now();
        let r = async {
            let with_blocks = req.into_inner().include_blocks;
            let u = self.ipam.usage().await.map_err(|e| to_status(&e))?;
            self.metrics.set_usage(&u);
            let n = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
            Ok(pb::UsageResponse {
                pools: u
                    .pools
                    .iter()
                    .map(|p| pb::PoolUsage {
                        name: p.name.clone(),
                        cidr: p.cidr.to_string(),
                        capacity: n(p.capacity),
                        in_use: n(p.in_use),
                        reserved: n(p.reserved),
                        available: n(p.available),
                    })
                    .collect(),
                blocks: if with_blocks {
                    u.blocks
                        .iter()
                        .map(|b| pb::BlockUsage {
                            cidr: b.cidr.to_string(),
                            pool: b.pool.clone(),
                            affinity: b.affinity.clone().unwrap_or_default(),
                            capacity: n(b.capacity),
                            in_use: n(b.in_use),
                            reserved: n(b.reserved),
                            available: n(b.available),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            })
        }
        .await;
        self.observe("Usage", t, &r);
        r.map(Response::new)
    }

    async fn check(
        &self,
        _req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let t = Instant::now();
        let r = async {
            let report = self.ipam.check(None).await.map_err(|e| to_status(&e))?;
            Ok(pb::CheckResponse {
                allocations_checked: report.allocations_checked as u64,
                problems: report
                    .problems
                    .into_iter()
                    .map(|p| pb::Problem {
                        kind: match p.kind {
                            ProblemKind::Leaked => pb::ProblemKind::Leaked,
                            ProblemKind::Duplicate => pb::ProblemKind::Duplicate,
                            ProblemKind::OutsidePools => pb::ProblemKind::OutsidePools,
                            ProblemKind::BadHandle => pb::ProblemKind::BadHandle,
                            ProblemKind::OrphanedAffinity => pb::ProblemKind::OrphanedAffinity,
                            ProblemKind::CorruptBlock => pb::ProblemKind::CorruptBlock,
                        } as i32,
                        ip: p.ip.map(|i| i.to_string()).unwrap_or_default(),
                        handle_id: p.handle.unwrap_or_default(),
                        block: p.block.map(|b| b.to_string()).unwrap_or_default(),
                        detail: p.detail,
                    })
                    .collect(),
            })
        }
        .await;
        self.observe("Check", t, &r);
        r.map(Response::new)
    }

    async fn ips_by_handle(
        &self,
        req: Request<pb::IpsByHandleRequest>,
    ) -> Result<Response<pb::IpsByHandleResponse>, Status> {
        let t = Instant::now();
        let r = async {
            let handle = req.into_inner().handle_id;
            crate::allocator::check_handle(&handle).map_err(|e| to_status(&e))?;
            let ips = self
                .ipam
                .ips_by_handle(&handle)
                .await
                .map_err(|e| to_status(&e))?;
            Ok(pb::IpsByHandleResponse {
                ips: ips.iter().map(ToString::to_string).collect(),
            })
        }
        .await;
        self.observe("IpsByHandle", t, &r);
        r.map(Response::new)
    }

    async fn ready(
        &self,
        _req: Request<pb::ReadyRequest>,
    ) -> Result<Response<pb::ReadyResponse>, Status> {
        use std::sync::atomic::Ordering;
        let datastore = self.health.datastore_ok.load(Ordering::Relaxed);
        Ok(Response::new(pb::ReadyResponse {
            ready: datastore,
            detail: if datastore {
                String::new()
            } else {
                "ipamd cannot reach its datastore".into()
            },
        }))
    }

    async fn release_stale(
        &self,
        req: Request<pb::ReleaseStaleRequest>,
    ) -> Result<Response<pb::ReleaseStaleResponse>, Status> {
        let t = Instant::now();
        let svc = self.clone();
        let r = finish(async move {
            let r = req.into_inner();
            if r.network.is_empty()
                || !r
                    .network
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                return Err(invalid(
                    "network",
                    format!("{:?} is not a CNI network name", r.network),
                ));
            }
            let keep = r.keep_container_ids.into_iter().collect();
            let host = svc.host(&r.hostname).to_string();
            let released = svc
                .ipam
                .release_stale(&r.network, &host, &keep)
                .await
                .map_err(|e| to_status(&e))?;
            Ok(pb::ReleaseStaleResponse {
                released_handles: released.iter().map(|(h, _)| h.clone()).collect(),
                released: released
                    .iter()
                    .flat_map(|(_, ips)| ips.iter().map(ToString::to_string))
                    .collect(),
            })
        })
        .await;
        self.observe("ReleaseStale", t, &r);
        r.map(Response::new)
    }
}
