//! felixd's configuration, resolved as Felix resolves it (highest first): `FELIX_<PARAM>`
//! environment variables (case-insensitive names), the per-node FelixConfiguration
//! `node.<hostname>`, the global FelixConfiguration `default`, then Felix's built-in
//! defaults. Only the parameters felixd acts on are read; each bad value is reported with
//! where it came from, and the built-in default is used instead so that one typo never
//! stops policy from being enforced.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use calico_api::kinds::FelixConfigurationSpec;
use calico_api::numorstring::Port;

use crate::dataplane::iptables::Backend;
use crate::generic::PortRange;
use crate::rules::{ProtoPort, RulesConfig};

/// `iptablesBackend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Legacy,
    Nft,
}

/// `nftablesMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NftablesMode {
    Disabled,
    Enabled,
    Auto,
}

/// Everything felixd reads.
#[derive(Debug, Clone, PartialEq)]
pub struct FelixConfig {
    pub ipv6_support: bool,
    pub iptables_backend: BackendChoice,
    pub nftables_mode: NftablesMode,
    pub chain_insert_mode_append: bool,
    pub interface_prefixes: Vec<String>,
    pub default_endpoint_to_host_action: String,
    pub iptables_filter_allow_action: String,
    pub iptables_mangle_allow_action: String,
    pub iptables_filter_deny_action: String,
    pub failsafe_inbound_host_ports: Vec<ProtoPort>,
    pub failsafe_outbound_host_ports: Vec<ProtoPort>,
    pub nat_port_range: Option<PortRange>,
    pub nat_outgoing_address: Option<IpAddr>,
    pub log_prefix: String,
    pub disable_conntrack_invalid_check: bool,
    pub allow_vxlan_packets_from_workloads: bool,
    pub allow_ipip_packets_from_workloads: bool,
    pub iptables_refresh_interval: Duration,
    pub ipsets_refresh_interval: Duration,
    pub route_refresh_interval: Duration,
    pub health_enabled: bool,
    pub health_host: String,
    pub health_port: u16,
    pub prometheus_metrics_enabled: bool,
    pub prometheus_metrics_host: String,
    pub prometheus_metrics_port: u16,
    pub vxlan_port: u16,
    pub vxlan_vni: u32,
    /// What is reported to the datastore (never changes how rules are rendered).
    pub reporting: ReportingConfig,
}

/// Status reports written to the datastore (Felix's `*Reporting*` and `OpenstackRegion`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportingConfig {
    /// `EndpointReportingEnabled`: each local endpoint's status under `/calico/felix/`.
    pub endpoints_enabled: bool,
    /// `EndpointReportingDelaySecs`: the least time between two rounds of endpoint writes.
    pub endpoint_delay: Duration,
    /// `ReportingIntervalSecs`: how often this node's liveness is written (zero: never).
    pub interval: Duration,
    /// `ReportingTTLSecs`: how long a liveness report lives.
    pub ttl: Duration,
    /// `OpenstackRegion`: the region segment of the v2 status keys.
    pub region: String,
}

impl Default for ReportingConfig {
    fn default() -> Self {
        ReportingConfig {
            endpoints_enabled: false,
            endpoint_delay: Duration::from_secs(1),
            interval: Duration::from_secs(30),
            ttl: Duration::from_secs(90),
            region: String::new(),
        }
    }
}

impl Default for FelixConfig {
    fn default() -> Self {
        let r = RulesConfig::default();
        FelixConfig {
            ipv6_support: true,
            iptables_backend: BackendChoice::Auto,
            nftables_mode: NftablesMode::Auto,
            chain_insert_mode_append: false,
            interface_prefixes: vec!["cali".into()],
            default_endpoint_to_host_action: "DROP".into(),
            iptables_filter_allow_action: "ACCEPT".into(),
            iptables_mangle_allow_action: "ACCEPT".into(),
            iptables_filter_deny_action: "DROP".into(),
            failsafe_inbound_host_ports: r.failsafe_inbound_host_ports,
            failsafe_outbound_host_ports: r.failsafe_outbound_host_ports,
            nat_port_range: None,
            nat_outgoing_address: None,
            log_prefix: "calico-packet".into(),
            disable_conntrack_invalid_check: false,
            allow_vxlan_packets_from_workloads: false,
            allow_ipip_packets_from_workloads: false,
            iptables_refresh_interval: Duration::from_secs(180),
            ipsets_refresh_interval: Duration::from_secs(90),
            route_refresh_interval: Duration::from_secs(90),
            health_enabled: false,
            health_host: "localhost".into(),
            health_port: 9099,
            prometheus_metrics_enabled: false,
            prometheus_metrics_host: String::new(),
            prometheus_metrics_port: 9091,
            vxlan_port: 4789,
            vxlan_vni: 4096,
            reporting: ReportingConfig::default(),
        }
    }
}

