//! openraft's storage `Suite` against the real store, plus what the Suite
//! does not check: that data survives reopening, and that a state machine
//! found behind its snapshot is rebuilt from it.

use std::collections::BTreeMap;

use chrono::Utc;
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use tempfile::TempDir;

use super::snapshot::SnapshotData;
use super::*;
use crate::raft::{Entry, LogId, StorageError, StoredMembership, TypeConfig, Vote};
use crate::state::tests::sample_spec;
use crate::state::{Command, Op};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        // The Suite purges logs without ever building a snapshot, so the
        // purge guard (tested below) is off here.
        let options = StoreOptions {
            guard_purge: false,
            ..StoreOptions::default()
        };
        let (log, sm) = open(dir.path(), &options).expect("store opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("storage suite passes");
}

/// Runs `open` right after a previous instance of the same directory was
/// dropped. sled and raft-log release their directory locks from background
/// threads as they wind down, so a lock conflict is waited out (bounded);
/// any other error fails the test at once, with its message.
async fn when_unlocked<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> T {
    until_unlocked(open)
        .await
        .unwrap_or_else(|e| panic!("reopening: {e:?}"))
}

/// What `open` gives once it no longer fails on a lock (or once 10 s have
/// passed).
async fn until_unlocked<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(e) if format!("{e:?}").to_lowercase().contains("lock") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            opened => return opened,
        }
    }
}

/// What opening the store in `dir` fails with (waiting out a lock of the
/// previous instance, as [`when_unlocked`] does); panics if it opens.
async fn open_refused(dir: &std::path::Path) -> String {
    match until_unlocked(|| open(dir, &StoreOptions::default())).await {
        Ok(_) => panic!("the store opened"),
        Err(e) => format!("{:#}", anyhow::Error::from(e)),
    }
}

/// Opens the store in `dir` again; see [`when_unlocked`].
async fn reopen(dir: &std::path::Path) -> (LogStore, StateMachineStore) {
    when_unlocked(|| open(dir, &StoreOptions::default())).await
}

/// The bytes of a snapshot built or received here (not read from a file).
fn bytes_of(data: &SnapshotData) -> &[u8] {
    match data {
        SnapshotData::Bytes(bytes) => bytes,
        SnapshotData::Stored { .. } => panic!("a stored snapshot, not bytes"),
    }
}

/// A snapshot built from `sm` now.
async fn built(sm: &mut StateMachineStore) -> crate::raft::Snapshot {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("a snapshot is built")
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
        // A clean stop: what is applied and not yet written is stored.
        sm.flush_handle().flush().await.expect("stores and flushes");
    }
    let (mut log, mut sm) = reopen(dir.path()).await;
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

/// `count` job creations from log index `first` on, one row each.
fn creations(first: u64, count: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|i| create_entry(1, i, &format!("job-{i}")))
        .collect()
}

#[tokio::test]
async fn applied_changes_are_stored_together_once_enough_rows_changed() {
    let dir = TempDir::new().expect("temp dir");
    // Never due by time here, so that only the row count decides.
    let options = StoreOptions {
        store_after: std::time::Duration::from_secs(3600),
        ..StoreOptions::default()
    };
    let rows = state_machine::STORE_ROWS as u64;
    {
        let (_log, mut sm) = open(dir.path(), &options).expect("opens");
        sm.apply(creations(1, 1)).await.expect("applies");
        assert_eq!(sm.stored_last_applied(), None, "one changed row waits");
        sm.apply(creations(2, rows - 2)).await.expect("applies");
        assert_eq!(
            sm.stored_last_applied(),
            None,
            "one row short of the count, across applies"
        );
        sm.apply(creations(rows, 1)).await.expect("applies");
        assert_eq!(
            sm.stored_last_applied(),
            Some(log_id(1, rows)),
            "the count reached: all written"
        );
        sm.apply(creations(rows + 1, 1)).await.expect("applies");
        assert_eq!(sm.stored_last_applied(), Some(log_id(1, rows)));
        // Killed here: the last apply is lost from sled, never torn.
    }
    let (_log, mut sm) = when_unlocked(|| open(dir.path(), &options)).await;
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, rows)), "back behind, at the last write");
    assert_eq!(sm.reader().read().state.job_count(), rows as usize);
    sm.apply(creations(rows + 1, 1)).await.expect("re-applies");
    sm.flush_handle().flush().await.expect("a clean stop stores the rest");
    assert_eq!(sm.stored_last_applied(), Some(log_id(1, rows + 1)));
}

