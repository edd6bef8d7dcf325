//! The calculation graph: from the datastore's resources to what this node's dataplane needs.
//!
//! It follows Felix's calculation graph in meaning and output:
//!
//! - every endpoint and network set in the cluster feeds the [IP set index](ipsets), with its
//!   labels merged over those its profiles apply (own labels win, then profiles in order);
//! - a policy is *active* when it selects at least one local endpoint (or carries the
//!   `AssumeNeededOnEveryNode` hint); a profile when a local endpoint names it (a missing
//!   profile is active with deny-all rules). Only active rules are parsed into the rule model
//!   and only their selectors become IP sets;
//! - each local endpoint gets its policies in tier order (tiers by order then name, tiers
//!   without a Tier resource skipped; policies by order, then name/namespace/kind), split as
//!   Felix splits them into normal, untracked, pre-DNAT and apply-on-forward tiers.
//!
//! Work per change is proportional to the change: an endpoint update re-evaluates the active
//! IP sets and (for a local endpoint) the policy selectors against that endpoint only; a
//! policy update evaluates its selector against the local endpoints only. Everything that
//! changed is recorded and handed to the dataplane by [`CalcGraph::take_changes`].

pub mod ipsets;
pub mod network;
pub mod ruleparse;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use calico_api::kinds::{Action, DEFAULT_TIER, DEFAULT_TIER_ORDER, PerformanceHint, PolicyType};
use calico_api::names::{
    LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT, NAMESPACE_PROFILE_PREFIX,
};
use calico_api::resource::{
    GlobalNetworkPolicy, GlobalNetworkSet, HostEndpoint, NetworkPolicy, NetworkSet, Profile,
    WorkloadEndpoint,
};
use calico_api::selector::Selector;
use calico_api::{AnyResource, Kind, Resource, scoping};
use ipnet::IpNet;

use crate::rules::{ParsedRule, PolicyId, PolicyRules};
use ipsets::{IpSetChanges, IpSetIndex, NamedPort, Source, SourceId};
use network::Network;
use ruleparse::{IpSetDef, parse_rule};

/// An endpoint's identity (workload endpoints by namespace and v3 name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointId {
    Workload { namespace: String, name: String },
    Host { name: String },
}

impl EndpointId {
    fn source(&self) -> SourceId {
        match self {
            EndpointId::Workload { namespace, name } => SourceId::Workload {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            EndpointId::Host { name } => SourceId::Host { name: name.clone() },
        }
    }
}

impl std::fmt::Display for EndpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointId::Workload { namespace, name } => write!(f, "{namespace}/{name}"),
            EndpointId::Host { name } => write!(f, "hostendpoint/{name}"),
        }
    }
}

/// A policy in an endpoint's tier, with the selector policy groups are formed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyRef {
    pub id: PolicyId,
    /// The policy's effective selector, canonical (Felix's `OriginalSelector`).
    pub selector: String,
}

/// One tier of an endpoint's policies (Felix's `proto.TierInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TierInfo {
    pub name: String,
    /// `Deny` or `Pass`.
    pub default_action: String,
    pub ingress: Vec<PolicyRef>,
    pub egress: Vec<PolicyRef>,
}

/// What the dataplane needs of an endpoint on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub id: EndpointId,
    /// The host-side interface (`*` for a host endpoint covering every interface; empty
    /// for a host endpoint known only by its addresses).
    pub iface: String,
    pub mac: String,
    pub nets: Vec<IpNet>,
    /// Floating IPs: (external, internal).
    pub nats: Vec<(IpAddr, IpAddr)>,
    pub allow_spoofed_sources: Vec<IpNet>,
    pub profile_ids: Vec<String>,
    pub tiers: Vec<TierInfo>,
    /// Host endpoints only: doNotTrack, preDNAT and applyOnForward policies.
    pub untracked_tiers: Vec<TierInfo>,
    pub pre_dnat_tiers: Vec<TierInfo>,
    pub forward_tiers: Vec<TierInfo>,
}

impl LocalEndpoint {
    pub fn is_host(&self) -> bool {
        matches!(self.id, EndpointId::Host { .. })
    }
}

/// Rules of an active profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ProfileRules {
    pub inbound: Vec<ParsedRule>,
    pub outbound: Vec<ParsedRule>,
}

/// What changed since the last [`CalcGraph::take_changes`]. Look the new state up in the
/// graph: an ID whose lookup returns `None` went away.
#[derive(Debug, Default)]
pub struct Changes {
    pub endpoints: BTreeSet<EndpointId>,
    pub policies: BTreeSet<PolicyId>,
    pub profiles: BTreeSet<String>,
    pub ipsets: IpSetChanges,
    /// Pools, nodes or blocks changed.
    pub network: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
            && self.policies.is_empty()
            && self.profiles.is_empty()
            && self.ipsets.is_empty()
            && !self.network
    }
}

#[derive(Debug, Clone)]
struct PolicyState {
    tier: String,
    order: f64,
    /// `name/namespace/Kind`, Felix's tie-breaker after order.
    sort_name: String,
    selector: Selector,
    ingress: bool,
    egress: bool,
    do_not_track: bool,
    pre_dnat: bool,
    apply_on_forward: bool,
    assume_needed: bool,
    namespace: Option<String>,
    inbound: Vec<calico_api::kinds::Rule>,
    outbound: Vec<calico_api::kinds::Rule>,
}

