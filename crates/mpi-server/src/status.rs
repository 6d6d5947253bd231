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
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.rule))
                    .collect::<Vec<_>>(),
            );
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        ServiceError::PermissionDenied(message) => Status::permission_denied(message),
        ServiceError::NotFound(message) => Status::not_found(message),
        ServiceError::FailedPrecondition(message) => Status::failed_precondition(message),
        ServiceError::ResourceExhausted(message) => Status::resource_exhausted(message),
        ServiceError::Store(cause) => {
            tracing::error!(error = %cause, "store failure");
            Status::internal("internal error")
        }
    }
}

/// tonic's text for a message over the decoding limit (it answers OUT_OF_RANGE).
const TOO_LARGE: &str = "Error, decoded message length too large";

/// A message over `limits.max_message_bytes` is RESOURCE_EXHAUSTED (DESIGN.md §3, and gRPC's
/// own convention); tonic's decoder says OUT_OF_RANGE, so its status is rewritten.
pub fn limit_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().starts_with(TOO_LARGE) {
        Status::resource_exhausted(format!("message too large: {}", status.message()))
    } else {
        status
    }
}

/// The same rewrite for responses that carry the status in their headers (a unary request
/// that failed to decode never reaches an adapter).
pub fn rewrite_limit_headers<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        .is_some_and(|message| {
            message.starts_with("Error,%20decoded%20message%20length%20too%20large")
                || message.starts_with(TOO_LARGE)
        });
    if out_of_range && too_large {
        headers.insert(
            "grpc-status",
            tonic::codegen::http::HeaderValue::from_static("8"),
        );
    }
    response
}
