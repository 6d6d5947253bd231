//! Record locations and regional-ID federation end to end: a person who changed insurer, two
//! networks registering under the old and the new number, a clinician of a third network
//! finding both; merges and unmerges; every rejection path with its code and the item it names.

use mpi_proto::v1 as pb;
use tonic::Code;

use crate::scene::{
    Scene, by_card, by_regional, clinician, facility, find_request, history_provider, location,
    network, operator, person, references,
};
use crate::support::{insured, numbers, violations};

const A: &str = "13-0001";
const B: &str = "27-0001";
const C: &str = "14-0001";

fn old_card() -> pb::InsuredId {
    insured(numbers::KYOKAI, "9101", "4501", "01")
}

fn new_card() -> pb::InsuredId {
    insured(numbers::KENPO, "7702", "31", "00")
}

fn duplicate_card() -> pb::InsuredId {
    insured(numbers::KOKUHO, "", "880777", "01")
}

/// Hanako changed from 協会けんぽ to a 健保組合 in 2021; the history provider also holds a
/// duplicate reference for her under a 国保 number.
async fn hanako(scene: &Scene) -> (pb::PatientReference, pb::PatientReference) {
    person(
        scene,
        "p-hanako",
        "1985-06-15",
        pb::Sex::Female,
        &[
            (old_card(), "2015-04-01", "2021-03-31"),
            (new_card(), "2021-04-01", ""),
        ],
    )
    .await;
    person(
        scene,
        "p-hanako-dup",
        "1985-06-15",
        pb::Sex::Female,
        &[(duplicate_card(), "2019-01-01", "")],
    )
    .await;
    (
        by_card(new_card(), "", pb::Sex::Unspecified),
        by_card(duplicate_card(), "", pb::Sex::Unspecified),
    )
}

