//! The generic rule model rendered as nft rule text, exactly as Calico's nftables dataplane
//! renders it (`felix/nftables/match_builder.go`, `actions.go`, `renderer.go`), and Calico's
//! per-rule hashes over that text.
//!
//! Calico hashes the rule text *without* its comment (`renderRule`): the match terms joined
//! by spaces, then `counter` and the action when the rule has one. Chain names and jump
//! targets are hashed already namespaced by their layer (`filter-cali-FORWARD`), because
//! Calico's table layer renames them before the table sees them. Keeping every byte of that
//! text equal to Calico's means a node taken over from Calico keeps its rules (same hashes,
//! nothing rewritten), and the other way round.
//!
//! Where Calico's text is rejected by nft (`icmp type X code Y`: nft wants `icmp code` spelt
//! out), we write what nft accepts instead; Calico cannot program such rules at all, so no
//! hash of Calico's can be lost.

use base64::Engine as _;
use sha2::{Digest, Sha224};

use crate::generic::{Action, Features, HASH_COMMENT_PREFIX, HASH_LENGTH, Match, PortRange, Rule};

/// knftables' `CommentLengthMax`: nft stores at most 128 bytes of comment.
pub const MAX_COMMENT_LENGTH: usize = 128;

/// The layers (iptables "tables") that share the one nftables table, as name prefixes.
pub const LAYER_FILTER: &str = "filter";
pub const LAYER_NAT: &str = "nat";
pub const LAYER_MANGLE: &str = "mangle";
pub const LAYER_RAW: &str = "raw";

/// A chain's (or map's) name inside the table: `<layer>-<name>`, unless it already starts
/// with the layer's name (Calico's `tableLayer.namespaceName`, a plain prefix test, kept as
/// is so that names come out the same).
pub fn namespaced(layer: &str, name: &str) -> String {
    if name.starts_with(layer) {
        name.to_string()
    } else {
        format!("{layer}-{name}")
    }
}

/// nft names can't contain `:`; Calico's IP set names can (`cali40s:abc`), so nftables mode
/// spells it `-` (Calico's `LegalizeSetName`).
pub fn legalize_set_name(name: &str) -> String {
    name.replace(':', "-")
}

/// The address family keyword of matches and of the table: `ip` or `ip6`.
pub fn family(ip_version: u8) -> &'static str {
    if ip_version == 6 { "ip6" } else { "ip" }
}

/// Text that nft refuses, for a term we cannot express: the whole transaction then fails
/// loudly instead of a rule silently meaning something else. Only reachable through a bug
/// (the rule builders never produce these in nftables mode), hence the debug-build panic.
fn unsupported(what: &str) -> String {
    tracing::error!(what, "bug: a rule term nftables cannot express");
    if cfg!(debug_assertions) {
        panic!("bug: nftables cannot express {what}");
    }
    format!("unsupported-in-nftables {what}")
}

/// `{ 80, 443, 8000-8100 }` (Calico's `PortRangesToMultiport`, braces even for one port).
fn port_set(ports: &[PortRange]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| {
            if p.first == p.last {
                p.first.to_string()
            } else {
                format!("{}-{}", p.first, p.last)
            }
        })
        .collect();
    format!("{{ {} }}", items.join(", "))
}

/// The transport protocol whose header port matches use (Calico's `transportProto`): from
/// the criteria's protocol term, `tcp`, `udp` or `sctp`.
pub fn transport_protocol(matches: &[Match]) -> Option<&'static str> {
    matches.iter().find_map(|m| match m {
        Match::ProtocolNum(6) => Some("tcp"),
        Match::ProtocolNum(17) => Some("udp"),
        Match::ProtocolNum(132) => Some("sctp"),
        Match::Protocol(p) => match p.to_ascii_lowercase().as_str() {
            "tcp" => Some("tcp"),
            "udp" => Some("udp"),
            "sctp" => Some("sctp"),
            _ => None,
        },
        _ => None,
    })
}

