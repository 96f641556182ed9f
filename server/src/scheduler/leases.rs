//! Worker leases, in the leader's memory only.
//!
//! Heartbeats renew a worker's lease here; they never go through Raft. Only a
//! change of liveness does: the lease watcher proposes `WorkerLost` once a
//! worker has gone `lease + grace` without renewal. A new leader starts every
//! registered worker with a fresh lease, so workers get a full lease (and
//! grace) to find it after a failover.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::WorkerId;

#[derive(Debug, Clone, Copy)]
struct Lease {
    renewed: Instant,
    sessions: u32,
}

/// The leases of one leadership term.
#[derive(Debug)]
pub struct Leases {
    /// How long a renewal lasts.
    pub lease: Duration,
    /// Extra time before a silent worker is declared lost.
    pub grace: Duration,
    inner: Mutex<HashMap<WorkerId, Lease>>,
    /// Bumped when sessions open or close, or a worker is forgotten.
    changes: watch::Sender<u64>,
}

impl Leases {
    /// Leases for a new term: every worker in `alive` starts renewed now.
    pub fn new(lease: Duration, grace: Duration, alive: impl IntoIterator<Item = WorkerId>) -> Self {
        let now = Instant::now();
        let inner = alive
            .into_iter()
            .map(|id| {
                (
                    id,
                    Lease {
                        renewed: now,
                        sessions: 0,
                    },
                )
            })
            .collect();
        Self {
            lease,
            grace,
            inner: Mutex::new(inner),
            changes: watch::Sender::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<WorkerId, Lease>) -> R) -> R {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner)
    }

    /// A session of `worker` opened: its lease is renewed.
    pub fn connect(&self, worker: &str) {
        self.with(|leases| {
            let lease = leases.entry(worker.to_owned()).or_insert(Lease {
                renewed: Instant::now(),
                sessions: 0,
            });
            lease.renewed = Instant::now();
            lease.sessions += 1;
        });
        self.changes.send_modify(|n| *n += 1);
    }

    /// A session of `worker` closed. The lease keeps running out.
    pub fn disconnect(&self, worker: &str) {
        self.with(|leases| {
            if let Some(lease) = leases.get_mut(worker) {
                lease.sessions = lease.sessions.saturating_sub(1);
            }
        });
        self.changes.send_modify(|n| *n += 1);
    }

    /// A heartbeat of `worker`.
    pub fn renew(&self, worker: &str) {
        self.with(|leases| {
            if let Some(lease) = leases.get_mut(worker) {
                lease.renewed = Instant::now();
            }
        });
    }

    /// Whether `worker` has a session open with this leader.
    pub fn is_connected(&self, worker: &str) -> bool {
        self.with(|leases| leases.get(worker).is_some_and(|l| l.sessions > 0))
    }

    /// Whether `worker` is connected and renewed its lease within the lease
    /// (so it is worth giving work to).
    pub fn is_live(&self, worker: &str) -> bool {
        let now = Instant::now();
        self.with(|leases| {
            leases
                .get(worker)
                .is_some_and(|l| l.sessions > 0 && now.duration_since(l.renewed) <= self.lease)
        })
    }

    /// Starts a fresh lease for each of `workers` not tracked yet (a worker
    /// registered in a log entry this leader had not applied when it took
    /// over).
    pub fn track(&self, workers: impl IntoIterator<Item = WorkerId>) {
        let now = Instant::now();
        self.with(|leases| {
            for worker in workers {
                leases.entry(worker).or_insert(Lease {
                    renewed: now,
                    sessions: 0,
                });
            }
        });
    }

    /// Workers silent for longer than lease + grace, with the renewal time
    /// that was seen (see [`Leases::forget`]).
    pub fn expired(&self) -> Vec<(WorkerId, Instant)> {
        let limit = self.lease + self.grace;
        let now = Instant::now();
        self.with(|leases| {
            let mut expired: Vec<(WorkerId, Instant)> = leases
                .iter()
                .filter(|(_, lease)| now.duration_since(lease.renewed) > limit)
                .map(|(id, lease)| (id.clone(), lease.renewed))
                .collect();
            expired.sort();
            expired
        })
    }

    /// Stops tracking `worker` (declared lost) — unless it renewed or
    /// reconnected since `renewed` was seen.
    pub fn forget(&self, worker: &str, renewed: Instant) {
        self.with(|leases| {
            if leases.get(worker).is_some_and(|l| l.renewed == renewed) {
                leases.remove(worker);
            }
        });
        self.changes.send_modify(|n| *n += 1);
    }

    /// Follows connects, disconnects and forgets.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_workers_expire_after_lease_and_grace() {
        let leases = Leases::new(Duration::from_secs(10), Duration::from_secs(5), ["a".to_owned()]);
        leases.connect("b");
        assert!(leases.is_connected("b") && !leases.is_connected("a"));
        tokio::time::advance(Duration::from_secs(14)).await;
        leases.renew("b");
        assert!(leases.expired().is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        let expired = leases.expired();
        assert_eq!(expired.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["a"]);
        leases.forget("a", expired[0].1);
        assert!(leases.is_live("b"));
        leases.disconnect("b");
        assert!(!leases.is_connected("b") && !leases.is_live("b"));
        tokio::time::advance(Duration::from_secs(16)).await;
        let expired = leases.expired();
        assert_eq!(expired.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["b"]);
        // A reconnect after the expiry was seen keeps the worker tracked.
        leases.connect("b");
        leases.forget("b", expired[0].1);
        assert!(leases.is_connected("b"));
        leases.track(["a".to_owned(), "b".to_owned()]);
        assert!(leases.expired().is_empty(), "a fresh lease for an untracked worker");
    }
}
