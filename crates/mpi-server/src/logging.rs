//! The process's log: `tracing` events as text or JSON lines, filtered by `RUST_LOG` (default
//! `info`). `kouiki-mpi serve` writes it to standard error; the benchmark program installs the
//! same log into a file, so that what it measures includes what the log costs.
//!
//! A finished RPC is logged at `debug` (its name, code and microseconds), or at `warn` when its
//! code says the server failed (`INTERNAL`, `UNKNOWN`, `DATA_LOSS`, `UNAVAILABLE`): at `info`
//! a line per RPC cost FindLocations 3 µs per call written to a file, 7 µs through a
//! non-blocking writer thread (docs/benchmarks.md, "The log line of every RPC"), while the same
//! counts and latencies are at `/metrics`. `RUST_LOG=info,mpi_server::services=debug` turns
//! the line back on.

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the process-wide log, writing `format` lines to `writer`, with ANSI colours when
/// `ansi`. False if a log was installed already (the first stays).
pub fn install<W>(format: LogFormat, writer: W, ansi: bool) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().try_init().is_ok(),
    }
}

/// Whether a finished call with `code` is logged as a failure of the server (`warn`) rather
/// than at `debug`.
pub fn server_failed(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Internal
            | tonic::Code::Unknown
            | tonic::Code::DataLoss
            | tonic::Code::Unavailable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_codes_of_a_failing_server_are_warnings() {
        use tonic::Code::*;
        let warned: Vec<tonic::Code> = [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ]
        .into_iter()
        .filter(|code| server_failed(*code))
        .collect();
        assert_eq!(warned, [Unknown, Internal, Unavailable, DataLoss]);
    }
}
