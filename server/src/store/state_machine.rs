//! The state machine: the domain [`State`] in memory, persisted in sled.
//!
//! The whole state lives in memory (reads never touch the disk). Applied
//! changes are written to sled together: the rows changed since the last
//! write *and* the last-applied log id (and membership) in one atomic sled
//! batch, so the stored state always matches its stored last-applied index.
//! An apply writes when the oldest change not yet written has waited
//! [`STORE_AFTER`] (by default), when [`STORE_ROWS`] rows have changed, or
//! when a change is to a row kept only in storage (a log chunk, which
//! readers must find; written before readers see the apply); the shutdown
//! writes the rest. A row changed several times in between (a run going
//! from pending to finished) is encoded and written once. Time is looked at
//! only when entries are applied: a state machine that stops applying keeps
//! its last changes in memory until the next apply or the shutdown.
//!
//! sled is not fsynced here, deliberately: after a crash the state machine
//! may come back *behind* what it had applied (the applies not yet written,
//! fewer than [`STORE_ROWS`] rows' worth; sled syncs every 500 ms, and its
//! `flush` is not an fsync, see docs/architecture.md), never ahead, and
//! never torn by applies (a snapshot replacing the state is written in
//! several batches, marked, and redone on open if it was stopped halfway:
//! see `replace_all`). openraft then re-applies from the durable Raft
//! log. The log is only
//! purged up to a snapshot that is itself fsynced, and on open a state
//! machine found older than that snapshot is rebuilt from it; so no applied
//! effect is ever lost.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, StorageIOError};

use super::snapshot::{SnapshotData, SnapshotFile, decode_rows, encode_rows};
use crate::raft::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::state::logs::{self, LogChunk};
use crate::state::{ApplyResult, MEMORY_PREFIXES, Response, SharedRows, State};

/// sled key prefix of state rows.
const ROW_PREFIX: &[u8] = b"d/";
const LAST_APPLIED_KEY: &[u8] = b"m/last_applied";
const MEMBERSHIP_KEY: &[u8] = b"m/membership";
/// Present while a snapshot replaces the stored state, which is written in
/// bounded batches (one batch of a whole large state makes sled hold and
/// re-read every page at once): a state machine opened with it present is
/// torn, and is rebuilt from the stored snapshot.
pub(super) const REPLACING_KEY: &[u8] = b"m/replacing";
/// A snapshot replaces the stored state in sled batches of about this many
/// bytes.
pub(super) const REPLACE_BATCH_BYTES: usize = 4 << 20;

/// Applied changes are written to sled once the oldest has waited this long
/// (checked when entries are applied; the default of
/// [`super::StoreOptions::store_after`])...
pub const STORE_AFTER: Duration = Duration::from_millis(50);
/// ...or once this many rows have changed.
pub const STORE_ROWS: usize = 1024;

/// What of the applied state sled does not have yet. Whoever writes holds
/// its lock from taking the changes until sled has them, so writes are
/// never reordered.
#[derive(Debug, Clone, Copy, Default)]
enum Unstored {
    /// sled has everything applied.
    #[default]
    Nothing,
    /// Changes applied since this instant are not written yet.
    Since(Instant),
    /// A write failed after its changes were taken from the state (they are
    /// no longer marked changed): sled is not written again, as its
    /// last-applied index would then claim rows it lacks. The state machine
    /// refuses to apply; a restart re-applies from the log.
    Failed,
}

type SharedUnstored = Arc<Mutex<Unstored>>;

impl Unstored {
    /// The changes to write, in one batch; marks them failed until
    /// [`Unstored::write`] succeeds.
    fn take(&mut self, applied: &mut Applied) -> Result<sled::Batch, StorageError> {
        self.check()?;
        *self = Unstored::Failed;
        stored_batch(applied)
    }

    /// Takes the changes and writes them at once.
    fn store(&mut self, tree: &sled::Tree, applied: &mut Applied) -> Result<(), StorageError> {
        let batch = self.take(applied)?;
        self.write(tree, batch)
    }

    /// Writes a batch from [`Unstored::take`].
    fn write(&mut self, tree: &sled::Tree, batch: sled::Batch) -> Result<(), StorageError> {
        tree.apply_batch(batch).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        *self = Unstored::Nothing;
        Ok(())
    }

