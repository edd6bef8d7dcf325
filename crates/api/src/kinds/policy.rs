//! Policy rules and the kinds that carry them: NetworkPolicy, GlobalNetworkPolicy, Tier and
//! Profile (`policy_common.go`, `networkpolicy.go`, `globalnetworkpolicy.go`, `tier.go`,
//! `profile.go`, Calico's policy defaulting and the Go + CEL validation rules).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::is_false;
use crate::numorstring::{Port, Protocol};
use crate::resource::{GlobalNetworkPolicy, KindRules, NetworkPolicy, Profile, Tier};
use crate::selector::Selector;
use crate::validation::{
    Errors, Path, check_label_name, check_selector_no_global, check_subdomain_name,
    parse_cidr_or_ip,
};

/// The label Calico puts on every policy naming its tier.
pub const LABEL_TIER: &str = "projectcalico.org/tier";
/// The tier policies belong to when they name none.
pub const DEFAULT_TIER: &str = "default";
/// Built-in tiers and their fixed orders.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
pub const KUBE_ADMIN_TIER: &str = "kube-admin";
pub const KUBE_ADMIN_TIER_ORDER: f64 = 1_000.0;
pub const KUBE_BASELINE_TIER: &str = "kube-baseline";
pub const KUBE_BASELINE_TIER_ORDER: f64 = 10_000_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Log,
    Pass,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Log => "Log",
            Action::Pass => "Pass",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpFields {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpPath {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exact: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<HttpPath>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The source or destination side of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub not_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
}

impl EntityRule {
    pub fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }
}

/// One policy rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, rename = "icmp", skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RuleMetadata>,
}

impl Rule {
    pub fn allow() -> Rule {
        Rule::default()
    }
}

