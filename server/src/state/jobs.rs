//! Job operations: create, update, apply, delete, suspend and resume.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::run::{Reason, ReasonCode};
use super::{ApplyOutcome, ApplyResult, Job, JobSpec, LogIndex, Rejection, Response, State};

fn new_job(uid: &str, spec: &JobSpec, now: DateTime<Utc>, index: LogIndex) -> Job {
    Job {
        name: spec.name.clone(),
        uid: uid.to_owned(),
        generation: 1,
        spec: Arc::new(spec.clone()),
        suspended: false,
        created_at: now,
        updated_at: now,
        revision: index,
        cursor: now,
        anchor: now,
    }
}

fn updated_job(current: &Job, spec: &JobSpec, now: DateTime<Utc>, index: LogIndex) -> Job {
    // A new schedule starts from now: no catch-up across a schedule change.
    let rescheduled = current.spec.schedule != spec.schedule;
    Job {
        generation: current.generation + 1,
        spec: Arc::new(spec.clone()),
        updated_at: now,
        revision: index,
        // Never backwards, even under a leader whose clock is behind: slots
        // up to the old cursor were handled.
        cursor: if rescheduled {
            now.max(current.cursor)
        } else {
            current.cursor
        },
        anchor: if rescheduled { now } else { current.anchor },
        ..current.clone()
    }
}

/// The job an apply of `spec` yields, given the current one.
pub(super) fn applied_job(
    current: Option<&Job>,
    uid: &str,
    spec: &JobSpec,
    now: DateTime<Utc>,
    index: LogIndex,
) -> (Job, ApplyOutcome) {
    match current {
        None => (new_job(uid, spec, now, index), ApplyOutcome::Created),
        Some(current) if *current.spec == *spec => (current.clone(), ApplyOutcome::Unchanged),
        Some(current) => (updated_job(current, spec, now, index), ApplyOutcome::Updated),
    }
}

impl State {
    /// Stores `job`, keeping the indexes in step.
    pub(super) fn put_job(&mut self, job: Job) {
        if let Some(old) = self.jobs.get(&job.name) {
            self.index.remove_job(old);
        }
        self.index.insert_job(&job);
        self.jobs.insert(job.name.clone(), job);
    }

    pub(super) fn create_job(&mut self, uid: &str, spec: &JobSpec, now: DateTime<Utc>, index: LogIndex) -> ApplyResult {
        if self.jobs.get(&spec.name).is_some() {
            return Err(Rejection::already_exists(format_args!("job {:?}", spec.name)));
        }
        let job = new_job(uid, spec, now, index);
        self.put_job(job.clone());
        Ok(Response::Job(job))
    }

    pub(super) fn update_job(
        &mut self,
        spec: &JobSpec,
        expected_generation: Option<u64>,
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> ApplyResult {
        let Some(current) = self.jobs.get(&spec.name) else {
            return Err(Rejection::not_found(format_args!("job {:?}", spec.name)));
        };
        if let Some(expected) = expected_generation
            && expected != current.generation
        {
            return Err(Rejection::failed_precondition(format!(
                "job {:?} is at generation {}, not the expected {expected}",
                spec.name, current.generation
            )));
        }
        if *current.spec == *spec {
            return Ok(Response::Job(current.clone()));
        }
        let job = updated_job(current, spec, now, index);
        self.put_job(job.clone());
        Ok(Response::Job(job))
    }

    pub(super) fn apply_job(&mut self, uid: &str, spec: &JobSpec, now: DateTime<Utc>, index: LogIndex) -> ApplyResult {
        let previous = self.jobs.get(&spec.name).cloned();
        let (job, outcome) = applied_job(previous.as_ref(), uid, spec, now, index);
        if outcome != ApplyOutcome::Unchanged {
            self.put_job(job.clone());
        }
        Ok(Response::Applied { job, outcome, previous })
    }

    pub(super) fn delete_job(
        &mut self,
        name: &str,
        expected_uid: Option<&str>,
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> ApplyResult {
        let Some(current) = self.jobs.get(name) else {
            return Err(Rejection::not_found(format_args!("job {name:?}")));
        };
        if let Some(expected) = expected_uid
            && expected != current.uid
        {
            return Err(Rejection::failed_precondition(format!(
                "job {name:?} has uid {}, not the expected {expected}",
                current.uid
            )));
        }
        let deleted = current.clone();
        self.index.remove_job(&deleted);
        self.jobs.remove(name);
        // Active runs are cancelled (their attempts stopped); every run of
        // the job is removed once nothing of it runs any more.
        let runs: Vec<_> = self.runs_of_job(&deleted.uid).map(|r| r.id.clone()).collect();
        for id in runs {
            let reason = Reason::new(ReasonCode::JobDeleted, format!("job {name:?} was deleted"));
            self.cancel_run(&id, reason, now, index);
            self.settle(&id);
        }
        Ok(Response::Job(deleted))
    }

    pub(super) fn set_suspended(
        &mut self,
        name: &str,
        suspended: bool,
        now: DateTime<Utc>,
        index: LogIndex,
    ) -> ApplyResult {
        let Some(current) = self.jobs.get(name) else {
            return Err(Rejection::not_found(format_args!("job {name:?}")));
        };
        if current.suspended == suspended {
            return Ok(Response::Job(current.clone()));
        }
        let mut job = current.clone();
        job.suspended = suspended;
        job.updated_at = now;
        job.revision = index;
        if !suspended {
            // Slots that fell while suspended are not owed.
            job.cursor = now.max(job.cursor);
        }
        self.put_job(job.clone());
        Ok(Response::Job(job))
    }
}
