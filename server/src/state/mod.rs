//! The replicated domain — jobs, runs, workers — and the commands that
//! change it.
//!
//! [`apply`] is the state machine's transition function. It is **pure and
//! deterministic**: no clock, no randomness, no I/O. Everything that varies
//! between nodes — the leader's wall clock, fresh uids — enters inside the
//! [`Command`], stamped once by the leader before the command is proposed;
//! the Raft log index enters as an argument (it is the epoch of attempts
//! assigned by the command, and the id of manual runs). Every node that
//! applies the same log therefore reaches the same state and gives the same
//! answers.
//!
//! A command that is not allowed (a create for a name that exists, a report
//! with a stale epoch) is *rejected*: [`Rejection`] is a replicated answer
//! that goes back to the caller and changes nothing, not an error of the node.
//!
//! Time-driven transitions — schedule slots, timeouts, starting deadlines,
//! history expiry — all happen in one command, [`Op::Tick`], which the leader
//! proposes when the derived [`index`] says something is due. So a new
//! leader continues exactly where the old one stopped: the cursors, retry
//! times and deadlines are all in replicated state.
//!
//! The state also defines its persisted layout — a flat key/value projection
//! of its tables (see [`State::take_changes`]) — so the store stays ignorant of
//! the domain and only deals with bytes and durability. Log chunks are
//! written as rows but not kept in memory ([`logs`]).

pub mod index;
mod instant;
pub mod job;
mod jobs;
pub mod logs;
pub mod run;
mod runs;
pub mod schedule;
mod specs;
mod table;
mod tick;
pub mod tokens;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use specs::Specs;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use index::Index;
pub use job::{Job, JobSpec};
pub use run::{Run, RunId, RunRecord, RunState, Worker, WorkerId};
pub use table::Table;
pub use tick::TickSummary;
pub use tokens::{Token, TokenRole};

/// A Raft log index.
pub type LogIndex = u64;

/// A proposed change, as it travels through the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The leader's wall clock when it proposed the command.
    pub now: DateTime<Utc>,
    /// What to do.
    pub op: Op,
}

/// An attempt a worker says it still holds when it registers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeldAttempt {
    /// The run.
    pub run: RunId,
    /// The attempt's epoch.
    pub epoch: LogIndex,
}

/// What a worker offers, as it says when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Labels matched against job constraints.
    pub labels: BTreeMap<String, String>,
    /// What it can run at once.
    pub capacity: run::Capacity,
    /// Drivers it offers.
    pub drivers: BTreeSet<job::Driver>,
}

/// A run to place on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The pending run.
    pub run: RunId,
    /// The worker.
    pub worker: WorkerId,
}

/// A piece of a task's output, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAppend {
    /// Offset of the first byte within the attempt's output (from 0).
    pub offset: u64,
    /// Which output.
    pub stream: logs::LogStream,
    /// The bytes.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

/// How an attempt ended, as its worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// Exit code, if the process exited.
    pub exit_code: Option<i32>,
    /// Whether the OOM killer ended it.
    pub oom_killed: bool,
    /// Resource use, if measured.
    pub resources: Option<run::ResourceUse>,
    /// Why it could not run (image missing, driver error), if so.
    pub error: Option<String>,
}

