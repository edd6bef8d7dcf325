//! The rule tables and sets of one IP version, behind one interface whatever the backend:
//! iptables (four tables written with iptables-restore, sets with ipset) or native nftables
//! (one `calico` table holding the four layers, the sets and the dispatch maps).

use crate::generic::{Chain, Rule};
use crate::nftables::{NftError, NftTable};

use super::exec::Exec;
use super::ipsets::{IpSetError, IpSets, SetType};
use super::iptables::{Backend, Table, TableError};
use super::{ApplySummary, DataplaneConfig};

/// The four iptables tables (nftables layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableKind {
    Raw = 0,
    Mangle = 1,
    Filter = 2,
    Nat = 3,
}

impl TableKind {
    pub const ALL: [TableKind; 4] = [
        TableKind::Raw,
        TableKind::Mangle,
        TableKind::Filter,
        TableKind::Nat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TableKind::Raw => "raw",
            TableKind::Mangle => "mangle",
            TableKind::Filter => "filter",
            TableKind::Nat => "nat",
        }
    }

    pub fn from_name(s: &str) -> TableKind {
        match s {
            "raw" => TableKind::Raw,
            "mangle" => TableKind::Mangle,
            "nat" => TableKind::Nat,
            _ => TableKind::Filter,
        }
    }
}

#[derive(Debug)]
enum Tables {
    Iptables {
        /// Indexed by [`TableKind`], in the order they are written.
        tables: Box<[Table; 4]>,
        ipsets: Box<IpSets>,
    },
    Nft(Box<NftTable>),
}

