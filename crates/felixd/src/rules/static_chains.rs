//! Calico's static chains (`felix/rules/static.go`): the `cali-INPUT`/`cali-FORWARD`/
//! `cali-OUTPUT` chains of the filter table, `cali-PREROUTING`/`cali-OUTPUT` of raw,
//! `cali-PREROUTING`/`cali-POSTROUTING` of mangle and nat, the failsafe chains, and the rules
//! that hook them into the kernel's chains (`felix/dataplane/linux/int_dataplane.go`).
//!
//! Every rule, its order and its comment follow Calico (iptables mode, not BPF), because the
//! per-rule hashes are chained through the whole chain: one extra or missing rule changes
//! the hash of every rule after it, and a node taken over from Calico would see all its rules
//! rewritten.
//!
//! Not ported (disabled by default, or not in this project's scope): BPF mode, WireGuard
//! (rules and `cali-wireguard-incoming-mark`), OpenStack special cases, Istio/DSCP marking,
//! nftables flowtable offload, XDP.

use std::net::IpAddr;

use crate::generic::{ADDR_TYPE_LOCAL, Action, Chain, MatchCriteria, PortRange, Rule};
use crate::rules::{
    CHAIN_CIDR_BLOCK, CHAIN_DISPATCH_FROM_HOST_ENDPOINT, CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD,
    CHAIN_DISPATCH_TO_HOST_ENDPOINT, CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD, CHAIN_FAILSAFE_IN,
    CHAIN_FAILSAFE_OUT, CHAIN_FILTER_FORWARD, CHAIN_FILTER_INPUT, CHAIN_FILTER_OUTPUT,
    CHAIN_FIP_DNAT, CHAIN_FIP_SNAT, CHAIN_FROM_WORKLOAD_DISPATCH, CHAIN_MANGLE_POSTROUTING,
    CHAIN_MANGLE_PREROUTING, CHAIN_NAT_OUTGOING, CHAIN_NAT_OUTPUT, CHAIN_NAT_POSTROUTING,
    CHAIN_NAT_PREROUTING, CHAIN_RAW_OUTPUT, CHAIN_RAW_PREROUTING, CHAIN_RPF_SKIP,
    CHAIN_TO_WORKLOAD_DISPATCH, CHAIN_WORKLOAD_TO_HOST, IPSET_ID_ALL_HOST_NETS,
    IPSET_ID_ALL_VXLAN_SOURCE_NETS, IPSET_ID_THIS_HOST_IPS, ProtoPort, RulesConfig, ipset_name,
};

/// IP protocol numbers. Calico matches IPIP, VXLAN's UDP and ICMPv6 by number because the
/// kernel need not know their names.
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Felix's tunnel devices (`dataplanedefs`).
pub const IPIP_IFACE_NAME: &str = "tunl0";
pub const VXLAN_IFACE_NAME_V4: &str = "vxlan.calico";
pub const VXLAN_IFACE_NAME_V6: &str = "vxlan-v6.calico";

/// Chains used only with kube-proxy in IPVS mode, where forwarded traffic to services goes
/// through INPUT and OUTPUT instead of FORWARD.
pub const CHAIN_FORWARD_CHECK: &str = "cali-forward-check";
pub const CHAIN_FORWARD_ENDPOINT_MARK: &str = "cali-forward-endpoint-mark";
/// The endpoint-mark dispatch chains (rendered with the dispatch chains).
pub const CHAIN_DISPATCH_SET_END_POINT_MARK: &str = "cali-set-endpoint-mark";
pub const CHAIN_DISPATCH_FROM_END_POINT_MARK: &str = "cali-from-endpoint-mark";

/// The kernel's tables, as iptables names them.
pub const TABLE_FILTER: &str = "filter";
pub const TABLE_RAW: &str = "raw";
pub const TABLE_MANGLE: &str = "mangle";
pub const TABLE_NAT: &str = "nat";

/// A multiport match takes at most 15 ports (a range counts twice).
const MULTIPORT_SLOTS: usize = 15;

fn jump(chain: &str) -> Action {
    Action::Jump(chain.to_string())
}

fn goto(chain: &str) -> Action {
    Action::Goto(chain.to_string())
}

fn single_port(port: u16) -> Vec<PortRange> {
    vec![PortRange::single(port)]
}

/// How Calico names the deny action in comments (`Drop`/`Reject`, its actions' `String()`).
fn deny_action_name(cfg: &RulesConfig) -> &'static str {
    match cfg.filter_deny() {
        Action::Reject { .. } => "Reject",
        _ => "Drop",
    }
}

/// DefaultEndpointToHostAction: what happens to workload → host traffic once the workload's
/// egress policy allowed it.
fn endpoint_to_host_action(cfg: &RulesConfig) -> Action {
    match cfg.endpoint_to_host_action.as_str() {
        "DROP" => Action::Drop,
        "REJECT" => Action::Reject { with: None },
        "ACCEPT" => Action::Accept,
        _ => Action::Return,
    }
}

/// Whether VXLAN of this IP version is on.
fn vxlan_enabled(cfg: &RulesConfig, ip_version: u8) -> bool {
    (ip_version == 4 && cfg.vxlan_enabled) || (ip_version == 6 && cfg.vxlan_enabled_v6)
}

/// Mark-accept set: an earlier table (raw untracked or mangle pre-DNAT policy) already
/// allowed the packet.
fn accept_already_accepted(cfg: &RulesConfig) -> Rule {
    Rule::new(
        MatchCriteria::new().mark_single_bit_set(cfg.mark_accept),
        cfg.filter_allow(),
    )
}

// ---------------------------------------------------------------------------------------
// filter
// ---------------------------------------------------------------------------------------

/// All the static chains of the filter table, in Calico's order: FORWARD, then INPUT
/// (with `cali-wl-to-host` and `cali-failsafe-in`), then OUTPUT (with `cali-failsafe-out`);
/// plus the IPVS chains when kube-proxy's IPVS support is on.
pub fn static_filter_table_chains(cfg: &RulesConfig, ip_version: u8) -> Vec<Chain> {
    let mut chains = vec![filter_forward_chain(cfg)];
    chains.extend(static_filter_input_chains(cfg, ip_version));
    chains.extend(static_filter_output_chains(cfg, ip_version));
    chains
}

/// `cali-INPUT`, `cali-wl-to-host`, `cali-failsafe-in` (and `cali-forward-check` with IPVS).
pub fn static_filter_input_chains(cfg: &RulesConfig, ip_version: u8) -> Vec<Chain> {
    let mut chains = vec![
        filter_input_chain(cfg, ip_version),
        filter_workload_to_host_chain(cfg, ip_version),
        failsafe_in_chain(cfg, TABLE_FILTER, ip_version),
    ];
    if cfg.kube_ipvs_support_enabled {
        chains.push(filter_input_forward_check_chain(cfg, ip_version));
    }
    chains
}

/// `cali-OUTPUT`, `cali-failsafe-out` (and `cali-forward-endpoint-mark` with IPVS).
pub fn static_filter_output_chains(cfg: &RulesConfig, ip_version: u8) -> Vec<Chain> {
    let mut chains = vec![
        filter_output_chain(cfg, ip_version),
        failsafe_out_chain(cfg, TABLE_FILTER, ip_version),
    ];
    if cfg.kube_ipvs_support_enabled {
        chains.push(filter_output_forward_endpoint_mark_chain(cfg));
    }
    chains
}

