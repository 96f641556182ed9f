//! Output of read commands: aligned tables for people, JSON or YAML for
//! scripts. JSON and YAML show jobs with their spec in spec-file form, so
//! `rotactl job get NAME -o yaml` can be edited and applied back.

use chrono::{DateTime, Utc};
use rota_client::{Error, SpecFile, proto as pb};
use serde::Serialize;

use crate::config::Config;
use crate::listing::print_table;
pub use crate::listing::{Color, Listing, list, paint};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

pub fn print_structured<T: Serialize>(value: &T, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_norway::to_string(value)?),
        Format::Table => unreachable!("tables are printed by their callers"),
    }
    Ok(())
}

fn time(ts: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts.as_ref()?;
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
}

/// How long ago, in one or two units: `5s`, `3m`, `2h10m`, `4d`.
fn age(at: Option<DateTime<Utc>>) -> String {
    let Some(at) = at else { return "-".into() };
    let secs = (Utc::now() - at).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A job for JSON/YAML output.
#[derive(Debug, Serialize)]
pub struct JobView {
    name: String,
    uid: String,
    generation: u64,
    suspended: bool,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    revision: u64,
    spec: SpecFile,
}

impl From<&pb::Job> for JobView {
    fn from(job: &pb::Job) -> Self {
        JobView {
            name: job.name.clone(),
            uid: job.uid.clone(),
            generation: job.generation,
            suspended: job.suspended,
            created_at: time(&job.created_at),
            updated_at: time(&job.updated_at),
            revision: job.revision,
            spec: job.spec.as_ref().map(SpecFile::from_proto).unwrap_or_default(),
        }
    }
}

fn schedule_text(job: &pb::Job) -> String {
    let Some(schedule) = job.spec.as_ref().and_then(|s| s.schedule.as_ref()) else {
        return "on demand".into();
    };
    let zone = if schedule.timezone.is_empty() || schedule.timezone == "UTC" {
        String::new()
    } else {
        format!(" ({})", schedule.timezone)
    };
    match &schedule.kind {
        Some(pb::schedule::Kind::Cron(cron)) => format!("cron {cron}{zone}"),
        Some(pb::schedule::Kind::Every(every)) => format!("every {every}"),
        Some(pb::schedule::Kind::At(at)) => format!("at {at}"),
        None => "on demand".into(),
    }
}

/// Prints one job.
pub fn print_job(job: &JobView, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            println!("name:        {}", job.name);
            println!("uid:         {}", job.uid);
            println!("generation:  {}", job.generation);
            println!("suspended:   {}", job.suspended);
            println!("created:     {} ago", age(job.created_at));
            println!("updated:     {} ago", age(job.updated_at));
            println!("spec:");
            for line in job.spec.to_yaml().lines() {
                println!("  {line}");
            }
            Ok(())
        }
        _ => print_structured(job, format),
    }
}

impl Listing for pb::Job {
    const HEADER: &'static [&'static str] = &["NAME", "SCHEDULE", "STATE", "TASK", "GEN", "AGE"];
    const NONE: &'static str = "no jobs";
    type View = JobView;

    fn key(&self) -> String {
        self.name.clone()
    }

    fn row(&self) -> Vec<String> {
        let task = self.spec.as_ref().and_then(|s| s.task.as_ref());
        vec![
            self.name.clone(),
            schedule_text(self),
            if self.suspended { "suspended" } else { "active" }.into(),
            task.map(|t| {
                if t.image.is_empty() {
                    t.command.join(" ")
                } else {
                    t.image.clone()
                }
            })
            .unwrap_or_default(),
            self.generation.to_string(),
            age(time(&self.created_at)),
        ]
    }

    fn view(&self) -> JobView {
        JobView::from(self)
    }
}

fn role_word(role: i32) -> &'static str {
    match pb::Role::try_from(role).unwrap_or_default() {
        pb::Role::Leader => "leader",
        pb::Role::Follower => "follower",
        pb::Role::Candidate => "candidate",
        pb::Role::Learner => "learner",
        pb::Role::Detached => "detached",
        pb::Role::Unspecified => "unknown",
    }
}

#[derive(Serialize)]
struct MemberView {
    node_id: u64,
    addr: String,
    role: &'static str,
}

