//! The dataplane: iptables tables, IP sets and routes, kept equal to what the calculation
//! graph wants (Felix's internal dataplane, iptables mode).
//!
//! [`Dataplane::on_changes`] turns the graph's changes into desired chains, sets and routes
//! in memory (no kernel I/O); [`Dataplane::apply`] writes whatever differs, in Felix's order:
//! IP sets that rules will need, routes, the four tables, then IP sets no rule uses any more.
//! A failed step leaves its objects dirty and is retried by the next apply.

pub mod exec;
pub mod family;
pub mod hostendpoints;
pub mod ifacemonitor;
pub mod interfaces;
pub mod ipip;
pub mod ipsets;
pub mod iptables;
pub mod routes;
pub mod vxlan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::calc::ruleparse::IpSetKind;
use crate::calc::{CalcGraph, Changes, EndpointId, LocalEndpoint, TierInfo};
use crate::generic::{Action, Chain, Features, MatchCriteria, Rule};
use crate::rules::dispatch::{
    NFTABLES_FROM_WORKLOAD_DISPATCH_MAP, NFTABLES_TO_WORKLOAD_DISPATCH_MAP, dispatch_mappings,
    from_host_dispatch_chains, host_dispatch_chains, to_host_dispatch_chains,
    workload_dispatch_chains,
};
use crate::rules::endpoints::{
    group_policies, host_endpoint_to_filter_chains, host_endpoint_to_mangle_egress_chains,
    host_endpoint_to_mangle_ingress_chains, host_endpoint_to_raw_chains, policy_group_chain_name,
    policy_group_chains, should_be_inlined, workload_endpoint_to_iptables_chains,
};
use crate::rules::nat::{cidr_block_chain, dnat_chain, nat_outgoing_chain, snat_chain};
use crate::rules::policy::{policy_chains, profile_chains};
use crate::rules::static_chains::{
    kernel_hooks, static_filter_forward_append_rules, static_filter_table_chains,
    static_mangle_table_chains, static_nat_table_chains, static_raw_table_chains,
};
use crate::rules::{
    CHAIN_RPF_SKIP, Direction, IPSET_ID_ALL_HOST_NETS, IPSET_ID_NAT_OUTGOING_MASQ_POOLS,
    IPSET_ID_NETWORK_POOLS, PolicyGroup, RulesConfig, TierPolicyGroups, ipset_name,
};
use exec::Exec;
use family::{Family, TableKind};
use ipsets::{IpSetError, SetType};
use iptables::{Backend, TableError};
use routes::{RouteError, RouteTable, RouteTarget};

/// The name Felix gives the host endpoint that covers every interface (`interfaceName: *`):
/// longer than any real interface name can be.
pub const ALL_INTERFACES: &str = "any-interface-at-all";

/// Bytes each encapsulation takes from the underlay's MTU (Felix's numbers).
const VXLAN_OVERHEAD: u32 = 50;
const VXLAN_V6_OVERHEAD: u32 = 70;
const IPIP_OVERHEAD: u32 = 20;
/// The underlay MTU assumed until the host's is read (Ethernet).
const DEFAULT_HOST_MTU: u32 = 1500;

/// How the dataplane is set up.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    pub rules: RulesConfig,
    pub ipv6: bool,
    pub backend: Backend,
    pub features: Features,
    /// `chainInsertMode: Insert` (our hooks at the top of the kernel chains).
    pub insert_mode: bool,
    pub hostname: String,
    /// Program routes, interface sysctls and connection tracking (off only in unit tests,
    /// which run in the machine's own namespace and must not touch it).
    pub netlink: bool,
    /// Where to write the pod MTU for the CNI plugin (none: not written).
    pub mtu_file: Option<std::path::PathBuf>,
}

/// What a failed apply ran into.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    IpSet(#[from] IpSetError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Family(#[from] family::FamilyError),
}

/// Rules inserted at the top of a kernel chain and rules appended to it.
type Hooks = (Vec<Rule>, Vec<Rule>);

/// What was programmed for one local endpoint, to be taken away when it changes.
#[derive(Debug, Clone, Default)]
struct Programmed {
    chains: Vec<(TableKind, String)>,
    groups: Vec<(TableKind, PolicyGroup)>,
    routes: Vec<IpNet>,
    iface: String,
}

