//! FelixConfiguration (`felixconfig.go`; defaults from felix `config_params.go`).
//!
//! Every field Calico's v3 type has is carried, so a FelixConfiguration written by Calico reads
//! and writes back unchanged; the fields felixd acts on are also checked and have typed
//! accessors with Calico's defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::numorstring::{Duration, Port};
use crate::resource::{FelixConfiguration, KindRules};
use crate::validation::{Errors, Path, check_selector_no_global};

/// `protocol:port` (optionally restricted to a net) for failsafe rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtoPort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub net: String,
}

impl ProtoPort {
    pub fn new(protocol: &str, port: u16) -> ProtoPort {
        ProtoPort {
            protocol: protocol.to_string(),
            port,
            net: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthTimeoutOverride {
    pub name: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTableRange {
    pub min: i64,
    pub max: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FelixConfigurationSpec {
    #[serde(
        default,
        rename = "nodeSelector",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_selector: Option<String>,
    #[serde(
        default,
        rename = "useInternalDataplaneDriver",
        skip_serializing_if = "Option::is_none"
    )]
    pub use_internal_dataplane_driver: Option<bool>,
    #[serde(
        default,
        rename = "dataplaneDriver",
        skip_serializing_if = "Option::is_none"
    )]
    pub dataplane_driver: Option<String>,
    #[serde(
        default,
        rename = "dataplaneWatchdogTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub dataplane_watchdog_timeout: Option<Duration>,
    #[serde(
        default,
        rename = "ipv6Support",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_support: Option<bool>,
    #[serde(
        default,
        rename = "routeRefreshInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_refresh_interval: Option<Duration>,
    #[serde(
        default,
        rename = "interfaceRefreshInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_refresh_interval: Option<Duration>,
    #[serde(
        default,
        rename = "iptablesRefreshInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_refresh_interval: Option<Duration>,
    #[serde(
        default,
        rename = "iptablesPostWriteCheckInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_post_write_check_interval: Option<Duration>,
    #[serde(
        default,
        rename = "iptablesLockProbeInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_lock_probe_interval: Option<Duration>,
    #[serde(
        default,
        rename = "featureDetectOverride",
        skip_serializing_if = "Option::is_none"
    )]
    pub feature_detect_override: Option<String>,
    #[serde(
        default,
        rename = "featureGates",
        skip_serializing_if = "Option::is_none"
    )]
    pub feature_gates: Option<String>,
    #[serde(
        default,
        rename = "ipsetsRefreshInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipsets_refresh_interval: Option<Duration>,
    #[serde(
        default,
        rename = "maxIpsetSize",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_ipset_size: Option<i64>,
    #[serde(
        default,
        rename = "iptablesBackend",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_backend: Option<String>,
    #[serde(
        default,
        rename = "xdpRefreshInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub xdp_refresh_interval: Option<Duration>,
    #[serde(
        default,
        rename = "netlinkTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub netlink_timeout: Option<Duration>,
    #[serde(
        default,
        rename = "metadataAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_addr: Option<String>,
    #[serde(
        default,
        rename = "metadataPort",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_port: Option<i64>,
    #[serde(
        default,
        rename = "openstackRegion",
        skip_serializing_if = "Option::is_none"
    )]
    pub openstack_region: Option<String>,
    #[serde(
        default,
        rename = "interfacePrefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_prefix: Option<String>,
    #[serde(
        default,
        rename = "interfaceExclude",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_exclude: Option<String>,
    #[serde(
        default,
        rename = "chainInsertMode",
        skip_serializing_if = "Option::is_none"
    )]
    pub chain_insert_mode: Option<String>,
    #[serde(
        default,
        rename = "defaultEndpointToHostAction",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_endpoint_to_host_action: Option<String>,
    #[serde(
        default,
        rename = "iptablesFilterAllowAction",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_filter_allow_action: Option<String>,
    #[serde(
        default,
        rename = "iptablesMangleAllowAction",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_mangle_allow_action: Option<String>,
    #[serde(
        default,
        rename = "iptablesFilterDenyAction",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_filter_deny_action: Option<String>,
    #[serde(default, rename = "logPrefix", skip_serializing_if = "Option::is_none")]
    pub log_prefix: Option<String>,
    #[serde(
        default,
        rename = "logActionRateLimit",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_action_rate_limit: Option<String>,
    #[serde(
        default,
        rename = "logActionRateLimitBurst",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_action_rate_limit_burst: Option<i64>,
    #[serde(
        default,
        rename = "logFilePath",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_file_path: Option<String>,
    #[serde(
        default,
        rename = "logSeverityFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_severity_file: Option<String>,
    #[serde(
        default,
        rename = "logSeverityScreen",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_severity_screen: Option<String>,
    #[serde(
        default,
        rename = "logSeveritySys",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_severity_sys: Option<String>,
    #[serde(
        default,
        rename = "logDebugFilenameRegex",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_debug_filename_regex: Option<String>,
    #[serde(
        default,
        rename = "ipipEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipip_enabled: Option<bool>,
    #[serde(default, rename = "ipipMTU", skip_serializing_if = "Option::is_none")]
    pub ipip_mtu: Option<i64>,
    #[serde(
        default,
        rename = "vxlanEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_enabled: Option<bool>,
    #[serde(default, rename = "vxlanMTU", skip_serializing_if = "Option::is_none")]
    pub vxlan_mtu: Option<i64>,
    #[serde(
        default,
        rename = "vxlanMTUV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_mtu_v6: Option<i64>,
    #[serde(default, rename = "vxlanPort", skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<i64>,
    #[serde(default, rename = "vxlanVNI", skip_serializing_if = "Option::is_none")]
    pub vxlan_vni: Option<i64>,
    #[serde(
        default,
        rename = "allowVXLANPacketsFromWorkloads",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_vxlan_packets_from_workloads: Option<bool>,
    #[serde(
        default,
        rename = "allowIPIPPacketsFromWorkloads",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_ipip_packets_from_workloads: Option<bool>,
    #[serde(
        default,
        rename = "reportingInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub reporting_interval: Option<Duration>,
    #[serde(
        default,
        rename = "reportingTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub reporting_ttl: Option<Duration>,
    #[serde(
        default,
        rename = "endpointReportingEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_reporting_enabled: Option<bool>,
    #[serde(
        default,
        rename = "endpointReportingDelay",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_reporting_delay: Option<Duration>,
    #[serde(
        default,
        rename = "endpointStatusPathPrefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_status_path_prefix: Option<String>,
    #[serde(
        default,
        rename = "iptablesMarkMask",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_mark_mask: Option<i64>,
    #[serde(
        default,
        rename = "disableConntrackInvalidCheck",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_conntrack_invalid_check: Option<bool>,
    #[serde(
        default,
        rename = "healthEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub health_enabled: Option<bool>,
    #[serde(
        default,
        rename = "healthHost",
        skip_serializing_if = "Option::is_none"
    )]
    pub health_host: Option<String>,
    #[serde(
        default,
        rename = "healthPort",
        skip_serializing_if = "Option::is_none"
    )]
    pub health_port: Option<i64>,
    #[serde(
        default,
        rename = "healthTimeoutOverrides",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub health_timeout_overrides: Vec<HealthTimeoutOverride>,
    #[serde(
        default,
        rename = "prometheusMetricsEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_metrics_enabled: Option<bool>,
    #[serde(
        default,
        rename = "prometheusMetricsHost",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_metrics_host: Option<String>,
    #[serde(
        default,
        rename = "prometheusMetricsPort",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_metrics_port: Option<i64>,
    #[serde(
        default,
        rename = "prometheusGoMetricsEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_go_metrics_enabled: Option<bool>,
    #[serde(
        default,
        rename = "prometheusProcessMetricsEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_process_metrics_enabled: Option<bool>,
    #[serde(
        default,
        rename = "prometheusWireGuardMetricsEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_wire_guard_metrics_enabled: Option<bool>,
    #[serde(
        default,
        rename = "prometheusMetricsCAFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_metrics_ca_file: Option<String>,
    #[serde(
        default,
        rename = "prometheusMetricsCertFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_metrics_cert_file: Option<String>,
    #[serde(
        default,
        rename = "prometheusMetricsKeyFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_metrics_key_file: Option<String>,
    #[serde(
        default,
        rename = "prometheusMetricsClientAuth",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_metrics_client_auth: Option<String>,
    #[serde(
        default,
        rename = "failsafeInboundHostPorts",
        skip_serializing_if = "Option::is_none"
    )]
    pub failsafe_inbound_host_ports: Option<Vec<ProtoPort>>,
    #[serde(
        default,
        rename = "failsafeOutboundHostPorts",
        skip_serializing_if = "Option::is_none"
    )]
    pub failsafe_outbound_host_ports: Option<Vec<ProtoPort>>,
    #[serde(
        default,
        rename = "kubeNodePortRanges",
        skip_serializing_if = "Option::is_none"
    )]
    pub kube_node_port_ranges: Option<Vec<Port>>,
    #[serde(
        default,
        rename = "policySyncPathPrefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_sync_path_prefix: Option<String>,
    #[serde(
        default,
        rename = "usageReportingEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub usage_reporting_enabled: Option<bool>,
    #[serde(
        default,
        rename = "usageReportingInitialDelay",
        skip_serializing_if = "Option::is_none"
    )]
    pub usage_reporting_initial_delay: Option<Duration>,
    #[serde(
        default,
        rename = "usageReportingInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub usage_reporting_interval: Option<Duration>,
    #[serde(
        default,
        rename = "natPortRange",
        skip_serializing_if = "Option::is_none"
    )]
    pub nat_port_range: Option<Port>,
    #[serde(
        default,
        rename = "natOutgoingAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub nat_outgoing_address: Option<String>,
    #[serde(
        default,
        rename = "natOutgoingExclusions",
        skip_serializing_if = "Option::is_none"
    )]
    pub nat_outgoing_exclusions: Option<String>,
    #[serde(
        default,
        rename = "deviceRouteSourceAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_route_source_address: Option<String>,
    #[serde(
        default,
        rename = "deviceRouteSourceAddressIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_route_source_address_ipv6: Option<String>,
    #[serde(
        default,
        rename = "deviceRouteProtocol",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_route_protocol: Option<i64>,
    #[serde(
        default,
        rename = "removeExternalRoutes",
        skip_serializing_if = "Option::is_none"
    )]
    pub remove_external_routes: Option<bool>,
    #[serde(
        default,
        rename = "programClusterRoutes",
        skip_serializing_if = "Option::is_none"
    )]
    pub program_cluster_routes: Option<String>,
    #[serde(
        default,
        rename = "ipForwarding",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_forwarding: Option<String>,
    #[serde(
        default,
        rename = "externalNodesList",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_nodes_list: Option<Vec<String>>,
    #[serde(
        default,
        rename = "debugMemoryProfilePath",
        skip_serializing_if = "Option::is_none"
    )]
    pub debug_memory_profile_path: Option<String>,
    #[serde(
        default,
        rename = "debugDisableLogDropping",
        skip_serializing_if = "Option::is_none"
    )]
    pub debug_disable_log_dropping: Option<bool>,
    #[serde(
        default,
        rename = "debugSimulateCalcGraphHangAfter",
        skip_serializing_if = "Option::is_none"
    )]
    pub debug_simulate_calc_graph_hang_after: Option<Duration>,
    #[serde(
        default,
        rename = "debugSimulateDataplaneHangAfter",
        skip_serializing_if = "Option::is_none"
    )]
    pub debug_simulate_dataplane_hang_after: Option<Duration>,
    #[serde(
        default,
        rename = "debugSimulateDataplaneApplyDelay",
        skip_serializing_if = "Option::is_none"
    )]
    pub debug_simulate_dataplane_apply_delay: Option<Duration>,
    #[serde(default, rename = "debugHost", skip_serializing_if = "Option::is_none")]
    pub debug_host: Option<String>,
    #[serde(default, rename = "debugPort", skip_serializing_if = "Option::is_none")]
    pub debug_port: Option<i64>,
    #[serde(
        default,
        rename = "iptablesNATOutgoingInterfaceFilter",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_nat_outgoing_interface_filter: Option<String>,
    #[serde(
        default,
        rename = "sidecarAccelerationEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub sidecar_acceleration_enabled: Option<bool>,
    #[serde(
        default,
        rename = "xdpEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub xdp_enabled: Option<bool>,
    #[serde(
        default,
        rename = "genericXDPEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub generic_xdp_enabled: Option<bool>,
    #[serde(
        default,
        rename = "nftablesMode",
        skip_serializing_if = "Option::is_none"
    )]
    pub nftables_mode: Option<String>,
    #[serde(
        default,
        rename = "nftablesFlowTableOffload",
        skip_serializing_if = "Option::is_none"
    )]
    pub nftables_flow_table_offload: Option<String>,
    #[serde(
        default,
        rename = "nftablesFlowTableDataIfacePattern",
        skip_serializing_if = "Option::is_none"
    )]
    pub nftables_flow_table_data_iface_pattern: Option<String>,
    #[serde(
        default,
        rename = "nftablesRefreshInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub nftables_refresh_interval: Option<Duration>,
    #[serde(
        default,
        rename = "nftablesFilterAllowAction",
        skip_serializing_if = "Option::is_none"
    )]
    pub nftables_filter_allow_action: Option<String>,
    #[serde(
        default,
        rename = "nftablesMangleAllowAction",
        skip_serializing_if = "Option::is_none"
    )]
    pub nftables_mangle_allow_action: Option<String>,
    #[serde(
        default,
        rename = "nftablesFilterDenyAction",
        skip_serializing_if = "Option::is_none"
    )]
    pub nftables_filter_deny_action: Option<String>,
    #[serde(
        default,
        rename = "nftablesMarkMask",
        skip_serializing_if = "Option::is_none"
    )]
    pub nftables_mark_mask: Option<i64>,
    #[serde(
        default,
        rename = "bpfEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_enabled: Option<bool>,
    #[serde(
        default,
        rename = "bpfOverlayHostSourceIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_overlay_host_source_ip: Option<String>,
    #[serde(
        default,
        rename = "bpfDisableUnprivileged",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_disable_unprivileged: Option<bool>,
    #[serde(
        default,
        rename = "bpfJITHardening",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_jit_hardening: Option<String>,
    #[serde(
        default,
        rename = "bpfLogLevel",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_log_level: Option<String>,
    #[serde(
        default,
        rename = "bpfConntrackLogLevel",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_conntrack_log_level: Option<String>,
    #[serde(
        default,
        rename = "bpfConntrackMode",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_conntrack_mode: Option<String>,
    #[serde(
        default,
        rename = "bpfConntrackTimeouts",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_conntrack_timeouts: Option<serde_json::Value>,
    #[serde(
        default,
        rename = "bpfIPFragTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_ip_frag_timeout: Option<Duration>,
    #[serde(
        default,
        rename = "bpfLogFilters",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_log_filters: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        rename = "bpfCTLBLogFilter",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_ctlb_log_filter: Option<String>,
    #[serde(
        default,
        rename = "bpfDataIfacePattern",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_data_iface_pattern: Option<String>,
    #[serde(
        default,
        rename = "bpfL3IfacePattern",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_l3_iface_pattern: Option<String>,
    #[serde(
        default,
        rename = "bpfConnectTimeLoadBalancingEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_connect_time_load_balancing_enabled: Option<bool>,
    #[serde(
        default,
        rename = "bpfConnectTimeLoadBalancing",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_connect_time_load_balancing: Option<String>,
    #[serde(
        default,
        rename = "bpfHostNetworkedNATWithoutCTLB",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_host_networked_nat_without_ctlb: Option<String>,
    #[serde(
        default,
        rename = "bpfExternalServiceMode",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_external_service_mode: Option<String>,
    #[serde(
        default,
        rename = "bpfDSROptoutCIDRs",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_dsr_optout_cid_rs: Option<Vec<String>>,
    #[serde(
        default,
        rename = "bpfExtToServiceConnmark",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_ext_to_service_connmark: Option<i64>,
    #[serde(
        default,
        rename = "bpfKubeProxyIptablesCleanupEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_kube_proxy_iptables_cleanup_enabled: Option<bool>,
    #[serde(
        default,
        rename = "bpfKubeProxyMinSyncPeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_kube_proxy_min_sync_period: Option<Duration>,
    #[serde(
        default,
        rename = "bpfKubeProxyHealthzPort",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_kube_proxy_healthz_port: Option<i64>,
    #[serde(
        default,
        rename = "bpfPSNATPorts",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_psnat_ports: Option<Port>,
    #[serde(
        default,
        rename = "bpfMapSizeNATFrontend",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_nat_frontend: Option<i64>,
    #[serde(
        default,
        rename = "bpfMapSizeNATBackend",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_nat_backend: Option<i64>,
    #[serde(
        default,
        rename = "bpfMapSizeNATAffinity",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_nat_affinity: Option<i64>,
    #[serde(
        default,
        rename = "bpfMapSizeRoute",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_route: Option<i64>,
    #[serde(
        default,
        rename = "bpfMapSizeConntrack",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_conntrack: Option<i64>,
    #[serde(
        default,
        rename = "bpfMapSizePerCpuConntrack",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_per_cpu_conntrack: Option<i64>,
    #[serde(
        default,
        rename = "bpfMapSizeConntrackScaling",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_conntrack_scaling: Option<String>,
    #[serde(
        default,
        rename = "bpfMapSizeConntrackCleanupQueue",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_conntrack_cleanup_queue: Option<i64>,
    #[serde(
        default,
        rename = "bpfMapSizeIPSets",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_ip_sets: Option<i64>,
    #[serde(
        default,
        rename = "bpfMapSizeIfState",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_if_state: Option<i64>,
    #[serde(
        default,
        rename = "bpfHostConntrackBypass",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_host_conntrack_bypass: Option<bool>,
    #[serde(
        default,
        rename = "bpfIPFragmentReassemblyEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_ip_fragment_reassembly_enabled: Option<bool>,
    #[serde(
        default,
        rename = "bpfEnforceRPF",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_enforce_rpf: Option<String>,
    #[serde(
        default,
        rename = "bpfPolicyDebugEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_policy_debug_enabled: Option<bool>,
    #[serde(
        default,
        rename = "bpfForceTrackPacketsFromIfaces",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_force_track_packets_from_ifaces: Option<Vec<String>>,
    #[serde(
        default,
        rename = "bpfDisableGROForIfaces",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_disable_gro_for_ifaces: Option<String>,
    #[serde(
        default,
        rename = "bpfExcludeCIDRsFromNAT",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_exclude_cid_rs_from_nat: Option<Vec<String>>,
    #[serde(
        default,
        rename = "bpfExportBufferSizeMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_export_buffer_size_mb: Option<i64>,
    #[serde(
        default,
        rename = "istioAmbientMode",
        skip_serializing_if = "Option::is_none"
    )]
    pub istio_ambient_mode: Option<String>,
    #[serde(
        default,
        rename = "istioDSCPMark",
        skip_serializing_if = "Option::is_none"
    )]
    pub istio_dscp_mark: Option<serde_json::Value>,
    #[serde(
        default,
        rename = "cgroupV2Path",
        skip_serializing_if = "Option::is_none"
    )]
    pub cgroup_v2_path: Option<String>,
    #[serde(
        default,
        rename = "flowLogsPolicyEvaluationMode",
        skip_serializing_if = "Option::is_none"
    )]
    pub flow_logs_policy_evaluation_mode: Option<String>,
    #[serde(
        default,
        rename = "bpfRedirectToPeer",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_redirect_to_peer: Option<String>,
    #[serde(
        default,
        rename = "bpfAttachType",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_attach_type: Option<String>,
    #[serde(
        default,
        rename = "flowLogsFlushInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub flow_logs_flush_interval: Option<Duration>,
    #[serde(
        default,
        rename = "flowLogsCollectorDebugTrace",
        skip_serializing_if = "Option::is_none"
    )]
    pub flow_logs_collector_debug_trace: Option<bool>,
    #[serde(
        default,
        rename = "flowLogsGoldmaneServer",
        skip_serializing_if = "Option::is_none"
    )]
    pub flow_logs_goldmane_server: Option<String>,
    #[serde(
        default,
        rename = "flowLogsLocalReporter",
        skip_serializing_if = "Option::is_none"
    )]
    pub flow_logs_local_reporter: Option<String>,
    #[serde(
        default,
        rename = "bpfProfiling",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_profiling: Option<String>,
    #[serde(
        default,
        rename = "routeSource",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_source: Option<String>,
    #[serde(
        default,
        rename = "routeTableRanges",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_table_ranges: Option<Vec<RouteTableRange>>,
    #[serde(
        default,
        rename = "routeTableRange",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_table_range: Option<RouteTableRange>,
    #[serde(
        default,
        rename = "routeSyncDisabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_sync_disabled: Option<bool>,
    #[serde(
        default,
        rename = "ipv4NormalRoutePriority",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_normal_route_priority: Option<i64>,
    #[serde(
        default,
        rename = "ipv4ElevatedRoutePriority",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_elevated_route_priority: Option<i64>,
    #[serde(
        default,
        rename = "ipv6NormalRoutePriority",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_normal_route_priority: Option<i64>,
    #[serde(
        default,
        rename = "ipv6ElevatedRoutePriority",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_elevated_route_priority: Option<i64>,
    #[serde(
        default,
        rename = "liveMigrationRouteConvergenceTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub live_migration_route_convergence_time: Option<Duration>,
    #[serde(
        default,
        rename = "wireguardEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_enabled: Option<bool>,
    #[serde(
        default,
        rename = "wireguardEnabledV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_enabled_v6: Option<bool>,
    #[serde(
        default,
        rename = "wireguardThreadingEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_threading_enabled: Option<bool>,
    #[serde(
        default,
        rename = "wireguardListeningPort",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_listening_port: Option<i64>,
    #[serde(
        default,
        rename = "wireguardListeningPortV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_listening_port_v6: Option<i64>,
    #[serde(
        default,
        rename = "wireguardRoutingRulePriority",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_routing_rule_priority: Option<i64>,
    #[serde(
        default,
        rename = "wireguardInterfaceName",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_interface_name: Option<String>,
    #[serde(
        default,
        rename = "wireguardInterfaceNameV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_interface_name_v6: Option<String>,
    #[serde(
        default,
        rename = "wireguardMTU",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_mtu: Option<i64>,
    #[serde(
        default,
        rename = "wireguardMTUV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_mtuv6: Option<i64>,
    #[serde(
        default,
        rename = "wireguardHostEncryptionEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_host_encryption_enabled: Option<bool>,
    #[serde(
        default,
        rename = "wireguardKeepAlive",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_keep_alive: Option<Duration>,
    #[serde(
        default,
        rename = "awsSrcDstCheck",
        skip_serializing_if = "Option::is_none"
    )]
    pub aws_src_dst_check: Option<String>,
    #[serde(
        default,
        rename = "serviceLoopPrevention",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_loop_prevention: Option<String>,
    #[serde(
        default,
        rename = "workloadSourceSpoofing",
        skip_serializing_if = "Option::is_none"
    )]
    pub workload_source_spoofing: Option<String>,
    #[serde(
        default,
        rename = "mtuIfacePattern",
        skip_serializing_if = "Option::is_none"
    )]
    pub mtu_iface_pattern: Option<String>,
    #[serde(
        default,
        rename = "floatingIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub floating_ips: Option<String>,
    #[serde(
        default,
        rename = "localSubnetL2Reachability",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_subnet_l2_reachability: Option<String>,
    #[serde(
        default,
        rename = "localSubnetL2ReachabilityRefreshInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_subnet_l2_reachability_refresh_interval: Option<Duration>,
    #[serde(
        default,
        rename = "windowsManageFirewallRules",
        skip_serializing_if = "Option::is_none"
    )]
    pub windows_manage_firewall_rules: Option<String>,
    #[serde(
        default,
        rename = "goGCThreshold",
        skip_serializing_if = "Option::is_none"
    )]
    pub go_gc_threshold: Option<i64>,
    #[serde(
        default,
        rename = "goMemoryLimitMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub go_memory_limit_mb: Option<i64>,
    #[serde(
        default,
        rename = "goMaxProcs",
        skip_serializing_if = "Option::is_none"
    )]
    pub go_max_procs: Option<i64>,
    #[serde(
        default,
        rename = "requireMTUFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub require_mtu_file: Option<bool>,
    #[serde(
        default,
        rename = "bpfMaglevMaxEndpointsPerService",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_maglev_max_endpoints_per_service: Option<i64>,
    #[serde(
        default,
        rename = "bpfMaglevMaxServices",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_maglev_max_services: Option<i64>,
}

