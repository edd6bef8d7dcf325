//! A reference model of Calico's policy semantics: given endpoints, policies, tiers, profiles
//! and network sets, is a packet allowed?
//!
//! This is the meaning felixd must implement in the kernel, written as plainly as possible so
//! tests can use it as an oracle (the dataplane's verdicts must equal the model's). It follows
//! Calico's evaluation order: for each direction, tiers in ascending order; in a tier, the
//! policies that select the endpoint in (order, name) order; the first Allow/Deny ends the
//! search, Pass skips to the next tier, Log continues; a tier that selected the endpoint but
//! matched nothing applies its default action; with no policy at all, the endpoint's profiles
//! decide; nothing matching means deny. Selectors are rewritten as Calico's calculation graph
//! rewrites them (namespace scoping, `pcns.`/`pcsa.` prefixes, `global()`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::kinds::{Action, EntityRule, PolicyType, ProfileSpec, Rule, TierSpec};
use crate::names::{
    LABEL_NAME, LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT, NAMESPACE_LABEL_PREFIX,
    SERVICE_ACCOUNT_LABEL_PREFIX,
};
use crate::numorstring::Port;
use crate::resource::{GlobalNetworkPolicy, NetworkPolicy};
use crate::scoping;
use crate::selector::Selector;

/// A named port an endpoint serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
}

/// A workload or host endpoint as policy sees it.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// `None` for host endpoints.
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<NamedPort>,
    pub profiles: Vec<String>,
}

/// Labelled CIDRs (NetworkSet when namespaced, GlobalNetworkSet otherwise).
#[derive(Debug, Clone, Default)]
pub struct NetworkSet {
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub nets: Vec<IpNet>,
}

/// A packet (the first packet of a connection; replies are allowed by conntrack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A Calico policy, namespaced or global, reduced to what evaluation needs.
#[derive(Debug, Clone)]
struct ModelPolicy {
    tier: String,
    order: Option<f64>,
    name: String,
    /// `Some(ns)` for NetworkPolicy.
    namespace: Option<String>,
    selector: Selector,
    types: Vec<PolicyType>,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

/// The cluster state the model evaluates against.
#[derive(Debug, Clone, Default)]
pub struct Model {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    service_accounts: BTreeMap<(String, String), BTreeMap<String, String>>,
    endpoints: Vec<Endpoint>,
    network_sets: Vec<NetworkSet>,
    policies: BTreeMap<(Option<String>, String), ModelPolicy>,
    tiers: BTreeMap<String, TierSpec>,
    profiles: BTreeMap<String, ProfileSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Deny,
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    /// Adds (or replaces) a namespace with its labels.
    pub fn set_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) {
        self.namespaces.insert(name.to_string(), labels);
    }

    /// Adds a service account's labels.
    pub fn set_service_account(&mut self, ns: &str, name: &str, labels: BTreeMap<String, String>) {
        self.service_accounts
            .insert((ns.to_string(), name.to_string()), labels);
    }

    pub fn add_endpoint(&mut self, ep: Endpoint) {
        self.endpoints
            .retain(|e| !(e.namespace == ep.namespace && e.name == ep.name));
        self.endpoints.push(ep);
    }

    pub fn endpoint_mut(&mut self, namespace: Option<&str>, name: &str) -> Option<&mut Endpoint> {
        self.endpoints
            .iter_mut()
            .find(|e| e.namespace.as_deref() == namespace && e.name == name)
    }

    pub fn add_network_set(&mut self, set: NetworkSet) {
        self.network_sets.push(set);
    }

    pub fn set_tier(&mut self, name: &str, spec: TierSpec) {
        self.tiers.insert(name.to_string(), spec);
    }

    pub fn set_profile(&mut self, name: &str, spec: ProfileSpec) {
        self.profiles.insert(name.to_string(), spec);
    }

    /// Adds or replaces a NetworkPolicy (defaults are applied first).
    pub fn set_network_policy(&mut self, p: &NetworkPolicy) {
        let mut p = p.clone();
        crate::resource::Resource::apply_defaults(&mut p);
        let ns = p.metadata.namespace_str().to_string();
        let selector = scoping::network_policy_selector(
            &p.spec.selector,
            &p.spec.service_account_selector,
            &ns,
        );
        self.policies.insert(
            (Some(ns.clone()), p.metadata.name.clone()),
            ModelPolicy {
                tier: p.spec.tier.clone(),
                order: p.spec.order,
                name: p.metadata.name.clone(),
                namespace: Some(ns),
                selector,
                types: p.spec.types.clone(),
                ingress: p.spec.ingress.clone(),
                egress: p.spec.egress.clone(),
            },
        );
    }

