//! An in-memory `Store`: the same behaviour as the durable stores (the conformance suite says
//! so), nothing persisted. For unit tests and tools.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use mpi_core::audit::ChainHead;
use mpi_core::keys::{IdentifierKey, PersonKey};
use mpi_core::store::{
    Attribution, MergeId, MergeOutcome, MergeRecord, MergeRequest, QualificationEntry, Store,
    StoreResult, UnmergeOutcome, UpsertOutcome, superseding_merge,
};
use mpi_core::store::{AuditRow, continue_chain};

/// (insured key, person reference key, start day as the codec encodes it): the start day is
/// kept encoded so that ordering matches the byte-keyed engines.
type QualificationKey = (IdentifierKey, IdentifierKey, [u8; 4]);

#[derive(Default)]
struct Tables {
    qualifications: BTreeMap<QualificationKey, QualificationEntry>,
    persons: HashMap<IdentifierKey, PersonKey>,
    /// (person, reference) for every reference: the members of each person's cluster.
    members: BTreeSet<(PersonKey, IdentifierKey)>,
    merges: BTreeMap<MergeId, MergeRecord>,
    merge_sequence: u64,
    audit: BTreeMap<u64, AuditRow>,
    audit_head: Option<ChainHead>,
}

impl Tables {
    fn members_of(&self, person: PersonKey) -> Vec<IdentifierKey> {
        self.members
            .range((person, IdentifierKey([0; 32]))..=(person, IdentifierKey([0xff; 32])))
            .map(|(_, reference)| *reference)
            .collect()
    }

    fn move_refs(&mut self, refs: &[IdentifierKey], from: PersonKey, to: PersonKey) {
        for reference in refs {
            self.persons.insert(*reference, to);
            self.members.remove(&(from, *reference));
            self.members.insert((to, *reference));
        }
    }
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
        let mut guard = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let tables = &mut *guard;
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
            if let Entry::Vacant(slot) = tables.persons.entry(entry.person_ref_key) {
                let person = *slot.insert(PersonKey::random());
                tables.members.insert((person, entry.person_ref_key));
            }
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

    fn merge_persons(&self, request: &MergeRequest) -> StoreResult<MergeOutcome> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let Some(&surviving_person) = tables.persons.get(&request.surviving_ref) else {
            return Ok(MergeOutcome::UnknownSurviving);
        };
        let Some(&merged_person) = tables.persons.get(&request.merged_ref) else {
            return Ok(MergeOutcome::UnknownMerged);
        };
        if surviving_person == merged_person {
            return Ok(MergeOutcome::AlreadySame);
        }
        let moved_refs = tables.members_of(merged_person);
        tables.move_refs(&moved_refs, merged_person, surviving_person);
        tables.merge_sequence += 1;
        let moved = moved_refs.len();
        let record = MergeRecord::standing(
            request,
            tables.merge_sequence,
            surviving_person,
            merged_person,
            moved_refs,
        );
        tables.merges.insert(request.merge_id, record);
        Ok(MergeOutcome::Merged { moved })
    }

    fn unmerge_persons(
        &self,
        merge_id: MergeId,
        attribution: &Attribution,
    ) -> StoreResult<UnmergeOutcome> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let Some(record) = tables.merges.get(&merge_id).cloned() else {
            return Ok(UnmergeOutcome::UnknownMerge);
        };
        if record.unmerged.is_some() {
            return Ok(UnmergeOutcome::AlreadyUnmerged);
        }
        if let Some(by) = superseding_merge(&record, tables.merges.values()) {
            return Ok(UnmergeOutcome::Superseded { by });
        }
        tables.move_refs(
            &record.moved_refs,
            record.surviving_person,
            record.merged_person,
        );
        let restored = record.moved_refs.len();
        tables.merges.insert(
            merge_id,
            MergeRecord {
                unmerged: Some(attribution.clone()),
                ..record
            },
        );
        Ok(UnmergeOutcome::Unmerged { restored })
    }

    fn merge(&self, merge_id: MergeId) -> StoreResult<Option<MergeRecord>> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        Ok(tables.merges.get(&merge_id).cloned())
    }

    fn append_audit(&self, rows: &[AuditRow]) -> StoreResult<ChainHead> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let head = continue_chain(tables.audit_head.unwrap_or(ChainHead::EMPTY), rows)?;
        for row in rows {
            tables.audit.insert(row.sequence, row.clone());
        }
        tables.audit_head = Some(head);
        Ok(head)
    }

    fn audit_head(&self) -> StoreResult<ChainHead> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        Ok(tables.audit_head.unwrap_or(ChainHead::EMPTY))
    }

    fn audit_rows(&self, from: u64, to: u64, limit: usize) -> StoreResult<Vec<AuditRow>> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        if from > to {
            return Ok(Vec::new());
        }
        Ok(tables
            .audit
            .range(from..=to)
            .take(limit)
            .map(|(_, row)| row.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    mpi_store_conformance::store_conformance!((MemoryStore::new(), ()));
}
