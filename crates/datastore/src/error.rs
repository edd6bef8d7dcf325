//! The errors every backend reports, so callers can branch on them (retry on `Conflict`,
//! re-list on `Compacted`, back off on `Unavailable`).

use calico_api::ValidationError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatastoreError {
    #[error("{key} does not exist")]
    NotFound { key: String },

    #[error("{key} already exists; use update (or apply) to change it")]
    AlreadyExists { key: String },

    /// The revision a write was conditioned on is no longer current.
    #[error(
        "{key} was changed by someone else (expected revision {expected}, found {}); read it again and retry",
        actual.map_or_else(|| "none: it was deleted".to_string(), |r| r.to_string())
    )]
    Conflict {
        key: String,
        expected: i64,
        actual: Option<i64>,
    },

    /// A watch asked for history that has been compacted away; list again.
    #[error(
        "revision {requested} has been compacted (oldest kept: {compacted}); list again and watch from the list's revision"
    )]
    Compacted { requested: i64, compacted: i64 },

    #[error("{backend} is unavailable: {reason}")]
    Unavailable { backend: String, reason: String },

    /// The datastore refused the request for a reason retrying will not fix.
    #[error("{backend} rejected {operation} on {key}: {reason}")]
    Rejected {
        backend: String,
        operation: &'static str,
        key: String,
        reason: String,
    },

    /// The datastore is configured wrongly; retrying will not help.
    #[error("datastore configuration: {reason}")]
    Config { reason: String },

    /// A key that cannot be stored: an empty name, or a `/` inside a name or owner.
    #[error("{key:?} is not a valid key: {reason}")]
    InvalidKey { key: String, reason: String },

    #[error("{key} holds data that cannot be read: {reason}")]
    Corrupt { key: String, reason: String },

    #[error(transparent)]
    Invalid(#[from] ValidationError),

    /// A multi-key transaction that cannot be sent (a caller bug, not a data problem).
    #[error("transaction not sent: {reason}")]
    InvalidTxn { reason: String },

    /// A resource write that the datastore's consistency rules forbid (e.g. an overlapping
    /// IP pool, or changing an immutable field).
    #[error("{message}")]
    Forbidden { message: String },
}

impl DatastoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DatastoreError::Unavailable { .. } | DatastoreError::Conflict { .. }
        )
    }
}

pub type Result<T, E = DatastoreError> = std::result::Result<T, E>;
