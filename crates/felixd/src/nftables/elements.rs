//! IP set members as nft set elements.
//!
//! The calculation hands members in the `ipset` spelling (`10.0.0.1/32`, `10.0.0.0/24`,
//! `10.0.0.1,tcp:8080`); nft wants `10.0.0.1`, `10.0.0.0/24`, `10.0.0.1 . tcp . 8080`. Both
//! what we want and what `nft -j list` reads back are brought to one canonical text, so that
//! the two compare as strings.
//!
//! `hash:net` sets become interval sets (`flags interval`), which, unlike ipset, refuse
//! overlapping members ("interval overlaps with an existing one"): a network set holding both
//! `10.0.0.0/8` and `10.1.2.3` would fail the whole transaction. Only the members no other
//! member covers are programmed ([`interval_cover`]); the set matches the same addresses.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::dataplane::ipsets::SetType;

/// The nft type of a set of this kind, and whether it needs `flags interval`.
pub fn set_type_spec(t: SetType, ip_version: u8) -> (String, bool) {
    match t {
        SetType::Net => (format!("ipv{ip_version}_addr"), true),
        SetType::IpPort => (
            format!("ipv{ip_version}_addr . inet_proto . inet_service"),
            false,
        ),
    }
}

fn version_of(a: &IpAddr) -> u8 {
    if a.is_ipv4() { 4 } else { 6 }
}

/// An address or CIDR, host bits cleared (`10.0.0.5/24` is `10.0.0.0/24`, as the kernel
/// stores it).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// The element text of a network: the bare address for a single host (nft lists it so).
pub fn net_element(n: &IpNet) -> String {
    let n = n.trunc();
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Protocol names as nft lists them in `inet_proto` elements.
fn proto_name(p: &str) -> String {
    match p.trim().to_ascii_lowercase().as_str() {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "132" => "sctp".into(),
        other => other.to_string(),
    }
}

/// `addr . proto . port`, the element of a named-port set.
fn ip_port_element(addr: &str, proto: &str, port: &str) -> Option<String> {
    let addr: IpAddr = addr.trim().split('/').next()?.parse().ok()?;
    let port: u16 = port.trim().parse().ok()?;
    Some(format!("{addr} . {} . {port}", proto_name(proto)))
}

/// A member in `ipset` spelling as the canonical element text, `None` if it doesn't parse or
/// is of the other IP version (nft would refuse the whole transaction).
pub fn element_from_member(t: SetType, member: &str, ip_version: u8) -> Option<String> {
    match t {
        SetType::Net => {
            let n = parse_net(member)?;
            (version_of(&n.addr()) == ip_version).then(|| net_element(&n))
        }
        SetType::IpPort => {
            let (addr, rest) = member.split_once(',')?;
            let (proto, port) = rest.rsplit_once(':')?;
            let a: IpAddr = addr.trim().split('/').next()?.parse().ok()?;
            if version_of(&a) != ip_version {
                return None;
            }
            ip_port_element(addr, proto, port)
        }
    }
}

/// The members of an interval set that no other member covers, which is what gets
/// programmed. CIDRs either nest or are disjoint, so once sorted by (start, broadest first)
/// a member is covered exactly when the last member kept contains it. Text that isn't a
/// network (none of ours) is kept as it is.
pub fn interval_cover<'a>(members: impl IntoIterator<Item = &'a String>) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut nets: Vec<IpNet> = Vec::new();
    for m in members {
        match parse_net(m) {
            Some(n) => nets.push(n),
            None => {
                out.insert(m.clone());
            }
        }
    }
    nets.sort_unstable();
    nets.dedup();
    let mut last: Option<IpNet> = None;
    for n in nets {
        if last.is_some_and(|l| l.contains(&n)) {
            continue;
        }
        out.insert(net_element(&n));
        last = Some(n);
    }
    out
}

/// A scalar of a listed element: addresses canonicalised, numbers as digits.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(match s.parse::<IpAddr>() {
            Ok(a) => a.to_string(),
            Err(_) => s.clone(),
        }),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One element of a set as `nft -j list` shows it, as canonical element text: `"10.0.0.1"`,
