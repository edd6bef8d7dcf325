//! Names Calico derives from other names. Other components recompute them (Felix finds a pod's
//! interface by recomputing its name), so every spelling here is load-bearing.

use ipnet::IpNet;
use sha1::{Digest, Sha1};

/// Labels Calico adds to workload endpoints and network sets.
pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
pub const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";
/// Prefixes of namespace and service-account labels as endpoints inherit them.
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";
/// `pcns.projectcalico.org/name` / `pcsa.projectcalico.org/name`: the namespace's/SA's name.
pub const LABEL_NAME: &str = "projectcalico.org/name";
/// Profile name prefixes for namespaces and service accounts.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";
pub const SERVICE_ACCOUNT_PROFILE_PREFIX: &str = "ksa.";
/// The orchestrator name for Kubernetes pods.
pub const ORCHESTRATOR_K8S: &str = "k8s";
/// The orchestrator name for plain CNI containers.
pub const ORCHESTRATOR_CNI: &str = "cni";
/// The default host-side interface prefix.
pub const DEFAULT_INTERFACE_PREFIX: &str = "cali";

/// The host-side veth name: `prefix` + the first 11 hex characters of SHA-1(`<ns>.<pod>`),
/// truncated to 15 characters (Linux's limit).
pub fn veth_name_for_pod(prefix: &str, namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let hex = hex_string(&digest);
    let mut name = format!("{prefix}{}", &hex[..11]);
    name.truncate(15);
    name
}

fn hex_string(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// The identifiers a WorkloadEndpoint's name is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadEndpointIds {
    pub node: String,
    pub orchestrator: String,
    pub endpoint: String,
    pub workload: String,
    pub pod: String,
    pub container_id: String,
}

impl WorkloadEndpointIds {
    /// The segments that make the name, by orchestrator: k8s → node, k8s, pod, endpoint;
    /// cni → node, cni, containerID, endpoint; libnetwork → node, libnetwork, libnetwork,
    /// endpoint; others → node, orchestrator, workload, endpoint.
    fn segments(&self) -> [(&'static str, &str); 4] {
        let node = ("node", self.node.as_str());
        let orch = ("orchestrator", self.orchestrator.as_str());
        let ep = ("endpoint", self.endpoint.as_str());
        match self.orchestrator.as_str() {
            "k8s" => [node, orch, ("pod", self.pod.as_str()), ep],
            "cni" => [node, orch, ("containerID", self.container_id.as_str()), ep],
            "libnetwork" => [node, orch, orch, ep],
            _ => [node, orch, ("workload", self.workload.as_str()), ep],
        }
    }

    /// `<node>-<orch>-<workload>-<endpoint>` with each `-` inside a segment doubled,
    /// e.g. `node1-k8s-my--pod-eth0`. On error, the field to fix and why.
    pub fn name(&self) -> Result<String, (&'static str, String)> {
        let mut parts = Vec::with_capacity(4);
        for (field, value) in self.segments() {
            if value.is_empty() {
                return Err((field, format!("{field} is required to name the endpoint")));
            }
            if value.starts_with('-') || value.ends_with('-') {
                return Err((field, format!("{value:?} must not begin or end with '-'")));
            }
            parts.push(value.replace('-', "--"));
        }
        Ok(parts.join("-"))
    }

    /// Splits a WorkloadEndpoint name back into its identifiers.
    pub fn parse(name: &str) -> Option<WorkloadEndpointIds> {
        let parts = split_escaped(name);
        if parts.len() != 4 {
            return None;
        }
        let mut ids = WorkloadEndpointIds {
            node: parts[0].clone(),
            orchestrator: parts[1].clone(),
            endpoint: parts[3].clone(),
            ..Default::default()
        };
        match ids.orchestrator.as_str() {
            "k8s" => ids.pod = parts[2].clone(),
            "cni" => ids.container_id = parts[2].clone(),
            "libnetwork" => {}
            _ => ids.workload = parts[2].clone(),
        }
        Some(ids)
    }
}

/// The four segments of a WorkloadEndpoint name, unescaped: node, orchestrator, the
/// workload segment (the pod for Kubernetes) and endpoint. Felix's v1 endpoint identity
/// (and its status key) is built from these (libcalico-go's `ExtractDashSeparatedParms`).
pub fn workload_endpoint_name_segments(name: &str) -> Option<[String; 4]> {
    <[String; 4]>::try_from(split_escaped(name)).ok()
}

/// Splits on single dashes, treating `--` as an escaped `-`.
fn split_escaped(name: &str) -> Vec<String> {
    let b = name.as_bytes();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                cur.push('-');
                i += 2;
                continue;
            }
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(char::from(b[i]));
        }
        i += 1;
    }
    parts.push(cur);
    parts
}