/// An active policy: its rendered rules and the IP sets they use.
#[derive(Debug, Clone)]
struct ActivePolicy {
    rules: PolicyRules,
    ipsets: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct ProfileState {
    labels: BTreeMap<String, String>,
    inbound: Vec<calico_api::kinds::Rule>,
    outbound: Vec<calico_api::kinds::Rule>,
}

#[derive(Debug, Clone)]
struct ActiveProfile {
    rules: ProfileRules,
    ipsets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct LocalInfo {
    iface: String,
    mac: String,
    nats: Vec<(IpAddr, IpAddr)>,
    allow_spoofed_sources: Vec<IpNet>,
}

#[derive(Debug, Clone)]
struct EndpointState {
    own_labels: BTreeMap<String, String>,
    profiles: Vec<String>,
    nets: Vec<IpNet>,
    ports: Vec<NamedPort>,
    local: Option<LocalInfo>,
}

#[derive(Debug, Clone)]
struct NetworkSetState {
    own_labels: BTreeMap<String, String>,
    profiles: Vec<String>,
    nets: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct TierState {
    order: Option<f64>,
    pass: bool,
}

/// The graph.
#[derive(Debug)]
pub struct CalcGraph {
    hostname: String,
    endpoints: HashMap<EndpointId, EndpointState>,
    network_sets: HashMap<SourceId, NetworkSetState>,
    /// Which endpoints and network sets name each profile (for label inheritance).
    profile_members: HashMap<String, HashSet<SourceId>>,
    profiles: HashMap<String, ProfileState>,
    policies: HashMap<PolicyId, PolicyState>,
    tiers: HashMap<String, TierState>,
    ipsets: IpSetIndex,
    network: Network,

    /// Local endpoint → the policies that select it, and back.
    local_matches: HashMap<EndpointId, BTreeSet<PolicyId>>,
    policy_matches: HashMap<PolicyId, HashSet<EndpointId>>,
    active_policies: HashMap<PolicyId, ActivePolicy>,
    /// Local endpoints naming each profile.
    profile_users: HashMap<String, HashSet<EndpointId>>,
    active_profiles: HashMap<String, ActiveProfile>,
    local: HashMap<EndpointId, LocalEndpoint>,