/// `{"prefix": {"addr": "10.0.0.0", "len": 24}}`, `{"concat": ["10.0.0.1", "tcp", 8080]}`,
/// `{"range": [..]}` (never ours: read so that it can be deleted), or any of these wrapped
/// in `{"elem": {"val": ..}}` (elements with timeouts or counters).
pub fn element_from_json(v: &Value) -> Option<String> {
    match v {
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr")?.as_str()?;
                let len = p.get("len")?.as_u64()?;
                let n = parse_net(&format!("{addr}/{len}"))?;
                Some(net_element(&n))
            } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                let (from, to) = (r.first()?, r.get(1)?);
                Some(format!(
                    "{}-{}",
                    element_from_json(from)?,
                    element_from_json(to)?
                ))
            } else if let Some(c) = o.get("concat").and_then(Value::as_array) {
                let parts: Vec<String> = c.iter().map(element_from_json).collect::<Option<_>>()?;
                match parts.as_slice() {
                    [addr, proto, port] => {
                        ip_port_element(addr, proto, port).or_else(|| Some(parts.join(" . ")))
                    }
                    _ => Some(parts.join(" . ")),
                }
            } else if let Some(e) = o.get("elem") {
                element_from_json(e.get("val")?)
            } else {
                None
            }
        }
        other => scalar(other),
    }
}

/// A verdict as `nft -j list` shows it in a verdict map, as nft syntax: `{"goto": {"target":
/// "x"}}` is `goto x`, `{"accept": null}` is `accept`.
pub fn verdict_from_json(v: &Value) -> Option<String> {
    let (kw, arg) = v.as_object()?.iter().next()?;
    match arg.get("target").and_then(Value::as_str) {
        Some(t) => Some(format!("{kw} {t}")),
        None => Some(kw.clone()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn members_become_elements() {
        let e = |t, m: &str, v| element_from_member(t, m, v);
        assert_eq!(e(SetType::Net, "10.0.0.1/32", 4).unwrap(), "10.0.0.1");
        assert_eq!(e(SetType::Net, "10.0.0.5/24", 4).unwrap(), "10.0.0.0/24");
        assert_eq!(e(SetType::Net, "fd00::1/128", 6).unwrap(), "fd00::1");
        assert_eq!(e(SetType::Net, "fd00:0::/64", 6).unwrap(), "fd00::/64");
        assert_eq!(e(SetType::Net, "10.0.0.1/32", 6), None);
        assert_eq!(e(SetType::Net, "nonsense", 4), None);
        assert_eq!(
            e(SetType::IpPort, "10.0.0.1,tcp:8080", 4).unwrap(),
            "10.0.0.1 . tcp . 8080"
        );
        assert_eq!(
            e(SetType::IpPort, "fd00::1,udp:53", 6).unwrap(),
            "fd00::1 . udp . 53"
        );
        assert_eq!(e(SetType::IpPort, "10.0.0.1,tcp:x", 4), None);
    }

    #[test]
    fn only_uncovered_members_are_programmed() {
        let m: Vec<String> = [
            "10.0.0.0/8",
            "10.1.2.3",
            "10.0.0.0/8",
            "11.0.0.0/24",
            "11.0.0.0/16",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut got: Vec<String> = interval_cover(&m).into_iter().collect();
        got.sort();
        assert_eq!(got, vec!["10.0.0.0/8", "11.0.0.0/16"]);
    }

    #[test]
    fn listed_elements_are_read_back_canonically() {
        let v: Value = serde_json::from_str(
            r#"[ "10.1.0.1", {"prefix": {"addr": "10.0.0.0", "len": 24}},
                 {"concat": ["10.0.0.1", "tcp", 8080]}, {"range": ["10.0.0.1", "10.0.0.9"]},
                 {"elem": {"val": "fd00:0::1", "timeout": 10}} ]"#,
        )
        .unwrap();
        let got: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| element_from_json(e).unwrap())
            .collect();
        assert_eq!(
            got,
            vec![
                "10.1.0.1",
                "10.0.0.0/24",
                "10.0.0.1 . tcp . 8080",
                "10.0.0.1-10.0.0.9",
                "fd00::1"
            ]
        );
        let goto: Value =
            serde_json::from_str(r#"{"goto": {"target": "filter-cali-fw-a"}}"#).unwrap();
        assert_eq!(verdict_from_json(&goto).unwrap(), "goto filter-cali-fw-a");
        let accept: Value = serde_json::from_str(r#"{"accept": null}"#).unwrap();
        assert_eq!(verdict_from_json(&accept).unwrap(), "accept");
    }
}
