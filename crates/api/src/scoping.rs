//! How Calico scopes the selectors written in policies before evaluating them
//! (`updateprocessors/rules.go`, `networkpolicyprocessor.go`, `globalnetworkpolicyprocessor.go`).
//!
//! A NetworkPolicy only selects endpoints of its own namespace; a GlobalNetworkPolicy's
//! `namespaceSelector` and `serviceAccountSelector` are matched against the `pcns.`/`pcsa.`
//! labels endpoints inherit, with `all()` meaning "any namespaced endpoint"; a rule's
//! `namespaceSelector` is scoped the same way, and in a NetworkPolicy a rule that uses any
//! selector field is confined to the policy's namespace unless it names namespaces.
//!
//! Inputs are expected to be validated. A selector that fails to parse becomes "match
//! nothing", never "match everything".

use crate::kinds::{EntityRule, ServiceAccountMatch};
use crate::names::{
    LABEL_NAMESPACE, LABEL_SERVICE_ACCOUNT, NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX,
};
use crate::selector::{Node, Selector};

fn parse(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|_| nothing())
}

/// `!all()`, Calico's canonical "matches nothing".
pub fn nothing() -> Selector {
    Selector::from_node(Node::Not(Box::new(Node::All)))
}

fn eq(label: &str, value: &str) -> Node {
    Node::Eq(label.to_string(), value.to_string())
}

fn and(a: Node, b: Node) -> Node {
    Node::And(vec![a, b])
}

