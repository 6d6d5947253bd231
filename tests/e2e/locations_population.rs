//! A synthetic population with record events at facilities of three networks, each registered
//! under the insured ID the person held on its service date, and consents drawn per person.
//! A clinician of a fourth network then asks for every person by today's card: a person who
//! consented to disclosure gets exactly the ground-truth locations (none missing, none extra),
//! anyone else gets nothing.

use std::collections::BTreeSet;

use mpi_proto::v1 as pb;
use mpi_synth::records::{ConsentClass, RecordPlan, plan_records};
use mpi_synth::{Config, Person};
use tokio::task::JoinSet;

use crate::scene::{Scene, by_card, clinician, facility, find_request, network, operator};
use crate::support::{import_population, iso, synth_insured, wire_sex};

const PERSONS: usize = 3000;
/// Requests in flight at once while loading consents and asking.
const IN_FLIGHT: usize = 32;

/// One location as the ground truth and the answer both describe it.
type Pointer = (String, String, i32, String, String);

fn patient_on(person: &Person, holding: usize) -> pb::PatientReference {
    by_card(
        synth_insured(&person.holdings[holding]),
        &iso(person.birth_date),
        wire_sex(person.sex),
    )
}

fn truth(plan: &RecordPlan, person: usize) -> BTreeSet<Pointer> {
    plan.events
        .iter()
        .filter(|e| e.person == person)
        .map(|e| {
            (
                plan.networks[e.network].id.clone(),
                e.facility.clone(),
                i32::from(e.kind),
                iso(e.service_date),
                e.reference.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_locations_returns_exactly_the_ground_truth_for_every_person() {
    let population = mpi_synth::generate(&Config {
        persons: PERSONS,
        seed: 20261201,
        until: mpi_core::dates::today_in_japan(),
    });
    let plan = plan_records(&population, 3, 3, 7);
    let scene = Scene::start().await;
    let imported = import_population(&mut scene.history().await, &population).await;
    assert_eq!(imported.rejected, 0);

    // Consents, recorded by the operator for every person who gave them.
    let consents = scene.consents(&operator()).await;
    let mut requests = Vec::new();
    let networks_by_person = plan.networks_by_person();
    for (index, person) in population.persons.iter().enumerate() {
        let class = plan.consent[index];
        let Some(card) = person.card_on(population.until) else {
            assert_eq!(class, ConsentClass::None);
            continue;
        };
        if class == ConsentClass::None {
            continue;
        }
        let patient = patient_on(person, card);
        for &network_index in &networks_by_person[index] {
            requests.push(pb::RecordConsentRequest {
                patient: Some(patient.clone()),
                kind: pb::ConsentKind::Participation.into(),
                network_id: plan.networks[network_index].id.clone(),
                evidence_reference: format!("form/{}", person.reference),
                ..Default::default()
            });
        }
        if class == ConsentClass::Full {
            requests.push(pb::RecordConsentRequest {
                patient: Some(patient),
                kind: pb::ConsentKind::Disclosure.into(),
                network_id: plan.networks[0].id.clone(),
                scope: Some(pb::DisclosureScope {
                    all_source_networks: true,
                    recipients: Some(pb::Recipients {
                        recipients: Some(pb::recipients::Recipients::AnyFacility(true)),
                    }),
                    ..Default::default()
                }),
                evidence_reference: format!("form/{}", person.reference),
                ..Default::default()
            });
        }
    }
    let consent_count = requests.len();
    for chunk in requests.chunks(IN_FLIGHT) {
        let mut set = JoinSet::new();
        for request in chunk.iter().cloned() {
            let mut client = consents.clone();
            set.spawn(async move { client.record_consent(request).await });
        }
        while let Some(done) = set.join_next().await {
            done.unwrap().unwrap();
        }
    }

    // Each network registers its events, 1,000 per call, by the card valid on the service date.
    let mut stored = 0;
    for (network_index, net) in plan.networks.iter().enumerate() {
        let events: Vec<_> = plan
            .events
            .iter()
            .filter(|e| e.network == network_index)
            .collect();
        let mut locator = scene.locator(&network(&net.id)).await;
        for batch in events.chunks(1000) {
            let items = batch
                .iter()
                .map(|e| pb::LocationRegistration {
                    patient: Some(patient_on(&population.persons[e.person], e.holding)),
                    facility_code: e.facility.clone(),
                    kind: i32::from(e.kind),
                    first_service_date: iso(e.service_date),
                    last_service_date: String::new(),
                    reference: e.reference.clone(),
                    network_id: String::new(),
                })
                .collect();
            let results = locator
                .register_locations(pb::RegisterLocationsRequest { items })
                .await
                .unwrap()
                .into_inner()
                .results;
            for (event, result) in batch.iter().zip(results) {
                let expected = match plan.consent[event.person] {
                    ConsentClass::None => pb::RegistrationOutcome::NoParticipationConsent,
                    _ => pb::RegistrationOutcome::Stored,
                };
                assert_eq!(result.outcome(), expected, "{result:?}");
                stored += usize::from(expected == pb::RegistrationOutcome::Stored);
            }
        }
    }

    // A clinician of a fourth network asks for everyone.
    let doctor = clinician("47-0001", &facility(47, 1, 4701));
    let locator = scene.locator(&doctor).await;
    let asked: Vec<usize> = (0..population.persons.len())
        .filter(|index| {
            population.persons[*index]
                .card_on(population.until)
                .is_some()
        })
        .collect();
    let (mut with_records, mut empty) = (0, 0);
    for chunk in asked.chunks(IN_FLIGHT) {
        let mut set = JoinSet::new();
        for &index in chunk {
            let person = &population.persons[index];
            let request = find_request(&patient_on(
                person,
                person.card_on(population.until).unwrap(),
            ));
            let mut client = locator.clone();
            set.spawn(async move {
                let mut found = Vec::new();
                let mut token = String::new();
                loop {
                    let page = client
                        .find_locations(pb::FindLocationsRequest {
                            page_token: token,
                            ..request.clone()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    found.extend(page.locations);
                    if page.next_page_token.is_empty() {
                        return (index, found);
                    }
                    token = page.next_page_token;
                }
            });
        }
        while let Some(done) = set.join_next().await {
            let (index, found) = done.unwrap();
            let answer: BTreeSet<Pointer> = found
                .into_iter()
                .map(|l| {
                    (
                        l.network_id,
                        l.facility_code,
                        l.kind,
                        l.first_service_date,
                        l.reference,
                    )
                })
                .collect();
            let expected = match plan.consent[index] {
                ConsentClass::Full => truth(&plan, index),
                _ => BTreeSet::new(),
            };
            assert_eq!(
                answer, expected,
                "{} ({:?})",
                population.persons[index].reference, plan.consent[index]
            );
            if expected.is_empty() {
                empty += 1;
            } else {
                with_records += 1;
            }
        }
    }
    assert!(
        with_records > PERSONS / 3 && empty > PERSONS / 20,
        "{with_records} {empty}"
    );
    eprintln!(
        "{PERSONS} persons, {} events, {consent_count} consents, {stored} locations stored; \
         {} persons asked: {with_records} got exactly their locations, {empty} exactly nothing",
        plan.events.len(),
        asked.len()
    );
}
