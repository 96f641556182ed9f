//! Derived indexes over the state's tables.
//!
//! Everything here is a pure function of the jobs, runs and workers tables: it is not
//! persisted, it is rebuilt on load, and every change to a job or run goes
//! through [`Index::remove_job`]/[`Index::insert_job`] (or the run
//! equivalents) with the old and new rows, so the incremental index always
//! equals a rebuilt one (a property test checks it). The indexes let a
//! `Tick` touch only what is due, and the dispatcher only what is pending.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

// foldhash, not the standard SipHash: rebuilding the index of a large
// history hashes millions of keys (see docs/architecture.md, "State
// machine").
use foldhash::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::job::Job;
use super::run::{Cause, Run, RunId, RunState, Worker, WorkerId, WorkerState};
use super::tokens::Token;
use super::{LogIndex, schedule};

/// `at + d`, or `None` past the end of time.
pub fn add(at: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    at.checked_add_signed(chrono::Duration::from_std(d).ok()?)
}

/// When a job fires next, given its cursor; `None` if suspended, on demand,
/// or finished.
pub fn job_next_fire(job: &Job) -> Option<DateTime<Utc>> {
    if job.suspended {
        return None;
    }
    let trigger = job.spec.schedule.trigger.as_ref()?;
    schedule::next_fire_after(trigger, job.spec.schedule.timezone, job.anchor, job.cursor)
}

/// Instants at which a `Tick` must look at this run: the live attempt's
/// timeout, and the starting deadline of a scheduled run not yet placed.
pub fn run_deadlines(run: &Run) -> Vec<DateTime<Utc>> {
    let mut deadlines = Vec::new();
    if let Some(attempt) = run.live_attempt()
        && attempt.stop.is_none()
        && !run.state.is_terminal()
        && let Some(timeout) = run.spec.timeout
        && let Some(at) = add(attempt.assigned_at, timeout)
    {
        deadlines.push(at);
    }
    if run.state == RunState::Pending
        && run.cause == Cause::Scheduled
        && run.attempts.iter().all(|a| a.started_at.is_none())
        && let (Some(nominal), Some(deadline)) = (run.nominal_time, run.spec.schedule.starting_deadline)
        && let Some(at) = add(nominal, deadline)
    {
        deadlines.push(at);
    }
    deadlines
}

/// When a finished run's record expires (its history `max_age`).
pub fn run_expiry(run: &Run) -> Option<DateTime<Utc>> {
    if run.is_active() {
        return None;
    }
    add(run.finished_at?, run.spec.history.max_age)
}

/// The derived indexes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Index {
    /// (next fire, job name) of every job with a schedule to fire.
    pub next_fire: BTreeSet<(DateTime<Utc>, String)>,
    /// Every run, in creation order.
    pub all_runs: BTreeSet<(LogIndex, RunId)>,
    /// Every run of each job uid, in creation order.
    pub runs_of_job: HashMap<String, BTreeSet<(LogIndex, RunId)>>,
    /// Active runs (see [`RunRecord::is_active`](super::run::RunRecord::is_active)) of each job
    /// uid, in creation order.
    pub active_of_job: HashMap<String, BTreeSet<(LogIndex, RunId)>>,
    /// Pending runs, in creation order.
    pub pending: BTreeSet<(LogIndex, RunId)>,
    /// Pending runs waiting for a retry backoff, by wake time.
    pub retry_wakeups: BTreeSet<(DateTime<Utc>, RunId)>,
    /// Runs whose latest attempt occupies each worker.
    pub on_worker: HashMap<WorkerId, BTreeSet<RunId>>,
    /// Timeouts and starting deadlines (see [`run_deadlines`]).
    pub deadlines: BTreeSet<(DateTime<Utc>, RunId)>,
    /// Finished runs by expiry (see [`run_expiry`]).
    pub expiries: BTreeSet<(DateTime<Utc>, RunId)>,
    /// Runs by the index of their last change, for watchers.
    pub updated: BTreeSet<(LogIndex, RunId)>,
    /// Manual runs by job uid and request id, for idempotent triggers.
    pub requests: HashMap<String, HashMap<Arc<str>, RunId>>,
    /// Drain deadlines not yet handled, of alive workers.
    pub drains: BTreeSet<(DateTime<Utc>, WorkerId)>,
    /// Token ids by the hash of their secret.
    pub token_by_hash: HashMap<String, String>,
    /// How many runs are in each state (states with none are absent).
    pub runs_in_state: BTreeMap<RunState, u64>,
}

/// When a `Tick` must hand back what a draining worker still runs.
fn drain_deadline(worker: &Worker) -> Option<DateTime<Utc>> {
    let drain = worker.drain.filter(|d| !d.handled)?;
    (worker.state == WorkerState::Alive).then_some(drain.deadline)
}