/// Serde for `order`: Go writes integral floats without a fraction (`1000`, not `1000.0`).
pub(crate) mod order_float {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => s.serialize_i64(*f as i64),
            Some(f) => s.serialize_f64(*f),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<f64>::deserialize(d)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PerformanceHint {
    AssumeNeededOnEveryNode,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(default, with = "order_float", skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<PerformanceHint>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GlobalNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(default, with = "order_float", skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub do_not_track: bool,
    #[serde(default, rename = "preDNAT", skip_serializing_if = "is_false")]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub apply_on_forward: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<PerformanceHint>,
}

/// Calico's policy `types` default: Ingress unless there are only egress rules; both when both.
pub fn default_policy_types(ingress: &[Rule], egress: &[Rule]) -> Vec<PolicyType> {
    match (ingress.is_empty(), egress.is_empty()) {
        (_, true) => vec![PolicyType::Ingress],
        (true, false) => vec![PolicyType::Egress],
        (false, false) => vec![PolicyType::Ingress, PolicyType::Egress],
    }
}

pub(crate) fn default_policy(
    meta: &mut crate::meta::ObjectMeta,
    tier: &mut String,
    types: &mut Vec<PolicyType>,
    ingress: &[Rule],
    egress: &[Rule],
) {
    if tier.is_empty() {
        *tier = DEFAULT_TIER.to_string();
    }
    if types.is_empty() {
        *types = default_policy_types(ingress, egress);
    }
    meta.labels.insert(LABEL_TIER.to_string(), tier.clone());
}

/// Which policy a rule list sits in, for the rules that differ by direction and scope.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleContext {
    Ingress,
    Egress,
}

fn check_ports(errs: &mut Errors, p: &Path, ports: &[Port], protocol: Option<&Protocol>) {
    if ports.len() > 50 {
        errs.add(p, format!("{} ports listed; the limit is 50", ports.len()));
    }
    for (i, port) in ports.iter().enumerate() {
        if let Port::Range { min, max } = port {
            if *min < 1 || *max < 1 {
                errs.add(p.index(i), "port numbers must be between 1 and 65535");
            }
            match protocol {
                None => errs.add(
                    p.index(i),
                    "rules with numeric port or port range must set protocol to TCP or UDP or SCTP",
                ),
                Some(pr) if !pr.supports_ports() => errs.add(
                    p.index(i),
                    format!("protocol {pr} has no ports; rules that specify ports must set protocol to TCP or UDP or SCTP"),
                ),
                _ => {}
            }
        } else if let Some(pr) = protocol
            && !pr.supports_ports()
        {
            errs.add(
                p.index(i),
                format!("protocol {pr} has no ports; rules that specify ports must set protocol to TCP or UDP or SCTP"),
            );
        }
    }
}

fn check_icmp(errs: &mut Errors, p: &Path, icmp: &IcmpFields, protocol: Option<&Protocol>) {
    if let Some(t) = icmp.type_
        && !(0..=254).contains(&t)
    {
        errs.add(p.field("type"), format!("{t} is outside 0..254"));
    }
    if let Some(c) = icmp.code {
        if !(0..=255).contains(&c) {
            errs.add(p.field("code"), format!("{c} is outside 0..255"));
        }
        if icmp.type_.is_none() {
            errs.add(p.field("code"), "an ICMP code needs an ICMP type");
        }
    }
    if !matches!(protocol.and_then(Protocol::number), Some(1 | 58)) {
        errs.add(p, "ICMP fields require protocol to be ICMP or ICMPv6");
    }
}

fn check_entity(
    errs: &mut Errors,
    p: &Path,
    e: &EntityRule,
    protocol: Option<&Protocol>,
    ip_version: Option<i64>,
    seen: &mut (bool, bool),
) {
    for (field, nets) in [("nets", &e.nets), ("notNets", &e.not_nets)] {
        if nets.len() > 256 {
            errs.add(
                p.field(field),
                format!("{} CIDRs listed; the limit is 256", nets.len()),
            );
        }
        let (mut v4, mut v6) = (false, false);
        for (i, n) in nets.iter().enumerate() {
            match parse_cidr_or_ip(n) {
                Err(err) => errs.add(p.field(field).index(i), err),
                Ok(net) => {
                    let is4 = matches!(net, ipnet::IpNet::V4(_));
                    v4 |= is4;
                    v6 |= !is4;
                    if field == "notNets" && net.prefix_len() == 0 {
                        errs.add(
                            p.field(field).index(i),
                            format!("{n} in notNets matches no traffic at all; remove the rule or narrow the CIDR"),
                        );
                    }
                }
            }
        }
        if let Some(v) = ip_version
            && ((v4 && v != 4) || (v6 && v != 6))
        {
            errs.add(
                p.field(field),
                format!("CIDRs do not match the rule's ipVersion {v}"),
            );
        }
        if (v4 && (v6 || seen.1)) || (v6 && seen.0) {
            errs.add(
                p.field(field),
                "a rule cannot mix IPv4 and IPv6 CIDRs; split it into two rules",
            );
        }
        seen.0 |= v4;
        seen.1 |= v6;
    }
    for (field, sel) in [("selector", &e.selector), ("notSelector", &e.not_selector)] {
        if !sel.is_empty() {
            errs.check(p.field(field), check_selector_no_global(sel));
        }
    }
    if !e.namespace_selector.is_empty() {
        match Selector::parse(&e.namespace_selector) {
            Err(err) => errs.add(p.field("namespaceSelector"), err.to_string()),
            Ok(s) => {
                if s.mentions_global() && *s.root() != crate::selector::Node::Global {
                    errs.add(
                        p.field("namespaceSelector"),
                        "global() cannot be combined with other selectors",
                    );
                }
            }
        }
    }
    check_ports(errs, &p.field("ports"), &e.ports, protocol);
    check_ports(errs, &p.field("notPorts"), &e.not_ports, protocol);
    if let Some(sa) = &e.service_accounts
        && !sa.selector.is_empty()
    {
        errs.check(
            p.field("serviceAccounts").field("selector"),
            check_selector_no_global(&sa.selector),
        );
    }
    if let Some(svc) = &e.services {
        if svc.name.is_empty() {
            errs.add(
                p.field("services").field("name"),
                "services must name a service",
            );
        }
        if !e.namespace_selector.is_empty() {
            errs.add(
                p.field("services"),
                "cannot specify namespaceSelector and services together",
            );
        }
        if e.service_accounts.is_some() {
            errs.add(
                p.field("services"),
                "cannot specify serviceAccounts and services together",
            );
        }
        if !e.selector.is_empty() || !e.not_selector.is_empty() {
            errs.add(
                p.field("services"),
                "cannot specify selector/notSelector and services together",
            );
        }
        if !e.nets.is_empty() || !e.not_nets.is_empty() {
            errs.add(
                p.field("services"),
                "cannot specify nets/notNets and services together",
            );
        }
    }
}

pub(crate) fn check_rule(errs: &mut Errors, p: &Path, r: &Rule, ctx: RuleContext, global: bool) {
    if let Some(v) = r.ip_version
        && v != 4
        && v != 6
    {
        errs.add(p.field("ipVersion"), format!("{v} must be 4 or 6"));
    }
    for (field, proto) in [("protocol", &r.protocol), ("notProtocol", &r.not_protocol)] {
        if let Some(pr) = proto {
            errs.check(p.field(field), pr.check());
            match (pr.number(), r.ip_version) {
                (Some(1), Some(v)) if v != 4 => {
                    errs.add(p.field(field), "protocol ICMP requires ipVersion 4")
                }
                (Some(58), Some(v)) if v != 6 => {
                    errs.add(p.field(field), "protocol ICMPv6 requires ipVersion 6")
                }
                _ => {}
            }
        }
    }
    if let Some(i) = &r.icmp {
        check_icmp(errs, &p.field("icmp"), i, r.protocol.as_ref());
    }
    if let Some(i) = &r.not_icmp {
        check_icmp(errs, &p.field("notICMP"), i, r.protocol.as_ref());
    }
    let mut seen = (false, false);
    check_entity(
        errs,
        &p.field("source"),
        &r.source,
        r.protocol.as_ref(),
        r.ip_version,
        &mut seen,
    );
    check_entity(
        errs,
        &p.field("destination"),
        &r.destination,
        r.protocol.as_ref(),
        r.ip_version,
        &mut seen,
    );
    if r.destination.services.is_some()
        && (!r.destination.ports.is_empty() || !r.destination.not_ports.is_empty())
    {
        errs.add(
            p.field("destination"),
            "ports and notPorts cannot be specified with services",
        );
    }
    match ctx {
        RuleContext::Egress => {
            if r.source.services.is_some() {
                errs.add(
                    p.field("source").field("services"),
                    "not allowed in an egress rule's source",
                );
            }
            if r.http.is_some() {
                errs.add(
                    p.field("http"),
                    "HTTP matches are not allowed in egress rules",
                );
            }
            if global
                && let Some(s) = &r.destination.services
                && s.namespace.is_empty()
            {
                errs.add(
                    p.field("destination").field("services").field("namespace"),
                    "a global policy must name the service's namespace",
                );
            }
        }
        RuleContext::Ingress => {
            if r.destination.services.is_some() {
                errs.add(
                    p.field("destination").field("services"),
                    "not allowed in an ingress rule's destination",
                );
            }
            if global
                && let Some(s) = &r.source.services
                && s.namespace.is_empty()
            {
                errs.add(
                    p.field("source").field("services").field("namespace"),
                    "a global policy must name the service's namespace",
                );
            }
        }
    }
    if let Some(h) = &r.http {
        if r.action != Action::Allow {
            errs.add(p.field("http"), "HTTP match is only valid on Allow rules");
        }
        if r.protocol.as_ref().is_some_and(|pr| pr.number() != Some(6)) {
            errs.add(
                p.field("http"),
                "rules with HTTP match must have protocol TCP or unset",
            );
        }
        let mut seen_methods = std::collections::BTreeSet::new();
        for m in &h.methods {
            if !seen_methods.insert(m) {
                errs.add(
                    p.field("http").field("methods"),
                    format!("method {m:?} is listed twice"),
                );
            }
        }
        for (i, path) in h.paths.iter().enumerate() {
            let pp = p.field("http").field("paths").index(i);
            let v = match (path.exact.is_empty(), path.prefix.is_empty()) {
                (false, false) => {
                    errs.add(&pp, "set either exact or prefix, not both");
                    continue;
                }
                (true, true) => {
                    errs.add(&pp, "set exact or prefix");
                    continue;
                }
                (false, true) => &path.exact,
                (true, false) => &path.prefix,
            };
            if !v.starts_with('/') || v.contains(['?', ' ', '#']) {
                errs.add(
                    &pp,
                    format!("{v:?} must start with / and contain no '?', '#' or spaces"),
                );
            }
        }
    }
    if let Some(m) = &r.metadata {
        crate::validation::check_annotations(
            errs,
            &p.field("metadata").field("annotations"),
            &m.annotations,
        );
    }
}

pub(crate) fn check_rules(
    errs: &mut Errors,
    p: &Path,
    ingress: &[Rule],
    egress: &[Rule],
    global: bool,
) {
    for (field, rules, ctx) in [
        ("ingress", ingress, RuleContext::Ingress),
        ("egress", egress, RuleContext::Egress),
    ] {
        if rules.len() > 1024 {
            errs.add(
                p.field(field),
                format!("{} rules; the limit is 1024", rules.len()),
            );
        }
        for (i, r) in rules.iter().enumerate() {
            check_rule(errs, &p.field(field).index(i), r, ctx, global);
        }
    }
}

fn check_types(errs: &mut Errors, p: &Path, types: &[PolicyType]) {
    if types.len() > 2 {
        errs.add(p, "list at most Ingress and Egress");
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in types {
        if !seen.insert(t) {
            errs.add(p, format!("'{t:?}' type specified more than once"));
        }
    }
}

fn check_tier_ref(errs: &mut Errors, p: &Path, tier: &str) {
    if !tier.is_empty() {
        errs.check(p.field("tier"), check_label_name(tier));
    }
}

fn check_order(errs: &mut Errors, p: &Path, order: Option<f64>) {
    if order.is_some_and(|o| !o.is_finite()) {
        errs.add(p.field("order"), "must be a finite number");
    }
}

/// NetworkPolicy names: a DNS label, `label.label`, or a subdomain prefixed by `knp.default.`
/// or `ossg.default.`.
pub fn check_network_policy_name(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!(
            "name is too long by {} bytes (max 253)",
            name.len() - 253
        ));
    }
    for prefix in ["knp.default.", "ossg.default."] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return check_subdomain_name(rest).map_err(|_| {
                format!("{name:?}: the part after {prefix:?} must be a DNS subdomain")
            });
        }
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() <= 2 && labels.iter().all(|l| check_label_name(l).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be lower case alphanumerics and '-', optionally with one '.' (e.g. my-policy or tier1.my-policy)"
        ))
    }
}

