//! Compiles `proto/kouiki/mpi/v1/*.proto` with protox (no system protoc), then generates the
//! prost messages, the tonic clients and servers, and pbjson's serde implementations.
use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "kouiki/mpi/v1/common.proto",
        "kouiki/mpi/v1/qualification.proto",
        "kouiki/mpi/v1/locator.proto",
        "kouiki/mpi/v1/federation.proto",
        "kouiki/mpi/v1/consent.proto",
        "kouiki/mpi/v1/audit.proto",
    ];
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }

    let file_descriptors = protox::compile(files, [&proto_root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("kouiki_mpi_descriptor.bin");
    let descriptor_bytes = file_descriptors.encode_to_vec();
    fs::write(&descriptor_path, &descriptor_bytes)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Well-known types come from pbjson-types, which also gives them proto3 JSON.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(file_descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        // Output uses the proto field names and shows zero values, so what the CLI prints
        // matches the .proto files field for field; input accepts both name styles.
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".kouiki.mpi.v1"])?;
    Ok(())
}
