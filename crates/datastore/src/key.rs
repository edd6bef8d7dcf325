//! Keys of everything calico-rs stores, and their places in Calico's etcd layout
//! (`libcalico-go/lib/backend/model`), so data written by Calico reads here and vice versa.

use std::fmt;

use calico_api::names::{self, AffinityType};
use calico_api::{Kind, resource::API_VERSION};
use ipnet::IpNet;

const RESOURCES_ROOT: &str = "/calico/resources/v3/projectcalico.org/";
const IPAM_ROOT: &str = "/calico/ipam/v2/";
const FELIX_V2_ROOT: &str = "/calico/felix/v2/";
const FELIX_V1_HOST_ROOT: &str = "/calico/felix/v1/host/";

/// Felix's escaping of names inside status keys (`%` → `%25`, `/` → `%2f`), so that a
/// Kubernetes workload ID (`namespace/pod`) stays one path segment.
fn escape_name(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2f")
}

fn unescape_name(s: &str) -> String {
    s.replace("%2f", "/").replace("%25", "%")
}

/// The region segment of Felix's v2 status keys: `no-region`, or `region-<name>` when
/// FelixConfiguration `openstackRegion` is set.
pub fn region_string(region: &str) -> String {
    if region.is_empty() {
        "no-region".to_string()
    } else {
        format!("region-{region}")
    }
}

/// What a stored value is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A `projectcalico.org/v3` resource.
    Resource {
        kind: Kind,
        namespace: Option<String>,
        name: String,
    },
    /// An IPAM allocation block.
    Block { cidr: IpNet },
    /// A block's affinity to a host (or a virtual owner).
    Affinity {
        affinity_type: AffinityType,
        owner: String,
        cidr: IpNet,
    },
    /// An IPAM handle (the index from handle to the blocks holding its addresses).
    Handle { id: String },
    /// `/calico/ipam/v2/config`.
    IpamConfig,
    /// The lease of the IPAM garbage collector's leader (calico-rs only; Calico ignores it).
    IpamGcLease,
    /// A node agent's liveness report (`/calico/felix/v2/<region>/host/<host>/status`,
    /// written with a TTL), or with `last` the copy without a TTL that outlives the agent
    /// (`.../last_reported_status`).
    FelixStatus {
        region: String,
        hostname: String,
        last: bool,
    },
    /// A workload endpoint's status as its node's agent reports it
    /// (`/calico/felix/v2/<region>/host/<host>/workload/<orch>/<workload>/endpoint/<ep>`).
    WorkloadEndpointStatus {
        region: String,
        hostname: String,
        orchestrator: String,
        workload: String,
        endpoint: String,
    },
    /// A host endpoint's status (`/calico/felix/v1/host/<host>/endpoint/<name>`).
    HostEndpointStatus { hostname: String, endpoint: String },
}

impl Key {
    /// The key of a resource; `namespace` is ignored for cluster-scoped kinds.
    pub fn resource(kind: Kind, namespace: Option<&str>, name: &str) -> Key {
        Key::Resource {
            kind,
            namespace: if kind.info().namespaced {
                namespace.map(str::to_string)
            } else {
                None
            },
            name: name.to_string(),
        }
    }

    /// The etcd path.
    pub fn path(&self) -> String {
        match self {
            Key::Resource {
                kind,
                namespace,
                name,
            } => match namespace {
                Some(ns) => format!("{RESOURCES_ROOT}{}/{ns}/{name}", kind.info().plural),
                None => format!("{RESOURCES_ROOT}{}/{name}", kind.info().plural),
            },
            Key::Block { cidr } => names::ipam_block_key(cidr),
            Key::Affinity {
                affinity_type,
                owner,
                cidr,
            } => names::ipam_affinity_key(*affinity_type, owner, cidr),
            Key::Handle { id } => names::ipam_handle_key(id),
            Key::IpamConfig => names::IPAM_CONFIG_KEY.to_string(),
            Key::IpamGcLease => format!("{IPAM_ROOT}gc-leader"),
            Key::FelixStatus {
                region,
                hostname,
                last,
            } => format!(
                "{FELIX_V2_ROOT}{region}/host/{hostname}/{}",
                if *last {
                    "last_reported_status"
                } else {
                    "status"
                }
            ),
            Key::WorkloadEndpointStatus {
                region,
                hostname,
                orchestrator,
                workload,
                endpoint,
            } => format!(
                "{FELIX_V2_ROOT}{region}/host/{hostname}/workload/{}/{}/endpoint/{}",
                escape_name(orchestrator),
                escape_name(workload),
                escape_name(endpoint)
            ),
            Key::HostEndpointStatus { hostname, endpoint } => {
                format!(
                    "{FELIX_V1_HOST_ROOT}{hostname}/endpoint/{}",
                    escape_name(endpoint)
                )
            }
        }
    }