/// A value that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub param: &'static str,
    pub source: String,
    pub value: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} = {:?} (from {}): {}; using the default",
            self.param, self.value, self.source, self.reason
        )
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "t" => Ok(true),
        "false" | "0" | "no" | "n" | "f" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Felix's environment durations are seconds (`10`, `0.5`); v3 ones are `90s` style.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return if secs >= 0.0 && secs.is_finite() {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err("must be a non-negative number of seconds".into())
        };
    }
    calico_api::numorstring::Duration::parse(s)
        .ok()
        .and_then(|d| d.to_std())
        .ok_or_else(|| "expected seconds (10) or a duration (90s, 1m30s)".into())
}

/// `tcp:22,udp:68,tcp:10.0.0.0/8:179` (Felix's list syntax), or `none`.
fn parse_proto_ports(s: &str) -> Result<Vec<ProtoPort>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|item| {
            let parts: Vec<&str> = item.trim().split(':').collect();
            let (protocol, net, port) = match parts.as_slice() {
                [port] => ("tcp", None, *port),
                [p, port] => (*p, None, *port),
                [p, rest @ .., port] => (*p, Some(rest.join(":")), *port),
                [] => return Err(format!("{item:?}: empty entry")),
            };
            let protocol = protocol.to_ascii_lowercase();
            if !["tcp", "udp", "sctp"].contains(&protocol.as_str()) {
                return Err(format!("{item:?}: protocol must be tcp, udp or sctp"));
            }
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{item:?}: {port:?} is not a port number"))?;
            Ok(ProtoPort {
                protocol,
                port,
                net: net.filter(|n| !n.is_empty()),
            })
        })
        .collect()
}

fn action(s: &str, allowed: &[&str]) -> Result<String, String> {
    let up = s.trim().to_ascii_uppercase();
    if allowed.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(format!("expected one of {}", allowed.join(", ")))
    }
}

fn port_range(p: &Port) -> Result<PortRange, String> {
    match p {
        Port::Range { min, max } => Ok(PortRange {
            first: *min,
            last: *max,
        }),
        Port::Named(n) => Err(format!("{n:?} is not a port range")),
    }
}

/// Where each value comes from, highest priority first.
#[derive(Debug, Default)]
pub struct Sources<'a> {
    /// `FELIX_*` variables, names upper-cased.
    pub env: HashMap<String, String>,
    pub node: Option<&'a FelixConfigurationSpec>,
    pub global: Option<&'a FelixConfigurationSpec>,
}

impl<'a> Sources<'a> {
    /// The `FELIX_*` variables of this process.
    pub fn from_process_env() -> HashMap<String, String> {
        std::env::vars()
            .filter_map(|(k, v)| {
                let up = k.to_ascii_uppercase();
                up.starts_with("FELIX_").then_some((up, v))
            })
            .collect()
    }
}

struct Resolver<'a, 's> {
    src: &'s Sources<'a>,
    problems: Vec<ConfigProblem>,
}

impl Resolver<'_, '_> {
    /// The first source that sets `param` and parses; bad values are recorded and skipped.
    fn get<T>(
        &mut self,
        param: &'static str,
        from_env: impl Fn(&str) -> Result<T, String>,
        from_spec: impl Fn(&FelixConfigurationSpec) -> Option<Result<T, String>>,
    ) -> Option<T> {
        let key = format!("FELIX_{}", param.to_ascii_uppercase());
        if let Some(v) = self.src.env.get(&key) {
            match from_env(v) {
                Ok(t) => return Some(t),
                Err(reason) => self.problems.push(ConfigProblem {
                    param,
                    source: format!("environment variable {key}"),
                    value: v.clone(),
                    reason,
                }),
            }
        }
        for (name, spec) in [("node", self.src.node), ("default", self.src.global)] {
            let Some(spec) = spec else { continue };
            match from_spec(spec) {
                Some(Ok(t)) => return Some(t),
                Some(Err(reason)) => self.problems.push(ConfigProblem {
                    param,
                    source: format!("FelixConfiguration {name}"),
                    value: String::new(),
                    reason,
                }),
                None => {}
            }
        }
        None
    }
}