/// The operations of the state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Op {
    /// Create a job; rejected if the name is taken.
    CreateJob {
        /// Identity of the new job, chosen by the leader.
        uid: String,
        /// The validated definition.
        spec: JobSpec,
    },
    /// Replace the spec of an existing job.
    UpdateJob {
        /// The validated definition; its name selects the job.
        spec: JobSpec,
        /// Reject unless the job is at this generation.
        expected_generation: Option<u64>,
    },
    /// Create the job, or update it if the spec differs.
    ApplyJob {
        /// Identity used if the job is created.
        uid: String,
        /// The validated definition.
        spec: JobSpec,
    },
    /// Delete a job; its active runs are cancelled, its history removed.
    DeleteJob {
        /// The job.
        name: String,
        /// Reject unless the job has this uid.
        expected_uid: Option<String>,
    },
    /// Suspend or resume a job's schedule.
    SetJobSuspended {
        /// The job.
        name: String,
        /// The new value.
        suspended: bool,
    },
    /// Everything due by the command's time: schedule slots, timeouts,
    /// starting deadlines, history expiry.
    Tick,
    /// Run a job now.
    TriggerRun {
        /// The job.
        job: String,
        /// The client's idempotency key: a retry with the same key gets the
        /// same run.
        request_id: String,
        /// Parameters, given to the task as environment variables.
        params: BTreeMap<String, String>,
        /// Ignore the concurrency policy.
        force: bool,
        /// W3C trace context of the call that asked (kept with the run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<String>,
    },
    /// Cancel a run.
    CancelRun {
        /// The run.
        run: RunId,
    },
    /// A worker connected (or reconnected) and says what it still holds.
    RegisterWorker {
        /// Its id.
        worker: WorkerId,
        /// What it offers.
        info: WorkerInfo,
        /// Attempts it still runs.
        held: Vec<HeldAttempt>,
    },
    /// A worker's lease expired (plus grace).
    WorkerLost {
        /// Its id.
        worker: WorkerId,
        /// The registration (its Raft index) the leader saw expire; if the
        /// worker registered again since, the command is refused.
        session: LogIndex,
    },
    /// Starts (or ends) a worker's drain: it gets no new attempts, and those
    /// it still runs when `within` has passed are stopped and handed back.
    DrainWorker {
        /// Its id.
        worker: WorkerId,
        /// How long its attempts may still run; `None` ends the drain.
        within: Option<Duration>,
        /// Asked for by an operator (kept across the worker's registrations)
        /// rather than by the worker shutting down.
        by_operator: bool,
    },
    /// Place pending runs on workers; each placement is checked again and
    /// the ones no longer possible are refused individually.
    Assign {
        /// The placements.
        placements: Vec<Placement>,
    },
    /// A worker started an attempt.
    AttemptStarted {
        /// The reporting worker.
        worker: WorkerId,
        /// The run.
        run: RunId,
        /// The attempt's epoch.
        epoch: LogIndex,
    },
    /// An attempt ended on its worker.
    AttemptFinished {
        /// The reporting worker.
        worker: WorkerId,
        /// The run.
        run: RunId,
        /// The attempt's epoch.
        epoch: LogIndex,
        /// What happened.
        report: AttemptReport,
    },
    /// Output of an attempt.
    AppendLogs {
        /// The reporting worker.
        worker: WorkerId,
        /// The run.
        run: RunId,
        /// The attempt's epoch.
        epoch: LogIndex,
        /// The pieces, in order.
        chunks: Vec<LogAppend>,
    },
    /// Create an API token (its secret only as a hash).
    CreateToken {
        /// The token; its times and revision are set when applied.
        token: Token,
    },
    /// Revoke an API token.
    RevokeToken {
        /// Its id.
        id: String,
    },
    /// Several proposals made at the same time, in one log entry (group
    /// commit, see `node::batch`): applied in order, each as if it were an
    /// entry of its own at this entry's index, each with its own answer.
    /// No two touch the same object ([`Op::batch_key`]), so sharing the
    /// index never makes two ids equal — except a worker's reports on a
    /// run ([`Op::shares_entries`]), which derive no id from it.
    Batch {
        /// The proposals, each with its own clock stamp.
        commands: Vec<Command>,
    },
}

/// What an apply did (or would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// The job did not exist and was created.
    Created,
    /// The spec differed and was replaced.
    Updated,
    /// The spec was identical; nothing changed.
    Unchanged,
}

/// The answer to an accepted command.
// Responses live only until they reach the caller; boxing the large variants
// would cost an allocation per command for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// For commands with nothing to say, and log entries without a command.
    Empty,
    /// The job after the command (before it, for a delete).
    Job(Job),
    /// The result of [`Op::ApplyJob`].
    Applied {
        /// The job after the apply.
        job: Job,
        /// What happened.
        outcome: ApplyOutcome,
        /// The job before the apply, if it existed.
        previous: Option<Job>,
    },
    /// The run after the command.
    Run(Run),
    /// The result of [`Op::TriggerRun`].
    Triggered {
        /// The run.
        run: Run,
        /// Whether an earlier trigger with the same request id made it.
        existing: bool,
    },
    /// The result of [`Op::Tick`].
    Ticked(TickSummary),
    /// The result of [`Op::RegisterWorker`]: attempts the worker holds but
    /// must stop, and runs it no longer held (ended as lost).
    Registered {
        /// Stop these.
        stop: Vec<HeldAttempt>,
        /// These were assigned to it but it does not hold them.
        lost: Vec<RunId>,
    },
    /// The worker after the command.
    Worker(Worker),
    /// The token after the command.
    Token(Token),
    /// The result of [`Op::Assign`].
    Assigned {
        /// Placements made, with the epoch of each new attempt.
        placed: Vec<Placement>,
        /// Placements refused, with the reason.
        refused: Vec<(Placement, String)>,
    },
    /// The results of an [`Op::Batch`], one per command, in order.
    Batch(Vec<ApplyResult>),
}

