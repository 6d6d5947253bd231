//! "Who looked at my records?": AccessDisclosure lists exactly the retrievals of one patient's
//! data (FindLocations and CrossReference, by any clinician or network, in the period), with
//! purpose and emergency flag, and nothing about anyone else; regional IDs never reach the disk
//! or the audit trail in plaintext.

use mpi_proto::v1 as pb;
use tonic::Code;

use crate::scene::{
    Scene, by_card, by_regional, clinician, facility, find_request, location, network, person,
};
use crate::support::{files_under, insured, numbers, violations};

const A: &str = "13-0001";
const C: &str = "14-0001";

async fn two_patients(scene: &Scene) -> (pb::PatientReference, pb::PatientReference) {
    let first = insured(numbers::KENPO, "7702", "31", "00");
    let second = insured(numbers::KYOKAI, "9101", "4501", "02");
    person(
        scene,
        "p-first",
        "1970-01-30",
        pb::Sex::Male,
        &[(first.clone(), "2010-04-01", "")],
    )
    .await;
    person(
        scene,
        "p-second",
        "1990-11-02",
        pb::Sex::Female,
        &[(second.clone(), "2012-04-01", "")],
    )
    .await;
    let patients = (
        by_card(first, "", pb::Sex::Unspecified),
        by_card(second, "", pb::Sex::Unspecified),
    );
    for (patient, reference) in [(&patients.0, "a/first"), (&patients.1, "a/second")] {
        scene.participate(patient, A).await;
        scene
            .disclose_all(patient, A, pb::recipients::Recipients::AnyFacility(true))
            .await;
        scene
            .register(
                &network(A),
                vec![location(
                    patient,
                    &facility(13, 1, 1001),
                    pb::RecordKind::Treatment,
                    "2024-02-01",
                    "",
                    reference,
                )],
            )
            .await
            .unwrap();
    }
    patients
}

async fn disclosures(
    scene: &Scene,
    request: pb::AccessDisclosureRequest,
) -> Result<Vec<pb::DisclosureEntry>, tonic::Status> {
    let mut audit = scene.audit().await;
    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .access_disclosure(pb::AccessDisclosureRequest {
                page_token: token,
                ..request.clone()
            })
            .await?
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return Ok(entries);
        }
        token = page.next_page_token;
    }
}

