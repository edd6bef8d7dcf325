//! The kernel's IP sets for one IP version, kept equal to what the rules need (Felix's
//! `ipsets.IPSets`), through `ipset restore`:
//!
//! - a new set is created with all its members in one restore; a set whose members mostly
//!   changed (a resync after drift) is built under a temporary name and swapped in, so rules
//!   never see it half-filled;
//! - otherwise only the members that changed are added or deleted;
//! - a set is destroyed only after the rules that used it are gone (the caller applies
//!   [`IpSets::apply_deletions`] after the iptables or nftables update);
//! - `cali4`/`cali6` sets no one wants (left by an earlier run) are swept on the first
//!   write; the refresh timer reads the kernel again and repairs any drift.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::exec::{Exec, ExecError};

/// Felix's default `maxIpsetSize`.
pub const MAX_SET_SIZE: usize = 1_048_576;

/// A kernel set type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetType {
    /// `hash:net`: addresses and CIDRs.
    Net,
    /// `hash:ip,port`: address, protocol and port (named ports).
    IpPort,
}

impl SetType {
    pub fn as_str(self) -> &'static str {
        match self {
            SetType::Net => "hash:net",
            SetType::IpPort => "hash:ip,port",
        }
    }

    fn parse(s: &str) -> Option<SetType> {
        match s {
            "hash:net" => Some(SetType::Net),
            "hash:ip,port" => Some(SetType::IpPort),
            _ => None,
        }
    }
}