/// Prints members.
pub fn print_members(members: &[pb::Member], format: Format) -> anyhow::Result<()> {
    let views: Vec<MemberView> = members
        .iter()
        .map(|m| MemberView {
            node_id: m.node_id,
            addr: m.addr.clone(),
            role: role_word(m.role),
        })
        .collect();
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|m| vec![m.node_id.to_string(), m.addr.clone(), m.role.to_owned()])
                .collect();
            print_table(&["ID", "ADDRESS", "ROLE"], &rows);
            Ok(())
        }
        _ => print_structured(&views, format),
    }
}

/// An API token for JSON/YAML output (never its secret).
#[derive(Serialize)]
pub struct TokenView {
    id: String,
    name: String,
    role: String,
    created_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Prints tokens as a table or structured.
pub fn print_tokens(tokens: &[pb::ApiToken], format: Format) -> anyhow::Result<()> {
    let role = |r: i32| {
        pb::TokenRole::try_from(r)
            .map(|r| r.as_str_name().trim_start_matches("TOKEN_ROLE_").to_ascii_lowercase())
            .unwrap_or_else(|_| format!("unknown({r})"))
    };
    let views: Vec<TokenView> = tokens
        .iter()
        .map(|t| TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            role: role(t.role),
            created_at: time(&t.created_at),
            expires_at: time(&t.expires_at),
            revoked_at: time(&t.revoked_at),
        })
        .collect();
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .zip(&views)
                .map(|(t, v)| {
                    let state = match (&v.revoked_at, &v.expires_at) {
                        (Some(_), _) => format!("revoked {}", rfc3339(&t.revoked_at)),
                        (None, Some(_)) => format!("expires {}", rfc3339(&t.expires_at)),
                        (None, None) => "active".to_owned(),
                    };
                    vec![
                        v.id.clone(),
                        v.name.clone(),
                        v.role.clone(),
                        rfc3339(&t.created_at),
                        state,
                    ]
                })
                .collect();
            if rows.is_empty() {
                println!("no tokens");
            } else {
                print_table(&["ID", "NAME", "ROLE", "CREATED", "STATE"], &rows);
            }
            Ok(())
        }
        _ => print_structured(&views, format),
    }
}

/// A worker for JSON/YAML output.
#[derive(Serialize)]
pub struct WorkerView {
    id: String,
    state: String,
    drivers: Vec<String>,
    slots: u32,
    running: u32,
    labels: std::collections::BTreeMap<String, String>,
    draining: bool,
    drain_deadline: Option<DateTime<Utc>>,
    drain_by_operator: bool,
    registered_at: Option<DateTime<Utc>>,
    lost_at: Option<DateTime<Utc>>,
}

impl Listing for pb::WorkerInfo {
    const HEADER: &'static [&'static str] = &["ID", "STATE", "DRIVERS", "RUNNING", "LABELS", "DRAIN", "REGISTERED"];
    const NONE: &'static str = "no workers";
    type View = WorkerView;

    fn key(&self) -> String {
        self.id.clone()
    }

    fn row(&self) -> Vec<String> {
        let w = self.view();
        // Drained stays drained (until undrained); what the deadline ends is
        // the time its runs have before they are handed back.
        let drain = match (w.draining, w.drain_by_operator) {
            (false, _) => "-".to_owned(),
            (true, by_operator) => {
                let what = if by_operator { "drained" } else { "shutting down" };
                match w.drain_deadline {
                    Some(deadline) if deadline > Utc::now() => format!("{what}, hands back {}", until(Some(deadline))),
                    _ => what.to_owned(),
                }
            }
        };
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        vec![
            w.id,
            w.state,
            w.drivers.join(","),
            format!("{}/{}", w.running, w.slots),
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(",")
            },
            drain,
            age(w.registered_at),
        ]
    }

    fn view(&self) -> WorkerView {
        WorkerView {
            id: self.id.clone(),
            state: self.state.clone(),
            drivers: self.drivers.clone(),
            slots: self.slots,
            running: self.running,
            labels: self.labels.clone().into_iter().collect(),
            draining: self.draining,
            drain_deadline: time(&self.drain_deadline),
            drain_by_operator: self.drain_by_operator,
            registered_at: time(&self.registered_at),
            lost_at: time(&self.lost_at),
        }
    }
}

