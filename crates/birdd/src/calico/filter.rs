//! BGPFilter rules and the per-peer import and export filters, as confd renders them
//! (`confd/pkg/resource/template/template_funcs.go` `BGPFilterBIRDFuncs`, and
//! `buildImportFilter` / `buildExportFilter` in `bgp_processor.go`).
//!
//! A BGPFilter becomes one BIRD function per direction and family; a peer's filter calls its
//! filters' functions in order. Inside a function the rules run in order and the first that
//! matches ends the whole filter with `accept` or `reject` (after its operations). When no
//! rule of any filter matches, import accepts and export goes on to
//! `calico_export_to_bgp_peers`.

use std::collections::BTreeMap;

use calico_api::{
    BgpFilterAction, BgpFilterMatchOperator, BgpFilterPeerType, BgpFilterRule, BgpFilterSpec,
};
use calico_bgp::types::{AttrEdits, Attrs, LargeCommunity};
use ipnet::IpNet;

use super::exports::{Community, ExportPolicy, within};
use super::view::View;
use super::{BIRD_INT_MAX, CalicoError, PeerIntent};

/// Where a route came from, as BIRD's `source` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// Learned from a BGP peer (`RTS_BGP`; BGPFilter `source: RemotePeers`).
    Bgp,
    /// Learned from the kernel table (Felix's routes).
    Kernel,
    /// Originated by this node (blackholes, service ranges).
    Static,
    /// An interface's own subnet.
    Direct,
}

/// A route as the filters see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteInfo {
    pub prefix: IpNet,
    pub source: RouteSource,
    /// The outgoing interface (`ifname`), when the route has one.
    pub interface: Option<String>,
    /// Standard communities, `aa << 16 | nn`.
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
    pub as_path: Vec<u32>,
    pub local_pref: Option<u32>,
    pub krt_metric: Option<u32>,
}

impl RouteInfo {
    pub fn new(prefix: IpNet, source: RouteSource) -> RouteInfo {
        RouteInfo {
            prefix,
            source,
            interface: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            as_path: Vec::new(),
            local_pref: None,
            krt_metric: None,
        }
    }

    /// A route received from a BGP peer.
    pub fn learned(prefix: IpNet) -> RouteInfo {
        RouteInfo::new(prefix, RouteSource::Bgp)
    }

    /// A route this node originates.
    pub fn originated(prefix: IpNet) -> RouteInfo {
        RouteInfo::new(prefix, RouteSource::Static)
    }

    /// A BGP path as the filters see it. LOCAL_PREF is the effective one: BIRD gives
    /// routes from eBGP peers its default (100) as they arrive, before any filter.
    pub fn of_path(prefix: IpNet, attrs: &Attrs) -> RouteInfo {
        RouteInfo {
            as_path: attrs.as_path.flat(),
            communities: attrs.communities.clone(),
            large_communities: attrs
                .large_communities
                .iter()
                .map(|c| (c.0, c.1, c.2))
                .collect(),
            local_pref: Some(attrs.effective_local_pref()),
            ..RouteInfo::learned(prefix)
        }
    }

    pub fn with_interface(mut self, ifname: &str) -> RouteInfo {
        self.interface = Some(ifname.to_string());
        self
    }
}

/// Adds a community the way BIRD's `bgp_community.add` / `bgp_large_community.add` do.
fn add_community(edits: &mut AttrEdits, c: Community) {
    match c {
        Community::Standard(v) => edits.add_community(v),
        Community::Large(a, b, c) => edits.add_large_community(LargeCommunity(a, b, c)),
    }
}

/// What a filter decided; an accepted route carries the changes to make to it (export
/// always sets LOCAL_PREF; import only on `setPriority`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterVerdict {
    Accept(AttrEdits),
    Reject,
}

impl FilterVerdict {
    pub fn is_accept(&self) -> bool {
        matches!(self, FilterVerdict::Accept(_))
    }
}

