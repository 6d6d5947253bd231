//! `ServiceError` → `tonic::Status`, in one exhaustive match. Internal causes are logged here
//! and replaced by a generic message.

use mpi_core::ServiceError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Maps a service error to the status sent to the caller.
pub fn to_status(error: ServiceError) -> Status {
    match error {
        ServiceError::InvalidArgument(violations) => {
            let message = violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.rule))
                .collect::<Vec<_>>()
                .join("; ");
            let details = ErrorDetails::with_bad_request(
                violations.into_iter().map(|v| FieldViolation::new(v.field, v.rule)).collect::<Vec<_>>(),
            );
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        ServiceError::PermissionDenied(message) => Status::permission_denied(message),
        ServiceError::NotFound(message) => Status::not_found(message),
        ServiceError::FailedPrecondition(message) => Status::failed_precondition(message),
        ServiceError::ResourceExhausted(message) => Status::resource_exhausted(message),
        ServiceError::Unimplemented(rpc) => {
            Status::unimplemented(format!("{rpc} is not available in this version"))
        }
        ServiceError::Store(cause) => {
            tracing::error!(error = %cause, "store failure");
            Status::internal("internal error")
        }
    }
}