/// Why a command was refused. Deterministic: every node refuses it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// The class of refusal (maps to a gRPC status code).
    pub kind: RejectionKind,
    /// A precise, human-readable reason.
    pub message: String,
}

/// Classes of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// The named object does not exist.
    NotFound,
    /// An object with that name exists.
    AlreadyExists,
    /// The object is not in the state the command requires (a stale epoch,
    /// a run already finished).
    FailedPrecondition,
    /// The command carries a value that can never be accepted.
    InvalidArgument,
}

impl Rejection {
    fn new(kind: RejectionKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(RejectionKind::NotFound, format!("{what} not found"))
    }

    fn already_exists(what: impl std::fmt::Display) -> Self {
        Self::new(RejectionKind::AlreadyExists, format!("{what} already exists"))
    }

    fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(RejectionKind::FailedPrecondition, message)
    }
}

/// Result of applying one command.
pub type ApplyResult = Result<Response, Rejection>;

/// Key prefixes of the tables in the persisted layout.
const JOB_PREFIX: &str = "job/";
const RUN_PREFIX: &str = "run/";
const WORKER_PREFIX: &str = "worker/";
const TOKEN_PREFIX: &str = "token/";

/// Prefixes of the rows [`State::from_rows`] keeps in memory, in the order
/// it is best given them (a run's spec before the run); the other rows (log
/// chunks, [`logs::LOG_PREFIX`]) stay in storage.
pub const MEMORY_PREFIXES: [&str; 5] = [specs::GEN_PREFIX, JOB_PREFIX, RUN_PREFIX, WORKER_PREFIX, TOKEN_PREFIX];

/// A state row could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Serialization failed.
    #[error("encoding state row {key:?}")]
    Encode {
        /// The row key.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A stored row is not valid.
    #[error("decoding state row {key:?}")]
    Decode {
        /// The row key.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A stored key belongs to no table.
    #[error("unknown state row key {0:?}")]
    UnknownKey(String),
    /// A run's, worker's or token's row holds another one than its key
    /// names.
    #[error(
        "state row {key:?} holds {kind} {id:?}: the store is damaged; restore a backup, or remove this server's data directory and let it rejoin"
    )]
    MismatchedId {
        /// The row key.
        key: String,
        /// What the row holds: `run`, `worker` or `token`.
        kind: &'static str,
        /// The id in the row.
        id: String,
    },
    /// A run's row names a job generation whose spec is not stored.
    #[error(
        "state row {key:?} is a run of generation {generation} of job uid {job_uid}, whose spec is stored nowhere (no row {}{job_uid}/{generation}, and the run's row holds none): the store is damaged; restore a backup, or remove this server's data directory and let it rejoin",
        specs::GEN_PREFIX
    )]
    MissingSpec {
        /// The run's row key.
        key: String,
        /// Its job's uid.
        job_uid: String,
        /// Its job's generation.
        generation: u64,
    },
}

/// A change to persist: the row's key and its new encoding (`None`: deleted).
pub type RowChange = (String, Option<Vec<u8>>);

/// The whole replicated domain state.
#[derive(Debug, Clone, Default)]
pub struct State {
    jobs: Table<Job>,
    runs: Table<Run>,
    specs: Specs,
    workers: Table<Worker>,
    tokens: Table<Token>,
    index: Index,
    /// Log chunk rows written or deleted since the last `take_changes`; they
    /// are not kept in memory.
    log_changes: Vec<RowChange>,
}

