//! Job specs at the network edge: `rota.v1.JobSpec` (protobuf) to the
//! validated domain [`JobSpec`] and back.
//!
//! [`validate`] is the only way a spec from outside becomes a domain value.
//! It checks every field, fills in defaults, and on failure reports *every*
//! bad field with its path in the spec file's terms (`schedule.cron`,
//! `task.env["1X"]`, `retry.on[1]`) and what would be accepted. Nothing is
//! written when a spec is invalid: validation runs before a command is
//! proposed.
//!
//! [`to_proto`] renders a domain spec with its defaults made explicit;
//! `validate(to_proto(spec)) == spec` for every valid spec.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use prost::Message;
use rota_proto::quantity;
use rota_proto::v1 as pb;

pub use crate::state::job::format_duration;
use crate::state::job::{
    CatchUp, Concurrency, Driver, HistoryPolicy, HostAccess, JobSpec, Mount, PullPolicy, Resources, RetryOn,
    RetryPolicy, Schedule, Task, Trigger, parse_cron,
};

/// Largest accepted encoded spec.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// Default for `schedule.max_catch_up`.
pub const DEFAULT_MAX_CATCH_UP: u32 = 10;
/// Default for `max_queued`.
pub const DEFAULT_MAX_QUEUED: u32 = 10;
/// Default for `kill_grace`.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
/// Default for `retry.backoff`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
/// Default for `retry.max_backoff`.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Default for `history.keep_succeeded`.
pub const DEFAULT_KEEP_SUCCEEDED: u32 = 20;
/// Default for `history.keep_failed`.
pub const DEFAULT_KEEP_FAILED: u32 = 50;
/// Default for `history.max_age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

const MAX_NAME_LEN: usize = 63;
const MAX_LABEL_LEN: usize = 63;
const MAX_CPU_CORES: f64 = 1024.0;
/// The Docker engine refuses memory limits below 6 MiB.
const MIN_MEMORY_BYTES: u64 = 6 << 20;
const DAY: Duration = Duration::from_secs(86_400);

/// One bad field of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the spec, e.g. `schedule.cron`.
    pub field: String,
    /// What is wrong and what would be accepted.
    pub description: String,
}

/// Every bad field of a spec, in the order they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The violations; never empty.
    pub violations: Vec<FieldViolation>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid job spec: ")?;
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Collects violations while a spec is walked.
#[derive(Default)]
struct Checker {
    violations: Vec<FieldViolation>,
}

