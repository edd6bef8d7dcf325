//! The socket options BGP sessions need beyond plain TCP: TCP MD5 signatures (RFC 2385,
//! BGPPeer `password`) and GTSM (RFC 5082, BGPPeer `ttlSecurity`), as BIRD sets them.
//!
//! The options go through nix's socket-option machinery, so this crate holds no unsafe
//! code: the MD5 request is a plain byte-for-byte copy of the kernel's `struct tcp_md5sig`.

use std::net::IpAddr;
use std::os::fd::AsFd;

use nix::libc;
// The macro calls itself and `setsockopt_impl!` unqualified.
use nix::sys::socket::setsockopt;
use nix::sys::socket::sockopt::{Ipv4Ttl, Ipv6Ttl};
use nix::{setsockopt_impl, sockopt_impl};

/// The longest key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` (linux/tcp.h): a `sockaddr_storage`, then flags, prefix length, key
/// length, interface index and the key, with no padding between them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpMd5SigRequest {
    addr: [u8; 128],
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: i32,
    key: [u8; MD5_MAX_KEY_LEN],
}

impl std::fmt::Debug for TcpMd5SigRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpMd5SigRequest")
            .field("key_len", &self.key_len)
            .finish_non_exhaustive()
    }
}

sockopt_impl!(
    /// `TCP_MD5SIG`: sign segments to and from one address with a key (no key: stop).
    TcpMd5Sig,
    SetOnly,
    libc::IPPROTO_TCP,
    libc::TCP_MD5SIG,
    TcpMd5SigRequest
);
sockopt_impl!(
    /// `IP_MINTTL`: drop IPv4 packets that arrive with a lower TTL.
    IpMinTtl,
    SetOnly,
    libc::IPPROTO_IP,
    libc::IP_MINTTL,
    libc::c_int
);
sockopt_impl!(
    /// `IPV6_MINHOPCOUNT`: drop IPv6 packets that arrive with a lower hop limit.
    Ipv6MinHopCount,
    SetOnly,
    libc::IPPROTO_IPV6,
    libc::IPV6_MINHOPCOUNT,
    libc::c_int
);

/// Why a socket option could not be set.
#[derive(Debug, thiserror::Error)]
pub enum SockoptError {
    #[error(
        "the BGP password for {peer} is {len} bytes; TCP MD5 keys are at most {MD5_MAX_KEY_LEN} bytes, so shorten the secret"
    )]
    KeyTooLong { peer: IpAddr, len: usize },
    #[error(
        "setting the TCP MD5 key for {peer}: {source} (is the kernel built with CONFIG_TCP_MD5SIG?)"
    )]
    Md5 { peer: IpAddr, source: nix::Error },
    #[error("setting TTL security (GTSM) for {peer}: {source}")]
    Ttl { peer: IpAddr, source: nix::Error },
}

impl From<SockoptError> for std::io::Error {
    fn from(e: SockoptError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

/// The address bytes of `struct sockaddr_in` / `sockaddr_in6` for `peer`, in a socket of
/// the family `v6_socket` says. An IPv4 peer on an IPv6 socket (a dual-stack listener) is
/// given as its IPv4-mapped address, which the kernel files under IPv4.
fn sockaddr(peer: IpAddr, v6_socket: bool) -> [u8; 128] {
    let mut out = [0u8; 128];
    let v6 = match (peer, v6_socket) {
        (IpAddr::V4(v4), false) => {
            out[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out[4..8].copy_from_slice(&v4.octets());
            return out;
        }
        (IpAddr::V4(v4), true) => v4.to_ipv6_mapped(),
        (IpAddr::V6(v6), _) => v6,
    };
    out[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    // port (2..4) and flow info (4..8) stay zero.
    out[8..24].copy_from_slice(&v6.octets());
    out
}

/// Installs (`Some`) or removes (`None`) the TCP MD5 key for `peer` on `sock`: an
/// outgoing connection before it connects, or a listener (connections it accepts inherit
/// the keys). `v6_socket`: `sock` is an AF_INET6 socket.
pub fn set_md5_key(
    sock: &impl AsFd,
    v6_socket: bool,
    peer: IpAddr,
    key: Option<&[u8]>,
) -> Result<(), SockoptError> {
    let key = key.unwrap_or_default();
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(SockoptError::KeyTooLong {
            peer,
            len: key.len(),
        });
    }
    let mut req = TcpMd5SigRequest {
        addr: sockaddr(peer, v6_socket),
        flags: 0,
        prefix_len: 0,
        key_len: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    req.key[..key.len()].copy_from_slice(key);
    match setsockopt(sock, TcpMd5Sig, &req) {
        // Removing a key that is not there.
        Err(nix::Error::ENOENT) if key.is_empty() => Ok(()),
        r => r.map_err(|source| SockoptError::Md5 { peer, source }),
    }
}

/// GTSM for a session with a peer `hops` routers away (BIRD's `ttl security on; multihop
/// <hops>`): send with TTL 255 and drop what arrives with less than 256 - `hops`.
pub fn set_ttl_security(sock: &impl AsFd, peer: IpAddr, hops: u8) -> Result<(), SockoptError> {
    let min = 256 - libc::c_int::from(hops.max(1));
    let err = |source| SockoptError::Ttl { peer, source };
    match peer {
        IpAddr::V4(_) => {
            setsockopt(sock, Ipv4Ttl, &255).map_err(err)?;
            setsockopt(sock, IpMinTtl, &min).map_err(err)
        }
        IpAddr::V6(_) => {
            setsockopt(sock, Ipv6Ttl, &255).map_err(err)?;
            setsockopt(sock, Ipv6MinHopCount, &min).map_err(err)
        }
    }
}

const _: () = assert!(std::mem::size_of::<TcpMd5SigRequest>() == 216);

/// TTL (and hop limit) 255 on all a listener's connections send, before any peer is known:
/// a GTSM peer already checks our SYN-ACK. Harmless to the others; BIRD does the same.
pub fn set_listener_ttl(sock: &impl AsFd, v6_socket: bool) -> std::io::Result<()> {
    setsockopt(sock, Ipv4Ttl, &255)?;
    if v6_socket {
        setsockopt(sock, Ipv6Ttl, &255)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn the_md5_request_has_the_kernels_layout() {
        let a = sockaddr("10.0.0.1".parse().unwrap(), false);
        assert_eq!(u16::from_ne_bytes([a[0], a[1]]), libc::AF_INET as u16);
        assert_eq!(&a[4..8], &[10, 0, 0, 1]);
        let m = sockaddr("10.0.0.1".parse().unwrap(), true);
        assert_eq!(u16::from_ne_bytes([m[0], m[1]]), libc::AF_INET6 as u16);
        assert_eq!(
            &m[8..24],
            &"::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    #[test]
    fn keys_are_set_and_removed_and_a_long_key_is_refused() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer: IpAddr = "127.0.0.2".parse().unwrap();
        set_md5_key(&v4, false, peer, Some(b"s3cret")).unwrap();
        set_md5_key(&v4, false, peer, None).unwrap();
        set_md5_key(&v4, false, peer, None).unwrap(); // already gone: fine
        let too_long = [b'x'; 81];
        assert!(matches!(
            set_md5_key(&v4, false, peer, Some(&too_long)),
            Err(SockoptError::KeyTooLong { len: 81, .. })
        ));
        set_ttl_security(&v4, peer, 1).unwrap();
        set_listener_ttl(&v4, false).unwrap();
    }
}