/// The tunnel rules at the top of `cali-INPUT`: encapsulated packets are only accepted from
/// Calico hosts (IPIP) or allowed VXLAN sources, to a local address; the rest is dropped so a
/// workload-sized hole isn't opened to the whole world.
fn filter_input_tunnel_rules(cfg: &RulesConfig, ip_version: u8) -> Vec<Rule> {
    let mut rules = Vec::new();
    if ip_version == 4 && cfg.ipip_enabled {
        rules.push(
            Rule::new(
                MatchCriteria::new()
                    .protocol_num(PROTO_IPIP)
                    .source_ip_set(&ipset_name(4, IPSET_ID_ALL_HOST_NETS, cfg.nftables))
                    .dest_addr_type(ADDR_TYPE_LOCAL),
                cfg.filter_allow(),
            )
            .comment("Allow IPIP packets from Calico hosts"),
        );
        rules.push(
            Rule::new(
                MatchCriteria::new().protocol_num(PROTO_IPIP),
                cfg.filter_deny(),
            )
            .comment(format!(
                "{} IPIP packets from non-Calico hosts",
                deny_action_name(cfg)
            )),
        );
    }
    if vxlan_enabled(cfg, ip_version) {
        let vxlan_port = || {
            MatchCriteria::new()
                .protocol_num(PROTO_UDP)
                .dest_ports(single_port(cfg.vxlan_port))
        };
        let sources = ipset_name(ip_version, IPSET_ID_ALL_VXLAN_SOURCE_NETS, cfg.nftables);
        rules.push(
            Rule::new(
                vxlan_port()
                    .source_ip_set(&sources)
                    .dest_addr_type(ADDR_TYPE_LOCAL),
                cfg.filter_allow(),
            )
            .comment(format!(
                "Allow IPv{ip_version} VXLAN packets from allowed hosts"
            )),
        );
        // IPv4 always drops here; IPv6 uses the configured deny action (as Calico does).
        let (action, comment) = if ip_version == 4 {
            (
                Action::Drop,
                "Drop IPv4 VXLAN packets from non-allowed hosts".to_string(),
            )
        } else {
            (
                cfg.filter_deny(),
                format!(
                    "{} IPv6 VXLAN packets from non-allowed hosts",
                    deny_action_name(cfg)
                ),
            )
        };
        rules
            .push(Rule::new(vxlan_port().dest_addr_type(ADDR_TYPE_LOCAL), action).comment(comment));
    }
    rules
}

/// `cali-INPUT`: traffic to the host. Workload traffic goes (goto, so it never comes back
/// here) to `cali-wl-to-host`; everything else gets host endpoint policy.
fn filter_input_chain(cfg: &RulesConfig, ip_version: u8) -> Chain {
    let mut rules = filter_input_tunnel_rules(cfg, ip_version);

    if cfg.kube_ipvs_support_enabled {
        // With IPVS, forwarded traffic to services also comes through INPUT: find out whether
        // this is such traffic (the check chain sets the endpoint mark) and leave it for
        // cali-OUTPUT if so.
        rules.push(Rule::action(Action::ClearMark(cfg.mark_endpoint)));
        rules.push(Rule::action(jump(CHAIN_FORWARD_CHECK)));
        rules.push(Rule::new(
            MatchCriteria::new().mark_not_clear(cfg.mark_endpoint),
            Action::Return,
        ));
    }

    for w in cfg.workload_iface_wildcards() {
        rules.push(Rule::new(
            MatchCriteria::new().in_interface(&w),
            goto(CHAIN_WORKLOAD_TO_HOST),
        ));
    }

    rules.push(accept_already_accepted(cfg));
    rules.extend(host_endpoint_rules(
        cfg,
        MatchCriteria::new(),
        CHAIN_DISPATCH_FROM_HOST_ENDPOINT,
        cfg.filter_allow(),
    ));
    Chain::new(CHAIN_FILTER_INPUT, rules)
}

/// The tail shared by several chains: clear our mark bits, run host endpoint policy (the
/// dispatch chain, under `dispatch_match`), and allow what the policy accepted.
fn host_endpoint_rules(
    cfg: &RulesConfig,
    dispatch_match: MatchCriteria,
    dispatch_chain: &str,
    allow: Action,
) -> Vec<Rule> {
    vec![
        Rule::action(Action::ClearMark(cfg.all_calico_marks())),
        Rule::new(dispatch_match, jump(dispatch_chain)),
        Rule::new(
            MatchCriteria::new().mark_single_bit_set(cfg.mark_accept),
            allow,
        )
        .comment("Host endpoint policy accepted packet."),
    ]
}

/// The ICMPv6 a router must accept from (or, in BPF mode, refuse to forward for) its
/// workloads, ahead of any policy so users can't cut off their own IPv6 by accident:
/// multicast listener query/report/done, router solicitation, neighbour solicitation and
/// advertisement.
pub fn icmpv6_filter(action: &Action) -> Vec<Rule> {
    [130u8, 131, 132, 133, 135, 136]
        .into_iter()
        .map(|t| {
            Rule::new(
                MatchCriteria::new()
                    .protocol_num(PROTO_ICMPV6)
                    .icmpv6_type(t),
                action.clone(),
            )
        })
        .collect()
}

/// `cali-wl-to-host`: workload → host traffic gets the workload's egress policy (the
/// from-workload dispatch returns here if it allows), then DefaultEndpointToHostAction.
fn filter_workload_to_host_chain(cfg: &RulesConfig, ip_version: u8) -> Chain {
    let mut rules = Vec::new();
    if ip_version == 6 {
        rules.extend(icmpv6_filter(&cfg.filter_allow()));
    }
    rules.push(Rule::action(jump(CHAIN_FROM_WORKLOAD_DISPATCH)));
    rules.push(
        Rule::action(endpoint_to_host_action(cfg))
            .comment("Configured DefaultEndpointToHostAction"),
    );
    Chain::new(CHAIN_WORKLOAD_TO_HOST, rules)
}

/// The IP version of a failsafe entry's CIDR (or plain IP), `None` if it doesn't parse.
/// IPv4-mapped IPv6 addresses count as IPv4, as in Go.
fn cidr_ip_version(net: &str) -> Option<u8> {
    let (addr, prefix) = match net.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (net, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    if let Some(p) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = p.parse().ok()?;
        if !p.bytes().all(|b| b.is_ascii_digit()) || len > max {
            return None;
        }
    }
    match ip {
        IpAddr::V4(_) => Some(4),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => Some(4),
        IpAddr::V6(_) => Some(6),
    }
}

/// Which port of a failsafe entry a rule matches.
#[derive(Clone, Copy)]
enum PortSide {
    Dest,
    Source,
}

/// Which address a failsafe entry's CIDR restricts.
#[derive(Clone, Copy)]
enum NetSide {
    Source,
    Dest,
}

/// One failsafe rule: `-p <proto> <port match> [<net match>] ACCEPT`. `None` when the entry
/// has a CIDR of the other IP version (or one that doesn't parse, which Calico logs and
/// skips).
fn failsafe_rule(pp: &ProtoPort, ip_version: u8, port: PortSide, net: NetSide) -> Option<Rule> {
    let mut m = MatchCriteria::new().protocol(&pp.protocol);
    m = match port {
        PortSide::Dest => m.dest_ports(single_port(pp.port)),
        PortSide::Source => m.source_ports(single_port(pp.port)),
    };
    if let Some(cidr) = pp.net.as_deref().filter(|n| !n.is_empty()) {
        if cidr_ip_version(cidr)? != ip_version {
            return None;
        }
        m = match net {
            NetSide::Source => m.source_net(cidr),
            NetSide::Dest => m.dest_net(cidr),
        };
    }
    Some(Rule::new(m, Action::Accept))
}

/// `cali-failsafe-in`: the inbound failsafe ports, always open whatever the host endpoint
/// policy says (so a bad policy can't lock the operator out). In the raw table, before
/// conntrack, replies to the outbound failsafe connections must be let through too, or they
/// could fall into untracked policy and leave half a connection untracked.
pub fn failsafe_in_chain(cfg: &RulesConfig, table: &str, ip_version: u8) -> Chain {
    let mut rules: Vec<Rule> = cfg
        .failsafe_inbound_host_ports
        .iter()
        .filter_map(|pp| failsafe_rule(pp, ip_version, PortSide::Dest, NetSide::Source))
        .collect();
    if table == TABLE_RAW {
        rules.extend(
            cfg.failsafe_outbound_host_ports
                .iter()
                .filter_map(|pp| failsafe_rule(pp, ip_version, PortSide::Source, NetSide::Source)),
        );
    }
    Chain::new(CHAIN_FAILSAFE_IN, rules)
}

/// `cali-failsafe-out`: the outbound failsafe ports (and, in raw, replies from the inbound
/// ones).
pub fn failsafe_out_chain(cfg: &RulesConfig, table: &str, ip_version: u8) -> Chain {
    let mut rules: Vec<Rule> = cfg
        .failsafe_outbound_host_ports
        .iter()
        .filter_map(|pp| failsafe_rule(pp, ip_version, PortSide::Dest, NetSide::Dest))
        .collect();
    if table == TABLE_RAW {
        rules.extend(
            cfg.failsafe_inbound_host_ports
                .iter()
                .filter_map(|pp| failsafe_rule(pp, ip_version, PortSide::Source, NetSide::Dest)),
        );
    }
    Chain::new(CHAIN_FAILSAFE_OUT, rules)
}

