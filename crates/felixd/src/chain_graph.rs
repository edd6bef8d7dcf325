//! Which of our chains the kernel's chains lead to, kept up to date edit by edit.
//!
//! Only chains reachable from the hooks (and, with nftables, from the verdict maps) are
//! programmed, as Felix does, and a set or map is only deleted once nothing programmed
//! looks it up. Walking every chain to learn that made each change cost time in proportion
//! to the whole table: with 1,000 policies over 1,000 endpoints (8,500 chains, 40,000
//! rules), it was most of felixd's CPU per change. Here every name counts the references
//! it gets from the roots and from reached chains, and every set or map the lookups it gets
//! from them, so an edit costs what it touches.
//!
//! A cycle of chains that nothing else reaches would keep itself counted as reached; the
//! kernel refuses loops (`ELOOP`, iptables' "loop detected"), and Calico's rules have none.

use std::collections::{BTreeSet, HashMap, HashSet};

/// What a chain (or root) refers to: the chains it jumps or goes to, and the sets and maps
/// it looks up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Links {
    pub targets: Vec<String>,
    pub lookups: Vec<String>,
}

impl Links {
    pub fn new(targets: Vec<String>, lookups: Vec<String>) -> Links {
        Links { targets, lookups }
    }
}

#[derive(Debug)]
pub struct ChainGraph {
    /// Our chains, reached or not.
    chains: HashMap<String, Links>,
    /// What is always reached: the hooks in the kernel's chains, verdict maps.
    roots: HashMap<String, Links>,
    /// References each name gets from the roots and from reached chains. A name can be
    /// referenced without being one of our chains (a kernel target, or a bug).
    refs: HashMap<String, u32>,
    /// Lookups of each set or map by the roots and reached chains.
    lookups: HashMap<String, u32>,
    /// Referenced names that are not our chains but must be.
    missing: BTreeSet<String>,
    /// Chains reached or left since the last [`ChainGraph::clear_changed`].
    changed: HashSet<String>,
    /// Whether a referenced name must be one of our chains.
    must_exist: fn(&str) -> bool,
}

impl ChainGraph {
    pub fn new(must_exist: fn(&str) -> bool) -> ChainGraph {
        ChainGraph {
            chains: HashMap::new(),
            roots: HashMap::new(),
            refs: HashMap::new(),
            lookups: HashMap::new(),
            missing: BTreeSet::new(),
            changed: HashSet::new(),
            must_exist,
        }
    }

    /// Sets (or replaces) what one of our chains refers to.
    pub fn set_chain(&mut self, name: &str, links: Links) {
        if self.chains.get(name) == Some(&links) {
            return;
        }
        let old = self.chains.insert(name.to_string(), links.clone());
        if !self.refs.contains_key(name) {
            return;
        }
        if old.is_none() {
            self.missing.remove(name);
            self.changed.insert(name.to_string());
        }
        // New references first, so that a target both old and new never drops to zero.
        self.reference(links);
        if let Some(old) = old {
            self.dereference(old);
        }
    }

    pub fn remove_chain(&mut self, name: &str) {
        let Some(old) = self.chains.remove(name) else {
            return;
        };
        if self.refs.contains_key(name) {
            self.changed.insert(name.to_string());
            if (self.must_exist)(name) {
                self.missing.insert(name.to_string());
            }
            self.dereference(old);
        }
    }

    /// Sets (or replaces) a root: what it refers to is reached.
    pub fn set_root(&mut self, name: &str, links: Links) {
        if self.roots.get(name) == Some(&links) {
            return;
        }
        let old = self.roots.insert(name.to_string(), links.clone());
        self.reference(links);
        if let Some(old) = old {
            self.dereference(old);
        }
    }

    pub fn remove_root(&mut self, name: &str) {
        if let Some(old) = self.roots.remove(name) {
            self.dereference(old);
        }
    }

    pub fn is_reached(&self, name: &str) -> bool {
        self.refs.contains_key(name) && self.chains.contains_key(name)
    }

    /// Our chains that are reached, in no particular order.
    pub fn reached(&self) -> impl Iterator<Item = &String> {
        self.chains.keys().filter(|n| self.refs.contains_key(*n))
    }

    /// Chains reached or left since the last [`ChainGraph::clear_changed`] (a chain may have
    /// been both).
    pub fn changed(&self) -> &HashSet<String> {
        &self.changed
    }

