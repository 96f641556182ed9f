//! Runs, attempts and workers as the state machine holds them.
//!
//! A run is one execution of a job: a scheduled slot, a manual trigger, or
//! the record that a slot was not run (`Skipped`, `Missed`). A run makes one
//! or more *attempts*; each attempt is placed on one worker and fenced by its
//! *epoch*, the Raft log index of the command that assigned it. A report
//! about an attempt must carry that epoch; a stale one changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::LogIndex;
use super::job::{Driver, JobSpec};

/// A run's id. Scheduled runs: `<job uid>-<slot unix ms>`; manual runs:
/// `<job uid>-m<log index>`. Both are deterministic.
///
/// Shared: a run's id is its table key, its own `id`, and the key of its
/// entries in the derived index, one copy for all of them.
pub type RunId = Arc<str>;

/// A worker's id, chosen by the worker.
pub type WorkerId = String;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for a worker (or for its retry backoff, or its turn in a queue).
    Pending,
    /// Placed on a worker, not yet started.
    Assigned,
    /// Started on a worker.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero (or could not start), with no retry left.
    Failed,
    /// Exceeded its timeout, with no retry left.
    TimedOut,
    /// Cancelled by a user, a `replace` policy, or the job's deletion.
    Cancelled,
    /// Its worker was lost, with no retry left.
    Lost,
    /// A slot not run because of the concurrency policy.
    Skipped,
    /// A slot (or a range of slots) not run: catch-up policy or starting deadline.
    Missed,
}

impl RunState {
    /// Whether the run has reached its final state.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunState::Pending | RunState::Assigned | RunState::Running)
    }

    /// The word used in APIs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Assigned => "assigned",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Cancelled => "cancelled",
            RunState::Lost => "lost",
            RunState::Skipped => "skipped",
            RunState::Missed => "missed",
        }
    }
}

/// Why a run was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", try_from = "CauseFields")]
pub enum Cause {
    /// A slot of the job's schedule.
    Scheduled,
    /// A manual trigger.
    Manual {
        /// The client's request id (idempotency key), shared with the
        /// index of requests.
        request_id: Arc<str>,
        /// Whether the concurrency policy was overridden.
        forced: bool,
    },
}

/// A stored [`Cause`] as read: its fields as they come, rather than the
/// content of the whole object held until its `kind` is found, which is
/// how serde reads an internally tagged enum (a start reads every run's).
#[derive(Deserialize)]
struct CauseFields {
    kind: CauseKind,
    request_id: Option<SharedStr>,
    forced: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum CauseKind {
    Scheduled,
    Manual,
}

impl TryFrom<CauseFields> for Cause {
    type Error = &'static str;

    fn try_from(fields: CauseFields) -> Result<Self, Self::Error> {
        match fields {
            CauseFields {
                kind: CauseKind::Scheduled,
                ..
            } => Ok(Cause::Scheduled),
            CauseFields {
                kind: CauseKind::Manual,
                request_id: Some(SharedStr(request_id)),
                forced: Some(forced),
            } => Ok(Cause::Manual { request_id, forced }),
            CauseFields { request_id: None, .. } => Err("a manual cause needs its `request_id`"),
            CauseFields { forced: None, .. } => Err("a manual cause needs `forced`"),
        }
    }
}

/// Machine-readable class of a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// A missed slot not run because `catch_up: none`.
    CatchUpNone,
    /// A missed slot not run because a later slot superseded it (`catch_up: latest`).
    Superseded,
    /// A missed slot beyond `max_catch_up` (`catch_up: all`).
    BeyondMaxCatchUp,
    /// Not started within `starting_deadline`.
    StartingDeadline,
    /// Skipped: another run of the job was active (`concurrency: forbid`).
    ConcurrencyForbid,
    /// Skipped: the queue was full (`concurrency: queue`).
    QueueFull,
    /// Cancelled by a newer run (`concurrency: replace`).
    Replaced,
    /// Cancelled on request.
    CancelRequested,
    /// Cancelled because the job was deleted.
    JobDeleted,
    /// An attempt exceeded the timeout.
    Timeout,
    /// The worker running an attempt was lost.
    WorkerLost,
    /// The worker no longer holds the attempt (it restarted).
    NotHeldByWorker,
    /// An attempt exited non-zero or failed to start.
    AttemptFailed,
    /// Waiting to retry after a failed attempt.
    Retrying,
    /// Waiting for another worker: a draining worker handed the attempt back.
    HandedBack,
}

/// Why a run is where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The class.
    pub code: ReasonCode,
    /// A precise, human-readable account.
    pub message: String,
}

impl Reason {
    /// A reason of class `code`.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, or the worker could not start it.
    Failed,
    /// Stopped because it exceeded the timeout.
    TimedOut,
    /// Stopped because the run was cancelled.
    Cancelled,
    /// Its worker was lost, or no longer held it.
    Lost,
    /// Its worker was drained (or shut down) and stopped it before it ended:
    /// the run waits for another worker; the attempt does not count against
    /// `retry.max_attempts`.
    HandedBack,
}

