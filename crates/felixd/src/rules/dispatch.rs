//! Interface → endpoint chain dispatch (Calico's `felix/rules/dispatch.go` and `epmark.go`).
//!
//! Packets from or to an endpoint's interface are sent to that endpoint's chain by matching the
//! interface name. With hundreds of endpoints one flat list of matches would make the last
//! endpoint pay for every rule before it, so Calico builds a shallow tree: names are sorted,
//! their common prefix found, and names binned by the next character. A bin with one name is
//! matched directly in the root chain; a larger bin gets a child chain `<root>-<char>` reached by
//! a `goto` on `<prefix><char>+`. Because of the `goto`, every child repeats the root's end
//! rules. For workloads the end rule is a deny ("Unknown interface"): a `cali*` interface whose
//! endpoint Felix has not heard of yet (a pod still being set up) gets no traffic (fail-closed).
//!
//! In nftables mode the workload trees are replaced by one verdict-map lookup per direction.
//!
//! With kube-proxy in IPVS mode, traffic to a service IP goes through INPUT/OUTPUT rather than
//! FORWARD, where the incoming interface is no longer known by the time policy is applied.
//! Calico then marks packets with a per-endpoint mark on the way in (`cali-set-endpoint-mark`,
//! one `cali-sm-<iface>` chain per endpoint) and dispatches on that mark later
//! (`cali-from-endpoint-mark`); [`EndpointMarkMapper`] hands out those marks.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::endpoints::endpoint_chain_name;
use super::{
    CHAIN_DISPATCH_FROM_HOST_ENDPOINT, CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD,
    CHAIN_DISPATCH_TO_HOST_ENDPOINT, CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD,
    CHAIN_FROM_WORKLOAD_DISPATCH, CHAIN_TO_WORKLOAD_DISPATCH, HOST_FROM_ENDPOINT_FORWARD_PREFIX,
    HOST_FROM_ENDPOINT_PREFIX, HOST_TO_ENDPOINT_FORWARD_PREFIX, HOST_TO_ENDPOINT_PREFIX,
    RulesConfig, WORKLOAD_FROM_ENDPOINT_PREFIX, WORKLOAD_TO_ENDPOINT_PREFIX,
};
use crate::generic::{Action, Chain, MatchCriteria, Rule};

/// Root of the tree that sets the endpoint mark from the incoming interface (IPVS support).
pub const CHAIN_DISPATCH_SET_END_POINT_MARK: &str = "cali-set-endpoint-mark";
/// Dispatch on the endpoint mark to the `cali-fw-`/`cali-fhfw-` chains (IPVS support).
pub const CHAIN_DISPATCH_FROM_END_POINT_MARK: &str = "cali-from-endpoint-mark";
/// Per-endpoint chains that set the endpoint's mark.
pub const SET_END_POINT_MARK_PREFIX: &str = "cali-sm-";
/// Calico's pseudo endpoint prefix for [`workload_interface_allow_chains`].
pub const WORKLOAD_PFX_SPECIAL_ALLOW: &str = "ALLOW";
/// The nftables verdict map for traffic from workloads (named like the chain it serves).
pub const NFTABLES_FROM_WORKLOAD_DISPATCH_MAP: &str = "cali-from-wl-dispatch";
/// The nftables verdict map for traffic to workloads.
pub const NFTABLES_TO_WORKLOAD_DISPATCH_MAP: &str = "cali-to-wl-dispatch";

/// The interface-name wildcard: iptables' `cali+`, nftables' `cali*`.
fn wildcard(c: &RulesConfig) -> &'static str {
    if c.nftables { "*" } else { "+" }
}

/// The rule at the end of every workload dispatch chain.
fn unknown_interface_rule(c: &RulesConfig) -> Rule {
    Rule::action(c.filter_deny()).comment("Unknown interface")
}

/// `cali-from-wl-dispatch` / `cali-to-wl-dispatch` and their children (Calico's
/// `WorkloadDispatchChains`), each ending in the "Unknown interface" deny. Output depends only
/// on the set of names: order does not matter, duplicates count once, empty names are skipped
/// (Calico panics on them; a daemon had better not).
pub fn workload_dispatch_chains(c: &RulesConfig, iface_names: &[String]) -> Vec<Chain> {
    let end = [unknown_interface_rule(c)];
    interface_name_dispatch_chains(
        c,
        iface_names,
        Some(Side {
            endpoint_prefix: WORKLOAD_FROM_ENDPOINT_PREFIX,
            dispatch_chain: CHAIN_FROM_WORKLOAD_DISPATCH,
            end_rules: &end,
        }),
        Some(Side {
            endpoint_prefix: WORKLOAD_TO_ENDPOINT_PREFIX,
            dispatch_chain: CHAIN_TO_WORKLOAD_DISPATCH,
            end_rules: &end,
        }),
    )
}

/// Verdict map entries: interface name → verdicts (`goto <chain>`).
pub type DispatchMap = BTreeMap<String, Vec<String>>;

/// The verdict map entries for nftables mode (Calico's `DispatchMappings`): interface name →
/// `goto <cali-fw-chain>` (from workloads) and → `goto <cali-tw-chain>` (to workloads).
pub fn dispatch_mappings(c: &RulesConfig, iface_names: &[String]) -> (DispatchMap, DispatchMap) {
    let mapping = |prefix: &str| -> DispatchMap {
        sorted_unique(iface_names)
            .into_iter()
            .map(|name| {
                let target = endpoint_chain_name(prefix, name, c.nftables);
                (name.to_string(), vec![format!("goto {target}")])
            })
            .collect()
    };
    (
        mapping(WORKLOAD_FROM_ENDPOINT_PREFIX),
        mapping(WORKLOAD_TO_ENDPOINT_PREFIX),
    )
}

/// A `cali-to-wl-dispatch` tree that allows traffic to the given workload interfaces and denies
/// the rest (Calico's `WorkloadInterfaceAllowChains`: in BPF mode, iptables lets traffic through
/// to workloads whose BPF programs are in place, policy being enforced there).
pub fn workload_interface_allow_chains(c: &RulesConfig, iface_names: &[String]) -> Vec<Chain> {
    let end = [unknown_interface_rule(c)];
    let tree = PrefixTree::new(iface_names);
    let allow = |_: &str| Action::Accept;
    let (mut chains, root) = build_tree(
        c,
        &tree,
        &TreeSpec {
            chain_name: CHAIN_TO_WORKLOAD_DISPATCH,
            infix: "",
            match_for: &out_iface,
            action_for: &allow,
            end_rules: &end,
        },
    );
    chains.push(root);
    chains
}

