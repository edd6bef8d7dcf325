//! Prefixes waiting to be exported to a peer, by RIB slot ([`DestId`]).
//!
//! Every best-path change goes into each established peer's queue (a change among the ECMP
//! members behind an unchanged best only into ADD-PATH peers'); each flush exports a
//! bounded slice, reading the RIB as it is then. A queue holds each prefix at
//! most once, so a prefix that changes ten times while the peer is behind is exported
//! once, in its latest state (measured: allowing duplicates made a ten-sender withdrawal
//! four times slower), and a state is never sent after a later one.

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

/// Slots waiting to be exported, as bits, taken in slot order by a sweep that goes round.
///
/// A queue of ids beside the bits cost 4 to 8 bytes a prefix per peer while a full table
/// was being sent (a megabyte per peer at 100,000 prefixes, the memory of ten senders'
/// tables in B), and that room stayed with the allocator afterwards. Slot order is arrival
/// order for new prefixes (slots are handed out as prefixes come), so a full table still
/// goes out in the order it came, and prefixes that arrived together, sharing attributes,
/// still share UPDATEs. A prefix queued behind the sweep waits for it to come round: at
/// most one pass over the table.
#[derive(Debug, Default)]
pub struct DirtyQueue {
    queued: SlotBits,
    len: usize,
    /// The word the next take starts at.
    cursor: usize,
}

impl DirtyQueue {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, id: DestId) -> bool {
        self.queued.contains(id)
    }

    /// Empties the queue and gives its memory back (the session went down).
    pub fn clear(&mut self) {
        *self = DirtyQueue::default();
    }

    /// Queues the slots not queued yet.
    pub fn extend(&mut self, ids: impl IntoIterator<Item = DestId>) {
        for id in ids {
            self.insert(id);
        }
    }

    /// Queues `id` unless it waits already.
    pub fn insert(&mut self, id: DestId) {
        if self.queued.insert(id) {
            self.len += 1;
        }
    }

    /// Takes up to `n` slots, going on from where the last take stopped.
    pub fn take(&mut self, n: usize) -> Vec<DestId> {
        let want = n.min(self.len);
        let mut out = Vec::with_capacity(want);
        let words = &mut self.queued.words;
        let mut w = if self.cursor < words.len() {
            self.cursor
        } else {
            0
        };
        // Each word is looked at once at most, all its bits at once.
        for _ in 0..words.len() {
            if out.len() == want {
                break;
            }
            let mut word = words[w];
            while word != 0 && out.len() < want {
                out.push(DestId((w * 64) as u32 + word.trailing_zeros()));
                word &= word - 1;
            }
            words[w] = word;
            if word != 0 {
                break;
            }
            w = if w + 1 == words.len() { 0 } else { w + 1 };
        }
        self.cursor = w;
        self.len -= out.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_go_in_order_and_a_prefix_waits_once() {
        let mut q = DirtyQueue::default();
        q.extend((0..10).map(DestId));
        assert_eq!(q.take(3), [0, 1, 2].map(DestId));
        assert_eq!(q.len, 7);
        assert!(q.contains(DestId(3)) && !q.contains(DestId(2)));
        // Churned while the peer is behind: each prefix still waits once.
        for _ in 0..50 {
            q.extend((0..1000).map(DestId));
        }
        assert_eq!(q.len, 1000);
        // The sweep is still in the first word, which it takes from its lowest bit.
        assert_eq!(q.take(7), [0, 1, 2, 3, 4, 5, 6].map(DestId));
        // Taken prefixes can be queued again.
        q.extend([DestId(3)]);
        assert_eq!(q.len, 994);
        assert_eq!(q.take(usize::MAX).len(), 994);
        assert!(q.is_empty() && !q.contains(DestId(3)));
        assert!(q.take(5).is_empty());
    }

    #[test]
    fn the_sweep_goes_round_and_misses_nothing_queued_behind_it() {
        let mut q = DirtyQueue::default();
        q.extend([5, 70, 200, 64, 63].map(DestId));
        assert_eq!(q.take(2), [5, 63].map(DestId));
        // Behind the sweep, in the word it stopped in, and ahead of it.
        q.extend([1, 64, 65, 300].map(DestId));
        assert_eq!(q.take(3), [64, 65, 70].map(DestId));
        assert_eq!(q.take(usize::MAX), [200, 300, 1].map(DestId));
        assert!(q.is_empty());
        // The word a take stopped in is where the next one starts, from its lowest bit.
        q.extend([10, 20, 30].map(DestId));
        assert_eq!(q.take(2), [10, 20].map(DestId));
        q.extend([0, 100].map(DestId));
        assert_eq!(q.take(usize::MAX), [0, 30, 100].map(DestId));
    }

    #[test]
    fn queues_match_a_model_under_any_mix_of_inserts_and_takes() {
        use std::collections::BTreeSet;
        let mut q = DirtyQueue::default();
        let mut model = BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                let taken = q.take((x % 50) as usize);
                for id in &taken {
                    assert!(model.remove(id), "round {round}: {id:?} taken twice");
                }
            } else {
                let id = DestId((x % 700) as u32);
                q.insert(id);
                model.insert(id);
            }
            assert_eq!(q.len, model.len());
        }
        let rest: BTreeSet<DestId> = q.take(usize::MAX).into_iter().collect();
        assert_eq!(rest, model);
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