    /// Adds or replaces a GlobalNetworkPolicy (defaults are applied first).
    pub fn set_global_network_policy(&mut self, p: &GlobalNetworkPolicy) {
        let mut p = p.clone();
        crate::resource::Resource::apply_defaults(&mut p);
        let selector = scoping::global_policy_selector(
            &p.spec.selector,
            &p.spec.namespace_selector,
            &p.spec.service_account_selector,
        );
        self.policies.insert(
            (None, p.metadata.name.clone()),
            ModelPolicy {
                tier: p.spec.tier.clone(),
                order: p.spec.order,
                name: p.metadata.name.clone(),
                namespace: None,
                selector,
                types: p.spec.types.clone(),
                ingress: p.spec.ingress.clone(),
                egress: p.spec.egress.clone(),
            },
        );
    }

    pub fn remove_network_policy(&mut self, namespace: &str, name: &str) {
        self.policies
            .remove(&(Some(namespace.to_string()), name.to_string()));
    }

    pub fn remove_global_network_policy(&mut self, name: &str) {
        self.policies.remove(&(None, name.to_string()));
    }

    /// The labels selectors see on an endpoint: its own, Calico's identity labels, and those
    /// inherited from its namespace (`pcns.`) and service account (`pcsa.`) profiles.
    pub fn effective_labels(&self, ep: &Endpoint) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        if let Some(ns) = &ep.namespace {
            if let Some(ns_labels) = self.namespaces.get(ns) {
                for (k, v) in ns_labels {
                    l.insert(format!("{NAMESPACE_LABEL_PREFIX}{k}"), v.clone());
                }
            }
            l.insert(format!("{NAMESPACE_LABEL_PREFIX}{LABEL_NAME}"), ns.clone());
            if let Some(sa) = &ep.service_account {
                if let Some(sa_labels) = self.service_accounts.get(&(ns.clone(), sa.clone())) {
                    for (k, v) in sa_labels {
                        l.insert(format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{k}"), v.clone());
                    }
                }
                l.insert(
                    format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{LABEL_NAME}"),
                    sa.clone(),
                );
                l.insert(LABEL_SERVICE_ACCOUNT.to_string(), sa.clone());
            }
            l.insert(LABEL_NAMESPACE.to_string(), ns.clone());
            l.insert(LABEL_ORCHESTRATOR.to_string(), "k8s".to_string());
        }
        for p in &ep.profiles {
            if let Some(prof) = self.profiles.get(p) {
                for (k, v) in &prof.labels_to_apply {
                    l.insert(k.clone(), v.clone());
                }
            }
        }
        for (k, v) in &ep.labels {
            l.insert(k.clone(), v.clone());
        }
        l
    }

