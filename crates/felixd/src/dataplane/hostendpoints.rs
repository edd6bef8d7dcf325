//! Which host endpoint owns which interface, as Felix decides it.
//!
//! A HostEndpoint names its interface (`interfaceName`), or leaves it empty and is matched
//! to every host interface that holds one of its `expectedIPs`. An interface gets at most
//! one host endpoint: of all that match it, by name or by address, the one whose name sorts
//! first (a name match has no precedence). `interfaceName: "*"` endpoints cover all other
//! host traffic; the first by name is used. Workload interfaces are never host endpoints.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// What resolution needs of a host endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpointRef<'a> {
    pub name: &'a str,
    /// `interfaceName`: a name, `*`, or empty.
    pub iface: &'a str,
    pub expected_ips: Vec<IpAddr>,
}

use super::ALL_INTERFACES;

/// Interface → owning host endpoint's name. `host_addrs` holds the host's interfaces (not
/// workload ones) with their addresses.
pub fn resolve(
    heps: &[HostEndpointRef<'_>],
    host_addrs: &HashMap<String, HashSet<IpAddr>>,
) -> BTreeMap<String, String> {
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut offer = |iface: &str, name: &str| {
        let e = owner
            .entry(iface.to_string())
            .or_insert_with(|| name.to_string());
        if name < e.as_str() {
            *e = name.to_string();
        }
    };
    for h in heps {
        match h.iface {
            "*" => offer(ALL_INTERFACES, h.name),
            "" => {
                for (iface, addrs) in host_addrs {
                    if h.expected_ips.iter().any(|ip| addrs.contains(ip)) {
                        offer(iface, h.name);
                    }
                }
            }
            named => offer(named, h.name),
        }
    }
    owner
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hep<'a>(name: &'a str, iface: &'a str, ips: &[&str]) -> HostEndpointRef<'a> {
        HostEndpointRef {
            name,
            iface,
            expected_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn host() -> HashMap<String, HashSet<IpAddr>> {
        [
            ("eth0", vec!["192.168.1.10", "fe80::1"]),
            ("eth1", vec!["10.0.0.5"]),
            ("eth2", vec![]),
        ]
        .into_iter()
        .map(|(n, a)| {
            (
                n.to_string(),
                a.iter().map(|s| s.parse().unwrap()).collect(),
            )
        })
        .collect()
    }

    #[test]
    fn an_endpoint_without_a_name_owns_every_interface_holding_an_expected_ip() {
        let heps = [hep(
            "by-ip",
            "",
            &["192.168.1.10", "10.0.0.5", "172.16.0.1"],
        )];
        let owner = resolve(&heps, &host());
        assert_eq!(owner.get("eth0").map(String::as_str), Some("by-ip"));
        assert_eq!(owner.get("eth1").map(String::as_str), Some("by-ip"));
        assert_eq!(owner.len(), 2, "{owner:?}");
        // IPv6 addresses count too.
        let heps = [hep("v6", "", &["fe80::1"])];
        assert_eq!(
            resolve(&heps, &host()).get("eth0").map(String::as_str),
            Some("v6")
        );
    }

    #[test]
    fn the_first_name_wins_whether_it_matched_by_name_or_by_address() {
        // Felix's own case: id0 (by address) beats id1 (by name).
        let heps = [hep("id1", "eth0", &[]), hep("id0", "", &["192.168.1.10"])];
        assert_eq!(
            resolve(&heps, &host()).get("eth0").map(String::as_str),
            Some("id0")
        );
        let heps = [hep("b", "", &["192.168.1.10"]), hep("a", "eth0", &[])];
        assert_eq!(
            resolve(&heps, &host()).get("eth0").map(String::as_str),
            Some("a")
        );
    }

    #[test]
    fn a_named_endpoint_never_matches_by_address_and_the_wildcard_stands_apart() {
        let heps = [
            hep("named", "eth1", &["192.168.1.10"]),
            hep("z-all", "*", &["192.168.1.10"]),
            hep("a-all", "*", &[]),
        ];
        let owner = resolve(&heps, &host());
        assert_eq!(owner.get("eth1").map(String::as_str), Some("named"));
        assert_eq!(owner.get("eth0"), None);
        assert_eq!(owner.get(ALL_INTERFACES).map(String::as_str), Some("a-all"));
    }
}
