//! The life of a run: creation under a concurrency policy, manual triggers,
//! placement, reports from workers, retries, cancellation, logs, and removal
//! of finished history.
//!
//! Every change to a run goes through [`State::put_run`], which keeps the
//! derived indexes in step, and ends with [`State::settle`], which removes
//! the run if its job is gone or prunes the job's history by count.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::index::add;
use super::job::{Concurrency, Job, RetryOn};
use super::logs::{self, LOG_CAP_BYTES, MAX_CHUNK_BYTES};
use super::run::{
    Attempt, AttemptOutcome, Cause, LogMeta, Reason, ReasonCode, Run, RunId, RunRecord, RunState, StopReason, Worker,
    WorkerState,
};
use super::{ApplyResult, AttemptReport, LogAppend, LogIndex, Placement, Rejection, RejectionKind, Response, State};

/// The compact form of a job uid used in run ids.
fn compact(uid: &str) -> String {
    uid.replace('-', "")
}

/// Id of the record of slot `slot` of job `uid`: the same on every node and
/// for every leader, so a slot can never yield two records.
pub fn scheduled_run_id(uid: &str, slot: DateTime<Utc>) -> RunId {
    format!("{}-{}", compact(uid), slot.timestamp_millis()).into()
}

/// Id of a manual run created by the command at `index`.
pub fn manual_run_id(uid: &str, index: LogIndex) -> RunId {
    format!("{}-m{index}", compact(uid)).into()
}

/// Delay before retry number `retry` (1 for the first retry): the backoff
/// doubled each time, capped.
pub fn retry_delay(backoff: Duration, max_backoff: Duration, retry: u32) -> Duration {
    let factor = 2u32.checked_pow(retry.saturating_sub(1)).unwrap_or(u32::MAX);
    backoff.checked_mul(factor).unwrap_or(max_backoff).min(max_backoff)
}

/// A new run record of `job`.
pub(super) fn new_run(
    job: &Job,
    id: RunId,
    cause: Cause,
    nominal_time: Option<DateTime<Utc>>,
    params: BTreeMap<String, String>,
    now: DateTime<Utc>,
    index: LogIndex,
) -> Run {
    let record = RunRecord {
        id,
        job: job.name.clone(),
        job_uid: job.uid.clone(),
        generation: job.generation,
        cause,
        nominal_time,
        last_nominal_time: nominal_time,
        slot_count: u64::from(nominal_time.is_some()),
        params,
        created_at: now,
        created_index: index,
        updated_index: index,
        state: RunState::Pending,
        reason: None,
        not_before: None,
        attempts: Vec::new(),
        finished_at: None,
        log: LogMeta::default(),
        trace: None,
    };
    Run {
        spec: job.spec.clone(),
        record,
    }
}

impl State {
    /// Stores `run` as changed by the command at `index`, keeping the
    /// indexes in step.
    pub(super) fn put_run(&mut self, mut run: Run, index: LogIndex) {
        run.updated_index = index;
        match self.runs.get(&run.id) {
            Some(old) => {
                debug_assert!(
                    (&old.job_uid, old.generation) == (&run.job_uid, run.generation),
                    "run {} changed generation",
                    run.id
                );
                self.index.remove_run(old);
            }
            None => self.specs.acquire(&run),
        }
        self.index.insert_run(&run);
        self.runs.insert(run.id.clone(), run);
    }

    /// Removes a run and its log.
    pub(super) fn delete_run(&mut self, id: &str) {
        let Some(run) = self.runs.remove(id) else { return };
        self.index.remove_run(&run);
        self.specs.release(&run);
        for seq in run.log.first_seq..run.log.next_seq {
            self.log_changes.push((logs::chunk_key(id, seq), None));
        }
    }

    /// After a change to run `id`: once nothing of it runs any more, remove
    /// it if its job is gone, or else prune the job's history by count.
    pub(super) fn settle(&mut self, id: &str) {
        let Some(run) = self.runs.get(id) else { return };
        if run.is_active() {
            return;
        }
        let job_uid = run.job_uid.clone();
        let job = self.jobs.get(&run.job).filter(|j| j.uid == job_uid);
        let Some(history) = job.map(|j| j.spec.history.clone()) else {
            self.delete_run(id);
            return;
        };
        // Newest first: keep the first `keep_*` of each class. Slot records
        // (skipped, missed) have their own allowance, so a long run of them
        // never pushes real failures out of the history.
        let (mut succeeded, mut failed, mut slots) = (0u32, 0u32, 0u32);
        let mut doomed = Vec::new();
        for run in self.runs_of_job(&job_uid).rev().filter(|r| !r.is_active()) {
            let (count, keep) = match run.state {
                RunState::Succeeded => (&mut succeeded, history.keep_succeeded),
                RunState::Skipped | RunState::Missed => (&mut slots, history.keep_failed),
                _ => (&mut failed, history.keep_failed),
            };
            *count += 1;
            if *count > keep {
                doomed.push(run.id.clone());
            }
        }
        for id in doomed {
            self.delete_run(&id);
        }
    }

