//! The Raft log and vote, in the `raft-log` write-ahead log.
//!
//! Why not sled: sled 0.34's `flush()` only issues `sync_file_range`, which
//! does not survive power loss, and sled's space amplification is worst for
//! exactly the append-then-purge pattern of a Raft log. `raft-log` is a
//! chunked WAL built for openraft by its author; its flush worker `fsync`s
//! (`sync_data`) the chunk files, and removes purged chunks only after the
//! purge record itself is synced.
//!
//! Contract with openraft (checked by its storage `Suite` and by our
//! durability tests):
//! - `save_vote` returns only after the vote is fsynced;
//! - `append` makes entries readable at once and invokes openraft's callback
//!   only after they are fsynced, so nothing is acknowledged before it is on
//!   disk;
//! - `truncate` and `purge` are synced before they return; neither leaves a
//!   hole.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::raft::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The raft-log type parameters for rota.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WalTypes;

impl raft_log::Types for WalTypes {
    type LogId = WalLogId;
    type LogPayload = WalPayload;
    type Vote = WalVote;
    type UserData = ();
    type Callback = FlushCallback;

    fn log_index(log_id: &WalLogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &WalPayload) -> u64 {
        payload.0.len() as u64
    }
}

/// Encodes a serde value as a length-prefixed JSON record.
fn encode_json<T: serde::Serialize, W: io::Write>(value: &T, w: W) -> io::Result<usize> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    bytes.encode(w)
}

/// Decodes a record written by [`encode_json`]. A truncated record surfaces
/// as `UnexpectedEof`, which the WAL treats as a torn last write.
fn decode_json<T: serde::de::DeserializeOwned, R: io::Read>(r: R) -> io::Result<T> {
    let bytes = Vec::<u8>::decode(r)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// An openraft log id in the WAL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalLogId(pub LogId);

impl Encode for WalLogId {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        encode_json(&self.0, w)
    }
}

impl Decode for WalLogId {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        decode_json(r).map(Self)
    }
}

/// An openraft vote in the WAL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd)]
pub struct WalVote(pub Vote);

impl Encode for WalVote {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        encode_json(&self.0, w)
    }
}

impl Decode for WalVote {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        decode_json(r).map(Self)
    }
}

/// A serialized entry payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalPayload(pub Vec<u8>);

impl Encode for WalPayload {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        self.0.encode(w)
    }
}

impl Decode for WalPayload {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        Vec::<u8>::decode(r).map(Self)
    }
}

/// Who is told when a flush reaches the disk.
pub enum FlushCallback {
    /// openraft's append callback, and when the append began.
    Log(LogFlushed<TypeConfig>, std::time::Instant),
    /// A caller waiting for its own write, and when it asked.
    Wait(oneshot::Sender<io::Result<()>>, std::time::Instant),
}

impl raft_log::Callback for FlushCallback {
    fn send(self, res: io::Result<()>) {
        match self {
            FlushCallback::Log(callback, began) => {
                super::stats::LOG_APPEND_SECONDS.observe(began.elapsed().as_secs_f64());
                callback.log_io_completed(res);
            }
            FlushCallback::Wait(tx, began) => {
                super::stats::LOG_SYNC_SECONDS.observe(began.elapsed().as_secs_f64());
                // The waiter may have gone away (node shutting down); nothing to tell then.
                let _ = tx.send(res);
            }
        }
    }
}

impl Debug for FlushCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlushCallback::Log(..) => "FlushCallback::Log",
            FlushCallback::Wait(..) => "FlushCallback::Wait",
        })
    }
}

/// How long a purge waits for a snapshot on disk to cover it before the
/// store reports an error (which stops the node rather than lose data).
const PURGE_GUARD_TIMEOUT: Duration = Duration::from_secs(600);

