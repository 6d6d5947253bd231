//! The service's error vocabulary; `mpi-server` maps it to gRPC codes in one exhaustive match.

use crate::store::StoreError;

/// One broken rule of one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Field path in the request, for example `records[3].insured_id.parts.branch`.
    pub field: String,
    /// The rule, for example `branch must be exactly two digits 00-99 or empty`.
    pub rule: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, rule: impl ToString) -> Self {
        Self {
            field: field.into(),
            rule: rule.to_string(),
        }
    }
}

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request broke field rules; nothing was stored.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The caller's role or binding does not allow this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A precondition (such as consent) does not hold.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A limit was exceeded.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Persistence failed; the cause is logged, never sent.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.rule))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ServiceError {
    /// A single-field invalid argument.
    pub fn invalid(field: impl Into<String>, rule: impl ToString) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, rule)])
    }
}

/// Result alias of the service.
pub type ServiceResult<T> = Result<T, ServiceError>;