impl FelixConfig {
    /// Resolves every parameter; returns the configuration and the values it had to ignore.
    pub fn resolve(src: &Sources<'_>) -> (FelixConfig, Vec<ConfigProblem>) {
        let mut r = Resolver {
            src,
            problems: Vec::new(),
        };
        let d = FelixConfig::default();
        let dur = |o: &Option<calico_api::numorstring::Duration>| {
            o.as_ref()
                .map(|d| d.to_std().ok_or_else(|| "must not be negative".to_string()))
        };
        let opt_bool = |o: Option<bool>| o.map(Ok);
        let cfg = FelixConfig {
            ipv6_support: r
                .get("Ipv6Support", parse_bool, |s| opt_bool(s.ipv6_support))
                .unwrap_or(d.ipv6_support),
            iptables_backend: r
                .get("IptablesBackend", parse_backend, |s| {
                    s.iptables_backend.as_deref().map(parse_backend)
                })
                .unwrap_or(d.iptables_backend),
            nftables_mode: r
                .get("NftablesMode", parse_nft_mode, |s| {
                    s.nftables_mode.as_deref().map(parse_nft_mode)
                })
                .unwrap_or(d.nftables_mode),
            chain_insert_mode_append: r
                .get("ChainInsertMode", parse_insert_mode, |s| {
                    s.chain_insert_mode.as_deref().map(parse_insert_mode)
                })
                .unwrap_or(d.chain_insert_mode_append),
            interface_prefixes: r
                .get("InterfacePrefix", parse_prefixes, |s| {
                    s.interface_prefix.as_deref().map(parse_prefixes)
                })
                .unwrap_or(d.interface_prefixes),
            default_endpoint_to_host_action: r
                .get(
                    "DefaultEndpointToHostAction",
                    |v| action(v, &["DROP", "RETURN", "ACCEPT"]),
                    |s| {
                        s.default_endpoint_to_host_action
                            .as_deref()
                            .map(|v| action(v, &["DROP", "RETURN", "ACCEPT"]))
                    },
                )
                .unwrap_or(d.default_endpoint_to_host_action),
            iptables_filter_allow_action: r
                .get(
                    "IptablesFilterAllowAction",
                    |v| action(v, &["ACCEPT", "RETURN"]),
                    |s| {
                        s.iptables_filter_allow_action
                            .as_deref()
                            .map(|v| action(v, &["ACCEPT", "RETURN"]))
                    },
                )
                .unwrap_or(d.iptables_filter_allow_action),
            iptables_mangle_allow_action: r
                .get(
                    "IptablesMangleAllowAction",
                    |v| action(v, &["ACCEPT", "RETURN"]),
                    |s| {
                        s.iptables_mangle_allow_action
                            .as_deref()
                            .map(|v| action(v, &["ACCEPT", "RETURN"]))
                    },
                )
                .unwrap_or(d.iptables_mangle_allow_action),
            iptables_filter_deny_action: r
                .get(
                    "IptablesFilterDenyAction",
                    |v| action(v, &["DROP", "REJECT"]),
                    |s| {
                        s.iptables_filter_deny_action
                            .as_deref()
                            .map(|v| action(v, &["DROP", "REJECT"]))
                    },
                )
                .unwrap_or(d.iptables_filter_deny_action),
            failsafe_inbound_host_ports: r
                .get("FailsafeInboundHostPorts", parse_proto_ports, |s| {
                    s.failsafe_inbound_host_ports
                        .as_ref()
                        .map(|v| Ok(to_proto_ports(v)))
                })
                .unwrap_or(d.failsafe_inbound_host_ports),
            failsafe_outbound_host_ports: r
                .get("FailsafeOutboundHostPorts", parse_proto_ports, |s| {
                    s.failsafe_outbound_host_ports
                        .as_ref()
                        .map(|v| Ok(to_proto_ports(v)))
                })
                .unwrap_or(d.failsafe_outbound_host_ports),
            nat_port_range: r
                .get(
                    "NatPortRange",
                    |v| Port::parse(v).and_then(|p| port_range(&p)).map(Some),
                    |s| s.nat_port_range.as_ref().map(|p| port_range(p).map(Some)),
                )
                .unwrap_or(d.nat_port_range),
            nat_outgoing_address: r
                .get("NatOutgoingAddress", parse_opt_ip, |s| {
                    s.nat_outgoing_address.as_deref().map(parse_opt_ip)
                })
                .unwrap_or(d.nat_outgoing_address),
            log_prefix: r
                .get(
                    "LogPrefix",
                    |v| Ok(v.to_string()),
                    |s| s.log_prefix.clone().map(Ok),
                )
                .unwrap_or(d.log_prefix),
            disable_conntrack_invalid_check: r
                .get("DisableConntrackInvalidCheck", parse_bool, |s| {
                    opt_bool(s.disable_conntrack_invalid_check)
                })
                .unwrap_or(d.disable_conntrack_invalid_check),
            allow_vxlan_packets_from_workloads: r
                .get("AllowVXLANPacketsFromWorkloads", parse_bool, |s| {
                    opt_bool(s.allow_vxlan_packets_from_workloads)
                })
                .unwrap_or(d.allow_vxlan_packets_from_workloads),
            allow_ipip_packets_from_workloads: r
                .get("AllowIPIPPacketsFromWorkloads", parse_bool, |s| {
                    opt_bool(s.allow_ipip_packets_from_workloads)
                })
                .unwrap_or(d.allow_ipip_packets_from_workloads),
            iptables_refresh_interval: r
                .get("IptablesRefreshInterval", parse_duration, |s| {
                    dur(&s.iptables_refresh_interval)
                })
                .unwrap_or(d.iptables_refresh_interval),
            ipsets_refresh_interval: r
                .get("IpsetsRefreshInterval", parse_duration, |s| {
                    dur(&s.ipsets_refresh_interval)
                })
                .unwrap_or(d.ipsets_refresh_interval),
            route_refresh_interval: r
                .get("RouteRefreshInterval", parse_duration, |s| {
                    dur(&s.route_refresh_interval)
                })
                .unwrap_or(d.route_refresh_interval),
            health_enabled: r
                .get("HealthEnabled", parse_bool, |s| opt_bool(s.health_enabled))
                .unwrap_or(d.health_enabled),
            health_host: r
                .get(
                    "HealthHost",
                    |v| Ok(v.to_string()),
                    |s| s.health_host.clone().map(Ok),
                )
                .unwrap_or(d.health_host),
            health_port: r
                .get("HealthPort", parse_port, |s| s.health_port.map(port_of))
                .unwrap_or(d.health_port),
            prometheus_metrics_enabled: r
                .get("PrometheusMetricsEnabled", parse_bool, |s| {
                    opt_bool(s.prometheus_metrics_enabled)
                })
                .unwrap_or(d.prometheus_metrics_enabled),
            prometheus_metrics_host: r
                .get(
                    "PrometheusMetricsHost",
                    |v| Ok(v.to_string()),
                    |s| s.prometheus_metrics_host.clone().map(Ok),
                )
                .unwrap_or(d.prometheus_metrics_host),
            prometheus_metrics_port: r
                .get("PrometheusMetricsPort", parse_port, |s| {
                    s.prometheus_metrics_port.map(port_of)
                })
                .unwrap_or(d.prometheus_metrics_port),
            vxlan_port: r
                .get("VXLANPort", parse_port, |s| s.vxlan_port.map(port_of))
                .unwrap_or(d.vxlan_port),
            vxlan_vni: r
                .get(
                    "VXLANVNI",
                    |v| {
                        v.trim()
                            .parse::<u32>()
                            .map_err(|_| "expected a number".to_string())
                    },
                    |s| {
                        s.vxlan_vni
                            .map(|n| u32::try_from(n).map_err(|_| "out of range".to_string()))
                    },
                )
                .unwrap_or(d.vxlan_vni),
            reporting: ReportingConfig {
                endpoints_enabled: r
                    .get("EndpointReportingEnabled", parse_bool, |s| {
                        opt_bool(s.endpoint_reporting_enabled)
                    })
                    .unwrap_or(d.reporting.endpoints_enabled),
                endpoint_delay: r
                    .get("EndpointReportingDelaySecs", parse_duration, |s| {
                        dur(&s.endpoint_reporting_delay)
                    })
                    .unwrap_or(d.reporting.endpoint_delay),
                interval: r
                    .get("ReportingIntervalSecs", parse_duration, |s| {
                        dur(&s.reporting_interval)
                    })
                    .unwrap_or(d.reporting.interval),
                ttl: r
                    .get(
                        "ReportingTTLSecs",
                        parse_duration,
                        |s| dur(&s.reporting_ttl),
                    )
                    .unwrap_or(d.reporting.ttl),
                region: r
                    .get("OpenstackRegion", parse_region, |s| {
                        s.openstack_region.as_deref().map(parse_region)
                    })
                    .unwrap_or(d.reporting.region),
            },
        };
        (cfg, r.problems)
    }

