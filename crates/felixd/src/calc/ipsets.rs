//! The IP set index: which addresses belong in each IP set the active rules need.
//!
//! Members come from every endpoint and (Global)NetworkSet in the cluster, not only local
//! ones: a rule on this node may name a pod anywhere. Only sets that some active policy or
//! profile uses are tracked; a set is computed in full when it becomes active (one pass over
//! the label sources) and afterwards only the sources that change are re-evaluated. An
//! address two sources share is counted, so removing one source keeps the member.
//!
//! Changes are recorded per set, so the dataplane touches only the members that may have
//! changed (and whole sets only when they appear or go away).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use calico_api::numorstring::Protocol;
use ipnet::IpNet;

use super::ruleparse::{IpSetDef, IpSetKind, NamedPortProtocol};

/// One member of an IP set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    /// An address or CIDR (`hash:net` sets).
    Net(IpNet),
    /// An address with a protocol and port (`hash:ip,port` sets for named ports).
    IpPort {
        addr: IpAddr,
        protocol: NamedPortProtocol,
        port: u16,
    },
}

impl Member {
    pub fn ip_version(&self) -> u8 {
        let v4 = match self {
            Member::Net(n) => n.addr().is_ipv4(),
            Member::IpPort { addr, .. } => addr.is_ipv4(),
        };
        if v4 { 4 } else { 6 }
    }
}

impl fmt::Display for Member {
    /// The `ipset` spelling: `10.0.0.1/32`, `10.0.0.1,tcp:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::Net(n) => write!(f, "{n}"),
            Member::IpPort {
                addr,
                protocol,
                port,
            } => write!(f, "{addr},{}:{port}", protocol.as_str()),
        }
    }
}

/// Where members come from: an endpoint (any node) or a network set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceId {
    Workload { namespace: String, name: String },
    Host { name: String },
    NetworkSet { namespace: String, name: String },
    GlobalNetworkSet { name: String },
}

/// A named port an endpoint serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// What the index knows of a source: its effective labels (own over inherited), its
/// addresses, and its named ports (network sets have none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub labels: BTreeMap<String, String>,
    pub nets: Vec<IpNet>,
    pub ports: Vec<NamedPort>,
}

