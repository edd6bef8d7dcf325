//! Per-endpoint chains (Calico's `felix/rules/endpoints.go`): `cali-tw-`/`cali-fw-` for
//! workloads, `cali-th-`/`cali-fh-`/`cali-thfw-`/`cali-fhfw-` for host endpoints, the IPVS
//! `cali-sm-` mark chains, and the policy group chains (`cali-gi-`/`cali-go-`) that runs of
//! policies sharing a selector are rendered into.
//!
//! An endpoint chain lets established traffic through, clears the verdict marks, then per tier
//! jumps to each policy (or group) while no policy has set the pass mark; a policy that accepts
//! sets the accept mark and the endpoint chain returns (the caller acts on the mark), a policy
//! that passes makes the rest of the tier a no-op, and a tier nobody passed through ends in a
//! deny. Profiles come last, and nothing matching means deny.

use base64::Engine as _;
use sha3::{Digest as _, Sha3_224};

use super::dispatch::{EndpointMarkMapper, SET_END_POINT_MARK_PREFIX};
use super::policy::{
    NFT_MAX_CHAIN_NAME_LENGTH, RuleDir, end_of_tier_drop_nflog_prefix,
    end_of_tier_pass_nflog_prefix, is_staged_kind, no_match_profile_nflog_prefix,
    policy_chain_name, policy_kind_name, profile_chain_name,
};
use super::{
    CHAIN_FAILSAFE_IN, CHAIN_FAILSAFE_OUT, Direction, HOST_FROM_ENDPOINT_FORWARD_PREFIX,
    HOST_FROM_ENDPOINT_PREFIX, HOST_TO_ENDPOINT_FORWARD_PREFIX, HOST_TO_ENDPOINT_PREFIX,
    MAX_CHAIN_NAME_LENGTH, POLICY_GROUP_INBOUND_PREFIX, POLICY_GROUP_OUTBOUND_PREFIX,
    POLICY_INBOUND_PREFIX, POLICY_OUTBOUND_PREFIX, PROFILE_INBOUND_PREFIX, PROFILE_OUTBOUND_PREFIX,
    PolicyGroup, PolicyId, RulesConfig, TierPolicyGroups, WORKLOAD_FROM_ENDPOINT_PREFIX,
    WORKLOAD_TO_ENDPOINT_PREFIX, length_limited_id,
};
use crate::generic::{Action, Chain, MatchCriteria, PortRange, Rule};

const PROTO_IPIP: u8 = 4;
const PROTO_UDP: u8 = 17;

/// A tier whose default action is this lets packets no policy decided on go to the next tier.
const TIER_DEFAULT_ACTION_PASS: &str = "Pass";

/// A group chain returns on a verdict only every this many jumps: fewer rules, and once a
/// policy has set a mark the following jumps are no-ops anyway (they match on clear marks).
const POLICY_GROUP_RETURN_STRIDE: usize = 5;

/// Group UIDs are cut so that `cali-gi-` + UID is exactly a full iptables chain name.
pub const MAX_POLICY_GROUP_UID_LENGTH: usize =
    MAX_CHAIN_NAME_LENGTH - POLICY_GROUP_INBOUND_PREFIX.len();

/// `prefix + iface`, hashed down to the chain name limit (28 characters for iptables) when
/// longer (Calico's `EndpointChainName`).
pub fn endpoint_chain_name(prefix: &str, iface: &str, nftables: bool) -> String {
    let max = if nftables {
        NFT_MAX_CHAIN_NAME_LENGTH
    } else {
        MAX_CHAIN_NAME_LENGTH
    };
    length_limited_id(prefix, iface, max)
}

/// `cali-tw-<iface>` (traffic to the workload: ingress policy) and `cali-fw-<iface>` (from it:
/// egress policy), in that order (Calico's `WorkloadEndpointToIptablesChains`). An admin-down
/// endpoint's chains only drop. VXLAN and IPIP from the workload are dropped unless allowed:
/// encapsulation could smuggle traffic past egress policy.
///
/// With `kube_ipvs_support_enabled`, Calico also renders the endpoint's `cali-sm-` chain: see
/// [`with_set_mark_chain`].
pub fn workload_endpoint_to_iptables_chains(
    c: &RulesConfig,
    iface_name: &str,
    admin_up: bool,
    tiers: &[TierPolicyGroups],
    profile_ids: &[String],
) -> Vec<Chain> {
    let to = EndpointChainSpec {
        tiers,
        profile_ids,
        iface: iface_name,
        endpoint_prefix: WORKLOAD_TO_ENDPOINT_PREFIX,
        // No failsafes for workloads.
        failsafe_chain: None,
        chain_type: ChainType::Normal,
        admin_up,
        direction: Direction::Inbound,
        // Workload chains live in the filter table only.
        allow_action: c.filter_allow(),
        allow_vxlan_encap: true,
        allow_ipip_encap: true,
    };
    let from = EndpointChainSpec {
        endpoint_prefix: WORKLOAD_FROM_ENDPOINT_PREFIX,
        direction: Direction::Outbound,
        allow_vxlan_encap: c.allow_vxlan_packets_from_workloads,
        allow_ipip_encap: c.allow_ipip_packets_from_workloads,
        ..to.clone()
    };
    vec![endpoint_chain(c, &to), endpoint_chain(c, &from)]
}

/// `cali-sm-<iface>`: sets the endpoint's mark (IPVS support, see
/// [`super::dispatch::endpoint_mark_dispatch_chains`]). Empty when no mark is left, as in
/// Calico (the endpoint then gets the non-Calico mark's treatment).
pub fn endpoint_set_mark_chain(
    c: &RulesConfig,
    iface_name: &str,
    mapper: &mut EndpointMarkMapper,
) -> Chain {
    let name = endpoint_chain_name(SET_END_POINT_MARK_PREFIX, iface_name, c.nftables);
    let rules = match mapper.endpoint_mark(iface_name) {
        Ok(mark) => vec![Rule::action(Action::SetMaskedMark {
            mark,
            mask: mapper.mask(),
        })],
        Err(_) => Vec::new(),
    };
    Chain::new(name, rules)
}

/// `chains` followed, with `kube_ipvs_support_enabled`, by the endpoint's `cali-sm-` chain, as
/// Calico renders workload and host endpoint filter chains: e.g.
/// `with_set_mark_chain(c, workload_endpoint_to_iptables_chains(..), iface, mapper)`.
pub fn with_set_mark_chain(
    c: &RulesConfig,
    mut chains: Vec<Chain>,
    iface_name: &str,
    mapper: &mut EndpointMarkMapper,
) -> Vec<Chain> {
    if c.kube_ipvs_support_enabled {
        chains.push(endpoint_set_mark_chain(c, iface_name, mapper));
    }
    chains
}