/// Decoded entries kept after an append for the replication streams, which
/// read every entry once per follower right after it is appended: decoding
/// it from the WAL again each time was a leader's largest cost.
#[derive(Default)]
struct Recent {
    /// Contiguous entries, oldest first, with their encoded sizes.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

/// Read buffer of the WAL's chunk files.
const READ_BUFFER: usize = 1 << 20;
/// Encoded payloads raft-log keeps in memory, at most.
const LOG_CACHE_BYTES: usize = 32 << 20;

/// At most this many entries are kept decoded ...
const RECENT_ENTRIES: usize = 4096;
/// ... and at most about this many bytes of them (encoded size).
const RECENT_BYTES: usize = 32 << 20;

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(entry, _)| entry.log_id.index)
    }

    /// Adds appended entries; a gap (or an overlap) restarts the cache.
    fn push(&mut self, entries: Vec<(Entry, usize)>) {
        for (entry, size) in entries {
            if self.last_index().is_some_and(|last| last + 1 != entry.log_id.index) {
                self.clear();
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > RECENT_ENTRIES || (self.bytes > RECENT_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Forgets entries at and after `index` (a truncation).
    fn truncate(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets entries up to and including `index` (a purge).
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// Entries `[start, end)` if all of them are here.
    fn range(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let (first, last) = (self.first_index()?, self.last_index()?);
        let end = end.min(last + 1);
        if start < first || start > end {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let take = usize::try_from(end - start).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(entry, _)| entry.clone())
                .collect(),
        )
    }
}

/// The Raft log store: cheap to clone, all clones share one WAL.
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Mutex<raft_log::RaftLog<WalTypes>>>,
    /// Entries recently appended, decoded (lock order: `wal`, then this).
    recent: Arc<Mutex<Recent>>,
    /// The last log id covered by a snapshot on disk, if purges are guarded.
    purge_guard: Option<watch::Receiver<Option<LogId>>>,
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

impl LogStore {
    /// Opens (or creates) the WAL in `dir`. The directory is locked for the
    /// life of the store.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut config = raft_log::Config::new(dir.display());
        // No waiting for more writes before an fsync: openraft 0.9 hands the
        // log one append at a time and waits for its fsync before the next,
        // so a wait would only add to every write's latency (proposals are
        // batched before they reach Raft instead, see `node::batch`).
        config.wal.flush_batch_wait = Some(Duration::ZERO);
        // Bounded memory: raft-log's defaults are a 64 MiB read buffer and a
        // payload cache of up to 1 GiB / 100,000 entries; replication reads
        // recent entries from `Recent` anyway, and the log is compacted
        // every `snapshot_every_logs` entries.
        config.wal.read_buffer_size = Some(READ_BUFFER);
        config.log_cache_capacity = Some(LOG_CACHE_BYTES);
        config.log_cache_max_items = Some(RECENT_ENTRIES);
        let wal = raft_log::RaftLog::open(Arc::new(config))?;
        Ok(Self {
            wal: Arc::new(Mutex::new(wal)),
            recent: Arc::default(),
            purge_guard: None,
        })
    }

    /// Makes `purge(upto)` wait until a snapshot on disk covers `upto`.
    ///
    /// openraft purges the log right after it *queues* the installation of a
    /// snapshot received from the leader, while the state machine is still
    /// writing it; a crash in between would leave the log purged past both
    /// the state machine on disk and the stored snapshot. Waiting here closes
    /// that window. Purges after a locally built snapshot pass at once: the
    /// snapshot is on disk before openraft learns of it.
    pub fn guard_purge(&mut self, durable_snapshot: watch::Receiver<Option<LogId>>) {
        self.purge_guard = Some(durable_snapshot);
    }

    fn lock(&self) -> Result<MutexGuard<'_, raft_log::RaftLog<WalTypes>>, StorageError> {
        self.wal.lock().map_err(|_| {
            io_err(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                io::Error::other("raft log lock poisoned"),
            )
        })
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        // The cache holds no invariant a panic elsewhere could break halfway
        // that a reader would trust: every read checks the indexes it needs.
        self.recent.lock().unwrap_or_else(|poisoned| {
            let mut recent = poisoned.into_inner();
            recent.clear();
            recent
        })
    }

    /// Queues a synced flush and waits until it is on disk.
    async fn sync(&self, subject: ErrorSubject<u64>) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.lock()?
            .flush(true, Some(FlushCallback::Wait(tx, std::time::Instant::now())))
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        match rx.await {
            Ok(result) => result.map_err(|e| io_err(subject, ErrorVerb::Write, e)),
            Err(_) => Err(io_err(
                subject,
                ErrorVerb::Write,
                io::Error::other("raft log flush worker stopped"),
            )),
        }
    }

    /// Last purged and last present log ids, and the saved vote; for status.
    pub fn summary(&self) -> Result<(Option<LogId>, Option<LogId>), StorageError> {
        let wal = self.lock()?;
        let state = wal.log_state();
        Ok((state.purged().map(|id| id.0), state.last().map(|id| id.0)))
    }
}

