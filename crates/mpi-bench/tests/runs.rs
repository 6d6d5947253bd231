//! The benchmark program runs end to end at a tiny size: each command the README and
//! docs/benchmarks.md name starts its servers, loads them, measures and reports what it claims
//! to report. Only that it works is checked here, never how fast (that is what the program is
//! for: speed targets are checked by running it, docs/benchmarks.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// The commands pin their servers and clients to the two cores and measure against each other;
/// one at a time, so that none starves another into a failure.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `mpi-bench` with `args`; its standard output, after checking that it succeeded.
fn bench(args: &[&str]) -> String {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let output = Command::new(env!("CARGO_BIN_EXE_mpi-bench"))
        .args(args)
        .output()
        .expect("mpi-bench starts");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert!(
        output.status.success(),
        "mpi-bench {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The cells of the Markdown table row of `output` whose first cell is `first`.
fn row<'a>(output: &'a str, first: &str) -> Vec<&'a str> {
    output
        .lines()
        .map(table_cells)
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{output}"))
}

/// The cells of a Markdown table row.
fn table_cells(line: &str) -> Vec<&str> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect()
}

/// The cell's leading number ("1.26 / 4.97" gives 1.26).
fn number(cell: &str) -> f64 {
    cell.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{cell:?} is not a number"))
}

/// "name: a / b = r" in `output`: (a, b, r).
fn ratio(output: &str, name: &str) -> (f64, f64, f64) {
    let line = output
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name:?} in:\n{output}"));
    let (fraction, result) = line.split_once('=').expect("a ratio");
    let (a, b) = fraction.split_once('/').expect("a fraction");
    (number(a), number(b), number(result))
}

#[test]
fn all_imports_resolves_registers_and_finds_with_and_without_the_audit_log() {
    let out = bench(&["--persons", "300", "--seconds", "1", "--rounds", "1", "all"]);
    let import = row(&out, "ImportQualifications (mTLS, durable)");
    let resolved = row(&out, "Resolution as of a date (in process)");
    assert!(number(import[1]) > 0.0, "{import:?}");
    assert_eq!(import[1], resolved[1], "every imported record is resolved");
    let register = row(&out, "RegisterLocations (mTLS, durable)");
    assert!(number(register[1]) > 0.0, "{register:?}");
    for audit in ["ON", "OFF"] {
        let find = row(
            &out,
            &format!("FindLocations (mTLS, consent-filtered, audit {audit})"),
        );
        assert!(number(find[1]) > 0.0, "{find:?}");
    }
    let (on, off, _) = ratio(&out, "audit on / audit off FindLocations throughput:");
    assert!(on > 0.0 && off > 0.0);
}

#[test]
fn claim_replay_reports_the_replay_of_the_claims_it_logged() {
    let out = bench(&["claim-replay", "--held", "2000", "--logged", "500"]);
    let cells = row(&out, "2000");
    assert_eq!(cells[1], "500", "{out}");
    assert_eq!(cells[2], "as left", "{out}");
    assert!(number(cells[3]) >= 0.0, "{out}");
}

#[test]
fn floor_measures_the_echo_server_and_the_service_in_one_run() {
    let out = bench(&["--persons", "300", "--seconds", "1", "floor"]);
    let (real, echo, real_ratio) = ratio(&out, "FindLocations / echo floor:");
    assert!(real > 0.0 && echo > 0.0, "{out}");
    assert!((real_ratio - real / echo).abs() < 0.01, "{out}");
    // And the same server without the audit log, between the two, against the same floor.
    let (bare, same_echo, bare_ratio) =
        ratio(&out, "FindLocations without the audit log / echo floor:");
    assert!(bare > 0.0 && same_echo == echo, "{out}");
    assert!((bare_ratio - bare / echo).abs() < 0.01, "{out}");
    // And the echo server with a durable append per call, against the same floor.
    let (durable, durable_echo, durable_ratio) =
        ratio(&out, "Echo with a durable append per call / echo floor:");
    assert!(durable > 0.0 && durable_echo == echo, "{out}");
    assert!((durable_ratio - durable / echo).abs() < 0.01, "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| ")).collect();
    let at = |label: &str| rows.iter().position(|row| row.starts_with(label));
    let order = [
        at("| Echo floor"),
        at("| FindLocations without the audit log"),
        at("| Echo with a durable, chained append per call"),
        at("| FindLocations (mTLS"),
    ];
    assert!(
        order.iter().all(Option::is_some) && order.is_sorted(),
        "{out}"
    );
}

#[test]
fn scale_reports_every_column_at_each_size_and_plots_them() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("curve.png");
    let out = bench(&[
        "--seconds",
        "1",
        "scale",
        "--sizes",
        "200,400",
        "--plot",
        plot.to_str().unwrap(),
        "--latency-rates",
        "100,300",
    ]);
    for size in ["200", "400"] {
        let cells = row(&out, size);
        assert_eq!(cells.len(), 13, "{cells:?}");
        // The open loop at each rate asked for, in the second table: answered about as many
        // as asked (all of them, over the time they took), p50 <= p99 <= p99.9.
        let by_rate: Vec<Vec<&str>> = out
            .lines()
            .map(table_cells)
            .filter(|cells: &Vec<&str>| cells.len() == 6 && cells[0] == size)
            .collect();
        let asked: Vec<f64> = by_rate.iter().map(|cells| number(cells[1])).collect();
        assert_eq!(asked, [100.0, 300.0], "{out}");
        for cells in &by_rate {
            let answered = number(cells[2]);
            assert!(
                answered > 0.0 && answered <= number(cells[1]) * 1.05,
                "{cells:?}"
            );
            let (p50, p99, p999) = (number(cells[3]), number(cells[4]), number(cells[5]));
            assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{cells:?}");
        }
        let (echo, find, ratio) = (number(cells[4]), number(cells[5]), number(cells[6]));
        assert!(echo > 0.0 && find > 0.0, "{cells:?}");
        assert!((ratio - find / echo).abs() < 0.01, "{cells:?}");
        for cell in &cells[..] {
            number(cell);
        }
    }
    ratio(&out, "FindLocations at 400 persons / at 200 persons:");
    assert_png(&plot);
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).expect("the plot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 10_000,
        "an empty picture: {} bytes",
        bytes.len()
    );
}

#[test]
fn soak_runs_the_mixed_load_without_errors() {
    let out = bench(&[
        "--persons",
        "300",
        "soak",
        "--duration",
        "2",
        "--window",
        "1",
    ]);
    assert!(
        out.lines()
            .any(|line| line.starts_with("soak: 0 errors (refused or failed)")),
        "{out}"
    );
}