/// The name Kubernetes-backed WorkloadEndpoints get: `<node>-k8s-<pod>-<iface>`.
pub fn k8s_workload_endpoint_name(node: &str, pod: &str, iface: &str) -> Result<String, String> {
    WorkloadEndpointIds {
        node: node.into(),
        orchestrator: ORCHESTRATOR_K8S.into(),
        endpoint: iface.into(),
        pod: pod.into(),
        ..Default::default()
    }
    .name()
    .map_err(|(_, e)| e)
}

/// `4` or `6`.
pub fn ip_version(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 6,
    }
}

/// A CIDR as it appears in etcd keys: `/` becomes `-` (`10.0.0.0-26`, `fd00::-122`).
pub fn cidr_key_segment(net: &IpNet) -> String {
    net.trunc().to_string().replacen('/', "-", 1)
}

/// The reverse of [`cidr_key_segment`].
pub fn parse_cidr_key_segment(s: &str) -> Option<IpNet> {
    let i = s.rfind('-')?;
    let (addr, len) = (&s[..i], &s[i + 1..]);
    format!("{addr}/{len}").parse().ok()
}

/// A CIDR as a Kubernetes object name (IPAMBlock CRDs): `.`, `:` and `/` become `-`.
pub fn cidr_to_resource_name(net: &IpNet) -> String {
    net.trunc().to_string().replace(['.', ':', '/'], "-")
}

/// etcd key of an IPAM allocation block.
pub fn ipam_block_key(block: &IpNet) -> String {
    format!(
        "/calico/ipam/v2/assignment/ipv{}/block/{}",
        ip_version(block),
        cidr_key_segment(block)
    )
}

/// Affinity owner kinds: a host, or a virtual owner such as `load-balancer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AffinityType {
    Host,
    Virtual,
}

impl AffinityType {
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityType::Host => "host",
            AffinityType::Virtual => "virtual",
        }
    }

    pub fn parse(s: &str) -> Option<AffinityType> {
        match s {
            "host" => Some(AffinityType::Host),
            "virtual" => Some(AffinityType::Virtual),
            _ => None,
        }
    }
}

/// etcd key of a block affinity: `/calico/ipam/v2/host/<host>/ipv4/block/<cidr>`.
pub fn ipam_affinity_key(kind: AffinityType, owner: &str, block: &IpNet) -> String {
    format!(
        "/calico/ipam/v2/{}/{owner}/ipv{}/block/{}",
        kind.as_str(),
        ip_version(block),
        cidr_key_segment(block)
    )
}

/// etcd key of an IPAM handle.
pub fn ipam_handle_key(handle: &str) -> String {
    format!("/calico/ipam/v2/handle/{handle}")
}

/// etcd key of the IPAM configuration.
pub const IPAM_CONFIG_KEY: &str = "/calico/ipam/v2/config";

/// The handle the CNI plugin uses for a container: `<network>.<containerID>`.
pub fn cni_handle(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}