/// Host endpoint dispatch for the filter table (Calico's `HostDispatchChains`):
/// `cali-from-host-endpoint` / `cali-to-host-endpoint`, plus `cali-from-hep-forward` /
/// `cali-to-hep-forward` when `apply_on_forward`. `default_iface` (the wildcard host endpoint's
/// chain suffix) catches interfaces with no endpoint of their own; without it, unknown
/// interfaces fall through (host traffic is allowed unless a host endpoint says otherwise).
pub fn host_dispatch_chains(
    c: &RulesConfig,
    iface_names: &[String],
    default_iface: Option<&str>,
    apply_on_forward: bool,
) -> Vec<Chain> {
    host_dispatch(
        c,
        iface_names,
        default_iface,
        HostDirections::Both,
        apply_on_forward,
    )
}

/// `cali-from-host-endpoint` only (Calico's `FromHostDispatchChains`): pre-DNAT policy applies
/// to ingress alone (mangle table).
pub fn from_host_dispatch_chains(
    c: &RulesConfig,
    iface_names: &[String],
    default_iface: Option<&str>,
) -> Vec<Chain> {
    host_dispatch(c, iface_names, default_iface, HostDirections::From, false)
}

/// `cali-to-host-endpoint` only (Calico's `ToHostDispatchChains`): normal egress policy for host
/// traffic that was DNAT'd (mangle POSTROUTING).
pub fn to_host_dispatch_chains(
    c: &RulesConfig,
    iface_names: &[String],
    default_iface: Option<&str>,
) -> Vec<Chain> {
    host_dispatch(c, iface_names, default_iface, HostDirections::To, false)
}

/// Which of the host endpoint dispatch trees to render.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HostDirections {
    Both,
    From,
    To,
}

/// The end rules of the host dispatch chains: with a wildcard host endpoint, a goto to its chain.
#[derive(Default)]
struct HostEndRules {
    from: Vec<Rule>,
    to: Vec<Rule>,
    from_forward: Vec<Rule>,
    to_forward: Vec<Rule>,
}

impl HostEndRules {
    fn new(c: &RulesConfig, default_iface: Option<&str>, apply_on_forward: bool) -> HostEndRules {
        let Some(iface) = default_iface.filter(|i| !i.is_empty()) else {
            return HostEndRules::default();
        };
        let goto = |prefix: &str| {
            Rule::action(Action::Goto(endpoint_chain_name(prefix, iface, c.nftables)))
        };
        let mut to = Vec::new();
        // The wildcard host endpoint's normal egress policy is for fabric-facing interfaces,
        // never for traffic from the host to a local workload.
        if !apply_on_forward {
            for prefix in &c.workload_iface_prefixes {
                to.push(
                    Rule::new(
                        MatchCriteria::new().out_interface(&format!("{prefix}{}", wildcard(c))),
                        Action::Return,
                    )
                    .comment("Skip egress WHEP policy for traffic to local workload"),
                );
            }
        }
        to.push(goto(HOST_TO_ENDPOINT_PREFIX));
        HostEndRules {
            from: vec![goto(HOST_FROM_ENDPOINT_PREFIX)],
            to,
            from_forward: vec![goto(HOST_FROM_ENDPOINT_FORWARD_PREFIX)],
            to_forward: vec![goto(HOST_TO_ENDPOINT_FORWARD_PREFIX)],
        }
    }
}

fn host_dispatch(
    c: &RulesConfig,
    names: &[String],
    default_iface: Option<&str>,
    dirs: HostDirections,
    apply_on_forward: bool,
) -> Vec<Chain> {
    let end = HostEndRules::new(c, default_iface, apply_on_forward);
    let from = Side {
        endpoint_prefix: HOST_FROM_ENDPOINT_PREFIX,
        dispatch_chain: CHAIN_DISPATCH_FROM_HOST_ENDPOINT,
        end_rules: &end.from,
    };
    let to = Side {
        endpoint_prefix: HOST_TO_ENDPOINT_PREFIX,
        dispatch_chain: CHAIN_DISPATCH_TO_HOST_ENDPOINT,
        end_rules: &end.to,
    };
    match dirs {
        HostDirections::From => interface_name_dispatch_chains(c, names, Some(from), None),
        HostDirections::To => interface_name_dispatch_chains(c, names, None, Some(to)),
        HostDirections::Both => {
            let mut chains = interface_name_dispatch_chains(c, names, Some(from), Some(to));
            if apply_on_forward {
                chains.extend(interface_name_dispatch_chains(
                    c,
                    names,
                    Some(Side {
                        endpoint_prefix: HOST_FROM_ENDPOINT_FORWARD_PREFIX,
                        dispatch_chain: CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD,
                        end_rules: &end.from_forward,
                    }),
                    Some(Side {
                        endpoint_prefix: HOST_TO_ENDPOINT_FORWARD_PREFIX,
                        dispatch_chain: CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD,
                        end_rules: &end.to_forward,
                    }),
                ));
            }
            chains
        }
    }
}

/// The IPVS endpoint-mark chains (Calico's `EndpointMarkDispatchChains`), in Calico's order:
/// the children of `cali-set-endpoint-mark` (`-wep-<char>` for workloads, `-hep-<char>` for
/// host endpoints, so the two trees can't collide), then `cali-set-endpoint-mark` itself, then
/// `cali-from-endpoint-mark`.
///
/// The set-mark root ends by denying unknown workload interfaces ("Unknown endpoint": a pod
/// whose endpoint hasn't arrived) and giving everything else the non-Calico endpoint mark. The
/// from-mark chain allocates marks in sorted name order, workloads first, so the same set of
/// endpoints gets the same marks.
pub fn endpoint_mark_dispatch_chains(
    c: &RulesConfig,
    mapper: &mut EndpointMarkMapper,
    wl_iface_names: &[String],
    hep_iface_names: &[String],
) -> Vec<Chain> {
    let mask = mapper.mask();
    let mut chains = Vec::new();
    let mut set_mark_rules = Vec::new();
    let to_set_mark_chain = |name: &str| {
        Action::Goto(endpoint_chain_name(
            SET_END_POINT_MARK_PREFIX,
            name,
            c.nftables,
        ))
    };
    for (names, infix) in [(wl_iface_names, "-wep"), (hep_iface_names, "-hep")] {
        if names.is_empty() {
            continue;
        }
        let (children, root) = build_tree(
            c,
            &PrefixTree::new(names),
            &TreeSpec {
                chain_name: CHAIN_DISPATCH_SET_END_POINT_MARK,
                infix,
                match_for: &in_iface,
                action_for: &to_set_mark_chain,
                end_rules: &[],
            },
        );
        chains.extend(children);
        set_mark_rules.extend(root.rules);
    }
    for prefix in &c.workload_iface_prefixes {
        set_mark_rules.push(
            Rule::new(
                MatchCriteria::new().in_interface(&format!("{prefix}{}", wildcard(c))),
                c.filter_deny(),
            )
            .comment("Unknown endpoint"),
        );
    }
    set_mark_rules.push(
        Rule::action(Action::SetMaskedMark {
            mark: c.mark_non_cali_endpoint,
            mask,
        })
        .comment("Non-Cali endpoint mark"),
    );

    let mut from_mark_rules = Vec::new();
    for (names, prefix) in [
        (wl_iface_names, WORKLOAD_FROM_ENDPOINT_PREFIX),
        (hep_iface_names, HOST_FROM_ENDPOINT_FORWARD_PREFIX),
    ] {
        for name in sorted_unique(names) {
            // Out of marks: Calico leaves the endpoint out (its traffic hits the deny below).
            if let Ok(mark) = mapper.endpoint_mark(name) {
                from_mark_rules.push(Rule::new(
                    MatchCriteria::new().mark_matches_with_mask(mark, mask),
                    Action::Goto(endpoint_chain_name(prefix, name, c.nftables)),
                ));
            }
        }
    }
    from_mark_rules.push(unknown_interface_rule(c));

    chains.push(Chain::new(
        CHAIN_DISPATCH_SET_END_POINT_MARK,
        set_mark_rules,
    ));
    chains.push(Chain::new(
        CHAIN_DISPATCH_FROM_END_POINT_MARK,
        from_mark_rules,
    ));
    chains
}