fn asked(patient: &pb::PatientReference) -> pb::AccessDisclosureRequest {
    pb::AccessDisclosureRequest {
        patient: Some(patient.clone()),
        purpose: pb::Purpose::PatientRequest.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn access_disclosure_lists_exactly_this_patients_retrievals() {
    let scene = Scene::start().await;
    let (first, second) = two_patients(&scene).await;
    let doctor_c = clinician(C, &facility(14, 1, 3001));
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    // Retrievals of the first patient: two finds by C (treatment, coordination), one by A,
    // a cross-reference by network A. The second patient: one find by C.
    scene.find(&doctor_c, &first).await.unwrap();
    scene
        .find_with(
            &doctor_c,
            pb::FindLocationsRequest {
                purpose: pb::Purpose::CareCoordination.into(),
                ..find_request(&first)
            },
        )
        .await
        .unwrap();
    scene.find(&doctor_a, &first).await.unwrap();
    scene
        .federation(&network(A))
        .await
        .cross_reference(pb::CrossReferenceRequest {
            patient: Some(first.clone()),
            target_network_id: A.into(),
            purpose: pb::Purpose::CareCoordination.into(),
            emergency_reason: String::new(),
        })
        .await
        .unwrap();
    scene.find(&doctor_c, &second).await.unwrap();
    // A refused retrieval (bad request) disclosed nothing and is not listed.
    scene
        .find_with(
            &doctor_c,
            pb::FindLocationsRequest {
                page_token: "bad".into(),
                ..find_request(&first)
            },
        )
        .await
        .unwrap_err();

    let entries = disclosures(&scene, asked(&first)).await.unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e.principal.as_str(),
                e.action.as_str(),
                e.purpose(),
                e.disclosed,
                e.emergency,
            )
        })
        .collect();
    let c = format!("clinician:14-0001:{}", facility(14, 1, 3001));
    let a = format!("clinician:13-0001:{}", facility(13, 1, 1003));
    assert_eq!(
        summary,
        [
            (
                c.as_str(),
                "FindLocations",
                pb::Purpose::Treatment,
                1,
                false
            ),
            (
                c.as_str(),
                "FindLocations",
                pb::Purpose::CareCoordination,
                1,
                false
            ),
            (
                a.as_str(),
                "FindLocations",
                pb::Purpose::Treatment,
                1,
                false
            ),
            (
                "network:13-0001",
                "CrossReference",
                pb::Purpose::CareCoordination,
                0,
                false
            ),
        ]
    );
    assert!(entries.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert!(entries.iter().all(|e| e.at.is_some()));
    let other = disclosures(&scene, asked(&second)).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].principal, c);
    // Pages of one give the same entries.
    let paged = disclosures(
        &scene,
        pb::AccessDisclosureRequest {
            page_size: 1,
            ..asked(&first)
        },
    )
    .await
    .unwrap();
    assert_eq!(paged, entries);
    // A period: from the second entry's time on.
    let from = entries[1].at;
    let later = disclosures(
        &scene,
        pb::AccessDisclosureRequest {
            from,
            ..asked(&first)
        },
    )
    .await
    .unwrap();
    assert_eq!(later, entries[1..]);
    let until = disclosures(
        &scene,
        pb::AccessDisclosureRequest {
            to: from,
            ..asked(&first)
        },
    )
    .await
    .unwrap();
    assert_eq!(until, entries[..1]);

    // Only operators ask; the purpose is required; an unknown patient is NOT_FOUND.
    let status = pb::audit_client::AuditClient::new(scene.channel(&doctor_c).await)
        .access_disclosure(asked(&first))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = disclosures(
        &scene,
        pb::AccessDisclosureRequest {
            purpose: 0,
            ..asked(&first)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&status)[0].0, "purpose");
    let status = disclosures(&scene, asked(&by_regional("x")))
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "patient.regional_id");
    let nobody = by_card(
        insured(numbers::KYOKAI, "1", "999", "01"),
        "",
        pb::Sex::Unspecified,
    );
    assert_eq!(
        disclosures(&scene, asked(&nobody))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // The questions themselves are audited too (as AccessDisclosure, not as disclosures).
    let report = scene
        .audit()
        .await
        .verify_audit_chain(pb::VerifyAuditChainRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{report:?}");
}

#[tokio::test]
async fn regional_ids_are_sealed_on_disk_and_absent_from_the_audit_trail() {
    let scene = Scene::start().await;
    let (first, _) = two_patients(&scene).await;
    let local = "RGN-31415926-HANA";
    scene
        .federation(&network(A))
        .await
        .link_regional_id(pb::LinkRegionalIdRequest {
            patient: Some(match first.patient.clone().unwrap() {
                pb::patient_reference::Patient::Insured(insured) => insured,
                pb::patient_reference::Patient::RegionalId(_) => unreachable!(),
            }),
            regional_id: local.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    let answer = scene
        .federation(&doctor_a)
        .await
        .cross_reference(pb::CrossReferenceRequest {
            patient: Some(by_regional(local)),
            target_network_id: A.into(),
            purpose: pb::Purpose::Treatment.into(),
            emergency_reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.regional_ids, [local]);
    let events: Vec<pb::AuditEvent> = {
        let mut stream = scene
            .audit()
            .await
            .export_audit_events(pb::ExportAuditEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.unwrap() {
            events.push(event);
        }
        events
    };
    let text = format!("{events:?}");
    assert!(!text.contains(local), "{text}");
    // Neither the insured ID's insurer number anywhere nor its symbol in a field of words: the
    // hashes and IDs are random hex, which holds any four digits now and then.
    assert!(!text.contains(numbers::KENPO), "{text}");
    for event in &events {
        let words = [
            &event.principal,
            &event.action,
            &event.outcome,
            &event.emergency_reason,
        ];
        assert!(words.iter().all(|w| !w.contains("7702")), "{event:?}");
    }
    let data = scene.server.stop().await;
    for file in files_under(data.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(local.len()).any(|w| w == local.as_bytes()),
            "{} holds the regional ID",
            file.display()
        );
    }
}
