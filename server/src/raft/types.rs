//! The openraft type configuration of rota.

use crate::state::{ApplyResult, Command};

/// A server's id in the cluster (`--node-id`).
pub type NodeId = u64;

/// What the cluster knows about a member: its advertised gRPC address.
/// This is what openraft hands back in `ForwardToLeader`.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// rota's Raft types: log entries carry [`Command`]s, applying one yields
    /// an [`ApplyResult`], snapshots are byte buffers (or the stored
    /// snapshot file, read when needed) streamed in chunks.
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::store::snapshot::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// Membership with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// A storage error (fatal to the node).
pub type StorageError = openraft::StorageError<NodeId>;
