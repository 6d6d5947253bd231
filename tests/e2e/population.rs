//! A synthetic population of 100,000 persons imported over gRPC, then every insured ID checked
//! against the ground truth on every date of its periods.
//!
//! "Every date" is covered exactly, not sampled: for one insured ID the answer can only change
//! on a day where some period of that ID (of any person) starts or ends, so the days between
//! two such boundaries form classes with one answer each, and the test resolves one day of
//! every class that meets each period.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use mpi_core::keys::{Keyer, PersonKey};
use mpi_core::qualification::{Demographics, InsuredPatient};
use mpi_core::resolution::Resolution;
use mpi_core::service::Mpi;
use mpi_proto::v1 as pb;
use mpi_store_redb::RedbStore;
use mpi_synth::{Config, Holding, Population};
use pb::SamePersonAnswer::*;

use crate::support::*;

const PERSONS: usize = 100_000;

fn horizon() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
}

/// One day in every class of days (see the module comment) that meets each period.
fn probe_days(population: &Population) -> Vec<(usize, usize, NaiveDate)> {
    let mut boundaries: HashMap<String, BTreeSet<NaiveDate>> = HashMap::new();
    for person in &population.persons {
        for holding in &person.holdings {
            let key = holding.insured_id().unwrap().canonical().to_owned();
            let days = boundaries.entry(key).or_default();
            days.insert(holding.start);
            if let Some(end) = holding.end {
                days.insert(end + Days::new(1));
            }
        }
    }
    let mut probes = Vec::new();
    for (p, person) in population.persons.iter().enumerate() {
        for (h, holding) in person.holdings.iter().enumerate() {
            let key = holding.insured_id().unwrap().canonical().to_owned();
            let last = holding.end.unwrap_or(population.until);
            probes.push((p, h, holding.start));
            for day in boundaries[&key]
                .range(holding.start..=last)
                .skip_while(|day| **day == holding.start)
            {
                probes.push((p, h, *day));
            }
        }
    }
    probes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synthetic_population_resolves_exactly_to_its_ground_truth() {
    let population = mpi_synth::generate(&Config {
        persons: PERSONS,
        seed: 20261124,
        until: horizon(),
    });
    let summary = population.summary();
    let server = TestServer::start().await;
    let mut client = server.history("history-provider").await;
    let imported = import_population(&mut client, &population).await;
    assert_eq!(
        (imported.accepted, imported.rejected),
        (summary.records as u64, 0),
        "{:?}",
        imported.rejections
    );

    // Over the wire: each twin's household-level number is ambiguous while shared, and every
    // person's periods are one person (checked here for the first 2,000 persons).
    let mut wire = (0u64, 0u64);
    for person in population.persons.iter().take(2000) {
        let anchor = person.holdings.iter().find(|h| !h.ambiguous_on(h.start));
        let Some(anchor) = anchor else { continue };
        let at_start = |holding: &Holding| synth_at(person, holding, holding.start);
        for holding in &person.holdings {
            let expected = if holding.ambiguous_on(holding.start) {
                Ambiguous
            } else {
                Same
            };
            assert_eq!(
                same(&mut client, at_start(anchor), at_start(holding))
                    .await
                    .unwrap(),
                expected,
                "{}",
                person.reference
            );
            wire.0 += u64::from(expected == Same);
            wire.1 += u64::from(expected == Ambiguous);
        }
    }

    // In process, on the very data directory the server wrote: every period on every class of
    // days resolves to its person, or is ambiguous exactly where the truth says so.
    let data = server.stop().await;
    let dir = data.path().join("data");
    let secret = mpi_server::secret::load_or_create(&dir.join("secret.key")).unwrap();
    let store = RedbStore::open(&dir.join("mpi.redb")).unwrap();
    let mpi = Mpi::new(Arc::new(store), Keyer::new(&secret));
    let probes = tokio::task::spawn_blocking(move || {
        let probes = probe_days(&population);
        let mut owner: HashMap<PersonKey, usize> = HashMap::new();
        let mut counts = [0u64; 3];
        for &(p, h, day) in &probes {
            let person = &population.persons[p];
            let holding = &person.holdings[h];
            let patient = InsuredPatient {
                insured_id: holding.insured_id().unwrap(),
                demographics: Some(Demographics {
                    birth_date: person.birth_date,
                    sex: person.sex,
                }),
            };
            match mpi.resolve(&patient, day).unwrap() {
                Resolution::Person(key) => {
                    assert!(
                        !holding.ambiguous_on(day),
                        "{} on {day} should be ambiguous",
                        person.reference
                    );
                    let first = *owner.entry(key).or_insert(p);
                    assert_eq!(
                        first, p,
                        "{} and {} share a person",
                        population.persons[first].reference, person.reference
                    );
                    counts[0] += 1;
                }
                Resolution::Ambiguous => {
                    assert!(
                        holding.ambiguous_on(day),
                        "{} on {day} is not ambiguous in truth",
                        person.reference
                    );
                    counts[1] += 1;
                }
                Resolution::Unknown => panic!("{} on {day} resolved to nobody", person.reference),
            }
        }
        (probes.len(), counts, owner.len(), population.persons.len())
    })
    .await
    .unwrap();
    let (checks, [resolved, ambiguous, _], distinct, persons) = probes;
    eprintln!(
        "population: {persons} persons, {} records ({} twins, {} insurer changes); \
         {checks} period-days checked in process: {resolved} resolved to their person, {ambiguous} ambiguous as in truth, 0 other; \
         {distinct} distinct persons; over gRPC: {} same, {} ambiguous",
        summary.records, summary.twins, summary.insurer_changes, wire.0, wire.1
    );
    assert!(
        ambiguous > 0 && wire.1 > 0,
        "the population has twins on household numbers"
    );
    assert_eq!(
        distinct, persons,
        "every person resolves, each to a person of their own"
    );
}
