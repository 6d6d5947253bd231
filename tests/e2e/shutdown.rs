//! The binary itself: SIGTERM drains in-flight requests and exits 0; bad settings exit 64; it
//! reports the process settings `main` makes first.

use std::process::Command;

use mpi_proto::v1 as pb;
use mpi_server::pki::PkiPaths;
use numbers::*;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _stdout, stderr, address) = tokio::task::block_in_place(|| {
        spawn_serve(
            &dir.path().join("data"),
            &["--log-format", "json"],
            "info,mpi_server=debug",
        )
    });

    mpi_server::install_crypto_provider();
    let pki = PkiPaths::new(dir.path().join("data/pki"));
    let channel = dev_channel(&address, &pki, "history-provider").await;
    let mut client = QualificationHistoryClient::new(channel);
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let first = record(
        "synth-0001",
        insured(KYOKAI, "1", "1", "01"),
        "2020-01-01",
        "",
        "1980-01-01",
        pb::Sex::Male,
    );
    let second = record(
        "synth-0002",
        insured(KYOKAI, "1", "2", "01"),
        "2020-01-01",
        "",
        "1980-01-01",
        pb::Sex::Male,
    );
    sender
        .send(pb::ImportQualificationsRequest {
            records: vec![first],
        })
        .await
        .unwrap();
    let import = tokio::spawn(async move {
        client
            .import_qualifications(ReceiverStream::new(receiver))
            .await
    });
    tokio::task::block_in_place(|| wait_for(&stderr, "import stream opened"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::block_in_place(|| wait_for(&stderr, "shutdown requested"));
    // The stream opened before the signal is still served to its end.
    sender
        .send(pb::ImportQualificationsRequest {
            records: vec![second],
        })
        .await
        .unwrap();
    drop(sender);
    let summary = import.await.unwrap().unwrap().into_inner();
    assert_eq!(summary.accepted, 2);

    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    tokio::task::block_in_place(|| wait_for(&stderr, "server stopped"));
}

#[test]
fn bad_settings_exit_64_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[limits]\nmax_batch_items = 0\n").unwrap();
    let small_cache = dir.path().join("small-cache.toml");
    std::fs::write(&small_cache, "[store]\ncache_mib = 1\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--listen".into(), "nowhere".into()], "`listen`"),
        (
            vec!["--config".into(), config.display().to_string()],
            "`limits.max_batch_items`",
        ),
        (
            vec!["--config".into(), small_cache.display().to_string()],
            "`store.cache_mib`",
        ),
        (vec!["--production".into(), "true".into()], "`tls`"),
        (
            vec!["--tls-cert".into(), "/nonexistent.pem".into()],
            "`tls.key`",
        ),
        (vec!["--log-format".into(), "xml".into()], "`log_format`"),
    ];
    for (args, setting) in cases {
        let output = Command::new(BINARY)
            .arg("serve")
            .args(&args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(setting), "{args:?}: {stderr}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the configuration is valid"
    );
}

/// `main` keeps freed memory for reuse before anything else runs (`mpi_alloc`), unless the
/// operator's `MIMALLOC_PURGE_DELAY` says otherwise, and the server's scheduler runs without its
/// LIFO slot (`mpi_server::runtime`); the binary reports both at start, read from the allocator
/// and the build, not assumed.
#[test]
fn the_binary_reports_the_allocator_and_scheduler_settings_it_runs_with() {
    for (purge_delay, retains) in [(None, true), (Some("10"), false)] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, _stdout, stderr, _address) = spawn_serve_with(
            &dir.path().join("data"),
            &["--log-format", "json"],
            "info",
            &[(mpi_alloc::PURGE_DELAY_VARIABLE, purge_delay)],
        );
        let line = wait_for(&stderr, "process settings");
        assert!(
            line.contains(&format!("\"allocator_retains_freed_memory\":{retains}")),
            "{purge_delay:?}: {line}"
        );
        assert!(
            line.contains("\"scheduler_lifo_slot_disabled\":true"),
            "{line}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// At the default `info` a finished RPC writes no log line (it is counted at `/metrics`); with
/// `mpi_server::services=debug` each writes one, naming the RPC and its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_rpc_is_logged_at_debug_and_not_at_info() {
    mpi_server::install_crypto_provider();
    for (rust_log, logged) in [("info", false), ("info,mpi_server::services=debug", true)] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, _stdout, stderr, address) = tokio::task::block_in_place(|| {
            spawn_serve(
                &dir.path().join("data"),
                &["--log-format", "json"],
                rust_log,
            )
        });
        let pki = PkiPaths::new(dir.path().join("data/pki"));
        let channel = dev_channel(&address, &pki, "history-provider").await;
        // An empty question: refused, and finished like any call.
        let refused = QualificationHistoryClient::new(channel)
            .are_same_person(pb::AreSamePersonRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        // Every line up to the last one the server writes.
        let mut seen = Vec::new();
        while let Ok(line) = stderr.recv_timeout(std::time::Duration::from_secs(30)) {
            let last = line.contains("server stopped");
            seen.push(line);
            if last {
                break;
            }
        }
        assert!(
            seen.iter().any(|line| line.contains("server stopped")),
            "{seen:#?}"
        );
        let rpc_lines: Vec<&String> = seen
            .iter()
            .filter(|line| line.contains(r#""rpc":"AreSamePerson""#))
            .collect();
        assert_eq!(
            rpc_lines.len(),
            usize::from(logged),
            "{rust_log}: {seen:#?}"
        );
        if logged {
            assert!(
                rpc_lines[0].contains(r#""code":"INVALID_ARGUMENT""#)
                    && rpc_lines[0].contains("\"micros\""),
                "{}",
                rpc_lines[0]
            );
        }
    }
}