/// Calico's default inbound failsafe ports (always open to host endpoints).
pub fn default_failsafe_inbound() -> Vec<ProtoPort> {
    [
        ("tcp", 22),
        ("udp", 68),
        ("tcp", 179),
        ("tcp", 2379),
        ("tcp", 2380),
        ("tcp", 5473),
        ("tcp", 6443),
        ("tcp", 6666),
        ("tcp", 6667),
    ]
    .into_iter()
    .map(|(p, n)| ProtoPort::new(p, n))
    .collect()
}

/// Calico's default outbound failsafe ports.
pub fn default_failsafe_outbound() -> Vec<ProtoPort> {
    [
        ("udp", 53),
        ("udp", 67),
        ("tcp", 179),
        ("tcp", 2379),
        ("tcp", 2380),
        ("tcp", 5473),
        ("tcp", 6443),
        ("tcp", 6666),
        ("tcp", 6667),
    ]
    .into_iter()
    .map(|(p, n)| ProtoPort::new(p, n))
    .collect()
}

/// Fields whose value must be one of a fixed set: (field, values, whether case is ignored).
/// Calico checks the older ones with case-insensitive patterns and the newer ones as CRD enums.
const ENUM_FIELDS: &[(&str, &[&str], bool)] = &[
    ("iptablesBackend", &["Legacy", "NFT", "Auto"], true),
    ("nftablesMode", &["Disabled", "Enabled", "Auto"], false),
    ("chainInsertMode", &["Insert", "Append"], true),
    (
        "defaultEndpointToHostAction",
        &["Drop", "Return", "Accept"],
        true,
    ),
    ("iptablesFilterAllowAction", &["Accept", "Return"], true),
    ("iptablesMangleAllowAction", &["Accept", "Return"], true),
    ("iptablesFilterDenyAction", &["Drop", "Reject"], true),
    ("nftablesFilterAllowAction", &["Accept", "Return"], true),
    ("nftablesMangleAllowAction", &["Accept", "Return"], true),
    ("nftablesFilterDenyAction", &["Drop", "Reject"], true),
    (
        "logSeverityScreen",
        &["Trace", "Debug", "Info", "Warning", "Error", "Fatal"],
        true,
    ),
    (
        "logSeverityFile",
        &["Trace", "Debug", "Info", "Warning", "Error", "Fatal"],
        true,
    ),
    (
        "logSeveritySys",
        &["Trace", "Debug", "Info", "Warning", "Error", "Fatal"],
        true,
    ),
    ("routeSource", &["CalicoIPAM", "WorkloadIPs"], true),
    ("ipForwarding", &["Enabled", "Disabled"], false),
    (
        "serviceLoopPrevention",
        &["Drop", "Reject", "Disabled"],
        false,
    ),
    ("floatingIPs", &["Enabled", "Disabled"], false),
    ("workloadSourceSpoofing", &["Disabled", "Any"], false),
    (
        "natOutgoingExclusions",
        &["IPPoolsOnly", "IPPoolsAndHostIPs"],
        false,
    ),
    ("bpfLogLevel", &["Off", "Info", "Debug"], true),
    ("nftablesFlowTableOffload", &["All", "Disabled"], false),
    ("awsSrcDstCheck", &["DoNothing", "Enable", "Disable"], false),
    ("bpfAttachType", &["TC", "TCX", "Netkit"], false),
    (
        "bpfOverlayHostSourceIP",
        &["TunnelAddress", "HostAddress"],
        false,
    ),
    ("bpfJITHardening", &["Auto", "Strict"], false),
    (
        "bpfConntrackMode",
        &["Auto", "Userspace", "BPFProgram"],
        false,
    ),
    (
        "bpfConnectTimeLoadBalancing",
        &["TCP", "Enabled", "Disabled"],
        false,
    ),
    (
        "bpfHostNetworkedNATWithoutCTLB",
        &["Enabled", "Disabled"],
        false,
    ),
    ("istioAmbientMode", &["Enabled", "Disabled"], false),
    (
        "flowLogsPolicyEvaluationMode",
        &["None", "Continuous"],
        false,
    ),
    (
        "localSubnetL2Reachability",
        &["Disabled", "PodsAndLoadBalancers"],
        false,
    ),
    (
        "windowsManageFirewallRules",
        &["Enabled", "Disabled"],
        false,
    ),
    (
        "prometheusMetricsClientAuth",
        &[
            "RequireAndVerifyClientCert",
            "RequireAnyClientCert",
            "VerifyClientCertIfGiven",
            "NoClientCert",
        ],
        false,
    ),
];

