//! Policy and profile chains, and the rendering of each policy rule (Calico's
//! `felix/rules/policy.go` and `felix/rules/nflogprefix.go`).
//!
//! Every policy becomes a `cali-pi-`/`cali-po-` chain pair and every profile a
//! `cali-pri-`/`cali-pro-` pair. Each datamodel rule becomes one or more iptables rules: a rule
//! that matches and sets the accept/pass/drop mark, then the rules that act on that mark. The
//! text, the order of match terms, the comments and the chain names all follow Calico exactly,
//! because they feed the per-rule hashes ([`crate::generic::rule_hashes`]): a node taken over
//! from Calico keeps its policy rules instead of having every chain rewritten.

use crate::generic::{Action, Chain, MatchCriteria, PortRange, Rule};

use super::{
    IcmpMatch, MAX_CHAIN_NAME_LENGTH, NFLOG_INBOUND_GROUP, NFLOG_OUTBOUND_GROUP,
    POLICY_INBOUND_PREFIX, POLICY_OUTBOUND_PREFIX, PROFILE_INBOUND_PREFIX, PROFILE_OUTBOUND_PREFIX,
    ParsedRule, PolicyId, PolicyRules, ProtocolMatch, RulesConfig, ipset_name, length_limited_id,
};

/// nftables' limit on a chain name (`knftables.NameLengthMax`): long enough that Calico's
/// policy and profile chain names are never hashed in nftables mode.
pub const NFT_MAX_CHAIN_NAME_LENGTH: usize = 256;

/// The kernel's limit on an NFLOG prefix, including the terminating NUL.
pub const NFLOG_PREFIX_MAX_LENGTH: usize = 64;
/// Prefixes of this length or more are hashed (so that a user cannot spoof a hashed prefix).
const NFLOG_PREFIX_MAX_LENGTH_WO_TERM: usize = NFLOG_PREFIX_MAX_LENGTH - 1;
/// Characters of an over-long prefix kept before the hash.
const HASHED_PREFIX_PREFIX_LEN: usize = 10;
/// Characters of an over-long prefix kept after the hash.
const HASHED_PREFIX_SUFFIX_LEN: usize = 10;
/// Length of the hash in a hashed prefix (the whole thing is then exactly 63 characters).
const NFLOG_HASH_LEN: usize =
    NFLOG_PREFIX_MAX_LENGTH_WO_TERM - HASHED_PREFIX_PREFIX_LEN - HASHED_PREFIX_SUFFIX_LEN - 1;

/// iptables' multiport match has 15 port slots; a single port takes one, a range two.
const MULTIPORT_SLOTS: usize = 15;

/// The LOG prefix when the configuration leaves it empty.
const DEFAULT_LOG_PREFIX: &str = "calico-packet";

/// The owner kind Calico gives profiles in LOG prefixes (`%k`).
const PROFILE_KIND_SHORT_NAME: &str = "pro";

/// Which way a rule applies, relative to the endpoint (Calico's `RuleDir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleDir {
    Ingress,
    Egress,
}

impl RuleDir {
    /// The letter in NFLOG prefixes: `I` or `E`.
    pub fn code(self) -> char {
        match self {
            RuleDir::Ingress => 'I',
            RuleDir::Egress => 'E',
        }
    }

    /// The NFLOG group flow logs read this direction's verdicts from.
    pub fn nflog_group(self) -> u16 {
        match self {
            RuleDir::Ingress => NFLOG_INBOUND_GROUP,
            RuleDir::Egress => NFLOG_OUTBOUND_GROUP,
        }
    }

    /// The word in chain comments.
    fn word(self) -> &'static str {
        match self {
            RuleDir::Ingress => "ingress",
            RuleDir::Egress => "egress",
        }
    }
}

/// A verdict as NFLOG prefixes spell it (Calico's `RuleAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    Allow,
    Deny,
    Pass,
}

impl RuleAction {
    /// The letter in NFLOG prefixes: `A`, `D` or `P`.
    pub fn code(self) -> char {
        match self {
            RuleAction::Allow => 'A',
            RuleAction::Deny => 'D',
            RuleAction::Pass => 'P',
        }
    }
}

/// Who a rule belongs to. Calico passes the owner type (`RuleOwnerTypePolicy`/`Profile`), the
/// owner's ID and the tier separately; they always travel together, so here they are one value.
/// The identity is needed for NFLOG prefixes (flow logs) and `%`-specifiers in LOG prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleOwner<'a> {
    Policy { id: &'a PolicyId, tier: &'a str },
    Profile { name: &'a str },
}

impl RuleOwner<'_> {
    /// The letter in NFLOG prefixes: `P` (policy) or `R` (profile).
    pub fn code(&self) -> char {
        match *self {
            RuleOwner::Policy { .. } => 'P',
            RuleOwner::Profile { .. } => 'R',
        }
    }

    /// Calico's `IDMaker.ID()`: `np/<ns>/<name>`, `gnp/<name>`, or the profile's name.
    pub fn id(&self) -> String {
        match *self {
            RuleOwner::Policy { id, .. } => id.id(),
            RuleOwner::Profile { name } => name.to_string(),
        }
    }

    /// `%k` in LOG prefixes: the policy kind's short name, or `pro`.
    fn kind(&self) -> &str {
        match *self {
            RuleOwner::Policy { id, .. } => id.kind.as_str(),
            RuleOwner::Profile { .. } => PROFILE_KIND_SHORT_NAME,
        }
    }

    /// `%n` in LOG prefixes.
    fn name(&self) -> &str {
        match *self {
            RuleOwner::Policy { id, .. } => id.name.as_str(),
            RuleOwner::Profile { name } => name,
        }
    }

    /// `%p` in LOG prefixes: `<ns>/<name>` for namespaced policies, else the name.
    fn qualified_name(&self) -> String {
        match *self {
            RuleOwner::Policy { id, .. } if !id.namespace.is_empty() => {
                format!("{}/{}", id.namespace, id.name)
            }
            _ => self.name().to_string(),
        }
    }

    /// `%t` in LOG prefixes; profiles belong to no tier.
    fn tier(&self) -> &str {
        match *self {
            RuleOwner::Policy { tier, .. } => tier,
            RuleOwner::Profile { .. } => "",
        }
    }
}

/// The full Kubernetes kind for a policy kind's short name, as Calico writes it in chain
/// comments (`GlobalNetworkPolicy default.foo ingress`). Unknown kinds are used as they are,
/// mirroring Calico's `KindShortName`, which leaves unknown kinds unshortened.
pub fn policy_kind_name(kind: &str) -> &str {
    match kind {
        "np" => "NetworkPolicy",
        "gnp" => "GlobalNetworkPolicy",
        "snp" => "StagedNetworkPolicy",
        "sgnp" => "StagedGlobalNetworkPolicy",
        "sknp" => "StagedKubernetesNetworkPolicy",
        "knp" => "KubernetesNetworkPolicy",
        "kcnp" => "KubernetesClusterNetworkPolicy",
        other => other,
    }
}

/// Whether a policy kind is a staged one (Calico's `model.KindIsStaged`): staged policies only
/// feed flow logs' "what if" and are never programmed.
pub fn is_staged_kind(kind: &str) -> bool {
    matches!(
        policy_kind_name(kind),
        "StagedNetworkPolicy" | "StagedGlobalNetworkPolicy" | "StagedKubernetesNetworkPolicy"
    )
}

fn max_chain_name_length(nftables: bool) -> usize {
    if nftables {
        NFT_MAX_CHAIN_NAME_LENGTH
    } else {
        MAX_CHAIN_NAME_LENGTH
    }
}

/// A policy's chain name (Calico's `PolicyChainName`): `prefix` + the policy's ID, hashed to fit
/// iptables' 28 characters when too long.
pub fn policy_chain_name(prefix: &str, id: &PolicyId, nftables: bool) -> String {
    length_limited_id(prefix, &id.id(), max_chain_name_length(nftables))
}

/// A profile's chain name (Calico's `ProfileChainName`): `prefix` + the profile's name, hashed
/// to fit iptables' 28 characters when too long.
pub fn profile_chain_name(prefix: &str, profile_name: &str, nftables: bool) -> String {
    length_limited_id(prefix, profile_name, max_chain_name_length(nftables))
}

/// The comment on a policy chain's first rule: `<Kind> [<ns>/]<name> ingress|egress`.
fn policy_chain_comment(id: &PolicyId, dir: RuleDir) -> String {
    let kind = policy_kind_name(&id.kind);
    if id.namespace.is_empty() {
        format!("{kind} {} {}", id.name, dir.word())
    } else {
        format!("{kind} {}/{} {}", id.namespace, id.name, dir.word())
    }
}

/// A policy's inbound (`cali-pi-`) and outbound (`cali-po-`) chains, in that order (Calico's
/// `PolicyToIptablesChains`). Staged policies render no chains at all.
pub fn policy_chains(
    cfg: &RulesConfig,
    id: &PolicyId,
    policy: &PolicyRules,
    ip_version: u8,
) -> Vec<Chain> {
    if policy.staged || is_staged_kind(&id.kind) {
        return Vec::new();
    }
    let owner = RuleOwner::Policy {
        id,
        tier: &policy.tier,
    };
    let chain = |prefix: &str, rules: &[ParsedRule], dir: RuleDir| {
        let comment = policy_chain_comment(id, dir);
        Chain::new(
            policy_chain_name(prefix, id, cfg.nftables),
            proto_rules_to_rules(
                cfg,
                rules,
                ip_version,
                owner,
                dir,
                policy.untracked,
                Some(comment.as_str()),
            ),
        )
    };
    vec![
        chain(POLICY_INBOUND_PREFIX, &policy.inbound, RuleDir::Ingress),
        chain(POLICY_OUTBOUND_PREFIX, &policy.outbound, RuleDir::Egress),
    ]
}

/// A profile's inbound (`cali-pri-`) and outbound (`cali-pro-`) chains, in that order (Calico's
/// `ProfileToIptablesChains`). Profiles are never untracked and belong to no tier.
pub fn profile_chains(
    cfg: &RulesConfig,
    name: &str,
    inbound: &[ParsedRule],
    outbound: &[ParsedRule],
    ip_version: u8,
) -> Vec<Chain> {
    let owner = RuleOwner::Profile { name };
    let chain = |prefix: &str, rules: &[ParsedRule], dir: RuleDir| {
        let comment = format!("Profile {name} {}", dir.word());
        Chain::new(
            profile_chain_name(prefix, name, cfg.nftables),
            proto_rules_to_rules(
                cfg,
                rules,
                ip_version,
                owner,
                dir,
                false,
                Some(comment.as_str()),
            ),
        )
    };
    vec![
        chain(PROFILE_INBOUND_PREFIX, inbound, RuleDir::Ingress),
        chain(PROFILE_OUTBOUND_PREFIX, outbound, RuleDir::Egress),
    ]
}

/// The rules of one policy or profile direction (Calico's `ProtoRulesToIptablesRules`).
///
/// Trailing RETURN rules are dropped: whatever they match, returning at the end of a chain is
/// what happens anyway. `chain_comment` goes on the first rule (after any annotation comments);
/// a chain with no rules gets a single action-less rule to carry it, as Calico does, so that
/// the chain says whose it is.
pub fn proto_rules_to_rules(
    cfg: &RulesConfig,
    rules: &[ParsedRule],
    ip_version: u8,
    owner: RuleOwner<'_>,
    dir: RuleDir,
    untracked: bool,
    chain_comment: Option<&str>,
) -> Vec<Rule> {
    let mut out: Vec<Rule> = rules
        .iter()
        .enumerate()
        .flat_map(|(idx, rule)| rule_to_rules(cfg, owner, dir, idx, rule, ip_version, untracked))
        .collect();
    while matches!(
        out.last(),
        Some(Rule {
            action: Some(Action::Return),
            ..
        })
    ) {
        out.pop();
    }
    if let Some(comment) = chain_comment {
        if out.is_empty() {
            out.push(Rule::default());
        }
        if let Some(first) = out.first_mut() {
            first.comments.push(comment.to_string());
        }
    }
    out
}

/// What a rule does, parsed from the datamodel's action string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Pass,
    Deny,
    Log,
}

impl Verdict {
    /// `""`/`allow`, `next-tier`/`pass`, `deny`, `log`; anything else is not an action.
    fn parse(action: &str) -> Option<Verdict> {
        match action {
            "" | "allow" => Some(Verdict::Allow),
            "next-tier" | "pass" => Some(Verdict::Pass),
            "deny" => Some(Verdict::Deny),
            "log" => Some(Verdict::Log),
            _ => None,
        }
    }
}