/// Counts from one apply.
#[derive(Debug, Clone, Default)]
pub struct ApplySummary {
    /// How long each step took, in order.
    pub phases: Vec<(&'static str, Duration)>,
    pub chains_written: usize,
    pub chains_deleted: usize,
    pub restores: usize,
    pub sets_written: usize,
    pub members_changed: usize,
    pub sets_deleted: usize,
    pub routes_added: usize,
    pub routes_removed: usize,
    pub waiting_for_interface: usize,
}

impl ApplySummary {
    fn add_nft(&mut self, st: &crate::nftables::table::NftStats) {
        self.chains_written += st.chains_written + st.base_chains_written;
        self.chains_deleted += st.chains_deleted;
        self.restores += st.transactions;
        self.sets_written += st.sets_created;
        self.members_changed += st.set_elements_changed + st.map_elements_changed;
        self.sets_deleted += st.sets_deleted;
    }
}

/// The whole dataplane.
#[derive(Debug)]
pub struct Dataplane {
    cfg: DataplaneConfig,
    exec: Arc<dyn Exec>,
    families: Vec<Family>,
    routes: RouteTable,
    /// Workload interface → endpoint.
    wl_ifaces: BTreeMap<String, EndpointId>,
    /// Host endpoint interfaces by kind of policy they carry (all of them: `hep_owner`).
    hep_untracked: BTreeSet<String>,
    hep_pre_dnat: BTreeSet<String>,
    /// This node's host endpoints, by name; which interfaces they own is resolved by
    /// [`hostendpoints::resolve`] into `hep_owner`.
    heps: BTreeMap<String, LocalEndpoint>,
    /// Interface → the host endpoint rendered for it.
    hep_owner: BTreeMap<String, String>,
    /// What was programmed per host endpoint interface.
    hep_programmed: HashMap<String, Programmed>,
    /// Host endpoints changed since the last resolution.
    hep_changed: HashSet<String>,
    /// The host's interfaces and their addresses (read while an endpoint needs them).
    host_addrs: HashMap<String, HashSet<IpAddr>>,
    host_addrs_stale: bool,
    spoofable: BTreeMap<String, Vec<IpNet>>,
    programmed: HashMap<EndpointId, Programmed>,
    /// Group chains (per table) and how many endpoints use each.
    group_refs: HashMap<(TableKind, String), usize>,
    /// Dispatch chain names currently set, per table, so that stale ones are removed.
    dispatch_names: HashMap<TableKind, Vec<String>>,
    wl_dispatch_dirty: bool,
    host_dispatch_dirty: bool,
    rpf_dirty: bool,
    blackholes: Vec<IpNet>,
    iface_settings: interfaces::InterfaceSettings,
    vxlan: vxlan::Vxlan,
    ipip: ipip::Ipip,
    /// The underlay MTU (read at apply time) and what encapsulation takes from it.
    host_mtu: Option<u32>,
    encap_overhead: u32,
    mtu_dirty: bool,
    /// Routes to other nodes' blocks (VXLAN).
    cluster_routes: Vec<IpNet>,
    /// Addresses local workloads gave up, whose tracked connections are to be removed.
    conntrack_flush: Vec<IpAddr>,
    /// The other dataplane's leftovers (iptables when on nftables and back) are swept at
    /// the first apply.
    sweep_other: bool,
    /// Bumped on every change; an endpoint is programmed once an apply that started at or
    /// after its generation succeeded.
    generation: u64,
    applied: u64,
    endpoint_generation: HashMap<EndpointId, u64>,
}

fn policy_refs(t: &[crate::calc::PolicyRef]) -> Vec<(crate::rules::PolicyId, String, bool)> {
    t.iter()
        .map(|r| (r.id.clone(), r.selector.clone(), false))
        .collect()
}

/// Felix's `groupTieredPolicy`.
fn group_tiers(tiers: &[TierInfo], ingress: bool, egress: bool) -> Vec<TierPolicyGroups> {
    tiers
        .iter()
        .map(|t| TierPolicyGroups {
            name: t.name.clone(),
            default_action: t.default_action.clone(),
            ingress: if ingress {
                group_policies(Direction::Inbound, &policy_refs(&t.ingress))
            } else {
                Vec::new()
            },
            egress: if egress {
                group_policies(Direction::Outbound, &policy_refs(&t.egress))
            } else {
                Vec::new()
            },
        })
        .collect()
}

fn all_groups(tiers: &[TierPolicyGroups]) -> impl Iterator<Item = &PolicyGroup> {
    tiers
        .iter()
        .flat_map(|t| t.ingress.iter().chain(t.egress.iter()))
}

fn set_type(kind: &IpSetKind) -> SetType {
    match kind {
        IpSetKind::Net => SetType::Net,
        IpSetKind::NamedPort { .. } => SetType::IpPort,
    }
}

fn net_version(n: &IpNet) -> u8 {
    if n.addr().is_ipv4() { 4 } else { 6 }
}

impl Dataplane {
    pub fn new(cfg: DataplaneConfig, exec: Arc<dyn Exec>) -> Dataplane {
        let versions: Vec<u8> = if cfg.ipv6 { vec![4, 6] } else { vec![4] };
        let families = versions.into_iter().map(|v| Family::new(v, &cfg)).collect();
        let routes = RouteTable::new(cfg.rules.workload_iface_prefixes.clone());
        let mut dp = Dataplane {
            cfg,
            exec,
            families,
            routes,
            wl_ifaces: BTreeMap::new(),
            hep_untracked: BTreeSet::new(),
            hep_pre_dnat: BTreeSet::new(),
            heps: BTreeMap::new(),
            hep_owner: BTreeMap::new(),
            hep_programmed: HashMap::new(),
            hep_changed: HashSet::new(),
            host_addrs: HashMap::new(),
            host_addrs_stale: true,
            spoofable: BTreeMap::new(),
            programmed: HashMap::new(),
            group_refs: HashMap::new(),
            dispatch_names: HashMap::new(),
            wl_dispatch_dirty: true,
            host_dispatch_dirty: true,
            rpf_dirty: true,
            blackholes: Vec::new(),
            iface_settings: interfaces::InterfaceSettings::default(),
            vxlan: vxlan::Vxlan::default(),
            ipip: ipip::Ipip::default(),
            host_mtu: None,
            encap_overhead: 0,
            mtu_dirty: true,
            cluster_routes: Vec::new(),
            conntrack_flush: Vec::new(),
            sweep_other: true,
            generation: 1,
            applied: 0,
            endpoint_generation: HashMap::new(),
        };
        dp.install_static();
        dp.update_dispatch();
        dp
    }

    pub fn config(&self) -> &DataplaneConfig {
        &self.cfg
    }

