//! Which pools a request may use, and the order a node walks a pool's blocks in.
//!
//! Pool choice follows Calico (`determinePools`, `filterPoolsByUse`): enabled pools of the
//! requested family; pools the caller names are used as they are (their selectors are
//! ignored, as Calico does for compatibility); otherwise every `Automatic` pool whose
//! `nodeSelector` matches the node (and `namespaceSelector`, the namespace); then only pools
//! that allow the intended use.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::Selector;
use calico_api::kinds::{AllowedUse, AssignmentMode, IpPoolSpec};
use calico_api::resource::IpPool;
use ipnet::IpNet;

use crate::IpamError;

/// What addresses are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

impl IpUse {
    fn allowed(self) -> AllowedUse {
        match self {
            IpUse::Workload => AllowedUse::Workload,
            IpUse::Tunnel => AllowedUse::Tunnel,
            IpUse::LoadBalancer => AllowedUse::LoadBalancer,
        }
    }
}

/// A pool ready for allocation decisions.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub net: IpNet,
    pub block_size: u8,
    pub spec: IpPoolSpec,
}

impl Pool {
    /// Reads an IPPool resource; `None` if its CIDR does not parse (validation prevents that).
    pub fn from_resource(p: &IpPool) -> Option<Pool> {
        let net = p.spec.network()?.trunc();
        Some(Pool {
            name: p.metadata.name.clone(),
            net,
            block_size: p.spec.effective_block_size(),
            spec: p.spec.clone(),
        })
    }

    pub fn version(&self) -> u8 {
        calico_api::names::ip_version(&self.net)
    }

    /// The block (of this pool's block size) an address falls in.
    pub fn block_for(&self, ip: IpAddr) -> IpNet {
        IpNet::new(ip, self.block_size)
            .map(|n| n.trunc())
            .unwrap_or(self.net)
    }

    /// How many blocks the pool holds (saturating for absurdly large IPv6 pools).
    pub fn num_blocks(&self) -> u128 {
        let bits = u32::from(self.block_size.saturating_sub(self.net.prefix_len()));
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// The `i`-th block of the pool.
    pub fn block(&self, i: u128) -> IpNet {
        let shift = u32::from(self.net.max_prefix_len() - self.block_size);
        let offset = i.checked_shl(shift).unwrap_or(0);
        let addr = match self.net.network() {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(offset as u32)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(offset)).into()),
        };
        IpNet::new(addr, self.block_size).unwrap_or(self.net)
    }

    /// The pool's blocks in the order a host tries them: from a start point derived from the
    /// host name, wrapping around, so that different hosts spread over the pool while one
    /// host always prefers the same blocks (Calico seeds its random start the same way).
    pub fn blocks_from(&self, host: &str) -> impl Iterator<Item = IpNet> + '_ {
        let n = self.num_blocks();
        let start = u128::from(fnv1_32(host.as_bytes())) % n.max(1);
        let mut taken = 0u128;
        std::iter::from_fn(move || {
            if taken >= n {
                return None;
            }
            let i = (start + taken) % n;
            taken += 1;
            Some(self.block(i))
        })
    }

    fn matches(
        &self,
        node_labels: &BTreeMap<String, String>,
        ns: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let node_ok = self.spec.node_selector.trim().is_empty()
            || Selector::parse(&self.spec.node_selector).is_ok_and(|s| s.evaluate(node_labels));
        let ns_ok = self.spec.namespace_selector.trim().is_empty()
            || ns.is_some_and(|l| {
                Selector::parse(&self.spec.namespace_selector).is_ok_and(|s| s.evaluate(l))
            });
        node_ok && ns_ok
    }
}

/// FNV-1 (32 bit), the hash Calico seeds its per-host block order with.
pub fn fnv1_32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(*b);
    }
    h
}

/// The pools a request may allocate from, in the order they are tried.
pub fn select_pools(
    all: &[Pool],
    version: u8,
    requested: &[String],
    node: &str,
    node_labels: &BTreeMap<String, String>,
    namespace_labels: Option<&BTreeMap<String, String>>,
    use_: IpUse,
) -> Result<Vec<Pool>, IpamError> {
    let chosen: Vec<Pool> = if requested.is_empty() {
        all.iter()
            .filter(|p| p.version() == version && !p.spec.disabled)
            .filter(|p| p.spec.assignment_mode.unwrap_or_default() == AssignmentMode::Automatic)
            .filter(|p| p.matches(node_labels, namespace_labels))
            .cloned()
            .collect()
    } else {
        let mut out = Vec::new();
        for r in requested {
            let pool = all
                .iter()
                .find(|p| p.name == *r || r.parse::<IpNet>().is_ok_and(|n| n.trunc() == p.net))
                .ok_or_else(|| IpamError::UnknownPool { pool: r.clone() })?;
            if pool.version() != version {
                return Err(IpamError::InvalidRequest {
                    field: if version == 4 {
                        "ipv4_pools"
                    } else {
                        "ipv6_pools"
                    },
                    reason: format!(
                        "pool {} ({}) is not an IPv{version} pool",
                        pool.name, pool.net
                    ),
                });
            }
            if pool.spec.disabled {
                return Err(IpamError::PoolDisabled {
                    pool: pool.name.clone(),
                });
            }
            out.push(pool.clone());
        }
        out
    };
    if chosen.is_empty() {
        return Err(IpamError::NoPools {
            version,
            node: node.to_string(),
        });
    }
    let usable: Vec<Pool> = chosen
        .into_iter()
        .filter(|p| p.spec.uses().contains(&use_.allowed()))
        .collect();
    if usable.is_empty() {
        return Err(IpamError::NoPoolsForUse {
            version,
            node: node.to_string(),
            use_: format!("{use_:?}"),
        });
    }
    Ok(usable)
}

