//! Mutual TLS and roles: who gets in, and what each role may call; clients that hold streams
//! open do not starve the others.

use mpi_core::principal::Principal;
use mpi_proto::v1 as pb;
use mpi_server::client::tls_config;
use mpi_server::pki::CertAuthority;
use tonic::Code;
use tonic::transport::Endpoint;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

/// Tries one health check with the given TLS client settings; true when it was answered.
async fn answered(server: &TestServer, tls: tonic::transport::ClientTlsConfig) -> bool {
    let endpoint = Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
}

fn server_ca(server: &TestServer) -> Vec<u8> {
    std::fs::read(server.pki.as_ref().unwrap().ca_cert()).unwrap()
}

#[tokio::test]
async fn the_right_certificate_is_answered() {
    let server = TestServer::start().await;
    let identity = server.identity("operator");
    let tls = tls_config(
        &identity.ca_pem,
        Some((&identity.cert_pem, &identity.key_pem)),
        "localhost",
    );
    assert!(
        answered(&server, tls).await,
        "control: a valid client certificate is answered"
    );
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let server = TestServer::start().await;
    assert!(!answered(&server, tls_config(&server_ca(&server), None, "localhost")).await);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let server = TestServer::start().await;
    let rogue = CertAuthority::generate("rogue CA").unwrap();
    let client = rogue
        .issue_client(&Principal::Operator("mallory".into()))
        .unwrap();
    let tls = tls_config(
        &server_ca(&server),
        Some((client.cert_pem.as_bytes(), client.key_pem.as_bytes())),
        "localhost",
    );
    assert!(!answered(&server, tls).await);
}

#[tokio::test]
async fn an_expired_certificate_from_the_trusted_ca_is_refused() {
    // The server trusts `ca` through configured TLS files, so the only fault of the expired
    // certificate is its validity; a fresh one from the same CA is the control.
    let ca = CertAuthority::generate("operator-issued CA").unwrap();
    let (server, _tls_dir) = TestServer::start_with_ca(&ca).await;
    let ca_pem = ca.cert_pem().into_bytes();
    let operator = Principal::Operator("ops".into());
    let fresh = ca.issue_client(&operator).unwrap();
    let tls = tls_config(
        &ca_pem,
        Some((fresh.cert_pem.as_bytes(), fresh.key_pem.as_bytes())),
        "localhost",
    );
    assert!(
        answered(&server, tls).await,
        "control: a valid certificate of the configured CA"
    );
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue_client_valid(
            &operator,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
    let tls = tls_config(
        &ca_pem,
        Some((expired.cert_pem.as_bytes(), expired.key_pem.as_bytes())),
        "localhost",
    );
    assert!(!answered(&server, tls).await);
}

#[tokio::test]
async fn a_role_calling_an_rpc_it_may_not_use_is_permission_denied() {
    let server = TestServer::start().await;
    let pair = at(member("01139013::1:"), "");
    for alias in ["clinician-a", "clinician-b"] {
        let mut client = server.history(alias).await;
        let status = same(&mut client, pair.clone(), pair.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{alias}");
        assert!(
            status.message().contains("clinician"),
            "{}",
            status.message()
        );
    }
    for alias in ["network-a", "operator", "clinician-a"] {
        let mut client = server.history(alias).await;
        let status = client
            .import_qualifications(tokio_stream::iter(vec![
                pb::ImportQualificationsRequest::default(),
            ]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{alias} importing");
    }
    let mut locator =
        pb::record_locator_client::RecordLocatorClient::new(server.channel("clinician-a").await);
    let status = locator
        .register_locations(pb::RegisterLocationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "a clinician registering"
    );
    let mut consent = pb::consent_client::ConsentClient::new(server.channel("network-b").await);
    let status = consent
        .list_consents(pb::ListConsentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "a network listing consents"
    );
    let mut audit = pb::audit_client::AuditClient::new(server.channel("history-provider").await);
    let status = audit
        .verify_audit_chain(pb::VerifyAuditChainRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

/// The number after `line` in the metrics text (0 when absent).
fn counter(metrics: &str, line: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_held_open_are_cut_and_never_starve_other_clients() {
    const STREAMS: u32 = 16;
    let server = TestServer::start_with(|config| {
        config.limits.max_concurrent_streams = STREAMS;
        config.limits.request_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    // One connection opens as many import streams as it may have at once and sends nothing on
    // any of them: a slow client holding every stream it can.
    let abuser = server.channel("history-provider").await;
    let mut senders = Vec::new();
    let mut held = Vec::new();
    for _ in 0..STREAMS {
        let (sender, receiver) = tokio::sync::mpsc::channel::<pb::ImportQualificationsRequest>(1);
        senders.push(sender);
        let mut client = QualificationHistoryClient::new(abuser.clone());
        held.push(tokio::spawn(async move {
            client
                .import_qualifications(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await
        }));
    }
    // Everyone else is served meanwhile, on their own connections.
    let mut other = server.history("history-provider").await;
    let pair = at(insured(numbers::KYOKAI, "1", "1", "01"), "");
    for _ in 0..5 {
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            same(&mut other, pair.clone(), pair.clone()),
        )
        .await
        .expect("another client waited for the held streams");
        assert_eq!(answer.unwrap(), pb::SamePersonAnswer::Unknown);
    }
    // Each held stream is cut once idle for the timeout.
    let cut =
        r#"kouiki_mpi_grpc_requests_total{rpc="ImportQualifications",code="DEADLINE_EXCEEDED"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while counter(&server.metrics().await, cut) < u64::from(STREAMS) {
        assert!(
            std::time::Instant::now() < deadline,
            "held streams were not all cut: {}",
            counter(&server.metrics().await, cut)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The client learns it once it ends its side; ending it also frees the stream slots.
    drop(senders);
    for call in held {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    // The abuser's own connection is served again.
    let mut again = QualificationHistoryClient::new(abuser);
    assert_eq!(
        same(&mut again, pair.clone(), pair).await.unwrap(),
        pb::SamePersonAnswer::Unknown
    );
}
