//! Random sequences of assign, assign-specific, release, node deletion and pool disabling on
//! the in-memory store, each made through one of two allocators sharing it (as two ipamds
//! would), so each acts on what it remembers while the other changes the data. After every
//! step: no address held by two handles, handle counts
//! agree with the blocks, nothing allocated outside a pool or inside a reservation, no
//! orphaned affinity, and the datastore holds exactly what the model says.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::ObjectMeta;
use calico_api::kinds::{IpPoolSpec, IpReservationSpec};
use calico_api::resource::{IpPool, IpReservation};
use calico_datastore::ResourceClient;
use calico_etcd_harness::backend::Backend;
use calico_ipam::{AutoAssignArgs, IpUse, Ipam, IpamError, ReleaseRequest};
use ipnet::IpNet;
use proptest::prelude::*;

const POOLS: [(&str, &str, u8); 3] = [
    ("p1", "10.90.0.0/27", 29),
    ("p2", "10.91.0.0/28", 30),
    ("v6", "fd00:90::/122", 124),
];
const RESERVED: &str = "10.90.0.8/30";

#[derive(Debug, Clone)]
enum Op {
    Assign { node: u8, n4: u8, n6: u8 },
    AssignIp { node: u8, pool: u8, offset: u8 },
    ReleaseHandle { pick: u8 },
    ReleaseIp { pick: u8 },
    DeleteNode { node: u8 },
    SetPoolDisabled { pool: u8, disabled: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0u8..4, 0u8..2).prop_map(|(node, n4, n6)| Op::Assign { node, n4, n6 }),
        2 => (0u8..3, 0u8..3, 0u8..32).prop_map(|(node, pool, offset)| Op::AssignIp { node, pool, offset }),
        2 => any::<u8>().prop_map(|pick| Op::ReleaseHandle { pick }),
        2 => any::<u8>().prop_map(|pick| Op::ReleaseIp { pick }),
        1 => (0u8..3).prop_map(|node| Op::DeleteNode { node }),
        1 => (0u8..3, any::<bool>()).prop_map(|(pool, disabled)| Op::SetPoolDisabled { pool, disabled }),
    ]
}

struct World {
    /// Two allocators over one datastore; `ipam` is the one taking the current step.
    ipam: Ipam,
    other: Ipam,
    resources: ResourceClient,
    /// Address → handle, as the model expects the datastore to hold.
    model: BTreeMap<IpAddr, String>,
    disabled: [bool; 3],
    next_handle: usize,
}

