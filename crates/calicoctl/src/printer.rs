//! Output as calicoctl prints it: Calico's table columns per kind (`ps`, `wide`,
//! `custom-columns=`) laid out like Go's tabwriter, YAML and JSON (a `<Kind>List` for a list),
//! and the additions calicoctl users ask for: `name` and `jsonpath=`.

use calico_api::codec::{to_json_pretty, to_yaml};
use calico_api::resource::{API_VERSION, AnyResource, Kind};
use serde_json::{Value, json};

/// What `-o` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Ps,
    Wide,
    Yaml,
    Json,
    Name,
    CustomColumns(Vec<String>),
    JsonPath(String),
}

impl Output {
    pub fn parse(s: &str) -> Result<Output, String> {
        match s {
            "ps" => Ok(Output::Ps),
            "wide" => Ok(Output::Wide),
            "yaml" | "yml" => Ok(Output::Yaml),
            "json" => Ok(Output::Json),
            "name" => Ok(Output::Name),
            _ => {
                match s.split_once('=') {
                    Some(("custom-columns", cols)) => {
                        let cols: Vec<String> = cols
                            .split(',')
                            .map(str::trim)
                            .filter(|c| !c.is_empty())
                            .map(str::to_string)
                            .collect();
                        if cols.is_empty() {
                            return Err("need to specify at least one column, e.g. -o custom-columns=NAME,CIDR".into());
                        }
                        Ok(Output::CustomColumns(cols))
                    }
                    Some(("jsonpath", p)) if !p.is_empty() => Ok(Output::JsonPath(p.to_string())),
                    Some(("jsonpath", _)) => Err(
                        "need to specify a JSONPath expression, e.g. -o jsonpath='{.spec.cidr}'"
                            .into(),
                    ),
                    _ => Err(format!(
                        "unrecognized output format '{s}'; use ps, wide, yaml, json, name, custom-columns=A,B or jsonpath=EXPR"
                    )),
                }
            }
        }
    }
}

/// What a printed result is: the list of a kind (`get ippool`) or named objects.
#[derive(Debug, Clone)]
pub enum Printed {
    List {
        kind: Kind,
        items: Vec<AnyResource>,
        revision: i64,
    },
    One(AnyResource),
}

/// Values some columns need from elsewhere in the datastore.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    /// The cluster's default AS number (BGPConfiguration `default`, else 64512).
    pub default_asn: Option<String>,
}

