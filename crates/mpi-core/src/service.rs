//! The service logic behind the RPCs, free of transport and engine: validated domain requests in,
//! domain answers out. Methods block on the store; the transport calls them off the reactor.

use std::sync::Arc;

use chrono::NaiveDate;

use crate::error::{ServiceError, ServiceResult};
use crate::ids::ProviderPersonRef;
use crate::keys::Keyer;
use crate::principal::Principal;
use crate::qualification::{InsuredPatient, QualificationRecord};
use crate::reason::Reason;
use crate::resolution::{Resolution, resolve};
use crate::store::{
    Attribution, MergeId, MergeOutcome, MergeRequest, QualificationEntry, Store, UnmergeOutcome,
    UpsertOutcome,
};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Counts of one committed import batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Stored new or changed.
    pub accepted: u64,
    /// Already stored exactly so.
    pub unchanged: u64,
}

/// The answer of `AreSamePerson`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamePerson {
    /// One person.
    Same,
    /// Two persons.
    Different,
    /// At least one side matches several persons.
    Ambiguous,
    /// At least one side matches nobody.
    Unknown,
}

/// The MPI's operations over one store and one server secret.
#[derive(Clone)]
pub struct Mpi {
    store: Arc<dyn Store>,
    keyer: Keyer,
    emergency_access: bool,
    /// Held while a RegisterLocations call resolves its items (clones share it). The store
    /// writes one transaction at a time; on a small machine, a dozen calls resolving at once
    /// leave that writer waiting for a core. One at a time, resolution keeps ahead of the
    /// writer anyway (docs/benchmarks.md, "RegisterLocations: what was found").
    pub(crate) registration_reads: Arc<std::sync::Mutex<()>>,
}

impl Mpi {
    /// A service over `store`, hashing identifiers with `keyer`.
    pub fn new(store: Arc<dyn Store>, keyer: Keyer) -> Self {
        Self {
            store,
            keyer,
            emergency_access: false,
            registration_reads: Arc::default(),
        }
    }

    /// Whether the emergency purpose may stand in for a disclosure grant (never for an opt-out
    /// or a participation). Off unless the configuration turns it on.
    pub fn with_emergency_access(mut self, allowed: bool) -> Self {
        self.emergency_access = allowed;
        self
    }

    /// See [`Mpi::with_emergency_access`].
    pub fn emergency_access(&self) -> bool {
        self.emergency_access
    }

    /// The store, for the audit writer and verification.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The keyer, for callers that hash identifiers themselves (tests, tools).
    pub fn keyer(&self) -> &Keyer {
        &self.keyer
    }

    /// Stores one batch of validated records durably: in one atomic transaction, or in several
    /// when other writers wait meanwhile ([`Store::upsert_qualifications`]). Replaying a batch
    /// changes nothing.
    pub fn import_qualifications(
        &self,
        records: &[QualificationRecord],
    ) -> ServiceResult<ImportCounts> {
        self.store_qualifications(&self.key_qualifications(records))
    }

    /// The first half of [`Mpi::import_qualifications`]: the records' identifiers replaced by
    /// their keyed hashes, the only form the store holds. It touches no store, so a caller may
    /// key one batch while the previous one commits.
    pub fn key_qualifications(&self, records: &[QualificationRecord]) -> Vec<QualificationEntry> {
        records
            .iter()
            .map(|record| QualificationEntry {
                insured_key: self.keyer.insured(&record.insured_id),
                person_ref_key: self.keyer.provider_ref(&record.person_ref),
                start: record.period.start(),
                end: record.period.end(),
                demographic: self.keyer.demographic(record.birth_date, record.sex),
                reason_of_loss: record.reason_of_loss,
            })
            .collect()
    }

    /// The second half of [`Mpi::import_qualifications`]: the store's upsert.
    pub fn store_qualifications(
        &self,
        entries: &[QualificationEntry],
    ) -> ServiceResult<ImportCounts> {
        let outcomes = self.store.upsert_qualifications(entries)?;
        let unchanged = outcomes
            .iter()
            .filter(|o| **o == UpsertOutcome::Unchanged)
            .count() as u64;
        Ok(ImportCounts {
            accepted: outcomes.len() as u64 - unchanged,
            unchanged,
        })
    }

    /// Declares the persons of two provider references to be one: the merged reference's whole
    /// cluster joins the surviving one. Returns the merge's ID and time.
    pub fn merge_persons(
        &self,
        principal: &Principal,
        surviving: &ProviderPersonRef,
        merged: &ProviderPersonRef,
        reason: &Reason,
    ) -> ServiceResult<(MergeId, i64)> {
        let request = MergeRequest {
            merge_id: MergeId::random(),
            surviving_ref: self.keyer.provider_ref(surviving),
            merged_ref: self.keyer.provider_ref(merged),
            attribution: Attribution {
                by: principal.to_string(),
                at_micros: now_micros(),
                reason: reason.as_str().to_owned(),
            },
        };
        match self.store.merge_persons(&request)? {
            MergeOutcome::Merged { .. } => Ok((request.merge_id, request.attribution.at_micros)),
            MergeOutcome::UnknownSurviving => Err(ServiceError::NotFound(
                "surviving_person_ref names no known person".into(),
            )),
            MergeOutcome::UnknownMerged => Err(ServiceError::NotFound(
                "merged_person_ref names no known person".into(),
            )),
            MergeOutcome::AlreadySame => Err(ServiceError::FailedPrecondition(
                "the two references already belong to one person".into(),
            )),
        }
    }

    /// Undoes a merge, restoring exactly the two clusters it joined. Returns the time.
    pub fn unmerge_persons(
        &self,
        principal: &Principal,
        merge_id: MergeId,
        reason: &Reason,
    ) -> ServiceResult<i64> {
        let attribution = Attribution {
            by: principal.to_string(),
            at_micros: now_micros(),
            reason: reason.as_str().to_owned(),
        };
        match self.store.unmerge_persons(merge_id, &attribution)? {
            UnmergeOutcome::Unmerged { .. } => Ok(attribution.at_micros),
            UnmergeOutcome::UnknownMerge => {
                Err(ServiceError::NotFound("merge_id names no merge".into()))
            }
            UnmergeOutcome::AlreadyUnmerged => Err(ServiceError::FailedPrecondition(
                "the merge was already undone".into(),
            )),
            UnmergeOutcome::Superseded { by } => Err(ServiceError::FailedPrecondition(format!(
                "merge {} was made later and involves the same persons; unmerge it first",
                by.to_hex()
            ))),
        }
    }

    /// Resolves one insured patient as of a date.
    pub fn resolve(&self, patient: &InsuredPatient, on: NaiveDate) -> ServiceResult<Resolution> {
        Ok(resolve(&*self.store.snapshot()?, &self.keyer, patient, on)?)
    }

    /// Do two insured IDs, each as of its date, belong to one person?
    pub fn are_same_person(
        &self,
        first: (&InsuredPatient, NaiveDate),
        second: (&InsuredPatient, NaiveDate),
    ) -> ServiceResult<SamePerson> {
        let first = self.resolve(first.0, first.1)?;
        let second = self.resolve(second.0, second.1)?;
        Ok(match (first, second) {
            (Resolution::Unknown, _) | (_, Resolution::Unknown) => SamePerson::Unknown,
            (Resolution::Ambiguous, _) | (_, Resolution::Ambiguous) => SamePerson::Ambiguous,
            (Resolution::Person(a), Resolution::Person(b)) if a == b => SamePerson::Same,
            (Resolution::Person(_), Resolution::Person(_)) => SamePerson::Different,
        })
    }
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mpi(..)")
    }
}
