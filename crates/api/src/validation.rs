//! Validation errors and the field checks shared by every kind.
//!
//! A [`ValidationError`] names the object and lists every problem found, each with the JSON
//! path of the field (`spec.ingress[0].destination.ports[1]`) and a reason that says what to
//! change. Checks mirror Calico's Go validator and CRD rules (`validator.go`, kubebuilder
//! markers on the v3 types).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::meta::ObjectMeta;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Every problem found in one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) if !ns.is_empty() => write!(f, "{} \"{}/{}\": ", self.kind, ns, self.name)?,
            _ => write!(f, "{} \"{}\": ", self.kind, self.name)?,
        }
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects field errors while a validator walks an object.
#[derive(Debug, Default)]
pub struct Errors {
    errors: Vec<FieldError>,
}

impl Errors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, path: impl fmt::Display, reason: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_string(),
            reason: reason.into(),
        });
    }

    /// Records `result`'s error, if any, at `path`.
    pub fn check(&mut self, path: impl fmt::Display, result: Result<(), String>) {
        if let Err(reason) = result {
            self.add(path, reason);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.errors
    }

    /// Turns the collected errors into a result for the named object.
    pub fn finish(self, kind: &str, meta: &ObjectMeta) -> Result<(), ValidationError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                kind: kind.to_string(),
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                errors: self.errors,
            })
        }
    }
}

/// A JSON path under construction, e.g. `spec.ingress[2].source`.
#[derive(Debug, Clone)]
pub struct Path(String);

impl Path {
    pub fn root(s: &str) -> Path {
        Path(s.to_string())
    }

    pub fn field(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{}", self.0, name))
        }
    }

    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{}]", self.0, i))
    }

    pub fn key(&self, k: &str) -> Path {
        Path(format!("{}[{:?}]", self.0, k))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// DNS-1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 253 chars.
pub fn check_subdomain_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is required".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "name is too long by {} bytes (max 253)",
            name.len() - 253
        ));
    }
    if name.split('.').all(is_dns_label_loose) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character"
        ))
    }
}

// Calico's subdomain regex does not limit each label to 63 characters.
fn is_dns_label_loose(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A single DNS label (no dots), ≤ 63 chars: tier names.
pub fn check_label_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is required".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "name is too long by {} bytes (max 63)",
            name.len() - 63
        ));
    }
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must consist of lower case alphanumeric characters or '-' (no dots), and start and end with an alphanumeric character"
        ))
    }
}

/// Kubernetes qualified name: optional DNS-subdomain prefix and `/`, then a name ≤ 63 chars of
/// `[A-Za-z0-9._-]` beginning and ending with an alphanumeric character.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(format!("{key:?}: prefix part must not be empty"));
        }
        if check_subdomain_name(p).is_err() {
            return Err(format!(
                "{key:?}: prefix part must be a lowercase DNS subdomain"
            ));
        }
    }
    check_label_value_chars(name)
        .and_then(|()| {
            if name.is_empty() {
                Err("name part must not be empty".into())
            } else {
                Ok(())
            }
        })
        .map_err(|e| format!("{key:?}: {e}"))
}

/// Label values: ≤ 63 chars of `[A-Za-z0-9._-]`, alphanumeric at both ends; may be empty.
pub fn check_label_value(value: &str) -> Result<(), String> {
    check_label_value_chars(value).map_err(|e| format!("value {value:?}: {e}"))
}

fn check_label_value_chars(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let b = v.as_bytes();
    let ok_end = |c: u8| c.is_ascii_alphanumeric();
    if !ok_end(b[0]) || !ok_end(b[b.len() - 1]) {
        return Err("must begin and end with an alphanumeric character".into());
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        return Err("may contain only alphanumerics, '-', '_' and '.'".into());
    }
    Ok(())
}

/// Labels: qualified-name keys, valid values.
pub fn check_labels(
    errs: &mut Errors,
    path: &Path,
    labels: &std::collections::BTreeMap<String, String>,
) {
    for (k, v) in labels {
        errs.check(path.key(k), check_qualified_name(k));
        errs.check(path.key(k), check_label_value(v));
    }
}

/// Annotations: qualified-name keys (checked lower-cased), total size ≤ 256 KiB.
pub fn check_annotations(
    errs: &mut Errors,
    path: &Path,
    annotations: &std::collections::BTreeMap<String, String>,
) {
    let mut total = 0usize;
    for (k, v) in annotations {
        errs.check(path.key(k), check_qualified_name(&k.to_lowercase()));
        total += k.len() + v.len();
    }
    if total > 256 * 1024 {
        errs.add(
            path,
            format!("annotations total {total} bytes; the limit is 262144 bytes"),
        );
    }
}

/// A CIDR or a bare address (taken as a full-length prefix); host bits may be set.
pub fn parse_cidr_or_ip(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(a));
    }
    Err(format!(
        "{s:?} is not a valid CIDR (e.g. 10.0.0.0/24 or fd00::/64)"
    ))
}