    /// Fails after a failed write.
    fn check(&self) -> Result<(), StorageError> {
        match self {
            Unstored::Failed => Err(sm_err(
                ErrorVerb::Write,
                io::Error::other("an earlier write of the state machine failed; restart to re-apply from the log"),
            )),
            _ => Ok(()),
        }
    }
}

/// The applied state, shared with readers (the API).
#[derive(Debug, Default, Clone)]
pub struct Applied {
    /// The domain state.
    pub state: State,
    /// The last log entry applied.
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
}

/// Read access to the applied state, for the API, the leader's loops and
/// status.
#[derive(Debug, Clone)]
pub struct StateReader {
    applied: Arc<RwLock<Applied>>,
    snapshots: Arc<SnapshotFile>,
    tree: sled::Tree,
    applied_index: watch::Sender<u64>,
}

impl StateReader {
    /// Locks the applied state for reading. Hold it briefly: applies wait.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means a panic while applying; the data is still the
        // last consistent state (apply mutates a clone-free State only through
        // `State::apply`, which does not panic), so keep serving it.
        self.applied.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the index of the last applied log entry: changes after every
    /// applied batch, so watchers re-read the state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    /// Up to `limit` stored log chunks of run `run_id` with sequence numbers
    /// at or after `from_seq`, in order.
    pub fn log_chunks(&self, run_id: &str, from_seq: u64, limit: usize) -> Result<Vec<LogChunk>, sled::Error> {
        let start = [ROW_PREFIX, logs::chunk_key(run_id, from_seq).as_bytes()].concat();
        let prefix = [ROW_PREFIX, logs::run_prefix(run_id).as_bytes()].concat();
        let mut chunks = Vec::new();
        for item in self.tree.range(start..) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) || chunks.len() == limit {
                break;
            }
            let key = String::from_utf8_lossy(&key[ROW_PREFIX.len()..]).into_owned();
            if let Some(chunk) = logs::decode_chunk(&key, &value) {
                chunks.push(chunk);
            }
        }
        Ok(chunks)
    }

    /// The snapshot stored on disk (the latest built or installed): its
    /// metadata and data.
    pub fn current_snapshot(&self) -> std::io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        self.snapshots.read()
    }

    /// Last log index covered by the stored snapshot (0 if none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshots
            .meta()
            .ok()
            .flatten()
            .and_then(|meta| meta.last_log_id)
            .map_or(0, |id| id.index)
    }
}

/// Writes the applied changes not yet stored and flushes the state database
/// (see the module docs on why this is not needed for safety; it only
/// spares a replay after a clean stop).
#[derive(Clone)]
pub struct FlushHandle {
    tree: sled::Tree,
    applied: Arc<RwLock<Applied>>,
    unstored: SharedUnstored,
}

impl FlushHandle {
    /// Stores what is applied, then writes sled's buffers out.
    pub async fn flush(&self) -> Result<(), StorageError> {
        {
            let mut unstored = lock_unstored(&self.unstored)?;
            unstored.check()?;
            if let Unstored::Since(_) = *unstored {
                unstored.store(&self.tree, &mut *write_applied(&self.applied)?)?;
            }
        }
        self.tree
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }
}

/// The sled-backed state machine handed to openraft.
pub struct StateMachineStore {
    tree: sled::Tree,
    applied: Arc<RwLock<Applied>>,
    snapshots: Arc<SnapshotFile>,
    applied_index: watch::Sender<u64>,
    unstored: SharedUnstored,
    store_after: Duration,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, openraft::AnyError::new(&e)).into()
}

fn snapshot_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(None), verb, openraft::AnyError::new(&e)).into()
}