/// Applies one command at log index `index`: the state machine's transition
/// function. See the module documentation for its contract.
pub fn apply(state: &mut State, index: LogIndex, command: &Command) -> ApplyResult {
    let now = command.now;
    match &command.op {
        Op::CreateJob { uid, spec } => state.create_job(uid, spec, now, index),
        Op::UpdateJob {
            spec,
            expected_generation,
        } => state.update_job(spec, *expected_generation, now, index),
        Op::ApplyJob { uid, spec } => state.apply_job(uid, spec, now, index),
        Op::DeleteJob { name, expected_uid } => state.delete_job(name, expected_uid.as_deref(), now, index),
        Op::SetJobSuspended { name, suspended } => state.set_suspended(name, *suspended, now, index),
        Op::Tick => Ok(Response::Ticked(state.tick(now, index))),
        Op::TriggerRun {
            job,
            request_id,
            params,
            force,
            trace,
        } => state
            .trigger(job, request_id, params, *force, now, index)
            .map(|answer| state.keep_trace(answer, trace.as_deref(), index)),
        Op::CancelRun { run } => state.cancel(run, now, index),
        Op::RegisterWorker { worker, info, held } => Ok(state.register_worker(worker, info, held, now, index)),
        Op::WorkerLost { worker, session } => state.worker_lost(worker, *session, now, index),
        Op::DrainWorker {
            worker,
            within,
            by_operator,
        } => state.drain_worker(worker, *within, *by_operator, now, index),
        Op::Assign { placements } => Ok(state.assign(placements, now, index)),
        Op::AttemptStarted { worker, run, epoch } => state.attempt_started(worker, run, *epoch, now, index),
        Op::AttemptFinished {
            worker,
            run,
            epoch,
            report,
        } => state.attempt_finished(worker, run, *epoch, report, now, index),
        Op::AppendLogs {
            worker,
            run,
            epoch,
            chunks,
        } => state.append_logs(worker, run, *epoch, chunks, index),
        Op::CreateToken { token } => state.create_token(token, now, index),
        Op::RevokeToken { id } => state.revoke_token(id, now, index),
        Op::Batch { commands } => Ok(Response::Batch(
            commands
                .iter()
                .map(|command| match command.op {
                    Op::Batch { .. } => Err(Rejection::new(
                        RejectionKind::InvalidArgument,
                        "a batch inside a batch; a batch holds single operations",
                    )),
                    _ => apply(state, index, command),
                })
                .collect(),
        )),
    }
}

impl Op {
    /// Its name, as in its serialized form (`trigger_run`): for logs and
    /// trace spans.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateJob { .. } => "create_job",
            Op::UpdateJob { .. } => "update_job",
            Op::ApplyJob { .. } => "apply_job",
            Op::DeleteJob { .. } => "delete_job",
            Op::SetJobSuspended { .. } => "set_job_suspended",
            Op::Tick => "tick",
            Op::TriggerRun { .. } => "trigger_run",
            Op::CancelRun { .. } => "cancel_run",
            Op::RegisterWorker { .. } => "register_worker",
            Op::WorkerLost { .. } => "worker_lost",
            Op::DrainWorker { .. } => "drain_worker",
            Op::Assign { .. } => "assign",
            Op::AttemptStarted { .. } => "attempt_started",
            Op::AttemptFinished { .. } => "attempt_finished",
            Op::AppendLogs { .. } => "append_logs",
            Op::CreateToken { .. } => "create_token",
            Op::RevokeToken { .. } => "revoke_token",
            Op::Batch { .. } => "batch",
        }
    }

    /// Whether two operations of its key may share a log entry (group
    /// commit, applied in order): only a worker's reports on a run. The
    /// others must not, because what they create takes its id from the
    /// entry's index (manual run ids, attempt epochs, worker sessions).
    pub fn shares_entries(&self) -> bool {
        matches!(
            self,
            Op::AttemptStarted { .. } | Op::AttemptFinished { .. } | Op::AppendLogs { .. }
        )
    }

    /// The object it changes, as far as batching cares: two operations
    /// with the same key never share a log entry (unless both
    /// [`Op::shares_entries`]), so the ids an operation derives from its
    /// index (manual run ids, attempt epochs, worker sessions) stay unique.
    /// Operations of different keys commute as separate entries would,
    /// since they are applied in order.
    pub fn batch_key(&self) -> String {
        match self {
            Op::CreateJob { spec, .. } | Op::UpdateJob { spec, .. } | Op::ApplyJob { spec, .. } => {
                format!("job:{}", spec.name)
            }
            Op::DeleteJob { name, .. } | Op::SetJobSuspended { name, .. } | Op::TriggerRun { job: name, .. } => {
                format!("job:{name}")
            }
            Op::CancelRun { run }
            | Op::AttemptStarted { run, .. }
            | Op::AttemptFinished { run, .. }
            | Op::AppendLogs { run, .. } => format!("run:{run}"),
            Op::RegisterWorker { worker, .. } | Op::WorkerLost { worker, .. } | Op::DrainWorker { worker, .. } => {
                format!("worker:{worker}")
            }
            // One key for all of each kind: they touch many objects at once.
            Op::Tick | Op::Assign { .. } | Op::CreateToken { .. } | Op::RevokeToken { .. } | Op::Batch { .. } => {
                self.name().to_owned()
            }
        }
    }
}