    /// The static chains, the kernel hooks and the chains that always exist (empty NAT
    /// chains, the pool sets).
    fn install_static(&mut self) {
        let rc = self.cfg.rules.clone();
        for f in &mut self.families {
            let v = f.v;
            f.update_chains(TableKind::Filter, static_filter_table_chains(&rc, v));
            f.update_chains(TableKind::Raw, static_raw_table_chains(&rc, v));
            f.update_chains(TableKind::Mangle, static_mangle_table_chains(&rc, v));
            f.update_chains(TableKind::Nat, static_nat_table_chains(&rc, v));
            f.update_chain(TableKind::Nat, nat_outgoing_chain(&rc, false, v));
            f.update_chain(TableKind::Nat, dnat_chain(&BTreeMap::new()));
            f.update_chain(TableKind::Nat, snat_chain(&BTreeMap::new()));
            f.update_chain(TableKind::Filter, cidr_block_chain(&rc, &[], v));
            let mut by_chain: BTreeMap<(&'static str, &'static str), Hooks> = BTreeMap::new();
            for h in kernel_hooks(&rc, v) {
                let e = by_chain.entry((h.table, h.kernel_chain)).or_default();
                if h.insert {
                    e.0.push(h.rule());
                } else {
                    e.1.push(h.rule());
                }
            }
            by_chain
                .entry(("filter", "FORWARD"))
                .or_default()
                .1
                .extend(static_filter_forward_append_rules(&rc));
            for ((table, chain), (insert, append)) in by_chain {
                let kind = TableKind::from_name(table);
                f.set_hooks(kind, chain, insert, append);
            }
            for id in [
                IPSET_ID_NETWORK_POOLS,
                IPSET_ID_NAT_OUTGOING_MASQ_POOLS,
                IPSET_ID_ALL_HOST_NETS,
            ] {
                f.replace_set(&ipset_name(v, id, rc.nftables), SetType::Net, Vec::new());
            }
        }
    }

    /// Takes the graph's changes into the desired state (no kernel I/O).
    pub fn on_changes(&mut self, calc: &CalcGraph, ch: &Changes) {
        if ch.is_empty() {
            return;
        }
        self.generation += 1;
        self.update_ipsets(calc, ch);
        for pid in &ch.policies {
            self.update_policy(calc, pid);
        }
        for name in &ch.profiles {
            self.update_profile(calc, name);
        }
        let had_heps = !self.heps.is_empty();
        for id in &ch.endpoints {
            self.update_endpoint(calc.local_endpoint(id), id);
            self.endpoint_generation.insert(id.clone(), self.generation);
        }
        if !self.hep_changed.is_empty() {
            self.resolve_host_endpoints();
        }
        if !had_heps && !self.heps.is_empty() {
            // The first host endpoint: its mangle and raw chains may jump to any policy.
            let pids: Vec<crate::rules::PolicyId> =
                calc.active_policies().map(|(id, _)| id.clone()).collect();
            for pid in &pids {
                self.update_policy(calc, pid);
            }
            let names: Vec<String> = calc.active_profiles().map(|(n, _)| n.clone()).collect();
            for n in &names {
                self.update_profile(calc, n);
            }
        }
        if ch.network {
            self.update_network(calc);
        }
        self.update_dispatch();
    }

    fn update_ipsets(&mut self, calc: &CalcGraph, ch: &Changes) {
        let nft = self.cfg.rules.nftables;
        let idx = calc.ipsets();
        for id in &ch.ipsets.sets {
            for f in &mut self.families {
                let name = ipset_name(f.v, id, nft);
                match (idx.definition(id), idx.members(id)) {
                    (Some(def), Some(members)) => {
                        let v = f.v;
                        let ms: Vec<String> = members
                            .filter(|m| m.ip_version() == v)
                            .map(|m| m.to_string())
                            .collect();
                        f.replace_set(&name, set_type(&def.kind), ms);
                    }
                    _ => f.remove_set(&name),
                }
            }
        }
        for (id, members) in &ch.ipsets.members {
            for m in members {
                let Some(f) = self.families.iter_mut().find(|f| f.v == m.ip_version()) else {
                    continue;
                };
                let name = ipset_name(f.v, id, nft);
                f.set_member(&name, &m.to_string(), idx.contains(id, m));
            }
        }
    }

    fn update_policy(&mut self, calc: &CalcGraph, pid: &crate::rules::PolicyId) {
        let rc = &self.cfg.rules;
        let heps = !self.heps.is_empty();
        for f in &mut self.families {
            // Rendered only to learn the names when the policy is gone.
            let empty = crate::rules::PolicyRules::default();
            let rules = calc.active_policy(pid);
            let chains = policy_chains(rc, pid, rules.unwrap_or(&empty), f.v);
            // Felix puts policies in every table (only referenced chains are programmed);
            // here mangle and raw get them only while a host endpoint may refer to them
            // there, which saves their memory on nodes without host endpoints.
            let kinds: &[TableKind] = if rules.is_some() && !heps {
                &[TableKind::Filter]
            } else {
                &[TableKind::Filter, TableKind::Mangle, TableKind::Raw]
            };
            for k in kinds.iter().copied() {
                for c in &chains {
                    if rules.is_some() {
                        f.update_chain(k, c.clone());
                    } else {
                        f.remove_chain(k, &c.name);
                    }
                }
            }
        }
    }

    fn update_profile(&mut self, calc: &CalcGraph, name: &str) {
        let rc = &self.cfg.rules;
        let heps = !self.heps.is_empty();
        for f in &mut self.families {
            let rules = calc.active_profile(name);
            let (inbound, outbound) = rules
                .map(|r| (r.inbound.as_slice(), r.outbound.as_slice()))
                .unwrap_or((&[], &[]));
            let chains = profile_chains(rc, name, inbound, outbound, f.v);
            for c in &chains {
                let outbound_chain = c.name.starts_with(crate::rules::PROFILE_OUTBOUND_PREFIX);
                for k in [TableKind::Filter, TableKind::Mangle] {
                    if k == TableKind::Mangle && !(outbound_chain && (heps || rules.is_none())) {
                        continue;
                    }
                    if rules.is_some() {
                        f.update_chain(k, c.clone());
                    } else {
                        f.remove_chain(k, &c.name);
                    }
                }
            }
        }
    }

