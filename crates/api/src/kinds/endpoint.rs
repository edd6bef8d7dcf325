//! HostEndpoint and WorkloadEndpoint (`hostendpoint.go`, `internalapi/workloadendpoint.go`,
//! `validateWorkloadEndpointSpec`, clientv3's WorkloadEndpoint name and label handling).

use serde::{Deserialize, Serialize};

use crate::names::{LABEL_NAMESPACE, LABEL_ORCHESTRATOR, WorkloadEndpointIds};
use crate::numorstring::Protocol;
use crate::resource::{HostEndpoint, KindRules, WorkloadEndpoint};
use crate::validation::{
    Errors, Path, check_container_id, check_interface_name, check_ip, check_mac, check_port_name,
    check_subdomain_name, parse_cidr_or_ip,
};

/// A named port on a host endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEndpointSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, rename = "expectedIPs", skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

fn check_named_port(errs: &mut Errors, p: &Path, name: &str, protocol: &Protocol, port: u16) {
    if !name.is_empty() {
        errs.check(p.field("name"), check_port_name(name));
    }
    errs.check(p.field("protocol"), protocol.check());
    if !protocol.supports_ports() {
        errs.add(
            p.field("protocol"),
            format!("protocol {protocol} does not support ports; use TCP, UDP or SCTP"),
        );
    }
    if port == 0 {
        errs.add(p.field("port"), "must be between 1 and 65535");
    }
}

impl KindRules for HostEndpoint {
    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        if s.node.is_empty() {
            errs.add(p.field("node"), "a host endpoint must name its node");
        } else {
            errs.check(p.field("node"), check_subdomain_name(&s.node));
        }
        if s.interface_name.is_empty() && s.expected_ips.is_empty() {
            errs.add(
                p.field("interfaceName"),
                "set interfaceName (or \"*\" for all host interfaces) or at least one expectedIPs entry",
            );
        }
        if !s.interface_name.is_empty() && s.interface_name != "*" {
            errs.check(
                p.field("interfaceName"),
                check_interface_name(&s.interface_name),
            );
        }
        for (i, ip) in s.expected_ips.iter().enumerate() {
            errs.check(p.field("expectedIPs").index(i), check_ip(ip).map(|_| ()));
        }
        for (i, prof) in s.profiles.iter().enumerate() {
            errs.check(p.field("profiles").index(i), check_subdomain_name(prof));
        }
        for (i, port) in s.ports.iter().enumerate() {
            let pp = p.field("ports").index(i);
            if port.name.is_empty() {
                errs.add(pp.field("name"), "a host endpoint port needs a name");
            }
            check_named_port(errs, &pp, &port.name, &port.protocol, port.port);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpointPort {
    #[serde(default)]
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default)]
    pub host_port: u16,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpNat {
    #[serde(default, rename = "internalIP")]
    pub internal_ip: String,
    #[serde(default, rename = "externalIP")]
    pub external_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QosControls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_bandwidth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_peakrate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_minburst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_bandwidth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_peakrate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_minburst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_packet_rate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_packet_burst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_packet_rate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_packet_burst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_max_connections: Option<i64>,
    #[serde(default, rename = "dscp", skip_serializing_if = "Option::is_none")]
    pub dscp: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<String>,
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv4_gateway: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv6_gateway: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, rename = "mac", skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<WorkloadEndpointPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
    #[serde(
        default,
        rename = "qosControls",
        skip_serializing_if = "Option::is_none"
    )]
    pub qos_controls: Option<QosControls>,
}

impl WorkloadEndpointSpec {
    pub fn ids(&self) -> WorkloadEndpointIds {
        WorkloadEndpointIds {
            node: self.node.clone(),
            orchestrator: self.orchestrator.clone(),
            endpoint: self.endpoint.clone(),
            workload: self.workload.clone(),
            pod: self.pod.clone(),
            container_id: self.container_id.clone(),
        }
    }
}

impl KindRules for WorkloadEndpoint {
    fn check_name(_name: &str) -> Result<(), String> {
        // Checked against the identifiers in `check`, which knows the spec.
        Ok(())
    }

    fn defaults(&mut self) {
        if self.metadata.name.is_empty()
            && let Ok(n) = self.spec.ids().name()
        {
            self.metadata.name = n;
        }
        let ns = self.metadata.namespace_str().to_string();
        self.metadata.labels.insert(LABEL_NAMESPACE.to_string(), ns);
        self.metadata.labels.insert(
            LABEL_ORCHESTRATOR.to_string(),
            self.spec.orchestrator.clone(),
        );
    }