#[tokio::test]
async fn a_clinician_elsewhere_sees_pointers_under_old_and_new_numbers_and_merges_follow() {
    let scene = Scene::start().await;
    let (patient, duplicate) = hanako(&scene).await;
    let old = by_card(old_card(), "", pb::Sex::Unspecified);
    for net in [A, B] {
        scene.participate(&patient, net).await;
    }
    scene
        .disclose_all(&patient, A, pb::recipients::Recipients::AnyFacility(true))
        .await;
    let pharmacy_a = facility(13, 4, 1001);
    let hospital_b = facility(27, 1, 2001);
    let stored = |results: Vec<pb::RegistrationResult>| {
        results
            .iter()
            .all(|r| r.outcome() == pb::RegistrationOutcome::Stored)
    };
    // A registers a prescription under the old number (valid on its service date), B a
    // check-up under the new one.
    let results = scene
        .register(
            &network(A),
            vec![location(
                &old,
                &pharmacy_a,
                pb::RecordKind::Prescription,
                "2020-05-10",
                "",
                "a/rx/1",
            )],
        )
        .await
        .unwrap();
    assert!(stored(results.clone()), "{results:?}");
    let results = scene
        .register(
            &network(B),
            vec![location(
                &patient,
                &hospital_b,
                pb::RecordKind::Checkup,
                "2023-07-01",
                "",
                "b/chk/1",
            )],
        )
        .await
        .unwrap();
    assert!(stored(results));
    let doctor_c = clinician(C, &facility(14, 1, 3001));
    let found = scene.find(&doctor_c, &patient).await.unwrap();
    assert_eq!(references(&found), ["a/rx/1", "b/chk/1"]);
    let rx = found.iter().find(|l| l.reference == "a/rx/1").unwrap();
    assert_eq!(rx.network_id, A);
    assert_eq!(rx.facility_code, pharmacy_a);
    assert_eq!(rx.kind(), pb::RecordKind::Prescription);
    assert_eq!(rx.first_service_date, "2020-05-10");
    assert!(rx.registered_at.is_some());
    // The old card no longer names anyone today.
    assert_eq!(
        scene.find(&doctor_c, &old).await.unwrap_err().code(),
        Code::NotFound
    );

    // A registers a treatment for the duplicate reference (it consented to A separately).
    scene.participate(&duplicate, A).await;
    let results = scene
        .register(
            &network(A),
            vec![location(
                &duplicate,
                &facility(13, 1, 1002),
                pb::RecordKind::Treatment,
                "2022-02-02",
                "2022-02-09",
                "a/tx/9",
            )],
        )
        .await
        .unwrap();
    assert!(stored(results));
    let mut history = scene.history().await;
    let merge_id = history
        .merge_persons(pb::MergePersonsRequest {
            surviving_person_ref: "p-hanako".into(),
            merged_person_ref: "p-hanako-dup".into(),
            reason: "one person, two references".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .merge_id;
    assert_eq!(
        references(&scene.find(&doctor_c, &patient).await.unwrap()),
        ["a/rx/1", "a/tx/9", "b/chk/1"]
    );
    history
        .unmerge_persons(pb::UnmergePersonsRequest {
            merge_id,
            reason: "they were two people after all".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        references(&scene.find(&doctor_c, &patient).await.unwrap()),
        ["a/rx/1", "b/chk/1"]
    );
    // Unmerged, the duplicate is its own person again: it never granted disclosure, so only a
    // clinician of A itself sees its pointer.
    assert!(scene.find(&doctor_c, &duplicate).await.unwrap().is_empty());
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    assert_eq!(
        references(&scene.find(&doctor_a, &duplicate).await.unwrap()),
        ["a/tx/9"]
    );
}

#[tokio::test]
async fn registration_widens_filters_and_pages_and_withdrawal_removes() {
    let scene = Scene::start().await;
    let (patient, _) = hanako(&scene).await;
    scene.participate(&patient, A).await;
    let clinic = facility(13, 1, 1004);
    let items: Vec<_> = (0..25)
        .map(|i| {
            location(
                &patient,
                &clinic,
                if i % 2 == 0 {
                    pb::RecordKind::Treatment
                } else {
                    pb::RecordKind::Checkup
                },
                &format!("2022-01-{:02}", i + 1),
                "",
                &format!("a/doc/{i:02}"),
            )
        })
        .collect();
    scene.register(&network(A), items).await.unwrap();
    // The same (network, facility, kind, reference) again widens its span: no duplicate.
    scene
        .register(
            &network(A),
            vec![location(
                &patient,
                &clinic,
                pb::RecordKind::Treatment,
                "2022-03-01",
                "2022-03-05",
                "a/doc/00",
            )],
        )
        .await
        .unwrap();
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    let all = scene.find(&doctor_a, &patient).await.unwrap();
    assert_eq!(all.len(), 25);
    let widened = all.iter().find(|l| l.reference == "a/doc/00").unwrap();
    assert_eq!(
        (
            widened.first_service_date.as_str(),
            widened.last_service_date.as_str()
        ),
        ("2022-01-01", "2022-03-05")
    );
    // Pages of 10: three pages, no overlap.
    let mut locator = scene.locator(&doctor_a).await;
    let first = locator
        .find_locations(pb::FindLocationsRequest {
            page_size: 10,
            ..find_request(&patient)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.locations.len(), 10);
    assert!(!first.next_page_token.is_empty());
    let paged = scene
        .find_with(
            &doctor_a,
            pb::FindLocationsRequest {
                page_size: 10,
                ..find_request(&patient)
            },
        )
        .await
        .unwrap();
    assert_eq!(references(&paged), references(&all));
    // Kind and date filters.
    let checkups = scene
        .find_with(
            &doctor_a,
            pb::FindLocationsRequest {
                kinds: vec![pb::RecordKind::Checkup.into()],
                ..find_request(&patient)
            },
        )
        .await
        .unwrap();
    assert_eq!(checkups.len(), 12);
    let span = scene
        .find_with(
            &doctor_a,
            pb::FindLocationsRequest {
                service_from: "2022-01-10".into(),
                service_to: "2022-01-12".into(),
                ..find_request(&patient)
            },
        )
        .await
        .unwrap();
    // a/doc/00 was widened to 2022-01-01..2022-03-05, so it overlaps the span too.
    assert_eq!(
        references(&span),
        ["a/doc/00", "a/doc/09", "a/doc/10", "a/doc/11"]
    );
    // Withdrawal: the found one goes, the unknown one is reported by position.
    let withdrawn = locator_withdraw(
        &scene,
        A,
        vec![
            key(&clinic, pb::RecordKind::Treatment, "a/doc/00"),
            key(&clinic, pb::RecordKind::Treatment, "a/doc/99"),
        ],
    )
    .await
    .unwrap();
    assert_eq!((withdrawn.withdrawn, withdrawn.not_found), (1, vec![1]));
    assert_eq!(scene.find(&doctor_a, &patient).await.unwrap().len(), 24);
}

fn key(facility_code: &str, kind: pb::RecordKind, reference: &str) -> pb::LocationKey {
    pb::LocationKey {
        facility_code: facility_code.into(),
        kind: kind.into(),
        reference: reference.into(),
        network_id: String::new(),
    }
}

async fn locator_withdraw(
    scene: &Scene,
    as_network: &str,
    locations: Vec<pb::LocationKey>,
) -> Result<pb::WithdrawLocationsResponse, tonic::Status> {
    scene
        .locator(&network(as_network))
        .await
        .withdraw_locations(pb::WithdrawLocationsRequest {
            locations,
            reason: "registered in error".into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn every_registration_rejection_names_its_item_and_reason() {
    let scene = Scene::start().await;
    let (patient, duplicate) = hanako(&scene).await;
    // Same-sex twins on one household number without 枝番, born the same day: ambiguous.
    let household = insured(numbers::KOKUHO, "", "880123", "");
    for twin in ["p-twin-1", "p-twin-2"] {
        person(
            &scene,
            twin,
            "2012-05-20",
            pb::Sex::Male,
            &[(household.clone(), "2012-05-20", "2021-03-31")],
        )
        .await;
    }
    scene.participate(&patient, A).await;
    let clinic = facility(13, 1, 1004);
    let twin = by_card(household, "2012-05-20", pb::Sex::Male);
    let unknown = by_card(
        insured(numbers::KYOKAI, "1", "999", "01"),
        "",
        pb::Sex::Unspecified,
    );
    let item = |patient: &pb::PatientReference, facility: &str, reference: &str| {
        location(
            patient,
            facility,
            pb::RecordKind::Treatment,
            "2020-06-01",
            "",
            reference,
        )
    };
    let mut bad_date = item(&patient, &clinic, "a/5");
    bad_date.first_service_date = "2020-02-30".into();
    let mut backwards = item(&patient, &clinic, "a/6");
    backwards.last_service_date = "2020-05-01".into();
    // The new card is hers from 2021-04-01: the stored item uses a service date after that.
    let mut current = item(&patient, &clinic, "a/0");
    current.first_service_date = "2021-06-01".into();
    let items = vec![
        current,
        item(&unknown, &clinic, "a/1"),
        item(&twin, &clinic, "a/2"),
        item(&duplicate, &clinic, "a/3"),
        item(&patient, "1310123459", "a/4"),
        bad_date,
        backwards,
        item(&patient, &clinic, ""),
        item(&by_regional("never-linked"), &clinic, "a/8"),
    ];
    let results = scene.register(&network(A), items).await.unwrap();
    let summary: Vec<_> = results
        .iter()
        .map(|r| (r.index, r.outcome(), r.field.as_str()))
        .collect();
    use pb::RegistrationOutcome as O;
    assert_eq!(
        summary,
        [
            (0, O::Stored, ""),
            (1, O::UnknownPatient, "patient"),
            (2, O::AmbiguousPatient, "patient"),
            (3, O::NoParticipationConsent, "patient"),
            (4, O::InvalidField, "facility_code"),
            (5, O::InvalidField, "first_service_date"),
            (6, O::InvalidField, "last_service_date"),
            (7, O::InvalidField, "reference"),
            (8, O::UnknownPatient, "patient"),
        ]
    );
    assert!(results[4].reason.contains("check digit"), "{results:?}");
    // Nothing but the first item was stored, and the batch was atomic with it.
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    assert_eq!(
        references(&scene.find(&doctor_a, &patient).await.unwrap()),
        ["a/0"]
    );
    // The same pointer registered for another patient is refused by name.
    scene.participate(&duplicate, A).await;
    let results = scene
        .register(
            &network(A),
            vec![{
                let mut again = item(&duplicate, &clinic, "a/0");
                again.first_service_date = "2021-06-01".into();
                again
            }],
        )
        .await
        .unwrap();
    assert_eq!(results[0].outcome(), O::InvalidField);
    assert_eq!(results[0].field, "reference");

    // Whole-request refusals.
    let status = scene.register(&network(A), Vec::new()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status)[0].0, "items");
    let too_many = vec![item(&patient, &clinic, "x"); 1001];
    let status = scene.register(&network(A), too_many).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let mut in_b_name = item(&patient, &clinic, "a/9");
    in_b_name.network_id = B.into();
    let status = scene
        .register(&network(A), vec![in_b_name])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("items[0].network_id"),
        "{status:?}"
    );
    let doctor = clinician(A, &clinic);
    let status = scene
        .register(&doctor, vec![item(&patient, &clinic, "a/10")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        references(&scene.find(&doctor_a, &patient).await.unwrap()),
        ["a/0"]
    );
}

#[tokio::test]
async fn withdrawal_and_find_rejections() {
    let scene = Scene::start().await;
    let (patient, _) = hanako(&scene).await;
    scene.participate(&patient, A).await;
    let clinic = facility(13, 1, 1004);
    scene
        .register(
            &network(A),
            vec![location(
                &patient,
                &clinic,
                pb::RecordKind::Treatment,
                "2022-01-01",
                "",
                "a/1",
            )],
        )
        .await
        .unwrap();
    // B names A's pointer: PERMISSION_DENIED, and it stays.
    let mut foreign = key(&clinic, pb::RecordKind::Treatment, "a/1");
    foreign.network_id = A.into();
    let status = locator_withdraw(&scene, B, vec![foreign])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // B without naming a network withdraws only its own: not found.
    let response = locator_withdraw(
        &scene,
        B,
        vec![key(&clinic, pb::RecordKind::Treatment, "a/1")],
    )
    .await
    .unwrap();
    assert_eq!((response.withdrawn, response.not_found), (0, vec![0]));
    let status = scene
        .locator(&network(A))
        .await
        .withdraw_locations(pb::WithdrawLocationsRequest {
            locations: vec![key(&clinic, pb::RecordKind::Unspecified, "a/1")],
            reason: String::new(),
        })
        .await
        .unwrap_err();
    let fields: Vec<_> = violations(&status).into_iter().map(|v| v.0).collect();
    assert_eq!(fields, ["locations[0].kind", "reason"]);
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    assert_eq!(scene.find(&doctor_a, &patient).await.unwrap().len(), 1);

    // FindLocations refusals: a network may not call it; emergency needs a reason; a reason
    // without emergency is refused; backwards spans; bad page tokens.
    let status = scene
        .locator(&network(A))
        .await
        .find_locations(find_request(&patient))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    for (request, field) in [
        (
            pb::FindLocationsRequest {
                purpose: pb::Purpose::Emergency.into(),
                ..find_request(&patient)
            },
            "emergency_reason",
        ),
        (
            pb::FindLocationsRequest {
                emergency_reason: "unconscious".into(),
                ..find_request(&patient)
            },
            "emergency_reason",
        ),
        (
            pb::FindLocationsRequest {
                purpose: 0,
                ..find_request(&patient)
            },
            "purpose",
        ),
        (
            pb::FindLocationsRequest {
                service_from: "2022-02-01".into(),
                service_to: "2022-01-01".into(),
                ..find_request(&patient)
            },
            "service_to",
        ),
        (
            pb::FindLocationsRequest {
                page_token: "not-a-token".into(),
                ..find_request(&patient)
            },
            "page_token",
        ),
        (
            pb::FindLocationsRequest {
                kinds: vec![7],
                ..find_request(&patient)
            },
            "kinds[0]",
        ),
    ] {
        let status = scene.find_with(&doctor_a, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violations(&status)[0].0, field);
    }
    let status = scene
        .find(&doctor_a, &by_regional("nobody"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn regional_ids_link_cross_reference_and_name_patients() {
    let scene = Scene::start().await;
    let (patient, duplicate) = hanako(&scene).await;
    let insured_patient = pb::InsuredPatient {
        insured_id: Some(new_card()),
        ..Default::default()
    };
    let link = |local: &str| pb::LinkRegionalIdRequest {
        patient: Some(insured_patient.clone()),
        as_of: String::new(),
        regional_id: local.into(),
        network_id: String::new(),
    };
    let mut federation_a = scene.federation(&network(A)).await;
    // No participation yet: FAILED_PRECONDITION.
    let status = federation_a
        .link_regional_id(link("A-77"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    scene.participate(&patient, A).await;
    scene.participate(&patient, B).await;
    assert!(
        federation_a
            .link_regional_id(link("A-77"))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    assert!(
        !federation_a
            .link_regional_id(link("A-77"))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    let mut federation_b = scene.federation(&network(B)).await;
    federation_b.link_regional_id(link("B-5")).await.unwrap();
    // Linking in another network's name, or a malformed ID.
    let mut in_b_name = link("A-78");
    in_b_name.network_id = B.into();
    assert_eq!(
        federation_a
            .link_regional_id(in_b_name)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let status = federation_a
        .link_regional_id(link("A 78"))
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "regional_id");
    // The same regional ID for another patient is refused.
    scene.participate(&duplicate, A).await;
    let status = federation_a
        .link_regional_id(pb::LinkRegionalIdRequest {
            patient: Some(pb::InsuredPatient {
                insured_id: Some(duplicate_card()),
                ..Default::default()
            }),
            ..link("A-77")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    // A names its patient by its own regional ID to register; a clinician of A finds by it.
    let clinic = facility(13, 1, 1004);
    let results = scene
        .register(
            &network(A),
            vec![location(
                &by_regional("A-77"),
                &clinic,
                pb::RecordKind::Treatment,
                "2024-01-01",
                "",
                "a/1",
            )],
        )
        .await
        .unwrap();
    assert_eq!(results[0].outcome(), pb::RegistrationOutcome::Stored);
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    assert_eq!(
        references(&scene.find(&doctor_a, &by_regional("A-77")).await.unwrap()),
        ["a/1"]
    );
    // B's own ID does not name anyone in A.
    assert_eq!(
        scene
            .find(&doctor_a, &by_regional("B-5"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // CrossReference: A's clinician asks for B's ID. Without a grant from B: nothing.
    let cross = |target: &str| pb::CrossReferenceRequest {
        patient: Some(by_regional("A-77")),
        target_network_id: target.into(),
        purpose: pb::Purpose::CareCoordination.into(),
        emergency_reason: String::new(),
    };
    let mut federation_doctor = scene.federation(&doctor_a).await;
    let answer = federation_doctor
        .cross_reference(cross(B))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.regional_ids.is_empty());
    scene
        .disclose_all(&patient, B, pb::recipients::Recipients::AnyFacility(true))
        .await;
    let answer = federation_doctor
        .cross_reference(cross(B))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (answer.target_network_id.as_str(), answer.regional_ids),
        (B, vec!["B-5".to_owned()])
    );
    // A network asks about its own patient in its own network.
    let answer = federation_a
        .cross_reference(cross(A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.regional_ids, ["A-77"]);

    // Unlink: the ID no longer names the patient; unlinking again is NOT_FOUND.
    federation_a
        .unlink_regional_id(pb::UnlinkRegionalIdRequest {
            regional_id: "A-77".into(),
            reason: "merged in the network".into(),
            network_id: String::new(),
        })
        .await
        .unwrap();
    let status = federation_a
        .unlink_regional_id(pb::UnlinkRegionalIdRequest {
            regional_id: "A-77".into(),
            reason: "again".into(),
            network_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        scene
            .find(&doctor_a, &by_regional("A-77"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // A clinician may not link; an operator may not cross-reference.
    let mut as_doctor = scene.federation(&doctor_a).await;
    assert_eq!(
        as_doctor
            .link_regional_id(link("A-79"))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut as_operator = scene.federation(&operator()).await;
    assert_eq!(
        as_operator
            .cross_reference(cross(B))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut as_provider = scene.federation(&history_provider()).await;
    assert_eq!(
        as_provider
            .cross_reference(cross(B))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
}

/// A graceful stop leaves the location index durable with every claim the registrations logged
/// (the store's close commits it), so the next start has none to replay; registration's claims
/// are otherwise made durable only every 10 s (ARCHITECTURE.md, "Store layout").
#[tokio::test]
async fn a_graceful_stop_leaves_no_claim_to_replay() {
    use redb::ReadableDatabase;
    let scene = Scene::start().await;
    let (patient, _) = hanako(&scene).await;
    scene.participate(&patient, A).await;
    let clinic = facility(13, 1, 1004);
    let items: Vec<_> = (0..3)
        .map(|i| {
            location(
                &patient,
                &clinic,
                pb::RecordKind::Treatment,
                "2022-01-01",
                "",
                &format!("a/doc/{i}"),
            )
        })
        .collect();
    scene.register(&network(A), items).await.unwrap();
    let data = scene.server.stop().await;
    let dir = data.path().join("data");
    let counter = |file: &str, table: &str, name: &str| -> u64 {
        let db = redb::Database::open(dir.join(file)).unwrap();
        let txn = db.begin_read().unwrap();
        let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new(table);
        let value = txn.open_table(table).unwrap().get(name).unwrap();
        value.map_or(0, |v| v.value())
    };
    let logged = counter("mpi.redb", "meta", "claim_log_sequence");
    assert_eq!(logged, 3);
    assert_eq!(
        counter(
            "location-index.redb",
            "location_index_meta",
            "claims_durable_to"
        ),
        logged
    );
}

/// The store's read cache shows at `/metrics`: the first retrieval of a patient reads the
/// pages (misses), the same retrieval again is answered from the cache alone (hits), and what
/// it holds is counted.
#[tokio::test]
async fn the_read_cache_is_counted_at_metrics() {
    let scene = Scene::start().await;
    let (patient, _) = hanako(&scene).await;
    scene.participate(&patient, A).await;
    let clinic = facility(13, 1, 1004);
    let item = location(
        &patient,
        &clinic,
        pb::RecordKind::Treatment,
        "2022-01-01",
        "",
        "a/doc/1",
    );
    scene.register(&network(A), vec![item]).await.unwrap();
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    let value = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let hits = |metrics: &str| value(metrics, "kouiki_mpi_read_cache_hits_total");
    let misses = |metrics: &str| value(metrics, "kouiki_mpi_read_cache_misses_total");
    let before = scene.server.metrics().await;
    assert_eq!(scene.find(&doctor_a, &patient).await.unwrap().len(), 1);
    let first = scene.server.metrics().await;
    assert_eq!(scene.find(&doctor_a, &patient).await.unwrap().len(), 1);
    let second = scene.server.metrics().await;
    assert!(misses(&first) > misses(&before), "{first}");
    assert_eq!(
        misses(&second),
        misses(&first),
        "the same retrieval again reads no page"
    );
    assert!(hits(&second) > hits(&first), "{second}");
    assert!(value(&second, "kouiki_mpi_read_cache_entries") > 0);
    assert!(value(&second, "kouiki_mpi_read_cache_bytes") > 0);
    assert_eq!(
        value(&second, "kouiki_mpi_read_cache_capacity_bytes"),
        mpi_server::config::DEFAULT_READ_CACHE_MIB << 20
    );
}