    fn incref_group(&mut self, kind: TableKind, g: &PolicyGroup) {
        if should_be_inlined(g) {
            return;
        }
        let name = policy_group_chain_name(g, self.cfg.rules.nftables);
        let n = self.group_refs.entry((kind, name)).or_insert(0);
        *n += 1;
        if *n == 1 {
            let chains = policy_group_chains(&self.cfg.rules, g);
            for f in &mut self.families {
                f.update_chains(kind, chains.iter().cloned());
            }
        }
    }

    fn decref_group(&mut self, kind: TableKind, g: &PolicyGroup) {
        if should_be_inlined(g) {
            return;
        }
        let name = policy_group_chain_name(g, self.cfg.rules.nftables);
        let key = (kind, name);
        let Some(n) = self.group_refs.get_mut(&key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.group_refs.remove(&key);
            for f in &mut self.families {
                f.remove_chain(kind, &key.1);
            }
        }
    }

    /// Renders (or removes) one local endpoint's chains, groups and routes.
    fn update_endpoint(&mut self, le: Option<&LocalEndpoint>, id: &EndpointId) {
        if let EndpointId::Host { name } = id {
            // Rendered per interface once resolved (resolve_host_endpoints).
            match le {
                Some(le) => {
                    if le.iface.is_empty() {
                        self.host_addrs_stale = true;
                    }
                    self.heps.insert(name.clone(), le.clone());
                }
                None => {
                    self.heps.remove(name);
                }
            }
            self.hep_changed.insert(name.clone());
            return;
        }
        let old = self.programmed.remove(id).unwrap_or_default();
        let mut new = Programmed::default();
        if let Some(le) = le {
            self.render_workload(le, &mut new);
        }
        self.take_away(&old, &new);
        let kept_routes: HashSet<&IpNet> = new.routes.iter().collect();
        for r in &old.routes {
            if !kept_routes.contains(r) {
                self.routes.remove(r);
                self.conntrack_flush.push(r.addr());
            }
        }
        // An interface given up (the endpoint moved or went; when it went, `new` is empty).
        if !old.iface.is_empty() && old.iface != new.iface {
            self.iface_settings.forget(&old.iface);
            if self.wl_ifaces.get(&old.iface) == Some(id) {
                self.wl_ifaces.remove(&old.iface);
                self.wl_dispatch_dirty = true;
            }
            if self.spoofable.remove(&old.iface).is_some() {
                self.rpf_dirty = true;
            }
        }
        if le.is_none() {
            self.endpoint_generation.remove(id);
            return;
        }
        self.programmed.insert(id.clone(), new);
    }

    fn render_workload(&mut self, le: &LocalEndpoint, out: &mut Programmed) {
        let tiers = group_tiers(&le.tiers, true, true);
        for g in all_groups(&tiers) {
            self.incref_group(TableKind::Filter, g);
            out.groups.push((TableKind::Filter, g.clone()));
        }
        let rc = self.cfg.rules.clone();
        for f in &mut self.families {
            let chains =
                workload_endpoint_to_iptables_chains(&rc, &le.iface, true, &tiers, &le.profile_ids);
            if f.v == 4 {
                out.chains
                    .extend(chains.iter().map(|c| (TableKind::Filter, c.name.clone())));
            }
            f.update_chains(TableKind::Filter, chains);
        }
        for n in &le.nets {
            if self.families.iter().any(|f| f.v == net_version(n)) {
                self.routes.set(*n, RouteTarget::Device(le.iface.clone()));
                out.routes.push(*n);
            }
        }
        out.iface = le.iface.clone();
        if self
            .wl_ifaces
            .insert(le.iface.clone(), le.id.clone())
            .as_ref()
            != Some(&le.id)
        {
            self.wl_dispatch_dirty = true;
            self.iface_settings
                .want(&le.iface, !le.allow_spoofed_sources.is_empty());
        }
        let spoof = le.allow_spoofed_sources.clone();
        let had = self.spoofable.get(&le.iface).cloned().unwrap_or_default();
        if had != spoof {
            if spoof.is_empty() {
                self.spoofable.remove(&le.iface);
            } else {
                self.spoofable.insert(le.iface.clone(), spoof);
            }
            self.rpf_dirty = true;
        }
    }

    /// Takes away what `old` programmed and `new` does not use.
    fn take_away(&mut self, old: &Programmed, new: &Programmed) {
        let keep: HashSet<&(TableKind, String)> = new.chains.iter().collect();
        for (k, name) in &old.chains {
            if !keep.contains(&(*k, name.clone())) {
                for f in &mut self.families {
                    f.remove_chain(*k, name);
                }
            }
        }
        for (k, g) in &old.groups {
            self.decref_group(*k, g);
        }
    }

    /// Gives each host interface the host endpoint Felix would, and renders the interfaces
    /// whose endpoint changed (another one won it, or its policies or labels changed).
    fn resolve_host_endpoints(&mut self) {
        let refs: Vec<hostendpoints::HostEndpointRef<'_>> = self
            .heps
            .iter()
            .map(|(name, le)| hostendpoints::HostEndpointRef {
                name,
                iface: &le.iface,
                expected_ips: le.nets.iter().map(IpNet::addr).collect(),
            })
            .collect();
        let want = hostendpoints::resolve(&refs, &self.host_addrs);
        let ifaces: BTreeSet<String> = want.keys().chain(self.hep_owner.keys()).cloned().collect();
        for iface in ifaces {
            let new_owner = want.get(&iface);
            let same = self.hep_owner.get(&iface) == new_owner
                && !new_owner.is_some_and(|n| self.hep_changed.contains(n));
            if same {
                continue;
            }
            let old = self.hep_programmed.remove(&iface).unwrap_or_default();
            let mut new = Programmed::default();
            match new_owner.and_then(|n| self.heps.get(n)).cloned() {
                Some(le) => self.render_host_endpoint(&le, &iface, &mut new),
                None => {
                    self.hep_untracked.remove(&iface);
                    self.hep_pre_dnat.remove(&iface);
                    self.host_dispatch_dirty = true;
                }
            }
            self.take_away(&old, &new);
            if !new.chains.is_empty() {
                self.hep_programmed.insert(iface, new);
            }
        }
        for (name, le) in &self.heps {
            if le.iface.is_empty() && !want.values().any(|n| n == name) {
                tracing::debug!(endpoint = %name, "host endpoint matches no interface (no interface holds its expectedIPs)");
            }
        }
        self.hep_owner = want;
        self.hep_changed.clear();
    }

