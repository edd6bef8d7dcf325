//! Prefixes waiting to be exported to a peer whose session was busy (its backlog).
//!
//! Peers that keep up never use it: they take the daemon's shared list of changes as it is.
//! A backlog is a queue in arrival order with each prefix at most once: a prefix that
//! changes ten times while the peer is behind is exported once, as it is when its turn
//! comes (measured: allowing duplicates here made a ten-sender withdrawal four times
//! slower).

use std::collections::VecDeque;

use calico_bgp::types::FastSet;
use ipnet::IpNet;

#[derive(Debug, Default)]
pub struct DirtyQueue {
    queue: VecDeque<IpNet>,
    queued: FastSet<IpNet>,
}

impl DirtyQueue {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.queued = FastSet::default();
    }

    /// Queues the prefixes not queued yet, after those already waiting.
    pub fn extend(&mut self, prefixes: impl IntoIterator<Item = IpNet>) {
        for p in prefixes {
            if self.queued.insert(p) {
                self.queue.push_back(p);
            }
        }
    }

    /// Takes up to `n` prefixes from the front.
    pub fn take(&mut self, n: usize) -> Vec<IpNet> {
        let n = n.min(self.queue.len());
        let slice: Vec<IpNet> = self.queue.drain(..n).collect();
        if self.queue.is_empty() {
            self.clear();
        } else {
            for p in &slice {
                self.queued.remove(p);
            }
        }
        slice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(i: u32) -> IpNet {
        IpNet::new(std::net::Ipv4Addr::from(i << 8).into(), 24).unwrap()
    }

    #[test]
    fn order_is_kept_and_a_prefix_waits_once() {
        let mut q = DirtyQueue::default();
        q.extend((0..10).map(net));
        assert_eq!(q.take(3), vec![net(0), net(1), net(2)]);
        assert_eq!(q.queue.len(), 7);
        // Churned while the peer is behind: each prefix still waits once.
        for _ in 0..50 {
            q.extend((0..1000).map(net));
        }
        assert_eq!(q.queue.len(), 1000);
        assert_eq!(q.take(7), [3, 4, 5, 6, 7, 8, 9].map(net));
        // Taken prefixes can be queued again.
        q.extend([net(3)]);
        assert_eq!(q.queue.len(), 994);
    }
}
