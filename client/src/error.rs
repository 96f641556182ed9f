//! The SDK's error type: one variant per thing a caller may want to handle.

use tonic::Code;
use tonic_types::StatusExt;

/// A bad field reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `schedule.cron`.
    pub field: String,
    /// What is wrong and what would be accepted.
    pub description: String,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No server could be reached.
    #[error("cannot reach any rota server (tried {}): {last_error}", endpoints.join(", "))]
    Unreachable {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// The last transport error.
        last_error: String,
    },
    /// An endpoint is not a valid `host:port` or URL.
    #[error("invalid server endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The TLS files could not be used.
    #[error("{0}")]
    Tls(String),
    /// The request was refused as invalid; `violations` names the fields.
    #[error("{message}")]
    InvalidArgument {
        /// The server's message.
        message: String,
        /// Each bad field.
        violations: Vec<FieldViolation>,
    },
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An object with that name exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object or cluster is not in the state the call requires.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The call did not finish in time; a write may or may not have happened.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The connection broke while the cluster handled the call, or its
    /// answer did not come in time: a write may or may not have taken
    /// effect. Read the object before retrying.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The cluster could not serve the call (no leader, no quorum), even
    /// after retries.
    #[error("{0}")]
    Unavailable(String),
    /// Any other gRPC failure.
    #[error("{code:?}: {message}")]
    Other {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },
}

impl Error {
    /// The gRPC code behind this error, if it came from a server.
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unavailable(_) => Code::Unavailable,
            Error::OutcomeUnknown(_) => Code::Unknown,
            Error::Other { code, .. } => *code,
            Error::Unreachable { .. } | Error::InvalidEndpoint { .. } | Error::Tls(_) => return None,
        })
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument => {
                let violations = status
                    .get_details_bad_request()
                    .map(|bad| {
                        bad.field_violations
                            .into_iter()
                            .map(|v| FieldViolation {
                                field: v.field,
                                description: v.description,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Error::InvalidArgument { message, violations }
            }
            Code::NotFound => Error::NotFound(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::FailedPrecondition => Error::FailedPrecondition(message),
            Code::DeadlineExceeded => Error::DeadlineExceeded(message),
            Code::Unavailable => Error::Unavailable(message),
            Code::Unknown | Code::Cancelled => Error::OutcomeUnknown(if message.is_empty() {
                "the connection broke during the call; it may or may not have taken effect".to_owned()
            } else {
                message
            }),
            code => Error::Other { code, message },
        }
    }
}