/// A network: a CIDR with no host bits set, or a bare address (Calico's `net` rule).
pub fn check_net(s: &str) -> Result<IpNet, String> {
    let n = parse_cidr_or_ip(s)?;
    if n.trunc() != n {
        return Err(format!(
            "{s:?} has host bits set; did you mean {}?",
            n.trunc()
        ));
    }
    Ok(n)
}

/// Like [`check_net`] but also requires the given family.
pub fn check_net_family(s: &str, v4: bool) -> Result<IpNet, String> {
    let n = check_net(s)?;
    match (v4, n) {
        (true, IpNet::V4(_)) | (false, IpNet::V6(_)) => Ok(n),
        (true, _) => Err(format!("{s:?} is not an IPv4 network")),
        (false, _) => Err(format!("{s:?} is not an IPv6 network")),
    }
}

pub fn check_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not a valid IP address"))
}

pub fn check_ipv4(s: &str) -> Result<(), String> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Ok(()),
        _ => Err(format!("{s:?} is not a valid IPv4 address")),
    }
}

pub fn check_ipv6(s: &str) -> Result<(), String> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => Ok(()),
        _ => Err(format!("{s:?} is not a valid IPv6 address")),
    }
}

/// An address with a prefix, as Node `bgp.ipv4Address` (`10.0.0.5/24`); host bits allowed.
pub fn check_cidr_family(s: &str, v4: bool) -> Result<(), String> {
    let n = parse_cidr_or_ip(s)?;
    match (v4, n) {
        (true, IpNet::V4(_)) | (false, IpNet::V6(_)) => Ok(()),
        (true, _) => Err(format!("{s:?} is not an IPv4 address/prefix")),
        (false, _) => Err(format!("{s:?} is not an IPv6 address/prefix")),
    }
}

/// Linux interface names: 1..15 of `[a-zA-Z0-9_.-]`.
pub fn check_interface_name(s: &str) -> Result<(), String> {
    if (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid interface name (1 to 15 of a-z, A-Z, 0-9, '_', '.', '-')"
        ))
    }
}

/// Interface globs (`ignoredInterfaces`, BGPFilter `interface`): also allow `*`.
pub fn check_interface_glob(s: &str) -> Result<(), String> {
    if (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*'))
    {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid interface pattern (1 to 15 of a-z, A-Z, 0-9, '_', '.', '-', '*')"
        ))
    }
}

/// Container IDs: `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`.
pub fn check_container_id(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid container ID (alphanumerics and '-')"
        ))
    }
}

/// Kubernetes IANA service-name rules for named ports: ≤ 15 chars of lowercase alphanumerics
/// and '-', at least one letter, no leading/trailing/double '-'.
pub fn check_port_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = (1..=15).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid port name (1 to 15 lowercase letters, digits and '-', with at least one letter)"
        ))
    }
}

/// MAC addresses in the usual colon- or dash-separated hex form (6 or 8 or 20 octets).
pub fn check_mac(s: &str) -> Result<(), String> {
    let sep = if s.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = s.split(sep).collect();
    let ok = matches!(parts.len(), 6 | 8 | 20)
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid MAC address (e.g. ee:ee:ee:ee:ee:ee)"
        ))
    }
}

/// A selector that parses (and is not too long).
pub fn check_selector(s: &str) -> Result<(), String> {
    if s.len() > 1024 {
        return Err(format!(
            "selector is {} characters long; the limit is 1024",
            s.len()
        ));
    }
    crate::selector::Selector::parse(s)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A selector where `global()` is not allowed.
pub fn check_selector_no_global(s: &str) -> Result<(), String> {
    check_selector(s)?;
    if s.contains("global(") {
        return Err("global() is only allowed in a rule's namespaceSelector".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_rules() {
        assert!(check_subdomain_name("default-ipv4-ippool").is_ok());
        assert!(check_subdomain_name("a.b.c").is_ok());
        assert!(check_subdomain_name("Upper").is_err());
        assert!(check_subdomain_name("-lead").is_err());
        assert!(check_subdomain_name("").is_err());
        assert!(check_label_name("tier1").is_ok());
        assert!(check_label_name("tier.1").is_err());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(check_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(check_qualified_name("projectcalico.org/namespace").is_ok());
        assert!(check_qualified_name("/x").is_err());
        assert!(check_qualified_name("a b").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_x-y").is_ok());
        assert!(check_label_value("-bad").is_err());
    }

    #[test]
    fn networks_must_be_strictly_masked() {
        assert!(check_net("10.0.0.0/8").is_ok());
        assert!(check_net("10.0.0.1").is_ok());
        let e = check_net("10.0.0.1/8").unwrap_err();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        assert!(check_net("nonsense").is_err());
    }

    #[test]
    fn interface_and_port_names() {
        assert!(check_interface_name("cali1234567890a").is_ok());
        assert!(check_interface_name("cali1234567890ab").is_err());
        assert!(check_port_name("http").is_ok());
        assert!(check_port_name("80").is_err());
        assert!(check_port_name("Http").is_err());
        assert!(check_mac("ee:ee:ee:ee:ee:ee").is_ok());
        assert!(check_mac("ee:ee:ee").is_err());
    }
}