    dirty_endpoints: BTreeSet<EndpointId>,
    changes: Changes,
    invalid: u64,
}

/// Felix's stand-in rules for a profile a local endpoint names but the datastore lacks.
fn deny_all() -> ParsedRule {
    ParsedRule {
        action: "deny".into(),
        ..Default::default()
    }
}

fn policy_kind_name(short: &str) -> &'static str {
    match short {
        "gnp" => "GlobalNetworkPolicy",
        "knp" => "KubernetesNetworkPolicy",
        _ => "NetworkPolicy",
    }
}

/// An IP, or a CIDR with its host bits cleared (as Calico parses them).
fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

fn parse_nets<'a>(what: &str, items: impl IntoIterator<Item = &'a String>) -> Vec<IpNet> {
    items
        .into_iter()
        .filter_map(|s| {
            let n = parse_net(s);
            if n.is_none() {
                tracing::warn!(%what, value = %s, "ignoring an address that does not parse");
            }
            n
        })
        .collect()
}

/// Labels of a source: its own over those of its profiles, in profile order.
fn effective_labels(
    own: &BTreeMap<String, String>,
    profiles: &[String],
    known: &HashMap<String, ProfileState>,
) -> BTreeMap<String, String> {
    let mut l = own.clone();
    for p in profiles {
        if let Some(ps) = known.get(p) {
            for (k, v) in &ps.labels {
                l.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    l
}

fn sort_tiers(tiers: &mut [(String, Option<f64>)]) {
    tiers.sort_by(|a, b| match (a.1, b.1) {
        (Some(x), Some(y)) if x != y => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => a.0.cmp(&b.0),
    });
}

impl CalcGraph {
    pub fn new(hostname: impl Into<String>) -> CalcGraph {
        CalcGraph {
            hostname: hostname.into(),
            endpoints: HashMap::new(),
            network_sets: HashMap::new(),
            profile_members: HashMap::new(),
            profiles: HashMap::new(),
            policies: HashMap::new(),
            tiers: HashMap::new(),
            ipsets: IpSetIndex::new(),
            network: Network::default(),
            local_matches: HashMap::new(),
            policy_matches: HashMap::new(),
            active_policies: HashMap::new(),
            profile_users: HashMap::new(),
            active_profiles: HashMap::new(),
            local: HashMap::new(),
            dirty_endpoints: BTreeSet::new(),
            changes: Changes::default(),
            invalid: 0,
        }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    // ---- lookups for the dataplane ----

    pub fn local_endpoint(&self, id: &EndpointId) -> Option<&LocalEndpoint> {
        self.local.get(id)
    }

    pub fn local_endpoints(&self) -> impl Iterator<Item = &LocalEndpoint> {
        self.local.values()
    }

    pub fn active_policy(&self, id: &PolicyId) -> Option<&PolicyRules> {
        self.active_policies.get(id).map(|p| &p.rules)
    }

    pub fn active_policies(&self) -> impl Iterator<Item = (&PolicyId, &PolicyRules)> {
        self.active_policies.iter().map(|(k, v)| (k, &v.rules))
    }

    pub fn active_profile(&self, name: &str) -> Option<&ProfileRules> {
        self.active_profiles.get(name).map(|p| &p.rules)
    }

    pub fn active_profiles(&self) -> impl Iterator<Item = (&String, &ProfileRules)> {
        self.active_profiles.iter().map(|(k, v)| (k, &v.rules))
    }

    pub fn ipsets(&self) -> &IpSetIndex {
        &self.ipsets
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// An IPAM block was written (its stored JSON).
    pub fn put_block(&mut self, cidr: IpNet, value: &[u8]) {
        self.network.put_block(cidr, value);
    }

    pub fn delete_block(&mut self, cidr: &IpNet) {
        self.network.delete_block(cidr);
    }

    /// Resources that could not be read and were treated as absent.
    pub fn invalid_resources(&self) -> u64 {
        self.invalid
    }

    pub fn counts(&self) -> CalcCounts {
        CalcCounts {
            endpoints: self.endpoints.len(),
            local_endpoints: self.local.len(),
            policies: self.policies.len(),
            active_policies: self.active_policies.len(),
            profiles: self.profiles.len(),
            active_profiles: self.active_profiles.len(),
            tiers: self.tiers.len(),
            ipsets: self.ipsets.active_count(),
        }
    }

    // ---- input ----

    /// Applies a resource that was created or changed. Resources of kinds the policy
    /// calculation does not use are ignored.
    pub fn put(&mut self, r: &AnyResource) {
        match r {
            AnyResource::WorkloadEndpoint(w) => self.put_workload(w),
            AnyResource::HostEndpoint(h) => self.put_host_endpoint(h),
            AnyResource::NetworkSet(n) => self.put_network_set(n),
            AnyResource::GlobalNetworkSet(n) => self.put_global_network_set(n),
            AnyResource::Profile(p) => self.put_profile(p),
            AnyResource::NetworkPolicy(p) => self.put_network_policy(p),
            AnyResource::GlobalNetworkPolicy(p) => self.put_global_policy(p),
            AnyResource::IpPool(p) => self.network.put_pool(p),
            AnyResource::Node(n) => self.network.put_node(n),
            AnyResource::Tier(t) => {
                let pass = t.spec.effective_default_action() == Action::Pass;
                self.set_tier(
                    &t.metadata.name,
                    Some(TierState {
                        order: t.spec.order,
                        pass,
                    }),
                );
            }
            _ => {}
        }
    }

    /// Applies the deletion of a resource.
    pub fn delete(&mut self, kind: Kind, namespace: Option<&str>, name: &str) {
        let ns = namespace.unwrap_or_default().to_string();
        match kind {
            Kind::WorkloadEndpoint => self.remove_endpoint(&EndpointId::Workload {
                namespace: ns,
                name: name.into(),
            }),
            Kind::HostEndpoint => self.remove_endpoint(&EndpointId::Host { name: name.into() }),
            Kind::NetworkSet => self.remove_network_set(&SourceId::NetworkSet {
                namespace: ns,
                name: name.into(),
            }),
            Kind::GlobalNetworkSet => {
                self.remove_network_set(&SourceId::GlobalNetworkSet { name: name.into() })
            }
            Kind::Profile => self.set_profile(name, None),
            Kind::NetworkPolicy => {
                let id = network_policy_id(&ns, name);
                self.set_policy(id, None);
            }
            Kind::GlobalNetworkPolicy => self.set_policy(PolicyId::global(name), None),
            Kind::Tier => self.set_tier(name, None),
            Kind::IpPool => self.network.delete_pool(name),
            Kind::Node => self.network.delete_node(name),
            _ => {}
        }
    }

    /// A resource that exists in the datastore but cannot be read: treated as absent (as
    /// Felix does), and counted so that it shows in metrics and logs.
    pub fn invalid(&mut self, kind: Kind, namespace: Option<&str>, name: &str, why: &str) {
        tracing::error!(%kind, namespace = namespace.unwrap_or(""), %name, reason = %why,
            "a resource in the datastore cannot be read; treating it as deleted until it is fixed");
        self.invalid += 1;
        self.delete(kind, namespace, name);
    }

    fn put_workload(&mut self, w: &WorkloadEndpoint) {
        let ns = w.metadata.namespace_str().to_string();
        let id = EndpointId::Workload {
            namespace: ns.clone(),
            name: w.metadata.name.clone(),
        };
        let s = &w.spec;
        // Labels the v3 client adds on write; imported data may lack them.
        let mut labels = w.metadata.labels.clone();
        labels
            .entry(LABEL_NAMESPACE.into())
            .or_insert_with(|| ns.clone());
        if !s.orchestrator.is_empty() {
            labels
                .entry(LABEL_ORCHESTRATOR.into())
                .or_insert_with(|| s.orchestrator.clone());
        }
        if !s.service_account_name.is_empty() {
            labels
                .entry(LABEL_SERVICE_ACCOUNT.into())
                .or_insert_with(|| s.service_account_name.clone());
        }
        let nets = parse_nets("spec.ipNetworks", &s.ip_networks);
        let local = (s.node == self.hostname && !s.interface_name.is_empty()).then(|| LocalInfo {
            iface: s.interface_name.clone(),
            mac: s.mac.clone(),
            nats: s
                .ip_nats
                .iter()
                .filter_map(|n| Some((n.external_ip.parse().ok()?, n.internal_ip.parse().ok()?)))
                .collect(),
            allow_spoofed_sources: parse_nets(
                "spec.allowSpoofedSourcePrefixes",
                &s.allow_spoofed_source_prefixes,
            ),
        });
        let ports = s
            .ports
            .iter()
            .filter(|p| !p.name.is_empty())
            .map(|p| NamedPort {
                name: p.name.clone(),
                protocol: p.protocol.clone(),
                port: p.port,
            })
            .collect();
        self.set_endpoint(
            id,
            EndpointState {
                own_labels: labels,
                profiles: s.profiles.clone(),
                nets,
                ports,
                local,
            },
        );
    }

    fn put_host_endpoint(&mut self, h: &HostEndpoint) {
        let id = EndpointId::Host {
            name: h.metadata.name.clone(),
        };
        let s = &h.spec;
        let nets = parse_nets("spec.expectedIPs", &s.expected_ips);
        let local = (s.node == self.hostname).then(|| LocalInfo {
            iface: s.interface_name.clone(),
            mac: String::new(),
            nats: Vec::new(),
            allow_spoofed_sources: Vec::new(),
        });
        let ports = s
            .ports
            .iter()
            .filter(|p| !p.name.is_empty())
            .map(|p| NamedPort {
                name: p.name.clone(),
                protocol: p.protocol.clone(),
                port: p.port,
            })
            .collect();
        self.set_endpoint(
            id,
            EndpointState {
                own_labels: h.metadata.labels.clone(),
                profiles: s.profiles.clone(),
                nets,
                ports,
                local,
            },
        );
    }

    fn put_network_set(&mut self, n: &NetworkSet) {
        let ns = n.metadata.namespace_str().to_string();
        let mut labels = n.metadata.labels.clone();
        labels.insert(LABEL_NAMESPACE.into(), ns.clone());
        let id = SourceId::NetworkSet {
            namespace: ns.clone(),
            name: n.metadata.name.clone(),
        };
        self.set_network_set(
            id,
            NetworkSetState {
                own_labels: labels,
                // Namespaced sets inherit their namespace's labels, as pods do.
                profiles: vec![format!("{NAMESPACE_PROFILE_PREFIX}{ns}")],
                nets: parse_nets("spec.nets", &n.spec.nets),
            },
        );
    }

    fn put_global_network_set(&mut self, n: &GlobalNetworkSet) {
        let id = SourceId::GlobalNetworkSet {
            name: n.metadata.name.clone(),
        };
        self.set_network_set(
            id,
            NetworkSetState {
                own_labels: n.metadata.labels.clone(),
                profiles: Vec::new(),
                nets: parse_nets("spec.nets", &n.spec.nets),
            },
        );
    }

    fn put_profile(&mut self, p: &Profile) {
        self.set_profile(
            &p.metadata.name,
            Some(ProfileState {
                labels: p.spec.labels_to_apply.clone(),
                inbound: p.spec.ingress.clone(),
                outbound: p.spec.egress.clone(),
            }),
        );
    }

    fn put_network_policy(&mut self, p: &NetworkPolicy) {
        let mut p = p.clone();
        p.apply_defaults();
        let ns = p.metadata.namespace_str().to_string();
        let id = network_policy_id(&ns, &p.metadata.name);
        let s = &p.spec;
        let selector =
            scoping::network_policy_selector(&s.selector, &s.service_account_selector, &ns);
        let state = PolicyState {
            tier: tier_or_default(&s.tier),
            order: s.order.unwrap_or(f64::INFINITY),
            sort_name: format!(
                "{}/{}/{}",
                id.name,
                id.namespace,
                policy_kind_name(&id.kind)
            ),
            selector,
            ingress: s.types.contains(&PolicyType::Ingress),
            egress: s.types.contains(&PolicyType::Egress),
            do_not_track: false,
            pre_dnat: false,
            apply_on_forward: false,
            assume_needed: s
                .performance_hints
                .contains(&PerformanceHint::AssumeNeededOnEveryNode),
            namespace: Some(ns),
            inbound: s.ingress.clone(),
            outbound: s.egress.clone(),
        };
        self.set_policy(id, Some(state));
    }

    fn put_global_policy(&mut self, p: &GlobalNetworkPolicy) {
        let mut p = p.clone();
        p.apply_defaults();
        let id = PolicyId::global(&p.metadata.name);
        let s = &p.spec;
        let selector = scoping::global_policy_selector(
            &s.selector,
            &s.namespace_selector,
            &s.service_account_selector,
        );
        let state = PolicyState {
            tier: tier_or_default(&s.tier),
            order: s.order.unwrap_or(f64::INFINITY),
            sort_name: format!("{}//{}", id.name, policy_kind_name(&id.kind)),
            selector,
            ingress: s.types.contains(&PolicyType::Ingress),
            egress: s.types.contains(&PolicyType::Egress),
            do_not_track: s.do_not_track,
            pre_dnat: s.pre_dnat,
            apply_on_forward: s.apply_on_forward,
            assume_needed: s
                .performance_hints
                .contains(&PerformanceHint::AssumeNeededOnEveryNode),
            namespace: None,
            inbound: s.ingress.clone(),
            outbound: s.egress.clone(),
        };
        self.set_policy(id, Some(state));
    }

    // ---- endpoints and network sets ----

    fn set_endpoint(&mut self, id: EndpointId, ep: EndpointState) {
        let sid = id.source();
        let old_profiles = self
            .endpoints
            .get(&id)
            .map(|e| e.profiles.clone())
            .unwrap_or_default();
        self.relink_profiles(&sid, &old_profiles, &ep.profiles);
        let labels = effective_labels(&ep.own_labels, &ep.profiles, &self.profiles);
        self.ipsets.update_source(
            sid,
            Source {
                labels: labels.clone(),
                nets: ep.nets.clone(),
                ports: ep.ports.clone(),
            },
        );
        let was_local = self
            .endpoints
            .get(&id)
            .and_then(|e| e.local.as_ref())
            .is_some();
        let is_local = ep.local.is_some();
        let new_profiles = ep.profiles.clone();
        self.endpoints.insert(id.clone(), ep);
        if is_local {
            self.relink_local_profiles(
                &id,
                if was_local { &old_profiles } else { &[] },
                &new_profiles,
            );
            self.rematch_local(&id, &labels);
            self.dirty_endpoints.insert(id);
        } else if was_local {
            self.forget_local(&id, &old_profiles);
        }
    }

    fn remove_endpoint(&mut self, id: &EndpointId) {
        let Some(ep) = self.endpoints.remove(id) else {
            return;
        };
        let sid = id.source();
        self.relink_profiles(&sid, &ep.profiles, &[]);
        self.ipsets.remove_source(&sid);
        if ep.local.is_some() {
            self.forget_local(id, &ep.profiles);
        }
    }

    /// An endpoint stopped being local (deleted or moved): its policies and profiles lose a
    /// user and the dataplane removes its chains.
    fn forget_local(&mut self, id: &EndpointId, profiles: &[String]) {
        self.relink_local_profiles(id, profiles, &[]);
        if let Some(matched) = self.local_matches.remove(id) {
            for pid in matched {
                self.unmatch(&pid, id);
            }
        }
        self.dirty_endpoints.insert(id.clone());
    }

    fn set_network_set(&mut self, id: SourceId, ns: NetworkSetState) {
        let old_profiles = self
            .network_sets
            .get(&id)
            .map(|n| n.profiles.clone())
            .unwrap_or_default();
        self.relink_profiles(&id, &old_profiles, &ns.profiles);
        let labels = effective_labels(&ns.own_labels, &ns.profiles, &self.profiles);
        self.ipsets.update_source(
            id.clone(),
            Source {
                labels,
                nets: ns.nets.clone(),
                ports: Vec::new(),
            },
        );
        self.network_sets.insert(id, ns);
    }

    fn remove_network_set(&mut self, id: &SourceId) {
        if let Some(ns) = self.network_sets.remove(id) {
            self.relink_profiles(id, &ns.profiles, &[]);
            self.ipsets.remove_source(id);
        }
    }

    fn relink_profiles(&mut self, sid: &SourceId, old: &[String], new: &[String]) {
        for p in old.iter().filter(|p| !new.contains(p)) {
            if let Some(m) = self.profile_members.get_mut(p) {
                m.remove(sid);
                if m.is_empty() {
                    self.profile_members.remove(p);
                }
            }
        }
        for p in new {
            self.profile_members
                .entry(p.clone())
                .or_default()
                .insert(sid.clone());
        }
    }

    /// Local endpoints' profiles are active; a profile's first user activates it.
    fn relink_local_profiles(&mut self, id: &EndpointId, old: &[String], new: &[String]) {
        for p in old.iter().filter(|p| !new.contains(p)) {
            if let Some(users) = self.profile_users.get_mut(p) {
                users.remove(id);
                if users.is_empty() {
                    self.profile_users.remove(p);
                    self.deactivate_profile(p);
                }
            }
        }
        for p in new {
            let users = self.profile_users.entry(p.clone()).or_default();
            let first = users.is_empty();
            users.insert(id.clone());
            if first {
                self.activate_profile(p);
            }
        }
    }

    // ---- profiles ----

    fn set_profile(&mut self, name: &str, state: Option<ProfileState>) {
        let old_labels = self.profiles.get(name).map(|p| p.labels.clone());
        let new_labels = state.as_ref().map(|p| p.labels.clone());
        match state {
            Some(s) => {
                self.profiles.insert(name.to_string(), s);
            }
            None => {
                self.profiles.remove(name);
            }
        }
        if old_labels != new_labels {
            self.relabel_profile_members(name);
        }
        if self.profile_users.contains_key(name) {
            self.deactivate_profile(name);
            self.activate_profile(name);
        }
    }

    /// A profile's labels changed: every endpoint and network set naming it has new
    /// effective labels.
    fn relabel_profile_members(&mut self, name: &str) {
        let members: Vec<SourceId> = self
            .profile_members
            .get(name)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        for sid in members {
            match &sid {
                SourceId::Workload { namespace, name } => {
                    let id = EndpointId::Workload {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    };
                    self.refresh_endpoint_labels(&id);
                }
                SourceId::Host { name } => {
                    self.refresh_endpoint_labels(&EndpointId::Host { name: name.clone() })
                }
                SourceId::NetworkSet { .. } | SourceId::GlobalNetworkSet { .. } => {
                    if let Some(ns) = self.network_sets.get(&sid) {
                        let labels = effective_labels(&ns.own_labels, &ns.profiles, &self.profiles);
                        let nets = ns.nets.clone();
                        self.ipsets.update_source(
                            sid.clone(),
                            Source {
                                labels,
                                nets,
                                ports: Vec::new(),
                            },
                        );
                    }
                }
            }
        }
    }

    fn refresh_endpoint_labels(&mut self, id: &EndpointId) {
        let Some(ep) = self.endpoints.get(id) else {
            return;
        };
        let labels = effective_labels(&ep.own_labels, &ep.profiles, &self.profiles);
        let src = Source {
            labels: labels.clone(),
            nets: ep.nets.clone(),
            ports: ep.ports.clone(),
        };
        let local = ep.local.is_some();
        self.ipsets.update_source(id.source(), src);
        if local {
            self.rematch_local(id, &labels);
            self.dirty_endpoints.insert(id.clone());
        }
    }

    fn activate_profile(&mut self, name: &str) {
        let (rules, defs) = match self.profiles.get(name) {
            Some(p) => {
                let (inbound, mut defs) = parse_rules(&p.inbound, None, name, "ingress");
                let (outbound, defs2) = parse_rules(&p.outbound, None, name, "egress");
                defs.extend(defs2);
                (ProfileRules { inbound, outbound }, defs)
            }
            None => {
                tracing::warn!(profile = %name,
                    "a local endpoint names a profile the datastore does not have; its traffic is denied until the profile exists");
                (
                    ProfileRules {
                        inbound: vec![deny_all()],
                        outbound: vec![deny_all()],
                    },
                    Vec::new(),
                )
            }
        };
        let ipsets = self.use_ipsets(&defs);
        self.active_profiles
            .insert(name.to_string(), ActiveProfile { rules, ipsets });
        self.changes.profiles.insert(name.to_string());
    }

    fn deactivate_profile(&mut self, name: &str) {
        if let Some(p) = self.active_profiles.remove(name) {
            for id in &p.ipsets {
                self.ipsets.remove_user(id);
            }
            self.changes.profiles.insert(name.to_string());
        }
    }

    /// Registers one user for each distinct set and returns their IDs.
    fn use_ipsets(&mut self, defs: &[IpSetDef]) -> Vec<String> {
        let mut seen = BTreeSet::new();
        for d in defs {
            let id = d.id();
            if seen.insert(id) {
                self.ipsets.add_user(d);
            }
        }
        seen.into_iter().collect()
    }

    // ---- policies and tiers ----

    fn set_policy(&mut self, id: PolicyId, state: Option<PolicyState>) {
        let old = self.policies.remove(&id);
        let selector_changed =
            old.as_ref().map(|o| &o.selector) != state.as_ref().map(|s| &s.selector);
        let placement_changed = match (&old, &state) {
            (Some(o), Some(n)) => {
                o.tier != n.tier
                    || o.order != n.order
                    || o.ingress != n.ingress
                    || o.egress != n.egress
                    || o.do_not_track != n.do_not_track
                    || o.pre_dnat != n.pre_dnat
                    || o.apply_on_forward != n.apply_on_forward
            }
            _ => true,
        };
        let rules_changed = match (&old, &state) {
            (Some(o), Some(n)) => {
                o.inbound != n.inbound
                    || o.outbound != n.outbound
                    || o.namespace != n.namespace
                    || o.tier != n.tier
                    || o.do_not_track != n.do_not_track
                    || o.pre_dnat != n.pre_dnat
            }
            _ => true,
        };
        if let Some(s) = state {
            self.policies.insert(id.clone(), s);
        }
        // Who it selects now.
        let before: HashSet<EndpointId> = self.policy_matches.get(&id).cloned().unwrap_or_default();
        let after: HashSet<EndpointId> = match self.policies.get(&id) {
            Some(_) if !selector_changed => before.clone(),
            Some(p) => self
                .local
                .keys()
                .chain(self.dirty_endpoints.iter())
                .filter(|e| self.is_local(e))
                .filter(|e| self.local_labels_match(e, &p.selector))
                .cloned()
                .collect(),
            None => HashSet::new(),
        };
        for e in before.difference(&after) {
            if let Some(m) = self.local_matches.get_mut(e) {
                m.remove(&id);
            }
            self.dirty_endpoints.insert(e.clone());
        }
        for e in after.difference(&before) {
            self.local_matches
                .entry(e.clone())
                .or_default()
                .insert(id.clone());
            self.dirty_endpoints.insert(e.clone());
        }
        if placement_changed || selector_changed {
            // Group chains and tier order depend on these.
            self.dirty_endpoints.extend(after.iter().cloned());
        }
        if after.is_empty() {
            self.policy_matches.remove(&id);
        } else {
            self.policy_matches.insert(id.clone(), after);
        }
        self.update_policy_activity(&id, rules_changed || selector_changed);
    }

    fn is_local(&self, id: &EndpointId) -> bool {
        self.endpoints.get(id).is_some_and(|e| e.local.is_some())
    }

    fn local_labels_match(&self, id: &EndpointId, sel: &Selector) -> bool {
        self.endpoints.get(id).is_some_and(|e| {
            sel.evaluate(&effective_labels(
                &e.own_labels,
                &e.profiles,
                &self.profiles,
            ))
        })
    }

    /// Re-evaluates every policy against one local endpoint's labels.
    fn rematch_local(&mut self, id: &EndpointId, labels: &BTreeMap<String, String>) {
        let now: BTreeSet<PolicyId> = self
            .policies
            .iter()
            .filter(|(_, p)| p.selector.evaluate(labels))
            .map(|(k, _)| k.clone())
            .collect();
        let before = self.local_matches.get(id).cloned().unwrap_or_default();
        if now == before {
            return;
        }
        for pid in before.difference(&now) {
            self.unmatch(pid, id);
        }
        for pid in now.difference(&before) {
            self.policy_matches
                .entry(pid.clone())
                .or_default()
                .insert(id.clone());
            self.update_policy_activity(pid, false);
        }
        if now.is_empty() {
            self.local_matches.remove(id);
        } else {
            self.local_matches.insert(id.clone(), now);
        }
    }

    fn unmatch(&mut self, pid: &PolicyId, ep: &EndpointId) {
        if let Some(m) = self.policy_matches.get_mut(pid) {
            m.remove(ep);
            if m.is_empty() {
                self.policy_matches.remove(pid);
            }
        }
        self.update_policy_activity(pid, false);
    }

    /// Activates or deactivates a policy to match its local matches; `reparse` re-renders
    /// an active policy whose rules changed.
    fn update_policy_activity(&mut self, pid: &PolicyId, reparse: bool) {
        let should = self.policies.get(pid).is_some_and(|p| {
            p.assume_needed || self.policy_matches.get(pid).is_some_and(|m| !m.is_empty())
        });
        let is = self.active_policies.contains_key(pid);
        if is
            && (!should || reparse)
            && let Some(old) = self.active_policies.remove(pid)
        {
            // Register the new sets before dropping the old ones, so that sets both
            // versions use are not torn down and rebuilt.
            if should {
                self.activate_policy(pid);
            }
            for id in &old.ipsets {
                self.ipsets.remove_user(id);
            }
            self.changes.policies.insert(pid.clone());
            return;
        }
        if should && !is {
            self.activate_policy(pid);
        }
    }

    fn activate_policy(&mut self, pid: &PolicyId) {
        let Some(p) = self.policies.get(pid) else {
            return;
        };
        let owner = pid.id();
        let (inbound, mut defs) =
            parse_rules(&p.inbound, p.namespace.as_deref(), &owner, "ingress");
        let (outbound, defs2) = parse_rules(&p.outbound, p.namespace.as_deref(), &owner, "egress");
        defs.extend(defs2);
        let rules = PolicyRules {
            inbound,
            outbound,
            untracked: p.do_not_track,
            pre_dnat: p.pre_dnat,
            staged: false,
            tier: p.tier.clone(),
        };
        let ipsets = self.use_ipsets(&defs);
        self.active_policies
            .insert(pid.clone(), ActivePolicy { rules, ipsets });
        self.changes.policies.insert(pid.clone());
    }

    fn set_tier(&mut self, name: &str, state: Option<TierState>) {
        let old = self.tiers.get(name).copied();
        if old == state {
            return;
        }
        match state {
            Some(s) => self.tiers.insert(name.to_string(), s),
            None => self.tiers.remove(name),
        };
        // Every local endpoint with a policy in this tier is affected.
        let affected: Vec<EndpointId> = self
            .local_matches
            .iter()
            .filter(|(_, pids)| {
                pids.iter()
                    .any(|p| self.policies.get(p).is_some_and(|p| p.tier == name))
            })
            .map(|(e, _)| e.clone())
            .collect();
        self.dirty_endpoints.extend(affected);
    }

    /// A tier's order and default action; the `default` tier exists even before its
    /// resource is seen (the datastore client creates it).
    fn tier(&self, name: &str) -> Option<TierState> {
        self.tiers.get(name).copied().or_else(|| {
            (name == DEFAULT_TIER).then_some(TierState {
                order: Some(DEFAULT_TIER_ORDER),
                pass: false,
            })
        })
    }

    // ---- output ----

    /// Computes the tiers of every endpoint touched since the last call and returns what
    /// changed.
    pub fn take_changes(&mut self) -> Changes {
        let dirty = std::mem::take(&mut self.dirty_endpoints);
        for id in dirty {
            let new = self.compute_local(&id);
            let old = self.local.get(&id);
            if old == new.as_ref() {
                continue;
            }
            match new {
                Some(le) => self.local.insert(id.clone(), le),
                None => self.local.remove(&id),
            };
            self.changes.endpoints.insert(id);
        }
        let mut ch = std::mem::take(&mut self.changes);
        ch.ipsets = self.ipsets.take_changes();
        ch.network = std::mem::take(&mut self.network.dirty);
        ch
    }

    /// Everything, as if it had all just changed: for a dataplane starting from scratch.
    pub fn full_changes(&mut self) -> Changes {
        let mut ch = self.take_changes();
        ch.endpoints.extend(self.local.keys().cloned());
        ch.policies.extend(self.active_policies.keys().cloned());
        ch.profiles.extend(self.active_profiles.keys().cloned());
        ch.ipsets.sets.extend(self.ipsets.active_ids().cloned());
        ch.ipsets.members.clear();
        ch.network = true;
        ch
    }

    fn compute_local(&self, id: &EndpointId) -> Option<LocalEndpoint> {
        let ep = self.endpoints.get(id)?;
        let info = ep.local.as_ref()?;
        let (tiers, untracked, pre_dnat, forward) = self.endpoint_tiers(id);
        let is_host = matches!(id, EndpointId::Host { .. });
        Some(LocalEndpoint {
            id: id.clone(),
            iface: info.iface.clone(),
            mac: info.mac.clone(),
            nets: ep.nets.clone(),
            nats: info.nats.clone(),
            allow_spoofed_sources: info.allow_spoofed_sources.clone(),
            profile_ids: ep.profiles.clone(),
            tiers,
            untracked_tiers: if is_host { untracked } else { Vec::new() },
            pre_dnat_tiers: if is_host { pre_dnat } else { Vec::new() },
            forward_tiers: if is_host { forward } else { Vec::new() },
        })
    }

    /// Felix's `tierInfoToProtoTierInfo` over the endpoint's sorted policies.
    fn endpoint_tiers(
        &self,
        id: &EndpointId,
    ) -> (Vec<TierInfo>, Vec<TierInfo>, Vec<TierInfo>, Vec<TierInfo>) {
        let mut by_tier: BTreeMap<&str, Vec<(&PolicyId, &PolicyState)>> = BTreeMap::new();
        for pid in self.local_matches.get(id).into_iter().flatten() {
            if let Some(p) = self.policies.get(pid) {
                by_tier.entry(p.tier.as_str()).or_default().push((pid, p));
            }
        }
        let mut order: Vec<(String, Option<f64>)> = by_tier
            .keys()
            .filter_map(|t| self.tier(t).map(|s| (t.to_string(), s.order)))
            .collect();
        sort_tiers(&mut order);
        let (mut normal, mut untracked, mut pre_dnat, mut forward) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (tier, _) in order {
            let Some(ts) = self.tier(&tier) else { continue };
            let Some(pols) = by_tier.get_mut(tier.as_str()) else {
                continue;
            };
            pols.sort_by(|a, b| {
                a.1.order
                    .total_cmp(&b.1.order)
                    .then_with(|| a.1.sort_name.cmp(&b.1.sort_name))
            });
            let default_action = if ts.pass { "Pass" } else { "Deny" };
            let new_tier = |action: &str| TierInfo {
                name: tier.clone(),
                default_action: action.to_string(),
                ingress: Vec::new(),
                egress: Vec::new(),
            };
            let mut n = new_tier(default_action);
            let mut u = new_tier("Pass");
            let mut d = new_tier("Pass");
            let mut f = new_tier(default_action);
            for (pid, p) in pols.iter() {
                let r = PolicyRef {
                    id: (*pid).clone(),
                    selector: p.selector.canonical().to_string(),
                };
                let add = |t: &mut TierInfo, egress_allowed: bool| {
                    if p.ingress {
                        t.ingress.push(r.clone());
                    }
                    if egress_allowed && p.egress {
                        t.egress.push(r.clone());
                    }
                };
                if p.do_not_track {
                    add(&mut u, true);
                } else if p.pre_dnat {
                    add(&mut d, false);
                } else {
                    if p.apply_on_forward {
                        add(&mut f, true);
                    }
                    add(&mut n, true);
                }
            }
            for (t, out) in [
                (u, &mut untracked),
                (d, &mut pre_dnat),
                (f, &mut forward),
                (n, &mut normal),
            ] {
                if !t.ingress.is_empty() || !t.egress.is_empty() {
                    out.push(t);
                }
            }
        }
        (normal, untracked, pre_dnat, forward)
    }
}

/// Sizes, for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CalcCounts {
    pub endpoints: usize,
    pub local_endpoints: usize,
    pub policies: usize,
    pub active_policies: usize,
    pub profiles: usize,
    pub active_profiles: usize,
    pub tiers: usize,
    pub ipsets: usize,
}

fn tier_or_default(t: &str) -> String {
    if t.is_empty() {
        DEFAULT_TIER.to_string()
    } else {
        t.to_string()
    }
}

/// Kubernetes NetworkPolicies are stored as `knp.default.<name>` NetworkPolicies; Felix
/// names their chains by their own kind.
fn network_policy_id(namespace: &str, name: &str) -> PolicyId {
    let mut id = PolicyId::network_policy(namespace, name);
    if name.starts_with("knp.default.") {
        id.kind = "knp".into();
    }
    id
}

fn parse_rules(
    rules: &[calico_api::kinds::Rule],
    namespace: Option<&str>,
    owner: &str,
    direction: &str,
) -> (Vec<ParsedRule>, Vec<IpSetDef>) {
    let mut parsed = Vec::with_capacity(rules.len());
    let mut defs = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let (p, d) = parse_rule(r, namespace, format!("{owner}/{direction}/{i}"));
        parsed.push(p);
        defs.extend(d);
    }
    (parsed, defs)
}

#[cfg(test)]
mod tests;
