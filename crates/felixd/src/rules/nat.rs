//! Calico's NAT chains (`felix/rules/nat.go`): NAT-outgoing (`cali-nat-outgoing`), the
//! floating-IP chains (`cali-fip-dnat`, `cali-fip-snat`) and the service-loop-prevention chain
//! (`cali-cidr-block`). Rule order, matches and actions follow Calico exactly because the
//! per-rule hashes depend on them.
//!
//! Only the iptables (non-BPF) forms are ported: in BPF mode Calico matches a BPF mark instead
//! of the pool IP sets.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::generic::{Action, Chain, MatchCriteria, Rule};
use crate::rules::{
    CHAIN_CIDR_BLOCK, CHAIN_FIP_DNAT, CHAIN_FIP_SNAT, CHAIN_NAT_OUTGOING, IPSET_ID_ALL_HOST_NETS,
    IPSET_ID_NAT_OUTGOING_MASQ_POOLS, IPSET_ID_NETWORK_POOLS, RulesConfig, ipset_name,
};

/// The `NATOutgoingExclusions` value that also exempts traffic to other Calico hosts.
pub const NAT_OUTGOING_EXCLUSIONS_POOLS_AND_HOSTS: &str = "IPPoolsAndHostIPs";

/// One NAT-outgoing rule: traffic from a NAT-outgoing pool to anywhere outside Calico's
/// pools (and, if so configured, outside Calico's hosts), optionally limited to a protocol
/// and to the configured outgoing interface (`IptablesNATOutgoingInterfaceFilter`).
pub fn nat_outgoing_rule(
    cfg: &RulesConfig,
    protocol: Option<&str>,
    action: Action,
    ip_version: u8,
) -> Rule {
    let set = |id: &str| ipset_name(ip_version, id, cfg.nftables);
    let mut m = MatchCriteria::new()
        .source_ip_set(&set(IPSET_ID_NAT_OUTGOING_MASQ_POOLS))
        .not_dest_ip_set(&set(IPSET_ID_NETWORK_POOLS));
    if cfg.nat_outgoing_exclusions == NAT_OUTGOING_EXCLUSIONS_POOLS_AND_HOSTS {
        m = m.not_dest_ip_set(&set(IPSET_ID_ALL_HOST_NETS));
    }
    if let Some(p) = protocol.filter(|p| !p.is_empty()) {
        m = m.protocol(p);
    }
    if !cfg.nat_outgoing_interface_filter.is_empty() {
        m = m.out_interface(&cfg.nat_outgoing_interface_filter);
    }
    Rule::new(m, action)
}

/// The `to` of an SNAT to the configured NATOutgoingAddress, with an optional port range:
/// Go's `net.JoinHostPort`, which brackets IPv6 addresses when a port is attached.
fn snat_target(addr: IpAddr, ports: Option<&str>) -> String {
    match (ports, addr) {
        (None, a) => a.to_string(),
        (Some(p), IpAddr::V4(a)) => format!("{a}:{p}"),
        (Some(p), IpAddr::V6(a)) => format!("[{a}]:{p}"),
    }
}

/// The action that NATs outgoing traffic: MASQUERADE (the kernel picks the outgoing
/// interface's address), or SNAT when a fixed NATOutgoingAddress is configured.
fn nat_outgoing_action(cfg: &RulesConfig, ports: Option<&str>) -> Action {
    match cfg.nat_outgoing_address {
        Some(addr) => Action::Snat {
            to: snat_target(addr, ports),
        },
        None => Action::Masq {
            to_ports: ports.unwrap_or_default().to_string(),
        },
    }
}

/// `cali-nat-outgoing`: empty unless some pool on this node has natOutgoing (`active`).
///
/// With a NATPortRange, TCP and UDP are translated into that range (and RETURN straight
/// after, so the catch-all rule doesn't apply to them); other protocols have no ports and get
/// the plain rule.
pub fn nat_outgoing_chain(cfg: &RulesConfig, active: bool, ip_version: u8) -> Chain {
    let mut rules = Vec::new();
    if active {
        if let Some(range) = cfg.nat_port_range.filter(|r| r.last > 0) {
            let to_ports = format!("{}-{}", range.first, range.last);
            let ranged = nat_outgoing_action(cfg, Some(&to_ports));
            for proto in ["tcp", "udp"] {
                rules.push(nat_outgoing_rule(
                    cfg,
                    Some(proto),
                    ranged.clone(),
                    ip_version,
                ));
                rules.push(nat_outgoing_rule(
                    cfg,
                    Some(proto),
                    Action::Return,
                    ip_version,
                ));
            }
        }
        let default_action = nat_outgoing_action(cfg, None);
        rules.push(nat_outgoing_rule(cfg, None, default_action, ip_version));
    }
    Chain::new(CHAIN_NAT_OUTGOING, rules)
}

