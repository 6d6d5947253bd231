//! The conformance suite of the `Store` trait. Every implementation invokes
//! [`store_conformance!`] in its tests, so all of them are held to the same behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::NaiveDate;
use mpi_core::keys::PersonKey;
use mpi_core::keys::{DemographicTag, IdentifierKey};
use mpi_core::qualification::ReasonOfLoss;
use mpi_core::store::{
    Attribution, MergeId, MergeOutcome, MergeRequest, QualificationEntry, Store, UnmergeOutcome,
    UpsertOutcome,
};

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
            large_batches_commit_whole,
            merge_moves_the_whole_cluster_and_unmerge_restores_it,
            unmerges_go_in_reverse_order_of_overlapping_merges,
            merge_and_unmerge_refusals,
            audit_rows_append_in_chain_order_with_an_anchored_head,
            audit_index_finds_the_events_of_subjects,
            locations_need_participation_widen_and_withdraw,
            person_view_follows_merges_and_unmerges,
            revoking_participation_cuts_links_and_purge_deletes_locations,
            links_need_participation_and_belong_to_one_subject,
            a_snapshot_reads_one_state_of_the_store,
            every_write_is_seen_by_the_next_retrieval
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

fn attribution(reason: &str) -> Attribution {
    Attribution {
        by: "operator:test".into(),
        at_micros: 1_750_000_000_000_000,
        reason: reason.into(),
    }
}

fn merge(store: &dyn Store, surviving: u8, merged: u8) -> (MergeId, MergeOutcome) {
    let request = MergeRequest {
        merge_id: MergeId::random(),
        surviving_ref: key(surviving),
        merged_ref: key(merged),
        attribution: attribution("same person"),
    };
    (request.merge_id, store.merge_persons(&request).unwrap())
}