/// The filter-table chains of a host endpoint, in Calico's order
/// (`HostEndpointToFilterChains`): `cali-th-` (host → endpoint: egress policy) and `cali-fh-`
/// (endpoint → host: ingress policy), both with the failsafe jumps and profiles; then
/// `cali-thfw-` / `cali-fhfw-` for forwarded traffic (`forward_tiers`: applyOnForward policy),
/// which is allowed when no such policy applies.
pub fn host_endpoint_to_filter_chains(
    c: &RulesConfig,
    iface_name: &str,
    tiers: &[TierPolicyGroups],
    forward_tiers: &[TierPolicyGroups],
    profile_ids: &[String],
) -> Vec<Chain> {
    let to_host_ep = host_spec(
        c,
        iface_name,
        tiers,
        profile_ids,
        Direction::Outbound,
        ChainType::Normal,
    );
    let from_host_ep = host_spec(
        c,
        iface_name,
        tiers,
        profile_ids,
        Direction::Inbound,
        ChainType::Normal,
    );
    let to_fwd = EndpointChainSpec {
        tiers: forward_tiers,
        endpoint_prefix: HOST_TO_ENDPOINT_FORWARD_PREFIX,
        // No failsafes for forwarded traffic.
        failsafe_chain: None,
        chain_type: ChainType::Forward,
        ..to_host_ep.clone()
    };
    let from_fwd = EndpointChainSpec {
        tiers: forward_tiers,
        endpoint_prefix: HOST_FROM_ENDPOINT_FORWARD_PREFIX,
        failsafe_chain: None,
        chain_type: ChainType::Forward,
        ..from_host_ep.clone()
    };
    vec![
        endpoint_chain(c, &to_host_ep),
        endpoint_chain(c, &from_host_ep),
        endpoint_chain(c, &to_fwd),
        endpoint_chain(c, &from_fwd),
    ]
}

/// `cali-th-<iface>` in the mangle table (Calico's `HostEndpointToMangleEgressChains`): normal
/// egress policy for DNAT'd host traffic, but allowed packets RETURN rather than ACCEPT, since
/// the mangle table may still have to manipulate them.
pub fn host_endpoint_to_mangle_egress_chains(
    c: &RulesConfig,
    iface_name: &str,
    tiers: &[TierPolicyGroups],
    profile_ids: &[String],
) -> Vec<Chain> {
    let spec = EndpointChainSpec {
        allow_action: Action::Return,
        ..host_spec(
            c,
            iface_name,
            tiers,
            profile_ids,
            Direction::Outbound,
            ChainType::Normal,
        )
    };
    vec![endpoint_chain(c, &spec)]
}

/// `cali-th-<iface>` in the raw table for untracked policy (Calico's
/// `HostEndpointToRawEgressChain`): no conntrack rules, an accepted packet is also NOTRACKed,
/// and no end-of-tier drop or profiles (the filter table still has its say).
pub fn host_endpoint_to_raw_egress_chain(
    c: &RulesConfig,
    iface_name: &str,
    untracked_tiers: &[TierPolicyGroups],
) -> Chain {
    let spec = EndpointChainSpec {
        allow_action: Action::Accept,
        ..host_spec(
            c,
            iface_name,
            untracked_tiers,
            &[],
            Direction::Outbound,
            ChainType::Untracked,
        )
    };
    endpoint_chain(c, &spec)
}

/// `cali-th-` and `cali-fh-` in the raw table for untracked policy (Calico's
/// `HostEndpointToRawChains`).
pub fn host_endpoint_to_raw_chains(
    c: &RulesConfig,
    iface_name: &str,
    untracked_tiers: &[TierPolicyGroups],
) -> Vec<Chain> {
    let from = EndpointChainSpec {
        allow_action: Action::Accept,
        ..host_spec(
            c,
            iface_name,
            untracked_tiers,
            &[],
            Direction::Inbound,
            ChainType::Untracked,
        )
    };
    vec![
        host_endpoint_to_raw_egress_chain(c, iface_name, untracked_tiers),
        endpoint_chain(c, &from),
    ]
}

/// `cali-fh-<iface>` in the mangle table for pre-DNAT policy (Calico's
/// `HostEndpointToMangleIngressChains`): ingress only, no profiles, no end-of-tier drop (the
/// filter table decides later, on the DNAT'd packet).
pub fn host_endpoint_to_mangle_ingress_chains(
    c: &RulesConfig,
    iface_name: &str,
    pre_dnat_tiers: &[TierPolicyGroups],
) -> Vec<Chain> {
    let spec = EndpointChainSpec {
        allow_action: c.mangle_allow(),
        ..host_spec(
            c,
            iface_name,
            pre_dnat_tiers,
            &[],
            Direction::Inbound,
            ChainType::PreDnat,
        )
    };
    vec![endpoint_chain(c, &spec)]
}

/// A host endpoint's `cali-th-`/`cali-fh-` chain (by `direction`) with its failsafe jump.
fn host_spec<'a>(
    c: &RulesConfig,
    iface: &'a str,
    tiers: &'a [TierPolicyGroups],
    profile_ids: &'a [String],
    direction: Direction,
    chain_type: ChainType,
) -> EndpointChainSpec<'a> {
    let (endpoint_prefix, failsafe) = match direction {
        Direction::Inbound => (HOST_FROM_ENDPOINT_PREFIX, CHAIN_FAILSAFE_IN),
        Direction::Outbound => (HOST_TO_ENDPOINT_PREFIX, CHAIN_FAILSAFE_OUT),
    };
    EndpointChainSpec {
        tiers,
        profile_ids,
        iface,
        endpoint_prefix,
        failsafe_chain: Some(failsafe),
        chain_type,
        // Host endpoints are always admin up.
        admin_up: true,
        direction,
        allow_action: c.filter_allow(),
        // Encapsulated traffic to and from the host itself is normal.
        allow_vxlan_encap: true,
        allow_ipip_encap: true,
    }
}

/// Which table and purpose an endpoint chain is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainType {
    /// Filter (or mangle egress) chains: conntrack, end-of-tier drops, profiles.
    Normal,
    /// Raw table: no conntrack, allow means NOTRACK too, no drops.
    Untracked,
    /// Mangle PREROUTING: no drops, no profiles.
    PreDnat,
    /// Forwarded host endpoint traffic: allowed when no tier applies, no profiles.
    Forward,
}

/// Calico's `endpointIptablesChain` arguments. `direction` stands for Calico's policy
/// direction, rule direction, policy/profile chain prefixes and NFLOG group together (they
/// always go together).
#[derive(Clone)]
struct EndpointChainSpec<'a> {
    tiers: &'a [TierPolicyGroups],
    profile_ids: &'a [String],
    iface: &'a str,
    endpoint_prefix: &'a str,
    failsafe_chain: Option<&'a str>,
    chain_type: ChainType,
    admin_up: bool,
    direction: Direction,
    allow_action: Action,
    allow_vxlan_encap: bool,
    allow_ipip_encap: bool,
}

/// The rule direction of a policy direction (for NFLOG prefixes and groups).
fn rule_dir(d: Direction) -> RuleDir {
    match d {
        Direction::Inbound => RuleDir::Ingress,
        Direction::Outbound => RuleDir::Egress,
    }
}

/// How Calico names the deny action in comments (its action's `String()`).
fn deny_name(deny: &Action) -> &'static str {
    match deny {
        Action::Reject { .. } => "Reject",
        _ => "Drop",
    }
}

fn endpoint_chain(c: &RulesConfig, s: &EndpointChainSpec<'_>) -> Chain {
    let name = endpoint_chain_name(s.endpoint_prefix, s.iface, c.nftables);
    if !s.admin_up {
        return Chain::new(
            name,
            vec![Rule::action(c.filter_deny()).comment("Endpoint admin disabled")],
        );
    }
    let mut rules = Vec::new();
    if s.chain_type != ChainType::Untracked {
        // Stateful: return traffic of an allowed connection is allowed.
        rules.extend(conntrack_rules(c, &s.allow_action));
    }
    if let Some(failsafe) = s.failsafe_chain {
        rules.push(Rule::action(Action::Jump(failsafe.to_string())));
    }
    // Policy chains report their verdict in these bits, so they must start clear.
    rules.push(Rule::action(Action::ClearMark(c.mark_accept | c.mark_pass)));
    rules.extend(encap_drop_rules(c, s));
    for tier in s.tiers {
        rules.extend(tier_rules(c, s, tier));
    }
    if s.tiers.is_empty() && s.chain_type == ChainType::Forward {
        // Forwarded traffic is allowed when no applyOnForward policy applies here.
        rules.push(
            Rule::action(Action::SetMark(c.mark_accept))
                .comment("Allow forwarded traffic by default"),
        );
        rules.push(Rule::action(Action::Return).comment("Return for accepted forward traffic"));
    }
    if s.chain_type == ChainType::Normal {
        rules.extend(profile_rules(c, s));
    }
    Chain::new(name, rules)
}