/// The iptables rules for one datamodel rule (Calico's `ProtoRuleToIptablesRules`).
///
/// A rule for the other IP version, or whose CIDRs are all of the other version, renders
/// nothing. Matches iptables cannot express in one rule (more than one CIDR per direction,
/// positive and negative CIDRs together, ports that overflow a multiport match or that are OR-ed
/// with named ports) are rendered as "match blocks" ahead of the main rule (see
/// `MatchBlockBuilder`). The main rule then sets the verdict's mark and further rules act on it
/// (NFLOG when flow logs are on, then RETURN or the deny action). Rule annotations become
/// `key=value` comments on every rule rendered.
///
/// An action Calico does not know renders nothing (Calico panics); the calculation graph only
/// ever hands over the four known actions.
pub fn rule_to_rules(
    cfg: &RulesConfig,
    owner: RuleOwner<'_>,
    dir: RuleDir,
    rule_idx: usize,
    rule: &ParsedRule,
    ip_version: u8,
    untracked: bool,
) -> Vec<Rule> {
    let Some(verdict) = Verdict::parse(&rule.action) else {
        return Vec::new();
    };
    let Some(mut r) = filter_rule_to_ip_version(ip_version, rule) else {
        return Vec::new();
    };
    let set_name = |id: &String| ipset_name(ip_version, id, cfg.nftables);
    let mut blocks = MatchBlockBuilder::new(cfg.mark_scratch0, cfg.mark_scratch1);

    // Ports: a block is needed only when more than one multiport match or named-port set has to
    // be OR-ed together.
    let src_splits = split_port_list(&r.src_ports);
    if src_splits.len() + r.src_named_port_ipset_ids.len() > 1 {
        let sets: Vec<String> = r.src_named_port_ipset_ids.iter().map(set_name).collect();
        blocks.append_port_match_block(r.protocol.as_ref(), &src_splits, &sets, SrcOrDst::Src);
        r.src_ports.clear();
        r.src_named_port_ipset_ids.clear();
    }
    let dst_splits = split_port_list(&r.dst_ports);
    if dst_splits.len() + r.dst_named_port_ipset_ids.len() > 1 {
        let sets: Vec<String> = r.dst_named_port_ipset_ids.iter().map(set_name).collect();
        blocks.append_port_match_block(r.protocol.as_ref(), &dst_splits, &sets, SrcOrDst::Dst);
        r.dst_ports.clear();
        r.dst_named_port_ipset_ids.clear();
    }

    // A single positive CIDR fits in the main rule; more need a block.
    if r.src_net.len() > 1 {
        blocks.append_cidr_match_block(&r.src_net, SrcOrDst::Src);
        r.src_net.clear();
    }
    if r.dst_net.len() > 1 {
        blocks.append_cidr_match_block(&r.dst_net, SrcOrDst::Dst);
        r.dst_net.clear();
    }

    // iptables takes one source and one destination match per rule, negated or not: negated
    // CIDRs go to a block when they would share the slot with anything else.
    if r.src_net.len() + r.not_src_net.len() > 1 {
        blocks.append_negated_cidr_match_block(&r.not_src_net, SrcOrDst::Src);
        r.not_src_net.clear();
    }
    if r.dst_net.len() + r.not_dst_net.len() > 1 {
        blocks.append_negated_cidr_match_block(&r.not_dst_net, SrcOrDst::Dst);
        r.not_dst_net.clear();
    }

    let mut main_match = calculate_rule_match(cfg, &r, ip_version);
    if blocks.using_match_blocks {
        // The blocks leave their verdict in the all-blocks-pass bit.
        main_match = main_match.mark_single_bit_set(blocks.mark_all_blocks_pass);
    }

    let mut out = blocks.rules;
    out.extend(combine_match_and_actions(
        cfg, verdict, main_match, owner, dir, rule_idx, untracked,
    ));

    if !rule.annotations.is_empty() {
        // Calico iterates a Go map here (random order); sorted order is the stable equivalent
        // and agrees with Calico whenever there is at most one annotation.
        let comments: Vec<String> = rule
            .annotations
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for rendered in &mut out {
            rendered.comments.extend(comments.iter().cloned());
        }
    }
    out
}

/// The rule restricted to `ip_version` (Calico's `FilterRuleToIPVersion`), or `None` when it
/// does not apply to that version at all.
///
/// CIDRs of the other version are dropped, but a CIDR match that loses all its CIDRs drops the
/// whole rule: "from 10.0.0.1 to feed::1" means nothing in either version. A negated catch-all
/// (`! 0.0.0.0/0`, `! ::/0`) also drops the rule, since it can never match.
pub fn filter_rule_to_ip_version(ip_version: u8, rule: &ParsedRule) -> Option<ParsedRule> {
    if matches!(rule.ip_version, Some(v) if v != 0 && v != ip_version) {
        return None;
    }
    let mut r = rule.clone();
    r.src_net = filter_nets(&rule.src_net, ip_version, false)?;
    r.not_src_net = filter_nets(&rule.not_src_net, ip_version, true)?;
    r.dst_net = filter_nets(&rule.dst_net, ip_version, false)?;
    r.not_dst_net = filter_nets(&rule.not_dst_net, ip_version, true)?;
    Some(r)
}

/// The CIDRs of `ip_version`; `None` when there were CIDRs but none of them survive (or a
/// negated catch-all was found), which means the rule must not be rendered.
fn filter_nets(nets: &[String], ip_version: u8, negated: bool) -> Option<Vec<String>> {
    if nets.is_empty() {
        return Some(Vec::new());
    }
    let want_v6 = ip_version == 6;
    let mut out = Vec::with_capacity(nets.len());
    for net in nets {
        if net.contains(':') != want_v6 {
            continue;
        }
        if negated && is_catch_all_cidr(net, ip_version) {
            return None;
        }
        out.push(net.clone());
    }
    if out.is_empty() { None } else { Some(out) }
}

/// Whether the CIDR is "everything" for the version (compared as text, as Calico does).
fn is_catch_all_cidr(cidr: &str, ip_version: u8) -> bool {
    (ip_version == 4 && cidr == "0.0.0.0/0") || (ip_version == 6 && cidr == "::/0")
}

/// Splits a port list into groups that each fit one multiport match (Calico's
/// `SplitPortList`): 15 slots per group, a range counting as two.
pub fn split_port_list(ports: &[PortRange]) -> Vec<Vec<PortRange>> {
    let mut splits = Vec::new();
    let mut split: Vec<PortRange> = Vec::new();
    let mut slots_left = MULTIPORT_SLOTS;
    for port in ports {
        let needed = if port.first == port.last { 1 } else { 2 };
        if slots_left < needed {
            splits.push(std::mem::take(&mut split));
            slots_left = MULTIPORT_SLOTS;
        }
        split.push(*port);
        slots_left -= needed;
    }
    if !split.is_empty() {
        splits.push(split);
    }
    splits
}

/// Source or destination, for the block builders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SrcOrDst {
    Src,
    Dst,
}

impl SrcOrDst {
    fn match_net(self, m: MatchCriteria, cidr: &str) -> MatchCriteria {
        match self {
            SrcOrDst::Src => m.source_net(cidr),
            SrcOrDst::Dst => m.dest_net(cidr),
        }
    }

    fn match_ports(self, m: MatchCriteria, ports: &[PortRange]) -> MatchCriteria {
        match self {
            SrcOrDst::Src => m.source_ports(ports.to_vec()),
            SrcOrDst::Dst => m.dest_ports(ports.to_vec()),
        }
    }

    fn match_ip_port_set(self, m: MatchCriteria, set: &str) -> MatchCriteria {
        match self {
            SrcOrDst::Src => m.source_ip_port_set(set),
            SrcOrDst::Dst => m.dest_ip_port_set(set),
        }
    }
}

/// Renders the parts of a rule that one iptables rule cannot hold as blocks of rules that
/// compute their verdict into a mark bit (Calico's `matchBlockBuilder`).
///
/// The blocks come in a fixed order: positive source ports, positive destination ports,
/// positive source CIDRs, positive destination CIDRs, negated source CIDRs, negated destination
/// CIDRs. One bit ("all blocks pass", MarkScratch0) records whether every block so far matched,
/// another ("this block passes", MarkScratch1) is scratch space for the block being evaluated:
///
/// - the first block rule resets both bits (setting "all blocks pass" first if the first block
///   is a negated one);
/// - the first positive block writes "all blocks pass" directly (an OR of its rules); later
///   positive blocks OR into the scratch bit, then clear "all blocks pass" if it stayed clear;
/// - negated blocks clear "all blocks pass" as soon as one of their CIDRs matches.
#[derive(Debug)]
struct MatchBlockBuilder {
    using_match_blocks: bool,
    done_first_positive_block: bool,
    mark_all_blocks_pass: u32,
    mark_this_block_pass: u32,
    rules: Vec<Rule>,
}

impl MatchBlockBuilder {
    fn new(mark_all_blocks_pass: u32, mark_this_block_pass: u32) -> MatchBlockBuilder {
        MatchBlockBuilder {
            using_match_blocks: false,
            done_first_positive_block: false,
            mark_all_blocks_pass,
            mark_this_block_pass,
            rules: Vec::new(),
        }
    }

    /// One rule per multiport group (each with the rule's protocol, which multiport needs) and
    /// one per named-port set, OR-ed together.
    fn append_port_match_block(
        &mut self,
        protocol: Option<&ProtocolMatch>,
        numeric_splits: &[Vec<PortRange>],
        named_port_sets: &[String],
        sod: SrcOrDst,
    ) {
        self.maybe_append_initial_rule(0);
        let mark = self.positive_block_mark_to_set();
        for split in numeric_splits {
            let m = sod.match_ports(with_protocol(MatchCriteria::new(), protocol), split);
            self.rules.push(Rule::new(m, Action::SetMark(mark)));
        }
        for set in named_port_sets {
            let m = sod.match_ip_port_set(MatchCriteria::new(), set);
            self.rules.push(Rule::new(m, Action::SetMark(mark)));
        }
        self.finish_positive_block();
    }

    /// One rule per CIDR, OR-ed together.
    fn append_cidr_match_block(&mut self, cidrs: &[String], sod: SrcOrDst) {
        self.maybe_append_initial_rule(0);
        let mark = self.positive_block_mark_to_set();
        for cidr in cidrs {
            let m = sod.match_net(MatchCriteria::new(), cidr);
            self.rules.push(Rule::new(m, Action::SetMark(mark)));
        }
        self.finish_positive_block();
    }

    /// "Not any of these": each CIDR that matches clears the all-blocks-pass bit.
    fn append_negated_cidr_match_block(&mut self, cidrs: &[String], sod: SrcOrDst) {
        self.maybe_append_initial_rule(self.mark_all_blocks_pass);
        for cidr in cidrs {
            let m = sod.match_net(MatchCriteria::new(), cidr);
            self.rules
                .push(Rule::new(m, Action::ClearMark(self.mark_all_blocks_pass)));
        }
    }

    /// Before the first block: set both bits to `initial` (within their mask).
    fn maybe_append_initial_rule(&mut self, initial: u32) {
        if self.using_match_blocks {
            return;
        }
        self.rules.push(Rule::action(Action::SetMaskedMark {
            mark: initial,
            mask: self.mark_all_blocks_pass | self.mark_this_block_pass,
        }));
        self.using_match_blocks = true;
    }

    /// The first positive block can write the all-blocks-pass bit directly (nothing before it
    /// can have set it); later ones must use the scratch bit and AND it in at the end.
    fn positive_block_mark_to_set(&self) -> u32 {
        if self.done_first_positive_block {
            self.mark_this_block_pass
        } else {
            self.mark_all_blocks_pass
        }
    }

    /// `all_blocks_pass &&= this_block_pass`, except after the first positive block.
    fn finish_positive_block(&mut self) {
        if !self.done_first_positive_block {
            self.done_first_positive_block = true;
            return;
        }
        self.rules.push(Rule::new(
            MatchCriteria::new().mark_clear(self.mark_this_block_pass),
            Action::ClearMark(self.mark_all_blocks_pass),
        ));
    }
}

fn with_protocol(m: MatchCriteria, protocol: Option<&ProtocolMatch>) -> MatchCriteria {
    match protocol {
        None => m,
        Some(ProtocolMatch::Name(name)) => m.protocol(name),
        Some(ProtocolMatch::Number(num)) => m.protocol_num(*num),
    }
}

fn with_not_protocol(m: MatchCriteria, protocol: Option<&ProtocolMatch>) -> MatchCriteria {
    match protocol {
        None => m,
        Some(ProtocolMatch::Name(name)) => m.not_protocol(name),
        Some(ProtocolMatch::Number(num)) => m.not_protocol_num(*num),
    }
}

