//! Group commit: proposals made at the same time share one Raft entry.
//!
//! openraft 0.9 appends each client write as an entry of its own and waits
//! for that append's fsync inside the Raft core before it takes the next
//! write, so a leader that proposes one operation per entry makes at most
//! one operation durable per fsync, however many clients wait. The
//! [`Batcher`] keeps at most [`IN_FLIGHT`] entries in the Raft pipeline;
//! whatever is proposed meanwhile waits and then goes into the next entry
//! together ([`Op::Batch`]), up to [`MAX_BATCH`] operations. A lone
//! proposal on an idle node is written at once, as a plain entry.
//!
//! Operations on one object ([`Op::batch_key`]) reach Raft in the order
//! they were proposed: a later one waits for the entry holding an earlier
//! one to be applied before it leaves. Two of them never share an entry
//! (ids are derived from the entry's index), except reports on a run
//! ([`Op::shares_entries`]), which share one in order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::Utc;
use openraft::error::{ClientWriteError, RaftError};
use std::sync::Mutex;

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::raft::{Node, NodeId, Raft};
use crate::state::{ApplyResult, Command, Op, Rejection, RejectionKind, Response};

/// At most this many operations in one entry.
pub const MAX_BATCH: usize = 256;

/// At most about this many bytes in one entry (estimated by [`weight`]),
/// so that no entry comes near the largest Raft message (64 MiB): openraft
/// splits a too-large AppendEntries down to one entry, never below.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Entries proposed and not yet applied, at most: one being made durable
/// while the next one fills.
pub const IN_FLIGHT: usize = 4;

/// Proposals queued before callers wait to queue.
const QUEUE: usize = 4096;

/// Why a write failed in Raft (not refused by the state machine).
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, Node>>;

/// A proposal and who waits for its answer.
struct Pending {
    command: Command,
    key: String,
    /// Whether it may share an entry with others of its key.
    shares: bool,
    weight: usize,
    reply: oneshot::Sender<Result<ApplyResult, WriteError>>,
}

/// An upper estimate of an operation's size in the log: output chunks as
/// base64, anything else as a spec at its size limit (64 KiB of protobuf).
fn weight(op: &Op) -> usize {
    match op {
        Op::AppendLogs { chunks, .. } => 1024 + chunks.iter().map(|c| c.data.len() / 3 * 4 + 256).sum::<usize>(),
        _ => 64 << 10,
    }
}

/// Hands proposals to the batching task. Cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batching task for `raft`; it ends when every handle is
    /// dropped.
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Queues `command` and returns its [`Answer`] without waiting for it:
    /// what one caller queues reaches Raft in that order per object
    /// ([`Op::batch_key`]). `None` if the node is shutting down.
    pub async fn submit(&self, command: Command) -> Option<Answer> {
        let (reply, answer) = oneshot::channel();
        let key = command.op.batch_key();
        let weight = weight(&command.op);
        let shares = command.op.shares_entries();
        self.tx
            .send(Pending {
                command,
                key,
                shares,
                weight,
                reply,
            })
            .await
            .ok()?;
        Some(Answer(answer))
    }
}

/// The answer to a proposal queued with [`Batcher::submit`].
pub struct Answer(oneshot::Receiver<Result<ApplyResult, WriteError>>);

