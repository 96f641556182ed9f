//! Time-driven transitions, all in one command: [`Op::Tick`](super::Op::Tick).
//!
//! The leader proposes a `Tick` when the derived index says something is due
//! at its clock's time; every node applies it with the time stamped in the
//! command, so they agree on what fired. A `Tick` handles, in order:
//! 1. **schedule slots** of every job whose next slot is due: each slot
//!    between the job's cursor and the tick's time yields exactly one record
//!    (a run, a `Skipped` run, or a `Missed` record covering a range of
//!    slots), then the cursor moves past them;
//! 2. **deadlines**: attempts past their timeout are stopped (and their runs
//!    retried or ended), scheduled runs not started within their starting
//!    deadline become `Missed`;
//! 3. **history expiry**: finished runs older than their `max_age` go;
//! 4. **drains**: attempts a draining worker still runs at its drain
//!    deadline are asked to stop, to be handed back.
//!
//! Which due slots run follows BRIEF §4. A slot more than the *on-time
//! tolerance* behind the tick — [`DEFAULT_MISSED_AFTER`], or the job's
//! `starting_deadline` if shorter — is *late*: the cluster was down or had no
//! leader when it fell. A late slot past its `starting_deadline` can no
//! longer start and is `Missed`. The other late slots follow `catch_up`:
//! `none` runs none of them; `latest` runs the most recent one unless an
//! on-time slot supersedes it; `all` runs the most recent `max_catch_up`.
//! Late slots not run become `Missed` records, one per reason per tick,
//! covering their range, with the reason.
//!
//! Work per tick is bounded: at most [`MAX_JOBS_PER_TICK`] jobs, a scan of
//! at most [`MAX_SLOTS_PER_JOB`] slots per job, [`MAX_SCANNED_PER_TICK`]
//! slots and [`MAX_RECORDS_PER_TICK`] records in all, and as many deadlines
//! and expiries; the summary says when more was due, and the leader ticks
//! again at once.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::index::add;
use super::job::CatchUp;
use super::job::format_duration;
use super::run::{AttemptOutcome, Cause, Reason, ReasonCode, Run, RunId, RunState, StopReason};
use super::runs::{decide, new_run, scheduled_run_id};
use super::schedule::next_fire_after;
use super::{Job, LogIndex, State};

/// Slots up to this far behind the tick are on time (unless the job's
/// `starting_deadline` is shorter); older ones are late.
pub const DEFAULT_MISSED_AFTER: Duration = Duration::from_secs(60);

/// Slots examined per job per tick; a longer backlog is entirely older than
/// any slot worth running, and continues next tick.
const MAX_SLOTS_PER_JOB: usize = 100_000;

/// Jobs fired per tick; the rest fire in the next one.
const MAX_JOBS_PER_TICK: usize = 1_000;

/// Slots examined per tick across jobs; no new job is started past it.
const MAX_SCANNED_PER_TICK: usize = 200_000;

/// Records created per tick across jobs; no new job is started past it.
const MAX_RECORDS_PER_TICK: usize = 10_000;

/// Deadlines, and expiries, handled per tick.
const MAX_RUNS_PER_TICK: usize = 10_000;

/// What is left of a tick's allowance.
#[derive(Debug, Default)]
struct Spent {
    scanned: usize,
    records: usize,
}

impl Spent {
    fn exhausted(&self) -> bool {
        self.scanned >= MAX_SCANNED_PER_TICK || self.records >= MAX_RECORDS_PER_TICK
    }
}

/// What a tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickSummary {
    /// Runs created for due slots.
    pub runs_created: u64,
    /// Slots skipped by a concurrency policy.
    pub skipped: u64,
    /// Slots recorded as missed.
    pub missed_slots: u64,
    /// Attempts stopped for exceeding their timeout.
    pub timed_out: u64,
    /// Runs missed because they did not start within their starting deadline.
    pub deadline_missed: u64,
    /// Finished runs removed for age.
    pub expired: u64,
    /// Attempts of draining workers asked to stop at the drain deadline.
    #[serde(default)]
    pub handed_back: u64,
    /// Whether more work was already due when the tick stopped.
    pub more_due: bool,
}

