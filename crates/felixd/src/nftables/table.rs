//! The `calico` nftables table of one IP family (`ip calico` or `ip6 calico`), kept equal
//! to what felixd wants, the way Felix's `nftables.NftablesTable` does it:
//!
//! - the four iptables tables are layers of the one table: every chain is named
//!   `<layer>-<name>` (`filter-cali-FORWARD`), jumps are renamed to match, and Calico's
//!   fourteen base chains (`filter-FORWARD`, `nat-POSTROUTING`, ...) are ours too, created
//!   with their hook and priority. Hooks ([`NftTable::set_hooks`]) are simply their rules;
//! - the kernel is read with `nft -j list table` (at start, after a failure, and when the
//!   caller invalidates for the refresh timer) and compared by per-rule hash, so only
//!   chains that differ are written; a changed chain is flushed and rewritten whole;
//! - only chains reachable from the base chains (or from a verdict map) are programmed, and
//!   a reference to a chain, set or map felixd does not define is refused before anything is
//!   written (nft would refuse the whole transaction anyway, with a worse message);
//! - IP sets are nft sets in the same table, verdict maps dispatch to workload chains;
//! - every update is ONE `nft -f -` transaction: creations first, then rewrites, then
//!   element changes, then deletions (flushes before deletes, so nothing deleted is still
//!   referenced). Anything in the table felixd does not want is deleted: the table is ours.
//!
//! Objects whose definition can't be changed in place (a set or map of another type, a base
//! chain with another hook or priority) make the next write recreate the whole table in the
//! same transaction (`add table; delete table; add table; ...`), as Felix does after repeated
//! failures; so do [`FAILURES_BEFORE_RECREATE`] failed writes in a row.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::chain_graph::{ChainGraph, Links};
use crate::dataplane::exec::{Exec, ExecError};
use crate::dataplane::ipsets::SetType;
use crate::generic::{Chain, Features, Rule};

use super::elements::{element_from_member, interval_cover, set_type_spec};
use super::listing::{BaseSpec, KernelMap, KernelSet, KernelState, parse_listing};
use super::render::{
    LAYER_FILTER, LAYER_MANGLE, LAYER_NAT, LAYER_RAW, family, legalize_set_name, namespaced,
    nft_rule, nft_rule_hashes, rule_lookups, rule_target,
};

/// Our table's name in both families.
pub const TABLE_NAME: &str = "calico";
/// Elements per `add element` line: keeps lines (and nft's error messages) readable.
const ELEMENTS_PER_LINE: usize = 500;
/// Failed writes in a row after which the next write recreates the table.
pub const FAILURES_BEFORE_RECREATE: u32 = 2;
/// The type of Calico's verdict maps.
const MAP_TYPE: &str = "ifname : verdict";

/// One of Calico's base chains: the layer's stand-in for a kernel chain of iptables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub name: &'static str,
    pub layer: &'static str,
    pub chain_type: &'static str,
    pub hook: &'static str,
    /// Written as a number: nft accepts `srcnat` only in postrouting and input, but Calico
    /// gives nat OUTPUT `srcnat + 10` too. Numbers mean the same everywhere.
    pub priority: i64,
}

const fn base(
    name: &'static str,
    layer: &'static str,
    chain_type: &'static str,
    hook: &'static str,
    priority: i64,
) -> BaseChain {
    BaseChain {
        name,
        layer,
        chain_type,
        hook,
        priority,
    }
}

/// nft's standard priorities (filter 0, raw -300, mangle -150, dstnat -100, srcnat 100).
const PRIO_FILTER: i64 = 0;
const PRIO_RAW: i64 = -300;
const PRIO_MANGLE: i64 = -150;
const PRIO_DSTNAT: i64 = -100;
/// `srcnat + 10`: after kube-proxy's nat postrouting (100), see Felix's table.go.
const PRIO_SRCNAT_PLUS_10: i64 = 110;

/// Calico's base chains (Felix's `baseChains`), all created whether hooked or not.
pub static BASE_CHAINS: [BaseChain; 14] = [
    base("filter-INPUT", LAYER_FILTER, "filter", "input", PRIO_FILTER),
    base(
        "filter-FORWARD",
        LAYER_FILTER,
        "filter",
        "forward",
        PRIO_FILTER,
    ),
    base(
        "filter-OUTPUT",
        LAYER_FILTER,
        "filter",
        "output",
        PRIO_FILTER,
    ),
    base(
        "nat-PREROUTING",
        LAYER_NAT,
        "nat",
        "prerouting",
        PRIO_DSTNAT,
    ),
    base("nat-INPUT", LAYER_NAT, "nat", "input", PRIO_DSTNAT),
    base(
        "nat-OUTPUT",
        LAYER_NAT,
        "nat",
        "output",
        PRIO_SRCNAT_PLUS_10,
    ),
    base(
        "nat-POSTROUTING",
        LAYER_NAT,
        "nat",
        "postrouting",
        PRIO_SRCNAT_PLUS_10,
    ),
    base(
        "mangle-PREROUTING",
        LAYER_MANGLE,
        "filter",
        "prerouting",
        PRIO_MANGLE,
    ),
    base("mangle-INPUT", LAYER_MANGLE, "filter", "input", PRIO_MANGLE),
    base(
        "mangle-FORWARD",
        LAYER_MANGLE,
        "filter",
        "forward",
        PRIO_MANGLE,
    ),
    base(
        "mangle-OUTPUT",
        LAYER_MANGLE,
        "route",
        "output",
        PRIO_MANGLE,
    ),
    base(
        "mangle-POSTROUTING",
        LAYER_MANGLE,
        "filter",
        "postrouting",
        PRIO_MANGLE,
    ),
    base(
        "raw-PREROUTING",
        LAYER_RAW,
        "filter",
        "prerouting",
        PRIO_RAW,
    ),
    base("raw-OUTPUT", LAYER_RAW, "filter", "output", PRIO_RAW),
];

