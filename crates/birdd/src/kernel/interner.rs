//! Next-hop sets kept once each. Hundreds of thousands of prefixes share a handful of sets
//! (one per peer, a few ECMP groups), so each route holds a 4-byte id instead of its own
//! vector.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;

/// A set held by an [`Interner`]; `Option<SetId>` is 4 bytes.
pub type SetId = NonZeroU32;

pub struct Interner<T> {
    sets: Vec<Entry<T>>,
    index: HashMap<Arc<[T]>, SetId>,
    free: Vec<SetId>,
}

struct Entry<T> {
    /// A freed entry keeps its last set until it is reused; sets are small.
    set: Arc<[T]>,
    refs: u32,
}

impl<T: Eq + Hash + Clone> Interner<T> {
    pub fn new() -> Interner<T> {
        Interner {
            sets: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
        }
    }

    /// The id of `set`, with one more holder.
    pub fn acquire(&mut self, set: &[T]) -> SetId {
        if let Some(&id) = self.index.get(set) {
            self.entry(id).refs += 1;
            return id;
        }
        let set: Arc<[T]> = set.into();
        let id = match self.free.pop() {
            Some(id) => {
                *self.entry(id) = Entry {
                    set: set.clone(),
                    refs: 1,
                };
                id
            }
            None => {
                self.sets.push(Entry {
                    set: set.clone(),
                    refs: 1,
                });
                // Ids start at 1; there are never 4 billion distinct sets.
                SetId::new(u32::try_from(self.sets.len()).unwrap_or(u32::MAX)).unwrap_or(SetId::MIN)
            }
        };
        self.index.insert(set, id);
        id
    }

    /// One holder fewer; the set is forgotten with its last holder.
    pub fn release(&mut self, id: SetId) {
        let entry = self.entry(id);
        debug_assert!(entry.refs > 0, "a set released more often than acquired");
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs == 0 {
            let set = entry.set.clone();
            self.index.remove(&set);
            self.free.push(id);
        }
    }

    pub fn get(&self, id: SetId) -> &Arc<[T]> {
        &self.sets[id.get() as usize - 1].set
    }

    /// Distinct sets held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    fn entry(&mut self, id: SetId) -> &mut Entry<T> {
        &mut self.sets[id.get() as usize - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_sets_share_an_id_until_their_last_holder_releases_it() {
        let mut i = Interner::new();
        let a = i.acquire(&[1, 2]);
        let b = i.acquire(&[1, 2]);
        let c = i.acquire(&[3]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(&**i.get(a), &[1, 2]);
        assert_eq!(i.len(), 2);

        i.release(a);
        assert_eq!(i.len(), 2, "one holder left");
        i.release(b);
        assert_eq!(i.len(), 1);
        // The freed id is reused for the next new set, and the old set is not found again.
        let d = i.acquire(&[4]);
        assert_eq!(d, a);
        assert_eq!(&**i.get(d), &[4]);
        let e = i.acquire(&[1, 2]);
        assert_ne!(e, d);
        assert_eq!(i.len(), 3);
    }
}