impl Checker {
    fn fail(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Parses an optional duration: `None` when empty.
    fn duration(&mut self, field: &str, text: &str, min: Duration, max: Duration) -> Option<Duration> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        match humantime::parse_duration(text) {
            Ok(d) if d < min || d > max => {
                self.fail(
                    field,
                    format!(
                        "{text:?} is out of range; accepted: {} to {}",
                        format_duration(min),
                        format_duration(max)
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.fail(
                    field,
                    format!("{text:?} is not a duration ({e}); accepted: e.g. \"30s\", \"5m\", \"1h 30m\", \"2d\""),
                );
                None
            }
        }
    }

    fn count(&mut self, field: &str, value: Option<u32>, default: u32, range: std::ops::RangeInclusive<u32>) -> u32 {
        match value {
            None => default,
            Some(v) if range.contains(&v) => v,
            Some(v) => {
                self.fail(
                    field,
                    format!("{v} is out of range; accepted: {} to {}", range.start(), range.end()),
                );
                default
            }
        }
    }

    fn enum_value<E: TryFrom<i32>>(&mut self, field: &str, raw: i32, accepted: &str) -> Option<E> {
        match E::try_from(raw) {
            Ok(value) => Some(value),
            Err(_) => {
                self.fail(field, format!("unknown value {raw}; accepted: {accepted}"));
                None
            }
        }
    }

    fn no_nul(&mut self, field: &str, value: &str) {
        if value.contains('\0') {
            self.fail(field, "must not contain NUL characters");
        }
    }
}

/// Validates a spec from the network and converts it to the domain type,
/// with every default filled in.
pub fn validate(spec: &pb::JobSpec) -> Result<JobSpec, SpecError> {
    let mut c = Checker::default();
    let size = spec.encoded_len();
    if size > MAX_SPEC_BYTES {
        c.fail(
            "spec",
            format!("encoded size {size} bytes exceeds the limit of {MAX_SPEC_BYTES} bytes"),
        );
        return Err(SpecError {
            violations: c.violations,
        });
    }

    check_name(&mut c, "name", &spec.name);
    let schedule = validate_schedule(&mut c, spec.schedule.as_ref());

    let concurrency = c
        .enum_value::<pb::Concurrency>("concurrency", spec.concurrency, "allow, forbid, replace, queue")
        .map(|value| match value {
            pb::Concurrency::Unspecified | pb::Concurrency::Allow => Concurrency::Allow,
            pb::Concurrency::Forbid => Concurrency::Forbid,
            pb::Concurrency::Replace => Concurrency::Replace,
            pb::Concurrency::Queue => Concurrency::Queue,
        })
        .unwrap_or(Concurrency::Allow);
    if spec.max_queued.is_some() && concurrency != Concurrency::Queue {
        c.fail(
            "max_queued",
            "only applies to concurrency: queue; remove it or set concurrency: queue",
        );
    }
    let max_queued = c.count("max_queued", spec.max_queued, DEFAULT_MAX_QUEUED, 1..=1000);

    let task = validate_task(&mut c, spec.task.as_ref());
    let timeout = c.duration("timeout", &spec.timeout, Duration::from_secs(1), 365 * DAY);
    let kill_grace = c
        .duration(
            "kill_grace",
            &spec.kill_grace,
            Duration::ZERO,
            Duration::from_secs(3600),
        )
        .unwrap_or(DEFAULT_KILL_GRACE);
    let retry = validate_retry(&mut c, spec.retry.as_ref());
    let constraints = validate_constraints(&mut c, spec.constraints.as_ref());
    let history = validate_history(&mut c, spec.history.as_ref());

    if !c.violations.is_empty() {
        return Err(SpecError {
            violations: c.violations,
        });
    }
    Ok(JobSpec {
        name: spec.name.clone(),
        schedule,
        concurrency,
        max_queued,
        task,
        timeout,
        kill_grace,
        retry,
        constraints,
        history,
    })
}

/// Checks a job name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn check_job_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() {
        Err("is required; accepted: 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit".into())
    } else if name.len() > MAX_NAME_LEN || !valid_chars || name.starts_with('-') {
        Err(format!(
            "{name:?} is not a valid job name; accepted: 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

fn check_name(c: &mut Checker, field: &str, name: &str) {
    if let Err(description) = check_job_name(name) {
        c.fail(field, description);
    }
}

fn validate_schedule(c: &mut Checker, schedule: Option<&pb::Schedule>) -> Schedule {
    let default = pb::Schedule::default();
    let schedule = schedule.unwrap_or(&default);
    let trigger = match &schedule.kind {
        None => None,
        Some(pb::schedule::Kind::Cron(expr)) => validate_cron(c, expr).map(Trigger::Cron),
        Some(pb::schedule::Kind::Every(text)) => {
            let every = c.duration("schedule.every", text, Duration::from_secs(1), 366 * DAY);
            if every.is_none() && text.trim().is_empty() {
                c.fail(
                    "schedule.every",
                    "is empty; accepted: an interval such as \"30s\" or \"15m\"",
                );
            }
            every.map(Trigger::Every)
        }
        Some(pb::schedule::Kind::At(text)) => match DateTime::parse_from_rfc3339(text.trim()) {
            Ok(at) => Some(Trigger::At(at.with_timezone(&Utc))),
            Err(e) => {
                c.fail(
                    "schedule.at",
                    format!("{text:?} is not an RFC 3339 timestamp ({e}); accepted: e.g. \"2026-12-01T02:00:00Z\""),
                );
                None
            }
        },
    };

    let timezone = match schedule.timezone.trim() {
        "" => chrono_tz::UTC,
        name => chrono_tz::Tz::from_str(name).unwrap_or_else(|_| {
            c.fail(
                "schedule.timezone",
                format!(
                    "{name:?} is not an IANA time zone; accepted: e.g. \"UTC\", \"Europe/Berlin\", \"America/New_York\""
                ),
            );
            chrono_tz::UTC
        }),
    };

    let catch_up = c
        .enum_value::<pb::CatchUp>("schedule.catch_up", schedule.catch_up, "none, latest, all")
        .map(|value| match value {
            pb::CatchUp::Unspecified | pb::CatchUp::Latest => CatchUp::Latest,
            pb::CatchUp::None => CatchUp::None,
            pb::CatchUp::All => CatchUp::All,
        })
        .unwrap_or(CatchUp::Latest);
    let max_catch_up = c.count(
        "schedule.max_catch_up",
        schedule.max_catch_up,
        DEFAULT_MAX_CATCH_UP,
        1..=1000,
    );
    let starting_deadline = c.duration(
        "schedule.starting_deadline",
        &schedule.starting_deadline,
        Duration::from_secs(1),
        366 * DAY,
    );

    Schedule {
        trigger,
        timezone,
        catch_up,
        max_catch_up,
        starting_deadline,
    }
}

fn validate_cron(c: &mut Checker, expr: &str) -> Option<String> {
    let expr = expr.trim();
    let accepted = "accepted: 5 fields \"min hour dom mon dow\", 6 fields with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly";
    let cron = match parse_cron(expr) {
        Ok(cron) => cron,
        Err(e) => {
            c.fail(
                "schedule.cron",
                format!("{expr:?} is not a valid cron expression ({e}); {accepted}"),
            );
            return None;
        }
    };
    // A pattern such as "0 0 30 2 *" parses but never matches any date.
    let origin = NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0))?;
    if cron.find_next_occurrence(&origin, false).is_err() {
        c.fail("schedule.cron", format!("{expr:?} never fires (no date matches it)"));
        return None;
    }
    Some(expr.to_owned())
}

fn validate_task(c: &mut Checker, task: Option<&pb::Task>) -> Task {
    let default = pb::Task::default();
    let present = task.is_some();
    if !present {
        c.fail("task", "is required");
    }
    let task = task.unwrap_or(&default);
    let driver = c
        .enum_value::<pb::Driver>("task.driver", task.driver, "docker, exec")
        .map(|value| match value {
            pb::Driver::Unspecified | pb::Driver::Docker => Driver::Docker,
            pb::Driver::Exec => Driver::Exec,
        })
        .unwrap_or(Driver::Docker);

    let image = match (driver, task.image.trim()) {
        (Driver::Docker, "") => {
            // An absent task is reported once, as `task`.
            if present {
                c.fail(
                    "task.image",
                    "is required with driver: docker; accepted: e.g. \"debian:12\"",
                );
            }
            None
        }
        (Driver::Docker, image) => match oci_spec::distribution::Reference::from_str(image) {
            Ok(_) => Some(image.to_owned()),
            Err(e) => {
                c.fail(
                    "task.image",
                    format!("{image:?} is not a valid image reference ({e}); accepted: e.g. \"debian:12\", \"registry.example.com/ci/builder:1.4\""),
                );
                None
            }
        },
        (Driver::Exec, "") => None,
        (Driver::Exec, _) => {
            c.fail("task.image", "only applies to driver: docker");
            None
        }
    };

    let pull = c
        .enum_value::<pb::PullPolicy>("task.pull", task.pull, "if-not-present, always, never")
        .map(|value| match value {
            pb::PullPolicy::Unspecified | pb::PullPolicy::IfNotPresent => PullPolicy::IfNotPresent,
            pb::PullPolicy::Always => PullPolicy::Always,
            pb::PullPolicy::Never => PullPolicy::Never,
        })
        .unwrap_or(PullPolicy::IfNotPresent);
    if driver == Driver::Exec && task.pull != pb::PullPolicy::Unspecified as i32 {
        c.fail("task.pull", "only applies to driver: docker");
    }

    if driver == Driver::Exec && task.command.is_empty() {
        c.fail(
            "task.command",
            "is required with driver: exec; accepted: an argument array such as [\"make\", \"test\"]",
        );
    }
    for (i, arg) in task.command.iter().enumerate() {
        c.no_nul(&format!("task.command[{i}]"), arg);
    }
    for (i, arg) in task.args.iter().enumerate() {
        c.no_nul(&format!("task.args[{i}]"), arg);
    }

    let mut env = BTreeMap::new();
    for (key, value) in &task.env {
        let field = format!("task.env[{key:?}]");
        match check_env_entry(key, value) {
            Ok(()) => _ = env.insert(key.clone(), value.clone()),
            Err(description) => c.fail(field, description),
        }
    }

    let mut secret_env = BTreeMap::new();
    for (key, value) in &task.secret_env {
        // The message never repeats the value.
        let field = format!("task.secret_env[{key:?}]");
        if env.contains_key(key) {
            c.fail(field, "is also in task.env; give each variable once");
        } else {
            match check_env_entry(key, value) {
                Ok(()) => _ = secret_env.insert(key.clone(), value.clone()),
                Err(description) => c.fail(field, description),
            }
        }
    }

    let working_dir = non_empty(&task.working_dir);
    if let Some(dir) = &working_dir
        && !dir.starts_with('/')
    {
        c.fail(
            "task.working_dir",
            format!("{dir:?} is not an absolute path; accepted: e.g. \"/src\""),
        );
    }

    let user = non_empty(&task.user);
    if let Some(user) = &user {
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        let valid = match user.split_once(':') {
            Some((u, g)) => part_ok(u) && part_ok(g),
            None => part_ok(user),
        };
        if !valid {
            c.fail(
                "task.user",
                format!("{user:?} is not a valid user; accepted: \"name\", \"uid\" or \"uid:gid\""),
            );
        }
    }

    let resources = validate_resources(c, task.resources.as_ref());

    let network_mode = non_empty(&task.network_mode);
    if let Some(mode) = &network_mode {
        if driver == Driver::Exec {
            c.fail("task.network_mode", "only applies to driver: docker");
        } else {
            let name = mode.strip_prefix("container:").unwrap_or(mode);
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !valid {
                c.fail(
                    "task.network_mode",
                    format!("{mode:?} is not a valid network mode; accepted: \"bridge\", \"none\", \"container:<name>\" or a network name"),
                );
            }
        }
    }

    let host = validate_host_access(c, driver, task.host.as_ref());

    Task {
        driver,
        image,
        pull,
        host,
        secret_env,
        command: task.command.clone(),
        args: task.args.clone(),
        env,
        working_dir,
        user,
        resources,
        network_mode,
    }
}

/// Most mounts, devices or capabilities a task may ask for.
const MAX_HOST_ITEMS: usize = 32;

/// An absolute path without `.`/`..` parts, empty parts, NUL, or the `:`
/// and `,` that separate the parts of a Docker bind.
fn clean_absolute_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 4096
        && !path.contains(['\0', ':', ','])
        && (path == "/"
            || path[1..]
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != ".."))
}

