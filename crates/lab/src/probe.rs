//! Probes between namespaces with real packets: a TCP connection that echoes, or a UDP
//! datagram that comes back. A matrix of probes runs all at once, each on its own thread:
//! a blocked probe spends its whole timeout waiting, so a matrix costs one timeout, not one
//! per blocked cell.

use std::net::IpAddr;
use std::time::Duration;

use calico_netns_harness::{NetNs, tcp_connects, udp_echoes};

/// A probe's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One probe: from a namespace to an address and port.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    pub from: &'a NetNs,
    pub to: IpAddr,
    pub proto: Proto,
    pub port: u16,
}

/// Whether the probe gets through within `timeout` (a dropped packet shows as a timeout).
/// UDP has no handshake, so a lost datagram and a drop look alike: it tries twice, each
/// with half the time.
pub fn reaches(p: &Probe<'_>, timeout: Duration) -> bool {
    match p.proto {
        Proto::Tcp => tcp_connects(p.from, p.to, p.port, timeout),
        Proto::Udp => {
            let t = timeout / 2;
            udp_echoes(p.from, p.to, p.port, t) || udp_echoes(p.from, p.to, p.port, t)
        }
    }
}

/// Runs every probe at once and returns their results in order.
pub fn probe_all(probes: &[Probe<'_>], timeout: Duration) -> Vec<bool> {
    std::thread::scope(|s| {
        let handles: Vec<_> = probes
            .iter()
            .map(|p| s.spawn(move || reaches(p, timeout)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .collect()
    })
}