    /// The host's interface addresses, as tests (and nodes without netlink) give them.
    pub fn set_host_addresses(&mut self, addrs: HashMap<String, HashSet<IpAddr>>) {
        if addrs != self.host_addrs {
            self.host_addrs = addrs;
            self.generation += 1;
            self.resolve_host_endpoints();
            self.update_dispatch();
        }
        self.host_addrs_stale = false;
    }

    fn render_host_endpoint(&mut self, le: &LocalEndpoint, iface: &str, out: &mut Programmed) {
        let iface = iface.to_string();
        let rc = self.cfg.rules.clone();
        let normal = group_tiers(&le.tiers, true, true);
        let forward = group_tiers(&le.forward_tiers, true, true);
        let pre_dnat = group_tiers(&le.pre_dnat_tiers, true, false);
        let untracked = group_tiers(&le.untracked_tiers, true, true);
        for (kind, tiers) in [
            (TableKind::Filter, &normal),
            (TableKind::Filter, &forward),
            (TableKind::Mangle, &normal),
            (TableKind::Mangle, &pre_dnat),
            (TableKind::Raw, &untracked),
        ] {
            for g in all_groups(tiers) {
                self.incref_group(kind, g);
                out.groups.push((kind, g.clone()));
            }
        }
        for f in &mut self.families {
            let mut per_table: Vec<(TableKind, Vec<Chain>)> = vec![
                (
                    TableKind::Filter,
                    host_endpoint_to_filter_chains(&rc, &iface, &normal, &forward, &le.profile_ids),
                ),
                (
                    TableKind::Mangle,
                    host_endpoint_to_mangle_egress_chains(&rc, &iface, &normal, &le.profile_ids),
                ),
            ];
            if !le.pre_dnat_tiers.is_empty() {
                per_table.push((
                    TableKind::Mangle,
                    host_endpoint_to_mangle_ingress_chains(&rc, &iface, &pre_dnat),
                ));
            }
            if !le.untracked_tiers.is_empty() {
                per_table.push((
                    TableKind::Raw,
                    host_endpoint_to_raw_chains(&rc, &iface, &untracked),
                ));
            }
            for (k, chains) in per_table {
                if f.v == 4 {
                    out.chains
                        .extend(chains.iter().map(|c| (k, c.name.clone())));
                }
                f.update_chains(k, chains);
            }
        }
        out.iface = iface.clone();
        if le.untracked_tiers.is_empty() {
            self.hep_untracked.remove(&iface);
        } else {
            self.hep_untracked.insert(iface.clone());
        }
        if le.pre_dnat_tiers.is_empty() {
            self.hep_pre_dnat.remove(&iface);
        } else {
            self.hep_pre_dnat.insert(iface.clone());
        }
        self.host_dispatch_dirty = true;
    }

    fn replace_dispatch(&mut self, kind: TableKind, chains: Vec<Chain>) {
        let names: Vec<String> = chains.iter().map(|c| c.name.clone()).collect();
        let old = self
            .dispatch_names
            .insert(kind, names.clone())
            .unwrap_or_default();
        for f in &mut self.families {
            for o in &old {
                if !names.contains(o) {
                    f.remove_chain(kind, o);
                }
            }
            f.update_chains(kind, chains.iter().cloned());
        }
    }

    fn update_dispatch(&mut self) {
        let rc = self.cfg.rules.clone();
        if self.wl_dispatch_dirty || self.host_dispatch_dirty {
            // Workload and host dispatch chains share the filter table: one list, so that
            // replacing one kind never removes the other.
            let ifaces: Vec<String> = self.wl_ifaces.keys().cloned().collect();
            let mut chains = workload_dispatch_chains(&rc, &ifaces);
            chains.extend(self.host_filter_dispatch(&rc));
            self.replace_dispatch(TableKind::Filter, chains);
            if rc.nftables {
                // nftables dispatches through verdict maps, which the chains look up.
                let (from, to) = dispatch_mappings(&rc, &ifaces);
                let entries = |m: crate::rules::dispatch::DispatchMap| -> Vec<(String, String)> {
                    m.into_iter()
                        .filter_map(|(k, v)| v.into_iter().next().map(|v| (k, v)))
                        .collect()
                };
                let (from, to) = (entries(from), entries(to));
                for f in &mut self.families {
                    f.replace_map(
                        TableKind::Filter,
                        NFTABLES_FROM_WORKLOAD_DISPATCH_MAP,
                        from.clone(),
                    );
                    f.replace_map(
                        TableKind::Filter,
                        NFTABLES_TO_WORKLOAD_DISPATCH_MAP,
                        to.clone(),
                    );
                }
            }
            self.wl_dispatch_dirty = false;
        }
        if self.host_dispatch_dirty {
            let (names, default) = self.hep_names(|_| true);
            let (pre, pre_default) = self.hep_names(|i| self.hep_pre_dnat.contains(i));
            let mut mangle = from_host_dispatch_chains(&rc, &pre, pre_default.as_deref());
            mangle.extend(to_host_dispatch_chains(&rc, &names, default.as_deref()));
            self.replace_dispatch(TableKind::Mangle, mangle);
            let (untracked, _) = self.hep_names(|i| self.hep_untracked.contains(i));
            let raw = host_dispatch_chains(&rc, &untracked, None, false);
            self.replace_dispatch(TableKind::Raw, raw);
            self.host_dispatch_dirty = false;
        }
        if self.rpf_dirty {
            for f in &mut self.families {
                let v = f.v;
                let rules = self
                    .spoofable
                    .iter()
                    .flat_map(|(iface, nets)| {
                        nets.iter()
                            .filter(move |n| net_version(n) == v)
                            .map(move |n| {
                                Rule::new(
                                    MatchCriteria::new()
                                        .in_interface(iface)
                                        .source_net(&n.to_string()),
                                    Action::Accept,
                                )
                            })
                    })
                    .collect();
                f.update_chain(TableKind::Raw, Chain::new(CHAIN_RPF_SKIP, rules));
            }
            self.rpf_dirty = false;
        }
    }