/// Why the server asked a worker to stop an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The attempt exceeded the timeout.
    Timeout,
    /// The run was cancelled (by a user, `replace`, or job deletion).
    Cancel,
    /// Its worker is draining and the drain deadline passed: hand it back.
    Drain,
}

/// Resource use of an attempt, as its worker measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceUse {
    /// Peak memory in bytes.
    pub peak_memory_bytes: u64,
    /// CPU time in milliseconds.
    pub cpu_time_ms: u64,
}

/// One placement of a run on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// Raft index of the assigning command: the attempt's fence.
    pub epoch: LogIndex,
    /// The worker it was placed on.
    pub worker: WorkerId,
    /// Leader time of the assignment.
    #[serde(deserialize_with = "super::instant::deserialize")]
    pub assigned_at: DateTime<Utc>,
    /// When the worker reported it started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::instant::option::deserialize"
    )]
    pub started_at: Option<DateTime<Utc>>,
    /// Set once the attempt no longer runs anywhere (reported finished, or
    /// its worker lost). Until then it occupies a slot of its worker.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::instant::option::deserialize"
    )]
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptOutcome>,
    /// Exit code, when the process exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Whether the kernel's OOM killer ended it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub oom_killed: bool,
    /// Resource use, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceUse>,
    /// Set when the server asked the worker to stop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopReason>,
    /// The worker's account of a failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Attempt {
    /// Whether the attempt still occupies its worker.
    pub fn is_live(&self) -> bool {
        self.ended_at.is_none()
    }
}

/// Bookkeeping of a run's log (the chunks themselves are stored apart; see
/// [`super::logs`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogMeta {
    /// Sequence number of the oldest chunk kept.
    pub first_seq: u64,
    /// Sequence number the next chunk gets.
    pub next_seq: u64,
    /// Sizes of the kept chunks, oldest first (`first_seq` onwards).
    pub chunk_sizes: Vec<u32>,
    /// Bytes kept.
    pub kept_bytes: u64,
    /// Bytes dropped from the head to respect the cap.
    pub dropped_bytes: u64,
    /// The attempt whose output arrives now, and the next byte offset
    /// expected from it (workers number each attempt's bytes from 0).
    pub epoch: LogIndex,
    /// See `epoch`.
    pub next_offset: u64,
}

impl LogMeta {
    /// Whether nothing was ever logged.
    pub fn is_empty(&self) -> bool {
        *self == LogMeta::default()
    }
}

/// Reads a string straight into its shared form (a run id, a request id):
/// one allocation, where reading a `String` and sharing it makes two.
fn shared_str<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    struct SharedVisitor;

    impl serde::de::Visitor<'_> for SharedVisitor {
        type Value = Arc<str>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Arc<str>, E> {
            Ok(Arc::from(text))
        }
    }

    deserializer.deserialize_str(SharedVisitor)
}

/// A string read with [`shared_str`] (where a field may be absent or
/// `null`: `Option<SharedStr>`).
struct SharedStr(Arc<str>);

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        shared_str(deserializer).map(SharedStr)
    }
}

/// Fields that are `false` are left out of a stored row.
fn is_false(value: &bool) -> bool {
    !value
}

/// One run of a job: what it executes, and its record.
///
/// The record derefs from the run (`run.state` is `run.record.state`). A
/// run's storage row holds only the record: the spec is the same for every
/// run of a job generation, so it is stored once per generation (rows
/// `gen/<job uid>/<generation>`) and attached when the rows are loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// What the run executes: the job's spec when the run was created (its
    /// `generation`).
    pub spec: Arc<JobSpec>,
    /// Everything else.
    #[serde(flatten)]
    pub record: RunRecord,
}

impl Deref for Run {
    type Target = RunRecord;

    fn deref(&self) -> &RunRecord {
        &self.record
    }
}

impl DerefMut for Run {
    fn deref_mut(&mut self) -> &mut RunRecord {
        &mut self.record
    }
}

/// A run without its spec: what a run's storage row holds. Fields at their
/// default (none, empty, false, a log never written) are left out of the row, and read
/// back as the default: most of a finished run's fields are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Deterministic id.
    #[serde(deserialize_with = "shared_str")]
    pub id: RunId,
    /// The job's name.
    pub job: String,
    /// The job's uid (a re-created job's runs are told apart by it).
    pub job_uid: String,
    /// The job's generation when the run was created: its spec's.
    pub generation: u64,
    /// Why it exists.
    pub cause: Cause,
    /// The slot instant (scheduled runs and slot records).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::instant::option::deserialize"
    )]
    pub nominal_time: Option<DateTime<Utc>>,
    /// For a `Missed` record covering several slots: the last one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::instant::option::deserialize"
    )]
    pub last_nominal_time: Option<DateTime<Utc>>,
    /// How many slots the record covers (1 except for missed ranges).
    pub slot_count: u64,
    /// Parameters of a manual trigger, given to the task as environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Leader time of creation.
    #[serde(deserialize_with = "super::instant::deserialize")]
    pub created_at: DateTime<Utc>,
    /// Raft index of the creating command.
    pub created_index: LogIndex,
    /// Raft index of the last command that changed the run.
    pub updated_index: LogIndex,
    /// Where it is.
    pub state: RunState,
    /// Why it is there (for Skipped, Missed, Cancelled, Lost, failures, retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// A pending retry waits until this time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::instant::option::deserialize"
    )]
    pub not_before: Option<DateTime<Utc>>,
    /// Attempts, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// When it reached its terminal state.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::instant::option::deserialize"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// Its log.
    #[serde(default, skip_serializing_if = "LogMeta::is_empty")]
    pub log: LogMeta,
    /// W3C trace context (`traceparent`) of the call that triggered it: its
    /// attempts are traced as part of that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

