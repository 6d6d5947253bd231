//! The kouiki-mpi transport: thin tonic adapters over `mpi-core`, mutual TLS with the caller's
//! principal taken from the client certificate, error → status mapping, health, reflection,
//! Prometheus metrics and limits. Only this crate (with `mpi-proto`) knows the wire protocol.
//!
//! Like mini-redis, the library owns the server and the binary is thin: [`server::serve`] takes
//! an already-bound listener, so tests start the real server on port 0.

pub mod audit_log;
pub mod client;
pub mod config;
pub mod convert;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod pki;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod services;
pub mod status;

pub use config::Config;
pub use server::{Prepared, ServerError, install_crypto_provider, prepare, serve};
