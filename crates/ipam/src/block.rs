//! The allocation block: Calico's unit of IPAM state and of compare-and-swap.
//!
//! A block covers one CIDR (a /26 by default). `allocations[i]` is the index of the attribute
//! record of the owner of ordinal `i` (address = network + i), or null when free;
//! `unallocated` lists the free ordinals in the order they are handed out (head first;
//! released ordinals go to the tail, so the longest-free address is reused first);
//! `sequenceNumber` grows with every write, and each allocation remembers the sequence number
//! it was made at, so a release of an address that has since been released and handed out
//! again can be refused. The JSON is Calico's (`model.AllocationBlock`), so blocks written by
//! Calico read here and the reverse.
//!
//! Everything here is pure: no datastore, no clock.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::names::AffinityType;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The handle Calico's Windows nodes use for addresses they reserve at the ends of a block;
/// such addresses do not make a block "in use".
pub const WINDOWS_RESERVED_HANDLE: &str = "windows-reserved-ipam-handle";

/// Owner attribute keys Calico stores with allocations.
pub const ATTR_NODE: &str = "node";
pub const ATTR_NAMESPACE: &str = "namespace";
pub const ATTR_POD: &str = "pod";
pub const ATTR_TIMESTAMP: &str = "timestamp";
pub const ATTR_TYPE: &str = "type";

/// Who an allocation belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    /// The owner (`node`, `namespace`, `pod`, `timestamp`, `type`, ...).
    #[serde(rename = "secondary", default, skip_serializing_if = "Option::is_none")]
    pub active_owner_attrs: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "alternateOwnerAttrs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub alternate_owner_attrs: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "releasedAt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub released_at: Option<String>,
}

impl AllocationAttribute {
    /// The handle, with Calico's sanitising of `\r` (an old host-local migration bug).
    pub fn handle(&self) -> Option<&str> {
        self.handle_id.as_deref().map(sanitize_handle)
    }

    pub fn owner(&self, key: &str) -> Option<&str> {
        self.active_owner_attrs
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
}

/// Calico keeps only the part of a handle before a `\r`.
pub fn sanitize_handle(h: &str) -> &str {
    h.split('\r').next().unwrap_or(h)
}

/// An allocation block, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationBlock {
    pub cidr: IpNet,
    /// `host:<node>` or `virtual:<name>`; none for a block without affinity.
    #[serde(default)]
    pub affinity: Option<String>,
    #[serde(
        rename = "affinity_claim_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub affinity_claim_time: Option<String>,
    #[serde(default)]
    pub allocations: Vec<Option<usize>>,
    #[serde(default)]
    pub unallocated: Vec<usize>,
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
    #[serde(rename = "sequenceNumber", default)]
    pub sequence_number: u64,
    #[serde(rename = "sequenceNumberForAllocation", default)]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
    /// Pre-v3 spelling of the affinity (`hostname` only); read, never written.
    #[serde(
        rename = "hostAffinity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub host_affinity: Option<String>,
}

/// Why a release from a block was refused (the whole block's release is refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockReleaseError {
    #[error(
        "{ip} was released and handed out again since (sequence number {expected}, not {requested})"
    )]
    BadSequenceNumber {
        ip: IpAddr,
        requested: u64,
        expected: u64,
    },
    #[error("{ip} belongs to handle {actual:?}, not {requested:?}")]
    BadHandle {
        ip: IpAddr,
        requested: String,
        actual: String,
    },
    #[error("{ip} is not in block {block}")]
    NotInBlock { ip: IpAddr, block: IpNet },
}

/// One address to release, optionally only if it still has this handle and sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRequest {
    pub ip: IpAddr,
    pub handle: Option<String>,
    pub sequence_number: Option<u64>,
}

/// What a release from one block did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockRelease {
    pub released: Vec<IpAddr>,
    /// Addresses that were not allocated.
    pub unallocated: Vec<IpAddr>,
    /// How many of the released addresses each handle held.
    pub by_handle: BTreeMap<String, usize>,
}

fn ip_add(base: IpAddr, offset: u128) -> IpAddr {
    match base {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(offset as u32)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(offset)).into()),
    }
}