#[derive(Serialize)]
struct StatusView {
    endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

/// Prints the status of each endpoint (or why it did not answer).
pub fn print_statuses(rows: &[(String, Result<pb::GetStatusResponse, Error>)], format: Format) -> anyhow::Result<()> {
    let views: Vec<StatusView> = rows
        .iter()
        .map(|(endpoint, status)| match status {
            Ok(s) => StatusView {
                endpoint: endpoint.clone(),
                error: None,
                node_id: Some(s.node_id),
                role: Some(role_word(s.role)),
                term: Some(s.term),
                leader_id: Some(s.leader_id),
                commit_index: Some(s.commit_index),
                applied_index: Some(s.applied_index),
                snapshot_index: Some(s.snapshot_index),
                job_count: Some(s.job_count),
                version: Some(s.version.clone()),
            },
            Err(e) => StatusView {
                endpoint: endpoint.clone(),
                error: Some(e.to_string()),
                node_id: None,
                role: None,
                term: None,
                leader_id: None,
                commit_index: None,
                applied_index: None,
                snapshot_index: None,
                job_count: None,
                version: None,
            },
        })
        .collect();
    match format {
        Format::Table => {
            let dash = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            let table: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    vec![
                        v.endpoint.clone(),
                        dash(v.node_id),
                        v.role.map_or_else(|| "unreachable".to_owned(), str::to_owned),
                        dash(v.term),
                        dash(v.leader_id.filter(|&l| l != 0)),
                        dash(v.commit_index),
                        dash(v.applied_index),
                        dash(v.snapshot_index),
                        dash(v.job_count),
                        v.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "SNAPSHOT", "JOBS", "ERROR",
                ],
                &table,
            );
            Ok(())
        }
        _ => print_structured(&views, format),
    }
}

/// The word of a run state.
pub fn state_word(state: i32) -> &'static str {
    match pb::RunState::try_from(state).unwrap_or_default() {
        pb::RunState::Pending => "pending",
        pb::RunState::Assigned => "assigned",
        pb::RunState::Running => "running",
        pb::RunState::Succeeded => "succeeded",
        pb::RunState::Failed => "failed",
        pb::RunState::TimedOut => "timed_out",
        pb::RunState::Cancelled => "cancelled",
        pb::RunState::Lost => "lost",
        pb::RunState::Skipped => "skipped",
        pb::RunState::Missed => "missed",
        pb::RunState::Unspecified => "unknown",
    }
}

fn rfc3339(ts: &Option<prost_types::Timestamp>) -> String {
    time(ts).map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// A run for JSON/YAML output.
#[derive(Debug, Serialize)]
pub struct RunView {
    id: String,
    job: String,
    state: &'static str,
    cause: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    request_id: String,
    nominal_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_nominal_time: Option<DateTime<Utc>>,
    slot_count: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason_code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    waiting: String,
    created_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    not_before: Option<DateTime<Utc>>,
    params: std::collections::BTreeMap<String, String>,
    attempts: Vec<AttemptView>,
    log_bytes: u64,
    log_dropped_bytes: u64,
}

#[derive(Debug, Serialize)]
struct AttemptView {
    number: u32,
    epoch: u64,
    worker: String,
    assigned_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    outcome: String,
    exit_code: Option<i32>,
    oom_killed: bool,
    peak_memory_bytes: u64,
    cpu_time_ms: u64,
    stop: String,
    message: String,
}

impl From<&pb::Run> for RunView {
    fn from(run: &pb::Run) -> Self {
        RunView {
            id: run.id.clone(),
            job: run.job.clone(),
            state: state_word(run.state),
            cause: run.cause.clone(),
            request_id: run.request_id.clone(),
            nominal_time: time(&run.nominal_time),
            last_nominal_time: (run.slot_count > 1).then(|| time(&run.last_nominal_time)).flatten(),
            slot_count: run.slot_count,
            reason_code: run.reason_code.clone(),
            reason: run.reason.clone(),
            waiting: run.waiting.clone(),
            created_at: time(&run.created_at),
            finished_at: time(&run.finished_at),
            not_before: time(&run.not_before),
            params: run.params.clone().into_iter().collect(),
            attempts: run
                .attempts
                .iter()
                .map(|a| AttemptView {
                    number: a.number,
                    epoch: a.epoch,
                    worker: a.worker.clone(),
                    assigned_at: time(&a.assigned_at),
                    started_at: time(&a.started_at),
                    ended_at: time(&a.ended_at),
                    outcome: a.outcome.clone(),
                    exit_code: a.exit_code,
                    oom_killed: a.oom_killed,
                    peak_memory_bytes: a.peak_memory_bytes,
                    cpu_time_ms: a.cpu_time_ms,
                    stop: a.stop.clone(),
                    message: a.message.clone(),
                })
                .collect(),
            log_bytes: run.log_bytes,
            log_dropped_bytes: run.log_dropped_bytes,
        }
    }
}

impl Listing for pb::Run {
    const HEADER: &'static [&'static str] = &["ID", "JOB", "STATE", "CAUSE", "SLOT", "ATTEMPTS", "AGE", "REASON"];
    const NONE: &'static str = "no runs";
    type View = RunView;

    fn key(&self) -> String {
        self.id.clone()
    }

    fn row(&self) -> Vec<String> {
        let slot = if self.slot_count > 1 {
            format!("{} (+{} slots)", rfc3339(&self.nominal_time), self.slot_count - 1)
        } else {
            rfc3339(&self.nominal_time)
        };
        vec![
            self.id.clone(),
            self.job.clone(),
            state_word(self.state).to_owned(),
            self.cause.clone(),
            slot,
            self.attempts.len().to_string(),
            age(time(&self.created_at)),
            self.reason_code.clone(),
        ]
    }

    fn view(&self) -> RunView {
        RunView::from(self)
    }
}

