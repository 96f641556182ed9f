//! Backup files: a snapshot's metadata and data in one self-checking file,
//! written by `ClusterService.SaveSnapshot` and read by `--restore-from`.
//!
//! Layout: the magic line `ROTA-BACKUP-1\n`, the metadata (JSON) and the
//! data, each after its big-endian `u64` length, then a CRC-32 of all the
//! bytes before it.

use std::collections::BTreeMap;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{Membership, StoredMembership};

use super::snapshot::SnapshotData;
use super::{LogStore, StateMachineStore};
use crate::raft::{Node, NodeId, SnapshotMeta, Vote};

const MAGIC: &[u8] = b"ROTA-BACKUP-1\n";

/// Encodes a backup file of a snapshot.
pub fn encode(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, String> {
    let meta = serde_json::to_vec(meta).map_err(|e| format!("encoding the snapshot's metadata: {e}"))?;
    let mut file = Vec::with_capacity(MAGIC.len() + 16 + meta.len() + data.len() + 4);
    file.extend_from_slice(MAGIC);
    for part in [&meta[..], data] {
        file.extend_from_slice(&(part.len() as u64).to_be_bytes());
        file.extend_from_slice(part);
    }
    let crc = crc32fast::hash(&file);
    file.extend_from_slice(&crc.to_be_bytes());
    Ok(file)
}

/// Decodes and checks a backup file: its metadata and snapshot data (the
/// file's own buffer, with the data moved to its front: a backup can be
/// large, and a second buffer would double it).
pub fn decode(mut file: Vec<u8>) -> Result<(SnapshotMeta, Vec<u8>), String> {
    let not_a_backup = "not a rota backup file (made by `rotactl cluster snapshot save`)";
    if !file.starts_with(MAGIC) {
        return Err(not_a_backup.into());
    }
    let (content, crc) = file
        .len()
        .checked_sub(4)
        .filter(|&at| at >= MAGIC.len())
        .map(|at| file.split_at(at))
        .ok_or("the backup file is truncated")?;
    let expected = u32::from_be_bytes(crc.try_into().map_err(|_| "the backup file is truncated")?);
    if crc32fast::hash(content) != expected {
        return Err("the backup file is damaged (checksum mismatch)".into());
    }
    let mut rest = content.strip_prefix(MAGIC).ok_or(not_a_backup)?;
    let mut part = || -> Result<&[u8], String> {
        let (len, tail) = rest.split_at_checked(8).ok_or("the backup file is truncated")?;
        let len = usize::try_from(u64::from_be_bytes(len.try_into().map_err(|_| "truncated")?))
            .map_err(|_| "the backup file is damaged (a length is too large)")?;
        let (value, tail) = tail.split_at_checked(len).ok_or("the backup file is truncated")?;
        rest = tail;
        Ok(value)
    };
    let meta = part()?;
    let meta: SnapshotMeta =
        serde_json::from_slice(meta).map_err(|e| format!("the backup file's metadata is damaged: {e}"))?;
    let data = part()?;
    if !rest.is_empty() {
        return Err("the backup file has trailing bytes".into());
    }
    let start = data.as_ptr() as usize - file.as_ptr() as usize;
    let end = start + data.len();
    file.truncate(end);
    file.drain(..start);
    Ok((meta, file))
}

/// What a restore put in place.
#[derive(Debug)]
pub struct Restored {
    /// The last log position of the backed-up cluster; the new cluster's log
    /// continues after it.
    pub last_index: u64,
    /// Its term.
    pub last_term: u64,
}

/// Restores a backup into the empty stores of a server that will be `id` in
/// a new cluster of `members`: the snapshot becomes its state machine and
/// current snapshot, with the new membership; its log starts after the
/// snapshot; its vote is in the snapshot's term, so that its elections start
/// after it. Every server of the new cluster is restored from the same file.
pub async fn restore(
    log: &mut LogStore,
    state_machine: &mut StateMachineStore,
    file: Vec<u8>,
    id: NodeId,
    members: BTreeMap<NodeId, Node>,
) -> Result<Restored, String> {
    if !members.contains_key(&id) {
        return Err(format!(
            "restore_from: node {id} is not among the initial_cluster members"
        ));
    }
    let (meta, data) = decode(file).map_err(|e| format!("restore_from: {e}"))?;
    let Some(last) = meta.last_log_id else {
        return Err("restore_from: the backup holds an empty snapshot".into());
    };
    let log_state = log.get_log_state().await.map_err(|e| e.to_string())?;
    let (applied, _) = state_machine.applied_state().await.map_err(|e| e.to_string())?;
    if log_state.last_log_id.is_some_and(|id| id != last) || applied.is_some_and(|id| id != last) {
        return Err(
            "restore_from: the data dir already holds a cluster's state; restore into an empty data dir".into(),
        );
    }
    // A restore interrupted after installing the snapshot (the vote, saved
    // last, marks it done) resumes here with the same file.
    let voters = members.keys().copied().collect::<std::collections::BTreeSet<_>>();
    let membership = Membership::new(vec![voters], members);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("restored-{}", meta.snapshot_id),
    };
    if applied.is_none() {
        state_machine
            .install_snapshot(&meta, Box::new(SnapshotData::Bytes(data)))
            .await
            .map_err(|e| format!("restore_from: installing the snapshot: {e}"))?;
    }
    log.purge(last)
        .await
        .map_err(|e| format!("restore_from: starting the log after the snapshot: {e}"))?;
    log.save_vote(&Vote::new(last.leader_id.term, id))
        .await
        .map_err(|e| format!("restore_from: saving the vote: {e}"))?;
    Ok(Restored {
        last_index: last.index,
        last_term: last.leader_id.term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_round_trips_and_damage_is_refused() {
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "s".into(),
        };
        let file = encode(&meta, b"rows").expect("encode");
        let (decoded, data) = decode(file.clone()).expect("decode");
        assert_eq!((decoded.snapshot_id.as_str(), data.as_slice()), ("s", &b"rows"[..]));
        let mut damaged = file.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 1;
        assert!(decode(damaged).expect_err("damaged").contains("checksum"));
        assert!(decode(file[..file.len() - 5].to_vec()).is_err(), "truncated");
        assert!(
            decode(b"hello".to_vec())
                .expect_err("not a backup")
                .contains("not a rota backup")
        );
        assert!(decode(Vec::new()).is_err());
    }
}