    /// Whether both render the same dataplane (they may differ in what is reported).
    pub fn same_dataplane(&self, other: &FelixConfig) -> bool {
        let mut a = self.clone();
        a.reporting = other.reporting.clone();
        a == *other
    }

    /// The rule renderer's settings.
    pub fn rules_config(&self) -> RulesConfig {
        RulesConfig {
            workload_iface_prefixes: self.interface_prefixes.clone(),
            endpoint_to_host_action: self.default_endpoint_to_host_action.clone(),
            filter_allow_action: self.iptables_filter_allow_action.clone(),
            mangle_allow_action: self.iptables_mangle_allow_action.clone(),
            filter_deny_action: self.iptables_filter_deny_action.clone(),
            failsafe_inbound_host_ports: self.failsafe_inbound_host_ports.clone(),
            failsafe_outbound_host_ports: self.failsafe_outbound_host_ports.clone(),
            nat_port_range: self.nat_port_range,
            nat_outgoing_address: self.nat_outgoing_address,
            log_prefix: self.log_prefix.clone(),
            disable_conntrack_invalid: self.disable_conntrack_invalid_check,
            allow_vxlan_packets_from_workloads: self.allow_vxlan_packets_from_workloads,
            allow_ipip_packets_from_workloads: self.allow_ipip_packets_from_workloads,
            vxlan_port: self.vxlan_port,
            vxlan_vni: self.vxlan_vni,
            nftables: self.nftables_mode == NftablesMode::Enabled,
            ..RulesConfig::default()
        }
    }

