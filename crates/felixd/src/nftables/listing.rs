//! What the kernel holds in our table, read from `nft -j list table <family> calico`.
//!
//! Only what comparison needs is kept: each chain's rule hashes (from the `cali:<hash>;`
//! comments, `""` for a rule without one), base chains' hook definitions, set types and
//! elements, verdict map entries. The JSON looks like (nft 1.0.x):
//!
//! ```text
//! {"nftables": [{"metainfo": {..}}, {"table": {"family": "ip", "name": "calico", ..}},
//!   {"set": {"name": "cali40x", "type": "ipv4_addr", "flags": ["interval"], "elem": [..]}},
//!   {"map": {"name": "filter-m", "type": "ifname", "map": "verdict", "elem": [["cali1",
//!     {"goto": {"target": "filter-cali-fw-cali1"}}]]}},
//!   {"chain": {"name": "filter-FORWARD", "type": "filter", "hook": "forward", "prio": 0, ..}},
//!   {"rule": {"chain": "filter-FORWARD", "comment": "cali:dpfqBgJrpRwlrqw1;", "expr": [..]}}]}
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::elements::{element_from_json, verdict_from_json};
use crate::generic::HASH_COMMENT_PREFIX;

/// A base chain's definition as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSpec {
    pub chain_type: String,
    pub hook: String,
    pub priority: Option<i64>,
}

/// A set as the kernel has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSet {
    /// `ipv4_addr`, `ipv4_addr . inet_proto . inet_service`, ...
    pub type_spec: String,
    pub interval: bool,
    pub elements: HashSet<String>,
}

/// A verdict map as the kernel has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelMap {
    /// `ifname : verdict`.
    pub type_spec: String,
    /// Key → verdict (`goto filter-cali-fw-cali1`).
    pub entries: BTreeMap<String, String>,
}

/// Our table in the kernel.
#[derive(Debug, Clone, Default)]
pub struct KernelState {
    pub table_exists: bool,
    /// Every chain with the hashes of its rules, in order.
    pub chains: HashMap<String, Vec<String>>,
    /// The chains that have a hook.
    pub base_specs: HashMap<String, BaseSpec>,
    pub sets: HashMap<String, KernelSet>,
    pub maps: HashMap<String, KernelMap>,
}

/// The hash in a rule's comment (Calico: `TrimPrefix(Split(comment, ";")[0], "cali:")`);
/// `""` when the rule carries none of ours.
pub fn hash_of_comment(comment: Option<&str>) -> String {
    comment
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.strip_prefix(HASH_COMMENT_PREFIX))
        .unwrap_or_default()
        .to_string()
}

/// A set's or map's type: a string, or a list for concatenations.
fn type_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" . "),
        _ => String::new(),
    }
}

/// `"flags": ["interval"]` (or a lone string, as some nft versions print a single flag).
fn has_flag(v: Option<&Value>, flag: &str) -> bool {
    match v {
        Some(Value::String(s)) => s == flag,
        Some(Value::Array(a)) => a.iter().any(|f| f.as_str() == Some(flag)),
        _ => false,
    }
}

fn name_of(o: &Value) -> Option<String> {
    o.get("name").and_then(Value::as_str).map(str::to_string)
}

/// Parses `nft -j list table` output. Objects of other tables (there are none when one table
/// is listed) are skipped.
pub fn parse_listing(json: &str, table: &str) -> Result<KernelState, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| "no \"nftables\" array".to_string())?;
    let mut st = KernelState::default();
    for item in items {
        let Some((kind, o)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let in_table = o.get("table").and_then(Value::as_str) == Some(table);
        match kind.as_str() {
            "table" if o.get("name").and_then(Value::as_str) == Some(table) => {
                st.table_exists = true;
            }
            "chain" if in_table => read_chain(&mut st, o),
            "rule" if in_table => {
                let Some(chain) = o.get("chain").and_then(Value::as_str) else {
                    continue;
                };
                let hash = hash_of_comment(o.get("comment").and_then(Value::as_str));
                st.chains.entry(chain.to_string()).or_default().push(hash);
            }
            "set" if in_table => {
                let Some(name) = name_of(o) else { continue };
                let elements = o
                    .get("elem")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(element_from_json).collect())
                    .unwrap_or_default();
                st.sets.insert(
                    name,
                    KernelSet {
                        type_spec: type_text(o.get("type")),
                        interval: has_flag(o.get("flags"), "interval"),
                        elements,
                    },
                );
            }
            "map" if in_table => {
                let Some(name) = name_of(o) else { continue };
                let entries = o
                    .get("elem")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(map_entry).collect())
                    .unwrap_or_default();
                st.maps.insert(
                    name,
                    KernelMap {
                        type_spec: format!(
                            "{} : {}",
                            type_text(o.get("type")),
                            type_text(o.get("map"))
                        ),
                        entries,
                    },
                );
            }
            _ => {}
        }
    }
    Ok(st)
}