impl StateMachineStore {
    /// Opens the state machine in `tree`, with its durable snapshot in
    /// `snapshots`. If the stored snapshot is newer than the stored state
    /// (sled lost its last writes), or a snapshot was replacing the stored
    /// state when the server stopped (its `m/replacing` key), the state is
    /// rebuilt from the stored snapshot.
    /// Applied changes are written at the latest `store_after` after the
    /// first of them (when a later apply finds them due).
    pub fn open(tree: sled::Tree, snapshots: Arc<SnapshotFile>, store_after: Duration) -> Result<Self, StorageError> {
        let replacing = tree.get(REPLACING_KEY).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let applied = if let Some(replacing) = replacing {
            let snapshot: Option<LogId> = decode(&replacing)?;
            tracing::warn!(
                ?snapshot,
                "a snapshot was replacing the state machine when the server stopped; replacing it again"
            );
            rebuild(&tree, &snapshots, snapshot)?
        } else {
            let applied = load(&tree)?;
            let snapshot = snapshots.meta().map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
            match snapshot.and_then(|meta| meta.last_log_id) {
                Some(snapshot) if Some(snapshot) > applied.last_applied => {
                    tracing::warn!(
                        state_machine = ?applied.last_applied,
                        ?snapshot,
                        "state machine is behind the stored snapshot; rebuilding it from the snapshot"
                    );
                    drop(applied);
                    rebuild(&tree, &snapshots, None)?
                }
                _ => applied,
            }
        };
        let last_index = applied.last_applied.map_or(0, |id| id.index);
        Ok(Self {
            tree,
            applied: Arc::new(RwLock::new(applied)),
            snapshots,
            applied_index: watch::Sender::new(last_index),
            unstored: Arc::default(),
            store_after,
        })
    }

    /// A reader of the applied state.
    pub fn reader(&self) -> StateReader {
        StateReader {
            applied: self.applied.clone(),
            snapshots: self.snapshots.clone(),
            tree: self.tree.clone(),
            applied_index: self.applied_index.clone(),
        }
    }

    fn announce(&self, last_applied: Option<LogId>) {
        self.applied_index.send_replace(last_applied.map_or(0, |id| id.index));
    }

    /// The last-applied log id sled holds (behind the applied one while
    /// changes wait to be written).
    #[cfg(test)]
    pub(crate) fn stored_last_applied(&self) -> Option<LogId> {
        let bytes = self.tree.get(LAST_APPLIED_KEY).expect("reads")?;
        decode(&bytes).expect("decodes")
    }

    /// A handle that stores what is applied and flushes the state
    /// database, for shutdown.
    pub fn flush_handle(&self) -> FlushHandle {
        FlushHandle {
            tree: self.tree.clone(),
            applied: self.applied.clone(),
            unstored: self.unstored.clone(),
        }
    }
}

fn write_applied(applied: &RwLock<Applied>) -> Result<std::sync::RwLockWriteGuard<'_, Applied>, StorageError> {
    applied
        .write()
        .map_err(|_| sm_err(ErrorVerb::Write, io::Error::other("state lock poisoned")))
}

fn lock_unstored(unstored: &Mutex<Unstored>) -> Result<MutexGuard<'_, Unstored>, StorageError> {
    unstored
        .lock()
        .map_err(|_| sm_err(ErrorVerb::Write, io::Error::other("state store lock poisoned")))
}

/// The rows changed since the last write, with the last-applied log id and
/// membership, as one atomic sled batch.
fn stored_batch(applied: &mut Applied) -> Result<sled::Batch, StorageError> {
    let mut batch = sled::Batch::default();
    for (key, value) in applied.state.take_changes().map_err(|e| sm_err(ErrorVerb::Write, e))? {
        let key = [ROW_PREFIX, key.as_bytes()].concat();
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
    }
    batch.insert(LAST_APPLIED_KEY, encode(&applied.last_applied)?);
    batch.insert(MEMBERSHIP_KEY, encode(&applied.membership)?);
    Ok(batch)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| sm_err(ErrorVerb::Read, e))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| sm_err(ErrorVerb::Write, e))
}

