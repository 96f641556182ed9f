//! The replicated domain: jobs (and, in later issues, runs, workers and
//! schedule cursors) and the commands that change them.
//!
//! [`apply`] is the state machine's transition function. It is **pure and
//! deterministic**: no clock, no randomness, no I/O. Everything that varies
//! between nodes — the leader's wall clock, fresh uids — enters inside the
//! [`Command`], stamped once by the leader before the command is proposed;
//! the Raft log index enters as an argument. Every node that applies the same
//! log therefore reaches the same state and gives the same answers.
//!
//! A command that is not allowed (a create for a name that exists, an update
//! of a missing job) is *rejected*: [`Rejection`] is a replicated answer that
//! goes back to the client, not an error of the node. Errors of the node
//! (a disk that fails) belong to the store and stop the node.
//!
//! The state also defines its persisted layout — a flat key/value projection
//! of its tables (see [`State::take_changes`]) — so that the store stays
//! ignorant of the domain and only deals with bytes and durability.

pub mod job;
pub mod schedule;
mod table;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use job::{Job, JobSpec};
pub use table::Table;

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
    /// Delete a job.
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
// Responses live only until they reach the client; boxing the large variant
// would cost an allocation per command for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// For log entries that carry no command (blank and membership entries).
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
    /// The object is not in the state the command requires.
    FailedPrecondition,
}

impl Rejection {
    fn not_found(what: impl std::fmt::Display) -> Self {
        Self {
            kind: RejectionKind::NotFound,
            message: format!("{what} not found"),
        }
    }

    fn already_exists(what: impl std::fmt::Display) -> Self {
        Self {
            kind: RejectionKind::AlreadyExists,
            message: format!("{what} already exists"),
        }
    }

    fn failed_precondition(message: String) -> Self {
        Self {
            kind: RejectionKind::FailedPrecondition,
            message,
        }
    }
}

/// Result of applying one command.
pub type ApplyResult = Result<Response, Rejection>;

/// Key prefix of the job table in the persisted layout.
const JOB_PREFIX: &str = "job/";

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
}

/// A change to persist: the row's key and its new encoding (`None`: deleted).
pub type RowChange = (String, Option<Vec<u8>>);

/// The whole replicated domain state.
#[derive(Debug, Clone, Default)]
pub struct State {
    jobs: Table<Job>,
}

/// Applies one command at log index `index`: the state machine's transition
/// function. See the module documentation for its contract.
pub fn apply(state: &mut State, index: LogIndex, command: &Command) -> ApplyResult {
    let now = command.now;
    match &command.op {
        Op::CreateJob { uid, spec } => {
            if state.jobs.get(&spec.name).is_some() {
                return Err(Rejection::already_exists(format_args!("job {:?}", spec.name)));
            }
            let job = new_job(uid, spec, now, index);
            state.jobs.insert(job.name.clone(), job.clone());
            Ok(Response::Job(job))
        }
        Op::UpdateJob {
            spec,
            expected_generation,
        } => {
            let Some(current) = state.jobs.get(&spec.name) else {
                return Err(Rejection::not_found(format_args!("job {:?}", spec.name)));
            };
            if let Some(expected) = expected_generation
                && *expected != current.generation
            {
                return Err(Rejection::failed_precondition(format!(
                    "job {:?} is at generation {}, not the expected {expected}",
                    spec.name, current.generation
                )));
            }
            if current.spec == *spec {
                return Ok(Response::Job(current.clone()));
            }
            let job = updated_job(current, spec, now, index);
            state.jobs.insert(job.name.clone(), job.clone());
            Ok(Response::Job(job))
        }
        Op::ApplyJob { uid, spec } => {
            let previous = state.jobs.get(&spec.name).cloned();
            let (job, outcome) = applied_job(previous.as_ref(), uid, spec, now, index);
            if outcome != ApplyOutcome::Unchanged {
                state.jobs.insert(job.name.clone(), job.clone());
            }
            Ok(Response::Applied { job, outcome, previous })
        }
        Op::DeleteJob { name, expected_uid } => {
            let Some(current) = state.jobs.get(name) else {
                return Err(Rejection::not_found(format_args!("job {name:?}")));
            };
            if let Some(expected) = expected_uid
                && *expected != current.uid
            {
                return Err(Rejection::failed_precondition(format!(
                    "job {name:?} has uid {}, not the expected {expected}",
                    current.uid
                )));
            }
            let deleted = current.clone();
            state.jobs.remove(name);
            Ok(Response::Job(deleted))
        }
        Op::SetJobSuspended { name, suspended } => {
            let Some(current) = state.jobs.get(name) else {
                return Err(Rejection::not_found(format_args!("job {name:?}")));
            };
            if current.suspended == *suspended {
                return Ok(Response::Job(current.clone()));
            }
            let mut job = current.clone();
            job.suspended = *suspended;
            job.updated_at = now;
            job.revision = index;
            state.jobs.insert(job.name.clone(), job.clone());
            Ok(Response::Job(job))
        }
    }
}

