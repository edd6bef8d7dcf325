//! Kubernetes `networking.k8s.io/v1` NetworkPolicy, and its conversion into the Calico
//! NetworkPolicy that enforces it.
//!
//! The conversion follows Calico's (`K8sNetworkPolicyToCalico`): tier `default`, order 1000,
//! pod selectors ANDed with `projectcalico.org/orchestrator == 'k8s'`, one rule per protocol and
//! peer, numeric ports merged into ranges, `policyTypes` absent meaning `[Ingress]` (plus
//! `Egress` only when the Kubernetes object says so). In the etcd datastore the result is
//! stored as a Calico NetworkPolicy named `knp.default.<name>`, the name classic Calico gives it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::policy::{Action, EntityRule, NetworkPolicySpec, PolicyType, Rule};
use crate::meta::ObjectMeta;
use crate::names::LABEL_ORCHESTRATOR;
use crate::numorstring::{Port, Protocol};
use crate::resource::{K8sNetworkPolicy, KindRules, NetworkPolicy};
use crate::validation::{Errors, Path, check_label_value, check_port_name, check_qualified_name};

/// The name prefix Calico gives converted Kubernetes policies.
pub const K8S_POLICY_NAME_PREFIX: &str = "knp.default.";
/// The order of every converted Kubernetes policy.
pub const K8S_POLICY_ORDER: f64 = 1000.0;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Kubernetes `metav1.LabelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// An int-or-string port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl std::fmt::Display for IntOrString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, rename = "ipBlock", skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicyIngressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicyEgressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<NetworkPolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sNetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyEgressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<String>,
}

fn check_label_selector(errs: &mut Errors, p: &Path, s: &LabelSelector) {
    for (k, v) in &s.match_labels {
        errs.check(p.field("matchLabels").key(k), check_qualified_name(k));
        errs.check(p.field("matchLabels").key(k), check_label_value(v));
    }
    for (i, e) in s.match_expressions.iter().enumerate() {
        let ep = p.field("matchExpressions").index(i);
        errs.check(ep.field("key"), check_qualified_name(&e.key));
        match e.operator.as_str() {
            "In" | "NotIn" => {
                if e.values.is_empty() {
                    errs.add(
                        ep.field("values"),
                        format!("operator {} needs at least one value", e.operator),
                    );
                }
                for (j, v) in e.values.iter().enumerate() {
                    errs.check(ep.field("values").index(j), check_label_value(v));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !e.values.is_empty() {
                    errs.add(
                        ep.field("values"),
                        format!("operator {} takes no values", e.operator),
                    );
                }
            }
            other => errs.add(
                ep.field("operator"),
                format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
            ),
        }
    }
}

fn check_ports(errs: &mut Errors, p: &Path, ports: &[NetworkPolicyPort]) {
    for (i, port) in ports.iter().enumerate() {
        let pp = p.index(i);
        if let Some(proto) = &port.protocol
            && !["TCP", "UDP", "SCTP"].contains(&proto.as_str())
        {
            errs.add(
                pp.field("protocol"),
                format!("{proto:?} is not one of TCP, UDP, SCTP"),
            );
        }
        match &port.port {
            Some(IntOrString::Int(n)) => {
                if !(1..=65535).contains(n) {
                    errs.add(pp.field("port"), format!("{n} is outside 1..65535"));
                }
                if let Some(end) = port.end_port
                    && (end < *n || end > 65535)
                {
                    errs.add(
                        pp.field("endPort"),
                        format!("{end} must be between port ({n}) and 65535"),
                    );
                }
            }
            Some(IntOrString::String(name)) => {
                errs.check(pp.field("port"), check_port_name(name));
                if port.end_port.is_some() {
                    errs.add(pp.field("endPort"), "may not be used with a named port");
                }
            }
            None => {
                if port.end_port.is_some() {
                    errs.add(pp.field("endPort"), "requires a numeric port");
                }
            }
        }
    }
}

fn check_peers(errs: &mut Errors, p: &Path, peers: &[NetworkPolicyPeer]) {
    for (i, peer) in peers.iter().enumerate() {
        let pp = p.index(i);
        let set = [
            peer.pod_selector.is_some(),
            peer.namespace_selector.is_some(),
            peer.ip_block.is_some(),
        ];
        if !set.iter().any(|b| *b) {
            errs.add(
                &pp,
                "a peer must set podSelector, namespaceSelector or ipBlock",
            );
        }
        if peer.ip_block.is_some() && (set[0] || set[1]) {
            errs.add(
                &pp,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            );
        }
        if let Some(s) = &peer.pod_selector {
            check_label_selector(errs, &pp.field("podSelector"), s);
        }
        if let Some(s) = &peer.namespace_selector {
            check_label_selector(errs, &pp.field("namespaceSelector"), s);
        }
        if let Some(b) = &peer.ip_block {
            let bp = pp.field("ipBlock");
            match b.cidr.parse::<ipnet::IpNet>() {
                Err(_) => errs.add(bp.field("cidr"), format!("{:?} is not a CIDR", b.cidr)),
                Ok(net) => {
                    for (j, ex) in b.except.iter().enumerate() {
                        match ex.parse::<ipnet::IpNet>() {
                            Err(_) => errs
                                .add(bp.field("except").index(j), format!("{ex:?} is not a CIDR")),
                            Ok(e)
                                if !net.trunc().contains(&e.trunc())
                                    || e.prefix_len() <= net.prefix_len() =>
                            {
                                errs.add(
                                    bp.field("except").index(j),
                                    format!("{ex} must be strictly within {}", b.cidr),
                                )
                            }
                            Ok(_) => {}
                        }
                    }
                }
            }
        }
    }
}

impl KindRules for K8sNetworkPolicy {
    fn check(&self, errs: &mut Errors) {
        check_k8s_network_policy_spec(errs, &Path::root("spec"), &self.spec);
    }
}

/// The spec rules of a Kubernetes NetworkPolicy (the API server's), shared with
/// StagedKubernetesNetworkPolicy.
pub(crate) fn check_k8s_network_policy_spec(errs: &mut Errors, p: &Path, s: &K8sNetworkPolicySpec) {
    check_label_selector(errs, &p.field("podSelector"), &s.pod_selector);
    for (i, t) in s.policy_types.iter().enumerate() {
        if t != "Ingress" && t != "Egress" {
            errs.add(
                p.field("policyTypes").index(i),
                format!("{t:?} must be Ingress or Egress"),
            );
        }
    }
    for (i, r) in s.ingress.iter().enumerate() {
        check_peers(errs, &p.field("ingress").index(i).field("from"), &r.from);
        check_ports(errs, &p.field("ingress").index(i).field("ports"), &r.ports);
    }
    for (i, r) in s.egress.iter().enumerate() {
        check_peers(errs, &p.field("egress").index(i).field("to"), &r.to);
        check_ports(errs, &p.field("egress").index(i).field("ports"), &r.ports);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SelectorKind {
    Pod,
    Namespace,
}

/// Kubernetes label selector → Calico selector text, spelled as Calico spells it.
fn k8s_selector_to_calico(s: Option<&LabelSelector>, kind: SelectorKind) -> String {
    let mut terms: Vec<String> = Vec::new();
    if kind == SelectorKind::Pod {
        terms.push(format!("{LABEL_ORCHESTRATOR} == 'k8s'"));
    }
    let Some(s) = s else {
        return terms.join(" && ");
    };
    if kind == SelectorKind::Namespace && s.is_empty() {
        return "all()".to_string();
    }
    // BTreeMap iteration is already in sorted key order, as Calico sorts.
    for (k, v) in &s.match_labels {
        terms.push(format!("{k} == '{v}'"));
    }
    for e in &s.match_expressions {
        let values = e.values.join("', '");
        match e.operator.as_str() {
            "In" => terms.push(format!("{} in {{ '{values}' }}", e.key)),
            "NotIn" => terms.push(format!("{} not in {{ '{values}' }}", e.key)),
            "Exists" => terms.push(format!("has({})", e.key)),
            "DoesNotExist" => terms.push(format!("! has({})", e.key)),
            _ => {}
        }
    }
    terms.join(" && ")
}

/// Merges numeric ports into the fewest ranges; named ports pass through first
/// (Calico's `SimplifyPorts`).
pub fn simplify_ports(ports: Vec<Port>) -> Vec<Port> {
    if ports.len() <= 1 {
        return ports;
    }
    let mut out = Vec::new();
    let mut numeric: Vec<u32> = Vec::new();
    for p in &ports {
        match p {
            Port::Named(_) => out.push(p.clone()),
            Port::Range { min, max } => numeric.extend(u32::from(*min)..=u32::from(*max)),
        }
    }
    if numeric.len() <= 1 {
        return ports;
    }
    numeric.sort_unstable();
    let mut i = 0;
    while i < numeric.len() {
        let first = numeric[i];
        let mut last = first;
        i += 1;
        while i < numeric.len() && numeric[i] <= last + 1 {
            last = numeric[i];
            i += 1;
        }
        // Values came from u16 ports, so they fit.
        let (a, b) = (
            u16::try_from(first).unwrap_or(u16::MAX),
            u16::try_from(last).unwrap_or(u16::MAX),
        );
        out.push(Port::Range { min: a, max: b });
    }
    out
}

struct PeerFields {
    selector: String,
    namespace_selector: String,
    nets: Vec<String>,
    not_nets: Vec<String>,
}

fn peer_fields(peer: Option<&NetworkPolicyPeer>) -> PeerFields {
    let empty = PeerFields {
        selector: String::new(),
        namespace_selector: String::new(),
        nets: vec![],
        not_nets: vec![],
    };
    let Some(peer) = peer else { return empty };
    if let Some(b) = &peer.ip_block {
        let norm = |c: &str| c.parse::<ipnet::IpNet>().map(|n| n.trunc().to_string());
        let Ok(net) = norm(&b.cidr) else { return empty };
        let mut not_nets = Vec::new();
        for e in &b.except {
            match norm(e) {
                Ok(n) => not_nets.push(n),
                Err(_) => {
                    return PeerFields {
                        nets: vec![net],
                        ..empty
                    };
                }
            }
        }
        return PeerFields {
            nets: vec![net],
            not_nets,
            ..empty
        };
    }
    PeerFields {
        selector: k8s_selector_to_calico(peer.pod_selector.as_ref(), SelectorKind::Pod),
        namespace_selector: k8s_selector_to_calico(
            peer.namespace_selector.as_ref(),
            SelectorKind::Namespace,
        ),
        nets: vec![],
        not_nets: vec![],
    }
}

/// One Kubernetes rule → Calico rules: one per protocol (sorted, "no protocol" first) and
/// per peer.
fn convert_rule(
    peers: &[NetworkPolicyPeer],
    ports: &[NetworkPolicyPort],
    ingress: bool,
) -> Result<Vec<Rule>, String> {
    // protocol name ("" = any) → ports (None = all ports of that protocol)
    let mut by_proto: BTreeMap<String, Option<Vec<Port>>> = BTreeMap::new();
    if ports.is_empty() {
        by_proto.insert(String::new(), None);
    }
    for p in ports {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".to_string());
        let calico_ports = match &p.port {
            None => None,
            Some(port) => {
                let text = match p.end_port {
                    Some(end) => format!("{port}:{end}"),
                    None => port.to_string(),
                };
                Some(vec![
                    Port::parse(&text).map_err(|e| format!("invalid port {text:?}: {e}"))?,
                ])
            }
        };
        let canonical = Protocol::parse(&proto).to_string();
        match calico_ports {
            None => {
                by_proto.insert(canonical, None);
            }
            Some(ps) => match by_proto.get_mut(&canonical) {
                Some(None) => {} // already "all ports" for this protocol
                Some(Some(existing)) => existing.extend(ps),
                None => {
                    by_proto.insert(canonical, Some(ps));
                }
            },
        }
    }
    let peer_list: Vec<Option<&NetworkPolicyPeer>> = if peers.is_empty() {
        vec![None]
    } else {
        peers.iter().map(Some).collect()
    };
    let mut rules = Vec::new();
    for (proto, ports) in by_proto {
        let protocol = (!proto.is_empty()).then(|| Protocol::parse(&proto));
        let ports = ports.map(simplify_ports).unwrap_or_default();
        for peer in &peer_list {
            let f = peer_fields(*peer);
            let entity = EntityRule {
                selector: f.selector,
                namespace_selector: f.namespace_selector,
                nets: f.nets,
                not_nets: f.not_nets,
                ..Default::default()
            };
            let rule = if ingress {
                Rule {
                    action: Action::Allow,
                    protocol: protocol.clone(),
                    source: entity,
                    destination: EntityRule {
                        ports: ports.clone(),
                        ..Default::default()
                    },
                    ..Default::default()
                }
            } else {
                Rule {
                    action: Action::Allow,
                    protocol: protocol.clone(),
                    destination: EntityRule {
                        ports: ports.clone(),
                        ..entity
                    },
                    ..Default::default()
                }
            };
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// A Kubernetes rule that could not be converted (it is left out, as Calico does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRule {
    pub path: String,
    pub reason: String,
}

impl K8sNetworkPolicy {
    /// The Calico NetworkPolicy that enforces this policy, named `knp.default.<name>`.
    /// Rules that cannot be converted are dropped and reported, never silently widened.
    pub fn to_calico(&self) -> (NetworkPolicy, Vec<DroppedRule>) {
        let s = &self.spec;
        let mut dropped = Vec::new();
        let mut ingress = Vec::new();
        for (i, r) in s.ingress.iter().enumerate() {
            match convert_rule(&r.from, &r.ports, true) {
                Ok(rules) => ingress.extend(rules),
                Err(reason) => dropped.push(DroppedRule {
                    path: format!("spec.ingress[{i}]"),
                    reason,
                }),
            }
        }
        let mut egress = Vec::new();
        for (i, r) in s.egress.iter().enumerate() {
            match convert_rule(&r.to, &r.ports, false) {
                Ok(rules) => egress.extend(rules),
                Err(reason) => dropped.push(DroppedRule {
                    path: format!("spec.egress[{i}]"),
                    reason,
                }),
            }
        }
        let mut types = Vec::new();
        if s.policy_types.iter().any(|t| t == "Ingress") {
            types.push(PolicyType::Ingress);
        }
        if s.policy_types.iter().any(|t| t == "Egress") {
            types.push(PolicyType::Egress);
        }
        if types.is_empty() {
            types.push(PolicyType::Ingress);
        }
        let metadata = ObjectMeta {
            name: format!("{K8S_POLICY_NAME_PREFIX}{}", self.metadata.name),
            namespace: self.metadata.namespace.clone(),
            uid: self.metadata.uid.clone(),
            creation_timestamp: self.metadata.creation_timestamp.clone(),
            labels: BTreeMap::from([(
                super::policy::LABEL_TIER.to_string(),
                super::policy::DEFAULT_TIER.to_string(),
            )]),
            ..Default::default()
        };
        let spec = NetworkPolicySpec {
            tier: super::policy::DEFAULT_TIER.to_string(),
            order: Some(K8S_POLICY_ORDER),
            selector: k8s_selector_to_calico(Some(&s.pod_selector), SelectorKind::Pod),
            ingress,
            egress,
            types,
            ..Default::default()
        };
        (NetworkPolicy::new(metadata, spec), dropped)
    }
}
