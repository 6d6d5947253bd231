//! The embedded default `Store`, on redb: ACID across tables, durable when `commit()` returns.
//!
//! Tables (keys and values are bytes from `mpi_core::store::codec`):
//! - `qualifications`: (insured key, person reference key, start day) → (end, demographic tag,
//!   reason of loss);
//! - `persons`: person reference key → person key;
//! - `members`: person key · person reference key → (): each person's cluster of references;
//! - `merges`: merge ID → merge record (what moved, who, when, why, and any unmerge);
//! - `audit`: sequence → previous hash, hash, event content (the tamper-evident chain);
//! - `audit_head`: the chain head, anchored apart from the events;
//! - `meta`: schema version and the merge sequence.
//!
//! Identifiers are keyed hashes before they get here; nothing in the file is an identifier in
//! plaintext.

use std::path::Path;

use mpi_core::audit::ChainHead;
use mpi_core::keys::{IdentifierKey, PersonKey};
use mpi_core::store::codec::{self, QUALIFICATION_KEY_LEN};
use mpi_core::store::{
    Attribution, MergeId, MergeOutcome, MergeRecord, MergeRequest, QualificationEntry, Store,
    StoreError, StoreResult, UnmergeOutcome, UpsertOutcome, superseding_merge,
};
use mpi_core::store::{AuditRow, audit_codec, continue_chain};
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};

const QUALIFICATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("qualifications");
const PERSONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("persons");
const MEMBERS: TableDefinition<&[u8], ()> = TableDefinition::new("members");
const MERGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("merges");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// The chain head, kept apart from the events so that cutting events off the end shows.
const AUDIT_HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_head");

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

/// The on-disk layout version this code reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

fn engine(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Engine(error.into().to_string())
}

/// The redb store: one database file.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens the database at `path`, creating it (and its tables) if missing, and checks that
    /// its layout version is the one this code knows.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let db = Database::create(path).map_err(engine)?;
        let txn = db.begin_write().map_err(engine)?;
        {
            txn.open_table(QUALIFICATIONS).map_err(engine)?;
            txn.open_table(PERSONS).map_err(engine)?;
            txn.open_table(MEMBERS).map_err(engine)?;
            txn.open_table(MERGES).map_err(engine)?;
            txn.open_table(AUDIT).map_err(engine)?;
            txn.open_table(AUDIT_HEAD).map_err(engine)?;
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
                Some(other) => {
                    return Err(StoreError::Engine(format!(
                        "database schema version {other} is not {SCHEMA_VERSION}"
                    )));
                }
            }
        }
        txn.commit().map_err(engine)?;
        Ok(Self { db })
    }
}

impl Store for RedbStore {
    fn upsert_qualifications(
        &self,
        entries: &[QualificationEntry],
    ) -> StoreResult<Vec<UpsertOutcome>> {
        // Keys are keyed hashes, so a batch lands all over the B-tree. Writing it in key order
        // touches each page once per transaction, while it is hot; the stable sort keeps a
        // later duplicate after the earlier one, so it is still reported `Unchanged`.
        let keys: Vec<_> = entries.iter().map(codec::qualification_key).collect();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
        let mut references: Vec<IdentifierKey> = entries.iter().map(|e| e.person_ref_key).collect();
        references.sort_unstable();
        references.dedup();

        let txn = self.db.begin_write().map_err(engine)?;
        let mut outcomes = vec![UpsertOutcome::Unchanged; entries.len()];
        {
            let mut qualifications = txn.open_table(QUALIFICATIONS).map_err(engine)?;
            for index in order {
                let value = codec::qualification_value(&entries[index]);
                let previous = qualifications
                    .insert(keys[index].as_slice(), value.as_slice())
                    .map_err(engine)?;
                outcomes[index] = match previous {
                    None => UpsertOutcome::Inserted,
                    Some(old) if old.value() == value.as_slice() => UpsertOutcome::Unchanged,
                    Some(_) => UpsertOutcome::Updated,
                };
            }
            let mut persons = txn.open_table(PERSONS).map_err(engine)?;
            let mut members = txn.open_table(MEMBERS).map_err(engine)?;
            for reference in references {
                if persons
                    .get(reference.0.as_slice())
                    .map_err(engine)?
                    .is_none()
                {
                    let person = PersonKey::random();
                    persons
                        .insert(reference.0.as_slice(), person.0.as_slice())
                        .map_err(engine)?;
                    members
                        .insert(member_key(person, reference).as_slice(), ())
                        .map_err(engine)?;
                }
            }
        }
        // Dropping an uncommitted transaction aborts it, so an error above stores nothing.
        txn.commit().map_err(engine)?;
        Ok(outcomes)
    }