    /// The backend to use, detecting it when set to Auto.
    pub fn backend(&self, detect: impl FnOnce() -> Backend) -> Backend {
        match self.iptables_backend {
            BackendChoice::Legacy => Backend::Legacy,
            BackendChoice::Nft => Backend::Nft,
            BackendChoice::Auto => detect(),
        }
    }
}

/// Felix takes the region into etcd keys: a DNS label (at most 63 lowercase letters, digits
/// and `-`).
fn parse_region(s: &str) -> Result<String, String> {
    let s = s.trim();
    let label = s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if label {
        Ok(s.to_string())
    } else {
        Err("expected a region name of at most 63 lowercase letters, digits and '-'".into())
    }
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(BackendChoice::Auto),
        "legacy" => Ok(BackendChoice::Legacy),
        "nft" | "nftables" => Ok(BackendChoice::Nft),
        _ => Err("expected Auto, Legacy or NFT".into()),
    }
}

fn parse_nft_mode(s: &str) -> Result<NftablesMode, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "disabled" => Ok(NftablesMode::Disabled),
        "enabled" => Ok(NftablesMode::Enabled),
        "auto" => Ok(NftablesMode::Auto),
        _ => Err("expected Enabled, Disabled or Auto".into()),
    }
}

fn parse_insert_mode(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "insert" => Ok(false),
        "append" => Ok(true),
        _ => Err("expected Insert or Append".into()),
    }
}

