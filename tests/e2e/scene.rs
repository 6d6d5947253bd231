//! Scenes with several regional networks: a server whose TLS comes from a CA the test holds, so
//! that any principal (a network, a clinician at any facility, an operator) gets a certificate,
//! and helpers that read as the steps of a scenario.

use mpi_core::ids::luhn::check_digit;
use mpi_core::ids::{FacilityCode, NetworkId};
use mpi_core::principal::Principal;
use mpi_proto::v1 as pb;
use mpi_server::client::{ClientIdentity, connect};
use mpi_server::config::{Config, TlsSource};
use mpi_server::pki::CertAuthority;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::support::{TestServer, import, record};

/// A facility code of `prefecture` with a valid check digit (`table` 1 medical, 4 pharmacy).
pub fn facility(prefecture: u8, table: u8, serial: u16) -> String {
    let body = format!("{prefecture:02}{table}01{serial:04}");
    format!("{body}{}", check_digit(body.as_bytes()).unwrap())
}

/// A network principal.
pub fn network(id: &str) -> Principal {
    Principal::Network(NetworkId::parse(id).unwrap())
}

/// A clinician principal at `facility` in network `id`.
pub fn clinician(id: &str, facility: &str) -> Principal {
    Principal::Clinician {
        network: NetworkId::parse(id).unwrap(),
        facility: FacilityCode::parse(facility).unwrap(),
    }
}

/// The operator.
pub fn operator() -> Principal {
    Principal::Operator("ops".into())
}

/// The history provider.
pub fn history_provider() -> Principal {
    Principal::HistoryProvider("hp".into())
}

/// A server with a CA of the test's own.
pub struct Scene {
    pub server: TestServer,
    ca: CertAuthority,
    tls_dir: TempDir,
    emergency: bool,
}

fn tls_of(dir: &TempDir) -> TlsSource {
    TlsSource::Files {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        client_ca: dir.path().join("ca.pem"),
    }
}

impl Scene {
    /// A fresh server, emergency access off (the default).
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A fresh server, with emergency access as given.
    pub async fn start_with(emergency: bool) -> Self {
        let ca = CertAuthority::generate("scene CA").unwrap();
        let tls_dir = tempfile::tempdir().unwrap();
        let server_cert = ca.issue_server().unwrap();
        for (name, contents) in [
            ("ca.pem", ca.cert_pem()),
            ("server.pem", server_cert.cert_pem),
            ("server.key", server_cert.key_pem),
        ] {
            std::fs::write(tls_dir.path().join(name), contents).unwrap();
        }
        let tls = tls_of(&tls_dir);
        let server = TestServer::start_with(|config: &mut Config| {
            config.tls = tls;
            config.emergency_access = emergency;
        })
        .await;
        Self {
            server,
            ca,
            tls_dir,
            emergency,
        }
    }

    /// Stops the server and starts it again on the same data directory.
    pub async fn restart(self) -> Self {
        let Self {
            server,
            ca,
            tls_dir,
            emergency,
        } = self;
        let data = server.stop().await;
        let tls = tls_of(&tls_dir);
        let server = TestServer::start_in(data, |config: &mut Config| {
            config.tls = tls;
            config.emergency_access = emergency;
        })
        .await;
        Self {
            server,
            ca,
            tls_dir,
            emergency,
        }
    }

    /// A channel as `principal`, with a certificate issued for it now.
    pub async fn channel(&self, principal: &Principal) -> Channel {
        let issued = self.ca.issue_client(principal).unwrap();
        let identity = ClientIdentity {
            ca_pem: self.ca.cert_pem().into_bytes(),
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
        };
        connect(&self.server.addr.to_string(), &identity)
            .await
            .unwrap()
    }

    pub async fn locator(
        &self,
        principal: &Principal,
    ) -> pb::record_locator_client::RecordLocatorClient<Channel> {
        pb::record_locator_client::RecordLocatorClient::new(self.channel(principal).await)
    }

    pub async fn consents(
        &self,
        principal: &Principal,
    ) -> pb::consent_client::ConsentClient<Channel> {
        pb::consent_client::ConsentClient::new(self.channel(principal).await)
    }

    pub async fn federation(
        &self,
        principal: &Principal,
    ) -> pb::federation_client::FederationClient<Channel> {
        pb::federation_client::FederationClient::new(self.channel(principal).await)
    }

    pub async fn audit(&self) -> pb::audit_client::AuditClient<Channel> {
        pb::audit_client::AuditClient::new(self.channel(&operator()).await)
    }

    pub async fn history(
        &self,
    ) -> pb::qualification_history_client::QualificationHistoryClient<Channel> {
        pb::qualification_history_client::QualificationHistoryClient::new(
            self.channel(&history_provider()).await,
        )
    }

    /// Imports qualification records as the history provider.
    pub async fn import(&self, records: Vec<pb::QualificationRecord>) {
        let summary = import(&mut self.history().await, records).await;
        assert_eq!(summary.rejected, 0, "{summary:?}");
    }

    /// Records a consent as `principal`.
    pub async fn record_consent(
        &self,
        principal: &Principal,
        request: pb::RecordConsentRequest,
    ) -> Result<pb::ConsentRecord, tonic::Status> {
        self.consents(principal)
            .await
            .record_consent(request)
            .await
            .map(|r| r.into_inner())
    }

