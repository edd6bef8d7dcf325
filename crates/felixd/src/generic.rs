//! The backend-neutral rule model (Calico's `generictables`): chains of rules, each a list of
//! match terms and an action, rendered for iptables-restore (text identical to Calico's, so the
//! per-rule hashes match the ones Calico writes) or for nft.

use std::fmt::Write as _;

use base64::Engine as _;
use sha2::{Digest, Sha224};

/// Address types for `-m addrtype`.
pub const ADDR_TYPE_LOCAL: &str = "LOCAL";

/// A port range (`first == last` for a single port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(p: u16) -> PortRange {
        PortRange { first: p, last: p }
    }
}

/// One match condition, in the order the rule builder added it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    MarkClear(u32),
    MarkNotClear(u32),
    /// `mark & mask == mark` (MarkSingleBitSet is `MarkMatchesWithMask(bit, bit)`).
    MarkMatchesWithMask(u32, u32),
    NotMarkMatchesWithMask(u32, u32),
    InInterface(String),
    OutInterface(String),
    RpfCheckFailed,
    IpvsConnection,
    NotIpvsConnection,
    SrcAddrType {
        addr_type: String,
        limit_iface_out: bool,
    },
    NotSrcAddrType {
        addr_type: String,
        limit_iface_out: bool,
    },
    DestAddrType(String),
    NotDestAddrType(String),
    ConntrackState(String),
    NotConntrackState(String),
    Protocol(String),
    NotProtocol(String),
    ProtocolNum(u8),
    NotProtocolNum(u8),
    SourceNet(String),
    NotSourceNet(String),
    DestNet(String),
    NotDestNet(String),
    SourceIpSet(String),
    NotSourceIpSet(String),
    SourceIpPortSet(String),
    NotSourceIpPortSet(String),
    DestIpSet(String),
    NotDestIpSet(String),
    DestIpPortSet(String),
    NotDestIpPortSet(String),
    SourcePorts(Vec<PortRange>),
    NotSourcePorts(Vec<PortRange>),
    DestPort(u16),
    DestPorts(Vec<PortRange>),
    NotDestPorts(Vec<PortRange>),
    IcmpType(u8),
    NotIcmpType(u8),
    IcmpTypeAndCode(u8, u8),
    NotIcmpTypeAndCode(u8, u8),
    Icmpv6Type(u8),
    NotIcmpv6Type(u8),
    Icmpv6TypeAndCode(u8, u8),
    NotIcmpv6TypeAndCode(u8, u8),
    Limit {
        rate: String,
        burst: u16,
    },
    /// nftables only: `iifname vmap @<map>`.
    InInterfaceVmap(String),
    /// nftables only: `oifname vmap @<map>`.
    OutInterfaceVmap(String),
}

/// A rule's match: terms in order (empty matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MatchCriteria(pub Vec<Match>);

impl MatchCriteria {
    pub fn new() -> MatchCriteria {
        MatchCriteria(Vec::new())
    }