    /// Called once the kernel holds what the graph says.
    pub fn clear_changed(&mut self) {
        self.changed.clear();
    }

    /// A reference to a chain that must exist and does not, as (from, to); the first in
    /// name order, so that the error is the same every time.
    pub fn dangling(&self) -> Option<(String, String)> {
        let to = self.missing.iter().next()?;
        let from = self.referrer(|l| l.targets.contains(to));
        Some((from, to.clone()))
    }

    /// Whether a root or a reached chain looks up this set or map.
    pub fn is_looked_up(&self, name: &str) -> bool {
        self.lookups.contains_key(name)
    }

    /// A root or reached chain that looks up this set or map (for errors).
    pub fn user_of(&self, name: &str) -> Option<String> {
        self.is_looked_up(name)
            .then(|| self.referrer(|l| l.lookups.iter().any(|u| u == name)))
    }

    /// The first root, else reached chain, in name order whose links match. Only errors
    /// ask, so a walk over everything is fine.
    fn referrer(&self, matches: impl Fn(&Links) -> bool) -> String {
        let roots = self
            .roots
            .iter()
            .filter(|(_, l)| matches(l))
            .map(|(n, _)| n);
        let chains = self
            .chains
            .iter()
            .filter(|(n, l)| self.refs.contains_key(*n) && matches(l))
            .map(|(n, _)| n);
        roots
            .min()
            .or_else(|| chains.min())
            .cloned()
            .unwrap_or_default()
    }

    /// Counts one reference from a root or reached chain to each of `links`, reaching
    /// whatever a newly referenced chain refers to.
    fn reference(&mut self, links: Links) {
        for u in links.lookups {
            *self.lookups.entry(u).or_insert(0) += 1;
        }
        let mut stack = links.targets;
        while let Some(n) = stack.pop() {
            let count = self.refs.entry(n.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                continue;
            }
            match self.chains.get(&n) {
                Some(l) => {
                    stack.extend(l.targets.iter().cloned());
                    for u in &l.lookups {
                        *self.lookups.entry(u.clone()).or_insert(0) += 1;
                    }
                    self.changed.insert(n);
                }
                None => {
                    if (self.must_exist)(&n) {
                        self.missing.insert(n);
                    }
                }
            }
        }
    }

    /// Takes back what [`ChainGraph::reference`] counted for `links`.
    fn dereference(&mut self, links: Links) {
        for u in &links.lookups {
            release(&mut self.lookups, u);
        }
        let mut stack = links.targets;
        while let Some(n) = stack.pop() {
            let Some(count) = self.refs.get_mut(&n) else {
                debug_assert!(false, "released {n}, which had no reference");
                continue;
            };
            *count -= 1;
            if *count > 0 {
                continue;
            }
            self.refs.remove(&n);
            match self.chains.get(&n) {
                Some(l) => {
                    stack.extend(l.targets.iter().cloned());
                    for u in &l.lookups {
                        release(&mut self.lookups, u);
                    }
                    self.changed.insert(n);
                }
                None => {
                    self.missing.remove(&n);
                }
            }
        }
    }
}