impl FelixConfigurationSpec {
    fn enum_value(&self, field: &str) -> Option<&str> {
        let v = match field {
            "iptablesBackend" => &self.iptables_backend,
            "nftablesMode" => &self.nftables_mode,
            "chainInsertMode" => &self.chain_insert_mode,
            "defaultEndpointToHostAction" => &self.default_endpoint_to_host_action,
            "iptablesFilterAllowAction" => &self.iptables_filter_allow_action,
            "iptablesMangleAllowAction" => &self.iptables_mangle_allow_action,
            "iptablesFilterDenyAction" => &self.iptables_filter_deny_action,
            "nftablesFilterAllowAction" => &self.nftables_filter_allow_action,
            "nftablesMangleAllowAction" => &self.nftables_mangle_allow_action,
            "nftablesFilterDenyAction" => &self.nftables_filter_deny_action,
            "logSeverityScreen" => &self.log_severity_screen,
            "logSeverityFile" => &self.log_severity_file,
            "logSeveritySys" => &self.log_severity_sys,
            "routeSource" => &self.route_source,
            "ipForwarding" => &self.ip_forwarding,
            "serviceLoopPrevention" => &self.service_loop_prevention,
            "floatingIPs" => &self.floating_ips,
            "workloadSourceSpoofing" => &self.workload_source_spoofing,
            "natOutgoingExclusions" => &self.nat_outgoing_exclusions,
            "bpfLogLevel" => &self.bpf_log_level,
            "nftablesFlowTableOffload" => &self.nftables_flow_table_offload,
            "awsSrcDstCheck" => &self.aws_src_dst_check,
            "bpfAttachType" => &self.bpf_attach_type,
            "bpfOverlayHostSourceIP" => &self.bpf_overlay_host_source_ip,
            "bpfJITHardening" => &self.bpf_jit_hardening,
            "bpfConntrackMode" => &self.bpf_conntrack_mode,
            "bpfConnectTimeLoadBalancing" => &self.bpf_connect_time_load_balancing,
            "bpfHostNetworkedNATWithoutCTLB" => &self.bpf_host_networked_nat_without_ctlb,
            "istioAmbientMode" => &self.istio_ambient_mode,
            "flowLogsPolicyEvaluationMode" => &self.flow_logs_policy_evaluation_mode,
            "localSubnetL2Reachability" => &self.local_subnet_l2_reachability,
            "windowsManageFirewallRules" => &self.windows_manage_firewall_rules,
            "prometheusMetricsClientAuth" => &self.prometheus_metrics_client_auth,
            _ => &None,
        };
        v.as_deref().filter(|s| !s.is_empty())
    }