    fn with(mut self, m: Match) -> MatchCriteria {
        self.0.push(m);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn mark_clear(self, mark: u32) -> Self {
        self.with(Match::MarkClear(mark))
    }
    pub fn mark_not_clear(self, mark: u32) -> Self {
        self.with(Match::MarkNotClear(mark))
    }
    pub fn mark_single_bit_set(self, mark: u32) -> Self {
        debug_assert_eq!(mark.count_ones(), 1, "a single mark bit");
        self.with(Match::MarkMatchesWithMask(mark, mark))
    }
    pub fn mark_matches_with_mask(self, mark: u32, mask: u32) -> Self {
        self.with(Match::MarkMatchesWithMask(mark, mask))
    }
    pub fn not_mark_matches_with_mask(self, mark: u32, mask: u32) -> Self {
        self.with(Match::NotMarkMatchesWithMask(mark, mask))
    }
    pub fn in_interface(self, iface: &str) -> Self {
        self.with(Match::InInterface(iface.to_string()))
    }
    pub fn out_interface(self, iface: &str) -> Self {
        self.with(Match::OutInterface(iface.to_string()))
    }
    pub fn rpf_check_failed(self) -> Self {
        self.with(Match::RpfCheckFailed)
    }
    pub fn src_addr_type(self, t: &str, limit_iface_out: bool) -> Self {
        self.with(Match::SrcAddrType {
            addr_type: t.to_string(),
            limit_iface_out,
        })
    }
    pub fn not_src_addr_type(self, t: &str, limit_iface_out: bool) -> Self {
        self.with(Match::NotSrcAddrType {
            addr_type: t.to_string(),
            limit_iface_out,
        })
    }
    pub fn dest_addr_type(self, t: &str) -> Self {
        self.with(Match::DestAddrType(t.to_string()))
    }
    pub fn not_dest_addr_type(self, t: &str) -> Self {
        self.with(Match::NotDestAddrType(t.to_string()))
    }
    pub fn conntrack_state(self, s: &str) -> Self {
        self.with(Match::ConntrackState(s.to_string()))
    }
    pub fn not_conntrack_state(self, s: &str) -> Self {
        self.with(Match::NotConntrackState(s.to_string()))
    }
    pub fn protocol(self, p: &str) -> Self {
        self.with(Match::Protocol(p.to_string()))
    }
    pub fn not_protocol(self, p: &str) -> Self {
        self.with(Match::NotProtocol(p.to_string()))
    }
    pub fn protocol_num(self, p: u8) -> Self {
        self.with(Match::ProtocolNum(p))
    }
    pub fn not_protocol_num(self, p: u8) -> Self {
        self.with(Match::NotProtocolNum(p))
    }
    pub fn source_net(self, n: &str) -> Self {
        self.with(Match::SourceNet(n.to_string()))
    }
    pub fn not_source_net(self, n: &str) -> Self {
        self.with(Match::NotSourceNet(n.to_string()))
    }
    pub fn dest_net(self, n: &str) -> Self {
        self.with(Match::DestNet(n.to_string()))
    }
    pub fn not_dest_net(self, n: &str) -> Self {
        self.with(Match::NotDestNet(n.to_string()))
    }
    pub fn source_ip_set(self, name: &str) -> Self {
        self.with(Match::SourceIpSet(name.to_string()))
    }
    pub fn not_source_ip_set(self, name: &str) -> Self {
        self.with(Match::NotSourceIpSet(name.to_string()))
    }
    pub fn source_ip_port_set(self, name: &str) -> Self {
        self.with(Match::SourceIpPortSet(name.to_string()))
    }
    pub fn not_source_ip_port_set(self, name: &str) -> Self {
        self.with(Match::NotSourceIpPortSet(name.to_string()))
    }
    pub fn dest_ip_set(self, name: &str) -> Self {
        self.with(Match::DestIpSet(name.to_string()))
    }
    pub fn not_dest_ip_set(self, name: &str) -> Self {
        self.with(Match::NotDestIpSet(name.to_string()))
    }
    pub fn dest_ip_port_set(self, name: &str) -> Self {
        self.with(Match::DestIpPortSet(name.to_string()))
    }
    pub fn not_dest_ip_port_set(self, name: &str) -> Self {
        self.with(Match::NotDestIpPortSet(name.to_string()))
    }
    pub fn source_ports(self, ports: Vec<PortRange>) -> Self {
        self.with(Match::SourcePorts(ports))
    }
    pub fn not_source_ports(self, ports: Vec<PortRange>) -> Self {
        self.with(Match::NotSourcePorts(ports))
    }
    pub fn dest_port(self, p: u16) -> Self {
        self.with(Match::DestPort(p))
    }
    pub fn dest_ports(self, ports: Vec<PortRange>) -> Self {
        self.with(Match::DestPorts(ports))
    }
    pub fn not_dest_ports(self, ports: Vec<PortRange>) -> Self {
        self.with(Match::NotDestPorts(ports))
    }
    pub fn icmp_type(self, t: u8) -> Self {
        self.with(Match::IcmpType(t))
    }
    pub fn not_icmp_type(self, t: u8) -> Self {
        self.with(Match::NotIcmpType(t))
    }
    pub fn icmp_type_and_code(self, t: u8, c: u8) -> Self {
        self.with(Match::IcmpTypeAndCode(t, c))
    }
    pub fn not_icmp_type_and_code(self, t: u8, c: u8) -> Self {
        self.with(Match::NotIcmpTypeAndCode(t, c))
    }
    pub fn icmpv6_type(self, t: u8) -> Self {
        self.with(Match::Icmpv6Type(t))
    }
    pub fn not_icmpv6_type(self, t: u8) -> Self {
        self.with(Match::NotIcmpv6Type(t))
    }
    pub fn icmpv6_type_and_code(self, t: u8, c: u8) -> Self {
        self.with(Match::Icmpv6TypeAndCode(t, c))
    }
    pub fn not_icmpv6_type_and_code(self, t: u8, c: u8) -> Self {
        self.with(Match::NotIcmpv6TypeAndCode(t, c))
    }
    pub fn limit(self, rate: &str, burst: u16) -> Self {
        self.with(Match::Limit {
            rate: rate.to_string(),
            burst,
        })
    }
    pub fn in_interface_vmap(self, map: &str) -> Self {
        self.with(Match::InInterfaceVmap(map.to_string()))
    }
    pub fn out_interface_vmap(self, map: &str) -> Self {
        self.with(Match::OutInterfaceVmap(map.to_string()))
    }

    /// This match followed by another's terms.
    pub fn combined(mut self, other: &MatchCriteria) -> MatchCriteria {
        self.0.extend(other.0.iter().cloned());
        self
    }

    /// The IP sets the match refers to (by dataplane name).
    pub fn ip_set_names(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|m| match m {
                Match::SourceIpSet(n)
                | Match::NotSourceIpSet(n)
                | Match::SourceIpPortSet(n)
                | Match::NotSourceIpPortSet(n)
                | Match::DestIpSet(n)
                | Match::NotDestIpSet(n)
                | Match::DestIpPortSet(n)
                | Match::NotDestIpPortSet(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
    Reject {
        with: Option<String>,
    },
    Log {
        prefix: String,
    },
    Nflog {
        group: u16,
        prefix: String,
        size: i32,
    },
    SetMark(u32),
    SetMaskedMark {
        mark: u32,
        mask: u32,
    },
    ClearMark(u32),
    NoTrack,
    Snat {
        to: String,
    },
    Dnat {
        to: String,
        port: u16,
    },
    Masq {
        to_ports: String,
    },
    SetConnmark {
        mark: u32,
        mask: u32,
    },
}

impl Action {
    /// The chain this action refers to, if any.
    pub fn referenced_chain(&self) -> Option<&str> {
        match self {
            Action::Jump(t) | Action::Goto(t) => Some(t),
            _ => None,
        }
    }
}

/// One rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Rule {
    pub matches: MatchCriteria,
    pub action: Option<Action>,
    pub comments: Vec<String>,
}

impl Rule {
    pub fn new(matches: MatchCriteria, action: Action) -> Rule {
        Rule {
            matches,
            action: Some(action),
            comments: Vec::new(),
        }
    }

    pub fn action(action: Action) -> Rule {
        Rule::new(MatchCriteria::new(), action)
    }

    pub fn comment(mut self, c: impl Into<String>) -> Rule {
        self.comments.push(c.into());
        self
    }
}

/// A chain Calico owns (or a kernel chain's inserted/appended rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn new(name: impl Into<String>, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            rules,
        }
    }

