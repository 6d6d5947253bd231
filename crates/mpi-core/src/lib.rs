//! The domain of kouiki-mpi: identifiers and their validation, keyed pseudonyms, identity
//! resolution, authorization, the service logic, and the `Store` trait.
//!
//! No tonic, no storage engine, no I/O beyond the random number generator: this crate is what
//! every transport and every store agrees on.

pub mod audit;
pub mod authz;
pub mod consent;
pub mod dates;
pub mod error;
pub mod ids;
pub mod keys;
pub mod location;
pub mod principal;
pub mod qualification;
pub mod reason;
pub mod records;
pub mod resolution;
pub mod service;
pub mod store;

pub use error::{FieldViolation, ServiceError, ServiceResult};