/// Interface names are written bare, as Calico writes them (`iifname cali*`): quoting would
/// change the hash. Names nft could not parse bare (anything beyond letters, digits and
/// `_.-*`) are quoted; Calico could not program those at all.
fn iface(name: &str) -> String {
    // iptables' interface wildcard is `+`, nft's `*`.
    let name = match name.strip_suffix('+') {
        Some(prefix) => format!("{prefix}*"),
        None => name.to_string(),
    };
    let name = name.as_str();
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-*".contains(c))
    {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', ""))
    }
}

/// One match term on its own. Port terms need the criteria's protocol: see
/// [`nft_match_in`]; here they fall back to nft's protocol-neutral `th`.
pub fn nft_match(m: &Match, ip_version: u8, layer: &str) -> String {
    nft_match_in(m, None, ip_version, layer)
}

/// One match term, as Calico renders it (`<IPV>` and `<LAYER>` filled in). `transport` is the
/// criteria's transport protocol ([`transport_protocol`]), used by port matches.
pub fn nft_match_in(m: &Match, transport: Option<&str>, ip_version: u8, layer: &str) -> String {
    let ipv = family(ip_version);
    let th = || {
        transport.unwrap_or_else(|| {
            tracing::warn!(
                ?m,
                "port match without a TCP, UDP or SCTP protocol; using th"
            );
            "th"
        })
    };
    match m {
        Match::MarkClear(mark) => format!("meta mark & {mark:#x} == 0"),
        Match::MarkNotClear(mark) => format!("meta mark & {mark:#x} != 0"),
        Match::MarkMatchesWithMask(mark, mask) => format!("meta mark & {mask:#x} == {mark:#x}"),
        Match::NotMarkMatchesWithMask(mark, mask) => {
            format!("meta mark & {mask:#x} != {mark:#x}")
        }
        Match::InInterface(i) => format!("iifname {}", iface(i)),
        Match::OutInterface(i) => format!("oifname {}", iface(i)),
        Match::RpfCheckFailed => "fib saddr . mark . iif oif 0".into(),
        Match::IpvsConnection | Match::NotIpvsConnection => unsupported("IPVS connection matches"),
        Match::SrcAddrType {
            addr_type,
            limit_iface_out,
        } => {
            let t = addr_type.to_ascii_lowercase();
            if *limit_iface_out {
                format!("fib saddr . oif type {t}")
            } else {
                format!("fib saddr type {t}")
            }
        }
        Match::NotSrcAddrType {
            addr_type,
            limit_iface_out,
        } => {
            let t = addr_type.to_ascii_lowercase();
            if *limit_iface_out {
                format!("fib saddr . oif type != {t}")
            } else {
                format!("fib saddr type != {t}")
            }
        }
        Match::DestAddrType(t) => format!("fib daddr type {}", t.to_ascii_lowercase()),
        Match::NotDestAddrType(t) => format!("fib daddr type != {}", t.to_ascii_lowercase()),
        Match::ConntrackState(s) => conntrack(s, ""),
        Match::NotConntrackState(s) => conntrack(s, "!= "),
        Match::Protocol(p) => format!("meta l4proto {p}"),
        Match::NotProtocol(p) => format!("meta l4proto != {p}"),
        Match::ProtocolNum(p) => format!("meta l4proto {p}"),
        Match::NotProtocolNum(p) => format!("meta l4proto != {p}"),
        Match::SourceNet(n) => format!("{ipv} saddr {n}"),
        Match::NotSourceNet(n) => format!("{ipv} saddr != {n}"),
        Match::DestNet(n) => format!("{ipv} daddr {n}"),
        Match::NotDestNet(n) => format!("{ipv} daddr != {n}"),
        Match::SourceIpSet(n) => format!("{ipv} saddr @{}", legalize_set_name(n)),
        Match::NotSourceIpSet(n) => format!("{ipv} saddr != @{}", legalize_set_name(n)),
        // Named-port sets hold address . protocol . port; `th` reads the port at the same
        // offset for TCP, UDP and SCTP.
        Match::SourceIpPortSet(n) => {
            format!(
                "{ipv} saddr . meta l4proto . th sport @{}",
                legalize_set_name(n)
            )
        }
        Match::NotSourceIpPortSet(n) => {
            format!(
                "{ipv} saddr . meta l4proto . th sport != @{}",
                legalize_set_name(n)
            )
        }
        Match::DestIpSet(n) => format!("{ipv} daddr @{}", legalize_set_name(n)),
        Match::NotDestIpSet(n) => format!("{ipv} daddr != @{}", legalize_set_name(n)),
        Match::DestIpPortSet(n) => {
            format!(
                "{ipv} daddr . meta l4proto . th dport @{}",
                legalize_set_name(n)
            )
        }
        Match::NotDestIpPortSet(n) => {
            format!(
                "{ipv} daddr . meta l4proto . th dport != @{}",
                legalize_set_name(n)
            )
        }
        Match::SourcePorts(p) => format!("{} sport {}", th(), port_set(p)),
        Match::NotSourcePorts(p) => format!("{} sport != {}", th(), port_set(p)),
        Match::DestPort(p) => format!("{} dport {p}", th()),
        Match::DestPorts(p) => format!("{} dport {}", th(), port_set(p)),
        Match::NotDestPorts(p) => format!("{} dport != {}", th(), port_set(p)),
        Match::IcmpType(t) => format!("icmp type {t}"),
        Match::NotIcmpType(t) => format!("icmp type != {t}"),
        // Calico writes `icmp type T code C`, which nft rejects ("No symbol type
        // information"); the code needs its own `icmp code`. The negation is of the pair,
        // as iptables' `! --icmp-type T/C` means, which nft only takes as a set lookup.
        Match::IcmpTypeAndCode(t, c) => format!("icmp type {t} icmp code {c}"),
        Match::NotIcmpTypeAndCode(t, c) => format!("icmp type . icmp code != {{ {t} . {c} }}"),
        Match::Icmpv6Type(t) => format!("icmpv6 type {t}"),
        Match::NotIcmpv6Type(t) => format!("icmpv6 type != {t}"),
        Match::Icmpv6TypeAndCode(t, c) => format!("icmpv6 type {t} icmpv6 code {c}"),
        Match::NotIcmpv6TypeAndCode(t, c) => {
            format!("icmpv6 type . icmpv6 code != {{ {t} . {c} }}")
        }
        Match::Limit { rate, burst } => {
            if *burst > 0 {
                format!("limit rate {rate} burst {burst} packets")
            } else {
                format!("limit rate {rate}")
            }
        }
        Match::InInterfaceVmap(map) => format!("iifname vmap @{}", vmap_name(layer, map)),
        Match::OutInterfaceVmap(map) => format!("oifname vmap @{}", vmap_name(layer, map)),
    }
}