/// Checks what a task asks of its host. Whether a worker allows it is the
/// worker's decision ([security] of its config); here only the form.
fn validate_host_access(c: &mut Checker, driver: Driver, host: Option<&pb::HostAccess>) -> HostAccess {
    let Some(host) = host else {
        return HostAccess::default();
    };
    if driver == Driver::Exec && *host != pb::HostAccess::default() {
        c.fail(
            "task.host",
            "only applies to driver: docker (exec tasks run with the worker's own privileges)",
        );
        return HostAccess::default();
    }
    for (field, len) in [
        ("task.host.cap_add", host.cap_add.len()),
        ("task.host.mounts", host.mounts.len()),
        ("task.host.devices", host.devices.len()),
    ] {
        if len > MAX_HOST_ITEMS {
            c.fail(field, format!("{len} entries; accepted: at most {MAX_HOST_ITEMS}"));
        }
    }
    let mut cap_add = Vec::new();
    for (i, cap) in host.cap_add.iter().enumerate() {
        let name = cap.trim().to_ascii_uppercase();
        let name = name.strip_prefix("CAP_").unwrap_or(&name).to_owned();
        if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            c.fail(
                format!("task.host.cap_add[{i}]"),
                format!("{cap:?} is not a capability name; accepted: e.g. \"NET_ADMIN\" or \"CAP_SYS_PTRACE\""),
            );
        } else {
            cap_add.push(name);
        }
    }
    let mut mounts = Vec::new();
    for (i, mount) in host.mounts.iter().enumerate() {
        let mut ok = true;
        for (field, path) in [
            ("host_path", &mount.host_path),
            ("container_path", &mount.container_path),
        ] {
            if !clean_absolute_path(path) {
                ok = false;
                c.fail(
                    format!("task.host.mounts[{i}].{field}"),
                    format!("{path:?} is not a clean absolute path; accepted: e.g. \"/srv/cache\" (no \"..\", \".\" or \"//\")"),
                );
            }
        }
        if ok {
            mounts.push(Mount {
                host_path: mount.host_path.clone(),
                container_path: mount.container_path.clone(),
                read_only: mount.read_only,
            });
        }
    }
    let mut devices = Vec::new();
    for (i, device) in host.devices.iter().enumerate() {
        if clean_absolute_path(device) && device.starts_with("/dev/") {
            devices.push(device.clone());
        } else {
            c.fail(
                format!("task.host.devices[{i}]"),
                format!("{device:?} is not a device path; accepted: e.g. \"/dev/fuse\""),
            );
        }
    }
    HostAccess {
        privileged: host.privileged,
        cap_add,
        mounts,
        devices,
        host_pid: host.host_pid,
        host_ipc: host.host_ipc,
    }
}