/// A failure of either backend.
#[derive(Debug, thiserror::Error)]
pub enum FamilyError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    IpSet(#[from] IpSetError),
    #[error(transparent)]
    Nft(#[from] NftError),
}

/// One IP version's rules and sets.
#[derive(Debug)]
pub struct Family {
    pub v: u8,
    tables: Tables,
}

impl Family {
    pub fn new(v: u8, cfg: &DataplaneConfig) -> Family {
        let tables =
            if cfg.rules.nftables {
                Tables::Nft(Box::new(NftTable::new(v, cfg.features, cfg.insert_mode)))
            } else {
                Tables::Iptables {
                    tables: Box::new(TableKind::ALL.map(|k| {
                        Table::new(k.name(), v, cfg.backend, cfg.features, cfg.insert_mode)
                    })),
                    ipsets: Box::new(IpSets::new(v)),
                }
            };
        Family { v, tables }
    }

    pub fn is_nft(&self) -> bool {
        matches!(self.tables, Tables::Nft(_))
    }

    pub fn update_chain(&mut self, k: TableKind, c: Chain) {
        match &mut self.tables {
            Tables::Iptables { tables, .. } => tables[k as usize].update_chain(c),
            Tables::Nft(t) => t.update_chain(k.name(), c),
        }
    }

    pub fn update_chains(&mut self, k: TableKind, cs: impl IntoIterator<Item = Chain>) {
        for c in cs {
            self.update_chain(k, c);
        }
    }

    pub fn remove_chain(&mut self, k: TableKind, name: &str) {
        match &mut self.tables {
            Tables::Iptables { tables, .. } => tables[k as usize].remove_chain(name),
            Tables::Nft(t) => t.remove_chain(k.name(), name),
        }
    }

    pub fn set_hooks(
        &mut self,
        k: TableKind,
        kernel_chain: &str,
        insert: Vec<Rule>,
        append: Vec<Rule>,
    ) {
        match &mut self.tables {
            Tables::Iptables { tables, .. } => {
                tables[k as usize].set_hooks(kernel_chain, insert, append)
            }
            Tables::Nft(t) => t.set_hooks(k.name(), kernel_chain, insert, append),
        }
    }

    pub fn replace_set(
        &mut self,
        name: &str,
        t: SetType,
        members: impl IntoIterator<Item = String>,
    ) {
        match &mut self.tables {
            Tables::Iptables { ipsets, .. } => ipsets.replace(name, t, members),
            Tables::Nft(n) => n.replace_set(name, t, members),
        }
    }

    pub fn set_member(&mut self, name: &str, member: &str, present: bool) {
        match &mut self.tables {
            Tables::Iptables { ipsets, .. } => ipsets.set_member(name, member, present),
            Tables::Nft(n) => n.set_member(name, member, present),
        }
    }

    pub fn remove_set(&mut self, name: &str) {
        match &mut self.tables {
            Tables::Iptables { ipsets, .. } => ipsets.remove(name),
            Tables::Nft(n) => n.remove_set(name),
        }
    }

    /// A verdict map (nftables dispatch); iptables has none.
    pub fn replace_map(&mut self, k: TableKind, name: &str, entries: Vec<(String, String)>) {
        if let Tables::Nft(n) = &mut self.tables {
            n.replace_map(k.name(), name, entries);
        }
    }

    /// When IP sets the kernel still held should be destroyed again.
    pub fn next_retry(&self) -> Option<std::time::Instant> {
        match &self.tables {
            Tables::Iptables { ipsets, .. } => ipsets.next_retry(),
            Tables::Nft(_) => None,
        }
    }

    pub fn needs_apply(&self) -> bool {
        match &self.tables {
            Tables::Iptables { tables, ipsets } => {
                ipsets.needs_apply() || tables.iter().any(Table::needs_apply)
            }
            Tables::Nft(n) => n.needs_apply(),
        }
    }

    pub fn invalidate_tables(&mut self) {
        match &mut self.tables {
            Tables::Iptables { tables, .. } => tables.iter_mut().for_each(Table::invalidate),
            Tables::Nft(n) => n.invalidate(),
        }
    }

    pub fn invalidate_sets(&mut self) {
        match &mut self.tables {
            Tables::Iptables { ipsets, .. } => ipsets.invalidate(),
            Tables::Nft(n) => n.invalidate(),
        }
    }

    /// What must be in the kernel before routes change: the sets new rules will use.
    pub fn apply_sets(&mut self, exec: &dyn Exec, s: &mut ApplySummary) -> Result<(), FamilyError> {
        if let Tables::Iptables { ipsets, .. } = &mut self.tables {
            let st = ipsets.apply_updates(exec)?;
            s.sets_written += st.sets_written;
            s.members_changed += st.members_changed;
        }
        Ok(())
    }

    /// The rules, then the sets nothing uses any more.
    pub fn apply_rules(
        &mut self,
        exec: &dyn Exec,
        s: &mut ApplySummary,
    ) -> Result<(), FamilyError> {
        match &mut self.tables {
            Tables::Iptables { tables, ipsets } => {
                let st = super::iptables::apply_tables(&mut tables[..], exec)?;
                s.chains_written += st.chains_written;
                s.chains_deleted += st.chains_deleted;
                s.restores += st.restores;
                let st = ipsets.apply_deletions(exec);
                s.sets_deleted += st.sets_deleted;
            }
            Tables::Nft(n) => s.add_nft(&n.apply(exec)?),
        }
        Ok(())
    }

    /// Applies the rules of every family: with nftables all of them in one transaction,
    /// with iptables one family after the other (IPv4 first).
    pub fn apply_rules_all(
        families: &mut [Family],
        exec: &dyn Exec,
        s: &mut ApplySummary,
    ) -> Result<(), FamilyError> {
        if families.len() > 1 && families.iter().all(Family::is_nft) {
            let mut tables: Vec<&mut NftTable> = families
                .iter_mut()
                .filter_map(|f| match &mut f.tables {
                    Tables::Nft(n) => Some(n.as_mut()),
                    Tables::Iptables { .. } => None,
                })
                .collect();
            for st in crate::nftables::table::apply_together(&mut tables, exec)? {
                s.add_nft(&st);
            }
            return Ok(());
        }
        for f in families {
            f.apply_rules(exec, s)?;
        }
        Ok(())
    }

    pub fn chain_count(&self) -> usize {
        match &self.tables {
            Tables::Iptables { tables, .. } => tables.iter().map(|t| t.chain_names().count()).sum(),
            Tables::Nft(n) => n.chain_names().count(),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match &self.tables {
            Tables::Iptables { tables, .. } => match tables[0].backend() {
                Backend::Legacy => "iptables-legacy",
                Backend::Nft => "iptables-nft",
            },
            Tables::Nft(_) => "nftables",
        }
    }
}
