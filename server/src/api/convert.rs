//! Domain values to `rota.v1` messages. (Job specs are converted by
//! [`crate::spec`], which owns their validation.)

use chrono::{DateTime, Utc};
use rota_proto::v1 as pb;

use crate::spec;
use crate::state::{ApplyOutcome, Job};

/// A timestamp as protobuf.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Always below 2e9 (a leap second at most), so it fits.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(i32::MAX),
    }
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