/// Renders results in the requested format. Tables get one table per result, each followed
/// by a blank line, as calicoctl prints them.
pub fn render(
    results: &[Printed],
    out: &Output,
    show_namespace: bool,
    lookups: &Lookups,
) -> Result<String, String> {
    match out {
        Output::Ps | Output::Wide | Output::CustomColumns(_) => {
            let mut s = String::new();
            for r in results {
                let kind = match r {
                    Printed::List { kind, .. } => *kind,
                    Printed::One(o) => o.kind(),
                };
                let (ps, wide) = headings(kind);
                let mut heads: Vec<String> = match out {
                    Output::Wide => wide.iter().map(|h| h.to_string()).collect(),
                    Output::CustomColumns(c) => c.clone(),
                    _ => ps.iter().map(|h| h.to_string()).collect(),
                };
                if show_namespace
                    && kind.info().namespaced
                    && !matches!(out, Output::CustomColumns(_))
                {
                    heads.insert(0, "NAMESPACE".into());
                }
                if let Some(h) = heads
                    .iter()
                    .find(|h| cell(kind, h, &Value::Null, lookups).is_none())
                {
                    let mut valid: Vec<&str> = wide.to_vec();
                    valid.extend(extra_headings(kind));
                    return Err(format!(
                        "unknown heading {h}, valid values are: {}",
                        valid.join(", ")
                    ));
                }
                let mut rows = vec![heads.clone()];
                let items: Vec<&AnyResource> = match r {
                    Printed::List { items, .. } => ordered(kind, items),
                    Printed::One(o) => vec![o],
                };
                for item in items {
                    let v = serde_json::to_value(item).map_err(|e| e.to_string())?;
                    let mut row = Vec::with_capacity(heads.len());
                    for h in &heads {
                        row.push(cell(kind, h, &v, lookups).unwrap_or_default());
                    }
                    rows.push(row);
                }
                s.push_str(&tabwriter(&rows));
                s.push('\n');
            }
            Ok(s)
        }
        Output::Yaml | Output::Json => {
            let values: Vec<Value> = results.iter().map(as_value).collect::<Result<_, _>>()?;
            let one = match values.as_slice() {
                [v] => v.clone(),
                _ => Value::Array(values),
            };
            if *out == Output::Yaml {
                to_yaml(&one).map_err(|e| e.to_string())
            } else {
                to_json_pretty(&one)
                    .map(|mut s| {
                        s.push('\n');
                        s
                    })
                    .map_err(|e| e.to_string())
            }
        }
        Output::Name => {
            let mut s = String::new();
            for r in results {
                let items: Vec<&AnyResource> = match r {
                    Printed::List { items, .. } => items.iter().collect(),
                    Printed::One(o) => vec![o],
                };
                for i in items {
                    s.push_str(&format!(
                        "{}/{}\n",
                        i.kind().info().kind.to_ascii_lowercase(),
                        i.metadata().name
                    ));
                }
            }
            Ok(s)
        }
        Output::JsonPath(expr) => {
            let mut s = String::new();
            for r in results {
                s.push_str(&jsonpath(expr, &as_value(r)?)?);
            }
            if !s.ends_with('\n') {
                s.push('\n');
            }
            Ok(s)
        }
    }
}

/// A result as the object calicoctl prints: the resource, or `<Kind>List`.
fn as_value(r: &Printed) -> Result<Value, String> {
    match r {
        Printed::One(o) => serde_json::to_value(o).map_err(|e| e.to_string()),
        Printed::List {
            kind,
            items,
            revision,
        } => {
            let items: Vec<Value> = items
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            Ok(json!({
                "apiVersion": API_VERSION,
                "items": items,
                "kind": kind.info().list_kind,
                "metadata": {"resourceVersion": revision.to_string()},
            }))
        }
    }
}

