//! Worker liveness in replicated state: registration (each connection) and
//! loss (lease expired). Heartbeats are not here: they live in the leader's
//! memory, and only these changes of liveness go through Raft.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::index::add;
use super::run::{AttemptOutcome, Drain, StopReason, Worker, WorkerState};
use super::runs::end_attempt;
use super::{ApplyResult, HeldAttempt, LogIndex, Rejection, Response, RunId, State, WorkerInfo};

/// How an attempt ends when its worker stops holding it: the stop the server
/// asked for, if any, else lost.
fn lost_outcome(stop: Option<StopReason>) -> AttemptOutcome {
    match stop {
        Some(StopReason::Timeout) => AttemptOutcome::TimedOut,
        Some(StopReason::Cancel) => AttemptOutcome::Cancelled,
        Some(StopReason::Drain) => AttemptOutcome::HandedBack,
        None => AttemptOutcome::Lost,
    }
}

impl State {
    /// Stores a worker, keeping the index in step.
    fn put_worker(&mut self, worker: Worker) {
        if let Some(old) = self.workers.get(&worker.id) {
            self.index.remove_worker(old);
        }
        self.index.insert_worker(&worker);
        self.workers.insert(worker.id.clone(), worker);
    }

    /// Registers (or re-registers) a worker and reconciles what it holds
    /// with what the state says it should: attempts it holds that are not
    /// its current ones must be stopped; started attempts it should hold but
    /// does not are ended as lost (and retried by policy); assigned attempts
    /// it never started stay, to be sent to it again.
    pub(super) fn register_worker(
        &mut self,
        id: &str,
        info: &WorkerInfo,
        held: &[HeldAttempt],
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> Response {
        // An operator's drain outlives reconnections; the worker's own (it
        // was shutting down) ends when it registers again.
        let drain = self.workers.get(id).and_then(|w| w.drain).filter(|d| d.by_operator);
        let worker = Worker {
            id: id.to_owned(),
            labels: info.labels.clone(),
            capacity: info.capacity,
            drivers: info.drivers.clone(),
            state: WorkerState::Alive,
            session: index,
            registered_at: now,
            lost_at: None,
            drain,
        };
        self.put_worker(worker);

        let is_current = |state: &State, h: &HeldAttempt| {
            state
                .runs
                .get(&h.run)
                .and_then(|run| run.live_attempt())
                .is_some_and(|a| a.epoch == h.epoch && a.worker == id)
        };
        let stop: Vec<HeldAttempt> = held.iter().filter(|h| !is_current(self, h)).cloned().collect();

        let assigned: Vec<RunId> = self
            .index
            .on_worker
            .get(id)
            .map(|runs| runs.iter().cloned().collect())
            .unwrap_or_default();
        let mut lost = Vec::new();
        for run_id in assigned {
            let Some(mut run) = self.runs.get(&run_id).cloned() else {
                continue;
            };
            let Some(attempt) = run.live_attempt() else { continue };
            // Held: fine. Never started: the assignment may simply not have
            // reached the worker before it reconnected; it is sent again.
            if held.iter().any(|h| h.run == run_id && h.epoch == attempt.epoch) || attempt.started_at.is_none() {
                continue;
            }
            let message = format!(
                "worker {id} reconnected without attempt {} (it restarted or lost it)",
                attempt.number
            );
            let outcome = lost_outcome(attempt.stop);
            end_attempt(&mut run, outcome, message, now);
            self.put_run(run, index);
            self.settle(&run_id);
            lost.push(run_id);
        }
        Response::Registered { stop, lost }
    }

    /// Declares a worker lost: its live attempts end (retried by policy).
    pub(super) fn worker_lost(
        &mut self,
        id: &str,
        session: LogIndex,
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> ApplyResult {
        let Some(worker) = self.workers.get(id) else {
            return Err(Rejection::not_found(format_args!("worker {id:?}")));
        };
        if worker.session != session {
            return Err(Rejection::failed_precondition(format!(
                "worker {id} registered again (session {}) after session {session} expired",
                worker.session
            )));
        }
        if worker.state == WorkerState::Lost {
            return Ok(Response::Empty);
        }
        let mut worker = worker.clone();
        worker.state = WorkerState::Lost;
        worker.lost_at = Some(now);
        self.put_worker(worker);

        let assigned: Vec<RunId> = self
            .index
            .on_worker
            .get(id)
            .map(|runs| runs.iter().cloned().collect())
            .unwrap_or_default();
        for run_id in assigned {
            let Some(mut run) = self.runs.get(&run_id).cloned() else {
                continue;
            };
            let Some(attempt) = run.live_attempt() else { continue };
            let message = format!("worker {id} was lost (lease expired) during attempt {}", attempt.number);
            let outcome = lost_outcome(attempt.stop);
            end_attempt(&mut run, outcome, message, now);
            self.put_run(run, index);
            self.settle(&run_id);
        }
        Ok(Response::Empty)
    }

    /// Starts, changes or (`within` = `None`) ends a worker's drain.
    pub(super) fn drain_worker(
        &mut self,
        id: &str,
        within: Option<Duration>,
        by_operator: bool,
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> ApplyResult {
        let Some(worker) = self.workers.get(id) else {
            return Err(Rejection::not_found(format_args!("worker {id:?}")));
        };
        let mut worker = worker.clone();
        worker.drain = match within {
            None => None,
            Some(within) => Some(Drain {
                deadline: add(now, within).unwrap_or(now),
                by_operator: by_operator || worker.drain.is_some_and(|d| d.by_operator),
                handled: false,
            }),
        };
        self.put_worker(worker.clone());
        // A drain due at once is handled now, not at the next tick.
        self.drain_deadline(id, now, index);
        Ok(Response::Worker(self.workers.get(id).cloned().unwrap_or(worker)))
    }

    /// Handles a worker's drain deadline if it has passed: its live attempts
    /// are asked to stop, to be handed back. Returns how many.
    pub(super) fn drain_deadline(&mut self, id: &str, now: DateTime<Utc>, index: LogIndex) -> u64 {
        let Some(mut worker) = self.workers.get(id).cloned() else {
            return 0;
        };
        let Some(drain) = worker.drain.as_mut().filter(|d| !d.handled && d.deadline <= now) else {
            return 0;
        };
        drain.handled = true;
        self.put_worker(worker);
        let assigned: Vec<RunId> = self
            .index
            .on_worker
            .get(id)
            .map(|runs| runs.iter().cloned().collect())
            .unwrap_or_default();
        let mut stopped = 0;
        for run_id in assigned {
            let Some(mut run) = self.runs.get(&run_id).cloned() else {
                continue;
            };
            let Some(attempt) = run.attempts.last_mut().filter(|a| a.is_live() && a.stop.is_none()) else {
                continue;
            };
            attempt.stop = Some(StopReason::Drain);
            self.put_run(run, index);
            stopped += 1;
        }
        stopped
    }
}
