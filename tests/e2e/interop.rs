//! Interoperability: a non-Rust gRPC stack (Python grpcio, installed by this test into a
//! virtual environment) drives the server over mutual TLS: health, reflection (v1alpha, as
//! grpcio-reflection asks), and an AreSamePerson built from reflected descriptors and answered
//! INVALID_ARGUMENT with its field violation.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

/// grpcio-status brings the google.rpc error-detail messages.
const PACKAGES: [&str; 4] = [
    "grpcio==1.85.1",
    "grpcio-health-checking==1.85.1",
    "grpcio-reflection==1.85.1",
    "grpcio-status==1.85.1",
];

fn python_env() -> Option<PathBuf> {
    let python = ["python3", "python"].into_iter().find(|candidate| {
        Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    let Some(python) = python else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 for the interoperability test"
        );
        eprintln!("interop: no python3 on this machine; the Python grpcio test did not run");
        return None;
    };
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop-venv");
    let interpreter = venv.join("bin/python");
    let marker = venv.join(format!("installed-{}", PACKAGES.join("-")));
    if !marker.exists() {
        let status = Command::new(python)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&interpreter)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PACKAGES)
            .status()
            .unwrap();
        assert!(status.success(), "pip install {PACKAGES:?} failed");
        std::fs::write(&marker, b"").unwrap();
    }
    Some(interpreter)
}

#[tokio::test]
async fn python_grpcio_speaks_to_the_server_over_mutual_tls() {
    let Some(python) = tokio::task::spawn_blocking(python_env).await.unwrap() else {
        return;
    };
    let server = TestServer::start().await;
    let pki = server.pki.clone().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grpc_interop.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(server.addr.to_string())
        .arg(pki.ca_cert())
        .arg(pki.client_cert("history-provider"))
        .arg(pki.client_key("history-provider"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    for line in [
        "health SERVING",
        "reflection lists kouiki.mpi.v1.QualificationHistory",
        "AreSamePerson INVALID_ARGUMENT first.patient.insured_id.parts.insurer_number: insurer number check digit must be 3, found 2",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
}