/// Calico's `SplitPortList`: port ranges in groups that fit one multiport match.
fn split_port_list(ports: &[PortRange]) -> Vec<Vec<PortRange>> {
    let mut splits = Vec::new();
    let mut split: Vec<PortRange> = Vec::new();
    let mut slots = MULTIPORT_SLOTS;
    for p in ports {
        let needed = if p.first == p.last { 1 } else { 2 };
        if slots < needed {
            splits.push(std::mem::take(&mut split));
            slots = MULTIPORT_SLOTS;
        }
        split.push(*p);
        slots -= needed;
    }
    if !split.is_empty() {
        splits.push(split);
    }
    splits
}

/// `cali-forward-check` (IPVS): decides whether a packet in INPUT is really being forwarded
/// (to a NodePort or a service IP) and, if so, sets its endpoint mark.
fn filter_input_forward_check_chain(cfg: &RulesConfig, ip_version: u8) -> Chain {
    let host_ips = ipset_name(ip_version, IPSET_ID_THIS_HOST_IPS, cfg.nftables);
    // An existing connection isn't forwarded traffic, even to a service IP (e.g. a pod's
    // reply to a host process that reached it through a service).
    let mut rules = vec![Rule::new(
        MatchCriteria::new().conntrack_state("RELATED,ESTABLISHED"),
        Action::Return,
    )];
    for split in split_port_list(&cfg.kube_node_port_ranges) {
        for proto in ["tcp", "udp"] {
            rules.push(
                Rule::new(
                    MatchCriteria::new()
                        .protocol(proto)
                        .dest_ports(split.clone())
                        .dest_ip_set(&host_ips),
                    goto(CHAIN_DISPATCH_SET_END_POINT_MARK),
                )
                .comment("To kubernetes NodePort service"),
            );
        }
    }
    rules.push(
        Rule::new(
            MatchCriteria::new().not_dest_ip_set(&host_ips),
            jump(CHAIN_DISPATCH_SET_END_POINT_MARK),
        )
        .comment("To kubernetes service"),
    );
    Chain::new(CHAIN_FORWARD_CHECK, rules)
}

/// `cali-forward-endpoint-mark` (IPVS): the FORWARD-chain treatment for traffic that IPVS
/// sent through INPUT and OUTPUT. OUTPUT can't match the input interface, so dispatch is on
/// the endpoint mark `cali-forward-check` set; non-Calico sources are left alone.
fn filter_output_forward_endpoint_mark_chain(cfg: &RulesConfig) -> Chain {
    let mut rules = vec![Rule::new(
        MatchCriteria::new()
            .not_mark_matches_with_mask(cfg.mark_non_cali_endpoint, cfg.mark_endpoint),
        jump(CHAIN_DISPATCH_FROM_END_POINT_MARK),
    )];
    for w in cfg.workload_iface_wildcards() {
        rules.push(Rule::new(
            MatchCriteria::new().out_interface(&w),
            jump(CHAIN_TO_WORKLOAD_DISPATCH),
        ));
    }
    rules.push(Rule::action(jump(CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD)));
    // Clear the endpoint mark before accepting: an encapsulated copy would inherit it and
    // pass through iptables again looking forwarded.
    rules.push(Rule::action(Action::ClearMark(cfg.mark_endpoint)));
    rules.push(
        Rule::new(
            MatchCriteria::new().mark_single_bit_set(cfg.mark_accept),
            cfg.filter_allow(),
        )
        .comment("Policy explicitly accepted packet."),
    );
    Chain::new(CHAIN_FORWARD_ENDPOINT_MARK, rules)
}

/// `cali-FORWARD`: forwarded traffic goes through the from-host-endpoint, workload and
/// to-host-endpoint dispatch chains, which return when they allow (so traffic between two
/// local endpoints gets both egress and ingress policy); the final accept is appended to
/// the kernel's FORWARD chain ([`static_filter_forward_append_rules`]).
fn filter_forward_chain(cfg: &RulesConfig) -> Chain {
    let mut rules = vec![
        // Clear our mark bits for determinism, except the accept bit: the raw and pre-DNAT
        // chains use it to say they already allowed the packet.
        Rule::action(Action::ClearMark(cfg.all_calico_marks() & !cfg.mark_accept)),
        Rule::new(
            MatchCriteria::new().mark_clear(cfg.mark_accept),
            jump(CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD),
        ),
    ];
    for w in cfg.workload_iface_wildcards() {
        rules.push(Rule::new(
            MatchCriteria::new().in_interface(&w),
            jump(CHAIN_FROM_WORKLOAD_DISPATCH),
        ));
        rules.push(Rule::new(
            MatchCriteria::new().out_interface(&w),
            jump(CHAIN_TO_WORKLOAD_DISPATCH),
        ));
    }
    rules.push(Rule::action(jump(CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD)));
    // Service loop prevention.
    rules.push(Rule::action(jump(CHAIN_CIDR_BLOCK)));
    Chain::new(CHAIN_FILTER_FORWARD, rules)
}

/// The rules appended to the kernel's FORWARD chain (after everyone else's): accept what our
/// policy accepted, and mark the rest with the accept bit so mangle POSTROUTING knows it is
/// forwarded traffic and skips normal host endpoint policy.
pub fn static_filter_forward_append_rules(cfg: &RulesConfig) -> Vec<Rule> {
    vec![
        Rule::new(
            MatchCriteria::new().mark_single_bit_set(cfg.mark_accept),
            cfg.filter_allow(),
        )
        .comment("Policy explicitly accepted packet."),
        Rule::action(Action::SetMark(cfg.mark_accept)),
    ]
}

/// The tunnel rules in `cali-OUTPUT`: always allow our own encapsulated traffic to other
/// Calico hosts, so host policy can't break the overlay in confusing ways.
fn filter_output_tunnel_rules(cfg: &RulesConfig, ip_version: u8) -> Vec<Rule> {
    let mut rules = Vec::new();
    if ip_version == 4 && cfg.ipip_enabled {
        rules.push(
            Rule::new(
                MatchCriteria::new()
                    .protocol_num(PROTO_IPIP)
                    .dest_ip_set(&ipset_name(4, IPSET_ID_ALL_HOST_NETS, cfg.nftables))
                    .src_addr_type(ADDR_TYPE_LOCAL, false),
                cfg.filter_allow(),
            )
            .comment("Allow IPIP packets to other Calico hosts"),
        );
    }
    if vxlan_enabled(cfg, ip_version) {
        rules.push(
            Rule::new(
                MatchCriteria::new()
                    .protocol_num(PROTO_UDP)
                    .dest_ports(single_port(cfg.vxlan_port))
                    .src_addr_type(ADDR_TYPE_LOCAL, false)
                    .dest_ip_set(&ipset_name(
                        ip_version,
                        IPSET_ID_ALL_VXLAN_SOURCE_NETS,
                        cfg.nftables,
                    )),
                cfg.filter_allow(),
            )
            .comment(format!(
                "Allow IPv{ip_version} VXLAN packets to other allowed hosts"
            )),
        );
    }
    rules
}

/// `cali-OUTPUT`: traffic from host processes. Host → workload is not policed (returned to
/// OUTPUT); the rest gets host endpoint policy, except DNATed traffic whose outgoing
/// interface isn't known yet (mangle POSTROUTING handles that).
fn filter_output_chain(cfg: &RulesConfig, ip_version: u8) -> Chain {
    let mut rules = vec![accept_already_accepted(cfg)];
    if cfg.kube_ipvs_support_enabled {
        // IPVS-forwarded packets carry the endpoint mark INPUT gave them: treat them as
        // forwarded. A goto, so that chain's RETURN goes straight back to OUTPUT.
        rules.push(Rule::new(
            MatchCriteria::new().mark_not_clear(cfg.mark_endpoint),
            goto(CHAIN_FORWARD_ENDPOINT_MARK),
        ));
    }
    for w in cfg.workload_iface_wildcards() {
        rules.push(Rule::new(
            MatchCriteria::new().out_interface(&w),
            Action::Return,
        ));
    }
    rules.extend(filter_output_tunnel_rules(cfg, ip_version));
    rules.extend(host_endpoint_rules(
        cfg,
        MatchCriteria::new().not_conntrack_state("DNAT"),
        CHAIN_DISPATCH_TO_HOST_ENDPOINT,
        cfg.filter_allow(),
    ));
    Chain::new(CHAIN_FILTER_OUTPUT, rules)
}

// ---------------------------------------------------------------------------------------
// nat
// ---------------------------------------------------------------------------------------