/// Tiers are listed by order (unset last), everything else as the datastore lists it.
fn ordered(kind: Kind, items: &[AnyResource]) -> Vec<&AnyResource> {
    let mut v: Vec<&AnyResource> = items.iter().collect();
    if kind == Kind::Tier {
        v.sort_by(|a, b| {
            let o = |r: &AnyResource| match r {
                AnyResource::Tier(t) => t.spec.order,
                _ => None,
            };
            match (o(a), o(b)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        });
    }
    v
}

/// Calico's `ps` and `wide` headings per kind.
pub fn headings(kind: Kind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        Kind::BgpConfiguration => (
            &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
            &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        ),
        Kind::BgpFilter => (
            &[
                "NAME",
                "NUMEXPORTV4",
                "NUMIMPORTV4",
                "NUMEXPORTV6",
                "NUMIMPORTV6",
            ],
            &[
                "NAME",
                "NUMEXPORTV4",
                "NUMIMPORTV4",
                "NUMEXPORTV6",
                "NUMIMPORTV6",
            ],
        ),
        Kind::BgpPeer => (
            &["NAME", "PEERIP", "NODE", "ASN"],
            &["NAME", "PEERIP", "NODE", "ASN"],
        ),
        Kind::ClusterInformation => (
            &[
                "NAME",
                "CLUSTERGUID",
                "CLUSTERTYPE",
                "CALICOVERSION",
                "DATASTOREREADY",
            ],
            &[
                "NAME",
                "CLUSTERGUID",
                "CLUSTERTYPE",
                "CALICOVERSION",
                "DATASTOREREADY",
            ],
        ),
        Kind::GlobalNetworkPolicy
        | Kind::NetworkPolicy
        | Kind::K8sNetworkPolicy
        | Kind::StagedGlobalNetworkPolicy
        | Kind::StagedNetworkPolicy => (&["NAME", "TIER"], &["NAME", "TIER", "ORDER", "SELECTOR"]),
        Kind::StagedKubernetesNetworkPolicy => (&["NAME"], &["NAME", "PODSELECTOR"]),
        Kind::CalicoNodeStatus => (&["NAME", "NODE"], &["NAME", "NODE", "CLASSES"]),
        Kind::GlobalNetworkSet | Kind::NetworkSet => (&["NAME"], &["NAME", "NETS"]),
        Kind::HostEndpoint => (
            &["NAME", "NODE"],
            &["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
        ),
        Kind::IpPool => (
            &["NAME", "CIDR", "SELECTOR"],
            &[
                "NAME",
                "CIDR",
                "NAT",
                "IPIPMODE",
                "VXLANMODE",
                "DISABLED",
                "DISABLEBGPEXPORT",
                "SELECTOR",
                "ASSIGNMENTMODE",
            ],
        ),
        Kind::IpReservation => (&["NAME"], &["NAME", "CIDRS"]),
        Kind::IpamConfiguration => (
            &["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"],
            &[
                "NAME",
                "STRICTAFFINITY",
                "AUTOALLOCATEBLOCKS",
                "MAXBLOCKSPERHOST",
            ],
        ),
        Kind::Node => (&["NAME"], &["NAME", "ASN", "IPV4", "IPV6"]),
        Kind::Profile => (&["NAME"], &["NAME", "LABELS"]),
        Kind::Tier => (&["NAME", "ORDER"], &["NAME", "ORDER"]),
        Kind::WorkloadEndpoint => (
            &["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
            &[
                "NAME",
                "WORKLOAD",
                "NODE",
                "NETWORKS",
                "INTERFACE",
                "PROFILES",
                "NATS",
            ],
        ),
        Kind::FelixConfiguration | Kind::KubeControllersConfiguration => (&["NAME"], &["NAME"]),
    }
}

/// Headings `custom-columns` accepts beyond the wide ones.
fn extra_headings(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::WorkloadEndpoint => &["NAMESPACE", "ORCHESTRATOR"],
        k if k.info().namespaced => &["NAMESPACE"],
        _ => &[],
    }
}

/// One table cell; `None` for a heading the kind does not have.
fn cell(kind: Kind, heading: &str, v: &Value, lookups: &Lookups) -> Option<String> {
    let s = |path: &str| text(get(v, path));
    let join = |path: &str| join_values(get(v, path), ",", 0);
    let or = |path: &str, dflt: &str| {
        let t = s(path);
        if t.is_empty() { dflt.to_string() } else { t }
    };
    let bool_of = |path: &str| {
        get(v, path)
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string()
    };
    let common = match heading {
        "NAME" => Some(s("metadata.name")),
        "NAMESPACE" if kind.info().namespaced => Some(s("metadata.namespace")),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    Some(match (kind, heading) {
        (Kind::BgpConfiguration, "LOGSEVERITY") => s("spec.logSeverityScreen"),
        (Kind::BgpConfiguration, "MESHENABLED") => match get(v, "spec.nodeToNodeMeshEnabled") {
            Some(Value::Bool(b)) => b.to_string(),
            _ => "-".into(),
        },
        (Kind::BgpConfiguration, "ASNUMBER") => or("spec.asNumber", "-"),
        (Kind::BgpFilter, h) if h.starts_with("NUM") => {
            let field = match h {
                "NUMEXPORTV4" => "spec.exportV4",
                "NUMIMPORTV4" => "spec.importV4",
                "NUMEXPORTV6" => "spec.exportV6",
                "NUMIMPORTV6" => "spec.importV6",
                _ => return None,
            };
            get(v, field)
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
                .to_string()
        }
        (Kind::BgpPeer, "PEERIP") => s("spec.peerIP"),
        (Kind::BgpPeer, "NODE") => {
            let node = s("spec.node");
            let sel = s("spec.nodeSelector");
            if !node.is_empty() {
                node
            } else if !sel.is_empty() {
                sel
            } else {
                "(global)".into()
            }
        }
        (Kind::BgpPeer, "ASN") => or("spec.asNumber", "0"),
        (Kind::ClusterInformation, "CLUSTERGUID") => s("spec.clusterGUID"),
        (Kind::ClusterInformation, "CLUSTERTYPE") => s("spec.clusterType"),
        (Kind::ClusterInformation, "CALICOVERSION") => s("spec.calicoVersion"),
        (Kind::ClusterInformation, "DATASTOREREADY") => or("spec.datastoreReady", "<nil>"),
        (k, "TIER") if is_calico_policy(k) => or("spec.tier", "default"),
        (k, "ORDER") if is_calico_policy(k) || k == Kind::Tier => {
            match get(v, "spec.order").and_then(Value::as_f64) {
                Some(f) => go_float(f),
                None => "<nil>".into(),
            }
        }
        (k, "SELECTOR") if is_calico_policy(k) => s("spec.selector"),
        (Kind::StagedKubernetesNetworkPolicy, "PODSELECTOR") => {
            go_label_selector(get(v, "spec.podSelector"))
        }
        (Kind::CalicoNodeStatus, "NODE") => s("spec.node"),
        (Kind::CalicoNodeStatus, "CLASSES") => join("spec.classes"),
        (Kind::GlobalNetworkSet | Kind::NetworkSet, "NETS") => {
            join_values(get(v, "spec.nets"), ",", 80)
        }
        (Kind::HostEndpoint, "NODE") => s("spec.node"),
        (Kind::HostEndpoint, "INTERFACE") => s("spec.interfaceName"),
        (Kind::HostEndpoint, "IPS") => join("spec.expectedIPs"),
        (Kind::HostEndpoint, "PROFILES") => join("spec.profiles"),
        (Kind::IpPool, "CIDR") => s("spec.cidr"),
        (Kind::IpPool, "NAT") => bool_of("spec.natOutgoing"),
        (Kind::IpPool, "IPIPMODE") => or("spec.ipipMode", "Never"),
        (Kind::IpPool, "VXLANMODE") => or("spec.vxlanMode", "Never"),
        (Kind::IpPool, "DISABLED") => bool_of("spec.disabled"),
        (Kind::IpPool, "DISABLEBGPEXPORT") => bool_of("spec.disableBGPExport"),
        (Kind::IpPool, "SELECTOR") => s("spec.nodeSelector"),
        (Kind::IpPool, "ASSIGNMENTMODE") => or("spec.assignmentMode", "<nil>"),
        (Kind::IpReservation, "CIDRS") => join_values(get(v, "spec.reservedCIDRs"), ",", 80),
        (Kind::IpamConfiguration, "STRICTAFFINITY") => bool_of("spec.strictAffinity"),
        (Kind::IpamConfiguration, "AUTOALLOCATEBLOCKS") => bool_of("spec.autoAllocateBlocks"),
        (Kind::IpamConfiguration, "MAXBLOCKSPERHOST") => or("spec.maxBlocksPerHost", "0"),
        (Kind::Node, "ASN") => match get(v, "spec.bgp") {
            None | Some(Value::Null) => String::new(),
            Some(_) => {
                let asn = s("spec.bgp.asNumber");
                if asn.is_empty() {
                    format!("({})", lookups.default_asn.as_deref().unwrap_or("64512"))
                } else {
                    asn
                }
            }
        },
        (Kind::Node, "IPV4") => s("spec.bgp.ipv4Address"),
        (Kind::Node, "IPV6") => s("spec.bgp.ipv6Address"),
        (Kind::Profile, "LABELS") => join("spec.labelsToApply"),
        (Kind::WorkloadEndpoint, "WORKLOAD") => {
            let w = s("spec.workload");
            if w.is_empty() { s("spec.pod") } else { w }
        }
        (Kind::WorkloadEndpoint, "NODE") => s("spec.node"),
        (Kind::WorkloadEndpoint, "ORCHESTRATOR") => s("spec.orchestrator"),
        (Kind::WorkloadEndpoint, "NETWORKS") => join("spec.ipNetworks"),
        (Kind::WorkloadEndpoint, "INTERFACE") => s("spec.interfaceName"),
        (Kind::WorkloadEndpoint, "PROFILES") => join("spec.profiles"),
        (Kind::WorkloadEndpoint, "NATS") => match get(v, "spec.ipNATs") {
            Some(Value::Array(nats)) => nats
                .iter()
                .map(|n| {
                    format!(
                        "{{{} {}}}",
                        text(n.get("internalIP")),
                        text(n.get("externalIP"))
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        },
        _ => return None,
    })
}

/// Kinds printed with the NAME TIER ORDER SELECTOR columns of Calico's policy templates.
fn is_calico_policy(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::GlobalNetworkPolicy
            | Kind::NetworkPolicy
            | Kind::K8sNetworkPolicy
            | Kind::StagedGlobalNetworkPolicy
            | Kind::StagedNetworkPolicy
    )
}

/// `{{.Spec.PodSelector}}`: text/template prints the `metav1.LabelSelector` through its
/// generated `String()` (`generated.pb.go`), labels sorted, e.g.
/// `&LabelSelector{MatchLabels:map[string]string{role: db,},MatchExpressions:[]LabelSelectorRequirement{},}`.
fn go_label_selector(v: Option<&Value>) -> String {
    let mut labels: Vec<(&String, String)> = v
        .and_then(|v| v.get("matchLabels"))
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, x)| (k, text(Some(x)))).collect())
        .unwrap_or_default();
    labels.sort();
    let mut out = String::from("&LabelSelector{MatchLabels:map[string]string{");
    for (k, x) in labels {
        out.push_str(&format!("{k}: {x},"));
    }
    out.push_str("},MatchExpressions:[]LabelSelectorRequirement{");
    let exprs = v
        .and_then(|v| v.get("matchExpressions"))
        .and_then(Value::as_array);
    for e in exprs.into_iter().flatten() {
        let values: Vec<String> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|x| text(Some(x))).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
            text(e.get("key")),
            text(e.get("operator")),
            values.join(" ")
        ));
    }
    out.push_str("},}");
    out
}