fn validate_resources(c: &mut Checker, resources: Option<&pb::Resources>) -> Resources {
    let default = pb::Resources::default();
    let resources = resources.unwrap_or(&default);
    let cpu_millis = if !resources.cpu.is_finite() || resources.cpu < 0.0 || resources.cpu > MAX_CPU_CORES {
        c.fail(
            "task.resources.cpu",
            format!(
                "{} is out of range; accepted: 0 (no limit) to {MAX_CPU_CORES} cores, e.g. 0.5",
                resources.cpu
            ),
        );
        None
    } else if resources.cpu == 0.0 {
        None
    } else {
        let millis = (resources.cpu * 1000.0).round();
        if millis < 1.0 {
            c.fail("task.resources.cpu", "is below the smallest limit of 0.001 cores");
            None
        } else {
            // In range: 1 ..= 1_024_000.
            Some(millis as u32)
        }
    };
    let memory_bytes = match resources.memory.trim() {
        "" => None,
        text => {
            match quantity::parse_bytes(text) {
                Ok(bytes) if bytes < MIN_MEMORY_BYTES => {
                    c.fail(
                        "task.resources.memory",
                        format!("{text:?} is below the minimum of 6Mi that the Docker engine accepts"),
                    );
                    None
                }
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    c.fail(
                    "task.resources.memory",
                    format!("{text:?} is not a memory quantity ({e}); accepted: e.g. \"512Mi\", \"2Gi\", \"1G\" or bytes"),
                );
                    None
                }
            }
        }
    };
    Resources {
        cpu_millis,
        memory_bytes,
    }
}