/// Calico's `appendConntrackRules`.
fn conntrack_rules(c: &RulesConfig, allow: &Action) -> Vec<Rule> {
    let established = || MatchCriteria::new().conntrack_state("RELATED,ESTABLISHED");
    let mut rules = Vec::new();
    if *allow != Action::Accept {
        // Returning rather than accepting: flag the packet as allowed for the caller.
        rules.push(Rule::new(established(), Action::SetMark(c.mark_accept)));
    }
    rules.push(Rule::new(established(), allow.clone()));
    if !c.disable_conntrack_invalid {
        // Neither a valid handshake nor part of a known connection.
        rules.push(Rule::new(
            MatchCriteria::new().conntrack_state("INVALID"),
            c.filter_deny(),
        ));
    }
    rules
}

fn encap_drop_rules(c: &RulesConfig, s: &EndpointChainSpec<'_>) -> Vec<Rule> {
    let deny = c.filter_deny();
    let deny_word = deny_name(&deny);
    let mut rules = Vec::new();
    if !s.allow_vxlan_encap {
        rules.push(
            Rule::new(
                MatchCriteria::new()
                    .protocol_num(PROTO_UDP)
                    .dest_ports(vec![PortRange::single(c.vxlan_port)]),
                deny.clone(),
            )
            .comment(format!(
                "{deny_word} VXLAN encapped packets originating in workloads"
            )),
        );
    }
    if !s.allow_ipip_encap {
        rules.push(
            Rule::new(MatchCriteria::new().protocol_num(PROTO_IPIP), deny).comment(format!(
                "{deny_word} IPinIP encapped packets originating in workloads"
            )),
        );
    }
    rules
}

/// One tier's block: clear the pass mark, jump to each policy or group until one passes, return
/// on accept, and (filter chains) deny what no policy passed.
fn tier_rules(c: &RulesConfig, s: &EndpointChainSpec<'_>, tier: &TierPolicyGroups) -> Vec<Rule> {
    let groups = match s.direction {
        Direction::Inbound => &tier.ingress,
        Direction::Outbound => &tier.egress,
    };
    if groups.is_empty() {
        return Vec::new();
    }
    let pass_clear = || MatchCriteria::new().mark_clear(c.mark_pass);
    let accepted = || MatchCriteria::new().mark_single_bit_set(c.mark_accept);
    // A policy that passes sets the pass mark: the rest of the tier is skipped.
    let mut rules = vec![
        Rule::action(Action::ClearMark(c.mark_pass))
            .comment(format!("Start of tier {}", tier.name)),
    ];
    // A tier whose policies are all staged passes rather than drops.
    let mut end_of_tier_drop = false;
    for group in groups {
        let enforced = has_non_staged_policies(group);
        end_of_tier_drop |= enforced;
        for target in jump_targets(c, s.direction, group) {
            rules.push(Rule::new(pass_clear(), Action::Jump(target)));
            // Staged policies never set a mark: nothing to return on.
            if !enforced {
                continue;
            }
            if s.chain_type == ChainType::Untracked {
                // Untracked allow is "NOTRACK and allow".
                rules.push(Rule::new(accepted(), Action::NoTrack));
            }
            // Return rather than accept: there may be other policy still to apply.
            rules.push(Rule::new(accepted(), Action::Return).comment("Return if policy accepted"));
        }
    }
    // Untracked and pre-DNAT chains leave the final say to the filter table.
    if !matches!(s.chain_type, ChainType::Normal | ChainType::Forward) {
        return rules;
    }
    let dir = rule_dir(s.direction);
    let nflog = |prefix: String| Action::Nflog {
        group: dir.nflog_group(),
        prefix,
        size: 0,
    };
    if end_of_tier_drop && tier.default_action != TIER_DEFAULT_ACTION_PASS {
        if c.flow_logs_enabled {
            rules.push(Rule::new(
                pass_clear(),
                nflog(end_of_tier_drop_nflog_prefix(dir, &tier.name)),
            ));
        }
        let deny = c.filter_deny();
        let comment = format!(
            "End of tier {}. {} if no policies passed packet",
            tier.name,
            deny_name(&deny)
        );
        rules.push(Rule::new(pass_clear(), deny).comment(comment));
    } else if c.flow_logs_enabled {
        // Lets the flow log collector see that the tier's end was reached.
        rules.push(Rule::new(
            pass_clear(),
            nflog(end_of_tier_pass_nflog_prefix(dir, &tier.name)),
        ));
    }
    rules
}

/// The chains an endpoint chain jumps to for a group: the group's own chain, or, for a group
/// small enough to be inlined, its enforced policies' chains.
fn jump_targets(c: &RulesConfig, direction: Direction, group: &PolicyGroup) -> Vec<String> {
    if !should_be_inlined(group) {
        return vec![policy_group_chain_name(group, c.nftables)];
    }
    let prefix = match direction {
        Direction::Inbound => POLICY_INBOUND_PREFIX,
        Direction::Outbound => POLICY_OUTBOUND_PREFIX,
    };
    enforced_policies(group)
        .map(|id| policy_chain_name(prefix, id, c.nftables))
        .collect()
}

/// Jump to each profile, return on accept, deny if none accepted.
fn profile_rules(c: &RulesConfig, s: &EndpointChainSpec<'_>) -> Vec<Rule> {
    let prefix = match s.direction {
        Direction::Inbound => PROFILE_INBOUND_PREFIX,
        Direction::Outbound => PROFILE_OUTBOUND_PREFIX,
    };
    let mut rules = Vec::new();
    for profile in s.profile_ids {
        rules.push(Rule::action(Action::Jump(profile_chain_name(
            prefix, profile, c.nftables,
        ))));
        rules.push(
            Rule::new(
                MatchCriteria::new().mark_single_bit_set(c.mark_accept),
                Action::Return,
            )
            .comment("Return if profile accepted"),
        );
    }
    let dir = rule_dir(s.direction);
    if c.flow_logs_enabled {
        rules.push(Rule::action(Action::Nflog {
            group: dir.nflog_group(),
            prefix: no_match_profile_nflog_prefix(dir),
            size: 0,
        }));
    }
    let deny = c.filter_deny();
    let comment = format!("{} if no profiles matched", deny_name(&deny));
    rules.push(Rule::action(deny).comment(comment));
    rules
}

/// Consecutive policies of one tier and direction (in order) with equal selectors form one
/// group, as Calico's endpoint manager groups them (`groupPolicies`): any endpoint one of them
/// applies to, they all apply to, so endpoints can share the group's chain. `tier_policies`
/// are `(id, selector, staged)`.
pub fn group_policies(
    direction: Direction,
    tier_policies: &[(PolicyId, String, bool)],
) -> Vec<PolicyGroup> {
    let mut groups: Vec<PolicyGroup> = Vec::new();
    for (id, selector, staged) in tier_policies {
        if let Some(group) = groups.last_mut().filter(|g| g.selector == *selector) {
            group.policies.push(id.clone());
            group.staged.push(*staged);
            continue;
        }
        groups.push(PolicyGroup {
            direction,
            policies: vec![id.clone()],
            selector: selector.clone(),
            staged: vec![*staged],
        });
    }
    groups
}