impl Index {
    /// Adds a job's entries.
    pub fn insert_job(&mut self, job: &Job) {
        if let Some(at) = job_next_fire(job) {
            self.next_fire.insert((at, job.name.clone()));
        }
    }

    /// Removes a job's entries (`job` as it was when inserted).
    pub fn remove_job(&mut self, job: &Job) {
        if let Some(at) = job_next_fire(job) {
            self.next_fire.remove(&(at, job.name.clone()));
        }
    }

    /// Adds a worker's entries.
    pub fn insert_worker(&mut self, worker: &Worker) {
        if let Some(at) = drain_deadline(worker) {
            self.drains.insert((at, worker.id.clone()));
        }
    }

    /// Removes a worker's entries (`worker` as it was when inserted).
    pub fn remove_worker(&mut self, worker: &Worker) {
        if let Some(at) = drain_deadline(worker) {
            self.drains.remove(&(at, worker.id.clone()));
        }
    }

    /// Adds a token's entry.
    pub fn insert_token(&mut self, token: &Token) {
        self.token_by_hash.insert(token.hash.clone(), token.id.clone());
    }

    /// Adds a run's entries.
    pub fn insert_run(&mut self, run: &Run) {
        *self.runs_in_state.entry(run.state).or_default() += 1;
        let id = &run.id;
        let key = || (run.created_index, id.clone());
        for_each_entry(run, |entry| match entry {
            Entry::All => {
                self.all_runs.insert(key());
            }
            Entry::OfJob => insert_into(&mut self.runs_of_job, &run.job_uid, key()),
            Entry::ActiveOfJob => insert_into(&mut self.active_of_job, &run.job_uid, key()),
            Entry::Pending => {
                self.pending.insert(key());
            }
            Entry::RetryWakeup(at) => {
                self.retry_wakeups.insert((at, id.clone()));
            }
            Entry::OnWorker(worker) => insert_on_worker(&mut self.on_worker, worker, id),
            Entry::Deadline(at) => {
                self.deadlines.insert((at, id.clone()));
            }
            Entry::Expiry(at) => {
                self.expiries.insert((at, id.clone()));
            }
            Entry::Updated => {
                self.updated.insert((run.updated_index, id.clone()));
            }
            Entry::Request(request_id) => insert_request(&mut self.requests, &run.job_uid, request_id, id),
        });
    }

    /// The index of all these, built at once: what inserting them one by
    /// one makes, with the large sets of runs built from sorted lists rather
    /// than entry by entry (a start rebuilds the index of every run).
    pub fn rebuilt<'a>(
        jobs: impl Iterator<Item = &'a Job>,
        runs: impl Iterator<Item = &'a Run>,
        workers: impl Iterator<Item = &'a Worker>,
        tokens: impl Iterator<Item = &'a Token>,
    ) -> Index {
        let mut index = Index::default();
        // A set of runs for about each job: sized once, not rehashed as it
        // grows.
        index.runs_of_job.reserve(jobs.size_hint().0);
        for job in jobs {
            index.insert_job(job);
        }
        let mut all_runs = Vec::new();
        let mut pending = Vec::new();
        let mut retry_wakeups = Vec::new();
        let mut deadlines = Vec::new();
        let mut expiries = Vec::new();
        let mut updated = Vec::new();
        for run in runs {
            *index.runs_in_state.entry(run.state).or_default() += 1;
            let id = &run.id;
            let key = || (run.created_index, id.clone());
            for_each_entry(run, |entry| match entry {
                Entry::All => all_runs.push(key()),
                Entry::OfJob => insert_into(&mut index.runs_of_job, &run.job_uid, key()),
                Entry::ActiveOfJob => insert_into(&mut index.active_of_job, &run.job_uid, key()),
                Entry::Pending => pending.push(key()),
                Entry::RetryWakeup(at) => retry_wakeups.push((at, id.clone())),
                Entry::OnWorker(worker) => insert_on_worker(&mut index.on_worker, worker, id),
                Entry::Deadline(at) => deadlines.push((at, id.clone())),
                Entry::Expiry(at) => expiries.push((at, id.clone())),
                Entry::Updated => updated.push((run.updated_index, id.clone())),
                Entry::Request(request_id) => insert_request(&mut index.requests, &run.job_uid, request_id, id),
            });
        }
        // `from_iter` sorts (in linear time when sorted already, as runs
        // in creation order give `all_runs` and mostly `updated`), then
        // fills each node of the tree once.
        index.all_runs = BTreeSet::from_iter(all_runs);
        index.pending = BTreeSet::from_iter(pending);
        index.retry_wakeups = BTreeSet::from_iter(retry_wakeups);
        index.deadlines = BTreeSet::from_iter(deadlines);
        index.expiries = BTreeSet::from_iter(expiries);
        index.updated = BTreeSet::from_iter(updated);
        for worker in workers {
            index.insert_worker(worker);
        }
        for token in tokens {
            index.insert_token(token);
        }
        index
    }

    /// Removes a run's entries (`run` as it was when inserted).
    pub fn remove_run(&mut self, run: &Run) {
        if let Some(count) = self.runs_in_state.get_mut(&run.state) {
            *count -= 1;
            if *count == 0 {
                self.runs_in_state.remove(&run.state);
            }
        }
        let id = &run.id;
        let key = (run.created_index, id.clone());
        for_each_entry(run, |entry| match entry {
            Entry::All => {
                self.all_runs.remove(&key);
            }
            Entry::OfJob => remove_from(&mut self.runs_of_job, &run.job_uid, &key),
            Entry::ActiveOfJob => remove_from(&mut self.active_of_job, &run.job_uid, &key),
            Entry::Pending => {
                self.pending.remove(&key);
            }
            Entry::RetryWakeup(at) => {
                self.retry_wakeups.remove(&(at, id.clone()));
            }
            Entry::OnWorker(worker) => remove_from(&mut self.on_worker, worker, id),
            Entry::Deadline(at) => {
                self.deadlines.remove(&(at, id.clone()));
            }
            Entry::Expiry(at) => {
                self.expiries.remove(&(at, id.clone()));
            }
            Entry::Updated => {
                self.updated.remove(&(run.updated_index, id.clone()));
            }
            // Only while it names this run: a request id maps to one run.
            Entry::Request(request_id) => {
                if let Some(ids) = self.requests.get_mut(&run.job_uid)
                    && ids.get(request_id) == Some(id)
                {
                    ids.remove(request_id);
                    if ids.is_empty() {
                        self.requests.remove(&run.job_uid);
                    }
                }
            }
        });
    }
}

