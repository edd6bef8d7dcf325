//! A v3 rule as the dataplane renders it (Calico's rule scanner): selectors scoped to the
//! policy's namespace and turned into the IDs of the IP sets that will hold their members,
//! named ports split out into IP-and-port sets, numeric ports and CIDRs kept in the rule.

use calico_api::kinds::{Action, EntityRule, IcmpFields, Rule};
use calico_api::numorstring::{Port, Protocol};
use calico_api::scoping::{entity_rule_not_selector, entity_rule_selector};
use calico_api::selector::Selector;

use crate::generic::PortRange;
use crate::rules::{IcmpMatch, ParsedRule, ProtocolMatch, make_unique_id};

/// The protocol a named-port IP set is for (Calico's `ipsetmember.Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamedPortProtocol {
    Tcp,
    Udp,
    Sctp,
    /// The rule names no protocol: a port of that name with any protocol.
    Any,
}

impl NamedPortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            NamedPortProtocol::Tcp => "tcp",
            NamedPortProtocol::Udp => "udp",
            NamedPortProtocol::Sctp => "sctp",
            NamedPortProtocol::Any => "any",
        }
    }

    /// The rule's protocol as Calico maps it (anything but UDP and SCTP is TCP).
    fn from_rule(p: Option<&Protocol>) -> NamedPortProtocol {
        let Some(p) = p else {
            return NamedPortProtocol::Any;
        };
        match p {
            Protocol::Number(17) => NamedPortProtocol::Udp,
            Protocol::Number(132) => NamedPortProtocol::Sctp,
            Protocol::Number(_) => NamedPortProtocol::Tcp,
            Protocol::Name(n) => match n.to_ascii_lowercase().as_str() {
                "udp" => NamedPortProtocol::Udp,
                "sctp" => NamedPortProtocol::Sctp,
                _ => NamedPortProtocol::Tcp,
            },
        }
    }

    /// The protocol of an IP-and-port member for an endpoint port (Calico's `ProtocolFrom`).
    pub fn of_endpoint_port(p: &Protocol) -> NamedPortProtocol {
        NamedPortProtocol::from_rule(Some(p))
    }

    /// Whether an endpoint port with protocol `p` belongs in a set for this protocol.
    pub fn matches(self, p: &Protocol) -> bool {
        match self {
            NamedPortProtocol::Any => true,
            other => NamedPortProtocol::from_rule(Some(p)) == other,
        }
    }
}

/// What an IP set holds: the addresses of what a selector matches, or those addresses with
/// one named port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IpSetKind {
    Net,
    NamedPort {
        protocol: NamedPortProtocol,
        port: String,
    },
}

/// An IP set a rule needs.
#[derive(Debug, Clone)]
pub struct IpSetDef {
    pub selector: Selector,
    pub kind: IpSetKind,
}

impl IpSetDef {
    /// Calico's ID: the selector's unique ID, or for a named port
    /// `MakeUniqueID("n", selectorID + "," + protocol + "," + port)`.
    pub fn id(&self) -> String {
        match &self.kind {
            IpSetKind::Net => self.selector.unique_id().to_string(),
            IpSetKind::NamedPort { protocol, port } => make_unique_id(
                "n",
                &format!("{},{},{port}", self.selector.unique_id(), protocol.as_str()),
            ),
        }
    }
}

fn protocol_match(p: &Protocol) -> ProtocolMatch {
    match p {
        Protocol::Number(n) => ProtocolMatch::Number(*n),
        // iptables and nft want lower case names.
        Protocol::Name(n) => ProtocolMatch::Name(n.to_ascii_lowercase()),
    }
}

fn icmp(f: &IcmpFields) -> Option<IcmpMatch> {
    let t = u8::try_from(f.type_?).ok()?;
    Some(IcmpMatch {
        icmp_type: t,
        code: f.code.and_then(|c| u8::try_from(c).ok()),
    })
}

fn split_ports(ports: &[Port]) -> (Vec<PortRange>, Vec<String>) {
    let mut numeric = Vec::new();
    let mut named = Vec::new();
    for p in ports {
        match p {
            Port::Range { min, max } => numeric.push(PortRange {
                first: *min,
                last: *max,
            }),
            Port::Named(n) => named.push(n.clone()),
        }
    }
    (numeric, named)
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Log => "log",
        Action::Pass => "next-tier",
    }
}

/// One side of a rule: the positive selector (if any) and the negated one.
struct Side {
    positive: Option<Selector>,
    negative: Option<Selector>,
    numeric: Vec<PortRange>,
    named: Vec<String>,
    not_numeric: Vec<PortRange>,
    not_named: Vec<String>,
}

fn side(er: &EntityRule, policy_namespace: Option<&str>) -> Side {
    let (numeric, named) = split_ports(&er.ports);
    let (not_numeric, not_named) = split_ports(&er.not_ports);
    Side {
        positive: entity_rule_selector(er, policy_namespace),
        negative: entity_rule_not_selector(er),
        numeric,
        named,
        not_numeric,
        not_named,
    }
}