/// Whether the group's `i`th policy is staged, by flag or by kind.
fn is_staged(group: &PolicyGroup, i: usize) -> bool {
    group.staged.get(i) == Some(&true)
        || group
            .policies
            .get(i)
            .is_some_and(|p| is_staged_kind(&p.kind))
}

/// The policies that are rendered: staged ones never are.
fn enforced_policies(group: &PolicyGroup) -> impl Iterator<Item = &PolicyId> {
    group
        .policies
        .iter()
        .enumerate()
        .filter(move |(i, _)| !is_staged(group, *i))
        .map(|(_, id)| id)
}

/// Whether any of the group's policies is enforced (Calico's `HasNonStagedPolicies`).
pub fn has_non_staged_policies(group: &PolicyGroup) -> bool {
    enforced_policies(group).next().is_some()
}

/// A group with at most one enforced policy gets no chain of its own: endpoint chains jump to
/// the policy directly, saving a jump (Calico's `ShouldBeInlined`).
pub fn should_be_inlined(group: &PolicyGroup) -> bool {
    enforced_policies(group).nth(1).is_none()
}

/// Calico's full kind name, as its `PolicyID.String()` (hashed into group names) shows it. A
/// policy flagged staged has Calico's staged kind.
fn calico_kind(kind: &str, staged: bool) -> &str {
    match (kind, staged) {
        ("np", true) => "StagedNetworkPolicy",
        ("gnp", true) => "StagedGlobalNetworkPolicy",
        ("knp", true) => "StagedKubernetesNetworkPolicy",
        _ => policy_kind_name(kind),
    }
}

/// Calico's `PolicyGroup.UniqueID()`: base64url(SHA3-224) of the selector, the direction, the
/// number of policies and each policy's Go `String()`, one per line (so that the parts can't
/// run into each other), cut to [`MAX_POLICY_GROUP_UID_LENGTH`] characters.
pub fn policy_group_unique_id(group: &PolicyGroup) -> String {
    fn line(h: &mut Sha3_224, s: &str) {
        h.update(s.as_bytes());
        h.update(b"\n");
    }
    let mut h = Sha3_224::new();
    line(&mut h, &group.selector);
    line(
        &mut h,
        match group.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        },
    );
    line(&mut h, &group.policies.len().to_string());
    for (i, id) in group.policies.iter().enumerate() {
        line(
            &mut h,
            &format!(
                "{{Name: {}, Namespace: {}, Kind: {}}}",
                id.name,
                id.namespace,
                calico_kind(&id.kind, is_staged(group, i))
            ),
        );
    }
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize());
    encoded.chars().take(MAX_POLICY_GROUP_UID_LENGTH).collect()
}

/// `cali-gi-<uid>` or `cali-go-<uid>` (Calico's `PolicyGroup.ChainName()`). The name is the
/// same in both modes: Calico sizes it for iptables and nftables has room to spare.
pub fn policy_group_chain_name(group: &PolicyGroup, _nftables: bool) -> String {
    let prefix = match group.direction {
        Direction::Inbound => POLICY_GROUP_INBOUND_PREFIX,
        Direction::Outbound => POLICY_GROUP_OUTBOUND_PREFIX,
    };
    format!("{prefix}{}", policy_group_unique_id(group))
}

