//! ClusterInformation and KubeControllersConfiguration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::numorstring::Duration;
use crate::resource::{ClusterInformation, KindRules, KubeControllersConfiguration};
use crate::validation::{Errors, Path, check_selector_no_global};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInformationSpec {
    #[serde(
        default,
        rename = "clusterGUID",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub calico_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_ready: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl ClusterInformationSpec {
    /// `datastoreReady` unset means ready; `false` is the migration/lock state.
    pub fn is_ready(&self) -> bool {
        self.datastore_ready.unwrap_or(true)
    }
}

fn only_default(errs: &mut Errors, kind: &str, name: &str) {
    if name != "default" {
        errs.add(
            "metadata.name",
            format!("{kind} is a singleton: its name must be \"default\""),
        );
    }
}

impl KindRules for ClusterInformation {
    fn check(&self, errs: &mut Errors) {
        only_default(errs, "ClusterInformation", &self.metadata.name);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcilerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEndpointTemplate {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generate_name: String,
    #[serde(
        default,
        rename = "interfaceCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub interface_cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_pattern: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoHostEndpointConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auto_create: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub create_default_host_endpoint: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<HostEndpointTemplate>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeControllerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sync_labels: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_endpoint: Option<AutoHostEndpointConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_grace_period: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerControllerConfig {
    #[serde(
        default,
        rename = "assignIPs",
        skip_serializing_if = "String::is_empty"
    )]
    pub assign_ips: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationControllerConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy_name_migrator: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllersConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_endpoint: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationControllerConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeControllersConfigurationSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_severity_screen: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_checks: String,
    #[serde(
        default,
        rename = "etcdV3CompactionPeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub etcd_v3_compaction_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<i64>,
    #[serde(default)]
    pub controllers: ControllersConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_profile_port: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeControllersConfigurationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_config: Option<KubeControllersConfigurationSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_vars: BTreeMap<String, String>,
}

fn enabled_disabled(errs: &mut Errors, path: Path, v: &str) {
    if !v.is_empty() && v != "Enabled" && v != "Disabled" {
        errs.add(path, format!("{v:?} must be Enabled or Disabled"));
    }
}

impl KindRules for KubeControllersConfiguration {
    fn check(&self, errs: &mut Errors) {
        only_default(errs, "KubeControllersConfiguration", &self.metadata.name);
        let s = &self.spec;
        let p = Path::root("spec");
        enabled_disabled(errs, p.field("healthChecks"), &s.health_checks);
        const SEVERITIES: [&str; 7] = [
            "None", "Debug", "Info", "Warning", "Error", "Fatal", "Panic",
        ];
        if !s.log_severity_screen.is_empty()
            && !SEVERITIES.contains(&s.log_severity_screen.as_str())
        {
            errs.add(
                p.field("logSeverityScreen"),
                format!(
                    "{:?} is not one of {}",
                    s.log_severity_screen,
                    SEVERITIES.join(", ")
                ),
            );
        }
        if let Some(port) = s.prometheus_metrics_port
            && !(0..=65535).contains(&port)
        {
            errs.add(
                p.field("prometheusMetricsPort"),
                format!("{port} is outside 0..65535"),
            );
        }
        let c = p.field("controllers");
        if let Some(n) = &s.controllers.node {
            enabled_disabled(errs, c.field("node").field("syncLabels"), &n.sync_labels);
            if let Some(h) = &n.host_endpoint {
                enabled_disabled(
                    errs,
                    c.field("node").field("hostEndpoint").field("autoCreate"),
                    &h.auto_create,
                );
                enabled_disabled(
                    errs,
                    c.field("node")
                        .field("hostEndpoint")
                        .field("createDefaultHostEndpoint"),
                    &h.create_default_host_endpoint,
                );
                for (i, t) in h.templates.iter().enumerate() {
                    let tp = c
                        .field("node")
                        .field("hostEndpoint")
                        .field("templates")
                        .index(i);
                    if !t.node_selector.is_empty() {
                        errs.check(
                            tp.field("nodeSelector"),
                            check_selector_no_global(&t.node_selector),
                        );
                    }
                    crate::validation::check_labels(errs, &tp.field("labels"), &t.labels);
                }
            }
        }
        if let Some(lb) = &s.controllers.load_balancer
            && !lb.assign_ips.is_empty()
            && lb.assign_ips != "AllServices"
            && lb.assign_ips != "RequestedServicesOnly"
        {
            errs.add(
                c.field("loadBalancer").field("assignIPs"),
                format!(
                    "{:?} must be AllServices or RequestedServicesOnly",
                    lb.assign_ips
                ),
            );
        }
        if let Some(m) = &s.controllers.migration {
            enabled_disabled(
                errs,
                c.field("migration").field("policyNameMigrator"),
                &m.policy_name_migrator,
            );
        }
    }
}