/// ICMP for IPv4, ICMPv6 otherwise; type only, or type and code.
fn with_icmp(
    m: MatchCriteria,
    icmp: Option<&IcmpMatch>,
    ip_version: u8,
    negated: bool,
) -> MatchCriteria {
    let Some(icmp) = icmp else {
        return m;
    };
    let t = icmp.icmp_type;
    match (ip_version == 4, negated, icmp.code) {
        (true, false, Some(c)) => m.icmp_type_and_code(t, c),
        (true, false, None) => m.icmp_type(t),
        (true, true, Some(c)) => m.not_icmp_type_and_code(t, c),
        (true, true, None) => m.not_icmp_type(t),
        (false, false, Some(c)) => m.icmpv6_type_and_code(t, c),
        (false, false, None) => m.icmpv6_type(t),
        (false, true, Some(c)) => m.not_icmpv6_type_and_code(t, c),
        (false, true, None) => m.not_icmpv6_type(t),
    }
}

/// The main rule's match (Calico's `CalculateRuleMatch`): positive terms, then negated ones,
/// in Calico's order (it is part of the rule text, hence of the hash).
///
/// Expects at most one CIDR in each of the four CIDR lists and at most one positive named port
/// per direction, which [`rule_to_rules`] guarantees by moving the rest into match blocks.
fn calculate_rule_match(cfg: &RulesConfig, r: &ParsedRule, ip_version: u8) -> MatchCriteria {
    debug_assert!(r.src_net.len() <= 1 && r.dst_net.len() <= 1);
    debug_assert!(r.not_src_net.len() <= 1 && r.not_dst_net.len() <= 1);
    let set_name = |id: &String| ipset_name(ip_version, id, cfg.nftables);
    let mut m = with_protocol(MatchCriteria::new(), r.protocol.as_ref());

    for net in &r.src_net {
        m = m.source_net(net);
    }
    for id in &r.src_ipset_ids {
        m = m.source_ip_set(&set_name(id));
    }
    if !r.src_ports.is_empty() {
        m = m.source_ports(r.src_ports.clone());
    }
    for id in &r.src_named_port_ipset_ids {
        m = m.source_ip_port_set(&set_name(id));
    }
    for net in &r.dst_net {
        m = m.dest_net(net);
    }
    for id in &r.dst_ipset_ids {
        m = m.dest_ip_set(&set_name(id));
    }
    for id in &r.dst_ip_port_set_ids {
        m = m.dest_ip_port_set(&set_name(id));
    }
    if !r.dst_ports.is_empty() {
        m = m.dest_ports(r.dst_ports.clone());
    }
    for id in &r.dst_named_port_ipset_ids {
        m = m.dest_ip_port_set(&set_name(id));
    }
    m = with_icmp(m, r.icmp.as_ref(), ip_version, false);

    // Negated terms are AND-ed ("none of"), so they can all go in one rule; only the multiport
    // limit forces extra multiport matches.
    m = with_not_protocol(m, r.not_protocol.as_ref());
    for net in &r.not_src_net {
        m = m.not_source_net(net);
    }
    for id in &r.not_src_ipset_ids {
        m = m.not_source_ip_set(&set_name(id));
    }
    for split in split_port_list(&r.not_src_ports) {
        m = m.not_source_ports(split);
    }
    for id in &r.not_src_named_port_ipset_ids {
        m = m.not_source_ip_port_set(&set_name(id));
    }
    for net in &r.not_dst_net {
        m = m.not_dest_net(net);
    }
    for id in &r.not_dst_ipset_ids {
        m = m.not_dest_ip_set(&set_name(id));
    }
    for split in split_port_list(&r.not_dst_ports) {
        m = m.not_dest_ports(split);
    }
    for id in &r.not_dst_named_port_ipset_ids {
        m = m.not_dest_ip_port_set(&set_name(id));
    }
    with_icmp(m, r.not_icmp.as_ref(), ip_version, true)
}

/// The verdict rules (Calico's `CombineMatchAndActionsForProtoRule`).
///
/// Allow, pass and deny need more than one action, so the match sets the verdict's mark bit
/// (accept, pass or drop) and the actions follow as rules matching that bit: NFLOG (flow logs
/// only, never for untracked policy: too costly there), then RETURN (allow, pass) or the
/// configured deny action. Log is a LOG rule with the match itself, optionally rate-limited.
fn combine_match_and_actions(
    cfg: &RulesConfig,
    verdict: Verdict,
    rule_match: MatchCriteria,
    owner: RuleOwner<'_>,
    dir: RuleDir,
    idx: usize,
    untracked: bool,
) -> Vec<Rule> {
    let mut actions: Vec<Rule> = Vec::new();
    if verdict == Verdict::Log {
        let mut log_match = MatchCriteria::new();
        if !cfg.log_action_rate_limit.is_empty() {
            log_match =
                log_match.limit(&cfg.log_action_rate_limit, cfg.log_action_rate_limit_burst);
        }
        actions.push(Rule::new(
            log_match,
            Action::Log {
                prefix: log_prefix(cfg, owner),
            },
        ));
    }

    let flow_log = |action: RuleAction| {
        (!untracked && cfg.flow_logs_enabled).then(|| {
            Rule::action(Action::Nflog {
                group: dir.nflog_group(),
                prefix: nflog_prefix(action, owner, dir, idx),
                size: 0,
            })
        })
    };
    let mark = match verdict {
        Verdict::Allow => {
            actions.extend(flow_log(RuleAction::Allow));
            actions.push(Rule::action(Action::Return));
            cfg.mark_accept
        }
        Verdict::Pass => {
            actions.extend(flow_log(RuleAction::Pass));
            actions.push(Rule::action(Action::Return));
            cfg.mark_pass
        }
        Verdict::Deny => {
            actions.extend(flow_log(RuleAction::Deny));
            actions.push(Rule::action(cfg.filter_deny()));
            cfg.mark_drop
        }
        Verdict::Log => 0,
    };

    let mut out = Vec::with_capacity(actions.len() + 1);
    let action_match = if mark != 0 {
        out.push(Rule::new(rule_match, Action::SetMark(mark)));
        MatchCriteria::new().mark_single_bit_set(mark)
    } else {
        rule_match
    };
    for mut rule in actions {
        rule.matches = rule.matches.combined(&action_match);
        out.push(rule);
    }
    out
}