/// A BIRD pattern (`ifname ~ "cali*"`): `*` is any run of characters, `?` one character.
pub(crate) fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NetOp {
    Equal,
    NotEqual,
    In,
    NotIn,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CidrMatch {
    cidr: IpNet,
    op: NetOp,
    /// `[ cidr{min,max} ]`: a prefix pattern instead of a prefix.
    lengths: Option<(u8, u8)>,
}

impl CidrMatch {
    fn matches(&self, net: IpNet) -> bool {
        let positive = match self.lengths {
            // `net ~ [ cidr{min,max} ]`. confd renders Equal/NotEqual with a prefix length as
            // `=`/`!=` against the same set; BIRD compares a prefix with a set by membership.
            Some((min, max)) => within(net, self.cidr) && (min..=max).contains(&net.prefix_len()),
            None => match self.op {
                NetOp::Equal | NetOp::NotEqual => net.trunc() == self.cidr,
                NetOp::In | NetOp::NotIn => within(net, self.cidr),
            },
        };
        match self.op {
            NetOp::Equal | NetOp::In => positive,
            NetOp::NotEqual | NetOp::NotIn => !positive,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Operation {
    AddCommunity(Community),
    /// In final path order.
    Prepend(Vec<u32>),
    SetLocalPref(u32),
}

/// One BGPFilter rule, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Rule {
    cidr: Option<CidrMatch>,
    /// `source: RemotePeers`.
    from_peers: bool,
    interface: Option<String>,
    community: Option<Community>,
    as_path_prefix: Vec<u32>,
    /// `priority`, as the LOCAL_PREF it matches.
    local_pref: Option<u32>,
    /// `peerType`: `Some(true)` iBGP only, `Some(false)` eBGP only.
    ibgp: Option<bool>,
    accept: bool,
    operations: Vec<Operation>,
}

impl Rule {
    /// `local_pref`: the route's LOCAL_PREF as the filter sees it at this point.
    fn matches(&self, route: &RouteInfo, local_pref: Option<u32>, is_same_as: bool) -> bool {
        if self.ibgp.is_some_and(|want| want != is_same_as) {
            return false;
        }
        if let Some(c) = &self.cidr
            && !c.matches(route.prefix)
        {
            return false;
        }
        if self.from_peers && route.source != RouteSource::Bgp {
            return false;
        }
        if let Some(pat) = &self.interface
            && !route
                .interface
                .as_deref()
                .is_some_and(|i| glob_match(pat, i))
        {
            return false;
        }
        match self.community {
            Some(Community::Standard(v)) if !route.communities.contains(&v) => return false,
            Some(Community::Large(a, b, c)) if !route.large_communities.contains(&(a, b, c)) => {
                return false;
            }
            _ => {}
        }
        if !route.as_path.starts_with(&self.as_path_prefix) {
            return false;
        }
        if let Some(lp) = self.local_pref
            && local_pref != Some(lp)
        {
            return false;
        }
        true
    }
}

/// A BGPFilter, checked and ready to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CompiledFilter {
    import_v4: Vec<Rule>,
    export_v4: Vec<Rule>,
    import_v6: Vec<Rule>,
    export_v6: Vec<Rule>,
}

impl CompiledFilter {
    fn rules(&self, import: bool, v6: bool) -> &[Rule] {
        match (import, v6) {
            (true, false) => &self.import_v4,
            (false, false) => &self.export_v4,
            (true, true) => &self.import_v6,
            (false, true) => &self.export_v6,
        }
    }
}

fn compile_rule(r: &BgpFilterRule, v6: bool) -> Result<Rule, (String, String)> {
    let max_len: u8 = if v6 { 128 } else { 32 };
    let cidr = if r.cidr.is_empty() {
        None
    } else {
        let net = r
            .cidr
            .parse::<IpNet>()
            .ok()
            .filter(|n| n.addr().is_ipv6() == v6)
            .ok_or_else(|| {
                (
                    "cidr".to_string(),
                    format!("{:?} is not an IPv{} CIDR", r.cidr, if v6 { 6 } else { 4 }),
                )
            })?
            .trunc();
        let op = match r.match_operator {
            Some(BgpFilterMatchOperator::Equal) => NetOp::Equal,
            Some(BgpFilterMatchOperator::NotEqual) => NetOp::NotEqual,
            Some(BgpFilterMatchOperator::In) => NetOp::In,
            Some(BgpFilterMatchOperator::NotIn) => NetOp::NotIn,
            None => {
                return Err((
                    "matchOperator".to_string(),
                    "cidr is set without matchOperator (Equal, NotEqual, In or NotIn)".to_string(),
                ));
            }
        };
        // confd: min = max(mask, min), max = min(32|128, max).
        let lengths = r.prefix_length.as_ref().map(|pl| {
            let min = pl.min.map_or(net.prefix_len(), |m| {
                net.prefix_len().max(clamp_len(m, max_len))
            });
            let max = pl
                .max
                .map_or(max_len, |m| max_len.min(clamp_len(m, max_len)));
            (min, max)
        });
        Some(CidrMatch {
            cidr: net,
            op,
            lengths,
        })
    };
    let community = match r.communities.as_ref().and_then(|c| c.values.first()) {
        Some(v) => Some(Community::parse(v).map_err(|e| ("communities.values".to_string(), e))?),
        None => None,
    };
    let local_pref = match r.priority {
        Some(p) => Some(priority_to_local_pref(p).ok_or_else(|| {
            (
                "priority".to_string(),
                format!("{p} is outside 1..2147483646"),
            )
        })?),
        None => None,
    };
    let mut operations = Vec::new();
    for (i, op) in r.operations.iter().enumerate() {
        if let Some(ac) = &op.add_community {
            let v = ac.value.as_deref().unwrap_or_default();
            operations
                .push(Operation::AddCommunity(Community::parse(v).map_err(
                    |e| (format!("operations[{i}].addCommunity.value"), e),
                )?));
        } else if let Some(pp) = &op.prepend_as_path {
            operations.push(Operation::Prepend(pp.prefix.iter().map(|a| a.0).collect()));
        } else if let Some(sp) = &op.set_priority {
            let lp = sp.value.and_then(priority_to_local_pref).ok_or_else(|| {
                (
                    format!("operations[{i}].setPriority.value"),
                    "give a priority in 1..2147483646".to_string(),
                )
            })?;
            operations.push(Operation::SetLocalPref(lp));
        }
    }
    Ok(Rule {
        cidr,
        from_peers: r.source.is_some(),
        interface: (!r.interface.is_empty()).then(|| r.interface.clone()),
        community,
        as_path_prefix: r.as_path_prefix.iter().map(|a| a.0).collect(),
        local_pref,
        ibgp: r.peer_type.map(|t| t == BgpFilterPeerType::Ibgp),
        accept: r.action == BgpFilterAction::Accept,
        operations,
    })
}

fn clamp_len(v: i32, max_len: u8) -> u8 {
    u8::try_from(v.max(0)).unwrap_or(max_len).min(max_len)
}

/// BGPFilter `priority` → LOCAL_PREF (`2^31-1 - priority`).
fn priority_to_local_pref(p: i64) -> Option<u32> {
    u32::try_from(p)
        .ok()
        .filter(|p| *p >= 1 && *p < BIRD_INT_MAX)
        .map(|p| BIRD_INT_MAX - p)
}

fn compile(name: &str, spec: &BgpFilterSpec, problems: &mut Vec<CalicoError>) -> CompiledFilter {
    let mut one = |field: &str, rules: &[BgpFilterRule], v6: bool| -> Vec<Rule> {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            match compile_rule(r, v6) {
                Ok(rule) => out.push(rule),
                Err((f, reason)) => problems.push(CalicoError::InvalidFilter {
                    filter: name.to_string(),
                    field: format!("{field}[{i}].{f}"),
                    reason,
                }),
            }
        }
        out
    };
    CompiledFilter {
        import_v4: one("importV4", &spec.import_v4, false),
        export_v4: one("exportV4", &spec.export_v4, false),
        import_v6: one("importV6", &spec.import_v6, true),
        export_v6: one("exportV6", &spec.export_v6, true),
    }
}

/// The BGPFilters the peers use, compiled. A name with no BGPFilter is skipped (as confd
/// does) and reported.
pub(crate) fn referenced(
    v: &mut View<'_>,
    peers: &[PeerIntent],
) -> BTreeMap<String, CompiledFilter> {
    let mut out = BTreeMap::new();
    for p in peers {
        for name in &p.filters {
            if out.contains_key(name) {
                continue;
            }
            match v.state.bgp_filters.get(name) {
                Some(spec) => {
                    let f = compile(name, spec, &mut v.problems);
                    out.insert(name.clone(), f);
                }
                None => v.problems.push(CalicoError::InvalidPeer {
                    peer: p.origin.clone().unwrap_or_else(|| p.name.clone()),
                    field: "filters",
                    reason: format!(
                        "there is no BGPFilter named {name:?}; create it or remove it from the list"
                    ),
                }),
            }
        }
    }
    out
}

/// Runs the peer's filters of one direction: `Some(accept)` when a rule matched.
fn run_filters(
    filters: &BTreeMap<String, CompiledFilter>,
    peer: &PeerIntent,
    route: &RouteInfo,
    local_pref: Option<u32>,
    import: bool,
    edits: &mut AttrEdits,
) -> Option<bool> {
    let v6 = route.prefix.addr().is_ipv6();
    let is_same_as = peer.is_ibgp();
    for name in &peer.filters {
        let Some(f) = filters.get(name) else { continue };
        if let Some(rule) = f
            .rules(import, v6)
            .iter()
            .find(|r| r.matches(route, local_pref, is_same_as))
        {
            for op in &rule.operations {
                match op {
                    Operation::AddCommunity(c) => add_community(edits, *c),
                    Operation::Prepend(asns) => {
                        // A later prepend goes in front of an earlier one.
                        let mut path = asns.clone();
                        path.append(&mut edits.prepend);
                        edits.prepend = path;
                    }
                    Operation::SetLocalPref(lp) => edits.local_pref = Some(*lp),
                }
            }
            return Some(rule.accept);
        }
    }
    None
}

/// The import filter: BGPFilter import rules, else accept.
pub(crate) fn import(
    filters: &BTreeMap<String, CompiledFilter>,
    peer: &PeerIntent,
    route: &RouteInfo,
) -> FilterVerdict {
    let mut edits = AttrEdits::default();
    match run_filters(filters, peer, route, route.local_pref, true, &mut edits) {
        Some(false) => FilterVerdict::Reject,
        _ => FilterVerdict::Accept(edits),
    }
}

/// The export filter: map metric and LOCAL_PREF, BGPFilter export rules, then
/// `calico_export_to_bgp_peers(<iBGP>)`.
pub(crate) fn export(
    filters: &BTreeMap<String, CompiledFilter>,
    policy: &ExportPolicy,
    peer: &PeerIntent,
    route: &RouteInfo,
) -> FilterVerdict {
    let normal = policy.normal_route_priority(route.prefix.addr().is_ipv6());
    // A route learned over BGP keeps its LOCAL_PREF and derives the metric from it; a local
    // route derives LOCAL_PREF from its metric (default: the normal priority).
    let (metric, local_pref) = match (route.source, route.local_pref) {
        (RouteSource::Bgp, Some(lp)) => (BIRD_INT_MAX.saturating_sub(lp), lp),
        _ => {
            let m = route.krt_metric.unwrap_or(normal);
            (m, BIRD_INT_MAX.saturating_sub(m))
        }
    };
    let mut edits = AttrEdits {
        local_pref: Some(local_pref),
        ..AttrEdits::default()
    };
    match run_filters(filters, peer, route, Some(local_pref), false, &mut edits) {
        Some(true) => return FilterVerdict::Accept(edits),
        Some(false) => return FilterVerdict::Reject,
        None => {}
    }
    match policy.export_to_peers(route, metric, peer.is_ibgp()) {
        Some(cs) => {
            for c in cs {
                add_community(&mut edits, c);
            }
            FilterVerdict::Accept(edits)
        }
        None => FilterVerdict::Reject,
    }
}