/// `cali-fip-dnat`: one DNAT per floating IP, keyed by external IP (value: the workload's
/// internal IP). The map's order (byte-wise, as Go's `sort.Strings`) is the rule order.
pub fn dnat_chain(dnats: &BTreeMap<String, String>) -> Chain {
    let rules = dnats
        .iter()
        .map(|(ext, int)| {
            Rule::new(
                MatchCriteria::new().dest_net(ext),
                Action::Dnat {
                    to: int.clone(),
                    port: 0,
                },
            )
        })
        .collect();
    Chain::new(CHAIN_FIP_DNAT, rules)
}

/// `cali-fip-snat`: keyed by internal IP (value: the external IP). It SNATs only hairpin
/// traffic (a workload reaching itself through its own floating IP: after DNAT both source
/// and destination are the internal IP), so the reply comes back through the DNAT.
pub fn snat_chain(snats: &BTreeMap<String, String>) -> Chain {
    let rules = snats
        .iter()
        .map(|(int, ext)| {
            Rule::new(
                MatchCriteria::new().dest_net(int).source_net(int),
                Action::Snat { to: ext.clone() },
            )
        })
        .collect();
    Chain::new(CHAIN_FIP_SNAT, rules)
}

/// Both floating-IP chains from (external IP, internal IP) pairs, collated as Felix's
/// floating IP manager does: an external IP claimed twice goes to the alphabetically earlier
/// internal IP, and the reverse SNAT of an internal IP with several floating IPs uses the
/// alphabetically earliest external one. Returns `[cali-fip-dnat, cali-fip-snat]`.
pub fn floating_ip_chains<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> [Chain; 2] {
    let mut dnats: BTreeMap<String, String> = BTreeMap::new();
    for (ext, int) in pairs {
        let keep_existing = dnats
            .get(ext)
            .is_some_and(|existing| !existing.is_empty() && existing.as_str() <= int);
        if !keep_existing {
            dnats.insert(ext.to_string(), int.to_string());
        }
    }
    let mut snats: BTreeMap<String, String> = BTreeMap::new();
    for (ext, int) in &dnats {
        // Iterating in external-IP order means the first one seen is the earliest.
        snats.entry(int.clone()).or_insert_with(|| ext.clone());
    }
    [dnat_chain(&dnats), snat_chain(&snats)]
}

/// The action for traffic to a service CIDR nothing answers for (ServiceLoopPrevention):
/// `None` when loop prevention is disabled, leaving the chain empty.
fn block_cidr_action(cfg: &RulesConfig) -> Option<Action> {
    match cfg.service_loop_prevention.as_str() {
        "Drop" => Some(Action::Drop),
        "Reject" => Some(Action::Reject { with: None }),
        _ => None,
    }
}