/// Handles of node tunnel addresses, by encapsulation.
pub fn ipip_tunnel_handle(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}
pub fn vxlan_tunnel_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}
pub fn vxlan_v6_tunnel_handle(node: &str) -> String {
    format!("vxlan-v6-tunnel-addr-{node}")
}
pub fn wireguard_tunnel_handle(node: &str) -> String {
    format!("wireguard-tunnel-addr-{node}")
}
pub fn wireguard_v6_tunnel_handle(node: &str) -> String {
    format!("wireguard-v6-tunnel-addr-{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_match_calico() {
        // Calico's own conversion test expects pod "podA" in "default" to use cali7f94ce7c295.
        assert_eq!(
            veth_name_for_pod("cali", "default", "podA"),
            "cali7f94ce7c295"
        );
        let n = veth_name_for_pod("cali", "default", "nginx");
        assert_eq!(n.len(), 15);
        let digest = Sha1::digest(b"default.nginx");
        assert_eq!(&n[4..], &hex_string(&digest)[..11]);
        // A long prefix is truncated to Linux's 15 characters.
        assert_eq!(veth_name_for_pod("verylongpfx", "a", "b").len(), 15);
    }

    #[test]
    fn workload_endpoint_names_escape_dashes_and_parse_back() {
        let ids = WorkloadEndpointIds {
            node: "node-1".into(),
            orchestrator: "k8s".into(),
            endpoint: "eth0".into(),
            pod: "my-pod-7d9".into(),
            ..Default::default()
        };
        let name = ids.name().unwrap();
        assert_eq!(name, "node--1-k8s-my--pod--7d9-eth0");
        assert_eq!(WorkloadEndpointIds::parse(&name).unwrap(), ids);
        let cni = WorkloadEndpointIds {
            node: "n".into(),
            orchestrator: "cni".into(),
            endpoint: "eth0".into(),
            container_id: "abc123".into(),
            ..Default::default()
        };
        assert_eq!(cni.name().unwrap(), "n-cni-abc123-eth0");
        let bad = WorkloadEndpointIds {
            pod: "-x".into(),
            ..ids.clone()
        };
        assert_eq!(bad.name().unwrap_err().0, "pod");
        let missing = WorkloadEndpointIds {
            node: String::new(),
            ..ids
        };
        assert_eq!(missing.name().unwrap_err().0, "node");
    }

    #[test]
    fn ipam_keys_follow_calico_layout() {
        let b4: IpNet = "10.0.0.64/26".parse().unwrap();
        let b6: IpNet = "fd00::40/122".parse().unwrap();
        assert_eq!(
            ipam_block_key(&b4),
            "/calico/ipam/v2/assignment/ipv4/block/10.0.0.64-26"
        );
        assert_eq!(
            ipam_block_key(&b6),
            "/calico/ipam/v2/assignment/ipv6/block/fd00::40-122"
        );
        assert_eq!(
            ipam_affinity_key(AffinityType::Host, "node1", &b4),
            "/calico/ipam/v2/host/node1/ipv4/block/10.0.0.64-26"
        );
        assert_eq!(
            ipam_affinity_key(AffinityType::Virtual, "load-balancer", &b6),
            "/calico/ipam/v2/virtual/load-balancer/ipv6/block/fd00::40-122"
        );
        assert_eq!(parse_cidr_key_segment("fd00::40-122").unwrap(), b6);
        assert_eq!(parse_cidr_key_segment("10.0.0.64-26").unwrap(), b4);
        assert_eq!(cidr_to_resource_name(&b4), "10-0-0-64-26");
        assert_eq!(cidr_to_resource_name(&b6), "fd00--40-122");
        assert_eq!(
            ipam_handle_key("k8s-pod-network.abc"),
            "/calico/ipam/v2/handle/k8s-pod-network.abc"
        );
        assert_eq!(cni_handle("k8s-pod-network", "abc"), "k8s-pod-network.abc");
        assert_eq!(ipip_tunnel_handle("n1"), "ipip-tunnel-addr-n1");
    }
}