fn release(counts: &mut HashMap<String, u32>, name: &str) {
    if let Some(c) = counts.get_mut(name) {
        *c -= 1;
        if *c == 0 {
            counts.remove(name);
        }
    } else {
        debug_assert!(false, "released a lookup of {name}, which had none");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn links(targets: &[&str], lookups: &[&str]) -> Links {
        Links::new(
            targets.iter().map(|s| s.to_string()).collect(),
            lookups.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn reached(g: &ChainGraph) -> BTreeSet<String> {
        g.reached().cloned().collect()
    }

    /// The same answers by a walk from the roots, for comparison.
    fn walk(g: &ChainGraph) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = g.roots.values().flat_map(|l| &l.targets).collect();
        while let Some(n) = stack.pop() {
            if let Some(l) = g.chains.get(n)
                && seen.insert(n.clone())
            {
                stack.extend(&l.targets);
            }
        }
        seen
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn chains_are_reached_through_roots_and_left_when_the_last_reference_goes() {
        let mut g = ChainGraph::new(|n| n.starts_with("cali-"));
        g.set_chain("cali-a", links(&["cali-b", "ACCEPT"], &["s1"]));
        g.set_chain("cali-b", links(&[], &["s2"]));
        g.set_chain("cali-lonely", links(&[], &["s3"]));
        assert!(reached(&g).is_empty());
        g.set_root("FORWARD", links(&["cali-a"], &[]));
        assert_eq!(reached(&g), set(&["cali-a", "cali-b"]));
        assert!(g.is_looked_up("s1") && g.is_looked_up("s2") && !g.is_looked_up("s3"));
        // A kernel target is referenced but never dangling.
        assert_eq!(g.dangling(), None);
        assert_eq!(
            g.changed().iter().cloned().collect::<BTreeSet<_>>(),
            set(&["cali-a", "cali-b"])
        );
        g.clear_changed();

        // cali-a stops jumping to cali-b: cali-b and its lookup go.
        g.set_chain("cali-a", links(&["ACCEPT"], &["s1"]));
        assert_eq!(reached(&g), set(&["cali-a"]));
        assert!(!g.is_looked_up("s2"));
        assert_eq!(g.changed().iter().cloned().collect::<Vec<_>>(), ["cali-b"]);
        g.remove_root("FORWARD");
        assert!(reached(&g).is_empty() && !g.is_looked_up("s1"));
        assert!(g.refs.is_empty() && g.lookups.is_empty());
    }

    #[test]
    fn a_missing_chain_is_dangling_until_it_is_defined_or_no_longer_referenced() {
        let mut g = ChainGraph::new(|n| n.starts_with("cali-"));
        g.set_root("INPUT", links(&["cali-in"], &[]));
        g.set_chain("cali-in", links(&["cali-missing"], &[]));
        assert_eq!(
            g.dangling(),
            Some(("cali-in".to_string(), "cali-missing".to_string()))
        );
        g.set_chain("cali-missing", links(&[], &[]));
        assert_eq!(g.dangling(), None);
        assert!(g.is_reached("cali-missing"));
        g.remove_chain("cali-missing");
        assert_eq!(
            g.dangling(),
            Some(("cali-in".to_string(), "cali-missing".to_string()))
        );
        g.set_chain("cali-in", links(&[], &[]));
        assert_eq!(g.dangling(), None);
    }

    #[test]
    fn shared_targets_stay_reached_while_any_referrer_does() {
        let mut g = ChainGraph::new(|_| true);
        g.set_chain("ep1", links(&["pol", "pol"], &[]));
        g.set_chain("ep2", links(&["pol"], &[]));
        g.set_chain("pol", links(&[], &["sel"]));
        g.set_root("map", links(&["ep1", "ep2"], &[]));
        g.set_root("map", links(&["ep2"], &[]));
        assert_eq!(reached(&g), set(&["ep2", "pol"]));
        assert_eq!(g.user_of("sel").as_deref(), Some("pol"));
        g.set_root("map", links(&[], &[]));
        assert!(reached(&g).is_empty());
        assert_eq!(g.user_of("sel"), None);
    }

    /// Random edits, after each of which the counts agree with a walk from the roots.
    #[test]
    fn counts_agree_with_a_walk_after_any_edits() {
        use proptest::prelude::*;
        let names = ["a", "b", "c", "d", "e", "f"];
        let edit = (
            0usize..4,
            0usize..6,
            proptest::collection::vec(0usize..6, 0..3),
        );
        proptest!(|(edits in proptest::collection::vec(edit, 1..40))| {
            let mut g = ChainGraph::new(|_| true);
            for (kind, who, to) in edits {
                // Only jumps "forward" (to a later name), so there is no cycle.
                let targets: Vec<&str> = to.iter().filter(|t| **t > who).map(|t| names[*t]).collect();
                match kind {
                    0 => g.set_chain(names[who], links(&targets, &[names[who]])),
                    1 => g.remove_chain(names[who]),
                    2 => g.set_root(&format!("root{}", who % 2), links(&targets, &[])),
                    _ => g.remove_root(&format!("root{}", who % 2)),
                }
                prop_assert_eq!(reached(&g), walk(&g));
                for n in names {
                    prop_assert_eq!(g.is_looked_up(n), walk(&g).contains(n));
                }
                let missing: BTreeSet<String> = g
                    .roots
                    .values()
                    .flat_map(|l| &l.targets)
                    .chain(walk(&g).iter().flat_map(|n| &g.chains[n].targets))
                    .filter(|t| !g.chains.contains_key(*t))
                    .cloned()
                    .collect();
                prop_assert_eq!(g.dangling().map(|d| d.1), missing.into_iter().next());
            }
        });
    }
}