    /// Parses Felix's status keys.
    fn parse_felix(path: &str) -> Option<Key> {
        if let Some(rest) = path.strip_prefix(FELIX_V1_HOST_ROOT) {
            return match rest.split('/').collect::<Vec<_>>().as_slice() {
                [host, "endpoint", ep] if !host.is_empty() && !ep.is_empty() => {
                    Some(Key::HostEndpointStatus {
                        hostname: (*host).to_string(),
                        endpoint: unescape_name(ep),
                    })
                }
                _ => None,
            };
        }
        let rest = path.strip_prefix(FELIX_V2_ROOT)?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        match parts.as_slice() {
            [
                region,
                "host",
                host,
                leaf @ ("status" | "last_reported_status"),
            ] => Some(Key::FelixStatus {
                region: (*region).to_string(),
                hostname: (*host).to_string(),
                last: *leaf == "last_reported_status",
            }),
            [region, "host", host, "workload", orch, wl, "endpoint", ep] => {
                Some(Key::WorkloadEndpointStatus {
                    region: (*region).to_string(),
                    hostname: (*host).to_string(),
                    orchestrator: unescape_name(orch),
                    workload: unescape_name(wl),
                    endpoint: unescape_name(ep),
                })
            }
            _ => None,
        }
    }

    /// Parses an etcd path back into a key; `None` for paths calico-rs does not model.
    pub fn parse(path: &str) -> Option<Key> {
        if path.starts_with("/calico/felix/") {
            return Key::parse_felix(path);
        }
        if let Some(rest) = path.strip_prefix(RESOURCES_ROOT) {
            let parts: Vec<&str> = rest.split('/').collect();
            let kind = kind_for_plural(parts.first()?)?;
            return match (kind.info().namespaced, parts.as_slice()) {
                (true, [_, ns, name]) if !ns.is_empty() && !name.is_empty() => {
                    Some(Key::Resource {
                        kind,
                        namespace: Some((*ns).to_string()),
                        name: (*name).to_string(),
                    })
                }
                (false, [_, name]) if !name.is_empty() => Some(Key::Resource {
                    kind,
                    namespace: None,
                    name: (*name).to_string(),
                }),
                _ => None,
            };
        }
        let rest = path.strip_prefix(IPAM_ROOT)?;
        if rest == "config" {
            return Some(Key::IpamConfig);
        }
        if rest == "gc-leader" {
            return Some(Key::IpamGcLease);
        }
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["assignment", v, "block", cidr] => {
                let cidr = names::parse_cidr_key_segment(cidr)?;
                (format!("ipv{}", names::ip_version(&cidr)) == *v).then_some(Key::Block { cidr })
            }
            [t, owner, v, "block", cidr] => {
                let affinity_type = AffinityType::parse(t)?;
                let cidr = names::parse_cidr_key_segment(cidr)?;
                (format!("ipv{}", names::ip_version(&cidr)) == *v && !owner.is_empty()).then(|| {
                    Key::Affinity {
                        affinity_type,
                        owner: (*owner).to_string(),
                        cidr,
                    }
                })
            }
            ["handle", id] if !id.is_empty() => Some(Key::Handle {
                id: (*id).to_string(),
            }),
            _ => None,
        }
    }

    /// Rejects keys whose parts would not survive the path round trip (a `/` or nothing where a
    /// name, namespace, owner or handle goes). Backends call it before every write.
    pub fn check(&self) -> Result<(), crate::DatastoreError> {
        // Plain parts become path segments as they are; escaped ones (Felix's status keys)
        // cannot break the path, they only need to be there.
        type Parts<'a> = Vec<(&'static str, &'a str)>;
        let (plain, escaped): (Parts<'_>, Parts<'_>) = match self {
            Key::Resource {
                kind,
                namespace,
                name,
            } => {
                let mut v = vec![("name", name.as_str())];
                match (kind.info().namespaced, namespace) {
                    (true, Some(ns)) => v.push(("namespace", ns.as_str())),
                    (true, None) => {
                        return Err(crate::DatastoreError::InvalidKey {
                            key: self.path(),
                            reason: format!("{kind} is namespaced: give a namespace"),
                        });
                    }
                    _ => {}
                }
                (v, vec![])
            }
            Key::Affinity { owner, .. } => (vec![("owner", owner.as_str())], vec![]),
            Key::Handle { id } => (vec![("handle", id.as_str())], vec![]),
            Key::Block { .. } | Key::IpamConfig | Key::IpamGcLease => (vec![], vec![]),
            Key::FelixStatus {
                region, hostname, ..
            } => (
                vec![("region", region.as_str()), ("hostname", hostname.as_str())],
                vec![],
            ),
            Key::WorkloadEndpointStatus {
                region,
                hostname,
                orchestrator,
                workload,
                endpoint,
            } => (
                vec![("region", region.as_str()), ("hostname", hostname.as_str())],
                vec![
                    ("orchestrator", orchestrator.as_str()),
                    ("workload", workload.as_str()),
                    ("endpoint", endpoint.as_str()),
                ],
            ),
            Key::HostEndpointStatus { hostname, endpoint } => (
                vec![("hostname", hostname.as_str())],
                vec![("endpoint", endpoint.as_str())],
            ),
        };
        let invalid = |reason: String| crate::DatastoreError::InvalidKey {
            key: self.path(),
            reason,
        };
        for (what, v) in plain {
            if v.is_empty() || v.contains('/') {
                return Err(invalid(format!(
                    "the {what} must be non-empty and contain no '/'"
                )));
            }
        }
        for (what, v) in escaped {
            if v.is_empty() {
                return Err(invalid(format!("the {what} must be non-empty")));
            }
        }
        Ok(())
    }

    /// The resource kind, for resource keys.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Key::Resource { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// The stored kind for a plural. Kubernetes NetworkPolicies are stored converted, as Calico