impl State {
    pub(super) fn tick(&mut self, now: DateTime<Utc>, index: LogIndex) -> TickSummary {
        let mut summary = TickSummary::default();
        let due_jobs: Vec<String> = self
            .index
            .next_fire
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(MAX_JOBS_PER_TICK)
            .map(|(_, name)| name.clone())
            .collect();
        let mut spent = Spent::default();
        for name in due_jobs {
            if spent.exhausted() {
                break;
            }
            self.fire(&name, now, index, &mut summary, &mut spent);
        }

        let due_runs: Vec<RunId> = self
            .index
            .deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(MAX_RUNS_PER_TICK)
            .map(|(_, id)| id.clone())
            .collect();
        for id in due_runs {
            self.run_deadline(&id, now, index, &mut summary);
        }

        let expired: Vec<RunId> = self
            .index
            .expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(MAX_RUNS_PER_TICK)
            .map(|(_, id)| id.clone())
            .collect();
        for id in expired {
            self.delete_run(&id);
            summary.expired += 1;
        }

        let drained: Vec<String> = self
            .index
            .drains
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(MAX_RUNS_PER_TICK)
            .map(|(_, id)| id.clone())
            .collect();
        for id in drained {
            summary.handed_back += self.drain_deadline(&id, now, index);
        }

        fn due<K>(first: Option<&(DateTime<Utc>, K)>, now: DateTime<Utc>) -> bool {
            first.is_some_and(|(at, _)| *at <= now)
        }
        summary.more_due = due(self.index.next_fire.first(), now)
            || due(self.index.deadlines.first(), now)
            || due(self.index.expiries.first(), now)
            || due(self.index.drains.first(), now);
        summary
    }

    /// Stores a `Missed` record of late slots that are not run.
    fn record_missed(&mut self, record: Run, index: LogIndex, summary: &mut TickSummary) {
        let id = record.id.clone();
        if self.runs.get(&id).is_none() {
            summary.missed_slots += record.slot_count;
            self.put_run(record, index);
            self.settle(&id);
        }
    }

    /// Handles the due slots of job `name`.
    fn fire(&mut self, name: &str, now: DateTime<Utc>, index: LogIndex, summary: &mut TickSummary, spent: &mut Spent) {
        let Some(mut job) = self.jobs.get(name).cloned() else {
            return;
        };
        let Some(trigger) = job.spec.schedule.trigger.clone() else {
            return;
        };
        let schedule = job.spec.schedule.clone();
        let on_time = schedule
            .starting_deadline
            .map_or(DEFAULT_MISSED_AFTER, |d| d.min(DEFAULT_MISSED_AFTER));
        let keep_late = match schedule.catch_up {
            CatchUp::None => 0,
            CatchUp::Latest => 1,
            CatchUp::All => schedule.max_catch_up as usize,
        };
        let older_than = |slot: DateTime<Utc>, age: Duration| add(slot, age).is_some_and(|limit| limit < now);

        // One pass over the due slots, oldest first. Slots past the starting
        // deadline are counted as one range; late ones are counted, with the
        // last `keep_late` kept in a ring; on-time ones are all kept.
        let mut cursor = job.cursor;
        let mut scanned = 0usize;
        let mut truncated = false;
        let mut expired: Option<(DateTime<Utc>, DateTime<Utc>, u64)> = None;
        let mut late_total = 0u64;
        let mut first_late = None;
        let mut last_dropped = None;
        let mut kept_late: VecDeque<DateTime<Utc>> = VecDeque::new();
        let mut on_time_slots = Vec::new();
        while let Some(slot) = next_fire_after(&trigger, schedule.timezone, job.anchor, cursor) {
            if slot > now {
                break;
            }
            if scanned == MAX_SLOTS_PER_JOB {
                truncated = true;
                break;
            }
            scanned += 1;
            cursor = slot;
            if schedule.starting_deadline.is_some_and(|d| older_than(slot, d)) {
                let range = expired.get_or_insert((slot, slot, 0));
                range.1 = slot;
                range.2 += 1;
            } else if older_than(slot, on_time) {
                late_total += 1;
                first_late.get_or_insert(slot);
                kept_late.push_back(slot);
                if kept_late.len() > keep_late {
                    last_dropped = kept_late.pop_front();
                }
            } else {
                on_time_slots.push(slot);
            }
        }
        spent.scanned += scanned;
        if scanned == 0 {
            // Due by the index but nothing found (a schedule exhausted at the
            // edge of time): move on rather than stay due forever.
            cursor = now.max(job.cursor);
        }
        // A later slot supersedes missed ones under `latest`; a backlog too
        // long for one tick is entirely older than any slot worth running.
        if truncated || (schedule.catch_up == CatchUp::Latest && !on_time_slots.is_empty()) {
            if let Some(last) = kept_late.back() {
                last_dropped = Some(*last);
            }
            kept_late.clear();
        }

        if let Some(range) = expired {
            let deadline = schedule.starting_deadline.map(format_duration).unwrap_or_default();
            let why = format!("could no longer start: more than {deadline} late (starting_deadline)");
            let record = missed_record(&job, range, (ReasonCode::StartingDeadline, why), now, index);
            self.record_missed(record, index, summary);
            spent.records += 1;
        }
        let dropped = late_total - kept_late.len() as u64;
        if let (Some(first), Some(last)) = (first_late, last_dropped)
            && dropped > 0
        {
            let reason = match schedule.catch_up {
                CatchUp::None => (
                    ReasonCode::CatchUpNone,
                    "were missed and not caught up (catch_up: none)".to_owned(),
                ),
                CatchUp::Latest => (
                    ReasonCode::Superseded,
                    "were missed; only the latest slot is caught up (catch_up: latest)".to_owned(),
                ),
                CatchUp::All => (
                    ReasonCode::BeyondMaxCatchUp,
                    format!("were missed beyond max_catch_up ({})", schedule.max_catch_up),
                ),
            };
            let record = missed_record(&job, (first, last, dropped), reason, now, index);
            self.record_missed(record, index, summary);
            spent.records += 1;
        }

        for slot in kept_late.into_iter().chain(on_time_slots) {
            match self.start_slot(&job, slot, now, index) {
                RunState::Skipped => summary.skipped += 1,
                _ => summary.runs_created += 1,
            }
            spent.records += 1;
        }

        job.cursor = cursor;
        self.put_job(job);
    }