/// IPReservations, as a set of networks addresses must stay out of.
#[derive(Debug, Clone, Default)]
pub struct Reservations {
    nets: Vec<IpNet>,
}

impl Reservations {
    pub fn new(nets: Vec<IpNet>) -> Reservations {
        Reservations { nets }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether every address of `block` is reserved.
    pub fn covers(&self, block: &IpNet) -> bool {
        self.nets
            .iter()
            .any(|n| n.contains(&block.network()) && n.prefix_len() <= block.prefix_len())
    }

    /// How much of `pool` is reserved, and how much is free outside its `blocks`: over
    /// the pool's whole CIDR, space no block has been carved from included (Calico's
    /// `countPoolSpace`). Overlapping reservations count once.
    pub fn pool_space(&self, pool: &IpNet, blocks: &[IpNet]) -> PoolSpace {
        let same_family = |n: &&IpNet| n.addr().is_ipv4() == pool.addr().is_ipv4();
        let pool_r = vec![range(pool)];
        let reserved = intersect(
            &merged(self.nets.iter().filter(same_family).map(range).collect()),
            &pool_r,
        );
        let blocked = intersect(
            &merged(blocks.iter().filter(same_family).map(range).collect()),
            &pool_r,
        );
        let capacity = count(&pool_r);
        let reserved_n = count(&reserved);
        let outside = capacity.saturating_sub(count(&blocked));
        let reserved_outside = reserved_n.saturating_sub(count(&intersect(&reserved, &blocked)));
        PoolSpace {
            reserved: reserved_n,
            free_outside_blocks: outside.saturating_sub(reserved_outside),
        }
    }
}

/// A pool's reserved addresses and the free ones outside its blocks
/// ([`Reservations::pool_space`]).
#[derive(Debug, PartialEq, Eq)]
pub struct PoolSpace {
    pub reserved: u128,
    pub free_outside_blocks: u128,
}

/// Inclusive address ranges of one family, as integers.
type Ranges = Vec<(u128, u128)>;

fn range(n: &IpNet) -> (u128, u128) {
    match n {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Sorted, non-overlapping, non-adjacent.
fn merged(mut r: Ranges) -> Ranges {
    r.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some((_, end)) if a <= end.saturating_add(1) => *end = (*end).max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn intersect(x: &Ranges, y: &Ranges) -> Ranges {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < x.len() && j < y.len() {
        let (a, b) = (x[i].0.max(y[j].0), x[i].1.min(y[j].1));
        if a <= b {
            out.push((a, b));
        }
        if x[i].1 < y[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn count(r: &Ranges) -> u128 {
    r.iter()
        .map(|(a, b)| (b - a).saturating_add(1))
        .fold(0u128, u128::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_api::ObjectMeta;

    fn pool(name: &str, cidr: &str, f: impl FnOnce(&mut IpPoolSpec)) -> Pool {
        let mut p = IpPool::new(
            ObjectMeta::named(name),
            IpPoolSpec {
                cidr: cidr.into(),
                ..Default::default()
            },
        );
        calico_api::Resource::apply_defaults(&mut p);
        f(&mut p.spec);
        Pool::from_resource(&p).unwrap()
    }

    #[test]
    fn fnv1_matches_gos_hash_fnv_new32() {
        // FNV-1 (what Go's fnv.New32 computes, not FNV-1a) reference vectors.
        assert_eq!(fnv1_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
    }

    #[test]
    fn a_host_walks_every_block_once_from_its_own_start() {
        let p = pool("p", "10.0.0.0/24", |s| s.block_size = Some(26));
        let a: Vec<_> = p.blocks_from("node-a").collect();
        let b: Vec<_> = p.blocks_from("node-b").collect();
        assert_eq!(a.len(), 4);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![
                "10.0.0.0/26".parse::<IpNet>().unwrap(),
                "10.0.0.64/26".parse().unwrap(),
                "10.0.0.128/26".parse().unwrap(),
                "10.0.0.192/26".parse().unwrap(),
            ]
        );
        assert_eq!(
            a,
            p.blocks_from("node-a").collect::<Vec<_>>(),
            "stable per host"
        );
        let mut sb = b.clone();
        sb.sort();
        assert_eq!(sb, sorted);
        assert_eq!(
            p.block_for("10.0.0.130".parse().unwrap()),
            "10.0.0.128/26".parse::<IpNet>().unwrap()
        );
        let v6 = pool("p6", "fd00::/48", |_| {});
        assert_eq!(v6.num_blocks(), 1 << 74);
        assert_eq!(v6.blocks_from("n").take(3).count(), 3);
    }

    #[test]
    fn selection_follows_selectors_modes_uses_and_requests() {
        let pools = vec![
            pool("a", "10.0.0.0/16", |s| {
                s.node_selector = "zone == 'a'".into()
            }),
            pool("b", "10.1.0.0/16", |_| {}),
            pool("manual", "10.2.0.0/16", |s| {
                s.assignment_mode = Some(AssignmentMode::Manual)
            }),
            pool("off", "10.3.0.0/16", |s| s.disabled = true),
            pool("lb", "10.4.0.0/16", |s| {
                s.allowed_uses = vec![AllowedUse::LoadBalancer]
            }),
            pool("v6", "fd00::/48", |_| {}),
        ];
        let zone_a = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        let names = |r: Result<Vec<Pool>, IpamError>| {
            r.unwrap().into_iter().map(|p| p.name).collect::<Vec<_>>()
        };
        assert_eq!(
            names(select_pools(
                &pools,
                4,
                &[],
                "n",
                &zone_a,
                None,
                IpUse::Workload
            )),
            ["a", "b"]
        );
        assert_eq!(
            names(select_pools(
                &pools,
                4,
                &[],
                "n",
                &BTreeMap::new(),
                None,
                IpUse::Workload
            )),
            ["b"]
        );
        assert_eq!(
            names(select_pools(
                &pools,
                6,
                &[],
                "n",
                &BTreeMap::new(),
                None,
                IpUse::Workload
            )),
            ["v6"]
        );
        // Named pools are used as they are, selectors and mode ignored.
        assert_eq!(
            names(select_pools(
                &pools,
                4,
                &["manual".into(), "10.0.0.0/16".into()],
                "n",
                &BTreeMap::new(),
                None,
                IpUse::Workload
            )),
            ["manual", "a"]
        );
        assert!(matches!(
            select_pools(
                &pools,
                4,
                &["nope".into()],
                "n",
                &BTreeMap::new(),
                None,
                IpUse::Workload
            ),
            Err(IpamError::UnknownPool { .. })
        ));
        assert!(matches!(
            select_pools(
                &pools,
                4,
                &["off".into()],
                "n",
                &BTreeMap::new(),
                None,
                IpUse::Workload
            ),
            Err(IpamError::PoolDisabled { .. })
        ));
        assert!(matches!(
            select_pools(
                &pools,
                6,
                &["b".into()],
                "n",
                &BTreeMap::new(),
                None,
                IpUse::Workload
            ),
            Err(IpamError::InvalidRequest { .. })
        ));
        assert_eq!(
            names(
                select_pools(
                    &pools,
                    4,
                    &[],
                    "n",
                    &BTreeMap::new(),
                    None,
                    IpUse::LoadBalancer
                )
                .map(|v| v.into_iter().filter(|p| p.name == "lb").collect())
            ),
            ["lb"]
        );
        assert!(matches!(
            select_pools(&[], 4, &[], "n", &BTreeMap::new(), None, IpUse::Workload),
            Err(IpamError::NoPools { .. })
        ));
    }

    #[test]
    fn reservations_cover_addresses_and_whole_blocks() {
        let r = Reservations::new(vec![
            "10.0.0.0/25".parse().unwrap(),
            "10.0.1.5/32".parse().unwrap(),
        ]);
        assert!(r.contains("10.0.0.100".parse().unwrap()));
        assert!(r.covers(&"10.0.0.64/26".parse().unwrap()));
        assert!(!r.covers(&"10.0.1.0/26".parse().unwrap()));
        assert!(r.contains("10.0.1.5".parse().unwrap()));
    }

    #[test]
    fn reservations_count_once_inside_and_outside_blocks() {
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        // Overlapping reservations, one half inside the block, and one of the other family.
        let space = Reservations::new(vec![
            net("10.0.0.32/27"),
            net("10.0.0.48/28"),
            net("10.0.0.128/32"),
            net("fd00::/64"),
            net("192.168.0.0/16"),
        ])
        .pool_space(&net("10.0.0.0/24"), &[net("10.0.0.0/26")]);
        // 32 + 1 reserved; outside the block: 192 addresses, 1 of them reserved.
        assert_eq!(
            space,
            PoolSpace {
                reserved: 33,
                free_outside_blocks: 191
            }
        );
        let v6 =
            Reservations::new(vec![net("fd00:10::5/128")]).pool_space(&net("fd00:10::/48"), &[]);
        assert_eq!(
            v6,
            PoolSpace {
                reserved: 1,
                free_outside_blocks: (1u128 << 80) - 1
            }
        );
    }
}
