//! The one mapping from [`Error`] to gRPC status: exhaustive, with no catch-all arm, so a new
//! variant does not compile until it is mapped. Errors are logged once, here, where the status
//! is made: a client's at `info`, the worker's own at `warn`.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::{Error, Limit};
use crate::protocol::RETRY_AFTER;

/// The gRPC code of an error.
pub fn code(err: &Error) -> Code {
    match err {
        Error::NotFound(_) => Code::NotFound,
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::ResourceExhausted(_) | Error::LimitExceeded { .. } | Error::Overloaded(_) | Error::StoreFull(_) => {
            Code::ResourceExhausted
        }
        Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
        Error::Unavailable(_) | Error::Store { .. } => Code::Unavailable,
        Error::Internal(_) => Code::Internal,
        Error::Cancelled(_) => Code::Cancelled,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::Unimplemented(_) => Code::Unimplemented,
        Error::DataLoss(_) => Code::DataLoss,
    }
}

/// A code's name as gRPC spells it: the `code` label of the request metrics.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A status from tonic's codec, as the worker answers it. tonic refuses a message over the size
/// limit with OUT_OF_RANGE, and nothing of the worker's makes that code ([`code`] has no arm for
/// it), so to a client it is a limit like the others: RESOURCE_EXHAUSTED, naming the setting.
pub fn from_codec(status: Status) -> Status {
    if status.code() == Code::OutOfRange { Limit::MessageBytes.exceeded(status.message()).into() } else { status }
}

/// The status a stream that ended well carries in its trailers.
pub fn ok() -> Status {
    Status::ok("")
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let msg = err.capped_message();
        let code = code(&err);
        if err.is_client_error() {
            tracing::info!(?code, error = %msg, "request refused");
        } else {
            // The log gets the causes under the message; the client only the message.
            tracing::warn!(?code, error = %err.chain(), "request failed");
        }
        let mut status = Status::new(code, msg);
        if let Error::Overloaded(_) = err {
            status.metadata_mut().insert(RETRY_AFTER, MetadataValue::from_static("1"));
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_code_a_capped_message_and_the_retry_hint() {
        let status = Status::from(Error::invalid("x".repeat(5_000)));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= crate::error::MAX_MESSAGE_CHARS + 3);
        let busy = Status::from(Error::Overloaded("busy".into()));
        assert_eq!(busy.code(), Code::ResourceExhausted);
        assert_eq!(busy.metadata().get(RETRY_AFTER).unwrap(), "1");
        assert_eq!(code(&Error::StoreFull("full".into())), Code::ResourceExhausted);
    }
}
