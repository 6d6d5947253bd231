//! Generated code for the kouiki-mpi wire contract (`proto/kouiki/mpi/v1`).
//!
//! Only this crate and `mpi-server` know the wire protocol. The code is produced at build time
//! by `protox` (a pure-Rust protobuf compiler) and `tonic-prost-build`, so a fresh machine needs
//! nothing but cargo. Messages also get canonical proto3 JSON (via `pbjson`) for the CLI.
#![allow(missing_docs, clippy::all)]

/// `kouiki.mpi.v1`: every service, message and enum of the API.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/kouiki.mpi.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/kouiki.mpi.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of the API, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kouiki_mpi_descriptor.bin"));

/// Fully qualified names of the API's services, as reflection lists them.
pub const SERVICE_NAMES: [&str; 5] = [
    "kouiki.mpi.v1.QualificationHistory",
    "kouiki.mpi.v1.RecordLocator",
    "kouiki.mpi.v1.Federation",
    "kouiki.mpi.v1.Consent",
    "kouiki.mpi.v1.Audit",
];