/// GlobalNetworkPolicy names: a DNS label optionally prefixed by one `label.`.
pub fn check_global_network_policy_name(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!(
            "name is too long by {} bytes (max 253)",
            name.len() - 253
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() <= 2 && labels.iter().all(|l| check_label_name(l).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be lower case alphanumerics and '-', optionally with one '.' (e.g. my-policy or tier1.my-policy)"
        ))
    }
}

impl KindRules for NetworkPolicy {
    fn check_name(name: &str) -> Result<(), String> {
        check_network_policy_name(name)
    }

    fn defaults(&mut self) {
        let s = &mut self.spec;
        default_policy(
            &mut self.metadata,
            &mut s.tier,
            &mut s.types,
            &s.ingress,
            &s.egress,
        );
    }

    fn check(&self, errs: &mut Errors) {
        check_network_policy_spec(errs, &Path::root("spec"), &self.spec);
    }
}

/// The spec rules of a NetworkPolicy, shared with StagedNetworkPolicy (Calico's
/// `validateNetworkPolicySpec` plus the field tags and CEL rules of `NetworkPolicySpec`).
pub(crate) fn check_network_policy_spec(errs: &mut Errors, p: &Path, s: &NetworkPolicySpec) {
    check_tier_ref(errs, p, &s.tier);
    check_order(errs, p, s.order);
    if !s.selector.is_empty() {
        errs.check(p.field("selector"), check_selector_no_global(&s.selector));
    }
    if !s.service_account_selector.is_empty() {
        errs.check(
            p.field("serviceAccountSelector"),
            check_selector_no_global(&s.service_account_selector),
        );
    }
    check_types(errs, &p.field("types"), &s.types);
    check_rules(errs, p, &s.ingress, &s.egress, false);
}