/// Loads the stored state machine.
fn load(tree: &sled::Tree) -> Result<Applied, StorageError> {
    // Streamed into the state, not collected first: with a long history the
    // rows are most of the memory a start needs.
    let mut failed = None;
    let rows = MEMORY_PREFIXES
        .iter()
        .flat_map(|prefix| tree.scan_prefix([ROW_PREFIX, prefix.as_bytes()].concat()))
        .map_while(|item| {
            let row = item.map_err(|e| sm_err(ErrorVerb::Read, e)).and_then(|(key, value)| {
                let key = std::str::from_utf8(&key[ROW_PREFIX.len()..]).map_err(|e| sm_err(ErrorVerb::Read, e))?;
                Ok((key.to_owned(), value))
            });
            row.map_err(|e| failed = Some(e)).ok()
        });
    let state = State::from_rows(rows);
    if let Some(e) = failed {
        return Err(e);
    }
    let state = state.map_err(|e| sm_err(ErrorVerb::Read, e))?;
    let last_applied = match tree.get(LAST_APPLIED_KEY).map_err(|e| sm_err(ErrorVerb::Read, e))? {
        Some(bytes) => decode(&bytes)?,
        None => None,
    };
    let membership = match tree.get(MEMBERSHIP_KEY).map_err(|e| sm_err(ErrorVerb::Read, e))? {
        Some(bytes) => decode(&bytes)?,
        None => StoredMembership::default(),
    };
    Ok(Applied {
        state,
        last_applied,
        membership,
    })
}

/// A snapshot decoded and checked, ready to replace the state machine: its
/// rows (borrowed from the snapshot's data) and the state they make.
struct DecodedSnapshot<'a> {
    rows: Vec<(&'a str, &'a [u8])>,
    state: State,
}

fn decode_snapshot(data: &[u8]) -> Result<DecodedSnapshot<'_>, StorageError> {
    let rows = decode_rows(data).map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
    let state = State::from_rows(rows.iter().copied()).map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
    Ok(DecodedSnapshot { rows, state })
}

/// Rebuilds the stored state machine from the stored snapshot, which must
/// cover at least `at_least` (the snapshot that was replacing it).
fn rebuild(tree: &sled::Tree, snapshots: &SnapshotFile, at_least: Option<LogId>) -> Result<Applied, StorageError> {
    let stored = snapshots.read().map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
    let Some((meta, data)) = stored.filter(|(meta, _)| meta.last_log_id >= at_least) else {
        return Err(sm_err(
            ErrorVerb::Read,
            io::Error::other(format!(
                "the state machine was being replaced by a snapshot up to {at_least:?} that is no longer \
                 stored; restore the server from a backup (`--restore-from`) or rejoin it empty"
            )),
        ));
    };
    replace_all(tree, &meta, decode_snapshot(&data)?, None)
}

/// Replaces the whole stored state machine with a snapshot, in sled batches
/// of about [`REPLACE_BATCH_BYTES`]: a first batch sets [`REPLACING_KEY`]
/// (to the snapshot's log id) and drops the last-applied id; then the
/// snapshot's rows are written over the old ones (a row in both stays
/// readable throughout, such as a finished run's log chunks); then the old
/// rows the snapshot lacks are removed; a last batch stores the snapshot's
/// last-applied id and membership and removes the key. Stopped anywhere in
/// between, the state machine is torn and is rebuilt from the stored
/// snapshot when it is opened. sled recovers a prefix of its writes after a
/// crash; the first and the last batch are also each preceded by a flush.
/// An install names its crash point, reached once the rows are written.
fn replace_all(
    tree: &sled::Tree,
    meta: &SnapshotMeta,
    snapshot: DecodedSnapshot<'_>,
    crash_point: Option<&'static str>,
) -> Result<Applied, StorageError> {
    let write_err = |e: sled::Error| sm_err(ErrorVerb::Write, e);
    let mut batch = sled::Batch::default();
    batch.insert(REPLACING_KEY, encode(&meta.last_log_id)?);
    batch.remove(LAST_APPLIED_KEY);
    tree.apply_batch(batch).map_err(write_err)?;
    tree.flush().map_err(write_err)?;

    // The old rows the snapshot lacks, found before the new rows are in.
    let mut kept: Vec<&str> = snapshot.rows.iter().map(|&(key, _)| key).collect();
    kept.sort_unstable();
    let mut stale = Vec::new();
    for key in tree.scan_prefix(ROW_PREFIX).keys() {
        let key = key.map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let in_snapshot = std::str::from_utf8(&key[ROW_PREFIX.len()..]).is_ok_and(|k| kept.binary_search(&k).is_ok());
        if !in_snapshot {
            stale.push(key);
        }
    }
    drop(kept);

    let mut batches = BoundedBatches::new(tree);
    for &(key, value) in &snapshot.rows {
        batches.push(ROW_PREFIX.len() + key.len() + value.len(), |batch| {
            batch.insert([ROW_PREFIX, key.as_bytes()].concat(), value)
        })?;
    }
    batches.finish()?;
    if let Some(point) = crash_point {
        super::crash::reached(point);
    }
    for key in stale {
        batches.push(key.len(), |batch| batch.remove(key))?;
    }
    batches.finish()?;
    tree.flush().map_err(write_err)?;

    let mut batch = sled::Batch::default();
    batch.insert(LAST_APPLIED_KEY, encode(&meta.last_log_id)?);
    batch.insert(MEMBERSHIP_KEY, encode(&meta.last_membership)?);
    batch.remove(REPLACING_KEY);
    tree.apply_batch(batch).map_err(write_err)?;
    Ok(Applied {
        state: snapshot.state,
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
    })
}