#[tokio::test]
async fn applied_changes_are_stored_once_the_oldest_has_waited() {
    let dir = TempDir::new().expect("temp dir");
    let options = StoreOptions {
        store_after: std::time::Duration::ZERO,
        ..StoreOptions::default()
    };
    let (_log, mut sm) = open(dir.path(), &options).expect("opens");
    sm.apply(creations(1, 1)).await.expect("applies");
    assert_eq!(sm.stored_last_applied(), Some(log_id(1, 1)), "due at once");
}

#[tokio::test]
async fn a_snapshot_builder_builds_once() {
    let dir = TempDir::new().expect("temp dir");
    let (_log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("opens");
    sm.apply(vec![create_entry(1, 1, "a")]).await.expect("applies");
    let mut builder = sm.get_snapshot_builder().await;
    let first = builder.build_snapshot().await.expect("builds");
    assert_eq!(first.meta.last_log_id, Some(log_id(1, 1)));
    assert!(
        builder.build_snapshot().await.is_err(),
        "a second build fails instead of storing an empty snapshot under the same log id"
    );
    let (stored, data) = sm.reader().current_snapshot().expect("reads").expect("a snapshot");
    assert_eq!(stored.snapshot_id, first.meta.snapshot_id, "the first snapshot stays");
    assert_eq!(data, first.snapshot.into_bytes().expect("bytes"));
}

#[tokio::test]
async fn the_current_snapshot_is_read_when_sent_and_only_if_still_stored() {
    let dir = TempDir::new().expect("temp dir");
    let (_log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("opens");
    sm.apply(creations(1, 2)).await.expect("applies");
    let first = built(&mut sm).await;
    let current = sm.get_current_snapshot().await.expect("meta").expect("a snapshot");
    assert_eq!(current.meta, first.meta);
    assert!(matches!(*current.snapshot, SnapshotData::Stored { .. }), "not read yet");
    assert_eq!(current.snapshot.read().await.expect("reads"), bytes_of(&first.snapshot));

    let older = sm.get_current_snapshot().await.expect("meta").expect("a snapshot");
    sm.apply(creations(3, 1)).await.expect("applies");
    built(&mut sm).await;
    let replaced = older.snapshot.read().await.expect_err("a newer snapshot replaced it");
    assert!(replaced.to_string().contains("no longer the stored one"), "{replaced}");

    // Installed elsewhere as it is (openraft's Suite does this too).
    let other = TempDir::new().expect("temp dir");
    let (_l2, mut follower) = open(other.path(), &StoreOptions::default()).expect("opens");
    let current = sm.get_current_snapshot().await.expect("meta").expect("a snapshot");
    follower
        .install_snapshot(&current.meta, current.snapshot)
        .await
        .expect("installs");
    assert_eq!(follower.reader().read().state.job_count(), 3);
}

#[tokio::test]
async fn a_state_machine_behind_its_snapshot_is_rebuilt_from_it() {
    let dir = TempDir::new().expect("temp dir");
    let (_log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("opens");
    sm.apply(vec![create_entry(1, 1, "a"), create_entry(1, 2, "b")])
        .await
        .expect("applies");
    let snapshot = built(&mut sm).await;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 2)));
    sm.flush_handle().flush().await.expect("stores");
    assert_eq!(sm.stored_last_applied(), Some(log_id(1, 2)));

    // Simulate sled losing its recent writes: wipe the state tree behind the
    // state machine's back, keeping the durable snapshot.
    drop(sm);
    drop(_log);
    {
        let db = when_unlocked(|| sled::open(dir.path().join("state"))).await;
        db.open_tree("state_machine").expect("tree").clear().expect("clear");
        db.flush().expect("flush");
    }
    let (_log, mut sm) = reopen(dir.path()).await;
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
    let snapshot = built(&mut source).await;

    let target_dir = TempDir::new().expect("temp dir");
    let (_l2, mut target) = open(target_dir.path(), &StoreOptions::default()).expect("opens");
    target.apply(vec![create_entry(1, 1, "old")]).await.expect("applies");

    let mut corrupt = bytes_of(&snapshot.snapshot).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(
        target
            .install_snapshot(&snapshot.meta, Box::new(SnapshotData::Bytes(corrupt)))
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
    let (_l2, target) = reopen(target_dir.path()).await;
    assert_eq!(target.reader().read().state.job_count(), 2);
}

#[tokio::test]
async fn a_large_snapshot_is_installed_in_batches_and_an_install_stopped_halfway_is_redone() {
    let source_dir = TempDir::new().expect("temp dir");
    let (_l, mut source) = open(source_dir.path(), &StoreOptions::default()).expect("opens");
    let jobs = 12_000;
    source.apply(creations(1, jobs)).await.expect("applies");
    let snapshot = built(&mut source).await;
    assert!(
        bytes_of(&snapshot.snapshot).len() > 2 * state_machine::REPLACE_BATCH_BYTES,
        "the snapshot spans several batches ({} bytes)",
        bytes_of(&snapshot.snapshot).len()
    );

    let dir = TempDir::new().expect("temp dir");
    {
        let (_l, mut target) = open(dir.path(), &StoreOptions::default()).expect("opens");
        target.apply(vec![create_entry(1, 1, "old")]).await.expect("applies");
        target
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("installs");
        assert_eq!(target.reader().read().state.job_count(), jobs as usize);
        assert!(target.reader().read().state.job("old").is_none());
        assert_eq!(target.stored_last_applied(), Some(log_id(1, jobs)));
    }

    // Stopped halfway through replacing: the marker set, half the rows not
    // written yet. (The replacement also drops the last-applied id; it is
    // kept here, so that the marker alone must make the store rebuild.)
    {
        let db = when_unlocked(|| sled::open(dir.path().join("state"))).await;
        let tree = db.open_tree("state_machine").expect("tree");
        tree.insert(state_machine::REPLACING_KEY, &b"null"[..]).expect("marks");
        tree.insert(b"d/job/stale", &b"{}"[..])
            .expect("an old row the snapshot lacks");
        let rows: Vec<_> = tree
            .scan_prefix(b"d/")
            .keys()
            .step_by(2)
            .collect::<Result<_, _>>()
            .expect("keys");
        assert!(rows.len() >= jobs as usize / 2);
        for key in rows {
            tree.remove(key).expect("removes");
        }
        db.flush().expect("flush");
    }
    let (_l, target) = reopen(dir.path()).await;
    assert_eq!(
        target.reader().read().state.job_count(),
        jobs as usize,
        "rebuilt from the stored snapshot"
    );
    assert_eq!(target.stored_last_applied(), Some(log_id(1, jobs)));
    drop(target);
    drop(_l);
    let db = when_unlocked(|| sled::open(dir.path().join("state"))).await;
    let tree = db.open_tree("state_machine").expect("tree");
    assert!(!tree.contains_key(state_machine::REPLACING_KEY).expect("reads"), "done");
    assert!(!tree.contains_key(b"d/job/stale").expect("reads"), "old rows removed");
    assert_eq!(tree.scan_prefix(b"d/").count(), jobs as usize);
}

/// Marks the stopped store in `dir` as being replaced by a snapshot up to
/// `replacing`, as an install stopped halfway leaves it.
async fn mark_replacing(dir: &std::path::Path, replacing: Option<LogId>) {
    let db = when_unlocked(|| sled::open(dir.join("state"))).await;
    let tree = db.open_tree("state_machine").expect("tree");
    let value = serde_json::to_vec(&replacing).expect("encodes");
    tree.insert(state_machine::REPLACING_KEY, value).expect("marks");
    db.flush().expect("flush");
}

#[tokio::test]
async fn a_state_machine_torn_by_a_snapshot_no_longer_stored_refuses_to_open() {
    let dir = TempDir::new().expect("temp dir");
    {
        let (_l, mut sm) = open(dir.path(), &StoreOptions::default()).expect("opens");
        sm.apply(creations(1, 3)).await.expect("applies");
        sm.flush_handle().flush().await.expect("stores");
    }
    mark_replacing(dir.path(), None).await;
    let refused = open_refused(dir.path()).await;
    assert!(refused.contains("no longer stored"), "no snapshot at all: {refused}");

    let dir = TempDir::new().expect("temp dir");
    {
        let (_l, mut sm) = open(dir.path(), &StoreOptions::default()).expect("opens");
        sm.apply(creations(1, 3)).await.expect("applies");
        let snapshot = built(&mut sm).await;
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));
        sm.apply(creations(4, 1)).await.expect("applies");
        sm.flush_handle().flush().await.expect("stores");
    }
    mark_replacing(dir.path(), Some(log_id(1, 9))).await;
    let refused = open_refused(dir.path()).await;
    assert!(refused.contains("no longer stored"), "an older snapshot: {refused}");

    mark_replacing(dir.path(), Some(log_id(1, 3))).await;
    let (_l, sm) = reopen(dir.path()).await;
    assert_eq!(
        sm.reader().read().state.job_count(),
        3,
        "rebuilt from the snapshot that was replacing it (the log re-applies the rest)"
    );
}