/// The name of a verdict map a rule looks up: always `<layer>-<name>` (Calico's
/// `<LAYER>-LegalizeSetName(name)`, which, unlike chains, has no already-prefixed case).
pub fn vmap_name(layer: &str, map: &str) -> String {
    format!("{layer}-{}", legalize_set_name(map))
}

/// iptables' conntrack "states" DNAT and SNAT are statuses in nft (`ct status dnat`), which
/// is what Calico asks for in nftables mode (`ConntrackStatus`); the rest are states.
fn conntrack(states: &str, negation: &str) -> String {
    let lower = states.to_ascii_lowercase();
    let is_status = |s: &str| s == "dnat" || s == "snat";
    let parts: Vec<&str> = lower.split(',').collect();
    if parts.iter().all(|s| is_status(s)) {
        format!("ct status {negation}{lower}")
    } else if parts.iter().any(|s| is_status(s)) {
        unsupported(&format!("conntrack states mixed with statuses: {states}"))
    } else {
        format!("ct state {negation}{lower}")
    }
}

/// A whole match, Calico's `nftMatch.Render`: the terms in order, joined by spaces.
pub fn nft_criteria(matches: &[Match], ip_version: u8, layer: &str) -> String {
    let transport = transport_protocol(matches);
    matches
        .iter()
        .map(|m| nft_match_in(m, transport, ip_version, layer))
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `snat to`/`dnat to`: Go's `net.JoinHostPort` for the DNAT port.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An action, as Calico renders it; jump and goto targets are namespaced by `layer`.
pub fn nft_action(a: &Action, layer: &str, f: &Features) -> String {
    match a {
        Action::Accept => "accept".into(),
        Action::Drop => "drop".into(),
        Action::Return => "return".into(),
        Action::Jump(t) => format!("jump {}", namespaced(layer, t)),
        Action::Goto(t) => format!("goto {}", namespaced(layer, t)),
        Action::Reject { with } => match with.as_deref() {
            None | Some("") => "reject".into(),
            Some("tcp-reset" | "tcp reset") => "reject with tcp reset".into(),
            Some(w) => unsupported(&format!("reject with {w}")),
        },
        Action::Log { prefix } => format!(r#"log prefix "{prefix}: " level info"#),
        Action::Nflog {
            group,
            prefix,
            size,
        } => {
            if *size < 0 {
                format!(r#"log prefix "{prefix}" group {group}"#)
            } else {
                let snaplen = if *size == 0 { 80 } else { *size };
                format!(r#"log prefix "{prefix}" snaplen {snaplen} group {group}"#)
            }
        }
        Action::SetMark(m) => format!("meta mark set mark or {m:#x}"),
        Action::SetMaskedMark { mark, mask } => {
            format!("meta mark set mark & {:#x} ^ {mark:#x}", !mask)
        }
        Action::ClearMark(m) => format!("meta mark set mark & {:#x}", !m),
        Action::NoTrack => "notrack".into(),
        Action::Snat { to } => {
            let random = if f.snat_fully_random {
                " fully-random"
            } else {
                ""
            };
            format!("snat to {to}{random}")
        }
        Action::Dnat { to, port } => {
            if *port == 0 {
                format!("dnat to {to}")
            } else {
                format!("dnat to {}", join_host_port(to, *port))
            }
        }
        Action::Masq { to_ports } => {
            let random = if f.masq_fully_random {
                " fully-random"
            } else {
                ""
            };
            if to_ports.is_empty() {
                format!("masquerade{random}")
            } else {
                format!("masquerade to :{to_ports}{random}")
            }
        }
        Action::SetConnmark { mark, mask } => {
            if *mask == 0 {
                format!("ct mark set {mark:#x}")
            } else {
                format!("ct mark set ct mark & {:#x} ^ {mark:#x}", !mask)
            }
        }
    }
}

/// The rule text without its comment (Calico's `renderRule`): what is hashed, and what is
/// written before the comment. Every rule with an action counts its packets; a rule with
/// neither match nor action is `continue` (nft refuses an empty rule).
pub fn nft_rule_body(rule: &Rule, ip_version: u8, layer: &str, f: &Features) -> String {
    let mut fragments: Vec<String> = Vec::with_capacity(3);
    let m = nft_criteria(&rule.matches.0, ip_version, layer);
    if !m.is_empty() {
        fragments.push(m);
    }
    if let Some(a) = &rule.action {
        fragments.push("counter".into());
        let a = nft_action(a, layer, f);
        if !a.is_empty() {
            fragments.push(a);
        }
    }
    if fragments.is_empty() {
        return "continue".into();
    }
    fragments.join(" ")
}

/// Anything but `[A-Za-z0-9_ @%+=:,./-]` becomes `_` (Calico's `escapeComment`): the comment
/// is written between double quotes with no escaping.
pub fn escape_comment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_ @%+=:,./-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The rule's comment (Calico's `nftRenderer.comment`): `cali:<hash>;` then the rule's
/// comments, each cut to an equal share of what is left of nft's 128 bytes. `None` when
/// there is nothing to say.
pub fn nft_comment(hash: &str, comments: &[String]) -> Option<String> {
    let mut fragments: Vec<String> = Vec::with_capacity(1 + comments.len());
    if !hash.is_empty() {
        fragments.push(format!("{HASH_COMMENT_PREFIX}{hash};"));
    }
    if !comments.is_empty() {
        let used = fragments.join(" ").len();
        let per_comment = MAX_COMMENT_LENGTH.saturating_sub(used) / comments.len();
        for c in comments {
            let mut c = escape_comment(c);
            // Escaped text is ASCII, so byte lengths are character counts.
            c.truncate(per_comment);
            fragments.push(c);
        }
    }
    let mut all = fragments.join(" ");
    all.truncate(MAX_COMMENT_LENGTH);
    (!all.is_empty()).then_some(all)
}

/// The full rule as written after `add rule <family> calico <chain> `.
pub fn nft_rule(rule: &Rule, hash: &str, ip_version: u8, layer: &str, f: &Features) -> String {
    let body = nft_rule_body(rule, ip_version, layer, f);
    match nft_comment(hash, &rule.comments) {
        Some(c) => format!(r#"{body} comment "{c}""#),
        None => body,
    }
}

/// Calico's per-rule hashes in nftables mode (`generictables.RuleHashes` over
/// `renderRule`): SHA-224 chained from the (namespaced) chain name through each rule's
/// text, base64url, first 16 characters. Position-dependent by design.
pub fn nft_rule_hashes(
    chain_name: &str,
    rules: &[Rule],
    ip_version: u8,
    layer: &str,
    f: &Features,
) -> Vec<String> {
    let mut hash: Vec<u8> = Sha224::digest(chain_name.as_bytes()).to_vec();
    rules
        .iter()
        .map(|r| {
            let text = nft_rule_body(r, ip_version, layer, f);
            let mut h = Sha224::new();
            h.update(&hash);
            h.update(text.as_bytes());
            hash = h.finalize().to_vec();
            let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash);
            enc.chars().take(HASH_LENGTH).collect()
        })
        .collect()
}

/// The chain references of a rule, namespaced: where its jump or goto leads.
pub fn rule_target(rule: &Rule, layer: &str) -> Option<String> {
    rule.action
        .as_ref()
        .and_then(Action::referenced_chain)
        .map(|t| namespaced(layer, t))
}

/// The sets (legalized names) and verdict maps (full names) a rule looks up.
pub fn rule_lookups(rule: &Rule, layer: &str) -> (Vec<String>, Vec<String>) {
    let sets = rule
        .matches
        .ip_set_names()
        .into_iter()
        .map(legalize_set_name)
        .collect();
    let maps = rule
        .matches
        .0
        .iter()
        .filter_map(|m| match m {
            Match::InInterfaceVmap(n) | Match::OutInterfaceVmap(n) => Some(vmap_name(layer, n)),
            _ => None,
        })
        .collect();
    (sets, maps)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;
    use crate::generic::{Chain, MatchCriteria};
    use crate::rules::RulesConfig;
    use crate::rules::dispatch::workload_dispatch_chains;
    use crate::rules::nat::nat_outgoing_chain;
    use crate::rules::static_chains::{
        kernel_hooks, static_filter_forward_append_rules, static_filter_table_chains,
        static_mangle_table_chains, static_nat_table_chains, static_raw_table_chains,
    };

    /// `nft list ruleset` of a Calico node in nftables mode (Calico's
    /// felix/fv/cali-nftables-dump.txt): VXLAN on, default marks, NAT outgoing.
    const DUMP: &str = include_str!("../../testdata/calico-nftables-dump.txt");

    /// One rule of the dump: the hash in its comment and the comments after the hash (the
    /// rule text itself is nft's normalised listing, not what Calico wrote).
    #[derive(Debug, Clone)]
    struct DumpRule {
        hash: String,
        comment: String,
    }

    /// chain → its rules, for every chain of the dump.
    fn parse_dump() -> BTreeMap<String, Vec<DumpRule>> {
        let mut chains: BTreeMap<String, Vec<DumpRule>> = BTreeMap::new();
        let mut current = String::new();
        for line in DUMP.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("chain ") {
                current = rest.trim_end_matches(" {").to_string();
                chains.entry(current.clone()).or_default();
                continue;
            }
            let Some(i) = line.find(" comment \"cali:") else {
                continue;
            };
            let comment = line[i + " comment \"cali:".len()..].trim_end_matches('"');
            let (hash, rest) = comment.split_once(';').unwrap();
            chains.entry(current.clone()).or_default().push(DumpRule {
                hash: hash.to_string(),
                comment: rest.trim_start().to_string(),
            });
        }
        chains
    }

    /// The dump node's settings: VXLAN (tunnel address set, so the tunnel masquerade
    /// rule), DefaultEndpointToHostAction ACCEPT, nftables mode, everything else default.
    fn node_config() -> RulesConfig {
        RulesConfig {
            vxlan_enabled: true,
            endpoint_to_host_action: "ACCEPT".into(),
            vxlan_tunnel_address: Some("192.168.9.1".parse().unwrap()),
            nftables: true,
            ..RulesConfig::default()
        }
    }

    fn find<'a>(chains: &'a [Chain], name: &str) -> &'a Chain {
        chains.iter().find(|c| c.name == name).unwrap()
    }

    /// Our hashes, chain name namespaced as Calico's table layer does.
    fn hashes_of(layer: &str, chain: &Chain) -> Vec<String> {
        nft_rule_hashes(
            &namespaced(layer, &chain.name),
            &chain.rules,
            4,
            layer,
            &Features::default(),
        )
    }

    fn assert_chain_matches_dump(layer: &str, chain: &Chain) {
        let dump = parse_dump();
        let name = namespaced(layer, &chain.name);
        let want = dump
            .get(&name)
            .unwrap_or_else(|| panic!("{name} not in dump"));
        let got = hashes_of(layer, chain);
        let want_hashes: Vec<&str> = want.iter().map(|r| r.hash.as_str()).collect();
        assert_eq!(got, want_hashes, "hashes of {name}");
        for (r, d) in chain.rules.iter().zip(want) {
            let comment = nft_comment(&d.hash, &r.comments).unwrap();
            let expected = if d.comment.is_empty() {
                format!("cali:{};", d.hash)
            } else {
                format!("cali:{}; {}", d.hash, d.comment)
            };
            assert_eq!(comment, expected, "comment in {name}");
        }
    }

    #[test]
    fn static_chains_hash_like_calicos_nftables_dump() {
        let c = node_config();
        let filter = static_filter_table_chains(&c, 4);
        for name in [
            "cali-FORWARD",
            "cali-INPUT",
            "cali-OUTPUT",
            "cali-wl-to-host",
        ] {
            assert_chain_matches_dump(LAYER_FILTER, find(&filter, name));
        }
        let raw = static_raw_table_chains(&c, 4);
        for name in ["cali-PREROUTING", "cali-OUTPUT"] {
            assert_chain_matches_dump(LAYER_RAW, find(&raw, name));
        }
        let mangle = static_mangle_table_chains(&c, 4);
        for name in ["cali-PREROUTING", "cali-POSTROUTING"] {
            assert_chain_matches_dump(LAYER_MANGLE, find(&mangle, name));
        }
        let nat = static_nat_table_chains(&c, 4);
        for name in ["cali-PREROUTING", "cali-POSTROUTING", "cali-OUTPUT"] {
            assert_chain_matches_dump(LAYER_NAT, find(&nat, name));
        }
        let dispatch = workload_dispatch_chains(&c, &[]);
        for chain in &dispatch {
            assert_chain_matches_dump(LAYER_FILTER, chain);
        }
    }

    #[test]
    fn hooks_hash_like_calicos_base_chains() {
        let c = node_config();
        let dump = parse_dump();
        let f = Features::default();
        for h in kernel_hooks(&c, 4) {
            let base = namespaced(h.table, h.kernel_chain);
            let hashed_as = if h.insert {
                base.clone()
            } else {
                format!("{base}*appends*")
            };
            let got = nft_rule_hashes(&hashed_as, &[h.rule()], 4, h.table, &f);
            let want = &dump[&base];
            assert_eq!(got[0], want[0].hash, "hook in {base}");
        }
        let appends = static_filter_forward_append_rules(&c);
        let got = nft_rule_hashes("filter-FORWARD*appends*", &appends, 4, LAYER_FILTER, &f);
        let want: Vec<String> = dump["filter-FORWARD"][1..]
            .iter()
            .map(|r| r.hash.clone())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn rule_text_is_calicos() {
        let c = node_config();
        let f = Features::default();
        let filter = static_filter_table_chains(&c, 4);
        let input = find(&filter, "cali-INPUT");
        let body = |r: &Rule| nft_rule_body(r, 4, LAYER_FILTER, &f);
        assert_eq!(
            body(&input.rules[0]),
            "meta l4proto 17 udp dport { 4789 } ip saddr @cali40all-vxlan-net fib daddr type local counter accept"
        );
        assert_eq!(
            body(&input.rules[2]),
            "iifname cali* counter goto filter-cali-wl-to-host"
        );
        assert_eq!(
            body(&input.rules[4]),
            "counter meta mark set mark & 0xffe4ffff"
        );
        assert_eq!(
            nft_rule(&input.rules[6], "Bw-drvME99fwv09t", 4, LAYER_FILTER, &f),
            r#"meta mark & 0x10000 == 0x10000 counter accept comment "cali:Bw-drvME99fwv09t; Host endpoint policy accepted packet.""#
        );
        let raw = static_raw_table_chains(&c, 4);
        let pre = find(&raw, "cali-PREROUTING");
        let raw_body = |r: &Rule| nft_rule_body(r, 4, LAYER_RAW, &f);
        assert_eq!(
            raw_body(&pre.rules[1]),
            "meta l4proto udp udp dport 4789 counter notrack"
        );
        assert_eq!(
            raw_body(&pre.rules[2]),
            "iifname cali* counter meta mark set mark or 0x80000"
        );
        assert_eq!(
            raw_body(&pre.rules[4]),
            "meta mark & 0x80000 == 0x80000 fib saddr . mark . iif oif 0 counter drop"
        );
        assert_eq!(
            raw_body(&pre.rules[5]),
            "meta mark & 0x80000 == 0 counter jump raw-cali-from-host-endpoint"
        );
        let dispatch = workload_dispatch_chains(&c, &[]);
        assert_eq!(
            nft_rule_body(&dispatch[0].rules[0], 4, LAYER_FILTER, &f),
            "iifname vmap @filter-cali-from-wl-dispatch"
        );
        let mangle = static_mangle_table_chains(&c, 4);
        let post = find(&mangle, "cali-POSTROUTING");
        assert_eq!(
            nft_rule_body(&post.rules[2], 4, LAYER_MANGLE, &f),
            "ct status dnat counter jump mangle-cali-to-host-endpoint"
        );
    }

    #[test]
    fn nat_outgoing_matches_the_dump() {
        let c = node_config();
        let f = Features::default();
        let chain = nat_outgoing_chain(&c, true, 4);
        assert_eq!(
            nft_rule_body(&chain.rules[0], 4, LAYER_NAT, &f),
            "ip saddr @cali40masq-ipam-pools ip daddr != @cali40network-ip-pools counter masquerade fully-random"
        );
        // The dump's hash predates Calico renaming `all-ipam-pools` to `network-ip-pools`
        // (the dump file was edited, the hash was not): with the old name it is Calico's.
        let old = Chain::new(
            "cali-nat-outgoing",
            vec![Rule::new(
                MatchCriteria::new()
                    .source_ip_set("cali40masq-ipam-pools")
                    .not_dest_ip_set("cali40all-ipam-pools"),
                Action::Masq {
                    to_ports: String::new(),
                },
            )],
        );
        assert_eq!(hashes_of(LAYER_NAT, &old), vec!["JjuWIaIfSLZi41Xk"]);
    }

    #[test]
    fn matches_and_actions() {
        let f = Features::default();
        let m = |c: MatchCriteria, v: u8| nft_criteria(&c.0, v, LAYER_FILTER);
        let ports = vec![
            PortRange::single(80),
            PortRange::single(443),
            PortRange {
                first: 8000,
                last: 8100,
            },
        ];
        assert_eq!(
            m(
                MatchCriteria::new()
                    .protocol("tcp")
                    .dest_ports(ports.clone()),
                4
            ),
            "meta l4proto tcp tcp dport { 80, 443, 8000-8100 }"
        );
        assert_eq!(
            m(
                MatchCriteria::new()
                    .protocol_num(132)
                    .not_source_ports(ports),
                4
            ),
            "meta l4proto 132 sctp sport != { 80, 443, 8000-8100 }"
        );
        assert_eq!(
            m(
                MatchCriteria::new()
                    .source_net("fd00::/64")
                    .not_dest_ip_set("cali60s:abc")
                    .dest_ip_port_set("cali60n:x"),
                6
            ),
            "ip6 saddr fd00::/64 ip6 daddr != @cali60s-abc ip6 daddr . meta l4proto . th dport @cali60n-x"
        );
        assert_eq!(
            m(MatchCriteria::new().icmp_type_and_code(3, 1), 4),
            "icmp type 3 icmp code 1"
        );
        assert_eq!(
            m(MatchCriteria::new().not_icmpv6_type_and_code(1, 3), 6),
            "icmpv6 type . icmpv6 code != { 1 . 3 }"
        );
        assert_eq!(
            m(MatchCriteria::new().not_conntrack_state("DNAT"), 4),
            "ct status != dnat"
        );
        assert_eq!(
            m(MatchCriteria::new().conntrack_state("INVALID"), 4),
            "ct state invalid"
        );
        assert_eq!(
            m(MatchCriteria::new().limit("50/minute", 5), 4),
            "limit rate 50/minute burst 5 packets"
        );
        assert_eq!(
            m(
                MatchCriteria::new()
                    .out_interface("vxlan.calico")
                    .not_src_addr_type("LOCAL", true)
                    .src_addr_type("LOCAL", false),
                4
            ),
            "oifname vxlan.calico fib saddr . oif type != local fib saddr type local"
        );
        let a = |a: Action| nft_action(&a, LAYER_NAT, &f);
        assert_eq!(
            a(Action::SetMaskedMark {
                mark: 0x10000,
                mask: 0x30000
            }),
            "meta mark set mark & 0xfffcffff ^ 0x10000"
        );
        assert_eq!(
            a(Action::Dnat {
                to: "fd00::1".into(),
                port: 80
            }),
            "dnat to [fd00::1]:80"
        );
        assert_eq!(
            a(Action::Masq {
                to_ports: "1024-65535".into()
            }),
            "masquerade to :1024-65535 fully-random"
        );
        assert_eq!(
            a(Action::Goto("nat-cali-x".into())),
            "goto nat-cali-x",
            "already namespaced"
        );
        assert_eq!(
            a(Action::Nflog {
                group: 1,
                prefix: "API0|gnp/x".into(),
                size: 0
            }),
            r#"log prefix "API0|gnp/x" snaplen 80 group 1"#
        );
        assert_eq!(
            a(Action::Log {
                prefix: "calico-packet".into()
            }),
            r#"log prefix "calico-packet: " level info"#
        );
        assert_eq!(
            nft_rule_body(&Rule::default(), 4, LAYER_FILTER, &f),
            "continue"
        );
    }

    #[test]
    fn comments_share_the_128_bytes() {
        let long = "x".repeat(200);
        let c = nft_comment("0123456789abcdef", &[long.clone(), "a\"b".into()]).unwrap();
        assert!(c.starts_with("cali:0123456789abcdef; x"));
        assert!(c.len() <= MAX_COMMENT_LENGTH);
        // (128 - 22) / 2 = 53 bytes each.
        assert!(c.ends_with(&format!("{} a_b", "x".repeat(53))));
        assert_eq!(nft_comment("", &[]), None);
    }
}