impl Answer {
    /// Waits until the proposal is committed and applied. `None` if the node
    /// is shutting down.
    pub async fn wait(self) -> Option<Result<ApplyResult, WriteError>> {
        self.0.await.ok()
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    // Keys of the entries in flight: a proposal waits until the entry
    // holding an earlier one of its key has been answered, so proposals on
    // one object reach Raft in the order they were made.
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let finished = Arc::new(Notify::new());
    let mut carried: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    loop {
        // Wait for room in the pipeline first: proposals made meanwhile
        // gather in the queue and leave together.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if carried.is_empty() {
            match rx.recv().await {
                Some(first) => carried.push_back(first),
                None => return,
            }
        }
        while open && carried.len() < MAX_BATCH * 2 {
            match rx.try_recv() {
                Ok(pending) => carried.push_back(pending),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let batch = take_batch(&mut carried, &lock(&busy));
        if batch.is_empty() {
            // Everything queued waits for an entry in flight with its key.
            drop(permit);
            tokio::select! {
                () = finished.notified() => {}
                next = rx.recv(), if open => match next {
                    Some(pending) => carried.push_back(pending),
                    None => open = false,
                },
            }
            continue;
        }
        let keys: Vec<String> = batch.iter().map(|p| p.key.clone()).collect();
        lock(&busy).extend(keys.iter().cloned());
        let (raft, busy, finished) = (raft.clone(), busy.clone(), finished.clone());
        tokio::spawn(async move {
            write(&raft, batch).await;
            let mut busy = lock(&busy);
            for key in &keys {
                busy.remove(key);
            }
            drop(busy);
            drop(permit);
            finished.notify_one();
        });
    }
}

fn lock(busy: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    // A set of keys holds no invariant a panic could break halfway.
    busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes, in order, up to [`MAX_BATCH`] proposals (and about
/// [`MAX_BATCH_BYTES`], but at least one) whose keys are not `busy`, one
/// per key unless they share entries; the rest stay queued in their order.
/// Once a proposal of a key stays, the later ones of that key stay too:
/// order per key.
fn take_batch(queue: &mut VecDeque<Pending>, busy: &HashSet<String>) -> Vec<Pending> {
    // Keys taken, each with whether all its proposals taken share entries;
    // keys left behind.
    let (mut taken, mut left) = (HashMap::new(), HashSet::new());
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut rest = VecDeque::new();
    for pending in queue.drain(..) {
        let fits = batch.is_empty() || (batch.len() < MAX_BATCH && bytes + pending.weight <= MAX_BATCH_BYTES);
        let free = !left.contains(&pending.key)
            && !busy.contains(&pending.key)
            && taken
                .get(&pending.key)
                .is_none_or(|&all_share| all_share && pending.shares);
        if fits && free {
            bytes += pending.weight;
            *taken.entry(pending.key.clone()).or_insert(pending.shares) &= pending.shares;
            batch.push(pending);
        } else {
            left.insert(pending.key.clone());
            rest.push_back(pending);
        }
    }
    *queue = rest;
    batch
}

async fn write(raft: &Raft, mut batch: Vec<Pending>) {
    crate::store::stats::PROPOSALS_PER_ENTRY.observe(batch.len() as f64);
    if batch.len() == 1 {
        let Pending { command, reply, .. } = batch.remove(0);
        let _ = reply.send(raft.client_write(command).await.map(|written| written.data));
        return;
    }
    let (commands, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let count = commands.len();
    let entry = Command {
        now: Utc::now(),
        op: Op::Batch { commands },
    };
    match raft.client_write(entry).await {
        Ok(written) => {
            let results = match written.data {
                Ok(Response::Batch(results)) if results.len() == count => results,
                other => {
                    let wrong = Rejection {
                        kind: RejectionKind::FailedPrecondition,
                        message: format!("a batch of {count} was answered with {other:?}"),
                    };
                    vec![Err(wrong); count]
                }
            };
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(key: &str) -> (Pending, oneshot::Receiver<Result<ApplyResult, WriteError>>) {
        weighing(key, 64 << 10)
    }

    fn weighing(key: &str, weight: usize) -> (Pending, oneshot::Receiver<Result<ApplyResult, WriteError>>) {
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            command: Command {
                now: Utc::now(),
                op: Op::Tick,
            },
            key: key.to_owned(),
            shares: false,
            weight,
            reply,
        };
        (pending, rx)
    }

    fn keys(batch: &[Pending]) -> Vec<String> {
        batch.iter().map(|p| p.key.clone()).collect()
    }

    #[test]
    fn a_batch_holds_one_proposal_per_key_in_order() {
        let mut queue: VecDeque<Pending> = ["a", "b", "a", "c", "a", "b"]
            .into_iter()
            .map(|key| pending(key).0)
            .collect();
        let first = take_batch(&mut queue, &HashSet::new());
        assert_eq!(keys(&first), ["a", "b", "c"]);
        let second = take_batch(&mut queue, &HashSet::new());
        assert_eq!(keys(&second), ["a", "b"]);
        let third = take_batch(&mut queue, &HashSet::new());
        assert_eq!(keys(&third), ["a"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn reports_on_a_run_share_an_entry_in_order() {
        let sharing = |key: &str, weight: usize| {
            let (mut p, _) = weighing(key, weight);
            p.shares = true;
            p
        };
        let mut queue: VecDeque<Pending> = [sharing("r", 1), pending("a").0, sharing("r", 1), pending("a").0].into();
        assert_eq!(keys(&take_batch(&mut queue, &HashSet::new())), ["r", "a", "r"]);
        assert_eq!(keys(&take_batch(&mut queue, &HashSet::new())), ["a"]);
        // Sharing needs both: one that does not share has its entry to
        // itself among its key, whichever comes first.
        let mut queue: VecDeque<Pending> = [pending("r").0, sharing("r", 1), sharing("s", 1), pending("s").0].into();
        assert_eq!(keys(&take_batch(&mut queue, &HashSet::new())), ["r", "s"]);
        assert_eq!(keys(&take_batch(&mut queue, &HashSet::new())), ["r", "s"]);
        assert!(queue.is_empty());
        // One left behind (here: too big to fit) keeps the later ones of
        // its key behind too.
        let big = MAX_BATCH_BYTES / 2 + 1;
        let mut queue: VecDeque<Pending> =
            [sharing("x", big), sharing("y", big), sharing("y", 1), sharing("z", 1)].into();
        assert_eq!(keys(&take_batch(&mut queue, &HashSet::new())), ["x", "z"]);
        assert_eq!(keys(&take_batch(&mut queue, &HashSet::new())), ["y", "y"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_key_in_flight_waits_and_keeps_its_order() {
        let mut queue: VecDeque<Pending> = ["a", "b", "a"].into_iter().map(|key| pending(key).0).collect();
        let busy = HashSet::from(["a".to_owned()]);
        assert_eq!(keys(&take_batch(&mut queue, &busy)), ["b"]);
        assert_eq!(keys(&take_batch(&mut queue, &busy)), Vec::<String>::new());
        assert_eq!(keys(&take_batch(&mut queue, &HashSet::new())), ["a"]);
        assert_eq!(keys(&take_batch(&mut queue, &HashSet::new())), ["a"]);
    }

    #[test]
    fn a_batch_is_bounded_in_bytes_but_takes_at_least_one() {
        let big = MAX_BATCH_BYTES / 2 + 1;
        let mut queue: VecDeque<Pending> = ["a", "b", "c"].into_iter().map(|key| weighing(key, big).0).collect();
        assert_eq!(take_batch(&mut queue, &HashSet::new()).len(), 1);
        let mut huge: VecDeque<Pending> = [weighing("x", MAX_BATCH_BYTES * 2).0].into();
        assert_eq!(take_batch(&mut huge, &HashSet::new()).len(), 1);
        let chunk = crate::state::LogAppend {
            offset: 0,
            stream: crate::state::logs::LogStream::Stdout,
            data: vec![0; 3 << 20],
        };
        let logs = Op::AppendLogs {
            worker: "w".into(),
            run: "r".into(),
            epoch: 1,
            chunks: vec![chunk],
        };
        assert!(weight(&logs) >= 4 << 20, "base64 of 3 MiB");
    }

    #[test]
    fn a_batch_is_bounded() {
        let mut queue: VecDeque<Pending> = (0..MAX_BATCH + 10).map(|i| pending(&i.to_string()).0).collect();
        assert_eq!(take_batch(&mut queue, &HashSet::new()).len(), MAX_BATCH);
        assert_eq!(queue.len(), 10);
    }
}