impl State {
    /// Applies one command; see [`apply`].
    pub fn apply(&mut self, index: LogIndex, command: &Command) -> ApplyResult {
        apply(self, index, command)
    }

    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.get(name)
    }

    /// Jobs with names strictly after `after`, in name order.
    pub fn jobs_after<'a>(&'a self, after: Option<&'a str>) -> impl Iterator<Item = &'a Job> {
        self.jobs.iter_after(after).map(|(_, job)| job)
    }

    /// Number of jobs.
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// The run with id `id`.
    pub fn run(&self, id: &str) -> Option<&Run> {
        self.runs.get(id)
    }

    /// Runs with ids strictly after `after`, in id order.
    pub fn runs_after<'a>(&'a self, after: Option<&'a str>) -> impl Iterator<Item = &'a Run> {
        self.runs.iter_after(after).map(|(_, run)| run)
    }

    /// Runs of job `job_uid`, oldest first.
    pub fn runs_of_job<'a>(&'a self, job_uid: &str) -> impl DoubleEndedIterator<Item = &'a Run> + 'a {
        self.index
            .runs_of_job
            .get(job_uid)
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| self.runs.get(id))
    }

    /// Number of runs.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The worker with id `id`.
    pub fn worker(&self, id: &str) -> Option<&Worker> {
        self.workers.get(id)
    }

    /// All workers, in id order.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().map(|(_, w)| w)
    }

    /// The derived indexes (read-only), for the leader's loops.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// What [`Op::ApplyJob`] with `spec` would do at time `now`, without
    /// doing it: the resulting job (with an empty uid and revision 0 where
    /// the real apply would assign them), the outcome and the current job.
    pub fn preview_apply(&self, spec: &JobSpec, now: DateTime<Utc>) -> (Job, ApplyOutcome, Option<Job>) {
        let current = self.jobs.get(&spec.name);
        let (job, outcome) = jobs::applied_job(current, "", spec, now, 0);
        (job, outcome, current.cloned())
    }

    /// How many rows changed since the last [`State::take_changes`], and
    /// whether any of them is kept only in storage (a log chunk, which
    /// readers find only once it is stored).
    pub fn unstored_changes(&self) -> (usize, bool) {
        let in_memory = self.jobs.changed_count()
            + self.runs.changed_count()
            + self.specs.table().changed_count()
            + self.workers.changed_count()
            + self.tokens.changed_count();
        (in_memory + self.log_changes.len(), !self.log_changes.is_empty())
    }

    /// Rows changed since the last call, encoded for storage. The store
    /// writes them in the same atomic batch as the new last-applied index.
    pub fn take_changes(&mut self) -> Result<Vec<RowChange>, CodecError> {
        let mut changes = Vec::new();
        encode_changes(self.specs.table_mut(), specs::GEN_PREFIX, as_is, &mut changes)?;
        encode_changes(&mut self.jobs, JOB_PREFIX, as_is, &mut changes)?;
        encode_changes(&mut self.runs, RUN_PREFIX, run_row, &mut changes)?;
        encode_changes(&mut self.workers, WORKER_PREFIX, as_is, &mut changes)?;
        encode_changes(&mut self.tokens, TOKEN_PREFIX, as_is, &mut changes)?;
        changes.append(&mut self.log_changes);
        Ok(changes)
    }

    /// Every row kept in memory, encoded, in key order. A snapshot also
    /// holds the log chunk rows, which the store reads from disk.
    pub fn rows(&self) -> impl Iterator<Item = Result<(String, Vec<u8>), CodecError>> + '_ {
        encode_tables(self.specs.table(), &self.jobs, &self.runs, &self.workers, &self.tokens)
    }

    /// The rows kept in memory as they are now, sharing them with this state
    /// (no row is copied, nor the indexes), for a snapshot encoded while
    /// the state moves on.
    pub fn share_rows(&self) -> SharedRows {
        SharedRows {
            specs: self.specs.table().share(),
            jobs: self.jobs.share(),
            runs: self.runs.share(),
            workers: self.workers.share(),
            tokens: self.tokens.share(),
        }
    }

    /// Rebuilds a state from rows written by [`State::take_changes`] or
    /// [`State::rows`]. Log chunk rows are accepted and left on disk.
    pub fn from_rows<I, K, V>(rows: I) -> Result<Self, CodecError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mut state = State::default();
        // Runs whose spec row was not seen yet (rows out of key order).
        let mut waiting = Vec::new();
        for (key, value) in rows {
            let key = key.as_ref();
            let value = value.as_ref();
            if let Some(generation) = key.strip_prefix(specs::GEN_PREFIX) {
                state
                    .specs
                    .load(generation, decode_row(key, value)?)
                    .ok_or_else(|| CodecError::UnknownKey(key.to_owned()))?;
            } else if let Some(name) = key.strip_prefix(JOB_PREFIX) {
                let mut job: Job = decode_row(key, value)?;
                if let Some(stored) = state.specs.get(&job.uid, job.generation)
                    && **stored == *job.spec
                {
                    job.spec = stored.clone();
                }
                state.jobs.load(name.to_owned(), job);
            } else if let Some(id) = key.strip_prefix(RUN_PREFIX) {
                // A row with the spec inline (written before specs were
                // stored apart) is read twice, and only while its
                // generation's spec is not known: a generation's spec never
                // changes.
                let record: RunRecord = decode_row(key, value)?;
                let spec = match state.specs.attach(&record.job_uid, record.generation) {
                    Some(spec) => spec,
                    None => match decode_row::<InlineSpec>(key, value)?.spec {
                        Some(spec) => state.specs.adopt(&record.job_uid, record.generation, spec),
                        None => {
                            waiting.push((id.to_owned(), record));
                            continue;
                        }
                    },
                };
                state.load_run(id, Run { spec, record })?;
            } else if let Some(id) = key.strip_prefix(WORKER_PREFIX) {
                let worker: Worker = decode_row(key, value)?;
                check_id(WORKER_PREFIX, id, "worker", &worker.id)?;
                state.workers.load(id.to_owned(), worker);
            } else if let Some(id) = key.strip_prefix(TOKEN_PREFIX) {
                let token: Token = decode_row(key, value)?;
                check_id(TOKEN_PREFIX, id, "token", &token.id)?;
                state.tokens.load(id.to_owned(), token);
            } else if !key.starts_with(logs::LOG_PREFIX) {
                return Err(CodecError::UnknownKey(key.to_owned()));
            }
        }
        for (id, record) in waiting {
            let spec =
                state
                    .specs
                    .attach(&record.job_uid, record.generation)
                    .ok_or_else(|| CodecError::MissingSpec {
                        key: format!("{RUN_PREFIX}{id}"),
                        job_uid: record.job_uid.clone(),
                        generation: record.generation,
                    })?;
            state.load_run(&id, Run { spec, record })?;
        }
        state.specs.drop_unused();
        state.reindex();
        Ok(state)
    }

    /// Adds a run read from storage under its row's key `id`, which must be
    /// the run's own (the table shares it). The run is already counted as
    /// its spec's user ([`Specs::attach`]).
    fn load_run(&mut self, id: &str, run: Run) -> Result<(), CodecError> {
        check_id(RUN_PREFIX, id, "run", &run.id)?;
        self.runs.load(run.id.clone(), run);
        Ok(())
    }

    /// Rebuilds the derived indexes from the tables.
    fn reindex(&mut self) {
        // In creation order (runs one command created, by id): the large
        // sets are then sorted already.
        let mut runs: Vec<&Run> = self.runs.iter().map(|(_, run)| run).collect();
        runs.sort_unstable_by(|a, b| (a.created_index, &a.id).cmp(&(b.created_index, &b.id)));
        self.index = Index::rebuilt(
            self.jobs.iter().map(|(_, job)| job),
            runs.into_iter(),
            self.workers.iter().map(|(_, worker)| worker),
            self.tokens.iter().map(|(_, token)| token),
        );
    }
}