    /// The chains this one jumps or goes to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .filter_map(|r| r.action.as_ref().and_then(Action::referenced_chain))
    }
}

/// What the kernel's iptables can do, as far as rendering cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub snat_fully_random: bool,
    pub masq_fully_random: bool,
    pub nflog_size: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            snat_fully_random: true,
            masq_fully_random: true,
            nflog_size: true,
        }
    }
}

/// iptables' multiport syntax: `80,443,8000:8100`.
fn multiport(ports: &[PortRange]) -> String {
    ports
        .iter()
        .map(|p| {
            if p.first == p.last {
                p.first.to_string()
            } else {
                format!("{}:{}", p.first, p.last)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The iptables text of one match term, exactly as Calico writes it.
pub fn iptables_match(m: &Match) -> String {
    match m {
        Match::MarkClear(mark) => format!("-m mark --mark 0/{mark:#x}"),
        Match::MarkNotClear(mark) => format!("-m mark ! --mark 0/{mark:#x}"),
        Match::MarkMatchesWithMask(mark, mask) => format!("-m mark --mark {mark:#x}/{mask:#x}"),
        Match::NotMarkMatchesWithMask(mark, mask) => {
            format!("-m mark ! --mark {mark:#x}/{mask:#x}")
        }
        Match::InInterface(i) => format!("--in-interface {i}"),
        Match::OutInterface(i) => format!("--out-interface {i}"),
        Match::RpfCheckFailed => "-m rpfilter --invert --validmark".into(),
        Match::IpvsConnection => "-m ipvs --ipvs".into(),
        Match::NotIpvsConnection => "-m ipvs ! --ipvs".into(),
        Match::SrcAddrType {
            addr_type,
            limit_iface_out,
        } => {
            if *limit_iface_out {
                format!("-m addrtype --src-type {addr_type} --limit-iface-out")
            } else {
                format!("-m addrtype --src-type {addr_type}")
            }
        }
        Match::NotSrcAddrType {
            addr_type,
            limit_iface_out,
        } => {
            if *limit_iface_out {
                format!("-m addrtype ! --src-type {addr_type} --limit-iface-out")
            } else {
                format!("-m addrtype ! --src-type {addr_type}")
            }
        }
        Match::DestAddrType(t) => format!("-m addrtype --dst-type {t}"),
        Match::NotDestAddrType(t) => format!("-m addrtype ! --dst-type {t}"),
        Match::ConntrackState(s) => format!("-m conntrack --ctstate {s}"),
        Match::NotConntrackState(s) => format!("-m conntrack ! --ctstate {s}"),
        Match::Protocol(p) => format!("-p {p}"),
        Match::NotProtocol(p) => format!("! -p {p}"),
        Match::ProtocolNum(p) => format!("-p {p}"),
        Match::NotProtocolNum(p) => format!("! -p {p}"),
        Match::SourceNet(n) => format!("--source {n}"),
        Match::NotSourceNet(n) => format!("! --source {n}"),
        Match::DestNet(n) => format!("--destination {n}"),
        Match::NotDestNet(n) => format!("! --destination {n}"),
        Match::SourceIpSet(n) => format!("-m set --match-set {n} src"),
        Match::NotSourceIpSet(n) => format!("-m set ! --match-set {n} src"),
        Match::SourceIpPortSet(n) => format!("-m set --match-set {n} src,src"),
        Match::NotSourceIpPortSet(n) => format!("-m set ! --match-set {n} src,src"),
        Match::DestIpSet(n) => format!("-m set --match-set {n} dst"),
        Match::NotDestIpSet(n) => format!("-m set ! --match-set {n} dst"),
        Match::DestIpPortSet(n) => format!("-m set --match-set {n} dst,dst"),
        Match::NotDestIpPortSet(n) => format!("-m set ! --match-set {n} dst,dst"),
        Match::SourcePorts(p) => format!("-m multiport --source-ports {}", multiport(p)),
        Match::NotSourcePorts(p) => format!("-m multiport ! --source-ports {}", multiport(p)),
        Match::DestPort(p) => format!("--dport {p}"),
        Match::DestPorts(p) => format!("-m multiport --destination-ports {}", multiport(p)),
        Match::NotDestPorts(p) => {
            format!("-m multiport ! --destination-ports {}", multiport(p))
        }
        Match::IcmpType(t) => format!("-m icmp --icmp-type {t}"),
        Match::NotIcmpType(t) => format!("-m icmp ! --icmp-type {t}"),
        Match::IcmpTypeAndCode(t, c) => format!("-m icmp --icmp-type {t}/{c}"),
        Match::NotIcmpTypeAndCode(t, c) => format!("-m icmp ! --icmp-type {t}/{c}"),
        Match::Icmpv6Type(t) => format!("-m icmp6 --icmpv6-type {t}"),
        Match::NotIcmpv6Type(t) => format!("-m icmp6 ! --icmpv6-type {t}"),
        Match::Icmpv6TypeAndCode(t, c) => format!("-m icmp6 --icmpv6-type {t}/{c}"),
        Match::NotIcmpv6TypeAndCode(t, c) => format!("-m icmp6 ! --icmpv6-type {t}/{c}"),
        Match::Limit { rate, burst } => {
            if *burst == 0 {
                format!("-m limit --limit {rate}")
            } else {
                format!("-m limit --limit {rate} --limit-burst {burst}")
            }
        }
        // The dispatch maps exist only in nftables; iptables renders dispatch trees instead.
        Match::InInterfaceVmap(_) | Match::OutInterfaceVmap(_) => String::new(),
    }
}

/// The iptables text of an action, exactly as Calico writes it.
pub fn iptables_action(a: &Action, f: &Features) -> String {
    match a {
        Action::Accept => "--jump ACCEPT".into(),
        Action::Drop => "--jump DROP".into(),
        Action::Return => "--jump RETURN".into(),
        Action::Jump(t) => format!("--jump {t}"),
        Action::Goto(t) => format!("--goto {t}"),
        Action::Reject { with } => match with {
            Some(w) => format!("--jump REJECT --reject-with {w}"),
            None => "--jump REJECT".into(),
        },
        Action::Log { prefix } => format!(r#"--jump LOG --log-prefix "{prefix}: " --log-level 5"#),
        Action::Nflog {
            group,
            prefix,
            size,
        } => {
            let size_v = if *size != 0 { *size } else { 80 };
            if *size < 0 {
                format!("--jump NFLOG --nflog-group {group} --nflog-prefix {prefix}")
            } else if f.nflog_size {
                format!(
                    "--jump NFLOG --nflog-group {group} --nflog-prefix {prefix} --nflog-size {size_v}"
                )
            } else {
                format!(
                    "--jump NFLOG --nflog-group {group} --nflog-prefix {prefix} --nflog-range {size_v}"
                )
            }
        }
        Action::SetMark(m) => format!("--jump MARK --set-mark {m:#x}/{m:#x}"),
        Action::SetMaskedMark { mark, mask } => {
            format!("--jump MARK --set-mark {mark:#x}/{mask:#x}")
        }
        Action::ClearMark(m) => format!("--jump MARK --set-mark 0/{m:#x}"),
        Action::NoTrack => "--jump NOTRACK".into(),
        Action::Snat { to } => format!(
            "--jump SNAT --to-source {to}{}",
            if f.snat_fully_random {
                " --random-fully"
            } else {
                ""
            }
        ),
        Action::Dnat { to, port } => {
            if *port == 0 {
                format!("--jump DNAT --to-destination {to}")
            } else if to.contains(':') {
                format!("--jump DNAT --to-destination [{to}]:{port}")
            } else {
                format!("--jump DNAT --to-destination {to}:{port}")
            }
        }
        Action::Masq { to_ports } => {
            let random = if f.masq_fully_random {
                " --random-fully"
            } else {
                ""
            };
            if to_ports.is_empty() {
                format!("--jump MASQUERADE{random}")
            } else {
                format!("--jump MASQUERADE --to-ports {to_ports}{random}")
            }
        }
        Action::SetConnmark { mark, mask } => {
            let mask = if *mask == 0 { u32::MAX } else { *mask };
            format!("--jump CONNMARK --set-mark {mark:#x}/{mask:#x}")
        }
    }
}

/// The prefix of the comment that carries each rule's hash: how Calico (and we) recognise
/// our rules in chains we share with others.
pub const HASH_COMMENT_PREFIX: &str = "cali:";
/// Characters of the hash kept in the comment.
pub const HASH_LENGTH: usize = 16;
/// iptables' limit on a comment's length.
const MAX_COMMENT_LENGTH: usize = 256;

/// Anything but shell-safe characters becomes `_`, as Calico does (iptables-restore has no
/// escaping that survives).
pub fn escape_comment(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " _-.,:/=+@%".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.chars().take(MAX_COMMENT_LENGTH).collect()
}

/// `-A <chain> [hash comment] [comments] [match] [action]`; `hash` "HASH" is the form used for
/// hashing, "" renders no hash comment.
pub fn iptables_render(
    verb: &str,
    chain: &str,
    position: Option<usize>,
    rule: &Rule,
    hash: &str,
    f: &Features,
) -> String {
    let mut s = String::with_capacity(96);
    s.push_str(verb);
    s.push(' ');
    s.push_str(chain);
    if let Some(p) = position {
        let _ = write!(s, " {p}");
    }
    match hash {
        "" => {}
        "HASH" => s.push_str(" HASH"),
        h => {
            let _ = write!(s, r#" -m comment --comment "{HASH_COMMENT_PREFIX}{h}""#);
        }
    }
    for c in &rule.comments {
        let _ = write!(s, r#" -m comment --comment "{}""#, escape_comment(c));
    }
    let m: Vec<String> = rule
        .matches
        .0
        .iter()
        .map(iptables_match)
        .filter(|t| !t.is_empty())
        .collect();
    if !m.is_empty() {
        s.push(' ');
        s.push_str(&m.join(" "));
    }
    if let Some(a) = &rule.action {
        s.push(' ');
        s.push_str(&iptables_action(a, f));
    }
    s
}

/// Calico's per-rule hashes: SHA-224 chained from the chain's name through each rule's text,
/// base64url, first 16 characters. Position-dependent by design.
pub fn rule_hashes(chain: &Chain, f: &Features) -> Vec<String> {
    let mut hash: Vec<u8> = Sha224::digest(chain.name.as_bytes()).to_vec();
    chain
        .rules
        .iter()
        .map(|r| {
            let text = iptables_render("-A", &chain.name, None, r, "HASH", f);
            let mut h = Sha224::new();
            h.update(&hash);
            h.update(text.as_bytes());
            hash = h.finalize().to_vec();
            let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash);
            enc[..HASH_LENGTH].to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_calicos() {
        // From Calico's own iptables-save output (felix/fv/cali-iptables-dump.txt).
        let f = Features::default();
        let pre = Chain::new(
            "PREROUTING",
            vec![Rule::action(Action::Jump("cali-PREROUTING".into()))],
        );
        assert_eq!(rule_hashes(&pre, &f), vec!["6gwbT8clXdHdC1b1"]);
        let out = Chain::new(
            "cali-OUTPUT",
            vec![
                Rule::action(Action::ClearMark(0x1b0000)),
                Rule::action(Action::Jump("cali-to-host-endpoint".into())),
            ],
        );
        assert_eq!(
            rule_hashes(&out, &f),
            vec!["clI8WObfCl4yhr60", "ZbkN6P8OdRcBRPpU"]
        );
        let raw_pre = Chain::new(
            "cali-PREROUTING",
            vec![
                Rule::action(Action::ClearMark(0x1b0000)),
                Rule::new(
                    MatchCriteria::new().protocol("udp").dest_port(4789),
                    Action::NoTrack,
                ),
                Rule::new(
                    MatchCriteria::new().in_interface("cali+"),
                    Action::SetMark(0x80000),
                ),
            ],
        );
        assert_eq!(
            rule_hashes(&raw_pre, &f),
            vec!["DQ6LK2guiBRMyrLK", "sIsu2aAqNN6K3YYn", "W0qKAga6QivxLxL1"]
        );
    }

    #[test]
    fn comments_are_escaped_and_rendered_after_the_hash() {
        let r = Rule::new(
            MatchCriteria::new().mark_single_bit_set(0x10000),
            Action::Accept,
        )
        .comment("Policy explicitly accepted packet.");
        assert_eq!(
            iptables_render(
                "-A",
                "FORWARD",
                None,
                &r,
                "S93hcgKJrXEqnTfs",
                &Features::default()
            ),
            r#"-A FORWARD -m comment --comment "cali:S93hcgKJrXEqnTfs" -m comment --comment "Policy explicitly accepted packet." -m mark --mark 0x10000/0x10000 --jump ACCEPT"#
        );
        assert_eq!(escape_comment("a\"b$c"), "a_b_c");
    }
}