/// The static chains of the nat table: PREROUTING, POSTROUTING, OUTPUT.
pub fn static_nat_table_chains(cfg: &RulesConfig, ip_version: u8) -> Vec<Chain> {
    vec![
        Chain::new(
            CHAIN_NAT_PREROUTING,
            vec![Rule::action(jump(CHAIN_FIP_DNAT))],
        ),
        nat_postrouting_chain(cfg, ip_version),
        Chain::new(CHAIN_NAT_OUTPUT, vec![Rule::action(jump(CHAIN_FIP_DNAT))]),
    ]
}

/// The tunnel devices of this IP version that have an address to masquerade to.
fn tunnel_ifaces(cfg: &RulesConfig, ip_version: u8) -> Vec<&'static str> {
    let mut ifaces = Vec::new();
    if ip_version == 4 && cfg.ipip_enabled && cfg.ipip_tunnel_address.is_some() {
        ifaces.push(IPIP_IFACE_NAME);
    }
    if ip_version == 4 && cfg.vxlan_enabled && cfg.vxlan_tunnel_address.is_some() {
        ifaces.push(VXLAN_IFACE_NAME_V4);
    }
    if ip_version == 6 && cfg.vxlan_enabled_v6 && cfg.vxlan_tunnel_address_v6.is_some() {
        ifaces.push(VXLAN_IFACE_NAME_V6);
    }
    ifaces
}

/// `cali-POSTROUTING` (nat): floating-IP SNAT, NAT-outgoing, then a masquerade for each
/// tunnel: traffic going down a tunnel from a local address that isn't the tunnel's own
/// (a socket bound to the wrong IP, or a host process reaching a service IP) gets the
/// tunnel's address, so replies come back through the tunnel.
///
/// Calico since mid-2026 (#13118) also adds, with VXLAN on, a UDP masquerade limited to ports
/// away from the VXLAN port; the reference dump predates it, so it is not rendered here.
fn nat_postrouting_chain(cfg: &RulesConfig, ip_version: u8) -> Chain {
    let mut rules = vec![
        Rule::action(jump(CHAIN_FIP_SNAT)),
        Rule::action(jump(CHAIN_NAT_OUTGOING)),
    ];
    for iface in tunnel_ifaces(cfg, ip_version) {
        rules.push(Rule::new(
            MatchCriteria::new()
                .out_interface(iface)
                .not_src_addr_type(ADDR_TYPE_LOCAL, true)
                .src_addr_type(ADDR_TYPE_LOCAL, false),
            Action::Masq {
                to_ports: String::new(),
            },
        ));
    }
    Chain::new(CHAIN_NAT_POSTROUTING, rules)
}

// ---------------------------------------------------------------------------------------
// mangle
// ---------------------------------------------------------------------------------------

/// The static chains of the mangle table: the failsafe chains (for pre-DNAT policy),
/// PREROUTING and POSTROUTING.
pub fn static_mangle_table_chains(cfg: &RulesConfig, ip_version: u8) -> Vec<Chain> {
    vec![
        failsafe_in_chain(cfg, TABLE_MANGLE, ip_version),
        failsafe_out_chain(cfg, TABLE_MANGLE, ip_version),
        mangle_prerouting_chain(cfg),
        mangle_postrouting_chain(cfg),
    ]
}

/// `cali-PREROUTING` (mangle): pre-DNAT host endpoint policy. Established traffic is let
/// through at once (mangle is rarely used to drop, so this circumvents no one), as is what
/// raw already accepted.
fn mangle_prerouting_chain(cfg: &RulesConfig) -> Chain {
    let rules = vec![
        Rule::new(
            MatchCriteria::new().conntrack_state("RELATED,ESTABLISHED"),
            cfg.mangle_allow(),
        ),
        Rule::new(
            MatchCriteria::new().mark_single_bit_set(cfg.mark_accept),
            cfg.mangle_allow(),
        ),
        // Pre-DNAT policy of the incoming interface's host endpoint: it sets the accept bit
        // when it allows, drops when it denies, and returns without bits otherwise.
        Rule::action(jump(CHAIN_DISPATCH_FROM_HOST_ENDPOINT)),
        Rule::new(
            MatchCriteria::new().mark_single_bit_set(cfg.mark_accept),
            cfg.mangle_allow(),
        )
        .comment("Host endpoint policy accepted packet."),
    ];
    Chain::new(CHAIN_MANGLE_PREROUTING, rules)
}

/// `cali-POSTROUTING` (mangle): host endpoint egress policy for host-originated traffic
/// that was DNATed (only here is its outgoing interface final). Forwarded traffic (accept
/// bit set by the FORWARD append rules) and IPVS-forwarded traffic are skipped. RETURN, not
/// ACCEPT, since others may still need to mangle allowed packets.
///
/// Calico since late 2025 also starts the chain with a DSCP rule ("set dscp for traffic
/// leaving cluster."); the reference dump predates it, so it is not rendered here.
fn mangle_postrouting_chain(cfg: &RulesConfig) -> Chain {
    let mut rules = vec![Rule::new(
        MatchCriteria::new().mark_single_bit_set(cfg.mark_accept),
        Action::Return,
    )];
    if cfg.kube_ipvs_support_enabled {
        rules.push(Rule::new(
            MatchCriteria::new().mark_not_clear(cfg.mark_endpoint),
            Action::Return,
        ));
    }
    rules.extend(host_endpoint_rules(
        cfg,
        MatchCriteria::new().conntrack_state("DNAT"),
        CHAIN_DISPATCH_TO_HOST_ENDPOINT,
        Action::Return,
    ));
    Chain::new(CHAIN_MANGLE_POSTROUTING, rules)
}

// ---------------------------------------------------------------------------------------
// raw
// ---------------------------------------------------------------------------------------

/// The static chains of the raw table: the failsafe chains (for untracked policy),
/// PREROUTING and OUTPUT.
pub fn static_raw_table_chains(cfg: &RulesConfig, ip_version: u8) -> Vec<Chain> {
    vec![
        failsafe_in_chain(cfg, TABLE_RAW, ip_version),
        failsafe_out_chain(cfg, TABLE_RAW, ip_version),
        raw_prerouting_chain(cfg, ip_version),
        raw_output_chain(cfg, ip_version),
    ]
}

/// VXLAN uses different source ports each way, so tracking it only fills conntrack with
/// unreplied flows.
fn vxlan_notrack_rule(cfg: &RulesConfig) -> Rule {
    Rule::new(
        MatchCriteria::new()
            .protocol("udp")
            .dest_port(cfg.vxlan_port),
        Action::NoTrack,
    )
}

/// Strict reverse-path filtering for packets with the from-workload mark: workloads (e.g.
/// privileged containers and VMs) can't spoof their source address.
pub fn rp_filter(mark: u32, mask: u32, deny: Action) -> Rule {
    Rule::new(
        MatchCriteria::new()
            .mark_matches_with_mask(mark, mask)
            .rpf_check_failed(),
        deny,
    )
}

/// `cali-PREROUTING` (raw): clear our marks, don't track VXLAN, mark and RPF-check workload
/// traffic (`cali-rpf-skip` exempts workloads allowed to spoof), and send other traffic to
/// untracked host endpoint policy.
fn raw_prerouting_chain(cfg: &RulesConfig, ip_version: u8) -> Chain {
    let from_workload = cfg.mark_scratch0;
    let mut rules = vec![Rule::action(Action::ClearMark(cfg.all_calico_marks()))];
    if vxlan_enabled(cfg, ip_version) {
        rules.push(vxlan_notrack_rule(cfg));
    }
    for w in cfg.workload_iface_wildcards() {
        rules.push(Rule::new(
            MatchCriteria::new().in_interface(&w),
            Action::SetMark(from_workload),
        ));
    }
    rules.push(Rule::new(
        MatchCriteria::new().mark_matches_with_mask(from_workload, from_workload),
        jump(CHAIN_RPF_SKIP),
    ));
    rules.push(rp_filter(from_workload, from_workload, cfg.filter_deny()));
    rules.push(Rule::new(
        MatchCriteria::new().mark_clear(from_workload),
        jump(CHAIN_DISPATCH_FROM_HOST_ENDPOINT),
    ));
    rules.push(Rule::new(
        MatchCriteria::new().mark_single_bit_set(cfg.mark_accept),
        Action::Accept,
    ));
    Chain::new(CHAIN_RAW_PREROUTING, rules)
}