/// One place a run appears in the index (see [`for_each_entry`]).
enum Entry<'a> {
    /// `all_runs`.
    All,
    /// `runs_of_job`.
    OfJob,
    /// `active_of_job`.
    ActiveOfJob,
    /// `pending`.
    Pending,
    /// `retry_wakeups`, at this time.
    RetryWakeup(DateTime<Utc>),
    /// `on_worker`, of this worker.
    OnWorker(&'a WorkerId),
    /// `deadlines`, at this time.
    Deadline(DateTime<Utc>),
    /// `expiries`, at this time.
    Expiry(DateTime<Utc>),
    /// `updated`.
    Updated,
    /// `requests`, under this request id.
    Request(&'a Arc<str>),
}

/// Every place `run` appears in the index (besides its count in
/// `runs_in_state`): the one account of it that [`Index::insert_run`],
/// [`Index::rebuilt`] and [`Index::remove_run`] follow.
fn for_each_entry<'a>(run: &'a Run, mut add: impl FnMut(Entry<'a>)) {
    add(Entry::All);
    add(Entry::OfJob);
    if run.is_active() {
        add(Entry::ActiveOfJob);
    }
    if run.state == RunState::Pending {
        add(Entry::Pending);
        if let Some(at) = run.not_before {
            add(Entry::RetryWakeup(at));
        }
    }
    if let Some(attempt) = run.live_attempt() {
        add(Entry::OnWorker(&attempt.worker));
    }
    for at in run_deadlines(run) {
        add(Entry::Deadline(at));
    }
    if let Some(at) = run_expiry(run) {
        add(Entry::Expiry(at));
    }
    add(Entry::Updated);
    if let Cause::Manual { request_id, .. } = &run.cause {
        add(Entry::Request(request_id));
    }
}

fn insert_on_worker(on_worker: &mut HashMap<WorkerId, BTreeSet<RunId>>, worker: &WorkerId, id: &RunId) {
    on_worker.entry(worker.clone()).or_default().insert(id.clone());
}

fn insert_request(
    requests: &mut HashMap<String, HashMap<Arc<str>, RunId>>,
    job_uid: &str,
    request_id: &Arc<str>,
    id: &RunId,
) {
    let ids = match requests.get_mut(job_uid) {
        Some(ids) => ids,
        None => requests.entry(job_uid.to_owned()).or_default(),
    };
    ids.insert(request_id.clone(), id.clone());
}

/// Adds `value` to the set under `key` (copying `key` only for a new set).
fn insert_into<V: Ord>(map: &mut HashMap<String, BTreeSet<V>>, key: &str, value: V) {
    match map.get_mut(key) {
        Some(set) => {
            set.insert(value);
        }
        None => {
            map.insert(key.to_owned(), BTreeSet::from([value]));
        }
    }
}

/// Removes `value` from the set under `key`, dropping the set when empty.
fn remove_from<K, V>(map: &mut HashMap<K, BTreeSet<V>>, key: &K, value: &V)
where
    K: std::hash::Hash + Eq,
    V: Ord,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
