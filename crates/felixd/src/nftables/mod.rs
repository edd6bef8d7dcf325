//! The native nftables dataplane (Felix's `felix/nftables`): Calico's rules, IP sets and
//! workload dispatch in one nftables table per IP family, `ip calico` and `ip6 calico`.
//!
//! Why one table: nftables tables are independent namespaces with their own base chains
//! hooked into netfilter, so Calico owns its table outright instead of inserting hook rules
//! into shared kernel chains as with iptables. The iptables tables (filter, nat, mangle,
//! raw) become name prefixes ("layers") inside it: `filter-cali-FORWARD`, and the kernel
//! chains become base chains (`filter-FORWARD`, hook forward, priority filter).
//!
//! - [`render`]: the generic rule model as nft rule text, byte for byte Calico's, and
//!   Calico's per-rule hashes over it (so a node taken over from Calico keeps its rules);
//! - [`elements`]: IP set members (`10.0.0.1,tcp:8080`) as nft set elements;
//! - [`listing`]: what `nft -j list table` says the kernel holds;
//! - [`table`]: [`NftTable`], the table kept equal to what felixd wants, one atomic
//!   `nft -f -` transaction per update.

pub mod elements;
pub mod listing;
pub mod render;
pub mod table;

pub use table::{BASE_CHAINS, BaseChain, NftError, NftStats, NftTable, TABLE_NAME};