/// One line on where a run is, for `wait` on a terminal.
pub fn progress_line(run: &pb::Run) -> String {
    let state = state_word(run.state);
    match run.attempts.last() {
        Some(a) if a.outcome.is_empty() => format!("{state}: attempt {} on worker {}", a.number, a.worker),
        _ if !run.waiting.is_empty() => format!("{state}: {}", run.waiting),
        Some(a) => format!("{state}: attempt {} {}", a.number, a.outcome),
        None => state.to_owned(),
    }
}

/// Prints one run.
pub fn print_run(run: &pb::Run, format: Format) -> anyhow::Result<()> {
    let view = RunView::from(run);
    match format {
        Format::Table => {
            println!("id:        {}", view.id);
            println!("job:       {}", view.job);
            println!("state:     {}", view.state);
            println!("cause:     {}", view.cause);
            println!("slot:      {}", rfc3339(&run.nominal_time));
            if run.slot_count > 1 {
                println!(
                    "slots:     {} up to {}",
                    run.slot_count,
                    rfc3339(&run.last_nominal_time)
                );
            }
            if !view.reason.is_empty() {
                println!("reason:    {} ({})", view.reason, view.reason_code);
            }
            if !view.waiting.is_empty() {
                println!("waiting:   {}", view.waiting);
            }
            println!("created:   {} ago", age(view.created_at));
            if !view.params.is_empty() {
                println!("params:    {:?}", view.params);
            }
            println!(
                "log:       {} bytes ({} dropped)",
                view.log_bytes, view.log_dropped_bytes
            );
            for a in &view.attempts {
                let outcome = if a.outcome.is_empty() {
                    "live"
                } else {
                    a.outcome.as_str()
                };
                let mut details = a.exit_code.map(|c| format!(" exit {c}")).unwrap_or_default();
                if a.oom_killed {
                    details.push_str(" (OOM-killed)");
                }
                if let (Some(started), Some(ended)) = (a.started_at, a.ended_at) {
                    // What the worker measured. Peak memory is never really
                    // 0: it was not measured (an exec task without a memory
                    // limit, a container too short for the engine's stats).
                    let ran = (ended - started).num_milliseconds().max(0) as f64 / 1000.0;
                    let peak = match a.peak_memory_bytes {
                        0 => "not measured".to_owned(),
                        bytes => format!("{} KiB", bytes / 1024),
                    };
                    details.push_str(&format!(
                        ", ran {ran:.1}s, cpu {} ms, peak memory {peak}",
                        a.cpu_time_ms
                    ));
                } else if a.peak_memory_bytes > 0 || a.cpu_time_ms > 0 {
                    details.push_str(&format!(
                        ", peak memory {} KiB, cpu {} ms",
                        a.peak_memory_bytes / 1024,
                        a.cpu_time_ms
                    ));
                }
                if !a.stop.is_empty() {
                    details.push_str(&format!(", stop: {}", a.stop));
                }
                println!(
                    "attempt {}: worker {} epoch {} {outcome}{details}",
                    a.number, a.worker, a.epoch
                );
                if !a.message.is_empty() {
                    println!("  {}", a.message);
                }
            }
            Ok(())
        }
        _ => print_structured(&view, format),
    }
}