impl KindRules for GlobalNetworkPolicy {
    fn check_name(name: &str) -> Result<(), String> {
        check_global_network_policy_name(name)
    }

    fn defaults(&mut self) {
        let s = &mut self.spec;
        default_policy(
            &mut self.metadata,
            &mut s.tier,
            &mut s.types,
            &s.ingress,
            &s.egress,
        );
    }

    fn check(&self, errs: &mut Errors) {
        check_global_network_policy_spec(errs, &Path::root("spec"), &self.spec);
    }
}

/// The spec rules of a GlobalNetworkPolicy, shared with StagedGlobalNetworkPolicy (Calico's
/// `validateGlobalNetworkPolicySpec` plus the field tags and CEL rules of its spec).
pub(crate) fn check_global_network_policy_spec(
    errs: &mut Errors,
    p: &Path,
    s: &GlobalNetworkPolicySpec,
) {
    check_tier_ref(errs, p, &s.tier);
    check_order(errs, p, s.order);
    for (field, sel) in [
        ("selector", &s.selector),
        ("serviceAccountSelector", &s.service_account_selector),
        ("namespaceSelector", &s.namespace_selector),
    ] {
        if !sel.is_empty() {
            errs.check(p.field(field), check_selector_no_global(sel));
        }
    }
    check_types(errs, &p.field("types"), &s.types);
    if s.do_not_track && s.pre_dnat {
        errs.add(
            p.field("preDNAT"),
            "preDNAT and doNotTrack cannot both be true",
        );
    }
    if s.pre_dnat {
        if !s.egress.is_empty() {
            errs.add(
                p.field("egress"),
                "a preDNAT policy cannot have egress rules",
            );
        }
        if s.types.contains(&PolicyType::Egress) {
            errs.add(
                p.field("types"),
                "a preDNAT policy cannot have the Egress type",
            );
        }
    }
    if (s.do_not_track || s.pre_dnat) && !s.apply_on_forward {
        errs.add(
            p.field("applyOnForward"),
            "must be true when doNotTrack or preDNAT is set",
        );
    }
    check_rules(errs, p, &s.ingress, &s.egress, true);
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierSpec {
    #[serde(default, with = "order_float", skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TierStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::meta::Condition>,
}

impl TierSpec {
    pub fn effective_default_action(&self) -> Action {
        self.default_action.unwrap_or(Action::Deny)
    }
}

impl KindRules for Tier {
    fn check_name(name: &str) -> Result<(), String> {
        check_label_name(name)
    }

    fn defaults(&mut self) {
        self.spec.default_action.get_or_insert(Action::Deny);
    }

    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        check_order(errs, &p, s.order);
        if let Some(a) = s.default_action
            && a != Action::Deny
            && a != Action::Pass
        {
            errs.add(
                p.field("defaultAction"),
                format!("{a} must be Deny or Pass"),
            );
        }
        let fixed = [
            (DEFAULT_TIER, DEFAULT_TIER_ORDER, Action::Deny),
            (KUBE_ADMIN_TIER, KUBE_ADMIN_TIER_ORDER, Action::Pass),
            (KUBE_BASELINE_TIER, KUBE_BASELINE_TIER_ORDER, Action::Pass),
        ];
        for (name, order, action) in fixed {
            if self.metadata.name == name {
                if s.order != Some(order) {
                    errs.add(
                        p.field("order"),
                        format!("the {name:?} tier's order must be {order}"),
                    );
                }
                if s.effective_default_action() != action {
                    errs.add(
                        p.field("defaultAction"),
                        format!("the {name:?} tier's defaultAction must be {action}"),
                    );
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_to_apply: BTreeMap<String, String>,
}

impl KindRules for Profile {
    fn check(&self, errs: &mut Errors) {
        let p = Path::root("spec");
        check_rules(errs, &p, &self.spec.ingress, &self.spec.egress, false);
        crate::validation::check_labels(
            errs,
            &p.field("labelsToApply"),
            &self.spec.labels_to_apply,
        );
    }
}