/// A member as `ipset list` prints it: a host address without its `/32` or `/128`.
pub fn canonical_member(m: &str) -> String {
    if let Some(a) = m.strip_suffix("/32").filter(|a| !a.contains(':')) {
        return a.to_string();
    }
    if let Some(a) = m.strip_suffix("/128").filter(|a| a.contains(':')) {
        return a.to_string();
    }
    m.to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Set {
    set_type: SetType,
    members: HashSet<String>,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum IpSetError {
    #[error("reading IPv{ip_version} IP sets: {source}")]
    Read { ip_version: u8, source: ExecError },
    #[error("writing IPv{ip_version} IP sets: {source}")]
    Write { ip_version: u8, source: ExecError },
}

/// Counts from one apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpSetStats {
    pub sets_written: usize,
    pub members_changed: usize,
    pub sets_deleted: usize,
}

/// The IP sets of one IP version.
#[derive(Debug)]
pub struct IpSets {
    ip_version: u8,
    desired: HashMap<String, Set>,
    kernel: Option<HashMap<String, Set>>,
    /// Sets to compare in full.
    dirty_sets: BTreeSet<String>,
    /// Members to check, per set.
    dirty_members: HashMap<String, HashSet<String>>,
    /// Sets that could not be destroyed yet: when to try again, and the wait after that.
    deletion_retry: Option<(Instant, Duration)>,
}

/// The first wait before destroying again a set the kernel still held. Rules that used the
/// set are freed one RCU grace period after the transaction that removed them (10-30 ms),
/// and only then does the kernel let the set go.
const FIRST_DELETION_RETRY: Duration = Duration::from_millis(50);
/// Past this wait the set is held by something else (another tool's rule): say so.
const DELETION_RETRY_WARN: Duration = Duration::from_secs(5);
const MAX_DELETION_RETRY: Duration = Duration::from_secs(30);

fn ours(name: &str, ip_version: u8) -> bool {
    name.starts_with(&format!("cali{ip_version}"))
}

fn temp_name(name: &str) -> String {
    // cali40<id> → cali4t<id>: same length, never a live name.
    let mut t: String = name.chars().take(5).collect();
    t.push('t');
    t.extend(name.chars().skip(6));
    t
}

impl IpSets {
    pub fn new(ip_version: u8) -> IpSets {
        IpSets {
            ip_version,
            desired: HashMap::new(),
            kernel: None,
            dirty_sets: BTreeSet::new(),
            dirty_members: HashMap::new(),
            deletion_retry: None,
        }
    }

    fn family(&self) -> &'static str {
        if self.ip_version == 6 {
            "inet6"
        } else {
            "inet"
        }
    }

    /// Sets a whole set.
    pub fn replace(
        &mut self,
        name: &str,
        set_type: SetType,
        members: impl IntoIterator<Item = String>,
    ) {
        let set = Set {
            set_type,
            members: members.into_iter().map(|m| canonical_member(&m)).collect(),
        };
        if self.desired.get(name) == Some(&set) {
            return;
        }
        self.desired.insert(name.to_string(), set);
        self.dirty_members.remove(name);
        self.dirty_sets.insert(name.to_string());
    }

    /// Adds or removes one member (`present` says which) of a set that exists.
    pub fn set_member(&mut self, name: &str, member: &str, present: bool) {
        let m = canonical_member(member);
        let Some(set) = self.desired.get_mut(name) else {
            return;
        };
        let changed = if present {
            set.members.insert(m.clone())
        } else {
            set.members.remove(&m)
        };
        if changed && !self.dirty_sets.contains(name) {
            self.dirty_members
                .entry(name.to_string())
                .or_default()
                .insert(m);
        }
    }

    pub fn remove(&mut self, name: &str) {
        if self.desired.remove(name).is_some() {
            self.dirty_members.remove(name);
            self.dirty_sets.insert(name.to_string());
        }
    }

    pub fn contains_set(&self, name: &str) -> bool {
        self.desired.contains_key(name)
    }

    pub fn set_names(&self) -> impl Iterator<Item = &String> {
        self.desired.keys()
    }

    pub fn len(&self) -> usize {
        self.desired.len()
    }

    pub fn is_empty(&self) -> bool {
        self.desired.is_empty()
    }

    /// Reads the kernel again on the next apply.
    pub fn invalidate(&mut self) {
        self.kernel = None;
    }

    pub fn needs_apply(&self) -> bool {
        self.kernel.is_none()
            || !self.dirty_sets.is_empty()
            || !self.dirty_members.is_empty()
            || self
                .deletion_retry
                .is_some_and(|(at, _)| Instant::now() >= at)
    }

    /// When sets the kernel still held should be destroyed again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.deletion_retry.map(|(at, _)| at)
    }

    fn read(&mut self, exec: &dyn Exec) -> Result<(), IpSetError> {
        let out = exec
            .run("ipset", &["save"], None)
            .map_err(|source| IpSetError::Read {
                ip_version: self.ip_version,
                source,
            })?;
        let mut kernel: HashMap<String, Set> = HashMap::new();
        for line in out.lines() {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some("create"), Some(name), Some(t)) if ours(name, self.ip_version) => {
                    // A set of a type we do not write is replaced.
                    let set_type = SetType::parse(t).unwrap_or(SetType::Net);
                    let members = HashSet::new();
                    kernel.insert(name.to_string(), Set { set_type, members });
                    if SetType::parse(t).is_none() {
                        self.dirty_sets.insert(name.to_string());
                    }
                }
                (Some("add"), Some(name), Some(m)) if ours(name, self.ip_version) => {
                    if let Some(s) = kernel.get_mut(name) {
                        s.members.insert(canonical_member(m));
                    }
                }
                _ => {}
            }
        }
        for (name, set) in &kernel {
            if self.desired.get(name) != Some(set) {
                self.dirty_sets.insert(name.clone());
            }
        }
        for name in self.desired.keys() {
            if !kernel.contains_key(name) {
                self.dirty_sets.insert(name.clone());
            }
        }
        self.dirty_members
            .retain(|name, _| !self.dirty_sets.contains(name));
        self.kernel = Some(kernel);
        Ok(())
    }

    /// Creates and fills sets and applies member changes; deletions wait for
    /// [`IpSets::apply_deletions`].
    pub fn apply_updates(&mut self, exec: &dyn Exec) -> Result<IpSetStats, IpSetError> {
        if self.kernel.is_none() {
            self.read(exec)?;
        }
        let r = self.write_updates(exec);
        if r.is_err() {
            self.kernel = None;
        }
        r
    }

    fn write_updates(&mut self, exec: &dyn Exec) -> Result<IpSetStats, IpSetError> {
        let mut stats = IpSetStats::default();
        let Some(kernel) = self.kernel.as_ref() else {
            return Ok(stats);
        };
        let mut script = String::new();
        let mut written: Vec<String> = Vec::new();
        let family = self.family();
        for name in &self.dirty_sets {
            let Some(want) = self.desired.get(name) else {
                continue;
            };
            let create = |s: &mut String, n: &str| {
                let _ = writeln!(
                    s,
                    "create {n} {} family {family} maxelem {MAX_SET_SIZE}",
                    want.set_type.as_str()
                );
            };
            match kernel.get(name) {
                None => {
                    create(&mut script, name);
                    for m in &want.members {
                        let _ = writeln!(script, "add {name} {m}");
                    }
                }
                Some(have) if have == want => continue,
                Some(have) => {
                    let adds: Vec<&String> = want.members.difference(&have.members).collect();
                    let dels: Vec<&String> = have.members.difference(&want.members).collect();
                    if have.set_type != want.set_type
                        || adds.len() + dels.len() > want.members.len() / 2 + 16
                    {
                        // Build aside and swap: the rules see the old or the new set, never a
                        // half-written one.
                        let tmp = temp_name(name);
                        if kernel.contains_key(&tmp) {
                            // Left by an interrupted swap.
                            let _ = writeln!(script, "destroy {tmp}");
                        }
                        create(&mut script, &tmp);
                        for m in &want.members {
                            let _ = writeln!(script, "add {tmp} {m}");
                        }
                        let _ = writeln!(script, "swap {tmp} {name}");
                        let _ = writeln!(script, "destroy {tmp}");
                    } else {
                        for m in dels {
                            let _ = writeln!(script, "del {name} {m}");
                        }
                        for m in adds {
                            let _ = writeln!(script, "add {name} {m}");
                        }
                    }
                }
            }
            written.push(name.clone());
        }
        for (name, members) in &self.dirty_members {
            let (Some(want), Some(have)) = (self.desired.get(name), kernel.get(name)) else {
                continue;
            };
            for m in members {
                match (want.members.contains(m), have.members.contains(m)) {
                    (true, false) => {
                        let _ = writeln!(script, "add {name} {m}");
                        stats.members_changed += 1;
                    }
                    (false, true) => {
                        let _ = writeln!(script, "del {name} {m}");
                        stats.members_changed += 1;
                    }
                    _ => {}
                }
            }
        }
        if !script.is_empty() {
            exec.run("ipset", &["restore", "-exist"], Some(script.as_bytes()))
                .map_err(|source| IpSetError::Write {
                    ip_version: self.ip_version,
                    source,
                })?;
        }
        let Some(kernel) = self.kernel.as_mut() else {
            return Ok(stats);
        };
        for name in &written {
            if let Some(want) = self.desired.get(name) {
                kernel.insert(name.clone(), want.clone());
            }
            kernel.remove(&temp_name(name));
        }
        for (name, members) in std::mem::take(&mut self.dirty_members) {
            if let (Some(want), Some(have)) = (self.desired.get(&name), kernel.get_mut(&name)) {
                for m in members {
                    if want.members.contains(&m) {
                        have.members.insert(m);
                    } else {
                        have.members.remove(&m);
                    }
                }
            }
        }
        stats.sets_written = written.len();
        self.dirty_sets.retain(|n| !self.desired.contains_key(n));
        Ok(stats)
    }

    /// Destroys the sets no one wants, once the rules no longer use them. The kernel lets
    /// a set go only after the rules that used it are freed, one RCU grace period after the
    /// transaction that removed them, so sets that just fell out of use are destroyed on a
    /// later pass ([`FIRST_DELETION_RETRY`] later), and a set still held is tried again then.
    pub fn apply_deletions(&mut self, exec: &dyn Exec) -> IpSetStats {
        self.dirty_sets.retain(|n| self.desired.contains_key(n));
        match self.deletion_retry {
            Some((at, _)) if Instant::now() >= at => self.destroy_unwanted(exec),
            Some(_) => IpSetStats::default(),
            None => {
                if self.unwanted().next().is_some() {
                    self.deletion_retry =
                        Some((Instant::now() + FIRST_DELETION_RETRY, FIRST_DELETION_RETRY));
                }
                IpSetStats::default()
            }
        }
    }

    fn unwanted(&self) -> impl Iterator<Item = &String> {
        self.kernel
            .iter()
            .flat_map(|k| k.keys())
            .filter(|n| !self.desired.contains_key(*n))
    }

    /// Destroys every set no one wants now; those the kernel still holds are retried later.
    pub fn destroy_unwanted(&mut self, exec: &dyn Exec) -> IpSetStats {
        let mut stats = IpSetStats::default();
        let gone: Vec<String> = self.unwanted().cloned().collect();
        let wait = self.deletion_retry.map(|(_, w)| w);
        let mut held = 0;
        for name in gone {
            match exec.run("ipset", &["destroy", &name], None) {
                Ok(_) => {
                    if let Some(k) = self.kernel.as_mut() {
                        k.remove(&name);
                    }
                    stats.sets_deleted += 1;
                }
                Err(e) => {
                    held += 1;
                    if wait.is_some_and(|w| w >= DELETION_RETRY_WARN) {
                        tracing::warn!(set = %name, error = %e, "cannot destroy an IP set; something else still uses it; will retry");
                    } else {
                        tracing::debug!(set = %name, error = %e, "IP set still held by the kernel; will retry");
                    }
                }
            }
        }
        self.deletion_retry = (held > 0).then(|| {
            let w = wait.unwrap_or(FIRST_DELETION_RETRY);
            (Instant::now() + w, (w * 2).min(MAX_DELETION_RETRY))
        });
        stats
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dataplane::exec::fake::FakeExec;

    #[test]
    fn new_sets_are_created_full_and_members_change_one_by_one() {
        let exec = FakeExec::default();
        exec.set_output("ipset", "create cali40old hash:net family inet\nadd cali40old 1.1.1.1\ncreate other hash:net family inet\n");
        let mut s = IpSets::new(4);
        s.replace(
            "cali40s:a",
            SetType::Net,
            ["10.0.0.1/32".to_string(), "10.1.0.0/16".to_string()],
        );
        s.apply_updates(&exec).unwrap();
        let script = exec.inputs_to("ipset").last().unwrap().clone();
        assert!(script.contains("create cali40s:a hash:net family inet maxelem 1048576"));
        assert!(script.contains("add cali40s:a 10.0.0.1\n"));
        assert!(script.contains("add cali40s:a 10.1.0.0/16\n"));
        // The stale set goes after the rules, on a later pass.
        assert_eq!(s.apply_deletions(&exec).sets_deleted, 0);
        s.deletion_retry = Some((Instant::now(), FIRST_DELETION_RETRY));
        let st = s.apply_deletions(&exec);
        assert_eq!(st.sets_deleted, 1);
        let calls = exec.calls.lock().unwrap().clone();
        assert_eq!(calls.last().unwrap().1, vec!["destroy", "cali40old"]);
        drop(calls);
        // One member in, one out.
        s.set_member("cali40s:a", "10.0.0.2/32", true);
        s.set_member("cali40s:a", "10.0.0.1/32", false);
        let st = s.apply_updates(&exec).unwrap();
        assert_eq!(st.members_changed, 2);
        let script = exec.inputs_to("ipset").last().unwrap().clone();
        assert_eq!(script.lines().count(), 2);
        assert!(script.contains("add cali40s:a 10.0.0.2\n"));
        assert!(script.contains("del cali40s:a 10.0.0.1\n"));
    }

    #[test]
    fn drift_is_repaired_by_swapping_a_rebuilt_set() {
        let exec = FakeExec::default();
        exec.set_output("ipset", "");
        let mut s = IpSets::new(4);
        let members: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}")).collect();
        s.replace("cali40s:a", SetType::Net, members);
        s.apply_updates(&exec).unwrap();
        // Someone flushed it.
        exec.set_output("ipset", "create cali40s:a hash:net family inet\n");
        s.invalidate();
        s.apply_updates(&exec).unwrap();
        let script = exec.inputs_to("ipset").last().unwrap().clone();
        assert!(script.contains("create cali4ts:a hash:net"));
        assert!(script.contains("swap cali4ts:a cali40s:a"));
    }

    #[test]
    fn host_routes_print_as_addresses() {
        assert_eq!(canonical_member("10.0.0.1/32"), "10.0.0.1");
        assert_eq!(canonical_member("fd00::1/128"), "fd00::1");
        assert_eq!(canonical_member("10.0.0.0/24"), "10.0.0.0/24");
        assert_eq!(canonical_member("10.0.0.1,tcp:80"), "10.0.0.1,tcp:80");
    }

    #[test]
    fn a_set_the_kernel_still_holds_is_destroyed_on_a_later_pass_without_an_error() {
        let exec = FakeExec::default();
        exec.set_output("ipset", "create cali40gone hash:net family inet\n");
        let mut s = IpSets::new(4);
        s.apply_updates(&exec).unwrap();
        exec.failing.lock().unwrap().push("ipset".into());
        let st = s.apply_deletions(&exec);
        assert_eq!(st.sets_deleted, 0, "not in the pass that released it");
        assert!(s.next_retry().is_some(), "a later pass is scheduled");
        s.deletion_retry = Some((Instant::now(), FIRST_DELETION_RETRY));
        assert_eq!(s.apply_deletions(&exec).sets_deleted, 0, "still held");
        assert!(s.next_retry().is_some(), "retried again later");
        assert!(!s.needs_apply(), "not before the retry is due");
        s.deletion_retry = Some((Instant::now(), FIRST_DELETION_RETRY * 2));
        assert!(s.needs_apply());
        exec.failing.lock().unwrap().clear();
        assert_eq!(s.apply_deletions(&exec).sets_deleted, 1);
        assert!(s.next_retry().is_none());
        assert!(!s.needs_apply());
    }
}