impl Source {
    /// What this source puts into a set defined by `def`, if the selector matches.
    fn contribution(&self, def: &IpSetDef, out: &mut Vec<Member>) {
        if !def.selector.evaluate(&self.labels) {
            return;
        }
        match &def.kind {
            IpSetKind::Net => out.extend(self.nets.iter().map(|n| Member::Net(*n))),
            IpSetKind::NamedPort { protocol, port } => {
                for p in self.ports.iter().filter(|p| &p.name == port) {
                    if !protocol.matches(&p.protocol) {
                        continue;
                    }
                    let member_proto = NamedPortProtocol::of_endpoint_port(&p.protocol);
                    for n in &self.nets {
                        out.push(Member::IpPort {
                            addr: n.addr(),
                            protocol: member_proto,
                            port: p.port,
                        });
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct ActiveSet {
    def: IpSetDef,
    /// How many active policies and profiles use the set.
    users: usize,
    members: HashMap<Member, u32>,
}

/// What changed since the dataplane last took the changes.
#[derive(Debug, Default)]
pub struct IpSetChanges {
    /// Sets that appeared or went away (programmed in full or deleted).
    pub sets: HashSet<String>,
    /// Members that may have been added or removed, per set (not listed for sets in `sets`).
    pub members: HashMap<String, HashSet<Member>>,
}

impl IpSetChanges {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.members.is_empty()
    }
}

/// The index itself.
#[derive(Debug, Default)]
pub struct IpSetIndex {
    sources: HashMap<SourceId, Source>,
    sets: HashMap<String, ActiveSet>,
    /// What each source currently contributes, per set: the undo list for its next change.
    contributed: HashMap<SourceId, HashMap<String, Vec<Member>>>,
    changes: IpSetChanges,
}

impl IpSetIndex {
    pub fn new() -> IpSetIndex {
        IpSetIndex::default()
    }

    /// The members of an active set, or `None` if no active rule uses it.
    pub fn members(&self, id: &str) -> Option<impl Iterator<Item = &Member>> {
        self.sets.get(id).map(|s| s.members.keys())
    }

    pub fn contains(&self, id: &str, m: &Member) -> bool {
        self.sets.get(id).is_some_and(|s| s.members.contains_key(m))
    }

    /// The definition of an active set (what kind of kernel set it needs).
    pub fn definition(&self, id: &str) -> Option<&IpSetDef> {
        self.sets.get(id).map(|s| &s.def)
    }

    pub fn active_ids(&self) -> impl Iterator<Item = &String> {
        self.sets.keys()
    }

    pub fn active_count(&self) -> usize {
        self.sets.len()
    }

    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Takes what changed since the last call.
    pub fn take_changes(&mut self) -> IpSetChanges {
        std::mem::take(&mut self.changes)
    }

    /// One more active policy or profile uses `def`; the set is filled when it first appears.
    pub fn add_user(&mut self, def: &IpSetDef) {
        let id = def.id();
        if let Some(s) = self.sets.get_mut(&id) {
            s.users += 1;
            return;
        }
        let mut set = ActiveSet {
            def: def.clone(),
            users: 1,
            members: HashMap::new(),
        };
        let mut buf = Vec::new();
        for (sid, src) in &self.sources {
            buf.clear();
            src.contribution(def, &mut buf);
            if buf.is_empty() {
                continue;
            }
            for m in &buf {
                *set.members.entry(*m).or_insert(0) += 1;
            }
            self.contributed
                .entry(sid.clone())
                .or_default()
                .insert(id.clone(), buf.clone());
        }
        self.sets.insert(id.clone(), set);
        self.changes.members.remove(&id);
        self.changes.sets.insert(id);
    }

    /// One fewer user of the set `id`; the set goes away with its last user.
    pub fn remove_user(&mut self, id: &str) {
        let Some(s) = self.sets.get_mut(id) else {
            return;
        };
        s.users -= 1;
        if s.users > 0 {
            return;
        }
        self.sets.remove(id);
        for per_set in self.contributed.values_mut() {
            per_set.remove(id);
        }
        self.contributed.retain(|_, per_set| !per_set.is_empty());
        self.changes.members.remove(id);
        self.changes.sets.insert(id.to_string());
    }

    /// A source appeared or changed (labels, addresses or ports).
    pub fn update_source(&mut self, id: SourceId, src: Source) {
        if self.sources.get(&id) == Some(&src) {
            return;
        }
        let mut now: HashMap<String, Vec<Member>> = HashMap::new();
        for (set_id, set) in &self.sets {
            let mut buf = Vec::new();
            src.contribution(&set.def, &mut buf);
            if !buf.is_empty() {
                now.insert(set_id.clone(), buf);
            }
        }
        let before = self.contributed.remove(&id).unwrap_or_default();
        self.apply_contribution_change(&before, &now);
        if !now.is_empty() {
            self.contributed.insert(id.clone(), now);
        }
        self.sources.insert(id, src);
    }

    /// A source went away.
    pub fn remove_source(&mut self, id: &SourceId) {
        if self.sources.remove(id).is_none() {
            return;
        }
        let before = self.contributed.remove(id).unwrap_or_default();
        self.apply_contribution_change(&before, &HashMap::new());
    }

    fn apply_contribution_change(
        &mut self,
        before: &HashMap<String, Vec<Member>>,
        now: &HashMap<String, Vec<Member>>,
    ) {
        for (set_id, members) in now {
            if before.get(set_id) == Some(members) {
                continue;
            }
            let Some(set) = self.sets.get_mut(set_id) else {
                continue;
            };
            for m in members {
                let c = set.members.entry(*m).or_insert(0);
                *c += 1;
                if *c == 1 && !self.changes.sets.contains(set_id) {
                    self.changes
                        .members
                        .entry(set_id.clone())
                        .or_default()
                        .insert(*m);
                }
            }
        }
        for (set_id, members) in before {
            if now.get(set_id) == Some(members) {
                continue;
            }
            let Some(set) = self.sets.get_mut(set_id) else {
                continue;
            };
            for m in members {
                if let Some(c) = set.members.get_mut(m) {
                    *c -= 1;
                    if *c == 0 {
                        set.members.remove(m);
                        if !self.changes.sets.contains(set_id) {
                            self.changes
                                .members
                                .entry(set_id.clone())
                                .or_default()
                                .insert(*m);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use calico_api::selector::Selector;

    fn src(labels: &[(&str, &str)], nets: &[&str]) -> Source {
        Source {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nets: nets.iter().map(|n| n.parse().unwrap()).collect(),
            ports: Vec::new(),
        }
    }

    fn def(sel: &str) -> IpSetDef {
        IpSetDef {
            selector: Selector::parse(sel).unwrap(),
            kind: IpSetKind::Net,
        }
    }

    fn members(idx: &IpSetIndex, id: &str) -> Vec<String> {
        let mut v: Vec<String> = idx.members(id).unwrap().map(|m| m.to_string()).collect();
        v.sort();
        v
    }

    fn wl(name: &str) -> SourceId {
        SourceId::Workload {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn sets_fill_on_activation_and_follow_sources() {
        let mut idx = IpSetIndex::new();
        idx.update_source(wl("a"), src(&[("app", "web")], &["10.0.0.1/32"]));
        idx.update_source(wl("b"), src(&[("app", "db")], &["10.0.0.2/32"]));
        let d = def("app == 'web'");
        let id = d.id();
        idx.add_user(&d);
        assert_eq!(members(&idx, &id), vec!["10.0.0.1/32"]);
        let ch = idx.take_changes();
        assert!(ch.sets.contains(&id));
        // b relabelled: joins; a removed: leaves.
        idx.update_source(wl("b"), src(&[("app", "web")], &["10.0.0.2/32"]));
        idx.remove_source(&wl("a"));
        assert_eq!(members(&idx, &id), vec!["10.0.0.2/32"]);
        let ch = idx.take_changes();
        assert!(ch.sets.is_empty());
        assert_eq!(ch.members[&id].len(), 2);
        // Last user gone: the set goes.
        idx.remove_user(&id);
        assert!(idx.members(&id).is_none());
        assert!(idx.take_changes().sets.contains(&id));
    }

    #[test]
    fn shared_addresses_are_counted() {
        let mut idx = IpSetIndex::new();
        let d = def("all()");
        let id = d.id();
        idx.add_user(&d);
        idx.update_source(wl("a"), src(&[], &["10.0.0.1/32"]));
        idx.update_source(
            SourceId::GlobalNetworkSet { name: "g".into() },
            src(&[], &["10.0.0.1/32", "192.168.0.0/16"]),
        );
        idx.remove_source(&wl("a"));
        assert_eq!(members(&idx, &id), vec!["10.0.0.1/32", "192.168.0.0/16"]);
    }

    #[test]
    fn named_ports_become_ip_port_members() {
        let mut idx = IpSetIndex::new();
        let mut s = src(&[("app", "web")], &["10.0.0.1/32", "fd00::1/128"]);
        s.ports = vec![
            NamedPort {
                name: "http".into(),
                protocol: Protocol::tcp(),
                port: 8080,
            },
            NamedPort {
                name: "http".into(),
                protocol: Protocol::udp(),
                port: 8081,
            },
        ];
        idx.update_source(wl("a"), s);
        let tcp = IpSetDef {
            selector: Selector::all(),
            kind: IpSetKind::NamedPort {
                protocol: NamedPortProtocol::Tcp,
                port: "http".into(),
            },
        };
        let any = IpSetDef {
            selector: Selector::all(),
            kind: IpSetKind::NamedPort {
                protocol: NamedPortProtocol::Any,
                port: "http".into(),
            },
        };
        idx.add_user(&tcp);
        idx.add_user(&any);
        assert_eq!(
            members(&idx, &tcp.id()),
            vec!["10.0.0.1,tcp:8080", "fd00::1,tcp:8080"]
        );
        assert_eq!(
            members(&idx, &any.id()),
            vec![
                "10.0.0.1,tcp:8080",
                "10.0.0.1,udp:8081",
                "fd00::1,tcp:8080",
                "fd00::1,udp:8081"
            ]
        );
    }
}
