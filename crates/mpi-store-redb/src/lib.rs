//! The embedded default `Store`, on redb: ACID across tables, durable when `commit()` returns.
//!
//! Tables (keys and values are bytes from `mpi_core::store::codec`):
//! - `qualifications`: (insured key, person reference key, start day) → (end, demographic tag,
//!   reason of loss);
//! - `persons`: person reference key → person key;
//! - `meta`: schema version.
//!
//! Identifiers are keyed hashes before they get here; nothing in the file is an identifier in
//! plaintext.

use std::path::Path;

use mpi_core::keys::{IdentifierKey, PersonKey};
use mpi_core::store::codec::{self, QUALIFICATION_KEY_LEN};
use mpi_core::store::{QualificationEntry, Store, StoreError, StoreResult, UpsertOutcome};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const QUALIFICATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("qualifications");
const PERSONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("persons");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

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
        let txn = self.db.begin_write().map_err(engine)?;
        let mut outcomes = Vec::with_capacity(entries.len());
        {
            let mut qualifications = txn.open_table(QUALIFICATIONS).map_err(engine)?;
            let mut persons = txn.open_table(PERSONS).map_err(engine)?;
            for entry in entries {
                let key = codec::qualification_key(entry);
                let value = codec::qualification_value(entry);
                let previous = qualifications
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(engine)?;
                outcomes.push(match previous {
                    None => UpsertOutcome::Inserted,
                    Some(old) if old.value() == value.as_slice() => UpsertOutcome::Unchanged,
                    Some(_) => UpsertOutcome::Updated,
                });
                let reference = entry.person_ref_key.0;
                if persons.get(reference.as_slice()).map_err(engine)?.is_none() {
                    persons
                        .insert(reference.as_slice(), PersonKey::random().0.as_slice())
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
}