impl RunRecord {
    /// The latest attempt.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// The attempt still occupying a worker, if any (only the latest can).
    pub fn live_attempt(&self) -> Option<&Attempt> {
        self.attempts.last().filter(|a| a.is_live())
    }

    /// Whether the run still matters to concurrency: not terminal, or an
    /// attempt still being stopped.
    pub fn is_active(&self) -> bool {
        !self.state.is_terminal() || self.live_attempt().is_some()
    }
}

/// Whether a worker is believed to be alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Registered and renewing its lease.
    Alive,
    /// Its lease expired (plus grace); its attempts were ended as lost.
    Lost,
}

/// What a worker can take on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    /// Attempts it runs at once.
    pub slots: u32,
    /// CPU it offers, thousandths of a core (0: unknown).
    pub cpu_millis: u64,
    /// Memory it offers, bytes (0: unknown).
    pub memory_bytes: u64,
}

/// A worker as the cluster knows it. Liveness changes go through Raft;
/// heartbeats do not (they live in the leader's memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    /// Its id.
    pub id: WorkerId,
    /// Labels matched against job constraints.
    pub labels: BTreeMap<String, String>,
    /// What it can run.
    pub capacity: Capacity,
    /// Drivers it offers.
    pub drivers: BTreeSet<Driver>,
    /// Alive or lost.
    pub state: WorkerState,
    /// Raft index of its latest registration (each connection registers).
    pub session: LogIndex,
    /// Leader time of its latest registration.
    pub registered_at: DateTime<Utc>,
    /// Leader time it was declared lost.
    pub lost_at: Option<DateTime<Utc>>,
    /// Set while it is draining: it gets no new attempts, and those it still
    /// runs at the deadline are stopped and handed back.
    #[serde(default)]
    pub drain: Option<Drain>,
}

/// A worker's drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// Leader time by which its attempts are handed back.
    pub deadline: DateTime<Utc>,
    /// Asked for by an operator (kept until undone), or by the worker
    /// itself on shutdown (ends with its next registration).
    pub by_operator: bool,
    /// Whether the deadline was handled (its attempts asked to stop).
    pub handled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_read_back_as_written_and_a_manual_one_needs_its_fields() {
        for cause in [
            Cause::Scheduled,
            Cause::Manual {
                request_id: "nightly-1".into(),
                forced: true,
            },
        ] {
            let text = serde_json::to_string(&cause).unwrap();
            assert_eq!(serde_json::from_str::<Cause>(&text).unwrap(), cause, "{text}");
        }
        let read = |text: &str| serde_json::from_str::<Cause>(text).map_err(|e| e.to_string());
        assert_eq!(
            read(r#"{"forced":false,"request_id":"r","kind":"manual","later":1}"#),
            Ok(Cause::Manual {
                request_id: "r".into(),
                forced: false
            }),
            "fields in any order, unknown ones ignored"
        );
        assert_eq!(read(r#"{"kind":"scheduled"}"#), Ok(Cause::Scheduled));
        assert_eq!(read(r#"{"kind":"scheduled","request_id":null}"#), Ok(Cause::Scheduled));
        let null = read(r#"{"kind":"manual","request_id":null,"forced":false}"#).unwrap_err();
        assert!(null.contains("a manual cause needs its `request_id`"), "{null}");
        let missing = read(r#"{"kind":"manual","forced":false}"#).unwrap_err();
        assert!(missing.contains("a manual cause needs its `request_id`"), "{missing}");
        let missing = read(r#"{"kind":"manual","request_id":"r"}"#).unwrap_err();
        assert!(missing.contains("a manual cause needs `forced`"), "{missing}");
        let unknown = read(r#"{"kind":"sometimes"}"#).unwrap_err();
        assert!(unknown.contains("unknown variant `sometimes`"), "{unknown}");
        assert!(
            read(r#"{"request_id":"r"}"#)
                .unwrap_err()
                .contains("missing field `kind`")
        );
    }

    #[test]
    fn a_run_id_reads_escaped_or_not() {
        #[derive(Deserialize)]
        struct Row {
            #[serde(deserialize_with = "shared_str")]
            id: RunId,
        }
        let read = |text: &str| serde_json::from_str::<Row>(text).map(|row| row.id);
        assert_eq!(&*read(r#"{"id":"job-m7"}"#).unwrap(), "job-m7");
        assert_eq!(&*read(r#"{"id":"job-\u006d7"}"#).unwrap(), "job-m7");
        assert!(
            read(r#"{"id":7}"#)
                .unwrap_err()
                .to_string()
                .contains("expected a string")
        );
    }
}
