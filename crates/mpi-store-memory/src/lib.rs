//! An in-memory `Store`: the same behaviour as the durable stores (the conformance suite says
//! so), nothing persisted. For unit tests and tools.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use chrono::NaiveDate;
use mpi_core::audit::ChainHead;
use mpi_core::consent::{Consent, ConsentId, Revocation};
use mpi_core::ids::NetworkId;
use mpi_core::keys::{IdentifierKey, PersonKey};
use mpi_core::location::{LocationId, SubjectLocation, codec::ID_KEY_LEN, codec::id_key};
use mpi_core::store::{
    Attribution, ConsentHistory, LinkOutcome, MergeId, MergeOutcome, MergeRecord, MergeRequest,
    PersonView, QualificationEntry, RegionalLink, RegisterOutcome, RevokeOutcome, Snapshot, Store,
    StoreResult, UnmergeOutcome, UpsertOutcome, ViewParts, revocation_effects, superseding_merge,
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
    /// (subject, sequence) for every disclosure of the subject's data.
    audit_index: BTreeSet<(IdentifierKey, u64)>,
    /// (subject, location ID key) → location.
    locations: BTreeMap<(IdentifierKey, [u8; ID_KEY_LEN]), SubjectLocation>,
    /// Location ID key → its subject.
    location_index: HashMap<[u8; ID_KEY_LEN], IdentifierKey>,
    /// Consent ID → (subject, consent).
    consents: BTreeMap<ConsentId, (IdentifierKey, Consent)>,
    /// (subject, consent ID) → revoked, for every consent.
    subject_consents: BTreeMap<(IdentifierKey, ConsentId), bool>,
    /// Regional key → link.
    links: HashMap<IdentifierKey, RegionalLink>,
    /// (subject, regional key) for every link.
    subject_links: BTreeSet<(IdentifierKey, IdentifierKey)>,
}

impl Tables {
    fn members_of(&self, person: PersonKey) -> Vec<IdentifierKey> {
        self.members
            .range((person, IdentifierKey([0; 32]))..=(person, IdentifierKey([0xff; 32])))
            .map(|(_, reference)| *reference)
            .collect()
    }

    /// The references of the subject's person (the subject alone if it has none).
    fn cluster_of(&self, subject: IdentifierKey) -> Vec<IdentifierKey> {
        match self.persons.get(&subject) {
            Some(person) => self.members_of(*person),
            None => vec![subject],
        }
    }

    fn consents_of(&self, refs: &[IdentifierKey], history: ConsentHistory) -> Vec<Consent> {
        let mut consents: Vec<Consent> = refs
            .iter()
            .flat_map(|subject| {
                self.subject_consents
                    .range((*subject, ConsentId([0; 16]))..=(*subject, ConsentId([0xff; 16])))
                    .filter(|(_, revoked)| history == ConsentHistory::Full || !**revoked)
                    .filter_map(|((_, id), _)| self.consents.get(id).map(|(_, c)| c.clone()))
            })
            .collect();
        consents.sort_by_key(|c| (c.recorded_at_micros, c.id));
        consents
    }

    fn remove_link(&mut self, regional_key: IdentifierKey) -> bool {
        match self.links.remove(&regional_key) {
            Some(link) => {
                self.subject_links.remove(&(link.subject, regional_key));
                true
            }
            None => false,
        }
    }

    fn links_of(&self, subject: IdentifierKey) -> Vec<RegionalLink> {
        self.subject_links
            .range((subject, IdentifierKey([0; 32]))..=(subject, IdentifierKey([0xff; 32])))
            .filter_map(|(_, key)| self.links.get(key).cloned())
            .collect()
    }

