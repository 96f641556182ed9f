//! Durable storage of a server: the Raft log and vote ([`log`], a raft-log
//! WAL with fsync) and the state machine ([`state_machine`], sled) with its
//! snapshots ([`snapshot`]).
//!
//! Layout of a data directory:
//! ```text
//! DATA_DIR/raft-log/    WAL chunks: log entries, vote, commit index
//! DATA_DIR/state/       sled database: state rows + last-applied + membership
//! DATA_DIR/snapshots/   current.snap: the latest snapshot, fsynced
//! ```
//! This module owns sled and raft-log; nothing else touches them. It
//! implements openraft's storage traits, which is why openraft types appear
//! here as well as in [`crate::raft`].

// openraft's storage traits fix the error type to `StorageError`, which is large.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod crash;
pub mod log;
pub mod snapshot;
pub mod state_machine;
pub mod stats;

use std::path::Path;
use std::sync::Arc;

pub use log::LogStore;
use snapshot::SnapshotFile;
pub use state_machine::{Applied, StateMachineStore, StateReader};

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The Raft log could not be opened.
    #[error("opening the raft log in {path}")]
    Log {
        /// Its directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// sled could not be opened.
    #[error("opening the state database in {path}")]
    Sled {
        /// Its directory.
        path: String,
        /// The cause.
        #[source]
        source: sled::Error,
    },
    /// The snapshot directory could not be read.
    #[error("opening the snapshot in {path}")]
    Snapshot {
        /// Its directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The stored state machine or snapshot could not be loaded.
    #[error("loading the state machine")]
    StateMachine(#[source] crate::raft::StorageError),
}

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// Refuse to purge log entries not covered by a snapshot on disk (see
    /// [`LogStore::guard_purge`]). Always on in a server; off only for
    /// openraft's storage `Suite`, which purges logs without snapshots.
    pub guard_purge: bool,
    /// How long applied changes may wait before an apply writes them to
    /// sled (see [`state_machine`]; 50 ms, [`state_machine::STORE_AFTER`]).
    pub store_after: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 64 << 20,
            guard_purge: true,
            store_after: state_machine::STORE_AFTER,
        }
    }
}

/// Opens (or creates) the log store and state machine in `data_dir`.
pub fn open(data_dir: &Path, options: &StoreOptions) -> Result<(LogStore, StateMachineStore), OpenError> {
    let log_dir = data_dir.join("raft-log");
    let mut log = LogStore::open(&log_dir).map_err(|source| OpenError::Log {
        path: log_dir.display().to_string(),
        source,
    })?;
    let state_dir = data_dir.join("state");
    let sled_err = |source| OpenError::Sled {
        path: state_dir.display().to_string(),
        source,
    };
    let db = sled::Config::new()
        .path(&state_dir)
        .cache_capacity(options.cache_capacity_bytes)
        .open()
        .map_err(sled_err)?;
    let tree = db.open_tree("state_machine").map_err(sled_err)?;
    let snapshot_dir = data_dir.join("snapshots");
    let snapshots = SnapshotFile::open(&snapshot_dir).map_err(|source| OpenError::Snapshot {
        path: snapshot_dir.display().to_string(),
        source,
    })?;
    let snapshots = Arc::new(snapshots);
    if options.guard_purge {
        log.guard_purge(snapshots.durable());
    }
    let state_machine =
        StateMachineStore::open(tree, snapshots, options.store_after).map_err(OpenError::StateMachine)?;
    Ok((log, state_machine))
}

#[cfg(test)]
mod tests;
