//! Consent end to end over mutual TLS: default deny; grants to any facility, to networks, to
//! facilities; kind and purpose filters; expiry; opt-out over every grant; emergency access on
//! and off; who may record and revoke; purge; the history; survival across a restart; and
//! revocations that take effect for every request that starts after them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mpi_proto::v1 as pb;
use tonic::Code;

use crate::scene::{
    Scene, by_card, clinician, facility, find_request, location, network, operator, person,
    references,
};
use crate::support::{insured, numbers, violations};

const A: &str = "13-0001";
const B: &str = "27-0001";
const C: &str = "14-0001";

/// One patient with a participation in A and B, a treatment and a prescription in A and a
/// check-up in B.
async fn patient_with_records(scene: &Scene) -> (pb::PatientReference, Vec<String>) {
    let card = insured(numbers::KENPO, "7702", "31", "00");
    person(
        scene,
        "p-1",
        "1970-01-30",
        pb::Sex::Male,
        &[(card.clone(), "2010-04-01", "")],
    )
    .await;
    let patient = by_card(card, "", pb::Sex::Unspecified);
    let participations = vec![
        scene.participate(&patient, A).await,
        scene.participate(&patient, B).await,
    ];
    let treat = |kind, reference: &str, fac: &str| {
        location(&patient, fac, kind, "2024-02-01", "", reference)
    };
    scene
        .register(
            &network(A),
            vec![
                treat(pb::RecordKind::Treatment, "a/tx", &facility(13, 1, 1001)),
                treat(pb::RecordKind::Prescription, "a/rx", &facility(13, 4, 1002)),
            ],
        )
        .await
        .unwrap();
    scene
        .register(
            &network(B),
            vec![treat(
                pb::RecordKind::Checkup,
                "b/chk",
                &facility(27, 1, 2001),
            )],
        )
        .await
        .unwrap();
    (patient, participations)
}

fn doctor_c() -> mpi_core::principal::Principal {
    clinician(C, &facility(14, 1, 3001))
}

fn disclosure(
    patient: &pb::PatientReference,
    network_id: &str,
    scope: pb::DisclosureScope,
) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        patient: Some(patient.clone()),
        kind: pb::ConsentKind::Disclosure.into(),
        network_id: network_id.into(),
        scope: Some(scope),
        evidence_reference: "form-7".into(),
        ..Default::default()
    }
}

fn to(recipients: pb::recipients::Recipients) -> Option<pb::Recipients> {
    Some(pb::Recipients {
        recipients: Some(recipients),
    })
}