    /// Handles the deadlines of run `id` that have passed.
    fn run_deadline(&mut self, id: &str, now: DateTime<Utc>, index: LogIndex, summary: &mut TickSummary) {
        let Some(mut run) = self.runs.get(id).cloned() else {
            return;
        };
        let mut changed = false;

        let timeout = run.spec.timeout;
        let driving = matches!(run.state, RunState::Assigned | RunState::Running);
        if let Some(attempt) = run.attempts.last_mut()
            && attempt.is_live()
            && attempt.stop.is_none()
            && driving
            && let Some(timeout) = timeout
            && add(attempt.assigned_at, timeout).is_some_and(|at| at <= now)
        {
            attempt.stop = Some(StopReason::Timeout);
            let message = format!(
                "attempt {} exceeded the timeout of {}",
                attempt.number,
                format_duration(timeout)
            );
            decide(&mut run, AttemptOutcome::TimedOut, message, now);
            summary.timed_out += 1;
            changed = true;
        }

        if run.state == RunState::Pending
            && run.cause == Cause::Scheduled
            && run.attempts.iter().all(|a| a.started_at.is_none())
            && let (Some(nominal), Some(deadline)) = (run.nominal_time, run.spec.schedule.starting_deadline)
            && add(nominal, deadline).is_some_and(|at| at <= now)
        {
            run.state = RunState::Missed;
            run.not_before = None;
            run.finished_at = Some(now);
            run.reason = Some(Reason::new(
                ReasonCode::StartingDeadline,
                format!(
                    "not started within {} of its slot (starting_deadline); no worker could take it",
                    format_duration(deadline)
                ),
            ));
            summary.deadline_missed += 1;
            changed = true;
        }

        if changed {
            self.put_run(run, index);
            self.settle(id);
        }
    }
}

/// A `Missed` record of the late slots `first..=last` (`count` of them).
fn missed_record(
    job: &Job,
    (first, last, count): (DateTime<Utc>, DateTime<Utc>, u64),
    (code, why): (ReasonCode, String),
    now: DateTime<Utc>,
    index: LogIndex,
) -> Run {
    let mut record = new_run(
        job,
        scheduled_run_id(&job.uid, first),
        Cause::Scheduled,
        Some(first),
        Default::default(),
        now,
        index,
    );
    record.last_nominal_time = Some(last);
    record.slot_count = count;
    record.state = RunState::Missed;
    record.finished_at = Some(now);
    record.reason = Some(Reason::new(
        code,
        format!(
            "{count} slot(s) from {} to {} {why}",
            first.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            last.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
    ));
    record
}