/// The base chain of that name, if it is one.
pub fn base_chain(name: &str) -> Option<&'static BaseChain> {
    BASE_CHAINS.iter().find(|b| b.name == name)
}

impl BaseChain {
    /// `add chain ip calico filter-INPUT { type filter hook input priority 0; policy accept; }`
    fn declaration(&self, family: &str) -> String {
        format!(
            "add chain {family} {TABLE_NAME} {} {{ type {} hook {} priority {}; policy accept; }}",
            self.name, self.chain_type, self.hook, self.priority
        )
    }

    fn spec(&self) -> BaseSpec {
        BaseSpec {
            chain_type: self.chain_type.to_string(),
            hook: self.hook.to_string(),
            priority: Some(self.priority),
        }
    }
}

/// What went wrong with the table.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("reading table {family} calico: {source}")]
    Read {
        family: &'static str,
        source: ExecError,
    },
    #[error("reading table {family} calico: cannot understand nft's JSON: {reason}")]
    Parse {
        family: &'static str,
        reason: String,
    },
    #[error("writing table {family} calico: {source}")]
    Write {
        family: &'static str,
        source: ExecError,
    },
    #[error("bug: in table {family} calico, {from} jumps to {to}, which felixd does not define")]
    Dangling {
        family: &'static str,
        from: String,
        to: String,
    },
    #[error(
        "bug: in table {family} calico, chain {chain} uses {kind} {name}, which felixd does not define"
    )]
    Missing {
        family: &'static str,
        chain: String,
        kind: &'static str,
        name: String,
    },
}

/// Counts from one [`NftTable::apply`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NftStats {
    /// The kernel was read first.
    pub read: bool,
    /// The table was deleted and recreated in the transaction.
    pub recreated: bool,
    /// `nft -f` runs (0 or 1).
    pub transactions: usize,
    /// Regular chains created or rewritten.
    pub chains_written: usize,
    pub chains_deleted: usize,
    /// Base chains created or whose rules were rewritten.
    pub base_chains_written: usize,
    pub sets_created: usize,
    pub set_elements_changed: usize,
    pub sets_deleted: usize,
    pub maps_created: usize,
    pub map_elements_changed: usize,
    pub maps_deleted: usize,
}

#[derive(Debug, Clone)]
struct DesiredChain {
    layer: String,
    rules: Vec<Rule>,
    hashes: Vec<String>,
}

/// A base chain's rules: the hooks' inserted rules, then the appended ones.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hooks {
    layer: String,
    insert: Vec<Rule>,
    append: Vec<Rule>,
    hashes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DesiredSet {
    set_type: SetType,
    /// Canonical element text.
    members: HashSet<String>,
}

/// A set to create, or to change in place.
#[derive(Debug, Default)]
struct SetPlan {
    name: String,
    type_spec: String,
    interval: bool,
    /// What the kernel will hold.
    elements: HashSet<String>,
    delete: Vec<String>,
    add: Vec<String>,
}

/// A map to create, or to change in place.
#[derive(Debug, Default)]
struct MapPlan {
    name: String,
    delete: Vec<String>,
    add: Vec<(String, String)>,
}

/// Everything one write does.
#[derive(Debug, Default)]
struct Plan {
    recreate: bool,
    create_table: bool,
    new_sets: Vec<SetPlan>,
    changed_sets: Vec<SetPlan>,
    delete_sets: Vec<String>,
    new_maps: Vec<MapPlan>,
    changed_maps: Vec<MapPlan>,
    delete_maps: Vec<String>,
    base_creates: Vec<&'static BaseChain>,
    /// Base chains whose rules are rewritten, and whether they exist (need a flush).
    base_writes: Vec<(&'static str, bool)>,
    /// Chains declared empty before anything refers to them.
    new_chains: Vec<String>,
    /// Chains whose rules are (re)written, and whether they exist (need a flush).
    chain_writes: Vec<(String, bool)>,
    delete_chains: Vec<String>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        !self.recreate
            && !self.create_table
            && self.new_sets.is_empty()
            && self.changed_sets.is_empty()
            && self.delete_sets.is_empty()
            && self.new_maps.is_empty()
            && self.changed_maps.is_empty()
            && self.delete_maps.is_empty()
            && self.base_creates.is_empty()
            && self.base_writes.is_empty()
            && self.new_chains.is_empty()
            && self.chain_writes.is_empty()
            && self.delete_chains.is_empty()
    }
}