fn validate_retry(c: &mut Checker, retry: Option<&pb::RetryPolicy>) -> RetryPolicy {
    let default = pb::RetryPolicy::default();
    let retry = retry.unwrap_or(&default);
    let max_attempts = match retry.max_attempts {
        0 => 1,
        n @ 1..=100 => n,
        n => {
            c.fail("retry.max_attempts", format!("{n} is out of range; accepted: 1 to 100"));
            1
        }
    };
    let backoff = c
        .duration("retry.backoff", &retry.backoff, Duration::from_millis(100), DAY)
        .unwrap_or(DEFAULT_BACKOFF);
    let max_backoff = c
        .duration(
            "retry.max_backoff",
            &retry.max_backoff,
            Duration::from_millis(100),
            7 * DAY,
        )
        .unwrap_or(DEFAULT_MAX_BACKOFF.max(backoff));
    if max_backoff < backoff {
        c.fail(
            "retry.max_backoff",
            format!(
                "{} is shorter than retry.backoff ({}); accepted: at least the backoff",
                format_duration(max_backoff),
                format_duration(backoff)
            ),
        );
    }
    let mut on = BTreeSet::new();
    for (i, raw) in retry.on.iter().enumerate() {
        let field = format!("retry.on[{i}]");
        match c.enum_value::<pb::RetryOn>(&field, *raw, "failed, lost, timed-out") {
            Some(pb::RetryOn::Failed) => _ = on.insert(RetryOn::Failed),
            Some(pb::RetryOn::Lost) => _ = on.insert(RetryOn::Lost),
            Some(pb::RetryOn::TimedOut) => _ = on.insert(RetryOn::TimedOut),
            Some(pb::RetryOn::Unspecified) => c.fail(field, "is unspecified; accepted: failed, lost, timed-out"),
            None => {}
        }
    }
    if retry.on.is_empty() {
        on = BTreeSet::from([RetryOn::Failed, RetryOn::Lost]);
    }
    RetryPolicy {
        max_attempts,
        backoff,
        max_backoff,
        on,
    }
}