/// That the row under `prefix` + `id` holds the `kind` it names: one whose
/// id, `held`, is `id` (the indexes name rows by the id they hold).
fn check_id(prefix: &str, id: &str, kind: &'static str, held: &str) -> Result<(), CodecError> {
    if held == id {
        return Ok(());
    }
    Err(CodecError::MismatchedId {
        key: format!("{prefix}{id}"),
        kind,
        id: held.to_owned(),
    })
}

fn encode_row<T: Serialize>(prefix: &str, key: &str, row: &T) -> Result<(String, Vec<u8>), CodecError> {
    let key = format!("{prefix}{key}");
    let value = serde_json::to_vec(row).map_err(|source| CodecError::Encode {
        key: key.clone(),
        source,
    })?;
    Ok((key, value))
}

fn decode_row<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, CodecError> {
    serde_json::from_slice(value).map_err(|source| CodecError::Decode {
        key: key.to_owned(),
        source,
    })
}

/// The rows of a [`State`] at one moment, from [`State::share_rows`].
#[derive(Debug, Default)]
pub struct SharedRows {
    specs: Table<JobSpec>,
    jobs: Table<Job>,
    runs: Table<Run>,
    workers: Table<Worker>,
    tokens: Table<Token>,
}

impl SharedRows {
    /// Every row, encoded, in key order, as [`State::rows`].
    pub fn rows(&self) -> impl Iterator<Item = Result<(String, Vec<u8>), CodecError>> + '_ {
        encode_tables(&self.specs, &self.jobs, &self.runs, &self.workers, &self.tokens)
    }
}