/// The `calico` table of one IP family.
#[derive(Debug)]
pub struct NftTable {
    ip_version: u8,
    family: &'static str,
    features: Features,
    /// Regular chains by full name.
    chains: HashMap<String, DesiredChain>,
    /// Base chain name → its rules.
    hooks: BTreeMap<String, Hooks>,
    /// Set name (legalized) → members.
    sets: HashMap<String, DesiredSet>,
    /// Map full name → interface → verdict (targets namespaced).
    maps: BTreeMap<String, BTreeMap<String, String>>,
    kernel: Option<KernelState>,
    /// Chains that may differ from the kernel.
    dirty_chains: BTreeSet<String>,
    /// Sets that may differ from the kernel.
    dirty_sets: BTreeSet<String>,
    maps_dirty: bool,
    hooks_dirty: bool,
    /// Which chains the base chains and verdict maps reach, and which sets and maps they
    /// look up.
    graph: ChainGraph,
    recreate: bool,
    failures: u32,
    last_read: Option<Instant>,
}

impl NftTable {
    /// A table for `ip_version` 4 (`ip calico`) or 6 (`ip6 calico`). `insert_mode`
    /// (ChainInsertMode) has no meaning here: the base chains hold only our rules, inserted
    /// ones first, as in Felix; it is taken for parity with the iptables table.
    pub fn new(ip_version: u8, features: Features, insert_mode: bool) -> NftTable {
        tracing::debug!(ip_version, insert_mode, "nftables table");
        NftTable {
            ip_version,
            family: family(ip_version),
            features,
            chains: HashMap::new(),
            hooks: BTreeMap::new(),
            sets: HashMap::new(),
            maps: BTreeMap::new(),
            kernel: None,
            dirty_chains: BTreeSet::new(),
            dirty_sets: BTreeSet::new(),
            maps_dirty: false,
            hooks_dirty: false,
            graph: ChainGraph::new(|_| true),
            recreate: false,
            failures: 0,
            last_read: None,
        }
    }

    pub fn ip_version(&self) -> u8 {
        self.ip_version
    }

