//! Staged policies: StagedNetworkPolicy, StagedGlobalNetworkPolicy and
//! StagedKubernetesNetworkPolicy (`stagednetworkpolicy.go`, `stagedglobalnetworkpolicy.go`,
//! `stagedkubernetesnetworkpolicy.go`, `validator.go:validateStaged*`).
//!
//! A staged policy is a preview of a change to the enforced policy of the same name: its
//! `stagedAction` says whether it would set (create or replace) that policy or delete it.
//! Staged policies are stored and listed like any other kind but are never enforced, so
//! nothing in this module may feed them to the policy calculation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::is_false;
use super::k8s_policy::{
    K8sNetworkPolicySpec, LabelSelector, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
    check_k8s_network_policy_spec,
};
use super::policy::{
    GlobalNetworkPolicySpec, NetworkPolicySpec, PerformanceHint, PolicyType, Rule,
    check_global_network_policy_name, check_global_network_policy_spec, check_network_policy_name,
    check_network_policy_spec, default_policy, order_float,
};
use crate::meta::ObjectMeta;
use crate::resource::{
    GlobalNetworkPolicy, K8sNetworkPolicy, KindRules, NetworkPolicy, StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy, StagedNetworkPolicy,
};
use crate::validation::{Errors, Path};

/// What a staged policy would do to the enforced policy of the same name.
///
/// Calico's CRD defaults it to `Set`; `Learn` and `Ignore` are accepted (they are in
/// Calico's enum) and treated like `Set` by validation, as Calico's validator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum StagedAction {
    /// Create or replace the enforced policy with this spec.
    #[default]
    Set,
    /// Delete the enforced policy; the spec must then be empty (apart from `tier`).
    Delete,
    Learn,
    Ignore,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
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
pub struct StagedGlobalNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
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

/// A Kubernetes NetworkPolicy spec with a `stagedAction`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedKubernetesNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    /// Always written, as Kubernetes does (`podSelector: {}` selects every pod).
    #[serde(default)]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyEgressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<String>,
}

/// The metadata the enforced policy would get (Calico's `ConvertStaged*ToEnforced`: the
/// staged object's metadata without `resourceVersion` and `uid`).
fn enforced_meta(m: &ObjectMeta) -> ObjectMeta {
    let mut m = m.clone();
    m.resource_version.clear();
    m.uid.clear();
    m
}

impl StagedNetworkPolicy {
    /// The staged action and the NetworkPolicy it would set (Calico's
    /// `ConvertStagedPolicyToEnforced`).
    pub fn to_enforced(&self) -> (StagedAction, NetworkPolicy) {
        let s = &self.spec;
        let spec = NetworkPolicySpec {
            tier: s.tier.clone(),
            order: s.order,
            ingress: s.ingress.clone(),
            egress: s.egress.clone(),
            selector: s.selector.clone(),
            types: s.types.clone(),
            service_account_selector: s.service_account_selector.clone(),
            performance_hints: s.performance_hints.clone(),
        };
        (
            s.staged_action.unwrap_or_default(),
            NetworkPolicy::new(enforced_meta(&self.metadata), spec),
        )
    }
}

impl StagedGlobalNetworkPolicy {
    /// The staged action and the GlobalNetworkPolicy it would set (Calico's
    /// `ConvertStagedGlobalPolicyToEnforced`).
    pub fn to_enforced(&self) -> (StagedAction, GlobalNetworkPolicy) {
        let s = &self.spec;
        let spec = GlobalNetworkPolicySpec {
            tier: s.tier.clone(),
            order: s.order,
            ingress: s.ingress.clone(),
            egress: s.egress.clone(),
            selector: s.selector.clone(),
            types: s.types.clone(),
            do_not_track: s.do_not_track,
            pre_dnat: s.pre_dnat,
            apply_on_forward: s.apply_on_forward,
            service_account_selector: s.service_account_selector.clone(),
            namespace_selector: s.namespace_selector.clone(),
            performance_hints: s.performance_hints.clone(),
        };
        (
            s.staged_action.unwrap_or_default(),
            GlobalNetworkPolicy::new(enforced_meta(&self.metadata), spec),
        )
    }
}

