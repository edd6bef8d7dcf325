//! Reading `RTM_NEWROUTE` messages from a route dump. felixd and birdd each own routes in
//! the main table (by protocol number) and must recognise them the same way: the
//! destination (a default route has no destination attribute), the table (ids above 255
//! only travel as an attribute), the gateway and the output interface.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};

/// The destination prefix, including `0.0.0.0/0` and `::/0`, which carry no attribute.
pub fn destination(r: &RouteMessage) -> Option<IpNet> {
    let len = r.header.destination_prefix_length;
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                IpNet::new(IpAddr::V4(*a), len).ok()
            }
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                IpNet::new(IpAddr::V6(*a), len).ok()
            }
            _ => None,
        })
        .or(match (len, r.header.address_family) {
            (0, AddressFamily::Inet) => Some(IpNet::V4(Default::default())),
            (0, AddressFamily::Inet6) => Some(IpNet::V6(Default::default())),
            _ => None,
        })
}

/// The routing table: the `RTA_TABLE` attribute when present (it holds ids above 255),
/// else the header's byte.
pub fn table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// The single gateway (`RTA_GATEWAY`); multipath routes carry theirs per next hop.
pub fn gateway(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Gateway(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

/// The output interface index (`RTA_OIF`).
pub fn output_interface(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::RouteMessageBuilder;

    #[test]
    fn built_routes_read_back() {
        let dst: IpNet = "10.244.1.0/26".parse().unwrap();
        let r = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix("10.244.1.0".parse().unwrap(), 26)
            .gateway("10.99.0.2".parse().unwrap())
            .output_interface(7)
            .table_id(1000)
            .build();
        assert_eq!(destination(&r), Some(dst));
        assert_eq!(gateway(&r), Some("10.99.0.2".parse().unwrap()));
        assert_eq!(output_interface(&r), Some(7));
        assert_eq!(table(&r), 1000);
    }

    #[test]
    fn a_default_route_has_a_zero_length_destination() {
        let r = RouteMessageBuilder::<std::net::Ipv6Addr>::new().build();
        assert_eq!(destination(&r), Some("::/0".parse().unwrap()));
        assert_eq!(table(&r), 254);
    }
}