/// The group's chain (Calico's `PolicyGroupToIptablesChains`): a jump to each enforced policy
/// while no verdict mark is set, and a RETURN on a verdict every
/// [`POLICY_GROUP_RETURN_STRIDE`] jumps. Like Calico's endpoint manager, callers program it
/// only for groups that are not [`should_be_inlined`] (nothing jumps to the others).
pub fn policy_group_chains(c: &RulesConfig, group: &PolicyGroup) -> Vec<Chain> {
    let prefix = match group.direction {
        Direction::Inbound => POLICY_INBOUND_PREFIX,
        Direction::Outbound => POLICY_OUTBOUND_PREFIX,
    };
    let verdict = c.mark_pass | c.mark_accept;
    let mut rules = Vec::new();
    for (count, id) in enforced_policies(group).enumerate() {
        let starts_block = count.is_multiple_of(POLICY_GROUP_RETURN_STRIDE);
        if count != 0 && starts_block {
            // Pass or accept: back to the endpoint chain, which handles pass itself (it must
            // carry on in the same chain).
            rules.push(
                Rule::new(MatchCriteria::new().mark_not_clear(verdict), Action::Return)
                    .comment("Return on verdict"),
            );
        }
        // First in a block: no mark can be set yet (start of chain or just after a RETURN).
        let matches = if starts_block {
            MatchCriteria::new()
        } else {
            MatchCriteria::new().mark_clear(verdict)
        };
        rules.push(Rule::new(
            matches,
            Action::Jump(policy_chain_name(prefix, id, c.nftables)),
        ));
    }
    vec![Chain::new(
        policy_group_chain_name(group, c.nftables),
        rules,
    )]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::generic::{Features, iptables_render};

    /// Calico's endpoints_test.go configuration.
    fn cfg() -> RulesConfig {
        RulesConfig {
            mark_accept: 0x8,
            mark_pass: 0x10,
            mark_scratch0: 0x20,
            mark_scratch1: 0x40,
            mark_drop: 0x80,
            mark_endpoint: 0xff00,
            mark_non_cali_endpoint: 0x100,
            ..RulesConfig::default()
        }
    }

    /// Each rule's iptables text without the `-A <chain> ` in front.
    fn text(chain: &Chain) -> Vec<String> {
        let lead = format!("-A {} ", chain.name);
        chain
            .rules
            .iter()
            .map(|r| {
                let s = iptables_render("-A", &chain.name, None, r, "", &Features::default());
                s.strip_prefix(&lead).map(str::to_string).unwrap_or(s)
            })
            .collect()
    }

    fn gnp(name: &str) -> PolicyId {
        PolicyId::global(name)
    }

    fn sgnp(name: &str) -> PolicyId {
        PolicyId {
            kind: "sgnp".into(),
            ..PolicyId::global(name)
        }
    }

    /// Calico's `tiersToSinglePolGroups`: one group per policy.
    fn single_groups(direction: Direction, ids: &[PolicyId]) -> Vec<PolicyGroup> {
        ids.iter()
            .map(|id| PolicyGroup {
                direction,
                policies: vec![id.clone()],
                selector: String::new(),
                staged: vec![false],
            })
            .collect()
    }

    fn tier(default_action: &str, ingress: &[PolicyId], egress: &[PolicyId]) -> TierPolicyGroups {
        TierPolicyGroups {
            name: "default".into(),
            default_action: default_action.into(),
            ingress: single_groups(Direction::Inbound, ingress),
            egress: single_groups(Direction::Outbound, egress),
        }
    }

    fn group(direction: Direction, ids: Vec<PolicyId>, selector: &str) -> PolicyGroup {
        PolicyGroup {
            direction,
            staged: vec![false; ids.len()],
            policies: ids,
            selector: selector.into(),
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const CT_ACCEPT: &str = "-m conntrack --ctstate RELATED,ESTABLISHED --jump ACCEPT";
    const CT_SET_ACCEPT: &str =
        "-m conntrack --ctstate RELATED,ESTABLISHED --jump MARK --set-mark 0x8/0x8";
    const CT_RETURN: &str = "-m conntrack --ctstate RELATED,ESTABLISHED --jump RETURN";
    const CT_INVALID_DROP: &str = "-m conntrack --ctstate INVALID --jump DROP";
    const CLEAR_MARKS: &str = "--jump MARK --set-mark 0/0x18";
    const VXLAN_DROP: &str = r#"-m comment --comment "Drop VXLAN encapped packets originating in workloads" -p 17 -m multiport --destination-ports 4789 --jump DROP"#;
    const IPIP_DROP: &str = r#"-m comment --comment "Drop IPinIP encapped packets originating in workloads" -p 4 --jump DROP"#;
    const START_OF_TIER: &str =
        r#"-m comment --comment "Start of tier default" --jump MARK --set-mark 0/0x10"#;
    const RETURN_IF_POLICY: &str =
        r#"-m comment --comment "Return if policy accepted" -m mark --mark 0x8/0x8 --jump RETURN"#;
    const END_OF_TIER: &str = r#"-m comment --comment "End of tier default. Drop if no policies passed packet" -m mark --mark 0/0x10 --jump DROP"#;
    const RETURN_IF_PROFILE: &str =
        r#"-m comment --comment "Return if profile accepted" -m mark --mark 0x8/0x8 --jump RETURN"#;
    const NO_PROFILE_DROP: &str =
        r#"-m comment --comment "Drop if no profiles matched" --jump DROP"#;

    #[test]
    fn minimal_workload_endpoint() {
        let chains = workload_endpoint_to_iptables_chains(&cfg(), "cali1234", true, &[], &[]);
        assert_eq!(chains.len(), 2);
        assert_eq!(chains[0].name, "cali-tw-cali1234");
        assert_eq!(
            text(&chains[0]),
            strs(&[CT_ACCEPT, CT_INVALID_DROP, CLEAR_MARKS, NO_PROFILE_DROP])
        );
        assert_eq!(chains[1].name, "cali-fw-cali1234");
        assert_eq!(
            text(&chains[1]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                VXLAN_DROP,
                IPIP_DROP,
                NO_PROFILE_DROP
            ])
        );
    }

    #[test]
    fn admin_down_endpoint_only_drops() {
        let tiers = [tier("Deny", &[gnp("ai")], &[gnp("ae")])];
        let profile_ids = strs(&["prof1"]);
        let chains =
            workload_endpoint_to_iptables_chains(&cfg(), "cali1234", false, &tiers, &profile_ids);
        let down = strs(&[r#"-m comment --comment "Endpoint admin disabled" --jump DROP"#]);
        assert_eq!(chains[0].name, "cali-tw-cali1234");
        assert_eq!(text(&chains[0]), down);
        assert_eq!(chains[1].name, "cali-fw-cali1234");
        assert_eq!(text(&chains[1]), down);
    }

    #[test]
    fn fully_loaded_workload_endpoint() {
        let tiers = [tier(
            "Deny",
            &[gnp("ai"), gnp("bi")],
            &[gnp("ae"), gnp("be")],
        )];
        let profile_ids = strs(&["prof1", "prof2"]);
        let chains =
            workload_endpoint_to_iptables_chains(&cfg(), "cali1234", true, &tiers, &profile_ids);
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                START_OF_TIER,
                "-m mark --mark 0/0x10 --jump cali-pi-gnp/ai",
                RETURN_IF_POLICY,
                "-m mark --mark 0/0x10 --jump cali-pi-gnp/bi",
                RETURN_IF_POLICY,
                END_OF_TIER,
                "--jump cali-pri-prof1",
                RETURN_IF_PROFILE,
                "--jump cali-pri-prof2",
                RETURN_IF_PROFILE,
                NO_PROFILE_DROP,
            ])
        );
        assert_eq!(
            text(&chains[1]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                VXLAN_DROP,
                IPIP_DROP,
                START_OF_TIER,
                "-m mark --mark 0/0x10 --jump cali-po-gnp/ae",
                RETURN_IF_POLICY,
                "-m mark --mark 0/0x10 --jump cali-po-gnp/be",
                RETURN_IF_POLICY,
                END_OF_TIER,
                "--jump cali-pro-prof1",
                RETURN_IF_PROFILE,
                "--jump cali-pro-prof2",
                RETURN_IF_PROFILE,
                NO_PROFILE_DROP,
            ])
        );
    }

    #[test]
    fn pass_tier_has_no_end_of_tier_drop() {
        let tiers = [tier("Pass", &[gnp("ai"), gnp("bi")], &[])];
        let chains = workload_endpoint_to_iptables_chains(&cfg(), "cali1234", true, &tiers, &[]);
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                START_OF_TIER,
                "-m mark --mark 0/0x10 --jump cali-pi-gnp/ai",
                RETURN_IF_POLICY,
                "-m mark --mark 0/0x10 --jump cali-pi-gnp/bi",
                RETURN_IF_POLICY,
                NO_PROFILE_DROP,
            ])
        );
        // No egress policy in the tier: no tier block at all.
        assert_eq!(
            text(&chains[1]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                VXLAN_DROP,
                IPIP_DROP,
                NO_PROFILE_DROP
            ])
        );
    }

    #[test]
    fn staged_policies_are_skipped() {
        // One staged, one enforced: the tier still ends in a drop.
        let tiers = [tier(
            "Deny",
            &[sgnp("ai"), gnp("bi")],
            &[gnp("ae"), sgnp("be")],
        )];
        let chains = workload_endpoint_to_iptables_chains(&cfg(), "cali1234", true, &tiers, &[]);
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                START_OF_TIER,
                "-m mark --mark 0/0x10 --jump cali-pi-gnp/bi",
                RETURN_IF_POLICY,
                END_OF_TIER,
                NO_PROFILE_DROP,
            ])
        );
        assert_eq!(
            &text(&chains[1])[5..8],
            strs(&[
                START_OF_TIER,
                "-m mark --mark 0/0x10 --jump cali-po-gnp/ae",
                RETURN_IF_POLICY,
            ])
            .as_slice()
        );
        // All staged: the tier passes.
        let tiers = [tier("Deny", &[sgnp("ai"), sgnp("bi")], &[])];
        let chains = workload_endpoint_to_iptables_chains(&cfg(), "cali1234", true, &tiers, &[]);
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                START_OF_TIER,
                NO_PROFILE_DROP
            ])
        );
        // Staged by flag rather than by kind.
        let mut t = tier("Deny", &[gnp("ai")], &[]);
        t.ingress[0].staged = vec![true];
        let chains = workload_endpoint_to_iptables_chains(&cfg(), "cali1234", true, &[t], &[]);
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                START_OF_TIER,
                NO_PROFILE_DROP
            ])
        );
    }

    #[test]
    fn all_staged_policy_group_jumps_nowhere() {
        // A group with no enforced policy is inlined to nothing: only the tier start remains,
        // and the tier passes rather than drops (Calico's "staged policy group" case).
        let g = group(Direction::Inbound, vec![sgnp("ai"), sgnp("bi")], "all()");
        assert!(should_be_inlined(&g));
        assert!(!has_non_staged_policies(&g));
        let tiers = [TierPolicyGroups {
            name: "default".into(),
            default_action: "Deny".into(),
            ingress: vec![g],
            egress: vec![],
        }];
        let chains = workload_endpoint_to_iptables_chains(&cfg(), "cali1234", true, &tiers, &[]);
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                START_OF_TIER,
                NO_PROFILE_DROP
            ])
        );
    }

    #[test]
    fn workload_endpoint_with_policy_groups() {
        let abc = group(
            Direction::Inbound,
            vec![gnp("a"), gnp("b"), gnp("c")],
            "all()",
        );
        let ef = group(
            Direction::Inbound,
            vec![gnp("e"), gnp("f")],
            "someLabel == 'bar'",
        );
        let single = group(Direction::Inbound, vec![gnp("g")], "x == 'y'");
        let tiers = [TierPolicyGroups {
            name: "default".into(),
            default_action: "Deny".into(),
            ingress: vec![abc, ef, single],
            egress: vec![],
        }];
        let chains = workload_endpoint_to_iptables_chains(&cfg(), "cali1234", true, &tiers, &[]);
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                START_OF_TIER,
                // SHA3-224 of Calico's hash input, computed independently.
                "-m mark --mark 0/0x10 --jump cali-gi-BxY4CloNFqL6vHzhOsY8",
                RETURN_IF_POLICY,
                "-m mark --mark 0/0x10 --jump cali-gi-_GZvtwnUvwnuCD_nPJg8",
                RETURN_IF_POLICY,
                // A one-policy group is inlined.
                "-m mark --mark 0/0x10 --jump cali-pi-gnp/g",
                RETURN_IF_POLICY,
                END_OF_TIER,
                NO_PROFILE_DROP,
            ])
        );
    }

    #[test]
    fn flow_logs_add_nflog_rules() {
        let c = RulesConfig {
            flow_logs_enabled: true,
            ..cfg()
        };
        let tiers = [tier("Deny", &[gnp("ai")], &[sgnp("ae")])];
        let chains = workload_endpoint_to_iptables_chains(&c, "cali1234", true, &tiers, &[]);
        assert_eq!(
            &text(&chains[0])[3..],
            strs(&[
                START_OF_TIER,
                "-m mark --mark 0/0x10 --jump cali-pi-gnp/ai",
                RETURN_IF_POLICY,
                "-m mark --mark 0/0x10 --jump NFLOG --nflog-group 1 --nflog-prefix DPI|default --nflog-size 80",
                END_OF_TIER,
                "--jump NFLOG --nflog-group 1 --nflog-prefix DRI --nflog-size 80",
                NO_PROFILE_DROP,
            ])
            .as_slice()
        );
        // Egress: all staged, so a pass NFLOG instead of the end-of-tier drop.
        assert_eq!(
            &text(&chains[1])[5..],
            strs(&[
                // The staged policy is not jumped to.
                START_OF_TIER,
                "-m mark --mark 0/0x10 --jump NFLOG --nflog-group 2 --nflog-prefix PPE|default --nflog-size 80",
                "--jump NFLOG --nflog-group 2 --nflog-prefix DRE --nflog-size 80",
                NO_PROFILE_DROP,
            ])
            .as_slice()
        );
    }

    #[test]
    fn reject_and_return_configuration() {
        let c = RulesConfig {
            filter_deny_action: "REJECT".into(),
            filter_allow_action: "RETURN".into(),
            disable_conntrack_invalid: true,
            ..cfg()
        };
        let chains = workload_endpoint_to_iptables_chains(&c, "cali1234", true, &[], &[]);
        assert_eq!(
            text(&chains[1]),
            strs(&[
                CT_SET_ACCEPT,
                CT_RETURN,
                CLEAR_MARKS,
                r#"-m comment --comment "Reject VXLAN encapped packets originating in workloads" -p 17 -m multiport --destination-ports 4789 --jump REJECT"#,
                r#"-m comment --comment "Reject IPinIP encapped packets originating in workloads" -p 4 --jump REJECT"#,
                r#"-m comment --comment "Reject if no profiles matched" --jump REJECT"#,
            ])
        );
    }

    #[test]
    fn encap_from_workloads_can_be_allowed() {
        let vxlan_ok = RulesConfig {
            allow_vxlan_packets_from_workloads: true,
            ..cfg()
        };
        let chains = workload_endpoint_to_iptables_chains(&vxlan_ok, "cali1234", true, &[], &[]);
        assert_eq!(
            text(&chains[1]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                IPIP_DROP,
                NO_PROFILE_DROP
            ])
        );
        let ipip_ok = RulesConfig {
            allow_ipip_packets_from_workloads: true,
            vxlan_port: 4790,
            ..cfg()
        };
        let chains = workload_endpoint_to_iptables_chains(&ipip_ok, "cali1234", true, &[], &[]);
        assert_eq!(
            text(&chains[1]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                &VXLAN_DROP.replace("4789", "4790"),
                NO_PROFILE_DROP,
            ])
        );
        let both_ok = RulesConfig {
            allow_vxlan_packets_from_workloads: true,
            allow_ipip_packets_from_workloads: true,
            ..cfg()
        };
        let chains = workload_endpoint_to_iptables_chains(&both_ok, "cali1234", true, &[], &[]);
        assert_eq!(
            text(&chains[1]),
            strs(&[CT_ACCEPT, CT_INVALID_DROP, CLEAR_MARKS, NO_PROFILE_DROP])
        );
    }

    #[test]
    fn set_endpoint_mark_chains() {
        let mut mapper = EndpointMarkMapper::new(0xff00, 0x100).expect("fits");
        let c = cfg();
        let sm = endpoint_set_mark_chain(&c, "cali1234", &mut mapper);
        assert_eq!(sm.name, "cali-sm-cali1234");
        assert_eq!(text(&sm), strs(&["--jump MARK --set-mark 0xd400/0xff00"]));
        let mut mapper = EndpointMarkMapper::new(0xff00, 0x100).expect("fits");
        let sm = endpoint_set_mark_chain(&c, "eth0", &mut mapper);
        assert_eq!(text(&sm), strs(&["--jump MARK --set-mark 0xa200/0xff00"]));
        // Out of marks: an empty chain.
        let mut full = EndpointMarkMapper::new(0x100, 0x100).expect("fits");
        assert!(
            endpoint_set_mark_chain(&c, "cali1", &mut full)
                .rules
                .is_empty()
        );
        // Appended only with IPVS support.
        let mut mapper = EndpointMarkMapper::new(0xff00, 0x100).expect("fits");
        let plain = workload_endpoint_to_iptables_chains(&c, "cali1234", true, &[], &[]);
        assert_eq!(
            with_set_mark_chain(&c, plain.clone(), "cali1234", &mut mapper),
            plain
        );
        let ipvs = RulesConfig {
            kube_ipvs_support_enabled: true,
            ..cfg()
        };
        let chains = with_set_mark_chain(&ipvs, plain, "cali1234", &mut mapper);
        let names: Vec<&str> = chains.iter().map(|ch| ch.name.as_str()).collect();
        assert_eq!(
            names,
            ["cali-tw-cali1234", "cali-fw-cali1234", "cali-sm-cali1234"]
        );
        assert_eq!(
            text(&chains[2]),
            strs(&["--jump MARK --set-mark 0xd400/0xff00"])
        );
    }

    #[test]
    fn host_endpoint_filter_chains() {
        let tiers = [tier(
            "Deny",
            &[gnp("ai"), gnp("bi")],
            &[gnp("ae"), gnp("be")],
        )];
        let fwd = [tier(
            "Deny",
            &[gnp("afi"), gnp("bfi")],
            &[gnp("afe"), gnp("bfe")],
        )];
        let profile_ids = strs(&["prof1", "prof2"]);
        let chains = host_endpoint_to_filter_chains(&cfg(), "eth0", &tiers, &fwd, &profile_ids);
        let names: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cali-th-eth0",
                "cali-fh-eth0",
                "cali-thfw-eth0",
                "cali-fhfw-eth0"
            ]
        );
        let normal = |failsafe: &str, pol: &str, pro: &str, a: &str, b: &str| {
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                &format!("--jump {failsafe}"),
                CLEAR_MARKS,
                START_OF_TIER,
                &format!("-m mark --mark 0/0x10 --jump {pol}gnp/{a}"),
                RETURN_IF_POLICY,
                &format!("-m mark --mark 0/0x10 --jump {pol}gnp/{b}"),
                RETURN_IF_POLICY,
                END_OF_TIER,
                &format!("--jump {pro}prof1"),
                RETURN_IF_PROFILE,
                &format!("--jump {pro}prof2"),
                RETURN_IF_PROFILE,
                NO_PROFILE_DROP,
            ])
        };
        let forward = |pol: &str, a: &str, b: &str| {
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                CLEAR_MARKS,
                START_OF_TIER,
                &format!("-m mark --mark 0/0x10 --jump {pol}gnp/{a}"),
                RETURN_IF_POLICY,
                &format!("-m mark --mark 0/0x10 --jump {pol}gnp/{b}"),
                RETURN_IF_POLICY,
                END_OF_TIER,
            ])
        };
        assert_eq!(
            text(&chains[0]),
            normal("cali-failsafe-out", "cali-po-", "cali-pro-", "ae", "be")
        );
        assert_eq!(
            text(&chains[1]),
            normal("cali-failsafe-in", "cali-pi-", "cali-pri-", "ai", "bi")
        );
        assert_eq!(text(&chains[2]), forward("cali-po-", "afe", "bfe"));
        assert_eq!(text(&chains[3]), forward("cali-pi-", "afi", "bfi"));
    }

    #[test]
    fn forwarded_traffic_is_allowed_without_tiers() {
        let chains = host_endpoint_to_filter_chains(&cfg(), "eth0", &[], &[], &[]);
        let allow = strs(&[
            CT_ACCEPT,
            CT_INVALID_DROP,
            CLEAR_MARKS,
            r#"-m comment --comment "Allow forwarded traffic by default" --jump MARK --set-mark 0x8/0x8"#,
            r#"-m comment --comment "Return for accepted forward traffic" --jump RETURN"#,
        ]);
        assert_eq!(text(&chains[2]), allow);
        assert_eq!(text(&chains[3]), allow);
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_ACCEPT,
                CT_INVALID_DROP,
                "--jump cali-failsafe-out",
                CLEAR_MARKS,
                NO_PROFILE_DROP,
            ])
        );
    }

    #[test]
    fn host_endpoint_raw_chains_for_untracked_policy() {
        let tiers = [tier("Deny", &[gnp("c")], &[gnp("c")])];
        let chains = host_endpoint_to_raw_chains(&cfg(), "eth0", &tiers);
        let expected = |failsafe: &str, pol: &str| {
            strs(&[
                &format!("--jump {failsafe}"),
                CLEAR_MARKS,
                START_OF_TIER,
                &format!("-m mark --mark 0/0x10 --jump {pol}gnp/c"),
                "-m mark --mark 0x8/0x8 --jump NOTRACK",
                RETURN_IF_POLICY,
            ])
        };
        assert_eq!(chains.len(), 2);
        assert_eq!(chains[0].name, "cali-th-eth0");
        assert_eq!(text(&chains[0]), expected("cali-failsafe-out", "cali-po-"));
        assert_eq!(chains[1].name, "cali-fh-eth0");
        assert_eq!(text(&chains[1]), expected("cali-failsafe-in", "cali-pi-"));
    }

    #[test]
    fn host_endpoint_mangle_chains() {
        let c = RulesConfig {
            mangle_allow_action: "RETURN".into(),
            ..cfg()
        };
        let tiers = [tier("Deny", &[gnp("c")], &[gnp("c")])];
        let chains = host_endpoint_to_mangle_ingress_chains(&c, "eth0", &tiers);
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].name, "cali-fh-eth0");
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_SET_ACCEPT,
                CT_RETURN,
                CT_INVALID_DROP,
                "--jump cali-failsafe-in",
                CLEAR_MARKS,
                START_OF_TIER,
                "-m mark --mark 0/0x10 --jump cali-pi-gnp/c",
                RETURN_IF_POLICY,
            ])
        );
        // With conntrack INVALID disabled (Calico's second pre-DNAT case).
        let no_invalid = RulesConfig {
            disable_conntrack_invalid: true,
            ..c
        };
        let chains = host_endpoint_to_mangle_ingress_chains(&no_invalid, "eth0", &tiers);
        assert_eq!(
            &text(&chains[0])[..3],
            strs(&[CT_SET_ACCEPT, CT_RETURN, "--jump cali-failsafe-in"]).as_slice()
        );
        // Mangle egress returns allowed packets, with profiles and drops as in the filter table.
        let chains = host_endpoint_to_mangle_egress_chains(&cfg(), "eth0", &tiers, &[]);
        assert_eq!(chains[0].name, "cali-th-eth0");
        assert_eq!(
            text(&chains[0]),
            strs(&[
                CT_SET_ACCEPT,
                CT_RETURN,
                CT_INVALID_DROP,
                "--jump cali-failsafe-out",
                CLEAR_MARKS,
                START_OF_TIER,
                "-m mark --mark 0/0x10 --jump cali-po-gnp/c",
                RETURN_IF_POLICY,
                END_OF_TIER,
                NO_PROFILE_DROP,
            ])
        );
    }

    #[test]
    fn long_interface_names_are_hashed() {
        let name = endpoint_chain_name("cali-fw-", "a-very-long-interface-name", false);
        assert_eq!(name.len(), MAX_CHAIN_NAME_LENGTH);
        assert!(name.starts_with("cali-fw-_"));
        assert_eq!(
            endpoint_chain_name("cali-fw-", "cali1234", false),
            "cali-fw-cali1234"
        );
        // nftables has room for the whole name.
        assert_eq!(
            endpoint_chain_name("cali-fw-", "a-very-long-interface-name", true),
            "cali-fw-a-very-long-interface-name"
        );
    }

    #[test]
    fn policy_group_names_hash_like_calico() {
        // SHA3-224 over Calico's hash input (selector, direction, count, each policy's Go
        // String() with the full kind), computed independently.
        let cases = [
            (
                group(Direction::Inbound, vec![gnp("a"), gnp("b")], "all()"),
                "cali-gi-js-B7zioflPRrAki3OCu",
            ),
            (
                group(Direction::Outbound, vec![gnp("a"), gnp("b")], "all()"),
                "cali-go-4ezo5iTUduM_NXbqxhkl",
            ),
            (
                group(
                    Direction::Inbound,
                    vec![gnp("a"), gnp("b"), gnp("c")],
                    "all()",
                ),
                "cali-gi-BxY4CloNFqL6vHzhOsY8",
            ),
            (
                group(
                    Direction::Inbound,
                    vec![
                        PolicyId::network_policy("ns", "e"),
                        PolicyId::network_policy("ns", "f"),
                    ],
                    "someLabel == 'bar'",
                ),
                "cali-gi-3AePtsgi_DhNHOt2CxID",
            ),
            (
                group(
                    Direction::Inbound,
                    vec![sgnp("a"), gnp("b"), gnp("c")],
                    "all()",
                ),
                "cali-gi-yadyl8sOMwLjYX4rRPrC",
            ),
            (
                // Calico's tests leave the kind empty.
                group(
                    Direction::Inbound,
                    vec![PolicyId {
                        kind: String::new(),
                        ..PolicyId::global("a")
                    }],
                    "all()",
                ),
                "cali-gi-LQrYQNIghpWz0vYjPs1s",
            ),
        ];
        for (g, name) in &cases {
            assert_eq!(policy_group_chain_name(g, false), *name);
            assert_eq!(policy_group_chain_name(g, true), *name);
            assert_eq!(name.len(), MAX_CHAIN_NAME_LENGTH);
        }
        // A staged flag hashes like Calico's staged kind.
        let mut flagged = group(
            Direction::Inbound,
            vec![gnp("a"), gnp("b"), gnp("c")],
            "all()",
        );
        flagged.staged[0] = true;
        assert_eq!(policy_group_chain_name(&flagged, false), cases[4].1);
        let mut ns_staged = group(
            Direction::Outbound,
            vec![
                PolicyId::network_policy("ns1", "a"),
                PolicyId::network_policy("ns1", "b"),
            ],
            "all()",
        );
        ns_staged.staged[1] = true;
        assert_eq!(
            policy_group_chain_name(&ns_staged, false),
            "cali-go-UpqSdbYhxZP0gHrCqhSm"
        );
    }

    #[test]
    fn policy_group_uids_are_distinct() {
        // Calico's "should make sensible UIDs": the hash input is delimited, so "aaa","bbb"
        // and "aaab","bb" differ.
        let ids = |names: &[&str]| names.iter().map(|n| gnp(n)).collect::<Vec<_>>();
        let groups = [
            group(Direction::Inbound, vec![], "all()"),
            group(Direction::Outbound, vec![], "all()"),
            group(Direction::Inbound, ids(&["a"]), "all()"),
            group(Direction::Inbound, vec![], "a == 'b'"),
            group(Direction::Inbound, ids(&["a", "b"]), "all()"),
            group(Direction::Inbound, ids(&["ab"]), "all()"),
            group(Direction::Inbound, ids(&["aaa", "bbb"]), "all()"),
            group(Direction::Inbound, ids(&["aaab", "bb"]), "all()"),
        ];
        let uids: BTreeSet<String> = groups.iter().map(policy_group_unique_id).collect();
        assert_eq!(uids.len(), groups.len());
        assert!(uids.iter().all(|u| u.len() == MAX_POLICY_GROUP_UID_LENGTH));
        assert_eq!(
            policy_group_unique_id(&groups[0]),
            policy_group_unique_id(&groups[0].clone())
        );
    }

    fn jump(target: &str, clear: u32) -> Rule {
        let m = if clear == 0 {
            MatchCriteria::new()
        } else {
            MatchCriteria::new().mark_clear(clear)
        };
        Rule::new(m, Action::Jump(target.into()))
    }

    fn return_on_verdict() -> Rule {
        Rule::new(MatchCriteria::new().mark_not_clear(0x18), Action::Return)
            .comment("Return on verdict")
    }

    #[test]
    fn policy_group_chains_follow_calico() {
        let gnps = |names: &str| {
            names
                .chars()
                .map(|n| gnp(&n.to_string()))
                .collect::<Vec<_>>()
        };
        let pi = |n: &str| format!("cali-pi-gnp/{n}");
        let po = |n: &str| format!("cali-po-gnp/{n}");
        let c = cfg();
        let cases: Vec<(PolicyGroup, Vec<Rule>)> = vec![
            (
                group(Direction::Inbound, gnps("a"), "all()"),
                vec![jump(&pi("a"), 0)],
            ),
            (
                group(Direction::Inbound, gnps("ab"), "all()"),
                vec![jump(&pi("a"), 0), jump(&pi("b"), 0x18)],
            ),
            (
                group(Direction::Inbound, gnps("abcde"), "all()"),
                vec![
                    jump(&pi("a"), 0),
                    jump(&pi("b"), 0x18),
                    jump(&pi("c"), 0x18),
                    jump(&pi("d"), 0x18),
                    jump(&pi("e"), 0x18),
                ],
            ),
            (
                // A RETURN every 5 jumps, never as the last rule.
                group(Direction::Inbound, gnps("abcdef"), "all()"),
                vec![
                    jump(&pi("a"), 0),
                    jump(&pi("b"), 0x18),
                    jump(&pi("c"), 0x18),
                    jump(&pi("d"), 0x18),
                    jump(&pi("e"), 0x18),
                    return_on_verdict(),
                    jump(&pi("f"), 0),
                ],
            ),
            (
                group(Direction::Outbound, gnps("abcdefg"), "all()"),
                vec![
                    jump(&po("a"), 0),
                    jump(&po("b"), 0x18),
                    jump(&po("c"), 0x18),
                    jump(&po("d"), 0x18),
                    jump(&po("e"), 0x18),
                    return_on_verdict(),
                    jump(&po("f"), 0),
                    jump(&po("g"), 0x18),
                ],
            ),
            (
                // Staged policies neither get a jump nor count towards the stride.
                group(
                    Direction::Outbound,
                    vec![
                        sgnp("a"),
                        sgnp("b"),
                        gnp("c"),
                        gnp("d"),
                        gnp("e"),
                        gnp("f"),
                        gnp("g"),
                        gnp("h"),
                        gnp("i"),
                    ],
                    "all()",
                ),
                vec![
                    jump(&po("c"), 0),
                    jump(&po("d"), 0x18),
                    jump(&po("e"), 0x18),
                    jump(&po("f"), 0x18),
                    jump(&po("g"), 0x18),
                    return_on_verdict(),
                    jump(&po("h"), 0),
                    jump(&po("i"), 0x18),
                ],
            ),
            (
                group(
                    Direction::Outbound,
                    vec![
                        sgnp("a"),
                        sgnp("b"),
                        sgnp("c"),
                        gnp("d"),
                        sgnp("e"),
                        gnp("f"),
                        gnp("g"),
                    ],
                    "all()",
                ),
                vec![
                    jump(&po("d"), 0),
                    jump(&po("f"), 0x18),
                    jump(&po("g"), 0x18),
                ],
            ),
        ];
        for (g, expected) in cases {
            let chains = policy_group_chains(&c, &g);
            assert_eq!(chains.len(), 1);
            assert_eq!(chains[0].name, policy_group_chain_name(&g, false));
            assert_eq!(chains[0].rules, expected, "{:?}", g.policies);
        }
        // The rendered text of the stride's RETURN.
        let chains = policy_group_chains(&c, &group(Direction::Inbound, gnps("abcdef"), "all()"));
        assert_eq!(
            text(&chains[0])[5],
            r#"-m comment --comment "Return on verdict" -m mark ! --mark 0/0x18 --jump RETURN"#
        );
    }

    #[test]
    fn staged_detection_and_inlining() {
        let snp = PolicyId {
            kind: "snp".into(),
            ..PolicyId::network_policy("namespace", "foo")
        };
        let mut g = group(Direction::Inbound, vec![snp], "all()");
        assert!(!has_non_staged_policies(&g));
        assert!(should_be_inlined(&g));
        g.policies.push(PolicyId::global("bar"));
        g.staged.push(false);
        assert!(has_non_staged_policies(&g));
        assert!(should_be_inlined(&g));
        g.policies.push(PolicyId::global("baz"));
        g.staged.push(false);
        assert!(!should_be_inlined(&g));
        // A missing staged flag counts as not staged.
        g.staged.clear();
        assert!(!should_be_inlined(&g));
    }

    #[test]
    fn grouping_consecutive_equal_selectors() {
        let p = |n: &str, sel: &str, staged: bool| (gnp(n), sel.to_string(), staged);
        let groups = group_policies(
            Direction::Outbound,
            &[
                p("a", "all()", false),
                p("b", "all()", true),
                p("c", "x == 'y'", false),
                p("d", "all()", false),
            ],
        );
        assert_eq!(
            groups,
            vec![
                PolicyGroup {
                    direction: Direction::Outbound,
                    policies: vec![gnp("a"), gnp("b")],
                    selector: "all()".into(),
                    staged: vec![false, true],
                },
                PolicyGroup {
                    direction: Direction::Outbound,
                    policies: vec![gnp("c")],
                    selector: "x == 'y'".into(),
                    staged: vec![false],
                },
                PolicyGroup {
                    direction: Direction::Outbound,
                    policies: vec![gnp("d")],
                    selector: "all()".into(),
                    staged: vec![false],
                },
            ]
        );
        assert!(group_policies(Direction::Inbound, &[]).is_empty());
    }
}
