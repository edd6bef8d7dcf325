//! Consistency checks over all IPAM data: what `calicoctl ipam check` reports, and the
//! invariants the tests hold the allocator to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_api::names::AffinityType;
use calico_datastore::{Key, KeyPrefix};
use ipnet::IpNet;

use crate::Result;
use crate::allocator::Ipam;
use crate::block::AllocationBlock;
use crate::model::{BlockAffinity, Handle};

/// What kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProblemKind {
    /// Allocated, but the owner is gone.
    Leaked,
    /// The same address allocated twice (overlapping blocks).
    Duplicate,
    /// Allocated outside every pool.
    OutsidePools,
    /// A handle whose counts disagree with the blocks, that holds nothing, or that blocks
    /// refer to but is missing.
    BadHandle,
    /// An affinity whose block is missing or owned by someone else.
    OrphanedAffinity,
    /// A block whose stored structure is inconsistent.
    CorruptBlock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub ip: Option<IpAddr>,
    pub handle: Option<String>,
    pub block: Option<IpNet>,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub allocations_checked: usize,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    fn add(
        &mut self,
        kind: ProblemKind,
        ip: Option<IpAddr>,
        handle: Option<&str>,
        block: Option<IpNet>,
        detail: String,
    ) {
        self.problems.push(Problem {
            kind,
            ip,
            handle: handle.map(str::to_string),
            block,
            detail,
        });
    }
}

/// Decides whether an allocation's owner still exists; `None` means "don't know" (no leak
/// is reported then).
pub type OwnerCheck<'a> =
    &'a (dyn Fn(IpAddr, &crate::block::AllocationAttribute) -> Option<bool> + Sync);

impl Ipam {
    /// Checks all IPAM data. `owner_alive`, when given, decides leaks.
    pub async fn check(&self, owner_alive: Option<OwnerCheck<'_>>) -> Result<CheckReport> {
        let ds = self.datastore();
        let mut report = CheckReport::default();
        let pools: Vec<IpNet> = self.pools().await?.iter().map(|p| p.net).collect();
        let mut blocks: BTreeMap<IpNet, AllocationBlock> = BTreeMap::new();
        for kv in self.stored_blocks().await? {
            match serde_json::from_slice::<AllocationBlock>(&kv.value) {
                Ok(b) => {
                    blocks.insert(b.cidr, b);
                }
                Err(e) => report.add(
                    ProblemKind::CorruptBlock,
                    None,
                    None,
                    None,
                    format!("{}: {e}", kv.key),
                ),
            }
        }
        // Counts per handle per block, from the blocks.
        let mut from_blocks: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        let mut seen: BTreeMap<IpAddr, IpNet> = BTreeMap::new();
        for b in blocks.values() {
            for p in b.check() {
                report.add(ProblemKind::CorruptBlock, None, None, Some(b.cidr), p);
            }
            for (ip, attr) in b.allocated() {
                report.allocations_checked += 1;
                if let Some(other) = seen.insert(ip, b.cidr) {
                    report.add(
                        ProblemKind::Duplicate,
                        Some(ip),
                        attr.handle(),
                        Some(b.cidr),
                        format!("{ip} is allocated in blocks {other} and {}", b.cidr),
                    );
                }
                if !pools.iter().any(|p| p.contains(&ip)) {
                    report.add(
                        ProblemKind::OutsidePools,
                        Some(ip),
                        attr.handle(),
                        Some(b.cidr),
                        format!("{ip} is allocated but in no IP pool"),
                    );
                }
                if let Some(h) = attr.handle() {
                    *from_blocks
                        .entry(h.to_string())
                        .or_default()
                        .entry(b.cidr.to_string())
                        .or_default() += 1;
                }
                if let Some(alive) = owner_alive
                    && alive(ip, attr) == Some(false)
                {
                    report.add(
                        ProblemKind::Leaked,
                        Some(ip),
                        attr.handle(),
                        Some(b.cidr),
                        format!("{ip} is allocated to an owner that no longer exists"),
                    );
                }
            }
        }
        // Handles against blocks.
        let mut handles_seen = BTreeSet::new();
        for kv in ds.list(&KeyPrefix::Handles).await?.items {
            let Key::Handle { id } = &kv.key else {
                continue;
            };
            handles_seen.insert(id.clone());
            let h: Handle = match serde_json::from_slice(&kv.value) {
                Ok(h) => h,
                Err(e) => {
                    report.add(
                        ProblemKind::BadHandle,
                        None,
                        Some(id),
                        None,
                        format!("handle {id} cannot be read: {e}"),
                    );
                    continue;
                }
            };
            let actual = from_blocks.get(id).cloned().unwrap_or_default();
            if actual.is_empty() {
                report.add(
                    ProblemKind::BadHandle,
                    None,
                    Some(id),
                    None,
                    format!("handle {id} holds no addresses"),
                );
            } else if h.block != actual {
                report.add(
                    ProblemKind::BadHandle,
                    None,
                    Some(id),
                    None,
                    format!(
                        "handle {id} counts {:?} but the blocks hold {actual:?}",
                        h.block
                    ),
                );
            }
        }
        for id in from_blocks.keys() {
            if !handles_seen.contains(id) {
                report.add(
                    ProblemKind::BadHandle,
                    None,
                    Some(id),
                    None,
                    format!("blocks refer to handle {id}, which does not exist"),
                );
            }
        }
        // Affinities against blocks.
        for kind in [AffinityType::Host, AffinityType::Virtual] {
            let list = ds
                .list(&KeyPrefix::Affinities {
                    affinity_type: kind,
                    owner: None,
                    ip_version: None,
                })
                .await?;
            for kv in list.items {
                let Key::Affinity { owner, cidr, .. } = &kv.key else {
                    continue;
                };
                let Ok(a) = BlockAffinity::from_bytes(&kv.value) else {
                    continue;
                };
                if !a.is_confirmed() {
                    continue;
                }
                match blocks.get(cidr) {
                    None => report.add(
                        ProblemKind::OrphanedAffinity,
                        None,
                        None,
                        Some(*cidr),
                        format!("{owner} has an affinity for block {cidr}, which does not exist"),
                    ),
                    Some(b) if !b.is_owned_by(kind, owner) => report.add(
                        ProblemKind::OrphanedAffinity,
                        None,
                        None,
                        Some(*cidr),
                        format!(
                            "{owner} has an affinity for block {cidr}, which belongs to {}",
                            b.affinity.clone().unwrap_or_else(|| "no one".into())
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
        Ok(report)
    }
}
