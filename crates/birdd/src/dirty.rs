//! Prefixes waiting to be exported to a peer.
//!
//! A queue, not a set: a prefix may be queued more than once. Exporting it twice sends
//! nothing the second time (Adj-RIB-Out says it is unchanged), and a queue push costs far
//! less than a hash insert plus a hash remove into a table the size of the RIB, per prefix
//! and per peer, which is what a set cost on a full-table feed. So that repeated churn
//! towards a peer that cannot keep up never makes it grow without bound, the queue drops
//! its duplicates whenever it has doubled since it last did.

use std::collections::VecDeque;

use calico_bgp::types::FastSet;
use ipnet::IpNet;

/// The least length at which duplicates are looked for.
const MIN_COMPACT: usize = 1 << 16;

#[derive(Debug)]
pub struct DirtyQueue {
    queue: VecDeque<IpNet>,
    compact_at: usize,
}

impl Default for DirtyQueue {
    fn default() -> Self {
        DirtyQueue {
            queue: VecDeque::new(),
            compact_at: MIN_COMPACT,
        }
    }
}

impl DirtyQueue {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.compact_at = MIN_COMPACT;
    }

    /// Queues prefixes after those already waiting.
    pub fn extend(&mut self, prefixes: impl IntoIterator<Item = IpNet>) {
        self.queue.extend(prefixes);
        if self.queue.len() > self.compact_at {
            self.compact();
        }
    }

    /// Queues prefixes known to be distinct (a table listing) onto an empty queue without
    /// looking for duplicates; onto a non-empty one as [`DirtyQueue::extend`].
    pub fn extend_distinct(&mut self, prefixes: Vec<IpNet>) {
        if !self.queue.is_empty() {
            return self.extend(prefixes);
        }
        self.compact_at = (prefixes.len() * 2).max(MIN_COMPACT);
        self.queue = prefixes.into();
    }

    /// Takes up to `n` prefixes from the front.
    pub fn take(&mut self, n: usize) -> Vec<IpNet> {
        let n = n.min(self.queue.len());
        let slice: Vec<IpNet> = self.queue.drain(..n).collect();
        if self.queue.is_empty() {
            self.clear();
        }
        slice
    }

    /// Keeps the first occurrence of each prefix, in order.
    fn compact(&mut self) {
        let mut seen: FastSet<IpNet> = FastSet::default();
        seen.reserve(self.queue.len());
        self.queue.retain(|p| seen.insert(*p));
        self.compact_at = (self.queue.len() * 2).max(MIN_COMPACT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(i: u32) -> IpNet {
        IpNet::new(std::net::Ipv4Addr::from(i << 8).into(), 24).unwrap()
    }

    #[test]
    fn order_is_kept_and_churn_never_grows_it_past_twice_the_distinct_prefixes() {
        let mut q = DirtyQueue::default();
        q.extend((0..10).map(net));
        assert_eq!(q.take(3), vec![net(0), net(1), net(2)]);
        assert_eq!(q.len(), 7);
        // The same 1,000 prefixes churned 500 times towards a peer that never drains.
        for _ in 0..500 {
            q.extend((0..1000).map(net));
        }
        assert!(q.len() <= 2 * MIN_COMPACT + 1000, "{}", q.len());
        let mut all = Vec::new();
        while !q.is_empty() {
            all.extend(q.take(4096));
        }
        let distinct: FastSet<IpNet> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 1000);
        assert_eq!(all[..7], [3, 4, 5, 6, 7, 8, 9].map(net));
    }
}