/// Runs `f`, which may block for seconds (decoding or writing a large
/// state), without holding up the other tasks queued on this worker
/// thread: on a multi-threaded runtime they move to another thread
/// meanwhile ([`tokio::task::block_in_place`]); elsewhere (a
/// current-thread runtime, as in tests) it simply runs.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// sled batches written once they hold about [`REPLACE_BATCH_BYTES`].
struct BoundedBatches<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    bytes: usize,
}

impl<'a> BoundedBatches<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Self {
            tree,
            batch: sled::Batch::default(),
            bytes: 0,
        }
    }

    /// Adds a change of about `bytes` to the batch, writing it when full.
    fn push(&mut self, bytes: usize, change: impl FnOnce(&mut sled::Batch)) -> Result<(), StorageError> {
        change(&mut self.batch);
        self.bytes += bytes;
        if self.bytes >= REPLACE_BATCH_BYTES {
            self.finish()?;
        }
        Ok(())
    }

    /// Writes what the batch holds.
    fn finish(&mut self) -> Result<(), StorageError> {
        self.bytes = 0;
        self.tree
            .apply_batch(std::mem::take(&mut self.batch))
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.reader();
        let applied = applied.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let began = Instant::now();
        let mut unstored = lock_unstored(&self.unstored)?;
        unstored.check()?;
        let mut responses = Vec::new();
        let batch = {
            let mut applied = write_applied(&self.applied)?;
            for entry in entries {
                let _span =
                    tracing::debug_span!("apply", index = entry.log_id.index, term = entry.log_id.leader_id.term)
                        .entered();
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Ok(Response::Empty),
                    EntryPayload::Normal(command) => applied.state.apply(entry.log_id.index, &command),
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Ok(Response::Empty)
                    }
                };
                responses.push(response);
            }
            super::crash::reached("apply-applied");
            let oldest = match *unstored {
                Unstored::Since(oldest) => oldest,
                _ => began,
            };
            *unstored = Unstored::Since(oldest);
            let (rows, stored_only) = applied.state.unstored_changes();
            if stored_only {
                // Written before readers see the state: a reader that finds
                // a run finished must find all its log chunks in sled.
                unstored.store(&self.tree, &mut applied)?;
                super::crash::reached("apply-stored");
                None
            } else if rows >= STORE_ROWS || oldest.elapsed() >= self.store_after {
                Some(unstored.take(&mut applied)?)
            } else {
                None
            }
        };
        if let Some(batch) = batch {
            unstored.write(&self.tree, batch)?;
            super::crash::reached("apply-stored");
        }
        drop(unstored);
        self.announce(self.reader().read().last_applied);
        super::stats::APPLY_ENTRIES.observe(responses.len() as f64);
        super::stats::APPLY_SECONDS.observe(began.elapsed().as_secs_f64());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Runs on the state machine's task, so this copy is consistent: no
        // apply can interleave. It shares the rows (no row is copied);
        // encoding them happens later, concurrently. Log chunks live only in
        // storage (always written by the apply that made them), so they are
        // read now, for the same reason.
        let reader = self.reader();
        let applied = reader.read();
        let stored_rows = read_prefix(&self.tree, logs::LOG_PREFIX);
        SnapshotBuilder {
            copy: Some(SnapshotCopy {
                rows: applied.state.share_rows(),
                last_applied: applied.last_applied,
                membership: applied.membership.clone(),
                stored_rows,
            }),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(SnapshotData::Bytes(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<SnapshotData>) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let data = Arc::new(snapshot.read().await.map_err(|e| snapshot_err(ErrorVerb::Read, e))?);
        // Check everything before anything is written: a bad snapshot changes nothing.
        let decoded = blocking(|| decode_snapshot(&data))?;
        let snapshots = self.snapshots.clone();
        let stored_meta = meta.clone();
        let stored_data = data.clone();
        // Durable next: once the state machine holds the snapshot, the log
        // before it may be purged.
        tokio::task::spawn_blocking(move || snapshots.store(&stored_meta, &stored_data))
            .await
            .map_err(|e| snapshot_err(ErrorVerb::Write, e))?
            .map_err(|e| snapshot_err(ErrorVerb::Write, e))?;
        super::crash::reached("snapshot-install-stored");
        let mut unstored = lock_unstored(&self.unstored)?;
        // Failed until replaced: sled is torn in between and must not be
        // written from the old state (a restart rebuilds it).
        *unstored = Unstored::Failed;
        let replaced = blocking(|| replace_all(&self.tree, meta, decoded, Some("snapshot-install-replacing")))?;
        *write_applied(&self.applied)? = replaced;
        *unstored = Unstored::Nothing;
        drop(unstored);
        self.announce(meta.last_log_id);
        super::stats::SNAPSHOTS_INSTALLED.record(started.elapsed());
        tracing::info!(last_log_id = ?meta.last_log_id, snapshot_id = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        // The data is read only when it is sent (see `SnapshotData`).
        let stored = self.snapshots.meta().map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
        Ok(stored.map(|meta| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(SnapshotData::Stored {
                file: self.snapshots.clone(),
                meta,
            }),
        }))
    }
}