/// NetworkPolicies, so `networkpolicies` means the Calico kind.
fn kind_for_plural(plural: &str) -> Option<Kind> {
    Kind::ALL
        .iter()
        .copied()
        .find(|k| k.info().plural == plural && k.info().api_version == API_VERSION)
}

/// A set of keys that can be listed and watched together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPrefix {
    /// All resources of a kind, optionally in one namespace.
    Kind {
        kind: Kind,
        namespace: Option<String>,
    },
    /// All allocation blocks (optionally of one IP version).
    Blocks { ip_version: Option<u8> },
    /// Affinities, optionally of one owner and IP version.
    Affinities {
        affinity_type: AffinityType,
        owner: Option<String>,
        ip_version: Option<u8>,
    },
    /// All IPAM handles.
    Handles,
    /// The one key `/calico/ipam/v2/config` (its path is the key itself, not a folder).
    IpamConfig,
    /// The workload endpoint statuses one node's agent reported.
    WorkloadEndpointStatuses { region: String, hostname: String },
    /// The host endpoint statuses one node's agent reported.
    HostEndpointStatuses { hostname: String },
    /// Everything under `/calico/`.
    Everything,
}

impl KeyPrefix {
    pub fn kind(kind: Kind) -> KeyPrefix {
        KeyPrefix::Kind {
            kind,
            namespace: None,
        }
    }

    /// The etcd key prefix (ending in `/` so that siblings do not match; only the single-key
    /// [`KeyPrefix::IpamConfig`] does not, and [`KeyPrefix::matches`] filters its siblings).
    pub fn path(&self) -> String {
        match self {
            KeyPrefix::Kind { kind, namespace } => match namespace {
                Some(ns) if kind.info().namespaced => {
                    format!("{RESOURCES_ROOT}{}/{ns}/", kind.info().plural)
                }
                _ => format!("{RESOURCES_ROOT}{}/", kind.info().plural),
            },
            KeyPrefix::Blocks { ip_version } => match ip_version {
                Some(v) => format!("{IPAM_ROOT}assignment/ipv{v}/block/"),
                None => format!("{IPAM_ROOT}assignment/"),
            },
            KeyPrefix::Affinities {
                affinity_type,
                owner,
                ip_version,
            } => match (owner, ip_version) {
                (Some(o), Some(v)) => {
                    format!("{IPAM_ROOT}{}/{o}/ipv{v}/block/", affinity_type.as_str())
                }
                (Some(o), None) => format!("{IPAM_ROOT}{}/{o}/", affinity_type.as_str()),
                (None, _) => format!("{IPAM_ROOT}{}/", affinity_type.as_str()),
            },
            KeyPrefix::Handles => format!("{IPAM_ROOT}handle/"),
            KeyPrefix::IpamConfig => names::IPAM_CONFIG_KEY.to_string(),
            KeyPrefix::WorkloadEndpointStatuses { region, hostname } => {
                format!("{FELIX_V2_ROOT}{region}/host/{hostname}/workload/")
            }
            KeyPrefix::HostEndpointStatuses { hostname } => {
                format!("{FELIX_V1_HOST_ROOT}{hostname}/endpoint/")
            }
            KeyPrefix::Everything => "/calico/".to_string(),
        }
    }