    fn host_filter_dispatch(&self, rc: &RulesConfig) -> Vec<Chain> {
        let (names, default) = self.hep_names(|_| true);
        host_dispatch_chains(rc, &names, default.as_deref(), true)
    }

    /// Host endpoint interfaces passing `keep`, with the all-interfaces endpoint split out
    /// as the default.
    fn hep_names(&self, keep: impl Fn(&String) -> bool) -> (Vec<String>, Option<String>) {
        let mut names = Vec::new();
        let mut default = None;
        for i in self.hep_owner.keys().filter(|i| keep(i)) {
            if i == ALL_INTERFACES {
                default = Some(i.clone());
            } else {
                names.push(i.clone());
            }
        }
        (names, default)
    }

    fn update_network(&mut self, calc: &CalcGraph) {
        let net = calc.network();
        let rc = self.cfg.rules.clone();
        for f in &mut self.families {
            let v = f.v;
            let pools: Vec<&crate::calc::network::Pool> = net
                .pools
                .values()
                .filter(|p| net_version(&p.cidr) == v)
                .collect();
            f.replace_set(
                &ipset_name(v, IPSET_ID_NETWORK_POOLS, rc.nftables),
                SetType::Net,
                pools.iter().map(|p| p.cidr.to_string()),
            );
            f.replace_set(
                &ipset_name(v, IPSET_ID_NAT_OUTGOING_MASQ_POOLS, rc.nftables),
                SetType::Net,
                pools
                    .iter()
                    .filter(|p| p.nat_outgoing)
                    .map(|p| p.cidr.to_string()),
            );
            let hosts = net.nodes.values().filter_map(|n| {
                let a = if v == 4 { n.ipv4 } else { n.ipv6 };
                a.map(|a| a.addr().to_string())
            });
            f.replace_set(
                &ipset_name(v, IPSET_ID_ALL_HOST_NETS, rc.nftables),
                SetType::Net,
                hosts,
            );
            let active = pools.iter().any(|p| p.nat_outgoing);
            f.update_chain(TableKind::Nat, nat_outgoing_chain(&rc, active, v));
        }
        // Blackholes for this node's blocks, so traffic to their unused addresses stops here.
        let mine: Vec<IpNet> = net
            .blocks
            .iter()
            .filter(|(cidr, host)| {
                host.as_deref() == Some(self.cfg.hostname.as_str())
                    && cidr.prefix_len() < cidr.max_prefix_len()
                    && self.families.iter().any(|f| f.v == net_version(cidr))
            })
            .map(|(c, _)| *c)
            .collect();
        for old in std::mem::take(&mut self.blackholes) {
            if !mine.contains(&old) {
                self.routes.remove(&old);
            }
        }
        for b in &mine {
            self.routes.set(*b, RouteTarget::Blackhole);
        }
        self.blackholes = mine;
        self.update_vxlan(net);
        let ipip_on = net.ipip_enabled() && self.families.iter().any(|f| f.v == 4);
        let address = net
            .nodes
            .get(&self.cfg.hostname)
            .and_then(|n| match n.ipip_tunnel_v4 {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            });
        self.ipip.set(ipip_on.then(|| {
            ipip::IpipDevice {
                mtu: self
                    .host_mtu
                    .unwrap_or(DEFAULT_HOST_MTU)
                    .saturating_sub(IPIP_OVERHEAD),
                address,
            }
        }));
        // The pod MTU: the underlay's, less what encapsulation takes.
        let overhead = if net.vxlan_enabled(6) && self.cfg.ipv6 {
            VXLAN_V6_OVERHEAD
        } else if net.vxlan_enabled(4) {
            VXLAN_OVERHEAD
        } else if net.ipip_enabled() {
            IPIP_OVERHEAD
        } else {
            0
        };
        // Only a different overhead rewrites the MTU file (reading the host MTU lists every
        // link); the periodic refresh re-reads it anyway.
        if overhead != self.encap_overhead {
            self.encap_overhead = overhead;
            self.mtu_dirty = true;
        }
    }