/// `cali-OUTPUT` (raw): untracked host endpoint egress policy, and no tracking for VXLAN.
fn raw_output_chain(cfg: &RulesConfig, ip_version: u8) -> Chain {
    let mut rules = vec![
        Rule::action(Action::ClearMark(cfg.all_calico_marks())),
        Rule::action(jump(CHAIN_DISPATCH_TO_HOST_ENDPOINT)),
    ];
    if vxlan_enabled(cfg, ip_version) {
        rules.push(vxlan_notrack_rule(cfg));
    }
    rules.push(Rule::new(
        MatchCriteria::new().mark_single_bit_set(cfg.mark_accept),
        Action::Accept,
    ));
    Chain::new(CHAIN_RAW_OUTPUT, rules)
}

// ---------------------------------------------------------------------------------------
// kernel hooks
// ---------------------------------------------------------------------------------------

/// A plain `-j <calico_chain>` rule in one of the kernel's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelHook {
    pub table: &'static str,
    pub kernel_chain: &'static str,
    pub calico_chain: String,
    /// `true`: Calico's `InsertOrAppendRules`, at the top of the kernel chain unless
    /// ChainInsertMode is `Append` (the table layer applies that setting); `false`: always
    /// appended after everyone else's rules.
    pub insert: bool,
}

impl KernelHook {
    fn new(
        table: &'static str,
        kernel_chain: &'static str,
        calico_chain: &str,
        insert: bool,
    ) -> Self {
        KernelHook {
            table,
            kernel_chain,
            calico_chain: calico_chain.to_string(),
            insert,
        }
    }

    /// The rule itself.
    pub fn rule(&self) -> Rule {
        Rule::action(jump(&self.calico_chain))
    }

    /// The chain name Calico's hashes for this hook's rule group are chained from: the kernel
    /// chain's for inserted rules, `<chain>*appends*` for appended ones.
    pub fn hash_chain_name(&self) -> String {
        if self.insert {
            self.kernel_chain.to_string()
        } else {
            format!("{}*appends*", self.kernel_chain)
        }
    }
}

