//! `scripts/perf-components.py`, which turns a `perf script` of `mpi-bench floor` into the
//! server's CPU per call by component (docs/benchmarks.md), on a made-up profile whose answer
//! is known: the phases it must find, the threads it must leave out, the component of each
//! stack, and the microseconds per call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Samples per second of the made-up profile (the script's HZ argument).
const HZ: u32 = 10;

/// One sample in `perf script -F comm,tid,time,ip,sym` form: the header, then the stack leaf
/// first, then a blank line.
fn sample(out: &mut String, comm: &str, tid: u32, time: f64, frames: &[&str]) {
    writeln!(out, "{comm} {tid} {time:.6}: ").unwrap();
    for (n, frame) in frames.iter().enumerate() {
        writeln!(out, "\t    55d5c0a{n:05x} {frame}+0x1f").unwrap();
    }
    out.push('\n');
}

const WORKER: &str = "tokio-rt-worker";
const FIND: &str = "<mpi_server::services::RecordLocatorAdapter as mpi_proto::v1::record_locator_server::RecordLocator>::find_locations::{{closure}}";
/// Frames several made-up stacks share.
const H2_STREAM: &str =
    "<hyper::proto::h2::server::H2Stream<F,B> as core::future::future::Future>::poll";
const GENERATED_CALL: &str = "<mpi_proto::v1::record_locator_server::RecordLocatorServer<T> as tower_service::Service<http::request::Request<B>>>::call";
const DISCLOSURE_VIEW: &str = "mpi_core::records::<impl mpi_core::service::Mpi>::disclosure_view";
const H2: &[&str] = &[
    "h2::proto::streams::send::Send::send_data<bytes::Bytes>",
    H2_STREAM,
];
const GRPC_UNDER_H2: &[&str] = &[
    "tonic::server::grpc::Grpc<T>::map_response",
    GENERATED_CALL,
    H2_STREAM,
];
/// The echo handler's frame names the generated trait, as the adapter's does: the handler's
/// rule must win over the gRPC layers'.
const ECHO_UNDER_GRPC: &[&str] = &[
    "<mpi_bench::floor::Echo as mpi_proto::v1::record_locator_server::RecordLocator>::find_locations::{{closure}}",
    GENERATED_CALL,
    H2_STREAM,
];
const TLS_UNDER_H2: &[&str] = &[
    "rustls::conn::ConnectionCommon<T>::write_tls",
    "<tokio_rustls::server::TlsStream<IO> as tokio::io::AsyncWrite>::poll_write",
    "h2::codec::framed_write::FramedWrite<T,B>::flush",
];
const STORE_UNDER_VIEW: &[&str] = &[
    "redb::tree_store::page_store::cached_file::PagedCachedFile::read",
    "<mpi_store_redb::RedbSnapshot as mpi_core::store::Snapshot>::person_view",
    DISCLOSURE_VIEW,
];
const KEYS_UNDER_VIEW: &[&str] = &[
    "__memcmp_evex_movbe",
    "redb::tree_store::btree_base::BranchAccessor::child_for_key",
    "mpi_store_redb::locations_of",
    "<mpi_store_redb::RedbSnapshot as mpi_core::store::Snapshot>::person_view",
    DISCLOSURE_VIEW,
];

/// Seconds 100–104: the echo phase, 10 samples a second on the worker (4 HTTP/2, 1 in
/// tonic's server, 1 in the echo handler, 4 TLS under HTTP/2). Seconds 105–109: FindLocations,
/// 10 a second on the worker (5 in the person view, of them 2 comparing keys under
/// `locations_of` and 3 in redb's page cache; 3 HTTP/2, 2 TLS), all under the adapter's frame,
/// and 2 a second on the audit writer. The client's thread and the benchmark's main thread are
/// busy throughout and must be left out, and a second of import before it all (with an audit
/// writer of its own) must not count as a phase.
fn profile() -> String {
    profile_with(false, false)
}