    fn endpoint_for_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.ips.contains(&ip))
    }

    /// Whether the first packet of a connection is allowed end to end: egress policy of the
    /// source endpoint (if the source is one) and ingress policy of the destination (if it is).
    pub fn allows(&self, pkt: &Packet) -> bool {
        if let Some(src) = self.endpoint_for_ip(pkt.src)
            && self.verdict(src, PolicyType::Egress, pkt) == Verdict::Deny
        {
            return false;
        }
        if let Some(dst) = self.endpoint_for_ip(pkt.dst)
            && self.verdict(dst, PolicyType::Ingress, pkt) == Verdict::Deny
        {
            return false;
        }
        true
    }

    fn verdict(&self, ep: &Endpoint, dir: PolicyType, pkt: &Packet) -> Verdict {
        let labels = self.effective_labels(ep);
        let mut applicable: Vec<&ModelPolicy> = self
            .policies
            .values()
            .filter(|p| p.types.contains(&dir) && p.selector.evaluate(&labels))
            .collect();
        let tier_order = |t: &str| -> f64 {
            self.tiers
                .get(t)
                .and_then(|s| s.order)
                .unwrap_or(if t == crate::kinds::DEFAULT_TIER {
                    crate::kinds::DEFAULT_TIER_ORDER
                } else {
                    f64::INFINITY
                })
        };
        applicable.sort_by(|a, b| {
            tier_order(&a.tier)
                .total_cmp(&tier_order(&b.tier))
                .then_with(|| a.tier.cmp(&b.tier))
                .then_with(|| {
                    a.order
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&b.order.unwrap_or(f64::INFINITY))
                })
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut i = 0;
        while i < applicable.len() {
            let tier = applicable[i].tier.clone();
            let mut outcome = None;
            while i < applicable.len() && applicable[i].tier == tier {
                if outcome.is_none() {
                    let p = applicable[i];
                    let rules = if dir == PolicyType::Ingress {
                        &p.ingress
                    } else {
                        &p.egress
                    };
                    outcome = self.first_terminal(rules, p.namespace.as_deref(), ep, dir, pkt);
                }
                i += 1;
            }
            match outcome {
                Some(Action::Allow) => return Verdict::Allow,
                Some(Action::Deny) => return Verdict::Deny,
                Some(Action::Pass) => continue,
                _ => {
                    let default = self
                        .tiers
                        .get(&tier)
                        .map(TierSpec::effective_default_action)
                        .unwrap_or(Action::Deny);
                    if default == Action::Pass {
                        continue;
                    }
                    return Verdict::Deny;
                }
            }
        }
        // No tier decided (none applied, or every one passed): the profiles decide.
        for prof in &ep.profiles {
            if let Some(spec) = self.profiles.get(prof) {
                let rules = if dir == PolicyType::Ingress {
                    &spec.ingress
                } else {
                    &spec.egress
                };
                match self.first_terminal(rules, None, ep, dir, pkt) {
                    Some(Action::Allow) => return Verdict::Allow,
                    Some(Action::Deny) => return Verdict::Deny,
                    _ => {}
                }
            }
        }
        Verdict::Deny
    }

    /// The action of the first matching non-Log rule.
    fn first_terminal(
        &self,
        rules: &[Rule],
        policy_ns: Option<&str>,
        local: &Endpoint,
        dir: PolicyType,
        pkt: &Packet,
    ) -> Option<Action> {
        rules
            .iter()
            .filter(|r| r.action != Action::Log)
            .find(|r| self.rule_matches(r, policy_ns, local, dir, pkt))
            .map(|r| r.action)
    }

    fn rule_matches(
        &self,
        r: &Rule,
        policy_ns: Option<&str>,
        _local: &Endpoint,
        _dir: PolicyType,
        pkt: &Packet,
    ) -> bool {
        if let Some(v) = r.ip_version
            && (v == 4) != pkt.src.is_ipv4()
        {
            return false;
        }
        if let Some(p) = &r.protocol
            && p.number() != Some(pkt.protocol)
        {
            return false;
        }
        if let Some(p) = &r.not_protocol
            && p.number() == Some(pkt.protocol)
        {
            return false;
        }
        if r.source.services.is_some() || r.destination.services.is_some() {
            // Service matches need Kubernetes Services, which the model does not hold.
            return false;
        }
        self.entity_matches(&r.source, policy_ns, pkt.src, pkt.src_port, pkt.protocol)
            && self.entity_matches(
                &r.destination,
                policy_ns,
                pkt.dst,
                pkt.dst_port,
                pkt.protocol,
            )
    }

    /// Whether some endpoint or network set holding `ip` matches `sel`.
    fn ip_matches_selector(&self, ip: IpAddr, sel: &Selector) -> bool {
        self.endpoints
            .iter()
            .filter(|e| e.ips.contains(&ip))
            .any(|e| sel.evaluate(&self.effective_labels(e)))
            || self
                .network_sets
                .iter()
                .filter(|s| s.nets.iter().any(|n| n.contains(&ip)))
                .any(|s| {
                    let mut l = s.labels.clone();
                    if let Some(ns) = &s.namespace {
                        l.insert(LABEL_NAMESPACE.to_string(), ns.clone());
                        if let Some(nsl) = self.namespaces.get(ns) {
                            for (k, v) in nsl {
                                l.insert(format!("{NAMESPACE_LABEL_PREFIX}{k}"), v.clone());
                            }
                        }
                        l.insert(format!("{NAMESPACE_LABEL_PREFIX}{LABEL_NAME}"), ns.clone());
                    }
                    sel.evaluate(&l)
                })
    }

    fn port_matches(&self, ports: &[Port], ip: IpAddr, port: u16, protocol: u8) -> bool {
        ports.iter().any(|p| match p {
            Port::Range { min, max } => (*min..=*max).contains(&port),
            Port::Named(name) => self
                .endpoints
                .iter()
                .filter(|e| e.ips.contains(&ip))
                .any(|e| {
                    e.ports
                        .iter()
                        .any(|np| &np.name == name && np.protocol == protocol && np.port == port)
                }),
        })
    }

    fn entity_matches(
        &self,
        e: &EntityRule,
        policy_ns: Option<&str>,
        ip: IpAddr,
        port: u16,
        protocol: u8,
    ) -> bool {
        let in_nets = |nets: &[String]| {
            nets.iter()
                .any(|n| crate::validation::parse_cidr_or_ip(n).is_ok_and(|net| net.contains(&ip)))
        };
        if !e.nets.is_empty() && !in_nets(&e.nets) {
            return false;
        }
        if in_nets(&e.not_nets) {
            return false;
        }
        if let Some(sel) = scoping::entity_rule_selector(e, policy_ns)
            && !self.ip_matches_selector(ip, &sel)
        {
            return false;
        }
        if let Some(sel) = scoping::entity_rule_not_selector(e)
            && self.ip_matches_selector(ip, &sel)
        {
            return false;
        }
        if !e.ports.is_empty() && !self.port_matches(&e.ports, ip, port, protocol) {
            return false;
        }
        if self.port_matches(&e.not_ports, ip, port, protocol) {
            return false;
        }
        true
    }
}