fn read_chain(st: &mut KernelState, o: &Value) {
    let Some(name) = name_of(o) else { return };
    if let Some(hook) = o.get("hook").and_then(Value::as_str) {
        st.base_specs.insert(
            name.clone(),
            BaseSpec {
                chain_type: o
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                hook: hook.to_string(),
                priority: o.get("prio").and_then(Value::as_i64),
            },
        );
    }
    st.chains.entry(name).or_default();
}

/// `["cali1", {"goto": {"target": "filter-cali-fw-cali1"}}]`.
fn map_entry(e: &Value) -> Option<(String, String)> {
    let pair = e.as_array()?;
    let key = element_from_json(pair.first()?)?;
    let verdict = verdict_from_json(pair.get(1)?)?;
    Some((key, verdict))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Abridged from `nft -j list table ip calico` (nft 1.0.6) after programming a few
    /// objects in a scratch namespace.
    const LISTING: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "ip", "name": "calico", "handle": 1}},
      {"set": {"family": "ip", "name": "cali40net", "table": "calico", "type": "ipv4_addr", "handle": 1,
               "flags": ["interval"], "elem": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, "10.1.0.1"]}},
      {"set": {"family": "ip", "name": "cali40ipport", "table": "calico",
               "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 2,
               "elem": [{"concat": ["10.0.0.2", "udp", 53]}, {"concat": ["10.0.0.1", "tcp", 8080]}]}},
      {"map": {"family": "ip", "name": "filter-cali-from-wl-dispatch", "table": "calico", "type": "ifname",
               "handle": 3, "map": "verdict",
               "elem": [["cali1", {"goto": {"target": "filter-cali-fw-cali1"}}]]}},
      {"chain": {"family": "ip", "table": "calico", "name": "filter-FORWARD", "handle": 4, "type": "filter",
                 "hook": "forward", "prio": 0, "policy": "accept"}},
      {"chain": {"family": "ip", "table": "calico", "name": "filter-cali-fw-cali1", "handle": 9}},
      {"chain": {"family": "ip", "table": "calico", "name": "filter-cali-empty", "handle": 10}},
      {"rule": {"family": "ip", "table": "calico", "chain": "filter-FORWARD", "handle": 19,
                "comment": "cali:h1;", "expr": [{"counter": {"packets": 0, "bytes": 0}},
                {"jump": {"target": "filter-cali-fw-cali1"}}]}},
      {"rule": {"family": "ip", "table": "calico", "chain": "filter-cali-fw-cali1", "handle": 12,
                "comment": "cali:abc; hi there", "expr": [{"accept": null}]}},
      {"rule": {"family": "ip", "table": "calico", "chain": "filter-cali-fw-cali1", "handle": 13,
                "expr": [{"drop": null}]}}
    ]}"#;

    #[test]
    fn reads_chains_sets_and_maps() {
        let st = parse_listing(LISTING, "calico").unwrap();
        assert!(st.table_exists);
        assert_eq!(st.chains["filter-FORWARD"], vec!["h1"]);
        assert_eq!(st.chains["filter-cali-fw-cali1"], vec!["abc", ""]);
        assert_eq!(st.chains["filter-cali-empty"], Vec::<String>::new());
        assert_eq!(
            st.base_specs["filter-FORWARD"],
            BaseSpec {
                chain_type: "filter".into(),
                hook: "forward".into(),
                priority: Some(0)
            }
        );
        assert!(!st.base_specs.contains_key("filter-cali-empty"));
        let net = &st.sets["cali40net"];
        assert!(net.interval);
        assert_eq!(net.type_spec, "ipv4_addr");
        assert!(net.elements.contains("10.0.0.0/24") && net.elements.contains("10.1.0.1"));
        let ipp = &st.sets["cali40ipport"];
        assert_eq!(ipp.type_spec, "ipv4_addr . inet_proto . inet_service");
        assert!(ipp.elements.contains("10.0.0.1 . tcp . 8080"));
        let m = &st.maps["filter-cali-from-wl-dispatch"];
        assert_eq!(m.type_spec, "ifname : verdict");
        assert_eq!(m.entries["cali1"], "goto filter-cali-fw-cali1");
    }

    #[test]
    fn an_empty_listing_has_no_table() {
        let st = parse_listing(r#"{"nftables": [{"metainfo": {}}]}"#, "calico").unwrap();
        assert!(!st.table_exists);
        assert!(parse_listing("not json", "calico").is_err());
    }
}