/// [`profile`], or with `unaudited` a phase of FindLocations without the audit log first:
/// seconds 105–109 then have no audit writer and 10 samples a second on the worker (6 in the
/// person view, 4 HTTP/2), and the audited phase is seconds 110–114. With `durable` too, the
/// echo server with a durable append per call comes before the audited phase: 5 seconds of 10
/// samples a second on the worker (5 HTTP/2, 1 in the echo handler, 4 TLS) and 5 on the
/// `durable-echo` thread; the audited phase is then seconds 115–119.
fn profile_with(unaudited: bool, durable: bool) -> String {
    let mut out = String::new();
    for tick in 0..HZ {
        let time = 90.0 + f64::from(tick) / f64::from(HZ);
        sample(&mut out, "mpi-bench", 1, time, &["mpi_synth::generate"]);
        sample(
            &mut out,
            "audit-writer",
            4,
            time,
            &["std::fs::File::sync_data"],
        );
    }
    let durable_from = if unaudited { 110 } else { 105 };
    let audited_from = if durable {
        durable_from + 5
    } else {
        durable_from
    };
    for second in 100..audited_from + 5 {
        for tick in 0..HZ {
            let time = f64::from(second) + f64::from(tick) / f64::from(HZ);
            sample(
                &mut out,
                "bench-core-1",
                3,
                time,
                &["tonic::client::Grpc::unary"],
            );
            sample(&mut out, "mpi-bench", 1, time, &["std::thread::park"]);
            let mut frames: Vec<&str> = if second < 105 {
                match tick {
                    0..4 => H2,
                    4 => GRPC_UNDER_H2,
                    5 => ECHO_UNDER_GRPC,
                    _ => TLS_UNDER_H2,
                }
            } else if second < durable_from {
                if tick < 6 { STORE_UNDER_VIEW } else { H2 }
            } else if second < audited_from {
                match tick {
                    0..5 => H2,
                    5 => ECHO_UNDER_GRPC,
                    _ => TLS_UNDER_H2,
                }
            } else {
                match tick {
                    0..2 => KEYS_UNDER_VIEW,
                    2..5 => STORE_UNDER_VIEW,
                    5..8 => H2,
                    _ => TLS_UNDER_H2,
                }
            }
            .to_vec();
            if second >= 105 && !(durable_from..audited_from).contains(&second) {
                frames.push(FIND);
            }
            frames.push("tokio::runtime::scheduler::multi_thread::worker::Context::run");
            sample(&mut out, WORKER, 7, time, &frames);
            if (durable_from..audited_from).contains(&second) && tick < 5 {
                sample(
                    &mut out,
                    "durable-echo",
                    9,
                    time + 0.01,
                    &["std::fs::File::sync_data"],
                );
            }
            if second >= audited_from && tick < 2 {
                sample(
                    &mut out,
                    "audit-writer",
                    8,
                    time + 0.01,
                    &["std::fs::File::sync_data"],
                );
            }
        }
    }
    out
}

/// The `| component | share | us per call |` rows after `heading`: µs per call by component.
fn rows(report: &str, heading: &str) -> BTreeMap<String, f64> {
    let block = report
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in:\n{report}"))
        .1;
    block
        .lines()
        .skip_while(|line| !line.starts_with("| component"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].to_owned(), cells[3].parse().unwrap())
        })
        .collect()
}

fn expected(rows: &[(&str, f64)]) -> BTreeMap<String, f64> {
    rows.iter()
        .map(|(name, us)| ((*name).to_owned(), *us))
        .collect()
}

/// The script's report on the made-up profile (1,000 echo calls and 500 FindLocations a
/// second), run with `extra` arguments; `None` where this machine has no Python (never in CI).
fn report(extra: &[&str]) -> Option<String> {
    report_on(&profile(), extra)
}

