//! The redb store, read cache and all, against the memory store (which caches nothing): random
//! sequences of every write a retrieval depends on (qualification entries, consents recorded
//! and revoked with and without purge, registrations, withdrawals, merges and unmerges), each
//! followed by the same retrievals from both (`mpi_store_conformance::retrieval`). A write that left a stale entry in the cache
//! shows as a difference at the next retrieval.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::NaiveDate;
use mpi_core::consent::{Consent, ConsentGrant, ConsentId, Revocation};
use mpi_core::ids::NetworkId;
use mpi_core::keys::{DemographicTag, IdentifierKey};
use mpi_core::store::{Attribution, MergeId, MergeRequest, QualificationEntry, Store};
use mpi_store_conformance::{located, retrieval};
use rand::{Rng, SeedableRng};

const SUBJECTS: u8 = 6;
const NETWORKS: [&str; 2] = ["13-0001", "14-0001"];

fn key(byte: u8) -> IdentifierKey {
    IdentifierKey([byte; 32])
}

fn day(offset: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(u64::from(offset))
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 1).unwrap()
}

fn network(index: usize) -> NetworkId {
    NetworkId::parse(NETWORKS[index]).unwrap()
}

fn attribution() -> Attribution {
    Attribution {
        by: "operator:test".into(),
        at_micros: 1,
        reason: "model".into(),
    }
}

/// One random write, applied to both stores; their answers must agree.
fn step(
    rng: &mut impl Rng,
    stores: [&dyn Store; 2],
    consents: &mut Vec<ConsentId>,
    merges: &mut Vec<MergeId>,
) {
    let subject = rng.random_range(1..=SUBJECTS);
    let net = rng.random_range(0..NETWORKS.len());
    match rng.random_range(0..9) {
        0 => {
            let entry = QualificationEntry {
                insured_key: key(100 + rng.random_range(1..=SUBJECTS)),
                person_ref_key: key(subject),
                start: day(rng.random_range(0..3) * 100),
                end: None,
                demographic: DemographicTag([subject; 16]),
                reason_of_loss: None,
            };
            let [a, b] = stores.map(|s| {
                s.upsert_qualifications(std::slice::from_ref(&entry))
                    .unwrap()
            });
            assert_eq!(a, b);
        }
        1 | 2 => {
            let consent = Consent {
                id: ConsentId::random(),
                grant: ConsentGrant::Participation {
                    network: network(net),
                },
                valid_from: day(0),
                valid_until: None,
                evidence: "form".into(),
                recorded_by: "operator:test".into(),
                recorded_at_micros: rng.random_range(0..1000),
                revocation: None,
            };
            consents.push(consent.id);
            for store in stores {
                store
                    .record_consents(&[(key(subject), consent.clone())])
                    .unwrap();
            }
        }
        3 if !consents.is_empty() => {
            let id = consents.swap_remove(rng.random_range(0..consents.len()));
            let revocation = Revocation {
                by: "operator:test".into(),
                at_micros: 2,
                reason: "asked".into(),
                purged: rng.random_bool(0.4),
            };
            let [a, b] = stores.map(|s| s.revoke_consent(id, &revocation, today()).unwrap());
            assert_eq!(a, b);
        }
        4..=6 => {
            let first = rng.random_range(0..200);
            let doc = format!("doc-{}", rng.random_range(0..8));
            let mut location = located(subject, NETWORKS[net], &doc, day(first));
            location.location.last_service = day(first + rng.random_range(0..30));
            let [a, b] = stores.map(|s| {
                s.register_locations(network(net), today(), std::slice::from_ref(&location))
                    .unwrap()
            });
            assert_eq!(a, b);
        }
        7 => {
            let doc = format!("doc-{}", rng.random_range(0..8));
            let id = located(subject, NETWORKS[net], &doc, day(0)).location.id;
            let [a, b] = stores.map(|s| s.withdraw_locations(std::slice::from_ref(&id)).unwrap());
            assert_eq!(a, b);
        }
        _ if rng.random_bool(0.5) || merges.is_empty() => {
            let request = MergeRequest {
                merge_id: MergeId::random(),
                surviving_ref: key(subject),
                merged_ref: key(rng.random_range(1..=SUBJECTS)),
                attribution: attribution(),
            };
            merges.push(request.merge_id);
            let [a, b] = stores.map(|s| s.merge_persons(&request).unwrap());
            assert_eq!(a, b);
        }
        _ => {
            let id = merges[rng.random_range(0..merges.len())];
            let [a, b] = stores.map(|s| s.unmerge_persons(id, &attribution()).unwrap());
            assert_eq!(a, b);
        }
    }
}

#[test]
fn the_cached_store_answers_every_retrieval_as_the_uncached_one_after_random_writes() {
    for seed in 0..12u64 {
        let dir = tempfile::tempdir().unwrap();
        let cached = mpi_store_redb::RedbStore::open(&dir.path().join("mpi.redb")).unwrap();
        let model = mpi_store_memory::MemoryStore::new();
        let stores: [&dyn Store; 2] = [&cached, &model];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut consents, mut merges) = (Vec::new(), Vec::new());
        for round in 0..120 {
            step(&mut rng, stores, &mut consents, &mut merges);
            for insured in 1..=SUBJECTS {
                assert_eq!(
                    retrieval(&cached, key(100 + insured)),
                    retrieval(&model, key(100 + insured)),
                    "seed {seed}, round {round}, insured {insured}"
                );
            }
        }
        let stats = cached.read_cache_stats();
        assert!(stats.hits > 0 && stats.misses > 0, "{stats:?}");
    }
}