fn parse_prefixes(s: &str) -> Result<Vec<String>, String> {
    let v: Vec<String> = s
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if v.is_empty() {
        Err("at least one interface prefix is needed".into())
    } else {
        Ok(v)
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| "expected a port number 1-65535".into())
}

fn port_of(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{n} is not a port number 1-65535"))
}

fn parse_opt_ip(s: &str) -> Result<Option<IpAddr>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{s:?} is not an IP address"))
}

fn to_proto_ports(v: &[calico_api::kinds::ProtoPort]) -> Vec<ProtoPort> {
    v.iter()
        .map(|p| ProtoPort {
            protocol: if p.protocol.is_empty() {
                "tcp".into()
            } else {
                p.protocol.to_ascii_lowercase()
            },
            port: p.port,
            net: (!p.net.is_empty()).then(|| p.net.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn environment_beats_node_beats_default_beats_builtin() {
        let global = FelixConfigurationSpec {
            iptables_backend: Some("Legacy".into()),
            default_endpoint_to_host_action: Some("Accept".into()),
            health_port: Some(9199),
            ..Default::default()
        };
        let node = FelixConfigurationSpec {
            default_endpoint_to_host_action: Some("Return".into()),
            ..Default::default()
        };
        let src = Sources {
            env: [("FELIX_IPTABLESBACKEND".to_string(), "nft".to_string())].into(),
            node: Some(&node),
            global: Some(&global),
        };
        let (c, problems) = FelixConfig::resolve(&src);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.iptables_backend, BackendChoice::Nft);
        assert_eq!(c.default_endpoint_to_host_action, "RETURN");
        assert_eq!(c.health_port, 9199);
        assert_eq!(c.iptables_refresh_interval, Duration::from_secs(180));
    }

    #[test]
    fn bad_values_are_reported_with_their_source_and_ignored() {
        let src = Sources {
            env: [
                (
                    "FELIX_IPTABLESREFRESHINTERVAL".to_string(),
                    "soon".to_string(),
                ),
                (
                    "FELIX_FAILSAFEINBOUNDHOSTPORTS".to_string(),
                    "tcp:22,icmp:1".to_string(),
                ),
            ]
            .into(),
            ..Default::default()
        };
        let (c, problems) = FelixConfig::resolve(&src);
        assert_eq!(problems.len(), 2);
        assert!(problems.iter().any(|p| {
            p.to_string()
                .contains("environment variable FELIX_IPTABLESREFRESHINTERVAL")
        }));
        assert_eq!(c.iptables_refresh_interval, Duration::from_secs(180));
        assert_eq!(c.failsafe_inbound_host_ports.len(), 9);
    }

    #[test]
    fn reporting_parameters_resolve_and_never_change_the_dataplane() {
        let global = FelixConfigurationSpec {
            endpoint_reporting_enabled: Some(true),
            reporting_interval: Some(calico_api::numorstring::Duration::parse("10s").unwrap()),
            openstack_region: Some("Bad/Region".into()),
            ..Default::default()
        };
        let src = Sources {
            env: [(
                "FELIX_ENDPOINTREPORTINGDELAYSECS".to_string(),
                "0.5".to_string(),
            )]
            .into(),
            node: None,
            global: Some(&global),
        };
        let (c, problems) = FelixConfig::resolve(&src);
        assert!(c.reporting.endpoints_enabled);
        assert_eq!(c.reporting.endpoint_delay, Duration::from_millis(500));
        assert_eq!(c.reporting.interval, Duration::from_secs(10));
        assert_eq!(c.reporting.ttl, Duration::from_secs(90));
        assert_eq!(c.reporting.region, "");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].param, "OpenstackRegion");
        let d = FelixConfig::default();
        assert!(c.same_dataplane(&d));
        assert_ne!(c, d);
        let other = FelixConfig {
            ipv6_support: false,
            ..d.clone()
        };
        assert!(!other.same_dataplane(&d));
    }

    #[test]
    fn felix_list_and_duration_syntax() {
        let pp = parse_proto_ports("tcp:22, udp:10.0.0.0/8:53,8080").unwrap();
        assert_eq!(pp.len(), 3);
        assert_eq!(pp[1].net.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(pp[2].protocol, "tcp");
        assert!(parse_proto_ports("none").unwrap().is_empty());
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    }
}