/// The script's report on `profile`, as [`report`].
fn report_on(profile: &str, extra: &[&str]) -> Option<String> {
    let run = run_script(profile, extra)?;
    let report = String::from_utf8(run.stdout).unwrap();
    assert!(
        run.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    Some(report)
}

/// The script run on `profile` (1,000 echo calls and 500 FindLocations a second) with `extra`
/// arguments, whatever it answers; `None` where this machine has no Python (never in CI).
fn run_script(profile: &str, extra: &[&str]) -> Option<std::process::Output> {
    let python = ["python3", "python"].into_iter().find(|candidate| {
        Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    let Some(python) = python else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 (the interoperability test needs it too)"
        );
        eprintln!("no python3 on this machine; scripts/perf-components.py was not tested");
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/perf-components.py");
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("perf.txt");
    std::fs::write(&text, profile).unwrap();
    Some(
        Command::new(python)
            .arg(&script)
            .arg(&text)
            .args(["1000", "500", &HZ.to_string()])
            .args(extra)
            .output()
            .unwrap(),
    )
}

#[test]
fn the_components_script_finds_the_phases_and_the_cost_per_call() {
    let Some(report) = report(&[]) else {
        return;
    };
    assert!(report.contains("server worker thread 7 "), "{report}");
    // Each phase less its first and last second: 101–103 and 106–108.
    // Echo: one core busy at 1,000 calls/s is 1,000 µs per call, 4:1:1:4.
    assert!(
        report.contains(
            "echo floor: 3 s at 1000 calls/s; server threads busy 1.00 of a core = 1000.0 us per call"
        ),
        "{report}"
    );
    assert_eq!(
        rows(&report, "echo floor:"),
        expected(&[
            ("HTTP/2 (h2, hyper)", 400.0),
            ("gRPC service layers (tonic, axum, tower)", 100.0),
            ("echo server's handler", 100.0),
            ("TLS and socket reads and writes", 400.0),
        ])
    );
    // FindLocations: 1.2 cores (the audit writer's 0.2 included) at 500 calls/s.
    assert!(
        report.contains(
            "FindLocations: 3 s at 500 calls/s; server threads busy 1.20 of a core = 2400.0 us per call"
        ),
        "{report}"
    );
    assert_eq!(
        rows(&report, "FindLocations:"),
        expected(&[
            ("person view (store reads, decoding)", 1000.0),
            ("HTTP/2 (h2, hyper)", 600.0),
            ("TLS and socket reads and writes", 400.0),
            ("thread audit-writer", 400.0),
        ])
    );
}

#[test]
fn the_components_script_measures_only_the_last_seconds_of_findlocations_when_asked() {
    // FindLocations ran in seconds 105–109; the last 3 are 107–109, less their first and last.
    let Some(report) = report(&["--find-seconds", "3"]) else {
        return;
    };
    assert!(
        report.contains("FindLocations: 1 s at 500 calls/s;"),
        "{report}"
    );
    assert!(
        report.contains("echo floor: 3 s at 1000 calls/s;"),
        "{report}"
    );
}

#[test]
fn the_components_script_reports_the_phase_without_the_audit_log_apart_when_asked() {
    // 800 FindLocations a second without the audit log in seconds 105–109 (measured 106–108),
    // before the audited server's writer first ran (second 110; the import's writer, at 90,
    // is not the audited server's).
    let Some(report) = report_on(&profile_with(true, false), &["--unaudited", "800"]) else {
        return;
    };
    assert!(
        report.contains(
            "FindLocations without the audit log: 3 s at 800 calls/s; server threads busy 1.00 of a core = 1250.0 us per call"
        ),
        "{report}"
    );
    assert_eq!(
        rows(&report, "FindLocations without the audit log:"),
        expected(&[
            ("person view (store reads, decoding)", 750.0),
            ("HTTP/2 (h2, hyper)", 500.0),
        ])
    );
    // The audited phase (110–114, measured 111–113) and the echo floor as before.
    assert!(
        report.contains(
            "FindLocations: 3 s at 500 calls/s; server threads busy 1.20 of a core = 2400.0 us per call"
        ),
        "{report}"
    );
    assert!(
        report.contains("echo floor: 3 s at 1000 calls/s;"),
        "{report}"
    );
    // Without the flag, the audited phase alone is FindLocations.
    let Some(plain) = report_on(&profile_with(true, false), &[]) else {
        return;
    };
    assert!(!plain.contains("without the audit log"), "{plain}");
    assert!(
        plain.contains("FindLocations: 3 s at 500 calls/s;"),
        "{plain}"
    );
}

#[test]
fn the_components_script_reports_the_durable_echo_apart_when_asked() {
    // 600 durable echo calls a second in seconds 110–114 (measured 111–113, by its writer
    // thread), between the phase without the audit log and the audited one (115–119).
    let profile = profile_with(true, true);
    let Some(report) = report_on(&profile, &["--unaudited", "800", "--durable", "600"]) else {
        return;
    };
    assert!(
        report.contains(
            "echo with a durable append per call: 3 s at 600 calls/s; server threads busy 1.50 of a core = 2500.0 us per call"
        ),
        "{report}"
    );
    assert_eq!(
        rows(&report, "echo with a durable append per call:"),
        expected(&[
            ("HTTP/2 (h2, hyper)", 833.3),
            ("echo server's handler", 166.7),
            ("TLS and socket reads and writes", 666.7),
            ("thread durable-echo", 833.3),
        ])
    );
    // The phases around it as before: the durable echo is neither the echo floor nor a
    // FindLocations phase.
    assert!(
        report.contains(
            "FindLocations without the audit log: 3 s at 800 calls/s; server threads busy 1.00 of a core"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "FindLocations: 3 s at 500 calls/s; server threads busy 1.20 of a core = 2400.0 us per call"
        ),
        "{report}"
    );
    assert!(
        report.contains("echo floor: 3 s at 1000 calls/s; server threads busy 1.00 of a core"),
        "{report}"
    );
    // A profile without the durable echo's writer is refused, not measured as zero.
    let Some(run) = run_script(&profile_with(true, false), &["--durable", "600"]) else {
        return;
    };
    let error = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{error}");
    assert!(
        error.contains("durable echo's writer thread never ran"),
        "{error}"
    );
}

#[test]
fn the_components_script_breaks_a_frame_down_by_what_its_samples_are_in() {
    let Some(report) = report(&[
        "--within",
        "Mpi>::disclosure_view",
        "locations_of",
        "PagedCachedFile::read",
        "=memcmp",
        "=PagedCachedFile",
        "=locations_of",
        "h2::",
    ]) else {
        return;
    };
    // 5 of the worker's 10 samples a second are in the person view: 0.5 of a core at 500
    // calls/s, 1,000 µs per call; 2 of them under locations_of with memcmp the leaf, 3 with
    // redb's page cache the leaf; none with locations_of the leaf, none in HTTP/2.
    assert!(
        report.contains(
            "FindLocations, samples with a frame containing 'Mpi>::disclosure_view': 15, 1000.0 us per call"
        ),
        "{report}"
    );
    let block = report
        .split_once("'Mpi>::disclosure_view': 15, 1000.0 us per call\n")
        .unwrap()
        .1;
    let rows: Vec<(String, String, f64)> = block
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (
                cells[1].to_owned(),
                cells[2].to_owned(),
                cells[3].parse().unwrap(),
            )
        })
        .collect();
    let row = |label: &str, share: &str, us: f64| (label.to_owned(), share.to_owned(), us);
    assert_eq!(
        rows,
        vec![
            row("locations_of", "40.0 %", 400.0),
            row("PagedCachedFile::read", "60.0 %", 600.0),
            row("memcmp (own code)", "40.0 %", 400.0),
            row("PagedCachedFile (own code)", "60.0 %", 600.0),
            row("locations_of (own code)", "0.0 %", 0.0),
            row("h2::", "0.0 %", 0.0),
        ],
        "{report}"
    );
}