fn range_to_indices<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_to_indices(&range);
        if let Some(entries) = self.recent().range(start, end) {
            return Ok(entries);
        }
        let wal = self.lock()?;
        let mut entries = Vec::new();
        for item in wal.read(start, end) {
            let (log_id, payload) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let payload: EntryPayload<TypeConfig> = serde_json::from_slice(&payload.0)
                .map_err(|e| io_err(ErrorSubject::Log(log_id.0), ErrorVerb::Read, e))?;
            entries.push(Entry {
                log_id: log_id.0,
                payload,
            });
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged_log_id, last) = self.summary()?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.lock()?
            .save_vote(WalVote(*vote))
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.sync(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock()?.log_state().vote().map(|v| v.0))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Best effort (openraft recomputes the commit index if it is lost), so
        // no fsync of its own: it reaches the disk with the next synced flush.
        if let Some(committed) = committed {
            let mut wal = self.lock()?;
            wal.commit(WalLogId(committed))
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            wal.flush(false, None)
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock()?.log_state().committed().map(|id| id.0))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let began = std::time::Instant::now();
        let mut wal = self.lock()?;
        // Entries at or below the purge point are already applied (that is
        // what allowed the purge); openraft's storage Suite sends such
        // entries after purging to the state machine's last-applied id.
        let purged = wal.log_state().purged().map(|id| id.0.index);
        let mut records = Vec::new();
        let mut decoded = Vec::new();
        for entry in entries {
            if purged.is_some_and(|purged| entry.log_id.index <= purged) {
                continue;
            }
            let payload = serde_json::to_vec(&entry.payload)
                .map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            decoded.push((entry.clone(), payload.len()));
            records.push((WalLogId(entry.log_id), WalPayload(payload)));
        }
        super::stats::LOG_APPEND_ENTRIES.observe(records.len() as f64);
        wal.append(records)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.recent().push(decoded);
        super::crash::reached("append-written");
        // The callback runs on the flush worker once the entries are fsynced.
        wal.flush(true, Some(FlushCallback::Log(callback, began)))
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut wal = self.lock()?;
            self.recent().truncate(log_id.index);
            wal.truncate(log_id.index)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        }
        self.sync(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if let Some(durable) = &self.purge_guard {
            let mut durable = durable.clone();
            let covered = tokio::time::timeout(PURGE_GUARD_TIMEOUT, durable.wait_for(|d| *d >= Some(log_id)))
                .await
                .is_ok_and(|waited| waited.is_ok());
            if !covered {
                let message = format!(
                    "refusing to purge the raft log up to {log_id}: no snapshot on disk covers it (latest: {:?})",
                    *durable.borrow()
                );
                return Err(io_err(ErrorSubject::Logs, ErrorVerb::Delete, io::Error::other(message)));
            }
        }
        {
            let mut wal = self.lock()?;
            self.recent().purge(log_id.index);
            wal.purge(WalLogId(log_id))
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        }
        self.sync(ErrorSubject::Logs).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<(Entry, usize)> {
        indexes
            .map(|index| {
                let entry = Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                    payload: EntryPayload::Blank,
                };
                (entry, 10)
            })
            .collect()
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_ranges_they_fully_hold() {
        let mut recent = Recent::default();
        assert_eq!(indexes(recent.range(1, 2)), None);
        recent.push(entries(5..=9));
        assert_eq!(indexes(recent.range(6, 8)), Some(vec![6, 7]));
        assert_eq!(indexes(recent.range(5, u64::MAX)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(recent.range(4, 8)), None, "4 is not held");
        recent.truncate(8);
        assert_eq!(indexes(recent.range(5, u64::MAX)), Some(vec![5, 6, 7]));
        recent.push(entries(8..=8));
        recent.purge(6);
        assert_eq!(indexes(recent.range(7, u64::MAX)), Some(vec![7, 8]));
        assert_eq!(recent.bytes, 20);
        // A gap restarts the cache: nothing older is trusted.
        recent.push(entries(20..=21));
        assert_eq!(indexes(recent.range(7, 9)), None);
        assert_eq!(indexes(recent.range(20, 22)), Some(vec![20, 21]));
    }

    #[test]
    fn recent_entries_are_bounded() {
        let mut recent = Recent::default();
        recent.push(entries(1..=(RECENT_ENTRIES as u64 + 5)));
        assert_eq!(recent.entries.len(), RECENT_ENTRIES);
        assert_eq!(recent.first_index(), Some(6));
        assert_eq!(recent.bytes, RECENT_ENTRIES * 10);
    }
}
