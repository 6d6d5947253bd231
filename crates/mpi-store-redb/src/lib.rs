//! The embedded default `Store`, on redb: ACID across tables, durable when `commit()` returns.
//!
//! Tables (keys and values are bytes from `mpi_core::store::codec`):
//! - `qualifications`: (insured key, person reference key, start day) → (end, demographic tag,
//!   reason of loss);
//! - `persons`: person reference key → person key;
//! - `members`: person key · person reference key → (): each person's cluster of references;
//! - `merges`: merge ID → merge record (what moved, who, when, why, and any unmerge);
//! - `locations`: subject · network · facility · kind · reference digest → location;
//! - `location_index`, in a file of its own beside the first (`location-index.redb`): network ·
//!   facility · kind · reference digest → subject (each ID's claim; see `register_request`),
//!   and `location_index_meta` there: the last `claim_log` sequence the index holds durably;
//! - `claim_log`: sequence → subject · location ID key, the claims of the locations stored since
//!   the index last committed durably, replayed into it on open (see [`CLAIMS_DURABLE_AFTER`]);
//! - `consents`: consent ID → subject · consent; `subject_consents_v3`: subject · consent ID →
//!   revoked flag · consent;
//! - `links`: regional key → subject · network · sealed local ID; `subject_links`: subject ·
//!   regional key → ();
//! - `meta`: schema version, the merge sequence, the cluster epoch (commits that changed a
//!   cluster or its consents, so that a participation gate decided on a snapshot is checked)
//!   and the claim log's last sequence.
//!
//! The audit chain lives in a second file, `audit.redb`, beside the first:
//! - `audit`: sequence → previous hash, hash, event content (the tamper-evident chain);
//! - `audit_head`: the chain head, anchored apart from the events;
//! - `audit_subjects`: sequence → the subjects the event disclosed.
//!
//! Events reach `audit.redb` through an append-only log, `audit-wal/`: a group of events is
//! durable once appended there and synced, and is folded into `audit.redb` in the background
//! (`audit_wal`). The index for access disclosure, subject · sequence → (), lives in a third
//! file, `audit-index.redb`, folded from `audit_subjects` in the background
//! (`disclosure_index`).
//!
//! Identifiers are keyed hashes before they get here; nothing in the file is an identifier in
//! plaintext.

mod audit_wal;
mod combiner;
mod disclosure_index;
mod read_cache;

pub use read_cache::ReadCacheStats;

/// One RegisterLocations call waiting for the writer, with what its caller's thread worked out
/// beforehand so that the writer does not: the items' keys, and the participation gate decided
/// on a read snapshot.
struct RegistrationRequest {
    network: NetworkId,
    today: NaiveDate,
    items: Vec<SubjectLocation>,
    /// Each item's `locations` key.
    keys: Vec<[u8; location::codec::KEY_LEN]>,
    /// Whether each item's subject takes part in `network` on `today`, on the snapshot whose
    /// cluster epoch is `epoch`.
    allowed: Vec<bool>,
    /// The snapshot's `cluster_epoch`. The writer uses `allowed` only if the epoch is still the
    /// same in its transaction, that is if no write that can change a cluster or its consents
    /// committed in between; otherwise it decides again.
    epoch: u64,
}

/// What the first stage of a registration found in the location index for one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The item's subject does not take part (on the snapshot): nothing claimed.
    Skipped,
    /// The ID was free (or claimed by an orphan) and is now claimed for the subject.
    New,
    /// The ID was already the subject's: the stored location's span may widen.
    Ours,
    /// Another subject holds the ID.
    Another,
}

/// A call's claims marked pending; unmarked when the call is done with them.
struct Pending<'a> {
    store: &'a RedbStore,
    ids: Vec<[u8; location::codec::ID_KEY_LEN]>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut marked = self
            .store
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in &self.ids {
            if let Some(count) = marked.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    marked.remove(id);
                }
            }
        }
    }
}

/// The IDs a call claimed (new or already its own), from its location keys and its claims.
fn claimed_ids<'a>(
    keys: &'a [[u8; location::codec::KEY_LEN]],
    claims: &'a [Claim],
) -> impl Iterator<Item = [u8; location::codec::ID_KEY_LEN]> + 'a {
    keys.iter()
        .zip(claims)
        .filter(|(_, claim)| matches!(claim, Claim::New | Claim::Ours))
        .map(|(key, _)| id_of(key))
}

/// The ID part of a location key.
fn id_of(key: &[u8]) -> [u8; location::codec::ID_KEY_LEN] {
    let mut id = [0u8; location::codec::ID_KEY_LEN];
    id.copy_from_slice(&key[32..]);
    id
}

/// The META key counting the commits that changed a cluster or its consents.
const CLUSTER_EPOCH: &str = "cluster_epoch";

/// A counter of a `&str → u64` table of settings (META, the index files' own), 0 if unset.
pub(crate) fn counter(
    meta: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> StoreResult<u64> {
    Ok(meta.get(name).map_err(engine)?.map_or(0, |v| v.value()))
}

fn cluster_epoch(meta: &impl ReadableTable<&'static str, u64>) -> StoreResult<u64> {
    counter(meta, CLUSTER_EPOCH)
}

/// Every write transaction that can change which references form a cluster, or the consents
/// attached to them (merges, unmerges, recorded and revoked consents), calls this before it
/// commits, so that a participation gate decided on an earlier snapshot is decided again.
fn bump_cluster_epoch(txn: &redb::WriteTransaction) -> StoreResult<()> {
    let mut meta = txn.open_table(META).map_err(engine)?;
    let next = cluster_epoch(&meta)? + 1;
    meta.insert(CLUSTER_EPOCH, next).map_err(engine)?;
    Ok(())
}

/// The schema version a snapshot records (`None` for a file never opened).
fn schema_version(txn: &redb::ReadTransaction) -> StoreResult<Option<u64>> {
    Ok(txn
        .open_table(META)
        .map_err(engine)?
        .get("schema_version")
        .map_err(engine)?
        .map(|v| v.value()))
}

/// Moves a version 1 file's location index into `location-index.redb`, in batches, then drops
/// it from the main file and records version 2. Copying is idempotent, so a crash part-way
/// only repeats it at the next open.
fn migrate_location_index(db: &Database, index_db: &Database) -> StoreResult<()> {
    let txn = db.begin_read().map_err(engine)?;
    if schema_version(&txn)? != Some(1) {
        return Ok(());
    }
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = match txn.open_table(LOCATION_INDEX) {
            Ok(old) => {
                let range = match &after {
                    Some(key) => old.range::<&[u8]>((
                        std::ops::Bound::Excluded(key.as_slice()),
                        std::ops::Bound::Unbounded,
                    )),
                    None => old.range::<&[u8]>(..),
                }
                .map_err(engine)?;
                range
                    .take(MIGRATE_ROWS)
                    .map(|item| {
                        let (key, value) = item.map_err(engine)?;
                        Ok((key.value().to_vec(), value.value().to_vec()))
                    })
                    .collect::<StoreResult<_>>()?
            }
            Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
            Err(error) => return Err(engine(error)),
        };
        if rows.is_empty() {
            break;
        }
        let write = index_db.begin_write().map_err(engine)?;
        {
            let mut index = write.open_table(LOCATION_INDEX).map_err(engine)?;
            for (key, value) in &rows {
                index
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(engine)?;
            }
        }
        write.commit().map_err(engine)?;
        after = rows.last().map(|(key, _)| key.clone());
    }
    drop(txn);
    let write = db.begin_write().map_err(engine)?;
    write.delete_table(LOCATION_INDEX).map_err(engine)?;
    write
        .open_table(META)
        .map_err(engine)?
        .insert("schema_version", 2)
        .map_err(engine)?;
    write.commit().map_err(engine)?;
    tracing::info!("moved the location index into location-index.redb (schema version 2)");
    Ok(())
}

/// Marks a version 3 or 4 file as the current version: nothing to copy, since version 3's JSON
/// consents still decode (new ones are written as postcard), and a version 4 file's location
/// index holds every claim durably (its claim log starts empty); the mark keeps older builds
/// from opening the file.
fn mark_current_version(db: &Database) -> StoreResult<()> {
    let txn = db.begin_read().map_err(engine)?;
    if !matches!(schema_version(&txn)?, Some(3 | 4)) {
        return Ok(());
    }
    drop(txn);
    let write = db.begin_write().map_err(engine)?;
    write
        .open_table(META)
        .map_err(engine)?
        .insert("schema_version", SCHEMA_VERSION)
        .map_err(engine)?;
    write.commit().map_err(engine)?;
    tracing::info!(
        schema_version = SCHEMA_VERSION,
        "marked the store with the current schema version"
    );
    Ok(())
}

/// Records in a transaction of the location index, which is to be committed durably, that it
/// holds every claim of the claim log up to `logged`.
fn record_claims_durable_to(txn: &redb::WriteTransaction, logged: u64) -> StoreResult<()> {
    txn.open_table(LOCATION_INDEX_META)
        .map_err(engine)?
        .insert(CLAIMS_DURABLE_TO, logged)
        .map_err(engine)?;
    Ok(())
}

/// Replays into the location index the claim log's entries after its `claims_durable_to`: the
/// claims of the locations stored since the index last committed durably, which a crash took
/// from it if its later commits were not durable. In the index's key order (one walk over its
/// pages), the later of two claims of one ID last, so that an ID claimed again after a
/// withdrawal ends with its latest holder; a claim replayed for a location withdrawn since is
/// an orphan, which registration takes over. Then commits the index durably with the
/// log's last sequence, and deletes the log's entries the index holds durably (those of a
/// withdrawal's durable commit too). Returns the sequence the index holds durably.
fn replay_claims(db: &Database, index_db: &Database) -> StoreResult<u64> {
    let durable_to = {
        let txn = index_db.begin_read().map_err(engine)?;
        counter(
            &txn.open_table(LOCATION_INDEX_META).map_err(engine)?,
            CLAIMS_DURABLE_TO,
        )?
    };
    let txn = db.begin_read().map_err(engine)?;
    let logged = counter(&txn.open_table(META).map_err(engine)?, CLAIM_LOG_SEQUENCE)?;
    let log = txn.open_table(CLAIM_LOG).map_err(engine)?;
    if logged > durable_to {
        let write = index_db.begin_write().map_err(engine)?;
        let mut claims = Vec::new();
        {
            for item in log.range(durable_to + 1..).map_err(engine)? {
                let (_, value) = item.map_err(engine)?;
                let key: [u8; location::codec::KEY_LEN] = value
                    .value()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("claim log entry length".into()))?;
                claims.push(key);
            }
            // In the index's key order, which walks its pages once; stable, so that of two
            // claims of one ID the later one is inserted last.
            claims.sort_by(|a, b| a[32..].cmp(&b[32..]));
            let mut index = write.open_table(LOCATION_INDEX).map_err(engine)?;
            for key in &claims {
                index.insert(&key[32..], &key[..32]).map_err(engine)?;
            }
        }
        record_claims_durable_to(&write, logged)?;
        write.commit().map_err(engine)?;
        tracing::info!(
            claims = claims.len(),
            "replayed the claims of stored locations into the location index"
        );
    }
    let durable_to = durable_to.max(logged);
    let stale = log.first().map_err(engine)?.is_some();
    drop(log);
    drop(txn);
    if stale {
        let trim = db.begin_write().map_err(engine)?;
        trim.open_table(CLAIM_LOG)
            .map_err(engine)?
            .retain_in(..=durable_to, |_, _| false)
            .map_err(engine)?;
        trim.commit().map_err(engine)?;
    }
    Ok(durable_to)
}

/// Builds version 3's `subject_consents_v3` (each subject's consents in full) from `consents`
/// in batches, then drops version 2's ID-only index and records the current version. Copying is
/// idempotent, so a crash part-way only repeats it at the next open.
fn migrate_subject_consents(db: &Database) -> StoreResult<()> {
    let txn = db.begin_read().map_err(engine)?;
    if schema_version(&txn)? != Some(2) {
        return Ok(());
    }
    let consents = txn.open_table(CONSENTS).map_err(engine)?;
    let mut after: Option<Vec<u8>> = None;
    let mut copied = 0usize;
    loop {
        let range = match &after {
            Some(key) => consents.range::<&[u8]>((
                std::ops::Bound::Excluded(key.as_slice()),
                std::ops::Bound::Unbounded,
            )),
            None => consents.range::<&[u8]>(..),
        }
        .map_err(engine)?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = range
            .take(MIGRATE_ROWS)
            .map(|item| {
                let (id, value) = item.map_err(engine)?;
                let (subject, consent) = decode_consent(id.value(), value.value())?;
                Ok((
                    pair_key(&subject.0, &consent.id.0),
                    subject_consent_value(&consent),
                ))
            })
            .collect::<StoreResult<_>>()?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = Some(last[32..].to_vec());
        let write = db.begin_write().map_err(engine)?;
        {
            let mut index = write.open_table(SUBJECT_CONSENTS).map_err(engine)?;
            for (key, value) in &rows {
                index
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(engine)?;
            }
        }
        write.commit().map_err(engine)?;
        copied += rows.len();
    }
    drop(consents);
    drop(txn);
    let write = db.begin_write().map_err(engine)?;
    write.delete_table(SUBJECT_CONSENT_IDS).map_err(engine)?;
    write
        .open_table(META)
        .map_err(engine)?
        .insert("schema_version", SCHEMA_VERSION)
        .map_err(engine)?;
    write.commit().map_err(engine)?;
    tracing::info!(
        consents = copied,
        schema_version = SCHEMA_VERSION,
        "indexed each subject's consents in full"
    );
    Ok(())
}

/// The participation gate for each subject of `items` in `network` on `today`, one cluster
/// lookup per distinct subject.
fn participation_gate(
    persons: &impl ReadableTable<Bytes, Bytes>,
    members: &impl ReadableTable<Bytes, ()>,
    subject_consents: &impl ReadableTable<Bytes, Bytes>,
    subjects: impl Iterator<Item = IdentifierKey>,
    network: NetworkId,
    today: NaiveDate,
) -> StoreResult<Vec<bool>> {
    let mut decided = std::collections::HashMap::new();
    subjects
        .map(|subject| {
            if let Some(allowed) = decided.get(&subject) {
                return Ok(*allowed);
            }
            let (_, found) = cluster_consents(persons, members, subject_consents, subject)?;
            let allowed = consent::participation(&found, network, today).is_some();
            decided.insert(subject, allowed);
            Ok(allowed)
        })
        .collect()
}

use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use mpi_core::audit::ChainHead;
use mpi_core::consent::{self, Consent, ConsentId, Revocation};
use mpi_core::ids::NetworkId;
use mpi_core::keys::{IdentifierKey, PersonKey};
use mpi_core::location::{self, LocationId, SubjectLocation};
use mpi_core::store::codec::{self, QUALIFICATION_KEY_LEN};
use mpi_core::store::{
    Attribution, ConsentHistory, LinkOutcome, MergeId, MergeOutcome, MergeRecord, MergeRequest,
    PersonView, QualificationEntry, RegionalLink, RegisterOutcome, RevokeOutcome, Snapshot, Store,
    StoreError, StoreResult, UnmergeOutcome, UpsertOutcome, ViewParts, revocation_effects,
    superseding_merge,
};
use mpi_core::store::{AuditRow, audit_codec};
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};

const QUALIFICATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("qualifications");
const PERSONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("persons");
const MEMBERS: TableDefinition<&[u8], ()> = TableDefinition::new("members");
const MERGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("merges");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// The chain head, kept apart from the events so that cutting events off the end shows.
const AUDIT_HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_head");
const LOCATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("locations");
const LOCATION_INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("location_index");
/// `location-index.redb`'s own counters: [`CLAIMS_DURABLE_TO`].
const LOCATION_INDEX_META: TableDefinition<&str, u64> = TableDefinition::new("location_index_meta");
/// The claims of stored locations, in the main file (see [`CLAIM_LOG`]'s use in
/// `register_group`): sequence → location ID key · subject.
const CLAIM_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("claim_log");
/// META: the last sequence given to a [`CLAIM_LOG`] entry.
const CLAIM_LOG_SEQUENCE: &str = "claim_log_sequence";
/// LOCATION_INDEX_META: every [`CLAIM_LOG`] entry up to this sequence is durable in the index.
const CLAIMS_DURABLE_TO: &str = "claims_durable_to";
const CONSENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("consents");
/// A subject's consents, keyed by (subject, consent ID): one range read gives every consent of
/// a subject, where looking each one up by ID in `consents` cost a random B-tree walk apiece
/// (the largest single cost of a FindLocations, docs/benchmarks.md). The value is a flag, 1
/// once the consent is revoked (so reads for the disclosure rule skip revoked consents without
/// decoding them), then the consent as `consents` stores it. Schema version 3.
const SUBJECT_CONSENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("subject_consents_v3");
/// Version 2's index of a subject's consents: (subject, consent ID) to the revoked flag alone.
const SUBJECT_CONSENT_IDS: TableDefinition<&[u8], u8> = TableDefinition::new("subject_consents");
const LINKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("links");
const SUBJECT_LINKS: TableDefinition<&[u8], ()> = TableDefinition::new("subject_links");

type Bytes = &'static [u8];

/// `prefix` padded to `len` with zeros and with 0xff: the first and last keys under it.
fn prefix_range(prefix: &[u8], len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut from = prefix.to_vec();
    from.resize(len, 0);
    let mut to = prefix.to_vec();
    to.resize(len, 0xff);
    (from, to)
}

fn key32(bytes: &[u8]) -> StoreResult<IdentifierKey> {
    bytes
        .try_into()
        .map(IdentifierKey)
        .map_err(|_| StoreError::Corrupt("key length".into()))
}

/// The keys under `prefix` in a set-like table, with the prefix cut off.
fn suffixes(
    table: &impl ReadableTable<Bytes, ()>,
    prefix: &[u8],
    len: usize,
) -> StoreResult<Vec<Vec<u8>>> {
    let (from, to) = prefix_range(prefix, len);
    table
        .range(from.as_slice()..=to.as_slice())
        .map_err(engine)?
        .map(|item| {
            let (key, _) = item.map_err(engine)?;
            Ok(key.value()[prefix.len()..].to_vec())
        })
        .collect()
}

fn members_of(
    members: &impl ReadableTable<Bytes, ()>,
    person: PersonKey,
) -> StoreResult<Vec<IdentifierKey>> {
    suffixes(members, &person.0, 48)?
        .iter()
        .map(|suffix| key32(suffix))
        .collect()
}

/// The references of the subject's person (the subject alone if it has none).
fn cluster_of(
    persons: &impl ReadableTable<Bytes, Bytes>,
    members: &impl ReadableTable<Bytes, ()>,
    subject: IdentifierKey,
) -> StoreResult<Vec<IdentifierKey>> {
    match persons.get(subject.0.as_slice()).map_err(engine)? {
        Some(value) => members_of(members, codec::decode_person(value.value())?),
        None => Ok(vec![subject]),
    }
}

fn decode_consent(id: &[u8], value: &[u8]) -> StoreResult<(IdentifierKey, Consent)> {
    let id = ConsentId(
        id.try_into()
            .map_err(|_| StoreError::Corrupt("consent ID length".into()))?,
    );
    if value.len() < 32 {
        return Err(StoreError::Corrupt("consent value too short".into()));
    }
    Ok((
        key32(&value[..32])?,
        consent::codec::decode(id, &value[32..])?,
    ))
}

fn consent_value(subject: IdentifierKey, consent: &Consent) -> Vec<u8> {
    let mut value = subject.0.to_vec();
    value.extend_from_slice(&consent::codec::value(consent));
    value
}

fn subject_consent_value(consent: &Consent) -> Vec<u8> {
    let mut value = vec![u8::from(consent.revocation.is_some())];
    value.extend_from_slice(&consent::codec::value(consent));
    value
}

fn consents_of(
    subject_consents: &impl ReadableTable<Bytes, Bytes>,
    refs: &[IdentifierKey],
    history: ConsentHistory,
) -> StoreResult<Vec<Consent>> {
    let mut found = Vec::new();
    for subject in refs {
        let (from, to) = prefix_range(&subject.0, 48);
        for item in subject_consents
            .range(from.as_slice()..=to.as_slice())
            .map_err(engine)?
        {
            let (key, value) = item.map_err(engine)?;
            let (key, value) = (key.value(), value.value());
            let Some((&revoked, stored)) = value.split_first() else {
                return Err(StoreError::Corrupt("subject consent value empty".into()));
            };
            if history == ConsentHistory::Full || revoked == 0 {
                let id = ConsentId(
                    key[32..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("consent ID length".into()))?,
                );
                found.push(consent::codec::decode(id, stored)?);
            }
        }
    }
    found.sort_by_key(|c| (c.recorded_at_micros, c.id));
    Ok(found)
}

/// The subject's cluster and the cluster's unrevoked consents: what the participation gate and
/// the effects of a revocation are decided on.
fn cluster_consents(
    persons: &impl ReadableTable<Bytes, Bytes>,
    members: &impl ReadableTable<Bytes, ()>,
    subject_consents: &impl ReadableTable<Bytes, Bytes>,
    subject: IdentifierKey,
) -> StoreResult<(Vec<IdentifierKey>, Vec<Consent>)> {
    let cluster = cluster_of(persons, members, subject)?;
    let found = consents_of(subject_consents, &cluster, ConsentHistory::Unrevoked)?;
    Ok((cluster, found))
}

fn locations_of(
    locations: &impl ReadableTable<Bytes, Bytes>,
    subject: IdentifierKey,
) -> StoreResult<Vec<SubjectLocation>> {
    let (from, to) = location::codec::subject_range(subject);
    locations
        .range(from.as_slice()..=to.as_slice())
        .map_err(engine)?
        .map(|item| {
            let (_, value) = item.map_err(engine)?;
            Ok(SubjectLocation {
                subject,
                location: location::codec::decode(value.value())?,
            })
        })
        .collect()
}

fn link_value(link: &RegionalLink) -> Vec<u8> {
    let mut value = link.subject.0.to_vec();
    value.extend_from_slice(link.network.as_str().as_bytes());
    value.extend_from_slice(&link.sealed_local);
    value
}

fn decode_link(regional_key: IdentifierKey, value: &[u8]) -> StoreResult<RegionalLink> {
    if value.len() < 39 {
        return Err(StoreError::Corrupt("link value too short".into()));
    }
    let network = std::str::from_utf8(&value[32..39])
        .ok()
        .and_then(|text| NetworkId::parse(text).ok())
        .ok_or_else(|| StoreError::Corrupt("link network".into()))?;
    Ok(RegionalLink {
        regional_key,
        network,
        subject: key32(&value[..32])?,
        sealed_local: value[39..].to_vec(),
    })
}

fn links_of(
    links: &impl ReadableTable<Bytes, Bytes>,
    subject_links: &impl ReadableTable<Bytes, ()>,
    subject: IdentifierKey,
) -> StoreResult<Vec<RegionalLink>> {
    suffixes(subject_links, &subject.0, 64)?
        .iter()
        .map(|suffix| {
            let regional_key = key32(suffix)?;
            let value = links
                .get(suffix.as_slice())
                .map_err(engine)?
                .ok_or_else(|| StoreError::Corrupt("link index names no link".into()))?;
            decode_link(regional_key, value.value())
        })
        .collect()
}

fn pair_key(first: &[u8], second: &[u8]) -> Vec<u8> {
    [first, second].concat()
}

fn member_key(person: PersonKey, reference: IdentifierKey) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..16].copy_from_slice(&person.0);
    key[16..].copy_from_slice(&reference.0);
    key
}

fn person_of(
    persons: &Table<&[u8], &[u8]>,
    reference: IdentifierKey,
) -> StoreResult<Option<PersonKey>> {
    persons
        .get(reference.0.as_slice())
        .map_err(engine)?
        .map(|value| codec::decode_person(value.value()))
        .transpose()
}

/// Moves references from one person to another, keeping `members` in step.
fn move_refs(
    persons: &mut Table<&[u8], &[u8]>,
    members: &mut Table<&[u8], ()>,
    refs: &[IdentifierKey],
    from: PersonKey,
    to: PersonKey,
) -> StoreResult<()> {
    for reference in refs {
        persons
            .insert(reference.0.as_slice(), to.0.as_slice())
            .map_err(engine)?;
        members
            .remove(member_key(from, *reference).as_slice())
            .map_err(engine)?;
        members
            .insert(member_key(to, *reference).as_slice(), ())
            .map_err(engine)?;
    }
    Ok(())
}

/// Decodes one segment of the audit log (`audit-wal/*.wal`) the way recovery does: the sequence
/// numbers of the frames that parse, in order, and the offset where parsing stopped. For fuzzing
/// and inspecting the format; the store itself also checks the chain when it recovers.
#[doc(hidden)]
pub fn decode_audit_log_segment(bytes: &[u8]) -> (Vec<u64>, usize) {
    let (frames, parsed) = audit_wal::decode_frames(bytes);
    (
        frames.iter().map(|(staged, _)| staged.sequence()).collect(),
        parsed,
    )
}

/// The main file's page cache unless the configuration says otherwise (redb's own default).
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;
/// The read cache unless the configuration says otherwise.
pub const DEFAULT_READ_CACHE_BYTES: u64 = 256 << 20;
/// The page cache of `audit.redb`.
pub const AUDIT_CACHE_BYTES: usize = 32 << 20;
/// The page cache of `audit-index.redb`.
pub const AUDIT_INDEX_CACHE_BYTES: usize = 64 << 20;

/// The on-disk layout version this code reads and writes. Version 4 writes consents as
/// postcard (`consent::codec`); version 3's JSON consents still decode, so a version 3 file is
/// only marked, but an older build refuses a version 4 file instead of failing on its consents.
/// Version 5 keeps the claims of stored locations in `claim_log` until the location index holds
/// them durably (see [`CLAIMS_DURABLE_AFTER`]); a version 4 file is only marked (its index is
/// durable throughout), and an older build, which would not replay the log after a crash,
/// refuses a version 5 file.
pub const SCHEMA_VERSION: u64 = 5;

/// How long the location index's commits may stay non-durable: the first claim transaction
/// after this long since the last durable one is durable, and so makes every commit before it
/// durable too. The claims of every stored location are in `claim_log` (the main file, committed
/// durably with the location) until then, and are replayed into the index on open, so a crash
/// loses none; at 55,000 locations/s that is at most ≈ 550,000 entries to replay, 7–11 s at a
/// million persons (`mpi-bench claim-replay`). The index's keys are random, so its transactions
/// each rewrite about a page per claim: durable every transaction, those pages went to disk
/// again and again, and at a million persons the claims, not the locations, bounded
/// registration; over 10 s most pages are rewritten several times in memory and written out
/// once (1 s was measured too, and gained little: docs/benchmarks.md, "RegisterLocations at a
/// million persons").
const CLAIMS_DURABLE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Location index entries copied per transaction when a version 1 file is migrated.
const MIGRATE_ROWS: usize = 100_000;

/// How long a qualification upsert holds the main file's writer at least before it commits
/// what it has written to let a waiting writer (a consent change, a registration) in. Commits of
/// a large import take seconds at a million persons; without this, a revocation waited for them.
const YIELD_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Entries a qualification upsert writes between two looks at the waiting writers.
const YIELD_CHECK_EVERY: usize = 1024;

/// How long a qualification upsert that committed to let writers in waits for them at most.
const STEP_ASIDE_AT_MOST: std::time::Duration = std::time::Duration::from_millis(20);

/// Gives every reference without a person a fresh one.
fn add_persons(txn: &redb::WriteTransaction, references: &[IdentifierKey]) -> StoreResult<()> {
    let mut persons = txn.open_table(PERSONS).map_err(engine)?;
    let mut members = txn.open_table(MEMBERS).map_err(engine)?;
    for reference in references {
        if persons
            .get(reference.0.as_slice())
            .map_err(engine)?
            .is_none()
        {
            // A reference without a person is a cluster of itself, and so is a new person of
            // that one reference: no cluster changes, no epoch bump.
            let person = PersonKey::random();
            persons
                .insert(reference.0.as_slice(), person.0.as_slice())
                .map_err(engine)?;
            members
                .insert(member_key(person, *reference).as_slice(), ())
                .map_err(engine)?;
        }
    }
    Ok(())
}