/// The value at a dotted path.
fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// A scalar as Go's template prints it (strings bare, missing as empty).
fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => go_float(f),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// calicoctl's `join`/`joinAndTruncate`: list items (or sorted `k=v` of a map) joined; past
/// `max` bytes the text is cut to `max - 3` and ends with `...`.
fn join_values(v: Option<&Value>, sep: &str, max: usize) -> String {
    let items: Vec<String> = match v {
        None | Some(Value::Null) => return String::new(),
        Some(Value::Array(a)) => a.iter().map(|x| text(Some(x))).collect(),
        Some(Value::Object(m)) => {
            let mut kv: Vec<String> = m
                .iter()
                .map(|(k, x)| format!("{k}={}", text(Some(x))))
                .collect();
            kv.sort();
            kv
        }
        Some(x) => vec![text(Some(x))],
    };
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(item);
        if max > 0 && out.len() > max {
            let mut cut = max.saturating_sub(3);
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("...");
            break;
        }
    }
    out
}

/// A float as Go's `%v` prints it: the shortest digits, exponent form below 1e-4 or from
/// 1e+06 (so the default tier's order 1000000 reads `1e+06`, as in calicoctl).
pub fn go_float(f: f64) -> String {
    go_g(f, None)
}

/// Go's `%g` (`%.Ng` with `Some(N)` significant digits, the shortest digits with `None`):
/// trailing zeros dropped, exponent form when the exponent is below -4 or at least the
/// precision (6 for the shortest form), with at least two exponent digits.
pub fn go_g(f: f64, significant: Option<usize>) -> String {
    if f == 0.0 {
        return "0".into();
    }
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    let sci = match significant {
        Some(n) => format!("{f:.prec$e}", prec = n.saturating_sub(1)),
        None => format!("{f:e}"),
    };
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let limit = significant.map_or(6, |n| i32::try_from(n).unwrap_or(i32::MAX));
    if exp < -4 || exp >= limit {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim(mantissa), exp.abs());
    }
    match significant {
        Some(n) => {
            let decimals =
                usize::try_from(i32::try_from(n).unwrap_or(i32::MAX) - 1 - exp).unwrap_or(0);
            trim(&format!("{f:.decimals$}"))
        }
        None => format!("{f}"),
    }
}