fn validate_constraints(c: &mut Checker, constraints: Option<&pb::Constraints>) -> BTreeMap<String, String> {
    let Some(constraints) = constraints else {
        return BTreeMap::new();
    };
    let mut labels = BTreeMap::new();
    for (key, value) in &constraints.labels {
        let field = format!("constraints.labels[{key:?}]");
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'));
        let value_ok = value.len() <= MAX_LABEL_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !key_ok {
            c.fail(
                field,
                "is not a valid label key; accepted: 1 to 63 characters of letters, digits, '_', '.', '-', '/'",
            );
        } else if !value_ok {
            c.fail(
                field,
                format!("{value:?} is not a valid label value; accepted: up to 63 characters of letters, digits, '_', '.', '-'"),
            );
        } else {
            labels.insert(key.clone(), value.clone());
        }
    }
    labels
}

fn validate_history(c: &mut Checker, history: Option<&pb::HistoryPolicy>) -> HistoryPolicy {
    let default = pb::HistoryPolicy::default();
    let history = history.unwrap_or(&default);
    HistoryPolicy {
        keep_succeeded: c.count(
            "history.keep_succeeded",
            history.keep_succeeded,
            DEFAULT_KEEP_SUCCEEDED,
            0..=10_000,
        ),
        keep_failed: c.count(
            "history.keep_failed",
            history.keep_failed,
            DEFAULT_KEEP_FAILED,
            0..=10_000,
        ),
        max_age: c
            .duration("history.max_age", &history.max_age, Duration::from_secs(60), 3650 * DAY)
            .unwrap_or(DEFAULT_MAX_AGE),
    }
}