impl StagedKubernetesNetworkPolicy {
    /// The staged action and the Kubernetes NetworkPolicy it would set (Calico's
    /// `ConvertStagedKubernetesPolicyToK8SEnforced`).
    pub fn to_enforced(&self) -> (StagedAction, K8sNetworkPolicy) {
        let s = &self.spec;
        let spec = K8sNetworkPolicySpec {
            pod_selector: s.pod_selector.clone(),
            ingress: s.ingress.clone(),
            egress: s.egress.clone(),
            policy_types: s.policy_types.clone(),
        };
        (
            s.staged_action.unwrap_or_default(),
            K8sNetworkPolicy::new(enforced_meta(&self.metadata), spec),
        )
    }
}

/// With `stagedAction: Delete` the spec names only the policy to delete: every field but
/// `stagedAction` and those in `keep` must be empty (Calico compares the spec with a zero
/// one). Each field that is set is reported at its own path.
fn check_empty_for_delete<S: Serialize>(errs: &mut Errors, spec: &S, keep: &[&str]) {
    let Ok(Value::Object(fields)) = serde_json::to_value(spec) else {
        return;
    };
    let p = Path::root("spec");
    let what = if keep.is_empty() {
        "the spec"
    } else {
        "every field except tier"
    };
    for (name, v) in &fields {
        if name == "stagedAction" || keep.contains(&name.as_str()) {
            continue;
        }
        // `podSelector: {}` is Kubernetes' zero value, always written.
        if matches!(v, Value::Object(m) if m.is_empty()) {
            continue;
        }
        errs.add(
            p.field(name),
            format!("must be empty when stagedAction is Delete ({what} must be unset); remove it, or use stagedAction Set"),
        );
    }
}

/// A staged Calico policy's defaults: those of the policy it would set, then (Calico's client
/// does so) a Delete's defaulted types cleared, since its spec must be empty.
fn default_staged_policy(
    meta: &mut ObjectMeta,
    action: &mut Option<StagedAction>,
    tier: &mut String,
    types: &mut Vec<PolicyType>,
    ingress: &[Rule],
    egress: &[Rule],
) {
    let action = *action.get_or_insert_default();
    default_policy(meta, tier, types, ingress, egress);
    if action == StagedAction::Delete {
        types.clear();
    }
}

impl KindRules for StagedNetworkPolicy {
    fn check_name(name: &str) -> Result<(), String> {
        check_network_policy_name(name)
    }

    fn defaults(&mut self) {
        let s = &mut self.spec;
        default_staged_policy(
            &mut self.metadata,
            &mut s.staged_action,
            &mut s.tier,
            &mut s.types,
            &s.ingress,
            &s.egress,
        );
    }

    fn check(&self, errs: &mut Errors) {
        let (action, enforced) = self.to_enforced();
        if action == StagedAction::Delete {
            check_empty_for_delete(errs, &self.spec, &["tier"]);
        } else {
            check_network_policy_spec(errs, &Path::root("spec"), &enforced.spec);
        }
    }
}

impl KindRules for StagedGlobalNetworkPolicy {
    fn check_name(name: &str) -> Result<(), String> {
        check_global_network_policy_name(name)
    }

    fn defaults(&mut self) {
        let s = &mut self.spec;
        default_staged_policy(
            &mut self.metadata,
            &mut s.staged_action,
            &mut s.tier,
            &mut s.types,
            &s.ingress,
            &s.egress,
        );
    }

    fn check(&self, errs: &mut Errors) {
        let (action, enforced) = self.to_enforced();
        if action == StagedAction::Delete {
            check_empty_for_delete(errs, &self.spec, &["tier"]);
        } else {
            check_global_network_policy_spec(errs, &Path::root("spec"), &enforced.spec);
        }
    }
}

impl KindRules for StagedKubernetesNetworkPolicy {
    fn defaults(&mut self) {
        self.spec.staged_action.get_or_insert_default();
    }

    fn check(&self, errs: &mut Errors) {
        let (action, enforced) = self.to_enforced();
        if action == StagedAction::Delete {
            check_empty_for_delete(errs, &self.spec, &[]);
        } else {
            check_k8s_network_policy_spec(errs, &Path::root("spec"), &enforced.spec);
        }
    }
}