    fn locations_of(&self, subject: IdentifierKey) -> Vec<SubjectLocation> {
        self.locations
            .range((subject, [0; ID_KEY_LEN])..=(subject, [0xff; ID_KEY_LEN]))
            .map(|(_, location)| location.clone())
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

    /// The tables under the read lock: writers wait until it is dropped.
    fn read(&self) -> Reading<'_> {
        Reading(self.tables.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// [`Snapshot`] for [`MemoryStore`]: its tables under the read lock.
struct Reading<'a>(RwLockReadGuard<'a, Tables>);

impl Snapshot for Reading<'_> {
    fn qualifications_by_insured(
        &self,
        insured_keys: &[IdentifierKey],
    ) -> StoreResult<Vec<Vec<QualificationEntry>>> {
        let tables = &self.0;
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
        let tables = &self.0;
        Ok(person_ref_keys
            .iter()
            .map(|key| tables.persons.get(key).copied())
            .collect())
    }

    fn person_view(&self, person: PersonKey, parts: ViewParts) -> StoreResult<PersonView> {
        let tables = &self.0;
        let refs = tables.members_of(person);
        let mut view = PersonView::default();
        if let Some(history) = parts.consents {
            view.consents = tables.consents_of(&refs, history).into();
        }
        if parts.locations {
            view.locations = refs.iter().flat_map(|r| tables.locations_of(*r)).collect();
        }
        if parts.links {
            view.links = refs.iter().flat_map(|r| tables.links_of(*r)).collect();
        }
        view.refs = refs;
        Ok(view)
    }

    fn regional_subject(&self, regional_key: IdentifierKey) -> StoreResult<Option<IdentifierKey>> {
        let tables = &self.0;
        Ok(tables.links.get(&regional_key).map(|link| link.subject))
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
    fn snapshot(&self) -> StoreResult<Box<dyn Snapshot + '_>> {
        Ok(Box::new(self.read()))
    }

    fn qualifications_by_insured(
        &self,
        insured_keys: &[IdentifierKey],
    ) -> StoreResult<Vec<Vec<QualificationEntry>>> {
        self.read().qualifications_by_insured(insured_keys)
    }

    fn persons_of(&self, person_ref_keys: &[IdentifierKey]) -> StoreResult<Vec<Option<PersonKey>>> {
        self.read().persons_of(person_ref_keys)
    }

    fn person_view(&self, person: PersonKey, parts: ViewParts) -> StoreResult<PersonView> {
        self.read().person_view(person, parts)
    }

    fn regional_subject(&self, regional_key: IdentifierKey) -> StoreResult<Option<IdentifierKey>> {
        self.read().regional_subject(regional_key)
    }

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

    fn append_audit(
        &self,
        rows: &[AuditRow],
        index: &[(u64, IdentifierKey)],
    ) -> StoreResult<ChainHead> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let head = continue_chain(tables.audit_head.unwrap_or(ChainHead::EMPTY), rows)?;
        for row in rows {
            tables.audit.insert(row.sequence, row.clone());
        }
        for (sequence, subject) in index {
            tables.audit_index.insert((*subject, *sequence));
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

    fn audit_rows_of(
        &self,
        subjects: &[IdentifierKey],
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditRow>> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let sequences: BTreeSet<u64> = subjects
            .iter()
            .flat_map(|subject| {
                tables
                    .audit_index
                    .range((*subject, from)..=(*subject, u64::MAX))
                    .map(|(_, sequence)| *sequence)
            })
            .collect();
        Ok(sequences
            .into_iter()
            .filter_map(|sequence| tables.audit.get(&sequence).cloned())
            .take(limit)
            .collect())
    }

    fn register_locations(
        &self,
        network: NetworkId,
        today: NaiveDate,
        items: &[SubjectLocation],
    ) -> StoreResult<Vec<RegisterOutcome>> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let consents =
                tables.consents_of(&tables.cluster_of(item.subject), ConsentHistory::Unrevoked);
            if mpi_core::consent::participation(&consents, network, today).is_none() {
                outcomes.push(RegisterOutcome::NoParticipation);
                continue;
            }
            let id = id_key(&item.location.id);
            match tables.location_index.get(&id) {
                Some(owner) if *owner != item.subject => {
                    outcomes.push(RegisterOutcome::RegisteredForAnother);
                    continue;
                }
                _ => {}
            }
            let stored = match tables.locations.get(&(item.subject, id)) {
                Some(existing) => {
                    let mut widened = existing.clone();
                    widened.location.widen(&item.location);
                    widened
                }
                None => item.clone(),
            };
            tables.locations.insert((item.subject, id), stored);
            tables.location_index.insert(id, item.subject);
            outcomes.push(RegisterOutcome::Stored);
        }
        Ok(outcomes)
    }