/// One direction of a dispatch tree.
#[derive(Clone, Copy)]
struct Side<'a> {
    /// Prefix of the per-endpoint chains the leaves go to (`cali-fw-`, ...).
    endpoint_prefix: &'a str,
    /// The root chain's name; children are `<root>-<char>`.
    dispatch_chain: &'a str,
    /// Rules for packets matching no interface (at the end of the root and every child).
    end_rules: &'a [Rule],
}

/// From chains (children, then root), then to chains (children, then root), as Calico's
/// `interfaceNameDispatchChains`.
fn interface_name_dispatch_chains(
    c: &RulesConfig,
    names: &[String],
    from: Option<Side<'_>>,
    to: Option<Side<'_>>,
) -> Vec<Chain> {
    let tree = PrefixTree::new(names);
    let mut chains = Vec::new();
    if let Some(side) = from {
        chains.extend(side_chains(c, &tree, side, &in_iface));
    }
    if let Some(side) = to {
        chains.extend(side_chains(c, &tree, side, &out_iface));
    }
    chains
}

fn side_chains(
    c: &RulesConfig,
    tree: &PrefixTree,
    side: Side<'_>,
    match_for: &dyn Fn(&str) -> MatchCriteria,
) -> Vec<Chain> {
    if c.nftables
        && let Some(chain) = vmap_dispatch_chain(side)
    {
        return vec![chain];
    }
    let goto_endpoint =
        |name: &str| Action::Goto(endpoint_chain_name(side.endpoint_prefix, name, c.nftables));
    let (mut chains, root) = build_tree(
        c,
        tree,
        &TreeSpec {
            chain_name: side.dispatch_chain,
            infix: "",
            match_for,
            action_for: &goto_endpoint,
            end_rules: side.end_rules,
        },
    );
    chains.push(root);
    chains
}

/// nftables' workload dispatch: one verdict map lookup (its entries are
/// [`dispatch_mappings`]), then the end rules. `None` for sides that have no map (host
/// endpoints), which keep the tree.
fn vmap_dispatch_chain(side: Side<'_>) -> Option<Chain> {
    let matches = match side.endpoint_prefix {
        WORKLOAD_FROM_ENDPOINT_PREFIX => {
            MatchCriteria::new().in_interface_vmap(NFTABLES_FROM_WORKLOAD_DISPATCH_MAP)
        }
        WORKLOAD_TO_ENDPOINT_PREFIX => {
            MatchCriteria::new().out_interface_vmap(NFTABLES_TO_WORKLOAD_DISPATCH_MAP)
        }
        _ => return None,
    };
    let mut rules = vec![Rule {
        matches,
        action: None,
        comments: Vec::new(),
    }];
    rules.extend_from_slice(side.end_rules);
    Some(Chain::new(side.dispatch_chain, rules))
}

fn in_iface(name: &str) -> MatchCriteria {
    MatchCriteria::new().in_interface(name)
}

fn out_iface(name: &str) -> MatchCriteria {
    MatchCriteria::new().out_interface(name)
}

/// Non-empty names, sorted (so that the chains don't change, and get rewritten, with the
/// input's order) and without duplicates (a transient misconfiguration: the duplicates can't
/// be told apart, so the first rule wins either way).
fn sorted_unique(names: &[String]) -> Vec<&str> {
    let mut sorted: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// Names binned by common prefix + one character, bins in sorted order (Calico's
/// `sortAndDivideEndpointNamesToPrefixTree`).
#[derive(Debug, PartialEq, Eq)]
struct PrefixTree {
    common_prefix: String,
    bins: Vec<(String, Vec<String>)>,
}

impl PrefixTree {
    fn new(names: &[String]) -> PrefixTree {
        let sorted = sorted_unique(names);
        let common = match (sorted.first(), sorted.last()) {
            (Some(&first), Some(&last)) => common_prefix(first, last),
            _ => "",
        };
        let mut bins: Vec<(String, Vec<String>)> = Vec::new();
        for name in sorted {
            let prefix = name
                .get(..next_char_end(name, common.len()))
                .unwrap_or(name);
            // Sorted names give sorted prefixes, so a bin's names are consecutive.
            if let Some((_, members)) = bins.last_mut().filter(|(p, _)| p == prefix) {
                members.push(name.to_string());
                continue;
            }
            bins.push((prefix.to_string(), vec![name.to_string()]));
        }
        PrefixTree {
            common_prefix: common.to_string(),
            bins,
        }
    }
}

/// The longest common prefix of two strings, cut back to a character boundary (Calico works
/// on bytes; interface names are ASCII in practice). For sorted names, that of the first and
/// last is that of them all.
fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(n) {
        n -= 1;
    }
    &a[..n]
}

/// The end of the character starting at `at` (a character boundary of `s`), or `at` itself at
/// the end of `s` (the name that is the whole common prefix gets a bin of its own).
fn next_char_end(s: &str, at: usize) -> usize {
    s.get(at..)
        .and_then(|rest| rest.chars().next())
        .map_or(at.min(s.len()), |ch| at + ch.len_utf8())
}

/// How one dispatch tree matches an interface name and where it sends the packet.
struct TreeSpec<'a> {
    /// The root chain; children are `<root><infix>-<char>`.
    chain_name: &'a str,
    infix: &'a str,
    match_for: &'a dyn Fn(&str) -> MatchCriteria,
    action_for: &'a dyn Fn(&str) -> Action,
    end_rules: &'a [Rule],
}

