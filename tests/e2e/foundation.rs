//! Health, reflection (v1 and v1alpha), metrics, and the role check on every RPC.

use mpi_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

#[tokio::test]
async fn health_answers_serving_for_the_server_and_every_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel("operator").await);
    for service in std::iter::once("").chain(mpi_proto::SERVICE_NAMES) {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let server = TestServer::start().await;
    let channel = server.channel("clinician-a").await;

    use tonic_reflection::pb::v1 as r1;
    let mut v1 = r1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = v1
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("v1 reflection did not list services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in mpi_proto::SERVICE_NAMES
        .iter()
        .chain(&["grpc.health.v1.Health"])
    {
        assert!(
            names.iter().any(|n| n == expected),
            "v1 lists {expected}: {names:?}"
        );
    }

    use tonic_reflection::pb::v1alpha as ra;
    let mut alpha = ra::server_reflection_client::ServerReflectionClient::new(channel);
    let request = ra::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            ra::server_reflection_request::MessageRequest::FileContainingSymbol(
                "kouiki.mpi.v1.QualificationHistory".into(),
            ),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(ra::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        response.message_response
    else {
        panic!("v1alpha reflection did not return the file descriptor");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn empty_requests_are_invalid_arguments_for_the_right_role() {
    let server = TestServer::start().await;
    let network = server.channel("network-a").await;
    let clinician = server.channel("clinician-a").await;
    let operator = server.channel("operator").await;
    let mut codes = Vec::new();
    {
        let mut client = pb::record_locator_client::RecordLocatorClient::new(network.clone());
        codes.push(
            client
                .register_locations(pb::RegisterLocationsRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
        codes.push(
            client
                .withdraw_locations(pb::WithdrawLocationsRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
        let mut client = pb::record_locator_client::RecordLocatorClient::new(clinician.clone());
        codes.push(
            client
                .find_locations(pb::FindLocationsRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
    }
    {
        let mut client = pb::federation_client::FederationClient::new(network.clone());
        codes.push(
            client
                .link_regional_id(pb::LinkRegionalIdRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
        codes.push(
            client
                .unlink_regional_id(pb::UnlinkRegionalIdRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
        let mut client = pb::federation_client::FederationClient::new(clinician);
        codes.push(
            client
                .cross_reference(pb::CrossReferenceRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
    }
    {
        let mut client = pb::consent_client::ConsentClient::new(operator.clone());
        codes.push(
            client
                .record_consent(pb::RecordConsentRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
        codes.push(
            client
                .revoke_consent(pb::RevokeConsentRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
        codes.push(
            client
                .list_consents(pb::ListConsentsRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
    }
    {
        let mut client = pb::audit_client::AuditClient::new(operator);
        codes.push(
            client
                .access_disclosure(pb::AccessDisclosureRequest::default())
                .await
                .unwrap_err()
                .code(),
        );
    }
    assert_eq!(codes, vec![Code::InvalidArgument; 10]);
}

#[tokio::test]
async fn metrics_count_requests_by_rpc_and_code() {
    let server = TestServer::start().await;
    let mut history = server.history("history-provider").await;
    let bad = at(member("01139012::1:"), "");
    let _ = same(&mut history, bad.clone(), bad).await.unwrap_err();
    let mut clinician = server.history("clinician-a").await;
    let good = at(member("01139013::1:"), "");
    let _ = same(&mut clinician, good.clone(), good).await.unwrap_err();
    let metrics = server.metrics().await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains(
            r#"kouiki_mpi_grpc_requests_total{rpc="AreSamePerson",code="INVALID_ARGUMENT"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"kouiki_mpi_grpc_requests_total{rpc="AreSamePerson",code="PERMISSION_DENIED"} 1"#
    ));
    assert!(metrics.contains(r#"kouiki_mpi_grpc_request_duration_seconds_count{rpc="AreSamePerson",code="INVALID_ARGUMENT"} 1"#));
}
