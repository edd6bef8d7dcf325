//! A prefix's paths: one inline (most prefixes have one), more in a vector of their own.
//!
//! 24 bytes, where a `SmallVec` of one path is 32: the variant is told apart by a value a
//! path's own fields never take (the compiler finds one in the inline path), so the tag
//! costs nothing. At a million prefixes those 8 bytes are 8 MB.

use std::ops::{Deref, DerefMut};

use super::PathEntry;

#[derive(Debug, Default)]
pub(super) enum Paths {
    #[default]
    None,
    One(PathEntry),
    /// Two paths or more. Boxed so that the variant fits beside the inline path's niche;
    /// the extra hop is paid only by prefixes with several paths. (A bare `Vec` is 24
    /// bytes and would not fit beside the niche.)
    #[allow(clippy::box_collection)]
    Many(Box<Vec<PathEntry>>),
}

impl Paths {
    pub fn as_slice(&self) -> &[PathEntry] {
        match self {
            Paths::None => &[],
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [PathEntry] {
        match self {
            Paths::None => &mut [],
            Paths::One(p) => std::slice::from_mut(p),
            Paths::Many(v) => v,
        }
    }

    /// Adds `p` last. Past two paths, room grows by half: ten paths cost five reallocations
    /// (not nine) and leave little room unused.
    pub fn push(&mut self, p: PathEntry) {
        match std::mem::take(self) {
            Paths::None => *self = Paths::One(p),
            Paths::One(first) => *self = Paths::Many(Box::new(vec![first, p])),
            Paths::Many(mut v) => {
                if v.len() == v.capacity() {
                    v.reserve_exact((v.capacity() / 2).max(1));
                }
                v.push(p);
                *self = Paths::Many(v);
            }
        }
    }

    /// Removes and returns the path at `i`, the others keeping their order.
    ///
    /// Panics if `i` is out of bounds, as `Vec::remove` does.
    pub fn remove(&mut self, i: usize) -> PathEntry {
        match std::mem::take(self) {
            Paths::None => panic!("removing path {i} of a prefix without paths"),
            Paths::One(p) => {
                assert_eq!(i, 0, "removing path {i} of a prefix with one path");
                p
            }
            Paths::Many(mut v) => {
                let p = v.remove(i);
                *self = Paths::settle(v);
                p
            }
        }
    }

    /// Keeps the paths `keep` says to, in order; `keep` may edit them.
    pub fn retain_mut(&mut self, mut keep: impl FnMut(&mut PathEntry) -> bool) {
        match std::mem::take(self) {
            Paths::None => {}
            Paths::One(mut p) => {
                if keep(&mut p) {
                    *self = Paths::One(p);
                }
            }
            Paths::Many(mut v) => {
                v.retain_mut(keep);
                *self = Paths::settle(v);
            }
        }
    }

    /// A boxed vector that may have lost paths: kept in its box while it holds two or more,
    /// else back inline (or nothing).
    #[allow(clippy::box_collection)]
    fn settle(mut v: Box<Vec<PathEntry>>) -> Paths {
        match v.len() {
            0 => Paths::None,
            1 => v.pop().map_or(Paths::None, Paths::One),
            _ => Paths::Many(v),
        }
    }
}

impl Deref for Paths {
    type Target = [PathEntry];

    fn deref(&self) -> &[PathEntry] {
        self.as_slice()
    }
}

impl DerefMut for Paths {
    fn deref_mut(&mut self) -> &mut [PathEntry] {
        self.as_mut_slice()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::rib::PeerId;

    fn path(peer: u32) -> PathEntry {
        PathEntry {
            peer: PeerId(peer),
            path_id: 0,
            tx_path_id: 0,
            igp_cost: 0,
            attrs: Arc::default(),
            stale: false,
            rejected: None,
        }
    }

    fn peers(p: &Paths) -> Vec<u32> {
        p.iter().map(|p| p.peer.0).collect()
    }

    #[test]
    fn paths_move_between_inline_and_boxed_keeping_their_order() {
        let mut p = Paths::default();
        assert!(p.is_empty());
        p.push(path(1));
        assert!(matches!(p, Paths::One(_)));
        for peer in 2..=10 {
            p.push(path(peer));
        }
        assert_eq!(peers(&p), (1..=10).collect::<Vec<_>>());
        p.swap(0, 9);
        assert_eq!(p.remove(0).peer, PeerId(10));
        p.retain_mut(|x| {
            x.igp_cost = 7;
            x.peer.0 % 3 == 0
        });
        assert_eq!(peers(&p), [3, 6, 9]);
        assert!(p.iter().all(|x| x.igp_cost == 7));
        p.retain_mut(|x| x.peer.0 == 6);
        assert!(matches!(p, Paths::One(_)), "one path left goes back inline");
        assert_eq!(p.remove(0).peer, PeerId(6));
        assert!(matches!(p, Paths::None));
        p.retain_mut(|_| true);
        assert!(p.is_empty());
    }
}