fn new_job(uid: &str, spec: &JobSpec, now: DateTime<Utc>, index: LogIndex) -> Job {
    Job {
        name: spec.name.clone(),
        uid: uid.to_owned(),
        generation: 1,
        spec: spec.clone(),
        suspended: false,
        created_at: now,
        updated_at: now,
        revision: index,
    }
}

/// The job an apply of `spec` yields, given the current one.
fn applied_job(
    current: Option<&Job>,
    uid: &str,
    spec: &JobSpec,
    now: DateTime<Utc>,
    index: LogIndex,
) -> (Job, ApplyOutcome) {
    match current {
        None => (new_job(uid, spec, now, index), ApplyOutcome::Created),
        Some(current) if current.spec == *spec => (current.clone(), ApplyOutcome::Unchanged),
        Some(current) => (updated_job(current, spec, now, index), ApplyOutcome::Updated),
    }
}

fn updated_job(current: &Job, spec: &JobSpec, now: DateTime<Utc>, index: LogIndex) -> Job {
    Job {
        generation: current.generation + 1,
        spec: spec.clone(),
        updated_at: now,
        revision: index,
        ..current.clone()
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

    /// What [`Op::ApplyJob`] with `spec` would do at time `now`, without
    /// doing it: the resulting job (with an empty uid and revision 0 where
    /// the real apply would assign them), the outcome and the current job.
    pub fn preview_apply(&self, spec: &JobSpec, now: DateTime<Utc>) -> (Job, ApplyOutcome, Option<Job>) {
        let current = self.jobs.get(&spec.name);
        let (job, outcome) = applied_job(current, "", spec, now, 0);
        (job, outcome, current.cloned())
    }

    /// Rows changed since the last call, encoded for storage. The store
    /// writes them in the same atomic batch as the new last-applied index.
    pub fn take_changes(&mut self) -> Result<Vec<RowChange>, CodecError> {
        self.jobs
            .take_changed()
            .into_iter()
            .map(|(name, job)| {
                let key = format!("{JOB_PREFIX}{name}");
                let value = job.map(|job| encode(&key, job)).transpose()?;
                Ok((key, value))
            })
            .collect()
    }

    /// Every row, encoded, in key order: the content of a snapshot.
    pub fn rows(&self) -> impl Iterator<Item = Result<(String, Vec<u8>), CodecError>> + '_ {
        self.jobs.iter().map(|(name, job)| {
            let key = format!("{JOB_PREFIX}{name}");
            let value = encode(&key, job)?;
            Ok((key, value))
        })
    }

    /// Rebuilds a state from rows written by [`State::take_changes`] or
    /// [`State::rows`].
    pub fn from_rows<I, K, V>(rows: I) -> Result<Self, CodecError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mut state = State::default();
        for (key, value) in rows {
            let key = key.as_ref();
            if let Some(name) = key.strip_prefix(JOB_PREFIX) {
                let job: Job = serde_json::from_slice(value.as_ref()).map_err(|source| CodecError::Decode {
                    key: key.to_owned(),
                    source,
                })?;
                state.jobs.load(name.to_owned(), job);
            } else {
                return Err(CodecError::UnknownKey(key.to_owned()));
            }
        }
        Ok(state)
    }
}

fn encode<T: Serialize>(key: &str, row: &T) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(row).map_err(|source| CodecError::Encode {
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod tests;
