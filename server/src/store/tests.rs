//! openraft's storage `Suite` against the real store, plus what the Suite
//! does not check: that data survives reopening, and that a state machine
//! found behind its snapshot is rebuilt from it.

use std::collections::BTreeMap;
use std::io::Cursor;

use chrono::Utc;
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use tempfile::TempDir;

use super::*;
use crate::raft::{Entry, LogId, StorageError, StoredMembership, TypeConfig, Vote};
use crate::state::tests::sample_spec;
use crate::state::{Command, Op};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm) = open(dir.path(), &StoreOptions::default()).expect("store opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("storage suite passes");
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn create_entry(term: u64, index: u64, name: &str) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command {
            now: Utc::now(),
            op: Op::CreateJob {
                uid: format!("uid-{index}"),
                spec: sample_spec(name),
            },
        }),
    }
}

#[tokio::test]
async fn log_vote_and_state_survive_reopening() {
    let dir = TempDir::new().expect("temp dir");
    let membership = Membership::new(
        vec![std::collections::BTreeSet::from([1])],
        BTreeMap::from([(1, Default::default())]),
    );
    {
        let (mut log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("opens");
        log.save_vote(&Vote::new_committed(3, 1)).await.expect("vote");
        let entries = vec![
            Entry {
                log_id: log_id(3, 1),
                payload: EntryPayload::Membership(membership.clone()),
            },
            create_entry(3, 2, "a"),
            create_entry(3, 3, "b"),
        ];
        log.blocking_append(entries.clone()).await.expect("appends");
        let answers = sm.apply(entries).await.expect("applies");
        assert_eq!(answers.len(), 3, "one answer per entry, membership included");
    }
    let (mut log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("reopens");
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new_committed(3, 1)));
    let entries = log.try_get_log_entries(1..4).await.expect("entries");
    assert_eq!(entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), [1, 2, 3]);
    let (applied, stored_membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(3, 3)));
    assert_eq!(stored_membership, StoredMembership::new(Some(log_id(3, 1)), membership));
    let reader = sm.reader();
    assert_eq!(reader.read().state.job_count(), 2);
    assert!(reader.read().state.job("b").is_some());
}

#[tokio::test]
async fn a_state_machine_behind_its_snapshot_is_rebuilt_from_it() {
    let dir = TempDir::new().expect("temp dir");
    let (_log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("opens");
    sm.apply(vec![create_entry(1, 1, "a"), create_entry(1, 2, "b")])
        .await
        .expect("applies");
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 2)));

    // Simulate sled losing its recent writes: wipe the state tree behind the
    // state machine's back, keeping the durable snapshot.
    drop(sm);
    drop(_log);
    {
        let db = sled::open(dir.path().join("state")).expect("sled");
        db.open_tree("state_machine").expect("tree").clear().expect("clear");
        db.flush().expect("flush");
    }
    let (_log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("reopens");
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 2)));
    assert_eq!(sm.reader().read().state.job_count(), 2);
}

#[tokio::test]
async fn installed_snapshot_replaces_everything_and_bad_data_is_refused() {
    let source_dir = TempDir::new().expect("temp dir");
    let (_l, mut source) = open(source_dir.path(), &StoreOptions::default()).expect("opens");
    source
        .apply(vec![create_entry(2, 1, "x"), create_entry(2, 2, "y")])
        .await
        .expect("applies");
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");

    let target_dir = TempDir::new().expect("temp dir");
    let (_l2, mut target) = open(target_dir.path(), &StoreOptions::default()).expect("opens");
    target.apply(vec![create_entry(1, 1, "old")]).await.expect("applies");

    let mut corrupt = snapshot.snapshot.get_ref().clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(
        target
            .install_snapshot(&snapshot.meta, Box::new(Cursor::new(corrupt)))
            .await
            .is_err(),
        "a corrupt snapshot is refused"
    );
    assert!(target.reader().read().state.job("old").is_some(), "and changes nothing");

    target
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("installs");
    let names: Vec<_> = target
        .reader()
        .read()
        .state
        .jobs_after(None)
        .map(|j| j.name.clone())
        .collect();
    assert_eq!(names, ["x", "y"], "old keys are removed");
    assert_eq!(target.reader().snapshot_index(), 2);
    let current = target.get_current_snapshot().await.expect("read").expect("present");
    assert_eq!(current.meta.last_log_id, Some(log_id(2, 2)));

    // And the installed state survives reopening.
    drop(target);
    drop(_l2);
    let (_l2, target) = open(target_dir.path(), &StoreOptions::default()).expect("reopens");
    assert_eq!(target.reader().read().state.job_count(), 2);
}