#[tokio::test]
async fn the_log_is_purged_only_up_to_a_snapshot_on_disk() {
    let dir = TempDir::new().expect("temp dir");
    let (mut log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("opens");
    let entries: Vec<Entry> = (1..=6).map(|i| create_entry(1, i, &format!("j{i}"))).collect();
    log.blocking_append(entries.clone()).await.expect("appends");
    sm.apply(entries[..4].to_vec()).await.expect("applies");

    // As when openraft purges right after queueing a received snapshot:
    // nothing on disk covers index 4 yet, so the purge must wait.
    let mut purging = log.clone();
    let mut purge = tokio::spawn(async move { purging.purge(log_id(1, 4)).await });
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut purge)
            .await
            .is_err(),
        "purge went ahead without a snapshot on disk"
    );
    assert_eq!(log.get_log_state().await.expect("state").last_purged_log_id, None);

    // Once a snapshot covering index 4 is on disk, the purge completes.
    built(&mut sm).await;
    tokio::time::timeout(std::time::Duration::from_secs(10), purge)
        .await
        .expect("purge completes once covered")
        .expect("task")
        .expect("purged");
    assert_eq!(
        log.get_log_state().await.expect("state").last_purged_log_id,
        Some(log_id(1, 4))
    );
}

#[tokio::test]
async fn log_chunks_are_stored_apart_and_travel_in_snapshots() {
    use crate::state::logs::LogStream;
    use crate::state::{HeldAttempt, LogAppend, Placement, WorkerInfo};

    let dir = TempDir::new().expect("temp dir");
    let (_log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("opens");
    let mut spec = sample_spec("logged");
    spec.schedule.trigger = None;
    spec.constraints.clear();
    let command = |op| Entry {
        log_id: log_id(1, 0),
        payload: EntryPayload::Normal(Command { now: Utc::now(), op }),
    };
    let mut entries = vec![
        command(Op::CreateJob { uid: "u".into(), spec }),
        command(Op::RegisterWorker {
            worker: "w".into(),
            info: WorkerInfo {
                capacity: crate::state::run::Capacity {
                    slots: 1,
                    ..Default::default()
                },
                drivers: [crate::state::job::Driver::Docker].into(),
                ..Default::default()
            },
            held: Vec::<HeldAttempt>::new(),
        }),
        command(Op::TriggerRun {
            job: "logged".into(),
            request_id: "r".into(),
            params: Default::default(),
            force: false,
            trace: None,
        }),
    ];
    for (i, entry) in entries.iter_mut().enumerate() {
        entry.log_id = log_id(1, i as u64 + 1);
    }
    sm.apply(entries).await.expect("applies");
    let run_id = sm
        .reader()
        .read()
        .state
        .runs_after(None)
        .next()
        .expect("a run")
        .id
        .clone();
    let mut assign = command(Op::Assign {
        placements: vec![Placement {
            run: run_id.clone(),
            worker: "w".into(),
        }],
    });
    assign.log_id = log_id(1, 4);
    let mut logs = command(Op::AppendLogs {
        worker: "w".into(),
        run: run_id.clone(),
        epoch: 4,
        chunks: vec![LogAppend {
            offset: 0,
            stream: LogStream::Stderr,
            data: b"compiling\n".to_vec(),
        }],
    });
    logs.log_id = log_id(1, 5);
    let answers = sm.apply(vec![assign, logs]).await.expect("applies");
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");

    let chunks = sm.reader().log_chunks(&run_id, 0, 10).expect("reads");
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        (chunks[0].stream, chunks[0].data.as_slice()),
        (LogStream::Stderr, b"compiling\n".as_slice())
    );

    // A snapshot carries the chunks to another server.
    let snapshot = built(&mut sm).await;
    let other = TempDir::new().expect("temp dir");
    let (_l2, mut target) = open(other.path(), &StoreOptions::default()).expect("opens");
    target
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("installs");
    let copied = target.reader().log_chunks(&run_id, 0, 10).expect("reads");
    assert_eq!(copied, chunks);
    assert_eq!(
        target.reader().read().state.run(&run_id).map(|r| r.log.kept_bytes),
        Some(10)
    );
}