    /// Ids of the active runs of job `job_uid`, oldest first.
    fn active_runs(&self, job_uid: &str) -> Vec<RunId> {
        self.index
            .active_of_job
            .get(job_uid)
            .into_iter()
            .flatten()
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Runs of the job waiting to be placed.
    fn waiting_runs(&self, job_uid: &str) -> usize {
        self.active_runs(job_uid)
            .iter()
            .filter_map(|id| self.runs.get(id))
            .filter(|r| r.state == RunState::Pending)
            .count()
    }

    /// Creates the record of a due slot, by the job's concurrency policy.
    pub(super) fn start_slot(
        &mut self,
        job: &Job,
        slot: DateTime<Utc>,
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> RunState {
        let id = scheduled_run_id(&job.uid, slot);
        if let Some(existing) = self.runs.get(&id) {
            // The cursor makes this impossible; answer the same way anyway.
            return existing.state;
        }
        let mut run = new_run(
            job,
            id.clone(),
            Cause::Scheduled,
            Some(slot),
            BTreeMap::new(),
            now,
            index,
        );
        match job.spec.concurrency {
            Concurrency::Allow => {}
            Concurrency::Forbid => {
                if let Some(blocking) = self.active_runs(&job.uid).first() {
                    run.state = RunState::Skipped;
                    run.reason = Some(Reason::new(
                        ReasonCode::ConcurrencyForbid,
                        format!("run {blocking} was still active (concurrency: forbid)"),
                    ));
                }
            }
            Concurrency::Replace => {
                for old in self.active_runs(&job.uid) {
                    let reason = Reason::new(
                        ReasonCode::Replaced,
                        format!("replaced by run {id} (concurrency: replace)"),
                    );
                    self.cancel_run(&old, reason, now, index);
                    self.settle(&old);
                }
            }
            Concurrency::Queue => {
                let waiting = self.waiting_runs(&job.uid);
                if waiting >= job.spec.max_queued as usize {
                    run.state = RunState::Skipped;
                    run.reason = Some(Reason::new(
                        ReasonCode::QueueFull,
                        format!(
                            "{waiting} runs were already queued (max_queued: {})",
                            job.spec.max_queued
                        ),
                    ));
                }
            }
        }
        if run.state.is_terminal() {
            run.finished_at = Some(now);
        }
        let state = run.state;
        self.put_run(run, index);
        self.settle(&id);
        state
    }

    pub(super) fn trigger(
        &mut self,
        job_name: &str,
        request_id: &str,
        params: &BTreeMap<String, String>,
        force: bool,
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> ApplyResult {
        let Some(job) = self.jobs.get(job_name).cloned() else {
            return Err(Rejection::not_found(format_args!("job {job_name:?}")));
        };
        if let Some(existing) = self.index.requests.get(&job.uid).and_then(|ids| ids.get(request_id))
            && let Some(run) = self.runs.get(existing)
        {
            return Ok(Response::Triggered {
                run: run.clone(),
                existing: true,
            });
        }
        let id = manual_run_id(&job.uid, index);
        let active = self.active_runs(&job.uid);
        if !force {
            match job.spec.concurrency {
                Concurrency::Allow => {}
                Concurrency::Forbid => {
                    if let Some(blocking) = active.first() {
                        return Err(Rejection::failed_precondition(format!(
                            "job {job_name:?} has an active run {blocking} and concurrency: forbid; wait for it, cancel it, or force the trigger"
                        )));
                    }
                }
                Concurrency::Replace => {
                    for old in active {
                        let reason = Reason::new(
                            ReasonCode::Replaced,
                            format!("replaced by run {id} (concurrency: replace)"),
                        );
                        self.cancel_run(&old, reason, now, index);
                        self.settle(&old);
                    }
                }
                Concurrency::Queue => {
                    let waiting = self.waiting_runs(&job.uid);
                    if waiting >= job.spec.max_queued as usize {
                        return Err(Rejection::failed_precondition(format!(
                            "job {job_name:?} already has {waiting} queued runs (max_queued: {}); force the trigger to run it anyway",
                            job.spec.max_queued
                        )));
                    }
                }
            }
        }
        let cause = Cause::Manual {
            request_id: request_id.into(),
            forced: force,
        };
        let run = new_run(&job, id, cause, None, params.clone(), now, index);
        self.put_run(run.clone(), index);
        Ok(Response::Triggered { run, existing: false })
    }

    /// Keeps `trace` (the caller's trace context) with the run a trigger
    /// just created; a run the trigger found existing keeps its own.
    pub(super) fn keep_trace(&mut self, answer: Response, trace: Option<&str>, index: LogIndex) -> Response {
        match (answer, trace) {
            (
                Response::Triggered {
                    mut run,
                    existing: false,
                },
                Some(trace),
            ) => {
                run.trace = Some(trace.to_owned());
                self.put_run(run.clone(), index);
                Response::Triggered { run, existing: false }
            }
            (answer, _) => answer,
        }
    }

    /// Cancels run `id` if it has not finished: pending runs end at once;
    /// a placed attempt is asked to stop. Returns whether it was cancelled.
    pub(super) fn cancel_run(&mut self, id: &str, reason: Reason, now: DateTime<Utc>, index: LogIndex) -> bool {
        let Some(mut run) = self.runs.get(id).cloned() else {
            return false;
        };
        if run.state.is_terminal() {
            return false;
        }
        if let Some(attempt) = run.attempts.last_mut()
            && attempt.is_live()
            && attempt.stop.is_none()
        {
            attempt.stop = Some(StopReason::Cancel);
        }
        run.state = RunState::Cancelled;
        run.reason = Some(reason);
        run.not_before = None;
        run.finished_at = Some(now);
        self.put_run(run, index);
        true
    }

    pub(super) fn cancel(&mut self, id: &str, now: DateTime<Utc>, index: LogIndex) -> ApplyResult {
        let Some(run) = self.runs.get(id) else {
            return Err(Rejection::not_found(format_args!("run {id:?}")));
        };
        if run.state.is_terminal() {
            return Err(Rejection::failed_precondition(format!(
                "run {id} already ended ({})",
                run.state.as_str()
            )));
        }
        self.cancel_run(
            id,
            Reason::new(ReasonCode::CancelRequested, "cancelled on request"),
            now,
            index,
        );
        // Answer with the run as cancelled, even if history retention
        // removes it at once.
        let run = self.runs.get(id).cloned();
        self.settle(id);
        Ok(run.map_or(Response::Empty, Response::Run))
    }

    /// Why pending run `run` has no worker yet, as far as the state can
    /// tell at `now` (it does not know which workers are connected to the
    /// leader); `None` when it can be placed or is not pending.
    pub fn waiting_reason(&self, run: &Run, now: DateTime<Utc>) -> Option<String> {
        if run.state != RunState::Pending {
            return None;
        }
        if let Err(reason) = self.dispatchable(&run.id, now) {
            return Some(match run.not_before {
                Some(at) if at > now => format!("waiting to retry until {}", at.to_rfc3339()),
                _ => reason,
            });
        }
        let driver = run.spec.task.driver.as_str();
        let alive: Vec<&Worker> = self
            .workers
            .iter()
            .map(|(_, w)| w)
            .filter(|w| w.state == WorkerState::Alive)
            .collect();
        if alive.is_empty() {
            return Some("no worker is connected".to_owned());
        }
        let with_driver: Vec<&&Worker> = alive
            .iter()
            .filter(|w| w.drivers.contains(&run.spec.task.driver))
            .collect();
        if with_driver.is_empty() {
            let offered: Vec<String> = alive
                .iter()
                .take(5)
                .map(|w| {
                    let drivers: Vec<&str> = w.drivers.iter().map(|d| d.as_str()).collect();
                    format!("{} [{}]", w.id, drivers.join(","))
                })
                .collect();
            return Some(format!(
                "no alive worker offers the {driver} driver (alive: {})",
                offered.join(", ")
            ));
        }
        let fitting: Vec<&&&Worker> = with_driver
            .iter()
            .filter(|w| run.spec.constraints.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .collect();
        if fitting.is_empty() {
            let wanted: Vec<String> = run.spec.constraints.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return Some(format!(
                "no alive worker with the {driver} driver has the labels {}",
                wanted.join(",")
            ));
        }
        if fitting.iter().all(|w| w.drain.is_some()) {
            return Some("every worker that fits is draining".to_owned());
        }
        let full = fitting.iter().filter(|w| w.drain.is_none()).all(|w| {
            let busy = self.index.on_worker.get(&w.id).map_or(0, |runs| runs.len());
            busy >= w.capacity.slots as usize
        });
        full.then(|| "every worker that fits is busy (no free slot)".to_owned())
    }

    /// Whether run `id` may be placed now. The dispatcher and
    /// [`Op::Assign`](super::Op::Assign) use the same rule: pending, past its
    /// retry backoff, its own last attempt ended, and — unless the job
    /// allows overlap or the trigger was forced — no other attempt of the
    /// job running (and, for `queue`, first in line).
    pub fn dispatchable(&self, id: &str, now: DateTime<Utc>) -> Result<&Run, String> {
        let run = self.runs.get(id).ok_or_else(|| format!("run {id} does not exist"))?;
        if run.state != RunState::Pending {
            return Err(format!("run {id} is {}", run.state.as_str()));
        }
        if run.not_before.is_some_and(|at| at > now) {
            return Err(format!("run {id} waits to retry"));
        }
        if run.live_attempt().is_some() {
            return Err(format!("run {id}'s previous attempt is still being stopped"));
        }
        let forced = matches!(run.cause, Cause::Manual { forced: true, .. });
        if run.spec.concurrency == Concurrency::Allow || forced {
            return Ok(run);
        }
        for (_, other) in self.index.active_of_job.get(&run.job_uid).into_iter().flatten() {
            if **other == *id {
                continue;
            }
            let Some(other) = self.runs.get(other) else { continue };
            if other.live_attempt().is_some() || matches!(other.state, RunState::Assigned | RunState::Running) {
                return Err(format!("run {} of the same job is still running", other.id));
            }
            if run.spec.concurrency == Concurrency::Queue
                && other.state == RunState::Pending
                && other.created_index < run.created_index
            {
                return Err(format!("run {} is ahead in the queue", other.id));
            }
        }
        Ok(run)
    }

    pub(super) fn assign(&mut self, placements: &[Placement], now: DateTime<Utc>, index: LogIndex) -> Response {
        let mut placed = Vec::new();
        let mut refused = Vec::new();
        for placement in placements {
            match self.place(placement, now, index) {
                Ok(()) => placed.push(placement.clone()),
                Err(why) => refused.push((placement.clone(), why)),
            }
        }
        Response::Assigned { placed, refused }
    }

    fn place(&mut self, placement: &Placement, now: DateTime<Utc>, index: LogIndex) -> Result<(), String> {
        let mut run = self.dispatchable(&placement.run, now)?.clone();
        let worker = self
            .workers
            .get(&placement.worker)
            .ok_or_else(|| format!("worker {} is not registered", placement.worker))?;
        if worker.state != WorkerState::Alive {
            return Err(format!("worker {} is lost", worker.id));
        }
        if worker.drain.is_some() {
            return Err(format!("worker {} is draining", worker.id));
        }
        let busy = self.index.on_worker.get(&worker.id).map_or(0, |runs| runs.len());
        if busy >= worker.capacity.slots as usize {
            return Err(format!("worker {} has no free slot", worker.id));
        }
        if !worker.drivers.contains(&run.spec.task.driver) {
            return Err(format!("worker {} has no {:?} driver", worker.id, run.spec.task.driver));
        }
        if let Some((key, value)) = run
            .spec
            .constraints
            .iter()
            .find(|(key, value)| worker.labels.get(*key) != Some(*value))
        {
            return Err(format!("worker {} lacks label {key}={value}", worker.id));
        }
        let number = u32::try_from(run.attempts.len() + 1).unwrap_or(u32::MAX);
        run.attempts.push(Attempt {
            number,
            epoch: index,
            worker: placement.worker.clone(),
            assigned_at: now,
            started_at: None,
            ended_at: None,
            outcome: None,
            exit_code: None,
            oom_killed: false,
            resources: None,
            stop: None,
            message: None,
        });
        run.state = RunState::Assigned;
        run.not_before = None;
        run.reason = None;
        self.put_run(run, index);
        Ok(())
    }

    /// The run and its latest attempt, if a report by `worker` about `epoch`
    /// is current; otherwise the rejection (which changes nothing).
    fn reported_attempt(&self, worker: &str, id: &str, epoch: LogIndex) -> Result<Run, Rejection> {
        let run = self
            .runs
            .get(id)
            .ok_or_else(|| Rejection::not_found(format_args!("run {id:?}")))?;
        let attempt = run
            .current_attempt()
            .ok_or_else(|| Rejection::failed_precondition(format!("run {id} was never assigned to a worker")))?;
        if attempt.epoch != epoch {
            return Err(Rejection::failed_precondition(format!(
                "stale epoch {epoch} for run {id}: its current attempt has epoch {}",
                attempt.epoch
            )));
        }
        if attempt.worker != worker {
            return Err(Rejection::failed_precondition(format!(
                "run {id} is not assigned to worker {worker}"
            )));
        }
        Ok(run.clone())
    }

    pub(super) fn attempt_started(
        &mut self,
        worker: &str,
        id: &str,
        epoch: LogIndex,
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> ApplyResult {
        let mut run = self.reported_attempt(worker, id, epoch)?;
        let Some(attempt) = run.attempts.last_mut().filter(|a| a.is_live()) else {
            return Err(Rejection::failed_precondition(format!(
                "attempt {epoch} of run {id} already ended"
            )));
        };
        if attempt.started_at.is_some() {
            return Ok(Response::Run(run));
        }
        attempt.started_at = Some(now);
        if run.state == RunState::Assigned {
            run.state = RunState::Running;
        }
        self.put_run(run.clone(), index);
        Ok(Response::Run(run))
    }

    pub(super) fn attempt_finished(
        &mut self,
        worker: &str,
        id: &str,
        epoch: LogIndex,
        report: &AttemptReport,
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> ApplyResult {
        let mut run = self.reported_attempt(worker, id, epoch)?;
        let Some(attempt) = run.attempts.last_mut() else {
            return Err(Rejection::failed_precondition(format!("run {id} has no attempt")));
        };
        if !attempt.is_live() {
            // A repeated report (the worker resends after reconnecting).
            return Ok(Response::Run(run));
        }
        let succeeded = report.error.is_none() && report.exit_code == Some(0) && !report.oom_killed;
        let outcome = match attempt.stop {
            Some(StopReason::Timeout) => AttemptOutcome::TimedOut,
            Some(StopReason::Cancel) => AttemptOutcome::Cancelled,
            // Asked to stop for a drain: handed back, unless it finished anyway.
            Some(StopReason::Drain) if !succeeded => AttemptOutcome::HandedBack,
            Some(StopReason::Drain) | None if succeeded => AttemptOutcome::Succeeded,
            Some(StopReason::Drain) | None => AttemptOutcome::Failed,
        };
        attempt.exit_code = report.exit_code;
        attempt.oom_killed = report.oom_killed;
        attempt.resources = report.resources;
        attempt.message = report.error.clone();
        let message = match (&report.error, report.exit_code, report.oom_killed) {
            (Some(error), _, _) => format!("attempt {} could not run: {error}", attempt.number),
            (None, _, true) => format!("attempt {} was killed for running out of memory", attempt.number),
            (None, Some(code), false) => format!("attempt {} exited with code {code}", attempt.number),
            (None, None, false) => format!("attempt {} ended without an exit code", attempt.number),
        };
        end_attempt(&mut run, outcome, message, now);
        self.put_run(run, index);
        self.settle(id);
        Ok(self.runs.get(id).cloned().map_or(Response::Empty, Response::Run))
    }

    pub(super) fn append_logs(
        &mut self,
        worker: &str,
        id: &str,
        epoch: LogIndex,
        chunks: &[LogAppend],
        index: LogIndex,
    ) -> ApplyResult {
        if let Some(big) = chunks.iter().find(|c| c.data.len() > MAX_CHUNK_BYTES) {
            return Err(Rejection::new(
                RejectionKind::InvalidArgument,
                format!(
                    "log chunk of {} bytes exceeds the limit of {MAX_CHUNK_BYTES} bytes",
                    big.data.len()
                ),
            ));
        }
        let mut run = self.reported_attempt(worker, id, epoch)?;
        let log = &mut run.log;
        if log.epoch != epoch {
            log.epoch = epoch;
            log.next_offset = 0;
        }
        // Check the whole batch before changing anything.
        let mut expected = log.next_offset;
        for chunk in chunks {
            if chunk.offset > expected {
                return Err(Rejection::failed_precondition(format!(
                    "log gap for run {id}: expected offset {expected}, got {}; resend from {expected}",
                    chunk.offset
                )));
            }
            expected = expected.max(chunk.offset + chunk.data.len() as u64);
        }
        for chunk in chunks {
            let end = chunk.offset + chunk.data.len() as u64;
            if end <= log.next_offset {
                continue; // already have it
            }
            let skip = usize::try_from(log.next_offset - chunk.offset).unwrap_or(usize::MAX);
            let data = &chunk.data[skip.min(chunk.data.len())..];
            let seq = log.next_seq;
            self.log_changes.push((
                logs::chunk_key(id, seq),
                Some(logs::encode_chunk(epoch, chunk.stream, data)),
            ));
            log.next_seq += 1;
            log.chunk_sizes.push(u32::try_from(data.len()).unwrap_or(u32::MAX));
            log.kept_bytes += data.len() as u64;
            log.next_offset = end;
        }
        // Keep the tail: drop whole chunks from the head.
        while log.kept_bytes > LOG_CAP_BYTES && log.chunk_sizes.len() > 1 {
            let size = u64::from(log.chunk_sizes.remove(0));
            self.log_changes.push((logs::chunk_key(id, log.first_seq), None));
            log.first_seq += 1;
            log.kept_bytes -= size;
            log.dropped_bytes += size;
        }
        self.put_run(run, index);
        Ok(Response::Empty)
    }
}

/// Ends the latest attempt of `run` with `outcome` and, if the attempt was
/// still driving the run, moves the run on: succeeded, retried, or ended by
/// the outcome. (A run already cancelled or retrying only records the end.)
pub(super) fn end_attempt(run: &mut Run, outcome: AttemptOutcome, message: String, now: DateTime<Utc>) {
    let Some(attempt) = run.attempts.last_mut() else { return };
    if !attempt.is_live() {
        return;
    }
    attempt.ended_at = Some(now);
    attempt.outcome = Some(outcome);
    if matches!(run.state, RunState::Assigned | RunState::Running) {
        decide(run, outcome, message, now);
    }
}

/// Attempts that count against `retry.max_attempts` (handed-back ones do not).
pub(super) fn counted_attempts(run: &Run) -> u32 {
    let counted = run
        .attempts
        .iter()
        .filter(|a| a.outcome != Some(AttemptOutcome::HandedBack))
        .count();
    u32::try_from(counted).unwrap_or(u32::MAX)
}

/// Moves a run on after its driving attempt ended: retry if the policy says
/// so and attempts remain, otherwise end the run by the outcome.
pub(super) fn decide(run: &mut Run, outcome: AttemptOutcome, message: String, now: DateTime<Utc>) {
    if outcome == AttemptOutcome::HandedBack {
        // Not the attempt's fault: wait for another worker, no backoff, and
        // it does not count against max_attempts.
        run.state = RunState::Pending;
        run.not_before = None;
        run.reason = Some(Reason::new(
            ReasonCode::HandedBack,
            format!("{message}; waiting for another worker"),
        ));
        return;
    }
    let spec = run.spec.clone();
    let retry = &spec.retry;
    let retryable = match outcome {
        AttemptOutcome::Failed => retry.on.contains(&RetryOn::Failed),
        AttemptOutcome::Lost => retry.on.contains(&RetryOn::Lost),
        AttemptOutcome::TimedOut => retry.on.contains(&RetryOn::TimedOut),
        AttemptOutcome::Succeeded | AttemptOutcome::Cancelled | AttemptOutcome::HandedBack => false,
    };
    let made = counted_attempts(run);
    if retryable && made < retry.max_attempts {
        let delay = retry_delay(retry.backoff, retry.max_backoff, made);
        let at = add(now, delay).unwrap_or(now);
        run.state = RunState::Pending;
        run.not_before = Some(at);
        run.reason = Some(Reason::new(
            ReasonCode::Retrying,
            format!(
                "{message}; retrying (attempt {} of {}) at {}",
                made + 1,
                retry.max_attempts,
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
        return;
    }
    let (state, code) = match outcome {
        AttemptOutcome::Succeeded => (RunState::Succeeded, None),
        AttemptOutcome::Failed => (RunState::Failed, Some(ReasonCode::AttemptFailed)),
        AttemptOutcome::TimedOut => (RunState::TimedOut, Some(ReasonCode::Timeout)),
        AttemptOutcome::Cancelled => (RunState::Cancelled, Some(ReasonCode::CancelRequested)),
        // (HandedBack returned above.)
        AttemptOutcome::Lost | AttemptOutcome::HandedBack => (RunState::Lost, Some(ReasonCode::WorkerLost)),
    };
    run.state = state;
    run.reason = code.map(|code| Reason::new(code, message));
    run.not_before = None;
    run.finished_at = Some(now);
}
