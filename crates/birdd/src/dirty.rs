//! Prefixes waiting to be exported to a peer, by RIB slot ([`DestId`]).
//!
//! Every best-path change goes into each established peer's queue; each flush exports a
//! bounded slice from the front, reading the RIB as it is then. A queue holds each prefix at
//! most once, so a prefix that changes ten times while the peer is behind is exported
//! once, in its latest state (measured: allowing duplicates made a ten-sender withdrawal
//! four times slower), and a state is never sent after a later one.

use std::collections::VecDeque;

use calico_bgp::rib::DestId;

/// A set of slots as bits: one bit per slot, no hashing.
#[derive(Debug, Default)]
pub struct SlotBits {
    words: Vec<u64>,
}

impl SlotBits {
    pub fn contains(&self, id: DestId) -> bool {
        let i = id.index();
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Adds `id`; false when it was there already.
    pub fn insert(&mut self, id: DestId) -> bool {
        let i = id.index();
        if i / 64 >= self.words.len() {
            self.words.resize(i / 64 + 1, 0);
        }
        let w = &mut self.words[i / 64];
        let bit = 1 << (i % 64);
        let new = *w & bit == 0;
        *w |= bit;
        new
    }

    /// Removes `id`; false when it was not there.
    pub fn remove(&mut self, id: DestId) -> bool {
        let i = id.index();
        let Some(w) = self.words.get_mut(i / 64) else {
            return false;
        };
        let bit = 1 << (i % 64);
        let had = *w & bit != 0;
        *w &= !bit;
        had
    }

    pub fn clear(&mut self) {
        self.words = Vec::new();
    }
}

/// Room a drained queue keeps (16 KiB): enough for a round of ordinary churn without growing
/// again, while the megabytes a full-table burst needed go back.
pub const KEEP_ROOM: usize = 4096;

#[derive(Debug, Default)]
pub struct DirtyQueue {
    queue: VecDeque<DestId>,
    queued: SlotBits,
}

impl DirtyQueue {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn contains(&self, id: DestId) -> bool {
        self.queued.contains(id)
    }

    /// Empties the queue and gives its memory back (the session went down).
    pub fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.queued.clear();
    }

    /// Queues the slots not queued yet, after those already waiting.
    pub fn extend(&mut self, ids: impl IntoIterator<Item = DestId>) {
        for id in ids {
            if self.queued.insert(id) {
                self.queue.push_back(id);
            }
        }
    }

    /// Takes up to `n` slots from the front. The queue keeps up to [`KEEP_ROOM`] of its
    /// room: a peer's queue fills and empties every round, and growing it again from nothing
    /// each time was a tenth of a ten-sender feed's CPU; but the room a full table needed
    /// (a megabyte per peer at 200,000 prefixes) would otherwise stay with the daemon.
    pub fn take(&mut self, n: usize) -> Vec<DestId> {
        let n = n.min(self.queue.len());
        let slice: Vec<DestId> = self.queue.drain(..n).collect();
        for id in &slice {
            self.queued.remove(*id);
        }
        if self.queue.is_empty() {
            self.queue.shrink_to(KEEP_ROOM);
        }
        slice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_and_a_prefix_waits_once() {
        let mut q = DirtyQueue::default();
        q.extend((0..10).map(DestId));
        assert_eq!(q.take(3), [0, 1, 2].map(DestId));
        assert_eq!(q.queue.len(), 7);
        assert!(q.contains(DestId(3)) && !q.contains(DestId(2)));
        // Churned while the peer is behind: each prefix still waits once.
        for _ in 0..50 {
            q.extend((0..1000).map(DestId));
        }
        assert_eq!(q.queue.len(), 1000);
        assert_eq!(q.take(7), [3, 4, 5, 6, 7, 8, 9].map(DestId));
        // Taken prefixes can be queued again.
        q.extend([DestId(3)]);
        assert_eq!(q.queue.len(), 994);
        q.take(usize::MAX);
        assert!(q.is_empty() && !q.contains(DestId(3)));
    }

    #[test]
    fn a_drained_queue_gives_back_a_bursts_room() {
        let mut q = DirtyQueue::default();
        q.extend((0..20_000).map(DestId));
        q.take(5_000);
        assert!(
            q.queue.capacity() >= 15_000,
            "room is kept while the queue drains"
        );
        q.take(usize::MAX);
        assert!(q.queue.capacity() <= 2 * KEEP_ROOM);
        q.extend((0..100).map(DestId));
        assert_eq!(q.take(usize::MAX).len(), 100);
    }

    #[test]
    fn bits_grow_on_demand_and_answer_for_any_slot() {
        let mut b = SlotBits::default();
        assert!(!b.contains(DestId(1_000_000)));
        assert!(!b.remove(DestId(5)));
        assert!(b.insert(DestId(130)));
        assert!(!b.insert(DestId(130)));
        assert!(b.contains(DestId(130)) && !b.contains(DestId(129)));
        assert!(b.remove(DestId(130)));
        assert!(!b.contains(DestId(130)));
    }
}
