//! The service logic behind the RPCs, free of transport and engine: validated domain requests in,
//! domain answers out. Methods block on the store; the transport calls them off the reactor.

use std::sync::Arc;

use chrono::NaiveDate;

use crate::error::{ServiceError, ServiceResult};
use crate::keys::Keyer;
use crate::qualification::{InsuredPatient, QualificationRecord};
use crate::resolution::{Resolution, resolve};
use crate::store::{QualificationEntry, Store, UpsertOutcome};

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
}

impl Mpi {
    /// A service over `store`, hashing identifiers with `keyer`.
    pub fn new(store: Arc<dyn Store>, keyer: Keyer) -> Self {
        Self { store, keyer }
    }

    /// The keyer, for callers that hash identifiers themselves (tests, tools).
    pub fn keyer(&self) -> &Keyer {
        &self.keyer
    }

    /// Stores one batch of validated records in one atomic transaction. Replaying a batch
    /// changes nothing.
    pub fn import_qualifications(
        &self,
        records: &[QualificationRecord],
    ) -> ServiceResult<ImportCounts> {
        let entries: Vec<QualificationEntry> = records
            .iter()
            .map(|record| QualificationEntry {
                insured_key: self.keyer.insured(&record.insured_id),
                person_ref_key: self.keyer.provider_ref(&record.person_ref),
                start: record.period.start(),
                end: record.period.end(),
                demographic: self.keyer.demographic(record.birth_date, record.sex),
                reason_of_loss: record.reason_of_loss,
            })
            .collect();
        let outcomes = self.store.upsert_qualifications(&entries)?;
        let unchanged = outcomes
            .iter()
            .filter(|o| **o == UpsertOutcome::Unchanged)
            .count() as u64;
        Ok(ImportCounts {
            accepted: outcomes.len() as u64 - unchanged,
            unchanged,
        })
    }

    /// Resolves one insured patient as of a date.
    pub fn resolve(&self, patient: &InsuredPatient, on: NaiveDate) -> ServiceResult<Resolution> {
        Ok(resolve(self.store.as_ref(), &self.keyer, patient, on)?)
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

/// Keeps `ServiceError` in use for operations that later issues fill in.
pub fn unimplemented(operation: crate::authz::Operation) -> ServiceError {
    ServiceError::Unimplemented(operation.name())
}
