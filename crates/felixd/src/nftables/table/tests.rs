//! [`NftTable`] against a recorded `nft`. The expected scripts below were run with the real
//! nft (1.0.6, kernel 6.x) in a scratch network namespace, in this order, each accepted.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::dataplane::exec::fake::FakeExec;
use crate::generic::{Action, MatchCriteria, PortRange};

/// `nft -j list table` output with no table in it (what a missing table looks like to us).
const EMPTY: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}]}"#;

fn writes(exec: &FakeExec) -> Vec<String> {
    exec.calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.0 == "nft" && c.1 == ["-f", "-"])
        .map(|c| c.2.clone())
        .collect()
}

fn reads(exec: &FakeExec) -> usize {
    exec.calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.0 == "nft" && c.1 == ["-j", "list", "table", "ip", "calico"])
        .count()
}

/// The script with every `cali:<16 characters>` hash made `cali:HASH`.
fn unhash(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("cali:") {
        out.push_str(&rest[..i + "cali:".len()]);
        let after = &rest[i + "cali:".len()..];
        if after.len() > HASH_LEN && after.as_bytes()[HASH_LEN] == b';' {
            out.push_str("HASH");
            rest = &after[HASH_LEN..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

const HASH_LEN: usize = crate::generic::HASH_LENGTH;

fn jump(t: &str) -> Rule {
    Rule::action(Action::Jump(t.into()))
}

fn vmap_rule(map: &str) -> Rule {
    Rule {
        matches: MatchCriteria::new().in_interface_vmap(map),
        action: None,
        comments: Vec::new(),
    }
}

/// A small but complete setup: a hooked chain, a vmap dispatch chain, a workload chain
/// reached only through the map, an unreferenced chain, a net set and a named-port set.
fn table() -> NftTable {
    let mut t = NftTable::new(4, Features::default(), true);
    t.update_chain(
        LAYER_FILTER,
        Chain::new(
            "cali-FORWARD",
            vec![
                Rule::new(
                    MatchCriteria::new().in_interface("cali*"),
                    Action::Jump("cali-from-wl-dispatch".into()),
                ),
                Rule::new(
                    MatchCriteria::new()
                        .protocol("tcp")
                        .dest_ports(vec![PortRange::single(80)])
                        .source_ip_set("cali40s:web"),
                    Action::Accept,
                )
                .comment("web"),
            ],
        ),
    );
    t.update_chain(
        LAYER_FILTER,
        Chain::new(
            "cali-from-wl-dispatch",
            vec![
                vmap_rule("cali-from-wl-dispatch"),
                Rule::action(Action::Drop).comment("Unknown interface"),
            ],
        ),
    );
    t.update_chain(
        LAYER_FILTER,
        Chain::new(
            "cali-fw-cali1",
            vec![Rule::new(
                MatchCriteria::new().dest_ip_port_set("cali40n:http"),
                Action::Return,
            )],
        ),
    );
    t.update_chain(
        LAYER_FILTER,
        Chain::new("cali-unused", vec![Rule::action(Action::Drop)]),
    );
    t.set_hooks(
        LAYER_FILTER,
        "FORWARD",
        vec![jump("cali-FORWARD")],
        vec![
            Rule::new(
                MatchCriteria::new().mark_single_bit_set(0x10000),
                Action::Accept,
            )
            .comment("Policy explicitly accepted packet."),
            Rule::action(Action::SetMark(0x10000)),
        ],
    );
    t.replace_set(
        "cali40s:web",
        SetType::Net,
        ["10.0.0.0/24", "10.0.0.1/32", "10.1.0.1/32"].map(String::from),
    );
    t.replace_set(
        "cali40n:http",
        SetType::IpPort,
        ["10.0.0.1,tcp:8080"].map(String::from),
    );
    t.replace_map(
        LAYER_FILTER,
        "cali-from-wl-dispatch",
        [("cali1".to_string(), "goto cali-fw-cali1".to_string())],
    );
    t
}

const FIRST_SCRIPT: &str = r#"add table ip calico
add set ip calico cali40n-http { type ipv4_addr . inet_proto . inet_service; }
add element ip calico cali40n-http { 10.0.0.1 . tcp . 8080 }
add set ip calico cali40s-web { type ipv4_addr; flags interval; }
add element ip calico cali40s-web { 10.0.0.0/24, 10.1.0.1 }
add map ip calico filter-cali-from-wl-dispatch { type ifname : verdict; }
add chain ip calico filter-INPUT { type filter hook input priority 0; policy accept; }
add chain ip calico filter-FORWARD { type filter hook forward priority 0; policy accept; }
add chain ip calico filter-OUTPUT { type filter hook output priority 0; policy accept; }
add chain ip calico nat-PREROUTING { type nat hook prerouting priority -100; policy accept; }
add chain ip calico nat-INPUT { type nat hook input priority -100; policy accept; }
add chain ip calico nat-OUTPUT { type nat hook output priority 110; policy accept; }
add chain ip calico nat-POSTROUTING { type nat hook postrouting priority 110; policy accept; }
add chain ip calico mangle-PREROUTING { type filter hook prerouting priority -150; policy accept; }
add chain ip calico mangle-INPUT { type filter hook input priority -150; policy accept; }
add chain ip calico mangle-FORWARD { type filter hook forward priority -150; policy accept; }
add chain ip calico mangle-OUTPUT { type route hook output priority -150; policy accept; }
add chain ip calico mangle-POSTROUTING { type filter hook postrouting priority -150; policy accept; }
add chain ip calico raw-PREROUTING { type filter hook prerouting priority -300; policy accept; }
add chain ip calico raw-OUTPUT { type filter hook output priority -300; policy accept; }
add chain ip calico filter-cali-FORWARD
add chain ip calico filter-cali-from-wl-dispatch
add chain ip calico filter-cali-fw-cali1
add rule ip calico filter-cali-FORWARD iifname cali* counter jump filter-cali-from-wl-dispatch comment "cali:HASH;"
add rule ip calico filter-cali-FORWARD meta l4proto tcp tcp dport { 80 } ip saddr @cali40s-web counter accept comment "cali:HASH; web"
add rule ip calico filter-cali-from-wl-dispatch iifname vmap @filter-cali-from-wl-dispatch comment "cali:HASH;"
add rule ip calico filter-cali-from-wl-dispatch counter drop comment "cali:HASH; Unknown interface"
add rule ip calico filter-cali-fw-cali1 ip daddr . meta l4proto . th dport @cali40n-http counter return comment "cali:HASH;"
add rule ip calico filter-FORWARD counter jump filter-cali-FORWARD comment "cali:HASH;"
add rule ip calico filter-FORWARD meta mark & 0x10000 == 0x10000 counter accept comment "cali:HASH; Policy explicitly accepted packet."
add rule ip calico filter-FORWARD counter meta mark set mark or 0x10000 comment "cali:HASH;"
add element ip calico filter-cali-from-wl-dispatch { "cali1" : goto filter-cali-fw-cali1 }
"#;

#[test]
fn first_apply_creates_everything_in_one_transaction() {
    let exec = FakeExec::default();
    exec.set_output("nft", EMPTY);
    let mut t = table();
    assert!(t.needs_apply());
    let st = t.apply(&exec).unwrap();
    assert!(st.read);
    assert_eq!(st.transactions, 1);
    assert_eq!(
        st.chains_written, 3,
        "the unreferenced chain is not programmed"
    );
    assert_eq!(st.base_chains_written, 14);
    assert_eq!(st.sets_created, 2);
    assert_eq!(st.maps_created, 1);
    let w = writes(&exec);
    assert_eq!(w.len(), 1);
    assert_eq!(unhash(&w[0]), FIRST_SCRIPT);
    // The hook's hash is Calico's (felix/fv/cali-nftables-dump.txt).
    assert!(w[0].contains(r#"jump filter-cali-FORWARD comment "cali:dpfqBgJrpRwlrqw1;""#));
    // Nothing changed: nothing read or written.
    assert!(!t.needs_apply());
    let st = t.apply(&exec).unwrap();
    assert_eq!(st, NftStats::default());
    assert_eq!(writes(&exec).len(), 1);
    assert_eq!(reads(&exec), 1);
}

#[test]
fn a_changed_chain_is_flushed_and_rewritten_alone() {
    let exec = FakeExec::default();
    exec.set_output("nft", EMPTY);
    let mut t = table();
    t.apply(&exec).unwrap();
    t.update_chain(
        LAYER_FILTER,
        Chain::new("cali-fw-cali1", vec![Rule::action(Action::Drop)]),
    );
    let st = t.apply(&exec).unwrap();
    assert_eq!(st.chains_written, 1);
    assert_eq!(
        unhash(&writes(&exec)[1]),
        "flush chain ip calico filter-cali-fw-cali1\n\
         add rule ip calico filter-cali-fw-cali1 counter drop comment \"cali:HASH;\"\n"
    );
}

#[test]
fn set_members_are_added_and_deleted_as_elements() {
    let exec = FakeExec::default();
    exec.set_output("nft", EMPTY);
    let mut t = table();
    t.apply(&exec).unwrap();
    t.set_member("cali40s:web", "10.2.0.0/16", true);
    t.set_member("cali40s-web", "10.1.0.1/32", false);
    t.set_member("cali40s:web", "10.0.0.0/24", true); // already there
    let st = t.apply(&exec).unwrap();
    assert_eq!(st.set_elements_changed, 2);
    assert_eq!(
        writes(&exec)[1],
        "delete element ip calico cali40s-web { 10.1.0.1 }\n\
         add element ip calico cali40s-web { 10.2.0.0/16 }\n"
    );
    // The /24 covered 10.0.0.1 (nft refuses overlapping intervals): without it, the
    // address is programmed on its own.
    t.set_member("cali40s:web", "10.0.0.0/24", false);
    t.apply(&exec).unwrap();
    assert_eq!(
        writes(&exec)[2],
        "delete element ip calico cali40s-web { 10.0.0.0/24 }\n\
         add element ip calico cali40s-web { 10.0.0.1 }\n"
    );
}

#[test]
fn chains_are_programmed_while_referenced_and_deleted_after() {
    let exec = FakeExec::default();
    exec.set_output("nft", EMPTY);
    let mut t = table();
    t.apply(&exec).unwrap();
    let forward = |extra: Option<Rule>| {
        let mut rules = vec![Rule::new(
            MatchCriteria::new().in_interface("cali*"),
            Action::Jump("cali-from-wl-dispatch".into()),
        )];
        rules.extend(extra);
        Chain::new("cali-FORWARD", rules)
    };
    // Referenced: declared, then written.
    t.update_chain(LAYER_FILTER, forward(Some(jump("cali-unused"))));
    t.apply(&exec).unwrap();
    assert_eq!(
        unhash(&writes(&exec)[1]),
        "add chain ip calico filter-cali-unused\n\
         flush chain ip calico filter-cali-FORWARD\n\
         add rule ip calico filter-cali-FORWARD iifname cali* counter jump filter-cali-from-wl-dispatch comment \"cali:HASH;\"\n\
         add rule ip calico filter-cali-FORWARD counter jump filter-cali-unused comment \"cali:HASH;\"\n\
         add rule ip calico filter-cali-unused counter drop comment \"cali:HASH;\"\n"
    );
    // Unreferenced: flushed and deleted once the reference is gone.
    t.update_chain(LAYER_FILTER, forward(None));
    let st = t.apply(&exec).unwrap();
    assert_eq!(st.chains_deleted, 1);
    assert_eq!(
        unhash(&writes(&exec)[2]),
        "flush chain ip calico filter-cali-FORWARD\n\
         add rule ip calico filter-cali-FORWARD iifname cali* counter jump filter-cali-from-wl-dispatch comment \"cali:HASH;\"\n\
         flush chain ip calico filter-cali-unused\n\
         delete chain ip calico filter-cali-unused\n"
    );
    // A workload goes: its map entry, chain and named-port set go in one transaction.
    t.replace_map(LAYER_FILTER, "cali-from-wl-dispatch", Vec::new());
    t.remove_chain(LAYER_FILTER, "cali-fw-cali1");
    t.remove_set("cali40n:http");
    let st = t.apply(&exec).unwrap();
    assert_eq!((st.chains_deleted, st.sets_deleted), (1, 1));
    assert_eq!(
        writes(&exec)[3],
        "delete element ip calico filter-cali-from-wl-dispatch { \"cali1\" }\n\
         flush chain ip calico filter-cali-fw-cali1\n\
         delete chain ip calico filter-cali-fw-cali1\n\
         delete set ip calico cali40n-http\n"
    );
}

#[test]
fn a_changed_map_entry_is_deleted_then_added() {
    let exec = FakeExec::default();
    exec.set_output("nft", EMPTY);
    let mut t = table();
    t.apply(&exec).unwrap();
    t.update_chain(LAYER_FILTER, Chain::new("cali-fw-cali2", vec![]));
    t.replace_map(
        LAYER_FILTER,
        "cali-from-wl-dispatch",
        [
            ("cali1".to_string(), "goto filter-cali-fw-cali2".to_string()),
            ("cali9".to_string(), "return".to_string()),
        ],
    );
    t.apply(&exec).unwrap();
    // nft refuses `add element` over an existing key ("File exists").
    assert_eq!(
        writes(&exec)[1],
        "add chain ip calico filter-cali-fw-cali2\n\
         delete element ip calico filter-cali-from-wl-dispatch { \"cali1\" }\n\
         add element ip calico filter-cali-from-wl-dispatch { \"cali1\" : goto filter-cali-fw-cali2, \"cali9\" : return }\n\
         flush chain ip calico filter-cali-fw-cali1\n\
         delete chain ip calico filter-cali-fw-cali1\n"
    );
}

/// `nft -j list table ip calico` of a table that holds `filter-cali-a` as we want it, the
/// FORWARD hook as we want it, a stale chain, set and map, and lacks every other base chain.
fn listing(a_hashes: &[String], hook_hash: &str) -> String {
    let rule = |chain: &str, comment: &str| {
        format!(
            r#"{{"rule": {{"family": "ip", "table": "calico", "chain": "{chain}", "handle": 7, "comment": "{comment}", "expr": []}}}},"#
        )
    };
    let mut s = String::from(
        r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "calico", "handle": 1}},
        {"set": {"family": "ip", "name": "cali40s-old", "table": "calico", "type": "ipv4_addr", "handle": 2, "flags": ["interval"], "elem": ["10.9.9.9"]}},
        {"map": {"family": "ip", "name": "filter-old-map", "table": "calico", "type": "ifname", "handle": 3, "map": "verdict"}},
        {"chain": {"family": "ip", "table": "calico", "name": "filter-FORWARD", "handle": 4, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "calico", "name": "filter-cali-a", "handle": 5}},
        {"chain": {"family": "ip", "table": "calico", "name": "filter-cali-stale", "handle": 6}},
        "#,
    );
    s.push_str(&rule("filter-FORWARD", &format!("cali:{hook_hash};")));
    for h in a_hashes {
        s.push_str(&rule("filter-cali-a", &format!("cali:{h};")));
    }
    s.push_str(&rule("filter-cali-stale", "cali:zzzzzzzzzzzzzzzz;"));
    s.push_str(r#"{"rule": {"family": "ip", "table": "calico", "chain": "filter-cali-stale", "handle": 9, "expr": []}}]}"#);
    s
}

#[test]
fn the_kernel_is_read_back_and_leftovers_are_deleted() {
    let f = Features::default();
    let a_rules = vec![
        Rule::new(
            MatchCriteria::new().protocol("udp").dest_port(53),
            Action::Accept,
        ),
        Rule::action(Action::Drop),
    ];
    let a_hashes = nft_rule_hashes("filter-cali-a", &a_rules, 4, LAYER_FILTER, &f);
    let hook_hashes = nft_rule_hashes("filter-FORWARD", &[jump("cali-a")], 4, LAYER_FILTER, &f);
    let exec = FakeExec::default();
    exec.set_output("nft", &listing(&a_hashes, &hook_hashes[0]));
    let mut t = NftTable::new(4, f, true);
    t.update_chain(LAYER_FILTER, Chain::new("cali-a", a_rules));
    t.set_hooks(LAYER_FILTER, "FORWARD", vec![jump("cali-a")], vec![]);
    let st = t.apply(&exec).unwrap();
    assert!(st.read);
    assert_eq!(st.chains_written, 0, "filter-cali-a is as wanted");
    assert_eq!(st.chains_deleted, 1);
    assert_eq!((st.sets_deleted, st.maps_deleted), (1, 1));
    let w = writes(&exec);
    assert_eq!(w.len(), 1);
    let script = &w[0];
    assert!(!script.contains("add table"), "{script}");
    assert!(!script.contains("filter-cali-a"), "{script}");
    assert!(!script.contains("filter-FORWARD"), "{script}");
    // The other 13 base chains are created.
    assert_eq!(script.matches(" hook ").count(), 13, "{script}");
    assert!(script.ends_with(
        "flush chain ip calico filter-cali-stale\n\
         delete map ip calico filter-old-map\n\
         delete chain ip calico filter-cali-stale\n\
         delete set ip calico cali40s-old\n"
    ));
    // Drift: someone flushed filter-cali-a; the refresh finds and repairs it.
    exec.set_output("nft", &listing(&[], &hook_hashes[0]));
    t.invalidate();
    let st = t.apply(&exec).unwrap();
    assert_eq!(st.chains_written, 1);
    assert!(writes(&exec)[1].contains("flush chain ip calico filter-cali-a\n"));
}

#[test]
fn a_base_chain_of_another_kind_makes_the_table_recreated() {
    let exec = FakeExec::default();
    exec.set_output(
        "nft",
        r#"{"nftables": [{"table": {"family": "ip", "name": "calico"}},
        {"chain": {"family": "ip", "table": "calico", "name": "nat-OUTPUT", "type": "nat", "hook": "output", "prio": 100}}]}"#,
    );
    let mut t = table();
    let st = t.apply(&exec).unwrap();
    assert!(st.recreated);
    let w = writes(&exec);
    assert!(w[0].starts_with(
        "add table ip calico\ndelete table ip calico\nadd table ip calico\nadd set ip calico cali40n-http"
    ));
    assert_eq!(
        unhash(
            w[0].strip_prefix("add table ip calico\ndelete table ip calico\n")
                .unwrap()
        ),
        FIRST_SCRIPT
    );
}

#[test]
fn undefined_references_are_refused_before_writing() {
    let exec = FakeExec::default();
    exec.set_output("nft", EMPTY);
    let mut t = table();
    t.update_chain(
        LAYER_FILTER,
        Chain::new("cali-FORWARD", vec![jump("cali-missing")]),
    );
    let e = t.apply(&exec).unwrap_err();
    assert!(
        matches!(e, NftError::Dangling { ref to, .. } if to == "filter-cali-missing"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "bug: in table ip calico, filter-cali-FORWARD jumps to filter-cali-missing, which felixd does not define"
    );
    let mut t = table();
    t.remove_set("cali40n:http");
    let e = t.apply(&exec).unwrap_err();
    assert!(
        matches!(e, NftError::Missing { kind: "set", ref name, .. } if name == "cali40n-http"),
        "{e}"
    );
    assert!(writes(&exec).is_empty());
}

/// Reads the same listing every time; writes fail while `fail` is set.
#[derive(Debug, Default)]
struct FlakyNft {
    listing: String,
    fail: AtomicBool,
    scripts: Mutex<Vec<String>>,
}

impl Exec for FlakyNft {
    fn run(
        &self,
        _program: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String, ExecError> {
        if args.first() == Some(&"-f") {
            self.scripts
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(stdin.unwrap_or_default()).into_owned());
            if self.fail.load(Ordering::SeqCst) {
                return Err(ExecError::Failed {
                    program: "nft".into(),
                    args: args.join(" "),
                    status: "exit status: 1".into(),
                    stderr: "Error: Could not process rule: No such file or directory".into(),
                });
            }
            return Ok(String::new());
        }
        Ok(self.listing.clone())
    }
}

#[test]
fn failed_writes_read_again_then_recreate_the_table() {
    let exec = FlakyNft {
        listing: EMPTY.into(),
        fail: AtomicBool::new(true),
        ..FlakyNft::default()
    };
    let mut t = table();
    let e = t.apply(&exec).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("writing table ip calico: nft -f - failed"),
        "{e}"
    );
    assert!(t.needs_apply());
    assert!(t.apply(&exec).is_err());
    exec.fail.store(false, Ordering::SeqCst);
    let st = t.apply(&exec).unwrap();
    assert!(st.read && st.recreated);
    let scripts = exec.scripts.lock().unwrap();
    assert_eq!(scripts.len(), 3);
    assert!(!scripts[1].contains("delete table"));
    assert!(scripts[2].starts_with("add table ip calico\ndelete table ip calico\n"));
}

#[test]
fn a_missing_table_is_not_an_error() {
    let missing = ExecError::Failed {
        program: "nft".into(),
        args: "-j list table ip calico".into(),
        status: "exit status: 1".into(),
        stderr: "Error: No such file or directory\nlist table ip calico\n              ^^^^^^"
            .into(),
    };
    assert!(table_missing(&missing));
    let other = ExecError::Failed {
        program: "nft".into(),
        args: String::new(),
        status: "exit status: 1".into(),
        stderr: "Error: Operation not permitted".into(),
    };
    assert!(!table_missing(&other));
}

#[test]
fn ipv6_uses_the_ip6_family() {
    let exec = FakeExec::default();
    exec.set_output("nft", EMPTY);
    let mut t = NftTable::new(6, Features::default(), true);
    t.update_chain(
        LAYER_RAW,
        Chain::new(
            "cali-PREROUTING",
            vec![Rule::new(
                MatchCriteria::new().source_ip_set("cali60s:x"),
                Action::NoTrack,
            )],
        ),
    );
    t.set_hooks(
        LAYER_RAW,
        "PREROUTING",
        vec![jump("cali-PREROUTING")],
        vec![],
    );
    t.replace_set(
        "cali60s:x",
        SetType::Net,
        ["fd00::1/128", "10.0.0.1/32", "fd01::/64"].map(String::from),
    );
    t.apply(&exec).unwrap();
    let w = &writes(&exec)[0];
    assert!(
        w.starts_with(
            "add table ip6 calico\n\
         add set ip6 calico cali60s-x { type ipv6_addr; flags interval; }\n\
         add element ip6 calico cali60s-x { fd00::1, fd01::/64 }\n"
        ),
        "{w}"
    );
    assert!(w.contains(
        "add rule ip6 calico raw-cali-PREROUTING ip6 saddr @cali60s-x counter notrack comment"
    ));
    assert!(
        w.contains("add rule ip6 calico raw-PREROUTING counter jump raw-cali-PREROUTING comment")
    );
}