/// Go's text/tabwriter with calicoctl's settings (minwidth 5, padding 3, every cell
/// tab-terminated): each column as wide as its widest cell plus 3, at least 5.
pub fn tabwriter(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(5)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cellv) in r.iter().enumerate() {
            out.push_str(cellv);
            for _ in cellv.chars().count()..widths[c] {
                out.push(' ');
            }
        }
        out.push('\n');
    }
    out
}

/// A small JSONPath as kubectl writes it: literal text with `{...}` expressions of dotted
/// fields, `[n]` and `[*]`; several matches are joined by spaces.
pub fn jsonpath(expr: &str, root: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        out.push_str(&unescape(&rest[..open]));
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("jsonpath {expr:?}: unclosed '{{'"))?;
        let path = rest[open + 1..close].trim();
        let found = eval_path(path, root).map_err(|e| format!("jsonpath {expr:?}: {e}"))?;
        let texts: Vec<String> = found
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&texts.join(" "));
        rest = &rest[close + 1..];
    }
    out.push_str(&unescape(rest));
    Ok(out)
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\t", "\t")
}

fn eval_path<'a>(path: &str, root: &'a Value) -> Result<Vec<&'a Value>, String> {
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut cur: Vec<&Value> = vec![root];
    let mut tokens = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut idx) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            tokens.push(name.to_string());
        }
        while let Some(end) = idx.find(']') {
            tokens.push(idx[..=end].to_string());
            idx = &idx[end + 1..];
        }
        if !idx.is_empty() {
            return Err(format!("cannot parse {part:?}"));
        }
    }
    for t in tokens {
        let mut next = Vec::new();
        for v in cur {
            if let Some(inner) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                let Value::Array(a) = v else { continue };
                if inner == "*" {
                    next.extend(a.iter());
                } else {
                    let i: i64 = inner.parse().map_err(|_| format!("bad index [{inner}]"))?;
                    let i = if i < 0 { a.len() as i64 + i } else { i };
                    if let Some(x) = usize::try_from(i).ok().and_then(|i| a.get(i)) {
                        next.push(x);
                    }
                }
            } else if let Some(x) = v.get(&t) {
                next.push(x);
            }
        }
        cur = next;
    }
    Ok(cur)
}