/// Gives the calling background thread (`what`, for the log) the nice value `nice` and the idle
/// I/O class, on Linux, where both are per thread: for work that is never on a request's path,
/// so that it yields the one core and the disk to request handling instead of taking an equal
/// share of them while requests queue (docs/benchmarks.md). Failing that, it warns and goes on.
fn yield_to_requests(what: &str, nice: i32) {
    #[cfg(target_os = "linux")]
    {
        if let Err(error) =
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
        {
            tracing::warn!(error = %error, "cannot lower the {what}'s priority");
        }
        if let Err(error) = mpi_os::idle_io_for_this_thread() {
            tracing::warn!(error = %error, "cannot lower the {what}'s I/O class");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (what, nice);
}

fn engine(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Engine(error.into().to_string())
}

/// The redb store: two database files. The main one holds identities, locations, consents and
/// links; the audit chain (events, anchored head, disclosure index) has a file of its own, so
/// that its frequent small group commits neither wait for the main file's writer nor pay for
/// its size.
pub struct RedbStore {
    db: Database,
    /// The location index (location ID → subject) in a file of its own, `location-index.redb`,
    /// so that its writes run beside the main file's instead of in the same transaction.
    index_db: Database,
    /// First stage of RegisterLocations: concurrent calls claim their IDs in one transaction
    /// of the index file.
    claims: combiner::Combiner<Arc<RegistrationRequest>, Vec<Claim>>,
    /// Second stage: concurrent calls store their locations in one transaction of the main
    /// file, while the next calls claim.
    registrations: combiner::Combiner<(Arc<RegistrationRequest>, Vec<Claim>), Vec<RegisterOutcome>>,
    /// IDs claimed by calls whose second stage has not finished (with a count per ID): a claim
    /// without a stored location is an orphan another subject may take over, unless it is here.
    pending: std::sync::Mutex<std::collections::HashMap<[u8; location::codec::ID_KEY_LEN], usize>>,
    /// Registrations hold it shared through both stages; withdrawals and purges, which delete
    /// locations and then their claims, hold it alone.
    exclusive: std::sync::RwLock<()>,
    /// Held while a call decides its participation gate before it waits for the writer.
    preparing: std::sync::Mutex<()>,
    /// When the location index last committed durably (only the claim stage, which runs one
    /// group at a time, takes it).
    claims_durable_at: std::sync::Mutex<std::time::Instant>,
    /// [`CLAIMS_DURABLE_TO`] as last committed: `claim_log` entries up to it are no longer
    /// needed, and the next registration deletes them.
    claims_durable_to: std::sync::atomic::AtomicU64,
    /// How long the location index's commits may stay non-durable ([`CLAIMS_DURABLE_AFTER`];
    /// zero in tests that want every claim transaction durable).
    claims_durable_after: std::time::Duration,
    /// Calls waiting for the main file's writer ([`RedbStore::write`]); a long qualification
    /// upsert commits what it has and lets them in (see [`YIELD_AFTER`]).
    waiting_writers: std::sync::atomic::AtomicUsize,
    /// Decoded results of the main file's hot reads, and the turns its commits take so that no
    /// snapshot reads an entry its own pages disagree with (`read_cache`).
    cache: read_cache::ReadCache,
    audit_db: Arc<Database>,
    /// The audit chain's commit path; dropping it folds what is pending into `audit_db`.
    audit_wal: audit_wal::AuditWal,
    /// Declared last: dropping it stops the folder thread, which holds the audit file too.
    disclosure: disclosure_index::DisclosureIndex,
}

impl RedbStore {
    /// Opens the database at `path`, creating it (and its tables) if missing, and checks that
    /// its layout version is the one this code knows.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with_caches(path, DEFAULT_CACHE_BYTES, DEFAULT_READ_CACHE_BYTES)
    }

    /// [`RedbStore::open`] with `cache_bytes` of page cache for the main file and the location
    /// index (three quarters and a quarter), and about `read_cache_bytes` of decoded results of
    /// the hot reads (a subject's qualifications and person, a person's members, a subject's
    /// unrevoked consents and locations; zero: none). The audit files have small fixed caches
    /// ([`AUDIT_CACHE_BYTES`], [`AUDIT_INDEX_CACHE_BYTES`]): the chain is appended and read in
    /// order, and the index is read a few pages per query. A redb
    /// cache fills up to its size as pages are read and written, so the process's memory grows
    /// with the store until then, and no further.
    pub fn open_with_caches(
        path: &Path,
        cache_bytes: usize,
        read_cache_bytes: u64,
    ) -> StoreResult<Self> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes - cache_bytes / 4)
            .create(path)
            .map_err(engine)?;
        let index_db = redb::Builder::new()
            .set_cache_size(cache_bytes / 4)
            .create(path.with_file_name("location-index.redb"))
            .map_err(engine)?;
        let txn = index_db.begin_write().map_err(engine)?;
        txn.open_table(LOCATION_INDEX).map_err(engine)?;
        txn.open_table(LOCATION_INDEX_META).map_err(engine)?;
        txn.commit().map_err(engine)?;
        let txn = db.begin_write().map_err(engine)?;
        {
            txn.open_table(QUALIFICATIONS).map_err(engine)?;
            txn.open_table(CLAIM_LOG).map_err(engine)?;
            txn.open_table(PERSONS).map_err(engine)?;
            txn.open_table(MEMBERS).map_err(engine)?;
            txn.open_table(MERGES).map_err(engine)?;
            txn.open_table(LOCATIONS).map_err(engine)?;
            txn.open_table(CONSENTS).map_err(engine)?;
            txn.open_table(SUBJECT_CONSENTS).map_err(engine)?;
            txn.open_table(LINKS).map_err(engine)?;
            txn.open_table(SUBJECT_LINKS).map_err(engine)?;
            let mut meta = txn.open_table(META).map_err(engine)?;
            let version = meta
                .get("schema_version")
                .map_err(engine)?
                .map(|v| v.value());
            match version {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(engine)?;
                }
                Some(SCHEMA_VERSION) => {}
                // Version 1 kept the location index in this file; versions 1 and 2 indexed a
                // subject's consents by ID alone; versions 1 to 3 wrote consents as JSON;
                // versions 1 to 4 committed every claim durably and had no claim log.
                Some(1..=4) => {}
                Some(other) => {
                    return Err(StoreError::Engine(format!(
                        "database schema version {other} is not {SCHEMA_VERSION}"
                    )));
                }
            }
        }
        txn.commit().map_err(engine)?;
        migrate_location_index(&db, &index_db)?;
        migrate_subject_consents(&db)?;
        mark_current_version(&db)?;
        let claims_durable_to = replay_claims(&db, &index_db)?;
        let audit_db = Arc::new(
            redb::Builder::new()
                .set_cache_size(AUDIT_CACHE_BYTES)
                .create(Self::audit_path(path))
                .map_err(engine)?,
        );
        let txn = audit_db.begin_write().map_err(engine)?;
        {
            txn.open_table(AUDIT).map_err(engine)?;
            txn.open_table(AUDIT_HEAD).map_err(engine)?;
            txn.open_table(disclosure_index::AUDIT_SUBJECTS)
                .map_err(engine)?;
        }
        txn.commit().map_err(engine)?;
        let audit_wal =
            audit_wal::AuditWal::open(&path.with_file_name("audit-wal"), audit_db.clone())?;
        let disclosure = disclosure_index::DisclosureIndex::open(
            &path.with_file_name("audit-index.redb"),
            audit_db.clone(),
        )?;
        Ok(Self {
            db,
            index_db,
            claims: combiner::Combiner::default(),
            registrations: combiner::Combiner::default(),
            pending: std::sync::Mutex::default(),
            exclusive: std::sync::RwLock::default(),
            preparing: std::sync::Mutex::new(()),
            claims_durable_at: std::sync::Mutex::new(std::time::Instant::now()),
            claims_durable_to: std::sync::atomic::AtomicU64::new(claims_durable_to),
            claims_durable_after: CLAIMS_DURABLE_AFTER,
            waiting_writers: std::sync::atomic::AtomicUsize::new(0),
            cache: read_cache::ReadCache::new(read_cache_bytes),
            audit_db,
            audit_wal,
            disclosure,
        })
    }

    /// Works out, on the caller's thread, what the writer would otherwise: keys, and the
    /// participation gate on a read snapshot (see [`RegistrationRequest::epoch`]).
    fn prepare_registration(
        &self,
        network: NetworkId,
        today: NaiveDate,
        items: &[SubjectLocation],
    ) -> StoreResult<RegistrationRequest> {
        let keys = items
            .iter()
            .map(|item| location::codec::key(item.subject, &item.location.id))
            .collect();
        let txn = self.db.begin_read().map_err(engine)?;
        let epoch = cluster_epoch(&txn.open_table(META).map_err(engine)?)?;
        let allowed = participation_gate(
            &txn.open_table(PERSONS).map_err(engine)?,
            &txn.open_table(MEMBERS).map_err(engine)?,
            &txn.open_table(SUBJECT_CONSENTS).map_err(engine)?,
            items.iter().map(|item| item.subject),
            network,
            today,
        )?;
        Ok(RegistrationRequest {
            network,
            today,
            items: items.to_vec(),
            keys,
            allowed,
            epoch,
        })
    }

    /// First stage of registration: claims the IDs of several calls' allowed items in one
    /// transaction of the index file, in key order. An ID held by another subject is theirs,
    /// unless that claim is an orphan: no location stored for it and no call still storing it
    /// (a withdrawal, purge or failed call deletes the location before its claim).
    fn claim_group(&self, group: &[Arc<RegistrationRequest>]) -> StoreResult<Vec<Vec<Claim>>> {
        let mut order: Vec<(&[u8], usize, usize)> = Vec::new();
        for (call, request) in group.iter().enumerate() {
            for (index, key) in request.keys.iter().enumerate() {
                if request.allowed[index] {
                    order.push((&key[32..], call, index));
                }
            }
        }
        order.sort_unstable();
        let mut claims: Vec<Vec<Claim>> = group
            .iter()
            .map(|request| vec![Claim::Skipped; request.items.len()])
            .collect();
        let mut claimed_here = std::collections::HashSet::new();
        let mut txn = self.index_db.begin_write().map_err(engine)?;
        // Durable at most every `claims_durable_after`: a claim only has to be durable once its
        // location is stored, and the store stage logs it with the location (`claim_log`).
        let durable_at = self
            .claims_durable_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let durable_to = if durable_at.elapsed() >= self.claims_durable_after {
            // Every log entry committed by now names a claim committed to this file before it
            // (a call's claims commit before its locations and their log entries), which this
            // durable commit makes durable with everything before it.
            Some(self.claims_logged()?)
        } else {
            txn.set_durability(redb::Durability::None).map_err(engine)?;
            None
        };
        drop(durable_at);
        {
            let mut index = txn.open_table(LOCATION_INDEX).map_err(engine)?;
            for (id_key, call, position) in order {
                let subject = group[call].items[position].subject;
                // One descent of the tree for the common case, an ID nobody holds: the insert
                // answers what it replaced, and another subject's standing claim is put back.
                let previous = index
                    .insert(id_key, subject.0.as_slice())
                    .map_err(engine)?
                    .map(|value| key32(value.value()))
                    .transpose()?;
                let claim = match previous {
                    None => Claim::New,
                    Some(owner) if owner == subject => Claim::Ours,
                    Some(owner) => {
                        if claimed_here.contains(id_key) || self.is_live_claim(owner, id_key)? {
                            index.insert(id_key, owner.0.as_slice()).map_err(engine)?;
                            Claim::Another
                        } else {
                            Claim::New
                        }
                    }
                };
                // Claimed in this group, new or already held (perhaps as an orphan): another
                // subject's item later in the group must not take it over.
                if claim != Claim::Another {
                    claimed_here.insert(id_key);
                }
                claims[call][position] = claim;
            }
        }
        if let Some(logged) = durable_to {
            record_claims_durable_to(&txn, logged)?;
        }
        txn.commit().map_err(engine)?;
        if let Some(logged) = durable_to {
            self.claims_durable(logged);
        }
        Ok(claims)
    }

    /// Commits the location index durably with every claim logged so far, if it does not hold
    /// them durably yet (a clean close, so that the next open replays nothing).
    fn make_claims_durable(&self) -> StoreResult<()> {
        let durable_to = self
            .claims_durable_to
            .load(std::sync::atomic::Ordering::Acquire);
        if self.claims_logged()? <= durable_to {
            return Ok(());
        }
        self.release_claims(std::iter::empty())
    }

    /// The claim log's last sequence, as committed.
    fn claims_logged(&self) -> StoreResult<u64> {
        let read = self.db.begin_read().map_err(engine)?;
        counter(&read.open_table(META).map_err(engine)?, CLAIM_LOG_SEQUENCE)
    }

    /// Notes that the location index committed durably with [`CLAIMS_DURABLE_TO`] `logged`.
    fn claims_durable(&self, logged: u64) {
        *self
            .claims_durable_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
        self.claims_durable_to
            .fetch_max(logged, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether `owner`'s claim on `id_key` stands: a call is still storing it, or its location
    /// is stored. Pending claims are looked at first, and the main file read after, so that a
    /// call finishing in between is seen in one or the other.
    fn is_live_claim(&self, owner: IdentifierKey, id_key: &[u8]) -> StoreResult<bool> {
        if self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(id_key)
        {
            return Ok(true);
        }
        let mut key = [0u8; location::codec::KEY_LEN];
        key[..32].copy_from_slice(&owner.0);
        key[32..].copy_from_slice(id_key);
        let txn = self.db.begin_read().map_err(engine)?;
        let locations = txn.open_table(LOCATIONS).map_err(engine)?;
        Ok(locations.get(key.as_slice()).map_err(engine)?.is_some())
    }

    /// Second stage: stores the claimed locations of several calls in one transaction of the
    /// main file (all of them or none), in key order across the calls. The participation gate
    /// decided on the snapshot stands if no cluster or consent changed since; otherwise it is
    /// decided again here, and an item no longer allowed is not stored (its claim is left as
    /// an orphan).
    fn register_group(
        &self,
        group: &[(Arc<RegistrationRequest>, Vec<Claim>)],
    ) -> StoreResult<Vec<Vec<RegisterOutcome>>> {
        let mut order: Vec<(&[u8], usize, usize)> = Vec::new();
        for (call, (request, _)) in group.iter().enumerate() {
            for (index, key) in request.keys.iter().enumerate() {
                order.push((key.as_slice(), call, index));
            }
        }
        order.sort_unstable();
        let mut outcomes: Vec<Vec<RegisterOutcome>> = group
            .iter()
            .map(|(request, _)| vec![RegisterOutcome::NoParticipation; request.items.len()])
            .collect();
        let txn = self.write()?;
        let changed;
        {
            let epoch = cluster_epoch(&txn.open_table(META).map_err(engine)?)?;
            let mut gates: Vec<std::borrow::Cow<'_, [bool]>> = Vec::with_capacity(group.len());
            for (request, _) in group {
                if request.epoch == epoch {
                    gates.push(std::borrow::Cow::Borrowed(request.allowed.as_slice()));
                } else {
                    // A cluster or consent changed since the snapshot: decide on this one.
                    gates.push(std::borrow::Cow::Owned(participation_gate(
                        &txn.open_table(PERSONS).map_err(engine)?,
                        &txn.open_table(MEMBERS).map_err(engine)?,
                        &txn.open_table(SUBJECT_CONSENTS).map_err(engine)?,
                        request.items.iter().map(|item| item.subject),
                        request.network,
                        request.today,
                    )?));
                }
            }
            let mut locations = txn.open_table(LOCATIONS).map_err(engine)?;
            let mut meta = txn.open_table(META).map_err(engine)?;
            let mut claim_log = txn.open_table(CLAIM_LOG).map_err(engine)?;
            let mut sequence = counter(&meta, CLAIM_LOG_SEQUENCE)?;
            let mut stored_for = Vec::new();
            for (key, call, index) in order {
                let (request, claims) = &group[call];
                let item = &request.items[index];
                match claims[index] {
                    Claim::Skipped => continue,
                    Claim::Another => {
                        outcomes[call][index] = RegisterOutcome::RegisteredForAnother;
                        continue;
                    }
                    Claim::New | Claim::Ours if !gates[call][index] => continue,
                    Claim::New | Claim::Ours => {}
                }
                let mut stored = std::borrow::Cow::Borrowed(&item.location);
                // The subject held the ID already: only then is there a span to widen.
                if claims[index] == Claim::Ours
                    && let Some(existing) = locations.get(key).map_err(engine)?
                {
                    let mut widened = location::codec::decode(existing.value())?;
                    widened.widen(&item.location);
                    stored = std::borrow::Cow::Owned(widened);
                }
                locations
                    .insert(key, location::codec::value(&stored).as_slice())
                    .map_err(engine)?;
                // The claim may not be durable in the index yet: logged with the location, it
                // is replayed on open if a crash took it (`replay_claims`).
                sequence += 1;
                claim_log.insert(sequence, key).map_err(engine)?;
                outcomes[call][index] = RegisterOutcome::Stored;
                stored_for.push(item.subject);
            }
            meta.insert(CLAIM_LOG_SEQUENCE, sequence).map_err(engine)?;
            // Entries the index now holds durably are no longer needed.
            let durable_to = self
                .claims_durable_to
                .load(std::sync::atomic::Ordering::Acquire);
            claim_log
                .retain_in(..=durable_to, |_, _| false)
                .map_err(engine)?;
            stored_for.dedup();
            changed = read_cache::Changed::keys(stored_for);
        }
        txn.commit(&changed)?;
        Ok(outcomes)
    }

    /// Both stages for one call, holding `exclusive` shared and its claims in `pending` until
    /// the second stage has finished, whatever its result.
    fn register_request(&self, request: RegistrationRequest) -> StoreResult<Vec<RegisterOutcome>> {
        let _registering = self
            .exclusive
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let request = Arc::new(request);
        let mut pending = Pending {
            store: self,
            ids: Vec::new(),
        };
        let claims = self.claims.run(request.clone(), |group| {
            let claims = self.claim_group(group)?;
            // Marked pending before any call of the group moves on (the combiner answers them
            // all after this returns).
            let mut marked = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (call, found) in group.iter().zip(&claims) {
                for id in claimed_ids(&call.keys, found) {
                    *marked.entry(id).or_insert(0) += 1;
                }
            }
            Ok(claims)
        })?;
        pending.ids.extend(claimed_ids(&request.keys, &claims));
        self.registrations
            .run((request, claims), |group| self.register_group(group))
    }

    /// Deletes claims from the index file, after their locations left the main file (callers
    /// hold `exclusive` alone), durably. No registration is between its stages then, so every
    /// claim log entry names a claim the index already holds, and this commit makes them all
    /// durable: it records so, and the next registration deletes those entries (none is
    /// replayed, so a claim of a location deleted here does not come back as an orphan).
    fn release_claims(
        &self,
        id_keys: impl Iterator<Item = [u8; location::codec::ID_KEY_LEN]>,
    ) -> StoreResult<()> {
        let logged = self.claims_logged()?;
        let txn = self.index_db.begin_write().map_err(engine)?;
        {
            let mut index = txn.open_table(LOCATION_INDEX).map_err(engine)?;
            for id_key in id_keys {
                index.remove(id_key.as_slice()).map_err(engine)?;
            }
        }
        record_claims_durable_to(&txn, logged)?;
        txn.commit().map_err(engine)?;
        self.claims_durable(logged);
        Ok(())
    }

    /// A read transaction of the main file, with the read cache.
    fn read(&self) -> StoreResult<RedbSnapshot<'_>> {
        // The tag first: the transaction then holds every commit up to it.
        let tag = self.cache.tag();
        let txn = self.db.begin_read().map_err(engine)?;
        Ok(RedbSnapshot {
            txn,
            cache: &self.cache,
            tag,
        })
    }

    /// A write transaction of the main file with its turn to commit, not counted as waiting.
    fn begin_main_write(&self) -> StoreResult<MainWrite<'_>> {
        let turn = self.cache.turn();
        let txn = self.db.begin_write().map_err(engine)?;
        Ok(MainWrite { txn, turn })
    }

    /// A write transaction of the main file, counted in `waiting_writers` while it waits.
    fn write(&self) -> StoreResult<MainWrite<'_>> {
        use std::sync::atomic::Ordering;
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting_writers.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting_writers);
        self.begin_main_write()
    }

    /// Upserts `entries` in key order, in one transaction unless another writer waits once
    /// the transaction has been open for `yield_after`: then it commits the entries written so
    /// far (with their persons), lets the waiting writers in, and goes on in a new transaction.
    /// Returns the outcomes and the number of transactions committed.
    fn upsert_in_pieces(
        &self,
        entries: &[QualificationEntry],
        yield_after: std::time::Duration,
    ) -> StoreResult<(Vec<UpsertOutcome>, usize)> {
        // Keys are keyed hashes, so a batch lands all over the B-tree. Writing it in key order
        // touches each page once per transaction, while it is hot; the stable sort keeps a
        // later duplicate after the earlier one, so it is still reported `Unchanged`.
        let keys: Vec<_> = entries.iter().map(codec::qualification_key).collect();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
        let mut outcomes = vec![UpsertOutcome::Unchanged; entries.len()];
        let mut rest = order.as_slice();
        let mut pieces = 0;
        loop {
            // Not counted as waiting: the import is the writer that makes room for the others.
            let txn = self.begin_main_write()?;
            let opened = std::time::Instant::now();
            let mut written = 0;
            let changed;
            {
                let mut qualifications = txn.open_table(QUALIFICATIONS).map_err(engine)?;
                for &index in rest {
                    if written > 0
                        && written % YIELD_CHECK_EVERY == 0
                        && self.others_wait()
                        && opened.elapsed() >= yield_after
                    {
                        break;
                    }
                    let value = codec::qualification_value(&entries[index]);
                    let previous = qualifications
                        .insert(keys[index].as_slice(), value.as_slice())
                        .map_err(engine)?;
                    outcomes[index] = match previous {
                        None => UpsertOutcome::Inserted,
                        Some(old) if old.value() == value.as_slice() => UpsertOutcome::Unchanged,
                        Some(_) => UpsertOutcome::Updated,
                    };
                    written += 1;
                }
                let (piece, after) = rest.split_at(written);
                let mut references: Vec<IdentifierKey> = piece
                    .iter()
                    .map(|&index| entries[index].person_ref_key)
                    .collect();
                references.sort_unstable();
                references.dedup();
                add_persons(&txn, &references)?;
                changed = read_cache::Changed::keys(
                    piece
                        .iter()
                        .map(|&index| entries[index].insured_key)
                        .chain(references),
                );
                rest = after;
            }
            // Dropping an uncommitted transaction aborts it, so an error above stores nothing
            // of this piece (earlier pieces stay stored; upserts are idempotent).
            txn.commit(&changed)?;
            pieces += 1;
            if rest.is_empty() {
                return Ok((outcomes, pieces));
            }
            // redb's writer lock is not handed over in order: step aside until the waiting
            // writers are in (or a moment has passed, so that a stream of them cannot starve
            // the import).
            let stepped_aside = std::time::Instant::now();
            while self.others_wait() && stepped_aside.elapsed() < STEP_ASIDE_AT_MOST {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }

    /// Whether a call waits for the main file's writer.
    fn others_wait(&self) -> bool {
        self.waiting_writers
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    }

    /// What the read cache has done and holds (for the server's metrics).
    pub fn read_cache_stats(&self) -> ReadCacheStats {
        self.cache.stats()
    }

    /// Bytes of the main file's pages in use (the file itself grows in large steps ahead of
    /// its contents). Takes a write transaction, so it waits for any writer; it writes nothing.
    pub fn allocated_bytes(&self) -> StoreResult<u64> {
        let mut bytes = 0;
        for db in [&self.db, &self.index_db] {
            let txn = db.begin_write().map_err(engine)?;
            let stats = txn.stats().map_err(engine)?;
            bytes += stats.allocated_pages() * stats.page_size() as u64;
            txn.abort().map_err(engine)?;
        }
        Ok(bytes)
    }

    /// The audit chain's file beside the main one: `audit.redb` next to `mpi.redb`.
    pub fn audit_path(path: &Path) -> std::path::PathBuf {
        path.with_file_name("audit.redb")
    }
}

impl Drop for RedbStore {
    /// A clean close leaves the location index durable with every logged claim (no call is in
    /// flight once the store is dropped), so the next open has no claim to replay.
    fn drop(&mut self) {
        if let Err(error) = self.make_claims_durable() {
            tracing::warn!(
                %error,
                "the location index could not be made durable on close; its claims are replayed at the next open"
            );
        }
    }
}

impl Store for RedbStore {
    fn snapshot(&self) -> StoreResult<Box<dyn Snapshot + '_>> {
        Ok(Box::new(self.read()?))
    }

    fn qualifications_by_insured(
        &self,
        insured_keys: &[IdentifierKey],
    ) -> StoreResult<Vec<Vec<QualificationEntry>>> {
        self.read()?.qualifications_by_insured(insured_keys)
    }

    fn persons_of(&self, person_ref_keys: &[IdentifierKey]) -> StoreResult<Vec<Option<PersonKey>>> {
        self.read()?.persons_of(person_ref_keys)
    }

    fn person_view(&self, person: PersonKey, parts: ViewParts) -> StoreResult<PersonView> {
        self.read()?.person_view(person, parts)
    }

    fn regional_subject(&self, regional_key: IdentifierKey) -> StoreResult<Option<IdentifierKey>> {
        self.read()?.regional_subject(regional_key)
    }

    fn upsert_qualifications(
        &self,
        entries: &[QualificationEntry],
    ) -> StoreResult<Vec<UpsertOutcome>> {
        Ok(self.upsert_in_pieces(entries, YIELD_AFTER)?.0)
    }

    fn merge_persons(&self, request: &MergeRequest) -> StoreResult<MergeOutcome> {
        let txn = self.write()?;
        let outcome = {
            let mut persons = txn.open_table(PERSONS).map_err(engine)?;
            let mut members = txn.open_table(MEMBERS).map_err(engine)?;
            let Some(surviving_person) = person_of(&persons, request.surviving_ref)? else {
                return Ok(MergeOutcome::UnknownSurviving);
            };
            let Some(merged_person) = person_of(&persons, request.merged_ref)? else {
                return Ok(MergeOutcome::UnknownMerged);
            };
            if surviving_person == merged_person {
                return Ok(MergeOutcome::AlreadySame);
            }
            let from = member_key(merged_person, IdentifierKey([0; 32]));
            let to = member_key(merged_person, IdentifierKey([0xff; 32]));
            let moved_refs = members
                .range(from.as_slice()..=to.as_slice())
                .map_err(engine)?
                .map(|item| {
                    let (key, _) = item.map_err(engine)?;
                    let mut reference = [0u8; 32];
                    reference.copy_from_slice(&key.value()[16..]);
                    Ok(IdentifierKey(reference))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            move_refs(
                &mut persons,
                &mut members,
                &moved_refs,
                merged_person,
                surviving_person,
            )?;
            bump_cluster_epoch(&txn)?;
            let mut meta = txn.open_table(META).map_err(engine)?;
            let sequence = counter(&meta, "merge_sequence")? + 1;
            meta.insert("merge_sequence", sequence).map_err(engine)?;
            let record = MergeRecord::standing(
                request,
                sequence,
                surviving_person,
                merged_person,
                moved_refs,
            );
            let mut merges = txn.open_table(MERGES).map_err(engine)?;
            merges
                .insert(
                    request.merge_id.0.as_slice(),
                    codec::merge_value(&record).as_slice(),
                )
                .map_err(engine)?;
            MergeOutcome::Merged {
                moved: record.moved_refs.len(),
            }
        };
        // References move between persons: their persons, both members and what was read
        // through them.
        txn.commit(&read_cache::Changed::everything())?;
        Ok(outcome)
    }

    fn unmerge_persons(
        &self,
        merge_id: MergeId,
        attribution: &Attribution,
    ) -> StoreResult<UnmergeOutcome> {
        let txn = self.write()?;
        let outcome = {
            let mut merges = txn.open_table(MERGES).map_err(engine)?;
            let all = merges
                .iter()
                .map_err(engine)?
                .map(|item| {
                    let (key, value) = item.map_err(engine)?;
                    let id = MergeId(
                        key.value()
                            .try_into()
                            .map_err(|_| StoreError::Corrupt("merge ID length".into()))?,
                    );
                    codec::decode_merge(id, value.value())
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let Some(record) = all
                .iter()
                .find(|record| record.merge_id == merge_id)
                .cloned()
            else {
                return Ok(UnmergeOutcome::UnknownMerge);
            };
            if record.unmerged.is_some() {
                return Ok(UnmergeOutcome::AlreadyUnmerged);
            }
            if let Some(by) = superseding_merge(&record, &all) {
                return Ok(UnmergeOutcome::Superseded { by });
            }
            let mut persons = txn.open_table(PERSONS).map_err(engine)?;
            let mut members = txn.open_table(MEMBERS).map_err(engine)?;
            move_refs(
                &mut persons,
                &mut members,
                &record.moved_refs,
                record.surviving_person,
                record.merged_person,
            )?;
            bump_cluster_epoch(&txn)?;
            let restored = record.moved_refs.len();
            let undone = MergeRecord {
                unmerged: Some(attribution.clone()),
                ..record
            };
            merges
                .insert(
                    merge_id.0.as_slice(),
                    codec::merge_value(&undone).as_slice(),
                )
                .map_err(engine)?;
            UnmergeOutcome::Unmerged { restored }
        };
        txn.commit(&read_cache::Changed::everything())?;
        Ok(outcome)
    }

    fn merge(&self, merge_id: MergeId) -> StoreResult<Option<MergeRecord>> {
        let txn = self.db.begin_read().map_err(engine)?;
        let merges = txn.open_table(MERGES).map_err(engine)?;
        merges
            .get(merge_id.0.as_slice())
            .map_err(engine)?
            .map(|value| codec::decode_merge(merge_id, value.value()))
            .transpose()
    }

    fn append_audit(
        &self,
        rows: &[AuditRow],
        index: &[(u64, IdentifierKey)],
    ) -> StoreResult<ChainHead> {
        self.audit_wal.append(rows, index)
    }

    fn audit_head(&self) -> StoreResult<ChainHead> {
        Ok(self.audit_wal.head())
    }

    fn audit_rows(&self, from: u64, to: u64, limit: usize) -> StoreResult<Vec<AuditRow>> {
        if from > to {
            return Ok(Vec::new());
        }
        self.audit_wal.fold()?;
        let txn = self.audit_db.begin_read().map_err(engine)?;
        let audit = txn.open_table(AUDIT).map_err(engine)?;
        audit
            .range(from..=to)
            .map_err(engine)?
            .take(limit)
            .map(|item| {
                let (sequence, value) = item.map_err(engine)?;
                audit_codec::decode_row(sequence.value(), value.value())
            })
            .collect()
    }

    fn audit_rows_of(
        &self,
        subjects: &[IdentifierKey],
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditRow>> {
        self.audit_wal.fold()?;
        let sequences = self.disclosure.sequences_of(subjects, from, limit)?;
        let txn = self.audit_db.begin_read().map_err(engine)?;
        let audit = txn.open_table(AUDIT).map_err(engine)?;
        sequences
            .into_iter()
            .map(|sequence| {
                let value = audit
                    .get(sequence)
                    .map_err(engine)?
                    .ok_or_else(|| StoreError::Corrupt("audit index names no event".into()))?;
                audit_codec::decode_row(sequence, value.value())
            })
            .collect()
    }

    fn register_locations(
        &self,
        network: NetworkId,
        today: NaiveDate,
        items: &[SubjectLocation],
    ) -> StoreResult<Vec<RegisterOutcome>> {
        let request = {
            // One call at a time decides its gate, for the reason `Mpi` resolves one at a time.
            let _preparing = self
                .preparing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.prepare_registration(network, today, items)?
        };
        self.register_request(request)
    }

    fn withdraw_locations(&self, ids: &[LocationId]) -> StoreResult<Vec<bool>> {
        let _alone = self
            .exclusive
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let owners = {
            let txn = self.index_db.begin_read().map_err(engine)?;
            let index = txn.open_table(LOCATION_INDEX).map_err(engine)?;
            ids.iter()
                .map(|id| {
                    index
                        .get(location::codec::id_key(id).as_slice())
                        .map_err(engine)?
                        .map(|value| key32(value.value()))
                        .transpose()
                })
                .collect::<StoreResult<Vec<_>>>()?
        };
        // The locations first, then their claims: a crash in between leaves orphan claims,
        // which registration takes over, never a location without its claim.
        let txn = self.write()?;
        let mut found = Vec::with_capacity(ids.len());
        {
            let mut locations = txn.open_table(LOCATIONS).map_err(engine)?;
            for (id, owner) in ids.iter().zip(&owners) {
                let removed = match owner {
                    Some(subject) => locations
                        .remove(location::codec::key(*subject, id).as_slice())
                        .map_err(engine)?
                        .is_some(),
                    None => false,
                };
                found.push(removed);
            }
        }
        let removed_from = owners.iter().zip(&found).filter(|(_, removed)| **removed);
        txn.commit(&read_cache::Changed::keys(
            removed_from.filter_map(|(owner, _)| *owner),
        ))?;
        self.release_claims(ids.iter().map(location::codec::id_key))?;
        Ok(found)
    }

    fn record_consents(&self, records: &[(IdentifierKey, Consent)]) -> StoreResult<()> {
        let txn = self.write()?;
        {
            let mut consents = txn.open_table(CONSENTS).map_err(engine)?;
            let mut subject_consents = txn.open_table(SUBJECT_CONSENTS).map_err(engine)?;
            for (subject, consent) in records {
                consents
                    .insert(
                        consent.id.0.as_slice(),
                        consent_value(*subject, consent).as_slice(),
                    )
                    .map_err(engine)?;
                subject_consents
                    .insert(
                        pair_key(&subject.0, &consent.id.0).as_slice(),
                        subject_consent_value(consent).as_slice(),
                    )
                    .map_err(engine)?;
            }
        }
        bump_cluster_epoch(&txn)?;
        txn.commit(&read_cache::Changed::keys(
            records.iter().map(|(subject, _)| *subject),
        ))?;
        Ok(())
    }

    fn consent(&self, id: ConsentId) -> StoreResult<Option<(IdentifierKey, Consent)>> {
        let txn = self.db.begin_read().map_err(engine)?;
        let consents = txn.open_table(CONSENTS).map_err(engine)?;
        consents
            .get(id.0.as_slice())
            .map_err(engine)?
            .map(|value| decode_consent(&id.0, value.value()))
            .transpose()
    }

    fn revoke_consent(
        &self,
        id: ConsentId,
        revocation: &Revocation,
        today: NaiveDate,
    ) -> StoreResult<RevokeOutcome> {
        // A purge deletes locations and then their claims, alone like a withdrawal.
        let _alone = revocation.purged.then(|| {
            self.exclusive
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
        let mut released = Vec::new();
        let txn = self.write()?;
        // The subject's consents, and the cluster's links and locations when they go with it.
        let mut changed = Vec::new();
        let outcome = {
            let mut consents = txn.open_table(CONSENTS).map_err(engine)?;
            let stored = consents
                .get(id.0.as_slice())
                .map_err(engine)?
                .map(|value| decode_consent(&id.0, value.value()))
                .transpose()?;
            let Some((subject, mut revoked)) = stored else {
                return Ok(RevokeOutcome::Unknown);
            };
            if revoked.revocation.is_some() {
                return Ok(RevokeOutcome::AlreadyRevoked);
            }
            revoked.revocation = Some(revocation.clone());
            consents
                .insert(id.0.as_slice(), consent_value(subject, &revoked).as_slice())
                .map_err(engine)?;
            let persons = txn.open_table(PERSONS).map_err(engine)?;
            let members = txn.open_table(MEMBERS).map_err(engine)?;
            let mut subject_consents = txn.open_table(SUBJECT_CONSENTS).map_err(engine)?;
            subject_consents
                .insert(
                    pair_key(&subject.0, &id.0).as_slice(),
                    subject_consent_value(&revoked).as_slice(),
                )
                .map_err(engine)?;
            bump_cluster_epoch(&txn)?;
            let (cluster, after) =
                cluster_consents(&persons, &members, &subject_consents, subject)?;
            // The cluster holds the subject.
            changed.extend(&cluster);
            let (mut links_cut, mut locations_deleted) = (0, 0);
            if let Some((network, cut, purge)) = revocation_effects(&after, &revoked, today) {
                let mut links = txn.open_table(LINKS).map_err(engine)?;
                let mut subject_links = txn.open_table(SUBJECT_LINKS).map_err(engine)?;
                let mut locations = txn.open_table(LOCATIONS).map_err(engine)?;
                for reference in &cluster {
                    if cut {
                        for link in links_of(&links, &subject_links, *reference)? {
                            if link.network == network {
                                links
                                    .remove(link.regional_key.0.as_slice())
                                    .map_err(engine)?;
                                subject_links
                                    .remove(pair_key(&reference.0, &link.regional_key.0).as_slice())
                                    .map_err(engine)?;
                                links_cut += 1;
                            }
                        }
                    }
                    if purge {
                        let (from, to) = location::codec::network_range(*reference, network);
                        let doomed: Vec<Vec<u8>> = locations
                            .range(from.as_slice()..=to.as_slice())
                            .map_err(engine)?
                            .map(|item| item.map(|(key, _)| key.value().to_vec()).map_err(engine))
                            .collect::<StoreResult<_>>()?;
                        for key in doomed {
                            locations.remove(key.as_slice()).map_err(engine)?;
                            released.push(id_of(&key));
                            locations_deleted += 1;
                        }
                    }
                }
            }
            RevokeOutcome::Revoked {
                consent: Box::new(revoked),
                subject,
                links_cut,
                locations_deleted,
            }
        };
        txn.commit(&read_cache::Changed::keys(changed))?;
        if !released.is_empty() {
            self.release_claims(released.into_iter())?;
        }
        Ok(outcome)
    }

    fn link_regional(&self, link: &RegionalLink, today: NaiveDate) -> StoreResult<LinkOutcome> {
        let txn = self.write()?;
        let outcome = {
            let persons = txn.open_table(PERSONS).map_err(engine)?;
            let members = txn.open_table(MEMBERS).map_err(engine)?;
            let subject_consents = txn.open_table(SUBJECT_CONSENTS).map_err(engine)?;
            let (_, found) = cluster_consents(&persons, &members, &subject_consents, link.subject)?;
            if consent::participation(&found, link.network, today).is_none() {
                return Ok(LinkOutcome::NoParticipation);
            }
            let mut links = txn.open_table(LINKS).map_err(engine)?;
            let existing = links
                .get(link.regional_key.0.as_slice())
                .map_err(engine)?
                .map(|value| decode_link(link.regional_key, value.value()))
                .transpose()?;
            match existing {
                Some(existing) if existing.subject == link.subject => LinkOutcome::Unchanged,
                Some(_) => LinkOutcome::LinkedToAnother,
                None => {
                    links
                        .insert(link.regional_key.0.as_slice(), link_value(link).as_slice())
                        .map_err(engine)?;
                    let mut subject_links = txn.open_table(SUBJECT_LINKS).map_err(engine)?;
                    subject_links
                        .insert(
                            pair_key(&link.subject.0, &link.regional_key.0).as_slice(),
                            (),
                        )
                        .map_err(engine)?;
                    LinkOutcome::Created
                }
            }
        };
        // Links are not cached.
        txn.commit(&read_cache::Changed::nothing())?;
        Ok(outcome)
    }

    fn unlink_regional(&self, regional_key: IdentifierKey) -> StoreResult<bool> {
        let txn = self.write()?;
        let removed = {
            let mut links = txn.open_table(LINKS).map_err(engine)?;
            let removed = links
                .remove(regional_key.0.as_slice())
                .map_err(engine)?
                .map(|value| decode_link(regional_key, value.value()))
                .transpose()?;
            if let Some(link) = &removed {
                let mut subject_links = txn.open_table(SUBJECT_LINKS).map_err(engine)?;
                subject_links
                    .remove(pair_key(&link.subject.0, &regional_key.0).as_slice())
                    .map_err(engine)?;
            }
            removed.is_some()
        };
        txn.commit(&read_cache::Changed::nothing())?;
        Ok(removed)
    }
}

/// A write transaction of the main file and its turn to commit: [`MainWrite::commit`] names what
/// the transaction changed, for the read cache.
struct MainWrite<'a> {
    txn: redb::WriteTransaction,
    turn: read_cache::Turn<'a>,
}

impl std::ops::Deref for MainWrite<'_> {
    type Target = redb::WriteTransaction;

    fn deref(&self) -> &redb::WriteTransaction {
        &self.txn
    }
}

impl MainWrite<'_> {
    /// Commits, durably, a transaction that changed what `changed` names.
    fn commit(self, changed: &read_cache::Changed) -> StoreResult<()> {
        self.turn.commit(self.txn, changed).map_err(engine)
    }
}

/// A subject's consents and locations tables, opened on a snapshot's first miss of them.
type SubjectTables = (
    redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
);

/// A subject's unrevoked consents and its locations, as the read cache holds them.
type SubjectReads = (Arc<[Consent]>, Arc<[SubjectLocation]>);

/// A read transaction of the main file, and the read cache: [`Snapshot`] for [`RedbStore`].
/// Reads the cache answers for the transaction's state (`tag`) read no page.
struct RedbSnapshot<'a> {
    txn: redb::ReadTransaction,
    cache: &'a read_cache::ReadCache,
    tag: u64,
}

impl RedbSnapshot<'_> {
    /// The result under `key` from the cache, or read from the pages (`table` opened on the
    /// first miss) and kept.
    fn cached<T, K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        key: read_cache::Key,
        table: &mut Option<redb::ReadOnlyTable<K, V>>,
        definition: TableDefinition<K, V>,
        hit: impl FnOnce(read_cache::Value) -> Option<T>,
        read: impl FnOnce(&redb::ReadOnlyTable<K, V>) -> StoreResult<T>,
        keep: impl FnOnce(&T) -> read_cache::Value,
    ) -> StoreResult<T> {
        if let Some(found) = self.cache.get(self.tag, &key).and_then(hit) {
            return Ok(found);
        }
        let table = match table {
            Some(table) => table,
            None => table.insert(self.txn.open_table(definition).map_err(engine)?),
        };
        let found = read(table)?;
        self.cache.put(self.tag, key, keep(&found));
        Ok(found)
    }

    /// A subject's unrevoked consents and its locations, from one entry of the cache or read
    /// from the pages (both tables opened into `tables` on the first miss) and kept.
    fn subject(
        &self,
        reference: IdentifierKey,
        tables: &mut Option<SubjectTables>,
    ) -> StoreResult<SubjectReads> {
        use read_cache::{Key, Kind, Value};
        let key = Key::of(Kind::Subject, reference);
        if let Some(Value::Subject {
            consents,
            locations,
        }) = self.cache.get(self.tag, &key)
        {
            return Ok((consents, locations));
        }
        let (consents_table, locations_table) = match tables {
            Some(tables) => tables,
            None => tables.insert((
                self.txn.open_table(SUBJECT_CONSENTS).map_err(engine)?,
                self.txn.open_table(LOCATIONS).map_err(engine)?,
            )),
        };
        let consents: Arc<[Consent]> = consents_of(
            consents_table,
            std::slice::from_ref(&reference),
            ConsentHistory::Unrevoked,
        )?
        .into();
        let locations: Arc<[SubjectLocation]> = locations_of(locations_table, reference)?.into();
        self.cache.put(
            self.tag,
            key,
            Value::Subject {
                consents: consents.clone(),
                locations: locations.clone(),
            },
        );
        Ok((consents, locations))
    }

    fn members(&self, person: PersonKey) -> StoreResult<Vec<IdentifierKey>> {
        use read_cache::Value;
        self.cached(
            read_cache::Key::person(person),
            &mut None,
            MEMBERS,
            |value| match value {
                Value::Members(refs) => Some(refs.to_vec()),
                _ => None,
            },
            |members| members_of(members, person),
            |refs| Value::Members(Arc::from(refs.as_slice())),
        )
    }
}

/// One reference's results as they are (shared with the read cache, not copied), or several
/// references' joined in their order and then put in order by `arrange`.
fn joined<T: Clone>(
    mut each: impl Iterator<Item = StoreResult<Arc<[T]>>>,
    arrange: impl FnOnce(&mut Vec<T>),
) -> StoreResult<Arc<[T]>> {
    let Some(first) = each.next().transpose()? else {
        return Ok(Arc::from([]));
    };
    let Some(second) = each.next().transpose()? else {
        return Ok(first);
    };
    let mut all = first.to_vec();
    all.extend_from_slice(&second);
    for more in each {
        all.extend_from_slice(&more?);
    }
    arrange(&mut all);
    Ok(all.into())
}

impl Snapshot for RedbSnapshot<'_> {
    fn qualifications_by_insured(
        &self,
        insured_keys: &[IdentifierKey],
    ) -> StoreResult<Vec<Vec<QualificationEntry>>> {
        use read_cache::{Key, Kind, Value};
        let mut table = None;
        insured_keys
            .iter()
            .map(|insured| {
                self.cached(
                    Key::of(Kind::Qualifications, *insured),
                    &mut table,
                    QUALIFICATIONS,
                    |value| match value {
                        Value::Qualifications(found) => Some(found.to_vec()),
                        _ => None,
                    },
                    |table| {
                        let mut from = [0u8; QUALIFICATION_KEY_LEN];
                        from[..32].copy_from_slice(&insured.0);
                        let mut to = [0xffu8; QUALIFICATION_KEY_LEN];
                        to[..32].copy_from_slice(&insured.0);
                        table
                            .range(from.as_slice()..=to.as_slice())
                            .map_err(engine)?
                            .map(|item| {
                                let (key, value) = item.map_err(engine)?;
                                codec::decode_qualification(key.value(), value.value())
                            })
                            .collect()
                    },
                    |found| Value::Qualifications(Arc::from(found.as_slice())),
                )
            })
            .collect()
    }

    fn persons_of(&self, person_ref_keys: &[IdentifierKey]) -> StoreResult<Vec<Option<PersonKey>>> {
        use read_cache::{Key, Kind, Value};
        let mut table = None;
        person_ref_keys
            .iter()
            .map(|reference| {
                self.cached(
                    Key::of(Kind::Person, *reference),
                    &mut table,
                    PERSONS,
                    |value| match value {
                        Value::Person(found) => Some(found),
                        _ => None,
                    },
                    |table| {
                        table
                            .get(reference.0.as_slice())
                            .map_err(engine)?
                            .map(|value| codec::decode_person(value.value()))
                            .transpose()
                    },
                    |found| Value::Person(*found),
                )
            })
            .collect()
    }

    fn person_view(&self, person: PersonKey, parts: ViewParts) -> StoreResult<PersonView> {
        let refs = self.members(person)?;
        let mut view = PersonView::default();
        let unrevoked = parts.consents == Some(ConsentHistory::Unrevoked);
        if unrevoked || parts.locations {
            let mut tables = None;
            let subjects = refs
                .iter()
                .map(|reference| self.subject(*reference, &mut tables))
                .collect::<StoreResult<Vec<_>>>()?;
            if unrevoked {
                // Each reference's are oldest first already.
                view.consents = joined(subjects.iter().map(|(c, _)| Ok(c.clone())), |all| {
                    all.sort_by_key(|c| (c.recorded_at_micros, c.id));
                })?;
            }
            if parts.locations {
                view.locations = joined(subjects.iter().map(|(_, l)| Ok(l.clone())), |_| {})?;
            }
        }
        if parts.consents == Some(ConsentHistory::Full) {
            let subject_consents = self.txn.open_table(SUBJECT_CONSENTS).map_err(engine)?;
            view.consents = consents_of(&subject_consents, &refs, ConsentHistory::Full)?.into();
        }
        if parts.links {
            let links = self.txn.open_table(LINKS).map_err(engine)?;
            let subject_links = self.txn.open_table(SUBJECT_LINKS).map_err(engine)?;
            for reference in &refs {
                view.links
                    .extend(links_of(&links, &subject_links, *reference)?);
            }
        }
        view.refs = refs;
        Ok(view)
    }

    fn regional_subject(&self, regional_key: IdentifierKey) -> StoreResult<Option<IdentifierKey>> {
        let links = self.txn.open_table(LINKS).map_err(engine)?;
        links
            .get(regional_key.0.as_slice())
            .map_err(engine)?
            .map(|value| decode_link(regional_key, value.value()).map(|link| link.subject))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fresh() -> (RedbStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("mpi.redb")).unwrap();
        (store, dir)
    }

    mpi_store_conformance::store_conformance!(fresh());

    /// A participation consent of subject `[n; 32]` in `network` from `day`.
    fn participation_of(
        n: u8,
        network: NetworkId,
        day: chrono::NaiveDate,
    ) -> (IdentifierKey, mpi_core::consent::Consent) {
        (
            IdentifierKey([n; 32]),
            mpi_core::consent::Consent {
                id: mpi_core::consent::ConsentId::random(),
                grant: mpi_core::consent::ConsentGrant::Participation { network },
                valid_from: day,
                valid_until: None,
                evidence: "form".into(),
                recorded_by: "operator:ops".into(),
                recorded_at_micros: 0,
                revocation: None,
            },
        )
    }

    #[test]
    fn concurrent_registrations_are_combined_without_losing_or_mixing_any() {
        use mpi_core::ids::FacilityCode;
        use mpi_core::location::{Location, LocationId, RecordKind, RecordReference};
        let (store, _dir) = fresh();
        let network = NetworkId::parse("13-0001").unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let entries: Vec<_> = (0..8u8)
            .map(|subject| QualificationEntry {
                insured_key: IdentifierKey([subject + 100; 32]),
                person_ref_key: IdentifierKey([subject; 32]),
                start: day,
                end: None,
                demographic: mpi_core::keys::DemographicTag([0; 16]),
                reason_of_loss: None,
            })
            .collect();
        store.upsert_qualifications(&entries).unwrap();
        // Subjects 0..6 participate; 7 does not.
        let consents: Vec<_> = (0..7u8)
            .map(|subject| participation_of(subject, network, day))
            .collect();
        store.record_consents(&consents).unwrap();
        let store = std::sync::Arc::new(store);
        let threads: Vec<_> = (0..8u8)
            .map(|subject| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut stored = 0;
                    for call in 0..25 {
                        let items: Vec<_> = (0..20)
                            .map(|item| SubjectLocation {
                                subject: IdentifierKey([subject; 32]),
                                location: Location {
                                    id: LocationId {
                                        network,
                                        facility: FacilityCode::parse("3410712362").unwrap(),
                                        kind: RecordKind::Treatment,
                                        reference: RecordReference::parse(&format!(
                                            "s{subject}/c{call}/i{item}"
                                        ))
                                        .unwrap(),
                                    },
                                    first_service: day,
                                    last_service: day,
                                    registered_at_micros: 1,
                                },
                            })
                            .collect();
                        let outcomes = store.register_locations(network, today, &items).unwrap();
                        assert_eq!(outcomes.len(), 20);
                        stored += outcomes
                            .iter()
                            .filter(|o| **o == RegisterOutcome::Stored)
                            .count();
                    }
                    stored
                })
            })
            .collect();
        let stored: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(stored, [500, 500, 500, 500, 500, 500, 500, 0]);
        for subject in 0..8u8 {
            let person = store.persons_of(&[IdentifierKey([subject; 32])]).unwrap()[0].unwrap();
            let view = store.person_view(person, ViewParts::EVERYTHING).unwrap();
            assert_eq!(view.locations.len(), if subject < 7 { 500 } else { 0 });
            assert!(view.locations.iter().all(|l| {
                l.location
                    .id
                    .reference
                    .as_str()
                    .starts_with(&format!("s{subject}/"))
            }));
        }
    }

    /// A store whose read cache holds about `bytes`.
    fn fresh_with_read_cache(bytes: u64) -> (RedbStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            RedbStore::open_with_caches(&dir.path().join("mpi.redb"), DEFAULT_CACHE_BYTES, bytes)
                .unwrap();
        (store, dir)
    }

    /// The conformance suite again with a read cache of a few entries, always evicting.
    mod tiny_read_cache {
        use super::fresh_with_read_cache;
        mpi_store_conformance::store_conformance!(fresh_with_read_cache(4 << 10));
    }

    /// Retrievals racing revocations and registrations: each sees every revocation and every
    /// location whose call had returned when it began, and nothing not yet committed when it
    /// ended, though the retrievals before it kept what they read in the read cache.
    #[test]
    fn retrievals_see_every_write_returned_before_they_began() {
        use mpi_core::consent::Revocation;
        use mpi_core::ids::FacilityCode;
        use mpi_core::location::{Location, LocationId, RecordKind, RecordReference};
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        const WRITES: usize = 150;
        let (store, _dir) = fresh();
        let kept = NetworkId::parse("13-0001").unwrap();
        let revoked = NetworkId::parse("14-0001").unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let subject = IdentifierKey([1; 32]);
        store
            .upsert_qualifications(&[QualificationEntry {
                insured_key: IdentifierKey([101; 32]),
                person_ref_key: subject,
                start: day,
                end: None,
                demographic: mpi_core::keys::DemographicTag([0; 16]),
                reason_of_loss: None,
            }])
            .unwrap();
        let mut consents = vec![participation_of(1, kept, day)];
        consents.extend((0..WRITES).map(|_| participation_of(1, revoked, day)));
        store.record_consents(&consents).unwrap();
        let person = store.persons_of(&[subject]).unwrap()[0].unwrap();
        let parts = ViewParts {
            consents: Some(ConsentHistory::Unrevoked),
            locations: true,
            links: false,
        };
        // Writes returned (begun) so far: revocations, then registrations.
        let (revocations_done, revocations_begun) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (registrations_done, registrations_begun) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let checked = AtomicUsize::new(0);
        let finished = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for (n, (_, consent)) in consents[1..].iter().enumerate() {
                    revocations_begun.store(n + 1, SeqCst);
                    let revocation = Revocation {
                        by: "operator:ops".into(),
                        at_micros: 1,
                        reason: "asked".into(),
                        purged: false,
                    };
                    store
                        .revoke_consent(consent.id, &revocation, today)
                        .unwrap();
                    revocations_done.store(n + 1, SeqCst);
                    let location = SubjectLocation {
                        subject,
                        location: Location {
                            id: LocationId {
                                network: kept,
                                facility: FacilityCode::parse("3410712362").unwrap(),
                                kind: RecordKind::Treatment,
                                reference: RecordReference::parse(&format!("doc-{n}")).unwrap(),
                            },
                            first_service: day,
                            last_service: day,
                            registered_at_micros: 1,
                        },
                    };
                    registrations_begun.store(n + 1, SeqCst);
                    let stored = store.register_locations(kept, today, &[location]).unwrap();
                    assert_eq!(stored, [RegisterOutcome::Stored]);
                    registrations_done.store(n + 1, SeqCst);
                }
                finished.store(true, SeqCst);
            });
            for _ in 0..2 {
                scope.spawn(|| {
                    while !finished.load(SeqCst) {
                        let revoked_before = revocations_done.load(SeqCst);
                        let registered_before = registrations_done.load(SeqCst);
                        let reads = store.snapshot().unwrap();
                        let view = reads.person_view(person, parts).unwrap();
                        let found = reads.persons_of(&[subject]).unwrap();
                        drop(reads);
                        let revoked_after = revocations_begun.load(SeqCst);
                        let registered_after = registrations_begun.load(SeqCst);
                        assert_eq!(found, [Some(person)]);
                        let unrevoked = view.consents.len() - 1;
                        assert!(
                            unrevoked <= WRITES - revoked_before,
                            "{unrevoked} unrevoked after {revoked_before} revocations returned"
                        );
                        assert!(unrevoked >= WRITES - revoked_after);
                        let located = view.locations.len();
                        assert!(
                            located >= registered_before,
                            "{located} locations after {registered_before} registrations returned"
                        );
                        assert!(located <= registered_after);
                        checked.fetch_add(1, SeqCst);
                    }
                });
            }
        });
        assert!(checked.load(SeqCst) > 100, "{checked:?} retrievals checked");
    }

    /// The participation gate is decided before the call waits for the writer; a revocation or
    /// an unmerge committed in between must keep the writer from storing, and a consent or
    /// merge that only allows more leaves the call answered as of its snapshot.
    #[test]
    fn a_gate_decided_before_a_consent_or_cluster_change_is_decided_again_by_the_writer() {
        use mpi_core::consent::Revocation;
        use mpi_core::ids::FacilityCode;
        use mpi_core::location::{Location, LocationId, RecordKind, RecordReference};
        use mpi_core::store::{Attribution, MergeId, MergeRequest};
        let (store, _dir) = fresh();
        let network = NetworkId::parse("13-0001").unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let subject = |n: u8| IdentifierKey([n; 32]);
        let entries: Vec<_> = (1..=4u8)
            .map(|n| QualificationEntry {
                insured_key: IdentifierKey([n + 100; 32]),
                person_ref_key: subject(n),
                start: day,
                end: None,
                demographic: mpi_core::keys::DemographicTag([0; 16]),
                reason_of_loss: None,
            })
            .collect();
        store.upsert_qualifications(&entries).unwrap();
        let participation = |n: u8| participation_of(n, network, day);
        let location = |n: u8| SubjectLocation {
            subject: subject(n),
            location: Location {
                id: LocationId {
                    network,
                    facility: FacilityCode::parse("3410712362").unwrap(),
                    kind: RecordKind::Treatment,
                    reference: RecordReference::parse(&format!("gate-{n}")).unwrap(),
                },
                first_service: day,
                last_service: day,
                registered_at_micros: 1,
            },
        };
        let first = participation(1);
        store
            .record_consents(&[first.clone(), participation(4)])
            .unwrap();
        let decide = |n: u8| {
            store
                .prepare_registration(network, today, &[location(n)])
                .unwrap()
        };
        let write = |request: RegistrationRequest| store.register_request(request).unwrap()[0];

        // Taking part when decided, revoked before the write.
        let request = decide(1);
        assert_eq!(request.allowed, [true]);
        let revocation = Revocation {
            by: "operator:ops".into(),
            at_micros: 1,
            reason: "withdrawn".into(),
            purged: false,
        };
        store
            .revoke_consent(first.1.id, &revocation, today)
            .unwrap();
        assert_eq!(write(request), RegisterOutcome::NoParticipation);

        // Not taking part when decided, a participation recorded before the write: the call
        // ran alongside RecordConsent, and is answered as of its snapshot (nothing claimed).
        let request = decide(2);
        assert_eq!(request.allowed, [false]);
        store.record_consents(&[participation(2)]).unwrap();
        assert_eq!(write(request), RegisterOutcome::NoParticipation);
        assert_eq!(write(decide(2)), RegisterOutcome::Stored);

        // Not taking part when decided, merged into a person who takes part before the write.
        let request = decide(3);
        assert_eq!(request.allowed, [false]);
        let merge_id = MergeId::random();
        let attribution = Attribution {
            by: "operator:ops".into(),
            at_micros: 1,
            reason: "same person".into(),
        };
        let merged = store
            .merge_persons(&MergeRequest {
                merge_id,
                surviving_ref: subject(4),
                merged_ref: subject(3),
                attribution: attribution.clone(),
            })
            .unwrap();
        assert!(matches!(merged, MergeOutcome::Merged { moved: 1 }));
        assert_eq!(write(request), RegisterOutcome::NoParticipation);
        assert_eq!(write(decide(3)), RegisterOutcome::Stored);

        // Taking part through the merge when decided, unmerged before the write.
        let mut moved = location(3);
        moved.location.id.reference = RecordReference::parse("gate-3-later").unwrap();
        let request = store
            .prepare_registration(network, today, &[moved])
            .unwrap();
        assert_eq!(request.allowed, [true]);
        let unmerged = store.unmerge_persons(merge_id, &attribution).unwrap();
        assert!(matches!(unmerged, UnmergeOutcome::Unmerged { restored: 1 }));
        assert_eq!(write(request), RegisterOutcome::NoParticipation);

        // Nothing changed in between: the decision made beforehand stands.
        let request = decide(4);
        let epoch = request.epoch;
        assert_eq!(request.allowed, [true]);
        assert_eq!(write(request), RegisterOutcome::Stored);
        let txn = store.db.begin_read().unwrap();
        assert_eq!(
            cluster_epoch(&txn.open_table(META).unwrap()).unwrap(),
            epoch
        );
    }

    /// A store with subjects 1..=3 taking part in 13-0001, and a location of `subject`.
    fn participating() -> (
        RedbStore,
        tempfile::TempDir,
        NetworkId,
        chrono::NaiveDate,
        impl Fn(u8) -> SubjectLocation,
    ) {
        use mpi_core::ids::FacilityCode;
        use mpi_core::location::{Location, LocationId, RecordKind, RecordReference};
        let (store, dir) = fresh();
        let network = NetworkId::parse("13-0001").unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let consents: Vec<_> = (1..=3u8)
            .map(|n| participation_of(n, network, day))
            .collect();
        store.record_consents(&consents).unwrap();
        let location = move |n: u8| SubjectLocation {
            subject: IdentifierKey([n; 32]),
            location: Location {
                id: LocationId {
                    network,
                    facility: FacilityCode::parse("3410712362").unwrap(),
                    kind: RecordKind::Treatment,
                    reference: RecordReference::parse("the-same-reference").unwrap(),
                },
                first_service: day,
                last_service: day,
                registered_at_micros: 1,
            },
        };
        (store, dir, network, today, location)
    }

    /// The location index lives in its own file, written before the locations: a claim whose
    /// location was never stored (a crash between the two commits) is taken over, but a claim
    /// whose call is still storing is not.
    #[test]
    fn orphan_claims_are_taken_over_and_pending_claims_are_not() {
        let (store, _dir, network, today, location) = participating();
        // An orphan: subject 1 claimed the ID, its location never reached the main file.
        let first = store
            .prepare_registration(network, today, &[location(1)])
            .unwrap();
        let claims = store.claim_group(&[Arc::new(first)]).unwrap();
        assert_eq!(claims, [[Claim::New]]);
        // In one group, the orphan's own subject keeps it and another subject's item does not
        // take it over behind it.
        let both: Vec<_> = [1, 2]
            .map(|n| {
                Arc::new(
                    store
                        .prepare_registration(network, today, &[location(n)])
                        .unwrap(),
                )
            })
            .into();
        assert_eq!(
            store.claim_group(&both).unwrap(),
            [[Claim::Ours], [Claim::Another]]
        );
        assert_eq!(
            store
                .register_locations(network, today, &[location(2)])
                .unwrap(),
            [RegisterOutcome::Stored]
        );
        // Now subject 2 holds it, with its location stored.
        assert_eq!(
            store
                .register_locations(network, today, &[location(3)])
                .unwrap(),
            [RegisterOutcome::RegisteredForAnother]
        );
        // A claim still pending (its call between the two stages) stands.
        assert!(
            store
                .withdraw_locations(&[location(2).location.id])
                .unwrap()[0]
        );
        let third = Arc::new(
            store
                .prepare_registration(network, today, &[location(3)])
                .unwrap(),
        );
        assert_eq!(store.claim_group(&[third]).unwrap(), [[Claim::New]]);
        let id = location::codec::id_key(&location(3).location.id);
        store.pending.lock().unwrap().insert(id, 1);
        assert_eq!(
            store
                .register_locations(network, today, &[location(1)])
                .unwrap(),
            [RegisterOutcome::RegisteredForAnother]
        );
        store.pending.lock().unwrap().clear();
        assert_eq!(
            store
                .register_locations(network, today, &[location(1)])
                .unwrap(),
            [RegisterOutcome::Stored]
        );
        assert!(store.pending.lock().unwrap().is_empty());
    }

    /// A version 1 file kept the location index in the main file; opening it moves the index
    /// into `location-index.redb` and records version 2.
    #[test]
    fn a_version_2_file_has_each_subjects_consents_indexed_in_full_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mpi.redb");
        let (network, today, location) = {
            let (_, _, network, today, location) = participating();
            (network, today, location)
        };
        let rows = |db: &Database| -> Vec<(Vec<u8>, Vec<u8>)> {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(SUBJECT_CONSENTS).unwrap();
            table
                .range::<&[u8]>(..)
                .unwrap()
                .map(|item| {
                    let (key, value) = item.unwrap();
                    (key.value().to_vec(), value.value().to_vec())
                })
                .collect()
        };
        let before = {
            let store = RedbStore::open(&path).unwrap();
            let kept = participation_of(1, network, today);
            let revoked = participation_of(2, network, today);
            store
                .record_consents(&[kept.clone(), revoked.clone()])
                .unwrap();
            let revocation = mpi_core::consent::Revocation {
                by: "operator:ops".into(),
                at_micros: 1,
                reason: "withdrawn".into(),
                purged: false,
            };
            assert!(matches!(
                store
                    .revoke_consent(revoked.1.id, &revocation, today)
                    .unwrap(),
                RevokeOutcome::Revoked { .. }
            ));
            let before = rows(&store.db);
            assert_eq!(before.len(), 2);
            // Turn the file into version 2: the ID-only index with its revoked flags.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(SUBJECT_CONSENTS).unwrap();
            {
                let mut old = txn.open_table(SUBJECT_CONSENT_IDS).unwrap();
                for (subject, consent, flag) in
                    [(kept.0, kept.1.id, 0), (revoked.0, revoked.1.id, 1)]
                {
                    old.insert(pair_key(&subject.0, &consent.0).as_slice(), flag)
                        .unwrap();
                }
                txn.open_table(META)
                    .unwrap()
                    .insert("schema_version", 2)
                    .unwrap();
            }
            txn.commit().unwrap();
            before
        };
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(rows(&store.db), before);
        // The participation gate reads the rebuilt index: kept takes part, revoked does not.
        assert_eq!(
            store
                .register_locations(network, today, &[location(1), location(2)])
                .unwrap(),
            [RegisterOutcome::Stored, RegisterOutcome::NoParticipation]
        );
        let txn = store.db.begin_read().unwrap();
        assert!(matches!(
            txn.open_table(SUBJECT_CONSENT_IDS),
            Err(redb::TableError::TableDoesNotExist(_))
        ));
        assert_eq!(schema_version(&txn).unwrap(), Some(SCHEMA_VERSION));
    }

    /// A version 3 file wrote its consents as JSON: it opens as version 4, and they still
    /// decode, for reads and for the participation gate.
    #[test]
    fn a_version_3_files_json_consents_still_decode_after_it_opens_as_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mpi.redb");
        let (network, today, location) = {
            let (_, _, network, today, location) = participating();
            (network, today, location)
        };
        let (subject, consent) = participation_of(1, network, today);
        {
            let store = RedbStore::open(&path).unwrap();
            let json = format!(
                r#"{{"v":1,"kind":"participation","network":"{network}","scope":null,"from":"{today}","until":null,"evidence":"form","recorded_by":"operator:ops","recorded_at":0,"revocation":null}}"#
            );
            let txn = store.db.begin_write().unwrap();
            {
                let mut consents = txn.open_table(CONSENTS).unwrap();
                let value = [subject.0.as_slice(), json.as_bytes()].concat();
                consents
                    .insert(consent.id.0.as_slice(), value.as_slice())
                    .unwrap();
                let mut index = txn.open_table(SUBJECT_CONSENTS).unwrap();
                let value = [&[0u8][..], json.as_bytes()].concat();
                index
                    .insert(
                        pair_key(&subject.0, &consent.id.0).as_slice(),
                        value.as_slice(),
                    )
                    .unwrap();
                txn.open_table(META)
                    .unwrap()
                    .insert("schema_version", 3)
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.consent(consent.id).unwrap(),
            Some((subject, consent.clone()))
        );
        assert_eq!(
            store
                .register_locations(network, today, &[location(1)])
                .unwrap(),
            [RegisterOutcome::Stored]
        );
        let txn = store.db.begin_read().unwrap();
        assert_eq!(schema_version(&txn).unwrap(), Some(SCHEMA_VERSION));
    }

    /// `location` of `participating`, with a reference of its own per `n`.
    fn own_reference(
        location: &impl Fn(u8) -> SubjectLocation,
        subject: u8,
        n: u8,
    ) -> SubjectLocation {
        let mut own = location(subject);
        own.location.id.reference =
            mpi_core::location::RecordReference::parse(&format!("doc-{n}")).unwrap();
        own
    }

    /// [`participating`] with no durable claim commit after open's (as if the interval were
    /// never reached).
    fn participating_lazily() -> (
        RedbStore,
        tempfile::TempDir,
        NetworkId,
        chrono::NaiveDate,
        impl Fn(u8) -> SubjectLocation,
    ) {
        let (mut store, dir, network, today, location) = participating();
        store.claims_durable_after = std::time::Duration::from_secs(3600);
        (store, dir, network, today, location)
    }

    /// The claim log sequence the store knows the index holds durably.
    fn durable_to(store: &RedbStore) -> u64 {
        store
            .claims_durable_to
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn claim_log_sequences(store: &RedbStore) -> Vec<u64> {
        let txn = store.db.begin_read().unwrap();
        let log = txn.open_table(CLAIM_LOG).unwrap();
        log.range(0..)
            .unwrap()
            .map(|item| item.unwrap().0.value())
            .collect()
    }

    /// A crash can take from the location index the claims it committed since its last durable
    /// commit, while their locations are durable in the main file: the claim log, written with
    /// the locations, gives them back on open, so another subject still cannot register those
    /// IDs and their network can still withdraw them.
    #[test]
    fn claims_the_index_lost_are_replayed_from_the_claim_log_on_open() {
        // No durable claim commit after the first (that of open, before any claim).
        let (store, dir, network, today, location) = participating_lazily();
        let mine: Vec<_> = (1..=3).map(|n| own_reference(&location, 1, n)).collect();
        assert_eq!(
            store.register_locations(network, today, &mine).unwrap(),
            [RegisterOutcome::Stored; 3]
        );
        assert_eq!(claim_log_sequences(&store), [1, 2, 3]);
        let path = dir.path().join("mpi.redb");
        drop(store);
        // What a crash leaves: the index as of its last durable commit, without the claims
        // (the close just now made them durable).
        {
            let index_db = Database::create(path.with_file_name("location-index.redb")).unwrap();
            let txn = index_db.begin_write().unwrap();
            {
                let mut index = txn.open_table(LOCATION_INDEX).unwrap();
                for item in &mine {
                    let id_key = location::codec::id_key(&item.location.id);
                    assert!(index.remove(id_key.as_slice()).unwrap().is_some());
                }
                let mut meta = txn.open_table(LOCATION_INDEX_META).unwrap();
                assert_eq!(
                    meta.insert(CLAIMS_DURABLE_TO, 0).unwrap().unwrap().value(),
                    3
                );
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        // Replayed, durably, and the log emptied.
        assert!(claim_log_sequences(&store).is_empty());
        assert_eq!(durable_to(&store), 3);
        let theirs = own_reference(&location, 2, 2);
        assert_eq!(
            store.register_locations(network, today, &[theirs]).unwrap(),
            [RegisterOutcome::RegisteredForAnother]
        );
        assert_eq!(
            store
                .withdraw_locations(&[mine[0].location.id.clone()])
                .unwrap(),
            [true]
        );
        // The sequence goes on after the replayed entries.
        let next = own_reference(&location, 1, 9);
        assert_eq!(
            store.register_locations(network, today, &[next]).unwrap(),
            [RegisterOutcome::Stored]
        );
        assert_eq!(claim_log_sequences(&store), [4]);
    }

    /// A durable claim commit records the last log entry it covers, and the next registration
    /// deletes the entries up to it: the log holds what the index may not hold durably.
    #[test]
    fn the_claim_log_keeps_only_what_the_index_does_not_hold_durably() {
        let (mut store, _dir, network, today, location) = participating();
        // Every claim transaction durable.
        store.claims_durable_after = std::time::Duration::ZERO;
        let first: Vec<_> = (1..=3).map(|n| own_reference(&location, 1, n)).collect();
        store.register_locations(network, today, &first).unwrap();
        // Its claims' durable commit came before its log entries.
        assert_eq!(claim_log_sequences(&store), [1, 2, 3]);
        let second: Vec<_> = (4..=5).map(|n| own_reference(&location, 2, n)).collect();
        store.register_locations(network, today, &second).unwrap();
        assert_eq!(claim_log_sequences(&store), [4, 5]);
        let txn = store.index_db.begin_read().unwrap();
        let meta = txn.open_table(LOCATION_INDEX_META).unwrap();
        assert_eq!(counter(&meta, CLAIMS_DURABLE_TO).unwrap(), 3);
    }

    /// An ID the subject already held (its claim perhaps from a call whose location never got
    /// stored, committed non-durably) is logged with its location like a new one.
    #[test]
    fn a_location_stored_under_a_claim_already_held_is_logged_too() {
        let (store, _dir, network, today, location) = participating_lazily();
        let orphan = Arc::new(
            store
                .prepare_registration(network, today, &[location(1)])
                .unwrap(),
        );
        assert_eq!(store.claim_group(&[orphan]).unwrap(), [[Claim::New]]);
        assert!(claim_log_sequences(&store).is_empty());
        assert_eq!(
            store
                .register_locations(network, today, &[location(1)])
                .unwrap(),
            [RegisterOutcome::Stored]
        );
        assert_eq!(claim_log_sequences(&store), [1]);
    }

    /// Closing the store commits the index durably with every logged claim: the next open
    /// replays none, and deletes the log.
    #[test]
    fn a_clean_close_leaves_no_claim_to_replay() {
        let (store, dir, network, today, location) = participating_lazily();
        let mine: Vec<_> = (1..=2).map(|n| own_reference(&location, 1, n)).collect();
        store.register_locations(network, today, &mine).unwrap();
        assert_eq!(durable_to(&store), 0);
        let path = dir.path().join("mpi.redb");
        drop(store);
        {
            let index_db = Database::create(path.with_file_name("location-index.redb")).unwrap();
            let txn = index_db.begin_read().unwrap();
            let meta = txn.open_table(LOCATION_INDEX_META).unwrap();
            assert_eq!(counter(&meta, CLAIMS_DURABLE_TO).unwrap(), 2);
        }
        let store = RedbStore::open(&path).unwrap();
        assert!(claim_log_sequences(&store).is_empty());
    }

    /// `measure::claim_replay` (behind `mpi-bench claim-replay`) replays what it logged: the
    /// index ends with both the claims it held and those of the log.
    #[test]
    fn the_replay_measurement_replays_every_logged_claim() {
        use redb::ReadableTableMetadata;
        let dir = tempfile::tempdir().unwrap();
        measure::claim_replay(dir.path(), 1_000, 300, false).unwrap();
        let index_db = Database::create(dir.path().join("location-index.redb")).unwrap();
        let txn = index_db.begin_read().unwrap();
        assert_eq!(
            txn.open_table(LOCATION_INDEX).unwrap().len().unwrap(),
            1_300
        );
        let meta = txn.open_table(LOCATION_INDEX_META).unwrap();
        assert_eq!(counter(&meta, CLAIMS_DURABLE_TO).unwrap(), 300);
    }

    /// A withdrawal commits the index durably, with every claim logged so far: none of those is
    /// replayed after it (the withdrawn ID's claim does not come back, even as an orphan), and
    /// the log is emptied at the next open or registration.
    #[test]
    fn a_withdrawal_makes_every_logged_claim_durable() {
        let (store, dir, network, today, location) = participating_lazily();
        let mine: Vec<_> = (1..=3).map(|n| own_reference(&location, 1, n)).collect();
        store.register_locations(network, today, &mine).unwrap();
        assert_eq!(
            store
                .withdraw_locations(&[mine[0].location.id.clone()])
                .unwrap(),
            [true]
        );
        assert_eq!(durable_to(&store), 3);
        let path = dir.path().join("mpi.redb");
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert!(claim_log_sequences(&store).is_empty());
        let txn = store.index_db.begin_read().unwrap();
        let index = txn.open_table(LOCATION_INDEX).unwrap();
        let held = |item: &SubjectLocation| {
            index
                .get(location::codec::id_key(&item.location.id).as_slice())
                .unwrap()
                .is_some()
        };
        assert!(!held(&mine[0]));
        assert!(held(&mine[1]) && held(&mine[2]));
    }

    /// A version 4 file committed every claim durably and has no claim log: it opens as the
    /// current version, with its claims as they were.
    #[test]
    fn a_version_4_file_opens_as_the_current_version_with_its_claims() {
        let (store, dir, network, today, location) = participating();
        let path = dir.path().join("mpi.redb");
        assert_eq!(
            store
                .register_locations(network, today, &[location(1)])
                .unwrap(),
            [RegisterOutcome::Stored]
        );
        drop(store);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(CLAIM_LOG).unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("schema_version", 4).unwrap();
                meta.remove(CLAIM_LOG_SEQUENCE).unwrap();
            }
            txn.commit().unwrap();
            let index_db = Database::create(path.with_file_name("location-index.redb")).unwrap();
            let txn = index_db.begin_write().unwrap();
            txn.delete_table(LOCATION_INDEX_META).unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let txn = store.db.begin_read().unwrap();
        assert_eq!(schema_version(&txn).unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(
            store
                .register_locations(network, today, &[location(2)])
                .unwrap(),
            [RegisterOutcome::RegisteredForAnother]
        );
        assert_eq!(
            store
                .withdraw_locations(&[location(1).location.id])
                .unwrap(),
            [true]
        );
    }

    #[test]
    fn a_version_1_file_has_its_location_index_moved_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mpi.redb");
        let (network, today, location) = {
            let (_, _, network, today, location) = participating();
            (network, today, location)
        };
        {
            let store = RedbStore::open(&path).unwrap();
            store
                .record_consents(&[
                    participation_of(1, network, today),
                    participation_of(2, network, today),
                ])
                .unwrap();
            assert_eq!(
                store
                    .register_locations(network, today, &[location(1)])
                    .unwrap(),
                [RegisterOutcome::Stored]
            );
        }
        let id_key = location::codec::id_key(&location(1).location.id);
        {
            let index_db = Database::create(path.with_file_name("location-index.redb")).unwrap();
            let txn = index_db.begin_write().unwrap();
            let owner = txn
                .open_table(LOCATION_INDEX)
                .unwrap()
                .remove(id_key.as_slice())
                .unwrap()
                .map(|v| v.value().to_vec())
                .unwrap();
            txn.commit().unwrap();
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(LOCATION_INDEX)
                .unwrap()
                .insert(id_key.as_slice(), owner.as_slice())
                .unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        // The claim moved: another subject cannot register the same ID...
        assert_eq!(
            store
                .register_locations(network, today, &[location(2)])
                .unwrap(),
            [RegisterOutcome::RegisteredForAnother]
        );
        let txn = store.index_db.begin_read().unwrap();
        let moved = txn
            .open_table(LOCATION_INDEX)
            .unwrap()
            .get(id_key.as_slice())
            .unwrap()
            .map(|v| v.value().to_vec());
        assert_eq!(moved, Some(vec![1u8; 32]));
        let txn = store.db.begin_read().unwrap();
        assert!(matches!(
            txn.open_table(LOCATION_INDEX),
            Err(redb::TableError::TableDoesNotExist(_))
        ));
        assert_eq!(schema_version(&txn).unwrap(), Some(SCHEMA_VERSION));
        // ...and withdrawing it through the moved index works.
        assert!(
            store
                .withdraw_locations(&[location(1).location.id])
                .unwrap()[0]
        );
    }

    /// The thread ID and nice value of each of this process's threads named `name`, from
    /// `/proc`.
    #[cfg(target_os = "linux")]
    fn threads_named(name: &str) -> Vec<(i32, i32)> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let task = task.unwrap().path();
                let comm = std::fs::read_to_string(task.join("comm")).ok()?;
                let stat = std::fs::read_to_string(task.join("stat")).ok()?;
                // Fields after the parenthesised name start at field 3; the nice value is 19.
                let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
                let tid = task.file_name()?.to_str()?.parse().ok()?;
                (comm.trim() == name).then(|| (tid, fields[16].parse().unwrap()))
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_index_folder_and_the_spare_filler_yield_and_the_log_folder_does_not() {
        use mpi_os::{IoClass, io_class_of};
        let dir = tempfile::tempdir().unwrap();
        let _store = RedbStore::open(&dir.path().join("mpi.redb")).unwrap();
        // Other tests' stores may be open too: every such thread must have them, once it has
        // started (each thread names itself, and the folder lowers its own priorities). A
        // thread that ended meanwhile has no I/O class to read, and is left out.
        let settled = |name: &str, nice: i32, idle: bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let found: Vec<(i32, IoClass)> = threads_named(name)
                    .into_iter()
                    .filter_map(|(tid, n)| Some((n, io_class_of(tid).ok()?)))
                    .collect();
                let all = !found.is_empty()
                    && found
                        .iter()
                        .all(|&(n, class)| n == nice && (class == IoClass::Idle) == idle);
                if all || std::time::Instant::now() > deadline {
                    break (all, found);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let (lowered, index) = settled("audit-index", 19, true);
        assert!(lowered, "{index:?}");
        let (lowered, spare) = settled("audit-spare", 19, true);
        assert!(lowered, "{spare:?}");
        // The audit log's folder shares locks with the request path: it keeps its priorities.
        let (kept, log) = settled("audit-fold", 0, false);
        assert!(kept, "{log:?}");
    }

    #[test]
    fn the_disclosure_index_answers_the_same_before_and_after_folding_and_reopening() {
        use mpi_core::audit::{ChainHead, NewAuditEvent, chain_rows};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mpi.redb");
        let event = |i: u32| NewAuditEvent {
            at_micros: i64::from(i),
            principal: "clinician:13-0001:3410712362".into(),
            action: "FindLocations".into(),
            purpose: 1,
            person_key: None,
            outcome: "OK".into(),
            count: 1,
            emergency: false,
            emergency_reason: String::new(),
            deciding_consents: Vec::new(),
        };
        let events: Vec<_> = (1..=300).map(event).collect();
        let (rows, _) = chain_rows(ChainHead::EMPTY, &events);
        let index: Vec<_> = (1..=300u64)
            .map(|sequence| (sequence, IdentifierKey([(sequence % 7) as u8; 32])))
            .collect();
        let expected: Vec<u64> = (1..=300u64).filter(|s| s % 7 == 3).collect();
        let sequences = |store: &RedbStore| {
            store
                .audit_rows_of(&[IdentifierKey([3; 32])], 0, 1000)
                .unwrap()
                .iter()
                .map(|r| r.sequence)
                .collect::<Vec<_>>()
        };
        let store = RedbStore::open(&path).unwrap();
        store.append_audit(&rows[..150], &index[..150]).unwrap();
        store.disclosure.fold_all().unwrap();
        store.append_audit(&rows[150..], &index[150..]).unwrap();
        // Half folded, half not: the answer is whole.
        assert_eq!(sequences(&store), expected);
        store.disclosure.fold_all().unwrap();
        assert_eq!(sequences(&store), expected);
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(sequences(&store), expected);
        assert_eq!(
            store
                .audit_rows_of(&[IdentifierKey([3; 32])], 200, 2)
                .unwrap()
                .iter()
                .map(|r| r.sequence)
                .collect::<Vec<_>>(),
            [206, 213]
        );
    }

    #[test]
    fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mpi.redb");
        let entry = QualificationEntry {
            insured_key: IdentifierKey([7; 32]),
            person_ref_key: IdentifierKey([8; 32]),
            start: chrono::NaiveDate::from_ymd_opt(2020, 4, 1).unwrap(),
            end: None,
            demographic: mpi_core::keys::DemographicTag([9; 16]),
            reason_of_loss: None,
        };
        let person = {
            let store = RedbStore::open(&path).unwrap();
            store.upsert_qualifications(&[entry]).unwrap();
            store.persons_of(&[entry.person_ref_key]).unwrap()[0]
        };
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store
                .qualifications_by_insured(&[entry.insured_key])
                .unwrap(),
            vec![vec![entry]]
        );
        assert_eq!(
            store.persons_of(&[entry.person_ref_key]).unwrap()[0],
            person
        );
        assert!(person.is_some());
    }

    #[test]
    fn tampering_with_the_file_is_found_at_the_event() {
        use mpi_core::audit::{NewAuditEvent, chain, verify};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mpi.redb");
        let event = |i: u32| NewAuditEvent {
            at_micros: i64::from(i),
            principal: "clinician:13-0001:1310123458".into(),
            action: "FindLocations".into(),
            purpose: 1,
            person_key: Some(PersonKey([i as u8; 16])),
            outcome: "ok".into(),
            count: i,
            emergency: false,
            emergency_reason: String::new(),
            deciding_consents: vec!["c-1".into()],
        };
        let (events, _) = chain(ChainHead::EMPTY, (1..=8).map(event).collect());
        RedbStore::open(&path)
            .unwrap()
            .append_audit(&events.iter().map(AuditRow::of).collect::<Vec<_>>(), &[])
            .unwrap();
        let verify_file = || {
            let store = RedbStore::open(&path).unwrap();
            let rows = store.audit_rows(1, u64::MAX, 1000).unwrap();
            verify(
                ChainHead::EMPTY,
                rows.iter()
                    .map(|r| (r.sequence, r.previous_hash, r.content.as_slice(), r.hash)),
                Some(store.audit_head().unwrap()),
            )
        };
        assert!(verify_file().intact());

        // Flip one byte of event 5's content, offline, in the file itself.
        {
            let store = RedbStore::open(&path).unwrap();
            let txn = store.audit_db.begin_write().unwrap();
            {
                let mut audit = txn.open_table(AUDIT).unwrap();
                let mut value = audit.get(5).unwrap().unwrap().value().to_vec();
                let last = value.len() - 1;
                value[last] ^= 0x20;
                audit.insert(5, value.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        assert_eq!(verify_file().broken.map(|b| b.0), Some(5));

        // Restore it, then cut the last event off the end: the anchored head shows it.
        {
            let store = RedbStore::open(&path).unwrap();
            let txn = store.audit_db.begin_write().unwrap();
            {
                let mut audit = txn.open_table(AUDIT).unwrap();
                audit
                    .insert(
                        5,
                        audit_codec::row_value(&AuditRow::of(&events[4])).as_slice(),
                    )
                    .unwrap();
                audit.remove(8).unwrap();
            }
            txn.commit().unwrap();
        }
        assert_eq!(verify_file().broken.map(|b| b.0), Some(8));
    }

    /// `count` entries of distinct insured keys, one person reference for every two.
    fn many_entries(count: u32) -> Vec<QualificationEntry> {
        let start = chrono::NaiveDate::from_ymd_opt(2020, 4, 1).unwrap();
        (0..count)
            .map(|i| {
                let mut insured = [0u8; 32];
                insured[..4].copy_from_slice(&i.to_be_bytes());
                let mut person = [0xa5u8; 32];
                person[..4].copy_from_slice(&(i / 2).to_be_bytes());
                QualificationEntry {
                    insured_key: IdentifierKey(insured),
                    person_ref_key: IdentifierKey(person),
                    start,
                    end: None,
                    demographic: mpi_core::keys::DemographicTag([7; 16]),
                    reason_of_loss: None,
                }
            })
            .collect()
    }

    /// Every entry stored once, every reference with a person, and a replay unchanged.
    fn assert_all_stored(store: &RedbStore, entries: &[QualificationEntry]) {
        let found = store
            .qualifications_by_insured(&entries.iter().map(|e| e.insured_key).collect::<Vec<_>>())
            .unwrap();
        for (entry, stored) in entries.iter().zip(&found) {
            assert_eq!(stored, &vec![*entry]);
        }
        let refs: Vec<_> = entries.iter().map(|e| e.person_ref_key).collect();
        assert!(store.persons_of(&refs).unwrap().iter().all(Option::is_some));
        let (replayed, pieces) = store
            .upsert_in_pieces(entries, std::time::Duration::ZERO)
            .unwrap();
        assert!(replayed.iter().all(|o| *o == UpsertOutcome::Unchanged));
        assert_eq!(pieces, 1, "nobody waited, so one transaction");
    }

    #[test]
    fn a_long_upsert_commits_in_pieces_while_another_writer_waits() {
        let (store, _dir) = fresh();
        let mut entries = many_entries(5 * YIELD_CHECK_EVERY as u32 + 10);
        // The same entry twice, written in key order next to each other: the later one is
        // unchanged even when a piece ends between them.
        entries.push(entries[3]);
        // A writer that waits throughout (the step-aside gives up after its bound).
        store
            .waiting_writers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (outcomes, pieces) = store
            .upsert_in_pieces(&entries, std::time::Duration::ZERO)
            .unwrap();
        store
            .waiting_writers
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(pieces, 6, "a commit every {YIELD_CHECK_EVERY} entries");
        let last = outcomes.len() - 1;
        assert!(
            outcomes[..last]
                .iter()
                .all(|o| *o == UpsertOutcome::Inserted)
        );
        assert_eq!(outcomes[last], UpsertOutcome::Unchanged);
        assert_all_stored(&store, &entries[..last]);
    }

    #[test]
    fn a_consent_recorded_during_a_long_upsert_does_not_wait_for_all_of_it() {
        let (store, _dir) = fresh();
        let entries = many_entries(100_000);
        let network = NetworkId::parse("13-0001").unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2024, 4, 1).unwrap();
        let importing = std::sync::atomic::AtomicBool::new(true);
        let (pieces, recorded) = std::thread::scope(|scope| {
            let consents = scope.spawn(|| {
                let mut recorded = Vec::new();
                while importing.load(std::sync::atomic::Ordering::SeqCst) && recorded.len() < 200 {
                    let consent = participation_of(recorded.len() as u8, network, day);
                    store
                        .record_consents(std::slice::from_ref(&consent))
                        .unwrap();
                    recorded.push(consent.1.id);
                }
                recorded
            });
            let (outcomes, pieces) = store
                .upsert_in_pieces(&entries, std::time::Duration::ZERO)
                .unwrap();
            importing.store(false, std::sync::atomic::Ordering::SeqCst);
            assert!(outcomes.iter().all(|o| *o == UpsertOutcome::Inserted));
            (pieces, consents.join().unwrap())
        });
        assert!(
            pieces > 1,
            "the consent writer waited, so the upsert let it in ({} consents recorded)",
            recorded.len()
        );
        assert_all_stored(&store, &entries);
        for id in recorded {
            assert!(store.consent(id).unwrap().is_some());
        }
    }
}
/// Measurements that need the store's insides, for `mpi-bench` (not part of the store's API).
#[doc(hidden)]
pub mod measure {
    use super::*;

    /// A location key (subject · location ID key) drawn from `n` by xorshift.
    fn synthetic_key(n: u64) -> [u8; location::codec::KEY_LEN] {
        let mut key = [0u8; location::codec::KEY_LEN];
        let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for byte in &mut key {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x.to_le_bytes()[0];
        }
        key
    }

    /// Leaves in `dir` what a crash leaves after registration: a location index holding `held`
    /// claims durably and a claim log of `logged` more that it lost; then times the replay of
    /// those (what [`RedbStore::open`] does first). With `drop_page_cache` (root only) the
    /// kernel's page cache is dropped before, so the replay reads the index from the disk.
    /// Returns the replay's time.
    pub fn claim_replay(
        dir: &Path,
        held: u64,
        logged: u64,
        drop_page_cache: bool,
    ) -> StoreResult<std::time::Duration> {
        let path = dir.join("mpi.redb");
        let open = || -> StoreResult<(Database, Database)> {
            Ok((
                redb::Builder::new()
                    .set_cache_size(6 << 30)
                    .create(&path)
                    .map_err(engine)?,
                redb::Builder::new()
                    .set_cache_size(2 << 30)
                    .create(path.with_file_name("location-index.redb"))
                    .map_err(engine)?,
            ))
        };
        {
            let (db, index_db) = open()?;
            let mut claims: Vec<_> = (0..held).map(|n| synthetic_key(n + logged + 1)).collect();
            claims.sort_unstable_by(|a, b| a[32..].cmp(&b[32..]));
            let txn = index_db.begin_write().map_err(engine)?;
            {
                let mut index = txn.open_table(LOCATION_INDEX).map_err(engine)?;
                for key in &claims {
                    index.insert(&key[32..], &key[..32]).map_err(engine)?;
                }
                txn.open_table(LOCATION_INDEX_META).map_err(engine)?;
            }
            txn.commit().map_err(engine)?;
            let txn = db.begin_write().map_err(engine)?;
            {
                let mut log = txn.open_table(CLAIM_LOG).map_err(engine)?;
                for sequence in 1..=logged {
                    log.insert(sequence, synthetic_key(sequence).as_slice())
                        .map_err(engine)?;
                }
                txn.open_table(META)
                    .map_err(engine)?
                    .insert(CLAIM_LOG_SEQUENCE, logged)
                    .map_err(engine)?;
            }
            txn.commit().map_err(engine)?;
        }
        if drop_page_cache {
            std::fs::write("/proc/sys/vm/drop_caches", "3")
                .map_err(|e| StoreError::Engine(format!("dropping the page cache: {e}")))?;
        }
        let (db, index_db) = open()?;
        let started = std::time::Instant::now();
        let durable_to = replay_claims(&db, &index_db)?;
        let took = started.elapsed();
        if durable_to != logged {
            return Err(StoreError::Engine(format!(
                "replayed to {durable_to}, not {logged}"
            )));
        }
        Ok(took)
    }
}
