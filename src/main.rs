//! `kouiki-mpi`: the wide-area Master Patient Index server (`serve`), its development PKI
//! (`dev-pki`) and its operator and demo client (`ctl`). The binary is thin: the server lives
//! in `mpi-server`, the domain in `mpi-core`.

mod ctl;
mod import;
mod render;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the server allocates and frees small buffers on every
/// call (HTTP/2 frames, TLS records, protobuf messages); measured with `mpi-bench floor`,
/// FindLocations served ~12 % more calls per second and the echo floor ~10 % more. It keeps
/// freed memory for reuse (`mpi_alloc::retain_freed_memory`, set first in `main`): imports ran
/// ~25 % faster at 1,000,000 persons (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mpi_alloc::Allocator = mpi_alloc::Allocator;

/// Wide-area Master Patient Index (広域MPI) for Japanese health care.
#[derive(Debug, Parser)]
#[command(name = "kouiki-mpi", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (mutual TLS always on).
    Serve(serve::ServeArgs),
    /// Create the development PKI in the data directory (the server also does this on first start).
    DevPki(serve::DevPkiArgs),
    /// Call the server's RPCs as one of the development PKI's clients (or with given certificates).
    Ctl(ctl::CtlArgs),
}

fn main() -> ExitCode {
    mpi_alloc::retain_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::DevPki(args) => serve::dev_pki(args),
        Command::Ctl(args) => ctl::run(args),
    }
}