impl World {
    async fn new() -> World {
        let b = Backend::memory();
        let resources = ResourceClient::new(b.ds());
        for (name, cidr, bs) in POOLS {
            resources
                .create(IpPool::new(
                    ObjectMeta::named(name),
                    IpPoolSpec {
                        cidr: cidr.into(),
                        block_size: Some(i64::from(bs)),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
        }
        resources
            .create(IpReservation::new(
                ObjectMeta::named("r"),
                IpReservationSpec {
                    reserved_cidrs: vec![RESERVED.into()],
                },
            ))
            .await
            .unwrap();
        World {
            ipam: Ipam::new(b.ds()),
            other: Ipam::new(b.ds()),
            resources,
            model: BTreeMap::new(),
            disabled: [false; 3],
            next_handle: 0,
        }
    }

    fn pool_of(ip: IpAddr) -> Option<usize> {
        POOLS
            .iter()
            .position(|(_, c, _)| c.parse::<IpNet>().unwrap().contains(&ip))
    }

    fn record(&mut self, ips: &[IpNet], handle: &str) -> Result<(), TestCaseError> {
        for ip in ips {
            let a = ip.addr();
            let p = Self::pool_of(a);
            prop_assert!(p.is_some(), "{a} is outside every pool");
            prop_assert!(!self.disabled[p.unwrap()], "{a} came from a disabled pool");
            prop_assert!(
                !RESERVED.parse::<IpNet>().unwrap().contains(&a),
                "{a} is reserved"
            );
            let prev = self.model.insert(a, handle.to_string());
            prop_assert!(
                prev.is_none(),
                "{a} given to {handle} while held by {prev:?}"
            );
        }
        Ok(())
    }

    async fn step(&mut self, op: &Op, switch: bool) -> Result<(), TestCaseError> {
        if switch {
            std::mem::swap(&mut self.ipam, &mut self.other);
        }
        match *op {
            Op::Assign { node, n4, n6 } => {
                if n4 == 0 && n6 == 0 {
                    return Ok(());
                }
                let handle = format!("net.h{}", self.next_handle);
                self.next_handle += 1;
                let args =
                    AutoAssignArgs::new(&format!("node{node}"), &handle, n4.into(), n6.into());
                match self.ipam.auto_assign(&args).await {
                    Ok((v4, v6)) => {
                        self.record(&v4.ips, &handle)?;
                        self.record(&v6.ips, &handle)?;
                    }
                    // Every pool of a family may be disabled.
                    Err(IpamError::NoPools { .. }) => {}
                    Err(e) => prop_assert!(false, "auto_assign: {e}"),
                }
            }
            Op::AssignIp { node, pool, offset } => {
                let (_, cidr, _) = POOLS[usize::from(pool)];
                let net: IpNet = cidr.parse().unwrap();
                let size = 1u128 << (net.max_prefix_len() - net.prefix_len());
                let off = u128::from(offset) % size;
                let ip = match net.network() {
                    IpAddr::V4(a) => IpAddr::V4((u32::from(a) + off as u32).into()),
                    IpAddr::V6(a) => IpAddr::V6((u128::from(a) + off).into()),
                };
                let handle = format!("net.h{}", self.next_handle);
                self.next_handle += 1;
                let r = self
                    .ipam
                    .assign_ip(
                        ip,
                        &handle,
                        &BTreeMap::new(),
                        &format!("node{node}"),
                        IpUse::Workload,
                    )
                    .await;
                let reserved = RESERVED.parse::<IpNet>().unwrap().contains(&ip);
                match r {
                    Ok(got) => self.record(&[got], &handle)?,
                    Err(IpamError::InUse { .. }) => prop_assert!(self.model.contains_key(&ip)),
                    Err(IpamError::Reserved { .. }) => prop_assert!(reserved),
                    Err(IpamError::NotInAnyPool { .. }) => {
                        prop_assert!(self.disabled[usize::from(pool)])
                    }
                    Err(e) => prop_assert!(false, "assign_ip {ip}: {e}"),
                }
            }
            Op::ReleaseHandle { pick } => {
                let handles: Vec<String> = self
                    .model
                    .values()
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if let Some(h) = handles.get(usize::from(pick) % handles.len().max(1)) {
                    let released = self.ipam.release_by_handle(h).await.unwrap();
                    let before = self.model.len();
                    self.model.retain(|_, held| held != h);
                    prop_assert_eq!(released.len(), before - self.model.len());
                }
            }
            Op::ReleaseIp { pick } => {
                let ips: Vec<IpAddr> = self.model.keys().copied().collect();
                if let Some(ip) = ips.get(usize::from(pick) % ips.len().max(1)) {
                    let out = self
                        .ipam
                        .release_ips(&[ReleaseRequest {
                            ip: *ip,
                            handle: None,
                            sequence_number: None,
                        }])
                        .await
                        .unwrap();
                    prop_assert_eq!(out.released, vec![*ip]);
                    self.model.remove(ip);
                }
            }
            Op::DeleteNode { node } => {
                self.ipam
                    .release_host_affinities(&format!("node{node}"), false)
                    .await
                    .unwrap();
            }
            Op::SetPoolDisabled { pool, disabled } => {
                let name = POOLS[usize::from(pool)].0;
                let mut p: IpPool = self.resources.get(None, name).await.unwrap();
                p.spec.disabled = disabled;
                self.resources.update(p).await.unwrap();
                self.disabled[usize::from(pool)] = disabled;
            }
        }
        Ok(())
    }

    async fn invariants(&self) -> Result<(), TestCaseError> {
        let report = self.ipam.check(None).await.unwrap();
        prop_assert!(report.problems.is_empty(), "{:#?}", report.problems);
        let stored: BTreeMap<IpAddr, String> = self
            .ipam
            .allocations()
            .await
            .unwrap()
            .into_iter()
            .map(|(ip, _, a)| (ip, a.handle().unwrap().to_string()))
            .collect();
        prop_assert_eq!(&stored, &self.model);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_operations_keeps_ipam_consistent(
        ops in prop::collection::vec((op(), any::<bool>()), 1..40)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut w = World::new().await;
            for (op, switch) in &ops {
                w.step(op, *switch).await?;
                w.invariants().await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