fn encode_tables<'a>(
    specs: &'a Table<JobSpec>,
    jobs: &'a Table<Job>,
    runs: &'a Table<Run>,
    workers: &'a Table<Worker>,
    tokens: &'a Table<Token>,
) -> impl Iterator<Item = Result<(String, Vec<u8>), CodecError>> + 'a {
    let specs = specs.iter().map(|(k, v)| encode_row(specs::GEN_PREFIX, k, v));
    let jobs = jobs.iter().map(|(k, v)| encode_row(JOB_PREFIX, k, v));
    let runs = runs.iter().map(|(k, v)| encode_row(RUN_PREFIX, k, run_row(v)));
    let workers = workers.iter().map(|(k, v)| encode_row(WORKER_PREFIX, k, v));
    let tokens = tokens.iter().map(|(k, v)| encode_row(TOKEN_PREFIX, k, v));
    specs.chain(jobs).chain(runs).chain(workers).chain(tokens)
}

/// A row stored as it is in memory.
fn as_is<T>(row: &T) -> &T {
    row
}

/// What a run's row holds: the run without its spec (stored once per
/// generation, see [`specs`]).
fn run_row(run: &Run) -> &RunRecord {
    &run.record
}

/// The spec a run's row held inline before specs were stored apart.
#[derive(Deserialize)]
struct InlineSpec {
    #[serde(default)]
    spec: Option<JobSpec>,
}

fn encode_changes<T, R: Serialize>(
    table: &mut Table<T>,
    prefix: &str,
    stored: fn(&T) -> &R,
    out: &mut Vec<RowChange>,
) -> Result<(), CodecError> {
    for (key, row) in table.take_changed() {
        match row {
            Some(row) => {
                let (key, value) = encode_row(prefix, &key, stored(row))?;
                out.push((key, Some(value)));
            }
            None => out.push((format!("{prefix}{key}"), None)),
        }
    }
    Ok(())
}

/// Byte vectors as base64 strings in JSON (log data travels through the
/// Raft log; a JSON array of numbers would triple it).
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
pub(crate) mod tests;
