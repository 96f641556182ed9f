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
//! Two operations on the same object ([`Op::batch_key`]) never share an
//! entry: the later one waits for the next, in order.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use chrono::Utc;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::raft::{Node, NodeId, Raft};
use crate::state::{ApplyResult, Command, Op, Rejection, RejectionKind, Response};

/// At most this many operations in one entry.
pub const MAX_BATCH: usize = 256;

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
    reply: oneshot::Sender<Result<ApplyResult, WriteError>>,
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

    /// Proposes `command` and waits until it is committed and applied.
    /// `None` if the node is shutting down.
    pub async fn write(&self, command: Command) -> Option<Result<ApplyResult, WriteError>> {
        let (reply, answer) = oneshot::channel();
        let key = command.op.batch_key();
        self.tx.send(Pending { command, key, reply }).await.ok()?;
        answer.await.ok()
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: VecDeque<Pending> = VecDeque::new();
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
        while carried.len() < MAX_BATCH * 2 {
            match rx.try_recv() {
                Ok(pending) => carried.push_back(pending),
                Err(_) => break,
            }
        }
        let batch = take_batch(&mut carried);
        let raft = raft.clone();
        tokio::spawn(async move {
            write(&raft, batch).await;
            drop(permit);
        });
    }
}

/// Takes, in order, up to [`MAX_BATCH`] proposals with distinct keys; the
/// rest stay queued in their order.
fn take_batch(queue: &mut VecDeque<Pending>) -> Vec<Pending> {
    let mut keys = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = VecDeque::new();
    for pending in queue.drain(..) {
        if batch.len() < MAX_BATCH && keys.insert(pending.key.clone()) {
            batch.push(pending);
        } else {
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
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            command: Command {
                now: Utc::now(),
                op: Op::Tick,
            },
            key: key.to_owned(),
            reply,
        };
        (pending, rx)
    }

    #[test]
    fn a_batch_holds_one_proposal_per_key_in_order() {
        let mut queue: VecDeque<Pending> = ["a", "b", "a", "c", "a", "b"]
            .into_iter()
            .map(|key| pending(key).0)
            .collect();
        let keys = |batch: &[Pending]| batch.iter().map(|p| p.key.clone()).collect::<Vec<_>>();
        let first = take_batch(&mut queue);
        assert_eq!(keys(&first), ["a", "b", "c"]);
        let second = take_batch(&mut queue);
        assert_eq!(keys(&second), ["a", "b"]);
        let third = take_batch(&mut queue);
        assert_eq!(keys(&third), ["a"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_batch_is_bounded() {
        let mut queue: VecDeque<Pending> = (0..MAX_BATCH + 10).map(|i| pending(&i.to_string()).0).collect();
        assert_eq!(take_batch(&mut queue).len(), MAX_BATCH);
        assert_eq!(queue.len(), 10);
    }
}
