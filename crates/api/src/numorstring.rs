//! Values that Calico's YAML writes either as a number or as a string: ports, protocols,
//! AS numbers, plus Go-style durations.
//!
//! Each type parses exactly the spellings Calico's `numorstring` package accepts and writes
//! back the spelling Calico writes, so a document read and written again is unchanged.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A port match: one port, an inclusive range, or a named port.
///
/// JSON: a single port is a number (`80`), a range is a string (`"80:90"`), a named port is its
/// name (`"http"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    Range { min: u16, max: u16 },
    Named(String),
}

impl Port {
    pub fn single(port: u16) -> Port {
        Port::Range {
            min: port,
            max: port,
        }
    }

    pub fn range(min: u16, max: u16) -> Result<Port, String> {
        if min > max {
            return Err(format!(
                "minimum port number ({min}) is greater than maximum port number ({max}) in port range"
            ));
        }
        Ok(Port::Range { min, max })
    }

    pub fn is_named(&self) -> bool {
        matches!(self, Port::Named(_))
    }

    /// Parses `"80"`, `"80:90"` or a port name, as Calico's `PortFromString` does.
    pub fn parse(s: &str) -> Result<Port, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u16>()
                .map(Port::single)
                .map_err(|_| format!("invalid port format ({s})"));
        }
        if let Some((a, b)) = s.split_once(':')
            && !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
        {
            let min = a
                .parse::<u16>()
                .map_err(|_| format!("invalid minimum port number in range ({s})"))?;
            let max = b
                .parse::<u16>()
                .map_err(|_| format!("invalid maximum port number in range ({s})"))?;
            return Port::range(min, max);
        }
        let valid_name = (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if valid_name {
            Ok(Port::Named(s.to_string()))
        } else {
            Err(format!("invalid name for named port ({s})"))
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Range { min, max } if min == max => write!(f, "{min}"),
            Port::Range { min, max } => write!(f, "{min}:{max}"),
            Port::Named(n) => f.write_str(n),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Range { min, max } if min == max => s.serialize_u16(*min),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Port, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, a \"min:max\" range or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::single)
                    .map_err(|_| E::custom(format!("port {v} is outside 0..65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::single)
                    .map_err(|_| E::custom(format!("port {v} is outside 0..65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                Port::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The protocol names Calico knows, in their canonical spelling.
pub const PROTOCOL_NAMES: [&str; 6] = ["TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite"];

/// An IP protocol, by number (`6`) or name (`TCP`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Number(u8),
    Name(String),
}

impl Protocol {
    pub const TCP: &'static str = "TCP";
    pub const UDP: &'static str = "UDP";

    pub fn tcp() -> Protocol {
        Protocol::Name("TCP".into())
    }

    pub fn udp() -> Protocol {
        Protocol::Name("UDP".into())
    }

    /// Parses a name (case-insensitively, stored in canonical spelling) or a number.
    pub fn parse(s: &str) -> Protocol {
        if let Ok(n) = s.parse::<u8>() {
            return Protocol::Number(n);
        }
        match PROTOCOL_NAMES.iter().find(|n| n.eq_ignore_ascii_case(s)) {
            Some(n) => Protocol::Name((*n).to_string()),
            None => Protocol::Name(s.to_string()),
        }
    }

    /// The IANA protocol number, when the protocol is known.
    pub fn number(&self) -> Option<u8> {
        match self {
            Protocol::Number(n) => Some(*n),
            Protocol::Name(n) => match n.as_str() {
                "TCP" => Some(6),
                "UDP" => Some(17),
                "ICMP" => Some(1),
                "ICMPv6" => Some(58),
                "SCTP" => Some(132),
                "UDPLite" => Some(136),
                _ => None,
            },
        }
    }

    /// Whether port matches make sense for this protocol (TCP, UDP, SCTP).
    pub fn supports_ports(&self) -> bool {
        matches!(self.number(), Some(6 | 17 | 132))
    }

    /// Checks Calico's rule: a number 1..255 or one of [`PROTOCOL_NAMES`].
    pub fn check(&self) -> Result<(), String> {
        match self {
            Protocol::Number(0) => Err("protocol number invalid: must be 1..255".into()),
            Protocol::Number(_) => Ok(()),
            Protocol::Name(n) if PROTOCOL_NAMES.contains(&n.as_str()) => Ok(()),
            Protocol::Name(n) => Err(format!(
                "protocol name invalid: {n:?} is not one of {} or a number 1..255",
                PROTOCOL_NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Number(n) => write!(f, "{n}"),
            Protocol::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(n) => s.serialize_u8(*n),
            Protocol::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a protocol name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol::Number)
                    .map_err(|_| E::custom(format!("protocol number {v} is outside 1..255")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol::Number)
                    .map_err(|_| E::custom(format!("protocol number {v} is outside 1..255")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                Ok(Protocol::parse(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A BGP AS number. Written as a plain number; read from a number, `"64512"` or the dotted
/// `"1.10"` form (high and low 16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsNumber(pub u32);

impl AsNumber {
    pub fn parse(s: &str) -> Result<AsNumber, String> {
        if let Ok(n) = s.parse::<u32>() {
            return Ok(AsNumber(n));
        }
        let bad = || format!("invalid AS Number format ({s})");
        let (hi, lo) = s.split_once('.').ok_or_else(bad)?;
        let hi: u16 = hi.parse().map_err(|_| bad())?;
        let lo: u16 = lo.parse().map_err(|_| bad())?;
        Ok(AsNumber((u32::from(hi) << 16) | u32::from(lo)))
    }
}

impl fmt::Display for AsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for AsNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AsNumber, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AsNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number (0..4294967295 or dotted \"a.b\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom(format!("AS number {v} is outside 0..4294967295")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom(format!("AS number {v} is outside 0..4294967295")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<AsNumber, E> {
                // YAML reads `1.10` as a float; Calico's dotted notation is meant.
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AsNumber, E> {
                AsNumber::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A Go `time.Duration` string as `metav1.Duration` carries it (`"90s"`, `"1h30m"`, `"250ms"`).
///
/// The original spelling is kept so documents round-trip unchanged; it is checked on parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Duration {
    text: String,
    nanos: i128,
}

impl Duration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        let nanos = parse_go_duration(s)?;
        Ok(Duration {
            text: s.to_string(),
            nanos,
        })
    }

    pub fn from_secs(secs: u64) -> Duration {
        Duration {
            text: format!("{secs}s"),
            nanos: i128::from(secs) * 1_000_000_000,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The duration, or `None` when it is negative.
    pub fn to_std(&self) -> Option<std::time::Duration> {
        u64::try_from(self.nanos)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Duration, String> {
        Duration::parse(s)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(de::Error::custom)
    }
}

/// Parses Go's duration syntax: an optional sign, then one or more `<decimal><unit>` with
/// units ns, us (or µs), ms, s, m, h; `"0"` alone is allowed.
fn parse_go_duration(s: &str) -> Result<i128, String> {
    let bad = || {
        format!(
            "invalid duration {s:?}: use a number and a unit, e.g. \"90s\", \"5m\" or \"1h30m\""
        )
    };
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int_val: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut frac_val: i128 = 0;
        let mut frac_scale: i128 = 1;
        for c in frac_part.chars().take(18) {
            frac_val = frac_val * 10 + i128::from(c.to_digit(10).ok_or_else(bad)?);
            frac_scale *= 10;
        }
        total = total
            .checked_add(
                int_val.checked_mul(scale).ok_or_else(bad)? + frac_val * scale / frac_scale,
            )
            .ok_or_else(bad)?;
        rest = tail;
    }
    if total > i128::from(i64::MAX) {
        return Err(format!("invalid duration {s:?}: too long"));
    }
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_and_print_as_calico_does() {
        assert_eq!(Port::parse("80").unwrap(), Port::single(80));
        assert_eq!(Port::parse("80:90").unwrap(), Port::range(80, 90).unwrap());
        assert_eq!(Port::parse("http").unwrap(), Port::Named("http".into()));
        assert!(Port::parse("90:80").is_err());
        assert!(Port::parse("70000").is_err());
        assert!(Port::parse("bad name").is_err());
        assert_eq!(serde_json::to_string(&Port::single(80)).unwrap(), "80");
        assert_eq!(
            serde_json::to_string(&Port::range(1, 2).unwrap()).unwrap(),
            "\"1:2\""
        );
        let p: Port = serde_json::from_str("\"8080\"").unwrap();
        assert_eq!(p, Port::single(8080));
    }

    #[test]
    fn protocols_are_canonicalised_and_checked() {
        assert_eq!(Protocol::parse("tcp"), Protocol::tcp());
        assert_eq!(Protocol::parse("icmpv6"), Protocol::Name("ICMPv6".into()));
        assert_eq!(Protocol::parse("17"), Protocol::Number(17));
        assert!(Protocol::parse("17").supports_ports());
        assert!(!Protocol::parse("ICMP").supports_ports());
        assert!(Protocol::parse("bogus").check().is_err());
        assert!(Protocol::Number(0).check().is_err());
        assert_eq!(serde_json::to_string(&Protocol::Number(6)).unwrap(), "6");
    }

    #[test]
    fn as_numbers_accept_dotted_form() {
        assert_eq!(AsNumber::parse("64512").unwrap(), AsNumber(64512));
        assert_eq!(AsNumber::parse("1.10").unwrap(), AsNumber(65546));
        assert!(AsNumber::parse("1.70000").is_err());
        let a: AsNumber = serde_json::from_str("\"1.10\"").unwrap();
        assert_eq!(a.0, 65546);
    }

    #[test]
    fn durations_follow_go_syntax() {
        let d = Duration::parse("1h30m").unwrap();
        assert_eq!(d.to_std().unwrap().as_secs(), 5400);
        assert_eq!(
            Duration::parse("250ms")
                .unwrap()
                .to_std()
                .unwrap()
                .as_millis(),
            250
        );
        assert_eq!(
            Duration::parse("1.5s")
                .unwrap()
                .to_std()
                .unwrap()
                .as_millis(),
            1500
        );
        assert_eq!(Duration::parse("0").unwrap().to_std().unwrap().as_secs(), 0);
        assert!(Duration::parse("-5s").unwrap().is_negative());
        for bad in ["", "5", "s", "5x", "1h30", "abc"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