    /// The VXLAN tunnel endpoints and the routes to other nodes' blocks in VXLAN pools.
    fn update_vxlan(&mut self, net: &crate::calc::network::Network) {
        use crate::calc::network::vtep_mac_for_host;
        use calico_api::kinds::EncapMode;
        let host = self.cfg.hostname.clone();
        let on = net.vxlan_enabled(4) && self.families.iter().any(|f| f.v == 4);
        let v4 = |a: IpAddr| match a {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        };
        let vtep = |name: &str, n: &crate::calc::network::NodeInfo| -> Option<vxlan::Vtep> {
            Some(vxlan::Vtep {
                node: name.to_string(),
                tunnel_ip: v4(n.vxlan_tunnel_v4?)?,
                mac: n.vxlan_mac_v4.unwrap_or_else(|| vtep_mac_for_host(name, 4)),
                node_ip: v4(n.ipv4?.addr())?,
            })
        };
        let me = net.nodes.get(&host).and_then(|n| vtep(&host, n));
        let remotes: BTreeMap<String, vxlan::Vtep> = if on {
            net.nodes
                .iter()
                .filter(|(name, _)| **name != host)
                .filter_map(|(name, n)| vtep(name, n).map(|v| (name.clone(), v)))
                .collect()
        } else {
            BTreeMap::new()
        };
        let settings = vxlan::DeviceSettings {
            vni: self.cfg.rules.vxlan_vni,
            port: self.cfg.rules.vxlan_port,
            mtu: self
                .host_mtu
                .unwrap_or(DEFAULT_HOST_MTU)
                .saturating_sub(VXLAN_OVERHEAD),
        };
        if on && me.is_none() {
            tracing::warn!(node = %host,
                "VXLAN pools exist but this node has no VXLAN tunnel address or IPv4 address in its Node resource yet; no tunnel until it does");
        }
        self.vxlan
            .set_local(me.clone().filter(|_| on).map(|m| (settings, m)));
        self.vxlan.set_remotes(remotes.values().cloned());
        let nft = self.cfg.rules.nftables;
        for f in self.families.iter_mut().filter(|f| f.v == 4) {
            let name = ipset_name(4, crate::rules::IPSET_ID_ALL_VXLAN_SOURCE_NETS, nft);
            if !on {
                f.remove_set(&name);
                continue;
            }
            // Who may send us VXLAN: every node with a tunnel endpoint.
            f.replace_set(
                &name,
                SetType::Net,
                net.nodes
                    .values()
                    .filter(|n| n.vxlan_tunnel_v4.is_some())
                    .filter_map(|n| n.ipv4.map(|a| a.addr().to_string())),
            );
        }
        let my_subnet = net.nodes.get(&host).and_then(|n| n.ipv4);
        let mut routes = Vec::new();
        if on && me.is_some() {
            let target_for = |pool: &crate::calc::network::Pool, r: &vxlan::Vtep| {
                let same_subnet = my_subnet.is_some_and(|s| s.contains(&IpAddr::V4(r.node_ip)));
                if pool.vxlan == EncapMode::CrossSubnet && same_subnet {
                    RouteTarget::Gateway(IpAddr::V4(r.node_ip))
                } else {
                    RouteTarget::OnLink {
                        gateway: IpAddr::V4(r.tunnel_ip),
                        iface: vxlan::VXLAN_IFACE.to_string(),
                    }
                }
            };
            for (cidr, owner) in &net.blocks {
                let Some(owner) = owner.as_deref().filter(|o| *o != host) else {
                    continue;
                };
                let Some(pool) = net.pool_of(cidr).filter(|p| p.vxlan != EncapMode::Never) else {
                    continue;
                };
                let Some(r) = remotes.get(owner) else {
                    continue;
                };
                self.routes.set(*cidr, target_for(pool, r));
                routes.push(*cidr);
            }
            // A borrowed address lives on another node than its block's owner: a host route
            // to that node, more specific than the block's route or our own blackhole
            // (Felix's route resolver does the same from the workload's node).
            for (cidr, used) in &net.borrowed {
                let Some(pool) = net.pool_of(cidr).filter(|p| p.vxlan != EncapMode::Never) else {
                    continue;
                };
                for (ip, node) in used {
                    let Some(r) = remotes.get(node) else { continue };
                    let Ok(host_route) = IpNet::new(*ip, if ip.is_ipv4() { 32 } else { 128 })
                    else {
                        continue;
                    };
                    self.routes.set(host_route, target_for(pool, r));
                    routes.push(host_route);
                }
            }
        }
        for old in std::mem::take(&mut self.cluster_routes) {
            if !routes.contains(&old) {
                self.routes.remove(&old);
            }
        }
        self.cluster_routes = routes;
    }

    /// Why the pools' encapsulation cannot work on this node (a kernel without IPIP).
    pub fn encap_problem(&self) -> Option<String> {
        self.ipip.unavailable().map(str::to_string)
    }

    /// An interface appeared (from the interface monitor): a workload interface's routes
    /// can go in now rather than at the next check.
    pub fn interface_appeared(&mut self, name: &str) {
        if self.wl_ifaces.contains_key(name) {
            self.routes.invalidate();
        }
    }

    /// Whether some host endpoint is matched by `expectedIPs` (no interface name), so the
    /// host's addresses are needed.
    fn has_address_matched_heps(&self) -> bool {
        self.heps.values().any(|le| le.iface.is_empty())
    }

    /// Some interface's addresses changed: host endpoints matched by address are resolved
    /// again at the next apply.
    pub fn host_addresses_changed(&mut self) {
        self.host_addrs_stale = true;
    }

    /// The interfaces a host endpoint was resolved to (empty: none matched it).
    pub fn host_endpoint_interfaces(&self, name: &str) -> Vec<&str> {
        self.hep_owner
            .iter()
            .filter(|(_, owner)| owner.as_str() == name)
            .map(|(iface, _)| iface.as_str())
            .collect()
    }

    /// Whether the local endpoint's current state is in the kernel.
    pub fn is_programmed(&self, id: &EndpointId) -> bool {
        self.endpoint_generation
            .get(id)
            .is_some_and(|g| *g <= self.applied)
            && self.programmed.contains_key(id)
    }

    pub fn needs_apply(&self) -> bool {
        self.applied < self.generation
            || (self.cfg.netlink
                && (self.routes.needs_apply()
                    || (self.host_addrs_stale && self.has_address_matched_heps())
                    || self.vxlan.needs_apply()
                    || self.ipip.needs_apply()))
            || self.families.iter().any(Family::needs_apply)
    }

    /// The earliest retry a family scheduled (IP sets the kernel still held).
    pub fn next_retry(&self) -> Option<std::time::Instant> {
        self.families.iter().filter_map(Family::next_retry).min()
    }

    /// Reads the kernel again at the next apply, to repair what someone else changed.
    pub fn invalidate_tables(&mut self) {
        for f in &mut self.families {
            f.invalidate_tables();
        }
    }