/// `cali-cidr-block`: drops (or rejects) forwarded traffic to the advertised service CIDRs
/// that no service answers for, which would otherwise loop between this node and its router.
/// Only the CIDRs of `ip_version` are used; rule order is sorted CIDR order.
pub fn cidr_block_chain(cfg: &RulesConfig, cidrs: &[String], ip_version: u8) -> Chain {
    let mut rules = Vec::new();
    if let Some(action) = block_cidr_action(cfg) {
        let mut sorted: Vec<&String> = cidrs.iter().collect();
        sorted.sort();
        for cidr in sorted {
            if cidr.contains(':') == (ip_version == 6) {
                rules.push(Rule::new(
                    MatchCriteria::new().dest_net(cidr),
                    action.clone(),
                ));
            }
        }
    }
    Chain::new(CHAIN_CIDR_BLOCK, rules)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::SocketAddr;

    use super::*;
    use crate::generic::{Features, PortRange, iptables_render};

    /// The bracket rule copied from Go's `net.JoinHostPort` agrees with Rust's own socket
    /// address formatting (for single ports).
    fn bracket_rule_matches_std(a: IpAddr) -> bool {
        snat_target(a, Some("1")) == SocketAddr::new(a, 1).to_string()
    }

    fn cfg() -> RulesConfig {
        RulesConfig::default()
    }

    fn masq_pools() -> String {
        ipset_name(4, IPSET_ID_NAT_OUTGOING_MASQ_POOLS, false)
    }
    fn network_pools() -> String {
        ipset_name(4, IPSET_ID_NETWORK_POOLS, false)
    }

    /// The match every NAT-outgoing rule starts with (Calico's test helper).
    fn base() -> MatchCriteria {
        MatchCriteria::new()
            .source_ip_set(&masq_pools())
            .not_dest_ip_set(&network_pools())
    }

    fn render(chain: &Chain) -> Vec<String> {
        let f = Features {
            snat_fully_random: false,
            masq_fully_random: false,
            nflog_size: true,
        };
        chain
            .rules
            .iter()
            .map(|r| iptables_render("-A", &chain.name, None, r, "", &f))
            .collect()
    }

    #[test]
    fn active_renders_masquerade() {
        let chain = nat_outgoing_chain(&cfg(), true, 4);
        assert_eq!(
            chain,
            Chain::new(
                "cali-nat-outgoing",
                vec![Rule::new(
                    base(),
                    Action::Masq {
                        to_ports: String::new()
                    }
                )]
            )
        );
        assert_eq!(
            render(&chain),
            vec![
                "-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src \
                 -m set ! --match-set cali40network-ip-pools dst --jump MASQUERADE"
            ]
        );
    }

    #[test]
    fn active_with_all_hosts_exclusion() {
        let c = RulesConfig {
            nat_outgoing_exclusions: "IPPoolsAndHostIPs".into(),
            ..cfg()
        };
        let chain = nat_outgoing_chain(&c, true, 4);
        assert_eq!(
            chain.rules,
            vec![Rule::new(
                base().not_dest_ip_set(&ipset_name(4, IPSET_ID_ALL_HOST_NETS, false)),
                Action::Masq {
                    to_ports: String::new()
                }
            )]
        );
    }

    #[test]
    fn active_with_explicit_snat_address() {
        let c = RulesConfig {
            nat_outgoing_address: Some("192.168.0.1".parse().unwrap()),
            ..cfg()
        };
        let chain = nat_outgoing_chain(&c, true, 4);
        assert_eq!(
            chain.rules,
            vec![Rule::new(
                base(),
                Action::Snat {
                    to: "192.168.0.1".into()
                }
            )]
        );
        assert_eq!(
            render(&chain),
            vec![
                "-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src \
                 -m set ! --match-set cali40network-ip-pools dst --jump SNAT --to-source 192.168.0.1"
            ]
        );
    }

    fn port_range_rules(ranged: Action, default: Action, iface: Option<&str>) -> Vec<Rule> {
        let m = |proto: Option<&str>| {
            let mut m = base();
            if let Some(p) = proto {
                m = m.protocol(p);
            }
            if let Some(i) = iface {
                m = m.out_interface(i);
            }
            m
        };
        vec![
            Rule::new(m(Some("tcp")), ranged.clone()),
            Rule::new(m(Some("tcp")), Action::Return),
            Rule::new(m(Some("udp")), ranged),
            Rule::new(m(Some("udp")), Action::Return),
            Rule::new(m(None), default),
        ]
    }

    #[test]
    fn active_with_port_range() {
        let c = RulesConfig {
            nat_port_range: Some(PortRange {
                first: 99,
                last: 100,
            }),
            ..cfg()
        };
        let chain = nat_outgoing_chain(&c, true, 4);
        assert_eq!(
            chain.rules,
            port_range_rules(
                Action::Masq {
                    to_ports: "99-100".into()
                },
                Action::Masq {
                    to_ports: String::new()
                },
                None
            )
        );
        let text = render(&chain);
        assert_eq!(
            text[0],
            "-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src \
             -m set ! --match-set cali40network-ip-pools dst -p tcp --jump MASQUERADE --to-ports 99-100"
        );
        assert_eq!(
            text[3],
            "-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src \
             -m set ! --match-set cali40network-ip-pools dst -p udp --jump RETURN"
        );
    }

    #[test]
    fn active_with_port_range_and_interface_filter() {
        let c = RulesConfig {
            nat_port_range: Some(PortRange {
                first: 99,
                last: 100,
            }),
            nat_outgoing_interface_filter: "cali-123".into(),
            ..cfg()
        };
        let chain = nat_outgoing_chain(&c, true, 4);
        assert_eq!(
            chain.rules,
            port_range_rules(
                Action::Masq {
                    to_ports: "99-100".into()
                },
                Action::Masq {
                    to_ports: String::new()
                },
                Some("cali-123")
            )
        );
        assert_eq!(
            render(&chain)[4],
            "-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src \
             -m set ! --match-set cali40network-ip-pools dst --out-interface cali-123 --jump MASQUERADE"
        );
    }

    #[test]
    fn active_with_port_range_and_snat_address() {
        let c = RulesConfig {
            nat_port_range: Some(PortRange {
                first: 99,
                last: 100,
            }),
            nat_outgoing_address: Some("192.168.0.1".parse().unwrap()),
            ..cfg()
        };
        let chain = nat_outgoing_chain(&c, true, 4);
        assert_eq!(
            chain.rules,
            port_range_rules(
                Action::Snat {
                    to: "192.168.0.1:99-100".into()
                },
                Action::Snat {
                    to: "192.168.0.1".into()
                },
                None
            )
        );
    }

    #[test]
    fn ipv6_snat_address_with_port_range_is_bracketed() {
        let c = RulesConfig {
            nat_port_range: Some(PortRange {
                first: 99,
                last: 100,
            }),
            nat_outgoing_address: Some("fd00::1".parse().unwrap()),
            ..cfg()
        };
        let chain = nat_outgoing_chain(&c, true, 6);
        assert_eq!(
            chain.rules[0].action,
            Some(Action::Snat {
                to: "[fd00::1]:99-100".into()
            })
        );
        assert_eq!(
            chain.rules[4].action,
            Some(Action::Snat {
                to: "fd00::1".into()
            })
        );
        assert_eq!(
            chain.rules[0].matches.ip_set_names(),
            vec!["cali60masq-ipam-pools", "cali60network-ip-pools"]
        );
        assert!(bracket_rule_matches_std("fd00::1".parse().unwrap()));
        assert!(bracket_rule_matches_std("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn inactive_renders_nothing() {
        assert_eq!(
            nat_outgoing_chain(&cfg(), false, 4),
            Chain::new("cali-nat-outgoing", vec![])
        );
    }

    #[test]
    fn floating_ips() {
        let [dnat, snat] = floating_ip_chains([
            ("172.16.0.2", "10.65.0.3"),
            ("172.16.0.1", "10.65.0.2"),
            // A second floating IP for the same workload: SNAT uses the earliest one.
            ("172.16.0.9", "10.65.0.2"),
            // The same floating IP claimed twice: the earlier internal IP wins.
            ("172.16.0.2", "10.65.0.1"),
        ]);
        let f = Features::default();
        let text = |c: &Chain| -> Vec<String> {
            c.rules
                .iter()
                .map(|r| iptables_render("-A", &c.name, None, r, "", &f))
                .collect()
        };
        assert_eq!(
            text(&dnat),
            vec![
                "-A cali-fip-dnat --destination 172.16.0.1 --jump DNAT --to-destination 10.65.0.2",
                "-A cali-fip-dnat --destination 172.16.0.2 --jump DNAT --to-destination 10.65.0.1",
                "-A cali-fip-dnat --destination 172.16.0.9 --jump DNAT --to-destination 10.65.0.2",
            ]
        );
        assert_eq!(
            text(&snat),
            vec![
                "-A cali-fip-snat --destination 10.65.0.1 --source 10.65.0.1 \
                 --jump SNAT --to-source 172.16.0.2 --random-fully",
                "-A cali-fip-snat --destination 10.65.0.2 --source 10.65.0.2 \
                 --jump SNAT --to-source 172.16.0.1 --random-fully",
            ]
        );
        let [d, s] = floating_ip_chains(std::iter::empty::<(&str, &str)>());
        assert!(d.rules.is_empty() && s.rules.is_empty());
        assert_eq!(
            (d.name.as_str(), s.name.as_str()),
            ("cali-fip-dnat", "cali-fip-snat")
        );
    }

    #[test]
    fn cidr_block() {
        let cidrs: Vec<String> = ["10.96.0.0/12", "fd00:96::/112", "10.0.0.0/16"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let v4 = cidr_block_chain(&cfg(), &cidrs, 4);
        assert_eq!(
            v4.rules,
            vec![
                Rule::new(MatchCriteria::new().dest_net("10.0.0.0/16"), Action::Drop),
                Rule::new(MatchCriteria::new().dest_net("10.96.0.0/12"), Action::Drop),
            ]
        );
        let reject = RulesConfig {
            service_loop_prevention: "Reject".into(),
            ..cfg()
        };
        assert_eq!(
            cidr_block_chain(&reject, &cidrs, 6).rules,
            vec![Rule::new(
                MatchCriteria::new().dest_net("fd00:96::/112"),
                Action::Reject { with: None }
            )]
        );
        let disabled = RulesConfig {
            service_loop_prevention: "Disabled".into(),
            ..cfg()
        };
        assert_eq!(
            cidr_block_chain(&disabled, &cidrs, 4),
            Chain::new("cali-cidr-block", vec![])
        );
    }
}
