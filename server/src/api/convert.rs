//! Domain values to `rota.v1` messages. (Job specs are converted by
//! [`crate::spec`], which owns their validation.)

use chrono::{DateTime, Utc};
use rota_proto::v1 as pb;

use crate::spec;
use crate::state::logs::LogStream;
use crate::state::run::{Attempt, Cause, Run, RunState, Worker};
use crate::state::{ApplyOutcome, Job};

/// A timestamp as protobuf.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Always below 2e9 (a leap second at most), so it fits.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(i32::MAX),
    }
}

/// A protobuf timestamp as an instant (`None` if absent or out of range).
pub fn instant(ts: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts.as_ref()?;
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
}

/// A job as protobuf.
pub fn job(job: &Job) -> pb::Job {
    pb::Job {
        name: job.name.clone(),
        uid: job.uid.clone(),
        generation: job.generation,
        spec: Some(spec::to_proto(&job.spec)),
        suspended: job.suspended,
        created_at: Some(timestamp(job.created_at)),
        updated_at: Some(timestamp(job.updated_at)),
        revision: job.revision,
    }
}

/// An apply outcome as protobuf.
pub fn apply_outcome(outcome: ApplyOutcome) -> pb::ApplyOutcome {
    match outcome {
        ApplyOutcome::Created => pb::ApplyOutcome::Created,
        ApplyOutcome::Updated => pb::ApplyOutcome::Updated,
        ApplyOutcome::Unchanged => pb::ApplyOutcome::Unchanged,
    }
}

/// A run state as protobuf.
pub fn run_state(state: RunState) -> pb::RunState {
    match state {
        RunState::Pending => pb::RunState::Pending,
        RunState::Assigned => pb::RunState::Assigned,
        RunState::Running => pb::RunState::Running,
        RunState::Succeeded => pb::RunState::Succeeded,
        RunState::Failed => pb::RunState::Failed,
        RunState::TimedOut => pb::RunState::TimedOut,
        RunState::Cancelled => pb::RunState::Cancelled,
        RunState::Lost => pb::RunState::Lost,
        RunState::Skipped => pb::RunState::Skipped,
        RunState::Missed => pb::RunState::Missed,
    }
}

/// A protobuf run state, if it names one.
pub fn run_state_from(state: pb::RunState) -> Option<RunState> {
    Some(match state {
        pb::RunState::Unspecified => return None,
        pb::RunState::Pending => RunState::Pending,
        pb::RunState::Assigned => RunState::Assigned,
        pb::RunState::Running => RunState::Running,
        pb::RunState::Succeeded => RunState::Succeeded,
        pb::RunState::Failed => RunState::Failed,
        pb::RunState::TimedOut => RunState::TimedOut,
        pb::RunState::Cancelled => RunState::Cancelled,
        pb::RunState::Lost => RunState::Lost,
        pb::RunState::Skipped => RunState::Skipped,
        pb::RunState::Missed => RunState::Missed,
    })
}

/// The word of a serde enum value (`snake_case`), for string fields.
pub fn word<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A log stream as protobuf.
pub fn log_stream(stream: LogStream) -> pb::LogStream {
    match stream {
        LogStream::System => pb::LogStream::System,
        LogStream::Stdout => pb::LogStream::Stdout,
        LogStream::Stderr => pb::LogStream::Stderr,
    }
}

fn attempt(attempt: &Attempt) -> pb::Attempt {
    let resources = attempt.resources.unwrap_or_default();
    pb::Attempt {
        number: attempt.number,
        epoch: attempt.epoch,
        worker: attempt.worker.clone(),
        assigned_at: Some(timestamp(attempt.assigned_at)),
        started_at: attempt.started_at.map(timestamp),
        ended_at: attempt.ended_at.map(timestamp),
        outcome: attempt.outcome.as_ref().map(word).unwrap_or_default(),
        exit_code: attempt.exit_code,
        oom_killed: attempt.oom_killed,
        peak_memory_bytes: resources.peak_memory_bytes,
        cpu_time_ms: resources.cpu_time_ms,
        stop: attempt.stop.as_ref().map(word).unwrap_or_default(),
        message: attempt.message.clone().unwrap_or_default(),
    }
}

/// A run as protobuf.
pub fn run(run: &Run) -> pb::Run {
    let (cause, request_id, forced) = match &run.cause {
        Cause::Scheduled => ("scheduled", String::new(), false),
        Cause::Manual { request_id, forced } => ("manual", request_id.to_string(), *forced),
    };
    pb::Run {
        id: run.id.to_string(),
        job: run.job.clone(),
        job_uid: run.job_uid.clone(),
        generation: run.generation,
        cause: cause.to_owned(),
        request_id,
        forced,
        nominal_time: run.nominal_time.map(timestamp),
        last_nominal_time: run.last_nominal_time.map(timestamp),
        slot_count: run.slot_count,
        params: run.params.clone().into_iter().collect(),
        created_at: Some(timestamp(run.created_at)),
        created_index: run.created_index,
        updated_index: run.updated_index,
        state: run_state(run.state) as i32,
        reason_code: run.reason.as_ref().map(|r| word(&r.code)).unwrap_or_default(),
        reason: run.reason.as_ref().map(|r| r.message.clone()).unwrap_or_default(),
        not_before: run.not_before.map(timestamp),
        attempts: run.attempts.iter().map(attempt).collect(),
        finished_at: run.finished_at.map(timestamp),
        log_bytes: run.log.kept_bytes,
        log_dropped_bytes: run.log.dropped_bytes,
        waiting: String::new(),
    }
}

/// A worker as protobuf; `running` is how many attempts it holds.
pub fn worker(worker: &Worker, running: usize) -> pb::WorkerInfo {
    pb::WorkerInfo {
        id: worker.id.clone(),
        state: word(&worker.state),
        labels: worker.labels.clone().into_iter().collect(),
        drivers: worker.drivers.iter().map(word).collect(),
        slots: worker.capacity.slots,
        running: u32::try_from(running).unwrap_or(u32::MAX),
        registered_at: Some(timestamp(worker.registered_at)),
        lost_at: worker.lost_at.map(timestamp),
        draining: worker.drain.is_some(),
        drain_deadline: worker.drain.map(|d| timestamp(d.deadline)),
        drain_by_operator: worker.drain.is_some_and(|d| d.by_operator),
    }
}

/// A protobuf duration as a std one, for field `field`; negative or
/// malformed ones are refused.
pub fn std_duration(field: &str, d: &prost_types::Duration) -> Result<std::time::Duration, crate::api::ApiError> {
    std::time::Duration::try_from(*d).map_err(|_| {
        crate::api::ApiError::invalid(field, format!("{d:?} is not a valid duration; accepted: 0s or more"))
    })
}

/// A duration as protobuf.
pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Below 1e9, so it fits.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
