//! The router ID Calico derives from a node's name when `CALICO_ROUTER_ID=hash`
//! (`confd/pkg/resource/template/util.go`, `HashToIPv4`): the first four bytes of the name's
//! SHA-256, with a first octet above 223 lowered by 32 so that the ID is never a multicast or
//! reserved address. IPv6-only nodes need it, because a BGP identifier is four octets even in
//! MP-BGP.

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

/// Calico's `HashToIPv4(nodeName)`.
pub fn hash_router_id(node_name: &str) -> Ipv4Addr {
    let digest = Sha256::digest(node_name.as_bytes());
    let first = if digest[0] > 223 {
        digest[0] - 32
    } else {
        digest[0]
    };
    Ipv4Addr::new(first, digest[1], digest[2], digest[3])
}