#[tokio::test]
async fn default_deny_then_each_kind_of_grant() {
    let scene = Scene::start().await;
    let (patient, _) = patient_with_records(&scene).await;
    // Participation alone: the networks' own clinicians see their own network's pointers,
    // nobody else sees anything.
    assert!(scene.find(&doctor_c(), &patient).await.unwrap().is_empty());
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    assert_eq!(
        references(&scene.find(&doctor_a, &patient).await.unwrap()),
        ["a/rx", "a/tx"]
    );

    // A network records a disclosure of its own data to network C.
    let grant = scene
        .record_consent(
            &network(A),
            disclosure(
                &patient,
                "",
                pb::DisclosureScope {
                    recipients: to(pb::recipients::Recipients::Networks(pb::NetworkIds {
                        network_ids: vec![C.into()],
                    })),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    assert_eq!(grant.network_id, A);
    assert_eq!(grant.recorded_by, "network:13-0001");
    assert_eq!(grant.status(), pb::ConsentStatus::Active);
    assert_eq!(
        references(&scene.find(&doctor_c(), &patient).await.unwrap()),
        ["a/rx", "a/tx"]
    );
    // ... which covers network C, not network B's clinicians, and not B's data.
    let doctor_b = clinician(B, &facility(27, 1, 2002));
    assert_eq!(
        references(&scene.find(&doctor_b, &patient).await.unwrap()),
        ["b/chk"]
    );

    // B grants its check-ups to one facility only.
    let listed = facility(14, 1, 3001);
    scene
        .record_consent(
            &network(B),
            disclosure(
                &patient,
                B,
                pb::DisclosureScope {
                    recipients: to(pb::recipients::Recipients::Facilities(pb::FacilityCodes {
                        facility_codes: vec![listed.clone()],
                    })),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        references(&scene.find(&doctor_c(), &patient).await.unwrap()),
        ["a/rx", "a/tx", "b/chk"]
    );
    let other_facility_in_c = clinician(C, &facility(14, 1, 3002));
    assert_eq!(
        references(&scene.find(&other_facility_in_c, &patient).await.unwrap()),
        ["a/rx", "a/tx"]
    );
    // The operator grants everything to any facility.
    scene
        .disclose_all(&patient, A, pb::recipients::Recipients::AnyFacility(true))
        .await;
    let far_away = clinician("40-0001", &facility(40, 1, 4001));
    assert_eq!(
        references(&scene.find(&far_away, &patient).await.unwrap()),
        ["a/rx", "a/tx", "b/chk"]
    );
}

#[tokio::test]
async fn kinds_purposes_and_validity_periods_limit_a_grant() {
    let scene = Scene::start().await;
    let (patient, _) = patient_with_records(&scene).await;
    let any = || to(pb::recipients::Recipients::AnyFacility(true));
    scene
        .record_consent(
            &operator(),
            disclosure(
                &patient,
                A,
                pb::DisclosureScope {
                    recipients: any(),
                    kinds: vec![pb::RecordKind::Prescription.into()],
                    purposes: vec![pb::Purpose::CareCoordination.into()],
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    // Treatment purpose: not covered.
    assert!(scene.find(&doctor_c(), &patient).await.unwrap().is_empty());
    let coordination = pb::FindLocationsRequest {
        purpose: pb::Purpose::CareCoordination.into(),
        ..find_request(&patient)
    };
    assert_eq!(
        references(
            &scene
                .find_with(&doctor_c(), coordination.clone())
                .await
                .unwrap()
        ),
        ["a/rx"]
    );
    // An expired grant and one not yet begun decide nothing.
    let yesterday = (mpi_core::dates::today_in_japan() - chrono::Days::new(1))
        .format("%Y-%m-%d")
        .to_string();
    let tomorrow = (mpi_core::dates::today_in_japan() + chrono::Days::new(1))
        .format("%Y-%m-%d")
        .to_string();
    let expired = scene
        .record_consent(
            &operator(),
            pb::RecordConsentRequest {
                valid_from: "2020-01-01".into(),
                valid_until: yesterday,
                ..disclosure(
                    &patient,
                    B,
                    pb::DisclosureScope {
                        recipients: any(),
                        ..Default::default()
                    },
                )
            },
        )
        .await
        .unwrap();
    assert_eq!(expired.status(), pb::ConsentStatus::Expired);
    scene
        .record_consent(
            &operator(),
            pb::RecordConsentRequest {
                valid_from: tomorrow,
                ..disclosure(
                    &patient,
                    B,
                    pb::DisclosureScope {
                        recipients: any(),
                        ..Default::default()
                    },
                )
            },
        )
        .await
        .unwrap();
    assert_eq!(
        references(&scene.find_with(&doctor_c(), coordination).await.unwrap()),
        ["a/rx"]
    );
    assert!(scene.find(&doctor_c(), &patient).await.unwrap().is_empty());
    // An end before the beginning is refused by field.
    let status = scene
        .record_consent(
            &operator(),
            pb::RecordConsentRequest {
                valid_from: "2025-01-02".into(),
                valid_until: "2025-01-01".into(),
                ..disclosure(
                    &patient,
                    B,
                    pb::DisclosureScope {
                        recipients: any(),
                        ..Default::default()
                    },
                )
            },
        )
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "valid_until");
}

#[tokio::test]
async fn opt_out_beats_every_grant_and_emergency_is_off_by_default() {
    let scene = Scene::start().await;
    let (patient, _) = patient_with_records(&scene).await;
    let emergency = pb::FindLocationsRequest {
        purpose: pb::Purpose::Emergency.into(),
        emergency_reason: "unconscious on arrival".into(),
        ..find_request(&patient)
    };
    // Off by default: the emergency purpose is an ordinary purpose and no grant lists it.
    assert!(
        scene
            .find_with(&doctor_c(), emergency.clone())
            .await
            .unwrap()
            .is_empty()
    );
    scene
        .disclose_all(&patient, A, pb::recipients::Recipients::AnyFacility(true))
        .await;
    // A grant without listed purposes covers every purpose except emergency.
    assert_eq!(scene.find(&doctor_c(), &patient).await.unwrap().len(), 3);
    assert!(
        scene
            .find_with(&doctor_c(), emergency)
            .await
            .unwrap()
            .is_empty()
    );
    let opt_out = scene
        .record_consent(
            &operator(),
            pb::RecordConsentRequest {
                patient: Some(patient.clone()),
                kind: pb::ConsentKind::OptOut.into(),
                evidence_reference: "opt-out form 12".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Nobody sees anything now, the patient's own networks included.
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    assert!(scene.find(&doctor_c(), &patient).await.unwrap().is_empty());
    assert!(scene.find(&doctor_a, &patient).await.unwrap().is_empty());
    // Registration and linking need participation, which an opt-out withdraws.
    let results = scene
        .register(
            &network(A),
            vec![location(
                &patient,
                &facility(13, 1, 1001),
                pb::RecordKind::Treatment,
                "2024-03-01",
                "",
                "a/new",
            )],
        )
        .await
        .unwrap();
    assert_eq!(
        results[0].outcome(),
        pb::RegistrationOutcome::NoParticipationConsent
    );
    // Revoking the opt-out restores the grants.
    scene
        .revoke(&operator(), &opt_out.consent_id, false)
        .await
        .unwrap();
    assert_eq!(scene.find(&doctor_c(), &patient).await.unwrap().len(), 3);
}

#[tokio::test]
async fn emergency_access_when_enabled_needs_a_reason_bypasses_only_the_grant_and_is_audited() {
    let scene = Scene::start_with(true).await;
    let (patient, participations) = patient_with_records(&scene).await;
    let emergency = pb::FindLocationsRequest {
        purpose: pb::Purpose::Emergency.into(),
        emergency_reason: "unconscious on arrival".into(),
        ..find_request(&patient)
    };
    // No grant at all: the emergency bypass shows every participating network's pointers.
    assert!(scene.find(&doctor_c(), &patient).await.unwrap().is_empty());
    assert_eq!(
        references(
            &scene
                .find_with(&doctor_c(), emergency.clone())
                .await
                .unwrap()
        ),
        ["a/rx", "a/tx", "b/chk"]
    );
    // Without a reason it is refused.
    let status = scene
        .find_with(
            &doctor_c(),
            pb::FindLocationsRequest {
                emergency_reason: String::new(),
                ..emergency.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "emergency_reason");
    // Never without participation: B's participation revoked hides B's pointers.
    scene
        .revoke(&operator(), &participations[1], false)
        .await
        .unwrap();
    assert_eq!(
        references(
            &scene
                .find_with(&doctor_c(), emergency.clone())
                .await
                .unwrap()
        ),
        ["a/rx", "a/tx"]
    );
    // Never against an opt-out.
    scene
        .record_consent(
            &operator(),
            pb::RecordConsentRequest {
                patient: Some(patient.clone()),
                kind: pb::ConsentKind::OptOut.into(),
                evidence_reference: "opt-out form 13".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        scene
            .find_with(&doctor_c(), emergency)
            .await
            .unwrap()
            .is_empty()
    );
    // The emergency retrievals are in the audit log with the flag and the reason.
    let entries = scene
        .audit()
        .await
        .access_disclosure(pb::AccessDisclosureRequest {
            patient: Some(patient.clone()),
            purpose: pb::Purpose::PatientRequest.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let flagged: Vec<_> = entries
        .iter()
        .filter(|e| e.emergency)
        .map(|e| (e.emergency_reason.as_str(), e.disclosed))
        .collect();
    assert_eq!(
        flagged,
        [
            ("unconscious on arrival", 3),
            ("unconscious on arrival", 2),
            ("unconscious on arrival", 0)
        ]
    );
}

#[tokio::test]
async fn who_may_record_and_revoke_and_what_a_purge_deletes() {
    let scene = Scene::start().await;
    let (patient, participations) = patient_with_records(&scene).await;
    let any = || to(pb::recipients::Recipients::AnyFacility(true));
    // A network records only participation and disclosure, only for itself.
    for (request, code) in [
        (
            pb::RecordConsentRequest {
                patient: Some(patient.clone()),
                kind: pb::ConsentKind::OptOut.into(),
                evidence_reference: "x".into(),
                ..Default::default()
            },
            Code::PermissionDenied,
        ),
        (
            pb::RecordConsentRequest {
                patient: Some(patient.clone()),
                kind: pb::ConsentKind::Participation.into(),
                network_id: B.into(),
                evidence_reference: "x".into(),
                ..Default::default()
            },
            Code::PermissionDenied,
        ),
        (
            disclosure(
                &patient,
                "",
                pb::DisclosureScope {
                    all_source_networks: true,
                    recipients: any(),
                    ..Default::default()
                },
            ),
            Code::PermissionDenied,
        ),
        (
            pb::RecordConsentRequest {
                evidence_reference: String::new(),
                ..disclosure(
                    &patient,
                    "",
                    pb::DisclosureScope {
                        recipients: any(),
                        ..Default::default()
                    },
                )
            },
            Code::InvalidArgument,
        ),
    ] {
        let status = scene
            .record_consent(&network(A), request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
    // An operator must name the network of a participation; a disclosure needs recipients.
    let status = scene
        .record_consent(
            &operator(),
            pb::RecordConsentRequest {
                patient: Some(patient.clone()),
                kind: pb::ConsentKind::Participation.into(),
                evidence_reference: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "network_id");
    let status = scene
        .record_consent(
            &operator(),
            disclosure(&patient, A, pb::DisclosureScope::default()),
        )
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "scope.recipients");
    // A clinician records nothing.
    let status = scene
        .record_consent(&doctor_c(), disclosure(&patient, A, Default::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // B's participation was recorded by the operator; A's grant by A. B may revoke neither.
    let grant = scene
        .record_consent(
            &network(A),
            disclosure(
                &patient,
                "",
                pb::DisclosureScope {
                    recipients: any(),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    for consent_id in [&grant.consent_id, &participations[0]] {
        let status = scene
            .revoke(&network(B), consent_id, false)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    assert_eq!(
        references(&scene.find(&doctor_c(), &patient).await.unwrap()),
        ["a/rx", "a/tx"]
    );
    // A revokes its own grant; the purge flag is only for participation.
    let status = scene
        .revoke(&network(A), &grant.consent_id, true)
        .await
        .unwrap_err();
    assert_eq!(violations(&status)[0].0, "purge");
    let revoked = scene
        .revoke(&network(A), &grant.consent_id, false)
        .await
        .unwrap();
    assert_eq!(revoked.status(), pb::ConsentStatus::Revoked);
    assert_eq!(revoked.revoked_by, "network:13-0001");
    assert_eq!(revoked.revocation_reason, "the patient withdrew");
    assert!(scene.find(&doctor_c(), &patient).await.unwrap().is_empty());
    let status = scene
        .revoke(&network(A), &grant.consent_id, false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = scene
        .revoke(&operator(), "00000000000000000000000000000000", false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // The operator revokes A's participation with purge: A's pointers are deleted (they stay
    // deleted when a new participation is recorded), B's stay.
    let doctor_a = clinician(A, &facility(13, 1, 1003));
    let purged = scene
        .revoke(&operator(), &participations[0], true)
        .await
        .unwrap();
    assert!(purged.purged);
    assert!(scene.find(&doctor_a, &patient).await.unwrap().is_empty());
    scene.participate(&patient, A).await;
    assert!(scene.find(&doctor_a, &patient).await.unwrap().is_empty());
    let doctor_b = clinician(B, &facility(27, 1, 2002));
    assert_eq!(
        references(&scene.find(&doctor_b, &patient).await.unwrap()),
        ["b/chk"]
    );
    // Without purge, revoking B's participation hides B's pointers; a new participation shows
    // them again (they were never deleted).
    scene
        .revoke(&operator(), &participations[1], false)
        .await
        .unwrap();
    assert!(scene.find(&doctor_b, &patient).await.unwrap().is_empty());
    scene.participate(&patient, B).await;
    assert_eq!(scene.find(&doctor_b, &patient).await.unwrap().len(), 1);

    // The history keeps everything, revoked included, oldest first, and the purge is audited.
    let history = scene
        .consents(&operator())
        .await
        .list_consents(pb::ListConsentsRequest {
            patient: Some(patient.clone()),
            purpose: pb::Purpose::PatientRequest.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .consents;
    let states: Vec<_> = history
        .iter()
        .map(|c| (c.kind(), c.status(), c.purged))
        .collect();
    use pb::ConsentKind as K;
    use pb::ConsentStatus as S;
    assert_eq!(
        states,
        [
            (K::Participation, S::Revoked, true),
            (K::Participation, S::Revoked, false),
            (K::Disclosure, S::Revoked, false),
            (K::Participation, S::Active, false),
            (K::Participation, S::Active, false),
        ]
    );
    let mut audit = scene.audit().await;
    let events: Vec<_> = futures_collect(
        audit
            .export_audit_events(pb::ExportAuditEventsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let purge = events
        .iter()
        .find(|e| e.action == "RevokeConsent" && e.outcome == "PURGED")
        .expect("the purge is audited");
    assert_eq!(purge.count, 2, "two locations deleted");
    assert_eq!(purge.deciding_consent_ids, [participations[0].clone()]);
    assert!(!purge.person_key.is_empty());
    // ListConsents is for operators only.
    let status = scene
        .consents(&network(A))
        .await
        .list_consents(pb::ListConsentsRequest {
            patient: Some(patient.clone()),
            purpose: pb::Purpose::PatientRequest.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

async fn futures_collect(mut stream: tonic::Streaming<pb::AuditEvent>) -> Vec<pb::AuditEvent> {
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn revocations_and_opt_outs_survive_a_restart() {
    let scene = Scene::start().await;
    let (patient, participations) = patient_with_records(&scene).await;
    scene
        .disclose_all(&patient, A, pb::recipients::Recipients::AnyFacility(true))
        .await;
    scene
        .revoke(&operator(), &participations[1], false)
        .await
        .unwrap();
    assert_eq!(
        references(&scene.find(&doctor_c(), &patient).await.unwrap()),
        ["a/rx", "a/tx"]
    );
    let scene = scene.restart().await;
    assert_eq!(
        references(&scene.find(&doctor_c(), &patient).await.unwrap()),
        ["a/rx", "a/tx"]
    );
    scene
        .record_consent(
            &operator(),
            pb::RecordConsentRequest {
                patient: Some(patient.clone()),
                kind: pb::ConsentKind::OptOut.into(),
                evidence_reference: "opt-out form 14".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let scene = scene.restart().await;
    assert!(scene.find(&doctor_c(), &patient).await.unwrap().is_empty());
}

/// What one FindLocations saw, and when it ran.
struct Observation {
    started: Instant,
    finished: Instant,
    found: usize,
}

/// The times of one round: the grant was asked for at `granting` and acknowledged at
/// `granted`; the revocation was asked for at `revoking` and acknowledged at `revoked`.
struct Round {
    granting: Instant,
    granted: Instant,
    revoking: Instant,
    revoked: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_after_a_revocation_sees_the_revoked_pointer_over_1000_rounds() {
    const ROUNDS: usize = 1000;
    const FINDERS: usize = 8;
    let scene = Arc::new(Scene::start().await);
    let (patient, _) = patient_with_records(&scene).await;
    let scope = pb::DisclosureScope {
        recipients: to(pb::recipients::Recipients::Networks(pb::NetworkIds {
            network_ids: vec![C.into()],
        })),
        kinds: vec![pb::RecordKind::Prescription.into()],
        ..Default::default()
    };
    let done = Arc::new(AtomicBool::new(false));
    let mut finders = Vec::new();
    for _ in 0..FINDERS {
        let scene = scene.clone();
        let done = done.clone();
        let patient = patient.clone();
        finders.push(tokio::spawn(async move {
            let mut locator = scene.locator(&doctor_c()).await;
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                seen.push(observe(&mut locator, &patient).await);
            }
            seen
        }));
    }
    let mut consents = scene.consents(&network(A)).await;
    let mut control = scene.locator(&doctor_c()).await;
    let mut observations = Vec::new();
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let granting = Instant::now();
        let grant = consents
            .record_consent(disclosure(&patient, "", scope.clone()))
            .await
            .unwrap()
            .into_inner();
        let granted = Instant::now();
        // One find certainly inside the grant, one certainly after the revocation.
        observations.push(observe(&mut control, &patient).await);
        let revoking = Instant::now();
        consents
            .revoke_consent(pb::RevokeConsentRequest {
                consent_id: grant.consent_id,
                reason: "round over".into(),
                purge: false,
            })
            .await
            .unwrap();
        let revoked = Instant::now();
        observations.push(observe(&mut control, &patient).await);
        rounds.push(Round {
            granting,
            granted,
            revoking,
            revoked,
        });
    }
    done.store(true, Ordering::Relaxed);
    for finder in finders {
        observations.extend(finder.await.unwrap());
    }
    let (mut after_revocation, mut under_grant) = (0, 0);
    for seen in &observations {
        assert!(seen.found <= 1, "only a/rx is ever granted");
        for (index, round) in rounds.iter().enumerate() {
            if seen.started >= round.granted && seen.finished <= round.revoking {
                under_grant += 1;
                assert_eq!(
                    seen.found, 1,
                    "a grant active for the whole request was refused"
                );
            }
            // Started after the revocation was acknowledged, ended before the next grant was
            // asked for: nothing granted the pointer at any moment of the request.
            let next_granting = rounds.get(index + 1).map(|next| next.granting);
            if seen.started >= round.revoked && next_granting.is_none_or(|g| seen.finished <= g) {
                after_revocation += 1;
                assert_eq!(
                    seen.found, 0,
                    "a request after a revocation saw the pointer"
                );
            }
        }
    }
    assert!(after_revocation >= ROUNDS && under_grant >= ROUNDS);
    eprintln!(
        "{ROUNDS} rounds, {} finds: {under_grant} wholly under a grant, {after_revocation} wholly after a revocation",
        observations.len()
    );
}

async fn observe(
    locator: &mut pb::record_locator_client::RecordLocatorClient<tonic::transport::Channel>,
    patient: &pb::PatientReference,
) -> Observation {
    let started = Instant::now();
    let found = locator
        .find_locations(find_request(patient))
        .await
        .unwrap()
        .into_inner()
        .locations
        .len();
    Observation {
        started,
        finished: Instant::now(),
        found,
    }
}