    /// Whether a parsed key belongs to this prefix (list/watch results are filtered by it, so
    /// keys under the path that calico-rs does not model, or of the wrong IP version, are
    /// skipped).
    pub fn matches(&self, key: &Key) -> bool {
        match (self, key) {
            (KeyPrefix::Everything, _) => true,
            (
                KeyPrefix::Kind { kind, namespace },
                Key::Resource {
                    kind: k,
                    namespace: ns,
                    ..
                },
            ) => kind == k && (namespace.is_none() || !kind.info().namespaced || namespace == ns),
            (KeyPrefix::Blocks { ip_version }, Key::Block { cidr }) => {
                ip_version.is_none_or(|v| names::ip_version(cidr) == v)
            }
            (
                KeyPrefix::Affinities {
                    affinity_type,
                    owner,
                    ip_version,
                },
                Key::Affinity {
                    affinity_type: t,
                    owner: o,
                    cidr,
                },
            ) => {
                affinity_type == t
                    && owner.as_ref().is_none_or(|x| x == o)
                    && ip_version.is_none_or(|v| names::ip_version(cidr) == v)
            }
            (KeyPrefix::Handles, Key::Handle { .. }) => true,
            (KeyPrefix::IpamConfig, Key::IpamConfig) => true,
            (
                KeyPrefix::WorkloadEndpointStatuses { region, hostname },
                Key::WorkloadEndpointStatus {
                    region: r,
                    hostname: h,
                    ..
                },
            ) => region == r && hostname == h,
            (
                KeyPrefix::HostEndpointStatuses { hostname },
                Key::HostEndpointStatus { hostname: h, .. },
            ) => hostname == h,
            _ => false,
        }
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_keys_follow_calicos_layout_and_parse_back() {
        let cases = [
            (
                Key::resource(Kind::IpPool, None, "default-ipv4-ippool"),
                "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
            ),
            (
                Key::resource(Kind::NetworkPolicy, Some("prod"), "allow"),
                "/calico/resources/v3/projectcalico.org/networkpolicies/prod/allow",
            ),
            (
                Key::resource(Kind::WorkloadEndpoint, Some("default"), "n1-k8s-p-eth0"),
                "/calico/resources/v3/projectcalico.org/workloadendpoints/default/n1-k8s-p-eth0",
            ),
            (
                Key::resource(Kind::FelixConfiguration, Some("ignored"), "default"),
                "/calico/resources/v3/projectcalico.org/felixconfigurations/default",
            ),
            (
                Key::resource(Kind::StagedNetworkPolicy, Some("prod"), "allow"),
                "/calico/resources/v3/projectcalico.org/stagednetworkpolicies/prod/allow",
            ),
            (
                Key::resource(Kind::StagedGlobalNetworkPolicy, None, "t1.deny"),
                "/calico/resources/v3/projectcalico.org/stagedglobalnetworkpolicies/t1.deny",
            ),
            (
                Key::resource(Kind::StagedKubernetesNetworkPolicy, Some("prod"), "db"),
                "/calico/resources/v3/projectcalico.org/stagedkubernetesnetworkpolicies/prod/db",
            ),
            (
                Key::resource(Kind::CalicoNodeStatus, None, "node1-status"),
                "/calico/resources/v3/projectcalico.org/caliconodestatuses/node1-status",
            ),
            (
                Key::Block {
                    cidr: "10.0.0.64/26".parse().unwrap(),
                },
                "/calico/ipam/v2/assignment/ipv4/block/10.0.0.64-26",
            ),
            (
                Key::Affinity {
                    affinity_type: AffinityType::Host,
                    owner: "node-1".into(),
                    cidr: "fd00::40/122".parse().unwrap(),
                },
                "/calico/ipam/v2/host/node-1/ipv6/block/fd00::40-122",
            ),
            (
                Key::Handle {
                    id: "k8s-pod-network.abc".into(),
                },
                "/calico/ipam/v2/handle/k8s-pod-network.abc",
            ),
            (Key::IpamConfig, "/calico/ipam/v2/config"),
        ];
        for (key, path) in cases {
            assert_eq!(key.path(), path);
            assert_eq!(Key::parse(path), Some(key));
        }
    }

    #[test]
    fn felix_status_keys_follow_felixs_layout_and_parse_back() {
        let cases = [
            (
                Key::FelixStatus {
                    region: region_string(""),
                    hostname: "node-1".into(),
                    last: false,
                },
                "/calico/felix/v2/no-region/host/node-1/status",
            ),
            (
                Key::FelixStatus {
                    region: region_string("east"),
                    hostname: "node-1".into(),
                    last: true,
                },
                "/calico/felix/v2/region-east/host/node-1/last_reported_status",
            ),
            (
                Key::WorkloadEndpointStatus {
                    region: "no-region".into(),
                    hostname: "node-1".into(),
                    orchestrator: "k8s".into(),
                    workload: "default/web-0".into(),
                    endpoint: "eth0".into(),
                },
                "/calico/felix/v2/no-region/host/node-1/workload/k8s/default%2fweb-0/endpoint/eth0",
            ),
            (
                Key::WorkloadEndpointStatus {
                    region: "no-region".into(),
                    hostname: "node-1".into(),
                    orchestrator: "openstack".into(),
                    workload: "50%/x".into(),
                    endpoint: "tap1".into(),
                },
                "/calico/felix/v2/no-region/host/node-1/workload/openstack/50%25%2fx/endpoint/tap1",
            ),
            (
                Key::HostEndpointStatus {
                    hostname: "node-1".into(),
                    endpoint: "eth0-hep".into(),
                },
                "/calico/felix/v1/host/node-1/endpoint/eth0-hep",
            ),
        ];
        for (key, path) in cases {
            assert_eq!(key.path(), path);
            assert_eq!(Key::parse(path), Some(key.clone()), "{path}");
            key.check().unwrap();
        }
        let wl = KeyPrefix::WorkloadEndpointStatuses {
            region: "no-region".into(),
            hostname: "node-1".into(),
        };
        assert_eq!(
            wl.path(),
            "/calico/felix/v2/no-region/host/node-1/workload/"
        );
        let other_host =
            Key::parse("/calico/felix/v2/no-region/host/node-10/workload/k8s/a%2fb/endpoint/eth0")
                .unwrap();
        assert!(!wl.matches(&other_host));
        let bad_region = Key::FelixStatus {
            region: "a/b".into(),
            hostname: "n".into(),
            last: false,
        };
        assert!(bad_region.check().is_err());
    }

    #[test]
    fn unknown_or_malformed_paths_do_not_parse() {
        for p in [
            "/calico/resources/v3/projectcalico.org/unknownthings/x",
            "/calico/resources/v3/projectcalico.org/networkpolicies/only-one-part",
            "/calico/resources/v3/projectcalico.org/ippools/ns/extra",
            "/calico/ipam/v2/assignment/ipv6/block/10.0.0.0-26",
            "/calico/ipam/v2/host/n1/ipv4/block/garbage",
            "/calico/felix/v2/no-region/host/n1/other",
            "/calico/felix/v2/no-region/host//status",
            "/calico/felix/v1/host/n1/endpoint/",
            "/calico/felix/v2/no-region/host/n1/workload/k8s/ns%2fp/endpoint",
            "/other",
        ] {
            assert_eq!(Key::parse(p), None, "{p}");
        }
    }

    #[test]
    fn prefixes_match_only_their_keys() {
        let pools = KeyPrefix::kind(Kind::IpPool);
        assert_eq!(
            pools.path(),
            "/calico/resources/v3/projectcalico.org/ippools/"
        );
        assert!(pools.matches(&Key::resource(Kind::IpPool, None, "p")));
        assert!(!pools.matches(&Key::resource(Kind::IpReservation, None, "p")));
        let np_ns = KeyPrefix::Kind {
            kind: Kind::NetworkPolicy,
            namespace: Some("a".into()),
        };
        assert!(np_ns.matches(&Key::resource(Kind::NetworkPolicy, Some("a"), "x")));
        assert!(!np_ns.matches(&Key::resource(Kind::NetworkPolicy, Some("b"), "x")));
        let v4 = KeyPrefix::Blocks {
            ip_version: Some(4),
        };
        assert!(v4.matches(&Key::Block {
            cidr: "10.0.0.0/26".parse().unwrap()
        }));
        assert!(!v4.matches(&Key::Block {
            cidr: "fd00::/122".parse().unwrap()
        }));
        let mine = KeyPrefix::Affinities {
            affinity_type: AffinityType::Host,
            owner: Some("n1".into()),
            ip_version: None,
        };
        assert_eq!(mine.path(), "/calico/ipam/v2/host/n1/");
        assert!(!mine.matches(&Key::Affinity {
            affinity_type: AffinityType::Host,
            owner: "n10".into(),
            cidr: "10.0.0.0/26".parse().unwrap(),
        }));
    }
}