/// How long until `at`: `in 5s`, `in 3h10m`; `2d ago` for the past.
fn until(at: Option<DateTime<Utc>>) -> String {
    let Some(at) = at else { return "-".into() };
    let secs = (at - Utc::now()).num_seconds();
    if secs <= 0 {
        return format!("{} ago", age(Some(at)));
    }
    let text = match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600),
    };
    format!("in {text}")
}

#[derive(Serialize)]
struct ExplainView<'a> {
    job: &'a str,
    schedule: &'a str,
    timezone: &'a str,
    fires: Vec<FireView<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    note: &'a str,
}

#[derive(Serialize)]
struct FireView<'a> {
    at: Option<DateTime<Utc>>,
    local_time: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    dst_note: &'a str,
}

/// Prints the next fire times of each job.
pub fn print_explained(explained: &[(String, pb::ExplainScheduleResponse)], format: Format) -> anyhow::Result<()> {
    let views: Vec<ExplainView<'_>> = explained
        .iter()
        .map(|(job, e)| ExplainView {
            job,
            schedule: &e.schedule,
            timezone: &e.timezone,
            fires: e
                .fires
                .iter()
                .map(|f| FireView {
                    at: time(&f.at),
                    local_time: &f.local_time,
                    dst_note: &f.dst_note,
                })
                .collect(),
            note: &e.note,
        })
        .collect();
    if format != Format::Table {
        return print_structured(&views, format);
    }
    for (i, view) in views.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("job/{}: {}", view.job, view.schedule);
        if !view.fires.is_empty() {
            let rows: Vec<Vec<String>> = view
                .fires
                .iter()
                .map(|f| {
                    vec![
                        f.local_time.to_owned(),
                        f.at.map_or_else(
                            || "-".to_owned(),
                            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        ),
                        until(f.at),
                        f.dst_note.to_owned(),
                    ]
                })
                .collect();
            print_table(&["LOCAL", "UTC", "WHEN", "DST"], &rows);
        }
        if !view.note.is_empty() {
            println!("note: {}", view.note);
        }
    }
    Ok(())
}

/// The change from `previous`'s spec to `job`'s, as indented `-`/`+`
/// lines of their YAML with one line of context.
pub fn spec_diff(previous: &pb::Job, job: &pb::Job, color: bool) -> String {
    let yaml = |job: &pb::Job| {
        job.spec
            .as_ref()
            .map(SpecFile::from_proto)
            .unwrap_or_default()
            .to_yaml()
    };
    let (old, new) = (yaml(previous), yaml(job));
    let diff = similar::TextDiff::from_lines(&old, &new);
    let mut out = String::new();
    for (i, group) in diff.grouped_ops(1).iter().enumerate() {
        if i > 0 {
            out.push_str("    ...\n");
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let (sign, paint_with) = match change.tag() {
                    similar::ChangeTag::Delete => ("-", Some(Color::Red)),
                    similar::ChangeTag::Insert => ("+", Some(Color::Green)),
                    similar::ChangeTag::Equal => (" ", None),
                };
                let line = format!("  {sign} {}", change.value().trim_end_matches('\n'));
                match paint_with {
                    Some(c) => out.push_str(&paint(&line, c, color)),
                    None => out.push_str(&line),
                }
                out.push('\n');
            }
        }
    }
    out
}

/// Prints the config file (YAML unless JSON is asked for).
pub fn print_config(config: &Config, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_structured(config, format),
        _ => print_structured(config, Format::Yaml),
    }
}

#[derive(Serialize)]
struct ContextView<'a> {
    name: &'a str,
    current: bool,
    servers: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
}

/// Prints the contexts of the config file.
pub fn print_contexts(config: &Config, format: Format) -> anyhow::Result<()> {
    let views: Vec<ContextView<'_>> = config
        .contexts
        .iter()
        .map(|(name, context)| ContextView {
            name,
            current: config.current_context.as_deref() == Some(name),
            servers: &context.servers,
            timeout: context.timeout.map(|t| humantime::format_duration(t).to_string()),
        })
        .collect();
    if format != Format::Table {
        return print_structured(&views, format);
    }
    if views.is_empty() {
        eprintln!("no contexts; add one with `rotactl config set-context NAME HOST:PORT...`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                if v.current { "*" } else { "" }.to_owned(),
                v.name.to_owned(),
                v.servers.join(","),
                v.timeout.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&["CURRENT", "NAME", "SERVERS", "TIMEOUT"], &rows);
    Ok(())
}