/// Replaces `all()` by `has(label)` and `global()` by `!has(label)` everywhere in the tree.
fn rewrite_all_and_global(n: &Node, label: &str) -> Node {
    match n {
        Node::All => Node::Has(label.to_string()),
        Node::Global => Node::Not(Box::new(Node::Has(label.to_string()))),
        Node::Not(x) => Node::Not(Box::new(rewrite_all_and_global(x, label))),
        Node::And(xs) => Node::And(
            xs.iter()
                .map(|x| rewrite_all_and_global(x, label))
                .collect(),
        ),
        Node::Or(xs) => Node::Or(
            xs.iter()
                .map(|x| rewrite_all_and_global(x, label))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn prefixed(s: &str, prefix: &str) -> Node {
    parse(s).with_label_prefix(prefix).root().clone()
}

/// The endpoints a NetworkPolicy in `namespace` applies to:
/// `(selector) && projectcalico.org/namespace == '<ns>'`, plus its service-account selector.
pub fn network_policy_selector(selector: &str, sa_selector: &str, namespace: &str) -> Selector {
    let ns = eq(LABEL_NAMESPACE, namespace);
    let mut node = if selector.trim().is_empty() {
        ns
    } else {
        and(parse(selector).root().clone(), ns)
    };
    if !sa_selector.trim().is_empty() {
        node = and(node, prefixed(sa_selector, SERVICE_ACCOUNT_LABEL_PREFIX));
    }
    Selector::from_node(node)
}

/// The endpoints a GlobalNetworkPolicy applies to.
pub fn global_policy_selector(selector: &str, ns_selector: &str, sa_selector: &str) -> Selector {
    let mut node = if selector.trim().is_empty() {
        Node::All
    } else {
        parse(selector).root().clone()
    };
    if !ns_selector.trim().is_empty() {
        node = and(node, prefixed(ns_selector, NAMESPACE_LABEL_PREFIX));
        node = rewrite_all_and_global(&node, LABEL_NAMESPACE);
    }
    if !sa_selector.trim().is_empty() {
        node = and(node, prefixed(sa_selector, SERVICE_ACCOUNT_LABEL_PREFIX));
        node = rewrite_all_and_global(&node, LABEL_SERVICE_ACCOUNT);
    }
    Selector::from_node(node)
}

fn service_account_selector(sa: &ServiceAccountMatch) -> Option<Node> {
    let by_selector = (!sa.selector.trim().is_empty())
        .then(|| prefixed(&sa.selector, SERVICE_ACCOUNT_LABEL_PREFIX));
    if sa.names.is_empty() {
        return by_selector;
    }
    let mut names = sa.names.clone();
    names.sort();
    names.dedup();
    let by_name = Node::In(LABEL_SERVICE_ACCOUNT.to_string(), names);
    Some(match by_selector {
        Some(s) => and(s, by_name),
        None => by_name,
    })
}

/// The endpoints a rule's source or destination must belong to (`None` = any address),
/// for a rule in a policy of `policy_namespace` (`None` for global policies and profiles).
///
/// As in Calico, the namespace restriction also applies when only `notSelector` is used:
/// `notSelector: has(x)` in a NetworkPolicy matches endpoints of the policy's namespace that
/// lack `x`.
pub fn entity_rule_selector(er: &EntityRule, policy_namespace: Option<&str>) -> Option<Selector> {
    let ns_node = if !er.namespace_selector.trim().is_empty() {
        Some(rewrite_all_and_global(
            &prefixed(&er.namespace_selector, NAMESPACE_LABEL_PREFIX),
            LABEL_NAMESPACE,
        ))
    } else {
        policy_namespace.map(|ns| eq(LABEL_NAMESPACE, ns))
    };
    let mut parts = Vec::new();
    if let Some(sa) = &er.service_accounts
        && let Some(n) = service_account_selector(sa)
    {
        parts.push(n);
    }
    if !er.selector.trim().is_empty() {
        parts.push(parse(&er.selector).root().clone());
    }
    let endpoint = match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Node::And(parts)),
    };
    let uses_selectors = endpoint.is_some()
        || !er.not_selector.trim().is_empty()
        || !er.namespace_selector.trim().is_empty();
    let node = match (ns_node, endpoint) {
        (Some(ns), Some(ep)) if uses_selectors => and(ns, ep),
        (Some(ns), None) if uses_selectors => ns,
        (_, ep) => ep?,
    };
    Some(Selector::from_node(node))
}

/// The endpoints a rule's `notSelector` excludes (not namespace-scoped, as in Calico).
pub fn entity_rule_not_selector(er: &EntityRule) -> Option<Selector> {
    (!er.not_selector.trim().is_empty()).then(|| parse(&er.not_selector))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn er(sel: &str, ns_sel: &str, not_sel: &str) -> EntityRule {
        EntityRule {
            selector: sel.into(),
            namespace_selector: ns_sel.into(),
            not_selector: not_sel.into(),
            ..Default::default()
        }
    }

    #[test]
    fn network_policy_selects_only_its_namespace() {
        assert_eq!(
            network_policy_selector("app == 'a'", "", "x").canonical(),
            "(app == \"a\" && projectcalico.org/namespace == \"x\")"
        );
        assert_eq!(
            network_policy_selector("", "", "x").canonical(),
            "projectcalico.org/namespace == \"x\""
        );
    }

    #[test]
    fn global_policy_namespace_selector_uses_pcns_and_all_means_namespaced() {
        assert_eq!(
            global_policy_selector("app == 'a'", "env == 'prod'", "").canonical(),
            "(app == \"a\" && pcns.env == \"prod\")"
        );
        assert_eq!(
            global_policy_selector("", "all()", "").canonical(),
            "(has(projectcalico.org/namespace) && has(projectcalico.org/namespace))"
        );
        assert_eq!(global_policy_selector("", "", "").canonical(), "all()");
    }

    #[test]
    fn rule_selectors_are_scoped_like_calico() {
        // No selector fields: any address.
        assert!(entity_rule_selector(&er("", "", ""), Some("x")).is_none());
        // Selector in a NetworkPolicy: own namespace only.
        assert_eq!(
            entity_rule_selector(&er("pod == 'b'", "", ""), Some("x"))
                .unwrap()
                .canonical(),
            "(projectcalico.org/namespace == \"x\" && pod == \"b\")"
        );
        // Selector in a global policy: anywhere.
        assert_eq!(
            entity_rule_selector(&er("pod == 'b'", "", ""), None)
                .unwrap()
                .canonical(),
            "pod == \"b\""
        );
        // namespaceSelector all(): any namespaced endpoint.
        assert_eq!(
            entity_rule_selector(&er("", "all()", ""), Some("x"))
                .unwrap()
                .canonical(),
            "has(projectcalico.org/namespace)"
        );
        // global(): only non-namespaced endpoints and sets.
        assert_eq!(
            entity_rule_selector(&er("", "global()", ""), Some("x"))
                .unwrap()
                .canonical(),
            "!has(projectcalico.org/namespace)"
        );
        // notSelector alone still confines a NetworkPolicy rule to its namespace.
        assert_eq!(
            entity_rule_selector(&er("", "", "has(q)"), Some("x"))
                .unwrap()
                .canonical(),
            "projectcalico.org/namespace == \"x\""
        );
        assert_eq!(
            entity_rule_not_selector(&er("", "", "has(q)"))
                .unwrap()
                .canonical(),
            "has(q)"
        );
        // Service accounts by name and selector.
        let mut e = er("", "", "");
        e.service_accounts = Some(ServiceAccountMatch {
            names: vec!["b".into(), "a".into()],
            selector: "role == 'x'".into(),
        });
        assert_eq!(
            entity_rule_selector(&e, Some("x")).unwrap().canonical(),
            "(projectcalico.org/namespace == \"x\" && (pcsa.role == \"x\" && projectcalico.org/serviceaccount in {\"a\", \"b\"}))"
        );
    }
}