    fn check(&self, errs: &mut Errors) {
        let s = &self.spec;
        let p = Path::root("spec");
        match s.ids().name() {
            Err((field, reason)) => errs.add(p.field(field), reason),
            Ok(expected) => {
                if self.metadata.name.is_empty() {
                    errs.add(
                        "metadata.name",
                        format!("is required; for this endpoint it is {expected:?}"),
                    );
                } else if self.metadata.name != expected {
                    errs.add(
                        "metadata.name",
                        format!(
                            "{:?} does not match the endpoint's identifiers; it must be {expected:?}",
                            self.metadata.name
                        ),
                    );
                }
            }
        }
        for (field, v) in [
            ("orchestrator", &s.orchestrator),
            ("workload", &s.workload),
            ("node", &s.node),
            ("pod", &s.pod),
            ("endpoint", &s.endpoint),
            ("serviceAccountName", &s.service_account_name),
        ] {
            if !v.is_empty() {
                errs.check(p.field(field), check_subdomain_name(v));
            }
        }
        if !s.container_id.is_empty() {
            errs.check(p.field("containerID"), check_container_id(&s.container_id));
        }
        if s.interface_name.is_empty() {
            errs.add(
                p.field("interfaceName"),
                "is required (the host side of the veth, e.g. cali1234567890a)",
            );
        } else {
            errs.check(
                p.field("interfaceName"),
                check_interface_name(&s.interface_name),
            );
        }
        if !s.mac.is_empty() {
            errs.check(p.field("mac"), check_mac(&s.mac));
        }
        let mut nets = Vec::new();
        for (i, n) in s.ip_networks.iter().enumerate() {
            match parse_cidr_or_ip(n) {
                Err(e) => errs.add(p.field("ipNetworks").index(i), e),
                Ok(net) if net.prefix_len() != net.max_prefix_len() => errs.add(
                    p.field("ipNetworks").index(i),
                    format!("{n} contains more than one address; use a /32 or /128"),
                ),
                Ok(net) => nets.push(net),
            }
        }
        for (field, v, want4) in [
            ("ipv4Gateway", &s.ipv4_gateway, true),
            ("ipv6Gateway", &s.ipv6_gateway, false),
        ] {
            if !v.is_empty() {
                match check_ip(v) {
                    Err(e) => errs.add(p.field(field), e),
                    Ok(ip) if ip.is_ipv4() != want4 => errs.add(
                        p.field(field),
                        format!("{v} is not an IPv{} address", if want4 { 4 } else { 6 }),
                    ),
                    _ => {}
                }
            }
        }
        for (i, nat) in s.ip_nats.iter().enumerate() {
            let np = p.field("ipNATs").index(i);
            let int = check_ip(&nat.internal_ip);
            let ext = check_ip(&nat.external_ip);
            if let Err(e) = &int {
                errs.add(np.field("internalIP"), e.clone());
            }
            if let Err(e) = &ext {
                errs.add(np.field("externalIP"), e.clone());
            }
            if let (Ok(a), Ok(b)) = (int, ext) {
                if a.is_ipv4() != b.is_ipv4() {
                    errs.add(
                        &np,
                        "internalIP and externalIP must be of the same IP version",
                    );
                }
                if !nets.iter().any(|n| n.contains(&a)) {
                    errs.add(
                        np.field("internalIP"),
                        format!("{a} is not one of the endpoint's ipNetworks"),
                    );
                }
            }
        }
        for (i, prof) in s.profiles.iter().enumerate() {
            errs.check(p.field("profiles").index(i), check_subdomain_name(prof));
        }
        for (i, port) in s.ports.iter().enumerate() {
            let pp = p.field("ports").index(i);
            if port.name.is_empty() && port.host_port == 0 {
                errs.add(
                    pp.field("name"),
                    "a port needs a name unless it has a hostPort",
                );
            }
            check_named_port(errs, &pp, &port.name, &port.protocol, port.port);
            if !port.host_ip.is_empty() {
                errs.check(pp.field("hostIP"), check_ip(&port.host_ip).map(|_| ()));
            }
        }
        for (i, c) in s.allow_spoofed_source_prefixes.iter().enumerate() {
            if let Err(e) = parse_cidr_or_ip(c) {
                errs.add(p.field("allowSpoofedSourcePrefixes").index(i), e);
            }
        }
    }
}