/// How the static chains hook into the kernel's (Felix's `setUpIptablesNormal`), in Calico's
/// order. The same for both IP versions and all (non-BPF) configurations. nat POSTROUTING is
/// appended so that kube-proxy's MASQUERADE (which clears its mark bit) runs first: if ours
/// ran first, the mark would stay on the packet and be copied to the encapsulated packet,
/// which kube-proxy would then masquerade (hitting a kernel checksum-offload bug).
///
/// The filter FORWARD chain also gets [`static_filter_forward_append_rules`] appended.
pub fn kernel_hooks(_cfg: &RulesConfig, _ip_version: u8) -> Vec<KernelHook> {
    vec![
        KernelHook::new(TABLE_RAW, "PREROUTING", CHAIN_RAW_PREROUTING, true),
        KernelHook::new(TABLE_RAW, "OUTPUT", CHAIN_RAW_OUTPUT, true),
        KernelHook::new(TABLE_FILTER, "FORWARD", CHAIN_FILTER_FORWARD, true),
        KernelHook::new(TABLE_FILTER, "INPUT", CHAIN_FILTER_INPUT, true),
        KernelHook::new(TABLE_FILTER, "OUTPUT", CHAIN_FILTER_OUTPUT, true),
        KernelHook::new(TABLE_NAT, "PREROUTING", CHAIN_NAT_PREROUTING, true),
        KernelHook::new(TABLE_NAT, "POSTROUTING", CHAIN_NAT_POSTROUTING, false),
        KernelHook::new(TABLE_NAT, "OUTPUT", CHAIN_NAT_OUTPUT, true),
        KernelHook::new(TABLE_MANGLE, "PREROUTING", CHAIN_MANGLE_PREROUTING, true),
        KernelHook::new(TABLE_MANGLE, "POSTROUTING", CHAIN_MANGLE_POSTROUTING, true),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, BTreeSet};
    use std::net::Ipv4Addr;

    use super::*;
    use crate::generic::{Features, HASH_LENGTH, iptables_render, rule_hashes};
    use crate::rules::nat::{cidr_block_chain, floating_ip_chains, nat_outgoing_chain};

    /// `iptables-save` of a Calico node in Calico's FV tests (felix/fv/cali-iptables-dump.txt).
    const DUMP: &str = include_str!("../../testdata/calico-iptables-dump.txt");

    /// One `-A` line of the dump and the hash in its `cali:` comment.
    #[derive(Debug)]
    struct DumpRule {
        hash: String,
        line: String,
    }

    /// (table, chain) → its rules, for every chain the dump declares (empty ones included).
    fn parse_dump(text: &str) -> BTreeMap<(String, String), Vec<DumpRule>> {
        let mut chains: BTreeMap<(String, String), Vec<DumpRule>> = BTreeMap::new();
        let mut table = String::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap().to_string();
                chains.entry((table.clone(), name)).or_default();
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let name = rest.split_whitespace().next().unwrap().to_string();
                let start = line.find("cali:").unwrap() + "cali:".len();
                let hash = line[start..start + HASH_LENGTH].to_string();
                chains
                    .entry((table.clone(), name))
                    .or_default()
                    .push(DumpRule {
                        hash,
                        line: line.to_string(),
                    });
            }
        }
        chains
    }

    /// Whitespace-separated tokens, a double-quoted string (a comment) being one token.
    fn tokens(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in line.chars() {
            if c == '"' {
                quoted = !quoted;
                cur.push(c);
            } else if c.is_whitespace() && !quoted {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            } else {
                cur.push(c);
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    /// A rule's text reduced to what both Felix's and `iptables-save`'s spellings agree on:
    /// long option names, `--set-mark`, `0/` for `0x0/`, protocol names, no implicit
    /// `-m tcp`/`-m udp`; sorted, since iptables-save also reorders options.
    fn canonical(line: &str) -> Vec<String> {
        let raw = tokens(line);
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let t = raw[i].as_str();
            if t == "-m" && matches!(raw.get(i + 1).map(String::as_str), Some("tcp" | "udp")) {
                i += 2;
                continue;
            }
            let t = match t {
                "-j" => "--jump",
                "-g" => "--goto",
                "-i" => "--in-interface",
                "-o" => "--out-interface",
                "-s" => "--source",
                "-d" => "--destination",
                "--set-xmark" => "--set-mark",
                "--dports" => "--destination-ports",
                "--sports" => "--source-ports",
                other => other,
            }
            .to_string();
            let zero_mark = t.strip_prefix("0x0/").map(|rest| format!("0/{rest}"));
            let t = zero_mark.unwrap_or(t);
            let proto_name = if out.last().map(String::as_str) == Some("-p") {
                match t.as_str() {
                    "6" => Some("tcp"),
                    "17" => Some("udp"),
                    _ => None,
                }
            } else {
                None
            };
            out.push(proto_name.map_or(t, str::to_string));
            i += 1;
        }
        out.sort();
        out
    }

    /// Our rules against the dump's: the hashes (chained from `hash_chain`) in order, and
    /// the text of each rule.
    ///
    /// Our rules that reference an IP set are left out of the comparison: the dump has none,
    /// because the FV tests restore it on a node without Calico's IP sets, where
    /// iptables-restore would reject them. They were there on the original node, though: the
    /// chained hashes of the rules after them only match with them included.
    fn check_rules(hash_chain: &str, chain: &str, rules: &[Rule], want: &[DumpRule], f: &Features) {
        let hashes = rule_hashes(&Chain::new(hash_chain, rules.to_vec()), f);
        let kept: Vec<(String, &Rule)> = hashes
            .into_iter()
            .zip(rules)
            .filter(|(_, r)| r.matches.ip_set_names().is_empty())
            .collect();
        let got: Vec<&str> = kept.iter().map(|(h, _)| h.as_str()).collect();
        let exp: Vec<&str> = want.iter().map(|d| d.hash.as_str()).collect();
        assert_eq!(got, exp, "hashes of {chain} (hashed as {hash_chain})");
        for ((hash, rule), d) in kept.iter().zip(want) {
            let line = iptables_render("-A", chain, None, rule, hash, f);
            assert_eq!(
                canonical(&line),
                canonical(&d.line),
                "\nours: {line}\ndump: {}",
                d.line
            );
        }
    }

    /// The FV node's settings, read off the dump: IPv4 VXLAN on (VXLAN rules for port 4789
    /// in filter and raw) with a tunnel address (the vxlan.calico masquerade in nat), no
    /// IPIP (no protocol 4 rules), DefaultEndpointToHostAction ACCEPT (end of
    /// cali-wl-to-host); everything else Calico's defaults.
    fn fv_node_config() -> RulesConfig {
        RulesConfig {
            vxlan_enabled: true,
            // Only its presence matters.
            vxlan_tunnel_address: Some(IpAddr::V4(Ipv4Addr::new(10, 65, 0, 1))),
            endpoint_to_host_action: "ACCEPT".into(),
            ..RulesConfig::default()
        }
    }

    /// Chains of the dump that this module doesn't render, and why.
    const RENDERED_ELSEWHERE: &[(&str, &str)] = &[
        // Dispatch chains (rules::dispatch), empty or "Unknown interface" on the FV node.
        ("filter", "cali-from-wl-dispatch"),
        ("filter", "cali-to-wl-dispatch"),
        ("filter", "cali-from-host-endpoint"),
        ("filter", "cali-to-host-endpoint"),
        ("filter", "cali-from-hep-forward"),
        ("filter", "cali-to-hep-forward"),
        ("raw", "cali-from-host-endpoint"),
        ("raw", "cali-to-host-endpoint"),
        ("mangle", "cali-from-host-endpoint"),
        ("mangle", "cali-to-host-endpoint"),
        // Per-workload RPF exemptions (the endpoint manager), empty here.
        ("raw", "cali-rpf-skip"),
        // Kernel chains Calico doesn't hook into.
        ("nat", "INPUT"),
        ("mangle", "INPUT"),
        ("mangle", "FORWARD"),
        ("mangle", "OUTPUT"),
    ];

    #[test]
    fn static_chains_match_calico_dump() {
        let cfg = fv_node_config();
        let f = Features::default();
        let dump = parse_dump(DUMP);
        let mut checked: BTreeSet<(String, String)> = BTreeSet::new();

        let mut filter = static_filter_table_chains(&cfg, 4);
        // No service CIDRs were advertised on the FV node.
        filter.push(cidr_block_chain(&cfg, &[], 4));
        let mut nat = static_nat_table_chains(&cfg, 4);
        nat.push(nat_outgoing_chain(&cfg, true, 4));
        nat.extend(floating_ip_chains(std::iter::empty::<(&str, &str)>()));
        let tables = [
            (TABLE_FILTER, filter),
            (TABLE_RAW, static_raw_table_chains(&cfg, 4)),
            (TABLE_MANGLE, static_mangle_table_chains(&cfg, 4)),
            (TABLE_NAT, nat),
        ];
        for (table, chains) in &tables {
            for chain in chains {
                let key = (table.to_string(), chain.name.clone());
                if chain.name == CHAIN_FAILSAFE_IN || chain.name == CHAIN_FAILSAFE_OUT {
                    // Only host endpoint chains jump to the failsafe chains and Felix doesn't
                    // program unreferenced chains; the FV node had no host endpoint.
                    assert!(!dump.contains_key(&key), "{key:?} unexpectedly in the dump");
                    continue;
                }
                let want = dump
                    .get(&key)
                    .unwrap_or_else(|| panic!("{key:?} not in the dump"));
                check_rules(&chain.name, &chain.name, &chain.rules, want, &f);
                checked.insert(key);
            }
        }

        // The kernel chains: our inserted rules, then our appended ones, each group hashed
        // on its own.
        let mut hooks: BTreeMap<(String, String), (Vec<Rule>, Vec<Rule>)> = BTreeMap::new();
        for h in kernel_hooks(&cfg, 4) {
            let group = hooks
                .entry((h.table.to_string(), h.kernel_chain.to_string()))
                .or_default();
            if h.insert {
                group.0.push(h.rule());
            } else {
                group.1.push(h.rule());
            }
        }
        hooks
            .entry((TABLE_FILTER.to_string(), "FORWARD".to_string()))
            .or_default()
            .1
            .extend(static_filter_forward_append_rules(&cfg));
        for (key, (inserted, appended)) in &hooks {
            let kernel_chain = key.1.as_str();
            let want = dump
                .get(key)
                .unwrap_or_else(|| panic!("{key:?} not in the dump"));
            assert_eq!(want.len(), inserted.len() + appended.len(), "{key:?}");
            let (want_inserted, want_appended) = want.split_at(inserted.len());
            check_rules(kernel_chain, kernel_chain, inserted, want_inserted, &f);
            let appends = format!("{kernel_chain}*appends*");
            check_rules(&appends, kernel_chain, appended, want_appended, &f);
            checked.insert(key.clone());
        }

        for key in dump.keys() {
            if !checked.contains(key) {
                assert!(
                    RENDERED_ELSEWHERE.contains(&(key.0.as_str(), key.1.as_str())),
                    "{key:?} is in the dump but nothing checked it"
                );
            }
        }
    }

    #[test]
    fn canonical_form_bridges_iptables_save_spelling() {
        assert_eq!(
            canonical(r#"-A X -p udp -m comment --comment "a b" -m udp --dport 4789 -j NOTRACK"#),
            canonical(r#"-A X -m comment --comment "a b" -p 17 --dport 4789 --jump NOTRACK"#)
        );
        assert_ne!(canonical("-A X -j DROP"), canonical("-A X -j ACCEPT"));
    }

    // ---- Calico's static_test.go, ported ----

    fn pp(protocol: &str, port: u16, net: &str) -> ProtoPort {
        ProtoPort {
            protocol: protocol.into(),
            port,
            net: Some(net.into()),
        }
    }

    /// Calico's test configuration (small mark bits so the expectations are readable).
    fn test_config(ipvs: bool, deny: &str) -> RulesConfig {
        RulesConfig {
            failsafe_inbound_host_ports: vec![
                pp("tcp", 22, "0.0.0.0/0"),
                pp("tcp", 1022, "10.0.0.0/24"),
                pp("tcp", 1022, "::/0"),
            ],
            failsafe_outbound_host_ports: vec![
                pp("tcp", 23, "0.0.0.0/0"),
                pp("tcp", 1023, "0.0.0.0/0"),
            ],
            mark_accept: 0x10,
            mark_pass: 0x20,
            mark_scratch0: 0x40,
            mark_scratch1: 0x80,
            mark_drop: 0x200,
            mark_endpoint: 0xff000,
            mark_non_cali_endpoint: 0x1000,
            kube_ipvs_support_enabled: ipvs,
            kube_node_port_ranges: vec![PortRange {
                first: 30030,
                last: 30040,
            }],
            filter_deny_action: deny.into(),
            endpoint_to_host_action: "RETURN".into(),
            ..RulesConfig::default()
        }
    }

    fn find(chains: &[Chain], name: &str) -> Option<Chain> {
        chains.iter().find(|c| c.name == name).cloned()
    }

    fn m() -> MatchCriteria {
        MatchCriteria::new()
    }

    fn accept(matches: MatchCriteria) -> Rule {
        Rule::new(matches, Action::Accept)
    }

    fn tcp() -> MatchCriteria {
        m().protocol("tcp")
    }

    #[test]
    fn failsafe_chains_follow_the_cidr_ip_version() {
        let cfg = test_config(false, "DROP");
        let p = single_port;
        let filter4 = static_filter_table_chains(&cfg, 4);
        assert_eq!(
            find(&filter4, "cali-failsafe-in").unwrap().rules,
            vec![
                accept(tcp().dest_ports(p(22)).source_net("0.0.0.0/0")),
                accept(tcp().dest_ports(p(1022)).source_net("10.0.0.0/24")),
            ]
        );
        assert_eq!(
            find(&filter4, "cali-failsafe-out").unwrap().rules,
            vec![
                accept(tcp().dest_ports(p(23)).dest_net("0.0.0.0/0")),
                accept(tcp().dest_ports(p(1023)).dest_net("0.0.0.0/0")),
            ]
        );
        let filter6 = static_filter_table_chains(&cfg, 6);
        assert_eq!(
            find(&filter6, "cali-failsafe-in").unwrap().rules,
            vec![accept(tcp().dest_ports(p(1022)).source_net("::/0"))]
        );
        assert!(
            find(&filter6, "cali-failsafe-out")
                .unwrap()
                .rules
                .is_empty()
        );

        let raw4 = static_raw_table_chains(&cfg, 4);
        assert_eq!(
            find(&raw4, "cali-failsafe-in").unwrap().rules,
            vec![
                accept(tcp().dest_ports(p(22)).source_net("0.0.0.0/0")),
                accept(tcp().dest_ports(p(1022)).source_net("10.0.0.0/24")),
                accept(tcp().source_ports(p(23)).source_net("0.0.0.0/0")),
                accept(tcp().source_ports(p(1023)).source_net("0.0.0.0/0")),
            ]
        );
        assert_eq!(
            find(&raw4, "cali-failsafe-out").unwrap().rules,
            vec![
                accept(tcp().dest_ports(p(23)).dest_net("0.0.0.0/0")),
                accept(tcp().dest_ports(p(1023)).dest_net("0.0.0.0/0")),
                accept(tcp().source_ports(p(22)).dest_net("0.0.0.0/0")),
                accept(tcp().source_ports(p(1022)).dest_net("10.0.0.0/24")),
            ]
        );
        let raw6 = static_raw_table_chains(&cfg, 6);
        assert_eq!(
            find(&raw6, "cali-failsafe-in").unwrap().rules,
            vec![accept(tcp().dest_ports(p(1022)).source_net("::/0"))]
        );
        assert_eq!(
            find(&raw6, "cali-failsafe-out").unwrap().rules,
            vec![accept(tcp().source_ports(p(1022)).dest_net("::/0"))]
        );
    }

    #[test]
    fn default_failsafe_ports_render_for_both_versions() {
        let cfg = RulesConfig::default();
        let text: Vec<String> = failsafe_in_chain(&cfg, TABLE_FILTER, 6)
            .rules
            .iter()
            .map(|r| iptables_render("-A", "cali-failsafe-in", None, r, "", &Features::default()))
            .collect();
        assert_eq!(text.len(), 9);
        assert_eq!(
            text[0],
            "-A cali-failsafe-in -p tcp -m multiport --destination-ports 22 --jump ACCEPT"
        );
        assert_eq!(failsafe_out_chain(&cfg, TABLE_RAW, 4).rules.len(), 18);
    }

    #[test]
    fn cidr_versions() {
        assert_eq!(cidr_ip_version("10.0.0.0/24"), Some(4));
        assert_eq!(cidr_ip_version("10.0.0.1"), Some(4));
        assert_eq!(cidr_ip_version("::/0"), Some(6));
        assert_eq!(cidr_ip_version("::ffff:10.0.0.1"), Some(4));
        assert_eq!(cidr_ip_version("10.0.0.0/33"), None);
        assert_eq!(cidr_ip_version("10.0.0.0/+3"), None);
        assert_eq!(cidr_ip_version("bogus"), None);
    }

    #[test]
    fn chain_counts() {
        for v in [4, 6] {
            assert_eq!(
                static_filter_table_chains(&test_config(false, "DROP"), v).len(),
                6
            );
            assert_eq!(
                static_filter_table_chains(&test_config(true, "DROP"), v).len(),
                8
            );
            // Calico also returns the (unreferenced unless WireGuard is on)
            // cali-wireguard-incoming-mark chain here; not ported.
            assert_eq!(
                static_raw_table_chains(&test_config(false, "DROP"), v).len(),
                4
            );
            assert_eq!(
                static_mangle_table_chains(&test_config(false, "DROP"), v).len(),
                4
            );
            assert_eq!(
                static_nat_table_chains(&test_config(false, "DROP"), v).len(),
                3
            );
        }
    }

    #[test]
    fn forward_chain() {
        let cfg = test_config(false, "DROP");
        for v in [4, 6] {
            assert_eq!(
                find(&static_filter_table_chains(&cfg, v), "cali-FORWARD").unwrap(),
                Chain::new(
                    "cali-FORWARD",
                    vec![
                        Rule::action(Action::ClearMark(0xe0)),
                        Rule::new(m().mark_clear(0x10), jump("cali-from-hep-forward")),
                        Rule::new(m().in_interface("cali+"), jump("cali-from-wl-dispatch")),
                        Rule::new(m().out_interface("cali+"), jump("cali-to-wl-dispatch")),
                        Rule::action(jump("cali-to-hep-forward")),
                        Rule::action(jump("cali-cidr-block")),
                    ]
                )
            );
        }
    }

    fn hep_accepted(allow: Action) -> Rule {
        Rule::new(m().mark_single_bit_set(0x10), allow)
            .comment("Host endpoint policy accepted packet.")
    }

    #[test]
    fn input_chain_with_ipip_ipvs_and_reject() {
        let cfg = RulesConfig {
            ipip_enabled: true,
            ipip_tunnel_address: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            ..test_config(true, "REJECT")
        };
        let ipvs_and_rest = vec![
            Rule::action(Action::ClearMark(0xff000)),
            Rule::action(jump("cali-forward-check")),
            Rule::new(m().mark_not_clear(0xff000), Action::Return),
            Rule::new(m().in_interface("cali+"), goto("cali-wl-to-host")),
            accept(m().mark_single_bit_set(0x10)),
            Rule::action(Action::ClearMark(0xf0)),
            Rule::action(jump("cali-from-host-endpoint")),
            hep_accepted(Action::Accept),
        ];
        let mut v4 = vec![
            accept(
                m().protocol_num(4)
                    .source_ip_set("cali40all-hosts-net")
                    .dest_addr_type("LOCAL"),
            )
            .comment("Allow IPIP packets from Calico hosts"),
            Rule::new(m().protocol_num(4), Action::Reject { with: None })
                .comment("Reject IPIP packets from non-Calico hosts"),
        ];
        v4.extend(ipvs_and_rest.clone());
        assert_eq!(
            find(&static_filter_table_chains(&cfg, 4), "cali-INPUT")
                .unwrap()
                .rules,
            v4
        );
        assert_eq!(
            find(&static_filter_table_chains(&cfg, 6), "cali-INPUT")
                .unwrap()
                .rules,
            ipvs_and_rest
        );
    }

    #[test]
    fn output_chain_with_ipip_and_ipvs() {
        let cfg = RulesConfig {
            ipip_enabled: true,
            ..test_config(true, "DROP")
        };
        let expected = |v: u8| {
            let mut rules = vec![
                accept(m().mark_single_bit_set(0x10)),
                Rule::new(
                    m().mark_not_clear(0xff000),
                    goto("cali-forward-endpoint-mark"),
                ),
                Rule::new(m().out_interface("cali+"), Action::Return),
            ];
            if v == 4 {
                rules.push(
                    accept(
                        m().protocol_num(4)
                            .dest_ip_set("cali40all-hosts-net")
                            .src_addr_type("LOCAL", false),
                    )
                    .comment("Allow IPIP packets to other Calico hosts"),
                );
            }
            rules.extend([
                Rule::action(Action::ClearMark(0xf0)),
                Rule::new(
                    m().not_conntrack_state("DNAT"),
                    jump("cali-to-host-endpoint"),
                ),
                hep_accepted(Action::Accept),
            ]);
            rules
        };
        for v in [4, 6] {
            assert_eq!(
                find(&static_filter_table_chains(&cfg, v), "cali-OUTPUT")
                    .unwrap()
                    .rules,
                expected(v)
            );
        }
    }

    #[test]
    fn ipvs_chains() {
        let cfg = test_config(true, "DROP");
        let chains = static_filter_table_chains(&cfg, 4);
        let ports = vec![PortRange {
            first: 30030,
            last: 30040,
        }];
        assert_eq!(
            find(&chains, "cali-forward-check").unwrap().rules,
            vec![
                Rule::new(m().conntrack_state("RELATED,ESTABLISHED"), Action::Return),
                Rule::new(
                    tcp()
                        .dest_ports(ports.clone())
                        .dest_ip_set("cali40this-host"),
                    goto("cali-set-endpoint-mark"),
                )
                .comment("To kubernetes NodePort service"),
                Rule::new(
                    m().protocol("udp")
                        .dest_ports(ports)
                        .dest_ip_set("cali40this-host"),
                    goto("cali-set-endpoint-mark"),
                )
                .comment("To kubernetes NodePort service"),
                Rule::new(
                    m().not_dest_ip_set("cali40this-host"),
                    jump("cali-set-endpoint-mark"),
                )
                .comment("To kubernetes service"),
            ]
        );
        assert_eq!(
            find(&chains, "cali-forward-endpoint-mark").unwrap().rules,
            vec![
                Rule::new(
                    m().not_mark_matches_with_mask(0x1000, 0xff000),
                    jump("cali-from-endpoint-mark"),
                ),
                Rule::new(m().out_interface("cali+"), jump("cali-to-wl-dispatch")),
                Rule::action(jump("cali-to-hep-forward")),
                Rule::action(Action::ClearMark(0xff000)),
                accept(m().mark_single_bit_set(0x10)).comment("Policy explicitly accepted packet."),
            ]
        );
        assert!(
            find(
                &static_filter_table_chains(&test_config(false, "DROP"), 4),
                "cali-forward-check"
            )
            .is_none()
        );
    }

    #[test]
    fn split_port_list_fills_fifteen_slots() {
        let ranges: Vec<PortRange> = (0..8)
            .map(|i| PortRange {
                first: 1000 + i * 10,
                last: 1005 + i * 10,
            })
            .collect();
        let splits = split_port_list(&ranges);
        assert_eq!(splits.iter().map(Vec::len).collect::<Vec<_>>(), vec![7, 1]);
        let singles: Vec<PortRange> = (1..=16).map(PortRange::single).collect();
        let splits = split_port_list(&singles);
        assert_eq!(splits.iter().map(Vec::len).collect::<Vec<_>>(), vec![15, 1]);
        assert!(split_port_list(&[]).is_empty());
    }

    #[test]
    fn workload_to_host_chain() {
        let cfg = test_config(false, "DROP");
        let tail = vec![
            Rule::action(jump("cali-from-wl-dispatch")),
            Rule::action(Action::Return).comment("Configured DefaultEndpointToHostAction"),
        ];
        assert_eq!(
            find(&static_filter_table_chains(&cfg, 4), "cali-wl-to-host")
                .unwrap()
                .rules,
            tail
        );
        let mut v6: Vec<Rule> = [130, 131, 132, 133, 135, 136]
            .into_iter()
            .map(|t| accept(m().protocol_num(58).icmpv6_type(t)))
            .collect();
        v6.extend(tail);
        assert_eq!(
            find(&static_filter_table_chains(&cfg, 6), "cali-wl-to-host")
                .unwrap()
                .rules,
            v6
        );
    }

    #[test]
    fn raw_chains() {
        let cfg = test_config(false, "REJECT");
        for v in [4, 6] {
            let chains = static_raw_table_chains(&cfg, v);
            assert_eq!(
                find(&chains, "cali-PREROUTING").unwrap().rules,
                vec![
                    Rule::action(Action::ClearMark(0xf0)),
                    Rule::new(m().in_interface("cali+"), Action::SetMark(0x40)),
                    Rule::new(
                        m().mark_matches_with_mask(0x40, 0x40),
                        jump("cali-rpf-skip")
                    ),
                    Rule::new(
                        m().mark_single_bit_set(0x40).rpf_check_failed(),
                        Action::Reject { with: None },
                    ),
                    Rule::new(m().mark_clear(0x40), jump("cali-from-host-endpoint")),
                    accept(m().mark_single_bit_set(0x10)),
                ]
            );
            assert_eq!(
                find(&chains, "cali-OUTPUT").unwrap().rules,
                vec![
                    Rule::action(Action::ClearMark(0xf0)),
                    Rule::action(jump("cali-to-host-endpoint")),
                    accept(m().mark_single_bit_set(0x10)),
                ]
            );
        }
    }

    #[test]
    fn vxlan_v6_rules_use_the_deny_action() {
        let cfg = RulesConfig {
            vxlan_enabled_v6: true,
            ..test_config(false, "REJECT")
        };
        let input = find(&static_filter_table_chains(&cfg, 6), "cali-INPUT").unwrap();
        assert_eq!(
            input.rules[..2],
            [
                accept(
                    m().protocol_num(17)
                        .dest_ports(single_port(4789))
                        .source_ip_set("cali60all-vxlan-net")
                        .dest_addr_type("LOCAL"),
                )
                .comment("Allow IPv6 VXLAN packets from allowed hosts"),
                Rule::new(
                    m().protocol_num(17)
                        .dest_ports(single_port(4789))
                        .dest_addr_type("LOCAL"),
                    Action::Reject { with: None },
                )
                .comment("Reject IPv6 VXLAN packets from non-allowed hosts"),
            ]
        );
        // Not IPv4's business.
        let input4 = find(&static_filter_table_chains(&cfg, 4), "cali-INPUT").unwrap();
        assert_eq!(
            input4.rules[0],
            Rule::new(m().in_interface("cali+"), goto("cali-wl-to-host"))
        );
        let raw6 = static_raw_table_chains(&cfg, 6);
        assert_eq!(
            find(&raw6, "cali-OUTPUT").unwrap().rules[2],
            Rule::new(m().protocol("udp").dest_port(4789), Action::NoTrack)
        );
    }

    #[test]
    fn mangle_chains_with_ipvs() {
        let cfg = test_config(true, "DROP");
        let chains = static_mangle_table_chains(&cfg, 4);
        assert_eq!(
            find(&chains, "cali-PREROUTING").unwrap().rules,
            vec![
                accept(m().conntrack_state("RELATED,ESTABLISHED")),
                accept(m().mark_single_bit_set(0x10)),
                Rule::action(jump("cali-from-host-endpoint")),
                hep_accepted(Action::Accept),
            ]
        );
        assert_eq!(
            find(&chains, "cali-POSTROUTING").unwrap().rules,
            vec![
                Rule::new(m().mark_single_bit_set(0x10), Action::Return),
                Rule::new(m().mark_not_clear(0xff000), Action::Return),
                Rule::action(Action::ClearMark(0xf0)),
                Rule::new(m().conntrack_state("DNAT"), jump("cali-to-host-endpoint")),
                hep_accepted(Action::Return),
            ]
        );
    }

    #[test]
    fn nat_chains() {
        let masq = |iface: &str| {
            Rule::new(
                m().out_interface(iface)
                    .not_src_addr_type("LOCAL", true)
                    .src_addr_type("LOCAL", false),
                Action::Masq {
                    to_ports: String::new(),
                },
            )
        };
        let head = vec![
            Rule::action(jump("cali-fip-snat")),
            Rule::action(jump("cali-nat-outgoing")),
        ];
        let plain = test_config(false, "DROP");
        let chains = static_nat_table_chains(&plain, 4);
        assert_eq!(find(&chains, "cali-POSTROUTING").unwrap().rules, head);
        assert_eq!(
            find(&chains, "cali-PREROUTING").unwrap().rules,
            vec![Rule::action(jump("cali-fip-dnat"))]
        );
        assert_eq!(
            find(&chains, "cali-OUTPUT").unwrap().rules,
            vec![Rule::action(jump("cali-fip-dnat"))]
        );

        let tunnels = RulesConfig {
            ipip_enabled: true,
            ipip_tunnel_address: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            vxlan_enabled: true,
            vxlan_tunnel_address: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            vxlan_enabled_v6: true,
            ..plain
        };
        let mut v4 = head.clone();
        v4.extend([masq("tunl0"), masq("vxlan.calico")]);
        assert_eq!(
            find(&static_nat_table_chains(&tunnels, 4), "cali-POSTROUTING")
                .unwrap()
                .rules,
            v4
        );
        // IPv6 VXLAN without an IPv6 tunnel address: nothing to masquerade to.
        assert_eq!(
            find(&static_nat_table_chains(&tunnels, 6), "cali-POSTROUTING")
                .unwrap()
                .rules,
            head
        );
        let v6_tunnel = RulesConfig {
            vxlan_tunnel_address_v6: Some("dead:beef::1".parse().unwrap()),
            ..tunnels
        };
        let mut v6 = head;
        v6.push(masq("vxlan-v6.calico"));
        assert_eq!(
            find(&static_nat_table_chains(&v6_tunnel, 6), "cali-POSTROUTING")
                .unwrap()
                .rules,
            v6
        );
    }

    #[test]
    fn kernel_hooks_and_forward_appends() {
        let cfg = RulesConfig::default();
        let hooks = kernel_hooks(&cfg, 4);
        assert_eq!(hooks.len(), 10);
        let nat_post = hooks
            .iter()
            .find(|h| h.table == TABLE_NAT && h.kernel_chain == "POSTROUTING")
            .unwrap();
        assert!(!nat_post.insert);
        assert_eq!(nat_post.hash_chain_name(), "POSTROUTING*appends*");
        assert_eq!(nat_post.rule(), Rule::action(jump("cali-POSTROUTING")));
        assert!(
            hooks
                .iter()
                .filter(|h| h.table != TABLE_NAT || h.kernel_chain != "POSTROUTING")
                .all(|h| h.insert)
        );
        assert_eq!(hooks[0].hash_chain_name(), "PREROUTING");

        let f = Features::default();
        let appends = Chain::new("FORWARD*appends*", static_filter_forward_append_rules(&cfg));
        assert_eq!(
            rule_hashes(&appends, &f),
            vec!["S93hcgKJrXEqnTfs", "mp77cMpurHhyjLrM"]
        );
    }
}