    fn qualifications_by_insured(
        &self,
        insured_keys: &[IdentifierKey],
    ) -> StoreResult<Vec<Vec<QualificationEntry>>> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(QUALIFICATIONS).map_err(engine)?;
        insured_keys
            .iter()
            .map(|insured| {
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
            })
            .collect()
    }

    fn persons_of(&self, person_ref_keys: &[IdentifierKey]) -> StoreResult<Vec<Option<PersonKey>>> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(PERSONS).map_err(engine)?;
        person_ref_keys
            .iter()
            .map(|reference| {
                table
                    .get(reference.0.as_slice())
                    .map_err(engine)?
                    .map(|value| codec::decode_person(value.value()))
                    .transpose()
            })
            .collect()
    }

    fn merge_persons(&self, request: &MergeRequest) -> StoreResult<MergeOutcome> {
        let txn = self.db.begin_write().map_err(engine)?;
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
            let mut meta = txn.open_table(META).map_err(engine)?;
            let sequence = meta
                .get("merge_sequence")
                .map_err(engine)?
                .map_or(0, |v| v.value())
                + 1;
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
        txn.commit().map_err(engine)?;
        Ok(outcome)
    }

    fn unmerge_persons(
        &self,
        merge_id: MergeId,
        attribution: &Attribution,
    ) -> StoreResult<UnmergeOutcome> {
        let txn = self.db.begin_write().map_err(engine)?;
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
        txn.commit().map_err(engine)?;
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

    fn append_audit(&self, rows: &[AuditRow]) -> StoreResult<ChainHead> {
        let txn = self.db.begin_write().map_err(engine)?;
        let head = {
            let mut anchor = txn.open_table(AUDIT_HEAD).map_err(engine)?;
            let stored = anchor
                .get("head")
                .map_err(engine)?
                .map(|value| audit_codec::decode_head(value.value()))
                .transpose()?
                .unwrap_or(ChainHead::EMPTY);
            let head = continue_chain(stored, rows)?;
            let mut audit = txn.open_table(AUDIT).map_err(engine)?;
            for row in rows {
                audit
                    .insert(row.sequence, audit_codec::row_value(row).as_slice())
                    .map_err(engine)?;
            }
            anchor
                .insert("head", audit_codec::head_value(head).as_slice())
                .map_err(engine)?;
            head
        };
        txn.commit().map_err(engine)?;
        Ok(head)
    }

    fn audit_head(&self) -> StoreResult<ChainHead> {
        let txn = self.db.begin_read().map_err(engine)?;
        let anchor = txn.open_table(AUDIT_HEAD).map_err(engine)?;
        anchor
            .get("head")
            .map_err(engine)?
            .map(|value| audit_codec::decode_head(value.value()))
            .transpose()
            .map(|head| head.unwrap_or(ChainHead::EMPTY))
    }

    fn audit_rows(&self, from: u64, to: u64, limit: usize) -> StoreResult<Vec<AuditRow>> {
        if from > to {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(engine)?;
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
            .append_audit(&events.iter().map(AuditRow::of).collect::<Vec<_>>())
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
            let txn = store.db.begin_write().unwrap();
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
            let txn = store.db.begin_write().unwrap();
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
}