/// Child chains and the root chain (Calico's `buildSingleDispatchChainTree`).
fn build_tree(c: &RulesConfig, tree: &PrefixTree, spec: &TreeSpec<'_>) -> (Vec<Chain>, Chain) {
    let leaf = |name: &str| Rule::new((spec.match_for)(name), (spec.action_for)(name));
    let mut children = Vec::new();
    let mut root_rules = Vec::new();
    for (prefix, names) in &tree.bins {
        if let [name] = names.as_slice() {
            // One name: matched in the root, saving a goto.
            root_rules.push(leaf(name));
            continue;
        }
        let next_char = prefix.get(tree.common_prefix.len()..).unwrap_or_default();
        let child = format!("{}{}-{next_char}", spec.chain_name, spec.infix);
        // A goto: packets never come back to the root once their prefix is found...
        root_rules.push(Rule::new(
            (spec.match_for)(&format!("{prefix}{}", wildcard(c))),
            Action::Goto(child.clone()),
        ));
        let mut child_rules: Vec<Rule> = names.iter().map(|n| leaf(n)).collect();
        // ...so the child ends as the root does.
        child_rules.extend_from_slice(spec.end_rules);
        children.push(Chain::new(child, child_rules));
    }
    root_rules.extend_from_slice(spec.end_rules);
    (children, Chain::new(spec.chain_name, root_rules))
}

/// Why an endpoint mark could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointMarkError {
    /// Endpoint names must be non-empty.
    EmptyName,
    /// Every mark the mask allows is taken.
    NoMarkLeft,
    /// The mark has bits outside the mask.
    IncompatibleMark,
    /// The endpoint already has another mark, or the mark another endpoint.
    Conflict,
}

impl fmt::Display for EndpointMarkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointMarkError::EmptyName => "invalid endpoint name",
            EndpointMarkError::NoMarkLeft => "no mark left for endpoint",
            EndpointMarkError::IncompatibleMark => "mark bit not compatible",
            EndpointMarkError::Conflict => "endpoint or mark already allocated differently",
        })
    }
}

impl std::error::Error for EndpointMarkError {}

/// Calico's name for the endpoint that owns the non-Calico mark: not a valid interface name, so
/// it can't clash with one.
const PSEUDO_NON_CALI_ENDPOINT_NAME: &str = "/cali/Pseudo/NonCali/Endpoint/";

/// Hands out per-endpoint marks within a mask (Calico's `DefaultEPMarkManager`). An endpoint's
/// mark is derived from the FNV-1 hash of its name (probing on collision), so that a restarted
/// agent tends to give endpoints the marks they had. Mark number 0 is never used (no mark), and
/// the non-Calico endpoint mark is reserved up front.
#[derive(Debug, Clone)]
pub struct EndpointMarkMapper {
    mask: u32,
    /// How many numbers the mask's bits can express (0 for an empty mask).
    positions: u64,
    by_endpoint: HashMap<String, (u64, u32)>,
    by_position: HashMap<u64, String>,
    by_mark: HashMap<u32, String>,
}

impl EndpointMarkMapper {
    /// A mapper for `mask` (`MarkEndpoint`) with `non_cali_mark` (`MarkNonCaliEndpoint`)
    /// reserved; fails if that mark does not fit the mask.
    pub fn new(mask: u32, non_cali_mark: u32) -> Result<EndpointMarkMapper, EndpointMarkError> {
        let bits = mask.count_ones();
        let mut mapper = EndpointMarkMapper {
            mask,
            positions: if bits == 0 { 0 } else { 1u64 << bits },
            by_endpoint: HashMap::new(),
            by_position: HashMap::new(),
            by_mark: HashMap::new(),
        };
        mapper.set_endpoint_mark(PSEUDO_NON_CALI_ENDPOINT_NAME, non_cali_mark)?;
        Ok(mapper)
    }

    pub fn mask(&self) -> u32 {
        self.mask
    }

    /// The endpoint's mark, allocating one if it has none.
    pub fn endpoint_mark(&mut self, endpoint: &str) -> Result<u32, EndpointMarkError> {
        if endpoint.is_empty() {
            return Err(EndpointMarkError::EmptyName);
        }
        if let Some(&(_, mark)) = self.by_endpoint.get(endpoint) {
            return Ok(mark);
        }
        let start = u64::from(fnv1_32(endpoint.as_bytes()));
        let position = (0..self.positions)
            .map(|i| (start + i) % self.positions)
            .find(|p| *p != 0 && !self.by_position.contains_key(p))
            .ok_or(EndpointMarkError::NoMarkLeft)?;
        let mark = number_to_mark(self.mask, position).ok_or(EndpointMarkError::NoMarkLeft)?;
        self.record(endpoint, position, mark);
        Ok(mark)
    }

    /// Gives an endpoint a mark it had before (e.g. found in the dataplane at start of day).
    pub fn set_endpoint_mark(
        &mut self,
        endpoint: &str,
        mark: u32,
    ) -> Result<(), EndpointMarkError> {
        if let Some(&(_, current)) = self.by_endpoint.get(endpoint) {
            return if current == mark {
                Ok(())
            } else {
                Err(EndpointMarkError::Conflict)
            };
        }
        if let Some(owner) = self.by_mark.get(&mark) {
            return if owner == endpoint {
                Ok(())
            } else {
                Err(EndpointMarkError::Conflict)
            };
        }
        let position =
            mark_to_number(self.mask, mark).ok_or(EndpointMarkError::IncompatibleMark)?;
        self.record(endpoint, position, mark);
        Ok(())
    }

    /// Frees the endpoint's mark, if it has one.
    pub fn release_endpoint_mark(&mut self, endpoint: &str) {
        if let Some((position, mark)) = self.by_endpoint.remove(endpoint) {
            self.by_position.remove(&position);
            self.by_mark.remove(&mark);
        }
    }

    fn record(&mut self, endpoint: &str, position: u64, mark: u32) {
        self.by_endpoint
            .insert(endpoint.to_string(), (position, mark));
        self.by_position.insert(position, endpoint.to_string());
        self.by_mark.insert(mark, endpoint.to_string());
    }
}

/// 32-bit FNV-1 (Go's `fnv.New32`, not the 1a variant).
fn fnv1_32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5_u32, |h, &b| {
        h.wrapping_mul(0x0100_0193) ^ u32::from(b)
    })
}