fn persons(store: &dyn Store, refs: &[u8]) -> Vec<PersonKey> {
    let keys: Vec<_> = refs.iter().map(|r| key(*r)).collect();
    store
        .persons_of(&keys)
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// Registers one provider reference per byte, each its own person.
fn references(store: &dyn Store, refs: &[u8]) {
    let entries: Vec<_> = refs
        .iter()
        .map(|r| entry(*r, *r, day(2015, 4, 1)))
        .collect();
    store.upsert_qualifications(&entries).unwrap();
}

/// A merge moves every reference of the absorbed person; unmerging restores the clusters
/// exactly, and the record keeps who, when and why.
pub fn merge_moves_the_whole_cluster_and_unmerge_restores_it(store: &dyn Store) {
    references(store, &[101, 102, 103, 104]);
    let before = persons(store, &[101, 102, 103, 104]);
    let (first, outcome) = merge(store, 102, 103);
    assert_eq!(outcome, MergeOutcome::Merged { moved: 1 });
    let (second, outcome) = merge(store, 101, 103);
    assert_eq!(
        outcome,
        MergeOutcome::Merged { moved: 2 },
        "the whole cluster of 103 moves"
    );
    let merged = persons(store, &[101, 102, 103, 104]);
    assert_eq!(merged[..3], [before[0]; 3]);
    assert_eq!(merged[3], before[3], "bystanders are untouched");
    // New records of a merged reference follow its person.
    store
        .upsert_qualifications(&[entry(105, 103, day(2022, 1, 1))])
        .unwrap();
    assert_eq!(persons(store, &[103]), vec![before[0]]);

    let undone = attribution("wrong merge");
    assert_eq!(
        store.unmerge_persons(second, &undone).unwrap(),
        UnmergeOutcome::Unmerged { restored: 2 }
    );
    let after_second = persons(store, &[101, 102, 103]);
    assert_eq!(after_second, vec![before[0], before[1], before[1]]);
    assert_eq!(
        store.unmerge_persons(first, &undone).unwrap(),
        UnmergeOutcome::Unmerged { restored: 1 }
    );
    assert_eq!(persons(store, &[101, 102, 103, 104]), before);

    let record = store.merge(first).unwrap().unwrap();
    assert_eq!(record.merged.reason, "same person");
    assert_eq!(record.unmerged, Some(undone));
    assert_eq!(
        (record.surviving_ref, record.merged_ref),
        (key(102), key(103))
    );
    assert!(store.merge(MergeId([9; 16])).unwrap().is_none());
}

/// A merge cannot be undone while a later standing merge involves its persons.
pub fn unmerges_go_in_reverse_order_of_overlapping_merges(store: &dyn Store) {
    references(store, &[111, 112, 113, 114]);
    let before = persons(store, &[111, 112, 113, 114]);
    let (first, _) = merge(store, 111, 112);
    let (unrelated, _) = merge(store, 113, 114);
    let (second, _) = merge(store, 111, 113);
    let undo = attribution("undo");
    assert_eq!(
        store.unmerge_persons(first, &undo).unwrap(),
        UnmergeOutcome::Superseded { by: second }
    );
    assert_eq!(
        persons(store, &[111, 112, 113, 114]),
        vec![before[0]; 4],
        "a refused unmerge changes nothing"
    );
    assert_eq!(
        store.unmerge_persons(second, &undo).unwrap(),
        UnmergeOutcome::Unmerged { restored: 2 }
    );
    assert_eq!(
        store.unmerge_persons(first, &undo).unwrap(),
        UnmergeOutcome::Unmerged { restored: 1 }
    );
    assert_eq!(
        store.unmerge_persons(unrelated, &undo).unwrap(),
        UnmergeOutcome::Unmerged { restored: 1 }
    );
    assert_eq!(persons(store, &[111, 112, 113, 114]), before);
}

/// Unknown references and merges, repeated merges and unmerges are refused without change.
pub fn merge_and_unmerge_refusals(store: &dyn Store) {
    references(store, &[121, 122]);
    assert_eq!(merge(store, 199, 121).1, MergeOutcome::UnknownSurviving);
    assert_eq!(merge(store, 121, 199).1, MergeOutcome::UnknownMerged);
    let (merged, _) = merge(store, 121, 122);
    assert_eq!(merge(store, 122, 121).1, MergeOutcome::AlreadySame);
    let undo = attribution("undo");
    assert_eq!(
        store.unmerge_persons(MergeId([7; 16]), &undo).unwrap(),
        UnmergeOutcome::UnknownMerge
    );
    assert_eq!(
        store.unmerge_persons(merged, &undo).unwrap(),
        UnmergeOutcome::Unmerged { restored: 1 }
    );
    assert_eq!(
        store.unmerge_persons(merged, &undo).unwrap(),
        UnmergeOutcome::AlreadyUnmerged
    );
}

/// Audit rows are appended only after the anchored head, read back byte for byte, and a
/// misplaced append writes nothing.
pub fn audit_rows_append_in_chain_order_with_an_anchored_head(store: &dyn Store) {
    use mpi_core::audit::{ChainHead, NewAuditEvent, chain, verify};
    use mpi_core::store::AuditRow;
    assert_eq!(store.audit_head().unwrap(), ChainHead::EMPTY);
    let event = |i: u32| NewAuditEvent {
        at_micros: i64::from(i),
        principal: "operator:test".into(),
        action: "VerifyAuditChain".into(),
        purpose: 6,
        person_key: None,
        outcome: "ok".into(),
        count: i,
        emergency: false,
        emergency_reason: String::new(),
        deciding_consents: Vec::new(),
    };
    let (first, head) = chain(ChainHead::EMPTY, (1..=3).map(event).collect());
    let rows: Vec<_> = first.iter().map(AuditRow::of).collect();
    assert_eq!(store.append_audit(&rows, &[]).unwrap(), head);
    assert_eq!(store.audit_head().unwrap(), head);
    // Appending the same rows again, or rows that skip one, is a conflict and writes nothing.
    assert!(matches!(
        store.append_audit(&rows, &[]),
        Err(mpi_core::store::StoreError::Conflict(_))
    ));
    let (later, _) = chain(
        ChainHead {
            sequence: 4,
            hash: head.hash,
        },
        vec![event(5)],
    );
    assert!(store.append_audit(&[AuditRow::of(&later[0])], &[]).is_err());
    assert_eq!(store.audit_head().unwrap(), head);
    let (second, head) = chain(head, (4..=6).map(event).collect());
    store
        .append_audit(&second.iter().map(AuditRow::of).collect::<Vec<_>>(), &[])
        .unwrap();

    let all = store.audit_rows(1, u64::MAX, 100).unwrap();
    assert_eq!(
        all.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(all[0], rows[0]);
    let verification = verify(
        ChainHead::EMPTY,
        all.iter()
            .map(|r| (r.sequence, r.previous_hash, r.content.as_slice(), r.hash)),
        Some(store.audit_head().unwrap()),
    );
    assert!(verification.intact(), "{verification:?}");
    assert_eq!(verification.head, head);
    let whole = mpi_core::audit::verify_store(store, 0, 0).unwrap();
    assert!(whole.intact() && whole.verified == 6, "{whole:?}");
    let middle = mpi_core::audit::verify_store(store, 3, 5).unwrap();
    assert!(middle.intact() && middle.verified == 3, "{middle:?}");
    assert_eq!(store.audit_rows(2, 4, 100).unwrap().len(), 3);
    assert_eq!(store.audit_rows(2, 6, 2).unwrap().len(), 2);
    assert!(store.audit_rows(5, 4, 10).unwrap().is_empty());
}

use mpi_core::consent::{Consent, ConsentGrant, ConsentId, Revocation};
use mpi_core::ids::{FacilityCode, NetworkId};
use mpi_core::location::{Location, LocationId, RecordKind, RecordReference, SubjectLocation};
use mpi_core::store::{
    ConsentHistory, LinkOutcome, RegionalLink, RegisterOutcome, RevokeOutcome, Snapshot, ViewParts,
};

fn network(text: &str) -> NetworkId {
    NetworkId::parse(text).unwrap()
}

const TODAY: (i32, u32, u32) = (2025, 6, 1);

fn today() -> NaiveDate {
    day(TODAY.0, TODAY.1, TODAY.2)
}

fn participation(net: &str) -> Consent {
    Consent {
        id: ConsentId::random(),
        grant: ConsentGrant::Participation {
            network: network(net),
        },
        valid_from: day(2024, 1, 1),
        valid_until: None,
        evidence: "form-1".into(),
        recorded_by: format!("network:{net}"),
        recorded_at_micros: 1,
        revocation: None,
    }
}

/// A treatment record of subject `[subject; 32]` held by facility 3410712362 for network `net`,
/// with one service day, `first`.
pub fn located(subject: u8, net: &str, reference: &str, first: NaiveDate) -> SubjectLocation {
    SubjectLocation {
        subject: key(subject),
        location: Location {
            id: LocationId {
                network: network(net),
                facility: FacilityCode::parse("3410712362").unwrap(),
                kind: RecordKind::Treatment,
                reference: RecordReference::parse(reference).unwrap(),
            },
            first_service: first,
            last_service: first,
            registered_at_micros: 7,
        },
    }
}

fn revocation(purged: bool) -> Revocation {
    Revocation {
        by: "operator:ops".into(),
        at_micros: 9,
        reason: "patient asked".into(),
        purged,
    }
}

/// Persons for references `refs` (each its own insured key).
fn people(store: &dyn Store, refs: &[u8]) {
    let entries: Vec<_> = refs
        .iter()
        .map(|r| entry(r.wrapping_add(100), *r, day(2020, 1, 1)))
        .collect();
    store.upsert_qualifications(&entries).unwrap();
}

fn person_of(store: &dyn Store, reference: u8) -> PersonKey {
    store.persons_of(&[key(reference)]).unwrap()[0].unwrap()
}

/// The audit index finds, per subject, the events that disclosed its data, each once and in
/// order, from a sequence on.
pub fn audit_index_finds_the_events_of_subjects(store: &dyn Store) {
    use mpi_core::audit::{ChainHead, NewAuditEvent, chain};
    use mpi_core::store::AuditRow;
    let event = |i: u32| NewAuditEvent {
        at_micros: i64::from(i),
        principal: "clinician:13-0001:3410712362".into(),
        action: "FindLocations".into(),
        purpose: 1,
        person_key: None,
        outcome: "ok".into(),
        count: i,
        emergency: false,
        emergency_reason: String::new(),
        deciding_consents: Vec::new(),
    };
    let (events, _) = chain(ChainHead::EMPTY, (1..=5).map(event).collect());
    let rows: Vec<_> = events.iter().map(AuditRow::of).collect();
    let index = [
        (1, key(1)),
        (2, key(2)),
        (3, key(1)),
        (3, key(2)),
        (5, key(1)),
    ];
    store.append_audit(&rows, &index).unwrap();
    let sequences = |subjects: &[IdentifierKey], from: u64, limit: usize| {
        store
            .audit_rows_of(subjects, from, limit)
            .unwrap()
            .iter()
            .map(|r| r.sequence)
            .collect::<Vec<_>>()
    };
    assert_eq!(sequences(&[key(1)], 0, 10), [1, 3, 5]);
    assert_eq!(sequences(&[key(1), key(2)], 0, 10), [1, 2, 3, 5]);
    assert_eq!(sequences(&[key(1), key(2)], 3, 10), [3, 5]);
    assert_eq!(sequences(&[key(1), key(2)], 0, 2), [1, 2]);
    assert!(sequences(&[key(3)], 0, 10).is_empty());
    assert_eq!(store.audit_rows_of(&[key(2)], 0, 10).unwrap()[0], rows[1]);
}

/// Registration needs participation for the network, widens an existing location, refuses a
/// location registered for another subject, and withdrawal removes exactly what it names.
pub fn locations_need_participation_widen_and_withdraw(store: &dyn Store) {
    people(store, &[1, 2]);
    let first = located(1, "13-0001", "doc-1", day(2024, 4, 1));
    assert_eq!(
        store
            .register_locations(network("13-0001"), today(), std::slice::from_ref(&first))
            .unwrap(),
        [RegisterOutcome::NoParticipation]
    );
    store
        .record_consents(&[(key(1), participation("13-0001"))])
        .unwrap();
    store
        .record_consents(&[(key(2), participation("13-0001"))])
        .unwrap();
    let later = located(1, "13-0001", "doc-1", day(2024, 9, 30));
    let other = located(1, "13-0001", "doc-2", day(2024, 5, 5));
    let stolen = located(2, "13-0001", "doc-1", day(2024, 5, 5));
    let elsewhere = located(1, "14-0001", "doc-1", day(2024, 5, 5));
    assert_eq!(
        store
            .register_locations(
                network("13-0001"),
                today(),
                &[first.clone(), later, other.clone(), stolen]
            )
            .unwrap(),
        [
            RegisterOutcome::Stored,
            RegisterOutcome::Stored,
            RegisterOutcome::Stored,
            RegisterOutcome::RegisteredForAnother
        ]
    );
    assert_eq!(
        store
            .register_locations(network("14-0001"), today(), &[elsewhere])
            .unwrap(),
        [RegisterOutcome::NoParticipation]
    );
    let view = store
        .person_view(person_of(store, 1), ViewParts::EVERYTHING)
        .unwrap();
    assert_eq!(view.locations.len(), 2);
    let widened = view
        .locations
        .iter()
        .find(|l| l.location.id == first.location.id)
        .unwrap();
    assert_eq!(widened.location.first_service, day(2024, 4, 1));
    assert_eq!(widened.location.last_service, day(2024, 9, 30));
    assert!(
        store
            .person_view(person_of(store, 2), ViewParts::EVERYTHING)
            .unwrap()
            .locations
            .is_empty()
    );
    assert_eq!(
        store
            .withdraw_locations(&[first.location.id.clone(), first.location.id.clone()])
            .unwrap(),
        [true, false]
    );
    let view = store
        .person_view(person_of(store, 1), ViewParts::EVERYTHING)
        .unwrap();
    assert_eq!(*view.locations, [other]);
    // The withdrawn ID is free again, for any subject.
    assert_eq!(
        store
            .register_locations(
                network("13-0001"),
                today(),
                &[located(2, "13-0001", "doc-1", day(2024, 5, 5))]
            )
            .unwrap(),
        [RegisterOutcome::Stored]
    );
}

/// A person's view is the union over its cluster, before, during and after a merge.
pub fn person_view_follows_merges_and_unmerges(store: &dyn Store) {
    people(store, &[1, 2]);
    for subject in [1, 2] {
        store
            .record_consents(&[(key(subject), participation("13-0001"))])
            .unwrap();
    }
    let a = located(1, "13-0001", "doc-a", day(2024, 4, 1));
    let b = located(2, "13-0001", "doc-b", day(2024, 4, 1));
    store
        .register_locations(network("13-0001"), today(), &[a.clone(), b.clone()])
        .unwrap();
    let (merge_id, _) = merge(store, 1, 2);
    let view = store
        .person_view(person_of(store, 1), ViewParts::EVERYTHING)
        .unwrap();
    assert_eq!(view.refs.len(), 2);
    assert_eq!(view.locations.len(), 2);
    assert_eq!(view.consents.len(), 2);
    store
        .unmerge_persons(merge_id, &attribution("wrong"))
        .unwrap();
    assert_eq!(
        store
            .person_view(person_of(store, 1), ViewParts::EVERYTHING)
            .unwrap()
            .locations
            .to_vec(),
        vec![a]
    );
    assert_eq!(
        store
            .person_view(person_of(store, 2), ViewParts::EVERYTHING)
            .unwrap()
            .locations
            .to_vec(),
        vec![b]
    );
}

/// Revoking the last participation for a network cuts its links (locations stay, hidden by
/// the rule); a purge deletes the network's locations too; other networks' data stays.
pub fn revoking_participation_cuts_links_and_purge_deletes_locations(store: &dyn Store) {
    people(store, &[1]);
    let first = participation("13-0001");
    let second = participation("13-0001");
    let other = participation("14-0001");
    store
        .record_consents(&[
            (key(1), first.clone()),
            (key(1), second.clone()),
            (key(1), other.clone()),
        ])
        .unwrap();
    let link = RegionalLink {
        regional_key: key(50),
        network: network("13-0001"),
        subject: key(1),
        sealed_local: vec![1, 2, 3],
    };
    let foreign_link = RegionalLink {
        regional_key: key(51),
        network: network("14-0001"),
        ..link.clone()
    };
    assert_eq!(
        store.link_regional(&link, today()).unwrap(),
        LinkOutcome::Created
    );
    assert_eq!(
        store.link_regional(&foreign_link, today()).unwrap(),
        LinkOutcome::Created
    );
    store
        .register_locations(
            network("13-0001"),
            today(),
            &[located(1, "13-0001", "doc-1", day(2024, 1, 2))],
        )
        .unwrap();
    store
        .register_locations(
            network("14-0001"),
            today(),
            &[located(1, "14-0001", "doc-1", day(2024, 1, 2))],
        )
        .unwrap();
    // Another participation for the network remains: nothing is cut.
    let RevokeOutcome::Revoked {
        consent, links_cut, ..
    } = store
        .revoke_consent(first.id, &revocation(false), today())
        .unwrap()
    else {
        panic!("not revoked")
    };
    assert_eq!(links_cut, 0);
    assert_eq!(consent.revocation, Some(revocation(false)));
    assert_eq!(
        store
            .revoke_consent(first.id, &revocation(false), today())
            .unwrap(),
        RevokeOutcome::AlreadyRevoked
    );
    assert_eq!(
        store
            .revoke_consent(ConsentId([0xee; 16]), &revocation(false), today())
            .unwrap(),
        RevokeOutcome::Unknown
    );
    // The last one goes, with purge: links cut and locations deleted, of that network only.
    let outcome = store
        .revoke_consent(second.id, &revocation(true), today())
        .unwrap();
    assert!(
        matches!(
            outcome,
            RevokeOutcome::Revoked {
                links_cut: 1,
                locations_deleted: 1,
                subject,
                ..
            } if subject == key(1)
        ),
        "{outcome:?}"
    );
    let view = store
        .person_view(person_of(store, 1), ViewParts::EVERYTHING)
        .unwrap();
    assert_eq!(view.links, vec![foreign_link]);
    assert_eq!(view.locations.len(), 1);
    assert_eq!(view.locations[0].location.id.network, network("14-0001"));
    assert_eq!(store.regional_subject(key(50)).unwrap(), None);
    // History is kept: all three consents, two revoked; the disclosure view has the third.
    assert_eq!(view.consents.len(), 3);
    // Each part is read only when asked for, and then as in the whole view.
    for consents in [
        None,
        Some(ConsentHistory::Full),
        Some(ConsentHistory::Unrevoked),
    ] {
        for locations in [false, true] {
            for links in [false, true] {
                let parts = ViewParts {
                    consents,
                    locations,
                    links,
                };
                let part = store.person_view(person_of(store, 1), parts).unwrap();
                assert_eq!(part.refs, view.refs, "{parts:?}");
                let wanted: Vec<Consent> = match consents {
                    None => Vec::new(),
                    Some(ConsentHistory::Full) => view.consents.to_vec(),
                    Some(ConsentHistory::Unrevoked) => view
                        .consents
                        .iter()
                        .filter(|c| c.revocation.is_none())
                        .cloned()
                        .collect(),
                };
                assert_eq!(*part.consents, wanted, "{parts:?}");
                let wanted = if locations {
                    view.locations.to_vec()
                } else {
                    Vec::new()
                };
                assert_eq!(*part.locations, wanted, "{parts:?}");
                let wanted = if links {
                    view.links.clone()
                } else {
                    Vec::new()
                };
                assert_eq!(part.links, wanted, "{parts:?}");
            }
        }
    }
    let unrevoked = store
        .person_view(
            person_of(store, 1),
            ViewParts {
                consents: Some(ConsentHistory::Unrevoked),
                ..ViewParts::EVERYTHING
            },
        )
        .unwrap()
        .consents;
    assert_eq!(
        unrevoked.iter().map(|c| c.id).collect::<Vec<_>>(),
        [other.id]
    );
    assert_eq!(
        view.consents
            .iter()
            .filter(|c| c.revocation.is_some())
            .count(),
        2
    );
    let (subject, stored) = store.consent(second.id).unwrap().unwrap();
    assert_eq!(subject, key(1));
    assert!(stored.revocation.unwrap().purged);
}

/// Regional ID 60 of network 13-0001, linked to subject 1.
fn link_60_to_1() -> RegionalLink {
    RegionalLink {
        regional_key: key(60),
        network: network("13-0001"),
        subject: key(1),
        sealed_local: vec![9; 40],
    }
}

/// Linking needs participation; a regional ID belongs to one subject at a time.
pub fn links_need_participation_and_belong_to_one_subject(store: &dyn Store) {
    people(store, &[1, 2]);
    let link = link_60_to_1();
    assert_eq!(
        store.link_regional(&link, today()).unwrap(),
        LinkOutcome::NoParticipation
    );
    for subject in [1, 2] {
        store
            .record_consents(&[(key(subject), participation("13-0001"))])
            .unwrap();
    }
    assert_eq!(
        store.link_regional(&link, today()).unwrap(),
        LinkOutcome::Created
    );
    assert_eq!(
        store.link_regional(&link, today()).unwrap(),
        LinkOutcome::Unchanged
    );
    let to_other = RegionalLink {
        subject: key(2),
        ..link.clone()
    };
    assert_eq!(
        store.link_regional(&to_other, today()).unwrap(),
        LinkOutcome::LinkedToAnother
    );
    assert_eq!(store.regional_subject(key(60)).unwrap(), Some(key(1)));
    assert_eq!(
        store
            .person_view(person_of(store, 1), ViewParts::EVERYTHING)
            .unwrap()
            .links,
        vec![link]
    );
    assert!(store.unlink_regional(key(60)).unwrap());
    assert!(!store.unlink_regional(key(60)).unwrap());
    assert_eq!(store.regional_subject(key(60)).unwrap(), None);
    assert!(
        store
            .person_view(person_of(store, 1), ViewParts::EVERYTHING)
            .unwrap()
            .links
            .is_empty()
    );
}

/// Everything the four reads of a snapshot return about references 1 and 2, their insured
/// keys and regional ID 60.
fn read_all(reads: &dyn Snapshot) -> impl PartialEq + std::fmt::Debug + use<> {
    let persons = reads.persons_of(&[key(1), key(2)]).unwrap();
    let views: Vec<_> = persons
        .iter()
        .map(|person| {
            reads
                .person_view(person.unwrap(), ViewParts::EVERYTHING)
                .unwrap()
        })
        .collect();
    (
        reads
            .qualifications_by_insured(&[key(101), key(102)])
            .unwrap(),
        persons,
        views,
        reads.regional_subject(key(60)).unwrap(),
    )
}

/// Every read through one snapshot sees the store as it was when the snapshot was taken,
/// whatever commits meanwhile (a merge, a consent, a location, a link, a qualification); the
/// store's own reads see the writes once they are done.
pub fn a_snapshot_reads_one_state_of_the_store(store: &dyn Store) {
    people(store, &[1, 2]);
    store
        .record_consents(&[(key(1), participation("13-0001"))])
        .unwrap();
    let first = located(1, "13-0001", "doc-a", day(2024, 4, 1));
    store
        .register_locations(network("13-0001"), today(), std::slice::from_ref(&first))
        .unwrap();
    let was_one_state = |reads: &dyn Snapshot| {
        let persons = reads.persons_of(&[key(1), key(2)]).unwrap();
        let (person_1, person_2) = (persons[0].unwrap(), persons[1].unwrap());
        assert_ne!(person_1, person_2);
        let view = reads.person_view(person_1, ViewParts::EVERYTHING).unwrap();
        assert_eq!(view.refs, vec![key(1)]);
        assert_eq!(view.locations.len(), 1);
        assert_eq!(view.consents.len(), 1);
        assert!(view.links.is_empty());
    };
    std::thread::scope(|scope| {
        let reads = store.snapshot().unwrap();
        let before = read_all(&*reads);
        let (sent, written) = std::sync::mpsc::channel();
        scope.spawn(move || {
            store
                .upsert_qualifications(&[entry(101, 1, day(2024, 1, 1))])
                .unwrap();
            store
                .record_consents(&[(key(2), participation("13-0001"))])
                .unwrap();
            let second = located(2, "13-0001", "doc-b", day(2024, 5, 1));
            store
                .register_locations(network("13-0001"), today(), &[second])
                .unwrap();
            assert_eq!(
                store.link_regional(&link_60_to_1(), today()).unwrap(),
                LinkOutcome::Created
            );
            assert!(matches!(merge(store, 1, 2).1, MergeOutcome::Merged { .. }));
            sent.send(()).unwrap();
        });
        // A store whose snapshots hold writers off (a read lock) gets to the writes only once
        // `reads` is dropped; one whose snapshots are transactions commits them meanwhile, and
        // the reads below then run after every write.
        let done = written
            .recv_timeout(std::time::Duration::from_millis(500))
            .is_ok();
        assert_eq!(read_all(&*reads), before, "writes done meanwhile: {done}");
        was_one_state(&*reads);
        drop(reads);
        if !done {
            written.recv().unwrap();
        }
    });
    let person = person_of(store, 1);
    assert_eq!(person_of(store, 2), person);
    let view = store.person_view(person, ViewParts::EVERYTHING).unwrap();
    assert_eq!((view.refs.len(), view.locations.len()), (2, 2));
    assert_eq!(view.consents.len(), 2);
    assert_eq!(view.links.len(), 1);
    assert_eq!(
        store.qualifications_by_insured(&[key(101)]).unwrap()[0].len(),
        2
    );
    assert_eq!(store.regional_subject(key(60)).unwrap(), Some(key(1)));
}

/// What FindLocations reads of a person.
const RETRIEVAL: ViewParts = ViewParts {
    consents: Some(ConsentHistory::Unrevoked),
    locations: true,
    links: false,
};

/// What one retrieval, through one snapshot, reads for an insured key, without the store's own
/// person keys (random in each store), so that two stores' retrievals compare: the key's
/// entries (start, reference), and the person of the first entry's reference: its references,
/// unrevoked consents and locations (subject, network, reference, first and last service day).
/// Each list is sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrieval {
    /// The insured key's entries: start, person reference.
    pub entries: Vec<(NaiveDate, IdentifierKey)>,
    /// The person's references.
    pub refs: Vec<IdentifierKey>,
    /// The person's unrevoked consents.
    pub consents: Vec<ConsentId>,
    /// The person's locations: subject, network, reference, first and last service day.
    pub locations: Vec<(IdentifierKey, String, String, NaiveDate, NaiveDate)>,
}

/// What FindLocations reads of `insured` (see [`Retrieval`]).
pub fn retrieval(store: &dyn Store, insured: IdentifierKey) -> Retrieval {
    let reads = store.snapshot().unwrap();
    let found = reads
        .qualifications_by_insured(&[insured])
        .unwrap()
        .remove(0);
    let mut entries: Vec<_> = found.iter().map(|e| (e.start, e.person_ref_key)).collect();
    entries.sort();
    let mut retrieval = Retrieval {
        entries,
        refs: Vec::new(),
        consents: Vec::new(),
        locations: Vec::new(),
    };
    let Some(first) = found.first() else {
        return retrieval;
    };
    let person = reads.persons_of(&[first.person_ref_key]).unwrap()[0].unwrap();
    let view = reads.person_view(person, RETRIEVAL).unwrap();
    retrieval.refs = sorted(view.refs);
    retrieval.consents = sorted(view.consents.iter().map(|c| c.id).collect());
    retrieval.locations = sorted(
        view.locations
            .iter()
            .map(|l| {
                (
                    l.subject,
                    l.location.id.network.to_string(),
                    l.location.id.reference.as_str().to_owned(),
                    l.location.first_service,
                    l.location.last_service,
                )
            })
            .collect(),
    );
    retrieval
}

/// The entries' starts of [`retrieval`] of insured key `[insured; 32]`.
fn starts(store: &dyn Store, insured: u8) -> Vec<NaiveDate> {
    retrieval(store, key(insured))
        .entries
        .iter()
        .map(|(start, _)| *start)
        .collect()
}

/// The locations of a retrieval as (reference, last service day).
fn held(retrieval: &Retrieval) -> Vec<(String, NaiveDate)> {
    retrieval
        .locations
        .iter()
        .map(|(_, _, reference, _, last)| (reference.clone(), *last))
        .collect()
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// A retrieval after each kind of write sees it, though the same retrieval ran just before
/// it (a store that keeps what it read must let each write replace what it changed): new
/// qualification entries and persons, consents recorded and revoked, locations registered,
/// widened, withdrawn and purged, merges and unmerges.
pub fn every_write_is_seen_by_the_next_retrieval(store: &dyn Store) {
    let net = "13-0001";
    let docs = |items: &[(&str, NaiveDate)]| -> Vec<(String, NaiveDate)> {
        items.iter().map(|(r, d)| ((*r).to_owned(), *d)).collect()
    };
    people(store, &[1, 2]);
    assert_eq!(starts(store, 101), [day(2020, 1, 1)]);
    store
        .upsert_qualifications(&[entry(101, 1, day(2024, 1, 1))])
        .unwrap();
    assert_eq!(starts(store, 101), [day(2020, 1, 1), day(2024, 1, 1)]);
    // A reference unknown a moment ago gets its person.
    assert_eq!(store.persons_of(&[key(3)]).unwrap(), [None]);
    people(store, &[3]);
    assert!(store.persons_of(&[key(3)]).unwrap()[0].is_some());

    let first = participation(net);
    store.record_consents(&[(key(1), first.clone())]).unwrap();
    assert_eq!(retrieval(store, key(101)).consents, [first.id]);
    let doc_a = located(1, net, "doc-a", day(2024, 4, 1));
    store
        .register_locations(network(net), today(), std::slice::from_ref(&doc_a))
        .unwrap();
    assert_eq!(
        held(&retrieval(store, key(101))),
        docs(&[("doc-a", day(2024, 4, 1))])
    );
    let mut wider = doc_a.clone();
    wider.location.last_service = day(2024, 8, 1);
    store
        .register_locations(network(net), today(), &[wider])
        .unwrap();
    assert_eq!(
        held(&retrieval(store, key(101))),
        docs(&[("doc-a", day(2024, 8, 1))])
    );
    store
        .withdraw_locations(std::slice::from_ref(&doc_a.location.id))
        .unwrap();
    assert_eq!(held(&retrieval(store, key(101))), docs(&[]));

    let doc_b = located(1, net, "doc-b", day(2024, 5, 1));
    store
        .register_locations(network(net), today(), &[doc_b])
        .unwrap();
    let second = participation(net);
    store.record_consents(&[(key(2), second.clone())]).unwrap();
    let doc_c = located(2, net, "doc-c", day(2024, 6, 1));
    store
        .register_locations(network(net), today(), &[doc_c])
        .unwrap();
    let apart_1 = retrieval(store, key(101));
    let apart_2 = retrieval(store, key(102));
    assert_eq!(held(&apart_2), docs(&[("doc-c", day(2024, 6, 1))]));
    let (merge_id, _) = merge(store, 1, 2);
    for insured in [101, 102] {
        let merged = retrieval(store, key(insured));
        assert_eq!(merged.refs, vec![key(1), key(2)]);
        assert_eq!(merged.consents, sorted(vec![first.id, second.id]));
        assert_eq!(
            held(&merged),
            docs(&[("doc-b", day(2024, 5, 1)), ("doc-c", day(2024, 6, 1))])
        );
    }
    store
        .unmerge_persons(merge_id, &attribution("not the same"))
        .unwrap();
    assert_eq!(retrieval(store, key(101)), apart_1);
    assert_eq!(retrieval(store, key(102)), apart_2);

    let outcome = store
        .revoke_consent(first.id, &revocation(false), today())
        .unwrap();
    assert!(matches!(outcome, RevokeOutcome::Revoked { .. }));
    let revoked = retrieval(store, key(101));
    assert_eq!(revoked.consents, []);
    assert_eq!(
        held(&revoked),
        docs(&[("doc-b", day(2024, 5, 1))]),
        "kept, hidden by the rule"
    );
    // A purge deletes the network's locations of the whole cluster.
    merge(store, 1, 2);
    let third = participation(net);
    store.record_consents(&[(key(1), third.clone())]).unwrap();
    let merged = retrieval(store, key(102));
    assert_eq!(merged.consents, sorted(vec![second.id, third.id]));
    assert_eq!(
        held(&merged),
        docs(&[("doc-b", day(2024, 5, 1)), ("doc-c", day(2024, 6, 1))])
    );
    store
        .revoke_consent(third.id, &revocation(true), today())
        .unwrap();
    assert_eq!(held(&retrieval(store, key(102))), docs(&[]), "purged");
}