fn ip_diff(ip: IpAddr, base: IpAddr) -> Option<u128> {
    match (ip, base) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u32::from(a).checked_sub(u32::from(b)).map(u128::from),
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(a).checked_sub(u128::from(b)),
        _ => None,
    }
}

/// The `affinity` text for an owner.
pub fn affinity_string(kind: AffinityType, owner: &str) -> String {
    format!("{}:{owner}", kind.as_str())
}

impl AllocationBlock {
    /// A new, empty block. `sequence_number` should start high and unique (Calico uses the
    /// current time in nanoseconds) so that a recreated block never reuses numbers.
    pub fn new(
        cidr: IpNet,
        affinity: Option<(AffinityType, &str)>,
        claim_time: Option<String>,
        sequence_number: u64,
    ) -> AllocationBlock {
        let size = block_size(&cidr);
        AllocationBlock {
            cidr: cidr.trunc(),
            affinity: affinity.map(|(k, o)| affinity_string(k, o)),
            affinity_claim_time: claim_time,
            allocations: vec![None; size],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            sequence_number,
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
            host_affinity: None,
        }
    }

    /// The block's owner, reading the legacy `hostAffinity` too.
    pub fn owner(&self) -> Option<(AffinityType, &str)> {
        if let Some(a) = &self.affinity {
            let (t, o) = a.split_once(':')?;
            return Some((AffinityType::parse(t)?, o));
        }
        self.host_affinity
            .as_deref()
            .map(|h| (AffinityType::Host, h))
    }

    pub fn is_owned_by(&self, kind: AffinityType, owner: &str) -> bool {
        self.owner() == Some((kind, owner))
    }

    pub fn size(&self) -> usize {
        self.allocations.len()
    }

