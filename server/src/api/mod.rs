//! The client-facing gRPC services ([`job`], [`run`], [`cluster`], and the
//! [`worker`] protocol) and the one table
//! that turns every error into a gRPC status ([`ApiError`]).
//!
//! Writes and linearizable reads need the leader. A follower forwards them
//! over its channel to the leader, marking the request so it is never
//! forwarded twice; when it cannot (no leader known, or the request was
//! already forwarded) it answers `UNAVAILABLE` with the leader's address in
//! the `rota-leader` metadata key, for the client to retry there. Stale reads
//! are served by whichever server receives them.
//!
//! Specs are validated on the server that receives them, before anything is
//! proposed: invalid input never reaches the Raft log.

pub mod cluster;
pub mod convert;
pub mod job;
pub mod run;
pub mod worker;

use std::future::Future;

use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::node::LeaderHint;
use crate::spec::SpecError;
use crate::state::{Rejection, RejectionKind};

/// Metadata key carrying the leader's id next to `rota-leader`.
pub const LEADER_ID_METADATA_KEY: &str = "rota-leader-id";

/// Every way an API call can fail, before it becomes a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The job spec is invalid.
    #[error("{0}")]
    Spec(SpecError),
    /// A request field other than the spec is invalid.
    #[error("{field}: {description}")]
    InvalidArgument {
        /// Its path.
        field: String,
        /// What is wrong and what is accepted.
        description: String,
    },
    /// The state machine refused the command.
    #[error("{0}")]
    Rejected(Rejection),
    /// Something named does not exist (outside the state machine).
    #[error("{0}")]
    NotFound(String),
    /// The cluster is not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// This server is not the leader.
    #[error("{}", not_leader_message(.leader))]
    NotLeader {
        /// The leader, if known.
        leader: Option<LeaderHint>,
    },
    /// The call cannot be served now; retrying may help.
    #[error("{0}")]
    Unavailable(String),
    /// The call ran out of time.
    #[error("{0}")]
    DeadlineExceeded(String),
}

fn not_leader_message(leader: &Option<LeaderHint>) -> String {
    match leader {
        Some(leader) => format!(
            "this server is not the leader; the leader is node {} at {} (see the rota-leader metadata)",
            leader.id, leader.addr
        ),
        None => "no leader is known yet (an election may be in progress); retry shortly".to_owned(),
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let message = error.to_string();
        match error {
            ApiError::Spec(spec) => {
                let mut details = ErrorDetails::new();
                for v in &spec.violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::InvalidArgument { field, description } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, description),
            ),
            ApiError::Rejected(rejection) => Status::new(
                match rejection.kind {
                    RejectionKind::NotFound => Code::NotFound,
                    RejectionKind::AlreadyExists => Code::AlreadyExists,
                    RejectionKind::FailedPrecondition => Code::FailedPrecondition,
                    RejectionKind::InvalidArgument => Code::InvalidArgument,
                },
                message,
            ),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(message),
            ApiError::NotLeader { leader } => {
                let mut status = Status::unavailable(message);
                if let Some(leader) = leader {
                    if let Ok(addr) = MetadataValue::try_from(leader.addr.as_str()) {
                        status.metadata_mut().insert(rota_proto::LEADER_METADATA_KEY, addr);
                    }
                    status
                        .metadata_mut()
                        .insert(LEADER_ID_METADATA_KEY, MetadataValue::from(leader.id));
                }
                status
            }
            ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::DeadlineExceeded(_) => Status::deadline_exceeded(message),
        }
    }
}

impl ApiError {
    /// A bad request field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Sends a request on to the leader and returns its answer unchanged. The
/// request is marked as forwarded and keeps the caller's deadline.
pub async fn forward<Req, Resp, F, Fut>(request: Request<Req>, call: F) -> Result<Response<Resp>, Status>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let deadline = request.metadata().get("grpc-timeout").cloned();
    // The leader checks the caller's token again.
    let authorization = request.metadata().get(crate::auth::AUTHORIZATION).cloned();
    let mut forwarded = Request::new(request.into_inner());
    if let Some(authorization) = authorization {
        forwarded
            .metadata_mut()
            .insert(crate::auth::AUTHORIZATION, authorization);
    }
    forwarded
        .metadata_mut()
        .insert(rota_proto::FORWARDED_METADATA_KEY, MetadataValue::from_static("1"));
    if let Some(deadline) = deadline {
        forwarded.metadata_mut().insert("grpc-timeout", deadline);
    }
    rota_proto::trace::inject(&tracing::Span::current(), forwarded.metadata_mut());
    call(forwarded).await.map_err(|status| {
        // A status the leader sent carries its response headers; one without
        // any is a transport failure. If the connection could not be made the
        // request never left (retryable); if it broke mid-call, the leader
        // may have applied it before dying, and only the client can decide.
        if !status.metadata().is_empty() {
            status
        } else if status.code() == Code::Unavailable {
            Status::unavailable(format!(
                "could not reach the leader to forward the request ({}); retry shortly",
                status.message()
            ))
        } else {
            Status::unknown(format!(
                "the connection to the leader broke while it handled the request ({}); \
                 it may or may not have been applied: check before retrying",
                status.message()
            ))
        }
    })
}

/// On a follower, forwards `$request` to the leader with `$client::$method`
/// and returns its answer; on the leader, does nothing.
macro_rules! forward_if_follower {
    ($node:expr, $request:ident, $client:ident :: $method:ident) => {
        if let $crate::node::Route::Leader(channel) = $node.route($request.metadata())? {
            return $crate::api::forward($request, |r| async move { $client::new(channel).$method(r).await }).await;
        }
    };
}
pub(crate) use forward_if_follower;

/// Whether a read must be linearizable (the default).
pub fn is_linearizable(consistency: i32) -> Result<bool, ApiError> {
    use rota_proto::v1::ReadConsistency;
    match ReadConsistency::try_from(consistency) {
        Ok(ReadConsistency::Unspecified | ReadConsistency::Linearizable) => Ok(true),
        Ok(ReadConsistency::Stale) => Ok(false),
        Err(_) => Err(ApiError::invalid(
            "consistency",
            format!("unknown value {consistency}; accepted: linearizable, stale"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_carries_the_leader_address() {
        let status = Status::from(ApiError::NotLeader {
            leader: Some(LeaderHint {
                id: 2,
                addr: "127.0.0.1:7402".into(),
            }),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status
                .metadata()
                .get(rota_proto::LEADER_METADATA_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("127.0.0.1:7402")
        );
        assert_eq!(
            status
                .metadata()
                .get(LEADER_ID_METADATA_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
        let status = Status::from(ApiError::NotLeader { leader: None });
        assert!(status.metadata().get(rota_proto::LEADER_METADATA_KEY).is_none());
    }

    #[test]
    fn spec_errors_become_invalid_argument_with_field_violations() {
        let status = Status::from(ApiError::Spec(SpecError {
            violations: vec![crate::spec::FieldViolation {
                field: "schedule.cron".into(),
                description: "bad".into(),
            }],
        }));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("schedule.cron: bad"));
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("bad request details").field_violations;
        assert_eq!(violations[0].field, "schedule.cron");
    }

    #[test]
    fn rejections_map_to_their_codes() {
        for (kind, code) in [
            (RejectionKind::NotFound, Code::NotFound),
            (RejectionKind::AlreadyExists, Code::AlreadyExists),
            (RejectionKind::FailedPrecondition, Code::FailedPrecondition),
        ] {
            let status = Status::from(ApiError::Rejected(Rejection {
                kind,
                message: "m".into(),
            }));
            assert_eq!(status.code(), code);
        }
    }
}