    /// `ip` or `ip6`.
    pub fn family(&self) -> &'static str {
        self.family
    }

    /// Sets (or replaces) one of our chains in `layer` (`filter`, `nat`, `mangle`, `raw`);
    /// its name and jump targets get the layer prefix.
    pub fn update_chain(&mut self, layer: &str, chain: Chain) {
        let name = namespaced(layer, &chain.name);
        if base_chain(&name).is_some() {
            tracing::error!(%name, "bug: a base chain's rules are set with set_hooks");
            return;
        }
        let hashes = nft_rule_hashes(&name, &chain.rules, self.ip_version, layer, &self.features);
        if let Some(old) = self.chains.get(&name)
            && old.hashes == hashes
            && old.layer == layer
        {
            return;
        }
        self.dirty_chains.insert(name.clone());
        self.graph.set_chain(&name, links(&chain.rules, layer));
        self.chains.insert(
            name,
            DesiredChain {
                layer: layer.to_string(),
                rules: chain.rules,
                hashes,
            },
        );
    }

    pub fn update_chains(&mut self, layer: &str, chains: impl IntoIterator<Item = Chain>) {
        for c in chains {
            self.update_chain(layer, c);
        }
    }

    pub fn remove_chain(&mut self, layer: &str, name: &str) {
        let name = namespaced(layer, name);
        if self.chains.remove(&name).is_some() {
            self.graph.remove_chain(&name);
            self.dirty_chains.insert(name);
        }
    }

    pub fn has_chain(&self, layer: &str, name: &str) -> bool {
        self.chains.contains_key(&namespaced(layer, name))
    }

    /// The full names (`filter-cali-FORWARD`) of the chains we want (reachable or not).
    pub fn chain_names(&self) -> impl Iterator<Item = &String> {
        self.chains.keys()
    }

    /// The rules of a base chain (`kernel_chain` `FORWARD` in `layer` `filter` is
    /// `filter-FORWARD`): `insert` then `append`. Hashed as Felix does: inserted rules from
    /// the chain's name, appended ones from `<chain>*appends*`, rendered for IPv4 whatever
    /// the family (Felix's `CalculateRuleHashes`).
    pub fn set_hooks(
        &mut self,
        layer: &str,
        kernel_chain: &str,
        insert: Vec<Rule>,
        append: Vec<Rule>,
    ) {
        let name = namespaced(layer, kernel_chain);
        if base_chain(&name).is_none() {
            tracing::error!(%name, "bug: hooks for a chain that is not a base chain");
            return;
        }
        let mut hashes = nft_rule_hashes(&name, &insert, 4, layer, &self.features);
        hashes.extend(nft_rule_hashes(
            &format!("{name}*appends*"),
            &append,
            4,
            layer,
            &self.features,
        ));
        let h = Hooks {
            layer: layer.to_string(),
            insert,
            append,
            hashes,
        };
        if self.hooks.get(&name) != Some(&h) {
            self.graph
                .set_root(&name, links(h.insert.iter().chain(&h.append), layer));
            self.hooks.insert(name, h);
            self.hooks_dirty = true;
        }
    }

    fn element(&self, name: &str, set_type: SetType, member: &str) -> Option<String> {
        let e = element_from_member(set_type, member, self.ip_version);
        if e.is_none() {
            tracing::warn!(
                set = name,
                member,
                "skipping an IP set member nft can't hold here"
            );
        }
        e
    }

    /// Sets a whole set. Members are in the `ipset` spelling (`10.0.0.1/32`,
    /// `10.0.0.1,tcp:8080`); names may use `:` (made `-`).
    pub fn replace_set(
        &mut self,
        name: &str,
        set_type: SetType,
        members: impl IntoIterator<Item = String>,
    ) {
        let name = legalize_set_name(name);
        let members = members
            .into_iter()
            .filter_map(|m| self.element(&name, set_type, &m))
            .collect();
        let set = DesiredSet { set_type, members };
        if self.sets.get(&name) == Some(&set) {
            return;
        }
        self.sets.insert(name.clone(), set);
        self.dirty_sets.insert(name);
    }

    /// Adds or removes one member (`present` says which) of a set that exists.
    pub fn set_member(&mut self, name: &str, member: &str, present: bool) {
        let name = legalize_set_name(name);
        let Some(set_type) = self.sets.get(&name).map(|s| s.set_type) else {
            return;
        };
        let Some(e) = self.element(&name, set_type, member) else {
            return;
        };
        let Some(set) = self.sets.get_mut(&name) else {
            return;
        };
        let changed = if present {
            set.members.insert(e)
        } else {
            set.members.remove(&e)
        };
        if changed {
            self.dirty_sets.insert(name);
        }
    }

    pub fn remove_set(&mut self, name: &str) {
        let name = legalize_set_name(name);
        if self.sets.remove(&name).is_some() {
            self.dirty_sets.insert(name);
        }
    }

    pub fn has_set(&self, name: &str) -> bool {
        self.sets.contains_key(&legalize_set_name(name))
    }

    pub fn set_names(&self) -> impl Iterator<Item = &String> {
        self.sets.keys()
    }

    /// Sets a verdict map of `layer` (`cali-from-wl-dispatch` in `filter` is
    /// `filter-cali-from-wl-dispatch`): interface name → verdict, `goto <chain>` (chain
    /// namespaced like jump targets, as Felix's table layer does), `jump <chain>`, or a bare
    /// `accept`/`drop`/`return`. The chains a map leads to are programmed.
    pub fn replace_map(
        &mut self,
        layer: &str,
        name: &str,
        entries: impl IntoIterator<Item = (String, String)>,
    ) {
        let name = namespaced(layer, &legalize_set_name(name));
        let entries: BTreeMap<String, String> = entries
            .into_iter()
            .filter_map(|(iface, verdict)| {
                let v = namespace_verdict(layer, &verdict);
                if v.is_none() {
                    tracing::error!(map = %name, %iface, %verdict, "bug: unexpected verdict");
                }
                Some((iface, v?))
            })
            .collect();
        if self.maps.get(&name) == Some(&entries) {
            return;
        }
        let targets = entries
            .values()
            .filter_map(|v| verdict_target(v))
            .map(str::to_string)
            .collect();
        self.graph.set_root(&name, Links::new(targets, Vec::new()));
        self.maps.insert(name, entries);
        self.maps_dirty = true;
    }

    pub fn remove_map(&mut self, layer: &str, name: &str) {
        let name = namespaced(layer, &legalize_set_name(name));
        if self.maps.remove(&name).is_some() {
            self.graph.remove_root(&name);
            self.maps_dirty = true;
        }
    }

    /// Forgets what the kernel holds, so the next [`NftTable::apply`] reads it again (the
    /// drift-repair refresh).
    pub fn invalidate(&mut self) {
        self.kernel = None;
    }

    pub fn needs_apply(&self) -> bool {
        self.kernel.is_none()
            || self.recreate
            || self.maps_dirty
            || self.hooks_dirty
            || !self.dirty_chains.is_empty()
            || !self.dirty_sets.is_empty()
    }

    pub fn last_read(&self) -> Option<Instant> {
        self.last_read
    }

    /// How long ago the kernel state was read, if it was.
    pub fn since_read(&self) -> Option<Duration> {
        self.last_read.map(|t| t.elapsed())
    }

    /// Brings the kernel in line, in one transaction. On error the kernel is read again next
    /// time; after [`FAILURES_BEFORE_RECREATE`] failed writes in a row the table is
    /// recreated.
    pub fn apply(&mut self, exec: &dyn Exec) -> Result<NftStats, NftError> {
        let mut stats = apply_together(&mut [self], exec)?;
        Ok(stats.pop().unwrap_or_default())
    }

    /// What an apply that failed leaves: a fresh read next time, and after repeated write
    /// failures a recreated table.
    fn note_failure(&mut self, e: &NftError) {
        self.kernel = None;
        if matches!(e, NftError::Write { .. }) {
            self.failures += 1;
            if self.failures >= FAILURES_BEFORE_RECREATE {
                tracing::warn!(
                    family = self.family,
                    failures = self.failures,
                    "nft keeps failing: recreating the table on the next write"
                );
                self.recreate = true;
            }
        }
    }

    fn read(&mut self, exec: &dyn Exec) -> Result<(), NftError> {
        let args = ["-j", "list", "table", self.family, TABLE_NAME];
        let st = match exec.run("nft", &args, None) {
            Ok(out) => parse_listing(&out, TABLE_NAME).map_err(|reason| NftError::Parse {
                family: self.family,
                reason,
            })?,
            Err(e) if table_missing(&e) => KernelState::default(),
            Err(source) => {
                return Err(NftError::Read {
                    family: self.family,
                    source,
                });
            }
        };
        if let Some(why) = self.incompatible(&st) {
            tracing::warn!(family = self.family, %why, "recreating the table");
            self.recreate = true;
        }
        // Everything is compared on the next write.
        self.dirty_chains.extend(
            st.chains
                .keys()
                .filter(|n| base_chain(n).is_none())
                .cloned(),
        );
        self.dirty_chains.extend(self.chains.keys().cloned());
        self.dirty_sets.extend(st.sets.keys().cloned());
        self.dirty_sets.extend(self.sets.keys().cloned());
        self.maps_dirty = true;
        self.hooks_dirty = true;
        self.kernel = Some(st);
        self.last_read = Some(Instant::now());
        Ok(())
    }

    /// Why the kernel's table can't be brought in line in place, if it can't: a base chain
    /// of another kind, a set or map of another type.
    fn incompatible(&self, st: &KernelState) -> Option<String> {
        for b in &BASE_CHAINS {
            if st.chains.contains_key(b.name) && st.base_specs.get(b.name) != Some(&b.spec()) {
                return Some(format!("chain {} is not {:?}", b.name, b.spec()));
            }
        }
        for (name, set) in &self.sets {
            if let Some(k) = st.sets.get(name)
                && !same_set_type(k, set.set_type, self.ip_version)
            {
                return Some(format!("set {name} has type {}", k.type_spec));
            }
        }
        for name in self.maps.keys() {
            if let Some(k) = st.maps.get(name)
                && k.type_spec != MAP_TYPE
            {
                return Some(format!("map {name} has type {}", k.type_spec));
            }
        }
        None
    }

    /// The plan that brings the kernel in line (recreating the table when a set changed
    /// type since the read).
    fn prepare(&mut self) -> Result<Plan, NftError> {
        match self.plan()? {
            Some(p) => Ok(p),
            None => {
                self.recreate = true;
                Ok(self.plan()?.unwrap_or_default())
            }
        }
    }

    /// Counts a written plan and takes it as the kernel's new state.
    fn record(&mut self, plan: Plan, read: bool) -> NftStats {
        let mut stats = NftStats {
            read,
            ..NftStats::default()
        };
        if !plan.is_empty() {
            stats = NftStats {
                read,
                recreated: plan.recreate,
                transactions: 1,
                chains_written: plan.chain_writes.len()
                    + plan
                        .new_chains
                        .iter()
                        .filter(|n| !plan.chain_writes.iter().any(|(w, _)| w == *n))
                        .count(),
                chains_deleted: plan.delete_chains.len(),
                base_chains_written: plan
                    .base_creates
                    .iter()
                    .map(|b| b.name)
                    .chain(plan.base_writes.iter().map(|(n, _)| *n))
                    .collect::<HashSet<&str>>()
                    .len(),
                sets_created: plan.new_sets.len(),
                set_elements_changed: plan
                    .changed_sets
                    .iter()
                    .map(|s| s.add.len() + s.delete.len())
                    .sum(),
                sets_deleted: plan.delete_sets.len(),
                maps_created: plan.new_maps.len(),
                map_elements_changed: plan
                    .changed_maps
                    .iter()
                    .map(|m| m.add.len() + m.delete.len())
                    .sum(),
                maps_deleted: plan.delete_maps.len(),
            };
            if plan.delete_chains.len() + plan.delete_sets.len() + plan.delete_maps.len() > 0 {
                tracing::info!(
                    family = self.family,
                    chains = plan.delete_chains.len(),
                    sets = plan.delete_sets.len(),
                    maps = plan.delete_maps.len(),
                    "deleted nftables objects felixd no longer wants"
                );
            }
        }
        self.finish(plan);
        self.failures = 0;
        stats
    }

    /// Every set and map a rule of a chain we are about to write uses must be ours.
    fn check_lookups(&self, chain: &str, layer: &str, rules: &[Rule]) -> Result<(), NftError> {
        for r in rules {
            let (sets, maps) = rule_lookups(r, layer);
            let missing_set = sets.into_iter().find(|s| !self.sets.contains_key(s));
            let missing_map = maps.into_iter().find(|m| !self.maps.contains_key(m));
            let (kind, name) = match (missing_set, missing_map) {
                (Some(s), _) => ("set", s),
                (None, Some(m)) => ("verdict map", m),
                (None, None) => continue,
            };
            return Err(NftError::Missing {
                family: self.family,
                chain: chain.to_string(),
                kind,
                name,
            });
        }
        Ok(())
    }

    /// What the next write does; `None` when it can only be done by recreating the table.
    fn plan(&self) -> Result<Option<Plan>, NftError> {
        let empty = KernelState::default();
        let kernel = match &self.kernel {
            Some(_) if self.recreate => &empty,
            Some(k) => k,
            None => return Ok(Some(Plan::default())),
        };
        let mut plan = Plan {
            recreate: self.recreate,
            create_table: !self.recreate && !kernel.table_exists,
            ..Plan::default()
        };

        if let Some((from, to)) = self.graph.dangling() {
            return Err(NftError::Dangling {
                family: self.family,
                from,
                to,
            });
        }

        // Regular chains.
        let candidates: BTreeSet<&String> = if self.recreate {
            self.graph.reached().collect()
        } else {
            self.dirty_chains
                .iter()
                .chain(self.graph.changed())
                .collect()
        };
        for name in candidates {
            let exists = kernel.chains.contains_key(name);
            if let Some(c) = self
                .chains
                .get(name)
                .filter(|_| self.graph.is_reached(name))
            {
                if kernel.chains.get(name) == Some(&c.hashes) {
                    continue;
                }
                self.check_lookups(name, &c.layer, &c.rules)?;
                if !exists {
                    plan.new_chains.push(name.clone());
                }
                if exists || !c.rules.is_empty() {
                    plan.chain_writes.push((name.clone(), exists));
                }
            } else if exists && base_chain(name).is_none() {
                plan.delete_chains.push(name.clone());
            }
        }

        // Base chains.
        for b in &BASE_CHAINS {
            let current = kernel.chains.get(b.name);
            if current.is_none() {
                plan.base_creates.push(b);
            }
            let hooks = self.hooks.get(b.name);
            let want: &[String] = hooks.map(|h| h.hashes.as_slice()).unwrap_or(&[]);
            if current.map(Vec::as_slice).unwrap_or(&[]) != want {
                if let Some(h) = hooks {
                    self.check_lookups(b.name, &h.layer, &h.insert)?;
                    self.check_lookups(b.name, &h.layer, &h.append)?;
                }
                plan.base_writes.push((b.name, current.is_some()));
            }
        }

        // Sets.
        let set_names: Vec<&String> = if self.recreate {
            let mut v: Vec<&String> = self.sets.keys().collect();
            v.sort();
            v
        } else {
            self.dirty_sets.iter().collect()
        };
        for name in set_names {
            match (self.sets.get(name), kernel.sets.get(name)) {
                (Some(want), None) => plan.new_sets.push(self.set_plan(name, want, None)),
                (Some(want), Some(have)) => {
                    if !same_set_type(have, want.set_type, self.ip_version) {
                        return Ok(None);
                    }
                    let p = self.set_plan(name, want, Some(have));
                    if !p.add.is_empty() || !p.delete.is_empty() {
                        plan.changed_sets.push(p);
                    }
                }
                (None, Some(_)) => plan.delete_sets.push(name.clone()),
                (None, None) => {}
            }
        }

        // Verdict maps.
        if self.maps_dirty || self.recreate {
            for (name, want) in &self.maps {
                match kernel.maps.get(name) {
                    None => plan.new_maps.push(MapPlan {
                        name: name.clone(),
                        delete: Vec::new(),
                        add: want.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    }),
                    Some(have) if have.type_spec != MAP_TYPE => return Ok(None),
                    Some(have) => {
                        let p = map_plan(name, want, have);
                        if !p.add.is_empty() || !p.delete.is_empty() {
                            plan.changed_maps.push(p);
                        }
                    }
                }
            }
            let mut gone: Vec<&String> = kernel
                .maps
                .keys()
                .filter(|n| !self.maps.contains_key(*n))
                .collect();
            gone.sort();
            plan.delete_maps = gone.into_iter().cloned().collect();
        }

        // Nothing that stays may still use a set or map being deleted.
        if !plan.delete_sets.is_empty() || !plan.delete_maps.is_empty() {
            self.check_still_used(&plan)?;
        }
        Ok(Some(plan))
    }

    /// Refuses deleting a set or map that a chain staying in the table still uses.
    fn check_still_used(&self, plan: &Plan) -> Result<(), NftError> {
        let sets = plan.delete_sets.iter().map(|s| ("set", s));
        let maps = plan.delete_maps.iter().map(|m| ("verdict map", m));
        for (kind, name) in sets.chain(maps) {
            if let Some(chain) = self.graph.user_of(name) {
                return Err(NftError::Missing {
                    family: self.family,
                    chain,
                    kind,
                    name: name.clone(),
                });
            }
        }
        Ok(())
    }

    fn set_plan(&self, name: &str, want: &DesiredSet, have: Option<&KernelSet>) -> SetPlan {
        let (type_spec, interval) = set_type_spec(want.set_type, self.ip_version);
        let elements = if interval {
            interval_cover(&want.members)
        } else {
            want.members.clone()
        };
        let (mut delete, mut add): (Vec<String>, Vec<String>) = match have {
            None => (Vec::new(), elements.iter().cloned().collect()),
            Some(h) => (
                h.elements.difference(&elements).cloned().collect(),
                elements.difference(&h.elements).cloned().collect(),
            ),
        };
        delete.sort();
        add.sort();
        SetPlan {
            name: name.to_string(),
            type_spec,
            interval,
            elements,
            delete,
            add,
        }
    }

    /// The transaction. Order matters to nft even within one transaction: objects must be
    /// declared before rules use them, and references must be gone (flushed) before what
    /// they refer to is deleted.
    fn script(&self, plan: &Plan) -> String {
        let fam = self.family;
        let mut s = String::new();
        if plan.recreate {
            // The leading add keeps the delete from failing when the table is gone.
            let _ = writeln!(s, "add table {fam} {TABLE_NAME}");
            let _ = writeln!(s, "delete table {fam} {TABLE_NAME}");
            let _ = writeln!(s, "add table {fam} {TABLE_NAME}");
        } else if plan.create_table {
            let _ = writeln!(s, "add table {fam} {TABLE_NAME}");
        }
        // 1. Declarations: sets (with their elements), maps, base chains, new chains.
        for p in &plan.new_sets {
            let flags = if p.interval { " flags interval;" } else { "" };
            let _ = writeln!(
                s,
                "add set {fam} {TABLE_NAME} {} {{ type {};{flags} }}",
                p.name, p.type_spec
            );
            element_lines(&mut s, "add", fam, &p.name, &p.add);
        }
        for m in &plan.new_maps {
            let _ = writeln!(
                s,
                "add map {fam} {TABLE_NAME} {} {{ type {MAP_TYPE}; }}",
                m.name
            );
        }
        for b in &plan.base_creates {
            s.push_str(&b.declaration(fam));
            s.push('\n');
        }
        for name in &plan.new_chains {
            let _ = writeln!(s, "add chain {fam} {TABLE_NAME} {name}");
        }
        // 2. Set element changes: deletions first, so that a replacing interval doesn't
        // overlap the one it replaces.
        for p in &plan.changed_sets {
            element_lines(&mut s, "delete", fam, &p.name, &p.delete);
            element_lines(&mut s, "add", fam, &p.name, &p.add);
        }
        // 3. Chain contents.
        for (name, exists) in &plan.chain_writes {
            let Some(c) = self.chains.get(name) else {
                continue;
            };
            self.chain_lines(
                &mut s,
                name,
                *exists,
                &c.layer,
                c.rules.iter().zip(&c.hashes),
            );
        }
        for (name, exists) in &plan.base_writes {
            match self.hooks.get(*name) {
                Some(h) => {
                    let rules = h.insert.iter().chain(&h.append).zip(&h.hashes);
                    self.chain_lines(&mut s, name, *exists, &h.layer, rules);
                }
                None => {
                    let _ = writeln!(s, "flush chain {fam} {TABLE_NAME} {name}");
                }
            }
        }
        // 4. Verdict map entries (their chains exist by now).
        for m in plan.new_maps.iter().chain(&plan.changed_maps) {
            if !m.delete.is_empty() {
                let keys: Vec<String> = m.delete.iter().map(|k| quote(k)).collect();
                element_lines(&mut s, "delete", fam, &m.name, &keys);
            }
            if !m.add.is_empty() {
                let items: Vec<String> = m
                    .add
                    .iter()
                    .map(|(k, v)| format!("{} : {v}", quote(k)))
                    .collect();
                element_lines(&mut s, "add", fam, &m.name, &items);
            }
        }
        // 5. Deletions, once nothing refers to them.
        for name in &plan.delete_chains {
            let _ = writeln!(s, "flush chain {fam} {TABLE_NAME} {name}");
        }
        for name in &plan.delete_maps {
            let _ = writeln!(s, "delete map {fam} {TABLE_NAME} {name}");
        }
        for name in &plan.delete_chains {
            let _ = writeln!(s, "delete chain {fam} {TABLE_NAME} {name}");
        }
        for p in &plan.delete_sets {
            let _ = writeln!(s, "delete set {fam} {TABLE_NAME} {p}");
        }
        s
    }

    /// `flush chain` (when it exists) and one `add rule` per rule.
    fn chain_lines<'a>(
        &self,
        s: &mut String,
        name: &str,
        exists: bool,
        layer: &str,
        rules: impl Iterator<Item = (&'a Rule, &'a String)>,
    ) {
        let fam = self.family;
        if exists {
            let _ = writeln!(s, "flush chain {fam} {TABLE_NAME} {name}");
        }
        for (r, h) in rules {
            let text = nft_rule(r, h, self.ip_version, layer, &self.features);
            let _ = writeln!(s, "add rule {fam} {TABLE_NAME} {name} {text}");
        }
    }

    /// Records what the kernel holds after a successful write (or a write with nothing to
    /// do), and clears the dirty marks.
    fn finish(&mut self, plan: Plan) {
        let Some(k) = self.kernel.as_mut() else {
            return;
        };
        if plan.recreate {
            *k = KernelState::default();
        }
        k.table_exists = true;
        for b in &plan.base_creates {
            k.chains.insert(b.name.to_string(), Vec::new());
            k.base_specs.insert(b.name.to_string(), b.spec());
        }
        for (name, _) in &plan.base_writes {
            let hashes = self
                .hooks
                .get(*name)
                .map(|h| h.hashes.clone())
                .unwrap_or_default();
            k.chains.insert((*name).to_string(), hashes);
        }
        for name in &plan.new_chains {
            k.chains.insert(name.clone(), Vec::new());
        }
        for (name, _) in &plan.chain_writes {
            if let Some(c) = self.chains.get(name) {
                k.chains.insert(name.clone(), c.hashes.clone());
            }
        }
        for name in &plan.delete_chains {
            k.chains.remove(name);
        }
        for p in plan.new_sets.into_iter().chain(plan.changed_sets) {
            k.sets.insert(
                p.name,
                KernelSet {
                    type_spec: p.type_spec,
                    interval: p.interval,
                    elements: p.elements,
                },
            );
        }
        for name in &plan.delete_sets {
            k.sets.remove(name);
        }
        for m in plan.new_maps.iter().chain(&plan.changed_maps) {
            if let Some(want) = self.maps.get(&m.name) {
                k.maps.insert(
                    m.name.clone(),
                    KernelMap {
                        type_spec: MAP_TYPE.to_string(),
                        entries: want.clone(),
                    },
                );
            }
        }
        for name in &plan.delete_maps {
            k.maps.remove(name);
        }
        self.graph.clear_changed();
        self.dirty_chains.clear();
        self.dirty_sets.clear();
        self.maps_dirty = false;
        self.hooks_dirty = false;
        self.recreate = false;
    }
}

