//! Leader-only reconcile loops. They read the state and **propose
//! commands**; they never change state themselves.
//!
//! - [`ticker`]: proposes `Tick` whenever the derived index says a slot,
//!   timeout, starting deadline or expiry is due;
//! - [`dispatcher`]: places pending runs on connected workers (`Assign`);
//! - the lease watcher: proposes `WorkerLost` for workers silent beyond
//!   lease + grace (see [`leases`]).
//!
//! They start when this node becomes leader and are cancelled the moment it
//! stops being leader (or its term changes). The current leadership — its
//! term, cancellation token and worker leases — is published as a
//! [`LeaderContext`], which the worker sessions use too: a session lives only
//! as long as the leadership it was opened under.

pub mod dispatcher;
pub mod leases;
pub mod ticker;

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::ApiError;
use crate::node::NodeHandle;
use crate::state::Op;
use crate::state::run::WorkerState;
use leases::Leases;

/// Worker lease settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// How long a heartbeat keeps a worker's lease.
    pub lease: Duration,
    /// Extra time before a silent worker is declared lost.
    pub grace: Duration,
}

/// One term of leadership of this node.
#[derive(Debug, Clone)]
pub struct LeaderContext {
    /// The Raft term.
    pub term: u64,
    /// Cancelled when the leadership ends.
    pub cancel: CancellationToken,
    /// Worker leases of this term.
    pub leases: Arc<Leases>,
}

/// Handle to the scheduler: the current leadership, if this node leads.
#[derive(Debug, Clone)]
pub struct Scheduler {
    context: watch::Receiver<Option<LeaderContext>>,
}

impl Scheduler {
    /// Starts following leadership changes of `node`; loops run under
    /// `tracker` and stop with `shutdown`.
    pub fn spawn(
        node: NodeHandle,
        settings: LeaseSettings,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = watch::channel(None);
        let loops = tracker.clone();
        tracker.spawn(follow_leadership(node, settings, tx, loops, shutdown));
        Scheduler { context: rx }
    }

    /// The current leadership, if this node is the leader.
    pub fn leader_context(&self) -> Option<LeaderContext> {
        self.context.borrow().clone()
    }
}

async fn follow_leadership(
    node: NodeHandle,
    settings: LeaseSettings,
    publish: watch::Sender<Option<LeaderContext>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut metrics = node.raft.metrics();
    let mut current: Option<LeaderContext> = None;
    loop {
        let (leading, term) = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader, m.current_term)
        };
        let keep = leading && current.as_ref().is_some_and(|c| c.term == term);
        if !keep {
            if let Some(old) = current.take() {
                tracing::info!(term = old.term, "leadership ended: stopping the scheduler");
                old.cancel.cancel();
                publish.send_replace(None);
            }
            if leading {
                tracing::info!(term, "leading: starting the scheduler");
                let context = start(&node, settings, term, &tracker, shutdown.child_token());
                publish.send_replace(Some(context.clone()));
                current = Some(context);
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = metrics.changed() => if changed.is_err() { break },
        }
    }
    if let Some(old) = current {
        old.cancel.cancel();
    }
}

fn start(
    node: &NodeHandle,
    settings: LeaseSettings,
    term: u64,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> LeaderContext {
    let alive: Vec<String> = node
        .state
        .read()
        .state
        .workers()
        .filter(|w| w.state == WorkerState::Alive)
        .map(|w| w.id.clone())
        .collect();
    let leases = Arc::new(Leases::new(settings.lease, settings.grace, alive));
    tracker.spawn(ticker::run(node.clone(), cancel.clone()));
    tracker.spawn(dispatcher::run(node.clone(), leases.clone(), cancel.clone()));
    tracker.spawn(watch_leases(node.clone(), leases.clone(), cancel.clone()));
    LeaderContext { term, cancel, leases }
}

/// Proposes `WorkerLost` for every worker silent beyond lease + grace.
async fn watch_leases(node: NodeHandle, leases: Arc<Leases>, cancel: CancellationToken) {
    let period = (leases.lease / 4).max(Duration::from_millis(100));
    loop {
        let alive: Vec<(String, u64)> = node
            .state
            .read()
            .state
            .workers()
            .filter(|w| w.state == WorkerState::Alive)
            .map(|w| (w.id.clone(), w.session))
            .collect();
        leases.track(alive.iter().map(|(id, _)| id.clone()));
        for (worker, renewed) in leases.expired() {
            let Some(session) = alive.iter().find(|(id, _)| *id == worker).map(|(_, s)| *s) else {
                leases.forget(&worker, renewed);
                continue;
            };
            tracing::warn!(worker = %worker, session, "worker lease expired: declaring it lost");
            let span = tracing::info_span!("worker_lost", node = node.id, term = node.term(), worker = %worker);
            let lost = node.propose(Op::WorkerLost {
                worker: worker.clone(),
                session,
            });
            match tracing::Instrument::instrument(lost, span).await {
                Ok(_) => leases.forget(&worker, renewed),
                Err(ApiError::Rejected(rejection)) => {
                    // It registered again meanwhile; its new session holds a lease.
                    tracing::info!(worker = %worker, reason = %rejection, "worker not declared lost");
                }
                Err(e) => tracing::warn!(worker = %worker, error = %e, "could not declare the worker lost; will retry"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// Pause after a failed proposal before the loop tries again, so a loop
/// whose leadership is ending does not spin.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(200);