/// A rule ready to render, and every IP set it needs.
pub fn parse_rule(
    rule: &Rule,
    policy_namespace: Option<&str>,
    rule_id: String,
) -> (ParsedRule, Vec<IpSetDef>) {
    let src = side(&rule.source, policy_namespace);
    let dst = side(&rule.destination, policy_namespace);
    let proto = NamedPortProtocol::from_rule(rule.protocol.as_ref());
    let mut sets: Vec<IpSetDef> = Vec::new();
    let ids = |defs: Vec<IpSetDef>, sets: &mut Vec<IpSetDef>| -> Vec<String> {
        let ids = defs.iter().map(IpSetDef::id).collect();
        sets.extend(defs);
        ids
    };
    // Named ports become IP-and-port sets filtered by the positive selector of the same
    // side (always the positive one, also for negated named ports: the rule can only match
    // where the positive selector does).
    let named = |names: &[String], positive: &Option<Selector>| -> Vec<IpSetDef> {
        names
            .iter()
            .map(|n| IpSetDef {
                selector: positive.clone().unwrap_or_else(Selector::all),
                kind: IpSetKind::NamedPort {
                    protocol: proto,
                    port: n.clone(),
                },
            })
            .collect()
    };
    let selector_set = |s: &Option<Selector>| -> Vec<IpSetDef> {
        s.iter()
            .map(|s| IpSetDef {
                selector: s.clone(),
                kind: IpSetKind::Net,
            })
            .collect()
    };
    let src_named = ids(named(&src.named, &src.positive), &mut sets);
    let dst_named = ids(named(&dst.named, &dst.positive), &mut sets);
    let not_src_named = ids(named(&src.not_named, &src.positive), &mut sets);
    let not_dst_named = ids(named(&dst.not_named, &dst.positive), &mut sets);
    // The selector's own set is only needed when named ports did not already cover it.
    let src_sel = if !src.numeric.is_empty() || src.named.is_empty() {
        ids(selector_set(&src.positive), &mut sets)
    } else {
        Vec::new()
    };
    let dst_sel = if !dst.numeric.is_empty() || dst.named.is_empty() {
        ids(selector_set(&dst.positive), &mut sets)
    } else {
        Vec::new()
    };
    let not_src_sel = ids(selector_set(&src.negative), &mut sets);
    let not_dst_sel = ids(selector_set(&dst.negative), &mut sets);
    let parsed = ParsedRule {
        action: action_name(&rule.action).to_string(),
        ip_version: rule.ip_version.and_then(|v| u8::try_from(v).ok()),
        protocol: rule.protocol.as_ref().map(protocol_match),
        src_net: rule.source.nets.clone(),
        src_ports: src.numeric,
        src_named_port_ipset_ids: src_named,
        dst_net: rule.destination.nets.clone(),
        dst_ports: dst.numeric,
        dst_named_port_ipset_ids: dst_named,
        icmp: rule.icmp.as_ref().and_then(icmp),
        src_ipset_ids: src_sel,
        dst_ipset_ids: dst_sel,
        dst_ip_port_set_ids: Vec::new(),
        not_protocol: rule.not_protocol.as_ref().map(protocol_match),
        not_src_net: rule.source.not_nets.clone(),
        not_src_ports: src.not_numeric,
        not_dst_net: rule.destination.not_nets.clone(),
        not_dst_ports: dst.not_numeric,
        not_icmp: rule.not_icmp.as_ref().and_then(icmp),
        not_src_ipset_ids: not_src_sel,
        not_dst_ipset_ids: not_dst_sel,
        not_src_named_port_ipset_ids: not_src_named,
        not_dst_named_port_ipset_ids: not_dst_named,
        annotations: rule
            .metadata
            .as_ref()
            .map(|m| m.annotations.clone())
            .unwrap_or_default(),
        rule_id,
    };
    (parsed, sets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn selectors_become_sets_and_named_ports_port_sets() {
        let rule = Rule {
            action: Action::Allow,
            protocol: Some(Protocol::tcp()),
            source: EntityRule {
                selector: "role == 'client'".into(),
                ..Default::default()
            },
            destination: EntityRule {
                ports: vec![Port::single(80), Port::Named("http".into())],
                ..Default::default()
            },
            ..Default::default()
        };
        let (p, sets) = parse_rule(&rule, Some("ns1"), "r0".into());
        assert_eq!(p.action, "allow");
        assert_eq!(p.protocol, Some(ProtocolMatch::Name("tcp".into())));
        assert_eq!(p.dst_ports, vec![PortRange::single(80)]);
        assert_eq!(p.src_ipset_ids.len(), 1);
        assert!(p.src_ipset_ids[0].starts_with("s:"));
        assert_eq!(p.dst_named_port_ipset_ids.len(), 1);
        assert!(p.dst_named_port_ipset_ids[0].starts_with("n:"));
        // The source selector is scoped to the policy's namespace.
        let src = sets.iter().find(|s| s.kind == IpSetKind::Net).unwrap();
        assert!(
            src.selector
                .canonical()
                .contains("projectcalico.org/namespace")
        );
        // No destination selector: the named port set covers all endpoints.
        let np = sets
            .iter()
            .find(|s| matches!(s.kind, IpSetKind::NamedPort { .. }))
            .unwrap();
        assert!(np.selector.is_all());
    }
}
