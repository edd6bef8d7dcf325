//! Per-prefix state keyed compactly: an IPv4 prefix is an 8-byte key (address and length)
//! instead of the 18 bytes of an `IpNet`, so an entry of a 4-byte-per-side value is 16 bytes.
//! Tables are mostly IPv4; IPv6 prefixes get their own map.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

type Hasher = foldhash::fast::RandomState;

pub struct RouteMap<V> {
    v4: HashMap<(u32, u8), V, Hasher>,
    v6: HashMap<([u8; 16], u8), V, Hasher>,
}

impl<V: Default> Default for RouteMap<V> {
    fn default() -> Self {
        RouteMap {
            v4: HashMap::default(),
            v6: HashMap::default(),
        }
    }
}

fn v4_key(n: &Ipv4Net) -> (u32, u8) {
    (u32::from(n.network()), n.prefix_len())
}

fn v6_key(n: &Ipv6Net) -> ([u8; 16], u8) {
    (n.network().octets(), n.prefix_len())
}

fn v4_prefix(&(addr, len): &(u32, u8)) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(addr), len))
}

fn v6_prefix(&(addr, len): &([u8; 16], u8)) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(addr), len))
}

impl<V: Default> RouteMap<V> {
    pub fn get(&self, prefix: &IpNet) -> Option<&V> {
        match prefix {
            IpNet::V4(n) => self.v4.get(&v4_key(n)),
            IpNet::V6(n) => self.v6.get(&v6_key(n)),
        }
    }

    /// The value of `prefix`, a default one inserted if there was none.
    pub fn get_or_default(&mut self, prefix: &IpNet) -> &mut V {
        match prefix {
            IpNet::V4(n) => self.v4.entry(v4_key(n)).or_default(),
            IpNet::V6(n) => self.v6.entry(v6_key(n)).or_default(),
        }
    }

    pub fn remove(&mut self, prefix: &IpNet) -> Option<V> {
        match prefix {
            IpNet::V4(n) => self.v4.remove(&v4_key(n)),
            IpNet::V6(n) => self.v6.remove(&v6_key(n)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> {
        let v4 = self.v4.iter().map(|(k, v)| (v4_prefix(k), v));
        let v6 = self.v6.iter().map(|(k, v)| (v6_prefix(k), v));
        v4.chain(v6)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.v4.values_mut().chain(self.v6.values_mut())
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.v4.retain(|_, v| keep(v));
        self.v6.retain(|_, v| keep(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_keep_their_prefixes_whole() {
        let mut m: RouteMap<u32> = RouteMap::default();
        let a: IpNet = "10.1.2.0/24".parse().expect("prefix");
        let b: IpNet = "10.1.2.0/25".parse().expect("prefix");
        let c: IpNet = "fd00:1::/48".parse().expect("prefix");
        let d: IpNet = "0.0.0.0/0".parse().expect("prefix");
        *m.get_or_default(&a) = 1;
        *m.get_or_default(&b) = 2;
        *m.get_or_default(&c) = 3;
        *m.get_or_default(&d) = 4;
        assert_eq!(m.get(&a), Some(&1));
        assert_eq!(m.get(&b), Some(&2), "same address, another length");
        let mut all: Vec<(IpNet, u32)> = m.iter().map(|(p, v)| (p, *v)).collect();
        all.sort();
        assert_eq!(all, vec![(d, 4), (a, 1), (b, 2), (c, 3)]);
        m.retain(|v| *v % 2 == 1);
        for v in m.values_mut() {
            *v *= 10;
        }
        assert_eq!(m.remove(&a), Some(10));
        assert_eq!(m.get(&c), Some(&30));
        assert_eq!(m.iter().count(), 1);
    }
}