    /// `vxlanVNI`, default 4096.
    pub fn vxlan_vni_or_default(&self) -> u32 {
        self.vxlan_vni
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(4096)
    }

    /// `vxlanPort`, default 4789.
    pub fn vxlan_port_or_default(&self) -> u16 {
        self.vxlan_port
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(4789)
    }

    /// `interfacePrefix` (first entry used for veth names), default `cali`.
    pub fn interface_prefixes(&self) -> Vec<String> {
        match self.interface_prefix.as_deref() {
            Some(s) if !s.is_empty() => s.split(',').map(|p| p.trim().to_string()).collect(),
            _ => vec!["cali".to_string()],
        }
    }

    /// `healthPort`, default 9099.
    pub fn health_port_or_default(&self) -> u16 {
        self.health_port
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(9099)
    }

    /// `prometheusMetricsPort`, default 9091.
    pub fn prometheus_port_or_default(&self) -> u16 {
        self.prometheus_metrics_port
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(9091)
    }

    pub fn failsafe_inbound(&self) -> Vec<ProtoPort> {
        self.failsafe_inbound_host_ports
            .clone()
            .unwrap_or_else(default_failsafe_inbound)
    }

    pub fn failsafe_outbound(&self) -> Vec<ProtoPort> {
        self.failsafe_outbound_host_ports
            .clone()
            .unwrap_or_else(default_failsafe_outbound)
    }
}