/// Reads every row under `prefix` (a state key prefix).
fn read_prefix(tree: &sled::Tree, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, sled::Error> {
    let mut rows = Vec::new();
    for item in tree.scan_prefix([ROW_PREFIX, prefix.as_bytes()].concat()) {
        let (key, value) = item?;
        rows.push((
            String::from_utf8_lossy(&key[ROW_PREFIX.len()..]).into_owned(),
            value.to_vec(),
        ));
    }
    Ok(rows)
}

/// Builds a snapshot from a consistent copy of the applied state, once.
pub struct SnapshotBuilder {
    /// Taken by the build: a second build fails rather than store an empty
    /// snapshot under the copy's log id.
    copy: Option<SnapshotCopy>,
    snapshots: Arc<SnapshotFile>,
}

/// What a snapshot holds, copied at one moment.
struct SnapshotCopy {
    rows: SharedRows,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Rows kept only in storage (log chunks), read with the copy.
    stored_rows: Result<Vec<(String, Vec<u8>)>, sled::Error>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        let SnapshotCopy {
            rows: shared,
            last_applied: last,
            membership,
            stored_rows,
        } = self.copy.take().ok_or_else(|| {
            snapshot_err(
                ErrorVerb::Read,
                io::Error::other("this snapshot builder has built already"),
            )
        })?;
        let stored_rows = stored_rows.map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
        let snapshots = self.snapshots.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
            let mut rows: Vec<_> = shared
                .rows()
                .collect::<Result<_, _>>()
                .map_err(|e| snapshot_err(ErrorVerb::Write, e))?;
            rows.extend(stored_rows);
            let data = encode_rows(rows).map_err(|e| snapshot_err(ErrorVerb::Write, e))?;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: membership,
                snapshot_id: format!(
                    "{}-{}-{}",
                    last.map_or(0, |id| id.leader_id.term),
                    last.map_or(0, |id| id.index),
                    chrono::Utc::now().timestamp_micros()
                ),
            };
            snapshots
                .store(&meta, &data)
                .map_err(|e| snapshot_err(ErrorVerb::Write, e))?;
            Ok((meta, data))
        })
        .await
        .map_err(|e| snapshot_err(ErrorVerb::Write, e))??;
        super::stats::SNAPSHOTS_BUILT.record(started.elapsed());
        super::crash::reached("snapshot-built");
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Bytes(data)),
        })
    }
}