    fn withdraw_locations(&self, ids: &[LocationId]) -> StoreResult<Vec<bool>> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        Ok(ids
            .iter()
            .map(|id| {
                let key = id_key(id);
                match tables.location_index.remove(&key) {
                    Some(subject) => tables.locations.remove(&(subject, key)).is_some(),
                    None => false,
                }
            })
            .collect())
    }

    fn record_consents(&self, consents: &[(IdentifierKey, Consent)]) -> StoreResult<()> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        for (subject, consent) in consents {
            tables
                .consents
                .insert(consent.id, (*subject, consent.clone()));
            tables
                .subject_consents
                .insert((*subject, consent.id), false);
        }
        Ok(())
    }

    fn consent(&self, id: ConsentId) -> StoreResult<Option<(IdentifierKey, Consent)>> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        Ok(tables.consents.get(&id).cloned())
    }

    fn revoke_consent(
        &self,
        id: ConsentId,
        revocation: &Revocation,
        today: NaiveDate,
    ) -> StoreResult<RevokeOutcome> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let Some((subject, mut consent)) = tables.consents.get(&id).cloned() else {
            return Ok(RevokeOutcome::Unknown);
        };
        if consent.revocation.is_some() {
            return Ok(RevokeOutcome::AlreadyRevoked);
        }
        consent.revocation = Some(revocation.clone());
        tables.consents.insert(id, (subject, consent.clone()));
        tables.subject_consents.insert((subject, id), true);
        let cluster = tables.cluster_of(subject);
        let after = tables.consents_of(&cluster, ConsentHistory::Unrevoked);
        let (mut links_cut, mut locations_deleted) = (0, 0);
        if let Some((network, cut, purge)) = revocation_effects(&after, &consent, today) {
            for reference in &cluster {
                if cut {
                    for link in tables.links_of(*reference) {
                        if link.network == network && tables.remove_link(link.regional_key) {
                            links_cut += 1;
                        }
                    }
                }
                if purge {
                    for located in tables.locations_of(*reference) {
                        if located.location.id.network == network {
                            let key = id_key(&located.location.id);
                            tables.locations.remove(&(*reference, key));
                            tables.location_index.remove(&key);
                            locations_deleted += 1;
                        }
                    }
                }
            }
        }
        Ok(RevokeOutcome::Revoked {
            consent: Box::new(consent),
            subject,
            links_cut,
            locations_deleted,
        })
    }

    fn link_regional(&self, link: &RegionalLink, today: NaiveDate) -> StoreResult<LinkOutcome> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let consents =
            tables.consents_of(&tables.cluster_of(link.subject), ConsentHistory::Unrevoked);
        if mpi_core::consent::participation(&consents, link.network, today).is_none() {
            return Ok(LinkOutcome::NoParticipation);
        }
        match tables.links.get(&link.regional_key) {
            Some(existing) if existing.subject == link.subject => Ok(LinkOutcome::Unchanged),
            Some(_) => Ok(LinkOutcome::LinkedToAnother),
            None => {
                tables.links.insert(link.regional_key, link.clone());
                tables
                    .subject_links
                    .insert((link.subject, link.regional_key));
                Ok(LinkOutcome::Created)
            }
        }
    }

    fn unlink_regional(&self, regional_key: IdentifierKey) -> StoreResult<bool> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        Ok(tables.remove_link(regional_key))
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    mpi_store_conformance::store_conformance!((MemoryStore::new(), ()));
}