impl KindRules for FelixConfiguration {
    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        for (field, allowed, any_case) in ENUM_FIELDS {
            if let Some(v) = s.enum_value(field)
                && !allowed
                    .iter()
                    .any(|a| *a == v || (*any_case && a.eq_ignore_ascii_case(v)))
            {
                errs.add(
                    p.field(field),
                    format!("{v:?} is not one of {}", allowed.join(", ")),
                );
            }
        }
        if let Some(sel) = &s.node_selector
            && !sel.is_empty()
        {
            errs.check(p.field("nodeSelector"), check_selector_no_global(sel));
            if self.metadata.name == "default" || self.metadata.name.starts_with("node.") {
                errs.add(
                    p.field("nodeSelector"),
                    "only selector-scoped configurations (not \"default\" or \"node.*\") may set nodeSelector",
                );
            }
        }
        for (field, ports) in [
            ("failsafeInboundHostPorts", &s.failsafe_inbound_host_ports),
            ("failsafeOutboundHostPorts", &s.failsafe_outbound_host_ports),
        ] {
            for (i, pp) in ports.iter().flatten().enumerate() {
                let proto = pp.protocol.to_ascii_uppercase();
                if !pp.protocol.is_empty() && !["TCP", "UDP", "SCTP"].contains(&proto.as_str()) {
                    errs.add(
                        p.field(field).index(i).field("protocol"),
                        format!("{:?} must be TCP, UDP or SCTP", pp.protocol),
                    );
                }
                if !pp.net.is_empty()
                    && let Err(e) = crate::validation::parse_cidr_or_ip(&pp.net)
                {
                    errs.add(p.field(field).index(i).field("net"), e);
                }
            }
        }
        for (field, v, lo, hi) in [
            ("vxlanVNI", s.vxlan_vni, 1, 16_777_215),
            ("vxlanPort", s.vxlan_port, 1, 65_535),
            ("healthPort", s.health_port, 0, 65_535),
            (
                "prometheusMetricsPort",
                s.prometheus_metrics_port,
                0,
                65_535,
            ),
            ("ipipMTU", s.ipip_mtu, 0, 65_535),
            ("vxlanMTU", s.vxlan_mtu, 0, 65_535),
            ("vxlanMTUV6", s.vxlan_mtu_v6, 0, 65_535),
            ("deviceRouteProtocol", s.device_route_protocol, 0, 255),
        ] {
            if let Some(v) = v
                && !(lo..=hi).contains(&v)
            {
                errs.add(p.field(field), format!("{v} is outside {lo}..{hi}"));
            }
        }
        for (field, d) in [
            ("iptablesRefreshInterval", &s.iptables_refresh_interval),
            ("routeRefreshInterval", &s.route_refresh_interval),
            ("interfaceRefreshInterval", &s.interface_refresh_interval),
            ("ipsetsRefreshInterval", &s.ipsets_refresh_interval),
            ("reportingInterval", &s.reporting_interval),
            ("reportingTTL", &s.reporting_ttl),
        ] {
            if d.as_ref().is_some_and(Duration::is_negative) {
                errs.add(p.field(field), "must not be negative");
            }
        }
        for (i, h) in s.health_timeout_overrides.iter().enumerate() {
            let hp = p.field("healthTimeoutOverrides").index(i);
            if h.name.is_empty()
                || !h
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b' ' | b'-'))
            {
                errs.add(
                    hp.field("name"),
                    "must be letters, digits, '_', '-' or spaces",
                );
            }
            if h.timeout.is_negative() {
                errs.add(hp.field("timeout"), "must not be negative");
            }
        }
        if let Some(ranges) = &s.route_table_ranges {
            for (i, r) in ranges.iter().enumerate() {
                if r.min < 1 || r.max > 4_294_967_295 || r.min > r.max {
                    errs.add(
                        p.field("routeTableRanges").index(i),
                        format!(
                            "{}..{} is not a valid range of routing table IDs",
                            r.min, r.max
                        ),
                    );
                } else if (r.min..=r.max).any(|t| (253..=255).contains(&t)) {
                    errs.add(
                        p.field("routeTableRanges").index(i),
                        "must not include the kernel's reserved tables 253, 254 and 255",
                    );
                }
            }
        }
        if let Some(r) = &s.route_table_range
            && (r.min < 1 || r.max > 250 || r.min > r.max)
        {
            errs.add(
                p.field("routeTableRange"),
                format!("{}..{} must lie within 1..250", r.min, r.max),
            );
        }
        if let Some(ports) = &s.kube_node_port_ranges {
            for (i, port) in ports.iter().enumerate() {
                if port.is_named() {
                    errs.add(
                        p.field("kubeNodePortRanges").index(i),
                        "must be a port or range, not a name",
                    );
                }
            }
        }
    }
}
