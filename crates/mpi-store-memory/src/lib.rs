//! An in-memory `Store`: the same behaviour as the durable stores (the conformance suite says
//! so), nothing persisted. For unit tests and tools.

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};

use mpi_core::keys::{IdentifierKey, PersonKey};
use mpi_core::store::{QualificationEntry, Store, StoreResult, UpsertOutcome};

/// (insured key, person reference key, start day as the codec encodes it): the start day is
/// kept encoded so that ordering matches the byte-keyed engines.
type QualificationKey = (IdentifierKey, IdentifierKey, [u8; 4]);

#[derive(Default)]
struct Tables {
    qualifications: BTreeMap<QualificationKey, QualificationEntry>,
    persons: HashMap<IdentifierKey, PersonKey>,
}

/// The in-memory store. One lock makes every call one transaction.
#[derive(Default)]
pub struct MemoryStore {
    tables: RwLock<Tables>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn qualification_key(entry: &QualificationEntry) -> QualificationKey {
    (
        entry.insured_key,
        entry.person_ref_key,
        mpi_core::store::codec::encode_day(entry.start),
    )
}

impl Store for MemoryStore {
    fn upsert_qualifications(
        &self,
        entries: &[QualificationEntry],
    ) -> StoreResult<Vec<UpsertOutcome>> {
        // Nothing in the loop can fail, so under the write lock a batch is applied whole:
        // readers see all of it or none of it.
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            let outcome = match tables
                .qualifications
                .insert(qualification_key(entry), *entry)
            {
                None => UpsertOutcome::Inserted,
                Some(previous) if previous == *entry => UpsertOutcome::Unchanged,
                Some(_) => UpsertOutcome::Updated,
            };
            tables
                .persons
                .entry(entry.person_ref_key)
                .or_insert_with(PersonKey::random);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    fn qualifications_by_insured(
        &self,
        insured_keys: &[IdentifierKey],
    ) -> StoreResult<Vec<Vec<QualificationEntry>>> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        Ok(insured_keys
            .iter()
            .map(|insured| {
                let from = (*insured, IdentifierKey([0; 32]), [0; 4]);
                let to = (*insured, IdentifierKey([0xff; 32]), [0xff; 4]);
                tables
                    .qualifications
                    .range(from..=to)
                    .map(|(_, entry)| *entry)
                    .collect()
            })
            .collect())
    }

    fn persons_of(&self, person_ref_keys: &[IdentifierKey]) -> StoreResult<Vec<Option<PersonKey>>> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        Ok(person_ref_keys
            .iter()
            .map(|key| tables.persons.get(key).copied())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    mpi_store_conformance::store_conformance!((MemoryStore::new(), ()));
}