    pub fn ordinal(&self, ip: IpAddr) -> Option<usize> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        ip_diff(ip, self.cidr.network()).and_then(|d| usize::try_from(d).ok())
    }

    pub fn ip(&self, ordinal: usize) -> IpAddr {
        ip_add(self.cidr.network(), ordinal as u128)
    }

    /// The address with the block's prefix length, as Calico returns assignments.
    pub fn ip_net(&self, ordinal: usize) -> IpNet {
        IpNet::new(self.ip(ordinal), self.cidr.prefix_len()).unwrap_or(self.cidr)
    }

    fn attr_of(&self, ordinal: usize) -> Option<&AllocationAttribute> {
        let idx = (*self.allocations.get(ordinal)?)?;
        self.attributes.get(idx)
    }

    /// Whether an ordinal is allocated (and not merely cooling down after release).
    pub fn is_allocated(&self, ordinal: usize) -> bool {
        self.attr_of(ordinal)
            .is_some_and(|a| a.released_at.is_none())
    }

    /// The owner record of an address, if allocated.
    pub fn attributes_for(&self, ip: IpAddr) -> Option<&AllocationAttribute> {
        let o = self.ordinal(ip)?;
        self.attr_of(o).filter(|a| a.released_at.is_none())
    }

    pub fn sequence_number_for(&self, ordinal: usize) -> u64 {
        self.sequence_number_for_allocation
            .get(&ordinal.to_string())
            .copied()
            .unwrap_or(0)
    }

    /// Free addresses that are not reserved.
    pub fn num_free(&self, reserved: &dyn Fn(IpAddr) -> bool) -> usize {
        self.unallocated
            .iter()
            .filter(|o| !reserved(self.ip(**o)))
            .count()
    }

    /// Allocated addresses.
    pub fn num_allocated(&self) -> usize {
        (0..self.size()).filter(|o| self.is_allocated(*o)).count()
    }

    /// No address is allocated, other than Windows' reserved ones.
    pub fn is_empty(&self) -> bool {
        (0..self.size()).all(|o| match self.attr_of(o) {
            None => true,
            Some(a) => a.released_at.is_some() || a.handle() == Some(WINDOWS_RESERVED_HANDLE),
        })
    }

    /// Every allocated address and its owner record.
    pub fn allocated(&self) -> impl Iterator<Item = (IpAddr, &AllocationAttribute)> + '_ {
        (0..self.size()).filter_map(|o| {
            self.attr_of(o)
                .filter(|a| a.released_at.is_none())
                .map(|a| (self.ip(o), a))
        })
    }

    /// Addresses held by a handle.
    pub fn ips_for_handle(&self, handle: &str) -> Vec<IpAddr> {
        self.allocated()
            .filter(|(_, a)| a.handle() == Some(handle))
            .map(|(ip, _)| ip)
            .collect()
    }

    fn find_or_add_attribute(
        &mut self,
        handle: Option<&str>,
        attrs: &BTreeMap<String, String>,
    ) -> usize {
        let record = AllocationAttribute {
            handle_id: handle.map(str::to_string),
            active_owner_attrs: (!attrs.is_empty()).then(|| attrs.clone()),
            alternate_owner_attrs: None,
            released_at: None,
        };
        if let Some(i) = self.attributes.iter().position(|a| *a == record) {
            return i;
        }
        self.attributes.push(record);
        self.attributes.len() - 1
    }

    /// Takes up to `num` free, unreserved addresses from the head of the free list for
    /// `handle`. Reserved addresses stay in the free list, in place.
    pub fn assign(
        &mut self,
        num: usize,
        handle: Option<&str>,
        attrs: &BTreeMap<String, String>,
        reserved: &dyn Fn(IpAddr) -> bool,
    ) -> Vec<IpNet> {
        let mut out = Vec::new();
        let mut kept = Vec::with_capacity(self.unallocated.len());
        let mut attr_idx = None;
        let free = std::mem::take(&mut self.unallocated);
        for ordinal in free {
            if out.len() >= num || reserved(self.ip(ordinal)) {
                kept.push(ordinal);
                continue;
            }
            let idx = *attr_idx.get_or_insert_with(|| self.find_or_add_attribute(handle, attrs));
            self.allocations[ordinal] = Some(idx);
            self.sequence_number_for_allocation
                .insert(ordinal.to_string(), self.sequence_number);
            out.push(self.ip_net(ordinal));
        }
        self.unallocated = kept;
        out
    }

    /// Allocates one specific address. Errors if it is taken or not in the block.
    pub fn assign_ip(
        &mut self,
        ip: IpAddr,
        handle: Option<&str>,
        attrs: &BTreeMap<String, String>,
    ) -> Result<IpNet, AssignIpError> {
        let ordinal = self.ordinal(ip).ok_or(AssignIpError::NotInBlock)?;
        if self.is_allocated(ordinal) {
            return Err(AssignIpError::InUse {
                handle: self
                    .attr_of(ordinal)
                    .and_then(|a| a.handle().map(str::to_string)),
            });
        }
        let pos = self
            .unallocated
            .iter()
            .position(|o| *o == ordinal)
            .ok_or(AssignIpError::InUse { handle: None })?;
        self.unallocated.remove(pos);
        let idx = self.find_or_add_attribute(handle, attrs);
        self.allocations[ordinal] = Some(idx);
        self.sequence_number_for_allocation
            .insert(ordinal.to_string(), self.sequence_number);
        Ok(self.ip_net(ordinal))
    }

    /// Releases addresses. Any address whose handle or sequence number does not match fails
    /// the whole request (nothing is changed), as Calico does.
    pub fn release(
        &mut self,
        requests: &[ReleaseRequest],
    ) -> Result<BlockRelease, BlockReleaseError> {
        let mut out = BlockRelease::default();
        let mut ordinals = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for r in requests {
            if !seen.insert(r.ip) {
                continue;
            }
            let ordinal = self.ordinal(r.ip).ok_or(BlockReleaseError::NotInBlock {
                ip: r.ip,
                block: self.cidr,
            })?;
            if let Some(seq) = r.sequence_number {
                let expected = self.sequence_number_for(ordinal);
                if seq != expected {
                    return Err(BlockReleaseError::BadSequenceNumber {
                        ip: r.ip,
                        requested: seq,
                        expected,
                    });
                }
            }
            if !self.is_allocated(ordinal) {
                out.unallocated.push(r.ip);
                continue;
            }
            let handle = self
                .attr_of(ordinal)
                .and_then(|a| a.handle().map(str::to_string))
                .unwrap_or_default();
            if let Some(want) = &r.handle
                && *want != handle
            {
                return Err(BlockReleaseError::BadHandle {
                    ip: r.ip,
                    requested: want.clone(),
                    actual: handle,
                });
            }
            if !handle.is_empty() {
                *out.by_handle.entry(handle).or_default() += 1;
            }
            ordinals.push(ordinal);
            out.released.push(r.ip);
        }
        self.free_ordinals(&ordinals);
        Ok(out)
    }

    /// Releases every address of a handle (only those allocated at `sequence_number`, when
    /// given). Returns the addresses released.
    pub fn release_handle(&mut self, handle: &str, sequence_number: Option<u64>) -> Vec<IpAddr> {
        let ordinals: Vec<usize> = (0..self.size())
            .filter(|o| {
                self.attr_of(*o)
                    .is_some_and(|a| a.released_at.is_none() && a.handle() == Some(handle))
                    && sequence_number.is_none_or(|s| self.sequence_number_for(*o) == s)
            })
            .collect();
        let ips = ordinals.iter().map(|o| self.ip(*o)).collect();
        self.free_ordinals(&ordinals);
        ips
    }

    fn free_ordinals(&mut self, ordinals: &[usize]) {
        if ordinals.is_empty() {
            return;
        }
        for o in ordinals {
            self.allocations[*o] = None;
            self.unallocated.push(*o);
            self.sequence_number_for_allocation.remove(&o.to_string());
        }
        self.compact_attributes();
    }

    /// Drops attribute records nobody refers to and renumbers the references.
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for idx in self.allocations.iter().flatten() {
            if let Some(u) = used.get_mut(*idx) {
                *u = true;
            }
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut new_index = vec![None; self.attributes.len()];
        let mut kept = Vec::new();
        for (i, a) in std::mem::take(&mut self.attributes).into_iter().enumerate() {
            if used[i] {
                new_index[i] = Some(kept.len());
                kept.push(a);
            }
        }
        self.attributes = kept;
        for a in self.allocations.iter_mut() {
            if let Some(i) = *a {
                *a = new_index.get(i).copied().flatten();
            }
        }
    }

    /// Structural problems (Calico data can be hand-edited or corrupted): lengths, indexes
    /// and the free list must agree.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let size = block_size(&self.cidr);
        if self.allocations.len() != size {
            problems.push(format!(
                "block {} has {} allocation slots, expected {size}",
                self.cidr,
                self.allocations.len()
            ));
        }
        let mut free = vec![false; self.allocations.len()];
        for o in &self.unallocated {
            match free.get_mut(*o) {
                None => problems.push(format!(
                    "block {}: free ordinal {o} is out of range",
                    self.cidr
                )),
                Some(f) if *f => {
                    problems.push(format!("block {}: ordinal {o} is free twice", self.cidr))
                }
                Some(f) => *f = true,
            }
        }
        for (o, a) in self.allocations.iter().enumerate() {
            match (a, free.get(o).copied().unwrap_or(false)) {
                (Some(i), _) if *i >= self.attributes.len() => problems.push(format!(
                    "block {}: ordinal {o} refers to attribute {i}, which does not exist",
                    self.cidr
                )),
                (Some(_), true) => problems.push(format!(
                    "block {}: ordinal {o} is both allocated and free",
                    self.cidr
                )),
                (None, false) => problems.push(format!(
                    "block {}: ordinal {o} is neither allocated nor free",
                    self.cidr
                )),
                _ => {}
            }
        }
        problems
    }
}

/// Why a specific address could not be assigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignIpError {
    #[error("the address is not in this block")]
    NotInBlock,
    #[error("the address is already in use{}", handle.as_ref().map(|h| format!(" by handle {h:?}")).unwrap_or_default())]
    InUse { handle: Option<String> },
}

/// Addresses in a block of this CIDR.
pub fn block_size(cidr: &IpNet) -> usize {
    let bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    1usize.checked_shl(bits).unwrap_or(0)
}

#[cfg(test)]
mod tests;
