//! Identity resolution as of a date: one person, ambiguous, or unknown; never a guess.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;

use crate::keys::{IdentifierKey, Keyer, PersonKey};
use crate::qualification::InsuredPatient;
use crate::store::{QualificationEntry, Snapshot, StoreError, StoreResult};

/// The outcome of resolving an identifier on a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Exactly one person held it.
    Person(PersonKey),
    /// Several persons match (for example same-sex twins on one household number).
    Ambiguous,
    /// Nobody held it on that date (or nobody with the given birth date and sex).
    Unknown,
}

/// A resolved patient: the person, and the reference of its cluster that held the identifier
/// on the day (the one data registered for the patient is attached to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    /// The person.
    pub person: PersonKey,
    /// The person reference that held the identifier.
    pub reference: IdentifierKey,
}

/// The outcome of resolving an identifier on a date, with the holding reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Exactly one person held it.
    One(Subject),
    /// Several persons match.
    Ambiguous,
    /// Nobody held it.
    Unknown,
}

/// Resolves an insured patient as of `on`.
///
/// Every qualification period of the insured ID that contains `on` is a candidate; when the
/// caller gave birth date and sex, only candidates with the same tag remain (this is what tells
/// household members apart on numbers without 枝番). Candidates are mapped to persons through
/// their provider references; one distinct person resolves, several are ambiguous.
pub fn resolve(
    reads: &dyn Snapshot,
    keyer: &Keyer,
    patient: &InsuredPatient,
    on: NaiveDate,
) -> StoreResult<Resolution> {
    Ok(match resolve_many(reads, keyer, &[(patient, on)])?.pop() {
        Some(Resolved::One(subject)) => Resolution::Person(subject.person),
        Some(Resolved::Ambiguous) => Resolution::Ambiguous,
        Some(Resolved::Unknown) | None => Resolution::Unknown,
    })
}

/// [`resolve`] for many patients, each as of its day, with two reads of one snapshot; each answer
/// names the holding reference too (the smallest key when a person held the identifier under
/// several references).
pub fn resolve_many(
    reads: &dyn Snapshot,
    keyer: &Keyer,
    patients: &[(&InsuredPatient, NaiveDate)],
) -> StoreResult<Vec<Resolved>> {
    let insured_keys: Vec<_> = patients
        .iter()
        .map(|(patient, _)| keyer.insured(&patient.insured_id))
        .collect();
    let entries = reads.qualifications_by_insured(&insured_keys)?;
    let candidates: Vec<BTreeSet<IdentifierKey>> = patients
        .iter()
        .zip(&entries)
        .map(|((patient, on), entries)| {
            let tag = patient
                .demographics
                .map(|d| keyer.demographic(d.birth_date, d.sex));
            entries
                .iter()
                .filter(|entry| held_on(entry, *on))
                .filter(|entry| tag.is_none_or(|tag| entry.demographic == tag))
                .map(|entry| entry.person_ref_key)
                .collect()
        })
        .collect();
    let all_refs: Vec<IdentifierKey> = candidates
        .iter()
        .flatten()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let persons: BTreeMap<IdentifierKey, Option<PersonKey>> = all_refs
        .iter()
        .copied()
        .zip(reads.persons_of(&all_refs)?)
        .collect();
    candidates
        .into_iter()
        .map(|refs| {
            let mut found: BTreeMap<PersonKey, IdentifierKey> = BTreeMap::new();
            for reference in refs {
                let person = persons.get(&reference).copied().flatten().ok_or_else(|| {
                    StoreError::Corrupt(
                        "qualification names a person reference with no person".into(),
                    )
                })?;
                found.entry(person).or_insert(reference);
            }
            Ok(match found.len() {
                0 => Resolved::Unknown,
                1 => found
                    .pop_first()
                    .map_or(Resolved::Unknown, |(person, reference)| {
                        Resolved::One(Subject { person, reference })
                    }),
                _ => Resolved::Ambiguous,
            })
        })
        .collect()
}

fn held_on(entry: &QualificationEntry, on: NaiveDate) -> bool {
    entry.start <= on && entry.end.is_none_or(|end| on <= end)
}