    /// Records a participation consent of `network_id` for `patient` as the operator.
    pub async fn participate(&self, patient: &pb::PatientReference, network_id: &str) -> String {
        self.record_consent(
            &operator(),
            pb::RecordConsentRequest {
                patient: Some(patient.clone()),
                kind: pb::ConsentKind::Participation.into(),
                network_id: network_id.into(),
                evidence_reference: "form-participation".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .consent_id
    }

    /// Records, as the operator, a disclosure of every network's data to `recipients`.
    pub async fn disclose_all(
        &self,
        patient: &pb::PatientReference,
        network_id: &str,
        recipients: pb::recipients::Recipients,
    ) -> String {
        let scope = pb::DisclosureScope {
            all_source_networks: true,
            recipients: Some(pb::Recipients {
                recipients: Some(recipients),
            }),
            ..Default::default()
        };
        self.record_consent(
            &operator(),
            pb::RecordConsentRequest {
                patient: Some(patient.clone()),
                kind: pb::ConsentKind::Disclosure.into(),
                network_id: network_id.into(),
                scope: Some(scope),
                evidence_reference: "form-disclosure".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .consent_id
    }

    /// Revokes a consent as `principal`.
    pub async fn revoke(
        &self,
        principal: &Principal,
        consent_id: &str,
        purge: bool,
    ) -> Result<pb::ConsentRecord, tonic::Status> {
        self.consents(principal)
            .await
            .revoke_consent(pb::RevokeConsentRequest {
                consent_id: consent_id.into(),
                reason: "the patient withdrew".into(),
                purge,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Registers locations as `principal`; the per-item results.
    pub async fn register(
        &self,
        principal: &Principal,
        items: Vec<pb::LocationRegistration>,
    ) -> Result<Vec<pb::RegistrationResult>, tonic::Status> {
        self.locator(principal)
            .await
            .register_locations(pb::RegisterLocationsRequest { items })
            .await
            .map(|r| r.into_inner().results)
    }

    /// FindLocations for treatment as `principal`; every page.
    pub async fn find(
        &self,
        principal: &Principal,
        patient: &pb::PatientReference,
    ) -> Result<Vec<pb::Location>, tonic::Status> {
        self.find_with(principal, find_request(patient)).await
    }

    /// FindLocations with a request of the test's making; every page.
    pub async fn find_with(
        &self,
        principal: &Principal,
        request: pb::FindLocationsRequest,
    ) -> Result<Vec<pb::Location>, tonic::Status> {
        let mut client = self.locator(principal).await;
        let mut found = Vec::new();
        let mut token = request.page_token.clone();
        loop {
            let page = client
                .find_locations(pb::FindLocationsRequest {
                    page_token: token,
                    ..request.clone()
                })
                .await?
                .into_inner();
            found.extend(page.locations);
            if page.next_page_token.is_empty() {
                return Ok(found);
            }
            token = page.next_page_token;
        }
    }
}

/// A FindLocations request for treatment.
pub fn find_request(patient: &pb::PatientReference) -> pb::FindLocationsRequest {
    pb::FindLocationsRequest {
        patient: Some(patient.clone()),
        purpose: pb::Purpose::Treatment.into(),
        ..Default::default()
    }
}

/// A patient named by insured ID (and, where given, birth date and sex).
pub fn by_card(insured_id: pb::InsuredId, birth_date: &str, sex: pb::Sex) -> pb::PatientReference {
    pb::PatientReference {
        patient: Some(pb::patient_reference::Patient::Insured(
            pb::InsuredPatient {
                insured_id: Some(insured_id),
                birth_date: birth_date.into(),
                sex: sex.into(),
            },
        )),
    }
}

/// A patient named by the caller's regional ID.
pub fn by_regional(local: &str) -> pb::PatientReference {
    pb::PatientReference {
        patient: Some(pb::patient_reference::Patient::RegionalId(local.into())),
    }
}

/// A location to register.
pub fn location(
    patient: &pb::PatientReference,
    facility_code: &str,
    kind: pb::RecordKind,
    first: &str,
    last: &str,
    reference: &str,
) -> pb::LocationRegistration {
    pb::LocationRegistration {
        patient: Some(patient.clone()),
        facility_code: facility_code.into(),
        kind: kind.into(),
        first_service_date: first.into(),
        last_service_date: last.into(),
        reference: reference.into(),
        network_id: String::new(),
    }
}

/// Imports one person's history (a list of (insured ID, start, end)) as the history provider.
pub async fn person(
    scene: &Scene,
    reference: &str,
    birth_date: &str,
    sex: pb::Sex,
    holdings: &[(pb::InsuredId, &str, &str)],
) {
    scene
        .import(
            holdings
                .iter()
                .map(|(id, start, end)| record(reference, id.clone(), start, end, birth_date, sex))
                .collect(),
        )
        .await;
}

/// The references of found locations, sorted.
pub fn references(locations: &[pb::Location]) -> Vec<String> {
    let mut found: Vec<String> = locations.iter().map(|l| l.reference.clone()).collect();
    found.sort();
    found
}