#[tokio::test]
async fn a_backup_restores_into_an_empty_store_repeatably_and_never_over_another_state() {
    // A backup of a store holding two jobs, applied up to (3, 7).
    let source = TempDir::new().expect("temp dir");
    let (_log, mut sm) = open(source.path(), &StoreOptions::default()).expect("opens");
    sm.apply(vec![create_entry(3, 6, "a"), create_entry(3, 7, "b")])
        .await
        .expect("applies");
    let snapshot = built(&mut sm).await;
    let file = backup::encode(&snapshot.meta, &snapshot.snapshot.into_bytes().expect("bytes")).expect("backup");
    let members: BTreeMap<u64, crate::raft::Node> = (1..=3)
        .map(|id| {
            (
                id,
                crate::raft::Node {
                    addr: format!("10.0.0.{id}:7400"),
                },
            )
        })
        .collect();

    let target = TempDir::new().expect("temp dir");
    let (mut log, mut sm) = open(target.path(), &StoreOptions::default()).expect("opens");
    let restored = backup::restore(&mut log, &mut sm, file.clone(), 2, members.clone())
        .await
        .expect("restores");
    assert_eq!((restored.last_index, restored.last_term), (7, 3));
    // Again with the same file (as after a crash midway): the same result.
    backup::restore(&mut log, &mut sm, file.clone(), 2, members.clone())
        .await
        .expect("restores again");
    drop((log, sm));
    let (mut log, mut sm) = reopen(target.path()).await;
    let (applied, membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(3, 7)));
    assert_eq!(
        membership.membership().voter_ids().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "the new cluster's members"
    );
    assert_eq!(sm.reader().read().state.job_count(), 2);
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(log_id(3, 7)), Some(log_id(3, 7)))
    );
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 2)));

    // Not over another state, nor for a node outside the members.
    let other = TempDir::new().expect("temp dir");
    let (mut log, mut sm) = open(other.path(), &StoreOptions::default()).expect("opens");
    sm.apply(vec![create_entry(1, 1, "c")]).await.expect("applies");
    let refused = backup::restore(&mut log, &mut sm, file.clone(), 2, members.clone()).await;
    assert!(refused.expect_err("refused").contains("already holds"));
    let refused = backup::restore(&mut log, &mut sm, file.clone(), 9, members).await;
    assert!(refused.expect_err("refused").contains("not among"));
}
