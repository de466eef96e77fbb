//! What can go wrong in replication, and whether running it again can help.

use lifeboat_store::{BackendError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// Reading or writing one side failed; `side` says which ("source" or
    /// "destination"), since with two sites the operator needs to know where to look.
    #[error("{side} repository: {source}")]
    Store {
        side: Side,
        #[source]
        source: StoreError,
    },
    #[error(
        "source and destination are the same repository ({location}); replication needs a second repository at another site"
    )]
    SameRepository { location: String },
    #[error(
        "the destination {destination} is not a replica: it was not created as a copy of another repository, so its chunk ids differ from the source's"
    )]
    NotAReplica { destination: String },
    #[error(
        "the destination {destination} is a replica of another repository (id {replica_of}, made from {made_from}), not of the source {source_location}"
    )]
    ReplicaOfAnother {
        destination: String,
        replica_of: String,
        made_from: String,
        source_location: String,
    },
    /// Source data that fails verification is never copied.
    #[error(
        "the source's copy of snapshot {snapshot} ({vm}/{disk}) is damaged: {detail}; nothing of it was committed on the destination (run `verify` on the source)"
    )]
    SourceDamaged {
        snapshot: String,
        vm: String,
        disk: String,
        detail: String,
    },
}

/// Which side of a replication an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

impl ReplicateError {
    /// True when the same run, started again, may succeed (network, throttling).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplicateError::Store { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn source(e: impl Into<StoreError>) -> Self {
        ReplicateError::Store {
            side: Side::Source,
            source: e.into(),
        }
    }

    pub(crate) fn destination(e: impl Into<StoreError>) -> Self {
        ReplicateError::Store {
            side: Side::Destination,
            source: e.into(),
        }
    }
}

impl From<(Side, BackendError)> for ReplicateError {
    fn from((side, e): (Side, BackendError)) -> Self {
        ReplicateError::Store {
            side,
            source: e.into(),
        }
    }
}

pub type ReplicateResult<T> = Result<T, ReplicateError>;
