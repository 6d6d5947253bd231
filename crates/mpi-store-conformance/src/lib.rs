//! The conformance suite of the `Store` trait. Every implementation invokes
//! [`store_conformance!`] in its tests, so all of them are held to the same behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::NaiveDate;
use mpi_core::keys::{DemographicTag, IdentifierKey};
use mpi_core::qualification::ReasonOfLoss;
use mpi_core::store::{QualificationEntry, Store, UpsertOutcome};

/// Generates one `#[test]` per conformance case. `$make` is an expression returning
/// `(store, guard)`, where the guard keeps whatever the store needs alive (a temporary
/// directory) until the test ends.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@cases $make;
            upsert_reports_each_outcome,
            duplicates_in_one_batch_are_unchanged,
            lookup_by_insured_key_is_exact_and_batched,
            person_keys_follow_provider_references,
            empty_batches_are_fine,
            large_batches_commit_whole
        );
    };
    (@cases $make:expr; $($case:ident),*) => {$(
        #[test]
        fn $case() {
            let (store, _guard) = $make;
            $crate::$case(&store);
        }
    )*};
}

fn key(byte: u8) -> IdentifierKey {
    IdentifierKey([byte; 32])
}

fn day(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

fn entry(insured: u8, person: u8, start: NaiveDate) -> QualificationEntry {
    QualificationEntry {
        insured_key: key(insured),
        person_ref_key: key(person),
        start,
        end: None,
        demographic: DemographicTag([person; 16]),
        reason_of_loss: None,
    }
}

/// Inserted, then unchanged on replay, then updated when a value changes.
pub fn upsert_reports_each_outcome(store: &dyn Store) {
    let first = entry(1, 10, day(2015, 4, 1));
    assert_eq!(
        store.upsert_qualifications(&[first]).unwrap(),
        vec![UpsertOutcome::Inserted]
    );
    assert_eq!(
        store.upsert_qualifications(&[first]).unwrap(),
        vec![UpsertOutcome::Unchanged]
    );
    let ended = QualificationEntry {
        end: Some(day(2020, 3, 31)),
        reason_of_loss: Some(ReasonOfLoss::OtherInsurance),
        ..first
    };
    assert_eq!(
        store.upsert_qualifications(&[ended]).unwrap(),
        vec![UpsertOutcome::Updated]
    );
    let stored = store.qualifications_by_insured(&[key(1)]).unwrap();
    assert_eq!(stored, vec![vec![ended]]);
}

/// A batch that names the same entry twice stores it once.
pub fn duplicates_in_one_batch_are_unchanged(store: &dyn Store) {
    let same = entry(2, 20, day(2010, 1, 1));
    let outcomes = store.upsert_qualifications(&[same, same]).unwrap();
    assert_eq!(
        outcomes,
        vec![UpsertOutcome::Inserted, UpsertOutcome::Unchanged]
    );
    assert_eq!(
        store.qualifications_by_insured(&[key(2)]).unwrap()[0].len(),
        1
    );
}

/// Look-ups return exactly the entries of each key, in key order, and nothing for unknown keys.
pub fn lookup_by_insured_key_is_exact_and_batched(store: &dyn Store) {
    let household = [
        entry(3, 31, day(2012, 4, 1)),
        entry(3, 30, day(2009, 4, 1)),
        entry(3, 30, day(2001, 4, 1)),
    ];
    let neighbour = entry(4, 40, day(2012, 4, 1));
    store.upsert_qualifications(&household).unwrap();
    store.upsert_qualifications(&[neighbour]).unwrap();
    let found = store
        .qualifications_by_insured(&[key(3), key(9), key(4)])
        .unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(found[0], vec![household[2], household[1], household[0]]);
    assert!(found[1].is_empty());
    assert_eq!(found[2], vec![neighbour]);
}

/// Every provider reference gets one random person key, stable across batches.
pub fn person_keys_follow_provider_references(store: &dyn Store) {
    store
        .upsert_qualifications(&[entry(5, 50, day(2011, 1, 1)), entry(6, 51, day(2011, 1, 1))])
        .unwrap();
    store
        .upsert_qualifications(&[entry(7, 50, day(2019, 1, 1))])
        .unwrap();
    let persons = store
        .persons_of(&[key(50), key(51), key(52), key(50)])
        .unwrap();
    assert_eq!(persons.len(), 4);
    let (first, second) = (persons[0].unwrap(), persons[1].unwrap());
    assert_ne!(first, second);
    assert_eq!(persons[2], None);
    assert_eq!(persons[3], Some(first));
    assert_ne!(
        first.0, [50; 16],
        "person keys are random, never derived from references"
    );
}

/// Empty batches do nothing and succeed.
pub fn empty_batches_are_fine(store: &dyn Store) {
    assert!(store.upsert_qualifications(&[]).unwrap().is_empty());
    assert!(store.qualifications_by_insured(&[]).unwrap().is_empty());
    assert!(store.persons_of(&[]).unwrap().is_empty());
}

/// A batch of thousands of entries is stored whole.
pub fn large_batches_commit_whole(store: &dyn Store) {
    let entries: Vec<_> = (0..5_000u32)
        .map(|i| {
            let mut insured = [0u8; 32];
            insured[..4].copy_from_slice(&i.to_be_bytes());
            QualificationEntry {
                insured_key: IdentifierKey(insured),
                ..entry(0, 99, day(2020, 1, 1))
            }
        })
        .collect();
    let outcomes = store.upsert_qualifications(&entries).unwrap();
    assert!(outcomes.iter().all(|o| *o == UpsertOutcome::Inserted));
    let keys: Vec<_> = entries.iter().map(|e| e.insured_key).collect();
    let found = store.qualifications_by_insured(&keys).unwrap();
    assert!(found.iter().all(|entries| entries.len() == 1));
}