/// Spreads `number`'s bits, lowest first, over the mask's set bits (Calico's
/// `MapNumberToMark`); `None` if the number needs more bits than the mask has.
fn number_to_mark(mask: u32, number: u64) -> Option<u32> {
    let mut rest = number;
    let mut mark = 0u32;
    let mut used = 0u32;
    for shift in 0..32 {
        if rest == 0 {
            break;
        }
        let candidate = 1u32 << shift;
        if mask & candidate != 0 {
            let bit = rest & (1u64 << used);
            if bit != 0 {
                mark |= candidate;
                rest -= bit;
            }
            used += 1;
        }
    }
    (rest == 0).then_some(mark)
}

/// The inverse of [`number_to_mark`] (Calico's `MapMarkToNumber`); `None` for a mark with bits
/// outside the mask.
fn mark_to_number(mask: u32, mark: u32) -> Option<u64> {
    if mark & mask != mark {
        return None;
    }
    let mut number = 0u64;
    let mut used = 0u32;
    for shift in 0..32 {
        let bit = 1u32 << shift;
        if mask & bit != 0 {
            if mark & bit != 0 {
                number |= 1u64 << used;
            }
            used += 1;
        }
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::generic::{Features, iptables_render, rule_hashes};

    /// Calico's dispatch_test.go configuration.
    fn cfg() -> RulesConfig {
        RulesConfig {
            workload_iface_prefixes: vec!["cali".into(), "tap".into()],
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

    fn names(ns: &[&str]) -> Vec<String> {
        ns.iter().map(|s| s.to_string()).collect()
    }

    /// iptables-save-like text: `:<chain>` then its rules, for every chain in order.
    fn render(chains: &[Chain]) -> Vec<String> {
        let f = Features::default();
        let mut out = Vec::new();
        for ch in chains {
            out.push(format!(":{}", ch.name));
            out.extend(
                ch.rules
                    .iter()
                    .map(|r| iptables_render("-A", &ch.name, None, r, "", &f)),
            );
        }
        out
    }

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn mapper() -> EndpointMarkMapper {
        EndpointMarkMapper::new(0xff00, 0x100).expect("non-cali mark fits")
    }

    const UNKNOWN_FROM: &str =
        r#"-A cali-from-wl-dispatch -m comment --comment "Unknown interface" --jump DROP"#;
    const UNKNOWN_TO: &str =
        r#"-A cali-to-wl-dispatch -m comment --comment "Unknown interface" --jump DROP"#;

    #[test]
    fn workload_dispatch_without_interfaces_only_drops() {
        assert_eq!(
            render(&workload_dispatch_chains(&cfg(), &[])),
            lines(&[
                ":cali-from-wl-dispatch",
                UNKNOWN_FROM,
                ":cali-to-wl-dispatch",
                UNKNOWN_TO,
            ])
        );
    }

    #[test]
    fn workload_dispatch_single_and_duplicate_interface() {
        let expected = lines(&[
            ":cali-from-wl-dispatch",
            "-A cali-from-wl-dispatch --in-interface cali1234 --goto cali-fw-cali1234",
            UNKNOWN_FROM,
            ":cali-to-wl-dispatch",
            "-A cali-to-wl-dispatch --out-interface cali1234 --goto cali-tw-cali1234",
            UNKNOWN_TO,
        ]);
        let c = cfg();
        assert_eq!(
            render(&workload_dispatch_chains(&c, &names(&["cali1234"]))),
            expected
        );
        // Duplicates (a transient misconfiguration) and empty names render as the one name.
        assert_eq!(
            render(&workload_dispatch_chains(
                &c,
                &names(&["cali1234", "", "cali1234"])
            )),
            expected
        );
    }

    #[test]
    fn workload_dispatch_interfaces_sharing_a_prefix() {
        // Given out of order: the output is that of the sorted names.
        let chains =
            workload_dispatch_chains(&cfg(), &names(&["cali2444", "cali1234", "cali2333"]));
        assert_eq!(
            render(&chains),
            lines(&[
                ":cali-from-wl-dispatch-2",
                "-A cali-from-wl-dispatch-2 --in-interface cali2333 --goto cali-fw-cali2333",
                "-A cali-from-wl-dispatch-2 --in-interface cali2444 --goto cali-fw-cali2444",
                r#"-A cali-from-wl-dispatch-2 -m comment --comment "Unknown interface" --jump DROP"#,
                ":cali-from-wl-dispatch",
                "-A cali-from-wl-dispatch --in-interface cali1234 --goto cali-fw-cali1234",
                "-A cali-from-wl-dispatch --in-interface cali2+ --goto cali-from-wl-dispatch-2",
                UNKNOWN_FROM,
                ":cali-to-wl-dispatch-2",
                "-A cali-to-wl-dispatch-2 --out-interface cali2333 --goto cali-tw-cali2333",
                "-A cali-to-wl-dispatch-2 --out-interface cali2444 --goto cali-tw-cali2444",
                r#"-A cali-to-wl-dispatch-2 -m comment --comment "Unknown interface" --jump DROP"#,
                ":cali-to-wl-dispatch",
                "-A cali-to-wl-dispatch --out-interface cali1234 --goto cali-tw-cali1234",
                "-A cali-to-wl-dispatch --out-interface cali2+ --goto cali-to-wl-dispatch-2",
                UNKNOWN_TO,
            ])
        );
    }

    #[test]
    fn workload_dispatch_interfaces_sharing_several_prefixes() {
        let chains = workload_dispatch_chains(
            &cfg(),
            &names(&["cali11", "cali12", "cali13", "cali21", "cali22"]),
        );
        let rendered = render(&chains);
        let from: Vec<&str> = rendered
            .iter()
            .map(String::as_str)
            .take_while(|l| !l.starts_with(":cali-to-wl-dispatch"))
            .collect();
        assert_eq!(
            from,
            [
                ":cali-from-wl-dispatch-1",
                "-A cali-from-wl-dispatch-1 --in-interface cali11 --goto cali-fw-cali11",
                "-A cali-from-wl-dispatch-1 --in-interface cali12 --goto cali-fw-cali12",
                "-A cali-from-wl-dispatch-1 --in-interface cali13 --goto cali-fw-cali13",
                r#"-A cali-from-wl-dispatch-1 -m comment --comment "Unknown interface" --jump DROP"#,
                ":cali-from-wl-dispatch-2",
                "-A cali-from-wl-dispatch-2 --in-interface cali21 --goto cali-fw-cali21",
                "-A cali-from-wl-dispatch-2 --in-interface cali22 --goto cali-fw-cali22",
                r#"-A cali-from-wl-dispatch-2 -m comment --comment "Unknown interface" --jump DROP"#,
                ":cali-from-wl-dispatch",
                "-A cali-from-wl-dispatch --in-interface cali1+ --goto cali-from-wl-dispatch-1",
                "-A cali-from-wl-dispatch --in-interface cali2+ --goto cali-from-wl-dispatch-2",
                UNKNOWN_FROM,
            ]
        );
        let chain_names: Vec<&str> = chains.iter().map(|ch| ch.name.as_str()).collect();
        assert_eq!(
            chain_names,
            [
                "cali-from-wl-dispatch-1",
                "cali-from-wl-dispatch-2",
                "cali-from-wl-dispatch",
                "cali-to-wl-dispatch-1",
                "cali-to-wl-dispatch-2",
                "cali-to-wl-dispatch",
            ]
        );
    }

    #[test]
    fn a_name_equal_to_the_common_prefix_gets_its_own_bin() {
        let chains = workload_dispatch_chains(&cfg(), &names(&["cali1", "cali12", "cali13"]));
        assert_eq!(
            render(&chains[..1]),
            lines(&[
                ":cali-from-wl-dispatch",
                "-A cali-from-wl-dispatch --in-interface cali1 --goto cali-fw-cali1",
                "-A cali-from-wl-dispatch --in-interface cali12 --goto cali-fw-cali12",
                "-A cali-from-wl-dispatch --in-interface cali13 --goto cali-fw-cali13",
                UNKNOWN_FROM,
            ])
        );
    }

    #[test]
    fn workload_dispatch_rejects_when_configured() {
        let c = RulesConfig {
            filter_deny_action: "REJECT".into(),
            ..cfg()
        };
        let chains = workload_dispatch_chains(&c, &[]);
        assert_eq!(
            render(&chains[..1]),
            lines(&[
                ":cali-from-wl-dispatch",
                r#"-A cali-from-wl-dispatch -m comment --comment "Unknown interface" --jump REJECT"#,
            ])
        );
    }

    #[test]
    fn long_interface_names_get_hashed_chain_names() {
        let chains = workload_dispatch_chains(&cfg(), &names(&["cali-a-very-long-interface"]));
        let Some(Action::Goto(target)) = &chains[0].rules[0].action else {
            panic!("expected a goto: {:?}", chains[0].rules[0]);
        };
        assert_eq!(target.len(), 28);
        assert!(target.starts_with("cali-fw-_"));
    }

    #[test]
    fn nftables_dispatches_workloads_through_verdict_maps() {
        let c = RulesConfig {
            nftables: true,
            ..cfg()
        };
        let chains = workload_dispatch_chains(&c, &names(&["cali1", "cali2"]));
        let vmap_rule = |m: MatchCriteria| Rule {
            matches: m,
            action: None,
            comments: Vec::new(),
        };
        assert_eq!(
            chains,
            vec![
                Chain::new(
                    "cali-from-wl-dispatch",
                    vec![
                        vmap_rule(MatchCriteria::new().in_interface_vmap("cali-from-wl-dispatch")),
                        unknown_interface_rule(&c),
                    ],
                ),
                Chain::new(
                    "cali-to-wl-dispatch",
                    vec![
                        vmap_rule(MatchCriteria::new().out_interface_vmap("cali-to-wl-dispatch")),
                        unknown_interface_rule(&c),
                    ],
                ),
            ]
        );
        let (from, to) = dispatch_mappings(&c, &names(&["cali2", "cali1"]));
        let expected = |prefix: &str| -> DispatchMap {
            ["cali1", "cali2"]
                .iter()
                .map(|n| (n.to_string(), vec![format!("goto {prefix}{n}")]))
                .collect()
        };
        assert_eq!(from, expected("cali-fw-"));
        assert_eq!(to, expected("cali-tw-"));
        // Host endpoints keep their trees in nftables mode, with nft's wildcard.
        let hep = host_dispatch_chains(&c, &names(&["eth11", "eth12", "eth2"]), None, false);
        assert_eq!(hep[1].name, "cali-from-host-endpoint");
        assert_eq!(
            hep[1].rules[0],
            Rule::new(
                MatchCriteria::new().in_interface("eth1*"),
                Action::Goto("cali-from-host-endpoint-1".into())
            )
        );
    }

    #[test]
    fn workload_interface_allow_chains_accept_known_interfaces() {
        assert_eq!(
            render(&workload_interface_allow_chains(
                &cfg(),
                &names(&["cali1", "cali2"])
            )),
            lines(&[
                ":cali-to-wl-dispatch",
                "-A cali-to-wl-dispatch --out-interface cali1 --jump ACCEPT",
                "-A cali-to-wl-dispatch --out-interface cali2 --jump ACCEPT",
                UNKNOWN_TO,
            ])
        );
    }

    #[test]
    fn endpoint_marks_follow_calico() {
        // Calico's epmark and dispatch tests: FNV-1 of the name modulo 256, probing past the
        // non-Calico mark (position 1) and taken positions.
        let mut m = mapper();
        assert_eq!(m.endpoint_mark("cali1234"), Ok(0xd400));
        assert_eq!(m.endpoint_mark("cali1234"), Ok(0xd400));
        let mut m = mapper();
        let marks: Vec<u32> = ["cali11", "cali12", "cali13", "cali21", "cali22"]
            .iter()
            .map(|n| m.endpoint_mark(n).expect("a mark"))
            .collect();
        assert_eq!(marks, [0x200, 0x300, 0x400, 0xf700, 0xf400]);
        assert_eq!(mapper().endpoint_mark("eth0"), Ok(0xa200));
        assert_eq!(m.endpoint_mark(""), Err(EndpointMarkError::EmptyName));
        // Release and restore.
        m.release_endpoint_mark("cali11");
        assert_eq!(m.set_endpoint_mark("other", 0x200), Ok(()));
        assert_eq!(m.endpoint_mark("other"), Ok(0x200));
        assert_eq!(
            m.set_endpoint_mark("cali12", 0x200),
            Err(EndpointMarkError::Conflict)
        );
        assert_eq!(
            EndpointMarkMapper::new(0xff00, 0x1).map(|_| ()),
            Err(EndpointMarkError::IncompatibleMark)
        );
        // A one-bit mask has one usable mark, taken by the non-Calico endpoint.
        let mut tiny = EndpointMarkMapper::new(0x100, 0x100).expect("fits");
        assert_eq!(
            tiny.endpoint_mark("cali1"),
            Err(EndpointMarkError::NoMarkLeft)
        );
        assert_eq!(number_to_mark(0xff00, 0xd4), Some(0xd400));
        assert_eq!(mark_to_number(0xff00, 0xd400), Some(0xd4));
        assert_eq!(number_to_mark(0xff00, 0x100), None);
    }

    #[test]
    fn endpoint_mark_dispatch_single_interface() {
        let c = cfg();
        let chains = endpoint_mark_dispatch_chains(&c, &mut mapper(), &names(&["cali1234"]), &[]);
        assert_eq!(
            render(&chains),
            lines(&[
                ":cali-set-endpoint-mark",
                "-A cali-set-endpoint-mark --in-interface cali1234 --goto cali-sm-cali1234",
                r#"-A cali-set-endpoint-mark -m comment --comment "Unknown endpoint" --in-interface cali+ --jump DROP"#,
                r#"-A cali-set-endpoint-mark -m comment --comment "Unknown endpoint" --in-interface tap+ --jump DROP"#,
                r#"-A cali-set-endpoint-mark -m comment --comment "Non-Cali endpoint mark" --jump MARK --set-mark 0x100/0xff00"#,
                ":cali-from-endpoint-mark",
                "-A cali-from-endpoint-mark -m mark --mark 0xd400/0xff00 --goto cali-fw-cali1234",
                r#"-A cali-from-endpoint-mark -m comment --comment "Unknown interface" --jump DROP"#,
            ])
        );
    }

    #[test]
    fn endpoint_mark_dispatch_workloads_and_host_endpoints() {
        let c = cfg();
        let chains = endpoint_mark_dispatch_chains(
            &c,
            &mut mapper(),
            &names(&["cali2444", "cali1234", "cali2333"]),
            &names(&["eth11", "eth0", "eth10"]),
        );
        assert_eq!(
            render(&chains),
            lines(&[
                ":cali-set-endpoint-mark-wep-2",
                "-A cali-set-endpoint-mark-wep-2 --in-interface cali2333 --goto cali-sm-cali2333",
                "-A cali-set-endpoint-mark-wep-2 --in-interface cali2444 --goto cali-sm-cali2444",
                ":cali-set-endpoint-mark-hep-1",
                "-A cali-set-endpoint-mark-hep-1 --in-interface eth10 --goto cali-sm-eth10",
                "-A cali-set-endpoint-mark-hep-1 --in-interface eth11 --goto cali-sm-eth11",
                ":cali-set-endpoint-mark",
                "-A cali-set-endpoint-mark --in-interface cali1234 --goto cali-sm-cali1234",
                "-A cali-set-endpoint-mark --in-interface cali2+ --goto cali-set-endpoint-mark-wep-2",
                "-A cali-set-endpoint-mark --in-interface eth0 --goto cali-sm-eth0",
                "-A cali-set-endpoint-mark --in-interface eth1+ --goto cali-set-endpoint-mark-hep-1",
                r#"-A cali-set-endpoint-mark -m comment --comment "Unknown endpoint" --in-interface cali+ --jump DROP"#,
                r#"-A cali-set-endpoint-mark -m comment --comment "Unknown endpoint" --in-interface tap+ --jump DROP"#,
                r#"-A cali-set-endpoint-mark -m comment --comment "Non-Cali endpoint mark" --jump MARK --set-mark 0x100/0xff00"#,
                ":cali-from-endpoint-mark",
                "-A cali-from-endpoint-mark -m mark --mark 0xd400/0xff00 --goto cali-fw-cali1234",
                "-A cali-from-endpoint-mark -m mark --mark 0xa700/0xff00 --goto cali-fw-cali2333",
                "-A cali-from-endpoint-mark -m mark --mark 0x5200/0xff00 --goto cali-fw-cali2444",
                "-A cali-from-endpoint-mark -m mark --mark 0xa200/0xff00 --goto cali-fhfw-eth0",
                "-A cali-from-endpoint-mark -m mark --mark 0xa900/0xff00 --goto cali-fhfw-eth10",
                "-A cali-from-endpoint-mark -m mark --mark 0xa800/0xff00 --goto cali-fhfw-eth11",
                r#"-A cali-from-endpoint-mark -m comment --comment "Unknown interface" --jump DROP"#,
            ])
        );
    }

    #[test]
    fn from_host_dispatch_for_pre_dnat() {
        let c = cfg();
        assert_eq!(
            render(&from_host_dispatch_chains(&c, &[], None)),
            lines(&[":cali-from-host-endpoint"])
        );
        assert_eq!(
            render(&from_host_dispatch_chains(
                &c,
                &names(&["eth1234", "eth2333", "eth2444"]),
                None
            )),
            lines(&[
                ":cali-from-host-endpoint-2",
                "-A cali-from-host-endpoint-2 --in-interface eth2333 --goto cali-fh-eth2333",
                "-A cali-from-host-endpoint-2 --in-interface eth2444 --goto cali-fh-eth2444",
                ":cali-from-host-endpoint",
                "-A cali-from-host-endpoint --in-interface eth1234 --goto cali-fh-eth1234",
                "-A cali-from-host-endpoint --in-interface eth2+ --goto cali-from-host-endpoint-2",
            ])
        );
    }

    #[test]
    fn host_dispatch_without_forward() {
        let c = cfg();
        assert_eq!(
            render(&host_dispatch_chains(&c, &[], None, false)),
            lines(&[":cali-from-host-endpoint", ":cali-to-host-endpoint"])
        );
        let chains = host_dispatch_chains(
            &c,
            &names(&["eth11", "eth12", "eth13", "eth21", "eth22"]),
            None,
            false,
        );
        let chain_names: Vec<&str> = chains.iter().map(|ch| ch.name.as_str()).collect();
        assert_eq!(
            chain_names,
            [
                "cali-from-host-endpoint-1",
                "cali-from-host-endpoint-2",
                "cali-from-host-endpoint",
                "cali-to-host-endpoint-1",
                "cali-to-host-endpoint-2",
                "cali-to-host-endpoint",
            ]
        );
        assert_eq!(
            render(&chains[4..]),
            lines(&[
                ":cali-to-host-endpoint-2",
                "-A cali-to-host-endpoint-2 --out-interface eth21 --goto cali-th-eth21",
                "-A cali-to-host-endpoint-2 --out-interface eth22 --goto cali-th-eth22",
                ":cali-to-host-endpoint",
                "-A cali-to-host-endpoint --out-interface eth1+ --goto cali-to-host-endpoint-1",
                "-A cali-to-host-endpoint --out-interface eth2+ --goto cali-to-host-endpoint-2",
            ])
        );
    }

    #[test]
    fn host_dispatch_apply_on_forward() {
        let c = cfg();
        assert_eq!(
            render(&host_dispatch_chains(&c, &names(&["eth1234"]), None, true)),
            lines(&[
                ":cali-from-host-endpoint",
                "-A cali-from-host-endpoint --in-interface eth1234 --goto cali-fh-eth1234",
                ":cali-to-host-endpoint",
                "-A cali-to-host-endpoint --out-interface eth1234 --goto cali-th-eth1234",
                ":cali-from-hep-forward",
                "-A cali-from-hep-forward --in-interface eth1234 --goto cali-fhfw-eth1234",
                ":cali-to-hep-forward",
                "-A cali-to-hep-forward --out-interface eth1234 --goto cali-thfw-eth1234",
            ])
        );
        assert_eq!(
            render(&host_dispatch_chains(&c, &[], Some("eth-default"), true)),
            lines(&[
                ":cali-from-host-endpoint",
                "-A cali-from-host-endpoint --goto cali-fh-eth-default",
                ":cali-to-host-endpoint",
                "-A cali-to-host-endpoint --goto cali-th-eth-default",
                ":cali-from-hep-forward",
                "-A cali-from-hep-forward --goto cali-fhfw-eth-default",
                ":cali-to-hep-forward",
                "-A cali-to-hep-forward --goto cali-thfw-eth-default",
            ])
        );
    }

    #[test]
    fn host_dispatch_default_interface_ends_every_chain() {
        // With the goto in the root, children must end the same way.
        let chains = host_dispatch_chains(
            &cfg(),
            &names(&["eth1234", "eth2333", "eth2444"]),
            Some("eth-default"),
            true,
        );
        assert_eq!(chains.len(), 8);
        assert_eq!(
            render(&chains[6..]),
            lines(&[
                ":cali-to-hep-forward-2",
                "-A cali-to-hep-forward-2 --out-interface eth2333 --goto cali-thfw-eth2333",
                "-A cali-to-hep-forward-2 --out-interface eth2444 --goto cali-thfw-eth2444",
                "-A cali-to-hep-forward-2 --goto cali-thfw-eth-default",
                ":cali-to-hep-forward",
                "-A cali-to-hep-forward --out-interface eth1234 --goto cali-thfw-eth1234",
                "-A cali-to-hep-forward --out-interface eth2+ --goto cali-to-hep-forward-2",
                "-A cali-to-hep-forward --goto cali-thfw-eth-default",
            ])
        );
    }

    #[test]
    fn wildcard_host_endpoint_skips_local_workloads() {
        let c = cfg();
        let skip = |prefix: &str| {
            format!(
                r#"-A cali-to-host-endpoint -m comment --comment "Skip egress WHEP policy for traffic to local workload" --out-interface {prefix}+ --jump RETURN"#
            )
        };
        let expected = vec![
            ":cali-to-host-endpoint".to_string(),
            "-A cali-to-host-endpoint --out-interface eth0 --goto cali-th-eth0".to_string(),
            skip("cali"),
            skip("tap"),
            "-A cali-to-host-endpoint --goto cali-th-eth-default".to_string(),
        ];
        let chains = host_dispatch_chains(&c, &names(&["eth0"]), Some("eth-default"), false);
        assert_eq!(render(&chains[1..]), expected);
        assert_eq!(
            render(&to_host_dispatch_chains(
                &c,
                &names(&["eth0"]),
                Some("eth-default")
            )),
            expected
        );
        // An empty default interface is no default interface.
        assert_eq!(
            host_dispatch_chains(&c, &names(&["eth0"]), Some(""), false),
            host_dispatch_chains(&c, &names(&["eth0"]), None, false)
        );
    }

    #[test]
    fn prefixes_respect_character_boundaries() {
        assert_eq!(common_prefix("caliä1", "caliö2"), "cali");
        let tree = PrefixTree::new(&names(&["xé1", "xé2", "xè"]));
        assert_eq!(tree.common_prefix, "x");
        assert_eq!(
            tree.bins,
            vec![
                ("xè".to_string(), vec!["xè".to_string()]),
                ("xé".to_string(), vec!["xé1".to_string(), "xé2".to_string()]),
            ]
        );
    }

    /// Per table of the golden iptables-save dump: chain → the `cali:` hashes of its rules.
    fn dump_hashes(table: &str) -> BTreeMap<String, Vec<String>> {
        let dump = include_str!("../../testdata/calico-iptables-dump.txt");
        let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut in_table = false;
        for line in dump.lines() {
            if let Some(name) = line.strip_prefix('*') {
                in_table = name == table;
            } else if !in_table {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                chains.entry(name.to_string()).or_default();
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let name = rule.split_whitespace().next().unwrap_or_default();
                let hash = rule
                    .split("--comment \"cali:")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next());
                if let Some(hash) = hash {
                    chains
                        .entry(name.to_string())
                        .or_default()
                        .push(hash.to_string());
                }
            }
        }
        chains
    }

    /// The workload interfaces the dump's dispatch chains name (`-g cali-fw-<iface>`).
    fn dump_workload_ifaces(filter: &str) -> Vec<String> {
        filter
            .split_whitespace()
            .filter_map(|w| w.strip_prefix(WORKLOAD_FROM_ENDPOINT_PREFIX))
            .map(str::to_string)
            .collect()
    }

    fn assert_matches_dump(table: &BTreeMap<String, Vec<String>>, chains: &[Chain]) {
        let f = Features::default();
        for ch in chains {
            let Some(expected) = table.get(&ch.name) else {
                panic!("{} is not in the dump", ch.name);
            };
            assert_eq!(&rule_hashes(ch, &f), expected, "{}", ch.name);
        }
    }

    #[test]
    fn golden_dispatch_chains_match_calicos_dump() {
        let dump = include_str!("../../testdata/calico-iptables-dump.txt");
        let filter_text = dump
            .split("*filter")
            .nth(1)
            .and_then(|t| t.split("COMMIT").next())
            .unwrap_or_default();
        // The node in the dump has no workloads yet: the dispatch chains only drop.
        let ifaces = dump_workload_ifaces(filter_text);
        let c = RulesConfig::default();

        let filter = dump_hashes("filter");
        let wl = workload_dispatch_chains(&c, &ifaces);
        assert_eq!(wl.len(), 2);
        assert_matches_dump(&filter, &wl);
        assert_eq!(
            filter.get(CHAIN_FROM_WORKLOAD_DISPATCH).map(Vec::as_slice),
            Some(["zTj6P0TIgYvgz-md".to_string()].as_slice())
        );
        assert_eq!(
            filter.get(CHAIN_TO_WORKLOAD_DISPATCH).map(Vec::as_slice),
            Some(["7KNphB1nNHw80nIO".to_string()].as_slice())
        );
        // No host endpoints: filter (with forward), raw and mangle dispatch chains are empty.
        assert_matches_dump(&filter, &host_dispatch_chains(&c, &[], None, true));
        assert_matches_dump(
            &dump_hashes("raw"),
            &host_dispatch_chains(&c, &[], None, false),
        );
        let mangle = dump_hashes("mangle");
        assert_matches_dump(&mangle, &from_host_dispatch_chains(&c, &[], None));
        assert_matches_dump(&mangle, &to_host_dispatch_chains(&c, &[], None));
    }
}
