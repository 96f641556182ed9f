//! Job definitions as the state machine holds them: validated, typed, with
//! every default filled in.
//!
//! Values of these types only come from [`crate::spec::validate`] (or from
//! storage that was written from such values), so code that reads them never
//! re-checks names, durations or cron syntax. They are plain data: no clock,
//! no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::LogIndex;

/// A job as stored by the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique among live jobs; the key of the job table.
    pub name: String,
    /// Stable identity: a job deleted and created again gets a new uid.
    pub uid: String,
    /// 1 at creation, +1 on every spec change.
    pub generation: u64,
    /// The current definition.
    pub spec: Arc<JobSpec>,
    /// A suspended job's schedule does not fire.
    pub suspended: bool,
    /// Leader time of the creating command.
    pub created_at: DateTime<Utc>,
    /// Leader time of the last command that changed the job.
    pub updated_at: DateTime<Utc>,
    /// Raft log index of the last command that changed the job.
    pub revision: LogIndex,
    /// The schedule's cursor: the last slot handled. Slots after it and up
    /// to a `Tick`'s time are due. Set to the leader's time when the job is
    /// created, its schedule changes, or it is resumed.
    pub cursor: DateTime<Utc>,
    /// Origin of an `every` schedule's grid: creation, or the last schedule
    /// change.
    pub anchor: DateTime<Utc>,
}

/// The definition of a job (BRIEF §4), validated and with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// `[a-z0-9][a-z0-9-]{0,62}`.
    pub name: String,
    /// When the job fires.
    pub schedule: Schedule,
    /// What a new run does while another run of the job is active.
    pub concurrency: Concurrency,
    /// With [`Concurrency::Queue`]: how many runs may wait.
    pub max_queued: u32,
    /// What a run executes.
    pub task: Task,
    /// Limit on a whole run; `None` is unlimited.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Worker labels a run requires.
    pub constraints: BTreeMap<String, String>,
    /// How many completed runs are kept.
    pub history: HistoryPolicy,
}

/// When a job fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// `None`: the job only runs when triggered.
    pub trigger: Option<Trigger>,
    /// Zone in which cron fields are read.
    pub timezone: Tz,
    /// What happens to slots missed while nothing could fire them.
    pub catch_up: CatchUp,
    /// Upper bound on slots run by [`CatchUp::All`].
    pub max_catch_up: u32,
    /// A slot that cannot start within this long of its nominal time is Missed.
    #[serde(with = "humantime_serde")]
    pub starting_deadline: Option<Duration>,
}

/// The kind of schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A cron expression (5 or 6 fields, or a macro), already parsed once.
    Cron(String),
    /// A fixed interval.
    Every(#[serde(with = "humantime_serde")] Duration),
    /// A single instant.
    At(DateTime<Utc>),
}

/// Catch-up policy for missed slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed slots are recorded as Missed.
    None,
    /// Only the latest missed slot runs.
    Latest,
    /// Every missed slot runs, bounded by `max_catch_up`.
    All,
}

/// Concurrency policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// Runs may overlap.
    Allow,
    /// A new slot is Skipped while a run is active.
    Forbid,
    /// The active run is cancelled, the new one starts.
    Replace,
    /// The new run waits (bounded queue).
    Queue,
}

/// Task driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// A container through the Docker engine.
    Docker,
    /// A host process.
    Exec,
}

impl Driver {
    /// The driver's name in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Docker => "docker",
            Driver::Exec => "exec",
        }
    }
}

/// Image pull policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull only when the image is missing.
    IfNotPresent,
    /// Pull before every run.
    Always,
    /// Never pull; fail if missing.
    Never,
}

/// What a run executes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Where the task runs.
    pub driver: Driver,
    /// Docker image reference; `None` for the exec driver.
    pub image: Option<String>,
    /// When the image is pulled.
    pub pull: PullPolicy,
    /// Argument array.
    pub command: Vec<String>,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the task.
    pub working_dir: Option<String>,
    /// User to run as.
    pub user: Option<String>,
    /// CPU and memory limits.
    pub resources: Resources,
    /// Docker network mode.
    pub network_mode: Option<String>,
    /// Secret environment variables, their values sealed (see
    /// `crate::secrets`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Host access asked for (workers refuse it unless they allow it).
    #[serde(default, skip_serializing_if = "HostAccess::is_none")]
    pub host: HostAccess,
}

/// What a container asks of its worker's host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAccess {
    /// Privileged mode.
    #[serde(default)]
    pub privileged: bool,
    /// Capabilities added, upper case without `CAP_`.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Host paths mounted.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Host devices.
    #[serde(default)]
    pub devices: Vec<String>,
    /// The host's process namespace.
    #[serde(default)]
    pub host_pid: bool,
    /// The host's IPC namespace.
    #[serde(default)]
    pub host_ipc: bool,
}

impl HostAccess {
    /// Whether nothing is asked.
    pub fn is_none(&self) -> bool {
        *self == HostAccess::default()
    }
}

/// A host path mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// On the worker.
    pub host_path: String,
    /// In the container.
    pub container_path: String,
    /// Read only.
    pub read_only: bool,
}

/// Resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU limit in thousandths of a core; `None` is unlimited.
    pub cpu_millis: Option<u32>,
    /// Memory limit in bytes; `None` is unlimited.
    pub memory_bytes: Option<u64>,
}

/// Outcomes of an attempt that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// Non-zero exit.
    Failed,
    /// The worker was lost.
    Lost,
    /// The run hit its timeout.
    TimedOut,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Cap on the delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Which outcomes are retried.
    pub on: BTreeSet<RetryOn>,
}

/// History retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPolicy {
    /// Succeeded runs kept.
    pub keep_succeeded: u32,
    /// Failed (or otherwise unsuccessful) runs kept.
    pub keep_failed: u32,
    /// Runs older than this are removed.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

/// Parses a cron expression the way rota reads them everywhere: 5 fields
/// (minute first), 6 fields (seconds first), or an `@hourly`-style macro;
/// no year field. A list with an empty item (`,,`, a leading or trailing
/// comma) is refused before croner sees it: croner reads it as a field that
/// matches nothing and then searches years for a time (found by fuzzing:
/// `",,,\t,,17 * * * MON,FRI"` took over ten seconds to be refused).
///
/// Parsing is costly next to everything else a write does (a job's next
/// fire is computed on every apply), so parsed expressions are remembered,
/// up to [`CRON_CACHE`] of them.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    static PARSED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, croner::Cron>>> =
        std::sync::LazyLock::new(Default::default);
    if let Some(cron) = PARSED.lock().ok().and_then(|parsed| parsed.get(expr).cloned()) {
        return Ok(cron);
    }
    let cron = parse_cron_uncached(expr)?;
    if let Ok(mut parsed) = PARSED.lock() {
        if parsed.len() >= CRON_CACHE {
            parsed.clear();
        }
        parsed.insert(expr.to_owned(), cron.clone());
    }
    Ok(cron)
}

/// Parsed cron expressions remembered by [`parse_cron`].
pub const CRON_CACHE: usize = 4096;

fn parse_cron_uncached(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    if let Some(field) = expr
        .split_whitespace()
        .find(|field| field.split(',').any(str::is_empty))
    {
        return Err(croner::errors::CronError::InvalidPattern(format!(
            "field {field:?} has an empty list item (\",,\" or a comma at an end)"
        )));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
}

/// Renders a duration in the shortest exact form that spec validation accepts
/// back, e.g. `30s`, `1h30m`, `2d`, `1500ms`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ns", d.as_nanos());
    }
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}