/// What a chain's rules refer to: jump targets, sets and verdict maps (full names).
fn links<'a>(rules: impl IntoIterator<Item = &'a Rule>, layer: &str) -> Links {
    let mut l = Links::default();
    for r in rules {
        l.targets.extend(rule_target(r, layer));
        let (sets, maps) = rule_lookups(r, layer);
        l.lookups.extend(sets);
        l.lookups.extend(maps);
    }
    l
}

/// `nft -j list table` of a table that doesn't exist: "Error: No such file or directory".
fn table_missing(e: &ExecError) -> bool {
    matches!(e, ExecError::Failed { stderr, .. } if stderr.contains("No such file or directory"))
}

fn same_set_type(k: &KernelSet, t: SetType, ip_version: u8) -> bool {
    let (type_spec, interval) = set_type_spec(t, ip_version);
    k.type_spec == type_spec && k.interval == interval
}

/// Element changes for a map: entries gone or changed are deleted (nft won't overwrite a
/// key), new or changed ones added.
fn map_plan(name: &str, want: &BTreeMap<String, String>, have: &KernelMap) -> MapPlan {
    let delete = have
        .entries
        .iter()
        .filter(|(k, v)| want.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    let add = want
        .iter()
        .filter(|(k, v)| have.entries.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    MapPlan {
        name: name.to_string(),
        delete,
        add,
    }
}

/// `goto <chain>`/`jump <chain>` with the chain namespaced; bare verdicts as they are.
fn namespace_verdict(layer: &str, verdict: &str) -> Option<String> {
    let v = verdict.trim();
    match v.split_once(' ') {
        Some((kw @ ("goto" | "jump"), target)) if !target.trim().is_empty() => {
            Some(format!("{kw} {}", namespaced(layer, target.trim())))
        }
        None if matches!(v, "accept" | "drop" | "return" | "continue") => Some(v.to_string()),
        _ => None,
    }
}

/// The chain a verdict leads to.
fn verdict_target(v: &str) -> Option<&str> {
    v.strip_prefix("goto ").or_else(|| v.strip_prefix("jump "))
}

/// A map key (an interface name) as an nft string.
fn quote(k: &str) -> String {
    format!("\"{}\"", k.replace('"', ""))
}

/// `<verb> element <family> calico <name> { a, b, ... }`, a few hundred per line.
fn element_lines(s: &mut String, verb: &str, fam: &str, name: &str, items: &[String]) {
    for chunk in items.chunks(ELEMENTS_PER_LINE) {
        let _ = writeln!(
            s,
            "{verb} element {fam} {TABLE_NAME} {name} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// Brings several tables (one per IP family) in line in ONE `nft -f` transaction: nft loads
/// its cache of the whole ruleset once per run, so with both families in one run a change
/// costs what a single family's does (~20 ms at a thousand pods instead of ~40).
pub fn apply_together(
    tables: &mut [&mut NftTable],
    exec: &dyn Exec,
) -> Result<Vec<NftStats>, NftError> {
    let fail = |tables: &mut [&mut NftTable], e: NftError| {
        for t in tables.iter_mut() {
            t.note_failure(&e);
        }
        e
    };
    let mut read = vec![false; tables.len()];
    for (i, t) in tables.iter_mut().enumerate() {
        if t.kernel.is_none() {
            if let Err(e) = t.read(exec) {
                return Err(fail(tables, e));
            }
            read[i] = true;
        }
    }
    let mut plans = Vec::with_capacity(tables.len());
    let mut script = String::new();
    for t in tables.iter_mut() {
        let plan = match t.prepare() {
            Ok(p) => p,
            Err(e) => return Err(fail(tables, e)),
        };
        if !plan.is_empty() {
            let part = t.script(&plan);
            tracing::debug!(
                family = t.family,
                bytes = part.len(),
                chains = plan.chain_writes.len(),
                deletions = plan.delete_chains.len(),
                "nft transaction"
            );
            script.push_str(&part);
        }
        plans.push(plan);
    }
    if !script.is_empty()
        && let Err(source) = exec.run("nft", &["-f", "-"], Some(script.as_bytes()))
    {
        let family = match tables {
            [one] => one.family,
            _ => "ip/ip6",
        };
        return Err(fail(tables, NftError::Write { family, source }));
    }
    let mut stats: Vec<NftStats> = tables
        .iter_mut()
        .zip(plans)
        .zip(read)
        .map(|((t, plan), read)| t.record(plan, read))
        .collect();
    // One process ran, whatever the number of families in it.
    let mut seen = false;
    for st in &mut stats {
        st.transactions = usize::from(st.transactions > 0 && !seen);
        seen |= st.transactions > 0;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests;