/// A bordered table as calicoctl's tablewriter draws it: centred headers, numbers
/// right-aligned, everything else left-aligned.
pub fn boxed(headers: &[&str], rows: &[Vec<String>]) -> String {
    boxed_right(headers, rows, &[])
}

/// [`boxed`] with the columns `right` (indexes) right-aligned whatever they hold, as a
/// go-pretty `ColumnConfig{Align: text.AlignRight}` draws them.
pub fn boxed_right(headers: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    // tablewriter wraps a cell longer than 30 characters at spaces, into several lines.
    let rows: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|r| r.iter().map(|c| wrap_cell(c, 30)).collect())
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .flatten()
                .map(|s| s.chars().count())
                .chain([headers[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line: String = widths.iter().fold("+".to_string(), |mut s, w| {
        s.push_str(&"-".repeat(w + 2));
        s.push('+');
        s
    }) + "\n";
    let mut out = line.clone();
    out.push('|');
    for (h, w) in headers.iter().zip(&widths) {
        let gap = w - h.len();
        out.push_str(&format!(
            " {}{h}{} |",
            " ".repeat(gap / 2),
            " ".repeat(gap - gap / 2)
        ));
    }
    out.push('\n');
    out.push_str(&line);
    for r in &rows {
        let height = r.iter().map(Vec::len).max().unwrap_or(1);
        for i in 0..height {
            out.push('|');
            for (col, (cell, w)) in r.iter().zip(&widths).enumerate() {
                let c = cell.get(i).map(String::as_str).unwrap_or("");
                let numeric = !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit());
                if numeric || right.contains(&col) {
                    out.push_str(&format!(" {c:>w$} |"));
                } else {
                    out.push_str(&format!(" {c:<w$} |"));
                }
            }
            out.push('\n');
        }
    }
    out.push_str(&line);
    out
}

/// Splits a cell longer than `limit` at spaces into lines of at most `limit` characters (or
/// the longest word), as tablewriter's auto-wrap does.
fn wrap_cell(cell: &str, limit: usize) -> Vec<String> {
    if cell.chars().count() <= limit || !cell.contains(' ') {
        return vec![cell.to_string()];
    }
    let words: Vec<&str> = cell.split_whitespace().collect();
    let limit = words
        .iter()
        .map(|w| w.chars().count())
        .max()
        .unwrap_or(0)
        .max(limit);
    let mut lines: Vec<String> = Vec::new();
    for w in words {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + w.chars().count() <= limit => {
                l.push(' ');
                l.push_str(w);
            }
            _ => lines.push(w.to_string()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_does() {
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(10_000_000.0), "1e+07");
        assert_eq!(go_float(1000.0), "1000");
        assert_eq!(go_float(100.0), "100");
        assert_eq!(go_float(1500.5), "1500.5");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1_234_567.0), "1.234567e+06");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
    }

    #[test]
    fn tables_pad_like_gos_tabwriter() {
        let rows = vec![
            vec!["NAME".into(), "CIDR".into(), "SELECTOR".into()],
            vec![
                "ippool-name1".into(),
                "10.0.1.0/24".into(),
                "foo == 'bar'".into(),
            ],
        ];
        assert_eq!(
            tabwriter(&rows),
            "NAME           CIDR          SELECTOR       \nippool-name1   10.0.1.0/24   foo == 'bar'   \n"
        );
        assert_eq!(
            tabwriter(&[vec!["NAME".into(), "CIDR".into(), "SELECTOR".into()]]),
            "NAME   CIDR   SELECTOR   \n"
        );
    }

    #[test]
    fn joins_truncate_as_calicoctl_does() {
        let v = json!(["otorhinolaryngological", "x"]);
        assert_eq!(join_values(Some(&v), ",", 10), "otorhin...");
        assert_eq!(join_values(Some(&json!([123456])), ",", 6), "123456");
        assert_eq!(join_values(Some(&json!([12345, 67890])), ",", 6), "123...");
        let m = json!({"giraffe": "neck", "bird": "felix", "go": "gopher", "elephant": "hippo"});
        assert_eq!(join_values(Some(&m), ",", 15), "bird=felix,e...");
    }

    #[test]
    fn jsonpath_reads_fields_lists_and_indexes() {
        let v = json!({"items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}], "spec": {"cidr": "10.0.0.0/16"}});
        assert_eq!(jsonpath("{.spec.cidr}", &v).unwrap(), "10.0.0.0/16");
        assert_eq!(jsonpath("{.items[*].metadata.name}", &v).unwrap(), "a b");
        assert_eq!(
            jsonpath("first={.items[0].metadata.name}\\n", &v).unwrap(),
            "first=a\n"
        );
        assert!(jsonpath("{.spec", &v).is_err());
    }

    #[test]
    fn unknown_formats_say_which_exist() {
        assert!(Output::parse("xml").unwrap_err().contains("custom-columns"));
        assert_eq!(
            Output::parse("custom-columns=NAME,CIDR").unwrap(),
            Output::CustomColumns(vec!["NAME".into(), "CIDR".into()])
        );
    }
}