/// The LOG prefix (Calico's `generateLogPrefix`): the configured prefix (default
/// `calico-packet`) with `%t` (tier), `%k` (kind short name, `pro` for profiles), `%n` (name)
/// and `%p` (`<ns>/<name>` or name) replaced; any other `%` sequence is kept as it is.
fn log_prefix(cfg: &RulesConfig, owner: RuleOwner<'_>) -> String {
    let format = if cfg.log_prefix.is_empty() {
        DEFAULT_LOG_PREFIX
    } else {
        cfg.log_prefix.as_str()
    };
    if !format.contains('%') {
        return format.to_string();
    }
    let mut out = String::with_capacity(format.len() + 32);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            let replacement = match chars.peek() {
                Some('t') => Some(owner.tier().to_string()),
                Some('k') => Some(owner.kind().to_string()),
                Some('n') => Some(owner.name().to_string()),
                Some('p') => Some(owner.qualified_name()),
                _ => None,
            };
            if let Some(replacement) = replacement {
                out.push_str(&replacement);
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The NFLOG prefix for a rule's verdict (Calico's `CalculateNFLOGPrefixStr`):
/// `<action><owner><dir><index>|<owner id>`, e.g. `API0|np/ns/name`, hashed down to 63
/// characters when too long. Flow logs parse it back to the policy and rule.
pub fn nflog_prefix(action: RuleAction, owner: RuleOwner<'_>, dir: RuleDir, idx: usize) -> String {
    maybe_hash_nflog_prefix(format!(
        "{}{}{}{idx}|{}",
        action.code(),
        owner.code(),
        dir.code(),
        owner.id()
    ))
}

/// The NFLOG prefix for a tier's end-of-tier drop: `DP<dir>|<tier>` (Calico's
/// `CalculateEndOfTierDropNFLOGPrefixStr`).
pub fn end_of_tier_drop_nflog_prefix(dir: RuleDir, tier: &str) -> String {
    maybe_hash_nflog_prefix(format!("DP{}|{tier}", dir.code()))
}

/// The NFLOG prefix for a tier's end-of-tier pass, used instead of the drop when every policy
/// in the tier is staged: `PP<dir>|<tier>` (Calico's `CalculateEndOfTierPassNFLOGPrefixStr`).
pub fn end_of_tier_pass_nflog_prefix(dir: RuleDir, tier: &str) -> String {
    maybe_hash_nflog_prefix(format!("PP{}|{tier}", dir.code()))
}

/// The NFLOG prefix for "no profile matched": `DR<dir>` (Calico's
/// `CalculateNoMatchProfileNFLOGPrefixStr`).
pub fn no_match_profile_nflog_prefix(dir: RuleDir) -> String {
    format!("DR{}", dir.code())
}

/// The NFLOG prefix for "no rule of this policy matched": `DP<dir>|<policy id>` (Calico's
/// `CalculateNoMatchPolicyNFLOGPrefixStr`).
pub fn no_match_policy_nflog_prefix(dir: RuleDir, id: &PolicyId) -> String {
    maybe_hash_nflog_prefix(format!("DP{}|{}", dir.code(), id.id()))
}

/// Prefixes of 63 characters or more become the first 10 characters, a hash of the whole
/// prefix and `_` + the last 10 characters (exactly 63), so they still hint at their owner.
fn maybe_hash_nflog_prefix(prefix: String) -> String {
    let bytes = prefix.as_bytes();
    if bytes.len() < NFLOG_PREFIX_MAX_LENGTH_WO_TERM {
        return prefix;
    }
    // Calico slices bytes; names are ASCII in practice, and lossy conversion keeps a stray
    // multi-byte character from panicking.
    let head = String::from_utf8_lossy(&bytes[..HASHED_PREFIX_PREFIX_LEN]);
    let tail = String::from_utf8_lossy(&bytes[bytes.len() - HASHED_PREFIX_SUFFIX_LEN..]);
    let hash = length_limited_id("", &prefix, NFLOG_HASH_LEN);
    format!("{head}{hash}_{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generic::{Features, iptables_match, iptables_render, rule_hashes};

    const TIER: &str = "default";

    /// Calico's `rrConfigNormal` in policy_test.go.
    fn test_cfg() -> RulesConfig {
        RulesConfig {
            mark_accept: 0x80,
            mark_pass: 0x100,
            mark_scratch0: 0x200,
            mark_scratch1: 0x400,
            mark_drop: 0x800,
            mark_endpoint: 0xff000,
            ipip_enabled: true,
            ..RulesConfig::default()
        }
    }

    fn flow_cfg() -> RulesConfig {
        RulesConfig {
            flow_logs_enabled: true,
            ..test_cfg()
        }
    }

    /// `fooPolicyID`: GlobalNetworkPolicy `default.foo`.
    fn foo_id() -> PolicyId {
        PolicyId::global("default.foo")
    }

    /// Calico's tests render with an empty `environment.Features{}`.
    fn go_features() -> Features {
        Features {
            snat_fully_random: false,
            masq_fully_random: false,
            nflog_size: false,
        }
    }

    /// `ProtoRuleToIptablesRules(rule, ver, Policy, Ingress, 0, fooPolicyID, "default", false)`.
    fn render_foo(cfg: &RulesConfig, rule: &ParsedRule, ip_version: u8) -> Vec<Rule> {
        let id = foo_id();
        let owner = RuleOwner::Policy {
            id: &id,
            tier: TIER,
        };
        rule_to_rules(cfg, owner, RuleDir::Ingress, 0, rule, ip_version, false)
    }

    /// The `-A test ...` lines Calico's tests compare against.
    fn texts(rules: &[Rule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| iptables_render("-A", "test", None, r, "", &go_features()))
            .collect()
    }

    /// `Match.Render()`.
    fn match_text(m: &MatchCriteria) -> String {
        m.0.iter().map(iptables_match).collect::<Vec<_>>().join(" ")
    }

    fn pr(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    fn name(p: &str) -> Option<ProtocolMatch> {
        Some(ProtocolMatch::Name(p.to_string()))
    }

    fn with_action(rule: &ParsedRule, action: &str) -> ParsedRule {
        ParsedRule {
            action: action.to_string(),
            ..rule.clone()
        }
    }

    /// 1:2, 3:4, ..., 15:16: 16 slots, one more than a multiport match holds.
    fn eight_ranges() -> Vec<PortRange> {
        (0..8).map(|i| pr(2 * i + 1, 2 * i + 2)).collect()
    }

    fn mark_then(mark: u32, action: Action) -> Rule {
        Rule::new(MatchCriteria::new().mark_single_bit_set(mark), action)
    }

    /// Calico's `ruleTestData`: (description, IP version, rule, expected match text).
    fn rule_test_data() -> Vec<(&'static str, u8, ParsedRule, &'static str)> {
        let d = ParsedRule::default;
        let icmp = |t, c| {
            Some(IcmpMatch {
                icmp_type: t,
                code: c,
            })
        };
        vec![
            ("Empty rule", 4, d(), ""),
            (
                "Protocol name",
                4,
                ParsedRule {
                    protocol: name("tcp"),
                    ..d()
                },
                "-p tcp",
            ),
            (
                "Protocol num",
                4,
                ParsedRule {
                    protocol: Some(ProtocolMatch::Number(8)),
                    ..d()
                },
                "-p 8",
            ),
            (
                "Source net",
                4,
                ParsedRule {
                    src_net: strs(&["10.0.0.0/16"]),
                    ..d()
                },
                "--source 10.0.0.0/16",
            ),
            (
                "Source IP set",
                4,
                ParsedRule {
                    src_ipset_ids: strs(&["ipsetid1"]),
                    ..d()
                },
                "-m set --match-set cali40ipsetid1 src",
            ),
            (
                "Source IP sets",
                4,
                ParsedRule {
                    src_ipset_ids: strs(&["ipsetid1", "ipsetid2"]),
                    ..d()
                },
                "-m set --match-set cali40ipsetid1 src -m set --match-set cali40ipsetid2 src",
            ),
            (
                "Source ports",
                4,
                ParsedRule {
                    src_ports: vec![pr(10, 12)],
                    ..d()
                },
                "-m multiport --source-ports 10:12",
            ),
            (
                "Source ports (multiple)",
                4,
                ParsedRule {
                    src_ports: vec![pr(10, 12), pr(20, 30), pr(8080, 8080)],
                    ..d()
                },
                "-m multiport --source-ports 10:12,20:30,8080",
            ),
            (
                "ICMP",
                4,
                ParsedRule {
                    icmp: icmp(10, None),
                    ..d()
                },
                "-m icmp --icmp-type 10",
            ),
            (
                "ICMP with code",
                4,
                ParsedRule {
                    icmp: icmp(10, Some(12)),
                    ..d()
                },
                "-m icmp --icmp-type 10/12",
            ),
            (
                "ICMPv6",
                6,
                ParsedRule {
                    icmp: icmp(10, None),
                    ..d()
                },
                "-m icmp6 --icmpv6-type 10",
            ),
            (
                "ICMPv6 with code",
                6,
                ParsedRule {
                    icmp: icmp(10, Some(12)),
                    ..d()
                },
                "-m icmp6 --icmpv6-type 10/12",
            ),
            (
                "Dest net",
                4,
                ParsedRule {
                    dst_net: strs(&["10.0.0.0/16"]),
                    ..d()
                },
                "--destination 10.0.0.0/16",
            ),
            (
                "Dest IP set",
                4,
                ParsedRule {
                    dst_ipset_ids: strs(&["ipsetid1"]),
                    ..d()
                },
                "-m set --match-set cali40ipsetid1 dst",
            ),
            (
                "Dest IP sets",
                4,
                ParsedRule {
                    dst_ipset_ids: strs(&["ipsetid1", "ipsetid2"]),
                    ..d()
                },
                "-m set --match-set cali40ipsetid1 dst -m set --match-set cali40ipsetid2 dst",
            ),
            (
                "Dest ports",
                4,
                ParsedRule {
                    dst_ports: vec![pr(10, 12)],
                    ..d()
                },
                "-m multiport --destination-ports 10:12",
            ),
            (
                "Dest ports (multiple)",
                4,
                ParsedRule {
                    dst_ports: vec![pr(10, 12), pr(20, 30), pr(8080, 8080)],
                    ..d()
                },
                "-m multiport --destination-ports 10:12,20:30,8080",
            ),
            // Negated matches.
            (
                "Negated protocol name",
                4,
                ParsedRule {
                    not_protocol: name("tcp"),
                    ..d()
                },
                "! -p tcp",
            ),
            (
                "Negated protocol num",
                4,
                ParsedRule {
                    not_protocol: Some(ProtocolMatch::Number(8)),
                    ..d()
                },
                "! -p 8",
            ),
            (
                "Negated source net",
                4,
                ParsedRule {
                    not_src_net: strs(&["10.0.0.0/16"]),
                    ..d()
                },
                "! --source 10.0.0.0/16",
            ),
            (
                "Negated source IP set",
                4,
                ParsedRule {
                    not_src_ipset_ids: strs(&["ipsetid1"]),
                    ..d()
                },
                "-m set ! --match-set cali40ipsetid1 src",
            ),
            (
                "Negated source IP set v6",
                6,
                ParsedRule {
                    not_src_ipset_ids: strs(&["ipsetid1"]),
                    ..d()
                },
                "-m set ! --match-set cali60ipsetid1 src",
            ),
            (
                "Negated source IP sets",
                4,
                ParsedRule {
                    not_src_ipset_ids: strs(&["ipsetid1", "ipsetid2"]),
                    ..d()
                },
                "-m set ! --match-set cali40ipsetid1 src -m set ! --match-set cali40ipsetid2 src",
            ),
            (
                "Negated source ports",
                4,
                ParsedRule {
                    not_src_ports: vec![pr(10, 12)],
                    ..d()
                },
                "-m multiport ! --source-ports 10:12",
            ),
            (
                "Negated source ports (multiple)",
                4,
                ParsedRule {
                    not_src_ports: vec![pr(10, 12), pr(20, 30), pr(8080, 8080)],
                    ..d()
                },
                "-m multiport ! --source-ports 10:12,20:30,8080",
            ),
            (
                "Negated source ports (>15) should be broken into blocks",
                4,
                ParsedRule {
                    not_src_ports: eight_ranges(),
                    ..d()
                },
                "-m multiport ! --source-ports 1:2,3:4,5:6,7:8,9:10,11:12,13:14 \
                 -m multiport ! --source-ports 15:16",
            ),
            (
                "Negated ICMP",
                4,
                ParsedRule {
                    not_icmp: icmp(10, None),
                    ..d()
                },
                "-m icmp ! --icmp-type 10",
            ),
            (
                "Negated ICMP with code",
                4,
                ParsedRule {
                    not_icmp: icmp(10, Some(12)),
                    ..d()
                },
                "-m icmp ! --icmp-type 10/12",
            ),
            (
                "Negated ICMPv6",
                6,
                ParsedRule {
                    not_icmp: icmp(10, None),
                    ..d()
                },
                "-m icmp6 ! --icmpv6-type 10",
            ),
            (
                "Negated ICMPv6 with code",
                6,
                ParsedRule {
                    not_icmp: icmp(10, Some(12)),
                    ..d()
                },
                "-m icmp6 ! --icmpv6-type 10/12",
            ),
            (
                "Negated dest net",
                4,
                ParsedRule {
                    not_dst_net: strs(&["10.0.0.0/16"]),
                    ..d()
                },
                "! --destination 10.0.0.0/16",
            ),
            (
                "Negated dest IP set",
                4,
                ParsedRule {
                    not_dst_ipset_ids: strs(&["ipsetid1"]),
                    ..d()
                },
                "-m set ! --match-set cali40ipsetid1 dst",
            ),
            (
                "Negated dest IP set v6",
                6,
                ParsedRule {
                    not_dst_ipset_ids: strs(&["ipsetid1"]),
                    ..d()
                },
                "-m set ! --match-set cali60ipsetid1 dst",
            ),
            (
                "Negated dest IP sets",
                4,
                ParsedRule {
                    not_dst_ipset_ids: strs(&["ipsetid1", "ipsetid2"]),
                    ..d()
                },
                "-m set ! --match-set cali40ipsetid1 dst -m set ! --match-set cali40ipsetid2 dst",
            ),
            (
                "Negated dest ports",
                4,
                ParsedRule {
                    not_dst_ports: vec![pr(10, 12)],
                    ..d()
                },
                "-m multiport ! --destination-ports 10:12",
            ),
            (
                "Negated dest ports (>15) should be broken into blocks",
                4,
                ParsedRule {
                    not_dst_ports: eight_ranges(),
                    ..d()
                },
                "-m multiport ! --destination-ports 1:2,3:4,5:6,7:8,9:10,11:12,13:14 \
                 -m multiport ! --destination-ports 15:16",
            ),
            (
                "Negated dest ports (multiple)",
                4,
                ParsedRule {
                    not_dst_ports: vec![pr(10, 12), pr(20, 30), pr(8080, 8080)],
                    ..d()
                },
                "-m multiport ! --destination-ports 10:12,20:30,8080",
            ),
        ]
    }

    #[test]
    fn allow_rules_set_the_accept_mark_then_return() {
        let cfg = test_cfg();
        for (desc, ver, rule, exp) in rule_test_data() {
            let rules = render_foo(&cfg, &rule, ver);
            assert_eq!(rules.len(), 2, "{desc}");
            assert_eq!(match_text(&rules[0].matches), exp, "{desc}");
            assert_eq!(rules[0].action, Some(Action::SetMark(0x80)), "{desc}");
            assert_eq!(rules[1], mark_then(0x80, Action::Return), "{desc}");
            // An explicit "allow" is the same as the empty action.
            assert_eq!(
                render_foo(&cfg, &with_action(&rule, "allow"), ver),
                rules,
                "{desc}"
            );
        }
    }

    #[test]
    fn allow_rules_with_flow_logs_nflog_before_returning() {
        let cfg = flow_cfg();
        for (desc, ver, rule, exp) in rule_test_data() {
            let rules = render_foo(&cfg, &rule, ver);
            assert_eq!(rules.len(), 3, "{desc}");
            assert_eq!(match_text(&rules[0].matches), exp, "{desc}");
            assert_eq!(rules[0].action, Some(Action::SetMark(0x80)), "{desc}");
            let nflog = Action::Nflog {
                group: 1,
                prefix: "API0|gnp/default.foo".into(),
                size: 0,
            };
            assert_eq!(rules[1], mark_then(0x80, nflog), "{desc}");
            assert_eq!(rules[2], mark_then(0x80, Action::Return), "{desc}");
        }
    }

    #[test]
    fn pass_rules_set_the_pass_mark_then_return() {
        for action in ["next-tier", "pass"] {
            for (desc, ver, rule, exp) in rule_test_data() {
                let rule = with_action(&rule, action);
                let rules = render_foo(&test_cfg(), &rule, ver);
                assert_eq!(rules.len(), 2, "{desc}");
                assert_eq!(match_text(&rules[0].matches), exp, "{desc}");
                assert_eq!(rules[0].action, Some(Action::SetMark(0x100)), "{desc}");
                assert_eq!(rules[1], mark_then(0x100, Action::Return), "{desc}");

                let rules = render_foo(&flow_cfg(), &rule, ver);
                let nflog = Action::Nflog {
                    group: 1,
                    prefix: "PPI0|gnp/default.foo".into(),
                    size: 0,
                };
                assert_eq!(rules.len(), 3, "{desc}");
                assert_eq!(rules[1], mark_then(0x100, nflog), "{desc}");
                assert_eq!(rules[2], mark_then(0x100, Action::Return), "{desc}");
            }
        }
    }

    #[test]
    fn deny_rules_set_the_drop_mark_then_drop_or_reject() {
        for (desc, ver, rule, exp) in rule_test_data() {
            let rule = with_action(&rule, "deny");
            let rules = render_foo(&test_cfg(), &rule, ver);
            assert_eq!(rules.len(), 2, "{desc}");
            assert_eq!(match_text(&rules[0].matches), exp, "{desc}");
            assert_eq!(rules[0].action, Some(Action::SetMark(0x800)), "{desc}");
            assert_eq!(rules[1], mark_then(0x800, Action::Drop), "{desc}");

            let reject = RulesConfig {
                filter_deny_action: "REJECT".into(),
                ..test_cfg()
            };
            let rules = render_foo(&reject, &rule, ver);
            assert_eq!(
                rules[1],
                mark_then(0x800, Action::Reject { with: None }),
                "{desc}"
            );

            let rules = render_foo(&flow_cfg(), &rule, ver);
            let nflog = Action::Nflog {
                group: 1,
                prefix: "DPI0|gnp/default.foo".into(),
                size: 0,
            };
            assert_eq!(rules.len(), 3, "{desc}");
            assert_eq!(rules[1], mark_then(0x800, nflog), "{desc}");
            assert_eq!(rules[2], mark_then(0x800, Action::Drop), "{desc}");
        }
    }

    #[test]
    fn log_rules_are_one_log_rule_unaffected_by_flow_logs() {
        let foobar = RulesConfig {
            log_prefix: "foobar".into(),
            ..test_cfg()
        };
        for (desc, ver, rule, exp) in rule_test_data() {
            let rule = with_action(&rule, "log");
            let rules = render_foo(&test_cfg(), &rule, ver);
            assert_eq!(rules.len(), 1, "{desc}");
            assert_eq!(match_text(&rules[0].matches), exp, "{desc}");
            let log = Action::Log {
                prefix: "calico-packet".into(),
            };
            assert_eq!(rules[0].action, Some(log), "{desc}");
            assert_eq!(render_foo(&flow_cfg(), &rule, ver), rules, "{desc}");

            let rules = render_foo(&foobar, &rule, ver);
            let log = Action::Log {
                prefix: "foobar".into(),
            };
            assert_eq!(rules[0].action, Some(log), "{desc}");
        }
    }

    #[test]
    fn log_prefix_specifiers_are_replaced() {
        fn prefix_of(cfg: &RulesConfig, owner: RuleOwner<'_>) -> String {
            let log = ParsedRule {
                action: "log".into(),
                protocol: name("tcp"),
                ..ParsedRule::default()
            };
            let rules = rule_to_rules(cfg, owner, RuleDir::Ingress, 0, &log, 4, false);
            assert_eq!(rules.len(), 1);
            assert_eq!(match_text(&rules[0].matches), "-p tcp");
            match &rules[0].action {
                Some(Action::Log { prefix }) => prefix.clone(),
                other => panic!("not a LOG rule: {other:?}"),
            }
        }

        let id = foo_id();
        let cfg = RulesConfig {
            log_prefix: "foobar %t %k %p %n - %n %p %k %t".into(),
            ..test_cfg()
        };
        let foo = RuleOwner::Policy {
            id: &id,
            tier: TIER,
        };
        assert_eq!(
            prefix_of(&cfg, foo),
            "foobar default gnp default.foo default.foo - default.foo default.foo gnp default"
        );

        let cnp = PolicyId::network_policy("app", "foo");
        let cfg = RulesConfig {
            log_prefix: "calico-packet %k:%p:%t:%n".into(),
            ..test_cfg()
        };
        let owner = RuleOwner::Policy {
            id: &cnp,
            tier: "admin",
        };
        assert_eq!(prefix_of(&cfg, owner), "calico-packet np:app/foo:admin:foo");

        let cfg = RulesConfig {
            log_prefix: "calico-packet %p:%k:%%y%t%%n".into(),
            ..test_cfg()
        };
        let profile = RuleOwner::Profile { name: "profile1" };
        assert_eq!(
            prefix_of(&cfg, profile),
            "calico-packet profile1:pro:%%y%profile1"
        );
    }

    #[test]
    fn log_rules_are_rate_limited_when_configured() {
        let mut cfg = RulesConfig {
            log_action_rate_limit: "50/minute".into(),
            log_action_rate_limit_burst: 0,
            log_prefix: "foobar".into(),
            ..test_cfg()
        };
        let rule = ParsedRule {
            action: "log".into(),
            src_net: strs(&["10.0.0.0/16"]),
            ..ParsedRule::default()
        };
        assert_eq!(
            texts(&render_foo(&cfg, &rule, 4)),
            vec![
                r#"-A test -m limit --limit 50/minute --source 10.0.0.0/16 --jump LOG --log-prefix "foobar: " --log-level 5"#
            ]
        );
        cfg.log_action_rate_limit_burst = 90;
        assert_eq!(
            texts(&render_foo(&cfg, &rule, 4)),
            vec![
                r#"-A test -m limit --limit 50/minute --limit-burst 90 --source 10.0.0.0/16 --jump LOG --log-prefix "foobar: " --log-level 5"#
            ]
        );
        cfg.flow_logs_enabled = true;
        assert_eq!(render_foo(&cfg, &rule, 4).len(), 1);
    }

    #[test]
    fn deny_policies_render_both_chains_with_kind_comments() {
        let cfg = test_cfg();
        let id = foo_id();
        for (desc, ver, rule, exp) in rule_test_data() {
            let deny = with_action(&rule, "deny");
            for inbound in [true, false] {
                let policy = PolicyRules {
                    inbound: if inbound { vec![deny.clone()] } else { vec![] },
                    outbound: if inbound { vec![] } else { vec![deny.clone()] },
                    tier: TIER.into(),
                    ..PolicyRules::default()
                };
                let chains = policy_chains(&cfg, &id, &policy, ver);
                assert_eq!(chains.len(), 2, "{desc}");
                assert_eq!(chains[0].name, "cali-pi-gnp/default.foo");
                assert_eq!(chains[1].name, "cali-po-gnp/default.foo");
                let (full, empty, comment) = if inbound {
                    (
                        &chains[0],
                        &chains[1],
                        "GlobalNetworkPolicy default.foo egress",
                    )
                } else {
                    (
                        &chains[1],
                        &chains[0],
                        "GlobalNetworkPolicy default.foo ingress",
                    )
                };
                assert_eq!(
                    empty.rules,
                    vec![Rule::default().comment(comment)],
                    "{desc}"
                );
                assert_eq!(full.rules.len(), 2, "{desc}");
                assert_eq!(match_text(&full.rules[0].matches), exp, "{desc}");
                assert_eq!(full.rules[0].action, Some(Action::SetMark(0x800)), "{desc}");
                assert_eq!(full.rules[1], mark_then(0x800, Action::Drop), "{desc}");
            }
        }

        // Egress NFLOG goes to group 2 with an E in the prefix.
        let policy = PolicyRules {
            outbound: vec![with_action(&ParsedRule::default(), "deny")],
            tier: TIER.into(),
            ..PolicyRules::default()
        };
        let chains = policy_chains(&flow_cfg(), &id, &policy, 4);
        let nflog = Action::Nflog {
            group: 2,
            prefix: "DPE0|gnp/default.foo".into(),
            size: 0,
        };
        assert_eq!(chains[1].rules[1], mark_then(0x800, nflog));
    }

    #[test]
    fn staged_policies_render_no_chains() {
        let id = PolicyId {
            kind: "sgnp".into(),
            namespace: String::new(),
            name: "staged:default.foo".into(),
        };
        let policy = PolicyRules {
            inbound: vec![with_action(&ParsedRule::default(), "deny")],
            tier: TIER.into(),
            ..PolicyRules::default()
        };
        assert!(policy_chains(&test_cfg(), &id, &policy, 4).is_empty());
        assert!(policy_chains(&flow_cfg(), &id, &policy, 4).is_empty());
        let flagged = PolicyRules {
            staged: true,
            ..policy
        };
        assert!(policy_chains(&test_cfg(), &foo_id(), &flagged, 4).is_empty());
    }

    const CLEAR_BOTH_MARKS: &str = "-A test --jump MARK --set-mark 0x0/0x600";
    const PRE_SET_ALL_BLOCKS_MARK: &str = "-A test --jump MARK --set-mark 0x200/0x600";
    const ALLOW_IF_ALL_MARK: &str =
        "-A test -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80";
    const NFLOG_ALLOW: &str = "-A test -m mark --mark 0x80/0x80 --jump NFLOG --nflog-group 1 \
                               --nflog-prefix API0|gnp/default.foo --nflog-range 80";
    const ALLOW_IF_ALL_MARK_AND_TCP: &str =
        "-A test -p tcp -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80";
    const ALLOW_IF_ALL_MARK_AND_UDP: &str =
        "-A test -p udp -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80";
    const RETURN: &str = "-A test -m mark --mark 0x80/0x80 --jump RETURN";
    /// Ends every positive block after the first: clear all-blocks-pass unless this block passed.
    const ALL_BLOCKS_AND_THIS_BLOCK: &str =
        "-A test -m mark --mark 0/0x400 --jump MARK --set-mark 0/0x200";

    fn cidr_rule(src: usize, not_src: usize, dst: usize, not_dst: usize) -> ParsedRule {
        ParsedRule {
            src_net: strs(&["10.0.0.0/24", "10.0.1.0/24"][..src]),
            not_src_net: strs(&["11.0.0.0/24", "11.0.1.0/24"][..not_src]),
            dst_net: strs(&["12.0.0.0/24", "12.0.1.0/24"][..dst]),
            not_dst_net: strs(&["13.0.0.0/24", "13.0.1.0/24"][..not_dst]),
            action: "allow".into(),
            ..ParsedRule::default()
        }
    }

    #[test]
    fn cidrs_split_into_match_blocks_like_calico() {
        type Case<'a> = ((usize, usize, usize, usize), Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                (2, 0, 0, 0),
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test --source 10.0.0.0/24 --jump MARK --set-mark 0x200/0x200",
                    "-A test --source 10.0.1.0/24 --jump MARK --set-mark 0x200/0x200",
                    ALLOW_IF_ALL_MARK,
                    RETURN,
                ],
            ),
            (
                (0, 2, 0, 0),
                vec![
                    PRE_SET_ALL_BLOCKS_MARK,
                    "-A test --source 11.0.0.0/24 --jump MARK --set-mark 0/0x200",
                    "-A test --source 11.0.1.0/24 --jump MARK --set-mark 0/0x200",
                    ALLOW_IF_ALL_MARK,
                    RETURN,
                ],
            ),
            (
                (0, 0, 2, 0),
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test --destination 12.0.0.0/24 --jump MARK --set-mark 0x200/0x200",
                    "-A test --destination 12.0.1.0/24 --jump MARK --set-mark 0x200/0x200",
                    ALLOW_IF_ALL_MARK,
                    RETURN,
                ],
            ),
            (
                (0, 0, 0, 2),
                vec![
                    PRE_SET_ALL_BLOCKS_MARK,
                    "-A test --destination 13.0.0.0/24 --jump MARK --set-mark 0/0x200",
                    "-A test --destination 13.0.1.0/24 --jump MARK --set-mark 0/0x200",
                    ALLOW_IF_ALL_MARK,
                    RETURN,
                ],
            ),
            // Overflow of source even though each type would fit.
            (
                (1, 1, 0, 0),
                vec![
                    PRE_SET_ALL_BLOCKS_MARK,
                    "-A test --source 11.0.0.0/24 --jump MARK --set-mark 0/0x200",
                    "-A test --source 10.0.0.0/24 -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                (2, 1, 0, 0),
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test --source 10.0.0.0/24 --jump MARK --set-mark 0x200/0x200",
                    "-A test --source 10.0.1.0/24 --jump MARK --set-mark 0x200/0x200",
                    "-A test ! --source 11.0.0.0/24 -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                (0, 0, 1, 1),
                vec![
                    PRE_SET_ALL_BLOCKS_MARK,
                    "-A test --destination 13.0.0.0/24 --jump MARK --set-mark 0/0x200",
                    "-A test --destination 12.0.0.0/24 -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                (0, 0, 2, 1),
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test --destination 12.0.0.0/24 --jump MARK --set-mark 0x200/0x200",
                    "-A test --destination 12.0.1.0/24 --jump MARK --set-mark 0x200/0x200",
                    "-A test ! --destination 13.0.0.0/24 -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            // One of everything: only the negated ones overflow.
            (
                (1, 1, 1, 1),
                vec![
                    PRE_SET_ALL_BLOCKS_MARK,
                    "-A test --source 11.0.0.0/24 --jump MARK --set-mark 0/0x200",
                    "-A test --destination 13.0.0.0/24 --jump MARK --set-mark 0/0x200",
                    "-A test --source 10.0.0.0/24 --destination 12.0.0.0/24 -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            // Two of everything: everything overflows.
            (
                (2, 2, 2, 2),
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test --source 10.0.0.0/24 --jump MARK --set-mark 0x200/0x200",
                    "-A test --source 10.0.1.0/24 --jump MARK --set-mark 0x200/0x200",
                    "-A test --destination 12.0.0.0/24 --jump MARK --set-mark 0x400/0x400",
                    "-A test --destination 12.0.1.0/24 --jump MARK --set-mark 0x400/0x400",
                    ALL_BLOCKS_AND_THIS_BLOCK,
                    "-A test --source 11.0.0.0/24 --jump MARK --set-mark 0/0x200",
                    "-A test --source 11.0.1.0/24 --jump MARK --set-mark 0/0x200",
                    "-A test --destination 13.0.0.0/24 --jump MARK --set-mark 0/0x200",
                    "-A test --destination 13.0.1.0/24 --jump MARK --set-mark 0/0x200",
                    ALLOW_IF_ALL_MARK,
                    RETURN,
                ],
            ),
        ];
        for ((s, ns, d, nd), expected) in cases {
            let rule = cidr_rule(s, ns, d, nd);
            assert_eq!(
                texts(&render_foo(&test_cfg(), &rule, 4)),
                expected,
                "{s} src, {ns} !src, {d} dst, {nd} !dst"
            );
            // With flow logs, the NFLOG rule sits between the verdict and the RETURN.
            let mut with_nflog = expected.clone();
            with_nflog.insert(with_nflog.len() - 1, NFLOG_ALLOW);
            assert_eq!(
                texts(&render_foo(&flow_cfg(), &rule, 4)),
                with_nflog,
                "{s} src, {ns} !src, {d} dst, {nd} !dst, flow logs"
            );
        }
    }

    fn named_port_cases() -> Vec<(&'static str, ParsedRule, Vec<&'static str>)> {
        let d = ParsedRule::default;
        vec![
            (
                "Named port on its own rendered as single rule",
                ParsedRule {
                    protocol: name("tcp"),
                    src_named_port_ipset_ids: strs(&["ipset-1"]),
                    ..d()
                },
                vec![
                    "-A test -p tcp -m set --match-set cali40ipset-1 src,src --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                "Two source named ports need a block",
                ParsedRule {
                    protocol: name("udp"),
                    src_named_port_ipset_ids: strs(&["ipset-1", "ipset-2"]),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -m set --match-set cali40ipset-1 src,src --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-2 src,src --jump MARK --set-mark 0x200/0x200",
                    ALLOW_IF_ALL_MARK_AND_UDP,
                    RETURN,
                ],
            ),
            (
                "Multiple named + numeric source ports",
                ParsedRule {
                    protocol: name("tcp"),
                    src_ports: eight_ranges(),
                    src_named_port_ipset_ids: strs(&["ipset-1", "ipset-2", "ipset-3"]),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -p tcp -m multiport --source-ports 1:2,3:4,5:6,7:8,9:10,11:12,13:14 --jump MARK --set-mark 0x200/0x200",
                    "-A test -p tcp -m multiport --source-ports 15:16 --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-1 src,src --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-2 src,src --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-3 src,src --jump MARK --set-mark 0x200/0x200",
                    ALLOW_IF_ALL_MARK_AND_TCP,
                    RETURN,
                ],
            ),
            (
                "Overflow of numeric source ports",
                ParsedRule {
                    protocol: name("udp"),
                    src_ports: eight_ranges(),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -p udp -m multiport --source-ports 1:2,3:4,5:6,7:8,9:10,11:12,13:14 --jump MARK --set-mark 0x200/0x200",
                    "-A test -p udp -m multiport --source-ports 15:16 --jump MARK --set-mark 0x200/0x200",
                    ALLOW_IF_ALL_MARK_AND_UDP,
                    RETURN,
                ],
            ),
            (
                "Named + numeric source ports need a block",
                ParsedRule {
                    protocol: name("tcp"),
                    src_ports: vec![pr(1, 2)],
                    src_named_port_ipset_ids: strs(&["ipset-1"]),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -p tcp -m multiport --source-ports 1:2 --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-1 src,src --jump MARK --set-mark 0x200/0x200",
                    ALLOW_IF_ALL_MARK_AND_TCP,
                    RETURN,
                ],
            ),
            (
                "Single dest named port fits in rule",
                ParsedRule {
                    protocol: name("tcp"),
                    dst_named_port_ipset_ids: strs(&["ipset-1"]),
                    ..d()
                },
                vec![
                    "-A test -p tcp -m set --match-set cali40ipset-1 dst,dst --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                "Two dest named ports need a block",
                ParsedRule {
                    protocol: name("tcp"),
                    dst_named_port_ipset_ids: strs(&["ipset-1", "ipset-2"]),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -m set --match-set cali40ipset-1 dst,dst --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-2 dst,dst --jump MARK --set-mark 0x200/0x200",
                    ALLOW_IF_ALL_MARK_AND_TCP,
                    RETURN,
                ],
            ),
            (
                "Named + numeric dest ports need a block",
                ParsedRule {
                    protocol: name("tcp"),
                    dst_ports: vec![pr(1, 2)],
                    dst_named_port_ipset_ids: strs(&["ipset-1"]),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -p tcp -m multiport --destination-ports 1:2 --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-1 dst,dst --jump MARK --set-mark 0x200/0x200",
                    ALLOW_IF_ALL_MARK_AND_TCP,
                    RETURN,
                ],
            ),
            (
                "Positive source needs block only",
                ParsedRule {
                    protocol: name("udp"),
                    src_ports: vec![pr(1, 2)],
                    src_named_port_ipset_ids: strs(&["ipset-1"]),
                    dst_ports: vec![pr(3, 4)],
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -p udp -m multiport --source-ports 1:2 --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-1 src,src --jump MARK --set-mark 0x200/0x200",
                    "-A test -p udp -m multiport --destination-ports 3:4 -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                "Positive dest needs block only",
                ParsedRule {
                    protocol: name("tcp"),
                    src_ports: vec![pr(1, 2)],
                    dst_ports: vec![pr(3, 4)],
                    dst_named_port_ipset_ids: strs(&["ipset-1"]),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -p tcp -m multiport --destination-ports 3:4 --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-1 dst,dst --jump MARK --set-mark 0x200/0x200",
                    "-A test -p tcp -m multiport --source-ports 1:2 -m mark --mark 0x200/0x200 --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                "Positive source and dest need blocks",
                ParsedRule {
                    protocol: name("tcp"),
                    src_ports: vec![pr(1, 2)],
                    src_named_port_ipset_ids: strs(&["ipset-1"]),
                    dst_ports: vec![pr(3, 4)],
                    dst_named_port_ipset_ids: strs(&["ipset-2"]),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -p tcp -m multiport --source-ports 1:2 --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-1 src,src --jump MARK --set-mark 0x200/0x200",
                    "-A test -p tcp -m multiport --destination-ports 3:4 --jump MARK --set-mark 0x400/0x400",
                    "-A test -m set --match-set cali40ipset-2 dst,dst --jump MARK --set-mark 0x400/0x400",
                    ALL_BLOCKS_AND_THIS_BLOCK,
                    ALLOW_IF_ALL_MARK_AND_TCP,
                    RETURN,
                ],
            ),
            (
                "Overflow of numeric dest ports",
                ParsedRule {
                    protocol: name("udp"),
                    dst_ports: eight_ranges(),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -p udp -m multiport --destination-ports 1:2,3:4,5:6,7:8,9:10,11:12,13:14 --jump MARK --set-mark 0x200/0x200",
                    "-A test -p udp -m multiport --destination-ports 15:16 --jump MARK --set-mark 0x200/0x200",
                    ALLOW_IF_ALL_MARK_AND_UDP,
                    RETURN,
                ],
            ),
            (
                "Negated named + numeric source ports rendered in single rule",
                ParsedRule {
                    protocol: name("tcp"),
                    not_src_ports: vec![pr(1, 2)],
                    not_src_named_port_ipset_ids: strs(&["ipset-1"]),
                    ..d()
                },
                vec![
                    "-A test -p tcp -m multiport ! --source-ports 1:2 -m set ! --match-set cali40ipset-1 src,src --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                "Multiple negated named + numeric source ports rendered in single rule",
                ParsedRule {
                    protocol: name("tcp"),
                    not_src_ports: eight_ranges(),
                    not_src_named_port_ipset_ids: strs(&["ipset-1", "ipset-2", "ipset-3"]),
                    ..d()
                },
                vec![
                    "-A test -p tcp \
                     -m multiport ! --source-ports 1:2,3:4,5:6,7:8,9:10,11:12,13:14 \
                     -m multiport ! --source-ports 15:16 \
                     -m set ! --match-set cali40ipset-1 src,src \
                     -m set ! --match-set cali40ipset-2 src,src \
                     -m set ! --match-set cali40ipset-3 src,src \
                     --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                "Negated named + numeric dest ports rendered in single rule",
                ParsedRule {
                    protocol: name("tcp"),
                    not_dst_ports: vec![pr(1, 2)],
                    not_dst_named_port_ipset_ids: strs(&["ipset-1"]),
                    ..d()
                },
                vec![
                    "-A test -p tcp -m multiport ! --destination-ports 1:2 -m set ! --match-set cali40ipset-1 dst,dst --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
            (
                "numeric, named ports and CIDRs",
                ParsedRule {
                    protocol: name("tcp"),
                    src_ports: eight_ranges(),
                    src_named_port_ipset_ids: strs(&["ipset-1", "ipset-2", "ipset-3"]),
                    src_net: strs(&["10.1.0.0/16", "11.0.0.0/8"]),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    "-A test -p tcp -m multiport --source-ports 1:2,3:4,5:6,7:8,9:10,11:12,13:14 --jump MARK --set-mark 0x200/0x200",
                    "-A test -p tcp -m multiport --source-ports 15:16 --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-1 src,src --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-2 src,src --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-3 src,src --jump MARK --set-mark 0x200/0x200",
                    "-A test --source 10.1.0.0/16 --jump MARK --set-mark 0x400/0x400",
                    "-A test --source 11.0.0.0/8 --jump MARK --set-mark 0x400/0x400",
                    ALL_BLOCKS_AND_THIS_BLOCK,
                    ALLOW_IF_ALL_MARK_AND_TCP,
                    RETURN,
                ],
            ),
            (
                "positive and negated numeric, named ports and CIDRs",
                ParsedRule {
                    protocol: name("tcp"),
                    src_ports: eight_ranges(),
                    src_named_port_ipset_ids: strs(&["ipset-1"]),
                    src_net: strs(&["10.1.0.0/16", "11.0.0.0/8"]),
                    not_src_ports: vec![pr(101, 101)],
                    not_src_named_port_ipset_ids: strs(&["ipset-3"]),
                    not_src_net: strs(&["14.1.0.0/16", "15.0.0.0/8"]),
                    dst_ports: vec![pr(2, 3)],
                    dst_named_port_ipset_ids: strs(&["ipset-2"]),
                    dst_net: strs(&["12.1.0.0/16", "13.0.0.0/8"]),
                    not_dst_ports: vec![pr(201, 201)],
                    not_dst_named_port_ipset_ids: strs(&["ipset-4"]),
                    not_dst_net: strs(&["16.1.0.0/16", "17.0.0.0/8"]),
                    ..d()
                },
                vec![
                    CLEAR_BOTH_MARKS,
                    // Positive source port block.
                    "-A test -p tcp -m multiport --source-ports 1:2,3:4,5:6,7:8,9:10,11:12,13:14 --jump MARK --set-mark 0x200/0x200",
                    "-A test -p tcp -m multiport --source-ports 15:16 --jump MARK --set-mark 0x200/0x200",
                    "-A test -m set --match-set cali40ipset-1 src,src --jump MARK --set-mark 0x200/0x200",
                    // Positive destination port block.
                    "-A test -p tcp -m multiport --destination-ports 2:3 --jump MARK --set-mark 0x400/0x400",
                    "-A test -m set --match-set cali40ipset-2 dst,dst --jump MARK --set-mark 0x400/0x400",
                    ALL_BLOCKS_AND_THIS_BLOCK,
                    // Positive source CIDRs.
                    "-A test --source 10.1.0.0/16 --jump MARK --set-mark 0x400/0x400",
                    "-A test --source 11.0.0.0/8 --jump MARK --set-mark 0x400/0x400",
                    ALL_BLOCKS_AND_THIS_BLOCK,
                    // Positive destination CIDRs.
                    "-A test --destination 12.1.0.0/16 --jump MARK --set-mark 0x400/0x400",
                    "-A test --destination 13.0.0.0/8 --jump MARK --set-mark 0x400/0x400",
                    ALL_BLOCKS_AND_THIS_BLOCK,
                    // Negated source CIDRs.
                    "-A test --source 14.1.0.0/16 --jump MARK --set-mark 0/0x200",
                    "-A test --source 15.0.0.0/8 --jump MARK --set-mark 0/0x200",
                    // Negated destination CIDRs.
                    "-A test --destination 16.1.0.0/16 --jump MARK --set-mark 0/0x200",
                    "-A test --destination 17.0.0.0/8 --jump MARK --set-mark 0/0x200",
                    // Negated ports inline in the main rule.
                    "-A test -p tcp \
                     -m multiport ! --source-ports 101 \
                     -m set ! --match-set cali40ipset-3 src,src \
                     -m multiport ! --destination-ports 201 \
                     -m set ! --match-set cali40ipset-4 dst,dst \
                     -m mark --mark 0x200/0x200 \
                     --jump MARK --set-mark 0x80/0x80",
                    RETURN,
                ],
            ),
        ]
    }

    #[test]
    fn named_ports_render_like_calico() {
        for (desc, rule, expected) in named_port_cases() {
            assert_eq!(
                texts(&render_foo(&test_cfg(), &rule, 4)),
                expected,
                "{desc}"
            );
            let mut with_nflog = expected.clone();
            with_nflog.insert(with_nflog.len() - 1, NFLOG_ALLOW);
            assert_eq!(
                texts(&render_foo(&flow_cfg(), &rule, 4)),
                with_nflog,
                "{desc}, flow logs"
            );
        }
    }

    #[test]
    fn rules_of_the_other_ip_version_render_nothing() {
        let id = foo_id();
        let owner = RuleOwner::Policy {
            id: &id,
            tier: TIER,
        };
        let d = ParsedRule::default;
        let cases: Vec<(u8, ParsedRule)> = vec![
            (
                6,
                ParsedRule {
                    ip_version: Some(4),
                    ..d()
                },
            ),
            (
                6,
                ParsedRule {
                    src_net: strs(&["10.0.0.1"]),
                    ..d()
                },
            ),
            (
                4,
                ParsedRule {
                    src_net: strs(&["feed::beef"]),
                    ..d()
                },
            ),
            (
                6,
                ParsedRule {
                    dst_net: strs(&["10.0.0.1"]),
                    ..d()
                },
            ),
            (
                4,
                ParsedRule {
                    dst_net: strs(&["feed::beef"]),
                    ..d()
                },
            ),
            (
                6,
                ParsedRule {
                    not_src_net: strs(&["10.0.0.1"]),
                    ..d()
                },
            ),
            (
                4,
                ParsedRule {
                    not_src_net: strs(&["feed::beef"]),
                    ..d()
                },
            ),
            (
                6,
                ParsedRule {
                    not_dst_net: strs(&["10.0.0.1"]),
                    ..d()
                },
            ),
            (
                4,
                ParsedRule {
                    not_dst_net: strs(&["feed::beef"]),
                    ..d()
                },
            ),
            // Negated catch-alls can never match.
            (
                4,
                ParsedRule {
                    not_src_net: strs(&["0.0.0.0/0"]),
                    ..d()
                },
            ),
            (
                6,
                ParsedRule {
                    not_src_net: strs(&["::/0"]),
                    ..d()
                },
            ),
            (
                4,
                ParsedRule {
                    not_dst_net: strs(&["0.0.0.0/0"]),
                    ..d()
                },
            ),
            (
                6,
                ParsedRule {
                    not_dst_net: strs(&["::/0"]),
                    ..d()
                },
            ),
        ];
        for cfg in [test_cfg(), flow_cfg()] {
            for (ver, rule) in &cases {
                let rules = proto_rules_to_rules(
                    &cfg,
                    std::slice::from_ref(rule),
                    *ver,
                    owner,
                    RuleDir::Ingress,
                    false,
                    None,
                );
                assert!(rules.is_empty(), "v{ver} {rule:?}");
            }
        }

        // Mixed-version CIDR lists keep the CIDRs of the version being rendered.
        let mixed = ParsedRule {
            src_net: strs(&["10.0.0.1/32", "feed::beef/128"]),
            ..d()
        };
        assert_eq!(
            texts(&render_foo(&test_cfg(), &mixed, 6)),
            vec![
                "-A test --source feed::beef/128 --jump MARK --set-mark 0x80/0x80",
                RETURN
            ]
        );
        let v6 = ParsedRule {
            ip_version: Some(6),
            ..d()
        };
        assert_eq!(render_foo(&test_cfg(), &v6, 6).len(), 2);
    }

    #[test]
    fn unknown_actions_render_nothing() {
        let rule = with_action(&ParsedRule::default(), "frobnicate");
        assert!(render_foo(&test_cfg(), &rule, 4).is_empty());
    }

    #[test]
    fn port_lists_split_at_fifteen_slots() {
        assert!(split_port_list(&[]).is_empty());
        assert_eq!(split_port_list(&[pr(1, 1)]), vec![vec![pr(1, 1)]]);
        assert_eq!(split_port_list(&[pr(1, 10)]), vec![vec![pr(1, 10)]]);
        let singles = |n: u16| (1..=n).map(|p| pr(p, p)).collect::<Vec<_>>();
        assert_eq!(split_port_list(&singles(15)), vec![singles(15)]);
        assert_eq!(
            split_port_list(&singles(16)),
            vec![singles(15), vec![pr(16, 16)]]
        );
        let mut fits = eight_ranges();
        fits[7] = pr(15, 15);
        assert_eq!(split_port_list(&fits), vec![fits.clone()]);
        assert_eq!(
            split_port_list(&eight_ranges()),
            vec![eight_ranges()[..7].to_vec(), vec![pr(15, 16)]]
        );
        let mut long = eight_ranges();
        long.extend([
            pr(21, 22),
            pr(23, 24),
            pr(23, 26),
            pr(27, 28),
            pr(29, 210),
            pr(211, 212),
            pr(213, 214),
            pr(215, 216),
        ]);
        assert_eq!(
            split_port_list(&long),
            vec![
                long[..7].to_vec(),
                long[7..14].to_vec(),
                long[14..].to_vec()
            ]
        );
    }

    #[test]
    fn annotations_become_comments_on_every_rule() {
        let rule = ParsedRule {
            protocol: name("tcp"),
            annotations: [("testkey00", "testvalue00"), ("testkey01", "testvalue01")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ParsedRule::default()
        };
        // Also on the match block rules.
        let blocks = ParsedRule {
            src_net: strs(&["10.0.0.0/24", "10.0.1.0/24"]),
            ..rule.clone()
        };
        for cfg in [test_cfg(), flow_cfg()] {
            for (ver, rule) in [(4, &rule), (6, &rule), (4, &blocks)] {
                let rules = render_foo(&cfg, rule, ver);
                assert!(rules.len() >= 2);
                for r in &rules {
                    assert_eq!(
                        r.comments,
                        vec!["testkey00=testvalue00", "testkey01=testvalue01"]
                    );
                }
            }
        }
        // Annotations come before the chain comment on the first rule.
        let id = foo_id();
        let owner = RuleOwner::Policy {
            id: &id,
            tier: TIER,
        };
        let rules = proto_rules_to_rules(
            &test_cfg(),
            std::slice::from_ref(&rule),
            4,
            owner,
            RuleDir::Ingress,
            false,
            Some("GlobalNetworkPolicy default.foo ingress"),
        );
        assert_eq!(
            rules[0].comments,
            vec![
                "testkey00=testvalue00",
                "testkey01=testvalue01",
                "GlobalNetworkPolicy default.foo ingress"
            ]
        );
    }

    #[test]
    fn policy_chains_carry_a_comment_and_drop_trailing_returns() {
        let id = PolicyId::global("long-policy-name-that-gets-hashed");
        let policy = PolicyRules {
            inbound: vec![with_action(&ParsedRule::default(), "allow")],
            tier: TIER.into(),
            ..PolicyRules::default()
        };
        let chains = policy_chains(&test_cfg(), &id, &policy, 4);
        assert_eq!(
            chains,
            vec![
                Chain::new(
                    "cali-pi-_PymyFHQQg3808jiz1OJ",
                    vec![
                        Rule::action(Action::SetMark(0x80)).comment(
                            "GlobalNetworkPolicy long-policy-name-that-gets-hashed ingress"
                        )
                    ]
                ),
                Chain::new(
                    "cali-po-_PymyFHQQg3808jiz1OJ",
                    vec![
                        Rule::default().comment(
                            "GlobalNetworkPolicy long-policy-name-that-gets-hashed egress"
                        )
                    ]
                ),
            ]
        );

        let chains = policy_chains(&flow_cfg(), &id, &policy, 4);
        let nflog = Action::Nflog {
            group: 1,
            prefix: "API0|gnp/long-policy-name-that-gets-hashed".into(),
            size: 0,
        };
        assert_eq!(
            chains[0].rules,
            vec![
                Rule::action(Action::SetMark(0x80))
                    .comment("GlobalNetworkPolicy long-policy-name-that-gets-hashed ingress"),
                mark_then(0x80, nflog),
            ]
        );
    }

    #[test]
    fn profile_chains_carry_a_comment_and_drop_trailing_returns() {
        let name = "long-policy-name-that-gets-hashed";
        let allow = [with_action(&ParsedRule::default(), "allow")];
        assert_eq!(
            profile_chains(&test_cfg(), name, &allow, &[], 4),
            vec![
                Chain::new(
                    "cali-pri-_ffOMcf6pikpiZ6hgKc",
                    vec![
                        Rule::action(Action::SetMark(0x80))
                            .comment("Profile long-policy-name-that-gets-hashed ingress")
                    ]
                ),
                Chain::new(
                    "cali-pro-_ffOMcf6pikpiZ6hgKc",
                    vec![
                        Rule::default().comment("Profile long-policy-name-that-gets-hashed egress")
                    ]
                ),
            ]
        );
        let chains = profile_chains(&flow_cfg(), name, &allow, &[], 4);
        let nflog = Action::Nflog {
            group: 1,
            prefix: "ARI0|long-policy-name-that-gets-hashed".into(),
            size: 0,
        };
        assert_eq!(chains[0].rules[1], mark_then(0x80, nflog));
    }

    #[test]
    fn chain_names_follow_calico() {
        assert_eq!(
            policy_chain_name(POLICY_INBOUND_PREFIX, &foo_id(), false),
            "cali-pi-gnp/default.foo"
        );
        assert_eq!(
            policy_chain_name(
                POLICY_OUTBOUND_PREFIX,
                &PolicyId::global("long-policy-name-that-gets-hashed"),
                false
            ),
            "cali-po-_PymyFHQQg3808jiz1OJ"
        );
        // nftables allows 256 characters: nothing is hashed.
        assert_eq!(
            policy_chain_name(
                POLICY_INBOUND_PREFIX,
                &PolicyId::global("long-policy-name-that-gets-hashed"),
                true
            ),
            "cali-pi-gnp/long-policy-name-that-gets-hashed"
        );
        assert_eq!(
            profile_chain_name(PROFILE_INBOUND_PREFIX, "kns.default", false),
            "cali-pri-kns.default"
        );
        assert_eq!(
            profile_chain_name(PROFILE_OUTBOUND_PREFIX, "kns.calico-apiserver", false),
            "cali-pro-_kJqfZpgUe7r2t4A-14"
        );
        assert_eq!(
            profile_chain_name(PROFILE_INBOUND_PREFIX, "kns.calico-apiserver", true),
            "cali-pri-kns.calico-apiserver"
        );
    }

    #[test]
    fn nftables_mode_uses_nftables_set_names() {
        let cfg = RulesConfig {
            nftables: true,
            ..test_cfg()
        };
        let rule = ParsedRule {
            src_ipset_ids: strs(&["s:abc"]),
            ..ParsedRule::default()
        };
        assert_eq!(
            match_text(&render_foo(&cfg, &rule, 4)[0].matches),
            "-m set --match-set cali40s-abc src"
        );
    }

    #[test]
    fn nflog_prefixes_follow_calico() {
        fn owner(id: &PolicyId) -> RuleOwner<'_> {
            RuleOwner::Policy { id, tier: TIER }
        }
        let chars62 = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let chars63 = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0";
        let np = PolicyId::network_policy("namespace1", "default.policy");
        let cases = [
            (
                nflog_prefix(RuleAction::Allow, owner(&np), RuleDir::Ingress, 0),
                "API0|np/namespace1/default.policy".to_string(),
            ),
            (
                nflog_prefix(
                    RuleAction::Pass,
                    RuleOwner::Profile {
                        name: "short.profile.name",
                    },
                    RuleDir::Egress,
                    999,
                ),
                "PRE999|short.profile.name".to_string(),
            ),
            (
                nflog_prefix(
                    RuleAction::Deny,
                    owner(&PolicyId::global(chars62)),
                    RuleDir::Egress,
                    88,
                ),
                format!("DPE88|gnp/{chars62}"),
            ),
            (
                nflog_prefix(
                    RuleAction::Deny,
                    owner(&PolicyId::global(chars63)),
                    RuleDir::Ingress,
                    88,
                ),
                "DPI88|gnp/_12IXaBPahNM7a7dZhI8zg6PStmHsgneYaax8LVSIq_RSTUVWXYZ0".to_string(),
            ),
            (
                nflog_prefix(
                    RuleAction::Deny,
                    owner(&PolicyId::global(
                        "this-is-still-quite-a-long-tier-name-even-though-its-not-required.quite-a-long-policy-name",
                    )),
                    RuleDir::Egress,
                    1,
                ),
                "DPE1|gnp/t_FSGxA9eGa6t_A5Rj2agPvl4aq8-eohq0An6xEW4n7_olicy-name".to_string(),
            ),
            (
                nflog_prefix(
                    RuleAction::Deny,
                    owner(&PolicyId::global(
                        "this-is-still-quite-a-long-tier-name-even-though-its-not-required.quite-a-long-policy-name2",
                    )),
                    RuleDir::Egress,
                    2,
                ),
                "DPE2|gnp/t_G4MaamO0BQNQg8Ibyy-r9qg2HIK8-7EaPOVzsy5Nv_licy-name2".to_string(),
            ),
            (
                end_of_tier_drop_nflog_prefix(RuleDir::Egress, "tier-1"),
                "DPE|tier-1".to_string(),
            ),
            (
                end_of_tier_drop_nflog_prefix(
                    RuleDir::Ingress,
                    "tier-01234567890123456789012345678901234567890123456789012",
                ),
                "DPI|tier-01234567890123456789012345678901234567890123456789012".to_string(),
            ),
            (
                end_of_tier_drop_nflog_prefix(
                    RuleDir::Ingress,
                    "tier-012345678901234567890123456789012345678901234567890123",
                ),
                "DPI|tier-0_phEfG4Vhbq2xh4TQsePNa2X9YRj5peCVw1FgaNSbd_4567890123".to_string(),
            ),
            (
                end_of_tier_pass_nflog_prefix(RuleDir::Ingress, "tier-1"),
                "PPI|tier-1".to_string(),
            ),
            (
                no_match_profile_nflog_prefix(RuleDir::Ingress),
                "DRI".to_string(),
            ),
            (
                no_match_profile_nflog_prefix(RuleDir::Egress),
                "DRE".to_string(),
            ),
            (
                no_match_policy_nflog_prefix(RuleDir::Ingress, &np),
                "DPI|np/namespace1/default.policy".to_string(),
            ),
        ];
        for (actual, expected) in cases {
            assert_eq!(actual, expected);
            assert!(actual.len() <= NFLOG_PREFIX_MAX_LENGTH_WO_TERM);
        }
    }

    #[test]
    fn policy_kinds_map_to_calicos_comment_kinds() {
        // As on a Calico 3.30+ node: chain `cali-pi-_qA9lGysOzwIsyVf0V23`, comment
        // "KubernetesNetworkPolicy team-b/deny-from-other-ns ingress".
        let id = PolicyId {
            kind: "knp".into(),
            namespace: "team-b".into(),
            name: "deny-from-other-ns".into(),
        };
        let policy = PolicyRules {
            inbound: vec![ParsedRule {
                src_ipset_ids: strs(&["s:a_sG3wUbuH4Nz-nbt4Bl5Dz"]),
                ..ParsedRule::default()
            }],
            tier: TIER.into(),
            ..PolicyRules::default()
        };
        let chains = policy_chains(&RulesConfig::default(), &id, &policy, 4);
        assert_eq!(chains[0].name, "cali-pi-_qA9lGysOzwIsyVf0V23");
        assert_eq!(
            iptables_render(
                "-A",
                &chains[0].name,
                None,
                &chains[0].rules[0],
                "",
                &Features::default()
            ),
            "-A cali-pi-_qA9lGysOzwIsyVf0V23 \
             -m comment --comment \"KubernetesNetworkPolicy team-b/deny-from-other-ns ingress\" \
             -m set --match-set cali40s:a_sG3wUbuH4Nz-nbt4Bl5Dz src \
             --jump MARK --set-mark 0x10000/0x10000"
        );
        assert_eq!(policy_kind_name("np"), "NetworkPolicy");
        assert_eq!(policy_kind_name("kcnp"), "KubernetesClusterNetworkPolicy");
        assert_eq!(policy_kind_name("Something"), "Something");
        assert!(is_staged_kind("snp") && is_staged_kind("sknp"));
        assert!(is_staged_kind("StagedGlobalNetworkPolicy"));
        assert!(!is_staged_kind("gnp"));
    }

    fn hashes(chain: &Chain) -> Vec<String> {
        rule_hashes(chain, &Features::default())
    }

    /// Profile chains from `iptables -L` on a Calico v3.28.0 node (default marks), hashes from
    /// the `cali:` comments. Namespace profiles allow everything; service account profiles
    /// have no rules (a single action-less rule carrying the comment).
    #[test]
    fn golden_profile_chain_hashes() {
        let cfg = RulesConfig::default();
        let allow = [ParsedRule {
            action: "allow".into(),
            ..ParsedRule::default()
        }];
        let cases = [
            (
                "kns.calico-system",
                true,
                ["cali-pri-kns.calico-system", "cali-pro-kns.calico-system"],
                ["hLANj-OVIyT53h_j", "gWxJzCZXxl31NR0P"],
            ),
            (
                "kns.kube-system",
                true,
                ["cali-pri-kns.kube-system", "cali-pro-kns.kube-system"],
                ["J1TyxtHWd0qaBGK-", "tgOR2S8DVHZW3F1M"],
            ),
            (
                "kns.calico-apiserver",
                true,
                [
                    "cali-pri-_kJqfZpgUe7r2t4A-14",
                    "cali-pro-_kJqfZpgUe7r2t4A-14",
                ],
                ["IQx0SzlDGn6BPv0A", "_cFTxC141wwWRzyZ"],
            ),
            (
                "ksa.calico-apiserver.calico-apiserver",
                false,
                [
                    "cali-pri-_4yi5_iSUAwsU8zMHTk",
                    "cali-pro-_4yi5_iSUAwsU8zMHTk",
                ],
                ["ZYnaZZFwsSjfXO4C", "Pp_dQp2FeNabRhyi"],
            ),
            (
                "ksa.calico-system.calico-kube-controllers",
                false,
                [
                    "cali-pri-_nzzjLvInId1gPHmQz_",
                    "cali-pro-_nzzjLvInId1gPHmQz_",
                ],
                ["UQoEf2WCdU0bPTCb", "5bHxBXLMkJKgC6dk"],
            ),
            (
                "ksa.calico-system.default",
                false,
                [
                    "cali-pri-_og73BH3DuNOZrbBKFW",
                    "cali-pro-_og73BH3DuNOZrbBKFW",
                ],
                ["OzmBDJrkeSSUiXhX", "09a9ZBFOA1dZ4RN5"],
            ),
            (
                "ksa.kube-system.coredns",
                false,
                [
                    "cali-pri-_u2Tn2rSoAPffvE7JO6",
                    "cali-pro-_u2Tn2rSoAPffvE7JO6",
                ],
                ["WqgznqAQ-uYV0oBx", "0-_UPh39dt5XfhmJ"],
            ),
        ];
        for (profile, allows, names, expected) in cases {
            let rules: &[ParsedRule] = if allows { &allow } else { &[] };
            let chains = profile_chains(&cfg, profile, rules, rules, 4);
            assert_eq!(chains.len(), 2);
            for ((chain, name), hash) in chains.iter().zip(names).zip(expected) {
                assert_eq!(chain.name, name, "{profile}");
                assert_eq!(hashes(chain), vec![hash], "{profile} {name}");
            }
        }
    }

    /// Policy chains from real Calico nodes. Calico 3.28 named policy chains after
    /// `<ns>/<tier>.<name>` and commented them `Policy <ns>/<tier>.<name> <dir>` (today's
    /// Calico uses `<kind>/<ns>/<name>` and `<Kind> <ns>/<name> <dir>`), so these build the
    /// chain from the old ID and comment; the rule rendering is unchanged since.
    #[test]
    fn golden_policy_rule_hashes() {
        let cfg = RulesConfig::default();
        let id = PolicyId::network_policy("ns", "p");
        let owner = RuleOwner::Policy {
            id: &id,
            tier: TIER,
        };
        let chain_of = |chain_name: &str, comment: &str, rules: &[ParsedRule], dir: RuleDir| {
            Chain::new(
                chain_name,
                proto_rules_to_rules(&cfg, rules, 4, owner, dir, false, Some(comment)),
            )
        };

        // Calico v3.28.0, the API server's policy: allow TCP 5443 in.
        let chain_name = length_limited_id(
            POLICY_INBOUND_PREFIX,
            "calico-apiserver/knp.default.allow-apiserver",
            MAX_CHAIN_NAME_LENGTH,
        );
        assert_eq!(chain_name, "cali-pi-_3CJ_GmvE9pcCktVJ2ep");
        let rule = ParsedRule {
            action: "allow".into(),
            protocol: name("tcp"),
            dst_ports: vec![pr(5443, 5443)],
            ..ParsedRule::default()
        };
        let chain = chain_of(
            &chain_name,
            "Policy calico-apiserver/knp.default.allow-apiserver ingress",
            std::slice::from_ref(&rule),
            RuleDir::Ingress,
        );
        assert_eq!(hashes(&chain), vec!["I0yo8ky1YADcMXRf"]);

        // A Kubernetes policy allowing TCP 80 from pods selected by an IP set (AKS node).
        let chain_name = length_limited_id(
            POLICY_INBOUND_PREFIX,
            "demo/knp.default.demo-policy",
            MAX_CHAIN_NAME_LENGTH,
        );
        assert_eq!(chain_name, "cali-pi-_f33B8osgBB9KBtqM0k-");
        let rule = ParsedRule {
            action: "allow".into(),
            protocol: name("tcp"),
            src_ipset_ids: strs(&["s:N7qB4dD1ts0--qbzE-HjtMk"]),
            dst_ports: vec![pr(80, 80)],
            ..ParsedRule::default()
        };
        let chain = chain_of(
            &chain_name,
            "Policy demo/knp.default.demo-policy ingress",
            std::slice::from_ref(&rule),
            RuleDir::Ingress,
        );
        assert_eq!(hashes(&chain), vec!["d1YRlouMUUtO1U0c"]);

        // An egress rule needing match blocks starts with the mark reset (0x180000 are the
        // default scratch bits); only that first rule's hash was published.
        let rule = ParsedRule {
            action: "allow".into(),
            protocol: name("tcp"),
            dst_net: strs(&["10.0.0.0/24", "10.0.1.0/24"]),
            dst_ports: vec![pr(7070, 7070)],
            ..ParsedRule::default()
        };
        let chain = chain_of(
            "cali-po-_sQdl6e7ekf9DS2UYNem",
            "Policy hipstershop/app-hipstershop.checkoutservice egress",
            std::slice::from_ref(&rule),
            RuleDir::Egress,
        );
        assert_eq!(hashes(&chain)[0], "NrlO0UOCu-NgEXYU");
    }

    /// A whole allow rule with flow logs from a Calico Enterprise node (`iptables -nvL`: MARK,
    /// NFLOG, RETURN). That version kept the trailing RETURN and had IDs of the form
    /// `<ns>/<tier>.<name>`, so this renders with [`rule_to_rules`] and an owner whose ID reads
    /// the same (`kind` "hipstershop", no namespace). Checks the NFLOG rule byte for byte.
    #[test]
    fn golden_flow_logged_allow_rule_hashes() {
        let cfg = RulesConfig {
            flow_logs_enabled: true,
            ..RulesConfig::default()
        };
        let id = PolicyId {
            kind: "hipstershop".into(),
            namespace: String::new(),
            name: "app-hipstershop.checkoutservice".into(),
        };
        let owner = RuleOwner::Policy {
            id: &id,
            tier: "app-hipstershop",
        };
        let rule = ParsedRule {
            action: "allow".into(),
            protocol: name("tcp"),
            src_ipset_ids: strs(&["s:_DJYf5MR3V3B4fL2YDPlFn7"]),
            dst_ports: vec![pr(5050, 5050)],
            ..ParsedRule::default()
        };
        let mut rules = rule_to_rules(&cfg, owner, RuleDir::Ingress, 0, &rule, 4, false);
        rules[0]
            .comments
            .push("Policy hipstershop/app-hipstershop.checkoutservice ingress".into());
        let chain = Chain::new("cali-pi-_sQdl6e7ekf9DS2UYNem", rules);
        assert_eq!(
            hashes(&chain),
            vec!["fwIMoHrbCWNN0i6y", "jtt9uTELeZiK6HTc", "49i8yZ9WeeBJcJFx"]
        );
    }
}
