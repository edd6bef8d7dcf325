//! What can go wrong in IPAM, with the detail a caller needs to fix it.

use std::net::IpAddr;

use calico_datastore::DatastoreError;
use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Datastore(#[from] DatastoreError),

    #[error(
        "no configured Calico IPv{version} pools for node {node}: create an IPPool whose nodeSelector matches it"
    )]
    NoPools { version: u8, node: String },

    #[error(
        "no IPv{version} pool for node {node} allows {use_} addresses: add {use_} to a pool's allowedUses"
    )]
    NoPoolsForUse {
        version: u8,
        node: String,
        use_: String,
    },

    #[error("IP pool {pool:?} does not exist: name an existing pool (by name or CIDR)")]
    UnknownPool { pool: String },

    #[error("IP pool {pool:?} is disabled: enable it or use another pool")]
    PoolDisabled { pool: String },

    #[error("{ip} is not in any enabled IP pool")]
    NotInAnyPool { ip: IpAddr },

    #[error("IP pool {pool:?} does not allow {use_} addresses")]
    UseNotAllowed { pool: String, use_: String },

    #[error("{ip} is reserved by an IPReservation and is never handed out")]
    Reserved { ip: IpAddr },

    #[error("{ip} is already in use{}", handle.as_ref().map(|h| format!(" by handle {h:?}")).unwrap_or_default())]
    InUse { ip: IpAddr, handle: Option<String> },

    #[error(
        "cannot allocate a new IPAM block for node {node}: it already has {limit} blocks, the per-host limit (IPAMConfiguration maxBlocksPerHost)"
    )]
    BlockLimit { node: String, limit: u32 },

    #[error(
        "block {block} belongs to {owner} and strict affinity is enabled, so node {node} cannot use it"
    )]
    StrictAffinity {
        block: IpNet,
        owner: String,
        node: String,
    },

    #[error("invalid {field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },

    #[error(
        "{operation}: gave up after {attempts} attempts because of concurrent changes; try again"
    )]
    TooManyRetries {
        operation: &'static str,
        attempts: usize,
    },

    #[error("release of {ip} refused: {reason}")]
    ReleaseRefused { ip: IpAddr, reason: String },

    #[error(
        "stored IPAM data at {key} cannot be read: {reason}; `calicoctl ipam check` reports such problems"
    )]
    Corrupt { key: String, reason: String },

    #[error("IPAM configuration is invalid: {reason}")]
    InvalidConfig { reason: String },

    /// A fault inside this process (a bug); the request may or may not have taken effect,
    /// so the caller should release by handle before retrying.
    #[error("internal error: {reason}; release the handle and retry, and report this")]
    Internal { reason: String },
}

impl IpamError {
    /// Whether the same request may succeed later without any change.
    pub fn is_transient(&self) -> bool {
        match self {
            IpamError::Datastore(d) => d.is_transient(),
            IpamError::TooManyRetries { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T, E = IpamError> = std::result::Result<T, E>;
