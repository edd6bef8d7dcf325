//! Adj-RIB-Out: what one peer was last told, by RIB slot ([`DestId`]).
//!
//! A peer without ADD-PATH gets one path per prefix under path id 0: its attributes are
//! kept in a vector indexed by slot (8 bytes a prefix, shared attributes). Families where
//! the peer takes ADD-PATH keep every (path id, attributes) pair in a map. Each flush
//! replaces a prefix's entry with what export now wants and reports the difference, which is
//! what goes on the wire.

use std::sync::Arc;

use calico_bgp::rib::DestId;
use calico_bgp::types::{Attrs, FastMap};

/// Slots the path-id-0 vector grows by at least.
const GROW_MIN: usize = 4096;

/// Every (path id, attributes) pair one prefix went out with.
type Paths = Box<[(u32, Arc<Attrs>)]>;

#[derive(Debug, Default)]
pub struct AdjRibOut {
    /// Path id 0, by slot.
    single: Vec<Option<Arc<Attrs>>>,
    /// ADD-PATH families: every pair sent, by slot.
    multi: FastMap<DestId, Paths>,
    /// Paths held, for the metric.
    paths: usize,
}

fn same(a: &Arc<Attrs>, b: &Arc<Attrs>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

impl AdjRibOut {
    /// How many paths the peer holds from us.
    pub fn paths(&self) -> usize {
        self.paths
    }

    /// Whether the peer holds anything for `id`.
    pub fn holds(&self, id: DestId) -> bool {
        self.single.get(id.index()).is_some_and(Option::is_some) || self.multi.contains_key(&id)
    }

    pub fn clear(&mut self) {
        *self = AdjRibOut::default();
    }

    /// Forgets the slots `forget` picks (a family the peer asked to be sent again).
    pub fn forget(&mut self, mut forget: impl FnMut(DestId) -> bool) {
        for (i, slot) in self.single.iter_mut().enumerate() {
            if slot.is_some() && forget(DestId(i as u32)) {
                *slot = None;
                self.paths -= 1;
            }
        }
        let paths = &mut self.paths;
        self.multi.retain(|id, sent| {
            let keep = !forget(*id);
            if !keep {
                *paths -= sent.len();
            }
            keep
        });
    }

    /// Records that `id` should now be `want` (path id, attributes) pairs, `add_path` saying
    /// whether its family runs ADD-PATH to this peer, and reports the difference: each path
    /// id to withdraw, each path to announce (a changed one is announced again, which
    /// replaces it).
    pub fn replace(
        &mut self,
        id: DestId,
        add_path: bool,
        want: &[(u32, Arc<Attrs>)],
        mut withdraw: impl FnMut(u32),
        mut announce: impl FnMut(u32, &Arc<Attrs>),
    ) {
        if !add_path {
            let i = id.index();
            if i >= self.single.len() {
                if want.is_empty() {
                    return;
                }
                // Grown by an eighth (at least a few thousand slots) rather than doubled: at
                // 200,000 prefixes a doubled vector holds 62,000 slots it never uses.
                if self.single.capacity() <= i {
                    let grow = (i + 1 - self.single.len())
                        .max(GROW_MIN)
                        .max(self.single.len() / 8);
                    self.single.reserve_exact(grow);
                }
                self.single.resize(i + 1, None);
            }
            let slot = &mut self.single[i];
            match (slot.as_ref(), want.first()) {
                (None, None) => {}
                (Some(_), None) => {
                    withdraw(0);
                    *slot = None;
                    self.paths -= 1;
                }
                (Some(had), Some((_, a))) if same(had, a) => {}
                (had, Some((_, a))) => {
                    announce(0, a);
                    if had.is_none() {
                        self.paths += 1;
                    }
                    *slot = Some(Arc::clone(a));
                }
            }
            return;
        }
        let had: &[(u32, Arc<Attrs>)] = self.multi.get(&id).map_or(&[], |h| h);
        for (path_id, _) in had {
            if !want.iter().any(|(w, _)| w == path_id) {
                withdraw(*path_id);
            }
        }
        let mut changed = had.len() != want.len();
        for (path_id, attrs) in want {
            if !had.iter().any(|(h, a)| h == path_id && same(a, attrs)) {
                announce(*path_id, attrs);
                changed = true;
            }
        }
        if !changed {
            return;
        }
        self.paths = self.paths - had.len() + want.len();
        if want.is_empty() {
            self.multi.remove(&id);
        } else {
            self.multi.insert(id, want.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(med: u32) -> Arc<Attrs> {
        Arc::new(Attrs {
            med: Some(med),
            ..Attrs::default()
        })
    }

    /// Replaces and returns (withdrawn path ids, announced path ids).
    fn diff(
        out: &mut AdjRibOut,
        id: u32,
        add_path: bool,
        want: &[(u32, Arc<Attrs>)],
    ) -> (Vec<u32>, Vec<u32>) {
        let (mut w, mut a) = (Vec::new(), Vec::new());
        out.replace(DestId(id), add_path, want, |p| w.push(p), |p, _| a.push(p));
        (w, a)
    }

    #[test]
    fn one_path_per_prefix_is_announced_once_replaced_and_withdrawn() {
        let mut out = AdjRibOut::default();
        assert_eq!(diff(&mut out, 7, false, &[]), (vec![], vec![]));
        assert_eq!(
            diff(&mut out, 7, false, &[(0, attrs(1))]),
            (vec![], vec![0])
        );
        assert!(out.holds(DestId(7)) && !out.holds(DestId(6)));
        // Equal attributes in another allocation: nothing to send.
        assert_eq!(diff(&mut out, 7, false, &[(0, attrs(1))]), (vec![], vec![]));
        assert_eq!(
            diff(&mut out, 7, false, &[(0, attrs(2))]),
            (vec![], vec![0])
        );
        assert_eq!(out.paths(), 1);
        assert_eq!(diff(&mut out, 7, false, &[]), (vec![0], vec![]));
        assert_eq!(out.paths(), 0);
        assert!(!out.holds(DestId(7)));
    }

    #[test]
    fn add_path_sends_only_the_paths_that_changed() {
        let mut out = AdjRibOut::default();
        let both = [(1, attrs(1)), (2, attrs(2))];
        assert_eq!(diff(&mut out, 3, true, &both), (vec![], vec![1, 2]));
        assert_eq!(out.paths(), 2);
        assert_eq!(
            diff(&mut out, 3, true, &[(2, attrs(2)), (3, attrs(3))]),
            (vec![1], vec![3])
        );
        assert_eq!(out.paths(), 2);
        out.forget(|id| id == DestId(3));
        assert_eq!((out.paths(), out.holds(DestId(3))), (0, false));
    }

    #[test]
    fn forgetting_picks_slots_of_both_kinds() {
        let mut out = AdjRibOut::default();
        diff(&mut out, 1, false, &[(0, attrs(1))]);
        diff(&mut out, 2, false, &[(0, attrs(1))]);
        diff(&mut out, 3, true, &[(1, attrs(1))]);
        out.forget(|id| id != DestId(2));
        assert!(!out.holds(DestId(1)) && out.holds(DestId(2)) && !out.holds(DestId(3)));
        assert_eq!(out.paths(), 1);
    }
}