    pub fn invalidate_ipsets(&mut self) {
        for f in &mut self.families {
            f.invalidate_sets();
        }
    }

    pub fn invalidate_routes(&mut self) {
        self.routes.invalidate();
        self.host_addrs_stale = true;
        self.vxlan.invalidate();
        self.ipip.invalidate();
        self.mtu_dirty = true;
        // Interface settings are checked again too (someone may have changed them).
        for iface in self.wl_ifaces.keys() {
            let spoof = self.spoofable.contains_key(iface);
            self.iface_settings.want(iface, spoof);
        }
    }

    /// Removes what the backend not in use left behind: Calico's chains and hooks in the
    /// iptables tables (both flavours) when on nftables; the `calico` nftables tables when on
    /// iptables. Never fatal: a leftover costs nothing but a lookup.
    fn sweep_other_backend(&self) {
        let exec = self.exec.as_ref();
        let versions: Vec<u8> = self.families.iter().map(|f| f.v).collect();
        if self.cfg.rules.nftables {
            // Legacy xtables only if its modules are loaded already (never load them).
            let legacy = std::path::Path::new("/proc/net/ip_tables_names").exists();
            let flavours: Vec<Backend> = if legacy {
                vec![Backend::Nft, Backend::Legacy]
            } else {
                vec![Backend::Nft]
            };
            for v in &versions {
                for b in &flavours {
                    // Tables with nothing wanted: applying them deletes what is ours.
                    let mut tables: Vec<iptables::Table> = TableKind::ALL
                        .iter()
                        .map(|k| iptables::Table::new(k.name(), *v, *b, self.cfg.features, true))
                        .collect();
                    if let Err(e) = iptables::apply_tables(&mut tables, exec) {
                        tracing::debug!(error = %e, "sweeping iptables leftovers");
                    }
                }
                let mut sets = ipsets::IpSets::new(*v);
                let _ = sets.apply_updates(exec);
                let _ = sets.destroy_unwanted(exec);
            }
        } else {
            for v in &versions {
                let family = if *v == 6 { "ip6" } else { "ip" };
                // Fails when there is no such table, which is the usual case.
                let _ = exec.run("nft", &["delete", "table", family, "calico"], None);
            }
        }
    }

    /// Writes everything that differs, in Felix's order.
    pub async fn apply(&mut self) -> Result<ApplySummary, DataplaneError> {
        let started_at = self.generation;
        let mut s = ApplySummary::default();
        let exec = self.exec.clone();
        let mut t = std::time::Instant::now();
        let mut phase = |s: &mut ApplySummary, name: &'static str| {
            s.phases.push((name, t.elapsed()));
            t = std::time::Instant::now();
        };
        if self.sweep_other && self.cfg.netlink {
            self.sweep_other_backend();
            phase(&mut s, "sweep");
        }
        self.sweep_other = false;
        for f in &mut self.families {
            f.apply_sets(exec.as_ref(), &mut s)?;
        }
        phase(&mut s, "sets");
        if self.cfg.netlink {
            let h = self.routes.handle().await?;
            if self.mtu_dirty || self.host_mtu.is_none() {
                let host = interfaces::host_mtu(&h).await;
                self.host_mtu = Some(host);
                self.vxlan.set_mtu(host.saturating_sub(VXLAN_OVERHEAD));
                self.ipip.set_mtu(host.saturating_sub(IPIP_OVERHEAD));
                if let Some(path) = &self.cfg.mtu_file {
                    let pod = host.saturating_sub(self.encap_overhead);
                    if let Err(e) = interfaces::write_mtu_file(path, pod) {
                        tracing::warn!(file = %path.display(), error = %e, "cannot write the MTU file");
                    }
                }
                self.mtu_dirty = false;
            }
            if self.vxlan.needs_apply() {
                // The tunnel before the routes that use it.
                self.vxlan.apply(&h).await?;
            }
            if self.ipip.needs_apply() {
                self.ipip.apply(&h).await?;
            }
            if self.host_addrs_stale && self.has_address_matched_heps() {
                match interfaces::host_addresses(&h, &self.cfg.rules.workload_iface_prefixes).await
                {
                    Ok(addrs) => self.set_host_addresses(addrs),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the host's addresses for host endpoints")
                    }
                }
            }
            // A full listing of links and routes costs ~30 ms with a thousand pods: only
            // when something changed, a refresh is due, or a route waits for its interface.
            if self.routes.needs_apply() {
                let rs = self.routes.apply().await?;
                s.routes_added += rs.added;
                s.routes_removed += rs.removed;
                s.waiting_for_interface += rs.waiting_for_interface;
            }
            self.iface_settings.apply(self.cfg.ipv6);
            phase(&mut s, "routes");
        }
        // IPv4 first with iptables; with nftables both families in one transaction. At a
        // thousand pods each iptables-nft-restore or nft run spends 20-30 ms loading the
        // ruleset before it changes anything, and two at once on a small node only share
        // that time (measured with make bench-felix).
        family::Family::apply_rules_all(&mut self.families, exec.as_ref(), &mut s)?;
        phase(&mut s, "rules");
        if self.cfg.netlink {
            // After the routes and rules are gone, so no new packet recreates an entry.
            for ip in std::mem::take(&mut self.conntrack_flush) {
                interfaces::flush_conntrack(exec.as_ref(), ip);
            }
        } else {
            self.conntrack_flush.clear();
        }
        self.applied = started_at;
        Ok(s)
    }

    /// A hint for the retry timer.
    pub fn retry_after(&self) -> Duration {
        Duration::from_millis(100)
    }

    /// Counts for metrics.
    pub fn chain_count(&self) -> usize {
        self.families.iter().map(Family::chain_count).sum()
    }
}

#[cfg(test)]
mod tests;