/// Checks an environment variable (of `task.env` or a run's parameters):
/// a name of letters, digits and `_` not starting with a digit, not in the
/// reserved `ROTA_` space; no NUL characters.
pub fn check_env_entry(key: &str, value: &str) -> Result<(), String> {
    let valid_key = key
        .bytes()
        .enumerate()
        .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
    if key.is_empty() || !valid_key {
        Err("is not a valid variable name; accepted: letters, digits and '_', not starting with a digit".into())
    } else if key.starts_with("ROTA_") {
        Err("names starting with ROTA_ are reserved for variables rota sets".into())
    } else if value.contains('\0') {
        Err("must not contain NUL characters".into())
    } else {
        Ok(())
    }
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn duration_text(d: Option<Duration>) -> String {
    d.map(format_duration).unwrap_or_default()
}

/// Renders a domain spec as `rota.v1.JobSpec`, with every default explicit.
pub fn to_proto(spec: &JobSpec) -> pb::JobSpec {
    let schedule = &spec.schedule;
    let kind = schedule.trigger.as_ref().map(|trigger| match trigger {
        Trigger::Cron(expr) => pb::schedule::Kind::Cron(expr.clone()),
        Trigger::Every(every) => pb::schedule::Kind::Every(format_duration(*every)),
        Trigger::At(at) => pb::schedule::Kind::At(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
    });
    let task = &spec.task;
    pb::JobSpec {
        name: spec.name.clone(),
        schedule: Some(pb::Schedule {
            kind,
            timezone: schedule.timezone.name().to_owned(),
            catch_up: match schedule.catch_up {
                CatchUp::None => pb::CatchUp::None,
                CatchUp::Latest => pb::CatchUp::Latest,
                CatchUp::All => pb::CatchUp::All,
            } as i32,
            max_catch_up: Some(schedule.max_catch_up),
            starting_deadline: duration_text(schedule.starting_deadline),
        }),
        concurrency: match spec.concurrency {
            Concurrency::Allow => pb::Concurrency::Allow,
            Concurrency::Forbid => pb::Concurrency::Forbid,
            Concurrency::Replace => pb::Concurrency::Replace,
            Concurrency::Queue => pb::Concurrency::Queue,
        } as i32,
        max_queued: (spec.concurrency == Concurrency::Queue).then_some(spec.max_queued),
        task: Some(pb::Task {
            driver: match task.driver {
                Driver::Docker => pb::Driver::Docker,
                Driver::Exec => pb::Driver::Exec,
            } as i32,
            image: task.image.clone().unwrap_or_default(),
            pull: match (task.driver, task.pull) {
                (Driver::Exec, _) => pb::PullPolicy::Unspecified,
                (_, PullPolicy::IfNotPresent) => pb::PullPolicy::IfNotPresent,
                (_, PullPolicy::Always) => pb::PullPolicy::Always,
                (_, PullPolicy::Never) => pb::PullPolicy::Never,
            } as i32,
            command: task.command.clone(),
            args: task.args.clone(),
            env: task.env.clone().into_iter().collect(),
            working_dir: task.working_dir.clone().unwrap_or_default(),
            user: task.user.clone().unwrap_or_default(),
            resources: Some(pb::Resources {
                cpu: task.resources.cpu_millis.map_or(0.0, |m| f64::from(m) / 1000.0),
                memory: task
                    .resources
                    .memory_bytes
                    .map(quantity::format_bytes)
                    .unwrap_or_default(),
            }),
            network_mode: task.network_mode.clone().unwrap_or_default(),
            secret_env: task.secret_env.clone().into_iter().collect(),
            host: (!task.host.is_none()).then(|| pb::HostAccess {
                privileged: task.host.privileged,
                cap_add: task.host.cap_add.clone(),
                mounts: task
                    .host
                    .mounts
                    .iter()
                    .map(|m| pb::Mount {
                        host_path: m.host_path.clone(),
                        container_path: m.container_path.clone(),
                        read_only: m.read_only,
                    })
                    .collect(),
                devices: task.host.devices.clone(),
                host_pid: task.host.host_pid,
                host_ipc: task.host.host_ipc,
            }),
        }),
        timeout: duration_text(spec.timeout),
        kill_grace: format_duration(spec.kill_grace),
        retry: Some(pb::RetryPolicy {
            max_attempts: spec.retry.max_attempts,
            backoff: format_duration(spec.retry.backoff),
            max_backoff: format_duration(spec.retry.max_backoff),
            on: spec
                .retry
                .on
                .iter()
                .map(|on| match on {
                    RetryOn::Failed => pb::RetryOn::Failed as i32,
                    RetryOn::Lost => pb::RetryOn::Lost as i32,
                    RetryOn::TimedOut => pb::RetryOn::TimedOut as i32,
                })
                .collect(),
        }),
        constraints: Some(pb::Constraints {
            labels: spec.constraints.clone().into_iter().collect(),
        }),
        history: Some(pb::HistoryPolicy {
            keep_succeeded: Some(spec.history.keep_succeeded),
            keep_failed: Some(spec.history.keep_failed),
            max_age: format_duration(spec.history.max_age),
        }),
    }
}
